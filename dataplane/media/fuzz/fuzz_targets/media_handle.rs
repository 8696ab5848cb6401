//! Structured fuzzing of one sans-IO `MediaWorker`, edge or core, driven as the data plane
//! drives it. A fixed set of entries is installed (edge: latching relays between client
//! ports and demultiplexing ports, an RTCP pair, keepalive/idle/SSRC-lock, a drop entry;
//! core: SRTP<->SRTP re-keying across suites (AES-CM <-> GCM, AES-CM 32 -> AES-256 80 in one
//! pass, GCM-256 -> GCM-128), SRTCP entries, SRTP <-> RTP with MKIs, a relay and a drop
//! entry), then the input plays a sequence of operations: raw datagrams on any port from any
//! source, genuine packets protected with the entries' keys (then bit-flipped or cut),
//! replays, time steps (backwards too), timers, exports, removals, reinstalls (same or new
//! generation), entries with fuzzer-chosen fields, restores from fuzzer-edited state, and a
//! worker restart from the exported state.
//!
//! Properties checked:
//! - nothing panics (the buffer is the real worker's payload room, so growing a packet past
//!   it would be an out-of-bounds slice);
//! - a `Send` verdict's `len` fits the buffer, comes from the entry's `out_local_port` (to its
//!   `out_remote` when fixed), and a relayed datagram leaves byte for byte as it came;
//! - `Consumed` only for zero-length datagrams;
//! - accounting: every `handle` adds exactly one received packet and its bytes, and one
//!   sent packet, keepalive or drop of the verdict's reason; node and per-flow counters
//!   never go down, a restart from the exported state keeps every flow's counters, and
//!   `len()`/`counters()` agree with what was installed and removed;
//! - what an SRTP-in entry forwards decrypts (plain-out: is; SRTP-out: decrypts at the far
//!   end) to exactly the plaintext the genuine sender protected, never to anything else;
//!   in `strict` inputs (sequence numbers that never wrap, no fuzzer-edited state) the far
//!   end must accept it (or call it a replay).
#![no_main]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use arbitrary::Arbitrary;
use edgeway_map_schema::{
    flags, Action, DropReason, Endpoint, FlowCounters, FlowEntry, FlowKey, FlowState, NodeCounters,
    SrtpParams,
};
use edgeway_media::{DemuxLayout, MediaConfig, MediaWorker, Role, TimerAction, Verdict};
use edgeway_srtp::{
    rtp, Error as SrtpError, MasterKey, SrtpConfig, SrtpContext, SrtpProfile, MAX_TRAILER_LEN,
};
use libfuzzer_sys::fuzz_target;

/// Payload room of a worker's receive buffer: edgeway-uring's default 2048-byte provided
/// buffers less the 32 bytes of recvmsg header and source address in front of the payload
/// (`UringConfig::payload_capacity()`); truncated datagrams never reach the handler.
const BUF_CAP: usize = 2048 - 32;
/// A Unix-millisecond start, like the worker's clock.
const T0: u64 = 1_700_000_000_000;
const MAX_OPS: usize = 256;
const HISTORY: usize = 64;

// ---- fuzzer input ----

#[derive(Debug, Arbitrary)]
struct Input {
    role: u8,
    strict: bool,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum PortSel {
    Flow(u8),
    Demux(u8),
    Any(u16),
}

#[derive(Debug, Arbitrary)]
enum SrcSel {
    Flow(u8),
    Any([u8; 4], u16),
}

#[derive(Debug, Arbitrary)]
enum KeySel {
    Flow(u8),
    Port(u16),
    Demux(u16, [u8; 4], u16),
}

#[derive(Debug, Arbitrary)]
struct FuzzParams {
    suite: u8,
    mki_len: u8,
    replay_window: u16,
    seed: u8,
    mki: [u8; 4],
}

#[derive(Debug, Arbitrary)]
struct FuzzEntry {
    generation: u32,
    idle_timeout_ms: u16,
    action: u8,
    flags: u16,
    permit: SrcSel,
    clock_rate: u32,
    out_local_port: u16,
    out_remote: Option<SrcSel>,
    peer: KeySel,
    keepalive_ms: u16,
    srtp_in: FuzzParams,
    srtp_out: FuzzParams,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// `bytes` at the start of the buffer, `len` = bytes + `stale` (the buffer's previous
    /// contents follow, as in a reused provided buffer).
    Raw {
        port: PortSel,
        src: SrcSel,
        bytes: Vec<u8>,
        stale: u16,
    },
    /// A packet the flow's sender protects with the flow's inbound keys, then mutated.
    Genuine {
        flow: u8,
        rtcp: bool,
        ssrc: u8,
        seq: u16,
        ts: u32,
        pt: u8,
        cc: u8,
        ext: bool,
        pad: u8,
        payload: u16,
        src: Option<SrcSel>,
        port: Option<PortSel>,
        flips: Vec<(u16, u8)>,
        cut: Option<u16>,
    },
    Replay {
        back: u8,
        src: Option<SrcSel>,
    },
    Advance {
        ms: u16,
        seconds: bool,
    },
    Back {
        ms: u16,
    },
    Timer {
        remove_idle: bool,
    },
    Export,
    Remove {
        key: KeySel,
    },
    Reinstall {
        flow: u8,
        bump: bool,
    },
    InstallFuzzed {
        key: KeySel,
        entry: FuzzEntry,
    },
    RestoreFuzzed {
        flow: u8,
        edits: Vec<(u8, u64)>,
        keep_counters: bool,
    },
    Restart,
}

// ---- the installed topology ----

#[derive(Clone, Copy, Debug)]
struct Keying {
    profile: SrtpProfile,
    seed: u8,
    mki: &'static [u8],
}

/// One entry the harness installs, with the keys of the parties around it.
#[derive(Clone, Debug)]
struct Def {
    key: FlowKey,
    entry: FlowEntry,
    /// Where its packets normally come from.
    src: SocketAddrV4,
    /// How they arrive (`None`: plain RTP) and how they leave.
    inb: Option<Keying>,
    out: Option<Keying>,
}

fn sa(ip: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ip), port)
}

fn ep(a: SocketAddrV4) -> Endpoint {
    Endpoint::new(a.ip().octets(), a.port())
}

fn socket(e: &Endpoint) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(e.ip), e.port)
}

fn key_material(profile: SrtpProfile, seed: u8) -> (Vec<u8>, Vec<u8>) {
    let k = (0..profile.master_key_len())
        .map(|i| seed.wrapping_mul(29).wrapping_add(i as u8))
        .collect();
    let s = (0..profile.master_salt_len())
        .map(|i| seed ^ (0x50 + i as u8))
        .collect();
    (k, s)
}

fn master(k: &Keying) -> MasterKey {
    let (key, salt) = key_material(k.profile, k.seed);
    let m = MasterKey::new(k.profile, &key, &salt).expect("lengths from the profile");
    if k.mki.is_empty() {
        m
    } else {
        m.with_mki(k.mki).expect("short MKI")
    }
}

fn params(k: Option<Keying>, replay_window: u16) -> SrtpParams {
    let Some(k) = k else {
        return SrtpParams::PLAIN;
    };
    let (key, salt) = key_material(k.profile, k.seed);
    let mut p = SrtpParams {
        suite: k.profile.id() as u8,
        mki_len: k.mki.len() as u8,
        replay_window,
        ..SrtpParams::PLAIN
    };
    p.key[..key.len()].copy_from_slice(&key);
    p.salt[..salt.len()].copy_from_slice(&salt);
    p.mki[..k.mki.len()].copy_from_slice(k.mki);
    p
}

fn context(k: &Keying) -> SrtpContext {
    SrtpContext::new(&SrtpConfig::new(k.profile, master(k))).expect("valid keying")
}

fn entry(action: Action, fl: u16, out_local_port: u16, peer: FlowKey) -> FlowEntry {
    FlowEntry {
        flow_id: 7,
        generation: 1,
        action: action as u8,
        flags: fl,
        out_local_port,
        peer,
        ..FlowEntry::default()
    }
}

fn def(key: FlowKey, entry: FlowEntry, src: SocketAddrV4) -> Def {
    Def {
        key,
        entry,
        src,
        inb: None,
        out: None,
    }
}

fn edge_defs(cfg: &MediaConfig) -> Vec<Def> {
    let demux = cfg.demux_ports();
    let (d, dl) = (demux[0], demux[demux.len() - 2]);
    let c = cfg.client_port_range().0;
    let client = sa([198, 51, 100, 7], 50_000);
    let client_rtcp = sa([198, 51, 100, 7], 50_001);
    let core = sa([10, 0, 0, 5], 36_100);
    let core_rtcp = sa([10, 0, 0, 5], 36_101);
    let core2 = sa([10, 0, 0, 6], 36_200);
    let other = sa([203, 0, 113, 50], 40_000);
    let fixed = sa([192, 0, 2, 50], 4000);
    let (c0, c1, c2, c3, c4) = (c + 100, c + 101, c + 200, c + 300, c + 302);
    let kd0 = FlowKey::demux(d, core.ip().octets(), core.port());
    let kd1 = FlowKey::demux(d + 1, core_rtcp.ip().octets(), core_rtcp.port());
    let kd2 = FlowKey::demux(dl, core2.ip().octets(), core2.port());

    let mut e0 = entry(Action::Relay, flags::LATCH, d, kd0);
    e0.permit_ip = client.ip().octets();
    e0.out_remote = ep(core);
    let e1 = entry(Action::Relay, 0, c0, FlowKey::port(c0));
    let mut e2 = entry(Action::Relay, flags::LATCH | flags::RTCP, d + 1, kd1);
    e2.permit_ip = client.ip().octets();
    e2.out_remote = ep(core_rtcp);
    let e3 = entry(Action::Relay, flags::RTCP, c1, FlowKey::port(c1));
    let mut e4 = entry(
        Action::Relay,
        flags::LATCH | flags::LATCH_ANY_SOURCE | flags::SSRC_LOCK | flags::KEEPALIVE,
        dl,
        kd2,
    );
    e4.out_remote = ep(core2);
    e4.idle_timeout_ms = 4000;
    e4.keepalive_ms = 1000;
    e4.clock_rate = 48_000;
    let mut e5 = entry(Action::Relay, flags::KEEPALIVE, c2, FlowKey::port(c2));
    e5.idle_timeout_ms = 4000;
    let e6 = entry(Action::Drop, 0, 0, FlowKey::default());
    let mut e7 = entry(Action::Relay, 0, d, FlowKey::default());
    e7.out_remote = ep(fixed);
    vec![
        def(FlowKey::port(c0), e0, client),
        def(kd0, e1, core),
        def(FlowKey::port(c1), e2, client_rtcp),
        def(kd1, e3, core_rtcp),
        def(FlowKey::port(c2), e4, other),
        def(kd2, e5, core2),
        def(FlowKey::port(c3), e6, other),
        def(FlowKey::port(c4), e7, fixed),
    ]
}

fn core_defs() -> Vec<Def> {
    use SrtpProfile::*;
    let k = |profile, seed, mki| Some(Keying { profile, seed, mki });
    let edge = sa([203, 0, 113, 1], 2776);
    let edge_rtcp = sa([203, 0, 113, 1], 2777);
    let phone = sa([10, 1, 1, 9], 20_000);
    let phone_rtcp = sa([10, 1, 1, 9], 20_001);
    let edge2 = sa([203, 0, 113, 2], 2778);
    let far = sa([10, 2, 2, 2], 30_000);
    let x = sa([192, 0, 2, 77], 9000);
    let y = sa([192, 0, 2, 78], 9002);
    let p = FlowKey::port;
    let mut defs = Vec::new();
    let mut rekey = |port: u16,
                     fl: u16,
                     out_port: u16,
                     remote: Option<SocketAddrV4>,
                     permit: Option<SocketAddrV4>,
                     src: SocketAddrV4,
                     inb: Option<Keying>,
                     out: Option<Keying>,
                     window: u16| {
        let mut e = entry(Action::Rekey, fl, out_port, p(out_port));
        if let Some(r) = remote {
            e.out_remote = ep(r);
        }
        if let Some(a) = permit {
            e.permit_ip = a.ip().octets();
        }
        e.srtp_in = params(inb, window);
        e.srtp_out = params(out, 0);
        defs.push(Def {
            key: p(port),
            entry: e,
            src,
            inb,
            out,
        });
    };
    // Edge <-> phone: AES-CM 80 outside, GCM inside, RTP (with SRTCP multiplexed) and SRTCP.
    rekey(
        36100,
        0,
        36200,
        None,
        None,
        edge,
        k(AesCm128HmacSha1_80, 11, &[]),
        k(AeadAes128Gcm, 22, &[]),
        0,
    );
    rekey(
        36200,
        flags::LATCH,
        36100,
        Some(edge),
        Some(phone),
        phone,
        k(AeadAes128Gcm, 21, &[]),
        k(AesCm128HmacSha1_80, 12, &[]),
        0,
    );
    rekey(
        36101,
        flags::RTCP,
        36201,
        None,
        None,
        edge_rtcp,
        k(AesCm128HmacSha1_80, 13, &[]),
        k(AeadAes128Gcm, 23, &[]),
        0,
    );
    rekey(
        36201,
        flags::LATCH | flags::RTCP,
        36101,
        Some(edge_rtcp),
        Some(phone_rtcp),
        phone_rtcp,
        k(AeadAes128Gcm, 24, &[]),
        k(AesCm128HmacSha1_80, 14, &[]),
        0,
    );
    // SRTP (MKI) <-> plain RTP, keepalive, idle, SSRC lock, latch to any source.
    rekey(
        36300,
        flags::SSRC_LOCK | flags::KEEPALIVE,
        36400,
        Some(far),
        None,
        edge2,
        k(AesCm256HmacSha1_32, 31, &[1, 2]),
        None,
        0,
    );
    rekey(
        36400,
        flags::LATCH | flags::LATCH_ANY_SOURCE,
        36300,
        Some(edge2),
        None,
        far,
        None,
        k(AesCm256HmacSha1_32, 32, &[3]),
        0,
    );
    // Counter mode -> counter mode with other suites (one pass), GCM-256 -> GCM-128.
    rekey(
        36500,
        0,
        36501,
        Some(x),
        None,
        x,
        k(AesCm128HmacSha1_32, 41, &[]),
        k(AesCm256HmacSha1_80, 42, &[]),
        64,
    );
    rekey(
        36502,
        flags::LATCH_ANY_SOURCE,
        36503,
        Some(y),
        None,
        y,
        k(AeadAes256Gcm, 51, &[9]),
        k(AeadAes128Gcm, 52, &[]),
        0,
    );
    let d6 = defs.len();
    defs[d6 - 4].entry.idle_timeout_ms = 3000;
    defs[d6 - 4].entry.keepalive_ms = 1000;
    defs.push(def(
        p(36600),
        entry(Action::Drop, 0, 0, FlowKey::default()),
        x,
    ));
    let mut relay = entry(Action::Relay, 0, 36701, FlowKey::default());
    relay.out_remote = ep(x);
    defs.push(def(p(36700), relay, y));
    defs
}

// ---- the model ----

#[derive(Clone, Debug)]
struct Installed {
    slot: u32,
    entry: FlowEntry,
    /// The harness entry it is (None: fuzzer-chosen fields).
    def: Option<usize>,
    /// Its SRTP state may not follow the far ends (restored from fuzzer-edited state).
    tainted: bool,
    /// Counters seen last: they may only grow.
    seen: FlowCounters,
}

#[derive(Clone, Debug)]
struct Origin {
    def: usize,
    plain: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Sent {
    port: u16,
    src: SocketAddrV4,
    bytes: Vec<u8>,
    origin: Option<Origin>,
}

struct Sim {
    cfg: MediaConfig,
    worker: MediaWorker,
    defs: Vec<Def>,
    installed: BTreeMap<FlowKey, Installed>,
    fuzz_slots: BTreeMap<FlowKey, u32>,
    /// Per harness entry: the sender of what it receives, the far end of what it sends.
    tx: Vec<Option<SrtpContext>>,
    rx: Vec<Option<SrtpContext>>,
    seqs: BTreeMap<(usize, u32), u16>,
    strict: bool,
    history: Vec<Sent>,
    now: u64,
    buf: Vec<u8>,
    node_seen: NodeCounters,
    exported: BTreeMap<u32, (FlowState, FlowCounters)>,
}

fn counters_grow(old: &FlowCounters, new: &FlowCounters) -> bool {
    new.rx_packets >= old.rx_packets
        && new.rx_bytes >= old.rx_bytes
        && new.tx_packets >= old.tx_packets
        && new.tx_bytes >= old.tx_bytes
        && new.keepalives_rx >= old.keepalives_rx
        && new.keepalives_tx >= old.keepalives_tx
        && new.drops.iter().zip(&old.drops).all(|(n, o)| n >= o)
}

fn node_grows(old: &NodeCounters, new: &NodeCounters) -> bool {
    new.rx_packets >= old.rx_packets
        && new.rx_bytes >= old.rx_bytes
        && new.tx_packets >= old.tx_packets
        && new.tx_bytes >= old.tx_bytes
        && new.keepalives_rx >= old.keepalives_rx
        && new.keepalives_tx >= old.keepalives_tx
        && new.drops.iter().zip(&old.drops).all(|(n, o)| n >= o)
}

fn rtp_packet(
    ssrc: u32,
    seq: u16,
    ts: u32,
    pt: u8,
    cc: u8,
    ext: bool,
    pad: u8,
    payload: usize,
) -> Vec<u8> {
    let cc = cc & 3;
    let mut p = vec![0x80 | cc, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    for i in 0..u32::from(cc) {
        p.extend_from_slice(&(0xc5c5_0000 + i).to_be_bytes());
    }
    if ext {
        p[0] |= 0x10;
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
    }
    p.extend((0..payload).map(|i| (i as u8) ^ (seq as u8)));
    if pad != 0 {
        p[0] |= 0x20;
        p.extend(std::iter::repeat(0).take(usize::from(pad) - 1));
        p.push(pad);
    }
    p
}

fn rtcp_packet(ssrc: u32, sender_report: bool, blocks: u8, extra_words: u8) -> Vec<u8> {
    let blocks = blocks & 1;
    let mut p = vec![0x80 | blocks, if sender_report { 200 } else { 201 }, 0, 0];
    p.extend_from_slice(&ssrc.to_be_bytes());
    if sender_report {
        p.extend_from_slice(&[0x11; 20]);
    }
    p.extend(std::iter::repeat(0x22).take(24 * usize::from(blocks)));
    p.extend(std::iter::repeat(0x33).take(4 * usize::from(extra_words & 7)));
    let words = (p.len() / 4 - 1) as u16;
    p[2..4].copy_from_slice(&words.to_be_bytes());
    p
}

impl Sim {
    fn new(role: u8, strict: bool) -> Sim {
        let (r, layout) = match role % 5 {
            0 => (Role::Edge, DemuxLayout::default()),
            1 => (Role::Edge, DemuxLayout::Small { configured: None }),
            2 => (Role::Edge, DemuxLayout::Large),
            _ => (Role::Core, DemuxLayout::default()),
        };
        let cfg = MediaConfig {
            role: r,
            layout,
            ..MediaConfig::default()
        };
        cfg.validate().expect("harness configuration");
        let defs = match r {
            Role::Edge => edge_defs(&cfg),
            Role::Core => core_defs(),
        };
        let mut sim = Sim {
            worker: MediaWorker::new(cfg.clone()),
            cfg,
            tx: defs.iter().map(|d| d.inb.as_ref().map(context)).collect(),
            rx: defs.iter().map(|d| d.out.as_ref().map(context)).collect(),
            defs,
            installed: BTreeMap::new(),
            fuzz_slots: BTreeMap::new(),
            seqs: BTreeMap::new(),
            strict,
            history: Vec::new(),
            now: T0,
            buf: vec![0; BUF_CAP],
            node_seen: NodeCounters::default(),
            exported: BTreeMap::new(),
        };
        for d in 0..sim.defs.len() {
            let Def { key, entry, .. } = sim.defs[d];
            sim.worker
                .install(d as u32, key, &entry, None)
                .unwrap_or_else(|e| panic!("harness entry {d} refused: {e}"));
            sim.installed.insert(
                key,
                Installed {
                    slot: d as u32,
                    entry,
                    def: Some(d),
                    tainted: false,
                    seen: FlowCounters::default(),
                },
            );
        }
        sim.check_counters();
        sim
    }

    fn port(&self, p: &PortSel) -> u16 {
        match *p {
            PortSel::Flow(i) => self.defs[usize::from(i) % self.defs.len()].key.local_port,
            PortSel::Demux(i) => {
                let d = self.cfg.demux_ports();
                d[usize::from(i) % d.len()]
            }
            PortSel::Any(p) => p,
        }
    }

    fn src(&self, s: &SrcSel) -> SocketAddrV4 {
        match *s {
            SrcSel::Flow(i) => self.defs[usize::from(i) % self.defs.len()].src,
            SrcSel::Any(ip, port) => sa(ip, port),
        }
    }

    fn key(&self, k: &KeySel) -> FlowKey {
        match *k {
            KeySel::Flow(i) => self.defs[usize::from(i) % self.defs.len()].key,
            KeySel::Port(p) => FlowKey::port(p),
            KeySel::Demux(p, ip, rp) => FlowKey::demux(p, ip, rp),
        }
    }

    fn slot_for(&mut self, key: FlowKey) -> u32 {
        if let Some(d) = self.defs.iter().position(|d| d.key == key) {
            return d as u32;
        }
        let n = 1000 + self.fuzz_slots.len() as u32;
        *self.fuzz_slots.entry(key).or_insert(n)
    }

    /// The key `handle` looks a datagram up by.
    fn lookup_key(&self, port: u16, src: SocketAddrV4) -> FlowKey {
        if self.cfg.role == Role::Edge && self.cfg.is_demux_port(port) {
            FlowKey::demux(port, src.ip().octets(), src.port())
        } else {
            FlowKey::port(port)
        }
    }

    /// Hands `buf[..len]` (after writing `prefix` at its start) to the worker and checks
    /// the verdict.
    fn deliver(
        &mut self,
        port: u16,
        src: SocketAddrV4,
        prefix: &[u8],
        len: usize,
        origin: Option<Origin>,
    ) {
        let n = len.min(BUF_CAP);
        let p = prefix.len().min(n);
        self.buf[..p].copy_from_slice(&prefix[..p]);
        let sent_bytes = self.buf[..n].to_vec();
        let before = self.worker.node_counters();
        let verdict = self.worker.handle(self.now, port, src, &mut self.buf, n);
        let after = self.worker.node_counters();
        assert_eq!(
            after.rx_packets,
            before.rx_packets + 1,
            "one packet received"
        );
        assert_eq!(after.rx_bytes, before.rx_bytes + n as u64, "its bytes");
        let key = self.lookup_key(port, src);
        match verdict {
            Verdict::Send {
                from_port,
                to,
                len: out_len,
            } => {
                assert!(
                    out_len <= self.buf.len(),
                    "Send of {out_len} bytes from a {}-byte buffer",
                    self.buf.len()
                );
                assert!(out_len > 0, "Send of an empty datagram");
                assert_eq!(after.tx_packets, before.tx_packets + 1);
                assert_eq!(after.tx_bytes, before.tx_bytes + out_len as u64);
                let inst = self
                    .installed
                    .get(&key)
                    .unwrap_or_else(|| panic!("Send for {key:?}, which is not installed"))
                    .clone();
                assert_ne!(inst.entry.action, Action::Drop as u8, "a drop entry sent");
                assert_eq!(
                    from_port, inst.entry.out_local_port,
                    "sent from out_local_port"
                );
                if inst.entry.out_remote.is_set() {
                    assert_eq!(to, socket(&inst.entry.out_remote), "sent to out_remote");
                }
                if inst.entry.action == Action::Relay as u8 {
                    assert_eq!(
                        &self.buf[..out_len],
                        &sent_bytes[..],
                        "relay changed the packet"
                    );
                }
                if let (Some(d), true) = (inst.def, inst.entry.action == Action::Rekey as u8) {
                    self.check_rekeyed(d, &inst, &sent_bytes, out_len, origin.as_ref());
                }
            }
            Verdict::Consumed => {
                assert_eq!(n, 0, "only an empty datagram is a keepalive");
                assert_eq!(after.keepalives_rx, before.keepalives_rx + 1);
            }
            Verdict::Drop(reason) => {
                assert_eq!(
                    after.drops[reason.index()],
                    before.drops[reason.index()] + 1,
                    "drop {reason:?} counted"
                );
                if reason == DropReason::NoFlow {
                    assert!(
                        !self.installed.contains_key(&key),
                        "NoFlow for installed {key:?}"
                    );
                }
            }
        }
    }

    /// What a re-keying harness entry forwarded must be what its sender meant.
    fn check_rekeyed(
        &mut self,
        d: usize,
        inst: &Installed,
        sent: &[u8],
        out_len: usize,
        origin: Option<&Origin>,
    ) {
        let def = &self.defs[d];
        let is_rtcp = def.entry.has(flags::RTCP) || rtp::is_rtcp(sent);
        // The plaintext every output must carry: the genuine sender's (SRTP in) or the packet
        // itself (plain in).
        let expect: Option<&[u8]> = match (&def.inb, origin) {
            (Some(_), Some(o)) => {
                assert_eq!(
                    o.def, d,
                    "flow {}'s packet authenticated on flow {d}",
                    o.def
                );
                Some(&o.plain)
            }
            (Some(_), None) => None,
            (None, _) => Some(sent),
        };
        let out = &self.buf[..out_len];
        match (&def.out, self.rx[d].as_mut()) {
            (None, _) => {
                if let Some(e) = expect {
                    assert_eq!(out, e, "flow {d}: plain output differs from the plaintext");
                }
            }
            (Some(_), Some(rx)) => {
                let mut b = out.to_vec();
                let r = if is_rtcp {
                    rx.unprotect_rtcp(&mut b, out_len)
                } else {
                    rx.unprotect_rtp(&mut b, out_len)
                };
                match r {
                    Ok(m) => {
                        if let Some(e) = expect {
                            assert_eq!(&b[..m], e, "flow {d}: far end decrypts something else");
                        }
                    }
                    Err(SrtpError::Replayed { .. } | SrtpError::TooOld { .. }) => {}
                    Err(e) => {
                        assert!(
                            !(self.strict
                                && !inst.tainted
                                && def.inb.is_some()
                                && origin.is_some()),
                            "flow {d}: the far end refuses a re-keyed genuine packet: {e}"
                        );
                    }
                }
            }
            (Some(_), None) => unreachable!("far end built for every SRTP-out entry"),
        }
    }

    fn check_counters(&mut self) {
        let node = self.worker.node_counters();
        assert!(
            node_grows(&self.node_seen, &node),
            "node counters went down"
        );
        self.node_seen = node;
        assert_eq!(self.worker.len(), self.installed.len(), "installed flows");
        assert_eq!(node.flows, self.installed.len() as u64, "node flow count");
        for (key, inst) in &mut self.installed {
            let c = *self
                .worker
                .counters(*key)
                .unwrap_or_else(|| panic!("{key:?} installed but has no counters"));
            assert!(counters_grow(&inst.seen, &c), "{key:?}: counters went down");
            inst.seen = c;
        }
    }

    fn export(&mut self) {
        let mut got = Vec::new();
        self.worker
            .export(&mut |slot, s, c| got.push((slot, *s, *c)));
        for (slot, s, c) in got {
            let (key, inst) = self
                .installed
                .iter()
                .find(|(_, i)| i.slot == slot)
                .unwrap_or_else(|| panic!("export of slot {slot}, which is not installed"));
            assert_eq!(
                s.generation, inst.entry.generation,
                "{key:?}: exported generation"
            );
            assert_eq!(
                Some(&c),
                self.worker.counters(*key),
                "{key:?}: exported counters"
            );
            self.exported.insert(slot, (s, c));
        }
    }

    fn genuine(&mut self, op: &Op) {
        let Op::Genuine {
            flow,
            rtcp,
            ssrc,
            seq,
            ts,
            pt,
            cc,
            ext,
            pad,
            payload,
            src,
            port,
            flips,
            cut,
        } = op
        else {
            unreachable!()
        };
        let d = usize::from(*flow) % self.defs.len();
        let def = self.defs[d].clone();
        // Two SSRCs per flow: with RTP and RTCP, four streams, the worker's per-entry limit.
        let ssrc_v = 0x5000_0000 + (d as u32) * 16 + u32::from(ssrc & 1);
        let is_rtcp = *rtcp || def.entry.has(flags::RTCP);
        let seq = if self.strict {
            // Never near a wrap: both ends of every leg agree on the rollover counter.
            let s = self.seqs.entry((d, ssrc_v)).or_insert(1000);
            let next = s.saturating_add(1 + (seq % 4));
            if next < 60_000 {
                *s = next;
            }
            *s
        } else {
            *seq
        };
        let plain = if is_rtcp {
            rtcp_packet(ssrc_v, pt & 1 == 1, *cc, *pad)
        } else {
            // Payload types in 64..=95 (with the marker: 192..=223) read as RTCP (RFC 5761).
            let max = BUF_CAP - usize::from(*pad);
            rtp_packet(
                ssrc_v,
                seq,
                *ts,
                *pt,
                *cc,
                *ext,
                *pad,
                usize::from(*payload) % max,
            )
        };
        let mut wire = plain.clone();
        if let Some(tx) = self.tx[d].as_mut() {
            wire.resize(plain.len() + MAX_TRAILER_LEN, 0);
            let r = if is_rtcp {
                tx.protect_rtcp(&mut wire, plain.len())
            } else {
                tx.protect_rtp(&mut wire, plain.len())
            };
            let Ok(n) = r else { return };
            wire.truncate(n);
        }
        for &(pos, bits) in flips.iter().take(8) {
            if !wire.is_empty() {
                let i = usize::from(pos) % wire.len();
                wire[i] ^= bits;
            }
        }
        if let Some(c) = cut {
            wire.truncate(usize::from(*c) % (wire.len() + 1));
        }
        wire.truncate(BUF_CAP);
        let src = src.as_ref().map_or(def.src, |s| self.src(s));
        let port = port.as_ref().map_or(def.key.local_port, |p| self.port(p));
        let origin = Some(Origin { def: d, plain });
        self.remember(port, src, &wire, origin.clone());
        self.deliver(port, src, &wire, wire.len(), origin);
    }

    fn remember(&mut self, port: u16, src: SocketAddrV4, bytes: &[u8], origin: Option<Origin>) {
        if self.history.len() == HISTORY {
            self.history.remove(0);
        }
        self.history.push(Sent {
            port,
            src,
            bytes: bytes.to_vec(),
            origin,
        });
    }

    fn install_def(&mut self, d: usize, bump: bool) {
        let def = self.defs[d].clone();
        let old = self.installed.get(&def.key).cloned();
        let mut entry = def.entry;
        entry.generation = old.as_ref().map_or(1, |o| o.entry.generation);
        if bump {
            entry.generation = entry.generation.wrapping_add(1);
        }
        self.worker
            .install(d as u32, def.key, &entry, None)
            .unwrap_or_else(|e| panic!("harness entry {d} refused: {e}"));
        let tainted = old.as_ref().is_some_and(|o| {
            o.entry.generation == entry.generation && (o.tainted || o.def != Some(d))
        });
        self.installed.insert(
            def.key,
            Installed {
                slot: d as u32,
                entry,
                def: Some(d),
                tainted,
                seen: old.map_or_else(FlowCounters::default, |o| o.seen),
            },
        );
    }

    fn install_fuzzed(&mut self, key: FlowKey, f: &FuzzEntry) {
        let fp = |p: &FuzzParams| {
            let mut s = SrtpParams {
                suite: p.suite % 8,
                mki_len: p.mki_len % 6,
                replay_window: p.replay_window,
                mki: p.mki,
                ..SrtpParams::PLAIN
            };
            for (i, b) in s.key.iter_mut().chain(s.salt.iter_mut()).enumerate() {
                *b = p.seed.wrapping_mul(31).wrapping_add(i as u8);
            }
            s
        };
        let entry = FlowEntry {
            flow_id: 9,
            generation: f.generation,
            idle_timeout_ms: u32::from(f.idle_timeout_ms),
            action: f.action % 4,
            flags: f.flags,
            permit_ip: self.src(&f.permit).ip().octets(),
            clock_rate: f.clock_rate,
            out_local_port: f.out_local_port,
            out_remote: f
                .out_remote
                .as_ref()
                .map_or(Endpoint::default(), |s| ep(self.src(s))),
            peer: self.key(&f.peer),
            keepalive_ms: u32::from(f.keepalive_ms),
            srtp_in: fp(&f.srtp_in),
            srtp_out: fp(&f.srtp_out),
            ..FlowEntry::default()
        };
        let slot = self.slot_for(key);
        let old = self.installed.get(&key).cloned();
        match self.worker.install(slot, key, &entry, None) {
            Ok(()) => {
                self.installed.insert(
                    key,
                    Installed {
                        slot,
                        entry,
                        def: None,
                        tainted: true,
                        seen: old.map_or_else(FlowCounters::default, |o| o.seen),
                    },
                );
            }
            Err(e) => {
                let _ = e.to_string();
                self.installed.remove(&key);
                assert!(
                    self.worker.counters(key).is_none(),
                    "{key:?} left after {e}"
                );
            }
        }
    }

    fn restore_fuzzed(&mut self, flow: u8, edits: &[(u8, u64)], keep_counters: bool) {
        let d = usize::from(flow) % self.defs.len();
        let key = self.defs[d].key;
        let Some(inst) = self.installed.get(&key).cloned() else {
            return;
        };
        let (mut s, c) = self
            .exported
            .get(&inst.slot)
            .copied()
            .filter(|(s, _)| s.generation == inst.entry.generation)
            .unwrap_or((
                FlowState {
                    generation: inst.entry.generation,
                    ..FlowState::default()
                },
                FlowCounters::default(),
            ));
        for &(field, v) in edits.iter().take(16) {
            let v32 = v as u32;
            match field % 24 {
                0 => s.latched = v32,
                1 => s.latched_src = Endpoint::new(v32.to_be_bytes(), (v >> 32) as u16),
                2 => s.latched_ssrc = v32,
                3 => s.idle = v32,
                4 => s.last_rx_ms = v,
                5 => s.last_tx_ms = v,
                6 => s.srtp_in.valid = v32,
                7 => s.srtp_in.ssrc = v32,
                8 => s.srtp_in.highest_index = v,
                9 => s.srtp_in.recent[0] = v,
                10 => s.srtp_in.recent[1] = v,
                11 => s.srtp_out.valid = v32,
                12 => s.srtp_out.ssrc = v32,
                13 => s.srtp_out.highest_index = v,
                14 => s.srtp_out.recent[0] = v,
                15 => s.srtp_out.recent[1] = v,
                16 => s.rtp.ssrc = v32,
                17 => s.rtp.base_seq = v32,
                18 => s.rtp.ext_max_seq = v32,
                19 => s.rtp.received = v,
                20 => s.rtp.lost = v,
                21 => s.rtp.last_transit = v32 as i32,
                22 => s.rtp.jitter_q4 = v32,
                _ => s.srtcp_out_next = v,
            }
        }
        assert!(self.worker.remove(key));
        self.worker
            .install(inst.slot, key, &inst.entry, Some(&s))
            .unwrap_or_else(|e| panic!("{key:?} installed before, refused now: {e}"));
        let mut seen = FlowCounters::default();
        if keep_counters {
            assert!(self.worker.resume_counters(key, &c));
            seen = c;
        }
        self.installed.insert(
            key,
            Installed {
                seen,
                tainted: true,
                ..inst
            },
        );
    }

    /// A new worker from the entries and the exported state, as after a data-plane restart.
    fn restart(&mut self) {
        self.export();
        let before: Vec<(FlowKey, FlowCounters)> = self
            .installed
            .keys()
            .map(|k| (*k, *self.worker.counters(*k).expect("installed")))
            .collect();
        self.worker = MediaWorker::new(self.cfg.clone());
        for (key, inst) in &self.installed {
            let saved = self.exported.get(&inst.slot);
            let state = saved
                .map(|(s, _)| s)
                .filter(|s| s.generation == inst.entry.generation);
            self.worker
                .install(inst.slot, *key, &inst.entry, state)
                .unwrap_or_else(|e| panic!("{key:?} installed before, refused now: {e}"));
            if let Some((_, c)) = saved {
                assert!(self.worker.resume_counters(*key, c));
            }
        }
        for (key, c) in before {
            assert_eq!(
                self.worker.counters(key),
                Some(&c),
                "{key:?}: counters not carried across the restart (export missed a change)"
            );
        }
        self.node_seen = NodeCounters::default();
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Raw {
                port,
                src,
                bytes,
                stale,
            } => {
                let (port, src) = (self.port(port), self.src(src));
                let len = bytes.len() + usize::from(*stale) % (BUF_CAP + 1);
                self.remember(port, src, bytes, None);
                self.deliver(port, src, bytes, len, None);
            }
            Op::Genuine { .. } => self.genuine(op),
            Op::Replay { back, src } => {
                if self.history.is_empty() {
                    return;
                }
                let i = self.history.len() - 1 - usize::from(*back) % self.history.len();
                let h = self.history[i].clone();
                let src = src.as_ref().map_or(h.src, |s| self.src(s));
                self.deliver(h.port, src, &h.bytes, h.bytes.len(), h.origin);
            }
            Op::Advance { ms, seconds } => {
                self.now += u64::from(*ms) * if *seconds { 1000 } else { 1 };
            }
            Op::Back { ms } => self.now = self.now.saturating_sub(u64::from(*ms)),
            Op::Timer { remove_idle } => {
                let mut actions = Vec::new();
                self.worker.poll_timer(self.now, &mut |a| actions.push(a));
                for a in actions {
                    match a {
                        TimerAction::Keepalive { from_port, to } => assert!(
                            self.installed
                                .values()
                                .any(|i| i.entry.has(flags::KEEPALIVE)
                                    && i.entry.out_local_port == from_port
                                    && i.entry.out_remote.is_set()
                                    && socket(&i.entry.out_remote) == to),
                            "keepalive {from_port} -> {to} of no KEEPALIVE entry"
                        ),
                        TimerAction::Idle { slot, key } => {
                            let inst = self.installed.get(&key);
                            assert_eq!(inst.map(|i| i.slot), Some(slot), "idle {key:?}");
                            if *remove_idle {
                                assert!(self.worker.remove(key));
                                self.installed.remove(&key);
                            }
                        }
                        _ => {}
                    }
                }
                let _ = self.worker.next_timeout();
            }
            Op::Export => self.export(),
            Op::Remove { key } => {
                let key = self.key(key);
                let was = self.installed.remove(&key).is_some();
                assert_eq!(self.worker.remove(key), was, "remove {key:?}");
                assert!(self.worker.counters(key).is_none());
            }
            Op::Reinstall { flow, bump } => {
                self.install_def(usize::from(*flow) % self.defs.len(), *bump)
            }
            Op::InstallFuzzed { key, entry } => {
                let key = self.key(key);
                self.install_fuzzed(key, entry);
            }
            Op::RestoreFuzzed {
                flow,
                edits,
                keep_counters,
            } => self.restore_fuzzed(*flow, edits, *keep_counters),
            Op::Restart => self.restart(),
        }
        self.check_counters();
    }
}

fuzz_target!(|input: Input| {
    let mut sim = Sim::new(input.role, input.strict);
    for op in input.ops.iter().take(MAX_OPS) {
        sim.run(op);
    }
});
