//! Deterministic synthetic sign-in traces: the Rust twin of `shared/data/synthetic/README.md`.
//!
//! [`generate`] builds a tenant `contoso` (`first.last@contoso.com`, [`SynthConfig::users`]
//! accounts), a week of legitimate sign-ins starting Monday 2026-11-02 UTC (only the days the
//! scenario covers), and the attack of the chosen [`Scenario`], then returns every attempt as a
//! [`TraceEvent`] in the trace format of [`crate::trace`].
//!
//! What always holds:
//! - The output is a pure function of the [`SynthConfig`]: same config, same events, byte for byte
//!   (every random choice comes from `ChaCha8Rng::seed_from_u64(seed)` streams).
//! - Events are sorted by `ts_ms` (stable), and every event has `tenant = "contoso"`, a `label`
//!   and an `app`.
//! - `truth` is consistent: `correct` iff `pw` is the account's correct token at that instant
//!   (a user's token changes at most once, when they reset their password), `unknown_user` iff the
//!   name, after NFKC, trimming and lower-casing, is no account of the tenant, else `wrong`.
//! - Tokens are 10 lowercase hex characters. Attack tokens come from one shared attacker
//!   dictionary (most common password first), so sprays reuse tokens across users; every other
//!   token (users' passwords, typos, leaked passwords) is distinct from all others.
//! - Attack breadth (targets, addresses, pairs) scales with `users / 2000`, with minimums; attack
//!   depth per target (3 sprayed passwords, 150 brute-force guesses, ...) does not.
//!
//! Statistics follow the public sample roughly (about 2 sign-ins per user per workday, ~3% of
//! sign-ins preceded by typos, ~15% IPv6 homes, ...); they are not meant to match it exactly.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::trace::{to_json_line, Label, TraceEvent, Truth};

/// Tenant id of every generated event.
pub const TENANT: &str = "contoso";

/// Mail domain of the tenant's accounts.
pub const DOMAIN: &str = "contoso.com";

/// Start of the simulated week, Monday 2026-11-02T00:00:00Z, in milliseconds since the Unix epoch.
pub const WEEK_START_MS: i64 = 1_793_577_600_000;

/// Default tenant size ([`SynthConfig::users`]), the size the README's attack numbers are given for.
pub const DEFAULT_USERS: usize = 2000;

/// Smallest tenant generated; smaller [`SynthConfig::users`] values are raised to this.
pub const MIN_USERS: usize = 50;

const SECOND_MS: i64 = 1000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Tokens are 40 bits, written as 10 hex characters.
const TOKEN_MASK: u64 = (1 << 40) - 1;

/// Size of the attacker dictionary (distinct common passwords).
const DICT_SIZE: usize = 1000;

/// Which trace to generate; names match the sample files (`spray_lowslow.jsonl`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Tue-Wed: ~200 botnet addresses spray the 3 most common passwords at 500 users, low and slow.
    SprayLowslow,
    /// Tue-Wed (~40 h): one /24 guesses ~150 passwords against 20 head-office executives in rounds.
    BruteTargeted,
    /// Tue (~10 h): 5,000 leaked (user, password) pairs from rotating residential proxies.
    Stuffing,
    /// Tue: 100 addresses, one password each, against one victim who keeps signing in.
    DistributedOneUser,
    /// Tue: 5 passwords x 300 users, a new IPv6 address per try inside one /64, then eight /64s.
    Ipv6Rotation,
    /// Tue: 25 passwords x 40 users, every try spelling the name differently (case, spaces, Unicode).
    NameVariants,
    /// Mon-Sun: legitimate traffic only; any lockout or block is a false positive.
    LegitOnly,
    /// Mon-Sun: legitimate week with distributed (Mon-Tue), spray (Tue-Wed), brute (Wed-Thu) and
    /// stuffing (Fri night) interleaved.
    MixedWeek,
}

impl Scenario {
    /// Every scenario, in the README's order.
    pub const ALL: [Scenario; 8] = [
        Scenario::SprayLowslow,
        Scenario::BruteTargeted,
        Scenario::Stuffing,
        Scenario::DistributedOneUser,
        Scenario::Ipv6Rotation,
        Scenario::NameVariants,
        Scenario::LegitOnly,
        Scenario::MixedWeek,
    ];

    /// The file-name form, e.g. `spray_lowslow`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::SprayLowslow => "spray_lowslow",
            Scenario::BruteTargeted => "brute_targeted",
            Scenario::Stuffing => "stuffing",
            Scenario::DistributedOneUser => "distributed_one_user",
            Scenario::Ipv6Rotation => "ipv6_rotation",
            Scenario::NameVariants => "name_variants",
            Scenario::LegitOnly => "legit_only",
            Scenario::MixedWeek => "mixed_week",
        }
    }

    /// Days of the week (0 = Monday 2026-11-02) with legitimate background traffic.
    fn legit_days(self) -> std::ops::Range<i64> {
        match self {
            Scenario::SprayLowslow | Scenario::BruteTargeted | Scenario::DistributedOneUser => 1..3,
            Scenario::Stuffing | Scenario::Ipv6Rotation | Scenario::NameVariants => 1..2,
            Scenario::LegitOnly | Scenario::MixedWeek => 0..7,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scenario name that is none of [`Scenario::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scenario {0:?}; expected one of spray_lowslow, brute_targeted, stuffing, distributed_one_user, ipv6_rotation, name_variants, legit_only, mixed_week")]
pub struct ParseScenarioError(pub String);

impl FromStr for Scenario {
    type Err = ParseScenarioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| ParseScenarioError(s.to_owned()))
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthConfig {
    /// The scenario (attack shape and days covered).
    pub scenario: Scenario,
    /// RNG seed; the output is a pure function of the whole config.
    pub seed: u64,
    /// Number of accounts in the tenant. Default [`DEFAULT_USERS`] (2,000); values below
    /// [`MIN_USERS`] are raised to it. Attack breadth scales with `users / 2000`.
    pub users: usize,
}

impl SynthConfig {
    /// A config for `scenario` and `seed` with the default tenant size (2,000 users).
    pub fn new(scenario: Scenario, seed: u64) -> Self {
        SynthConfig {
            scenario,
            seed,
            users: DEFAULT_USERS,
        }
    }
}

/// Writes events as JSON Lines (one [`to_json_line`] per line, `\n`-terminated), buffered.
pub fn write_jsonl(events: &[TraceEvent], w: impl Write) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 16, w);
    for ev in events {
        w.write_all(to_json_line(ev).as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Generates the trace for `cfg`: sorted by time, labelled, deterministic for the config.
///
/// # Examples
/// ```
/// use portcullis_engine::synth::{generate, Scenario, SynthConfig};
/// let cfg = SynthConfig { scenario: Scenario::SprayLowslow, seed: 1, users: 200 };
/// let events = generate(&cfg);
/// assert!(events.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
/// assert_eq!(events, generate(&cfg));
/// ```
pub fn generate(cfg: &SynthConfig) -> Vec<TraceEvent> {
    generate_with_tenant(cfg).1
}

/// [`generate`], also returning the tenant (with its token histories) for tests.
fn generate_with_tenant(cfg: &SynthConfig) -> (Tenant, Vec<TraceEvent>) {
    let users = cfg.users.max(MIN_USERS);
    let scale = users as f64 / DEFAULT_USERS as f64;
    let mut tenant = Tenant::build(&mut stream(cfg.seed, 1), users);
    let mut out: Vec<Attempt> = Vec::new();
    // Accounts an attack depends on (weak passwords, executives, the victim, valid leaked
    // pairs): they never reset their password, so the attack's premise holds all week.
    let mut special: HashSet<usize> = HashSet::new();
    let mut g = Gen {
        tenant: &mut tenant,
        out: &mut out,
        special: &mut special,
        scale,
    };
    let day = |d: i64, h: f64| WEEK_START_MS + d * DAY_MS + (h * HOUR_MS as f64) as i64;
    match cfg.scenario {
        Scenario::SprayLowslow => g.spray(&mut stream(cfg.seed, 10), day(1, 6.0), 28.5),
        Scenario::BruteTargeted => g.brute(&mut stream(cfg.seed, 11), day(1, 4.0), 40.0),
        Scenario::Stuffing => g.stuffing(&mut stream(cfg.seed, 12), day(1, 7.0), 10.5),
        Scenario::DistributedOneUser => {
            g.distributed(&mut stream(cfg.seed, 13), &[(day(1, 8.0), 4.0)]);
        }
        Scenario::Ipv6Rotation => g.ipv6(&mut stream(cfg.seed, 14), day(1, 3.0), 14.5),
        Scenario::NameVariants => g.names(&mut stream(cfg.seed, 15), day(1, 6.0), 11.5),
        Scenario::LegitOnly => {}
        Scenario::MixedWeek => {
            g.distributed(
                &mut stream(cfg.seed, 13),
                &[(day(0, 13.0), 4.0), (day(1, 8.0), 4.0)],
            );
            g.spray(&mut stream(cfg.seed, 10), day(1, 6.0), 28.5);
            g.brute(&mut stream(cfg.seed, 11), day(2, 4.0), 40.0);
            g.stuffing(&mut stream(cfg.seed, 12), day(4, 21.0), 10.0);
        }
    }
    g.legit(&mut stream(cfg.seed, 2), cfg.scenario.legit_days());

    out.sort_by_key(|a| a.ts_ms);
    let events = out.into_iter().map(|a| tenant.finish(a)).collect();
    (tenant, events)
}

/// An independent RNG stream of `seed`, so that adding draws to one part of the generator does
/// not shift every other part.
fn stream(seed: u64, id: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(id);
    rng
}

/// Index drawn with probability proportional to `weights` (all non-negative, not all zero).
fn pick_weighted(rng: &mut ChaCha8Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len().saturating_sub(1)
}

/// `n * scale`, rounded, at least `min`.
fn scaled(n: usize, scale: f64, min: usize) -> usize {
    ((n as f64 * scale).round() as usize).max(min)
}

/// A gap of about `mean_ms` (uniform in 0.3..1.7 of it), never zero.
fn jitter(rng: &mut ChaCha8Rng, mean_ms: f64) -> i64 {
    ((mean_ms * rng.gen_range(0.3..1.7)) as i64).max(1)
}

fn format_token(t: u64) -> String {
    format!("{:010x}", t & TOKEN_MASK)
}

/// A random public-looking IPv4 address (no private, loopback, link-local, CGNAT, multicast or
/// documentation first octets).
fn random_public_v4(rng: &mut ChaCha8Rng) -> Ipv4Addr {
    loop {
        let a: u8 = rng.gen_range(1..=223);
        if matches!(a, 10 | 100 | 127 | 169 | 172 | 192 | 198 | 203) {
            continue;
        }
        return Ipv4Addr::new(a, rng.gen(), rng.gen(), rng.gen_range(1..=254));
    }
}

/// A stable pseudo-random 64-bit value from a few integers (SplitMix64 finaliser), used where a
/// value must be the same whenever it is asked for (a home's IPv6 interface id on a given day).
fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(c);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum App {
    Browser,
    ActiveSync,
    Legacy,
}

impl App {
    fn as_str(self) -> &'static str {
        match self {
            App::Browser => "browser",
            App::ActiveSync => "activesync",
            App::Legacy => "legacy",
        }
    }
}

/// One attempt before its `truth` is worked out from the tenant's token history.
struct Attempt {
    ts_ms: i64,
    /// The name as typed.
    user: String,
    /// The account the name resolves to, `None` for names not in the tenant.
    account: Option<usize>,
    ip: IpAddr,
    pw: u64,
    label: Label,
    app: App,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Home {
    V4(Ipv4Addr),
    /// The /64 prefix (high 64 bits); the interface id changes daily.
    V6(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Office {
    Head,
    Regional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameQuirk {
    None,
    Title,
    Upper,
    TrailingSpace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Home,
    Office,
    Mobile,
    Vpn,
    Hotel,
}

struct User {
    /// Canonical name, `first.last@contoso.com`.
    name: String,
    home: Home,
    office: Option<Office>,
    /// Index into [`Tenant::carriers`].
    mobile: Option<usize>,
    vpn: bool,
    quirk: NameQuirk,
    /// `(valid_from_ms, token)`, ascending; the first entry is valid from the beginning of time.
    tokens: Vec<(i64, u64)>,
}

impl User {
    fn token_at(&self, ts_ms: i64) -> u64 {
        self.tokens
            .iter()
            .rev()
            .find(|(from, _)| *from <= ts_ms)
            .or(self.tokens.first())
            .map_or(0, |(_, t)| *t)
    }

    fn typed_name(&self, rng: &mut ChaCha8Rng) -> String {
        if self.quirk == NameQuirk::None || rng.gen_bool(0.5) {
            return self.name.clone();
        }
        match self.quirk {
            NameQuirk::None => self.name.clone(),
            NameQuirk::Title => title_case(&self.name),
            NameQuirk::Upper => self.name.to_uppercase(),
            NameQuirk::TrailingSpace => format!("{} ", self.name),
        }
    }
}

/// `first.last@contoso.com` -> `First.Last@Contoso.com`.
fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut start = true;
    for c in name.chars() {
        out.push(if start { c.to_ascii_uppercase() } else { c });
        start = matches!(c, '.' | '@');
    }
    out
}

/// Hands out distinct 40-bit tokens.
struct Mint {
    used: HashSet<u64>,
}

impl Mint {
    fn fresh(&mut self, rng: &mut ChaCha8Rng) -> u64 {
        loop {
            let t = rng.gen::<u64>() & TOKEN_MASK;
            if self.used.insert(t) {
                return t;
            }
        }
    }
}

struct Tenant {
    users: Vec<User>,
    /// Canonical lower-case names of all accounts.
    names: HashSet<String>,
    /// /16 prefixes of the residential ISPs the users live behind.
    isp16: Vec<[u8; 2]>,
    head_office: [Ipv4Addr; 2],
    regional_office: [Ipv4Addr; 2],
    /// Mobile-carrier NAT pools: (first address, pool size).
    carriers: Vec<(Ipv4Addr, u8)>,
    vpn: Vec<Ipv4Addr>,
    /// The attacker dictionary, most common password first.
    dict: Vec<u64>,
    mint: Mint,
}

const FIRST_NAMES: &[&str] = &[
    "aaron",
    "adam",
    "alan",
    "albert",
    "alice",
    "amanda",
    "amy",
    "andrea",
    "angela",
    "anna",
    "anthony",
    "arthur",
    "ashley",
    "barbara",
    "betty",
    "brandon",
    "brenda",
    "brian",
    "carl",
    "carol",
    "catherine",
    "charles",
    "chen",
    "christina",
    "daniel",
    "david",
    "deborah",
    "denise",
    "diane",
    "donna",
    "douglas",
    "edward",
    "elena",
    "emily",
    "eric",
    "fatima",
    "frank",
    "gary",
    "george",
    "gregory",
    "harold",
    "helen",
    "henry",
    "jacob",
    "james",
    "jason",
    "jennifer",
    "jessica",
    "john",
    "joseph",
    "juan",
    "judy",
    "julia",
    "karen",
    "kathryn",
    "kayla",
    "keith",
    "kevin",
    "larry",
    "laura",
    "linda",
    "lisa",
    "mark",
    "maria",
    "mary",
    "michael",
    "nadia",
    "nancy",
    "nicholas",
    "omar",
    "patrick",
    "paul",
    "peter",
    "priya",
    "rachel",
    "raj",
    "rebecca",
    "richard",
    "robert",
    "ronald",
    "ruth",
    "samantha",
    "sandra",
    "sarah",
    "scott",
    "sharon",
    "sofia",
    "stephen",
    "steven",
    "susan",
    "thomas",
    "timothy",
    "victor",
    "walter",
    "wei",
    "william",
    "yusuf",
    "zoe",
    "fiona",
    "felix",
    "kofi",
    "sven",
];

const LAST_PREFIXES: &[&str] = &[
    "al", "ash", "bel", "black", "bram", "cam", "carr", "dal", "dor", "east", "ever", "fair",
    "gold", "har", "hart", "hol", "king", "mar", "mill", "north", "oak", "red", "ross", "stan",
    "ster", "thorn", "wal", "west", "whit", "wil", "win", "york", "brook", "clif", "fin", "kirk",
    "sel", "ash", "pem", "fox",
];

const LAST_SUFFIXES: &[&str] = &[
    "bury", "by", "cott", "croft", "dale", "field", "ford", "ham", "hurst", "ington", "land",
    "ley", "man", "more", "ridge", "son", "stead", "ton", "well", "wick", "wood", "worth",
    "bridge", "shaw", "stone",
];

impl Tenant {
    fn build(rng: &mut ChaCha8Rng, n_users: usize) -> Tenant {
        let mut mint = Mint {
            used: HashSet::with_capacity(n_users * 3 + DICT_SIZE),
        };
        let dict: Vec<u64> = (0..DICT_SIZE).map(|_| mint.fresh(rng)).collect();
        let isp16: Vec<[u8; 2]> = (0..40)
            .map(|_| {
                let o = random_public_v4(rng).octets();
                [o[0], o[1]]
            })
            .collect();
        let v6_isps: Vec<u64> = (0..6)
            .map(|_| {
                (0x2a00_u64 | rng.gen_range(0..=0xff_u64)) << 16 | rng.gen_range(0..=0xffff_u64)
            })
            .collect();
        let office_net = random_public_v4(rng).octets();
        let head_office = [
            Ipv4Addr::new(office_net[0], office_net[1], office_net[2], 10),
            Ipv4Addr::new(office_net[0], office_net[1], office_net[2], 11),
        ];
        let regional_net = office_net[2].wrapping_add(10);
        let regional_office = [
            Ipv4Addr::new(office_net[0], office_net[1], regional_net, 5),
            Ipv4Addr::new(office_net[0], office_net[1], regional_net, 6),
        ];
        let carriers: Vec<(Ipv4Addr, u8)> = (0..3)
            .map(|_| {
                let o = random_public_v4(rng).octets();
                (Ipv4Addr::new(o[0], o[1], o[2], 10), 50)
            })
            .collect();
        let vpn: Vec<Ipv4Addr> = (0..6).map(|_| random_public_v4(rng)).collect();

        let mut names = HashSet::with_capacity(n_users);
        let mut users = Vec::with_capacity(n_users);
        for i in 0..n_users {
            let mut name = String::new();
            for attempt in 0..50 {
                let first = FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())];
                let last = format!(
                    "{}{}",
                    LAST_PREFIXES[rng.gen_range(0..LAST_PREFIXES.len())],
                    LAST_SUFFIXES[rng.gen_range(0..LAST_SUFFIXES.len())]
                );
                name = if attempt < 49 {
                    format!("{first}.{last}@{DOMAIN}")
                } else {
                    // Crowded namespace (very large tenants): number the name.
                    format!("{first}.{last}{i}@{DOMAIN}")
                };
                if !names.contains(&name) {
                    break;
                }
            }
            names.insert(name.clone());
            let home = if rng.gen_bool(0.15) {
                let isp = v6_isps[rng.gen_range(0..v6_isps.len())];
                Home::V6(isp << 32 | u64::from(rng.gen::<u32>()))
            } else {
                let p = isp16[rng.gen_range(0..isp16.len())];
                Home::V4(Ipv4Addr::new(p[0], p[1], rng.gen(), rng.gen_range(1..=254)))
            };
            let office = match rng.gen_range(0..100) {
                0..=59 => Some(Office::Head),
                60..=76 => Some(Office::Regional),
                _ => None,
            };
            // 1-3 familiar places: home, the office if any, then a phone or the VPN.
            let mut extra = 3 - 1 - usize::from(office.is_some());
            let mobile = if extra > 0 && rng.gen_bool(0.45) {
                extra -= 1;
                Some(rng.gen_range(0..carriers.len()))
            } else {
                None
            };
            let vpn = extra > 0 && rng.gen_bool(0.35);
            let quirk = match rng.gen_range(0..100) {
                0..=59 => NameQuirk::None,
                60..=79 => NameQuirk::Title,
                80..=87 => NameQuirk::Upper,
                _ => NameQuirk::TrailingSpace,
            };
            let token = mint.fresh(rng);
            users.push(User {
                name,
                home,
                office,
                mobile,
                vpn,
                quirk,
                tokens: vec![(i64::MIN, token)],
            });
        }
        Tenant {
            users,
            names,
            isp16,
            head_office,
            regional_office,
            carriers,
            vpn,
            dict,
            mint,
        }
    }

    /// A residential-looking address in one of the users' ISP ranges.
    fn residential_v4(&self, rng: &mut ChaCha8Rng) -> Ipv4Addr {
        let p = self.isp16[rng.gen_range(0..self.isp16.len())];
        Ipv4Addr::new(p[0], p[1], rng.gen(), rng.gen_range(1..=254))
    }

    /// A plausible name that is no account of the tenant.
    fn unknown_name(&self, rng: &mut ChaCha8Rng) -> String {
        loop {
            let first = FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())];
            let last = format!(
                "{}{}",
                LAST_PREFIXES[rng.gen_range(0..LAST_PREFIXES.len())],
                LAST_SUFFIXES[rng.gen_range(0..LAST_SUFFIXES.len())]
            );
            let initial = &first[..1];
            let name = match rng.gen_range(0..4) {
                0 => format!("{initial}{last}@{DOMAIN}"),
                1 => format!("{first}_{last}@{DOMAIN}"),
                2 => format!("{first}{last}@{DOMAIN}"),
                _ => format!("{first}.{last}@{DOMAIN}"),
            };
            if !self.names.contains(&name) {
                return name;
            }
        }
    }

    fn finish(&self, a: Attempt) -> TraceEvent {
        let truth = match a.account {
            None => Truth::UnknownUser,
            Some(i) if self.users[i].token_at(a.ts_ms) == a.pw => Truth::Correct,
            Some(_) => Truth::Wrong,
        };
        TraceEvent {
            ts_ms: a.ts_ms,
            tenant: TENANT.to_owned(),
            user: a.user,
            ip: a.ip,
            pw: format_token(a.pw),
            truth,
            label: Some(a.label),
            app: Some(a.app.as_str().to_owned()),
        }
    }
}

/// Generation state shared by the scenario parts.
struct Gen<'a> {
    tenant: &'a mut Tenant,
    out: &'a mut Vec<Attempt>,
    special: &'a mut HashSet<usize>,
    scale: f64,
}

/// Legit sign-ins per user on a workday: 0..=8, about 2 on average.
const WORKDAY_COUNT_WEIGHTS: [f64; 9] = [10.0, 34.0, 25.0, 15.0, 8.0, 4.0, 2.5, 1.0, 0.5];
/// Legit sign-ins per user on a weekend day.
const WEEKEND_COUNT_WEIGHTS: [f64; 3] = [80.0, 15.0, 5.0];
/// Weight of each UTC hour 07..=23 on a workday (morning peak, 07 and 23 are half hours).
const WORKDAY_HOUR_WEIGHTS: [f64; 17] = [
    17.0, 33.0, 34.0, 18.0, 19.0, 14.0, 13.0, 11.0, 9.0, 9.0, 9.0, 4.5, 4.8, 4.3, 4.3, 4.1, 1.8,
];
/// Weight of each UTC hour 09..=22 on a weekend day.
const WEEKEND_HOUR_WEIGHTS: [f64; 14] = [
    3.0, 4.0, 5.0, 5.0, 5.0, 5.0, 4.0, 4.0, 4.0, 4.0, 5.0, 5.0, 4.0, 3.0,
];

impl Gen<'_> {
    fn push(&mut self, a: Attempt) {
        self.out.push(a);
    }

    /// Up to `n` distinct accounts not yet used by an attack's premise.
    fn pick_fresh_accounts(
        &self,
        rng: &mut ChaCha8Rng,
        n: usize,
        filter: impl Fn(&User) -> bool,
    ) -> Vec<usize> {
        let mut pool: Vec<usize> = (0..self.tenant.users.len())
            .filter(|i| !self.special.contains(i) && filter(&self.tenant.users[*i]))
            .collect();
        pool.shuffle(rng);
        pool.truncate(n);
        pool
    }

    /// Gives `n` of `among` (not already special) a password from `choices`; marks them special.
    fn make_weak(&mut self, rng: &mut ChaCha8Rng, among: &[usize], n: usize, choices: &[u64]) {
        let mut pool: Vec<usize> = among
            .iter()
            .copied()
            .filter(|i| !self.special.contains(i))
            .collect();
        pool.shuffle(rng);
        for &i in pool.iter().take(n) {
            if let Some(&t) = choices.choose(rng) {
                self.tenant.users[i].tokens = vec![(i64::MIN, t)];
            }
            self.special.insert(i);
        }
    }

    /// Low-and-slow spray: 3 passwords x ~500 users from a ~200-address botnet.
    fn spray(&mut self, rng: &mut ChaCha8Rng, start_ms: i64, hours: f64) {
        let users = self.tenant.users.len();
        let n_targets = scaled(500, self.scale, 30).min(users);
        let n_fake = ((n_targets as f64 * 0.03).round() as usize).max(1);
        let mut real = self.pick_fresh_accounts(rng, n_targets - n_fake, |_| true);
        if real.len() < n_targets - n_fake {
            // Tiny tenant: allow overlap with other attacks' accounts.
            real = (0..users).collect();
            real.shuffle(rng);
            real.truncate(n_targets - n_fake);
        }
        let passwords: Vec<u64> = self.tenant.dict[..3].to_vec();
        let n_weak = scaled(5, self.scale, 1);
        self.make_weak(rng, &real, n_weak, &passwords);
        let mut targets: Vec<(String, Option<usize>)> = real
            .iter()
            .map(|&i| (self.tenant.users[i].name.clone(), Some(i)))
            .collect();
        for _ in 0..n_fake {
            targets.push((self.tenant.unknown_name(rng), None));
        }
        let n_addr = scaled(200, self.scale, 20);
        let botnet: Vec<Ipv4Addr> = (0..n_addr)
            .map(|_| {
                if rng.gen_bool(0.6) {
                    self.tenant.residential_v4(rng)
                } else {
                    random_public_v4(rng)
                }
            })
            .collect();
        let pause_ms = 45 * MINUTE_MS;
        let active_ms = hours * HOUR_MS as f64 - (passwords.len() as f64 - 1.0) * pause_ms as f64;
        let gap = active_ms / (targets.len() * passwords.len()) as f64;
        let mut t = start_ms;
        for (round, &pw) in passwords.iter().enumerate() {
            if round > 0 {
                t += rng.gen_range(30 * MINUTE_MS..60 * MINUTE_MS);
            }
            targets.shuffle(rng);
            let offset = rng.gen_range(0..botnet.len());
            for (k, (name, account)) in targets.iter().enumerate() {
                t += jitter(rng, gap);
                let app = if rng.gen_bool(0.6) {
                    App::Legacy
                } else {
                    App::Browser
                };
                self.push(Attempt {
                    ts_ms: t,
                    user: name.clone(),
                    account: *account,
                    ip: IpAddr::V4(botnet[(offset + k) % botnet.len()]),
                    pw,
                    label: Label::Attack,
                    app,
                });
            }
        }
    }

    /// Targeted brute force: one /24, ~150 guesses at each of ~20 head-office executives.
    fn brute(&mut self, rng: &mut ChaCha8Rng, start_ms: i64, hours: f64) {
        let n_exec = scaled(20, self.scale, 3);
        let mut execs = self.pick_fresh_accounts(rng, n_exec, |u| u.office == Some(Office::Head));
        if execs.is_empty() {
            execs = self.pick_fresh_accounts(rng, n_exec, |_| true);
        }
        let guesses: Vec<u64> = self.tenant.dict[..150].to_vec();
        // Executives whose password is on the list (not among the 3 most sprayed ones).
        let n_weak = scaled(2, self.scale, 1).min(execs.len());
        self.make_weak(rng, &execs, n_weak, &guesses[3..]);
        self.special.extend(execs.iter().copied());
        let net = random_public_v4(rng).octets();
        let round_ms = hours * HOUR_MS as f64 / guesses.len() as f64;
        for (round, &pw) in guesses.iter().enumerate() {
            let mut t = start_ms + (round as f64 * round_ms) as i64 + rng.gen_range(0..MINUTE_MS);
            let mut order = execs.clone();
            order.shuffle(rng);
            for &i in &order {
                t += rng.gen_range(SECOND_MS..6 * SECOND_MS);
                self.push(Attempt {
                    ts_ms: t,
                    user: self.tenant.users[i].name.clone(),
                    account: Some(i),
                    ip: IpAddr::V4(Ipv4Addr::new(
                        net[0],
                        net[1],
                        net[2],
                        rng.gen_range(1..=254),
                    )),
                    pw,
                    label: Label::Attack,
                    app: App::Browser,
                });
            }
        }
    }

    /// Credential stuffing: ~5,000 leaked pairs, ~45% unknown names, ~0.5% still valid.
    fn stuffing(&mut self, rng: &mut ChaCha8Rng, start_ms: i64, hours: f64) {
        let users = self.tenant.users.len();
        let n_pairs = scaled(5000, self.scale, 100);
        let n_valid = scaled(25, self.scale, 1);
        let valid_accounts = self.pick_fresh_accounts(rng, n_valid, |_| true);
        self.special.extend(valid_accounts.iter().copied());
        let n_proxies = (n_pairs / 2).max(10);
        let proxies: Vec<Ipv4Addr> = (0..n_proxies)
            .map(|_| self.tenant.residential_v4(rng))
            .collect();
        let mut seen: HashSet<(String, u64)> = HashSet::with_capacity(n_pairs);
        let mut pairs: Vec<(String, Option<usize>, u64)> = Vec::with_capacity(n_pairs);
        for &i in &valid_accounts {
            let u = &self.tenant.users[i];
            pairs.push((u.name.clone(), Some(i), u.token_at(start_ms)));
        }
        while pairs.len() < n_pairs {
            let (name, account) = if rng.gen_bool(0.45 / (1.0 - n_valid as f64 / n_pairs as f64)) {
                (self.tenant.unknown_name(rng), None)
            } else {
                let i = rng.gen_range(0..users);
                (self.tenant.users[i].name.clone(), Some(i))
            };
            let pw = if rng.gen_bool(0.3) {
                // A common password; cubed uniform favours the head of the dictionary.
                let x: f64 = rng.gen();
                self.tenant.dict[((x * x * x) * DICT_SIZE as f64) as usize % DICT_SIZE]
            } else {
                self.tenant.mint.fresh(rng)
            };
            if let Some(i) = account {
                if self.tenant.users[i].token_at(start_ms) == pw {
                    continue; // only the chosen valid pairs are valid
                }
            }
            if seen.insert((name.clone(), pw)) {
                pairs.push((name, account, pw));
            }
        }
        pairs.shuffle(rng);
        let gap = hours * HOUR_MS as f64 / n_pairs as f64;
        let mut t = start_ms;
        for (name, account, pw) in pairs {
            t += jitter(rng, gap);
            self.push(Attempt {
                ts_ms: t,
                user: name,
                account,
                ip: IpAddr::V4(proxies[rng.gen_range(0..proxies.len())]),
                pw,
                label: Label::Attack,
                app: App::Browser,
            });
        }
    }

    /// 100 addresses, one password each, against one victim over a few hours per window, while
    /// the victim keeps signing in from home and the office (15% mistyping once first).
    fn distributed(&mut self, rng: &mut ChaCha8Rng, windows: &[(i64, f64)]) {
        let victim = self
            .pick_fresh_accounts(rng, 1, |u| u.office.is_some())
            .first()
            .copied()
            .or_else(|| self.pick_fresh_accounts(rng, 1, |_| true).first().copied());
        let Some(victim) = victim else { return };
        self.special.insert(victim);
        let n_tries = 100usize;
        let per_window = n_tries.div_ceil(windows.len().max(1));
        let mut k = 0usize;
        let name = self.tenant.users[victim].name.clone();
        for &(start_ms, hours) in windows {
            let n = per_window.min(n_tries - k);
            let gap = hours * HOUR_MS as f64 / n.max(1) as f64;
            let mut t = start_ms;
            for _ in 0..n {
                t += jitter(rng, gap);
                let app = if rng.gen_bool(0.57) {
                    App::Browser
                } else {
                    App::Legacy
                };
                self.push(Attempt {
                    ts_ms: t,
                    user: name.clone(),
                    account: Some(victim),
                    ip: IpAddr::V4(random_public_v4(rng)),
                    // Dictionary entries no other attack uses; the victim's token is not there.
                    pw: self.tenant.dict[400 + k],
                    label: Label::Attack,
                    app,
                });
                k += 1;
            }
            // The victim's own day: a sign-in every 15-45 minutes, 07:30-18:30.
            let day = (start_ms - WEEK_START_MS).div_euclid(DAY_MS);
            let mut t = WEEK_START_MS + day * DAY_MS + 7 * HOUR_MS + 30 * MINUTE_MS;
            let end = t + 11 * HOUR_MS;
            loop {
                t += rng.gen_range(15 * MINUTE_MS..45 * MINUTE_MS);
                if t >= end {
                    break;
                }
                let hour = (t - WEEK_START_MS).rem_euclid(DAY_MS) / HOUR_MS;
                let place = if (9..17).contains(&hour) {
                    Place::Office
                } else {
                    Place::Home
                };
                self.sign_in(rng, victim, t, place, 0.15, 1);
            }
        }
    }

    /// IPv6 rotation: 5 passwords x ~300 users, a new address per try, first in one /64, then
    /// across eight /64s of the same /48.
    fn ipv6(&mut self, rng: &mut ChaCha8Rng, start_ms: i64, hours: f64) {
        let users = self.tenant.users.len();
        let n_targets = scaled(300, self.scale, 20).min(users);
        let targets = self.pick_fresh_accounts(rng, n_targets, |_| true);
        let passwords: Vec<u64> = self.tenant.dict[..5].to_vec();
        let n_weak = scaled(1, self.scale, 1);
        self.make_weak(rng, &targets, n_weak, &passwords);
        let p48: u64 =
            (0x2a00 | rng.gen_range(0..=0xff_u64)) << 32 | rng.gen_range(0..=0xffff_ffff_u64);
        let subnets: Vec<u64> = (0..8)
            .map(|_| p48 << 16 | rng.gen_range(0..=0xffff_u64))
            .collect();
        let total = targets.len() * passwords.len();
        let single_until = total * 2 / 5;
        let gap = hours * HOUR_MS as f64 / total as f64;
        let mut t = start_ms;
        let mut k = 0usize;
        for &pw in &passwords {
            let mut order = targets.clone();
            order.shuffle(rng);
            for i in order {
                t += jitter(rng, gap);
                let net = if k < single_until {
                    subnets[0]
                } else {
                    subnets[rng.gen_range(0..subnets.len())]
                };
                let iid = rng.gen::<u64>() | 1;
                let addr = Ipv6Addr::from(u128::from(net) << 64 | u128::from(iid));
                self.push(Attempt {
                    ts_ms: t,
                    user: self.tenant.users[i].name.clone(),
                    account: Some(i),
                    ip: IpAddr::V6(addr),
                    pw,
                    label: Label::Attack,
                    app: App::Browser,
                });
                k += 1;
            }
        }
    }

    /// Name variants: 25 passwords x ~40 users, each try spelling the name differently.
    fn names(&mut self, rng: &mut ChaCha8Rng, start_ms: i64, hours: f64) {
        let users = self.tenant.users.len();
        let n_targets = scaled(40, self.scale, 5).min(users);
        let targets = self.pick_fresh_accounts(rng, n_targets, |_| true);
        let passwords: Vec<u64> = self.tenant.dict[..25].to_vec();
        let n_weak = scaled(2, self.scale, 1);
        self.make_weak(rng, &targets, n_weak, &passwords);
        let n_addr = scaled(60, self.scale, 10);
        let addrs: Vec<Ipv4Addr> = (0..n_addr).map(|_| random_public_v4(rng)).collect();
        let mut last: HashMap<usize, String> = HashMap::new();
        let gap = hours * HOUR_MS as f64 / (targets.len() * passwords.len()) as f64;
        let mut t = start_ms;
        for &pw in &passwords {
            let mut order = targets.clone();
            order.shuffle(rng);
            for i in order {
                t += jitter(rng, gap);
                let canonical = self.tenant.users[i].name.clone();
                let prev = last.get(&i).cloned().unwrap_or_default();
                let mut typed = name_variant(&canonical, rng);
                for _ in 0..20 {
                    if typed != prev && typed != canonical {
                        break;
                    }
                    typed = name_variant(&canonical, rng);
                }
                last.insert(i, typed.clone());
                let app = if rng.gen_bool(0.5) {
                    App::Browser
                } else {
                    App::Legacy
                };
                self.push(Attempt {
                    ts_ms: t,
                    user: typed,
                    account: Some(i),
                    ip: IpAddr::V4(addrs[rng.gen_range(0..addrs.len())]),
                    pw,
                    label: Label::Attack,
                    app,
                });
            }
        }
    }

    /// The address a user signs in from at `place` on day `day`.
    fn address(
        &self,
        rng: &mut ChaCha8Rng,
        u: usize,
        place: Place,
        day: i64,
        hotel: Ipv4Addr,
    ) -> IpAddr {
        let user = &self.tenant.users[u];
        match place {
            Place::Home => match user.home {
                Home::V4(a) => IpAddr::V4(a),
                Home::V6(p64) => {
                    // Privacy address: a new interface id every day, same /64.
                    let iid = mix(u as u64, day as u64, 0x686f_6d65) | 1;
                    IpAddr::V6(Ipv6Addr::from(u128::from(p64) << 64 | u128::from(iid)))
                }
            },
            Place::Office => {
                let pair = match user.office {
                    Some(Office::Regional) => &self.tenant.regional_office,
                    _ => &self.tenant.head_office,
                };
                IpAddr::V4(pair[rng.gen_range(0..2)])
            }
            Place::Mobile => {
                let (base, size) =
                    self.tenant.carriers[user.mobile.unwrap_or(0) % self.tenant.carriers.len()];
                let o = base.octets();
                IpAddr::V4(Ipv4Addr::new(
                    o[0],
                    o[1],
                    o[2],
                    o[3].saturating_add(rng.gen_range(0..size)),
                ))
            }
            Place::Vpn => IpAddr::V4(self.tenant.vpn[u % self.tenant.vpn.len()]),
            Place::Hotel => IpAddr::V4(hotel),
        }
    }

    /// One legit sign-in at `t` from `place`: with probability `typo_p` it starts with 1 to
    /// `max_typos` distinct wrong tokens a few seconds apart, then the correct one.
    fn sign_in(
        &mut self,
        rng: &mut ChaCha8Rng,
        u: usize,
        t: i64,
        place: Place,
        typo_p: f64,
        max_typos: u8,
    ) {
        let day = (t - WEEK_START_MS).div_euclid(DAY_MS);
        let ip = self.address(rng, u, place, day, Ipv4Addr::UNSPECIFIED);
        self.sign_in_from(rng, u, t, ip, place, typo_p, max_typos);
    }

    #[allow(clippy::too_many_arguments)]
    fn sign_in_from(
        &mut self,
        rng: &mut ChaCha8Rng,
        u: usize,
        t: i64,
        ip: IpAddr,
        place: Place,
        typo_p: f64,
        max_typos: u8,
    ) {
        let app = match place {
            Place::Mobile => {
                if rng.gen_bool(0.6) {
                    App::ActiveSync
                } else {
                    App::Browser
                }
            }
            _ => match rng.gen_range(0..100) {
                0..=89 => App::Browser,
                90..=96 => App::Legacy,
                _ => App::ActiveSync,
            },
        };
        let mut t = t;
        if rng.gen_bool(typo_p) {
            let typos = if max_typos < 2 || rng.gen_bool(0.85) {
                1
            } else {
                2
            };
            for _ in 0..typos {
                let pw = self.tenant.mint.fresh(rng);
                let user = self.tenant.users[u].typed_name(rng);
                self.push(Attempt {
                    ts_ms: t,
                    user,
                    account: Some(u),
                    ip,
                    pw,
                    label: Label::Legit,
                    app,
                });
                t += rng.gen_range(4 * SECOND_MS..25 * SECOND_MS);
            }
        }
        let user = self.tenant.users[u].typed_name(rng);
        let pw = self.tenant.users[u].token_at(t);
        self.push(Attempt {
            ts_ms: t,
            user,
            account: Some(u),
            ip,
            pw,
            label: Label::Legit,
            app,
        });
    }

    fn pick_place(&self, rng: &mut ChaCha8Rng, u: usize, workday: bool, hour: i64) -> Place {
        let user = &self.tenant.users[u];
        let work_hours = workday && (8..18).contains(&hour);
        let mut options: Vec<(Place, f64)> =
            vec![(Place::Home, if work_hours { 0.35 } else { 0.65 })];
        if user.office.is_some() {
            options.push((Place::Office, if work_hours { 0.45 } else { 0.05 }));
        }
        if user.mobile.is_some() {
            options.push((Place::Mobile, 0.25));
        }
        if user.vpn {
            options.push((Place::Vpn, if work_hours { 0.3 } else { 0.15 }));
        }
        let weights: Vec<f64> = options.iter().map(|(_, w)| *w).collect();
        options[pick_weighted(rng, &weights)].0
    }

    /// A sign-in instant on `day`: workdays 07:30-23:30 with a morning peak; weekends 09-23.
    fn sign_in_time(rng: &mut ChaCha8Rng, day: i64, workday: bool) -> i64 {
        let base = WEEK_START_MS + day * DAY_MS;
        let (hour, min_from, min_to) = if workday {
            let h = pick_weighted(rng, &WORKDAY_HOUR_WEIGHTS) as i64 + 7;
            match h {
                7 => (h, 30, 60),
                23 => (h, 0, 30),
                _ => (h, 0, 60),
            }
        } else {
            (pick_weighted(rng, &WEEKEND_HOUR_WEIGHTS) as i64 + 9, 0, 60)
        };
        base + hour * HOUR_MS + rng.gen_range(min_from * MINUTE_MS..min_to * MINUTE_MS)
    }

    /// The legitimate background over `days` (0 = Monday).
    fn legit(&mut self, rng: &mut ChaCha8Rng, days: std::ops::Range<i64>) {
        let n_users = self.tenant.users.len();
        let workdays: Vec<i64> = days.clone().filter(|d| d % 7 < 5).collect();
        // Password resets: ~0.2% of users (at least one), never an attack's premise account.
        let n_resets = scaled(4, self.scale, 1);
        let resetters = self.pick_fresh_accounts(rng, n_resets, |_| true);
        // The new token takes effect at the reset instant, before any sign-in is generated, so
        // that every later sign-in of the day uses it.
        let mut resets: HashMap<usize, (i64, u64)> = HashMap::new();
        for &u in &resetters {
            if let Some(&d) = workdays.choose(rng) {
                let t = WEEK_START_MS
                    + d * DAY_MS
                    + rng.gen_range(8 * HOUR_MS + 30 * MINUTE_MS..16 * HOUR_MS);
                let old = self.tenant.users[u].token_at(t);
                let new = self.tenant.mint.fresh(rng);
                self.tenant.users[u].tokens.push((t, new));
                resets.insert(u, (t, old));
            }
        }
        // Travellers: ~1.5% of users spend 1-3 days at a hotel sometime this week.
        let mut trips: HashMap<usize, (i64, i64, Ipv4Addr)> = HashMap::new();
        for u in 0..n_users {
            if rng.gen_bool(0.015) {
                let first = rng.gen_range(0..7);
                let len = rng.gen_range(1..=3);
                trips.insert(u, (first, first + len, random_public_v4(rng)));
            }
        }

        for u in 0..n_users {
            for day in days.clone() {
                let workday = day % 7 < 5;
                let n = if workday {
                    pick_weighted(rng, &WORKDAY_COUNT_WEIGHTS)
                } else {
                    pick_weighted(rng, &WEEKEND_COUNT_WEIGHTS)
                };
                let trip = trips
                    .get(&u)
                    .filter(|(from, to, _)| (*from..*to).contains(&day))
                    .map(|(_, _, hotel)| *hotel);
                let mut times: Vec<i64> = (0..n)
                    .map(|_| Self::sign_in_time(rng, day, workday))
                    .collect();
                times.sort_unstable();
                for t in times {
                    let hour = (t - WEEK_START_MS).rem_euclid(DAY_MS) / HOUR_MS;
                    let (place, ip) = match trip {
                        Some(hotel) if rng.gen_bool(0.8) => (Place::Hotel, IpAddr::V4(hotel)),
                        _ => {
                            let place = self.pick_place(rng, u, workday, hour);
                            (
                                place,
                                self.address(rng, u, place, day, Ipv4Addr::UNSPECIFIED),
                            )
                        }
                    };
                    self.sign_in_from(rng, u, t, ip, place, 0.03, 2);
                }
                if let Some(&(t_reset, old)) = resets.get(&u) {
                    if (t_reset - WEEK_START_MS).div_euclid(DAY_MS) == day {
                        self.reset(rng, u, t_reset, old);
                    }
                }
            }
        }
    }

    /// The sign-ins around a password reset at `t` (the token history already holds the new
    /// token from `t`; `old` is the one before): the user tries 4-6 old passwords, then the new
    /// one; half leave a phone retrying `old` every 10-15 min for a few hours.
    fn reset(&mut self, rng: &mut ChaCha8Rng, u: usize, t: i64, old: u64) {
        let day = (t - WEEK_START_MS).div_euclid(DAY_MS);
        let new = self.tenant.users[u].token_at(t);
        let place = if self.tenant.users[u].office.is_some() {
            Place::Office
        } else {
            Place::Home
        };
        let ip = self.address(rng, u, place, day, Ipv4Addr::UNSPECIFIED);
        let tries = rng.gen_range(4..=6);
        let olds: Vec<u64> = if rng.gen_bool(0.5) {
            vec![old]
        } else {
            let mut v = vec![old];
            v.extend((0..tries - 1).map(|_| self.tenant.mint.fresh(rng)));
            v
        };
        let mut at = t + rng.gen_range(MINUTE_MS..5 * MINUTE_MS);
        for k in 0..tries {
            let user = self.tenant.users[u].typed_name(rng);
            self.push(Attempt {
                ts_ms: at,
                user,
                account: Some(u),
                ip,
                pw: olds[k % olds.len()],
                label: Label::Legit,
                app: App::Browser,
            });
            at += rng.gen_range(4 * SECOND_MS..40 * SECOND_MS);
        }
        let user = self.tenant.users[u].typed_name(rng);
        self.push(Attempt {
            ts_ms: at,
            user,
            account: Some(u),
            ip,
            pw: new,
            label: Label::Legit,
            app: App::Browser,
        });
        if rng.gen_bool(0.5) {
            let phone_place = if self.tenant.users[u].mobile.is_some() {
                Place::Mobile
            } else {
                Place::Home
            };
            let mut pt = t + rng.gen_range(2 * MINUTE_MS..10 * MINUTE_MS);
            let until = pt + rng.gen_range(2 * HOUR_MS..5 * HOUR_MS);
            while pt < until {
                let ip = self.address(rng, u, phone_place, day, Ipv4Addr::UNSPECIFIED);
                let name = self.tenant.users[u].name.clone();
                self.push(Attempt {
                    ts_ms: pt,
                    user: name,
                    account: Some(u),
                    ip,
                    pw: old,
                    label: Label::Legit,
                    app: App::ActiveSync,
                });
                pt += rng.gen_range(10 * MINUTE_MS..15 * MINUTE_MS);
            }
        }
    }
}

/// The account name spelled differently: 1-3 of random/upper/title case, the ﬁ/ﬂ/ﬀ ligatures,
/// Kelvin sign for k, long s for s, fullwidth or mathematical bold letters, and padding with
/// spaces, tabs, no-break or ideographic spaces. NFKC + trim + lower-case gives `name` back.
fn name_variant(name: &str, rng: &mut ChaCha8Rng) -> String {
    let mut kinds: Vec<u8> = (0..8).collect();
    kinds.shuffle(rng);
    kinds.truncate(rng.gen_range(1..=3));
    kinds.sort_unstable();
    let mut s = name.to_owned();
    for kind in kinds {
        s = match kind {
            0 => match rng.gen_range(0..3) {
                0 => s
                    .chars()
                    .map(|c| {
                        if rng.gen_bool(0.5) {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect(),
                1 => s.to_ascii_uppercase(),
                _ => title_case(&s),
            },
            1 => s
                .replace("fi", "\u{FB01}")
                .replace("fl", "\u{FB02}")
                .replace("ff", "\u{FB00}"),
            2 => s.replace(['k', 'K'], "\u{212A}"),
            3 => s.replace('s', "\u{17F}"),
            4 | 5 => {
                let fullwidth = kind == 4;
                let all = rng.gen_bool(0.3);
                s.chars()
                    .map(|c| {
                        if !(all || rng.gen_bool(0.3)) {
                            return c;
                        }
                        let mapped = match (fullwidth, c) {
                            (true, '!'..='~') => char::from_u32(u32::from(c) - 0x21 + 0xFF01),
                            (false, 'A'..='Z') => {
                                char::from_u32(u32::from(c) - u32::from('A') + 0x1D400)
                            }
                            (false, 'a'..='z') => {
                                char::from_u32(u32::from(c) - u32::from('a') + 0x1D41A)
                            }
                            _ => None,
                        };
                        mapped.unwrap_or(c)
                    })
                    .collect()
            }
            _ => {
                const PADS: [&str; 6] = [" ", "  ", "\t", "\u{A0}", "\u{3000}", " \t"];
                let pad = |rng: &mut ChaCha8Rng| PADS[rng.gen_range(0..PADS.len())];
                match rng.gen_range(0..3) {
                    0 => format!("{}{s}", pad(rng)),
                    1 => format!("{s}{}", pad(rng)),
                    _ => {
                        let lead = pad(rng);
                        format!("{lead}{s}{}", pad(rng))
                    }
                }
            }
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_normalization::UnicodeNormalization;

    fn canon(s: &str) -> String {
        s.nfkc().collect::<String>().trim().to_lowercase()
    }

    fn cfg(scenario: Scenario, seed: u64) -> SynthConfig {
        SynthConfig::new(scenario, seed)
    }

    #[test]
    fn week_starts_monday_2026_11_02() {
        let t = time::macros::datetime!(2026-11-02 0:00 UTC);
        assert_eq!(t.unix_timestamp() * 1000, WEEK_START_MS);
        assert_eq!(t.weekday(), time::Weekday::Monday);
    }

    #[test]
    fn scenario_names_round_trip() {
        for sc in Scenario::ALL {
            assert_eq!(sc.to_string().parse::<Scenario>(), Ok(sc));
        }
        assert!("spray".parse::<Scenario>().is_err());
    }

    #[test]
    fn same_seed_gives_identical_output_and_different_seed_differs() {
        let c = SynthConfig {
            users: 300,
            ..cfg(Scenario::MixedWeek, 42)
        };
        let a = generate(&c);
        let b = generate(&c);
        assert_eq!(a, b);
        let mut buf_a = Vec::new();
        let mut buf_b = Vec::new();
        write_jsonl(&a, &mut buf_a).unwrap();
        write_jsonl(&b, &mut buf_b).unwrap();
        assert_eq!(buf_a, buf_b);
        let other = generate(&SynthConfig { seed: 43, ..c });
        assert_ne!(a, other);
    }

    #[test]
    fn every_scenario_is_sorted_labelled_and_in_its_days() {
        for sc in Scenario::ALL {
            let events = generate(&cfg(sc, 7));
            assert!(!events.is_empty(), "{sc}");
            assert!(
                events.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms),
                "{sc} not sorted"
            );
            assert!(
                events.iter().all(|e| e.tenant == TENANT && e.app.is_some()),
                "{sc}"
            );
            assert!(
                events.iter().all(|e| e.pw.len() == 10
                    && e.pw
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))),
                "{sc}: tokens are 10 lowercase hex chars"
            );
            let legit = events
                .iter()
                .filter(|e| e.label == Some(Label::Legit))
                .count();
            let attack = events
                .iter()
                .filter(|e| e.label == Some(Label::Attack))
                .count();
            assert_eq!(legit + attack, events.len(), "{sc}: every event labelled");
            assert!(legit > 1000, "{sc}: {legit} legit");
            if sc == Scenario::LegitOnly {
                assert_eq!(attack, 0);
            } else {
                assert!(attack >= 100, "{sc}: {attack} attack");
            }
            let days = sc.legit_days();
            let first = WEEK_START_MS + days.start * DAY_MS;
            let last = WEEK_START_MS + (days.end + 1) * DAY_MS;
            assert!(
                events.iter().all(|e| (first..last).contains(&e.ts_ms)),
                "{sc}"
            );
        }
    }

    #[test]
    fn attack_shapes_match_the_readme_at_2000_users() {
        let count = |sc: Scenario| {
            let ev = generate(&cfg(sc, 3));
            let attack: Vec<TraceEvent> = ev
                .into_iter()
                .filter(|e| e.label == Some(Label::Attack))
                .collect();
            let correct = attack.iter().filter(|e| e.truth == Truth::Correct).count();
            let unknown = attack
                .iter()
                .filter(|e| e.truth == Truth::UnknownUser)
                .count();
            let ips: HashSet<IpAddr> = attack.iter().map(|e| e.ip).collect();
            let pws: HashSet<&str> = attack.iter().map(|e| e.pw.as_str()).collect();
            let users: HashSet<String> = attack.iter().map(|e| canon(&e.user)).collect();
            (
                attack.len(),
                correct,
                unknown,
                ips.len(),
                pws.len(),
                users.len(),
            )
        };
        let (n, correct, unknown, ips, pws, users) = count(Scenario::SprayLowslow);
        assert_eq!((n, pws, users), (1500, 3, 500));
        assert!(
            correct >= 1 && unknown > 0 && ips == 200,
            "{correct} {unknown} {ips}"
        );
        let (n, correct, _, ips, pws, users) = count(Scenario::BruteTargeted);
        assert_eq!((n, pws, users), (3000, 150, 20));
        assert!(correct == 2 && ips > 200 && ips <= 254, "{correct} {ips}");
        let (n, correct, unknown, ..) = count(Scenario::Stuffing);
        assert_eq!(n, 5000);
        assert!((15..=40).contains(&correct), "{correct}");
        assert!((2000..2500).contains(&unknown), "{unknown}");
        let (n, correct, _, ips, pws, users) = count(Scenario::DistributedOneUser);
        assert_eq!((n, correct, ips, pws, users), (100, 0, 100, 100, 1));
        let (n, correct, _, ips, pws, users) = count(Scenario::Ipv6Rotation);
        assert_eq!((n, ips, pws, users), (1500, 1500, 5, 300));
        assert!(correct >= 1);
        let (n, _, _, _, pws, users) = count(Scenario::NameVariants);
        assert_eq!((n, pws, users), (1000, 25, 40));
        let (n, ..) = count(Scenario::MixedWeek);
        assert_eq!(n, 9600);
    }

    #[test]
    fn name_variants_all_normalise_to_their_account() {
        let ev = generate(&cfg(Scenario::NameVariants, 11));
        let tenant = Tenant::build(&mut stream(11, 1), DEFAULT_USERS);
        let mut odd = 0;
        for e in ev.iter().filter(|e| e.label == Some(Label::Attack)) {
            let c = canon(&e.user);
            assert!(tenant.names.contains(&c), "{:?} -> {c:?}", e.user);
            if e.user != c {
                odd += 1;
            }
        }
        assert_eq!(
            odd, 1000,
            "every try is spelled differently from the account"
        );
        // Every kind of spelling turns up.
        let all: String = ev.iter().map(|e| e.user.as_str()).collect();
        for c in ['\u{A0}', '\u{3000}', '\t', '\u{212A}', '\u{17F}'] {
            assert!(all.contains(c), "{c:?}");
        }
        assert!(all.chars().any(|c| ('\u{FF01}'..='\u{FF5E}').contains(&c)));
        assert!(all
            .chars()
            .any(|c| ('\u{1D400}'..='\u{1D433}').contains(&c)));
    }

    #[test]
    fn name_variant_covers_ligatures() {
        let mut rng = stream(1, 99);
        let v: Vec<String> = (0..500)
            .map(|_| name_variant("fiona.flintoff@contoso.com", &mut rng))
            .collect();
        assert!(v.iter().any(|s| s.contains('\u{FB01}')));
        assert!(v.iter().all(|s| canon(s) == "fiona.flintoff@contoso.com"));
    }

    #[test]
    fn truth_is_consistent_with_each_users_token_history() {
        for sc in [
            Scenario::MixedWeek,
            Scenario::NameVariants,
            Scenario::Ipv6Rotation,
        ] {
            let ev = generate(&SynthConfig {
                users: 2000,
                ..cfg(sc, 5)
            });
            let tenant_names = Tenant::build(&mut stream(5, 1), DEFAULT_USERS).names;
            // Per account: the correct token in force, from the `correct` attempts.
            let mut current: HashMap<String, (i64, String)> = HashMap::new();
            let mut changes: HashMap<String, usize> = HashMap::new();
            for e in &ev {
                let acct = canon(&e.user);
                let known = tenant_names.contains(&acct);
                assert_eq!(e.truth == Truth::UnknownUser, !known, "{sc}: {e:?}");
                if e.truth == Truth::Correct {
                    match current.get(&acct) {
                        Some((_, tok)) if *tok != e.pw => {
                            *changes.entry(acct.clone()).or_default() += 1;
                        }
                        _ => {}
                    }
                    current.insert(acct, (e.ts_ms, e.pw.clone()));
                }
            }
            assert!(
                changes.values().all(|&n| n == 1),
                "{sc}: a token changes at most once"
            );
            // A `wrong` attempt never carries the token in force at that time (checked against
            // the last and next `correct` token, which bracket it for users without a reset).
            let mut last_ok: HashMap<String, String> = HashMap::new();
            for e in &ev {
                let acct = canon(&e.user);
                match e.truth {
                    Truth::Correct => {
                        last_ok.insert(acct, e.pw.clone());
                    }
                    Truth::Wrong if !changes.contains_key(&acct) => {
                        if let Some(tok) = current.get(&acct).map(|(_, t)| t) {
                            assert_ne!(&e.pw, tok, "{sc}: wrong attempt with the right token");
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn correct_iff_token_is_the_users_token_at_that_time() {
        for sc in Scenario::ALL {
            let (tenant, ev) = generate_with_tenant(&cfg(sc, 21));
            let by_name: HashMap<&str, &User> =
                tenant.users.iter().map(|u| (u.name.as_str(), u)).collect();
            let mut resets_seen = 0;
            for e in &ev {
                let acct = canon(&e.user);
                match by_name.get(acct.as_str()) {
                    None => assert_eq!(e.truth, Truth::UnknownUser, "{sc}: {e:?}"),
                    Some(u) => {
                        let expect = if format_token(u.token_at(e.ts_ms)) == e.pw {
                            Truth::Correct
                        } else {
                            Truth::Wrong
                        };
                        assert_eq!(e.truth, expect, "{sc}: {e:?}");
                        if u.tokens.len() > 1 && e.truth == Truth::Correct {
                            resets_seen += 1;
                        }
                    }
                }
            }
            assert!(tenant.users.iter().all(|u| u.tokens.len() <= 2), "{sc}");
            assert!(resets_seen > 0, "{sc}: some users reset their password");
        }
    }

    #[test]
    fn legit_background_looks_like_the_sample() {
        let ev = generate(&cfg(Scenario::LegitOnly, 9));
        let n = ev.len() as f64;
        let wrong = ev.iter().filter(|e| e.truth == Truth::Wrong).count() as f64;
        assert!((15_000.0..30_000.0).contains(&n), "{n}");
        assert!((0.02..0.06).contains(&(wrong / n)), "{}", wrong / n);
        let v6 = ev.iter().filter(|e| e.ip.is_ipv6()).count() as f64;
        assert!((0.02..0.15).contains(&(v6 / n)), "{}", v6 / n);
        let mut per_ip: HashMap<IpAddr, HashSet<String>> = HashMap::new();
        for e in &ev {
            per_ip.entry(e.ip).or_default().insert(canon(&e.user));
        }
        let biggest = per_ip.values().map(HashSet::len).max().unwrap_or(0);
        assert!(biggest > 500, "head office NAT hides many users: {biggest}");
        let phones = ev
            .iter()
            .filter(|e| e.truth == Truth::Wrong && e.app.as_deref() == Some("activesync"))
            .count();
        assert!(phones > 0);
    }

    #[test]
    fn all_scenarios_at_2000_users_stay_cheap() {
        let total: usize = Scenario::ALL
            .iter()
            .map(|&sc| generate(&cfg(sc, 1)).len())
            .sum();
        assert!(total > 50_000, "{total}");
    }
}
