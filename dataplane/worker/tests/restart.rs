//! Restart safety: `kill -9` of the data plane mid-stream, then a new process: the flows
//! resume within 100 ms of its start, and SRTP continues from the checkpointed state with no
//! replay or rollover errors, across a sequence-number wrap that happens while it was down.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use common::*;
use edgeway_map_schema::{Action, FlowKey};
use edgeway_srtp::SrtpProfile;

#[test]
fn kill_9_mid_stream_resumes_within_100ms_without_srtp_errors() {
    let mut dp = Dataplane::start("core", &[]);
    let p = SrtpProfile::AesCm128HmacSha1_80;
    let (k_in, k_out) = (master_key(p, 51), master_key(p, 52));
    let edge = party();
    let phone = party();
    let (ce, ci) = (free_port(), free_port());
    let key = FlowKey::port(ce);
    dp.insert(
        key,
        entry(
            20,
            Action::Rekey,
            0,
            ci,
            Some(addr(&phone)),
            FlowKey::port(ci),
            params(p, &k_in),
            params(p, &k_out),
        ),
    );
    let mut tx = context(p, &k_in);
    let mut rx = context(p, &k_out);
    let dst = SocketAddrV4::new(LO, ce);
    let protect = |ctx: &mut edgeway_srtp::SrtpContext, seq: u16| {
        let mut b = rtp(0x77, seq, u32::from(seq) * 160);
        let n = b.len();
        b.resize(n + 32, 0);
        let m = ctx.protect_rtp(&mut b, n).unwrap();
        b.truncate(m);
        b
    };
    let check = |rx: &mut edgeway_srtp::SrtpContext, mut out: Vec<u8>, seq: u16| {
        let n = out.len();
        out.resize(n + 16, 0);
        let m = rx
            .unprotect_rtp(&mut out, n)
            .unwrap_or_else(|e| panic!("seq {seq}: {e}"));
        assert_eq!(&out[..m], &rtp(0x77, seq, u32::from(seq) * 160)[..]);
    };

    // Before: 200 packets up to seq 65_530, so the wrap comes after the restart.
    let mut seq = 65_331u16;
    let first = protect(&mut tx, seq);
    check(
        &mut rx,
        send_until_forwarded(&edge, dst, &first, &phone),
        seq,
    );
    for _ in 0..199 {
        seq = seq.wrapping_add(1);
        edge.send_to(&protect(&mut tx, seq), dst).unwrap();
        check(&mut rx, recv_n(&phone, 1).pop().unwrap().0, seq);
    }
    // Let one export happen, then kill -9 with no warning.
    std::thread::sleep(Duration::from_millis(60));
    dp.kill9();
    // While it is down, the sender goes on: these packets are lost (nothing listens).
    for _ in 0..20 {
        seq = seq.wrapping_add(1);
        let _ = edge.send_to(&protect(&mut tx, seq), dst);
    }
    while recv(&phone).is_some() {}
    phone
        .set_read_timeout(Some(Duration::from_millis(2)))
        .unwrap();

    // Start again and send every 1 ms until something comes out.
    let started = dp.spawn();
    let resumed = loop {
        seq = seq.wrapping_add(1);
        let _ = edge.send_to(&protect(&mut tx, seq), dst);
        if let Some((out, _)) = recv(&phone) {
            if !out.is_empty() {
                check(&mut rx, out, seq);
                break started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no packet forwarded after restart"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    phone
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    eprintln!("resumed {resumed:?} after the new process started");
    assert!(
        resumed <= Duration::from_millis(100),
        "resumed after {resumed:?}"
    );
    let before = Instant::now();
    // After: 100 more packets across the wrap; every one forwarded and authentic.
    for _ in 0..100 {
        seq = seq.wrapping_add(1);
        edge.send_to(&protect(&mut tx, seq), dst).unwrap();
        check(&mut rx, recv_n(&phone, 1).pop().unwrap().0, seq);
    }
    assert!(before.elapsed() < Duration::from_secs(5));
    let c = dp.counters(key);
    let st = dp.state(key);
    assert_eq!(
        st.srtp_in.highest_index >> 16,
        1,
        "ROC 1 after the wrap: {st:?}"
    );
    let auth = c.drops[edgeway_map_schema::DropReason::AuthFailed.index()];
    let replay = c.drops[edgeway_map_schema::DropReason::Replay.index()];
    assert_eq!(
        (auth, replay),
        (0, 0),
        "no SRTP errors across the restart: {c:?}"
    );
}
