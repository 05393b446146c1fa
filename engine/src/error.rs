//! The engine's one error type.
//!
//! Expected outcomes (a block, a wrong password answered by the engine) are not errors: they are
//! [`crate::Decision`] values. Errors are for input the engine cannot act on, refused policies, and
//! the store. No variant ever carries a password or a fingerprint.

use thiserror::Error;

/// Everything that can go wrong in the engine.
#[derive(Debug, Error)]
pub enum Error {
    /// An attempt or an outcome carried a field the engine cannot use.
    #[error("invalid `{field}`: {reason}")]
    InvalidInput {
        /// The field at fault, as named in the API (`user`, `ip`, `tenant`, ...).
        field: &'static str,
        /// What is wrong with it (never the value of a secret).
        reason: String,
    },
    /// An outcome named an attempt the engine does not know, or one already reported.
    #[error("unknown or already reported attempt id {0}")]
    UnknownAttempt(u64),
    /// The policy was refused; every problem found is listed, each naming its TOML key.
    #[error("policy refused:\n{}", .0.join("\n"))]
    Policy(Vec<String>),
    /// Too many tracked entries of one kind and none could be evicted.
    #[error("capacity reached for {0}")]
    Capacity(&'static str),
    /// The embedded store failed.
    #[error("store: {0}")]
    Store(#[from] sled::Error),
    /// A stored record could not be decoded (the store is corrupt or from another version).
    #[error("store record {key} is unreadable: {reason}")]
    Corrupt {
        /// Which record (tree and key, hex).
        key: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
