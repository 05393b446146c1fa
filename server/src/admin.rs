//! The admin API under `/v1/admin/`, behind a bearer token.
//!
//! The token comes from `PORTCULLIS_ADMIN_TOKEN`; without it every admin route answers 404
//! (`admin_disabled`). A missing or wrong token gets 401; the comparison is constant-time. A
//! signed-in dashboard session (its cookie, plus its CSRF token in `x-csrf-token` for a POST) is
//! accepted instead of the bearer token: see [`crate::dashboard`]. Every admin request that passes
//! is logged with tracing and written to the audit log.
//!
//! Routes: `GET lockouts`, `GET sources`, `GET sprays`, `GET account?tenant=&user=`,
//! `POST unlock {"tenant","user"}`, `POST clear-source {"tenant","source"}`, `GET policy`.

use crate::error::{Error, Result};
use crate::http::parse_body;
use crate::metrics as m;
use crate::service::{now, AppState};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

/// The admin routes, with the token check in front of all of them.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/lockouts", get(lockouts))
        .route("/sources", get(sources))
        .route("/sprays", get(sprays))
        .route("/account", get(account))
        .route("/unlock", post(unlock))
        .route("/clear-source", post(clear_source))
        .route("/policy", get(policy))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

/// Whether `header` is `Bearer <token>` with the configured token, compared in constant time.
pub fn token_matches(expected: &str, header: Option<&str>) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    given.trim().as_bytes().ct_eq(expected.as_bytes()).into()
}

async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response> {
    let Some(expected) = &state.config.admin_token else {
        return Err(Error::AdminDisabled);
    };
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !token_matches(expected, header)
        && !crate::dashboard::session_allows(&state, req.method(), req.headers())
    {
        tracing::warn!(path = %req.uri().path(), "Admin request refused: missing or wrong token.");
        return Err(Error::Unauthorized);
    }
    Ok(next.run(req).await)
}

fn logged(state: &AppState, action: &'static str, detail: Value) {
    tracing::info!(action, %detail, "Admin action.");
    metrics::counter!(m::ADMIN_ACTIONS, "action" => action).increment(1);
    let version = state.engine.policy().version.clone();
    state.audit.admin(action, detail, &version);
}

async fn lockouts(State(state): State<AppState>) -> Json<Value> {
    logged(&state, "list_lockouts", json!({}));
    Json(json!({"lockouts": state.engine.active_lockouts(now())}))
}

async fn sources(State(state): State<AppState>) -> Json<Value> {
    logged(&state, "list_sources", json!({}));
    Json(json!({"sources": state.engine.blocked_sources(now())}))
}

async fn sprays(State(state): State<AppState>) -> Json<Value> {
    logged(&state, "list_sprays", json!({}));
    Json(json!({"sprays": state.engine.sprayed_passwords(now())}))
}

#[derive(Deserialize)]
struct AccountQuery {
    tenant: Option<String>,
    user: Option<String>,
}

async fn account(
    State(state): State<AppState>,
    Query(q): Query<AccountQuery>,
) -> Result<Json<Value>> {
    let tenant = q
        .tenant
        .ok_or_else(|| Error::bad("tenant", "is required"))?;
    let user = q.user.ok_or_else(|| Error::bad("user", "is required"))?;
    let view = state.engine.explain_account(&tenant, &user, now())?;
    logged(
        &state,
        "explain_account",
        json!({"tenant": tenant, "account": view.account}),
    );
    Ok(Json(serde_json::to_value(view).unwrap_or(Value::Null)))
}

#[derive(Deserialize)]
struct UnlockBody {
    tenant: String,
    user: String,
}

async fn unlock(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let b: UnlockBody = parse_body("admin", body)?;
    let was_locked = state.engine.unlock_account(&b.tenant, &b.user, now())?;
    logged(
        &state,
        "unlock",
        json!({"tenant": b.tenant, "account": b.user, "was_locked": was_locked}),
    );
    Ok(Json(json!({"unlocked": true, "was_locked": was_locked})))
}

#[derive(Deserialize)]
struct ClearSourceBody {
    tenant: String,
    source: String,
}

async fn clear_source(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let b: ClearSourceBody = parse_body("admin", body)?;
    let cleared = state
        .engine
        .clear_source_block(&b.tenant, &b.source, now())?;
    logged(
        &state,
        "clear_source",
        json!({"tenant": b.tenant, "source": b.source, "cleared": cleared}),
    );
    Ok(Json(json!({"cleared": cleared})))
}

async fn policy(State(state): State<AppState>) -> Json<Value> {
    logged(&state, "show_policy", json!({}));
    let p = state.engine.policy();
    let mut v = json!({
        "version": p.version,
        "file": state.config.policy.display().to_string(),
        "defaults": *p.defaults,
        "tenants": p.tenants.iter().map(|(k, t)| (k.clone(), serde_json::to_value(&**t).unwrap_or(Value::Null))).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(shadow) = &state.shadow {
        v["shadow_version"] = shadow.policy().version.clone().into();
    }
    Json(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_must_match_exactly() {
        assert!(token_matches("s3cret", Some("Bearer s3cret")));
        assert!(!token_matches("s3cret", Some("Bearer s3cre")));
        assert!(!token_matches("s3cret", Some("Bearer s3cret2")));
        assert!(!token_matches("s3cret", Some("s3cret")));
        assert!(!token_matches("s3cret", None));
    }
}
