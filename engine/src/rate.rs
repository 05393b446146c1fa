//! Per-address rate limits: the generic cell rate algorithm (GCRA) as governor implements it, on
//! each address's theoretical arrival time (TAT), in the injected time.
//!
//! Governor's keyed limiter did this before, fed the injected time through a thread-local clock;
//! then a map of TATs of its own. Now a TAT is a field of the address's source entry
//! ([`crate::state::SourceState`]), which a check reads anyway: the limit costs no map lookup of
//! its own (one thread +4 to +10% in paired runs). Governor stays as a dev-dependency: a proptest
//! drives both with the same arrivals and requires the same answers.
//!
//! Invariants:
//! - A bucket's state is its TAT in nanoseconds since time 0, and 0 means "never seen", as in
//!   governor's store (a `NonZeroU64`).
//! - A bucket whose TAT is not after now answers every later arrival as a new bucket does, so
//!   forgetting it ([`is_live`] false) changes no answer.
//! - A check changes its bucket under its entry's write lock, so concurrent checks of one address
//!   are each counted once.

use std::time::Duration;

/// One tenant's per-address limit: `rate` arrivals per second, bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// The emission interval: nanoseconds per arrival.
    t: u64,
    /// The burst tolerance: how far a TAT may run ahead of now, `t * (burst - 1)`.
    tau: u64,
}

/// Nanoseconds since time 0 of the injected time `now_ms` (time before 0 counts as 0).
fn nanos(now_ms: i64) -> u64 {
    (now_ms.max(0) as u64).saturating_mul(1_000_000)
}

/// Whether the bucket `tat` still holds anything at `now_ms`: one that does not is as good as
/// new, and may be forgotten.
pub(crate) fn is_live(tat: u64, now_ms: i64) -> bool {
    tat > nanos(now_ms)
}

impl Gcra {
    /// A limit of `rate_per_second` arrivals per second with bursts of `burst` (each at least 1),
    /// as governor's `Quota::per_second(rate).allow_burst(burst)`.
    pub(crate) fn new(rate_per_second: u32, burst: u32) -> Gcra {
        let t = (1_000_000_000 / u64::from(rate_per_second.max(1))).max(1);
        Gcra {
            t,
            tau: t.saturating_mul(u64::from(burst.max(1) - 1)),
        }
    }

    /// Counts an arrival at `now_ms` in the bucket `tat`: `None` when it conforms, or how long
    /// until one would, when it does not (and is not counted).
    #[inline]
    pub(crate) fn check(&self, tat: &mut u64, now_ms: i64) -> Option<Duration> {
        let t0 = nanos(now_ms);
        let at = if *tat == 0 { t0 } else { *tat };
        let earliest = at.saturating_sub(self.tau);
        if t0 < earliest {
            return Some(Duration::from_nanos(earliest - t0));
        }
        *tat = at.max(t0).saturating_add(self.t);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::Clock;
    use governor::{Quota, RateLimiter};
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::num::NonZeroU32;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    /// A clock for governor that reads a shared cell of milliseconds.
    #[derive(Clone, Default)]
    struct Manual(Arc<AtomicI64>);

    impl Clock for Manual {
        type Instant = Duration;
        fn now(&self) -> Duration {
            Duration::from_millis(self.0.load(Ordering::Relaxed).max(0) as u64)
        }
    }

    fn ip(k: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, k])
    }

    #[test]
    fn a_burst_is_let_through_then_one_arrival_per_interval() {
        let r = Gcra::new(2, 3);
        let (mut one, mut two) = (0, 0);
        for _ in 0..3 {
            assert_eq!(r.check(&mut one, 10_000), None);
        }
        assert_eq!(
            r.check(&mut one, 10_000),
            Some(Duration::from_millis(500)),
            "the burst of 3 is spent; one more arrival conforms 500 ms later"
        );
        assert_eq!(
            r.check(&mut two, 10_000),
            None,
            "another address has its own bucket"
        );
        assert_eq!(r.check(&mut one, 10_499), Some(Duration::from_millis(1)));
        assert_eq!(r.check(&mut one, 10_500), None);
        assert!(
            r.check(&mut one, 10_500).is_some(),
            "refused arrivals are not counted"
        );
    }

    #[test]
    fn a_bucket_is_live_until_its_tat_and_as_good_as_new_after() {
        let r = Gcra::new(1, 2);
        let mut tat = 0;
        assert!(!is_live(tat, 0), "never seen");
        r.check(&mut tat, 1_000);
        r.check(&mut tat, 1_000);
        // Two arrivals at 1 s at one per second: the TAT is 3 s.
        assert!(is_live(tat, 2_999));
        assert!(!is_live(tat, 3_000));
        let mut new = 0;
        for now in [3_000, 3_000, 3_000] {
            assert_eq!(r.check(&mut tat, now), r.check(&mut new, now));
        }
    }

    proptest! {
        /// The same arrivals (address, milliseconds forward) through these buckets and through
        /// governor's keyed limiter: the same verdicts and the same waits, whatever buckets
        /// [`is_live`] lets this side forget when governor sweeps its own.
        #[test]
        fn gives_governors_answers(
            rate in 1u32..2_000,
            burst in 1u32..50,
            start in 0i64..4_000_000_000_000,
            steps in proptest::collection::vec((0u8..4, 0i64..3_000, any::<bool>()), 1..200),
        ) {
            let ours = Gcra::new(rate, burst);
            let mut tats: HashMap<u8, u64> = HashMap::new();
            let clock = Manual::default();
            let quota = Quota::per_second(NonZeroU32::new(rate).unwrap())
                .allow_burst(NonZeroU32::new(burst).unwrap());
            let theirs = RateLimiter::dashmap_with_clock(quota, clock.clone());
            let mut now = start;
            for (k, dt, sweep) in steps {
                now += dt;
                clock.0.store(now, Ordering::Relaxed);
                let theirs_wait = theirs
                    .check_key(&ip(k))
                    .err()
                    .map(|n| n.wait_time_from(clock.now()));
                prop_assert_eq!(ours.check(tats.entry(k).or_default(), now), theirs_wait);
                if sweep {
                    tats.retain(|_, tat| is_live(*tat, now));
                    theirs.retain_recent();
                    // Never more than governor keeps: a bucket it forgot is as good as new.
                    prop_assert!(tats.len() <= theirs.len());
                }
            }
        }
    }
}
