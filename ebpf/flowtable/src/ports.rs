//! [`PortAllocator`]: media port pairs (RTP even, RTCP odd) from the table's range, shared by
//! every process on the node through the table file and its writer lock.
//!
//! One word per UDP port: free, in use, excluded, or the Unix ms until which a released port
//! stays in quarantine (a port is never handed out while packets of its previous flow may
//! still arrive). Allocation scans round-robin from a persisted cursor, so a just-released
//! pair is the last one reused.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, FlowTable, Result};

/// Port word: free.
const FREE: u64 = 0;
/// Port word: allocated.
pub(crate) const IN_USE: u64 = u64::MAX;
/// Port word: never allocated (demultiplexing ports).
pub(crate) const EXCLUDED: u64 = u64::MAX - 1;

/// One port's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortState {
    /// Free to allocate.
    Free,
    /// Allocated to a flow.
    InUse,
    /// Never allocated (a demultiplexing port).
    Excluded,
    /// Released; reusable from this Unix ms.
    Quarantined {
        /// When the quarantine ends (Unix ms).
        until_ms: u64,
    },
    /// Outside the media range.
    OutOfRange,
}

/// Port counts over the media range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortUsage {
    /// Pairs that could be allocated now.
    pub free_pairs: u32,
    /// Ports allocated.
    pub in_use: u32,
    /// Ports in quarantine.
    pub quarantined: u32,
    /// Ports excluded.
    pub excluded: u32,
}

/// The node's media port allocator: see [`FlowTable::ports`].
#[derive(Clone, Copy, Debug)]
pub struct PortAllocator<'a> {
    table: &'a FlowTable,
}

impl FlowTable {
    /// The media port allocator stored in this table.
    pub fn ports(&self) -> PortAllocator<'_> {
        PortAllocator { table: self }
    }
}

fn state_of(word: u64, now_ms: u64) -> PortState {
    match word {
        FREE => PortState::Free,
        IN_USE => PortState::InUse,
        EXCLUDED => PortState::Excluded,
        until_ms if until_ms <= now_ms => PortState::Free,
        until_ms => PortState::Quarantined { until_ms },
    }
}

impl PortAllocator<'_> {
    /// The media range (inclusive), fixed at creation.
    pub fn range(&self) -> (u16, u16) {
        self.table.port_range()
    }

    fn words(&self) -> &[AtomicU64] {
        self.table.port_words()
    }

    /// First even port of the range and number of whole pairs in it.
    fn pairs(&self) -> (u16, u32) {
        let (lo, hi) = self.range();
        let first = lo + (lo & 1);
        (first, (u32::from(hi) + 1 - u32::from(first)) / 2)
    }

    /// One port's state at `now_ms`.
    pub fn state(&self, port: u16, now_ms: u64) -> PortState {
        let (lo, hi) = self.range();
        if !(lo..=hi).contains(&port) {
            return PortState::OutOfRange;
        }
        state_of(
            self.words()[usize::from(port)].load(Ordering::Relaxed),
            now_ms,
        )
    }

    /// Counts over the range at `now_ms`.
    pub fn usage(&self, now_ms: u64) -> PortUsage {
        let (lo, hi) = self.range();
        let mut u = PortUsage::default();
        for p in lo..=hi {
            match self.state(p, now_ms) {
                PortState::InUse => u.in_use += 1,
                PortState::Excluded => u.excluded += 1,
                PortState::Quarantined { .. } => u.quarantined += 1,
                _ => {}
            }
        }
        let (first, n) = self.pairs();
        u.free_pairs = (0..n)
            .filter(|k| {
                let p = first + 2 * *k as u16;
                self.state(p, now_ms) == PortState::Free
                    && self.state(p + 1, now_ms) == PortState::Free
            })
            .count() as u32;
        u
    }

    /// Allocates the next free pair after the cursor: returns the even (RTP) port `p`; `p`
    /// and `p + 1` are both marked in use. [`Error::PortsExhausted`] when none is free.
    pub fn allocate_pair(&self, now_ms: u64) -> Result<u16> {
        let t = self.table;
        t.with_writer(|| {
            let (first, n) = self.pairs();
            let cursor = t.header().port_cursor.load(Ordering::Relaxed);
            let start = if cursor >= u32::from(first) && cursor < u32::from(first) + 2 * n {
                (cursor - u32::from(first)) / 2
            } else {
                0
            };
            let words = self.words();
            for k in 0..n {
                let idx = (start + k) % n;
                let p = first + 2 * idx as u16;
                let (a, b) = (usize::from(p), usize::from(p) + 1);
                if state_of(words[a].load(Ordering::Relaxed), now_ms) == PortState::Free
                    && state_of(words[b].load(Ordering::Relaxed), now_ms) == PortState::Free
                {
                    words[a].store(IN_USE, Ordering::Relaxed);
                    words[b].store(IN_USE, Ordering::Relaxed);
                    let next = u32::from(first) + 2 * ((idx + 1) % n);
                    t.header().port_cursor.store(next, Ordering::Relaxed);
                    return Ok(p);
                }
            }
            let (min, max) = self.range();
            let u = self.usage(now_ms);
            Err(Error::PortsExhausted {
                min,
                max,
                in_use: u.in_use,
                quarantined: u.quarantined,
                excluded: u.excluded,
            })
        })?
    }

    fn check_pair(&self, port: u16) -> Result<()> {
        let (min, max) = self.range();
        if port & 1 == 1 {
            return Err(Error::OddPort { port });
        }
        if port < min || port >= max {
            return Err(Error::PortOutOfRange { port, min, max });
        }
        Ok(())
    }

    /// Marks the fixed pair `port`/`port + 1` in use (a flow on a known port). Fails when
    /// either port is in use, excluded or in quarantine at `now_ms`.
    pub fn reserve_pair(&self, port: u16, now_ms: u64) -> Result<()> {
        self.check_pair(port)?;
        self.table.with_writer(|| {
            let words = self.words();
            for p in [port, port + 1] {
                let state = match state_of(words[usize::from(p)].load(Ordering::Relaxed), now_ms) {
                    PortState::Free => continue,
                    PortState::InUse => "in use".to_owned(),
                    PortState::Excluded => "excluded from allocation".to_owned(),
                    PortState::Quarantined { until_ms } => format!(
                        "in quarantine for {} ms more",
                        until_ms.saturating_sub(now_ms)
                    ),
                    PortState::OutOfRange => "outside the media range".to_owned(),
                };
                return Err(Error::PortUnavailable { port: p, state });
            }
            words[usize::from(port)].store(IN_USE, Ordering::Relaxed);
            words[usize::from(port) + 1].store(IN_USE, Ordering::Relaxed);
            Ok(())
        })?
    }

    /// Releases the pair `port`/`port + 1`: both stay in quarantine for the table's
    /// `port_quarantine_ms` from `now_ms`. [`Error::PortNotAllocated`] unless both are in use.
    pub fn release_pair(&self, port: u16, now_ms: u64) -> Result<()> {
        self.check_pair(port)?;
        let q = self
            .table
            .header()
            .port_quarantine_ms
            .load(Ordering::Relaxed);
        // Never FREE/IN_USE/EXCLUDED by accident: those values are 0 and the top two.
        let until = now_ms.saturating_add(q).clamp(1, EXCLUDED - 1);
        self.table.with_writer(|| {
            let words = self.words();
            let (a, b) = (usize::from(port), usize::from(port) + 1);
            if words[a].load(Ordering::Relaxed) != IN_USE
                || words[b].load(Ordering::Relaxed) != IN_USE
            {
                return Err(Error::PortNotAllocated { port });
            }
            words[a].store(until, Ordering::Relaxed);
            words[b].store(until, Ordering::Relaxed);
            Ok(())
        })?
    }
}
