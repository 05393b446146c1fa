//! Throttling of dashboard sign-ins per client address, so the admin token cannot be guessed at
//! speed from one place.
//!
//! Each address may fail [`MAX_FAILURES`] times per [`WINDOW`]; after that every sign-in from it,
//! right or wrong, is refused (429) until the window that started with its first failure ends. A
//! success clears the address. The address is the client's as [`crate::client_addr`] decides it,
//! so a forwarded header counts only from a trusted proxy. The table holds at most
//! [`MAX_TRACKED`] addresses: expired windows are purged when it fills, then the oldest window
//! goes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins one address may make per window.
pub const MAX_FAILURES: u32 = 5;
/// The window failures are counted in: one minute.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most.
pub const MAX_TRACKED: usize = 4096;

/// The failures per address. `None` is a request without a socket (tests on the router).
#[derive(Default)]
pub struct SignInThrottle {
    table: Mutex<HashMap<Option<IpAddr>, (u32, Instant)>>,
}

impl SignInThrottle {
    /// How long `client` must still wait at `now`, or `None` when it may try.
    pub fn blocked(&self, client: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let (n, start) = t.get(&client)?;
        let end = *start + WINDOW;
        (*n >= MAX_FAILURES && end > now).then(|| end - now)
    }

    /// Counts a failed sign-in of `client` at `now`.
    pub fn failed(&self, client: Option<IpAddr>, now: Instant) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() >= MAX_TRACKED && !t.contains_key(&client) {
            t.retain(|_, (_, start)| *start + WINDOW > now);
            if t.len() >= MAX_TRACKED {
                if let Some(k) = t.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| *k) {
                    t.remove(&k);
                }
            }
        }
        let e = t.entry(client).or_insert((0, now));
        if e.1 + WINDOW <= now {
            *e = (0, now);
        }
        e.0 += 1;
    }

    /// Forgets `client`'s failures after it signed in.
    pub fn succeeded(&self, client: Option<IpAddr>) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_an_address_after_max_failures_until_the_window_ends() {
        let th = SignInThrottle::default();
        let a = Some("192.0.2.1".parse().unwrap());
        let b = Some("192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(th.blocked(a, t0).is_none());
            th.failed(a, t0);
        }
        assert_eq!(th.blocked(a, t0), Some(WINDOW));
        assert!(
            th.blocked(b, t0).is_none(),
            "another address is not affected"
        );
        assert!(th.blocked(a, t0 + WINDOW).is_none(), "the window ended");
        th.failed(a, t0 + WINDOW);
        assert!(
            th.blocked(a, t0 + WINDOW).is_none(),
            "a new window starts at one"
        );
    }

    #[test]
    fn a_success_clears_the_address() {
        let th = SignInThrottle::default();
        let a = Some("192.0.2.1".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            th.failed(a, t0);
        }
        th.succeeded(a);
        th.failed(a, t0);
        assert!(th.blocked(a, t0).is_none());
    }
}
