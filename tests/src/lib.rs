//! Helpers for the integration tests that run the real `portcullis` binary.
//!
//! # Layout
//! - [`portcullis`]: builds the binary once per test process and returns its path.
//! - [`workspace_root`], [`shared_dir`], [`require_shared!`]: where things are; the shared data
//!   set (`../shared/`) exists on the team's machines only, so tests that need it skip without it.
//! - [`run`], [`replay_report`], [`write_log_only_policy`]: run the binary and read its report.
//! - [`baselines`], [`parse_baselines`]: the reference policies' scores from a `BASELINES.md`,
//!   read by column name so that regenerated tables need no code change.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root (the directory holding `policies/` and the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .expect("the tests crate sits inside the workspace")
        .to_path_buf()
}

/// The shipped default policy, `policies/default.toml`.
pub fn default_policy() -> PathBuf {
    workspace_root().join("policies").join("default.toml")
}

/// `<root>/../shared` if it exists. A user's clone has no `../shared/`.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = workspace_root().join("..").join("shared");
    dir.is_dir().then_some(dir)
}

/// Evaluates to the shared directory, or prints why and returns from the calling test.
#[macro_export]
macro_rules! require_shared {
    () => {
        match $crate::shared_dir() {
            Some(dir) => dir,
            None => {
                eprintln!("skipping: ../shared is absent (a user's clone has no ../shared/)");
                return;
            }
        }
    };
}

/// The `cargo` to build with: `$CARGO` at run time, else the one that compiled these tests,
/// else whatever `cargo` is on the `PATH`.
fn cargo() -> String {
    std::env::var("CARGO")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| option_env!("CARGO").map(str::to_string))
        .unwrap_or_else(|| "cargo".to_string())
}

/// The target directory: `$CARGO_TARGET_DIR` (relative to the workspace root if relative), else
/// `<root>/target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The path of the debug `portcullis` binary, built on first use (once per test process).
///
/// # Panics
/// If `cargo build` cannot be started or fails; the message carries cargo's stderr.
pub fn portcullis() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let cargo = cargo();
        let out = Command::new(&cargo)
            .args([
                "build",
                "-q",
                "-p",
                "portcullis-server",
                "--bin",
                "portcullis",
            ])
            .current_dir(&root)
            .output()
            .unwrap_or_else(|e| {
                panic!("could not start `{cargo} build` in {}: {e}", root.display())
            });
        assert!(
            out.status.success(),
            "`{cargo} build -q -p portcullis-server --bin portcullis` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = target_dir()
            .join("debug")
            .join(format!("portcullis{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "cargo built portcullis-server but {} does not exist",
            bin.display()
        );
        bin
    })
    .clone()
}

/// Runs `portcullis` with `args` in the workspace root and returns its output.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let bin = portcullis();
    Command::new(&bin)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", bin.display()))
}

/// Replays `trace` under `policy` with `--report` into a temporary directory and returns the
/// parsed report.
///
/// # Panics
/// If the replay exits non-zero (the message carries its stderr) or the report is not JSON.
pub fn replay_report(policy: &Path, trace: &Path) -> Value {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let report = dir.path().join("report.json");
    let out = run([
        "replay".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--trace".as_ref(),
        trace.as_os_str(),
        "--report".as_ref(),
        report.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "portcullis replay --policy {} --trace {} exited with {}; stderr:\n{}",
        policy.display(),
        trace.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("replay wrote no report at {}: {e}", report.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the report of {} is not JSON: {e}\n{text}", trace.display()))
}

/// Reads the unsigned integer at `pointer` (e.g. `/attack/accounts_compromised`) of a report.
///
/// # Panics
/// If the field is absent or not an unsigned integer.
pub fn field(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("report has no unsigned integer at {pointer}: {report}"))
}

/// Writes a copy of the default policy with `mode = "log_only"` (the "none" baseline: every
/// attempt is forwarded) into `dir` and returns its path.
///
/// # Panics
/// If the default policy has no `mode = ...` line under `[defaults]` to change.
pub fn write_log_only_policy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(default_policy()).expect("policies/default.toml readable");
    let mut section = String::new();
    let mut changed = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with('[') {
                section = t.to_string();
            } else if section == "[defaults]" && t.starts_with("mode") && t.contains('=') {
                changed += 1;
                return "mode = \"log_only\"".to_string();
            }
            line.to_string()
        })
        .collect();
    assert_eq!(
        changed, 1,
        "expected exactly one `mode = ...` line under [defaults] in policies/default.toml"
    );
    let path = dir.join("log_only.toml");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write the log_only policy");
    path
}

/// One reference policy's score on one trace, a row of a `BASELINES.md` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    /// The reference policy (`none`, `fail2ban`, `keycloak`, `entra_like`).
    pub policy: String,
    /// Distinct legit users harmed (column `users harmed`).
    pub users_harmed: u64,
    /// Accounts an attacker signed in to (column `compromised`).
    pub compromised: u64,
    /// Every other numeric column, by its header name (`events`, `AD lockouts`, ...).
    pub other: BTreeMap<String, u64>,
}

/// Splits one markdown table row into trimmed cells.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// Parses the table of a `BASELINES.md` (as text) by its header names, keyed by trace file name.
/// The table must have the columns `trace`, `policy`, `users harmed` and `compromised`.
///
/// # Panics
/// If there is no such table, or a row has the wrong number of cells or a non-numeric score.
pub fn parse_baselines(text: &str) -> HashMap<String, Vec<Baseline>> {
    let mut lines = text.lines().map(str::trim);
    let header = lines
        .by_ref()
        .find(|l| l.starts_with('|') && cells(l).iter().any(|c| c == "trace"))
        .expect("BASELINES.md has a table with a `trace` column");
    let names = cells(header);
    let col = |name: &str| {
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .unwrap_or_else(|| panic!("BASELINES.md table has no `{name}` column: {names:?}"))
    };
    let (trace_col, policy_col) = (col("trace"), col("policy"));
    let (harmed_col, compromised_col) = (col("users harmed"), col("compromised"));
    let mut out: HashMap<String, Vec<Baseline>> = HashMap::new();
    for line in lines {
        if !line.starts_with('|') {
            break;
        }
        let row = cells(line);
        if row
            .iter()
            .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':')))
        {
            continue; // the |---|---| separator
        }
        assert_eq!(
            row.len(),
            names.len(),
            "BASELINES.md row {line:?} does not match the header"
        );
        let num = |i: usize| -> u64 {
            row[i].parse().unwrap_or_else(|_| {
                panic!(
                    "BASELINES.md: `{}` = {:?} is not a count in {line:?}",
                    names[i], row[i]
                )
            })
        };
        let other = (0..names.len())
            .filter(|&i| ![trace_col, policy_col, harmed_col, compromised_col].contains(&i))
            .filter_map(|i| row[i].parse().ok().map(|v| (names[i].clone(), v)))
            .collect();
        out.entry(row[trace_col].clone())
            .or_default()
            .push(Baseline {
                policy: row[policy_col].clone(),
                users_harmed: num(harmed_col),
                compromised: num(compromised_col),
                other,
            });
    }
    assert!(!out.is_empty(), "BASELINES.md table has no rows");
    out
}

/// Reads and parses a `BASELINES.md` file; see [`parse_baselines`].
pub fn baselines(path: &Path) -> HashMap<String, Vec<Baseline>> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_baselines(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "# Baselines\n\nSome words | with a pipe.\n\n\
| trace | policy | events | users harmed | attack ok | compromised | AD lockouts |\n\
|---|---|---|---|---|---|---|\n\
| a.jsonl | none | 10 | 2 | 5 | 3 | 7 |\n\
| a.jsonl | fail2ban | 10 | 4 | 1 | 1 | 0 |\n\
| b.jsonl.gz | none | 5 | 0 | 0 | 0 | 0 |\n\
\nTrailing text.\n";

    #[test]
    fn parses_baselines_by_column_name() {
        let b = parse_baselines(TABLE);
        assert_eq!(b.len(), 2, "{b:?}");
        let a = &b["a.jsonl"];
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].policy, "none");
        assert_eq!((a[0].users_harmed, a[0].compromised), (2, 3));
        assert_eq!((a[1].users_harmed, a[1].compromised), (4, 1));
        assert_eq!(a[0].other["AD lockouts"], 7);
        assert_eq!(a[0].other["attack ok"], 5);
        assert_eq!(b["b.jsonl.gz"][0].policy, "none");
    }

    #[test]
    #[should_panic(expected = "no `compromised` column")]
    fn refuses_a_table_without_a_needed_column() {
        parse_baselines("| trace | policy | users harmed |\n|---|---|---|\n| a | none | 1 |\n");
    }
}
