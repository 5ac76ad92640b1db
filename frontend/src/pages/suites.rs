//! The suite catalog: kind, size, sha256 and the tests of each suite.

use yew::prelude::*;

use crate::components::upload::SuiteUpload;
use crate::format::{bytes, local_time, plural, short_sha};
use crate::hooks::{use_fresh_suites, use_session};

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
                { for suites.iter().map(|s| html! {
                    <article class="card suite" key={s.sha256.clone()} data-suite={s.name.clone()}>
                        <h2>{s.name.clone()}</h2>
                        <p class="meta">
                            <span class="chip">{s.kind.clone()}</span>
                            {format!(" {} · {} · uploaded {} · ", bytes(s.size), plural(s.tests.len(), "test"), local_time(s.uploaded_us))}
                            <code title={s.sha256.clone()}>{format!("sha256:{}…", short_sha(&s.sha256))}</code>
                        </p>
                        <details>
                            <summary>{format!("Tests ({})", s.tests.len())}</summary>
                            <ul class="test-list">
                                { for s.tests.iter().take(TESTS_SHOWN).map(|t| html! {
                                    <li>
                                        <code>{t.name.clone()}</code>
                                        if t.ignored { <span class="chip">{"ignored"}</span> }
                                        { for t.tags.iter().map(|tag| html! { <span class="chip">{tag.clone()}</span> }) }
                                        if let Some(ms) = t.timeout_ms { <small class="muted">{format!(" timeout {ms} ms")}</small> }
                                    </li>
                                }) }
                            </ul>
                            if s.tests.len() > TESTS_SHOWN {
                                <p class="muted">{format!("… and {} more", s.tests.len() - TESTS_SHOWN)}</p>
                            }
                            if !s.imports.is_empty() {
                                <details class="imports">
                                    <summary>{format!("Imports ({})", s.imports.len())}</summary>
                                    <ul>{ for s.imports.iter().map(|i| html! { <li><code>{i.clone()}</code></li> }) }</ul>
                                </details>
                            }
                        </details>
                    </article>
                }) }
            </div>
        </section>
    }
}
