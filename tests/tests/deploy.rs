//! The deployment files under `deploy/`: the Kubernetes manifests validate
//! against the Kubernetes schemas (`kubernetes-validate`, installed by
//! `.ci/run`), what they name exists (the probes answer, the scaled
//! Deployment and the Secret's keys are there; the metrics they use are
//! checked in `operations.rs`), and the systemd units pass
//! `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ensemble_tests::{ensemble_bin, python_tool as tool, repo_root, start_server};

fn deploy() -> PathBuf {
    repo_root().join("deploy")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy().join("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

#[test]
fn the_kubernetes_manifests_validate_against_the_schemas() {
    let out = Command::new(tool("kubernetes-validate"))
        .arg("--strict")
        .args(manifests())
        .output()
        .expect("kubernetes-validate runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    for line in text.lines() {
        let known = line.starts_with("INFO ") && line.contains(" passed for resource ");
        // KEDA's CRD is not among the Kubernetes schemas: checked below.
        let keda = line.contains("Couldn't find schema for kind ScaledObject with api version keda.sh/");
        assert!(known || keda, "{line}\n{text}");
    }
    assert!(text.matches(" passed for resource ").count() >= 4, "{text}");
}

/// The `name:` values of `file` (metadata and references alike).
fn names(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name: ").map(|n| n.trim().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_manifests_name_exists() {
    let dir = deploy().join("kubernetes");
    let all: String = manifests().iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    // The autoscaler scales the runners' Deployment.
    let keda = std::fs::read_to_string(dir.join("keda-scaledobject.yaml")).unwrap();
    let target = keda
        .split("scaleTargetRef:")
        .nth(1)
        .and_then(|rest| rest.lines().find_map(|l| l.trim().strip_prefix("name: ")))
        .expect("a scaleTargetRef with a name")
        .to_string();
    assert!(names(&dir.join("runner-deployment.yaml")).contains(&target), "{target}");
    // The Secret holds every key the pods read from it.
    let secret = std::fs::read_to_string(dir.join("secret.yaml")).unwrap();
    for key in ["ENSEMBLE_TOKEN", "ENSEMBLE_JOIN_TOKEN"] {
        assert!(secret.contains(&format!("{key}: ")), "{key}");
    }

    // The probes answer.
    let tmp = tempfile::tempdir().unwrap();
    let server = start_server(tmp.path(), &tmp.path().join("data"), "deploy-token", &[]);
    let client = server.client();
    for path in ["/healthz", "/readyz"] {
        assert!(all.contains(&format!("path: {path}")), "{path} is probed");
        let resp = client.with_token(None).request(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    // (The metrics they use are checked against a busy server's /metrics
    // in tests/operations.rs.)
}

#[test]
fn the_systemd_units_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for unit in ["ensemble-serve.service", "ensemble-runner.service"] {
        let text = std::fs::read_to_string(deploy().join("systemd").join(unit)).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/ensemble "), "{unit}");
        // Where the binary is here, instead of where it is installed.
        let here = text.replace("/usr/local/bin/ensemble", &ensemble_bin().display().to_string());
        let path = tmp.path().join(unit);
        std::fs::write(&path, here).unwrap();
        units.push(path);
    }
    let out = Command::new(tool("systemd-analyze")).arg("verify").args(&units).output().expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}
