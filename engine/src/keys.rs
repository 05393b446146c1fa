//! Keyed hashes: the key of an account (tenant and normalised name) and the only form in which a
//! password fingerprint is kept, both derived from the installation secret.
//!
//! Two schemes compute them:
//! - [`KeyScheme::SipHash`], the default: SipHash-1-3 (128-bit) for account keys and SipHash-2-4
//!   for fingerprint hashes, each keyed with its own 128-bit subkey derived from the secret with
//!   BLAKE3's key derivation. SipHash is a keyed pseudorandom function built for short inputs:
//!   without the secret, a stored hash neither reveals a fingerprint nor can be matched against a
//!   guessed one, and nobody can choose names that collide. It costs about a tenth of a BLAKE3
//!   call on a 30-byte input, and both hashes are computed on every attempt.
//! - [`KeyScheme::Blake3`]: BLAKE3 keyed hashes of the same inputs, as every store written before
//!   the scheme was recorded holds them; the shared Redis store keeps using it.
//!
//! Invariant: every record of one store is keyed with one scheme. A store records its scheme on
//! first use ([`crate::store::Store::key_scheme`]), and an engine over a store always takes the
//! store's, so a store's records are never looked up with another scheme's keys.

use siphasher::sip::SipHasher24;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher as _;

/// How account keys and fingerprint hashes are computed. See the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyScheme {
    /// BLAKE3 keyed hashes (stores from before schemes were recorded; the Redis store).
    Blake3,
    /// SipHash-1-3 account keys and SipHash-2-4 fingerprint hashes, with derived subkeys.
    #[default]
    SipHash,
}

impl KeyScheme {
    /// The name recorded in a store.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScheme::Blake3 => "blake3",
            KeyScheme::SipHash => "siphash",
        }
    }

    /// The scheme a store recorded, if it is one this build knows.
    pub fn parse(s: &[u8]) -> Option<KeyScheme> {
        match s {
            b"blake3" => Some(KeyScheme::Blake3),
            b"siphash" => Some(KeyScheme::SipHash),
            _ => None,
        }
    }
}

/// One tenant's keys: under SipHash, hashers that have taken in the tenant's name and separator
/// already, so that an attempt hashes only its own name and fingerprint. SipHash is a stream
/// over the bytes, so a key is the hash of `tenant NUL input` in one piece, as stores hold it.
#[derive(Clone, Copy)]
pub(crate) struct TenantKeys {
    sip: Option<(SipHasher13, SipHasher24)>,
}

/// The keys of one engine: the scheme, the secret and the subkeys derived from it.
#[derive(Clone)]
pub(crate) struct Keys {
    scheme: KeyScheme,
    secret: [u8; 32],
    account: (u64, u64),
    fingerprint: (u64, u64),
}

impl Keys {
    /// The keys of `scheme` under `secret`.
    pub(crate) fn new(secret: [u8; 32], scheme: KeyScheme) -> Keys {
        let sub = |context: &str| {
            let k = blake3::derive_key(context, &secret);
            (
                u64::from_le_bytes(k[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(k[8..16].try_into().expect("8 bytes")),
            )
        };
        Keys {
            scheme,
            secret,
            account: sub("portcullis 2026-11 account key siphash-1-3"),
            fingerprint: sub("portcullis 2026-11 fingerprint hash siphash-2-4"),
        }
    }

    /// The scheme in use.
    pub(crate) fn scheme(&self) -> KeyScheme {
        self.scheme
    }

    /// The key of account `name` (normalised) in `tenant`.
    #[inline]
    pub(crate) fn account(&self, tenant: &str, name: &str) -> u128 {
        self.account_in(&self.for_tenant(tenant), tenant, name)
    }

    /// The keyed hash of fingerprint `fp` in `tenant`.
    #[inline]
    pub(crate) fn fingerprint(&self, tenant: &str, fp: &[u8]) -> u64 {
        self.fingerprint_in(&self.for_tenant(tenant), tenant, fp)
    }

    /// The keys of `tenant`, made once per tenant.
    pub(crate) fn for_tenant(&self, tenant: &str) -> TenantKeys {
        let sip = (self.scheme == KeyScheme::SipHash).then(|| {
            let mut a = SipHasher13::new_with_keys(self.account.0, self.account.1);
            // Tenant names cannot hold a NUL, so the separator keeps the pairs apart.
            a.write(tenant.as_bytes());
            a.write(&[0]);
            let mut f = SipHasher24::new_with_keys(self.fingerprint.0, self.fingerprint.1);
            f.write(tenant.as_bytes());
            f.write(&[0]);
            (a, f)
        });
        TenantKeys { sip }
    }

    /// The key of account `name` (normalised) in `tenant`, the tenant `tk` was made for.
    #[inline]
    pub(crate) fn account_in(&self, tk: &TenantKeys, tenant: &str, name: &str) -> u128 {
        match tk.sip {
            Some((mut h, _)) => {
                h.write(name.as_bytes());
                h.finish128().as_u128()
            }
            None => {
                let out = blake3_keyed(
                    &self.secret,
                    &[b"acct\0", tenant.as_bytes(), b"\0", name.as_bytes()],
                );
                u128::from_le_bytes(out.as_bytes()[..16].try_into().expect("16 bytes"))
            }
        }
    }

    /// The keyed hash of fingerprint `fp` in `tenant`, the tenant `tk` was made for.
    #[inline]
    pub(crate) fn fingerprint_in(&self, tk: &TenantKeys, tenant: &str, fp: &[u8]) -> u64 {
        match tk.sip {
            Some((_, mut h)) => {
                h.write(fp);
                h.finish()
            }
            None => {
                let out = blake3_keyed(&self.secret, &[b"fp\0", tenant.as_bytes(), b"\0", fp]);
                u64::from_le_bytes(out.as_bytes()[..8].try_into().expect("8 bytes"))
            }
        }
    }
}

/// BLAKE3 keyed hash of the concatenation of `parts`. Short inputs (the common case) are put
/// together on the stack and hashed in one call, which skips the streaming hasher's set-up and
/// per-update work; the output is the same as feeding the parts to a keyed `blake3::Hasher`.
fn blake3_keyed(key: &[u8; 32], parts: &[&[u8]]) -> blake3::Hash {
    const STACK: usize = 512;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len <= STACK {
        let mut buf = [0u8; STACK];
        let mut at = 0;
        for p in parts {
            buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        blake3::keyed_hash(key, &buf[..len])
    } else {
        let mut h = blake3::Hasher::new_keyed(key);
        for p in parts {
            h.update(p);
        }
        h.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];

    #[test]
    fn blake3_scheme_keeps_the_keys_stores_were_written_with() {
        // The values stores written before schemes were recorded hold: they must never change.
        let k = Keys::new(SECRET, KeyScheme::Blake3);
        let mut h = blake3::Hasher::new_keyed(&SECRET);
        h.update(b"acct\0acme\0alice");
        let want = u128::from_le_bytes(h.finalize().as_bytes()[..16].try_into().unwrap());
        assert_eq!(k.account("acme", "alice"), want);
        let mut h = blake3::Hasher::new_keyed(&SECRET);
        h.update(b"fp\0acme\0Spring2026!");
        let want = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap());
        assert_eq!(k.fingerprint("acme", b"Spring2026!"), want);
    }

    #[test]
    fn siphash_keys_depend_on_the_secret_tenant_and_input() {
        let k = Keys::new(SECRET, KeyScheme::SipHash);
        let other = Keys::new([8; 32], KeyScheme::SipHash);
        assert_eq!(k.account("acme", "alice"), k.account("acme", "alice"));
        assert_ne!(k.account("acme", "alice"), other.account("acme", "alice"));
        assert_ne!(k.account("acme", "alice"), k.account("acme", "alicf"));
        assert_ne!(k.account("acme", "alice"), k.account("acmf", "alice"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(k.account("ab", "c"), k.account("a", "bc"));
        assert_ne!(k.fingerprint("acme", b"x"), other.fingerprint("acme", b"x"));
        assert_ne!(k.fingerprint("acme", b"x"), k.fingerprint("acmf", b"x"));
    }

    #[test]
    fn siphash_keys_are_the_hash_of_tenant_nul_input_in_one_piece() {
        // The form stores hold: a change to how the tenant is taken in must not change a key.
        let k = Keys::new(SECRET, KeyScheme::SipHash);
        // Tenant names shorter than, equal to and longer than one 8-byte SipHash block.
        for tenant in ["a", "default", "contoso-europe"] {
            let tk = k.for_tenant(tenant);
            for name in [
                "",
                "x",
                "alice@contoso.com",
                "a-much-longer-name@example.org",
            ] {
                let whole = [tenant.as_bytes(), b"\0", name.as_bytes()].concat();
                let mut a = SipHasher13::new_with_keys(k.account.0, k.account.1);
                a.write(&whole);
                let mut f = SipHasher24::new_with_keys(k.fingerprint.0, k.fingerprint.1);
                f.write(&whole);
                let (want_a, want_f) = (a.finish128().as_u128(), f.finish());
                assert_eq!(k.account(tenant, name), want_a, "{tenant} {name}");
                assert_eq!(k.account_in(&tk, tenant, name), want_a, "{tenant} {name}");
                assert_eq!(
                    k.fingerprint(tenant, name.as_bytes()),
                    want_f,
                    "{tenant} {name}"
                );
                assert_eq!(
                    k.fingerprint_in(&tk, tenant, name.as_bytes()),
                    want_f,
                    "{tenant} {name}"
                );
            }
        }
    }

    #[test]
    fn the_schemes_give_different_keys() {
        let s = Keys::new(SECRET, KeyScheme::SipHash);
        let b = Keys::new(SECRET, KeyScheme::Blake3);
        assert_ne!(s.account("acme", "alice"), b.account("acme", "alice"));
        assert_ne!(s.fingerprint("acme", b"x"), b.fingerprint("acme", b"x"));
    }

    #[test]
    fn scheme_names_round_trip_and_unknown_ones_are_refused() {
        for s in [KeyScheme::Blake3, KeyScheme::SipHash] {
            assert_eq!(KeyScheme::parse(s.as_str().as_bytes()), Some(s));
        }
        assert_eq!(KeyScheme::parse(b"md5"), None);
    }
}
