//! The HTTP JSON API: `app(state) -> Router`, so tests drive it with `oneshot` and no socket.
//!
//! Bodies are read as bytes and parsed here, so every refusal is a 400 naming its field:
//! malformed JSON (`body`), a missing field, a wrong type, a body over the size limit (`body`).
//! Values of `pw` and `payload` are never echoed in an error.

use crate::error::{Error, Result};
use crate::metrics as m;
use crate::service::{AppState, CheckInput, CheckOutput};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tower_http::timeout::TimeoutLayer;

/// The body of `POST /v1/check`.
#[derive(Deserialize)]
struct CheckBody {
    tenant: String,
    user: String,
    ip: String,
    #[serde(default)]
    pw: Option<String>,
    #[serde(default)]
    app: Option<String>,
}

/// The body of `POST /v1/outcome`.
#[derive(Deserialize)]
struct OutcomeBody {
    id: IdText,
    result: String,
    #[serde(default)]
    pw: Option<String>,
}

/// An attempt id, accepted as a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdText {
    Text(String),
    Number(u64),
}

/// The body of `POST /v1/validate`.
#[derive(Deserialize)]
struct ValidateBody {
    tenant: String,
    user: String,
    ip: String,
    #[serde(default)]
    pw: Option<String>,
    #[serde(default)]
    app: Option<String>,
    payload: Value,
}

/// The HTTP router: decision API, health, metrics, OpenAPI, admin API, dashboard.
pub fn app(state: AppState) -> Router {
    let routes = decision_routes().merge(admin_routes(state.clone()));
    finish(routes, state)
}

/// The router of the decision listener when the admin side has its own (`--admin-http`): the
/// decision API, health and OpenAPI; admin paths answer 404 here.
pub fn decision_app(state: AppState) -> Router {
    finish(decision_routes(), state)
}

/// The router of the admin listener (`--admin-http`): admin API, dashboard, `/metrics`, and
/// `/healthz` so the listener can be probed.
pub fn admin_app(state: AppState) -> Router {
    let routes = admin_routes(state.clone()).route("/healthz", get(healthz));
    finish(routes, state)
}

fn decision_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/check", post(check))
        .route("/v1/outcome", post(outcome))
        .route("/v1/validate", post(validate))
        .route("/v1/check/batch", post(check_batch))
        .route("/v1/outcome/batch", post(outcome_batch))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
}

fn admin_routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .nest("/v1/admin", crate::admin::router(state))
        .merge(crate::dashboard::router())
}

/// The layers every listener's router has: body limit and request timeout.
fn finish(routes: Router<AppState>, state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let timeout = state.config.request_timeout;
    routes
        .layer(DefaultBodyLimit::max(limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(state)
}

/// Parses a JSON body, naming the field at fault in the error.
pub fn parse_body<T: DeserializeOwned>(
    api: &'static str,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<T> {
    let refuse = |field: String, reason: String| {
        metrics::counter!(m::BAD_REQUESTS, "api" => api).increment(1);
        Error::BadRequest { field, reason }
    };
    let bytes = match body {
        Ok(b) => b,
        Err(e) => {
            let reason = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "is over the size limit".to_string()
            } else {
                "could not be read".to_string()
            };
            return Err(refuse("body".into(), reason));
        }
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(refuse("body".into(), "must be a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let parsed: std::result::Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = match parsed {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(refuse(
                    "body".into(),
                    format!(
                        "is not valid JSON (line {}, column {})",
                        inner.line(),
                        inner.column()
                    ),
                ));
            }
            let msg = inner.to_string();
            if let Some(field) = missing_field(&msg) {
                return Err(refuse(field, "is required".into()));
            }
            let field = if path == "." {
                "body".to_string()
            } else {
                path
            };
            let reason = if field.starts_with("pw") || field.starts_with("payload") {
                "has the wrong type".to_string()
            } else {
                // serde's message without its position suffix.
                msg.split(" at line ").next().unwrap_or(&msg).to_string()
            };
            return Err(refuse(field, reason));
        }
    };
    de.end().map_err(|_| {
        refuse(
            "body".into(),
            "has characters after the JSON document".into(),
        )
    })?;
    Ok(value)
}

fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

async fn check(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<CheckOutput>> {
    let b: CheckBody = parse_body("check", body)?;
    let input = CheckInput {
        tenant: b.tenant,
        user: b.user,
        ip: b.ip,
        pw: b.pw.map(String::into_bytes),
        app: b.app,
    };
    counted("check", state.check(&input).await).map(Json)
}

async fn outcome(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let b: OutcomeBody = parse_body("outcome", body)?;
    let id = match b.id {
        IdText::Text(s) => s,
        IdText::Number(n) => n.to_string(),
    };
    let fx = counted(
        "outcome",
        state
            .outcome(&id, &b.result, b.pw.as_deref().map(str::as_bytes))
            .await,
    )?;
    Ok(Json(json!({
        "recorded": true,
        "lockout_started": fx.lockout_started,
        "source_blocked": fx.source_blocked,
        "spray_detected": fx.spray_detected,
        "account_flagged": fx.account_flagged,
    })))
}

async fn validate(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<CheckOutput>> {
    let b: ValidateBody = parse_body("validate", body)?;
    let input = CheckInput {
        tenant: b.tenant,
        user: b.user,
        ip: b.ip,
        pw: b.pw.map(String::into_bytes),
        app: b.app,
    };
    counted("validate", state.validate(&input, b.payload).await).map(Json)
}

/// The most items one batch may hold.
pub const MAX_BATCH_ITEMS: usize = 10_000;

/// Parses a batch body: a JSON array of at most [`MAX_BATCH_ITEMS`] items, each kept as a value
/// so that a bad item is answered on its own.
fn parse_batch(
    api: &'static str,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Vec<Value>> {
    let refuse = |reason: String| {
        metrics::counter!(m::BAD_REQUESTS, "api" => api).increment(1);
        Error::BadRequest {
            field: "body".into(),
            reason,
        }
    };
    let bytes = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(refuse("is over the size limit".into()))
        }
        Err(_) => return Err(refuse("could not be read".into())),
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
        return Err(refuse("must be a JSON array".into()));
    }
    let items: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| {
        refuse(format!(
            "is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if items.len() > MAX_BATCH_ITEMS {
        return Err(refuse(format!(
            "has {} items; at most {MAX_BATCH_ITEMS}",
            items.len()
        )));
    }
    Ok(items)
}

/// Parses one batch item, naming the field at fault as [`parse_body`] does.
fn parse_item<T: DeserializeOwned>(api: &'static str, item: Value) -> Result<T> {
    let refuse = |field: String, reason: String| {
        metrics::counter!(m::BAD_REQUESTS, "api" => api).increment(1);
        Error::BadRequest { field, reason }
    };
    if !item.is_object() {
        return Err(refuse("item".into(), "must be a JSON object".into()));
    }
    serde_path_to_error::deserialize(item).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        if let Some(field) = missing_field(&msg) {
            return refuse(field, "is required".into());
        }
        let field = if path == "." {
            "item".to_string()
        } else {
            path
        };
        let reason = if field.starts_with("pw") {
            "has the wrong type".to_string()
        } else {
            msg
        };
        refuse(field, reason)
    })
}

/// One item's answer: the value, or its error with the status it would have had alone.
fn item_answer<T: serde::Serialize>(r: Result<T>) -> Value {
    match r {
        Ok(v) => serde_json::to_value(v).unwrap_or(Value::Null),
        Err(e) => {
            let (status, mut body) = e.status_and_body();
            body["status"] = json!(status.as_u16());
            body
        }
    }
}

/// `POST /v1/check/batch`: an array of check bodies, answered by an array in the same order.
async fn check_batch(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Value>>> {
    let items = parse_batch("check_batch", body)?;
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        let answer = match parse_item::<CheckBody>("check_batch", item) {
            Ok(b) => {
                let input = CheckInput {
                    tenant: b.tenant,
                    user: b.user,
                    ip: b.ip,
                    pw: b.pw.map(String::into_bytes),
                    app: b.app,
                };
                counted("check_batch", state.check(&input).await)
            }
            Err(e) => Err(e),
        };
        answers.push(item_answer(answer));
    }
    Ok(Json(answers))
}

/// `POST /v1/outcome/batch`: an array of outcome bodies, answered by an array in the same order.
async fn outcome_batch(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Value>>> {
    let items = parse_batch("outcome_batch", body)?;
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        let answer = match parse_item::<OutcomeBody>("outcome_batch", item) {
            Ok(b) => {
                let id = match b.id {
                    IdText::Text(s) => s,
                    IdText::Number(n) => n.to_string(),
                };
                counted(
                    "outcome_batch",
                    state
                        .outcome(&id, &b.result, b.pw.as_deref().map(str::as_bytes))
                        .await,
                )
                .map(|fx| {
                    json!({
                        "recorded": true,
                        "lockout_started": fx.lockout_started,
                        "source_blocked": fx.source_blocked,
                        "spray_detected": fx.spray_detected,
                        "account_flagged": fx.account_flagged,
                    })
                })
            }
            Err(e) => Err(e),
        };
        answers.push(item_answer(answer));
    }
    Ok(Json(answers))
}

/// Counts a refused request in the bad-request metric.
fn counted<T>(api: &'static str, r: Result<T>) -> Result<T> {
    if let Err(Error::BadRequest { .. }) = &r {
        metrics::counter!(m::BAD_REQUESTS, "api" => api).increment(1);
    }
    r
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (ok, body) = state.ready();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn openapi() -> Json<Value> {
    Json(openapi_doc())
}

/// The OpenAPI 3 description of the HTTP API.
pub fn openapi_doc() -> Value {
    let err = json!({"description": "Malformed request: the JSON error names the field",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let attempt_props = json!({
        "tenant": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
        "user": {"type": "string", "maxLength": 1024, "description": "The sign-in name as typed"},
        "ip": {"type": "string", "description": "Client address, IPv4 or IPv6 (zone ids and brackets accepted)"},
        "pw": {"type": "string", "maxLength": 1024, "description": "Opaque keyed fingerprint of the password, never the password"},
        "app": {"type": "string", "maxLength": 1024, "description": "Client kind: browser, activesync, legacy, ..."}
    });
    let mut validate_props = attempt_props.clone();
    validate_props["payload"] =
        json!({"description": "Opaque payload forwarded to the agent unchanged"});
    let admin = |summary: &str| {
        json!({"summary": summary, "security": [{"bearer": []}],
            "responses": {"200": {"description": "OK"}, "401": {"description": "Missing or wrong token"},
                          "404": {"description": "Admin API off (no PORTCULLIS_ADMIN_TOKEN)"}}})
    };
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Portcullis", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Smart-lockout and password-spray defense in front of an on-premises directory."},
        "paths": {
            "/v1/check": {"post": {
                "summary": "Decide on one attempt",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CheckRequest"}}}},
                "responses": {"200": {"description": "Decision", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Decision"}}}}, "400": err}
            }},
            "/v1/outcome": {"post": {
                "summary": "Report what the agent answered for a forwarded attempt",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OutcomeRequest"}}}},
                "responses": {"200": {"description": "Recorded"}, "400": err,
                              "409": {"description": "Unknown or already reported id; nothing changed"}}
            }},
            "/v1/validate": {"post": {
                "summary": "In-line mode: check, forward to an agent when permitted, record its answer",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ValidateRequest"}}}},
                "responses": {"200": {"description": "Decision and the agent's result", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Decision"}}}}, "400": err}
            }},
            "/v1/check/batch": {"post": {
                "summary": "Decide on many attempts: an array of check bodies, answered by an array in the same order; a bad item is answered with its own error (with its `status`) and the others are decided",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/CheckRequest"}}}}},
                "responses": {"200": {"description": "One answer per item, in order"}, "400": err}
            }},
            "/v1/outcome/batch": {"post": {
                "summary": "Report many outcomes: an array of outcome bodies, answered by an array in the same order; a bad or unknown item is answered with its own error",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/OutcomeRequest"}}}}},
                "responses": {"200": {"description": "One answer per item, in order"}, "400": err}
            }},
            "/healthz": {"get": {"summary": "Process up", "responses": {"200": {"description": "Up"}}}},
            "/readyz": {"get": {"summary": "Policy loaded, store open, an agent healthy in in-line mode",
                                "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Prometheus text format"}}}},
            "/v1/admin/lockouts": {"get": admin("Active account lockouts")},
            "/v1/admin/sources": {"get": admin("Blocked sources")},
            "/v1/admin/sprays": {"get": admin("Sprayed passwords by opaque id, with flagged accounts")},
            "/v1/admin/account": {"get": admin("Explain an account (query: tenant, user)")},
            "/v1/admin/unlock": {"post": admin("Unlock an account (body: tenant, user)")},
            "/v1/admin/clear-source": {"post": admin("Clear a source block (body: tenant, source)")},
            "/v1/admin/policy": {"get": admin("The policy in force and its version")}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "CheckRequest": {"type": "object", "required": ["tenant", "user", "ip"], "properties": attempt_props},
                "ValidateRequest": {"type": "object", "required": ["tenant", "user", "ip", "payload"], "properties": validate_props},
                "OutcomeRequest": {"type": "object", "required": ["id", "result"], "properties": {
                    "id": {"type": "string"},
                    "result": {"type": "string", "enum": ["success", "wrong_password", "unknown_user", "locked", "disabled", "expired", "must_change_password", "directory_unreachable", "timeout", "error"]},
                    "pw": {"type": "string", "maxLength": 1024}
                }},
                "Decision": {"type": "object", "required": ["decision"], "properties": {
                    "id": {"type": "string", "description": "Attempt id, present when forwarded"},
                    "decision": {"type": "string", "enum": ["forward", "wrong_password", "block"]},
                    "result": {"type": "string", "description": "The agent's answer (validate only)"},
                    "reason": {"type": "string", "enum": ["account_locked", "directory_budget", "directory_locked", "known_bad_password", "sprayed_password", "source_blocked", "rate_limited", "blocked_network", "overloaded"]},
                    "retry_after_s": {"type": "integer"}
                }},
                "Error": {"type": "object", "properties": {
                    "error": {"type": "string"}, "field": {"type": "string"}, "message": {"type": "string"}
                }}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Audit;
    use crate::config::Config;
    use crate::service::Service;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use portcullis_engine::{Engine, Options, Policy};
    use std::sync::Arc;
    use tower::ServiceExt;

    fn state() -> AppState {
        let engine = Engine::new(Policy::default(), Options::in_memory([3; 32])).unwrap();
        let config = Config {
            admin_token: Some("tok".into()),
            ..Config::default()
        };
        AppState(Arc::new(Service::from_parts(
            Arc::new(engine),
            None,
            None,
            Audit::off(),
            config,
            None,
        )))
    }

    async fn call(app: Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn check_forwards_and_outcome_is_accepted_once() {
        let s = state();
        let (status, d) = call(
            app(s.clone()),
            "POST",
            "/v1/check",
            r#"{"tenant":"acme","user":"alice","ip":"[2001:db8::1%eth0]","pw":"f"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(d["decision"], "forward");
        let body = json!({"id": d["id"], "result": "wrong_password"}).to_string();
        let (status, _) = call(app(s.clone()), "POST", "/v1/outcome", &body).await;
        assert_eq!(status, StatusCode::OK);
        let (status, e) = call(app(s), "POST", "/v1/outcome", &body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{e}");
    }

    #[tokio::test]
    async fn missing_field_is_a_400_naming_it() {
        let (status, e) = call(app(state()), "POST", "/v1/check", r#"{"tenant":"acme"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(e["field"], "user");
    }

    #[tokio::test]
    async fn validate_without_agents_answers_directory_unreachable() {
        let (status, d) = call(
            app(state()),
            "POST",
            "/v1/validate",
            r#"{"tenant":"acme","user":"alice","ip":"192.0.2.1","payload":"x"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(d["result"], "directory_unreachable");
    }

    #[tokio::test]
    async fn admin_routes_need_the_token() {
        let (status, _) = call(app(state()), "GET", "/v1/admin/lockouts", "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let req = Request::builder()
            .uri("/v1/admin/lockouts")
            .header("authorization", "Bearer tok")
            .body(Body::empty())
            .unwrap();
        let resp = app(state()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn admin_is_off_without_a_token() {
        let mut s = state();
        Arc::get_mut(&mut s.0).unwrap().config.admin_token = None;
        let (status, e) = call(app(s), "GET", "/v1/admin/lockouts", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(e["error"], "admin_disabled");
    }

    #[tokio::test]
    async fn serves_health_and_openapi() {
        let (status, _) = call(app(state()), "GET", "/healthz", "").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(app(state()), "GET", "/readyz", "").await;
        assert_eq!(status, StatusCode::OK);
        let (status, doc) = call(app(state()), "GET", "/openapi.json", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(doc["paths"]["/v1/check"]["post"].is_object());
    }
}
