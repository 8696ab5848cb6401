//! Proves the packet path allocates nothing: a counting global allocator watches protect,
//! unprotect and re-key for every suite, RTP and RTCP, after the contexts exist. The first
//! packet of a new SSRC and the eviction of an old one are included. Only the test thread's
//! allocations count: the test harness's own threads may allocate at any time.

#![allow(clippy::unwrap_used)]
mod common;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use edgeway_srtp::{rekey_rtcp, rekey_rtp, LegCrypto, SrtpProfile};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    /// Set on the thread whose allocations are counted (const: no allocation to create it).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    // `try_with`: a thread being torn down has no thread-locals left, and is not counted.
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn protect_unprotect_and_rekey_allocate_nothing() {
    COUNTED.with(|c| c.set(true));
    // Everything that may allocate is built before the count is read.
    let suites = SrtpProfile::ALL;
    let mut legs: Vec<_> = suites
        .iter()
        .flat_map(|&a| suites.iter().map(move |&b| (a, b)))
        .map(|(a, b)| {
            (
                a,
                context(a, 1),
                LegCrypto::Srtp(context(a, 1)),
                LegCrypto::Srtp(context(b, 2)),
                context(b, 2),
                LegCrypto::Srtp(context(b, 3)),
            )
        })
        .collect();
    let mut plain_in = LegCrypto::Plain;
    let mut plain_out = LegCrypto::Plain;
    let mut buf = vec![0u8; 2048];
    // Short, G.711-sized and video-sized packets: the one-pass re-keys and the two-pass one.
    let templates = [rtp_with_extension(0, 0), rtp(0, 0, 172), rtp(0, 0, 1200)];
    let report = rtcp(0);
    let packets_per_leg = 200u16;

    let before = ALLOCS.load(Ordering::Relaxed);
    assert!(before > 0, "the counting allocator must be live");
    let mut processed = 0u64;
    for (profile, sender, inbound, outbound, receiver, plain_to_srtp) in legs.iter_mut() {
        for seq in 0..packets_per_leg {
            // Rotate over 6 SSRCs so stream creation and eviction (table of 4) are exercised.
            let ssrc = 1 + u32::from(seq % 6);
            let template = &templates[usize::from(seq) % templates.len()];
            buf[..template.len()].copy_from_slice(template);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
            let n = sender
                .protect_rtp(&mut buf, template.len())
                .expect("protect");
            let n = rekey_rtp(inbound, outbound, &mut buf, n).expect("rekey");
            let n = receiver.unprotect_rtp(&mut buf, n).expect("unprotect");
            assert_eq!(n, template.len(), "{profile}");
            // Plain legs: RTP -> SRTP -> RTP.
            let n = rekey_rtp(&mut plain_in, plain_to_srtp, &mut buf, n).expect("rtp->srtp");
            assert!(n > template.len());
            let n =
                rekey_rtp(&mut plain_in, &mut plain_out, &mut buf, template.len()).expect("plain");
            assert_eq!(n, template.len());
            buf[..report.len()].copy_from_slice(&report);
            buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
            let n = sender
                .protect_rtcp(&mut buf, report.len())
                .expect("protect rtcp");
            let n = rekey_rtcp(inbound, outbound, &mut buf, n).expect("rekey rtcp");
            receiver
                .unprotect_rtcp(&mut buf, n)
                .expect("unprotect rtcp");
            processed += 1;
        }
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(processed, 36 * u64::from(packets_per_leg));
    assert_eq!(
        after - before,
        0,
        "{} allocations over {processed} packet rounds",
        after - before
    );
}
