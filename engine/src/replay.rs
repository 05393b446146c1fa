//! Replay: drive the engine over a trace against a simulated directory, and score it.
//!
//! The simulated directory is the on-premises Active Directory of `shared/trace-format.md`: per
//! account `badPwdCount`/`badPasswordTime` and lockout, configured from each tenant's
//! `[directory]` section, accounts matched after NFKC, trimming and lower-casing. Each attempt is
//! checked by the engine on the trace's own clock; a forwarded one reaches the directory, whose
//! answer goes back to the engine as the outcome. The `label` field is only ever read for scoring.

use crate::clock::Timestamp;
use crate::decision::{Attempt, Outcome, Verdict};
use crate::engine::{Engine, Options};
use crate::error::Result;
use crate::normalize::normalize;
use crate::policy::Policy;
use crate::state::DirectoryMirror;
use crate::trace::{Label, TraceEvent, Truth};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Scores of legitimate traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LegitScore {
    /// Legit attempts.
    pub attempts: u64,
    /// Forwarded to the directory.
    pub forwarded: u64,
    /// Not forwarded (`wrong_password` answers included).
    pub blocked: u64,
    /// Forwarded, right password, account not locked.
    pub succeeded: u64,
    /// Right-password attempts that did not succeed.
    pub harmed: u64,
    /// Distinct users harmed.
    pub users_harmed: u64,
}

/// Scores of attack traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AttackScore {
    /// Attack attempts.
    pub attempts: u64,
    /// Forwarded to the directory.
    pub forwarded: u64,
    /// Not forwarded.
    pub blocked: u64,
    /// Attack attempts that signed in.
    pub succeeded: u64,
    /// Distinct accounts an attacker signed in to.
    pub accounts_compromised: u64,
}

/// What happened in the simulated directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirectoryScore {
    /// Lockouts the directory started.
    pub lockout_events: u64,
    /// Distinct accounts the directory locked.
    pub accounts_locked: u64,
    /// Of those, accounts with legit traffic in the trace.
    pub legit_users_locked: u64,
}

/// The replay report, as written to `--report FILE.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Events replayed.
    pub events: u64,
    /// Legit traffic.
    pub legit: LegitScore,
    /// Attack traffic.
    pub attack: AttackScore,
    /// The simulated directory.
    pub directory: DirectoryScore,
    /// Decisions by reason (`forward` for forwarded attempts).
    pub decisions: BTreeMap<String, u64>,
    /// Accounts flagged for signing in with a sprayed password.
    pub accounts_flagged: u64,
    /// Wall-clock seconds of the whole replay (set by the caller).
    pub wall_seconds: f64,
    /// `events / wall_seconds`.
    pub events_per_second: f64,
}

/// The simulated on-premises directory.
#[derive(Default)]
pub struct SimDirectory {
    accounts: HashMap<(String, String), DirectoryMirror>,
}

impl SimDirectory {
    /// The directory answers one forwarded attempt at `now` under `tenant`'s directory policy.
    pub fn answer(
        &mut self,
        policy: &Policy,
        tenant: &str,
        account: &str,
        truth: Truth,
        now: i64,
    ) -> (Outcome, bool) {
        if truth == Truth::UnknownUser {
            return (Outcome::UnknownUser, false);
        }
        let d = &policy.for_tenant(tenant).directory;
        let m = self
            .accounts
            .entry((tenant.to_string(), account.to_string()))
            .or_default();
        if m.is_locked(now) {
            return (Outcome::Locked, false);
        }
        match truth {
            Truth::Correct => {
                m.record_success(now);
                (Outcome::Success, false)
            }
            _ => {
                let locked = m.record_bad(
                    now,
                    d.observation_window.ms(),
                    d.lockout_threshold,
                    d.lockout_duration.ms(),
                );
                (Outcome::WrongPassword, locked)
            }
        }
    }
}

/// Replays events one by one and keeps the score.
pub struct Replayer {
    engine: Engine,
    policy: Policy,
    dir: SimDirectory,
    report: Report,
    harmed: HashSet<(String, String)>,
    compromised: HashSet<(String, String)>,
    locked: HashSet<(String, String)>,
    legit_accounts: HashSet<(String, String)>,
    last_maintain: i64,
    since_maintain: u64,
}

impl Replayer {
    /// A replayer with an in-memory engine under `policy`.
    pub fn new(policy: Policy) -> Result<Replayer> {
        let engine = Engine::new(
            policy.clone(),
            Options::in_memory(*b"portcullis-replay-secret-key-32b"),
        )?;
        Ok(Replayer {
            engine,
            policy,
            dir: SimDirectory::default(),
            report: Report::default(),
            harmed: HashSet::new(),
            compromised: HashSet::new(),
            locked: HashSet::new(),
            legit_accounts: HashSet::new(),
            last_maintain: i64::MIN,
            since_maintain: 0,
        })
    }

    /// The engine being replayed into.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Replays one event.
    pub fn feed(&mut self, ev: &TraceEvent) {
        let now = ev.ts_ms;
        // Housekeeping walks every entry: run it every 20,000 events, or every trace hour once
        // 2,000 events have passed, so that it bounds memory without dominating the replay.
        self.since_maintain += 1;
        if self.since_maintain >= 20_000
            || (self.since_maintain >= 2_000 && now.saturating_sub(self.last_maintain) >= 3_600_000)
        {
            self.engine.maintain(Timestamp::from_millis(now));
            self.last_maintain = now;
            self.since_maintain = 0;
        }
        self.report.events += 1;
        let legit = ev.label == Some(Label::Legit);
        let attack = ev.label == Some(Label::Attack);
        let account = normalize(&ev.user).unwrap_or_default();
        let key = (ev.tenant.clone(), account.clone());
        if legit {
            self.report.legit.attempts += 1;
            self.legit_accounts.insert(key.clone());
        } else if attack {
            self.report.attack.attempts += 1;
        }
        let attempt = Attempt {
            tenant: &ev.tenant,
            user: &ev.user,
            ip: ev.ip,
            fingerprint: Some(ev.pw.as_bytes()),
        };
        let decision = self.engine.check(&attempt, Timestamp::from_millis(now));
        let (forwarded, id) = match &decision {
            Ok(d) => {
                let label = d.reason.map_or("forward", |r| r.as_str());
                *self.report.decisions.entry(label.to_string()).or_default() += 1;
                (d.verdict == Verdict::Forward, d.attempt_id)
            }
            Err(_) => {
                *self
                    .report
                    .decisions
                    .entry("invalid_input".to_string())
                    .or_default() += 1;
                (false, None)
            }
        };
        let mut succeeded = false;
        if forwarded && !account.is_empty() {
            let (outcome, locked_now) =
                self.dir
                    .answer(&self.policy, &ev.tenant, &account, ev.truth, now);
            succeeded = outcome == Outcome::Success;
            if locked_now {
                self.report.directory.lockout_events += 1;
                self.locked.insert(key.clone());
            }
            if let Some(id) = id {
                // The id was just issued by this engine, so the outcome cannot be refused.
                let fx = self
                    .engine
                    .outcome(id, outcome, None, Timestamp::from_millis(now));
                if fx.is_ok_and(|f| f.account_flagged) {
                    self.report.accounts_flagged += 1;
                }
            }
        }
        if legit {
            if forwarded {
                self.report.legit.forwarded += 1;
            } else {
                self.report.legit.blocked += 1;
            }
            if succeeded {
                self.report.legit.succeeded += 1;
            } else if ev.truth == Truth::Correct {
                self.report.legit.harmed += 1;
                self.harmed.insert(key);
            }
        } else if attack {
            if forwarded {
                self.report.attack.forwarded += 1;
            } else {
                self.report.attack.blocked += 1;
            }
            if succeeded {
                self.report.attack.succeeded += 1;
                self.compromised.insert(key);
            }
        }
    }

    /// The final report (wall-clock fields are the caller's to set).
    pub fn finish(mut self) -> Report {
        self.report.legit.users_harmed = self.harmed.len() as u64;
        self.report.attack.accounts_compromised = self.compromised.len() as u64;
        self.report.directory.accounts_locked = self.locked.len() as u64;
        self.report.directory.legit_users_locked =
            self.locked.intersection(&self.legit_accounts).count() as u64;
        self.report
    }
}

/// Replays a whole sequence of events under `policy`.
pub fn replay<'a>(
    policy: Policy,
    events: impl IntoIterator<Item = &'a TraceEvent>,
) -> Result<Report> {
    let mut r = Replayer::new(policy)?;
    for ev in events {
        r.feed(ev);
    }
    Ok(r.finish())
}
