//! [`FlowTable`]: creating and opening the file, the slot array (open addressing with linear
//! probing over a seeded hash of the key), the change log, per-slot state and counters,
//! node counters and the data plane's liveness.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::mem::size_of;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use edgeway_map_schema::{FlowCounters, FlowEntry, FlowKey, FlowState, SCHEMA_VERSION};

use crate::layout::{
    Header, Layout, CHANGE_WORDS, COUNTER_WORDS, FILE_VERSION, HEADER_BYTES, MAGIC, NODE_WORDS,
    SLOT_BODY_WORDS, SLOT_WORDS, STATE_WORDS,
};
use crate::sys::{self, Mapping, Plain};
use crate::MapHook;
use crate::{
    seqlock, unix_ms, Error, NodeCounters, Result, TableOptions, HEARTBEAT_STALE_MS, LOCK_FILE,
    MAX_WORKERS, SHM_ROOT, TABLE_FILE,
};

const EMPTY: u64 = 0;
const LIVE: u64 = 1;
const TOMBSTONE: u64 = 2;
const MS_MASK: u64 = (1 << 56) - 1;
const ENTRY_WORDS: usize = <FlowEntry as Plain>::WORDS;
const MIN_CAPACITY: u32 = 8;
const MAX_CAPACITY: u32 = 1 << 20;

fn meta(status: u64, removed_ms: u64) -> u64 {
    status << 56 | (removed_ms & MS_MASK)
}

fn key_word(key: &FlowKey) -> u64 {
    let mut w = [0u64; 1];
    sys::to_words(key, &mut w);
    w[0]
}

/// MurmurHash3's 64-bit finaliser: a bijection with full avalanche.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The slot a key probes first. Seeded per table (random at creation, stored in the header)
/// so that remote addresses and ports chosen by an attacker cannot be aimed at one probe run.
fn hash(seed: u64, key: u64) -> u64 {
    fmix64(fmix64(key ^ seed) ^ seed.rotate_left(29))
}

/// A slot of the table: what [`FlowTable::lookup`] and [`FlowTable::insert`] return and what
/// state and counters are addressed by. Cheap to copy; valid for the table it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotRef(u32);

impl SlotRef {
    /// The slot's index (also the index of its state and counters, and of the BPF maps'
    /// per-slot arrays).
    pub const fn index(self) -> u32 {
        self.0
    }
}

impl From<u32> for SlotRef {
    fn from(index: u32) -> Self {
        SlotRef(index)
    }
}

/// What a change-log record says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeOp {
    /// An entry was inserted or replaced.
    Insert,
    /// An entry was removed.
    Remove,
}

/// One record of the change log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Change {
    /// Position in the log (0 is the first change ever).
    pub seq: u64,
    /// Insert (or replace) or remove.
    pub op: ChangeOp,
    /// The slot written.
    pub slot: SlotRef,
    /// The entry's key.
    pub key: FlowKey,
    /// The entry's generation after the change (a removed entry keeps its last).
    pub generation: u32,
}

/// What [`FlowTable::changes_since`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangesResult {
    /// Every change up to this cursor was delivered: pass it next time.
    UpTo(u64),
    /// The reader fell further behind than the log holds (or the cursor is not from this
    /// table): take [`FlowTable::change_cursor`], then rescan with [`FlowTable::iter`].
    Overrun,
}

/// The data plane's published liveness (header fields).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataplaneInfo {
    /// Process id of the data plane; 0 when none has published (or it withdrew).
    pub pid: u32,
    /// Worker threads it runs.
    pub workers: u32,
    /// When it published (Unix ms).
    pub started_ms: u64,
    /// Its last heartbeat (Unix ms).
    pub heartbeat_ms: u64,
    /// Its role/layout label (e.g. "edge small"), possibly empty.
    pub role: String,
}

/// Whether a data plane is serving the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Liveness {
    /// None published, or it withdrew on a clean shutdown.
    None,
    /// Heartbeating.
    Running,
    /// The process exists but has not heartbeat for this long (ms).
    Stalled {
        /// Milliseconds since the last heartbeat.
        silent_ms: u64,
    },
    /// The published process is gone (crashed or killed).
    Exited,
}

impl DataplaneInfo {
    /// Judges liveness at `now_ms`: the heartbeat must be younger than
    /// [`HEARTBEAT_STALE_MS`] and the process must exist (checked with `kill(pid, 0)`).
    pub fn liveness(&self, now_ms: u64) -> Liveness {
        if self.pid == 0 {
            return Liveness::None;
        }
        if !sys::process_exists(self.pid) {
            return Liveness::Exited;
        }
        let silent_ms = now_ms.saturating_sub(self.heartbeat_ms);
        if silent_ms > HEARTBEAT_STALE_MS {
            Liveness::Stalled { silent_ms }
        } else {
            Liveness::Running
        }
    }
}

/// The table's geometry, options and occupancy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableInfo {
    /// The node directory.
    pub dir: PathBuf,
    /// Slots.
    pub capacity: u32,
    /// Live entries accepted at most.
    pub max_live: u32,
    /// Live entries now.
    pub live: u32,
    /// Removed entries whose slots are not reused yet (or never, until a new key needs one).
    pub tombstones: u32,
    /// Records in the change log.
    pub change_log_len: u32,
    /// Changes ever made (the current change cursor).
    pub changes: u64,
    /// When the table was created (Unix ms).
    pub created_ms: u64,
    /// Tombstone quarantine (ms).
    pub tombstone_quarantine_ms: u64,
    /// Media port range (inclusive).
    pub port_range: (u16, u16),
    /// Port pair quarantine (ms).
    pub port_quarantine_ms: u64,
    /// Rows of node counters.
    pub max_workers: u32,
    /// Size of the file in bytes.
    pub file_size: u64,
}

/// A flow table in shared memory: see the crate documentation for who calls what.
///
/// `Send + Sync`: one handle may serve many threads. Reads never block; writes from threads
/// of one handle are serialised by a mutex, from different handles or processes by `flock`.
pub struct FlowTable {
    map: Mapping,
    lock_file: File,
    writer: Mutex<()>,
    dir: PathBuf,
    layout: Layout,
    mask: u32,
    seed: u64,
    max_live: u32,
    tombstone_quarantine_ms: u64,
    /// The media range, from the header as checked at open.
    port_range: (u16, u16),
    published_pid: AtomicU32,
    /// The second copy writers keep in step (the XDP program's pinned `flows` map).
    map_hook: Option<Box<dyn MapHook>>,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("dir", &self.dir)
            .field("capacity", &self.layout.capacity)
            .field("map_hook", &self.map_hook)
            .finish_non_exhaustive()
    }
}

/// Held while writing: the in-process mutex and the cross-process flock.
struct WriteGuard<'a> {
    table: &'a FlowTable,
    _inproc: MutexGuard<'a, ()>,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would release it too; unlocking explicitly lets the handle
        // live on. An error here cannot leave the lock held (the kernel drops it with the fd).
        let _ = sys::flock(&self.table.lock_file, false);
    }
}

enum Probe {
    Found,
    End,
    Next,
}

enum InsertAt {
    Replace(u32),
    New(u32),
}

impl FlowTable {
    /// The directory of node `node`'s table: `/dev/shm/edgeway/<node>/`.
    pub fn dir_for(node: &str) -> Result<PathBuf> {
        let ok = !node.is_empty()
            && !node.starts_with('.')
            && node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(Error::BadNodeName(node.to_owned()));
        }
        Ok(Path::new(SHM_ROOT).join(node))
    }

    /// Creates node `node`'s table in `/dev/shm/edgeway/<node>/`.
    pub fn create(node: &str, opts: &TableOptions) -> Result<FlowTable> {
        Self::create_at(&Self::dir_for(node)?, opts)
    }

    /// Opens node `node`'s table.
    pub fn open(node: &str) -> Result<FlowTable> {
        Self::open_at(&Self::dir_for(node)?)
    }

    /// Creates a table in `dir` (created 0700 if missing; the files are 0600). Fails with
    /// [`Error::AlreadyExists`] when there is one: a table is never silently replaced under
    /// processes that have it mapped.
    pub fn create_at(dir: &Path, opts: &TableOptions) -> Result<FlowTable> {
        validate(opts)?;
        if !dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io("creating directory", dir, e))?;
        }
        let lock_file = open_lock(dir)?;
        sys::flock(&lock_file, true).map_err(|e| Error::io("locking", dir.join(LOCK_FILE), e))?;
        let made = Self::create_locked(dir, opts, &lock_file);
        let _ = sys::flock(&lock_file, false);
        let (file, map) = made?;
        drop(file);
        Self::from_map(dir, map, lock_file)
    }

    fn create_locked(dir: &Path, opts: &TableOptions, _lock: &File) -> Result<(File, Mapping)> {
        let path = dir.join(TABLE_FILE);
        if path.exists() {
            return Err(Error::AlreadyExists { path });
        }
        // Built under a temporary name and renamed into place, so that `open` never sees a
        // half-initialised table.
        let tmp = dir.join(format!(".{TABLE_FILE}.{}.tmp", std::process::id()));
        let build = || -> Result<(File, Mapping)> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| Error::io("creating", &tmp, e))?;
            let layout = Layout::new(opts.capacity, opts.change_log_len, MAX_WORKERS as u32);
            file.set_len(layout.file_size as u64)
                .map_err(|e| Error::io("sizing", &tmp, e))?;
            let map =
                Mapping::map(&file, layout.file_size).map_err(|e| Error::io("mapping", &tmp, e))?;
            let seed = sys::random_u64().map_err(|e| Error::io("seeding the hash for", &tmp, e))?;
            init(&map, &layout, opts, seed);
            std::fs::rename(&tmp, &path).map_err(|e| Error::io("publishing", &path, e))?;
            Ok((file, map))
        };
        build().inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// Opens the table in `dir`, refusing one written with another layout, and finishes a
    /// write its writer did not (see [`FlowTable::insert`]).
    pub fn open_at(dir: &Path) -> Result<FlowTable> {
        let path = dir.join(TABLE_FILE);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    dir: dir.to_owned(),
                })
            }
            Err(e) => return Err(Error::io("opening", &path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading the size of", &path, e))?
            .len();
        if len < HEADER_BYTES as u64 {
            return Err(Error::Corrupt {
                path,
                what: format!("{len} bytes, shorter than the header"),
            });
        }
        let len = usize::try_from(len).map_err(|_| Error::Corrupt {
            path: path.clone(),
            what: "larger than the address space".into(),
        })?;
        let map = Mapping::map(&file, len).map_err(|e| Error::io("mapping", &path, e))?;
        let lock_file = open_lock(dir)?;
        let table = Self::from_map(dir, map, lock_file)?;
        if table.header().pending_slot.load(Ordering::Acquire) != 0 {
            // A writer died mid-write: finish its write now rather than at the next insert.
            drop(table.lock_writer()?);
        }
        Ok(table)
    }

    fn from_map(dir: &Path, map: Mapping, lock_file: File) -> Result<FlowTable> {
        let path = dir.join(TABLE_FILE);
        let h: &Header = map.view();
        let magic = h.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(Error::NotATable { path, found: magic });
        }
        let checks: [(&'static str, u64, u64); 7] = [
            (
                "file format version",
                h.file_version.load(Ordering::Relaxed).into(),
                FILE_VERSION.into(),
            ),
            (
                "schema version",
                h.schema_version.load(Ordering::Relaxed).into(),
                SCHEMA_VERSION.into(),
            ),
            (
                "FlowKey size",
                h.key_size.load(Ordering::Relaxed).into(),
                size_of::<FlowKey>() as u64,
            ),
            (
                "FlowEntry size",
                h.entry_size.load(Ordering::Relaxed).into(),
                size_of::<FlowEntry>() as u64,
            ),
            (
                "FlowState size",
                h.state_size.load(Ordering::Relaxed).into(),
                size_of::<FlowState>() as u64,
            ),
            (
                "FlowCounters size",
                h.counters_size.load(Ordering::Relaxed).into(),
                size_of::<FlowCounters>() as u64,
            ),
            (
                "NodeCounters size",
                h.node_counters_size.load(Ordering::Relaxed).into(),
                size_of::<NodeCounters>() as u64,
            ),
        ];
        for (what, table, ours) in checks {
            if table != ours {
                return Err(Error::LayoutMismatch {
                    path,
                    what,
                    table,
                    ours,
                });
            }
        }
        let capacity = h.capacity.load(Ordering::Relaxed);
        let change_log_len = h.change_log_len.load(Ordering::Relaxed);
        let max_workers = h.max_workers.load(Ordering::Relaxed);
        let corrupt = |what: String| Error::Corrupt {
            path: path.clone(),
            what,
        };
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(corrupt(format!("capacity {capacity}")));
        }
        if !change_log_len.is_power_of_two() || change_log_len > 1 << 20 {
            return Err(corrupt(format!("change log length {change_log_len}")));
        }
        if max_workers as usize != MAX_WORKERS {
            return Err(Error::LayoutMismatch {
                path,
                what: "worker rows",
                table: max_workers.into(),
                ours: MAX_WORKERS as u64,
            });
        }
        let layout = Layout::new(capacity, change_log_len, max_workers);
        let file_size = h.file_size.load(Ordering::Relaxed);
        if file_size != layout.file_size as u64 || map.len() < layout.file_size {
            return Err(corrupt(format!(
                "file is {} bytes, header says {file_size}, geometry needs {}",
                map.len(),
                layout.file_size
            )));
        }
        // The media range is fixed at creation; read and checked once, so that neither a damaged
        // file nor a later stray write can turn it into a range the allocator would wrap on.
        let (port_min, port_max) = (
            h.port_min.load(Ordering::Relaxed),
            h.port_max.load(Ordering::Relaxed),
        );
        let port_range = match (u16::try_from(port_min), u16::try_from(port_max)) {
            (Ok(lo), Ok(hi)) if port_range_is_valid(lo, hi) => (lo, hi),
            _ => return Err(corrupt(format!("port range {port_min}-{port_max}"))),
        };
        Ok(FlowTable {
            seed: h.hash_seed.load(Ordering::Relaxed),
            port_range,
            tombstone_quarantine_ms: h.tombstone_quarantine_ms.load(Ordering::Relaxed),
            map,
            lock_file,
            writer: Mutex::new(()),
            dir: dir.to_owned(),
            layout,
            mask: capacity - 1,
            max_live: capacity - capacity / 8,
            published_pid: AtomicU32::new(0),
            map_hook: None,
        })
    }

    /// The node directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Slots in the table.
    pub fn capacity(&self) -> u32 {
        self.layout.capacity as u32
    }

    /// Geometry, options and occupancy.
    pub fn info(&self) -> TableInfo {
        let h = self.header();
        TableInfo {
            dir: self.dir.clone(),
            capacity: self.capacity(),
            max_live: self.max_live,
            live: h.live.load(Ordering::Relaxed),
            tombstones: h.tombstones.load(Ordering::Relaxed),
            change_log_len: self.layout.change_log_len as u32,
            changes: self.change_cursor(),
            created_ms: h.created_ms.load(Ordering::Relaxed),
            tombstone_quarantine_ms: self.tombstone_quarantine_ms,
            port_range: self.port_range(),
            port_quarantine_ms: h.port_quarantine_ms.load(Ordering::Relaxed),
            max_workers: self.layout.max_workers as u32,
            file_size: self.layout.file_size as u64,
        }
    }

    /// The slot `key` probes first (diagnostics; collisions continue at the next slots).
    pub fn home_slot(&self, key: &FlowKey) -> u32 {
        self.home(key_word(key))
    }

    fn home(&self, key: u64) -> u32 {
        hash(self.seed, key) as u32 & self.mask
    }

    // ---- regions ----

    pub(crate) fn header(&self) -> &Header {
        self.map.view()
    }

    fn slot(&self, i: u32) -> &[AtomicU64] {
        self.map
            .words(self.layout.slots + i as usize * SLOT_WORDS * 8, SLOT_WORDS)
    }

    fn state_rec(&self, i: u32) -> &[AtomicU64] {
        self.map.words(
            self.layout.states + i as usize * STATE_WORDS * 8,
            STATE_WORDS,
        )
    }

    fn counters_rec(&self, i: u32) -> &[AtomicU64] {
        self.map.words(
            self.layout.counters + i as usize * COUNTER_WORDS * 8,
            COUNTER_WORDS,
        )
    }

    fn node_rec(&self, w: usize) -> &[AtomicU64] {
        self.map
            .words(self.layout.node + w * NODE_WORDS * 8, NODE_WORDS)
    }

    fn change_rec(&self, n: u64) -> &[AtomicU64] {
        let i = (n as usize) & (self.layout.change_log_len - 1);
        self.map
            .words(self.layout.changes + i * CHANGE_WORDS * 8, CHANGE_WORDS)
    }

    pub(crate) fn port_words(&self) -> &[AtomicU64] {
        self.map.words(self.layout.ports, crate::layout::PORT_WORDS)
    }

    pub(crate) fn port_range(&self) -> (u16, u16) {
        self.port_range
    }

    fn check_slot(&self, slot: SlotRef) -> u32 {
        assert!(
            (slot.0 as usize) < self.layout.capacity,
            "slot {} out of range for a table of {} slots",
            slot.0,
            self.layout.capacity
        );
        slot.0
    }

    // ---- readers ----

    /// The entry for `key`, copied, with its slot; `None` when there is none (or its slot
    /// stayed mid-write through every retry: see [`FlowTable::try_lookup`]). Lock-free, no
    /// syscall.
    pub fn lookup(&self, key: &FlowKey) -> Option<(SlotRef, FlowEntry)> {
        self.try_lookup(key).ok().flatten()
    }

    /// Like [`FlowTable::lookup`], but says when a slot on the probe path stayed mid-write
    /// ([`Error::SlotBusy`]) instead of answering `None`.
    pub fn try_lookup(&self, key: &FlowKey) -> Result<Option<(SlotRef, FlowEntry)>> {
        let want = key_word(key);
        let mut i = self.home(want);
        for _ in 0..self.layout.capacity {
            let s = self.slot(i);
            let mut entry = [0u64; ENTRY_WORDS];
            let probe = seqlock::read(&s[0], || {
                let status = s[1].load(Ordering::Relaxed) >> 56;
                if status == LIVE && s[2].load(Ordering::Relaxed) == want {
                    for (o, w) in entry.iter_mut().zip(&s[3..]) {
                        *o = w.load(Ordering::Relaxed);
                    }
                    Probe::Found
                } else if status == EMPTY {
                    Probe::End
                } else {
                    Probe::Next
                }
            });
            match probe {
                None => return Err(Error::SlotBusy { slot: i }),
                Some(Probe::Found) => return Ok(Some((SlotRef(i), sys::from_words(&entry)))),
                Some(Probe::End) => return Ok(None),
                Some(Probe::Next) => i = (i + 1) & self.mask,
            }
        }
        Ok(None)
    }

    /// Every live entry, in slot order, as consistent copies. A slot that stays mid-write
    /// through every retry is skipped. Entries inserted or removed during the walk may or may
    /// not appear: take [`FlowTable::change_cursor`] before iterating and apply
    /// [`FlowTable::changes_since`] after, to miss nothing.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            table: self,
            next: 0,
        }
    }

    fn read_live(&self, i: u32) -> Option<(FlowKey, FlowEntry)> {
        let s = self.slot(i);
        let mut words = [0u64; SLOT_BODY_WORDS];
        if !seqlock::read_words(&s[0], &s[1..], &mut words) || words[0] >> 56 != LIVE {
            return None;
        }
        Some((sys::from_words(&words[1..2]), sys::from_words(&words[2..])))
    }

    // ---- writers ----

    fn lock_writer(&self) -> Result<WriteGuard<'_>> {
        let inproc = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        sys::flock(&self.lock_file, true)
            .map_err(|e| Error::io("locking", self.dir.join(LOCK_FILE), e))?;
        let guard = WriteGuard {
            table: self,
            _inproc: inproc,
        };
        self.repair(&guard);
        Ok(guard)
    }

    /// Inserts `entry` under `key`, or replaces the entry already there, and returns its
    /// slot. The table sets `entry.generation` to the slot's previous generation + 1 (1 in a
    /// never-used slot), and `created_ms` to now when it is 0 (kept from the old entry on a
    /// replace). A new key gets zeroed state and counters; a replace keeps them (the worker
    /// sees the generation change and decides). Fails with [`Error::TableFull`].
    ///
    /// Crash-safe: the slot's new contents go to the header's redo record first; a writer
    /// killed mid-write leaves the slot's sequence odd (readers see it busy) until the next
    /// writer or `open` finishes the write from the record.
    pub fn insert(&self, key: FlowKey, mut entry: FlowEntry) -> Result<SlotRef> {
        let g = self.lock_writer()?;
        let now = unix_ms();
        let want = key_word(&key);
        let h = self.header();
        let (i, replace) = match self.find_for_insert(want, now) {
            Some(InsertAt::Replace(i)) => (i, true),
            Some(InsertAt::New(i)) if h.live.load(Ordering::Relaxed) < self.max_live => (i, false),
            _ => return Err(self.full()),
        };
        let s = self.slot(i);
        let old_status = s[1].load(Ordering::Relaxed) >> 56;
        let mut old = [0u64; ENTRY_WORDS];
        for (o, w) in old.iter_mut().zip(&s[3..]) {
            *o = w.load(Ordering::Relaxed);
        }
        let old: FlowEntry = sys::from_words(&old);
        entry.generation = if old_status == EMPTY {
            1
        } else {
            old.generation.wrapping_add(1).max(1)
        };
        if entry.created_ms == 0 {
            entry.created_ms = if replace { old.created_ms } else { now };
        }
        if !replace {
            // Nobody owns this slot now (empty, or a tombstone past its quarantine), and the
            // entry is not visible yet: its first owner starts from zero.
            self.zero_state_and_counters(i);
        }
        let mut body = [0u64; SLOT_BODY_WORDS];
        body[0] = meta(LIVE, 0);
        body[1] = want;
        sys::to_words(&entry, &mut body[2..]);
        self.write_slot(&g, i, &body);
        if !replace {
            h.live.fetch_add(1, Ordering::Relaxed);
            if old_status == TOMBSTONE {
                h.tombstones.fetch_sub(1, Ordering::Relaxed);
            }
        }
        // Still under the writer lock, so the map sees the writers' changes in the table's
        // order; the slot is published first, so the table stays the record if we die here.
        if let Some(hook) = &self.map_hook {
            hook.inserted(&key, &entry)
                .map_err(|reason| self.map_write_failed("insert", &key, reason))?;
        }
        drop(g);
        Ok(SlotRef(i))
    }

    /// Removes `key`'s entry and returns it (`None` when there was none). Its slot becomes
    /// a tombstone, not reused for `tombstone_quarantine_ms` (crate docs say why).
    pub fn remove(&self, key: &FlowKey) -> Result<Option<FlowEntry>> {
        let g = self.lock_writer()?;
        let now = unix_ms();
        let want = key_word(key);
        let Some(i) = self.find_live(want) else {
            return Ok(None);
        };
        let s = self.slot(i);
        let mut body = [0u64; SLOT_BODY_WORDS];
        for (o, w) in body.iter_mut().zip(&s[1..]) {
            *o = w.load(Ordering::Relaxed);
        }
        body[0] = meta(TOMBSTONE, now);
        let entry = sys::from_words(&body[2..]);
        self.write_slot(&g, i, &body);
        let h = self.header();
        h.live.fetch_sub(1, Ordering::Relaxed);
        h.tombstones.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = &self.map_hook {
            hook.removed(key)
                .map_err(|reason| self.map_write_failed("remove", key, reason))?;
        }
        drop(g);
        Ok(Some(entry))
    }

    /// Makes every later [`FlowTable::insert`] and [`FlowTable::remove`] on this handle also
    /// apply the change to `hook`, in the same call, after the slot is published and before
    /// the writer lock is released. `edgeway-xdp` uses it to write the XDP program's pinned
    /// `flows` map synchronously (`edgeway_xdp::open_table`).
    pub fn set_map_hook(&mut self, hook: Box<dyn MapHook>) {
        self.map_hook = Some(hook);
    }

    /// The hook set by [`FlowTable::set_map_hook`], if any.
    pub fn map_hook(&self) -> Option<&dyn MapHook> {
        self.map_hook.as_deref()
    }

    fn map_write_failed(&self, op: &'static str, key: &FlowKey, reason: String) -> Error {
        Error::MapWrite {
            op,
            key: crate::format_key(key),
            target: self
                .map_hook
                .as_ref()
                .map_or_else(String::new, |h| h.describe()),
            reason,
        }
    }

    fn full(&self) -> Error {
        let h = self.header();
        Error::TableFull {
            capacity: self.capacity(),
            max: self.max_live,
            live: h.live.load(Ordering::Relaxed),
            tombstones: h.tombstones.load(Ordering::Relaxed),
        }
    }

    /// Writer-side probe (under the lock, so plain atomic loads are stable).
    fn find_live(&self, want: u64) -> Option<u32> {
        let mut i = self.home(want);
        for _ in 0..self.layout.capacity {
            let s = self.slot(i);
            let status = s[1].load(Ordering::Relaxed) >> 56;
            if status == EMPTY {
                return None;
            }
            if status == LIVE && s[2].load(Ordering::Relaxed) == want {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    fn find_for_insert(&self, want: u64, now: u64) -> Option<InsertAt> {
        let mut i = self.home(want);
        let mut reusable = None;
        for _ in 0..self.layout.capacity {
            let s = self.slot(i);
            let m = s[1].load(Ordering::Relaxed);
            match m >> 56 {
                EMPTY => return Some(InsertAt::New(reusable.unwrap_or(i))),
                LIVE if s[2].load(Ordering::Relaxed) == want => return Some(InsertAt::Replace(i)),
                TOMBSTONE
                    if reusable.is_none()
                        && now >= (m & MS_MASK).saturating_add(self.tombstone_quarantine_ms) =>
                {
                    reusable = Some(i)
                }
                _ => {}
            }
            i = (i + 1) & self.mask;
        }
        reusable.map(InsertAt::New)
    }

    fn zero_state_and_counters(&self, i: u32) {
        let st = self.state_rec(i);
        seqlock::write_words(
            &st[0],
            &st[1..],
            &[0; STATE_WORDS - 1],
            seqlock::TAKEOVER_ATTEMPTS,
        );
        let c = self.counters_rec(i);
        seqlock::write_words(
            &c[0],
            &c[1..],
            &[0; COUNTER_WORDS - 1],
            seqlock::TAKEOVER_ATTEMPTS,
        );
    }

    /// Records `body` as the pending write, applies it, clears the record.
    fn write_slot(&self, _g: &WriteGuard<'_>, i: u32, body: &[u64; SLOT_BODY_WORDS]) {
        let h = self.header();
        for (r, v) in h.redo.iter().zip(body) {
            r.store(*v, Ordering::Relaxed);
        }
        h.pending_slot.store(u64::from(i) + 1, Ordering::Release);
        self.apply_slot(i, body);
        h.pending_slot.store(0, Ordering::Release);
    }

    /// Writes the slot (we hold the writer lock, so an odd sequence is a dead writer's and
    /// is taken over at once) and appends the change. Idempotent, so a redo may repeat it.
    fn apply_slot(&self, i: u32, body: &[u64; SLOT_BODY_WORDS]) {
        let s = self.slot(i);
        seqlock::write_words(&s[0], &s[1..], body, 0);
        let entry: FlowEntry = sys::from_words(&body[2..]);
        let op = if body[0] >> 56 == LIVE {
            ChangeOp::Insert
        } else {
            ChangeOp::Remove
        };
        self.append_change(op, i, body[1], entry.generation);
    }

    /// Finishes a write whose writer died (called with the lock held).
    fn repair(&self, g: &WriteGuard<'_>) {
        let h = self.header();
        let pending = h.pending_slot.load(Ordering::Acquire);
        if pending == 0 {
            return;
        }
        let i = pending - 1;
        if i < self.layout.capacity as u64 {
            let mut body = [0u64; SLOT_BODY_WORDS];
            for (b, r) in body.iter_mut().zip(&h.redo) {
                *b = r.load(Ordering::Relaxed);
            }
            self.apply_slot(i as u32, &body);
        }
        self.recount(g);
        h.pending_slot.store(0, Ordering::Release);
    }

    /// Recomputes the live and tombstone counts (after a repair: the dead writer may or may
    /// not have updated them).
    fn recount(&self, _g: &WriteGuard<'_>) {
        let (mut live, mut tomb) = (0, 0);
        for i in 0..self.capacity() {
            match self.slot(i)[1].load(Ordering::Relaxed) >> 56 {
                LIVE => live += 1,
                TOMBSTONE => tomb += 1,
                _ => {}
            }
        }
        let h = self.header();
        h.live.store(live, Ordering::Relaxed);
        h.tombstones.store(tomb, Ordering::Relaxed);
    }

    /// Runs `f` with the writer lock held (the port allocator's entry point).
    pub(crate) fn with_writer<R>(&self, f: impl FnOnce() -> R) -> Result<R> {
        let _g = self.lock_writer()?;
        Ok(f())
    }

    // ---- change log ----

    fn append_change(&self, op: ChangeOp, slot: u32, key: u64, generation: u32) {
        let h = self.header();
        let n = h.changes.0.load(Ordering::Relaxed);
        let rec = self.change_rec(n);
        // The record's first word is its own sequence: invalid while being rewritten, then
        // the change number, which is what a reader checks before and after copying.
        rec[0].store(u64::MAX, Ordering::Relaxed);
        fence(Ordering::Release);
        rec[1].store(key, Ordering::Relaxed);
        rec[2].store(
            u64::from(slot) | u64::from(generation) << 32,
            Ordering::Relaxed,
        );
        rec[3].store(
            match op {
                ChangeOp::Insert => 1,
                ChangeOp::Remove => 2,
            },
            Ordering::Relaxed,
        );
        rec[0].store(n, Ordering::Release);
        h.changes.0.store(n + 1, Ordering::Release);
    }

    /// The current end of the change log: take it before a rescan, then pass it to
    /// [`FlowTable::changes_since`].
    pub fn change_cursor(&self) -> u64 {
        self.header().changes.0.load(Ordering::Acquire)
    }

    /// Delivers every change after `cursor` to `out`, oldest first, and returns the new
    /// cursor; one atomic load when nothing changed. [`ChangesResult::Overrun`] when the log
    /// no longer holds them all (some may have been delivered already; rescan anyway).
    pub fn changes_since(&self, cursor: u64, out: &mut impl FnMut(Change)) -> ChangesResult {
        let head = self.change_cursor();
        if head == cursor {
            return ChangesResult::UpTo(cursor);
        }
        if cursor > head || head - cursor > self.layout.change_log_len as u64 {
            return ChangesResult::Overrun;
        }
        for n in cursor..head {
            let rec = self.change_rec(n);
            let s0 = rec[0].load(Ordering::Acquire);
            if s0 != n {
                return ChangesResult::Overrun;
            }
            let (key, sg, op) = (
                rec[1].load(Ordering::Relaxed),
                rec[2].load(Ordering::Relaxed),
                rec[3].load(Ordering::Relaxed),
            );
            fence(Ordering::Acquire);
            if rec[0].load(Ordering::Relaxed) != n {
                return ChangesResult::Overrun;
            }
            out(Change {
                seq: n,
                op: if op == 2 {
                    ChangeOp::Remove
                } else {
                    ChangeOp::Insert
                },
                slot: SlotRef(sg as u32),
                key: sys::from_words(&[key]),
                generation: (sg >> 32) as u32,
            });
        }
        ChangesResult::UpTo(head)
    }

    // ---- per-slot state and counters (single writer: the owning worker) ----

    /// The slot's state, a consistent copy; all zero (generation 0, matching no entry) when
    /// the record stays mid-write through every retry.
    ///
    /// # Panics
    /// When the slot is outside the table.
    pub fn state(&self, slot: impl Into<SlotRef>) -> FlowState {
        self.try_state(slot).unwrap_or_default()
    }

    /// The slot's state, or [`Error::SlotBusy`].
    ///
    /// # Panics
    /// When the slot is outside the table.
    pub fn try_state(&self, slot: impl Into<SlotRef>) -> Result<FlowState> {
        let i = self.check_slot(slot.into());
        read_record(self.state_rec(i)).ok_or(Error::SlotBusy { slot: i })
    }

    /// Publishes the slot's state (the owning worker only).
    ///
    /// # Panics
    /// When the slot is outside the table.
    pub fn write_state(&self, slot: impl Into<SlotRef>, state: &FlowState) {
        let i = self.check_slot(slot.into());
        write_record(self.state_rec(i), state);
    }

    /// The slot's counters, a consistent copy (zero when mid-write through every retry).
    ///
    /// # Panics
    /// When the slot is outside the table.
    pub fn counters(&self, slot: impl Into<SlotRef>) -> FlowCounters {
        let i = self.check_slot(slot.into());
        read_record(self.counters_rec(i)).unwrap_or_default()
    }

    /// Publishes the slot's counters (the owning worker only).
    ///
    /// # Panics
    /// When the slot is outside the table.
    pub fn write_counters(&self, slot: impl Into<SlotRef>, counters: &FlowCounters) {
        let i = self.check_slot(slot.into());
        write_record(self.counters_rec(i), counters);
    }

    // ---- node-wide ----

    /// Publishes worker `worker`'s node counters (that worker only).
    pub fn write_node_counters(&self, worker: usize, counters: &NodeCounters) -> Result<()> {
        if worker >= self.layout.max_workers {
            return Err(Error::WorkerOutOfRange {
                worker,
                max: self.layout.max_workers,
            });
        }
        write_record(self.node_rec(worker), counters);
        Ok(())
    }

    /// Worker `worker`'s node counters (zero for a worker that never wrote, or beyond
    /// [`MAX_WORKERS`]).
    pub fn node_counters(&self, worker: usize) -> NodeCounters {
        if worker >= self.layout.max_workers {
            return NodeCounters::default();
        }
        read_record(self.node_rec(worker)).unwrap_or_default()
    }

    /// Publishes the calling process as the table's data plane with `workers` workers (and
    /// a fresh heartbeat). This handle remembers `pid` for [`FlowTable::heartbeat`].
    pub fn publish_dataplane(&self, pid: u32, workers: u32) -> Result<()> {
        if workers as usize > self.layout.max_workers {
            return Err(Error::WorkerOutOfRange {
                worker: workers as usize,
                max: self.layout.max_workers,
            });
        }
        let h = self.header();
        let now = unix_ms();
        h.dataplane_workers.store(workers, Ordering::Relaxed);
        h.dataplane_started_ms.store(now, Ordering::Relaxed);
        h.dataplane_heartbeat_ms.store(now, Ordering::Relaxed);
        h.dataplane_pid.store(pid, Ordering::Release);
        self.published_pid.store(pid, Ordering::Relaxed);
        Ok(())
    }

    /// Sets the data plane's role/layout label (at most 32 bytes kept), e.g. "edge large".
    pub fn publish_role(&self, role: &str) {
        let mut bytes = [0u8; 32];
        let mut n = role.len().min(32);
        while !role.is_char_boundary(n) {
            n -= 1;
        }
        bytes[..n].copy_from_slice(&role.as_bytes()[..n]);
        for (w, chunk) in self.header().dataplane_role.iter().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
        }
    }

    /// Refreshes the heartbeat. Fails when this handle published no data plane, or when
    /// another process has published itself since (two data planes on one table).
    pub fn heartbeat(&self) -> Result<()> {
        let ours = self.published_pid.load(Ordering::Relaxed);
        if ours == 0 {
            return Err(Error::NotPublished);
        }
        let h = self.header();
        let current = h.dataplane_pid.load(Ordering::Acquire);
        if current != ours {
            return Err(Error::DataplaneReplaced { ours, current });
        }
        h.dataplane_heartbeat_ms.store(unix_ms(), Ordering::Release);
        Ok(())
    }

    /// Withdraws this handle's data plane on a clean shutdown (no-op if another took over).
    pub fn withdraw_dataplane(&self) {
        let ours = self.published_pid.swap(0, Ordering::Relaxed);
        if ours != 0 {
            let _ = self.header().dataplane_pid.compare_exchange(
                ours,
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// The data plane's published liveness.
    pub fn dataplane(&self) -> DataplaneInfo {
        let h = self.header();
        let pid = h.dataplane_pid.load(Ordering::Acquire);
        let mut role = Vec::with_capacity(32);
        for w in &h.dataplane_role {
            role.extend_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
        }
        let end = role.iter().position(|&b| b == 0).unwrap_or(role.len());
        DataplaneInfo {
            pid,
            workers: h.dataplane_workers.load(Ordering::Relaxed),
            started_ms: h.dataplane_started_ms.load(Ordering::Relaxed),
            heartbeat_ms: h.dataplane_heartbeat_ms.load(Ordering::Acquire),
            role: String::from_utf8_lossy(&role[..end]).into_owned(),
        }
    }

    /// Leaves slot `slot`'s sequence odd, as a writer killed mid-write would.
    #[cfg(test)]
    pub(crate) fn abandon_slot_write(&self, slot: u32, body_word: u64) {
        let h = self.header();
        let s = self.slot(slot);
        let mut body = [0u64; SLOT_BODY_WORDS];
        for (b, w) in body.iter_mut().zip(&s[1..]) {
            *b = w.load(Ordering::Relaxed);
        }
        body[0] = meta(LIVE, 0);
        body[1] = body_word;
        for (r, v) in h.redo.iter().zip(&body) {
            r.store(*v, Ordering::Relaxed);
        }
        h.pending_slot.store(u64::from(slot) + 1, Ordering::Release);
        seqlock::abandon(&s[0]);
        s[2].store(0xdead, Ordering::Relaxed); // half-written garbage
    }
}

fn read_record<T: Plain>(rec: &[AtomicU64]) -> Option<T> {
    let mut words = [0u64; 32];
    let words = &mut words[..T::WORDS];
    seqlock::read_words(&rec[0], &rec[1..], words).then(|| sys::from_words(words))
}

fn write_record<T: Plain>(rec: &[AtomicU64], v: &T) {
    let mut words = [0u64; 32];
    let words = &mut words[..T::WORDS];
    sys::to_words(v, words);
    seqlock::write_words(&rec[0], &rec[1..], words, seqlock::TAKEOVER_ATTEMPTS);
}

const _: () = assert!(<FlowState as Plain>::WORDS <= 32);
const _: () = assert!(<FlowCounters as Plain>::WORDS <= 32);
const _: () = assert!(<NodeCounters as Plain>::WORDS <= 32);

fn open_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io("opening", path, e))
}

/// A media range holds at least one even/odd pair and starts above port 0.
fn port_range_is_valid(lo: u16, hi: u16) -> bool {
    lo != 0 && lo < hi && u32::from(lo) + u32::from(lo & 1) < u32::from(hi)
}

fn validate(opts: &TableOptions) -> Result<()> {
    let bad = |s: String| Err(Error::InvalidOptions(s));
    if !opts.capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&opts.capacity) {
        return bad(format!(
            "capacity {} must be a power of two from {MIN_CAPACITY} to {MAX_CAPACITY}",
            opts.capacity
        ));
    }
    if !opts.change_log_len.is_power_of_two() || !(16..=1 << 20).contains(&opts.change_log_len) {
        return bad(format!(
            "change_log_len {} must be a power of two from 16 to 1048576",
            opts.change_log_len
        ));
    }
    let (lo, hi) = opts.port_range;
    if !port_range_is_valid(lo, hi) {
        return bad(format!(
            "port range {lo}-{hi} must be non-zero and hold at least one even/odd pair"
        ));
    }
    if opts.tombstone_quarantine_ms > MS_MASK || opts.port_quarantine_ms > 1 << 40 {
        return bad("quarantine too long".into());
    }
    Ok(())
}

/// Writes a fresh header and the port array into a zeroed mapping.
fn init(map: &Mapping, layout: &Layout, opts: &TableOptions, seed: u64) {
    let h: &Header = map.view();
    let r = Ordering::Relaxed;
    h.file_version.store(FILE_VERSION, r);
    h.schema_version.store(SCHEMA_VERSION, r);
    h.key_size.store(size_of::<FlowKey>() as u32, r);
    h.entry_size.store(size_of::<FlowEntry>() as u32, r);
    h.state_size.store(size_of::<FlowState>() as u32, r);
    h.counters_size.store(size_of::<FlowCounters>() as u32, r);
    h.node_counters_size
        .store(size_of::<NodeCounters>() as u32, r);
    h.capacity.store(layout.capacity as u32, r);
    h.change_log_len.store(layout.change_log_len as u32, r);
    h.max_workers.store(layout.max_workers as u32, r);
    h.file_size.store(layout.file_size as u64, r);
    h.hash_seed.store(seed, r);
    h.created_ms.store(unix_ms(), r);
    h.tombstone_quarantine_ms
        .store(opts.tombstone_quarantine_ms, r);
    h.port_quarantine_ms.store(opts.port_quarantine_ms, r);
    h.port_min.store(opts.port_range.0.into(), r);
    h.port_max.store(opts.port_range.1.into(), r);
    let ports = map.words(layout.ports, crate::layout::PORT_WORDS);
    for &p in &opts.excluded_ports {
        ports[usize::from(p)].store(crate::ports::EXCLUDED, r);
    }
    h.magic.store(MAGIC, Ordering::Release);
}

/// Iterator over live entries: see [`FlowTable::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    table: &'a FlowTable,
    next: u32,
}

impl Iterator for Iter<'_> {
    type Item = (SlotRef, FlowKey, FlowEntry);

    fn next(&mut self) -> Option<Self::Item> {
        while (self.next as usize) < self.table.layout.capacity {
            let i = self.next;
            self.next += 1;
            if let Some((k, e)) = self.table.read_live(i) {
                return Some((SlotRef(i), k, e));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = PathBuf::from(format!(
            "/dev/shm/edgeway-unit-{}-{name}-{}",
            std::process::id(),
            unix_ms()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn small() -> TableOptions {
        TableOptions {
            capacity: 16,
            ..TableOptions::default()
        }
    }

    /// Found by the table_open fuzz target: a header whose media range runs backwards made
    /// the port allocator count 2^31 pairs (a hang under the writer lock). Such a file is
    /// refused at open, and the range is never read from the file again afterwards.
    #[test]
    fn a_header_with_a_backwards_port_range_is_refused_at_open() {
        let d = dir("ports");
        let t = FlowTable::create_at(&d, &small()).expect("create");
        let good = t.port_range();
        for (lo, hi) in [
            (57343u32, 36099u32),
            (0, 40000),
            (40000, 40000),
            (70000, 80000),
        ] {
            t.header().port_min.store(lo, Ordering::Relaxed);
            t.header().port_max.store(hi, Ordering::Relaxed);
            assert!(
                matches!(FlowTable::open_at(&d), Err(Error::Corrupt { ref what, .. }) if what.contains("port range")),
                "{lo}-{hi}"
            );
            assert_eq!(
                t.port_range(),
                good,
                "an open table keeps the range it checked"
            );
            let _ = t.ports().usage(0);
        }
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn a_writer_killed_mid_write_neither_hangs_readers_nor_survives_the_next_writer() {
        let d = dir("stuck");
        let t = FlowTable::create_at(&d, &small()).expect("create");
        let key = FlowKey::port(40000);
        let slot = t.insert(key, FlowEntry::default()).expect("insert");
        // A writer dies half-way through replacing the entry (the key word is garbage).
        t.abandon_slot_write(slot.index(), key_word(&key));
        let start = std::time::Instant::now();
        assert!(matches!(
            t.try_lookup(&key),
            Err(Error::SlotBusy { slot: s }) if s == slot.index()
        ));
        assert_eq!(t.lookup(&key), None);
        assert_eq!(t.iter().count(), 0, "a busy slot is skipped");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "readers gave up quickly"
        );
        // Another process opening the table finishes the write from the redo record.
        let t2 = FlowTable::open_at(&d).expect("open repairs");
        let (s2, e) = t2.lookup(&key).expect("repaired entry readable");
        assert_eq!(s2, slot);
        assert_eq!(e.generation, 1);
        assert_eq!(t2.info().live, 1);
        // And through the first handle, the next write works normally.
        t.abandon_slot_write(slot.index(), key_word(&key));
        let s3 = t
            .insert(FlowKey::port(40002), FlowEntry::default())
            .expect("insert");
        assert_ne!(s3, slot);
        assert!(t.lookup(&key).is_some(), "repaired by the next writer");
        assert_eq!(t.info().live, 2);
        drop((t, t2));
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn hash_spreads_neighbouring_ports() {
        let seed = 0x1234_5678_9abc_def0;
        let mut hit = [0u32; 64];
        for p in 36000..36000 + 64 * 16 {
            hit[(hash(seed, key_word(&FlowKey::port(p))) & 63) as usize] += 1;
        }
        assert!(hit.iter().all(|&n| (4..=32).contains(&n)), "{hit:?}");
    }
}
