//! Hold against the media timeout: the entries of a direction on hold carry no idle
//! timeout (so the data plane neither marks them idle nor removes them during a long hold)
//! and are not watched by the media timeout; the resume gives them the configured timeout
//! back (a replaced entry, whose idle clock restarts). Both roles, every hold flavour.
#![allow(clippy::unwrap_used)]
mod common;

use std::collections::BTreeMap;

use common::*;
use edgeway_b2bua::{CoreCall, EdgeCall, InsideSecurity, Leg};
use edgeway_map_schema::{flags, FlowEntry, FlowKey};

const TIMEOUT: u32 = 1500;

/// Each entry's idle timeout, by key.
fn timeouts(entries: &BTreeMap<FlowKey, FlowEntry>) -> BTreeMap<FlowKey, u32> {
    entries
        .iter()
        .map(|(k, e)| (*k, e.idle_timeout_ms))
        .collect()
}

/// A core call with the media timeout on: offer from the client, answer from the phone.
fn core_call(t: &Table) -> (CoreCall, u16, u16) {
    let mut config = core_config();
    config.idle_timeout_ms = TIMEOUT;
    let mut call = CoreCall::new(&config, 3, InsideSecurity::Secure);
    core_exchange(t, &mut call, NOW, &jabber_offer(12, "").0, "");
    let ports = call.ports();
    (call, ports[0], ports[1])
}

/// `offer` from the client and the phone's answer with `phone`, applied; the entries'
/// timeouts afterwards.
fn core_exchange(
    t: &Table,
    call: &mut CoreCall,
    at: u64,
    offer: &[u8],
    phone: &str,
) -> BTreeMap<FlowKey, u32> {
    let (mut pool, mut r) = (t.table.ports(), rng(at));
    let inside = call
        .offer(Leg::Outside, at, offer, &mut pool, &mut r)
        .unwrap();
    let answer = phone_answer(&inside.sdp, Some(1), 40, phone).0;
    let out = call
        .answer(Leg::Inside, at, &answer, &mut pool, &mut r)
        .unwrap();
    t.apply(&out.flows);
    timeouts(call.entries())
}

/// A re-offer from the client with `client` answered with `phone`.
fn core_reoffer(
    t: &Table,
    call: &mut CoreCall,
    at: u64,
    client: &str,
    phone: &str,
) -> BTreeMap<FlowKey, u32> {
    core_exchange(t, call, at, &jabber_offer(12, client).0, phone)
}

fn watched(call: &CoreCall) -> Vec<FlowKey> {
    call.idle_watched_keys().copied().collect()
}

#[test]
fn a_core_hold_of_any_flavour_unwatches_the_call_and_resume_restores_it() {
    let t = Table::new();
    let (mut call, e, p) = core_call(&t);
    let before = call.entries().clone();
    let rtp_only = BTreeMap::from([
        (FlowKey::port(e), TIMEOUT),
        (FlowKey::port(e + 1), 0),
        (FlowKey::port(p), TIMEOUT),
        (FlowKey::port(p + 1), 0),
    ]);
    assert_eq!(
        timeouts(&before),
        rtp_only,
        "a call in sendrecv is watched both ways, on RTP only"
    );
    assert_eq!(watched(&call), vec![FlowKey::port(e), FlowKey::port(p)]);

    // a=inactive both ways: nothing is watched, no entry can go idle.
    let held = core_reoffer(
        &t,
        &mut call,
        NOW + 1000,
        "a=inactive\r\n",
        "a=inactive\r\n",
    );
    assert!(held.values().all(|t| *t == 0), "{held:?}");
    assert!(watched(&call).is_empty());

    // Resume: the entries are those of the call before the hold, timeouts included.
    core_reoffer(&t, &mut call, NOW + 2000, "a=sendrecv\r\n", "");
    assert_eq!(call.entries(), &before);

    // Every one-way hold unwatches the whole call, the direction that may still send too:
    // a client holding with a=sendonly often sends nothing. The client holds with sendonly
    // (the phone answers recvonly) or recvonly (the phone may answer sendonly), or the
    // phone's answer alone holds (sendonly).
    for (at, client, phone) in [
        (3000, "a=sendonly\r\n", "a=recvonly\r\n"),
        (4000, "a=recvonly\r\n", "a=sendonly\r\n"),
        (5000, "a=sendrecv\r\n", "a=sendonly\r\n"),
    ] {
        let held = core_reoffer(&t, &mut call, NOW + at, client, phone);
        assert!(
            held.values().all(|t| *t == 0),
            "{client:?} / {phone:?}: {held:?}"
        );
        assert!(watched(&call).is_empty());
        // The keepalive towards the edge stays on the phone's ingress.
        assert!(call.entries()[&FlowKey::port(p)].has(flags::KEEPALIVE));
    }
    // An old-style hold (c=0.0.0.0) from the client holds both ways.
    let (offer, _) = jabber_offer(12, "");
    let zero = String::from_utf8(offer)
        .unwrap()
        .replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0");
    core_exchange(&t, &mut call, NOW + 6000, zero.as_bytes(), "");
    assert!(watched(&call).is_empty(), "{:?}", timeouts(call.entries()));

    core_reoffer(&t, &mut call, NOW + 7000, "a=sendrecv\r\n", "");
    assert_eq!(call.entries(), &before, "resumed from every hold");
    t.apply(&call.teardown(NOW + 8000, &mut t.table.ports()));
    assert_eq!((t.entries(), t.ports_in_use()), (0, 0));
}

#[test]
fn a_refused_hold_leaves_the_call_watched() {
    let t = Table::new();
    let (mut call, _, _) = core_call(&t);
    let before = call.entries().clone();
    let (mut pool, mut r) = (t.table.ports(), rng(5));
    let (hold, _) = jabber_offer(12, "a=inactive\r\n");
    call.offer(Leg::Outside, NOW + 1000, &hold, &mut pool, &mut r)
        .unwrap();
    // The phone refuses the re-INVITE: the media goes back to before the offer.
    let update = call.offer_failed(NOW + 1000, &mut pool);
    t.apply(&update);
    assert_eq!(call.entries(), &before);
    assert_eq!(watched(&call).len(), 2);
}

#[test]
fn an_edge_hold_unwatches_its_relay_entries_and_resume_restores_them() {
    let t = Table::new();
    let mut config = edge_config();
    config.idle_timeout_ms = TIMEOUT;
    let mut call = EdgeCall::new(&config, 4, CLIENT_IP);
    let mut pool = t.table.ports();
    let core_sdp = |extra: &str| {
        sdp(
            "172.16.0.2",
            &[(
                "audio",
                40100,
                "RTP/SAVP",
                &lines(&jabber_keys(2)[..1]),
                extra,
            )],
        )
    };
    let step = |call: &mut EdgeCall, at: u64, client: &str, core: &str| {
        let mut pool = t.table.ports();
        let (offer, _) = jabber_offer(5, client);
        let out = call.offer(Leg::Outside, at, &offer, &mut pool).unwrap();
        t.apply(&out.flows);
        let out = call
            .answer(Leg::Inside, at, &core_sdp(core), &mut pool)
            .unwrap();
        t.apply(&out.flows);
        timeouts(call.entries())
    };
    let (offer, _) = jabber_offer(5, "");
    t.apply(
        &call
            .offer(Leg::Outside, NOW, &offer, &mut pool)
            .unwrap()
            .flows,
    );
    let out = call
        .answer(Leg::Inside, NOW, &core_sdp(""), &mut pool)
        .unwrap();
    t.apply(&out.flows);
    let before = call.entries().clone();
    let e = call.ports()[0];
    let demux = FlowKey::demux(2776, [172, 16, 0, 2], 40100);
    assert_eq!(
        call.idle_watched_keys().copied().collect::<Vec<_>>().len(),
        2
    );
    let demux_rtcp = FlowKey::demux(2777, [172, 16, 0, 2], 40101);
    assert_eq!(
        timeouts(&before),
        BTreeMap::from([
            (FlowKey::port(e), TIMEOUT),
            (FlowKey::port(e + 1), 0),
            (demux, TIMEOUT),
            (demux_rtcp, 0)
        ]),
        "RTP watched both ways, RTCP never"
    );

    for (at, client, core) in [
        (1000, "a=inactive\r\n", "a=inactive\r\n"),
        (2000, "a=sendonly\r\n", "a=recvonly\r\n"),
    ] {
        let held = step(&mut call, NOW + at, client, core);
        assert!(held.values().all(|t| *t == 0), "{client:?}: {held:?}");
        assert_eq!(call.idle_watched_keys().count(), 0);
    }

    step(&mut call, NOW + 3000, "a=sendrecv\r\n", "a=sendrecv\r\n");
    assert_eq!(timeouts(call.entries()), timeouts(&before));
    t.apply(&call.teardown(NOW + 4000, &mut t.table.ports()));
    assert_eq!((t.entries(), t.ports_in_use()), (0, 0));
}
