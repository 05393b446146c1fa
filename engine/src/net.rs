//! Source addresses and network prefixes.
//!
//! Every address is canonicalised first: an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is the
//! same host as `192.0.2.1` and shares its counters. A [`NetKey`] is an address masked to a prefix
//! length; keys of different lengths or families never compare equal.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The canonical form of a client address (IPv4-mapped IPv6 becomes IPv4).
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Parses a client address as a broker may send it: IPv4, IPv6, IPv6 with a `%zone` (dropped),
/// or bracketed IPv6. Returns the canonical address.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    let s = match s.split_once('%') {
        Some((addr, zone)) if !zone.is_empty() && addr.contains(':') => addr,
        Some(_) => return None,
        None => s,
    };
    s.parse::<IpAddr>().ok().map(canonical)
}

/// An address masked to a prefix length: the key of a source counter.
///
/// The bits are held as two `u64` halves (high first, so the derived order is the order of the
/// 128-bit value) to keep the key 8-aligned and 24 bytes: it sits in every source-map entry and
/// every familiar location. It serialises as the 128-bit value it stands for ([`NetKeyRecord`]),
/// the form the stores have always held.
#[derive(Clone, Copy, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "NetKeyRecord", into = "NetKeyRecord")]
pub struct NetKey {
    hi: u64,
    lo: u64,
    len: u8,
    v6: bool,
}

/// The serialised form of a [`NetKey`].
#[derive(Clone, Copy, Serialize, Deserialize)]
struct NetKeyRecord {
    bits: u128,
    len: u8,
    v6: bool,
}

impl From<NetKeyRecord> for NetKey {
    fn from(r: NetKeyRecord) -> Self {
        NetKey::from_bits(r.bits, r.len, r.v6)
    }
}

impl From<NetKey> for NetKeyRecord {
    fn from(k: NetKey) -> Self {
        NetKeyRecord {
            bits: k.bits(),
            len: k.len,
            v6: k.v6,
        }
    }
}

impl NetKey {
    /// `ip` masked to its first `len` bits (clamped to the family's width).
    pub fn new(ip: IpAddr, len: u8) -> Self {
        match canonical(ip) {
            IpAddr::V4(a) => NetKey::v4(u32::from(a), len),
            IpAddr::V6(a) => NetKey::v6(u128::from(a), len),
        }
    }

    /// The IPv4 address `v` masked to `len` bits (at most 32).
    #[inline]
    pub(crate) fn v4(v: u32, len: u8) -> Self {
        let len = len.min(32);
        let masked = if len == 0 {
            0
        } else {
            v & (u32::MAX << (32 - len))
        };
        NetKey::from_bits(u128::from(masked), len, false)
    }

    /// The IPv6 address `v` (not IPv4-mapped) masked to `len` bits (at most 128).
    #[inline]
    pub(crate) fn v6(v: u128, len: u8) -> Self {
        let len = len.min(128);
        let masked = if len == 0 {
            0
        } else {
            v & (u128::MAX << (128 - len))
        };
        NetKey::from_bits(masked, len, true)
    }

    fn from_bits(bits: u128, len: u8, v6: bool) -> Self {
        NetKey {
            hi: (bits >> 64) as u64,
            lo: bits as u64,
            len,
            v6,
        }
    }

    /// The length and family in one word, as the hashers take them.
    #[inline]
    pub(crate) fn tag(&self) -> u16 {
        u16::from(self.len) | (u16::from(self.v6) << 8)
    }

    pub(crate) fn bits(&self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }

    /// The key of the single address `ip`.
    pub fn host(ip: IpAddr) -> Self {
        Self::new(ip, 128)
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is a whole address rather than a wider prefix.
    pub fn is_host(&self) -> bool {
        self.len == if self.v6 { 128 } else { 32 }
    }

    /// Whether this key's network contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let other = NetKey::new(ip, self.len);
        other == *self
    }

    /// The network as an [`IpNet`].
    pub fn to_ipnet(&self) -> IpNet {
        if self.v6 {
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(self.bits()), self.len).expect("len <= 128"))
        } else {
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(self.lo as u32), self.len).expect("len <= 32"))
        }
    }
}

impl fmt::Display for NetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.to_ipnet().addr())
        } else {
            write!(f, "{}", self.to_ipnet())
        }
    }
}

/// Field by field, as a derived `PartialEq` would, without a branch per field: keys are
/// compared in every familiar-list walk and map probe.
impl PartialEq for NetKey {
    #[inline]
    fn eq(&self, o: &NetKey) -> bool {
        ((self.hi ^ o.hi) | (self.lo ^ o.lo) | u64::from(self.tag() ^ o.tag())) == 0
    }
}

/// Two words for the hasher instead of four: the address bits in one, and the length and family
/// in the other (as `Eq` compares them). Equal keys hash alike; the maps' hashers are seeded.
impl Hash for NetKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(self.bits());
        state.write_u16(self.tag());
    }
}

impl fmt::Debug for NetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_ipv6_is_the_same_host_as_ipv4() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(NetKey::host(v4), NetKey::host(mapped));
        assert_eq!(NetKey::new(v4, 24), NetKey::new(mapped, 24));
        assert_eq!(parse_ip("::ffff:192.0.2.7"), Some(v4));
    }

    #[test]
    fn prefixes_group_neighbours_and_split_families() {
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.254".parse().unwrap();
        let c: IpAddr = "198.51.101.1".parse().unwrap();
        assert_eq!(NetKey::new(a, 24), NetKey::new(b, 24));
        assert_ne!(NetKey::new(a, 24), NetKey::new(c, 24));
        assert_eq!(NetKey::new(a, 24).to_string(), "198.51.100.0/24");
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(NetKey::new(x, 64), NetKey::new(y, 64));
        assert!(NetKey::new(x, 48).contains(y));
        assert_ne!(
            NetKey::new("0.0.0.0".parse().unwrap(), 0),
            NetKey::new("::".parse().unwrap(), 0)
        );
    }

    #[test]
    fn keys_are_24_bytes_and_serialise_as_the_128_bit_value() {
        assert_eq!(std::mem::size_of::<NetKey>(), 24);
        let k = NetKey::new("2001:db8:1:2::1".parse().unwrap(), 64);
        let record = NetKeyRecord {
            bits: 0x2001_0db8_0001_0002_0000_0000_0000_0000,
            len: 64,
            v6: true,
        };
        let bytes = bincode::serialize(&k).unwrap();
        assert_eq!(bytes, bincode::serialize(&record).unwrap());
        assert_eq!(bincode::deserialize::<NetKey>(&bytes).unwrap(), k);
        let v4 = NetKey::new("198.51.100.7".parse().unwrap(), 24);
        let back: NetKey = bincode::deserialize(&bincode::serialize(&v4).unwrap()).unwrap();
        assert_eq!(back, v4);
        assert_eq!(back.to_string(), "198.51.100.0/24");
    }

    #[test]
    fn parses_zone_ids_and_brackets() {
        assert_eq!(parse_ip("fe80::1%eth0"), "fe80::1".parse().ok());
        assert_eq!(parse_ip("[2001:db8::1]"), "2001:db8::1".parse().ok());
        assert_eq!(parse_ip("10.0.0.1%eth0"), None);
        assert_eq!(parse_ip("not an address"), None);
        assert_eq!(parse_ip("fe80::1%"), None);
    }
}
