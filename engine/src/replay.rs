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
use crate::decision::{Attempt, Outcome, Reason, Verdict};
use crate::engine::{Engine, Options, OutcomeEffects, PreparedKeys, Preparer};
use crate::error::Result;
use crate::policy::{DirectoryPolicy, Policy};
use crate::state::DirectoryMirror;
use crate::trace::{EventChunk, EventRef, Label, TraceError, TraceEvent, TraceReader, Truth};
use serde::Serialize;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher as _;
use std::ops::Range;

/// One account of a trace as replay counts it, 128 bits, so that counting an attempt allocates
/// nothing: the replayer uses the engine's account key (a keyed hash of tenant and normalised
/// name), and [`SimDirectory::answer`] and names that do not normalise use [`account_id`]. Two
/// accounts of one trace share an id with a chance below 2^-64 for a billion accounts.
type AccountId = u128;

/// Maps keyed by [`AccountId`] (already uniform: the cheapest hasher will do).
type IdMap<V> = HashMap<AccountId, V, foldhash::fast::RandomState>;

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
            // Before the entry: an unknown user has no record.
            return (Outcome::UnknownUser, false);
        }
        let d = &policy.for_tenant(tenant).directory;
        directory_answer(self.accounts.entry(account).or_default(), d, truth, now)
    }
}

/// The directory answers one forwarded attempt on the account whose record is `m`: whether the
/// attempt signs in, and whether it locked the account.
fn directory_answer(
    m: &mut DirectoryMirror,
    d: &DirectoryPolicy,
    truth: Truth,
    now: i64,
) -> (Outcome, bool) {
    if truth == Truth::UnknownUser {
        return (Outcome::UnknownUser, false);
    }
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

/// What replay keeps per account: the simulated directory's record of it and scoring marks.
#[derive(Default)]
struct Scored {
    dir: DirectoryMirror,
    /// [`LEGIT`], [`HARMED`], [`COMPROMISED`], [`LOCKED`].
    marks: u8,
}

/// The account had legit traffic.
const LEGIT: u8 = 1;
/// A legit right-password attempt on it did not succeed.
const HARMED: u8 = 2;
/// An attacker signed in to it.
const COMPROMISED: u8 = 4;
/// The directory locked it.
const LOCKED: u8 = 8;

/// Slots of [`Replayer::decisions`]: one per [`Reason`] (`reason as usize`), then these two.
const FORWARD: usize = Reason::ALL.len();
const INVALID_INPUT: usize = Reason::ALL.len() + 1;

/// Events read ahead with the engine's stateless work on them done ([`ChunkReader`]): each
/// event's normalised name and keyed hashes, for [`Replayer::feed_chunk`]. Cleared and reused, a
/// chunk allocates nothing per event.
#[derive(Debug, Default)]
pub struct PreparedChunk {
    events: EventChunk,
    /// The normalised names, one after another.
    names: String,
    /// Per event: its normalised name in `names`, and its keys (`None` when the name does not
    /// normalise).
    prepared: Vec<(Range<usize>, Option<PreparedKeys>)>,
}

impl PreparedChunk {
    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Drops every event, keeping the buffers.
    pub fn clear(&mut self) {
        self.events.clear();
        self.names.clear();
        self.prepared.clear();
    }
}

/// Reads a trace into [`PreparedChunk`]s, preparing each event with a replayer's engine keys
/// ([`Replayer::chunk_reader`]). Meant for a reader thread ahead of the replayer's.
pub struct ChunkReader {
    reader: TraceReader,
    preparer: Preparer,
    name: String,
}

impl ChunkReader {
    /// Clears `chunk` and reads up to `max` events into it, prepared; returns how many, 0 at the
    /// end of the trace. On an error the events before it stay in the chunk (prepared), as
    /// [`TraceReader::read_chunk`] leaves them.
    pub fn read(&mut self, chunk: &mut PreparedChunk, max: usize) -> Result<usize, TraceError> {
        chunk.clear();
        let (preparer, name) = (&mut self.preparer, &mut self.name);
        let (names, prepared) = (&mut chunk.names, &mut chunk.prepared);
        self.reader.read_chunk_with(&mut chunk.events, max, |ev| {
            let keys = preparer
                .prepare(ev.tenant, ev.user, Some(ev.pw.as_bytes()), name)
                .ok();
            let start = names.len();
            names.push_str(name);
            prepared.push((start..names.len(), keys));
        })
    }

    /// The trace reader (for its progress).
    pub fn trace(&self) -> &TraceReader {
        &self.reader
    }
}

/// Replays events one by one and keeps the score.
pub struct Replayer {
    engine: Engine,
    policy: Policy,
    /// Every account seen, by id: the simulated directory and the scoring marks.
    accounts: IdMap<Scored>,
    report: Report,
    /// Decisions by reason, forwarded and invalid ([`FORWARD`], [`INVALID_INPUT`]); added to
    /// the report by `finish`.
    decisions: [u64; Reason::ALL.len() + 2],
    /// The engine's keys, to prepare events fed one by one.
    preparer: Preparer,
    /// The event's normalised name (reused, so that no event allocates one).
    name: String,
    last_maintain: i64,
    since_maintain: u64,
    /// Events after which housekeeping may run again (in a new trace hour).
    maintain_after: u64,
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
            preparer: engine.preparer(),
            engine,
            policy,
            accounts: IdMap::default(),
            report: Report::default(),
            decisions: [0; Reason::ALL.len() + 2],
            name: String::new(),
            last_maintain: i64::MIN,
            since_maintain: 0,
            maintain_after: 2_000,
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
        let mut name = std::mem::take(&mut self.name);
        let prepared = self
            .preparer
            .prepare(ev.tenant, ev.user, Some(ev.pw.as_bytes()), &mut name)
            .ok();
        self.feed_prepared(ev, prepared.map(|k| (k, name.as_str())));
        self.name = name;
    }

    /// A reader of `reader`'s events into [`PreparedChunk`]s for [`Replayer::feed_chunk`], to
    /// run on another thread: it does the engine's stateless work (normalising, hashing) ahead.
    pub fn chunk_reader(&self, reader: TraceReader) -> ChunkReader {
        ChunkReader {
            reader,
            preparer: self.engine.preparer(),
            name: String::new(),
        }
    }

    /// Replays a chunk's events in order, as [`Replayer::feed`] would one by one.
    pub fn feed_chunk(&mut self, chunk: &PreparedChunk) {
        for (ev, (name, keys)) in chunk.events.iter().zip(&chunk.prepared) {
            let name = chunk.names.get(name.clone()).unwrap_or_default();
            self.feed_prepared(ev, keys.map(|k| (k, name)));
        }
    }

    /// Replays one event whose name was normalised into `prepared`'s name and hashed with this
    /// replayer's engine's keys; `None` when the name does not normalise.
    fn feed_prepared(&mut self, ev: EventRef<'_>, prepared: Option<(PreparedKeys, &str)>) {
        let now = ev.ts_ms;
        // Housekeeping walks every entry: run it every 20,000 events, or every trace hour once
        // as many events have passed as there were entries at the last run (at least 2,000), so
        // that it bounds memory at a cost per event that does not grow with the state.
        self.since_maintain += 1;
        if self.since_maintain >= 20_000
            || (self.since_maintain >= self.maintain_after
                && now.saturating_sub(self.last_maintain) >= 3_600_000)
        {
            self.engine.maintain(Timestamp::from_millis(now));
            self.last_maintain = now;
            self.since_maintain = 0;
            let s = self.engine.stats();
            self.maintain_after = (s.accounts + s.sources + s.sprays).max(2_000) as u64;
        }
        self.report.events += 1;
        let legit = ev.label == Some(Label::Legit);
        let attack = ev.label == Some(Label::Attack);
        // A name that does not normalise names no account: the engine refuses it too. A named
        // account is counted by its engine key, unique per tenant and normalised name.
        let named = prepared.is_some();
        let key = match prepared {
            Some((k, _)) => k.account(),
            None => account_id(ev.tenant, ""),
        };
        let acct = self.accounts.entry(key).or_default();
        if legit {
            self.report.legit.attempts += 1;
            acct.marks |= LEGIT;
        } else if attack {
            self.report.attack.attempts += 1;
        }
        let decision = match prepared {
            Some((keys, name)) => self.engine.check_prepared(
                ev.tenant,
                name,
                ev.ip,
                keys,
                Timestamp::from_millis(now),
            ),
            // The engine refuses the name (or the tenant) as it would unprepared.
            None => self.engine.check(
                &Attempt {
                    tenant: ev.tenant,
                    user: ev.user,
                    ip: ev.ip,
                    fingerprint: Some(ev.pw.as_bytes()),
                },
                Timestamp::from_millis(now),
            ),
        };
        let (forwarded, id) = match &decision {
            Ok(d) => {
                self.decisions[d.reason.map_or(FORWARD, |r| r as usize)] += 1;
                (d.verdict == Verdict::Forward, d.attempt_id)
            }
            Err(_) => {
                self.decisions[INVALID_INPUT] += 1;
                (false, None)
            }
        };
        let mut succeeded = false;
        let mut locked_now = false;
        let mut fx = OutcomeEffects::default();
        if forwarded && named {
            let outcome;
            let d = &self.policy.for_tenant(ev.tenant).directory;
            (outcome, locked_now) = directory_answer(&mut acct.dir, d, ev.truth, now);
            succeeded = outcome == Outcome::Success;
            if locked_now {
                self.report.directory.lockout_events += 1;
                acct.marks |= LOCKED;
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
                acct.marks |= HARMED;
            }
        } else if attack {
            if forwarded {
                self.report.attack.forwarded += 1;
            } else {
                self.report.attack.blocked += 1;
            }
            if succeeded {
                self.report.attack.succeeded += 1;
                acct.marks |= COMPROMISED;
            }
        }
    }

    /// The final report (wall-clock fields are the caller's to set).
    pub fn finish(mut self) -> Report {
        let marked = |m: u8| self.accounts.values().filter(|a| a.marks & m == m).count() as u64;
        self.report.legit.users_harmed = marked(HARMED);
        self.report.attack.accounts_compromised = marked(COMPROMISED);
        self.report.directory.accounts_locked = marked(LOCKED);
        self.report.directory.legit_users_locked = marked(LOCKED | LEGIT);
        self.report.timeline = self.timeline;
        let labels = Reason::ALL
            .iter()
            .map(|&r| (r as usize, r.as_str()))
            .chain([(FORWARD, "forward"), (INVALID_INPUT, "invalid_input")]);
        for (at, label) in labels {
            if self.decisions[at] > 0 {
                *self.report.decisions.entry(label.to_string()).or_default() += self.decisions[at];
            }
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

    fn ev(ts_ms: i64, user: &str, ip: &str, pw: &str, truth: Truth, label: Label) -> TraceEvent {
        TraceEvent {
            ts_ms,
            tenant: "acme".into(),
            user: user.into(),
            ip: ip.parse().expect("ip"),
            pw: pw.into(),
            truth,
            label: Some(label),
            app: None,
        }
    }

    #[test]
    fn the_report_counts_each_account_once_per_mark() {
        // Everything reaches the directory: an attacker locks ann there (twice over two
        // windows), ann is then harmed; the attacker signs in to bob; carl is a legit user the
        // directory never locks; dora is locked but has no legit traffic.
        let policy = Policy::from_toml("[defaults]\nmode = \"log_only\"\n").expect("policy");
        let mut r = Replayer::new(policy).expect("replayer");
        let mut t = 1_793_577_600_000;
        let mut tick = |gap: i64| {
            t += gap;
            t
        };
        for round in 0..2 {
            for i in 0..10 {
                let pw = format!("guess{round}-{i}");
                for user in ["ann", "dora"] {
                    let e = ev(
                        tick(1_000),
                        user,
                        "198.51.100.7",
                        &pw,
                        Truth::Wrong,
                        Label::Attack,
                    );
                    r.feed(&e);
                }
            }
            r.feed(&ev(
                tick(1_000),
                "Ann ",
                "192.0.2.1",
                "ann-pw",
                Truth::Correct,
                Label::Legit,
            ));
            tick(2 * 3_600_000);
        }
        r.feed(&ev(
            tick(1_000),
            "bob",
            "198.51.100.7",
            "bob-pw",
            Truth::Correct,
            Label::Attack,
        ));
        r.feed(&ev(
            tick(1_000),
            "carl",
            "192.0.2.2",
            "carl-pw",
            Truth::Correct,
            Label::Legit,
        ));
        r.feed(&ev(
            tick(1_000),
            "   ",
            "192.0.2.2",
            "x",
            Truth::Correct,
            Label::Legit,
        ));
        let report = r.finish();
        assert_eq!(report.events, 45);
        assert_eq!(
            report.directory.lockout_events, 4,
            "ann and dora, in each round"
        );
        assert_eq!(report.directory.accounts_locked, 2);
        assert_eq!(report.directory.legit_users_locked, 1, "ann, not dora");
        assert_eq!(
            report.legit.harmed, 3,
            "ann twice, and the nameless attempt"
        );
        assert_eq!(report.legit.users_harmed, 2);
        assert_eq!(report.legit.succeeded, 1, "carl");
        assert_eq!(report.attack.succeeded, 1);
        assert_eq!(report.attack.accounts_compromised, 1);
        // Under log_only every attempt is forwarded, counted by the reason it was assessed for.
        assert_eq!(report.legit.forwarded + report.attack.forwarded, 44);
        assert_eq!(report.decisions.get("invalid_input"), Some(&1));
        assert_eq!(
            report.decisions.values().sum::<u64>(),
            45,
            "{:?}",
            report.decisions
        );
        assert_eq!(report.harm_examples.len(), 3);
    }

    #[test]
    fn replaying_chunks_read_ahead_gives_the_report_of_replaying_event_by_event() {
        let mut events = generate(&SynthConfig {
            scenario: Scenario::MixedWeek,
            seed: 5,
            users: 60,
        });
        // Names the engine refuses, and a second tenant, among them.
        let at = events.len() / 2;
        let mut odd = events[at].clone();
        odd.user = " \u{3000} ".into();
        events.insert(at, odd.clone());
        odd.user = "Zoë@Example.com".into();
        odd.tenant = "other".into();
        events.insert(at, odd);
        let text: String = events
            .iter()
            .map(|e| crate::trace::to_json_line(e) + "\n")
            .collect();

        let mut one_by_one = Replayer::new(Policy::default()).expect("replayer");
        for e in &events {
            one_by_one.feed(e);
        }
        let want = one_by_one.finish();
        assert_eq!(want.decisions.get("invalid_input"), Some(&1));

        let mut chunked = Replayer::new(Policy::default()).expect("replayer");
        let mut reader = chunked.chunk_reader(TraceReader::from_reader(std::io::Cursor::new(text)));
        let mut chunk = PreparedChunk::default();
        let mut seen = 0;
        while reader.read(&mut chunk, 7).expect("a good trace") > 0 {
            seen += chunk.len();
            chunked.feed_chunk(&chunk);
        }
        assert_eq!(seen, events.len());
        assert_eq!(chunked.finish(), want);
    }

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
