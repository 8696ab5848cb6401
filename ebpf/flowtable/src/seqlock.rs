//! Sequence locks over atomic words in the shared mapping.
//!
//! A record is a sequence word followed by its body. Even: stable; odd: being written. A
//! reader loads the sequence (Acquire), copies the body with Relaxed loads, issues an
//! Acquire fence and reloads the sequence: the copy is consistent if the two loads agree and
//! are even (Boehm, "Can seqlocks get along with programming language memory models?",
//! 2012). Because the body is copied through `AtomicU64` loads, a write racing with the copy
//! is not a data race; it only makes the reader retry.
//!
//! A writer moves the sequence from even to odd with a compare-exchange, fences (Release),
//! stores the body and publishes the next even value (Release). The compare-exchange makes
//! two writers that break the single-writer rule (a worker hand-over) take turns instead of
//! producing a torn record under an even sequence.
//!
//! Retries are bounded in both directions, so a process killed mid-write (sequence odd
//! forever) cannot hang anyone: a reader gives up after [`READ_ATTEMPTS`] and reports the
//! record busy; a writer takes the record over after its `takeover_after` attempts, which
//! repairs it.

use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Attempts a reader makes before reporting a record busy: spins first, then yields, so a
/// writer preempted mid-record (2 cores, 25 words) gets the CPU back to finish.
pub(crate) const READ_ATTEMPTS: u32 = 256;
/// Attempts spent spinning before yielding.
const SPINS: u32 = 64;
/// Attempts a single-writer record's writer waits on an odd sequence before it decides the
/// previous writer died and takes over.
pub(crate) const TAKEOVER_ATTEMPTS: u32 = 2048;

fn backoff(attempt: u32) {
    if attempt < SPINS {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Runs `copy` (Relaxed loads of the body) under the read protocol; `None` when the record
/// stayed odd or kept changing for [`READ_ATTEMPTS`].
pub(crate) fn read<R>(seq: &AtomicU64, mut copy: impl FnMut() -> R) -> Option<R> {
    for attempt in 0..READ_ATTEMPTS {
        let s0 = seq.load(Ordering::Acquire);
        if s0 & 1 == 0 {
            let r = copy();
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == s0 {
                return Some(r);
            }
        }
        backoff(attempt);
    }
    None
}

/// Copies `body` into `out` under the read protocol; false when busy (see [`read`]).
pub(crate) fn read_words(seq: &AtomicU64, body: &[AtomicU64], out: &mut [u64]) -> bool {
    read(seq, || {
        for (o, w) in out.iter_mut().zip(body) {
            *o = w.load(Ordering::Relaxed);
        }
    })
    .is_some()
}

/// Writes `data` into `body` under the write protocol. `takeover_after`: attempts on an odd
/// sequence before it is treated as abandoned (0 when the caller knows nobody else writes,
/// i.e. holds the table's writer lock).
pub(crate) fn write_words(seq: &AtomicU64, body: &[AtomicU64], data: &[u64], takeover_after: u32) {
    let mut attempt = 0;
    let odd = loop {
        let s = seq.load(Ordering::Relaxed);
        let next = if s & 1 == 0 {
            Some(s.wrapping_add(1))
        } else if attempt >= takeover_after {
            // Abandoned mid-write: stay odd while we rewrite the whole body.
            Some(s.wrapping_add(2))
        } else {
            None
        };
        if let Some(next) = next {
            if seq
                .compare_exchange_weak(s, next, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                break next;
            }
        } else {
            backoff(attempt);
        }
        attempt = attempt.saturating_add(1);
    };
    // Orders the odd sequence before every body store (pairs with the reader's fence).
    fence(Ordering::Release);
    for (w, v) in body.iter().zip(data) {
        w.store(*v, Ordering::Relaxed);
    }
    seq.store(odd.wrapping_add(1), Ordering::Release);
}

/// Makes the sequence odd and leaves it so: what a writer killed mid-write leaves behind.
#[cfg(test)]
pub(crate) fn abandon(seq: &AtomicU64) {
    seq.fetch_or(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_sequence_advances_by_two() {
        let seq = AtomicU64::new(0);
        let body: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        write_words(&seq, &body, &[1, 2, 3, 4], TAKEOVER_ATTEMPTS);
        assert_eq!(seq.load(Ordering::Relaxed), 2);
        let mut out = [0u64; 4];
        assert!(read_words(&seq, &body, &mut out));
        assert_eq!(out, [1, 2, 3, 4]);
    }

    #[test]
    fn abandoned_record_is_busy_for_readers_and_repaired_by_the_next_writer() {
        let seq = AtomicU64::new(6);
        let body: Vec<AtomicU64> = (0..2).map(|_| AtomicU64::new(0)).collect();
        abandon(&seq);
        let mut out = [0u64; 2];
        assert!(
            !read_words(&seq, &body, &mut out),
            "odd sequence must read busy"
        );
        write_words(&seq, &body, &[7, 8], 4);
        assert_eq!(seq.load(Ordering::Relaxed) & 1, 0);
        assert!(read_words(&seq, &body, &mut out));
        assert_eq!(out, [7, 8]);
    }
}
