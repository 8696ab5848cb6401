//! The core: re-keying between the outside leg (the client, through the edge's demux port)
//! and the inside leg (the phone): SRTP to SRTP across suites, SRTP to RTP, RTP to SRTP,
//! SRTCP on its own port and multiplexed on the RTP port (RFC 5761). Every output is checked
//! by a separate context holding the receiving party's keys.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use edgeway_map_schema::flags;
use edgeway_media::MediaWorker;
use edgeway_srtp::{SrtpContext, SrtpProfile};

/// The four parties' contexts for `keys` (None where that leg is plain).
struct Parties {
    client_tx: Option<SrtpContext>,
    client_rx: Option<SrtpContext>,
    phone_tx: Option<SrtpContext>,
    phone_rx: Option<SrtpContext>,
}

fn parties(keys: Keys) -> Parties {
    let ctx = |pr: Option<SrtpProfile>, seed| pr.map(|p| context(p, seed));
    Parties {
        client_tx: ctx(keys.outside, SEED_CLIENT_TX),
        client_rx: ctx(keys.outside, SEED_CLIENT_RX),
        phone_tx: ctx(keys.inside, SEED_PHONE_TX),
        phone_rx: ctx(keys.inside, SEED_PHONE_RX),
    }
}

fn seal(ctx: &mut Option<SrtpContext>, p: &[u8]) -> Vec<u8> {
    ctx.as_mut().map_or_else(|| p.to_vec(), |c| protect(c, p))
}

fn open(ctx: &mut Option<SrtpContext>, p: &[u8]) -> Vec<u8> {
    ctx.as_mut()
        .map_or_else(|| p.to_vec(), |c| unprotect(c, p).unwrap())
}

/// Phone speaks first (latches), then both directions carry 300 packets across a sequence
/// wrap; each output opens under the receiver's keys to the exact packet sent.
fn both_ways(keys: Keys) {
    let mut w = MediaWorker::new(core_config());
    core_stream(&mut w, keys, E_PORT, P_PORT, EDGE, 0);
    let mut ps = parties(keys);
    for i in 0..300u16 {
        let seq = 65_400u16.wrapping_add(i);
        let plain = rtp(0xfeed, seq, u32::from(i) * 160, 160);
        let out = sent(
            feed(
                &mut w,
                u64::from(i),
                P_PORT,
                PHONE,
                &seal(&mut ps.phone_tx, &plain),
            ),
            E_PORT,
            EDGE,
        );
        assert_eq!(
            open(&mut ps.client_rx, &out),
            plain,
            "{keys:?} phone -> client {i}"
        );
        let plain = rtp(0xc11e, seq.wrapping_add(7), u32::from(i) * 160, 160);
        let out = sent(
            feed(
                &mut w,
                u64::from(i),
                E_PORT,
                EDGE,
                &seal(&mut ps.client_tx, &plain),
            ),
            P_PORT,
            PHONE,
        );
        assert_eq!(
            open(&mut ps.phone_rx, &out),
            plain,
            "{keys:?} client -> phone {i}"
        );
    }
}

#[test]
fn srtp_to_srtp_in_every_suite_pairing_that_matters() {
    for (outside, inside) in [
        (AES, AES),
        (GCM, GCM),
        (AES, GCM),
        (GCM, AES),
        (SrtpProfile::AesCm256HmacSha1_32, SrtpProfile::AeadAes256Gcm),
    ] {
        both_ways(Keys {
            outside: Some(outside),
            inside: Some(inside),
        });
    }
}

#[test]
fn srtp_to_rtp_and_rtp_to_srtp() {
    both_ways(Keys {
        outside: Some(AES),
        inside: None,
    });
    both_ways(Keys {
        outside: None,
        inside: Some(GCM),
    });
}

#[test]
fn srtcp_on_its_own_port_and_multiplexed() {
    let keys = Keys {
        outside: Some(AES),
        inside: Some(GCM),
    };
    let mut w = MediaWorker::new(core_config());
    core_stream(&mut w, keys, E_PORT, P_PORT, EDGE, 0);
    core_stream(&mut w, keys, E_PORT + 1, P_PORT + 1, EDGE_RTCP, flags::RTCP);
    let mut ps = parties(keys);

    // Own port: the phone's RR latches its RTCP source and reaches the edge's RTCP port.
    for n in 0..5u32 {
        let rr = rtcp_rr(0xfeed + n);
        let srtcp = protect_rtcp(ps.phone_tx.as_mut().unwrap(), &rr);
        let out = sent(
            feed(&mut w, 0, P_PORT + 1, PHONE_RTCP, &srtcp),
            E_PORT + 1,
            EDGE_RTCP,
        );
        assert_eq!(
            unprotect_rtcp(ps.client_rx.as_mut().unwrap(), &out).unwrap(),
            rr
        );
        let rr = rtcp_rr(0xc11e);
        let srtcp = protect_rtcp(ps.client_tx.as_mut().unwrap(), &rr);
        let out = sent(
            feed(&mut w, 0, E_PORT + 1, EDGE_RTCP, &srtcp),
            P_PORT + 1,
            PHONE_RTCP,
        );
        assert_eq!(
            unprotect_rtcp(ps.phone_rx.as_mut().unwrap(), &out).unwrap(),
            rr
        );
    }

    // rtcp-mux: SRTCP on the RTP ports, told apart by its second byte, between RTP packets.
    let plain = rtp(0xfeed, 1, 0, 100);
    let srtp = protect(ps.phone_tx.as_mut().unwrap(), &plain);
    let out = sent(feed(&mut w, 0, P_PORT, PHONE, &srtp), E_PORT, EDGE);
    assert_eq!(
        unprotect(ps.client_rx.as_mut().unwrap(), &out).unwrap(),
        plain
    );
    // A second pair of contexts for the muxed SRTCP: index spaces are per port here.
    let mut phone_tx = context(GCM, SEED_PHONE_TX);
    let mut client_rx = context(AES, SEED_CLIENT_RX);
    let rr = rtcp_rr(0xfeed);
    let out = sent(
        feed(&mut w, 0, P_PORT, PHONE, &protect_rtcp(&mut phone_tx, &rr)),
        E_PORT,
        EDGE,
    );
    assert_eq!(unprotect_rtcp(&mut client_rx, &out).unwrap(), rr);
    let plain = rtp(0xfeed, 2, 160, 100);
    let out = sent(
        feed(
            &mut w,
            0,
            P_PORT,
            PHONE,
            &protect(ps.phone_tx.as_mut().unwrap(), &plain),
        ),
        E_PORT,
        EDGE,
    );
    assert_eq!(
        unprotect(ps.client_rx.as_mut().unwrap(), &out).unwrap(),
        plain
    );
}

#[test]
fn keys_are_per_direction_and_never_cross() {
    // The client's own sending key must not open what the core sends it.
    let keys = Keys {
        outside: Some(AES),
        inside: Some(AES),
    };
    let mut w = MediaWorker::new(core_config());
    core_stream(&mut w, keys, E_PORT, P_PORT, EDGE, 0);
    let plain = rtp(1, 1, 0, 50);
    let out = sent(
        feed(
            &mut w,
            0,
            P_PORT,
            PHONE,
            &protect(&mut context(AES, SEED_PHONE_TX), &plain),
        ),
        E_PORT,
        EDGE,
    );
    assert!(unprotect(&mut context(AES, SEED_CLIENT_TX), &out).is_err());
    assert_eq!(
        unprotect(&mut context(AES, SEED_CLIENT_RX), &out).unwrap(),
        plain
    );
}
