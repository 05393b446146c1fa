//! `portcullis`: the command-line edge. It parses arguments and calls the library; the work
//! lives in `portcullis_engine` and in this crate's modules.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use portcullis_engine::policy::Policy;
use portcullis_server::config::{Config, ServeArgs};
use portcullis_server::ldap_agent::LdapAgentArgs;
use portcullis_server::ref_agent::RefAgentArgs;
use portcullis_server::service::{AppState, Service};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The allocator of every `portcullis` command: the engine allocates on its hot path (new
/// account, source and spray entries), and mimalloc's thread-local free lists made decide +
/// outcome about a tenth faster than glibc's malloc in interleaved runs (`benches/RESULTS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod html;
mod replay;
mod sweep;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Smart-lockout and password-spray defense in front of an on-premises directory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: HTTP and gRPC decision API, admin API, metrics, live policy reload.
    Serve(Box<ServeArgs>),
    /// Run the reference agent (a fixed user table) for tests and demos.
    RefAgent(RefAgentArgs),
    /// Run the LDAP agent: validates sign-ins by a simple bind against Active Directory.
    Agent(LdapAgentArgs),
    /// Replay a trace through the engine against a simulated directory and score it, or, with
    /// `--target`, send it to a running service (or agent) and read the real directory.
    Replay(replay::ReplayArgs),
    /// Write a synthetic trace of one attack scenario.
    Synth(replay::SynthArgs),
    /// Synthesise a mixed attack week and replay it with the default policy.
    Demo(replay::DemoArgs),
    /// Validate a policy file and print its effective values per tenant (exit 1 on errors).
    CheckPolicy {
        /// The policy file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<ExitCode> = match cli.command {
        Command::Serve(args) => serve(&args).map(|_| ExitCode::SUCCESS),
        Command::RefAgent(args) => ref_agent(args).map(|_| ExitCode::SUCCESS),
        Command::Agent(args) => ldap_agent(args).map(|_| ExitCode::SUCCESS),
        Command::Replay(args) => replay::run_replay(&args).map(|_| ExitCode::SUCCESS),
        Command::Synth(args) => replay::run_synth(&args).map(|_| ExitCode::SUCCESS),
        Command::Demo(args) => replay::run_demo(&args).map(|_| ExitCode::SUCCESS),
        Command::CheckPolicy { file } => check_policy(&file),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain_once(&e));
            ExitCode::FAILURE
        }
    }
}

fn check_policy(file: &std::path::Path) -> Result<ExitCode> {
    match Policy::load(file) {
        Ok(p) => {
            print!("{}", p.describe());
            println!("\n{}: OK", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(portcullis_engine::Error::Policy(errs)) => {
            for e in &errs {
                eprintln!("{e}");
            }
            eprintln!(
                "{}: {} error(s); policy refused",
                file.display(),
                errs.len()
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// An error and its causes, each said once: `a: b: c`. Some errors (the engine's I/O and store
/// errors, sled's) put their source in their own message as well as in the chain, so a cause
/// whose text already ends the line is not repeated; `{:#}` would print it twice.
fn chain_once(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // sled reports each failed write itself, at ERROR: the service's own line (once per
        // minute while the store fails, see `persist`) says the same with what it means.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sled=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve(args: &ServeArgs) -> Result<()> {
    init_tracing();
    // Every file the service creates (sled's files holding the hash secret, the audit log) is
    // owner-only whatever the caller's umask.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    portcullis_server::tls::install_provider();
    let config = Config::resolve(args, std::env::var("PORTCULLIS_ADMIN_TOKEN").ok())?;
    if let Some(priority) = config.realtime {
        // Before the runtime and the metrics recorder start threads: each inherits the policy.
        portcullis_server::sched::run_realtime(priority, "realtime")?;
        tracing::info!(
            priority,
            "Every service thread runs under SCHED_RR (the flush and housekeeping one priority lower)."
        );
    }
    if config.admin_token.is_none() {
        tracing::warn!("PORTCULLIS_ADMIN_TOKEN is not set: the admin API is off.");
    }
    let tls = match &config.tls {
        Some(paths) => Some(portcullis_server::tls::Tls::load(paths)?),
        None => None,
    };
    if tls.is_none() {
        for (what, addr) in [
            ("http", Some(config.http)),
            ("admin_http", config.admin_http),
        ] {
            if let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) {
                tracing::warn!(
                    listener = what,
                    %addr,
                    "Serving plain HTTP on a non-loopback address: give --tls-cert and --tls-key."
                );
            }
        }
    }
    let metrics = portcullis_server::metrics::install();
    let rt = runtime()?;
    rt.block_on(async move {
        let http = tokio::net::TcpListener::bind(config.http)
            .await
            .with_context(|| format!("binding HTTP on {}", config.http))?;
        let grpc = tokio::net::TcpListener::bind(config.grpc)
            .await
            .with_context(|| format!("binding gRPC on {}", config.grpc))?;
        let admin = match config.admin_http {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the admin listener on {addr}"))?,
            ),
            None => None,
        };
        let admin_addr = match &admin {
            Some(l) => l.local_addr()?.to_string(),
            None => "same-as-http".to_string(),
        };
        let service = Service::build(config, Some(metrics)).await?;
        let state = AppState(Arc::new(service));
        // Before "Listening.": from then on a SIGTERM drains and flushes, and a SIGHUP reloads.
        let shutdown = portcullis_server::server::shutdown_signal();
        let hangup = portcullis_server::reload::hangup();
        tracing::info!(
            http = %http.local_addr()?,
            grpc = %grpc.local_addr()?,
            admin = %admin_addr,
            tls = tls.is_some(),
            mtls = tls.as_ref().is_some_and(|t| t.mutual),
            policy = %state.engine.policy().version,
            shadow = state.shadow.is_some(),
            agents = state.agents.as_ref().map_or(0, |a| a.len()),
            data = %state.config.data.display(),
            store = if state.shared.is_some() { "redis" } else { "sled" },
            "Listening."
        );
        let listeners = portcullis_server::server::Listeners {
            http,
            grpc,
            admin,
            tls,
            hangup,
        };
        portcullis_server::server::serve(state, listeners, shutdown).await?;
        Ok(())
    })
}

fn ref_agent(args: RefAgentArgs) -> Result<()> {
    runtime()?.block_on(portcullis_server::ref_agent::run(args))?;
    Ok(())
}

fn ldap_agent(args: LdapAgentArgs) -> Result<()> {
    init_tracing();
    runtime()?.block_on(portcullis_server::ldap_agent::run(args))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::chain_once;
    use anyhow::Context;

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        // The engine's I/O error says its source in its message and returns it as its source.
        let engine = portcullis_engine::Error::Io {
            path: "p.toml".into(),
            source: io,
        };
        let e = Err::<(), _>(engine)
            .context("loading policy p.toml")
            .unwrap_err();
        assert_eq!(chain_once(&e), "loading policy p.toml: p.toml: gone");
    }

    #[test]
    fn an_error_chain_keeps_causes_that_do_not_repeat() {
        let e = Err::<(), _>(anyhow::anyhow!("inner"))
            .context("middle")
            .context("outer")
            .unwrap_err();
        assert_eq!(chain_once(&e), "outer: middle: inner");
    }
}
