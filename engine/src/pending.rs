//! Attempts in flight, by attempt id: what an outcome needs of the check that forwarded it.
//!
//! The engine issues ids from one counter, in blocks of [`BLOCK`] per thread, each block aligned
//! to [`BLOCK`]. Id `i` has one home slot in a ring of [`RING`] slots: slot `i % BLOCK` of stripe
//! `(i / BLOCK) % STRIPES`, so one thread's block fills one stripe and threads seldom share a
//! cache line. An attempt whose home slot is still held, by an attempt issued [`RING`] or more
//! ids earlier and not yet reported, goes to a sharded map instead.
//!
//! A slot is a row of atomic words, claimed and released by its state word: `0` (empty),
//! [`BUSY`] (being written or read) or the id it holds. Recording an attempt claims an empty slot
//! with one compare-and-swap, writes the fields and publishes the id; taking it claims the id with
//! one compare-and-swap, reads the fields and empties the slot. That is one locked instruction
//! each, where a stripe lock took two (lock and unlock), and no thread ever waits on another.
//!
//! Invariants:
//! - An id is in at most one place (its home slot or the map), and a slot holds the id it was
//!   filled with, so a lookup compares ids and never takes another attempt's entry.
//! - A slot's fields change only while its state is [`BUSY`], claimed from `0` by the writer; a
//!   reader that claimed the id (Acquire) sees every field the writer published (Release).
//! - Only a writer or an outcome makes a slot busy; housekeeping reads and drops without claiming,
//!   so an outcome never finds its own attempt's slot busy and never misses it.
//! - `len` counts the attempts held in slots and in the map.

use crate::engine::{new_map, AccountKey, Map, Pending};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Ids per thread block, and slots per stripe.
pub(crate) const BLOCK: u64 = 256;
/// Stripes of the ring.
const STRIPES: u64 = 16;
/// Slots in the ring.
const RING: u64 = BLOCK * STRIPES;
/// The state of a slot being written or read. Ids 0 and `BUSY` never use a slot.
const BUSY: u64 = u64::MAX;

const V6: u64 = 1;
const FAMILIAR: u64 = 2;
const HAS_FP: u64 = 4;

/// One slot: a state word and the fields of a [`Pending`], each in an atomic word.
#[derive(Default)]
struct Slot {
    state: AtomicU64,
    account_hi: AtomicU64,
    account_lo: AtomicU64,
    tenant: AtomicU64,
    ip_hi: AtomicU64,
    ip_lo: AtomicU64,
    fp: AtomicU64,
    at: AtomicU64,
    flags: AtomicU64,
}

impl Slot {
    /// Writes `p`'s fields (the slot is claimed: its state is [`BUSY`]).
    fn write(&self, p: &Pending) {
        let r = Ordering::Relaxed;
        let acct = p.account.get();
        self.account_hi.store((acct >> 64) as u64, r);
        self.account_lo.store(acct as u64, r);
        self.tenant.store(p.tenant, r);
        let (ip, v6) = match p.ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 0),
            IpAddr::V6(a) => (u128::from(a), V6),
        };
        self.ip_hi.store((ip >> 64) as u64, r);
        self.ip_lo.store(ip as u64, r);
        self.fp.store(p.fp.unwrap_or(0), r);
        self.at.store(p.at as u64, r);
        let familiar = if p.familiar { FAMILIAR } else { 0 };
        let has_fp = if p.fp.is_some() { HAS_FP } else { 0 };
        self.flags.store(v6 | familiar | has_fp, r);
    }

    /// The attempt `id`, read without claiming the slot, if the slot held it throughout.
    fn peek(&self, id: u64) -> Option<Pending> {
        if self.state.load(Ordering::Acquire) != id {
            return None;
        }
        let p = self.read();
        // Ids are never reused and fields change only while a slot is busy: the same id before
        // and after means the fields read were its own.
        std::sync::atomic::fence(Ordering::Acquire);
        (self.state.load(Ordering::Relaxed) == id).then_some(p)
    }

    /// Reads the fields (the slot is claimed, or see [`Slot::peek`]).
    fn read(&self) -> Pending {
        let r = Ordering::Relaxed;
        let flags = self.flags.load(r);
        let ip = (u128::from(self.ip_hi.load(r)) << 64) | u128::from(self.ip_lo.load(r));
        Pending {
            account: AccountKey::new(
                (u128::from(self.account_hi.load(r)) << 64) | u128::from(self.account_lo.load(r)),
            ),
            tenant: self.tenant.load(r),
            ip: if flags & V6 != 0 {
                IpAddr::V6(Ipv6Addr::from(ip))
            } else {
                IpAddr::V4(Ipv4Addr::from(ip as u32))
            },
            familiar: flags & FAMILIAR != 0,
            fp: (flags & HAS_FP != 0).then(|| self.fp.load(r)),
            at: self.at.load(r) as i64,
        }
    }
}

/// The attempts in flight. See the module docs.
pub(crate) struct PendingTable {
    /// Each stripe's slots, allocated on first use and kept (18 KiB).
    stripes: Box<[OnceLock<Box<[Slot]>>]>,
    overflow: Map<u64, Pending>,
}

impl Default for PendingTable {
    fn default() -> Self {
        PendingTable {
            stripes: (0..STRIPES).map(|_| OnceLock::new()).collect(),
            overflow: new_map(),
        }
    }
}

/// Whether attempt `id` may sit in a slot: ids 0 and [`BUSY`] are slot states, and live in the map.
fn slotted(id: u64) -> bool {
    id != 0 && id != BUSY
}

/// The stripe and slot of id `id`.
fn home(id: u64) -> (usize, usize) {
    let r = id % RING;
    ((r / BLOCK) as usize, (r % BLOCK) as usize)
}

impl PendingTable {
    /// The home slot of `id`, if its stripe was ever used and `id` may sit in a slot.
    #[inline]
    fn slot(&self, id: u64) -> Option<&Slot> {
        if !slotted(id) {
            return None;
        }
        let (s, i) = home(id);
        self.stripes[s].get().map(|slots| &slots[i])
    }

    /// Records attempt `id` (not already held).
    pub(crate) fn insert(&self, id: u64, p: Pending) {
        if slotted(id) {
            let (s, i) = home(id);
            let slot =
                &self.stripes[s].get_or_init(|| (0..BLOCK).map(|_| Slot::default()).collect())[i];
            if slot
                .state
                .compare_exchange(0, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // Orders the claim before the field writes for readers that peek (a seqlock's
                // writer fence; free on x86).
                std::sync::atomic::fence(Ordering::Release);
                slot.write(&p);
                slot.state.store(id, Ordering::Release);
                return;
            }
        }
        self.overflow.insert(id, p);
    }

    /// Takes attempt `id` out, if held.
    pub(crate) fn remove(&self, id: u64) -> Option<Pending> {
        if let Some(slot) = self.slot(id) {
            // Looked at first: an id that is not home takes no locked instruction.
            if slot.state.load(Ordering::Relaxed) == id
                && slot
                    .state
                    .compare_exchange(id, BUSY, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                let p = slot.read();
                slot.state.store(0, Ordering::Release);
                return Some(p);
            }
        }
        self.overflow.remove(&id).map(|(_, p)| p)
    }

    /// The tenant id of attempt `id`, if held.
    pub(crate) fn tenant_of(&self, id: u64) -> Option<u64> {
        if let Some(p) = self.slot(id).and_then(|s| s.peek(id)) {
            return Some(p.tenant);
        }
        self.overflow.get(&id).map(|p| p.tenant)
    }

    /// Every slot of the stripes used so far.
    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.stripes
            .iter()
            .filter_map(OnceLock::get)
            .flat_map(|slots| slots.iter())
    }

    /// Attempts held (reads every slot's state, and locks every map shard in turn).
    pub(crate) fn len(&self) -> usize {
        let in_slots = self
            .slots()
            .filter(|s| s.state.load(Ordering::Relaxed) != 0)
            .count();
        in_slots + self.overflow.len()
    }

    /// Keeps the attempts for which `keep` says so and drops the others, handing each one it
    /// dropped to `dropped` (not one an outcome took meanwhile).
    pub(crate) fn retain(
        &self,
        mut keep: impl FnMut(&Pending) -> bool,
        mut dropped: impl FnMut(&Pending),
    ) {
        for slot in self.slots() {
            let id = slot.state.load(Ordering::Relaxed);
            if !slotted(id) {
                continue;
            }
            // Read without claiming the slot, so that an outcome for it never finds it busy;
            // dropped only if it is still the same attempt (an outcome may have taken it).
            if let Some(p) = slot.peek(id) {
                if !keep(&p)
                    && slot
                        .state
                        .compare_exchange(id, 0, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    dropped(&p);
                }
            }
        }
        self.overflow.retain(|_, p| {
            let k = keep(p);
            if !k {
                dropped(p);
            }
            k
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::AccountKey;
    use std::net::{IpAddr, Ipv4Addr};

    fn pending(at: i64) -> Pending {
        Pending {
            account: AccountKey::new(7),
            tenant: 3,
            ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            familiar: false,
            fp: None,
            at,
        }
    }

    #[test]
    fn an_attempt_is_taken_once_by_its_own_id() {
        let t = PendingTable::default();
        t.insert(5, pending(1));
        assert_eq!(t.len(), 1);
        assert_eq!(t.tenant_of(5), Some(3));
        // Another id with the same home slot finds nothing.
        assert!(t.remove(5 + RING).is_none());
        assert_eq!(t.remove(5).map(|p| p.at), Some(1));
        assert!(t.remove(5).is_none());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn an_id_whose_home_slot_is_held_goes_to_the_map_and_both_are_found() {
        let t = PendingTable::default();
        t.insert(9, pending(1));
        t.insert(9 + RING, pending(2));
        t.insert(9 + 2 * RING, pending(3));
        assert_eq!(t.len(), 3);
        assert_eq!(t.remove(9 + 2 * RING).map(|p| p.at), Some(3));
        assert_eq!(t.remove(9).map(|p| p.at), Some(1));
        // The home slot is free again; the map still holds the other one.
        t.insert(9 + 3 * RING, pending(4));
        assert_eq!(t.remove(9 + RING).map(|p| p.at), Some(2));
        assert_eq!(t.remove(9 + 3 * RING).map(|p| p.at), Some(4));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn retain_drops_from_slots_and_map_and_counts_what_is_left() {
        let t = PendingTable::default();
        for id in 0..3 * RING {
            t.insert(id, pending((id % 2) as i64));
        }
        // Ring slots for the first RING ids, the map for the rest.
        assert_eq!(t.len(), 3 * RING as usize);
        t.retain(|p| p.at == 1, |_| {});
        assert_eq!(t.len(), 3 * RING as usize / 2);
        assert!(t.remove(2).is_none());
        assert!(t.remove(RING + 2).is_none());
        assert_eq!(t.remove(2 * RING + 1).map(|p| p.at), Some(1));
        t.retain(|_| false, |_| {});
        assert_eq!(t.len(), 0);
        assert!(t.remove(1).is_none());
    }

    #[test]
    fn threads_record_and_take_each_others_attempts_exactly_once() {
        let t = std::sync::Arc::new(PendingTable::default());
        // Each thread records a range of blocks (some ids wrap onto held slots), then the other
        // thread takes them.
        let record = |base: u64| {
            let t = t.clone();
            std::thread::spawn(move || {
                for id in base..base + 3 * RING {
                    t.insert(id, pending(id as i64));
                }
            })
        };
        let (a, b) = (record(0), record(10 * RING));
        a.join().expect("thread a");
        b.join().expect("thread b");
        assert_eq!(t.len(), 6 * RING as usize);
        let take = |base: u64| {
            let t = t.clone();
            std::thread::spawn(move || {
                (base..base + 3 * RING)
                    .filter(|&id| t.remove(id).is_some_and(|p| p.at == id as i64))
                    .count()
            })
        };
        let (a, b) = (take(10 * RING), take(0));
        assert_eq!(a.join().expect("thread a"), 3 * RING as usize);
        assert_eq!(b.join().expect("thread b"), 3 * RING as usize);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn every_field_survives_the_slot_in_both_families_with_and_without_a_fingerprint() {
        let t = PendingTable::default();
        let v6 = Pending {
            account: AccountKey::new(u128::MAX - 5),
            tenant: u64::MAX - 1,
            ip: "2001:db8::7".parse().unwrap(),
            familiar: true,
            fp: None,
            at: -3,
        };
        let v4 = Pending {
            fp: Some(0),
            familiar: false,
            ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
            ..pending(i64::MAX)
        };
        t.insert(11, v6);
        t.insert(12, v4);
        for (id, want) in [(11, v6), (12, v4)] {
            assert_eq!(t.remove(id), Some(want));
        }
    }

    #[test]
    fn an_attempt_is_taken_by_its_outcome_or_dropped_by_housekeeping_never_both() {
        let t = std::sync::Arc::new(PendingTable::default());
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        const N: u64 = 20_000;
        let outcomes = {
            let (t, done) = (t.clone(), done.clone());
            std::thread::spawn(move || {
                let mut taken = 0u64;
                for id in 1..=N {
                    t.insert(id, pending(id as i64));
                    taken += u64::from(t.remove(id).is_some());
                }
                done.store(true, Ordering::Relaxed);
                taken
            })
        };
        let mut dropped = 0u64;
        while !done.load(Ordering::Relaxed) {
            t.retain(|_| false, |_| dropped += 1);
        }
        let taken = outcomes.join().expect("outcome thread");
        assert_eq!(taken + dropped, N, "taken {taken}, dropped {dropped}");
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn id_zero_is_never_mistaken_for_an_empty_slot() {
        let t = PendingTable::default();
        // Slot 0 of stripe 0 once held another attempt and is empty now.
        t.insert(RING, pending(1));
        assert_eq!(t.remove(RING).map(|p| p.at), Some(1));
        assert!(t.remove(0).is_none());
        assert_eq!(t.tenant_of(0), None);
        t.insert(0, pending(2));
        assert_eq!(t.tenant_of(0), Some(3));
        assert_eq!(t.remove(0).map(|p| p.at), Some(2));
        assert!(t.remove(0).is_none());
    }
}
