//! A worker restart: worker A carries a re-keyed call (RTP across a sequence-number wrap,
//! SRTCP on its own ports and SRTCP multiplexed on the RTP ports), exports; worker B is built from the entries and the exported
//! states and carries on. The far ends keep their contexts: nothing is dropped, everything
//! still opens, and packets A already accepted are replays for B.
#![allow(clippy::unwrap_used)]
mod common;

use std::collections::HashMap;

use common::*;
use edgeway_map_schema::{
    flags, DropReason, FlowCounters, FlowEntry, FlowKey, FlowState, DROP_REASONS,
};
use edgeway_media::{MediaWorker, Verdict};
use edgeway_srtp::{SrtpContext, SrtpProfile};

fn exported(w: &mut MediaWorker) -> HashMap<u32, (FlowState, FlowCounters)> {
    let mut out = HashMap::new();
    w.export(&mut |slot, s, c| {
        out.insert(slot, (*s, *c));
    });
    out
}

/// The far ends' contexts: they live through the restart.
struct Far {
    phone_tx: SrtpContext,
    phone_rx: SrtpContext,
    client_tx: SrtpContext,
    client_rx: SrtpContext,
    /// The client's receiver for SRTCP multiplexed on the RTP ports.
    client_rx_mux: SrtpContext,
}

/// One RTP packet each way (keeps the client's SRTP in `history`); an SRTCP report from the
/// phone every 50.
fn step(w: &mut MediaWorker, far: &mut Far, seq: u16, history: &mut Vec<Vec<u8>>) {
    let now = u64::from(seq);
    let plain = rtp(0xfeed, seq, u32::from(seq) * 160, 160);
    let out = sent(
        feed(w, now, P_PORT, PHONE, &protect(&mut far.phone_tx, &plain)),
        E_PORT,
        EDGE,
    );
    assert_eq!(unprotect(&mut far.client_rx, &out).unwrap(), plain);
    let plain = rtp(0xc11e, seq.wrapping_add(0x5555), u32::from(seq) * 160, 160);
    let srtp = protect(&mut far.client_tx, &plain);
    let out = sent(feed(w, now, E_PORT, EDGE, &srtp), P_PORT, PHONE);
    assert_eq!(unprotect(&mut far.phone_rx, &out).unwrap(), plain);
    history.push(srtp);
    if seq.is_multiple_of(50) {
        rtcp_step(w, far);
    }
}

/// One SRTCP report from the phone to the client on the RTCP ports, and one multiplexed on
/// the RTP ports (rtcp-mux: no checkpoint covers its SRTCP stream).
fn rtcp_step(w: &mut MediaWorker, far: &mut Far) {
    let rr = rtcp_rr(0xfeed);
    let out = sent(
        feed(w, 0, P_PORT, PHONE, &protect_rtcp(&mut far.phone_tx, &rr)),
        E_PORT,
        EDGE,
    );
    assert_eq!(unprotect_rtcp(&mut far.client_rx_mux, &out).unwrap(), rr);
    let rr = rtcp_rr(0xfeed);
    let out = sent(
        feed(
            w,
            0,
            P_PORT + 1,
            PHONE_RTCP,
            &protect_rtcp(&mut far.phone_tx, &rr),
        ),
        E_PORT + 1,
        EDGE_RTCP,
    );
    assert_eq!(unprotect_rtcp(&mut far.client_rx, &out).unwrap(), rr);
}

/// A re-keyed call's RTP and RTCP entries installed on a fresh worker, and the far ends'
/// contexts (which live through whatever the test does to the worker).
fn call(
    outside: SrtpProfile,
    inside: SrtpProfile,
) -> (Vec<(u32, FlowKey, FlowEntry)>, MediaWorker, Far) {
    let keys = Keys {
        outside: Some(outside),
        inside: Some(inside),
    };
    let mut entries = core_entries(keys, E_PORT, P_PORT, EDGE, 0).to_vec();
    entries.extend(core_entries(
        keys,
        E_PORT + 1,
        P_PORT + 1,
        EDGE_RTCP,
        flags::RTCP,
    ));
    let mut w = MediaWorker::new(core_config());
    for (slot, key, e) in &entries {
        w.install(*slot, *key, e, None).unwrap();
    }
    let far = Far {
        phone_tx: context(inside, SEED_PHONE_TX),
        phone_rx: context(inside, SEED_PHONE_RX),
        client_tx: context(outside, SEED_CLIENT_TX),
        client_rx: context(outside, SEED_CLIENT_RX),
        client_rx_mux: context(outside, SEED_CLIENT_RX),
    };
    (entries, w, far)
}

fn restart(outside: SrtpProfile, inside: SrtpProfile) {
    let (entries, mut a, mut far) = call(outside, inside);
    let mut seq = 65_000u16;
    let mut history = Vec::new();
    // 1000 packets each way: the phone's stream wraps 65535 -> 0 (ROC 1).
    for _ in 0..1000 {
        step(&mut a, &mut far, seq, &mut history);
        seq = seq.wrapping_add(1);
    }
    let states = exported(&mut a);
    // A few RTCP packets after the last export: B's SRTCP senders must not reuse their
    // indices (keystream reuse; the client would call them replays), multiplexed ones
    // included.
    for _ in 0..3 {
        rtcp_step(&mut a, &mut far);
    }
    drop(a);

    let mut b = MediaWorker::new(core_config());
    for (slot, key, e) in &entries {
        let (state, counters) = &states[slot];
        assert_eq!(state.generation, e.generation);
        b.install(*slot, *key, e, Some(state)).unwrap();
        assert!(b.resume_counters(*key, counters));
    }
    let before: u64 = states.values().map(|(_, c)| c.tx_packets).sum();
    for _ in 0..600 {
        step(&mut b, &mut far, seq, &mut history);
        seq = seq.wrapping_add(1);
    }
    for _ in 0..3 {
        rtcp_step(&mut b, &mut far);
    }
    // Replays of packets A accepted: the most recent one, one 100 back, one far back.
    let n = history.len();
    for i in [n - 601, n - 700, n - 1400] {
        let v = feed(&mut b, 0, E_PORT, EDGE, &history[i]);
        assert_eq!(v.0, Verdict::Drop(DropReason::Replay), "history[{i}]");
    }
    let after = exported(&mut b);
    let ek = FlowKey::port(E_PORT);
    let drops = b.counters(ek).unwrap().drops;
    let mut want = [0; DROP_REASONS];
    want[DropReason::Replay.index()] = 3;
    assert_eq!(drops, want, "{outside} -> {inside}");
    for (slot, key, _) in &entries {
        if *key != ek {
            assert_eq!(after[slot].1.drops, [0; DROP_REASONS], "{key:?}");
        }
    }
    // Counters continued from A's.
    let total: u64 = after.values().map(|(_, c)| c.tx_packets).sum();
    assert_eq!(total, before + 1200 + 2 * (3 + 12));
    let (s, _) = &after[&u32::from(P_PORT)];
    assert_eq!((s.latched, s.latched_src), (1, ep(PHONE)));
    assert_eq!(
        s.srtp_in.highest_index,
        (1 << 16) | u64::from(seq.wrapping_sub(1))
    );
    assert_eq!(s.rtp.received, 1600);
}

#[test]
fn restarted_worker_continues_without_drops_or_rollover_errors() {
    restart(
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AesCm128HmacSha1_80,
    );
    restart(SrtpProfile::AeadAes128Gcm, SrtpProfile::AesCm128HmacSha1_32);
}

#[test]
fn a_new_generation_starts_afresh() {
    let keys = Keys {
        outside: Some(SrtpProfile::AesCm128HmacSha1_80),
        inside: None,
    };
    let [edge_side, (slot, pk, mut from_phone)] = core_entries(keys, E_PORT, P_PORT, EDGE, 0);
    let mut w = MediaWorker::new(core_config());
    w.install(edge_side.0, edge_side.1, &edge_side.2, None)
        .unwrap();
    w.install(slot, pk, &from_phone, None).unwrap();
    sent(
        feed(&mut w, 0, P_PORT, PHONE, &rtp(1, 1, 0, 20)),
        E_PORT,
        EDGE,
    );
    let state = exported(&mut w)[&slot].0;
    assert_eq!(state.latched, 1);
    // Same generation again (a rescan): nothing changes.
    w.install(slot, pk, &from_phone, Some(&FlowState::default()))
        .unwrap();
    assert_eq!(exported(&mut w).get(&slot).map(|s| s.0.latched), None);
    // A new generation: the latch is gone, even when offered the old state.
    from_phone.generation += 1;
    w.install(slot, pk, &from_phone, Some(&state)).unwrap();
    let fresh = exported(&mut w)[&slot].0;
    assert_eq!(
        (fresh.generation, fresh.latched),
        (from_phone.generation, 0)
    );
    // ...and the counters of the key carry on.
    assert_eq!(w.counters(pk).unwrap().tx_packets, 1);
}

/// Found by the media_handle fuzz target: a restored state from a damaged table, with
/// checkpoint indices at the top of u64, overflowed the resume arithmetic. It is now taken
/// in (clamped to the index space, so the damaged flow may refuse its packets) without a
/// panic, and a healthy call on the same worker carries on untouched.
#[test]
fn a_damaged_checkpoint_harms_nothing_else() {
    let keys = Keys {
        outside: Some(SrtpProfile::AeadAes256Gcm),
        inside: Some(SrtpProfile::AeadAes128Gcm),
    };
    let mut w = MediaWorker::new(core_config());
    let mut far = Far {
        phone_tx: context(SrtpProfile::AeadAes128Gcm, SEED_PHONE_TX),
        phone_rx: context(SrtpProfile::AeadAes128Gcm, SEED_PHONE_RX),
        client_tx: context(SrtpProfile::AeadAes256Gcm, SEED_CLIENT_TX),
        client_rx: context(SrtpProfile::AeadAes256Gcm, SEED_CLIENT_RX),
        client_rx_mux: context(SrtpProfile::AeadAes256Gcm, SEED_CLIENT_RX),
    };
    core_stream(&mut w, keys, E_PORT, P_PORT, EDGE, 0);
    let mut history = Vec::new();
    step(&mut w, &mut far, 1, &mut history);

    let [a, b] = core_entries(keys, E_PORT + 10, P_PORT + 10, EDGE, 0);
    let [c, d] = core_entries(keys, E_PORT + 21, P_PORT + 21, EDGE, flags::RTCP);
    let mut bad = FlowState {
        generation: a.2.generation,
        srtcp_out_next: u64::MAX - 0x40,
        ..FlowState::default()
    };
    for cp in [&mut bad.srtp_in, &mut bad.srtp_out] {
        cp.valid = 1;
        cp.ssrc = 0xfeed;
        cp.highest_index = u64::MAX;
        cp.recent = [u64::MAX; 2];
    }
    for (slot, key, e) in [&a, &b, &c, &d] {
        let mut s = bad;
        s.generation = e.generation;
        w.install(*slot, *key, e, Some(&s)).unwrap();
        let _ = feed(&mut w, 2, key.local_port, PHONE, &rtcp_rr(0xfeed));
        let _ = feed(&mut w, 2, key.local_port, PHONE, &rtp(0xfeed, 3, 0, 160));
    }
    // (Up to 49: the 50th step also sends SRTCP, on ports this test does not install.)
    for seq in 2..50 {
        step(&mut w, &mut far, seq, &mut history);
    }
}

/// A re-INVITE's hold or resume replaces a call's entries with a new generation (another
/// idle timeout, another action) but the same keys. Past the first sequence-number wrap the
/// SRTP state must carry on: restarting it would reuse keystream on the way out and refuse
/// (or misread) everything on the way in. New keys in a direction start that one afresh.
#[test]
fn a_new_generation_with_the_same_keys_carries_its_srtp_state() {
    let (mut entries, mut w, mut far) = call(
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AesCm128HmacSha1_32,
    );
    let mut seq = 65_400u16;
    let mut history = Vec::new();
    // The phone's stream wraps 65535 -> 0 (ROC 1); SRTCP flows on both RTCP paths.
    for _ in 0..400 {
        step(&mut w, &mut far, seq, &mut history);
        seq = seq.wrapping_add(1);
    }
    // The hold re-INVITE: same keys, a new generation (the table bumps it on every insert).
    for (slot, key, e) in &mut entries {
        e.generation += 1;
        e.idle_timeout_ms = 0;
        w.install(*slot, *key, e, None).unwrap();
    }
    // Every packet after it still opens at the far ends (`step` asserts it), none is dropped,
    // and a packet accepted before the re-INVITE is still a replay.
    for _ in 0..200 {
        step(&mut w, &mut far, seq, &mut history);
        seq = seq.wrapping_add(1);
    }
    let ek = FlowKey::port(E_PORT);
    let v = feed(&mut w, 0, E_PORT, EDGE, &history[history.len() - 250]);
    assert_eq!(v.0, Verdict::Drop(DropReason::Replay));
    let mut want = [0; DROP_REASONS];
    want[DropReason::Replay.index()] = 1;
    assert_eq!(w.counters(ek).unwrap().drops, want);
    assert_eq!(
        w.counters(FlowKey::port(P_PORT)).unwrap().drops,
        [0; DROP_REASONS]
    );
}
