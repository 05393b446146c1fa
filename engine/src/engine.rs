//! The engine: decides on attempts and learns from their outcomes.
//!
//! [`Engine::check`] decides on one attempt; when it forwards, it returns an attempt id and counts
//! the attempt against the account's directory budget as a failure until [`Engine::outcome`]
//! reports what the directory answered (or until the directory's observation window has passed).
//! So however attempts interleave, the directory mirror plus the in-flight attempts stay within
//! the budget, and the directory never sees the bad password that would lock the account.
//!
//! Concurrency: the engine is `Send + Sync` and every method takes `&self`. State sits in sharded
//! maps; a call holds at most one map entry at a time, never two.
//!
//! Memory: every map has a cap ([`Limits`]). [`Engine::maintain`] drops idle entries; when a map
//! is over its cap the least recently seen low-value entries go first, and entries that protect an
//! account (an active lockout, attempts in flight, a directory counter near its threshold,
//! familiar locations, a flag) and sprayed fingerprints are kept.

use crate::accounts::AccountMap;
use crate::clock::Timestamp;
use crate::decision::{Attempt, Decision, Fired, Outcome, Reason, Verdict};
use crate::error::{Error, Result};
use crate::filter::SprayFilter;
use crate::keys::{KeyScheme, Keys, TenantKeys};
use crate::net::{canonical, NetKey};
use crate::normalize::normalize_into;
use crate::pad::Padded;
use crate::pending::{self, PendingTable};
use crate::policy::{valid_tenant_name, Familiarity, Mode, Policy, TenantPolicy};
use crate::rate::{self, Gcra};
use crate::rules::{self, familiar_key, SourceContext, SourceKeys};
use crate::state::{AccountState, SourceState, SprayState, TenantName};
use crate::store::{Batch, Kind, Store};
use dashmap::{DashMap, DashSet};
use parking_lot::RwLock;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Caps on tracked entries, per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Accounts tracked. Default 2,000,000.
    pub max_accounts: usize,
    /// Addresses and prefixes tracked. Default 2,000,000.
    pub max_sources: usize,
    /// Wrong fingerprints tracked for spray detection. Default 1,000,000.
    pub max_sprays: usize,
    /// Attempts in flight. Default 1,000,000; beyond it new attempts are refused (`overloaded`).
    /// Checked against a size hint that each thread updates every 64 attempts, so with several
    /// threads a few dozen attempts per thread may pass the cap before it is seen.
    pub max_pending: usize,
    /// Tenants. Default 10,000.
    pub max_tenants: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_accounts: 2_000_000,
            max_sources: 2_000_000,
            max_sprays: 1_000_000,
            max_pending: 1_000_000,
            max_tenants: 10_000,
        }
    }
}

/// How to build an engine.
pub struct Options {
    /// The per-installation key of every hash (account keys, fingerprint hashes).
    pub secret: [u8; 32],
    /// Where durable state is written behind; `None` keeps everything in memory only.
    pub store: Option<Arc<dyn Store>>,
    /// Caps on tracked entries.
    pub limits: Limits,
    /// How account keys and fingerprint hashes are computed. Over a store, the store's recorded
    /// scheme wins ([`Store::key_scheme`]); this one is recorded in a store that has none yet.
    pub key_scheme: KeyScheme,
}

impl Options {
    /// In-memory options with a fixed secret (tests and replay).
    pub fn in_memory(secret: [u8; 32]) -> Self {
        Options {
            secret,
            store: None,
            limits: Limits::default(),
            key_scheme: KeyScheme::default(),
        }
    }
}

/// The key of an account: a keyed hash of tenant and normalised name ([`crate::keys`]).
///
/// Held as two `u64` halves (high first: the derived order is the 128-bit value's) so that an
/// account-map entry is 24 bytes, not the 32 a 16-aligned `u128` would pad it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AccountKey {
    hi: u64,
    lo: u64,
}

impl AccountKey {
    pub(crate) fn new(v: u128) -> Self {
        AccountKey {
            hi: (v >> 64) as u64,
            lo: v as u64,
        }
    }

    pub(crate) fn get(self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }

    /// The key folded to 64 bits: the account map's table hash.
    pub(crate) fn fold(self) -> u64 {
        self.hi ^ self.lo
    }

    /// 32 bits of the key: an account's tag in distinct-account sets.
    pub(crate) fn tag(self) -> u32 {
        self.lo as u32
    }
}

impl std::hash::Hash for AccountKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The key is already a keyed hash: one word of it feeds the map's hasher.
        state.write_u64(self.fold());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SourceKey {
    pub(crate) tenant: u64,
    pub(crate) net: NetKey,
}

/// Two words for the hasher: the address bits, and the tenant's id (a keyed hash, uniform) with
/// the prefix length and family mixed into its low bits. Equal keys hash alike.
impl Hash for SourceKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.net.bits());
        state.write_u64(self.tenant ^ u64::from(self.net.tag()));
    }
}

pub(crate) struct TenantRt {
    pub(crate) name: Arc<str>,
    /// The name as the tenant's accounts hold it (one allocation for them all).
    pub(crate) account_name: TenantName,
    pub(crate) id: u64,
    /// The tenant's account-key and fingerprint hashers.
    pub(crate) keys: TenantKeys,
    pub(crate) policy: Arc<TenantPolicy>,
    /// The per-address rate limit (never shared): the buckets are in the addresses' source
    /// entries.
    pub(crate) limiter: Gcra,
}

/// The hasher of every map: keys are keyed hashes already (accounts, fingerprints) or addresses,
/// and foldhash's per-map random seed keeps address keys from being chosen to collide.
pub(crate) type Hasher = foldhash::fast::RandomState;
/// A sharded map with the engine's hasher.
pub(crate) type Map<K, V> = DashMap<K, V, Hasher>;
/// A sharded set with the engine's hasher.
pub(crate) type Set<K> = DashSet<K, Hasher>;

/// Shards per map. dashmap's default is four per CPU (8 on two cores); every attempt takes about
/// a dozen shard locks, and with so few shards two threads keep pulling the same lock words from
/// each other's caches. More shards cost a few KiB per map.
const SHARDS: usize = 64;

/// An empty map with [`SHARDS`] shards.
pub(crate) fn new_map<K: Eq + std::hash::Hash, V>() -> Map<K, V> {
    DashMap::with_hasher_and_shard_amount(Hasher::default(), SHARDS)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) account: AccountKey,
    /// The tenant's id ([`TenantRt::id`]); its name is in `Engine::tenant_names`.
    pub(crate) tenant: u64,
    pub(crate) ip: IpAddr,
    pub(crate) familiar: bool,
    pub(crate) fp: Option<u64>,
    pub(crate) at: i64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) lockouts: AtomicU64,
    pub(crate) source_blocks: AtomicU64,
    pub(crate) sprays: AtomicU64,
    pub(crate) flagged: AtomicU64,
    pub(crate) evicted: AtomicU64,
}

/// Totals since start and current sizes, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Accounts tracked.
    pub accounts: usize,
    /// Addresses and prefixes tracked.
    pub sources: usize,
    /// Fingerprints tracked for spray detection.
    pub sprays: usize,
    /// Attempts in flight.
    pub pending: usize,
    /// Smart lockouts started.
    pub lockouts_started: u64,
    /// Source blocks started.
    pub source_blocks_started: u64,
    /// Fingerprints newly marked sprayed.
    pub sprays_detected: u64,
    /// Accounts flagged for signing in with a sprayed password.
    pub accounts_flagged: u64,
    /// Entries evicted to stay under a cap.
    pub evicted: u64,
}

/// An engine's keys, to prepare attempts away from the engine ([`Engine::preparer`]).
#[derive(Clone)]
pub struct Preparer {
    engine: u64,
    keys: Keys,
    /// Tenants prepared for lately, with their hashers.
    tenants: Vec<(Box<str>, TenantKeys)>,
}

/// Tenants a [`Preparer`] keeps hashers for.
const PREPARER_TENANTS: usize = 8;

/// The keyed hashes of a prepared attempt ([`Preparer::prepare`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreparedKeys {
    engine: u64,
    account: u128,
    fingerprint: Option<u64>,
}

impl PreparedKeys {
    /// The account's key: the keyed hash of tenant and normalised name, unique per account.
    pub fn account(&self) -> u128 {
        self.account
    }
}

impl Preparer {
    /// Normalises `user` into `name` (cleared first) and hashes the account key and the
    /// fingerprint, as [`Engine::check`] would; a name that does not normalise is the error
    /// `check` gives. Pass the result with `name` to [`Engine::check_prepared`].
    pub fn prepare(
        &mut self,
        tenant: &str,
        user: &str,
        fingerprint: Option<&[u8]>,
        name: &mut String,
    ) -> Result<PreparedKeys> {
        normalize_into(user, name)?;
        let at = match self.tenants.iter().position(|(t, _)| &**t == tenant) {
            Some(at) => at,
            None => {
                if self.tenants.len() >= PREPARER_TENANTS {
                    self.tenants.remove(0);
                }
                self.tenants
                    .push((tenant.into(), self.keys.for_tenant(tenant)));
                self.tenants.len() - 1
            }
        };
        let tk = &self.tenants[at].1;
        Ok(PreparedKeys {
            engine: self.engine,
            account: self.keys.account_in(tk, tenant, name),
            fingerprint: fingerprint.map(|f| self.keys.fingerprint_in(tk, tenant, f)),
        })
    }
}

/// What an outcome did, for metrics and audit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeEffects {
    /// A smart lockout started on the account.
    pub lockout_started: bool,
    /// A source block started.
    pub source_blocked: bool,
    /// The fingerprint became a sprayed password.
    pub spray_detected: bool,
    /// The account signed in with a sprayed password and was flagged.
    pub account_flagged: bool,
}

/// The smart-lockout and password-spray engine. See the module docs.
pub struct Engine {
    pub(crate) secret: [u8; 32],
    /// Account keys and fingerprint hashes.
    pub(crate) keys: Keys,
    pub(crate) policy: RwLock<Arc<Policy>>,
    pub(crate) tenants: RwLock<HashMap<Arc<str>, Arc<TenantRt>>>,
    /// Every tenant id ever issued, with its name (ids outlive policy swaps).
    pub(crate) tenant_names: RwLock<HashMap<u64, Arc<str>>>,
    /// Bumped when `tenants` is cleared, so that threads drop their cached tenants.
    pub(crate) tenants_gen: AtomicU64,
    /// This engine among all engines of the process (keys the thread-local caches).
    pub(crate) uid: u64,
    pub(crate) accounts: AccountMap,
    pub(crate) sources: Map<SourceKey, SourceState>,
    pub(crate) sprays: Map<u64, SprayState>,
    /// Fingerprints ever marked sprayed in `sprays` ([`SprayFilter`]: no false negatives).
    pub(crate) sprayed: SprayFilter,
    /// Attempts in flight, by attempt id ([`PendingTable`]).
    pub(crate) pending: PendingTable,
    pub(crate) next_id: Padded<AtomicU64>,
    /// Upper bounds of the map sizes between two exact counts (`DashMap::len` locks every
    /// shard, too dear for every attempt): raised on every insert, set to the exact size when
    /// above the cap and after housekeeping.
    pub(crate) accounts_hint: Padded<AtomicUsize>,
    pub(crate) sources_hint: Padded<AtomicUsize>,
    pub(crate) sprays_hint: Padded<AtomicUsize>,
    pub(crate) pending_hint: Padded<AtomicUsize>,
    pub(crate) dirty_accounts: Set<AccountKey>,
    pub(crate) dirty_sources: Set<SourceKey>,
    pub(crate) dirty_sprays: Set<u64>,
    pub(crate) store: Option<Arc<dyn Store>>,
    pub(crate) limits: Limits,
    pub(crate) counters: Padded<Counters>,
}

thread_local! {
    static NAME_BUF: RefCell<String> = RefCell::new(String::with_capacity(64));
    /// Tenants this thread used lately: (engine uid, generation, tenant), newest last.
    static TENANT_CACHE: RefCell<Vec<(u64, u64, Arc<TenantRt>)>> = const { RefCell::new(Vec::new()) };
    /// Attempt ids reserved by this thread: (engine uid, next, end).
    static ID_BLOCK: Cell<(u64, u64, u64)> = const { Cell::new((0, 0, 0)) };
    /// Attempts in flight added by this thread and not yet added to `pending_hint`.
    static PENDING_ADDED: Cell<usize> = const { Cell::new(0) };
}

/// Tenants cached per thread.
const TENANT_CACHE_LEN: usize = 8;
/// Attempt ids a thread reserves at a time.
const ID_BLOCK_LEN: u64 = pending::BLOCK;
/// Attempts in flight a thread adds before it adds them to the shared hint.
const PENDING_BATCH: usize = 64;

static NEXT_ENGINE_UID: AtomicU64 = AtomicU64::new(1);

/// Which tenant to find: by name (a check) or by id (an outcome).
#[derive(Clone, Copy)]
enum TenantRef<'a> {
    Name(&'a str),
    Id(u64),
}

impl Engine {
    /// Builds an engine and loads its durable state from the store, if any.
    pub fn new(policy: Policy, opts: Options) -> Result<Engine> {
        let mut seed = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut seed);
        // A store keeps the scheme its records were keyed with; a new one records ours.
        let scheme = match &opts.store {
            Some(store) => store.key_scheme(opts.key_scheme)?,
            None => opts.key_scheme,
        };
        let engine = Engine {
            secret: opts.secret,
            keys: Keys::new(opts.secret, scheme),
            policy: RwLock::new(Arc::new(policy)),
            tenants: RwLock::new(HashMap::new()),
            tenant_names: RwLock::new(HashMap::new()),
            tenants_gen: AtomicU64::new(0),
            uid: NEXT_ENGINE_UID.fetch_add(1, Ordering::Relaxed),
            accounts: AccountMap::default(),
            sources: new_map(),
            sprays: new_map(),
            sprayed: SprayFilter::default(),
            pending: PendingTable::default(),
            // Ids start at a random point so ids from before a restart are never reused, on a
            // block boundary so that each block fills one stripe of the pending table.
            next_id: Padded(AtomicU64::new(
                (u64::from_le_bytes(seed) >> 12) & !(pending::BLOCK - 1),
            )),
            accounts_hint: Padded(AtomicUsize::new(0)),
            sources_hint: Padded(AtomicUsize::new(0)),
            sprays_hint: Padded(AtomicUsize::new(0)),
            pending_hint: Padded(AtomicUsize::new(0)),
            dirty_accounts: Set::default(),
            dirty_sources: Set::default(),
            dirty_sprays: Set::default(),
            store: opts.store,
            limits: opts.limits,
            counters: Padded::default(),
        };
        engine.load()?;
        engine.resync_hints();
        Ok(engine)
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().clone()
    }

    /// Replaces the policy atomically. State is kept; rate-limit buckets start afresh.
    pub fn set_policy(&self, policy: Policy) {
        let mut tenants = self.tenants.write();
        *self.policy.write() = Arc::new(policy);
        tenants.clear();
        self.tenants_gen.fetch_add(1, Ordering::Release);
    }

    /// Sets the size hints to the maps' exact sizes.
    fn resync_hints(&self) {
        self.accounts_hint
            .store(self.accounts.len(), Ordering::Relaxed);
        self.sources_hint
            .store(self.sources.len(), Ordering::Relaxed);
        self.sprays_hint.store(self.sprays.len(), Ordering::Relaxed);
        self.pending_hint
            .store(self.pending.len(), Ordering::Relaxed);
    }

    /// A fresh attempt id, from a block this thread reserved.
    fn new_attempt_id(&self) -> u64 {
        ID_BLOCK.with(|b| {
            let (uid, next, end) = b.get();
            let (next, end) = if uid == self.uid && next < end {
                (next, end)
            } else {
                let start = self.next_id.fetch_add(ID_BLOCK_LEN, Ordering::Relaxed);
                (start, start + ID_BLOCK_LEN)
            };
            b.set((self.uid, next + 1, end));
            next
        })
    }

    /// Counts one attempt in flight into the pending hint (in batches per thread).
    fn count_pending(&self) {
        PENDING_ADDED.with(|c| {
            let n = c.get() + 1;
            if n >= PENDING_BATCH {
                self.pending_hint.fetch_add(n, Ordering::Relaxed);
                c.set(0);
            } else {
                c.set(n);
            }
        })
    }

    /// Whether the attempts in flight may have reached their cap (exact when it answers yes).
    fn pending_full(&self) -> bool {
        // The hint misses at most PENDING_BATCH - 1 attempts per thread.
        if self.pending_hint.load(Ordering::Relaxed) + PENDING_BATCH < self.limits.max_pending {
            return false;
        }
        let n = self.pending.len();
        self.pending_hint.store(n, Ordering::Relaxed);
        n >= self.limits.max_pending
    }

    /// Runs `f` on a tenant's runtime state, from this thread's cache when it can (no lock, no
    /// reference count touched on the common path).
    fn with_tenant<R>(&self, which: TenantRef<'_>, f: impl FnOnce(&TenantRt) -> R) -> Result<R> {
        let gen = self.tenants_gen.load(Ordering::Acquire);
        let hit = |e: &(u64, u64, Arc<TenantRt>)| {
            e.0 == self.uid
                && e.1 == gen
                && match which {
                    TenantRef::Name(n) => same_name(&e.2.name, n),
                    TenantRef::Id(id) => e.2.id == id,
                }
        };
        let mut f = Some(f);
        let cached = TENANT_CACHE.with(|c| {
            let c = c.borrow();
            let e = c.iter().rev().find(|e| hit(e))?;
            f.take().map(|f| f(&e.2))
        });
        if let Some(r) = cached {
            return Ok(r);
        }
        let rt = {
            {
                let rt = match which {
                    TenantRef::Name(n) => self.tenant(n)?,
                    TenantRef::Id(id) => {
                        let name = self.tenant_names.read().get(&id).cloned();
                        match name {
                            Some(n) => self.tenant(&n)?,
                            None => return Err(Error::Capacity("tenants")),
                        }
                    }
                };
                TENANT_CACHE.with(|c| {
                    // Never borrowed here while `f` runs (nothing in `f` looks a tenant up), but a
                    // cache that cannot be written is only a miss.
                    if let Ok(mut c) = c.try_borrow_mut() {
                        c.retain(|e| !(e.0 == self.uid && e.2.id == rt.id));
                        if c.len() >= TENANT_CACHE_LEN {
                            c.remove(0);
                        }
                        c.push((self.uid, gen, rt.clone()));
                    }
                });
                rt
            }
        };
        let f = f.take().expect("f is called once");
        Ok(f(&rt))
    }

    /// A keyed hash of a fingerprint within a tenant: the only form in which one is kept.
    pub fn fingerprint_hash(&self, tenant: &str, fp: &[u8]) -> u64 {
        self.keys.fingerprint(tenant, fp)
    }

    /// The scheme of this engine's account keys and fingerprint hashes.
    pub fn key_scheme(&self) -> KeyScheme {
        self.keys.scheme()
    }

    /// An opaque id for a sprayed fingerprint hash, safe to show an operator.
    pub fn spray_id(&self, fp_hash: u64) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(b"spray-id\0");
        h.update(&fp_hash.to_le_bytes());
        h.finalize().to_hex()[..16].to_string()
    }

    /// The account an attempt names, as every store keys it: the keyed hash of tenant and
    /// normalised name, and the normalised name. A shared store keys its records with it, so all
    /// instances (same secret) agree on the key.
    pub fn account_identity(&self, tenant: &str, user: &str) -> Result<(u128, Box<str>)> {
        NAME_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            normalize_into(user, &mut buf)?;
            Ok((
                self.account_key(tenant, &buf).get(),
                Box::from(buf.as_str()),
            ))
        })
    }

    /// Whether `ip` is a place the account signed in from (its personal familiarity), read from
    /// memory without changing anything: no counter, no new entry, no tenant set up. For answers
    /// given without deciding (load shedding), so it stays cheap: shared places (offices) are not
    /// looked up, and an account not in memory is `Unfamiliar`.
    pub fn familiarity_hint(
        &self,
        tenant: &str,
        user: &str,
        ip: IpAddr,
        now: Timestamp,
    ) -> Familiarity {
        let policy = self.policy();
        let p = policy.for_tenant(tenant);
        let key = NAME_BUF.with(|buf| {
            let mut buf = buf.try_borrow_mut().ok()?;
            normalize_into(user, &mut buf).ok()?;
            Some(self.account_key(tenant, &buf))
        });
        let Some(key) = key else {
            return Familiarity::Unfamiliar;
        };
        let fam_key = rules::familiar_key(canonical(ip), p);
        match self.accounts.get(&key) {
            Some(a) if a.is_familiar(fam_key, now.as_millis(), p.familiar.familiar_for.ms()) => {
                Familiarity::Personal
            }
            _ => Familiarity::Unfamiliar,
        }
    }

    /// The policy in force for `tenant` and the tenant's keyed id; refuses a bad tenant name.
    pub fn tenant_info(&self, tenant: &str) -> Result<(Arc<TenantPolicy>, u64)> {
        let rt = self.tenant(tenant)?;
        Ok((rt.policy.clone(), rt.id))
    }

    /// This instance's rate limit ([`crate::rate`], never shared) for `ip` in `tenant` at `now`: the
    /// refusal when `ip` is over it, counting this attempt.
    pub fn rate_limited(
        &self,
        tenant: &str,
        ip: IpAddr,
        now: Timestamp,
    ) -> Result<Option<Decision>> {
        let rt = self.tenant(tenant)?;
        let net = NetKey::host(canonical(ip));
        let mut s = self.source_entry(SourceKey { tenant: rt.id, net });
        Ok(self.rate_check(&rt, &mut s, now.as_millis()))
    }

    /// Counts an arrival at `now` in the rate bucket of the address whose source entry is `s`:
    /// the decision when the address is over its rate.
    fn rate_check(&self, rt: &TenantRt, s: &mut SourceState, now: i64) -> Option<Decision> {
        let p = &*rt.policy;
        let wait = rt.limiter.check(&mut s.rate_tat, now)?;
        let fired = Fired {
            counter: "source_rate_per_second",
            value: u64::from(p.sources.rate_per_second) + 1,
            limit: u64::from(p.sources.rate_per_second),
        };
        Some(rules::refuse(
            Reason::RateLimited,
            Some(wait.max(Duration::from_millis(1))),
            fired,
            Familiarity::Unfamiliar,
        ))
    }

    pub(crate) fn account_key(&self, tenant: &str, name: &str) -> AccountKey {
        AccountKey::new(self.keys.account(tenant, name))
    }

    pub(crate) fn tenant(&self, name: &str) -> Result<Arc<TenantRt>> {
        if let Some(t) = self.tenants.read().get(name) {
            return Ok(t.clone());
        }
        if !valid_tenant_name(name) {
            return Err(Error::InvalidInput {
                field: "tenant",
                reason: "must be 1 to 64 of A-Z a-z 0-9 . _ -".into(),
            });
        }
        let mut tenants = self.tenants.write();
        if let Some(t) = tenants.get(name) {
            return Ok(t.clone());
        }
        if tenants.len() >= self.limits.max_tenants {
            return Err(Error::Capacity("tenants"));
        }
        let policy = self.policy.read().for_tenant(name).clone();
        let name: Arc<str> = name.into();
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(b"tenant\0");
        h.update(name.as_bytes());
        let id = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
        let rt = Arc::new(TenantRt {
            name: name.clone(),
            account_name: Arc::new(name.as_ref().into()),
            id,
            keys: self.keys.for_tenant(&name),
            limiter: Gcra::new(policy.sources.rate_per_second, policy.sources.rate_burst),
            policy,
        });
        self.tenant_names.write().insert(id, name.clone());
        tenants.insert(name, rt.clone());
        Ok(rt)
    }

    /// Decides on one attempt at `now`.
    ///
    /// Errors are for input the engine cannot use (an empty name, a bad tenant name) and caps;
    /// every other answer is a [`Decision`].
    pub fn check(&self, a: &Attempt<'_>, now: Timestamp) -> Result<Decision> {
        let now = now.as_millis();
        self.with_tenant(TenantRef::Name(a.tenant), |rt| {
            // The normalised name stays in this thread's buffer; it is copied only into a new
            // account.
            NAME_BUF.with(|buf| match buf.try_borrow_mut() {
                Ok(mut buf) => self.check_in(rt, a, &mut buf, now),
                Err(_) => self.check_in(rt, a, &mut String::new(), now),
            })
        })?
    }

    #[inline]
    fn check_in(
        &self,
        rt: &TenantRt,
        a: &Attempt<'_>,
        buf: &mut String,
        now: i64,
    ) -> Result<Decision> {
        normalize_into(a.user, buf)?;
        let key = AccountKey::new(self.keys.account_in(&rt.keys, &rt.name, buf));
        let fp = a
            .fingerprint
            .map(|f| self.keys.fingerprint_in(&rt.keys, &rt.name, f));
        self.check_keyed(rt, key, buf, canonical(a.ip), fp, now)
    }

    /// A handle that does the stateless part of a check (normalising the name, hashing the
    /// account key and the fingerprint) with this engine's keys, on any thread, so that a
    /// pipeline can do it ahead of [`Engine::check_prepared`].
    pub fn preparer(&self) -> Preparer {
        Preparer {
            engine: self.uid,
            keys: self.keys.clone(),
            tenants: Vec::new(),
        }
    }

    /// Decides on an attempt prepared by [`Preparer::prepare`] at `now`: the decision
    /// [`Engine::check`] gives the attempt. `name` is the normalised name `prepare` wrote.
    /// Refuses keys prepared by another engine's preparer.
    pub fn check_prepared(
        &self,
        tenant: &str,
        name: &str,
        ip: IpAddr,
        keys: PreparedKeys,
        now: Timestamp,
    ) -> Result<Decision> {
        if keys.engine != self.uid {
            return Err(Error::InvalidInput {
                field: "prepared",
                reason: "prepared with another engine's keys".into(),
            });
        }
        let now = now.as_millis();
        self.with_tenant(TenantRef::Name(tenant), |rt| {
            self.check_keyed(
                rt,
                AccountKey::new(keys.account),
                name,
                canonical(ip),
                keys.fingerprint,
                now,
            )
        })?
    }

    /// The stateful part of a check: `key` and `fp` are the keyed hashes of the normalised
    /// `name` and of the fingerprint, `ip` is canonical. Inlined into both callers, as it was
    /// into `check` alone before prepared checks existed (outlined, it costs the hot path a call
    /// and its spills).
    #[inline(always)]
    fn check_keyed(
        &self,
        rt: &TenantRt,
        key: AccountKey,
        name: &str,
        ip: IpAddr,
        fp: Option<u64>,
        now: i64,
    ) -> Result<Decision> {
        let p = &*rt.policy;
        // Refuse before deciding when nothing more can be accounted for.
        if self.pending_full() {
            self.expire_pending(now);
        }
        if self.pending_full() {
            return Ok(Decision {
                verdict: Verdict::Block,
                assessed: Verdict::Block,
                reason: Some(Reason::Overloaded),
                retry_after: rules::retry(1000),
                fired: Some(Fired {
                    counter: "attempts_in_flight",
                    value: self.pending.len() as u64,
                    limit: self.limits.max_pending as u64,
                }),
                familiarity: Familiarity::Unfamiliar,
                attempt_id: None,
            });
        }
        let log_only = p.mode == Mode::LogOnly;
        let (mut d, counted) = self.assess(rt, key, name, ip, fp, now, log_only);
        if log_only {
            d.verdict = Verdict::Forward;
        }
        if d.verdict == Verdict::Forward {
            if !counted {
                // Only a log_only attempt refused before its account was reached gets here.
                if let Some(mut acct) = self.accounts.get_mut(&key) {
                    acct.pending += 1;
                }
            }
            let id = self.new_attempt_id();
            self.pending.insert(
                id,
                Pending {
                    account: key,
                    tenant: rt.id,
                    ip,
                    familiar: d.familiarity.is_familiar(),
                    fp,
                    at: now,
                },
            );
            self.count_pending();
            d.attempt_id = Some(id);
        }
        if self.accounts_hint.load(Ordering::Relaxed) > self.limits.max_accounts
            || self.sources_hint.load(Ordering::Relaxed) > self.limits.max_sources
        {
            if self.accounts.len() > self.limits.max_accounts
                || self.sources.len() > self.limits.max_sources
            {
                self.evict(now);
            }
            self.resync_hints();
        }
        Ok(d)
    }

    #[allow(clippy::too_many_arguments)]
    fn assess(
        &self,
        rt: &TenantRt,
        key: AccountKey,
        name: &str,
        ip: IpAddr,
        fp: Option<u64>,
        now: i64,
        log_only: bool,
    ) -> (Decision, bool) {
        let p = &*rt.policy;
        let unfamiliar = Familiarity::Unfamiliar;
        if p.sources.blocked.iter().any(|n| n.contains(&ip)) {
            let fired = Fired {
                counter: "blocked_network",
                value: 1,
                limit: 1,
            };
            return (
                rules::refuse(Reason::BlockedNetwork, None, fired, unfamiliar),
                false,
            );
        }
        let trusted = p.sources.trusted.iter().any(|n| n.contains(&ip));
        let fam_key = familiar_key(ip, p);
        let acct_tag = key.tag();
        let mut ctx = SourceContext {
            // First: whether the sources look like sprayers is asked only for a sprayed password.
            sprayed: fp.is_some_and(|h| self.is_sprayed(h, now)),
            ..SourceContext::default()
        };
        // The familiar prefix is usually one of the counted prefixes: read it once, then.
        let mut fam_read = false;
        if !trusted {
            // The address first, under its entry's write lock: the entry holds its rate bucket,
            // counted once the address itself is not blocked.
            let keys = SourceKeys::of(ip, p);
            // The first of `keys` (the proptest in `rules` holds them to it): the loop skips it.
            let net = NetKey::host(ip);
            fam_read = net == fam_key;
            {
                let mut s = self.source_entry(SourceKey { tenant: rt.id, net });
                if let Some(d) = rules::read_source(p, net, &s, acct_tag, fam_key, now, &mut ctx) {
                    return (d, false);
                }
                if let Some(d) = self.rate_check(rt, &mut s, now) {
                    return (d, false);
                }
            }
            for net in keys.iter().skip(1) {
                fam_read |= net == fam_key;
                if let Some(s) = self.sources.get(&SourceKey { tenant: rt.id, net }) {
                    if let Some(d) =
                        rules::read_source(p, net, &s, acct_tag, fam_key, now, &mut ctx)
                    {
                        return (d, false);
                    }
                }
            }
        }
        if !fam_read && p.familiar.shared_after_accounts > 0 {
            if let Some(s) = self.sources.get(&SourceKey {
                tenant: rt.id,
                net: fam_key,
            }) {
                ctx.shared = rules::shared_familiar(p, &s, now);
            }
        }
        let mut acct = match self.accounts.get_mut(&key) {
            Some(a) => a,
            None => {
                self.accounts_hint.fetch_add(1, Ordering::Relaxed);
                self.accounts.get_or_insert_with(key, || {
                    AccountState::new(rt.account_name.clone(), name.into(), now)
                })
            }
        };
        acct.last_seen = now;
        let d = rules::decide_account(&mut acct, p, fam_key, ctx, fp, now);
        // Counted under the same guard as the budget check, so that concurrent attempts for one
        // account can never together overspend it.
        let counted = d.verdict == Verdict::Forward || log_only;
        if counted {
            acct.pending += 1;
        }
        (d, counted)
    }

    /// Records what the directory answered for a forwarded attempt. `fingerprint` is the agent's
    /// fingerprint of the password, for when the request carried none.
    ///
    /// An unknown or already reported id is refused and changes nothing.
    pub fn outcome(
        &self,
        attempt_id: u64,
        result: Outcome,
        fingerprint: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<OutcomeEffects> {
        let now = now.as_millis();
        let pend = self
            .pending
            .remove(attempt_id)
            .ok_or(Error::UnknownAttempt(attempt_id))?;
        self.with_tenant(TenantRef::Id(pend.tenant), |rt| {
            self.outcome_in(rt, &pend, result, fingerprint, now)
        })
    }

    fn outcome_in(
        &self,
        rt: &TenantRt,
        pend: &Pending,
        result: Outcome,
        fingerprint: Option<&[u8]>,
        now: i64,
    ) -> OutcomeEffects {
        let p = &*rt.policy;
        let fp = pend
            .fp
            .or_else(|| fingerprint.map(|f| self.keys.fingerprint_in(&rt.keys, &rt.name, f)));
        let mut fx = OutcomeEffects::default();
        let trusted = p.sources.trusted.iter().any(|n| n.contains(&pend.ip));
        let acct_tag = pend.account.tag();
        let sprayed_success = match (result, fp) {
            (Outcome::Success, Some(h)) if self.is_sprayed(h, now) => Some(h),
            _ => None,
        };

        // Each map's guard is dropped before the next map, or a dirty set, is touched: no lock is
        // held across two maps.
        let durable = self.store.is_some();

        // The account.
        let mut name = None;
        let mut account_dirty = false;
        if let Some(mut acct) = self.accounts.get_mut(&pend.account) {
            let afx = rules::account_outcome(
                &mut acct,
                p,
                result,
                pend.familiar,
                pend.ip,
                fp,
                sprayed_success,
                now,
            );
            fx.lockout_started = afx.lockout_started;
            fx.account_flagged = afx.flagged;
            account_dirty = afx.durable;
            if sprayed_success.is_some() {
                name = Some(acct.name.clone());
            }
        }
        if account_dirty && durable {
            self.dirty_accounts.insert(pend.account);
        }

        // The sources.
        if matches!(
            result,
            Outcome::WrongPassword
                | Outcome::UnknownUser
                | Outcome::Success
                | Outcome::MustChangePassword
        ) {
            let fam_key = familiar_key(pend.ip, p);
            let mut fam_seen = false;
            for net in SourceKeys::of(pend.ip, p).iter() {
                fam_seen |= net == fam_key;
                let skey = SourceKey { tenant: rt.id, net };
                let blocked = rules::source_outcome(
                    &mut self.source_entry(skey),
                    p,
                    result,
                    net,
                    fam_key,
                    acct_tag,
                    trusted,
                    now,
                );
                if blocked {
                    fx.source_blocked = true;
                    if durable {
                        self.dirty_sources.insert(skey);
                    }
                }
            }
            let success = matches!(result, Outcome::Success | Outcome::MustChangePassword);
            if success && !fam_seen && p.familiar.shared_after_accounts > 0 {
                let mut s = self.source_entry(SourceKey {
                    tenant: rt.id,
                    net: fam_key,
                });
                rules::familiar_success(&mut s, p, acct_tag, now);
            }
        }

        // The fingerprint.
        match (result, fp) {
            (Outcome::WrongPassword | Outcome::UnknownUser, Some(h)) => {
                let (detected, changed) = {
                    let mut sp = match self.sprays.get_mut(&h) {
                        Some(sp) => sp,
                        None => {
                            self.sprays_hint.fetch_add(1, Ordering::Relaxed);
                            self.sprays.entry(h).or_default()
                        }
                    };
                    let (detected, changed) = rules::spray_failure(&mut sp, p, acct_tag, now);
                    if detected {
                        // Before the mark can be seen: the entry is still held. (The filter is
                        // atomic words, not a map.)
                        self.sprayed.insert(h);
                    }
                    (detected, changed)
                };
                fx.spray_detected = detected;
                if changed && durable {
                    self.dirty_sprays.insert(h);
                }
            }
            (_, Some(h)) if sprayed_success.is_some() => {
                let found = match self.sprays.get_mut(&h) {
                    Some(mut sp) => {
                        let name = name.unwrap_or_else(|| "?".into());
                        if sp.flagged.len() < 1000 && !sp.flagged.iter().any(|(_, n)| *n == name) {
                            sp.flagged.push((rt.name.clone(), name));
                        }
                        true
                    }
                    None => false,
                };
                if found && durable {
                    self.dirty_sprays.insert(h);
                }
            }
            _ => {}
        }
        if fx.lockout_started {
            self.counters.lockouts.fetch_add(1, Ordering::Relaxed);
        }
        if fx.source_blocked {
            self.counters.source_blocks.fetch_add(1, Ordering::Relaxed);
        }
        if fx.spray_detected {
            self.counters.sprays.fetch_add(1, Ordering::Relaxed);
        }
        if fx.account_flagged {
            self.counters.flagged.fetch_add(1, Ordering::Relaxed);
        }
        // No map entry is held here: evicting walks the map.
        if self.sprays_hint.load(Ordering::Relaxed) > self.limits.max_sprays {
            if self.sprays.len() > self.limits.max_sprays {
                self.evict_sprays(now);
            }
            self.sprays_hint.store(self.sprays.len(), Ordering::Relaxed);
        }
        fx
    }

    /// Whether the fingerprint hash `h` is marked sprayed at `now`; the filter answers the
    /// common "no" without a map lookup.
    fn is_sprayed(&self, h: u64, now: i64) -> bool {
        self.sprayed.may_contain(h) && self.sprays.get(&h).is_some_and(|s| s.is_sprayed(now))
    }

    /// The source entry of `key`, created empty when absent (counted into the size hint).
    fn source_entry(
        &self,
        key: SourceKey,
    ) -> dashmap::mapref::one::RefMut<'_, SourceKey, SourceState> {
        // Most keys are there: a lookup is cheaper than the entry API, which is kept for the rest.
        if let Some(s) = self.sources.get_mut(&key) {
            return s;
        }
        match self.sources.entry(key) {
            dashmap::Entry::Occupied(o) => o.into_ref(),
            dashmap::Entry::Vacant(v) => {
                self.sources_hint.fetch_add(1, Ordering::Relaxed);
                v.insert(SourceState::default())
            }
        }
    }

    /// Drops attempts in flight for longer than their tenant's observation window: by then the
    /// directory has forgotten them too.
    fn expire_pending(&self, now: i64) {
        let policy = self.policy();
        // Copied so that no lock is held while the pending table's stripes and shards are.
        let names = self.tenant_names.read().clone();
        let mut expired = Vec::new();
        self.pending.retain(
            |p| {
                let tenant = names.get(&p.tenant).map_or("default", |n| &**n);
                let w = policy.for_tenant(tenant).directory.observation_window.ms();
                now - p.at < w
            },
            |p| expired.push(p.account),
        );
        for key in expired {
            if let Some(mut a) = self.accounts.get_mut(&key) {
                a.pending = a.pending.saturating_sub(1);
            }
        }
    }

    /// Housekeeping at `now`: expires attempts in flight, drops idle entries, trims rate-limit
    /// buckets. Call it every few seconds (the server) or every few thousand events (replay).
    pub fn maintain(&self, now: Timestamp) {
        let now = now.as_millis();
        self.expire_pending(now);
        let policy = self.policy();
        let mut policies = PolicyOf::new(&policy);
        let mut removed = Vec::new();
        self.accounts.retain(|k, a| {
            let keep = account_value(a, policies.get(&a.tenant), now) > 0;
            if !keep {
                removed.push(k);
            }
            keep
        });
        if self.store.is_some() {
            for k in removed {
                self.dirty_accounts.insert(k);
            }
        }
        let day = 86_400_000;
        self.sources.retain(|_, s| {
            s.block.active(now)
                || now - s.last_seen < day
                || !s.good_accounts.is_empty() && now - s.last_seen < 30 * day
                || rate::is_live(s.rate_tat, now)
        });
        self.sprays
            .retain(|_, s| s.is_sprayed(now) || now - s.last_seen < day);
        if self.accounts.len() > self.limits.max_accounts
            || self.sources.len() > self.limits.max_sources
        {
            self.evict(now);
        }
        if self.sprays.len() > self.limits.max_sprays {
            self.evict_sprays(now);
        }
        self.resync_hints();
    }

    /// Brings the spray map back to 90% of its cap, least recently seen first; fingerprints
    /// marked sprayed are never evicted.
    fn evict_sprays(&self, now: i64) {
        let target = self.limits.max_sprays * 9 / 10;
        let mut cands: Vec<(i64, u64)> = self
            .sprays
            .iter()
            .filter(|e| !e.is_sprayed(now))
            .map(|e| (e.last_seen, *e.key()))
            .collect();
        cands.sort_unstable();
        let excess = self.sprays.len().saturating_sub(target);
        for (_, k) in cands.into_iter().take(excess) {
            self.sprays.remove(&k);
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Brings maps over their cap back to 90% of it, least valuable and least recently seen first.
    fn evict(&self, now: i64) {
        let policy = self.policy();
        let mut policies = PolicyOf::new(&policy);
        if self.accounts.len() > self.limits.max_accounts {
            let target = self.limits.max_accounts * 9 / 10;
            let mut cands: Vec<(u8, i64, AccountKey)> = Vec::new();
            self.accounts.for_each(|k, a| {
                let value = account_value(a, policies.get(&a.tenant), now);
                if value < 3 {
                    cands.push((value, a.last_seen, k));
                }
            });
            cands.sort_unstable();
            let excess = self.accounts.len().saturating_sub(target);
            for (_, _, k) in cands.into_iter().take(excess) {
                self.accounts.remove(&k);
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                if self.store.is_some() {
                    self.dirty_accounts.insert(k);
                }
            }
        }
        if self.sources.len() > self.limits.max_sources {
            let target = self.limits.max_sources * 9 / 10;
            let mut cands: Vec<(bool, i64, SourceKey)> = self
                .sources
                .iter()
                .filter(|e| !e.block.active(now))
                .map(|e| (!e.good_accounts.is_empty(), e.last_seen, *e.key()))
                .collect();
            cands.sort_unstable_by_key(|c| (c.0, c.1));
            let excess = self.sources.len().saturating_sub(target);
            for (_, _, k) in cands.into_iter().take(excess) {
                self.sources.remove(&k);
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.resync_hints();
    }

    /// Writes every changed durable record to the store. Returns how many records were written.
    ///
    /// A failed write keeps every record of the batch marked changed, so the next successful
    /// flush writes them all: persistence resumes completely once the store's fault clears.
    pub fn flush(&self) -> Result<usize> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let accounts: Vec<AccountKey> = self.dirty_accounts.iter().map(|k| *k).collect();
        let sources: Vec<SourceKey> = self.dirty_sources.iter().map(|k| *k).collect();
        let sprays: Vec<u64> = self.dirty_sprays.iter().map(|k| *k).collect();
        // The marks go before the records are read, so a change made meanwhile marks again.
        for k in &accounts {
            self.dirty_accounts.remove(k);
        }
        for k in &sources {
            self.dirty_sources.remove(k);
        }
        for k in &sprays {
            self.dirty_sprays.remove(k);
        }
        let written = self
            .flush_batch(&accounts, &sources, &sprays)
            .and_then(|batch| {
                let n = batch.ops.len();
                store.apply(batch).map(|()| n)
            });
        if written.is_err() {
            for k in accounts {
                self.dirty_accounts.insert(k);
            }
            for k in sources {
                self.dirty_sources.insert(k);
            }
            for k in sprays {
                self.dirty_sprays.insert(k);
            }
        }
        written
    }

    /// How many records are marked changed and not yet written.
    pub fn unflushed(&self) -> usize {
        self.dirty_accounts.len() + self.dirty_sources.len() + self.dirty_sprays.len()
    }

    fn flush_batch(
        &self,
        accounts: &[AccountKey],
        sources: &[SourceKey],
        sprays: &[u64],
    ) -> Result<Batch> {
        let mut batch = Batch::default();
        for k in accounts {
            let key = k.get().to_be_bytes().to_vec();
            match self.accounts.get(k) {
                Some(a) => batch.put(Kind::Account, key, encode(&*a)?),
                None => batch.remove(Kind::Account, key),
            }
        }
        for k in sources {
            let key = encode(&(k.tenant, k.net))?;
            match self.sources.get(k) {
                Some(s) => batch.put(Kind::Source, key, encode(&*s)?),
                None => batch.remove(Kind::Source, key),
            }
        }
        for k in sprays {
            let key = k.to_be_bytes().to_vec();
            match self.sprays.get(k) {
                Some(s) => batch.put(Kind::Spray, key, encode(&*s)?),
                None => batch.remove(Kind::Spray, key),
            }
        }
        Ok(batch)
    }

    fn load(&self) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        // Accounts of one tenant share one copy of its name, as accounts tracked live do.
        let mut names: HashMap<String, TenantName> = HashMap::new();
        for (k, v) in store.load(Kind::Account)? {
            let key = u128::from_be_bytes(
                k.as_slice()
                    .try_into()
                    .map_err(|_| corrupt("accounts", &k, "key length"))?,
            );
            let mut state: AccountState = decode(&v).map_err(|e| corrupt("accounts", &k, &e))?;
            match names.get(&**state.tenant) {
                Some(shared) => state.tenant = shared.clone(),
                None => {
                    names.insert(state.tenant.to_string(), state.tenant.clone());
                }
            }
            self.accounts.insert(AccountKey::new(key), state);
        }
        for (k, v) in store.load(Kind::Source)? {
            let (tenant, net): (u64, NetKey) =
                decode(&k).map_err(|e| corrupt("sources", &k, &e))?;
            let state: SourceState = decode(&v).map_err(|e| corrupt("sources", &k, &e))?;
            self.sources.insert(SourceKey { tenant, net }, state);
        }
        for (k, v) in store.load(Kind::Spray)? {
            let key = u64::from_be_bytes(
                k.as_slice()
                    .try_into()
                    .map_err(|_| corrupt("sprays", &k, "key length"))?,
            );
            let state: SprayState = decode(&v).map_err(|e| corrupt("sprays", &k, &e))?;
            if state.sprayed_until > 0 {
                self.sprayed.insert(key);
            }
            self.sprays.insert(key, state);
        }
        Ok(())
    }

    /// Current sizes and totals.
    pub fn stats(&self) -> Stats {
        Stats {
            accounts: self.accounts.len(),
            sources: self.sources.len(),
            sprays: self.sprays.len(),
            pending: self.pending.len(),
            lockouts_started: self.counters.lockouts.load(Ordering::Relaxed),
            source_blocks_started: self.counters.source_blocks.load(Ordering::Relaxed),
            sprays_detected: self.counters.sprays.load(Ordering::Relaxed),
            accounts_flagged: self.counters.flagged.load(Ordering::Relaxed),
            evicted: self.counters.evicted.load(Ordering::Relaxed),
        }
    }
}

/// Whether two names are equal, without a call into libc's `memcmp` for names of up to 16 bytes
/// (tenant names mostly are; `==` on slices of unknown length always calls it, 2% of an attempt's
/// time in the tenant cache's lookup). Two loads from each end cover every length from 4 to 16.
#[inline]
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let u64_at = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8"));
    let u32_at = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().expect("4"));
    match n {
        0..=3 => a == b,
        4..=7 => u32_at(a, 0) == u32_at(b, 0) && u32_at(a, n - 4) == u32_at(b, n - 4),
        8..=16 => u64_at(a, 0) == u64_at(b, 0) && u64_at(a, n - 8) == u64_at(b, n - 8),
        _ => a == b,
    }
}

/// Tenant policies looked up during a walk over accounts: accounts of one tenant mostly follow
/// each other, so the last tenant's policy is reused without hashing its name again.
struct PolicyOf<'a> {
    policy: &'a Policy,
    last_tenant: String,
    last: &'a TenantPolicy,
}

impl<'a> PolicyOf<'a> {
    fn new(policy: &'a Policy) -> Self {
        PolicyOf {
            policy,
            // No tenant is named "" (and it has the defaults, as any unnamed tenant would).
            last_tenant: String::new(),
            last: policy.for_tenant(""),
        }
    }

    fn get(&mut self, tenant: &str) -> &'a TenantPolicy {
        if !same_name(&self.last_tenant, tenant) {
            self.last = self.policy.for_tenant(tenant);
            self.last_tenant.clear();
            self.last_tenant.push_str(tenant);
        }
        self.last
    }
}

/// How much an account's state protects it: 0 idle (droppable), 1 low (recent failures only),
/// 2 (an unknown user with history), 3 protected (lockout, in flight, directory counter near its
/// threshold, familiar locations, flag): never evicted for space.
pub(crate) fn account_value(a: &AccountState, p: &TenantPolicy, now: i64) -> u8 {
    let dir_window = p.directory.observation_window.ms();
    let t = a.trouble();
    let near = t.mirror.effective(now, dir_window) * 2 >= p.budget(false).max(1);
    let familiar = a
        .familiar()
        .iter()
        .any(|&(_, t)| now - t < p.familiar.familiar_for.ms());
    if a.pending > 0
        || t.locks.iter().any(|l| l.active(now))
        || t.mirror.is_locked(now)
        || near
        || familiar
        || t.flagged.is_some()
    {
        return 3;
    }
    let busy = t.mirror.effective(now, dir_window) > 0
        || t.fails
            .iter()
            .any(|f| !f.is_idle(now, p.lockout.window.ms()))
        || a.knows_any_bad(now, p.lockout.remember_for.ms());
    match (busy, a.unknown) {
        (false, _) => 0,
        (true, true) => 1,
        (true, false) => 2,
    }
}

impl AccountState {
    fn knows_any_bad(&self, now: i64, for_ms: i64) -> bool {
        self.trouble()
            .bad_fps
            .iter()
            .any(|&(_, t)| now - t < for_ms)
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    bincode::serialize(v).map_err(|e| Error::Corrupt {
        key: "(encoding)".into(),
        reason: e.to_string(),
    })
}

fn decode<T: serde::de::DeserializeOwned>(v: &[u8]) -> std::result::Result<T, String> {
    bincode::deserialize(v).map_err(|e| e.to_string())
}

fn corrupt(tree: &str, key: &[u8], reason: &str) -> Error {
    let hex: String = key.iter().take(32).map(|b| format!("{b:02x}")).collect();
    Error::Corrupt {
        key: format!("{tree}/{hex}"),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::same_name;
    use proptest::prelude::*;

    proptest! {
        /// The short-name comparison answers as `==` does, at every length around its cases,
        /// for names that differ in one byte anywhere as well as for unrelated ones.
        #[test]
        fn same_name_answers_as_equality(
            a in "[a-c]{0,20}",
            b in "[a-c]{0,20}",
            flip in any::<prop::sample::Index>(),
        ) {
            prop_assert_eq!(same_name(&a, &b), a == b);
            prop_assert!(same_name(&a, &a.clone()));
            if !a.is_empty() {
                let mut c = a.clone().into_bytes();
                let i = flip.index(c.len());
                c[i] = b'z';
                let c = String::from_utf8(c).expect("ascii");
                prop_assert!(!same_name(&a, &c), "{} vs {}", a, c);
            }
        }
    }
}
