//! Live replay: send a trace's attempts to a running service's `/v1/validate` (or, for a
//! baseline with no Portcullis, straight to an agent), and score it with the same
//! [`Report`] as the simulated replay, the directory's lockouts read from the real directory.
//!
//! Test-only by nature: a credentials file maps each trace `pw` token to a real password, so
//! that `correct` tokens bind and the others fail. The token itself is sent to the service as
//! the opaque fingerprint (`pw`); the password travels in the payload as `{"password":"..."}`,
//! which is what the reference agents take. Neither appears in any output.
//!
//! The directory is read (not through the agent: `badPwdCount` and `lockoutTime` of every account
//! the trace touches) once before sending, every `sample_every`, and at the end. Every sample is
//! kept in the report, so a test can check an invariant "at every sample".

use crate::agent::{AgentRequest, AgentResponse, PROTOCOL_VERSION};
use portcullis_engine::normalize::normalize;
use portcullis_engine::replay::Report;
use portcullis_engine::trace::{Label, TraceEvent, Truth};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Errors of a live replay.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The credentials file is malformed or misses a token the trace uses.
    #[error("credentials: {0}")]
    Credentials(String),
    /// Reading the directory failed.
    #[error("reading the directory: {0}")]
    Directory(String),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(String),
}

/// Test-only map from trace `pw` tokens to passwords.
#[derive(Clone, Default)]
pub struct Credentials(HashMap<String, String>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} tokens)", self.0.len())
    }
}

impl Credentials {
    /// Parses `TOKEN PASSWORD` per line (the password is the rest of the line, spaces included;
    /// `#` starts a comment line; blank lines are ignored).
    pub fn parse(text: &str) -> Result<Credentials, LiveError> {
        let mut map = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((token, password)) = line.split_once(' ') else {
                return Err(LiveError::Credentials(format!(
                    "line {}: expected `TOKEN PASSWORD`",
                    i + 1
                )));
            };
            map.insert(token.to_string(), password.to_string());
        }
        Ok(Credentials(map))
    }

    /// The password of a token.
    pub fn password(&self, token: &str) -> Option<&str> {
        self.0.get(token).map(String::as_str)
    }

    /// Checks that every token of `events` has a password; names the first event that has none
    /// (by its index, never by its token).
    pub fn cover(&self, events: &[TraceEvent]) -> Result<(), LiveError> {
        match events.iter().position(|e| !self.0.contains_key(&e.pw)) {
            Some(i) => Err(LiveError::Credentials(format!(
                "event {} (user {:?}) has a pw token with no password in the credentials file",
                i + 1,
                events[i].user
            ))),
            None => Ok(()),
        }
    }
}

/// Where attempts go.
#[derive(Clone, Debug)]
pub enum Target {
    /// A Portcullis service in in-line mode: `POST {url}/v1/validate`.
    Service(String),
    /// An agent directly, no Portcullis (the baseline): `POST {url}/v1/validate` in the agent
    /// protocol.
    Agent(String),
}

/// How to read the directory's lockout state.
#[derive(Clone, Debug)]
pub enum DirectoryProbe {
    /// A Samba AD DC's database directory (`scripts/samba-ad.sh start DIR`): `ldbsearch` on
    /// `DIR/private/sam.ldb` while it runs.
    Samba(PathBuf),
}

/// One account's lockout state in the directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AccountState {
    /// `badPwdCount`.
    pub bad_pwd_count: u32,
    /// `lockoutTime` (100-ns ticks since 1601; 0 when never locked or reset).
    pub lockout_time: u64,
}

impl DirectoryProbe {
    /// Reads the state of `accounts` (sAMAccountName, compared case-insensitively). Accounts the
    /// directory does not have are left out.
    pub async fn read(
        &self,
        accounts: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, AccountState>, LiveError> {
        match self {
            DirectoryProbe::Samba(dir) => {
                let out = tokio::process::Command::new("ldbsearch")
                    .arg("-H")
                    .arg(dir.join("private/sam.ldb"))
                    .args([
                        "(objectClass=user)",
                        "sAMAccountName",
                        "badPwdCount",
                        "lockoutTime",
                    ])
                    .stdin(std::process::Stdio::null())
                    .output()
                    .await
                    .map_err(|e| LiveError::Directory(format!("running ldbsearch: {e}")))?;
                if !out.status.success() {
                    return Err(LiveError::Directory(format!(
                        "ldbsearch exited with {}",
                        out.status
                    )));
                }
                let all = parse_ldif_states(&String::from_utf8_lossy(&out.stdout));
                Ok(all
                    .into_iter()
                    .filter(|(name, _)| accounts.contains(name))
                    .collect())
            }
        }
    }
}

/// Parses `ldbsearch` output into sAMAccountName (lower-cased) -> state.
pub fn parse_ldif_states(text: &str) -> BTreeMap<String, AccountState> {
    let mut out = BTreeMap::new();
    for record in text.split("\n\n") {
        let mut name = None;
        let mut st = AccountState::default();
        for line in record.lines() {
            if let Some(v) = line.strip_prefix("sAMAccountName: ") {
                name = Some(v.trim().to_lowercase());
            } else if let Some(v) = line.strip_prefix("badPwdCount: ") {
                st.bad_pwd_count = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("lockoutTime: ") {
                st.lockout_time = v.trim().parse().unwrap_or(0);
            }
        }
        if let Some(n) = name {
            out.insert(n, st);
        }
    }
    out
}

/// The directory account a sign-in name refers to: trimmed, lower-cased, without a `@realm`
/// suffix or a `DOMAIN\` prefix.
pub fn account_name(user: &str) -> String {
    let u = user.trim();
    let u = u.rsplit_once('\\').map_or(u, |(_, n)| n);
    let u = u.split_once('@').map_or(u, |(n, _)| n);
    u.to_lowercase()
}

/// How to pace and bound the sending.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Trace time divided by this is wall time; `None` sends as fast as possible.
    pub speed: Option<f64>,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// How often the directory is sampled while sending.
    pub sample_every: Duration,
    /// Per-request HTTP timeout.
    pub request_timeout: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            speed: None,
            concurrency: 4,
            sample_every: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// One reading of the directory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds since sending started.
    pub at_s: f64,
    /// Attempts answered by then.
    pub answered: u64,
    /// Accounts with a non-zero `lockoutTime`.
    pub accounts_locked: u64,
    /// The largest `badPwdCount` among the touched accounts.
    pub max_bad_pwd_count: u32,
}

/// What only a live replay measures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LiveFigures {
    /// `service` or `agent` (the baseline with no Portcullis).
    pub target: String,
    /// Accounts the trace touches.
    pub accounts: u64,
    /// Every directory reading, the first before sending and the last after.
    pub samples: Vec<Sample>,
    /// The largest `badPwdCount` seen at any sample.
    pub max_bad_pwd_count: u32,
    /// Accounts seen locked (non-zero `lockoutTime`) at any sample, by name.
    pub locked_accounts: Vec<String>,
    /// Answers by result name (`http_error` for a failed request).
    pub results: BTreeMap<String, u64>,
    /// Legit right-password attempts that did not succeed, as `event-number user decision/result`
    /// (the first 50), to see why.
    pub harmed: Vec<String>,
    /// Request latency, median, milliseconds.
    pub latency_ms_p50: f64,
    /// Request latency, 99th percentile, milliseconds.
    pub latency_ms_p99: f64,
}

/// The report of a live replay: the simulated replay's report plus the live figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LiveReport {
    /// The same fields as the simulated replay's report.
    #[serde(flatten)]
    pub report: Report,
    /// Live-only figures.
    pub live: LiveFigures,
}

/// One attempt's answer.
struct Answer {
    forwarded: bool,
    decision: String,
    result: String,
    latency: Duration,
}

async fn send(
    client: &reqwest::Client,
    target: &Target,
    i: usize,
    ev: &TraceEvent,
    password: &str,
) -> Answer {
    let t0 = Instant::now();
    let payload = serde_json::json!({ "password": password });
    let fail = |t0: Instant| Answer {
        forwarded: false,
        decision: "http_error".into(),
        result: "http_error".into(),
        latency: t0.elapsed(),
    };
    match target {
        Target::Service(base) => {
            let mut body = serde_json::json!({
                "tenant": ev.tenant, "user": ev.user, "ip": ev.ip.to_string(),
                "pw": ev.pw, "payload": payload,
            });
            if let Some(app) = &ev.app {
                body["app"] = app.clone().into();
            }
            let Ok(resp) = client
                .post(format!("{base}/v1/validate"))
                .json(&body)
                .send()
                .await
            else {
                return fail(t0);
            };
            if !resp.status().is_success() {
                return fail(t0);
            }
            let Ok(v) = resp.json::<serde_json::Value>().await else {
                return fail(t0);
            };
            let latency = t0.elapsed();
            let forwarded = v["decision"] == "forward";
            let reason = v["reason"].as_str().unwrap_or("forward");
            let decision = if forwarded { "forward" } else { reason };
            Answer {
                forwarded,
                decision: decision.to_string(),
                result: v["result"]
                    .as_str()
                    .unwrap_or(v["decision"].as_str().unwrap_or("none"))
                    .to_string(),
                latency,
            }
        }
        Target::Agent(base) => {
            let req = AgentRequest {
                v: PROTOCOL_VERSION,
                id: (i + 1).to_string(),
                tenant: ev.tenant.clone(),
                user: ev.user.clone(),
                payload,
            };
            let Ok(resp) = client
                .post(format!("{base}/v1/validate"))
                .json(&req)
                .send()
                .await
            else {
                return fail(t0);
            };
            let Ok(a) = resp.json::<AgentResponse>().await else {
                return fail(t0);
            };
            Answer {
                forwarded: true,
                decision: "forward".into(),
                result: a.result,
                latency: t0.elapsed(),
            }
        }
    }
}

#[derive(Default)]
struct Score {
    report: Report,
    results: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
    harmed: HashSet<(String, String)>,
    harmed_detail: Vec<String>,
    compromised: HashSet<(String, String)>,
    legit_accounts: HashSet<String>,
}

impl Score {
    fn add(&mut self, i: usize, ev: &TraceEvent, a: &Answer) {
        let r = &mut self.report;
        r.events += 1;
        *r.decisions.entry(a.decision.clone()).or_default() += 1;
        *self.results.entry(a.result.clone()).or_default() += 1;
        self.latencies.push(a.latency);
        let key = (
            ev.tenant.clone(),
            normalize(&ev.user).unwrap_or_else(|_| ev.user.clone()),
        );
        let succeeded = a.forwarded && a.result == "success";
        match ev.label {
            Some(Label::Legit) => {
                r.legit.attempts += 1;
                self.legit_accounts.insert(account_name(&ev.user));
                if a.forwarded {
                    r.legit.forwarded += 1;
                } else {
                    r.legit.blocked += 1;
                }
                if succeeded {
                    r.legit.succeeded += 1;
                } else if ev.truth == Truth::Correct {
                    r.legit.harmed += 1;
                    self.harmed.insert(key);
                    if self.harmed_detail.len() < 50 {
                        self.harmed_detail.push(format!(
                            "{} {} {}/{}",
                            i + 1,
                            ev.user,
                            a.decision,
                            a.result
                        ));
                    }
                }
            }
            Some(Label::Attack) => {
                r.attack.attempts += 1;
                if a.forwarded {
                    r.attack.forwarded += 1;
                } else {
                    r.attack.blocked += 1;
                }
                if succeeded {
                    r.attack.succeeded += 1;
                    self.compromised.insert(key);
                }
            }
            None => {}
        }
    }
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

struct Sampler {
    probe: Option<DirectoryProbe>,
    accounts: BTreeSet<String>,
    samples: Vec<Sample>,
    locked: BTreeSet<String>,
    max_bad: u32,
}

impl Sampler {
    async fn sample(&mut self, started: Instant, answered: u64) -> Result<(), LiveError> {
        let Some(probe) = &self.probe else {
            return Ok(());
        };
        let states = probe.read(&self.accounts).await?;
        let mut s = Sample {
            at_s: started.elapsed().as_secs_f64(),
            answered,
            ..Sample::default()
        };
        for (name, st) in &states {
            if st.lockout_time != 0 {
                s.accounts_locked += 1;
                self.locked.insert(name.clone());
            }
            s.max_bad_pwd_count = s.max_bad_pwd_count.max(st.bad_pwd_count);
        }
        self.max_bad = self.max_bad.max(s.max_bad_pwd_count);
        self.samples.push(s);
        Ok(())
    }
}

/// Sends `events` to `target` and scores them; see the module docs. `progress`, if given, is
/// advanced by one per answered attempt.
pub async fn run(
    events: &[TraceEvent],
    credentials: &Credentials,
    target: &Target,
    options: &LiveOptions,
    probe: Option<DirectoryProbe>,
    progress: Option<indicatif::ProgressBar>,
) -> Result<LiveReport, LiveError> {
    credentials.cover(events)?;
    let client = reqwest::Client::builder()
        .timeout(options.request_timeout)
        .pool_max_idle_per_host(options.concurrency.max(1))
        .build()
        .map_err(|e| LiveError::Client(e.to_string()))?;
    let mut sampler = Sampler {
        probe,
        accounts: events.iter().map(|e| account_name(&e.user)).collect(),
        samples: Vec::new(),
        locked: BTreeSet::new(),
        max_bad: 0,
    };
    let started = Instant::now();
    sampler.sample(started, 0).await?;
    let score = Arc::new(Mutex::new(Score::default()));
    let slots = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let events: Arc<Vec<TraceEvent>> = Arc::new(events.to_vec());
    let t0_ms = events.first().map_or(0, |e| e.ts_ms);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_sample = started + options.sample_every;
    for i in 0..events.len() {
        if let Some(speed) = options.speed.filter(|s| *s > 0.0) {
            let offset_ms = (events[i].ts_ms - t0_ms).max(0) as f64 / speed;
            let due = started + Duration::from_secs_f64(offset_ms / 1000.0);
            tokio::time::sleep_until(due.into()).await;
        }
        // Sampling waits for the slot loop, so a sample is never more than one request late.
        let permit = loop {
            if Instant::now() >= next_sample {
                let answered = score
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .report
                    .events;
                sampler.sample(started, answered).await?;
                next_sample = Instant::now() + options.sample_every;
            }
            let wait = next_sample.saturating_duration_since(Instant::now());
            match tokio::time::timeout(wait, slots.clone().acquire_owned()).await {
                Ok(p) => break p.expect("the semaphore is never closed"),
                Err(_) => continue,
            }
        };
        let (client, target, events, score, progress) = (
            client.clone(),
            target.clone(),
            events.clone(),
            score.clone(),
            progress.clone(),
        );
        let password = credentials
            .password(&events[i].pw)
            .expect("covered above")
            .to_string();
        tasks.spawn(async move {
            let ev = &events[i];
            let answer = send(&client, &target, i, ev, &password).await;
            score
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(i, ev, &answer);
            if let Some(pb) = progress {
                pb.inc(1);
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    loop {
        match tokio::time::timeout(
            next_sample.saturating_duration_since(Instant::now()),
            tasks.join_next(),
        )
        .await
        {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                let answered = score
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .report
                    .events;
                sampler.sample(started, answered).await?;
                next_sample = Instant::now() + options.sample_every;
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let mut score = std::mem::take(&mut *score.lock().unwrap_or_else(|e| e.into_inner()));
    sampler.sample(started, score.report.events).await?;
    let r = &mut score.report;
    r.legit.users_harmed = score.harmed.len() as u64;
    r.attack.accounts_compromised = score.compromised.len() as u64;
    r.directory.accounts_locked = sampler.locked.len() as u64;
    // Sampling sees each account's lockout, not each lockout: one event per locked account.
    r.directory.lockout_events = sampler.locked.len() as u64;
    r.directory.legit_users_locked = sampler
        .locked
        .iter()
        .filter(|a| score.legit_accounts.contains(*a))
        .count() as u64;
    r.wall_seconds = wall;
    r.events_per_second = r.events as f64 / wall.max(1e-9);
    score.latencies.sort();
    let live = LiveFigures {
        target: match target {
            Target::Service(_) => "service".into(),
            Target::Agent(_) => "agent".into(),
        },
        accounts: sampler.accounts.len() as u64,
        samples: sampler.samples,
        max_bad_pwd_count: sampler.max_bad,
        locked_accounts: sampler.locked.into_iter().collect(),
        results: score.results,
        harmed: score.harmed_detail,
        latency_ms_p50: percentile_ms(&score.latencies, 0.50),
        latency_ms_p99: percentile_ms(&score.latencies, 0.99),
    };
    Ok(LiveReport {
        report: score.report,
        live,
    })
}

/// Reads a whole trace into memory (live replays are small: they run in real time).
pub fn read_trace(path: &Path) -> Result<Vec<TraceEvent>, portcullis_engine::trace::TraceError> {
    portcullis_engine::trace::TraceReader::open(path)?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_credentials_and_keeps_spaces_in_passwords() {
        let c = Credentials::parse("# tokens\npw-a Right Pw 1\n\nspray1 Spring2026!\n").unwrap();
        assert_eq!(c.password("pw-a"), Some("Right Pw 1"));
        assert_eq!(c.password("spray1"), Some("Spring2026!"));
        assert!(Credentials::parse("lonely\n").is_err());
        assert!(!format!("{c:?}").contains("Spring"));
    }

    #[test]
    fn parses_ldbsearch_records() {
        let text = "# record 1\ndn: CN=u1,CN=Users,DC=X\nsAMAccountName: U1\nbadPwdCount: 3\nlockoutTime: 0\n\n# record 2\ndn: CN=u2,CN=Users,DC=X\nsAMAccountName: u2\nbadPwdCount: 5\nlockoutTime: 1343979136\n\n# record 3\ndn: CN=u3\nsAMAccountName: u3\n\n# returned 3 records\n";
        let m = parse_ldif_states(text);
        assert_eq!(
            m["u1"],
            AccountState {
                bad_pwd_count: 3,
                lockout_time: 0
            }
        );
        assert_eq!(m["u2"].lockout_time, 1_343_979_136);
        assert_eq!(m["u3"], AccountState::default());
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn names_accounts_as_the_directory_does() {
        assert_eq!(account_name(" Alice@PORTCULLIS.TEST "), "alice");
        assert_eq!(account_name("CORP\\Bob"), "bob");
        assert_eq!(account_name("carol"), "carol");
    }

    #[test]
    fn percentiles_pick_the_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&d, 0.5), 50.0);
        assert_eq!(percentile_ms(&d, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
