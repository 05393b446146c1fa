//! Criterion benches of the engine, one module per area (run `cargo bench -p portcullis-benches`;
//! results and how they were taken are in `benches/RESULTS.md`).
//!
//! - `decide_outcome/*`: `check` + `outcome` per attempt over a synthesized `mixed_week`, in memory
//!   (one and two threads), with the sled store, and the naive `Mutex<HashMap>` baseline.
//! - `normalize/*`: sign-in name normalisation, ASCII and Unicode.
//! - `spray/spray_failure`: the password-spray detector's update alone.
//! - `trace/parse_line`: the trace reader's line parser.
//! - `replay/mixed_week`: the whole replayer (engine, simulated directory, scoring).
//!
//! Every bench is kept short (10 samples, a few seconds) so the whole run takes a few minutes.

use criterion::Criterion;

/// The allocator `portcullis` ships with, so that the benches measure what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Duration;

mod decide;
mod normalize;
mod replay;
mod spray;
mod trace;

/// Short runs: 10 samples, 1 s warm-up, 3 s measurement.
fn short() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

// `criterion_group!` would define an undocumented public function (`missing_docs`): this is
// what it and `criterion_main!` expand to.
fn main() {
    let mut c = short().configure_from_args();
    decide::benches(&mut c);
    normalize::benches(&mut c);
    spray::benches(&mut c);
    trace::benches(&mut c);
    replay::benches(&mut c);
    c.final_summary();
}
