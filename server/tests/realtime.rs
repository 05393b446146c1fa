//! `serve --realtime`: every service thread under `SCHED_RR`, or no start at all.
//!
//! CI runs as root, where SCHED_RR is allowed; elsewhere the tests skip with a message unless
//! `CI` is set.

mod common;

use common::{attempt, client, default_policy, Server, BIN};
use portcullis_server::sched::{thread_policies, SCHED_RR};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_realtime_runs_every_thread_under_sched_rr_and_still_decides() {
    if !portcullis_server::sched::realtime_allowed_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &default_policy(),
        &["--realtime", "10"],
    );
    let c = client();
    let d = attempt(&c, &s.http, "alice", "198.51.100.7", "fp-1", "success").await;
    assert_eq!(d["decision"], "forward", "{d}");
    // Background work (the flush, housekeeping) runs one priority lower while it lasts: still
    // SCHED_RR.
    let policies = thread_policies(s.child.id()).expect("read /proc");
    assert!(
        policies.len() >= 3,
        "runtime workers at least: {policies:?}"
    );
    let ordinary: Vec<_> = policies.iter().filter(|x| x.policy != SCHED_RR).collect();
    assert!(
        ordinary.is_empty(),
        "threads left at another policy: {ordinary:?}"
    );
    assert!(
        s.stderr.text().contains("SCHED_RR"),
        "the start says so: {}",
        s.stderr.text()
    );
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_realtime_leaves_its_threads_at_the_ordinary_policy() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &default_policy(), &[]);
    let policies = thread_policies(s.child.id()).expect("read /proc");
    assert!(policies.iter().all(|x| x.policy == 0), "{policies:?}");
    s.terminate();
}

#[test]
fn without_the_right_to_sched_rr_the_start_is_refused_naming_realtime() {
    if !portcullis_server::sched::realtime_allowed_or_skip() {
        return;
    }
    // Root without CAP_SYS_NICE and with RLIMIT_RTPRIO 0: as a service user without
    // `LimitRTPRIO=` would be.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new("prlimit")
        .args(["--rtprio=0:0", "setpriv", "--bounding-set=-sys_nice"])
        .args(["--inh-caps=-sys_nice", "--", BIN, "serve", "--policy"])
        .arg(default_policy())
        .arg("--data")
        .arg(&data)
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .args(["--realtime", "10"])
        .output()
        .expect("run prlimit and setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started anyway:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Listening."), "{stderr}");
    assert!(
        stderr.contains("`realtime` = 10"),
        "names the key: {stderr}"
    );
    assert!(
        stderr.contains("LimitRTPRIO=10"),
        "names the way out: {stderr}"
    );
    assert!(!data.exists(), "refused before the store was opened");
}
