//! `replay --sweep KEY=V1,V2,...`: replays one trace under every combination of policy values.
//!
//! Each combination is the policy file's text with `defaults.KEY` set to one value per swept key,
//! loaded through [`Policy::from_toml`] so that validation applies: a combination the validator
//! refuses is reported with its errors, never skipped. The trace is read once into memory and
//! shared; combinations run in parallel, one replay per core at a time.

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use portcullis_engine::policy::Policy;
use portcullis_engine::replay::{Replayer, Report};
use portcullis_engine::trace::{TraceEvent, TraceReader};
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// One `--sweep` argument: a dotted key under `[defaults]` and the values to try.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The key under `[defaults]`, e.g. `lockout.threshold`.
    pub key: String,
    /// The values, in the order given.
    pub values: Vec<toml::Value>,
}

/// Parses `KEY=V1,V2,...`. A value is read as TOML (`3`, `2.5`, `true`, `"15m"`, `[64, 48]`) or,
/// when it is not valid TOML, as a bare string (`15m`, `log_only`). Commas inside `[...]` or
/// quotes do not split.
pub fn parse_axis(spec: &str) -> Result<Axis> {
    let Some((key, values)) = spec.split_once('=') else {
        bail!("--sweep {spec:?}: expected KEY=V1,V2,... (e.g. lockout.threshold=3,5,7)");
    };
    let key = key.trim();
    if key.is_empty()
        || key
            .split('.')
            .any(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        bail!("--sweep {spec:?}: {key:?} is not a dotted key such as lockout.threshold");
    }
    let values: Vec<toml::Value> = split_values(values)
        .into_iter()
        .map(|v| parse_value(v.trim()))
        .collect::<Result<_>>()
        .with_context(|| format!("--sweep {spec:?}"))?;
    if values.is_empty() {
        bail!("--sweep {spec:?}: no values");
    }
    Ok(Axis {
        key: key.to_string(),
        values,
    })
}

fn split_values(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut quoted, mut start) = (Vec::new(), 0i32, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '"' | '\'' => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_value(v: &str) -> Result<toml::Value> {
    if v.is_empty() {
        bail!("an empty value");
    }
    match toml::from_str::<toml::Table>(&format!("v = {v}")) {
        Ok(mut t) => Ok(t.remove("v").expect("the key just parsed")),
        Err(_) => Ok(toml::Value::String(v.to_string())),
    }
}

/// Every combination of the axes' values (the first axis varies slowest), as `(key, value)`
/// lists in axis order.
pub fn combinations(axes: &[Axis]) -> Vec<Vec<(String, toml::Value)>> {
    let mut out: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for axis in axes {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                axis.values.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push((axis.key.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    out
}

/// The policy `text` with `defaults.KEY = value` for every param, validated. `Err` holds every
/// error, each naming its key, as `check-policy` would print them.
pub fn policy_with(
    text: &str,
    params: &[(String, toml::Value)],
) -> std::result::Result<Policy, Vec<String>> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| vec![e.to_string()])?;
    for (key, value) in params {
        let mut at = &mut table;
        let mut path = String::new();
        let segments: Vec<&str> = std::iter::once("defaults").chain(key.split('.')).collect();
        let (last, parents) = segments
            .split_last()
            .expect("at least `defaults` and a key");
        for seg in parents {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(seg);
            let next = at
                .entry(seg.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            at = match next {
                toml::Value::Table(t) => t,
                other => {
                    return Err(vec![format!(
                        "{path}: is a {}, not a table, so {path}.{last} cannot be set",
                        other.type_str()
                    )])
                }
            };
        }
        at.insert(last.to_string(), value.clone());
    }
    let text = toml::to_string(&table).map_err(|e| vec![e.to_string()])?;
    Policy::from_toml(&text).map_err(|e| match e {
        portcullis_engine::Error::Policy(errs) => errs,
        other => vec![other.to_string()],
    })
}

/// What one combination gave.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The replay's report.
    Report(Box<Report>),
    /// The validator's errors: the combination was not replayed.
    Refused(Vec<String>),
}

/// One combination and its result; JSON `{"params":{...},"report":{...}}` or
/// `{"params":{...},"refused":[...]}`.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// The swept keys (under `[defaults]`) and their values, sorted by key in JSON.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The same, in axis order, as `key=value` text for tables and labels.
    #[serde(skip)]
    pub label: String,
    /// The report or the refusal.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Reads a whole trace into memory, with a progress bar over its bytes.
fn read_trace(trace: &Path) -> Result<Vec<TraceEvent>> {
    // The trace's error names the file and why.
    let mut reader = TraceReader::open(trace)?;
    let pb = crate::replay::progress(reader.total_bytes().unwrap_or(0), "reading trace");
    let mut events = Vec::new();
    while let Some(ev) = reader.next() {
        events.push(ev.with_context(|| format!("reading trace {}", trace.display()))?);
        if events.len() % 4096 == 0 {
            pb.set_position(reader.bytes_read());
        }
    }
    pb.finish_and_clear();
    Ok(events)
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Replays `trace` under every combination of `axes` applied to the policy file, in parallel.
pub fn run(policy_path: &Path, trace: &Path, axes: &[Axis]) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(policy_path)
        .with_context(|| format!("reading policy {}", policy_path.display()))?;
    let events = read_trace(trace)?;
    let combos = combinations(axes);
    let policies: Vec<std::result::Result<Policy, Vec<String>>> =
        combos.iter().map(|c| policy_with(&text, c)).collect();
    let runnable = policies.iter().filter(|p| p.is_ok()).count();
    let pb = crate::replay::progress(
        (runnable * events.len()) as u64,
        &format!("sweep of {} combinations", combos.len()),
    );
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(runnable.max(1));
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<Option<Report>>> = Mutex::new(vec![None; combos.len()]);
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| worker(&policies, &events, &next, &reports, &pb)))
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a sweep worker panicked"))??;
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    let mut reports = reports.into_inner().expect("workers are done");
    let entries = combos
        .iter()
        .zip(policies)
        .enumerate()
        .map(|(i, (combo, policy))| {
            let params = combo
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                .collect();
            let label = combo
                .iter()
                .map(|(k, v)| format!("{k}={}", value_text(v)))
                .collect::<Vec<_>>()
                .join(" ");
            let outcome = match policy {
                Ok(_) => Outcome::Report(Box::new(
                    reports[i].take().expect("every valid combination replayed"),
                )),
                Err(errs) => Outcome::Refused(errs),
            };
            Entry {
                params,
                label,
                outcome,
            }
        })
        .collect();
    Ok(entries)
}

/// Takes combinations off `next` until none is left and replays each valid one.
fn worker(
    policies: &[std::result::Result<Policy, Vec<String>>],
    events: &[TraceEvent],
    next: &AtomicUsize,
    reports: &Mutex<Vec<Option<Report>>>,
    pb: &ProgressBar,
) -> Result<()> {
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(policy) = policies.get(i) else {
            return Ok(());
        };
        let Ok(policy) = policy else { continue };
        let started = Instant::now();
        let mut replayer = Replayer::new(policy.clone())?;
        for chunk in events.chunks(4096) {
            for ev in chunk {
                replayer.feed(ev);
            }
            pb.inc(chunk.len() as u64);
        }
        let mut report = replayer.finish();
        report.wall_seconds = started.elapsed().as_secs_f64();
        report.events_per_second = report.events as f64 / report.wall_seconds.max(1e-9);
        reports.lock().expect("no worker panics holding it")[i] = Some(report);
    }
}

/// Prints one row per combination: its values, then the scores that trade off.
pub fn print_table(axes: &[Axis], entries: &[Entry]) {
    let mut header: Vec<String> = axes.iter().map(|a| a.key.clone()).collect();
    header.extend(
        [
            "users harmed",
            "legit harmed",
            "attack fwd",
            "compromised",
            "AD lockouts",
            "flagged",
        ]
        .map(String::from),
    );
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut row: Vec<String> = e.params_in(axes);
            match &e.outcome {
                Outcome::Report(r) => row.extend(
                    [
                        r.legit.users_harmed,
                        r.legit.harmed,
                        r.attack.forwarded,
                        r.attack.accounts_compromised,
                        r.directory.lockout_events,
                        r.accounts_flagged,
                    ]
                    .map(|n| n.to_string()),
                ),
                Outcome::Refused(errs) => row.push(format!(
                    "refused: {}",
                    errs.first().map_or("", String::as_str)
                )),
            }
            row
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .filter(|r| r.len() == header.len())
                .filter_map(|r| r.get(c))
                .chain(std::iter::once(&header[c]))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:>w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(&header));
    for r in &rows {
        println!("{}", line(r));
    }
}

impl Entry {
    /// The values of `axes` in this combination, as text, in axis order.
    pub fn params_in(&self, axes: &[Axis]) -> Vec<String> {
        axes.iter()
            .map(|a| match self.params.get(&a.key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_strings_and_arrays() {
        let a = parse_axis("sources.ipv6_prefixes=[64, 48],[56]").expect("axis");
        assert_eq!(a.key, "sources.ipv6_prefixes");
        assert_eq!(a.values.len(), 2);
        let b = parse_axis("lockout.duration=60s,\"15m\"").expect("axis");
        assert_eq!(
            b.values,
            vec![
                toml::Value::String("60s".into()),
                toml::Value::String("15m".into())
            ]
        );
        let c = parse_axis("lockout.threshold=3,5,7").expect("axis");
        assert_eq!(c.values, vec![3.into(), 5.into(), 7.into()]);
        assert!(parse_axis("lockout.threshold").is_err());
        assert!(parse_axis("lock out=3").is_err());
        assert!(parse_axis("lockout.threshold=3,,5").is_err());
    }

    #[test]
    fn combines_every_value_of_every_axis() {
        let axes = [
            parse_axis("a.x=1,2").expect("axis"),
            parse_axis("b.y=3,4,5").expect("axis"),
        ];
        let c = combinations(&axes);
        assert_eq!(c.len(), 6);
        assert_eq!(
            c[0],
            vec![("a.x".into(), 1.into()), ("b.y".into(), 3.into())]
        );
        assert_eq!(
            c[5],
            vec![("a.x".into(), 2.into()), ("b.y".into(), 5.into())]
        );
    }

    #[test]
    fn sets_the_key_under_defaults_and_validates() {
        let text = "version = \"t\"\n[defaults.lockout]\nthreshold = 5\n";
        let p = policy_with(text, &[("lockout.threshold".into(), 3.into())]).expect("valid");
        assert_eq!(p.defaults.lockout.threshold, 3);
        let p = policy_with(text, &[("spray.accounts_per_password".into(), 9.into())])
            .expect("a section the file lacks is created");
        assert_eq!(p.defaults.spray.accounts_per_password, 9);
        let errs = policy_with(text, &[("lockout.threshold".into(), 12.into())])
            .expect_err("above the directory's threshold");
        assert!(
            errs.iter().any(|e| e.contains("lockout.threshold")),
            "{errs:?}"
        );
        let errs = policy_with(text, &[("lockout.threshold.x".into(), 1.into())])
            .expect_err("not a table");
        assert!(errs[0].contains("defaults.lockout.threshold"), "{errs:?}");
    }
}
