//! TLS and mTLS on the real binary: certificates made in the test with rcgen.

mod common;

use common::{default_policy, Server, BIN};
use portcullis_server::pb::gate_client::GateClient;
use portcullis_server::pb::CheckRequest;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A CA that signs server and client certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// (certificate PEM, key PEM) for `usage`.
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names).unwrap();
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The server's files: CA, certificate and key written to `dir`.
struct Files {
    ca: Ca,
    ca_pem: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn files(dir: &Path) -> Files {
    let ca = Ca::new("portcullis test CA");
    let (cert, key) = ca.issue(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let f = Files {
        ca_pem: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        ca,
    };
    std::fs::write(&f.ca_pem, f.ca.pem()).unwrap();
    std::fs::write(&f.cert, cert).unwrap();
    std::fs::write(&f.key, key).unwrap();
    f
}

fn https(s: &Server, path: &str) -> String {
    format!("{}{path}", s.http.replace("http://", "https://"))
}

fn client(ca_pem: &str, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn grpc_check(
    s: &Server,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<String, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let url = s.grpc.replace("http://", "https://");
    let channel = Channel::from_shared(url)
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let d = GateClient::new(channel)
        .check(CheckRequest {
            tenant: "acme".into(),
            user: "alice".into(),
            ip: "192.0.2.1".into(),
            pw: None,
            app: None,
        })
        .await
        .map_err(|e| format!("call: {e}"))?;
    Ok(d.into_inner().decision)
}

fn args(f: &Files, mutual: bool) -> Vec<String> {
    let mut a = vec![
        "--tls-cert".to_string(),
        f.cert.display().to_string(),
        "--tls-key".to_string(),
        f.key.display().to_string(),
    ];
    if mutual {
        a.push("--client-ca".into());
        a.push(f.ca_pem.display().to_string());
    }
    a
}

fn start(dir: &Path, args: &[String]) -> Server {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&dir.join("data"), &default_policy(), &a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_and_grpc_over_tls_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let s = start(dir.path(), &args(&f, false));
    let c = client(&f.ca.pem(), None);
    let r = c.get(https(&s, "/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(https(&s, "/v1/check"))
        .json(&serde_json::json!({"tenant": "acme", "user": "alice", "ip": "192.0.2.1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: serde_json::Value = r.json().await.unwrap();
    assert_eq!(d["decision"], "forward");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = common::client().get(s.url("/healthz")).send().await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // A client that does not trust the CA refuses the server.
    let other = Ca::new("another CA");
    let untrusting = client(&other.pem(), None);
    assert!(untrusting.get(https(&s, "/healthz")).send().await.is_err());
    assert_eq!(grpc_check(&s, &f.ca.pem(), None).await.unwrap(), "forward");
    assert!(s.stderr.text().contains("tls=true"), "{}", s.stderr.text());
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let s = start(dir.path(), &args(&f, true));
    let broker = f.ca.issue(&["broker"], ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = Ca::new("another CA").issue(&["broker"], ExtendedKeyUsagePurpose::ClientAuth);

    // With a certificate from the client CA: HTTPS and gRPC work.
    let c = client(&f.ca.pem(), Some(&broker));
    let r = c.get(https(&s, "/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        grpc_check(&s, &f.ca.pem(), Some(&broker)).await.unwrap(),
        "forward"
    );

    // Without a certificate, or with one from another CA: refused.
    for (what, id) in [("no certificate", None), ("another CA", Some(&stranger))] {
        let r = client(&f.ca.pem(), id)
            .get(https(&s, "/healthz"))
            .send()
            .await;
        assert!(r.is_err(), "HTTPS with {what} answered: {r:?}");
        let g = grpc_check(&s, &f.ca.pem(), id).await;
        assert!(g.is_err(), "gRPC with {what} answered: {g:?}");
    }
    assert!(s.stderr.text().contains("mtls=true"));
    s.terminate();
}

/// Runs `serve` with `args` and returns (exit success, stderr).
fn serve_fails(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(BIN)
        .arg("serve")
        .arg("--policy")
        .arg(default_policy())
        .arg("--data")
        .arg(dir.join("data"))
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_tls_flags_stop_the_service_with_an_error_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate at all\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let cert = f.cert.to_str().unwrap();
    let key = f.key.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-cert", cert], "--tls-key"),
        (vec!["--tls-key", key], "--tls-cert"),
        (vec!["--client-ca", cert], "--client-ca"),
        (
            vec!["--tls-cert", garbage.to_str().unwrap(), "--tls-key", key],
            "--tls-cert",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", garbage.to_str().unwrap()],
            "--tls-key",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", missing.to_str().unwrap()],
            "--tls-key",
        ),
        (
            vec![
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--client-ca",
                garbage.to_str().unwrap(),
            ],
            "--client-ca",
        ),
    ];
    for (args, flag) in cases {
        let (ok, stderr) = serve_fails(dir.path(), &args);
        assert!(!ok, "{args:?} started");
        let last = stderr.lines().last().unwrap_or_default().to_string();
        assert!(
            last.starts_with("error:") && last.contains(flag),
            "{args:?}: expected an error naming {flag}, got:\n{stderr}"
        );
        assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    }
    // A key that does not belong to the certificate is refused too.
    let (_, other_key) =
        f.ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, other_key).unwrap();
    let (ok, stderr) = serve_fails(
        dir.path(),
        &["--tls-cert", cert, "--tls-key", wrong.to_str().unwrap()],
    );
    assert!(!ok && stderr.contains("--tls-key"), "{stderr}");
}
