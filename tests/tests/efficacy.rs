//! Efficacy of the shipped default policy on the shared traces (`../shared/data/`), against the
//! reference policies' scores in their `BASELINES.md`. Skipped when `../shared/` is absent.

use portcullis_tests::{baselines, default_policy, field, replay_report, require_shared};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Replays one trace with the default policy and checks the directory locked no account.
fn replay_without_directory_lockout(trace: &Path) -> Value {
    let report = replay_report(&default_policy(), trace);
    let locked = field(&report, "/directory/accounts_locked");
    assert_eq!(
        locked,
        0,
        "{}: the directory locked {locked} account(s) under the default policy \
         ({} lockout events, {} with legit traffic)",
        trace.display(),
        field(&report, "/directory/lockout_events"),
        field(&report, "/directory/legit_users_locked"),
    );
    report
}

/// The default policy on `synthetic/<name>.jsonl`: no directory lockout, and no more compromised
/// accounts or harmed users than the best baseline; with `strictly_fewer_compromised`, strictly
/// fewer compromised accounts than the best baseline whenever that best is above zero.
fn beats_baselines(shared: &Path, name: &str, strictly_fewer_compromised: bool) {
    let dir = shared.join("data").join("synthetic");
    let file = format!("{name}.jsonl");
    let all = baselines(&dir.join("BASELINES.md"));
    let rows = all
        .get(&file)
        .unwrap_or_else(|| panic!("synthetic/BASELINES.md has no rows for {file}"));
    assert!(!rows.is_empty(), "no baselines for {file}");
    let best_compromised = rows
        .iter()
        .min_by_key(|b| b.compromised)
        .expect("non-empty");
    let best_harmed = rows
        .iter()
        .min_by_key(|b| b.users_harmed)
        .expect("non-empty");

    let report = replay_without_directory_lockout(&dir.join(&file));
    let compromised = field(&report, "/attack/accounts_compromised");
    let harmed = field(&report, "/legit/users_harmed");
    eprintln!(
        "{file}: default policy compromised {compromised}, users harmed {harmed}; \
         best baseline compromised {} ({}), users harmed {} ({})",
        best_compromised.compromised,
        best_compromised.policy,
        best_harmed.users_harmed,
        best_harmed.policy
    );
    assert!(
        compromised <= best_compromised.compromised,
        "{file}: default policy compromised {compromised} account(s), more than the best \
         baseline `{}` with {}",
        best_compromised.policy,
        best_compromised.compromised
    );
    assert!(
        harmed <= best_harmed.users_harmed,
        "{file}: default policy harmed {harmed} legit user(s), more than the best baseline \
         `{}` with {}",
        best_harmed.policy,
        best_harmed.users_harmed
    );
    if strictly_fewer_compromised && best_compromised.compromised > 0 {
        assert!(
            compromised < best_compromised.compromised,
            "{file}: default policy compromised {compromised} account(s), not fewer than the \
             best baseline `{}` with {}",
            best_compromised.policy,
            best_compromised.compromised
        );
    }
}

#[test]
fn default_policy_beats_baselines_on_spray_lowslow() {
    let shared = require_shared!();
    beats_baselines(&shared, "spray_lowslow", true);
}

#[test]
fn default_policy_beats_baselines_on_brute_targeted() {
    let shared = require_shared!();
    beats_baselines(&shared, "brute_targeted", true);
}

#[test]
fn default_policy_beats_baselines_on_ipv6_rotation() {
    let shared = require_shared!();
    beats_baselines(&shared, "ipv6_rotation", true);
}

#[test]
fn default_policy_beats_baselines_on_name_variants() {
    let shared = require_shared!();
    beats_baselines(&shared, "name_variants", true);
}

#[test]
fn default_policy_beats_baselines_on_mixed_week() {
    let shared = require_shared!();
    beats_baselines(&shared, "mixed_week", true);
}

#[test]
fn default_policy_matches_baselines_on_stuffing() {
    let shared = require_shared!();
    beats_baselines(&shared, "stuffing", false);
}

#[test]
fn default_policy_matches_baselines_on_distributed_one_user() {
    let shared = require_shared!();
    beats_baselines(&shared, "distributed_one_user", false);
}

#[test]
fn default_policy_harms_no_more_than_baselines_on_legit_only() {
    let shared = require_shared!();
    beats_baselines(&shared, "legit_only", false);
}

#[test]
fn default_policy_never_locks_a_directory_account_on_loghub_openssh() {
    let shared = require_shared!();
    replay_without_directory_lockout(&shared.join("data/real/loghub_openssh_2k.jsonl"));
}

#[test]
fn default_policy_never_locks_a_directory_account_on_mordor_spray() {
    let shared = require_shared!();
    replay_without_directory_lockout(&shared.join("data/real/mordor_purplesharp_spray.jsonl"));
}

#[test]
fn default_policy_never_locks_a_directory_account_on_cowrie_honeypot() {
    let shared = require_shared!();
    replay_without_directory_lockout(&shared.join("data/real/cowrie_kareiva_2018.jsonl.gz"));
}

/// The traces of `dir` whose names end in one of `suffixes`.
fn traces_in(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            suffixes.iter().any(|s| name.ends_with(s))
        })
        .collect();
    out.sort();
    out
}

/// Catches traces added to the shared data after the tests above were written: every one of
/// them, synthetic and real, replays with no directory lockout, and each has baselines.
#[test]
fn default_policy_never_locks_a_directory_account_on_any_shared_trace() {
    let shared = require_shared!();
    let synthetic = shared.join("data").join("synthetic");
    let real = shared.join("data").join("real");
    let synthetic_traces = traces_in(&synthetic, &[".jsonl"]);
    let mut traces = synthetic_traces.clone();
    traces.extend(traces_in(&real, &[".jsonl", ".jsonl.gz"]));
    assert!(
        synthetic_traces.len() >= 8,
        "expected the 8 synthetic traces in {}, found {synthetic_traces:?}",
        synthetic.display()
    );
    let known_synthetic = baselines(&synthetic.join("BASELINES.md"));
    let known_real = baselines(&real.join("BASELINES.md"));
    for t in &traces {
        let name = t.file_name().and_then(|n| n.to_str()).expect("utf-8 name");
        assert!(
            known_synthetic.contains_key(name) || known_real.contains_key(name),
            "no BASELINES.md has rows for {}",
            t.display()
        );
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = traces
            .iter()
            .map(|t| s.spawn(move || replay_without_directory_lockout(t)))
            .collect();
        for (t, h) in traces.iter().zip(handles) {
            if let Err(panic) = h.join() {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{}: {msg}", t.display());
            }
        }
    });
}
