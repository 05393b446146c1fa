//! `replay/mixed_week`: the whole replayer (engine, simulated directory, scoring) over a
//! synthesized `mixed_week` with 2,000 users, from a fresh `Replayer` each iteration (built
//! outside the timing). Throughput is events per second, as `portcullis replay` reports it.

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use portcullis_benches::{default_policy, trace};
use portcullis_engine::replay::Replayer;
use portcullis_engine::synth::Scenario;
use std::time::Duration;

/// The benches of this module.
pub fn benches(c: &mut Criterion) {
    let events = trace(Scenario::MixedWeek, 2_000);
    let policy = default_policy();
    let mut g = c.benchmark_group("replay");
    // An iteration takes tens of milliseconds: flat sampling keeps the run short.
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("mixed_week", |b| {
        b.iter_batched(
            || Replayer::new(policy.clone()).expect("replayer"),
            |mut r| {
                for ev in &events {
                    r.feed(ev);
                }
                r.finish()
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}
