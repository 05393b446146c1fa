//! Serving: `run(state, http, grpc, shutdown)` serves both APIs on the given listeners until the
//! injected `shutdown` future completes, with the background loops beside them; `serve` does the
//! same with TLS and a separate admin listener ([`Listeners`]).
//!
//! Background loops: write-behind flush every `flush_interval` (so state older than that survives
//! a `kill -9`; a failing store is handled in [`crate::persist`]), engine housekeeping and gauges every `maintain_interval`, policy reload on file
//! change and SIGHUP, agent health checks, and with a shared store a ping every second (the
//! `store_up` gauge and `/readyz`). On shutdown both servers stop accepting, finish the
//! requests in flight, and the engine's state is flushed to sled one last time.

use crate::error::Result;
use crate::service::{now, AppState};
use std::future::Future;
use tokio::net::TcpListener;
use tokio::sync::watch;

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// One write-behind flush; `last` (at shutdown) ignores the retry backoff of a failing store.
fn flush(state: &AppState, last: bool) {
    if state.shared.is_none() {
        state
            .persist
            .flush(&state.engine, state.config.flush_interval, last);
    }
}

/// Serves until `shutdown` completes, then drains and flushes (plain text, admin on `http`).
pub async fn run(
    state: AppState,
    http: TcpListener,
    grpc: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listeners = Listeners {
        http,
        grpc,
        admin: None,
        tls: None,
        hangup: crate::reload::hangup(),
    };
    serve(state, listeners, shutdown).await
}

/// The listeners of a running service and their TLS settings.
pub struct Listeners {
    /// The HTTP listener: the decision API, and the admin side too unless `admin` is given.
    pub http: TcpListener,
    /// The gRPC listener.
    pub grpc: TcpListener,
    /// The admin listener (`--admin-http`): admin API, dashboard and `/metrics`.
    pub admin: Option<TcpListener>,
    /// TLS for all of them; `None`: plain text.
    pub tls: Option<crate::tls::Tls>,
    /// SIGHUP, which reloads the policies ([`crate::reload::hangup`], registered before the
    /// service says it listens).
    pub hangup: Option<tokio::signal::unix::Signal>,
}

/// Serves on `listeners` until `shutdown` completes, then drains and flushes.
pub async fn serve(
    state: AppState,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let Listeners {
        http,
        grpc,
        admin,
        tls,
        hangup,
    } = listeners;
    // Checked before anything starts, so a bad identity stops the service cleanly.
    let mut builder = tonic::transport::Server::builder()
        .http2_max_header_list_size(crate::http_serve::MAX_HEAD_BYTES as u32);
    if let Some(t) = &tls {
        builder = builder
            .tls_config(t.grpc.clone())
            .map_err(|e| crate::Error::Config(format!("gRPC TLS: {e}")))?;
    }
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("Shutting down: finishing requests in flight.");
        let _ = tx.send(true);
    });

    let mut tasks = Vec::new();
    {
        let state = state.clone();
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.config.flush_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let s = state.clone();
                        // Under `--realtime`, one priority below the workers: they preempt it.
                        let _ = tokio::task::spawn_blocking(move || {
                            crate::sched::in_background(|| flush(&s, false))
                        })
                        .await;
                    }
                    _ = rx.changed() => break,
                }
            }
        }));
    }
    {
        let state = state.clone();
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.config.maintain_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let s = state.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            crate::sched::in_background(|| {
                                let t = now();
                                s.engine.maintain(t);
                                if let Some(shadow) = &s.shadow {
                                    shadow.maintain(t);
                                }
                                s.refresh_gauges(t);
                            })
                        }).await;
                    }
                    _ = rx.changed() => break,
                }
            }
        }));
    }
    tasks.push(tokio::spawn(crate::reload::watch(
        state.clone(),
        rx.clone(),
        hangup,
    )));
    if let Some(store) = state.shared.clone() {
        // The shared store's health: a ping every second keeps `/readyz` and the `store_up`
        // gauge current while no traffic flows, and lets the connection manager reconnect.
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut was_up = true;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let up = store.ping().await;
                        if up != was_up {
                            if up {
                                tracing::info!("Shared store reachable again.");
                            } else {
                                tracing::warn!("Shared store unreachable: the policy's fail_mode decides.");
                            }
                            was_up = up;
                        }
                    }
                    _ = rx.changed() => break,
                }
            }
        }));
    }
    if let Some(pool) = state.agents.clone() {
        let interval = state.config.health_interval;
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => pool.check_health().await,
                    _ = rx.changed() => break,
                }
            }
        }));
    }

    let http_tls = tls.as_ref().map(|t| t.http.clone());
    let (app, admin_srv) = match admin {
        Some(admin) => (
            crate::http::decision_app(state.clone()),
            Some(crate::http_serve::serve(
                admin,
                http_tls.clone(),
                crate::http::admin_app(state.clone()),
                stopped(rx.clone()),
            )),
        ),
        None => (crate::http::app(state.clone()), None),
    };
    let http_srv = crate::http_serve::serve(http, http_tls, app, stopped(rx.clone()));
    let admin_srv = async move {
        if let Some(srv) = admin_srv {
            srv.await;
        }
    };
    let grpc_srv = builder
        .add_service(crate::grpc::service(state.clone()))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc),
            stopped(rx.clone()),
        );
    let (_, _, g) = tokio::join!(http_srv, admin_srv, grpc_srv);
    for t in tasks {
        let _ = t.await;
    }
    let s = state.clone();
    let _ = tokio::task::spawn_blocking(move || flush(&s, true)).await;
    tracing::info!("Stopped; state flushed.");
    g?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT (ctrl-c). The handlers are installed when this is called, not
/// when the future is first polled: a SIGTERM sent just after the service says it listens must
/// still drain and flush rather than kill the process. Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async fn recv(s: Option<Signal>) {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    async move {
        tokio::select! {
            _ = recv(term) => {}
            _ = recv(int) => {}
        }
    }
}
