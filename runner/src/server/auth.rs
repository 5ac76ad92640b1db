//! Who may call the API: the bearer token (a header, or `?token=` for
//! clients that cannot give headers), or, for a run's event WebSocket, a
//! single-use ticket (`?ticket=`, from `POST /api/tickets`) the app uses
//! so that no address it builds carries the token.

use std::collections::HashMap;
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

/// Requires the server's API token when it has one.
pub fn required(core: Arc<Coordinator>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    token(move || core.config.token.clone().map(|t| vec![t]), "--token or ENSEMBLE_TOKEN")
}

/// [`required`], or a ticket (`?ticket=T`) from `POST /api/tickets`,
/// which is used up: for WebSockets, which a browser opens with no header.
pub fn required_or_ticket(core: Arc<Coordinator>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::addr::remote())
        .and_then(
            move |header: Option<String>,
                  query: HashMap<String, String>,
                  addr: Option<std::net::SocketAddr>| {
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
                        None => check(
                            core.config.token.clone().map(|t| vec![t]),
                            header.as_deref(),
                            &query,
                            addr,
                            "--token or ENSEMBLE_TOKEN",
                        ),
                    }
                }
            },
        )
        .untuple_one()
}

/// Requires the server's join token (machines) when it has one.
pub fn join_required(core: Arc<Coordinator>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    token(
        move || core.config.join_token.clone().map(|t| vec![t]),
        "the runner's --token or ENSEMBLE_JOIN_TOKEN",
    )
}

/// Requires the metrics token when the server has one (`--metrics-token`).
pub fn metrics_required(core: Arc<Coordinator>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    token(move || core.config.metrics_token.clone().map(|t| vec![t]), "--metrics-token")
}

/// Requires either token: for what machines fetch (suite bytes) as well as people.
pub fn either_required(core: Arc<Coordinator>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    token(
        move || {
            let tokens: Vec<String> =
                core.config.token.iter().chain(core.config.join_token.iter()).cloned().collect();
            (!tokens.is_empty()).then_some(tokens)
        },
        "--token or ENSEMBLE_TOKEN",
    )
}

/// Requires one of the tokens `expected()` gives (none: open), naming `how`
/// to pass it.
fn token(
    expected: impl Fn() -> Option<Vec<String>> + Clone + Send + Sync + 'static,
    how: &'static str,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::addr::remote())
        .and_then(
            move |header: Option<String>,
                  query: HashMap<String, String>,
                  addr: Option<std::net::SocketAddr>| {
                let expected = expected();
                async move { check(expected, header.as_deref(), &query, addr, how) }
            },
        )
        .untuple_one()
}

/// Whether the request (its `Authorization` header, or `?token=`) has one
/// of the tokens `expected` (none expected: yes).
fn check(
    expected: Option<Vec<String>>,
    header: Option<&str>,
    query: &HashMap<String, String>,
    addr: Option<std::net::SocketAddr>,
    how: &str,
) -> Result<(), Rejection> {
    let Some(expected) = expected else { return Ok(()) };
    match bearer(header).or(query.get("token").map(String::as_str)) {
        Some(given) if expected.iter().any(|e| token_ok(e, given)) => Ok(()),
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
