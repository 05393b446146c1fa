//! `decide_outcome/*`: one iteration is one attempt, `check` then (when forwarded) `outcome` with
//! the directory's answer taken from the event's truth, so throughput is attempts per second.
//!
//! The workload is `synth::generate` `mixed_week` with 2,000 users (about 30,000 events: a
//! legitimate week with a distributed attack, a low-and-slow spray, a targeted brute force and
//! credential stuffing interleaved), built once outside the timed loop. Each attempt runs at its
//! event's own time; when the trace runs out it starts again one week later, so time only moves
//! forward across criterion's iterations and the engine stays in a steady state (warm-up covers
//! more than one pass). `maintain` runs every 5,000 attempts (a server at 1,000 attempts/s
//! maintaining every 5 s) and is timed; in the two-thread bench the first thread runs it. (The
//! replayer maintains every 10 minutes of trace time, every ~30 attempts on this sparse trace;
//! `replay/mixed_week` shows that cadence.)

use criterion::{Criterion, Throughput};
use portcullis_benches::{
    default_policy, Driver, FlushEvery, NaiveLockout, Workload, MAINTAIN_EVERY_ATTEMPTS,
};
use portcullis_engine::store::SledStore;
use portcullis_engine::{Engine, Limits, Options};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const SECRET: [u8; 32] = *b"portcullis-bench-secret-key-32b!";

/// Accounts in the synthesized tenant.
const USERS: usize = 2_000;

/// Attempts between two flushes of the sled engine.
///
/// Chosen over "every simulated second of trace time": the trace is sparse (~30,000 attempts
/// over a week, about one attempt per simulated second in busy hours), so flushing per trace
/// second would flush (and fsync) after nearly every attempt and time the disk, not the engine.
/// A server flushes on a wall-clock timer; 1,000 attempts per flush is a server taking 1,000
/// attempts/s and flushing every second. `decide_outcome/sled_flush_per_trace_second` shows the
/// other extreme.
const FLUSH_EVERY_ATTEMPTS: u64 = 1_000;

fn in_memory() -> Engine {
    Engine::new(default_policy(), Options::in_memory(SECRET)).expect("engine")
}

/// The benches of this module.
pub fn benches(c: &mut Criterion) {
    let w = Workload::mixed_week(USERS);
    let mut g = c.benchmark_group("decide_outcome");
    g.throughput(Throughput::Elements(1));

    // One thread, in memory.
    {
        let engine = in_memory();
        let mut d = Driver::new(&w, Some(MAINTAIN_EVERY_ATTEMPTS), FlushEvery::Never);
        g.bench_function("in_memory/1_thread", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                d.run(&engine, &w, iters);
                start.elapsed()
            })
        });
        eprintln!("in_memory/1_thread: {:?}", d.tally);
    }

    // Two threads on one engine: the trace split by event index (even / odd), so both threads
    // move through trace time together; `iters` attempts in all, half each.
    {
        let engine = in_memory();
        let shards = [w.shard(|i| i % 2 == 0), w.shard(|i| i % 2 == 1)];
        let mut drivers = [
            Driver::new(
                &shards[0],
                Some(MAINTAIN_EVERY_ATTEMPTS / 2),
                FlushEvery::Never,
            ),
            Driver::new(&shards[1], None, FlushEvery::Never),
        ];
        g.bench_function("in_memory/2_threads", |b| {
            b.iter_custom(|iters| {
                let engine = &engine;
                let start = Instant::now();
                std::thread::scope(|s| {
                    for (k, (d, w)) in drivers.iter_mut().zip(&shards).enumerate() {
                        let n = iters / 2 + (k == 0) as u64 * (iters % 2);
                        s.spawn(move || d.run(engine, w, n));
                    }
                });
                start.elapsed()
            })
        });
        eprintln!("in_memory/2_threads: {:?}", drivers.map(|d| d.tally));
    }

    // One thread, sled store in a temporary directory, flushed every 1,000 attempts.
    for (name, flush) in [
        ("sled/1_thread", FlushEvery::Attempts(FLUSH_EVERY_ATTEMPTS)),
        (
            "sled_flush_per_trace_second/1_thread",
            FlushEvery::TraceMillis(1_000),
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SledStore::open(dir.path()).expect("sled"));
        let engine = Engine::new(
            default_policy(),
            Options {
                secret: SECRET,
                store: Some(store),
                limits: Limits::default(),
                key_scheme: portcullis_engine::KeyScheme::default(),
            },
        )
        .expect("engine");
        let mut d = Driver::new(&w, Some(MAINTAIN_EVERY_ATTEMPTS), flush);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                d.run(&engine, &w, iters);
                start.elapsed()
            })
        });
        eprintln!("{name}: {:?}", d.tally);
        drop(engine);
        drop(dir);
    }

    // The naive baseline on the same workload: lower-case the name, count wrong passwords in the
    // lockout window (threshold 5 in 30 minutes, the default policy's unfamiliar lockout).
    let naive_step = |n: &NaiveLockout, w: &Workload, cur: &mut portcullis_benches::Cursor, k| {
        let mut forwarded = 0u64;
        for _ in 0..k {
            let (ev, now) = cur.next(w);
            forwarded += n.attempt(&ev.user, ev.truth, now) as u64;
        }
        black_box(forwarded);
    };
    {
        let naive = NaiveLockout::new(5, 30 * 60_000);
        let mut cur = w.cursor();
        g.bench_function("naive_mutex_hashmap/1_thread", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                naive_step(&naive, &w, &mut cur, iters);
                start.elapsed()
            })
        });
    }
    {
        let naive = NaiveLockout::new(5, 30 * 60_000);
        let shards = [w.shard(|i| i % 2 == 0), w.shard(|i| i % 2 == 1)];
        let mut curs = [shards[0].cursor(), shards[1].cursor()];
        g.bench_function("naive_mutex_hashmap/2_threads", |b| {
            b.iter_custom(|iters| {
                let naive = &naive;
                let step = &naive_step;
                let start = Instant::now();
                std::thread::scope(|s| {
                    for (k, (cur, w)) in curs.iter_mut().zip(&shards).enumerate() {
                        let n = iters / 2 + (k == 0) as u64 * (iters % 2);
                        s.spawn(move || step(naive, w, cur, n));
                    }
                });
                start.elapsed()
            })
        });
    }
    g.finish();
}
