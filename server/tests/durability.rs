//! Lockouts survive a graceful restart, and a `kill -9` once `flush_interval` has passed.

mod common;

use common::*;
use std::time::Duration;

async fn assert_alice_locked(s: &Server) {
    let c = client();
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
    assert_eq!(d["reason"], "account_locked", "{d}");
    let d = attempt(&c, &s.http, "alice", "198.51.100.7", "owner-pw", "success").await;
    assert_eq!(
        d["decision"], "forward",
        "the familiar location survived too: {d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockouts_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A long flush interval: only the flush at shutdown can have saved the lockout.
    let s = Server::start(&data, &default_policy(), &["--flush-interval", "1h"]);
    lock_alice(&client(), &s.http).await;
    s.terminate();
    let s = Server::start(&data, &default_policy(), &[]);
    assert_alice_locked(&s).await;
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockouts_survive_kill_9_after_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &default_policy(), &["--flush-interval", "200ms"]);
    lock_alice(&client(), &s.http).await;
    // The documented promise: state written more than flush_interval before a crash survives.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.kill9();
    let s = Server::start(&data, &default_policy(), &[]);
    assert_alice_locked(&s).await;
    s.terminate();
}

#[test]
fn creates_the_data_directory_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let s = Server::start(&data, &default_policy(), &[]);
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    s.terminate();
}
