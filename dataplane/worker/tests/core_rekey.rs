//! The core's re-keying through a real `edgeway-dataplane` process: SRTP in with one leg's
//! key, SRTP (or RTP) out with the other's, checked by libsrtp (pylibsrtp), an independent
//! implementation; RTCP on its own port; the pinhole keepalive towards the edge; every drop
//! reason counted without harming another flow.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use edgeway_map_schema::{flags, Action, DropReason, FlowKey, SrtpParams};
use edgeway_srtp::SrtpProfile;
use edgeway_testkit::LibsrtpOracle;

/// One re-keyed stream set up on a core: the edge's socket, the inside phone's socket, the
/// core's two ports, the keys of all four directions.
struct CoreCall {
    edge: std::net::UdpSocket,
    phone: std::net::UdpSocket,
    ce: u16,
    ci: u16,
}

fn core_call(
    dp: &Dataplane,
    flow_id: u64,
    edge_in: SrtpParams,
    inside_out: SrtpParams,
    inside_in: SrtpParams,
    edge_out: SrtpParams,
    extra_flags: u16,
) -> CoreCall {
    let edge = party();
    let phone = party();
    let (ce, ci) = (free_port(), free_port());
    // edge -> core (port ce) -> phone, from ci
    dp.insert(
        FlowKey::port(ce),
        entry(
            flow_id,
            Action::Rekey,
            extra_flags,
            ci,
            Some(addr(&phone)),
            FlowKey::port(ci),
            edge_in,
            inside_out,
        ),
    );
    // phone -> core (port ci) -> edge, from ce
    dp.insert(
        FlowKey::port(ci),
        entry(
            flow_id,
            Action::Rekey,
            extra_flags,
            ce,
            Some(addr(&edge)),
            FlowKey::port(ce),
            inside_in,
            edge_out,
        ),
    );
    CoreCall {
        edge,
        phone,
        ce,
        ci,
    }
}

#[test]
fn srtp_to_srtp_both_ways_decrypts_under_the_other_legs_key_in_libsrtp() {
    let Some(mut oracle) = LibsrtpOracle::start("data plane re-keying") else {
        return;
    };
    let dp = Dataplane::start("core", &[]);
    // Edge leg AES_CM_128_HMAC_SHA1_80, inside leg AEAD_AES_128_GCM: different suites too.
    let (pe, pi) = (SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm);
    let (k_client, k_core_edge) = (master_key(pe, 1), master_key(pe, 2));
    let (k_core_inside, k_phone) = (master_key(pi, 3), master_key(pi, 4));
    let call = core_call(
        &dp,
        7,
        params(pe, &k_client),
        params(pi, &k_core_inside),
        params(pi, &k_phone),
        params(pe, &k_core_edge),
        0,
    );
    let lib = |o: &mut LibsrtpOracle, p: SrtpProfile, k: &edgeway_srtp::MasterKey| {
        o.session(p.sdes_name(), &[k.key(), k.salt()].concat(), 1024)
    };
    let client_tx = lib(&mut oracle, pe, &k_client);
    let phone_rx = lib(&mut oracle, pi, &k_core_inside);
    let phone_tx = lib(&mut oracle, pi, &k_phone);
    let client_rx = lib(&mut oracle, pe, &k_core_edge);
    let ce = std::net::SocketAddrV4::new(LO, call.ce);
    let ci = std::net::SocketAddrV4::new(LO, call.ci);

    // Sequence numbers across a wrap, so the ROC moves while re-keying.
    for i in 0..60u16 {
        let seq = 65_510u16.wrapping_add(i);
        let plain = rtp(0x1111_0001, seq, u32::from(i) * 160);
        let srtp = oracle.op(client_tx, "protect", &plain).unwrap();
        let out = if i == 0 {
            send_until_forwarded(&call.edge, ce, &srtp, &call.phone)
        } else {
            call.edge.send_to(&srtp, ce).unwrap();
            recv_n(&call.phone, 1).pop().unwrap().0
        };
        assert_ne!(out, srtp, "re-keyed, not passed through");
        let back = oracle.op(phone_rx, "unprotect", &out).unwrap();
        assert_eq!(back, plain, "packet {i} (seq {seq}) phone side");

        let plain = rtp(0x2222_0002, seq, u32::from(i) * 160);
        let srtp = oracle.op(phone_tx, "protect", &plain).unwrap();
        call.phone.send_to(&srtp, ci).unwrap();
        let (out, from) = recv_n(&call.edge, 1).pop().unwrap();
        assert_eq!(
            from.port(),
            call.ce,
            "sent from the core's edge-facing port"
        );
        let back = oracle.op(client_rx, "unprotect", &out).unwrap();
        assert_eq!(back, plain, "packet {i} (seq {seq}) edge side");
    }
    let c = dp.counters(FlowKey::port(call.ce));
    assert_eq!(c.tx_packets, 60, "{c:?}");
    assert_eq!(c.drops.iter().sum::<u64>(), c.rx_packets - 60, "{c:?}");
    let st = dp.state(FlowKey::port(call.ce));
    assert_eq!(
        st.srtp_in.highest_index >> 16,
        1,
        "ROC 1 after the wrap: {st:?}"
    );
    assert_eq!(st.rtp.received, 60, "{:?}", st.rtp);
}

#[test]
fn srtp_to_rtp_and_rtp_to_srtp_for_a_non_secure_phone() {
    let Some(mut oracle) = LibsrtpOracle::start("data plane SRTP<->RTP") else {
        return;
    };
    let dp = Dataplane::start("core", &[]);
    let p = SrtpProfile::AesCm128HmacSha1_32;
    let (k_client, k_core) = (master_key(p, 11), master_key(p, 12));
    let call = core_call(
        &dp,
        8,
        params(p, &k_client),
        SrtpParams::PLAIN,
        SrtpParams::PLAIN,
        params(p, &k_core),
        0,
    );
    let client_tx = oracle.session(
        p.sdes_name(),
        &[k_client.key(), k_client.salt()].concat(),
        1024,
    );
    let client_rx = oracle.session(p.sdes_name(), &[k_core.key(), k_core.salt()].concat(), 1024);
    let ce = std::net::SocketAddrV4::new(LO, call.ce);
    let ci = std::net::SocketAddrV4::new(LO, call.ci);
    for i in 0..20u16 {
        let plain = rtp(0x3333, i, u32::from(i) * 160);
        let srtp = oracle.op(client_tx, "protect", &plain).unwrap();
        let out = if i == 0 {
            send_until_forwarded(&call.edge, ce, &srtp, &call.phone)
        } else {
            call.edge.send_to(&srtp, ce).unwrap();
            recv_n(&call.phone, 1).pop().unwrap().0
        };
        assert_eq!(out, plain, "SRTP -> RTP, packet {i}");
        let plain = rtp(0x4444, i, u32::from(i) * 160);
        call.phone.send_to(&plain, ci).unwrap();
        let (out, _) = recv_n(&call.edge, 1).pop().unwrap();
        assert_eq!(
            oracle.op(client_rx, "unprotect", &out).unwrap(),
            plain,
            "RTP -> SRTP, packet {i}"
        );
    }
}

#[test]
fn srtcp_on_its_own_port_is_rekeyed() {
    let Some(mut oracle) = LibsrtpOracle::start("data plane SRTCP") else {
        return;
    };
    let dp = Dataplane::start("core", &[]);
    let p = SrtpProfile::AesCm128HmacSha1_80;
    let (ka, kb) = (master_key(p, 21), master_key(p, 22));
    let call = core_call(
        &dp,
        9,
        params(p, &ka),
        params(p, &kb),
        params(p, &kb),
        params(p, &ka),
        flags::RTCP,
    );
    let tx = oracle.session(p.sdes_name(), &[ka.key(), ka.salt()].concat(), 1024);
    let rx = oracle.session(p.sdes_name(), &[kb.key(), kb.salt()].concat(), 1024);
    let ce = std::net::SocketAddrV4::new(LO, call.ce);
    for n in 0..5u32 {
        // Receiver report: V=2, RC=0, PT=201, length 1, SSRC.
        let mut rr = vec![0x80, 201, 0, 1];
        rr.extend((0x5555_0000u32 + n).to_be_bytes());
        let srtcp = oracle.op(tx, "protect_rtcp", &rr).unwrap();
        let out = if n == 0 {
            send_until_forwarded(&call.edge, ce, &srtcp, &call.phone)
        } else {
            call.edge.send_to(&srtcp, ce).unwrap();
            recv_n(&call.phone, 1).pop().unwrap().0
        };
        assert_eq!(
            oracle.op(rx, "unprotect_rtcp", &out).unwrap(),
            rr,
            "SRTCP report {n}"
        );
    }
}

#[test]
fn the_core_opens_and_keeps_the_pinhole_to_the_edge() {
    let dp = Dataplane::start("core", &[]);
    let p = SrtpProfile::AesCm128HmacSha1_80;
    let k = master_key(p, 31);
    let edge = party();
    let (ce, ci) = (free_port(), free_port());
    let mut e = entry(
        10,
        Action::Rekey,
        flags::KEEPALIVE,
        ce,
        Some(addr(&edge)),
        FlowKey::port(ce),
        params(p, &k),
        params(p, &k),
    );
    e.keepalive_ms = 100;
    dp.insert(FlowKey::port(ci), e);
    // Before any media: a keepalive from the core's edge-facing port, then more while idle.
    let mut seen = 0;
    let start = std::time::Instant::now();
    while seen < 3 && start.elapsed() < std::time::Duration::from_secs(3) {
        if let Some((p, from)) = recv(&edge) {
            assert!(p.is_empty(), "keepalives are zero-length datagrams");
            assert_eq!(from.port(), ce);
            seen += 1;
        }
    }
    assert!(seen >= 3, "keepalives seen: {seen}");
    assert!(dp.counters(FlowKey::port(ci)).keepalives_tx >= 3);
}

#[test]
fn bad_packets_are_dropped_and_counted_by_reason_without_harming_another_flow() {
    let dp = Dataplane::start("core", &[]);
    let p = SrtpProfile::AesCm128HmacSha1_80;
    let (ka, kb) = (master_key(p, 41), master_key(p, 42));
    let victim = core_call(
        &dp,
        11,
        params(p, &ka),
        params(p, &kb),
        params(p, &kb),
        params(p, &ka),
        flags::LATCH | flags::SSRC_LOCK,
    );
    let other = core_call(
        &dp,
        12,
        params(p, &ka),
        params(p, &kb),
        params(p, &kb),
        params(p, &ka),
        0,
    );
    let mut tx_v = context(p, &ka);
    let mut tx_o = context(p, &ka);
    let mut rx_o = context(p, &kb);
    let protect = |ctx: &mut edgeway_srtp::SrtpContext, ssrc: u32, seq: u16| {
        let mut b = rtp(ssrc, seq, 0);
        let n = b.len();
        b.resize(n + 64, 0);
        let m = ctx.protect_rtp(&mut b, n).unwrap();
        b.truncate(m);
        b
    };
    let v_dst = std::net::SocketAddrV4::new(LO, victim.ce);
    let o_dst = std::net::SocketAddrV4::new(LO, other.ce);
    // Open both flows with a good packet each.
    let first = protect(&mut tx_v, 0xabc, 1);
    send_until_forwarded(&victim.edge, v_dst, &first, &victim.phone);
    let first_o = protect(&mut tx_o, 0xdef, 1);
    send_until_forwarded(&other.edge, o_dst, &first_o, &other.phone);

    let good = protect(&mut tx_v, 0xabc, 2);
    let mut forged = protect(&mut tx_v, 0xabc, 3);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let wrong_ssrc = protect(&mut tx_v, 0xbad, 4);
    let foreign = party();
    let bad: Vec<(&std::net::UdpSocket, Vec<u8>, DropReason)> = vec![
        (
            &victim.edge,
            b"garbage, not RTP at all".to_vec(),
            DropReason::Malformed,
        ),
        (&victim.edge, good[..7].to_vec(), DropReason::Malformed),
        (&victim.edge, forged, DropReason::AuthFailed),
        (&victim.edge, first.clone(), DropReason::Replay),
        (&victim.edge, wrong_ssrc, DropReason::WrongSsrc),
        (&foreign, good.clone(), DropReason::ForeignSource),
    ];
    for (seq_o, (sock, pkt, _)) in (2u16..).zip(bad.iter()) {
        sock.send_to(pkt, v_dst).unwrap();
        // the other flow's packet right behind each bad one goes through untouched
        let p = protect(&mut tx_o, 0xdef, seq_o);
        other.edge.send_to(&p, o_dst).unwrap();
        let (mut out, _) = recv_n(&other.phone, 1).pop().unwrap();
        let n = out.len();
        out.resize(n + 16, 0);
        rx_o.unprotect_rtp(&mut out, n)
            .expect("the other flow's packet decrypts");
    }
    // The good packet after the attack still passes.
    victim.edge.send_to(&good, v_dst).unwrap();
    assert!(
        recv_n(&victim.phone, 1).len() == 1,
        "the victim flow still forwards"
    );
    let c = dp.counters(FlowKey::port(victim.ce));
    for (_, _, reason) in &bad {
        let want = bad.iter().filter(|b| b.2 == *reason).count() as u64;
        assert_eq!(c.drops[reason.index()], want, "{reason:?}: {c:?}");
    }
    let o = dp.counters(FlowKey::port(other.ce));
    assert_eq!(o.drops.iter().sum::<u64>(), 0, "{o:?}");
}

#[test]
fn an_entry_that_cannot_be_installed_is_counted_and_harms_no_other_flow() {
    let dp = Dataplane::start("core", &[]);
    let p = SrtpProfile::AesCm128HmacSha1_80;
    let (ka, kb) = (master_key(p, 51), master_key(p, 52));
    let call = core_call(
        &dp,
        21,
        params(p, &ka),
        params(p, &kb),
        params(p, &kb),
        params(p, &ka),
        0,
    );
    assert_eq!(dp.node_drops(DropReason::BadEntry), 0);
    // Another process holds the port the entry would receive on: the worker cannot bind it.
    let squatter = party();
    let taken = addr(&squatter).port();
    dp.table
        .insert(
            FlowKey::port(taken),
            entry(
                22,
                Action::Rekey,
                0,
                call.ci,
                Some(addr(&call.phone)),
                FlowKey::port(call.ci),
                params(p, &ka),
                params(p, &kb),
            ),
        )
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while dp.node_drops(DropReason::BadEntry) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the refused entry was never counted"
        );
    }
    assert_eq!(dp.node_drops(DropReason::BadEntry), 1, "counted once");
    // The call installed before still re-keys.
    let mut tx = context(p, &ka);
    let mut rx = context(p, &kb);
    let mut b = rtp(0x77, 1, 0);
    let n = b.len();
    b.resize(n + 16, 0);
    let m = tx.protect_rtp(&mut b, n).unwrap();
    let dst = std::net::SocketAddrV4::new(LO, call.ce);
    let mut out = send_until_forwarded(&call.edge, dst, &b[..m], &call.phone);
    let n = out.len();
    out.resize(n + 16, 0);
    rx.unprotect_rtp(&mut out, n)
        .expect("re-keyed under the other leg's key");
}
