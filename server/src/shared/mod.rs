//! Shared state: several Portcullis instances deciding as one, through Redis.
//!
//! An attacker who spreads attempts over every instance of a tenant must meet the same thresholds
//! as against one instance, so every counter a decision depends on lives in Redis, and every
//! read-modify-write of it is atomic there. The engine crate stays sans-IO: this module applies
//! its pure rules ([`portcullis_engine::rules`]) to state values it reads from Redis and writes
//! back with a compare-and-swap script, in exactly the order [`portcullis_engine::Engine`] applies
//! them to its maps.
//!
//! # Layout
//! - [`redis_store`]: [`RedisStore`], the check/outcome sequence against Redis; its keys, TTLs,
//!   compare-and-swap and outage handling; and the admin views and actions on the shared state
//!   (lists through small index sets, explain, unlock, clear-source).
//!
//! # What always holds
//! - An account's directory mirror, in-flight attempts, smart lockouts, familiar locations and
//!   remembered wrong fingerprints are one Redis value, changed only by a compare-and-swap on the
//!   whole value; the budget check and the in-flight count of a forwarded attempt are in the same
//!   swap, so concurrent instances can never together overspend an account's directory budget.
//! - An outcome claims its in-flight record with `GETDEL`: it is applied once, by whichever
//!   instance receives it.
//! - No key carries a name, a password or a fingerprint (keyed hashes only); every key but the
//!   two `{ns:meta}` ones (secret, block epoch) has a TTL; every script touches one key,
//!   hash-tagged, so the same scripts run on Redis Cluster.
//! - An operator's unlock or clear-source is a compare-and-swap in Redis, in force on every
//!   instance at the next check (no instance caches a block past a clear).

pub mod redis_store;

pub use redis_store::{RedisStore, StoreError, StoreOptions};
