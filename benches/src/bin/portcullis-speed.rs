//! `portcullis-speed`: engine throughput, allocations per attempt and bytes per tracked account,
//! measured outside criterion (so it also runs under `valgrind --tool=callgrind`).
//!
//! ```text
//! portcullis-speed rate --threads 1 --seconds 5            # mixed_week, decide + outcome
//! portcullis-speed rate --threads 1 --seconds 5 --sled     # sled write-behind, flushed every second
//! portcullis-speed rate --maintain-every 5000              # housekeeping every 5,000 attempts
//! portcullis-speed attempts 200000                          # a fixed count, for callgrind
//! portcullis-speed attempts 200000 --maintain-every 1000000 # ... with housekeeping as `rate` has it
//! portcullis-speed memory --accounts 1000000                # bytes per tracked account
//! portcullis-speed scale                                    # cost vs tracked accounts and attack share
//! portcullis-speed stalls --seconds 8                       # how long the machine takes each CPU away
//! ```
//!
//! `stalls` measures the machine, not the engine: one thread per CPU, pinned, reads the
//! monotonic clock in a loop for `--seconds` and records every gap of at least `--threshold-us`
//! (500 µs by default) between two reads: time its CPU ran something else (another process, a
//! kernel thread, an interrupt, or the hypervisor). A service's tail latency cannot be lower than
//! what such gaps cost a request that meets one; `perf record -e sched:sched_switch -a` over the
//! same seconds names who ran. It keeps both cores busy, so never run it beside a measurement.
//!
//! `rate` runs the engine's housekeeping ([`Engine::maintain`]) as `portcullis serve` does, on a
//! wall-clock timer of its own (every second; serve's default is every 5 s), unless
//! `--maintain-every N` has the first worker run it every N of its attempts instead: the cost of
//! housekeeping at 1,000 attempts/s charged at the bench's rate, an upper bound.
//!
//! Every figure is printed as one JSON line. Memory is counted by a global allocator that adds up
//! live bytes (requested sizes), so it is the engine's own heap, not the process's RSS.

use portcullis_benches::{
    default_policy, outcome_for, Driver, FlushEvery, Tally, Workload, MAINTAIN_EVERY_ATTEMPTS,
};
use portcullis_engine::store::SledStore;
use portcullis_engine::{Attempt, Engine, Limits, Options, Outcome, Timestamp};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

const SECRET: [u8; 32] = *b"portcullis-bench-secret-key-32b!";

#[allow(unsafe_code)]
mod counting {
    //! A global allocator that counts live bytes and allocation calls around the one `portcullis`
    //! ships with (mimalloc).
    use mimalloc::MiMalloc;
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    /// Live bytes (requested sizes).
    pub static LIVE: AtomicI64 = AtomicI64::new(0);
    /// Allocation calls (alloc and realloc).
    pub static CALLS: AtomicU64 = AtomicU64::new(0);

    /// The counting allocator.
    pub struct Counting;

    // SAFETY: every call is forwarded unchanged to mimalloc; only counters are added.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
            MiMalloc.alloc(l)
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
            MiMalloc.dealloc(p, l)
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            LIVE.fetch_add(new as i64 - l.size() as i64, Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
            MiMalloc.realloc(p, l, new)
        }
    }

    /// Has mimalloc return the freed pages whose purge delay has passed to the system now, as
    /// its own allocation calls in a busy service soon would.
    pub fn purge() {
        // SAFETY: `mi_collect` takes no pointers and may be called at any time from any thread.
        unsafe { libmimalloc_sys::mi_collect(false) }
    }

    /// Live bytes now.
    pub fn live() -> i64 {
        LIVE.load(Ordering::Relaxed)
    }

    /// Allocation calls so far.
    pub fn calls() -> u64 {
        CALLS.load(Ordering::Relaxed)
    }
}

/// The value after flag `name`, or `default` when the flag is absent. A flag given without a
/// value, or with one that does not parse, stops the bench with a message naming it rather than
/// measuring something else than asked.
fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match flag_value(args, name) {
        Ok(v) => v.unwrap_or(default),
        Err(e) => {
            eprintln!("portcullis-speed: {e}");
            std::process::exit(2);
        }
    }
}

fn flag_value<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String> {
    let Some(i) = args.iter().position(|a| a == name) else {
        return Ok(None);
    };
    let v = args.get(i + 1).ok_or(format!("{name} needs a value"))?;
    v.parse()
        .map(Some)
        .map_err(|_| format!("{name} {v:?}: not a valid value"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("rate") => rate(
            arg(&args, "--threads", 1),
            arg(&args, "--seconds", 5.0),
            args.iter().any(|a| a == "--sled"),
            args.iter()
                .position(|a| a == "--trace")
                .and_then(|i| args.get(i + 1)),
            match arg(&args, "--maintain-every", 0u64) {
                0 => Housekeeping::EverySecond,
                n => Housekeeping::EveryAttempts(n),
            },
        ),
        Some("attempts") => attempts(
            // `attempts N`; a flag or nothing after it: 200,000.
            match args.get(1).filter(|v| !v.starts_with("--")) {
                Some(_) => arg(&args, "attempts", 200_000),
                None => 200_000,
            },
            arg(&args, "--maintain-every", MAINTAIN_EVERY_ATTEMPTS),
        ),
        Some("memory") => memory(arg(&args, "--accounts", 1_000_000)),
        Some("scale") => scale(arg(&args, "--max-accounts", 1_000_000)),
        Some("stalls") => stalls(
            Duration::from_secs_f64(arg(&args, "--seconds", 8.0)),
            Duration::from_micros(arg(&args, "--threshold-us", 500)),
        ),
        _ => {
            eprintln!("usage: portcullis-speed rate [--threads N] [--seconds S] [--sled] [--trace FILE] [--maintain-every ATTEMPTS] | attempts N [--maintain-every ATTEMPTS] | memory [--accounts N] | scale [--max-accounts N] | stalls [--seconds S] [--threshold-us U]");
            std::process::exit(2);
        }
    }
}

fn engine(store: Option<Arc<SledStore>>) -> Engine {
    Engine::new(
        default_policy(),
        Options {
            secret: SECRET,
            store: store.map(|s| s as Arc<dyn portcullis_engine::store::Store>),
            // Room for the 1e7-account runs: the benches measure the maps, not eviction.
            limits: Limits {
                max_accounts: 20_000_000,
                max_sources: 40_000_000,
                ..Limits::default()
            },
            key_scheme: portcullis_engine::KeyScheme::default(),
        },
    )
    .expect("engine")
}

/// When the timed part of `rate` runs [`Engine::maintain`].
#[derive(Clone, Copy)]
enum Housekeeping {
    /// On a wall-clock timer of its own thread, every second, as `portcullis serve` does (every
    /// 5 s by default): its cost per attempt falls as traffic grows.
    EverySecond,
    /// On the first worker, every this many of its attempts: a server taking 1,000 attempts/s
    /// and maintaining every 5 s, charged at whatever rate the bench runs (`--maintain-every`).
    EveryAttempts(u64),
}

/// decide + outcome over `mixed_week` (2,000 users) on `threads` threads for `seconds`.
fn rate(
    threads: usize,
    seconds: f64,
    sled: bool,
    trace: Option<&String>,
    housekeeping: Housekeeping,
) {
    let w = match trace {
        Some(path) => {
            let mut events: Vec<portcullis_engine::trace::TraceEvent> =
                portcullis_engine::trace::TraceReader::open(std::path::Path::new(path))
                    .expect("trace")
                    .collect::<Result<_, _>>()
                    .expect("trace");
            events.sort_by_key(|e| e.ts_ms);
            Workload::new(events)
        }
        None => Workload::mixed_week(2_000),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sled.then(|| Arc::new(SledStore::open(dir.path()).expect("sled")));
    let e = engine(store);
    let shards: Vec<Workload> = (0..threads)
        .map(|k| w.shard(|i| i % threads == k))
        .collect();
    // Warm-up: one pass, so the maps hold the trace's accounts.
    let mut warm = Driver::new(&w, Some(5_000), FlushEvery::Never);
    warm.run(&e, &w, w.events.len() as u64);
    let stop = AtomicBool::new(false);
    let flushes = std::sync::atomic::AtomicU64::new(0);
    let maintains = std::sync::atomic::AtomicU64::new(0);
    // Each worker's trace time, published every 10,000 attempts for the housekeeping thread.
    let times: Vec<AtomicI64> = (0..threads).map(|_| AtomicI64::new(i64::MIN)).collect();
    let start = Instant::now();
    let calls0 = counting::calls();
    let mut total = Tally::default();
    let mut n = 0u64;
    std::thread::scope(|s| {
        if let Housekeeping::EverySecond = housekeeping {
            s.spawn(|| {
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    if last.elapsed() < Duration::from_secs(1) {
                        continue;
                    }
                    last = Instant::now();
                    // The earliest worker's time: nothing a worker still has in flight expires.
                    let now = times.iter().map(|t| t.load(Ordering::Relaxed)).min();
                    if let Some(now) = now.filter(|&t| t != i64::MIN) {
                        e.maintain(portcullis_engine::Timestamp::from_millis(now));
                        maintains.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        if sled {
            // Write-behind on a wall-clock timer: every 1 s, as `portcullis serve` does.
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1_000));
                    e.flush().expect("flush");
                    flushes.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let handles: Vec<_> = shards
            .iter()
            .enumerate()
            .map(|(k, w)| {
                let (e, times, maintains) = (&e, &times, &maintains);
                s.spawn(move || {
                    let every = match housekeeping {
                        Housekeeping::EveryAttempts(n) if k == 0 => Some(n),
                        _ => None,
                    };
                    // Time keeps moving on from the warm-up pass.
                    let mut d = Driver::new(w, every, FlushEvery::Never);
                    d.run(e, w, w.events.len() as u64); // catch up one pass, untimed below
                    let mut n = 0u64;
                    let t = Instant::now();
                    while t.elapsed().as_secs_f64() < seconds {
                        times[k].store(d.time(w), Ordering::Relaxed);
                        d.run(e, w, 10_000);
                        n += 10_000;
                    }
                    if let Some(every) = every {
                        maintains.fetch_add(n / every, Ordering::Relaxed);
                    }
                    (n, d.tally, t.elapsed())
                })
            })
            .collect();
        let mut secs: f64 = 0.0;
        for h in handles {
            let (k, t, el) = h.join().expect("thread");
            n += k;
            total.forwarded += t.forwarded;
            total.refused += t.refused;
            total.errors += t.errors;
            secs = secs.max(el.as_secs_f64());
        }
        stop.store(true, Ordering::Relaxed);
        let _ = start;
        let per_sec = n as f64 / secs;
        println!(
            "{{\"bench\":\"rate\",\"threads\":{threads},\"sled\":{sled},\"maintain\":\"{}\",\"maintain_calls\":{},\"attempts\":{n},\"seconds\":{secs:.3},\"attempts_per_second\":{per_sec:.0},\"allocs_per_attempt\":{:.3},\"forwarded\":{},\"refused\":{},\"errors\":{}}}",
            match housekeeping {
                Housekeeping::EverySecond => "every 1 s".to_string(),
                Housekeeping::EveryAttempts(k) => format!("every {k} attempts"),
            },
            maintains.load(Ordering::Relaxed),
            (counting::calls() - calls0) as f64 / n as f64,
            total.forwarded,
            total.refused,
            total.errors
        );
    });
    if sled {
        eprintln!("flushes: {}", flushes.load(Ordering::Relaxed));
    }
}

/// A fixed number of attempts on one thread after a warm-up pass: for callgrind.
/// `n` attempts of `mixed_week` on one thread after a pass to warm up, housekeeping every
/// `maintain_every` attempts (5,000 by default: the figures callgrind has tracked since the first
/// pass; at `rate`'s pace, a wall-clock second is about 1,000,000).
fn attempts(n: u64, maintain_every: u64) {
    let w = Workload::mixed_week(2_000);
    let e = engine(None);
    let mut d = Driver::new(&w, Some(maintain_every.max(1)), FlushEvery::Never);
    d.run(&e, &w, w.events.len() as u64);
    let calls0 = counting::calls();
    d.run(&e, &w, n);
    println!(
        "{{\"bench\":\"attempts\",\"attempts\":{n},\"allocs_per_attempt\":{:.3},\"tally\":\"{:?}\"}}",
        (counting::calls() - calls0) as f64 / n as f64,
        d.tally
    );
}

/// One synthetic attempt for account `i`: a user from one of 256 office /24s.
fn account_attempt(e: &Engine, i: u64, now: i64, outcome: Outcome, attacker: bool) -> bool {
    let name = format!("user{i}@corp.example");
    let ip = if attacker {
        IpAddr::V4(Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, (i % 256) as u8, 0, 1))
    };
    let pw = if attacker { "Winter2026!" } else { "own" };
    let a = Attempt {
        tenant: "default",
        user: &name,
        ip,
        fingerprint: Some(pw.as_bytes()),
    };
    let now = Timestamp::from_millis(now);
    match e.check(&a, now) {
        Ok(d) => match d.attempt_id {
            Some(id) => {
                let _ = e.outcome(id, outcome, None, now);
                true
            }
            None => false,
        },
        Err(_) => false,
    }
}

/// Bytes per tracked account: `accounts` accounts, each one successful sign-in from a familiar
/// office prefix (the common case), then live heap bytes over the empty engine's, divided; and
/// the resident set's growth, right after and (`steady_*`) after a pass over the same accounts
/// and the allocator's purge.
fn memory(accounts: u64) {
    let e = engine(None);
    let t0 = 1_800_000_000_000i64;
    // The tenant, its limiter and the office sources exist before counting.
    for i in 0..256 {
        account_attempt(&e, u64::MAX - i, t0, Outcome::Success, false);
    }
    let before = counting::live();
    let rss_before = rss_bytes();
    let start = Instant::now();
    for i in 0..accounts {
        // 10 ms apart: no address passes its rate limit.
        account_attempt(&e, i, t0 + 1_000 + i as i64 * 10, Outcome::Success, false);
    }
    let secs = start.elapsed().as_secs_f64();
    let after = counting::live();
    let rss_after = rss_bytes();
    let st = e.stats();
    // Then a pass over the same accounts in a scattered order, tracking no new one, as a service
    // goes on after its tables stopped growing, and the allocator's purge of the pages freed by
    // the tables the growth replaced (mimalloc purges freed memory after a delay, on a later
    // call; the pass makes none): the resident cost of the accounts held, next to the one right
    // after the growth.
    let t1 = t0 + 1_000 + accounts as i64 * 10;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for j in 0..accounts {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        account_attempt(
            &e,
            x % accounts,
            t1 + j as i64 * 10,
            Outcome::Success,
            false,
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    counting::purge();
    let steady_live = counting::live();
    let rss_steady = rss_bytes();
    let tracked = e.stats().accounts.max(1) as f64;
    println!(
        "{{\"bench\":\"memory\",\"accounts\":{},\"sources\":{},\"pending\":{},\"bytes\":{},\"bytes_per_account\":{:.1},\"rss_bytes_per_account\":{:.1},\"steady_bytes_per_account\":{:.1},\"steady_rss_bytes_per_account\":{:.1},\"insert_attempts_per_second\":{:.0}}}",
        st.accounts,
        st.sources,
        st.pending,
        after - before,
        (after - before) as f64 / st.accounts.max(1) as f64,
        (rss_after - rss_before) as f64 / st.accounts.max(1) as f64,
        (steady_live - before) as f64 / tracked,
        (rss_steady - rss_before) as f64 / tracked,
        accounts as f64 / secs
    );
}

/// The process's resident set in bytes (Linux `/proc/self/statm`, 4 KiB pages; 0 elsewhere):
/// the live bytes plus what the allocator holds around them.
fn rss_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Cost per attempt as tracked accounts grow (1e4 .. `max`) and as the attack share grows.
fn scale(max: u64) {
    let t0 = 1_800_000_000_000i64;
    let mut n = 10_000u64;
    while n <= max {
        let e = engine(None);
        let live0 = counting::live();
        for i in 0..n {
            account_attempt(&e, i, t0 + i as i64, Outcome::Success, false);
        }
        let bytes = counting::live() - live0;
        // Timed: 1,000,000 attempts (or n) over the tracked accounts in a scattered order.
        let k = n.max(1_000_000);
        let start = Instant::now();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for j in 0..k {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            account_attempt(&e, x % n, t0 + n as i64 + j as i64, Outcome::Success, false);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{{\"bench\":\"scale_accounts\",\"accounts\":{n},\"bytes_per_account\":{:.1},\"ns_per_attempt\":{:.0},\"attempts_per_second\":{:.0}}}",
            bytes as f64 / n as f64,
            secs * 1e9 / k as f64,
            k as f64 / secs
        );
        n *= 10;
    }
    for share in [0.0, 0.1, 0.5, 0.9] {
        let e = engine(None);
        let users = 100_000u64;
        let k = 1_000_000u64;
        let start = Instant::now();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for j in 0..k {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let attack = (x >> 11) as f64 / (1u64 << 53) as f64 % 1.0 < share;
            let out = if attack {
                Outcome::WrongPassword
            } else {
                Outcome::Success
            };
            account_attempt(&e, x % users, t0 + j as i64 * 5, out, attack);
        }
        let secs = start.elapsed().as_secs_f64();
        let _ = outcome_for;
        println!(
            "{{\"bench\":\"scale_attack_share\",\"attack_share\":{share},\"accounts\":{},\"ns_per_attempt\":{:.0},\"attempts_per_second\":{:.0}}}",
            e.stats().accounts,
            secs * 1e9 / k as f64,
            k as f64 / secs
        );
    }
}

/// The gaps one CPU's spinning thread saw: each a stretch in which it did not run.
#[derive(Debug, Default, Clone, PartialEq)]
struct Stalls {
    count: u64,
    total: Duration,
    longest: Duration,
    over_1ms: u64,
    over_2ms: u64,
}

impl Stalls {
    fn record(&mut self, gap: Duration) {
        self.count += 1;
        self.total += gap;
        self.longest = self.longest.max(gap);
        self.over_1ms += u64::from(gap > Duration::from_millis(1));
        self.over_2ms += u64::from(gap > Duration::from_millis(2));
    }
}

/// Spins on the clock for `span`, recording every gap of at least `threshold` between reads.
fn spin_for_stalls(span: Duration, threshold: Duration) -> Stalls {
    let mut out = Stalls::default();
    let start = Instant::now();
    let mut prev = start;
    loop {
        let now = Instant::now();
        let gap = now - prev;
        if gap >= threshold {
            out.record(gap);
        }
        prev = now;
        if now - start >= span {
            return out;
        }
    }
}

fn stalls(span: Duration, threshold: Duration) {
    use portcullis_server::sched::{cpus_of_this_thread, pin_current_thread};
    let cpus = match cpus_of_this_thread() {
        Ok(cpus) => cpus,
        Err(e) => {
            eprintln!("stalls: the process's CPU set: {e}");
            std::process::exit(1);
        }
    };
    let threads: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            std::thread::spawn(move || {
                let pinned = pin_current_thread(cpu).is_ok();
                (cpu, pinned, spin_for_stalls(span, threshold))
            })
        })
        .collect();
    let per_cpu: Vec<_> = threads
        .into_iter()
        .filter_map(|t| t.join().ok())
        .map(|(cpu, pinned, s)| {
            serde_json::json!({
                "cpu": cpu,
                "pinned": pinned,
                "stalls": s.count,
                "stalled_ms": s.total.as_secs_f64() * 1e3,
                "share": s.total.as_secs_f64() / span.as_secs_f64(),
                "longest_ms": s.longest.as_secs_f64() * 1e3,
                "over_1ms": s.over_1ms,
                "over_2ms": s.over_2ms,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "bench": "stalls",
            "seconds": span.as_secs_f64(),
            "threshold_us": threshold.as_micros() as u64,
            "cpus": per_cpu,
        })
    );
}

#[cfg(test)]
mod stall_tests {
    use super::*;

    #[test]
    fn a_flag_with_a_bad_or_missing_value_is_refused_by_name_and_an_absent_one_defaults() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(flag_value::<u64>(&args(&["rate"]), "--threads"), Ok(None));
        assert_eq!(
            flag_value::<u64>(&args(&["rate", "--threads", "2"]), "--threads"),
            Ok(Some(2))
        );
        let e = flag_value::<u64>(&args(&["rate", "--threads", "two"]), "--threads").unwrap_err();
        assert!(e.contains("--threads") && e.contains("two"), "{e}");
        let e = flag_value::<f64>(&args(&["rate", "--seconds"]), "--seconds").unwrap_err();
        assert!(e.contains("--seconds needs a value"), "{e}");
    }

    #[test]
    fn stalls_add_up_each_gap_and_count_those_over_one_and_two_milliseconds() {
        let mut s = Stalls::default();
        for us in [600, 1_500, 2_500, 900] {
            s.record(Duration::from_micros(us));
        }
        assert_eq!(s.count, 4);
        assert_eq!(s.total, Duration::from_micros(5_500));
        assert_eq!(s.longest, Duration::from_micros(2_500));
        assert_eq!((s.over_1ms, s.over_2ms), (2, 1));
    }

    #[test]
    fn a_spin_records_only_gaps_at_or_over_the_threshold() {
        // A threshold no gap can reach in 20 ms: nothing recorded, whatever the machine does.
        let s = spin_for_stalls(Duration::from_millis(20), Duration::from_secs(3600));
        assert_eq!(s, Stalls::default());
        // A zero threshold: every read after the first is a gap, and they add up to the span.
        let s = spin_for_stalls(Duration::from_millis(20), Duration::ZERO);
        assert!(s.count > 0, "{s:?}");
        assert!(s.total >= Duration::from_millis(20), "{s:?}");
    }
}
