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
    /// Never locked.
    pub const NONE: Lock = Lock {
        until: 0,
        since: 0,
        level: 0,
    };

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

/// What an account has been through since it first failed: the directory mirror, failures,
/// lockouts, wrong passwords and the spray flag. An account that never failed has none of it
/// (see [`AccountState::trouble`]), which is most accounts: they pay no memory for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trouble {
    /// The mirror of the directory's counter.
    pub mirror: DirectoryMirror,
    /// Failures within `lockout.window`: `[unfamiliar, familiar]`.
    pub fails: [SlidingCount; 2],
    /// Smart lockouts: `[unfamiliar, familiar]`.
    pub locks: [Lock; 2],
    /// Keyed hashes of recent wrong fingerprints with when they failed; at most `lockout.remember_bad`.
    pub bad_fps: Vec<(u64, i64)>,
    /// Set when the account signed in with a sprayed password: (spray id, when).
    pub flagged: Option<(u64, i64)>,
}

impl Trouble {
    /// Nothing happened: what an account without a record reads as.
    pub const NONE: Trouble = Trouble {
        mirror: DirectoryMirror {
            bad_count: 0,
            bad_time: 0,
            locked_until: 0,
        },
        fails: [SlidingCount::EMPTY, SlidingCount::EMPTY],
        locks: [Lock::NONE, Lock::NONE],
        bad_fps: Vec::new(),
        flagged: None,
    };
}

static NO_TROUBLE: Trouble = Trouble::NONE;

/// A tenant's name as accounts hold it: one allocation per tenant shared by its accounts, behind
/// a thin pointer (8 bytes where `Arc<str>` takes 16: there is one in every account).
pub type TenantName = Arc<Box<str>>;

/// Familiar locations with their last success (ms), one held inline: most accounts sign in from
/// one place. 32 bytes: the spilled form's pointer sits beside the byte of the inline entry that
/// tells the forms apart (a `bool` in [`NetKey`]), where a `SmallVec` would take 40.
#[derive(Clone, Debug, Default)]
enum FamiliarList {
    #[default]
    Empty,
    One((NetKey, i64)),
    Many(Box<[(NetKey, i64)]>),
}

impl FamiliarList {
    fn as_slice(&self) -> &[(NetKey, i64)] {
        match self {
            FamiliarList::Empty => &[],
            FamiliarList::One(e) => std::slice::from_ref(e),
            FamiliarList::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [(NetKey, i64)] {
        match self {
            FamiliarList::Empty => &mut [],
            FamiliarList::One(e) => std::slice::from_mut(e),
            FamiliarList::Many(v) => v,
        }
    }

    fn from_vec(v: Vec<(NetKey, i64)>) -> Self {
        match v[..] {
            [] => FamiliarList::Empty,
            [e] => FamiliarList::One(e),
            _ => FamiliarList::Many(v.into_boxed_slice()),
        }
    }
}

impl PartialEq for FamiliarList {
    fn eq(&self, o: &Self) -> bool {
        self.as_slice() == o.as_slice()
    }
}

/// Everything the engine knows about one account.
///
/// Kept small because there is one per tracked account (the engine boxes it in its map, so a
/// map slot is a key and a pointer): the failure record lives behind [`AccountState::trouble`]
/// and is allocated by the first failure, and one familiar location is held inline. The
/// serialised form (stores, Redis) is the flat record every version has written: see
/// [`AccountRecord`].
#[derive(Clone, Debug)]
pub struct AccountState {
    /// Tenant name.
    pub tenant: TenantName,
    /// Normalised sign-in name.
    pub name: Box<str>,
    /// Last activity (ms).
    pub last_seen: i64,
    /// Keyed hashes of the last two distinct fingerprints the account signed in with (0: none).
    /// A wrong password equal to one of them is the owner typing a previous password after a
    /// reset: the source that types it becomes familiar.
    pub good_fps: [u64; 2],
    /// Forwarded attempts whose outcome has not come back (counted as failures). Not persisted:
    /// after a restart the ids are gone with the process that issued them.
    pub pending: u32,
    /// Whether the directory answered `unknown_user` last: such entries are evicted first.
    pub unknown: bool,
    /// Familiar prefixes with their last success (ms); at most `familiar.familiar_max`.
    familiar: FamiliarList,
    /// The failure record; `None` until the first failure.
    trouble: Option<Box<Trouble>>,
}

impl PartialEq for AccountState {
    /// Equal when every field reads the same: no failure record equals an empty one.
    fn eq(&self, o: &Self) -> bool {
        self.tenant == o.tenant
            && self.name == o.name
            && self.last_seen == o.last_seen
            && self.good_fps == o.good_fps
            && self.pending == o.pending
            && self.unknown == o.unknown
            && self.familiar == o.familiar
            && self.trouble() == o.trouble()
    }
}

impl Eq for AccountState {}

impl AccountState {
    /// A fresh account.
    pub fn new(tenant: TenantName, name: Box<str>, now: i64) -> Self {
        AccountState {
            tenant,
            name,
            last_seen: now,
            good_fps: [0; 2],
            pending: 0,
            unknown: false,
            familiar: FamiliarList::Empty,
            trouble: None,
        }
    }

    /// The failure record ([`Trouble::NONE`] when the account never failed).
    pub fn trouble(&self) -> &Trouble {
        self.trouble.as_deref().unwrap_or(&NO_TROUBLE)
    }

    /// The failure record to change, created on first use.
    pub fn trouble_mut(&mut self) -> &mut Trouble {
        self.trouble.get_or_insert_with(Box::default)
    }

    /// The failure record to change, only when there is one: for changes that leave an empty
    /// record empty (a success resetting counters).
    pub fn existing_trouble_mut(&mut self) -> Option<&mut Trouble> {
        self.trouble.as_deref_mut()
    }

    /// Familiar prefixes with their last success (ms).
    pub fn familiar(&self) -> &[(NetKey, i64)] {
        self.familiar.as_slice()
    }

    /// Ends both smart lockouts (admin unlock; the repeat levels and the directory mirror are
    /// kept). Returns whether one was in force at `now`.
    pub fn unlock(&mut self, now: i64) -> bool {
        let Some(t) = self.existing_trouble_mut() else {
            return false;
        };
        let was = t.locks.iter().any(|l| l.active(now));
        for lock in t.locks.iter_mut() {
            lock.clear();
        }
        was
    }

    /// The latest end (ms) of anything that refuses the account: its smart lockouts and the
    /// mirrored directory lock (0 when there has never been one).
    pub fn locked_until(&self) -> i64 {
        let t = self.trouble();
        t.locks[0]
            .until
            .max(t.locks[1].until)
            .max(t.mirror.locked_until)
    }

    /// Whether `loc` had a success within `for_ms`.
    pub fn is_familiar(&self, loc: NetKey, now: i64, for_ms: i64) -> bool {
        self.familiar
            .as_slice()
            .iter()
            .any(|&(k, t)| k == loc && now - t < for_ms)
    }

    /// Records a success from `loc`, evicting the least recently used beyond `max`.
    pub fn add_familiar(&mut self, loc: NetKey, now: i64, max: usize) {
        if let Some(e) = self.familiar.as_mut_slice().iter_mut().find(|e| e.0 == loc) {
            e.1 = e.1.max(now);
            return;
        }
        if let FamiliarList::Empty = self.familiar {
            self.familiar = FamiliarList::One((loc, now));
            return;
        }
        // Beyond the inline one, rebuilt at each new location: few accounts have many.
        let mut list = Vec::with_capacity(self.familiar.as_slice().len() + 1);
        list.extend_from_slice(self.familiar.as_slice());
        make_room(&mut list, max);
        list.push((loc, now));
        self.familiar = FamiliarList::from_vec(list);
    }

    /// Whether the wrong fingerprint `fp` was seen within `for_ms`.
    pub fn knows_bad(&self, fp: u64, now: i64, for_ms: i64) -> bool {
        self.trouble()
            .bad_fps
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
        let bad = &mut self.trouble_mut().bad_fps;
        if let Some(e) = bad.iter_mut().find(|e| e.0 == fp) {
            e.1 = e.1.max(now);
            return;
        }
        make_room(bad, max);
        bad.reserve_exact(1);
        bad.push((fp, now));
    }
}

/// Drops the least recently used entries of a bounded list (by their time, the order of
/// `swap_remove`) until there is room for one more within `max` (at least one).
fn make_room<K>(list: &mut Vec<(K, i64)>, max: usize) {
    while list.len() >= max.max(1) {
        let oldest = list
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.1)
            .map(|(i, _)| i)
            .unwrap_or(0);
        list.swap_remove(oldest);
    }
}

/// The serialised form of an [`AccountState`], field for field the flat struct earlier versions
/// derived it from (bincode in sled and Redis depends on the order): `pending` is not part of it.
#[derive(Serialize)]
struct AccountRecordRef<'a> {
    tenant: &'a str,
    name: &'a str,
    mirror: &'a DirectoryMirror,
    fails: &'a [SlidingCount; 2],
    locks: &'a [Lock; 2],
    familiar: &'a [(NetKey, i64)],
    bad_fps: &'a [(u64, i64)],
    good_fps: &'a [u64; 2],
    flagged: &'a Option<(u64, i64)>,
    unknown: bool,
    last_seen: i64,
}

/// [`AccountRecordRef`] read back.
#[derive(Deserialize)]
struct AccountRecord {
    tenant: Box<str>,
    name: Box<str>,
    mirror: DirectoryMirror,
    fails: [SlidingCount; 2],
    locks: [Lock; 2],
    familiar: Vec<(NetKey, i64)>,
    bad_fps: Vec<(u64, i64)>,
    good_fps: [u64; 2],
    flagged: Option<(u64, i64)>,
    unknown: bool,
    last_seen: i64,
}

impl Serialize for AccountState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.trouble();
        AccountRecordRef {
            tenant: &self.tenant,
            name: &self.name,
            mirror: &t.mirror,
            fails: &t.fails,
            locks: &t.locks,
            familiar: self.familiar.as_slice(),
            bad_fps: &t.bad_fps,
            good_fps: &self.good_fps,
            flagged: &t.flagged,
            unknown: self.unknown,
            last_seen: self.last_seen,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for AccountState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = AccountRecord::deserialize(d)?;
        let trouble = Trouble {
            mirror: r.mirror,
            fails: r.fails,
            locks: r.locks,
            bad_fps: r.bad_fps,
            flagged: r.flagged,
        };
        Ok(AccountState {
            tenant: Arc::new(r.tenant),
            name: r.name,
            last_seen: r.last_seen,
            good_fps: r.good_fps,
            pending: 0,
            unknown: r.unknown,
            familiar: FamiliarList::from_vec(r.familiar),
            // Nothing recorded reads back as no record: the memory stays as small as it was.
            trouble: (trouble != Trouble::NONE).then(|| Box::new(trouble)),
        })
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
    /// An address's rate bucket ([`crate::rate`]): its theoretical arrival time in ns, 0 when
    /// none. Kept in memory only: after a restart every bucket starts full, as before.
    #[serde(skip)]
    pub(crate) rate_tat: u64,
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
        let mut a = AccountState::new(Arc::new("t".into()), "u".into(), 0);
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

    /// The familiar list kept in a plain vector under the same bounded-list rule: what the
    /// inline-or-boxed form must match.
    fn add_to_model(list: &mut Vec<(NetKey, i64)>, loc: NetKey, now: i64, max: usize) {
        if let Some(e) = list.iter_mut().find(|e| e.0 == loc) {
            e.1 = e.1.max(now);
            return;
        }
        make_room(list, max);
        list.push((loc, now));
    }

    proptest::proptest! {
        /// Whatever the locations, times and caps (a policy reload may lower the cap), the list
        /// holds what a plain vector would, in the same order, and reads back from its
        /// serialised form equal.
        #[test]
        fn the_familiar_list_keeps_what_a_vector_would(
            steps in proptest::collection::vec((0u8..6, 0i64..50, 0usize..5), 0..40)
        ) {
            let mut a = AccountState::new(Arc::new("t".into()), "u".into(), 0);
            let mut model = Vec::new();
            for (loc, now, max) in steps {
                let key = NetKey::new(std::net::IpAddr::from([10, loc, 0, 1]), 24);
                a.add_familiar(key, now, max);
                add_to_model(&mut model, key, now, max);
                proptest::prop_assert_eq!(a.familiar(), &model[..]);
            }
            let back: AccountState = bincode::deserialize(&bincode::serialize(&a).unwrap()).unwrap();
            proptest::prop_assert_eq!(back, a);
        }
    }

    /// The flat struct `AccountState` derived its serde form from before the failure record was
    /// split off: stores written by earlier versions hold exactly this. It repeats
    /// `AccountRecord` on purpose: a change to that struct must fail this test, not follow it.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct FlatAccount {
        tenant: Arc<str>,
        name: Box<str>,
        mirror: DirectoryMirror,
        fails: [SlidingCount; 2],
        locks: [Lock; 2],
        familiar: Vec<(NetKey, i64)>,
        bad_fps: Vec<(u64, i64)>,
        good_fps: [u64; 2],
        flagged: Option<(u64, i64)>,
        unknown: bool,
        last_seen: i64,
    }

    #[test]
    fn the_serialised_form_is_the_flat_record_earlier_versions_wrote() {
        let ip = |s: &str| NetKey::new(s.parse().unwrap(), 24);
        let mut fails = [SlidingCount::default(), SlidingCount::default()];
        fails[0].add(5 * MIN, 15 * MIN, 3);
        let flat = FlatAccount {
            tenant: "acme".into(),
            name: "alice@acme.example".into(),
            mirror: DirectoryMirror {
                bad_count: 3,
                bad_time: 5 * MIN,
                locked_until: 0,
            },
            fails,
            locks: [
                Lock {
                    until: 9 * MIN,
                    since: 4 * MIN,
                    level: 1,
                },
                Lock::NONE,
            ],
            familiar: vec![(ip("10.1.2.3"), MIN), (ip("10.9.9.9"), 2 * MIN)],
            bad_fps: vec![(77, 5 * MIN)],
            good_fps: [5, 6],
            flagged: Some((9, 3 * MIN)),
            unknown: false,
            last_seen: 5 * MIN,
        };
        let bytes = bincode::serialize(&flat).unwrap();
        let a: AccountState = bincode::deserialize(&bytes).unwrap();
        assert_eq!(a.trouble().mirror.bad_count, 3);
        assert_eq!(a.trouble().locks[0].until, 9 * MIN);
        assert_eq!(a.trouble().bad_fps, vec![(77, 5 * MIN)]);
        assert_eq!(a.trouble().flagged, Some((9, 3 * MIN)));
        assert_eq!(a.familiar().len(), 2);
        assert_eq!(
            bincode::serialize(&a).unwrap(),
            bytes,
            "written back unchanged"
        );

        // An account that never failed writes the flat record's zeros and reads back without a
        // failure record.
        let mut quiet = AccountState::new(Arc::new("acme".into()), "bob".into(), MIN);
        quiet.add_familiar(ip("10.1.2.3"), MIN, 4);
        let bytes = bincode::serialize(&quiet).unwrap();
        let as_flat: FlatAccount = bincode::deserialize(&bytes).unwrap();
        assert_eq!(as_flat.mirror, DirectoryMirror::default());
        assert_eq!(as_flat.locks, [Lock::default(); 2]);
        assert_eq!(as_flat.familiar, vec![(ip("10.1.2.3"), MIN)]);
        let back: AccountState = bincode::deserialize(&bytes).unwrap();
        assert!(back.trouble.is_none());
        assert_eq!(back, quiet);
    }

    #[test]
    fn only_a_failure_gives_an_account_a_failure_record() {
        let mut a = AccountState::new(Arc::new("t".into()), "u".into(), 0);
        assert!(!a.unlock(1), "nothing to unlock");
        if let Some(t) = a.existing_trouble_mut() {
            t.fails[0].reset();
        }
        a.remember_good(7);
        assert!(a.trouble.is_none());
        assert_eq!(a.locked_until(), 0);
        a.remember_bad(9, 1, 4);
        assert!(a.trouble.is_some());
        assert!(a.knows_bad(9, 2, 100));
        // With its 16-byte key beside it, an account fits mimalloc's 112-byte size class (the
        // engine's map holds a pointer to the pair).
        assert!(std::mem::size_of::<AccountState>() <= 96);
    }

    #[test]
    fn remembers_only_the_last_distinct_wrong_passwords() {
        let mut a = AccountState::new(Arc::new("t".into()), "u".into(), 0);
        for (fp, t) in [(1, 0), (2, 1), (1, 2), (3, 3), (4, 4)] {
            a.remember_bad(fp, t, 3);
        }
        assert!(!a.knows_bad(2, 5, 100), "2 was the least recent");
        assert!(a.knows_bad(1, 5, 100) && a.knows_bad(3, 5, 100) && a.knows_bad(4, 5, 100));
        assert!(!a.knows_bad(4, 104, 100), "forgotten after remember_for");
    }
}
