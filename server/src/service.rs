//! The state every front end shares, and the decision operations behind both the HTTP and the
//! gRPC API: check, outcome, validate.
//!
//! Inputs are checked here before the engine sees them, so a refused request records nothing.
//! Each operation updates metrics (bounded labels only), writes the audit line, and feeds the
//! shadow engine, if any, which decides on the same traffic without acting.

use crate::agent::{AgentPool, AgentRequest};
use crate::audit::{Audit, DecisionRecord};
use crate::config::Config;
use crate::dashboard::activity::{series_index, Activity, SERIES};
use crate::dashboard::session::Sessions;
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::shared::{RedisStore, StoreError, StoreOptions};
use metrics_exporter_prometheus::PrometheusHandle;
use portcullis_engine::net::parse_ip;
use portcullis_engine::policy::valid_tenant_name;
use portcullis_engine::{
    Attempt, Decision, Engine, FailMode, Familiarity, Fired, Mode, Options, Outcome,
    OutcomeEffects, Policy, Reason, Timestamp, Verdict,
};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The longest accepted name, tenant, fingerprint or client kind, in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Shadow attempt ids kept for outcomes at most; beyond it the oldest mapping is dropped (the
/// shadow engine then expires that attempt after the directory window).
const MAX_SHADOW_IDS: usize = 1_000_000;

/// The shared state. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Service>);

impl std::ops::Deref for AppState {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.0
    }
}

/// Everything a request may need.
pub struct Service {
    /// The enforcing engine. With a shared store it holds the policy, the keyed hashes and this
    /// instance's rate limits, and the state lives in [`Service::shared`].
    pub engine: Arc<Engine>,
    /// The shared store (`--store redis://..`), when state is shared with other instances.
    pub shared: Option<Arc<RedisStore>>,
    /// The shadow engine, deciding without acting.
    pub shadow: Option<Arc<Engine>>,
    /// Agents, in in-line mode.
    pub agents: Option<Arc<AgentPool>>,
    /// The audit log.
    pub audit: Audit,
    /// The resolved settings.
    pub config: Config,
    /// The metrics handle, for `/metrics`.
    pub metrics: Option<PrometheusHandle>,
    /// Decisions of the last hour by tenant and reason, for the dashboard's chart.
    pub activity: Activity,
    /// Dashboard sign-in sessions.
    pub sessions: Sessions,
    /// Shadow disagreements since start by kind ([`DISAGREEMENT_KINDS`]) and the shadow's
    /// reason ([`crate::dashboard::activity::SERIES`] order), for the dashboard.
    pub disagreements: [[AtomicU64; SERIES.len()]; DISAGREEMENT_KINDS.len()],
    /// Primary attempt id to shadow attempt id, for attempts both forwarded.
    shadow_ids: Mutex<HashMap<u64, u64>>,
    /// The write-behind flush's health (embedded store).
    pub persist: crate::persist::Persist,
    /// Decision requests in flight, at most `config.max_in_flight`: beyond, requests are shed.
    in_flight: tokio::sync::Semaphore,
}

/// How long a shed request is told to wait before retrying, ms.
pub const SHED_RETRY_AFTER_MS: u64 = 1000;

/// The kinds of shadow disagreement (the `kind` label of the metric).
pub const DISAGREEMENT_KINDS: [&str; 3] = ["would_block", "would_forward", "other_reason"];

/// A checked attempt, as the front ends hand it over.
#[derive(Debug, Clone, Default)]
pub struct CheckInput {
    /// Tenant name.
    pub tenant: String,
    /// The sign-in name as typed.
    pub user: String,
    /// The client address as text.
    pub ip: String,
    /// The opaque fingerprint.
    pub pw: Option<Vec<u8>>,
    /// The client kind.
    pub app: Option<String>,
}

/// The answer to a check (and the decision part of a validate).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckOutput {
    /// The attempt id to report the outcome with (decimal), when forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `forward`, `wrong_password` or `block`.
    pub decision: &'static str,
    /// The agent's answer, in in-line mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'static str>,
    /// Why, for every non-forward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Seconds until a retry may succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

/// The current wall-clock time as the engine's timestamp.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}

fn check_len(field: &str, v: &str) -> Result<()> {
    if v.len() > MAX_FIELD_BYTES {
        return Err(Error::bad(
            field,
            format!("is {} bytes; at most {MAX_FIELD_BYTES}", v.len()),
        ));
    }
    Ok(())
}

/// Validates a check's fields; returns the parsed address.
pub fn validate_input(i: &CheckInput) -> Result<IpAddr> {
    check_len("tenant", &i.tenant)?;
    if !valid_tenant_name(&i.tenant) {
        return Err(Error::bad("tenant", "must be 1 to 64 of A-Z a-z 0-9 . _ -"));
    }
    check_len("user", &i.user)?;
    if i.user.trim().is_empty() {
        return Err(Error::bad("user", "must not be empty"));
    }
    check_len("ip", &i.ip)?;
    let ip = parse_ip(&i.ip).ok_or_else(|| Error::bad("ip", "is not an IPv4 or IPv6 address"))?;
    if let Some(pw) = &i.pw {
        if pw.len() > MAX_FIELD_BYTES {
            return Err(Error::bad(
                "pw",
                format!("is longer than {MAX_FIELD_BYTES} bytes"),
            ));
        }
    }
    if let Some(app) = &i.app {
        check_len("app", app)?;
    }
    Ok(ip)
}

impl Service {
    /// Builds the service: opens the store (the sled directory, created owner-only, or the shared
    /// Redis store with `config.store`), loads the policies, the agents and the audit log.
    pub async fn build(config: Config, metrics: Option<PrometheusHandle>) -> Result<Service> {
        let policy = load_policy(&config.policy)?;
        let (engine, secret, shared) = match &config.store {
            Some(url) => {
                let url = url.expose();
                let opts = StoreOptions {
                    url: url.to_string(),
                    namespace: config.namespace.clone(),
                    timeout: config.store_timeout,
                };
                let store = RedisStore::open(&opts, policy).await.map_err(|e| match e {
                    StoreError::Engine(e) => Error::from(e),
                    e => Error::Config(format!(
                        "shared store {}: {e}",
                        crate::config::redacted_url(url)
                    )),
                })?;
                let secret = store.secret();
                (store.engine().clone(), secret, Some(Arc::new(store)))
            }
            None => {
                let (engine, secret) = crate::persist::open_engine(&config, policy)?;
                (engine, secret, None)
            }
        };
        let shadow = match &config.shadow {
            Some(path) => Some(Arc::new(Engine::new(
                load_policy(path)?,
                Options {
                    limits: config.limits,
                    key_scheme: engine.key_scheme(),
                    ..Options::in_memory(secret)
                },
            )?)),
            None => None,
        };
        let agents = if config.agents.is_empty() {
            None
        } else {
            Some(Arc::new(
                AgentPool::new(&config.agents, config.agent_timeout)
                    .map_err(|e| Error::Config(format!("agent client: {e}")))?
                    .with_breaker(config.agent_breaker),
            ))
        };
        let audit = match &config.audit {
            Some(target) => {
                let key = config
                    .audit_hash_accounts
                    .then(|| blake3::derive_key("portcullis audit account v1", &secret));
                Audit::open(target, key).map_err(|e| Error::io(format!("audit log {target}"), e))?
            }
            None => Audit::off(),
        };
        let mut service = Service::from_parts(engine, shadow, agents, audit, config, metrics);
        service.shared = shared;
        Ok(service)
    }

    /// Assembles a service from its parts (tests build engines in memory).
    pub fn from_parts(
        engine: Arc<Engine>,
        shadow: Option<Arc<Engine>>,
        agents: Option<Arc<AgentPool>>,
        audit: Audit,
        config: Config,
        metrics: Option<PrometheusHandle>,
    ) -> Service {
        let config_max_in_flight = config.max_in_flight;
        Service {
            engine,
            shared: None,
            shadow,
            agents,
            audit,
            config,
            metrics,
            activity: Activity::default(),
            sessions: Sessions::default(),
            disagreements: Default::default(),
            shadow_ids: Mutex::new(HashMap::new()),
            persist: Default::default(),
            in_flight: tokio::sync::Semaphore::new(
                config_max_in_flight.min(tokio::sync::Semaphore::MAX_PERMITS),
            ),
        }
    }

    /// The metrics label of a tenant: its name when the policy names it (or `default`), else
    /// `other`, so the label set stays bounded.
    pub fn tenant_label(&self, tenant: &str) -> String {
        if tenant == "default" || self.engine.policy().tenants.contains_key(tenant) {
            tenant.to_string()
        } else {
            "other".to_string()
        }
    }

    /// Takes a place among the decision requests in flight, or sheds this one at once: the
    /// answer then carries what the tenant's fail policy wants done with the attempt (`forward`
    /// for a familiar source under `open`, else `refuse`), found by a read-only look in memory.
    /// `source` is `(tenant, user, ip)` for a check or validate, `None` for an outcome.
    pub fn admit(
        &self,
        api: &'static str,
        source: Option<(&str, &str, IpAddr)>,
    ) -> Result<tokio::sync::SemaphorePermit<'_>> {
        if let Ok(p) = self.in_flight.try_acquire() {
            return Ok(p);
        }
        let fail = source.map(|(tenant, user, ip)| {
            let f = self.engine.familiarity_hint(tenant, user, ip, now());
            let policy = self.engine.policy();
            let p = policy.for_tenant(tenant);
            match (p.mode, p.fail_mode.for_source(f)) {
                (Mode::LogOnly, _) | (_, FailMode::Open) => "forward",
                (_, FailMode::Closed) => "refuse",
            }
        });
        metrics::counter!(m::SHED, "api" => api, "fail" => fail.unwrap_or("none")).increment(1);
        Err(Error::Overloaded {
            limit: self.config.max_in_flight,
            fail,
            retry_after_ms: SHED_RETRY_AFTER_MS,
        })
    }

    /// The decision when the engine cannot decide normally (`reason`: the shared store is
    /// unavailable, or the engine failed): the tenant policy's `fail_mode` for the source's
    /// familiarity. `closed` refuses (retry after 1 s); `open` forwards with an attempt id no
    /// instance will know (its outcome is refused: nothing can be recorded). `log_only`
    /// forwards either way.
    fn fail_mode_decision(
        &self,
        tenant: &str,
        familiarity: Familiarity,
        reason: Reason,
    ) -> Decision {
        let policy = self.engine.policy();
        let p = policy.for_tenant(tenant);
        let fail_mode = p.fail_mode.for_source(familiarity);
        let mode = fail_mode.as_str();
        if reason == Reason::StoreUnavailable {
            metrics::counter!(m::STORE_FAIL_MODE, "fail_mode" => mode).increment(1);
        }
        metrics::counter!(m::FAIL_MODE_DECISIONS, "cause" => reason.as_str(), "fail_mode" => mode)
            .increment(1);
        let mut d = match fail_mode {
            FailMode::Closed => portcullis_engine::rules::refuse(
                reason,
                portcullis_engine::rules::retry(1000),
                Fired {
                    counter: if reason == Reason::StoreUnavailable {
                        "store_reachable"
                    } else {
                        "engine_ok"
                    },
                    value: 0,
                    limit: 1,
                },
                familiarity,
            ),
            FailMode::Open => Decision {
                verdict: Verdict::Forward,
                assessed: Verdict::Forward,
                reason: None,
                retry_after: None,
                fired: None,
                familiarity,
                attempt_id: None,
            },
        };
        if p.mode == Mode::LogOnly {
            d.verdict = Verdict::Forward;
        }
        if d.verdict == Verdict::Forward {
            d.attempt_id = Some(rand::random::<u64>() >> 11);
        }
        d
    }

    async fn decide(&self, api: &'static str, i: &CheckInput, ip: IpAddr) -> Result<Decision> {
        let t0 = Instant::now();
        let now = now();
        let attempt = Attempt {
            tenant: &i.tenant,
            user: &i.user,
            ip,
            fingerprint: i.pw.as_deref(),
        };
        let d = match &self.shared {
            None => match self.engine.check(&attempt, now) {
                Ok(d) => d,
                Err(e @ portcullis_engine::Error::InvalidInput { .. }) => return Err(e.into()),
                Err(e) => {
                    // The engine cannot decide (a cap reached, a store record unreadable): the
                    // fail policy does, for what memory says of the source.
                    tracing::debug!(error = %e, "The engine failed; the fail mode decides.");
                    let f = self.engine.familiarity_hint(&i.tenant, &i.user, ip, now);
                    self.fail_mode_decision(&i.tenant, f, Reason::Overloaded)
                }
            },
            Some(store) => match store.check(&attempt, now).await {
                Ok(d) => d,
                Err(StoreError::Engine(e)) => return Err(e.into()),
                Err(e) => {
                    metrics::counter!(m::STORE_ERRORS, "op" => "check").increment(1);
                    tracing::debug!(error = %e, "Shared store failed; the fail mode decides.");
                    // The account's familiar places live in the store: unknown, so unfamiliar.
                    self.fail_mode_decision(
                        &i.tenant,
                        Familiarity::Unfamiliar,
                        Reason::StoreUnavailable,
                    )
                }
            },
        };
        metrics::histogram!(m::CHECK_LATENCY, "api" => api).record(t0.elapsed().as_secs_f64());
        let tenant = self.tenant_label(&i.tenant);
        let reason = d.reason.map_or("none", |r| r.as_str());
        self.activity
            .record(&tenant, series_index(d.reason), now.as_millis());
        metrics::counter!(m::DECISIONS, "tenant" => tenant.clone(),
            "decision" => d.verdict.as_str(), "reason" => reason)
        .increment(1);
        if d.reason == Some(portcullis_engine::Reason::DirectoryBudget) {
            metrics::counter!(m::BUDGET_REFUSALS, "tenant" => tenant).increment(1);
        }
        tracing::debug!(tenant = %i.tenant, decision = d.verdict.as_str(), reason, "Decided.");
        if let Some(shadow) = &self.shadow {
            self.shadow_check(shadow, &attempt, now, &d);
        }
        Ok(d)
    }

    fn shadow_check(&self, shadow: &Engine, a: &Attempt<'_>, now: Timestamp, d: &Decision) {
        let Ok(s) = shadow.check(a, now) else { return };
        let kind = match (d.assessed, s.assessed) {
            (Verdict::Forward, Verdict::Forward) => None,
            (Verdict::Forward, _) => Some("would_block"),
            (_, Verdict::Forward) => Some("would_forward"),
            _ if d.reason != s.reason => Some("other_reason"),
            _ => None,
        };
        if let Some(kind) = kind {
            let reason = s.reason.map_or("none", |r| r.as_str());
            metrics::counter!(m::SHADOW_DISAGREEMENTS, "kind" => kind, "reason" => reason)
                .increment(1);
            if let Some(k) = DISAGREEMENT_KINDS.iter().position(|x| *x == kind) {
                self.disagreements[k][series_index(s.reason)].fetch_add(1, Ordering::Relaxed);
            }
        }
        if let (Some(primary), Some(sid)) = (d.attempt_id, s.attempt_id) {
            let mut ids = self.shadow_ids.lock().unwrap_or_else(|e| e.into_inner());
            if ids.len() >= MAX_SHADOW_IDS {
                ids.clear();
            }
            ids.insert(primary, sid);
        }
    }

    fn audit_decision(
        &self,
        api: &str,
        i: &CheckInput,
        ip: IpAddr,
        d: &Decision,
        result: Option<&str>,
    ) {
        if self.audit.enabled() {
            let version = self.engine.policy().version.clone();
            self.audit.decision(&DecisionRecord {
                api,
                tenant: &i.tenant,
                user: &i.user,
                ip,
                decision: d,
                result,
                policy_version: &version,
            });
        }
    }

    /// `POST /v1/check`.
    pub async fn check(&self, i: &CheckInput) -> Result<CheckOutput> {
        let ip = validate_input(i)?;
        let _admitted = self.admit("check", Some((&i.tenant, &i.user, ip)))?;
        let d = self.decide("check", i, ip).await?;
        self.audit_decision("check", i, ip, &d, None);
        Ok(output(&d, None))
    }

    /// `POST /v1/outcome`.
    pub async fn outcome(
        &self,
        id: &str,
        result: &str,
        pw: Option<&[u8]>,
    ) -> Result<OutcomeEffects> {
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| Error::bad("id", "must be an attempt id from /v1/check"))?;
        let result: Outcome = result
            .parse()
            // Not the engine's message: it quotes the value, and a confused caller may have put
            // something secret there.
            .map_err(|_: String| {
                Error::bad(
                    "result",
                    format!(
                        "is not a known result; expected one of {}",
                        Outcome::ALL.map(|o| o.as_str()).join(", ")
                    ),
                )
            })?;
        if pw.is_some_and(|p| p.len() > MAX_FIELD_BYTES) {
            return Err(Error::bad(
                "pw",
                format!("is longer than {MAX_FIELD_BYTES} bytes"),
            ));
        }
        let _admitted = self.admit("outcome", None)?;
        self.record_outcome(id, result, pw).await
    }

    async fn record_outcome(
        &self,
        id: u64,
        result: Outcome,
        pw: Option<&[u8]>,
    ) -> Result<OutcomeEffects> {
        let now = now();
        let (fx, tenant) = match &self.shared {
            None => {
                let tenant = self
                    .engine
                    .pending_tenant(id)
                    .map(|t| self.tenant_label(&t));
                (self.engine.outcome(id, result, pw, now)?, tenant)
            }
            Some(store) => match store.outcome(id, result, pw, now).await {
                Ok((fx, tenant)) => (fx, Some(self.tenant_label(&tenant))),
                Err(StoreError::Engine(e)) => return Err(e.into()),
                Err(e) => {
                    metrics::counter!(m::STORE_ERRORS, "op" => "outcome").increment(1);
                    tracing::debug!(error = %e, "Shared store failed; outcome not recorded.");
                    return Err(Error::StoreUnavailable);
                }
            },
        };
        metrics::counter!(m::OUTCOMES, "result" => result.as_str()).increment(1);
        let tenant = tenant.unwrap_or_else(|| "other".into());
        if fx.lockout_started {
            metrics::counter!(m::LOCKOUTS_STARTED, "tenant" => tenant.clone()).increment(1);
        }
        if fx.spray_detected {
            metrics::counter!(m::SPRAYS_DETECTED, "tenant" => tenant).increment(1);
        }
        if let Some(shadow) = &self.shadow {
            let sid = self
                .shadow_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            if let Some(sid) = sid {
                let _ = shadow.outcome(sid, result, pw, now);
            }
        }
        Ok(fx)
    }

    /// `POST /v1/validate`: check, forward to an agent when permitted, record its answer.
    ///
    /// The agent exchange and the outcome run in their own task, so a client that goes away
    /// mid-request never leaves an attempt half-recorded.
    pub async fn validate(
        &self,
        i: &CheckInput,
        payload: serde_json::Value,
    ) -> Result<CheckOutput> {
        let ip = validate_input(i)?;
        // Held until the agent answered: a slow directory counts against the limit.
        let _admitted = self.admit("validate", Some((&i.tenant, &i.user, ip)))?;
        let d = self.decide("validate", i, ip).await?;
        let Some(id) = d.attempt_id else {
            self.audit_decision("validate", i, ip, &d, None);
            return Ok(output(&d, None));
        };
        let result = match &self.agents {
            Some(pool) => {
                let pool = pool.clone();
                let req = AgentRequest {
                    v: crate::agent::PROTOCOL_VERSION,
                    id: id.to_string(),
                    tenant: i.tenant.clone(),
                    user: i.user.clone(),
                    payload,
                };
                let answer = tokio::spawn(async move { pool.validate(&req).await })
                    .await
                    .map_err(|e| Error::Config(format!("agent task: {e}")))?;
                let _ = self
                    .record_outcome(id, answer.outcome, answer.fingerprint.as_deref())
                    .await;
                answer.outcome
            }
            None => {
                let _ = self
                    .record_outcome(id, Outcome::DirectoryUnreachable, None)
                    .await;
                Outcome::DirectoryUnreachable
            }
        };
        self.audit_decision("validate", i, ip, &d, Some(result.as_str()));
        Ok(output(&d, Some(result.as_str())))
    }

    /// Refreshes the gauges from the engine's state at `now`, and drains the metrics exporter's
    /// histogram queues.
    pub fn refresh_gauges(&self, now: Timestamp) {
        let s = self.engine.stats();
        for (kind, n) in [
            ("accounts", s.accounts),
            ("sources", s.sources),
            ("sprays", s.sprays),
            ("pending", s.pending),
        ] {
            metrics::gauge!(m::TRACKED, "kind" => kind).set(n as f64);
        }
        metrics::gauge!(m::ACTIVE_LOCKOUTS).set(self.engine.active_lockouts(now).len() as f64);
        metrics::gauge!(m::BLOCKED_SOURCES).set(self.engine.blocked_sources(now).len() as f64);
        metrics::gauge!(m::SPRAYED).set(self.engine.sprayed_passwords(now).len() as f64);
        if let Some(store) = &self.shared {
            use std::sync::atomic::Ordering::Relaxed;
            metrics::counter!(m::STORE_CONFLICTS).absolute(store.counters.conflicts.load(Relaxed));
            metrics::counter!(m::STORE_CACHE_HITS)
                .absolute(store.counters.cache_hits.load(Relaxed));
        }
        // The exporter queues every histogram sample until it is drained, which a scrape does
        // and so does upkeep: without it, a service nobody scrapes grows by a sample per check.
        if let Some(h) = &self.metrics {
            h.run_upkeep();
        }
    }

    /// Whether the service can take traffic: the shared store (if any) answers and, in in-line
    /// mode, at least one agent is healthy.
    pub fn ready(&self) -> (bool, serde_json::Value) {
        let agents = self.agents.as_ref().map(|a| (a.healthy(), a.len()));
        let store_up = self.shared.as_ref().map_or(true, |s| s.is_up());
        let ok = !matches!(agents, Some((0, _))) && store_up;
        let mut v = serde_json::json!({
            "policy_loaded": true,
            "policy_version": self.engine.policy().version,
            "store_open": store_up,
            "store": if self.shared.is_some() { "redis" } else { "sled" },
        });
        if self.shared.is_some() {
            v["store_reachable"] = store_up.into();
        } else if let Ok(p) = serde_json::to_value(self.persist.view(&self.engine)) {
            // A failing disk does not make the service unready: decisions are taken from
            // memory and stay correct; only a crash during the fault would lose recent state.
            // The body says so, and `store_persist_ok` alerts.
            if !self.persist.ok() {
                v["degraded"] = true.into();
            }
            if let (Some(v), serde_json::Value::Object(p)) = (v.as_object_mut(), p) {
                v.extend(p);
            }
        }
        if let Some((healthy, total)) = agents {
            v["agents_healthy"] = healthy.into();
            v["agents"] = total.into();
        }
        (ok, v)
    }
}

/// The API form of a decision.
pub fn output(d: &Decision, result: Option<&'static str>) -> CheckOutput {
    CheckOutput {
        id: d.attempt_id.map(|id| id.to_string()),
        decision: d.verdict.as_str(),
        result,
        reason: d.reason.map(|r| r.as_str()),
        retry_after_s: d.retry_after.map(|r| r.as_millis().div_ceil(1000) as u64),
    }
}

/// Loads a policy file, turning a refusal into a config error listing every problem.
pub fn load_policy(path: &std::path::Path) -> Result<Policy> {
    Policy::load(path).map_err(|e| match e {
        portcullis_engine::Error::Policy(errs) => {
            Error::Config(format!("policy refused:\n{}", errs.join("\n")))
        }
        other => Error::Config(other.to_string()),
    })
}

/// Creates `dir` (and parents) and makes it and everything in it owner-only (0700, files 0600).
pub fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("chmod 0700 {}", dir.display()), e))?;
        tighten(dir)?;
    }
    Ok(())
}

/// Takes group and world access off everything already under `dir` (files a version without
/// the owner-only umask may have left); new files are owner-only through the umask `serve` sets.
#[cfg(unix)]
fn tighten(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
            .path();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
        }
        if meta.is_dir() {
            tighten(&path)?;
        }
    }
    Ok(())
}
