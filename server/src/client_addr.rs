//! The address of the client behind an HTTP request: the TCP peer, or, when the peer is a
//! configured trusted proxy (`--trusted-proxy`), the address that proxy forwarded in
//! `Forwarded: for=` or `X-Forwarded-For`.
//!
//! Invariant: a forwarded-address header is believed only from a trusted peer. Anyone can write
//! `X-Forwarded-For: 1.2.3.4`; believing it from an untrusted peer would let a client pick the
//! address a throttle counts it under. The chain is read from the right (the hop nearest to us):
//! trusted proxies are skipped and the first address not among them is the client; an entry that
//! does not parse ends the walk at the last hop known good.

use crate::service::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

/// The client's address, as [`client_ip`] decides it; `None` when the request came without a
/// socket (tests driving the router directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientAddr(peer.map(|p| {
            client_ip(p, &parts.headers, &state.config.trusted_proxies)
        })))
    }
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

/// One address of a forwarded chain: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`,
/// `2001:db8::1`, optionally quoted. `None` for `unknown`, obfuscated names and garbage.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    let inner = s.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The forwarded chain, leftmost (the original client) first: `Forwarded` when present (RFC
/// 7239, every `for=`), else `X-Forwarded-For`. Entries that do not parse are kept as `None`.
fn chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|elem| {
                elem.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then(|| parse_hop(v))
                })
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(s) => s.split(',').map(parse_hop).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// The client's address: `peer` unless `peer` is in `proxies`, then the nearest forwarded
/// address that is not itself a trusted proxy (see the module docs).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted(client, proxies) {
        return client;
    }
    for hop in chain(headers).into_iter().rev() {
        match hop {
            Some(ip) => {
                client = ip;
                if !trusted(ip, proxies) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn ignores_forwarded_headers_from_an_untrusted_peer() {
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("forwarded", "for=192.0.2.2"),
        ]);
        assert_eq!(client_ip(ip("203.0.113.5"), &h, &[]), ip("203.0.113.5"));
        let proxies = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("203.0.113.5"), &h, &proxies),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn believes_a_trusted_proxy_and_skips_trusted_hops_from_the_right() {
        let proxies = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.9, 192.0.2.1, 10.1.1.1")]);
        // The client chose the leftmost entry itself; the nearest untrusted hop is 192.0.2.1.
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies), ip("192.0.2.1"));
        let h = headers(&[(
            "forwarded",
            "for=198.51.100.9, for=\"[2001:db8::7]:4711\";proto=https",
        )]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies), ip("2001:db8::7"));
        // An IPv4-mapped peer counts as its IPv4 address.
        let h = headers(&[("x-forwarded-for", "192.0.2.4:5000")]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), &h, &proxies),
            ip("192.0.2.4")
        );
    }

    #[test]
    fn stops_at_an_entry_that_does_not_parse() {
        let proxies = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "192.0.2.1, unknown, 10.0.0.9")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies), ip("10.0.0.9"));
        let h = headers(&[]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies), ip("10.0.0.2"));
    }
}
