//! The accept loop, plain or TLS (rustls via tokio-rustls; warp 0.4 has no
//! TLS of its own), with the bounds a server facing the network needs: at
//! most [`MAX_CONNECTIONS`] at once (more are closed at once), a TLS
//! handshake and each request's headers within [`HEADER_TIMEOUT`] (which
//! also ends idle keep-alive connections), and every connection tracked and
//! ended on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client may take to send a request's headers (or its TLS handshake).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

type Request = hyper::Request<hyper::body::Incoming>;
type Infallible = std::convert::Infallible;

/// What serves one connection's requests: a `warp::service(...)`.
pub trait Service:
    tower_service::Service<
        Request,
        Response = warp::reply::Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Service for S where
    S: tower_service::Service<
            Request,
            Response = warp::reply::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Serves `svc` (a `warp::service(...)`) on `listener` until `shutdown`.
pub async fn serve<S>(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    svc: S,
    shutdown: CancellationToken,
) where
    S: Service,
{
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "closing a connection: {MAX_CONNECTIONS} are open already");
            continue;
        };
        let (acceptor, svc, stop) = (acceptor.clone(), svc.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slot = slot;
            match acceptor {
                Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => serve_connection(tls, svc, stop, peer).await,
                    Ok(Err(e)) => tracing::info!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                },
                None => serve_connection(tcp, svc, stop, peer).await,
            }
        });
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection<IO, S>(io: IO, svc: S, stop: CancellationToken, peer: std::net::SocketAddr)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service,
{
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, "connection ended: {e}") },
        _ = stop.cancelled() => {
            // Let a request in flight finish; then the connection closes.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
