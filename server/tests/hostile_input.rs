//! Hostile sign-in names and client addresses: at the engine, and over HTTP against the real
//! binary. Every name is either decided or refused with a 400 naming its field, never a panic or
//! a 500; a huge name costs bounded memory (accounts are keyed by a hash, the stored name is
//! capped); a zone id or the IPv4-mapped IPv6 form of an address shares that address's counters.

mod common;

use common::*;
use portcullis_engine::normalize::MAX_NAME_BYTES;
use portcullis_engine::{Attempt, Engine, Options, Policy, Timestamp, Verdict};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

const MIB: usize = 1 << 20;

/// Names a broker may pass on from a hostile client: RTL overrides, stacked combining marks,
/// emoji, NUL and other control characters, mixed scripts.
fn hostile_names() -> Vec<String> {
    vec![
        "\u{202e}nimda@contoso.com".into(),
        "\u{5d0}\u{5d1}\u{5d2}@\u{627}\u{644}.example".into(),
        format!("e{}", "\u{301}".repeat(300)),
        "😀👩‍👩‍👧@x.org".into(),
        "ali\0ce".into(),
        "\0alice\0".into(),
        "\u{1}\u{7}\u{1b}[31malice\u{7f}".into(),
        "alice\u{85}\u{2028}\u{2029}".into(),
        "\u{fdfa}".repeat(100),
        "a\u{200d}b\u{fe0f}".into(),
        "ＡＬＩＣＥ＠ＣＯＮＴＯＳＯ．ＣＯＭ".into(),
        "\u{10ffff}\u{e000}".into(),
    ]
}

/// Names that normalise to nothing: whitespace, invisible characters, bare separators.
fn empty_names() -> Vec<&'static str> {
    vec![
        " ",
        "\t\r\n",
        "\u{3000}\u{a0}",
        "\0",
        "\u{1}\u{1f}",
        "\u{200b}\u{feff}",
        "\u{2060}\u{200d}\u{fe0f}",
        "\u{ad}",
        "@",
        "\\",
        " / ",
        "\u{200b}@\u{200b}",
    ]
}

fn engine() -> Engine {
    Engine::new(Policy::default(), Options::in_memory([5; 32])).unwrap()
}

fn attempt<'a>(user: &'a str, ip: &str) -> Attempt<'a> {
    Attempt {
        tenant: "acme",
        user,
        ip: ip.parse().unwrap(),
        fingerprint: Some(b"fp"),
    }
}

fn is_user_error(e: &portcullis_engine::Error) -> bool {
    matches!(
        e,
        portcullis_engine::Error::InvalidInput { field: "user", .. }
    )
}

#[test]
fn engine_decides_hostile_names_or_refuses_them_naming_user() {
    let e = engine();
    let now = Timestamp::from_millis(1_800_000_000_000);
    let mut decided = 0;
    for name in hostile_names() {
        match e.check(&attempt(&name, "192.0.2.1"), now) {
            Ok(_) => decided += 1,
            Err(err) => assert!(is_user_error(&err), "{name:?}: {err}"),
        }
    }
    assert!(decided >= 10, "only {decided} hostile names decided");
    for name in empty_names() {
        let err = e.check(&attempt(name, "192.0.2.1"), now).unwrap_err();
        assert!(is_user_error(&err), "{name:?}: {err}");
    }
}

#[test]
fn engine_refuses_a_one_mebibyte_name_naming_user_and_keeps_no_state_for_it() {
    let e = engine();
    let now = Timestamp::from_millis(1_800_000_000_000);
    for name in [
        "a".repeat(MIB),
        "é".repeat(MIB / 2),
        " ".repeat(MIB - 1) + "a",
    ] {
        let err = e.check(&attempt(&name, "192.0.2.1"), now).unwrap_err();
        assert!(is_user_error(&err), "{err}");
        assert!(err.to_string().contains("longer than"), "{err}");
    }
    assert_eq!(e.stats().accounts, 0);
    assert_eq!(e.stats().pending, 0);
}

#[test]
fn a_long_name_is_stored_by_hash_with_its_name_capped() {
    let e = engine();
    let now = Timestamp::from_millis(1_800_000_000_000);
    // 4 KiB typed (padding trimmed away), 1 KiB once normalised: the longest name accepted.
    let typed = " ".repeat(3 * MAX_NAME_BYTES) + &"b".repeat(MAX_NAME_BYTES);
    let d = e.check(&attempt(&typed, "192.0.2.1"), now).unwrap();
    assert_eq!(d.verdict, Verdict::Forward);
    let (key, name) = e.account_identity("acme", &typed).unwrap();
    assert_eq!(name.len(), MAX_NAME_BYTES);
    // The key is a fixed-size keyed hash, the same for the typed and the normalised form.
    assert_eq!(e.account_identity("acme", &name).unwrap().0, key);
    // A name expanding under NFKC beyond the cap is refused, not stored.
    let expanding = "\u{fdfa}".repeat(MAX_NAME_BYTES);
    assert!(is_user_error(
        &e.check(&attempt(&expanding, "192.0.2.1"), now).unwrap_err()
    ));
}

#[test]
fn engine_counts_an_ipv4_mapped_address_and_a_zone_id_as_the_plain_address() {
    let parse = portcullis_engine::net::parse_ip;
    let v4: IpAddr = "203.0.113.7".parse().unwrap();
    assert_eq!(parse("::ffff:203.0.113.7"), Some(v4));
    assert_eq!(parse("[::ffff:203.0.113.7]"), Some(v4));
    assert_eq!(parse("::ffff:203.0.113.7%eth0"), Some(v4));
    let ll: IpAddr = "fe80::1".parse().unwrap();
    for s in [
        "fe80::1%eth0",
        "fe80::1%1",
        "[fe80::1%eth0]",
        "fe80::1%\u{0}x",
    ] {
        assert_eq!(parse(s), Some(ll), "{s:?}");
    }
    for s in ["203.0.113.7%eth0", "fe80::1%", "[fe80::1]%eth0", "%eth0"] {
        assert_eq!(parse(s), None, "{s:?}");
    }
}

/// The default policy with a source blocked after 4 failures (accounts lock after 6).
fn four_failure_policy(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(default_policy()).unwrap();
    assert!(text.contains("max_failures = 30"), "default policy changed");
    let path = dir.join("policy.toml");
    std::fs::write(&path, text.replace("max_failures = 30", "max_failures = 4")).unwrap();
    path
}

async fn check(c: &reqwest::Client, base: &str, user: &str, ip: &str) -> (u16, Value) {
    post(
        c,
        &format!("{base}/v1/check"),
        &json!({"tenant": "acme", "user": user, "ip": ip, "pw": "fp"}),
    )
    .await
}

fn field(v: &Value) -> &str {
    v["field"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_over_http_are_decided_or_refused_with_a_400_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &default_policy(), &[]);
    let c = client();
    for name in hostile_names() {
        let (status, v) = check(&c, &s.http, &name, "192.0.2.1").await;
        match status {
            200 => assert!(v["decision"].is_string(), "{name:?}: {v}"),
            400 => assert_eq!(field(&v), "user", "{name:?}: {v}"),
            _ => panic!("{name:?}: {status} {v}"),
        }
    }
    for name in empty_names() {
        let (status, v) = check(&c, &s.http, name, "192.0.2.1").await;
        assert_eq!((status, field(&v)), (400, "user"), "{name:?}: {v}");
    }
    // JSON that no string can hold: a lone surrogate escape, invalid UTF-8.
    for body in [
        &br#"{"tenant":"acme","user":"\ud800","ip":"192.0.2.1"}"#[..],
        b"{\"tenant\":\"acme\",\"user\":\"\xff\xfe\",\"ip\":\"192.0.2.1\"}",
    ] {
        let (status, v) = post_raw(&c, &s.url("/v1/check"), body.to_vec()).await;
        assert_eq!(status, 400, "{v}");
        assert!(["user", "body"].contains(&field(&v)), "{v}");
    }
    // The service is still whole.
    let (status, v) = check(&c, &s.http, "alice", "192.0.2.1").await;
    assert_eq!(
        (status, v["decision"].as_str()),
        (200, Some("forward")),
        "{v}"
    );
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_name_is_refused_naming_the_body_limit_or_the_user_field() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let name = "a".repeat(MIB);
    // Default body limit (64 KiB): the body is refused before it is parsed.
    let s = Server::start(&dir.path().join("d1"), &default_policy(), &[]);
    let (status, v) = check(&c, &s.http, &name, "192.0.2.1").await;
    assert_eq!((status, field(&v)), (400, "body"), "{v}");
    assert!(v["message"].as_str().unwrap().contains("size limit"), "{v}");
    s.terminate();
    // With a body limit above it, the field's own limit names `user`.
    let s = Server::start(
        &dir.path().join("d2"),
        &default_policy(),
        &["--max-body-bytes", "4194304"],
    );
    for name in [name.clone(), format!("{}a", "\u{301}".repeat(MIB / 2))] {
        let (status, v) = check(&c, &s.http, &name, "192.0.2.1").await;
        assert_eq!((status, field(&v)), (400, "user"), "{v}");
    }
    let (status, v) = check(&c, &s.http, "alice", "192.0.2.1").await;
    assert_eq!(
        (status, v["decision"].as_str()),
        (200, Some("forward")),
        "{v}"
    );
    s.terminate();
}

/// Fails `n` attempts on `user`, each from the next address form in `ips`, each with a new
/// wrong password (a repeated one is answered without counting).
async fn fail_from(c: &reqwest::Client, base: &str, user: &str, ips: &[&str], n: usize) {
    static GUESS: AtomicUsize = AtomicUsize::new(0);
    for i in 0..n {
        let ip = ips[i % ips.len()];
        let pw = format!("guess{}", GUESS.fetch_add(1, Ordering::Relaxed));
        let d = common::attempt(c, base, user, ip, &pw, "wrong_password").await;
        assert_eq!(d["decision"], "forward", "failure {i} from {ip}: {d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_mapped_address_shares_the_ipv4_address_source_counter() {
    let dir = tempfile::tempdir().unwrap();
    let policy = four_failure_policy(dir.path());
    let s = Server::start(&dir.path().join("data"), &policy, &[]);
    let c = client();
    let forms = ["203.0.113.7", "::ffff:203.0.113.7"];
    // Three failures split across the two forms: below the limit of four, still forwarded.
    fail_from(&c, &s.http, "victim", &forms, 3).await;
    // The fourth, from the mapped form, reaches the shared limit: both forms are blocked. Split
    // into two counters (two and two) neither would have reached four.
    fail_from(&c, &s.http, "victim", &[forms[1]], 1).await;
    for ip in forms {
        let (status, d) = check(&c, &s.http, "someone", ip).await;
        assert_eq!(status, 200, "{d}");
        assert_eq!(d["decision"], "block", "{ip}: {d}");
        assert_eq!(d["reason"], "source_blocked", "{ip}: {d}");
    }
    // Another address is not affected.
    let (_, d) = check(&c, &s.http, "someone", "198.51.100.7").await;
    assert_eq!(d["decision"], "forward", "{d}");
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_id_is_dropped_and_shares_the_address_source_counter() {
    let dir = tempfile::tempdir().unwrap();
    let policy = four_failure_policy(dir.path());
    let s = Server::start(&dir.path().join("data"), &policy, &[]);
    let c = client();
    let forms = ["fe80::1%eth0", "fe80::1%eth1", "[fe80::1%2]", "fe80::1"];
    fail_from(&c, &s.http, "victim", &forms, 4).await;
    for ip in forms {
        let (status, d) = check(&c, &s.http, "someone", ip).await;
        assert_eq!(status, 200, "{d}");
        assert_eq!(d["reason"], "source_blocked", "{ip}: {d}");
    }
    // A zone id on an IPv4 address, or an empty zone, is not an address: 400 naming `ip`.
    for ip in ["203.0.113.7%eth0", "fe80::1%", "[fe80::1]%eth0"] {
        let (status, v) = check(&c, &s.http, "someone", ip).await;
        assert_eq!((status, field(&v)), (400, "ip"), "{ip}: {v}");
    }
    s.terminate();
}
