//! `edgewayctl flow`: read and program a node's flow table (`edgeway-flowtable`) by hand —
//! for troubleshooting, demos and scripts; the control plane does this in production.
//!
//! Every subcommand works on the table of `--node` (`/dev/shm/edgeway/<node>/`) or of
//! `--shm-dir`. Reads take no lock and are safe against a running data plane; writes take the
//! table's writer lock like every other writer. When the node has pinned XDP maps, `add` and
//! `del` write the program's `flows` map too before they return (`edgeway_xdp::open_table`),
//! so XDP relays a new flow's very next packet even with no data plane running. Key material
//! is never printed: SRTP parameters show their suite and MKI length only.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Subcommand, ValueEnum};
use edgeway_flowtable::{
    counters_json, entry_json, format_endpoint, format_key, node_counters_json, parse_endpoint,
    parse_key, srtp_params_from_crypto, state_json, suite_name, unix_ms, DataplaneInfo, DropReason,
    FlowCounters, FlowEntry, FlowKey, FlowState, FlowTable, Liveness, NodeCounters, TableOptions,
    XdpStatus, MAX_WORKERS,
};
use edgeway_map_schema::{flags, Action, Endpoint, SrtpParams};
use serde_json::{json, Value};

/// Read and program a node's flow table.
#[derive(Debug, clap::Args)]
pub(crate) struct FlowArgs {
    /// Node whose table to use: /dev/shm/edgeway/<NODE>/.
    #[arg(long, global = true, value_name = "NODE", default_value = "edgeway")]
    node: String,
    /// Table directory (overrides --node).
    #[arg(long, global = true, value_name = "DIR")]
    shm_dir: Option<PathBuf>,
    /// Directory of the node's pinned XDP maps, which `add` and `del` write as well (default:
    /// where the data plane said it pinned them, else /sys/fs/bpf/edgeway/<NODE>/; none
    /// there: the table alone).
    #[arg(long, global = true, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: FlowCommand,
}

#[derive(Debug, Subcommand)]
enum FlowCommand {
    /// Create an empty table (the data plane creates one when it starts without).
    Init(InitArgs),
    /// Insert an entry, or replace the one with the same key (its generation is bumped).
    Add(Box<AddArgs>),
    /// Remove an entry.
    Del {
        /// The entry's key: PORT, or PORT@IP:PORT on a demultiplexing port.
        #[arg(value_parser = key_arg)]
        key: FlowKey,
    },
    /// List the live entries with their latched source and packet counts.
    List {
        /// JSON array on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Everything about one entry: the entry (without key material), its state (latching,
    /// SRTP checkpoints, RTP statistics) and its counters with drops by reason.
    Show {
        /// The entry's key: PORT, or PORT@IP:PORT.
        #[arg(value_parser = key_arg)]
        key: FlowKey,
        /// JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Whether a data plane is running, node-wide counters per worker, table and port usage.
    Stats {
        /// JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Allocate, reserve or release media port pairs (RTP even, RTCP odd).
    #[command(subcommand)]
    Ports(PortsCommand),
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Slots (a power of two); at most 7/8 hold live entries.
    #[arg(long, default_value_t = 65536)]
    capacity: u32,
    /// Media port range for the port allocator.
    #[arg(long, value_name = "MIN-MAX", default_value = "36000-59999", value_parser = range_arg)]
    port_range: (u16, u16),
    /// Ports never allocated (the demultiplexing pairs), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "36000,36001")]
    exclude: Vec<u16>,
    /// How long a removed entry's slot stays unused (ms).
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    tombstone_quarantine: u64,
    /// How long a released port pair stays unused (ms).
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    port_quarantine: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ActionArg {
    /// Send on unchanged (edge legs).
    Relay,
    /// Unprotect with --srtp-in, protect with --srtp-out (core legs).
    Rekey,
    /// Count and drop.
    Drop,
}

/// SRTP parameters from the command line; `Debug` leaves the key out.
#[derive(Clone, Copy)]
struct Keying(SrtpParams);

impl std::fmt::Debug for Keying {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keying({})", suite_name(&self.0))
    }
}

#[derive(Debug, clap::Args)]
struct AddArgs {
    /// Which packets: PORT (everything arriving at that local port) or PORT@IP:PORT (from
    /// IP:PORT, on a demultiplexing port).
    #[arg(long, value_parser = key_arg)]
    key: FlowKey,
    /// What to do with them.
    #[arg(long, value_enum)]
    action: ActionArg,
    /// Index of the worker that owns the entry.
    #[arg(long, value_name = "W", default_value_t = 0)]
    worker: u32,
    /// Local UDP port to send from (required for relay and rekey).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    out_from: u16,
    /// Where to send: IP:PORT, or "latched" (to the source latched by --peer's entry).
    #[arg(long, value_name = "IP:PORT|latched", default_value = "latched", value_parser = out_to_arg)]
    out_to: Endpoint,
    /// The entry of the opposite direction (whose latched source "latched" sends to).
    #[arg(long, value_name = "KEY", value_parser = key_arg)]
    peer: Option<FlowKey>,
    /// Latch the source of the first valid packet.
    #[arg(long)]
    latch: bool,
    /// Latch from any source, not only --permit.
    #[arg(long, requires = "latch")]
    latch_any: bool,
    /// The only source address allowed to latch (the client's signaling address).
    #[arg(long, value_name = "IP")]
    permit: Option<Ipv4Addr>,
    /// The entry carries RTCP/SRTCP.
    #[arg(long)]
    rtcp: bool,
    /// Once latched, drop packets with another SSRC.
    #[arg(long)]
    ssrc_lock: bool,
    /// Send a keepalive from --out-from to --out-to every MS milliseconds of silence.
    #[arg(long, value_name = "MS")]
    keepalive: Option<u32>,
    /// Mark the entry idle after MS milliseconds without packets (0: never).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    idle_timeout: u32,
    /// RTP clock rate for jitter (Hz; 0 means 8000).
    #[arg(long, value_name = "HZ", default_value_t = 0)]
    clock_rate: u32,
    /// The call media stream this entry belongs to.
    #[arg(long, value_name = "N", default_value_t = 0)]
    flow_id: u64,
    /// How arriving packets are protected: an a=crypto line, or "plain".
    #[arg(long, value_name = "A=CRYPTO|plain", default_value = "plain", value_parser = srtp_arg)]
    srtp_in: Keying,
    /// How they leave: an a=crypto line, or "plain".
    #[arg(long, value_name = "A=CRYPTO|plain", default_value = "plain", value_parser = srtp_arg)]
    srtp_out: Keying,
}

#[derive(Debug, Subcommand)]
enum PortsCommand {
    /// Allocate the next free pair; prints its RTP (even) port.
    Alloc,
    /// Mark a fixed pair in use.
    Reserve {
        /// The pair's RTP (even) port.
        port: u16,
    },
    /// Release a pair into quarantine.
    Release {
        /// The pair's RTP (even) port.
        port: u16,
    },
}

fn key_arg(s: &str) -> Result<FlowKey, String> {
    parse_key(s).map_err(|e| e.to_string())
}

fn out_to_arg(s: &str) -> Result<Endpoint, String> {
    if s == "latched" {
        return Ok(Endpoint::default());
    }
    parse_endpoint(s).map_err(|e| e.to_string())
}

fn srtp_arg(s: &str) -> Result<Keying, String> {
    if s == "plain" {
        return Ok(Keying(SrtpParams::PLAIN));
    }
    srtp_params_from_crypto(s)
        .map(Keying)
        .map_err(|e| e.to_string())
}

fn range_arg(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected MIN-MAX"))?;
    let p = |x: &str| {
        x.parse::<u16>()
            .map_err(|_| format!("{x:?} is not a port (1-65535)"))
    };
    Ok((p(a)?, p(b)?))
}

/// Runs `edgewayctl flow ...`.
pub(crate) fn run(args: FlowArgs) -> anyhow::Result<()> {
    let dir = match &args.shm_dir {
        Some(d) => d.clone(),
        None => FlowTable::dir_for(&args.node)?,
    };
    if let FlowCommand::Init(init) = &args.command {
        let mut o = TableOptions::default();
        o.capacity = init.capacity;
        o.port_range = init.port_range;
        o.excluded_ports = init.exclude.clone();
        o.tombstone_quarantine_ms = init.tombstone_quarantine;
        o.port_quarantine_ms = init.port_quarantine;
        let t = FlowTable::create_at(&dir, &o)?;
        let info = t.info();
        println!(
            "created {} ({} slots, {} KiB)",
            dir.display(),
            info.capacity,
            info.file_size >> 10
        );
        return Ok(());
    }
    // Writers go through the BPF backend: with pinned maps, XDP has the change before we
    // return, not at the data plane's next mirror pass (which may never come).
    let writes = matches!(args.command, FlowCommand::Add(_) | FlowCommand::Del { .. });
    let t = if writes {
        edgeway_xdp::open_table(&dir, args.pin_dir.as_deref())
            .with_context(|| format!("opening the flow table in {} for writing", dir.display()))?
            .0
    } else {
        FlowTable::open_at(&dir)?
    };
    let mut out = io::stdout().lock();
    match args.command {
        FlowCommand::Init(_) => unreachable!("handled above"),
        FlowCommand::Add(add) => self::add(&t, &add, &mut out),
        FlowCommand::Del { key } => match t.remove(&key)? {
            Some(e) => Ok(writeln!(
                out,
                "removed {} (flow {}, generation {}){}",
                format_key(&key),
                e.flow_id,
                e.generation,
                also_in_map(&t)
            )?),
            None => bail!("no entry for {} in {}", format_key(&key), dir.display()),
        },
        FlowCommand::List { json } => list(&t, json, &mut out),
        FlowCommand::Show { key, json } => show(&t, &key, json, &mut out),
        FlowCommand::Stats { json } => stats(&t, json, &mut out),
        FlowCommand::Ports(cmd) => {
            let ports = t.ports();
            let now = unix_ms();
            match cmd {
                PortsCommand::Alloc => writeln!(out, "{}", ports.allocate_pair(now)?)?,
                PortsCommand::Reserve { port } => {
                    ports.reserve_pair(port, now)?;
                    writeln!(out, "reserved {port}/{}", u32::from(port) + 1)?;
                }
                PortsCommand::Release { port } => {
                    ports.release_pair(port, now)?;
                    writeln!(out, "released {port}/{}", u32::from(port) + 1)?;
                }
            }
            Ok(())
        }
    }
}

fn add(t: &FlowTable, a: &AddArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let action = match a.action {
        ActionArg::Relay => Action::Relay,
        ActionArg::Rekey => Action::Rekey,
        ActionArg::Drop => Action::Drop,
    };
    if action != Action::Drop && a.out_from == 0 {
        bail!(
            "--action {:?} needs --out-from PORT (the local port to send from)",
            a.action
        );
    }
    if action == Action::Relay && !(a.srtp_in.0.is_plain() && a.srtp_out.0.is_plain()) {
        bail!(
            "relay leaves packets as they are: --srtp-in/--srtp-out apply to --action rekey only"
        );
    }
    if !a.out_to.is_set() && a.peer.is_none() && action != Action::Drop {
        bail!("--out-to latched needs --peer KEY (the entry whose latched source to send to)");
    }
    let mut bits = 0;
    for (on, bit) in [
        (a.latch, flags::LATCH),
        (a.latch_any, flags::LATCH_ANY_SOURCE),
        (a.rtcp, flags::RTCP),
        (a.ssrc_lock, flags::SSRC_LOCK),
        (a.keepalive.is_some(), flags::KEEPALIVE),
    ] {
        if on {
            bits |= bit;
        }
    }
    let entry = FlowEntry {
        flow_id: a.flow_id,
        idle_timeout_ms: a.idle_timeout,
        action: action as u8,
        flags: bits,
        worker: a.worker,
        permit_ip: a.permit.map_or([0; 4], |ip| ip.octets()),
        clock_rate: a.clock_rate,
        out_local_port: a.out_from,
        out_remote: a.out_to,
        peer: a.peer.unwrap_or_default(),
        keepalive_ms: a.keepalive.unwrap_or(0),
        srtp_in: a.srtp_in.0,
        srtp_out: a.srtp_out.0,
        ..FlowEntry::default()
    };
    let existed = t.lookup(&a.key).is_some();
    let slot = t.insert(a.key, entry)?;
    let generation = t.lookup(&a.key).map_or(0, |(_, e)| e.generation);
    writeln!(
        out,
        "{} {} in slot {} (generation {generation}){}",
        if existed { "replaced" } else { "added" },
        format_key(&a.key),
        slot.index(),
        also_in_map(t)
    )?;
    Ok(())
}

/// "; written to the XDP flows map in DIR too" when the node has pinned maps.
fn also_in_map(t: &FlowTable) -> String {
    t.map_hook().map_or_else(String::new, |h| {
        format!("; written to {} too", h.describe())
    })
}

/// The entry's own state, if it belongs to the entry's current generation.
fn current_state(
    t: &FlowTable,
    slot: edgeway_flowtable::SlotRef,
    e: &FlowEntry,
) -> Option<FlowState> {
    let s = t.state(slot);
    (s.generation == e.generation).then_some(s)
}

fn latched(s: Option<&FlowState>) -> Option<String> {
    s.filter(|s| s.latched != 0)
        .map(|s| format_endpoint(&s.latched_src))
}

fn action_word(e: &FlowEntry) -> String {
    match e.action() {
        Some(Action::Relay) => "relay".into(),
        Some(Action::Rekey) => "rekey".into(),
        Some(Action::Drop) => "drop".into(),
        None => format!("?{}", e.action),
    }
}

fn out_to(e: &FlowEntry) -> String {
    if e.out_remote.is_set() {
        format_endpoint(&e.out_remote)
    } else {
        "latched".into()
    }
}

fn list(t: &FlowTable, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let mut rows: Vec<_> = t.iter().collect();
    rows.sort_by_key(|(_, k, _)| (k.local_port, k.remote_ip, k.remote_port));
    if json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(slot, k, e)| {
                let c = t.counters(*slot);
                let s = current_state(t, *slot, e);
                json!({
                    "key": format_key(k),
                    "slot": slot.index(),
                    "flow_id": e.flow_id,
                    "action": action_word(e),
                    "worker": e.worker,
                    "out_from": e.out_local_port,
                    "out_to": out_to(e),
                    "latched_src": latched(s.as_ref()),
                    "rx_packets": c.rx_packets,
                    "tx_packets": c.tx_packets,
                    "drops": edgeway_map_schema::saturating_sum(&c.drops),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:>8} {:<6} {:>6} {:>8} {:<21} {:<21} {:>10} {:>10} {:>8}",
        "KEY", "FLOW", "ACTION", "WORKER", "OUT FROM", "OUT TO", "LATCHED", "RX", "TX", "DROPS"
    )?;
    for (slot, k, e) in &rows {
        let c = t.counters(*slot);
        let s = current_state(t, *slot, e);
        writeln!(
            out,
            "{:<24} {:>8} {:<6} {:>6} {:>8} {:<21} {:<21} {:>10} {:>10} {:>8}",
            format_key(k),
            e.flow_id,
            action_word(e),
            e.worker,
            e.out_local_port,
            out_to(e),
            latched(s.as_ref()).unwrap_or_else(|| "-".into()),
            c.rx_packets,
            c.tx_packets,
            edgeway_map_schema::saturating_sum(&c.drops)
        )?;
    }
    writeln!(out, "{} entries", rows.len())?;
    Ok(())
}

fn show(t: &FlowTable, key: &FlowKey, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let (slot, e) = t
        .try_lookup(key)?
        .with_context(|| format!("no entry for {} in {}", format_key(key), t.dir().display()))?;
    let s = t.state(slot);
    let c = t.counters(slot);
    let stale = s.generation != e.generation;
    if json {
        let mut state = state_json(&s, e.clock_rate);
        state["stale"] = stale.into();
        let v = json!({
            "slot": slot.index(),
            "home_slot": t.home_slot(key),
            "entry": entry_json(key, &e),
            "state": state,
            "counters": counters_json(&c),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let ej = entry_json(key, &e);
    writeln!(
        out,
        "entry {} (slot {}, home slot {})",
        format_key(key),
        slot.index(),
        t.home_slot(key)
    )?;
    for (name, v) in ej.as_object().into_iter().flatten() {
        if name == "key" {
            continue;
        }
        writeln!(out, "  {name:<16} {}", plain(v))?;
    }
    if stale {
        writeln!(
            out,
            "state: none yet for generation {} (the owning worker has not reported it)",
            e.generation
        )?;
    } else {
        write_state(&s, e.clock_rate, out)?;
    }
    write_counters(&c, out)
}

/// A JSON value without quotes around strings, for the human view.
pub(crate) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(a) => a.iter().map(plain).collect::<Vec<_>>().join(","),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

fn write_state(s: &FlowState, clock_rate: u32, out: &mut impl Write) -> io::Result<()> {
    let rate = if clock_rate == 0 { 8000 } else { clock_rate };
    writeln!(out, "state (generation {})", s.generation)?;
    if s.latched != 0 {
        writeln!(
            out,
            "  latched          {} ssrc {:#010x}",
            format_endpoint(&s.latched_src),
            s.latched_ssrc
        )?;
    } else {
        writeln!(out, "  latched          no")?;
    }
    writeln!(
        out,
        "  idle             {}",
        if s.idle != 0 { "yes" } else { "no" }
    )?;
    writeln!(
        out,
        "  last rx / tx     {} / {} (Unix ms)",
        s.last_rx_ms, s.last_tx_ms
    )?;
    for (name, cp) in [("srtp in", &s.srtp_in), ("srtp out", &s.srtp_out)] {
        if cp.valid != 0 {
            writeln!(
                out,
                "  {name:<16} ssrc {:#010x} roc {} index {}",
                cp.ssrc,
                cp.highest_index >> 16,
                cp.highest_index
            )?;
        } else {
            writeln!(out, "  {name:<16} -")?;
        }
    }
    writeln!(
        out,
        "  rtp              ssrc {:#010x} received {} lost {} jitter {:.2} ms",
        s.rtp.ssrc,
        s.rtp.received,
        s.rtp.lost,
        f64::from(s.rtp.jitter_q4) / 16.0 * 1000.0 / f64::from(rate)
    )
}

pub(crate) fn write_counters(c: &FlowCounters, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(out, "counters")?;
    writeln!(
        out,
        "  rx               {} packets, {} bytes",
        c.rx_packets, c.rx_bytes
    )?;
    writeln!(
        out,
        "  tx               {} packets, {} bytes",
        c.tx_packets, c.tx_bytes
    )?;
    writeln!(
        out,
        "  keepalives       {} rx, {} tx",
        c.keepalives_rx, c.keepalives_tx
    )?;
    write_drops(&c.drops, out)
}

fn write_drops(drops: &[u64], out: &mut impl Write) -> anyhow::Result<()> {
    let total = edgeway_map_schema::saturating_sum(drops);
    writeln!(out, "  drops            {total}")?;
    for r in DropReason::ALL {
        if drops[r.index()] != 0 {
            writeln!(out, "    {:<14} {}", r.name(), drops[r.index()])?;
        }
    }
    Ok(())
}

pub(crate) fn liveness_word(l: Liveness) -> String {
    match l {
        Liveness::None => "not running".into(),
        Liveness::Running => "running".into(),
        Liveness::Stalled { silent_ms } => format!("stalled (no heartbeat for {silent_ms} ms)"),
        Liveness::Exited => "exited (its process is gone)".into(),
        _ => "unknown".into(),
    }
}

fn stats(t: &FlowTable, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let now = unix_ms();
    let dp = t.dataplane();
    let live = liveness_word(dp.liveness(now));
    let info = t.info();
    let ports = t.ports().usage(now);
    // Rows of the published workers, plus any other row that holds counts (a previous
    // data plane with more workers).
    let rows: Vec<(usize, NodeCounters)> = (0..MAX_WORKERS)
        .map(|w| (w, t.node_counters(w)))
        .filter(|(w, c)| *w < dp.workers as usize || *c != NodeCounters::default())
        .collect();
    let mut total = NodeCounters::default();
    for (_, c) in &rows {
        total.accumulate(c);
    }
    // What the data plane said of XDP when it started (attached where, how, or why not).
    let xdp: Vec<String> = XdpStatus::read(&info.dir).map_or_else(
        || vec!["unknown (no data plane has started on this table)".into()],
        |s| s.lines,
    );
    if json {
        let v = json!({
            "xdp": xdp,
            "dataplane": {
                "state": live,
                "pid": dp.pid,
                "workers": dp.workers,
                "role": dp.role,
                "started_ms": dp.started_ms,
                "heartbeat_ms": dp.heartbeat_ms,
            },
            "table": {
                "dir": info.dir.display().to_string(),
                "capacity": info.capacity,
                "max_live": info.max_live,
                "live": info.live,
                "tombstones": info.tombstones,
                "changes": info.changes,
            },
            "ports": {
                "range": format!("{}-{}", info.port_range.0, info.port_range.1),
                "free_pairs": ports.free_pairs,
                "in_use": ports.in_use,
                "quarantined": ports.quarantined,
                "excluded": ports.excluded,
            },
            "workers": rows.iter().map(|(w, c)| {
                let mut v = node_counters_json(c);
                v["worker"] = (*w).into();
                v
            }).collect::<Vec<_>>(),
            "total": node_counters_json(&total),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    write_dataplane_line(&dp, &live, out)?;
    for line in &xdp {
        writeln!(out, "xdp: {line}")?;
    }
    writeln!(
        out,
        "table: {} live of {} ({} slots), {} removed in quarantine, {} changes",
        info.live, info.max_live, info.capacity, info.tombstones, info.changes
    )?;
    writeln!(
        out,
        "ports {}-{}: {} pairs free, {} in use, {} in quarantine, {} excluded",
        info.port_range.0,
        info.port_range.1,
        ports.free_pairs,
        ports.in_use,
        ports.quarantined,
        ports.excluded
    )?;
    for (w, c) in &rows {
        writeln!(
            out,
            "worker {w}: {} flows, rx {} packets / {} bytes, tx {} packets / {} bytes, {} drops",
            c.flows,
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes,
            c.total_drops()
        )?;
    }
    writeln!(
        out,
        "total: rx {} packets, tx {} packets, keepalives {} rx / {} tx",
        total.rx_packets, total.tx_packets, total.keepalives_rx, total.keepalives_tx
    )?;
    write_drops(&total.drops, out)
}

/// The data plane's liveness line of `flow stats` and `status`.
pub(crate) fn write_dataplane_line(
    dp: &DataplaneInfo,
    live: &str,
    out: &mut impl Write,
) -> io::Result<()> {
    if dp.pid == 0 {
        return writeln!(out, "data plane: {live}");
    }
    writeln!(
        out,
        "data plane: {live}: pid {}, {} worker(s){}",
        dp.pid,
        dp.workers,
        if dp.role.is_empty() {
            String::new()
        } else {
            format!(", {}", dp.role)
        }
    )
}
