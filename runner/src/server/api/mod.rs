//! The REST API, one module per resource. Each handler parses its input,
//! calls the [`Coordinator`], and serializes the `protocol::api` type it
//! returns; errors are the coordinator's typed `ApiError`s.
//!
//! Each route is mounted with its path template (`server::route`), which
//! the API document (`server::openapi`) describes; path parameters are
//! percent-decoded; bodies have a size cap per route; every route but
//! health and the document needs the token.

mod machines;
mod plans;
mod runs;
mod suites;
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use ensemble_protocol::api::{ErrorKind, Health};
use warp::filters::BoxedFilter;
use warp::http::Method;
use warp::{Filter, Rejection, Reply};

use super::error::{json, reject};
use super::route::at;
use crate::coordinator::Coordinator;

/// Largest plan or run request body.
const MAX_PLAN_BYTES: u64 = 4 << 20;

/// The coordinator, for handlers, once the token checks out.
fn authorized(
    core: &Arc<Coordinator>,
) -> impl Filter<Extract = (Arc<Coordinator>,), Error = Rejection> + Clone + use<> {
    let handle = core.clone();
    super::auth::required(core.clone()).map(move || handle.clone())
}

/// The coordinator, for a route machines use too (suite bytes): either token.
fn machine_or_person(
    core: &Arc<Coordinator>,
) -> impl Filter<Extract = (Arc<Coordinator>,), Error = Rejection> + Clone + use<> {
    let handle = core.clone();
    super::auth::either_required(core.clone()).map(move || handle.clone())
}

/// A request body of at most `max` bytes, read once its share of `room`
/// is free.
fn body(
    max: u64,
    room: &'static Room,
) -> impl Filter<Extract = (Bytes, BodyRoom), Error = Rejection> + Clone {
    warp::body::content_length_limit(max)
        .and(warp::header::<u64>("content-length"))
        .then(move |length| room.take(length))
        .and(warp::body::bytes())
        .map(|room, bytes| (bytes, room))
        .untuple_one()
}

/// Room for request bodies held in memory at once, counted at twice each
/// body's length (handling it — parsing, inspecting — makes a copy): a
/// request waits for its share before its body is read, and gives it back
/// once it is answered. (Each waits on a connection of its own, and
/// connections are bounded.)
struct Room {
    kib: usize,
    free: tokio::sync::Semaphore,
}

impl Room {
    const fn of_mib(mib: usize) -> Room {
        Room { kib: mib << 10, free: tokio::sync::Semaphore::const_new(mib << 10) }
    }

    /// The share of a body of `length` bytes, once it is free.
    async fn take(&'static self, length: u64) -> BodyRoom {
        let kib = length.saturating_mul(2).div_ceil(1024).clamp(1, self.kib as u64) as u32;
        BodyRoom { _share: self.free.acquire_many(kib).await.expect("never closed") }
    }
}

/// Suite uploads' room (64 MiB each unless `serve --max-suite-size` says).
static UPLOADS: Room = Room::of_mib(384);
/// Plans' and run requests' room (4 MiB each): apart from uploads', so
/// that large uploads under way never hold up a run's start.
static PLANS: Room = Room::of_mib(256);

/// A request body's share of its [`Room`], held while it is handled.
struct BodyRoom {
    _share: tokio::sync::SemaphorePermit<'static>,
}

/// A body of at most `max` bytes, with or without a `Content-Length` (an
/// empty one, a browser's or a client's bare POST, is fine).
fn small_body(max: usize) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::body::stream().and_then(move |parts| collect_body(parts, max))
}

async fn collect_body<B: bytes::Buf>(
    parts: impl futures::Stream<Item = Result<B, warp::Error>>,
    max: usize,
) -> Result<Bytes, Rejection> {
    use futures::StreamExt;
    let mut parts = std::pin::pin!(parts);
    let mut body = Vec::new();
    while let Some(part) = parts.next().await {
        let mut part = part.map_err(|e| reject(ErrorKind::BadRequest, format!("reading the body: {e}")))?;
        if body.len() + part.remaining() > max {
            return Err(reject(ErrorKind::PayloadTooLarge, format!("the body is over {max} bytes")));
        }
        while part.has_remaining() {
            let chunk = part.chunk();
            body.extend_from_slice(chunk);
            let n = chunk.len();
            part.advance(n);
        }
    }
    Ok(Bytes::from(body))
}

/// UTF-8 text of a body.
/// A stored file as a response, read from disk as it is sent (warp's file
/// reply, with its `Range` and conditional handling): a download never holds
/// the file in memory, however large or slowly read.
async fn file_reply(path: std::path::PathBuf) -> Result<warp::reply::Response, Rejection> {
    use tower_service::Service;
    let request =
        warp::http::Request::get("/").body(http_body_util::Empty::<Bytes>::new()).expect("a valid request");
    let mut file = warp::service(warp::fs::file(path));
    // A task of its own: warp's routing state must not nest in this request's.
    match tokio::spawn(async move { file.call(request).await }).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(never)) => match never {},
        Err(e) => Err(reject(ErrorKind::Internal, format!("reading a stored file: {e}"))),
    }
}

fn text(body: &Bytes, what: &str) -> Result<String, Rejection> {
    String::from_utf8(body.to_vec())
        .map_err(|_| reject(ErrorKind::BadRequest, format!("the {what} is not UTF-8")))
}

/// Every API route.
pub fn routes(core: &Arc<Coordinator>) -> BoxedFilter<(warp::reply::Response,)> {
    let health = at(Method::GET, "/api/health").map(|| {
        json(&Health {
            ok: true,
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: ensemble_protocol::PROTOCOL_VERSION,
            now_us: crate::time::now_us(),
        })
    });
    let document = at(Method::GET, "/api/openapi.json").map(|| {
        warp::reply::with_header(super::openapi::document_json(), "content-type", "application/json")
            .into_response()
    });
    health
        .or(document)
        .unify()
        .or(machines::routes(core))
        .unify()
        .or(suites::routes(core))
        .unify()
        .or(plans::routes(core))
        .unify()
        .or(runs::routes(core))
        .unify()
        .or(tests::routes(core))
        .unify()
        .map(Reply::into_response)
        .boxed()
}

#[cfg(test)]
mod body_room {
    use super::*;

    /// A body's share of the room is taken once it is free, and held
    /// until what handles the body lets it go.
    #[tokio::test]
    async fn a_body_waits_for_its_share_of_the_room_and_gives_it_back() {
        static ROOM: Room = Room::of_mib(1);
        let taken = ROOM.free.acquire_many(1020).await.unwrap();
        // 4 KiB of body needs 8 KiB of room: it waits.
        let read = tokio::spawn(ROOM.take(4096));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!read.is_finished(), "the body was read without room for it");
        drop(taken);
        let room = read.await.unwrap();
        assert_eq!(ROOM.free.available_permits(), 1024 - 8);
        drop(room);
        assert_eq!(ROOM.free.available_permits(), 1024);
        // A body larger than the room waits for all of it, not forever.
        let all = ROOM.take(u64::MAX).await;
        assert_eq!(ROOM.free.available_permits(), 0);
        drop(all);
    }
}
