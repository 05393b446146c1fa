//! Settings of `portcullis serve`: flags, an optional TOML file (`--config`), built-in defaults.
//! A flag always wins over the file; the file wins over the defaults.

use crate::error::{Error, Result};
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Flags of `portcullis serve`. Every one may also be set in the `--config` file.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// A TOML file with the same settings (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The enforced policy file. Default `policies/default.toml`.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// A shadow policy: decides on the same traffic without acting; metrics show disagreements.
    #[arg(long)]
    pub shadow: Option<PathBuf>,
    /// The sled data directory (created owner-only). Default `./portcullis-data`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// HTTP listen address. Default 127.0.0.1:8080.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// gRPC listen address. Default 127.0.0.1:50051.
    #[arg(long)]
    pub grpc: Option<SocketAddr>,
    /// An agent base URL for in-line mode (`/v1/validate`); repeat for several.
    #[arg(long = "agent")]
    pub agents: Vec<String>,
    /// Decision audit log: a file to append JSON lines to, or `-` for stdout.
    #[arg(long)]
    pub audit: Option<String>,
    /// Write accounts to the audit log as a keyed hash instead of as given.
    #[arg(long)]
    pub audit_hash_accounts: bool,
    /// How often changed state is written to sled, e.g. `1s` (the default).
    #[arg(long)]
    pub flush_interval: Option<String>,
    /// How long to wait for an agent's answer, e.g. `5s` (the default).
    #[arg(long)]
    pub agent_timeout: Option<String>,
    /// How often agents' health is checked, e.g. `2s` (the default).
    #[arg(long)]
    pub health_interval: Option<String>,
    /// The largest request body accepted, in bytes. Default 65536.
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// The longest a request may take before it is answered 408, e.g. `30s` (the default).
    #[arg(long)]
    pub request_timeout: Option<String>,
    /// Share state with other instances through Redis, e.g. `redis://127.0.0.1:6379`. Without
    /// it, state lives in the embedded sled store (`--data`).
    #[arg(long)]
    pub store: Option<String>,
    /// The key namespace in Redis: one per installation. Default `portcullis`.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Deadline of one Redis operation (a check, an outcome), e.g. `500ms` (the default).
    #[arg(long)]
    pub store_timeout: Option<String>,
    /// Most accounts tracked in memory. Default 2,000,000.
    #[arg(long)]
    pub max_accounts: Option<usize>,
    /// Most addresses and network prefixes tracked. Default 2,000,000.
    #[arg(long)]
    pub max_sources: Option<usize>,
    /// Most wrong-password fingerprints tracked for spray detection. Default 1,000,000.
    #[arg(long)]
    pub max_sprays: Option<usize>,
    /// Most attempts in flight (checked, outcome not yet reported). Default 1,000,000.
    #[arg(long)]
    pub max_pending: Option<usize>,
    /// Serve HTTPS and gRPC over TLS with this PEM certificate chain (needs `--tls-key`).
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Require clients (the broker) to present a certificate signed by this PEM CA (mTLS; needs
    /// `--tls-cert`).
    #[arg(long, value_name = "PEM")]
    pub client_ca: Option<PathBuf>,
    /// Serve the admin API, the dashboard and `/metrics` only on this address; `--http` then
    /// serves only the decision API and health.
    #[arg(long, value_name = "ADDR")]
    pub admin_http: Option<SocketAddr>,
    /// A proxy (address or CIDR) whose `X-Forwarded-For`/`Forwarded` headers are believed;
    /// repeat for several. Without it such headers are ignored.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<String>,
    /// When the sled store cannot be opened or read, move it aside to `<data>.corrupt-<unix
    /// seconds>` and start with an empty one. A readable store is opened as usual. A flag only
    /// (no config key): it is meant for one start, not to stay in a unit file.
    #[arg(long)]
    pub reset_store: bool,
    /// Decision requests (check, outcome, validate, batches, streams) in flight at most, HTTP and
    /// gRPC together; beyond it requests are refused at once (429 / `RESOURCE_EXHAUSTED`).
    /// Default 4096.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Consecutive faults (timeouts, broken or unusable answers, refused connections) that open
    /// an agent's circuit breaker. Default 5.
    #[arg(long)]
    pub agent_breaker_threshold: Option<u32>,
    /// How long an open agent breaker waits before one probe request may go through, e.g. `10s`
    /// (the default).
    #[arg(long)]
    pub agent_breaker_cooldown: Option<String>,
    /// Run every service thread under `SCHED_RR` at this priority (1-99), ahead of the machine's
    /// ordinary processes, so other daemons' slices do not add to the tail latency. Needs
    /// CAP_SYS_NICE or `RLIMIT_RTPRIO` (systemd `LimitRTPRIO=`); refused, not ignored, without.
    #[arg(long, value_name = "PRIORITY")]
    pub realtime: Option<u8>,
}

/// The `--config` file: the same settings as the flags, all optional.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    policy: Option<PathBuf>,
    shadow: Option<PathBuf>,
    data: Option<PathBuf>,
    http: Option<SocketAddr>,
    grpc: Option<SocketAddr>,
    #[serde(default)]
    agents: Vec<String>,
    audit: Option<String>,
    audit_hash_accounts: Option<bool>,
    flush_interval: Option<String>,
    agent_timeout: Option<String>,
    health_interval: Option<String>,
    max_body_bytes: Option<usize>,
    request_timeout: Option<String>,
    store: Option<String>,
    namespace: Option<String>,
    store_timeout: Option<String>,
    max_accounts: Option<usize>,
    max_sources: Option<usize>,
    max_sprays: Option<usize>,
    max_pending: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    admin_http: Option<SocketAddr>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    max_in_flight: Option<usize>,
    agent_breaker_threshold: Option<u32>,
    agent_breaker_cooldown: Option<String>,
    realtime: Option<u8>,
}

/// A secret setting (the admin token, a store URL that may carry a password): its `Debug` shows
/// no part of it, so a logged or printed [`Config`] never carries one.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `url` with the password of its user part, if any, replaced by `***`: for error messages.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

/// The resolved settings of a running service.
#[derive(Debug, Clone)]
pub struct Config {
    /// The enforced policy file.
    pub policy: PathBuf,
    /// The shadow policy file, if any.
    pub shadow: Option<PathBuf>,
    /// The sled data directory.
    pub data: PathBuf,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// gRPC listen address.
    pub grpc: SocketAddr,
    /// Agent base URLs (in-line mode when not empty).
    pub agents: Vec<String>,
    /// Audit log target: a path, `-` for stdout, or none.
    pub audit: Option<String>,
    /// Whether accounts are hashed in the audit log.
    pub audit_hash_accounts: bool,
    /// How often state is flushed to sled. Default 1 s.
    pub flush_interval: Duration,
    /// How often `Engine::maintain` runs and gauges are refreshed. 5 s.
    pub maintain_interval: Duration,
    /// Per-request agent timeout. Default 5 s.
    pub agent_timeout: Duration,
    /// Agent health-check period. Default 2 s.
    pub health_interval: Duration,
    /// Largest request body, bytes. Default 65536.
    pub max_body_bytes: usize,
    /// Longest a request may take. Default 30 s.
    pub request_timeout: Duration,
    /// The admin bearer token (from `PORTCULLIS_ADMIN_TOKEN`); `None` turns the admin API off.
    pub admin_token: Option<Secret>,
    /// The shared store's URL (`redis://..`, which may carry a password); `None` keeps state in
    /// sled.
    pub store: Option<Secret>,
    /// The Redis key namespace. Default `portcullis`.
    pub namespace: String,
    /// Deadline of one Redis operation. Default 500 ms.
    pub store_timeout: Duration,
    /// Caps on the engine's maps (`max_accounts`, `max_sources`, `max_sprays`, `max_pending`).
    pub limits: portcullis_engine::Limits,
    /// TLS for both listeners (`--tls-cert`, `--tls-key`, `--client-ca`); `None`: plain text.
    pub tls: Option<crate::tls::TlsPaths>,
    /// The separate admin listener (`--admin-http`); `None`: admin on the `http` listener.
    pub admin_http: Option<SocketAddr>,
    /// Peers whose forwarded-address headers are believed (`--trusted-proxy`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Move an unreadable sled store aside and start empty (`--reset-store`).
    pub reset_store: bool,
    /// Decision requests in flight at most (HTTP and gRPC together). Default 4096.
    pub max_in_flight: usize,
    /// The agents' circuit breakers: 5 faults in a row open one for 10 s.
    pub agent_breaker: crate::agent::BreakerConfig,
    /// `SCHED_RR` priority of every thread (`--realtime`); `None`: the ordinary policy.
    pub realtime: Option<u8>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: PathBuf::from("policies/default.toml"),
            shadow: None,
            data: PathBuf::from("portcullis-data"),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 50051)),
            agents: Vec::new(),
            audit: None,
            audit_hash_accounts: false,
            flush_interval: Duration::from_secs(1),
            maintain_interval: Duration::from_secs(5),
            agent_timeout: Duration::from_secs(5),
            health_interval: Duration::from_secs(2),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            admin_token: None,
            store: None,
            namespace: "portcullis".into(),
            store_timeout: Duration::from_millis(500),
            limits: portcullis_engine::Limits::default(),
            tls: None,
            admin_http: None,
            trusted_proxies: Vec::new(),
            reset_store: false,
            max_in_flight: 4096,
            agent_breaker: crate::agent::BreakerConfig::default(),
            realtime: None,
        }
    }
}

fn duration(key: &str, s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        Error::Config(format!(
            "`{key}` = {s:?}: {e} (write e.g. \"1s\", \"500ms\")"
        ))
    })?;
    if d.is_zero() {
        return Err(Error::Config(format!("`{key}` must be longer than zero")));
    }
    Ok(d)
}

impl Config {
    /// Resolves flags over the `--config` file over the defaults; the admin token is `admin_token`
    /// (read from the environment by the caller).
    pub fn resolve(args: &ServeArgs, admin_token: Option<String>) -> Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let mut c = Config::default();
        if let Some(v) = args.policy.clone().or(file.policy) {
            c.policy = v;
        }
        c.shadow = args.shadow.clone().or(file.shadow);
        if let Some(v) = args.data.clone().or(file.data) {
            c.data = v;
        }
        if let Some(v) = args.http.or(file.http) {
            c.http = v;
        }
        if let Some(v) = args.grpc.or(file.grpc) {
            c.grpc = v;
        }
        c.agents = if args.agents.is_empty() {
            file.agents
        } else {
            args.agents.clone()
        };
        for a in &c.agents {
            if !(a.starts_with("http://") || a.starts_with("https://")) {
                return Err(Error::Config(format!(
                    "agent {a:?} must be an http:// or https:// URL"
                )));
            }
        }
        c.audit = args.audit.clone().or(file.audit);
        c.audit_hash_accounts =
            args.audit_hash_accounts || file.audit_hash_accounts.unwrap_or(false);
        if let Some(v) = args
            .flush_interval
            .as_ref()
            .or(file.flush_interval.as_ref())
        {
            c.flush_interval = duration("flush_interval", v)?;
        }
        if let Some(v) = args.agent_timeout.as_ref().or(file.agent_timeout.as_ref()) {
            c.agent_timeout = duration("agent_timeout", v)?;
        }
        if let Some(v) = args
            .health_interval
            .as_ref()
            .or(file.health_interval.as_ref())
        {
            c.health_interval = duration("health_interval", v)?;
        }
        if let Some(v) = args
            .request_timeout
            .as_ref()
            .or(file.request_timeout.as_ref())
        {
            c.request_timeout = duration("request_timeout", v)?;
        }
        if let Some(v) = args.max_body_bytes.or(file.max_body_bytes) {
            if v < 1024 {
                return Err(Error::Config(format!(
                    "`max_body_bytes` = {v} must be at least 1024"
                )));
            }
            c.max_body_bytes = v;
        }
        c.store = args.store.clone().or(file.store).map(Secret::from);
        if let Some(url) = c.store.as_ref().map(Secret::expose) {
            if !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("redis+unix://"))
            {
                return Err(Error::Config(format!(
                    "store {:?} must be a redis://, rediss:// or redis+unix:// URL",
                    redacted_url(url)
                )));
            }
        }
        if let Some(ns) = args.namespace.clone().or(file.namespace) {
            if !portcullis_engine::policy::valid_tenant_name(&ns) {
                return Err(Error::Config(format!(
                    "`namespace` = {ns:?} must be 1 to 64 of A-Z a-z 0-9 . _ -"
                )));
            }
            c.namespace = ns;
        }
        if let Some(v) = args.store_timeout.as_ref().or(file.store_timeout.as_ref()) {
            c.store_timeout = duration("store_timeout", v)?;
        }
        for (key, flag, file, slot) in [
            (
                "max_accounts",
                args.max_accounts,
                file.max_accounts,
                &mut c.limits.max_accounts,
            ),
            (
                "max_sources",
                args.max_sources,
                file.max_sources,
                &mut c.limits.max_sources,
            ),
            (
                "max_sprays",
                args.max_sprays,
                file.max_sprays,
                &mut c.limits.max_sprays,
            ),
            (
                "max_pending",
                args.max_pending,
                file.max_pending,
                &mut c.limits.max_pending,
            ),
        ] {
            if let Some(v) = flag.or(file) {
                if v < 100 {
                    return Err(Error::Config(format!("`{key}` = {v} must be at least 100")));
                }
                *slot = v;
            }
        }
        c.reset_store = args.reset_store;
        if let Some(v) = args.max_in_flight.or(file.max_in_flight) {
            if v == 0 {
                return Err(Error::Config(
                    "`max_in_flight` = 0 must be at least 1".to_string(),
                ));
            }
            c.max_in_flight = v;
        }
        if let Some(v) = args
            .agent_breaker_threshold
            .or(file.agent_breaker_threshold)
        {
            if v == 0 {
                return Err(Error::Config(
                    "`agent_breaker_threshold` = 0 must be at least 1".to_string(),
                ));
            }
            c.agent_breaker.threshold = v;
        }
        if let Some(v) = args
            .agent_breaker_cooldown
            .as_ref()
            .or(file.agent_breaker_cooldown.as_ref())
        {
            c.agent_breaker.cooldown = duration("agent_breaker_cooldown", v)?;
        }
        if let Some(v) = args.realtime.or(file.realtime) {
            if !crate::sched::PRIORITIES.contains(&v) {
                return Err(Error::Config(format!(
                    "`realtime` = {v} must be a SCHED_RR priority from 1 to 99"
                )));
            }
            c.realtime = Some(v);
        }
        c.admin_token = admin_token.filter(|t| !t.is_empty()).map(Secret::from);
        c.tls = tls_paths(
            args.tls_cert.clone().or(file.tls_cert),
            args.tls_key.clone().or(file.tls_key),
            args.client_ca.clone().or(file.client_ca),
        )?;
        c.admin_http = args.admin_http.or(file.admin_http);
        let proxies = if args.trusted_proxies.is_empty() {
            file.trusted_proxies
        } else {
            args.trusted_proxies.clone()
        };
        c.trusted_proxies = proxies
            .iter()
            .map(|p| parse_proxy(p))
            .collect::<Result<_>>()?;
        Ok(c)
    }
}

/// Both of `--tls-cert` and `--tls-key` or neither; `--client-ca` only with them.
fn tls_paths(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<crate::tls::TlsPaths>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsPaths {
            cert,
            key,
            client_ca,
        })),
        (Some(_), None) => Err(Error::Config(
            "`--tls-cert` (`tls_cert`) is given without `--tls-key` (`tls_key`): give both".into(),
        )),
        (None, Some(_)) => Err(Error::Config(
            "`--tls-key` (`tls_key`) is given without `--tls-cert` (`tls_cert`): give both".into(),
        )),
        (None, None) if client_ca.is_some() => Err(Error::Config(
            "`--client-ca` (`client_ca`) needs `--tls-cert` and `--tls-key`".into(),
        )),
        (None, None) => Ok(None),
    }
}

/// A trusted proxy: a CIDR, or one address (as a /32 or /128).
fn parse_proxy(s: &str) -> Result<ipnet::IpNet> {
    let t = s.trim();
    t.parse::<ipnet::IpNet>()
        .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            Error::Config(format!(
                "`--trusted-proxy` (`trusted_proxies`) {s:?} is not an address or CIDR"
            ))
        })
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_config_shows_neither_the_admin_token_nor_the_store_password() {
        let args = ServeArgs {
            store: Some("redis://portcullis:hunter2-store@127.0.0.1:6379/0".into()),
            ..ServeArgs::default()
        };
        let c = Config::resolve(&args, Some("tok-s3cret".into())).unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("tok-s3cret"), "{shown}");
        assert!(!shown.contains("hunter2-store"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(
            c.admin_token.as_ref().map(Secret::expose),
            Some("tok-s3cret")
        );
    }

    #[test]
    fn a_refused_store_url_is_quoted_without_its_password() {
        let args = ServeArgs {
            store: Some("http://user:hunter2-store@127.0.0.1:6379".into()),
            ..ServeArgs::default()
        };
        let e = Config::resolve(&args, None).unwrap_err().to_string();
        assert!(
            e.contains("store") && e.contains("user:***@127.0.0.1:6379"),
            "{e}"
        );
        assert!(!e.contains("hunter2-store"), "{e}");
    }

    #[test]
    fn redacted_url_hides_only_the_password() {
        for (url, shown) in [
            ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
            ("rediss://u:pw@host/1?x=y", "rediss://u:***@host/1?x=y"),
            ("redis://u@host", "redis://u:***@host"),
            ("redis://host:6379/0", "redis://host:6379/0"),
            (
                "redis+unix:///run/redis.sock",
                "redis+unix:///run/redis.sock",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
    }

    #[test]
    fn defaults_apply_without_flags() {
        let c = Config::resolve(&ServeArgs::default(), None).unwrap();
        assert_eq!(c.http.to_string(), "127.0.0.1:8080");
        assert_eq!(c.grpc.to_string(), "127.0.0.1:50051");
        assert_eq!(c.policy, PathBuf::from("policies/default.toml"));
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert!(c.admin_token.is_none());
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "http = \"127.0.0.1:9000\"\ngrpc = \"127.0.0.1:9001\"\nflush_interval = \"2s\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            http: Some("127.0.0.1:9100".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::resolve(&args, Some("t".into())).unwrap();
        assert_eq!(c.http.to_string(), "127.0.0.1:9100");
        assert_eq!(c.grpc.to_string(), "127.0.0.1:9001");
        assert_eq!(c.flush_interval, Duration::from_secs(2));
        assert_eq!(c.admin_token.as_ref().map(Secret::expose), Some("t"));
    }

    #[test]
    fn reads_overload_and_breaker_settings_and_refuses_zero() {
        let c = Config::resolve(&ServeArgs::default(), None).unwrap();
        assert_eq!(c.max_in_flight, 4096);
        assert!(!c.reset_store);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "max_in_flight = 64\nagent_breaker_threshold = 3\nagent_breaker_cooldown = \"2s\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let c = Config::resolve(&args, None).unwrap();
        assert_eq!(c.max_in_flight, 64);
        assert_eq!(c.agent_breaker.threshold, 3);
        assert_eq!(c.agent_breaker.cooldown, Duration::from_secs(2));
        for (args, key) in [
            (
                ServeArgs {
                    max_in_flight: Some(0),
                    ..Default::default()
                },
                "max_in_flight",
            ),
            (
                ServeArgs {
                    agent_breaker_threshold: Some(0),
                    ..Default::default()
                },
                "agent_breaker_threshold",
            ),
            (
                ServeArgs {
                    agent_breaker_cooldown: Some("never".into()),
                    ..Default::default()
                },
                "agent_breaker_cooldown",
            ),
        ] {
            let e = Config::resolve(&args, None).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn refuses_unknown_keys_and_bad_durations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "htp = \"x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        assert!(Config::resolve(&args, None).is_err());
        let args = ServeArgs {
            flush_interval: Some("soon".into()),
            ..Default::default()
        };
        assert!(Config::resolve(&args, None).is_err());
    }

    #[test]
    fn map_caps_come_from_flags_or_the_file_and_tiny_caps_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "max_accounts = 5000\nmax_sprays = 700\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            max_sprays: Some(900),
            ..Default::default()
        };
        let c = Config::resolve(&args, None).unwrap();
        assert_eq!(c.limits.max_accounts, 5000);
        assert_eq!(c.limits.max_sprays, 900);
        assert_eq!(
            c.limits.max_sources,
            portcullis_engine::Limits::default().max_sources
        );
        let args = ServeArgs {
            max_sources: Some(3),
            ..Default::default()
        };
        let err = Config::resolve(&args, None).unwrap_err().to_string();
        assert!(err.contains("`max_sources`"), "{err}");
    }

    fn err(args: &ServeArgs) -> String {
        Config::resolve(args, None).unwrap_err().to_string()
    }

    #[test]
    fn tls_needs_both_cert_and_key_and_names_the_missing_flag() {
        let e = err(&ServeArgs {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        });
        assert!(e.contains("--tls-key"), "{e}");
        let e = err(&ServeArgs {
            tls_key: Some("k.pem".into()),
            ..Default::default()
        });
        assert!(e.contains("--tls-cert"), "{e}");
        let e = err(&ServeArgs {
            client_ca: Some("ca.pem".into()),
            ..Default::default()
        });
        assert!(e.contains("--client-ca"), "{e}");
    }

    #[test]
    fn security_keys_in_the_file_match_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nclient_ca = \"ca.pem\"\n\
             admin_http = \"127.0.0.1:9443\"\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let c = Config::resolve(&args, None).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.key, PathBuf::from("k.pem"));
        assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(c.admin_http.unwrap().to_string(), "127.0.0.1:9443");
        let proxies: Vec<String> = c.trusted_proxies.iter().map(|p| p.to_string()).collect();
        assert_eq!(proxies, ["10.0.0.0/8", "192.0.2.7/32"]);
        let e = err(&ServeArgs {
            trusted_proxies: vec!["10.0.0.0/33".into()],
            ..Default::default()
        });
        assert!(e.contains("--trusted-proxy"), "{e}");
    }

    #[test]
    fn realtime_comes_from_the_flag_or_the_file_and_out_of_range_priorities_are_refused_by_key() {
        assert_eq!(
            Config::resolve(&ServeArgs::default(), None)
                .unwrap()
                .realtime,
            None
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "realtime = 10\n").unwrap();
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        assert_eq!(
            Config::resolve(&from_file, None).unwrap().realtime,
            Some(10)
        );
        let flag_wins = ServeArgs {
            realtime: Some(20),
            ..from_file
        };
        assert_eq!(
            Config::resolve(&flag_wins, None).unwrap().realtime,
            Some(20)
        );
        for bad in [0u8, 100] {
            let e = err(&ServeArgs {
                realtime: Some(bad),
                ..Default::default()
            });
            assert!(e.contains("`realtime`") && e.contains("1 to 99"), "{e}");
        }
        // Beyond a byte, the file's parser names the key.
        std::fs::write(&path, "realtime = 300\n").unwrap();
        let e = err(&ServeArgs {
            config: Some(path),
            ..Default::default()
        });
        assert!(e.contains("realtime"), "{e}");
    }
}
