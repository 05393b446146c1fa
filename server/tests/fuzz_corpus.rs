//! Every fuzz corpus input and crash reproducer (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`) through the same entry points the fuzz targets call
//! ([`portcullis_server::fuzzing`]), on stable, in `cargo test`. An entry panics on a bug (see its
//! docs), so running them is the assertion; reproducers also get their specific expected answer.

use portcullis_server::fuzzing;
use std::path::{Path, PathBuf};

const TARGETS: [&str; 5] = [
    "policy_toml",
    "trace_line",
    "http_body",
    "grpc_message",
    "agent_answer",
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of one corpus directory, sorted; `None` when the directory does not exist.
fn inputs(dir: &Path) -> Option<Vec<(PathBuf, Vec<u8>)>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Some(
        files
            .into_iter()
            .map(|p| {
                let data = std::fs::read(&p).unwrap();
                (p, data)
            })
            .collect(),
    )
}

fn run(target: &str, data: &[u8]) {
    match target {
        "policy_toml" => drop(fuzzing::policy_toml(data)),
        "trace_line" => drop(fuzzing::trace_line(data)),
        "http_body" => drop(fuzzing::http_body(data)),
        "grpc_message" => drop(fuzzing::grpc_message(data)),
        "agent_answer" => drop(fuzzing::agent_answer(data)),
        other => panic!("no entry for target {other}"),
    }
}

#[test]
fn every_corpus_input_runs_through_its_entry_without_a_panic() {
    for target in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        let files = inputs(&dir).unwrap_or_else(|| panic!("{} is missing", dir.display()));
        assert!(!files.is_empty(), "{} is empty", dir.display());
        for (path, data) in files {
            let r = std::panic::catch_unwind(|| run(target, &data));
            assert!(r.is_ok(), "{target} panicked on {}", path.display());
        }
    }
}

#[test]
fn every_crash_reproducer_runs_without_a_panic() {
    let mut seen = 0;
    for target in TARGETS {
        let dir = fuzz_dir().join("regressions").join(target);
        for (path, data) in inputs(&dir).unwrap_or_default() {
            let r = std::panic::catch_unwind(|| run(target, &data));
            assert!(r.is_ok(), "{target} panicked on {}", path.display());
            seen += 1;
        }
    }
    assert!(seen > 0, "no reproducer found under fuzz/regressions");
}

/// Answers that are not a protocol object once ended up counted as `wrong_password`.
#[test]
fn agent_answers_that_are_not_a_protocol_object_are_refused() {
    let dir = fuzz_dir().join("regressions/agent_answer");
    let files = inputs(&dir).unwrap_or_else(|| panic!("{} is missing", dir.display()));
    assert!(files.len() >= 5, "{} lost reproducers", dir.display());
    for (path, data) in files {
        assert!(
            fuzzing::agent_answer(&data).is_err(),
            "{} was accepted",
            path.display()
        );
    }
}

/// Instants that an offset moves outside years 0000-9999 once parsed, and could not be written
/// back: refused, naming `ts`.
#[test]
fn trace_instants_outside_rfc3339_years_are_refused() {
    let dir = fuzz_dir().join("regressions/trace_line");
    let files = inputs(&dir).unwrap_or_else(|| panic!("{} is missing", dir.display()));
    assert!(!files.is_empty(), "{} is empty", dir.display());
    for (path, data) in files {
        let err = fuzzing::trace_line(&data).unwrap_err();
        assert!(
            err.to_string().contains("`ts`"),
            "{}: {err}",
            path.display()
        );
    }
}
