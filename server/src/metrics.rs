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
