//! The map of tracked accounts: shards of hash tables that hold one pointer per account.
//!
//! A general-purpose map keeps each entry's key beside its value in the table: with a 128-bit
//! key and a box that is 24 bytes a slot, and since a hash table is between 44% and 88% full,
//! 27 to 55 bytes per account went to the table alone, a quarter of an account's memory. Here the
//! key lives in the boxed entry with the state, and a table slot is the box's pointer: 8 bytes a
//! slot, 9 to 18 per account. A lookup compares the key behind the pointer, the entry the caller
//! is about to read anyway.
//!
//! Invariants: a key is in at most one entry, and the entry sits in the shard its key picks; a
//! guard holds one shard's lock and nothing else; walks ([`AccountMap::retain`],
//! [`AccountMap::for_each`]) lock one shard at a time.

use crate::engine::AccountKey;
use crate::state::AccountState;
use hashbrown::hash_table::{Entry as TableEntry, HashTable};
use parking_lot::{MappedRwLockReadGuard, MappedRwLockWriteGuard, RwLock};
use parking_lot::{RwLockReadGuard, RwLockWriteGuard};

/// Shards per map: every attempt takes an account's shard lock, and with few shards two threads
/// keep pulling the same lock words from each other's caches (as for the engine's other maps).
const SHARDS: usize = 64;

/// One account: its key and its state, in one allocation.
struct Slot {
    key: AccountKey,
    state: AccountState,
}

/// A shard on cache lines of its own, so that two threads working in neighbouring shards do
/// not take the lines from each other (128 bytes: x86 prefetches lines in pairs).
#[repr(align(128))]
struct Shard(RwLock<HashTable<Box<Slot>>>);

/// The table hash of a key. The key is a keyed hash already, uniform to anyone without the
/// engine's secret: folding its halves is enough.
fn hash_of(key: AccountKey) -> u64 {
    key.fold()
}

/// Read access to one account, holding its shard's read lock.
pub(crate) type AccountRef<'a> = MappedRwLockReadGuard<'a, AccountState>;
/// Write access to one account, holding its shard's write lock.
pub(crate) type AccountMut<'a> = MappedRwLockWriteGuard<'a, AccountState>;

/// Tracked accounts by key, sharded.
pub(crate) struct AccountMap {
    shards: Box<[Shard]>,
}

impl Default for AccountMap {
    fn default() -> Self {
        AccountMap {
            shards: (0..SHARDS)
                .map(|_| Shard(RwLock::new(HashTable::new())))
                .collect(),
        }
    }
}

impl AccountMap {
    /// The shard of a key's hash. hashbrown takes a slot's position from the hash's low bits
    /// and its tag from the top seven, so the shard comes from bits neither uses.
    fn shard(&self, hash: u64) -> &RwLock<HashTable<Box<Slot>>> {
        &self.shards[(hash >> 32) as usize % SHARDS].0
    }

    /// The account `key`, to read.
    pub(crate) fn get(&self, key: &AccountKey) -> Option<AccountRef<'_>> {
        let (key, h) = (*key, hash_of(*key));
        RwLockReadGuard::try_map(self.shard(h).read(), |t| {
            t.find(h, |s| s.key == key).map(|s| &s.state)
        })
        .ok()
    }

    /// The account `key`, to change.
    pub(crate) fn get_mut(&self, key: &AccountKey) -> Option<AccountMut<'_>> {
        let (key, h) = (*key, hash_of(*key));
        RwLockWriteGuard::try_map(self.shard(h).write(), |t| {
            t.find_mut(h, |s| s.key == key).map(|s| &mut s.state)
        })
        .ok()
    }

    /// The account `key`, to change; made by `make` when it is not tracked.
    pub(crate) fn get_or_insert_with(
        &self,
        key: AccountKey,
        make: impl FnOnce() -> AccountState,
    ) -> AccountMut<'_> {
        let h = hash_of(key);
        RwLockWriteGuard::map(self.shard(h).write(), |t| {
            match t.entry(h, |s| s.key == key, |s| hash_of(s.key)) {
                TableEntry::Occupied(o) => &mut o.into_mut().state,
                TableEntry::Vacant(v) => {
                    &mut v
                        .insert(Box::new(Slot { key, state: make() }))
                        .into_mut()
                        .state
                }
            }
        })
    }

    /// Tracks `state` as the account `key`, replacing what was there.
    pub(crate) fn insert(&self, key: AccountKey, state: AccountState) {
        let h = hash_of(key);
        match self
            .shard(h)
            .write()
            .entry(h, |s| s.key == key, |s| hash_of(s.key))
        {
            TableEntry::Occupied(mut o) => o.get_mut().state = state,
            TableEntry::Vacant(v) => {
                v.insert(Box::new(Slot { key, state }));
            }
        }
    }

    /// Stops tracking the account `key`. Returns whether it was tracked.
    pub(crate) fn remove(&self, key: &AccountKey) -> bool {
        let (key, h) = (*key, hash_of(*key));
        match self.shard(h).write().find_entry(h, |s| s.key == key) {
            Ok(o) => {
                o.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Keeps the accounts for which `keep` says so, one shard at a time.
    pub(crate) fn retain(&self, mut keep: impl FnMut(AccountKey, &mut AccountState) -> bool) {
        for shard in self.shards.iter() {
            shard.0.write().retain(|s| keep(s.key, &mut s.state));
        }
    }

    /// Calls `f` with every account, one shard at a time (each shard under its read lock).
    pub(crate) fn for_each(&self, mut f: impl FnMut(AccountKey, &AccountState)) {
        for shard in self.shards.iter() {
            for s in shard.0.read().iter() {
                f(s.key, &s.state);
            }
        }
    }

    /// How many accounts are tracked (locks every shard in turn: not for every attempt).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TenantName;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn account(name: &str, now: i64) -> AccountState {
        let tenant: TenantName = Arc::new("t".into());
        AccountState::new(tenant, name.into(), now)
    }

    #[test]
    fn one_pointer_per_table_slot() {
        assert_eq!(std::mem::size_of::<Box<Slot>>(), 8);
        // The state and its key fit mimalloc's 112-byte size class.
        assert!(
            std::mem::size_of::<Slot>() <= 112,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn keys_that_share_a_table_hash_stay_apart() {
        let m = AccountMap::default();
        // hi ^ lo is the same for both: the table sees one hash, the keys differ.
        let a = AccountKey::new((5u128 << 64) | 3);
        let b = AccountKey::new((7u128 << 64) | 1);
        assert_eq!(a.fold(), b.fold());
        m.insert(a, account("a", 1));
        m.insert(b, account("b", 2));
        assert_eq!(&*m.get(&a).expect("a").name, "a");
        assert_eq!(&*m.get(&b).expect("b").name, "b");
        assert!(m.remove(&a));
        assert!(!m.remove(&a));
        assert!(m.get(&a).is_none());
        assert_eq!(m.get(&b).expect("b").last_seen, 2);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn insert_replaces_and_get_or_insert_keeps() {
        let m = AccountMap::default();
        let k = AccountKey::new(42);
        assert_eq!(
            &*m.get_or_insert_with(k, || account("first", 1)).name,
            "first"
        );
        assert_eq!(
            &*m.get_or_insert_with(k, || account("second", 2)).name,
            "first"
        );
        assert_eq!(&*m.get(&k).expect("kept").name, "first");
        m.insert(k, account("third", 3));
        assert_eq!(&*m.get(&k).expect("replaced").name, "third");
        m.get_mut(&k).expect("there").last_seen = 9;
        assert_eq!(m.get(&k).expect("changed").last_seen, 9);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn many_accounts_behave_as_an_ordered_map() {
        let m = AccountMap::default();
        let mut model = BTreeMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct keys, so that keys repeat and get removed.
            let key = AccountKey::new(u128::from(x % 5_000) * 0x1_0000_0001_0000_0001);
            match x % 4 {
                0 => {
                    assert_eq!(m.remove(&key), model.remove(&key).is_some());
                }
                1 => {
                    m.insert(key, account("i", i));
                    model.insert(key, i);
                }
                _ => {
                    let seen = m.get_or_insert_with(key, || account("g", i)).last_seen;
                    assert_eq!(seen, *model.entry(key).or_insert(i));
                }
            }
        }
        assert_eq!(m.len(), model.len());
        m.retain(|k, a| {
            a.last_seen += 1;
            k.fold() % 2 == 0
        });
        model.retain(|k, _| k.fold() % 2 == 0);
        let mut seen = BTreeMap::new();
        m.for_each(|k, a| {
            assert!(seen.insert(k, a.last_seen).is_none(), "one entry per key");
        });
        let expected: BTreeMap<_, _> = model.iter().map(|(k, t)| (*k, t + 1)).collect();
        assert_eq!(seen, expected);
    }
}
