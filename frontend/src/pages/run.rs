//! A run, live: summary, one lane per machine on the shared timeline, sync
//! events, and the tests with a filter and each one's output. Opened mid-run
//! or after the end, the server replays the events from the first, so the
//! page shows the same thing either way.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use ensemble_protocol::Outcome;
use ensemble_protocol::api::{MachineState, RerunPreview, RunMeta, RunState, TestHistory};
use yew::prelude::*;
use yew_router::prelude::*;

use crate::components::download::Download;
use crate::components::flaky_list::FlakyList;
use crate::components::matrix::MatrixView;
use crate::components::run_state::StateBadge;
use crate::components::test_table::TestTable;
use crate::components::timeline::Timeline;
use crate::dom::{input_value, select_value};
use crate::format::{bytes, duration_ms, offset_us};
use crate::hooks::{failure_text, use_plan_id, use_session};
use crate::routes::Route;
use crate::services::ApiFailure;
use crate::services::events::{self, StreamEnd, Watch};
use crate::services::storage::{page_param, page_query, set_query};
use crate::state::run::{Show, Status, Stream};
use crate::state::{RunAction, RunView};

#[derive(Properties, PartialEq)]
pub struct Props {
    pub id: String,
}

/// Sync events listed at most (the newest); the timeline shows them all.
const SYNC_SHOWN: usize = 200;
/// How often a live run's timeline moves on between events.
const TICK_MS: u32 = 500;
/// The server's record of a live run is asked for at most this often.
const META_EVERY_MS: f64 = 2_000.0;

/// A test a link names: its name, role and machine (`?test=&role=&machine=`).
type TestLink = (String, Option<String>, Option<String>);

fn browser_now_us() -> i64 {
    (js_sys::Date::now() * 1000.0) as i64
}

#[component]
pub fn RunPage(props: &Props) -> Html {
    let session = use_session();
    let view = use_reducer({
        let id = props.id.clone();
        move || RunView::new(&id)
    });
    let watch = use_mut_ref(|| None::<Watch>);
    let attempt = use_state(|| 0u32);
    let meta = use_state(|| None::<RunMeta>);
    // The filters come from the address (a shared link) and go to it.
    let filter = use_state(|| page_param("q").unwrap_or_default());
    let show = use_state(|| page_param("show").map_or(Show::All, |s| Show::from_name(&s)));
    let selected = use_state(|| None::<usize>);
    // The tests of a timeline bucket the table is narrowed to.
    let block = use_state(|| None::<(String, Rc<std::collections::HashSet<usize>>)>);
    // The table lists failures first unless asked for the run's order.
    let failures_first = use_state(|| page_param("order").as_deref() != Some("run"));
    let notice = use_state(|| None::<String>);
    let flaky_tests = use_state(|| None::<Rc<Vec<TestHistory>>>);
    let history = use_state(|| None::<TestHistory>);
    // The server has no such run (a mistyped or stale link).
    let missing = use_state(|| false);

    // The plan's flaky tests, once its name is known and again at the end
    // (this run's results count too).
    use_effect_with((view.plan.clone(), view.finished.is_some()), {
        let api = session.api.clone();
        let flaky_tests = flaky_tests.clone();
        move |(plan, _): &(Option<String>, bool)| {
            if let Some(plan) = plan.clone() {
                wasm_bindgen_futures::spawn_local(async move {
                    if let Ok(tests) = api.flaky_tests(&plan).await {
                        flaky_tests.set(Some(Rc::new(tests)));
                    }
                });
            }
        }
    });

    let flaky = use_memo((*flaky_tests).clone().map(|t| Rc::as_ptr(&t) as usize), {
        let flaky_tests = flaky_tests.clone();
        move |_| -> std::collections::HashSet<(String, String)> {
            flaky_tests.iter().flat_map(|l| l.iter()).map(|t| (t.role.clone(), t.test.clone())).collect()
        }
    });

    // The selected test's history in its plan's runs.
    let picked = selected.and_then(|i| view.rows.get(i)).map(|r| (r.shard.role.clone(), r.test.clone()));
    use_effect_with((view.plan.clone(), picked, view.finished.is_some()), {
        let api = session.api.clone();
        let history = history.clone();
        move |(plan, picked, _): &(Option<String>, Option<(String, String)>, bool)| {
            history.set(None);
            if let (Some(plan), Some((role, test))) = (plan.clone(), picked.clone()) {
                wasm_bindgen_futures::spawn_local(async move {
                    if let Ok(h) = api.test_history(&plan, &role, &test).await {
                        history.set(Some(h));
                    }
                });
            }
        }
    });

    // Line the browser's clock up with the server's, which times the events:
    // the elapsed time is the run's, whenever the page was opened.
    use_effect_with(props.id.clone(), {
        let view = view.clone();
        let api = session.api.clone();
        move |_: &String| {
            wasm_bindgen_futures::spawn_local(async move {
                let before = browser_now_us();
                if let Ok(health) = api.health().await {
                    let after = browser_now_us();
                    if health.now_us > 0 {
                        view.dispatch(RunAction::Clock {
                            skew_us: (before + after) / 2 - health.now_us,
                            now_us: browser_now_us(),
                        });
                    }
                }
            });
        }
    });

    // Open the stream from where the view is; again after each reconnect.
    use_effect_with((props.id.clone(), *attempt), {
        let view = view.clone();
        let api = session.api.clone();
        let watch: Rc<RefCell<Option<Watch>>> = watch.clone();
        move |(id, _): &(String, u32)| {
            let on_events = {
                let view = view.clone();
                Callback::from(move |events| {
                    view.dispatch(RunAction::Events { events, received_us: browser_now_us() })
                })
            };
            let on_end = {
                let view = view.clone();
                Callback::from(move |end| {
                    view.dispatch(RunAction::Stream(match end {
                        StreamEnd::Closed => Stream::Ended,
                        StreamEnd::Failed(m) => Stream::Failed(m),
                    }))
                })
            };
            view.dispatch(RunAction::Stream(Stream::Connecting));
            *watch.borrow_mut() = Some(events::watch(&api, id, view.last_seq + 1, on_events, on_end));
            move || drop(watch.borrow_mut().take())
        }
    });

    let plan_id = use_plan_id(view.plan.clone());

    // What a rerun of the failures runs (with the tests that coordinate
    // with them), for its button.
    let rerun_preview = use_state(|| None::<RerunPreview>);
    use_effect_with((props.id.clone(), view.finished.is_some()), {
        let (api, preview) = (session.api.clone(), rerun_preview.clone());
        move |(id, finished): &(String, bool)| {
            preview.set(None);
            if *finished {
                let id = id.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    if let Ok(p) = api.rerun_preview(&id).await {
                        preview.set(Some(p));
                    }
                });
            }
        }
    });

    // The server's record of the run, at once and again (every 2 s at most)
    // while events come: the header shows the run's end as soon as the
    // server has it, even while the page is still taking in a long backlog
    // of events, and a rerun's link is there from the start.
    let meta_asked = use_mut_ref(|| (String::new(), 0.0f64));
    use_effect_with((props.id.clone(), view.last_seq, view.finished.is_some()), {
        let (session, meta, missing, asked) =
            (session.clone(), meta.clone(), missing.clone(), meta_asked.clone());
        move |(id, _, finished): &(String, u64, bool)| {
            let now = js_sys::Date::now();
            let due = {
                let mut asked = asked.borrow_mut();
                let due = !*finished && (asked.0 != *id || now - asked.1 >= META_EVERY_MS);
                if due {
                    *asked = (id.clone(), now);
                }
                due
            };
            if due {
                let id = id.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    match session.api.run(&id).await {
                        Ok(m) => meta.set(Some(m)),
                        Err(ApiFailure::Server { status: 404, .. }) => missing.set(true),
                        Err(_) => {} // the stream's own handling says what is wrong
                    }
                });
            }
        }
    });

    // The stream ended before the run did: ask the server, and reconnect
    // while the run goes on (the server went away, or the network did).
    use_effect_with((view.stream.clone(), view.finished.is_some()), {
        let session = session.clone();
        let attempt = attempt.clone();
        let meta = meta.clone();
        let missing = missing.clone();
        let notice = notice.clone();
        let id = props.id.clone();
        move |(stream, finished): &(Stream, bool)| {
            let alive = Rc::new(Cell::new(true));
            let still = alive.clone();
            let ended = matches!(stream, Stream::Ended | Stream::Failed(_));
            if ended || *finished {
                wasm_bindgen_futures::spawn_local(async move {
                    let reconnect_after = async |ms: u32| {
                        gloo_timers::future::TimeoutFuture::new(ms).await;
                        if still.get() {
                            attempt.set(*attempt + 1);
                        }
                    };
                    match session.api.run(&id).await {
                        Ok(m) if matches!(m.state, RunState::Running | RunState::Queued) && ended => {
                            meta.set(Some(m));
                            reconnect_after(1_000).await;
                        }
                        Ok(m) => meta.set(Some(m)),
                        // The server is out of reach: keep trying while the stream is down.
                        Err(ApiFailure::Network(_)) if ended => reconnect_after(2_000).await,
                        Err(ApiFailure::Server { status: 404, .. }) => missing.set(true),
                        Err(e) => notice.set(Some(failure_text(&session, e))),
                    }
                });
            }
            move || alive.set(false)
        }
    });

    // While the run goes, move the timeline's end with the clock.
    use_effect_with(view.finished.is_some(), {
        let view = view.clone();
        move |finished: &bool| {
            let alive = Rc::new(Cell::new(!*finished));
            let still = alive.clone();
            wasm_bindgen_futures::spawn_local(async move {
                while still.get() {
                    gloo_timers::future::TimeoutFuture::new(TICK_MS).await;
                    if still.get() {
                        view.dispatch(RunAction::Tick(browser_now_us()));
                    }
                }
            });
            move || alive.set(false)
        }
    });

    // Rows change only with events (not with the clock's ticks).
    let block_key = block.as_ref().map(|(_, set)| Rc::as_ptr(set) as usize);
    let rows = use_memo((view.last_seq, (*filter).clone(), *show, *failures_first, block_key), {
        let view = view.clone();
        let block = block.clone();
        move |(_, text, show, first, _): &(u64, String, Show, bool, Option<usize>)| {
            let rows = view.filtered(text, *show, *first);
            match &*block {
                Some((_, set)) => rows.into_iter().filter(|i| set.contains(i)).collect(),
                None => rows,
            }
        }
    });
    // Another filter: the table starts again from its top (its scroll
    // would otherwise land in the middle of the new list).
    use_effect_with(((*filter).clone(), *show, *failures_first, block_key), |_| {
        if let Some(el) =
            web_sys::window().and_then(|w| w.document()).and_then(|d| d.get_element_by_id("tests-scroll"))
        {
            el.set_scroll_top(0);
        }
    });
    let on_block = {
        let block = block.clone();
        Callback::from(move |(what, rows): (String, Vec<usize>)| {
            block.set(Some((what, Rc::new(rows.into_iter().collect()))));
            crate::dom::focus_first("#tests-title");
        })
    };
    let clear_block = {
        let block = block.clone();
        Callback::from(move |_| block.set(None))
    };
    let on_failures_first = {
        let failures_first = failures_first.clone();
        Callback::from(move |e: Event| {
            let first = crate::dom::checked(&e);
            failures_first.set(first);
            set_query(&[("order", (!first).then(|| "run".to_string()))]);
        })
    };
    // A link to a test of the run (`?test=NAME&role=ROLE&machine=M`) opens
    // it once its row is there; selecting a test puts it in the address.
    let linked = use_state(|| {
        let q = page_query();
        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        get("test").map(|test| (test, get("role"), get("machine")))
    });
    use_effect_with((view.last_seq, (*linked).clone()), {
        let (view, selected, linked) = (view.clone(), selected.clone(), linked.clone());
        move |(_, wanted): &(u64, Option<TestLink>)| {
            if let Some((test, role, machine)) = wanted {
                let found = view.rows.iter().position(|r| {
                    r.test == *test
                        && role.as_ref().is_none_or(|x| *x == r.shard.role)
                        && machine.as_ref().is_none_or(|x| *x == r.shard.machine)
                });
                if let Some(i) = found {
                    selected.set(Some(i));
                    linked.set(None);
                }
            }
        }
    });
    let on_select = {
        let selected = selected.clone();
        let view = view.clone();
        Callback::from(move |i: usize| {
            selected.set(Some(i));
            // On a phone the detail is under the table: bring it up.
            if crate::dom::is_phone() {
                gloo_timers::callback::Timeout::new(0, || crate::dom::scroll_into_view("#test-detail"))
                    .forget();
            }
            if let Some(r) = view.rows.get(i) {
                set_query(&[
                    ("test", Some(r.test.clone())),
                    ("role", Some(r.shard.role.clone())),
                    ("machine", Some(r.shard.machine.clone())),
                ]);
            }
        })
    };
    let on_filter = {
        let filter = filter.clone();
        Callback::from(move |e: InputEvent| {
            let text = input_value(&e);
            set_query(&[("q", (!text.is_empty()).then(|| text.clone()))]);
            filter.set(text);
        })
    };
    let on_show = {
        let show = show.clone();
        Callback::from(move |e: Event| {
            let picked = Show::from_name(&select_value(&e));
            set_query(&[("show", (picked != Show::All).then(|| picked.name().to_string()))]);
            show.set(picked);
        })
    };
    let cancel = {
        let session = session.clone();
        let notice = notice.clone();
        let id = props.id.clone();
        Callback::from(move |_| {
            let sure = crate::dom::confirm(&format!(
                "Cancel run {id}? Its running tests are stopped, and they and the tests not yet started end cancelled."
            ));
            if !sure {
                return;
            }
            let session = session.clone();
            let notice = notice.clone();
            let id = id.clone();
            notice.set(None);
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(e) = session.api.cancel_run(&id).await {
                    notice.set(Some(failure_text(&session, e)));
                }
            });
        })
    };

    let navigator = use_navigator();
    // Start another run (the same plan again, or only its failures) and go to it.
    let start_again = |failed_only: bool| {
        let (session, notice, id, navigator, meta) =
            (session.clone(), notice.clone(), props.id.clone(), navigator.clone(), meta.clone());
        Callback::from(move |_| {
            let (session, notice, id, navigator) =
                (session.clone(), notice.clone(), id.clone(), navigator.clone());
            let plan = meta.as_ref().map(|m| m.plan.clone());
            notice.set(None);
            wasm_bindgen_futures::spawn_local(async move {
                let started = match (failed_only, plan) {
                    (true, _) => session.api.rerun_failed(&id).await,
                    (false, Some(plan)) => session.api.run_plan(&plan).await,
                    (false, None) => return,
                };
                match started {
                    Ok(run) => {
                        if let Some(n) = navigator {
                            n.push(&Route::Run { id: run });
                        }
                    }
                    Err(e) => notice.set(Some(failure_text(&session, e))),
                }
            });
        })
    };
    let rerun = start_again(true);
    let run_again = start_again(false);

    // Once finished, the coordinator's verdict; before, what the server lists.
    let state = view.state(meta.as_ref().map(|m| m.state));
    // Not over yet: it can be cancelled, and a broken stream reconnects.
    let running = matches!(state, RunState::Running | RunState::Queued);
    let (t0, t1) = view.span();
    // The run's time: its own once it is over (the server's record, as the
    // runs list shows it, else the verdict streamed), else from its start
    // to now.
    let recorded = meta.as_ref().filter(|_| !running).and_then(|m| m.finished_us.map(|f| f - m.started_us));
    let elapsed = match (recorded, &view.finished) {
        (Some(us), _) => (us / 1000).max(0) as u64,
        (None, Some(f)) => f.duration_ms,
        (None, None) => ((t1 - t0) / 1000).max(0) as u64,
    };
    let clocks: BTreeMap<String, String> = session
        .machines
        .iter()
        .map(|m| (m.info.name.clone(), offset_us(m.clock_offset_us, m.clock_uncertainty_us)))
        .collect();
    // A machine of a live run whose connection closed: it says so at once,
    // and when it is given up.
    let alerts: BTreeMap<String, String> = if running {
        let now = if view.clock_known() { view.now_us } else { browser_now_us() };
        session
            .machines
            .iter()
            .filter(|m| m.state == MachineState::Disconnected)
            .map(|m| {
                let left = m.lost_at_us.map_or(0, |t| (t - now).max(0) / 1_000_000);
                (m.info.name.clone(), format!("disconnected — lost in {left} s unless it returns"))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    let stream_note = match &view.stream {
        Stream::Connecting => Some("connecting…".to_string()),
        Stream::Live => None,
        Stream::Ended if view.finished.is_none() && running => Some("reconnecting…".to_string()),
        Stream::Ended => None,
        Stream::Failed(m) => Some(format!("stream broken ({m}); reconnecting…")),
    };
    // A count filters the table to its tests (again: back to all).
    let count = |label: &'static str, n: u32, class: &'static str| {
        let target = Show::of_count(class);
        let on = target.is_some_and(|t| *show == t);
        let pick = {
            let show = show.clone();
            Callback::from(move |_| {
                if let Some(t) = target {
                    let picked = if *show == t { Show::All } else { t };
                    set_query(&[("show", (picked != Show::All).then(|| picked.name().to_string()))]);
                    show.set(picked);
                    // What it changed may be below the fold (under a matrix).
                    crate::dom::scroll_into_view("#tests-panel");
                }
            })
        };
        html! {
            <li class={classes!("count", class, (n == 0).then_some("zero"), on.then_some("on"))} data-count={class}>
                if target.is_some() {
                    <button type="button" class="count-filter" onclick={pick} aria-pressed={on.to_string()}
                        title={format!("Show only the {label} tests in the table")}>
                        <strong>{n}</strong>{format!(" {label}")}
                    </button>
                } else {
                    <strong>{n}</strong>{format!(" {label}")}
                }
            </li>
        }
    };
    let zeros: Vec<&str> = [
        ("passed", view.count(Outcome::Passed)),
        ("failed", view.count(Outcome::Failed)),
        ("timed out", view.count(Outcome::TimedOut)),
        ("crashed", view.count(Outcome::Crashed)),
        ("lost", view.count(Outcome::Lost)),
        ("flaky", view.count(Outcome::Flaky)),
        ("skipped", view.count(Outcome::Skipped)),
        ("running", view.running),
        ("pending", view.pending() as u32),
    ]
    .into_iter()
    .filter(|(_, n)| *n == 0)
    .map(|(label, _)| label)
    .collect();
    // A cross-platform run: its outcomes across profiles (again as tests end).
    let matrix = use_memo((view.last_seq, view.compares_profiles()), {
        let view = view.clone();
        move |(_, compares): &(u64, bool)| compares.then(|| Rc::new(view.matrix()))
    });
    let on_pick = {
        let (view, on_select) = (view.clone(), on_select.clone());
        Callback::from(move |(role, test, profile): (String, String, String)| {
            if let Some(i) = view.row_on_profile(&role, &test, &profile) {
                on_select.emit(i);
                crate::dom::focus_first("#detail-title");
            }
        })
    };
    let detail = selected.and_then(|i| view.rows.get(i).cloned());
    let failures: u32 = [Outcome::Failed, Outcome::TimedOut, Outcome::Crashed, Outcome::Lost]
        .into_iter()
        .map(|o| view.count(o))
        .sum();
    let sync_skip = view.sync.len().saturating_sub(SYNC_SHOWN);

    if *missing {
        return html! {
            <section class="page run">
                <div class="page-head"><h1>{format!("Run {}", props.id)}</h1></div>
                <p class="banner error" role="alert" id="run-missing">
                    {format!("This server has no run {:?}: the link may be mistyped, or from another server.", props.id)}
                </p>
                <Link<Route> to={Route::Runs} classes="button">{"All runs"}</Link<Route>>
            </section>
        };
    }

    html! {
        <section class="page run">
            <div class="page-head">
                <h1>
                    {format!("Run {}", props.id)}
                    if let Some(p) = &view.plan {
                        <small class="muted">{" · plan "}
                            <Link<Route, crate::routes::PlanQuery> to={Route::Runs} query={Some(crate::routes::PlanQuery { plan: p.clone() })}
                                classes="plan-link">{p.clone()}</Link<Route, crate::routes::PlanQuery>>
                            if let Some(id) = plan_id.clone() {
                                {" · "}<Link<Route> to={Route::Plan { id }} classes="edit-plan">{"edit"}</Link<Route>>
                            }
                        </small>
                    }
                </h1>
                <div class="actions">
                    <StateBadge {state} id="run-state" live=true />
                    // A live run's time once the clocks are lined up (until
                    // then it would count from when the page opened).
                    <span class="muted" id="run-elapsed">{
                        if view.finished.is_some() || view.clock_known() { duration_ms(elapsed) } else { "…".to_string() }
                    }</span>
                    if let Some(n) = stream_note { <span class="muted">{n}</span> }
                    if running {
                        <button type="button" class="danger" id="cancel-run" onclick={cancel}>{"Cancel run"}</button>
                    }
                    if view.finished.is_some() && failures > 0 {
                        <button type="button" id="rerun-failed" onclick={rerun}
                            title="Run again the tests that failed, timed out, crashed or were lost, on this plan">
                            {rerun_label(failures, *rerun_preview)}
                        </button>
                    }
                    if !running && meta.is_some() {
                        <button type="button" id="run-again" onclick={run_again}
                            title="Start a new run of the same plan, as this run had it">{"Run again"}</button>
                    }
                    <Link<Route> to={Route::Runs} classes="button">{"All runs"}</Link<Route>>
                </div>
            </div>
            if let Some(n) = &*notice { <p class="banner error" role="alert">{n.clone()}</p> }
            if let Some(of) = meta.as_ref().and_then(|m| m.reruns.clone()) {
                <p class="muted" id="reruns">
                    {"Reruns the failures of "}
                    <Link<Route> to={Route::Run { id: of.clone() }}>{format!("run {of}")}</Link<Route>>
                </p>
            }
            if let Some(w) = &view.waiting {
                <p class="banner waiting" id="run-waiting" role="status">{format!("Queued, not started: {w}")}</p>
            }
            if let Some(f) = &view.finished {
                if let Some(why) = &f.cancelled { <p class="banner error">{format!("Stopped early: {why}")}</p> }
            }
            <ul class="summary" id="summary" aria-label="summary">
                {count("passed", view.count(Outcome::Passed), "passed")}
                {count("failed", view.count(Outcome::Failed), "failed")}
                {count("timed out", view.count(Outcome::TimedOut), "timed-out")}
                {count("crashed", view.count(Outcome::Crashed), "crashed")}
                {count("lost", view.count(Outcome::Lost), "lost")}
                {count("flaky", view.count(Outcome::Flaky), "flaky")}
                {count("skipped", view.count(Outcome::Skipped), "skipped")}
                if view.count(Outcome::Cancelled) > 0 {
                    {count("cancelled", view.count(Outcome::Cancelled), "cancelled")}
                }
                {count("running", view.running, "running")}
                {count("pending", view.pending() as u32, "pending")}
                if view.filtered_out > 0 {
                    {count("filtered out", view.filtered_out, "filtered-out")}
                }
                // On a phone the zero counts are one line.
                if !zeros.is_empty() {
                    <li class="count zeros" data-count="zeros">{format!("none {}", zeros.join(", "))}</li>
                }
            </ul>

            <Timeline view={view.clone()} version={view.version} clocks={clocks} alerts={alerts} on_select={on_select.clone()} {on_block} />

            if let Some(m) = (*matrix).clone().filter(|m| !m.columns.is_empty()) {
                <MatrixView matrix={m} {on_pick} show={*show} />
            }

            <div class="run-columns">
                <section class="tests-panel" id="tests-panel" aria-labelledby="tests-title">
                    <h2 id="tests-title">{format!("Tests ({} of {})", rows.len(), view.rows.len())}</h2>
                    <div class="inline filters">
                        <label for="test-filter">{"Filter"}</label>
                        <input id="test-filter" type="search" placeholder="test, role, machine or suite" value={(*filter).clone()} oninput={on_filter} />
                        <label for="test-show">{"Show"}</label>
                        <select id="test-show" onchange={on_show}>
                            { for Show::ALL.iter().map(|s| html! { <option value={s.name()} selected={*show == *s}>{s.name()}</option> }) }
                        </select>
                        <label class="checkbox-inline">
                            <input id="failures-first" type="checkbox" checked={*failures_first} onchange={on_failures_first} />
                            {" Failures first"}
                        </label>
                    </div>
                    if let Some((what, _)) = &*block {
                        <p class="banner info" id="block-filter" role="status">
                            {format!("Only the {what} (from the timeline). ")}
                            <button type="button" class="small" id="clear-block" onclick={clear_block}>{"Show all"}</button>
                        </p>
                    }
                    <TestTable view={view.clone()} version={view.version} rows={rows.clone()} selected={*selected} on_select={on_select} flaky={flaky.clone()} />
                </section>

                <section class="detail" id="test-detail" aria-labelledby="detail-title" aria-live="polite">
                    <h2 id="detail-title">{"Test"}</h2>
                    {match detail {
                        None => html! { <p class="muted">{"Pick a test in the table or on the timeline to see its message and output."}</p> },
                        Some(r) => html! {
                            <>
                                <h3 class="detail-name">{r.test.clone()}</h3>
                                <p>
                                    <span class={classes!("status", r.status.class())}>{r.status.class()}</span>
                                    {format!(" on {} · role {} · suite {} · instance {}", r.shard.machine, r.shard.role, r.shard.suite, r.shard.instance)}
                                    if let Some(ms) = r.duration_ms { {format!(" · {}", duration_ms(ms))} }
                                    if r.attempt > 1 { {format!(" · attempt {}", r.attempt)} }
                                </p>
                                if let Some(b) = view.blocked.get(&r.shard.shard).filter(|_| r.status == Status::Running) {
                                    <p class="banner waiting" id="test-waiting" role="status">
                                        {format!("Waiting for {}, for {}", b.what(), duration_ms(((view.now_us.max(view.last_at_us) - b.since_us) / 1000).max(0) as u64))}
                                    </p>
                                }
                                if let Some(m) = &r.message {
                                    <h4>{"Message"}</h4>
                                    <pre class="message">{m.clone()}</pre>
                                }
                                if !r.logs.is_empty() {
                                    <h4>{"Log"}</h4>
                                    <pre class="logs">{r.logs.join("\n")}</pre>
                                }
                                if !r.attachments.is_empty() {
                                    <h4>{"Attachments"}</h4>
                                    <ul class="attachments" id="attachments">
                                        { for r.attachments.iter().map(|a| html! {
                                            <li>
                                                <Download path={ensemble_protocol::api::routes::run_attachment(&props.id, &a.sha256)} name={a.name.clone()}>{a.name.clone()}</Download>
                                                <span class="muted">{format!(" {}", bytes(a.size))}</span>
                                                if r.attempt > 1 { <span class="muted">{format!(" · attempt {}", a.attempt)}</span> }
                                            </li>
                                        }) }
                                    </ul>
                                }
                                <h4>{"Output"}</h4>
                                if r.output.is_empty() {
                                    <p class="muted">{if r.status == Status::Running || r.status == Status::Pending { "Not finished yet." } else { "No output." }}</p>
                                } else {
                                    <pre class="output">{r.output.clone()}</pre>
                                }
                                if let Some(h) = history.as_ref().filter(|h| h.role == r.shard.role && h.test == r.test) {
                                    <h4>{"History"}</h4>
                                    <p id="test-history">{history_line(h)}</p>
                                    <ol class="history-strip" aria-label="recent results, newest first">
                                        { for h.results.iter().map(|p| html! {
                                            <li class={classes!("status", p.outcome.as_str())} title={format!("{} in run {}", p.outcome, p.run)}>{p.outcome.as_str()}</li>
                                        }) }
                                    </ol>
                                }
                            </>
                        },
                    }}
                </section>
            </div>

            if let (Some(plan), Some(tests)) = (&view.plan, &*flaky_tests) {
                <FlakyList plan={plan.clone()} tests={Some(tests.clone())} />
            }

            <section class="sync" aria-labelledby="sync-title">
                <h2 id="sync-title">{format!("Sync events ({})", view.sync.len())}</h2>
                if view.sync.is_empty() {
                    <p class="muted" id="no-sync">{if view.finished.is_some() { "No signals, barriers or publishes in this run." } else { "No signals, barriers or publishes yet." }}</p>
                } else {
                    if sync_skip > 0 { <p class="muted">{format!("{sync_skip} earlier events not listed (they are on the timeline)")}</p> }
                    <ol class="sync-events" id="sync-events">
                        { for view.sync[sync_skip..].iter().map(|s| html! {
                            <li key={s.seq} class={classes!(s.failed.then_some("failed"))}>
                                <span class="muted">{format!("+{} ", duration_ms(((s.at_us - t0) / 1000).max(0) as u64))}</span>
                                <strong>{s.role.clone()}</strong>{format!(" on {}: {}", s.machine, s.text)}
                            </li>
                        }) }
                    </ol>
                }
            </section>
        </section>
    }
}

/// A test's history in a line: how often it passed, whether it is flaky,
/// how long it takes.
fn history_line(h: &TestHistory) -> String {
    let mut parts = vec![format!(
        "{} result{} in this plan's runs",
        h.results.len(),
        if h.results.len() == 1 { "" } else { "s" }
    )];
    if let Some(rate) = h.pass_rate {
        parts.push(format!("passed {:.0}%", rate * 100.0));
    }
    if h.is_flaky() {
        parts.push(format!(
            "flaky: {} flip{}, {} pass{} on a retry",
            h.flips,
            if h.flips == 1 { "" } else { "s" },
            h.flaky,
            if h.flaky == 1 { "" } else { "es" }
        ));
    }
    if let (Some(p50), Some(p90)) = (h.duration_p50_ms, h.duration_p90_ms) {
        parts.push(format!("p50 {}, p90 {}", duration_ms(p50), duration_ms(p90)));
    }
    parts.join(" · ")
}

/// The rerun button's words: the failed tests, and those that run with
/// them because they coordinate (the server's count, once it is known).
fn rerun_label(failures: u32, preview: Option<RerunPreview>) -> String {
    match preview {
        Some(p) if p.tests > p.failed => {
            format!(
                "Rerun {} failed (+{} that coordinate with {})",
                p.failed,
                p.tests - p.failed,
                if p.failed == 1 { "it" } else { "them" }
            )
        }
        Some(p) => format!("Rerun {} failed", p.failed),
        None => format!("Rerun {failures} failed"),
    }
}
