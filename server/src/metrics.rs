//! Prometheus metrics: the recorder, the names, and what each label may hold.
//!
//! Every label comes from a bounded set: tenant names from the policy (others are `other`),
//! decisions, reasons and results from the engine's fixed enums, agents by their index in the
//! configuration. Never a user, an address or a fingerprint.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Decisions: labels `tenant`, `decision`, `reason` (`none` for forward).
pub const DECISIONS: &str = "portcullis_decisions_total";
/// Outcomes reported (or recorded from agents): label `result`.
pub const OUTCOMES: &str = "portcullis_outcomes_total";
/// Smart lockouts started: label `tenant`.
pub const LOCKOUTS_STARTED: &str = "portcullis_lockouts_started_total";
/// Lockouts in force (gauge).
pub const ACTIVE_LOCKOUTS: &str = "portcullis_active_lockouts";
/// Source blocks in force (gauge).
pub const BLOCKED_SOURCES: &str = "portcullis_blocked_sources";
/// Fingerprints currently marked sprayed (gauge).
pub const SPRAYED: &str = "portcullis_sprayed_fingerprints";
/// Fingerprints newly marked sprayed: label `tenant`.
pub const SPRAYS_DETECTED: &str = "portcullis_sprays_detected_total";
/// Attempts refused to protect the directory's lockout counter: label `tenant`.
pub const BUDGET_REFUSALS: &str = "portcullis_directory_budget_refusals_total";
/// Agent answers: labels `agent` (index), `result`.
pub const AGENT_ANSWERS: &str = "portcullis_agent_answers_total";
/// Agent round-trip time, seconds (histogram): label `agent`.
pub const AGENT_LATENCY: &str = "portcullis_agent_latency_seconds";
/// An agent's circuit breaker (gauge): 0 closed, 1 half-open, 2 open; label `agent`.
pub const AGENT_BREAKER: &str = "portcullis_agent_breaker_state";
/// Agents currently healthy (gauge).
pub const AGENTS_HEALTHY: &str = "portcullis_agents_healthy";
/// Time to decide, seconds (histogram): label `api` (`check`, `validate`).
pub const CHECK_LATENCY: &str = "portcullis_check_duration_seconds";
/// Tracked keys (gauge): label `kind` (`accounts`, `sources`, `sprays`, `pending`).
pub const TRACKED: &str = "portcullis_tracked_keys";
/// Policy reloads: labels `policy` (`enforced`, `shadow`), `result` (`ok`, `refused`).
pub const RELOADS: &str = "portcullis_policy_reloads_total";
/// Shadow disagreements: labels `kind` (`would_block`, `would_forward`, `other_reason`) and
/// `reason` (the shadow's reason, `none` for forward).
pub const SHADOW_DISAGREEMENTS: &str = "portcullis_shadow_disagreements_total";
/// Requests refused as malformed: label `api`.
pub const BAD_REQUESTS: &str = "portcullis_bad_requests_total";
/// Admin actions: label `action`.
pub const ADMIN_ACTIONS: &str = "portcullis_admin_actions_total";

/// Whether the shared store (Redis) answers (gauge, 1 or 0); absent with the embedded store.
pub const STORE_UP: &str = "portcullis_store_up";
/// Shared-store operations that failed (unreachable, deadline, contention): label `op`.
pub const STORE_ERRORS: &str = "portcullis_store_errors_total";
/// Decisions taken by the policy's `fail_mode` while the shared store was unavailable: label
/// `fail_mode` (`closed`, `open`).
pub const STORE_FAIL_MODE: &str = "portcullis_store_fail_mode_decisions_total";
/// Compare-and-swap conflicts on the shared store since start (another instance wrote first).
pub const STORE_CONFLICTS: &str = "portcullis_store_cas_conflicts_total";
/// Checks answered from the local source-block cache since start.
pub const STORE_CACHE_HITS: &str = "portcullis_store_cache_hits_total";

/// Whether changes reach the embedded store (gauge, 1 or 0): 0 while writes fail.
pub const STORE_PERSIST_OK: &str = "portcullis_store_persist_ok";
/// Write-behind flushes to the embedded store that failed.
pub const STORE_WRITE_ERRORS: &str = "portcullis_store_write_errors_total";

/// Decision requests shed over `max_in_flight`: labels `api`, `fail` (`forward`, `refuse`,
/// `none` for outcomes).
pub const SHED: &str = "portcullis_shed_total";
/// Decisions taken by the tenant's fail policy: labels `cause` (`store_unavailable`,
/// `overloaded` for an engine failure), `fail_mode` (`closed`, `open`).
pub const FAIL_MODE_DECISIONS: &str = "portcullis_fail_mode_decisions_total";

const LATENCY_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (later calls share it).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is installed (a test harness): keep ours unused then.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(DECISIONS, "Decisions by tenant, decision and reason.");
    describe_counter!(OUTCOMES, "Outcomes recorded, by result.");
    describe_counter!(LOCKOUTS_STARTED, "Smart lockouts started.");
    describe_gauge!(ACTIVE_LOCKOUTS, "Account lockouts in force.");
    describe_gauge!(BLOCKED_SOURCES, "Source blocks in force.");
    describe_gauge!(SPRAYED, "Fingerprints currently marked sprayed.");
    describe_counter!(SPRAYS_DETECTED, "Fingerprints newly marked sprayed.");
    describe_counter!(
        BUDGET_REFUSALS,
        "Attempts refused to keep the directory's counter below its lockout threshold."
    );
    describe_counter!(AGENT_ANSWERS, "Agent answers by agent and result.");
    describe_histogram!(AGENT_LATENCY, Unit::Seconds, "Agent round-trip time.");
    describe_gauge!(AGENTS_HEALTHY, "Agents currently healthy.");
    describe_gauge!(
        AGENT_BREAKER,
        "An agent's circuit breaker: 0 closed, 1 half-open, 2 open."
    );
    describe_histogram!(
        CHECK_LATENCY,
        Unit::Seconds,
        "Time to decide on one attempt."
    );
    describe_gauge!(TRACKED, "Tracked keys by kind.");
    describe_counter!(RELOADS, "Policy reloads by policy and result.");
    describe_counter!(
        SHADOW_DISAGREEMENTS,
        "Decisions where the shadow policy disagreed with the enforced one."
    );
    describe_counter!(BAD_REQUESTS, "Requests refused as malformed.");
    describe_counter!(ADMIN_ACTIONS, "Admin API actions.");
    describe_gauge!(
        STORE_UP,
        "Whether the shared store (Redis) answers: 1 or 0."
    );
    describe_gauge!(
        STORE_PERSIST_OK,
        "Whether changes reach the embedded store: 1, or 0 while writes fail."
    );
    describe_counter!(
        STORE_WRITE_ERRORS,
        "Write-behind flushes to the embedded store that failed."
    );
    describe_counter!(
        SHED,
        "Decision requests refused at once over max_in_flight, by api and fail hint."
    );
    describe_counter!(
        FAIL_MODE_DECISIONS,
        "Decisions taken by the tenant's fail policy, by cause and fail mode."
    );
    describe_counter!(STORE_ERRORS, "Shared-store operations that failed, by op.");
    describe_counter!(
        STORE_FAIL_MODE,
        "Decisions taken by the fail mode while the shared store was unavailable."
    );
    describe_counter!(
        STORE_CONFLICTS,
        "Compare-and-swap conflicts on the shared store."
    );
    describe_counter!(
        STORE_CACHE_HITS,
        "Checks answered from the local source-block cache."
    );
}

/// A small fixed-size latency histogram kept in process for the dashboard (Prometheus keeps its
/// own): 24 buckets whose upper bounds double from 50 µs (50 µs, 100 µs, ... ~7 min), plus one
/// for anything longer. Lock-free and 200 bytes whatever the traffic; a quantile is reported as
/// the upper bound of the bucket it falls in, so it is exact to within a factor of two.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [std::sync::atomic::AtomicU64; LatencyHistogram::BUCKETS + 1],
}

impl LatencyHistogram {
    /// Buckets with a finite upper bound.
    pub const BUCKETS: usize = 24;
    /// The upper bound of the first bucket, microseconds.
    const FIRST_US: u64 = 50;

    /// Counts one observation.
    pub fn record(&self, d: std::time::Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut i = 0;
        let mut bound = Self::FIRST_US;
        while i < Self::BUCKETS && us > bound {
            i += 1;
            bound *= 2;
        }
        self.buckets[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many observations were counted.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .map(|b| b.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// The `q` quantile (0 to 1) in milliseconds, as the upper bound of its bucket; `None` with no
    /// observation. Past the last bound it reports the last bound.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let i = i.min(Self::BUCKETS - 1) as u32;
                return Some((Self::FIRST_US << i) as f64 / 1000.0);
            }
        }
        Some((Self::FIRST_US << (Self::BUCKETS - 1)) as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grafana_dashboard_queries_only_metrics_we_export() {
        let known = [
            DECISIONS,
            OUTCOMES,
            LOCKOUTS_STARTED,
            ACTIVE_LOCKOUTS,
            BLOCKED_SOURCES,
            SPRAYED,
            SPRAYS_DETECTED,
            BUDGET_REFUSALS,
            AGENT_ANSWERS,
            AGENT_LATENCY,
            AGENTS_HEALTHY,
            CHECK_LATENCY,
            TRACKED,
            RELOADS,
            SHADOW_DISAGREEMENTS,
            BAD_REQUESTS,
            ADMIN_ACTIONS,
        ];
        let text = include_str!("../../deploy/grafana/portcullis.json");
        let v: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
        let panels = v["panels"].as_array().expect("panels");
        let mut used = std::collections::BTreeSet::new();
        for p in panels {
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                let mut rest = expr;
                while let Some(i) = rest.find("portcullis_") {
                    let name: String = rest[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    rest = &rest[i + name.len()..];
                    let base = name.strip_suffix("_bucket").unwrap_or(&name).to_string();
                    assert!(known.contains(&base.as_str()), "{name} in {expr}");
                    used.insert(base);
                }
            }
        }
        for m in [
            DECISIONS,
            LOCKOUTS_STARTED,
            SPRAYS_DETECTED,
            BUDGET_REFUSALS,
            AGENT_LATENCY,
            CHECK_LATENCY,
            TRACKED,
            RELOADS,
            SHADOW_DISAGREEMENTS,
        ] {
            assert!(used.contains(m), "no panel shows {m}");
        }
    }

    #[test]
    fn histogram_quantiles_are_bucket_upper_bounds() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for _ in 0..98 {
            h.record(Duration::from_micros(40)); // first bucket, <= 50 µs
        }
        h.record(Duration::from_millis(3)); // <= 3.2 ms
        h.record(Duration::from_secs(3600)); // past the last bound
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_ms(0.5), Some(0.05));
        assert_eq!(h.quantile_ms(0.99), Some(3.2));
        assert_eq!(h.quantile_ms(1.0), Some((50u64 << 23) as f64 / 1000.0));
    }
}
