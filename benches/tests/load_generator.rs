//! The load generator against its own bare servers on loopback: its HTTP client sends what each
//! mode sends, reads the answers, and counts a refused connection as an error. Bounded by attempt
//! count; nothing here is timed.

use serde_json::Value;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOAD: &str = env!("CARGO_BIN_EXE_portcullis-load");

/// A loopback address nothing listens on now.
fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// The bare servers, killed when dropped.
struct Bare(Child);

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_bare() -> (Bare, SocketAddr) {
    start_bare_with(&[])
}

/// [`start_bare`] with global options before the subcommand.
fn start_bare_with(global: &[&str]) -> (Bare, SocketAddr) {
    let (http, grpc) = (free_addr(), free_addr());
    let child = Command::new(LOAD)
        .args(global)
        .args([
            "bare",
            "--http",
            &http.to_string(),
            "--grpc",
            &grpc.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("portcullis-load bare starts");
    let bare = Bare(child);
    let t = Instant::now();
    while TcpStream::connect(http).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the bare server never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (bare, http)
}

fn trace() -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".jsonl")
        .tempfile()
        .expect("temp");
    for (i, truth) in ["correct", "wrong", "unknown_user"].iter().enumerate() {
        writeln!(
            f,
            r#"{{"ts":"2026-11-02T07:30:0{i}.000Z","tenant":"contoso","user":"u{i}@contoso.com","ip":"192.0.2.{i}","pw":"p{i}","truth":"{truth}","label":"legit"}}"#
        )
        .expect("write");
    }
    f
}

fn run(http: &str, mode: &str, seconds: &str, extra: &[&str]) -> Value {
    let t = trace();
    let out = Command::new(LOAD)
        .args(["run", "--mode", mode, "--http", http, "--quiet"])
        .args([
            "--max-attempts",
            "256",
            "--duration",
            seconds,
            "--concurrency",
            "4",
        ])
        .arg("--trace")
        .arg(t.path())
        .args(extra)
        .output()
        .expect("portcullis-load run");
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON result")
}

/// One bounded run of `mode` against fresh bare servers, which answer every request and forward
/// every check: no errors and at least the 256 attempts asked for. Returns (attempts, requests).
fn run_against_bare(mode: &str, extra: &[&str]) -> (u64, u64) {
    let (_bare, http) = start_bare();
    let r = run(&format!("http://{http}"), mode, "5", extra);
    assert_eq!(r["errors"], 0, "{r}");
    let attempts = r["attempts"].as_u64().expect("attempts");
    assert!(attempts >= 256, "{r}");
    (attempts, r["requests"].as_u64().expect("requests"))
}

#[test]
fn http_pair_sends_a_check_and_an_outcome_for_every_forwarded_attempt() {
    let (attempts, requests) = run_against_bare("http-pair", &[]);
    // The bare server forwards everything: two requests per attempt.
    assert_eq!(requests, 2 * attempts);
}

#[test]
fn http_batch_sends_one_check_batch_and_one_outcome_batch_per_unit() {
    let (attempts, requests) = run_against_bare("http-batch", &["--batch", "8"]);
    assert_eq!(attempts % 8, 0, "{attempts} attempts");
    assert_eq!(requests, attempts / 8 * 2);
}

#[test]
fn http_validate_sends_one_request_per_attempt() {
    let (attempts, requests) = run_against_bare("http-validate", &[]);
    assert_eq!(requests, attempts);
}

#[test]
fn a_refused_connection_counts_as_an_error_not_an_attempt() {
    let r = run(&format!("http://{}", free_addr()), "http-pair", "1", &[]);
    assert_eq!(r["attempts"], 0, "{r}");
    assert!(r["errors"].as_u64().unwrap_or(0) > 0, "{r}");
}

#[test]
fn suite_at_half_rate_runs_the_service_and_the_bare_server_open_loop_at_one_rate() {
    // Another bare server stands in for the service.
    let (_service, http) = start_bare();
    let t = trace();
    let out = Command::new(LOAD)
        .args(["suite", "--modes", "http-pair", "--half-rate", "--quiet"])
        .args(["--http", &format!("http://{http}")])
        .args(["--bare-http", &free_addr().to_string()])
        .args(["--bare-grpc", &free_addr().to_string()])
        .args([
            "--max-attempts",
            "256",
            "--duration",
            "2",
            "--concurrency",
            "4",
        ])
        .arg("--trace")
        .arg(t.path())
        .stderr(Stdio::null())
        .output()
        .expect("portcullis-load suite");
    assert!(out.status.success(), "suite failed");
    let rows: Value = serde_json::from_slice(&out.stdout).expect("one JSON result");
    let row = &rows[0];
    let service = &row["service_half_rate"];
    let bare = &row["bare_half_rate"];
    for r in [service, bare] {
        assert_eq!(r["errors"], 0, "{row}");
        assert_eq!(r["loop_kind"], "open", "{row}");
        assert!(r["latency_us"]["count"].as_u64().unwrap_or(0) > 0, "{row}");
    }
    // Both at half the service's closed-loop rate.
    let half = row["service"]["attempts_per_second"]
        .as_f64()
        .expect("rate")
        / 2.0;
    for r in [service, bare] {
        let target = r["target_rate"].as_f64().expect("target_rate");
        assert!((target - half).abs() < 1e-6 * half.max(1.0), "{row}");
    }
}

#[test]
fn open_loop_answers_every_unit_with_either_pacer_and_names_it() {
    for pacer in ["thread", "tokio"] {
        let (_bare, http) = start_bare();
        let r = run(
            &format!("http://{http}"),
            "http-pair",
            "5",
            &["--rate", "2000", "--pacer", pacer],
        );
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["loop_kind"], "open", "{r}");
        assert_eq!(r["pacer"], pacer, "{r}");
        assert!(r["attempts"].as_u64().unwrap_or(0) >= 256, "{r}");
        // Every unit recorded was timed from when it was due, and never less than from when
        // it was sent.
        let l = &r["latency_us"];
        assert!(l["count"].as_u64().unwrap_or(0) > 0, "{r}");
        assert!(l["p50"].as_u64() >= l["from_send"]["p50"].as_u64(), "{r}");
    }
}

#[test]
fn realtime_puts_the_bare_servers_and_the_generator_under_sched_rr_and_the_result_says_so() {
    use portcullis_server::sched::{thread_policies, SCHED_RR};
    if !portcullis_server::sched::realtime_allowed_or_skip() {
        return;
    }
    let (bare, http) = start_bare_with(&["--realtime", "5"]);
    let policies = thread_policies(bare.0.id()).expect("read /proc");
    assert!(policies.len() >= 2, "{policies:?}");
    assert!(
        policies.iter().all(|x| x.policy == SCHED_RR),
        "every bare server thread: {policies:?}"
    );
    let url = format!("http://{http}");
    let r = run(
        &url,
        "http-pair",
        "5",
        &["--rate", "2000", "--realtime", "5"],
    );
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["realtime"], 5, "{r}");
    assert!(r["attempts"].as_u64().unwrap_or(0) >= 256, "{r}");
    let r = run(&url, "http-pair", "5", &["--rate", "2000"]);
    assert!(r.get("realtime").is_none(), "ordinary policy: {r}");
}

#[test]
fn an_out_of_range_realtime_priority_is_refused_by_name() {
    let out = Command::new(LOAD)
        .args(["--realtime", "0", "bare"])
        .output()
        .expect("portcullis-load");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("`--realtime` = 0"), "{stderr}");
}
