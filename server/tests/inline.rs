//! In-line mode with two reference agents: one killed mid-run, requests fail over, none is lost
//! or answered twice, and agent faults never lock anyone.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

async fn validate(c: &reqwest::Client, s: &Server, user: &str, ip: &str, password: &str) -> Value {
    let (status, v) = post(
        c,
        &s.url("/v1/validate"),
        &json!({"tenant": "acme", "user": user, "ip": ip, "payload": {"password": password}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_an_agent_dies_and_agent_faults_lock_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.txt");
    std::fs::write(&users, "# test users\nalice:right-one\nbob:right-two\n").unwrap();
    let mut a = Agent::start(&users);
    let mut b = Agent::start(&users);
    let s = Server::start(
        &dir.path().join("data"),
        &default_policy(),
        &[
            "--agent",
            &a.url,
            "--agent",
            &b.url,
            "--health-interval",
            "200ms",
            "--agent-timeout",
            "3s",
        ],
    );
    let c = client();
    let mut ids = Vec::new();
    let mut answered = 0;
    for i in 0..40 {
        if i == 20 {
            a.kill();
        }
        let (user, pw) = if i % 2 == 0 {
            ("alice", "right-one")
        } else {
            ("bob", "right-two")
        };
        let v = validate(&c, &s, user, "198.51.100.7", pw).await;
        assert_eq!(v["decision"], "forward", "request {i}: {v}");
        assert_eq!(v["result"], "success", "request {i} failed over: {v}");
        ids.push(v["id"].as_str().unwrap().to_string());
        answered += 1;
    }
    assert_eq!(answered, 40, "every request got its answer");
    let wrong = validate(&c, &s, "alice", "198.51.100.7", "nope").await;
    assert_eq!(wrong["result"], "wrong_password", "{wrong}");
    ids.push(wrong["id"].as_str().unwrap().to_string());

    // Each attempt reached exactly one agent.
    let deadline = Instant::now() + Duration::from_secs(10);
    let served = loop {
        let mut served = a.served();
        served.extend(b.served());
        if served.len() >= ids.len() || Instant::now() > deadline {
            break served;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let unique: HashSet<&String> = served.iter().collect();
    assert_eq!(unique.len(), served.len(), "an attempt reached two agents");
    assert_eq!(unique, ids.iter().collect::<HashSet<_>>());
    assert!(
        !a.served().is_empty() && b.served().len() > 20,
        "round-robin, then failover"
    );

    // Now no agent answers: quickly directory_unreachable, never counted against anyone.
    b.kill();
    for i in 0..12 {
        let t0 = Instant::now();
        let v = validate(&c, &s, "alice", "203.0.113.9", &format!("guess{i}")).await;
        assert_eq!(v["result"], "directory_unreachable", "{v}");
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t0.elapsed()
        );
    }
    eventually("readyz to fail with no healthy agent", || async {
        c.get(s.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
            == 503
    })
    .await;
    let (_, x) = admin_get(&c, &s.url("/v1/admin/account?tenant=acme&user=alice")).await;
    assert_eq!(x["unfamiliar_failures"], 0, "{x}");
    assert_eq!(x["lockouts"].as_array().unwrap().len(), 0, "{x}");
    assert_eq!(x["blocked_unfamiliar"], Value::Null, "{x}");
    assert_eq!(
        x["directory_bad_count"], 1,
        "only the one real wrong password: {x}"
    );
    s.terminate();
}
