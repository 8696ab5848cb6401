//! The table file: a 4 KiB header, then fixed regions whose offsets follow from the header's
//! capacity, change-log length and worker count. All-zero is an empty table.
//!
//! ```text
//! header       4096 B   magic, versions, type sizes, geometry, options, writer state,
//!                       dataplane liveness, change counter (own cache line)
//! node         max_workers x (seq + NodeCounters)
//! ports        65536 x u64          per UDP port: free / in use / excluded / quarantined-until
//! changes      change_log_len x 4 words   {seq, key, slot | generation << 32, op}
//! slots        capacity x 25 words  {seq, status << 56 | removed_ms, FlowKey, FlowEntry}
//! states       capacity x (seq + FlowState)
//! counters     capacity x (seq + FlowCounters)
//! ```
//!
//! Regions start on 64-byte boundaries. Every value is in host byte order, types from
//! `edgeway-map-schema` byte for byte.

use std::mem::size_of;
use std::sync::atomic::{AtomicU32, AtomicU64};

use edgeway_map_schema::{FlowCounters, FlowEntry, FlowKey, FlowState};

use crate::sys::{AtomicView, Plain};
use crate::NodeCounters;

/// "EDGWFLOW" as a little-endian word.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"EDGWFLOW");
/// Version of this file layout (header, slot and region formats), independent of the
/// schema's.
pub(crate) const FILE_VERSION: u32 = 1;
/// Bytes reserved for the header.
pub(crate) const HEADER_BYTES: usize = 4096;
/// Words of a slot after its sequence word: meta, key, entry.
pub(crate) const SLOT_BODY_WORDS: usize = 2 + <FlowEntry as Plain>::WORDS;
/// Words of a slot.
pub(crate) const SLOT_WORDS: usize = 1 + SLOT_BODY_WORDS;
/// Words of a change record.
pub(crate) const CHANGE_WORDS: usize = 4;
/// Words of a state record (sequence + FlowState).
pub(crate) const STATE_WORDS: usize = 1 + <FlowState as Plain>::WORDS;
/// Words of a counters record.
pub(crate) const COUNTER_WORDS: usize = 1 + <FlowCounters as Plain>::WORDS;
/// Words of a node counters record.
pub(crate) const NODE_WORDS: usize = 1 + <NodeCounters as Plain>::WORDS;
/// Entries of the per-port array (every UDP port).
pub(crate) const PORT_WORDS: usize = 65536;

const _: () = assert!(<FlowKey as Plain>::WORDS == 1);

/// A word on its own cache line (the change counter every worker polls).
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Line(pub(crate) AtomicU64);

/// The header, viewed in place at offset 0.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) magic: AtomicU64,
    pub(crate) file_version: AtomicU32,
    pub(crate) schema_version: AtomicU32,
    pub(crate) key_size: AtomicU32,
    pub(crate) entry_size: AtomicU32,
    pub(crate) state_size: AtomicU32,
    pub(crate) counters_size: AtomicU32,
    pub(crate) node_counters_size: AtomicU32,
    pub(crate) capacity: AtomicU32,
    pub(crate) change_log_len: AtomicU32,
    pub(crate) max_workers: AtomicU32,
    pub(crate) file_size: AtomicU64,
    pub(crate) hash_seed: AtomicU64,
    pub(crate) created_ms: AtomicU64,
    pub(crate) tombstone_quarantine_ms: AtomicU64,
    pub(crate) port_quarantine_ms: AtomicU64,
    pub(crate) port_min: AtomicU32,
    pub(crate) port_max: AtomicU32,
    // Written under the writer lock.
    pub(crate) port_cursor: AtomicU32,
    pub(crate) live: AtomicU32,
    pub(crate) tombstones: AtomicU32,
    pub(crate) _pad: AtomicU32,
    /// Slot index + 1 of a slot write in progress (0: none); `redo` holds its body.
    pub(crate) pending_slot: AtomicU64,
    pub(crate) redo: [AtomicU64; SLOT_BODY_WORDS],
    // Published by the data plane.
    pub(crate) dataplane_pid: AtomicU32,
    pub(crate) dataplane_workers: AtomicU32,
    pub(crate) dataplane_started_ms: AtomicU64,
    pub(crate) dataplane_heartbeat_ms: AtomicU64,
    pub(crate) dataplane_role: [AtomicU64; 4],
    /// Changes ever appended to the change log.
    pub(crate) changes: Line,
}

// SAFETY: repr(C), atomics only (Line is a repr(C) wrapper of one AtomicU64).
unsafe impl AtomicView for Header {}

const _: () = assert!(size_of::<Header>() <= HEADER_BYTES);

/// Byte offsets of the regions for one geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) capacity: usize,
    pub(crate) change_log_len: usize,
    pub(crate) max_workers: usize,
    pub(crate) node: usize,
    pub(crate) ports: usize,
    pub(crate) changes: usize,
    pub(crate) slots: usize,
    pub(crate) states: usize,
    pub(crate) counters: usize,
    pub(crate) file_size: usize,
}

fn line_up(n: usize) -> usize {
    n.div_ceil(64) * 64
}

impl Layout {
    pub(crate) fn new(capacity: u32, change_log_len: u32, max_workers: u32) -> Layout {
        let (capacity, change_log_len, max_workers) = (
            capacity as usize,
            change_log_len as usize,
            max_workers as usize,
        );
        let node = HEADER_BYTES;
        let ports = line_up(node + max_workers * NODE_WORDS * 8);
        let changes = line_up(ports + PORT_WORDS * 8);
        let slots = line_up(changes + change_log_len * CHANGE_WORDS * 8);
        let states = line_up(slots + capacity * SLOT_WORDS * 8);
        let counters = line_up(states + capacity * STATE_WORDS * 8);
        let file_size = line_up(counters + capacity * COUNTER_WORDS * 8).next_multiple_of(4096);
        Layout {
            capacity,
            change_log_len,
            max_workers,
            node,
            ports,
            changes,
            slots,
            states,
            counters,
            file_size,
        }
    }
}
