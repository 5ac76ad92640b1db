//! Who may call the API: the bearer token (a header, or `?token=` for
//! clients that cannot give headers), or, for a run's event WebSocket, a
//! single-use ticket (`?ticket=`, from `POST /api/tickets`) the app uses
//! so that no address it builds carries the token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ensemble_protocol::api::ErrorKind;
use warp::{Filter, Rejection};

use super::error::reject;
use crate::coordinator::Coordinator;
use crate::secret::token_ok;

/// The token of an `Authorization: Bearer T` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    header.and_then(|h| h.strip_prefix("Bearer "))
}

/// What a person who gave the join token where the API token goes is told.
const JOIN_NOT_API: &str = "that is the join token, which lets runners join and nothing else: give the \
     API token (`ensemble serve` prints it, and keeps the one it made in DATA_DIR/token)";
/// What a runner given the API token is told.
const API_NOT_JOIN: &str = "that is the API token: a runner joins with the join token (`ensemble serve \
     --join-token`, or the one it made in DATA_DIR/join-token)";

/// The tokens a route takes, and the other kind with what to say to a
/// request that brings it instead.
struct Tokens {
    expected: Option<Vec<String>>,
    other: Option<(String, &'static str)>,
}

/// Requires the server's API token when it has one.
pub fn required(core: Arc<Coordinator>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    token(move || api_tokens(&core), "--token or ENSEMBLE_TOKEN")
}

fn api_tokens(core: &Coordinator) -> Tokens {
    Tokens {
        expected: core.config.token.clone().map(|t| vec![t]),
        other: core.config.join_token.clone().map(|t| (t, JOIN_NOT_API)),
    }
}

/// [`required`], or a ticket (`?ticket=T`) from `POST /api/tickets`,
/// which is used up: for WebSockets, which a browser opens with no header.
pub fn required_or_ticket(core: Arc<Coordinator>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    credentials()
        .and_then(move |header: Option<String>, query: HashMap<String, String>, addr: Option<SocketAddr>| {
            let core = core.clone();
            async move {
                match query.get("ticket") {
                    Some(ticket) if core.tickets.redeem(ticket) => Ok(()),
                    Some(_) => {
                        crate::throttled!(warn, 20, peer = ?addr, "rejected a request with a bad ticket");
                        Err(reject(
                            ErrorKind::Unauthorized,
                            format!(
                                "the ticket is unknown, used or expired (a ticket from POST /api/tickets \
                                 opens one connection within {} s)",
                                crate::secret::TICKET_LIFE.as_secs()
                            ),
                        ))
                    }
                    None => {
                        check(api_tokens(&core), header.as_deref(), &query, addr, "--token or ENSEMBLE_TOKEN")
                    }
                }
            }
        })
        .untuple_one()
}

/// What a request brings to prove who it is: its `Authorization` header,
/// its query (`?token=`, `?ticket=`) and its peer's address (for the logs).
fn credentials()
-> impl Filter<Extract = (Option<String>, HashMap<String, String>, Option<SocketAddr>), Error = Rejection> + Clone
{
    warp::header::optional::<String>("authorization")
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::addr::remote())
}

/// Requires the server's join token (machines) when it has one.
pub fn join_required(core: Arc<Coordinator>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    token(
        move || Tokens {
            expected: core.config.join_token.clone().map(|t| vec![t]),
            other: core.config.token.clone().map(|t| (t, API_NOT_JOIN)),
        },
        "the runner's --token or ENSEMBLE_JOIN_TOKEN",
    )
}

/// Requires the metrics token when the server has one (`--metrics-token`).
pub fn metrics_required(core: Arc<Coordinator>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    token(
        move || Tokens { expected: core.config.metrics_token.clone().map(|t| vec![t]), other: None },
        "--metrics-token",
    )
}

/// Requires either token: for what machines fetch (suite bytes) as well as people.
pub fn either_required(core: Arc<Coordinator>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    token(
        move || {
            let tokens: Vec<String> =
                core.config.token.iter().chain(core.config.join_token.iter()).cloned().collect();
            Tokens { expected: (!tokens.is_empty()).then_some(tokens), other: None }
        },
        "--token or ENSEMBLE_TOKEN",
    )
}

/// Requires one of the tokens `expected()` gives (none: open), naming `how`
/// to pass it.
fn token(
    expected: impl Fn() -> Tokens + Clone + Send + Sync + 'static,
    how: &'static str,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    credentials()
        .and_then(move |header: Option<String>, query: HashMap<String, String>, addr: Option<SocketAddr>| {
            let expected = expected();
            async move { check(expected, header.as_deref(), &query, addr, how) }
        })
        .untuple_one()
}

/// Whether the request (its `Authorization` header, or `?token=`) has one
/// of the tokens `expected` (none expected: yes).
fn check(
    tokens: Tokens,
    header: Option<&str>,
    query: &HashMap<String, String>,
    addr: Option<SocketAddr>,
    how: &str,
) -> Result<(), Rejection> {
    let Some(expected) = tokens.expected else { return Ok(()) };
    match bearer(header).or(query.get("token").map(String::as_str)) {
        Some(given) if expected.iter().any(|e| token_ok(e, given)) => Ok(()),
        // The other kind of token: the server knows which it is, so says.
        Some(given) if tokens.other.as_ref().is_some_and(|(other, _)| token_ok(other, given)) => {
            let hint = tokens.other.map(|(_, hint)| hint).unwrap_or_default();
            crate::throttled!(warn, 20, peer = ?addr, "rejected a request with the other kind of token");
            Err(reject(ErrorKind::Unauthorized, format!("wrong token: {hint}")))
        }
        Some(_) => {
            crate::throttled!(warn, 20, peer = ?addr, "rejected a request with a wrong token");
            Err(reject(ErrorKind::Unauthorized, format!("wrong token (pass it with {how})")))
        }
        None => {
            crate::throttled!(warn, 20, peer = ?addr, "rejected a request without a token");
            Err(reject(ErrorKind::Unauthorized, format!("this server needs a token: pass it with {how}")))
        }
    }
}
