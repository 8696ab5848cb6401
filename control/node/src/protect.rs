//! Automated intrusion protection on the edge (the guide's "Expressway Automated Intrusion
//! Protection", fail2ban on a real Expressway): failures are recorded per source address
//! and category; a source that reaches a category's trigger level within its detection
//! window is blocked for the block duration, so its next connection is dropped at accept,
//! before any TLS, and (with XDP) its UDP dies in the kernel.
//!
//! [`Protection`] is sans-IO: the caller passes `now` to [`Protection::record`],
//! [`Protection::admit`] and [`Protection::handle_timeout`] (due at
//! [`Protection::poll_timeout`]) and drains [`Protection::poll_event`] for blocks and lifts
//! to apply elsewhere. Memory is bounded: at most `max_sources` addresses are tracked, the
//! least recently seen unblocked one evicted first (counted). [`Shield`] is the node's thin
//! IO shell around it: the clock, a lock, and the pinned XDP `blocked` map.
//!
//! Categories are the guide's: the five enabled by default from X8.9 (`http-ce-auth`,
//! `http-ce-intrusion`, `sshpfwd-auth`, `sshpfwd-intrusion`, `xmpp-intrusion`) and the
//! HTTP proxy categories it names (authorization failure, protocol violation, resource
//! access failure, which it says not to enable). The guide names the HTTP proxy ones without
//! ids and the others without names; the pairing below (and the id `http-ce-resource`) is
//! inferred from which it enables by default and which it recommends.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::ConfigError;

/// One kind of failure the edge watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// `http-ce-auth`, "HTTP proxy authorization failure": the core answered 401 to a
    /// request that presented credentials (a bare challenge does not count).
    HttpCeAuth,
    /// `http-ce-intrusion`, "HTTP proxy protocol violation": malformed HTTP or TLS, header
    /// floods, and requests the allow list refuses (403).
    HttpCeIntrusion,
    /// `http-ce-resource`, "HTTP proxy resource access failure": 404s. Off by default: the
    /// guide warns that it blocks clients that merely ask for something absent.
    HttpCeResource,
    /// `sshpfwd-auth`: the HTTP tunnel listener (2222) refused a peer's certificate (chain,
    /// EKU, TLS verify subject name). Expressway's tunnel is SSH; edgeway's is mutual TLS.
    SshpfwdAuth,
    /// `sshpfwd-intrusion`: bytes on the tunnel listener that are not TLS.
    SshpfwdIntrusion,
    /// `xmpp-intrusion`, "XMPP protocol violation": configurable, but edgeway has no XMPP
    /// listener yet, so nothing records it.
    XmppIntrusion,
}

/// How many categories there are.
pub const CATEGORIES: usize = 6;

impl Category {
    /// Every category, in the order of their configuration and counters.
    pub const ALL: [Category; CATEGORIES] = [
        Category::HttpCeAuth,
        Category::HttpCeIntrusion,
        Category::HttpCeResource,
        Category::SshpfwdAuth,
        Category::SshpfwdIntrusion,
        Category::XmppIntrusion,
    ];

    /// Its id, as configured and listed (`http-ce-auth`).
    pub fn id(self) -> &'static str {
        match self {
            Category::HttpCeAuth => "http-ce-auth",
            Category::HttpCeIntrusion => "http-ce-intrusion",
            Category::HttpCeResource => "http-ce-resource",
            Category::SshpfwdAuth => "sshpfwd-auth",
            Category::SshpfwdIntrusion => "sshpfwd-intrusion",
            Category::XmppIntrusion => "xmpp-intrusion",
        }
    }

    /// Its display name.
    pub fn name(self) -> &'static str {
        match self {
            Category::HttpCeAuth => "HTTP proxy authorization failure",
            Category::HttpCeIntrusion => "HTTP proxy protocol violation",
            Category::HttpCeResource => "HTTP proxy resource access failure",
            Category::SshpfwdAuth => "HTTP tunnel authentication failure",
            Category::SshpfwdIntrusion => "HTTP tunnel protocol violation",
            Category::XmppIntrusion => "XMPP protocol violation",
        }
    }

    /// The category with this id.
    pub fn from_id(id: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.id() == id)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// An address or a CIDR prefix (`10.0.0.0/8`, `127.0.0.2`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    network: IpAddr,
    len: u8,
}

impl Prefix {
    /// Parses `text`; the error says what was expected.
    pub fn parse(text: &str) -> Result<Prefix, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or address/prefix-length"))?;
        let network = network.to_canonical();
        let most = if network.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => most,
            Some(l) => match l.trim().parse::<u8>() {
                Ok(n) if n <= most => n,
                _ => return Err(format!("{text:?}: prefix length must be 0..={most}")),
            },
        };
        Ok(Prefix { network, len })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let shift = |bits: u32| bits.checked_sub(u32::from(self.len));
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => match shift(32) {
                Some(32) => true,
                Some(s) => (u32::from(n) >> s) == (u32::from(a) >> s),
                None => false,
            },
            (IpAddr::V6(n), IpAddr::V6(a)) => match shift(128) {
                Some(128) => true,
                Some(s) => (u128::from(n) >> s) == (u128::from(a) >> s),
                None => false,
            },
            _ => false,
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// One category's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryRules {
    /// Whether failures of this category count at all.
    pub enabled: bool,
    /// Failures within the window that block the source.
    pub trigger_level: u32,
    /// How far back failures count.
    pub detection_window: Duration,
    /// How long a block lasts (default 10 minutes).
    pub block_duration: Duration,
    /// Sources never blocked for this category.
    pub exemptions: Vec<Prefix>,
}

impl CategoryRules {
    fn default_for(category: Category) -> CategoryRules {
        CategoryRules {
            // The guide: on by default from X8.9, except resource access failure, which it
            // says not to enable.
            enabled: category != Category::HttpCeResource,
            trigger_level: 5,
            detection_window: Duration::from_secs(30),
            block_duration: Duration::from_secs(600),
            exemptions: Vec::new(),
        }
    }
}

/// The `[protection]` section (edge only); absent, nothing is recorded or blocked.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtectionConfig {
    /// The automated protection service on or off (`enabled`, default on).
    pub enabled: bool,
    /// Sources never blocked in any category.
    pub exemptions: Vec<Prefix>,
    /// Each category's settings, in [`Category::ALL`] order.
    pub categories: [CategoryRules; CATEGORIES],
    /// Most source addresses tracked at once (default 65,536).
    pub max_sources: usize,
    /// The pinned XDP maps to write blocks into (absent: the data plane's recorded pin
    /// directory for `[media]`'s table, when it has one).
    pub xdp_pin_dir: Option<PathBuf>,
}

impl Default for ProtectionConfig {
    fn default() -> Self {
        ProtectionConfig {
            enabled: true,
            exemptions: Vec::new(),
            categories: Category::ALL.map(CategoryRules::default_for),
            max_sources: 65_536,
            xdp_pin_dir: None,
        }
    }
}

/// `[protection]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProtection {
    enabled: Option<bool>,
    #[serde(default)]
    exemptions: Vec<String>,
    max_sources: Option<usize>,
    xdp_pin_dir: Option<PathBuf>,
    #[serde(rename = "http-ce-auth")]
    http_ce_auth: Option<RawCategory>,
    #[serde(rename = "http-ce-intrusion")]
    http_ce_intrusion: Option<RawCategory>,
    #[serde(rename = "http-ce-resource")]
    http_ce_resource: Option<RawCategory>,
    #[serde(rename = "sshpfwd-auth")]
    sshpfwd_auth: Option<RawCategory>,
    #[serde(rename = "sshpfwd-intrusion")]
    sshpfwd_intrusion: Option<RawCategory>,
    #[serde(rename = "xmpp-intrusion")]
    xmpp_intrusion: Option<RawCategory>,
}

/// `[protection.<category id>]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    enabled: Option<bool>,
    trigger_level: Option<u32>,
    detection_window_s: Option<u64>,
    block_duration_s: Option<u64>,
    #[serde(default)]
    exemptions: Vec<String>,
}

fn field_error(field: String, reason: String) -> ConfigError {
    ConfigError::Field { field, reason }
}

fn prefixes(list: Vec<String>, name: &str) -> Result<Vec<Prefix>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, p)| Prefix::parse(p).map_err(|e| field_error(format!("{name}[{i}]"), e)))
        .collect()
}

impl ProtectionConfig {
    /// Validates `[protection]`; relative `xdp_pin_dir` is taken from `base`.
    pub fn from_raw(raw: RawProtection, base: &std::path::Path) -> Result<Self, ConfigError> {
        let mut config = ProtectionConfig {
            enabled: raw.enabled.unwrap_or(true),
            exemptions: prefixes(raw.exemptions, "protection.exemptions")?,
            max_sources: raw.max_sources.unwrap_or(65_536),
            xdp_pin_dir: raw.xdp_pin_dir.map(|d| base.join(d)),
            ..ProtectionConfig::default()
        };
        if !(1..=1 << 20).contains(&config.max_sources) {
            return Err(field_error(
                "protection.max_sources".into(),
                format!("{} is outside 1..=1048576", config.max_sources),
            ));
        }
        let raws = [
            raw.http_ce_auth,
            raw.http_ce_intrusion,
            raw.http_ce_resource,
            raw.sshpfwd_auth,
            raw.sshpfwd_intrusion,
            raw.xmpp_intrusion,
        ];
        for (category, raw) in Category::ALL.into_iter().zip(raws) {
            let Some(raw) = raw else { continue };
            let name = format!("protection.{}", category.id());
            let rules = &mut config.categories[category.index()];
            rules.enabled = raw.enabled.unwrap_or(rules.enabled);
            rules.trigger_level = raw.trigger_level.unwrap_or(rules.trigger_level);
            if !(1..=1000).contains(&rules.trigger_level) {
                return Err(field_error(
                    format!("{name}.trigger_level"),
                    format!("{} is outside 1..=1000", rules.trigger_level),
                ));
            }
            let seconds = |v: Option<u64>, default: Duration, what: &str| match v {
                None => Ok(default),
                Some(s @ 1..=604_800) => Ok(Duration::from_secs(s)),
                Some(s) => Err(field_error(
                    format!("{name}.{what}"),
                    format!("{s} is outside 1..=604800 seconds"),
                )),
            };
            rules.detection_window = seconds(
                raw.detection_window_s,
                rules.detection_window,
                "detection_window_s",
            )?;
            rules.block_duration = seconds(
                raw.block_duration_s,
                rules.block_duration,
                "block_duration_s",
            )?;
            rules.exemptions = prefixes(raw.exemptions, &format!("{name}.exemptions"))?;
        }
        Ok(config)
    }

    /// The settings of `category`.
    pub fn rules(&self, category: Category) -> &CategoryRules {
        &self.categories[category.index()]
    }

    fn exempt(&self, category: Category, ip: IpAddr) -> bool {
        self.exemptions
            .iter()
            .chain(&self.rules(category).exemptions)
            .any(|p| p.contains(ip))
    }
}

/// A source's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The blocked address.
    pub ip: IpAddr,
    /// The category that reached its trigger level.
    pub category: Category,
    /// When the block began.
    pub since: Instant,
    /// When it ends by itself.
    pub until: Instant,
}

/// What [`Protection::record`] made of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Protection or the category is off: not counted against the source.
    Disabled,
    /// The source is exempt (globally or for the category).
    Exempt,
    /// Counted: `failures` within the window, below the trigger level.
    Counted {
        /// Failures of this category within its window, this one included.
        failures: u32,
    },
    /// This failure reached the trigger level: the source is blocked from now.
    Blocked(Block),
    /// The source was blocked already (an open connection went on failing).
    AlreadyBlocked(Block),
}

/// Why a block ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lift {
    /// Its block duration passed.
    Expired,
    /// An operator unblocked it.
    Unblocked,
    /// Evicted to stay within `max_sources` (every tracked source was blocked).
    Evicted,
}

/// What the IO layer must apply elsewhere (the XDP map, the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A source was blocked.
    Blocked(Block),
    /// A source's block ended.
    Lifted(IpAddr, Lift),
}

/// One blocked source as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedSource {
    /// The block.
    pub block: Block,
    /// Failures of its category counted against it (those that triggered the block and
    /// any since).
    pub failures: u64,
    /// Connections dropped at accept since the block began.
    pub refused: u64,
}

/// What protection counts (monotonic since start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtectionCounters {
    /// Failures counted, per category ([`Category::ALL`] order).
    pub failures: [u64; CATEGORIES],
    /// Blocks begun, per category.
    pub blocks: [u64; CATEGORIES],
    /// Failures from exempt sources (never blocked).
    pub exempt: u64,
    /// Connections dropped at accept because their source was blocked.
    pub blocked_connections: u64,
    /// Blocks that ran their duration.
    pub expired: u64,
    /// Blocks lifted by an operator.
    pub unblocked: u64,
    /// Tracked sources evicted to stay within `max_sources`.
    pub evicted: u64,
    /// Of those, blocked ones (the cap was full of blocked sources).
    pub evicted_blocked: u64,
}

#[derive(Debug)]
struct Source {
    /// Position in [`Protection::order`]: later is more recent.
    touched: u64,
    last_seen: Instant,
    /// Recent failure times per category that has any (at most its trigger level).
    recent: Vec<(Category, VecDeque<Instant>)>,
    block: Option<BlockedSource>,
}

/// Intrusion protection's state: per-source failures and blocks. Sans-IO.
#[derive(Debug)]
pub struct Protection {
    config: ProtectionConfig,
    sources: HashMap<IpAddr, Source>,
    /// Tracked sources, unblocked first, each group least recently seen first: eviction
    /// and the sweep of stale sources take from the front.
    order: BTreeMap<(bool, u64), IpAddr>,
    /// Blocks by end time.
    expiries: BTreeSet<(Instant, IpAddr)>,
    next_touch: u64,
    events: VecDeque<Event>,
    counters: ProtectionCounters,
}

impl Protection {
    /// Protection with `config` and nothing tracked.
    pub fn new(config: ProtectionConfig) -> Protection {
        Protection {
            config,
            sources: HashMap::new(),
            order: BTreeMap::new(),
            expiries: BTreeSet::new(),
            next_touch: 0,
            events: VecDeque::new(),
            counters: ProtectionCounters::default(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &ProtectionConfig {
        &self.config
    }

    /// What it has counted.
    pub fn counters(&self) -> &ProtectionCounters {
        &self.counters
    }

    /// Addresses tracked now (blocked or with recent failures).
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// Records one failure of `category` from `source` at `now`.
    pub fn record(&mut self, now: Instant, category: Category, source: IpAddr) -> Recorded {
        let ip = source.to_canonical();
        let rules = self.config.rules(category).clone();
        if !self.config.enabled || !rules.enabled {
            return Recorded::Disabled;
        }
        if self.config.exempt(category, ip) {
            self.counters.exempt += 1;
            return Recorded::Exempt;
        }
        self.counters.failures[category.index()] += 1;
        self.expire_one(now, ip);
        let source = self.touch(now, ip);
        if let Some(b) = source.block.as_mut() {
            if b.block.category == category {
                b.failures += 1;
            }
            return Recorded::AlreadyBlocked(b.block);
        }
        let recent = match source.recent.iter().position(|(c, _)| *c == category) {
            Some(i) => &mut source.recent[i].1,
            None => {
                source.recent.push((category, VecDeque::new()));
                let last = source.recent.len() - 1;
                &mut source.recent[last].1
            }
        };
        while recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= rules.detection_window)
        {
            recent.pop_front();
        }
        recent.push_back(now);
        let failures = u32::try_from(recent.len()).unwrap_or(u32::MAX);
        if failures < rules.trigger_level {
            return Recorded::Counted { failures };
        }
        let block = Block {
            ip,
            category,
            since: now,
            until: now + rules.block_duration,
        };
        source.recent.clear();
        source.block = Some(BlockedSource {
            block,
            failures: u64::from(failures),
            refused: 0,
        });
        let touched = source.touched;
        self.order.remove(&(false, touched));
        self.order.insert((true, touched), ip);
        self.expiries.insert((block.until, ip));
        self.counters.blocks[category.index()] += 1;
        self.events.push_back(Event::Blocked(block));
        Recorded::Blocked(block)
    }

    /// The block on `source` at `now`, if any.
    pub fn is_blocked(&self, now: Instant, source: IpAddr) -> Option<Block> {
        self.sources
            .get(&source.to_canonical())
            .and_then(|s| s.block.as_ref())
            .map(|b| b.block)
            .filter(|b| b.until > now)
    }

    /// Decides a new connection from `source` at `now`: `Err` with its block when it must be
    /// dropped (counted as a blocked connection).
    pub fn admit(&mut self, now: Instant, source: IpAddr) -> Result<(), Block> {
        let ip = source.to_canonical();
        let Some(block) = self.is_blocked(now, ip) else {
            return Ok(());
        };
        self.counters.blocked_connections += 1;
        if let Some(b) = self.sources.get_mut(&ip).and_then(|s| s.block.as_mut()) {
            b.refused += 1;
        }
        Err(block)
    }

    /// Every blocked source at `now`, the earliest block first.
    pub fn list(&self, now: Instant) -> Vec<BlockedSource> {
        let mut list: Vec<BlockedSource> = self
            .sources
            .values()
            .filter_map(|s| s.block.clone())
            .filter(|b| b.block.until > now)
            .collect();
        list.sort_by_key(|b| (b.block.since, b.block.ip));
        list
    }

    /// Lifts the block on `source` and forgets its failures; false when it was not blocked.
    pub fn unblock(&mut self, source: IpAddr) -> bool {
        let ip = source.to_canonical();
        let blocked = self.sources.get(&ip).is_some_and(|s| s.block.is_some());
        if blocked {
            self.forget(ip);
            self.counters.unblocked += 1;
            self.events.push_back(Event::Lifted(ip, Lift::Unblocked));
        }
        blocked
    }

    /// When [`Protection::handle_timeout`] next has work: the earliest block's end.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// Ends the blocks due by `now` and forgets sources whose failures have all left every
    /// detection window.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(until, ip)) = self.expiries.first() {
            if until > now {
                break;
            }
            self.expire_one(now, ip);
        }
        let stale = self
            .config
            .categories
            .iter()
            .map(|r| r.detection_window)
            .max()
            .unwrap_or_default();
        while let Some((&(false, _), &ip)) = self.order.first_key_value() {
            let seen = self.sources.get(&ip).map(|s| s.last_seen);
            if seen.is_some_and(|t| now.saturating_duration_since(t) < stale) {
                break;
            }
            self.forget(ip);
        }
    }

    /// The next block or lift to apply elsewhere.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Ends `ip`'s block if it is due by `now`.
    fn expire_one(&mut self, now: Instant, ip: IpAddr) {
        let due = self
            .sources
            .get(&ip)
            .and_then(|s| s.block.as_ref())
            .is_some_and(|b| b.block.until <= now);
        if due {
            self.forget(ip);
            self.counters.expired += 1;
            self.events.push_back(Event::Lifted(ip, Lift::Expired));
        }
    }

    fn forget(&mut self, ip: IpAddr) {
        if let Some(s) = self.sources.remove(&ip) {
            let blocked = s.block.as_ref();
            self.order.remove(&(blocked.is_some(), s.touched));
            if let Some(b) = blocked {
                self.expiries.remove(&(b.block.until, ip));
            }
        }
    }

    /// The source's state, moved to the back of the order, created (evicting the front
    /// when full) if new.
    fn touch(&mut self, now: Instant, ip: IpAddr) -> &mut Source {
        let touched = self.next_touch;
        self.next_touch += 1;
        if !self.sources.contains_key(&ip) {
            while self.sources.len() >= self.config.max_sources {
                let Some((&(blocked, _), &oldest)) = self.order.first_key_value() else {
                    break;
                };
                self.forget(oldest);
                self.counters.evicted += 1;
                if blocked {
                    self.counters.evicted_blocked += 1;
                    self.events.push_back(Event::Lifted(oldest, Lift::Evicted));
                }
            }
        }
        let source = self.sources.entry(ip).or_insert_with(|| Source {
            touched,
            last_seen: now,
            recent: Vec::new(),
            block: None,
        });
        let blocked = source.block.is_some();
        self.order.remove(&(blocked, source.touched));
        self.order.insert((blocked, touched), ip);
        source.touched = touched;
        source.last_seen = now;
        source
    }
}

// ---------------------------------------------------------------- the IO shell

/// The kernel's half of a block: the node's pinned XDP `blocked` map, opened when it
/// appears (the data plane may load after the control plane) and then kept in step.
#[derive(Debug)]
struct XdpBlocked {
    dir: Option<PathBuf>,
    /// Whether the directory was configured (`protection.xdp_pin_dir`): then a missing or
    /// unusable map is an error, not merely "no XDP here".
    explicit: bool,
    map: Option<edgeway_xdp::PinnedBlockedMap>,
    writes: u64,
    /// Map writes that failed.
    errors: u64,
    last_error: Option<String>,
}

impl XdpBlocked {
    fn note_error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        let message = e.to_string();
        if self.last_error.as_deref() != Some(&message) {
            eprintln!("edgeway-control: protection: XDP blocked map: {message}");
        }
        self.last_error = Some(message);
    }

    /// Opens the map when it exists and is not open yet, making it hold exactly `blocked`
    /// (this process is its only writer; entries of a previous run are stale).
    fn sync_open(&mut self, blocked: &[IpAddr]) {
        let Some(dir) = self.dir.clone() else { return };
        if self.map.is_some() || (!self.explicit && !dir.join("blocked").exists()) {
            return;
        }
        let mut map = match edgeway_xdp::PinnedBlockedMap::open(&dir) {
            Ok(m) => m,
            Err(e) => {
                // Retried every tick: said once, not counted as a failed write.
                let message = format!("{} (blocks hold at accept only)", e);
                if self.last_error.as_deref() != Some(&message) {
                    eprintln!("edgeway-control: protection: XDP blocked map: {message}");
                    self.last_error = Some(message);
                }
                return;
            }
        };
        let want: Vec<std::net::Ipv4Addr> = blocked
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        match map.addresses() {
            Ok(present) => {
                for stale in present.into_iter().filter(|a| !want.contains(a)) {
                    if let Err(e) = map.unblock(stale) {
                        self.note_error(e);
                    }
                }
            }
            Err(e) => self.note_error(e),
        }
        for ip in want {
            match map.block(ip) {
                Ok(()) => self.writes += 1,
                Err(e) => self.note_error(e),
            }
        }
        eprintln!(
            "edgeway-control: protection: blocks go to the XDP map in {}",
            dir.display()
        );
        self.map = Some(map);
    }

    fn apply(&mut self, event: Event) {
        // The program is IPv4 only; IPv6 blocks hold at accept.
        let (IpAddr::V4(ip), block) = (match event {
            Event::Blocked(b) => (b.ip, true),
            Event::Lifted(ip, _) => (ip, false),
        }) else {
            return;
        };
        let Some(map) = self.map.as_mut() else { return };
        let done = if block {
            map.block(ip)
        } else {
            map.unblock(ip).map(|_| ())
        };
        match done {
            Ok(()) => self.writes += 1,
            Err(e) => self.note_error(e),
        }
    }

    fn status(&self) -> Value {
        json!({
            "pin_dir": self.dir.as_ref().map(|d| d.display().to_string()),
            "active": self.map.is_some(),
            "writes": self.writes,
            "errors": self.errors,
            "last_error": self.last_error,
        })
    }
}

/// The node's intrusion protection: [`Protection`] behind a lock, on the process clock,
/// with blocks mirrored into the pinned XDP map. Shared by every edge listener.
#[derive(Debug)]
pub struct Shield {
    state: Mutex<Protection>,
    xdp: Mutex<XdpBlocked>,
    /// The same moment on both clocks, to list blocks in Unix time.
    epoch: (Instant, SystemTime),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shield {
    /// Protection with `config`; blocks go to the pinned maps in `xdp_pin_dir` (the
    /// configured one, else the data plane's) when a `blocked` map is pinned there.
    pub fn new(config: ProtectionConfig, xdp_pin_dir: Option<PathBuf>) -> Arc<Shield> {
        let explicit = config.xdp_pin_dir.is_some();
        let dir = config.xdp_pin_dir.clone().or(xdp_pin_dir);
        let shield = Shield {
            state: Mutex::new(Protection::new(config)),
            xdp: Mutex::new(XdpBlocked {
                dir,
                explicit,
                map: None,
                writes: 0,
                errors: 0,
                last_error: None,
            }),
            epoch: (Instant::now(), SystemTime::now()),
        };
        lock(&shield.xdp).sync_open(&[]);
        Arc::new(shield)
    }

    /// Ticks [`Protection::handle_timeout`] in the background (block expiry, the XDP map
    /// appearing later).
    pub fn spawn_timer(self: &Arc<Self>) {
        let shield = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                shield.tick(Instant::now());
            }
        });
    }

    fn tick(&self, now: Instant) {
        let mut state = lock(&self.state);
        state.handle_timeout(now);
        let mut xdp = lock(&self.xdp);
        if xdp.map.is_none() {
            let blocked: Vec<IpAddr> = state.list(now).iter().map(|b| b.block.ip).collect();
            xdp.sync_open(&blocked);
        }
        Self::drain(&mut state, &mut xdp);
    }

    fn drain(state: &mut Protection, xdp: &mut XdpBlocked) {
        while let Some(event) = state.poll_event() {
            match event {
                Event::Blocked(b) => eprintln!(
                    "edgeway-control: protection: blocked {} for {} s ({})",
                    b.ip,
                    b.until.saturating_duration_since(b.since).as_secs(),
                    b.category.id()
                ),
                Event::Lifted(ip, why) => {
                    eprintln!("edgeway-control: protection: unblocked {ip} ({why:?})")
                }
            }
            xdp.apply(event);
        }
    }

    /// Whether a new connection from `source` may go on to its TLS handshake (false:
    /// drop it now; counted).
    pub fn admit(&self, source: IpAddr) -> bool {
        lock(&self.state).admit(Instant::now(), source).is_ok()
    }

    /// Whether `source` is blocked now (an open connection should stop).
    pub fn is_blocked(&self, source: IpAddr) -> bool {
        lock(&self.state)
            .is_blocked(Instant::now(), source)
            .is_some()
    }

    /// Records a failure of `category` from `source`.
    pub fn record(&self, category: Category, source: IpAddr) -> Recorded {
        let mut state = lock(&self.state);
        let recorded = state.record(Instant::now(), category, source);
        Self::drain(&mut state, &mut lock(&self.xdp));
        recorded
    }

    /// Lifts `source`'s block; false when it was not blocked.
    pub fn unblock(&self, source: IpAddr) -> bool {
        let mut state = lock(&self.state);
        let lifted = state.unblock(source);
        Self::drain(&mut state, &mut lock(&self.xdp));
        lifted
    }

    fn unix(&self, at: Instant) -> f64 {
        let (mono, wall) = self.epoch;
        let t = if at >= mono {
            wall + (at - mono)
        } else {
            wall - (mono - at)
        };
        t.duration_since(UNIX_EPOCH)
            .map(|d| (d.as_millis() as f64) / 1000.0)
            .unwrap_or(0.0)
    }

    /// The blocked sources, as the admin API's `blocked` lists them.
    pub fn blocked_json(&self) -> Value {
        let now = Instant::now();
        let list = lock(&self.state).list(now);
        let rows: Vec<Value> = list
            .iter()
            .map(|b| {
                json!({
                    "address": b.block.ip.to_string(),
                    "category": b.block.category.id(),
                    "category_name": b.block.category.name(),
                    "since": self.unix(b.block.since),
                    "until": self.unix(b.block.until),
                    "remaining_s": b.block.until.saturating_duration_since(now).as_secs(),
                    "failures": b.failures,
                    "refused": b.refused,
                })
            })
            .collect();
        json!(rows)
    }

    /// Settings and counters for the admin API's `status`.
    pub fn status_json(&self) -> Value {
        let now = Instant::now();
        let state = lock(&self.state);
        let config = state.config();
        let c = state.counters();
        let categories: Vec<Value> = Category::ALL
            .iter()
            .map(|&cat| {
                let r = config.rules(cat);
                json!({
                    "id": cat.id(),
                    "name": cat.name(),
                    "enabled": r.enabled,
                    "trigger_level": r.trigger_level,
                    "detection_window_s": r.detection_window.as_secs(),
                    "block_duration_s": r.block_duration.as_secs(),
                    "exemptions": r.exemptions.iter().map(Prefix::to_string).collect::<Vec<_>>(),
                    "failures": c.failures[cat.index()],
                    "blocks": c.blocks[cat.index()],
                })
            })
            .collect();
        json!({
            "enabled": config.enabled,
            "exemptions": config.exemptions.iter().map(Prefix::to_string).collect::<Vec<_>>(),
            "max_sources": config.max_sources,
            "tracked_sources": state.tracked(),
            "blocked_sources": state.list(now).len(),
            "categories": categories,
            "counters": {
                "blocked_connections": c.blocked_connections,
                "blocks": c.blocks.iter().sum::<u64>(),
                "failures": c.failures.iter().sum::<u64>(),
                "exempt": c.exempt,
                "expired": c.expired,
                "unblocked": c.unblocked,
                "evicted": c.evicted,
                "evicted_blocked": c.evicted_blocked,
            },
            "xdp": lock(&self.xdp).status(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn config(trigger: u32, window_s: u64, block_s: u64) -> ProtectionConfig {
        let mut c = ProtectionConfig::default();
        for r in &mut c.categories {
            r.trigger_level = trigger;
            r.detection_window = Duration::from_secs(window_s);
            r.block_duration = Duration::from_secs(block_s);
        }
        c
    }

    #[test]
    fn guide_defaults() {
        let c = ProtectionConfig::default();
        for cat in Category::ALL {
            let r = c.rules(cat);
            assert_eq!(r.enabled, cat != Category::HttpCeResource, "{}", cat.id());
            assert_eq!(r.block_duration, Duration::from_secs(600));
        }
        assert_eq!(
            Category::from_id("sshpfwd-intrusion"),
            Some(Category::SshpfwdIntrusion)
        );
        assert_eq!(Category::from_id("sip-auth"), None);
    }

    #[test]
    fn trigger_level_within_window_blocks_until_duration() {
        let t0 = Instant::now();
        let mut p = Protection::new(config(3, 10, 60));
        let a = ip("192.0.2.7");
        assert_eq!(
            p.record(t0, Category::HttpCeAuth, a),
            Recorded::Counted { failures: 1 }
        );
        p.record(t0 + Duration::from_secs(1), Category::HttpCeAuth, a);
        let third = t0 + Duration::from_secs(2);
        let Recorded::Blocked(b) = p.record(third, Category::HttpCeAuth, a) else {
            panic!("third failure within 10 s blocks");
        };
        assert_eq!((b.since, b.until), (third, third + Duration::from_secs(60)));
        assert_eq!(p.poll_event(), Some(Event::Blocked(b)));
        assert_eq!(p.admit(third + Duration::from_secs(59), a), Err(b));
        assert!(p.admit(third, ip("192.0.2.8")).is_ok(), "others pass");
        assert_eq!(p.counters().blocked_connections, 1);
        let listed = p.list(third);
        assert_eq!(
            (listed.len(), listed[0].failures, listed[0].refused),
            (1, 3, 1)
        );
        assert_eq!(p.poll_timeout(), Some(b.until));
        p.handle_timeout(b.until - Duration::from_millis(1));
        assert!(p
            .is_blocked(b.until - Duration::from_millis(1), a)
            .is_some());
        p.handle_timeout(b.until);
        assert_eq!(p.poll_event(), Some(Event::Lifted(a, Lift::Expired)));
        assert!(p.admit(b.until, a).is_ok());
        assert_eq!((p.tracked(), p.counters().expired), (0, 1));
        assert_eq!(
            p.record(b.until, Category::HttpCeAuth, a),
            Recorded::Counted { failures: 1 },
            "an expired block starts afresh"
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t0 = Instant::now();
        let mut p = Protection::new(config(3, 10, 60));
        let a = ip("192.0.2.7");
        for i in 0..20 {
            let r = p.record(
                t0 + Duration::from_secs(5 * i),
                Category::HttpCeIntrusion,
                a,
            );
            assert!(
                matches!(r, Recorded::Counted { failures: 1..=2 }),
                "{i}: {r:?}"
            );
        }
        assert!(p.list(t0 + Duration::from_secs(100)).is_empty());
    }

    #[test]
    fn categories_count_apart_and_disabled_ones_not_at_all() {
        let t0 = Instant::now();
        let mut p = Protection::new(config(2, 10, 60));
        let a = ip("192.0.2.7");
        p.record(t0, Category::HttpCeAuth, a);
        assert_eq!(
            p.record(t0, Category::HttpCeIntrusion, a),
            Recorded::Counted { failures: 1 }
        );
        assert_eq!(
            p.record(t0, Category::HttpCeResource, a),
            Recorded::Disabled
        );
        assert!(matches!(
            p.record(t0, Category::HttpCeAuth, a),
            Recorded::Blocked(_)
        ));
        assert!(matches!(
            p.record(t0, Category::HttpCeIntrusion, a),
            Recorded::AlreadyBlocked(Block {
                category: Category::HttpCeAuth,
                ..
            })
        ));
        let mut off = config(1, 10, 60);
        off.enabled = false;
        let mut p = Protection::new(off);
        assert_eq!(p.record(t0, Category::HttpCeAuth, a), Recorded::Disabled);
        assert!(p.admit(t0, a).is_ok());
    }

    #[test]
    fn exemptions_global_and_per_category() {
        let t0 = Instant::now();
        let mut c = config(1, 10, 60);
        c.exemptions = vec![Prefix::parse("10.0.0.0/8").expect("prefix")];
        c.categories[Category::SshpfwdAuth.index()].exemptions =
            vec![Prefix::parse("192.0.2.1").expect("address")];
        let mut p = Protection::new(c);
        for _ in 0..10 {
            assert_eq!(
                p.record(t0, Category::HttpCeAuth, ip("10.9.8.7")),
                Recorded::Exempt
            );
            assert_eq!(
                p.record(t0, Category::SshpfwdAuth, ip("192.0.2.1")),
                Recorded::Exempt
            );
        }
        assert!(matches!(
            p.record(t0, Category::HttpCeAuth, ip("192.0.2.1")),
            Recorded::Blocked(_)
        ));
        assert!(matches!(
            p.record(t0, Category::HttpCeAuth, ip("::ffff:11.0.0.1")),
            Recorded::Blocked(Block {
                ip: IpAddr::V4(_),
                ..
            })
        ));
        assert_eq!(p.counters().exempt, 20);
    }

    #[test]
    fn unblock_lifts_and_forgets() {
        let t0 = Instant::now();
        let mut p = Protection::new(config(1, 10, 600));
        let a = ip("2001:db8::1");
        assert!(matches!(
            p.record(t0, Category::SshpfwdIntrusion, a),
            Recorded::Blocked(_)
        ));
        assert!(p.unblock(a));
        assert!(!p.unblock(a), "only once");
        assert!(!p.unblock(ip("192.0.2.99")));
        assert!(p.admit(t0, a).is_ok());
        let events: Vec<Event> = std::iter::from_fn(|| p.poll_event()).collect();
        assert!(
            matches!(events[..], [Event::Blocked(_), Event::Lifted(x, Lift::Unblocked)] if x == a)
        );
        assert_eq!((p.poll_timeout(), p.tracked()), (None, 0));
    }

    #[test]
    fn memory_is_capped_evicting_the_least_recent_unblocked_first() {
        let t0 = Instant::now();
        let mut c = config(2, 10, 600);
        c.max_sources = 100;
        let mut p = Protection::new(c);
        let blocked = ip("198.51.100.1");
        p.record(t0, Category::HttpCeAuth, blocked);
        p.record(t0, Category::HttpCeAuth, blocked);
        for i in 0..10_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            p.record(t0, Category::HttpCeAuth, a);
            assert!(p.tracked() <= 100);
        }
        assert!(
            p.is_blocked(t0, blocked).is_some(),
            "blocked sources go last"
        );
        assert_eq!(p.counters().evicted, 10_000 - 99);
        assert_eq!(p.counters().evicted_blocked, 0);
        // A source seen again moves to the back: 10.0.39.15 was the latest.
        let recent = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + 9_999));
        assert!(matches!(
            p.record(t0, Category::HttpCeAuth, recent),
            Recorded::Blocked(_)
        ));
        // Full of blocked sources: the oldest block goes, and says so.
        let mut c = config(1, 10, 600);
        c.max_sources = 2;
        let mut p = Protection::new(c);
        for a in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
            p.record(t0, Category::HttpCeAuth, ip(a));
        }
        assert!(p.is_blocked(t0, ip("192.0.2.1")).is_none());
        let lifted: Vec<Event> = std::iter::from_fn(|| p.poll_event())
            .filter(|e| matches!(e, Event::Lifted(..)))
            .collect();
        assert_eq!(lifted, [Event::Lifted(ip("192.0.2.1"), Lift::Evicted)]);
        assert_eq!(p.counters().evicted_blocked, 1);
    }

    #[test]
    fn stale_sources_are_swept() {
        let t0 = Instant::now();
        let mut p = Protection::new(config(5, 10, 600));
        for i in 0..50u32 {
            p.record(
                t0,
                Category::HttpCeAuth,
                IpAddr::from(std::net::Ipv4Addr::from(i)),
            );
        }
        p.record(
            t0 + Duration::from_secs(8),
            Category::HttpCeAuth,
            ip("192.0.2.1"),
        );
        p.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(p.tracked(), 1, "only the one seen within the window");
    }

    #[test]
    fn prefixes_parse_and_match() {
        let p = Prefix::parse("192.0.2.0/24").expect("v4");
        assert!(p.contains(ip("192.0.2.255")) && !p.contains(ip("192.0.3.0")));
        assert!(p.contains(ip("::ffff:192.0.2.1")), "mapped v4");
        assert!(Prefix::parse("0.0.0.0/0")
            .expect("all")
            .contains(ip("8.8.8.8")));
        assert!(!Prefix::parse("0.0.0.0/0").expect("all").contains(ip("::1")));
        let v6 = Prefix::parse("2001:db8::/32").expect("v6");
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        for bad in ["192.0.2.0/33", "host", "1.2.3.4/x", "::/129", ""] {
            assert!(Prefix::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_section_is_validated_by_field() {
        let parse = |text: &str| {
            let raw: RawProtection = toml::from_str(text).expect("toml");
            ProtectionConfig::from_raw(raw, std::path::Path::new("/etc/edgeway"))
        };
        let c = parse(
            "exemptions = [\"127.0.0.2\"]\nxdp_pin_dir = \"pins\"\n[http-ce-auth]\ntrigger_level = 3\nblock_duration_s = 2\nexemptions = [\"10.0.0.0/8\"]\n",
        )
        .expect("valid");
        let r = c.rules(Category::HttpCeAuth);
        assert_eq!(
            (r.trigger_level, r.block_duration),
            (3, Duration::from_secs(2))
        );
        assert_eq!(c.rules(Category::SshpfwdAuth).trigger_level, 5);
        assert_eq!(c.xdp_pin_dir, Some(PathBuf::from("/etc/edgeway/pins")));
        let err = |text: &str| parse(text).expect_err("refused").to_string();
        assert!(err("[sshpfwd-auth]\ntrigger_level = 0\n")
            .starts_with("protection.sshpfwd-auth.trigger_level"));
        assert!(err("[http-ce-auth]\nexemptions = [\"x\"]\n")
            .starts_with("protection.http-ce-auth.exemptions[0]"));
        assert!(err("max_sources = 0\n").starts_with("protection.max_sources"));
        assert!(toml::from_str::<RawProtection>("[sip-auth]\nenabled = true\n").is_err());
    }
}
