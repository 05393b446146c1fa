//! Starting the real `portcullis` binary on loopback ports and talking to it.
#![allow(dead_code)]

pub mod fake_agent;
pub mod redis_util;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-admin-token";
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// The default policy shipped in the repo.
pub fn default_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default.toml")
}

/// Lines a child wrote, collected by a reader thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    pub fn follow(&self, r: impl std::io::Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.all().join("\n")
    }

    /// Waits until a line satisfies `f`, returning it.
    pub fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.all().into_iter().find(|l| f(l)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; output so far:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A running `portcullis serve`.
pub struct Server {
    pub child: Child,
    pub http: String,
    pub grpc: String,
    pub stderr: Lines,
    pub stdout: Lines,
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .to_string()
}

impl Server {
    /// Starts `portcullis serve` with `args` plus loopback port-0 listeners and the admin token.
    pub fn start(data: &Path, policy: &Path, args: &[&str]) -> Server {
        Server::start_with_env(data, policy, args, &[])
    }

    /// [`Server::start`] with extra environment variables (they override the token and
    /// `RUST_LOG`).
    pub fn start_with_env(
        data: &Path,
        policy: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--policy")
            .arg(policy)
            .arg("--data")
            .arg(data)
            .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
            .args(args)
            .env("PORTCULLIS_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis serve");
        let stderr = Lines::default();
        stderr.follow(child.stderr.take().unwrap());
        let stdout = Lines::default();
        stdout.follow(child.stdout.take().unwrap());
        let line = stderr.wait_for("the Listening line", |l| l.contains("Listening."));
        Server {
            child,
            http: format!("http://{}", field(&line, "http=")),
            grpc: format!("http://{}", field(&line, "grpc=")),
            stderr,
            stdout,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = wait_exit(&mut self.child);
        assert!(status.success(), "exit {status:?}\n{}", self.stderr.text());
    }

    /// SIGKILL, no chance to flush.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        wait_exit(&mut self.child);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "process did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running reference agent.
pub struct Agent {
    pub child: Child,
    pub url: String,
    pub stdout: Lines,
}

impl Agent {
    pub fn start(users: &Path) -> Agent {
        let mut child = Command::new(BIN)
            .args(["ref-agent", "--listen", "127.0.0.1:0", "--users"])
            .arg(users)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ref-agent");
        let stdout = Lines::default();
        stdout.follow(child.stdout.take().unwrap());
        let line = stdout.wait_for("the agent's address", |l| l.starts_with("listening on "));
        let addr = line.trim_start_matches("listening on ").to_string();
        Agent {
            child,
            url: format!("http://{addr}"),
            stdout,
        }
    }

    /// The attempt ids this agent served.
    pub fn served(&self) -> Vec<String> {
        self.stdout
            .all()
            .into_iter()
            .filter_map(|l| l.strip_prefix("served id=").map(str::to_string))
            .collect()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        wait_exit(&mut self.child);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// POSTs JSON and returns (status, body as JSON).
pub async fn post(c: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = c.post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// POSTs raw bytes and returns (status, body as JSON).
pub async fn post_raw(c: &reqwest::Client, url: &str, body: Vec<u8>) -> (u16, Value) {
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The server's Prometheus text.
pub async fn metrics(c: &reqwest::Client, s: &Server) -> String {
    c.get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn admin_get(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).bearer_auth(TOKEN).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// One check then, when forwarded, its outcome. Returns the check's answer.
pub async fn attempt(
    c: &reqwest::Client,
    base: &str,
    user: &str,
    ip: &str,
    pw: &str,
    result: &str,
) -> Value {
    let (status, d) = post(
        c,
        &format!("{base}/v1/check"),
        &serde_json::json!({"tenant": "acme", "user": user, "ip": ip, "pw": pw}),
    )
    .await;
    assert_eq!(status, 200, "{d}");
    if d["decision"] == "forward" {
        let (status, o) = post(
            c,
            &format!("{base}/v1/outcome"),
            &serde_json::json!({"id": d["id"], "result": result, "pw": pw}),
        )
        .await;
        assert_eq!(status, 200, "{o}");
    }
    d
}

/// The attacker's six wrong passwords from an unfamiliar address, after the owner signed in
/// from home: the account is then locked for unfamiliar locations (the default policy's
/// unfamiliar lockout threshold is six).
pub async fn lock_alice(c: &reqwest::Client, base: &str) {
    let d = attempt(c, base, "alice", "198.51.100.7", "owner-pw", "success").await;
    assert_eq!(d["decision"], "forward");
    for i in 0..6 {
        let d = attempt(
            c,
            base,
            "alice",
            "203.0.113.9",
            &format!("guess{i}"),
            "wrong_password",
        )
        .await;
        assert_eq!(d["decision"], "forward", "guess {i}: {d}");
    }
}

/// Like [`lock_alice`] for any `user`: a success from home, then six wrong passwords (named after
/// the user) from an unfamiliar address: locked for unfamiliar places.
pub async fn lock_user(c: &reqwest::Client, base: &str, user: &str) {
    let d = attempt(c, base, user, "198.51.100.7", "owner-pw", "success").await;
    assert_eq!(d["decision"], "forward", "{d}");
    for i in 0..6 {
        let d = attempt(
            c,
            base,
            user,
            "203.0.113.9",
            &format!("{user}-guess{i}"),
            "wrong_password",
        )
        .await;
        assert_eq!(d["decision"], "forward", "{user} guess {i}: {d}");
    }
}

/// Polls `f` until it returns true or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
