//! The service's one error type, and how it maps to HTTP responses and gRPC statuses.
//!
//! Client mistakes keep their status and a message naming the field; internal failures return a
//! generic body and are logged once here. No variant ever carries a password or a fingerprint.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use thiserror::Error;

/// Everything that can go wrong in the service.
#[derive(Debug, Error)]
pub enum Error {
    /// The request is malformed: 400 (gRPC `InvalidArgument`), naming the field.
    #[error("invalid `{field}`: {reason}")]
    BadRequest {
        /// The field at fault (`body` for the request as a whole).
        field: String,
        /// What is wrong (never the value of a secret).
        reason: String,
    },
    /// An outcome for an unknown or already reported attempt id: 409 (gRPC `FailedPrecondition`).
    #[error("unknown or already reported attempt id")]
    UnknownAttempt,
    /// Missing or wrong admin token: 401 (gRPC `Unauthenticated`).
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The admin API is off (no `PORTCULLIS_ADMIN_TOKEN`): 404.
    #[error("the admin API is off: start the service with PORTCULLIS_ADMIN_TOKEN set")]
    AdminDisabled,
    /// A cap was reached: 503 (gRPC `ResourceExhausted`).
    #[error("capacity reached for {0}")]
    Capacity(&'static str),
    /// Over `max_in_flight` decision requests: 429 with `Retry-After` (gRPC `ResourceExhausted`
    /// with metadata), answered at once. `fail` tells the broker what the tenant's fail policy
    /// wants done with this attempt meanwhile: `forward` or `refuse` (none for an outcome).
    #[error("overloaded: {limit} decision requests are in flight (max_in_flight); retry after {retry_after_ms} ms{}", fail_text(.fail))]
    Overloaded {
        /// The `max_in_flight` limit.
        limit: usize,
        /// `forward` or `refuse`, per the tenant's `fail_mode` and the source's familiarity.
        fail: Option<&'static str>,
        /// When to retry, ms.
        retry_after_ms: u64,
    },
    /// The shared store (Redis) cannot be reached: 503 `store_unavailable` (gRPC `Unavailable`).
    #[error("the shared store is unavailable")]
    StoreUnavailable,
    /// The engine failed (store, corrupt record): 500 with a generic body.
    #[error("engine: {0}")]
    Engine(portcullis_engine::Error),
    /// The embedded store cannot be opened or read at start: the path, the cause and the way out.
    #[error("the store in {path} cannot be opened: {reason}\n  The service did not start and the directory is left where it is. To recover: fix the cause (permissions, a full disk) or restore the directory from a backup and start again; or start once with `--reset-store` to move it aside to {path}.corrupt-<unix seconds> and begin with an empty store (lockouts, blocks and familiar locations recorded so far are then forgotten).")]
    StoreOpen {
        /// The data directory.
        path: String,
        /// What failed.
        reason: String,
    },
    /// A setting is wrong (start-up only).
    #[error("config: {0}")]
    Config(String),
    /// A file or socket operation failed (start-up and shutdown only).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("grpc: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

fn fail_text(fail: &Option<&'static str>) -> String {
    fail.map(|f| format!("; the tenant's fail policy says: {f}"))
        .unwrap_or_default()
}

/// The service's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A 400 naming `field`.
    pub fn bad(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BadRequest {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<portcullis_engine::Error> for Error {
    fn from(e: portcullis_engine::Error) -> Self {
        use portcullis_engine::Error as E;
        match e {
            E::InvalidInput { field, reason } => Error::bad(field, reason),
            E::UnknownAttempt(_) => Error::UnknownAttempt,
            E::Capacity(what) => Error::Capacity(what),
            other => Error::Engine(other),
        }
    }
}

impl Error {
    /// The HTTP status and JSON body this error is answered with (also one item's answer in a
    /// batch, with its `status` added).
    pub fn status_and_body(&self) -> (StatusCode, serde_json::Value) {
        let (status, code) = match self {
            Error::BadRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            Error::UnknownAttempt => (StatusCode::CONFLICT, "unknown_attempt"),
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::AdminDisabled => (StatusCode::NOT_FOUND, "admin_disabled"),
            Error::Capacity(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Error::Overloaded { .. } => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            Error::StoreUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let body = match self {
            Error::BadRequest { field, reason } => {
                json!({"error": code, "field": field, "message": reason})
            }
            Error::Overloaded {
                limit,
                fail,
                retry_after_ms,
            } => {
                let mut v = json!({"error": code, "message": self.to_string(),
                    "max_in_flight": limit, "retry_after_ms": retry_after_ms});
                if let Some(fail) = fail {
                    v["fail"] = (*fail).into();
                }
                v
            }
            e if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %e, "Request failed.");
                json!({"error": code, "message": "internal error"})
            }
            e => json!({"error": code, "message": e.to_string()}),
        };
        (status, body)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        let mut resp = (status, Json(body)).into_response();
        if let Error::Overloaded { retry_after_ms, .. } = &self {
            let secs = retry_after_ms.div_ceil(1000).max(1);
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::BadRequest { .. } => tonic::Status::invalid_argument(e.to_string()),
            Error::UnknownAttempt => tonic::Status::failed_precondition(e.to_string()),
            Error::Unauthorized => tonic::Status::unauthenticated(e.to_string()),
            Error::AdminDisabled => tonic::Status::not_found(e.to_string()),
            Error::Capacity(_) => tonic::Status::resource_exhausted(e.to_string()),
            Error::Overloaded {
                fail,
                retry_after_ms,
                ..
            } => {
                // The same hint as the HTTP body, in metadata: `portcullis-fail` and
                // `retry-after-ms`.
                let mut md = tonic::metadata::MetadataMap::new();
                if let Some(fail) = fail {
                    md.insert(
                        "portcullis-fail",
                        tonic::metadata::MetadataValue::from_static(fail),
                    );
                }
                if let Ok(v) = retry_after_ms.to_string().parse() {
                    md.insert("retry-after-ms", v);
                }
                tonic::Status::with_metadata(tonic::Code::ResourceExhausted, e.to_string(), md)
            }
            Error::StoreUnavailable => tonic::Status::unavailable(e.to_string()),
            _ => {
                tracing::error!(error = %e, "Request failed.");
                tonic::Status::internal("internal error")
            }
        }
    }
}
