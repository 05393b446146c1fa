//! The admin API in Redis shared mode: two `portcullis serve` instances on one Redis, each under
//! its own test namespace. What one instance's traffic locks or blocks, the other lists and
//! explains; an operator's unlock or clear-source through one is in force on the other at once.

mod common;

use common::redis_util;
use common::*;
use serde_json::{json, Value};

/// Starts two instances on the test Redis under namespace `ns`.
fn two_instances(ns: &str, dirs: &[tempfile::TempDir]) -> (Server, Server) {
    let start = |d: &tempfile::TempDir| {
        Server::start(
            d.path(),
            &default_policy(),
            &["--store", redis_util::URL, "--namespace", ns],
        )
    };
    (start(&dirs[0]), start(&dirs[1]))
}

async fn admin_post(c: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = c
        .post(url)
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn check(c: &reqwest::Client, s: &Server, user: &str, ip: &str, pw: &str) -> Value {
    let (status, d) = post(
        c,
        &s.url("/v1/check"),
        &json!({"tenant": "acme", "user": user, "ip": ip, "pw": pw}),
    )
    .await;
    assert_eq!(status, 200, "{d}");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_through_one_instance_ends_a_lockout_taken_on_another() {
    if !redis_util::available("unlock_through_one_instance_ends_a_lockout_taken_on_another") {
        return;
    }
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let ns = redis_util::namespace("admin-unlock");
    let (a, b) = two_instances(&ns, &dirs);
    let c = client();

    lock_alice(&c, &a.http).await;
    let d = check(&c, &a, "alice", "203.0.113.9", "again").await;
    assert_eq!(d["reason"], "account_locked", "{d}");

    // B lists and explains the lockout that A's traffic started.
    let (status, l) = admin_get(&c, &b.url("/v1/admin/lockouts")).await;
    assert_eq!(status, 200, "{l}");
    let locks = l["lockouts"].as_array().unwrap();
    assert_eq!(locks.len(), 1, "{l}");
    assert_eq!(locks[0]["tenant"], "acme");
    assert_eq!(locks[0]["account"], "alice");
    assert_eq!(locks[0]["kind"], "unfamiliar");
    let (status, x) = admin_get(&c, &b.url("/v1/admin/account?tenant=acme&user=%20Alice")).await;
    assert_eq!(status, 200, "{x}");
    assert_eq!(x["tracked"], true, "{x}");
    assert_eq!(x["account"], "alice");
    assert_eq!(x["directory_bad_count"], 6, "{x}");
    assert_eq!(x["familiar"][0]["prefix"], "198.51.100.0/24", "{x}");
    assert_eq!(x["blocked_unfamiliar"]["reason"], "account_locked", "{x}");
    assert_eq!(x["blocked_familiar"], Value::Null, "{x}");
    let text = x.to_string();
    assert!(
        !text.contains("guess") && !text.contains("owner-pw"),
        "{text}"
    );

    // Unlock through B: A lets the next attempt through and lists nothing.
    let (status, u) = admin_post(
        &c,
        &b.url("/v1/admin/unlock"),
        &json!({"tenant": "acme", "user": "ALICE"}),
    )
    .await;
    assert_eq!(status, 200, "{u}");
    assert_eq!(u["was_locked"], true, "{u}");
    // No longer locked; six bad passwords spent the unfamiliar share of the directory's budget,
    // which the unlock rightly leaves alone.
    let d = check(&c, &a, "alice", "203.0.113.9", "after-unlock").await;
    assert_eq!(d["reason"], "directory_budget", "{d}");
    let (_, x) = admin_get(&c, &a.url("/v1/admin/account?tenant=acme&user=alice")).await;
    assert_eq!(x["lockouts"], json!([]), "{x}");
    let (_, l) = admin_get(&c, &a.url("/v1/admin/lockouts")).await;
    assert_eq!(l["lockouts"], json!([]), "{l}");
    let (_, u) = admin_post(
        &c,
        &a.url("/v1/admin/unlock"),
        &json!({"tenant": "acme", "user": "alice"}),
    )
    .await;
    assert_eq!(u["was_locked"], false, "{u}");

    drop((a, b));
    redis_util::cleanup(redis_util::URL, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_source_through_one_instance_ends_a_block_cached_on_another() {
    if !redis_util::available("clear_source_through_one_instance_ends_a_block_cached_on_another") {
        return;
    }
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let ns = redis_util::namespace("admin-clear");
    let (a, b) = two_instances(&ns, &dirs);
    let c = client();

    // One address failing on 12 accounts (more than `spray.accounts_per_source` = 10): blocked.
    let mut blocked = false;
    for i in 0..12 {
        let d = attempt(
            &c,
            &a.http,
            &format!("user{i}"),
            "203.0.113.50",
            &format!("guess{i}"),
            "wrong_password",
        )
        .await;
        blocked |= d["reason"] == "source_blocked";
    }
    let d = check(&c, &a, "someone", "203.0.113.50", "x").await;
    assert_eq!(
        d["reason"], "source_blocked",
        "{d} (blocked earlier: {blocked})"
    );
    // Asked twice: the second answer may come from A's cache of the block.
    let d = check(&c, &a, "someone", "203.0.113.50", "y").await;
    assert_eq!(d["reason"], "source_blocked", "{d}");

    let (status, s) = admin_get(&c, &b.url("/v1/admin/sources")).await;
    assert_eq!(status, 200, "{s}");
    let rows = s["sources"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["source"] == "203.0.113.50" && r["tenant"] == "acme"),
        "{s}"
    );

    let (status, r) = admin_post(
        &c,
        &b.url("/v1/admin/clear-source"),
        &json!({"tenant": "acme", "source": "203.0.113.50"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert!(r["cleared"].as_u64().unwrap() >= 1, "{r}");
    let d = check(&c, &a, "someone", "203.0.113.50", "z").await;
    assert_ne!(
        d["reason"], "source_blocked",
        "A's cache kept a cleared block: {d}"
    );
    let (_, s) = admin_get(&c, &a.url("/v1/admin/sources")).await;
    assert_eq!(s["sources"], json!([]), "{s}");

    let (status, r) = admin_post(
        &c,
        &b.url("/v1/admin/clear-source"),
        &json!({"tenant": "acme", "source": "not-an-ip"}),
    )
    .await;
    assert_eq!(status, 400, "{r}");

    drop((a, b));
    redis_util::cleanup(redis_util::URL, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spray_seen_on_one_instance_is_listed_on_another_by_opaque_id() {
    if !redis_util::available("a_spray_seen_on_one_instance_is_listed_on_another_by_opaque_id") {
        return;
    }
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let ns = redis_util::namespace("admin-spray");
    let (a, b) = two_instances(&ns, &dirs);
    let c = client();

    // One password failing on 6 accounts (more than `spray.accounts_per_password` = 4), each
    // from its own network so no source block interferes.
    for i in 0..6 {
        attempt(
            &c,
            &a.http,
            &format!("user{i}"),
            &format!("192.0.{i}.1"),
            "Spring2026!",
            "wrong_password",
        )
        .await;
    }
    let (status, s) = admin_get(&c, &b.url("/v1/admin/sprays")).await;
    assert_eq!(status, 200, "{s}");
    let rows = s["sprays"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{s}");
    assert_eq!(rows[0]["id"].as_str().unwrap().len(), 16, "{s}");
    assert!(rows[0]["accounts_failed"].as_u64().unwrap() >= 5, "{s}");
    assert!(!s.to_string().contains("Spring"), "{s}");

    drop((a, b));
    redis_util::cleanup(redis_util::URL, &ns).await;
}
