//! The `replay`, `synth` and `demo` commands: file handling and progress around the engine's
//! replay. Reading and parsing run on a reader thread so they overlap with deciding.

use crate::{html, sweep};
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use portcullis_engine::policy::Policy;
use portcullis_engine::replay::{PreparedChunk, Replayer, Report};
use portcullis_engine::synth::{self, Scenario, SynthConfig};
use portcullis_engine::trace::{EventChunk, TraceEvent, TraceReader};
use portcullis_server::sched::{cpus_of_this_thread, pin_current_thread};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Arguments of `portcullis replay`.
#[derive(Args)]
pub struct ReplayArgs {
    /// The policy file.
    #[arg(long, default_value = "policies/default.toml")]
    policy: PathBuf,
    /// The trace (JSON Lines, `.gz` too).
    #[arg(long)]
    trace: PathBuf,
    /// Where to write the JSON report.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the report as JSON on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report (charts inline, no network needed) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Replay every combination of policy values instead: KEY is a dotted key under `[defaults]`
    /// (e.g. `lockout.threshold=3,5,7`); repeat for more keys. Runs on all cores.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    sweep: Vec<String>,
    /// Live replay: send the attempts to this running service's `/v1/validate` (in-line mode)
    /// instead of the simulated directory, e.g. `http://127.0.0.1:8080`.
    #[arg(long, requires = "credentials")]
    target: Option<String>,
    /// With `--target`: the target is an agent, spoken to in the agent protocol, with no
    /// Portcullis in front (the baseline).
    #[arg(long, requires = "target")]
    direct: bool,
    /// With `--target`: test-only `TOKEN PASSWORD` lines mapping each trace `pw` token to the
    /// password sent in the payload.
    #[arg(long, requires = "target")]
    credentials: Option<PathBuf>,
    /// With `--target`: trace time runs this many times faster than wall time.
    #[arg(long, requires = "target", conflicts_with = "as_fast_as_possible")]
    speed: Option<f64>,
    /// With `--target`: send without waiting for the trace's clock (the default).
    #[arg(long, requires = "target")]
    as_fast_as_possible: bool,
    /// With `--target`: requests in flight at most.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// With `--target`: a Samba AD DC directory (`scripts/samba-ad.sh start DIR`) whose
    /// accounts' `badPwdCount`/`lockoutTime` are read before, during and after the replay.
    #[arg(long, requires = "target")]
    samba_dir: Option<PathBuf>,
    /// With `--samba-dir`: how often the directory is sampled, e.g. `1s`.
    #[arg(long, default_value = "1s")]
    sample_every: String,
    /// Read the whole trace into memory first, then time the replay alone: the report gains
    /// `engine_seconds` and `engine_events_per_second`.
    #[arg(long)]
    preload: bool,
    /// Leave the reader and engine threads wherever the OS schedules them, instead of on two
    /// CPUs of their own.
    #[arg(long, conflicts_with = "preload")]
    no_pin: bool,
}

/// Width of the HTML report's timeline buckets before widening (one minute).
const TIMELINE_BUCKET_MS: i64 = 60_000;

/// Arguments of `portcullis synth`.
#[derive(Args)]
pub struct SynthArgs {
    /// The scenario: spray_lowslow, brute_targeted, stuffing, distributed_one_user,
    /// ipv6_rotation, name_variants, legit_only, mixed_week.
    #[arg(long)]
    scenario: Scenario,
    /// Output file (`.gz` compresses).
    #[arg(long)]
    out: PathBuf,
    /// Random seed: the same seed writes the same trace.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Users in the tenant.
    #[arg(long, default_value_t = 2000)]
    users: usize,
}

/// Arguments of `portcullis demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// The policy file.
    #[arg(long, default_value = "policies/default.toml")]
    policy: PathBuf,
    /// Random seed of the synthesised week.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Users in the tenant.
    #[arg(long, default_value_t = 2000)]
    users: usize,
    /// Where to write the JSON report.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn load_policy(path: &Path) -> Result<Policy> {
    match Policy::load(path) {
        Ok(p) => Ok(p),
        Err(portcullis_engine::Error::Policy(errs)) => {
            bail!("policy refused:\n{}", errs.join("\n"))
        }
        // The engine's error names the file already.
        Err(e) => Err(e).context("loading policy"),
    }
}

/// A progress bar on stderr, four redraws a second.
pub(crate) fn progress(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {percent}% {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Events per chunk handed from the reader thread to the engine thread.
const CHUNK_EVENTS: usize = 256;

/// Replays `trace` under `policy_path`, with a reader thread and a progress bar.
pub fn replay_file(policy_path: &Path, trace: &Path) -> Result<Report> {
    replay_file_with(load_policy(policy_path)?, trace, false, true)
}

/// Replays `trace` under `policy`, collecting a timeline when `timeline` is set, with the reader
/// and engine threads on two CPUs of their own when `pin` is set and the process may use two.
fn replay_file_with(policy: Policy, trace: &Path, timeline: bool, pin: bool) -> Result<Report> {
    // The trace's error names the file and why.
    let reader = TraceReader::open(trace)?;
    let total = reader.total_bytes().unwrap_or(0);
    let pb = progress(total, "replay");
    let started = Instant::now();
    let mut replayer = if timeline {
        Replayer::with_timeline(policy, TIMELINE_BUCKET_MS)?
    } else {
        Replayer::new(policy)?
    };
    // The reader thread parses and does the engine's stateless work (normalising, hashing); the
    // engine thread decides. Chunks go to the engine thread full and come back empty to be
    // refilled, so that reading allocates nothing per event once a few chunks exist; small ones
    // let the engine start early.
    let mut chunks = replayer.chunk_reader(reader);
    let cpus = if pin { CpuPair::pick() } else { None };
    let reader_cpu = cpus.as_ref().map(|c| c.reader);
    let _engine_pinned = cpus.map(CpuPair::pin_engine);
    let (tx, rx) = crossbeam_channel::bounded::<(PreparedChunk, u64)>(64);
    let (back_tx, back_rx) = crossbeam_channel::unbounded::<PreparedChunk>();
    let reader_thread = std::thread::Builder::new()
        .name("trace-reader".into())
        .spawn(move || -> Result<()> {
            if let Some(cpu) = reader_cpu {
                // Best effort: unpinned, the reader still works, only maybe beside the engine.
                let _ = pin_current_thread(cpu);
            }
            loop {
                let mut chunk = back_rx.try_recv().unwrap_or_default();
                let n = chunks.read(&mut chunk, CHUNK_EVENTS)?;
                if n > 0 && tx.send((chunk, chunks.trace().bytes_read())).is_err() {
                    return Ok(());
                }
                if n < CHUNK_EVENTS {
                    return Ok(());
                }
            }
        })
        .context("starting the trace reader thread")?;
    // Spinning only pays where the reader has a CPU of its own.
    let spin = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let mut spin_for = if spin {
        SPIN_FOR_FIRST_CHUNK
    } else {
        Duration::ZERO
    };
    while let Some((chunk, bytes)) = next_chunk(&rx, spin_for) {
        if spin {
            spin_for = SPIN_FOR_CHUNK;
        }
        replayer.feed_chunk(&chunk);
        pb.set_position(bytes);
        // The reader may have finished; then the chunk is simply dropped.
        let _ = back_tx.send(chunk);
    }
    reader_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the trace reader thread panicked"))?
        .with_context(|| format!("reading trace {}", trace.display()))?;
    pb.finish_and_clear();
    let mut report = replayer.finish();
    report.wall_seconds = started.elapsed().as_secs_f64();
    report.events_per_second = report.events as f64 / report.wall_seconds.max(1e-9);
    Ok(report)
}

/// How long the engine thread polls for the reader's next chunk before it sleeps: a chunk takes
/// the reader about a tenth of a millisecond, and waking a sleeping thread can take milliseconds
/// on a virtual machine whose CPU went idle.
const SPIN_FOR_CHUNK: Duration = Duration::from_millis(2);

/// How long the engine thread polls for the first chunk. The reader thread has to start first,
/// and on a virtual machine whose other CPU is idle that took 0.3-2.5 ms; an engine thread that
/// then slept needed a second wake-up, 1-5 ms more. It has nothing else to do meanwhile.
const SPIN_FOR_FIRST_CHUNK: Duration = Duration::from_millis(50);

/// The next message on `rx`, polling for up to `spin` first; `None` once the sender is gone
/// and all is received.
fn next_chunk<T>(rx: &crossbeam_channel::Receiver<T>, spin: Duration) -> Option<T> {
    if spin.is_zero() {
        return rx.recv().ok();
    }
    let spin_until = Instant::now() + spin;
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
            Err(crossbeam_channel::TryRecvError::Empty) if Instant::now() < spin_until => {
                // Yield rather than spin: where the scheduler put the reader on this CPU (some
                // VMs' schedulers pack threads onto as few CPUs as they can), a spinning engine
                // thread would keep it from running.
                std::thread::yield_now();
            }
            Err(crossbeam_channel::TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

/// The two CPUs of a replay: the engine thread's (the one it runs on) and the reader's (another
/// one the process may use).
///
/// Why pin at all: the reader hands a chunk to the engine thread every 256 events, and both
/// threads are busy from start to end. Left to itself, a scheduler that packs threads onto as
/// few CPUs as it can (the VMs the benchmarks ran on) put the two on one CPU for stretches of
/// the run; pinned, the engine thread waited for chunks 1.1 ms at the median of 30 runs
/// instead of 5.9 ms.
struct CpuPair {
    engine: usize,
    reader: usize,
}

impl CpuPair {
    /// Two CPUs this process may use, or `None` when it may use only one (or the OS won't say).
    fn pick() -> Option<CpuPair> {
        let cpus = cpus_of_this_thread().ok()?;
        let here = sched_getcpu()
            .ok()
            .filter(|c| cpus.contains(c))
            .or_else(|| cpus.first().copied())?;
        // The next allowed CPU after this one, wrapping around.
        let reader = cpus
            .iter()
            .copied()
            .find(|&c| c > here)
            .or_else(|| cpus.iter().copied().find(|&c| c != here))?;
        Some(CpuPair {
            engine: here,
            reader,
        })
    }

    /// Pins the calling (engine) thread to its CPU until the guard is dropped, which gives the
    /// thread back the CPUs it had. `None` when the OS refused.
    fn pin_engine(self) -> Option<RestoreCpus> {
        let before = sched_getaffinity(Pid::from_raw(0)).ok()?;
        pin_current_thread(self.engine).ok()?;
        Some(RestoreCpus(before))
    }
}

/// Restores the calling thread's CPU set when dropped.
struct RestoreCpus(CpuSet);

impl Drop for RestoreCpus {
    fn drop(&mut self) {
        // Nothing to do if this fails: the thread keeps running, on one CPU.
        let _ = sched_setaffinity(Pid::from_raw(0), &self.0);
    }
}

/// Replays `trace` read whole into memory first, timing the replay alone as well as the whole.
fn replay_preloaded(policy: Policy, trace: &Path, timeline: bool) -> Result<Report> {
    let started = Instant::now();
    let mut reader = TraceReader::open(trace)?;
    let mut events = EventChunk::new();
    reader
        .read_chunk(&mut events, usize::MAX)
        .with_context(|| format!("reading trace {}", trace.display()))?;
    let mut replayer = if timeline {
        Replayer::with_timeline(policy, TIMELINE_BUCKET_MS)?
    } else {
        Replayer::new(policy)?
    };
    let engine_started = Instant::now();
    for ev in events.iter() {
        replayer.feed_ref(ev);
    }
    let mut report = replayer.finish();
    let engine_seconds = engine_started.elapsed().as_secs_f64();
    report.wall_seconds = started.elapsed().as_secs_f64();
    report.events_per_second = report.events as f64 / report.wall_seconds.max(1e-9);
    report.engine_seconds = Some(engine_seconds);
    report.engine_events_per_second = Some(report.events as f64 / engine_seconds.max(1e-9));
    Ok(report)
}

fn write_report(report: &impl serde::Serialize, path: &Path) -> Result<()> {
    let mut f =
        BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    serde_json::to_writer_pretty(&mut f, report)?;
    writeln!(f)?;
    f.flush()?;
    Ok(())
}

/// Prints a short human summary of a report.
pub fn print_summary(r: &Report) {
    println!("events                 {}", r.events);
    println!(
        "legit                  {} attempts, {} forwarded, {} blocked, {} succeeded, {} harmed ({} users)",
        r.legit.attempts, r.legit.forwarded, r.legit.blocked, r.legit.succeeded, r.legit.harmed, r.legit.users_harmed
    );
    println!(
        "attack                 {} attempts, {} forwarded, {} blocked, {} succeeded, {} accounts compromised",
        r.attack.attempts, r.attack.forwarded, r.attack.blocked, r.attack.succeeded, r.attack.accounts_compromised
    );
    println!(
        "directory              {} lockout events, {} accounts locked ({} with legit traffic)",
        r.directory.lockout_events, r.directory.accounts_locked, r.directory.legit_users_locked
    );
    let decisions: Vec<String> = r
        .decisions
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("decisions              {}", decisions.join(", "));
    println!(
        "accounts flagged       {} (signed in with a sprayed password)",
        r.accounts_flagged
    );
    println!(
        "speed                  {:.2} s, {:.0} events/s",
        r.wall_seconds, r.events_per_second
    );
}

fn write_html(path: &Path, html: &str) -> Result<()> {
    std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// `portcullis replay --target`: a live replay against a running service or agent.
fn run_live(args: &ReplayArgs, target: &str) -> Result<()> {
    use portcullis_server::live_replay::{self as live, Credentials, DirectoryProbe, LiveOptions};
    let events = live::read_trace(&args.trace)
        .with_context(|| format!("reading trace {}", args.trace.display()))?;
    let cred_path = args
        .credentials
        .as_ref()
        .context("--target needs --credentials")?;
    let credentials = Credentials::parse(
        &std::fs::read_to_string(cred_path)
            .with_context(|| format!("reading {}", cred_path.display()))?,
    )?;
    let base = target.trim_end_matches('/').to_string();
    let target = if args.direct {
        live::Target::Agent(base)
    } else {
        live::Target::Service(base)
    };
    let options = LiveOptions {
        speed: if args.as_fast_as_possible {
            None
        } else {
            args.speed
        },
        concurrency: args.concurrency.max(1),
        sample_every: humantime::parse_duration(&args.sample_every)
            .with_context(|| format!("--sample-every {:?}", args.sample_every))?,
        ..LiveOptions::default()
    };
    let probe = args.samba_dir.clone().map(DirectoryProbe::Samba);
    let pb = progress(events.len() as u64, "live replay");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = rt.block_on(live::run(
        &events,
        &credentials,
        &target,
        &options,
        probe,
        Some(pb.clone()),
    ))?;
    pb.finish_and_clear();
    if let Some(path) = &args.report {
        let mut f = BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        serde_json::to_writer_pretty(&mut f, &report)?;
        writeln!(f)?;
        f.flush()?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report.report);
        let l = &report.live;
        println!(
            "live                   target {}, {} accounts, {} samples, max badPwdCount {}, {} locked, latency p50 {:.1} ms p99 {:.1} ms",
            l.target,
            l.accounts,
            l.samples.len(),
            l.max_bad_pwd_count,
            l.locked_accounts.len(),
            l.latency_ms_p50,
            l.latency_ms_p99
        );
    }
    Ok(())
}

/// `portcullis replay`.
pub fn run_replay(args: &ReplayArgs) -> Result<()> {
    if let Some(target) = &args.target {
        return run_live(args, target);
    }
    if !args.sweep.is_empty() {
        return run_sweep(args);
    }
    let policy = load_policy(&args.policy)?;
    let version = policy.version.clone();
    let mut report = if args.preload {
        replay_preloaded(policy, &args.trace, args.html.is_some())?
    } else {
        replay_file_with(policy, &args.trace, args.html.is_some(), !args.no_pin)?
    };
    // The timeline is for the HTML page only: the JSON report is the same with or without it.
    if let (Some(path), Some(_)) = (&args.html, &report.timeline) {
        let src = html::Source {
            policy: &args.policy.display().to_string(),
            version: &version,
            trace: &args.trace.display().to_string(),
        };
        write_html(path, &html::replay_page(&report, &src))?;
    }
    report.timeline = None;
    if let Some(path) = &args.report {
        write_report(&report, path)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(())
}

/// `portcullis replay --sweep ...`: every combination, in parallel.
fn run_sweep(args: &ReplayArgs) -> Result<()> {
    let axes: Vec<sweep::Axis> = args
        .sweep
        .iter()
        .map(|s| sweep::parse_axis(s))
        .collect::<Result<_>>()?;
    // The file itself must be a valid policy before any value is swept into it.
    let version = load_policy(&args.policy)?.version;
    let entries = sweep::run(&args.policy, &args.trace, &axes)?;
    let json = serde_json::json!({ "sweep": entries });
    if let Some(path) = &args.report {
        write_report(&json, path)?;
    }
    if let Some(path) = &args.html {
        let src = html::Source {
            policy: &args.policy.display().to_string(),
            version: &version,
            trace: &args.trace.display().to_string(),
        };
        write_html(path, &html::sweep_page(&axes, &entries, &src))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        sweep::print_table(&axes, &entries);
    }
    Ok(())
}

fn write_trace(events: &[TraceEvent], out: &Path) -> Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    if out.extension().is_some_and(|e| e == "gz") {
        let mut gz =
            flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
        synth::write_jsonl(events, &mut gz)?;
        gz.finish()?.flush()?;
    } else {
        let mut w = BufWriter::new(file);
        synth::write_jsonl(events, &mut w)?;
        w.flush()?;
    }
    Ok(())
}

/// `portcullis synth`.
pub fn run_synth(args: &SynthArgs) -> Result<()> {
    let events = synth::generate(&SynthConfig {
        scenario: args.scenario,
        seed: args.seed,
        users: args.users,
    });
    write_trace(&events, &args.out)?;
    eprintln!(
        "wrote {} events of {} to {}",
        events.len(),
        args.scenario,
        args.out.display()
    );
    Ok(())
}

/// `portcullis demo`: synthesise a mixed week, replay it with the policy, print the report.
pub fn run_demo(args: &DemoArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let trace = dir.path().join("mixed_week.jsonl");
    eprintln!(
        "synthesising a mixed attack week ({} users, seed {}) ...",
        args.users, args.seed
    );
    let events = synth::generate(&SynthConfig {
        scenario: Scenario::MixedWeek,
        seed: args.seed,
        users: args.users,
    });
    write_trace(&events, &trace)?;
    eprintln!(
        "replaying {} events with {} ...",
        events.len(),
        args.policy.display()
    );
    let report = replay_file(&args.policy, &trace)?;
    if let Some(path) = &args.report {
        write_report(&report, path)?;
    }
    print_summary(&report);
    println!("\n{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus() -> Vec<usize> {
        cpus_of_this_thread().expect("this thread's CPU set")
    }

    #[test]
    fn the_cpu_pair_is_two_cpus_the_thread_may_use_and_the_engine_pin_is_undone() {
        let before = cpus();
        let Some(pair) = CpuPair::pick() else {
            assert!(before.len() < 2, "{before:?} allowed, yet no pair");
            eprintln!("skipped: this thread may use one CPU only");
            return;
        };
        assert_ne!(pair.engine, pair.reader);
        assert!(before.contains(&pair.engine) && before.contains(&pair.reader));
        let engine = pair.engine;
        let guard = pair.pin_engine().expect("pinning to an allowed CPU");
        assert_eq!(cpus(), vec![engine]);
        drop(guard);
        assert_eq!(cpus(), before);
    }
}
