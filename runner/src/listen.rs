//! The accept loop, plain or TLS (rustls via tokio-rustls; warp 0.4 has no
//! TLS of its own), with the bounds a server facing the network needs:
//!
//! - at most [`MAX_CONNECTIONS`] at once, WebSockets included (a socket
//!   upgraded from a request keeps its connection's slot through
//!   [`Connection::hold`]);
//! - when all are taken, the connection idle the longest (no request in
//!   flight: a TLS handshake or headers never finished, a keep-alive between
//!   requests) is closed to make room, so idle sockets cannot lock out
//!   people and machines; only when none is idle is the newcomer closed;
//! - a TLS handshake and each request's headers within [`HEADER_TIMEOUT`]
//!   (which also ends idle keep-alive connections);
//! - every connection tracked and ended on shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::Filter;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client may take to send a request's headers (or its TLS handshake).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a newcomer waits for the idle connection closed for it to go.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

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

/// One accepted connection: its slot (released when the last reference
/// goes), whether it is busy, and how to close it.
struct Conn {
    /// Requests in flight plus sockets held.
    busy: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// Shutdown: requests in flight finish first.
    close: CancellationToken,
    /// Closed to make room: dropped at once, it being idle.
    evicted: CancellationToken,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    fn enter(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }
}

/// The connection is busy while this lives.
struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

/// The connection a request came on, in its extensions (see [`connection`]).
#[derive(Clone)]
pub struct Connection(Arc<Conn>);

impl Connection {
    /// Keeps the connection's slot taken, and the connection busy, while the
    /// returned value lives: for a socket upgraded from the request.
    pub fn hold(&self) -> Held {
        Held(self.0.enter())
    }
}

/// A connection slot held by an upgraded socket.
pub struct Held(#[allow(dead_code)] Busy);

/// The connection of the request, when it came through [`serve`] (not in
/// `warp::test`), held for as long as the value lives: pass it to the task
/// serving the upgraded socket.
pub fn connection() -> impl Filter<Extract = (Option<Held>,), Error = Infallible> + Clone {
    warp::ext::optional::<Connection>().map(|c: Option<Connection>| c.map(|c| c.hold()))
}

/// The open connections and their slots.
struct Pool {
    slots: Arc<Semaphore>,
    open: Mutex<Vec<Weak<Conn>>>,
}

impl Pool {
    fn new(slots: usize) -> Pool {
        Pool { slots: Arc::new(Semaphore::new(slots)), open: Mutex::new(Vec::new()) }
    }

    /// A slot for a newcomer: a free one, or one an idle connection makes
    /// room for; `None` when every connection is busy.
    async fn admit(&self, stop: &CancellationToken) -> Option<Arc<Conn>> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !self.close_idlest() {
                    return None;
                }
                tokio::time::timeout(EVICTION_WAIT, self.slots.clone().acquire_owned()).await.ok()?.ok()?
            }
        };
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            close: stop.child_token(),
            evicted: CancellationToken::new(),
            _slot: slot,
        });
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|c| c.strong_count() > 0);
        open.push(Arc::downgrade(&conn));
        Some(conn)
    }

    /// Closes the connection idle the longest; false when none is idle.
    fn close_idlest(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let idlest = open
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| c.busy.load(Ordering::SeqCst) == 0 && !c.evicted.is_cancelled())
            .min_by_key(|c| *c.idle_since.lock().unwrap_or_else(|p| p.into_inner()));
        match idlest {
            Some(conn) => {
                conn.evicted.cancel();
                true
            }
            None => false,
        }
    }
}

/// `svc` on one connection: each request marks the connection busy until
/// its response is ready and carries the [`Connection`].
#[derive(Clone)]
struct Tracked<S> {
    svc: S,
    conn: Arc<Conn>,
}

impl<S: Service> tower_service::Service<Request> for Tracked<S> {
    type Response = warp::reply::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.svc.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let busy = self.conn.enter();
        req.extensions_mut().insert(Connection(self.conn.clone()));
        let response = self.svc.call(req);
        Box::pin(async move {
            let response = response.await;
            drop(busy);
            response
        })
    }
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
    let pool = Pool::new(MAX_CONNECTIONS);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    crate::throttled!(warn, 10, "accept failed: {e}");
                    // Out of descriptors, say: give closing connections a moment.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Small frames (a barrier's release, an ack) go out at once, not
        // after Nagle's wait for the previous segment's ack.
        let _ = tcp.set_nodelay(true);
        let Some(conn) = pool.admit(&shutdown).await else {
            crate::throttled!(warn, 10, %peer, "closing a connection: {MAX_CONNECTIONS} are open and busy");
            continue;
        };
        let (acceptor, svc) = (acceptor.clone(), svc.clone());
        connections.spawn(async move {
            let (close, evicted) = (conn.close.clone(), conn.evicted.clone());
            let svc = Tracked { svc, conn };
            match acceptor {
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp));
                    let tls = tokio::select! {
                        tls = handshake => tls,
                        _ = close.cancelled() => return,
                        _ = evicted.cancelled() => return,
                    };
                    match tls {
                        Ok(Ok(tls)) => serve_connection(tls, svc, peer).await,
                        Ok(Err(e)) => crate::throttled!(info, 30, %peer, "TLS handshake failed: {e}"),
                        Err(_) => crate::throttled!(info, 30, %peer, "TLS handshake timed out"),
                    }
                }
                None => serve_connection(tcp, svc, peer).await,
            }
        });
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection<IO, S>(io: IO, svc: Tracked<S>, peer: std::net::SocketAddr)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service,
{
    let this = svc.conn.clone();
    let (stop, evicted) = (this.close.clone(), this.evicted.clone());
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, "connection ended: {e}") },
        // Idle (nothing in flight, perhaps half a request's headers): dropped
        // at once, so the newcomer it makes room for gets its slot.
        _ = evicted.cancelled(), if this.busy.load(Ordering::SeqCst) == 0 => {}
        _ = stop.cancelled() => {
            // Let a request in flight finish; then the connection closes.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_longest_idle_connection_makes_room_and_held_sockets_keep_theirs() {
        let pool = Pool::new(3);
        let stop = CancellationToken::new();
        // A socket upgraded from a request: only its hold keeps the slot.
        let socket = Connection(pool.admit(&stop).await.unwrap()).hold();
        let older = pool.admit(&stop).await.unwrap();
        let newer = pool.admit(&stop).await.unwrap();
        let _busy = newer.enter();
        // Full: the idle one goes (its task ends and frees the slot).
        let closing = older.evicted.clone();
        let freed = tokio::spawn(async move {
            closing.cancelled().await;
            drop(older);
        });
        let admitted = pool.admit(&stop).await.expect("room made");
        freed.await.unwrap();
        assert!(!newer.evicted.is_cancelled(), "a busy connection stays");
        // Now every connection is busy or held: the newcomer is refused.
        let _busy2 = admitted.enter();
        assert!(pool.admit(&stop).await.is_none());
        drop(socket);
        assert!(pool.admit(&stop).await.is_some(), "a closed socket gives its slot back");
    }
}
