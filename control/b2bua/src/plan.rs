//! What a call holds (its entries and port pairs) and the changes the caller applies: the
//! bookkeeping both roles share, so that teardown frees exactly what was taken.

use std::collections::{BTreeMap, BTreeSet};

use edgeway_flowtable::{FlowTable, PortAllocator};
use edgeway_map_schema::{FlowEntry, FlowKey};

use crate::PlanError;

/// Media port pairs (RTP even, RTCP the next port), as the node's [`PortAllocator`] hands
/// them out; tests and fuzzers may supply their own.
pub trait PortPool {
    /// Allocates a pair; returns its even (RTP) port.
    fn allocate_pair(&mut self, now_ms: u64) -> Result<u16, PlanError>;
    /// Releases the pair whose RTP port is `port` (quarantined by the node's allocator).
    fn release_pair(&mut self, port: u16, now_ms: u64);
}

impl PortPool for PortAllocator<'_> {
    fn allocate_pair(&mut self, now_ms: u64) -> Result<u16, PlanError> {
        PortAllocator::allocate_pair(self, now_ms).map_err(|e| PlanError::Ports(e.to_string()))
    }

    fn release_pair(&mut self, port: u16, now_ms: u64) {
        // Only fails for a pair this call never held: nothing to free then.
        let _ = PortAllocator::release_pair(self, port, now_ms);
    }
}

/// The flow-table changes of one step: apply `remove` first, then `insert` (an insert of a
/// key already present replaces its entry and bumps its generation). Ports in
/// `released_ports` were already returned to the pool (quarantined: their flows may still
/// be in the table until this update is applied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowUpdate {
    /// Keys to remove.
    pub remove: Vec<FlowKey>,
    /// Entries to insert or replace.
    pub insert: Vec<(FlowKey, FlowEntry)>,
    /// RTP ports of the pairs released in this step.
    pub released_ports: Vec<u16>,
}

impl FlowUpdate {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.insert.is_empty() && self.released_ports.is_empty()
    }

    /// Applies the update to `table` (removals first). Stops at the first refusal; the
    /// caller should tear the call down then.
    pub fn apply(&self, table: &FlowTable) -> Result<(), edgeway_flowtable::Error> {
        for key in &self.remove {
            table.remove(key)?;
        }
        for (key, entry) in &self.insert {
            table.insert(*key, *entry)?;
        }
        Ok(())
    }
}

/// The entries a call has handed out and the port pairs it holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger {
    installed: BTreeMap<FlowKey, FlowEntry>,
    held: BTreeSet<u16>,
    /// Pairs allocated while handling the current message (released if it fails).
    fresh: Vec<u16>,
}

impl Ledger {
    /// A pair for a new stream.
    pub(crate) fn allocate(
        &mut self,
        pool: &mut dyn PortPool,
        now_ms: u64,
    ) -> Result<u16, PlanError> {
        let p = pool.allocate_pair(now_ms)?;
        self.held.insert(p);
        self.fresh.push(p);
        Ok(p)
    }

    /// Starts a message: nothing allocated yet.
    pub(crate) fn begin(&mut self) {
        self.fresh.clear();
    }

    /// The message failed: gives back the pairs it allocated.
    pub(crate) fn abort(&mut self, pool: &mut dyn PortPool, now_ms: u64) {
        for p in self.fresh.drain(..) {
            self.held.remove(&p);
            pool.release_pair(p, now_ms);
        }
    }

    /// Brings the table to `desired` and releases every pair outside `keep`.
    pub(crate) fn sync(
        &mut self,
        desired: BTreeMap<FlowKey, FlowEntry>,
        keep: &BTreeSet<u16>,
        pool: &mut dyn PortPool,
        now_ms: u64,
    ) -> FlowUpdate {
        let mut update = FlowUpdate::default();
        for key in self.installed.keys() {
            if !desired.contains_key(key) {
                update.remove.push(*key);
            }
        }
        for (key, entry) in &desired {
            if self.installed.get(key) != Some(entry) {
                update.insert.push((*key, *entry));
            }
        }
        self.installed = desired;
        let gone: Vec<u16> = self.held.difference(keep).copied().collect();
        for p in gone {
            self.held.remove(&p);
            pool.release_pair(p, now_ms);
            update.released_ports.push(p);
        }
        self.fresh.clear();
        update
    }

    /// The entries handed out and not yet removed.
    pub(crate) fn installed(&self) -> &BTreeMap<FlowKey, FlowEntry> {
        &self.installed
    }

    /// The RTP ports of the pairs held.
    pub(crate) fn held(&self) -> &BTreeSet<u16> {
        &self.held
    }
}
