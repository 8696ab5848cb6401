//! `edgewayctl flows`: the live view of the XDP program's maps, pinned under
//! `/sys/fs/bpf/edgeway/<node>/` by the data plane (or `--pin-dir`). Every read goes to the
//! kernel, so the counts are the program's own at that moment, and they stay readable after
//! the data plane was killed (the pinned link keeps edge relay flows forwarding).
//!
//! `list` and `show` print the program's copy of the flow table with what it latched and its
//! per-CPU-summed counters; `top` ranks flows by packets/s between two samples; `drops`
//! prints the node-wide counters with drops by reason under their stable names; `events`
//! prints (and with `--follow`, follows) the events the data plane drained from the
//! program's ring buffer into the table directory's event log.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Subcommand;
use edgeway_flowtable::{
    counters_json, entry_json, event_kind_name, format_endpoint, format_key, parse_key,
    xdp_counters_json, DropReason, EventLog, FlowCounters, FlowEntry, FlowKey, FlowTable,
    XdpStatus,
};
use edgeway_map_schema::{saturating_sum, Action};
use edgeway_xdp::PinnedMaps;
use serde_json::{json, Value};

/// Where a node's table and pinned maps are.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NodeArgs {
    /// Node: its table in /dev/shm/edgeway/<NODE>/, its maps in /sys/fs/bpf/edgeway/<NODE>/.
    #[arg(long, global = true, value_name = "NODE", default_value = "edgeway")]
    node: String,
    /// Table directory (overrides --node for the table, the XDP status and the event log).
    #[arg(long, global = true, value_name = "DIR")]
    shm_dir: Option<PathBuf>,
    /// Directory of the pinned maps (default: where the data plane said it pinned them,
    /// else /sys/fs/bpf/edgeway/<NODE>/).
    #[arg(long, global = true, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
}

impl NodeArgs {
    /// The table directory.
    pub(crate) fn table_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.shm_dir {
            Some(d) => Ok(d.clone()),
            None => Ok(FlowTable::dir_for(&self.node)?),
        }
    }

    /// The pin directory: `--pin-dir`, else the one the data plane recorded, else the node's.
    pub(crate) fn pin_dir(&self) -> PathBuf {
        if let Some(d) = &self.pin_dir {
            return d.clone();
        }
        self.table_dir()
            .ok()
            .and_then(|d| XdpStatus::read(&d))
            .and_then(|s| s.pin_dir())
            .unwrap_or_else(|| edgeway_xdp::pin_dir(&self.node))
    }

    fn maps(&self) -> anyhow::Result<PinnedMaps> {
        let dir = self.pin_dir();
        PinnedMaps::open(&dir).with_context(|| {
            format!(
                "reading the XDP maps in {} (is a data plane running with --xdp, and are you \
                 root?)",
                dir.display()
            )
        })
    }
}

/// The live view of the XDP program's maps.
#[derive(Debug, clap::Args)]
pub(crate) struct FlowsArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    command: FlowsCommand,
}

#[derive(Debug, Subcommand)]
enum FlowsCommand {
    /// Every flow in the program's map, with its latched source and counters.
    List {
        /// JSON array on standard output.
        #[arg(long)]
        json: bool,
    },
    /// One flow: its entry (without key material), latch and counters with drops by reason.
    Show {
        /// The flow's key: PORT, or PORT@IP:PORT on a demultiplexing port.
        #[arg(value_parser = key_arg)]
        key: FlowKey,
        /// JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Flows ranked by packets/s received, between two samples `--interval` apart.
    Top {
        /// Seconds between the two samples.
        #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = interval_arg)]
        interval: f64,
        /// How many flows to print.
        #[arg(short = 'n', value_name = "N", default_value_t = 10)]
        count: usize,
        /// JSON array on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Node-wide XDP counters: packets seen, relayed, steered, passed, and drops by reason.
    Drops {
        /// JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Events from the program (latches, bursts of packets for no flow), oldest first.
    Events {
        /// Keep printing events as the data plane appends them (until interrupted).
        #[arg(long)]
        follow: bool,
        /// One JSON object per line on standard output.
        #[arg(long)]
        json: bool,
    },
}

fn key_arg(s: &str) -> Result<FlowKey, String> {
    parse_key(s).map_err(|e| e.to_string())
}

fn interval_arg(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.01..=3600.0).contains(&v) {
        return Err(format!("{s}: between 0.01 and 3600 seconds"));
    }
    Ok(v)
}

/// Runs `edgewayctl flows ...`.
pub(crate) fn run(args: FlowsArgs) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match args.command {
        FlowsCommand::List { json } => list(&args.node.maps()?, json, &mut out),
        FlowsCommand::Show { key, json } => show(&args.node.maps()?, key, json, &mut out),
        FlowsCommand::Top {
            interval,
            count,
            json,
        } => top(&args.node.maps()?, interval, count, json, &mut out),
        FlowsCommand::Drops { json } => drops(&args.node.maps()?, json, &mut out),
        FlowsCommand::Events { follow, json } => events(
            &EventLog::new(&args.node.table_dir()?),
            follow,
            json,
            &mut out,
        ),
    }
}

fn action_word(e: &FlowEntry) -> &'static str {
    match e.action() {
        Some(Action::Relay) => "relay",
        Some(Action::Rekey) => "rekey",
        Some(Action::Drop) => "drop",
        None => "unknown",
    }
}

fn out_to(e: &FlowEntry) -> String {
    if e.out_remote.is_set() {
        format_endpoint(&e.out_remote)
    } else {
        "latched".into()
    }
}

/// One flow as the program sees it.
struct Row {
    key: FlowKey,
    entry: FlowEntry,
    latched: Option<String>,
    counters: FlowCounters,
}

fn rows(maps: &PinnedMaps) -> anyhow::Result<Vec<Row>> {
    let mut counters: std::collections::HashMap<FlowKey, FlowCounters> =
        maps.all_flow_counters()?.into_iter().collect();
    let mut rows = Vec::new();
    for (key, entry) in maps.flows()? {
        let latched = maps
            .latch(key)?
            .and_then(|l| l.source(entry.generation))
            .map(|src| format_endpoint(&src));
        rows.push(Row {
            key,
            entry,
            latched,
            counters: counters.remove(&key).unwrap_or_default(),
        });
    }
    rows.sort_by_key(|r| (r.key.local_port, r.key.remote_ip, r.key.remote_port));
    Ok(rows)
}

fn row_json(r: &Row) -> Value {
    json!({
        "key": format_key(&r.key),
        "flow_id": r.entry.flow_id,
        "generation": r.entry.generation,
        "action": action_word(&r.entry),
        "out_from": r.entry.out_local_port,
        "out_to": out_to(&r.entry),
        "latched_src": r.latched,
        "rx_packets": r.counters.rx_packets,
        "rx_bytes": r.counters.rx_bytes,
        "tx_packets": r.counters.tx_packets,
        "tx_bytes": r.counters.tx_bytes,
        "drops": saturating_sum(&r.counters.drops),
    })
}

fn list(maps: &PinnedMaps, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let rows = rows(maps)?;
    if json {
        let v: Vec<Value> = rows.iter().map(row_json).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:>8} {:<6} {:>8} {:<21} {:<21} {:>10} {:>10} {:>8}",
        "KEY", "FLOW", "ACTION", "OUT FROM", "OUT TO", "LATCHED", "RX", "TX", "DROPS"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<24} {:>8} {:<6} {:>8} {:<21} {:<21} {:>10} {:>10} {:>8}",
            format_key(&r.key),
            r.entry.flow_id,
            action_word(&r.entry),
            r.entry.out_local_port,
            out_to(&r.entry),
            r.latched.as_deref().unwrap_or("-"),
            r.counters.rx_packets,
            r.counters.tx_packets,
            saturating_sum(&r.counters.drops)
        )?;
    }
    writeln!(
        out,
        "{} flows in the XDP map ({})",
        rows.len(),
        maps.dir().display()
    )?;
    Ok(())
}

fn show(maps: &PinnedMaps, key: FlowKey, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let entry = maps.flow(key)?.with_context(|| {
        format!(
            "no flow {} in the XDP map ({})",
            format_key(&key),
            maps.dir().display()
        )
    })?;
    let latch = maps.latch(key)?;
    let latched = latch.and_then(|l| l.source(entry.generation));
    let counters = maps.flow_counters(key)?.unwrap_or_default();
    if json {
        let v = json!({
            "entry": entry_json(&key, &entry),
            "latched_src": latched.map(|s| format_endpoint(&s)),
            "latched_ssrc": latched.and(latch).map(|l| format!("{:#010x}", l.ssrc)),
            "counters": counters_json(&counters),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "flow {} in the XDP map ({})",
        format_key(&key),
        maps.dir().display()
    )?;
    let ej = entry_json(&key, &entry);
    for (name, v) in ej.as_object().into_iter().flatten() {
        if name != "key" {
            writeln!(out, "  {name:<16} {}", crate::flow::plain(v))?;
        }
    }
    match (latched, latch) {
        (Some(src), Some(l)) => writeln!(
            out,
            "  latched          {} ssrc {:#010x}",
            format_endpoint(&src),
            l.ssrc
        )?,
        _ => writeln!(out, "  latched          no")?,
    }
    crate::flow::write_counters(&counters, out)
}

fn top(
    maps: &PinnedMaps,
    interval: f64,
    count: usize,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let first: std::collections::HashMap<FlowKey, FlowCounters> =
        maps.all_flow_counters()?.into_iter().collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(interval));
    let second = maps.all_flow_counters()?;
    let secs = t0.elapsed().as_secs_f64();
    let flows: std::collections::HashMap<FlowKey, FlowEntry> = maps.flows()?.into_iter().collect();
    let mut ranked: Vec<(FlowKey, f64, f64, FlowCounters)> = second
        .into_iter()
        .filter(|(k, _)| flows.contains_key(k))
        .map(|(k, c)| {
            let before = first.get(&k).copied().unwrap_or_default();
            let rx = c.rx_packets.saturating_sub(before.rx_packets) as f64 / secs;
            let tx = c.tx_packets.saturating_sub(before.tx_packets) as f64 / secs;
            (k, rx, tx, c)
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then(a.0.local_port.cmp(&b.0.local_port))
    });
    ranked.truncate(count);
    if json {
        let v: Vec<Value> = ranked
            .iter()
            .map(|(k, rx, tx, c)| {
                json!({
                    "key": format_key(k),
                    "action": flows.get(k).map(action_word),
                    "rx_pps": rx,
                    "tx_pps": tx,
                    "rx_packets": c.rx_packets,
                    "tx_packets": c.tx_packets,
                    "drops": saturating_sum(&c.drops),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:<6} {:>12} {:>12} {:>12} {:>8}",
        "KEY", "ACTION", "RX PKT/S", "TX PKT/S", "RX TOTAL", "DROPS"
    )?;
    for (k, rx, tx, c) in &ranked {
        writeln!(
            out,
            "{:<24} {:<6} {:>12.1} {:>12.1} {:>12} {:>8}",
            format_key(k),
            flows.get(k).map_or("-", action_word),
            rx,
            tx,
            c.rx_packets,
            saturating_sum(&c.drops)
        )?;
    }
    writeln!(out, "over {secs:.2} s")?;
    Ok(())
}

fn drops(maps: &PinnedMaps, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let c = maps.counters()?;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&xdp_counters_json(&c))?
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "xdp ({}): {} media packets, {} relayed in the kernel, {} steered to workers, {} passed \
         to the stack, {} keepalives consumed, {} events lost",
        maps.dir().display(),
        c.rx_packets,
        c.relayed_packets,
        c.steered_packets,
        c.passed_packets,
        c.keepalives_rx,
        c.events_lost
    )?;
    writeln!(out, "drops {}", saturating_sum(&c.drops))?;
    // Every reason, zero or not: scripts read the same lines every time.
    for r in DropReason::ALL {
        writeln!(out, "  {:<16} {}", r.name(), c.drops[r.index()])?;
    }
    Ok(())
}

fn write_event(v: &Value, json: bool, out: &mut impl Write) -> io::Result<()> {
    if json {
        return writeln!(out, "{v}");
    }
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    let kind = s("kind");
    let what = match kind.as_str() {
        k if k == event_kind_name(edgeway_xdp::xdp_event::LATCHED) => {
            format!("flow {} latched {}", s("key"), s("src"))
        }
        k if k == event_kind_name(edgeway_xdp::xdp_event::NO_FLOW) => format!(
            "{} packet(s) for no flow, the last to port {} from {}",
            v["count"],
            s("key"),
            s("src")
        ),
        _ => v.to_string(),
    };
    writeln!(out, "{} {what}", v["time_ms"])
}

fn events(log: &EventLog, follow: bool, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let what = || format!("reading {}", log.path().display());
    let (current, mut at) = log.read_from(0).with_context(what)?;
    for v in log
        .read_rotated()
        .with_context(what)?
        .iter()
        .chain(&current)
    {
        write_event(v, json, out)?;
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let (new, next) = log
            .read_from(at)
            .with_context(|| format!("following {}", log.path().display()))?;
        at = next;
        for v in &new {
            write_event(v, json, out)?;
        }
        out.flush()?;
    }
}
