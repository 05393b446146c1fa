//! Decisions per second and check latency: the embedded store (sled, in-memory engine with
//! write-behind) against the shared Redis store with one and two instances (in-process, each its
//! own connection). Not a test: run it by hand, release build.
//!
//! ```sh
//! cargo run --release -p portcullis-server --example store_bench -- [redis://127.0.0.1:6379] [ops]
//! ```
//!
//! Each decision is a check and, when forwarded, its outcome (90% wrong password, 10% success),
//! from 64 concurrent clients over 20,000 accounts and 5,000 addresses. Latency is the check's.

use portcullis_engine::store::{SledStore, Store};
use portcullis_engine::{Attempt, Engine, Limits, Options, Outcome, Policy, Timestamp, Verdict};
use portcullis_server::shared::{RedisStore, StoreOptions};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;
const T0: i64 = 1_793_000_000_000;

fn policy() -> Policy {
    Policy::from_toml("[defaults.sources]\nrate_per_second = 1000000\nrate_burst = 1000000\n")
        .expect("bench policy")
}

enum Backend {
    Sled(Arc<Engine>),
    Redis(Vec<Arc<RedisStore>>),
}

impl Backend {
    async fn decide(&self, i: u64, now: Timestamp) -> Duration {
        let user = format!("user{}", i.wrapping_mul(7919) % 20_000);
        let ip: IpAddr = format!("10.{}.{}.{}", i % 20, (i / 20) % 250, i % 13 + 1)
            .parse()
            .unwrap();
        let pw = (i % 97).to_le_bytes();
        let a = Attempt {
            tenant: "contoso",
            user: &user,
            ip,
            fingerprint: Some(&pw),
        };
        let result = if i % 10 == 0 {
            Outcome::Success
        } else {
            Outcome::WrongPassword
        };
        let t0 = Instant::now();
        match self {
            Backend::Sled(e) => {
                let d = e.check(&a, now).unwrap();
                let took = t0.elapsed();
                if d.verdict == Verdict::Forward {
                    e.outcome(d.attempt_id.unwrap(), result, None, now).unwrap();
                }
                took
            }
            Backend::Redis(stores) => {
                let s = &stores[i as usize % stores.len()];
                let d = s.check(&a, now).await.unwrap();
                let took = t0.elapsed();
                if d.verdict == Verdict::Forward {
                    let o = &stores[(i as usize + 1) % stores.len()];
                    o.outcome(d.attempt_id.unwrap(), result, None, now)
                        .await
                        .unwrap();
                }
                took
            }
        }
    }
}

async fn run(name: &str, backend: Arc<Backend>, ops: u64) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS as u64 {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c;
            while i < ops {
                let now = Timestamp::from_millis(T0 + i as i64);
                lat.push(backend.decide(i, now).await);
                i += CLIENTS as u64;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let wall = start.elapsed();
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "| {name} | {:.0} | {:.3} | {:.3} |",
        ops as f64 / wall.as_secs_f64(),
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let ops: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    println!("{ops} decisions, {CLIENTS} concurrent clients\n");
    println!("| store | decisions/s | p50 check ms | p99 check ms |");
    println!("| --- | ---: | ---: | ---: |");

    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    let secret = sled.secret().unwrap();
    let store: Arc<dyn Store> = Arc::new(sled);
    let engine = Engine::new(
        policy(),
        Options {
            secret,
            store: Some(store),
            limits: Limits::default(),
            key_scheme: portcullis_engine::KeyScheme::default(),
        },
    )
    .unwrap();
    run(
        "sled (embedded), 1 instance",
        Arc::new(Backend::Sled(Arc::new(engine))),
        ops,
    )
    .await;

    for n in [1usize, 2] {
        let mut opts = StoreOptions::new(url.clone());
        opts.namespace = format!("bench-{:x}", rand::random::<u32>());
        opts.timeout = Duration::from_secs(5);
        let mut stores = Vec::new();
        for _ in 0..n {
            stores.push(Arc::new(RedisStore::open(&opts, policy()).await.unwrap()));
        }
        let name = format!("redis, {n} instance{}", if n > 1 { "s" } else { "" });
        run(&name, Arc::new(Backend::Redis(stores)), ops).await;
        cleanup(&url, &opts.namespace).await;
    }
}

async fn cleanup(url: &str, ns: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{ns}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut c)
                .await
                .unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}
