//! A client's call through an edge and a core to a secure phone, planned by this crate and
//! carried by edgeway-media's real workers: the entries the two roles produce join up
//! (edge demux key = the core's source, core keepalive = the edge's demux port), and SRTP
//! protected with the keys of the SDP each party saw decrypts at the far end, both ways,
//! and SRTCP on the RTCP pairs too.
#![allow(clippy::unwrap_used)]
mod common;

use std::net::SocketAddrV4;

use common::*;
use edgeway_b2bua::{CoreCall, EdgeCall, FlowUpdate, InsideSecurity, Leg};
use edgeway_map_schema::FlowKey;
use edgeway_media::{MediaConfig, MediaWorker, Role, TimerAction, Verdict};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::SrtpContext;

fn install(w: &mut MediaWorker, u: &FlowUpdate, slot: &mut u32) {
    for (k, e) in &u.insert {
        w.install(*slot, *k, e, None).unwrap();
        *slot += 1;
    }
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160).map(|i| i as u8 ^ seq as u8));
    p
}

fn ctx(a: &CryptoAttribute) -> SrtpContext {
    SrtpContext::new(&a.to_config()).unwrap()
}

/// Feeds `pkt` to `w` at `port` from `src`; expects a send from `from`; returns (to, bytes).
#[track_caller]
fn relay(
    w: &mut MediaWorker,
    port: u16,
    src: SocketAddrV4,
    pkt: &[u8],
    from: u16,
) -> (SocketAddrV4, Vec<u8>) {
    let mut buf = [0u8; 1500];
    buf[..pkt.len()].copy_from_slice(pkt);
    match w.handle(NOW, port, src, &mut buf, pkt.len()) {
        Verdict::Send { from_port, to, len } => {
            assert_eq!(from_port, from);
            (to, buf[..len].to_vec())
        }
        other => panic!("expected a send from {from}, got {other:?}"),
    }
}

#[test]
fn srtp_crosses_edge_and_core_rekeyed_with_the_sdps_keys() {
    let (edge_t, core_t) = (Table::new(), Table::new());
    let (mut edge_pool, mut core_pool) = (edge_t.table.ports(), core_t.table.ports());
    let mut r = rng(77);
    let mut edge = EdgeCall::new(&edge_config(), 1, CLIENT_IP);
    let mut core = CoreCall::new(&core_config(), 1, InsideSecurity::Secure);

    let (offer, client_keys) = jabber_offer(5, "");
    let to_core = edge
        .offer(Leg::Outside, NOW, &offer, &mut edge_pool)
        .unwrap();
    assert_eq!(address_of(&to_core.sdp, 0), ("172.16.0.1".into(), 2776));
    assert_eq!(
        crypto_of(&to_core.sdp, 0),
        client_keys,
        "the edge passes keys through untouched"
    );
    assert!(
        to_core.flows.is_empty(),
        "the core's address is not known yet"
    );
    let to_phone = core
        .offer(Leg::Outside, NOW, &to_core.sdp, &mut core_pool, &mut r)
        .unwrap();
    let core_offered = crypto_of(&to_phone.sdp, 0);
    // The phone takes AEAD_AES_128_GCM (tag 2).
    let phone_key = CryptoAttribute::generate(2, core_offered[1].profile, &mut rng(6));
    let answer = sdp(
        "10.1.1.9",
        &[(
            "audio",
            20000,
            "RTP/SAVP",
            &lines(std::slice::from_ref(&phone_key)),
            "",
        )],
    );
    let to_edge = core
        .answer(Leg::Inside, NOW, &answer, &mut core_pool, &mut r)
        .unwrap();
    let to_client = edge
        .answer(Leg::Inside, NOW, &to_edge.sdp, &mut edge_pool)
        .unwrap();
    let (core_e, edge_e) = (core.ports()[0], edge.ports()[0]);
    assert_eq!(
        address_of(&to_client.sdp, 0),
        ("203.0.113.1".into(), edge_e)
    );
    let client_rx = crypto_of(&to_client.sdp, 0);
    assert_eq!(client_rx, crypto_of(&to_edge.sdp, 0));
    assert!(edge
        .entries()
        .contains_key(&FlowKey::demux(2776, CORE_OUTSIDE.octets(), core_e)));
    edge_t.apply(&to_client.flows);
    core_t.apply(&to_edge.flows);

    let mut ew = MediaWorker::new(MediaConfig::default());
    let mut cw = MediaWorker::new(MediaConfig {
        role: Role::Core,
        ..MediaConfig::default()
    });
    let (mut es, mut cs) = (0, 0);
    install(&mut ew, &to_client.flows, &mut es);
    install(&mut cw, &to_edge.flows, &mut cs);

    // The core speaks first: the pinhole keepalive goes to the edge's demux port.
    let mut kas = Vec::new();
    cw.poll_timer(NOW, &mut |a| kas.push(a));
    let edge_demux = SocketAddrV4::new(EDGE_INSIDE, 2776);
    assert!(
        kas.contains(&TimerAction::Keepalive {
            from_port: core_e,
            to: edge_demux
        }),
        "{kas:?}"
    );

    let client = SocketAddrV4::new(CLIENT_IP, 50000);
    let phone = SocketAddrV4::new(PHONE_IP, 20000);
    let core_out = SocketAddrV4::new(CORE_OUTSIDE, core_e);
    let (mut client_tx, mut client_rx) = (ctx(&client_keys[2]), ctx(&client_rx[0]));
    let (mut phone_tx, mut phone_rx) = (ctx(&phone_key), ctx(&core_offered[1]));
    for seq in 1..20u16 {
        // Client -> edge -> core -> phone.
        let plain = rtp(seq, 0xc11e);
        let mut b = plain.clone();
        b.resize(plain.len() + 32, 0);
        let n = client_tx.protect_rtp(&mut b, plain.len()).unwrap();
        let (to, b) = relay(&mut ew, edge_e, client, &b[..n], 2776);
        assert_eq!(to, core_out);
        let (to, mut b) = relay(&mut cw, core_e, edge_demux, &b, core.ports()[1]);
        assert_eq!(to, phone);
        let len = b.len();
        let n = phone_rx.unprotect_rtp(&mut b, len).unwrap();
        assert_eq!(&b[..n], &plain[..]);
        // Phone -> core -> edge -> client.
        let plain = rtp(seq, 0x9404e);
        let mut b = plain.clone();
        b.resize(plain.len() + 32, 0);
        let n = phone_tx.protect_rtp(&mut b, plain.len()).unwrap();
        let (to, b) = relay(&mut cw, core.ports()[1], phone, &b[..n], core_e);
        assert_eq!(to, edge_demux);
        let (to, mut b) = relay(&mut ew, 2776, core_out, &b, edge_e);
        assert_eq!(to, client, "to the client's latched source");
        let len = b.len();
        let n = client_rx.unprotect_rtp(&mut b, len).unwrap();
        assert_eq!(&b[..n], &plain[..]);
    }

    // SRTCP from the client's RTCP port reaches the phone's RTCP port, re-keyed.
    let mut rr = vec![0x81, 201, 0, 7];
    rr.extend_from_slice(&0xc11eu32.to_be_bytes());
    rr.extend_from_slice(&[7; 24]);
    let mut b = rr.clone();
    b.resize(rr.len() + 64, 0);
    let n = client_tx.protect_rtcp(&mut b, rr.len()).unwrap();
    let client_rtcp = SocketAddrV4::new(CLIENT_IP, 50001);
    let (to, b) = relay(&mut ew, edge_e + 1, client_rtcp, &b[..n], 2777);
    assert_eq!(to, SocketAddrV4::new(CORE_OUTSIDE, core_e + 1));
    let edge_rtcp = SocketAddrV4::new(EDGE_INSIDE, 2777);
    let (to, mut b) = relay(&mut cw, core_e + 1, edge_rtcp, &b, core.ports()[1] + 1);
    assert_eq!(to, SocketAddrV4::new(PHONE_IP, 20001));
    let len = b.len();
    let n = phone_rx.unprotect_rtcp(&mut b, len).unwrap();
    assert_eq!(&b[..n], &rr[..]);

    // BYE on both nodes: nothing left in either table.
    edge_t.apply(&edge.teardown(NOW, &mut edge_pool));
    core_t.apply(&core.teardown(NOW, &mut core_pool));
    for t in [&edge_t, &core_t] {
        assert_eq!((t.entries(), t.ports_in_use()), (0, 0));
    }
}

#[test]
fn a_core_offer_programs_the_edge_at_once_on_the_pairs_worker() {
    let t = Table::new();
    let mut pool = t.table.ports();
    let mut config = edge_config();
    config.demux_ports = (0..6).map(|i| 36000 + 2 * i).collect();
    config.workers = 4;
    let mut edge = EdgeCall::new(&config, 9, CLIENT_IP);
    let offer = sdp(
        "172.16.0.2",
        &[(
            "audio",
            40100,
            "RTP/SAVP",
            &lines(&jabber_keys(1)),
            "a=rtcp:40101\r\n",
        )],
    );
    let out = edge.offer(Leg::Inside, NOW, &offer, &mut pool).unwrap();
    let e = edge.ports()[0];
    assert_eq!(address_of(&out.sdp, 0), ("203.0.113.1".into(), e));
    assert!(has_line(&out.sdp, &format!("a=rtcp:{}", e + 1)));
    assert!(
        !String::from_utf8_lossy(&out.sdp).contains("172.16.0.2"),
        "the core's address stays inside"
    );
    // Call 9 takes demux pair 9 % 6 = 3 (36006), owned by worker 3 % 4.
    assert_eq!(out.flows.insert.len(), 4);
    assert!(edge
        .entries()
        .contains_key(&FlowKey::demux(36006, CORE_OUTSIDE.octets(), 40100)));
    assert!(edge
        .entries()
        .contains_key(&FlowKey::demux(36007, CORE_OUTSIDE.octets(), 40101)));
    assert!(edge.entries().values().all(|x| x.worker == 3));
    let to_client = edge.entries()[&FlowKey::port(e)];
    assert_eq!(to_client.permit_ip, CLIENT_IP.octets());
    // The client's answer goes to the core towards the demux pair; nothing changes on the edge.
    let answer = sdp(
        "198.51.100.7",
        &[("audio", 50000, "RTP/SAVP", &lines(&jabber_keys(2)[..1]), "")],
    );
    let inward = edge.answer(Leg::Outside, NOW, &answer, &mut pool).unwrap();
    assert_eq!(address_of(&inward.sdp, 0), ("172.16.0.1".into(), 36006));
    assert!(inward.flows.is_empty());
    t.apply(&out.flows);
    // The core moves the stream (re-INVITE with a new port): the demux entries follow.
    let moved = sdp(
        "172.16.0.2",
        &[("audio", 40200, "RTP/SAVP", &lines(&jabber_keys(1)), "")],
    );
    let out2 = edge.offer(Leg::Inside, NOW, &moved, &mut pool).unwrap();
    assert_eq!(out2.flows.remove.len(), 2);
    assert_eq!(
        out2.flows.insert.len(),
        4,
        "two new demux keys, two client entries pointing at them"
    );
    assert_eq!(edge.ports(), vec![e], "the client keeps its port");
    t.apply(&out2.flows);
    let back = edge.offer_failed(NOW, &mut pool);
    assert_eq!(
        (back.remove.len(), back.insert.len()),
        (2, 4),
        "refused: back to the old port"
    );
    t.apply(&back);
    assert_eq!(t.entries(), 4);
    t.apply(&edge.teardown(NOW, &mut pool));
    assert_eq!((t.entries(), t.ports_in_use()), (0, 0));
    // An answer cannot revive an m= line its offer rejected: it stays port 0, unallocated.
    let mut call = EdgeCall::new(&config, 10, CLIENT_IP);
    let offer = sdp(
        "172.16.0.2",
        &[
            ("audio", 40100, "RTP/SAVP", &[], ""),
            ("video", 0, "RTP/SAVP", &[], ""),
        ],
    );
    call.offer(Leg::Inside, NOW, &offer, &mut pool).unwrap();
    let answer = sdp(
        "198.51.100.7",
        &[
            ("audio", 50000, "RTP/SAVP", &[], ""),
            ("video", 50002, "RTP/SAVP", &[], ""),
        ],
    );
    let inward = call.answer(Leg::Outside, NOW, &answer, &mut pool).unwrap();
    assert_eq!(parse(&inward.sdp).media()[1].port, 0);
    assert_eq!(call.ports().len(), 1);
    call.teardown(NOW, &mut pool);
}

#[test]
fn two_edge_calls_naming_one_core_source_cannot_take_each_others_entries() {
    let t = Table::new();
    let mut pool = t.table.ports();
    let offer = sdp(
        "172.16.0.2",
        &[("audio", 40100, "RTP/SAVP", &lines(&jabber_keys(1)), "")],
    );
    let mut first = EdgeCall::new(&edge_config(), 1, CLIENT_IP);
    let mut second = EdgeCall::new(&edge_config(), 2, CLIENT_IP);
    t.apply(
        &first
            .offer(Leg::Inside, NOW, &offer, &mut pool)
            .unwrap()
            .flows,
    );
    let before: Vec<_> = t.table.iter().map(|(_, k, e)| (k, e)).collect();
    let clash = second
        .offer(Leg::Inside, NOW, &offer, &mut pool)
        .unwrap()
        .flows;
    let err = clash.apply(&t.table).unwrap_err();
    assert!(
        matches!(err, edgeway_b2bua::ApplyError::Conflict { owner, .. } if owner == 1 << 8),
        "{err}"
    );
    // The refused call goes; the first keeps every entry, untouched.
    second.teardown(NOW, &mut pool).apply(&t.table).unwrap();
    let after: Vec<_> = t.table.iter().map(|(_, k, e)| (k, e)).collect();
    assert_eq!(after.len(), 4);
    for (k, e) in &before {
        assert!(after.contains(&(*k, *e)), "{k:?} changed");
    }
    // Two streams of one SDP at one core source are refused before anything is allocated.
    let dup = sdp(
        "172.16.0.2",
        &[
            ("audio", 40100, "RTP/SAVP", &[], ""),
            ("video", 40100, "RTP/SAVP", &[], ""),
        ],
    );
    let mut third = EdgeCall::new(&edge_config(), 3, CLIENT_IP);
    let err = third.offer(Leg::Inside, NOW, &dup, &mut pool).unwrap_err();
    assert!(
        matches!(err, edgeway_b2bua::PlanError::SharedPort { index: 1, .. }),
        "{err}"
    );
    assert!(third.ports().is_empty());
    first.teardown(NOW, &mut pool).apply(&t.table).unwrap();
    assert_eq!((t.entries(), t.ports_in_use()), (0, 0));
}
