//! The live dashboard at `/`, behind a sign-in with the admin token.
//!
//! # Routes
//! - `GET /`: the dashboard when signed in, else the sign-in form.
//! - `POST /login` (form field `token`): compares the admin token in constant time; on a match,
//!   starts a session ([`session`]) and sets it in an HttpOnly, SameSite=Strict cookie, then
//!   redirects to `/`; on a mismatch, shows the form again with an error (401). The token travels
//!   only in the POST body, never in a URL.
//!   Sign-ins are throttled per client address ([`throttle`]): after five wrong tokens in a
//!   minute, the address gets 429 until the minute ends.
//! - `POST /logout` (form field `csrf`): ends the session and clears the cookie.
//! - `GET /dashboard/api/state[?tenant=T]`: the JSON the page polls every 2 s; 401 without a
//!   session.
//! - `GET /dashboard/app.js`, `GET /dashboard/app.css`: the page's one script and stylesheet.
//!
//! The page's unlock and clear buttons call the admin API (`/v1/admin/unlock`,
//! `/v1/admin/clear-source`) with the session cookie and the session's CSRF token in the
//! `x-csrf-token` header; the admin API accepts that as an alternative to the bearer token
//! ([`session_allows`]). With the admin API off (no `PORTCULLIS_ADMIN_TOKEN`) every route here
//! answers 404.
//!
//! Everything is served from the binary (the HTML, script and stylesheet are `include_str!`ed):
//! no external asset, no network at run time. The chart is inline SVG drawn by the script, with no
//! chart library. Pages carry a strict Content-Security-Policy (no inline script, same-origin
//! fetches only) and are never framed or cached.

pub mod activity;
pub mod session;
pub mod throttle;

use crate::client_addr::ClientAddr;
use crate::error::{Error, Result};
use crate::service::{now, AppState, DISAGREEMENT_KINDS};
use activity::SERIES;
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use portcullis_engine::admin::{LockoutView, SourceBlockView, SprayView};
use serde::Deserialize;
use serde_json::{json, Value};
use session::{cookie_value, csrf_matches, SessionInfo, COOKIE as SESSION_COOKIE, CSRF_HEADER};
use std::sync::atomic::Ordering;
use std::time::Instant;
use subtle::ConstantTimeEq;

const INDEX_HTML: &str = include_str!("index.html");
const LOGIN_HTML: &str = include_str!("login.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Rows of each table the state endpoint returns at most.
const MAX_ROWS: usize = 200;
/// Rows of the "most attacked" and "closest to lockout" tables.
const TOP_N: usize = 10;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes (merged into the HTTP router at `/`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/dashboard/api/state", get(state_json))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/app.css", get(app_css))
}

/// The signed-in session a request carries, if any.
pub fn session_of(state: &AppState, headers: &HeaderMap) -> Option<SessionInfo> {
    let cookie = headers.get(COOKIE).and_then(|v| v.to_str().ok());
    let id = cookie_value(cookie)?;
    state.sessions.get(id, Instant::now())
}

/// Whether a request to the admin API is allowed by a dashboard session: a live session cookie,
/// and for anything but GET and HEAD the session's CSRF token in `x-csrf-token`.
pub fn session_allows(state: &AppState, method: &Method, headers: &HeaderMap) -> bool {
    let Some(s) = session_of(state, headers) else {
        return false;
    };
    if method == Method::GET || method == Method::HEAD {
        return true;
    }
    csrf_matches(&s, headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()))
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

fn secure_headers(h: &mut HeaderMap) {
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Escapes text for HTML element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn login_page(error: Option<&str>) -> String {
    let err = error.map_or(String::new(), |e| {
        format!(
            r#"<p id="login-error" class="error" role="alert">{}</p>"#,
            escape(e)
        )
    });
    LOGIN_HTML.replace("{{error}}", &err)
}

fn require_enabled(state: &AppState) -> Result<&str> {
    state
        .config
        .admin_token
        .as_ref()
        .map(crate::config::Secret::expose)
        .ok_or(Error::AdminDisabled)
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    require_enabled(&state)?;
    let Some(s) = session_of(&state, &headers) else {
        return Ok(html(StatusCode::OK, login_page(None)));
    };
    let p = state.engine.policy();
    let page = INDEX_HTML
        .replace("{{csrf}}", &escape(&s.csrf))
        .replace("{{policy_version}}", &escape(&p.version))
        .replace("{{version}}", env!("CARGO_PKG_VERSION"));
    Ok(html(StatusCode::OK, page))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

fn cookie(value: &str, max_age_secs: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("portcullis_session=; Max-Age=0"))
}

async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    form: std::result::Result<Form<LoginForm>, FormRejection>,
) -> Result<Response> {
    let expected = require_enabled(&state)?;
    let version = state.engine.policy().version.clone();
    let client_text = client.map_or_else(|| "unknown".to_string(), |c| c.to_string());
    if let Some(wait) = state.sessions.signins.blocked(client, Instant::now()) {
        tracing::warn!(client = %client_text, "Dashboard sign-in throttled: too many wrong tokens.");
        metrics::counter!(crate::metrics::ADMIN_ACTIONS, "action" => "dashboard_login_throttled")
            .increment(1);
        let mut r = html(
            StatusCode::TOO_MANY_REQUESTS,
            login_page(Some(
                "Too many wrong tokens from your address. Wait a minute.",
            )),
        );
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return Ok(r);
    }
    let given = form.map(|f| f.0.token).unwrap_or_default();
    let ok: bool = given.trim().as_bytes().ct_eq(expected.as_bytes()).into();
    if !ok {
        state.sessions.signins.failed(client, Instant::now());
        tracing::warn!(client = %client_text, "Dashboard sign-in refused: wrong token.");
        metrics::counter!(crate::metrics::ADMIN_ACTIONS, "action" => "dashboard_login_refused")
            .increment(1);
        state.audit.admin(
            "dashboard_login_refused",
            json!({"client": client_text}),
            &version,
        );
        return Ok(html(
            StatusCode::UNAUTHORIZED,
            login_page(Some("Wrong token. Try again.")),
        ));
    }
    state.sessions.signins.succeeded(client);
    let (id, _) = state.sessions.create(Instant::now());
    tracing::info!(client = %client_text, "Dashboard sign-in.");
    metrics::counter!(crate::metrics::ADMIN_ACTIONS, "action" => "dashboard_login").increment(1);
    state
        .audit
        .admin("dashboard_login", json!({"client": client_text}), &version);
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(LOCATION, HeaderValue::from_static("/"));
    h.insert(SET_COOKIE, cookie(&id, session::SESSION_TTL.as_secs()));
    secure_headers(h);
    Ok(r)
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: std::result::Result<Form<LogoutForm>, FormRejection>,
) -> Result<Response> {
    require_enabled(&state)?;
    let s = session_of(&state, &headers).ok_or(Error::Unauthorized)?;
    let given = form.ok().map(|f| f.0.csrf);
    if !csrf_matches(&s, given.as_deref()) {
        return Err(Error::Unauthorized);
    }
    if let Some(id) = cookie_value(headers.get(COOKIE).and_then(|v| v.to_str().ok())) {
        state.sessions.remove(id);
    }
    tracing::info!("Dashboard sign-out.");
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(LOCATION, HeaderValue::from_static("/"));
    h.insert(SET_COOKIE, cookie("", 0));
    secure_headers(h);
    Ok(r)
}

async fn app_js() -> Response {
    static_file("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    static_file("text/css; charset=utf-8", APP_CSS)
}

fn static_file(kind: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[derive(Deserialize)]
struct StateQuery {
    tenant: Option<String>,
}

async fn state_json(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StateQuery>,
) -> Result<Response> {
    require_enabled(&state)?;
    if session_of(&state, &headers).is_none() {
        return Err(Error::Unauthorized);
    }
    let tenant = q.tenant.filter(|t| !t.is_empty() && t != "all");
    // With a shared store the tables come from Redis, through the admin API's own functions.
    let tables = match state.shared {
        Some(_) => {
            let t = now();
            Some((
                crate::admin::list_lockouts(&state, t).await?,
                crate::admin::list_sources(&state, t).await?,
                crate::admin::list_sprays(&state, t).await?,
            ))
        }
        None => None,
    };
    let s = state.clone();
    // The views walk the engine's maps: keep that off the async workers.
    let body = tokio::task::spawn_blocking(move || snapshot(&s, tenant.as_deref(), tables))
        .await
        .map_err(|e| Error::Config(format!("dashboard task: {e}")))?;
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The lockouts, blocked sources and sprays tables, when read elsewhere (the shared store).
pub type Tables = (Vec<LockoutView>, Vec<SourceBlockView>, Vec<SprayView>);

/// Everything the dashboard shows, at the current time. `tenant` narrows the chart to one tenant
/// label; the tables cover every tenant and are `tables` when given, else the engine's.
pub fn snapshot(state: &AppState, tenant: Option<&str>, tables: Option<Tables>) -> Value {
    let t = now();
    let now_ms = t.as_millis();
    let e = &state.engine;
    let (mut lockouts, mut sources, mut sprays) = tables.unwrap_or_else(|| {
        (
            e.active_lockouts(t),
            e.blocked_sources(t),
            e.sprayed_passwords(t),
        )
    });
    let counts = json!({
        "lockouts": lockouts.len(),
        "sources": sources.len(),
        "sprays": sprays.len(),
    });
    // Newest first, so a cut keeps what is happening now.
    lockouts.sort_by_key(|l| std::cmp::Reverse(l.since_ms));
    sources.sort_by_key(|s| std::cmp::Reverse(s.since_ms));
    sprays.reverse();
    lockouts.truncate(MAX_ROWS);
    sources.truncate(MAX_ROWS);
    sprays.truncate(MAX_ROWS);
    let p = e.policy();
    let mut disagreements = serde_json::Map::new();
    let mut disagreement_total = 0u64;
    for (k, kind) in DISAGREEMENT_KINDS.iter().enumerate() {
        let mut by_reason = serde_json::Map::new();
        for (i, reason) in SERIES.iter().enumerate() {
            let n = state.disagreements[k][i].load(Ordering::Relaxed);
            if n > 0 {
                let name = if i == 0 { "none" } else { reason };
                by_reason.insert(name.to_string(), n.into());
                disagreement_total += n;
            }
        }
        disagreements.insert(kind.to_string(), Value::Object(by_reason));
    }
    json!({
        "now_ms": now_ms,
        "chart": state.activity.last_hour(tenant, now_ms),
        "chart_tenant": tenant.unwrap_or("all"),
        "counts": counts,
        "lockouts": lockouts,
        "sources": sources,
        "sprays": sprays,
        "attacked_accounts": e.attacked_accounts(t, TOP_N),
        "attacking_sources": e.attacking_sources(t, TOP_N),
        "budget": e.budget_pressure(t, TOP_N),
        "agents": state.agents.as_ref().map(|a| a.stats()).unwrap_or_default(),
        "inline": state.agents.is_some(),
        "policy": {
            "version": p.version,
            "mode": p.defaults.mode,
            "tenants": p.tenants.len(),
            "tenant_names": p.tenants.keys().collect::<Vec<_>>(),
            "shadow_version": state.shadow.as_ref().map(|s| s.policy().version.clone()),
            "disagreements": disagreements,
            "disagreement_total": disagreement_total,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Audit;
    use crate::config::Config;
    use crate::service::{CheckInput, Service};
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use portcullis_engine::{Engine, Options, Policy};
    use std::sync::Arc;
    use tower::ServiceExt;

    fn state(token: Option<&str>) -> AppState {
        let engine = Engine::new(Policy::default(), Options::in_memory([5; 32])).unwrap();
        let config = Config {
            admin_token: token.map(crate::config::Secret::from),
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

    async fn send(s: &AppState, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let resp = crate::http::app(s.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
        let mut b = Request::get(uri);
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        b.body(Body::empty()).unwrap()
    }

    fn form(uri: &str, body: &str, cookie: Option<&str>) -> Request<Body> {
        let mut b = Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        b.body(Body::from(body.to_string())).unwrap()
    }

    async fn sign_in(s: &AppState) -> String {
        let (status, h, _) = send(s, form("/login", "token=tok", None)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let set = h.get(SET_COOKIE).unwrap().to_str().unwrap().to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        set.split(';').next().unwrap().to_string()
    }

    #[tokio::test]
    async fn shows_the_sign_in_form_and_refuses_data_without_a_session() {
        let s = state(Some("tok"));
        let (status, h, body) = send(&s, get("/", None)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(r#"action="/login""#), "{body}");
        assert!(h.get("content-security-policy").is_some());
        let (status, _, _) = send(&s, get("/dashboard/api/state", None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, _) = send(
            &s,
            get("/dashboard/api/state", Some("portcullis_session=forged")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, h, body) = send(&s, form("/login", "token=wrong", None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(h.get(SET_COOKIE).is_none());
        assert!(body.contains("login-error"), "{body}");
    }

    #[tokio::test]
    async fn a_session_sees_the_dashboard_and_its_data_until_sign_out() {
        let s = state(Some("tok"));
        s.check(&CheckInput {
            tenant: "acme".into(),
            user: "alice".into(),
            ip: "203.0.113.9".into(),
            ..CheckInput::default()
        })
        .await
        .unwrap();
        let c = sign_in(&s).await;
        let (status, _, body) = send(&s, get("/", Some(&c))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("decisions-chart"), "{body}");
        let csrf = body
            .split(r#"name="csrf-token" content=""#)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string();
        let (status, _, body) = send(&s, get("/dashboard/api/state", Some(&c))).await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["chart"]["total"], 1, "{v}");
        assert_eq!(v["policy"]["version"], "builtin");
        // The admin API takes the session, with the CSRF header for a state change.
        let unlock = |csrf: Option<&str>| {
            let mut b = Request::post("/v1/admin/unlock")
                .header("cookie", c.as_str())
                .header("content-type", "application/json");
            if let Some(t) = csrf {
                b = b.header(CSRF_HEADER, t);
            }
            b.body(Body::from(r#"{"tenant":"acme","user":"alice"}"#))
                .unwrap()
        };
        assert_eq!(send(&s, unlock(None)).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            send(&s, unlock(Some("nope"))).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(send(&s, unlock(Some(&csrf))).await.0, StatusCode::OK);
        let (status, _, _) = send(&s, get("/v1/admin/lockouts", Some(&c))).await;
        assert_eq!(status, StatusCode::OK);
        // Sign-out needs the CSRF token, then the session is gone.
        let (status, _, _) = send(&s, form("/logout", "csrf=nope", Some(&c))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, _) = send(&s, form("/logout", &format!("csrf={csrf}"), Some(&c))).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, _, _) = send(&s, get("/dashboard/api/state", Some(&c))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn is_off_when_the_admin_api_is_off() {
        let s = state(None);
        assert_eq!(send(&s, get("/", None)).await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            send(&s, form("/login", "token=", None)).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            send(&s, get("/dashboard/api/state", None)).await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
