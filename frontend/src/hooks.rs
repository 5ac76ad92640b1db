//! The hooks and helpers pages and components share: the session
//! (`use_session`), turning a failed call into what a page shows
//! (`failure_text`), reloading the suite catalog (`use_fresh_suites`) and
//! keeping the machine list fresh (`use_machine_refresh`). They depend on
//! `services` and `state` only, never on the app shell, pages or components.

use std::cell::Cell;
use std::rc::Rc;

use yew::prelude::*;

use crate::services::{Api, ApiFailure, storage};
use crate::state::{Session, SessionAction};

/// The session every page reads and dispatches to.
pub type SessionHandle = UseReducerHandle<Session>;

#[hook]
pub fn use_session() -> SessionHandle {
    use_context::<SessionHandle>().expect("the app provides the session")
}

/// Turns a failed call into what the page shows; a refused token also asks
/// for a new one.
pub fn failure_text(session: &SessionHandle, failure: ApiFailure) -> String {
    if failure == ApiFailure::Unauthorized {
        session.dispatch(SessionAction::AuthRequired);
    }
    failure.to_string()
}

/// Reloads the suite catalog when a page that shows it opens (another
/// client may have uploaded suites since).
#[hook]
pub fn use_fresh_suites() {
    let session = use_session();
    use_effect_with((), move |_| {
        wasm_bindgen_futures::spawn_local(async move {
            match session.api.suites().await {
                Ok(list) => session.dispatch(SessionAction::Suites(list)),
                Err(e) => {
                    failure_text(&session, e);
                }
            }
        });
    });
}

/// How often the machine list (and with it every "machines matching now"
/// count) refreshes.
const MACHINE_REFRESH_MS: u32 = 1_000;

/// Keeps the session's machines fresh while its token works (pages that show
/// the suite catalog load it themselves: `use_fresh_suites`). Takes the
/// session rather than reading the context: the app calls it where it
/// provides the session.
#[hook]
pub fn use_machine_refresh(session: &SessionHandle) {
    use_effect_with(session.api.clone(), {
        let dispatcher = session.dispatcher();
        move |api: &Api| {
            let alive = Rc::new(Cell::new(true));
            let api = api.clone();
            let still = alive.clone();
            wasm_bindgen_futures::spawn_local(async move {
                while still.get() {
                    match api.machines().await {
                        Ok(m) if still.get() => dispatcher.dispatch(SessionAction::Machines(m)),
                        Ok(_) => break,
                        Err(ApiFailure::Unauthorized) => {
                            if api.token.is_some() {
                                storage::forget_token();
                            }
                            dispatcher.dispatch(SessionAction::AuthRequired);
                            break;
                        }
                        Err(e) => dispatcher.dispatch(SessionAction::Trouble(Some(e.to_string()))),
                    }
                    gloo_timers::future::TimeoutFuture::new(MACHINE_REFRESH_MS).await;
                }
            });
            move || alive.set(false)
        }
    });
}

/// The id of the stored plan named `name` (plan names are unique), once
/// the server said; None while it has not, or when no stored plan has it.
#[hook]
pub fn use_plan_id(name: Option<String>) -> Option<String> {
    let session = use_session();
    let id = use_state(|| None::<String>);
    use_effect_with(name, {
        let id = id.clone();
        move |name: &Option<String>| {
            id.set(None);
            if let Some(name) = name.clone() {
                wasm_bindgen_futures::spawn_local(async move {
                    if let Ok(plans) = session.api.plans().await {
                        id.set(plans.into_iter().find(|p| p.plan.name == name).map(|p| p.id));
                    }
                });
            }
        }
    });
    (*id).clone()
}
