//! Run history: outcome, duration and counts of every run, or of one
//! plan's runs (`/runs?plan=NAME`, the plan's history).

use ensemble_protocol::api::{RunMeta, RunState};
use yew::prelude::*;
use yew_router::prelude::*;

use crate::components::run_state::StateBadge;
use crate::format::{duration_ms, local_time};
use crate::hooks::{failure_text, use_plan_id, use_session};
use crate::routes::{PlanQuery, Route};
use crate::services::storage::query_pairs;

#[component]
pub fn RunsPage() -> Html {
    let session = use_session();
    // `?plan=NAME`: only that plan's runs.
    let location = use_location();
    let plan = location
        .as_ref()
        .and_then(|l| query_pairs(l.query_str()).into_iter().find(|(k, _)| k == "plan"))
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty());
    let runs = use_state(|| None::<Vec<RunMeta>>);
    let error = use_state(|| None::<String>);
    let tick = use_state(|| 0u32);
    // Refresh while something runs.
    use_effect_with((*tick, plan.clone()), {
        let session = session.clone();
        let runs = runs.clone();
        let error = error.clone();
        let tick = tick.clone();
        move |(_, plan): &(u32, Option<String>)| {
            let plan = plan.clone();
            let alive = std::rc::Rc::new(std::cell::Cell::new(true));
            let still = alive.clone();
            wasm_bindgen_futures::spawn_local(async move {
                match session.api.runs(plan.as_deref()).await {
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
    let plan_id = use_plan_id(plan.clone());
    let shown: Option<Vec<&RunMeta>> =
        runs.as_ref().map(|l| l.iter().filter(|r| plan.as_ref().is_none_or(|p| r.plan.name == *p)).collect());
    html! {
        <section class="page">
            <div class="page-head">
                <h1>{match &plan { Some(p) => format!("Runs of plan {p}"), None => "Runs".to_string() }}</h1>
                if plan.is_some() {
                    <div class="actions">
                        if let Some(id) = plan_id {
                            <Link<Route> to={Route::Plan { id }} classes="button edit-plan">{"Edit plan"}</Link<Route>>
                        }
                        <Link<Route> to={Route::Runs} classes="button">{"All runs"}</Link<Route>>
                    </div>
                }
            </div>
            if let Some(e) = &*error { <p class="banner error" role="alert">{e.clone()}</p> }
            {match shown {
                None => html! { <p class="muted">{"Loading…"}</p> },
                Some(list) if list.is_empty() && plan.is_some() => html! { <p class="empty" id="no-runs">{"This plan has not run yet."}</p> },
                Some(list) if list.is_empty() => html! { <p class="empty" id="no-runs">{"No runs yet. Run a plan from the plans page."}</p> },
                Some(list) => html! {
                    <table class="list" id="runs">
                        <thead><tr><th scope="col">{"Run"}</th><th scope="col">{"Plan"}</th><th scope="col">{"Outcome"}</th><th scope="col">{"Started"}</th><th scope="col">{"Duration"}</th><th scope="col">{"Tests"}</th></tr></thead>
                        <tbody>
                        { for list.iter().map(|r| {
                            let duration = r.finished_us.map(|f| duration_ms(((f - r.started_us) / 1000).max(0) as u64));
                            let counts = r.summary.map(|s| s.describe());
                            let query = PlanQuery { plan: r.plan.name.clone() };
                            html! {
                                <tr key={r.id.clone()} data-run={r.id.clone()}>
                                    <td>
                                        <Link<Route> to={Route::Run { id: r.id.clone() }}>{r.id.clone()}</Link<Route>>
                                        if let Some(of) = &r.reruns {
                                            <small class="muted rerun-of">{" rerun of "}<Link<Route> to={Route::Run { id: of.clone() }}>{of.clone()}</Link<Route>></small>
                                        }
                                    </td>
                                    <td data-label="Plan">
                                        <Link<Route, PlanQuery> to={Route::Runs} query={Some(query)} classes="plan-link">{r.plan.name.clone()}</Link<Route, PlanQuery>>
                                    </td>
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
