//! State written to sled survives the engine being dropped and reopened.

mod common;

use common::*;
use portcullis_engine::store::SledStore;
use portcullis_engine::{
    Engine, Familiarity, KeyScheme, Limits, Options, Outcome, Policy, Reason, Verdict,
};
use std::sync::Arc;

fn open(dir: &std::path::Path) -> Engine {
    open_preferring(dir, KeyScheme::default())
}

/// Opens a sled database that was just dropped. sled's flusher thread can still hold the
/// directory's file lock for a moment after the last handle goes (CI once saw `WouldBlock`), so
/// this tries again for up to five seconds before giving up with the last error.
fn reopen<T, E: std::fmt::Debug>(open: impl Fn() -> Result<T, E>) -> T {
    let mut tries = 0;
    loop {
        match open() {
            Ok(db) => return db,
            Err(e) if tries >= 250 => panic!("the store did not open: {e:?}"),
            Err(_) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// The engine over the sled store in `dir`, recording `scheme` if the store has none yet.
fn open_preferring(dir: &std::path::Path, scheme: KeyScheme) -> Engine {
    let store = Arc::new(reopen(|| SledStore::open(dir)));
    let secret = portcullis_engine::store::Store::secret(&*store).unwrap();
    Engine::new(
        Policy::default(),
        Options {
            secret,
            store: Some(store),
            limits: Limits::default(),
            key_scheme: scheme,
        },
    )
    .unwrap()
}

/// Signs in, locks an account out, sprays a password and gets a source blocked, then flushes.
fn write_history(e: &Engine) {
    sign_in(e, "olivia", "10.20.30.40", T0);
    for i in 0..6 {
        attempt(
            e,
            "olivia",
            &format!("198.18.{i}.1"),
            &format!("g{i}"),
            Outcome::WrongPassword,
            T0 + MIN + i * SEC,
        );
    }
    for i in 0..5 {
        attempt(
            e,
            &format!("sprayed{i}"),
            &format!("198.19.{i}.1"),
            "Spring2026",
            Outcome::WrongPassword,
            T0 + 40 * SEC + i * SEC,
        );
    }
    for i in 0..11 {
        attempt(
            e,
            &format!("target{i}"),
            "192.0.2.66",
            &format!("x{i}"),
            Outcome::WrongPassword,
            T0 + 20 * SEC + i * SEC,
        );
    }
    assert!(e.flush().unwrap() > 0);
}

/// What [`write_history`] did is still in force in `e`.
fn assert_history_kept(e: &Engine) {
    let now = T0 + MIN + 30 * SEC; // the lockout started at T0 + 1 min 5 s and lasts 60 s
    let d = attempt(
        e,
        "olivia",
        "198.18.50.1",
        "g9",
        Outcome::WrongPassword,
        now,
    );
    assert_eq!(
        d.reason,
        Some(Reason::AccountLocked),
        "the lockout is still in force at {now}: {d:?}"
    );
    let d = attempt(
        e,
        "olivia",
        "10.20.30.99",
        "right-password",
        Outcome::Success,
        now,
    );
    assert_eq!(
        (d.verdict, d.familiarity),
        (Verdict::Forward, Familiarity::Personal),
        "home is still familiar"
    );
    // Source counters are hot state (not persisted): let the address fail once more elsewhere.
    attempt(
        e,
        "somebody",
        "198.19.0.1",
        "zzz",
        Outcome::WrongPassword,
        now,
    );
    let d = attempt(
        e,
        "newvictim",
        "198.19.0.1",
        "Spring2026",
        Outcome::WrongPassword,
        now,
    );
    assert_eq!(
        d.reason,
        Some(Reason::SprayedPassword),
        "the sprayed password is still known"
    );
    let d = attempt(
        e,
        "target99",
        "192.0.2.66",
        "y",
        Outcome::WrongPassword,
        now,
    );
    assert_eq!(
        d.reason,
        Some(Reason::SourceBlocked),
        "the source block is still in force"
    );
}

#[test]
fn lockouts_familiar_locations_and_sprays_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    write_history(&open(dir.path())); // dropped: nothing but sled remains
    assert_history_kept(&open(dir.path()));
}

/// Sets (or with `None` removes) the key scheme the sled store in `dir` records, behind the
/// engine's back; returns what was recorded before.
fn set_recorded_scheme(dir: &std::path::Path, scheme: Option<&str>) -> Option<Vec<u8>> {
    let db = reopen(|| sled::open(dir));
    let meta = db.open_tree("meta").unwrap();
    let was = match scheme {
        Some(s) => meta.insert("key-scheme", s).unwrap(),
        None => meta.remove("key-scheme").unwrap(),
    };
    db.flush().unwrap();
    was.map(|v| v.to_vec())
}

#[test]
fn a_new_store_records_its_key_scheme_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_preferring(dir.path(), KeyScheme::SipHash);
    assert_eq!(e.key_scheme(), KeyScheme::SipHash);
    write_history(&e);
    drop(e);
    // The store's scheme wins over the one asked for: its records are keyed with it.
    let e = open_preferring(dir.path(), KeyScheme::Blake3);
    assert_eq!(e.key_scheme(), KeyScheme::SipHash);
    assert_history_kept(&e);
}

#[test]
fn a_store_written_before_key_schemes_were_recorded_keeps_its_blake3_keys() {
    let dir = tempfile::tempdir().unwrap();
    write_history(&open_preferring(dir.path(), KeyScheme::Blake3));
    // Such a store has records and no scheme.
    let was = set_recorded_scheme(dir.path(), None);
    assert_eq!(was.as_deref(), Some(&b"blake3"[..]));
    let e = open_preferring(dir.path(), KeyScheme::SipHash);
    assert_eq!(e.key_scheme(), KeyScheme::Blake3);
    assert_history_kept(&e);
}

#[test]
fn a_store_with_an_unknown_key_scheme_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    set_recorded_scheme(dir.path(), Some("argon9"));
    let store = Arc::new(reopen(|| SledStore::open(dir.path())));
    let secret = portcullis_engine::store::Store::secret(&*store).unwrap();
    let err = Engine::new(
        Policy::default(),
        Options {
            store: Some(store),
            ..Options::in_memory(secret)
        },
    )
    .err()
    .expect("an unknown scheme is refused")
    .to_string();
    assert!(
        err.contains("meta/key-scheme") && err.contains("argon9"),
        "{err}"
    );
}

#[test]
fn the_directory_mirror_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[defaults.lockout]\nthreshold = 9\nfamiliar_threshold = 9\n";
    {
        let store = Arc::new(reopen(|| SledStore::open(dir.path())));
        let secret = portcullis_engine::store::Store::secret(&*store).unwrap();
        let e = Engine::new(
            Policy::from_toml(toml).unwrap(),
            Options {
                secret,
                store: Some(store),
                limits: Limits::default(),
                key_scheme: KeyScheme::default(),
            },
        )
        .unwrap();
        for i in 0..6 {
            attempt(
                &e,
                "paul",
                &format!("198.18.{i}.1"),
                &format!("g{i}"),
                Outcome::WrongPassword,
                T0 + i * SEC,
            );
        }
        e.flush().unwrap();
    }
    let store = Arc::new(reopen(|| SledStore::open(dir.path())));
    let secret = portcullis_engine::store::Store::secret(&*store).unwrap();
    let e = Engine::new(
        Policy::from_toml(toml).unwrap(),
        Options {
            secret,
            store: Some(store),
            limits: Limits::default(),
            key_scheme: KeyScheme::default(),
        },
    )
    .unwrap();
    let d = attempt(
        &e,
        "paul",
        "198.18.99.1",
        "g99",
        Outcome::WrongPassword,
        T0 + MIN,
    );
    assert_eq!(
        d.reason,
        Some(Reason::DirectoryBudget),
        "six bad passwords are still counted: {d:?}"
    );
}

/// A real sled store whose writes can be made to fail, as a full disk would.
struct Faulty {
    inner: SledStore,
    failing: std::sync::atomic::AtomicBool,
}

impl portcullis_engine::store::Store for Faulty {
    fn load(
        &self,
        kind: portcullis_engine::store::Kind,
    ) -> portcullis_engine::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.load(kind)
    }
    fn apply(&self, batch: portcullis_engine::store::Batch) -> portcullis_engine::Result<()> {
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(portcullis_engine::Error::Io {
                path: "test".into(),
                source: std::io::Error::other("no space left on device"),
            });
        }
        self.inner.apply(batch)
    }
    fn secret(&self) -> portcullis_engine::Result<[u8; 32]> {
        self.inner.secret()
    }
    fn key_scheme(&self, preferred: KeyScheme) -> portcullis_engine::Result<KeyScheme> {
        self.inner.key_scheme(preferred)
    }
}

#[test]
fn a_failed_flush_keeps_its_records_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Arc::new(Faulty {
            inner: reopen(|| SledStore::open(dir.path())),
            failing: true.into(),
        });
        let secret = portcullis_engine::store::Store::secret(&*store).unwrap();
        let e = Engine::new(
            Policy::default(),
            Options {
                secret,
                store: Some(store.clone()),
                limits: Limits::default(),
                key_scheme: KeyScheme::default(),
            },
        )
        .unwrap();
        sign_in(&e, "olivia", "10.20.30.40", T0);
        for i in 0..6 {
            attempt(
                &e,
                "olivia",
                &format!("198.18.{i}.1"),
                &format!("g{i}"),
                Outcome::WrongPassword,
                T0 + MIN + i * SEC,
            );
        }
        let pending = e.unflushed();
        assert!(pending > 0);
        assert!(e.flush().is_err(), "the store refuses writes");
        assert_eq!(e.unflushed(), pending, "nothing was dropped by the failure");
        store
            .failing
            .store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(e.flush().unwrap(), pending);
        assert_eq!(e.unflushed(), 0);
    }
    let e = open(dir.path());
    let d = attempt(
        &e,
        "olivia",
        "198.18.50.1",
        "g9",
        Outcome::WrongPassword,
        T0 + MIN + 30 * SEC,
    );
    assert_eq!(d.reason, Some(Reason::AccountLocked), "{d:?}");
}
