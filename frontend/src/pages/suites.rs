//! The suite catalog: kind, size, sha256 and the number of tests of each
//! suite (the list is summaries); a suite's tests load when it is opened.

use ensemble_protocol::api::{SuiteMeta, SuiteSummary};
use yew::prelude::*;

use crate::components::upload::SuiteUpload;
use crate::format::{bytes, local_time, plural, short_sha};
use crate::hooks::{failure_text, use_fresh_suites, use_session};

/// Tests listed per suite at most (a suite may have thousands).
const TESTS_SHOWN: usize = 200;

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
                    Some(Ok(meta)) => html! {
                        <>
                            <ul class="test-list">
                                { for meta.tests.iter().take(TESTS_SHOWN).map(|t| html! {
                                    <li>
                                        <code>{t.name.clone()}</code>
                                        if t.ignored { <span class="chip">{"ignored"}</span> }
                                        { for t.tags.iter().map(|tag| html! { <span class="chip">{tag.clone()}</span> }) }
                                        if let Some(ms) = t.timeout_ms { <small class="muted">{format!(" timeout {ms} ms")}</small> }
                                    </li>
                                }) }
                            </ul>
                            if meta.tests.len() > TESTS_SHOWN {
                                <p class="muted">{format!("… and {} more", meta.tests.len() - TESTS_SHOWN)}</p>
                            }
                        </>
                    },
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
