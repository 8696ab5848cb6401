//! The flow table's keys and values: the one contract between the control plane (writes
//! flows), the XDP program and the data-plane workers (read them, write state and counters
//! back) and `edgewayctl` (reads everything).
//!
//! Every type here is `#[repr(C)]`, made only of fixed-width integers and byte arrays, with
//! explicit padding fields and a compile-time size check, so that the same bytes mean the
//! same thing in a BPF map, in the shared-memory backend under `/dev/shm/edgeway/<node>/`
//! and in C (`media.bpf.c` is checked against these sizes and offsets). All-zero is a valid
//! value of every type. Integers are in host byte order except IPv4 addresses, which are
//! kept as the four bytes of the packet (`[u8; 4]`, network order).
//!
//! The table holds one [`FlowEntry`] per *ingress*: the packets that arrive at one local UDP
//! port (and, on a demultiplexing port, from one remote address and port). A media stream
//! between two parties is two entries, one per direction, each naming the other as its
//! `peer`; RTCP on its own port is two more, flagged [`flags::RTCP`].
//!
//! Written by the control plane: [`FlowKey`] and [`FlowEntry`]. Written by the worker that
//! owns the entry (single writer): [`FlowState`] and [`FlowCounters`].
#![no_std]
#![forbid(unsafe_code)]

use core::mem::size_of;

/// Bumped whenever a type here changes size or meaning; stored in every table header so a
/// process built against another layout refuses to open it.
pub const SCHEMA_VERSION: u32 = 2;

/// Default media port range (seed guide, port reference).
pub const MEDIA_PORT_MIN: u16 = 36000;
/// Upper end (inclusive) of the default media port range.
pub const MEDIA_PORT_MAX: u16 = 59999;
/// Demultiplexing RTP port on small and medium systems (RTCP is the next port).
pub const DEMUX_RTP_PORT: u16 = 2776;
/// Demultiplexing pairs on large systems: 36000/36001 ... 36010/36011.
pub const LARGE_DEMUX_PAIRS: u16 = 6;

/// An IPv4 address as the four bytes of the packet.
pub type Ipv4Bytes = [u8; 4];

/// Which packets an entry is for: those arriving at `local_port` (from `remote_ip:remote_port`
/// on a demultiplexing port; zero remote on every other port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Remote IPv4 address; 0.0.0.0 unless the local port is a demultiplexing port.
    pub remote_ip: Ipv4Bytes,
    /// Local UDP port the packet arrived at.
    pub local_port: u16,
    /// Remote UDP port; 0 unless the local port is a demultiplexing port.
    pub remote_port: u16,
}

impl FlowKey {
    /// The key of every packet that arrives at `local_port` (not a demultiplexing port).
    pub const fn port(local_port: u16) -> Self {
        FlowKey {
            remote_ip: [0; 4],
            local_port,
            remote_port: 0,
        }
    }

    /// The key of packets from `remote_ip:remote_port` arriving at demultiplexing port
    /// `local_port`.
    pub const fn demux(local_port: u16, remote_ip: Ipv4Bytes, remote_port: u16) -> Self {
        FlowKey {
            remote_ip,
            local_port,
            remote_port,
        }
    }

    /// Whether this key names a remote (a demultiplexing key).
    pub const fn is_demux(&self) -> bool {
        self.remote_port != 0
    }
}

/// An IPv4 address and UDP port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// IPv4 address.
    pub ip: Ipv4Bytes,
    /// UDP port; 0 means "not known yet".
    pub port: u16,
    /// Padding; zero.
    pub _pad: u16,
}

impl Endpoint {
    /// An endpoint from address bytes and port.
    pub const fn new(ip: Ipv4Bytes, port: u16) -> Self {
        Endpoint { ip, port, _pad: 0 }
    }

    /// Whether the port is known.
    pub const fn is_set(&self) -> bool {
        self.port != 0
    }
}

/// What is done with a packet that matches an entry (`FlowEntry::action`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Count and drop (a flow being torn down, or blocked by the control plane).
    Drop = 0,
    /// Send on unchanged (the edge: client <-> demultiplexing port; no crypto there).
    Relay = 1,
    /// Unprotect with `srtp_in`, protect with `srtp_out` (the core: SRTP <-> SRTP or RTP).
    Rekey = 2,
}

impl Action {
    /// The action with this wire value.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Action::Drop),
            1 => Some(Action::Relay),
            2 => Some(Action::Rekey),
            _ => None,
        }
    }
}

/// Bits of `FlowEntry::flags`.
pub mod flags {
    /// Latch the source of the first valid packet; the peer entry sends to it.
    pub const LATCH: u16 = 1 << 0;
    /// Latch from any source address, not only `permit_ip` (the signaling source).
    pub const LATCH_ANY_SOURCE: u16 = 1 << 1;
    /// The entry carries RTCP/SRTCP (a port of its own, odd).
    pub const RTCP: u16 = 1 << 2;
    /// Once latched, drop packets with another SSRC (counted as `WrongSsrc`).
    pub const SSRC_LOCK: u16 = 1 << 3;
    /// Keep the path to `out_remote` open: the owning worker sends a zero-length datagram
    /// from `out_local_port` when the flow is installed and whenever nothing was sent for
    /// `FlowEntry::keepalive_ms` (the core towards the edge's demultiplexing port).
    pub const KEEPALIVE: u16 = 1 << 4;
    /// All bits defined so far; others must be zero.
    pub const ALL: u16 = LATCH | LATCH_ANY_SOURCE | RTCP | SSRC_LOCK | KEEPALIVE;
}

/// SRTP keying for one direction of one entry (`suite` 0: plain RTP/RTCP).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SrtpParams {
    /// 0 for plain RTP; otherwise `edgeway_srtp::SrtpProfile::id()` (1..=6).
    pub suite: u8,
    /// MKI length in bytes (0..=4).
    pub mki_len: u8,
    /// Replay window in packets; 0 means the engine's default (1024).
    pub replay_window: u16,
    /// MKI value, first `mki_len` bytes.
    pub mki: [u8; 4],
    /// Master key, first 16 or 32 bytes (by suite).
    pub key: [u8; 32],
    /// Master salt, first 14 or 12 bytes (by suite).
    pub salt: [u8; 14],
    /// Padding; zero.
    pub _pad: [u8; 2],
}

impl SrtpParams {
    /// Plain RTP/RTCP: no protection.
    pub const PLAIN: SrtpParams = SrtpParams {
        suite: 0,
        mki_len: 0,
        replay_window: 0,
        mki: [0; 4],
        key: [0; 32],
        salt: [0; 14],
        _pad: [0; 2],
    };

    /// Whether this direction is plain RTP.
    pub const fn is_plain(&self) -> bool {
        self.suite == 0
    }
}

/// One ingress of one flow, written by the control plane.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowEntry {
    /// The flow (call media stream) this entry belongs to; both directions share it.
    pub flow_id: u64,
    /// When the control plane created the entry (Unix milliseconds).
    pub created_ms: u64,
    /// Bumped on every update of this key; a worker resets its state when it changes.
    pub generation: u32,
    /// No packet for this long (ms) marks the entry idle; 0 means never.
    pub idle_timeout_ms: u32,
    /// [`Action`] as `u8`.
    pub action: u8,
    /// Padding; zero.
    pub _pad0: u8,
    /// [`flags`] bits.
    pub flags: u16,
    /// Index of the worker that owns this entry (its sockets, state and counters).
    pub worker: u32,
    /// The only source address allowed to latch (the client's signaling address), unless
    /// [`flags::LATCH_ANY_SOURCE`].
    pub permit_ip: Ipv4Bytes,
    /// RTP clock rate of the stream for jitter (Hz); 0 means 8000.
    pub clock_rate: u32,
    /// Send from this local UDP port.
    pub out_local_port: u16,
    /// Padding; zero.
    pub _pad1: u16,
    /// Send to this endpoint; port 0 means "to the source latched by `peer`".
    pub out_remote: Endpoint,
    /// The entry of the opposite direction (whose latched source we send to).
    pub peer: FlowKey,
    /// Keepalive interval for [`flags::KEEPALIVE`] (ms); 0 means 5000.
    pub keepalive_ms: u32,
    /// How packets arriving here are protected.
    pub srtp_in: SrtpParams,
    /// How they leave.
    pub srtp_out: SrtpParams,
}

impl FlowEntry {
    /// The entry's action, if its byte is valid.
    pub const fn action(&self) -> Option<Action> {
        Action::from_u8(self.action)
    }

    /// Whether `flag` (one of [`flags`]) is set.
    pub const fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// Why a packet was dropped: the index into `FlowCounters::drops` and node-wide counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// No entry for the destination (node-wide only).
    NoFlow = 0,
    /// Not RTP/RTCP (version, lengths, header extension, padding) or not IPv4/UDP.
    Malformed = 1,
    /// Source not allowed: latching refused, or a latched entry hit from elsewhere.
    ForeignSource = 2,
    /// Nowhere to send yet: the peer has not latched.
    NotLatched = 3,
    /// SRTP/SRTCP authentication failed (forged, wrong key).
    AuthFailed = 4,
    /// Replayed, or older than the replay window.
    Replay = 5,
    /// Another SSRC on an [`flags::SSRC_LOCK`] entry.
    WrongSsrc = 6,
    /// Other SRTP refusal (unknown MKI, too short for the tag, bad SRTCP index).
    SrtpError = 7,
    /// The entry's action is `Drop`, or it is being removed.
    ActionDrop = 8,
    /// Source in the blocked-addresses map (intrusion protection).
    BlockedSource = 9,
    /// The send failed or no send slot was free.
    SendFailed = 10,
    /// The entry's SRTP parameters are unusable (unknown suite, bad key length).
    BadEntry = 11,
}

/// Number of [`DropReason`] values: the length of drop counter arrays.
pub const DROP_REASONS: usize = 12;

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::NoFlow,
        DropReason::Malformed,
        DropReason::ForeignSource,
        DropReason::NotLatched,
        DropReason::AuthFailed,
        DropReason::Replay,
        DropReason::WrongSsrc,
        DropReason::SrtpError,
        DropReason::ActionDrop,
        DropReason::BlockedSource,
        DropReason::SendFailed,
        DropReason::BadEntry,
    ];

    /// Stable lower-case name, for CLIs, logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::NoFlow => "no_flow",
            DropReason::Malformed => "malformed",
            DropReason::ForeignSource => "foreign_source",
            DropReason::NotLatched => "not_latched",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replay => "replay",
            DropReason::WrongSsrc => "wrong_ssrc",
            DropReason::SrtpError => "srtp_error",
            DropReason::ActionDrop => "action_drop",
            DropReason::BlockedSource => "blocked_source",
            DropReason::SendFailed => "send_failed",
            DropReason::BadEntry => "bad_entry",
        }
    }

    /// Index into drop counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// `accumulate(&mut self, other)`: adds every listed `u64` field and the `drops` array of
/// `other` to `self`, saturating (rows come from shared memory or per-CPU copies, which may
/// hold anything); fields after `latest:` take the larger of the two instead.
macro_rules! accumulate {
    ($ty:ty, $doc:literal, $($field:ident),+ $(; latest: $($latest:ident),+)?) => {
        #[doc = concat!("Adds `other` to `self` field by field (", $doc, "), saturating.")]
        pub fn accumulate(&mut self, other: &$ty) {
            $( self.$field = self.$field.saturating_add(other.$field); )+
            for (a, b) in self.drops.iter_mut().zip(other.drops) {
                *a = a.saturating_add(b);
            }
            $($( self.$latest = self.$latest.max(other.$latest); )+)?
        }
    };
}

/// Packet and byte counters of one entry (ingress), written only by its owning worker.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Packets received for this entry (before any drop).
    pub rx_packets: u64,
    /// Bytes (UDP payload) received.
    pub rx_bytes: u64,
    /// Packets sent on.
    pub tx_packets: u64,
    /// Bytes sent on (after re-keying).
    pub tx_bytes: u64,
    /// Zero-length keepalive datagrams received (consumed, not relayed).
    pub keepalives_rx: u64,
    /// Keepalives sent for [`flags::KEEPALIVE`].
    pub keepalives_tx: u64,
    /// Drops by [`DropReason`] index.
    pub drops: [u64; DROP_REASONS],
}

impl FlowCounters {
    accumulate!(
        FlowCounters,
        "an entry's per-CPU copies",
        rx_packets,
        rx_bytes,
        tx_packets,
        tx_bytes,
        keepalives_rx,
        keepalives_tx
    );
}

/// Node-wide counters of one worker (its row), written only by that worker.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Packets received (all of the worker's sockets, before any drop).
    pub rx_packets: u64,
    /// Bytes (UDP payload) received.
    pub rx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Zero-length keepalives received.
    pub keepalives_rx: u64,
    /// Keepalives sent.
    pub keepalives_tx: u64,
    /// Drops by [`DropReason`] index (including [`DropReason::NoFlow`]).
    pub drops: [u64; DROP_REASONS],
    /// Entries the worker has installed.
    pub flows: u64,
    /// When the worker last wrote this row (Unix ms).
    pub updated_ms: u64,
}

/// Sum of counters that saturates instead of wrapping: counters are read from shared memory,
/// which a crashed or hostile writer may have left holding anything.
pub fn saturating_sum(values: &[u64]) -> u64 {
    values.iter().fold(0, |a, b| a.saturating_add(*b))
}

impl NodeCounters {
    /// Sum of all drops (saturating: rows come from shared memory, which may be damaged).
    pub fn total_drops(&self) -> u64 {
        saturating_sum(&self.drops)
    }

    accumulate!(
        NodeCounters,
        "totals over workers",
        rx_packets,
        rx_bytes,
        tx_packets,
        tx_bytes,
        keepalives_rx,
        keepalives_tx,
        flows;
        latest: updated_ms
    );
}

/// Resumable SRTP state of one direction of one entry (one SSRC): enough for a restarted
/// worker to continue with no replay or rollover errors.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrtpCheckpoint {
    /// 1 when the rest is meaningful.
    pub valid: u32,
    /// The stream's SSRC.
    pub ssrc: u32,
    /// Highest index accepted or protected (SRTP: ROC << 16 | SEQ; SRTCP: the index).
    pub highest_index: u64,
    /// Replay bits of the 128 indices up to `highest_index` (bit i: highest_index - i seen);
    /// older indices are treated as seen on restore.
    pub recent: [u64; 2],
}

/// RFC 3550 receive statistics of the stream arriving at one entry (appendix A.1, A.8).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtpStats {
    /// SSRC the statistics are for (the latest one seen).
    pub ssrc: u32,
    /// First extended sequence number seen.
    pub base_seq: u32,
    /// Highest extended sequence number seen (cycles << 16 | max_seq).
    pub ext_max_seq: u32,
    /// Interarrival jitter estimate, in RTP timestamp units, times 16 (RFC 3550 A.8).
    pub jitter_q4: u32,
    /// Packets received (valid RTP).
    pub received: u64,
    /// Packets lost: expected - received, clamped at zero.
    pub lost: u64,
    /// Relative transit time of the last packet (A.8), RTP units.
    pub last_transit: i32,
    /// Padding; zero.
    pub _pad: u32,
}

/// Per-entry state written by the owning worker: latching, liveness, SRTP checkpoints,
/// receive statistics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// The entry generation this state belongs to; anything else is stale.
    pub generation: u32,
    /// 1 once a source has latched.
    pub latched: u32,
    /// The latched source.
    pub latched_src: Endpoint,
    /// SSRC latched with the source (for [`flags::SSRC_LOCK`]).
    pub latched_ssrc: u32,
    /// 1 once the entry has been idle for its `idle_timeout_ms`.
    pub idle: u32,
    /// Last packet received (Unix ms).
    pub last_rx_ms: u64,
    /// Last packet or keepalive sent (Unix ms).
    pub last_tx_ms: u64,
    /// Inbound (unprotect) SRTP checkpoint.
    pub srtp_in: SrtpCheckpoint,
    /// Outbound (protect) SRTP checkpoint.
    pub srtp_out: SrtpCheckpoint,
    /// Receive statistics.
    pub rtp: RtpStats,
    /// Above every SRTCP index the outbound leg has sent (all SSRCs, muxed RTCP included;
    /// 0 = none known). A restored worker starts SRTCP streams it holds no checkpoint for
    /// past it, so it never reuses an index (and keystream) it sent before the restart.
    pub srtcp_out_next: u64,
}

/// Most demultiplexing ports the XDP program knows (six RTP/RTCP pairs on large systems).
pub const XDP_MAX_DEMUX_PORTS: usize = 12;

/// Bits of [`XdpConfig::mode`].
pub mod xdp_mode {
    /// Relay [`Action::Relay`](super::Action::Relay) entries in the kernel (the edge); when
    /// clear they pass to the workers' sockets.
    pub const RELAY: u32 = 1 << 0;
    /// Redirect [`Action::Rekey`](super::Action::Rekey) packets to the CPU of the worker that
    /// owns the entry (`worker_cpus`, CPUMAP); when clear they pass to the stack where they
    /// arrived.
    pub const STEER: u32 = 1 << 1;
    /// All bits defined so far.
    pub const ALL: u32 = RELAY | STEER;
}

/// The XDP program's settings: the `config` map's only entry, written by the loader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// Lowest media port (inclusive).
    pub media_port_min: u16,
    /// Highest media port (inclusive).
    pub media_port_max: u16,
    /// Demultiplexing ports (RTP and RTCP); 0 marks an unused slot.
    pub demux_ports: [u16; XDP_MAX_DEMUX_PORTS],
    /// [`xdp_mode`] bits.
    pub mode: u32,
    /// No-flow drops within this window (ns) are reported as one event; 0 means 100 ms.
    pub noflow_window_ns: u64,
}

/// Latching done by the XDP program for one entry (the `latches` map). `word` is read and
/// compare-and-swapped as one 64-bit value, so no reader sees half a latch: the source IPv4
/// address in its packet bytes (bits 0-31, as the host reads them), the source port (bits
/// 32-47, host order) and the low 16 bits of the entry generation it was latched under
/// (bits 48-63). A port of zero, or another generation, means "not latched".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpLatch {
    /// Source address, port and generation, packed as above.
    pub word: u64,
    /// SSRC of the first latched packet (for [`flags::SSRC_LOCK`]).
    pub ssrc: u32,
    /// Padding; zero.
    pub _pad: u32,
}

impl XdpLatch {
    /// The packed word for `src` latched under entry generation `generation`.
    pub const fn pack(src: Endpoint, generation: u32) -> u64 {
        u32::from_ne_bytes(src.ip) as u64
            | (src.port as u64) << 32
            | (generation as u64 & 0xffff) << 48
    }

    /// The latched source, if the latch holds for an entry of `generation`.
    pub const fn source(&self, generation: u32) -> Option<Endpoint> {
        let port = (self.word >> 32) as u16;
        if port == 0 || (self.word >> 48) as u16 != generation as u16 {
            return None;
        }
        Some(Endpoint::new((self.word as u32).to_ne_bytes(), port))
    }
}

/// Node-wide counters of the XDP program, one copy per CPU (the `node_stats` map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Packets for the media and demultiplexing ports (before any drop).
    pub rx_packets: u64,
    /// Their UDP payload bytes.
    pub rx_bytes: u64,
    /// Packets relayed in the kernel (XDP_TX or redirected to another interface).
    pub relayed_packets: u64,
    /// Their UDP payload bytes.
    pub relayed_bytes: u64,
    /// Re-key packets redirected to the owning worker's CPU.
    pub steered_packets: u64,
    /// Media packets passed to the stack (steering off, no route or neighbour yet, relay off).
    pub passed_packets: u64,
    /// Zero-length keepalives consumed on relayed entries.
    pub keepalives_rx: u64,
    /// Events that did not fit in the ring buffer.
    pub events_lost: u64,
    /// Drops by [`DropReason`] index.
    pub drops: [u64; DROP_REASONS],
}

impl XdpCounters {
    accumulate!(
        XdpCounters,
        "totals over CPUs",
        rx_packets,
        rx_bytes,
        relayed_packets,
        relayed_bytes,
        steered_packets,
        passed_packets,
        keepalives_rx,
        events_lost
    );
}

/// Kinds of [`XdpEvent`].
pub mod xdp_event {
    /// An entry latched its source (`key`, `src`).
    pub const LATCHED: u32 = 1;
    /// Packets for no flow: `count` of them in the window that ended, the last one from
    /// `src` to `key.local_port`.
    pub const NO_FLOW: u32 = 2;
}

/// One record of the XDP program's `events` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpEvent {
    /// [`xdp_event`] kind.
    pub kind: u32,
    /// How many packets the event stands for.
    pub count: u32,
    /// The entry (or, for no-flow, the key that had none).
    pub key: FlowKey,
    /// The packet's source.
    pub src: Endpoint,
    /// When (CLOCK_MONOTONIC ns, the kernel's `bpf_ktime_get_ns`).
    pub ktime_ns: u64,
}

// The layout is part of the contract: a change here must be a change of SCHEMA_VERSION and of
// media.bpf.c, never an accident.
const _: () = assert!(size_of::<FlowKey>() == 8);
const _: () = assert!(size_of::<Endpoint>() == 8);
const _: () = assert!(size_of::<SrtpParams>() == 56);
const _: () = assert!(size_of::<FlowEntry>() == 176);
const _: () = assert!(size_of::<FlowCounters>() == 48 + 8 * DROP_REASONS);
const _: () = assert!(size_of::<SrtpCheckpoint>() == 32);
const _: () = assert!(size_of::<RtpStats>() == 40);
const _: () = assert!(size_of::<FlowState>() == 152);
const _: () = assert!(size_of::<NodeCounters>() == 64 + 8 * DROP_REASONS);
const _: () = assert!(size_of::<XdpConfig>() == 40);
const _: () = assert!(size_of::<XdpLatch>() == 16);
const _: () = assert!(size_of::<XdpCounters>() == 64 + 8 * DROP_REASONS);
const _: () = assert!(size_of::<XdpEvent>() == 32);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    /// Found by the table_open fuzz target: totals over rows read from a damaged table
    /// overflowed. They saturate.
    #[test]
    fn totals_over_damaged_rows_saturate() {
        let mut a = NodeCounters {
            rx_packets: u64::MAX - 1,
            ..NodeCounters::default()
        };
        a.drops[0] = u64::MAX;
        a.drops[1] = 5;
        assert_eq!(a.total_drops(), u64::MAX);
        let b = a;
        a.accumulate(&b);
        assert_eq!(
            (a.rx_packets, a.drops[0], a.drops[1]),
            (u64::MAX, u64::MAX, 10)
        );
        assert_eq!(saturating_sum(&[1, 2, 3]), 6);
    }

    #[test]
    fn entry_offsets_are_the_published_layout() {
        assert_eq!(offset_of!(FlowEntry, generation), 16);
        assert_eq!(offset_of!(FlowEntry, action), 24);
        assert_eq!(offset_of!(FlowEntry, flags), 26);
        assert_eq!(offset_of!(FlowEntry, worker), 28);
        assert_eq!(offset_of!(FlowEntry, permit_ip), 32);
        assert_eq!(offset_of!(FlowEntry, out_local_port), 40);
        assert_eq!(offset_of!(FlowEntry, out_remote), 44);
        assert_eq!(offset_of!(FlowEntry, peer), 52);
        assert_eq!(offset_of!(FlowEntry, keepalive_ms), 60);
        assert_eq!(offset_of!(FlowEntry, srtp_in), 64);
        assert_eq!(offset_of!(FlowEntry, srtp_out), 120);
    }

    #[test]
    fn a_latch_holds_only_for_its_own_generation() {
        let src = Endpoint::new([192, 0, 2, 7], 40_002);
        let latch = XdpLatch {
            word: XdpLatch::pack(src, 0x1_0005),
            ..XdpLatch::default()
        };
        assert_eq!(latch.source(5), Some(src));
        assert_eq!(
            latch.source(0x7_0005),
            Some(src),
            "only the low 16 bits are kept"
        );
        assert_eq!(latch.source(6), None);
        assert_eq!(XdpLatch::default().source(0), None, "port 0 is not latched");
    }

    #[test]
    fn drop_reasons_index_their_own_slot() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let names: [&str; DROP_REASONS] = DropReason::ALL.map(DropReason::name);
        for (i, a) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(a), "duplicate name {a}");
        }
    }

    #[test]
    fn action_round_trips_and_refuses_unknown_bytes() {
        for a in [Action::Drop, Action::Relay, Action::Rekey] {
            assert_eq!(Action::from_u8(a as u8), Some(a));
        }
        assert_eq!(Action::from_u8(3), None);
    }
}
