//! Who may call the API: the bearer token (header, or `?token=` for what a
//! browser cannot give headers: WebSockets and download links).

use std::collections::HashMap;
use std::sync::Arc;

use ensemble_protocol::api::ErrorKind;
use warp::{Filter, Rejection};

use super::error::reject;
use crate::coordinator::Coordinator;

/// Constant-time token comparison.
pub fn token_ok(expected: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The token of an `Authorization: Bearer T` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    header.and_then(|h| h.strip_prefix("Bearer "))
}

/// Requires the server's token when it has one.
pub fn required(core: Arc<Coordinator>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::addr::remote())
        .and_then(
            move |header: Option<String>,
                  query: HashMap<String, String>,
                  addr: Option<std::net::SocketAddr>| {
                let core = core.clone();
                async move {
                    let Some(expected) = &core.config.token else { return Ok(()) };
                    match bearer(header.as_deref()).or(query.get("token").map(String::as_str)) {
                        Some(given) if token_ok(expected, given) => Ok(()),
                        Some(_) => {
                            tracing::warn!(peer = ?addr, "rejected a request with a wrong token");
                            Err(reject(ErrorKind::Unauthorized, "wrong token"))
                        }
                        None => {
                            tracing::warn!(peer = ?addr, "rejected a request without a token");
                            Err(reject(
                                ErrorKind::Unauthorized,
                                "this server needs a token: send `Authorization: Bearer <token>`",
                            ))
                        }
                    }
                }
            },
        )
        .untuple_one()
}
