//! Run history: outcome, duration and counts of every run.

use ensemble_protocol::api::{RunMeta, RunState};
use yew::prelude::*;
use yew_router::prelude::*;

use crate::components::run_state::StateBadge;
use crate::format::{duration_ms, local_time};
use crate::hooks::{failure_text, use_session};
use crate::routes::Route;

#[component]
pub fn RunsPage() -> Html {
    let session = use_session();
    let runs = use_state(|| None::<Vec<RunMeta>>);
    let error = use_state(|| None::<String>);
    let tick = use_state(|| 0u32);
    // Refresh while something runs.
    use_effect_with(*tick, {
        let session = session.clone();
        let runs = runs.clone();
        let error = error.clone();
        let tick = tick.clone();
        move |_| {
            let alive = std::rc::Rc::new(std::cell::Cell::new(true));
            let still = alive.clone();
            wasm_bindgen_futures::spawn_local(async move {
                match session.api.runs().await {
                    Ok(mut list) => {
                        list.sort_by_key(|r| std::cmp::Reverse(r.started_us));
                        let running = list.iter().any(|r| r.state == RunState::Running);
                        runs.set(Some(list));
                        if running {
                            gloo_timers::future::TimeoutFuture::new(2_000).await;
                            if still.get() {
                                tick.set(*tick + 1);
                            }
                        }
                    }
                    Err(e) => error.set(Some(failure_text(&session, e))),
                }
            });
            move || alive.set(false)
        }
    });
    html! {
        <section class="page">
            <div class="page-head"><h1>{"Runs"}</h1></div>
            if let Some(e) = &*error { <p class="banner error" role="alert">{e.clone()}</p> }
            {match &*runs {
                None => html! { <p class="muted">{"Loading…"}</p> },
                Some(list) if list.is_empty() => html! { <p class="empty">{"No runs yet. Run a plan from the plans page."}</p> },
                Some(list) => html! {
                    <table class="list" id="runs">
                        <thead><tr><th scope="col">{"Run"}</th><th scope="col">{"Plan"}</th><th scope="col">{"Outcome"}</th><th scope="col">{"Started"}</th><th scope="col">{"Duration"}</th><th scope="col">{"Tests"}</th></tr></thead>
                        <tbody>
                        { for list.iter().map(|r| {
                            let duration = r.finished_us.map(|f| duration_ms(((f - r.started_us) / 1000).max(0) as u64));
                            let counts = r.summary.map(|s| format!("{} passed, {} failed, {} skipped", s.passed + s.flaky, s.failures(), s.skipped));
                            html! {
                                <tr key={r.id.clone()} data-run={r.id.clone()}>
                                    <td><Link<Route> to={Route::Run { id: r.id.clone() }}>{r.id.clone()}</Link<Route>></td>
                                    <td data-label="Plan">{r.plan.name.clone()}</td>
                                    <td data-label="Outcome"><StateBadge state={r.state} /></td>
                                    <td data-label="Started">{local_time(r.started_us)}</td>
                                    <td class="num" data-label="Duration">{duration.unwrap_or_else(|| "…".into())}</td>
                                    <td data-label="Tests">{counts.unwrap_or_default()}</td>
                                </tr>
                            }
                        }) }
                        </tbody>
                    </table>
                },
            }}
        </section>
    }
}
