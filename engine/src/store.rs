//! Durable state: a small store trait with an embedded sled implementation.
//!
//! The engine keeps hot state in memory and writes behind: [`crate::Engine::flush`] hands the
//! store a [`Batch`] of records that changed (lockouts, directory mirrors, familiar locations,
//! remembered wrong fingerprints as keyed hashes, sprayed fingerprints as keyed hashes, source
//! blocks). A record is an opaque key and a bincode value; the store never interprets them.
//! Invariant: each tree's share of a batch is applied atomically, and `apply` returns only once
//! the batch is durable (sled is flushed).
//!
//! # Faults at run time
//! After an I/O error (a full disk, a failing device) sled 0.34 keeps the error for good: every
//! later write returns it (`Config::global_error`, reset only when a store is opened). So a failed
//! `apply` marks the store broken, and the next `apply` drops the broken handle and reopens the
//! directory in place (sled recovers its log to the last durable write) before writing. The
//! engine keeps what a failed `apply` did not write marked as changed
//! ([`crate::Engine::flush`]), so nothing is lost once writes succeed again.

use crate::error::{Error, Result};
use crate::keys::KeyScheme;
use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The kinds of record, one sled tree each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Per-account state.
    Account,
    /// Per-source blocks.
    Source,
    /// Per-fingerprint spray state.
    Spray,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Account, Kind::Source, Kind::Spray];

    /// The tree name.
    pub fn tree(self) -> &'static str {
        match self {
            Kind::Account => "accounts",
            Kind::Source => "sources",
            Kind::Spray => "sprays",
        }
    }
}

/// Records to write (`Some(value)`) and remove (`None`), applied together and in order.
#[derive(Debug, Default)]
pub struct Batch {
    /// The writes, in order.
    pub ops: Vec<(Kind, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Queues an insert or replace.
    pub fn put(&mut self, kind: Kind, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((kind, key, Some(value)));
    }

    /// Queues a removal.
    pub fn remove(&mut self, kind: Kind, key: Vec<u8>) {
        self.ops.push((kind, key, None));
    }
}

/// Where the engine's durable state lives.
pub trait Store: Send + Sync {
    /// Every record of `kind`.
    fn load(&self, kind: Kind) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Writes `batch` durably.
    fn apply(&self, batch: Batch) -> Result<()>;
    /// The per-installation secret that keys every hash, created on first use.
    fn secret(&self) -> Result<[u8; 32]>;
    /// The scheme the store's records are keyed with ([`KeyScheme`]), recorded on first use:
    /// `preferred` for a store that holds no record yet, [`KeyScheme::Blake3`] for one written
    /// before schemes were recorded (records and no scheme).
    fn key_scheme(&self, preferred: KeyScheme) -> Result<KeyScheme>;
}

/// The embedded sled store.
pub struct SledStore {
    /// `None` after a reopen failed (the next `apply` tries again).
    db: RwLock<Option<sled::Db>>,
    /// The directory, for reopening; `None` for a temporary store.
    dir: Option<PathBuf>,
    /// The last write failed: reopen before the next one.
    broken: AtomicBool,
    /// Times the store was reopened after a fault.
    reopens: AtomicU64,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore> {
        Ok(SledStore {
            db: RwLock::new(Some(open_db(dir)?)),
            dir: Some(dir.to_path_buf()),
            broken: AtomicBool::new(false),
            reopens: AtomicU64::new(0),
        })
    }

    /// Times the store was reopened after a write fault, since it was opened.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    /// The open database, reopening it first when the last write failed.
    fn db(&self) -> Result<sled::Db> {
        if self.broken.load(Ordering::Acquire) {
            if let Some(dir) = &self.dir {
                let mut slot = self.db.write();
                if self.broken.load(Ordering::Acquire) {
                    // The old handle holds the directory's file lock: drop it first.
                    drop(slot.take());
                    *slot = Some(open_db(dir)?);
                    self.broken.store(false, Ordering::Release);
                    self.reopens.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.db.read().clone().ok_or_else(|| Error::Corrupt {
            key: "store".into(),
            reason: "not open".into(),
        })
    }

    /// Runs a write, marking the store broken when it fails.
    fn write<T>(&self, f: impl FnOnce(&sled::Db) -> Result<T>) -> Result<T> {
        let db = self.db()?;
        let out = f(&db);
        if out.is_err() {
            self.broken.store(true, Ordering::Release);
        }
        out
    }

    /// Opens a store that lives only in memory (tests, replay).
    pub fn temporary() -> Result<SledStore> {
        Ok(SledStore {
            db: RwLock::new(Some(sled::Config::new().temporary(true).open()?)),
            dir: None,
            broken: AtomicBool::new(false),
            reopens: AtomicU64::new(0),
        })
    }

    /// The installation secret if the store holds one (without creating it).
    pub fn stored_secret(&self) -> Result<Option<[u8; 32]>> {
        let v = self.db()?.open_tree("meta")?.get("secret")?;
        v.map(|v| {
            <[u8; 32]>::try_from(v.as_ref()).map_err(|_| Error::Corrupt {
                key: "meta/secret".into(),
                reason: format!("expected 32 bytes, found {}", v.len()),
            })
        })
        .transpose()
    }

    /// Number of records of `kind`.
    pub fn len(&self, kind: Kind) -> Result<usize> {
        Ok(self.db()?.open_tree(kind.tree())?.len())
    }
}

fn open_db(dir: &Path) -> Result<sled::Db> {
    // No background flusher: `apply` flushes itself, and without that thread the file lock is
    // released as soon as the store is dropped (a reopen in the same process then works).
    let config = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None);
    // A store just dropped in this process can hold its file lock for a moment (sled's
    // threads wind down asynchronously): retry briefly, then report the lock clearly.
    let mut tries = 0;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && tries < 50 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Store for SledStore {
    fn load(&self, kind: Kind) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let tree = self.db()?.open_tree(kind.tree())?;
        let mut out = Vec::with_capacity(tree.len());
        for item in tree.iter() {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(|db| {
            for kind in Kind::ALL {
                let mut b = sled::Batch::default();
                let mut any = false;
                for (k, key, value) in &batch.ops {
                    if *k == kind {
                        match value {
                            Some(v) => b.insert(key.as_slice(), v.as_slice()),
                            None => b.remove(key.as_slice()),
                        }
                        any = true;
                    }
                }
                if any {
                    db.open_tree(kind.tree())?.apply_batch(b)?;
                }
            }
            db.flush()?;
            Ok(())
        })
    }

    fn secret(&self) -> Result<[u8; 32]> {
        let db = self.db()?;
        let meta = db.open_tree("meta")?;
        if let Some(v) = meta.get("secret")? {
            return <[u8; 32]>::try_from(v.as_ref()).map_err(|_| Error::Corrupt {
                key: "meta/secret".into(),
                reason: format!("expected 32 bytes, found {}", v.len()),
            });
        }
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        // Another process may race us: keep whichever secret landed first.
        match meta.compare_and_swap("secret", None as Option<&[u8]>, Some(&key[..]))? {
            Ok(()) => {
                db.flush()?;
                Ok(key)
            }
            Err(cas) => {
                let v = cas.current.ok_or_else(|| Error::Corrupt {
                    key: "meta/secret".into(),
                    reason: "vanished during creation".into(),
                })?;
                <[u8; 32]>::try_from(v.as_ref()).map_err(|_| Error::Corrupt {
                    key: "meta/secret".into(),
                    reason: "wrong length".into(),
                })
            }
        }
    }

    fn key_scheme(&self, preferred: KeyScheme) -> Result<KeyScheme> {
        let db = self.db()?;
        let meta = db.open_tree("meta")?;
        if let Some(v) = meta.get("key-scheme")? {
            return KeyScheme::parse(&v).ok_or_else(|| Error::Corrupt {
                key: "meta/key-scheme".into(),
                reason: format!(
                    "unknown scheme {:?} (written by a newer version?)",
                    String::from_utf8_lossy(&v)
                ),
            });
        }
        let mut written = false;
        for kind in Kind::ALL {
            written |= !db.open_tree(kind.tree())?.is_empty();
        }
        let scheme = if written {
            KeyScheme::Blake3
        } else {
            preferred
        };
        meta.insert("key-scheme", scheme.as_str())?;
        db.flush()?;
        Ok(scheme)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Reopens a store just dropped: sled's background flusher may hold the directory lock for a
    /// moment after the drop, so poll with a deadline.
    fn reopen(dir: &Path) -> SledStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match SledStore::open(dir) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() > deadline => panic!("reopen: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }

    #[test]
    fn secret_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = SledStore::open(dir.path()).unwrap().secret().unwrap();
        let again = reopen(dir.path()).secret().unwrap();
        assert_eq!(first, again);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Model-based: random batches applied to sled and to a HashMap agree after reopening.
        #[test]
        fn sled_store_matches_a_hashmap(ops in proptest::collection::vec((0u8..3, 0u8..16, proptest::option::of(any::<u16>())), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let mut model: HashMap<(u8, u8), u16> = HashMap::new();
            {
                let store = SledStore::open(dir.path()).unwrap();
                for chunk in ops.chunks(7) {
                    let mut batch = Batch::default();
                    for &(kind, key, value) in chunk {
                        let k = Kind::ALL[kind as usize];
                        match value {
                            Some(v) => { batch.put(k, vec![key], v.to_be_bytes().to_vec()); model.insert((kind, key), v); }
                            None => { batch.remove(k, vec![key]); model.remove(&(kind, key)); }
                        }
                    }
                    store.apply(batch).unwrap();
                }
            }
            let store = reopen(dir.path());
            let mut found: HashMap<(u8, u8), u16> = HashMap::new();
            for (i, kind) in Kind::ALL.iter().enumerate() {
                for (k, v) in store.load(*kind).unwrap() {
                    found.insert((i as u8, k[0]), u16::from_be_bytes([v[0], v[1]]));
                }
            }
            prop_assert_eq!(found, model);
        }
    }
}
