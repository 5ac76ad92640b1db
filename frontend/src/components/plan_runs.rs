//! A stored plan's latest runs (by its name), newest first, with their
//! outcomes and counts: the plan page's history at a glance.

use ensemble_protocol::api::RunMeta;
use yew::prelude::*;
use yew_router::prelude::*;

use crate::components::run_state::StateBadge;
use crate::format::local_time;
use crate::hooks::{failure_text, use_session};
use crate::routes::{PlanQuery, Route};

/// Runs listed at most.
const SHOWN: usize = 8;

#[derive(Properties, PartialEq)]
pub struct Props {
    /// The plan's name, which its runs carry.
    pub plan: AttrValue,
}

#[component]
pub fn PlanRuns(props: &Props) -> Html {
    let session = use_session();
    let runs = use_state(|| None::<Vec<RunMeta>>);
    let notice = use_state(|| None::<String>);
    let navigator = use_navigator().expect("inside the router");
    use_effect_with(props.plan.clone(), {
        let runs = runs.clone();
        let api = session.api.clone();
        move |plan: &AttrValue| {
            let plan = plan.to_string();
            wasm_bindgen_futures::spawn_local(async move {
                if let Ok(all) = api.runs(Some(&plan)).await {
                    runs.set(Some(all.into_iter().take(SHOWN).collect()));
                }
            });
        }
    });
    html! {
        <section class="step" aria-labelledby="plan-runs-title" id="plan-runs">
            <h2 id="plan-runs-title">{"Latest runs"}</h2>
            if let Some(n) = &*notice { <p class="banner error" role="alert">{n.clone()}</p> }
            {match &*runs {
                None => html! { <p class="muted">{"Loading…"}</p> },
                Some(list) if list.is_empty() => html! { <p class="muted">{"This plan has not run yet."}</p> },
                Some(list) => html! {
                    <ul class="plan-runs">
                        { for list.iter().map(|r| {
                            let counts = r.summary.as_ref().map(|s| format!(" · {}", s.describe()));
                            let failed = r.summary.map_or(0, |s| s.failed + s.timed_out + s.crashed + s.lost);
                            let rerun = {
                                let (session, navigator, id, notice) = (session.clone(), navigator.clone(), r.id.clone(), notice.clone());
                                Callback::from(move |_| {
                                    let (session, navigator, id, notice) = (session.clone(), navigator.clone(), id.clone(), notice.clone());
                                    wasm_bindgen_futures::spawn_local(async move {
                                        match session.api.rerun_failed(&id).await {
                                            Ok(run) => navigator.push(&Route::Run { id: run }),
                                            Err(e) => notice.set(Some(failure_text(&session, e))),
                                        }
                                    });
                                })
                            };
                            html! {
                                <li data-run={r.id.clone()}>
                                    <StateBadge state={r.state} />{" "}
                                    <Link<Route> to={Route::Run { id: r.id.clone() }}>{local_time(r.started_us)}</Link<Route>>
                                    <span class="muted">{counts.unwrap_or_default()}</span>
                                    if let Some(s) = &r.scheduled { <span class="muted">{format!(" · by schedule {s}")}</span> }
                                    if let Some(of) = &r.reruns {
                                        <span class="muted rerun-of">{" · rerun of "}<Link<Route> to={Route::Run { id: of.clone() }}>{of.clone()}</Link<Route>></span>
                                    }
                                    if failed > 0 && r.finished_us.is_some() {
                                        {" "}<button type="button" class="small rerun-failed" onclick={rerun}
                                            aria-label={format!("Rerun the {failed} failed of the run of {}", local_time(r.started_us))}>{"Rerun failed"}</button>
                                    }
                                </li>
                            }
                        }) }
                    </ul>
                },
            }}
            <Link<Route, PlanQuery> to={Route::Runs} query={Some(PlanQuery { plan: props.plan.to_string() })} classes="plan-history">
                {"All runs of this plan"}
            </Link<Route, PlanQuery>>
        </section>
    }
}
