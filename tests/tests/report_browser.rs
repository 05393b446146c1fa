//! The visual replay report in a real browser: `portcullis replay --html` and a 2x2
//! `--sweep ... --html` open in headless Chromium from `file://` with no network, their charts
//! render (checked in the DOM Chromium dumps), their numbers equal the JSON report's, no password
//! token is in them, and screenshots land in `target/screenshots/` (replay-report.png,
//! replay-sweep.png) for CI to keep.
//!
//! Needs Debian's `/usr/bin/chromium`: `scripts/install-browser.sh` installs it (`.ci/run` runs it).
//! Without it the tests fail rather than skip.

use portcullis_tests::{default_policy, run, workspace_root};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Longest a browser call may take before it is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

fn chromium() -> &'static Path {
    let path = Path::new(CHROMIUM);
    assert!(
        path.is_file(),
        "{CHROMIUM} is missing: run scripts/install-browser.sh (as root) to install Debian's chromium; \
         the browser tests do not skip without it"
    );
    path
}

/// Runs headless Chromium on `page` with `extra` arguments and no network, kills it after
/// [`BROWSER_TIMEOUT`], and returns its stdout.
fn browse(page: &Path, extra: &[String]) -> String {
    let profile = tempfile::tempdir().expect("a profile directory");
    let out_dir = tempfile::tempdir().expect("a directory for output");
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let url = format!("file://{}", page.display());
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Nothing may come from the network: any host resolves nowhere.
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {CHROMIUM}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium on {url} {extra:?} took longer than {BROWSER_TIMEOUT:?} and was killed; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "chromium on {url} {extra:?} exited with {status}; stderr:\n{}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    std::fs::read_to_string(&stdout_path).expect("chromium's stdout")
}

/// The DOM after Chromium loaded and rendered the page.
fn dump_dom(page: &Path) -> String {
    let dom = browse(page, &["--dump-dom".to_string()]);
    assert!(
        dom.contains("</html>"),
        "chromium dumped no document for {}:\n{dom}",
        page.display()
    );
    dom
}

/// Saves a 1280x1600 screenshot of `page` as `target/screenshots/<name>` and returns its path.
fn screenshot(page: &Path, name: &str) -> PathBuf {
    let dir = workspace_root().join("target").join("screenshots");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    let png = dir.join(name);
    let _ = std::fs::remove_file(&png);
    browse(
        page,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,1600".to_string(),
        ],
    );
    let bytes = std::fs::read(&png)
        .unwrap_or_else(|e| panic!("chromium wrote no screenshot {}: {e}", png.display()));
    assert!(
        bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG"),
        "{} is not a plausible PNG ({} bytes)",
        png.display(),
        bytes.len()
    );
    png
}

/// The opening tag of the element with `id`, and the markup up to its closing `</svg>`.
fn svg<'a>(dom: &'a str, id: &str) -> (&'a str, &'a str) {
    let open = format!("<svg id=\"{id}\"");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no <svg id=\"{id}\"> in the rendered DOM"));
    let rest = &dom[start..];
    let tag_end = rest.find('>').expect("the svg tag closes");
    let end = rest.find("</svg>").expect("the svg element closes");
    (&rest[..tag_end], &rest[..end])
}

/// The numeric value of attribute `name` in a tag.
fn attr(tag: &str, name: &str) -> u64 {
    let key = format!("{name}=\"");
    let at = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    let val = &tag[at..at + tag[at..].find('"').expect("attribute closes")];
    val.parse()
        .unwrap_or_else(|_| panic!("{name}={val:?} is not a number in {tag}"))
}

/// The integer in the `n`-th element carrying `data-key="<key>"` after `from` in the DOM.
fn keyed_numbers(dom: &str, key: &str) -> Vec<u64> {
    let needle = format!("data-key=\"{key}\">");
    dom.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &dom[i + needle.len()..];
            let text = &rest[..rest.find('<').expect("the cell closes")];
            text.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{key}: {text:?} is not a count"))
        })
        .collect()
}

/// Every count of `report` (objects walked recursively) as JSON pointer and value.
fn counts(report: &Value, prefix: &str, out: &mut Vec<(String, u64)>) {
    if let Some(obj) = report.as_object() {
        for (k, v) in obj {
            let p = format!("{prefix}/{k}");
            match v {
                Value::Object(_) => counts(v, &p, out),
                v => {
                    if let Some(n) = v.as_u64() {
                        out.push((p, n));
                    }
                }
            }
        }
    }
}

/// No `pw` token of the trace appears in `html`.
fn assert_no_password_tokens(trace: &Path, html: &str, what: &str) {
    let text = std::fs::read_to_string(trace).expect("the trace");
    let tokens: HashSet<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a trace line");
            v["pw"].as_str().expect("a pw token").to_string()
        })
        .collect();
    assert!(tokens.len() > 100, "the trace has too few tokens to test");
    for t in &tokens {
        assert!(
            !html.contains(t.as_str()),
            "{what} contains a password token"
        );
    }
}

fn synth_mixed_week(dir: &Path) -> PathBuf {
    let trace = dir.join("mixed_week.jsonl");
    let out = run([
        "synth".as_ref(),
        "--scenario".as_ref(),
        "mixed_week".as_ref(),
        "--users".as_ref(),
        "300".as_ref(),
        "--out".as_ref(),
        trace.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "synth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    trace
}

#[test]
fn replay_report_renders_its_charts_and_numbers_in_chromium() {
    chromium();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = synth_mixed_week(dir.path());
    let (html, json) = (
        dir.path().join("report.html"),
        dir.path().join("report.json"),
    );
    let out = run([
        "replay".as_ref(),
        "--policy".as_ref(),
        default_policy().as_os_str(),
        "--trace".as_ref(),
        trace.as_os_str(),
        "--report".as_ref(),
        json.as_os_str(),
        "--html".as_ref(),
        html.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "replay --html failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    assert!(
        report.get("timeline").is_none(),
        "--html must leave the JSON report as it was"
    );
    let source = std::fs::read_to_string(&html).expect("the HTML report");
    assert_no_password_tokens(&trace, &source, "the HTML report");
    for forbidden in ["<script", "http://", "https://", "<link", "<img", "@import"] {
        let found = source
            .match_indices(forbidden)
            .any(|(i, _)| !source[i..].starts_with("http://www.w3.org/2000/svg"));
        assert!(
            !found,
            "the HTML report is not self-contained: it has {forbidden:?}"
        );
    }

    let dom = dump_dom(&html);
    let (tag, timeline) = svg(&dom, "timeline");
    assert_eq!(attr(tag, "data-series"), 4, "{tag}");
    let buckets = attr(tag, "data-points");
    // A week in one-minute buckets is widened to stay under 4096 points.
    assert!((1000..=4096).contains(&buckets), "{tag}");
    let paths = timeline.matches("<path").count();
    assert_eq!(paths, 4, "one filled area per series in {tag}");
    let drawn: usize = timeline.matches(['V', 'H']).count();
    assert!(
        drawn > 4 * buckets as usize,
        "the timeline's paths are nearly empty ({drawn} segments)"
    );
    let (tag, events) = svg(&dom, "events");
    assert_eq!(attr(tag, "data-series"), 5, "{tag}");
    assert!(attr(tag, "data-points") >= 5, "too few events drawn: {tag}");
    assert!(events.matches("<path").count() >= 2, "{tag}");

    let mut all = Vec::new();
    counts(&report, "", &mut all);
    assert!(all.len() > 15, "{report}");
    for (pointer, value) in &all {
        assert_eq!(
            keyed_numbers(&dom, pointer),
            vec![*value],
            "the page's {pointer} differs from the JSON report's"
        );
    }
    let png = screenshot(&html, "replay-report.png");
    eprintln!("screenshot: {}", png.display());
}

#[test]
fn sweep_report_renders_its_table_and_scatter_in_chromium() {
    chromium();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = synth_mixed_week(dir.path());
    let (html, json) = (dir.path().join("sweep.html"), dir.path().join("sweep.json"));
    let out = run([
        "replay".as_ref(),
        "--policy".as_ref(),
        default_policy().as_os_str(),
        "--trace".as_ref(),
        trace.as_os_str(),
        "--sweep".as_ref(),
        "lockout.threshold=3,6".as_ref(),
        "--sweep".as_ref(),
        "spray.accounts_per_password=2,10".as_ref(),
        "--report".as_ref(),
        json.as_os_str(),
        "--html".as_ref(),
        html.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "replay --sweep --html failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    let sweep = report["sweep"].as_array().expect("a sweep array");
    assert_eq!(sweep.len(), 4, "{report}");
    let source = std::fs::read_to_string(&html).expect("the HTML sweep");
    assert_no_password_tokens(&trace, &source, "the HTML sweep");

    let dom = dump_dom(&html);
    let (tag, scatter) = svg(&dom, "sweep");
    assert_eq!(attr(tag, "data-points"), 4, "{tag}");
    assert_eq!(
        scatter.matches("<circle").count(),
        4,
        "one point per combination"
    );
    for entry in sweep {
        let r = &entry["report"];
        let (x, y) = (
            r["attack"]["forwarded"].as_u64().expect("forwarded"),
            r["legit"]["users_harmed"].as_u64().expect("users_harmed"),
        );
        assert!(
            scatter.contains(&format!("data-x=\"{x}\" data-y=\"{y}\"")),
            "no point at ({x}, {y}) for {}",
            entry["params"]
        );
    }
    for (pointer, key) in [
        ("/legit/users_harmed", "/legit/users_harmed"),
        ("/attack/forwarded", "/attack/forwarded"),
        (
            "/attack/accounts_compromised",
            "/attack/accounts_compromised",
        ),
        ("/directory/lockout_events", "/directory/lockout_events"),
    ] {
        let expected: Vec<u64> = sweep
            .iter()
            .map(|e| {
                e["report"]
                    .pointer(pointer)
                    .and_then(Value::as_u64)
                    .expect("count")
            })
            .collect();
        assert_eq!(keyed_numbers(&dom, key), expected, "table column {key}");
    }
    let png = screenshot(&html, "replay-sweep.png");
    eprintln!("screenshot: {}", png.display());
}
