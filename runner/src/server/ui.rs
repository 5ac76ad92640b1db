//! The browser app, embedded: `runner/build.rs` builds `frontend/` and this
//! module serves it — `index.html` at `/` and at every app route (the app
//! routes in the browser), the rest under `/assets/`.

use ensemble_protocol::api::routes;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use warp::{Filter, Rejection, Reply};

macro_rules! asset {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/ui/", $name))
    };
}

const INDEX: &[u8] = asset!("index.html");
/// `(file name, content type, bytes)` of everything under `/assets/`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("ensemble_frontend.js", "text/javascript; charset=utf-8", asset!("ensemble_frontend.js")),
    ("ensemble_frontend_bg.wasm", "application/wasm", asset!("ensemble_frontend_bg.wasm")),
    ("style.css", "text/css; charset=utf-8", asset!("style.css")),
];

fn index() -> warp::reply::Response {
    let reply = warp::reply::with_header(INDEX, CONTENT_TYPE, "text/html; charset=utf-8");
    warp::reply::with_header(reply, CACHE_CONTROL, "no-cache").into_response()
}

/// `GET /assets/{file}` and the app's pages. API paths are left to the API
/// (an unknown `/api/...` stays a JSON 404).
pub fn routes() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let assets = warp::get().and(warp::path!("assets" / String)).and_then(|name: String| async move {
        match ASSETS.iter().find(|(n, ..)| *n == name) {
            // The app's files change with each build of the binary, and the
            // page asks for them by fixed names: revalidate each time.
            Some((_, ty, bytes)) => {
                let reply = warp::reply::with_header(*bytes, CONTENT_TYPE, *ty);
                Ok(warp::reply::with_header(reply, CACHE_CONTROL, "no-cache").into_response())
            }
            None => Err(warp::reject::not_found()),
        }
    });
    let pages = warp::get().and(warp::path::full()).and_then(|path: warp::path::FullPath| async move {
        let p = path.as_str();
        let probe = [routes::HEALTHZ, routes::READYZ, routes::METRICS].contains(&p);
        if p == "/api" || p.starts_with("/api/") || p.starts_with("/assets/") || probe {
            Err(warp::reject::not_found())
        } else {
            Ok(index())
        }
    });
    assets.or(pages).unify()
}
