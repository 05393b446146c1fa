//! No fingerprint and no admin token in any output of a full run: the real binary with debug
//! logging and an audit file is driven through checks, outcomes, a lockout, a spray, admin calls
//! with good and bad tokens, the dashboard, malformed requests carrying the secrets in wrong
//! places, `/metrics`, then SIGTERM; every byte it wrote or answered is searched.

mod common;

use common::{default_policy, Server};
use portcullis_server::pb::gate_client::GateClient;
use portcullis_server::pb::CheckRequest;
use serde_json::{json, Value};
use std::path::Path;

const ADMIN_TOKEN: &str = "adm1n-T0ken-Qx7Rz4Kp9Wv2Lm8N";
/// A distinctive prefix every fingerprint of the run starts with.
const FP_PREFIX: &str = "fpZk3Qw8";

/// A fingerprint shaped like a real one (base64, so never a valid tenant name or address).
fn fp(name: &str) -> String {
    format!("{FP_PREFIX}+{name}/Vb6Hn1Yt=")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn base64(b: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..=n {
            out.push(alphabet[((v >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The forms a secret could leak in: as sent, hex, base64 (standard and URL-safe) of its bytes.
/// Base64 is cut to whole 4-character groups of the leading part, which do not depend on what
/// follows.
fn forms(secret: &str) -> Vec<String> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = secret.as_bytes();
    let whole = &b[..b.len() / 3 * 3];
    vec![
        secret.to_string(),
        hex(b),
        hex(b).to_uppercase(),
        base64(whole, STD),
        base64(whole, URL),
    ]
}

/// Every response body of the run, kept for the search.
#[derive(Default)]
struct Bodies(Vec<String>);

impl Bodies {
    async fn keep(&mut self, what: &str, r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        let headers = format!("{:?}", r.headers());
        let text = r.text().await.unwrap();
        self.0
            .push(format!("== {what} {status}\n{headers}\n{text}"));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fingerprint_or_admin_token_appears_in_any_output_of_a_full_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let audit = dir.path().join("audit.jsonl");
    let s = Server::start_with_env(
        &data,
        &default_policy(),
        &[
            "--audit",
            audit.to_str().unwrap(),
            "--flush-interval",
            "100ms",
        ],
        &[
            ("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN),
            ("RUST_LOG", "debug"),
        ],
    );
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut bodies = Bodies::default();
    let mut fps = Vec::new();

    let mut attempt = |user: &str, ip: &str, pw: String, result: &'static str| {
        fps.push(pw.clone());
        let (user, ip) = (user.to_string(), ip.to_string());
        (user, ip, pw, result)
    };
    // The owner signs in, then six wrong passwords from elsewhere lock the account; one
    // password is then sprayed across eight accounts.
    let mut plan = vec![attempt("alice", "198.51.100.7", fp("owner"), "success")];
    for i in 0..6 {
        plan.push(attempt(
            "alice",
            "203.0.113.9",
            fp(&format!("guess{i}")),
            "wrong_password",
        ));
    }
    let spray = fp("spray");
    for i in 0..8 {
        plan.push(attempt(
            &format!("user{i}"),
            &format!("192.0.2.{}", 10 + i),
            spray.clone(),
            "wrong_password",
        ));
    }
    plan.push(attempt(
        "alice",
        "203.0.113.9",
        fp("after-lock"),
        "wrong_password",
    ));
    plan.push(attempt(
        "user9",
        "192.0.2.99",
        spray.clone(),
        "wrong_password",
    ));
    let mut decisions = Vec::new();
    for (user, ip, pw, result) in plan {
        let r = c
            .post(s.url("/v1/check"))
            .json(&json!({"tenant": "acme", "user": user, "ip": ip, "pw": pw}))
            .send()
            .await
            .unwrap();
        let (status, d) = bodies.keep("check", r).await;
        assert_eq!(status, 200, "{d}");
        if d["decision"] == "forward" {
            let r = c
                .post(s.url("/v1/outcome"))
                .json(&json!({"id": d["id"], "result": result, "pw": pw}))
                .send()
                .await
                .unwrap();
            assert_eq!(bodies.keep("outcome", r).await.0, 200);
        }
        decisions.push(d);
    }
    let reasons: Vec<&str> = decisions
        .iter()
        .filter_map(|d| d["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"account_locked"), "{decisions:?}");
    assert!(reasons.contains(&"sprayed_password"), "{decisions:?}");

    // gRPC, batches.
    let grpc_fp = fp("grpc");
    fps.push(grpc_fp.clone());
    let mut g = GateClient::connect(s.grpc.clone()).await.unwrap();
    let d = g
        .check(CheckRequest {
            tenant: "acme".into(),
            user: "bob".into(),
            ip: "192.0.2.50".into(),
            pw: Some(grpc_fp.as_bytes().to_vec()),
            app: None,
        })
        .await
        .unwrap()
        .into_inner();
    bodies.0.push(format!("{d:?}"));
    let bad_grpc = g
        .check(CheckRequest {
            tenant: grpc_fp.clone(),
            user: "bob".into(),
            ip: grpc_fp.clone(),
            pw: Some(grpc_fp.as_bytes().to_vec()),
            app: Some(ADMIN_TOKEN.into()),
        })
        .await
        .unwrap_err();
    bodies.0.push(format!("{bad_grpc:?}"));
    let batch_fp = fp("batch");
    fps.push(batch_fp.clone());
    let r = c
        .post(s.url("/v1/check/batch"))
        .json(&json!([
            {"tenant": "acme", "user": "carol", "ip": "192.0.2.60", "pw": batch_fp},
            {"tenant": batch_fp, "user": "carol", "ip": ADMIN_TOKEN, "pw": batch_fp},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(bodies.keep("check batch", r).await.0, 200);

    // Malformed requests with the secrets where an error could echo them.
    let bad_fp = fp("malformed");
    fps.push(bad_fp.clone());
    let malformed = [
        json!({"tenant": bad_fp, "user": "bob", "ip": "192.0.2.1", "pw": bad_fp}).to_string(),
        json!({"tenant": "acme", "user": "bob", "ip": bad_fp, "pw": bad_fp}).to_string(),
        json!({"tenant": "acme", "user": {"x": bad_fp}, "ip": "192.0.2.1"}).to_string(),
        json!({"tenant": "acme", "user": "bob", "ip": "192.0.2.1", "pw": [bad_fp]}).to_string(),
        json!({"tenant": "acme", "user": "bob", "ip": "192.0.2.1", "pw": 7, "app": ADMIN_TOKEN})
            .to_string(),
        format!("{{\"tenant\": \"acme\", \"pw\": \"{bad_fp}\", {ADMIN_TOKEN}"),
        format!("{bad_fp} {ADMIN_TOKEN}"),
    ];
    for body in &malformed {
        for path in ["/v1/check", "/v1/validate", "/v1/check/batch"] {
            let r = c
                .post(s.url(path))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let (status, e) = bodies.keep(path, r).await;
            assert!(status == 400 || status == 200, "{path} {status} {e}");
        }
    }
    for body in [
        json!({"id": bad_fp, "result": "wrong_password", "pw": bad_fp}),
        json!({"id": "1", "result": bad_fp, "pw": bad_fp}),
        json!({"id": {"n": ADMIN_TOKEN}, "result": ADMIN_TOKEN}),
    ] {
        let r = c
            .post(s.url("/v1/outcome"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, e) = bodies.keep("bad outcome", r).await;
        assert_eq!(status, 400, "{e}");
    }

    // Admin API with the token, a wrong token (the right one plus a character), none.
    for path in [
        "/v1/admin/lockouts",
        "/v1/admin/sources",
        "/v1/admin/sprays",
        "/v1/admin/account?tenant=acme&user=alice",
        "/v1/admin/policy",
    ] {
        let r = c
            .get(s.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(bodies.keep(path, r).await.0, 200, "{path}");
        let r = c
            .get(s.url(path))
            .bearer_auth(format!("{ADMIN_TOKEN}x"))
            .send()
            .await
            .unwrap();
        assert_eq!(bodies.keep(path, r).await.0, 401, "{path}");
    }
    let r = c
        .get(s.url(&format!(
            "/v1/admin/account?tenant={bad_fp}&user=alice&x={ADMIN_TOKEN}"
        )))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    bodies.keep("bad account query", r).await;
    let r = c
        .post(s.url("/v1/admin/unlock"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"tenant": "acme", "user": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bodies.keep("unlock", r).await.0, 200);
    let r = c
        .post(s.url("/v1/admin/clear-source"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"tenant": bad_fp, "source": ADMIN_TOKEN}))
        .send()
        .await
        .unwrap();
    bodies.keep("bad clear-source", r).await;

    // Dashboard: a wrong token, the right one, the state JSON with the session.
    let r = c
        .post(s.url("/login"))
        .form(&[("token", format!("{ADMIN_TOKEN}0"))])
        .send()
        .await
        .unwrap();
    assert_eq!(bodies.keep("login wrong", r).await.0, 401);
    let r = c
        .post(s.url("/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(bodies.keep("login", r).await.0, 303);
    for path in ["/", "/dashboard/api/state"] {
        let r = c
            .get(s.url(path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(bodies.keep(path, r).await.0, 200, "{path}");
    }
    let r = c.get(s.url("/metrics")).send().await.unwrap();
    let (status, _) = bodies.keep("metrics", r).await;
    assert_eq!(status, 200);
    let metrics = bodies.0.last().unwrap().clone();

    let stdout = s.stdout.clone();
    let stderr = s.stderr.clone();
    s.terminate();

    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let logs = stderr.text();
    // The search runs over real output: the run's accounts, decisions and actions are there.
    assert!(logs.contains("DEBUG"), "debug logging on");
    assert!(logs.contains("Dashboard sign-in refused"), "{logs}");
    assert!(logs.contains("Admin request refused"), "{logs}");
    assert!(audit_text.contains("\"account\":\"alice\""), "{audit_text}");
    assert!(audit_text.contains("sprayed_password"), "{audit_text}");
    assert!(audit_text.contains("dashboard_login"), "{audit_text}");
    assert!(metrics.contains("portcullis_decisions_total"), "{metrics}");
    assert!(
        bodies.0.iter().any(|b| b.contains("\"field\"")),
        "errors were answered"
    );

    let mut outputs: Vec<(String, Vec<u8>)> = vec![
        ("stderr".into(), logs.into_bytes()),
        ("stdout".into(), stdout.text().into_bytes()),
        ("audit".into(), audit_text.into_bytes()),
    ];
    for (i, b) in bodies.0.iter().enumerate() {
        outputs.push((format!("response {i}"), b.clone().into_bytes()));
    }
    let mut sled_files = Vec::new();
    files_under(&data, &mut sled_files);
    assert!(!sled_files.is_empty());
    for p in sled_files {
        outputs.push((p.display().to_string(), std::fs::read(&p).unwrap()));
    }
    let mut secrets: Vec<String> = forms(ADMIN_TOKEN);
    fps.sort();
    fps.dedup();
    for f in &fps {
        secrets.extend(forms(f));
    }
    // The shared prefix alone catches a cut or partly encoded fingerprint.
    secrets.push(FP_PREFIX.to_string());
    let searched: usize = outputs.iter().map(|(_, b)| b.len()).sum();
    eprintln!(
        "searched {} outputs, {searched} bytes, for {} forms of {} secrets",
        outputs.len(),
        secrets.len(),
        fps.len() + 1
    );
    let mut leaks = Vec::new();
    for (name, bytes) in &outputs {
        for secret in &secrets {
            if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                leaks.push(format!("{secret:?} in {name}"));
            }
        }
    }
    if !leaks.is_empty() {
        for (name, bytes) in &outputs {
            let t = String::from_utf8_lossy(bytes);
            for l in t
                .lines()
                .filter(|l| l.contains(FP_PREFIX) || l.contains(ADMIN_TOKEN))
            {
                eprintln!("{name}: {l}");
            }
        }
    }
    assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
}
