//! The core's B2BUA media: SRTP required towards the edge with fresh keys on each leg, the
//! inside leg by the phone's profile, Rekey entries whose keys are the SDP's, hold and
//! resume, media changes, and teardown freeing everything.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use edgeway_b2bua::{CoreCall, InsideSecurity, Leg};
use edgeway_map_schema::{flags, Action, Endpoint, FlowKey, SrtpParams};
use edgeway_srtp::SrtpProfile;

#[test]
fn client_calls_a_secure_phone_with_fresh_keys_on_both_legs() {
    let t = Table::new();
    let mut pool = t.table.ports();
    let mut r = rng(1);
    let mut call = CoreCall::new(&core_config(), 5, InsideSecurity::Secure);
    // The edge forwards the client's offer with its demux address.
    let (offer, client_keys) = jabber_offer(10, "");
    let offer = String::from_utf8(offer)
        .unwrap()
        .replace("198.51.100.7", "172.16.0.1")
        .replace("50000", "2776");
    let inside = call
        .offer(Leg::Outside, NOW, offer.as_bytes(), &mut pool, &mut r)
        .unwrap();
    assert!(inside.flows.is_empty(), "entries come at the answer");
    assert_eq!(
        call.ports().len(),
        2,
        "an edge-facing and a phone-facing pair"
    );
    let (e, p) = (call.ports()[0], call.ports()[1]);
    // Towards the phone: the core's inside address, fresh keys of all six suites, strongest
    // first, none of them the client's.
    assert_eq!(address_of(&inside.sdp, 0), ("10.0.0.2".into(), p));
    let offered = crypto_of(&inside.sdp, 0);
    let suites: Vec<_> = offered.iter().map(|c| c.profile).collect();
    assert_eq!(suites, SrtpProfile::ALL.to_vec());
    for o in &offered {
        for c in &client_keys {
            assert_ne!(
                o.keys[0].key.key(),
                c.keys[0].key.key(),
                "the client's key never goes inside"
            );
        }
    }
    assert!(
        !String::from_utf8_lossy(&inside.sdp).contains("172.16.0.1"),
        "the edge's address stays outside"
    );
    // The phone takes AES_CM_128_HMAC_SHA1_80 (tag 4 of the core's offer).
    let (answer, phone_key) = phone_answer(&inside.sdp, Some(4), 20, "");
    let phone_key = phone_key.unwrap();
    let outside = call
        .answer(Leg::Inside, NOW, &answer, &mut pool, &mut r)
        .unwrap();
    // Towards the edge: one fresh key of the strongest suite the client offered, under its tag.
    assert_eq!(address_of(&outside.sdp, 0), ("172.16.0.2".into(), e));
    let answered = crypto_of(&outside.sdp, 0);
    assert_eq!(answered.len(), 1);
    assert_eq!(
        (answered[0].tag, answered[0].profile),
        (3, SrtpProfile::AeadAes256Gcm)
    );
    assert_ne!(
        answered[0].keys[0].key.key(),
        client_keys[2].keys[0].key.key()
    );
    assert_ne!(answered[0].keys[0].key.key(), phone_key.keys[0].key.key());
    assert!(
        !String::from_utf8_lossy(&outside.sdp).contains("10.1.1.9"),
        "the phone's address stays inside"
    );
    // Four Rekey entries; the keys are exactly the SDP's.
    let u = &outside.flows;
    assert_eq!((u.insert.len(), u.remove.len()), (4, 0));
    let get = |port: u16| call.entries()[&FlowKey::port(port)];
    let (from_edge, from_phone) = (get(e), get(p));
    assert_eq!(from_edge.action(), Some(Action::Rekey));
    assert_eq!(from_edge.srtp_in, params(&client_keys[2]));
    assert_eq!(
        from_edge.srtp_out,
        params(&offered[3]),
        "the core->phone key it offered under tag 4"
    );
    assert_eq!(
        (from_edge.out_local_port, from_edge.out_remote),
        (p, Endpoint::new([10, 1, 1, 9], 20000))
    );
    assert_eq!(from_phone.srtp_in, params(&phone_key));
    assert_eq!(from_phone.srtp_out, params(&answered[0]));
    assert_eq!(
        (from_phone.out_local_port, from_phone.out_remote),
        (e, Endpoint::new([172, 16, 0, 1], 2776))
    );
    assert!(
        from_phone.has(flags::LATCH) && from_phone.has(flags::KEEPALIVE),
        "the core sends first towards the demux port"
    );
    assert_eq!(from_phone.permit_ip, [10, 1, 1, 9]);
    assert_eq!(
        (from_edge.peer, from_phone.peer),
        (FlowKey::port(p), FlowKey::port(e))
    );
    let rtcp_edge = get(e + 1);
    assert!(rtcp_edge.has(flags::RTCP));
    assert_eq!(
        (rtcp_edge.out_local_port, rtcp_edge.out_remote.port),
        (p + 1, 20001)
    );
    assert_eq!(get(p + 1).out_remote, Endpoint::new([172, 16, 0, 1], 2777));
    assert!(call
        .entries()
        .values()
        .all(|x| x.worker == 0 && x.flow_id == 5 << 8 && x.clock_rate == 8000));
    // Debug output (logs) never carries key material.
    let debug = format!("{call:?} {u:?}");
    for k in client_keys
        .iter()
        .chain(&answered)
        .chain(&offered)
        .chain([&phone_key])
    {
        let line = k.to_string();
        let inline = line
            .split("inline:")
            .nth(1)
            .unwrap()
            .split('|')
            .next()
            .unwrap();
        assert!(!debug.contains(inline), "a key in Debug output");
    }
    assert!(
        !debug.contains(&format!("{:?}", from_edge.srtp_in.key)),
        "key bytes in Debug output"
    );
    t.apply(u);
    assert_eq!(t.entries(), 4);
    assert_eq!(t.ports_in_use(), 4);
    // BYE: everything goes.
    let bye = call.teardown(NOW + 10, &mut pool);
    assert_eq!(bye.remove.len(), 4);
    assert_eq!(bye.released_ports.len(), 2);
    t.apply(&bye);
    assert_eq!((t.entries(), t.ports_in_use()), (0, 0));
    assert!(
        call.offer(Leg::Outside, NOW, offer.as_bytes(), &mut pool, &mut r)
            .is_err(),
        "an ended call takes nothing"
    );
}

#[test]
fn a_non_secure_phone_gets_plain_rtp_inside_and_srtp_stays_outside() {
    let t = Table::new();
    let mut pool = t.table.ports();
    let mut r = rng(2);
    let mut call = CoreCall::new(&core_config(), 6, InsideSecurity::NonSecure);
    let (offer, client_keys) = jabber_offer(11, "");
    let inside = call
        .offer(Leg::Outside, NOW, &offer, &mut pool, &mut r)
        .unwrap();
    let m = &parse(&inside.sdp).media()[0].clone();
    assert_eq!(m.proto, "RTP/AVP");
    assert!(crypto_of(&inside.sdp, 0).is_empty());
    let (answer, _) = phone_answer(&inside.sdp, None, 0, "");
    let outside = call
        .answer(Leg::Inside, NOW, &answer, &mut pool, &mut r)
        .unwrap();
    assert_eq!(parse(&outside.sdp).media()[0].proto, "RTP/SAVP");
    let answered = crypto_of(&outside.sdp, 0);
    let (e, p) = (call.ports()[0], call.ports()[1]);
    let from_edge = call.entries()[&FlowKey::port(e)];
    let from_phone = call.entries()[&FlowKey::port(p)];
    assert_eq!(from_edge.srtp_in, params(&client_keys[2]));
    assert_eq!(from_edge.srtp_out, SrtpParams::PLAIN);
    assert_eq!(from_phone.srtp_in, SrtpParams::PLAIN);
    assert_eq!(from_phone.srtp_out, params(&answered[0]));
    t.apply(&outside.flows);
    t.apply(&call.teardown(NOW, &mut pool));
    assert_eq!((t.entries(), t.ports_in_use()), (0, 0));
}

#[test]
fn a_phone_calls_the_client_offering_every_suite_and_the_client_picks() {
    for inside in [InsideSecurity::Secure, InsideSecurity::NonSecure] {
        let t = Table::new();
        let mut pool = t.table.ports();
        let mut r = rng(3);
        let mut call = CoreCall::new(&core_config(), 7, inside);
        let phone_keys = jabber_keys(30);
        let (proto, crypto) = match inside {
            InsideSecurity::Secure => ("RTP/SAVP", lines(&phone_keys[..1])),
            InsideSecurity::NonSecure => ("RTP/AVP", vec![]),
        };
        let offer = sdp("10.1.1.9", &[("audio", 20000, proto, &crypto, "")]);
        let outside = call
            .offer(Leg::Inside, NOW, &offer, &mut pool, &mut r)
            .unwrap();
        let offered = crypto_of(&outside.sdp, 0);
        assert_eq!(
            offered.iter().map(|c| c.profile).collect::<Vec<_>>(),
            SrtpProfile::ALL.to_vec()
        );
        assert_eq!(parse(&outside.sdp).media()[0].proto, "RTP/SAVP");
        // The client (behind the edge) answers AES_CM_128_HMAC_SHA1_80, tag 4.
        let client_key = edgeway_srtp::sdes::CryptoAttribute::generate(
            4,
            SrtpProfile::AesCm128HmacSha1_80,
            &mut rng(31),
        );
        let answer = sdp(
            "172.16.0.1",
            &[(
                "audio",
                2776,
                "RTP/SAVP",
                &lines(std::slice::from_ref(&client_key)),
                "",
            )],
        );
        let inside_answer = call
            .answer(Leg::Outside, NOW, &answer, &mut pool, &mut r)
            .unwrap();
        let (e, p) = (call.ports()[0], call.ports()[1]);
        let from_edge = call.entries()[&FlowKey::port(e)];
        let from_phone = call.entries()[&FlowKey::port(p)];
        assert_eq!(from_edge.srtp_in, params(&client_key));
        assert_eq!(from_phone.srtp_out, params(&offered[3]));
        match inside {
            InsideSecurity::Secure => {
                let to_phone = crypto_of(&inside_answer.sdp, 0);
                assert_eq!(
                    (to_phone.len(), to_phone[0].tag, to_phone[0].profile),
                    (1, 1, SrtpProfile::AesCm128HmacSha1_80)
                );
                assert_ne!(to_phone[0].keys[0].key.key(), client_key.keys[0].key.key());
                assert_eq!(from_phone.srtp_in, params(&phone_keys[0]));
                assert_eq!(from_edge.srtp_out, params(&to_phone[0]));
            }
            InsideSecurity::NonSecure => {
                assert!(crypto_of(&inside_answer.sdp, 0).is_empty());
                assert_eq!(parse(&inside_answer.sdp).media()[0].proto, "RTP/AVP");
                assert_eq!(
                    (from_phone.srtp_in, from_edge.srtp_out),
                    (SrtpParams::PLAIN, SrtpParams::PLAIN)
                );
            }
        }
        t.apply(&inside_answer.flows);
        t.apply(&call.teardown(NOW, &mut pool));
        assert_eq!((t.entries(), t.ports_in_use()), (0, 0));
    }
}

/// An established secure call: returns (call, edge-facing port, client keys, the core's
/// outside answer key).
fn established(t: &Table, r: &mut rand::rngs::StdRng) -> (CoreCall, u16) {
    let mut pool = t.table.ports();
    let mut call = CoreCall::new(&core_config(), 9, InsideSecurity::Secure);
    let (offer, _) = jabber_offer(12, "");
    let inside = call.offer(Leg::Outside, NOW, &offer, &mut pool, r).unwrap();
    let (answer, _) = phone_answer(&inside.sdp, Some(1), 40, "");
    let out = call
        .answer(Leg::Inside, NOW, &answer, &mut pool, r)
        .unwrap();
    t.apply(&out.flows);
    let e = call.ports()[0];
    (call, e)
}

#[test]
fn hold_drops_the_held_sides_rtp_and_resume_restores_it_with_the_same_keys() {
    let t = Table::new();
    let mut pool = t.table.ports();
    let mut r = rng(4);
    let (mut call, e) = established(&t, &mut r);
    let before = call.entries().clone();
    let first_inside_key = call.entries()[&FlowKey::port(e)].srtp_out;
    // The client holds (a=inactive), re-offering the same key.
    let (hold, _) = jabber_offer(12, "a=inactive\r\n");
    let inside = call
        .offer(Leg::Outside, NOW + 1000, &hold, &mut pool, &mut r)
        .unwrap();
    assert!(has_line(&inside.sdp, "a=inactive"));
    assert!(inside.flows.is_empty());
    let offered = crypto_of(&inside.sdp, 0);
    assert_eq!(offered.len(), 1, "the agreed key again, not six new ones");
    assert_eq!(params(&offered[0]), first_inside_key);
    let (answer, _) = phone_answer(&inside.sdp, Some(offered[0].tag), 40, "a=inactive\r\n");
    let out = call
        .answer(Leg::Inside, NOW + 1000, &answer, &mut pool, &mut r)
        .unwrap();
    assert_eq!(out.flows.remove, vec![]);
    assert_eq!(
        out.flows.insert.len(),
        1,
        "only the client's RTP ingress changes"
    );
    let (k, held) = out.flows.insert[0];
    assert_eq!(k, FlowKey::port(e));
    assert_eq!(held.action(), Some(Action::Drop));
    assert_eq!(crypto_of(&out.sdp, 0), crypto_of(&out.sdp, 0));
    t.apply(&out.flows);
    // Resume.
    let (resume, _) = jabber_offer(12, "a=sendrecv\r\n");
    let inside = call
        .offer(Leg::Outside, NOW + 2000, &resume, &mut pool, &mut r)
        .unwrap();
    let (answer, _) = phone_answer(&inside.sdp, Some(offered[0].tag), 40, "");
    let out = call
        .answer(Leg::Inside, NOW + 2000, &answer, &mut pool, &mut r)
        .unwrap();
    assert_eq!(out.flows.insert.len(), 1);
    assert_eq!(
        call.entries(),
        &before,
        "back to the call's entries before the hold"
    );
    t.apply(&out.flows);
    t.apply(&call.teardown(NOW, &mut pool));
    assert_eq!((t.entries(), t.ports_in_use()), (0, 0));
}

#[test]
fn a_media_change_replaces_keys_adds_video_and_a_refused_reinvite_rolls_back() {
    let t = Table::new();
    let mut pool = t.table.ports();
    let mut r = rng(5);
    let (mut call, e) = established(&t, &mut r);
    let audio_before = call.entries().clone();
    // The client re-offers with new keys and adds video; the phone refuses (488).
    let keys = jabber_keys(99);
    let reoffer = sdp(
        "198.51.100.7",
        &[
            ("audio", 50000, "RTP/SAVP", &lines(&keys), ""),
            ("video", 50002, "RTP/SAVP", &lines(&keys), ""),
        ],
    );
    let inside = call
        .offer(Leg::Outside, NOW, &reoffer, &mut pool, &mut r)
        .unwrap();
    assert_eq!(call.ports().len(), 4, "a video edge pair and phone pair");
    assert_eq!(t.ports_in_use(), 8);
    let back = call.offer_failed(NOW, &mut pool);
    assert_eq!(
        (
            back.insert.len(),
            back.remove.len(),
            back.released_ports.len()
        ),
        (0, 0, 2)
    );
    assert_eq!(call.entries(), &audio_before);
    assert_eq!(t.ports_in_use(), 4);
    // Again, and this time the phone accepts both.
    let inside2 = call
        .offer(Leg::Outside, NOW, &reoffer, &mut pool, &mut r)
        .unwrap();
    assert_eq!(parse(&inside2.sdp).media().len(), 2);
    let _ = inside;
    let offered_video = crypto_of(&inside2.sdp, 1);
    let audio_tag = crypto_of(&inside2.sdp, 0)[0].tag;
    let pk = edgeway_srtp::sdes::CryptoAttribute::generate(
        audio_tag,
        crypto_of(&inside2.sdp, 0)[0].profile,
        &mut rng(7),
    );
    let vk =
        edgeway_srtp::sdes::CryptoAttribute::generate(1, offered_video[0].profile, &mut rng(8));
    let answer = sdp(
        "10.1.1.9",
        &[
            (
                "audio",
                20000,
                "RTP/SAVP",
                &lines(std::slice::from_ref(&pk)),
                "",
            ),
            (
                "video",
                20002,
                "RTP/SAVP",
                &lines(std::slice::from_ref(&vk)),
                "",
            ),
        ],
    );
    let out = call
        .answer(Leg::Inside, NOW, &answer, &mut pool, &mut r)
        .unwrap();
    // Audio: the client's new key in, the phone's new key in; video: four new entries.
    let from_edge = call.entries()[&FlowKey::port(e)];
    assert_eq!(from_edge.srtp_in, params(&keys[2]));
    let replaced: Vec<_> = out
        .flows
        .insert
        .iter()
        .filter(|(k, _)| audio_before.contains_key(k))
        .collect();
    assert_eq!(
        replaced.len(),
        4,
        "every audio entry has a changed key on one side"
    );
    assert_eq!(out.flows.insert.len(), 8);
    assert!(call
        .entries()
        .values()
        .filter(|x| x.flow_id == (9 << 8) | 1)
        .all(|x| x.clock_rate == 90_000));
    t.apply(&out.flows);
    assert_eq!(t.entries(), 8);
    // The phone rejects video in the next re-INVITE: its four entries go, its pairs too.
    let reoffer2 = sdp(
        "198.51.100.7",
        &[
            ("audio", 50000, "RTP/SAVP", &lines(&keys), ""),
            ("video", 0, "RTP/SAVP", &[], ""),
        ],
    );
    let inside3 = call
        .offer(Leg::Outside, NOW, &reoffer2, &mut pool, &mut r)
        .unwrap();
    assert_eq!(parse(&inside3.sdp).media()[1].port, 0);
    let answer = sdp(
        "10.1.1.9",
        &[
            (
                "audio",
                20000,
                "RTP/SAVP",
                &lines(std::slice::from_ref(&pk)),
                "",
            ),
            ("video", 0, "RTP/SAVP", &[], ""),
        ],
    );
    let out = call
        .answer(Leg::Inside, NOW, &answer, &mut pool, &mut r)
        .unwrap();
    assert_eq!(
        (out.flows.remove.len(), out.flows.released_ports.len()),
        (4, 2)
    );
    t.apply(&out.flows);
    assert_eq!((t.entries(), t.ports_in_use()), (4, 4));
    t.apply(&call.teardown(NOW, &mut pool));
    assert_eq!((t.entries(), t.ports_in_use()), (0, 0));
}
