//! One suite of the plan being edited: its role, the machine profile it is
//! linked to (with how many online machines match now), params and grants.

use ensemble_protocol::PlanType;
use ensemble_protocol::api::suite_sha;
use yew::prelude::*;

use crate::components::field::{Field, aria_error};
use crate::dom::{input_value, select_value, textarea_value};
use crate::format::{plural, short_sha};
use crate::hooks::use_session;
use crate::state::editor::{EditorAction, EditorState, EntryText};

#[derive(Properties, PartialEq)]
pub struct Props {
    pub editor: UseReducerHandle<EditorState>,
    pub index: usize,
}

#[component]
pub fn EntryCard(props: &Props) -> Html {
    let session = use_session();
    let ed = &props.editor;
    let i = props.index;
    let Some(entry) = ed.plan.entries.get(i) else { return html! {} };
    let id = |f: &str| format!("entry-{i}-{f}");
    let dispatch = |make: fn(usize, String) -> EditorAction| {
        let ed = ed.clone();
        Callback::from(move |v: String| ed.dispatch(make(i, v)))
    };

    let suite = suite_sha(&entry.suite).and_then(|sha| session.suite(sha));
    let suite_line = match (suite, suite_sha(&entry.suite)) {
        (Some(s), _) => {
            format!(
                "{} · {} · {} · sha256:{}",
                s.name,
                s.kind_shown(),
                plural(s.test_count as usize, "test"),
                short_sha(&s.sha256)
            )
        }
        (None, Some(sha)) => format!("sha256:{} (not in this server's catalog)", short_sha(sha)),
        (None, None) => format!("{} (a path: only for `ensemble run` on the command line)", entry.suite),
    };

    let role_err = ed.error(&format!("entries[{i}].role"));
    let profile_err = ed.error(&format!("entries[{i}].profile"));
    let params_err = ed.error(&EntryText::Params.path(i));
    let net_err = ed.error(&EntryText::Net.path(i));
    let env_err = ed.error(&EntryText::Env.path(i));
    let faults_err = ed.error(&EntryText::Faults.path(i));
    let filter_err = ed.error(&EntryText::Filter.path(i));

    let on_role = dispatch(EditorAction::SetRole);
    let on_profile = {
        let ed = ed.clone();
        Callback::from(move |e: Event| {
            let v = select_value(&e);
            ed.dispatch(EditorAction::LinkProfile(i, (!v.is_empty()).then_some(v)))
        })
    };
    let text = |f: EntryText| {
        let ed = ed.clone();
        move |v: String| ed.dispatch(EditorAction::SetEntryText(i, f, v))
    };
    let on_params = text(EntryText::Params);
    let on_net = text(EntryText::Net);
    let on_env = text(EntryText::Env);
    let on_faults = text(EntryText::Faults);
    let on_filter = text(EntryText::Filter);
    // The new profile is further down the page: focus goes to its labels
    // (which scrolls it into view) once it is drawn.
    let new_profile = {
        let ed = ed.clone();
        Callback::from(move |_| {
            let at = ed.plan.profiles.len();
            ed.dispatch(EditorAction::NewProfileFor(i));
            gloo_timers::callback::Timeout::new(0, move || {
                crate::dom::focus_first(&format!("#profile-{at}-labels"))
            })
            .forget();
        })
    };
    let remove = {
        let ed = ed.clone();
        Callback::from(move |_| ed.dispatch(EditorAction::RemoveEntry(i)))
    };
    // The catalog, newest first (a path's own name first of all).
    let wanted = std::path::Path::new(&entry.suite)
        .file_name()
        .map(|n| n.to_string_lossy().replace('-', "_"))
        .unwrap_or_default();
    let mut catalog = session.suites.clone();
    catalog.sort_by(|a, b| {
        (b.name.replace('-', "_") == wanted)
            .cmp(&(a.name.replace('-', "_") == wanted))
            .then(b.uploaded_us.cmp(&a.uploaded_us))
    });
    let swap = {
        let (ed, catalog) = (ed.clone(), catalog.clone());
        Callback::from(move |e: Event| {
            let sha = select_value(&e);
            if let Some(meta) = catalog.iter().find(|c| c.sha256 == sha) {
                ed.dispatch(EditorAction::SwapSuite(i, meta.clone()));
            }
        })
    };

    let linked = entry.profile.as_ref().and_then(|p| ed.plan.profile(p));
    let matches = linked.map(|p| (session.matching(p).len(), p.count as usize));
    let none_label = match ed.plan.kind {
        PlanType::Distributed => "— pick a profile —",
        PlanType::CrossPlatform => "every profile of the plan",
    };
    // Cross-platform: every suite runs on every profile, so a suite needs
    // neither its own profile nor a role (it is named after its suite) —
    // unless it has one, or the name clashes.
    let cross = ed.plan.kind == PlanType::CrossPlatform;
    // Once edited it stays, so it does not vanish under the person's typing.
    let show_role = !cross
        || role_err.is_some()
        || ed.is_touched(&format!("entries[{i}].role"))
        || entry.role.as_ref().is_some_and(|r| suite.is_none_or(|s| *r != s.name.replace('_', "-")));
    let (role_invalid, role_desc) = aria_error(&id("role"), &role_err);
    let (profile_invalid, profile_desc) = aria_error(&id("profile"), &profile_err);

    html! {
        <fieldset class="card entry" data-index={i.to_string()} data-role={entry.role_name()}>
            <legend>{format!("Suite {}: {}", i + 1, entry.role_name())}</legend>
            <p class="suite-line">{suite_line}</p>
            if suite.is_none() {
                <div class="banner waiting swap-suite" id={id("swap")}>
                    <p>{if suite_sha(&entry.suite).is_some() {
                        "This server has no such suite: this plan cannot run here until the entry names one it has."
                    } else {
                        "A path names a suite on the machine that wrote the plan: this server cannot run or schedule it. Pick the suite from this server's catalog, or upload it (below, under Add suite) and pick it here."
                    }}</p>
                    <label for={id("swap-suite")}>{"Use instead"}</label>
                    <select id={id("swap-suite")} onchange={swap}>
                        <option value="" selected=true>{"— a suite of this server —"}</option>
                        { for catalog.iter().map(|c| html! {
                            <option value={c.sha256.clone()}>{format!("{} · {} · sha256:{}", c.name, plural(c.test_count as usize, "test"), short_sha(&c.sha256))}</option>
                        }) }
                    </select>
                </div>
            }
            <div class="grid">
                if show_role {
                    <Field id={id("role")} label="Role" hint={Some(AttrValue::from("what the other parts call this one"))} error={role_err.clone()}>
                        <input id={id("role")} type="text" value={entry.role.clone().unwrap_or_default()}
                            aria-invalid={role_invalid} aria-describedby={role_desc}
                            oninput={Callback::from(move |e: InputEvent| on_role.emit(input_value(&e)))} />
                    </Field>
                }
                <Field id={id("profile")} label={if cross { "Runs on" } else { "Machine profile" }} error={profile_err.clone()}>
                    <select id={id("profile")} onchange={on_profile} aria-invalid={profile_invalid} aria-describedby={profile_desc}>
                        <option value="" selected={entry.profile.is_none()}>{none_label}</option>
                        { for ed.plan.profiles.iter().map(|p| html! {
                            <option value={p.name.clone()} selected={entry.profile.as_deref() == Some(p.name.as_str())}>
                                {format!("{} ({})", p.name, p.describe())}
                            </option>
                        }) }
                    </select>
                    if !cross {
                        <button type="button" class="small" id={id("new-profile")} onclick={new_profile}
                            aria-label={format!("New profile for {}", entry.role_name())}>{"New profile for this suite"}</button>
                    }
                    <small class={classes!("matches", matches.map(|(n, want)| if n >= want { "enough" } else { "short" }))} id={id("matches")} aria-live="polite">
                        {match matches {
                            Some((n, want)) => format!("{n} machine{} online match{} now (needs {want})", if n == 1 { "" } else { "s" }, if n == 1 { "es" } else { "" }),
                            None => String::new(),
                        }}
                    </small>
                </Field>
                <Field id={id("params")} label="Params" hint={Some(AttrValue::from("one key=value per line"))} error={params_err.clone()}>
                    <textarea id={id("params")} rows="2" value={ed.entry_text(i, EntryText::Params)}
                        aria-invalid={aria_error(&id("params"), &params_err).0}
                        oninput={Callback::from(move |e: InputEvent| on_params(textarea_value(&e)))} />
                    { declared_params(&id("declared"), ed.declared_params(i), &entry.params) }
                </Field>
                <Field id={id("net")} label="Network grants" hint={Some(AttrValue::from("host:port, comma separated; * matches any"))} error={net_err.clone()}>
                    <input id={id("net")} type="text" value={ed.entry_text(i, EntryText::Net)} placeholder="127.0.0.1:8080"
                        aria-invalid={aria_error(&id("net"), &net_err).0}
                        oninput={Callback::from(move |e: InputEvent| on_net(input_value(&e)))} />
                </Field>
                <Field id={id("env")} label="Environment variables it may read" hint={Some(AttrValue::from("names, comma separated"))} error={env_err.clone()}>
                    <input id={id("env")} type="text" value={ed.entry_text(i, EntryText::Env)}
                        aria-invalid={aria_error(&id("env"), &env_err).0}
                        oninput={Callback::from(move |e: InputEvent| on_env(input_value(&e)))} />
                </Field>
                <Field id={id("faults")} label="Services it may fault" hint={Some(AttrValue::from("service names, comma separated; * for every one: its tests may stop, restart, kill, pause and resume them"))} error={faults_err.clone()}>
                    <input id={id("faults")} type="text" value={ed.entry_text(i, EntryText::Faults)} placeholder="none"
                        aria-invalid={aria_error(&id("faults"), &faults_err).0}
                        oninput={Callback::from(move |e: InputEvent| on_faults(input_value(&e)))} />
                </Field>
                <Field id={id("filter")} label="Tests to run" hint={Some(AttrValue::from("a filter such as test(put) and not tag(slow); empty: every test"))} error={filter_err.clone()}>
                    <input id={id("filter")} type="text" value={ed.entry_text(i, EntryText::Filter)} placeholder="every test"
                        spellcheck="false" autocapitalize="off"
                        aria-invalid={aria_error(&id("filter"), &filter_err).0}
                        oninput={Callback::from(move |e: InputEvent| on_filter(input_value(&e)))} />
                </Field>
            </div>
            <button type="button" class="small danger" onclick={remove} aria-label={format!("Remove suite {}", entry.role_name())}>{"Remove"}</button>
        </fieldset>
    }
}

/// What the entry's suite says it reads (suite ABI 0.2): each param's
/// type, whether it is required or its default, and its help, marked when
/// the entry sets it. Nothing for a suite that does not say.
fn declared_params(
    id: &str,
    declared: Option<&[ensemble_protocol::api::ParamMeta]>,
    set: &std::collections::BTreeMap<String, String>,
) -> Html {
    let Some(declared) = declared else { return html! {} };
    if declared.is_empty() {
        return html! { <p class="declared-params muted" id={id.to_string()}>{"The suite reads no params."}</p> };
    }
    html! {
        <ul class="declared-params" id={id.to_string()} aria-label="Params the suite reads">
            { for declared.iter().map(|p| {
                let how = match (&p.default, p.required) {
                    (_, true) => "required".to_string(),
                    (Some(d), false) => format!("default {d}"),
                    (None, false) => "optional".to_string(),
                };
                let state = match (set.contains_key(&p.name), p.required) {
                    (true, _) => "set",
                    (false, true) => "missing",
                    (false, false) => "unset",
                };
                html! {
                    <li data-param={p.name.clone()} data-state={state}>
                        <code>{p.name.clone()}</code>
                        <span class="chip">{format!("{} · {how}", p.kind)}</span>
                        if !p.help.is_empty() { <span class="muted">{format!(" {}", p.help)}</span> }
                    </li>
                }
            }) }
        </ul>
    }
}
