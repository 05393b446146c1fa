//! `portcullis-load`: a load generator for a running `portcullis serve`, on loopback only.
//!
//! It replays a trace's attempts over HTTP (check + outcome pairs, validate, batches) or gRPC
//! (unary, streams), closed-loop (`--concurrency` workers as fast as answers come back: maximum
//! throughput) or open-loop (`--rate` attempts per second on a fixed schedule: latency).
//! Latencies go to an HDR histogram measured from each attempt's *intended* start, so an
//! open-loop run is corrected for coordinated omission. Every run is bounded by `--duration` and
//! `--max-attempts`. The result is one JSON object on stdout.
//!
//! `portcullis-load bare` serves a bare axum and a bare tonic server answering fixed bodies (the
//! same routes and gRPC service as Portcullis), and `portcullis-load suite` runs each mode against
//! both a running service and a bare server it starts, so each figure comes with its ratio to the
//! framework's own limit on the same machine in the same run.
//!
//! ```text
//! portcullis serve ... &                # HTTP on 127.0.0.1:8080, gRPC on 127.0.0.1:50051
//! portcullis-load suite --trace ../shared/data/synthetic/mixed_week.jsonl \
//!     --http http://127.0.0.1:8080 --grpc http://127.0.0.1:50051 --duration 5
//! portcullis-load run --mode http-pair --rate 10000 --http http://127.0.0.1:8080 --trace T
//! ```

// tonic's `Status` is the error type of every stream item here: large, and not ours to change.
#![allow(clippy::result_large_err)]

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use indicatif::{ProgressBar, ProgressStyle};
use portcullis_engine::trace::{TraceEvent, TraceReader, Truth};
use portcullis_server::pb::gate_client::GateClient;
use portcullis_server::pb::gate_server::{Gate, GateServer};
use portcullis_server::pb::{
    CheckRequest, CheckResponse, CheckStreamResponse, OutcomeRequest, OutcomeResponse,
    OutcomeStreamResponse, ValidateRequest, ValidateResponse,
};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

#[derive(Parser)]
#[command(
    name = "portcullis-load",
    about = "Load generator for portcullis serve (loopback only)"
)]
struct Cli {
    /// Run every thread (and `suite`'s bare servers) under `SCHED_RR` at this priority (1-99),
    /// ahead of the machine's other daemons, whose slices would otherwise show up in the
    /// measured tail; start the service with `portcullis serve --realtime` to compare like with
    /// like. Needs CAP_SYS_NICE or `RLIMIT_RTPRIO`; refused, not ignored, without.
    #[arg(long, global = true, value_name = "PRIORITY")]
    realtime: Option<u8>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One load run against a service.
    Run(RunArgs),
    /// Serve a bare axum (HTTP) and a bare tonic (gRPC) server answering fixed bodies.
    Bare {
        /// HTTP address.
        #[arg(long, default_value = "127.0.0.1:18080")]
        http: SocketAddr,
        /// gRPC address.
        #[arg(long, default_value = "127.0.0.1:15051")]
        grpc: SocketAddr,
    },
    /// Every mode against the service and against a bare server started here, with ratios.
    Suite(SuiteArgs),
}

/// What one attempt is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    /// `POST /v1/check`, then `POST /v1/outcome` when forwarded.
    HttpPair,
    /// `POST /v1/validate` (in-line mode).
    HttpValidate,
    /// `POST /v1/check/batch` of `--batch` attempts, then `POST /v1/outcome/batch`.
    HttpBatch,
    /// gRPC `Check`, then `Outcome` when forwarded.
    GrpcUnary,
    /// gRPC `CheckStream` and `OutcomeStream`, `--batch` requests in flight per stream.
    GrpcStream,
}

#[derive(Parser, Clone)]
struct RunArgs {
    /// The mode.
    #[arg(long, value_enum, default_value = "http-pair")]
    mode: Mode,
    /// The trace whose attempts are sent (JSON Lines, `.gz` too).
    #[arg(long)]
    trace: PathBuf,
    /// The service's HTTP base URL (loopback).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
    /// The service's gRPC URL (loopback).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc: String,
    /// Workers (closed loop) or the most attempts in flight (open loop).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop: attempts per second on a fixed schedule. Closed loop when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of load (after a 1 s warm-up that is not recorded).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// At most this many attempts.
    #[arg(long, default_value_t = 10_000_000)]
    max_attempts: u64,
    /// Attempts per batch request or per stream window.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Also report latency and throughput per interval of this many seconds (`intervals` in
    /// the JSON result): a soak run shows whether latency stays flat.
    #[arg(long)]
    interval: Option<f64>,
    /// Open loop: what releases each unit at its due time. `tokio` sleeps on tokio's timer,
    /// which wakes on whole milliseconds, so units leave up to 1-2 ms late and in bursts;
    /// `thread` releases them from a thread of its own that sleeps on the kernel's
    /// high-resolution timer, waking at most once per `--pacer-gap-us`.
    #[arg(long, value_enum, default_value = "thread")]
    pacer: Pacer,
    /// The shortest sleep of the `thread` pacer, in microseconds: fewer wake-ups cost the
    /// cores the server shares less, and release a few units together.
    #[arg(long, default_value_t = 100)]
    pacer_gap_us: u64,
    /// The generator's `SCHED_RR` priority (the global `--realtime`), for the result.
    #[arg(skip)]
    realtime: Option<u8>,
}

/// What releases open-loop units at their due times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Pacer {
    /// `tokio::time::sleep_until` in each worker (millisecond ticks).
    Tokio,
    /// A pacer thread that hands out permits on the kernel's high-resolution timer.
    Thread,
}

#[derive(Parser)]
struct SuiteArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Modes to run (all but validate by default).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "http-pair,http-batch,grpc-unary,grpc-stream"
    )]
    modes: Vec<Mode>,
    /// Also run each mode open-loop at half its closed-loop rate, for latency, against the service
    /// and against the bare server at the same rate.
    #[arg(long)]
    half_rate: bool,
    /// Where the bare HTTP server this suite starts listens.
    #[arg(long, default_value = "127.0.0.1:18080")]
    bare_http: std::net::SocketAddr,
    /// Where the bare gRPC server this suite starts listens.
    #[arg(long, default_value = "127.0.0.1:15051")]
    bare_grpc: std::net::SocketAddr,
}

/// One attempt from the trace.
#[derive(Clone)]
struct Item {
    tenant: String,
    user: String,
    ip: String,
    pw: String,
    result: &'static str,
    /// The `/v1/check` body, serialised once when the trace is loaded.
    check: Bytes,
    /// The `/v1/validate` body (the check's fields and a payload for the agent), likewise.
    validate: Bytes,
}

fn load_trace(path: &std::path::Path) -> Result<Arc<Vec<Item>>> {
    let reader = TraceReader::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut items = Vec::new();
    for ev in reader {
        let ev: TraceEvent = ev?;
        let mut it = Item {
            tenant: ev.tenant,
            user: ev.user,
            ip: ev.ip.to_string(),
            pw: ev.pw,
            result: match ev.truth {
                Truth::Correct => "success",
                Truth::Wrong => "wrong_password",
                Truth::UnknownUser => "unknown_user",
            },
            check: Bytes::new(),
            validate: Bytes::new(),
        };
        let mut body = check_body(&it);
        it.check = Bytes::from(serde_json::to_vec(&body)?);
        body["payload"] = json!({"load": true});
        it.validate = Bytes::from(serde_json::to_vec(&body)?);
        items.push(it);
    }
    if items.is_empty() {
        bail!("the trace has no attempts");
    }
    Ok(Arc::new(items))
}

fn loopback_only(url: &str) -> Result<()> {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        Ok(())
    } else {
        bail!("{url}: the load generator drives loopback services only")
    }
}

/// What a run measured.
#[derive(serde::Serialize)]
struct RunResult {
    mode: Mode,
    target: String,
    loop_kind: &'static str,
    concurrency: usize,
    batch: usize,
    target_rate: Option<f64>,
    /// What released the units of an open-loop run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pacer: Option<Pacer>,
    /// The generator's `SCHED_RR` priority, when it ran under `--realtime`.
    #[serde(skip_serializing_if = "Option::is_none")]
    realtime: Option<u8>,
    attempts: u64,
    requests: u64,
    errors: u64,
    seconds: f64,
    attempts_per_second: f64,
    requests_per_second: f64,
    latency_us: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    intervals: Vec<Value>,
}

/// Shared counters of a run.
struct Shared {
    items: Arc<Vec<Item>>,
    next: AtomicU64,
    attempts: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    recording: AtomicBool,
    /// The current interval's latencies, when `--interval` is set.
    window: Option<std::sync::Mutex<Histogram<u64>>>,
}

impl Shared {
    fn item(&self, i: u64) -> &Item {
        &self.items[(i % self.items.len() as u64) as usize]
    }
}

fn check_body(it: &Item) -> Value {
    json!({"tenant": it.tenant, "user": it.user, "ip": it.ip, "pw": it.pw})
}

/// The fields of a check's answer that the generator reads.
#[derive(serde::Deserialize)]
struct CheckAnswer<'a> {
    decision: &'a str,
    #[serde(default)]
    id: Option<&'a str>,
}

/// Appends the `/v1/outcome` body for a forwarded attempt of `it` to `out` (ids are digits,
/// results fixed words: nothing to escape).
fn push_outcome(out: &mut Vec<u8>, id: &str, it: &Item) {
    for part in [r#"{"id":""#, id, r#"","result":""#, it.result, r#""}"#] {
        out.extend_from_slice(part.as_bytes());
    }
}

/// A lean HTTP/1.1 client on one keep-alive connection, one per worker. The generator shares the
/// two cores with the server it measures, so a request should cost it as little as it can:
/// reqwest's pool, URL parsing and `Value` bodies cost it about as much CPU as the bare server
/// spent answering. Reconnects after an error or a closed connection.
struct Http1 {
    addr: SocketAddr,
    host: HeaderValue,
    conn: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Http1 {
    /// A client of the loopback base URL `base` (`http://host:port`).
    fn new(base: &str) -> Result<Http1> {
        let authority = base
            .strip_prefix("http://")
            .with_context(|| format!("{base}: only http:// URLs are driven"))?
            .trim_end_matches('/');
        let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
            .with_context(|| format!("{base}: not a host:port"))?
            .next()
            .with_context(|| format!("{base}: no address"))?;
        Ok(Http1 {
            addr,
            host: HeaderValue::from_str(authority)?,
            conn: None,
        })
    }

    /// A client of the same server on a connection of its own (made on first use).
    fn fresh(&self) -> Http1 {
        Http1 {
            addr: self.addr,
            host: self.host.clone(),
            conn: None,
        }
    }

    /// POSTs a JSON `body` to `path`; the answer's body, or an error for a failure or a status
    /// other than 2xx.
    async fn post(&mut self, path: &'static str, body: Bytes) -> Result<Bytes> {
        let r = self.try_post(path, body).await;
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn try_post(&mut self, path: &'static str, body: Bytes) -> Result<Bytes> {
        if self.conn.as_ref().map_or(true, |c| c.is_closed()) {
            let tcp = tokio::net::TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let (send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            self.conn = Some(send);
        }
        let conn = self.conn.as_mut().context("connected above")?;
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, self.host.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        conn.ready().await?;
        let resp = conn.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("HTTP {status}");
        }
        Ok(body)
    }
}

/// One unit of work (one attempt, or one batch/window of them). Returns (attempts, requests).
async fn unit(
    mode: Mode,
    sh: &Shared,
    http: &mut Http1,
    grpc: &mut Option<GateClient<Channel>>,
    streams: &mut Option<StreamPair>,
    batch: usize,
) -> Result<(u64, u64)> {
    match mode {
        Mode::HttpPair => {
            let it = sh.item(sh.next.fetch_add(1, Ordering::Relaxed));
            let answer = http.post("/v1/check", it.check.clone()).await?;
            let d: CheckAnswer<'_> = serde_json::from_slice(&answer)?;
            if d.decision == "forward" {
                let mut body = Vec::with_capacity(64);
                push_outcome(
                    &mut body,
                    d.id.context("a forwarded check without an id")?,
                    it,
                );
                http.post("/v1/outcome", Bytes::from(body)).await?;
                return Ok((1, 2));
            }
            Ok((1, 1))
        }
        Mode::HttpValidate => {
            let it = sh.item(sh.next.fetch_add(1, Ordering::Relaxed));
            http.post("/v1/validate", it.validate.clone()).await?;
            Ok((1, 1))
        }
        Mode::HttpBatch => {
            let i0 = sh.next.fetch_add(batch as u64, Ordering::Relaxed);
            let items: Vec<&Item> = (0..batch as u64).map(|k| sh.item(i0 + k)).collect();
            let mut body =
                Vec::with_capacity(items.iter().map(|it| it.check.len() + 1).sum::<usize>() + 2);
            body.push(b'[');
            for (k, it) in items.iter().enumerate() {
                if k > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&it.check);
            }
            body.push(b']');
            let answer = http.post("/v1/check/batch", Bytes::from(body)).await?;
            let answers: Vec<CheckAnswer<'_>> = serde_json::from_slice(&answer)?;
            let mut outs = Vec::with_capacity(batch * 48 + 2);
            outs.push(b'[');
            for (d, it) in answers.iter().zip(&items) {
                if d.decision == "forward" {
                    if outs.len() > 1 {
                        outs.push(b',');
                    }
                    push_outcome(
                        &mut outs,
                        d.id.context("a forwarded check without an id")?,
                        it,
                    );
                }
            }
            outs.push(b']');
            if outs.len() > 2 {
                http.post("/v1/outcome/batch", Bytes::from(outs)).await?;
                return Ok((batch as u64, 2));
            }
            Ok((batch as u64, 1))
        }
        Mode::GrpcUnary => {
            let g = grpc.as_mut().context("no gRPC client")?;
            let it = sh.item(sh.next.fetch_add(1, Ordering::Relaxed));
            let d = g.check(check_req(it)).await?.into_inner();
            if d.decision == "forward" {
                g.outcome(OutcomeRequest {
                    id: d.id,
                    result: it.result.into(),
                    pw: None,
                })
                .await?;
                return Ok((1, 2));
            }
            Ok((1, 1))
        }
        Mode::GrpcStream => {
            let s = streams.as_mut().context("no streams")?;
            let i0 = sh.next.fetch_add(batch as u64, Ordering::Relaxed);
            let items: Vec<&Item> = (0..batch as u64).map(|k| sh.item(i0 + k)).collect();
            for it in &items {
                s.check_tx.send(check_req(it)).await?;
            }
            let mut outs = 0;
            for it in &items {
                let a = s.check_rx.message().await?.context("check stream ended")?;
                if let Some(d) = a.decision.filter(|d| d.decision == "forward") {
                    s.outcome_tx
                        .send(OutcomeRequest {
                            id: d.id,
                            result: it.result.into(),
                            pw: None,
                        })
                        .await?;
                    outs += 1;
                }
            }
            for _ in 0..outs {
                s.outcome_rx
                    .message()
                    .await?
                    .context("outcome stream ended")?;
            }
            Ok((batch as u64, batch as u64 + outs))
        }
    }
}

fn check_req(it: &Item) -> CheckRequest {
    CheckRequest {
        tenant: it.tenant.clone(),
        user: it.user.clone(),
        ip: it.ip.clone(),
        pw: Some(it.pw.clone().into_bytes()),
        app: None,
    }
}

/// A worker's pair of open streams.
struct StreamPair {
    check_tx: tokio::sync::mpsc::Sender<CheckRequest>,
    check_rx: Streaming<CheckStreamResponse>,
    outcome_tx: tokio::sync::mpsc::Sender<OutcomeRequest>,
    outcome_rx: Streaming<OutcomeStreamResponse>,
}

async fn open_streams(g: &mut GateClient<Channel>, window: usize) -> Result<StreamPair> {
    let (check_tx, rx) = tokio::sync::mpsc::channel(window.max(1));
    let check_rx = g
        .check_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (outcome_tx, rx) = tokio::sync::mpsc::channel(window.max(1));
    let outcome_rx = g
        .outcome_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(StreamPair {
        check_tx,
        check_rx,
        outcome_tx,
        outcome_rx,
    })
}

/// One bounded run.
async fn run(args: &RunArgs, items: Arc<Vec<Item>>) -> Result<RunResult> {
    loopback_only(&args.http)?;
    loopback_only(&args.grpc)?;
    let http = Http1::new(&args.http)?;
    let grpc_needed = matches!(args.mode, Mode::GrpcUnary | Mode::GrpcStream);
    let channel = if grpc_needed {
        Some(
            Channel::from_shared(args.grpc.clone())?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to {}", args.grpc))?,
        )
    } else {
        None
    };
    let sh = Arc::new(Shared {
        items,
        next: AtomicU64::new(0),
        attempts: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        recording: AtomicBool::new(false),
        window: args.interval.map(|_| {
            std::sync::Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"))
        }),
    });
    let per_unit = match args.mode {
        Mode::HttpBatch | Mode::GrpcStream => args.batch.max(1) as u64,
        _ => 1,
    };
    // Open loop: unit k is due at start + k * per_unit / rate.
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(per_unit as f64 / r));
    let schedule = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs(1);
    let t0 = Instant::now() + Duration::from_millis(50);
    let permits = match (interval, args.pacer) {
        (Some(iv), Pacer::Thread) => {
            let sem = Arc::new(tokio::sync::Semaphore::new(0));
            let (s, gap, sh) = (
                sem.clone(),
                Duration::from_micros(args.pacer_gap_us.max(1)),
                sh.clone(),
            );
            std::thread::Builder::new()
                .name("pacer".into())
                .spawn(move || pace(t0, iv, gap, &s, &sh.stop))
                .context("starting the pacer thread")?;
            Some(sem)
        }
        _ => None,
    };
    let record_from = t0 + warmup;
    let pb = if args.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new((args.duration * 10.0) as u64);
        pb.set_style(ProgressStyle::with_template("{prefix} [{bar:30}] {msg}").expect("template"));
        pb.set_prefix(format!("{:?}", args.mode));
        pb
    };
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let sh = sh.clone();
        let mut http = http.fresh();
        let mode = args.mode;
        let batch = args.batch.max(1);
        let schedule = schedule.clone();
        let permits = permits.clone();
        let mut grpc = channel.clone().map(GateClient::new);
        let max = args.max_attempts;
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            // From the moment the unit was sent: without the generator's own lateness in
            // sending it (a pacer that wakes late, or every worker busy with earlier units).
            let mut sent_hist = hist.clone();
            let mut streams = None;
            if mode == Mode::GrpcStream {
                if let Some(g) = grpc.as_mut() {
                    streams = Some(open_streams(g, batch).await?);
                }
            }
            while !sh.stop.load(Ordering::Relaxed) {
                let intended = match interval {
                    Some(iv) => {
                        // The pacer thread releases a permit for every unit already due, so a
                        // unit taken after one is due now or past: lateness counts from then.
                        if let Some(permits) = &permits {
                            match permits.acquire().await {
                                Ok(p) => p.forget(),
                                Err(_) => break,
                            }
                        }
                        let due = t0 + iv * schedule.fetch_add(1, Ordering::Relaxed) as u32;
                        if permits.is_none() {
                            tokio::time::sleep_until(due.into()).await;
                        }
                        due
                    }
                    None => Instant::now(),
                };
                if sh.stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = Instant::now();
                let r = unit(mode, &sh, &mut http, &mut grpc, &mut streams, batch).await;
                let done = Instant::now();
                if !sh.recording.load(Ordering::Relaxed) || intended < record_from {
                    continue;
                }
                match r {
                    Ok((a, q)) => {
                        let us = done.duration_since(intended).as_micros().max(1) as u64;
                        hist.saturating_record(us);
                        sent_hist
                            .saturating_record(done.duration_since(sent).as_micros().max(1) as u64);
                        if let Some(w) = &sh.window {
                            if let Ok(mut w) = w.lock() {
                                w.saturating_record(us);
                            }
                        }
                        let n = sh.attempts.fetch_add(a, Ordering::Relaxed) + a;
                        sh.requests.fetch_add(q, Ordering::Relaxed);
                        if n >= max {
                            sh.stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        sh.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            anyhow::Ok((hist, sent_hist))
        }));
    }
    tokio::time::sleep_until(record_from.into()).await;
    sh.recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut intervals = Vec::new();
    let mut last = (0.0f64, 0u64, 0u64);
    while started.elapsed().as_secs_f64() < args.duration && !sh.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        pb.inc(1);
        let secs = started.elapsed().as_secs_f64();
        if let (Some(every), Some(w)) = (args.interval, &sh.window) {
            if secs - last.0 >= every {
                let h = w.lock().map(|mut w| {
                    let h = w.clone();
                    w.reset();
                    h
                });
                if let Ok(h) = h {
                    let (a, e) = (
                        sh.attempts.load(Ordering::Relaxed),
                        sh.errors.load(Ordering::Relaxed),
                    );
                    intervals.push(json!({
                        "t_s": (secs * 10.0).round() / 10.0,
                        "attempts_per_second": (a - last.1) as f64 / (secs - last.0),
                        "errors": e - last.2,
                        "p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99),
                        "max_us": h.max(),
                    }));
                    last = (secs, a, e);
                }
            }
        }
        pb.set_message(format!(
            "{:.0} attempts/s, {} errors",
            sh.attempts.load(Ordering::Relaxed) as f64 / secs,
            sh.errors.load(Ordering::Relaxed)
        ));
    }
    sh.stop.store(true, Ordering::Relaxed);
    sh.recording.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut sent_hist = hist.clone();
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(Ok((h, sh)))) => {
                hist.add(&h).expect("same bounds");
                sent_hist.add(&sh).expect("same bounds");
            }
            Ok(Ok(Err(e))) => bail!("a worker failed: {e:#}"),
            _ => {}
        }
    }
    let attempts = sh.attempts.load(Ordering::Relaxed);
    let requests = sh.requests.load(Ordering::Relaxed);
    let q = |p: f64| hist.value_at_quantile(p);
    Ok(RunResult {
        mode: args.mode,
        target: if grpc_needed {
            args.grpc.clone()
        } else {
            args.http.clone()
        },
        loop_kind: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        concurrency: args.concurrency,
        batch: per_unit as usize,
        target_rate: args.rate,
        pacer: args.rate.map(|_| args.pacer),
        realtime: args.realtime,
        attempts,
        requests,
        errors: sh.errors.load(Ordering::Relaxed),
        seconds,
        attempts_per_second: attempts as f64 / seconds,
        requests_per_second: requests as f64 / seconds,
        latency_us: json!({
            "unit": if per_unit > 1 { "per batch/window" } else { "per attempt" },
            "corrected_for_coordinated_omission": args.rate.is_some(),
            "count": hist.len(), "mean": hist.mean(), "p50": q(0.5), "p90": q(0.9),
            "p99": q(0.99), "p999": q(0.999), "max": hist.max(),
            // The same units timed from when each was sent, not from when it was due.
            "from_send": {
                "p50": sent_hist.value_at_quantile(0.5), "p99": sent_hist.value_at_quantile(0.99),
                "p999": sent_hist.value_at_quantile(0.999), "max": sent_hist.max(),
            },
        }),
        intervals,
    })
}

/// The `thread` pacer: releases one permit per unit as each falls due (unit k is due at
/// `t0 + k * iv`), sleeping on the kernel's timer between releases but never less than `gap`,
/// and closes the semaphore on `stop` so that waiting workers end.
fn pace(
    t0: Instant,
    iv: Duration,
    gap: Duration,
    permits: &tokio::sync::Semaphore,
    stop: &AtomicBool,
) {
    let iv_ns = iv.as_nanos().max(1);
    let mut released: u128 = 0;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= t0 {
            let due = now.duration_since(t0).as_nanos() / iv_ns + 1;
            if due > released {
                permits.add_permits((due - released) as usize);
                released = due;
            }
        }
        let next = t0 + Duration::from_nanos((released * iv_ns).min(u64::MAX as u128) as u64);
        let wake = next.max(now + gap);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    permits.close();
}

/// The bare gRPC service: fixed answers, the same service definition.
struct BareGate;

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn fixed_check() -> CheckResponse {
    CheckResponse {
        id: "1".into(),
        decision: "forward".into(),
        reason: None,
        retry_after_s: None,
    }
}

#[tonic::async_trait]
impl Gate for BareGate {
    type CheckStreamStream = Answers<CheckStreamResponse>;
    type OutcomeStreamStream = Answers<OutcomeStreamResponse>;

    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(fixed_check()))
    }
    async fn outcome(
        &self,
        _: Request<OutcomeRequest>,
    ) -> Result<Response<OutcomeResponse>, Status> {
        Ok(Response::new(OutcomeResponse::default()))
    }
    async fn validate(
        &self,
        _: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        Ok(Response::new(ValidateResponse {
            id: "1".into(),
            decision: "forward".into(),
            result: Some("success".into()),
            ..Default::default()
        }))
    }
    async fn check_stream(
        &self,
        req: Request<Streaming<CheckRequest>>,
    ) -> Result<Response<Self::CheckStreamStream>, Status> {
        let s = req.into_inner().map(|r| {
            r.map(|_| CheckStreamResponse {
                decision: Some(fixed_check()),
                error: None,
            })
        });
        Ok(Response::new(Box::pin(s)))
    }
    async fn outcome_stream(
        &self,
        req: Request<Streaming<OutcomeRequest>>,
    ) -> Result<Response<Self::OutcomeStreamStream>, Status> {
        let s = req.into_inner().map(|r| {
            r.map(|_| OutcomeStreamResponse {
                recorded: Some(OutcomeResponse::default()),
                error: None,
            })
        });
        Ok(Response::new(Box::pin(s)))
    }
}

/// Serves the bare servers until killed.
async fn bare(http: SocketAddr, grpc: SocketAddr) -> Result<()> {
    use axum::routing::post;
    const CHECK: &str = r#"{"id":"1","decision":"forward"}"#;
    const OUTCOME: &str = r#"{"recorded":true,"lockout_started":false,"source_blocked":false,"spray_detected":false,"account_flagged":false}"#;
    let json = |b: &'static str| ([(axum::http::header::CONTENT_TYPE, "application/json")], b);
    // A batch is answered with one fixed item per item, found by counting `{` at depth one: the
    // least a framework can do to answer in kind.
    async fn batch(body: axum::body::Bytes) -> impl axum::response::IntoResponse {
        let n = body.iter().filter(|&&b| b == b'{').count();
        let mut out = String::with_capacity(n * 34 + 2);
        out.push('[');
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            out.push_str(r#"{"id":"1","decision":"forward"}"#);
        }
        out.push(']');
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            out,
        )
    }
    let app = axum::Router::new()
        .route("/v1/check", post(move || async move { json(CHECK) }))
        .route("/v1/validate", post(move || async move { json(CHECK) }))
        .route("/v1/outcome", post(move || async move { json(OUTCOME) }))
        .route("/v1/check/batch", post(batch))
        .route("/v1/outcome/batch", post(batch));
    let listener = tokio::net::TcpListener::bind(http).await?;
    let h = tokio::spawn(async move { axum::serve(listener, app).await });
    let g = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GateServer::new(BareGate))
            .serve(grpc),
    );
    eprintln!("bare servers: http://{http} grpc://{grpc}");
    tokio::select! {
        r = h => { r??; }
        r = g => { r??; }
    }
    Ok(())
}

async fn suite(args: SuiteArgs) -> Result<()> {
    let items = load_trace(&args.run.trace)?;
    let exe = std::env::current_exe()?;
    let mut bare_cmd = std::process::Command::new(exe);
    if let Some(p) = args.run.realtime {
        bare_cmd.args(["--realtime", &p.to_string()]);
    }
    let mut child = bare_cmd
        .args([
            "bare",
            "--http",
            &args.bare_http.to_string(),
            "--grpc",
            &args.bare_grpc.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("starting the bare servers")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rows = Vec::new();
    let mut result = Ok(());
    for mode in &args.modes {
        let mut svc = args.run.clone();
        svc.mode = *mode;
        let mut bare = svc.clone();
        bare.http = format!("http://{}", args.bare_http);
        bare.grpc = format!("http://{}", args.bare_grpc);
        let s = match run(&svc, items.clone()).await {
            Ok(s) => s,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let b = run(&bare, items.clone()).await?;
        let mut row = json!({
            "mode": mode,
            "service": s,
            "bare": b,
            "ratio_to_bare": s.requests_per_second / b.requests_per_second.max(1e-9),
        });
        if args.half_rate {
            let mut half = svc.clone();
            half.rate = Some(s.attempts_per_second / 2.0);
            half.concurrency = half.concurrency.max(64);
            row["service_half_rate"] = serde_json::to_value(run(&half, items.clone()).await?)?;
            // The bare server at the same rate: the latency floor of the framework and of this
            // generator's pacing, from the same run.
            let mut bare_half = half.clone();
            bare_half.http = bare.http.clone();
            bare_half.grpc = bare.grpc.clone();
            row["bare_half_rate"] = serde_json::to_value(run(&bare_half, items.clone()).await?)?;
        }
        eprintln!(
            "{mode:?}: service {:.0} attempts/s ({:.0} req/s), bare {:.0} req/s, ratio {:.2}",
            s.attempts_per_second,
            s.requests_per_second,
            b.requests_per_second,
            row["ratio_to_bare"].as_f64().unwrap_or(0.0)
        );
        rows.push(row);
    }
    let _ = child.kill();
    let _ = child.wait();
    result?;
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}

fn main() -> Result<()> {
    let mut cli = Cli::parse();
    if let Some(p) = cli.realtime {
        // Before the runtime and the pacer start threads: each inherits the policy.
        portcullis_server::sched::run_realtime(p, "--realtime")?;
    }
    match &mut cli.cmd {
        Cmd::Run(args) => args.realtime = cli.realtime,
        Cmd::Suite(args) => args.run.realtime = cli.realtime,
        Cmd::Bare { .. } => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run(args) => {
                let items = load_trace(&args.trace)?;
                let r = run(&args, items).await?;
                println!("{}", serde_json::to_string_pretty(&r)?);
                Ok(())
            }
            Cmd::Bare { http, grpc } => bare(http, grpc).await,
            Cmd::Suite(args) => suite(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_never_releases_a_unit_before_it_is_due_and_closes_on_stop() {
        let iv = Duration::from_micros(500);
        // Ten units were already due when the pacer started.
        let t0 = Instant::now() - iv * 9;
        let permits = Arc::new(tokio::sync::Semaphore::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (permits.clone(), stop.clone());
        let pacer = std::thread::spawn(move || pace(t0, iv, Duration::from_micros(100), &p, &s));
        // Wait (bounded) for the pacer's first release, then stop it.
        let waited = Instant::now();
        while permits.available_permits() == 0 && waited.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        pacer.join().expect("the pacer ends on stop");
        let ended = Instant::now();
        assert!(permits.is_closed(), "waiting workers are let go");
        let released = permits.available_permits() as u128;
        assert!(released >= 10, "{released} released; ten were due at once");
        // Unit k is due at t0 + k * iv: no more than were due when it stopped.
        let due = ended.duration_since(t0).as_nanos() / iv.as_nanos() + 1;
        assert!(released <= due, "{released} released, {due} due");
    }
}
