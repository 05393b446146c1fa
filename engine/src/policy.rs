//! Policies: TOML files with a `[defaults]` table and per-tenant overrides.
//!
//! Loading is split as the style guide asks: [`Policy::load`] reads a file, [`Policy::from_toml`]
//! parses a string and always ends in validation. A tenant's table is merged key by key over
//! `[defaults]`, and the merged table is what is checked, so an override can never smuggle in a
//! value that breaks a rule. Every error names its TOML key and the value found; all errors are
//! collected, not just the first. Unknown keys are errors.
//!
//! The rule that matters most: smart lockout stays below the directory's own lockout. A policy is
//! refused when a lockout threshold is at or above `directory.lockout_threshold`, or when the
//! `reserve` leaves unfamiliar sources no budget.

use crate::error::{Error, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A duration written as a string in the policy (`"60s"`, `"15m"`, `"30d"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Dur(pub Duration);

impl Dur {
    const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }

    /// Whole milliseconds (the unit the engine computes in).
    pub fn ms(self) -> i64 {
        crate::clock::duration_ms(self.0)
    }
}

impl TryFrom<String> for Dur {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            format!("invalid duration {s:?} ({e}); write e.g. \"60s\", \"15m\", \"30d\"")
        })
    }
}

impl From<Dur> for String {
    fn from(d: Dur) -> String {
        humantime::format_duration(d.0).to_string()
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// What the engine does with its decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Decisions are enforced: only `forward` reaches the directory.
    #[default]
    Enforce,
    /// Decide and record everything, forward everything.
    LogOnly,
}

/// What the service does with an attempt it cannot decide normally: the shared store (Redis) is
/// unreachable, the engine failed, or the service is over its `max_in_flight` and sheds load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Refuse every attempt (`block`, reason `store_unavailable`): the directory is never at risk,
    /// sign-ins through this instance wait for the store.
    #[default]
    Closed,
    /// Forward every attempt unchecked: sign-ins go on, but nothing protects the directory's
    /// counter until the store is back.
    Open,
}

impl FailMode {
    /// `closed` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Closed => "closed",
            FailMode::Open => "open",
        }
    }

    fn parse(key: &str, v: &toml::Value) -> Result<FailMode, String> {
        match v.as_str() {
            Some("closed") => Ok(FailMode::Closed),
            Some("open") => Ok(FailMode::Open),
            _ => Err(format!("`{key}` must be \"closed\" or \"open\", found {v}")),
        }
    }
}

/// The fail mode per familiarity of the source. In TOML either one mode for both,
/// `fail_mode = "closed"`, or one per familiarity,
/// `fail_mode = { familiar = "open", unfamiliar = "closed" }` (a missing one keeps its default).
///
/// Default: `familiar = "open"`, `unfamiliar = "closed"`. Failing open for a place the account
/// already signed in from keeps real users signing in while the engine cannot decide, at the
/// cost of a few unchecked attempts from places the owner used; failing closed for every other
/// place keeps attackers away from the directory meanwhile. Where familiarity cannot be known
/// (the shared store is down, the account is not in memory) the source counts as unfamiliar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct FailPolicy {
    /// For a familiar source (personal or shared). Default `open`.
    pub familiar: FailMode,
    /// For an unfamiliar (or unknown) source. Default `closed`.
    pub unfamiliar: FailMode,
}

impl Default for FailPolicy {
    fn default() -> Self {
        FailPolicy {
            familiar: FailMode::Open,
            unfamiliar: FailMode::Closed,
        }
    }
}

impl FailPolicy {
    /// One mode for every source.
    pub fn both(mode: FailMode) -> Self {
        FailPolicy {
            familiar: mode,
            unfamiliar: mode,
        }
    }

    /// The mode for a source of familiarity `f`.
    pub fn for_source(&self, f: Familiarity) -> FailMode {
        if f.is_familiar() {
            self.familiar
        } else {
            self.unfamiliar
        }
    }
}

impl TryFrom<toml::Value> for FailPolicy {
    type Error = String;

    fn try_from(v: toml::Value) -> Result<Self, String> {
        match &v {
            toml::Value::String(_) => Ok(FailPolicy::both(FailMode::parse("fail_mode", &v)?)),
            toml::Value::Table(t) => {
                let mut p = FailPolicy::default();
                for (k, m) in t {
                    match k.as_str() {
                        "familiar" => p.familiar = FailMode::parse("fail_mode.familiar", m)?,
                        "unfamiliar" => p.unfamiliar = FailMode::parse("fail_mode.unfamiliar", m)?,
                        other => {
                            return Err(format!(
                                "unknown key `fail_mode.{other}`: expected `familiar` or `unfamiliar`"
                            ))
                        }
                    }
                }
                Ok(p)
            }
            other => Err(format!(
                "`fail_mode` must be \"closed\", \"open\" or {{ familiar = .., unfamiliar = .. }}, found {other}"
            )),
        }
    }
}

/// The on-premises directory's own lockout policy, which the engine must never trip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryPolicy {
    /// The directory's account lockout threshold (bad passwords). Default 10.
    pub lockout_threshold: u32,
    /// The directory's "reset account lockout counter after". Default 30 min.
    pub observation_window: Dur,
    /// The directory's lockout duration. Default 30 min.
    pub lockout_duration: Dur,
    /// Bad passwords per window kept back from unfamiliar sources, for familiar locations and for
    /// failures the engine cannot see. Unfamiliar sources may spend
    /// `lockout_threshold - 1 - reserve`. Default 3.
    pub reserve: u32,
    /// Bad passwords kept back even from familiar locations, for failures the engine cannot see
    /// (people typing at on-prem machines). Familiar locations may spend
    /// `lockout_threshold - 1 - familiar_reserve`. Default 1; at most `reserve`.
    pub familiar_reserve: u32,
}

impl Default for DirectoryPolicy {
    fn default() -> Self {
        DirectoryPolicy {
            lockout_threshold: 10,
            observation_window: Dur::secs(30 * 60),
            lockout_duration: Dur::secs(30 * 60),
            reserve: 3,
            familiar_reserve: 1,
        }
    }
}

/// Smart lockout per account, familiar and unfamiliar locations counted apart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutPolicy {
    /// Failures from unfamiliar locations within `window` that lock the account for unfamiliar
    /// locations. Default 6 (the unfamiliar budget of the default directory policy: a user who
    /// just changed their password may try five old ones from a new place); must stay below
    /// `directory.lockout_threshold`.
    pub threshold: u32,
    /// Failures from familiar locations within `window` that lock the account for familiar
    /// locations. Default 8; must stay below `directory.lockout_threshold`.
    pub familiar_threshold: u32,
    /// The window failures are counted in. Default 30 min.
    pub window: Dur,
    /// The first lockout's length. Default 60 s.
    pub duration: Dur,
    /// Each repeated lockout lasts this many times the previous one. Default 2.
    pub growth: f64,
    /// The longest a lockout lasts. Default 1 h. No lockout is permanent.
    pub max_duration: Dur,
    /// Distinct wrong password fingerprints remembered per account. Default 3; 0 turns the rule off.
    pub remember_bad: u32,
    /// How long a wrong fingerprint is remembered. Default 15 min.
    pub remember_for: Dur,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            threshold: 6,
            familiar_threshold: 8,
            window: Dur::secs(30 * 60),
            duration: Dur::secs(60),
            growth: 2.0,
            max_duration: Dur::secs(3600),
            remember_bad: 3,
            remember_for: Dur::secs(15 * 60),
        }
    }
}

/// Familiar locations: where an account's owner has signed in before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FamiliarPolicy {
    /// IPv4 prefix length a success makes familiar. Default 24.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length a success makes familiar. Default 64.
    pub ipv6_prefix: u8,
    /// How long a location stays familiar after its last success. Default 30 days.
    pub familiar_for: Dur,
    /// Familiar locations kept per account, least recently used evicted. Default 20.
    pub familiar_max: u32,
    /// A prefix from which at least this many distinct accounts signed in successfully within
    /// `familiar_for` (an office or VPN egress) is familiar to every account of the tenant, as long
    /// as it is not blocked. Default 10; 0 turns shared familiarity off.
    pub shared_after_accounts: u32,
}

impl Default for FamiliarPolicy {
    fn default() -> Self {
        FamiliarPolicy {
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            familiar_for: Dur::secs(30 * 86_400),
            familiar_max: 20,
            shared_after_accounts: 10,
        }
    }
}

/// Source rules: addresses and network prefixes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesPolicy {
    /// The window source failures and successes are counted in. Default 1 h.
    pub window: Dur,
    /// Failures from one address or prefix within `window` that block it. Default 30.
    pub max_failures: u32,
    /// A source is only blocked while its failures exceed this many times its successes, so a busy
    /// office NAT with many good sign-ins is not treated as an attacker. Default 3.
    pub failure_ratio: f64,
    /// The first block's length. Default 15 min.
    pub block_duration: Dur,
    /// Each repeated block lasts this many times the previous one. Default 2.
    pub block_growth: f64,
    /// The longest a source block lasts. Default 24 h.
    pub block_max_duration: Dur,
    /// IPv4 prefix length counted besides the address. Default 24.
    pub ipv4_prefix: u8,
    /// IPv6 prefix lengths counted besides the address. Default [64, 48].
    pub ipv6_prefixes: Vec<u8>,
    /// Requests per second allowed from one address (a token bucket). Default 50.
    pub rate_per_second: u32,
    /// Burst allowed above the rate. Default 200.
    pub rate_burst: u32,
    /// Known egress networks: never source-blocked or rate-limited; account rules still apply.
    pub trusted: Vec<IpNet>,
    /// Networks always refused.
    pub blocked: Vec<IpNet>,
}

impl Default for SourcesPolicy {
    fn default() -> Self {
        SourcesPolicy {
            window: Dur::secs(3600),
            max_failures: 30,
            failure_ratio: 3.0,
            block_duration: Dur::secs(15 * 60),
            block_growth: 2.0,
            block_max_duration: Dur::secs(86_400),
            ipv4_prefix: 24,
            ipv6_prefixes: vec![64, 48],
            rate_per_second: 50,
            rate_burst: 200,
            trusted: Vec::new(),
            blocked: Vec::new(),
        }
    }
}

/// Password-spray detection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SprayPolicy {
    /// A wrong fingerprint that failed against more than this many distinct accounts within
    /// `window` is a sprayed password. Default 4.
    pub accounts_per_password: u32,
    /// The window distinct accounts per password are counted in. Default 24 h.
    pub window: Dur,
    /// How long a fingerprint stays marked as sprayed after it was last seen failing. Default 7 days.
    pub sprayed_for: Dur,
    /// An address or prefix whose failures hit more than this many distinct accounts within
    /// `sources.window` is a spraying source and is blocked. Default 10.
    pub accounts_per_source: u32,
    /// Whether an unfamiliar source that has not failed against other accounts (its address
    /// against none, its prefixes against fewer than two) may still try a sprayed password: it
    /// looks like the owner's first sign-in from a new place. Its attempt still spends the
    /// directory budget and a success flags the account. Default true; false blocks a sprayed
    /// password from every unfamiliar location.
    pub clean_source_exempt: bool,
}

impl Default for SprayPolicy {
    fn default() -> Self {
        SprayPolicy {
            accounts_per_password: 4,
            window: Dur::secs(86_400),
            sprayed_for: Dur::secs(7 * 86_400),
            accounts_per_source: 10,
            clean_source_exempt: true,
        }
    }
}

/// The effective policy of one tenant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantPolicy {
    /// `enforce` (default) or `log_only`.
    pub mode: Mode,
    /// What to do with an attempt the service cannot decide normally (shared store unreachable,
    /// engine error, overload): `closed` refuses it, `open` forwards it unchecked. One mode, or one
    /// per familiarity of the source; default `{ familiar = "open", unfamiliar = "closed" }`.
    /// See [`FailPolicy`].
    pub fail_mode: FailPolicy,
    /// The directory's own lockout policy.
    pub directory: DirectoryPolicy,
    /// Smart lockout per account.
    pub lockout: LockoutPolicy,
    /// Familiar locations.
    pub familiar: FamiliarPolicy,
    /// Source rules.
    pub sources: SourcesPolicy,
    /// Password-spray detection.
    pub spray: SprayPolicy,
}

/// Whether a location is familiar to an account (see [`TenantPolicy::budget`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Familiarity {
    /// No success from here.
    Unfamiliar,
    /// Many of the tenant's accounts succeed from here (office, VPN egress).
    Shared,
    /// This account succeeded from here.
    Personal,
}

impl Familiarity {
    /// Whether the familiar counters and budget apply.
    pub fn is_familiar(self) -> bool {
        self != Familiarity::Unfamiliar
    }
}

impl TenantPolicy {
    /// Bad passwords the engine lets a location of this kind spend per directory window: the
    /// directory's counter, counting in-flight attempts as failures, never exceeds this.
    pub fn budget(&self, familiar: bool) -> u32 {
        let d = &self.directory;
        let kept = if familiar {
            d.familiar_reserve
        } else {
            d.reserve
        };
        d.lockout_threshold.saturating_sub(1).saturating_sub(kept)
    }

    /// The lockout threshold for a location of this kind.
    pub fn lockout_threshold(&self, familiar: bool) -> u32 {
        if familiar {
            self.lockout.familiar_threshold
        } else {
            self.lockout.threshold
        }
    }

    /// Checks every rule, pushing one message per problem, each naming `prefix.key`.
    pub fn validate(&self, prefix: &str, errs: &mut Vec<String>) {
        let d = &self.directory;
        let l = &self.lockout;
        let mut err = |key: &str, msg: String| errs.push(format!("{prefix}.{key} {msg}"));
        if d.lockout_threshold < 2 {
            err(
                "directory.lockout_threshold",
                format!("= {} must be at least 2 (a directory that never locks needs no budget; a threshold of 1 leaves none)", d.lockout_threshold),
            );
        } else if self.budget(false) == 0 {
            err(
                "directory.reserve",
                format!(
                    "= {} leaves unfamiliar sources no budget: it must be below directory `lockout_threshold` - 1 = {}",
                    d.reserve,
                    d.lockout_threshold - 1
                ),
            );
        }
        if d.familiar_reserve > d.reserve {
            err(
                "directory.familiar_reserve",
                format!(
                    "= {} must not exceed directory `reserve` = {}",
                    d.familiar_reserve, d.reserve
                ),
            );
        }
        for (key, v) in [
            ("lockout.threshold", l.threshold),
            ("lockout.familiar_threshold", l.familiar_threshold),
        ] {
            if v == 0 {
                err(key, "= 0 must be at least 1".into());
            } else if v >= d.lockout_threshold {
                err(
                    key,
                    format!(
                        "= {v} must stay below directory `lockout_threshold` = {}",
                        d.lockout_threshold
                    ),
                );
            }
        }
        for (key, v) in [
            ("directory.observation_window", d.observation_window),
            ("directory.lockout_duration", d.lockout_duration),
            ("lockout.window", l.window),
            ("lockout.duration", l.duration),
            ("lockout.max_duration", l.max_duration),
            ("familiar.familiar_for", self.familiar.familiar_for),
            ("sources.window", self.sources.window),
            ("sources.block_duration", self.sources.block_duration),
            (
                "sources.block_max_duration",
                self.sources.block_max_duration,
            ),
            ("spray.window", self.spray.window),
            ("spray.sprayed_for", self.spray.sprayed_for),
        ] {
            if v.0 < Duration::from_millis(1) {
                err(key, format!("= \"{v}\" must be longer than zero"));
            } else if v.0 > Duration::from_secs(366 * 86_400) {
                err(key, format!("= \"{v}\" must be at most a year"));
            }
        }
        if l.remember_bad > 0 && l.remember_for.0.is_zero() {
            err(
                "lockout.remember_for",
                "= \"0s\" must be longer than zero".into(),
            );
        }
        if l.max_duration < l.duration {
            err(
                "lockout.max_duration",
                format!(
                    "= \"{}\" must be at least `lockout.duration` = \"{}\"",
                    l.max_duration, l.duration
                ),
            );
        }
        if self.sources.block_max_duration < self.sources.block_duration {
            err(
                "sources.block_max_duration",
                format!(
                    "= \"{}\" must be at least `sources.block_duration` = \"{}\"",
                    self.sources.block_max_duration, self.sources.block_duration
                ),
            );
        }
        for (key, v) in [
            ("lockout.growth", l.growth),
            ("sources.block_growth", self.sources.block_growth),
        ] {
            if !(1.0..=100.0).contains(&v) {
                err(key, format!("= {v} must be between 1 and 100"));
            }
        }
        let ratio = self.sources.failure_ratio;
        if !(ratio.is_finite() && ratio >= 0.0) {
            err(
                "sources.failure_ratio",
                format!("= {ratio} must be a number >= 0"),
            );
        }
        if l.remember_bad > 16 {
            err(
                "lockout.remember_bad",
                format!("= {} must be at most 16", l.remember_bad),
            );
        }
        let f = &self.familiar;
        if f.familiar_max == 0 || f.familiar_max > 256 {
            err(
                "familiar.familiar_max",
                format!("= {} must be between 1 and 256", f.familiar_max),
            );
        }
        if f.shared_after_accounts > 1000 {
            err(
                "familiar.shared_after_accounts",
                format!("= {} must be at most 1000", f.shared_after_accounts),
            );
        }
        if !(8..=32).contains(&f.ipv4_prefix) {
            err(
                "familiar.ipv4_prefix",
                format!("= {} must be between 8 and 32", f.ipv4_prefix),
            );
        }
        if !(16..=128).contains(&f.ipv6_prefix) {
            err(
                "familiar.ipv6_prefix",
                format!("= {} must be between 16 and 128", f.ipv6_prefix),
            );
        }
        let s = &self.sources;
        if !(8..=32).contains(&s.ipv4_prefix) {
            err(
                "sources.ipv4_prefix",
                format!("= {} must be between 8 and 32", s.ipv4_prefix),
            );
        }
        if s.ipv6_prefixes.len() > 4 || s.ipv6_prefixes.iter().any(|p| !(16..=128).contains(p)) {
            err(
                "sources.ipv6_prefixes",
                format!(
                    "= {:?} must hold at most 4 lengths, each between 16 and 128",
                    s.ipv6_prefixes
                ),
            );
        }
        if s.max_failures == 0 {
            err("sources.max_failures", "= 0 must be at least 1".into());
        }
        if s.rate_per_second == 0 {
            err("sources.rate_per_second", "= 0 must be at least 1".into());
        }
        if s.rate_burst == 0 {
            err("sources.rate_burst", "= 0 must be at least 1".into());
        }
        for (i, net) in s.trusted.iter().enumerate() {
            if let Some(b) = s
                .blocked
                .iter()
                .find(|b| b.contains(net) || net.contains(*b))
            {
                err(
                    &format!("sources.trusted[{i}]"),
                    format!("= \"{net}\" overlaps `sources.blocked` entry \"{b}\""),
                );
            }
        }
        let sp = &self.spray;
        if !(2..=1000).contains(&sp.accounts_per_password) {
            err(
                "spray.accounts_per_password",
                format!("= {} must be between 2 and 1000", sp.accounts_per_password),
            );
        }
        if !(2..=1000).contains(&sp.accounts_per_source) {
            err(
                "spray.accounts_per_source",
                format!("= {} must be between 2 and 1000", sp.accounts_per_source),
            );
        }
    }
}

/// A loaded, validated policy: defaults plus per-tenant overrides.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The `version` key, or a hash of the file's text when it has none.
    pub version: String,
    /// The policy of tenants with no table of their own.
    pub defaults: Arc<TenantPolicy>,
    /// Tenants with a table, by name.
    pub tenants: BTreeMap<String, Arc<TenantPolicy>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            version: "builtin".into(),
            defaults: Arc::new(TenantPolicy::default()),
            tenants: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Option<String>,
    #[serde(default)]
    defaults: toml::Table,
    #[serde(default)]
    tenants: BTreeMap<String, toml::Table>,
}

/// Whether `name` is an acceptable tenant name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Policy::from_toml(&text).map_err(|e| match e {
            Error::Policy(errs) => Error::Policy(
                errs.into_iter()
                    .map(|m| format!("{}: {m}", path.display()))
                    .collect(),
            ),
            other => other,
        })
    }

    /// Parses and validates a policy from TOML text.
    pub fn from_toml(text: &str) -> Result<Policy> {
        let raw: RawFile = toml::from_str(text).map_err(|e| Error::Policy(vec![e.to_string()]))?;
        let mut errs = Vec::new();
        let defaults = parse_tenant(raw.defaults.clone(), "defaults", &mut errs);
        let mut tenants = BTreeMap::new();
        for (name, table) in raw.tenants {
            let key = format!("tenants.{name}");
            if !valid_tenant_name(&name) {
                errs.push(format!(
                    "{key}: tenant name {name:?} must be 1 to 64 of A-Z a-z 0-9 . _ -"
                ));
                continue;
            }
            let mut merged = raw.defaults.clone();
            merge(&mut merged, table);
            if let Some(t) = parse_tenant(merged, &key, &mut errs) {
                tenants.insert(name, Arc::new(t));
            }
        }
        if !errs.is_empty() {
            return Err(Error::Policy(errs));
        }
        let version = raw.version.unwrap_or_else(|| {
            let h = blake3::hash(text.as_bytes()).to_hex();
            format!("sha-{}", &h[..12])
        });
        Ok(Policy {
            version,
            defaults: Arc::new(defaults.unwrap_or_default()),
            tenants,
        })
    }

    /// The policy in force for `tenant`.
    pub fn for_tenant(&self, tenant: &str) -> &Arc<TenantPolicy> {
        self.tenants.get(tenant).unwrap_or(&self.defaults)
    }

    /// A human-readable account of the effective values per tenant and the budget each gets,
    /// as `check-policy` prints it.
    pub fn describe(&self) -> String {
        let mut out = format!("policy version {}\n", self.version);
        let all = std::iter::once(("(defaults)", &self.defaults))
            .chain(self.tenants.iter().map(|(n, t)| (n.as_str(), t)));
        for (name, t) in all {
            let _ = writeln!(
                out,
                "\n[{name}] mode {mode:?}; fail_mode familiar {ff_}, unfamiliar {fu_}\n  directory: lockout at {thr} bad passwords in {win}, locked {dur}\n  budget per directory window: unfamiliar {bu}, familiar {bf} (reserve {r}, familiar_reserve {fr})\n  smart lockout: unfamiliar {lt}, familiar {lft} failures in {lw}; {ld} growing x{lg} up to {lm}\n  remembered wrong passwords: {rb} for {rf}\n  familiar: /{f4} IPv4, /{f6} IPv6, for {ff}, at most {fm} per account, shared after {fs} accounts\n  sources: block after {mf} failures or {aps} accounts in {sw} (failures > {fr2} x successes), {bd} growing x{bg} up to {bm}; rate {rps}/s burst {rb2}; trusted {tr:?}; blocked {bl:?}\n  spray: password sprayed after {app} accounts in {spw}, remembered {spf}; clean unfamiliar sources exempt: {cse}",
                mode = t.mode,
                ff_ = t.fail_mode.familiar.as_str(),
                fu_ = t.fail_mode.unfamiliar.as_str(),
                thr = t.directory.lockout_threshold,
                win = t.directory.observation_window,
                dur = t.directory.lockout_duration,
                bu = t.budget(false),
                bf = t.budget(true),
                r = t.directory.reserve,
                fr = t.directory.familiar_reserve,
                lt = t.lockout.threshold,
                lft = t.lockout.familiar_threshold,
                lw = t.lockout.window,
                ld = t.lockout.duration,
                lg = t.lockout.growth,
                lm = t.lockout.max_duration,
                rb = t.lockout.remember_bad,
                rf = t.lockout.remember_for,
                f4 = t.familiar.ipv4_prefix,
                f6 = t.familiar.ipv6_prefix,
                ff = t.familiar.familiar_for,
                fm = t.familiar.familiar_max,
                fs = t.familiar.shared_after_accounts,
                mf = t.sources.max_failures,
                aps = t.spray.accounts_per_source,
                sw = t.sources.window,
                fr2 = t.sources.failure_ratio,
                bd = t.sources.block_duration,
                bg = t.sources.block_growth,
                bm = t.sources.block_max_duration,
                rps = t.sources.rate_per_second,
                rb2 = t.sources.rate_burst,
                tr = t.sources.trusted.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                bl = t.sources.blocked.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                app = t.spray.accounts_per_password,
                spw = t.spray.window,
                spf = t.spray.sprayed_for,
                cse = t.spray.clean_source_exempt,
            );
        }
        out
    }
}

fn parse_tenant(table: toml::Table, prefix: &str, errs: &mut Vec<String>) -> Option<TenantPolicy> {
    match serde_path_to_error::deserialize::<_, TenantPolicy>(toml::Value::Table(table)) {
        Ok(t) => {
            t.validate(prefix, errs);
            Some(t)
        }
        Err(e) => {
            let path = e.path().to_string();
            let at = if path == "." {
                prefix.to_string()
            } else {
                format!("{prefix}.{path}")
            };
            errs.push(format!("{at}: {}", e.into_inner()));
            None
        }
    }
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Policy::from_toml(text) {
            Err(Error::Policy(e)) => e,
            other => panic!("expected a refused policy, got {other:?}"),
        }
    }

    #[test]
    fn empty_policy_gets_builtin_defaults() {
        let p = Policy::from_toml("").unwrap();
        assert_eq!(*p.defaults, TenantPolicy::default());
        assert_eq!(p.defaults.budget(false), 6);
        assert_eq!(p.defaults.budget(true), 8);
    }

    #[test]
    fn fail_mode_defaults_to_open_for_familiar_and_closed_for_unfamiliar() {
        let p = Policy::from_toml("").unwrap();
        assert_eq!(p.defaults.fail_mode.familiar, FailMode::Open);
        assert_eq!(p.defaults.fail_mode.unfamiliar, FailMode::Closed);
        assert_eq!(
            p.defaults.fail_mode.for_source(Familiarity::Personal),
            FailMode::Open
        );
        assert_eq!(
            p.defaults.fail_mode.for_source(Familiarity::Unfamiliar),
            FailMode::Closed
        );
    }

    #[test]
    fn fail_mode_takes_one_string_or_one_mode_per_familiarity() {
        let p = Policy::from_toml(
            r#"
            [defaults]
            fail_mode = "closed"
            [tenants.acme]
            fail_mode = { familiar = "closed", unfamiliar = "open" }
            [tenants.globex]
            fail_mode = { unfamiliar = "open" }
            [tenants.initech]
            fail_mode = "open"
            "#,
        )
        .unwrap();
        assert_eq!(p.defaults.fail_mode, FailPolicy::both(FailMode::Closed));
        let acme = p.for_tenant("acme").fail_mode;
        assert_eq!(
            (acme.familiar, acme.unfamiliar),
            (FailMode::Closed, FailMode::Open)
        );
        let globex = p.for_tenant("globex").fail_mode;
        assert_eq!(
            (globex.familiar, globex.unfamiliar),
            (FailMode::Open, FailMode::Open),
            "a missing familiarity keeps its default"
        );
        assert_eq!(
            p.for_tenant("initech").fail_mode,
            FailPolicy::both(FailMode::Open)
        );
        assert!(p
            .describe()
            .contains("fail_mode familiar closed, unfamiliar open"));
    }

    #[test]
    fn rejects_bad_fail_modes_naming_the_key() {
        let e = errors("[tenants.acme]\nfail_mode = \"sometimes\"\n");
        assert!(
            e.iter()
                .any(|m| m.contains("tenants.acme") && m.contains("`fail_mode` must be")),
            "{e:?}"
        );
        let e = errors("[defaults]\nfail_mode = { familar = \"open\" }\n");
        assert!(e.iter().any(|m| m.contains("fail_mode.familar")), "{e:?}");
        let e = errors("[defaults]\nfail_mode = { unfamiliar = \"shut\" }\n");
        assert!(
            e.iter()
                .any(|m| m.contains("`fail_mode.unfamiliar` must be")),
            "{e:?}"
        );
    }

    #[test]
    fn tenant_tables_override_defaults_key_by_key() {
        let p = Policy::from_toml(
            r#"
            [defaults.lockout]
            duration = "2m"
            [tenants.acme.lockout]
            threshold = 3
            "#,
        )
        .unwrap();
        let acme = p.for_tenant("acme");
        assert_eq!(acme.lockout.threshold, 3);
        assert_eq!(
            acme.lockout.duration,
            Dur::secs(120),
            "inherited from defaults"
        );
        assert_eq!(p.for_tenant("other").lockout.threshold, 6);
    }

    #[test]
    fn rejects_policy_above_directory_lockout() {
        let e = errors("[tenants.acme.lockout]\nthreshold = 12\n");
        assert!(
            e.iter().any(|m| m == "tenants.acme.lockout.threshold = 12 must stay below directory `lockout_threshold` = 10"),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_a_reserve_that_leaves_no_budget() {
        let e = errors("[defaults.directory]\nlockout_threshold = 4\nreserve = 3\n[defaults.lockout]\nthreshold = 2\nfamiliar_threshold = 3\n");
        assert!(
            e.iter().any(|m| m
                .starts_with("defaults.directory.reserve = 3 leaves unfamiliar sources no budget")),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let e = errors("[defaults.lockout]\ntreshold = 3\n");
        assert!(e[0].starts_with("defaults.lockout"), "{e:?}");
        assert!(e[0].contains("unknown field `treshold`"), "{e:?}");
        let e = errors("[defaults]\nspeed = 1\n");
        assert!(e[0].contains("unknown field `speed`"), "{e:?}");
    }

    #[test]
    fn bad_durations_and_cidrs_name_their_key() {
        let e = errors("[defaults.lockout]\nduration = \"soon\"\n");
        assert!(
            e[0].starts_with("defaults.lockout.duration: invalid duration \"soon\""),
            "{e:?}"
        );
        let e = errors("[defaults.sources]\ntrusted = [\"10.0.0.0/33\"]\n");
        assert!(e[0].starts_with("defaults.sources.trusted"), "{e:?}");
    }

    #[test]
    fn collects_every_error_not_just_the_first() {
        let e = errors(
            r#"
            [defaults.lockout]
            threshold = 10
            familiar_threshold = 11
            growth = 0.5
            [defaults.spray]
            accounts_per_password = 1
            "#,
        );
        assert_eq!(e.len(), 4, "{e:?}");
    }

    #[test]
    fn syntax_errors_keep_line_and_column() {
        let e = errors("[defaults.lockout\nthreshold = 3\n");
        assert!(e[0].contains("line 1"), "{e:?}");
    }

    #[test]
    fn refuses_bad_tenant_names() {
        let e = errors("[tenants.\"bad name\"]\nmode = \"enforce\"\n");
        assert!(e[0].contains("tenant name"), "{e:?}");
    }

    #[test]
    fn shipped_default_policy_is_valid() {
        let text = include_str!("../../policies/default.toml");
        let p = Policy::from_toml(text).unwrap();
        assert_eq!(p.defaults.directory.lockout_threshold, 10);
    }
}
