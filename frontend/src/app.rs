//! The app shell: the session's provider, the router with one page per
//! route (`switch`), the navigation bar and the token prompt. Nothing imports
//! this module but `lib.rs`: routes live in `routes`, shared hooks in `hooks`.

use yew::prelude::*;
use yew_router::prelude::*;

use crate::components::nav::Nav;
use crate::components::token_prompt::TokenPrompt;
use crate::hooks::{SessionHandle, use_machine_refresh};
use crate::pages;
use crate::routes::Route;
use crate::services::storage;
use crate::state::{AuthState, Session};

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

/// Moves focus to the new page's heading after a navigation (not on the
/// first page), so keyboard and screen reader users start at its top.
#[component]
fn FocusOnNavigation() -> Html {
    let path = use_location().map(|l| l.path().to_string()).unwrap_or_default();
    let first = use_mut_ref(|| true);
    use_effect_with(path, move |_| {
        if std::mem::replace(&mut *first.borrow_mut(), false) {
            return;
        }
        // After the page rendered its heading.
        wasm_bindgen_futures::spawn_local(async {
            gloo_timers::future::TimeoutFuture::new(0).await;
            crate::dom::focus_first("main h1");
        });
    });
    html! {}
}

#[component]
pub fn App() -> Html {
    let session = use_reducer(|| Session::new(storage::take_token_from_url().or_else(storage::load_token)));
    use_machine_refresh(&session);

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
                <FocusOnNavigation />
                <Nav />
                if let (AuthState::Accepted, Some(t)) = (&session.auth, &session.trouble) {
                    <p class="banner error" role="alert">{format!("{t}. Retrying…")}</p>
                }
                <main id="main">{body}</main>
            </BrowserRouter>
        </ContextProvider<SessionHandle>>
    }
}
