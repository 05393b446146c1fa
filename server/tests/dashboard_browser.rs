//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver), against the
//! real `portcullis serve` while an attack is sent into it over `/v1/check` + `/v1/outcome`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`bash scripts/install-browser.sh`; CI runs it).
//! The WebDriver client is a few calls over reqwest (the W3C protocol is plain JSON), so the test
//! adds no dependency. Every wait polls against a deadline; nothing sleeps as an assertion.
//! Saves a screenshot of the dashboard under attack to `target/screenshots/dashboard.png`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long any one wait may take.
const DEADLINE: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chromedriver process started by the test, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    /// Kills chromedriver's process group: chromedriver and every Chromium process it started
    /// (they stay in its group), even when the test failed before closing the session.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(http: &reqwest::Client) -> Driver {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // Its own process group, so that Drop ends Chromium with it.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let d = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let t0 = Instant::now();
        loop {
            let ready = http
                .get(format!("{}/status", d.url))
                .send()
                .await
                .ok()
                .map(|r| r.json::<Value>());
            if let Some(body) = ready {
                if body.await.is_ok_and(|v| v["value"]["ready"] == true) {
                    return d;
                }
            }
            assert!(t0.elapsed() < DEADLINE, "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One WebDriver session: the handful of commands the test needs.
struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn open(http: reqwest::Client, driver: &Driver, profile: &Path) -> Browser {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1500",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let r: Value = http
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .expect("new WebDriver session")
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Browser {
            http,
            base: format!("{}/session/{id}", driver.url),
        }
    }

    /// Sends a command; returns `value`, or the WebDriver error as `Err`.
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or(json!({}))),
        };
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(v["value"].to_string())
        }
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})))
            .await
            .unwrap();
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .unwrap_or(Value::Null);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for an element matching `css` and returns its reference.
    async fn wait_for(&self, css: &str, what: &str) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            assert!(
                t0.elapsed() < DEADLINE,
                "timed out waiting for {what} ({css}); page text:\n{}",
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until nothing matches `css`.
    async fn wait_gone(&self, css: &str, what: &str) {
        let t0 = Instant::now();
        while !self.find_all(css).await.is_empty() {
            assert!(t0.elapsed() < DEADLINE, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, el: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        )
        .await
        .unwrap();
    }

    async fn click(&self, el: &str) -> Result<Value, String> {
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({})))
            .await
    }

    /// The text of the first element matching `css` (empty when none).
    async fn text(&self, css: &str) -> String {
        self.script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    async fn script(&self, body: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": body, "args": args})),
        )
        .await
        .unwrap_or(Value::Null)
    }

    /// The chart's total decisions in the hour, as drawn.
    async fn chart_total(&self) -> u64 {
        self.script(
            "return document.getElementById('decisions-chart').dataset.total;",
            json!([]),
        )
        .await
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
    }

    async fn wait_chart_above(&self, floor: u64) -> u64 {
        let t0 = Instant::now();
        loop {
            let n = self.chart_total().await;
            if n > floor {
                return n;
            }
            assert!(
                t0.elapsed() < DEADLINE,
                "the chart's total stayed at {n}, expected above {floor}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, to: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None).await.unwrap();
        let png = base64_decode(b64.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, png).unwrap();
    }

    async fn close(self) {
        let _ = self.cmd("DELETE", "", None).await;
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn screenshots_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("screenshots")
}

/// A brute force on alice from six addresses after she signed in from home: her account locks
/// for unfamiliar locations (the default policy locks at six), and further tries are refused.
async fn brute_force(c: &reqwest::Client, base: &str) {
    let d = attempt(c, base, "alice", "198.51.100.7", "owner-pw", "success").await;
    assert_eq!(d["decision"], "forward", "{d}");
    for i in 0..6 {
        let ip = format!("203.0.113.{}", 10 + i);
        attempt(
            c,
            base,
            "alice",
            &ip,
            &format!("guess{i}"),
            "wrong_password",
        )
        .await;
    }
    for i in 0..10 {
        let ip = format!("203.0.113.{}", 20 + i);
        let d = attempt(c, base, "alice", &ip, &format!("more{i}"), "wrong_password").await;
        assert_eq!(d["decision"], "block", "alice is locked: {d}");
    }
}

/// A spray from one address: three passwords, each against five accounts (each is marked sprayed
/// at its fifth account), so the address fails against fifteen accounts and is blocked; a fourth
/// round is refused.
async fn spray(c: &reqwest::Client, base: &str) {
    for (round, pw) in ["Spring2026!", "Summer2026!", "Autumn2026!"]
        .iter()
        .enumerate()
    {
        for i in 0..5 {
            let user = format!("user{}", round * 5 + i);
            attempt(c, base, &user, "192.0.2.50", pw, "wrong_password").await;
        }
    }
    let d = attempt(
        c,
        base,
        "user99",
        "192.0.2.50",
        "Winter2026!",
        "wrong_password",
    )
    .await;
    assert_eq!(
        d["decision"], "block",
        "the spraying address is blocked: {d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_an_attack_live_and_unlocks_from_the_browser() {
    assert!(
        Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "{CHROMIUM} or {CHROMEDRIVER} is missing: run `bash scripts/install-browser.sh` \
         (Debian's chromium and chromium-driver; CI runs it before the tests)"
    );
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &default_policy(), &[]);
    let c = client();

    // Without a session the data endpoint refuses.
    let r = c.get(s.url("/dashboard/api/state")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let wd_http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let driver = Driver::start(&wd_http).await;
    let b = Browser::open(wd_http, &driver, &dir.path().join("chromium-profile")).await;

    // A wrong token shows the form again, with an error, and no dashboard.
    b.goto(&s.url("/")).await;
    let token = b.wait_for("#login-form #token", "the sign-in form").await;
    b.type_into(&token, "not-the-token").await;
    let submit = b.wait_for("#sign-in", "the sign-in button").await;
    b.click(&submit).await.unwrap();
    b.wait_for("#login-error", "the wrong-token error").await;
    assert!(b.find_all("#decisions-chart").await.is_empty());
    assert!(b.text("#login-error").await.contains("Wrong token"));

    // The right token opens the dashboard.
    let token = b
        .wait_for("#login-form #token", "the sign-in form again")
        .await;
    b.type_into(&token, TOKEN).await;
    let submit = b.wait_for("#sign-in", "the sign-in button").await;
    b.click(&submit).await.unwrap();
    b.wait_for("#decisions-chart", "the dashboard").await;
    assert!(b.find_all("#login-form").await.is_empty());
    let before = b.chart_total().await;

    // The brute force: alice appears in the lockouts table, and the chart moves.
    brute_force(&c, &s.http).await;
    let alice = r#"#lockouts button.unlock[data-account="alice"]"#;
    b.wait_for(alice, "alice in the lockouts table").await;
    let first = b.wait_chart_above(before).await;

    // The spray: the chart moves again between two reads, the source and the password show.
    spray(&c, &s.http).await;
    let second = b.wait_chart_above(first).await;
    assert!(second >= first + 16, "read {first}, then {second}");
    b.wait_for("#sources button.clear", "a blocked source")
        .await;
    b.wait_for("#sprays tbody td:first-child", "a sprayed password")
        .await;
    let bars = b
        .script(
            "return document.querySelectorAll('#decisions-chart rect').length;",
            json!([]),
        )
        .await;
    assert!(
        bars.as_u64().unwrap_or(0) >= 2,
        "stacked bars drawn: {bars}"
    );
    let attacked = b.text("#attacked").await;
    assert!(attacked.contains("alice"), "{attacked}");
    let sources = b.text("#prefixes").await;
    assert!(sources.contains("192.0.2."), "{sources}");
    // Zoom the chart to the last ten minutes for the screenshot.
    let ten = b
        .wait_for(r#"#range option[value="10"]"#, "the span selector")
        .await;
    b.click(&ten).await.unwrap();
    b.wait_for(
        r#"#decisions-chart[data-minutes="10"]"#,
        "the 10-minute chart",
    )
    .await;
    b.screenshot(&screenshots_dir().join("dashboard.png")).await;

    // Unlock from the browser: the row goes, and the admin API agrees.
    let t0 = Instant::now();
    loop {
        // The table is redrawn every 2 s: a button found just before a redraw goes stale.
        if let Some(btn) = b.find_all(alice).await.into_iter().next() {
            if b.click(&btn).await.is_ok() {
                break;
            }
        }
        assert!(t0.elapsed() < DEADLINE, "could not click Unlock");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.wait_gone(alice, "alice's lockout to go").await;
    let (status, v) = admin_get(&c, &s.url("/v1/admin/lockouts")).await;
    assert_eq!(status, 200);
    let left: Vec<&Value> = v["lockouts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["account"] == "alice" && l["kind"] != "directory")
        .collect();
    assert!(left.is_empty(), "the admin API still lists {left:?}");
    let d = attempt(
        &c,
        &s.http,
        "alice",
        "203.0.113.99",
        "after",
        "wrong_password",
    )
    .await;
    assert_ne!(d["reason"], "account_locked", "unlocked: {d}");

    b.close().await;
    drop(driver);
    s.terminate();
}
