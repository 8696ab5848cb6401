//! What a call holds (its entries and port pairs) and the changes the caller applies: the
//! bookkeeping both roles share, so that teardown frees exactly what was taken.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use edgeway_flowtable::{entry_json, FlowTable, PortAllocator};
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
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FlowUpdate {
    /// Keys to remove.
    pub remove: Vec<FlowKey>,
    /// Entries to insert or replace.
    pub insert: Vec<(FlowKey, FlowEntry)>,
    /// RTP ports of the pairs released in this step.
    pub released_ports: Vec<u16>,
    /// The call number whose entries `remove` names (`None`: remove whatever is there).
    pub call: Option<u64>,
}

/// Entries as the table's JSON view shows them: never key material (invariant 11).
fn entries_without_keys<'a>(
    entries: impl Iterator<Item = (&'a FlowKey, &'a FlowEntry)>,
) -> Vec<String> {
    entries.map(|(k, e)| entry_json(k, e).to_string()).collect()
}

impl fmt::Debug for FlowUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowUpdate")
            .field("remove", &self.remove)
            .field(
                "insert",
                &entries_without_keys(self.insert.iter().map(|(k, e)| (k, e))),
            )
            .field("released_ports", &self.released_ports)
            .field("call", &self.call)
            .finish()
    }
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("installed", &entries_without_keys(self.installed.iter()))
            .field("held", &self.held)
            .finish()
    }
}

/// Why [`FlowUpdate::apply`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The table refused (full, damaged, its BPF backend failed).
    #[error(transparent)]
    Table(#[from] edgeway_flowtable::Error),
    /// The key is another flow's: this call's SDP names media another call already uses.
    #[error("flow key {key:?} belongs to flow {owner}; not replaced")]
    Conflict {
        /// The key.
        key: FlowKey,
        /// The flow id holding it.
        owner: u64,
    },
}

impl FlowUpdate {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.insert.is_empty() && self.released_ports.is_empty()
    }

    /// Applies the update to `table` (removals first), never touching another flow's
    /// call's entry: a key held by another call's `flow_id` is neither removed nor replaced (on the edge
    /// two calls could name the same core source; the second is refused with
    /// [`ApplyError::Conflict`] and should be torn down, which leaves the first intact).
    pub fn apply(&self, table: &FlowTable) -> Result<(), ApplyError> {
        let foreign = |key: &FlowKey, flow_id: u64| {
            table
                .lookup(key)
                .map(|(_, e)| e.flow_id)
                .filter(|owner| owner >> 8 != flow_id >> 8)
        };
        for key in &self.remove {
            if let Some((_, e)) = table.lookup(key) {
                if self.owns(key, e.flow_id) {
                    table.remove(key)?;
                }
            }
        }
        for (key, entry) in &self.insert {
            if let Some(owner) = foreign(key, entry.flow_id) {
                return Err(ApplyError::Conflict { key: *key, owner });
            }
            table.insert(*key, *entry)?;
        }
        Ok(())
    }

    /// Whether the call that produced this update owns `key` when it holds `flow_id`: its
    /// flow ids share the call's number (the top 56 bits).
    fn owns(&self, _key: &FlowKey, flow_id: u64) -> bool {
        match self.call {
            Some(call) => flow_id >> 8 == call,
            None => true,
        }
    }
}

/// The entries a call has handed out and the port pairs it holds.
#[derive(Clone, Default)]
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
        call: u64,
        desired: BTreeMap<FlowKey, FlowEntry>,
        keep: &BTreeSet<u16>,
        pool: &mut dyn PortPool,
        now_ms: u64,
    ) -> FlowUpdate {
        let mut update = FlowUpdate {
            call: Some(call),
            ..FlowUpdate::default()
        };
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
