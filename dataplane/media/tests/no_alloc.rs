//! The packet path allocates nothing: a counting global allocator watches 10,000 handle()
//! calls each on the relay path (edge, demux lookups included) and the re-key path (AES-CM
//! and AES-GCM, RTP and SRTCP), with drops mixed in, plus the timer and export calls.
#![allow(clippy::unwrap_used)]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use edgeway_map_schema::flags;
use edgeway_media::{MediaWorker, Verdict};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BURST: u16 = 10_000;

#[test]
fn relay_and_rekey_bursts_allocate_nothing() {
    // Everything that may allocate is built before counting starts.
    let mut edge = MediaWorker::new(edge_config());
    for n in 0..200u32 {
        let core = sa(CORE.ip().octets(), 36_100 + 2 * n as u16);
        edge_leg(
            &mut edge,
            n,
            40_000 + 2 * n as u16,
            CLIENT.ip().octets(),
            DEMUX,
            core,
            0,
        );
    }
    let relay: Vec<Vec<u8>> = (0..BURST)
        .map(|i| rtp(1, i, u32::from(i) * 160, 160))
        .collect();

    let mut core = MediaWorker::new(core_config());
    let aes = Keys {
        outside: Some(AES),
        inside: Some(AES),
    };
    let gcm = Keys {
        outside: Some(GCM),
        inside: Some(GCM),
    };
    core_stream(&mut core, aes, E_PORT, P_PORT, EDGE, flags::KEEPALIVE);
    core_stream(&mut core, gcm, E_PORT + 2, P_PORT + 2, EDGE, 0);
    let (mut aes_tx, mut gcm_tx) = (context(AES, SEED_PHONE_TX), context(GCM, SEED_PHONE_TX));
    let mut srtp = Vec::new();
    for i in 0..BURST {
        let p = rtp(0xfeed, i, u32::from(i) * 160, 160);
        srtp.push((P_PORT, protect(&mut aes_tx, &p)));
        srtp.push((P_PORT + 2, protect(&mut gcm_tx, &p)));
        if i % 100 == 0 {
            srtp.push((P_PORT, protect_rtcp(&mut aes_tx, &rtcp_rr(0xfeed))));
            // A replay and a forgery: drops on the same path.
            let again = srtp[srtp.len() - 2].clone();
            srtp.push(again);
            let mut forged = srtp[srtp.len() - 2].clone();
            forged.1[20] ^= 1;
            srtp.push(forged);
        }
    }
    let mut buf = [0u8; 1500];
    let mut sink = Vec::with_capacity(16);

    let before = ALLOCS.load(Ordering::Relaxed);
    let mut sent_ok = 0u32;
    let mut drops = 0u32;
    for (now, p) in relay.iter().enumerate() {
        for (n, port) in [(0u16, 40_000u16), (199, 40_398)] {
            buf[..p.len()].copy_from_slice(p);
            let _ = edge.handle(now as u64, port, CLIENT, &mut buf, p.len());
            buf[..p.len()].copy_from_slice(p);
            let src = sa(CORE.ip().octets(), 36_100 + 2 * n);
            match edge.handle(now as u64, DEMUX, src, &mut buf, p.len()) {
                Verdict::Send { .. } => sent_ok += 1,
                _ => drops += 1,
            }
        }
    }
    for (now, (port, p)) in srtp.iter().enumerate() {
        buf[..p.len()].copy_from_slice(p);
        match core.handle(now as u64, *port, PHONE, &mut buf, p.len()) {
            Verdict::Send { .. } => sent_ok += 1,
            _ => drops += 1,
        }
        if now.is_multiple_of(1000) {
            core.poll_timer(now as u64, &mut |a| sink.push(a));
            core.export(&mut |_, s, c| {
                std::hint::black_box((s, c));
            });
            sink.clear();
        }
    }
    edge.export(&mut |_, s, c| {
        std::hint::black_box((s, c));
    });
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(allocs, 0, "the packet path allocated {allocs} times");
    assert_eq!(sent_ok, 2 * u32::from(BURST) * 2 + 100, "sent");
    assert_eq!(drops, 200, "one replay and one forgery per 100 packets");
}
