//! The edge through a real `edgeway-dataplane` process: clients' ports relay to and from the
//! demultiplexing ports, demultiplexed by the core's source address and port, on the small
//! (one configured pair) and large (six pairs over two workers) layouts; latching of the
//! client's address, refusal of foreign sources, packets for no flow counted.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddrV4, UdpSocket};

use common::*;
use edgeway_flowtable::TableOptions;
use edgeway_map_schema::{flags, Action, DropReason, FlowKey, SrtpParams};

/// One relayed stream on the edge: the client's socket, the "core" socket, the client-facing
/// port.
struct EdgeLeg {
    client: UdpSocket,
    core: UdpSocket,
    ec: u16,
}

fn edge_leg(dp: &Dataplane, flow_id: u64, ec: u16, demux: u16, worker: u32) -> EdgeLeg {
    let client = party();
    let core = party();
    let core_addr = addr(&core);
    let demux_key = FlowKey::demux(demux, core_addr.ip().octets(), core_addr.port());
    let mut to_core = entry(
        flow_id,
        Action::Relay,
        flags::LATCH,
        demux,
        Some(core_addr),
        demux_key,
        SrtpParams::PLAIN,
        SrtpParams::PLAIN,
    );
    to_core.worker = worker;
    dp.insert(FlowKey::port(ec), to_core);
    let mut to_client = entry(
        flow_id,
        Action::Relay,
        0,
        ec,
        None,
        FlowKey::port(ec),
        SrtpParams::PLAIN,
        SrtpParams::PLAIN,
    );
    to_client.worker = worker;
    dp.insert(demux_key, to_client);
    EdgeLeg { client, core, ec }
}

/// Runs traffic both ways through a leg and checks addresses.
fn exercise(leg: &EdgeLeg, demux: u16, ssrc: u32) {
    let ec = SocketAddrV4::new(LO, leg.ec);
    let d = SocketAddrV4::new(LO, demux);
    let pkt = rtp(ssrc, 1, 0);
    let out = send_until_forwarded(&leg.client, ec, &pkt, &leg.core);
    assert_eq!(out, pkt, "relayed unchanged");
    for seq in 2..10u16 {
        let p = rtp(ssrc, seq, 0);
        leg.client.send_to(&p, ec).unwrap();
        let (got, from) = recv_n(&leg.core, 1).pop().unwrap();
        assert_eq!(
            (got, from.port()),
            (p, demux),
            "client -> core leaves from the demux port"
        );
        let p = rtp(ssrc + 1, seq, 0);
        leg.core.send_to(&p, d).unwrap();
        let (got, from) = recv_n(&leg.client, 1).pop().unwrap();
        assert_eq!(
            (got, from.port()),
            (p, leg.ec),
            "core -> latched client from its port"
        );
    }
}

#[test]
fn small_layout_demultiplexes_by_the_cores_source_and_latches_the_client() {
    let demux = free_demux_pair();
    let dp = Dataplane::start("edge", &["--demux", &format!("small:{demux}")]);
    let a = edge_leg(&dp, 1, free_port(), demux, 0);
    let b = edge_leg(&dp, 2, free_port(), demux, 0);
    // Before the client latched, the core's packets have nowhere to go.
    let d = SocketAddrV4::new(LO, demux);
    a.core.send_to(&rtp(9, 1, 0), d).unwrap();
    exercise(&a, demux, 100);
    exercise(&b, demux, 200);
    let ka = addr(&a.core);
    let st = dp.state(FlowKey::port(a.ec));
    assert_eq!(st.latched, 1);
    assert_eq!(st.latched_src.port, addr(&a.client).port());
    let c = dp.counters(FlowKey::demux(demux, ka.ip().octets(), ka.port()));
    assert_eq!(c.drops[DropReason::NotLatched.index()], 1, "{c:?}");

    // A foreign source on a latched client port is refused and counted; the client goes on.
    let intruder = UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, 2), 0)).unwrap();
    intruder
        .send_to(&rtp(100, 50, 0), SocketAddrV4::new(LO, a.ec))
        .unwrap();
    // A source the table does not know on the demux port: no flow, counted node-wide.
    let stranger = party();
    stranger.send_to(&rtp(7, 7, 0), d).unwrap();
    exercise(&a, demux, 100);
    let c = dp.counters(FlowKey::port(a.ec));
    assert_eq!(c.drops[DropReason::ForeignSource.index()], 1, "{c:?}");
    assert!(dp.node_drops(DropReason::NoFlow) >= 1);
}

#[test]
fn latching_only_from_the_signaling_source_unless_configured() {
    let demux = free_demux_pair();
    let dp = Dataplane::start("edge", &["--demux", &format!("small:{demux}")]);
    let leg = edge_leg(&dp, 3, free_port(), demux, 0);
    let ec = SocketAddrV4::new(LO, leg.ec);
    // permit_ip is 127.0.0.1: a first packet from 127.0.0.2 must not latch.
    let other_ip = UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, 2), 0)).unwrap();
    other_ip.send_to(&rtp(5, 1, 0), ec).unwrap();
    exercise(&leg, demux, 300);
    let c = dp.counters(FlowKey::port(leg.ec));
    assert_eq!(c.drops[DropReason::ForeignSource.index()], 1, "{c:?}");

    // With LATCH_ANY_SOURCE the first valid packet from anywhere latches.
    let leg2 = edge_leg(&dp, 4, free_port(), demux, 0);
    let key = FlowKey::port(leg2.ec);
    let (_, mut e) = dp.table.lookup(&key).unwrap();
    e.flags |= flags::LATCH_ANY_SOURCE;
    dp.insert(key, e);
    let far = UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, 3), 0)).unwrap();
    far.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let out = send_until_forwarded(
        &far,
        SocketAddrV4::new(LO, leg2.ec),
        &rtp(6, 1, 0),
        &leg2.core,
    );
    assert_eq!(out, rtp(6, 1, 0));
    assert_eq!(dp.state(key).latched_src.ip, [127, 0, 0, 3]);
}

#[test]
fn large_layout_spreads_six_demux_pairs_over_workers() {
    // A media range of our own, outside the ephemeral range: the six pairs are its first 12.
    let base = 21_000 + (std::process::id() % 50) as u16 * 40;
    let range = format!("{base}-{}", base + 39);
    let mut opts = TableOptions::default();
    opts.port_range = (base, base + 39);
    let dp = Dataplane::start_with(
        "edge",
        &[
            "--demux",
            "large",
            "--media-range",
            &range,
            "--workers",
            "2",
        ],
        &opts,
    );
    // Pair i is owned by worker i % 2: legs on pair 0 (worker 0) and pair 1 (worker 1), and two
    // cores on the same pair told apart by their source.
    let legs = [
        (edge_leg(&dp, 10, base + 20, base, 0), base),
        (edge_leg(&dp, 11, base + 22, base + 2, 1), base + 2),
        (edge_leg(&dp, 12, base + 24, base + 2, 1), base + 2),
        (edge_leg(&dp, 13, base + 26, base + 10, 1), base + 10),
    ];
    for (i, (leg, demux)) in legs.iter().enumerate() {
        exercise(leg, *demux, 1000 + i as u32 * 10);
    }
    for (leg, _) in &legs {
        let c = dp.counters(FlowKey::port(leg.ec));
        assert_eq!(c.tx_packets, 9, "{c:?}");
    }
}

#[test]
fn idle_entries_are_marked_and_removed_while_live_ones_stay() {
    let demux = free_demux_pair();
    let dp = Dataplane::start("edge", &["--demux", &format!("small:{demux}")]);
    let quiet = edge_leg(&dp, 5, free_port(), demux, 0);
    let busy = edge_leg(&dp, 6, free_port(), demux, 0);
    let key = FlowKey::port(quiet.ec);
    let (slot, mut e) = dp.table.lookup(&key).unwrap();
    e.idle_timeout_ms = 200;
    dp.insert(key, e);
    exercise(&quiet, demux, 400);
    exercise(&busy, demux, 500);
    // The quiet leg goes silent; the busy one keeps sending past the timeout.
    let ec = SocketAddrV4::new(LO, busy.ec);
    let started = std::time::Instant::now();
    let mut seq = 100;
    while dp.table.lookup(&key).is_some() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "idle entry still in the table"
        );
        seq += 1;
        busy.client.send_to(&rtp(500, seq, 0), ec).unwrap();
        recv_n(&busy.core, 1);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let gone_after = started.elapsed();
    assert!(
        gone_after >= std::time::Duration::from_millis(150),
        "removed after {gone_after:?}, before its 200 ms timeout"
    );
    // The state left in the removed slot says why it went.
    assert_eq!(dp.table.state(slot).idle, 1);
    assert!(dp.table.lookup(&FlowKey::port(busy.ec)).is_some());
    exercise(&busy, demux, 500);
}
