//! `/api/tests`: tests across runs — one test's history
//! (`/api/tests/history?plan=&role=&test=`) and a plan's flaky tests
//! (`/api/tests/flaky?plan=`).

use std::sync::Arc;

use ensemble_protocol::api::HistoryQuery;
use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

use super::authorized;
use crate::coordinator::Coordinator;
use crate::server::error::{fail, json};
use crate::server::route::at;
use warp::http::Method;

pub fn routes(core: &Arc<Coordinator>) -> BoxedFilter<(warp::reply::Response,)> {
    let history = at(Method::GET, "/api/tests/history")
        .and(authorized(core))
        .and(warp::query::<HistoryQuery>())
        .and_then(|core: Arc<Coordinator>, query: HistoryQuery| async move {
            core.test_history(query).await.map(|h| json(&h)).map_err(fail)
        });
    let flaky = at(Method::GET, "/api/tests/flaky")
        .and(authorized(core))
        .and(warp::query::<HistoryQuery>())
        .and_then(|core: Arc<Coordinator>, query: HistoryQuery| async move {
            core.flaky_tests(query).await.map(|h| json(&h)).map_err(fail)
        });
    history.or(flaky).unify().map(Reply::into_response).boxed()
}
