//! Stopping on a signal: Ctrl-C (SIGINT) everywhere, SIGTERM and SIGHUP on
//! Unix, so `serve`, `runner` and `demo` end cleanly when a person, a
//! service manager or a closing terminal stops them.

/// A token cancelled on Ctrl-C, SIGTERM or SIGHUP, for a clean stop.
pub fn stop_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });
    token
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM or SIGHUP.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let received = |kind: SignalKind| async move {
            match signal(kind) {
                Ok(mut s) => {
                    s.recv().await;
                }
                // Not to be had: wait for the others.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = received(SignalKind::terminate()) => {}
            _ = received(SignalKind::hangup()) => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
