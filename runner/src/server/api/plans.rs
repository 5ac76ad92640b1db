//! `/api/plans`: stored plans — create, read, replace, delete, and TOML
//! import and export. Every plan is validated by `Plan::problems()`; a bad
//! one is refused with each problem at its field path.

use std::sync::Arc;

use bytes::Bytes;
use ensemble_protocol::Plan;
use ensemble_protocol::api::ApiError;
use ensemble_protocol::api::PlansQuery;
use warp::filters::BoxedFilter;
use warp::http::header::CONTENT_TYPE;
use warp::{Filter, Rejection, Reply};

use super::{BodyRoom, MAX_PLAN_BYTES, authorized, body, text};
use crate::coordinator::Coordinator;
use crate::server::error::{created, fail, json};
use crate::server::guard::{JSON, TOML, content_type};
use crate::server::route::{at, at1};
use warp::http::Method;

fn parse_json(body: &Bytes) -> Result<Plan, Rejection> {
    Plan::from_json(&text(body, "plan")?).map_err(|e| fail(ApiError::from(e)))
}

pub fn routes(core: &Arc<Coordinator>) -> BoxedFilter<(warp::reply::Response,)> {
    let list = at(Method::GET, "/api/plans").and(authorized(core)).and(warp::query::<PlansQuery>()).and_then(
        |core: Arc<Coordinator>, query: PlansQuery| async move {
            core.plans(query).await.map(|p| json(&p)).map_err(fail)
        },
    );
    let create = at(Method::POST, "/api/plans")
        .and(authorized(core))
        .and(content_type(JSON))
        .and(body(MAX_PLAN_BYTES, &super::PLANS))
        .and_then(|core: Arc<Coordinator>, body: Bytes, room: BodyRoom| async move {
            let _held = room;
            core.save_plan(None, parse_json(&body)?).await.map(created).map_err(fail)
        });
    let import = at(Method::POST, "/api/plans/import")
        .and(authorized(core))
        .and(content_type(TOML))
        .and(body(MAX_PLAN_BYTES, &super::PLANS))
        .and_then(|core: Arc<Coordinator>, body: Bytes, room: BodyRoom| async move {
            let _held = room;
            let plan = Plan::from_toml(&text(&body, "TOML")?).map_err(|e| fail(ApiError::from(e)))?;
            core.save_plan(None, plan).await.map(created).map_err(fail)
        });
    let get =
        at1(&[Method::GET], "/api/plans/{id}").and(authorized(core)).and_then(
            |id: String, core: Arc<Coordinator>| async move {
                core.plan(&id).await.map(|p| json(&p)).map_err(fail)
            },
        );
    let export = at1(&[Method::GET], "/api/plans/{id}/toml").and(authorized(core)).and_then(
        |id: String, core: Arc<Coordinator>| async move {
            let toml = core.plan_toml(&id).await.map_err(fail)?;
            Ok::<_, Rejection>(
                warp::reply::with_header(toml, CONTENT_TYPE, "application/toml").into_response(),
            )
        },
    );
    let put = at1(&[Method::PUT], "/api/plans/{id}")
        .and(authorized(core))
        .and(content_type(JSON))
        .and(body(MAX_PLAN_BYTES, &super::PLANS))
        .and_then(|id: String, core: Arc<Coordinator>, body: Bytes, room: BodyRoom| async move {
            let _held = room;
            core.save_plan(Some(id), parse_json(&body)?).await.map(created).map_err(fail)
        });
    let delete = at1(&[Method::DELETE], "/api/plans/{id}").and(authorized(core)).and_then(
        |id: String, core: Arc<Coordinator>| async move {
            core.delete_plan(&id).await.map(|d| json(&d)).map_err(fail)
        },
    );
    list.or(create)
        .unify()
        .or(import)
        .unify()
        .or(export)
        .unify()
        .or(get)
        .unify()
        .or(put)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}
