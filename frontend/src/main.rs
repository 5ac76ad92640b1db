//! Starts the app in the browser.

fn main() {
    ensemble_frontend::start();
}
