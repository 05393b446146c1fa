//! Several `portcullis serve` instances on one Redis (`--store redis://..`): an attack spread over
//! them meets exactly the thresholds of one instance, and the directory never locks the account.
//! Redis going away and coming back: the fail mode holds, `/readyz` says so, the instance recovers.

mod common;

use common::redis_util;
use common::*;
use portcullis_engine::replay::SimDirectory;
use portcullis_engine::trace::Truth;
use portcullis_engine::{Outcome, Policy};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `n` instances on the Redis at `url` under namespace `ns`.
fn instances(n: usize, url: &str, ns: &str, dirs: &[tempfile::TempDir]) -> Vec<Server> {
    (0..n)
        .map(|i| {
            Server::start(
                dirs[i].path(),
                &default_policy(),
                &[
                    "--store",
                    url,
                    "--namespace",
                    ns,
                    "--store-timeout",
                    "300ms",
                ],
            )
        })
        .collect()
}

/// Brute force on one account from one address, round-robin over `servers` (outcomes reported to
/// the next instance). Returns the directory-counted failures before the first `account_locked`.
async fn failures_until_locked(servers: &[Server]) -> u32 {
    let policy = Policy::load(&default_policy()).unwrap();
    let c = client();
    let mut dir = SimDirectory::default();
    let mut failures = 0;
    for i in 0..40usize {
        let s = &servers[i % servers.len()];
        let body = json!({"tenant": "contoso", "user": "victim@contoso.com",
            "ip": "198.51.100.7", "pw": format!("guess-{i}")});
        let (status, d) = post(&c, &s.url("/v1/check"), &body).await;
        assert_eq!(status, 200, "{d}");
        match d["decision"].as_str().unwrap() {
            "forward" => {
                let (outcome, locked) = dir.answer(&policy, "contoso", "victim", Truth::Wrong, 0);
                assert!(
                    !locked,
                    "the directory locked the account after {failures} failures"
                );
                assert_eq!(outcome, Outcome::WrongPassword);
                failures += 1;
                let next = &servers[(i + 1) % servers.len()];
                let (status, r) = post(
                    &c,
                    &next.url("/v1/outcome"),
                    &json!({"id": d["id"], "result": "wrong_password"}),
                )
                .await;
                assert_eq!(status, 200, "{r}");
            }
            _ => {
                assert_eq!(d["reason"], "account_locked", "{d}");
                return failures;
            }
        }
    }
    panic!("never locked after {failures} failures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_over_two_instances_locks_after_the_same_failures_as_one() {
    if !redis_util::available("attack_over_two_instances_locks_after_the_same_failures_as_one") {
        return;
    }
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();

    let ns1 = redis_util::namespace("serve1");
    let one = instances(1, redis_util::URL, &ns1, &dirs);
    let alone = failures_until_locked(&one).await;
    drop(one);
    redis_util::cleanup(redis_util::URL, &ns1).await;

    let ns2 = redis_util::namespace("serve2");
    let two = instances(2, redis_util::URL, &ns2, &dirs);
    let spread = failures_until_locked(&two).await;
    // The lockout is shared: the other instance refuses too.
    let c = client();
    for s in &two {
        let (_, d) = post(
            &c,
            &s.url("/v1/check"),
            &json!({"tenant": "contoso", "user": "Victim@Contoso.com", "ip": "198.51.100.7", "pw": "again"}),
        )
        .await;
        assert_eq!(d["reason"], "account_locked", "{d}");
    }
    drop(two);
    redis_util::cleanup(redis_util::URL, &ns2).await;

    let policy = Policy::load(&default_policy()).unwrap();
    assert_eq!(alone, policy.defaults.lockout.threshold, "one instance");
    assert_eq!(
        spread, alone,
        "two instances must lock after as many failures as one"
    );
}

/// A throwaway redis-server on a free port, killed on drop.
struct TempRedis {
    child: Option<Child>,
    port: u16,
}

impl TempRedis {
    fn start(port: u16) -> TempRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_util::answers(port) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TempRedis {
            child: Some(child),
            port,
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(c: &reqwest::Client, s: &Server, want: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get(s.url("/readyz")).send().await.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {status} {body}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_and_recovers() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed"
        );
        eprintln!("redis_outage_fails_closed_and_recovers: skipped: no redis-server");
        return;
    }
    let port = free_port();
    let mut redis = TempRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = instances(2, &url, "outage", &dirs);
    let c = client();
    let check = |s: &Server, user: &str| {
        let url = s.url("/v1/check");
        let body = json!({"tenant": "contoso", "user": user, "ip": "203.0.113.9", "pw": "x"});
        let c = c.clone();
        async move { post(&c, &url, &body).await }
    };

    // Up: forwarded, and an outcome recorded through the other instance.
    let (status, d) = check(&servers[0], "alice").await;
    assert_eq!(
        (status, d["decision"].as_str()),
        (200, Some("forward")),
        "{d}"
    );
    wait_ready(&c, &servers[0], 200).await;

    // Down: every check is refused at once with store_unavailable; readyz says so; no panic.
    redis.stop();
    for s in &servers {
        let t0 = Instant::now();
        let (status, d) = check(s, "bob").await;
        let took = t0.elapsed();
        assert_eq!(status, 200, "{d}");
        assert_eq!(d["decision"], "block", "{d}");
        assert_eq!(d["reason"], "store_unavailable", "{d}");
        assert!(took < Duration::from_secs(2), "answered in {took:?}");
        let (status, r) = post(
            &c,
            &s.url("/v1/outcome"),
            &json!({"id": d["id"].as_str().unwrap_or("1"), "result": "wrong_password"}),
        )
        .await;
        assert_eq!(
            (status, r["error"].as_str()),
            (503, Some("store_unavailable")),
            "{r}"
        );
        let body = wait_ready(&c, s, 503).await;
        assert_eq!(body["store_reachable"], false, "{body}");
    }
    let m = metrics(&c, &servers[0]).await;
    assert!(m.contains("portcullis_store_up 0"), "{m}");
    assert!(
        m.contains("portcullis_store_fail_mode_decisions_total{fail_mode=\"closed\"}"),
        "{m}"
    );

    // Back (empty: a restarted Redis without persistence): both recover by themselves.
    let _redis = TempRedis::start(redis.port);
    for s in &servers {
        let body = wait_ready(&c, s, 200).await;
        assert_eq!(body["store_reachable"], true, "{body}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, d) = check(s, "carol").await;
            if d["decision"] == "forward" {
                break;
            }
            assert!(Instant::now() < deadline, "no recovery: {d}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
