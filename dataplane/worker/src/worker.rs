//! One worker thread: its io_uring, its sockets, its flows, and the loop that drives them.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use edgeway_flowtable::{unix_ms, FlowTable, SlotRef, TableOptions};
use edgeway_map_schema::{DropReason, FlowCounters, FlowEntry, FlowKey, FlowState};
use edgeway_media::{MediaConfig, MediaWorker, Role, TimerAction, Verdict};
use edgeway_uring::{Disposition, SocketId, Uring, UringConfig};

/// How often table changes are applied and timers run (ms).
const SYNC_EVERY_MS: u64 = 2;
/// How often state and counters are exported to the table (ms). Bounds what a restart loses:
/// SRTP checkpoints older than this are still safe (indices only move forward), counters
/// lose at most this much.
const EXPORT_EVERY_MS: u64 = 20;

/// Flows exported per turn of the loop while an export pass is under way: bounds the time a
/// received packet can wait behind the export (a few tens of microseconds) however many flows
/// the worker carries.
const EXPORT_CHUNK: usize = 64;
/// Longest wait in the kernel for packets when idle; keeps timers and table changes prompt.
const WAIT: Duration = Duration::from_millis(2);

/// What a worker thread needs to start.
#[derive(Debug)]
pub(crate) struct WorkerSpec {
    pub(crate) index: usize,
    pub(crate) workers: usize,
    pub(crate) cpu: usize,
    pub(crate) bind: Ipv4Addr,
    pub(crate) dir: PathBuf,
    /// The XDP program's pin directory when it runs: the worker's idle removals then reach
    /// its flow map in the same call (the BPF backend), not at the next mirror pass.
    pub(crate) pin_dir: Option<PathBuf>,
    pub(crate) config: MediaConfig,
    pub(crate) uring: UringConfig,
    pub(crate) stop: Arc<AtomicBool>,
}

/// Opens the node's flow table, creating it (with the node's port range and the
/// demultiplexing ports excluded from allocation) when there is none.
pub(crate) fn open_or_create_table(
    dir: &Path,
    config: &MediaConfig,
    capacity: u32,
) -> Result<FlowTable> {
    match FlowTable::open_at(dir) {
        Ok(t) => Ok(t),
        Err(open_err) if !dir.join(edgeway_flowtable::TABLE_FILE).exists() => {
            let mut opts = TableOptions::default();
            opts.capacity = capacity;
            opts.port_range = config.media_range;
            opts.excluded_ports = config.demux_ports();
            FlowTable::create_at(dir, &opts).with_context(|| {
                format!("creating the flow table in {} ({open_err})", dir.display())
            })
        }
        Err(e) => Err(e).with_context(|| format!("opening the flow table in {}", dir.display())),
    }
}

/// A socket bound for one local port, shared by the entries that use the port.
#[derive(Debug, Clone, Copy)]
struct PortSocket {
    id: SocketId,
    users: u32,
    /// Demultiplexing ports stay bound for the life of the worker.
    permanent: bool,
}

/// The worker's sockets by local port, and the port of each socket id.
#[derive(Debug)]
struct Sockets {
    by_port: HashMap<u16, PortSocket>,
    /// Port of each socket, by [`SocketId::index`] (packet path: received on which port).
    port_of: Vec<u16>,
    /// Socket of each local port, indexed by port (packet path: send from which socket).
    id_of: Vec<Option<SocketId>>,
}

impl Default for Sockets {
    fn default() -> Self {
        Sockets {
            by_port: HashMap::new(),
            port_of: Vec::new(),
            id_of: vec![None; usize::from(u16::MAX) + 1],
        }
    }
}

impl Sockets {
    fn acquire(
        &mut self,
        uring: &mut Uring,
        bind: Ipv4Addr,
        port: u16,
        permanent: bool,
    ) -> Result<()> {
        if let Some(s) = self.by_port.get_mut(&port) {
            s.users += 1;
            s.permanent |= permanent;
            return Ok(());
        }
        let id = uring
            .bind_udp(SocketAddrV4::new(bind, port))
            .with_context(|| format!("binding UDP {bind}:{port}"))?;
        let i = id.index();
        if self.port_of.len() <= i {
            self.port_of.resize(i + 1, 0);
        }
        self.port_of[i] = port;
        self.id_of[usize::from(port)] = Some(id);
        self.by_port.insert(
            port,
            PortSocket {
                id,
                users: 1,
                permanent,
            },
        );
        Ok(())
    }

    fn release(&mut self, uring: &mut Uring, port: u16) {
        let Some(s) = self.by_port.get_mut(&port) else {
            return;
        };
        s.users = s.users.saturating_sub(1);
        if s.users == 0 && !s.permanent {
            uring.close(s.id);
            self.id_of[usize::from(port)] = None;
            self.by_port.remove(&port);
        }
    }
}

/// What the worker installed for one key, to undo it.
#[derive(Debug, Clone, Copy)]
struct Installed {
    generation: u32,
    ports: [u16; 2],
}

struct Worker {
    spec: WorkerSpec,
    table: FlowTable,
    uring: Uring,
    media: MediaWorker,
    sockets: Sockets,
    installed: HashMap<FlowKey, Installed>,
    cursor: u64,
    /// Keys whose idle timeout fired in the last timer pass.
    idle: Vec<FlowKey>,
}

pub(crate) fn run(spec: WorkerSpec) -> Result<()> {
    if let Err(e) = edgeway_uring::pin_current_thread(spec.cpu) {
        eprintln!(
            "edgeway-dataplane: worker {} not pinned to cpu {}: {e}",
            spec.index, spec.cpu
        );
    }
    let table = match &spec.pin_dir {
        Some(pins) => edgeway_xdp::open_table(&spec.dir, Some(pins))
            .map(|(t, _)| t)
            .with_context(|| {
                format!(
                    "worker {}: opening the flow table with the XDP maps in {}",
                    spec.index,
                    pins.display()
                )
            })?,
        None => FlowTable::open_at(&spec.dir)
            .with_context(|| format!("worker {}: opening the flow table", spec.index))?,
    };
    let uring = Uring::new(&spec.uring)
        .with_context(|| format!("worker {}: creating its io_uring", spec.index))?;
    let media = MediaWorker::new(spec.config.clone());
    let mut w = Worker {
        spec,
        table,
        uring,
        media,
        sockets: Sockets::default(),
        installed: HashMap::new(),
        cursor: 0,
        idle: Vec::new(),
    };
    w.bind_demux_ports()?;
    w.rescan(unix_ms());
    w.run_loop()
}

impl Worker {
    fn owns(&self, entry: &FlowEntry) -> bool {
        entry.worker as usize % self.spec.workers == self.spec.index
    }

    fn bind_demux_ports(&mut self) -> Result<()> {
        if self.spec.config.role != Role::Edge {
            return Ok(());
        }
        for port in self.spec.config.demux_ports() {
            if self.spec.config.demux_owner(port, self.spec.workers) == self.spec.index {
                self.sockets
                    .acquire(&mut self.uring, self.spec.bind, port, true)?;
            }
        }
        Ok(())
    }

    /// Installs every entry this worker owns (start, restart, or change-log overrun).
    fn rescan(&mut self, now: u64) {
        self.cursor = self.table.change_cursor();
        let mut mine = Vec::new();
        for (slot, key, entry) in self.table.iter() {
            if self.owns(&entry) {
                mine.push((slot, key, entry));
            }
        }
        let live: std::collections::HashSet<FlowKey> = mine.iter().map(|m| m.1).collect();
        let stale: Vec<FlowKey> = self
            .installed
            .keys()
            .filter(|k| !live.contains(k))
            .copied()
            .collect();
        for key in stale {
            self.uninstall(key);
        }
        for (slot, key, entry) in mine {
            self.install(slot.index(), key, &entry, now);
        }
    }

    fn install(&mut self, slot: u32, key: FlowKey, entry: &FlowEntry, _now: u64) {
        if let Some(have) = self.installed.get(&key) {
            if have.generation == entry.generation {
                return;
            }
            self.uninstall(key);
        }
        let state = self.table.state(slot);
        let ports = [key.local_port, entry.out_local_port];
        let mut bound = 0;
        for &p in &ports {
            if p == 0 {
                continue;
            }
            match self
                .sockets
                .acquire(&mut self.uring, self.spec.bind, p, false)
            {
                Ok(()) => bound += 1,
                Err(e) => {
                    eprintln!(
                        "edgeway-dataplane: worker {}: {key:?}: {e:#}",
                        self.spec.index
                    );
                    for &q in &ports[..bound] {
                        self.sockets.release(&mut self.uring, q);
                    }
                    self.media.count_drop(DropReason::BadEntry);
                    return;
                }
            }
        }
        let resume = (state.generation == entry.generation).then_some(&state);
        if let Err(e) = self.media.install(slot, key, entry, resume) {
            eprintln!(
                "edgeway-dataplane: worker {}: {key:?}: {e}",
                self.spec.index
            );
            for &p in &ports {
                if p != 0 {
                    self.sockets.release(&mut self.uring, p);
                }
            }
            self.media.count_drop(DropReason::BadEntry);
            return;
        }
        if resume.is_some() {
            self.media
                .resume_counters(key, &self.table.counters(SlotRef::from(slot)));
        }
        self.installed.insert(
            key,
            Installed {
                generation: entry.generation,
                ports,
            },
        );
    }

    fn uninstall(&mut self, key: FlowKey) {
        let Some(have) = self.installed.remove(&key) else {
            return;
        };
        self.media.remove(key);
        for p in have.ports {
            if p != 0 {
                self.sockets.release(&mut self.uring, p);
            }
        }
    }

    /// Applies the table's change log since the last call.
    fn sync(&mut self, now: u64) {
        let mut changed: Vec<FlowKey> = Vec::new();
        let result = self
            .table
            .changes_since(self.cursor, &mut |c| changed.push(c.key));
        match result {
            edgeway_flowtable::ChangesResult::UpTo(cursor) => self.cursor = cursor,
            edgeway_flowtable::ChangesResult::Overrun => return self.rescan(now),
        }
        for key in changed {
            match self.table.lookup(&key) {
                Some((slot, entry)) if self.owns(&entry) => {
                    self.install(slot.index(), key, &entry, now)
                }
                _ => self.uninstall(key),
            }
        }
    }

    fn run_loop(&mut self) -> Result<()> {
        let mut next_sync = 0;
        let mut next_export = 0;
        let mut exporting = false;
        while !self.spec.stop.load(Ordering::Relaxed) {
            let now = unix_ms();
            if now >= next_sync {
                self.sync(now);
                self.timers(now);
                next_sync = now + SYNC_EVERY_MS;
            }
            if exporting || now >= next_export {
                if !exporting {
                    next_export = now + EXPORT_EVERY_MS;
                }
                exporting = self.export_some(EXPORT_CHUNK);
            }
            let media = &mut self.media;
            let sockets = &self.sockets;
            let mut stamp: Option<u64> = None;
            self.uring
                // An export pass under way goes on next turn even if no packet comes.
                .run_once(
                    Some(if exporting { Duration::ZERO } else { WAIT }),
                    &mut |dg| {
                        let now = *stamp.get_or_insert_with(unix_ms);
                        let port = sockets.port_of.get(dg.socket.index()).copied().unwrap_or(0);
                        match media.handle(now, port, dg.src, dg.buf, dg.len) {
                            Verdict::Send { from_port, to, len } => {
                                match sockets.id_of[usize::from(from_port)] {
                                    Some(from) => Disposition::Send { from, to, len },
                                    None => {
                                        media.count_drop(DropReason::SendFailed);
                                        Disposition::Recycle
                                    }
                                }
                            }
                            _ => Disposition::Recycle,
                        }
                    },
                )
                .context("io_uring")?;
        }
        self.export();
        Ok(())
    }

    /// Keepalives towards the edge, and removal of idle entries from the table (the table's
    /// change log then uninstalls them here, as for any other removal).
    fn timers(&mut self, now: u64) {
        let sockets = &self.sockets;
        let uring = &mut self.uring;
        let idle = &mut self.idle;
        self.media.poll_timer(now, &mut |action| match action {
            TimerAction::Keepalive { from_port, to } => {
                if let Some(id) = sockets.id_of[usize::from(from_port)] {
                    let _ = uring.send_copy(id, to, &[]);
                }
            }
            TimerAction::Idle { key, .. } => idle.push(key),
            _ => {}
        });
        if self.idle.is_empty() {
            return;
        }
        // The idle flag must reach the table before the entry goes, so that whoever lists the
        // removal can tell an idle timeout from a deletion.
        self.export();
        for key in std::mem::take(&mut self.idle) {
            if let Err(e) = self.table.remove(&key) {
                eprintln!(
                    "edgeway-dataplane: worker {}: removing idle {key:?}: {e}",
                    self.spec.index
                );
            }
        }
    }

    /// Exports every changed flow and the node's counter row.
    fn export(&mut self) {
        let table = &self.table;
        self.media.export(&mut |slot, state, counters| {
            write_flow(table, slot, state, counters);
        });
        self.write_node_row();
    }

    /// Exports up to `max` changed flows of the current pass; once the pass is done, the
    /// node's counter row too. Returns whether the pass has flows left.
    fn export_some(&mut self, max: usize) -> bool {
        let table = &self.table;
        let more = self.media.export_some(max, &mut |slot, state, counters| {
            write_flow(table, slot, state, counters);
        });
        if !more {
            self.write_node_row();
        }
        more
    }

    fn write_node_row(&self) {
        let mut row = self.media.node_counters();
        row.updated_ms = edgeway_flowtable::unix_ms();
        let _ = self.table.write_node_counters(self.spec.index, &row);
    }
}

/// Publishes one flow's exported state and counters.
fn write_flow(table: &FlowTable, slot: u32, state: &FlowState, counters: &FlowCounters) {
    table.write_state(slot, state);
    table.write_counters(slot, counters);
}
