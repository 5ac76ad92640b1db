//! The browser app, embedded: `runner/build.rs` builds `frontend/` and this
//! module serves it — `index.html` at `/` and at every app route (the app
//! routes in the browser; revalidated by ETag on every load), the rest under
//! `/assets/` by hashed names: brotli or gzip as the browser takes them, and
//! cached for good, so a reload transfers none of them.

use ensemble_protocol::api::routes;
use warp::http::Method;
use warp::http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, HeaderValue, VARY};
use warp::{Filter, Rejection};

/// One file under `/assets/`, named by its content's hash, with its
/// compressed forms (made at build time).
struct Asset {
    name: &'static str,
    content_type: &'static str,
    hash: &'static str,
    raw: &'static [u8],
    gzip: &'static [u8],
    brotli: &'static [u8],
}

const INDEX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui/index.html"));
const ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/ui/assets.rs"));

/// The index's ETag: it changes when the app (and so its names) does.
fn index_etag() -> String {
    let hashes: Vec<&str> = ASSETS.iter().map(|a| a.hash).collect();
    format!("\"{}\"", hashes.join("-"))
}

/// Whether `If-None-Match` names `etag`.
fn fresh(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// The best encoding `Accept-Encoding` takes: brotli, then gzip, else none.
fn encoding(accept: Option<&str>) -> Option<&'static str> {
    let accepts = |name: &str| {
        accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut it = part.split(';');
                let coding = it.next().unwrap_or_default().trim();
                let q = it.find_map(|p| p.trim().strip_prefix("q=")).and_then(|q| q.parse::<f32>().ok());
                coding.eq_ignore_ascii_case(name) && q.is_none_or(|q| q > 0.0)
            })
        })
    };
    if accepts("br") {
        Some("br")
    } else if accepts("gzip") {
        Some("gzip")
    } else {
        None
    }
}

fn not_modified(etag: &str) -> warp::reply::Response {
    let mut reply = warp::reply::Response::new(Vec::<u8>::new().into());
    *reply.status_mut() = warp::http::StatusCode::NOT_MODIFIED;
    reply.headers_mut().insert(ETAG, HeaderValue::from_str(etag).expect("an ETag is a header value"));
    reply
}

fn index(if_none_match: Option<&str>) -> warp::reply::Response {
    let etag = index_etag();
    if fresh(if_none_match, &etag) {
        return not_modified(&etag);
    }
    let mut reply = warp::reply::Response::new(INDEX.into());
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // The page names the app's current files: always asked again (cheaply, by ETag).
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(ETAG, HeaderValue::from_str(&etag).expect("an ETag is a header value"));
    reply
}

/// An asset, compressed as the browser takes it; kept for good (its name
/// is its content).
fn asset(a: &Asset, accept: Option<&str>, if_none_match: Option<&str>) -> warp::reply::Response {
    let coding = encoding(accept);
    let etag = format!("\"{}{}\"", a.hash, coding.map(|c| format!("-{c}")).unwrap_or_default());
    if fresh(if_none_match, &etag) {
        return not_modified(&etag);
    }
    let body = match coding {
        Some("br") => a.brotli,
        Some(_) => a.gzip,
        None => a.raw,
    };
    let mut reply = warp::reply::Response::new(body.into());
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(ETAG, HeaderValue::from_str(&etag).expect("an ETag is a header value"));
    if let Some(c) = coding {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(c));
    }
    reply
}

/// `GET /assets/{file}` and the app's pages. API paths are left to the API
/// (an unknown `/api/...` stays a JSON 404).
pub fn routes() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let assets = super::route::at1(&[Method::GET], "/assets/{file}")
        .and(warp::header::optional::<String>("accept-encoding"))
        .and(warp::header::optional::<String>("if-none-match"))
        .and_then(|name: String, accept: Option<String>, etag: Option<String>| async move {
            match ASSETS.iter().find(|a| a.name == name) {
                Some(a) => Ok(asset(a, accept.as_deref(), etag.as_deref())),
                None => Err(super::error::reject(
                    ensemble_protocol::api::ErrorKind::NotFound,
                    format!("the app has no asset {name:?}"),
                )),
            }
        });
    super::route::record(&Method::GET, "/");
    let pages = warp::get()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("if-none-match"))
        .and_then(|path: warp::path::FullPath, etag: Option<String>| async move {
            let p = path.as_str();
            let probe = [routes::HEALTHZ, routes::READYZ, routes::METRICS].contains(&p);
            if p == "/api" || p.starts_with("/api/") || p.starts_with("/assets/") || probe {
                Err(warp::reject::not_found())
            } else {
                Ok(index(etag.as_deref()))
            }
        });
    assets.or(pages).unify()
}
