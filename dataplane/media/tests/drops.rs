//! Every drop the worker can decide, produced and counted (per entry and node-wide), with a
//! second flow's packets interleaved and forwarded unaffected; install refusals for bad
//! entries.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use edgeway_map_schema::{flags, Action, DropReason, FlowEntry, FlowKey, SrtpParams, DROP_REASONS};
use edgeway_media::{InstallError, MediaWorker, Verdict};
use edgeway_srtp::SrtpContext;

/// A healthy second stream whose packets go between the bad ones.
struct Bystander {
    tx: SrtpContext,
    rx: SrtpContext,
    seq: u16,
}

impl Bystander {
    fn check(&mut self, w: &mut MediaWorker) {
        self.seq += 1;
        let plain = rtp(0xb0b, self.seq, u32::from(self.seq) * 160, 160);
        let out = sent(
            feed(w, 0, E_PORT + 2, EDGE, &protect(&mut self.tx, &plain)),
            P_PORT + 2,
            PHONE,
        );
        assert_eq!(
            unprotect(&mut self.rx, &out).unwrap(),
            plain,
            "bystander {}",
            self.seq
        );
    }
}

/// What an install error must look like.
type Expect = fn(&InstallError) -> bool;

#[track_caller]
fn dropped(v: (Verdict, Vec<u8>), reason: DropReason) {
    assert_eq!(v.0, Verdict::Drop(reason));
}

#[test]
fn every_drop_reason_is_produced_counted_and_isolated() {
    let keys = Keys {
        outside: Some(AES),
        inside: Some(GCM),
    };
    let mut w = MediaWorker::new(core_config());
    let (ek, pk) = core_stream(&mut w, keys, E_PORT, P_PORT, EDGE, flags::SSRC_LOCK);
    core_stream(&mut w, keys, E_PORT + 2, P_PORT + 2, EDGE, 0);
    let mut by = Bystander {
        tx: context(AES, SEED_CLIENT_TX),
        rx: context(GCM, SEED_PHONE_RX),
        seq: 0,
    };
    // The bystander's phone latches first.
    let mut phone2 = context(GCM, SEED_PHONE_TX);
    sent(
        feed(
            &mut w,
            0,
            P_PORT + 2,
            PHONE,
            &protect(&mut phone2, &rtp(0xb1, 1, 0, 20)),
        ),
        E_PORT + 2,
        EDGE,
    );
    let mut client_tx = context(AES, SEED_CLIENT_TX);
    let mut phone_tx = context(GCM, SEED_PHONE_TX);

    // NoFlow: nothing on this port.
    dropped(
        feed(&mut w, 0, 1234, EDGE, &rtp(1, 1, 0, 20)),
        DropReason::NoFlow,
    );
    by.check(&mut w);

    // NotLatched: valid SRTP from the edge before the phone has latched.
    let early = protect(&mut client_tx, &rtp(0xc11e, 1, 0, 160));
    dropped(
        feed(&mut w, 0, E_PORT, EDGE, &early),
        DropReason::NotLatched,
    );
    by.check(&mut w);

    // ForeignSource before latching: not the phone's address.
    let from_phone = protect(&mut phone_tx, &rtp(0xfeed, 1, 0, 160));
    dropped(
        feed(&mut w, 0, P_PORT, sa([10, 1, 1, 10], 20_000), &from_phone),
        DropReason::ForeignSource,
    );
    by.check(&mut w);
    // A forged packet from the phone's address cannot take the latch.
    let mut forged = from_phone.clone();
    forged[20] ^= 1;
    dropped(
        feed(&mut w, 0, P_PORT, sa(PHONE.ip().octets(), 666), &forged),
        DropReason::AuthFailed,
    );
    // The real one latches.
    sent(feed(&mut w, 0, P_PORT, PHONE, &from_phone), E_PORT, EDGE);
    by.check(&mut w);
    // ForeignSource after latching: the same address, another port.
    let p2 = protect(&mut phone_tx, &rtp(0xfeed, 2, 160, 160));
    dropped(
        feed(&mut w, 0, P_PORT, sa(PHONE.ip().octets(), 20_002), &p2),
        DropReason::ForeignSource,
    );
    by.check(&mut w);
    sent(feed(&mut w, 0, P_PORT, PHONE, &p2), E_PORT, EDGE);

    // WrongSsrc: another SSRC from the latched phone on an SSRC-locked entry.
    let other = protect(&mut phone_tx, &rtp(0xbad, 1, 0, 160));
    dropped(
        feed(&mut w, 0, P_PORT, PHONE, &other),
        DropReason::WrongSsrc,
    );
    by.check(&mut w);

    // Malformed: garbage, truncated headers, a CSRC list past the end, RTCP too short.
    for junk in [
        vec![0u8; 40],
        vec![0x80, 0, 0],
        vec![0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
        vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 9],
        vec![0x81, 201, 0],
    ] {
        dropped(feed(&mut w, 0, E_PORT, EDGE, &junk), DropReason::Malformed);
        by.check(&mut w);
    }

    // AuthFailed: a forged packet from the edge (payload bit flipped).
    let good = protect(&mut client_tx, &rtp(0xc11e, 2, 160, 160));
    let mut bad = good.clone();
    bad[30] ^= 0x80;
    dropped(feed(&mut w, 0, E_PORT, EDGE, &bad), DropReason::AuthFailed);
    by.check(&mut w);
    sent(feed(&mut w, 0, E_PORT, EDGE, &good), P_PORT, PHONE);
    by.check(&mut w);

    // Replay: the same packet again.
    dropped(feed(&mut w, 0, E_PORT, EDGE, &good), DropReason::Replay);
    by.check(&mut w);

    // SrtpError: a valid RTP header too short to carry the tag.
    dropped(
        feed(&mut w, 0, E_PORT, EDGE, &rtp(0xc11e, 3, 0, 4)),
        DropReason::SrtpError,
    );
    by.check(&mut w);

    // ActionDrop: an entry the control plane is tearing down.
    let dk = FlowKey::port(36_300);
    w.install(40, dk, &entry(Action::Drop, 0, 0, FlowKey::port(1)), None)
        .unwrap();
    dropped(
        feed(&mut w, 0, 36_300, EDGE, &rtp(1, 1, 0, 20)),
        DropReason::ActionDrop,
    );
    by.check(&mut w);

    // The worker cannot see a failed send or a bad entry's packets: the caller counts them.
    w.count_drop(DropReason::SendFailed);
    w.count_drop(DropReason::BadEntry);

    // Per-entry and node-wide accounting.
    let e = w.counters(ek).unwrap().drops;
    let p = w.counters(pk).unwrap().drops;
    let mut want_e = [0u64; DROP_REASONS];
    want_e[DropReason::NotLatched.index()] = 1;
    want_e[DropReason::Malformed.index()] = 5;
    want_e[DropReason::AuthFailed.index()] = 1;
    want_e[DropReason::Replay.index()] = 1;
    want_e[DropReason::SrtpError.index()] = 1;
    assert_eq!(e, want_e);
    let mut want_p = [0u64; DROP_REASONS];
    want_p[DropReason::ForeignSource.index()] = 2;
    want_p[DropReason::AuthFailed.index()] = 1;
    want_p[DropReason::WrongSsrc.index()] = 1;
    assert_eq!(p, want_p);
    assert_eq!(
        w.counters(dk).unwrap().drops[DropReason::ActionDrop.index()],
        1
    );
    let node = w.node_counters();
    for r in DropReason::ALL {
        let want = want_e[r.index()]
            + want_p[r.index()]
            + u64::from(matches!(
                r,
                DropReason::NoFlow
                    | DropReason::ActionDrop
                    | DropReason::SendFailed
                    | DropReason::BadEntry
            ));
        assert_eq!(node.drops[r.index()], want, "{r:?}");
    }
    assert_eq!(node.flows, 5);
    // The bystander lost nothing.
    let b = w.counters(FlowKey::port(E_PORT + 2)).unwrap();
    assert_eq!(
        (b.rx_packets, b.tx_packets),
        (u64::from(by.seq), u64::from(by.seq))
    );
    assert_eq!(b.drops, [0; DROP_REASONS]);
}

#[test]
fn keepalives_are_consumed_and_counted_not_relayed() {
    let mut w = MediaWorker::new(edge_config());
    let (ck, _) = edge_leg(&mut w, 0, CLIENT_PORT, CLIENT.ip().octets(), DEMUX, CORE, 0);
    assert_eq!(
        feed(&mut w, 0, CLIENT_PORT, CLIENT, &[]).0,
        Verdict::Consumed
    );
    let c = w.counters(ck).unwrap();
    assert_eq!((c.keepalives_rx, c.rx_packets, c.tx_packets), (1, 1, 0));
    assert_eq!(w.node_counters().keepalives_rx, 1);
    // A length past the buffer is malformed, not a panic.
    let mut buf = [0u8; 8];
    assert_eq!(
        w.handle(0, CLIENT_PORT, CLIENT, &mut buf, 9),
        Verdict::Drop(DropReason::Malformed)
    );
}

#[test]
fn bad_entries_are_refused_with_a_reason_and_leave_nothing_installed() {
    let mut w = MediaWorker::new(core_config());
    let key = FlowKey::port(36_400);
    let good = {
        let mut e = entry(Action::Rekey, 0, 36_402, FlowKey::port(36_402));
        e.srtp_in = params(AES, 1);
        e
    };
    w.install(1, key, &good, None).unwrap();
    let cases: Vec<(FlowEntry, Expect)> = vec![
        (
            {
                let mut e = good;
                e.srtp_in.suite = 9;
                e
            },
            |e| matches!(e, InstallError::UnknownSuite { suite: 9, .. }),
        ),
        (
            {
                let mut e = good;
                e.srtp_out = SrtpParams {
                    mki_len: 7,
                    ..params(GCM, 2)
                };
                e
            },
            |e| matches!(e, InstallError::Srtp { .. }),
        ),
        (
            {
                let mut e = good;
                e.srtp_in.replay_window = 10;
                e
            },
            |e| matches!(e, InstallError::Srtp { .. }),
        ),
        (
            {
                let mut e = good;
                e.action = 7;
                e
            },
            |e| matches!(e, InstallError::BadAction { action: 7, .. }),
        ),
        (
            {
                let mut e = good;
                e.flags = 0x8000;
                e
            },
            |e| matches!(e, InstallError::UnknownFlags { .. }),
        ),
        (
            {
                let mut e = good;
                e.out_local_port = 0;
                e
            },
            |e| matches!(e, InstallError::NoOutPort { .. }),
        ),
    ];
    for (i, (e, ok)) in cases.into_iter().enumerate() {
        let mut e = e;
        e.generation = 2 + i as u32;
        let err = w.install(1, key, &e, None).unwrap_err();
        assert!(ok(&err), "case {i}: {err}");
        assert!(!err.to_string().is_empty());
        // The old flow under the key is gone: its packets are now no flow.
        assert!(w.counters(key).is_none(), "case {i}");
        w.install(1, key, &good, None).unwrap();
    }
    let demux_on_core = FlowKey::demux(2776, [1, 2, 3, 4], 5);
    assert!(matches!(
        w.install(2, demux_on_core, &good, None),
        Err(InstallError::KeyKind { .. })
    ));
    assert!(matches!(
        w.install(2, FlowKey::port(0), &good, None),
        Err(InstallError::NoLocalPort { .. })
    ));
}

#[test]
fn random_datagrams_never_panic_and_are_all_accounted() {
    let keys = Keys {
        outside: Some(AES),
        inside: Some(GCM),
    };
    let mut core = MediaWorker::new(core_config());
    core_stream(&mut core, keys, E_PORT, P_PORT, EDGE, flags::SSRC_LOCK);
    core_stream(
        &mut core,
        keys,
        E_PORT + 1,
        P_PORT + 1,
        EDGE_RTCP,
        flags::RTCP,
    );
    let mut edge = MediaWorker::new(edge_config());
    edge_leg(
        &mut edge,
        0,
        CLIENT_PORT,
        CLIENT.ip().octets(),
        DEMUX,
        CORE,
        0,
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut buf = [0u8; 256];
    let mut seen = 0u64;
    for i in 0..50_000u32 {
        let len = (next() % 200) as usize;
        for b in buf.iter_mut().take(len) {
            *b = next() as u8;
        }
        // Mostly RTP/RTCP-looking headers, so the deeper checks run too.
        if next() % 4 != 0 && len > 1 {
            buf[0] = 0x80 | (buf[0] & 0x3f);
            if next() % 3 == 0 {
                buf[1] = 200 + (buf[1] % 8);
            }
        }
        let (w, ports, srcs) = if i % 2 == 0 {
            (
                &mut core,
                [E_PORT, P_PORT, E_PORT + 1, P_PORT + 1],
                [EDGE, PHONE],
            )
        } else {
            (
                &mut edge,
                [CLIENT_PORT, DEMUX, DEMUX + 1, 9],
                [CLIENT, CORE],
            )
        };
        let port = ports[(next() % 4) as usize];
        let src = srcs[(next() % 2) as usize];
        let v = w.handle(u64::from(i), port, src, &mut buf, len);
        if let Verdict::Send { len: out, .. } = v {
            assert!(out <= buf.len());
        }
        seen += 1;
    }
    let total = core.node_counters().rx_packets + edge.node_counters().rx_packets;
    assert_eq!(total, seen);
    for w in [&core, &edge] {
        let n = w.node_counters();
        let handled = n.tx_packets + n.keepalives_rx + n.drops.iter().sum::<u64>();
        assert_eq!(
            handled, n.rx_packets,
            "every datagram has exactly one outcome"
        );
    }
}
