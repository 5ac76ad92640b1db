//! The suite catalog: kind, size, sha256 and the number of tests of each
//! suite (the list is summaries); a suite's tests load when it is opened.

use ensemble_protocol::api::{SuiteMeta, SuiteSummary};
use yew::prelude::*;

use crate::components::upload::SuiteUpload;
use crate::format::{bytes, local_time, plural, short_sha};
use crate::hooks::{failure_text, use_fresh_suites, use_session};

/// Tests listed per page of a suite's tests (a suite may have thousands).
const TESTS_PER_PAGE: usize = 200;

#[component]
pub fn SuitesPage() -> Html {
    let session = use_session();
    use_fresh_suites();
    let mut suites = session.suites.clone();
    suites.sort_by(|a, b| a.name.cmp(&b.name).then(b.uploaded_us.cmp(&a.uploaded_us)));
    html! {
        <section class="page">
            <div class="page-head"><h1>{"Suites"}</h1></div>
            <SuiteUpload id="suites-upload" />
            if suites.is_empty() {
                <p class="empty">{"No suites yet: upload a .wasm suite above, or run a plan with "}<code>{"ensemble run PLAN --server URL"}</code>{"."}</p>
            }
            <div class="suite-list" id="suites">
                { for suites.into_iter().map(|suite| {
                    let key = suite.sha256.clone();
                    html! { <SuiteCard {key} {suite} /> }
                }) }
            </div>
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct SuiteCardProps {
    suite: SuiteSummary,
}

/// One suite; opening its tests fetches them (once).
#[component]
fn SuiteCard(props: &SuiteCardProps) -> Html {
    let session = use_session();
    let s = &props.suite;
    // None: not loaded (yet); Some(Err): the fetch failed.
    let tests = use_state(|| None::<Result<SuiteMeta, String>>);
    let asked = use_mut_ref(|| false);
    let search = use_state(String::new);
    let page = use_state(|| 0usize);
    let ontoggle = {
        let (session, tests, sha) = (session.clone(), tests.clone(), s.sha256.clone());
        Callback::from(move |_: Event| {
            if std::mem::replace(&mut *asked.borrow_mut(), true) {
                return;
            }
            let (session, tests, sha) = (session.clone(), tests.clone(), sha.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let got = session.api.suite(&sha).await;
                tests.set(Some(got.map_err(|e| failure_text(&session, e))));
            });
        })
    };
    let count = s.test_count as usize;
    html! {
        <article class="card suite" data-suite={s.name.clone()}>
            <h2>{s.name.clone()}</h2>
            <p class="meta">
                <span class="chip">{s.kind.clone()}</span>
                {format!(" {} · {} · uploaded {} · ", bytes(s.size), plural(count, "test"), local_time(s.uploaded_us))}
                <code title={s.sha256.clone()}>{format!("sha256:{}…", short_sha(&s.sha256))}</code>
            </p>
            <details {ontoggle}>
                <summary>{format!("Tests ({count})")}</summary>
                { match &*tests {
                    None => html! { <p class="muted">{"Loading…"}</p> },
                    Some(Err(e)) => html! { <p class="error" role="alert">{e.clone()}</p> },
                    Some(Ok(meta)) => {
                        let needle = search.to_lowercase();
                        let found: Vec<&ensemble_protocol::api::TestMeta> = meta
                            .tests
                            .iter()
                            .filter(|t| needle.is_empty() || t.name.to_lowercase().contains(&needle) || t.tags.iter().any(|g| g.to_lowercase().contains(&needle)))
                            .collect();
                        let pages = found.len().div_ceil(TESTS_PER_PAGE).max(1);
                        let at = (*page).min(pages - 1);
                        let oninput = {
                            let (search, page) = (search.clone(), page.clone());
                            Callback::from(move |e: InputEvent| {
                                search.set(crate::dom::input_value(&e));
                                page.set(0);
                            })
                        };
                        let go = |to: usize| {
                            let page = page.clone();
                            Callback::from(move |_| page.set(to))
                        };
                        let id = format!("tests-search-{}", short_sha(&s.sha256));
                        html! {
                            <>
                                if meta.tests.len() > 10 {
                                    <div class="inline test-search">
                                        <label for={id.clone()}>{"Search"}</label>
                                        <input id={id} type="search" class="suite-test-search" placeholder="test name or tag" value={(*search).clone()} {oninput} />
                                    </div>
                                }
                                <p class="muted tests-shown">{
                                    if found.is_empty() { "No test matches.".to_string() }
                                    else if pages == 1 && needle.is_empty() { plural(found.len(), "test") }
                                    else {
                                        let first = at * TESTS_PER_PAGE + 1;
                                        let last = ((at + 1) * TESTS_PER_PAGE).min(found.len());
                                        format!("{first}–{last} of {}{}", plural(found.len(), "test"), if needle.is_empty() { String::new() } else { format!(" matching {:?}", *search) })
                                    }
                                }</p>
                                <ul class="test-list">
                                    { for found.iter().skip(at * TESTS_PER_PAGE).take(TESTS_PER_PAGE).map(|t| html! {
                                        <li>
                                            <code>{t.name.clone()}</code>
                                            if t.ignored { <span class="chip">{"ignored"}</span> }
                                            { for t.tags.iter().map(|tag| html! { <span class="chip">{tag.clone()}</span> }) }
                                            if let Some(ms) = t.timeout_ms { <small class="muted">{format!(" timeout {ms} ms")}</small> }
                                        </li>
                                    }) }
                                </ul>
                                if pages > 1 {
                                    <nav class="pager" aria-label="pages of tests">
                                        <button type="button" class="small prev" disabled={at == 0} onclick={go(at.saturating_sub(1))}>{"Previous"}</button>
                                        <span class="muted">{format!(" page {} of {pages} ", at + 1)}</span>
                                        <button type="button" class="small next" disabled={at + 1 >= pages} onclick={go(at + 1)}>{"Next"}</button>
                                    </nav>
                                }
                            </>
                        }
                    }
                } }
                if !s.imports.is_empty() {
                    <details class="imports">
                        <summary>{format!("Imports ({})", s.imports.len())}</summary>
                        <ul>{ for s.imports.iter().map(|i| html! { <li><code>{i.clone()}</code></li> }) }</ul>
                    </details>
                }
            </details>
        </article>
    }
}
