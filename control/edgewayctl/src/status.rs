//! `edgewayctl status`: is the node's data plane alive, and is XDP in front of it. The first
//! comes from the flow table's header (the data plane's heartbeat), the second from what the
//! data plane recorded when it started (`<table dir>/xdp`: attached where and in which mode,
//! or why not) and from the links pinned beside the maps, which keep the program attached
//! whether or not a data plane runs.

use std::io::{self, Write};

use anyhow::Context as _;
use edgeway_flowtable::{unix_ms, FlowTable, Liveness, XdpStatus};
use edgeway_xdp::PinnedLinkInfo;
use serde_json::{json, Value};

use crate::flows::NodeArgs;

/// The node's data-plane liveness and XDP attach state.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// JSON on standard output.
    #[arg(long)]
    json: bool,
}

/// The XDP attach state in one word and the sentence that explains it.
struct XdpLine {
    mode: String,
    why: String,
}

fn xdp_line(status: Option<&XdpStatus>, links: &[PinnedLinkInfo], running: bool) -> XdpLine {
    let Some(status) = status else {
        return XdpLine {
            mode: "unknown".into(),
            why: "no data plane has started on this table".into(),
        };
    };
    if let Some(why) = status.off_reason() {
        return XdpLine {
            mode: "none".into(),
            why: why.to_owned(),
        };
    }
    let attached = status.attachments();
    let live = |name: &str| {
        links
            .iter()
            .find(|l| l.interface == name && l.program_id != 0)
    };
    let mut modes: Vec<&str> = attached
        .iter()
        .filter(|a| live(&a.interface).is_some())
        .map(|a| a.mode.as_str())
        .collect();
    modes.dedup();
    let mode = match modes.as_slice() {
        [] => "none".to_owned(),
        [one] => (*one).to_owned(),
        _ => "mixed".to_owned(),
    };
    let parts: Vec<String> = attached
        .iter()
        .map(|a| match live(&a.interface) {
            Some(l) => format!(
                "attached to {} ({}, pinned link {} runs program {}{})",
                a.interface,
                a.mode,
                l.link_id,
                l.program_id,
                if a.replaced {
                    ", taken over from an earlier data plane"
                } else {
                    ""
                }
            ),
            None => format!(
                "{} detached (the data plane attached it {}; its pinned link is gone since)",
                a.interface, a.mode
            ),
        })
        .collect();
    let mut why = parts.join(", ");
    if !running && links.iter().any(|l| l.program_id != 0) {
        why.push_str(
            "; no data plane is running: relay flows keep forwarding in the kernel, re-key \
             flows wait for a data plane",
        );
    }
    XdpLine { mode, why }
}

fn liveness_running(l: Liveness) -> bool {
    matches!(l, Liveness::Running)
}

/// Runs `edgewayctl status`.
pub(crate) fn run(args: StatusArgs) -> anyhow::Result<()> {
    let dir = args.node.table_dir()?;
    let table = FlowTable::open_at(&dir)
        .with_context(|| format!("opening the flow table in {}", dir.display()))?;
    let dp = table.dataplane();
    let live = dp.liveness(unix_ms());
    let status = XdpStatus::read(&dir);
    let pin_dir = args.node.pin_dir();
    // No pins (never attached, or removed) is a state, not an error.
    let links = if pin_dir.is_dir() {
        edgeway_xdp::pinned_links(&pin_dir)
            .with_context(|| format!("reading the links pinned in {}", pin_dir.display()))?
    } else {
        Vec::new()
    };
    let line = xdp_line(status.as_ref(), &links, liveness_running(live));
    let notes: Vec<&str> = status.iter().flat_map(|s| s.notes()).collect();
    let mut out = io::stdout().lock();
    if args.json {
        let v = json!({
            "dataplane": {
                "state": crate::flow::liveness_word(live),
                "pid": dp.pid,
                "workers": dp.workers,
                "role": dp.role,
                "heartbeat_ms": dp.heartbeat_ms,
            },
            "xdp": {
                "mode": line.mode,
                "detail": line.why,
                "notes": notes,
                "pin_dir": pin_dir.display().to_string(),
                "links": links.iter().map(|l| json!({
                    "interface": l.interface,
                    "link_id": l.link_id,
                    "program_id": l.program_id,
                })).collect::<Vec<Value>>(),
            },
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    crate::flow::write_dataplane_line(&dp, &crate::flow::liveness_word(live), &mut out)?;
    writeln!(out, "xdp: {}: {}", line.mode, line.why)?;
    for n in notes {
        writeln!(out, "xdp note: {n}")?;
    }
    Ok(())
}
