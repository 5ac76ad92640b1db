//! A plan's flaky tests: the ones that flipped between passing and failing,
//! or passed only on a retry, in its recent runs (`GET /api/tests/flaky`).

use std::rc::Rc;

use ensemble_protocol::api::TestHistory;
use yew::prelude::*;

use crate::hooks::use_session;

#[derive(Properties, PartialEq)]
pub struct Props {
    /// The plan's name (histories are kept by plan name, role and test).
    pub plan: String,
    /// The list, when the page has read it already; else it is read here.
    #[prop_or_default]
    pub tests: Option<Rc<Vec<TestHistory>>>,
}

#[component]
pub fn FlakyList(props: &Props) -> Html {
    let session = use_session();
    let read = use_state(|| None::<Result<Rc<Vec<TestHistory>>, String>>);
    use_effect_with((props.plan.clone(), props.tests.is_some()), {
        let session = session.clone();
        let read = read.clone();
        move |(plan, given): &(String, bool)| {
            if !*given {
                let plan = plan.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let found = session.api.flaky_tests(&plan).await;
                    read.set(Some(found.map(Rc::new).map_err(|e| crate::hooks::failure_text(&session, e))));
                });
            }
        }
    });
    let tests = props.tests.clone().map(Ok).or_else(|| (*read).clone());
    let body = match &tests {
        None => html! { <p class="muted">{"Reading the plan's recent runs…"}</p> },
        Some(Err(e)) => html! { <p class="muted">{format!("The history could not be read: {e}")}</p> },
        Some(Ok(list)) if list.is_empty() => html! {
            <p class="muted">{"No test of this plan flipped between passing and failing, or passed only on a retry, in its last 20 runs."}</p>
        },
        Some(Ok(list)) => html! {
            // A list table: cards on a phone.
            <table class="list flaky-tests">
                <thead><tr><th scope="col">{"test"}</th><th scope="col">{"role"}</th><th scope="col" class="num">{"flips"}</th><th scope="col" class="num">{"passed on a retry"}</th><th scope="col" class="num">{"passed"}</th><th scope="col">{"recent results, newest first"}</th></tr></thead>
                <tbody>
                    { for list.iter().map(|t| html! {
                        <tr data-test={t.test.clone()} data-role={t.role.clone()}>
                            <th scope="row" class="test-name">{t.test.clone()}</th>
                            <td data-label="Role">{t.role.clone()}</td>
                            <td class="num" data-label="Flips">{t.flips}</td>
                            <td class="num" data-label="Passed on a retry">{t.flaky}</td>
                            <td class="num" data-label="Passed">{t.pass_rate.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_default()}</td>
                            <td data-label="Recent results"><ol class="history-strip">{ for t.results.iter().map(|r| html! {
                                <li class={classes!("status", r.outcome.as_str())} title={format!("run {}", r.run)}>{r.outcome.as_str()}</li>
                            }) }</ol></td>
                        </tr>
                    }) }
                </tbody>
            </table>
        },
    };
    html! {
        <section class="flaky" id="flaky-tests" aria-labelledby="flaky-title">
            <h2 id="flaky-title">{format!("Flaky tests of plan {}", props.plan)}</h2>
            {body}
        </section>
    }
}
