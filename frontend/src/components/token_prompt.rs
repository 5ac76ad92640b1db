//! Asks for the server's access token once; it is kept in local storage.

use yew::prelude::*;

use crate::dom::input_value;
use crate::hooks::use_session;
use crate::services::storage;
use crate::state::SessionAction;

#[derive(Properties, PartialEq)]
pub struct Props {
    /// The last token was refused.
    pub refused: bool,
}

#[component]
pub fn TokenPrompt(props: &Props) -> Html {
    let session = use_session();
    let token = use_state(String::new);
    let oninput = {
        let token = token.clone();
        Callback::from(move |e: InputEvent| token.set(input_value(&e)))
    };
    let onsubmit = {
        let token = token.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let t = token.trim().to_string();
            if t.is_empty() {
                return;
            }
            storage::save_token(&t);
            session.dispatch(SessionAction::UseToken(Some(t)));
        })
    };
    html! {
        <section class="page narrow">
            <h1>{"Access token"}</h1>
            <p>{"This server asks for a token: the one "}<code>{"ensemble serve --token"}</code>{" was started with (or "}<code>{"ENSEMBLE_TOKEN"}</code>{"). It is kept in this browser."}</p>
            <p class="muted" id="token-where">
                {"Started without one, "}<code>{"ensemble serve"}</code>{" made it and keeps it in the file "}<code>{"token"}</code>
                {" in its data directory ("}<code>{"DATA_DIR/token"}</code>{", "}<code>{"--data-dir"}</code>
                {"); it also prints a link that signs this browser in. "}<code>{"ensemble demo"}</code>{" prints that link too."}
            </p>
            if props.refused {
                <p class="banner error" role="alert" id="token-refused">
                    {"The server refused that token (HTTP 401). Check the token the server was started with and try again."}
                </p>
            }
            <form {onsubmit} class="stack">
                <label for="token">{"Token"}</label>
                <input id="token" type="password" autocomplete="current-password" value={(*token).clone()} {oninput} autofocus=true />
                <button type="submit" class="primary" id="token-submit">{"Continue"}</button>
            </form>
        </section>
    }
}
