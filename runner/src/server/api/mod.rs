//! The REST API, one module per resource. Each handler parses its input,
//! calls the [`Coordinator`], and serializes the `protocol::api` type it
//! returns; errors are the coordinator's typed `ApiError`s.
//!
//! Path parameters are percent-decoded ([`segment`]); bodies have a size cap
//! per route; every route but health needs the token.

mod machines;
mod plans;
mod runs;
mod suites;
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use ensemble_protocol::api::{ErrorKind, Health, decode};
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection, Reply};

use super::error::{json, reject};
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

/// `/api/{name}`: a collection.
fn collection(name: &'static str) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path("api").and(warp::path(name)).and(warp::path::end())
}

/// `/api/{name}/{id}`: one item, its id percent-decoded.
fn item(name: &'static str) -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path("api").and(warp::path(name)).and(segment()).and(warp::path::end())
}

/// `/api/{name}/{id}/{action}`.
fn item_action(
    name: &'static str,
    action: &'static str,
) -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path("api").and(warp::path(name)).and(segment()).and(warp::path(action)).and(warp::path::end())
}

/// One percent-decoded path segment.
fn segment() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path::param::<String>().and_then(|raw: String| async move {
        decode(&raw)
            .ok_or_else(|| reject(ErrorKind::BadRequest, format!("{raw:?} is not a valid path segment")))
    })
}

/// A request body of at most `max` bytes.
fn body(max: u64) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::body::content_length_limit(max).and(warp::body::bytes())
}

/// UTF-8 text of a body.
fn text(body: &Bytes, what: &str) -> Result<String, Rejection> {
    String::from_utf8(body.to_vec())
        .map_err(|_| reject(ErrorKind::BadRequest, format!("the {what} is not UTF-8")))
}

/// Every API route.
pub fn routes(core: &Arc<Coordinator>) -> BoxedFilter<(warp::reply::Response,)> {
    let health = warp::path!("api" / "health").and(warp::get()).map(|| {
        json(&Health {
            ok: true,
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: ensemble_protocol::PROTOCOL_VERSION,
        })
    });
    health
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
