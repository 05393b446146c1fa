//! Beyond `--max-in-flight` the service sheds load at once (HTTP 429 with `Retry-After`, gRPC
//! `RESOURCE_EXHAUSTED`) instead of queueing; requests already accepted get their real answer;
//! the shed answer carries the tenant's fail policy for the source (`forward` for a familiar
//! place under `fail_mode.familiar = "open"`, `refuse` otherwise).

mod common;

use common::fake_agent::{Behaviour, FakeAgent};
use common::*;
use portcullis_server::pb::gate_client::GateClient;
use portcullis_server::pb::CheckRequest;
use serde_json::{json, Value};
use std::time::Duration;

const AGENT_DELAY: Duration = Duration::from_millis(2500);

/// The default policy, plus a tenant that fails closed everywhere.
fn policy(dir: &std::path::Path) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(default_policy()).unwrap();
    text.push_str("\n[tenants.globex]\nfail_mode = \"closed\"\n");
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn sign_in(c: &reqwest::Client, s: &Server, tenant: &str, user: &str, ip: &str) {
    let (status, d) = post(
        c,
        &s.url("/v1/check"),
        &json!({"tenant": tenant, "user": user, "ip": ip, "pw": "pw"}),
    )
    .await;
    assert_eq!(
        (status, d["decision"].as_str()),
        (200, Some("forward")),
        "{d}"
    );
    let (status, o) = post(
        c,
        &s.url("/v1/outcome"),
        &json!({"id": d["id"], "result": "success"}),
    )
    .await;
    assert_eq!(status, 200, "{o}");
}

/// One check while the service is saturated: its status, `Retry-After` and body.
async fn shed_check(
    c: &reqwest::Client,
    s: &Server,
    tenant: &str,
    user: &str,
    ip: &str,
) -> (u16, Option<String>, Value) {
    let r = c
        .post(s.url("/v1/check"))
        .json(&json!({"tenant": tenant, "user": user, "ip": ip, "pw": "pw2"}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sheds_beyond_max_in_flight_at_once_with_the_tenants_fail_hint() {
    let agent = FakeAgent::start(Behaviour::Slow(AGENT_DELAY)).await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &policy(dir.path()),
        &[
            "--agent",
            &agent.url,
            "--agent-timeout",
            "10s",
            "--max-in-flight",
            "4",
        ],
    );
    let c = client();
    // Home is familiar to alice in both tenants.
    sign_in(&c, &s, "acme", "alice", "198.51.100.7").await;
    sign_in(&c, &s, "globex", "alice", "198.51.100.7").await;

    // Four slow sign-ins fill every place.
    let slow: Vec<_> = (0..4)
        .map(|i| {
            let (c, url) = (c.clone(), s.url("/v1/validate"));
            tokio::spawn(async move {
                post(
                    &c,
                    &url,
                    &json!({"tenant": "acme", "user": format!("user{i}"), "ip": "198.51.100.20",
                        "payload": {"password": "right"}}),
                )
                .await
            })
        })
        .collect();
    eventually("the four to reach the agent", || async {
        agent.hits() == 4
    })
    .await;

    // Saturated: every further request is refused at once, while the four are still waiting
    // for the agent.
    let cases = [
        ("acme", "alice", "198.51.100.7", "forward"), // familiar, acme fails open
        ("acme", "alice", "203.0.113.9", "refuse"),   // unfamiliar
        ("acme", "nobody", "198.51.100.7", "refuse"), // not in memory: unfamiliar
        ("globex", "alice", "198.51.100.7", "refuse"), // globex fails closed everywhere
    ];
    let mut slowest = Duration::ZERO;
    for round in 0..5 {
        for (tenant, user, ip, fail) in cases {
            let t0 = std::time::Instant::now();
            let (status, retry, body) = shed_check(&c, &s, tenant, user, ip).await;
            slowest = slowest.max(t0.elapsed());
            assert_eq!(status, 429, "{tenant}/{user}@{ip}: {body}");
            assert_eq!(retry.as_deref(), Some("1"), "{body}");
            assert_eq!(body["error"], "overloaded", "{body}");
            assert_eq!(body["max_in_flight"], 4, "{body}");
            assert_eq!(body["retry_after_ms"], 1000, "{body}");
            assert_eq!(
                body["fail"], fail,
                "{tenant}/{user}@{ip} round {round}: {body}"
            );
        }
    }
    // A figure for the README, not an assertion.
    println!("slowest of 20 HTTP 429 answers while saturated: {slowest:?}");
    let (status, body) = post(
        &c,
        &s.url("/v1/outcome"),
        &json!({"id": "1", "result": "success"}),
    )
    .await;
    assert_eq!(status, 429, "outcomes are shed too: {body}");
    assert!(body.get("fail").is_none(), "{body}");

    // gRPC: RESOURCE_EXHAUSTED with the same hint in metadata.
    let mut g = GateClient::connect(s.grpc.clone()).await.unwrap();
    for (tenant, user, ip, fail) in cases {
        let e = g
            .check(CheckRequest {
                tenant: tenant.into(),
                user: user.into(),
                ip: ip.into(),
                pw: Some(b"pw3".to_vec()),
                app: None,
            })
            .await
            .expect_err("shed");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        assert_eq!(
            e.metadata()
                .get("portcullis-fail")
                .map(|v| v.to_str().unwrap()),
            Some(fail),
            "{tenant}/{user}@{ip}: {e:?}"
        );
        assert_eq!(
            e.metadata()
                .get("retry-after-ms")
                .map(|v| v.to_str().unwrap()),
            Some("1000")
        );
    }
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "every refusal came while the accepted requests still waited for the agent"
    );

    // The accepted ones get their real answer; nothing hangs; places free up again.
    for t in slow {
        let (status, v) = tokio::time::timeout(AGENT_DELAY * 4, t)
            .await
            .expect("an accepted request hung")
            .unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["decision"], "forward", "{v}");
        assert_eq!(v["result"], "success", "{v}");
    }
    assert_eq!(agent.hits(), 4, "no shed request reached the agent");
    let (status, retry, body) = shed_check(&c, &s, "acme", "alice", "198.51.100.7").await;
    assert_eq!((status, retry), (200, None), "{body}");
    let m = metrics(&c, &s).await;
    assert!(
        m.contains("portcullis_shed_total{api=\"check\",fail=\"forward\"}"),
        "{m}"
    );
    s.terminate();
}
