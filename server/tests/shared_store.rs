//! The shared store decides as one engine would, however attempts are spread over instances.
//!
//! Model-based: random attempts go round random instances (N = 1..4, in-process, one Redis, one
//! namespace per case) and, in the same order and at the same instants, to a single in-memory
//! `Engine` with the same policy and secret. Every decision must match, and the simulated
//! directory behind the instances must never lock an account.

mod common;

use common::redis_util;
use portcullis_engine::replay::SimDirectory;
use portcullis_engine::trace::Truth;
use portcullis_engine::{Attempt, Engine, Options, Policy, Timestamp, Verdict};
use portcullis_server::shared::{RedisStore, StoreOptions};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::net::IpAddr;
use std::sync::Arc;

const T0: i64 = 1_793_000_000_000;

/// A random valid policy (as the engine's invariant test draws them), with rate limits out of the
/// way: governor stays per instance.
fn policy() -> impl Strategy<Value = String> {
    (3u32..=12, any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1u64..=60)
        .prop_flat_map(|(t, r, fr, window_min)| {
            let reserve = r.index((t - 1) as usize) as u32;
            let familiar_reserve = fr.index(reserve as usize + 1) as u32;
            (
                Just((t, reserve, familiar_reserve, window_min)),
                1..t,
                1..t,
                0u32..=5,
                2u32..=6,
                2u32..=6,
                any::<bool>(),
                1u64..=300,
                any::<bool>(),
            )
        })
        .prop_map(|((t, reserve, fr, window_min), lt, lft, remember, app, aps, exempt, lock_s, log_only)| {
            let mode = if log_only { "log_only" } else { "enforce" };
            format!(
                "[defaults]\nmode = \"{mode}\"\n\
                 [defaults.directory]\nlockout_threshold = {t}\nreserve = {reserve}\nfamiliar_reserve = {fr}\n\
                 observation_window = \"{window_min}m\"\nlockout_duration = \"30m\"\n\
                 [defaults.lockout]\nthreshold = {lt}\nfamiliar_threshold = {lft}\nremember_bad = {remember}\n\
                 duration = \"{lock_s}s\"\nmax_duration = \"1h\"\n\
                 [defaults.spray]\naccounts_per_password = {app}\naccounts_per_source = {aps}\nclean_source_exempt = {exempt}\n\
                 [defaults.familiar]\nshared_after_accounts = 3\n\
                 [defaults.sources]\nmax_failures = 6\nrate_per_second = 1000000\nrate_burst = 1000000\n"
            )
        })
}

#[derive(Clone, Debug)]
enum Op {
    /// An attempt through instance `via`; `deliver_now`: the agent answers at once.
    Try {
        user: u8,
        source: u8,
        pw: u8,
        via: u8,
        deliver_now: bool,
    },
    /// The agent answers the `k`-th attempt in flight, reported through instance `via`.
    Deliver(usize, u8),
    /// Every attempt in flight is answered, then time moves on (ms).
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0u8..8, 0u8..6, 0u8..4, any::<bool>())
            .prop_map(|(user, source, pw, via, deliver_now)| Op::Try { user, source, pw, via, deliver_now }),
        2 => (any::<prop::sample::Index>(), 0u8..4).prop_map(|(i, via)| Op::Deliver(i.index(1 << 16), via)),
        2 => prop_oneof![1u32..5_000, 60_000u32..1_800_000].prop_map(Op::Advance),
    ]
}

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
const USERS: [&str; 4] = ["ann", "ben", "cy", "ghost"];

struct InFlight {
    shared_id: u64,
    local_id: u64,
    user: u8,
    truth: Truth,
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

async fn run_case(policy_toml: &str, instances: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let policy = Policy::from_toml(policy_toml).expect("generated policies are valid");
    let ns = redis_util::namespace("prop");
    let mut opts = StoreOptions::new(redis_util::URL);
    opts.namespace = ns.clone();
    opts.timeout = std::time::Duration::from_secs(5);
    let mut stores = Vec::new();
    for _ in 0..instances {
        stores.push(Arc::new(
            RedisStore::open(&opts, policy.clone())
                .await
                .expect("redis store"),
        ));
    }
    let engine = Engine::new(policy.clone(), Options::in_memory(stores[0].secret())).unwrap();
    let mut dir = SimDirectory::default();
    let mut now = T0;
    let mut flight: Vec<InFlight> = Vec::new();

    let result = async {
        for (step, op) in ops.into_iter().enumerate() {
            let mut to_deliver: Vec<(InFlight, usize)> = Vec::new();
            match op {
                Op::Try {
                    user,
                    source,
                    pw,
                    via,
                    deliver_now,
                } => {
                    let truth = if user == 3 {
                        Truth::UnknownUser
                    } else if pw == user {
                        Truth::Correct
                    } else {
                        Truth::Wrong
                    };
                    let token = [b'p', b'0' + pw];
                    let ip: IpAddr = SOURCES[source as usize].parse().unwrap();
                    let a = Attempt {
                        tenant: "contoso",
                        user: USERS[user as usize],
                        ip,
                        fingerprint: Some(&token),
                    };
                    let want = engine.check(&a, at(now)).unwrap();
                    let store = &stores[via as usize % instances];
                    let got = store.check(&a, at(now)).await.expect("shared check");
                    let (mut w, mut g) = (want.clone(), got.clone());
                    w.attempt_id = None;
                    g.attempt_id = None;
                    prop_assert_eq!(
                        &g,
                        &w,
                        "step {} at {}: shared decision differs\npolicy:\n{}",
                        step,
                        now,
                        policy_toml
                    );
                    if got.verdict == Verdict::Forward {
                        let f = InFlight {
                            shared_id: got.attempt_id.unwrap(),
                            local_id: want.attempt_id.unwrap(),
                            user,
                            truth,
                        };
                        if deliver_now {
                            to_deliver.push((f, via as usize));
                        } else {
                            flight.push(f);
                        }
                    }
                }
                Op::Deliver(k, via) => {
                    if !flight.is_empty() {
                        to_deliver.push((flight.remove(k % flight.len()), via as usize));
                    }
                }
                Op::Advance(dt) => {
                    to_deliver.extend(flight.drain(..).enumerate().map(|(i, f)| (f, i)));
                    for (f, via) in to_deliver.drain(..) {
                        deliver(
                            &policy,
                            &mut dir,
                            &engine,
                            &stores[via % instances],
                            f,
                            now,
                            policy_toml,
                        )
                        .await?;
                    }
                    now += i64::from(dt);
                }
            }
            for (f, via) in to_deliver {
                deliver(
                    &policy,
                    &mut dir,
                    &engine,
                    &stores[via % instances],
                    f,
                    now,
                    policy_toml,
                )
                .await?;
            }
        }
        for (i, f) in flight.drain(..).enumerate() {
            deliver(
                &policy,
                &mut dir,
                &engine,
                &stores[i % instances],
                f,
                now,
                policy_toml,
            )
            .await?;
        }
        Ok(())
    }
    .await;
    redis_util::cleanup(redis_util::URL, &ns).await;
    result
}

async fn deliver(
    policy: &Policy,
    dir: &mut SimDirectory,
    engine: &Engine,
    store: &RedisStore,
    f: InFlight,
    now: i64,
    policy_toml: &str,
) -> Result<(), TestCaseError> {
    let user = USERS[f.user as usize];
    let (outcome, locked) = dir.answer(policy, "contoso", user, f.truth, now);
    let log_only = policy.defaults.mode == portcullis_engine::Mode::LogOnly;
    prop_assert!(
        log_only || !locked,
        "the directory locked {} at {}\npolicy:\n{}",
        user,
        now,
        policy_toml
    );
    let want = engine.outcome(f.local_id, outcome, None, at(now)).unwrap();
    let (got, tenant) = store
        .outcome(f.shared_id, outcome, None, at(now))
        .await
        .expect("shared outcome");
    prop_assert_eq!(got, want, "outcome effects differ at {}", now);
    prop_assert_eq!(tenant, "contoso");
    // Applied once: a second report of the same id is refused.
    prop_assert!(store
        .outcome(f.shared_id, outcome, None, at(now))
        .await
        .is_err());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn instances_on_one_redis_decide_as_one_engine(
        policy_toml in policy(),
        instances in 1usize..=4,
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        if !redis_util::available("instances_on_one_redis_decide_as_one_engine") {
            return Ok(());
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_case(&policy_toml, instances, ops))?;
    }
}

/// Concurrent checks of one account on four instances at the same instant never forward more
/// than the account's directory budget, however the compare-and-swaps interleave.
#[test]
fn concurrent_checks_never_overspend_the_budget() {
    if !redis_util::available("concurrent_checks_never_overspend_the_budget") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let toml = "[defaults.directory]\nlockout_threshold = 10\nreserve = 3\n\
                    [defaults.lockout]\nremember_bad = 0\n\
                    [defaults.sources]\nmax_failures = 1000\nrate_per_second = 1000000\nrate_burst = 1000000\n\
                    [defaults.spray]\naccounts_per_source = 1000\n";
        let policy = Policy::from_toml(toml).unwrap();
        let budget = policy.defaults.budget(false);
        let ns = redis_util::namespace("race");
        let mut opts = StoreOptions::new(redis_util::URL);
        opts.namespace = ns.clone();
        opts.timeout = std::time::Duration::from_secs(10);
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(Arc::new(RedisStore::open(&opts, policy.clone()).await.unwrap()));
        }
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let store = stores[i as usize % 4].clone();
            tasks.push(tokio::spawn(async move {
                let ip: IpAddr = format!("198.51.{}.{}", i / 200, i % 200 + 1).parse().unwrap();
                let pw = i.to_le_bytes();
                let a = Attempt { tenant: "contoso", user: "victim", ip, fingerprint: Some(&pw) };
                store.check(&a, at(T0)).await.unwrap().verdict == Verdict::Forward
            }));
        }
        let mut forwarded = 0;
        for t in tasks {
            forwarded += u32::from(t.await.unwrap());
        }
        redis_util::cleanup(redis_util::URL, &ns).await;
        assert_eq!(forwarded, budget, "64 concurrent attempts on 4 instances, budget {budget}");
    });
}
