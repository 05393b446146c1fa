//! [`RedisStore`]: the engine's check/outcome sequence against state shared in Redis.
//!
//! # The sequence
//! A check reads, in one pipeline, the account, every source key of the address, the familiar
//! prefix and the fingerprint's spray state. It applies [`rules::source_finding`] to the sources
//! (a block answers at once), this instance's rate limit, [`rules::shared_familiar`] and the spray
//! state, then [`rules::decide_account`] to the account value and, when it forwards, adds the
//! attempt to the account's in-flight list: that value is written back by a compare-and-swap of
//! the whole value, so if another instance changed the account in between, the account is read
//! again and decided again (bounded retries with jitter). The attempt record (`{ns:t:<id>}`) is
//! written in the same pipeline as the swap.
//!
//! An outcome claims the attempt record with `GETDEL` (so it is applied once, whichever instance
//! receives it), then updates the account ([`rules::account_outcome`], releasing the in-flight
//! entry), each source key ([`rules::source_outcome`], [`rules::familiar_success`]) and the spray
//! state ([`rules::spray_failure`]), each by its own compare-and-swap. If the store fails after the
//! claim, the record is put back so the outcome can be reported again.
//!
//! # Keys
//! `{ns:a:<hex>}` account (keyed hash of tenant and normalised name), `{ns:s:<hex>}` source (keyed
//! hash of tenant and prefix), `{ns:p:<hex>}` sprayed fingerprint (keyed hash of the engine's keyed
//! hash), `{ns:t:<id>}` attempt in flight, `{ns:meta}:secret` the installation's hash key. Each key
//! is its own hash tag and every script touches one key, so the scripts run unchanged on Redis
//! Cluster. Every write sets a TTL: the longest window that matters for that kind of state under
//! the tenant's policy (see [`ttls`]), so idle state leaves Redis by itself.
//!
//! # Outage
//! Every operation has a deadline (`StoreOptions::timeout`); a Redis error or a missed deadline is
//! [`StoreError::Unavailable`] and marks the store down until an operation (or the health ping)
//! succeeds again. The connection manager reconnects by itself. What a check answers meanwhile is
//! the caller's choice (the policy's `fail_mode`, see `crate::service`).
//!
//! # Local cache
//! Only one: a source block seen in Redis is remembered until it ends, and a later check whose
//! first source key is still blocked is answered from memory (enforce mode only) after one read
//! of the installation's block epoch (`{ns:meta}:epoch`) instead of every key. A source block
//! ends early only by an operator's clear-source ([`RedisStore::clear_source_block`]), which
//! writes a fresh random epoch after its swaps; an entry is stamped with the epoch read in the
//! same pipeline as (and before) the source values, so a cached block whose epoch no longer
//! matches is dropped and the check reads Redis: a cleared block is never answered from any
//! instance's cache. (Chosen over invalidation messages: no second connection, no lost message.)
//!
//! # Indexes for the admin views
//! Redis cannot list keys by content, so three small sorted sets name what is in force, scored
//! by its end (ms): `{ns:ix:lockouts}` (member: the account key's hash), `{ns:ix:sources}`
//! (member: the source key's hash, the tenant and the address or prefix, which the view shows),
//! `{ns:ix:sprays}` (member: the spray key's hash and its opaque id). A member is added when a
//! lockout, block or spray starts, after its swap (best effort: a failure there loses a row of a
//! list, never a decision); entries past their end are pruned on every read, as is a member whose
//! value no longer shows anything in force. Each set keeps at most [`MAX_INDEX`] members (the
//! latest ends) and carries the TTL of its kind. See [`admin`].

use portcullis_engine::net::{canonical, NetKey};
use portcullis_engine::policy::{Familiarity, Mode, TenantPolicy};
use portcullis_engine::rules::{self, familiar_key, AccountEffects, SourceContext, SourceKeys};
use portcullis_engine::state::{AccountState, SourceState, SprayState, TenantName};
use portcullis_engine::{Attempt, Decision, Engine, Outcome, OutcomeEffects, Timestamp, Verdict};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Compare-and-swap of one whole value: writes `ARGV[2]` with a TTL of `ARGV[3]` ms when the
/// current value is `ARGV[1]` (the empty string meaning absent). Returns 1 when written, 0 on
/// conflict. One key only: runs unchanged on Redis Cluster.
const CAS_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Compare-and-swap tries before giving up on a hot key ([`StoreError::Contended`]).
const MAX_CAS_TRIES: u32 = 32;

/// In-flight attempts kept per account at most (only `log_only` mode can reach it).
const MAX_PENDING_PER_ACCOUNT: usize = 10_000;

/// Source blocks remembered locally at most; the cache is cleared when full.
const MAX_CACHED_BLOCKS: usize = 100_000;

/// Members kept at most in each admin index (the ones ending last are kept).
pub const MAX_INDEX: usize = 10_000;

mod admin;
use admin::IndexKind;

/// Why a shared-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A key changed under every one of the bounded compare-and-swap tries.
    #[error("store contended: too many concurrent updates of one key")]
    Contended,
    /// A value in Redis could not be decoded (another version, or corruption).
    #[error("store value {key} unreadable: {reason}")]
    Corrupt {
        /// The Redis key (hashes only).
        key: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The engine refused the input (bad tenant, empty name, unknown attempt).
    #[error(transparent)]
    Engine(#[from] portcullis_engine::Error),
}

impl StoreError {
    /// Whether the store, not the request, is at fault (the fail mode applies).
    pub fn is_outage(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Contended)
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

type StoreResult<T> = std::result::Result<T, StoreError>;

/// How to connect. Its `Debug` shows the URL with its password replaced by `***`.
#[derive(Clone)]
pub struct StoreOptions {
    /// `redis://host:port[/db]` (or `rediss://`, `redis+unix://`).
    pub url: String,
    /// Key namespace: one per installation, 1-64 of `A-Z a-z 0-9 . _ -`. Default `portcullis`.
    pub namespace: String,
    /// Deadline of one operation (a check or an outcome, all its round trips). Default 500 ms.
    pub timeout: Duration,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("url", &crate::config::redacted_url(&self.url))
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl StoreOptions {
    /// Options for `url` with the default namespace and deadline.
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions {
            url: url.into(),
            namespace: "portcullis".into(),
            timeout: Duration::from_millis(500),
        }
    }
}

/// The account's value in Redis: its state and the attempts in flight (id, checked at ms).
/// `AccountState::pending` is not serialised; it is the length of `pending` when the rules run.
#[derive(Serialize, Deserialize)]
struct AccountRec {
    state: AccountState,
    pending: Vec<(u64, i64)>,
}

impl AccountRec {
    /// Drops attempts in flight longer than the directory's observation window (the directory
    /// has forgotten them too; [`Engine`] expires them the same way) and sets the state's count.
    fn settle(&mut self, now: i64, window_ms: i64) {
        self.pending.retain(|&(_, at)| now - at < window_ms);
        self.state.pending = self.pending.len() as u32;
    }
}

/// An attempt in flight, as its outcome needs it.
#[derive(Serialize, Deserialize)]
struct AttemptRec {
    account: u128,
    tenant: String,
    ip: IpAddr,
    familiar: bool,
    fp: Option<u64>,
    at: i64,
}

/// TTLs (ms) of the kinds of key under a tenant's policy: the longest window that matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttls {
    /// Account values: lockouts and their forgiveness, mirror, familiar locations, remembered
    /// wrong passwords, flags.
    pub account_ms: i64,
    /// Source values: counters, blocks and their forgiveness, shared familiarity.
    pub source_ms: i64,
    /// Spray values: the spray window and how long a fingerprint stays sprayed.
    pub spray_ms: i64,
    /// Attempts in flight: the directory's observation window.
    pub attempt_ms: i64,
}

/// The TTLs of `p`. At least a day for accounts, sources and sprays (as long as the embedded
/// engine keeps idle entries), 30 days for accounts (a flag on an account stays that long).
pub fn ttls(p: &TenantPolicy) -> Ttls {
    const DAY: i64 = 86_400_000;
    let d = &p.directory;
    let l = &p.lockout;
    let account_ms = [
        d.observation_window.ms(),
        d.lockout_duration.ms(),
        l.window.ms(),
        l.max_duration.ms().saturating_mul(2),
        l.remember_for.ms(),
        p.familiar.familiar_for.ms(),
        30 * DAY,
    ]
    .into_iter()
    .max()
    .unwrap_or(DAY);
    let source_ms = [
        p.sources.window.ms(),
        p.spray.window.ms(),
        p.familiar.familiar_for.ms(),
        p.sources.block_max_duration.ms().saturating_mul(2),
        DAY,
    ]
    .into_iter()
    .max()
    .unwrap_or(DAY);
    let spray_ms = [p.spray.window.ms(), p.spray.sprayed_for.ms(), DAY]
        .into_iter()
        .max()
        .unwrap_or(DAY);
    Ttls {
        account_ms,
        source_ms,
        spray_ms,
        attempt_ms: d.observation_window.ms().max(1000),
    }
}

/// Counts of what the store did since start, for metrics.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Compare-and-swap conflicts (another instance changed the key first).
    pub conflicts: AtomicU64,
    /// Operations that failed for the store (unreachable, deadline, contention).
    pub errors: AtomicU64,
    /// Checks answered from the local source-block cache.
    pub cache_hits: AtomicU64,
}

/// State shared by several instances through Redis. See the module docs.
pub struct RedisStore {
    conn: ConnectionManager,
    ns: String,
    secret: [u8; 32],
    engine: Arc<Engine>,
    timeout: Duration,
    up: AtomicBool,
    /// Cached source blocks: the decision (with `retry_after` holding the absolute end) and the
    /// block epoch read with the value.
    blocked: Mutex<HashMap<String, (Decision, u64)>>,
    /// What the store did, for metrics.
    pub counters: StoreCounters,
}

impl RedisStore {
    /// Connects and reads (or creates) the installation's secret under the namespace; every
    /// instance on the same Redis and namespace gets the same one.
    pub async fn connect(opts: &StoreOptions) -> StoreResult<(ConnectionManager, [u8; 32])> {
        if !portcullis_engine::policy::valid_tenant_name(&opts.namespace) {
            return Err(StoreError::Unavailable(format!(
                "namespace {:?} must be 1 to 64 of A-Z a-z 0-9 . _ -",
                opts.namespace
            )));
        }
        let client = redis::Client::open(opts.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(opts.timeout)
            .set_response_timeout(opts.timeout)
            .set_number_of_retries(2)
            .set_factor(50)
            .set_max_delay(500);
        let mut conn = tokio::time::timeout(
            opts.timeout * 4,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| StoreError::Unavailable("connecting timed out".into()))??;
        let key = format!("{{{}:meta}}:secret", opts.namespace);
        let mut fresh = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
        // SET NX then GET: whichever instance came first, all agree.
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&fresh[..])
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        let v: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        let secret = <[u8; 32]>::try_from(v.as_slice()).map_err(|_| StoreError::Corrupt {
            key,
            reason: format!("expected 32 bytes, found {}", v.len()),
        })?;
        Ok((conn, secret))
    }

    /// A store over `conn` whose rules run on `engine` (built with the secret `connect` returned;
    /// it supplies the policy, the keyed hashes and this instance's rate limits, and keeps no
    /// account, source or spray state of its own).
    pub fn new(
        conn: ConnectionManager,
        secret: [u8; 32],
        engine: Arc<Engine>,
        opts: &StoreOptions,
    ) -> RedisStore {
        RedisStore {
            conn,
            ns: opts.namespace.clone(),
            secret,
            engine,
            timeout: opts.timeout,
            up: AtomicBool::new(true),
            blocked: Mutex::new(HashMap::new()),
            counters: StoreCounters::default(),
        }
    }

    /// Connects and builds the store with a fresh in-memory engine for `policy`.
    /// Sets the `portcullis_store_up` gauge to 1.
    pub async fn open(
        opts: &StoreOptions,
        policy: portcullis_engine::Policy,
    ) -> StoreResult<RedisStore> {
        let (conn, secret) = Self::connect(opts).await?;
        let engine = Arc::new(Engine::new(
            policy,
            portcullis_engine::Options {
                // The keys every instance sharing the namespace has used since the first.
                key_scheme: portcullis_engine::KeyScheme::Blake3,
                ..portcullis_engine::Options::in_memory(secret)
            },
        )?);
        metrics::gauge!(crate::metrics::STORE_UP).set(1.0);
        Ok(RedisStore::new(conn, secret, engine, opts))
    }

    /// The engine the rules run on (policy, hashes, rate limits).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The installation's secret, as read from Redis.
    pub fn secret(&self) -> [u8; 32] {
        self.secret
    }

    /// Whether the last operation reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Checks Redis within the deadline and updates [`Self::is_up`]. It also puts the secret back
    /// (`SET NX`) should Redis have restarted empty, so instances started later still agree; a
    /// different secret found there (another installation sharing the namespace) counts as down.
    pub async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        let key = format!("{{{}:meta}}:secret", self.ns);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(&self.secret[..])
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key);
        let r = tokio::time::timeout(self.timeout, pipe.query_async::<(Vec<u8>,)>(&mut c)).await;
        let ok = match r {
            Ok(Ok((v,))) if v == self.secret => true,
            Ok(Ok(_)) => {
                tracing::error!(namespace = %self.ns, "Another secret is stored under this namespace: refusing to share state.");
                false
            }
            _ => false,
        };
        self.set_up(ok);
        ok
    }

    async fn guarded<T>(
        &self,
        f: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let r = match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable("deadline passed".into())),
        };
        match &r {
            Err(e) if e.is_outage() => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                if matches!(e, StoreError::Unavailable(_)) {
                    self.set_up(false);
                }
            }
            _ => self.set_up(true),
        }
        r
    }

    /// Records whether Redis answered; the `portcullis_store_up` gauge follows on every change.
    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            metrics::gauge!(crate::metrics::STORE_UP).set(if up { 1.0 } else { 0.0 });
        }
    }

    fn hash_hex(&self, domain: &[u8], parts: &[&[u8]]) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(domain);
        for p in parts {
            h.update(&(p.len() as u32).to_le_bytes());
            h.update(p);
        }
        h.finalize().to_hex()[..32].to_string()
    }

    fn account_key(&self, acct: u128) -> String {
        format!("{{{}:a:{:032x}}}", self.ns, acct)
    }

    fn source_key(&self, tenant_id: u64, net: NetKey) -> String {
        let net = bincode::serialize(&net).unwrap_or_default();
        let hex = self.hash_hex(b"src", &[&tenant_id.to_le_bytes(), &net]);
        format!("{{{}:s:{hex}}}", self.ns)
    }

    fn spray_key(&self, fp_hash: u64) -> String {
        let hex = self.hash_hex(b"spray", &[&fp_hash.to_le_bytes()]);
        format!("{{{}:p:{hex}}}", self.ns)
    }

    fn attempt_key(&self, id: u64) -> String {
        format!("{{{}:t:{id}}}", self.ns)
    }

    /// Decides on one attempt at `now`, as [`Engine::check`] would with all instances' state.
    pub async fn check(&self, a: &Attempt<'_>, now: Timestamp) -> StoreResult<Decision> {
        self.guarded(self.check_inner(a, now)).await
    }

    /// Records what the directory answered for a forwarded attempt, as [`Engine::outcome`] would;
    /// returns what it did and the attempt's tenant. An unknown or already reported id is
    /// `Engine(UnknownAttempt)` and changes nothing.
    pub async fn outcome(
        &self,
        attempt_id: u64,
        result: Outcome,
        fingerprint: Option<&[u8]>,
        now: Timestamp,
    ) -> StoreResult<(OutcomeEffects, String)> {
        self.guarded(self.outcome_inner(attempt_id, result, fingerprint, now))
            .await
    }

    /// The cached block of source `key` still in force at `now`, with the epoch it was read at.
    fn cached_block(&self, key: &str, now: i64) -> Option<(Decision, u64)> {
        let cache = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let (d, epoch) = cache.get(key)?;
        let until = d.retry_after.map_or(0, |r| r.as_millis() as i64);
        // Stored with retry_after holding the absolute end; rebuild the relative one.
        (until > now).then(|| {
            let mut d = d.clone();
            d.retry_after = rules::retry(until - now);
            (d, *epoch)
        })
    }

    fn cache_block(&self, key: &str, d: &Decision, until: i64, epoch: u64) {
        let mut cache = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_BLOCKS {
            cache.clear();
        }
        let mut d = d.clone();
        d.retry_after = Some(Duration::from_millis(until.max(0) as u64));
        cache.insert(key.to_string(), (d, epoch));
    }

    /// Drops every cached block not read at `epoch` (an operator cleared some block since).
    fn forget_blocks_before(&self, epoch: u64) {
        let mut cache = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (_, e)| *e == epoch);
    }

    fn epoch_key(&self) -> String {
        format!("{{{}:meta}}:epoch", self.ns)
    }

    async fn check_inner(&self, a: &Attempt<'_>, now: Timestamp) -> StoreResult<Decision> {
        let t = now.as_millis();
        let (p, tenant_id) = self.engine.tenant_info(a.tenant)?;
        let p = &*p;
        let ip = canonical(a.ip);
        let (acct, name) = self.engine.account_identity(a.tenant, a.user)?;
        let fp = a
            .fingerprint
            .map(|f| self.engine.fingerprint_hash(a.tenant, f));
        let log_only = p.mode == Mode::LogOnly;
        let ttl = ttls(p);
        let akey = self.account_key(acct);
        let acct_tag = acct as u32;
        let fam_key = familiar_key(ip, p);
        let trusted = p.sources.trusted.iter().any(|n| n.contains(&ip));

        let mut early = None;
        if p.sources.blocked.iter().any(|n| n.contains(&ip)) {
            let fired = portcullis_engine::Fired {
                counter: "blocked_network",
                value: 1,
                limit: 1,
            };
            early = Some(rules::refuse(
                portcullis_engine::Reason::BlockedNetwork,
                None,
                fired,
                Familiarity::Unfamiliar,
            ));
        }
        let src: Vec<(NetKey, String)> = if trusted || early.is_some() {
            Vec::new()
        } else {
            SourceKeys::of(ip, p)
                .iter()
                .map(|n| (n, self.source_key(tenant_id, n)))
                .collect()
        };
        if !log_only {
            if let Some(d) = early {
                return Ok(d);
            }
            if let Some((_, k)) = src.first() {
                if let Some((d, epoch)) = self.cached_block(k, t) {
                    let mut c = self.conn.clone();
                    let now_epoch = parse_epoch(
                        redis::cmd("GET")
                            .arg(self.epoch_key())
                            .query_async(&mut c)
                            .await?,
                    );
                    if now_epoch == epoch {
                        self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(d);
                    }
                    self.forget_blocks_before(now_epoch);
                }
            }
        }

        // One round trip for everything the decision reads.
        let fam = (early.is_none() && p.familiar.shared_after_accounts > 0)
            .then(|| self.source_key(tenant_id, fam_key));
        let spray = fp.filter(|_| early.is_none()).map(|h| self.spray_key(h));
        let mut pipe = redis::pipe();
        // The epoch first: a block read after it was cleared cannot carry the older epoch.
        pipe.cmd("GET").arg(self.epoch_key());
        pipe.cmd("GET").arg(&akey);
        for (_, k) in &src {
            pipe.cmd("GET").arg(k);
        }
        if let Some(k) = &fam {
            pipe.cmd("GET").arg(k);
        }
        if let Some(k) = &spray {
            pipe.cmd("GET").arg(k);
        }
        let mut c = self.conn.clone();
        let vals: Vec<Option<Vec<u8>>> = pipe.query_async(&mut c).await?;
        let mut vals = vals.into_iter();
        let epoch = parse_epoch(vals.next().flatten());
        let acct_val = vals.next().flatten();

        let mut ctx = SourceContext::default();
        // As one engine reads them: the address, then its rate bucket, then its prefixes, until a
        // block or the rate refuses. (No keys: a trusted source, or refused already.)
        if let Some(((net, k), prefixes)) = src.split_first() {
            let mut read = |net: NetKey, k: &str| -> StoreResult<Option<Decision>> {
                let Some(v) = vals.next().flatten() else {
                    return Ok(None);
                };
                let s: SourceState = decode(k, &v)?;
                let finding = rules::source_finding(p, net, &s, acct_tag, t, true);
                if let Some(d) = finding.blocked {
                    if !log_only {
                        self.cache_block(k, &d, s.block.until, epoch);
                    }
                    return Ok(Some(d));
                }
                ctx.suspicious |= finding.suspicious;
                Ok(None)
            };
            early = read(*net, k)?;
            if early.is_none() {
                early = self.engine.rate_limited(a.tenant, ip, now)?;
            }
            for (net, k) in prefixes {
                if early.is_some() {
                    break;
                }
                early = read(*net, k)?;
            }
        }
        if let Some(d) = early {
            if !log_only {
                return Ok(d);
            }
            // log_only: forwarded anyway, counted against the account if it is known.
            let id = new_id();
            let rec = AttemptRec {
                account: acct,
                tenant: a.tenant.to_string(),
                ip,
                familiar: d.familiarity.is_familiar(),
                fp,
                at: t,
            };
            self.update::<AccountRec, ()>(&akey, ttl.account_ms, Some(acct_val), |cur| match cur {
                Some(mut r) => {
                    r.settle(t, p.directory.observation_window.ms());
                    push_pending(&mut r, id, t);
                    (Some(r), ())
                }
                None => (None, ()),
            })
            .await?;
            self.put_attempt(id, &rec, ttl.attempt_ms).await?;
            let mut d = d;
            d.verdict = Verdict::Forward;
            d.attempt_id = Some(id);
            return Ok(d);
        }
        if let Some(k) = &fam {
            if let Some(v) = vals.next().flatten() {
                let s: SourceState = decode(k, &v)?;
                ctx.shared = rules::shared_familiar(p, &s, t);
            }
        }
        if let Some(k) = &spray {
            if let Some(v) = vals.next().flatten() {
                let s: SprayState = decode(k, &v)?;
                ctx.sprayed = s.is_sprayed(t);
            }
        }

        let id = new_id();
        let tenant: TenantName = Arc::new(a.tenant.into());
        let window = p.directory.observation_window.ms();
        let att_key = self.attempt_key(id);
        let d = self
            .update_with::<AccountRec, Decision>(
                &akey,
                ttl.account_ms,
                Some(acct_val),
                Some((&att_key, ttl.attempt_ms)),
                |cur| {
                    let mut r = cur.unwrap_or_else(|| AccountRec {
                        state: AccountState::new(tenant.clone(), name.clone(), t),
                        pending: Vec::new(),
                    });
                    r.settle(t, window);
                    r.state.last_seen = t;
                    let d = rules::decide_account(&mut r.state, p, fam_key, ctx, fp, t);
                    // Counted in the same swap as the budget check: two instances can never
                    // together overspend the account.
                    let counted = d.verdict == Verdict::Forward || log_only;
                    let attempt = counted.then(|| {
                        encode(&AttemptRec {
                            account: acct,
                            tenant: a.tenant.to_string(),
                            ip,
                            familiar: d.familiarity.is_familiar(),
                            fp,
                            at: t,
                        })
                    });
                    if counted {
                        push_pending(&mut r, id, t);
                    }
                    (Some(r), d, attempt)
                },
            )
            .await?;
        let mut d = d;
        if log_only {
            d.verdict = Verdict::Forward;
        }
        if d.verdict == Verdict::Forward {
            d.attempt_id = Some(id);
        }
        Ok(d)
    }

    async fn put_attempt(&self, id: u64, rec: &AttemptRec, ttl_ms: i64) -> StoreResult<()> {
        let mut c = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(self.attempt_key(id))
            .arg(encode(rec))
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Read-modify-write of one value by compare-and-swap. `first` is the value already read (if
    /// any); `f` gets the decoded value (`None` when absent) and returns the new value (`None`:
    /// write nothing) and its result. On a conflict the value is read again and `f` runs again,
    /// at most [`MAX_CAS_TRIES`] times, with a growing random pause.
    async fn update<T, R>(
        &self,
        key: &str,
        ttl_ms: i64,
        first: Option<Option<Vec<u8>>>,
        mut f: impl FnMut(Option<T>) -> (Option<T>, R) + Send,
    ) -> StoreResult<R>
    where
        T: Serialize + DeserializeOwned + Send,
        R: Send,
    {
        self.update_with(key, ttl_ms, first, None, |cur| {
            let (new, r) = f(cur);
            (new, r, None)
        })
        .await
    }

    /// [`Self::update`], and when `f` also gives bytes, writes them to `extra` (key, TTL ms) in the
    /// same pipeline as the swap (the attempt record of a forwarded check); removed again if the
    /// swap loses.
    async fn update_with<T, R>(
        &self,
        key: &str,
        ttl_ms: i64,
        mut first: Option<Option<Vec<u8>>>,
        extra: Option<(&str, i64)>,
        mut f: impl FnMut(Option<T>) -> (Option<T>, R, Option<Vec<u8>>) + Send,
    ) -> StoreResult<R>
    where
        T: Serialize + DeserializeOwned + Send,
        R: Send,
    {
        let mut c = self.conn.clone();
        for tries in 0..MAX_CAS_TRIES {
            let old: Option<Vec<u8>> = match first.take() {
                Some(v) => v,
                None => redis::cmd("GET").arg(key).query_async(&mut c).await?,
            };
            let cur = old.as_deref().map(|v| decode::<T>(key, v)).transpose()?;
            let (new, r, extra_bytes) = f(cur);
            let Some(new) = new else {
                return Ok(r);
            };
            let bytes = encode(&new);
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(CAS_LUA)
                .arg(1)
                .arg(key)
                .arg(old.as_deref().unwrap_or(b""))
                .arg(&bytes)
                .arg(ttl_ms.max(1));
            let extra_val = extra.zip(extra_bytes).map(|((k, ttl), v)| (k, ttl, v));
            if let Some((k, ttl, v)) = &extra_val {
                pipe.cmd("SET")
                    .arg(*k)
                    .arg(v)
                    .arg("PX")
                    .arg((*ttl).max(1))
                    .ignore();
            }
            let (swapped,): (i64,) = pipe.query_async(&mut c).await?;
            if swapped == 1 {
                return Ok(r);
            }
            if let Some((k, _, _)) = &extra_val {
                // The swap lost: this try's attempt record must not outlive it.
                let _: () = redis::cmd("DEL").arg(*k).query_async(&mut c).await?;
            }
            self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
            let pause = rand::random::<u64>() % (200 * u64::from(tries + 1));
            tokio::time::sleep(Duration::from_micros(pause)).await;
        }
        Err(StoreError::Contended)
    }

    async fn outcome_inner(
        &self,
        id: u64,
        result: Outcome,
        fingerprint: Option<&[u8]>,
        now: Timestamp,
    ) -> StoreResult<(OutcomeEffects, String)> {
        let mut c = self.conn.clone();
        let akey = self.attempt_key(id);
        let raw: Option<Vec<u8>> = redis::cmd("GETDEL").arg(&akey).query_async(&mut c).await?;
        let raw = raw.ok_or(portcullis_engine::Error::UnknownAttempt(id))?;
        let rec: AttemptRec = decode(&akey, &raw)?;
        match self.apply_outcome(id, &rec, result, fingerprint, now).await {
            Err(e) if e.is_outage() => {
                // Put the claim back so the outcome can be reported again (best effort).
                let _: Result<Option<String>, _> = redis::cmd("SET")
                    .arg(&akey)
                    .arg(&raw)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttls(&self.engine.tenant_info(&rec.tenant)?.0).attempt_ms)
                    .query_async(&mut c)
                    .await;
                Err(e)
            }
            r => r.map(|fx| (fx, rec.tenant)),
        }
    }

    async fn apply_outcome(
        &self,
        id: u64,
        rec: &AttemptRec,
        result: Outcome,
        fingerprint: Option<&[u8]>,
        now: Timestamp,
    ) -> StoreResult<OutcomeEffects> {
        let t = now.as_millis();
        let (p, tenant_id) = self.engine.tenant_info(&rec.tenant)?;
        let p = &*p;
        let ttl = ttls(p);
        let fp = rec
            .fp
            .or_else(|| fingerprint.map(|f| self.engine.fingerprint_hash(&rec.tenant, f)));
        let trusted = p.sources.trusted.iter().any(|n| n.contains(&rec.ip));
        let acct_tag = rec.account as u32;
        let counts_sources = matches!(
            result,
            Outcome::WrongPassword
                | Outcome::UnknownUser
                | Outcome::Success
                | Outcome::MustChangePassword
        );
        let success = matches!(result, Outcome::Success | Outcome::MustChangePassword);
        let fam_key = familiar_key(rec.ip, p);

        let akey = self.account_key(rec.account);
        let spray = fp.map(|h| self.spray_key(h));
        let src: Vec<(NetKey, String)> = if counts_sources {
            SourceKeys::of(rec.ip, p)
                .iter()
                .map(|n| (n, self.source_key(tenant_id, n)))
                .collect()
        } else {
            Vec::new()
        };
        let fam_seen = src.iter().any(|(n, _)| *n == fam_key);
        let fam = (success && !fam_seen && p.familiar.shared_after_accounts > 0)
            .then(|| self.source_key(tenant_id, fam_key));
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&akey);
        if let Some(k) = &spray {
            pipe.cmd("GET").arg(k);
        }
        for (_, k) in &src {
            pipe.cmd("GET").arg(k);
        }
        if let Some(k) = &fam {
            pipe.cmd("GET").arg(k);
        }
        let mut c = self.conn.clone();
        let vals: Vec<Option<Vec<u8>>> = pipe.query_async(&mut c).await?;
        let mut vals = vals.into_iter();
        let acct_val = vals.next().flatten();
        let spray_val = if spray.is_some() {
            vals.next().flatten()
        } else {
            None
        };
        let sprayed_success = match (result, fp, &spray, &spray_val) {
            (Outcome::Success, Some(h), Some(k), Some(v))
                if decode::<SprayState>(k, v)?.is_sprayed(t) =>
            {
                Some(h)
            }
            _ => None,
        };

        let mut fx = OutcomeEffects::default();
        let window = p.directory.observation_window.ms();
        // The account (never created by an outcome, as in the engine).
        let (afx, name, locked_until) = self
            .update::<AccountRec, (AccountEffects, Option<Box<str>>, i64)>(
                &akey,
                ttl.account_ms,
                Some(acct_val),
                |cur| match cur {
                    None => (None, (AccountEffects::default(), None, 0)),
                    Some(mut r) => {
                        r.settle(t, window);
                        let afx = rules::account_outcome(
                            &mut r.state,
                            p,
                            result,
                            rec.familiar,
                            rec.ip,
                            fp,
                            sprayed_success,
                            t,
                        );
                        r.pending.retain(|&(i, _)| i != id);
                        let name = sprayed_success.map(|_| r.state.name.clone());
                        let until = r.state.locked_until();
                        (Some(r), (afx, name, until))
                    }
                },
            )
            .await?;
        if locked_until > t {
            // A smart lockout started, or the directory's mirror locked, or one was extended.
            let member = format!("{:032x}", rec.account);
            self.index_add(IndexKind::Lockouts, &member, locked_until, ttl.account_ms)
                .await;
        }
        fx.lockout_started = afx.lockout_started;
        fx.account_flagged = afx.flagged;

        // The sources.
        for (net, k) in &src {
            let first = vals.next().flatten();
            let (blocked, until) = self
                .update::<SourceState, (bool, i64)>(k, ttl.source_ms, Some(first), |cur| {
                    let mut s = cur.unwrap_or_default();
                    let b = rules::source_outcome(
                        &mut s, p, result, *net, fam_key, acct_tag, trusted, t,
                    );
                    let until = s.block.until;
                    (Some(s), (b, until))
                })
                .await?;
            if blocked {
                let member = source_member(k, &rec.tenant, *net);
                self.index_add(IndexKind::Sources, &member, until, ttl.source_ms)
                    .await;
            }
            fx.source_blocked |= blocked;
        }
        if let Some(k) = &fam {
            let first = vals.next().flatten();
            self.update::<SourceState, ()>(k, ttl.source_ms, Some(first), |cur| {
                let mut s = cur.unwrap_or_default();
                rules::familiar_success(&mut s, p, acct_tag, t);
                (Some(s), ())
            })
            .await?;
        }

        // The fingerprint.
        match (result, &spray) {
            (Outcome::WrongPassword | Outcome::UnknownUser, Some(k)) => {
                let (detected, until) = self
                    .update::<SprayState, (bool, i64)>(k, ttl.spray_ms, Some(spray_val), |cur| {
                        let mut sp = cur.unwrap_or_default();
                        let (detected, _) = rules::spray_failure(&mut sp, p, acct_tag, t);
                        let until = sp.sprayed_until;
                        (Some(sp), (detected, until))
                    })
                    .await?;
                if let (true, Some(h)) = (detected, fp) {
                    let member = format!("{} {}", key_hash(k), self.engine.spray_id(h));
                    self.index_add(IndexKind::Sprays, &member, until, ttl.spray_ms)
                        .await;
                }
                fx.spray_detected = detected;
            }
            (_, Some(k)) if sprayed_success.is_some() => {
                let tenant: Arc<str> = rec.tenant.as_str().into();
                let name = name.unwrap_or_else(|| "?".into());
                self.update::<SprayState, ()>(k, ttl.spray_ms, Some(spray_val), |cur| match cur {
                    None => (None, ()),
                    Some(mut sp) => {
                        if sp.flagged.len() < 1000 && !sp.flagged.iter().any(|(_, n)| *n == name) {
                            sp.flagged.push((tenant.clone(), name.clone()));
                        }
                        (Some(sp), ())
                    }
                })
                .await?;
            }
            _ => {}
        }
        Ok(fx)
    }
}

/// The block epoch as stored (a random `u64` in decimal); 0 when never written.
fn parse_epoch(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
        .unwrap_or(0)
}

/// The hash part of a key `{ns:k:<hex>}`.
fn key_hash(key: &str) -> &str {
    key.trim_end_matches('}')
        .rsplit(':')
        .next()
        .unwrap_or_default()
}

/// The sources index member of source key `key`: its hash, the tenant and the address or prefix
/// (tenant names hold no space, so the member splits back unambiguously).
fn source_member(key: &str, tenant: &str, net: NetKey) -> String {
    format!("{} {tenant} {net}", key_hash(key))
}

fn push_pending(r: &mut AccountRec, id: u64, at: i64) {
    if r.pending.len() >= MAX_PENDING_PER_ACCOUNT {
        r.pending.remove(0);
    }
    r.pending.push((id, at));
    r.state.pending = r.pending.len() as u32;
}

/// A random attempt id below 2^53 (exact in JSON numbers), unique across instances with
/// overwhelming probability.
fn new_id() -> u64 {
    rand::random::<u64>() >> 11
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("state values always serialise")
}

fn decode<T: DeserializeOwned>(key: &str, v: &[u8]) -> StoreResult<T> {
    bincode::deserialize(v).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_options_debug_hides_the_redis_password() {
        let opts = StoreOptions::new("redis://portcullis:s3cret-pw@10.0.0.5:6379/2");
        let shown = format!("{opts:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(
            shown.contains("redis://portcullis:***@10.0.0.5:6379/2"),
            "{shown}"
        );
        assert!(shown.contains("namespace: \"portcullis\""), "{shown}");
    }
}
