//! The API document (`/api/openapi.json`): served without a token, a valid
//! OpenAPI 3.1 document (`openapi-spec-validator`, installed by `cargo xtask test`),
//! and every operation it describes is answered by the running server (no
//! "no such endpoint", no "method not allowed"). That the server mounts no
//! route the document leaves out is the runner's unit test
//! (`server::openapi`), which sees the routes as they are mounted.

use std::process::Command;

use ensemble_tests::{ci_tool, start_server};

const TOKEN: &str = "openapi-token";

fn client(url: &str, token: Option<&str>) -> ensemble_client::Client {
    let tls = ensemble_client::tls_with_roots(rustls::RootCertStore::empty());
    ensemble_client::Client::new(url, token.map(str::to_string), tls).unwrap()
}

async fn document(url: &str) -> serde_json::Value {
    let resp = client(url, None).request(reqwest::Method::GET, "/api/openapi.json").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_api_document_is_served_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let doc = document(&server.url).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = Command::new(ci_tool("openapi-spec-validator"))
        .arg(&file)
        .output()
        .expect("openapi-spec-validator runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK"), "{text}");

    // A broken document is caught: the validator is not a rubber stamp.
    let mut broken = doc.clone();
    broken["paths"]["/api/runs/{id}"]["get"]["parameters"] = serde_json::json!([]);
    std::fs::write(&file, serde_json::to_vec_pretty(&broken).unwrap()).unwrap();
    let out = Command::new(ci_tool("openapi-spec-validator")).arg(&file).output().unwrap();
    assert!(!out.status.success(), "a path parameter without its description passed");
}

#[tokio::test]
async fn every_documented_operation_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let doc = document(&server.url).await;
    let client = client(&server.url, Some(TOKEN));
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        // Placeholders for the parameters: the route must be found, whatever
        // the item (so a 404 must be the item's, not the route's).
        let concrete = path.replace("{sha256}", &"0".repeat(64)).replace('{', "x-").replace('}', "");
        for (method, _) in item.as_object().unwrap() {
            let Ok(m) = method.to_uppercase().parse::<reqwest::Method>() else { continue };
            if !["GET", "POST", "PUT", "DELETE", "HEAD"].contains(&m.as_str()) {
                continue;
            }
            let resp = client.request(m.clone(), &concrete).send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            assert_ne!(status, 405, "{m} {path}: {body}");
            assert!(!body.contains("no such endpoint"), "{m} {path} is not mounted: {body}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} operations");
}
