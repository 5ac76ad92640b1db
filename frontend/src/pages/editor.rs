//! The plan editor: name and type, suites (from the catalog or uploaded),
//! each linked to a machine profile, settings; save and run.

use ensemble_protocol::PlanType;
use ensemble_protocol::api::SuiteSummary;
use ensemble_protocol::plan::{Execution, NotifyFormat, NotifyOn};
use yew::prelude::*;

use crate::format::{local_time, plural};
use yew_router::prelude::*;

use crate::components::download::Download;
use crate::components::entry_card::EntryCard;
use crate::components::field::{Field, aria_error};
use crate::components::flaky_list::FlakyList;
use crate::components::plan_runs::PlanRuns;
use crate::components::profile_card::ProfileCard;
use crate::components::service_card::ServiceCard;
use crate::components::upload::SuiteUpload;
use crate::dom::{LeaveGuard, checked, input_value, select_value, time_zone};
use crate::hooks::{failure_text, use_fresh_suites, use_session};
use crate::routes::Route;
use crate::services::ApiFailure;
use crate::state::editor::{EditorAction, EditorState, SettingField};

#[derive(Properties, PartialEq)]
pub struct Props {
    /// The stored plan to edit; `None` for a new plan.
    pub id: Option<String>,
}

#[component]
pub fn EditorPage(props: &Props) -> Html {
    let session = use_session();
    use_fresh_suites();
    let navigator = use_navigator().expect("inside the router");
    let ed = use_reducer(EditorState::new);
    let banner = use_state(|| None::<(bool, String)>);
    let busy = use_state(|| false);
    let pick = use_state(String::new);
    // The server has no plan of the route's id (a mistyped or stale link).
    let missing = use_state(|| None::<String>);

    // Which suites use sync: the catalog says, and the execution setting's
    // warning needs it.
    use_effect_with(session.suites.clone(), {
        let ed = ed.clone();
        move |suites: &Vec<SuiteSummary>| ed.dispatch(EditorAction::Catalog(suites.clone()))
    });

    // Load the stored plan (again when the route's id changes).
    use_effect_with(props.id.clone(), {
        let ed = ed.clone();
        let session = session.clone();
        let banner = banner.clone();
        let missing = missing.clone();
        move |id: &Option<String>| {
            if let Some(id) = id.clone().filter(|id| ed.id.as_deref() != Some(id.as_str())) {
                wasm_bindgen_futures::spawn_local(async move {
                    match session.api.plan(&id).await {
                        Ok(stored) => ed.dispatch(EditorAction::Load(stored)),
                        Err(ApiFailure::Server { status: 404, .. }) => missing.set(Some(id)),
                        Err(e) => banner.set(Some((false, failure_text(&session, e)))),
                    }
                });
            }
        }
    });

    // A message about the last save (or load) goes once the plan is edited.
    use_effect_with(ed.edits, {
        let banner = banner.clone();
        move |_: &u64| banner.set(None)
    });

    // Unsaved edits are not dropped without a word: leaving asks first.
    use_effect_with(ed.dirty, |dirty| {
        let guard = dirty
            .then(|| LeaveGuard::install("Leave this plan? Its unsaved changes will be lost."))
            .flatten();
        move || drop(guard)
    });

    // Save (and then maybe run).
    let save = {
        let ed = ed.clone();
        let session = session.clone();
        let banner = banner.clone();
        let busy = busy.clone();
        let navigator = navigator.clone();
        Callback::from(move |run_after: bool| {
            ed.dispatch(EditorAction::Submitted);
            if !ed.is_valid() {
                // The live count of problems shows above the form now.
                banner.set(None);
                return;
            }
            let ed = ed.clone();
            let session = session.clone();
            let banner = banner.clone();
            let busy = busy.clone();
            let navigator = navigator.clone();
            busy.set(true);
            wasm_bindgen_futures::spawn_local(async move {
                let saved = session.api.save_plan(ed.id.as_deref(), &ed.plan).await;
                match saved {
                    Ok(stored) => {
                        let id = stored.id.clone();
                        let was_new = ed.id.is_none();
                        ed.dispatch(EditorAction::Saved(stored));
                        if run_after {
                            match session.api.start_run(&id).await {
                                Ok(run) => {
                                    // Back from the run comes to the saved plan, not to an empty form.
                                    if was_new {
                                        navigator.replace(&Route::Plan { id: id.clone() });
                                    }
                                    navigator.push(&Route::Run { id: run })
                                }
                                Err(e) => {
                                    banner.set(Some((
                                        false,
                                        format!(
                                            "Saved, but the run did not start: {}",
                                            failure_text(&session, e)
                                        ),
                                    )));
                                    if was_new {
                                        navigator.replace(&Route::Plan { id: id.clone() });
                                    }
                                }
                            }
                        } else {
                            banner.set(Some((true, "Saved.".into())));
                            if was_new {
                                navigator.replace(&Route::Plan { id });
                            }
                        }
                    }
                    // Field-level problems show at their fields; the message above.
                    Err(ApiFailure::Server { error, .. }) if !error.details().is_empty() => {
                        banner.set(Some((false, error.message().to_string())));
                        ed.dispatch(EditorAction::Rejected(error));
                    }
                    Err(e) => banner.set(Some((false, failure_text(&session, e)))),
                }
                busy.set(false);
            });
        })
    };
    let on_save = {
        let save = save.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            save.emit(false);
        })
    };
    let on_run = Callback::from(move |_| save.emit(true));
    // Enter in a text field does not save the plan: Save does.
    let no_enter_submit = Callback::from(|e: KeyboardEvent| {
        use wasm_bindgen::JsCast;
        let in_input = e
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .is_some_and(|el| el.tag_name() == "INPUT");
        if e.key() == "Enter" && in_input {
            e.prevent_default();
        }
    });

    let name_err = ed.error("name");
    let on_name = {
        let ed = ed.clone();
        Callback::from(move |e: InputEvent| ed.dispatch(EditorAction::SetName(input_value(&e))))
    };
    let description_err = ed.error("description");
    let on_description = {
        let ed = ed.clone();
        Callback::from(move |e: InputEvent| {
            ed.dispatch(EditorAction::SetDescription(crate::dom::textarea_value(&e)))
        })
    };
    let kind_radio = |kind: PlanType, title: &'static str, about: &'static str| {
        let ed2 = ed.clone();
        let value = kind.to_string();
        html! {
            <label class="choice">
                <input type="radio" name="plan-type" value={value.clone()} checked={ed.plan.kind == kind}
                    onchange={Callback::from(move |_| ed2.dispatch(EditorAction::SetType(kind)))} />
                <span><strong>{title}</strong><br /><small>{about}</small></span>
            </label>
        }
    };

    // Adding suites from the catalog.
    let mut catalog = session.suites.clone();
    catalog.sort_by(|a, b| a.name.cmp(&b.name));
    let on_pick = {
        let pick = pick.clone();
        Callback::from(move |e: Event| pick.set(select_value(&e)))
    };
    // A suite added by the person: focus goes to its first field.
    let focus_new = use_mut_ref(|| false);
    use_effect_with(ed.plan.entries.len(), {
        let focus_new = focus_new.clone();
        move |n: &usize| {
            if std::mem::replace(&mut *focus_new.borrow_mut(), false) && *n > 0 {
                crate::dom::focus_first(&format!("#entry-{}-role", n - 1));
            }
        }
    });
    let add_picked = {
        let ed = ed.clone();
        let pick = pick.clone();
        let session = session.clone();
        let focus_new = focus_new.clone();
        Callback::from(move |_| {
            if let Some(s) = session.suite(&pick) {
                *focus_new.borrow_mut() = true;
                ed.dispatch(EditorAction::AddSuite(s.clone()));
                // Added: the choice goes back, so a second click adds no copy.
                pick.set(String::new());
            }
        })
    };
    let on_uploaded = {
        let ed = ed.clone();
        let focus_new = focus_new.clone();
        Callback::from(move |meta| {
            *focus_new.borrow_mut() = true;
            ed.dispatch(EditorAction::AddSuite(meta))
        })
    };
    let add_profile = {
        let ed = ed.clone();
        Callback::from(move |_| ed.dispatch(EditorAction::AddProfile))
    };
    let add_service = {
        let ed = ed.clone();
        Callback::from(move |_| ed.dispatch(EditorAction::AddService))
    };

    let setting = |f: SettingField, label: &'static str, hint: &'static str| {
        let ed2 = ed.clone();
        let id = f.path().trim_start_matches("settings.").to_string();
        let err = ed.error(f.path());
        html! {
            <Field id={id.clone()} label={label} hint={Some(AttrValue::from(hint))} error={err.clone()}>
                <input id={id.clone()} type="text" value={ed.setting_text(f)} aria-invalid={aria_error(&id, &err).0}
                    aria-describedby={aria_error(&id, &err).1}
                    oninput={Callback::from(move |e: InputEvent| ed2.dispatch(EditorAction::SetSetting(f, input_value(&e))))} />
            </Field>
        }
    };
    let on_execution = {
        let ed = ed.clone();
        Callback::from(move |e: Event| {
            let x =
                if select_value(&e) == "sequential" { Execution::Sequential } else { Execution::Parallel };
            ed.dispatch(EditorAction::SetExecution(x))
        })
    };
    let on_fail_fast = {
        let ed = ed.clone();
        Callback::from(move |e: Event| ed.dispatch(EditorAction::SetFailFast(checked(&e))))
    };
    // Shown as soon as sequential execution and coordinating suites meet.
    let execution_err = ed.sync_problem("settings.execution").or_else(|| ed.error("settings.execution"));
    let execution_aria = aria_error("execution", &execution_err);
    let add_schedule = {
        let ed = ed.clone();
        Callback::from(move |_| ed.dispatch(EditorAction::AddSchedule(time_zone())))
    };
    let schedule_row = |i: usize| {
        let s = &ed.plan.schedule[i];
        let (cron_id, tz_id) = (format!("schedule-{i}-cron"), format!("schedule-{i}-timezone"));
        let cron_err = ed.error(&format!("schedule[{i}].cron"));
        // A zone the browser does not know is said as it is typed (the
        // server checks it again when the plan is saved).
        let tz_err = ed.error(&format!("schedule[{i}].timezone")).or_else(|| {
            let zone = s.timezone.trim();
            (!zone.is_empty() && crate::format::time_in_zone(0, zone).is_none()).then(|| {
                format!(
                    "{zone:?} is not a timezone this browser knows: an IANA name such as UTC or Europe/Berlin"
                )
            })
        });
        let (on_cron, on_tz, on_remove) = (ed.clone(), ed.clone(), ed.clone());
        let status = match ed.schedule_status(i) {
            Some(st) => {
                // In the schedule's own zone, and in this browser's when it differs.
                let zone = s.timezone.trim();
                let next = st.next_us.map(|t| {
                    let there = crate::format::time_in_zone(t, zone)
                        .unwrap_or_else(|| format!("{} (your time)", local_time(t)));
                    if zone == time_zone() {
                        format!("Next run: {there}")
                    } else {
                        format!("Next run: {there} ({} your time, {})", local_time(t), time_zone())
                    }
                });
                let error = st.error.as_ref().map(|e| format!("Last time it did not start: {e}"));
                html! {
                    <p class="muted" id={format!("schedule-{i}-status")}>
                        {next.unwrap_or_else(|| "No next run".into())}
                        if let Some(run) = st.last_run.clone() {
                            {" · last run: "}
                            <Link<Route> to={Route::Run { id: run.clone() }}>{run}</Link<Route>>
                        }
                        if let Some(e) = error { <br /><span class="field-error">{e}</span> }
                    </p>
                }
            }
            None => html! {
                <p class="muted" id={format!("schedule-{i}-status")}>{"Save the plan to see its next run."}</p>
            },
        };
        html! {
            <div class="card schedule" id={format!("schedule-{i}")}>
                <div class="grid">
                    <Field id={cron_id.clone()} label="When (cron)" hint={Some(AttrValue::from("minute hour day month weekday, e.g. 0 2 * * * (a leading seconds field is optional)"))} error={cron_err.clone()}>
                        <input id={cron_id.clone()} type="text" value={s.cron.clone()}
                            aria-invalid={aria_error(&cron_id, &cron_err).0} aria-describedby={aria_error(&cron_id, &cron_err).1}
                            oninput={Callback::from(move |e: InputEvent| on_cron.dispatch(EditorAction::SetScheduleCron(i, input_value(&e))))} />
                    </Field>
                    <Field id={tz_id.clone()} label="Timezone" hint={Some(AttrValue::from("an IANA name, e.g. UTC or Europe/Berlin"))} error={tz_err.clone()}>
                        <input id={tz_id.clone()} type="text" value={s.timezone.clone()}
                            aria-invalid={aria_error(&tz_id, &tz_err).0} aria-describedby={aria_error(&tz_id, &tz_err).1}
                            oninput={Callback::from(move |e: InputEvent| on_tz.dispatch(EditorAction::SetScheduleTimezone(i, input_value(&e))))} />
                    </Field>
                </div>
                {status}
                <button type="button" id={format!("schedule-{i}-remove")}
                    onclick={Callback::from(move |_| on_remove.dispatch(EditorAction::RemoveSchedule(i)))}>{"Remove schedule"}</button>
            </div>
        }
    };
    let add_notify = {
        let ed = ed.clone();
        Callback::from(move |_| ed.dispatch(EditorAction::AddNotify))
    };
    let notify_row = |i: usize| {
        let n = &ed.plan.notify[i];
        let url_id = format!("notify-{i}-url");
        let url_err = ed.error(&format!("notify[{i}].url"));
        let (on_url, on_on, on_format, on_remove) = (ed.clone(), ed.clone(), ed.clone(), ed.clone());
        html! {
            <div class="card notify" id={format!("notify-{i}")}>
                <div class="grid">
                    <Field id={url_id.clone()} label="URL" hint={Some(AttrValue::from("http:// or https://, e.g. a Slack incoming webhook"))} error={url_err.clone()}>
                        <input id={url_id.clone()} type="text" value={n.url.clone()} placeholder="https://hooks.example.com/ensemble"
                            aria-invalid={aria_error(&url_id, &url_err).0} aria-describedby={aria_error(&url_id, &url_err).1}
                            oninput={Callback::from(move |e: InputEvent| on_url.dispatch(EditorAction::SetNotifyUrl(i, input_value(&e))))} />
                    </Field>
                    <Field id={format!("notify-{i}-on")} label="Which runs">
                        <select id={format!("notify-{i}-on")} onchange={Callback::from(move |e: Event| {
                            let on = if select_value(&e) == "failed" { NotifyOn::Failed } else { NotifyOn::Finished };
                            on_on.dispatch(EditorAction::SetNotifyOn(i, on))
                        })}>
                            <option value="finished" selected={n.on == NotifyOn::Finished}>{"Every finished run"}</option>
                            <option value="failed" selected={n.on == NotifyOn::Failed}>{"Runs that did not pass"}</option>
                        </select>
                    </Field>
                    <Field id={format!("notify-{i}-format")} label="Body">
                        <select id={format!("notify-{i}-format")} onchange={Callback::from(move |e: Event| {
                            let format = if select_value(&e) == "slack" { NotifyFormat::Slack } else { NotifyFormat::Json };
                            on_format.dispatch(EditorAction::SetNotifyFormat(i, format))
                        })}>
                            <option value="json" selected={n.format == NotifyFormat::Json}>{"Ensemble's JSON"}</option>
                            <option value="slack" selected={n.format == NotifyFormat::Slack}>{"Slack-style text"}</option>
                        </select>
                    </Field>
                </div>
                <button type="button" id={format!("notify-{i}-remove")}
                    onclick={Callback::from(move |_| on_remove.dispatch(EditorAction::RemoveNotify(i)))}>{"Remove webhook"}</button>
            </div>
        }
    };
    // Problems of the schedules as a whole (how many, one listed twice);
    // each field's own show at the field.
    let schedules_err: Vec<String> = if ed.submitted {
        ed.problems()
            .into_iter()
            .filter(|(p, _)| p == "schedule" || (p.starts_with("schedule[") && !p.contains('.')))
            .map(|(p, m)| if p == "schedule" { m } else { format!("{p}: {m}") })
            .collect()
    } else {
        Vec::new()
    };
    let problem_count = ed.problems().len();
    let entries_err = ed.error("entries");
    let profiles_err = ed.error("profiles");
    let export = ed.id.as_ref().map(|id| ensemble_protocol::api::routes::plan_toml(id));
    let title =
        if props.id.is_none() { "New test plan".to_string() } else { format!("Plan: {}", ed.plan.name) };

    // A stored plan's page shows no form until the plan is there: an empty
    // one would offer to create or save what is not the plan.
    if let Some(id) = props.id.as_ref().filter(|id| ed.id.as_deref() != Some(id.as_str())) {
        let gone = missing.as_deref() == Some(id.as_str());
        return html! {
            <section class="page editor">
                <div class="page-head"><h1>{format!("Plan {id}")}</h1></div>
                if gone {
                    <p class="banner error" role="alert" id="plan-missing">
                        {format!("This server has no plan {id:?}: the link may be mistyped, or the plan was deleted.")}
                    </p>
                    <div class="actions">
                        <Link<Route> to={Route::Plans} classes="button">{"All plans"}</Link<Route>>
                        <Link<Route> to={Route::NewPlan} classes="button">{"New plan"}</Link<Route>>
                    </div>
                } else if let Some((_, text)) = &*banner {
                    <p class="banner error" role="alert" id="editor-banner">{text.clone()}</p>
                } else {
                    <p class="muted" id="plan-loading">{"Loading the plan…"}</p>
                }
            </section>
        };
    }

    html! {
        <section class="page editor">
            <div class="page-head">
                <h1>{title}</h1>
                <div class="actions">
                    if ed.dirty { <span class="muted" id="unsaved">{"Unsaved changes"}</span> }
                    if let Some(path) = export {
                        <Download class="button" {path} name={format!("{}.toml", ed.plan.name)}>{"Export TOML"}</Download>
                    }
                </div>
            </div>
            <form onsubmit={on_save} onkeydown={no_enter_submit} novalidate=true>
                <section class="step" aria-labelledby="step-plan">
                    <h2 id="step-plan">{"1. Plan"}</h2>
                    <Field id="plan-name" label="Name" error={name_err.clone()}>
                        <input id="plan-name" type="text" value={ed.plan.name.clone()} oninput={on_name}
                            aria-invalid={aria_error("plan-name", &name_err).0} aria-describedby={aria_error("plan-name", &name_err).1} />
                    </Field>
                    <Field id="plan-description" label="Description" hint={Some(AttrValue::from("what the plan tests and why (optional)"))} error={description_err.clone()}>
                        <textarea id="plan-description" rows="2" value={ed.plan.description.clone()} oninput={on_description}
                            aria-invalid={aria_error("plan-description", &description_err).0} aria-describedby={aria_error("plan-description", &description_err).1} />
                    </Field>
                    <div role="radiogroup" aria-label="Plan type" class="choices">
                        {kind_radio(PlanType::Distributed, "Distributed", "Each suite runs on its own machine profile; the parts coordinate.")}
                        {kind_radio(PlanType::CrossPlatform, "Cross-platform", "Every suite runs on every profile.")}
                    </div>
                </section>

                <section class="step" aria-labelledby="step-suites">
                    <h2 id="step-suites">{"2. Suites"}</h2>
                    if let Some(e) = entries_err { <p class="field-error" role="alert">{e}</p> }
                    { for (0..ed.plan.entries.len()).map(|i| html! { <EntryCard key={i} editor={ed.clone()} index={i} /> }) }
                    <div class="add-suite">
                        <div class="field">
                            <label for="add-suite-select">{"Add a suite from the catalog"}</label>
                            <div class="inline">
                                <select id="add-suite-select" onchange={on_pick}>
                                    <option value="" selected={pick.is_empty()}>{"— choose a suite —"}</option>
                                    { for catalog.iter().map(|s| html! {
                                        <option value={s.sha256.clone()} selected={*pick == s.sha256}>{format!("{} ({}, {})", s.name, plural(s.test_count as usize, "test"), s.kind)}</option>
                                    }) }
                                </select>
                                <button type="button" id="add-suite" onclick={add_picked} disabled={pick.is_empty()}>{"Add suite"}</button>
                            </div>
                        </div>
                        <SuiteUpload id="editor-upload" on_stored={on_uploaded} />
                    </div>
                </section>

                <section class="step" aria-labelledby="step-profiles">
                    <h2 id="step-profiles">{"3. Machine profiles"}</h2>
                    <p class="muted">{match ed.plan.kind {
                        PlanType::Distributed => "A profile picks machines by labels (or one by name). Link each suite (step 2) to one of these; the counts follow the machines online.",
                        PlanType::CrossPlatform => "Every suite runs once on each of these profiles (a suite can be kept to one in step 2). A profile picks machines by labels (or one by name); the counts follow the machines online.",
                    }}</p>
                    if let Some(e) = profiles_err { <p class="field-error" role="alert">{e}</p> }
                    { for (0..ed.plan.profiles.len()).map(|j| html! { <ProfileCard key={j} editor={ed.clone()} index={j} /> }) }
                    <button type="button" id="add-profile" onclick={add_profile}>{"Add profile"}</button>
                </section>

                <section class="step" aria-labelledby="step-services">
                    <h2 id="step-services">{"Services under test"}</h2>
                    <p class="muted">{"Programs the runners of a profile's machines start natively for each run (a database, your server), ready before any suite starts and stopped at the end. Optional."}</p>
                    { for (0..ed.plan.services.len()).map(|i| html! { <ServiceCard key={i} editor={ed.clone()} index={i} /> }) }
                    <button type="button" id="add-service" onclick={add_service}>{"Add service"}</button>
                </section>

                <section class="step" aria-labelledby="step-settings">
                    <h2 id="step-settings">{"4. Settings"}</h2>
                    <div class="grid">
                        <Field id="execution" label="Execution" error={execution_err.clone()}>
                            <select id="execution" onchange={on_execution} aria-invalid={execution_aria.0} aria-describedby={execution_aria.1}>
                                <option value="parallel" selected={ed.plan.settings.execution == Execution::Parallel}>{"Parallel: all suites at once"}</option>
                                <option value="sequential" selected={ed.plan.settings.execution == Execution::Sequential}>{"Sequential: one after another"}</option>
                            </select>
                        </Field>
                        {setting(SettingField::TestTimeout, "Test timeout", "e.g. 30s, 2m")}
                        {setting(SettingField::Retries, "Retries", "extra attempts for a failed test")}
                        {setting(SettingField::MemoryLimit, "Memory limit", "per test instance, e.g. 256MiB")}
                        {setting(SettingField::BarrierTimeout, "Barrier timeout", "default wait for barriers")}
                        {setting(SettingField::OutputLimit, "Output kept per test", "e.g. 1MiB")}
                        {setting(SettingField::AttachmentLimit, "Attachments per test", "e.g. 4MiB")}
                        {setting(SettingField::QueueTimeout, "Queue timeout", "how long to wait for busy machines, e.g. 10m")}
                        <div class="field checkbox">
                            <input id="fail_fast" type="checkbox" checked={ed.plan.settings.fail_fast} onchange={on_fail_fast} />
                            <label for="fail_fast">{"Fail fast: stop after the first failure"}</label>
                        </div>
                    </div>
                </section>

                <section class="step" aria-labelledby="step-schedules">
                    <h2 id="step-schedules">{"5. Schedules"}</h2>
                    <p class="muted">{"The server runs the saved plan by itself at these times. A time missed while the server was down runs once when it starts."}</p>
                    if !schedules_err.is_empty() { <p class="field-error" role="alert">{schedules_err.join("; ")}</p> }
                    { for (0..ed.plan.schedule.len()).map(schedule_row) }
                    <button type="button" id="add-schedule" onclick={add_schedule}>{"Add schedule"}</button>
                </section>

                <section class="step" aria-labelledby="step-webhooks">
                    <h2 id="step-webhooks">{"6. Webhooks"}</h2>
                    <p class="muted">{"The server posts each finished run of this plan (or each one that did not pass) to these URLs, signed with its webhook secret."}</p>
                    { for (0..ed.plan.notify.len()).map(notify_row) }
                    <button type="button" id="add-notify" onclick={add_notify}>{"Add webhook"}</button>
                </section>

                if ed.id.is_some() && !ed.plan.name.trim().is_empty() {
                    <PlanRuns plan={ed.plan.name.clone()} />
                    <FlakyList plan={ed.plan.name.clone()} />
                }

                // Where the person clicked Save: how it went stays in view.
                <div class="form-actions">
                    <div class="save-status">
                        if ed.submitted && problem_count > 0 {
                            <p class="banner error" role="status" id="editor-problems">
                                {format!("{problem_count} problem{} to fix, marked above.", if problem_count == 1 { "" } else { "s" })}
                            </p>
                        }
                        if let Some((ok, msg)) = &*banner {
                            <p class={classes!("banner", if *ok { "ok" } else { "error" })} role="status" id="editor-banner">{msg.clone()}</p>
                        }
                    </div>
                    <button type="submit" id="save" disabled={*busy}>{if ed.id.is_some() { "Save" } else { "Create plan" }}</button>
                    <button type="button" class="primary" id="run" onclick={on_run} disabled={*busy}>{"Save and run"}</button>
                </div>
            </form>
        </section>
    }
}
