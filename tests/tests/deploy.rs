//! The deployment files under `deploy/`: the Kubernetes manifests validate
//! against the Kubernetes schemas (`kubernetes-validate`, installed by
//! `cargo xtask test`), what they name exists (the probes answer, the scaled
//! Deployment and the Secret's keys are there; the metrics they use are
//! checked in `operations.rs`), and the systemd units pass
//! `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ensemble_tests::{ci_tool as tool, ensemble_bin, repo_root, start_server};

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

/// `buildah` with its storage under `dir` (vfs: no kernel overlay needed),
/// running nothing through a container runtime (`--isolation chroot`).
fn buildah_command(dir: &Path) -> Command {
    let mut command = Command::new(tool("buildah"));
    command.arg("--root").arg(dir.join("storage")).arg("--runroot").arg(dir.join("run"));
    command.args(["--storage-driver", "vfs"]);
    command
}

fn buildah<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> std::process::Output {
    buildah_command(dir).args(args).output().expect("buildah runs")
}

fn ok(out: std::process::Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{what}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// The distroless image (deploy/stage-rootfs.sh + deploy/Containerfile.prebuilt)
/// builds here without a registry, runs `ensemble --version` as its
/// non-root user, and serves: ready, its store writable.
#[test]
fn the_image_builds_without_a_registry_and_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    let stage = Command::new("sh")
        .arg(deploy().join("stage-rootfs.sh"))
        .arg(ensemble_bin())
        .arg(&rootfs)
        .current_dir(repo_root())
        .output()
        .unwrap();
    ok(stage, "staging the root filesystem");
    let containerfile = deploy().join("Containerfile.prebuilt");
    let built = buildah(
        tmp.path(),
        &[
            "bud",
            "--isolation",
            "chroot",
            "-f",
            containerfile.to_str().unwrap(),
            "-t",
            "ensemble-ci:test",
            rootfs.to_str().unwrap(),
        ],
    );
    ok(built, "buildah bud");
    let config = ok(
        buildah(
            tmp.path(),
            &[
                "inspect",
                "--format",
                "{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}}",
                "ensemble-ci:test",
            ],
        ),
        "buildah inspect",
    );
    assert_eq!(config.trim(), "10001 [/usr/local/bin/ensemble]");
    let container = ok(buildah(tmp.path(), &["from", "ensemble-ci:test"]), "buildah from").trim().to_string();
    let in_image = |args: &[&str]| {
        let mut all =
            vec!["run", "--isolation", "chroot", container.as_str(), "--", "/usr/local/bin/ensemble"];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let version = ok(buildah(tmp.path(), &in_image(&["--version"])), "ensemble --version");
    assert_eq!(version.trim(), format!("ensemble {}", env!("CARGO_PKG_VERSION")));

    // It serves: the data directory is its user's to write.
    let args = in_image(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        "/var/lib/ensemble/data",
        "--no-local-machine",
    ]);
    let mut serve = {
        use std::os::unix::process::CommandExt;
        buildah_command(tmp.path())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let group = rustix::process::Pid::from_child(&serve);
    let url = {
        use std::io::BufRead;
        let lines = std::io::BufReader::new(serve.stdout.take().unwrap()).lines();
        let line = lines
            .map_while(Result::ok)
            .find(|l| l.contains("listening on "))
            .expect("serve prints where it listens");
        line.split("listening on ").nth(1).unwrap().trim().to_string()
    };
    let ready = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let tls = ensemble_client::tls_with_roots(rustls::RootCertStore::empty());
        let client = ensemble_client::Client::new(&url, None, tls).unwrap();
        let resp = client.request(reqwest::Method::GET, "/readyz").send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    });
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = serve.wait();
    assert_eq!(ready.0, 200, "{}", ready.1);
}
