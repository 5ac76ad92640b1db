//! Ensemble's browser app (Yew): plans, the plan editor, machines, suites and
//! live runs. `ensemble serve` embeds the built app (see `runner/build.rs`);
//! `trunk serve` (see `Trunk.toml`) is the development loop.

pub mod app;
pub mod components;
pub mod dom;
pub mod format;
pub mod pages;
pub mod services;
pub mod state;

/// Renders the app into the page's body.
pub fn start() {
    yew::Renderer::<app::App>::new().render();
}
