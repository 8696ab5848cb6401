//! The provided buffer ring: `count` buffers of `size` bytes and the ring of descriptors
//! through which they are lent to the kernel.
//!
//! A buffer is in exactly one of two places: in the ring (the kernel may pick it for any
//! receive at any time and write into it) or lent to us (taken out by a receive completion,
//! until [`BufRing::give_back`]). `lent` mirrors this per buffer id, so a buffer can never be
//! given back twice, which would let the kernel write into memory we still read or send from.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// One descriptor, laid out as the kernel's `struct io_uring_buf`. The `resv` field of the
/// first descriptor is the ring's tail. Written through raw pointers only, so that no Rust
/// reference ever covers the tail the kernel reads concurrently.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);

/// Descriptors and buffers are page aligned: the kernel requires it of the ring, and it keeps
/// buffers from sharing cache lines with the ring.
const ALIGN: usize = 4096;

/// An owned, zeroed, page-aligned heap block, accessed only through raw pointers (the
/// kernel reads or writes parts of it while we hold it).
#[derive(Debug)]
pub(crate) struct Block {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Block {
    pub(crate) fn new(len: usize) -> io::Result<Self> {
        let layout = Layout::from_size_align(len.max(1), ALIGN)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large"))?;
        // SAFETY: the layout has a non-zero size (`len.max(1)`).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(Self { ptr, layout })
    }

    /// Start of the block.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this very layout and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// The buffers and their ring; see the module docs for who owns a buffer when.
#[derive(Debug)]
pub(crate) struct BufRing {
    entries: Block,
    data: Block,
    size: usize,
    mask: u16,
    /// Our tail: entries below it are written; published to the kernel by `publish`.
    tail: u16,
    /// Per buffer id: `true` while the buffer is out of the ring (lent to us).
    lent: Box<[bool]>,
    lent_count: u32,
}

impl BufRing {
    /// Allocates `count` (a power of two) buffers of `size` bytes, all placed in the ring.
    pub(crate) fn new(count: u16, size: usize) -> io::Result<Self> {
        let entries = Block::new(usize::from(count) * std::mem::size_of::<RawBuf>())?;
        let data = Block::new(usize::from(count) * size)?;
        let mut ring = Self {
            entries,
            data,
            size,
            mask: count - 1,
            tail: 0,
            lent: vec![true; usize::from(count)].into_boxed_slice(),
            lent_count: u32::from(count),
        };
        for bid in 0..count {
            ring.give_back(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Address of the descriptor ring, for `register_buf_ring_with_flags`.
    pub(crate) fn ring_addr(&self) -> u64 {
        self.entries.ptr.as_ptr() as u64
    }

    /// Number of descriptors (= buffers).
    pub(crate) fn count(&self) -> u16 {
        self.mask.wrapping_add(1)
    }

    /// Buffers currently out of the ring.
    pub(crate) fn lent_count(&self) -> u32 {
        self.lent_count
    }

    /// Start of buffer `bid`. Stable for the life of the ring.
    pub(crate) fn buffer_ptr(&self, bid: u16) -> *mut u8 {
        debug_assert!(bid <= self.mask);
        // SAFETY: `bid < count`, so the offset stays inside the `count * size` block.
        unsafe { self.data.ptr.as_ptr().add(usize::from(bid) * self.size) }
    }

    /// Records that the kernel handed us buffer `bid` (a receive completion named it).
    /// Returns `false` if the id is out of range or the buffer was already out of the ring,
    /// which would mean a kernel/user disagreement; the caller must then not touch it.
    pub(crate) fn take(&mut self, bid: u16) -> bool {
        match self.lent.get_mut(usize::from(bid)) {
            Some(lent @ false) => {
                *lent = true;
                self.lent_count += 1;
                true
            }
            _ => false,
        }
    }

    /// Puts buffer `bid` back in the ring (visible to the kernel after the next `publish`).
    /// The caller gives up every access to the buffer. A buffer already in the ring is ignored.
    pub(crate) fn give_back(&mut self, bid: u16) {
        let Some(lent) = self.lent.get_mut(usize::from(bid)) else {
            return;
        };
        if !*lent {
            return;
        }
        *lent = false;
        self.lent_count -= 1;
        let addr = self.buffer_ptr(bid) as u64;
        let index = usize::from(self.tail & self.mask);
        // SAFETY: `index < count`, inside the (aligned, zeroed) descriptor block. The kernel
        // only reads descriptors between its head and the published tail; this one is at or
        // beyond the published tail (at most `count` buffers are ever in the ring, and this one
        // was not), so nobody else reads it now. `resv` (the tail, on entry 0) is not written.
        unsafe {
            let entry = self.entries.ptr.as_ptr().cast::<RawBuf>().add(index);
            std::ptr::addr_of_mut!((*entry).addr).write(addr);
            std::ptr::addr_of_mut!((*entry).len).write(self.size as u32);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every buffer given back so far visible to the kernel.
    pub(crate) fn publish(&self) {
        let base = self.entries.ptr.as_ptr().cast::<RawBuf>();
        // SAFETY: the tail is the naturally aligned `resv` u16 of descriptor 0, inside our live
        // block, accessed only atomically (here, and by the kernel's acquire load) for as long
        // as the ring is registered. The release store orders the descriptor writes before it.
        let tail = unsafe { AtomicU16::from_ptr(std::ptr::addr_of_mut!((*base).resv)) };
        tail.store(self.tail, Ordering::Release);
    }
}
