//! `normalize/*`: `normalize_into` with one reused buffer. One iteration normalises every name of
//! the list; throughput is names per second.
//!
//! `ascii`: the names as typed in a synthesized `mixed_week` (case and trailing-space variants
//! included), the fast path. `unicode`: the non-ASCII names of a synthesized `name_variants`
//! (fullwidth letters, ligatures, Kelvin sign, no-break and ideographic spaces, ...): NFKC.

use criterion::{Criterion, Throughput};
use portcullis_benches::trace;
use portcullis_engine::normalize::normalize_into;
use portcullis_engine::synth::Scenario;
use std::hint::black_box;

/// Names per list, at most.
const NAMES: usize = 4_096;

fn names(scenario: Scenario, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut v: Vec<String> = trace(scenario, 2_000)
        .into_iter()
        .map(|e| e.user)
        .filter(|u| keep(u))
        .take(NAMES)
        .collect();
    v.shrink_to_fit();
    assert!(!v.is_empty(), "no names for {scenario}");
    v
}

/// The benches of this module.
pub fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize");
    for (id, list) in [
        ("ascii", names(Scenario::MixedWeek, |u| u.is_ascii())),
        ("unicode", names(Scenario::NameVariants, |u| !u.is_ascii())),
    ] {
        let mut buf = String::with_capacity(64);
        g.throughput(Throughput::Elements(list.len() as u64));
        g.bench_function(id, |b| {
            b.iter(|| {
                let mut bytes = 0;
                for name in &list {
                    if normalize_into(black_box(name), &mut buf).is_ok() {
                        bytes += buf.len();
                    }
                }
                bytes
            })
        });
    }
    g.finish();
}
