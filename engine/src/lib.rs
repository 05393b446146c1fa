//! Portcullis engine: smart lockout that never trips the directory's lockout, and password-spray
//! defense, for the validation requests a hybrid sign-in broker queues for on-premises agents.
//!
//! The engine is sans-IO: no sockets, and no clock of its own. Every call takes the current
//! [`Timestamp`] from the caller; decisions are values ([`Decision`]), not errors.
//!
//! # Layout
//! - [`engine`]: [`Engine::check`] decides, [`Engine::outcome`] learns; caps and write-behind.
//! - [`state`]: per-account, per-source and per-fingerprint state and the rules' arithmetic,
//!   including the mirror of the directory's bad-password counter.
//! - [`policy`]: TOML policies, defaults and per-tenant overrides, validation.
//! - [`window`]: bounded sliding-window counters.
//! - [`normalize`], [`net`]: one account per name, one source per address and prefix.
//! - [`keys`]: the keyed hashes of account names and fingerprints, and their schemes.
//! - [`store`]: the store trait and the embedded sled store.
//! - [`trace`], [`synth`], [`replay`]: the trace format, a synthetic attack generator, and replay
//!   of a trace against a simulated directory with scoring.
//! - [`clock`]: timestamps and the injected clock.
//! - [`admin`]: operator views (lockouts, blocked sources, sprayed passwords, account explain)
//!   and actions (unlock, clear a source block).

mod accounts;
pub mod admin;
pub mod clock;
pub mod decision;
pub mod engine;
pub mod error;
mod filter;
pub mod keys;
pub mod net;
pub mod normalize;
mod pad;
mod pending;
pub mod policy;
mod rate;
pub mod replay;
pub mod rules;
pub mod state;
pub mod store;
pub mod synth;
pub mod trace;
pub mod window;

pub use clock::{Clock, ManualClock, Timestamp};
pub use decision::{Attempt, Decision, Fired, Outcome, Reason, Verdict};
pub use engine::{Engine, Limits, Options, OutcomeEffects, PreparedKeys, Preparer, Stats};
pub use error::{Error, Result};
pub use keys::KeyScheme;
pub use policy::{FailMode, FailPolicy, Familiarity, Mode, Policy, TenantPolicy};
