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
    // A file left readable by others (an older version, a copy) is tightened at start.
    std::fs::create_dir_all(&data).unwrap();
    let old = data.join("left-over");
    std::fs::write(&old, "x").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = Server::start(&data, &default_policy(), &[]);
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let mode = std::fs::metadata(&old).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    s.terminate();
}

/// Every file and directory under `dir`, with `dir` itself.
fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    out.push(dir.to_path_buf());
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_it_creates_are_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let audit = dir.path().join("audit.jsonl");
    // A permissive umask in the parent: the service must not inherit it for its files.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .arg("serve")
        .arg("--policy")
        .arg(default_policy())
        .arg("--data")
        .arg(&data)
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .args(["--flush-interval", "100ms", "--audit"])
        .arg(&audit)
        .env("PORTCULLIS_ADMIN_TOKEN", TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::default();
    stderr.follow(child.stderr.take().unwrap());
    let line = stderr.wait_for("the Listening line", |l| l.contains("Listening."));
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap()
        .to_string();
    lock_alice(&client(), &format!("http://{http}")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(wait_exit(&mut child).success(), "{}", stderr.text());

    let mut paths = Vec::new();
    walk(&data, &mut paths);
    paths.push(audit);
    assert!(paths.len() > 3, "{paths:?}");
    for p in paths {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
    }
}
