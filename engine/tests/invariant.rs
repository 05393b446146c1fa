//! The core promise as a property: whatever the sources, timing, concurrency and order of
//! attempts, and whatever valid policy is in force, traffic that passed through the engine never
//! locks an account in the (simulated) directory.

mod common;

use common::*;
use portcullis_engine::replay::SimDirectory;
use portcullis_engine::trace::Truth;
use portcullis_engine::{Attempt, Engine, Options, Outcome, Policy, Verdict};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// A random valid policy, written as TOML so that it goes through the real loader.
fn policy() -> impl Strategy<Value = String> {
    (3u32..=15, any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1u64..=60, 1u64..=60)
        .prop_flat_map(|(t, r, fr, window_min, lock_min)| {
            let reserve = r.index((t - 1) as usize) as u32; // 0..=t-2: budget >= 1
            let familiar_reserve = fr.index(reserve as usize + 1) as u32;
            (
                Just((t, reserve, familiar_reserve, window_min, lock_min)),
                1..t,
                1..t,
                0u32..=5,
                2u32..=6,
                2u32..=6,
                any::<bool>(),
                1u64..=300,
            )
        })
        .prop_map(|((t, reserve, fr, window_min, lock_min), lt, lft, remember, app, aps, exempt, lock_s)| {
            format!(
                "[defaults.directory]\nlockout_threshold = {t}\nreserve = {reserve}\nfamiliar_reserve = {fr}\n\
                 observation_window = \"{window_min}m\"\nlockout_duration = \"{lock_min}m\"\n\
                 [defaults.lockout]\nthreshold = {lt}\nfamiliar_threshold = {lft}\nremember_bad = {remember}\n\
                 duration = \"{lock_s}s\"\nmax_duration = \"1h\"\n\
                 [defaults.spray]\naccounts_per_password = {app}\naccounts_per_source = {aps}\nclean_source_exempt = {exempt}\n\
                 [defaults.familiar]\nshared_after_accounts = 3\n"
            )
        })
}

#[derive(Clone, Debug)]
enum Op {
    /// An attempt; `deliver_now` = the agent answers before anything else happens.
    Try {
        user: u8,
        source: u8,
        pw: u8,
        deliver_now: bool,
    },
    /// The agent answers the `k`-th oldest attempt in flight.
    Deliver(usize),
    /// Every attempt in flight is answered, then time moves on.
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0u8..8, 0u8..6, any::<bool>()).prop_map(|(user, source, pw, deliver_now)| Op::Try { user, source, pw, deliver_now }),
        2 => any::<prop::sample::Index>().prop_map(|i| Op::Deliver(i.index(1 << 16))),
        2 => prop_oneof![1u32..5_000, 60_000u32..1_800_000].prop_map(Op::Advance),
    ]
}

/// Sources: two homes, an office sharing a /24 with an attacker, scattered attackers, IPv6.
const SOURCES: [&str; 8] = [
    "10.0.0.5",
    "10.0.1.5",
    "203.0.113.10",
    "203.0.113.99",
    "198.51.100.1",
    "192.0.2.77",
    "2001:db8:1:2::5",
    "::ffff:198.51.100.1",
];

struct InFlight {
    id: u64,
    user: u8,
    truth: Truth,
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn directory_never_locks_an_account(policy_toml in policy(), ops in proptest::collection::vec(op(), 1..300)) {
        let policy = Policy::from_toml(&policy_toml).expect("generated policies are valid");
        let engine = Engine::new(policy.clone(), Options::in_memory([3; 32])).unwrap();
        let mut dir = SimDirectory::default();
        let mut now = T0;
        let mut flight: Vec<InFlight> = Vec::new();
        let users = ["ann", "ben", "cy", "ghost"];

        let deliver = |f: InFlight, now: i64, dir: &mut SimDirectory, engine: &Engine| -> Result<(), TestCaseError> {
            let (outcome, locked) = dir.answer(&policy, "contoso", users[f.user as usize], f.truth, now);
            prop_assert!(!locked, "the directory locked {} at {now}\npolicy:\n{policy_toml}", users[f.user as usize]);
            prop_assert_ne!(outcome, Outcome::Locked);
            engine.outcome(f.id, outcome, None, at(now)).unwrap();
            Ok(())
        };

        for op in ops {
            match op {
                Op::Try { user, source, pw, deliver_now } => {
                    // User u's password is token u; "ghost" does not exist.
                    let truth = if user == 3 { Truth::UnknownUser } else if pw == user { Truth::Correct } else { Truth::Wrong };
                    let token = [b'p', b'0' + pw];
                    let d = engine.check(
                        &Attempt { tenant: "contoso", user: users[user as usize], ip: ip(SOURCES[source as usize]), fingerprint: Some(&token) },
                        at(now),
                    ).unwrap();
                    if d.verdict == Verdict::Forward {
                        let f = InFlight { id: d.attempt_id.unwrap(), user, truth };
                        if deliver_now { deliver(f, now, &mut dir, &engine)?; } else { flight.push(f); }
                    }
                }
                Op::Deliver(k) => {
                    if !flight.is_empty() {
                        let f = flight.remove(k % flight.len());
                        deliver(f, now, &mut dir, &engine)?;
                    }
                }
                Op::Advance(dt) => {
                    for f in flight.drain(..) {
                        deliver(f, now, &mut dir, &engine)?;
                    }
                    now += i64::from(dt);
                }
            }
        }
        for f in flight.drain(..) {
            deliver(f, now, &mut dir, &engine)?;
        }
    }
}
