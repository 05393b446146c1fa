//! A flood of random names, addresses and passwords against the real service with small caps
//! (`--max-accounts`, `--max-sources`, `--max-sprays`): the tracked maps stay under their caps
//! and a real account's lockout is kept.

mod common;

use common::*;
use serde_json::{json, Value};

fn tracked(metrics: &str, kind: &str) -> Option<f64> {
    let prefix = format!("portcullis_tracked_keys{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_stays_under_the_configured_caps_and_keeps_a_real_lockout() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("db"),
        &default_policy(),
        &[
            "--max-accounts",
            "300",
            "--max-sources",
            "600",
            "--max-sprays",
            "300",
            "--max-body-bytes",
            "4194304",
        ],
    );
    let c = client();
    lock_alice(&c, &s.http).await;

    // 6,000 attempts, each with a new name, address and wrong password, in batches.
    for b in 0..24 {
        let checks: Vec<Value> = (0..250)
            .map(|k| {
                let i = b * 250 + k;
                json!({"tenant": "acme", "user": format!("flood{i}"),
                       "ip": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                       "pw": format!("pw{i}")})
            })
            .collect();
        let (status, answers) = post(&c, &s.url("/v1/check/batch"), &json!(checks)).await;
        assert_eq!(status, 200, "{answers}");
        let outcomes: Vec<Value> = answers
            .as_array()
            .unwrap()
            .iter()
            .zip(&checks)
            .filter(|(a, _)| a["decision"] == "forward")
            .map(|(a, c)| json!({"id": a["id"], "result": "wrong_password", "pw": c["pw"]}))
            .collect();
        if !outcomes.is_empty() {
            let (status, o) = post(&c, &s.url("/v1/outcome/batch"), &json!(outcomes)).await;
            assert_eq!(status, 200, "{o}");
        }
    }

    // The gauges are refreshed by the housekeeping loop (every 5 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let last = loop {
        let text = metrics(&c, &s).await;
        if tracked(&text, "accounts").is_some_and(|n| n > 0.0) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no tracked-keys gauge after 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let accounts = tracked(&last, "accounts").unwrap();
    let sources = tracked(&last, "sources").unwrap();
    let sprays = tracked(&last, "sprays").unwrap();
    // A handful of protected entries (alice, her sources) may sit on top of a cap.
    assert!(accounts <= 310.0, "accounts {accounts}");
    assert!(sources <= 620.0, "sources {sources}");
    assert!(sprays <= 310.0, "sprays {sprays}");
    assert!(
        accounts >= 100.0,
        "the flood was tracked at all: {accounts}"
    );

    let d = attempt(
        &c,
        &s.http,
        "alice",
        "203.0.113.50",
        "guess9",
        "wrong_password",
    )
    .await;
    assert_eq!(
        d["decision"], "block",
        "alice's lockout survived the flood: {d}"
    );
    s.terminate();
}
