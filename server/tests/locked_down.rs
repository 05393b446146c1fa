//! The locked-down service on the real binary: a separate admin listener, forwarded-address
//! headers believed only from trusted proxies, bounded request heads.

mod common;

use common::{client, default_policy, post, Server, TOKEN};
use serde_json::json;

fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_http_serves_the_admin_side_apart_from_the_decision_api() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &default_policy(),
        &["--admin-http", "127.0.0.1:0"],
    );
    let line = s
        .stderr
        .wait_for("the Listening line", |l| l.contains("Listening."));
    let admin = format!("http://{}", field(&line, "admin="));
    assert_ne!(admin, s.http);
    let c = client();

    // The decision API and health on the decision port.
    let (status, d) = post(
        &c,
        &s.url("/v1/check"),
        &json!({"tenant": "acme", "user": "alice", "ip": "192.0.2.1"}),
    )
    .await;
    assert_eq!((status, d["decision"].as_str()), (200, Some("forward")));
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} on the decision port");
    }
    // Admin API, dashboard and metrics: 404 on the decision port, served on the admin port.
    for path in ["/v1/admin/lockouts", "/", "/dashboard/app.js", "/metrics"] {
        let r = c.get(s.url(path)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} on the decision port");
        let r = c
            .get(format!("{admin}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} on the admin port");
    }
    let r = c
        .post(s.url("/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "sign-in on the decision port");
    // The decision API is not on the admin port.
    let r = c
        .post(format!("{admin}/v1/check"))
        .json(&json!({"tenant": "acme", "user": "alice", "ip": "192.0.2.1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A wrong token is still refused on the admin port.
    let r = c
        .get(format!("{admin}/v1/admin/lockouts"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    s.terminate();
}

/// Six wrong sign-ins as `first`, then one as `second`; returns the statuses.
async fn wrong_sign_ins(s: &Server, first: &str, second: &str) -> (Vec<u16>, u16) {
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = c
            .post(s.url("/login"))
            .header("x-forwarded-for", first)
            .form(&[("token", "wrong")])
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    let r = c
        .post(s.url("/login"))
        .header("x-forwarded-for", second)
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    (statuses, r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_forwarded_address_is_throttled_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &default_policy(),
        &["--trusted-proxy", "127.0.0.1/32"],
    );
    let (first, other) = wrong_sign_ins(&s, "192.0.2.1", "192.0.2.2").await;
    assert_eq!(first, [401, 401, 401, 401, 401, 429], "{first:?}");
    assert_eq!(other, 401, "another forwarded client is not throttled");
    // The log is read by another thread: wait for the last sign-in's line before reading it all.
    s.stderr
        .wait_for("the second client's sign-in logged", |l| {
            l.contains("client=192.0.2.2")
        });
    let log = s.stderr.text();
    assert!(log.contains("client=192.0.2.1"), "{log}");
    assert!(log.contains("client=192.0.2.2"), "{log}");
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_forwarded_header_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &default_policy(), &[]);
    let (first, other) = wrong_sign_ins(&s, "192.0.2.1", "192.0.2.2").await;
    assert_eq!(first, [401, 401, 401, 401, 401, 429], "{first:?}");
    assert_eq!(
        other, 429,
        "the header changed nothing: the peer is throttled"
    );
    // The sixth sign-in (the last with the first header) is the first throttled one: once its line
    // is in, every line of the first six is.
    s.stderr.wait_for("the throttled sign-in logged", |l| {
        l.contains("throttled") && l.contains("client=127.0.0.1")
    });
    let log = s.stderr.text();
    assert!(log.contains("client=127.0.0.1"), "{log}");
    assert!(!log.contains("192.0.2.1"), "{log}");
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431_and_the_service_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &default_policy(), &[]);
    let c = client();
    let mut r = c.get(s.url("/healthz"));
    for i in 0..100 {
        r = r.header(format!("x-filler-{i}"), "x");
    }
    assert_eq!(r.send().await.unwrap().status(), 431, "too many headers");
    let big = "a".repeat(64 * 1024);
    let r = c
        .get(s.url("/healthz"))
        .header("x-big", big.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431, "one huge header");
    // Many headers within the limits pass.
    let mut r = c.get(s.url("/healthz"));
    for i in 0..40 {
        r = r.header(format!("x-filler-{i}"), "y".repeat(100));
    }
    assert_eq!(r.send().await.unwrap().status(), 200);
    s.terminate();
}
