//! Shared workloads for the criterion benches in `benches/` (run `cargo bench -p portcullis-benches`).
//!
//! - [`Workload`]: a synthesized trace, built once, replayed attempt by attempt with time moving
//!   forward across passes ([`Cursor`]).
//! - [`outcome_for`]: what the directory answers a forwarded attempt, from the event's truth.
//! - [`NaiveLockout`]: the naive baseline, a `Mutex<HashMap<String, Vec<i64>>>` failure counter.

use portcullis_engine::synth::{self, Scenario, SynthConfig};
use portcullis_engine::trace::{TraceEvent, Truth};
use portcullis_engine::{Attempt, Engine, Outcome, Policy, Timestamp};
use std::collections::HashMap;
use std::sync::Mutex;

/// One week in milliseconds: each pass over a trace starts a whole number of weeks later.
pub const WEEK_MS: i64 = 7 * 24 * 3_600_000;

/// The synthetic seed the benches use.
pub const SEED: u64 = 20_261;

/// The repository's default policy (`policies/default.toml`), as the `replay` command uses it.
pub fn default_policy() -> Policy {
    Policy::from_toml(include_str!("../../policies/default.toml"))
        .expect("policies/default.toml is valid")
}

/// A synthesized `scenario` trace for a tenant of `users` accounts.
pub fn trace(scenario: Scenario, users: usize) -> Vec<TraceEvent> {
    synth::generate(&SynthConfig {
        scenario,
        seed: SEED,
        users,
    })
}

/// What the directory answers a forwarded attempt, from the event's ground truth.
pub fn outcome_for(truth: Truth) -> Outcome {
    match truth {
        Truth::Correct => Outcome::Success,
        Truth::Wrong => Outcome::WrongPassword,
        Truth::UnknownUser => Outcome::UnknownUser,
    }
}

/// A trace to replay attempt by attempt, any number of times.
pub struct Workload {
    /// The events, sorted by time.
    pub events: Vec<TraceEvent>,
    /// The first event's time.
    pub t0: i64,
    /// How far apart two passes start: the trace's span rounded up to whole weeks, so that each
    /// pass keeps the weekdays and hours of the first.
    pub period: i64,
}

impl Workload {
    /// A workload over `events` (sorted by time, not empty).
    pub fn new(events: Vec<TraceEvent>) -> Workload {
        assert!(!events.is_empty(), "empty workload");
        let t0 = events[0].ts_ms;
        let span = events[events.len() - 1].ts_ms - t0 + 1;
        let period = (span + WEEK_MS - 1) / WEEK_MS * WEEK_MS;
        Workload { events, t0, period }
    }

    /// The `mixed_week` trace for `users` accounts.
    pub fn mixed_week(users: usize) -> Workload {
        Workload::new(trace(Scenario::MixedWeek, users))
    }

    /// The events whose index satisfies `keep`, as their own workload with the same `t0` and
    /// `period`, so that the shards of one trace stay on one timeline.
    pub fn shard(&self, keep: impl Fn(usize) -> bool) -> Workload {
        let events: Vec<TraceEvent> = self
            .events
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, e)| e.clone())
            .collect();
        assert!(!events.is_empty(), "empty shard");
        Workload {
            events,
            t0: self.t0,
            period: self.period,
        }
    }

    /// A cursor at the start of the first pass.
    pub fn cursor(&self) -> Cursor {
        Cursor { pos: 0, base: 0 }
    }
}

/// A position in a [`Workload`] that wraps around, each pass one period later than the last, so
/// that time only moves forward however many attempts a bench asks for.
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    pos: usize,
    base: i64,
}

impl Cursor {
    /// The time of the event [`Cursor::next`] returns next.
    pub fn time(&self, w: &Workload) -> i64 {
        self.base + w.events[self.pos].ts_ms
    }

    /// The next event and its time on the ever-advancing timeline.
    #[inline]
    pub fn next<'w>(&mut self, w: &'w Workload) -> (&'w TraceEvent, i64) {
        let ev = &w.events[self.pos];
        let now = self.base + ev.ts_ms;
        self.pos += 1;
        if self.pos == w.events.len() {
            self.pos = 0;
            self.base += w.period;
        }
        (ev, now)
    }
}

/// What [`decide_outcome`] did: for sanity checks, and to keep the work observable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Attempts forwarded (and their outcome reported).
    pub forwarded: u64,
    /// Attempts answered or blocked by the engine.
    pub refused: u64,
    /// Attempts the engine refused as invalid input.
    pub errors: u64,
}

/// One attempt through the engine: `check`, then, when forwarded, `outcome` from the event's
/// truth, both at `now`.
#[inline]
pub fn decide_outcome(engine: &Engine, ev: &TraceEvent, now: i64, tally: &mut Tally) {
    let now = Timestamp::from_millis(now);
    let attempt = Attempt {
        tenant: &ev.tenant,
        user: &ev.user,
        ip: ev.ip,
        fingerprint: Some(ev.pw.as_bytes()),
    };
    match engine.check(&attempt, now) {
        Ok(d) => match d.attempt_id {
            Some(id) => {
                tally.forwarded += 1;
                // The id was just issued: the outcome cannot be refused.
                let _ = engine.outcome(id, outcome_for(ev.truth), None, now);
            }
            None => tally.refused += 1,
        },
        Err(_) => tally.errors += 1,
    }
}

/// How often a [`Driver`] writes behind to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushEvery {
    /// Never (an in-memory engine).
    Never,
    /// After every `n` attempts.
    Attempts(u64),
    /// Whenever trace time has moved on by `ms` since the last flush.
    TraceMillis(i64),
}

/// Drives one [`Workload`] through an engine attempt by attempt, as a server would: `maintain`
/// and `flush` every so many attempts (a server runs both on wall-clock timers, so their cost per
/// attempt falls as traffic grows).
pub struct Driver {
    cursor: Cursor,
    maintain_every: Option<u64>,
    since_maintain: u64,
    flush: FlushEvery,
    since_flush: u64,
    last_flush: i64,
    /// What the attempts came to.
    pub tally: Tally,
}

/// Attempts between two `maintain` calls: a server taking 1,000 attempts/s and maintaining every
/// 5 s. (The replayer maintains every 10 minutes of trace time instead, which on a sparse trace
/// such as `mixed_week`, ~30,000 attempts a week, is every ~30 attempts.)
pub const MAINTAIN_EVERY_ATTEMPTS: u64 = 5_000;

impl Driver {
    /// A driver at the start of `w`, calling [`Engine::maintain`] every `maintain_every`
    /// attempts (one driver per engine should) and [`Engine::flush`] as `flush` says.
    pub fn new(w: &Workload, maintain_every: Option<u64>, flush: FlushEvery) -> Driver {
        Driver {
            cursor: w.cursor(),
            maintain_every,
            since_maintain: 0,
            flush,
            since_flush: 0,
            last_flush: i64::MIN,
            tally: Tally::default(),
        }
    }

    /// The trace time of the attempt this driver runs next.
    pub fn time(&self, w: &Workload) -> i64 {
        self.cursor.time(w)
    }

    /// Runs `n` attempts of `w` through `engine`.
    pub fn run(&mut self, engine: &Engine, w: &Workload, n: u64) {
        for _ in 0..n {
            let (ev, now) = self.cursor.next(w);
            if let Some(k) = self.maintain_every {
                self.since_maintain += 1;
                if self.since_maintain >= k {
                    self.since_maintain = 0;
                    engine.maintain(Timestamp::from_millis(now));
                }
            }
            decide_outcome(engine, ev, now, &mut self.tally);
            match self.flush {
                FlushEvery::Never => {}
                FlushEvery::Attempts(k) => {
                    self.since_flush += 1;
                    if self.since_flush >= k {
                        self.since_flush = 0;
                        engine.flush().expect("flush");
                    }
                }
                FlushEvery::TraceMillis(ms) => {
                    if now.saturating_sub(self.last_flush) >= ms {
                        self.last_flush = now;
                        engine.flush().expect("flush");
                    }
                }
            }
        }
    }
}

/// The naive baseline: one global `Mutex<HashMap>` from lower-cased name to failure times, locking
/// an account out at `threshold` failures within `window_ms`. No Unicode, no tenants, no sources,
/// no sprays, no memory cap: the least a lockout can do.
pub struct NaiveLockout {
    failures: Mutex<HashMap<String, Vec<i64>>>,
    threshold: usize,
    window_ms: i64,
}

impl NaiveLockout {
    /// A counter locking out at `threshold` failures within `window_ms`.
    pub fn new(threshold: usize, window_ms: i64) -> NaiveLockout {
        NaiveLockout {
            failures: Mutex::new(HashMap::new()),
            threshold,
            window_ms,
        }
    }

    /// Decides on one attempt and learns its outcome: `false` when the account is locked out
    /// (the attempt is not forwarded), else `true`, counting a wrong password as a failure.
    pub fn attempt(&self, user: &str, truth: Truth, now: i64) -> bool {
        let name = user.trim().to_lowercase();
        let mut map = self.failures.lock().expect("not poisoned");
        let times = map.entry(name).or_default();
        let since = now - self.window_ms;
        times.retain(|&t| t > since);
        if times.len() >= self.threshold {
            return false;
        }
        if truth == Truth::Wrong {
            times.push(now);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_time_only_moves_forward() {
        let w = Workload::mixed_week(50);
        let mut c = w.cursor();
        let mut last = i64::MIN;
        for _ in 0..w.events.len() * 2 + 10 {
            let (_, now) = c.next(&w);
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn driver_forwards_legit_traffic_and_refuses_some_attacks() {
        let w = Workload::mixed_week(200);
        let engine = Engine::new(
            default_policy(),
            portcullis_engine::Options::in_memory([7; 32]),
        )
        .unwrap();
        let mut d = Driver::new(&w, Some(MAINTAIN_EVERY_ATTEMPTS), FlushEvery::Never);
        d.run(&engine, &w, w.events.len() as u64 * 2);
        assert_eq!(d.tally.errors, 0);
        assert!(
            d.tally.forwarded > d.tally.refused && d.tally.refused > 0,
            "{:?}",
            d.tally
        );
    }

    #[test]
    fn naive_locks_out_at_threshold() {
        let n = NaiveLockout::new(3, 1_000);
        for t in 0..3 {
            assert!(n.attempt("Alice ", Truth::Wrong, t));
        }
        assert!(!n.attempt("alice", Truth::Correct, 3));
        assert!(n.attempt("alice", Truth::Correct, 1_001));
    }
}
