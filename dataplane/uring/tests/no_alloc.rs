//! Steady state allocates nothing: a counting global allocator watches the worker thread
//! between two marks set from inside its handler.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{client, payload, spawn_worker};
use edgeway_uring::{Datagram, Disposition, UringConfig};

struct Counting;

thread_local! {
    /// Set on the worker thread between the marks; const-initialised, so reading it never
    /// allocates.
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn note() {
    if TRACKED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARMUP: u64 = 1_000;
const MEASURED: u64 = 10_000;
const BURST: usize = 32;

#[test]
fn ten_thousand_echo_round_trips_allocate_nothing_on_the_worker() {
    let worker = spawn_worker(UringConfig::default(), 1, |_| {
        let mut n = 0u64;
        move |d: Datagram<'_>| {
            n += 1;
            // Tracking spans the receive, handler and send of datagrams WARMUP+1 ..= WARMUP+MEASURED,
            // and every run_once step (enter, drain, re-arm, recycle) in between.
            if n == WARMUP + 1 {
                TRACKED.with(|t| t.set(true));
            }
            if n == WARMUP + MEASURED + 1 {
                TRACKED.with(|t| t.set(false));
            }
            Disposition::Send {
                from: d.socket,
                to: d.src,
                len: d.len,
            }
        }
    });
    let server = worker.addrs[0];
    let c = client();
    let mut buf = [0u8; 2048];
    let total = (WARMUP + MEASURED + 1) as usize;
    let mut i = 0;
    while i < total {
        let n = BURST.min(total - i);
        for k in i..i + n {
            c.send_to(&payload(k), server).expect("send");
        }
        for _ in 0..n {
            c.recv_from(&mut buf).expect("echo");
        }
        i += n;
    }
    let stats = worker.stop();
    assert_eq!(stats.received, total as u64);
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "allocations on the worker thread during {MEASURED} echo round trips"
    );
}
