//! Decisions over the last hour, by tenant and reason, for the dashboard's chart.
//!
//! A ring of [`SLOTS`] buckets of [`BUCKET_SECS`] seconds per tenant label; each bucket counts
//! decisions by [`SERIES`] (forward, then every refusal reason). A bucket is reset when the clock
//! reaches it again an hour later, so nothing older than an hour is ever reported.
//!
//! Memory is bounded: tenant labels are the service's bounded metric labels (the policy's tenants,
//! `default`, `other`), and at most [`MAX_TENANTS`] rings are kept; a label past that counts under
//! `other`. One ring is 360 × 10 × 4 bytes plus stamps, about 17 KiB.
//!
//! Counting takes a std `Mutex` around plain arrays: one uncontended lock per decision costs tens
//! of nanoseconds against the engine's microsecond, and keeps the reset of a reused bucket exact.

use portcullis_engine::Reason;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Seconds per bucket.
pub const BUCKET_SECS: i64 = 10;
/// Buckets kept: one hour.
pub const SLOTS: usize = 360;
/// Tenant rings kept at most; further labels count under `other`.
pub const MAX_TENANTS: usize = 64;
/// The series of the chart: `forward`, then every reason in [`Reason::ALL`] order.
pub const SERIES: [&str; 1 + Reason::ALL.len()] = [
    "forward",
    "account_locked",
    "directory_budget",
    "directory_locked",
    "known_bad_password",
    "sprayed_password",
    "source_blocked",
    "rate_limited",
    "blocked_network",
    "overloaded",
    "store_unavailable",
];

/// The series index of a decision's reason (`None` is a forward).
pub fn series_index(reason: Option<Reason>) -> usize {
    match reason {
        None => 0,
        Some(r) => 1 + Reason::ALL.iter().position(|x| *x == r).unwrap_or(0),
    }
}

struct Ring {
    /// The absolute bucket number each slot currently holds.
    stamps: Box<[i64; SLOTS]>,
    counts: Box<[[u32; SERIES.len()]; SLOTS]>,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            stamps: Box::new([i64::MIN; SLOTS]),
            counts: Box::new([[0; SERIES.len()]; SLOTS]),
        }
    }

    fn add(&mut self, bucket: i64, series: usize) {
        let slot = bucket.rem_euclid(SLOTS as i64) as usize;
        if self.stamps[slot] != bucket {
            self.stamps[slot] = bucket;
            self.counts[slot] = [0; SERIES.len()];
        }
        self.counts[slot][series] = self.counts[slot][series].saturating_add(1);
    }

    fn read(&self, bucket: i64) -> Option<&[u32; SERIES.len()]> {
        let slot = bucket.rem_euclid(SLOTS as i64) as usize;
        (self.stamps[slot] == bucket).then(|| &self.counts[slot])
    }
}

/// The decision counts of the last hour. See the module docs.
pub struct Activity {
    rings: Mutex<BTreeMap<String, Ring>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            rings: Mutex::new(BTreeMap::new()),
        }
    }
}

/// The last hour of decisions, oldest bucket first, as the dashboard draws it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Series {
    /// Seconds per bucket.
    pub bucket_secs: i64,
    /// Start of the first bucket, ms since the epoch.
    pub start_ms: i64,
    /// The series names, in the order of each bucket's counts.
    pub series: Vec<&'static str>,
    /// Per bucket, the count of each series.
    pub buckets: Vec<Vec<u32>>,
    /// Decisions in the hour.
    pub total: u64,
    /// Tenant labels with a ring (for the tenant selector).
    pub tenants: Vec<String>,
}

impl Activity {
    /// Counts one decision of `tenant` (a bounded label) in series `series` at `now_ms`.
    pub fn record(&self, tenant: &str, series: usize, now_ms: i64) {
        let bucket = now_ms.div_euclid(BUCKET_SECS * 1000);
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = rings.get_mut(tenant) {
            r.add(bucket, series);
            return;
        }
        let label = if rings.len() < MAX_TENANTS {
            tenant
        } else {
            "other"
        };
        rings
            .entry(label.to_string())
            .or_insert_with(Ring::new)
            .add(bucket, series);
    }

    /// The hour ending at `now_ms`, for one tenant label or, with `None`, all of them summed.
    pub fn last_hour(&self, tenant: Option<&str>, now_ms: i64) -> Series {
        let last = now_ms.div_euclid(BUCKET_SECS * 1000);
        let first = last - SLOTS as i64 + 1;
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let mut buckets = vec![vec![0u32; SERIES.len()]; SLOTS];
        for (name, ring) in rings.iter() {
            if tenant.is_some_and(|t| t != name) {
                continue;
            }
            for (i, b) in (first..=last).enumerate() {
                if let Some(c) = ring.read(b) {
                    for (acc, n) in buckets[i].iter_mut().zip(c) {
                        *acc = acc.saturating_add(*n);
                    }
                }
            }
        }
        let total = buckets.iter().flatten().map(|n| u64::from(*n)).sum();
        Series {
            bucket_secs: BUCKET_SECS,
            start_ms: first * BUCKET_SECS * 1000,
            series: SERIES.to_vec(),
            buckets,
            total,
            tenants: rings.keys().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn counts_by_reason_and_forgets_after_an_hour() {
        let a = Activity::default();
        a.record("acme", series_index(None), T0);
        a.record("acme", series_index(Some(Reason::AccountLocked)), T0 + 1);
        a.record(
            "beta",
            series_index(Some(Reason::AccountLocked)),
            T0 + 12_000,
        );
        let all = a.last_hour(None, T0 + 15_000);
        assert_eq!(all.total, 3);
        assert_eq!(all.buckets.len(), SLOTS);
        let last = &all.buckets[SLOTS - 1];
        let prev = &all.buckets[SLOTS - 2];
        assert_eq!((prev[0], prev[1], last[1]), (1, 1, 1), "at {}", T0 + 15_000);
        assert_eq!(a.last_hour(Some("acme"), T0 + 15_000).total, 2);
        assert_eq!(a.last_hour(Some("nobody"), T0 + 15_000).total, 0);
        assert_eq!(all.tenants, ["acme", "beta"]);
        // An hour later the old buckets are out of the window, and a reused slot starts at zero.
        let later = T0 + 3_610_000; // beta's bucket again, an hour on
        assert_eq!(a.last_hour(None, later + 10_000).total, 0);
        a.record("beta", 0, later);
        let s = a.last_hour(Some("beta"), later);
        assert_eq!(s.total, 1, "the reused slot was reset, at {later}");
        assert_eq!(s.buckets[SLOTS - 1][0], 1);
    }

    #[test]
    fn keeps_a_bounded_number_of_tenant_rings() {
        let a = Activity::default();
        for i in 0..(MAX_TENANTS + 10) {
            a.record(&format!("t{i}"), 0, T0);
        }
        let s = a.last_hour(None, T0);
        assert_eq!(s.tenants.len(), MAX_TENANTS + 1, "the cap plus `other`");
        assert_eq!(s.total, (MAX_TENANTS + 10) as u64);
    }
}
