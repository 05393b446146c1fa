//! Against a real directory: a throwaway Samba AD DC on 127.0.0.1:389 (`scripts/samba-ad.sh`),
//! the LDAP agent (`portcullis agent`) and `portcullis serve` in in-line mode, all on loopback.
//!
//! - the agent maps Samba's real answers: 52e, 775, 533, and a stopped directory;
//! - side by side, the same mixed trace (legit sign-ins, a spray, a brute force on two accounts,
//!   a distributed attack on one account while its owner signs in) sent straight at the agent
//!   locks the attacked accounts in Samba, and sent through Portcullis locks no one and lets
//!   every legit sign-in with the right password succeed.
//!
//! Port 389 is fixed, so every test here holds one mutex, and no other test binary may use
//! Samba. Each test starts its own DC in a temporary directory and a guard stops it on drop,
//! failure included. Needs root and Samba (`scripts/samba-ad.sh install`, which `.ci/run` runs);
//! without them the tests skip with a message, except under CI (`CI` set), where they fail.

mod common;

use common::{client, wait_exit, Lines, Server, BIN};
use portcullis_server::live_replay::{parse_ldif_states, AccountState};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Samba's lockout threshold in these tests.
const THRESHOLD: u32 = 5;
const REALM: &str = "PORTCULLIS.TEST";
/// Users per half of the end-to-end test.
const USERS: usize = 50;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/samba-ad.sh")
}

/// Whether Samba can run here; under CI its absence is a failure.
fn samba_available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let tools = ["samba", "samba-tool", "ldbsearch"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if root && tools {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "Samba AD is needed under CI: run `scripts/samba-ad.sh install` as root (root: {root}, tools: {tools})"
    );
    eprintln!("skipping: needs root and Samba (`sudo scripts/samba-ad.sh install`)");
    false
}

/// A running Samba AD DC; stopped on drop.
struct Samba {
    dir: tempfile::TempDir,
    lock_seconds: u32,
}

impl Samba {
    fn start(users: &[(String, String)], lock_seconds: u32) -> Samba {
        // A DC left running (a killed run) would answer for this one, with other users.
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", 389)).is_err(),
            "port 389 is taken: a Samba left running? (`ss -ltnp 'sport = :389'`)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for (u, p) in users {
            writeln!(text, "{u} {p}").unwrap();
        }
        std::fs::write(dir.path().join("users.txt"), text).unwrap();
        let s = Samba { dir, lock_seconds };
        s.run(&["start", &s.dc(), &s.path("users.txt")]);
        s
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn dc(&self) -> String {
        self.path("dc")
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(script())
            .args(args)
            .env("SAMBA_LOCKOUT_THRESHOLD", THRESHOLD.to_string())
            .env("SAMBA_LOCKOUT_SECONDS", self.lock_seconds.to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "samba-ad.sh {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stop(&self) {
        self.run(&["stop", &self.dc()]);
    }

    fn restart(&self) {
        self.run(&["start", &self.dc()]);
    }

    /// `badPwdCount` and `lockoutTime` of one account, read from the directory's database.
    fn state(&self, user: &str) -> AccountState {
        let out = Command::new("ldbsearch")
            .arg("-H")
            .arg(self.dir.path().join("dc/private/sam.ldb"))
            .args([
                &format!("(sAMAccountName={user})"),
                "sAMAccountName",
                "badPwdCount",
                "lockoutTime",
            ])
            .output()
            .unwrap();
        parse_ldif_states(&String::from_utf8_lossy(&out.stdout))
            .remove(&user.to_lowercase())
            .unwrap_or_else(|| panic!("{user} not in the directory"))
    }

    fn samba_tool(&self, args: &[&str]) {
        let conf = self.dir.path().join("dc/etc/smb.conf");
        let out = Command::new("samba-tool")
            .args(args)
            .arg("-s")
            .arg(conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "samba-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &self.dc()])
            .stdin(Stdio::null())
            .output();
    }
}

/// A running `portcullis agent` (logging at TRACE, so the password check sees everything).
struct LdapAgent {
    child: Child,
    url: String,
    stdout: Lines,
    stderr: Lines,
}

impl LdapAgent {
    fn start() -> LdapAgent {
        LdapAgent::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> LdapAgent {
        let mut child = Command::new(BIN)
            .args([
                "agent",
                "--ldap",
                "ldap://127.0.0.1:389",
                "--listen",
                "127.0.0.1:0",
                "--upn-suffix",
                REALM,
                "--pool",
                "8",
                "--timeout",
                "2s",
            ])
            .args(extra)
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis agent");
        let stdout = Lines::default();
        stdout.follow(child.stdout.take().unwrap());
        let stderr = Lines::default();
        stderr.follow(child.stderr.take().unwrap());
        let line = stdout.wait_for("the agent's address", |l| l.starts_with("listening on "));
        let url = format!("http://{}", line.trim_start_matches("listening on "));
        LdapAgent {
            child,
            url,
            stdout,
            stderr,
        }
    }

    async fn validate(&self, user: &str, password: &str) -> Value {
        let r = client()
            .post(format!("{}/v1/validate", self.url))
            .json(&json!({"v": 1, "id": "1", "tenant": "acme", "user": user,
                "payload": {"password": password}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn result(&self, user: &str, password: &str) -> String {
        self.validate(user, password).await["result"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Stops the agent and returns everything it wrote.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        wait_exit(&mut self.child);
        std::thread::sleep(Duration::from_millis(100));
        format!("{}\n{}", self.stdout.text(), self.stderr.text())
    }
}

impl Drop for LdapAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_no_secret(output: &str, secrets: &[&str]) {
    assert!(!output.is_empty(), "expected some output to check");
    for s in secrets {
        assert!(
            !output.contains(s),
            "a password appeared in the agent's output"
        );
    }
}

fn users(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| (n.to_string(), format!("Ok-{n}-7x")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_answers_wrong_password_for_52e_and_logs_no_password() {
    let _serial = SERIAL.lock().await;
    if !samba_available() {
        return;
    }
    let samba = Samba::start(&users(&["alice"]), 60);
    let key = samba.dir.path().join("fp.key");
    std::fs::write(&key, "a-test-fingerprint-key-of-32-byt").unwrap();
    let agent = LdapAgent::start_with(&["--fp-key-file", key.to_str().unwrap()]);
    let ok = agent.validate("alice", "Ok-alice-7x").await;
    assert_eq!(
        ok,
        json!({"result": "success"}),
        "no fingerprint of a right password"
    );
    let wrong = agent.validate("alice", "Canary-Wrong-1").await;
    assert_eq!(wrong["result"], "wrong_password", "{wrong}");
    let fp = wrong["pw_fp"]
        .as_str()
        .expect("a keyed fingerprint")
        .to_string();
    assert_eq!(fp.len(), 32, "{fp}");
    let again = agent.validate("alice", "Canary-Wrong-1").await;
    assert_eq!(
        again["pw_fp"],
        fp.as_str(),
        "same password, same fingerprint"
    );
    // Samba answers 52e for an unknown user too.
    assert_eq!(
        agent.result("nobody-here", "Canary-Wrong-2").await,
        "wrong_password"
    );
    // Refused by the agent itself, never sent as an anonymous bind.
    assert_eq!(agent.result("alice", "").await, "wrong_password");
    assert_eq!(samba.state("alice").bad_pwd_count, 2, "only the two 52e");
    let output = agent.stop();
    assert_no_secret(
        &output,
        &["Ok-alice-7x", "Canary-Wrong-1", "Canary-Wrong-2", &fp],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_answers_locked_for_775() {
    let _serial = SERIAL.lock().await;
    if !samba_available() {
        return;
    }
    let samba = Samba::start(&users(&["bob"]), 60);
    let agent = LdapAgent::start();
    for i in 0..THRESHOLD {
        assert_eq!(
            agent.result("bob", &format!("guess-{i}")).await,
            "wrong_password"
        );
    }
    let st = samba.state("bob");
    assert!(st.lockout_time != 0, "Samba locked bob: {st:?}");
    // Locked: even the right password is refused, with 775.
    assert_eq!(agent.result("bob", "Ok-bob-7x").await, "locked");
    assert_eq!(agent.result("bob", "another-guess").await, "locked");
    let output = agent.stop();
    assert_no_secret(&output, &["Ok-bob-7x", "guess-0", "another-guess"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_answers_disabled_for_533() {
    let _serial = SERIAL.lock().await;
    if !samba_available() {
        return;
    }
    let samba = Samba::start(&users(&["carol"]), 60);
    samba.samba_tool(&["user", "disable", "carol"]);
    let agent = LdapAgent::start();
    assert_eq!(agent.result("carol", "Ok-carol-7x").await, "disabled");
    samba.samba_tool(&["user", "enable", "carol"]);
    assert_eq!(agent.result("carol", "Ok-carol-7x").await, "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_answers_unreachable_for_a_stopped_directory_which_locks_no_one() {
    let _serial = SERIAL.lock().await;
    if !samba_available() {
        return;
    }
    let samba = Samba::start(&users(&["dave"]), 60);
    let agent = LdapAgent::start();
    // A pooled connection first, so the stop also breaks an idle one.
    assert_eq!(agent.result("dave", "Ok-dave-7x").await, "success");
    samba.stop();
    for i in 0..(2 * THRESHOLD) {
        assert_eq!(
            agent.result("dave", &format!("guess-{i}")).await,
            "directory_unreachable",
            "attempt {i}"
        );
    }
    let health = client()
        .get(format!("{}/healthz", agent.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    samba.restart();
    let st = samba.state("dave");
    assert_eq!(st, AccountState::default(), "nothing counted: {st:?}");
    assert_eq!(agent.result("dave", "Ok-dave-7x").await, "success");
}

/// One trace event.
fn ev(out: &mut String, n: &mut i64, user: &str, ip: &str, pw: &str, truth: &str, label: &str) {
    let ts = portcullis_engine::trace::format_rfc3339_ms(1_793_520_000_000 + *n * 1000);
    *n += 1;
    writeln!(
        out,
        "{}",
        json!({"ts": ts, "tenant": "acme", "user": user, "ip": ip, "pw": pw,
            "truth": truth, "label": label})
    )
    .unwrap();
}

/// The deterministic mixed trace for users `{prefix}001..{prefix}050`, and the credentials
/// lines (token -> password) it needs.
fn mixed_trace(prefix: &str) -> (String, String) {
    let name = |i: usize| format!("{prefix}{i:03}");
    let home = |i: usize| format!("198.18.{i}.10");
    let (mut t, mut n, mut creds) = (String::new(), 0i64, String::new());
    for i in 1..=USERS {
        writeln!(creds, "ok-{0} Ok-{0}-7x", name(i)).unwrap();
        writeln!(creds, "typo-{0} Ok-{0}-7y", name(i)).unwrap();
    }
    for (k, p) in ["Spring2026!", "Winter2025!", "Password1!"]
        .iter()
        .enumerate()
    {
        writeln!(creds, "spray{k} {p}").unwrap();
    }
    for k in 0..20 {
        writeln!(creds, "guess{k} Guess-{k}-zz").unwrap();
    }
    // Everyone signs in from home first.
    for i in 1..=USERS {
        ev(
            &mut t,
            &mut n,
            &name(i),
            &home(i),
            &format!("ok-{}", name(i)),
            "correct",
            "legit",
        );
    }
    // A spray: three passwords over every account, from 20 addresses.
    for (k, _) in ["Spring2026!", "Winter2025!", "Password1!"]
        .iter()
        .enumerate()
    {
        for i in 1..=USERS {
            let ip = format!("203.0.113.{}", i % 20 + 1);
            ev(
                &mut t,
                &mut n,
                &name(i),
                &ip,
                &format!("spray{k}"),
                "wrong",
                "attack",
            );
        }
    }
    // Legit typos at home, then the right password.
    for i in 20..30 {
        ev(
            &mut t,
            &mut n,
            &name(i),
            &home(i),
            &format!("typo-{}", name(i)),
            "wrong",
            "legit",
        );
        ev(
            &mut t,
            &mut n,
            &name(i),
            &home(i),
            &format!("ok-{}", name(i)),
            "correct",
            "legit",
        );
    }
    // A brute force on two accounts from one address each, then their owners sign in.
    for k in 0..12 {
        ev(
            &mut t,
            &mut n,
            &name(7),
            "192.0.2.66",
            &format!("guess{k}"),
            "wrong",
            "attack",
        );
        ev(
            &mut t,
            &mut n,
            &name(42),
            "192.0.2.67",
            &format!("guess{k}"),
            "wrong",
            "attack",
        );
    }
    for i in [7, 42] {
        ev(
            &mut t,
            &mut n,
            &name(i),
            &home(i),
            &format!("ok-{}", name(i)),
            "correct",
            "legit",
        );
    }
    // A distributed attack on one account, 15 addresses in 15 networks, while its owner keeps
    // signing in from home.
    for k in 0..15 {
        let ip = format!("100.{}.{k}.9", 64 + k);
        ev(
            &mut t,
            &mut n,
            &name(13),
            &ip,
            &format!("guess{k}"),
            "wrong",
            "attack",
        );
        if k % 5 == 4 {
            ev(
                &mut t,
                &mut n,
                &name(13),
                &home(13),
                &format!("ok-{}", name(13)),
                "correct",
                "legit",
            );
        }
    }
    // Everyone signs in again.
    for i in 1..=USERS {
        ev(
            &mut t,
            &mut n,
            &name(i),
            &home(i),
            &format!("ok-{}", name(i)),
            "correct",
            "legit",
        );
    }
    (t, creds)
}

fn live_replay(
    concurrency: &str,
    target: &str,
    direct: bool,
    trace: &Path,
    creds: &Path,
    samba: &Samba,
    report: &Path,
) -> Value {
    let mut cmd = Command::new(BIN);
    cmd.args(["replay", "--target", target, "--trace"])
        .arg(trace)
        .arg("--credentials")
        .arg(creds)
        .arg("--samba-dir")
        .arg(samba.dc())
        .args([
            "--as-fast-as-possible",
            "--concurrency",
            concurrency,
            "--sample-every",
            "300ms",
        ])
        .arg("--report")
        .arg(report);
    if direct {
        cmd.arg("--direct");
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "replay failed:\n{text}");
    assert!(
        !text.contains("Ok-") && !text.contains("Spring2026"),
        "a password in replay's output"
    );
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

fn locked(r: &Value) -> Vec<String> {
    r["live"]["locked_accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_portcullis_no_account_locks_in_samba_while_straight_at_the_agent_they_do() {
    let _serial = SERIAL.lock().await;
    if !samba_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Two sets of 50 users: `d` straight at the agent, `p` through Portcullis.
    let mut all = Vec::new();
    for prefix in ["d", "p"] {
        let (trace, creds) = mixed_trace(prefix);
        std::fs::write(dir.path().join(format!("{prefix}.jsonl")), trace).unwrap();
        std::fs::write(dir.path().join(format!("{prefix}.creds")), creds).unwrap();
        all.extend((1..=USERS).map(|i| {
            let n = format!("{prefix}{i:03}");
            let p = format!("Ok-{n}-7x");
            (n, p)
        }));
    }
    let samba = Samba::start(&all, 60);
    let agent = LdapAgent::start();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        r#"version = "samba-e2e-1"

[defaults.directory]
lockout_threshold = 5        # as the Samba DC
observation_window = "60s"
lockout_duration = "60s"
reserve = 2
familiar_reserve = 1

[defaults.lockout]
threshold = 3
familiar_threshold = 4
window = "60s"
"#,
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &policy,
        &["--agent", &agent.url, "--agent-timeout", "3s"],
    );

    let p = |name: &str| dir.path().join(name);
    let direct = live_replay(
        "4",
        &agent.url,
        true,
        &p("d.jsonl"),
        &p("d.creds"),
        &samba,
        &p("d.json"),
    );
    let through = live_replay(
        "1",
        &server.http,
        false,
        &p("p.jsonl"),
        &p("p.creds"),
        &samba,
        &p("p.json"),
    );

    let fig = |r: &Value, k: &str| r["live"][k].clone();
    println!(
        "\n=== Samba AD end to end (threshold {THRESHOLD}, 2 x {USERS} users, same trace) ==="
    );
    for (name, r) in [
        ("straight at the agent", &direct),
        ("through Portcullis", &through),
    ] {
        println!(
            "{name:22} events {:4}  attacks forwarded {:3}/{:3}  legit successes {:3}/{:3} (harmed {})  \
             accounts locked in Samba {:2} {:?}  max badPwdCount {}  samples {}  latency p50 {:.1} ms p99 {:.1} ms",
            r["events"], r["attack"]["forwarded"], r["attack"]["attempts"],
            r["legit"]["succeeded"], r["legit"]["attempts"], r["legit"]["harmed"],
            locked(r).len(), locked(r), fig(r, "max_bad_pwd_count"),
            fig(r, "samples").as_array().unwrap().len(),
            fig(r, "latency_ms_p50").as_f64().unwrap(), fig(r, "latency_ms_p99").as_f64().unwrap(),
        );
    }

    // Without Portcullis the attacked accounts are locked in Samba.
    let d_locked = locked(&direct);
    for a in ["d007", "d013", "d042"] {
        assert!(
            d_locked.contains(&a.to_string()),
            "{a} not locked: {d_locked:?}"
        );
    }
    assert!(
        direct["legit"]["harmed"].as_u64().unwrap() > 0,
        "owners locked out"
    );

    // Through it no account is locked at any sample, and every legit sign-in succeeds.
    assert_eq!(locked(&through), Vec::<String>::new());
    for s in fig(&through, "samples").as_array().unwrap() {
        assert_eq!(s["accounts_locked"], 0, "{s}");
        assert!(
            s["max_bad_pwd_count"].as_u64().unwrap() < THRESHOLD as u64,
            "{s}"
        );
    }
    assert!(fig(&through, "samples").as_array().unwrap().len() >= 2);
    assert_eq!(through["legit"]["harmed"], 0, "{through}");
    assert_eq!(
        through["legit"]["succeeded"],
        through_correct_legit(&p("p.jsonl"))
    );
    assert_eq!(through["attack"]["succeeded"], 0);
    assert_eq!(
        through["live"]["results"].get("http_error"),
        None,
        "{through}"
    );
    // And the directory agrees, read independently.
    for i in [7, 13, 42] {
        let st = samba.state(&format!("p{i:03}"));
        assert!(
            st.lockout_time == 0 && st.bad_pwd_count < THRESHOLD,
            "p{i:03}: {st:?}"
        );
    }
    let serve_log = server.stderr.text();
    server.terminate();
    let agent_log = agent.stop();
    assert_no_secret(
        &format!("{serve_log}\n{agent_log}"),
        &["Ok-p013-7x", "Spring2026!", "Guess-3-zz"],
    );
}

fn through_correct_legit(trace: &Path) -> u64 {
    std::fs::read_to_string(trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"truth\":\"correct\"") && l.contains("\"label\":\"legit\""))
        .count() as u64
}
