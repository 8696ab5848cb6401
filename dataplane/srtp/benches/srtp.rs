//! Criterion benchmarks of the per-packet operations: protect, unprotect and re-key for every
//! suite at 172 bytes (G.711, 20 ms) and 1200 bytes (video).
//!
//! Unprotect and re-key need a fresh index per packet, so each measurement prepares a chunk of
//! protected packets untimed and times only the operation over the chunk (`iter_custom`).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgeway_srtp::{rekey_rtp, LegCrypto, MasterKey, SrtpConfig, SrtpContext, SrtpProfile};

const CHUNK: usize = 2048;

fn context(profile: SrtpProfile, seed: u8) -> SrtpContext {
    let key: Vec<u8> = (0..profile.master_key_len())
        .map(|i| seed ^ i as u8)
        .collect();
    let salt: Vec<u8> = (0..profile.master_salt_len())
        .map(|i| seed.wrapping_add(i as u8))
        .collect();
    let mk = MasterKey::new(profile, &key, &salt).expect("key");
    SrtpContext::new(&SrtpConfig::new(profile, mk)).expect("context")
}

fn packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len + 64];
    p[0] = 0x80;
    p[1] = 0;
    p[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    p
}

/// Protects `CHUNK` consecutive packets of `len` bytes with `tx`, returning (buffers, lengths).
fn prepare(tx: &mut SrtpContext, seq: &mut u16, len: usize) -> Vec<(Vec<u8>, usize)> {
    (0..CHUNK)
        .map(|_| {
            let mut p = packet(len);
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            *seq = seq.wrapping_add(1);
            let n = tx.protect_rtp(&mut p, len).expect("protect");
            (p, n)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for len in [172usize, 1200] {
        let mut g = c.benchmark_group(format!("srtp-{len}B"));
        g.throughput(Throughput::Elements(1));
        for profile in SrtpProfile::ALL {
            let name = profile.sdes_name();
            g.bench_function(BenchmarkId::new("protect", name), |b| {
                let mut tx = context(profile, 1);
                let mut p = packet(len);
                let mut seq = 0u16;
                b.iter(|| {
                    p[2..4].copy_from_slice(&seq.to_be_bytes());
                    seq = seq.wrapping_add(1);
                    tx.protect_rtp(&mut p, len).expect("protect")
                });
            });
            g.bench_function(BenchmarkId::new("unprotect", name), |b| {
                let (mut tx, mut rx) = (context(profile, 1), context(profile, 1));
                let mut seq = 0u16;
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters as usize;
                    while left > 0 {
                        let mut batch = prepare(&mut tx, &mut seq, len);
                        let n = left.min(CHUNK);
                        let t = Instant::now();
                        for (p, l) in batch.iter_mut().take(n) {
                            rx.unprotect_rtp(p, *l).expect("unprotect");
                        }
                        total += t.elapsed();
                        // Keep rx in step with tx for the packets not consumed.
                        for (p, l) in batch.iter_mut().skip(n) {
                            rx.unprotect_rtp(p, *l).expect("unprotect");
                        }
                        left -= n;
                    }
                    total
                });
            });
            g.bench_function(BenchmarkId::new("rekey", name), |b| {
                let mut tx = context(profile, 1);
                let mut inbound = LegCrypto::Srtp(context(profile, 1));
                let mut outbound = LegCrypto::Srtp(context(profile, 2));
                let mut seq = 0u16;
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters as usize;
                    while left > 0 {
                        let mut batch = prepare(&mut tx, &mut seq, len);
                        let n = left.min(CHUNK);
                        let t = Instant::now();
                        for (p, l) in batch.iter_mut().take(n) {
                            rekey_rtp(&mut inbound, &mut outbound, p, *l).expect("rekey");
                        }
                        total += t.elapsed();
                        for (p, l) in batch.iter_mut().skip(n) {
                            rekey_rtp(&mut inbound, &mut outbound, p, *l).expect("rekey");
                        }
                        left -= n;
                    }
                    total
                });
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
