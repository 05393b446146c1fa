//! The rules, as pure functions on state values.
//!
//! Nothing here touches a map, a store or a clock: each function takes the state it rules on and
//! the current time, and changes only that state. [`crate::Engine`] applies them to its in-memory
//! maps; a shared store (several instances on one Redis) applies the very same functions to state
//! it reads and writes back atomically, so that every instance decides exactly as one engine would.
//!
//! A check reads the sources ([`source_finding`], [`shared_familiar`]) and a fingerprint's spray
//! state, then decides on the account under its lock ([`decide_account`]). An outcome updates the
//! account ([`account_outcome`]), every source key ([`source_outcome`]) and, for a failure with a
//! fingerprint, its spray state ([`spray_failure`]).

use crate::decision::{Decision, Fired, Outcome, Reason, Verdict};
use crate::net::{canonical, NetKey};
use crate::policy::{Familiarity, TenantPolicy};
use crate::state::{class, AccountState, SourceState, SprayState};
use std::net::IpAddr;
use std::time::Duration;

/// Other accounts a prefix must have failed against (within `spray.window`) before a sprayed
/// password from it loses the clean-source exemption; for a single address it is one.
pub const SUSPICIOUS_PREFIX_ACCOUNTS: usize = 3;

/// Unfamiliar failures within `lockout.window` that put an account under attack (a typo or two
/// from the owner's new place do not).
pub const UNDER_ATTACK_FAILURES: u32 = 3;

/// Source keys of one address: the address and its configured prefixes (at most 5). It holds
/// the address once and the lengths, and masks each key as it is walked: a walk is as cheap as
/// building the keys, and a set of keys is 24 bytes to pass around instead of 128.
#[derive(Clone, Copy, Debug)]
pub struct SourceKeys {
    bits: u128,
    v6: bool,
    n: u8,
    lens: [u8; 5],
}

impl SourceKeys {
    /// The address `ip` and the prefixes `p.sources` counts for its family.
    #[inline]
    pub fn of(ip: IpAddr, p: &TenantPolicy) -> Self {
        match canonical(ip) {
            IpAddr::V4(a) => SourceKeys {
                bits: u128::from(u32::from(a)),
                v6: false,
                n: 2,
                lens: [32, p.sources.ipv4_prefix, 0, 0, 0],
            },
            IpAddr::V6(a) => {
                let mut lens = [128, 0, 0, 0, 0];
                let mut n = 1;
                for &len in p.sources.ipv6_prefixes.iter().take(4) {
                    lens[n] = len;
                    n += 1;
                }
                SourceKeys {
                    bits: u128::from(a),
                    v6: true,
                    n: n as u8,
                    lens,
                }
            }
        }
    }

    /// The keys, address first.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = NetKey> + '_ {
        self.lens[..usize::from(self.n)].iter().map(|&len| {
            if self.v6 {
                NetKey::v6(self.bits, len)
            } else {
                NetKey::v4(self.bits as u32, len)
            }
        })
    }
}

/// The prefix a success from `ip` makes familiar.
#[inline]
pub fn familiar_key(ip: IpAddr, p: &TenantPolicy) -> NetKey {
    match canonical(ip) {
        IpAddr::V4(a) => NetKey::v4(u32::from(a), p.familiar.ipv4_prefix),
        IpAddr::V6(a) => NetKey::v6(u128::from(a), p.familiar.ipv6_prefix),
    }
}

/// A retry-after of at least one second.
pub fn retry(ms_left: i64) -> Option<Duration> {
    Some(Duration::from_millis(ms_left.max(1000) as u64))
}

/// A non-forward decision (`wrong_password` for a known bad password, `block` otherwise).
pub fn refuse(
    reason: Reason,
    retry_after: Option<Duration>,
    fired: Fired,
    familiarity: Familiarity,
) -> Decision {
    let verdict = if reason == Reason::KnownBadPassword {
        Verdict::WrongPassword
    } else {
        Verdict::Block
    };
    Decision {
        verdict,
        assessed: verdict,
        reason: Some(reason),
        retry_after,
        fired: Some(fired),
        familiarity,
        attempt_id: None,
    }
}

/// The reason a source block fired, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlockCause {
    /// Too many distinct failed accounts.
    FailedAccounts,
    /// Too many failures.
    Failures,
}

impl BlockCause {
    /// The counter's name.
    pub fn counter(self) -> &'static str {
        match self {
            BlockCause::FailedAccounts => "source_failed_accounts",
            BlockCause::Failures => "source_failures",
        }
    }
}

/// What one source key says about a check.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceFinding {
    /// The block in force, as a decision.
    pub blocked: Option<Decision>,
    /// Whether it looks like a spraying source for this account (failed against others); false
    /// when not asked for.
    pub suspicious: bool,
}

/// Reads one source key's state for a check of the account tagged `acct_tag` at `now`.
///
/// Whether the source is suspicious matters only for a sprayed password ([`decide_account`]):
/// with `want_suspicious` false it is not worked out, and the members of the source's sets (out
/// of line once there are two) are not read.
pub fn source_finding(
    p: &TenantPolicy,
    net: NetKey,
    s: &SourceState,
    acct_tag: u32,
    now: i64,
    want_suspicious: bool,
) -> SourceFinding {
    let blocked = s.block.active(now).then(|| {
        let (counter, value, limit) = s
            .block_reason
            .map(|(c, v, l)| (c.counter(), v, l))
            .unwrap_or(("source_blocked", 1, 1));
        refuse(
            Reason::SourceBlocked,
            retry(s.block.until - now),
            Fired {
                counter,
                value,
                limit,
            },
            Familiarity::Unfamiliar,
        )
    });
    SourceFinding {
        suspicious: want_suspicious && suspicious(p, net, s, acct_tag, now),
        blocked,
    }
}

/// Whether the source failed against enough accounts other than `acct_tag` to look like a
/// spraying source, and is not a busy place whose successes outweigh its failures.
fn suspicious(p: &TenantPolicy, net: NetKey, s: &SourceState, acct_tag: u32, now: i64) -> bool {
    let spray_window = p.spray.window.ms();
    let src_window = p.sources.window.ms();
    let need = if net.is_host() {
        1
    } else {
        SUSPICIOUS_PREFIX_ACCOUNTS
    };
    // Cheapest test first: a source that failed against fewer than `need` accounts is not
    // suspicious, whatever this account's membership and the success ratio. (Fewer members held
    // than `need` answers that without reading them.)
    if s.failed_accounts.len() < need {
        return false;
    }
    let failed = s.failed_accounts.count(now, spray_window);
    if failed < need {
        return false;
    }
    let others = failed - usize::from(s.failed_accounts.contains(acct_tag, now, spray_window));
    // A NAT whose failures are outweighed by successes (the failure_ratio rule of source blocks)
    // is busy, not suspicious.
    let busy_and_good = || {
        let successes = s.successes.count(now, src_window);
        successes > 0
            && f64::from(s.fails.count(now, src_window))
                <= p.sources.failure_ratio * f64::from(successes)
    };
    others >= need && !busy_and_good()
}

/// Reads one source key's state `s` for a check into `ctx`: the block in force, if any; else
/// whether it looks like a spraying source (asked only when `ctx.sprayed`) and, when `net` is the
/// familiar prefix `fam_key`, whether that prefix is shared.
#[inline]
pub fn read_source(
    p: &TenantPolicy,
    net: NetKey,
    s: &SourceState,
    acct_tag: u32,
    fam_key: NetKey,
    now: i64,
    ctx: &mut SourceContext,
) -> Option<Decision> {
    let finding = source_finding(p, net, s, acct_tag, now, ctx.sprayed);
    if finding.blocked.is_some() {
        return finding.blocked;
    }
    ctx.suspicious |= finding.suspicious;
    if net == fam_key {
        ctx.shared = shared_familiar(p, s, now);
    }
    None
}

/// Whether the familiar-prefix state `s` makes its prefix familiar to every account.
pub fn shared_familiar(p: &TenantPolicy, s: &SourceState, now: i64) -> bool {
    let need = p.familiar.shared_after_accounts as usize;
    // Fewer members held than needed answers without reading them (out of line once two).
    need > 0
        && s.good_accounts.len() >= need
        && !s.block.active(now)
        && s.good_accounts.count(now, p.familiar.familiar_for.ms()) >= need
}

/// What the source side of a check found, for [`decide_account`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceContext {
    /// The location is an egress many accounts succeed from.
    pub shared: bool,
    /// The source failed against other accounts: a spraying source.
    pub suspicious: bool,
    /// The fingerprint is a sprayed password.
    pub sprayed: bool,
}

/// The account rules: remembered wrong passwords, smart lockout, the directory's own lock,
/// sprayed passwords and the directory budget. Does not count the attempt in flight: the caller
/// does that under the same lock when it forwards.
pub fn decide_account(
    acct: &mut AccountState,
    p: &TenantPolicy,
    fam_key: NetKey,
    ctx: SourceContext,
    fp: Option<u64>,
    now: i64,
) -> Decision {
    let familiarity = if acct.is_familiar(fam_key, now, p.familiar.familiar_for.ms()) {
        Familiarity::Personal
    } else if ctx.shared {
        Familiarity::Shared
    } else {
        Familiarity::Unfamiliar
    };
    let familiar = familiarity.is_familiar();
    let c = class(familiar);

    if let Some(h) = fp {
        if p.lockout.remember_bad > 0 && acct.knows_bad(h, now, p.lockout.remember_for.ms()) {
            // Refresh: a phone retrying an old password keeps being answered here.
            acct.remember_bad(h, now, p.lockout.remember_bad as usize);
            let fired = Fired {
                counter: "remembered_wrong_password",
                value: 1,
                limit: 1,
            };
            return refuse(Reason::KnownBadPassword, None, fired, familiarity);
        }
    }
    let t = acct.trouble();
    let lock = t.locks[c];
    if lock.active(now) {
        let counter = if familiar {
            "familiar_failures"
        } else {
            "unfamiliar_failures"
        };
        let limit = u64::from(p.lockout_threshold(familiar));
        let fired = Fired {
            counter,
            value: limit,
            limit,
        };
        return refuse(
            Reason::AccountLocked,
            retry(lock.until - now),
            fired,
            familiarity,
        );
    }
    if t.mirror.is_locked(now) {
        let fired = Fired {
            counter: "directory_locked",
            value: 1,
            limit: 1,
        };
        return refuse(
            Reason::DirectoryLocked,
            retry(t.mirror.locked_until - now),
            fired,
            familiarity,
        );
    }
    // An account that unfamiliar sources keep failing on is under attack: no exemption then.
    // (Worked out only for a sprayed password from an unfamiliar place, the one case it decides.)
    let under_attack = || {
        t.locks[0].until.saturating_add(p.lockout.max_duration.ms()) > now
            || t.fails[0].count(now, p.lockout.window.ms()) >= UNDER_ATTACK_FAILURES
    };
    if ctx.sprayed
        && familiarity == Familiarity::Unfamiliar
        && (ctx.suspicious || under_attack() || !p.spray.clean_source_exempt)
    {
        let fired = Fired {
            counter: "accounts_per_password",
            value: u64::from(p.spray.accounts_per_password) + 1,
            limit: u64::from(p.spray.accounts_per_password),
        };
        return refuse(Reason::SprayedPassword, None, fired, familiarity);
    }
    let window = p.directory.observation_window.ms();
    let spent = t.mirror.effective(now, window) + acct.pending;
    let budget = p.budget(familiar);
    if spent + 1 > budget {
        let left = if t.mirror.effective(now, window) > 0 {
            t.mirror.bad_time + window - now
        } else {
            window
        };
        let counter = if familiar {
            "directory_budget_familiar"
        } else {
            "directory_budget_unfamiliar"
        };
        let fired = Fired {
            counter,
            value: u64::from(spent),
            limit: u64::from(budget),
        };
        return refuse(Reason::DirectoryBudget, retry(left), fired, familiarity);
    }
    Decision {
        verdict: Verdict::Forward,
        assessed: Verdict::Forward,
        reason: None,
        retry_after: None,
        fired: None,
        familiarity,
        attempt_id: None,
    }
}

/// What an outcome did to an account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountEffects {
    /// A smart lockout started.
    pub lockout_started: bool,
    /// The account was flagged for signing in with a sprayed password.
    pub flagged: bool,
    /// Durable state changed (worth writing behind).
    pub durable: bool,
}

/// Applies the directory's answer to the account, releasing its attempt in flight. `familiar` is
/// the class the attempt was decided in; `sprayed_success` the fingerprint hash when a success
/// used a sprayed password.
#[allow(clippy::too_many_arguments)]
pub fn account_outcome(
    acct: &mut AccountState,
    p: &TenantPolicy,
    result: Outcome,
    familiar: bool,
    ip: IpAddr,
    fp: Option<u64>,
    sprayed_success: Option<u64>,
    now: i64,
) -> AccountEffects {
    let mut fx = AccountEffects::default();
    let c = class(familiar);
    acct.pending = acct.pending.saturating_sub(1);
    acct.last_seen = acct.last_seen.max(now);
    let d = &p.directory;
    match result {
        Outcome::WrongPassword => {
            acct.unknown = false;
            let t = acct.trouble_mut();
            t.mirror.record_bad(
                now,
                d.observation_window.ms(),
                d.lockout_threshold,
                d.lockout_duration.ms(),
            );
            let w = p.lockout.window.ms();
            t.fails[c].add(now, w, 1);
            if t.fails[c].count(now, w) >= p.lockout_threshold(familiar) && !t.locks[c].active(now)
            {
                t.locks[c].start(
                    now,
                    p.lockout.duration.ms(),
                    p.lockout.growth,
                    p.lockout.max_duration.ms(),
                );
                t.fails[c].reset();
                fx.lockout_started = true;
            }
            if let Some(h) = fp {
                acct.remember_bad(h, now, p.lockout.remember_bad as usize);
                if acct.signed_in_with(h) {
                    // A password this account signed in with before, now wrong: its owner after a
                    // password change. Where they type from is theirs.
                    acct.add_familiar(familiar_key(ip, p), now, p.familiar.familiar_max as usize);
                }
            }
            fx.durable = true;
        }
        Outcome::Success | Outcome::MustChangePassword => {
            acct.unknown = false;
            // An account that never failed has nothing to reset (and gets no record for it).
            if let Some(t) = acct.existing_trouble_mut() {
                if result == Outcome::Success {
                    t.mirror.record_success(now);
                }
                t.fails[c].reset();
            }
            acct.add_familiar(familiar_key(ip, p), now, p.familiar.familiar_max as usize);
            if let Some(h) = fp {
                acct.remember_good(h);
            }
            if let Some(h) = sprayed_success {
                let t = acct.trouble_mut();
                fx.flagged = t.flagged.is_none();
                t.flagged = Some((h, now));
            }
            fx.durable = true;
        }
        Outcome::UnknownUser => acct.unknown = true,
        Outcome::Locked => {
            acct.trouble_mut().mirror.locked_until = now + d.lockout_duration.ms();
            fx.durable = true;
        }
        _ => {}
    }
    fx
}

/// Applies a failure or a success from `ip` to the state of one of its source keys `net`.
/// Returns whether a source block started. Other outcomes change nothing.
#[allow(clippy::too_many_arguments)]
pub fn source_outcome(
    s: &mut SourceState,
    p: &TenantPolicy,
    result: Outcome,
    net: NetKey,
    fam_key: NetKey,
    acct_tag: u32,
    trusted: bool,
    now: i64,
) -> bool {
    let window = p.sources.window.ms();
    s.last_seen = now;
    match result {
        Outcome::WrongPassword | Outcome::UnknownUser => {
            s.fails.add(now, window, 1);
            s.failed_accounts
                .insert(acct_tag, now, p.spray.accounts_per_source as usize + 1);
            if trusted || s.block.active(now) {
                return false;
            }
            let fails = s.fails.count(now, window);
            let accounts = s.failed_accounts.count(now, window) as u32;
            let cause = if accounts > p.spray.accounts_per_source {
                Some((
                    BlockCause::FailedAccounts,
                    accounts,
                    p.spray.accounts_per_source,
                ))
            } else if fails >= p.sources.max_failures {
                Some((BlockCause::Failures, fails, p.sources.max_failures))
            } else {
                None
            };
            match cause {
                // Successes are counted only when a threshold is crossed (rarely).
                Some((cause, value, limit))
                    if f64::from(fails)
                        > p.sources.failure_ratio * f64::from(s.successes.count(now, window)) =>
                {
                    s.block.start(
                        now,
                        p.sources.block_duration.ms(),
                        p.sources.block_growth,
                        p.sources.block_max_duration.ms(),
                    );
                    s.block_reason = Some((cause, u64::from(value), u64::from(limit)));
                    true
                }
                _ => false,
            }
        }
        Outcome::Success | Outcome::MustChangePassword => {
            s.successes.add(now, window, 1);
            if net == fam_key {
                familiar_success(s, p, acct_tag, now);
            }
            false
        }
        _ => false,
    }
}

/// Records that a fingerprint failed against the account tagged `acct_tag`. Returns
/// `(newly_sprayed, changed_durably)`.
pub fn spray_failure(
    sp: &mut SprayState,
    p: &TenantPolicy,
    acct_tag: u32,
    now: i64,
) -> (bool, bool) {
    sp.last_seen = now;
    let thr = p.spray.accounts_per_password;
    sp.accounts.insert(acct_tag, now, thr as usize + 1);
    let was = sp.is_sprayed(now);
    if sp.accounts.count(now, p.spray.window.ms()) as u32 > thr || was {
        if !was {
            sp.detected_at = now;
        }
        sp.sprayed_until = now + p.spray.sprayed_for.ms();
        return (!was, true);
    }
    (false, false)
}

/// Records on the familiar prefix's state that the account tagged `acct_tag` signed in from it
/// (towards [`shared_familiar`]).
pub fn familiar_success(s: &mut SourceState, p: &TenantPolicy, acct_tag: u32, now: i64) {
    s.last_seen = now;
    s.good_accounts
        .insert(acct_tag, now, p.familiar.shared_after_accounts as usize);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
            any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
            // IPv4-mapped IPv6: the same host as the IPv4 address.
            any::<u32>().prop_map(|v| IpAddr::V6(Ipv4Addr::from(v).to_ipv6_mapped())),
        ]
    }

    proptest! {
        #[test]
        fn source_keys_are_the_canonical_address_and_its_configured_prefixes(
            ip in any_ip(),
            v4 in 0u8..=40,
            v6 in proptest::collection::vec(0u8..=140, 0..6),
            fam4 in 0u8..=40,
            fam6 in 0u8..=140,
        ) {
            let mut p = TenantPolicy::default();
            p.sources.ipv4_prefix = v4;
            p.sources.ipv6_prefixes = v6.clone();
            p.familiar.ipv4_prefix = fam4;
            p.familiar.ipv6_prefix = fam6;
            let c = canonical(ip);
            let mut want = vec![NetKey::host(c)];
            match c {
                IpAddr::V4(_) => want.push(NetKey::new(c, v4)),
                IpAddr::V6(_) => want.extend(v6.iter().take(4).map(|&l| NetKey::new(c, l))),
            }
            let got: Vec<NetKey> = SourceKeys::of(ip, &p).iter().collect();
            prop_assert_eq!(got, want);
            let fam = if c.is_ipv4() { fam4 } else { fam6 };
            prop_assert_eq!(familiar_key(ip, &p), NetKey::new(c, fam));
        }
    }

    /// A /24 that failed against three accounts other than account 1, within the spray window.
    fn spraying_prefix(now: i64) -> SourceState {
        let mut s = SourceState::default();
        for tag in 2..=4 {
            s.failed_accounts.insert(tag, now - 1_000, 16);
        }
        s
    }

    #[test]
    fn a_source_is_judged_suspicious_only_when_asked_for_a_sprayed_password() {
        let p = TenantPolicy::default();
        let net = NetKey::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24);
        let now = 10_000_000;
        let s = spraying_prefix(now);
        assert!(source_finding(&p, net, &s, 1, now, true).suspicious);
        let unasked = source_finding(&p, net, &s, 1, now, false);
        assert!(
            !unasked.suspicious,
            "not worked out unless the password is sprayed"
        );
        assert_eq!(unasked.blocked, None);
        // Two other accounts are fewer than a prefix needs: answered from the set's length.
        let mut two = SourceState::default();
        two.failed_accounts.insert(2, now, 16);
        two.failed_accounts.insert(3, now, 16);
        assert!(!source_finding(&p, net, &two, 1, now, true).suspicious);
    }

    #[test]
    fn a_block_is_found_whether_or_not_suspicion_is_asked_for() {
        let p = TenantPolicy::default();
        let net = NetKey::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 32);
        let now = 10_000_000;
        let mut s = spraying_prefix(now);
        s.block.start(now - 1_000, 60_000, 2.0, 3_600_000);
        for want in [false, true] {
            let d = source_finding(&p, net, &s, 1, now, want).blocked;
            assert_eq!(d.map(|d| d.reason), Some(Some(Reason::SourceBlocked)));
        }
    }

    #[test]
    fn a_prefix_is_shared_only_once_enough_accounts_succeeded_from_it() {
        let p = TenantPolicy::default();
        let need = p.familiar.shared_after_accounts;
        let now = 10_000_000;
        let mut s = SourceState::default();
        for tag in 0..need - 1 {
            s.good_accounts.insert(tag, now - 1_000, need as usize);
        }
        assert!(!shared_familiar(&p, &s, now), "one account short");
        s.good_accounts.insert(need, now, need as usize);
        assert!(shared_familiar(&p, &s, now));
        let later = now + p.familiar.familiar_for.ms();
        assert!(
            !shared_familiar(&p, &s, later),
            "the successes left the window"
        );
    }
}
