//! The two lookup structures of a worker: a flat index by local port for ordinary ports and a
//! small open-addressing hash map for demultiplexing keys (port + remote address and port).
//! Both are sized on install, so lookups never allocate.

use edgeway_map_schema::FlowKey;

/// Marks an empty entry of either structure.
pub(crate) const NONE: u32 = u32::MAX;

/// Arena index by local UDP port: one `u32` per possible port (256 KiB).
#[derive(Debug)]
pub(crate) struct PortIndex(Box<[u32]>);

impl PortIndex {
    pub(crate) fn new() -> Self {
        PortIndex(vec![NONE; 1 << 16].into_boxed_slice())
    }

    #[inline]
    pub(crate) fn get(&self, port: u16) -> Option<u32> {
        let i = self.0[usize::from(port)];
        (i != NONE).then_some(i)
    }

    pub(crate) fn set(&mut self, port: u16, index: u32) {
        self.0[usize::from(port)] = index;
    }

    pub(crate) fn clear(&mut self, port: u16) {
        self.0[usize::from(port)] = NONE;
    }
}

/// A demultiplexing key packed into a non-zero `u64` (the remote port of such a key is never
/// 0, so 0 marks an empty bucket).
#[inline]
fn pack(key: &FlowKey) -> u64 {
    u64::from(u32::from_be_bytes(key.remote_ip)) << 32
        | u64::from(key.local_port) << 16
        | u64::from(key.remote_port)
}

/// Linear-probing hash map from demultiplexing key to arena index, at most half full. Keys
/// are installed by the control plane, never by packets, so a sender cannot build long probe
/// chains; a remote can only choose which bucket a miss starts at.
#[derive(Debug)]
pub(crate) struct DemuxMap {
    keys: Vec<u64>,
    values: Vec<u32>,
    len: usize,
    shift: u32,
}

impl DemuxMap {
    pub(crate) fn new() -> Self {
        Self::with_buckets(64)
    }

    fn with_buckets(buckets: usize) -> Self {
        debug_assert!(buckets.is_power_of_two());
        DemuxMap {
            keys: vec![0; buckets],
            values: vec![NONE; buckets],
            len: 0,
            shift: 64 - buckets.trailing_zeros(),
        }
    }

    #[inline]
    fn bucket(&self, packed: u64) -> usize {
        // Fibonacci hashing: the top bits of the product mix every input bit.
        (packed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    pub(crate) fn get(&self, key: &FlowKey) -> Option<u32> {
        let packed = pack(key);
        let mask = self.keys.len() - 1;
        let mut b = self.bucket(packed);
        loop {
            match self.keys[b] {
                0 => return None,
                k if k == packed => return Some(self.values[b]),
                _ => b = (b + 1) & mask,
            }
        }
    }

    /// Inserts or replaces; grows (allocates) when more than half full.
    pub(crate) fn insert(&mut self, key: &FlowKey, value: u32) {
        if (self.len + 1) * 2 > self.keys.len() {
            let mut bigger = Self::with_buckets(self.keys.len() * 2);
            for (&k, &v) in self.keys.iter().zip(&self.values) {
                if k != 0 {
                    bigger.put(k, v);
                }
            }
            *self = bigger;
        }
        self.put(pack(key), value);
    }

    fn put(&mut self, packed: u64, value: u32) {
        let mask = self.keys.len() - 1;
        let mut b = self.bucket(packed);
        while self.keys[b] != 0 && self.keys[b] != packed {
            b = (b + 1) & mask;
        }
        if self.keys[b] == 0 {
            self.len += 1;
        }
        self.keys[b] = packed;
        self.values[b] = value;
    }

    /// Removes `key` with backward-shift deletion (no tombstones, probe chains stay short).
    pub(crate) fn remove(&mut self, key: &FlowKey) -> Option<u32> {
        let packed = pack(key);
        let mask = self.keys.len() - 1;
        let mut b = self.bucket(packed);
        loop {
            match self.keys[b] {
                0 => return None,
                k if k == packed => break,
                _ => b = (b + 1) & mask,
            }
        }
        let removed = self.values[b];
        self.len -= 1;
        let mut hole = b;
        let mut next = (hole + 1) & mask;
        while self.keys[next] != 0 {
            let home = self.bucket(self.keys[next]);
            // Move `next` into the hole unless its home lies cyclically in (hole, next].
            let stays = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !stays {
                self.keys[hole] = self.keys[next];
                self.values[hole] = self.values[next];
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.keys[hole] = 0;
        self.values[hole] = NONE;
        Some(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn matches_a_std_map_through_inserts_and_removals() {
        let mut map = DemuxMap::new();
        let mut model = HashMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for step in 0..50_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // A few hundred distinct keys, so removals hit and chains form.
            let key = FlowKey::demux(
                36000 + (x % 12) as u16,
                [10, 0, 0, (x >> 8) as u8 % 4],
                1 + (x >> 16) as u16 % 40,
            );
            if x >> 60 < 6 {
                assert_eq!(map.remove(&key), model.remove(&key), "step {step}");
            } else {
                map.insert(&key, step);
                model.insert(key, step);
            }
            assert_eq!(map.len, model.len());
            if step % 1000 == 0 {
                for (k, v) in &model {
                    assert_eq!(map.get(k), Some(*v));
                }
            }
        }
        for (k, v) in &model {
            assert_eq!(map.get(k), Some(*v));
        }
    }
}
