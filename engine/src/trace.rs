//! Sign-in trace format, version 1 (`shared/trace-format.md`): parsing, writing and streaming.
//!
//! A trace is JSON Lines, one sign-in attempt per line, in ascending `ts` order; a file whose name
//! ends in `.gz` is gzip-compressed. This module turns lines into [`TraceEvent`]s
//! ([`parse_line`]), events back into lines ([`to_json_line`]) and reads whole files as a stream
//! ([`TraceReader`]).
//!
//! What always holds:
//! - A line either parses completely or yields a [`TraceError::Line`] carrying its 1-based line
//!   number and naming the offending field; nothing is guessed or defaulted except `tenant`
//!   (`"default"` when absent) and the optional `label` / `app`. Unknown extra fields are ignored.
//! - A [`TraceReader`] never yields an event whose `ts` is earlier than the one before it (equal
//!   stamps are fine), and it stops after the first error.
//! - No error message ever contains a `pw` token: tokens are secrets (keyed password fingerprints)
//!   in production.
//! - [`to_json_line`] output parses back with [`parse_line`] to an equal event.

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::marker::PhantomData;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Tenant id used when a line has no `tenant` field.
pub const DEFAULT_TENANT: &str = "default";

/// Buffer size for [`TraceReader::open`], in bytes (128 KiB): large enough that a read costs
/// nothing per line, small enough that the first lines arrive without waiting for a megabyte to
/// be faulted in and copied.
const READ_BUFFER_BYTES: usize = 1 << 17;

/// Longest prefix of an offending value quoted in an error message, in characters.
const MAX_QUOTED_CHARS: usize = 64;

/// What went wrong reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The trace file could not be opened or its size read.
    #[error("cannot open trace {}: {source}", path.display())]
    Open {
        /// The path given to [`TraceReader::open`].
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading (or decompressing) the trace failed part-way.
    #[error("trace read error: {0}")]
    Io(#[from] io::Error),
    /// A line is not a valid trace event, or is out of time order.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line number in the (decompressed) trace.
        line: u64,
        /// The field at fault (`ts`, `user`, ...), when one is.
        field: Option<&'static str>,
        /// What is wrong, naming the field, e.g. ``field `ts`: invalid RFC 3339 instant "2026-13-01"``.
        /// Never contains a `pw` value.
        message: String,
    },
}

impl TraceError {
    fn field(line: u64, field: &'static str, what: impl fmt::Display) -> Self {
        TraceError::Line {
            line,
            field: Some(field),
            message: format!("field `{field}`: {what}"),
        }
    }
}

/// What the directory would answer for an attempt if it reached it and the account were not locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truth {
    /// The password is the account's current password.
    Correct,
    /// The account exists and the password is not its current one.
    Wrong,
    /// No such account in the tenant.
    UnknownUser,
}

impl Truth {
    /// The trace-format spelling: `correct`, `wrong` or `unknown_user`.
    pub fn as_str(self) -> &'static str {
        match self {
            Truth::Correct => "correct",
            Truth::Wrong => "wrong",
            Truth::UnknownUser => "unknown_user",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "correct" => Some(Truth::Correct),
            "wrong" => Some(Truth::Wrong),
            "unknown_user" => Some(Truth::UnknownUser),
            _ => None,
        }
    }
}

impl fmt::Display for Truth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ground-truth origin of an attempt, for scoring only: the engine never reads it for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// The account's owner (or their devices).
    Legit,
    /// An attacker.
    Attack,
}

impl Label {
    /// The trace-format spelling: `legit` or `attack`.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Legit => "legit",
            Label::Attack => "attack",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "legit" => Some(Label::Legit),
            "attack" => Some(Label::Attack),
            _ => None,
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sign-in attempt as the broker saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// When the attempt arrived, in milliseconds since the Unix epoch, UTC. Sub-millisecond
    /// digits in the trace are truncated (floored).
    pub ts_ms: i64,
    /// Tenant id; `"default"` ([`DEFAULT_TENANT`]) when the line has none.
    pub tenant: String,
    /// The sign-in name exactly as typed (case, spaces and Unicode form may vary).
    pub user: String,
    /// Client address as the broker saw it.
    pub ip: IpAddr,
    /// Opaque password token: equal tokens mean the same password. Secret: never log it.
    pub pw: String,
    /// What the directory would answer (see [`Truth`]).
    pub truth: Truth,
    /// Scoring label, when the trace has one.
    pub label: Option<Label>,
    /// Client kind (`browser`, `activesync`, `legacy`, ...), when the trace has one.
    pub app: Option<String>,
}

impl TraceEvent {
    /// The event as an [`EventRef`], borrowing its strings.
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            ts_ms: self.ts_ms,
            tenant: &self.tenant,
            user: &self.user,
            ip: self.ip,
            pw: &self.pw,
            truth: self.truth,
            label: self.label,
            app: self.app.as_deref(),
        }
    }
}

/// One attempt with borrowed strings: a [`TraceEvent`] that owns nothing, as an [`EventChunk`]
/// hands them out. Same fields, same meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// When the attempt arrived, in milliseconds since the Unix epoch, UTC.
    pub ts_ms: i64,
    /// Tenant id.
    pub tenant: &'a str,
    /// The sign-in name exactly as typed.
    pub user: &'a str,
    /// Client address.
    pub ip: IpAddr,
    /// Opaque password token. Secret: never log it.
    pub pw: &'a str,
    /// What the directory would answer.
    pub truth: Truth,
    /// Scoring label, when the trace has one.
    pub label: Option<Label>,
    /// Client kind, when the trace has one.
    pub app: Option<&'a str>,
}

impl EventRef<'_> {
    /// An owned copy.
    pub fn to_event(&self) -> TraceEvent {
        TraceEvent {
            ts_ms: self.ts_ms,
            tenant: self.tenant.to_owned(),
            user: self.user.to_owned(),
            ip: self.ip,
            pw: self.pw.to_owned(),
            truth: self.truth,
            label: self.label,
            app: self.app.map(str::to_owned),
        }
    }
}

/// A batch of events whose strings share one buffer: reading a trace into chunks that are
/// cleared and reused allocates nothing per event ([`TraceReader::read_chunk`]).
#[derive(Debug, Default)]
pub struct EventChunk {
    text: String,
    events: Vec<Packed>,
}

/// An event of a chunk: its strings as byte ranges of the chunk's text.
#[derive(Debug, Clone)]
struct Packed {
    ts_ms: i64,
    ip: IpAddr,
    truth: Truth,
    label: Option<Label>,
    tenant: Range<usize>,
    user: Range<usize>,
    pw: Range<usize>,
    app: Option<Range<usize>>,
}

impl EventChunk {
    /// An empty chunk.
    pub fn new() -> EventChunk {
        EventChunk::default()
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Drops every event, keeping the buffers for reuse.
    pub fn clear(&mut self) {
        self.text.clear();
        self.events.clear();
    }

    /// Appends an event.
    pub fn push(&mut self, ev: EventRef<'_>) {
        let mut put = |s: &str| {
            let start = self.text.len();
            self.text.push_str(s);
            start..self.text.len()
        };
        let packed = Packed {
            ts_ms: ev.ts_ms,
            ip: ev.ip,
            truth: ev.truth,
            label: ev.label,
            tenant: put(ev.tenant),
            user: put(ev.user),
            pw: put(ev.pw),
            app: ev.app.map(put),
        };
        self.events.push(packed);
    }

    /// The events in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EventRef<'_>> + '_ {
        // Every range was cut at the ends of a string pushed whole, so it is in bounds and on
        // character boundaries.
        let text = |r: &Range<usize>| self.text.get(r.clone()).unwrap_or_default();
        self.events.iter().map(move |p| EventRef {
            ts_ms: p.ts_ms,
            tenant: text(&p.tenant),
            user: text(&p.user),
            ip: p.ip,
            pw: text(&p.pw),
            truth: p.truth,
            label: p.label,
            app: p.app.as_ref().map(text),
        })
    }
}

/// A field value as found on the line: a string (borrowed when it had no escapes), something
/// else (remembered only by kind, so that errors can say "found a number"), or absent.
#[derive(Default)]
enum RawField<'a> {
    #[default]
    Missing,
    Str(Cow<'a, str>),
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for RawField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawFieldVisitor(PhantomData))
    }
}

struct RawFieldVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for RawFieldVisitor<'a> {
    type Value = RawField<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(RawField::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(RawField::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(RawField::Str(Cow::Owned(v)))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawField::Other("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RawField::Other("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RawField::Other("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawField::Other("a number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(RawField::Other("null"))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(RawField::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawField::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(RawField::Other("an object"))
    }
}

/// The line as deserialized, borrowing from it; converted and checked by [`parse_line`].
#[derive(Default, Deserialize)]
struct RawEvent<'a> {
    #[serde(default, borrow)]
    ts: RawField<'a>,
    #[serde(default, borrow)]
    tenant: RawField<'a>,
    #[serde(default, borrow)]
    user: RawField<'a>,
    #[serde(default, borrow)]
    ip: RawField<'a>,
    #[serde(default, borrow)]
    pw: RawField<'a>,
    #[serde(default, borrow)]
    truth: RawField<'a>,
    #[serde(default, borrow)]
    label: RawField<'a>,
    #[serde(default, borrow)]
    app: RawField<'a>,
}

/// Quotes a (non-secret) offending value for an error message, shortened if long.
fn quoted(s: &str) -> String {
    if s.chars().count() <= MAX_QUOTED_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{head:?}...")
    }
}

fn required<'a>(
    f: RawField<'a>,
    name: &'static str,
    line: u64,
) -> Result<Cow<'a, str>, TraceError> {
    match f {
        RawField::Str(s) => Ok(s),
        RawField::Missing => Err(TraceError::field(line, name, "missing (required)")),
        RawField::Other(kind) => Err(TraceError::field(
            line,
            name,
            format_args!("expected a string, found {kind}"),
        )),
    }
}

/// Optional fields: absent and `null` both mean "not given".
fn optional<'a>(
    f: RawField<'a>,
    name: &'static str,
    line: u64,
) -> Result<Option<Cow<'a, str>>, TraceError> {
    match f {
        RawField::Str(s) => Ok(Some(s)),
        RawField::Missing | RawField::Other("null") => Ok(None),
        RawField::Other(kind) => Err(TraceError::field(
            line,
            name,
            format_args!("expected a string, found {kind}"),
        )),
    }
}

/// Where the quotes of a line are, one bit per byte, for [`scan_flat`]: built eight bytes at a
/// time, it replaces a `memchr` call per key and value (3% fewer instructions on the reader
/// thread of a replay).
struct QuoteMask {
    blocks: [u64; QuoteMask::BLOCKS],
}

impl QuoteMask {
    const BLOCKS: usize = 8;
    /// Longer lines (none that the writers here produce) go to serde_json.
    const MAX: usize = QuoteMask::BLOCKS * 64;

    /// `None` if the line is longer than [`QuoteMask::MAX`] or holds a backslash or a control
    /// character.
    fn of(b: &[u8]) -> Option<QuoteMask> {
        if b.len() > QuoteMask::MAX
            // One pass, which the compiler vectorises.
            || b.iter()
                .fold(false, |bad, &c| bad | (c == b'\\') | (c < 0x20))
        {
            return None;
        }
        let mut blocks = [0u64; QuoteMask::BLOCKS];
        // Whole words in a loop of their own: one loop for all words made each word's copy a
        // call to memcpy (a length the compiler cannot see), 640 more instructions per line.
        let mut words = b.chunks_exact(8);
        let mut n = 0;
        for word in &mut words {
            // `chunks_exact` gives eight bytes: the fallback is never taken.
            let w: [u8; 8] = word.try_into().unwrap_or([b' '; 8]);
            blocks[n / 8] |= quotes_in(u64::from_le_bytes(w)) << (n % 8 * 8);
            n += 1;
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            // The last word is padded with spaces, which are not quotes.
            let mut w = [b' '; 8];
            w[..rest.len()].copy_from_slice(rest);
            blocks[n / 8] |= quotes_in(u64::from_le_bytes(w)) << (n % 8 * 8);
        }
        Some(QuoteMask { blocks })
    }

    /// The first quote at or after `from`.
    fn next(&self, from: usize) -> Option<usize> {
        let mut at = from / 64;
        let mut m = self.blocks.get(at)? & (u64::MAX << (from % 64));
        while m == 0 {
            at += 1;
            m = *self.blocks.get(at)?;
        }
        Some(at * 64 + m.trailing_zeros() as usize)
    }
}

/// The quotes among eight bytes (the first in the lowest bits): bit `i` is set when byte `i`
/// is `"`.
fn quotes_in(word: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // A quote's byte becomes zero.
    let x = word ^ 0x2222_2222_2222_2222;
    // The high bit of each zero byte, exactly: the low seven bits cannot carry between bytes.
    let zero = !(((x & LOW7).wrapping_add(LOW7)) | x) & !LOW7;
    // The multiply gathers the eight high bits into the top byte, byte i's at bit 56 + i.
    ((zero >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// The fast path of [`parse_line`]: a flat object whose keys and values are all strings without
/// escapes or control characters, each known key at most once, which is every line the writers
/// here produce. `None` for anything else, which serde_json then reads (and reports errors on),
/// so a line this accepts yields exactly what serde_json would have made of it (tested).
fn scan_flat(line: &str) -> Option<RawEvent<'_>> {
    let b = line.as_bytes();
    // No backslash and no control character anywhere (so no tab or newline between tokens
    // either): then every string ends at the next quote, found in the line's quote mask.
    let quotes = QuoteMask::of(b)?;
    let mut i = 0;
    let skip_spaces = |i: &mut usize| {
        while b.get(*i) == Some(&b' ') {
            *i += 1;
        }
    };
    // The string starting at b[*i], which must be a quote.
    let string = |i: &mut usize| -> Option<&str> {
        if b.get(*i) != Some(&b'"') {
            return None;
        }
        let start = *i + 1;
        let end = quotes.next(start)?;
        *i = end + 1;
        // Quotes are ASCII, so both ends are character boundaries of the line.
        line.get(start..end)
    };
    let mut raw = RawEvent::default();
    let mut unknown = RawField::Missing;
    skip_spaces(&mut i);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        skip_spaces(&mut i);
        let key = string(&mut i)?;
        skip_spaces(&mut i);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        skip_spaces(&mut i);
        let value = string(&mut i)?;
        let slot = match key {
            "ts" => &mut raw.ts,
            "tenant" => &mut raw.tenant,
            "user" => &mut raw.user,
            "ip" => &mut raw.ip,
            "pw" => &mut raw.pw,
            "truth" => &mut raw.truth,
            "label" => &mut raw.label,
            "app" => &mut raw.app,
            // Unknown fields are ignored, as serde does.
            _ => &mut unknown,
        };
        if !matches!(slot, RawField::Missing) {
            // A known key given twice: serde_json's error says which.
            return None;
        }
        *slot = RawField::Str(Cow::Borrowed(value));
        unknown = RawField::Missing;
        skip_spaces(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return None,
        }
    }
    i += 1;
    skip_spaces(&mut i);
    (i == b.len()).then_some(raw)
}

/// A line's fields, checked and converted; strings borrow from the line where they had no
/// escapes.
struct Fields<'a> {
    ts_ms: i64,
    tenant: Cow<'a, str>,
    user: Cow<'a, str>,
    ip: IpAddr,
    pw: Cow<'a, str>,
    truth: Truth,
    label: Option<Label>,
    app: Option<Cow<'a, str>>,
}

impl Fields<'_> {
    fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            ts_ms: self.ts_ms,
            tenant: &self.tenant,
            user: &self.user,
            ip: self.ip,
            pw: &self.pw,
            truth: self.truth,
            label: self.label,
            app: self.app.as_deref(),
        }
    }

    fn into_event(self) -> TraceEvent {
        TraceEvent {
            ts_ms: self.ts_ms,
            tenant: self.tenant.into_owned(),
            user: self.user.into_owned(),
            ip: self.ip,
            pw: self.pw.into_owned(),
            truth: self.truth,
            label: self.label,
            app: self.app.map(Cow::into_owned),
        }
    }
}

/// Whether a line (newline included) is blank: white space only, by `char::is_whitespace`. The one
/// rule for [`parse_line`] and the reader, without a UTF-8 pass over the usual line, whose first
/// non-blank byte is ASCII.
fn blank_line(b: &[u8]) -> bool {
    // char::is_whitespace on ASCII: u8::is_ascii_whitespace plus the vertical tab.
    match b.iter().find(|&&c| !(c.is_ascii_whitespace() || c == 0x0b)) {
        None => true,
        Some(c) if c.is_ascii() => false,
        Some(_) => std::str::from_utf8(b).is_ok_and(|s| s.trim().is_empty()),
    }
}

/// Parses one trace line. `line_no` (1-based) only labels errors.
///
/// Returns `Ok(None)` for a blank (whitespace-only) line. Unknown fields are ignored; a missing
/// required field, a value of the wrong JSON type, a bad `ip`, `ts`, `truth` or `label` is an
/// error naming the field and the line. Error messages never quote the `pw` value.
///
/// # Examples
/// ```
/// use portcullis_engine::trace::{parse_line, Truth};
/// let line = r#"{"ts":"2026-11-03T08:00:00.123Z","user":"ann@contoso.com","ip":"192.0.2.7","pw":"0a1b2c3d4e","truth":"wrong"}"#;
/// let ev = parse_line(line, 1).unwrap().unwrap();
/// assert_eq!(ev.tenant, "default");
/// assert_eq!(ev.truth, Truth::Wrong);
/// assert!(parse_line("   ", 2).unwrap().is_none());
/// ```
pub fn parse_line(line: &str, line_no: u64) -> Result<Option<TraceEvent>, TraceError> {
    Ok(parse_fields(line, line_no)?.map(Fields::into_event))
}

/// [`parse_line`] with serde_json alone, never the fast path: what the fast path must agree with.
#[cfg(test)]
fn parse_line_serde(line: &str, line_no: u64) -> Result<Option<TraceEvent>, TraceError> {
    let Some(raw) = raw_event(line, line_no, false)? else {
        return Ok(None);
    };
    Ok(Some(check_fields(raw, line_no)?.into_event()))
}

fn parse_fields(line: &str, line_no: u64) -> Result<Option<Fields<'_>>, TraceError> {
    match raw_event(line, line_no, true)? {
        None => Ok(None),
        Some(raw) => check_fields(raw, line_no).map(Some),
    }
}

/// A line's fields as found, before checking; `None` for a blank line.
fn raw_event(line: &str, line_no: u64, fast: bool) -> Result<Option<RawEvent<'_>>, TraceError> {
    let line = line.trim_end_matches(['\n', '\r']);
    if fast {
        if let Some(raw) = scan_flat(line) {
            return Ok(Some(raw));
        }
    }
    if blank_line(line.as_bytes()) {
        return Ok(None);
    }
    // serde would also accept a JSON array as a struct, by position; a trace line is an object.
    if !line.trim_start().starts_with('{') {
        return Err(TraceError::Line {
            line: line_no,
            field: None,
            message: "not a JSON object".to_owned(),
        });
    }
    serde_json::from_str(line)
        .map(Some)
        .map_err(|e| json_error(&e, line_no))
}

/// Checks and converts a line's fields, in the order `ts, tenant, user, ip, pw, truth, label,
/// app`: the first bad one is the error.
fn check_fields(raw: RawEvent<'_>, line_no: u64) -> Result<Fields<'_>, TraceError> {
    let ts = required(raw.ts, "ts", line_no)?;
    let ts_ms = parse_rfc3339_ms(&ts).ok_or_else(|| {
        TraceError::field(
            line_no,
            "ts",
            format_args!("invalid RFC 3339 instant {}", quoted(&ts)),
        )
    })?;
    let tenant = optional(raw.tenant, "tenant", line_no)?.unwrap_or(Cow::Borrowed(DEFAULT_TENANT));
    let user = required(raw.user, "user", line_no)?;
    let ip_text = required(raw.ip, "ip", line_no)?;
    let ip: IpAddr = ip_text.parse().map_err(|_| {
        TraceError::field(
            line_no,
            "ip",
            format_args!("invalid IP address {}", quoted(&ip_text)),
        )
    })?;
    let pw = required(raw.pw, "pw", line_no)?;
    let truth_text = required(raw.truth, "truth", line_no)?;
    let truth = Truth::parse(&truth_text).ok_or_else(|| {
        TraceError::field(
            line_no,
            "truth",
            format_args!(
                "expected \"correct\", \"wrong\" or \"unknown_user\", found {}",
                quoted(&truth_text)
            ),
        )
    })?;
    let label = match optional(raw.label, "label", line_no)? {
        None => None,
        Some(s) => Some(Label::parse(&s).ok_or_else(|| {
            TraceError::field(
                line_no,
                "label",
                format_args!("expected \"legit\" or \"attack\", found {}", quoted(&s)),
            )
        })?),
    };
    let app = optional(raw.app, "app", line_no)?;
    Ok(Fields {
        ts_ms,
        tenant,
        user,
        ip,
        pw,
        truth,
        label,
        app,
    })
}

/// Maps a serde_json error on a whole line to a [`TraceError::Line`] without echoing content:
/// serde's "invalid type" messages quote string values, which could be a token.
fn json_error(e: &serde_json::Error, line_no: u64) -> TraceError {
    let message = match e.classify() {
        serde_json::error::Category::Data => {
            let text = e.to_string();
            if let Some(rest) = text.strip_prefix("duplicate field `") {
                let name = rest.split('`').next().unwrap_or("");
                format!("field `{name}`: given more than once")
            } else {
                format!("not a JSON object (column {})", e.column())
            }
        }
        // Syntax and EOF messages describe the position and the expected token, never a value.
        _ => format!("invalid JSON: {e}"),
    };
    TraceError::Line {
        line: line_no,
        field: None,
        message,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    // d is in 1..=31 and m in 1..=12 by construction.
    (if m <= 2 { y + 1 } else { y }, m as u32, d as u32)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Fast path for the shape every writer here uses, `YYYY-MM-DDTHH:MM:SS.mmmZ`; `None` for
/// anything else (including valid RFC 3339 in another shape, left to [`parse_ts_slow`]).
fn parse_ts_fast(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let year = i64::from(num(0, 4)?);
    let month = num(5, 7)?;
    let day = num(8, 10)?;
    let hour = num(11, 13)?;
    let minute = num(14, 16)?;
    let second = num(17, 19)?;
    let milli = num(20, 23)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        // Out of range, or a leap second: let the general parser decide.
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(secs * 1000 + i64::from(milli))
}

/// General RFC 3339 parsing with the `time` crate; sub-millisecond digits are floored.
fn parse_ts_slow(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// Parses an RFC 3339 instant to milliseconds since the Unix epoch (UTC), flooring sub-millisecond
/// digits; `None` if it is not valid RFC 3339.
///
/// The common `YYYY-MM-DDTHH:MM:SS.mmmZ` shape takes a hand-written fast path; anything else
/// (offsets, other precisions, lowercase `t`/`z`) goes through the `time` crate.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    parse_ts_fast(s)
        .or_else(|| parse_ts_slow(s))
        // An offset can move an instant written in year 0000 or 9999 outside those years in
        // UTC, where it could not be written back as RFC 3339 (found by fuzzing).
        .filter(|ms| (MIN_TS_MS..=MAX_TS_MS).contains(ms))
}

/// `0000-01-01T00:00:00.000Z`, the earliest instant RFC 3339 can write in UTC, in ms.
const MIN_TS_MS: i64 = -62_167_219_200_000;
/// `9999-12-31T23:59:59.999Z`, the latest instant RFC 3339 can write in UTC, in ms.
const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds and `Z`, e.g.
/// `2026-11-03T08:00:00.123Z`. Years outside 0000-9999 are written with more digits or a sign
/// (not valid RFC 3339, but such instants cannot come from a parsed trace).
pub fn format_rfc3339_ms(ts_ms: i64) -> String {
    let mut s = String::with_capacity(24);
    push_ts(&mut s, ts_ms);
    s
}

fn push_ts(out: &mut String, ts_ms: i64) {
    let days = ts_ms.div_euclid(86_400_000);
    let ms_of_day = ts_ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    );
}

/// Appends `s` as a JSON string literal (non-ASCII kept as UTF-8, controls escaped).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes one event as a trace line (without the trailing newline), fields in the order
/// `ts, tenant, user, ip, pw, truth, label, app`; `label` and `app` are left out when `None`.
/// `ts` is RFC 3339 UTC with milliseconds and `Z`.
///
/// # Examples
/// ```
/// use portcullis_engine::trace::{parse_line, to_json_line};
/// let line = r#"{"ts":"2026-11-03T08:00:00.123Z","tenant":"contoso","user":"ann@contoso.com","ip":"192.0.2.7","pw":"0a1b2c3d4e","truth":"correct","label":"legit","app":"browser"}"#;
/// let ev = parse_line(line, 1).unwrap().unwrap();
/// assert_eq!(to_json_line(&ev), line);
/// ```
pub fn to_json_line(ev: &TraceEvent) -> String {
    let mut s = String::with_capacity(96 + ev.user.len() + ev.tenant.len() + ev.pw.len());
    s.push_str("{\"ts\":\"");
    push_ts(&mut s, ev.ts_ms);
    s.push_str("\",\"tenant\":");
    push_json_str(&mut s, &ev.tenant);
    s.push_str(",\"user\":");
    push_json_str(&mut s, &ev.user);
    s.push_str(",\"ip\":\"");
    let _ = write!(s, "{}", ev.ip);
    s.push_str("\",\"pw\":");
    push_json_str(&mut s, &ev.pw);
    s.push_str(",\"truth\":\"");
    s.push_str(ev.truth.as_str());
    s.push('"');
    if let Some(label) = ev.label {
        s.push_str(",\"label\":\"");
        s.push_str(label.as_str());
        s.push('"');
    }
    if let Some(app) = &ev.app {
        s.push_str(",\"app\":");
        push_json_str(&mut s, app);
    }
    s.push('}');
    s
}

/// Counts the bytes pulled from the underlying (possibly compressed) file, for progress display.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Streams [`TraceEvent`]s from a trace, checking line syntax and time order.
///
/// Blank lines are skipped. The iterator yields `Err` for the first bad line (or I/O error) and
/// then ends: a trace is either read whole or rejected, never guessed at.
///
/// # Examples
/// ```
/// use portcullis_engine::trace::TraceReader;
/// let text = "{\"ts\":\"2026-11-03T08:00:00.000Z\",\"user\":\"a@x\",\"ip\":\"192.0.2.1\",\"pw\":\"00\",\"truth\":\"wrong\"}\n\n";
/// let events: Result<Vec<_>, _> = TraceReader::from_reader(text.as_bytes()).collect();
/// assert_eq!(events.unwrap().len(), 1);
/// ```
pub struct TraceReader {
    reader: Box<dyn BufRead + Send>,
    /// Bytes read from the file itself (compressed bytes for `.gz`); `None` for plain readers.
    raw_bytes: Option<Arc<AtomicU64>>,
    /// Size of the file in bytes, when reading a file.
    total_bytes: Option<u64>,
    /// Decompressed bytes consumed as lines.
    line_bytes: u64,
    line_no: u64,
    last_ts_ms: Option<i64>,
    buf: Vec<u8>,
    done: bool,
}

impl fmt::Debug for TraceReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceReader")
            .field("line_no", &self.line_no)
            .field("bytes_read", &self.bytes_read())
            .field("total_bytes", &self.total_bytes)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl TraceReader {
    /// Opens a trace file; gzip-decompresses (all members) when the name ends in `.gz`.
    pub fn open(path: &Path) -> Result<TraceReader, TraceError> {
        let open_err = |source| TraceError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let total = file.metadata().map_err(open_err)?.len();
        let count = Arc::new(AtomicU64::new(0));
        let counting = CountingReader {
            inner: file,
            count: Arc::clone(&count),
        };
        let gz = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".gz"));
        let reader: Box<dyn BufRead + Send> = if gz {
            Box::new(BufReader::with_capacity(
                READ_BUFFER_BYTES,
                flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, counting)),
            ))
        } else {
            Box::new(BufReader::with_capacity(READ_BUFFER_BYTES, counting))
        };
        Ok(TraceReader {
            raw_bytes: Some(count),
            total_bytes: Some(total),
            ..TraceReader::from_reader(reader)
        })
    }

    /// Reads an uncompressed trace from any buffered reader (e.g. stdin or a byte slice).
    pub fn from_reader<R: BufRead + Send + 'static>(reader: R) -> TraceReader {
        TraceReader {
            reader: Box::new(reader),
            raw_bytes: None,
            total_bytes: None,
            line_bytes: 0,
            line_no: 0,
            last_ts_ms: None,
            buf: Vec::with_capacity(512),
            done: false,
        }
    }

    /// Bytes consumed so far: from the file as stored (compressed bytes for `.gz`, read ahead by
    /// the buffer) when opened with [`TraceReader::open`], else decompressed line bytes.
    pub fn bytes_read(&self) -> u64 {
        match &self.raw_bytes {
            Some(c) => c.load(Ordering::Relaxed),
            None => self.line_bytes,
        }
    }

    /// Size of the file as stored (compressed size for `.gz`), in bytes; `None` for
    /// [`TraceReader::from_reader`]. Compare with [`TraceReader::bytes_read`] for progress.
    pub fn total_bytes(&self) -> Option<u64> {
        self.total_bytes
    }

    /// Number of lines read so far (1-based number of the last line read; 0 before any).
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// Reads up to `max` more events into `chunk` (appending); returns how many it added, 0 at
    /// the end of the trace. The events are the ones the iterator would yield, with the same
    /// checks; on an error, those read before it stay in the chunk, and nothing more is read.
    pub fn read_chunk(&mut self, chunk: &mut EventChunk, max: usize) -> Result<usize, TraceError> {
        self.read_chunk_with(chunk, max, |_| {})
    }

    /// [`TraceReader::read_chunk`], calling `each` with every event as it is added (while the
    /// line is in cache, for work to do on each event as it is read).
    pub fn read_chunk_with(
        &mut self,
        chunk: &mut EventChunk,
        max: usize,
        mut each: impl FnMut(EventRef<'_>),
    ) -> Result<usize, TraceError> {
        let mut n = 0;
        while n < max {
            match self.next_fields() {
                None => break,
                Some(Ok(f)) => {
                    let ev = f.as_ref();
                    chunk.push(ev);
                    each(ev);
                }
                Some(Err(e)) => return Err(e),
            }
            n += 1;
        }
        Ok(n)
    }

    /// The next non-blank line, read into `buf`, or `None` at the end; an I/O error ends the
    /// reader.
    fn next_line(&mut self) -> Option<Result<u64, TraceError>> {
        loop {
            if self.done {
                return None;
            }
            self.buf.clear();
            match read_line(&mut *self.reader, &mut self.buf) {
                Ok(0) => {
                    self.done = true;
                    return None;
                }
                Ok(n) => {
                    self.line_bytes += n as u64;
                    self.line_no += 1;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(TraceError::Io(e)));
                }
            }
            if !blank_line(&self.buf) {
                return Some(Ok(self.line_no));
            }
        }
    }

    /// The next event's fields, borrowing the line buffer; checks time order. The first error
    /// ends the reader.
    fn next_fields(&mut self) -> Option<Result<Fields<'_>, TraceError>> {
        let line_no = match self.next_line()? {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        let parsed = match std::str::from_utf8(&self.buf) {
            Ok(line) => parse_fields(line, line_no),
            Err(e) => Err(TraceError::Line {
                line: line_no,
                field: None,
                message: format!("not valid UTF-8 (at byte {})", e.valid_up_to()),
            }),
        };
        let checked = match parsed {
            // `next_line` skipped blank lines by the rule `parse_fields` uses: unreachable.
            Ok(None) => Err(TraceError::Line {
                line: line_no,
                field: None,
                message: "blank line not skipped".to_owned(),
            }),
            Ok(Some(f)) => match self.last_ts_ms {
                Some(prev) if f.ts_ms < prev => Err(TraceError::field(
                    line_no,
                    "ts",
                    format_args!(
                        "{} is earlier than the previous event's {} (the trace must be in time order)",
                        format_rfc3339_ms(f.ts_ms),
                        format_rfc3339_ms(prev)
                    ),
                )),
                _ => Ok(f),
            },
            Err(e) => Err(e),
        };
        match checked {
            Ok(f) => {
                self.last_ts_ms = Some(f.ts_ms);
                Some(Ok(f))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// `BufRead::read_until(b'\n', buf)`, finding the newline with the vectorised `memchr` (std's
/// is a word-at-a-time loop, a tenth of a trace line's parsing cost).
fn read_line(r: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut n = 0;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(n);
        }
        let (used, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        buf.extend_from_slice(&avail[..used]);
        r.consume(used);
        n += used;
        if done {
            return Ok(n);
        }
    }
}

impl Iterator for TraceReader {
    type Item = Result<TraceEvent, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_fields()?.map(Fields::into_event))
    }
}

#[cfg(test)]
mod tests {
    mod quote_mask {
        use super::super::{quotes_in, QuoteMask};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Every quote at or after any position is found as a search byte by byte finds
            /// it, across block ends and in a partial last word; a line with a backslash or a
            /// control character, or too long, has no mask.
            #[test]
            fn the_mask_finds_each_next_quote_as_a_search_does(
                clean_line in prop::collection::vec(
                    prop_oneof![
                        Just(b'"'), Just(0xa2u8), Just(b' '), Just(b'a'), Just(b'#'),
                        0x20u8..=0xff,
                    ]
                    .prop_filter("no backslash", |&c| c != b'\\'),
                    0..600,
                ),
                // Sometimes a backslash or a control character, somewhere.
                bad in prop::option::weighted(0.2, (any::<prop::sample::Index>(), prop_oneof![
                    Just(b'\\'), Just(0x00u8), Just(0x1fu8), Just(b'\n'),
                ])),
            ) {
                let mut line = clean_line;
                if let Some((at, c)) = bad {
                    let at = at.index(line.len() + 1);
                    line.insert(at, c);
                }
                let clean = line.len() <= QuoteMask::MAX
                    && !line.iter().any(|&c| c == b'\\' || c < 0x20);
                match QuoteMask::of(&line) {
                    None => prop_assert!(!clean),
                    Some(mask) => {
                        prop_assert!(clean);
                        // The next quote at or after each position, by a search backwards.
                        let mut expected = vec![None; line.len() + 2];
                        for at in (0..line.len()).rev() {
                            expected[at] = if line[at] == b'"' { Some(at) } else { expected[at + 1] };
                        }
                        for (from, &quote) in expected.iter().enumerate() {
                            prop_assert_eq!(mask.next(from), quote, "from {}", from);
                        }
                    }
                }
            }

            #[test]
            fn a_word_marks_exactly_its_quote_bytes(bytes in any::<[u8; 8]>()) {
                let expected = bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, &c)| c == b'"')
                    .fold(0u64, |m, (i, _)| m | 1 << i);
                prop_assert_eq!(quotes_in(u64::from_le_bytes(bytes)), expected);
            }
        }
    }

    #[test]
    fn refuses_instants_an_offset_moves_outside_years_0000_to_9999() {
        use super::{format_rfc3339_ms, parse_rfc3339_ms, MAX_TS_MS, MIN_TS_MS};
        assert_eq!(format_rfc3339_ms(MIN_TS_MS), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_ms(MAX_TS_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(parse_rfc3339_ms("0000-01-01T00:00:00Z"), Some(MIN_TS_MS));
        assert_eq!(
            parse_rfc3339_ms("9999-12-31T23:59:59.999Z"),
            Some(MAX_TS_MS)
        );
        assert_eq!(parse_rfc3339_ms("0000-01-01T00:00:00+23:59"), None);
        assert_eq!(parse_rfc3339_ms("9999-12-31T23:59:59.999-00:01"), None);
        assert!(parse_rfc3339_ms("0000-01-01T00:00:00-01:00").is_some());
    }

    use super::*;
    use rand::{Rng, SeedableRng};
    use std::io::Write;

    const SECRET: &str = "5ec2e7f00d";

    fn line(ts: &str) -> String {
        format!(
            r#"{{"ts":"{ts}","tenant":"contoso","user":"ann.lee@contoso.com","ip":"192.0.2.7","pw":"{SECRET}","truth":"wrong","label":"attack","app":"legacy"}}"#
        )
    }

    fn line_err(
        res: Result<Option<TraceEvent>, TraceError>,
    ) -> (u64, Option<&'static str>, String) {
        match res {
            Err(TraceError::Line {
                line,
                field,
                message,
            }) => (line, field, message),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_full_line() {
        let ev = parse_line(&line("2026-11-03T08:00:00.123Z"), 1)
            .expect("parses")
            .expect("not blank");
        assert_eq!(
            ev.ts_ms,
            1_793_577_600_000 + 86_400_000 + 8 * 3_600_000 + 123
        );
        assert_eq!(ev.tenant, "contoso");
        assert_eq!(ev.user, "ann.lee@contoso.com");
        assert_eq!(ev.ip, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(ev.pw, SECRET);
        assert_eq!(ev.truth, Truth::Wrong);
        assert_eq!(ev.label, Some(Label::Attack));
        assert_eq!(ev.app.as_deref(), Some("legacy"));
    }

    #[test]
    fn parses_ipv6_escapes_and_optional_fields_absent() {
        let l = r#"{"ts":"2026-11-03T08:00:00+01:00","user":"\u3000Ann\t","ip":"2a01:db8::1","pw":"x","truth":"unknown_user","label":null}"#;
        let ev = parse_line(l, 1).unwrap().unwrap();
        assert_eq!(ev.user, "\u{3000}Ann\t");
        assert_eq!(ev.ts_ms, 1_793_577_600_000 + 86_400_000 + 7 * 3_600_000);
        assert_eq!(ev.truth, Truth::UnknownUser);
        assert_eq!(ev.label, None);
        assert_eq!(ev.app, None);
    }

    #[test]
    fn defaults_tenant_to_default() {
        let l = r#"{"ts":"2026-11-03T08:00:00.000Z","user":"a","ip":"10.0.0.1","pw":"p","truth":"correct"}"#;
        let ev = parse_line(l, 1).unwrap().unwrap();
        assert_eq!(ev.tenant, "default");
    }

    #[test]
    fn ignores_unknown_fields() {
        let l = r#"{"ts":"2026-11-03T08:00:00.000Z","extra":{"a":[1,2,{"b":null}]},"user":"a","ip":"10.0.0.1","pw":"p","truth":"correct","n":5}"#;
        assert!(parse_line(l, 1).unwrap().is_some());
    }

    #[test]
    fn skips_blank_lines() {
        assert!(parse_line("", 1).unwrap().is_none());
        assert!(parse_line("  \t\r\n", 2).unwrap().is_none());
    }

    #[test]
    fn reports_bad_ts_with_line_number() {
        let (n, field, msg) = line_err(parse_line(&line("2026-13-01"), 17));
        assert_eq!((n, field), (17, Some("ts")));
        let shown = TraceError::Line {
            line: n,
            field,
            message: msg,
        }
        .to_string();
        assert_eq!(
            shown,
            "line 17: field `ts`: invalid RFC 3339 instant \"2026-13-01\""
        );
        let (_, field, _) = line_err(parse_line(&line("2026-02-30T08:00:00.000Z"), 3));
        assert_eq!(field, Some("ts"));
    }

    #[test]
    fn reports_missing_user() {
        let l = r#"{"ts":"2026-11-03T08:00:00.000Z","ip":"10.0.0.1","pw":"p","truth":"correct"}"#;
        let (n, field, msg) = line_err(parse_line(l, 4));
        assert_eq!((n, field), (4, Some("user")));
        assert!(msg.contains("`user`") && msg.contains("missing"), "{msg}");
    }

    #[test]
    fn reports_wrong_types_and_bad_values_by_field() {
        let cases = [
            (
                r#"{"ts":5,"user":"a","ip":"10.0.0.1","pw":"p","truth":"wrong"}"#,
                "ts",
            ),
            (
                r#"{"ts":"2026-11-03T08:00:00Z","user":"a","ip":"10.0.0.300","pw":"p","truth":"wrong"}"#,
                "ip",
            ),
            (
                r#"{"ts":"2026-11-03T08:00:00Z","user":"a","ip":"10.0.0.1","pw":["p"],"truth":"wrong"}"#,
                "pw",
            ),
            (
                r#"{"ts":"2026-11-03T08:00:00Z","user":"a","ip":"10.0.0.1","pw":"p","truth":"maybe"}"#,
                "truth",
            ),
            (
                r#"{"ts":"2026-11-03T08:00:00Z","user":"a","ip":"10.0.0.1","pw":"p","truth":"wrong","label":"x"}"#,
                "label",
            ),
            (
                r#"{"ts":"2026-11-03T08:00:00Z","user":"a","ip":"10.0.0.1","pw":"p","truth":"wrong","tenant":7}"#,
                "tenant",
            ),
            (
                r#"{"ts":"2026-11-03T08:00:00Z","user":"a","ts":"2026-11-03T08:00:00Z","ip":"10.0.0.1","pw":"p","truth":"wrong"}"#,
                "ts",
            ),
        ];
        for (l, want) in cases {
            let (n, field, msg) = line_err(parse_line(l, 9));
            assert_eq!(n, 9);
            assert_eq!(field.unwrap_or(want), want, "{l}: {msg}");
            assert!(msg.contains(&format!("`{want}`")), "{l}: {msg}");
        }
        let (_, field, msg) = line_err(parse_line("{\"ts\":", 2));
        assert_eq!(field, None);
        assert!(msg.contains("invalid JSON"), "{msg}");
    }

    #[test]
    fn error_messages_never_contain_the_pw_token() {
        let bad = [
            line("2026-13-01"),
            line("2026-11-03T08:00:00.000Z").replace("192.0.2.7", "nope"),
            line("2026-11-03T08:00:00.000Z").replace("\"wrong\"", "\"wat\""),
            line("2026-11-03T08:00:00.000Z").replace("\"attack\"", "7"),
            line("2026-11-03T08:00:00.000Z").replace("\"user\"", "\"usr\""),
            line("2026-11-03T08:00:00.000Z").replace("}", ",\"pw\":\"x\"}"),
            line("2026-11-03T08:00:00.000Z").replace("}", ""),
            format!("\"{SECRET}\""),
            format!("[\"{SECRET}\"]"),
            format!("{{\"pw\":\"{SECRET}\" \"ts\":1}}"),
            format!("{{\"pw\":\"{SECRET}\"}}"),
        ];
        for l in &bad {
            let err = parse_line(l, 1).expect_err(l);
            let shown = err.to_string();
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!format!("{err:?}").contains(SECRET), "{err:?}");
        }
        // Out-of-order errors too.
        let text = format!(
            "{}\n{}\n",
            line("2026-11-03T08:00:01.000Z"),
            line("2026-11-03T08:00:00.000Z")
        );
        let err = TraceReader::from_reader(io::Cursor::new(text))
            .find_map(Result::err)
            .expect("out of order");
        assert!(!err.to_string().contains(SECRET));
    }

    #[test]
    fn rejects_out_of_order_ts() {
        let text = [
            line("2026-11-03T08:00:00.000Z"),
            line("2026-11-03T08:00:00.000Z"),
            String::new(),
            line("2026-11-03T07:59:59.999Z"),
            line("2026-11-03T09:00:00.000Z"),
        ]
        .join("\n");
        let mut r = TraceReader::from_reader(io::Cursor::new(text));
        assert!(r.next().unwrap().is_ok());
        assert!(r.next().unwrap().is_ok(), "equal stamps are fine");
        match r.next() {
            Some(Err(TraceError::Line {
                line,
                field,
                message,
            })) => {
                assert_eq!((line, field), (4, Some("ts")));
                assert!(message.contains("earlier"), "{message}");
            }
            other => panic!("expected out-of-order error, got {other:?}"),
        }
        assert!(r.next().is_none(), "stops after the first error");
    }

    #[test]
    fn reads_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl.gz");
        let lines: Vec<String> = (0..100)
            .map(|i| line(&format_rfc3339_ms(1_793_577_600_000 + i * 1000)))
            .collect();
        // Two gzip members back to back: MultiGzDecoder reads both.
        let mut f = File::create(&path).unwrap();
        for half in lines.chunks(50) {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for l in half {
                writeln!(gz, "{l}").unwrap();
            }
            f.write_all(&gz.finish().unwrap()).unwrap();
        }
        drop(f);
        let mut r = TraceReader::open(&path).unwrap();
        let total = r.total_bytes().unwrap();
        let events: Vec<TraceEvent> = r.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(events.len(), 100);
        assert_eq!(events[99].ts_ms, 1_793_577_600_000 + 99_000);
        assert_eq!(r.bytes_read(), total);
        assert_eq!(r.line_no(), 100);

        let plain = dir.path().join("t.jsonl");
        std::fs::write(&plain, lines.join("\n")).unwrap();
        assert_eq!(TraceReader::open(&plain).unwrap().count(), 100);
        assert!(matches!(
            TraceReader::open(&dir.path().join("missing.jsonl")),
            Err(TraceError::Open { .. })
        ));
    }

    #[test]
    fn round_trips_through_to_json_line() {
        let ev = TraceEvent {
            ts_ms: 1_793_577_600_001,
            tenant: "contoso".into(),
            user: "\t\"Ann\"\\ \u{3000}\u{1}é@contoso.com ".into(),
            ip: "2a01:db8:0:0:0:0:0:1".parse().unwrap(),
            pw: "0123456789".into(),
            truth: Truth::UnknownUser,
            label: Some(Label::Legit),
            app: Some("activesync".into()),
        };
        let l = to_json_line(&ev);
        assert!(l.starts_with("{\"ts\":\"2026-11-02T00:00:00.001Z\""), "{l}");
        assert!(l.contains("\"ip\":\"2a01:db8::1\""), "{l}");
        assert_eq!(parse_line(&l, 1).unwrap().unwrap(), ev);
        let bare = TraceEvent {
            label: None,
            app: None,
            ..ev
        };
        assert_eq!(parse_line(&to_json_line(&bare), 1).unwrap().unwrap(), bare);
    }

    #[test]
    fn fast_and_general_timestamp_parsers_agree() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // 0000-01-01 .. 9999-12-31
        let lo = days_from_civil(0, 1, 1) * 86_400_000;
        let hi = days_from_civil(10_000, 1, 1) * 86_400_000;
        for _ in 0..20_000 {
            let ms = rng.gen_range(lo..hi);
            let s = format_rfc3339_ms(ms);
            assert_eq!(parse_ts_fast(&s), Some(ms), "{s}");
            assert_eq!(parse_ts_slow(&s), Some(ms), "{s}");
        }
        for s in [
            "2024-02-29T23:59:59.999Z",
            "2026-11-02T00:00:00.000Z",
            "1970-01-01T00:00:00.000Z",
            "1969-12-31T23:59:59.999Z",
            "2000-02-29T12:00:00.500Z",
        ] {
            assert_eq!(parse_ts_fast(s), parse_ts_slow(s), "{s}");
            assert!(parse_ts_fast(s).is_some(), "{s}");
        }
        // Not the fast shape, or invalid: the fast path declines and the general parser decides.
        for s in [
            "2023-02-29T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-11-00T00:00:00.000Z",
            "2026-11-01T24:00:00.000Z",
            "2026-11-01T23:60:00.000Z",
            "2026-11-01T23:59:60.000Z",
            "2026-11-01 23:59:59.000Z",
            "2026-11-01T23:59:59.000+00:00",
            "2026-11-01T23:59:59Z",
            "2026-11-01T23:59:59.1234Z",
            "2026-11-01T23:59:5a.000Z",
            "+026-11-01T23:59:59.000Z",
        ] {
            assert_eq!(parse_ts_fast(s), None, "{s}");
        }
        assert_eq!(
            parse_rfc3339_ms("2026-11-01T23:59:59Z"),
            parse_rfc3339_ms("2026-11-01T23:59:59.000Z")
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-02T01:00:00.0009+01:00"),
            Some(1_793_577_600_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-02t00:00:00.000z"),
            Some(1_793_577_600_000)
        );
        assert_eq!(parse_rfc3339_ms("2026-13-01"), None);
    }

    /// A trace line's result in a comparable form (errors by field and message).
    fn outcome(r: Result<Option<TraceEvent>, TraceError>) -> Result<Option<TraceEvent>, String> {
        r.map_err(|e| match e {
            TraceError::Line {
                line,
                field,
                message,
            } => format!("{line} {field:?} {message}"),
            other => format!("{other}"),
        })
    }

    #[test]
    fn the_fast_path_takes_the_lines_writers_write_and_declines_the_rest() {
        let plain = line("2026-11-03T08:00:00.123Z");
        assert!(scan_flat(&plain).is_some());
        assert!(scan_flat(&format!("  {plain} ")).is_some());
        // White space other than blanks is left to serde_json, like escapes.
        assert!(scan_flat(&format!("\t{plain}")).is_none());
        for declined in [
            r#"{"ts":"2026-11-03T08:00:00.123Z","user":"a\u0062","ip":"10.0.0.1","pw":"p","truth":"wrong"}"#,
            r#"{"ts":"2026-11-03T08:00:00.123Z","user":"a","ip":"10.0.0.1","pw":"p","truth":"wrong","n":5}"#,
            r#"{"ts":"2026-11-03T08:00:00.123Z","user":"a","user":"b","ip":"10.0.0.1","pw":"p","truth":"wrong"}"#,
            "{\"ts\":\"2026-11-03T08:00:00.123Z\",\"user\":\"a\tb\",\"ip\":\"10.0.0.1\",\"pw\":\"p\",\"truth\":\"wrong\"}",
            r#"{"ts":"2026-11-03T08:00:00.123Z","user":"a","ip":"10.0.0.1","pw":"p","truth":"wrong"} x"#,
            r#"{"ts":"2026-11-03T08:00:00.123Z","user":"a","ip":"10.0.0.1","pw":"p","truth":"wrong",}"#,
            r#"{}"#,
            r#"["ts"]"#,
        ] {
            assert!(scan_flat(declined).is_none(), "{declined}");
        }
    }

    #[test]
    fn the_chunk_reader_yields_what_the_iterator_yields_and_stops_at_the_same_error() {
        let good = [
            line("2026-11-03T08:00:00.000Z"),
            String::new(),
            r#"{"ts":"2026-11-03T08:00:01.000Z","user":"\u00c5sa","ip":"2a01:db8::1","pw":"q\"","truth":"correct"}"#.to_owned(),
            line("2026-11-03T08:00:01.000Z"),
        ];
        let bad = line("2026-11-03T07:00:00.000Z");
        let text = format!("{}\n{bad}\n{}\n", good.join("\n"), good[0]);
        let expected: Vec<_> = TraceReader::from_reader(io::Cursor::new(text.clone())).collect();
        assert_eq!(
            expected.len(),
            4,
            "three events, then the out-of-order error"
        );
        for max in [1, 2, 3, 100] {
            let mut reader = TraceReader::from_reader(io::Cursor::new(text.clone()));
            let mut chunk = EventChunk::new();
            let mut got = Vec::new();
            let err = loop {
                chunk.clear();
                let r = reader.read_chunk(&mut chunk, max);
                // Events read before an error stay in the chunk.
                got.extend(chunk.iter().map(|e| e.to_event()));
                match r {
                    Ok(0) => break None,
                    Ok(n) => assert_eq!(n, chunk.len()),
                    Err(e) => break Some(e),
                }
            };
            let want: Vec<_> = expected[..3]
                .iter()
                .map(|r| r.as_ref().unwrap().clone())
                .collect();
            assert_eq!(got, want, "chunks of {max}");
            let err = err.expect("the out-of-order line is an error");
            assert_eq!(
                err.to_string(),
                expected[3].as_ref().unwrap_err().to_string()
            );
            assert_eq!(
                reader.read_chunk(&mut chunk, max).unwrap(),
                0,
                "nothing after an error"
            );
        }
    }

    #[test]
    fn lines_split_across_read_buffers_read_as_whole_lines() {
        let lines: Vec<String> = (0..20)
            .map(|i| line(&format!("2026-11-03T08:00:{i:02}.000Z")))
            .collect();
        // The last line has no newline.
        let text = lines.join("\n");
        let whole: Vec<_> = TraceReader::from_reader(io::Cursor::new(text.clone()))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(whole.len(), 20);
        for cap in [1, 7, 64, 181] {
            let small = BufReader::with_capacity(cap, io::Cursor::new(text.clone()));
            let events: Vec<_> = TraceReader::from_reader(small)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(events, whole, "buffer of {cap}");
        }
    }

    #[test]
    fn lines_of_any_white_space_are_skipped_by_the_line_parser_and_the_reader() {
        let blanks = ["", " \t", "\u{0b}", "\u{3000}", "\u{a0} \u{2028}", "\r"];
        for b in blanks {
            assert!(parse_line(b, 1).unwrap().is_none(), "{b:?}");
        }
        let text = format!(
            "{}\n{}\n",
            blanks.join("\n"),
            line("2026-11-03T08:00:00.000Z")
        );
        let events: Vec<_> = TraceReader::from_reader(io::Cursor::new(text))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(events.len(), 1);
        assert!(parse_line("\u{3000}x", 1).is_err());
    }

    #[test]
    fn a_chunk_hands_back_the_events_pushed_into_it() {
        let a = parse_line(&line("2026-11-03T08:00:00.000Z"), 1)
            .unwrap()
            .unwrap();
        let b = TraceEvent {
            app: None,
            label: None,
            user: "Ünïcode ".into(),
            ..a.clone()
        };
        let mut chunk = EventChunk::new();
        chunk.push(a.as_ref());
        chunk.push(b.as_ref());
        let back: Vec<_> = chunk.iter().map(|e| e.to_event()).collect();
        assert_eq!(back, vec![a, b]);
        chunk.clear();
        assert!(chunk.is_empty() && chunk.iter().next().is_none());
    }

    mod fast_path {
        use super::*;
        use proptest::prelude::*;

        /// A JSON value as it may stand in a line: mostly strings (plain, with escapes, quotes,
        /// controls or non-ASCII), sometimes another type.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                6 => "[a-zA-Z0-9@.:_ -]{0,12}".prop_map(|s| format!("\"{s}\"")),
                2 => prop::sample::select(vec![
                    "\"2026-11-03T08:00:00.123Z\"", "\"2026-11-03T08:00:00Z\"", "\"192.0.2.7\"",
                    "\"2a01:db8::1\"", "\"wrong\"", "\"correct\"", "\"unknown_user\"",
                    "\"legit\"", "\"attack\"", "\"Wrong\"", "\"300.1.1.1\"",
                ]).prop_map(str::to_owned),
                1 => prop::sample::select(vec![
                    r#""a\"b""#, r#""a\\b""#, r#""\u0041""#, "\"a\tb\"", "\"\u{3000}é\"",
                    r#""\ud800""#, "\"a\u{1}\"", "\"unterminated",
                ]).prop_map(str::to_owned),
                1 => prop::sample::select(vec![
                    "5", "-1.5e3", "null", "true", "[]", "[1,\"x\"]", "{}", "{\"a\":{\"b\":null}}",
                ]).prop_map(str::to_owned),
            ]
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                8 => prop::sample::select(vec![
                    "ts", "tenant", "user", "ip", "pw", "truth", "label", "app",
                ]).prop_map(|k| format!("\"{k}\"")),
                1 => prop::sample::select(vec![
                    "\"extra\"", "\"Ts\"", "\"u\\u0073er\"", "\"\"", "\"other\"",
                ]).prop_map(str::to_owned),
            ]
        }

        fn ws() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec!["", "", "", " ", "\t", " \r "])
        }

        /// A line: usually a well-formed object of the usual fields in any order, with random
        /// white space, values, extra and repeated keys; sometimes broken punctuation.
        fn trace_line() -> impl Strategy<Value = String> {
            let pair = (key(), ws(), ws(), value());
            (
                prop::collection::vec(pair, 0..10),
                prop::collection::vec(ws(), 12),
                prop::sample::select(vec![",", ",", ",", ",", ",", ", ", ";", ",,"]),
                prop::sample::select(vec!["}", "}", "}", "}", "} x", "", ",}", "}}"]),
            )
                .prop_map(|(pairs, spaces, sep, end)| {
                    let mut l = format!("{}{{", spaces[0]);
                    for (i, (k, w1, w2, v)) in pairs.iter().enumerate() {
                        if i > 0 {
                            l.push_str(if i == 3 { sep } else { "," });
                        }
                        l.push_str(spaces[i % spaces.len()]);
                        l.push_str(&format!("{k}{w1}:{w2}{v}"));
                    }
                    l.push_str(spaces[11]);
                    l.push_str(end);
                    l
                })
        }

        /// The usual field set, shuffled, so that many cases are complete events.
        fn full_line() -> impl Strategy<Value = String> {
            (
                Just(vec![
                    ("ts", "\"2026-11-03T08:00:00.123Z\""),
                    ("tenant", "\"contoso\""),
                    ("user", "\"Ann@x\""),
                    ("ip", "\"192.0.2.7\""),
                    ("pw", "\"p\""),
                    ("truth", "\"wrong\""),
                    ("label", "\"attack\""),
                    ("app", "\"legacy\""),
                ])
                .prop_shuffle(),
                0usize..9,
                value(),
                ws(),
            )
                .prop_map(|(mut fields, at, v, w)| {
                    let v: &'static str = Box::leak(v.into_boxed_str());
                    if let Some(f) = fields.get_mut(at) {
                        f.1 = v;
                    }
                    let body: Vec<String> = fields
                        .iter()
                        .map(|(k, v)| format!("{w}\"{k}\"{w}:{w}{v}"))
                        .collect();
                    format!("{{{}{w}}}", body.join(","))
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            #[test]
            fn fast_path_and_serde_give_the_same_event_or_error(l in prop_oneof![trace_line(), full_line()]) {
                prop_assert_eq!(outcome(parse_line(&l, 9)), outcome(parse_line_serde(&l, 9)));
            }
        }
    }
}
