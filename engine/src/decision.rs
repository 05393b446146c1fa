//! What the engine is asked, and what it answers.
//!
//! A decision is a value, not an error: `forward`, `wrong_password`
//! (answered by the engine itself) or `block`, with a machine-readable reason for every
//! non-forward, a retry-after where one applies, and the counter that fired.

use crate::policy::Familiarity;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// One validation request as the broker queued it.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// The sign-in name exactly as typed.
    pub user: &'a str,
    /// The client address as the broker saw it.
    pub ip: IpAddr,
    /// The opaque password fingerprint, if the broker sends one. Only a keyed hash of it is kept.
    pub fingerprint: Option<&'a [u8]>,
}

/// What the caller must do with an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Send it to an agent.
    Forward,
    /// Answer "wrong password" without asking the directory.
    WrongPassword,
    /// Refuse it without asking the directory.
    Block,
}

impl Verdict {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Forward => "forward",
            Verdict::WrongPassword => "wrong_password",
            Verdict::Block => "block",
        }
    }
}

/// Why an attempt was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The account is in a smart lockout for this kind of location.
    AccountLocked,
    /// Forwarding could bring the directory's bad-password counter to its threshold.
    DirectoryBudget,
    /// The directory itself reported the account locked.
    DirectoryLocked,
    /// The same wrong password was already tried recently.
    KnownBadPassword,
    /// The password is being sprayed across accounts.
    SprayedPassword,
    /// The address or its prefix is blocked for failing too often or against too many accounts.
    SourceBlocked,
    /// The address sends requests too fast.
    RateLimited,
    /// The address is in a `sources.blocked` network.
    BlockedNetwork,
    /// Too many attempts are in flight for the engine to account for another one.
    Overloaded,
    /// The shared store (Redis) cannot be reached and the policy's `fail_mode` is `closed`.
    StoreUnavailable,
}

impl Reason {
    /// Every reason, in a fixed order (metric labels come from this bounded set).
    pub const ALL: [Reason; 10] = [
        Reason::AccountLocked,
        Reason::DirectoryBudget,
        Reason::DirectoryLocked,
        Reason::KnownBadPassword,
        Reason::SprayedPassword,
        Reason::SourceBlocked,
        Reason::RateLimited,
        Reason::BlockedNetwork,
        Reason::Overloaded,
        Reason::StoreUnavailable,
    ];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AccountLocked => "account_locked",
            Reason::DirectoryBudget => "directory_budget",
            Reason::DirectoryLocked => "directory_locked",
            Reason::KnownBadPassword => "known_bad_password",
            Reason::SprayedPassword => "sprayed_password",
            Reason::SourceBlocked => "source_blocked",
            Reason::RateLimited => "rate_limited",
            Reason::BlockedNetwork => "blocked_network",
            Reason::Overloaded => "overloaded",
            Reason::StoreUnavailable => "store_unavailable",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The counter behind a non-forward decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    /// Which counter (`unfamiliar_failures`, `directory_bad_count`, `source_failures`, ...).
    pub counter: &'static str,
    /// Its value when it fired.
    pub value: u64,
    /// The limit it reached.
    pub limit: u64,
}

/// The engine's answer to one attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// What the caller must do. In `log_only` mode this is always `Forward`.
    pub verdict: Verdict,
    /// What the policy decided; differs from `verdict` only in `log_only` mode.
    pub assessed: Verdict,
    /// Why, for every assessed non-forward.
    pub reason: Option<Reason>,
    /// When a retry may succeed, where that is known.
    pub retry_after: Option<Duration>,
    /// The counter that fired.
    pub fired: Option<Fired>,
    /// How familiar the source is to the account (unfamiliar when the account was not reached).
    pub familiarity: Familiarity,
    /// The id to report the outcome with, when the attempt is forwarded.
    pub attempt_id: Option<u64>,
}

/// What the agent (the directory) answered for a forwarded attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The password was right.
    Success,
    /// The password was wrong: the only result that counts as a failure.
    WrongPassword,
    /// No such account.
    UnknownUser,
    /// The directory reports the account locked.
    Locked,
    /// The account is disabled.
    Disabled,
    /// The password or account has expired.
    Expired,
    /// The password was right but must be changed.
    MustChangePassword,
    /// The directory could not be reached.
    DirectoryUnreachable,
    /// The agent did not answer in time.
    Timeout,
    /// Any other agent fault.
    Error,
}

impl Outcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [Outcome; 10] = [
        Outcome::Success,
        Outcome::WrongPassword,
        Outcome::UnknownUser,
        Outcome::Locked,
        Outcome::Disabled,
        Outcome::Expired,
        Outcome::MustChangePassword,
        Outcome::DirectoryUnreachable,
        Outcome::Timeout,
        Outcome::Error,
    ];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::WrongPassword => "wrong_password",
            Outcome::UnknownUser => "unknown_user",
            Outcome::Locked => "locked",
            Outcome::Disabled => "disabled",
            Outcome::Expired => "expired",
            Outcome::MustChangePassword => "must_change_password",
            Outcome::DirectoryUnreachable => "directory_unreachable",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown result {s:?}; expected one of {}",
                    Outcome::ALL.map(|o| o.as_str()).join(", ")
                )
            })
    }
}
