//! Agents that hang, reset the connection or answer garbage: every request gets exactly one
//! answer within the timeout, no fault is ever a wrong password, and each agent's circuit
//! breaker opens (requests fail over to a healthy agent) and closes again once it recovers.

mod common;

use common::fake_agent::{Behaviour, FakeAgent};
use common::*;
use portcullis_engine::Outcome;
use portcullis_server::agent::{AgentPool, AgentRequest, BreakerConfig, BreakerState};
use serde_json::json;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_millis(800);

fn request(i: usize) -> AgentRequest {
    AgentRequest {
        v: 1,
        id: i.to_string(),
        tenant: "acme".into(),
        user: "alice".into(),
        payload: json!({"password": "x"}),
    }
}

fn pool(urls: &[&str], breaker: BreakerConfig) -> AgentPool {
    let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
    AgentPool::new(&urls, TIMEOUT)
        .unwrap()
        .with_breaker(breaker)
}

/// No breaker in the way: every fault reaches the agent.
fn never_open() -> BreakerConfig {
    BreakerConfig {
        threshold: 10_000,
        cooldown: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_gets_one_answer_within_the_timeout_and_never_wrong_password() {
    let cases = [
        ("hangs", Behaviour::Hang, Outcome::Timeout),
        ("resets the connection", Behaviour::Reset, Outcome::Error),
        (
            "answers non-JSON",
            Behaviour::Answer(200, "wrong_password"),
            Outcome::Error,
        ),
        (
            "answers a JSON array",
            Behaviour::Answer(200, r#"["wrong_password"]"#),
            Outcome::Error,
        ),
        (
            "answers 500",
            Behaviour::Answer(500, r#"{"result":"wrong_password"}"#),
            Outcome::Error,
        ),
        (
            "answers an unknown result",
            Behaviour::Answer(200, r#"{"result":"wrong_passwd"}"#),
            Outcome::Error,
        ),
        (
            "is slow but right",
            Behaviour::Slow(TIMEOUT / 3),
            Outcome::Success,
        ),
    ];
    for (what, behaviour, expected) in cases {
        let agent = FakeAgent::start(behaviour).await;
        let pool = std::sync::Arc::new(pool(&[&agent.url], never_open()));
        let calls: Vec<_> = (0..4)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.validate(&request(i)).await })
            })
            .collect();
        for call in calls {
            // A bounded wait: the pool answers by its timeout (plus scheduling slack).
            let answer = tokio::time::timeout(TIMEOUT * 4, call)
                .await
                .unwrap_or_else(|_| panic!("an agent that {what}: no answer in time"))
                .unwrap();
            assert_eq!(answer.outcome, expected, "an agent that {what}");
            assert_ne!(
                answer.outcome,
                Outcome::WrongPassword,
                "an agent that {what}"
            );
            assert_eq!(answer.agent, Some(0));
        }
        assert_eq!(
            agent.hits(),
            4,
            "an agent that {what}: each request sent once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fails_over_and_closes_after_the_agent_recovers() {
    let broken = FakeAgent::start(Behaviour::Answer(500, "{}")).await;
    let good = FakeAgent::start(Behaviour::Slow(Duration::ZERO)).await;
    let cooldown = Duration::from_millis(300);
    let pool = pool(
        &[&broken.url, &good.url],
        BreakerConfig {
            threshold: 3,
            cooldown,
        },
    );
    let mut errors = 0;
    for i in 0..20 {
        let a = pool.validate(&request(i)).await;
        assert_ne!(a.outcome, Outcome::WrongPassword);
        if a.outcome == Outcome::Error {
            errors += 1;
        } else {
            assert_eq!(a.outcome, Outcome::Success);
            assert_eq!(a.agent, Some(1));
        }
    }
    assert_eq!(broken.hits(), 3, "three faults in a row open the breaker");
    assert_eq!(errors, 3, "only those three were answered `error`");
    assert_eq!(good.hits(), 17, "everything else failed over");
    let stats = pool.stats();
    assert_eq!(stats[0].breaker, BreakerState::Open, "{stats:?}");
    assert_eq!(stats[0].consecutive_faults, 3);
    assert_eq!(stats[1].breaker, BreakerState::Closed);

    // Still broken after the cooldown: the one probe fails and the breaker opens again.
    tokio::time::sleep(cooldown + Duration::from_millis(50)).await;
    for i in 0..4 {
        pool.validate(&request(100 + i)).await;
    }
    assert_eq!(broken.hits(), 4, "one probe per cooldown");
    assert_eq!(pool.stats()[0].breaker, BreakerState::Open);

    // Recovered: the next probe succeeds and closes the breaker; traffic is shared again.
    broken.set(Behaviour::Slow(Duration::ZERO));
    tokio::time::sleep(cooldown + Duration::from_millis(50)).await;
    for i in 0..10 {
        let a = pool.validate(&request(200 + i)).await;
        assert_eq!(a.outcome, Outcome::Success);
    }
    assert_eq!(pool.stats()[0].breaker, BreakerState::Closed);
    assert_eq!(pool.stats()[0].consecutive_faults, 0);
    assert!(
        broken.hits() >= 4 + 5,
        "round-robin again: {} requests reached the recovered agent",
        broken.hits() - 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_faults_through_the_service_never_count_against_the_account() {
    let agent = FakeAgent::start(Behaviour::Cycle(vec![
        Behaviour::Hang,
        Behaviour::Reset,
        Behaviour::Answer(200, "not json"),
        Behaviour::Answer(200, r#"["wrong_password"]"#),
        Behaviour::Answer(500, r#"{"result":"wrong_password"}"#),
        Behaviour::Answer(200, r#"{"result":"nonsense"}"#),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &default_policy(),
        &[
            "--agent",
            &agent.url,
            "--agent-timeout",
            "800ms",
            "--agent-breaker-threshold",
            "1000",
        ],
    );
    let c = client();
    let n = 18;
    // Three at a time: more unfamiliar attempts in flight at once would meet the directory
    // budget (in-flight attempts hold it), which is not what this test is about.
    for wave in 0..n / 3 {
        let calls: Vec<_> = (wave * 3..wave * 3 + 3)
            .map(|i| {
                let (c, url) = (c.clone(), s.url("/v1/validate"));
                tokio::spawn(async move {
                    post(
                        &c,
                        &url,
                        &json!({"tenant": "acme", "user": "alice", "ip": "203.0.113.9",
                        "payload": {"password": format!("guess{i}")}}),
                    )
                    .await
                })
            })
            .collect();
        for call in calls {
            let (status, v) = call.await.unwrap();
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["decision"], "forward", "{v}");
            let result = v["result"].as_str().unwrap();
            assert!(
                result == "timeout" || result == "error",
                "a fault is answered timeout or error, got {v}"
            );
        }
    }
    assert_eq!(agent.hits(), n, "each attempt sent once, none retried");
    let (_, x) = admin_get(&c, &s.url("/v1/admin/account?tenant=acme&user=alice")).await;
    assert_eq!(x["unfamiliar_failures"], 0, "{x}");
    assert_eq!(x["familiar_failures"], 0, "{x}");
    assert_eq!(x["directory_bad_count"], 0, "{x}");
    assert_eq!(x["lockouts"].as_array().map(Vec::len), Some(0), "{x}");
    let m = metrics(&c, &s).await;
    assert!(
        !m.contains("result=\"wrong_password\""),
        "no wrong_password recorded anywhere"
    );
    s.terminate();
}
