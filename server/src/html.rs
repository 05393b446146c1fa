//! The visual replay report: one self-contained HTML page with inline SVG charts drawn here.
//!
//! What always holds: the page loads nothing (no script, no stylesheet, no font, no image from
//! anywhere), so it renders the same from `file://` without a network; every chart is an `<svg>`
//! with an `id` and `data-series` / `data-points` attributes saying what it drew, and every
//! number of the report sits in an element with a `data-key` naming its JSON pointer in the
//! report, for tests. Only aggregates appear: no account name, address or password token.

use crate::sweep::{Axis, Entry, Outcome};
use portcullis_engine::replay::{Bucket, Report, Timeline};
use portcullis_server::dashboard::escape as esc;
use std::fmt::Write as _;

/// Where a report came from, shown in its header.
pub struct Source<'a> {
    /// The policy file, as given.
    pub policy: &'a str,
    /// The policy's version.
    pub version: &'a str,
    /// The trace file, as given.
    pub trace: &'a str,
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px;color:#222;max-width:1240px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}p.meta{color:#555;margin:0 0 12px;font-size:13px}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f3f3f3}td.k,th.k{text-align:left}.grid{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}\
svg{background:#fff;border:1px solid #ddd}svg text{font-size:11px;fill:#333}.note{color:#555;font-size:12px;max-width:1200px}\
tr.refused td{color:#999}tr.front td{background:#eef7ee}";

const LEGIT_FWD: &str = "#2e7d32";
const LEGIT_BLK: &str = "#f9a825";
const ATTACK_FWD: &str = "#c62828";
const ATTACK_BLK: &str = "#78909c";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
<title>{}</title><style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n",
        esc(title)
    )
}

/// `2026-11-02 08:00` (UTC) for milliseconds since the epoch.
fn when(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn duration_words(ms: i64) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{} d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

/// A round axis maximum at or above `v` (1, 2 or 5 times a power of ten; at least 1).
fn nice_max(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&m| m >= v)
        .unwrap_or(10.0 * p)
}

fn number_rows(r: &Report) -> Vec<(String, String, u64)> {
    let mut rows = vec![
        ("/events".into(), "events".into(), r.events),
        (
            "/legit/attempts".into(),
            "legit attempts".into(),
            r.legit.attempts,
        ),
        (
            "/legit/forwarded".into(),
            "legit forwarded".into(),
            r.legit.forwarded,
        ),
        (
            "/legit/blocked".into(),
            "legit blocked".into(),
            r.legit.blocked,
        ),
        (
            "/legit/succeeded".into(),
            "legit succeeded".into(),
            r.legit.succeeded,
        ),
        (
            "/legit/harmed".into(),
            "legit harmed (attempts)".into(),
            r.legit.harmed,
        ),
        (
            "/legit/users_harmed".into(),
            "legit users harmed".into(),
            r.legit.users_harmed,
        ),
        (
            "/attack/attempts".into(),
            "attack attempts".into(),
            r.attack.attempts,
        ),
        (
            "/attack/forwarded".into(),
            "attack forwarded".into(),
            r.attack.forwarded,
        ),
        (
            "/attack/blocked".into(),
            "attack blocked".into(),
            r.attack.blocked,
        ),
        (
            "/attack/succeeded".into(),
            "attack succeeded".into(),
            r.attack.succeeded,
        ),
        (
            "/attack/accounts_compromised".into(),
            "accounts compromised".into(),
            r.attack.accounts_compromised,
        ),
        (
            "/directory/lockout_events".into(),
            "directory lockout events".into(),
            r.directory.lockout_events,
        ),
        (
            "/directory/accounts_locked".into(),
            "directory accounts locked".into(),
            r.directory.accounts_locked,
        ),
        (
            "/directory/legit_users_locked".into(),
            "legit users locked in the directory".into(),
            r.directory.legit_users_locked,
        ),
        (
            "/accounts_flagged".into(),
            "accounts flagged (sprayed password)".into(),
            r.accounts_flagged,
        ),
    ];
    for (reason, n) in &r.decisions {
        rows.push((
            format!("/decisions/{reason}"),
            format!("decision {reason}"),
            *n,
        ));
    }
    rows
}

fn numbers_table(r: &Report) -> String {
    let mut out =
        String::from("<table id=\"numbers\"><tr><th class=\"k\">measure</th><th>count</th></tr>\n");
    for (key, name, n) in number_rows(r) {
        let _ = writeln!(
            out,
            "<tr><td class=\"k\">{}</td><td data-key=\"{}\">{n}</td></tr>",
            esc(&name),
            esc(&key)
        );
    }
    out.push_str("</table>\n");
    out
}

/// A series of a time chart: its name, its colour and how to read it from a bucket.
type Series<'a> = (&'a str, &'a str, fn(&Bucket) -> u64);

/// Horizontal geometry shared by the time charts.
struct Frame {
    left: f64,
    width: f64,
    buckets: usize,
}

impl Frame {
    fn x(&self, i: usize) -> f64 {
        self.left + self.width * i as f64 / self.buckets.max(1) as f64
    }
}

/// Time ticks and labels along the bottom of a chart ending at `y`.
fn time_axis(out: &mut String, f: &Frame, t: &Timeline, top: f64, y: f64) {
    let span_ms = t.bucket_ms * f.buckets as i64;
    let step_ms = [
        3_600_000i64,
        3 * 3_600_000,
        6 * 3_600_000,
        12 * 3_600_000,
        86_400_000,
        2 * 86_400_000,
        7 * 86_400_000,
    ]
    .into_iter()
    .find(|s| span_ms / s <= 8)
    .unwrap_or(30 * 86_400_000);
    let first = (t.start_ms + step_ms - 1).div_euclid(step_ms) * step_ms;
    let mut tick = first;
    while tick <= t.start_ms + span_ms {
        let x = f.left + f.width * (tick - t.start_ms) as f64 / span_ms.max(1) as f64;
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            y + 14.0,
            when(tick)
        );
        tick += step_ms;
    }
}

/// One panel of stacked step areas; returns the number of path elements drawn.
#[allow(clippy::too_many_arguments)]
fn stacked_panel(
    out: &mut String,
    f: &Frame,
    t: &Timeline,
    top: f64,
    height: f64,
    title: &str,
    series: &[Series<'_>],
) -> usize {
    let n = t.buckets.len();
    let totals: Vec<u64> = t
        .buckets
        .iter()
        .map(|b| series.iter().map(|(_, _, get)| get(b)).sum())
        .collect();
    let max = nice_max(totals.iter().copied().max().unwrap_or(0) as f64);
    let bottom = top + height;
    let y = |v: u64| bottom - height * v as f64 / max;
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
        f.left,
        top - 6.0,
        esc(title)
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = max * frac;
        let yy = bottom - height * frac;
        let _ = write!(
            out,
            "<line x1=\"{:.1}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v}</text>",
            f.left,
            f.left + f.width,
            f.left - 6.0,
            yy + 4.0
        );
    }
    let mut lower = vec![0u64; n];
    let mut drawn = 0;
    for (name, color, get) in series {
        let upper: Vec<u64> = t
            .buckets
            .iter()
            .zip(&lower)
            .map(|(b, l)| l + get(b))
            .collect();
        let mut d = format!(
            "M{:.1},{:.1}",
            f.x(0),
            y(lower.first().copied().unwrap_or(0))
        );
        for (i, u) in upper.iter().enumerate() {
            let _ = write!(d, "V{:.1}H{:.1}", y(*u), f.x(i + 1));
        }
        for i in (0..n).rev() {
            let _ = write!(d, "V{:.1}H{:.1}", y(lower[i]), f.x(i));
        }
        d.push('Z');
        let _ = write!(
            out,
            "<path class=\"series\" data-name=\"{}\" fill=\"{color}\" stroke=\"none\" shape-rendering=\"crispEdges\" d=\"{d}\"/>",
            esc(name)
        );
        drawn += 1;
        lower = upper;
    }
    drawn
}

fn legend(out: &mut String, x: f64, y: f64, items: &[(&str, &str, u64)]) {
    let mut x = x;
    for (name, color, total) in items {
        let label = format!("{name} ({total})");
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
<text x=\"{:.1}\" y=\"{y:.1}\">{}</text>",
            y - 10.0,
            x + 16.0,
            esc(&label)
        );
        x += 16.0 + 7.0 * label.chars().count() as f64 + 18.0;
    }
}

/// The attempts timeline: legit and attack panels, each stacked forwarded / blocked.
fn timeline_svg(t: &Timeline) -> String {
    let (w, h) = (1200.0, 470.0);
    let f = Frame {
        left: 60.0,
        width: w - 80.0,
        buckets: t.buckets.len(),
    };
    let sum = t.total();
    let mut body = String::new();
    let unit = duration_words(t.bucket_ms);
    let mut drawn = stacked_panel(
        &mut body,
        &f,
        t,
        50.0,
        160.0,
        &format!("Legit attempts per {unit}"),
        &[
            ("legit forwarded", LEGIT_FWD, |b| b.legit_forwarded),
            ("legit blocked", LEGIT_BLK, |b| b.legit_blocked),
        ],
    );
    drawn += stacked_panel(
        &mut body,
        &f,
        t,
        250.0,
        160.0,
        &format!("Attack attempts per {unit}"),
        &[
            ("attack forwarded", ATTACK_FWD, |b| b.attack_forwarded),
            ("attack blocked", ATTACK_BLK, |b| b.attack_blocked),
        ],
    );
    time_axis(&mut body, &f, t, 250.0, 410.0);
    legend(
        &mut body,
        f.left,
        22.0,
        &[
            ("legit forwarded", LEGIT_FWD, sum.legit_forwarded),
            ("legit blocked", LEGIT_BLK, sum.legit_blocked),
            ("attack forwarded", ATTACK_FWD, sum.attack_forwarded),
            ("attack blocked", ATTACK_BLK, sum.attack_blocked),
        ],
    );
    format!(
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
viewBox=\"0 0 {w} {h}\" data-series=\"{drawn}\" data-points=\"{}\" data-bucket-ms=\"{}\">{body}</svg>\n",
        t.buckets.len(),
        t.bucket_ms
    )
}

/// Events over time, one lane each: a tick per bucket where it happened, taller for more.
fn events_svg(t: &Timeline) -> String {
    let lanes: [Series<'_>; 5] = [
        ("directory lockouts (simulated AD)", "#b71c1c", |b| {
            b.directory_lockouts
        }),
        ("smart lockouts started (engine)", "#6a1b9a", |b| {
            b.lockouts_started
        }),
        ("source blocks started (engine)", "#1565c0", |b| {
            b.source_blocks
        }),
        ("sprayed passwords detected", "#ef6c00", |b| {
            b.sprays_detected
        }),
        ("accounts flagged (sprayed password)", "#00838f", |b| {
            b.accounts_flagged
        }),
    ];
    let lane_h = 46.0;
    let top = 20.0;
    let (w, h) = (1200.0, top + lane_h * lanes.len() as f64 + 30.0);
    let f = Frame {
        left: 250.0,
        width: w - 270.0,
        buckets: t.buckets.len(),
    };
    let mut body = String::new();
    let mut points = 0usize;
    let mut drawn = 0usize;
    for (k, (name, color, get)) in lanes.iter().enumerate() {
        let y0 = top + lane_h * k as f64;
        let base = y0 + lane_h - 8.0;
        let values: Vec<u64> = t.buckets.iter().map(get).collect();
        let total: u64 = values.iter().sum();
        let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
        let _ = write!(
            body,
            "<text x=\"8\" y=\"{:.1}\">{}</text><text x=\"8\" y=\"{:.1}\" font-weight=\"bold\" data-lane-total=\"{k}\">{total}</text>\
<line x1=\"{:.1}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\" stroke=\"#bbb\"/>",
            y0 + 18.0,
            esc(name),
            y0 + 33.0,
            f.left,
            f.left + f.width
        );
        let mut d = String::new();
        for (i, v) in values.iter().enumerate().filter(|(_, v)| **v > 0) {
            let len = 6.0 + (lane_h - 20.0) * (*v as f64 / max).sqrt();
            let x = (f.x(i) + f.x(i + 1)) / 2.0;
            let _ = write!(d, "M{x:.1},{base:.1}v{:.1}", -len);
            points += 1;
        }
        if !d.is_empty() {
            let _ = write!(
                body,
                "<path class=\"series\" data-name=\"{}\" stroke=\"{color}\" stroke-width=\"2\" fill=\"none\" d=\"{d}\"/>",
                esc(name)
            );
            drawn += 1;
        }
    }
    time_axis(&mut body, &f, t, top, top + lane_h * lanes.len() as f64);
    format!(
        "<svg id=\"events\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
viewBox=\"0 0 {w} {h}\" data-series=\"{}\" data-drawn=\"{drawn}\" data-points=\"{points}\">{body}</svg>\n",
        lanes.len()
    )
}

/// The page for one replay: its numbers, the attempts timeline and the events over time.
pub fn replay_page(r: &Report, src: &Source<'_>) -> String {
    let mut body = String::new();
    let _ = writeln!(
        body,
        "<h1>Portcullis replay report</h1>\n<p class=\"meta\">policy <b>{}</b> (version {}), trace <b>{}</b>, {} events</p>",
        esc(src.policy),
        esc(src.version),
        esc(src.trace),
        r.events
    );
    if let Some(t) = &r.timeline {
        if let (Some(_), true) = (t.buckets.first(), t.bucket_ms > 0) {
            let end = t.start_ms + t.bucket_ms * t.buckets.len() as i64;
            let _ = writeln!(
                body,
                "<p class=\"meta\">{} to {} UTC, {} buckets of {}</p>",
                when(t.start_ms),
                when(end),
                t.buckets.len(),
                duration_words(t.bucket_ms)
            );
        }
        body.push_str("<h2>Attempts over time</h2>\n");
        body.push_str(&timeline_svg(t));
        body.push_str(
            "<h2>Lockouts, blocks and sprays over time</h2>\n<p class=\"note\">One lane per kind of event, \
a tick in every bucket where it happened (taller for more); the number is the total. The directory's \
lockouts are those the simulated Active Directory started: with a sound policy there are none.</p>\n",
        );
        body.push_str(&events_svg(t));
    }
    body.push_str("<h2>Scores</h2>\n<div class=\"grid\">");
    body.push_str(&numbers_table(r));
    body.push_str(
        "<p class=\"note\">A legit user is <i>harmed</i> when a legit attempt with the right password does not \
succeed (blocked, or the account locked in the directory); an account is <i>compromised</i> when an attack \
attempt signs in to it. <i>Blocked</i> counts every attempt not forwarded, <code>wrong_password</code> \
answers included.</p></div>\n",
    );
    page("Portcullis replay report", &body)
}

/// Combinations no other beats on both axes (fewer users harmed and fewer attacks forwarded):
/// the candidates for the knee. Indices into `points`.
fn pareto_front(points: &[(u64, u64)]) -> Vec<usize> {
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let (x, y) = points[i];
            !points
                .iter()
                .any(|&(ox, oy)| ox <= x && oy <= y && (ox < x || oy < y))
        })
        .collect();
    front.sort_by_key(|&i| points[i]);
    front
}

/// An axis over `[lo, hi]`: a round start, end and tick step (1, 2 or 5 times a power of ten),
/// with at most about five ticks.
fn axis_range(lo: u64, hi: u64) -> (f64, f64, f64) {
    let span = (hi - lo).max(1) as f64;
    let step = nice_max(span / 4.0);
    let start = (lo as f64 / step).floor() * step;
    let mut end = (hi as f64 / step).ceil() * step;
    if end <= start {
        end = start + step;
    }
    (start, end, step)
}

fn scatter_svg(axes: &[Axis], entries: &[&Entry], reports: &[&Report], front: &[usize]) -> String {
    let (w, h) = (900.0, 520.0);
    let (left, top, pw, ph) = (80.0, 40.0, w - 120.0, h - 110.0);
    let xs: Vec<u64> = reports.iter().map(|r| r.attack.forwarded).collect();
    let ys: Vec<u64> = reports.iter().map(|r| r.legit.users_harmed).collect();
    let (x0, x1, xstep) = axis_range(
        xs.iter().copied().min().unwrap_or(0),
        xs.iter().copied().max().unwrap_or(0),
    );
    let (y0, y1, ystep) = axis_range(0, ys.iter().copied().max().unwrap_or(0).max(1));
    // A margin inside the frame so that points on the edges stay whole.
    let px = |v: u64| left + 20.0 + (pw - 40.0) * (v as f64 - x0) / (x1 - x0);
    let py = |v: u64| top + ph - 20.0 - (ph - 40.0) * (v as f64 - y0) / (y1 - y0);
    let mut body = String::new();
    let mut v = x0;
    while v <= x1 + xstep / 2.0 {
        let x = left + 20.0 + (pw - 40.0) * (v - x0) / (x1 - x0);
        let _ = write!(
            body,
            "<line x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{v}</text>",
            top + ph,
            top + ph + 16.0
        );
        v += xstep;
    }
    let mut v = y0;
    while v <= y1 + ystep / 2.0 {
        let y = top + ph - 20.0 - (ph - 40.0) * (v - y0) / (y1 - y0);
        let _ = write!(
            body,
            "<line x1=\"{left:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v}</text>",
            left + pw,
            left - 6.0,
            y + 4.0
        );
        v += ystep;
    }
    let keys: Vec<&str> = axes.iter().map(|a| a.key.as_str()).collect();
    let _ = write!(
        body,
        "<text x=\"{left}\" y=\"30\">Point labels: {}</text>",
        esc(&keys.join(", "))
    );
    let _ = write!(
        body,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">attack attempts forwarded to the directory</text>\
<text transform=\"translate(18,{:.1}) rotate(-90)\" text-anchor=\"middle\" font-weight=\"bold\">legit users harmed</text>",
        left + pw / 2.0,
        h - 30.0,
        top + ph / 2.0
    );
    if front.len() > 1 {
        let pts: Vec<String> = front
            .iter()
            .map(|&i| format!("{:.1},{:.1}", px(xs[i]), py(ys[i])))
            .collect();
        let _ = write!(
            body,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#2e7d32\" stroke-dasharray=\"5,4\"/>",
            pts.join(" ")
        );
    }
    for (i, (e, _)) in entries.iter().zip(reports).enumerate() {
        let on_front = front.contains(&i);
        let (x, y) = (px(xs[i]), py(ys[i]));
        let _ = write!(
            body,
            "<circle class=\"point\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"6\" fill=\"{}\" fill-opacity=\"0.8\" \
data-x=\"{}\" data-y=\"{}\"><title>{}</title></circle>\
<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            if on_front { "#2e7d32" } else { "#1565c0" },
            xs[i],
            ys[i],
            esc(&e.label),
            x + 8.0,
            y - 6.0 - 11.0 * (i % 3) as f64,
            esc(&e.params_in(axes).join(", "))
        );
    }
    let _ = write!(
        body,
        "<text x=\"{left}\" y=\"18\">Each point is one combination; green: no other one harms fewer users \
and forwards fewer attacks (the dashed line is that front).</text>"
    );
    format!(
        "<svg id=\"sweep\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
viewBox=\"0 0 {w} {h}\" data-series=\"1\" data-points=\"{}\">{body}</svg>\n",
        reports.len()
    )
}

/// The page for a sweep: a table of every combination and the harm / attacks-forwarded scatter.
pub fn sweep_page(axes: &[Axis], entries: &[Entry], src: &Source<'_>) -> String {
    let ok: Vec<(&Entry, &Report)> = entries
        .iter()
        .filter_map(|e| match &e.outcome {
            Outcome::Report(r) => Some((e, &**r)),
            Outcome::Refused(_) => None,
        })
        .collect();
    let points: Vec<(u64, u64)> = ok
        .iter()
        .map(|(_, r)| (r.attack.forwarded, r.legit.users_harmed))
        .collect();
    let front = pareto_front(&points);
    let mut body = String::new();
    let _ = writeln!(
        body,
        "<h1>Portcullis policy sweep</h1>\n<p class=\"meta\">policy <b>{}</b> (version {}), trace <b>{}</b>; \
{} combinations, {} replayed, {} refused by the validator</p>",
        esc(src.policy),
        esc(src.version),
        esc(src.trace),
        entries.len(),
        ok.len(),
        entries.len() - ok.len()
    );
    body.push_str("<h2>Legit harm against attacks forwarded</h2>\n");
    let (es, rs): (Vec<&Entry>, Vec<&Report>) = ok.iter().copied().unzip();
    body.push_str(&scatter_svg(axes, &es, &rs, &front));
    body.push_str("<h2>Every combination</h2>\n<table id=\"sweep-table\"><tr>");
    for a in axes {
        let _ = write!(body, "<th class=\"k\">{}</th>", esc(&a.key));
    }
    body.push_str(
        "<th>users harmed</th><th>legit harmed</th><th>legit blocked</th><th>attack forwarded</th>\
<th>compromised</th><th>AD lockouts</th><th>flagged</th></tr>\n",
    );
    let mut ok_index = 0;
    for (i, e) in entries.iter().enumerate() {
        let params = e.params_in(axes);
        match &e.outcome {
            Outcome::Report(r) => {
                let class = if front.contains(&ok_index) {
                    " class=\"front\""
                } else {
                    ""
                };
                ok_index += 1;
                let _ = write!(body, "<tr{class} data-row=\"{i}\">");
                for p in &params {
                    let _ = write!(body, "<td class=\"k\">{}</td>", esc(p));
                }
                for (key, n) in [
                    ("/legit/users_harmed", r.legit.users_harmed),
                    ("/legit/harmed", r.legit.harmed),
                    ("/legit/blocked", r.legit.blocked),
                    ("/attack/forwarded", r.attack.forwarded),
                    (
                        "/attack/accounts_compromised",
                        r.attack.accounts_compromised,
                    ),
                    ("/directory/lockout_events", r.directory.lockout_events),
                    ("/accounts_flagged", r.accounts_flagged),
                ] {
                    let _ = write!(body, "<td data-key=\"{key}\">{n}</td>");
                }
                body.push_str("</tr>\n");
            }
            Outcome::Refused(errs) => {
                let _ = write!(body, "<tr class=\"refused\" data-row=\"{i}\">");
                for p in &params {
                    let _ = write!(body, "<td class=\"k\">{}</td>", esc(p));
                }
                let _ = writeln!(
                    body,
                    "<td class=\"k\" colspan=\"7\">refused: {}</td></tr>",
                    esc(&errs.join("; "))
                );
            }
        }
    }
    body.push_str("</table>\n");
    page("Portcullis policy sweep", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn rounds_axis_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(11.0), 20.0);
        assert_eq!(nice_max(450.0), 500.0);
    }

    #[test]
    fn axis_ranges_are_round_and_cover_the_data() {
        assert_eq!(axis_range(1224, 1262), (1220.0, 1270.0, 10.0));
        assert_eq!(axis_range(0, 1), (0.0, 1.0, 1.0));
        assert_eq!(axis_range(5, 5), (5.0, 6.0, 1.0));
    }

    #[test]
    fn pareto_front_keeps_only_undominated_points() {
        let pts = [(10, 0), (5, 1), (6, 1), (1, 5), (7, 7)];
        assert_eq!(pareto_front(&pts), vec![3, 1, 0]);
    }
}
