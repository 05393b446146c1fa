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
//!
//! The views and actions ([`list_lockouts`], [`list_sources`], [`list_sprays`], [`explain`],
//! [`unlock`], [`clear_source`]) act on where the state lives: the engine's maps, or with a
//! shared store (`--store redis://..`) the state in Redis, so that every instance shows and
//! changes the same lockouts. The dashboard calls the same functions.

use crate::error::{Error, Result};
use crate::http::parse_body;
use crate::metrics as m;
use crate::service::{now, AppState, Service};
use crate::shared::StoreError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis_engine::admin::{AccountExplain, LockoutView, SourceBlockView, SprayView};
use portcullis_engine::Timestamp;
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
        .route("/unlock", post(unlock_route))
        .route("/clear-source", post(clear_source_route))
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
    if !token_matches(expected.expose(), header)
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

/// A shared-store failure as the service's error: the engine's refusals keep their 4xx, anything
/// else (unreachable, contended, unreadable value) is 503 `store_unavailable`.
fn store_error(op: &'static str, e: StoreError) -> Error {
    match e {
        StoreError::Engine(e) => e.into(),
        e => {
            metrics::counter!(m::STORE_ERRORS, "op" => op).increment(1);
            tracing::warn!(error = %e, op, "Shared store failed for an admin request.");
            Error::StoreUnavailable
        }
    }
}

/// Active lockouts at `now`, from the shared store when there is one.
pub async fn list_lockouts(s: &Service, now: Timestamp) -> Result<Vec<LockoutView>> {
    match &s.shared {
        None => Ok(s.engine.active_lockouts(now)),
        Some(store) => store
            .active_lockouts(now)
            .await
            .map_err(|e| store_error("admin_lockouts", e)),
    }
}

/// Blocked sources at `now`, from the shared store when there is one.
pub async fn list_sources(s: &Service, now: Timestamp) -> Result<Vec<SourceBlockView>> {
    match &s.shared {
        None => Ok(s.engine.blocked_sources(now)),
        Some(store) => store
            .blocked_sources(now)
            .await
            .map_err(|e| store_error("admin_sources", e)),
    }
}

/// Sprayed passwords at `now`, from the shared store when there is one.
pub async fn list_sprays(s: &Service, now: Timestamp) -> Result<Vec<SprayView>> {
    match &s.shared {
        None => Ok(s.engine.sprayed_passwords(now)),
        Some(store) => store
            .sprayed_passwords(now)
            .await
            .map_err(|e| store_error("admin_sprays", e)),
    }
}

/// Explains `user` of `tenant` at `now`, from the shared store when there is one.
pub async fn explain(
    s: &Service,
    tenant: &str,
    user: &str,
    now: Timestamp,
) -> Result<AccountExplain> {
    match &s.shared {
        None => Ok(s.engine.explain_account(tenant, user, now)?),
        Some(store) => store
            .explain_account(tenant, user, now)
            .await
            .map_err(|e| store_error("admin_explain", e)),
    }
}

/// Ends both smart lockouts of `user` of `tenant`, in the shared store when there is one.
/// Returns whether one was in force.
pub async fn unlock(s: &Service, tenant: &str, user: &str, now: Timestamp) -> Result<bool> {
    match &s.shared {
        None => Ok(s.engine.unlock_account(tenant, user, now)?),
        Some(store) => store
            .unlock_account(tenant, user, now)
            .await
            .map_err(|e| store_error("admin_unlock", e)),
    }
}

/// Clears the source blocks `source` names in `tenant`, in the shared store when there is one.
/// Returns how many blocks in force were cleared.
pub async fn clear_source(
    s: &Service,
    tenant: &str,
    source: &str,
    now: Timestamp,
) -> Result<usize> {
    match &s.shared {
        None => Ok(s.engine.clear_source_block(tenant, source, now)?),
        Some(store) => store
            .clear_source_block(tenant, source, now)
            .await
            .map_err(|e| store_error("admin_clear_source", e)),
    }
}

async fn lockouts(State(state): State<AppState>) -> Result<Json<Value>> {
    logged(&state, "list_lockouts", json!({}));
    Ok(Json(
        json!({"lockouts": list_lockouts(&state, now()).await?}),
    ))
}

async fn sources(State(state): State<AppState>) -> Result<Json<Value>> {
    logged(&state, "list_sources", json!({}));
    Ok(Json(json!({"sources": list_sources(&state, now()).await?})))
}

async fn sprays(State(state): State<AppState>) -> Result<Json<Value>> {
    logged(&state, "list_sprays", json!({}));
    Ok(Json(json!({"sprays": list_sprays(&state, now()).await?})))
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
    let view = explain(&state, &tenant, &user, now()).await?;
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

async fn unlock_route(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let b: UnlockBody = parse_body("admin", body)?;
    let was_locked = unlock(&state, &b.tenant, &b.user, now()).await?;
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

async fn clear_source_route(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let b: ClearSourceBody = parse_body("admin", body)?;
    let cleared = clear_source(&state, &b.tenant, &b.source, now()).await?;
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
