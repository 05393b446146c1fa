//! Attempts in flight, by attempt id: what an outcome needs of the check that forwarded it.
//!
//! The engine issues ids from one counter, in blocks of [`BLOCK`] per thread, each block aligned
//! to [`BLOCK`]. Id `i` has one home slot in a ring of [`RING`] slots: slot `i % BLOCK` of stripe
//! `(i / BLOCK) % STRIPES`, so one thread's block fills one stripe and threads seldom share a
//! stripe's lock. An attempt whose home slot is still held, by an attempt issued [`RING`] or more
//! ids earlier and not yet reported, goes to a sharded map instead. Recording and taking an
//! attempt through its home slot costs a lock and an index, where the map costs a hash, a probe
//! and a table that grows and shrinks with the attempts in flight.
//!
//! Invariants:
//! - An id is in at most one place (its home slot or the map), and a slot holds the id it was
//!   filled with, so a lookup compares ids and never takes another attempt's entry.
//! - `len` counts the attempts held in slots and in the map.

use crate::engine::{new_map, Map, Pending};
use crate::pad::Padded;
use parking_lot::Mutex;

/// Ids per thread block, and slots per stripe.
pub(crate) const BLOCK: u64 = 256;
/// Stripes of the ring.
const STRIPES: u64 = 16;
/// Slots in the ring.
const RING: u64 = BLOCK * STRIPES;

/// One stripe: its slots (allocated on first use and kept: 20 KiB) and how many hold an attempt.
#[derive(Default)]
struct Stripe {
    slots: Vec<Option<(u64, Pending)>>,
    held: usize,
}

/// The attempts in flight. See the module docs.
pub(crate) struct PendingTable {
    /// Each on lines of its own: consecutive id blocks go to neighbouring stripes, so two threads
    /// each filling their own block would otherwise take one line from each other on every check
    /// and outcome.
    stripes: Box<[Padded<Mutex<Stripe>>]>,
    overflow: Map<u64, Pending>,
}

impl Default for PendingTable {
    fn default() -> Self {
        PendingTable {
            stripes: (0..STRIPES)
                .map(|_| Padded(Mutex::new(Stripe::default())))
                .collect(),
            overflow: new_map(),
        }
    }
}

/// The stripe and slot of id `id`.
fn home(id: u64) -> (usize, usize) {
    let r = id % RING;
    ((r / BLOCK) as usize, (r % BLOCK) as usize)
}

impl PendingTable {
    /// Records attempt `id` (not already held).
    pub(crate) fn insert(&self, id: u64, p: Pending) {
        let (s, i) = home(id);
        let mut stripe = self.stripes[s].lock();
        if stripe.slots.is_empty() {
            stripe.slots.resize_with(BLOCK as usize, || None);
        }
        if stripe.slots[i].is_none() {
            stripe.slots[i] = Some((id, p));
            stripe.held += 1;
            return;
        }
        drop(stripe);
        self.overflow.insert(id, p);
    }

    /// Takes attempt `id` out, if held.
    pub(crate) fn remove(&self, id: u64) -> Option<Pending> {
        let (s, i) = home(id);
        {
            let mut stripe = self.stripes[s].lock();
            let slot = stripe
                .slots
                .get_mut(i)
                .filter(|slot| slot.as_ref().is_some_and(|(held, _)| *held == id));
            if let Some((_, p)) = slot.and_then(Option::take) {
                stripe.held -= 1;
                return Some(p);
            }
        }
        self.overflow.remove(&id).map(|(_, p)| p)
    }

    /// The tenant id of attempt `id`, if held.
    pub(crate) fn tenant_of(&self, id: u64) -> Option<u64> {
        let (s, i) = home(id);
        {
            let stripe = self.stripes[s].lock();
            if let Some(Some((held, p))) = stripe.slots.get(i) {
                if *held == id {
                    return Some(p.tenant);
                }
            }
        }
        self.overflow.get(&id).map(|p| p.tenant)
    }

    /// Attempts held (locks every stripe and every map shard in turn).
    pub(crate) fn len(&self) -> usize {
        let in_slots: usize = self.stripes.iter().map(|s| s.lock().held).sum();
        in_slots + self.overflow.len()
    }

    /// Keeps the attempts for which `keep` says so; the others are dropped.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&Pending) -> bool) {
        for stripe in self.stripes.iter() {
            let mut stripe = stripe.lock();
            let mut dropped = 0;
            for slot in stripe.slots.iter_mut() {
                if slot.as_ref().is_some_and(|(_, p)| !keep(p)) {
                    *slot = None;
                    dropped += 1;
                }
            }
            stripe.held -= dropped;
        }
        self.overflow.retain(|_, p| keep(p));
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
        t.retain(|p| p.at == 1);
        assert_eq!(t.len(), 3 * RING as usize / 2);
        assert!(t.remove(2).is_none());
        assert!(t.remove(RING + 2).is_none());
        assert_eq!(t.remove(2 * RING + 1).map(|p| p.at), Some(1));
        t.retain(|_| false);
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
}
