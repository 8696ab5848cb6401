//! Randomized cross-checks against libsrtp, an independent implementation, driven through
//! `tests/oracle/libsrtp_oracle.py` (pylibsrtp) over JSON lines. Both directions, every
//! suite: libsrtp protects and edgeway unprotects, and the reverse; across a ROC wrap, with
//! reordering inside the window, replays, forged tags, truncated and garbage packets; and the
//! re-key between every pair of suites, libsrtp protecting the way in and unprotecting the way
//! out.
//!
//! The oracle needs the project's venv (`scripts/setup` makes it). Without it the test fails
//! under CI (`CI=true`) and otherwise skips with a message saying what was not tested.

#![allow(clippy::unwrap_used)]
mod common;
use common::*;
use edgeway_srtp::{rekey_rtp, Error, LegCrypto, SrtpConfig, SrtpContext, SrtpProfile};
use edgeway_testkit::LibsrtpOracle as Oracle;

fn random_rtp(rng: &mut Rng, ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = if rng.below(4) == 0 {
        rtp_with_extension(ssrc, seq)
    } else {
        rtp(ssrc, seq, 12)
    };
    let n = rng.below(1200) as usize;
    p.extend(rng.bytes(n));
    p
}

fn edgeway_unprotect(ctx: &mut SrtpContext, pkt: &[u8], rtcp: bool) -> Result<Vec<u8>, Error> {
    let mut b = pkt.to_vec();
    let n = if rtcp {
        ctx.unprotect_rtcp(&mut b, pkt.len())?
    } else {
        ctx.unprotect_rtp(&mut b, pkt.len())?
    };
    b.truncate(n);
    Ok(b)
}

fn edgeway_protect(ctx: &mut SrtpContext, pkt: &[u8], rtcp: bool) -> Vec<u8> {
    let mut b = with_room(pkt);
    let n = if rtcp {
        ctx.protect_rtcp(&mut b, pkt.len())
    } else {
        ctx.protect_rtp(&mut b, pkt.len())
    };
    b.truncate(n.expect("edgeway protect"));
    b
}

/// A stream of (sequence number) deliveries: a wrap past 65535, blocks delivered in reverse
/// (reordering inside the window), then the list of deliveries that must be refused.
fn schedule(rng: &mut Rng) -> Vec<u16> {
    let start = 65_536 - 300 + rng.below(100) as u32;
    let seqs: Vec<u16> = (0..600u32).map(|i| ((start + i) % 65_536) as u16).collect();
    let mut out = Vec::new();
    for block in seqs.chunks(1 + rng.below(16) as usize) {
        out.extend(block.iter().rev());
    }
    out
}

#[test]
fn libsrtp_and_edgeway_agree_in_both_directions() {
    let Some(mut oracle) = Oracle::start("srtp engine") else {
        return;
    };
    let mut rng = Rng(0xC0FFEE);
    for profile in SrtpProfile::ALL {
        let key = common::key(profile, 42);
        let cfg = SrtpConfig::new(profile, key.clone());

        // libsrtp -> edgeway
        let lib_tx = oracle.session(profile.sdes_name(), &[key.key(), key.salt()].concat(), 1024);
        let mut rx = SrtpContext::new(&cfg).expect("rx");
        let order = schedule(&mut rng);
        // libsrtp protects in sequence order (a sender sends in order); delivery is reordered.
        let mut by_seq = std::collections::HashMap::new();
        let mut seq_in_send_order: Vec<u16> = order.clone();
        seq_in_send_order.sort_by_key(|&s| {
            if s > 30_000 {
                u32::from(s)
            } else {
                u32::from(s) + 65_536
            }
        });
        for &seq in &seq_in_send_order {
            let plain = random_rtp(&mut rng, 0xFEED, seq);
            let prot = oracle
                .op(lib_tx, "protect", &plain)
                .expect("libsrtp protect");
            by_seq.insert(seq, (plain, prot));
        }
        for &seq in &order {
            let (plain, prot) = &by_seq[&seq];
            assert_eq!(
                &edgeway_unprotect(&mut rx, prot, false).expect("edgeway unprotect"),
                plain,
                "{profile} seq {seq}"
            );
        }
        let (_, last) = &by_seq[order.last().expect("some")];
        assert!(
            matches!(
                edgeway_unprotect(&mut rx, last, false),
                Err(Error::Replayed { .. })
            ),
            "{profile} replay"
        );
        let (_, any) = &by_seq[&order[order.len() / 2]];
        let mut forged = any.clone();
        let i = rng.below(forged.len() as u64) as usize;
        forged[i] ^= 0x20;
        assert!(
            edgeway_unprotect(&mut rx, &forged, false).is_err(),
            "{profile} forged"
        );
        for cut in [0, 5, 12, any.len() - profile.rtp_tag_len()] {
            assert!(
                edgeway_unprotect(&mut rx, &any[..cut], false).is_err(),
                "{profile} cut {cut}"
            );
        }
        assert!(edgeway_unprotect(&mut rx, &rng.bytes(200), false).is_err());
        // RTCP, libsrtp -> edgeway.
        for _ in 0..20 {
            let mut c = rtcp(0xFEED);
            let extra = 4 * rng.below(20) as usize;
            c.extend(rng.bytes(extra));
            let len = c.len();
            c[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
            let prot = oracle
                .op(lib_tx, "protect_rtcp", &c)
                .expect("libsrtp protect rtcp");
            assert_eq!(
                edgeway_unprotect(&mut rx, &prot, true).expect("edgeway rtcp"),
                c,
                "{profile} rtcp"
            );
        }

        // edgeway -> libsrtp
        let lib_rx = oracle.session(profile.sdes_name(), &[key.key(), key.salt()].concat(), 1024);
        let mut tx = SrtpContext::new(&cfg).expect("tx");
        let mut sent = Vec::new();
        for &seq in &seq_in_send_order {
            let plain = random_rtp(&mut rng, 0xBEEF, seq);
            sent.push((plain.clone(), edgeway_protect(&mut tx, &plain, false)));
        }
        // Deliver with the same reordering.
        let pos: std::collections::HashMap<u16, usize> = seq_in_send_order
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, i))
            .collect();
        for &seq in &order {
            let (plain, prot) = &sent[pos[&seq]];
            assert_eq!(
                &oracle
                    .op(lib_rx, "unprotect", prot)
                    .expect("libsrtp unprotect"),
                plain,
                "{profile} seq {seq}"
            );
        }
        let (_, last) = &sent[pos[order.last().expect("some")]];
        assert!(
            oracle.op(lib_rx, "unprotect", last).is_err(),
            "{profile}: libsrtp accepted a replay"
        );
        let mut forged = sent[3].1.clone();
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert!(
            oracle.op(lib_rx, "unprotect", &forged).is_err(),
            "{profile}: libsrtp accepted a forgery"
        );
        for _ in 0..20 {
            let mut c = rtcp(0xBEEF);
            let extra = 4 * rng.below(20) as usize;
            c.extend(rng.bytes(extra));
            let len = c.len();
            c[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
            let prot = edgeway_protect(&mut tx, &c, true);
            assert_eq!(
                oracle
                    .op(lib_rx, "unprotect_rtcp", &prot)
                    .expect("libsrtp rtcp"),
                c,
                "{profile} rtcp"
            );
        }
        eprintln!("{profile}: libsrtp <-> edgeway agree");
    }
}

/// The re-key as a B2BUA runs it, judged by libsrtp at both ends: libsrtp protects under leg
/// A's key, edgeway re-keys to leg B's in place (the one-pass paths for counter mode and for
/// GCM, the two-pass one for large GCM packets and for mixed legs), libsrtp unprotects under
/// B's key. Across a ROC wrap with reordering; replays and forgeries are refused on the way in.
#[test]
fn libsrtp_accepts_what_edgeway_rekeys() {
    let Some(mut oracle) = Oracle::start("srtp re-key") else {
        return;
    };
    let mut rng = Rng(0xB2B0A);
    let pairs = SrtpProfile::ALL
        .iter()
        .flat_map(|&a| SrtpProfile::ALL.iter().map(move |&b| (a, b)));
    for (a, b) in pairs {
        let (key_a, key_b) = (common::key(a, 60), common::key(b, 61));
        let lib_a = oracle.session(a.sdes_name(), &[key_a.key(), key_a.salt()].concat(), 1024);
        let lib_b = oracle.session(b.sdes_name(), &[key_b.key(), key_b.salt()].concat(), 1024);
        let mut inbound = LegCrypto::Srtp(SrtpContext::new(&SrtpConfig::new(a, key_a)).unwrap());
        let mut outbound = LegCrypto::Srtp(SrtpContext::new(&SrtpConfig::new(b, key_b)).unwrap());
        let start = 65_536 - 60;
        let seqs: Vec<u16> = (0..120u32).map(|i| ((start + i) % 65_536) as u16).collect();
        let mut sent: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for &seq in &seqs {
            // Mostly voice-sized payloads (the one-pass GCM range), some video-sized.
            let mut plain = if rng.below(4) == 0 {
                rtp_with_extension(0xCAFE, seq)
            } else {
                rtp(0xCAFE, seq, 12)
            };
            let n = if rng.below(5) == 0 {
                rng.below(1200)
            } else {
                rng.below(200)
            } as usize;
            plain.extend(rng.bytes(n));
            let prot = oracle
                .op(lib_a, "protect", &plain)
                .expect("libsrtp protect");
            sent.push((plain, prot));
        }
        let mut order: Vec<usize> = Vec::new();
        let idx: Vec<usize> = (0..sent.len()).collect();
        for block in idx.chunks(1 + rng.below(8) as usize) {
            order.extend(block.iter().rev());
        }
        for &i in &order {
            let (plain, prot) = &sent[i];
            let what = format!("{a} -> {b} seq {} len {}", seqs[i], plain.len());
            let mut forged = with_room(prot);
            let at = rng.below(prot.len() as u64) as usize;
            forged[at] ^= 0x04;
            assert!(
                rekey_rtp(&mut inbound, &mut outbound, &mut forged, prot.len()).is_err(),
                "{what}: forged at {at}"
            );
            let mut buf = with_room(prot);
            let n = rekey_rtp(&mut inbound, &mut outbound, &mut buf, prot.len()).expect(&what);
            assert_eq!(
                &oracle.op(lib_b, "unprotect", &buf[..n]).expect(&what),
                plain,
                "{what}"
            );
            let mut again = with_room(prot);
            assert!(
                matches!(
                    rekey_rtp(&mut inbound, &mut outbound, &mut again, prot.len()),
                    Err(Error::Replayed { .. })
                ),
                "{what}: replay"
            );
        }
    }
    eprintln!("libsrtp accepts edgeway's re-keys for every pair of suites");
}
