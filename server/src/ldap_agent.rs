//! `portcullis agent`: an on-premises authentication agent that validates a sign-in by an LDAP
//! simple bind as the user, against Active Directory (or Samba AD), and answers in the agent
//! protocol ([`crate::agent`]).
//!
//! # Payload
//! This reference agent takes the password in clear inside the payload:
//! `{"password":"..."}` (a bare JSON string is accepted too). In production the broker's payload
//! is an encrypted credential that only the agent can open; opening it would replace
//! [`password_of`] and nothing else.
//!
//! # Binding
//! The bind name is the sign-in name trimmed, then either `name@SUFFIX` (`--upn-suffix`, for a
//! name without `@`; a name with `@` is a UPN already and is used as typed), or a DN template
//! (`--dn-template 'CN={user},OU=Staff,DC=corp,DC=example'`, the name escaped per RFC 4514), or
//! the name as typed. Binds run on a bounded pool: at most `--pool` binds at once (a semaphore),
//! each on an idle connection when there is one (re-binding a connection is allowed by LDAP), or
//! a new one. A connection whose exchange failed is dropped, never reused.
//!
//! # Results
//! [`map_bind_result`] is the one place that turns a directory's answer into an outcome
//! (Active Directory's `AcceptSecurityContext error, data XXX` sub-codes of result 49).
//! [`map_ldap_error`] turns a transport failure into `directory_unreachable`, `timeout` or
//! `error`; a transport failure is never `wrong_password`, so a dead directory counts against no
//! one. An empty password is refused here without asking the directory: some directories treat
//! an empty simple bind as a successful anonymous bind.
//!
//! # Secrets
//! The password is never logged, put in an error or echoed in a response. When `--fp-key-file`
//! is given, a failed password's keyed fingerprint (HMAC-SHA-256 under that key, over the tenant
//! and the password, truncated to 16 bytes, hex) is returned as `pw_fp` for spray detection; it
//! is not logged either.

use crate::agent::{AgentRequest, AgentResponse};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError};
use portcullis_engine::Outcome;
use sha2::Sha256;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Bytes of the HMAC kept in a fingerprint.
const FP_BYTES: usize = 16;

/// The shortest accepted fingerprint key, in bytes.
const MIN_FP_KEY_BYTES: usize = 16;

/// The longest accepted password, in bytes (longer ones are not sent to the directory).
const MAX_PASSWORD_BYTES: usize = 1024;

/// Arguments of `portcullis agent`.
#[derive(clap::Args, Debug, Clone)]
pub struct LdapAgentArgs {
    /// The directory, e.g. `ldap://dc1.corp.example:389` or `ldaps://dc1.corp.example:636`.
    #[arg(long)]
    pub ldap: String,
    /// Listen address of the agent protocol, e.g. 127.0.0.1:9001 (port 0 picks one; the address
    /// is printed on stdout as `listening on ADDR`).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Use TLS from the first byte (LDAPS): an `ldap://` URL becomes `ldaps://` (port 636 when
    /// none is given). Server certificates are checked against the system's trust store.
    #[arg(long)]
    pub ldaps: bool,
    /// Binds in flight at most, and pooled connections at most. Default 8.
    #[arg(long, default_value_t = 8)]
    pub pool: usize,
    /// How long one validation may take, connecting and waiting for a pool slot included.
    #[arg(long, default_value = "2s")]
    pub timeout: String,
    /// Bind as `name@SUFFIX` for a name without `@`, e.g. `CORP.EXAMPLE`.
    #[arg(long, conflicts_with = "dn_template")]
    pub upn_suffix: Option<String>,
    /// Bind as this DN, `{user}` replaced by the escaped name, e.g.
    /// `CN={user},OU=Staff,DC=corp,DC=example`.
    #[arg(long)]
    pub dn_template: Option<String>,
    /// A file holding the key (at least 16 bytes) for `pw_fp`, the keyed fingerprint of a failed
    /// password. Without it, no fingerprint is returned.
    #[arg(long)]
    pub fp_key_file: Option<PathBuf>,
}

/// How a sign-in name becomes a bind name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindName {
    /// The name as typed (trimmed).
    AsTyped,
    /// `name@suffix` for a name without `@`.
    UpnSuffix(String),
    /// A DN with `{user}` replaced by the RFC 4514-escaped name.
    DnTemplate(String),
}

impl BindName {
    /// The bind name for a sign-in name, or `None` when the name cannot be one (empty, or with
    /// control characters).
    ///
    /// # Examples
    /// ```
    /// use portcullis_server::ldap_agent::BindName;
    /// let upn = BindName::UpnSuffix("PORTCULLIS.TEST".into());
    /// assert_eq!(upn.bind_name(" alice ").as_deref(), Some("alice@PORTCULLIS.TEST"));
    /// let dn = BindName::DnTemplate("CN={user},OU=Staff,DC=corp".into());
    /// assert_eq!(dn.bind_name("Smith, Ann").as_deref(), Some("CN=Smith\\, Ann,OU=Staff,DC=corp"));
    /// ```
    pub fn bind_name(&self, user: &str) -> Option<String> {
        let user = user.trim();
        if user.is_empty() || user.chars().any(char::is_control) {
            return None;
        }
        Some(match self {
            BindName::AsTyped => user.to_string(),
            BindName::UpnSuffix(_) if user.contains('@') => user.to_string(),
            BindName::UpnSuffix(suffix) => format!("{user}@{suffix}"),
            BindName::DnTemplate(t) => t.replace("{user}", &escape_dn_value(user)),
        })
    }
}

/// Escapes an attribute value for a DN (RFC 4514 section 2.4).
pub fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 4);
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Maps a bind's LDAP result (code and diagnostic text) to an outcome.
///
/// Result 49 (invalidCredentials) carries Active Directory's sub-code in the text,
/// `80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563`:
/// `52e` wrong password (Samba answers it for unknown users too), `525` unknown user,
/// `775` locked, `533` disabled, `701`/`532` expired (account/password), `773` must change
/// password, `530`/`531` not allowed at this time/workstation (reported as `disabled`: the
/// account cannot be used now). Result 49 with no or another sub-code (OpenLDAP and other
/// directories) is a wrong password. Results 51/52 (busy/unavailable) are
/// `directory_unreachable`; anything else is `error`.
pub fn map_bind_result(rc: u32, text: &str) -> Outcome {
    match rc {
        0 => Outcome::Success,
        49 => match ad_data_code(text).as_deref() {
            Some("525") => Outcome::UnknownUser,
            Some("775") => Outcome::Locked,
            Some("533" | "530" | "531") => Outcome::Disabled,
            Some("701" | "532") => Outcome::Expired,
            Some("773") => Outcome::MustChangePassword,
            _ => Outcome::WrongPassword,
        },
        51 | 52 => Outcome::DirectoryUnreachable,
        _ => Outcome::Error,
    }
}

/// The `XXX` of `data XXX` in an Active Directory diagnostic, lower-cased.
fn ad_data_code(text: &str) -> Option<String> {
    let rest = &text[text.find("data ")? + 5..];
    let code: String = rest
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase();
    (!code.is_empty()).then_some(code)
}

/// Maps a transport failure to an outcome: never `wrong_password`.
///
/// `sent` tells whether the bind request may have reached the directory: a timeout before that
/// (connecting) means the directory is unreachable; after it, the answer is `timeout`.
pub fn map_ldap_error(e: &LdapError, sent: bool) -> Outcome {
    match e {
        LdapError::Timeout { .. } if sent => Outcome::Timeout,
        _ if !sent => Outcome::DirectoryUnreachable,
        LdapError::Io { .. } | LdapError::OpSend { .. } | LdapError::ResultRecv { .. } => {
            Outcome::DirectoryUnreachable
        }
        _ => Outcome::Error,
    }
}

/// The password in a payload: `{"password": "..."}` or a bare string.
pub fn password_of(payload: &serde_json::Value) -> Option<&str> {
    match payload {
        serde_json::Value::String(s) => Some(s),
        v => v.get("password").and_then(|p| p.as_str()),
    }
}

/// The keyed fingerprint of a password: HMAC-SHA-256 over `tenant NUL password`, truncated to
/// 16 bytes, hex.
pub fn fingerprint(key: &[u8], tenant: &str, password: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(tenant.as_bytes());
    mac.update(b"\0");
    mac.update(password.as_bytes());
    mac.finalize().into_bytes()[..FP_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The agent's settings, resolved.
#[derive(Clone, Debug)]
pub struct LdapConfig {
    /// The directory URL (`ldap://` or `ldaps://`).
    pub url: String,
    /// Binds in flight at most.
    pub pool: usize,
    /// The longest one validation may take.
    pub timeout: Duration,
    /// How names become bind names.
    pub bind_name: BindName,
    /// The fingerprint key, if any.
    pub fp_key: Option<Vec<u8>>,
}

impl LdapConfig {
    /// Resolves the command-line arguments (reads the key file).
    pub fn from_args(args: &LdapAgentArgs) -> crate::Result<LdapConfig> {
        let mut url = args.ldap.trim().to_string();
        if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
            return Err(crate::Error::Config(format!(
                "--ldap {url:?} must start with ldap:// or ldaps://"
            )));
        }
        if args.ldaps {
            if let Some(rest) = url.strip_prefix("ldap://") {
                let host = rest.split('/').next().unwrap_or_default();
                // An IPv6 literal ends in `]`; a port follows the last `:` otherwise.
                let has_port = host
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| !p.ends_with(']'));
                url = if has_port {
                    format!("ldaps://{rest}")
                } else {
                    format!("ldaps://{host}:636")
                };
            }
        }
        let timeout = humantime::parse_duration(&args.timeout)
            .map_err(|e| crate::Error::Config(format!("--timeout {:?}: {e}", args.timeout)))?;
        if args.pool == 0 {
            return Err(crate::Error::Config("--pool must be at least 1".into()));
        }
        let bind_name = match (&args.upn_suffix, &args.dn_template) {
            (Some(s), _) => BindName::UpnSuffix(s.trim().trim_start_matches('@').to_string()),
            (None, Some(t)) if !t.contains("{user}") => {
                return Err(crate::Error::Config(format!(
                    "--dn-template {t:?} must contain {{user}}"
                )))
            }
            (None, Some(t)) => BindName::DnTemplate(t.clone()),
            (None, None) => BindName::AsTyped,
        };
        let fp_key = match &args.fp_key_file {
            Some(path) => {
                let raw = std::fs::read(path)
                    .map_err(|e| crate::Error::io(format!("reading {}", path.display()), e))?;
                let key = raw.trim_ascii().to_vec();
                if key.len() < MIN_FP_KEY_BYTES {
                    return Err(crate::Error::Config(format!(
                        "--fp-key-file {}: the key must be at least {MIN_FP_KEY_BYTES} bytes",
                        path.display()
                    )));
                }
                Some(key)
            }
            None => None,
        };
        Ok(LdapConfig {
            url,
            pool: args.pool,
            timeout,
            bind_name,
            fp_key,
        })
    }
}

/// One validation's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// The outcome.
    pub outcome: Outcome,
    /// The keyed fingerprint of a failed password, hex.
    pub pw_fp: Option<String>,
}

/// Validates passwords by simple binds over a bounded pool of connections. See the module docs.
pub struct LdapValidator {
    config: LdapConfig,
    /// One permit per bind in flight.
    slots: Semaphore,
    /// Idle connections, already bound (as someone) or fresh. A std mutex: it is held only to
    /// push or pop, never across an await.
    idle: Mutex<Vec<Ldap>>,
}

impl LdapValidator {
    /// A validator; it opens connections on demand.
    pub fn new(config: LdapConfig) -> LdapValidator {
        LdapValidator {
            slots: Semaphore::new(config.pool),
            idle: Mutex::new(Vec::with_capacity(config.pool)),
            config,
        }
    }

    /// The resolved settings.
    pub fn config(&self) -> &LdapConfig {
        &self.config
    }

    async fn connect(&self, timeout: Duration) -> Result<Ldap, LdapError> {
        let settings = LdapConnSettings::new().set_conn_timeout(timeout);
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.config.url).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended.");
            }
        });
        Ok(ldap)
    }

    fn take_idle(&self) -> Option<Ldap> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut ldap) = idle.pop() {
            if !ldap.is_closed() {
                return Some(ldap);
            }
        }
        None
    }

    fn put_idle(&self, ldap: Ldap) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.config.pool {
            idle.push(ldap);
        }
    }

    /// Validates `password` for `user` of `tenant`. Always one answer; see the module docs.
    pub async fn validate(&self, tenant: &str, user: &str, password: &str) -> Validation {
        let plain = |outcome| Validation {
            outcome,
            pw_fp: None,
        };
        let Some(dn) = self.config.bind_name.bind_name(user) else {
            return plain(Outcome::UnknownUser);
        };
        if password.is_empty() {
            // Never sent: an empty simple bind is an anonymous success on some directories.
            return plain(Outcome::WrongPassword);
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return plain(Outcome::WrongPassword);
        }
        let deadline = Instant::now() + self.config.timeout;
        let Ok(Ok(_permit)) = tokio::time::timeout(self.config.timeout, self.slots.acquire()).await
        else {
            return plain(Outcome::Timeout);
        };
        let mut ldap = match self.take_idle() {
            Some(l) => l,
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.connect(left.max(Duration::from_millis(1))).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(error = %e, "Could not connect to the directory.");
                        return plain(map_ldap_error(&e, false));
                    }
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = match ldap
            .with_timeout(left.max(Duration::from_millis(1)))
            .simple_bind(&dn, password)
            .await
        {
            Ok(res) => {
                let outcome = map_bind_result(res.rc, &res.text);
                tracing::debug!(rc = res.rc, result = outcome.as_str(), "Bound.");
                self.put_idle(ldap);
                outcome
            }
            Err(e) => {
                // The connection's state is unknown: drop it.
                tracing::debug!(error = %e, "Bind failed in transport.");
                map_ldap_error(&e, true)
            }
        };
        let pw_fp = match (outcome, &self.config.fp_key) {
            (Outcome::WrongPassword | Outcome::UnknownUser, Some(key)) => {
                Some(fingerprint(key, tenant, password))
            }
            _ => None,
        };
        Validation { outcome, pw_fp }
    }

    /// Whether the directory accepts a connection now (for `/healthz`). No bind is made.
    pub async fn reachable(&self) -> bool {
        if self.take_idle().map(|l| self.put_idle(l)).is_some() {
            return true;
        }
        let t = self.config.timeout.min(Duration::from_secs(1));
        match self.connect(t).await {
            Ok(mut l) => {
                let _ = l.unbind().await;
                true
            }
            Err(_) => false,
        }
    }
}

/// The agent's router: `POST /v1/validate`, `GET /healthz`.
pub fn app(validator: Arc<LdapValidator>) -> Router {
    Router::new()
        .route("/v1/validate", post(validate))
        .route("/healthz", get(healthz))
        .with_state(validator)
}

fn refuse(reason: &'static str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({"error": "invalid_request", "message": reason})),
    )
        .into_response()
}

async fn validate(State(v): State<Arc<LdapValidator>>, body: Bytes) -> Response {
    // Parsed by hand so that no parser message (which may quote a value) is ever echoed.
    let Ok(req) = serde_json::from_slice::<AgentRequest>(&body) else {
        return refuse("the body is not an agent protocol request");
    };
    if req.v != crate::agent::PROTOCOL_VERSION {
        return refuse("unsupported protocol version");
    }
    let Some(password) = password_of(&req.payload) else {
        return Json(AgentResponse {
            result: Outcome::Error.as_str().to_string(),
            pw_fp: None,
        })
        .into_response();
    };
    let answer = v.validate(&req.tenant, &req.user, password).await;
    tracing::debug!(id = %req.id, result = answer.outcome.as_str(), "Validated.");
    Json(AgentResponse {
        result: answer.outcome.as_str().to_string(),
        pw_fp: answer.pw_fp,
    })
    .into_response()
}

async fn healthz(State(v): State<Arc<LdapValidator>>) -> Response {
    if v.reachable().await {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "directory unreachable").into_response()
    }
}

/// Runs the agent until the process is stopped.
pub async fn run(args: LdapAgentArgs) -> crate::Result<()> {
    let config = LdapConfig::from_args(&args)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| crate::Error::io(format!("binding {}", args.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| crate::Error::io("local address", e))?;
    tracing::info!(listen = %addr, directory = %config.url, pool = config.pool,
        timeout = ?config.timeout, fingerprints = config.fp_key.is_some(), "LDAP agent listening.");
    println!("listening on {addr}");
    let validator = Arc::new(LdapValidator::new(config));
    axum::serve(listener, app(validator))
        .with_graceful_shutdown(crate::server::shutdown_signal())
        .await
        .map_err(|e| crate::Error::io("serving", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AD: &str = "80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data";

    fn ad(code: &str) -> String {
        format!("{AD} {code}, v4563\0")
    }

    #[test]
    fn maps_active_directory_sub_codes() {
        for (code, want) in [
            ("52e", Outcome::WrongPassword),
            ("525", Outcome::UnknownUser),
            ("775", Outcome::Locked),
            ("533", Outcome::Disabled),
            ("530", Outcome::Disabled),
            ("531", Outcome::Disabled),
            ("701", Outcome::Expired),
            ("532", Outcome::Expired),
            ("773", Outcome::MustChangePassword),
            ("52E", Outcome::WrongPassword),
        ] {
            assert_eq!(map_bind_result(49, &ad(code)), want, "data {code}");
        }
    }

    #[test]
    fn maps_samba_texts() {
        // As Samba 4 words them.
        assert_eq!(
            map_bind_result(49, "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1"),
            Outcome::WrongPassword
        );
        assert_eq!(
            map_bind_result(49, "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 775, v1db1"),
            Outcome::Locked
        );
    }

    #[test]
    fn maps_success_other_directories_and_faults() {
        assert_eq!(map_bind_result(0, ""), Outcome::Success);
        assert_eq!(map_bind_result(49, ""), Outcome::WrongPassword);
        assert_eq!(
            map_bind_result(49, "data 999, unknown"),
            Outcome::WrongPassword
        );
        assert_eq!(map_bind_result(51, "busy"), Outcome::DirectoryUnreachable);
        assert_eq!(map_bind_result(52, ""), Outcome::DirectoryUnreachable);
        assert_eq!(
            map_bind_result(8, "Transport encryption required"),
            Outcome::Error
        );
        assert_eq!(map_bind_result(53, ""), Outcome::Error);
    }

    #[tokio::test]
    async fn transport_failures_are_never_wrong_password() {
        let io = || LdapError::Io {
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let elapsed = tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err();
        let timeout = LdapError::Timeout { elapsed };
        assert_eq!(map_ldap_error(&io(), false), Outcome::DirectoryUnreachable);
        assert_eq!(map_ldap_error(&io(), true), Outcome::DirectoryUnreachable);
        assert_eq!(
            map_ldap_error(&timeout, false),
            Outcome::DirectoryUnreachable
        );
        assert_eq!(map_ldap_error(&timeout, true), Outcome::Timeout);
    }

    #[test]
    fn builds_bind_names() {
        let upn = BindName::UpnSuffix("PORTCULLIS.TEST".into());
        assert_eq!(upn.bind_name("bob").as_deref(), Some("bob@PORTCULLIS.TEST"));
        assert_eq!(
            upn.bind_name("bob@corp.example").as_deref(),
            Some("bob@corp.example")
        );
        assert_eq!(upn.bind_name("   "), None);
        assert_eq!(upn.bind_name("bo\nb"), None);
        let dn = BindName::DnTemplate("CN={user},OU=Staff,DC=corp".into());
        assert_eq!(
            dn.bind_name("#a=b+c ").as_deref(),
            Some("CN=\\#a\\=b\\+c,OU=Staff,DC=corp")
        );
        assert_eq!(escape_dn_value(" x "), "\\ x\\ ");
        assert_eq!(
            BindName::AsTyped.bind_name(" CORP\\bob ").as_deref(),
            Some("CORP\\bob")
        );
    }

    #[test]
    fn reads_the_password_from_either_payload_form() {
        assert_eq!(
            password_of(&serde_json::json!({"password": "pw"})),
            Some("pw")
        );
        assert_eq!(password_of(&serde_json::json!("pw")), Some("pw"));
        assert_eq!(password_of(&serde_json::json!({"pass": "pw"})), None);
        assert_eq!(password_of(&serde_json::json!(7)), None);
    }

    #[test]
    fn fingerprints_are_keyed_per_tenant_and_hide_the_password() {
        let a = fingerprint(b"0123456789abcdef", "acme", "Summer2026!");
        assert_eq!(a.len(), 2 * FP_BYTES);
        assert!(!a.contains("Summer"));
        assert_eq!(a, fingerprint(b"0123456789abcdef", "acme", "Summer2026!"));
        assert_ne!(a, fingerprint(b"0123456789abcdeX", "acme", "Summer2026!"));
        assert_ne!(a, fingerprint(b"0123456789abcdef", "other", "Summer2026!"));
    }

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn validator(url: String) -> LdapValidator {
        LdapValidator::new(LdapConfig {
            url,
            pool: 2,
            timeout: Duration::from_secs(2),
            bind_name: BindName::UpnSuffix("PORTCULLIS.TEST".into()),
            fp_key: Some(b"0123456789abcdef".to_vec()),
        })
    }

    #[tokio::test]
    async fn refuses_an_empty_password_without_asking_the_directory() {
        // Nothing listens there: had it asked, the answer would be directory_unreachable.
        let v = validator(format!("ldap://127.0.0.1:{}", closed_port()));
        let a = v.validate("acme", "alice", "").await;
        assert_eq!(a.outcome, Outcome::WrongPassword);
        assert_eq!(a.pw_fp, None);
    }

    #[tokio::test]
    async fn a_closed_directory_is_unreachable_never_a_wrong_password() {
        let v = validator(format!("ldap://127.0.0.1:{}", closed_port()));
        let a = v.validate("acme", "alice", "guess").await;
        assert_eq!(a.outcome, Outcome::DirectoryUnreachable);
        assert_eq!(a.pw_fp, None);
        assert!(!v.reachable().await);
    }

    #[tokio::test]
    async fn a_silent_directory_is_a_timeout_never_a_wrong_password() {
        // Accepts connections and never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut socks = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                socks.push(s);
            }
        });
        let mut v = validator(format!("ldap://{addr}"));
        v.config.timeout = Duration::from_millis(300);
        let t0 = Instant::now();
        let a = v.validate("acme", "alice", "guess").await;
        assert_eq!(a.outcome, Outcome::Timeout);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        held.abort();
    }

    #[tokio::test]
    async fn a_failed_tls_handshake_is_unreachable_never_a_wrong_password() {
        // LDAPS to a listener that closes every connection at once: the rustls path runs (trust
        // store loaded, handshake started) and fails before any bind is sent.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let closer = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        });
        let v = validator(format!("ldaps://{addr}"));
        let a = v.validate("acme", "alice", "guess").await;
        assert_eq!(a.outcome, Outcome::DirectoryUnreachable);
        assert_eq!(a.pw_fp, None);
        closer.abort();
    }

    #[test]
    fn resolves_ldaps_urls_and_refuses_bad_settings() {
        let args = |ldap: &str, ldaps: bool| LdapAgentArgs {
            ldap: ldap.into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            ldaps,
            pool: 4,
            timeout: "2s".into(),
            upn_suffix: None,
            dn_template: None,
            fp_key_file: None,
        };
        let c = LdapConfig::from_args(&args("ldap://dc1.corp.example", true)).unwrap();
        assert_eq!(c.url, "ldaps://dc1.corp.example:636");
        let c = LdapConfig::from_args(&args("ldap://dc1:6360", true)).unwrap();
        assert_eq!(c.url, "ldaps://dc1:6360");
        let c = LdapConfig::from_args(&args("ldap://127.0.0.1:389", false)).unwrap();
        assert_eq!(c.url, "ldap://127.0.0.1:389");
        assert!(LdapConfig::from_args(&args("dc1:389", false)).is_err());
        let mut a = args("ldap://dc1", false);
        a.dn_template = Some("CN=x,DC=corp".into());
        assert!(LdapConfig::from_args(&a).is_err());
        let mut a = args("ldap://dc1", false);
        a.pool = 0;
        assert!(LdapConfig::from_args(&a).is_err());
    }
}
