//! Live policy reload: a valid edit takes effect without restart, an invalid one is refused and
//! the old policy keeps working; SIGHUP reloads too.

mod common;

use common::*;
use std::process::Command;

const V1: &str = "version = \"v1\"\n[defaults.lockout]\nthreshold = 5\n";
const V2: &str = "version = \"v2\"\n[defaults.lockout]\nthreshold = 2\n";
/// Refused: a smart-lockout threshold at the directory's own threshold.
const BAD: &str = "version = \"v3\"\n[defaults.lockout]\nthreshold = 12\n";

async fn version(c: &reqwest::Client, s: &Server) -> String {
    let (_, p) = admin_get(c, &s.url("/v1/admin/policy")).await;
    p["version"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_edit_takes_effect_and_an_invalid_one_is_refused_keeping_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, V1).unwrap();
    let s = Server::start(&dir.path().join("data"), &policy, &[]);
    let c = client();
    assert_eq!(version(&c, &s).await, "v1");

    std::fs::write(&policy, V2).unwrap();
    eventually("v2 in force", || async { version(&c, &s).await == "v2" }).await;
    // Threshold 2 now: two wrong passwords from an unfamiliar address lock the account.
    for i in 0..2 {
        let d = attempt(
            &c,
            &s.http,
            "erin",
            "203.0.113.20",
            &format!("g{i}"),
            "wrong_password",
        )
        .await;
        assert_eq!(d["decision"], "forward");
    }
    let d = attempt(&c, &s.http, "erin", "203.0.113.20", "g9", "wrong_password").await;
    assert_eq!(d["reason"], "account_locked", "{d}");

    std::fs::write(&policy, BAD).unwrap();
    s.stderr
        .wait_for("the refusal", |l| l.contains("Policy refused"));
    assert!(
        s.stderr.text().contains("lockout.threshold"),
        "the error names the key"
    );
    assert_eq!(version(&c, &s).await, "v2", "the old policy stays");
    let text = metrics(&c, &s).await;
    assert!(
        text.contains("portcullis_policy_reloads_total{policy=\"enforced\",result=\"refused\"}"),
        "{text}"
    );
    // Still deciding with v2.
    for i in 0..2 {
        attempt(
            &c,
            &s.http,
            "frank",
            "203.0.113.21",
            &format!("g{i}"),
            "wrong_password",
        )
        .await;
    }
    let d = attempt(&c, &s.http, "frank", "203.0.113.21", "g9", "wrong_password").await;
    assert_eq!(d["reason"], "account_locked", "{d}");
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    // The service watches p/, where the policy is a symlink into real/: an edit of the real file
    // makes no event in p/, so only the signal can bring it in.
    let real_dir = dir.path().join("real");
    let policy_dir = dir.path().join("p");
    std::fs::create_dir(&real_dir).unwrap();
    std::fs::create_dir(&policy_dir).unwrap();
    let real = real_dir.join("policy.toml");
    std::fs::write(&real, V1).unwrap();
    let policy = policy_dir.join("policy.toml");
    std::os::unix::fs::symlink(&real, &policy).unwrap();
    let s = Server::start(&dir.path().join("data"), &policy, &[]);
    let c = client();
    std::fs::write(&real, V2).unwrap();
    assert_eq!(version(&c, &s).await, "v1", "no reload without the signal");
    let pid = s.child.id().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    eventually("v2 in force", || async { version(&c, &s).await == "v2" }).await;
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_right_after_listening_reloads_and_never_ends_the_service() {
    // The handler is registered before "Listening.": a SIGHUP at once must not meet the
    // signal's default action, which ends the process.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, V1).unwrap();
    let s = Server::start(&dir.path().join("data"), &policy, &[]);
    std::fs::write(&policy, V2).unwrap();
    let pid = s.child.id().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let c = client();
    eventually("v2 in force", || async { version(&c, &s).await == "v2" }).await;
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_policy_counts_disagreements_without_acting() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = dir.path().join("shadow.toml");
    std::fs::write(&shadow, V2).unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &default_policy(),
        &["--shadow", shadow.to_str().unwrap()],
    );
    let c = client();
    for i in 0..3 {
        let d = attempt(
            &c,
            &s.http,
            "gina",
            "203.0.113.30",
            &format!("g{i}"),
            "wrong_password",
        )
        .await;
        assert_eq!(
            d["decision"], "forward",
            "the enforced policy (threshold 5) decides: {d}"
        );
    }
    let text = metrics(&c, &s).await;
    assert!(
        text.contains(
            "portcullis_shadow_disagreements_total{kind=\"would_block\",reason=\"account_locked\"}"
        ),
        "{text}"
    );
    s.terminate();
}
