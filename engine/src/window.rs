//! Sliding-window counters, bounded in size whatever the traffic.
//!
//! [`SlidingCount`] splits a window into [`SLOTS`] equal slots and keeps one count per slot. An event
//! at time `t` falls in slot `floor(t / slot_ms)`; a query at `now` counts the events whose slot is
//! one of the last `SLOTS` slots up to and including `now`'s. So the window is exact at slot
//! granularity and errs on the side of counting (it may remember an event up to one slot longer
//! than the window), which is the safe side for a security counter. Counts saturate at `u32::MAX`.
//!
//! [`RecentSet`] counts distinct members (32-bit hashes) seen within a window, holding at most `cap`
//! members: enough to tell whether a threshold below `cap` was crossed.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// Slots per window.
pub const SLOTS: usize = 8;

/// The slot width for a window of `window_ms` milliseconds (at least 1 ms).
pub fn slot_ms(window_ms: i64) -> i64 {
    (window_ms / SLOTS as i64).max(1)
}

/// A count of events within a sliding window. See the module docs for the exact semantics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlidingCount {
    /// Index of the newest slot written.
    head: i64,
    counts: [u32; SLOTS],
}

impl SlidingCount {
    /// Nothing counted.
    pub const EMPTY: SlidingCount = SlidingCount {
        head: 0,
        counts: [0; SLOTS],
    };

    /// Adds `n` events at `now_ms` to a window of `window_ms`.
    pub fn add(&mut self, now_ms: i64, window_ms: i64, n: u32) {
        let slot = now_ms.div_euclid(slot_ms(window_ms));
        if self.is_empty() {
            self.head = slot;
        }
        if slot > self.head {
            let shift = slot - self.head;
            if shift >= SLOTS as i64 {
                self.counts = [0; SLOTS];
            } else {
                for s in self.head + 1..=slot {
                    self.counts[ring(s)] = 0;
                }
            }
            self.head = slot;
        } else if slot <= self.head - SLOTS as i64 {
            // Older than anything the ring still holds: it would never be counted again.
            return;
        }
        let c = &mut self.counts[ring(slot)];
        *c = c.saturating_add(n);
    }

    /// Events within the window ending at `now_ms`.
    pub fn count(&self, now_ms: i64, window_ms: i64) -> u32 {
        let slot = now_ms.div_euclid(slot_ms(window_ms));
        // The ring holds slots head-7..=head; the window is slot-7..=slot.
        let behind = slot.saturating_sub(self.head);
        if behind >= SLOTS as i64 {
            // Everything held is older than the window (or nothing is held).
            return 0;
        }
        let total: u64 = if behind == 0 {
            // The window is exactly the ring: the common case of a counter in use.
            self.counts.iter().map(|&c| u64::from(c)).sum()
        } else {
            (0..SLOTS as i64)
                .map(|i| self.head - i)
                .filter(|&s| s <= slot && s > slot - SLOTS as i64)
                .map(|s| u64::from(self.counts[ring(s)]))
                .sum()
        };
        // A u64 sum of eight u32s cannot overflow; clamping it equals adding with saturation.
        total.min(u64::from(u32::MAX)) as u32
    }

    /// Whether nothing was ever counted (or everything was reset).
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0)
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.counts = [0; SLOTS];
    }

    /// Whether every counted event has left the window at `now_ms`.
    pub fn is_idle(&self, now_ms: i64, window_ms: i64) -> bool {
        self.count(now_ms, window_ms) == 0
    }
}

fn ring(slot: i64) -> usize {
    slot.rem_euclid(SLOTS as i64) as usize
}

/// Distinct members seen within a window, keeping at most `cap` of them.
///
/// When full, a new member replaces the one seen longest ago, so the count is exact up to `cap`
/// and never exceeds it: use a `cap` above any threshold it is compared with.
///
/// One member is held inline (most sources and wrong passwords meet one account), so such a set
/// allocates nothing; it is no larger than a `Vec` and serialises as one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentSet {
    members: SmallVec<[(u32, i64); 1]>,
}

impl RecentSet {
    /// Records `member` at `now_ms`.
    pub fn insert(&mut self, member: u32, now_ms: i64, cap: usize) {
        if let Some(m) = self.members.iter_mut().find(|m| m.0 == member) {
            m.1 = m.1.max(now_ms);
            return;
        }
        if self.members.len() < cap.max(1) {
            if self.members.len() == 1 && !self.members.spilled() {
                // Leaving the inline slot: go straight to the 4 a `Vec` starts with.
                self.members.reserve_exact(cap.clamp(2, 4) - 1);
            }
            self.members.push((member, now_ms));
        } else if let Some(oldest) = self.members.iter_mut().min_by_key(|m| m.1) {
            *oldest = (member, now_ms);
        }
    }

    /// Distinct members seen in `(now_ms - window_ms, now_ms]`.
    pub fn count(&self, now_ms: i64, window_ms: i64) -> usize {
        self.members
            .iter()
            .filter(|m| m.1 > now_ms - window_ms && m.1 <= now_ms)
            .count()
    }

    /// Whether `member` was seen within the window.
    pub fn contains(&self, member: u32, now_ms: i64, window_ms: i64) -> bool {
        self.members
            .iter()
            .any(|m| m.0 == member && m.1 > now_ms - window_ms)
    }

    /// Drops members that left the window.
    pub fn prune(&mut self, now_ms: i64, window_ms: i64) {
        self.members.retain(|m| m.1 > now_ms - window_ms);
    }

    /// Members held, in the window or not: never below [`RecentSet::count`]. Read without
    /// touching the members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.members.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: i64 = 60_000;

    #[test]
    fn counts_events_inside_the_window_only() {
        let w = 8 * MIN;
        let mut c = SlidingCount::default();
        c.add(0, w, 1);
        c.add(MIN, w, 2);
        assert_eq!(c.count(MIN, w), 3);
        assert_eq!(c.count(8 * MIN - 1, w), 3);
        assert_eq!(c.count(8 * MIN, w), 2, "the first event's slot has left");
        assert_eq!(c.count(9 * MIN, w), 0);
        assert!(c.is_idle(9 * MIN, w));
    }

    #[test]
    fn forgets_everything_after_a_long_gap() {
        let w = 8 * MIN;
        let mut c = SlidingCount::default();
        c.add(0, w, 5);
        c.add(100 * MIN, w, 1);
        assert_eq!(c.count(100 * MIN, w), 1);
    }

    #[test]
    fn recent_set_counts_distinct_members_and_caps() {
        let mut s = RecentSet::default();
        for m in [1, 2, 2, 3, 1] {
            s.insert(m, 10, 10);
        }
        assert_eq!(s.count(10, 100), 3);
        for m in 10..30 {
            s.insert(m, 20 + m as i64, 5);
        }
        assert_eq!(s.count(60, 100), 5, "capped at 5");
        assert_eq!(s.count(200, 100), 0, "all left the window");
    }

    /// The naive model: every event's timestamp in a `Vec`, counted by the same slot rule.
    #[test]
    fn a_recent_set_serialises_as_the_vec_of_pairs_stores_hold() {
        let mut s = RecentSet::default();
        for (m, t) in [(7, 10), (9, 20), (11, 30)] {
            s.insert(m, t, 10);
            let pairs: Vec<(u32, i64)> = s.members.iter().copied().collect();
            let bytes = bincode::serialize(&s).unwrap();
            assert_eq!(bytes, bincode::serialize(&pairs).unwrap());
            assert_eq!(bincode::deserialize::<RecentSet>(&bytes).unwrap(), s);
        }
        assert_eq!(
            std::mem::size_of::<RecentSet>(),
            std::mem::size_of::<Vec<(u32, i64)>>()
        );
    }

    fn model_count(events: &[(i64, u32)], now: i64, w: i64) -> u32 {
        let sm = slot_ms(w);
        let q = now.div_euclid(sm);
        events
            .iter()
            .filter(|(t, _)| {
                let s = t.div_euclid(sm);
                s <= q && s > q - SLOTS as i64
            })
            .map(|(_, n)| *n)
            .sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn sliding_count_agrees_with_a_vec_of_timestamps(
            window in 1i64..100_000,
            ops in proptest::collection::vec((0i64..30_000, 1u32..4, any::<bool>(), -5_000i64..0), 1..200),
        ) {
            let mut c = SlidingCount::default();
            let mut events: Vec<(i64, u32)> = Vec::new();
            let mut now = 0i64;
            for (dt, n, late, jitter) in ops {
                now += dt;
                // Sometimes an event arrives a little late (out of order), as outcomes do.
                let t = if late { (now + jitter).max(0) } else { now };
                events.push((t, n));
                c.add(t, window, n);
                prop_assert_eq!(c.count(now, window), model_count(&events, now, window), "at now={}", now);
            }
        }

        #[test]
        fn a_count_at_any_time_sums_the_held_slots_inside_that_window(
            window in 1i64..100_000,
            ops in proptest::collection::vec((0i64..30_000, 1u32..4, -5_000i64..=0), 1..60),
            queries in proptest::collection::vec(-200_000i64..200_000, 1..20),
        ) {
            let mut c = SlidingCount::default();
            let mut events: Vec<(i64, u32)> = Vec::new();
            let mut now = 0i64;
            for (dt, n, jitter) in ops {
                now += dt;
                let t = (now + jitter).max(0);
                events.push((t, n));
                c.add(t, window, n);
            }
            // Earlier and later than the newest slot: the ring holds head-7..=head only, so the
            // model counts the events of held slots that fall in the queried window.
            let sm = slot_ms(window);
            let held = |s: i64| s <= c.head && s > c.head - SLOTS as i64;
            for q in queries {
                let at = now + q;
                let qs = at.div_euclid(sm);
                let want: u32 = events
                    .iter()
                    .map(|&(t, n)| (t.div_euclid(sm), n))
                    .filter(|&(s, _)| held(s) && s <= qs && s > qs - SLOTS as i64)
                    .map(|(_, n)| n)
                    .sum();
                prop_assert_eq!(c.count(at, window), want, "at {}", at);
            }
        }

        #[test]
        fn recent_set_matches_a_naive_distinct_count_below_its_cap(
            window in 1i64..10_000,
            ops in proptest::collection::vec((0i64..2_000, 0u32..12), 1..100),
        ) {
            let cap = 16;
            let mut s = RecentSet::default();
            let mut seen: Vec<(u32, i64)> = Vec::new();
            let mut now = 0;
            for (dt, m) in ops {
                now += dt;
                s.insert(m, now, cap);
                seen.push((m, now));
                let mut distinct: Vec<u32> = seen.iter().filter(|e| e.1 > now - window).map(|e| e.0).collect();
                distinct.sort_unstable();
                distinct.dedup();
                prop_assert_eq!(s.count(now, window), distinct.len());
                // The rules answer "fewer than n" from `len` without reading the members.
                prop_assert!(s.len() >= s.count(now, window));
            }
        }
    }
}
