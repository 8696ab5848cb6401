//! Simulated time: keepalives (at install, then after `keepalive_ms` without sending), idle
//! marking (once per idle spell), and RFC 3550 receive statistics (loss, jitter) on a
//! synthetic stream with known gaps and arrival jitter.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use edgeway_map_schema::{flags, FlowState};
use edgeway_media::{MediaWorker, TimerAction, DEFAULT_KEEPALIVE_MS};

fn poll(w: &mut MediaWorker, now: u64) -> Vec<TimerAction> {
    let mut out = Vec::new();
    w.poll_timer(now, &mut |a| out.push(a));
    out
}

fn state_of(w: &mut MediaWorker, slot: u32) -> Option<FlowState> {
    let mut s = None;
    w.export(&mut |sl, st, _| {
        if sl == slot {
            s = Some(*st);
        }
    });
    s
}

#[test]
fn keepalives_at_install_then_whenever_nothing_was_sent() {
    let keys = Keys {
        outside: None,
        inside: None,
    };
    let [edge_side, (slot, pk, mut from_phone)] = core_entries(keys, E_PORT, P_PORT, EDGE, 0);
    from_phone.flags |= flags::KEEPALIVE;
    from_phone.keepalive_ms = 1000;
    let mut w = MediaWorker::new(core_config());
    w.install(edge_side.0, edge_side.1, &edge_side.2, None)
        .unwrap();
    w.install(slot, pk, &from_phone, None).unwrap();
    let ka = TimerAction::Keepalive {
        from_port: E_PORT,
        to: EDGE,
    };
    assert_eq!(w.next_timeout(), Some(0));
    assert_eq!(poll(&mut w, 10), vec![ka], "one at install");
    assert_eq!(w.next_timeout(), Some(1010));
    assert_eq!(poll(&mut w, 1009), vec![]);
    assert_eq!(poll(&mut w, 1010), vec![ka]);
    // Media sent at 1500 defers the next keepalive to 2500.
    sent(
        feed(&mut w, 1500, P_PORT, PHONE, &rtp(1, 1, 0, 20)),
        E_PORT,
        EDGE,
    );
    assert_eq!(poll(&mut w, 2010), vec![]);
    assert_eq!(poll(&mut w, 2499), vec![]);
    assert_eq!(poll(&mut w, 2500), vec![ka]);
    let c = w.counters(pk).unwrap();
    assert_eq!((c.keepalives_tx, c.tx_packets), (3, 1));
    assert_eq!(w.node_counters().keepalives_tx, 3);
    assert_eq!(state_of(&mut w, slot).unwrap().last_tx_ms, 2500);

    // keepalive_ms 0 means the default interval.
    from_phone.keepalive_ms = 0;
    from_phone.generation += 1;
    w.install(slot, pk, &from_phone, None).unwrap();
    assert_eq!(poll(&mut w, 3000), vec![ka]);
    assert_eq!(poll(&mut w, 3000 + DEFAULT_KEEPALIVE_MS - 1), vec![]);
    assert_eq!(poll(&mut w, 3000 + DEFAULT_KEEPALIVE_MS), vec![ka]);
}

#[test]
fn idle_is_marked_once_per_spell() {
    let mut w = MediaWorker::new(edge_config());
    let mut e = entry(
        edgeway_map_schema::Action::Relay,
        flags::LATCH,
        DEMUX,
        edgeway_map_schema::FlowKey::port(1),
    );
    e.permit_ip = CLIENT.ip().octets();
    e.out_remote = ep(CORE);
    e.idle_timeout_ms = 3000;
    let key = edgeway_map_schema::FlowKey::port(CLIENT_PORT);
    w.install(7, key, &e, None).unwrap();
    assert!(poll(&mut w, 100).is_empty(), "the idle clock starts");
    sent(
        feed(&mut w, 1000, CLIENT_PORT, CLIENT, &rtp(1, 1, 0, 20)),
        DEMUX,
        CORE,
    );
    assert!(poll(&mut w, 3999).is_empty());
    let idle = TimerAction::Idle { slot: 7, key };
    assert_eq!(poll(&mut w, 4000), vec![idle]);
    assert!(poll(&mut w, 5000).is_empty(), "reported once");
    assert_eq!(state_of(&mut w, 7).unwrap().idle, 1);
    // Traffic wakes it; silence makes it idle again.
    sent(
        feed(&mut w, 6000, CLIENT_PORT, CLIENT, &rtp(1, 2, 0, 20)),
        DEMUX,
        CORE,
    );
    assert_eq!(state_of(&mut w, 7).unwrap().idle, 0);
    assert!(w.next_timeout().unwrap() <= 9000);
    assert!(poll(&mut w, 8999).is_empty());
    assert_eq!(poll(&mut w, 9000), vec![idle]);
    // A flow that never hears anything goes idle from when the timer first saw it.
    let key2 = edgeway_map_schema::FlowKey::port(CLIENT_PORT + 2);
    w.install(8, key2, &e, None).unwrap();
    assert!(poll(&mut w, 10_000).is_empty());
    assert_eq!(
        poll(&mut w, 13_000),
        vec![TimerAction::Idle { slot: 8, key: key2 }]
    );
}

/// RFC 3550 A.8 in floating point, over the packets in arrival order.
fn reference_jitter(packets: &[(u32, f64)], rate: f64) -> f64 {
    let mut j = 0.0;
    let mut last: Option<f64> = None;
    for &(ts, arrival_ms) in packets {
        let transit = (arrival_ms * rate / 1000.0).floor() - f64::from(ts);
        if let Some(prev) = last {
            j += ((transit - prev).abs() - j) / 16.0;
        }
        last = Some(transit);
    }
    j
}

#[test]
fn loss_and_jitter_follow_rfc_3550() {
    for rate in [0u32, 48_000] {
        let hz = if rate == 0 { 8000 } else { rate };
        let mut w = MediaWorker::new(edge_config());
        let (ck, _) = edge_leg(&mut w, 0, CLIENT_PORT, CLIENT.ip().octets(), DEMUX, CORE, 0);
        let mut e = entry(
            edgeway_map_schema::Action::Relay,
            flags::LATCH,
            DEMUX,
            edgeway_map_schema::FlowKey::demux(DEMUX, CORE.ip().octets(), CORE.port()),
        );
        e.permit_ip = CLIENT.ip().octets();
        e.out_remote = ep(CORE);
        e.clock_rate = rate;
        w.install(0, ck, &e, None).unwrap();

        // 200 packets of 20 ms from seq 65436 (wrapping), 7 lost, arrival jitter of 0-7 ms.
        let lost = [3u32, 4, 50, 99, 100, 101, 180];
        let step = hz / 50;
        let mut delivered = Vec::new();
        for i in 0..200u32 {
            if lost.contains(&i) {
                continue;
            }
            let seq = 65_436u16.wrapping_add(i as u16);
            let ts = 1_000 + i * step;
            let arrival = 5_000 + u64::from(i) * 20 + u64::from((i * 7919) % 8);
            let v = feed(
                &mut w,
                arrival,
                CLIENT_PORT,
                CLIENT,
                &rtp(0xaa, seq, ts, 40),
            );
            sent(v, DEMUX, CORE);
            delivered.push((ts, arrival as f64));
        }
        let s = state_of(&mut w, 0).unwrap().rtp;
        assert_eq!(s.ssrc, 0xaa);
        assert_eq!(s.base_seq, 65_436);
        assert_eq!(s.ext_max_seq, (1 << 16) + 65_436 + 199 - 65_536);
        assert_eq!((s.received, s.lost), (193, 7));
        let want = reference_jitter(&delivered, f64::from(hz));
        let got = f64::from(s.jitter_q4) / 16.0;
        assert!(want > 1.0, "the pattern has jitter");
        assert!(
            (got - want).abs() <= want * 0.02 + 1.0,
            "{hz} Hz: jitter {got} vs {want}"
        );
        // Packets that are dropped do not count: a foreign one does not move the stats.
        let v = feed(
            &mut w,
            9_999,
            CLIENT_PORT,
            sa([1, 2, 3, 4], 5),
            &rtp(0xaa, 300, 0, 40),
        );
        assert!(matches!(v.0, edgeway_media::Verdict::Drop(_)));
        assert_eq!(state_of(&mut w, 0).unwrap().rtp.received, 193);
    }
}

/// An export pass hands out what had changed when it began, a chunk at a time, each flow
/// once; a flow that changes after its export in the pass waits for the next pass, one that
/// changes before it is exported once, with its newest state; `export` drains everything.
#[test]
fn export_passes_go_a_chunk_at_a_time_and_list_each_flow_once() {
    let mut w = MediaWorker::new(edge_config());
    let mut ports = Vec::new();
    let demux_key = edgeway_map_schema::FlowKey::demux(DEMUX, CORE.ip().octets(), CORE.port());
    for i in 0..10u16 {
        let port = CLIENT_PORT + 2 * i;
        let mut e = entry(
            edgeway_map_schema::Action::Relay,
            flags::LATCH,
            DEMUX,
            demux_key,
        );
        e.permit_ip = CLIENT.ip().octets();
        e.out_remote = ep(CORE);
        w.install(
            u32::from(i),
            edgeway_map_schema::FlowKey::port(port),
            &e,
            None,
        )
        .unwrap();
        ports.push(port);
    }
    let mut all = Vec::new();
    w.export(&mut |slot, _, _| all.push(slot));
    all.sort_unstable();
    assert_eq!(
        all,
        (0..10).collect::<Vec<u32>>(),
        "install marks every flow"
    );
    let mut none = 0;
    w.export(&mut |_, _, _| none += 1);
    assert_eq!(none, 0, "nothing changed since");

    for (i, &port) in ports.iter().enumerate() {
        sent(
            feed(&mut w, 100, port, CLIENT, &rtp(1, i as u16, 0, 20)),
            DEMUX,
            CORE,
        );
    }
    let mut got = Vec::new();
    assert!(w.export_some(4, &mut |slot, _, c| got.push((slot, c.rx_packets))));
    assert_eq!(got.len(), 4);
    let first = got[0].0;
    let unexported = (0..10u32).find(|s| !got.iter().any(|g| g.0 == *s)).unwrap();
    // One already exported in this pass and one still waiting in it change again.
    for slot in [first, unexported] {
        let packet = rtp(1, 50 + slot as u16, 0, 20);
        sent(
            feed(&mut w, 120, ports[slot as usize], CLIENT, &packet),
            DEMUX,
            CORE,
        );
    }
    while w.export_some(4, &mut |slot, _, c| got.push((slot, c.rx_packets))) {}
    let mut slots: Vec<u32> = got.iter().map(|g| g.0).collect();
    slots.sort_unstable();
    assert_eq!(
        slots,
        (0..10).collect::<Vec<u32>>(),
        "each flow once per pass"
    );
    let rx_of = |slot: u32| got.iter().find(|g| g.0 == slot).unwrap().1;
    assert_eq!(rx_of(unexported), 2, "exported with its newest counters");
    assert_eq!(rx_of(first), 1);
    let mut next = Vec::new();
    w.export(&mut |slot, _, c| next.push((slot, c.rx_packets)));
    assert_eq!(
        next,
        vec![(first, 2)],
        "the next pass carries the later change"
    );
}
