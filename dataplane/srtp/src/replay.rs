//! Sliding replay window over 48-bit SRTP (or 31-bit SRTCP) packet indices (RFC 3711 §3.3.2).
//!
//! The window is a ring of bits indexed by `index % MAX_REPLAY_WINDOW`, so advancing it costs
//! at most a few word writes and never shifts the whole bitmap.

use crate::Error;

/// The largest replay window a context accepts, in packets.
pub const MAX_REPLAY_WINDOW: u32 = 4096;
pub(crate) const WINDOW_WORDS: usize = MAX_REPLAY_WINDOW as usize / 64;
const RING_BITS: u64 = MAX_REPLAY_WINDOW as u64;

/// Which indices of the last `size` were seen, relative to the highest seen.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ReplayWindow {
    /// Highest index accepted; meaningless until `started`.
    pub(crate) highest: u64,
    /// Ring bitmap: bit `i % RING_BITS` set when index `i` (within the window) was seen.
    pub(crate) bits: [u64; WINDOW_WORDS],
    pub(crate) started: bool,
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("highest", &self.highest)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    pub(crate) const fn new() -> Self {
        ReplayWindow {
            highest: 0,
            bits: [0; WINDOW_WORDS],
            started: false,
        }
    }

    /// Refuses `index` if it was seen or is older than `size` packets behind the highest.
    #[inline]
    pub(crate) fn check(&self, index: u64, size: u32) -> Result<(), Error> {
        if !self.started || index > self.highest {
            return Ok(());
        }
        let age = self.highest - index;
        if age >= u64::from(size) {
            return Err(Error::TooOld { index });
        }
        if self.bit(index) {
            return Err(Error::Replayed { index });
        }
        Ok(())
    }

    /// Records `index` as seen. Call only after [`ReplayWindow::check`] and authentication.
    #[inline]
    pub(crate) fn accept(&mut self, index: u64) {
        if !self.started {
            self.started = true;
            self.bits = [0; WINDOW_WORDS];
            self.highest = index;
        } else if index > self.highest {
            self.clear_range(self.highest + 1, index - self.highest);
            self.highest = index;
        }
        let pos = index % RING_BITS;
        self.bits[(pos / 64) as usize] |= 1 << (pos % 64);
    }

    #[inline]
    fn bit(&self, index: u64) -> bool {
        let pos = index % RING_BITS;
        self.bits[(pos / 64) as usize] & (1 << (pos % 64)) != 0
    }

    /// Clears the bits of indices `from .. from + count`.
    fn clear_range(&mut self, from: u64, count: u64) {
        if count >= RING_BITS {
            self.bits = [0; WINDOW_WORDS];
            return;
        }
        let mut pos = from % RING_BITS;
        let mut left = count;
        while left > 0 {
            let off = pos % 64;
            let take = (64 - off).min(left);
            let mask = if take == 64 {
                u64::MAX
            } else {
                ((1u64 << take) - 1) << off
            };
            self.bits[(pos / 64) as usize] &= !mask;
            pos = (pos + take) % RING_BITS;
            left -= take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_fresh_refuses_replay_and_old() {
        let mut w = ReplayWindow::new();
        w.check(100, 64).unwrap();
        w.accept(100);
        assert_eq!(w.check(100, 64), Err(Error::Replayed { index: 100 }));
        w.check(99, 64).unwrap();
        w.accept(99);
        assert_eq!(w.check(99, 64), Err(Error::Replayed { index: 99 }));
        assert_eq!(w.check(36, 64), Err(Error::TooOld { index: 36 }));
        w.check(37, 64).unwrap();
    }

    #[test]
    fn jumps_clear_stale_bits_across_the_ring() {
        let mut w = ReplayWindow::new();
        for i in 0..5000 {
            w.accept(i);
        }
        // Jump by less than the ring: the bits of the skipped indices must read as unseen.
        w.accept(5000 + 3000);
        for i in 5001..8000 {
            w.check(i, MAX_REPLAY_WINDOW).unwrap();
        }
        assert!(w.check(8000, MAX_REPLAY_WINDOW).is_err());
        // Jump further than the ring.
        w.accept(100_000);
        w.check(99_999, MAX_REPLAY_WINDOW).unwrap();
    }

    #[test]
    fn matches_a_naive_model() {
        use std::collections::BTreeSet;
        let mut w = ReplayWindow::new();
        let mut seen = BTreeSet::new();
        let size = 1024u32;
        let mut x: u64 = 0x1234_5678;
        let mut base = 5000u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            base += x % 3;
            let idx = base + (x >> 20) % 40 - (x >> 40) % 1500.min(base);
            let highest = seen.iter().next_back().copied();
            let expect = match highest {
                None => Ok(()),
                Some(h) if idx > h => Ok(()),
                Some(h) if h - idx >= u64::from(size) => Err(Error::TooOld { index: idx }),
                Some(_) if seen.contains(&idx) => Err(Error::Replayed { index: idx }),
                Some(_) => Ok(()),
            };
            assert_eq!(w.check(idx, size), expect, "index {idx}");
            if expect.is_ok() {
                w.accept(idx);
                seen.insert(idx);
            }
        }
    }
}
