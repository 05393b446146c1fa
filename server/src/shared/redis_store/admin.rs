//! Operator views and actions on the shared state: the admin API's lists, explain, unlock and
//! clear-source in Redis shared mode.
//!
//! Every action is a compare-and-swap of the one value it changes (the same [`RedisStore::update`]
//! the decisions use), so it cannot undo a concurrent decision's write, and it is seen by every
//! instance at once: instances keep no account state, and the one local cache (source blocks) is
//! invalidated through the block epoch (see the parent module's "Local cache").
//!
//! The lists read the three index sets (see the parent module's "Indexes for the admin views"),
//! prune what has ended, resolve each member to its value and show only what is in force. Account
//! views take the tenant and normalised name from the account value itself; no view carries a
//! password, a fingerprint or a fingerprint hash.

use super::{decode, source_member, ttls, AccountRec, RedisStore, StoreResult, MAX_INDEX};
use portcullis_engine::admin::{
    check_tenant, lockout_views, sort_lockouts, sort_sources, sort_sprays, source_block_view,
    AccountExplain, LockoutView, SourceBlockView, SourceTarget, SprayView,
};
use portcullis_engine::net::{canonical, NetKey};
use portcullis_engine::rules::SourceKeys;
use portcullis_engine::state::{SourceState, SprayState};
use portcullis_engine::Timestamp;

/// Adds `ARGV[2]` scored `ARGV[1]` to the sorted set, keeps its `ARGV[3]` highest-scored members
/// and makes its TTL at least `ARGV[4]` ms. One key only.
const INDEX_ADD_LUA: &str = r"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
";

/// One of the admin index sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IndexKind {
    /// Accounts with a lockout (smart or directory) in force; member: the account key's hash.
    Lockouts,
    /// Blocked addresses and prefixes; member: `<key hash> <tenant> <address or prefix>`.
    Sources,
    /// Sprayed fingerprints; member: `<key hash> <opaque spray id>`.
    Sprays,
}

impl IndexKind {
    fn name(self) -> &'static str {
        match self {
            IndexKind::Lockouts => "lockouts",
            IndexKind::Sources => "sources",
            IndexKind::Sprays => "sprays",
        }
    }
}

impl RedisStore {
    fn index_key(&self, kind: IndexKind) -> String {
        format!("{{{}:ix:{}}}", self.ns, kind.name())
    }

    /// Names `member` in index `kind` until `until` (ms). Best effort: a failure is logged at
    /// DEBUG and loses only a row of a list (the state itself was written already).
    pub(super) async fn index_add(&self, kind: IndexKind, member: &str, until: i64, ttl_ms: i64) {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(INDEX_ADD_LUA)
            .arg(1)
            .arg(self.index_key(kind))
            .arg(until)
            .arg(member)
            .arg(MAX_INDEX)
            .arg(ttl_ms.max(1))
            .query_async(&mut c)
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, index = kind.name(), "Admin index not updated.");
        }
    }

    async fn index_remove(&self, kind: IndexKind, members: &[String]) -> StoreResult<()> {
        if members.is_empty() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let _: i64 = redis::cmd("ZREM")
            .arg(self.index_key(kind))
            .arg(members)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// The members of index `kind` ending after `now` (ms), after pruning those that ended, with
    /// the values of their keys (`key_of` maps a member to its key).
    async fn index_values(
        &self,
        kind: IndexKind,
        now: i64,
        key_of: impl Fn(&str) -> String,
    ) -> StoreResult<Vec<(String, String, Option<Vec<u8>>)>> {
        let key = self.index_key(kind);
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(format!("({now}"))
            .arg("+inf")
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_INDEX);
        let (members,): (Vec<String>,) = pipe.query_async(&mut c).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = members.iter().map(|m| key_of(m)).collect();
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("GET").arg(k);
        }
        let vals: Vec<Option<Vec<u8>>> = pipe.query_async(&mut c).await?;
        Ok(members
            .into_iter()
            .zip(keys)
            .zip(vals)
            .map(|((m, k), v)| (m, k, v))
            .collect())
    }

    /// Every lockout in force at `now` in Redis (smart lockouts and mirrored directory locks),
    /// sorted as [`portcullis_engine::Engine::active_lockouts`] sorts them.
    pub async fn active_lockouts(&self, now: Timestamp) -> StoreResult<Vec<LockoutView>> {
        self.guarded(async {
            let t = now.as_millis();
            let rows = self
                .index_values(IndexKind::Lockouts, t, |m| format!("{{{}:a:{m}}}", self.ns))
                .await?;
            let mut out = Vec::new();
            let mut stale = Vec::new();
            for (m, k, v) in rows {
                let views = match v {
                    Some(v) => lockout_views(&decode::<AccountRec>(&k, &v)?.state, t),
                    None => Vec::new(),
                };
                if views.is_empty() {
                    stale.push(m);
                }
                out.extend(views);
            }
            self.index_remove(IndexKind::Lockouts, &stale).await?;
            sort_lockouts(&mut out);
            Ok(out)
        })
        .await
    }

    /// Every source block in force at `now` in Redis, sorted by tenant and source.
    pub async fn blocked_sources(&self, now: Timestamp) -> StoreResult<Vec<SourceBlockView>> {
        self.guarded(async {
            let t = now.as_millis();
            let rows = self
                .index_values(IndexKind::Sources, t, |m| {
                    let hash = m.split(' ').next().unwrap_or_default();
                    format!("{{{}:s:{hash}}}", self.ns)
                })
                .await?;
            let mut out = Vec::new();
            let mut stale = Vec::new();
            for (m, k, v) in rows {
                let mut parts = m.splitn(3, ' ').skip(1);
                let (Some(tenant), Some(source)) = (parts.next(), parts.next()) else {
                    stale.push(m);
                    continue;
                };
                let view = match v {
                    Some(v) => source_block_view(
                        tenant.to_string(),
                        source.to_string(),
                        &decode::<SourceState>(&k, &v)?,
                        t,
                    ),
                    None => None,
                };
                match view {
                    Some(view) => out.push(view),
                    None => stale.push(m),
                }
            }
            self.index_remove(IndexKind::Sources, &stale).await?;
            sort_sources(&mut out);
            Ok(out)
        })
        .await
    }

    /// Every fingerprint marked sprayed at `now` in Redis, by opaque id, sorted by detection.
    pub async fn sprayed_passwords(&self, now: Timestamp) -> StoreResult<Vec<SprayView>> {
        self.guarded(async {
            let t = now.as_millis();
            let rows = self
                .index_values(IndexKind::Sprays, t, |m| {
                    let hash = m.split(' ').next().unwrap_or_default();
                    format!("{{{}:p:{hash}}}", self.ns)
                })
                .await?;
            let mut out = Vec::new();
            let mut stale = Vec::new();
            for (m, k, v) in rows {
                let id = m.split(' ').nth(1).unwrap_or_default().to_string();
                let view = match v {
                    Some(v) => self
                        .engine
                        .spray_view(id, &decode::<SprayState>(&k, &v)?, t),
                    None => None,
                };
                match view {
                    Some(view) => out.push(view),
                    None => stale.push(m),
                }
            }
            self.index_remove(IndexKind::Sprays, &stale).await?;
            sort_sprays(&mut out);
            Ok(out)
        })
        .await
    }

    /// Explains an account from its value in Redis, as
    /// [`portcullis_engine::Engine::explain_account`] does from memory.
    pub async fn explain_account(
        &self,
        tenant: &str,
        user: &str,
        now: Timestamp,
    ) -> StoreResult<AccountExplain> {
        self.guarded(async {
            let t = now.as_millis();
            let (acct, name) = self.engine.admin_account_identity(tenant, user)?;
            let window = self
                .engine
                .policy()
                .for_tenant(tenant)
                .directory
                .observation_window
                .ms();
            let key = self.account_key(acct);
            let mut c = self.conn.clone();
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut c).await?;
            let rec = v
                .map(|v| decode::<AccountRec>(&key, &v))
                .transpose()?
                .map(|mut r| {
                    r.settle(t, window);
                    r
                });
            Ok(self
                .engine
                .explain_state(tenant, name.into(), rec.as_ref().map(|r| &r.state), now))
        })
        .await
    }

    /// Ends both smart lockouts of an account in Redis by compare-and-swap (repeat levels and
    /// the directory mirror kept, as [`portcullis_engine::Engine::unlock_account`]). Returns
    /// whether one was in force.
    pub async fn unlock_account(
        &self,
        tenant: &str,
        user: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.guarded(async {
            let t = now.as_millis();
            let (acct, _) = self.engine.admin_account_identity(tenant, user)?;
            let ttl = ttls(self.engine.policy().for_tenant(tenant));
            let key = self.account_key(acct);
            let (was, until) = self
                .update::<AccountRec, (bool, i64)>(&key, ttl.account_ms, None, |cur| match cur {
                    None => (None, (false, 0)),
                    Some(r) if r.state.trouble().locks.iter().all(|l| l.until == 0) => {
                        let until = r.state.locked_until();
                        (None, (false, until))
                    }
                    Some(mut r) => {
                        let was = r.state.unlock(t);
                        let until = r.state.locked_until();
                        (Some(r), (was, until))
                    }
                })
                .await?;
            let member = format!("{acct:032x}");
            if until > t {
                // The directory's own lock is still mirrored: keep listing it.
                self.index_add(IndexKind::Lockouts, &member, until, ttl.account_ms)
                    .await;
            } else {
                self.index_remove(IndexKind::Lockouts, &[member]).await?;
            }
            Ok(was)
        })
        .await
    }

    /// Clears source blocks of `tenant` in Redis, as
    /// [`portcullis_engine::Engine::clear_source_block`] does: for a prefix, that prefix's
    /// block; for an address, the address's block and those of its prefixes under the tenant's
    /// policy. Each by compare-and-swap, then a fresh block epoch so that no instance answers
    /// from a cached block. Returns how many blocks in force were cleared.
    pub async fn clear_source_block(
        &self,
        tenant: &str,
        source: &str,
        now: Timestamp,
    ) -> StoreResult<usize> {
        self.guarded(async {
            let t = now.as_millis();
            check_tenant(tenant)?;
            let target = SourceTarget::parse(source)?;
            let (p, tenant_id) = self.engine.tenant_info(tenant)?;
            let ttl = ttls(&p);
            let nets: Vec<NetKey> = match target {
                SourceTarget::Prefix(n) => vec![n],
                SourceTarget::Address(ip) => SourceKeys::of(canonical(ip), &p).iter().collect(),
            };
            let mut cleared = 0;
            let mut members = Vec::new();
            for net in nets {
                let key = self.source_key(tenant_id, net);
                let was = self
                    .update::<SourceState, bool>(&key, ttl.source_ms, None, |cur| match cur {
                        Some(mut s) if s.block.until != 0 || s.block_reason.is_some() => {
                            let was = s.clear_block(t);
                            (Some(s), was)
                        }
                        _ => (None, false),
                    })
                    .await?;
                cleared += usize::from(was);
                members.push(source_member(&key, tenant, net));
                self.blocked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            }
            self.index_remove(IndexKind::Sources, &members).await?;
            // After the swaps: a check that read a block before them read the older epoch.
            let mut c = self.conn.clone();
            let _: () = redis::cmd("SET")
                .arg(self.epoch_key())
                .arg(rand::random::<u64>() | 1)
                .query_async(&mut c)
                .await?;
            Ok(cleared)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::key_hash;
    use super::*;

    #[test]
    fn source_members_split_back_into_hash_tenant_and_source() {
        let net = NetKey::new("2001:db8::1".parse().unwrap(), 64);
        let m = source_member("{ns:s:00ff}", "acme", net);
        let mut parts = m.splitn(3, ' ');
        assert_eq!(parts.next(), Some("00ff"));
        assert_eq!(parts.next(), Some("acme"));
        assert_eq!(parts.next(), Some(net.to_string().as_str()));
        assert_eq!(key_hash("{ns:a:0123abcd}"), "0123abcd");
    }
}
