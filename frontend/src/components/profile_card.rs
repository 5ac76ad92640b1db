//! One machine profile of the plan being edited: labels or a machine, count,
//! and the online machines that match it now.

use yew::prelude::*;

use crate::components::field::{Field, aria_error};
use crate::dom::{input_value, select_value};
use crate::hooks::use_session;
use crate::state::editor::{EditorAction, EditorState};

#[derive(Properties, PartialEq)]
pub struct Props {
    pub editor: UseReducerHandle<EditorState>,
    pub index: usize,
}

/// Label suggestions shown at most.
const MAX_SUGGESTIONS: usize = 16;

#[component]
pub fn ProfileCard(props: &Props) -> Html {
    let session = use_session();
    let ed = &props.editor;
    let j = props.index;
    let Some(profile) = ed.plan.profiles.get(j) else { return html! {} };
    let id = |f: &str| format!("profile-{j}-{f}");
    let name_err = ed.error(&format!("profiles[{j}].name"));
    let labels_err = ed.error(&format!("profiles[{j}].labels"));
    let count_err = ed.error(&format!("profiles[{j}].count"));
    let send = |make: fn(usize, String) -> EditorAction| {
        let ed = ed.clone();
        Callback::from(move |e: InputEvent| ed.dispatch(make(j, input_value(&e))))
    };
    let on_machine = {
        let ed = ed.clone();
        Callback::from(move |e: Event| {
            let v = select_value(&e);
            ed.dispatch(EditorAction::SetProfileMachine(j, (!v.is_empty()).then_some(v)))
        })
    };
    let remove = {
        let ed = ed.clone();
        Callback::from(move |_| ed.dispatch(EditorAction::RemoveProfile(j)))
    };
    let matching = session.matching(profile);
    // Cross-platform: a suite without a profile of its own runs on each.
    let cross = ed.plan.kind == ensemble_protocol::PlanType::CrossPlatform;
    let users: Vec<String> = ed
        .plan
        .entries
        .iter()
        .filter(|e| e.profile.as_deref() == Some(profile.name.as_str()) || (cross && e.profile.is_none()))
        .map(|e| e.role_name())
        .collect();
    // Labels of the machines online that the profile does not ask for yet:
    // one click adds one.
    // Keys the profile asks for already are left out (one value per key).
    let asked = ed.labels_text(j);
    let asked_keys: Vec<&str> =
        asked.split(',').filter_map(|a| a.split_once('=').map(|(k, _)| k.trim())).collect();
    let suggestions: Vec<String> = session
        .machines
        .iter()
        .flat_map(|m| m.info.labels.iter().filter(|(k, _)| !asked_keys.contains(&k.as_str())))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .collect();
    let mut names: Vec<String> = session.machines.iter().map(|m| m.info.name.clone()).collect();
    if let Some(m) = profile.machine.as_ref().filter(|m| !names.contains(m)) {
        names.push(m.clone());
    }
    html! {
        <fieldset class="card profile" data-index={j.to_string()} data-name={profile.name.clone()}>
            <legend>{format!("Profile: {}", profile.name)}</legend>
            <div class="grid">
                <Field id={id("name")} label="Name" error={name_err.clone()}>
                    <input id={id("name")} type="text" value={profile.name.clone()} aria-invalid={aria_error(&id("name"), &name_err).0}
                        oninput={send(EditorAction::SetProfileName)} />
                </Field>
                <Field id={id("labels")} label="Labels a machine must have" hint={Some(AttrValue::from("key=value, comma separated; empty: any machine"))} error={labels_err.clone()}>
                    <input id={id("labels")} type="text" value={ed.labels_text(j)} placeholder="os=linux, tier=server"
                        aria-invalid={aria_error(&id("labels"), &labels_err).0}
                        oninput={send(EditorAction::SetProfileLabels)} disabled={profile.machine.is_some()} />
                    if profile.machine.is_none() && !suggestions.is_empty() {
                        <div class="suggestions" id={id("suggestions")}>
                            <span class="muted">{"Online machines have:"}</span>
                            { for suggestions.iter().map(|l| {
                                let ed = ed.clone();
                                let text = if asked.trim().is_empty() { l.clone() } else { format!("{}, {l}", asked.trim().trim_end_matches(',')) };
                                html! {
                                    <button type="button" class="small" data-label={l.clone()} aria-label={format!("Add label {l} to {}", profile.name)}
                                        onclick={Callback::from(move |_| ed.dispatch(EditorAction::SetProfileLabels(j, text.clone())))}>{l.clone()}</button>
                                }
                            }) }
                        </div>
                    }
                </Field>
                <Field id={id("machine")} label="Or one machine by name">
                    <select id={id("machine")} onchange={on_machine}>
                        <option value="" selected={profile.machine.is_none()}>{"— by labels —"}</option>
                        { for names.iter().map(|n| html! {
                            <option value={n.clone()} selected={profile.machine.as_deref() == Some(n.as_str())}>{n.clone()}</option>
                        }) }
                    </select>
                </Field>
                <Field id={id("count")} label="Machines" hint={Some(AttrValue::from("instances of each linked suite"))} error={count_err.clone()}>
                    <input id={id("count")} type="number" min="1" value={ed.count_text(j)} aria-invalid={aria_error(&id("count"), &count_err).0}
                        oninput={send(EditorAction::SetProfileCount)} />
                </Field>
            </div>
            <p class={classes!("matches", if matching.len() >= profile.count as usize { "enough" } else { "short" })} id={id("matches")} aria-live="polite">
                {match matching.len() {
                    0 => "No online machine matches now".to_string(),
                    1 => "1 online machine matches now".to_string(),
                    n => format!("{n} online machines match now"),
                }}
                if !matching.is_empty() {
                    {": "}{matching.iter().map(|m| m.info.name.clone()).collect::<Vec<_>>().join(", ")}
                }
            </p>
            if profile.machine.is_none() && profile.labels.is_empty() && matching.iter().any(|m| m.local) {
                <p class="banner waiting" id={id("any")}>
                    {"No labels: any machine matches, the server's own too. Pick a label above to choose machines."}
                </p>
            }
            <p class="muted" id={id("users")}>{if users.is_empty() { "No suite uses this profile yet.".to_string() } else { format!("Used by: {}", users.join(", ")) }}</p>
            <button type="button" class="small danger" onclick={remove} aria-label={format!("Remove profile {}", profile.name)}>{"Remove profile"}</button>
        </fieldset>
    }
}
