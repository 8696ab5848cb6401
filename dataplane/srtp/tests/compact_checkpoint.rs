//! The compact checkpoint form (`StreamCheckpoint::from_recent` / `recent`) that the flow
//! table stores: 128 recent replay bits survive a round trip, older indices read as seen, and
//! a context restored from it resumes without replay or rollover errors.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use edgeway_srtp::{SrtpProfile, StreamCheckpoint, StreamKind};

#[test]
fn recent_bits_round_trip_and_older_indices_read_as_seen() {
    let (mut tx, mut rx) = (
        context(SrtpProfile::AesCm128HmacSha1_80, 3),
        context(SrtpProfile::AesCm128HmacSha1_80, 3),
    );
    let mut sent = Vec::new();
    let mut seq = 65_000u16;
    for _ in 0..1000 {
        let mut p = rtp(9, seq, 40);
        p.resize(p.len() + 16, 0);
        let n = tx.protect_rtp(&mut p, 40).unwrap();
        p.truncate(n);
        sent.push(p);
        seq = seq.wrapping_add(1);
    }
    // Deliver all but a few: gaps inside the recent 128 and further back.
    let skipped = [999usize, 950, 900, 880, 700];
    for (i, p) in sent.iter().enumerate() {
        if !skipped.contains(&i) {
            let mut b = p.clone();
            b.resize(b.len() + 16, 0);
            rx.unprotect_rtp(&mut b, p.len()).unwrap();
        }
    }
    let full = rx.checkpoints().next().unwrap();
    let recent = full.recent();
    // 998 is the highest; 950, 900 and 880 lie within 128 of it and are unseen.
    let compact = StreamCheckpoint::from_recent(StreamKind::Rtp, 9, full.highest_index, recent);
    assert_eq!(compact.recent(), recent);
    assert_eq!(compact.highest_index, full.highest_index);
    for i in 0..128u64 {
        let seen = !matches!(i, 48 | 98 | 118);
        assert_eq!(recent[(i / 64) as usize] >> (i % 64) & 1 == 1, seen, "{i}");
    }
    let mut rx2 = context(SrtpProfile::AesCm128HmacSha1_80, 3);
    rx2.restore(&compact);
    let mut take = |i: usize| {
        let mut b = sent[i].clone();
        b.resize(b.len() + 16, 0);
        rx2.unprotect_rtp(&mut b, sent[i].len())
    };
    // Unseen and recent: accepted once; seen: replay; unseen but older than 128: refused.
    assert!(take(950).is_ok());
    assert!(take(950).is_err());
    assert!(take(997).is_err());
    assert!(take(700).is_err());
    assert!(take(999).is_ok());
}

#[test]
fn a_young_stream_round_trips() {
    let cp = StreamCheckpoint::from_recent(StreamKind::Rtcp, 1, 3, [0b1011, 0]);
    assert_eq!(cp.recent(), [0b1011, 0]);
}
