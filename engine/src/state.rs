//! Per-key state kept in memory: accounts, sources and sprayed fingerprints.
//!
//! Every rule's arithmetic lives here, on plain structs, so it can be tested without the engine:
//! the directory mirror follows Active Directory's lockout rules exactly as
//! `shared/trace-format.md` states them, lockouts grow and expire, familiar locations are kept
//! least-recently-used. Every collection has a fixed bound (see each field).

use crate::net::NetKey;
use crate::window::{RecentSet, SlidingCount};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The directory's bad-password counter for one account, as the directory keeps it.
///
/// Invariant (the core promise): fed the same bad passwords and successes, at times no earlier
/// than the directory saw them, `bad_count` is never below the directory's `badPwdCount`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryMirror {
    /// `badPwdCount`.
    pub bad_count: u32,
    /// `badPasswordTime`, ms.
    pub bad_time: i64,
    /// Locked until this instant (ms); 0 when not locked.
    pub locked_until: i64,
}

impl DirectoryMirror {
    /// The count the next bad password would start from at `now`: 0 once the observation window
    /// has passed since the last one.
    pub fn effective(&self, now: i64, window_ms: i64) -> u32 {
        if self.bad_count == 0 || now - self.bad_time >= window_ms {
            0
        } else {
            self.bad_count
        }
    }

    /// Whether the directory holds the account locked at `now`.
    pub fn is_locked(&self, now: i64) -> bool {
        self.locked_until > now
    }

    /// A wrong password reached the directory. Returns whether it locked the account.
    pub fn record_bad(&mut self, now: i64, window_ms: i64, threshold: u32, lock_ms: i64) -> bool {
        if self.is_locked(now) {
            return false;
        }
        if now - self.bad_time >= window_ms {
            self.bad_count = 0;
        }
        self.bad_count = self.bad_count.saturating_add(1);
        self.bad_time = self.bad_time.max(now);
        if threshold > 0 && self.bad_count >= threshold {
            self.locked_until = now.saturating_add(lock_ms);
            return true;
        }
        false
    }

    /// A right password reached the directory. Returns whether it succeeded (not locked).
    pub fn record_success(&mut self, now: i64) -> bool {
        if self.is_locked(now) {
            return false;
        }
        self.bad_count = 0;
        true
    }
}

/// A lockout that grows on repetition and always ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Locked until (ms); in force while `until > now`.
    pub until: i64,
    /// When the current or last lockout started (ms).
    pub since: i64,
    /// How many lockouts in a row (resets after a quiet `max` period).
    pub level: u8,
}

impl Lock {
    /// Whether the lockout is in force at `now`.
    pub fn active(&self, now: i64) -> bool {
        self.until > now
    }

    /// Starts a lockout at `now`: `base * growth^level`, at most `max`. Returns its length (ms).
    pub fn start(&mut self, now: i64, base_ms: i64, growth: f64, max_ms: i64) -> i64 {
        if self.level > 0 && now >= self.until.saturating_add(max_ms) {
            self.level = 0; // quiet for a whole maximum period: forgiven
        }
        let factor = growth.powi(i32::from(self.level.min(62)));
        let len = ((base_ms as f64) * factor).min(max_ms as f64).max(1.0) as i64;
        self.until = now.saturating_add(len);
        self.since = now;
        self.level = self.level.saturating_add(1);
        len
    }

    /// Ends the lockout now (admin unlock); the repeat level is kept.
    pub fn clear(&mut self) {
        self.until = 0;
    }
}

/// Index of the unfamiliar/familiar halves of per-account pairs.
pub(crate) fn class(familiar: bool) -> usize {
    usize::from(familiar)
}

/// Everything the engine knows about one account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountState {
    /// Tenant name.
    pub tenant: Arc<str>,
    /// Normalised sign-in name.
    pub name: Box<str>,
    /// The mirror of the directory's counter.
    pub mirror: DirectoryMirror,
    /// Forwarded attempts whose outcome has not come back (counted as failures). Not persisted:
    /// after a restart the ids are gone with the process that issued them.
    #[serde(skip)]
    pub pending: u32,
    /// Failures within `lockout.window`: `[unfamiliar, familiar]`.
    pub fails: [SlidingCount; 2],
    /// Smart lockouts: `[unfamiliar, familiar]`.
    pub locks: [Lock; 2],
    /// Familiar prefixes with their last success (ms); at most `familiar.familiar_max`.
    pub familiar: Vec<(NetKey, i64)>,
    /// Keyed hashes of recent wrong fingerprints with when they failed; at most `lockout.remember_bad`.
    pub bad_fps: Vec<(u64, i64)>,
    /// Keyed hashes of the last two distinct fingerprints the account signed in with (0: none).
    /// A wrong password equal to one of them is the owner typing a previous password after a
    /// reset: the source that types it becomes familiar.
    pub good_fps: [u64; 2],
    /// Set when the account signed in with a sprayed password: (spray id, when).
    pub flagged: Option<(u64, i64)>,
    /// Whether the directory answered `unknown_user` last: such entries are evicted first.
    pub unknown: bool,
    /// Last activity (ms).
    pub last_seen: i64,
}

impl AccountState {
    /// A fresh account.
    pub fn new(tenant: Arc<str>, name: Box<str>, now: i64) -> Self {
        AccountState {
            tenant,
            name,
            mirror: DirectoryMirror::default(),
            pending: 0,
            fails: Default::default(),
            locks: Default::default(),
            familiar: Vec::new(),
            bad_fps: Vec::new(),
            good_fps: [0; 2],
            flagged: None,
            unknown: false,
            last_seen: now,
        }
    }

    /// Ends both smart lockouts (admin unlock; the repeat levels and the directory mirror are
    /// kept). Returns whether one was in force at `now`.
    pub fn unlock(&mut self, now: i64) -> bool {
        let was = self.locks.iter().any(|l| l.active(now));
        for lock in self.locks.iter_mut() {
            lock.clear();
        }
        was
    }

    /// The latest end (ms) of anything that refuses the account: its smart lockouts and the
    /// mirrored directory lock (0 when there has never been one).
    pub fn locked_until(&self) -> i64 {
        self.locks[0]
            .until
            .max(self.locks[1].until)
            .max(self.mirror.locked_until)
    }

    /// Whether `loc` had a success within `for_ms`.
    pub fn is_familiar(&self, loc: NetKey, now: i64, for_ms: i64) -> bool {
        self.familiar
            .iter()
            .any(|&(k, t)| k == loc && now - t < for_ms)
    }

    /// Records a success from `loc`, evicting the least recently used beyond `max`.
    pub fn add_familiar(&mut self, loc: NetKey, now: i64, max: usize) {
        if let Some(e) = self.familiar.iter_mut().find(|e| e.0 == loc) {
            e.1 = e.1.max(now);
            return;
        }
        while self.familiar.len() >= max.max(1) {
            let oldest = self
                .familiar
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.1)
                .map(|(i, _)| i)
                .unwrap_or(0);
            self.familiar.swap_remove(oldest);
        }
        // Grown one entry at a time: a push would reserve room for four (192 bytes) where most
        // accounts have one familiar location.
        self.familiar.reserve_exact(1);
        self.familiar.push((loc, now));
    }

    /// Whether the wrong fingerprint `fp` was seen within `for_ms`.
    pub fn knows_bad(&self, fp: u64, now: i64, for_ms: i64) -> bool {
        self.bad_fps
            .iter()
            .any(|&(h, t)| h == fp && now - t < for_ms)
    }

    /// Whether the account signed in with `fp` before (one of its last two passwords).
    pub fn signed_in_with(&self, fp: u64) -> bool {
        fp != 0 && self.good_fps.contains(&fp)
    }

    /// Records that the account signed in with `fp`.
    pub fn remember_good(&mut self, fp: u64) {
        if fp != 0 && self.good_fps[0] != fp {
            self.good_fps = [fp, self.good_fps[0]];
        }
    }

    /// Remembers the wrong fingerprint `fp`, keeping the last `max` distinct ones.
    pub fn remember_bad(&mut self, fp: u64, now: i64, max: usize) {
        if max == 0 {
            return;
        }
        if let Some(e) = self.bad_fps.iter_mut().find(|e| e.0 == fp) {
            e.1 = e.1.max(now);
            return;
        }
        while self.bad_fps.len() >= max {
            let oldest = self
                .bad_fps
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.1)
                .map(|(i, _)| i)
                .unwrap_or(0);
            self.bad_fps.swap_remove(oldest);
        }
        self.bad_fps.reserve_exact(1);
        self.bad_fps.push((fp, now));
    }
}

/// Counters and block of one address or prefix.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SourceState {
    /// Failures (wrong password or unknown user) within `sources.window`.
    pub fails: SlidingCount,
    /// Successes within `sources.window`.
    pub successes: SlidingCount,
    /// Distinct failed accounts within `sources.window` (capped above `spray.accounts_per_source`).
    pub failed_accounts: RecentSet,
    /// Distinct accounts that succeeded from here within `familiar.familiar_for` (capped at
    /// `familiar.shared_after_accounts`): a shared familiar location once full.
    pub good_accounts: RecentSet,
    /// The source block.
    pub block: Lock,
    /// What fired the block: (cause, value, limit).
    pub block_reason: Option<(crate::rules::BlockCause, u64, u64)>,
    /// Last activity (ms).
    pub last_seen: i64,
}

/// Spray state of one wrong fingerprint (by keyed hash).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SprayState {
    /// Distinct accounts it failed against within `spray.window` (capped above the threshold).
    pub accounts: RecentSet,
    /// Marked sprayed until (ms); 0 when not sprayed.
    pub sprayed_until: i64,
    /// When it was first marked sprayed (ms).
    pub detected_at: i64,
    /// Accounts that signed in with it while it was marked (the flagged ones), capped.
    pub flagged: Vec<(Arc<str>, Box<str>)>,
    /// Last activity (ms).
    pub last_seen: i64,
}

impl SourceState {
    /// Ends the source block and forgets what fired it (admin clear). Returns whether a block was
    /// in force at `now`.
    pub fn clear_block(&mut self, now: i64) -> bool {
        let was = self.block.active(now);
        self.block.clear();
        self.block_reason = None;
        was
    }
}

impl SprayState {
    /// Whether it is marked sprayed at `now`.
    pub fn is_sprayed(&self, now: i64) -> bool {
        self.sprayed_until > now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn mirror_resets_after_the_observation_window() {
        let mut m = DirectoryMirror::default();
        for i in 0..3 {
            m.record_bad(i * MIN, 30 * MIN, 10, 30 * MIN);
        }
        assert_eq!(m.effective(2 * MIN, 30 * MIN), 3);
        assert_eq!(
            m.effective(32 * MIN, 30 * MIN),
            0,
            "window passed since the last bad password"
        );
        m.record_bad(40 * MIN, 30 * MIN, 10, 30 * MIN);
        assert_eq!(m.bad_count, 1);
    }

    #[test]
    fn mirror_window_restarts_with_every_bad_password() {
        let mut m = DirectoryMirror::default();
        for i in 0..9 {
            m.record_bad(i * 20 * MIN, 30 * MIN, 10, 30 * MIN);
        }
        assert_eq!(
            m.bad_count, 9,
            "20 min apart never lets a 30 min window pass"
        );
    }

    #[test]
    fn mirror_locks_at_threshold_and_ignores_attempts_while_locked() {
        let mut m = DirectoryMirror::default();
        for i in 0..9 {
            assert!(!m.record_bad(i, 30 * MIN, 10, 30 * MIN));
        }
        assert!(m.record_bad(9, 30 * MIN, 10, 30 * MIN));
        assert!(m.is_locked(10));
        assert!(!m.record_success(11), "a right password fails while locked");
        assert_eq!(m.bad_count, 10);
        assert!(!m.is_locked(9 + 30 * MIN));
    }

    #[test]
    fn success_resets_the_mirror() {
        let mut m = DirectoryMirror::default();
        m.record_bad(0, 30 * MIN, 10, 30 * MIN);
        assert!(m.record_success(MIN));
        assert_eq!(m.effective(MIN, 30 * MIN), 0);
    }

    #[test]
    fn lockouts_grow_up_to_the_maximum_and_are_forgiven_after_quiet() {
        let mut l = Lock::default();
        assert_eq!(l.start(0, MIN, 2.0, 8 * MIN), MIN);
        assert_eq!(l.start(MIN, MIN, 2.0, 8 * MIN), 2 * MIN);
        assert_eq!(l.start(3 * MIN, MIN, 2.0, 8 * MIN), 4 * MIN);
        assert_eq!(l.start(7 * MIN, MIN, 2.0, 8 * MIN), 8 * MIN);
        assert_eq!(l.start(15 * MIN, MIN, 2.0, 8 * MIN), 8 * MIN, "capped");
        assert!(
            l.active(22 * MIN) && !l.active(23 * MIN),
            "no lockout is permanent"
        );
        assert_eq!(
            l.start(40 * MIN, MIN, 2.0, 8 * MIN),
            MIN,
            "forgiven after a quiet max period"
        );
    }

    #[test]
    fn familiar_locations_evict_the_least_recently_used() {
        let mut a = AccountState::new("t".into(), "u".into(), 0);
        let ip = |s: &str| NetKey::new(s.parse().unwrap(), 24);
        a.add_familiar(ip("10.0.1.1"), 1, 2);
        a.add_familiar(ip("10.0.2.1"), 2, 2);
        a.add_familiar(ip("10.0.1.9"), 3, 2); // refreshes 10.0.1.0/24
        a.add_familiar(ip("10.0.3.1"), 4, 2); // evicts 10.0.2.0/24
        assert!(a.is_familiar(ip("10.0.1.200"), 5, 100));
        assert!(!a.is_familiar(ip("10.0.2.1"), 5, 100));
        assert!(a.is_familiar(ip("10.0.3.1"), 5, 100));
        assert!(
            !a.is_familiar(ip("10.0.3.1"), 200, 100),
            "familiarity expires"
        );
    }

    #[test]
    fn remembers_only_the_last_distinct_wrong_passwords() {
        let mut a = AccountState::new("t".into(), "u".into(), 0);
        for (fp, t) in [(1, 0), (2, 1), (1, 2), (3, 3), (4, 4)] {
            a.remember_bad(fp, t, 3);
        }
        assert!(!a.knows_bad(2, 5, 100), "2 was the least recent");
        assert!(a.knows_bad(1, 5, 100) && a.knows_bad(3, 5, 100) && a.knows_bad(4, 5, 100));
        assert!(!a.knows_bad(4, 104, 100), "forgotten after remember_for");
    }
}
