//! The default policy on traces it was not tuned on: every `portcullis synth` scenario with a
//! seed and a tenant size unlike the shipped samples, against the "none" baseline (a `log_only`
//! copy of the default policy, which forwards everything). Needs nothing outside the repository.

use portcullis_tests::{default_policy, field, replay_report, run, write_log_only_policy};

/// Unlike the shipped samples (seed 20261, 2000 users) and the `synth` defaults (seed 1).
const SEED: u64 = 4242;
const USERS: usize = 3000;

/// Synthesises `scenario`, replays it under the default policy and under log_only, prints both
/// scores and checks the default policy locks no directory account and is no worse than log_only
/// on compromised accounts and harmed users.
fn no_worse_than_none(scenario: &str) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = dir.path().join(format!("{scenario}.jsonl"));
    let out = run([
        "synth",
        "--scenario",
        scenario,
        "--out",
        trace.to_str().expect("utf-8 temp path"),
        "--seed",
        &SEED.to_string(),
        "--users",
        &USERS.to_string(),
    ]);
    assert!(
        out.status.success(),
        "synth {scenario} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let none_policy = write_log_only_policy(dir.path());
    let none = replay_report(&none_policy, &trace);
    let ours = replay_report(&default_policy(), &trace);
    let (events, none_attack_blocked, none_legit_blocked) = (
        field(&none, "/events"),
        field(&none, "/attack/blocked"),
        field(&none, "/legit/blocked"),
    );
    assert!(events > 0, "{scenario}: synth wrote an empty trace");
    assert_eq!(
        (none_attack_blocked, none_legit_blocked),
        (0, 0),
        "{scenario}: the log_only baseline blocked attempts (attack, legit); it must forward all"
    );

    let compromised = field(&ours, "/attack/accounts_compromised");
    let none_compromised = field(&none, "/attack/accounts_compromised");
    let harmed = field(&ours, "/legit/users_harmed");
    let none_harmed = field(&none, "/legit/users_harmed");
    let locked = field(&ours, "/directory/accounts_locked");
    let none_locked = field(&none, "/directory/accounts_locked");
    println!(
        "generalisation {scenario} (seed {SEED}, {USERS} users, {events} events): \
         default compromised {compromised}, users harmed {harmed}, directory accounts locked \
         {locked}, attack blocked {} of {}; none compromised {none_compromised}, users harmed \
         {none_harmed}, directory accounts locked {none_locked}",
        field(&ours, "/attack/blocked"),
        field(&ours, "/attack/attempts"),
    );
    assert_eq!(
        locked, 0,
        "{scenario} (seed {SEED}, {USERS} users): the default policy let the directory lock \
         {locked} account(s) (none baseline: {none_locked})"
    );
    assert!(
        compromised <= none_compromised,
        "{scenario} (seed {SEED}, {USERS} users): the default policy compromised {compromised} \
         account(s), the none baseline {none_compromised}"
    );
    assert!(
        harmed <= none_harmed,
        "{scenario} (seed {SEED}, {USERS} users): the default policy harmed {harmed} legit \
         user(s), the none baseline {none_harmed}"
    );
}

#[test]
fn default_policy_no_worse_than_none_on_fresh_spray_lowslow() {
    no_worse_than_none("spray_lowslow");
}

#[test]
fn default_policy_no_worse_than_none_on_fresh_brute_targeted() {
    no_worse_than_none("brute_targeted");
}

#[test]
fn default_policy_no_worse_than_none_on_fresh_stuffing() {
    no_worse_than_none("stuffing");
}

#[test]
fn default_policy_no_worse_than_none_on_fresh_distributed_one_user() {
    no_worse_than_none("distributed_one_user");
}

#[test]
fn default_policy_no_worse_than_none_on_fresh_ipv6_rotation() {
    no_worse_than_none("ipv6_rotation");
}

#[test]
fn default_policy_no_worse_than_none_on_fresh_name_variants() {
    no_worse_than_none("name_variants");
}

#[test]
fn default_policy_no_worse_than_none_on_fresh_legit_only() {
    no_worse_than_none("legit_only");
}

#[test]
fn default_policy_no_worse_than_none_on_fresh_mixed_week() {
    no_worse_than_none("mixed_week");
}
