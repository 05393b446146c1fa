//! Operator views of the engine's state, and the two operator actions (unlock an account, clear a
//! source block), for the service's admin API.
//!
//! Every view is a plain serde-serialisable value computed at an explicit `now`, so it can be
//! tested with fixed timestamps. Invariants: no view ever carries a fingerprint or its keyed hash
//! (a sprayed password is shown by [`Engine::spray_id`] only), and an action changes only what it
//! names and marks it for the next [`Engine::flush`].
//!
//! Sources are keyed by a hash of the tenant name; the views map it back to the name through the
//! tenants the engine knows (the policy's tenants, the tenants seen since the last policy swap, and
//! the tenants of tracked accounts). A source of a tenant known by none of them shows as
//! `#<hex id>`.

use crate::clock::Timestamp;
use crate::engine::{AccountKey, Engine, SourceKey};
use crate::error::{Error, Result};
use crate::net::{parse_ip, NetKey};
use crate::normalize::normalize;
use crate::policy::valid_tenant_name;
use crate::rules::familiar_key;
use crate::state::{class, AccountState, SourceState, SprayState};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;

/// Which of an account's two lockouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    /// Locked for unfamiliar locations.
    Unfamiliar,
    /// Locked for familiar locations too.
    Familiar,
    /// The directory itself reported (or would report) the account locked.
    Directory,
}

/// One active account lockout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockoutView {
    /// Tenant name.
    pub tenant: String,
    /// The account's normalised name.
    pub account: String,
    /// Which lockout.
    pub kind: LockKind,
    /// When it started, ms since the epoch (0 when unknown, for directory locks).
    pub since_ms: i64,
    /// When it ends, ms since the epoch.
    pub until_ms: i64,
    /// How many lockouts in a row (1 for the first).
    pub level: u8,
}

/// One blocked address or prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceBlockView {
    /// Tenant name, or `#<hex id>` when the tenant is not known by name.
    pub tenant: String,
    /// The address or prefix.
    pub source: String,
    /// The counter that fired the block (`source_failures`, `source_failed_accounts`).
    pub counter: String,
    /// Its value when it fired.
    pub value: u64,
    /// The limit it reached.
    pub limit: u64,
    /// When the block started, ms since the epoch.
    pub since_ms: i64,
    /// When it ends, ms since the epoch.
    pub until_ms: i64,
    /// How many blocks in a row.
    pub level: u8,
}

/// An account flagged for signing in with a sprayed password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlaggedAccount {
    /// Tenant name.
    pub tenant: String,
    /// The account's normalised name.
    pub account: String,
}

/// One sprayed password, by opaque id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SprayView {
    /// Opaque id ([`Engine::spray_id`]): never the fingerprint or its hash.
    pub id: String,
    /// When it was first marked sprayed, ms since the epoch.
    pub detected_at_ms: i64,
    /// Marked sprayed until, ms since the epoch.
    pub until_ms: i64,
    /// Distinct accounts it failed against in the tracked window (capped just above the threshold).
    pub accounts_failed: usize,
    /// Accounts that signed in with it while it was marked.
    pub flagged: Vec<FlaggedAccount>,
}

/// A familiar location of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FamiliarView {
    /// The prefix.
    pub prefix: String,
    /// The last success from it, ms since the epoch.
    pub last_success_ms: i64,
}

/// Why a location of one kind would be refused now, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockedView {
    /// The reason an attempt would get (`account_locked`, `directory_locked`, `directory_budget`).
    pub reason: &'static str,
    /// Until when, ms since the epoch.
    pub until_ms: i64,
}

/// Everything about one account an operator needs to answer "why can't I sign in?".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountExplain {
    /// Tenant name.
    pub tenant: String,
    /// The normalised name the engine keys the account by.
    pub account: String,
    /// Whether the engine tracks the account at all (false: nothing is known, nothing blocks it).
    pub tracked: bool,
    /// Failures from unfamiliar locations within `lockout.window`.
    pub unfamiliar_failures: u32,
    /// Failures from familiar locations within `lockout.window`.
    pub familiar_failures: u32,
    /// The mirror of the directory's `badPwdCount`, as the next bad password would see it.
    pub directory_bad_count: u32,
    /// Attempts forwarded whose outcome has not come back (counted as failures).
    pub pending: u32,
    /// Bad passwords an unfamiliar location may still send the directory in this window.
    pub budget_left_unfamiliar: u32,
    /// Bad passwords a familiar location may still send the directory in this window.
    pub budget_left_familiar: u32,
    /// Familiar locations with their last success.
    pub familiar: Vec<FamiliarView>,
    /// Active lockouts.
    pub lockouts: Vec<LockoutView>,
    /// Set when the account signed in with a sprayed password: the spray's opaque id.
    pub flagged_spray: Option<String>,
    /// When it was flagged, ms since the epoch.
    pub flagged_at_ms: Option<i64>,
    /// Why an unfamiliar location is refused now, if it is.
    pub blocked_unfamiliar: Option<BlockedView>,
    /// Why a familiar location is refused now, if it is.
    pub blocked_familiar: Option<BlockedView>,
}

/// An account that is failing now: its counters and how much of the directory's budget is spent.
/// Listed by [`Engine::attacked_accounts`] and [`Engine::budget_pressure`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountHeat {
    /// Tenant name.
    pub tenant: String,
    /// The account's normalised name.
    pub account: String,
    /// Failures from unfamiliar locations within `lockout.window`.
    pub unfamiliar_failures: u32,
    /// Failures from familiar locations within `lockout.window`.
    pub familiar_failures: u32,
    /// The mirror of the directory's `badPwdCount` now.
    pub directory_bad_count: u32,
    /// Attempts in flight (counted against the budget as failures).
    pub pending: u32,
    /// The directory's `lockout_threshold` for the tenant.
    pub directory_threshold: u32,
    /// Bad passwords an unfamiliar location may still send the directory in this window.
    pub budget_left_unfamiliar: u32,
    /// Whether a smart lockout is in force.
    pub locked: bool,
    /// When the account was last seen, ms since the epoch.
    pub last_seen_ms: i64,
}

/// An address or prefix that is failing now. Listed by [`Engine::attacking_sources`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceHeat {
    /// Tenant name, or `#<hex id>` when the tenant is not known by name.
    pub tenant: String,
    /// The address or prefix.
    pub source: String,
    /// Failures within `sources.window`.
    pub failures: u32,
    /// Distinct accounts failed within `sources.window` (capped just above the policy's limit).
    pub failed_accounts: usize,
    /// Successes within `sources.window`.
    pub successes: u32,
    /// Whether a block is in force.
    pub blocked: bool,
}

/// What `clear-source` names: a prefix exactly, or an address (and every tracked prefix holding it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceTarget {
    /// `192.0.2.0/24`: that prefix's block only.
    Prefix(NetKey),
    /// `192.0.2.7`: the address's block and those of the prefixes containing it.
    Address(IpAddr),
}

impl SourceTarget {
    /// Parses an operator's `source`: with a `/` a prefix, otherwise an address.
    pub fn parse(source: &str) -> Result<SourceTarget> {
        let bad = || Error::InvalidInput {
            field: "source",
            reason: "must be an IP address or a network prefix such as 192.0.2.0/24".into(),
        };
        if source.contains('/') {
            let net: IpNet = source.trim().parse().map_err(|_| bad())?;
            Ok(SourceTarget::Prefix(NetKey::new(
                net.network(),
                net.prefix_len(),
            )))
        } else {
            parse_ip(source).map(SourceTarget::Address).ok_or_else(bad)
        }
    }
}

/// Refuses a malformed tenant name (`InvalidInput` on `tenant`).
pub fn check_tenant(tenant: &str) -> Result<()> {
    if valid_tenant_name(tenant) {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            field: "tenant",
            reason: "must be 1 to 64 of A-Z a-z 0-9 . _ -".into(),
        })
    }
}

/// The lockouts of one account in force at `now_ms`: each smart lockout and the mirrored
/// directory lock, in kind order.
pub fn lockout_views(a: &AccountState, now_ms: i64) -> Vec<LockoutView> {
    let mut out = Vec::new();
    let t = a.trouble();
    for (kind, lock) in [
        (LockKind::Unfamiliar, t.locks[0]),
        (LockKind::Familiar, t.locks[1]),
    ] {
        if lock.active(now_ms) {
            out.push(LockoutView {
                tenant: a.tenant.to_string(),
                account: a.name.to_string(),
                kind,
                since_ms: lock.since,
                until_ms: lock.until,
                level: lock.level,
            });
        }
    }
    if t.mirror.is_locked(now_ms) {
        out.push(LockoutView {
            tenant: a.tenant.to_string(),
            account: a.name.to_string(),
            kind: LockKind::Directory,
            since_ms: 0,
            until_ms: t.mirror.locked_until,
            level: 1,
        });
    }
    out
}

/// The view of the block of source `source` (address or prefix) of `tenant`, if one is in force
/// at `now_ms`.
pub fn source_block_view(
    tenant: String,
    source: String,
    s: &SourceState,
    now_ms: i64,
) -> Option<SourceBlockView> {
    if !s.block.active(now_ms) {
        return None;
    }
    let (counter, value, limit) = s
        .block_reason
        .map(|(c, v, l)| (c.counter().to_string(), v, l))
        .unwrap_or_else(|| ("source_blocked".to_string(), 1, 1));
    Some(SourceBlockView {
        tenant,
        source,
        counter,
        value,
        limit,
        since_ms: s.block.since,
        until_ms: s.block.until,
        level: s.block.level,
    })
}

/// Sorts lockouts as [`Engine::active_lockouts`] lists them: by tenant, account and kind.
pub fn sort_lockouts(v: &mut [LockoutView]) {
    v.sort_by(|x, y| {
        (&x.tenant, &x.account, x.kind as u8).cmp(&(&y.tenant, &y.account, y.kind as u8))
    });
}

/// Sorts source blocks as [`Engine::blocked_sources`] lists them: by tenant and source.
pub fn sort_sources(v: &mut [SourceBlockView]) {
    v.sort_by(|x, y| (&x.tenant, &x.source).cmp(&(&y.tenant, &y.source)));
}

/// Sorts sprays as [`Engine::sprayed_passwords`] lists them: by detection time, then id.
pub fn sort_sprays(v: &mut [SprayView]) {
    v.sort_by(|x, y| (x.detected_at_ms, &x.id).cmp(&(y.detected_at_ms, &y.id)));
}

impl Engine {
    /// The id the engine keys a tenant's sources by.
    fn tenant_id(&self, name: &str) -> u64 {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(b"tenant\0");
        h.update(name.as_bytes());
        u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
    }

    /// Tenant ids to names, from every place a tenant name is known.
    fn tenant_names(&self) -> HashMap<u64, String> {
        let mut names: HashMap<u64, String> = HashMap::new();
        for t in self.tenants.read().values() {
            names.insert(t.id, t.name.to_string());
        }
        let policy = self.policy();
        let mut add = |n: &str| {
            names
                .entry(self.tenant_id(n))
                .or_insert_with(|| n.to_string());
        };
        add("default");
        for n in policy.tenants.keys() {
            add(n);
        }
        self.accounts.for_each(|_, a| add(&a.tenant));
        names
    }

    /// Every lockout in force at `now` (smart lockouts and mirrored directory locks), sorted by
    /// tenant, account and kind.
    pub fn active_lockouts(&self, now: Timestamp) -> Vec<LockoutView> {
        let now = now.as_millis();
        let mut out = Vec::new();
        self.accounts
            .for_each(|_, a| out.extend(lockout_views(a, now)));
        sort_lockouts(&mut out);
        out
    }

    /// Every source block in force at `now`, sorted by tenant and source.
    pub fn blocked_sources(&self, now: Timestamp) -> Vec<SourceBlockView> {
        let now = now.as_millis();
        let names = self.tenant_names();
        let mut out: Vec<SourceBlockView> = self
            .sources
            .iter()
            .filter_map(|s| {
                let tenant = names
                    .get(&s.key().tenant)
                    .cloned()
                    .unwrap_or_else(|| format!("#{:016x}", s.key().tenant));
                source_block_view(tenant, s.key().net.to_string(), &s, now)
            })
            .collect();
        sort_sources(&mut out);
        out
    }

    /// Every fingerprint marked sprayed at `now`, by opaque id, with the accounts flagged for
    /// signing in with it. Sorted by detection time.
    pub fn sprayed_passwords(&self, now: Timestamp) -> Vec<SprayView> {
        let now = now.as_millis();
        let mut out: Vec<SprayView> = self
            .sprays
            .iter()
            .filter_map(|s| self.spray_view(self.spray_id(*s.key()), &s, now))
            .collect();
        sort_sprays(&mut out);
        out
    }

    /// The view of one spray state whose opaque id is `id`, if it is marked sprayed at `now_ms`.
    /// `accounts_failed` counts within the default policy's `spray.window`.
    pub fn spray_view(&self, id: String, s: &SprayState, now_ms: i64) -> Option<SprayView> {
        if !s.is_sprayed(now_ms) {
            return None;
        }
        let policy = self.policy();
        Some(SprayView {
            id,
            detected_at_ms: s.detected_at,
            until_ms: s.sprayed_until,
            accounts_failed: s.accounts.count(now_ms, policy.defaults.spray.window.ms()),
            flagged: s
                .flagged
                .iter()
                .map(|(t, a)| FlaggedAccount {
                    tenant: t.to_string(),
                    account: a.to_string(),
                })
                .collect(),
        })
    }

    /// The account key of `user` in `tenant` as every store keys it (see
    /// [`Engine::account_identity`]), refusing a malformed tenant name without registering it.
    pub fn admin_account_identity(&self, tenant: &str, user: &str) -> Result<(u128, Box<str>)> {
        check_tenant(tenant)?;
        self.account_identity(tenant, user)
    }

    fn admin_account_key(&self, tenant: &str, user: &str) -> Result<(AccountKey, String)> {
        check_tenant(tenant)?;
        let name = normalize(user)?;
        Ok((self.account_key(tenant, &name), name))
    }

    /// Explains an account at `now`: its counters, directory budget left, familiar locations,
    /// lockouts, flag, and why each kind of location is refused. `user` is the name as typed.
    pub fn explain_account(
        &self,
        tenant: &str,
        user: &str,
        now: Timestamp,
    ) -> Result<AccountExplain> {
        let (key, name) = self.admin_account_key(tenant, user)?;
        let a = self.accounts.get(&key);
        Ok(self.explain_state(tenant, name, a.as_deref(), now))
    }

    /// Explains the account `name` (normalised) of `tenant` whose state is `a` (`None`: not
    /// tracked) at `now`, as [`Engine::explain_account`] does; for a state read from elsewhere
    /// (a shared store), with `a.pending` set to its attempts in flight.
    pub fn explain_state(
        &self,
        tenant: &str,
        name: String,
        a: Option<&AccountState>,
        now: Timestamp,
    ) -> AccountExplain {
        let now_ms = now.as_millis();
        let policy = self.policy();
        let p = policy.for_tenant(tenant);
        let window = p.directory.observation_window.ms();
        let mut view = AccountExplain {
            tenant: tenant.to_string(),
            account: name,
            tracked: false,
            unfamiliar_failures: 0,
            familiar_failures: 0,
            directory_bad_count: 0,
            pending: 0,
            budget_left_unfamiliar: p.budget(false),
            budget_left_familiar: p.budget(true),
            familiar: Vec::new(),
            lockouts: Vec::new(),
            flagged_spray: None,
            flagged_at_ms: None,
            blocked_unfamiliar: None,
            blocked_familiar: None,
        };
        let Some(a) = a else {
            return view;
        };
        view.tracked = true;
        let lw = p.lockout.window.ms();
        let t = a.trouble();
        view.unfamiliar_failures = t.fails[class(false)].count(now_ms, lw);
        view.familiar_failures = t.fails[class(true)].count(now_ms, lw);
        let bad = t.mirror.effective(now_ms, window);
        view.directory_bad_count = bad;
        view.pending = a.pending;
        let spent = bad + a.pending;
        view.budget_left_unfamiliar = p.budget(false).saturating_sub(spent);
        view.budget_left_familiar = p.budget(true).saturating_sub(spent);
        let fam_for = p.familiar.familiar_for.ms();
        view.familiar = a
            .familiar()
            .iter()
            .filter(|(_, t)| now_ms - t < fam_for)
            .map(|(k, t)| FamiliarView {
                prefix: k.to_ipnet().to_string(),
                last_success_ms: *t,
            })
            .collect();
        view.lockouts = lockout_views(a, now_ms);
        if let Some((h, at)) = t.flagged {
            view.flagged_spray = Some(self.spray_id(h));
            view.flagged_at_ms = Some(at);
        }
        let budget_until = if bad > 0 {
            t.mirror.bad_time + window
        } else {
            now_ms + window
        };
        for familiar in [false, true] {
            let lock = t.locks[class(familiar)];
            let why = if lock.active(now_ms) {
                Some(BlockedView {
                    reason: "account_locked",
                    until_ms: lock.until,
                })
            } else if t.mirror.is_locked(now_ms) {
                Some(BlockedView {
                    reason: "directory_locked",
                    until_ms: t.mirror.locked_until,
                })
            } else if spent + 1 > p.budget(familiar) {
                Some(BlockedView {
                    reason: "directory_budget",
                    until_ms: budget_until,
                })
            } else {
                None
            };
            if familiar {
                view.blocked_familiar = why;
            } else {
                view.blocked_unfamiliar = why;
            }
        }
        view
    }

    /// Ends both smart lockouts of an account (their repeat level is kept, and the directory
    /// mirror is untouched: the directory's own lock is the directory's). Returns whether a lockout
    /// was in force.
    pub fn unlock_account(&self, tenant: &str, user: &str, now: Timestamp) -> Result<bool> {
        let (key, _) = self.admin_account_key(tenant, user)?;
        let now = now.as_millis();
        let Some(mut a) = self.accounts.get_mut(&key) else {
            return Ok(false);
        };
        let was = a.unlock(now);
        drop(a);
        if self.store.is_some() {
            self.dirty_accounts.insert(key);
        }
        Ok(was)
    }

    /// Clears source blocks of `tenant`: for a prefix (`192.0.2.0/24`), that prefix's block; for
    /// an address, the address's block and the block of every tracked prefix containing it.
    /// Returns how many blocks in force were cleared.
    pub fn clear_source_block(&self, tenant: &str, source: &str, now: Timestamp) -> Result<usize> {
        check_tenant(tenant)?;
        let now = now.as_millis();
        let tid = self.tenant_id(tenant);
        let mut keys: Vec<SourceKey> = Vec::new();
        match SourceTarget::parse(source)? {
            SourceTarget::Prefix(net) => keys.push(SourceKey { tenant: tid, net }),
            SourceTarget::Address(ip) => keys.extend(
                self.sources
                    .iter()
                    .filter(|s| s.key().tenant == tid && s.key().net.contains(ip))
                    .map(|s| *s.key()),
            ),
        }
        let mut cleared = 0;
        for k in keys {
            if let Some(mut s) = self.sources.get_mut(&k) {
                if s.clear_block(now) {
                    cleared += 1;
                }
                drop(s);
                if self.store.is_some() {
                    self.dirty_sources.insert(k);
                }
            }
        }
        Ok(cleared)
    }

    fn account_heat(&self, a: &crate::state::AccountState, now: i64) -> AccountHeat {
        let policy = self.policy();
        let p = policy.for_tenant(&a.tenant);
        let lw = p.lockout.window.ms();
        let t = a.trouble();
        let bad = t.mirror.effective(now, p.directory.observation_window.ms());
        AccountHeat {
            tenant: a.tenant.to_string(),
            account: a.name.to_string(),
            unfamiliar_failures: t.fails[class(false)].count(now, lw),
            familiar_failures: t.fails[class(true)].count(now, lw),
            directory_bad_count: bad,
            pending: a.pending,
            directory_threshold: p.directory.lockout_threshold,
            budget_left_unfamiliar: p.budget(false).saturating_sub(bad + a.pending),
            locked: t.locks.iter().any(|l| l.active(now)),
            last_seen_ms: a.last_seen,
        }
    }

    /// The `n` accounts most attacked at `now`, most first: ranked by failures within
    /// `lockout.window` plus the directory's mirrored bad-password count (a lockout resets the
    /// former, not the latter), then by whether a lockout is in force. Accounts with neither
    /// failures nor a lockout are left out. One pass over the tracked accounts.
    pub fn attacked_accounts(&self, now: Timestamp, n: usize) -> Vec<AccountHeat> {
        let now = now.as_millis();
        let score = |h: &AccountHeat| {
            (
                h.unfamiliar_failures + h.familiar_failures + h.directory_bad_count,
                h.locked,
                h.last_seen_ms,
            )
        };
        let mut out: Vec<AccountHeat> = Vec::new();
        self.accounts.for_each(|_, a| {
            let h = self.account_heat(a, now);
            if score(&h).0 > 0 || h.locked {
                out.push(h);
            }
        });
        out.sort_by(|x, y| (score(y), &x.account).cmp(&(score(x), &y.account)));
        out.truncate(n);
        out
    }

    /// The `n` accounts closest to the directory's own lockout at `now`: the highest mirrored
    /// bad-password count plus attempts in flight, relative to the tenant's threshold (accounts
    /// with neither are left out), closest first.
    pub fn budget_pressure(&self, now: Timestamp, n: usize) -> Vec<AccountHeat> {
        let now = now.as_millis();
        let mut out: Vec<AccountHeat> = Vec::new();
        self.accounts.for_each(|_, a| {
            let h = self.account_heat(a, now);
            if h.directory_bad_count + h.pending > 0 {
                out.push(h);
            }
        });
        // Closest first: fewest bad passwords left before the threshold.
        let left = |h: &AccountHeat| {
            h.directory_threshold
                .saturating_sub(h.directory_bad_count + h.pending)
        };
        out.sort_by(|x, y| (left(x), &x.tenant, &x.account).cmp(&(left(y), &y.tenant, &y.account)));
        out.truncate(n);
        out
    }

    /// The `n` addresses and prefixes with the most failures within `sources.window` at `now`
    /// (sources with none are left out), most failures first.
    pub fn attacking_sources(&self, now: Timestamp, n: usize) -> Vec<SourceHeat> {
        let now = now.as_millis();
        let names = self.tenant_names();
        let policy = self.policy();
        let mut out: Vec<SourceHeat> = self
            .sources
            .iter()
            .filter_map(|s| {
                let tenant = names
                    .get(&s.key().tenant)
                    .cloned()
                    .unwrap_or_else(|| format!("#{:016x}", s.key().tenant));
                let w = policy.for_tenant(&tenant).sources.window.ms();
                let failures = s.fails.count(now, w);
                (failures > 0).then(|| SourceHeat {
                    source: s.key().net.to_string(),
                    failures,
                    failed_accounts: s.failed_accounts.count(now, w),
                    successes: s.successes.count(now, w),
                    blocked: s.block.active(now),
                    tenant,
                })
            })
            .collect();
        out.sort_by(|x, y| {
            (y.failures, y.failed_accounts, &x.source).cmp(&(
                x.failures,
                x.failed_accounts,
                &y.source,
            ))
        });
        out.truncate(n);
        out
    }

    /// The tenant of an attempt in flight (for the service's metrics labels).
    pub fn pending_tenant(&self, attempt_id: u64) -> Option<std::sync::Arc<str>> {
        let id = self.pending.tenant_of(attempt_id)?;
        self.tenant_names.read().get(&id).cloned()
    }

    /// The familiar-location prefix an address falls in for `tenant` (for operators' tools).
    pub fn familiar_prefix(&self, tenant: &str, ip: std::net::IpAddr) -> String {
        let policy = self.policy();
        familiar_key(ip, policy.for_tenant(tenant))
            .to_ipnet()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Attempt, Outcome, Verdict};
    use crate::engine::Options;
    use crate::policy::Policy;

    const T0: i64 = 1_700_000_000_000;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(T0 + ms)
    }

    /// Lockout at five unfamiliar failures, which these tests count on.
    fn engine() -> Engine {
        let policy = Policy::from_toml("[defaults.lockout]\nthreshold = 5\n").unwrap();
        Engine::new(policy, Options::in_memory([7; 32])).unwrap()
    }

    fn attempt<'a>(user: &'a str, ip: &str, fp: &'a [u8]) -> Attempt<'a> {
        Attempt {
            tenant: "acme",
            user,
            ip: ip.parse().unwrap(),
            fingerprint: Some(fp),
        }
    }

    /// Sends one attempt and reports `result` for it when forwarded. Returns the verdict.
    fn try_once(e: &Engine, user: &str, ip: &str, fp: &[u8], result: Outcome, t: i64) -> Verdict {
        let d = e.check(&attempt(user, ip, fp), at(t)).unwrap();
        if let Some(id) = d.attempt_id {
            e.outcome(id, result, None, at(t)).unwrap();
        }
        d.verdict
    }

    fn lock_out(e: &Engine) {
        for i in 0..5u8 {
            try_once(
                e,
                "Alice",
                "203.0.113.9",
                &[b'x', i],
                Outcome::WrongPassword,
                1000 * i64::from(i),
            );
        }
    }

    #[test]
    fn lists_an_active_lockout_until_it_ends() {
        let e = engine();
        lock_out(&e);
        let locks = e.active_lockouts(at(5_000));
        assert_eq!(locks.len(), 1, "at {:?}: {locks:?}", at(5_000));
        assert_eq!(locks[0].tenant, "acme");
        assert_eq!(locks[0].account, "alice");
        assert_eq!(locks[0].kind, LockKind::Unfamiliar);
        assert_eq!(locks[0].since_ms, T0 + 4_000);
        assert_eq!(locks[0].until_ms, T0 + 64_000);
        assert!(e.active_lockouts(at(64_000)).is_empty());
    }

    #[test]
    fn unlock_clears_the_lockout_and_lets_attempts_through() {
        let e = engine();
        lock_out(&e);
        let d = e
            .check(&attempt("alice", "203.0.113.9", b"y"), at(6_000))
            .unwrap();
        assert_eq!(d.verdict, Verdict::Block);
        assert!(e.unlock_account("acme", " ALICE ", at(7_000)).unwrap());
        assert!(e.active_lockouts(at(7_000)).is_empty());
        let d = e
            .check(&attempt("alice", "203.0.113.9", b"y"), at(8_000))
            .unwrap();
        assert_eq!(d.verdict, Verdict::Forward, "at {:?}", at(8_000));
        assert!(
            !e.unlock_account("acme", "nobody", at(9_000)).unwrap(),
            "unknown accounts have nothing to unlock"
        );
    }

    #[test]
    fn explains_counters_budget_familiar_locations_and_why_blocked() {
        let e = engine();
        try_once(&e, "alice", "198.51.100.7", b"good", Outcome::Success, 0);
        lock_out(&e);
        let x = e.explain_account("acme", "Alice", at(5_000)).unwrap();
        assert!(x.tracked);
        assert_eq!(x.account, "alice");
        assert_eq!(x.directory_bad_count, 5);
        assert_eq!(x.budget_left_unfamiliar, 1, "budget 6 - 5 spent");
        assert_eq!(x.budget_left_familiar, 3, "budget 8 - 5 spent");
        assert_eq!(x.familiar.len(), 1);
        assert_eq!(x.familiar[0].prefix, "198.51.100.0/24");
        assert_eq!(x.familiar[0].last_success_ms, T0);
        assert_eq!(x.lockouts.len(), 1);
        let why = x
            .blocked_unfamiliar
            .clone()
            .expect("unfamiliar locations are locked");
        assert_eq!(why.reason, "account_locked");
        assert_eq!(why.until_ms, T0 + 64_000);
        assert_eq!(
            x.blocked_familiar, None,
            "the owner's location still gets through"
        );
        let json = serde_json::to_string(&x).unwrap();
        assert!(!json.contains("good") && !json.contains("x\\u"));
    }

    #[test]
    fn explains_an_unknown_account_as_untracked_with_full_budget() {
        let e = engine();
        let x = e.explain_account("acme", "nobody", at(0)).unwrap();
        assert!(!x.tracked);
        assert_eq!(x.budget_left_unfamiliar, 6);
        assert!(matches!(
            e.explain_account("bad tenant!", "x", at(0)),
            Err(Error::InvalidInput {
                field: "tenant",
                ..
            })
        ));
    }

    #[test]
    fn lists_and_clears_a_source_block_by_address() {
        let e = engine();
        // 12 accounts failing from one address: a spraying source.
        for i in 0..12 {
            try_once(
                &e,
                &format!("user{i}"),
                "203.0.113.50",
                format!("guess{i}").as_bytes(),
                Outcome::WrongPassword,
                i * 100,
            );
        }
        let blocks = e.blocked_sources(at(2_000));
        assert!(!blocks.is_empty(), "at {:?}", at(2_000));
        assert!(blocks.iter().all(|b| b.tenant == "acme"), "{blocks:?}");
        assert!(blocks.iter().any(|b| b.source == "203.0.113.50"));
        let n = e
            .clear_source_block("acme", "203.0.113.50", at(2_000))
            .unwrap();
        assert_eq!(n, blocks.len());
        assert!(e.blocked_sources(at(2_000)).is_empty());
        assert!(e.clear_source_block("acme", "not-an-ip", at(0)).is_err());
    }

    #[test]
    fn ranks_attacked_accounts_sources_and_budget_pressure() {
        let e = engine();
        lock_out(&e);
        try_once(
            &e,
            "bob",
            "203.0.113.9",
            b"z",
            Outcome::WrongPassword,
            5_000,
        );
        try_once(&e, "carol", "198.51.100.1", b"ok", Outcome::Success, 5_000);
        let now = at(6_000);
        let hot = e.attacked_accounts(now, 10);
        let names: Vec<&str> = hot.iter().map(|h| h.account.as_str()).collect();
        assert_eq!(names, ["alice", "bob"], "at {now:?}: {hot:?}");
        assert_eq!(hot[0].directory_bad_count, 5);
        assert!(hot[0].locked && !hot[1].locked);
        assert_eq!(e.attacked_accounts(now, 1).len(), 1);
        let budget = e.budget_pressure(now, 10);
        assert_eq!(budget[0].account, "alice");
        assert_eq!(budget[0].directory_bad_count, 5);
        assert_eq!(budget[0].directory_threshold, 10);
        assert_eq!(budget[0].budget_left_unfamiliar, 1);
        assert!(budget.iter().all(|h| h.account != "carol"), "{budget:?}");
        let sources = e.attacking_sources(now, 10);
        let addr = sources
            .iter()
            .find(|s| s.source == "203.0.113.9")
            .unwrap_or_else(|| panic!("the attacking address is listed: {sources:?}"));
        assert_eq!((addr.failures, addr.failed_accounts), (6, 2));
        assert_eq!(sources[0].failures, 6, "most failures first: {sources:?}");
        assert!(sources.iter().all(|s| !s.source.starts_with("198.51.100")));
        assert!(e.attacked_accounts(at(3_600_000), 10).is_empty());
    }

    #[test]
    fn lists_sprayed_passwords_by_opaque_id_only() {
        let e = engine();
        for i in 0..6 {
            // Different addresses so no source block interferes.
            try_once(
                &e,
                &format!("user{i}"),
                &format!("192.0.{i}.1"),
                b"Spring2026!",
                Outcome::WrongPassword,
                i * 1000,
            );
        }
        let sprays = e.sprayed_passwords(at(10_000));
        assert_eq!(sprays.len(), 1, "at {:?}", at(10_000));
        let h = e.fingerprint_hash("acme", b"Spring2026!");
        assert_eq!(sprays[0].id, e.spray_id(h));
        let json = serde_json::to_string(&sprays).unwrap();
        assert!(!json.contains("Spring") && !json.contains(&h.to_string()));
        assert!(sprays[0].accounts_failed >= 5);
    }
}
