//! Every policy shipped in `policies/` loads and keeps the directory promise.

use portcullis_engine::Policy;
use std::path::Path;

#[test]
fn every_shipped_policy_is_valid_and_stays_below_its_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let policy = Policy::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let all = std::iter::once(&policy.defaults).chain(policy.tenants.values());
        for t in all {
            let thr = t.directory.lockout_threshold;
            assert!(
                t.budget(false) >= 1 && t.budget(true) < thr,
                "{}",
                path.display()
            );
            assert!(t.lockout.threshold < thr && t.lockout.familiar_threshold < thr);
        }
        seen += 1;
    }
    assert!(
        seen >= 3,
        "default.toml and the commented examples: found {seen}"
    );
}
