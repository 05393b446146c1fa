//! `portcullis-speed memory` on a few thousand accounts: it reports what it measured, and its
//! second pass over the tracked accounts tracks no new one. `portcullis-speed rate` says how it
//! ran housekeeping. Nothing here is timed.

use serde_json::Value;
use std::process::Command;

const SPEED: &str = env!("CARGO_BIN_EXE_portcullis-speed");

/// Runs `portcullis-speed` with `args`, requires it to succeed and returns its JSON line.
fn speed(args: &[&str]) -> Value {
    let out = Command::new(SPEED)
        .args(args)
        .output()
        .expect("portcullis-speed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

#[test]
fn memory_reports_live_and_resident_bytes_and_its_steady_pass_tracks_no_new_account() {
    let r = speed(&["memory", "--accounts", "5000"]);
    // The 5,000 accounts and the 256 tracked before counting.
    assert_eq!(r["accounts"], 5256, "{r}");
    let live = r["bytes_per_account"].as_f64().expect("bytes_per_account");
    let steady = r["steady_bytes_per_account"]
        .as_f64()
        .expect("steady_bytes_per_account");
    // An account is at least its key, its record and its name.
    assert!(live > 100.0, "{r}");
    // The steady pass decides on tracked accounts only: live bytes barely move.
    assert!((steady - live).abs() < 0.05 * live, "{r}");
    for k in ["rss_bytes_per_account", "steady_rss_bytes_per_account"] {
        assert!(r[k].as_f64().is_some(), "{k} missing: {r}");
    }
}

#[test]
fn rate_says_how_housekeeping_ran_and_counts_its_calls() {
    let r = speed(&["rate", "--threads", "2", "--seconds", "0.5"]);
    assert_eq!(r["maintain"], "every 1 s", "{r}");
    assert!(r["maintain_calls"].as_u64().is_some(), "{r}");
    assert_eq!(r["errors"], 0, "{r}");

    let r = speed(&["rate", "--seconds", "0.5", "--maintain-every", "1000"]);
    assert_eq!(r["maintain"], "every 1000 attempts", "{r}");
    let attempts = r["attempts"].as_u64().expect("attempts");
    // The worker runs whole blocks of 10,000 attempts: ten calls each.
    assert_eq!(r["maintain_calls"].as_u64(), Some(attempts / 1000), "{r}");
    assert_eq!(r["errors"], 0, "{r}");
}
