//! API errors on the wire: a handler's [`ApiError`] becomes a rejection, and
//! [`recover`] turns every rejection — ours and warp's own — into the one
//! JSON error body with the status its kind fixes.

use std::convert::Infallible;

use ensemble_protocol::api::{ApiError, ErrorKind};
use serde::Serialize;
use warp::http::StatusCode;
use warp::{Rejection, Reply};

/// A rejection carrying an API error.
#[derive(Debug)]
pub struct Failed(pub ApiError);

impl warp::reject::Reject for Failed {}

/// The rejection of an API error.
pub fn fail(e: ApiError) -> Rejection {
    warp::reject::custom(Failed(e))
}

/// A rejection of `kind` with `message`.
pub fn reject(kind: ErrorKind, message: impl Into<String>) -> Rejection {
    fail(ApiError::new(kind, message))
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `value` as JSON with `code`.
pub fn json_with<T: Serialize>(value: &T, code: u16) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(value), status(code)).into_response()
}

/// `value` as JSON, 200.
pub fn json<T: Serialize>(value: &T) -> warp::reply::Response {
    json_with(value, 200)
}

/// `value` as JSON: 201 when it was created, 200 otherwise.
pub fn created<T: Serialize>((value, new): (T, bool)) -> warp::reply::Response {
    json_with(&value, if new { 201 } else { 200 })
}

pub async fn recover(err: Rejection) -> Result<warp::reply::Response, Infallible> {
    let error = if let Some(Failed(e)) = err.find::<Failed>() {
        e.clone()
    } else if err.is_not_found() {
        ApiError::new(ErrorKind::NotFound, "no such endpoint")
    } else if let Some(e) = err.find::<warp::reject::PayloadTooLarge>() {
        ApiError::new(ErrorKind::PayloadTooLarge, e.to_string())
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(ErrorKind::MethodNotAllowed, "method not allowed here")
    } else if let Some(e) = err.find::<warp::reject::InvalidQuery>() {
        ApiError::new(ErrorKind::BadRequest, format!("bad query: {e}"))
    } else if let Some(e) = err.find::<warp::reject::MissingHeader>() {
        ApiError::new(ErrorKind::BadRequest, e.to_string())
    } else if let Some(e) = err.find::<warp::reject::LengthRequired>() {
        ApiError::new(ErrorKind::BadRequest, e.to_string())
    } else {
        ApiError::new(ErrorKind::BadRequest, format!("bad request: {err:?}"))
    };
    Ok(json_with(&error, error.status()))
}
