//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use portcullis_engine::{Attempt, Decision, Engine, Options, Outcome, Policy, Timestamp, Verdict};
use std::net::IpAddr;

/// One second, ms.
pub const SEC: i64 = 1_000;
/// One minute, ms.
pub const MIN: i64 = 60 * SEC;
/// One hour, ms.
pub const HOUR: i64 = 60 * MIN;
/// The tests' epoch, ms.
pub const T0: i64 = 1_793_000_000_000; // 2026-10-26

/// An in-memory engine under a policy given as TOML. Unless the TOML has a `[defaults.lockout]`
/// table, smart lockout is at five unfamiliar failures, which the rule tests count on.
pub fn engine(policy_toml: &str) -> Engine {
    let toml = if policy_toml.contains("[defaults.lockout]") {
        policy_toml.to_string()
    } else {
        format!("{policy_toml}\n[defaults.lockout]\nthreshold = 5\n")
    };
    let policy = Policy::from_toml(&toml).expect("test policy is valid");
    Engine::new(policy, Options::in_memory([7; 32])).expect("engine")
}

/// Parses a test address.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// The instant `ms`.
pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// Checks one attempt and, if forwarded, reports `result` straight away.
pub fn attempt(
    e: &Engine,
    user: &str,
    from: &str,
    pw: &str,
    result: Outcome,
    now: i64,
) -> Decision {
    let d = e
        .check(
            &Attempt {
                tenant: "contoso",
                user,
                ip: ip(from),
                fingerprint: Some(pw.as_bytes()),
            },
            at(now),
        )
        .expect("check");
    if d.verdict == Verdict::Forward {
        e.outcome(
            d.attempt_id.expect("forwarded attempts have an id"),
            result,
            None,
            at(now),
        )
        .expect("outcome");
    }
    d
}

/// Signs `user` in successfully from `from` so that its prefix becomes familiar.
pub fn sign_in(e: &Engine, user: &str, from: &str, now: i64) {
    let d = attempt(e, user, from, "right-password", Outcome::Success, now);
    assert_eq!(
        d.verdict,
        Verdict::Forward,
        "sign-in of {user} from {from} at {now}: {d:?}"
    );
}
