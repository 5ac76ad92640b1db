//! Mounting a route: its method and path template, in OpenAPI's form
//! (`/api/runs/{id}/cancel`), make its filter, and are recorded as they
//! do. [`mounted`] so lists every route the server answers, and a test
//! holds that list and the API document (`server::openapi`) to each other:
//! a route cannot be added without its description.
//!
//! A `{name}` segment matches one path segment, percent-decoded (a
//! malformed encoding is a 400 that names it); literal segments match as
//! written. The path is matched first, then the method, as warp's own
//! filters do, so a known path with another method is a 405.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use ensemble_protocol::api::{ErrorKind, decode};
use warp::filters::BoxedFilter;
use warp::http::Method;
use warp::{Filter, Rejection};

use super::error::reject;

/// Every `(method, path template)` mounted in this process.
static MOUNTED: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());

/// The routes mounted so far (every one, once the server's filter is built).
pub fn mounted() -> BTreeSet<(String, String)> {
    MOUNTED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Records a route served by a filter of its own kind (the app's pages).
pub fn record(method: &Method, template: &str) {
    MOUNTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((method.as_str().to_ascii_lowercase(), template.to_string()));
}

#[derive(Debug, PartialEq)]
enum Part {
    Literal(&'static str),
    Param,
}

fn parse(template: &'static str) -> Vec<Part> {
    assert!(template.starts_with('/'), "a route template starts with '/': {template}");
    template[1..]
        .split('/')
        .map(|s| if s.starts_with('{') && s.ends_with('}') { Part::Param } else { Part::Literal(s) })
        .collect()
}

/// The path's parameters, when it matches `pattern`.
fn matches(pattern: &[Part], path: &str) -> Result<Option<Vec<String>>, Rejection> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = if path.len() > 1 { path.strip_suffix('/').unwrap_or(path) } else { path };
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() != pattern.len() {
        return Ok(None);
    }
    let mut params = Vec::new();
    for (part, seg) in pattern.iter().zip(segments) {
        match part {
            Part::Literal(l) if *l == seg => {}
            Part::Literal(_) => return Ok(None),
            Part::Param if seg.is_empty() => return Ok(None),
            Part::Param => params.push(decode(seg).ok_or_else(|| {
                reject(ErrorKind::BadRequest, format!("{seg:?} is not a valid path segment"))
            })?),
        }
    }
    Ok(Some(params))
}

fn method_filter(method: &Method) -> BoxedFilter<()> {
    match *method {
        Method::GET => warp::get().boxed(),
        Method::POST => warp::post().boxed(),
        Method::PUT => warp::put().boxed(),
        Method::DELETE => warp::delete().boxed(),
        Method::HEAD => warp::head().boxed(),
        ref other => panic!("no route uses {other}"),
    }
}

/// The filter of `methods` on `template`, extracting its parameters in order.
fn route(methods: &[Method], template: &'static str) -> BoxedFilter<(Vec<String>,)> {
    let pattern = Arc::new(parse(template));
    let mut methods = methods.iter();
    let first = methods.next().expect("a route has a method");
    record(first, template);
    let mut allowed = method_filter(first);
    for m in methods {
        record(m, template);
        allowed = allowed.or(method_filter(m)).unify().boxed();
    }
    warp::path::full()
        .and_then(move |full: warp::path::FullPath| {
            let pattern = pattern.clone();
            async move {
                match matches(&pattern, full.as_str())? {
                    Some(params) => Ok(params),
                    None => Err(warp::reject::not_found()),
                }
            }
        })
        .and(allowed)
        .boxed()
}

fn params(template: &'static str) -> usize {
    parse(template).iter().filter(|p| **p == Part::Param).count()
}

/// A route without parameters.
pub fn at(method: Method, template: &'static str) -> BoxedFilter<()> {
    assert_eq!(params(template), 0, "{template}");
    route(&[method], template).map(|_| ()).untuple_one().boxed()
}

/// A route with one parameter.
pub fn at1(methods: &[Method], template: &'static str) -> BoxedFilter<(String,)> {
    assert_eq!(params(template), 1, "{template}");
    route(methods, template).map(|mut p: Vec<String>| p.remove(0)).boxed()
}

/// A route with two parameters.
pub fn at2(method: Method, template: &'static str) -> BoxedFilter<(String, String)> {
    assert_eq!(params(template), 2, "{template}");
    route(&[method], template)
        .map(|p: Vec<String>| {
            let mut p = p.into_iter();
            (p.next().unwrap_or_default(), p.next().unwrap_or_default())
        })
        .untuple_one()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_segments_and_decode_parameters() {
        let p = parse("/api/runs/{id}/cancel");
        assert_eq!(matches(&p, "/api/runs/r%2F1/cancel").ok().flatten(), Some(vec!["r/1".to_string()]));
        assert_eq!(matches(&p, "/api/runs/r1/cancel/").ok().flatten(), Some(vec!["r1".to_string()]));
        assert_eq!(matches(&p, "/api/runs//cancel").ok().flatten(), None);
        assert_eq!(matches(&p, "/api/runs/r1").ok().flatten(), None);
        assert_eq!(matches(&p, "/api/runs/r1/cancelx").ok().flatten(), None);
        assert!(matches(&p, "/api/runs/%ZZ/cancel").is_err());
        assert_eq!(matches(&parse("/"), "/").ok().flatten(), Some(vec![]));
    }
}
