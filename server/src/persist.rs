//! The embedded store's life in the service: opening it at start (and what happens when it cannot
//! be read), and the write-behind flush with its fault handling.
//!
//! # At start
//! The sled directory is opened as it is: sled recovers its own log after a crash (`kill -9`,
//! power loss), so no repair step exists or is needed. A store that cannot be opened or read
//! (corrupt files, wrong permissions, a file where the directory should be) stops the start with
//! an error naming the path and the way out; the service never starts empty on its own. Only
//! `serve --reset-store` moves an unreadable store aside to `<dir>.corrupt-<unix seconds>` and
//! starts with an empty one (a readable store is opened as usual, the flag then does nothing).
//!
//! # At run time
//! Decisions never wait for the store: they are taken from memory, and changes are written
//! behind every `flush_interval`. When a write fails (a full disk, an I/O error), the records
//! stay marked changed ([`portcullis_engine::Engine::flush`]), the fault is logged when it starts
//! and then at most once per [`FAULT_LOG_INTERVAL`], the `store_persist_ok` gauge drops to 0,
//! `store_write_errors_total` counts each failed flush, and `/readyz` reports the fault (still
//! 200: the service decides correctly from memory). Retries back off from `flush_interval` to
//! ten times it (at most 30 s); each retry reopens the store in place ([`SledStore`]). When a
//! write succeeds again everything kept back is written, and the recovery is logged.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics as m;
use portcullis_engine::store::{SledStore, Store};
use portcullis_engine::{Engine, Limits, Options, Policy};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// While the store keeps failing, the fault is logged at most this often.
pub const FAULT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Opens the sled store in `config.data` and builds the engine over it, loading its state.
/// Returns the engine and the installation secret.
pub fn open_engine(config: &Config, policy: Policy) -> Result<(Arc<Engine>, [u8; 32])> {
    let dir = &config.data;
    match try_open(dir, policy.clone(), config.limits) {
        Ok(opened) => Ok(opened),
        Err(reason) if config.reset_store => {
            let aside = aside_path(dir);
            std::fs::rename(dir, &aside).map_err(|e| Error::StoreOpen {
                path: dir.display().to_string(),
                reason: format!(
                    "{reason}; moving it aside to {} failed too: {e}",
                    aside.display()
                ),
            })?;
            tracing::warn!(
                data = %dir.display(),
                moved_to = %aside.display(),
                cause = %reason,
                "The store could not be opened: --reset-store moved it aside; starting with an empty store."
            );
            try_open(dir, policy, config.limits).map_err(|reason| Error::StoreOpen {
                path: dir.display().to_string(),
                reason,
            })
        }
        Err(reason) => Err(Error::StoreOpen {
            path: dir.display().to_string(),
            reason,
        }),
    }
}

/// Where `--reset-store` moves an unreadable store.
fn aside_path(dir: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{secs}"));
    dir.with_file_name(name)
}

fn try_open(
    dir: &Path,
    policy: Policy,
    limits: Limits,
) -> std::result::Result<(Arc<Engine>, [u8; 32]), String> {
    crate::service::create_private_dir(dir).map_err(|e| e.to_string())?;
    // sled 0.34 can panic on some malformed files rather than return an error: treat that as
    // "unreadable" too, and keep the panic's own report off the terminal.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(|| -> std::result::Result<_, String> {
        let store = SledStore::open(dir).map_err(|e| e.to_string())?;
        let secret = checked_secret(dir, &store)?;
        let store: Arc<dyn Store> = Arc::new(store);
        let engine = Engine::new(
            policy,
            Options {
                secret,
                store: Some(store),
                limits,
                key_scheme: portcullis_engine::KeyScheme::default(),
            },
        )
        .map_err(|e| e.to_string())?;
        Ok((Arc::new(engine), secret))
    });
    std::panic::set_hook(hook);
    match opened {
        Ok(r) => r,
        Err(p) => Err(format!(
            "the store's files are malformed (sled: {})",
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into())
        )),
    }
}

/// The file beside sled's own that says a store was created here, and which (a keyed hash of
/// its secret, never the secret). sled 0.34 opens a store whose log is garbage as an empty
/// store; without this file such a store would start empty without a word.
pub const STORE_ID_FILE: &str = "portcullis-store-id";

/// The store's secret, checked against the id file; creates both for a new store.
fn checked_secret(dir: &Path, store: &SledStore) -> std::result::Result<[u8; 32], String> {
    let id_path = dir.join(STORE_ID_FILE);
    let id_of = |s: &[u8; 32]| {
        let k = blake3::derive_key("portcullis store id v1", s);
        k[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let recorded = match std::fs::read_to_string(&id_path) {
        Ok(t) => Some(t.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {}: {e}", id_path.display())),
    };
    let stored = store.stored_secret().map_err(|e| e.to_string())?;
    let secret = match (&recorded, stored) {
        (Some(_), None) => {
            return Err(format!(
                "{} says a store was created here, but sled found none of its records: its files are damaged",
                id_path.display()
            ))
        }
        (Some(id), Some(s)) if *id != id_of(&s) => {
            return Err(format!(
                "the records are not those of the store {} names (files mixed from two stores?)",
                id_path.display()
            ))
        }
        (Some(_), Some(s)) => return Ok(s),
        (None, Some(s)) => s,
        (None, None) => store.secret().map_err(|e| e.to_string())?,
    };
    std::fs::write(&id_path, format!("{}\n", id_of(&secret)))
        .map_err(|e| format!("writing {}: {e}", id_path.display()))?;
    Ok(secret)
}

/// The health of the write-behind flush, for `/readyz`, the metrics and the logs.
#[derive(Default)]
pub struct Persist {
    /// Whether the last flush succeeded (true until one fails).
    failing: AtomicBool,
    /// Failed flushes since start.
    errors: AtomicU64,
    fault: Mutex<Fault>,
}

#[derive(Default)]
struct Fault {
    /// The last error, as text (a path and an OS error; never a secret).
    last_error: Option<String>,
    /// When the current fault started.
    since: Option<Instant>,
    /// When it was last logged, and failures since then.
    logged: Option<Instant>,
    unlogged: u64,
    /// No retry before this; the wait doubles on each failure.
    next_try: Option<Instant>,
    backoff: Duration,
}

/// What `/readyz` shows of the store's writes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PersistView {
    /// Whether changes reach the disk.
    pub persist_ok: bool,
    /// The current fault, when failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// How long the fault has lasted, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_for_s: Option<u64>,
    /// Records kept in memory, not yet written.
    pub unflushed: usize,
}

impl Persist {
    fn fault(&self) -> MutexGuard<'_, Fault> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the last write succeeded.
    pub fn ok(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
    }

    /// The view for `/readyz`.
    pub fn view(&self, engine: &Engine) -> PersistView {
        let f = self.fault();
        PersistView {
            persist_ok: self.ok(),
            store_error: f.last_error.clone(),
            failing_for_s: f.since.map(|s| s.elapsed().as_secs()),
            unflushed: engine.unflushed(),
        }
    }

    /// One write-behind flush (blocking: run it off the async threads). `interval` is the flush
    /// interval, from which the retry backoff grows; `force` ignores the backoff (shutdown).
    pub fn flush(&self, engine: &Engine, interval: Duration, force: bool) {
        let now = Instant::now();
        if !force && self.failing.load(Ordering::Relaxed) {
            let f = self.fault();
            if f.next_try.is_some_and(|t| now < t) {
                return;
            }
        }
        match engine.flush() {
            Ok(n) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    let mut f = self.fault();
                    let lasted = f.since.map_or(0, |s| s.elapsed().as_secs());
                    tracing::info!(
                        records = n,
                        fault_lasted_s = lasted,
                        "Store writes succeed again: persistence resumed, everything kept back is written."
                    );
                    *f = Fault::default();
                } else if n > 0 {
                    tracing::debug!(records = n, "Flushed.");
                }
                metrics::gauge!(m::STORE_PERSIST_OK).set(1.0);
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::STORE_WRITE_ERRORS).increment(1);
                metrics::gauge!(m::STORE_PERSIST_OK).set(0.0);
                let first = !self.failing.swap(true, Ordering::Relaxed);
                let mut f = self.fault();
                let text = e.to_string();
                if first {
                    f.since = Some(now);
                    f.backoff = interval;
                } else {
                    f.backoff = (f.backoff * 2).min((interval * 10).min(Duration::from_secs(30)));
                }
                f.next_try = Some(now + f.backoff);
                f.unlogged += 1;
                let due = f
                    .logged
                    .map_or(true, |t| now.duration_since(t) >= FAULT_LOG_INTERVAL);
                if first || due {
                    tracing::error!(
                        error = %text,
                        failed_flushes = f.unlogged,
                        unflushed = engine.unflushed(),
                        "Writing to the store fails: decisions go on from memory; changes are kept and written once the store recovers."
                    );
                    f.logged = Some(now);
                    f.unlogged = 0;
                }
                f.last_error = Some(text);
            }
        }
    }
}
