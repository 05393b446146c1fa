//! `spray/spray_failure`: the password-spray detector alone. One iteration is 4,096
//! wrong-password failures of one fingerprint against distinct accounts, 250 ms apart
//! (`rules::spray_failure` on one `SprayState`, the default policy).

use criterion::{Criterion, Throughput};
use portcullis_benches::default_policy;
use portcullis_engine::rules::spray_failure;
use portcullis_engine::state::SprayState;
use std::hint::black_box;

const N: u64 = 4_096;

/// The benches of this module.
pub fn benches(c: &mut Criterion) {
    let policy = default_policy();
    let p = policy.for_tenant("default").clone();
    let mut g = c.benchmark_group("spray");
    g.throughput(Throughput::Elements(N));
    let mut sp = SprayState::default();
    let mut now = 1_800_000_000_000i64;
    g.bench_function("spray_failure", |b| {
        b.iter(|| {
            let mut detected = 0u32;
            for i in 0..N {
                now += 250;
                let (d, _) = spray_failure(&mut sp, &p, black_box(i as u32 * 2_654_435_761), now);
                detected += d as u32;
            }
            detected
        })
    });
    g.finish();
}
