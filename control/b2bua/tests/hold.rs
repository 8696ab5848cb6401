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
fn a_core_hold_of_either_flavour_unwatches_the_held_direction_and_resume_restores_it() {
    let t = Table::new();
    let (mut call, e, p) = core_call(&t);
    let before = call.entries().clone();
    assert!(
        before.values().all(|e| e.idle_timeout_ms == TIMEOUT),
        "a call in sendrecv is watched both ways: {:?}",
        timeouts(&before)
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

    // The client holds with a=sendonly (music on hold), the phone answers recvonly:
    // client -> phone (ingress E, E+1) is still watched, phone -> client (P, P+1) is not.
    let held = core_reoffer(
        &t,
        &mut call,
        NOW + 3000,
        "a=sendonly\r\n",
        "a=recvonly\r\n",
    );
    assert_eq!(held[&FlowKey::port(e)], TIMEOUT);
    assert_eq!(held[&FlowKey::port(e + 1)], TIMEOUT);
    assert_eq!(held[&FlowKey::port(p)], 0);
    assert_eq!(held[&FlowKey::port(p + 1)], 0);
    assert_eq!(watched(&call), vec![FlowKey::port(e)]);
    // The keepalive towards the edge stays on the unwatched phone ingress.
    assert!(call.entries()[&FlowKey::port(p)].has(flags::KEEPALIVE));

    // The client holds with a=recvonly (it stops sending, the phone may send): only the
    // phone's direction is watched. The phone's SDP alone can hold too (sendonly answer).
    let held = core_reoffer(
        &t,
        &mut call,
        NOW + 4000,
        "a=recvonly\r\n",
        "a=sendonly\r\n",
    );
    assert_eq!(
        (held[&FlowKey::port(e)], held[&FlowKey::port(p)]),
        (0, TIMEOUT)
    );
    let held = core_reoffer(
        &t,
        &mut call,
        NOW + 5000,
        "a=sendrecv\r\n",
        "a=sendonly\r\n",
    );
    assert_eq!(
        (held[&FlowKey::port(e)], held[&FlowKey::port(p)]),
        (0, TIMEOUT),
        "the phone will not receive: the client's direction is held"
    );
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
    assert!(before.values().all(|e| e.idle_timeout_ms == TIMEOUT));

    let held = step(&mut call, NOW + 1000, "a=inactive\r\n", "a=inactive\r\n");
    assert!(held.values().all(|t| *t == 0), "{held:?}");
    assert_eq!(call.idle_watched_keys().count(), 0);

    let held = step(&mut call, NOW + 2000, "a=sendonly\r\n", "a=recvonly\r\n");
    assert_eq!((held[&FlowKey::port(e)], held[&demux]), (TIMEOUT, 0));
    assert_eq!(
        call.idle_watched_keys().copied().collect::<Vec<_>>(),
        vec![FlowKey::port(e)]
    );

    step(&mut call, NOW + 3000, "a=sendrecv\r\n", "a=sendrecv\r\n");
    assert_eq!(timeouts(call.entries()), timeouts(&before));
    t.apply(&call.teardown(NOW + 4000, &mut t.table.ports()));
    assert_eq!((t.entries(), t.ports_in_use()), (0, 0));
}
