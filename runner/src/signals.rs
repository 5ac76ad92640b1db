//! Stopping on a signal: Ctrl-C (SIGINT) everywhere, SIGTERM and SIGHUP on
//! Unix, so `serve`, `runner` and `demo` end cleanly when a person, a
//! service manager or a closing terminal stops them. A runner drains on
//! SIGTERM instead ([`drain_then_stop`]): what service managers and
//! Kubernetes send before they stop a process, with a grace period.

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

/// Two tokens for a runner: `drain` is cancelled on the first SIGTERM
/// (finish the shards here, take no new ones, then stop); `stop` on Ctrl-C,
/// SIGHUP or a second SIGTERM (stop now). Without SIGTERM (not Unix), only
/// `stop`.
pub fn drain_then_stop() -> (tokio_util::sync::CancellationToken, tokio_util::sync::CancellationToken) {
    let (drain, stop) =
        (tokio_util::sync::CancellationToken::new(), tokio_util::sync::CancellationToken::new());
    let (d, s) = (drain.clone(), stop.clone());
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).ok();
            let mut hup = signal(SignalKind::hangup()).ok();
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending().await,
                }
            }
            let mut terms = 0;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = next(&mut hup) => break,
                    _ = next(&mut term) => {
                        terms += 1;
                        if terms > 1 {
                            break;
                        }
                        d.cancel();
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = &d;
            let _ = tokio::signal::ctrl_c().await;
        }
        s.cancel();
    });
    (drain, stop)
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
