//! Dashboard sign-in sessions: a random id in an HttpOnly, SameSite=Strict cookie, kept here with
//! an absolute expiry and a per-session CSRF token.
//!
//! Invariants: the admin token is only ever compared (in constant time), never stored in a
//! session or a cookie; a session id is 32 random bytes from the OS, and the server keeps only its
//! blake3 hash, so the table is looked up by hash (timing reveals nothing about a live id) and
//! the stored hash is then compared in constant time. At most [`MAX_SESSIONS`] live sessions are
//! kept: expired ones are purged on every sign-in, and when the table is still full the session
//! closest to expiry is dropped.

use rand::RngCore;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "portcullis_session";
/// The header state-changing dashboard requests carry the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after sign-in: 8 hours.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Live sessions kept at most.
pub const MAX_SESSIONS: usize = 256;

struct Session {
    hash: [u8; 32],
    csrf: String,
    expires: Instant,
}

/// The live sessions. See the module docs.
#[derive(Default)]
pub struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
    /// Failed sign-ins per client address.
    pub signins: super::throttle::SignInThrottle,
}

/// A signed-in session, as a request sees it.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// The token state-changing requests must send in [`CSRF_HEADER`].
    pub csrf: String,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hash(id: &str) -> [u8; 32] {
    *blake3::hash(id.as_bytes()).as_bytes()
}

impl Sessions {
    /// Starts a session at `now`; returns its id (for the cookie) and CSRF token.
    pub fn create(&self, now: Instant) -> (String, SessionInfo) {
        let id = random_hex();
        let csrf = random_hex();
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|_, s| s.expires > now);
        if t.len() >= MAX_SESSIONS {
            if let Some(k) = t.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                t.remove(&k);
            }
        }
        let h = hash(&id);
        t.insert(
            h,
            Session {
                hash: h,
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        (id, SessionInfo { csrf })
    }

    /// The live session with this id at `now`, if any.
    pub fn get(&self, id: &str, now: Instant) -> Option<SessionInfo> {
        let h = hash(id);
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let s = t.get(&h)?;
        (bool::from(s.hash.ct_eq(&h)) && s.expires > now).then(|| SessionInfo {
            csrf: s.csrf.clone(),
        })
    }

    /// Ends the session with this id (sign-out).
    pub fn remove(&self, id: &str) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.remove(&hash(id));
    }

    /// Live and expired sessions held (for tests).
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `given` equals the session's CSRF token, in constant time.
pub fn csrf_matches(session: &SessionInfo, given: Option<&str>) -> bool {
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(session.csrf.as_bytes())))
}

/// The session id in a `Cookie` header, if any.
pub fn cookie_value(header: Option<&str>) -> Option<&str> {
    header?
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_it_expires_or_signs_out() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, info) = s.create(t0);
        assert_eq!(id.len(), 64);
        assert_ne!(id, info.csrf);
        assert!(s.get(&id, t0).is_some());
        assert!(s.get("not-a-session", t0).is_none());
        assert!(s.get(&id, t0 + SESSION_TTL).is_none(), "expired");
        s.remove(&id);
        assert!(s.get(&id, t0).is_none(), "signed out");
    }

    #[test]
    fn keeps_at_most_max_sessions() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (first, _) = s.create(t0);
        for i in 0..MAX_SESSIONS {
            s.create(t0 + Duration::from_millis(i as u64 + 1));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&first, t0).is_none(), "the oldest went first");
    }

    #[test]
    fn csrf_and_cookie_parsing() {
        let info = SessionInfo { csrf: "abc".into() };
        assert!(csrf_matches(&info, Some("abc")));
        assert!(!csrf_matches(&info, Some("abd")));
        assert!(!csrf_matches(&info, None));
        let h = "a=1; portcullis_session=xyz ; b=2";
        assert_eq!(cookie_value(Some(h)), Some("xyz"));
        assert_eq!(cookie_value(Some("a=1")), None);
        assert_eq!(cookie_value(None), None);
    }
}
