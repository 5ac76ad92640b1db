//! What a browser could be tricked into sending is refused here.
//!
//! A web page the user visits can make the browser send requests to a
//! server on loopback (simple cross-origin requests, WebSocket handshakes,
//! and DNS-rebound names). So every `/api` request that carries an `Origin`
//! must come from the server's own origin, a server on loopback answers only
//! to loopback host names, and bodies must carry the content type of their
//! route (which a cross-origin page cannot send without a preflight this
//! server never allows). Clients that are not browsers send no `Origin`.

use std::net::IpAddr;

use ensemble_protocol::api::{ApiError, ErrorKind};
use warp::{Filter, Rejection};

use super::error::fail;

/// Whether `host` (a Host header: name or IP, maybe with a port) names this
/// machine's loopback.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => {
            host.rsplit_once(':').map_or(host, |(h, port)| if port.parse::<u16>().is_ok() { h } else { host })
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The checks on one request's `Origin` and `Host`.
pub fn check(origin: Option<&str>, host: Option<&str>, loopback_only: bool) -> Result<(), ApiError> {
    let forbidden = |m: String| Err(ApiError::new(ErrorKind::Forbidden, m));
    if loopback_only && !host.is_some_and(is_loopback_host) {
        return forbidden(format!(
            "this server listens on loopback and answers only to loopback names, not Host {:?}",
            host.unwrap_or("")
        ));
    }
    if let Some(origin) = origin {
        let own = host.is_some_and(|h| {
            origin.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https") && rest.eq_ignore_ascii_case(h)
            })
        });
        if !own {
            return forbidden(format!("requests from another origin ({origin:?}) are refused"));
        }
    }
    Ok(())
}

/// Refuses cross-origin and (on loopback) foreign-host requests.
pub fn same_origin(loopback_only: bool) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("origin")
        .and(warp::header::optional::<String>("host"))
        .and_then(move |origin: Option<String>, host: Option<String>| async move {
            check(origin.as_deref(), host.as_deref(), loopback_only).map_err(fail)
        })
        .untuple_one()
}

/// The media types of JSON bodies.
pub const JSON: &[&str] = &["application/json"];
/// Plans as TOML. (Not `text/plain`: a cross-origin page may send that.)
pub const TOML: &[&str] = &["application/toml", "text/toml"];
/// Suite components.
pub const WASM: &[&str] = &["application/wasm", "application/octet-stream"];

/// Requires one of `types` as the body's media type.
pub fn content_type(types: &'static [&'static str]) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(move |given: Option<String>| async move {
            let media =
                given.as_deref().and_then(|g| g.split(';').next()).map(|m| m.trim().to_ascii_lowercase());
            if media.as_deref().is_some_and(|m| types.contains(&m)) {
                Ok(())
            } else {
                Err(fail(ApiError::new(
                    ErrorKind::UnsupportedMediaType,
                    format!("send the body as {} (Content-Type)", types.join(" or ")),
                )))
            }
        })
        .untuple_one()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_own_origin_and_loopback_names_pass() {
        assert!(check(None, Some("127.0.0.1:7878"), true).is_ok(), "no Origin: not a browser");
        assert!(check(Some("http://127.0.0.1:7878"), Some("127.0.0.1:7878"), true).is_ok());
        assert!(check(Some("http://localhost:7878"), Some("localhost:7878"), true).is_ok());
        assert!(check(Some("http://[::1]:7878"), Some("[::1]:7878"), true).is_ok());
        let evil = check(Some("https://evil.example"), Some("127.0.0.1:7878"), true).unwrap_err();
        assert_eq!(evil.kind(), ErrorKind::Forbidden);
        assert!(check(Some("null"), Some("127.0.0.1:7878"), true).is_err());
        // DNS rebinding: a foreign name that resolves to loopback.
        assert!(check(None, Some("evil.example:7878"), true).is_err());
        assert!(check(None, None, true).is_err());
        // A server on a public address may be reached by any name.
        assert!(check(None, Some("ci.internal:7878"), false).is_ok());
        assert!(check(Some("http://ci.internal:7878"), Some("ci.internal:7878"), false).is_ok());
        assert!(check(Some("http://other:7878"), Some("ci.internal:7878"), false).is_err());
    }
}
