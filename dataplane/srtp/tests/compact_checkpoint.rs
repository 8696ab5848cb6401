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

/// The SRTCP index (E flag masked off) of a protected packet: the four bytes before the tag.
fn srtcp_index(p: &[u8], tag_len: usize) -> u64 {
    let at = p.len() - tag_len - 4;
    u64::from(u32::from_be_bytes(p[at..at + 4].try_into().unwrap()) & 0x7fff_ffff)
}

/// Protects one RTCP packet from `ssrc` with `tx` and returns its SRTCP index.
fn send_rtcp(tx: &mut edgeway_srtp::SrtpContext, ssrc: u32) -> u64 {
    let p = rtcp(ssrc);
    let mut b = with_room(&p);
    let n = tx.protect_rtcp(&mut b, p.len()).unwrap();
    srtcp_index(&b[..n], 10)
}

#[test]
fn srtcp_senders_never_count_an_index_twice() {
    let profile = SrtpProfile::AesCm128HmacSha1_80;
    let mut cfg = edgeway_srtp::SrtpConfig::new(profile, key(profile, 4));
    cfg.max_streams = 2;
    let mut tx = edgeway_srtp::SrtpContext::new(&cfg).unwrap();
    assert_eq!(tx.srtcp_send_next(), 1);
    // A first stream counts from 1; a second one starts above everything sent so far.
    let first: Vec<u64> = (0..5).map(|_| send_rtcp(&mut tx, 1)).collect();
    assert_eq!(first, [1, 2, 3, 4, 5]);
    assert_eq!(send_rtcp(&mut tx, 2), 6);
    assert_eq!(tx.srtcp_send_next(), 7);
    // A third SSRC evicts the least recently used (1); when 1 comes back it must not
    // count from 1 again.
    assert_eq!(send_rtcp(&mut tx, 3), 7);
    assert_eq!(send_rtcp(&mut tx, 1), 8);

    // A sender restored from an exported floor plus a margin continues above it, for
    // every SSRC it holds no checkpoint of, and a receiver that saw the old packets
    // accepts the new ones.
    let mut rx = context(profile, 4);
    for ssrc in [1u32, 2] {
        let p = rtcp(ssrc);
        let mut b = with_room(&p);
        let n = tx.protect_rtcp(&mut b, p.len()).unwrap();
        rx.unprotect_rtcp(&mut b, n).unwrap();
    }
    let exported = tx.srtcp_send_next();
    let mut restored = context(profile, 4);
    restored.raise_srtcp_send_floor(exported + 16);
    for ssrc in [1u32, 2, 77] {
        let p = rtcp(ssrc);
        let mut b = with_room(&p);
        let n = restored.protect_rtcp(&mut b, p.len()).unwrap();
        assert!(srtcp_index(&b[..n], 10) >= exported + 16);
        rx.unprotect_rtcp(&mut b, n).unwrap();
    }
    // Restoring a stream checkpoint raises the floor too; lowering is never possible.
    let mut cp_restored = context(profile, 4);
    cp_restored.restore(&StreamCheckpoint::from_recent(
        StreamKind::Rtcp,
        5,
        1000,
        [u64::MAX; 2],
    ));
    cp_restored.raise_srtcp_send_floor(3);
    assert_eq!(cp_restored.srtcp_send_next(), 1001);
    assert_eq!(send_rtcp(&mut cp_restored, 5), 1001);
    assert_eq!(send_rtcp(&mut cp_restored, 6), 1002);
}

/// The word-at-a-time `recent` agrees with reading the ring bit by bit, for random windows and
/// highest indices at every alignment: across the ring's wrap, on word boundaries, and for
/// streams younger than 128 packets (whose missing history must read as not seen).
#[test]
fn recent_matches_a_bit_by_bit_reading_of_the_ring() {
    use edgeway_srtp::MAX_REPLAY_WINDOW;
    let ring = u64::from(MAX_REPLAY_WINDOW);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut highs: Vec<u64> = (0..200).collect();
    for base in [ring, 5 * ring, 1 << 40] {
        highs.extend((0..130).map(|d| base - 65 + d));
    }
    highs.extend((0..2000).map(|_| next() >> 16));
    for highest in highs {
        let mut cp = StreamCheckpoint::from_recent(StreamKind::Rtp, 1, 0, [0; 2]);
        cp.highest_index = highest;
        for w in cp.window.iter_mut() {
            *w = next();
        }
        let mut want = [0u64; 2];
        for i in 0..128u64.min(highest + 1) {
            let pos = (highest - i) % ring;
            if cp.window[(pos / 64) as usize] >> (pos % 64) & 1 == 1 {
                want[(i / 64) as usize] |= 1 << (i % 64);
            }
        }
        assert_eq!(cp.recent(), want, "highest {highest}");
    }
}
