//! The data plane's half of XDP: loads `media.bpf.c` with its maps pinned under
//! `/sys/fs/bpf/edgeway/<node>/`, attaches it to the media interfaces through pinned links
//! (so a killed data plane leaves edge relay flows forwarding), and keeps the program's flow
//! map equal to the flow table. Writers (the control plane, `edgewayctl flow`) open the table
//! through `edgeway_xdp::open_table` and write the pinned map themselves, in the same call;
//! this mirror is the reconciler behind them: every change in the table's log is applied to
//! the BPF map between loop turns of the main thread (every 50 ms), and an overrun rescans,
//! so the map never differs from the table for longer than that, even when a writer died
//! between its table write and its map write. (A mirror pass that read an entry just before
//! a writer replaced it may write the older entry over the writer's; the writer's change is
//! in the log, so the next pass puts it back.)
//!
//! When the program cannot be loaded or attached (no privilege, no bpffs, an interface
//! without XDP), the node says so once, in its log and in the status file (`<table dir>/xdp`)
//! that `edgewayctl status` reads, and the workers carry all media.
//!
//! The program's ring-buffer events (latches, bursts of packets for no flow) are drained by
//! the main thread between its turns and appended to the table directory's bounded event
//! log, which `edgewayctl flows events` prints and follows.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use edgeway_flowtable::{
    event_json, unix_ms, ChangesResult, EventLog, FlowTable, XdpAttachment, XdpStatus,
};
use edgeway_media::{MediaConfig, Role};
use edgeway_xdp::{xdp_mode, Attached, MediaProgram, XdpConfig, XdpEvent};

/// One `--xdp` interface: its name and, for dual-NIC edges, the source address relayed
/// packets take when they leave by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XdpInterface {
    pub(crate) name: String,
    pub(crate) source: Option<Ipv4Addr>,
}

impl std::str::FromStr for XdpInterface {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, source) = match s.split_once('=') {
            Some((n, ip)) => (
                n,
                Some(
                    ip.parse()
                        .map_err(|e| format!("{s:?}: source address {ip:?}: {e}"))?,
                ),
            ),
            None => (s, None),
        };
        if name.is_empty() || name.len() > 15 || name.contains('/') {
            return Err(format!("{s:?}: not an interface name"));
        }
        Ok(XdpInterface {
            name: name.to_owned(),
            source,
        })
    }
}

/// The attached program, how far the flow map follows the table's change log, and where
/// its events go.
#[derive(Debug)]
pub(crate) struct XdpNode {
    program: MediaProgram,
    cursor: u64,
    events: EventLog,
    drained: Vec<XdpEvent>,
}

impl XdpNode {
    /// Loads, configures and attaches the program; mirrors the whole table into it. The
    /// status says how it sits on each interface; `previous` (the status an earlier data
    /// plane left) names the mode of a pinned link this one takes over.
    pub(crate) fn start(
        pin_dir: &Path,
        interfaces: &[XdpInterface],
        generic_only: bool,
        config: &MediaConfig,
        worker_cpus: &[usize],
        table: &FlowTable,
        previous: Option<&XdpStatus>,
    ) -> Result<(XdpNode, XdpStatus)> {
        let mut program = MediaProgram::load(Some(pin_dir))
            .with_context(|| format!("loading the XDP program (maps in {})", pin_dir.display()))?;
        let mut demux_ports = [0u16; edgeway_map_schema::XDP_MAX_DEMUX_PORTS];
        let ports = config.demux_ports();
        if ports.len() > demux_ports.len() {
            bail!(
                "{} demultiplexing ports: XDP knows at most {}",
                ports.len(),
                demux_ports.len()
            );
        }
        demux_ports[..ports.len()].copy_from_slice(&ports);
        let relay = if config.role == Role::Edge {
            xdp_mode::RELAY
        } else {
            0
        };
        program.set_config(&XdpConfig {
            media_port_min: config.media_range.0,
            media_port_max: config.media_range.1,
            demux_ports,
            mode: relay | xdp_mode::STEER,
            noflow_window_ns: 0,
        })?;
        for (worker, cpu) in worker_cpus.iter().enumerate() {
            program
                .set_worker_cpu(worker as u32, *cpu as u32)
                .with_context(|| format!("steering worker {worker} to cpu {cpu}"))?;
        }
        let earlier = previous.map(XdpStatus::attachments).unwrap_or_default();
        let mut status = XdpStatus::default();
        status.push_pin_dir(pin_dir);
        for i in interfaces {
            let ifindex = edgeway_xdp::interface_index(&i.name)
                .with_context(|| format!("--xdp {}: no such interface", i.name))?;
            let how = program
                .attach_pinned(&i.name, generic_only)
                .with_context(|| format!("attaching to {}", i.name))?;
            program.add_tx_port(ifindex, i.source)?;
            let (mode, replaced) = match how {
                Attached::New(mode) => (mode.name().to_owned(), false),
                // The link keeps the mode it was made with; the earlier status recorded it.
                Attached::Replaced => (
                    earlier
                        .iter()
                        .find(|a| a.interface == i.name)
                        .map_or_else(|| "unknown".to_owned(), |a| a.mode.clone()),
                    true,
                ),
            };
            if relay != 0 && !forwarding_on(&i.name) {
                status.push_note(format!(
                    "{}: net.ipv4.conf.{}.forwarding is 0, so the kernel's FIB lookup refuses \
                     in-kernel relay there; relay legs pass to the workers until it is 1",
                    i.name, i.name
                ));
            }
            status.push_attached(&XdpAttachment {
                interface: i.name.clone(),
                mode,
                replaced,
            });
        }
        let mut node = XdpNode {
            program,
            cursor: 0,
            events: EventLog::new(table.dir()),
            drained: Vec::new(),
        };
        node.resync(table)?;
        Ok((node, status))
    }

    /// Where the program's maps are pinned.
    pub(crate) fn pin_dir(&self) -> Option<&Path> {
        self.program.pin_dir()
    }

    /// Moves the program's new events into the event log; returns how many.
    pub(crate) fn drain_events(&mut self) -> Result<usize> {
        self.drained.clear();
        let n = self.program.drain_events(&mut self.drained)?;
        if n == 0 {
            return Ok(0);
        }
        // Events carry the kernel's monotonic time; the log says when, in Unix time.
        let (now_ms, now_ns) = (unix_ms(), edgeway_xdp::monotonic_ns());
        let lines: Vec<_> = self
            .drained
            .iter()
            .map(|ev| {
                let age_ms = now_ns.saturating_sub(ev.ktime_ns) / 1_000_000;
                event_json(ev, now_ms.saturating_sub(age_ms))
            })
            .collect();
        self.events
            .append(&lines)
            .with_context(|| format!("appending to {}", self.events.path().display()))?;
        Ok(n)
    }

    /// Applies the table's changes since the last call; rescans after an overrun.
    pub(crate) fn sync(&mut self, table: &FlowTable) -> Result<()> {
        let mut changes = Vec::new();
        match table.changes_since(self.cursor, &mut |c| changes.push(c)) {
            ChangesResult::UpTo(cursor) => {
                // Whatever the change was, the table now holds the truth for its key.
                for c in changes {
                    match table.lookup(&c.key) {
                        Some((_, entry)) => self.program.insert_flow(c.key, &entry)?,
                        None => {
                            self.program.remove_flow(c.key)?;
                        }
                    }
                }
                self.cursor = cursor;
                Ok(())
            }
            ChangesResult::Overrun => self.resync(table),
        }
    }

    /// Makes the flow map equal to the table.
    fn resync(&mut self, table: &FlowTable) -> Result<()> {
        self.cursor = table.change_cursor();
        let mut live = std::collections::HashSet::new();
        for (_, key, entry) in table.iter() {
            self.program.insert_flow(key, &entry)?;
            live.insert(key);
        }
        for key in self.program.flow_keys()? {
            if !live.contains(&key) {
                self.program.remove_flow(key)?;
            }
        }
        Ok(())
    }
}

fn forwarding_on(interface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{interface}/forwarding"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

/// Writes the status `edgewayctl status` shows and says it on stderr, once.
pub(crate) fn publish_status(dir: &Path, status: &XdpStatus) {
    for line in &status.lines {
        eprintln!("edgeway-dataplane: XDP {line}");
    }
    if let Err(e) = status.write(dir) {
        eprintln!(
            "edgeway-dataplane: writing {}: {e}",
            dir.join(edgeway_flowtable::XDP_STATUS_FILE).display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_parse_with_and_without_a_source() {
        let i: XdpInterface = "eth1=10.0.0.5".parse().expect("valid");
        assert_eq!(i.name, "eth1");
        assert_eq!(i.source, Some(Ipv4Addr::new(10, 0, 0, 5)));
        let i: XdpInterface = "veth0".parse().expect("valid");
        assert_eq!(i.source, None);
        assert!("eth1=10.0.0".parse::<XdpInterface>().is_err());
        assert!("".parse::<XdpInterface>().is_err());
        assert!("a-very-long-interface".parse::<XdpInterface>().is_err());
    }
}
