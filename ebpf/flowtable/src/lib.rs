//! The flow table: the map from [`FlowKey`] to [`FlowEntry`] that the control plane writes
//! and the data-plane workers read, with the per-entry [`FlowState`] and [`FlowCounters`]
//! that the owning worker writes back, node-wide counters, the data plane's liveness, and
//! the media [`PortAllocator`] — all in one shared-memory file under
//! `/dev/shm/edgeway/<node>/`, laid out as the pinned BPF maps will hold them.
//!
//! How it is driven:
//!
//! - One process creates the table ([`FlowTable::create`]); every other one opens it
//!   ([`FlowTable::open`]). Opening a table written with another layout (schema version, type
//!   sizes, file format) fails with [`Error::LayoutMismatch`] naming what differs.
//! - Writers — the control plane, `edgewayctl`, the data plane's idle cleanup — call
//!   [`FlowTable::insert`] and [`FlowTable::remove`]. They are rare and are serialised across
//!   processes by `flock(2)` on the directory's lock file; every write is first recorded in
//!   the header (a one-slot redo log), so a writer killed mid-write is finished by the next
//!   one instead of leaving a torn slot. A handle given a [`MapHook`]
//!   ([`FlowTable::set_map_hook`]) also applies each change to a second copy of the map in
//!   the same call, after the slot is published: `edgeway_xdp::open_table` hooks in the XDP
//!   program's pinned `flows` map this way (the flow table's BPF backend).
//! - Readers — workers, `edgewayctl` — call [`FlowTable::lookup`], [`FlowTable::iter`] and
//!   [`FlowTable::changes_since`]. They take no lock and make no syscall: every record sits
//!   behind a sequence lock and is copied through atomic word loads (see `seqlock.rs`), with
//!   bounded retries so a dead writer cannot hang them.
//! - A worker learns of updates from the change log: [`FlowTable::changes_since`] costs one
//!   atomic load when nothing changed; after an [`ChangesResult::Overrun`] it rescans with
//!   [`FlowTable::iter`]. Each insert bumps the entry's `generation`, which the worker
//!   compares with the generation of the state it holds.
//! - The worker that owns an entry is the only writer of its state and counters
//!   ([`FlowTable::write_state`], [`FlowTable::write_counters`]) and of its row of
//!   [`NodeCounters`]; anyone may read them.
//!
//! Removal is safe while packets are in flight: readers hold copies, never references into
//! the table, and a removed slot (a tombstone) is not reused for `tombstone_quarantine_ms`
//! (default 2 s). A worker that has not yet seen the removal in the change log may still
//! write state and counters through its [`SlotRef`]; the quarantine, far longer than a
//! worker's change-log poll interval, makes sure those late writes land on the dead slot,
//! never on a new flow's. Generations continue across a slot's tenants, so a stale state's
//! generation never matches a new entry's.

#![warn(missing_docs)]

mod layout;
mod node_files;
mod ports;
mod seqlock;
mod sys;
mod table;
mod text;

use std::io;
use std::path::PathBuf;

pub use edgeway_map_schema::{
    DropReason, FlowCounters, FlowEntry, FlowKey, FlowState, NodeCounters, DROP_REASONS,
    SCHEMA_VERSION,
};
pub use node_files::{
    event_json, event_kind_name, EventLog, XdpAttachment, XdpStatus, EVENTS_FILE, EVENTS_MAX_BYTES,
    XDP_STATUS_FILE,
};
pub use ports::{PortAllocator, PortState, PortUsage};
pub use table::{
    Change, ChangeOp, ChangesResult, DataplaneInfo, FlowTable, Iter, Liveness, SlotRef, TableInfo,
};
pub use text::{
    counters_json, entry_json, format_endpoint, format_key, node_counters_json, parse_endpoint,
    parse_key, srtp_params_from_crypto, state_json, suite_name, xdp_counters_json,
};

/// A second copy of the flow map that writers keep in step with the table, in the same
/// call: [`FlowTable::insert`] and [`FlowTable::remove`] call it after the slot is published,
/// with the writer lock still held (so changes reach it in the table's order). The table
/// stays the record: a writer that dies between the two writes leaves the copy behind until
/// whoever reconciles the copy from the change log (the data plane's 50 ms mirror) catches
/// up. Implemented by `edgeway_xdp::PinnedFlowMap` for the XDP program's `flows` map.
pub trait MapHook: Send + Sync + std::fmt::Debug {
    /// `entry` (as published: its generation set) is now `key`'s entry.
    fn inserted(&self, key: &FlowKey, entry: &FlowEntry) -> std::result::Result<(), String>;
    /// `key` has no entry any more.
    fn removed(&self, key: &FlowKey) -> std::result::Result<(), String>;
    /// What the hook writes, for errors and `edgewayctl` ("the XDP map /sys/fs/bpf/...").
    fn describe(&self) -> String;
}

/// Where node directories live: a table for node `N` is in `SHM_ROOT/N/`.
pub const SHM_ROOT: &str = "/dev/shm/edgeway";
/// Name of the table file inside a node directory.
pub const TABLE_FILE: &str = "flows";
/// Name of the writers' lock file inside a node directory.
pub const LOCK_FILE: &str = "lock";
/// Rows of [`NodeCounters`]: the most workers a data plane may run.
pub const MAX_WORKERS: usize = 64;
/// A heartbeat older than this (ms) means the data plane is stalled or gone.
pub const HEARTBEAT_STALE_MS: u64 = 2000;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a flow-table operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system call on the table failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("opening", "mapping", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// There is no table in the directory.
    #[error(
        "no flow table in {}: start the data plane, or create one with `edgewayctl flow init`",
        dir.display()
    )]
    NotFound {
        /// The directory looked in.
        dir: PathBuf,
    },
    /// `create` found a table already there.
    #[error("a flow table already exists at {}: open it, or remove the directory to start over", path.display())]
    AlreadyExists {
        /// The existing table file.
        path: PathBuf,
    },
    /// The file is not a flow table.
    #[error("{} is not an edgeway flow table (magic {found:#018x})", path.display())]
    NotATable {
        /// The file.
        path: PathBuf,
        /// The first 8 bytes.
        found: u64,
    },
    /// The table was written by a build with another layout.
    #[error(
        "{} was created with another layout: {what} is {table} there and {ours} in this build; \
         use tools built from the same release, or recreate the table",
        path.display()
    )]
    LayoutMismatch {
        /// The table file.
        path: PathBuf,
        /// What differs ("schema version", "FlowEntry size", ...).
        what: &'static str,
        /// The table's value.
        table: u64,
        /// This build's value.
        ours: u64,
    },
    /// The header is inconsistent (truncated or overwritten file).
    #[error("{} is damaged: {what}; recreate the table", path.display())]
    Corrupt {
        /// The table file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A [`TableOptions`] value is out of range.
    #[error("invalid table option: {0}")]
    InvalidOptions(String),
    /// A node name that is not a plain directory name.
    #[error(
        "invalid node name {0:?}: use letters, digits, '-', '_' and '.' (not starting with '.')"
    )]
    BadNodeName(String),
    /// No room for another entry.
    #[error(
        "flow table full: {live} live entries, at most {max} in {capacity} slots \
         ({tombstones} removed entries still in quarantine); remove flows or create a larger table"
    )]
    TableFull {
        /// Slots in the table.
        capacity: u32,
        /// Live entries the table accepts (linear probing slows sharply beyond 7/8 full).
        max: u32,
        /// Live entries now.
        live: u32,
        /// Removed entries whose slots are not reusable yet.
        tombstones: u32,
    },
    /// A record stayed mid-write through every retry: a writer is stalled or died.
    #[error(
        "slot {slot} is being written (or its writer died); retry, and any table write repairs it"
    )]
    SlotBusy {
        /// The slot.
        slot: u32,
    },
    /// A worker index beyond [`MAX_WORKERS`].
    #[error("worker {worker} out of range: the table has rows for {max} workers")]
    WorkerOutOfRange {
        /// The index given.
        worker: usize,
        /// [`MAX_WORKERS`].
        max: usize,
    },
    /// Another process published itself as the data plane of this table.
    #[error(
        "the table's data plane is now process {current}, not {ours}: another data plane took over"
    )]
    DataplaneReplaced {
        /// The pid this handle published.
        ours: u32,
        /// The pid in the header.
        current: u32,
    },
    /// `heartbeat` before `publish_dataplane`.
    #[error("this handle has not published a data plane (call publish_dataplane first)")]
    NotPublished,
    /// No free port pair.
    #[error(
        "no free port pair in {min}-{max}: {in_use} ports in use, {quarantined} in quarantine, \
         {excluded} excluded; release pairs, wait for the quarantine, or widen the range"
    )]
    PortsExhausted {
        /// Range start.
        min: u16,
        /// Range end (inclusive).
        max: u16,
        /// Ports allocated.
        in_use: u32,
        /// Ports released but not reusable yet.
        quarantined: u32,
        /// Ports never allocated (demultiplexing ports).
        excluded: u32,
    },
    /// A port pair outside the media range.
    #[error("port pair {port}/{} is outside the media range {min}-{max}", u32::from(*port) + 1)]
    PortOutOfRange {
        /// The RTP port given.
        port: u16,
        /// Range start.
        min: u16,
        /// Range end (inclusive).
        max: u16,
    },
    /// Pairs start at an even (RTP) port.
    #[error("port {port} is odd: a pair starts at its even RTP port")]
    OddPort {
        /// The port given.
        port: u16,
    },
    /// A pair that cannot be reserved now.
    #[error("port {port} is {state}")]
    PortUnavailable {
        /// The busy port (the pair's RTP or RTCP port).
        port: u16,
        /// Why ("in use", "excluded", "in quarantine for 12000 ms more").
        state: String,
    },
    /// Releasing a pair that is not allocated.
    #[error("port pair {port}/{} is not allocated", u32::from(*port) + 1)]
    PortNotAllocated {
        /// The RTP port given.
        port: u16,
    },
    /// A flow key in text form that does not parse.
    #[error("bad flow key {input:?}: {reason} (expected PORT, or PORT@IP:PORT on a demultiplexing port)")]
    BadKey {
        /// The text.
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An endpoint in text form that does not parse.
    #[error("bad endpoint {input:?}: {reason} (expected IPv4:PORT)")]
    BadEndpoint {
        /// The text.
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An `a=crypto` line that does not parse.
    #[error("bad a=crypto line: {0}")]
    Sdes(#[from] edgeway_srtp::sdes::SdesError),
    /// The table took the change but the [`MapHook`] (the XDP program's pinned `flows` map)
    /// refused it: the two differ until the data plane's mirror reconciles them (≤ 50 ms
    /// while a data plane runs).
    #[error(
        "{op} of {key} is in the flow table, but writing it to {target} failed: {reason}; \
         the data plane's mirror repairs the map within 50 ms while a data plane runs"
    )]
    MapWrite {
        /// "insert" or "remove".
        op: &'static str,
        /// The flow key, as text.
        key: String,
        /// What the hook writes (the pinned map's path).
        target: String,
        /// What it said.
        reason: String,
    },
    /// An `a=crypto` line that parses but cannot be held by one flow entry.
    #[error("a=crypto line not usable for a flow entry: {0}")]
    UnsupportedCrypto(&'static str),
}

impl Error {
    fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// How a new table is built; persisted in its header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableOptions {
    /// Slots (a power of two, 8 to 2^20); at most 7/8 of them hold live entries.
    pub capacity: u32,
    /// Records in the change log (a power of two, 16 to 2^20).
    pub change_log_len: u32,
    /// How long a removed entry's slot stays unused (ms); must exceed the workers'
    /// change-log poll interval by a wide margin.
    pub tombstone_quarantine_ms: u64,
    /// Media port range for the [`PortAllocator`], inclusive.
    pub port_range: (u16, u16),
    /// Ports the allocator never hands out (the demultiplexing pairs).
    pub excluded_ports: Vec<u16>,
    /// How long a released port pair stays unused (ms).
    pub port_quarantine_ms: u64,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            capacity: 65536,
            change_log_len: 4096,
            tombstone_quarantine_ms: 2000,
            port_range: (
                edgeway_map_schema::MEDIA_PORT_MIN,
                edgeway_map_schema::MEDIA_PORT_MAX,
            ),
            excluded_ports: vec![
                edgeway_map_schema::MEDIA_PORT_MIN,
                edgeway_map_schema::MEDIA_PORT_MIN + 1,
            ],
            port_quarantine_ms: 60_000,
        }
    }
}

/// Wall-clock Unix milliseconds (vDSO, no syscall): the clock the table's timestamps use.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
