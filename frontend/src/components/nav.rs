//! The top bar: where to go, and how many machines are online.

use yew::prelude::*;
use yew_router::prelude::*;

use crate::hooks::use_session;
use crate::routes::Route;
use crate::services::storage;
use crate::state::{AuthState, SessionAction};

#[component]
pub fn Nav() -> Html {
    let session = use_session();
    let route = use_route::<Route>();
    let here = |r: &[Route]| route.as_ref().is_some_and(|cur| r.contains(cur));
    let on_plans = matches!(route, Some(Route::Plan { .. })) || here(&[Route::Plans, Route::NewPlan]);
    let on_runs = matches!(route, Some(Route::Run { .. })) || here(&[Route::Runs]);
    let online = session.machines.iter().filter(|m| m.state.is_connected()).count();
    let sign_out = {
        let session = session.clone();
        Callback::from(move |_| {
            storage::forget_token();
            session.dispatch(SessionAction::UseToken(None));
        })
    };
    let link = |to: Route, label: &'static str, current: bool| {
        html! {
            <li><Link<Route> {to} classes={classes!(current.then_some("current"))}>{label}</Link<Route>></li>
        }
    };
    html! {
        <header class="topbar">
            <nav aria-label="Main">
                <span class="brand">{"Ensemble"}</span>
                <ul>
                    {link(Route::Plans, "Plans", on_plans)}
                    {link(Route::Runs, "Runs", on_runs)}
                    {link(Route::Machines, "Machines", here(&[Route::Machines]))}
                    {link(Route::Suites, "Suites", here(&[Route::Suites]))}
                </ul>
                if session.auth == AuthState::Accepted {
                    <span class="machines-online" id="machines-online">
                        {format!("{online} machine{} online", if online == 1 { "" } else { "s" })}
                    </span>
                }
                if session.api.token.is_some() {
                    <button type="button" class="quiet" onclick={sign_out}>{"Forget token"}</button>
                }
            </nav>
        </header>
    }
}
