//! The embedded store's disk fills up at run time: decisions go on from memory, the fault shows in
//! the log (once), the metrics and `/readyz`, and once space is back everything kept back is
//! written, so state created during the fault survives a `kill -9` after the recovery.
//!
//! The data directory lives on a small tmpfs mounted for the test (CI runs as root). Without the
//! right to mount, the test says so and checks nothing.

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "portcullis-test",
            ])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC: {e}");
                break;
            }
        }
    }
    // The last partial pages too.
    for _ in 0..64 {
        if f.write(&[0u8; 512]).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
    written
}

async fn assert_locked(c: &reqwest::Client, base: &str, user: &str, when: &str) {
    let d = attempt(
        c,
        base,
        user,
        "203.0.113.9",
        &format!("{user}-again"),
        "wrong_password",
    )
    .await;
    assert_eq!(d["decision"], "block", "{user} {when}: {d}");
    assert_eq!(d["reason"], "account_locked", "{user} {when}: {d}");
}

async fn readyz(c: &reqwest::Client, s: &Server) -> (u16, Value) {
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Some traffic on other accounts, so the store has more to write than fits in a page.
async fn churn(c: &reqwest::Client, base: &str, round: u32) {
    for k in 0..40 {
        attempt(
            c,
            base,
            &format!("churn{round}-{k}"),
            &format!("10.9.{round}.{k}"),
            &format!("churn-pw{k}"),
            "success",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_decisions_going_and_persistence_resumes_without_loss() {
    let Some(fs) = Tmpfs::mount("8m") else {
        println!(
            "SKIPPED a_full_disk_keeps_decisions_going_and_persistence_resumes_without_loss: \
             cannot mount a tmpfs here (not root?); CI runs it as root"
        );
        return;
    };
    let data: PathBuf = fs.path().join("data");
    let filler = fs.path().join("filler");
    let c = client();
    let s = Server::start(&data, &default_policy(), &["--flush-interval", "200ms"]);

    // Before the fault: alice locked and written.
    lock_user(&c, &s.http, "alice").await;
    eventually("alice written", || async {
        readyz(&c, &s).await.1["unflushed"] == 0
    })
    .await;
    assert!(metrics(&c, &s)
        .await
        .contains("portcullis_store_persist_ok 1"));

    // The disk fills up.
    let filled = fill(&filler);
    assert!(filled > 0);
    lock_user(&c, &s.http, "dave").await;
    let mut round = 0;
    eventually("the fault to show in /readyz", || {
        round += 1;
        let (c, s) = (&c, &s);
        async move {
            churn(c, &s.http, round).await;
            readyz(c, s).await.1["persist_ok"] == false
        }
    })
    .await;

    // Decisions go on from memory, lockouts made before and during the fault included.
    assert_locked(&c, &s.http, "alice", "during the fault").await;
    assert_locked(&c, &s.http, "dave", "during the fault").await;
    let (status, body) = readyz(&c, &s).await;
    assert_eq!(status, 200, "degraded, still deciding: {body}");
    assert_eq!(body["degraded"], true, "{body}");
    assert!(body["unflushed"].as_u64().unwrap() > 0, "{body}");
    assert!(
        body["store_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    let m = metrics(&c, &s).await;
    assert!(m.contains("portcullis_store_persist_ok 0"), "{m}");
    assert!(m.contains("portcullis_store_write_errors_total"), "{m}");
    // Many failed flushes, one log line (once per minute at most).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logged = s
        .stderr
        .all()
        .iter()
        .filter(|l| l.contains("Writing to the store fails"))
        .count();
    assert_eq!(logged, 1, "{}", s.stderr.text());
    assert!(!s.stderr.text().contains("panicked"), "{}", s.stderr.text());

    // Space is back: persistence resumes by itself and catches up.
    std::fs::remove_file(&filler).unwrap();
    eventually("persistence to resume", || async {
        let (_, b) = readyz(&c, &s).await;
        b["persist_ok"] == true && b["unflushed"] == 0
    })
    .await;
    let (_, body) = readyz(&c, &s).await;
    assert!(body.get("degraded").is_none(), "{body}");
    assert!(metrics(&c, &s)
        .await
        .contains("portcullis_store_persist_ok 1"));
    s.stderr
        .wait_for("the recovery logged", |l| l.contains("persistence resumed"));

    // What was created during the fault survives a crash after the recovery.
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.kill9();
    let s = Server::start(&data, &default_policy(), &[]);
    assert_locked(&c, &s.http, "alice", "after the restart").await;
    assert_locked(&c, &s.http, "dave", "after the restart").await;
    s.terminate();
}
