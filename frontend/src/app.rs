//! The app shell: routes, the shared session, the navigation bar and the
//! token prompt.

use std::cell::Cell;
use std::rc::Rc;

use yew::prelude::*;
use yew_router::prelude::*;

use crate::components::nav::Nav;
use crate::components::token_prompt::TokenPrompt;
use crate::pages;
use crate::services::{ApiFailure, storage};
use crate::state::{AuthState, Session, SessionAction};

#[derive(Clone, Routable, PartialEq, Debug)]
pub enum Route {
    #[at("/")]
    Plans,
    #[at("/plans/new")]
    NewPlan,
    #[at("/plans/:id")]
    Plan { id: String },
    #[at("/machines")]
    Machines,
    #[at("/suites")]
    Suites,
    #[at("/runs")]
    Runs,
    #[at("/runs/:id")]
    Run { id: String },
    #[not_found]
    #[at("/not-found")]
    NotFound,
}

fn switch(route: Route) -> Html {
    match route {
        Route::Plans => html! { <pages::plans::PlansPage /> },
        Route::NewPlan => html! { <pages::editor::EditorPage id={None::<String>} /> },
        Route::Plan { id } => html! { <pages::editor::EditorPage id={Some(id)} /> },
        Route::Machines => html! { <pages::machines::MachinesPage /> },
        Route::Suites => html! { <pages::suites::SuitesPage /> },
        Route::Runs => html! { <pages::runs::RunsPage /> },
        // Keyed: another run is another page, not this one's state with a new id.
        Route::Run { id } => html! { <pages::run::RunPage key={id.as_str()} id={id.clone()} /> },
        Route::NotFound => html! {
            <section class="page"><h1>{"Not found"}</h1><p>{"There is no page here. "}<Link<Route> to={Route::Plans}>{"Go to the plans"}</Link<Route>></p></section>
        },
    }
}

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
const MACHINE_REFRESH_MS: u32 = 2_000;

#[component]
pub fn App() -> Html {
    let session = use_reducer(|| Session::new(storage::load_token()));

    // Keep machines fresh while the token works (pages that show the suite
    // catalog load it themselves: `use_fresh_suites`).
    use_effect_with(session.api.clone(), {
        let dispatcher = session.dispatcher();
        move |api: &crate::services::Api| {
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

    let body = match &session.auth {
        AuthState::Needed { refused } => html! { <TokenPrompt refused={*refused} /> },
        AuthState::Unknown => html! {
            <section class="page" aria-busy="true">
                if let Some(t) = &session.trouble {
                    <p class="banner error" role="alert">{format!("{t}. Retrying…")}</p>
                } else {
                    <p class="muted">{"Connecting to the server…"}</p>
                }
            </section>
        },
        AuthState::Accepted => html! { <Switch<Route> render={switch} /> },
    };

    html! {
        <ContextProvider<SessionHandle> context={session.clone()}>
            <BrowserRouter>
                <a class="skip" href="#main">{"Skip to content"}</a>
                <Nav />
                if let (AuthState::Accepted, Some(t)) = (&session.auth, &session.trouble) {
                    <p class="banner error" role="alert">{format!("{t}. Retrying…")}</p>
                }
                <main id="main">{body}</main>
            </BrowserRouter>
        </ContextProvider<SessionHandle>>
    }
}
