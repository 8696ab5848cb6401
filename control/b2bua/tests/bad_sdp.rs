//! Bad SDP on either role: each refusal is a typed error with its SIP status and Warning,
//! leaves no entry and no allocated port behind, and leaves the call able to take the next
//! good message.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use edgeway_b2bua::{CoreCall, EdgeCall, InsideSecurity, Leg, PlanError};

fn key_lines() -> Vec<String> {
    lines(&jabber_keys(3))
}

fn edit(body: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    String::from_utf8(body)
        .unwrap()
        .replace(from, to)
        .into_bytes()
}

/// (what is wrong, body from the client, expected status, a phrase of the Warning).
fn bad_offers() -> Vec<(&'static str, Vec<u8>, u16, &'static str)> {
    let k = key_lines();
    let audio = |port: u16, proto: &str, crypto: &[String], extra: &str| {
        sdp("198.51.100.7", &[("audio", port, proto, crypto, extra)])
    };
    let with_ip = |ip: &str| {
        edit(
            audio(50000, "RTP/SAVP", &k, ""),
            "c=IN IP4 198.51.100.7",
            &format!("c=IN {ip}"),
        )
    };
    let mut huge = audio(50000, "RTP/SAVP", &k, "");
    huge.extend(b"a=x-pad:".iter().chain(&[b'x'; 20_000]).chain(b"\r\n"));
    let many: Vec<(&str, u16, &str, &[String], &str)> = (0..9)
        .map(|i| ("audio", 50000 + 2 * i, "RTP/SAVP", &k[..], ""))
        .collect();
    vec![
        (
            "no crypto",
            audio(50000, "RTP/SAVP", &[], ""),
            488,
            "SRTP is required",
        ),
        (
            "plain RTP/AVP",
            audio(50000, "RTP/AVP", &[], ""),
            488,
            "SRTP is required",
        ),
        (
            "unknown suites",
            audio(
                50000,
                "RTP/SAVP",
                &[
                    "1 F8_128_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                        .into(),
                    "2 AES_CM_128_HMAC_SHA1_80 inline:QUJD|2^20".into(),
                ],
                "",
            ),
            488,
            "F8_128_HMAC_SHA1_80",
        ),
        (
            "odd RTP port",
            audio(50001, "RTP/SAVP", &k, ""),
            488,
            "is odd",
        ),
        (
            "port above 65535",
            edit(
                audio(50000, "RTP/SAVP", &k, ""),
                "m=audio 50000",
                "m=audio 65538",
            ),
            400,
            "bad port",
        ),
        (
            "port count",
            edit(
                audio(50000, "RTP/SAVP", &k, ""),
                "m=audio 50000",
                "m=audio 50000/2",
            ),
            488,
            "port/count",
        ),
        (
            "bad a=rtcp",
            audio(50000, "RTP/SAVP", &k, "a=rtcp:99999\r\n"),
            488,
            "a=rtcp",
        ),
        (
            "all rejected",
            audio(0, "RTP/SAVP", &k, ""),
            488,
            "no usable RTP",
        ),
        (
            "multicast",
            with_ip("IP4 224.2.1.1/127"),
            488,
            "not a unicast IPv4",
        ),
        (
            "broadcast",
            with_ip("IP4 255.255.255.255"),
            488,
            "not a unicast IPv4",
        ),
        (
            "a host name",
            with_ip("IP4 client.example.com"),
            488,
            "not a unicast IPv4",
        ),
        ("IPv6", with_ip("IP6 2001:db8::7"), 488, "IPv4-only"),
        ("huge body", huge, 413, "exceeds the limit"),
        (
            "too many m= lines",
            sdp("198.51.100.7", &many),
            488,
            "9 m= lines",
        ),
        ("not SDP", b"hello".to_vec(), 400, "malformed SDP"),
    ]
}

#[test]
fn the_core_refuses_bad_client_offers_precisely_and_leaves_nothing() {
    let t = Table::new();
    let mut pool = t.table.ports();
    let mut r = rng(8);
    for (what, body, status, phrase) in bad_offers() {
        let mut call = CoreCall::new(&core_config(), 1, InsideSecurity::Secure);
        let err = call
            .offer(Leg::Outside, NOW, &body, &mut pool, &mut r)
            .unwrap_err();
        let warning = err.warning("edgeway-core");
        assert_eq!(err.status(), status, "{what}: {err}");
        assert!(warning.contains(phrase), "{what}: {warning}");
        assert!(
            warning.starts_with(&format!("{} edgeway-core \"", err.warn_code())),
            "{warning}"
        );
        assert!(
            call.entries().is_empty() && call.ports().is_empty(),
            "{what}"
        );
        assert_eq!(t.ports_in_use(), 0, "{what}: a port left allocated");
        // The call is unharmed: a good offer goes through.
        let (good, _) = jabber_offer(4, "");
        call.offer(Leg::Outside, NOW, &good, &mut pool, &mut r)
            .unwrap();
        call.teardown(NOW, &mut pool);
    }
    assert_eq!(t.ports_in_use(), 0);
}

#[test]
fn the_edge_refuses_the_address_and_size_faults_and_leaves_nothing() {
    let t = Table::new();
    let mut pool = t.table.ports();
    for (what, body, status, _) in bad_offers() {
        let mut call = EdgeCall::new(&edge_config(), 1, CLIENT_IP);
        match call.offer(Leg::Outside, NOW, &body, &mut pool) {
            // Crypto is the core's business; everything else is refused here too.
            Ok(_) => assert!(
                what.contains("crypto") || what.contains("RTP/AVP") || what.contains("suites"),
                "{what} passed the edge"
            ),
            Err(e) => assert_eq!(e.status(), status, "{what}: {e}"),
        }
        call.teardown(NOW, &mut pool);
        assert_eq!(t.ports_in_use(), 0, "{what}");
    }
}

#[test]
fn a_bad_answer_keeps_the_offer_pending_and_a_bad_reoffer_keeps_the_call() {
    let t = Table::new();
    let mut pool = t.table.ports();
    let mut r = rng(9);
    let mut call = CoreCall::new(&core_config(), 2, InsideSecurity::Secure);
    let (offer, _) = jabber_offer(4, "");
    let inside = call
        .offer(Leg::Outside, NOW, &offer, &mut pool, &mut r)
        .unwrap();
    let offered = crypto_of(&inside.sdp, 0);
    // The phone answers a tag the core never offered, then a suite under the wrong tag,
    // then no crypto, then two m= lines: each refused, nothing programmed.
    let wrong_tag =
        edgeway_srtp::sdes::CryptoAttribute::generate(9, offered[0].profile, &mut rng(1));
    let wrong_suite =
        edgeway_srtp::sdes::CryptoAttribute::generate(1, offered[3].profile, &mut rng(1));
    let phone = |crypto: &[String], n: usize| {
        let m: Vec<(&str, u16, &str, &[String], &str)> = (0..n)
            .map(|i| ("audio", 20000 + 2 * i as u16, "RTP/SAVP", crypto, ""))
            .collect();
        sdp("10.1.1.9", &m)
    };
    for (body, expect) in [
        (phone(&lines(&[wrong_tag]), 1), "was not offered"),
        (phone(&lines(&[wrong_suite]), 1), "was offered as"),
        (phone(&[], 1), "SRTP is required"),
        (phone(&lines(&[offered[0].clone()]), 2), "the offer had 1"),
    ] {
        let err = call
            .answer(Leg::Inside, NOW, &body, &mut pool, &mut r)
            .unwrap_err();
        assert!(err.to_string().contains(expect), "{err}");
        assert!(call.entries().is_empty());
    }
    assert_eq!(
        call.answer(Leg::Outside, NOW, &offer, &mut pool, &mut r)
            .unwrap_err(),
        PlanError::NoPendingOffer(Leg::Outside)
    );
    assert_eq!(
        call.offer(Leg::Inside, NOW, &offer, &mut pool, &mut r)
            .unwrap_err()
            .status(),
        491
    );
    // A good answer still completes the call.
    let key = edgeway_srtp::sdes::CryptoAttribute::generate(1, offered[0].profile, &mut rng(2));
    let out = call
        .answer(
            Leg::Inside,
            NOW,
            &phone(&lines(&[key]), 1),
            &mut pool,
            &mut r,
        )
        .unwrap();
    t.apply(&out.flows);
    let before = call.entries().clone();
    // A re-offer without crypto is refused; the established call keeps its entries.
    let err = call
        .offer(
            Leg::Outside,
            NOW,
            &sdp(
                "198.51.100.7",
                &[
                    ("audio", 50000, "RTP/SAVP", &[], ""),
                    ("video", 50002, "RTP/SAVP", &[], ""),
                ],
            ),
            &mut pool,
            &mut r,
        )
        .unwrap_err();
    assert_eq!(err.status(), 488);
    assert_eq!(call.entries(), &before);
    assert_eq!(
        t.ports_in_use(),
        4,
        "the refused video stream's pairs were given back"
    );
    // A non-secure profile refuses a phone that offers only SRTP.
    let mut ns = CoreCall::new(&core_config(), 3, InsideSecurity::NonSecure);
    let err = ns
        .offer(Leg::Inside, NOW, &phone(&key_lines(), 1), &mut pool, &mut r)
        .unwrap_err();
    assert!(matches!(err, PlanError::ProfileMismatch { .. }), "{err}");
    t.apply(&call.teardown(NOW, &mut pool));
    assert_eq!((t.entries(), t.ports_in_use()), (0, 0));
}
