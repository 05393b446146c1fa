//! The decision API over real HTTP and gRPC against the real binary.

mod common;

use common::*;
use portcullis_server::pb::gate_client::GateClient;
use portcullis_server::pb::{CheckRequest, OutcomeRequest};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_over_http_locks_the_account_while_a_familiar_location_gets_through() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &default_policy(), &[]);
    let c = client();
    lock_alice(&c, &s.http).await;

    let d = attempt(
        &c,
        &s.http,
        "alice",
        "203.0.113.9",
        "guess9",
        "wrong_password",
    )
    .await;
    assert_eq!(d["decision"], "block", "{d}");
    assert_eq!(d["reason"], "account_locked");
    assert!(d["retry_after_s"].as_u64().unwrap() >= 1);
    assert!(d.get("id").is_none(), "no id for a blocked attempt");
    // Another unfamiliar address is refused too: the lockout is per account.
    let d = attempt(&c, &s.http, "ALICE ", "192.0.2.44", "x", "wrong_password").await;
    assert_eq!(d["decision"], "block", "{d}");

    let d = attempt(
        &c,
        &s.http,
        "alice",
        "198.51.100.200",
        "owner-pw",
        "success",
    )
    .await;
    assert_eq!(d["decision"], "forward", "the owner's /24 is familiar: {d}");

    // An outcome reported twice is refused and changes nothing.
    let (_, d) = post(
        &c,
        &s.url("/v1/check"),
        &json!({"tenant": "acme", "user": "bob", "ip": "198.51.100.9"}),
    )
    .await;
    let body = json!({"id": d["id"], "result": "success"});
    assert_eq!(post(&c, &s.url("/v1/outcome"), &body).await.0, 200);
    assert_eq!(post(&c, &s.url("/v1/outcome"), &body).await.0, 409);
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_over_grpc_locks_the_account_while_a_familiar_location_gets_through() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &default_policy(), &[]);
    let mut g = GateClient::connect(s.grpc.clone()).await.unwrap();
    let req = |ip: &str, pw: &str| CheckRequest {
        tenant: "acme".into(),
        user: "carol".into(),
        ip: ip.into(),
        pw: Some(pw.as_bytes().to_vec()),
        app: None,
    };
    let d = g
        .check(req("198.51.100.7", "own"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.decision, "forward");
    g.outcome(OutcomeRequest {
        id: d.id,
        result: "success".into(),
        pw: None,
    })
    .await
    .unwrap();
    for i in 0..6 {
        let d = g
            .check(req("203.0.113.9", &format!("guess{i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.decision, "forward", "guess {i}");
        let fx = g
            .outcome(OutcomeRequest {
                id: d.id.clone(),
                result: "wrong_password".into(),
                pw: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fx.lockout_started, i == 5, "guess {i}");
        let again = g
            .outcome(OutcomeRequest {
                id: d.id,
                result: "wrong_password".into(),
                pw: None,
            })
            .await
            .unwrap_err();
        assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    }
    let d = g
        .check(req("203.0.113.9", "guess9"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (d.decision.as_str(), d.reason.as_deref()),
        ("block", Some("account_locked"))
    );
    let d = g
        .check(req("198.51.100.8", "own"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.decision, "forward");

    let bad = g
        .check(CheckRequest {
            ip: "not-an-ip".into(),
            ..req("x", "y")
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("`ip`"), "{}", bad.message());
    let long = g
        .check(CheckRequest {
            user: "u".repeat(1025),
            ..req("192.0.2.1", "y")
        })
        .await
        .unwrap_err();
    assert_eq!(long.code(), tonic::Code::InvalidArgument);
    assert!(long.message().contains("`user`"), "{}", long.message());
    let huge = g
        .check(CheckRequest {
            user: "u".repeat(70_000),
            ..req("192.0.2.1", "y")
        })
        .await
        .unwrap_err();
    assert_eq!(huge.code(), tonic::Code::InvalidArgument);
    assert!(huge.message().contains("`body`"), "{}", huge.message());
    let d = g
        .check(req("198.51.100.8", "own"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.decision, "forward", "still serving");
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_400_and_the_service_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &default_policy(),
        &["--max-body-bytes", "4096"],
    );
    let c = client();
    let long = "a".repeat(1025);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("/v1/check", b"{\"tenant\":".to_vec(), "body"),
        ("/v1/check", b"[1,2]".to_vec(), "body"),
        (
            "/v1/check",
            br#"{"tenant":"acme","ip":"192.0.2.1"}"#.to_vec(),
            "user",
        ),
        (
            "/v1/check",
            br#"{"tenant":"acme","user":"a"}"#.to_vec(),
            "ip",
        ),
        (
            "/v1/check",
            br#"{"user":"a","ip":"192.0.2.1"}"#.to_vec(),
            "tenant",
        ),
        (
            "/v1/check",
            format!(r#"{{"tenant":"acme","user":"{long}","ip":"192.0.2.1"}}"#).into_bytes(),
            "user",
        ),
        (
            "/v1/check",
            br#"{"tenant":"acme","user":"a","ip":"192.0.2.300"}"#.to_vec(),
            "ip",
        ),
        (
            "/v1/check",
            br#"{"tenant":"ac me","user":"a","ip":"192.0.2.1"}"#.to_vec(),
            "tenant",
        ),
        (
            "/v1/check",
            br#"{"tenant":"acme","user":"a","ip":"192.0.2.1","pw":5}"#.to_vec(),
            "pw",
        ),
        (
            "/v1/check",
            format!(
                r#"{{"tenant":"acme","user":"a","ip":"192.0.2.1","pw":"{}"}}"#,
                "p".repeat(5000)
            )
            .into_bytes(),
            "body",
        ),
        ("/v1/outcome", br#"{"id":"12"}"#.to_vec(), "result"),
        (
            "/v1/outcome",
            br#"{"id":"12","result":"maybe"}"#.to_vec(),
            "result",
        ),
        (
            "/v1/outcome",
            br#"{"id":"abc","result":"success"}"#.to_vec(),
            "id",
        ),
        (
            "/v1/validate",
            br#"{"tenant":"acme","user":"a","ip":"192.0.2.1"}"#.to_vec(),
            "payload",
        ),
    ];
    for (path, body, field) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).to_string();
        let (status, e) = post_raw(&c, &s.url(path), body).await;
        assert_eq!(status, 400, "{path} {shown}: {e}");
        assert_eq!(e["field"], field, "{path} {shown}: {e}");
        assert!(
            !e.to_string().contains("ppppp"),
            "a fingerprint is never echoed"
        );
    }
    let d = attempt(&c, &s.http, "dave", "192.0.2.1", "pw", "success").await;
    assert_eq!(d["decision"], "forward", "still serving");
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_carry_no_user_address_or_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &default_policy(), &[]);
    let c = client();
    lock_alice(&c, &s.http).await;
    attempt(
        &c,
        &s.http,
        "alice",
        "203.0.113.9",
        "guess9",
        "wrong_password",
    )
    .await;
    let text = metrics(&c, &s).await;
    for needle in [
        "portcullis_decisions_total",
        "portcullis_lockouts_started_total",
        "portcullis_outcomes_total",
        "portcullis_check_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    for secret in ["alice", "203.0.113", "198.51.100", "guess", "owner-pw"] {
        assert!(!text.contains(secret), "{secret} leaked into /metrics");
    }
    // Prometheus text format: comments, blank lines, or `name{labels} value`.
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "bad value in {line:?}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'),
            "bad name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels in {line:?}"
                );
            }
        }
    }
    let logs = s.stderr.text();
    for secret in ["guess", "owner-pw"] {
        assert!(!logs.contains(secret), "{secret} leaked into logs");
    }
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_refuses_a_missing_or_wrong_token_and_unlock_clears_a_lockout() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let s = Server::start(
        &dir.path().join("data"),
        &default_policy(),
        &["--audit", audit.to_str().unwrap()],
    );
    let c = client();
    lock_alice(&c, &s.http).await;
    let url = s.url("/v1/admin/lockouts");
    assert_eq!(c.get(&url).send().await.unwrap().status().as_u16(), 401);
    let wrong = c.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let (status, v) = admin_get(&c, &url).await;
    assert_eq!(status, 200);
    let locks = v["lockouts"].as_array().unwrap();
    assert_eq!(locks.len(), 1, "{v}");
    assert_eq!(locks[0]["account"], "alice");
    assert_eq!(locks[0]["kind"], "unfamiliar");

    let (status, x) = admin_get(&c, &s.url("/v1/admin/account?tenant=acme&user=Alice")).await;
    assert_eq!(status, 200);
    assert_eq!(x["blocked_unfamiliar"]["reason"], "account_locked", "{x}");
    assert_eq!(x["familiar"][0]["prefix"], "198.51.100.0/24");
    let (status, p) = admin_get(&c, &s.url("/v1/admin/policy")).await;
    assert_eq!((status, p["version"].as_str()), (200, Some("default-1")));
    for path in ["/v1/admin/sources", "/v1/admin/sprays"] {
        assert_eq!(admin_get(&c, &s.url(path)).await.0, 200, "{path}");
    }

    let r = c
        .post(s.url("/v1/admin/unlock"))
        .json(&json!({"tenant": "acme", "user": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "unlock needs the token too");
    let r = c
        .post(s.url("/v1/admin/unlock"))
        .bearer_auth(TOKEN)
        .json(&json!({"tenant": "acme", "user": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, v) = admin_get(&c, &url).await;
    assert!(v["lockouts"].as_array().unwrap().is_empty(), "{v}");
    let d = attempt(
        &c,
        &s.http,
        "alice",
        "203.0.113.9",
        "guess9",
        "wrong_password",
    )
    .await;
    // The smart lockout is gone; the directory's own counter is not (six bad passwords spent the
    // unfamiliar budget), so what refuses it now, if anything, is the budget.
    assert_ne!(d["reason"], "account_locked", "unlocked: {d}");
    let d = attempt(&c, &s.http, "alice", "198.51.100.8", "owner-pw", "success").await;
    assert_eq!(
        d["decision"], "forward",
        "the owner at home after the unlock: {d}"
    );

    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(
        log.lines().any(|l| l.contains("\"action\":\"unlock\"")),
        "{log}"
    );
    assert!(s.stderr.text().contains("Admin action."));
    assert!(!log.contains("guess"), "no fingerprint in the audit log");
    s.terminate();
}
