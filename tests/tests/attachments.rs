//! Attachments: a file a test attaches reaches every reader byte for byte —
//! the API (and the run view's download of it), the JUnit file's
//! `[[ATTACHMENT|path]]` and the HTML report — from a runner on another
//! process over the real machine link, and from a standalone run; what the
//! runner must refuse is refused with a reason, and nothing of it is stored.

use base64::Engine;
use ensemble_protocol::EventKind;
use ensemble_protocol::api::routes;
use ensemble_tests::browser::Browser;
use ensemble_tests::{ensemble_async, start_runner, start_server};
use sha2::{Digest, Sha256};

const TOKEN: &str = "attachments-token";

/// `blob.bin` as the `attachments` suite makes it: byte `i` is
/// `(i % 251) ^ (i >> 8)`.
fn blob() -> Vec<u8> {
    (0..300_000usize).map(|i| ((i % 251) ^ (i >> 8)) as u8).collect()
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The plan that runs the suite on the machine `machine`.
fn plan(dir: &std::path::Path, machine: &str) -> std::path::PathBuf {
    let path = dir.join("attachments.toml");
    let pin = format!("machine = {machine:?}\n");
    std::fs::write(
        &path,
        format!(
            "name = \"attachments\"\n[[profiles]]\nname = \"box\"\n{pin}[[entries]]\nsuite = {:?}\nprofile = \"box\"\nrole = \"files\"\n",
            ensemble_artifacts::ATTACHMENTS
        ),
    )
    .unwrap();
    path
}

/// The files the JUnit report lists for test `test`, read back.
fn junit_attachments(xml: &std::path::Path, test: &str) -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(xml).unwrap();
    let case = text
        .split("<testcase ")
        .find(|c| c.starts_with(&format!("name=\"{test}\"")))
        .unwrap_or_else(|| panic!("no testcase {test} in {text}"));
    let case = case.split("</testcase>").next().unwrap();
    case.split("[[ATTACHMENT|")
        .skip(1)
        .map(|rest| {
            let path = rest.split("]]").next().unwrap();
            let name = std::path::Path::new(path).file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}")))
        })
        .collect()
}

/// The `href` of the HTML report's link to `name`, after opening `test`.
async fn html_link(b: &Browser, report: &std::path::Path, test: &str, name: &str) -> anyhow::Result<Vec<u8>> {
    b.goto(&format!("file://{}", report.display())).await?;
    b.select_by_value("#show", "all").await?;
    b.click(&format!("tr[data-test='{test}']")).await?;
    let link = b.wait_css(&format!("#detail a[download='{name}']")).await?;
    let href = link.attr("href").await?.unwrap_or_default();
    let data = href
        .strip_prefix("data:application/octet-stream;base64,")
        .ok_or_else(|| anyhow::anyhow!("not a data link: {}", &href[..href.len().min(80)]))?;
    Ok(base64::engine::general_purpose::STANDARD.decode(data)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_round_trips_byte_for_byte_through_the_api_junit_and_the_html_report() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let _runner = start_runner(dir.path(), &server, "far", &[], None);
    server.wait_online(2).await;

    // On the joined runner, over its WebSocket, as a CI job would run it.
    let (xml, html) = (dir.path().join("remote.xml"), dir.path().join("remote.html"));
    let out = ensemble_async(
        &[
            "run",
            plan(dir.path(), "far").to_str().unwrap(),
            "--server",
            &server.url,
            "--token",
            TOKEN,
            "--junit",
            xml.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
        &cache,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "fails_with_log fails: {}", text(&out));
    assert!(
        text(&out).contains("attached: server.log (47B)"),
        "the failure names its attachment: {}",
        text(&out)
    );

    let client = server.client();
    let run = client.runs().await.unwrap().remove(0).id;
    let events = server.events(&run).await;
    // The suite's tests run at once: their events come in any order.
    let mut attached: Vec<(String, String, String, u64)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Attachment { test, name, sha256, size, data, .. } => {
                assert!(data.is_none(), "watchers get no bytes");
                Some((test.clone(), name.clone(), sha256.clone(), *size))
            }
            _ => None,
        })
        .collect();
    attached.sort();
    let names: Vec<(&str, &str)> = attached.iter().map(|(t, n, ..)| (t.as_str(), n.as_str())).collect();
    assert_eq!(
        names,
        [
            ("binary", "blob.bin"),
            ("binary", "notes.txt"),
            ("fails_with_log", "server.log"),
            ("refused", "once.txt")
        ],
        "what the runner refused was never sent"
    );
    let mut outcomes: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TestFinished { test, outcome, .. } => Some(format!("{test} {outcome}")),
            _ => None,
        })
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["binary passed", "fails_with_log failed", "refused passed"]);

    // The API.
    let expected = blob();
    let blob_sha = hex::encode(Sha256::digest(&expected));
    assert_eq!(attached[0].2, blob_sha);
    assert_eq!(attached[0].3, expected.len() as u64);
    assert_eq!(client.attachment(&run, &blob_sha).await.unwrap(), expected, "API");
    let resp =
        client.request(reqwest::Method::GET, &routes::run_attachment(&run, &blob_sha)).send().await.unwrap();
    let header = |h: &str| resp.headers().get(h).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert_eq!(header("content-type"), "application/octet-stream");
    assert!(header("content-disposition").starts_with("attachment; filename=\"blob.bin\""));
    assert_eq!(header("x-content-type-options"), "nosniff");
    let err = client.attachment(&run, &"0".repeat(64)).await.unwrap_err().to_string();
    assert!(err.contains("has no attachment with sha256"), "{err}");
    let err = client.attachment("no-such-run", &blob_sha).await.unwrap_err().to_string();
    assert!(err.contains("no run"), "{err}");

    // The JUnit file.
    let files = junit_attachments(&xml, "binary");
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0], ("blob.bin".to_string(), expected.clone()), "JUnit");
    assert_eq!(files[1].1, "attached by the attachments suite ✓\n".as_bytes());
    assert_eq!(junit_attachments(&xml, "fails_with_log")[0].0, "server.log");

    // The stored run's report, and the HTML report of the run, and the run
    // view's link.
    let stored = dir.path().join("stored.html");
    let out = ensemble_async(
        &["report", &run, "--server", &server.url, "--token", TOKEN, "--html", stored.to_str().unwrap()],
        &cache,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        anyhow::ensure!(html_link(b, &html, "binary", "blob.bin").await? == expected, "HTML report");
        anyhow::ensure!(
            html_link(b, &stored, "binary", "blob.bin").await? == expected,
            "stored run's report"
        );
        let log = html_link(b, &html, "fails_with_log", "server.log").await?;
        anyhow::ensure!(log.starts_with(b"GET /health 200\n"), "{}", String::from_utf8_lossy(&log));

        b.goto(&format!("{}/runs/{run}?token={TOKEN}", server.url)).await?;
        b.wait_text("#run-state", "failed").await?;
        b.fill("#test-filter", "binary").await?;
        b.click("tr[data-test='binary'] button").await?;
        let link = b.wait_css("#attachments a[download='blob.bin']").await?;
        let href = link.attr("href").await?.unwrap_or_default();
        // The link is the bare API path (it carries no token); a click
        // fetches the file with the token in a header and saves it.
        link.click().await?;
        let saved = b.downloaded("blob.bin").await?;
        anyhow::Ok((href, saved))
    };
    let (href, saved) = match steps.await {
        Ok(got) => got,
        Err(e) => panic!("{e:#}\n{}", browser.diagnostics().await),
    };
    browser.close().await.unwrap();
    assert_eq!(href, routes::run_attachment(&run, &blob_sha), "no token in the link");
    assert_eq!(saved, expected, "the run view's download");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plan_run_standalone_writes_its_attachments_beside_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (xml, json) = (dir.path().join("junit.xml"), dir.path().join("events.jsonl"));
    let out = ensemble_async(
        &[
            "run",
            "suites/plans/attachments.toml",
            "--junit",
            xml.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        &cache,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let files = junit_attachments(&xml, "binary");
    assert_eq!(files[0], ("blob.bin".to_string(), blob()));
    assert!(
        dir.path().join("junit-attachments").is_dir(),
        "beside the XML, named after it: {:?}",
        std::fs::read_dir(dir.path()).unwrap().collect::<Vec<_>>()
    );

    // The JSON lines carry the bytes, so the logs of CI jobs merge into
    // reports that have them.
    let merged = dir.path().join("merged.xml");
    let out = ensemble_async(
        &["report", "--merge", json.to_str().unwrap(), "--junit", merged.to_str().unwrap()],
        &cache,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(junit_attachments(&merged, "binary")[0], ("blob.bin".to_string(), blob()));
}
