//! A small reference agent for tests and demos: it speaks the agent protocol ([`crate::agent`])
//! and answers from a fixed user table instead of a directory.
//!
//! The users file has one `user:password` per line (`#` starts a comment). The payload is the
//! password, as a JSON string or as `{"password": "..."}`. Names match case-insensitively after
//! trimming. Every request it serves is printed on stdout as `served id=<attempt id>`, so tests
//! can check that no attempt reached two agents.

use crate::agent::{AgentRequest, AgentResponse};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Arguments of `portcullis ref-agent`.
#[derive(clap::Args, Debug)]
pub struct RefAgentArgs {
    /// Listen address, e.g. 127.0.0.1:9001 (port 0 picks one; the address is printed).
    #[arg(long)]
    pub listen: SocketAddr,
    /// The users file: `user:password` per line.
    #[arg(long)]
    pub users: PathBuf,
}

/// Parses a users file.
pub fn parse_users(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(u, p)| (u.trim().to_lowercase(), p.to_string()))
        .collect()
}

/// The reference agent's router.
pub fn app(users: HashMap<String, String>) -> Router {
    Router::new()
        .route("/v1/validate", post(validate))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(users))
}

async fn validate(
    State(users): State<Arc<HashMap<String, String>>>,
    Json(req): Json<AgentRequest>,
) -> Json<AgentResponse> {
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "served id={}", req.id);
        let _ = out.flush();
    }
    let password = match &req.payload {
        serde_json::Value::String(s) => Some(s.as_str()),
        v => v.get("password").and_then(|p| p.as_str()),
    };
    let (result, fp) = match (users.get(&req.user.trim().to_lowercase()), password) {
        (None, _) => ("unknown_user", None),
        (Some(_), None) => ("error", None),
        (Some(want), Some(got)) if want == got => ("success", None),
        (Some(_), Some(got)) => {
            let mut h = blake3::Hasher::new_keyed(&[0x52; 32]);
            h.update(req.tenant.as_bytes());
            h.update(b"\0");
            h.update(got.as_bytes());
            (
                "wrong_password",
                Some(h.finalize().to_hex()[..32].to_string()),
            )
        }
    };
    Json(AgentResponse {
        result: result.to_string(),
        pw_fp: fp,
    })
}

/// Runs the reference agent until the process is stopped.
pub async fn run(args: RefAgentArgs) -> std::io::Result<()> {
    let text = std::fs::read_to_string(&args.users)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app(parse_users(&text))).await
}
