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

/// (the server killed under it) end a task quietly. Returns the requests answered.
fn start_load(
    base: &str,
    tasks: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    use std::sync::atomic::Ordering;
    (0..tasks)
        .map(|t| {
            let base = base.to_string();
            let stop = stop.clone();
            tokio::spawn(async move {
                let c = client();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let user = format!("load{t}-{}", n % 500);
                    // Addresses of their own, away from the ones the test locks out from.
                    let ip = format!("10.{t}.{}.{}", (n / 250) % 250, n % 250);
                    let body = serde_json::json!({"tenant": "acme", "user": user, "ip": ip,
                        "pw": format!("pw{t}-{n}")});
                    let Ok(r) = c.post(format!("{base}/v1/check")).json(&body).send().await else {
                        break;
                    };
                    let Ok(d) = r.json::<serde_json::Value>().await else {
                        break;
                    };
                    n += 1;
                    if d["decision"] == "forward" {
                        let result = if n % 3 == 0 {
                            "success"
                        } else {
                            "wrong_password"
                        };
                        let o = serde_json::json!({"id": d["id"], "result": result,
                            "pw": format!("pw{t}-{n}")});
                        if c.post(format!("{base}/v1/outcome"))
                            .json(&o)
                            .send()
                            .await
                            .is_err()
                        {
                            break;
                        }
                        n += 1;
                    }
                }
                n
            })
        })
        .collect()
}

async fn explain(c: &reqwest::Client, s: &Server, user: &str) -> serde_json::Value {
    let (status, x) = admin_get(
        c,
        &s.url(&format!("/v1/admin/account?tenant=acme&user={user}")),
    )
    .await;
    assert_eq!(status, 200, "{x}");
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockouts_and_directory_counters_survive_kill_9_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &default_policy(), &["--flush-interval", "200ms"]);
    let c = client();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let load = start_load(&s.http, 4, stop.clone());

    lock_user(&c, &s.http, "alice").await;
    lock_user(&c, &s.http, "carol").await;
    // Bob's directory mirror near its threshold: five wrong passwords from his own place (the
    // familiar lockout is at eight, the directory's at ten).
    let d = attempt(&c, &s.http, "bob", "198.51.100.7", "bob-pw", "success").await;
    assert_eq!(d["decision"], "forward", "{d}");
    for i in 0..5 {
        let d = attempt(
            &c,
            &s.http,
            "bob",
            "198.51.100.7",
            &format!("bob-typo{i}"),
            "wrong_password",
        )
        .await;
        assert_eq!(d["decision"], "forward", "bob typo {i}: {d}");
    }
    let before = explain(&c, &s, "bob").await;
    assert_eq!(before["directory_bad_count"], 5, "{before}");
    assert_eq!(
        explain(&c, &s, "alice").await["lockouts"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // The promise holds for what is older than flush_interval (200 ms) when the crash comes:
    // wait well past it while the load goes on, then kill in the middle of the load.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = s.child.id();
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for t in load {
        answered += t.await.unwrap();
    }
    assert!(
        answered > 100,
        "the load ran: {answered} requests answered before pid {pid} died"
    );
    println!("load before the kill: {answered} requests answered");

    // Restart on the same directory: it opens as it is (no repair step) and everything is there.
    let s = Server::start(&data, &default_policy(), &[]);
    for user in ["alice", "carol"] {
        let d = attempt(
            &c,
            &s.http,
            user,
            "203.0.113.9",
            &format!("{user}-guess9"),
            "wrong_password",
        )
        .await;
        assert_eq!(d["decision"], "block", "{user}: {d}");
        assert_eq!(d["reason"], "account_locked", "{user}: {d}");
        let d = attempt(&c, &s.http, user, "198.51.100.7", "owner-pw", "success").await;
        assert_eq!(
            d["decision"], "forward",
            "{user}'s home stayed familiar: {d}"
        );
    }
    let after = explain(&c, &s, "bob").await;
    assert_eq!(
        after["directory_bad_count"], before["directory_bad_count"],
        "bob's directory mirror survived: {after}"
    );
    assert_eq!(
        after["familiar_failures"], before["familiar_failures"],
        "{before}\n{after}"
    );
    s.terminate();
}

/// Runs `portcullis serve` expecting it to refuse to start; returns its stderr.
fn refused_start(data: &std::path::Path) -> String {
    let out = std::process::Command::new(BIN)
        .arg("serve")
        .arg("--policy")
        .arg(default_policy())
        .arg("--data")
        .arg(data)
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .output()
        .expect("run portcullis serve");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "started anyway:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Listening."), "{stderr}");
    assert!(
        stderr.contains(&data.display().to_string()),
        "names the path: {stderr}"
    );
    assert!(
        stderr.contains("--reset-store"),
        "names the way out: {stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_stops_the_start_and_reset_store_moves_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &default_policy(), &[]);
    lock_alice(&client(), &s.http).await;
    s.terminate();

    // Garbage over sled's log: sled alone would open it as an empty store.
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(data.join("db"), &garbage).unwrap();
    let stderr = refused_start(&data);
    assert!(stderr.contains("damaged"), "{stderr}");
    // And again: the refusal does not turn into an empty start the second time.
    refused_start(&data);

    // Garbage over sled's config file is refused too.
    let conf = dir.path().join("conf-broken");
    let s = Server::start(&conf, &default_policy(), &[]);
    s.terminate();
    std::fs::write(conf.join("conf"), &garbage[..300]).unwrap();
    refused_start(&conf);

    // The explicit way out: moved aside, started empty, the old files kept for inspection.
    let s = Server::start(&data, &default_policy(), &["--reset-store"]);
    let moved: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("data.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(
        dir.path()
            .join(&moved[0])
            .join("portcullis-store-id")
            .exists(),
        "the old store moved whole"
    );
    s.stderr
        .wait_for("the move logged", |l| l.contains("moved it aside"));
    let d = attempt(
        &client(),
        &s.http,
        "alice",
        "203.0.113.9",
        "guess9",
        "wrong_password",
    )
    .await;
    assert_eq!(d["decision"], "forward", "an empty store: {d}");
    s.terminate();

    // A readable store is left alone by the flag.
    let s = Server::start(&data, &default_policy(), &["--reset-store"]);
    let d = attempt(
        &client(),
        &s.http,
        "alice",
        "203.0.113.9",
        "guess10",
        "wrong_password",
    )
    .await;
    assert_eq!(d["decision"], "forward", "{d}");
    s.terminate();
    let moved = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("data.corrupt-")
        })
        .count();
    assert_eq!(moved, 1);
}

#[test]
fn an_unusable_data_path_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let file = dir.path().join("data");
    std::fs::write(&file, b"not a directory").unwrap();
    refused_start(&file);
    // A directory this user cannot read (meaningless as root, who reads everything).
    if !is_root() {
        use std::os::unix::fs::PermissionsExt;
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        refused_start(&locked.join("data"));
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
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

#[test]
fn a_sigterm_right_after_listening_drains_and_exits_cleanly() {
    // The signal handlers are installed before "Listening." is logged: a SIGTERM sent the moment
    // the line appears must stop the service cleanly (exit 0 after the final flush), never kill it.
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let s = Server::start(&dir.path().join("data"), &default_policy(), &[]);
        s.terminate();
    }
}
