//! `/api/suites`: the suite catalog, uploads (inspected before they are
//! stored), and suite bytes by sha256 for runners.

use std::sync::Arc;

use bytes::Bytes;
use ensemble_protocol::api::ListQuery;
use ensemble_protocol::api::UploadQuery;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::header::CONTENT_TYPE;

use super::{BodyRoom, authorized, body, machine_or_person};
use crate::coordinator::Coordinator;
use crate::server::error::{created, fail, json};
use crate::server::guard::{WASM, content_type};
use crate::server::route::{at, at1};
use warp::http::Method;

pub fn routes(core: &Arc<Coordinator>) -> BoxedFilter<(warp::reply::Response,)> {
    let max = core.config.max_suite_bytes as u64;
    let list = at(Method::GET, "/api/suites").and(authorized(core)).and(warp::query::<ListQuery>()).and_then(
        |core: Arc<Coordinator>, query: ListQuery| async move {
            core.suites(query).await.map(|s| json(&s)).map_err(fail)
        },
    );
    let upload = at(Method::POST, "/api/suites")
        .and(authorized(core))
        .and(content_type(WASM))
        .and(warp::query::<UploadQuery>())
        .and(body(max, &super::UPLOADS))
        .and_then(|core: Arc<Coordinator>, query: UploadQuery, body: Bytes, room: BodyRoom| async move {
            let _held = room;
            core.add_suite(query.name, body.to_vec()).await.map(created).map_err(fail)
        });
    let inspect = at1(&[Method::GET], "/api/suites/{sha256}/inspect").and(authorized(core)).and_then(
        |sha: String, core: Arc<Coordinator>| async move {
            core.suite(&sha).await.map(|m| json(&m)).map_err(fail)
        },
    );
    let bytes = at1(&[Method::GET, Method::HEAD], "/api/suites/{sha256}")
        .and(machine_or_person(core))
        .and_then(|sha: String, core: Arc<Coordinator>| async move {
            let path = core.suite_file(&sha).map_err(fail)?;
            let mut reply = super::file_reply(path).await?;
            reply
                .headers_mut()
                .insert(CONTENT_TYPE, warp::http::HeaderValue::from_static("application/wasm"));
            Ok::<_, warp::Rejection>(reply)
        });
    list.or(upload).unify().or(inspect).unify().or(bytes).unify().boxed()
}
