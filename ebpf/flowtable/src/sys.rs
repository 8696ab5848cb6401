//! Every `unsafe` of the crate: the shared mapping, `flock(2)`, `getrandom(2)`, `kill(pid, 0)`
//! and the byte-level copies between schema types and 64-bit words.
//!
//! The soundness argument for the mapping is one rule: **every byte of the mapping is read
//! and written only through atomic types** (`AtomicU64`/`AtomicU32`, through the views
//! handed out here). Other processes write the same memory concurrently; atomics make those
//! concurrent accesses defined behaviour instead of data races, and the seqlocks built on
//! them (see `seqlock.rs`) give readers consistent copies. Nothing hands out `&mut` or plain
//! references into the mapping.

use std::fs::File;
use std::io;
use std::mem::{align_of, size_of, MaybeUninit};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use edgeway_map_schema::{FlowCounters, FlowEntry, FlowKey, FlowState};

use crate::NodeCounters;

/// A `MAP_SHARED` read-write mapping of a whole file, unmapped on drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through atomic views (module
// docs), which are `Sync`, so sharing or sending the handle between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len).finish()
    }
}

impl Mapping {
    /// Maps `len` bytes of `file` (opened read-write) shared.
    pub(crate) fn map(file: &File, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: a fresh mapping chosen by the kernel (addr null) of a file descriptor we own
        // for the duration of the call; the result is checked for MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// Bytes mapped.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `count` words starting `offset` bytes into the mapping.
    ///
    /// # Panics
    /// When the range is misaligned or outside the mapping: offsets come from the validated
    /// layout, so that is a bug in this crate, not bad input.
    pub(crate) fn words(&self, offset: usize, count: usize) -> &[AtomicU64] {
        assert!(
            offset.is_multiple_of(8)
                && offset
                    .checked_add(count * 8)
                    .is_some_and(|end| end <= self.len),
            "flow table region {offset}+{count} words outside the {}-byte mapping",
            self.len
        );
        // SAFETY: the range is inside the mapping (checked above), 8-byte aligned (the mapping
        // is page-aligned and the offset a multiple of 8), valid for the lifetime of `self`
        // (unmapped only on drop), and AtomicU64 has the size and alignment of u64 with every
        // bit pattern valid. Shared access through atomics is the module's rule.
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(offset).cast::<AtomicU64>(), count)
        }
    }

    /// The header view at offset 0.
    pub(crate) fn view<T: AtomicView>(&self) -> &T {
        assert!(size_of::<T>() <= self.len && align_of::<T>() <= 4096);
        // SAFETY: T is made only of atomics (AtomicView contract: any bit pattern valid,
        // interior mutability only), fits in the mapping (checked) and the mapping start is
        // page-aligned; the reference lives no longer than the mapping.
        unsafe { &*self.ptr.as_ptr().cast::<T>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; no reference into the mapping
        // outlives `self` (every view borrows it).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Types made only of atomics, with any bit pattern (all zero included) valid, that may be
/// viewed in place in the mapping.
///
/// # Safety
/// Implementors must be `#[repr(C)]` structs of `AtomicU64`/`AtomicU32` (or arrays of them,
/// or such structs) with no other fields.
pub(crate) unsafe trait AtomicView: Sync {}

/// Takes or drops the exclusive `flock(2)` on `file`, retrying on EINTR.
pub(crate) fn flock(file: &File, exclusive: bool) -> io::Result<()> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_UN
    };
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// 8 random bytes from the kernel (the table's hash seed).
pub(crate) fn random_u64() -> io::Result<u64> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the kernel writes at most `buf.len() - got` bytes into the tail of `buf`,
        // which we own.
        let r = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += r as usize;
    }
    Ok(u64::from_ne_bytes(buf))
}

/// Whether a process with this id exists (in our pid namespace): `kill(pid, 0)`.
pub(crate) fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Schema values stored in the table as whole 64-bit words.
///
/// # Safety
/// Implementors are `#[repr(C)]`, made only of integers and byte arrays with every padding
/// byte an explicit field (so every byte of a value is initialised and every bit pattern is a
/// valid value), and their size is a multiple of 8.
pub(crate) unsafe trait Plain: Copy + Default {
    /// Words the value occupies.
    const WORDS: usize = size_of::<Self>() / 8;
}

// SAFETY: the schema crate's contract (explicit padding, integers and byte arrays only, sizes
// asserted there); sizes are multiples of 8 (asserted below).
unsafe impl Plain for FlowKey {}
// SAFETY: as for FlowKey.
unsafe impl Plain for FlowEntry {}
// SAFETY: as for FlowKey.
unsafe impl Plain for FlowState {}
// SAFETY: as for FlowKey.
unsafe impl Plain for FlowCounters {}
// SAFETY: NodeCounters is repr(C) and made only of u64s.
unsafe impl Plain for NodeCounters {}

const _: () = assert!(size_of::<FlowKey>().is_multiple_of(8));
const _: () = assert!(size_of::<FlowEntry>().is_multiple_of(8));
const _: () = assert!(size_of::<FlowState>().is_multiple_of(8));
const _: () = assert!(size_of::<FlowCounters>().is_multiple_of(8));
const _: () = assert!(size_of::<NodeCounters>().is_multiple_of(8));

/// The value whose bytes are `words` (host byte order, as a BPF map holds it).
pub(crate) fn from_words<T: Plain>(words: &[u64]) -> T {
    assert_eq!(words.len(), T::WORDS);
    let mut v = MaybeUninit::<T>::uninit();
    // SAFETY: `words` holds exactly size_of::<T>() bytes (checked); the destination is a
    // local of that size; any bit pattern is a valid T (Plain contract), so after the copy
    // the value is initialised.
    unsafe {
        std::ptr::copy_nonoverlapping(
            words.as_ptr().cast::<u8>(),
            v.as_mut_ptr().cast::<u8>(),
            size_of::<T>(),
        );
        v.assume_init()
    }
}

/// Writes the bytes of `v` into `out` (host byte order).
pub(crate) fn to_words<T: Plain>(v: &T, out: &mut [u64]) {
    assert_eq!(out.len(), T::WORDS);
    // SAFETY: every byte of a Plain value is initialised (no implicit padding), `out` has
    // room for exactly size_of::<T>() bytes (checked) and does not overlap a local value.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (v as *const T).cast::<u8>(),
            out.as_mut_ptr().cast::<u8>(),
            size_of::<T>(),
        );
    }
}
