//! Structured fuzzing of SRTP/SRTCP unprotect: a context with fuzzer-chosen profile, keys,
//! MKI and window receives a sequence of packets that are either raw fuzzer bytes or genuine
//! protected packets with fuzzer-chosen mutations. Properties: no panic; a genuine packet
//! that was not mutated, not replayed and whose index both ends estimate alike (RFC 3711
//! §3.3.1: a receiver cannot follow a jump of 2^15 or more, nor learn a ROC it never saw)
//! always decrypts to its plaintext; a mutated packet never authenticates to anything but
//! its original plaintext.
#![no_main]

use arbitrary::Arbitrary;
use edgeway_srtp::{MasterKey, SrtpConfig, SrtpContext, SrtpProfile, MAX_TRAILER_LEN};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Op {
    Raw {
        rtcp: bool,
        bytes: Vec<u8>,
    },
    Genuine {
        rtcp: bool,
        seq: u16,
        ssrc: u8,
        payload: Vec<u8>,
        flip: Option<(u16, u8)>,
        cut: Option<u16>,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    profile: u8,
    key: [u8; 46],
    mki: Option<u8>,
    window: u16,
    ops: Vec<Op>,
}

/// The RFC 3711 Appendix A index estimate, written independently of the crate's.
fn estimate(highest: Option<u64>, seq: u16) -> Option<u64> {
    let Some(h) = highest else {
        return Some(u64::from(seq));
    };
    let (roc, s_l, seq) = (h >> 16, (h & 0xffff) as i64, i64::from(seq));
    let v = if s_l < 32768 {
        if seq - s_l > 32768 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if s_l - 32768 > seq {
        roc + 1
    } else {
        roc
    };
    Some((v << 16) | seq as u64)
}

fn highest(ctx: &SrtpContext, ssrc: u32) -> Option<u64> {
    ctx.checkpoints()
        .find(|c| c.kind == edgeway_srtp::StreamKind::Rtp && c.ssrc == ssrc)
        .map(|c| c.highest_index)
}

fuzz_target!(|input: Input| {
    let profile = SrtpProfile::ALL[usize::from(input.profile) % 6];
    let (kl, sl) = (profile.master_key_len(), profile.master_salt_len());
    let Ok(mut key) = MasterKey::new(profile, &input.key[..kl], &input.key[kl..kl + sl]) else {
        return;
    };
    if let Some(m) = input.mki {
        key = key.with_mki(&[m]).expect("1-byte MKI");
    }
    let mut cfg = SrtpConfig::new(profile, key);
    cfg.replay_window = 64 + u32::from(input.window) % 4033;
    let Ok(mut rx) = SrtpContext::new(&cfg) else {
        return;
    };
    let mut tx = SrtpContext::new(&cfg).expect("same config");
    let mut buf = vec![0u8; 2048 + MAX_TRAILER_LEN];
    for op in input.ops.iter().take(64) {
        match op {
            Op::Raw { rtcp, bytes } => {
                let n = bytes.len().min(2048);
                buf[..n].copy_from_slice(&bytes[..n]);
                let _ = if *rtcp {
                    rx.unprotect_rtcp(&mut buf, n)
                } else {
                    rx.unprotect_rtp(&mut buf, n)
                };
            }
            Op::Genuine {
                rtcp,
                seq,
                ssrc,
                payload,
                flip,
                cut,
            } => {
                let mut plain = if *rtcp {
                    vec![0x80, 200, 0, 6, 0, 0, 0, *ssrc]
                } else {
                    let mut h = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, *ssrc];
                    h[2..4].copy_from_slice(&seq.to_be_bytes());
                    h
                };
                plain.extend_from_slice(&payload[..payload.len().min(1400)]);
                buf[..plain.len()].copy_from_slice(&plain);
                let ssrc32 = u32::from(*ssrc);
                let in_step = *rtcp
                    || estimate(highest(&tx, ssrc32), *seq) == estimate(highest(&rx, ssrc32), *seq);
                let sent = if *rtcp {
                    tx.protect_rtcp(&mut buf, plain.len())
                } else {
                    tx.protect_rtp(&mut buf, plain.len())
                };
                let Ok(mut n) = sent else { continue };
                let mut mutated = false;
                if let Some((pos, bits)) = flip {
                    if *bits != 0 && n > 0 {
                        buf[usize::from(*pos) % n] ^= bits;
                        mutated = true;
                    }
                }
                if let Some(c) = cut {
                    let c = usize::from(*c) % (n + 1);
                    mutated |= c < n;
                    n = c;
                }
                let got = if *rtcp {
                    rx.unprotect_rtcp(&mut buf, n)
                } else {
                    rx.unprotect_rtp(&mut buf, n)
                };
                if let Ok(m) = got {
                    // Whatever authenticates must be exactly what was sent.
                    assert_eq!(&buf[..m], &plain[..], "forged or corrupted packet accepted");
                } else if !mutated && in_step {
                    // A genuine, unmutated packet may only fail as a replay or as too old.
                    let e = got.expect_err("checked");
                    assert!(
                        matches!(
                            e,
                            edgeway_srtp::Error::Replayed { .. }
                                | edgeway_srtp::Error::TooOld { .. }
                        ),
                        "genuine packet refused: {e}"
                    );
                }
            }
        }
    }
});
