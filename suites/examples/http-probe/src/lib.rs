//! HTTP from a suite, over `wasi:http` (the `wstd` client): requests to a
//! plan's service reached through `service:NAME`, and to an address no grant
//! covers, which the runner refuses for that request alone.
//!
//! | test | what it does | params |
//! |---|---|---|
//! | `get_ok` | `GET` of `path` on the service answers 2xx (and contains `expect`, if set) | `service` (default `web`), `path` (default `/`), `expect` |
//! | `outside_is_denied` | passes iff `GET` of `outside` fails | `outside`, default `http://127.0.0.1:9/` |
//! | `get_by_name` | `GET` of `path` on the service's port at host name `name` answers 2xx | `service`, `path`, `name` |
//! | `connect_by_name` | a TCP connection to `name` at the service's port (the suite looks the name up) | `service`, `name` |
//! | `lookup_is_denied` | passes iff looking up `denied_name` fails | `denied_name`, default `not-granted.test` |
//! | `gets` | `gets` GETs of `path` on the service, one after another, each answering 2xx (the benchmark of HTTP from a sandbox) | `service`, `path`, `gets` (default 100) |

use ensemble_sdk::prelude::*;
use wstd::http::{Body, Client, Request};

const SERVICE: Param<String> = Param::new("service", "the plan's service to ask").default("web");
const PATH: Param<String> = Param::new("path", "the path get_ok asks for").default("/");
const EXPECT: Param<String> = Param::new("expect", "text the answer of get_ok must contain");
const NAME: Param<String> =
    Param::new("name", "a host name the plan grants, for the tests by name").default("web.test");
const DENIED_NAME: Param<String> =
    Param::new("denied_name", "a host name the plan does not grant").default("not-granted.test");
const GETS: Param<u32> = Param::new("gets", "how many GETs the test gets makes").default("100");
const OUTSIDE: Param<String> = Param::new("outside", "a URL the plan does not grant, for outside_is_denied")
    .default("http://127.0.0.1:9/");

/// `GET url`: the status and the body as text.
fn get(url: &str) -> Result<(u16, String), String> {
    wstd::runtime::block_on(async {
        let request =
            Request::get(url).body(Body::empty()).map_err(|e| format!("building GET {url}: {e}"))?;
        let response = Client::new().send(request).await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let text = body.str_contents().await.map_err(|e| format!("reading the answer of {url}: {e}"))?;
        Ok((status, text.to_string()))
    })
}

fn get_ok() -> TestResult {
    let at = service(&SERVICE.get()?)?;
    let url = at.url(&PATH.get()?);
    let (status, body) = get(&url).map_err(fail)?;
    check!((200..300).contains(&status), "GET {url} answered {status}");
    if let Some(expect) = EXPECT.get_opt()? {
        check!(body.contains(&expect), "the answer of {url} does not contain {expect:?}: {body:.200}");
    }
    println!("GET {url}: {status}, {} bytes", body.len());
    Ok(())
}

fn outside_is_denied() -> TestResult {
    let url = OUTSIDE.get()?;
    match get(&url) {
        Ok((status, _)) => Err(fail(format!("GET {url} answered {status}, but the plan does not grant it"))),
        Err(e) => {
            println!("refused as it should be: {e}");
            Ok(())
        }
    }
}

fn get_by_name() -> TestResult {
    let at = service(&SERVICE.get()?)?;
    let url = format!("http://{}:{}{}", NAME.get()?, at.port, PATH.get()?);
    let (status, body) = get(&url).map_err(fail)?;
    check!((200..300).contains(&status), "GET {url} answered {status}");
    println!("GET {url}: {status}, {} bytes", body.len());
    Ok(())
}

fn connect_by_name() -> TestResult {
    let at = service(&SERVICE.get()?)?;
    let name = NAME.get()?;
    let stream = std::net::TcpStream::connect((name.as_str(), at.port))
        .map_err(|e| fail(format!("connecting to {name}:{}: {e}", at.port)))?;
    println!("connected to {name}:{} at {}", at.port, stream.peer_addr().map_err(|e| fail(e.to_string()))?);
    Ok(())
}

fn lookup_is_denied() -> TestResult {
    use std::net::ToSocketAddrs;
    let name = DENIED_NAME.get()?;
    match (name.as_str(), 80).to_socket_addrs() {
        Ok(found) => Err(fail(format!(
            "{name} resolved to {:?}, but the plan does not grant it",
            found.collect::<Vec<_>>()
        ))),
        Err(e) => {
            println!("the lookup of {name} was refused as it should be: {e}");
            Ok(())
        }
    }
}

fn gets() -> TestResult {
    let at = service(&SERVICE.get()?)?;
    let url = at.url(&PATH.get()?);
    for i in 0..GETS.get()? {
        let (status, _) = get(&url).map_err(|e| fail(format!("request {}: {e}", i + 1)))?;
        check!((200..300).contains(&status), "GET {url} (request {}) answered {status}", i + 1);
    }
    Ok(())
}

ensemble_sdk::suite! {
    params(SERVICE, PATH, EXPECT, NAME, DENIED_NAME, OUTSIDE, GETS),
    get_ok,
    outside_is_denied,
    get_by_name,
    connect_by_name,
    lookup_is_denied,
    gets,
}
