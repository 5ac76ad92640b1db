//! The app's own routes: the browser paths of its pages (not the server's
//! API paths, which are `ensemble_protocol::api::routes`). Pages and
//! components link with these; the app shell (`app`) maps each to its page.

use yew_router::prelude::*;

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

/// The query of the runs page that lists one plan's runs (`?plan=NAME`).
#[derive(Clone, PartialEq, Debug, serde::Serialize)]
pub struct PlanQuery {
    pub plan: String,
}
