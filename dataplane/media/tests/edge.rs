//! The edge: relaying between clients' ports and the demultiplexing ports, latching of the
//! client's source, refusal of foreign sources, and demultiplexing by the core's source on
//! the small (2776) and large (six pairs) layouts.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use edgeway_map_schema::{flags, DropReason, FlowKey};
use edgeway_media::{DemuxLayout, MediaConfig, MediaWorker, Verdict};

#[test]
fn relays_both_ways_after_latching_the_client() {
    let mut w = MediaWorker::new(edge_config());
    let (ck, dk) = edge_leg(&mut w, 0, CLIENT_PORT, CLIENT.ip().octets(), DEMUX, CORE, 0);

    // The core speaks first: the client has not latched, nowhere to send.
    let from_core = rtp(0xc0, 1, 0, 160);
    let v = feed(&mut w, 0, DEMUX, CORE, &from_core);
    assert_eq!(v.0, Verdict::Drop(DropReason::NotLatched));

    // The client's first packet latches its source and goes to the core from the demux port.
    let pkt = rtp(0xc1, 7, 0, 160);
    assert_eq!(
        sent(feed(&mut w, 1, CLIENT_PORT, CLIENT, &pkt), DEMUX, CORE),
        pkt
    );
    // Now the core's packets reach the latched client from the client port, unchanged.
    for seq in 2..20 {
        let p = rtp(0xc0, seq, 0, 160);
        assert_eq!(
            sent(feed(&mut w, 2, DEMUX, CORE, &p), CLIENT_PORT, CLIENT),
            p
        );
        let p = rtp(0xc1, seq + 7, 0, 160);
        assert_eq!(
            sent(feed(&mut w, 2, CLIENT_PORT, CLIENT, &p), DEMUX, CORE),
            p
        );
    }
    let c = w.counters(ck).unwrap();
    assert_eq!((c.rx_packets, c.tx_packets), (19, 19));
    assert_eq!(c.tx_bytes, 19 * 172);
    let d = w.counters(dk).unwrap();
    assert_eq!((d.rx_packets, d.tx_packets), (19, 18));
    assert_eq!(d.drops[DropReason::NotLatched.index()], 1);
    let mut latched = None;
    w.export(&mut |slot, s, _| {
        if slot == 0 {
            latched = Some((s.latched, s.latched_src, s.latched_ssrc));
        }
    });
    assert_eq!(latched, Some((1, ep(CLIENT), 0xc1)));
}

#[test]
fn foreign_sources_are_refused_before_and_after_latching() {
    let mut w = MediaWorker::new(edge_config());
    let (ck, _) = edge_leg(&mut w, 0, CLIENT_PORT, CLIENT.ip().octets(), DEMUX, CORE, 0);
    let p = rtp(5, 1, 0, 40);
    // Before: only the permitted address may latch (its port may be anything: NAT).
    let stranger = sa([198, 51, 100, 99], 50_000);
    let v = feed(&mut w, 0, CLIENT_PORT, stranger, &p);
    assert_eq!(v.0, Verdict::Drop(DropReason::ForeignSource));
    let nat = sa(CLIENT.ip().octets(), 61_000);
    sent(feed(&mut w, 1, CLIENT_PORT, nat, &p), DEMUX, CORE);
    // After: another port of the same address, or another address, is foreign.
    for src in [CLIENT, stranger] {
        let v = feed(&mut w, 2, CLIENT_PORT, src, &rtp(5, 2, 0, 40));
        assert_eq!(v.0, Verdict::Drop(DropReason::ForeignSource), "{src}");
    }
    // The core's packets still go to the latched source.
    let back = rtp(6, 1, 0, 40);
    sent(feed(&mut w, 3, DEMUX, CORE, &back), CLIENT_PORT, nat);
    let c = w.counters(ck).unwrap();
    assert_eq!(c.drops[DropReason::ForeignSource.index()], 3);
    assert_eq!(
        w.node_counters().drops[DropReason::ForeignSource.index()],
        3
    );
}

#[test]
fn latch_any_source_takes_the_first_sender() {
    let mut w = MediaWorker::new(edge_config());
    edge_leg(
        &mut w,
        0,
        CLIENT_PORT,
        CLIENT.ip().octets(),
        DEMUX,
        CORE,
        flags::LATCH_ANY_SOURCE,
    );
    let anywhere = sa([192, 0, 2, 200], 4444);
    sent(
        feed(&mut w, 0, CLIENT_PORT, anywhere, &rtp(1, 1, 0, 20)),
        DEMUX,
        CORE,
    );
    sent(
        feed(&mut w, 0, DEMUX, CORE, &rtp(2, 1, 0, 20)),
        CLIENT_PORT,
        anywhere,
    );
    // Latched now: the permitted address is as foreign as any other.
    let v = feed(&mut w, 0, CLIENT_PORT, CLIENT, &rtp(1, 2, 0, 20));
    assert_eq!(v.0, Verdict::Drop(DropReason::ForeignSource));
}

#[test]
fn small_layout_demultiplexes_two_cores_sources_on_2776() {
    let mut w = MediaWorker::new(edge_config());
    let core_b = sa(CORE.ip().octets(), 36_102);
    let client_b = sa([198, 51, 100, 8], 50_002);
    edge_leg(&mut w, 0, 40_000, CLIENT.ip().octets(), DEMUX, CORE, 0);
    edge_leg(&mut w, 1, 40_002, client_b.ip().octets(), DEMUX, core_b, 0);
    sent(
        feed(&mut w, 0, 40_000, CLIENT, &rtp(1, 1, 0, 20)),
        DEMUX,
        CORE,
    );
    sent(
        feed(&mut w, 0, 40_002, client_b, &rtp(2, 1, 0, 20)),
        DEMUX,
        core_b,
    );
    // Same demux port, different core source port: different flows, different clients.
    sent(
        feed(&mut w, 1, DEMUX, CORE, &rtp(3, 1, 0, 20)),
        40_000,
        CLIENT,
    );
    sent(
        feed(&mut w, 1, DEMUX, core_b, &rtp(4, 1, 0, 20)),
        40_002,
        client_b,
    );
    // A source with no entry on the demux port is no flow, counted node-wide.
    let v = feed(
        &mut w,
        1,
        DEMUX,
        sa(CORE.ip().octets(), 36_104),
        &rtp(5, 1, 0, 20),
    );
    assert_eq!(v.0, Verdict::Drop(DropReason::NoFlow));
    // The RTCP port of the pair demultiplexes too.
    let rk = FlowKey::demux(DEMUX + 1, CORE.ip().octets(), CORE.port() + 1);
    let mut e = entry(
        edgeway_map_schema::Action::Relay,
        flags::RTCP,
        40_001,
        FlowKey::port(40_001),
    );
    e.out_remote = ep(sa(CLIENT.ip().octets(), CLIENT.port() + 1));
    w.install(9, rk, &e, None).unwrap();
    let rr = rtcp_rr(3);
    let v = feed(
        &mut w,
        2,
        DEMUX + 1,
        sa(CORE.ip().octets(), CORE.port() + 1),
        &rr,
    );
    assert_eq!(
        sent(v, 40_001, sa(CLIENT.ip().octets(), CLIENT.port() + 1)),
        rr
    );
    assert_eq!(w.node_counters().drops[DropReason::NoFlow.index()], 1);
}

#[test]
fn large_layout_uses_six_pairs_and_separates_sources_per_pair() {
    let config = MediaConfig {
        layout: DemuxLayout::Large,
        ..edge_config()
    };
    assert_eq!(config.demux_ports(), (36_000..=36_011).collect::<Vec<_>>());
    let mut w = MediaWorker::new(config);
    let mut legs = Vec::new();
    for pair in 0..6u16 {
        for k in 0..2u16 {
            let n = u32::from(pair * 2 + k);
            let cport = 36_012 + 2 * n as u16;
            let client = sa([198, 51, 100, 10 + n as u8], 50_000);
            let core = sa([10, 0, 0, 5], 37_000 + 2 * k);
            let demux = 36_000 + 2 * pair;
            edge_leg(&mut w, n, cport, client.ip().octets(), demux, core, 0);
            legs.push((cport, client, demux, core));
        }
    }
    for (i, &(cport, client, demux, core)) in legs.iter().enumerate() {
        sent(
            feed(&mut w, 0, cport, client, &rtp(i as u32, 1, 0, 20)),
            demux,
            core,
        );
    }
    // Every demux port, from each of the two core sources, reaches its own client.
    for (i, &(cport, client, demux, core)) in legs.iter().enumerate() {
        let p = rtp(100 + i as u32, 1, 0, 20);
        assert_eq!(sent(feed(&mut w, 1, demux, core, &p), cport, client), p);
    }
    // A demux key on 36012 (a client port on this layout) is refused at install.
    let bad = FlowKey::demux(36_012, [10, 0, 0, 5], 37_000);
    let e = entry(
        edgeway_map_schema::Action::Relay,
        0,
        36_000,
        FlowKey::port(1),
    );
    assert!(w.install(99, bad, &e, None).is_err());
    // And a port key on a demux port.
    assert!(w.install(99, FlowKey::port(36_004), &e, None).is_err());
}
