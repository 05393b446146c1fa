//! `trace/parse_line`: the trace line parser over every line of a synthesized `mixed_week`
//! (2,000 users, written with `to_json_line`). One iteration parses every line; throughput is
//! lines per second.

use criterion::{Criterion, Throughput};
use portcullis_benches::trace as synth_trace;
use portcullis_engine::synth::Scenario;
use portcullis_engine::trace::{parse_line, to_json_line};
use std::hint::black_box;

/// The benches of this module.
pub fn benches(c: &mut Criterion) {
    let lines: Vec<String> = synth_trace(Scenario::MixedWeek, 2_000)
        .iter()
        .map(to_json_line)
        .collect();
    let mut g = c.benchmark_group("trace");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("parse_line", |b| {
        b.iter(|| {
            let mut ok = 0u64;
            for (i, line) in lines.iter().enumerate() {
                let ev = parse_line(black_box(line), i as u64 + 1).expect("valid line");
                ok += ev.is_some() as u64;
            }
            ok
        })
    });
    g.finish();
}
