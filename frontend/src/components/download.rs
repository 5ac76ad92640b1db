//! A link that downloads from the API. Its address is the bare API path
//! (copied, it grants nothing); when the server wants a token, a click
//! fetches the file with the token in a header and saves it.

use yew::prelude::*;

use crate::hooks::{failure_text, use_session};

#[derive(Properties, PartialEq)]
pub struct DownloadProps {
    /// The API path (`routes::plan_toml`, `routes::run_attachment`).
    pub path: String,
    /// The file name it is saved as.
    pub name: String,
    #[prop_or_default]
    pub class: Classes,
    /// Its accessible name, when the text alone is ambiguous.
    #[prop_or_default]
    pub label: Option<AttrValue>,
    pub children: Html,
}

#[component]
pub fn Download(props: &DownloadProps) -> Html {
    let session = use_session();
    let failed = use_state(|| None::<String>);
    let onclick = {
        let (session, failed, path, name) =
            (session.clone(), failed.clone(), props.path.clone(), props.name.clone());
        Callback::from(move |e: MouseEvent| {
            if session.api.token.is_none() {
                return; // the link itself works
            }
            e.prevent_default();
            let (session, failed, path, name) = (session.clone(), failed.clone(), path.clone(), name.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match session.api.download(&path, &name).await {
                    Ok(()) => failed.set(None),
                    Err(e) => failed.set(Some(format!("{name}: {}", failure_text(&session, e)))),
                }
            });
        })
    };
    html! {
        <>
            <a class={props.class.clone()} aria-label={props.label.clone()} href={props.path.clone()} download={props.name.clone()} {onclick}>{props.children.clone()}</a>
            if let Some(why) = &*failed {
                <span class="error download-error" role="alert">{format!(" could not download {why}")}</span>
            }
        </>
    }
}
