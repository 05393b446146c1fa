//! One test per engine rule, each driven by explicit timestamps (the injected clock).

mod common;

use common::*;
use portcullis_engine::{Attempt, Familiarity, Outcome, Reason, Timestamp, Verdict};
use std::net::IpAddr;
use std::time::Duration;

const W: Outcome = Outcome::WrongPassword;

#[test]
fn name_variants_share_one_account() {
    let e = engine("");
    let variants = [
        "alice@contoso.com",
        " ALICE@Contoso.com",
        "ａｌｉｃｅ@contoso.com",
        "Alice@contoso.com\u{3000}",
        "\talice@contoso.com",
        "alice@contoso.com ",
    ];
    let mut blocked_at = None;
    for (i, name) in variants.iter().enumerate() {
        let d = attempt(
            &e,
            name,
            "198.51.100.7",
            &format!("guess-{i}"),
            W,
            T0 + i as i64 * SEC,
        );
        if d.verdict != Verdict::Forward {
            blocked_at = Some(i);
            break;
        }
    }
    // Smart lockout (5 unfamiliar failures) counted all spellings as one account.
    assert_eq!(
        blocked_at,
        Some(5),
        "the sixth spelling must hit the same lockout"
    );
}

#[test]
fn unfamiliar_sources_never_spend_more_than_the_budget() {
    // Lockout threshold set high so that only the directory budget stops the attacker.
    let e = engine("[defaults.lockout]\nthreshold = 9\nfamiliar_threshold = 9\nduration = \"1s\"\n[defaults.spray]\naccounts_per_source = 1000\n[defaults.sources]\nmax_failures = 1000\n");
    let mut forwarded = 0;
    for i in 0..20 {
        let from = format!("203.0.{}.{}", i, i + 1);
        let d = attempt(
            &e,
            "bob@contoso.com",
            &from,
            &format!("g{i}"),
            W,
            T0 + i * SEC,
        );
        if d.verdict == Verdict::Forward {
            forwarded += 1;
        } else {
            assert_eq!(
                d.reason,
                Some(Reason::DirectoryBudget),
                "at {}: {d:?}",
                T0 + i * SEC
            );
            assert!(d.retry_after.is_some());
        }
    }
    assert_eq!(forwarded, 6, "threshold 10 - 1 - reserve 3");
}

#[test]
fn attempts_in_flight_count_against_the_budget() {
    let e = engine("[defaults.lockout]\nthreshold = 9\nfamiliar_threshold = 9\n");
    let mut ids = Vec::new();
    for i in 0..50 {
        let d = e
            .check(
                &Attempt {
                    tenant: "contoso",
                    user: "carol",
                    ip: ip(&format!("192.0.2.{i}")),
                    fingerprint: None,
                },
                at(T0),
            )
            .unwrap();
        if let Some(id) = d.attempt_id {
            ids.push(id);
        }
    }
    assert_eq!(
        ids.len(),
        6,
        "a burst of concurrent requests cannot overspend the budget"
    );
    // Outcomes that are not failures give the budget back.
    for id in ids {
        e.outcome(id, Outcome::Timeout, None, at(T0 + SEC)).unwrap();
    }
    let d = e
        .check(
            &Attempt {
                tenant: "contoso",
                user: "carol",
                ip: ip("192.0.2.200"),
                fingerprint: None,
            },
            at(T0 + 2 * SEC),
        )
        .unwrap();
    assert_eq!(d.verdict, Verdict::Forward);
}

#[test]
fn budget_returns_after_the_directory_window() {
    let e = engine("[defaults.lockout]\nthreshold = 9\nfamiliar_threshold = 9\nduration = \"1s\"\n[defaults.spray]\naccounts_per_source = 1000\n");
    for i in 0..6 {
        attempt(
            &e,
            "dave",
            &format!("203.0.113.{i}"),
            &format!("g{i}"),
            W,
            T0 + i * SEC,
        );
    }
    let d = attempt(&e, "dave", "203.0.114.1", "g7", W, T0 + 10 * SEC);
    assert_eq!(d.reason, Some(Reason::DirectoryBudget));
    let later = T0 + 5 * SEC + 30 * MIN;
    let d = attempt(&e, "dave", "203.0.114.1", "g8", W, later);
    assert_eq!(
        d.verdict,
        Verdict::Forward,
        "30 min after the last bad password the directory has reset"
    );
}

#[test]
fn familiar_location_keeps_working_while_unfamiliar_is_locked() {
    let e = engine("");
    sign_in(&e, "erin", "10.1.2.3", T0);
    for i in 0..5 {
        let d = attempt(
            &e,
            "erin",
            &format!("198.18.{i}.9"),
            &format!("g{i}"),
            W,
            T0 + MIN + i * SEC,
        );
        assert_eq!(d.verdict, Verdict::Forward);
    }
    let d = attempt(&e, "erin", "198.18.9.9", "g9", W, T0 + 2 * MIN);
    assert_eq!(d.reason, Some(Reason::AccountLocked), "{d:?}");
    assert_eq!(d.familiarity, Familiarity::Unfamiliar);
    // The owner at home (same /24 as her earlier success) is not locked out.
    let d = attempt(
        &e,
        "erin",
        "10.1.2.77",
        "right-password",
        Outcome::Success,
        T0 + 2 * MIN,
    );
    assert_eq!(d.verdict, Verdict::Forward, "{d:?}");
    assert_eq!(d.familiarity, Familiarity::Personal);
}

#[test]
fn lockouts_grow_on_repeat_and_expire() {
    let e = engine("[defaults.directory]\nlockout_threshold = 50\n[defaults.spray]\naccounts_per_source = 1000\n[defaults.sources]\nmax_failures = 1000\n");
    let mut now = T0;
    let mut lengths = Vec::new();
    for round in 0..3 {
        for i in 0..5 {
            let d = attempt(
                &e,
                "frank",
                &format!("198.18.{round}.{i}"),
                &format!("r{round}g{i}"),
                W,
                now,
            );
            assert_eq!(
                d.verdict,
                Verdict::Forward,
                "round {round} try {i} at {now}: {d:?}"
            );
            now += SEC;
        }
        now -= SEC; // ask at the instant of the fifth failure: the whole lockout is ahead
        let d = attempt(&e, "frank", "198.18.200.1", "x", W, now);
        assert_eq!(d.reason, Some(Reason::AccountLocked));
        let wait = d.retry_after.unwrap();
        lengths.push(wait);
        now += wait.as_millis() as i64 + SEC;
    }
    assert_eq!(
        lengths,
        [
            Duration::from_secs(60),
            Duration::from_secs(120),
            Duration::from_secs(240)
        ],
        "60 s doubling"
    );
}

#[test]
fn the_same_wrong_password_is_answered_once_and_not_counted_again() {
    let e = engine("");
    let d = attempt(&e, "gina", "203.0.113.5", "summer", W, T0);
    assert_eq!(d.verdict, Verdict::Forward);
    for i in 1..20 {
        let d = attempt(&e, "gina", "203.0.113.5", "summer", W, T0 + i * SEC);
        assert_eq!(d.verdict, Verdict::WrongPassword, "try {i}");
        assert_eq!(d.reason, Some(Reason::KnownBadPassword));
    }
    // Not counted: five more distinct wrong passwords are still forwarded before the lockout.
    let forwarded = (0..5)
        .filter(|i| {
            attempt(
                &e,
                "gina",
                "203.0.113.5",
                &format!("other{i}"),
                W,
                T0 + MIN + i * SEC,
            )
            .verdict
                == Verdict::Forward
        })
        .count();
    assert_eq!(
        forwarded, 4,
        "one failure counted for `summer`, four more reach the threshold of 5"
    );
}

#[test]
fn remembered_wrong_passwords_are_forgotten_after_remember_for() {
    let e = engine("");
    attempt(&e, "hank", "203.0.113.5", "autumn", W, T0);
    let d = attempt(&e, "hank", "203.0.113.5", "autumn", W, T0 + 16 * MIN);
    assert_eq!(
        d.verdict,
        Verdict::Forward,
        "15 min later the directory is asked again"
    );
}

#[test]
fn fingerprint_from_the_agent_hook_is_remembered() {
    let e = engine("");
    let a = Attempt {
        tenant: "contoso",
        user: "ivy",
        ip: ip("203.0.113.9"),
        fingerprint: None,
    };
    let d = e.check(&a, at(T0)).unwrap();
    e.outcome(d.attempt_id.unwrap(), W, Some(b"winter"), at(T0))
        .unwrap();
    let with_fp = Attempt {
        fingerprint: Some(b"winter"),
        ..a
    };
    assert_eq!(
        e.check(&with_fp, at(T0 + SEC)).unwrap().verdict,
        Verdict::WrongPassword
    );
    // Without a fingerprint the rule stands aside and the rest still holds.
    assert_eq!(e.check(&a, at(T0 + SEC)).unwrap().verdict, Verdict::Forward);
}

#[test]
fn a_source_failing_on_many_accounts_is_blocked() {
    let e = engine("");
    let mut blocked = None;
    for i in 0..30 {
        let d = attempt(
            &e,
            &format!("user{i}"),
            "198.51.100.66",
            &format!("p{i}"),
            W,
            T0 + i * SEC,
        );
        if d.verdict == Verdict::Block {
            blocked = Some((i, d));
            break;
        }
    }
    let (i, d) = blocked.expect("the source must be blocked");
    assert_eq!(i, 11, "more than accounts_per_source = 10 accounts");
    assert_eq!(d.reason, Some(Reason::SourceBlocked));
    assert_eq!(d.fired.unwrap().counter, "source_failed_accounts");
    // Blocked at the eleventh account (T0 + 10 s) for 15 min; asked at T0 + 11 s.
    assert_eq!(d.retry_after, Some(Duration::from_secs(15 * 60 - 1)));
    // Its /24 neighbours are blocked too; the block ends.
    let d = attempt(&e, "other", "198.51.100.67", "x", W, T0 + MIN);
    assert_eq!(d.reason, Some(Reason::SourceBlocked));
    let d = attempt(
        &e,
        "other",
        "198.51.100.67",
        "x",
        W,
        T0 + 11 * SEC + 15 * MIN + SEC,
    );
    assert_eq!(d.verdict, Verdict::Forward);
}

#[test]
fn a_busy_nat_with_many_successes_is_not_blocked() {
    let e = engine("");
    for i in 0..200 {
        sign_in(&e, &format!("staff{i}"), "203.0.113.1", T0 + i * SEC);
    }
    for i in 0..40 {
        let d = attempt(
            &e,
            &format!("staff{i}"),
            "203.0.113.1",
            &format!("typo{i}"),
            W,
            T0 + 300 * SEC + i * SEC,
        );
        assert_eq!(d.verdict, Verdict::Forward, "typo {i}: {d:?}");
    }
}

#[test]
fn trusted_networks_are_never_source_blocked_but_account_rules_apply() {
    let e = engine("[defaults.sources]\ntrusted = [\"198.51.100.0/24\"]\n");
    for i in 0..40 {
        let d = attempt(
            &e,
            &format!("user{i}"),
            "198.51.100.66",
            &format!("p{i}"),
            W,
            T0 + i * SEC,
        );
        assert_eq!(d.verdict, Verdict::Forward, "try {i}");
    }
    let reasons: Vec<_> = (0..7)
        .map(|i| {
            attempt(
                &e,
                "victim",
                "198.51.100.66",
                &format!("v{i}"),
                W,
                T0 + MIN + i * SEC,
            )
            .reason
        })
        .collect();
    assert!(
        reasons.contains(&Some(Reason::AccountLocked)),
        "{reasons:?}"
    );
}

#[test]
fn blocked_networks_are_always_refused() {
    let e = engine("[defaults.sources]\nblocked = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n");
    let d = attempt(&e, "x", "192.0.2.1", "p", Outcome::Success, T0);
    assert_eq!(d.reason, Some(Reason::BlockedNetwork));
    let d = attempt(&e, "x", "2001:db8::5", "p", Outcome::Success, T0);
    assert_eq!(d.reason, Some(Reason::BlockedNetwork));
    let d = attempt(&e, "x", "::ffff:192.0.2.9", "p", Outcome::Success, T0);
    assert_eq!(
        d.reason,
        Some(Reason::BlockedNetwork),
        "IPv4-mapped is the same host"
    );
}

#[test]
fn a_flooding_source_is_rate_limited() {
    let e = engine("[defaults.sources]\nrate_per_second = 5\nrate_burst = 10\n");
    let verdicts: Vec<_> = (0..15)
        .map(|i| {
            e.check(
                &Attempt {
                    tenant: "contoso",
                    user: &format!("u{i}"),
                    ip: ip("203.0.113.50"),
                    fingerprint: None,
                },
                at(T0),
            )
            .unwrap()
            .reason
        })
        .collect();
    assert_eq!(
        verdicts
            .iter()
            .filter(|r| **r == Some(Reason::RateLimited))
            .count(),
        5,
        "{verdicts:?}"
    );
    // One second later, five more tokens.
    let d = e
        .check(
            &Attempt {
                tenant: "contoso",
                user: "later",
                ip: ip("203.0.113.50"),
                fingerprint: None,
            },
            at(T0 + SEC),
        )
        .unwrap();
    assert_eq!(d.verdict, Verdict::Forward);
}

#[test]
fn housekeeping_keeps_a_spent_rate_bucket_and_forgets_a_full_one() {
    let e = engine("[defaults.sources]\nrate_per_second = 5\nrate_burst = 10\n");
    let check = |user: &str, now: i64| {
        e.check(
            &Attempt {
                tenant: "contoso",
                user,
                ip: ip("203.0.113.60"),
                fingerprint: None,
            },
            at(now),
        )
        .unwrap()
        .reason
    };
    for i in 0..10 {
        assert_eq!(check(&format!("u{i}"), T0), None, "the burst of 10");
    }
    // Checks alone track the address, for its bucket only.
    assert_eq!(e.stats().sources, 1);
    e.maintain(at(T0 + 100));
    assert_eq!(
        check("u10", T0 + 100),
        Some(Reason::RateLimited),
        "housekeeping kept the spent bucket"
    );
    // Ten arrivals at five a second: the bucket is full again two seconds after the first.
    e.maintain(at(T0 + 2 * SEC));
    assert_eq!(e.stats().sources, 0, "a full bucket is forgotten");
    for i in 0..10 {
        assert_eq!(check(&format!("v{i}"), T0 + 2 * SEC), None);
    }
}

#[test]
fn a_sprayed_password_is_blocked_from_spraying_sources_and_flags_its_users() {
    let e = engine("");
    sign_in(&e, "owner", "10.9.9.9", T0);
    // One password fails on five accounts from one address.
    for i in 0..5 {
        let d = attempt(
            &e,
            &format!("victim{i}"),
            "198.51.100.10",
            "Winter2026!",
            W,
            T0 + MIN + i * SEC,
        );
        assert_eq!(d.verdict, Verdict::Forward);
    }
    let d = attempt(
        &e,
        "victim9",
        "198.51.100.10",
        "Winter2026!",
        W,
        T0 + 2 * MIN,
    );
    assert_eq!(d.reason, Some(Reason::SprayedPassword), "{d:?}");
    // From another address in the same /24 too.
    let d = attempt(
        &e,
        "victim10",
        "198.51.100.11",
        "Winter2026!",
        W,
        T0 + 2 * MIN,
    );
    assert_eq!(d.reason, Some(Reason::SprayedPassword));
    // The owner, who really uses it, still signs in from home, and is flagged.
    let d = attempt(
        &e,
        "owner",
        "10.9.9.200",
        "Winter2026!",
        Outcome::Success,
        T0 + 3 * MIN,
    );
    assert_eq!(d.verdict, Verdict::Forward);
    assert_eq!(e.stats().accounts_flagged, 1);
    assert_eq!(e.stats().sprays_detected, 1);
}

#[test]
fn without_the_clean_source_exemption_every_unfamiliar_location_is_refused_a_sprayed_password() {
    let e = engine("[defaults.spray]\nclean_source_exempt = false\n");
    for i in 0..5 {
        attempt(
            &e,
            &format!("victim{i}"),
            &format!("198.51.{i}.10"),
            "Winter2026!",
            W,
            T0 + i * SEC,
        );
    }
    let d = attempt(
        &e,
        "someone",
        "192.0.2.44",
        "Winter2026!",
        Outcome::Success,
        T0 + MIN,
    );
    assert_eq!(d.reason, Some(Reason::SprayedPassword));
}

#[test]
fn log_only_forwards_everything_but_records_the_assessment() {
    let e = engine("[defaults]\nmode = \"log_only\"\n");
    let mut assessed_block = 0;
    for i in 0..20 {
        let d = attempt(
            &e,
            "kim",
            &format!("198.18.{i}.1"),
            &format!("g{i}"),
            W,
            T0 + i * SEC,
        );
        assert_eq!(d.verdict, Verdict::Forward);
        if d.assessed == Verdict::Block {
            assessed_block += 1;
            assert!(d.reason.is_some());
        }
    }
    assert!(assessed_block > 0);
}

#[test]
fn outcomes_for_unknown_or_reported_ids_are_refused_and_change_nothing() {
    let e = engine("");
    let d = e
        .check(
            &Attempt {
                tenant: "contoso",
                user: "lee",
                ip: ip("203.0.113.1"),
                fingerprint: None,
            },
            at(T0),
        )
        .unwrap();
    let id = d.attempt_id.unwrap();
    assert!(e.outcome(id ^ 0xdead_beef, W, None, at(T0)).is_err());
    e.outcome(id, Outcome::Success, None, at(T0)).unwrap();
    assert!(matches!(
        e.outcome(id, W, None, at(T0)),
        Err(portcullis_engine::Error::UnknownAttempt(_))
    ));
}

#[test]
fn directory_and_agent_faults_never_count_as_failures() {
    let e = engine("");
    for (i, fault) in [
        Outcome::DirectoryUnreachable,
        Outcome::Timeout,
        Outcome::Error,
        Outcome::Disabled,
    ]
    .into_iter()
    .cycle()
    .take(40)
    .enumerate()
    {
        let d = attempt(
            &e,
            "mia",
            "198.18.0.1",
            &format!("p{i}"),
            fault,
            T0 + i as i64 * SEC,
        );
        assert_eq!(d.verdict, Verdict::Forward, "fault {i} ({fault:?})");
    }
}

#[test]
fn ipv4_mapped_ipv6_shares_counters_with_ipv4() {
    let e = engine("");
    for i in 0..11 {
        let from = if i % 2 == 0 {
            "198.51.100.66"
        } else {
            "::ffff:198.51.100.66"
        };
        attempt(
            &e,
            &format!("user{i}"),
            from,
            &format!("p{i}"),
            W,
            T0 + i * SEC,
        );
    }
    let d = attempt(&e, "next", "::ffff:198.51.100.66", "q", W, T0 + MIN);
    assert_eq!(d.reason, Some(Reason::SourceBlocked));
}

#[test]
fn an_office_egress_many_accounts_use_is_familiar_to_all() {
    let e = engine("");
    for i in 0..10 {
        sign_in(&e, &format!("staff{i}"), "203.0.113.1", T0 + i * SEC);
    }
    let d = attempt(
        &e,
        "newcomer",
        "203.0.113.1",
        "pw",
        Outcome::Success,
        T0 + MIN,
    );
    assert_eq!(d.familiarity, Familiarity::Shared);
}

#[test]
fn decisions_explain_themselves() {
    let e = engine("");
    for i in 0..5 {
        attempt(
            &e,
            "ned",
            &format!("198.18.{i}.1"),
            &format!("g{i}"),
            W,
            T0 + i * SEC,
        );
    }
    let d = attempt(&e, "ned", "198.18.77.1", "g9", W, T0 + 10 * SEC);
    assert_eq!(d.reason.unwrap().as_str(), "account_locked");
    let fired = d.fired.unwrap();
    assert_eq!((fired.counter, fired.limit), ("unfamiliar_failures", 5));
    // Locked at the fifth failure (T0 + 4 s) for 60 s; asked at T0 + 10 s.
    assert_eq!(d.retry_after, Some(Duration::from_secs(54)));
}

#[test]
fn bad_input_is_an_error_that_names_the_field() {
    let e = engine("");
    let err = e
        .check(
            &Attempt {
                tenant: "contoso",
                user: " \u{3000}\t",
                ip: ip("192.0.2.1"),
                fingerprint: None,
            },
            at(T0),
        )
        .unwrap_err();
    assert!(err.to_string().contains("`user`"), "{err}");
    let err = e
        .check(
            &Attempt {
                tenant: "bad tenant!",
                user: "x",
                ip: ip("192.0.2.1"),
                fingerprint: None,
            },
            at(T0),
        )
        .unwrap_err();
    assert!(err.to_string().contains("`tenant`"), "{err}");
}

#[test]
fn memory_stays_bounded_and_locked_accounts_are_kept_under_a_flood() {
    let policy = portcullis_engine::Policy::from_toml(
        "[defaults.sources]\nrate_per_second = 1000000\nrate_burst = 1000000\n[defaults.lockout]\nthreshold = 5\n",
    )
    .unwrap();
    let limits = portcullis_engine::Limits {
        max_accounts: 1_000,
        ..Default::default()
    };
    let e = portcullis_engine::Engine::new(
        policy,
        portcullis_engine::Options {
            limits,
            ..portcullis_engine::Options::in_memory([1; 32])
        },
    )
    .unwrap();
    for i in 0..5 {
        attempt(
            &e,
            "target",
            &format!("198.18.{i}.1"),
            &format!("g{i}"),
            W,
            T0 + i,
        );
    }
    for i in 0..20_000i64 {
        let from = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        attempt(
            &e,
            &format!("random{i}"),
            &from,
            "x",
            Outcome::UnknownUser,
            T0 + SEC + i,
        );
        assert!(
            e.stats().accounts <= 1_001,
            "accounts {} at {i}",
            e.stats().accounts
        );
    }
    let d = attempt(&e, "target", "198.18.99.1", "g", W, T0 + 30 * SEC);
    assert_eq!(
        d.reason,
        Some(Reason::AccountLocked),
        "the real lockout survived the flood"
    );
}

#[test]
fn concurrent_attempts_for_one_account_cannot_overspend_the_budget() {
    let e = engine("[defaults.lockout]\nthreshold = 9\nfamiliar_threshold = 9\n[defaults.sources]\nrate_per_second = 100000\nrate_burst = 100000\n");
    for round in 0..20 {
        let user = format!("busy{round}");
        let forwarded = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (e, user, forwarded) = (&e, &user, &forwarded);
                s.spawn(move || {
                    for i in 0..50 {
                        let a = Attempt {
                            tenant: "contoso",
                            user,
                            ip: ip(&format!("198.18.{t}.{i}")),
                            fingerprint: None,
                        };
                        if e.check(&a, at(T0)).unwrap().verdict == Verdict::Forward {
                            forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(
            forwarded.into_inner(),
            6,
            "round {round}: four threads, one budget of 6"
        );
    }
}

#[test]
fn a_previous_password_typed_after_a_reset_makes_the_place_familiar() {
    let e = engine("[defaults.lockout]\nthreshold = 6\n");
    // Signed in from home with the old password.
    attempt(&e, "rosa", "10.7.7.7", "old-password", Outcome::Success, T0);
    // Changed it; at a hotel the next day she types the old one, then five other guesses.
    let day = T0 + 24 * HOUR;
    let d = attempt(&e, "rosa", "192.0.2.50", "old-password", W, day);
    assert_eq!(d.familiarity, Familiarity::Unfamiliar);
    for i in 0..5 {
        let d = attempt(
            &e,
            "rosa",
            "192.0.2.50",
            &format!("older-{i}"),
            W,
            day + (i + 1) * 10 * SEC,
        );
        assert_eq!(
            d.familiarity,
            Familiarity::Personal,
            "try {i}: the hotel is hers now"
        );
        assert_eq!(d.verdict, Verdict::Forward);
    }
    // Six failures: an unfamiliar place would be out of budget (6); hers still has 8.
    let d = attempt(
        &e,
        "rosa",
        "192.0.2.50",
        "new-password",
        Outcome::Success,
        day + MIN,
    );
    assert_eq!(d.verdict, Verdict::Forward, "{d:?}");
}

#[test]
fn a_wrong_password_never_used_before_does_not_make_the_place_familiar() {
    let e = engine("[defaults.lockout]\nthreshold = 6\n");
    attempt(&e, "sam", "10.7.7.7", "real", Outcome::Success, T0);
    attempt(&e, "sam", "192.0.2.51", "guess", W, T0 + HOUR);
    let d = attempt(&e, "sam", "192.0.2.51", "guess2", W, T0 + HOUR + SEC);
    assert_eq!(d.familiarity, Familiarity::Unfamiliar);
}

#[test]
fn a_flood_of_random_names_addresses_and_passwords_stays_under_every_cap_and_keeps_what_protects_real_accounts(
) {
    let policy = portcullis_engine::Policy::from_toml(
        "[defaults.sources]\nrate_per_second = 1000000\nrate_burst = 1000000\n\
         [defaults.lockout]\nthreshold = 5\n\
         [defaults.spray]\naccounts_per_password = 4\naccounts_per_source = 1000\n",
    )
    .unwrap();
    let limits = portcullis_engine::Limits {
        max_accounts: 1_000,
        max_sources: 1_000,
        max_sprays: 500,
        ..Default::default()
    };
    let e = portcullis_engine::Engine::new(
        policy,
        portcullis_engine::Options {
            limits,
            ..portcullis_engine::Options::in_memory([3; 32])
        },
    )
    .unwrap();
    let mut t = T0;
    let mut tick = || {
        t += 1;
        t
    };
    // What protects real accounts, set up before the flood:
    // an active lockout,
    for i in 0..5 {
        attempt(
            &e,
            "locked",
            &format!("198.18.{i}.1"),
            &format!("g{i}"),
            W,
            tick(),
        );
    }
    // a familiar location (the owner's office),
    attempt(&e, "owner", "192.0.2.10", "right", Outcome::Success, tick());
    // a directory mirror one failure short of the smart lockout,
    for i in 0..4 {
        attempt(
            &e,
            "near",
            &format!("198.19.{i}.1"),
            &format!("n{i}"),
            W,
            tick(),
        );
    }
    // and a sprayed password.
    for i in 0..6 {
        attempt(
            &e,
            &format!("sprayed{i}"),
            &format!("198.20.{i}.1"),
            "Winter2026!",
            W,
            tick(),
        );
    }
    assert_eq!(
        e.sprayed_passwords(portcullis_engine::Timestamp::from_millis(tick()))
            .len(),
        1,
        "the spray was seen"
    );

    // The flood: random names from random addresses with random wrong passwords.
    for i in 0..30_000i64 {
        let from = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        attempt(
            &e,
            &format!("random{i}"),
            &from,
            &format!("pw{i}"),
            W,
            tick(),
        );
        if i % 1_000 == 999 {
            let s = e.stats();
            // Entries that may not be evicted (the ones above) come on top of the cap.
            assert!(s.accounts <= 1_000 + 8, "accounts {} at {i}", s.accounts);
            assert!(s.sources <= 1_000 + 32, "sources {} at {i}", s.sources);
            assert!(s.sprays <= 500 + 8, "sprays {} at {i}", s.sprays);
        }
    }
    assert!(e.stats().evicted > 0, "the caps were reached and enforced");

    let now = tick();
    let d = attempt(&e, "locked", "198.18.99.1", "g", W, now);
    assert_eq!(
        d.reason,
        Some(Reason::AccountLocked),
        "the lockout survived"
    );
    let d = attempt(
        &e,
        "owner",
        "192.0.2.10",
        "right",
        Outcome::Success,
        now + 1,
    );
    assert_eq!(
        d.familiarity,
        Familiarity::Personal,
        "the familiar location survived"
    );
    attempt(&e, "near", "198.19.50.1", "n50", W, now + 2);
    let d = attempt(&e, "near", "198.19.51.1", "n51", W, now + 3);
    assert_ne!(
        d.verdict,
        Verdict::Forward,
        "the directory mirror near its threshold survived: the fifth failure locked"
    );
    assert_eq!(
        e.sprayed_passwords(portcullis_engine::Timestamp::from_millis(now + 4))
            .len(),
        1,
        "the sprayed password survived"
    );
}

#[test]
fn a_prepared_attempt_gets_the_decision_of_the_same_attempt_unprepared() {
    // Two engines with the same secret and policy see the same attempts, one through check(),
    // the other prepared ahead: their decisions and outcomes agree all along.
    let plain = engine("");
    let prepared = engine("");
    let mut prep = prepared.preparer();
    let mut name = String::new();
    let names = ["Ann", " ann ", "bob@x", "ÅSA", "carl"];
    for i in 0..400i64 {
        let user = names[(i % 5) as usize];
        let ip: IpAddr = format!("198.51.{}.{}", i % 3, i % 7).parse().unwrap();
        let pw = format!("pw{}", i % 11);
        let now = Timestamp::from_millis(T0 + i * SEC);
        let a = Attempt {
            tenant: "acme",
            user,
            ip,
            fingerprint: Some(pw.as_bytes()),
        };
        let want = plain.check(&a, now).expect("check");
        let keys = prep
            .prepare("acme", user, Some(pw.as_bytes()), &mut name)
            .expect("a name");
        let got = prepared
            .check_prepared("acme", &name, ip, keys, now)
            .expect("check_prepared");
        assert_eq!(
            (got.verdict, got.reason, got.familiarity),
            (want.verdict, want.reason, want.familiarity),
            "attempt {i}"
        );
        if let (Some(a), Some(b)) = (want.attempt_id, got.attempt_id) {
            let result = if i % 4 == 0 {
                Outcome::Success
            } else {
                Outcome::WrongPassword
            };
            assert_eq!(
                plain.outcome(a, result, None, now).unwrap(),
                prepared.outcome(b, result, None, now).unwrap()
            );
        }
    }
    assert_eq!(plain.stats(), prepared.stats());
    assert!(prep.prepare("acme", " \u{3000} ", None, &mut name).is_err());
}

#[test]
fn keys_prepared_by_another_engine_are_refused() {
    let a = engine("");
    let b = engine("");
    let mut name = String::new();
    let keys = a
        .preparer()
        .prepare("acme", "ann", Some(b"pw"), &mut name)
        .unwrap();
    let err = b
        .check_prepared(
            "acme",
            &name,
            "192.0.2.1".parse().unwrap(),
            keys,
            Timestamp::from_millis(T0),
        )
        .unwrap_err();
    assert!(err.to_string().contains("prepared"), "{err}");
    assert_eq!(b.stats().accounts, 0);
}
