//! The Portcullis service: the engine as a long-lived sidecar beside the sign-in broker.
//!
//! # Layout
//! - [`config`]: `serve` settings from flags and an optional TOML file (flags win).
//! - [`service`]: the state every front end shares ([`service::AppState`]) and the decision
//!   operations (check, outcome, validate) with their metrics, audit and shadow policy.
//! - [`http`]: the HTTP JSON API (`app(state) -> Router`), `/openapi.json`, health and metrics.
//! - [`grpc`]: the `portcullis.v1.Gate` gRPC service, same semantics.
//! - [`admin`]: the admin API under `/v1/admin/`, behind a bearer token (or a dashboard session).
//! - [`dashboard`]: the live dashboard at `/`, behind a sign-in with the admin token.
//! - [`agent`]: the agent protocol and the pool of agents used in in-line mode.
//! - [`ldap_agent`]: `portcullis agent`, the LDAP bind agent in front of Active Directory.
//! - [`live_replay`]: `replay --target`: a trace sent to a running service (or an agent), scored
//!   with the directory's real lockouts.
//! - [`ref_agent`]: a small reference agent with a fixed user table, for tests and demos.
//! - [`audit`]: the JSON-lines decision audit log.
//! - [`reload`]: live policy reload on file change and SIGHUP.
//! - [`metrics`]: the Prometheus recorder and the metric names.
//! - [`persist`]: opening the embedded store at start, and the write-behind flush with its
//!   fault handling (full disk, I/O errors).
//! - [`sched`]: `serve --realtime`: the service's threads under `SCHED_RR`, ahead of the
//!   machine's ordinary processes.
//! - [`server`]: `run(state, listeners, shutdown)`: serving, background loops, graceful shutdown.
//! - [`shared`]: several instances sharing state through Redis (`serve --store redis://..`).
//! - [`tls`]: TLS (rustls) for both listeners and client-certificate authentication (mTLS).
//! - [`http_serve`]: serving a router on a listener: TLS, request-head limits, graceful drain.
//! - [`client_addr`]: the client's address, believing forwarded headers only from trusted proxies.
//! - [`error`]: the crate's one error type, mapped to HTTP and gRPC.
//! - [`fuzzing`]: entry points for the fuzz targets in `fuzz/`: raw bytes through the real parsers.
//!
//! Invariant across all of it: a password fingerprint never appears in a log, a metric, an error
//! or the audit log, and metric labels come from bounded sets only.

pub mod admin;
pub mod agent;
pub mod audit;
pub mod client_addr;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod fuzzing;
pub mod grpc;
pub mod http;
pub mod http_serve;
pub mod ldap_agent;
pub mod live_replay;
pub mod metrics;
pub mod persist;
pub mod ref_agent;
pub mod reload;
pub mod sched;
pub mod server;
pub mod service;
pub mod shared;
pub mod tls;

/// Code generated from `proto/portcullis/v1/gate.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("portcullis.v1");
}

pub use error::{Error, Result};
pub use service::AppState;
