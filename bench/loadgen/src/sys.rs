//! The crate's only unsafe code: batched UDP syscalls (`sendmmsg`/`recvmmsg`), `epoll`,
//! CPU pinning, forced socket buffer sizes, the monotonic clock and network namespaces. Everything above this
//! module works with safe slices and indices.

use std::fs::File;
use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::Duration;

/// Datagrams per `sendmmsg`/`recvmmsg` call.
pub const BATCH: usize = 64;
/// Bytes per batch slot: a G.711 SRTP packet needs 182; RTP from a relay with extensions
/// or a longer tag still fits.
pub const SLOT: usize = 2048;

/// `CLOCK_MONOTONIC` in nanoseconds: the clock stamped into every payload.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} out of range"),
        ));
    }
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `cpu` was checked against CPU_SETSIZE above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` with the calling thread in the network namespace of `path` (a `/run/netns/NAME`
/// file, or any `/proc/PID/ns/net`), then puts the thread back where it was. A socket made
/// by `f` stays in `path`'s namespace for its whole life, so one process can hold sockets
/// on both sides of a topology (the load generator's callers outside, its phones inside).
pub fn in_netns<T>(path: &Path, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let home = File::open("/proc/thread-self/ns/net")?;
    let target = File::open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("network namespace {}: {e}", path.display()),
        )
    })?;
    setns_net(&target)
        .map_err(|e| io::Error::new(e.kind(), format!("entering {}: {e}", path.display())))?;
    let made = f();
    if let Err(e) = setns_net(&home) {
        // Every later socket of this thread would land in the wrong namespace, silently.
        panic!("cannot return to the generator's own network namespace: {e}");
    }
    made
}

fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open namespace file for the duration of the call; CLONE_NEWNET
    // asks the kernel to check that it is a network namespace. Only this thread moves.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPU time (user + system) of the calling thread in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the thread CPU clock always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Context switches of the calling thread so far: (voluntary, involuntary). Involuntary
/// switches are preemptions: a thread with low CPU and many of them was runnable but
/// denied the CPU (contention), not waiting for work.
pub fn thread_context_switches() -> (u64, u64) {
    // SAFETY: rusage is plain data; all-zero is valid.
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_THREAD names the calling thread.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return (0, 0);
    }
    (ru.ru_nvcsw as u64, ru.ru_nivcsw as u64)
}

/// Sets SO_RCVBUF and SO_SNDBUF to `bytes`, past `net.core.*mem_max` when privileged
/// (SO_*BUFFORCE), otherwise as far as the limits allow.
pub fn set_socket_buffers(sock: &UdpSocket, bytes: usize) -> io::Result<()> {
    let val = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let set = |opt| {
            // SAFETY: the fd is open for the lifetime of `sock`; `val` is a c_int whose
            // size is passed.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&val as *const libc::c_int).cast(),
                    mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(force) != 0 && set(plain) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A destination address in the kernel's format, converted once per stream.
#[derive(Clone, Copy)]
pub struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAddr").field("len", &self.len).finish()
    }
}

impl RawAddr {
    /// Converts a socket address.
    pub fn new(addr: SocketAddr) -> Self {
        let sa = socket2::SockAddr::from(addr);
        // SAFETY: sockaddr_storage is plain data; all-zero is valid.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let len = sa.len();
        // SAFETY: `sa.as_ptr()` points to `len` valid bytes, `len` never exceeds
        // sizeof(sockaddr_storage), and the regions do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                sa.as_ptr().cast::<u8>(),
                (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
                len as usize,
            )
        };
        RawAddr { storage, len }
    }
}

/// A batch of datagrams in preallocated buffers with their `mmsghdr`s, for one
/// `sendmmsg` or `recvmmsg` call. The headers point into the boxed buffers, which never
/// move or grow after construction.
pub struct MmsgBatch {
    bufs: Box<[u8]>,
    iov: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Datagrams filled (send) or received (recv).
    len: usize,
}

impl std::fmt::Debug for MmsgBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmsgBatch").field("len", &self.len).finish()
    }
}

// SAFETY: the raw pointers inside `iov` and `hdrs` only point into this
// struct's own boxed slices, so moving the batch to another thread moves them together.
unsafe impl Send for MmsgBatch {}

impl Default for MmsgBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl MmsgBatch {
    /// `BATCH` slots of `SLOT` bytes.
    pub fn new() -> Self {
        let mut bufs = vec![0u8; BATCH * SLOT].into_boxed_slice();
        // SAFETY: iovec, sockaddr_storage and mmsghdr are plain data; all-zero is valid
        // (null pointers, zero lengths) and every pointer is set below before use.
        let mut iov: Box<[libc::iovec]> = (0..BATCH).map(|_| unsafe { mem::zeroed() }).collect();
        // SAFETY: as above.
        let mut addrs: Box<[libc::sockaddr_storage]> =
            (0..BATCH).map(|_| unsafe { mem::zeroed() }).collect();
        // SAFETY: as above.
        let mut hdrs: Box<[libc::mmsghdr]> = (0..BATCH).map(|_| unsafe { mem::zeroed() }).collect();
        for i in 0..BATCH {
            iov[i].iov_base = bufs[i * SLOT..].as_mut_ptr().cast();
            iov[i].iov_len = SLOT;
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
            hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
        }
        MmsgBatch {
            bufs,
            iov,
            addrs,
            hdrs,
            len: 0,
        }
    }

    /// Datagrams in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no datagram is queued or received.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when no more datagram fits.
    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }

    /// The next free slot's buffer, to be committed with [`MmsgBatch::push`].
    pub fn next_slot(&mut self) -> &mut [u8] {
        let i = self.len;
        &mut self.bufs[i * SLOT..(i + 1) * SLOT]
    }

    /// Commits the next slot as a datagram of `len` bytes to `to`.
    pub fn push(&mut self, len: usize, to: &RawAddr) {
        let i = self.len;
        debug_assert!(i < BATCH && len <= SLOT);
        self.iov[i].iov_len = len;
        self.addrs[i] = to.storage;
        self.hdrs[i].msg_hdr.msg_namelen = to.len;
        self.len += 1;
    }

    /// Datagram `i` of the batch (after a receive: its bytes as received).
    pub fn datagram_mut(&mut self, i: usize) -> (&mut [u8], usize) {
        let len = (self.hdrs[i].msg_len as usize).min(SLOT);
        (&mut self.bufs[i * SLOT..(i + 1) * SLOT], len)
    }

    /// True when datagram `i` was longer than a slot.
    pub fn truncated(&self, i: usize) -> bool {
        self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    /// Sends every queued datagram on `fd`, retrying partial sends; empties the batch.
    /// Returns the number the kernel accepted (the rest failed with an error such as
    /// ECONNREFUSED from an earlier ICMP, which a load generator counts and moves past).
    pub fn send(&mut self, fd: RawFd) -> usize {
        let mut off = 0;
        let mut errors = 0;
        while off < self.len {
            // SAFETY: hdrs[off..len] are initialised headers whose iovecs point into
            // `self.bufs` with lengths set by `push`, and whose names point into
            // `self.addrs`; all stay alive and unaliased for the duration of the call.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[off..].as_mut_ptr(),
                    (self.len - off) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                off += rc as usize;
            } else {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram that failed and carry on with the rest.
                off += 1;
                errors += 1;
            }
        }
        let sent = self.len - errors;
        self.len = 0;
        sent
    }

    /// Receives up to `BATCH` datagrams from `fd` without blocking. Returns how many.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iov[i].iov_len = SLOT;
            self.hdrs[i].msg_hdr.msg_name = std::ptr::null_mut();
            self.hdrs[i].msg_hdr.msg_namelen = 0;
            self.hdrs[i].msg_hdr.msg_flags = 0;
        }
        // SAFETY: every header's iovec points into `self.bufs` with SLOT bytes of room,
        // names are null; the buffers outlive the call; a null timeout is allowed.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        // Restore names for a later send from this batch.
        for i in 0..BATCH {
            self.hdrs[i].msg_hdr.msg_name =
                (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
        }
        if rc < 0 {
            self.len = 0;
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(err),
            };
        }
        self.len = rc as usize;
        Ok(self.len)
    }

    /// Forgets queued datagrams.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// A level-triggered epoll set of sockets, each with a `u64` token.
#[derive(Debug)]
pub struct Epoll {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
    ready: usize,
}

impl Epoll {
    /// A new epoll instance reporting up to `max_events` per wait.
    pub fn new(max_events: usize) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; max_events.max(1)],
            ready: 0,
        })
    }

    /// Watches `fd` for input, reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both fds are open; `ev` is a valid epoll_event.
        let rc = unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` (nanosecond resolution, `epoll_pwait2`) for input and returns
    /// how many sockets are ready; read them with [`Epoll::token`].
    pub fn wait(&mut self, timeout: Duration) -> io::Result<usize> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        // SAFETY: `events` has room for the count passed; `ts` is valid; no signal mask.
        let rc = unsafe {
            libc::epoll_pwait2(
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                &ts,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            self.ready = 0;
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(err);
        }
        self.ready = rc as usize;
        Ok(self.ready)
    }

    /// The token of ready socket `i` from the last wait.
    pub fn token(&self, i: usize) -> u64 {
        let ev = self.events[i];
        ev.u64
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: `fd` is this instance's epoll fd, closed exactly once.
        unsafe { libc::close(self.fd) };
    }
}

/// Raises the soft open-file limit to the hard limit (thousands of sockets).
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 && lim.rlim_cur < lim.rlim_max
    {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one needs
        // no privilege.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

/// `sysconf(_SC_CLK_TCK)`: the unit of /proc/<pid>/stat times.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}
