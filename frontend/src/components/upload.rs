//! Uploading `.wasm` suites: a file picker and a drop zone.

use ensemble_protocol::api::SuiteSummary;
use yew::prelude::*;

use crate::format::plural;

use crate::dom::{dropped_files, picked_files};
use crate::hooks::{failure_text, use_session};
use crate::state::SessionAction;

#[derive(Properties, PartialEq)]
pub struct Props {
    /// Called for each suite the server stored (or already had).
    #[prop_or_default]
    pub on_stored: Callback<SuiteSummary>,
    pub id: AttrValue,
}

#[component]
pub fn SuiteUpload(props: &Props) -> Html {
    let session = use_session();
    let messages = use_state(Vec::<(bool, String)>::new);
    let over = use_state(|| false);

    let upload = {
        let session = session.clone();
        let messages = messages.clone();
        let on_stored = props.on_stored.clone();
        Callback::from(move |files: Vec<web_sys::File>| {
            let session = session.clone();
            let messages = messages.clone();
            let on_stored = on_stored.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let mut out = Vec::new();
                for file in files {
                    let file_name = file.name();
                    let name = file_name.strip_suffix(".wasm").unwrap_or(&file_name).to_string();
                    if !file_name.ends_with(".wasm") {
                        out.push((false, format!("{file_name}: not a .wasm file")));
                        continue;
                    }
                    match session.api.upload_suite(&name, file.into()).await {
                        Ok(meta) => {
                            out.push((
                                true,
                                format!(
                                    "{file_name}: stored as {name} ({})",
                                    plural(meta.tests.len(), "test")
                                ),
                            ));
                            let summary = meta.summary();
                            session.dispatch(SessionAction::SuiteStored(summary.clone()));
                            on_stored.emit(summary);
                        }
                        Err(e) => out.push((false, format!("{file_name}: {}", failure_text(&session, e)))),
                    }
                }
                messages.set(out);
            });
        })
    };
    let onchange = {
        let upload = upload.clone();
        Callback::from(move |e: Event| upload.emit(picked_files(&e)))
    };
    let ondragover = {
        let over = over.clone();
        Callback::from(move |e: DragEvent| {
            e.prevent_default();
            over.set(true);
        })
    };
    let ondragleave = {
        let over = over.clone();
        Callback::from(move |_| over.set(false))
    };
    let ondrop = {
        let over = over.clone();
        Callback::from(move |e: DragEvent| {
            e.prevent_default();
            over.set(false);
            upload.emit(dropped_files(&e));
        })
    };
    html! {
        <div class={classes!("dropzone", over.then_some("over"))} {ondragover} {ondragleave} {ondrop}>
            <label for={props.id.clone()}>{"Upload a suite (.wasm): choose files or drop them here"}</label>
            <input id={props.id.clone()} type="file" accept=".wasm,application/wasm" multiple=true {onchange} />
            <ul class="upload-messages" aria-live="polite">
                { for messages.iter().map(|(ok, m)| html! { <li class={if *ok { "ok" } else { "error" }}>{m.clone()}</li> }) }
            </ul>
        </div>
    }
}
