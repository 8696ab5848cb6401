//! [`MediaWorker`]: the flows of one data-plane worker and what happens to each datagram.

use std::net::{Ipv4Addr, SocketAddrV4};

use edgeway_map_schema::{
    flags, Action, DropReason, Endpoint, FlowCounters, FlowEntry, FlowKey, FlowState, NodeCounters,
};
use edgeway_srtp::{rekey_rtcp, rekey_rtp, rtcp, rtp, Error as SrtpError};

use crate::flow::LocalFlow;
use crate::index::{DemuxMap, PortIndex};
use crate::{InstallError, MediaConfig, Role};

/// What to do with a datagram after [`MediaWorker::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Send `buf[..len]` from local port `from_port` to `to`.
    Send {
        /// Local UDP port to send from.
        from_port: u16,
        /// Destination.
        to: SocketAddrV4,
        /// Length of the datagram to send (re-keying changes it).
        len: usize,
    },
    /// Nothing to send: the datagram was a keepalive, counted.
    Consumed,
    /// Dropped for this reason (counted on the entry and node-wide).
    Drop(DropReason),
}

/// Something [`MediaWorker::poll_timer`] asks the caller to do or know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimerAction {
    /// Send a zero-length datagram from `from_port` to `to` (keeps a firewall pinhole open).
    Keepalive {
        /// Local UDP port to send from.
        from_port: u16,
        /// Destination.
        to: SocketAddrV4,
    },
    /// The entry received nothing for its `idle_timeout_ms` (reported once per idle spell).
    Idle {
        /// The entry's slot in the flow table.
        slot: u32,
        /// The entry's key.
        key: FlowKey,
    },
}

/// The media logic of one data-plane worker: its flows, indexed for O(1) lookup, and the
/// per-packet, timer and export operations on them. See the crate docs for how to drive it.
#[derive(Debug)]
pub struct MediaWorker {
    config: MediaConfig,
    /// First demultiplexing port and how many (0 on the core, which listens on none).
    demux_first: u16,
    demux_ports: u16,
    ports: PortIndex,
    demux: DemuxMap,
    flows: Vec<Option<LocalFlow>>,
    free: Vec<u32>,
    /// Per arena index: listed in `dirty` or `exporting`. Each index is listed at most once,
    /// so neither list outgrows the capacity reserved on install.
    in_dirty: Vec<bool>,
    dirty: Vec<u32>,
    /// The export pass under way: `dirty` as it was when the pass began, drained a chunk at a
    /// time (flows that change meanwhile go to `dirty`, for the next pass, unless listed here).
    exporting: Vec<u32>,
    node: NodeCounters,
    /// No timer work is due before this (a lower bound: traffic only pushes deadlines later).
    next_deadline: u64,
}

#[inline]
fn socket(e: &Endpoint) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(e.ip), e.port)
}

#[inline]
fn srtp_drop(e: SrtpError) -> DropReason {
    match e {
        SrtpError::AuthFailed => DropReason::AuthFailed,
        SrtpError::Replayed { .. } | SrtpError::TooOld { .. } => DropReason::Replay,
        SrtpError::Rtp(_) | SrtpError::Rtcp(_) => DropReason::Malformed,
        _ => DropReason::SrtpError,
    }
}

impl MediaWorker {
    /// A worker with no flows. The configuration should have passed
    /// [`MediaConfig::validate`]; the demultiplexing ports only apply to [`Role::Edge`].
    pub fn new(config: MediaConfig) -> Self {
        let (demux_first, pairs) = config.demux_pairs();
        let demux_ports = match config.role {
            Role::Edge => pairs * 2,
            Role::Core => 0,
        };
        MediaWorker {
            config,
            demux_first,
            demux_ports,
            ports: PortIndex::new(),
            demux: DemuxMap::new(),
            flows: Vec::new(),
            free: Vec::new(),
            in_dirty: Vec::new(),
            dirty: Vec::new(),
            exporting: Vec::new(),
            node: NodeCounters::default(),
            next_deadline: u64::MAX,
        }
    }

    /// The configuration the worker was built with.
    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// Number of installed flows.
    pub fn len(&self) -> usize {
        self.flows.len() - self.free.len()
    }

    /// Whether no flow is installed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether packets to `port` are looked up by their source (an edge's demultiplexing port).
    #[inline]
    fn is_demux_port(&self, port: u16) -> bool {
        port.wrapping_sub(self.demux_first) < self.demux_ports
    }

    #[inline]
    fn lookup(&self, key: &FlowKey) -> Option<u32> {
        if key.is_demux() {
            self.demux.get(key)
        } else {
            self.ports.get(key.local_port)
        }
    }

    #[inline]
    fn mark_dirty(in_dirty: &mut [bool], dirty: &mut Vec<u32>, index: u32) {
        let seen = &mut in_dirty[index as usize];
        if !*seen {
            *seen = true;
            // Never reallocates: capacity covers every arena index (reserved on install).
            dirty.push(index);
        }
    }

    /// Installs (or replaces) the flow for `key` from its table entry, as flow-table slot
    /// `slot`. With `state` of the same `entry.generation`, the flow resumes from it (latched
    /// source, SRTP replay and rollover state of both directions, statistics). Replacing a
    /// flow of the same generation keeps its live state; a new generation starts afresh
    /// except for the SRTP state of a direction whose parameters it kept (the counters of the
    /// key carry on). On error nothing is installed for `key`.
    pub fn install(
        &mut self,
        slot: u32,
        key: FlowKey,
        entry: &FlowEntry,
        state: Option<&FlowState>,
    ) -> Result<(), InstallError> {
        let existing = self.lookup(&key);
        if let Some(old) = existing.and_then(|i| self.flows[i as usize].as_mut()) {
            if old.entry == *entry {
                old.slot = slot;
                return Ok(());
            }
        }
        let built = if key.is_demux() != self.is_demux_port(key.local_port) {
            Err(InstallError::KeyKind { key })
        } else {
            LocalFlow::build(slot, key, entry)
        };
        let mut flow = match built {
            Ok(flow) => flow,
            Err(e) => {
                self.remove(key);
                return Err(e);
            }
        };
        let index = match existing {
            Some(index) => {
                if let Some(old) = self.flows[index as usize].as_mut() {
                    if old.entry.generation == entry.generation {
                        old.snapshot();
                        flow.resume(&old.state);
                        flow.idle_since = old.idle_since;
                        flow.keepalive_pending = old.keepalive_pending;
                    } else if let Some(s) = state.filter(|s| s.generation == entry.generation) {
                        flow.resume(s);
                    } else {
                        flow.carry_srtp(old);
                    }
                    flow.counters = old.counters;
                }
                self.flows[index as usize] = Some(flow);
                index
            }
            None => {
                if let Some(s) = state.filter(|s| s.generation == entry.generation) {
                    flow.resume(s);
                }
                let index = match self.free.pop() {
                    Some(i) => {
                        self.flows[i as usize] = Some(flow);
                        i
                    }
                    None => {
                        self.flows.push(Some(flow));
                        self.in_dirty.push(false);
                        (self.flows.len() - 1) as u32
                    }
                };
                if key.is_demux() {
                    self.demux.insert(&key, index);
                } else {
                    self.ports.set(key.local_port, index);
                }
                index
            }
        };
        let want = self.flows.len();
        for list in [&mut self.dirty, &mut self.exporting] {
            if list.capacity() < want {
                list.reserve(want - list.len());
            }
        }
        Self::mark_dirty(&mut self.in_dirty, &mut self.dirty, index);
        // A keepalive is owed and the idle clock starts: run the timer soon.
        self.next_deadline = 0;
        self.node.flows = self.len() as u64;
        Ok(())
    }

    /// Continues the counters of `key` from exported values (after a restart, so the table's
    /// counters do not fall back to zero). Returns false when `key` is not installed.
    pub fn resume_counters(&mut self, key: FlowKey, counters: &FlowCounters) -> bool {
        let Some(index) = self.lookup(&key) else {
            return false;
        };
        let Some(flow) = self.flows[index as usize].as_mut() else {
            return false;
        };
        flow.counters = *counters;
        Self::mark_dirty(&mut self.in_dirty, &mut self.dirty, index);
        true
    }

    /// Removes the flow for `key`; its packets then count as [`DropReason::NoFlow`]. Returns
    /// whether there was one.
    pub fn remove(&mut self, key: FlowKey) -> bool {
        let Some(index) = self.lookup(&key) else {
            return false;
        };
        if key.is_demux() {
            self.demux.remove(&key);
        } else {
            self.ports.clear(key.local_port);
        }
        self.flows[index as usize] = None;
        self.free.push(index);
        self.node.flows = self.len() as u64;
        true
    }

    /// Counters of the flow for `key`, if installed.
    pub fn counters(&self, key: FlowKey) -> Option<&FlowCounters> {
        let index = self.lookup(&key)?;
        self.flows[index as usize].as_ref().map(|f| &f.counters)
    }

    /// Counts a drop that happened outside the worker (a failed send) node-wide.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.node.drops[reason.index()] += 1;
    }

    /// The worker's node-wide counters.
    pub fn node_counters(&self) -> NodeCounters {
        self.node
    }

    /// Decides the fate of the datagram `buf[..len]` that arrived at `local_port` from `src`
    /// at `now_ms`. Re-keying works in place and may grow the packet into `buf[len..]`
    /// (at most `edgeway_srtp::MAX_TRAILER_LEN` bytes); on [`Verdict::Send`] the caller sends
    /// `buf[..len]` of the verdict. Never allocates, never panics on packet content.
    pub fn handle(
        &mut self,
        now_ms: u64,
        local_port: u16,
        src: SocketAddrV4,
        buf: &mut [u8],
        len: usize,
    ) -> Verdict {
        self.node.rx_packets += 1;
        self.node.rx_bytes += len as u64;
        let key = if self.is_demux_port(local_port) {
            FlowKey::demux(local_port, src.ip().octets(), src.port())
        } else {
            FlowKey::port(local_port)
        };
        let Some(index) = self.lookup(&key) else {
            self.node.drops[DropReason::NoFlow.index()] += 1;
            return Verdict::Drop(DropReason::NoFlow);
        };
        // Where the packet would go, read before the flow is borrowed for writing: fixed, or
        // the source the peer entry latched.
        let Some(flow) = self.flows[index as usize].as_ref() else {
            self.node.drops[DropReason::NoFlow.index()] += 1;
            return Verdict::Drop(DropReason::NoFlow);
        };
        let dest = if flow.entry.out_remote.is_set() {
            Some(socket(&flow.entry.out_remote))
        } else {
            self.lookup(&flow.entry.peer)
                .and_then(|p| self.flows[p as usize].as_ref())
                .filter(|p| p.state.latched != 0)
                .map(|p| socket(&p.state.latched_src))
        };
        Self::mark_dirty(&mut self.in_dirty, &mut self.dirty, index);
        let Some(flow) = self.flows[index as usize].as_mut() else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let verdict = process(flow, now_ms, src, buf, len, dest, &mut self.next_deadline);
        match verdict {
            Verdict::Send { len, .. } => {
                flow.counters.tx_packets += 1;
                flow.counters.tx_bytes += len as u64;
                self.node.tx_packets += 1;
                self.node.tx_bytes += len as u64;
            }
            Verdict::Consumed => self.node.keepalives_rx += 1,
            Verdict::Drop(reason) => {
                flow.counters.drops[reason.index()] += 1;
                self.node.drops[reason.index()] += 1;
            }
        }
        verdict
    }

    /// Runs the timers due at `now_ms`: keepalives of [`flags::KEEPALIVE`] entries with a fixed
    /// `out_remote` (at install, then after `keepalive_ms` without sending) and idle marking
    /// (the idle clock of a flow that never received starts at the first poll after install). Call it at
    /// [`MediaWorker::next_timeout`] (or more often); it returns at once when nothing is due.
    pub fn poll_timer(&mut self, now_ms: u64, out: &mut impl FnMut(TimerAction)) {
        if now_ms < self.next_deadline {
            return;
        }
        let mut next = u64::MAX;
        for (index, slot) in self.flows.iter_mut().enumerate() {
            let Some(flow) = slot else { continue };
            let since = *flow.idle_since.get_or_insert(now_ms);
            let mut changed = false;
            if flow.entry.has(flags::KEEPALIVE)
                && flow.entry.out_remote.is_set()
                && flow.action != Action::Drop
                && (flow.keepalive_pending
                    || now_ms >= flow.state.last_tx_ms.saturating_add(flow.keepalive_ms))
            {
                out(TimerAction::Keepalive {
                    from_port: flow.entry.out_local_port,
                    to: socket(&flow.entry.out_remote),
                });
                flow.keepalive_pending = false;
                flow.state.last_tx_ms = now_ms;
                flow.counters.keepalives_tx += 1;
                self.node.keepalives_tx += 1;
                changed = true;
            }
            let timeout = u64::from(flow.entry.idle_timeout_ms);
            if timeout != 0
                && flow.state.idle == 0
                && now_ms >= since.max(flow.state.last_rx_ms).saturating_add(timeout)
            {
                flow.state.idle = 1;
                out(TimerAction::Idle {
                    slot: flow.slot,
                    key: flow.key,
                });
                changed = true;
            }
            if changed {
                Self::mark_dirty(&mut self.in_dirty, &mut self.dirty, index as u32);
            }
            next = next.min(flow.deadline());
        }
        self.next_deadline = next;
    }

    /// When [`MediaWorker::poll_timer`] next has work (ms, same clock as `now_ms`), if ever.
    /// Never later than the real deadline; traffic may make it early.
    pub fn next_timeout(&self) -> Option<u64> {
        (self.next_deadline != u64::MAX).then_some(self.next_deadline)
    }

    /// Hands `out(slot, state, counters)` every flow whose state or counters changed since
    /// the last export, with its SRTP checkpoints (highest index and the 128 recent replay
    /// bits of both directions) and RTP statistics brought up to date. Allocates nothing.
    pub fn export(&mut self, out: &mut impl FnMut(u32, &FlowState, &FlowCounters)) {
        while self.export_some(usize::MAX, out) || !self.dirty.is_empty() {}
    }

    /// One step of an export pass: at most `max` of the flows that had changed when the pass
    /// began (a pass begins when none is under way). Returns whether the pass has flows left.
    /// A worker with thousands of active flows exports them a chunk per turn of its loop, so
    /// no packet waits behind the whole table's export; a flow changing during the pass is
    /// exported by it if it is still listed, else by the next.
    pub fn export_some(
        &mut self,
        max: usize,
        out: &mut impl FnMut(u32, &FlowState, &FlowCounters),
    ) -> bool {
        if self.exporting.is_empty() {
            std::mem::swap(&mut self.dirty, &mut self.exporting);
        }
        for _ in 0..max {
            let Some(index) = self.exporting.pop() else {
                return false;
            };
            self.in_dirty[index as usize] = false;
            if let Some(flow) = self.flows[index as usize].as_mut() {
                flow.snapshot();
                out(flow.slot, &flow.state, &flow.counters);
            }
        }
        !self.exporting.is_empty()
    }
}

/// The per-packet decision for one flow (counters of the verdict are the caller's).
#[inline]
fn process(
    flow: &mut LocalFlow,
    now_ms: u64,
    src: SocketAddrV4,
    buf: &mut [u8],
    len: usize,
    dest: Option<SocketAddrV4>,
    next_deadline: &mut u64,
) -> Verdict {
    flow.counters.rx_packets += 1;
    flow.counters.rx_bytes += len as u64;
    let Some(packet) = buf.get(..len) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    let entry = &flow.entry;
    let latching = entry.has(flags::LATCH);
    let src_ep = Endpoint::new(src.ip().octets(), src.port());
    let latched = flow.state.latched != 0;
    // Whether the source may send here; Some(true) when it would latch.
    let source_ok = if !latching {
        Some(false)
    } else if latched {
        (flow.state.latched_src == src_ep).then_some(false)
    } else {
        (entry.has(flags::LATCH_ANY_SOURCE) || entry.permit_ip == src_ep.ip).then_some(true)
    };
    if len == 0 {
        flow.counters.keepalives_rx += 1;
        if source_ok == Some(false) {
            touch(flow, now_ms, next_deadline);
        }
        return Verdict::Consumed;
    }
    if flow.action == Action::Drop {
        return Verdict::Drop(DropReason::ActionDrop);
    }
    let rtcp_entry = entry.has(flags::RTCP);
    let is_rtcp = rtcp_entry || rtp::is_rtcp(packet);
    let ssrc = if is_rtcp {
        match rtcp::check_first_header(packet) {
            Ok(ssrc) => ssrc,
            Err(_) => return Verdict::Drop(DropReason::Malformed),
        }
    } else {
        if rtp::header_len(packet).is_err() {
            return Verdict::Drop(DropReason::Malformed);
        }
        u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]])
    };
    let Some(latch_now) = source_ok else {
        return Verdict::Drop(DropReason::ForeignSource);
    };
    // The SSRC lock applies to the entry's own kind of packet (RTP, or RTCP on an RTCP port).
    let primary = is_rtcp == rtcp_entry;
    if entry.has(flags::SSRC_LOCK)
        && primary
        && flow.ssrc_latched
        && ssrc != flow.state.latched_ssrc
    {
        return Verdict::Drop(DropReason::WrongSsrc);
    }
    if dest.is_none() && !latch_now {
        // Nowhere to send and nothing to learn: spare the crypto.
        return Verdict::Drop(DropReason::NotLatched);
    }
    // The RTP header is in clear under SRTP: read it before re-keying.
    let (seq, timestamp) = if is_rtcp {
        (0, 0)
    } else {
        (
            u16::from_be_bytes([packet[2], packet[3]]),
            u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        )
    };
    let out_len = match flow.action {
        Action::Rekey => {
            let rekeyed = if is_rtcp {
                rekey_rtcp(&mut flow.crypto_in, &mut flow.crypto_out, buf, len)
            } else {
                rekey_rtp(&mut flow.crypto_in, &mut flow.crypto_out, buf, len)
            };
            match rekeyed {
                Ok(n) => n,
                Err(e) => return Verdict::Drop(srtp_drop(e)),
            }
        }
        _ => len,
    };
    // Only a packet that authenticated (or, relayed, parsed) reaches this point: forged
    // packets cannot take the latch.
    if latch_now {
        flow.state.latched = 1;
        flow.state.latched_src = src_ep;
    }
    if latching && primary && !flow.ssrc_latched {
        flow.state.latched_ssrc = ssrc;
        flow.ssrc_latched = true;
    }
    if primary {
        flow.checkpoint_ssrc = Some(ssrc);
    }
    touch(flow, now_ms, next_deadline);
    let Some(to) = dest else {
        return Verdict::Drop(DropReason::NotLatched);
    };
    if !is_rtcp {
        let arrival = (now_ms.wrapping_mul(flow.clock_rate) / 1000) as u32;
        flow.rtp.update(ssrc, seq, timestamp, arrival);
    }
    flow.state.last_tx_ms = now_ms;
    Verdict::Send {
        from_port: flow.entry.out_local_port,
        to,
        len: out_len,
    }
}

/// Records liveness; an idle flow wakes up and its idle timer runs again.
#[inline]
fn touch(flow: &mut LocalFlow, now_ms: u64, next_deadline: &mut u64) {
    flow.state.last_rx_ms = now_ms;
    if flow.state.idle != 0 {
        flow.state.idle = 0;
        *next_deadline = (*next_deadline).min(flow.deadline());
    }
}
