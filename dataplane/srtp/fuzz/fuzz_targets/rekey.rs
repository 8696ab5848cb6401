//! Structured fuzzing of the re-key between two legs, every pair of suites and plain RTP: a
//! sender protects fuzzer-chosen packets under the inbound leg's key (or the fuzzer sends raw
//! bytes), the fuzzer may flip a bit or cut the packet, and `rekey_rtp` moves it to the
//! outbound leg. The same packet goes through clones of both legs as unprotect then protect,
//! the definition the one-pass paths (counter mode, and GCM up to 192 bytes of payload) must
//! meet: the same verdict, and on success the same bytes. Properties: no panic; one pass and
//! two passes agree, so a forged packet never re-keys (the two-pass road checks it with ring
//! or HMAC on its own).
#![no_main]

use arbitrary::Arbitrary;
use edgeway_srtp::{
    rekey_rtp, LegCrypto, MasterKey, SrtpConfig, SrtpContext, SrtpProfile, MAX_TRAILER_LEN,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Op {
    Raw(Vec<u8>),
    Genuine {
        seq: u16,
        ssrc: u8,
        extension: bool,
        payload: Vec<u8>,
        flip: Option<(u16, u8)>,
        cut: Option<u16>,
    },
}

#[derive(Debug, Arbitrary)]
struct Leg {
    /// 0-5: `SrtpProfile::ALL`; anything else: plain RTP.
    profile: u8,
    key: [u8; 46],
    mki: Option<u8>,
    encrypt: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    inbound: Leg,
    outbound: Leg,
    ops: Vec<Op>,
}

/// The leg's crypto and, for an SRTP leg, a sender with the same key.
fn leg(l: &Leg) -> Option<(LegCrypto, Option<SrtpContext>)> {
    let Some(&profile) = SrtpProfile::ALL.get(usize::from(l.profile)) else {
        return Some((LegCrypto::Plain, None));
    };
    let (kl, sl) = (profile.master_key_len(), profile.master_salt_len());
    let mut key = MasterKey::new(profile, &l.key[..kl], &l.key[kl..kl + sl]).ok()?;
    if let Some(m) = l.mki {
        key = key.with_mki(&[m]).ok()?;
    }
    let mut cfg = SrtpConfig::new(profile, key);
    // Authentication-only SRTP exists for counter mode only.
    cfg.encrypt_rtp = l.encrypt || profile.is_aead();
    let ctx = SrtpContext::new(&cfg).ok()?;
    Some((LegCrypto::Srtp(ctx.clone()), Some(ctx)))
}

fn rtp_packet(seq: u16, ssrc: u8, extension: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ssrc];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    if extension {
        // One CSRC and a one-byte-form header extension: a 24-byte header.
        p[0] = 0x91;
        p.extend_from_slice(&[0, 0, 0, 9, 0xBE, 0xDE, 0, 1, 0x10, 0x55, 0, 0]);
    }
    p.extend_from_slice(&payload[..payload.len().min(1400)]);
    p
}

fuzz_target!(|input: Input| {
    let Some((mut inbound, mut sender)) = leg(&input.inbound) else {
        return;
    };
    let Some((mut outbound, _)) = leg(&input.outbound) else {
        return;
    };
    let mut buf = vec![0u8; 2048 + MAX_TRAILER_LEN];
    let mut slow = vec![0u8; 2048 + MAX_TRAILER_LEN];
    for op in input.ops.iter().take(48) {
        let n = match op {
            Op::Raw(bytes) => {
                let n = bytes.len().min(2048);
                buf[..n].copy_from_slice(&bytes[..n]);
                n
            }
            Op::Genuine {
                seq,
                ssrc,
                extension,
                payload,
                flip,
                cut,
            } => {
                let plain = rtp_packet(*seq, *ssrc, *extension, payload);
                buf[..plain.len()].copy_from_slice(&plain);
                let sent = match sender.as_mut() {
                    Some(tx) => tx.protect_rtp(&mut buf, plain.len()),
                    None => Ok(plain.len()),
                };
                let Ok(mut n) = sent else { continue };
                if let Some((pos, bits)) = flip {
                    buf[usize::from(*pos) % n] ^= bits;
                }
                if let Some(c) = cut {
                    n = usize::from(*c) % (n + 1);
                }
                n
            }
        };
        slow[..n].copy_from_slice(&buf[..n]);
        let (mut slow_in, mut slow_out) = (inbound.clone(), outbound.clone());
        let fast = rekey_rtp(&mut inbound, &mut outbound, &mut buf, n);
        let two_pass = match &mut slow_in {
            // From a plain leg there is no one-pass road: the header check, then protect.
            LegCrypto::Plain => rekey_rtp(&mut slow_in, &mut slow_out, &mut slow, n),
            LegCrypto::Srtp(ctx) => {
                ctx.unprotect_rtp(&mut slow, n)
                    .and_then(|m| match &mut slow_out {
                        LegCrypto::Plain => Ok(m),
                        LegCrypto::Srtp(out) => out.protect_rtp(&mut slow, m),
                    })
            }
        };
        match (&fast, &two_pass) {
            (Ok(a), Ok(b)) => assert_eq!(&buf[..*a], &slow[..*b], "re-key differs from two passes"),
            (Err(_), Err(_)) => {}
            _ => panic!("one pass {fast:?}, two passes {two_pass:?}"),
        }
    }
});
