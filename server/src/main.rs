//! `portcullis`: the command-line edge. It parses arguments and calls the library; the work
//! lives in `portcullis_engine` and in this crate's modules.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use portcullis_engine::policy::Policy;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Replay a trace through the engine against a simulated directory and score it.
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
        Command::Replay(args) => replay::run_replay(&args).map(|_| ExitCode::SUCCESS),
        Command::Synth(args) => replay::run_synth(&args).map(|_| ExitCode::SUCCESS),
        Command::Demo(args) => replay::run_demo(&args).map(|_| ExitCode::SUCCESS),
        Command::CheckPolicy { file } => check_policy(&file),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
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
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}
