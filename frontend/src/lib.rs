//! Ensemble's browser app (Yew): plans, the plan editor, machines, suites and
//! live runs. `ensemble serve` embeds the built app (see `runner/build.rs`);
//! `trunk serve` (see `Trunk.toml`) is the development loop.
//!
//! Modules, each depending only on those listed before it:
//!
//! - [`format`]: numbers, sizes and times as people read them.
//! - [`dom`]: reading values and files out of DOM events.
//! - [`services`]: the only code that touches the network (the REST API and
//!   a run's event stream) and the token in local storage.
//! - [`state`]: the app's state as reducers (session, plan editor, run view);
//!   pure logic, unit-tested natively.
//! - [`routes`]: the app's page routes.
//! - [`hooks`]: hooks and helpers every page shares (`use_session`,
//!   `failure_text`, `use_fresh_suites`, `use_machine_refresh`).
//! - [`components`]: the building blocks of the pages.
//! - [`pages`]: one component per route.
//! - [`app`]: the shell: session provider, router, navigation bar, token prompt.

pub mod app;
pub mod components;
pub mod dom;
pub mod format;
pub mod hooks;
pub mod pages;
pub mod routes;
pub mod services;
pub mod state;

/// Renders the app into the page's body.
pub fn start() {
    yew::Renderer::<app::App>::new().render();
}
