//! edgeway side of perf-lab/srtp: ns/packet of protect, unprotect and re-key per suite at 172
//! and 1200 bytes, measured exactly as perf-lab/srtp/libsrtp_bench.c measures libsrtp2 (same
//! chunking, same packets, same key layout). Prints TSV: `edgeway\t<suite>\t<op>\t<size>\t<ns>`.
//!
//! Usage: `srtp_perf [iterations] [suite]` (default 200000 packets per row, every suite; a
//! `suite` name, e.g. `AEAD_AES_128_GCM`, measures that one only, for profiling).

use std::time::Instant;

use edgeway_srtp::{rekey_rtp, LegCrypto, MasterKey, SrtpConfig, SrtpContext, SrtpProfile};

const CHUNK: usize = 2048;
const ROOM: usize = 64;

fn context(profile: SrtpProfile, seed: u8) -> SrtpContext {
    let material: Vec<u8> = (0..64u8).map(|i| seed ^ i).collect();
    let kl = profile.master_key_len();
    let key = MasterKey::new(
        profile,
        &material[..kl],
        &material[kl..kl + profile.master_salt_len()],
    )
    .expect("key");
    SrtpContext::new(&SrtpConfig::new(profile, key)).expect("context")
}

fn header(p: &mut [u8], seq: u16) {
    p[0] = 0x80;
    p[1] = 0;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
}

fn prepare(
    tx: &mut SrtpContext,
    seq: &mut u16,
    size: usize,
    batch: &mut [[u8; 1200 + ROOM]],
    lens: &mut [usize],
) {
    for (p, l) in batch.iter_mut().zip(lens.iter_mut()) {
        p[..size].fill(0xab);
        header(p, *seq);
        *seq = seq.wrapping_add(1);
        *l = tx.protect_rtp(p, size).expect("protect");
    }
}

fn main() {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let only = std::env::args().nth(2);
    let chunks = iters.div_ceil(CHUNK);
    let mut batch = vec![[0u8; 1200 + ROOM]; CHUNK];
    let mut lens = vec![0usize; CHUNK];
    for profile in SrtpProfile::ALL {
        let name = profile.sdes_name();
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        for size in [172usize, 1200] {
            // protect
            let mut tx = context(profile, 1);
            let mut pkt = [0xabu8; 1200 + ROOM];
            let mut seq = 0u16;
            let t = Instant::now();
            for _ in 0..iters {
                header(&mut pkt, seq);
                seq = seq.wrapping_add(1);
                std::hint::black_box(tx.protect_rtp(&mut pkt, size).expect("protect"));
            }
            println!(
                "edgeway\t{name}\tprotect\t{size}\t{:.1}",
                t.elapsed().as_nanos() as f64 / iters as f64
            );
            // unprotect
            let (mut tx, mut rx) = (context(profile, 1), context(profile, 1));
            let mut seq = 0u16;
            let mut total = 0u128;
            for _ in 0..chunks {
                prepare(&mut tx, &mut seq, size, &mut batch, &mut lens);
                let t = Instant::now();
                for (p, l) in batch.iter_mut().zip(lens.iter()) {
                    std::hint::black_box(rx.unprotect_rtp(p, *l).expect("unprotect"));
                }
                total += t.elapsed().as_nanos();
            }
            println!(
                "edgeway\t{name}\tunprotect\t{size}\t{:.1}",
                total as f64 / (chunks * CHUNK) as f64
            );
            // rekey
            let mut tx = context(profile, 1);
            let mut inbound = LegCrypto::Srtp(context(profile, 1));
            let mut outbound = LegCrypto::Srtp(context(profile, 2));
            let mut seq = 0u16;
            let mut total = 0u128;
            for _ in 0..chunks {
                prepare(&mut tx, &mut seq, size, &mut batch, &mut lens);
                let t = Instant::now();
                for (p, l) in batch.iter_mut().zip(lens.iter()) {
                    std::hint::black_box(
                        rekey_rtp(&mut inbound, &mut outbound, p, *l).expect("rekey"),
                    );
                }
                total += t.elapsed().as_nanos();
            }
            println!(
                "edgeway\t{name}\trekey\t{size}\t{:.1}",
                total as f64 / (chunks * CHUNK) as f64
            );
        }
    }
}
