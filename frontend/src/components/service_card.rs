//! One service of the plan being edited: a program under test, the profile
//! whose machines start it, how it is known to be ready, and what it sees.

use yew::prelude::*;

use crate::components::field::{Field, aria_error};
use crate::dom::{input_value, select_value, textarea_value};
use crate::state::editor::{EditorAction, EditorState, ServiceText};

#[derive(Properties, PartialEq)]
pub struct Props {
    pub editor: UseReducerHandle<EditorState>,
    pub index: usize,
}

#[component]
pub fn ServiceCard(props: &Props) -> Html {
    let ed = &props.editor;
    let i = props.index;
    let Some(service) = ed.plan.services.get(i) else { return html! {} };
    let id = |f: &str| format!("service-{i}-{f}");
    let err = |f: &str| ed.error(&format!("services[{i}].{f}"));
    let text = |field: ServiceText| {
        let ed = ed.clone();
        Callback::from(move |e: InputEvent| {
            ed.dispatch(EditorAction::SetServiceText(i, field, input_value(&e)))
        })
    };
    let area = |field: ServiceText| {
        let ed = ed.clone();
        Callback::from(move |e: InputEvent| {
            ed.dispatch(EditorAction::SetServiceText(i, field, textarea_value(&e)))
        })
    };
    let on_profile = {
        let ed = ed.clone();
        Callback::from(move |e: Event| {
            ed.dispatch(EditorAction::SetServiceText(i, ServiceText::Profile, select_value(&e)))
        })
    };
    let (kind, value) = ed.service_ready(i);
    let on_kind = {
        let (ed, value) = (ed.clone(), value.clone());
        Callback::from(move |e: Event| {
            let kind = select_value(&e);
            // A fresh check gets the usual value of its kind.
            let v = match kind.as_str() {
                "tcp" => "{port}".to_string(),
                "http" if !value.starts_with('/') => "/".to_string(),
                _ => value.clone(),
            };
            ed.dispatch(EditorAction::SetServiceReady(i, kind, v))
        })
    };
    let on_value = {
        let (ed, kind) = (ed.clone(), kind.clone());
        Callback::from(move |e: InputEvent| {
            ed.dispatch(EditorAction::SetServiceReady(i, kind.clone(), input_value(&e)))
        })
    };
    let remove = {
        let ed = ed.clone();
        Callback::from(move |_| ed.dispatch(EditorAction::RemoveService(i)))
    };
    let (name_err, profile_err, command_err, env_err, ready_err, timeout_err) =
        (err("name"), err("profile"), err("command"), err("env"), err("ready"), err("ready_timeout"));
    let grant = format!("service:{}", service.name);
    let vars = ensemble_protocol::service::env_prefix(&service.name);
    html! {
        <fieldset class="card service" data-index={i.to_string()} data-name={service.name.clone()}>
            <legend>{format!("Service: {}", service.name)}</legend>
            <div class="grid">
                <Field id={id("name")} label="Name" hint={Some(AttrValue::from("lowercase letters, digits and -"))} error={name_err.clone()}>
                    <input id={id("name")} type="text" value={ed.service_text(i, ServiceText::Name)}
                        aria-invalid={aria_error(&id("name"), &name_err).0} oninput={text(ServiceText::Name)} />
                </Field>
                <Field id={id("profile")} label="Runs on profile" error={profile_err.clone()}>
                    <select id={id("profile")} onchange={on_profile} aria-invalid={aria_error(&id("profile"), &profile_err).0}>
                        if !ed.plan.profiles.iter().any(|p| p.name == service.profile) {
                            <option value="" selected=true>{"— pick a profile —"}</option>
                        }
                        { for ed.plan.profiles.iter().map(|p| html! {
                            <option value={p.name.clone()} selected={p.name == service.profile}>{p.name.clone()}</option>
                        }) }
                    </select>
                </Field>
                <Field id={id("command")} label="Command" hint={Some(AttrValue::from("one argument per line, the program first; {port}, {host}, {dir}, {run} are filled in"))} error={command_err.clone()}>
                    <textarea id={id("command")} rows="3" value={ed.service_text(i, ServiceText::Command)} placeholder={"redis-server\n--port\n{port}"}
                        aria-invalid={aria_error(&id("command"), &command_err).0} oninput={area(ServiceText::Command)} />
                </Field>
                <Field id={id("ready")} label="Ready when" error={ready_err.clone()}>
                    <select id={id("ready-kind")} aria-label="Readiness check" onchange={on_kind}>
                        <option value="" selected={kind.is_empty()}>{"it has started"}</option>
                        <option value="tcp" selected={kind == "tcp"}>{"a TCP port accepts"}</option>
                        <option value="http" selected={kind == "http"}>{"an HTTP path answers 2xx"}</option>
                        <option value="log" selected={kind == "log"}>{"its output shows text"}</option>
                    </select>
                    if !kind.is_empty() {
                        <input id={id("ready")} type="text" value={value} aria-invalid={aria_error(&id("ready"), &ready_err).0} oninput={on_value} />
                    }
                </Field>
                <Field id={id("ready-timeout")} label="Ready within" error={timeout_err.clone()}>
                    <input id={id("ready-timeout")} type="text" value={ed.service_text(i, ServiceText::ReadyTimeout)}
                        aria-invalid={aria_error(&id("ready-timeout"), &timeout_err).0} oninput={text(ServiceText::ReadyTimeout)} />
                </Field>
                <Field id={id("env")} label="Environment" hint={Some(AttrValue::from("KEY=value per line"))} error={env_err.clone()}>
                    <textarea id={id("env")} rows="2" value={ed.service_text(i, ServiceText::Env)}
                        aria-invalid={aria_error(&id("env"), &env_err).0} oninput={area(ServiceText::Env)} />
                </Field>
            </div>
            <p class="muted" id={id("reach")}>
                {format!("Suites reach it with the grant {grant} and find it in {vars}_HOST and {vars}_PORT. Its machines' runners must allow its program (--allow-exec).")}
            </p>
            <button type="button" class="small danger" onclick={remove} aria-label={format!("Remove service {}", service.name)}>{"Remove service"}</button>
        </fieldset>
    }
}
