//! The data plane's half of XDP: loads `media.bpf.c` with its maps pinned under
//! `/sys/fs/bpf/edgeway/<node>/`, attaches it to the media interfaces through pinned links
//! (so a killed data plane leaves edge relay flows forwarding), and keeps the program's flow
//! map equal to the flow table: the shared-memory table stays the one the control plane and
//! `edgewayctl` write, and every change in its log is applied to the BPF map between loop
//! turns of the main thread.
//!
//! When the program cannot be loaded or attached (no privilege, no bpffs, an interface
//! without XDP), the node says so once, in its log and in the status file `edgewayctl flow
//! stats` reads, and the workers carry all media.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use edgeway_flowtable::{ChangesResult, FlowTable};
use edgeway_media::{MediaConfig, Role};
use edgeway_xdp::{xdp_mode, AttachMode, Attached, MediaProgram, XdpConfig};

/// Name of the status file in the node's table directory.
pub(crate) const STATUS_FILE: &str = "xdp";

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

/// The attached program and how far the flow map follows the table's change log.
#[derive(Debug)]
pub(crate) struct XdpNode {
    program: MediaProgram,
    cursor: u64,
}

impl XdpNode {
    /// Loads, configures and attaches the program; mirrors the whole table into it.
    pub(crate) fn start(
        pin_dir: &Path,
        interfaces: &[XdpInterface],
        generic_only: bool,
        config: &MediaConfig,
        worker_cpus: &[usize],
        table: &FlowTable,
    ) -> Result<(XdpNode, Vec<String>)> {
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
        let mut notes = Vec::new();
        for i in interfaces {
            let ifindex = edgeway_xdp::interface_index(&i.name)
                .with_context(|| format!("--xdp {}: no such interface", i.name))?;
            let how = program
                .attach_pinned(&i.name, generic_only)
                .with_context(|| format!("attaching to {}", i.name))?;
            program.add_tx_port(ifindex, i.source)?;
            let how = match how {
                Attached::New(AttachMode::Native) => "native".to_owned(),
                Attached::New(AttachMode::Generic) => "generic".to_owned(),
                Attached::Replaced => "kept the pinned link, program replaced".to_owned(),
            };
            if relay != 0 && !forwarding_on(&i.name) {
                notes.push(format!(
                    "{}: net.ipv4.conf.{}.forwarding is 0, so the kernel's FIB lookup refuses \
                     in-kernel relay there; relay legs pass to the workers until it is 1",
                    i.name, i.name
                ));
            }
            notes.push(format!("attached to {} ({how})", i.name));
        }
        let mut node = XdpNode { program, cursor: 0 };
        node.resync(table)?;
        Ok((node, notes))
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

/// Writes the one-line-per-fact status `edgewayctl flow stats` shows.
pub(crate) fn write_status(dir: &Path, lines: &[String]) {
    let path: PathBuf = dir.join(STATUS_FILE);
    let _ = std::fs::write(path, lines.join("\n") + "\n");
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
