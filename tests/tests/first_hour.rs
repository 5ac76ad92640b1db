//! The first hour of a newcomer: the mistakes people make first each get a
//! message that says what to do, and the exit code the book documents (docs/command-line.md).
//! Real processes; no server is needed for most of them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use ensemble_tests::{ensemble, ensemble_bin, start_runner, start_server};

const TOKEN: &str = "first-hour-token";

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A loopback port nobody listens on (bound, then let go).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn server_addresses_without_a_scheme_or_with_a_path_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let plan = "suites/plans/demo.toml";
    for (args, says) in [
        (vec!["run", plan, "--server", "127.0.0.1:7981"], "--server: \"127.0.0.1:7981\" is not a server URL"),
        (
            vec!["run", plan, "--server", "http://127.0.0.1:7981/api"],
            "give the server's base URL, http://127.0.0.1:7981",
        ),
        (
            vec!["runner", "--join", "localhost:7878", "--token", "t"],
            "--join: \"localhost:7878\" is not a server URL",
        ),
        (vec!["runner", "--join", "http://127.0.0.1:7878/x", "--token", "t"], "give the server's base URL"),
    ] {
        let out = ensemble(&args, &cache);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {shown}");
        assert!(shown.contains(says), "{args:?}: {shown}");
        assert!(shown.contains("http://HOST:PORT") || shown.contains("base URL"), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_and_a_wrong_scheme_are_the_callers_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let cache = dir.path().join("cache");
    let plan = "suites/plans/demo.toml";
    let run = |args: Vec<String>| {
        let cache = cache.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ensemble_tests::ensemble_async(&args, &cache).await
        }
    };
    let out = run(vec![
        "run".into(),
        plan.into(),
        "--server".into(),
        server.url.clone(),
        "--token".into(),
        "wrong".into(),
    ])
    .await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("wrong token (pass it with --token or ENSEMBLE_TOKEN)"), "{shown}");

    // TLS to a plain server: the scheme is named as the mistake.
    let https = server.url.replace("http://", "https://");
    let out = run(vec![
        "run".into(),
        plan.into(),
        "--server".into(),
        https.clone(),
        "--token".into(),
        TOKEN.into(),
    ])
    .await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("use http:// instead of https://"), "{shown}");
    // A runner stops at once instead of retrying for ever.
    let out =
        run(vec!["runner".into(), "--join".into(), https, "--token".into(), server.join_token.clone()]).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("use http:// instead of https://"), "{shown}");
}

/// The first line a runner joining `url` prints about why it waits (then
/// it is stopped).
fn why_a_runner_waits(url: &str, name: &str, cache: &std::path::Path) -> String {
    why_a_runner_waits_with(url, "t", name, cache)
}

/// [`why_a_runner_waits`] with token `token`; or why it stopped.
fn why_a_runner_waits_with(url: &str, token: &str, name: &str, cache: &std::path::Path) -> String {
    let mut runner = ensemble_tests::Owned(
        Command::new(ensemble_bin())
            .args(["runner", "--join", url, "--token", token, "--name", name])
            .env("ENSEMBLE_CACHE_DIR", cache)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let line = BufReader::new(runner.stderr.take().unwrap())
        .lines()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with("ensemble runner:") || l.starts_with("error:"))
        .expect("the runner says why it waits");
    let _ = runner.kill();
    let _ = runner.wait();
    line
}

#[test]
fn a_runner_that_never_connected_says_it_cannot_reach_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", closed_port());
    let line = why_a_runner_waits(&url, "lonely", &dir.path().join("cache"));
    assert!(line.starts_with(&format!("ensemble runner: cannot reach {url}:")), "{line}");
    assert!(line.contains("nothing listens at that address"), "{line}");
    assert!(!line.contains("lost"), "it never had a connection to lose: {line}");
}

#[test]
fn a_busy_port_names_the_flag_that_picks_another() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let out = ensemble(
        &["serve", "--listen", &addr, "--data-dir", data.to_str().unwrap(), "--token", TOKEN],
        &dir.path().join("cache"),
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains(&format!("cannot listen on {addr}")), "{shown}");
    assert!(shown.contains("pick another address with --listen HOST:PORT"), "{shown}");
    assert!(shown.contains("cargo run -p ensemble-runner -- serve --listen"), "{shown}");
}

#[test]
fn help_does_not_show_unset_variables_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["run", "serve", "runner", "suite inspect"] {
        let mut args: Vec<&str> = cmd.split(' ').collect();
        args.push("--help");
        let out = Command::new(ensemble_bin()).args(&args).env_remove("ENSEMBLE_CACHE_DIR").output().unwrap();
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(0), "{shown}");
        assert!(!shown.contains("=]"), "{cmd} --help shows an empty variable: {shown}");
    }
    drop(dir);
}

#[test]
fn the_plans_barrier_timeout_bounds_a_suites_own_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // bench-parties waits up to 120 s for `parties`; it is alone here.
    let plan = dir.path().join("alone.toml");
    std::fs::write(
        &plan,
        format!(
            "name = \"alone\"\n[settings]\nbarrier_timeout = \"1s\"\n[[profiles]]\nname = \"any\"\n\
             [[entries]]\nsuite = {:?}\nprofile = \"any\"\nparams = {{ parties = 2, rounds = 1 }}\n",
            ensemble_artifacts::BENCH_PARTIES
        ),
    )
    .unwrap();
    let out = ensemble(&["run", plan.to_str().unwrap()], &dir.path().join("cache"));
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("timed out after 1000 ms (the plan's barrier_timeout, 1000 ms, bounds the 120000 ms the suite asked for)"),
        "{shown}"
    );
}

/// A loopback HTTP server that is not Ensemble: every request gets `answer`.
fn impostor(answer: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // Read the request head, answer, close.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    url
}

#[test]
fn something_other_than_ensemble_answering_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let web_page = impostor(
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n\
         <html><head><title>Welcome to nginx!</title></head></html>\n\n",
    );
    let old_server =
        impostor("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from an old server\n");
    for (url, says) in [(&web_page, "HTTP 404, text/html saying \"Welcome to nginx!\""), (&old_server, "")] {
        for args in [
            vec!["run", "suites/plans/demo.toml", "--server", url, "--token", "t"],
            vec!["runner", "--join", url, "--token", "t"],
        ] {
            let out = ensemble(&args, &cache);
            let shown = text(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {shown}");
            assert!(shown.contains(&format!("something other than Ensemble answers at {url}")), "{shown}");
            assert!(shown.contains(says), "{args:?}: {shown}");
            assert!(shown.contains("is `ensemble serve` what listens there"), "{shown}");
            assert!(!shown.contains("<html>"), "a page is named, not dumped: {shown}");
            assert!(!shown.contains("Building suite crate"), "refused before any build: {shown}");
        }
    }
    // A proxy whose upstream is down may mend: a runner keeps trying.
    let proxy = impostor(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let line = why_a_runner_waits(&proxy, "behind-a-proxy", &cache);
    assert!(line.contains("HTTP 502"), "{line}");
    assert!(line.contains("a proxy whose upstream is down"), "{line}");
    assert!(line.ends_with("trying again"), "{line}");
}

/// Sends `signal` (`INT`, `TERM`, `HUP`) to a child and waits for it.
fn stop(child: &mut std::process::Child, signal: &str) -> std::process::ExitStatus {
    let sent = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    child.wait().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_a_runner_and_a_server_cleanly_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let mut runner = start_runner(dir.path(), &server, "stopping", &[], None);
    server.wait_online(2).await;

    let status = stop(&mut runner.child, "INT");
    let log = runner.log();
    assert!(status.success(), "{status:?}: {log}");
    assert_eq!(log.lines().last(), Some("ensemble runner: stopped"), "{log}");
    assert!(!log.contains("lost") && !log.contains("WARN"), "a stop is no failure: {log}");

    // A closing terminal (SIGHUP) stops a server as cleanly as Ctrl-C.
    let status = stop(&mut server.proc.child, "HUP");
    let log = server.proc.log();
    assert!(status.success(), "{status:?}: {log}");
    assert_eq!(log.lines().last(), Some("ensemble serve: stopped"), "{log}");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
}

#[test]
fn a_server_out_of_reach_and_an_address_without_a_port_say_so_with_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let plan = "suites/plans/demo.toml";
    // Nothing listens: the user's environment, not ensemble's failure.
    let url = format!("http://127.0.0.1:{}", closed_port());
    let out = ensemble(&["run", plan, "--server", &url], &cache);
    assert_eq!(out.status.code(), Some(ensemble_protocol::exit::UNREACHABLE), "{}", text(&out));
    assert!(text(&out).contains("nothing listens at that address"), "{}", text(&out));
    // No port: not quietly port 80.
    let out = ensemble(&["run", plan, "--server", "http://127.0.0.1"], &cache);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("\"http://127.0.0.1\" has no port: write it as http://127.0.0.1:PORT"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_given_where_the_other_goes_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let cache = dir.path().join("cache");
    // The join token to `run`.
    let out = ensemble_tests::ensemble_async(
        &["run", "suites/plans/demo.toml", "--server", &server.url, "--token", &server.join_token],
        &cache,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("that is the join token"), "{}", text(&out));
    // The API token to a runner.
    let line = why_a_runner_waits_with(&server.url, TOKEN, "mixed-up", &cache);
    assert!(line.contains("that is the API token: a runner joins with the join token"), "{line}");
}

#[test]
fn a_missing_suite_tool_is_named_as_such_not_as_an_invalid_plan() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let suite = dir.path().join("py-suite");
    let out = ensemble(&["suite", "new", suite.to_str().unwrap(), "--lang", "python"], &cache);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A PATH without the suite tools.
    let out = Command::new(ensemble_bin())
        .args(["run", suite.join("plan.toml").to_str().unwrap()])
        .env("ENSEMBLE_CACHE_DIR", &cache)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("a tool is missing to build a suite of"), "{shown}");
    assert!(shown.contains("needs `componentize-py`"), "{shown}");
    assert!(!shown.contains("invalid plan"), "{shown}");
}
