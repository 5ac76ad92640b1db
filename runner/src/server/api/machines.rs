//! `/api/machines`: the machines, long-polled for a count online,
//! disconnecting one, draining one, and releasing a name from its secret. (The machines' own WebSocket is `server::join`.)

use std::sync::Arc;
use std::time::Duration;

use ensemble_protocol::api::MachinesQuery;
use warp::Filter;
use warp::filters::BoxedFilter;

use super::authorized;
use crate::coordinator::Coordinator;
use crate::server::error::{fail, json};
use crate::server::route::{at, at1};
use warp::http::Method;

/// The longest a `min_online` wait may last.
const MAX_WAIT: Duration = Duration::from_secs(120);

pub fn routes(core: &Arc<Coordinator>) -> BoxedFilter<(warp::reply::Response,)> {
    let list = at(Method::GET, "/api/machines")
        .and(warp::get())
        .and(authorized(core))
        .and(warp::query::<MachinesQuery>())
        .then(list);
    let disconnect = at1(&[Method::POST], "/api/machines/{name}/disconnect").and(authorized(core)).and_then(
        |name: String, core: Arc<Coordinator>| async move {
            core.disconnect_machine(&name).map(|r| json(&r)).map_err(fail)
        },
    );
    let drain = at1(&[Method::POST], "/api/machines/{name}/drain").and(authorized(core)).and_then(
        |name: String, core: Arc<Coordinator>| async move {
            core.drain_machine(&name).map(|r| json(&r)).map_err(fail)
        },
    );
    let undrain = at1(&[Method::POST], "/api/machines/{name}/undrain").and(authorized(core)).and_then(
        |name: String, core: Arc<Coordinator>| async move {
            core.undrain_machine(&name).map(|r| json(&r)).map_err(fail)
        },
    );
    let forget = at1(&[Method::POST], "/api/machines/{name}/forget").and(authorized(core)).and_then(
        |name: String, core: Arc<Coordinator>| async move {
            core.forget_machine(&name).await.map(|r| json(&r)).map_err(fail)
        },
    );
    list.or(disconnect).unify().or(drain).unify().or(undrain).unify().or(forget).unify().boxed()
}

async fn list(core: Arc<Coordinator>, query: MachinesQuery) -> warp::reply::Response {
    let machines = match query.min_online {
        Some(n) => {
            let wait = Duration::from_millis(query.wait_ms.unwrap_or(10_000)).min(MAX_WAIT);
            core.wait_machines(n, wait).await
        }
        None => core.machine_statuses(),
    };
    json(&machines)
}
