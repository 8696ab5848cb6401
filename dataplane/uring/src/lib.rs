//! The io_uring UDP engine of an edgeway data-plane worker: the only code on the media path
//! that makes syscalls or holds `unsafe`.
//!
//! **What it is for.** A worker thread, pinned to a core, owns one [`Uring`]: its UDP sockets,
//! one provided buffer ring shared by all of them, and a pool of send headers. Each socket has
//! a multishot `RecvMsg` armed on the buffer ring, so datagrams land in buffers without a
//! syscall each; the sans-IO media logic transforms them in place (SRTP re-keying may grow
//! them, into the room left after the datagram) and sends them on from the same buffer.
//!
//! **How it is driven.** The worker loop calls [`Uring::run_once`] with a handler. Each call
//! is one `io_uring_enter` that submits everything queued since the last one (sends, re-armed
//! receives, cancels) and waits for a completion or the timeout; then the completion queue is
//! drained without further syscalls. Each datagram is lent to the handler as a [`Datagram`],
//! which answers with a [`Disposition`]: `Recycle` (drop it) or `Send` (from any socket of
//! this ring, to any address, `len` bytes of the same buffer). Those sends go out in a batch
//! with the next `run_once` (or [`Uring::flush`]). Locally made packets (keepalives) go
//! through [`Uring::send_copy`], which copies into a preallocated slot. Nothing on this path
//! allocates: headers, buffers and slots are allocated by [`Uring::new`], and the socket table
//! only grows in [`Uring::bind_udp`].
//!
//! **Who owns a buffer when.** A provided buffer is in one of three hands:
//! - *the kernel*, while it sits in the buffer ring: any receive may fill it at any time, so
//!   we hold no reference to it;
//! - *the handler*, from the receive completion that names it until the handler returns: it
//!   gets the only `&mut [u8]` to the buffer, and the higher-ranked lifetime of
//!   [`Datagram`] keeps it from holding on to it;
//! - *the kernel again*, while a send from it is queued or in flight: we neither read nor
//!   write it until the send's completion, which puts it back in the ring.
//!
//! A per-buffer `lent` flag makes the hand-over checkable: a buffer is only returned to the
//! ring if it is out of it, so a confused completion can never make the kernel write into a
//! buffer we are using. Copy slots follow the same rule (free, or read by an in-flight send).
//!
//! **Why the pointers given to the kernel stay valid.** Every send's `msghdr`, `iovec` and
//! `sockaddr_in` live in a boxed slice created once by `new` (one header per buffer id, one
//! per copy slot) and never resized, so their addresses are stable; the iovecs point into the
//! buffer block, which is page-aligned heap memory that never moves. The kernel copies a
//! `msghdr` when the SQE is submitted (`IORING_FEAT_SUBMIT_STABLE`, required), and reads the
//! data buffer until the send completes. A socket is closed only when no queued or in-flight
//! operation names its fd (a per-socket count), so an fd number is never reused under an
//! operation. Dropping a [`Uring`] cancels every receive, waits for every operation to
//! complete, unregisters the buffer ring and only then frees the memory; if the kernel does
//! not finish within two seconds the memory is leaked rather than freed under it.
//!
//! **Threads.** `Uring` is neither `Send` nor `Sync`: with `IORING_SETUP_SINGLE_ISSUER` the
//! ring belongs to the thread that created it, and with `DEFER_TASKRUN` only that thread's
//! `io_uring_enter` runs completions. Create it on the worker thread after
//! [`pin_current_thread`].

mod bufring;
mod config;
mod ring;
mod stats;
mod user_data;

use std::io;

pub use config::UringConfig;
pub use ring::{Datagram, Disposition, SendError, SocketId, Uring};
pub use stats::{SendErrorCounts, UringFeatures, UringStats};

/// Pins the calling thread to CPU `core` (`sched_setaffinity`).
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    if core >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {core} is beyond CPU_SETSIZE"),
        ));
    }
    // SAFETY: cpu_set_t is a plain bitmask; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core < CPU_SETSIZE`, so the bit is inside `set`.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPUs online on this machine (not just those this thread may run on); at least 1.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}
