//! The `portcullis` command line as a user meets it: `check-policy`, `replay`, `synth` and
//! `demo`, their exit codes and messages, gzip traces, the report's fields, and that no output
//! ever carries a password token.

use portcullis_tests::{default_policy, field, replay_report, run};
use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `portcullis synth` and returns the trace path; panics with stderr on failure.
fn synth(dir: &Path, file: &str, scenario: &str, seed: u64, users: usize) -> PathBuf {
    let path = dir.join(file);
    let out = run([
        "synth",
        "--scenario",
        scenario,
        "--out",
        path.to_str().expect("utf-8 temp path"),
        "--seed",
        &seed.to_string(),
        "--users",
        &users.to_string(),
    ]);
    assert!(
        out.status.success(),
        "synth {scenario} failed ({}): {}",
        out.status,
        stderr(&out)
    );
    path
}

/// `replay` of `trace` under the default policy, then `extra`.
fn replay_args<S: Into<OsString>>(
    trace: &Path,
    extra: impl IntoIterator<Item = S>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "replay".into(),
        "--policy".into(),
        default_policy().into_os_string(),
        "--trace".into(),
        trace.into(),
    ];
    args.extend(extra.into_iter().map(Into::into));
    args
}

/// A report without its timing fields, which differ from run to run.
fn scores(mut report: Value) -> Value {
    let obj = report.as_object_mut().expect("the report is a JSON object");
    for timing in [
        "wall_seconds",
        "events_per_second",
        "engine_seconds",
        "engine_events_per_second",
    ] {
        obj.remove(timing);
    }
    report
}

#[test]
fn check_policy_accepts_the_shipped_default() {
    let out = run(["check-policy".as_ref(), default_policy().as_os_str()]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "check-policy refused the default policy ({}):\n{}",
        out.status,
        stderr(&out)
    );
    assert!(text.contains("budget"), "stdout names no budget:\n{text}");
    assert!(
        text.contains("lockout at 10"),
        "stdout does not give the directory lockout threshold 10:\n{text}"
    );
    assert!(
        text.contains("unfamiliar 6") && text.contains("familiar 8"),
        "stdout does not give the budget figures (10 - reserve 3 - 1 = 6 unfamiliar, 8 familiar):\n{text}"
    );
}

#[test]
fn check_policy_refuses_a_threshold_at_the_directory_lockout() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let policy = dir.path().join("acme.toml");
    std::fs::write(&policy, "[tenants.acme.lockout]\nthreshold = 10\n").expect("write policy");
    let out = run(["check-policy".as_ref(), policy.as_os_str()]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "check-policy should exit 1; stdout:\n{}\nstderr:\n{err}",
        stdout(&out)
    );
    assert!(
        err.contains("tenants.acme.lockout.threshold = 10 must stay below directory"),
        "stderr does not name the key and the rule:\n{err}"
    );
}

#[test]
fn check_policy_names_a_missing_file_and_why_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let policy = dir.path().join("absent.toml");
    let out = run(["check-policy".as_ref(), policy.as_os_str()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.contains(&*policy.to_string_lossy()),
        "stderr does not name the file:\n{err}"
    );
    // ENOENT's text, said once: not again through the error's source chain.
    assert_eq!(
        err.matches("(os error 2)").count(),
        1,
        "the reason is not said exactly once:\n{err}"
    );
}

#[test]
fn replay_names_a_missing_policy_and_why_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let policy = dir.path().join("absent.toml");
    let trace = synth(dir.path(), "t.jsonl", "legit_only", 1, 50);
    let out = run([
        "replay".as_ref(),
        "--trace".as_ref(),
        trace.as_os_str(),
        "--policy".as_ref(),
        policy.as_os_str(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.contains(&format!("loading policy: {}", policy.display())),
        "stderr does not name the policy file:\n{err}"
    );
    assert_eq!(
        err.matches("(os error 2)").count(),
        1,
        "the reason is not said exactly once:\n{err}"
    );
}

#[test]
fn check_policy_names_an_unknown_key() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let policy = dir.path().join("typo.toml");
    std::fs::write(&policy, "[defaults.lockout]\ntreshold = 4\n").expect("write policy");
    let out = run(["check-policy".as_ref(), policy.as_os_str()]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "check-policy should exit 1; stderr:\n{err}"
    );
    assert!(
        err.contains("treshold"),
        "stderr does not name the unknown key:\n{err}"
    );
    assert!(
        err.contains("lockout"),
        "stderr does not say where the unknown key is:\n{err}"
    );
}

#[test]
fn replay_stops_at_a_bad_line_with_its_number() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = dir.path().join("bad.jsonl");
    let tokens = ["pwtok-first-41c7", "pwtok-second-9e02", "pwtok-third-d3b5"];
    let lines = [
        format!(
            r#"{{"ts":"2026-11-03T06:00:00.000Z","user":"ann@x.test","ip":"192.0.2.1","pw":"{}","truth":"wrong"}}"#,
            tokens[0]
        ),
        format!(
            r#"{{"ts":"the third of november","user":"bob@x.test","ip":"192.0.2.2","pw":"{}","truth":"wrong"}}"#,
            tokens[1]
        ),
        format!(
            r#"{{"ts":"2026-11-03T06:00:02.000Z","user":"cy@x.test","ip":"192.0.2.3","pw":"{}","truth":"correct"}}"#,
            tokens[2]
        ),
    ];
    std::fs::write(&trace, lines.join("\n") + "\n").expect("write trace");
    let out = run(replay_args(&trace, std::iter::empty::<&str>()));
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "replay accepted a trace with a bad ts; stdout:\n{}",
        stdout(&out)
    );
    assert!(
        err.contains("line 2"),
        "stderr does not give the line number:\n{err}"
    );
    assert!(err.contains("ts"), "stderr does not name the field:\n{err}");
    for t in tokens {
        assert!(!err.contains(t), "stderr carries the pw token {t}:\n{err}");
        assert!(!stdout(&out).contains(t), "stdout carries the pw token {t}");
    }
}

#[test]
fn replay_reads_gzip_traces() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let plain = synth(dir.path(), "plain.jsonl", "brute_targeted", 5, 150);
    let gz = dir.path().join("packed.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).expect("create gz"),
        flate2::Compression::default(),
    );
    enc.write_all(&std::fs::read(&plain).expect("read trace"))
        .expect("compress");
    enc.finish().expect("finish gzip");
    let bytes = std::fs::read(&gz).expect("read gz");
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "not a gzip file");

    let from_plain = scores(replay_report(&default_policy(), &plain));
    let from_gz = scores(replay_report(&default_policy(), &gz));
    assert!(
        field(&from_gz, "/events") > 0,
        "no events read from the gzip trace"
    );
    assert_eq!(
        from_gz, from_plain,
        "the gzip trace scored differently from the same trace uncompressed"
    );
}

/// Without `--preload` a reader thread parses and prepares the trace chunk by chunk while the
/// engine thread decides: in the trace's order, the events score as the trace read whole first,
/// with the two threads pinned to two CPUs (the default) or left to the scheduler (`--no-pin`).
#[test]
fn replay_read_ahead_scores_as_the_trace_preloaded_pinned_or_not() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // 9,745 events: 38 chunks of 256.
    let trace = synth(dir.path(), "week.jsonl", "mixed_week", 11, 600);
    let report = |extra: &[&str]| {
        let mut args = replay_args(&trace, ["--json"]);
        args.extend(extra.iter().map(OsString::from));
        let out = run(args);
        assert!(out.status.success(), "replay failed: {}", stderr(&out));
        scores(serde_json::from_str(&stdout(&out)).expect("a JSON report"))
    };
    let whole = report(&["--preload"]);
    assert!(
        field(&whole, "/events") > 2_000,
        "too few events to span chunks"
    );
    for _ in 0..3 {
        assert_eq!(
            report(&[]),
            whole,
            "read ahead on two CPUs of their own, the trace scored differently"
        );
        assert_eq!(
            report(&["--no-pin"]),
            whole,
            "read ahead where the OS put the threads, the trace scored differently"
        );
    }
}

#[test]
fn replay_report_has_every_field() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = synth(dir.path(), "mixed.jsonl", "mixed_week", 9, 200);
    let report_path = dir.path().join("report.json");
    let out = run(replay_args(
        &trace,
        [
            OsStr::new("--report"),
            report_path.as_os_str(),
            OsStr::new("--json"),
        ],
    ));
    assert!(out.status.success(), "replay failed: {}", stderr(&out));
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&report_path).expect("replay wrote the report"),
    )
    .expect("the report is JSON");
    let printed: Value = serde_json::from_str(&stdout(&out)).expect("--json prints JSON");
    assert_eq!(
        printed, report,
        "--json printed a different report than --report wrote"
    );

    let counts = [
        "/events",
        "/legit/attempts",
        "/legit/forwarded",
        "/legit/blocked",
        "/legit/succeeded",
        "/legit/harmed",
        "/legit/users_harmed",
        "/attack/attempts",
        "/attack/forwarded",
        "/attack/blocked",
        "/attack/succeeded",
        "/attack/accounts_compromised",
        "/directory/lockout_events",
        "/directory/accounts_locked",
        "/directory/legit_users_locked",
        "/accounts_flagged",
    ];
    for c in counts {
        field(&report, c);
    }
    for f in ["/wall_seconds", "/events_per_second"] {
        let v = report.pointer(f).and_then(Value::as_f64);
        assert!(
            v.is_some_and(|v| v > 0.0),
            "{f} is not a positive number: {report}"
        );
    }
    let decisions = report
        .pointer("/decisions")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no decisions object: {report}"));
    let decided: u64 = decisions
        .iter()
        .map(|(k, v)| {
            v.as_u64()
                .unwrap_or_else(|| panic!("decisions.{k} is not a count"))
        })
        .sum();

    let events = field(&report, "/events");
    let (la, lf, lb) = (
        field(&report, "/legit/attempts"),
        field(&report, "/legit/forwarded"),
        field(&report, "/legit/blocked"),
    );
    let (aa, af, ab) = (
        field(&report, "/attack/attempts"),
        field(&report, "/attack/forwarded"),
        field(&report, "/attack/blocked"),
    );
    assert!(
        la > 0 && aa > 0,
        "a mixed week has legit and attack traffic: {report}"
    );
    assert_eq!(
        la + aa,
        events,
        "every synthetic event is labelled: {report}"
    );
    assert_eq!(
        lf + lb,
        la,
        "legit forwarded + blocked != attempts: {report}"
    );
    assert_eq!(
        af + ab,
        aa,
        "attack forwarded + blocked != attempts: {report}"
    );
    assert_eq!(
        decided, events,
        "decisions do not add up to the events: {report}"
    );
    assert_eq!(
        decisions
            .get("forward")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        lf + af,
        "decisions.forward != forwarded attempts: {report}"
    );
}

#[test]
fn synth_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let a = std::fs::read(synth(dir.path(), "a.jsonl", "spray_lowslow", 77, 200)).expect("a");
    let b = std::fs::read(synth(dir.path(), "b.jsonl", "spray_lowslow", 77, 200)).expect("b");
    let c = std::fs::read(synth(dir.path(), "c.jsonl", "spray_lowslow", 78, 200)).expect("c");
    assert!(!a.is_empty(), "synth wrote an empty trace");
    assert!(a == b, "the same seed wrote different traces");
    assert!(a != c, "seeds 77 and 78 wrote the same trace");
}

#[test]
fn demo_prints_a_report() {
    let out = run(["demo", "--users", "300"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    assert!(
        text.contains("\"events\""),
        "demo printed no report:\n{text}"
    );
    assert!(
        text.contains("\"accounts_locked\": 0"),
        "demo's report does not show zero directory lockouts:\n{text}"
    );
    let json_start = text
        .find("\n{")
        .unwrap_or_else(|| panic!("no JSON object in demo output:\n{text}"));
    let report: Value =
        serde_json::from_str(&text[json_start..]).expect("demo's report is valid JSON");
    assert!(
        field(&report, "/events") > 0,
        "demo replayed nothing: {report}"
    );
    assert!(
        field(&report, "/attack/attempts") > 0,
        "demo had no attack: {report}"
    );
    assert_eq!(field(&report, "/directory/accounts_locked"), 0, "{report}");
}

#[test]
fn no_output_carries_a_password_token() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let raw = synth(dir.path(), "raw.jsonl", "mixed_week", 31, 200);
    // Give every token a marker, so a leak of any part of it can be searched for without
    // tripping on the digits of an unrelated number.
    const MARK: &str = "pwtok";
    let mut tokens = std::collections::BTreeSet::new();
    let mut lines = Vec::new();
    for line in std::fs::read_to_string(&raw).expect("read trace").lines() {
        let mut ev: Value = serde_json::from_str(line).expect("synth writes JSON lines");
        let pw = ev["pw"].as_str().expect("every event has a pw").to_string();
        let marked = format!("{MARK}{pw}");
        ev["pw"] = Value::String(marked.clone());
        tokens.insert(marked);
        lines.push(ev.to_string());
    }
    assert!(
        tokens.len() > 10,
        "too few distinct tokens to test: {}",
        tokens.len()
    );
    let trace = dir.path().join("marked.jsonl");
    std::fs::write(&trace, lines.join("\n") + "\n").expect("write trace");

    let report_path = dir.path().join("report.json");
    let mut outputs = Vec::new();
    for json in [false, true] {
        let mut args = replay_args(&trace, [OsStr::new("--report"), report_path.as_os_str()]);
        if json {
            args.push("--json".into());
        }
        let out = run(args);
        assert!(out.status.success(), "replay failed: {}", stderr(&out));
        outputs.push((format!("stdout (json {json})"), stdout(&out)));
        outputs.push((format!("stderr (json {json})"), stderr(&out)));
        let report = std::fs::read_to_string(&report_path).expect("replay wrote the report");
        outputs.push((format!("report (json {json})"), report));
    }
    let report: Value = serde_json::from_str(&outputs[2].1).expect("report is JSON");
    assert!(
        field(&report, "/attack/blocked") > 0,
        "the default policy blocked nothing, so blocked paths were not exercised: {report}"
    );
    for (what, text) in &outputs {
        assert!(
            !text.contains(MARK),
            "{what} carries a password token:\n{text}"
        );
        for t in &tokens {
            assert!(!text.contains(t.as_str()), "{what} carries the token {t}");
        }
    }
}
