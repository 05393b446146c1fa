//! Replay: drive the engine over a trace against a simulated directory, and score it.
//!
//! The simulated directory is the on-premises Active Directory of `shared/trace-format.md`: per
//! account `badPwdCount`/`badPasswordTime` and lockout, configured from each tenant's
//! `[directory]` section, accounts matched after NFKC, trimming and lower-casing. Each attempt is
//! checked by the engine on the trace's own clock; a forwarded one reaches the directory, whose
//! answer goes back to the engine as the outcome. The `label` field is only ever read for scoring.
//!
//! A replayer built with [`Replayer::with_timeline`] also keeps a [`Timeline`]: counts per time
//! bucket (attempts by label and verdict, directory lockouts, and what the engine's outcomes did),
//! for charts. It never holds more than [`Timeline::MAX_BUCKETS`] buckets: when a trace runs
//! longer, neighbouring buckets are merged and the bucket width doubles.

use crate::clock::Timestamp;
use crate::decision::{Attempt, Outcome, Verdict};
use crate::engine::{Engine, Options, OutcomeEffects};
use crate::error::Result;
use crate::normalize::normalize_into;
use crate::policy::Policy;
use crate::state::DirectoryMirror;
use crate::trace::{EventRef, Label, TraceEvent, Truth};
use serde::Serialize;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hasher as _;

/// One account of a trace as replay counts it: a 128-bit SipHash of the tenant and the normalised
/// name under a fixed key, so that counting an attempt allocates nothing. Two accounts of one
/// trace share an id with a chance below 2^-64 for a billion accounts.
type AccountId = u128;

/// Maps and sets keyed by [`AccountId`] (already uniform: the cheapest hasher will do).
type IdMap<V> = HashMap<AccountId, V, foldhash::fast::RandomState>;
type IdSet = HashSet<AccountId, foldhash::fast::RandomState>;

fn account_id(tenant: &str, account: &str) -> AccountId {
    let mut h = SipHasher13::new_with_keys(0x7265_706c_6179, 0x0061_6363_6f75_6e74);
    // Tenant names cannot hold a NUL, so the separator keeps the pairs apart.
    h.write(tenant.as_bytes());
    h.write(&[0]);
    h.write(account.as_bytes());
    h.finish128().as_u128()
}

/// How many harmed attempts a report describes.
pub const HARM_EXAMPLES: usize = 20;

/// One legit right-password attempt that did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HarmExample {
    /// When (RFC 3339).
    pub ts: String,
    /// The sign-in name as typed.
    pub user: String,
    /// The source address.
    pub ip: String,
    /// The engine's reason, or `directory_locked` when the directory refused it.
    pub reason: String,
    /// How familiar the source was to the account.
    pub familiarity: String,
}

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
    /// The first legit right-password attempts that did not succeed (at most
    /// [`HARM_EXAMPLES`]), with why: what to look at when tuning a policy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub harm_examples: Vec<HarmExample>,
    /// With `replay --preload`: seconds of the replay alone (engine, simulated directory and
    /// scoring), the trace having been read into memory first (set by the caller).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_seconds: Option<f64>,
    /// With `replay --preload`: `events / engine_seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_events_per_second: Option<f64>,
    /// Counts per time bucket, when the replayer was built with [`Replayer::with_timeline`].
    /// Absent from the JSON when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

/// What happened during one time bucket of a replay. Unlabelled attempts count only in
/// `other_forwarded` / `other_blocked`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Legit attempts forwarded to the directory.
    pub legit_forwarded: u64,
    /// Legit attempts not forwarded.
    pub legit_blocked: u64,
    /// Attack attempts forwarded to the directory.
    pub attack_forwarded: u64,
    /// Attack attempts not forwarded.
    pub attack_blocked: u64,
    /// Unlabelled attempts forwarded.
    pub other_forwarded: u64,
    /// Unlabelled attempts not forwarded.
    pub other_blocked: u64,
    /// Lockouts the simulated directory started.
    pub directory_lockouts: u64,
    /// Smart lockouts the engine started ([`crate::engine::OutcomeEffects::lockout_started`]).
    pub lockouts_started: u64,
    /// Source blocks the engine started ([`crate::engine::OutcomeEffects::source_blocked`]).
    pub source_blocks: u64,
    /// Passwords newly detected as sprayed ([`crate::engine::OutcomeEffects::spray_detected`]).
    pub sprays_detected: u64,
    /// Accounts flagged for signing in with a sprayed password.
    pub accounts_flagged: u64,
}

impl Bucket {
    fn merge(&mut self, o: &Bucket) {
        self.legit_forwarded += o.legit_forwarded;
        self.legit_blocked += o.legit_blocked;
        self.attack_forwarded += o.attack_forwarded;
        self.attack_blocked += o.attack_blocked;
        self.other_forwarded += o.other_forwarded;
        self.other_blocked += o.other_blocked;
        self.directory_lockouts += o.directory_lockouts;
        self.lockouts_started += o.lockouts_started;
        self.source_blocks += o.source_blocks;
        self.sprays_detected += o.sprays_detected;
        self.accounts_flagged += o.accounts_flagged;
    }
}

/// Counts per time bucket of a replay, for charts.
///
/// Bucket `i` covers `[start_ms + i * bucket_ms, start_ms + (i + 1) * bucket_ms)` on the trace's
/// clock. `start_ms` is the first event's time rounded down to the requested bucket width, and
/// there is a bucket for every interval up to the last event's, empty ones included. Memory is
/// bounded: at most [`Timeline::MAX_BUCKETS`] buckets, the width doubling (pairs merged) when a
/// trace runs longer, so a week at one-minute buckets ends with 4-minute ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// Width of a bucket in milliseconds.
    pub bucket_ms: i64,
    /// Start of bucket 0, in milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// The buckets, in time order.
    pub buckets: Vec<Bucket>,
}

impl Timeline {
    /// Most buckets a timeline holds (a chart stays a few thousand points wide at most).
    pub const MAX_BUCKETS: usize = 4096;

    /// An empty timeline of buckets `bucket_ms` wide (at least 1 ms).
    pub fn new(bucket_ms: i64) -> Timeline {
        Timeline {
            bucket_ms: bucket_ms.max(1),
            start_ms: i64::MIN,
            buckets: Vec::new(),
        }
    }

    /// The bucket of an event at `ts_ms`, created (and the width doubled) as needed. An event
    /// earlier than the first one (not in a valid trace) counts in bucket 0.
    fn bucket(&mut self, ts_ms: i64) -> &mut Bucket {
        if self.buckets.is_empty() {
            self.start_ms = ts_ms.div_euclid(self.bucket_ms) * self.bucket_ms;
        }
        let offset = ts_ms.saturating_sub(self.start_ms).max(0);
        let mut i = (offset / self.bucket_ms) as usize;
        while i >= Self::MAX_BUCKETS {
            self.coarsen();
            i = (offset / self.bucket_ms) as usize;
        }
        if i >= self.buckets.len() {
            self.buckets.resize(i + 1, Bucket::default());
        }
        &mut self.buckets[i]
    }

    /// Doubles the bucket width by merging neighbouring pairs.
    fn coarsen(&mut self) {
        let merged = self
            .buckets
            .chunks(2)
            .map(|pair| {
                let mut b = pair[0].clone();
                if let Some(second) = pair.get(1) {
                    b.merge(second);
                }
                b
            })
            .collect();
        self.buckets = merged;
        self.bucket_ms = self.bucket_ms.saturating_mul(2);
    }

    /// The sum of every bucket.
    pub fn total(&self) -> Bucket {
        let mut t = Bucket::default();
        for b in &self.buckets {
            t.merge(b);
        }
        t
    }
}

/// The simulated on-premises directory.
#[derive(Default)]
pub struct SimDirectory {
    accounts: IdMap<DirectoryMirror>,
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
        self.answer_id(policy, tenant, account_id(tenant, account), truth, now)
    }

    /// [`SimDirectory::answer`] for an account known by its id.
    fn answer_id(
        &mut self,
        policy: &Policy,
        tenant: &str,
        account: AccountId,
        truth: Truth,
        now: i64,
    ) -> (Outcome, bool) {
        if truth == Truth::UnknownUser {
            return (Outcome::UnknownUser, false);
        }
        let d = &policy.for_tenant(tenant).directory;
        let m = self.accounts.entry(account).or_default();
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
    harmed: IdSet,
    compromised: IdSet,
    locked: IdSet,
    legit_accounts: IdSet,
    /// Decisions by reason (`forward` for none); moved into the report by `finish`.
    decisions: HashMap<&'static str, u64, foldhash::fast::RandomState>,
    /// The event's normalised name (reused, so that no event allocates one).
    name: String,
    last_maintain: i64,
    since_maintain: u64,
    timeline: Option<Timeline>,
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
            harmed: IdSet::default(),
            compromised: IdSet::default(),
            locked: IdSet::default(),
            legit_accounts: IdSet::default(),
            decisions: HashMap::default(),
            name: String::new(),
            last_maintain: i64::MIN,
            since_maintain: 0,
            timeline: None,
        })
    }

    /// A replayer that also keeps a [`Timeline`] of buckets `bucket_ms` wide (widened as needed
    /// to stay under [`Timeline::MAX_BUCKETS`]), returned in [`Report::timeline`].
    ///
    /// # Examples
    /// ```
    /// use portcullis_engine::policy::Policy;
    /// use portcullis_engine::replay::Replayer;
    /// let r = Replayer::with_timeline(Policy::default(), 60_000).unwrap();
    /// let report = r.finish();
    /// assert_eq!(report.timeline.unwrap().bucket_ms, 60_000);
    /// ```
    pub fn with_timeline(policy: Policy, bucket_ms: i64) -> Result<Replayer> {
        let mut r = Replayer::new(policy)?;
        r.timeline = Some(Timeline::new(bucket_ms));
        Ok(r)
    }

    /// The engine being replayed into.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Replays one event.
    pub fn feed(&mut self, ev: &TraceEvent) {
        self.feed_ref(ev.as_ref());
    }

    /// Replays one event given by reference ([`crate::trace::EventChunk::iter`]).
    pub fn feed_ref(&mut self, ev: EventRef<'_>) {
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
        // A name that does not normalise names no account: the engine refuses it too.
        let named = normalize_into(ev.user, &mut self.name).is_ok();
        let key = account_id(ev.tenant, if named { &self.name } else { "" });
        if legit {
            self.report.legit.attempts += 1;
            self.legit_accounts.insert(key);
        } else if attack {
            self.report.attack.attempts += 1;
        }
        let attempt = Attempt {
            tenant: ev.tenant,
            user: ev.user,
            ip: ev.ip,
            fingerprint: Some(ev.pw.as_bytes()),
        };
        let decision = self.engine.check(&attempt, Timestamp::from_millis(now));
        let (forwarded, id) = match &decision {
            Ok(d) => {
                let label = d.reason.map_or("forward", |r| r.as_str());
                *self.decisions.entry(label).or_default() += 1;
                (d.verdict == Verdict::Forward, d.attempt_id)
            }
            Err(_) => {
                *self.decisions.entry("invalid_input").or_default() += 1;
                (false, None)
            }
        };
        let mut succeeded = false;
        let mut locked_now = false;
        let mut fx = OutcomeEffects::default();
        if forwarded && named {
            let outcome;
            (outcome, locked_now) = self
                .dir
                .answer_id(&self.policy, ev.tenant, key, ev.truth, now);
            succeeded = outcome == Outcome::Success;
            if locked_now {
                self.report.directory.lockout_events += 1;
                self.locked.insert(key);
            }
            if let Some(id) = id {
                // The id was just issued by this engine, so the outcome cannot be refused.
                fx = self
                    .engine
                    .outcome(id, outcome, None, Timestamp::from_millis(now))
                    .unwrap_or_default();
                if fx.account_flagged {
                    self.report.accounts_flagged += 1;
                }
            }
        }
        if let Some(t) = &mut self.timeline {
            let b = t.bucket(now);
            match (legit, attack, forwarded) {
                (true, _, true) => b.legit_forwarded += 1,
                (true, _, false) => b.legit_blocked += 1,
                (_, true, true) => b.attack_forwarded += 1,
                (_, true, false) => b.attack_blocked += 1,
                (_, _, true) => b.other_forwarded += 1,
                (_, _, false) => b.other_blocked += 1,
            }
            b.directory_lockouts += u64::from(locked_now);
            b.lockouts_started += u64::from(fx.lockout_started);
            b.source_blocks += u64::from(fx.source_blocked);
            b.sprays_detected += u64::from(fx.spray_detected);
            b.accounts_flagged += u64::from(fx.account_flagged);
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
                if self.report.harm_examples.len() < HARM_EXAMPLES {
                    let (reason, familiarity) = match &decision {
                        Ok(d) => (
                            d.reason
                                .map_or("directory_locked", |r| r.as_str())
                                .to_string(),
                            format!("{:?}", d.familiarity).to_lowercase(),
                        ),
                        Err(_) => ("invalid_input".to_string(), "unfamiliar".to_string()),
                    };
                    self.report.harm_examples.push(HarmExample {
                        ts: crate::trace::format_rfc3339_ms(now),
                        user: ev.user.to_owned(),
                        ip: ev.ip.to_string(),
                        reason,
                        familiarity,
                    });
                }
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
        self.report.timeline = self.timeline;
        for (label, n) in self.decisions {
            *self.report.decisions.entry(label.to_string()).or_default() += n;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{generate, Scenario, SynthConfig};

    #[test]
    fn timeline_totals_match_the_report() {
        let events = generate(&SynthConfig {
            scenario: Scenario::MixedWeek,
            seed: 3,
            users: 100,
        });
        let mut r = Replayer::with_timeline(Policy::default(), 60_000).expect("replayer");
        for ev in &events {
            r.feed(ev);
        }
        let report = r.finish();
        let t = report.timeline.as_ref().expect("a timeline");
        assert!(
            t.buckets.len() <= Timeline::MAX_BUCKETS,
            "{}",
            t.buckets.len()
        );
        // A week of one-minute buckets (10,080) is coarsened twice, to four minutes.
        assert_eq!(t.bucket_ms, 240_000);
        let sum = t.total();
        assert_eq!(sum.legit_forwarded, report.legit.forwarded);
        assert_eq!(sum.legit_blocked, report.legit.blocked);
        assert_eq!(sum.attack_forwarded, report.attack.forwarded);
        assert_eq!(sum.attack_blocked, report.attack.blocked);
        assert_eq!(sum.directory_lockouts, report.directory.lockout_events);
        assert_eq!(sum.accounts_flagged, report.accounts_flagged);
        let all = sum.legit_forwarded
            + sum.legit_blocked
            + sum.attack_forwarded
            + sum.attack_blocked
            + sum.other_forwarded
            + sum.other_blocked;
        assert_eq!(all, report.events);
        assert!(sum.lockouts_started + sum.source_blocks + sum.sprays_detected > 0);
        let first = events.first().expect("events").ts_ms;
        assert!(t.start_ms <= first && first < t.start_ms + t.bucket_ms);
    }

    #[test]
    fn timeline_coarsens_by_merging_pairs() {
        let mut t = Timeline::new(10);
        for ts in [0, 5, 10, 25] {
            t.bucket(ts).legit_forwarded += 1;
        }
        assert_eq!(t.buckets.len(), 3);
        t.coarsen();
        assert_eq!(t.bucket_ms, 20);
        let counts: Vec<u64> = t.buckets.iter().map(|b| b.legit_forwarded).collect();
        assert_eq!(counts, vec![3, 1]);
        // Far beyond MAX_BUCKETS buckets of 20 ms: widened until it fits.
        t.bucket(20 * Timeline::MAX_BUCKETS as i64 * 3)
            .attack_blocked += 1;
        assert!(t.buckets.len() <= Timeline::MAX_BUCKETS);
        assert_eq!(t.bucket_ms, 80);
        assert_eq!(t.total().legit_forwarded, 4);
        assert_eq!(t.total().attack_blocked, 1);
    }

    #[test]
    fn report_json_has_no_timeline_without_one() {
        let report = replay(Policy::default(), std::iter::empty()).expect("replay");
        let json = serde_json::to_value(&report).expect("json");
        assert!(json.get("timeline").is_none(), "{json}");
    }
}
