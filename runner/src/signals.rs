//! Stopping on a signal: Ctrl-C (SIGINT) everywhere, SIGTERM on Unix, so
//! `serve`, `runner` and `demo` end cleanly when a person or a service
//! manager stops them.

/// A token cancelled on Ctrl-C or SIGTERM, for a clean stop.
pub fn stop_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });
    token
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
