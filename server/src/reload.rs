//! Live policy reload: on a change of the policy file (or the shadow policy file) and on SIGHUP.
//!
//! A reload parses and validates the whole file first and swaps the policy atomically
//! ([`portcullis_engine::Engine::set_policy`]); an invalid edit is refused, logged with every
//! error, counted (`portcullis_policy_reloads_total{result="refused"}`), and the policy in force
//! stays. An unchanged file is not swapped again (rate-limit buckets would restart).

use crate::metrics as m;
use crate::service::AppState;
use notify::{RecursiveMode, Watcher};
use portcullis_engine::{Engine, Policy};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The new policy is in force.
    Swapped(String),
    /// The file holds the policy already in force.
    Unchanged,
    /// The file was refused; the old policy stays.
    Refused(Vec<String>),
}

/// Reloads one engine's policy from `path`.
pub fn reload_one(engine: &Engine, path: &Path, which: &'static str) -> Reloaded {
    match Policy::load(path) {
        Ok(p) if *engine.policy() == p => Reloaded::Unchanged,
        Ok(p) => {
            let version = p.version.clone();
            engine.set_policy(p);
            metrics::counter!(m::RELOADS, "policy" => which, "result" => "ok").increment(1);
            tracing::info!(policy = which, %version, file = %path.display(), "Policy reloaded.");
            Reloaded::Swapped(version)
        }
        Err(e) => {
            let errs = match e {
                portcullis_engine::Error::Policy(errs) => errs,
                other => vec![other.to_string()],
            };
            metrics::counter!(m::RELOADS, "policy" => which, "result" => "refused").increment(1);
            tracing::warn!(policy = which, file = %path.display(), errors = ?errs,
                "Policy refused; the policy in force stays.");
            Reloaded::Refused(errs)
        }
    }
}

/// Reloads the enforced and the shadow policy.
pub fn reload_all(state: &AppState) {
    reload_one(&state.engine, &state.config.policy, "enforced");
    if let (Some(shadow), Some(path)) = (&state.shadow, &state.config.shadow) {
        reload_one(shadow, path, "shadow");
    }
}

/// The SIGHUP stream, for [`watch`]. Register it before the service says it listens: until a
/// handler is registered, a SIGHUP ends the process (the signal's default action).
pub fn hangup() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGHUP.");
            None
        }
    }
}

/// Watches the policy files and SIGHUP (`hup`, from [`hangup`]) until `shutdown` fires.
pub async fn watch(
    state: AppState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut hup: Option<tokio::signal::unix::Signal>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let files: Vec<PathBuf> = std::iter::once(state.config.policy.clone())
        .chain(state.config.shadow.clone())
        .collect();
    let names: Vec<std::ffi::OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_os_string()))
        .collect();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            let relevant = !ev.kind.is_access()
                && ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)));
            if relevant {
                let _ = tx.send(());
            }
        }
    });
    // Watch the directories, not the files: editors replace files by renaming over them.
    let _watcher = match watcher {
        Ok(mut w) => {
            for f in &files {
                let dir = match f.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(error = %e, dir = %dir.display(), "Cannot watch the policy directory; SIGHUP still reloads.");
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "File watching unavailable; SIGHUP still reloads.");
            None
        }
    };
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                // Let a burst of events from one save settle, then read the file once.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
                reload_all(&state);
            }
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading policies.");
                reload_all(&state);
            }
            _ = shutdown.changed() => break,
        }
    }
}
