//! TLS end to end: `serve --tls-cert/--tls-key`, a runner joining `https://`
//! trusting a CA file, and the CLI submitting a plan over HTTPS/WSS. A runner
//! that does not trust the certificate is refused with a clear message.

use ensemble_tests::{ensemble_async, start_runner_with, start_server};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// Writes a CA and a server certificate for 127.0.0.1; returns (ca, cert, key) paths.
fn make_certs(dir: &std::path::Path) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(path("server.key"), server_key.serialize_pem()).unwrap();
    (path("ca.pem"), path("server.pem"), path("server.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_and_clients_reach_a_tls_server_trusting_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path());
    let server = start_server(
        dir.path(),
        &dir.path().join("data"),
        "tls-token",
        &["--no-local-machine", "--tls-cert", &cert, "--tls-key", &key],
    );
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);

    // Without the CA the certificate is not trusted: refused at once, exit 2.
    let mut untrusting = start_runner_with(dir.path(), &server, "untrusting", &[], None, &[]);
    let waited = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::task::spawn_blocking(move || {
            let status = untrusting.child.wait();
            (untrusting, status)
        }),
    )
    .await
    .expect("a runner that does not trust the certificate stops instead of retrying");
    let (untrusting, status) = waited.unwrap();
    let status = status.unwrap();
    assert_eq!(status.code(), Some(2), "{}", untrusting.log());
    assert!(untrusting.log().contains("pass the server's CA with --ca-file"), "{}", untrusting.log());

    // Plain HTTP to it: the scheme is named as the mistake, at once, exit 2.
    let plain = server.url.replace("https://", "http://");
    let out = ensemble_tests::ensemble_async(
        &["run", "suites/plans/demo.toml", "--server", &plain, "--token", "tls-token"],
        &dir.path().join("cache-cli"),
    )
    .await;
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("use https:// instead of http://"), "{shown}");

    let _a = start_runner_with(
        dir.path(),
        &server,
        "tls-server",
        &["tier=server"],
        None,
        &["--ca-file", ca.as_str()],
    );
    let _b = start_runner_with(
        dir.path(),
        &server,
        "tls-client",
        &["tier=client"],
        None,
        &["--ca-file", ca.as_str()],
    );
    // The test's own client trusts the CA too.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(rcgen_ca_der(&ca))).unwrap();
    let client = ensemble_tests::Client::new(
        &server.url,
        Some("tls-token".into()),
        ensemble_tests::tls_with_roots(roots),
    )
    .unwrap();
    let machines = client.wait_machines(2, std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(machines.len(), 2, "{machines:?}");

    let out = ensemble_async(
        &[
            "run",
            "suites/plans/kv-sync.toml",
            "--server",
            &server.url,
            "--token",
            "tls-token",
            "--ca-file",
            ca.as_str(),
        ],
        &dir.path().join("cache-cli"),
    )
    .await;
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{shown}\n{}", server.proc.log());
    assert!(shown.contains("PASSED: 6 test(s)"), "{shown}");
}

/// The DER bytes of the PEM certificate at `path`.
fn rcgen_ca_der(path: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path).unwrap().to_vec()
}
