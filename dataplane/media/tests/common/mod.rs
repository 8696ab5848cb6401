//! Helpers shared by the integration tests (included with `mod common;`): addresses, RTP
//! and RTCP packets, SRTP parties built from the same key material as the entries, and the
//! entries of an edge and a core topology.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};

use edgeway_map_schema::{flags, Action, Endpoint, FlowEntry, FlowKey, SrtpParams, DEMUX_RTP_PORT};
use edgeway_media::{MediaConfig, MediaWorker, Role, Verdict};
use edgeway_srtp::{MasterKey, SrtpConfig, SrtpContext, SrtpProfile};

pub const AES: SrtpProfile = SrtpProfile::AesCm128HmacSha1_80;
pub const GCM: SrtpProfile = SrtpProfile::AeadAes128Gcm;

pub fn sa(ip: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ip), port)
}

pub fn ep(a: SocketAddrV4) -> Endpoint {
    Endpoint::new(a.ip().octets(), a.port())
}

/// An RTP packet of `12 + payload` bytes with a recognisable payload.
pub fn rtp(ssrc: u32, seq: u16, ts: u32, payload: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// A receiver report from `ssrc` with one report block (32 bytes).
pub fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&0x1111_2222u32.to_be_bytes());
    p.extend_from_slice(&[0; 20]);
    p
}

pub fn master(profile: SrtpProfile, seed: u8) -> MasterKey {
    let k: Vec<u8> = (0..profile.master_key_len())
        .map(|i| seed.wrapping_mul(29).wrapping_add(i as u8))
        .collect();
    let s: Vec<u8> = (0..profile.master_salt_len())
        .map(|i| seed ^ (0x50 + i as u8))
        .collect();
    MasterKey::new(profile, &k, &s).unwrap()
}

/// Flow-table keying for `profile` with the key material of `seed`.
pub fn params(profile: SrtpProfile, seed: u8) -> SrtpParams {
    let m = master(profile, seed);
    let mut p = SrtpParams {
        suite: profile.id() as u8,
        ..SrtpParams::PLAIN
    };
    p.key[..m.key().len()].copy_from_slice(m.key());
    p.salt[..m.salt().len()].copy_from_slice(m.salt());
    p
}

/// A remote party's context with the key material of `seed`.
pub fn context(profile: SrtpProfile, seed: u8) -> SrtpContext {
    SrtpContext::new(&SrtpConfig::new(profile, master(profile, seed))).unwrap()
}

pub fn protect(ctx: &mut SrtpContext, p: &[u8]) -> Vec<u8> {
    let mut b = p.to_vec();
    b.resize(p.len() + 32, 0);
    let n = ctx.protect_rtp(&mut b, p.len()).unwrap();
    b.truncate(n);
    b
}

pub fn unprotect(ctx: &mut SrtpContext, p: &[u8]) -> Result<Vec<u8>, edgeway_srtp::Error> {
    let mut b = p.to_vec();
    let n = ctx.unprotect_rtp(&mut b, p.len())?;
    b.truncate(n);
    Ok(b)
}

pub fn protect_rtcp(ctx: &mut SrtpContext, p: &[u8]) -> Vec<u8> {
    let mut b = p.to_vec();
    b.resize(p.len() + 32, 0);
    let n = ctx.protect_rtcp(&mut b, p.len()).unwrap();
    b.truncate(n);
    b
}

pub fn unprotect_rtcp(ctx: &mut SrtpContext, p: &[u8]) -> Result<Vec<u8>, edgeway_srtp::Error> {
    let mut b = p.to_vec();
    let n = ctx.unprotect_rtcp(&mut b, p.len())?;
    b.truncate(n);
    Ok(b)
}

/// Runs `pkt` through `w` in a fresh 1500-byte buffer; returns the verdict and what would be
/// sent (empty unless `Send`).
pub fn feed(
    w: &mut MediaWorker,
    now: u64,
    port: u16,
    src: SocketAddrV4,
    pkt: &[u8],
) -> (Verdict, Vec<u8>) {
    let mut buf = [0u8; 1500];
    buf[..pkt.len()].copy_from_slice(pkt);
    let v = w.handle(now, port, src, &mut buf, pkt.len());
    let out = match v {
        Verdict::Send { len, .. } => buf[..len].to_vec(),
        _ => Vec::new(),
    };
    (v, out)
}

/// Expects `Send` from `from` to `to`; returns the datagram.
#[track_caller]
pub fn sent(v: (Verdict, Vec<u8>), from: u16, to: SocketAddrV4) -> Vec<u8> {
    match v.0 {
        Verdict::Send {
            from_port, to: t, ..
        } => {
            assert_eq!((from_port, t), (from, to), "sent from/to");
            v.1
        }
        other => panic!("expected Send from {from} to {to}, got {other:?}"),
    }
}

pub fn entry(action: Action, flags: u16, out_local_port: u16, peer: FlowKey) -> FlowEntry {
    FlowEntry {
        flow_id: 1,
        generation: 1,
        action: action as u8,
        flags,
        out_local_port,
        peer,
        ..FlowEntry::default()
    }
}

// ---- the edge: client <-> client port <-> demux port <-> core ----

pub const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 50_000);
pub const CORE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 5), 36_100);
pub const CLIENT_PORT: u16 = 40_000;
pub const DEMUX: u16 = DEMUX_RTP_PORT;

pub fn edge_config() -> MediaConfig {
    MediaConfig::default()
}

/// Installs one relayed leg on an edge: client port `cport` (latching the client at
/// `client_ip`) <-> demultiplexing port `demux` keyed by the core's `core` source. Slots
/// `2 * n` and `2 * n + 1`.
pub fn edge_leg(
    w: &mut MediaWorker,
    n: u32,
    cport: u16,
    client_ip: [u8; 4],
    demux: u16,
    core: SocketAddrV4,
    extra_flags: u16,
) -> (FlowKey, FlowKey) {
    let client_key = FlowKey::port(cport);
    let demux_key = FlowKey::demux(demux, core.ip().octets(), core.port());
    let mut to_core = entry(Action::Relay, flags::LATCH | extra_flags, demux, demux_key);
    to_core.permit_ip = client_ip;
    to_core.out_remote = ep(core);
    w.install(2 * n, client_key, &to_core, None).unwrap();
    let to_client = entry(Action::Relay, 0, cport, client_key);
    w.install(2 * n + 1, demux_key, &to_client, None).unwrap();
    (client_key, demux_key)
}

// ---- the core: edge demux port <-> core port E <-> core port P <-> phone ----

pub const EDGE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), DEMUX_RTP_PORT);
pub const EDGE_RTCP: SocketAddrV4 =
    SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), DEMUX_RTP_PORT + 1);
pub const PHONE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 1, 1, 9), 20_000);
pub const PHONE_RTCP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 1, 1, 9), 20_001);
pub const E_PORT: u16 = 36_100;
pub const P_PORT: u16 = 36_200;

pub fn core_config() -> MediaConfig {
    MediaConfig {
        role: Role::Core,
        ..MediaConfig::default()
    }
}

/// The core's keying: what the client sends (`client_tx`), what the core sends the client
/// (`client_rx`), what the phone sends (`phone_tx`) and receives (`phone_rx`); `None` is
/// plain RTP on that leg.
#[derive(Clone, Copy, Debug)]
pub struct Keys {
    pub outside: Option<SrtpProfile>,
    pub inside: Option<SrtpProfile>,
}

pub const SEED_CLIENT_TX: u8 = 11;
pub const SEED_CLIENT_RX: u8 = 12;
pub const SEED_PHONE_TX: u8 = 21;
pub const SEED_PHONE_RX: u8 = 22;

fn p(profile: Option<SrtpProfile>, seed: u8) -> SrtpParams {
    profile.map_or(SrtpParams::PLAIN, |pr| params(pr, seed))
}

/// The two entries of one re-keyed stream on a core (port keys `e_port`/`p_port`, flagged
/// `extra_flags`): from the edge to the (latched) phone, and from the phone to the edge's
/// fixed demux port. Returns `[(slot, key, entry); 2]`, from the edge first.
pub fn core_entries(
    keys: Keys,
    e_port: u16,
    p_port: u16,
    edge: SocketAddrV4,
    extra_flags: u16,
) -> [(u32, FlowKey, FlowEntry); 2] {
    let (ek, pk) = (FlowKey::port(e_port), FlowKey::port(p_port));
    let mut from_edge = entry(Action::Rekey, extra_flags, p_port, pk);
    from_edge.srtp_in = p(keys.outside, SEED_CLIENT_TX);
    from_edge.srtp_out = p(keys.inside, SEED_PHONE_RX);
    let mut from_phone = entry(Action::Rekey, flags::LATCH | extra_flags, e_port, ek);
    from_phone.permit_ip = PHONE.ip().octets();
    from_phone.srtp_in = p(keys.inside, SEED_PHONE_TX);
    from_phone.srtp_out = p(keys.outside, SEED_CLIENT_RX);
    from_phone.out_remote = ep(edge);
    [
        (u32::from(e_port), ek, from_edge),
        (u32::from(p_port), pk, from_phone),
    ]
}

/// Installs [`core_entries`]; returns (from_edge, from_phone) keys.
pub fn core_stream(
    w: &mut MediaWorker,
    keys: Keys,
    e_port: u16,
    p_port: u16,
    edge: SocketAddrV4,
    extra_flags: u16,
) -> (FlowKey, FlowKey) {
    let es = core_entries(keys, e_port, p_port, edge, extra_flags);
    for (slot, key, e) in &es {
        w.install(*slot, *key, e, None).unwrap();
    }
    (es[0].1, es[1].1)
}
