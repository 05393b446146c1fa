//! `portcullis replay --sweep`: every combination is replayed and reported, a combination the
//! policy validator refuses is reported with its errors, and a malformed `--sweep` is an error.

use portcullis_tests::{default_policy, replay_report, run};
use serde_json::Value;
use std::path::Path;

fn synth(dir: &Path) -> std::path::PathBuf {
    let trace = dir.join("brute.jsonl");
    let out = run([
        "synth".as_ref(),
        "--scenario".as_ref(),
        "brute_targeted".as_ref(),
        "--users".as_ref(),
        "100".as_ref(),
        "--out".as_ref(),
        trace.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    trace
}

fn without_timing(mut v: Value) -> Value {
    let obj = v.as_object_mut().expect("a report");
    obj.remove("wall_seconds");
    obj.remove("events_per_second");
    v
}

#[test]
fn sweep_reports_every_combination_and_the_refused_ones() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = synth(dir.path());
    let json = dir.path().join("sweep.json");
    let out = run([
        "replay".as_ref(),
        "--policy".as_ref(),
        default_policy().as_os_str(),
        "--trace".as_ref(),
        trace.as_os_str(),
        "--sweep".as_ref(),
        "lockout.threshold=5,12".as_ref(),
        "--sweep".as_ref(),
        "mode=enforce,log_only".as_ref(),
        "--report".as_ref(),
        json.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("lockout.threshold") && stdout.contains("refused"),
        "{stdout}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    let sweep = report["sweep"].as_array().expect("a sweep array");
    assert_eq!(sweep.len(), 4, "{report}");
    let params: Vec<String> = sweep.iter().map(|e| e["params"].to_string()).collect();
    assert_eq!(
        params,
        [
            r#"{"lockout.threshold":5,"mode":"enforce"}"#,
            r#"{"lockout.threshold":5,"mode":"log_only"}"#,
            r#"{"lockout.threshold":12,"mode":"enforce"}"#,
            r#"{"lockout.threshold":12,"mode":"log_only"}"#,
        ]
    );
    for refused in &sweep[2..] {
        let errs = refused["refused"].as_array().expect("refused with errors");
        assert!(
            errs.iter()
                .any(|e| e.as_str().is_some_and(|s| s.contains("lockout.threshold"))),
            "{refused}"
        );
        assert!(refused.get("report").is_none(), "{refused}");
    }
    // The (5, enforce) combination is the default policy itself: the same scores as a replay.
    let single = replay_report(&default_policy(), &trace);
    assert_eq!(
        without_timing(sweep[0]["report"].clone()),
        without_timing(single)
    );
    // log_only forwards every attack attempt.
    let log_only = &sweep[1]["report"];
    assert_eq!(log_only["attack"]["blocked"], 0, "{log_only}");
}

#[test]
fn malformed_sweep_is_an_error() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = synth(dir.path());
    let out = run([
        "replay".as_ref(),
        "--trace".as_ref(),
        trace.as_os_str(),
        "--sweep".as_ref(),
        "lockout.threshold".as_ref(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KEY=V1,V2"), "{stderr}");
}
