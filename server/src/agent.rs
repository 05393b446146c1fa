//! The agent protocol, and the pool of agents used in in-line mode (`/v1/validate`).
//!
//! # Protocol (version 1)
//! Portcullis sends `POST {agent}/v1/validate` with a JSON [`AgentRequest`]:
//! `{"v":1,"id":"<attempt id>","tenant":"acme","user":"alice@acme.example","payload":<opaque>}`.
//! `payload` is whatever the broker put in its `/v1/validate` request, passed through unchanged
//! (typically the encrypted credential the agent knows how to open; the reference agents,
//! [`crate::ref_agent`] and the LDAP agent [`crate::ldap_agent`], take the password in clear as
//! `{"password":"..."}`, for tests and trials only). The agent answers `200` with
//! a JSON [`AgentResponse`]: `{"result":"<outcome>","pw_fp":"<hex>"?}`, where `result` is one of
//! the outcome names (`success`, `wrong_password`, `unknown_user`, `locked`, `disabled`, `expired`,
//! `must_change_password`, `directory_unreachable`, `timeout`, `error`) and `pw_fp`, optional, is
//! the agent's keyed fingerprint of a failed password (hex), used for spray detection when the
//! broker sent none. `GET {agent}/healthz` answers `200` while the agent can reach its directory.
//!
//! # Pool
//! Agents are tried round-robin, skipping those marked unhealthy. A connection failure (nothing
//! was delivered) marks the agent unhealthy and fails over to the next; a timeout or a broken
//! exchange does not fail over, since the agent may already have asked the directory and a second
//! try could count a bad password twice: it is answered `timeout` or `error`. When no agent is
//! healthy the answer is `directory_unreachable`, at once. A background loop re-checks health.
//! Invariant: each call returns exactly one answer, and agent faults are never `wrong_password`.
//!
//! # Circuit breaker
//! Each agent has a breaker. It opens after [`BreakerConfig::threshold`] consecutive faults
//! (connect failures, timeouts, broken exchanges, non-2xx answers, unusable answers such as an
//! unknown result): requests then skip that agent and go to the next one (nothing was sent, so
//! failing over cannot count a password twice). After [`BreakerConfig::cooldown`] it is
//! half-open: one request at a time goes through as a probe; a good answer closes it, a fault
//! opens it again for another cooldown. States are in [`AgentPool::stats`] and the
//! `portcullis_agent_breaker_state` gauge (0 closed, 1 half-open, 2 open).
//!
//! ```text
//!   closed --threshold consecutive faults--> open --cooldown--> half-open
//!     ^                                        ^                   |
//!     +------------- probe answers ------------+---- probe fault --+
//! ```

use crate::metrics::LatencyHistogram;
use portcullis_engine::Outcome;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The current protocol version.
pub const PROTOCOL_VERSION: u32 = 1;

/// What Portcullis sends an agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentRequest {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub v: u32,
    /// The attempt id (decimal).
    pub id: String,
    /// Tenant name.
    pub tenant: String,
    /// The sign-in name as typed.
    pub user: String,
    /// The broker's opaque payload, unchanged.
    pub payload: serde_json::Value,
}

/// What an agent answers. Read only from a JSON object: serde would otherwise take a bare array
/// such as `["wrong_password"]` for the struct's fields in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct AgentResponse {
    /// The outcome name.
    pub result: String,
    /// The agent's keyed fingerprint of a failed password, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pw_fp: Option<String>,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for AgentResponse {
    type Error = String;

    fn try_from(mut m: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let result = match m.remove("result") {
            Some(serde_json::Value::String(s)) => s,
            Some(_) => return Err("`result` must be a string".into()),
            None => return Err("missing field `result`".into()),
        };
        let pw_fp = match m.remove("pw_fp") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(_) => return Err("`pw_fp` must be a string".into()),
        };
        Ok(AgentResponse { result, pw_fp })
    }
}

/// The pool's answer to one forwarded attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAnswer {
    /// What to record as the outcome.
    pub outcome: Outcome,
    /// The agent's fingerprint of the password, decoded from hex.
    pub fingerprint: Option<Vec<u8>>,
    /// The index of the agent that answered, if one did.
    pub agent: Option<usize>,
}

struct Agent {
    base: String,
    label: String,
    healthy: AtomicBool,
    /// Answers by result, in the order of [`Outcome::ALL`] (for the dashboard).
    answers: [AtomicU64; Outcome::ALL.len()],
    /// Round-trip times (for the dashboard).
    latency: LatencyHistogram,
    breaker: Mutex<Breaker>,
}

/// When an agent's breaker opens and how long it stays open.
#[derive(Clone, Copy, Debug)]
pub struct BreakerConfig {
    /// Consecutive faults that open the breaker. Default 5.
    pub threshold: u32,
    /// How long an open breaker waits before it lets one probe through. Default 10 s.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 5,
            cooldown: Duration::from_secs(10),
        }
    }
}

/// A breaker's state, as the stats and the gauge show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests go through.
    Closed,
    /// One probe at a time goes through.
    HalfOpen,
    /// Requests skip the agent until the cooldown is over.
    Open,
}

impl BreakerState {
    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

#[derive(Debug)]
struct Breaker {
    state: BreakerState,
    /// Consecutive faults.
    faults: u32,
    /// When it last opened.
    opened: Instant,
    /// A probe is out (half-open).
    probing: bool,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: BreakerState::Closed,
            faults: 0,
            opened: Instant::now(),
            probing: false,
        }
    }
}

impl Breaker {
    /// Whether a request may go to the agent now; takes the probe slot when half-open.
    fn allow(&mut self, cfg: &BreakerConfig) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open if self.opened.elapsed() >= cfg.cooldown => {
                self.state = BreakerState::HalfOpen;
                self.probing = true;
                true
            }
            BreakerState::Open => false,
            BreakerState::HalfOpen if !self.probing => {
                self.probing = true;
                true
            }
            BreakerState::HalfOpen => false,
        }
    }

    /// Records an exchange's result; returns the new state when it changed.
    fn record(&mut self, fault: bool, cfg: &BreakerConfig) -> Option<BreakerState> {
        let before = self.state;
        self.probing = false;
        if fault {
            self.faults = self.faults.saturating_add(1);
            if self.state == BreakerState::HalfOpen
                || (self.state == BreakerState::Closed && self.faults >= cfg.threshold)
            {
                self.state = BreakerState::Open;
                self.opened = Instant::now();
            }
        } else {
            self.faults = 0;
            self.state = BreakerState::Closed;
        }
        (self.state != before).then_some(self.state)
    }
}

/// One agent as the dashboard shows it: health, answers by result, latency quantiles since start.
#[derive(Clone, Debug, Serialize)]
pub struct AgentStats {
    /// The agent's index in the configuration (its metrics label).
    pub index: usize,
    /// Its base URL.
    pub url: String,
    /// Whether its last health check (or exchange) succeeded.
    pub healthy: bool,
    /// Answers by result name, results never answered left out.
    pub answers: std::collections::BTreeMap<&'static str, u64>,
    /// Median round-trip time, ms (bucket upper bound), when any.
    pub p50_ms: Option<f64>,
    /// 99th percentile round-trip time, ms (bucket upper bound), when any.
    pub p99_ms: Option<f64>,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
    /// Faults in a row (0 after a good answer).
    pub consecutive_faults: u32,
}

/// The configured agents. See the module docs.
pub struct AgentPool {
    agents: Vec<Agent>,
    next: AtomicUsize,
    client: reqwest::Client,
    timeout: Duration,
    breaker: BreakerConfig,
}

enum SendError {
    /// Nothing was delivered: safe to try another agent.
    Connect,
    /// No answer in time.
    Timeout,
    /// The exchange broke or the answer was unusable.
    Broken,
}

/// The largest agent answer read, in bytes (64 KiB); a longer one is refused as broken.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Parses an agent's answer body strictly: a UTF-8 JSON object whose `result` is a string naming
/// a known outcome and whose optional `pw_fp` is a string of hex digits (at most 256); other
/// fields are ignored. Anything else (an array, a bare string, invalid UTF-8 or escapes, an
/// unknown result, trailing data) is refused, and the pool answers it as `error`: a broken
/// answer must never count as `wrong_password`. The error names the field at fault and never
/// quotes the body.
pub fn parse_answer(body: &[u8]) -> crate::Result<AgentResponse> {
    let refuse = |field: &str, reason: &str| crate::Error::bad(field, reason);
    // serde would read a JSON array into a struct by position (`["wrong_password"]`); an
    // answer is an object, so check the shape before deserialising.
    let text = std::str::from_utf8(body).map_err(|_| refuse("body", "is not UTF-8"))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| refuse("body", "is not valid JSON"))?;
    let serde_json::Value::Object(map) = value else {
        return Err(refuse("body", "must be a JSON object"));
    };
    // The field shapes are checked where serde reads the struct, for every reader of answers.
    let answer = AgentResponse::try_from(map).map_err(|reason| refuse("body", &reason))?;
    if answer.result.parse::<Outcome>().is_err() {
        return Err(refuse("result", "is not a known outcome"));
    }
    if answer
        .pw_fp
        .as_deref()
        .is_some_and(|s| decode_hex(s).is_none())
    {
        return Err(refuse("pw_fp", "must be a string of hex digits"));
    }
    Ok(answer)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 256 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl AgentPool {
    /// A pool over `urls` (base URLs), each request bounded by `timeout`.
    pub fn new(urls: &[String], timeout: Duration) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(AgentPool {
            agents: urls
                .iter()
                .enumerate()
                .map(|(i, u)| Agent {
                    base: u.trim_end_matches('/').to_string(),
                    label: i.to_string(),
                    healthy: AtomicBool::new(true),
                    answers: Default::default(),
                    latency: LatencyHistogram::default(),
                    breaker: Mutex::default(),
                })
                .collect(),
            next: AtomicUsize::new(0),
            client,
            timeout,
            breaker: BreakerConfig::default(),
        })
    }

    /// Sets when the agents' breakers open and how long they stay open.
    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// Records one exchange with `agent` (index `i`) in its breaker, logging a change of state.
    fn record_exchange(&self, i: usize, fault: bool) {
        let agent = &self.agents[i];
        let changed = agent
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(fault, &self.breaker);
        if let Some(state) = changed {
            metrics::gauge!(crate::metrics::AGENT_BREAKER, "agent" => agent.label.clone())
                .set(state.gauge());
            match state {
                BreakerState::Open => tracing::warn!(
                    agent = %agent.base,
                    cooldown_ms = self.breaker.cooldown.as_millis() as u64,
                    "Agent breaker open: requests go to the other agents until a probe succeeds."
                ),
                BreakerState::Closed => {
                    tracing::info!(agent = %agent.base, "Agent breaker closed.")
                }
                BreakerState::HalfOpen => {}
            }
        }
    }

    fn breaker_allows(&self, i: usize) -> bool {
        let allowed = self.agents[i]
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(&self.breaker);
        allowed
    }

    /// How many agents are configured.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether no agent is configured.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// How many agents are marked healthy.
    pub fn healthy(&self) -> usize {
        self.agents
            .iter()
            .filter(|a| a.healthy.load(Ordering::Relaxed))
            .count()
    }

    /// Each agent's health, answers by result and latency quantiles, in configuration order.
    pub fn stats(&self) -> Vec<AgentStats> {
        self.agents
            .iter()
            .enumerate()
            .map(|(index, a)| {
                let (breaker, consecutive_faults) = {
                    let b = a.breaker.lock().unwrap_or_else(|e| e.into_inner());
                    (b.state, b.faults)
                };
                AgentStats {
                    index,
                    url: a.base.clone(),
                    healthy: a.healthy.load(Ordering::Relaxed),
                    answers: Outcome::ALL
                        .iter()
                        .zip(&a.answers)
                        .map(|(o, n)| (o.as_str(), n.load(Ordering::Relaxed)))
                        .filter(|(_, n)| *n > 0)
                        .collect(),
                    p50_ms: a.latency.quantile_ms(0.5),
                    p99_ms: a.latency.quantile_ms(0.99),
                    breaker,
                    consecutive_faults,
                }
            })
            .collect()
    }

    /// Forwards one attempt; always returns exactly one answer (see the module docs).
    pub async fn validate(&self, req: &AgentRequest) -> AgentAnswer {
        let n = self.agents.len();
        if n == 0 {
            return unreachable();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let i = (start + k) % n;
            let agent = &self.agents[i];
            if !agent.healthy.load(Ordering::Relaxed) || !self.breaker_allows(i) {
                continue;
            }
            let t0 = Instant::now();
            let sent = self.send(agent, req).await;
            let took = t0.elapsed();
            metrics::histogram!(crate::metrics::AGENT_LATENCY, "agent" => agent.label.clone())
                .record(took.as_secs_f64());
            agent.latency.record(took);
            // Only an answer the protocol knows counts as good; anything else is the agent's
            // fault (and never `wrong_password`).
            let fault = !matches!(&sent, Ok(r) if r.result.parse::<Outcome>().is_ok());
            self.record_exchange(i, fault);
            let answer = match sent {
                Ok(resp) => {
                    let outcome = resp.result.parse().unwrap_or(Outcome::Error);
                    AgentAnswer {
                        outcome,
                        fingerprint: resp.pw_fp.as_deref().and_then(decode_hex),
                        agent: Some(i),
                    }
                }
                Err(SendError::Connect) => {
                    if agent.healthy.swap(false, Ordering::Relaxed) {
                        tracing::warn!(agent = %agent.base, "Agent unreachable; failing over.");
                    }
                    continue;
                }
                Err(SendError::Timeout) => AgentAnswer {
                    outcome: Outcome::Timeout,
                    fingerprint: None,
                    agent: Some(i),
                },
                Err(SendError::Broken) => AgentAnswer {
                    outcome: Outcome::Error,
                    fingerprint: None,
                    agent: Some(i),
                },
            };
            metrics::counter!(crate::metrics::AGENT_ANSWERS,
                "agent" => agent.label.clone(), "result" => answer.outcome.as_str())
            .increment(1);
            if let Some(k) = Outcome::ALL.iter().position(|o| *o == answer.outcome) {
                agent.answers[k].fetch_add(1, Ordering::Relaxed);
            }
            return answer;
        }
        unreachable()
    }

    async fn send(&self, agent: &Agent, req: &AgentRequest) -> Result<AgentResponse, SendError> {
        let url = format!("{}/v1/validate", agent.base);
        let resp = self
            .client
            .post(url)
            .timeout(self.timeout)
            .json(req)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    SendError::Connect
                } else if e.is_timeout() {
                    SendError::Timeout
                } else {
                    SendError::Broken
                }
            })?;
        if !resp.status().is_success() {
            tracing::debug!(agent = %agent.base, status = %resp.status(), "Agent refused a request.");
            return Err(SendError::Broken);
        }
        // Read at most MAX_ANSWER_BYTES: an agent answer is tiny, and a misbehaving agent must
        // not make us buffer an unbounded body.
        let mut resp = resp;
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                        tracing::debug!(agent = %agent.base, "Agent answer over the size limit.");
                        return Err(SendError::Broken);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(SendError::Timeout),
                Err(_) => return Err(SendError::Broken),
            }
        }
        parse_answer(&body).map_err(|e| {
            tracing::debug!(agent = %agent.base, error = %e, "Agent answer refused.");
            SendError::Broken
        })
    }

    /// Checks every agent's `/healthz` once and updates the marks.
    pub async fn check_health(&self) {
        for agent in &self.agents {
            let ok = self
                .client
                .get(format!("{}/healthz", agent.base))
                .timeout(self.timeout.min(Duration::from_secs(1)))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let was = agent.healthy.swap(ok, Ordering::Relaxed);
            if was != ok {
                if ok {
                    tracing::info!(agent = %agent.base, "Agent healthy again.");
                } else {
                    tracing::warn!(agent = %agent.base, "Agent failed its health check.");
                }
            }
        }
        metrics::gauge!(crate::metrics::AGENTS_HEALTHY).set(self.healthy() as f64);
    }
}

fn unreachable() -> AgentAnswer {
    AgentAnswer {
        outcome: Outcome::DirectoryUnreachable,
        fingerprint: None,
        agent: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_hex_fingerprints_and_refuses_junk() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    #[test]
    fn parses_well_formed_answers() {
        let a = parse_answer(br#"{"result":"wrong_password","pw_fp":"00ff"}"#).unwrap();
        assert_eq!(a.result, "wrong_password");
        assert_eq!(a.pw_fp.as_deref(), Some("00ff"));
        let a = parse_answer(br#" {"result":"success","extra":[1,{"x":null}]} "#).unwrap();
        assert_eq!(a.result, "success");
        assert_eq!(a.pw_fp, None);
        for o in Outcome::ALL {
            let body = format!(r#"{{"result":"{}"}}"#, o.as_str());
            assert_eq!(parse_answer(body.as_bytes()).unwrap().result, o.as_str());
        }
    }

    /// Reproducers from fuzzing: none of these is a protocol answer, so none may become
    /// `wrong_password`.
    #[test]
    fn refuses_answers_that_are_not_a_protocol_object() {
        for body in [
            &br#"["wrong_password"]"#[..],
            br#"["wrong_password", "00ff"]"#,
            br#""wrong_password""#,
            b"wrong_password",
            b"",
            b"null",
            br#"{"result":"wrong_password","x":"\ud800"}"#,
            br#"{"result":"wrong_password","x":"\q"}"#,
            b"{\"result\":\"wrong_password\",\"x\":\"\xff\"}",
            br#"{"result":"wrong_password"} trailing"#,
            br#"{"result":"wrong_password"}{"result":"success"}"#,
            br#"{"result":"WRONG_PASSWORD"}"#,
            br#"{"result":"wrong_password "}"#,
            br#"{"result":["wrong_password"]}"#,
            br#"{"result":null}"#,
            br#"{"pw_fp":"00"}"#,
            br#"{"result":"wrong_password","pw_fp":"zz"}"#,
            br#"{"result":"wrong_password","pw_fp":7}"#,
            br#"{"result":"wrong_password""#,
        ] {
            assert!(
                parse_answer(body).is_err(),
                "{:?} should be refused",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// A real agent on loopback answering `body` with 200 to every validate.
    async fn agent_answering(body: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/v1/validate",
            axum::routing::post(move || async move { body }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn the_pool_answers_error_never_wrong_password_for_a_malformed_answer() {
        let req = AgentRequest {
            v: 1,
            id: "1".into(),
            tenant: "t".into(),
            user: "u".into(),
            payload: serde_json::Value::Null,
        };
        for body in [
            &br#"["wrong_password"]"#[..],
            b"{\"result\":\"wrong_password\",\"x\":\"\xff\"}",
            br#"{"result":"wrong_password","x":"\q"}"#,
        ] {
            let pool =
                AgentPool::new(&[agent_answering(body).await], Duration::from_secs(5)).unwrap();
            let a = pool.validate(&req).await;
            assert_eq!(
                a.outcome,
                Outcome::Error,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let big: &'static [u8] = Box::leak(
            format!(
                r#"{{"result":"wrong_password","pad":"{}"}}"#,
                "x".repeat(MAX_ANSWER_BYTES)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let pool = AgentPool::new(&[agent_answering(big).await], Duration::from_secs(5)).unwrap();
        assert_eq!(pool.validate(&req).await.outcome, Outcome::Error);
        let good = br#"{"result":"wrong_password","pw_fp":"0a0b"}"#;
        let pool = AgentPool::new(&[agent_answering(good).await], Duration::from_secs(5)).unwrap();
        let a = pool.validate(&req).await;
        assert_eq!(a.outcome, Outcome::WrongPassword);
        assert_eq!(a.fingerprint, Some(vec![10, 11]));
    }

    #[tokio::test]
    async fn answers_directory_unreachable_at_once_when_no_agent_listens() {
        // Bind then drop to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = AgentPool::new(
            &[format!("http://127.0.0.1:{port}")],
            Duration::from_secs(2),
        )
        .unwrap();
        let req = AgentRequest {
            v: 1,
            id: "1".into(),
            tenant: "t".into(),
            user: "u".into(),
            payload: serde_json::Value::Null,
        };
        let t0 = Instant::now();
        let a = pool.validate(&req).await;
        assert_eq!(a.outcome, Outcome::DirectoryUnreachable);
        assert_eq!(pool.healthy(), 0);
        let a = pool.validate(&req).await;
        assert_eq!(a.outcome, Outcome::DirectoryUnreachable);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t0.elapsed()
        );
    }
}
