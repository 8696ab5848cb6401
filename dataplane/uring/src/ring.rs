//! [`Uring`]: one worker's ring, its sockets, its buffers and the loop step that drives them.

use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, EnterFlags, IoUring, SubmissionQueue, Submitter};
use socket2::{Domain, Protocol, Socket, Type};

use crate::bufring::{Block, BufRing};
use crate::config::{UringConfig, NAME_LEN, PAYLOAD_OFFSET};
use crate::stats::{UringFeatures, UringStats};
use crate::user_data::{Op, OpKind, MAX_SOCKETS};

/// The one buffer group of a ring: every socket receives into the same buffer ring.
const BGID: u16 = 0;

/// How long `Drop` waits for cancelled operations to complete before it leaks the buffers
/// instead of freeing memory the kernel might still write.
const DROP_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Forced submissions tried when the SQ is full before giving up on one SQE.
const SQ_FULL_RETRIES: u32 = 8;

/// A socket of one [`Uring`]: a slot index plus a generation, so an id kept after
/// [`Uring::close`] can never address the socket that later reuses the slot. Meaningful only
/// to the ring that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId {
    index: u32,
    generation: u32,
}

impl SocketId {
    /// The slot index: small, dense, reused after close; suitable for indexing side tables.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// A received datagram, lent to the handler for the duration of one call.
#[derive(Debug)]
pub struct Datagram<'a> {
    /// The socket it arrived on.
    pub socket: SocketId,
    /// Its source address.
    pub src: SocketAddrV4,
    /// The whole payload room of the buffer; the datagram is `buf[..len]`, and the rest may be
    /// used to grow it in place before sending.
    pub buf: &'a mut [u8],
    /// Length of the received datagram.
    pub len: usize,
}

/// What the handler wants done with the buffer it was lent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Drop the datagram; the buffer goes straight back to the buffer ring.
    Recycle,
    /// Send `buf[..len]` from socket `from` to `to`, from the same buffer (no copy); the buffer
    /// returns to the ring when the send completes.
    Send {
        /// Socket to send from (any open socket of this ring).
        from: SocketId,
        /// Destination.
        to: SocketAddrV4,
        /// Bytes of the buffer to send, at most `buf.len()`.
        len: usize,
    },
}

/// Why [`Uring::send_copy`] refused a datagram.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The socket id is not open on this ring (closed, or its slot reused since). Ids are
    /// per ring: one from another ring is not detected and may name an unrelated socket.
    #[error("socket {0:?} is not open on this ring")]
    UnknownSocket(SocketId),
    /// The datagram is larger than a copy slot.
    #[error("datagram of {len} bytes exceeds the {max}-byte copy slot")]
    TooLong {
        /// Bytes offered.
        len: usize,
        /// Bytes a slot holds.
        max: usize,
    },
    /// Every copy slot holds a send that has not completed yet.
    #[error("all copy slots are in use; submit and reap completions first")]
    NoFreeSlot,
    /// The SQE could not be queued.
    #[error("queueing the send failed: {0}")]
    Submit(#[source] io::Error),
}

/// The kernel-visible header of one send: msghdr, its single iovec and the destination.
/// Pointers inside point at the struct itself, so it must not move: these live in a boxed
/// slice allocated once and never resized.
#[repr(C)]
struct SendHdr {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_in,
}

/// Memory the kernel reads or writes on our behalf. Freed only once no operation can touch
/// it any more; leaked otherwise (see `Drop for Uring`).
struct KernelMem {
    /// Provided receive buffers.
    bufs: BufRing,
    /// Copy-pool data: `send_slots` slots of `payload_cap` bytes.
    copies: Block,
    /// Send headers: one per buffer id, then one per copy slot.
    hdrs: Box<[SendHdr]>,
    /// Template for the multishot receives: only `msg_namelen` (sockaddr_in) is set.
    recv_hdr: Box<libc::msghdr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Open,
    Closing,
}

#[derive(Debug)]
struct SocketSlot {
    socket: Option<Socket>,
    fd: RawFd,
    generation: u32,
    state: SlotState,
    local: SocketAddrV4,
    /// A multishot receive is queued or armed.
    recv_armed: bool,
    /// Operations queued or in flight that name this fd (receive, sends, cancel); the socket
    /// is closed only when this reaches 0.
    ops: u32,
}

/// Everything but the ring itself, so that a drain can borrow the ring's queues and this at
/// the same time.
struct State {
    mem: ManuallyDrop<KernelMem>,
    sockets: Vec<SocketSlot>,
    free_sockets: Vec<u32>,
    free_copies: Vec<u32>,
    payload_cap: usize,
    buf_count: u32,
    rcvbuf: usize,
    sndbuf: usize,
    /// Completions a wait holds out for, and for how long (µs); 1 and 0 when off.
    batch_want: usize,
    batch_usec: u32,
    /// Extra `io_uring_enter` flags for waits.
    wait_flags: EnterFlags,
    /// Operations submitted or queued whose final CQE has not been seen.
    inflight: u64,
    /// Sends queued since the last `io_uring_enter`. A UDP send usually completes inside the
    /// enter that submits it, so a wait counts their completions on top of what it wants:
    /// otherwise they alone would end it and cost a second enter per received batch.
    sends_queued: usize,
    stats: UringStats,
    features: UringFeatures,
}

/// The submission side of a split ring.
struct Sq<'r> {
    submitter: Submitter<'r>,
    sq: SubmissionQueue<'r>,
}

/// One data-plane worker's io_uring UDP engine. See the crate docs for how it is driven and
/// who owns each buffer when.
///
/// Not `Send`: with `SINGLE_ISSUER` the ring belongs to the thread that created it, so create
/// it on the worker thread, after pinning.
pub struct Uring {
    ring: IoUring,
    st: State,
}

impl fmt::Debug for Uring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uring")
            .field("features", &self.st.features)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Uring {
    /// Creates the ring (preferring `SINGLE_ISSUER | DEFER_TASKRUN`, see [`Uring::features`]),
    /// allocates every buffer and send header, and registers the provided buffer ring.
    pub fn new(cfg: &UringConfig) -> io::Result<Self> {
        cfg.validate()?;
        let (ring, features) = build_ring(cfg)?;
        let params = ring.params();
        if !params.is_feature_submit_stable() || !params.is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel lacks IORING_FEAT_SUBMIT_STABLE or IORING_FEAT_EXT_ARG (need Linux 6.1+)",
            ));
        }

        let payload_cap = cfg.payload_capacity();
        let bufs = BufRing::new(cfg.buf_count, cfg.buf_size as usize)?;
        let copies = Block::new(cfg.send_slots as usize * payload_cap)?;
        let buf_count = u32::from(cfg.buf_count);
        let mut hdrs: Box<[SendHdr]> = (0..buf_count + cfg.send_slots)
            .map(|_| SendHdr {
                // SAFETY: all-zero is a valid msghdr/iovec/sockaddr_in (null pointers, zeros).
                msg: unsafe { std::mem::zeroed() },
                // SAFETY: as above.
                iov: unsafe { std::mem::zeroed() },
                // SAFETY: as above.
                addr: unsafe { std::mem::zeroed() },
            })
            .collect();
        for (i, h) in hdrs.iter_mut().enumerate() {
            let data = if i < buf_count as usize {
                // SAFETY: `i < buf_count`, so the payload offset stays inside buffer `i`.
                unsafe { bufs.buffer_ptr(i as u16).add(PAYLOAD_OFFSET) }
            } else {
                // SAFETY: slot `i - buf_count < send_slots`, inside the copy block.
                unsafe { copies.as_ptr().add((i - buf_count as usize) * payload_cap) }
            };
            h.iov.iov_base = data.cast();
            h.msg.msg_name = ptr::addr_of_mut!(h.addr).cast();
            h.msg.msg_namelen = NAME_LEN as libc::socklen_t;
            h.msg.msg_iov = ptr::addr_of_mut!(h.iov);
            h.msg.msg_iovlen = 1;
        }
        // SAFETY: all-zero is a valid msghdr.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = NAME_LEN as libc::socklen_t;

        // SAFETY: the descriptor ring is page aligned, holds `count` entries, and stays
        // allocated until it is unregistered in `Drop` (or is leaked with the ring's memory).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring_addr(),
                bufs.count(),
                BGID,
                0,
            )?;
        }

        let batch_usec = u32::try_from(cfg.batch_window.as_micros()).unwrap_or(u32::MAX);
        let batching = cfg.batch_completions > 1 && batch_usec > 0 && features.min_timeout;
        let (batch_want, batch_usec) = if batching {
            (cfg.batch_completions as usize, batch_usec)
        } else {
            (1, 0)
        };
        let wait_flags = if features.no_iowait {
            EnterFlags::NO_IOWAIT
        } else {
            EnterFlags::empty()
        };
        let stats = UringStats::default();
        Ok(Self {
            ring,
            st: State {
                mem: ManuallyDrop::new(KernelMem {
                    bufs,
                    copies,
                    hdrs,
                    recv_hdr,
                }),
                sockets: Vec::new(),
                free_sockets: Vec::new(),
                free_copies: (0..cfg.send_slots).rev().collect(),
                payload_cap,
                buf_count,
                rcvbuf: cfg.rcvbuf,
                sndbuf: cfg.sndbuf,
                batch_want,
                batch_usec,
                wait_flags,
                inflight: 0,
                sends_queued: 0,
                stats,
                features,
            },
        })
    }

    /// Binds a nonblocking UDP socket to `addr` (port 0: the kernel picks) with the configured
    /// buffer sizes, and queues its multishot receive (armed by the next submission).
    pub fn bind_udp(&mut self, addr: SocketAddrV4) -> io::Result<SocketId> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_nonblocking(true)?;
        socket.set_recv_buffer_size(self.st.rcvbuf)?;
        socket.set_send_buffer_size(self.st.sndbuf)?;
        socket.bind(&SocketAddr::V4(addr).into())?;
        let local = socket
            .local_addr()?
            .as_socket_ipv4()
            .ok_or_else(|| io::Error::other("bound socket has no IPv4 address"))?;

        let st = &mut self.st;
        let index = match st.free_sockets.pop() {
            Some(i) => i,
            None => {
                let i = st.sockets.len() as u32;
                if i >= MAX_SOCKETS {
                    return Err(io::Error::other("too many sockets on one ring"));
                }
                st.sockets.push(SocketSlot {
                    socket: None,
                    fd: -1,
                    generation: 0,
                    state: SlotState::Free,
                    local,
                    recv_armed: false,
                    ops: 0,
                });
                // Keep room to free every slot without allocating on the packet path.
                let want = st.sockets.len() - st.free_sockets.len();
                st.free_sockets.reserve(want);
                i
            }
        };
        let slot = &mut st.sockets[index as usize];
        slot.fd = socket.as_raw_fd();
        slot.socket = Some(socket);
        slot.state = SlotState::Open;
        slot.local = local;
        slot.ops = 1;
        let id = SocketId {
            index,
            generation: slot.generation,
        };
        st.stats.sockets_open += 1;

        let (submitter, sq, _) = self.ring.split();
        let mut q = Sq { submitter, sq };
        if let Err(e) = st.arm_recv(index, &mut q) {
            // Nothing references the fd: undo the bind.
            st.stats.sockets_open -= 1;
            st.stats.sockets_closing += 1;
            st.sockets[index as usize].state = SlotState::Closing;
            st.release_op(index);
            return Err(e);
        }
        Ok(id)
    }

    /// Stops receiving on `id` and closes it once no queued or in-flight operation names it;
    /// its slot is reused by a later `bind_udp` after that. `id` is refused by sends at once.
    /// Returns `false` if `id` was not open.
    pub fn close(&mut self, id: SocketId) -> bool {
        let Some(index) = self.st.open_index(id) else {
            return false;
        };
        let (submitter, sq, _) = self.ring.split();
        let mut q = Sq { submitter, sq };
        self.st.close_index(index, &mut q);
        true
    }

    /// The address `id` is bound to, while it is open.
    pub fn local_addr(&self, id: SocketId) -> Option<SocketAddrV4> {
        let index = self.st.open_index(id)?;
        Some(self.st.sockets[index as usize].local)
    }

    /// One step of the worker loop: a single `io_uring_enter` that submits every queued SQE
    /// and waits for at least one completion or `timeout` (`None`: no limit), then a drain of
    /// the completion queue without further syscalls (unless the SQ fills up). Each received
    /// datagram is lent to `handler`; its [`Disposition`] recycles the buffer or queues a send
    /// from it, submitted by the next `run_once` or [`Uring::flush`]. Ended multishot receives
    /// are re-armed. Returns the number of datagrams handled.
    pub fn run_once<H>(&mut self, timeout: Option<Duration>, handler: &mut H) -> io::Result<usize>
    where
        H: FnMut(Datagram<'_>) -> Disposition,
    {
        let (submitter, mut sq, mut cq) = self.ring.split();
        let st = &mut self.st;
        st.mem.bufs.publish();
        sq.sync();
        if sq.cq_overflow() {
            st.stats.cq_overflows += 1;
        }
        st.stats.enters += 1;
        let ts = timeout.map(|t| {
            types::Timespec::new()
                .sec(t.as_secs())
                .nsec(t.subsec_nanos())
        });
        let args = types::SubmitArgs::new().min_wait_usec(st.batch_usec);
        let want = st.batch_want + std::mem::take(&mut st.sends_queued);
        let entered = match &ts {
            Some(ts) => {
                submitter.submit_with_args_and_flags(want, &args.timespec(ts), st.wait_flags)
            }
            None => submitter.submit_with_args_and_flags(want, &args, st.wait_flags),
        };
        if let Err(e) = entered {
            if !is_transient(&e) {
                return Err(e);
            }
        }

        let mut q = Sq { submitter, sq };
        q.sq.sync();
        let mut handled = 0;
        // Bounded so that a kernel posting completions concurrently (no DEFER_TASKRUN) cannot
        // keep us here forever; whatever is left is taken by the next call.
        let mut budget = cq.capacity() * 2;
        cq.sync();
        while budget > 0 {
            let Some(cqe) = cq.next() else {
                cq.sync();
                if cq.is_empty() {
                    break;
                }
                continue;
            };
            budget -= 1;
            handled += st.complete(&cqe, &mut q, handler)?;
        }
        st.stats.cqes_lost = u64::from(cq.overflow());
        drop(cq);
        st.mem.bufs.publish();
        Ok(handled)
    }

    /// Sends a copy of `data` from `from` to `to` (keepalives, locally generated packets):
    /// the bytes go to a preallocated copy slot, freed when the send completes. Zero-length
    /// datagrams are fine. Submitted by the next `run_once` or `flush`.
    pub fn send_copy(
        &mut self,
        from: SocketId,
        to: SocketAddrV4,
        data: &[u8],
    ) -> Result<(), SendError> {
        let st = &mut self.st;
        let index = st.open_index(from).ok_or(SendError::UnknownSocket(from))?;
        if data.len() > st.payload_cap {
            return Err(SendError::TooLong {
                len: data.len(),
                max: st.payload_cap,
            });
        }
        let Some(slot) = st.free_copies.pop() else {
            st.stats.copy_slots_exhausted += 1;
            return Err(SendError::NoFreeSlot);
        };
        let hdr_index = st.buf_count as usize + slot as usize;
        // SAFETY: the slot was free: no queued or in-flight send reads it. Its `payload_cap`
        // bytes start at `slot * payload_cap` inside the copy block (`slot < send_slots`), and
        // `data.len()` does not exceed them. `data` is the caller's slice and cannot overlap
        // our private allocation. The slot's send header already points at these bytes.
        unsafe {
            let dst = st.mem.copies.as_ptr().add(slot as usize * st.payload_cap);
            ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
        }
        let (submitter, sq, _) = self.ring.split();
        let mut q = Sq { submitter, sq };
        let user_data = Op::new(OpKind::SendCopy, index, slot).encode();
        match st.queue_send(hdr_index, index, to, data.len(), user_data, &mut q) {
            Ok(()) => Ok(()),
            Err(e) => {
                st.free_copies.push(slot);
                Err(SendError::Submit(e))
            }
        }
    }

    /// Submits every queued SQE without waiting (no syscall if none is queued).
    pub fn flush(&mut self) -> io::Result<()> {
        let (submitter, mut sq, _) = self.ring.split();
        self.st.mem.bufs.publish();
        sq.sync();
        if sq.is_empty() {
            return Ok(());
        }
        self.st.stats.enters += 1;
        self.st.sends_queued = 0;
        match submitter.submit() {
            Ok(_) => Ok(()),
            Err(e) if is_transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Counters since creation, with the current buffer and socket occupancy.
    pub fn stats(&self) -> UringStats {
        let st = &self.st;
        let mut s = st.stats;
        s.buffers_in_flight = st.mem.bufs.lent_count();
        s.copy_slots_in_use =
            (st.mem.hdrs.len() - st.buf_count as usize - st.free_copies.len()) as u32;
        s
    }

    /// How the ring was set up (which preferred flags the kernel accepted).
    pub fn features(&self) -> UringFeatures {
        self.st.features
    }

    /// Payload bytes in each buffer: the largest datagram received whole, and the most a
    /// handler can grow one to.
    pub fn payload_capacity(&self) -> usize {
        self.st.payload_cap
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        for index in 0..self.st.sockets.len() as u32 {
            if self.st.sockets[index as usize].state == SlotState::Open {
                let (submitter, sq, _) = self.ring.split();
                let mut q = Sq { submitter, sq };
                self.st.close_index(index, &mut q);
            }
        }
        let deadline = Instant::now() + DROP_DRAIN_LIMIT;
        while self.st.inflight > 0 && Instant::now() < deadline {
            let step = self.run_once(Some(Duration::from_millis(10)), &mut |_| {
                Disposition::Recycle
            });
            if step.is_err() {
                break;
            }
        }
        if self.st.inflight == 0 && self.ring.submitter().unregister_buf_ring(BGID).is_ok() {
            // SAFETY: no operation is queued or in flight and the buffer ring is unregistered,
            // so the kernel holds no pointer into this memory; it is never used again.
            unsafe { ManuallyDrop::drop(&mut self.st.mem) }
        }
        // Otherwise the memory is leaked on purpose: freeing it could let a late kernel write
        // land in reused heap memory. The ring fd closes when `ring` drops.
    }
}

impl State {
    /// The slot index of `id` if it names an open socket of this ring.
    fn open_index(&self, id: SocketId) -> Option<u32> {
        let slot = self.sockets.get(id.index as usize)?;
        (slot.state == SlotState::Open && slot.generation == id.generation).then_some(id.index)
    }

    /// Queues an SQE, forcing a submission if the SQ is full rather than dropping it.
    fn push(&mut self, entry: &squeue::Entry, q: &mut Sq<'_>) -> io::Result<()> {
        for _ in 0..SQ_FULL_RETRIES {
            // SAFETY: every pointer an SQE of ours carries (msghdr, its iovec and sockaddr,
            // the data buffer) points into `KernelMem`, which lives until no operation is in
            // flight (see `Drop`), and the fd it names stays open until its final CQE (the
            // socket's `ops` count).
            if unsafe { q.sq.push(entry) }.is_ok() {
                return Ok(());
            }
            q.sq.sync();
            self.mem.bufs.publish();
            self.stats.enters += 1;
            self.stats.sq_full_submits += 1;
            // Their completions may be reaped before the next wait: do not wait for them.
            self.sends_queued = 0;
            match q.submitter.submit() {
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(e),
            }
            q.sq.sync();
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "submission queue stays full",
        ))
    }

    /// Queues the multishot receive of socket `index`.
    fn arm_recv(&mut self, index: u32, q: &mut Sq<'_>) -> io::Result<()> {
        let fd = self.sockets[index as usize].fd;
        let entry = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.mem.recv_hdr, BGID)
            .build()
            .user_data(Op::new(OpKind::Recv, index, 0).encode());
        self.push(&entry, q)?;
        self.sockets[index as usize].recv_armed = true;
        self.inflight += 1;
        Ok(())
    }

    /// Queues a `SendMsg` of `len` bytes through send header `hdr_index` (whose iovec already
    /// points at the data) from socket `index` to `to`.
    fn queue_send(
        &mut self,
        hdr_index: usize,
        index: u32,
        to: SocketAddrV4,
        len: usize,
        user_data: u64,
        q: &mut Sq<'_>,
    ) -> io::Result<()> {
        let fd = self.sockets[index as usize].fd;
        let hdr = &mut self.mem.hdrs[hdr_index];
        hdr.addr = sockaddr_in(to);
        hdr.iov.iov_len = len;
        let entry = opcode::SendMsg::new(types::Fd(fd), &hdr.msg)
            .build()
            .user_data(user_data);
        self.push(&entry, q)?;
        self.sockets[index as usize].ops += 1;
        self.inflight += 1;
        self.sends_queued += 1;
        Ok(())
    }

    /// Marks socket `index` closing and queues the cancel of its receive.
    fn close_index(&mut self, index: u32, q: &mut Sq<'_>) {
        let slot = &mut self.sockets[index as usize];
        slot.state = SlotState::Closing;
        self.stats.sockets_open -= 1;
        self.stats.sockets_closing += 1;
        if slot.recv_armed {
            let entry = opcode::AsyncCancel::new(Op::new(OpKind::Recv, index, 0).encode())
                .build()
                .user_data(Op::new(OpKind::Cancel, index, 0).encode());
            if self.push(&entry, q).is_ok() {
                self.sockets[index as usize].ops += 1;
                self.inflight += 1;
            }
            // If even a forced submission could not make room, the receive stays armed
            // until the ring is dropped; the slot is then reclaimed with it.
        } else {
            // The receive already ended and was not re-armed: drop its reference.
            self.release_op(index);
        }
    }

    /// Drops one operation's reference to socket `index`; closes it at the last one if it is
    /// closing.
    fn release_op(&mut self, index: u32) {
        let Some(slot) = self.sockets.get_mut(index as usize) else {
            return;
        };
        slot.ops = slot.ops.saturating_sub(1);
        if slot.ops == 0 && slot.state == SlotState::Closing {
            slot.socket = None;
            slot.fd = -1;
            slot.state = SlotState::Free;
            slot.generation = slot.generation.wrapping_add(1);
            // Capacity was reserved at bind: no allocation here.
            self.free_sockets.push(index);
            self.stats.sockets_closing -= 1;
        }
    }

    /// Routes one completion. Returns the number of datagrams handed to the handler (0 or 1).
    fn complete<H>(
        &mut self,
        cqe: &cqueue::Entry,
        q: &mut Sq<'_>,
        handler: &mut H,
    ) -> io::Result<usize>
    where
        H: FnMut(Datagram<'_>) -> Disposition,
    {
        self.stats.cqes += 1;
        let Some(op) = Op::decode(cqe.user_data()) else {
            self.stats.unexpected_cqes += 1;
            return Ok(0);
        };
        if op.socket as usize >= self.sockets.len() {
            self.stats.unexpected_cqes += 1;
            return Ok(0);
        }
        let res = cqe.result();
        match op.kind {
            OpKind::Recv => self.complete_recv(op.socket, res, cqe.flags(), q, handler),
            OpKind::Send => {
                self.count_send(res);
                if op.slot < self.buf_count {
                    self.mem.bufs.give_back(op.slot as u16);
                } else {
                    self.stats.unexpected_cqes += 1;
                }
                self.inflight -= 1;
                self.release_op(op.socket);
                Ok(0)
            }
            OpKind::SendCopy => {
                self.count_send(res);
                self.free_copies.push(op.slot);
                self.inflight -= 1;
                self.release_op(op.socket);
                Ok(0)
            }
            OpKind::Cancel => {
                self.inflight -= 1;
                self.release_op(op.socket);
                Ok(0)
            }
        }
    }

    fn count_send(&mut self, res: i32) {
        if res >= 0 {
            self.stats.sent += 1;
        } else {
            self.stats.send_errors.count(-res);
        }
    }

    fn complete_recv<H>(
        &mut self,
        index: u32,
        res: i32,
        flags: u32,
        q: &mut Sq<'_>,
        handler: &mut H,
    ) -> io::Result<usize>
    where
        H: FnMut(Datagram<'_>) -> Disposition,
    {
        let mut handled = 0;
        if let Some(bid) = cqueue::buffer_select(flags) {
            if !self.mem.bufs.take(bid) {
                self.stats.unexpected_cqes += 1;
            } else if res < 0 {
                self.mem.bufs.give_back(bid);
            } else {
                handled = self.deliver(index, bid, res as usize, q, handler)?;
            }
        }
        if cqueue::more(flags) {
            if res < 0 {
                self.stats.recv_errors += 1;
            }
            return Ok(handled);
        }
        // The multishot receive ended: find out why, then re-arm it unless closing.
        self.inflight -= 1;
        self.sockets[index as usize].recv_armed = false;
        match -res {
            libc::ENOBUFS => self.stats.enobufs += 1,
            libc::ECANCELED => {}
            e if e > 0 => self.stats.recv_errors += 1,
            _ => {}
        }
        if self.sockets[index as usize].state == SlotState::Open {
            self.stats.rearms += 1;
            // On failure the socket keeps its receive reference (released by `close`) but
            // stops receiving; the error ends this `run_once`.
            self.arm_recv(index, q)?;
        } else {
            self.release_op(index);
        }
        Ok(handled)
    }

    /// Parses the datagram in buffer `bid` (lent to us), lends it to the handler and carries
    /// out its disposition.
    fn deliver<H>(
        &mut self,
        index: u32,
        bid: u16,
        res: usize,
        q: &mut Sq<'_>,
        handler: &mut H,
    ) -> io::Result<usize>
    where
        H: FnMut(Datagram<'_>) -> Disposition,
    {
        let base = self.mem.bufs.buffer_ptr(bid);
        let filled = res.min(PAYLOAD_OFFSET + self.payload_cap);
        let parsed = {
            // SAFETY: buffer `bid` was just taken out of the ring (`take`), so the kernel no
            // longer writes it; `filled` bytes of it are inside the buffer and initialized
            // (the block is zeroed at allocation). The slice dies at the end of this block.
            let received = unsafe { std::slice::from_raw_parts(base, filled) };
            types::RecvMsgOut::parse(received, &self.mem.recv_hdr)
                .ok()
                .map(|out| {
                    (
                        out.is_payload_truncated(),
                        parse_sockaddr_in(out.name_data()),
                        out.payload_data().len(),
                    )
                })
        };
        let slot_open = self.sockets[index as usize].state == SlotState::Open;
        let (src, len) = match parsed {
            Some((true, _, _)) => {
                self.stats.truncated += 1;
                self.mem.bufs.give_back(bid);
                return Ok(0);
            }
            Some((false, Some(src), len)) if slot_open => (src, len),
            _ => {
                self.stats.dropped += 1;
                self.mem.bufs.give_back(bid);
                return Ok(0);
            }
        };
        self.stats.received += 1;
        let socket = SocketId {
            index,
            generation: self.sockets[index as usize].generation,
        };
        let disposition = {
            // SAFETY: as above, buffer `bid` is ours until we give it back or send from it;
            // the payload room `[PAYLOAD_OFFSET, PAYLOAD_OFFSET + payload_cap)` is inside it.
            // The handler gets the only reference, for the duration of its call (the
            // higher-ranked lifetime stops it from keeping the slice).
            let buf = unsafe {
                std::slice::from_raw_parts_mut(base.add(PAYLOAD_OFFSET), self.payload_cap)
            };
            handler(Datagram {
                socket,
                src,
                buf,
                len,
            })
        };
        match disposition {
            Disposition::Recycle => self.mem.bufs.give_back(bid),
            Disposition::Send { from, to, len } => {
                let from = match self.open_index(from) {
                    Some(i) if len <= self.payload_cap => i,
                    _ => {
                        self.stats.send_rejected += 1;
                        self.mem.bufs.give_back(bid);
                        return Ok(1);
                    }
                };
                let user_data = Op::new(OpKind::Send, from, u32::from(bid)).encode();
                if let Err(e) = self.queue_send(usize::from(bid), from, to, len, user_data, q) {
                    self.mem.bufs.give_back(bid);
                    return Err(e);
                }
            }
        }
        Ok(1)
    }
}

/// Tries ring setups from the preferred to the most basic, recording which one worked.
fn build_ring(cfg: &UringConfig) -> io::Result<(IoUring, UringFeatures)> {
    // (single_issuer, defer_taskrun, coop_taskrun, submit_all)
    const TRIES: [(bool, bool, bool, bool); 4] = [
        (true, true, false, true),
        (true, false, true, true),
        (false, false, true, true),
        (false, false, false, false),
    ];
    let mut last = None;
    for (single, defer, coop, submit_all) in TRIES {
        let mut b = IoUring::builder();
        b.setup_cqsize(cfg.cq_entries);
        if submit_all {
            b.setup_submit_all();
        }
        if single {
            b.setup_single_issuer();
        }
        if defer {
            b.setup_defer_taskrun();
        }
        if coop {
            b.setup_coop_taskrun();
        }
        match b.build(cfg.sq_entries) {
            Ok(ring) => {
                let p = ring.params();
                let features = UringFeatures {
                    single_issuer: single,
                    defer_taskrun: defer,
                    coop_taskrun: coop,
                    submit_all,
                    nodrop: p.is_feature_nodrop(),
                    min_timeout: p.is_feature_min_timeout(),
                    no_iowait: p.is_feature_no_iowait(),
                    sq_entries: p.sq_entries(),
                    cq_entries: p.cq_entries(),
                };
                return Ok((ring, features));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
}

/// Errors of `io_uring_enter` after which the drain must still run: the wait timed out or
/// was interrupted, or the kernel asks us to reap completions first.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// Reads a `sockaddr_in` as the kernel wrote it into the receive buffer.
fn parse_sockaddr_in(name: &[u8]) -> Option<SocketAddrV4> {
    let family = u16::from_ne_bytes([*name.first()?, *name.get(1)?]);
    if family != libc::AF_INET as u16 || name.len() < 8 {
        return None;
    }
    let port = u16::from_be_bytes([name[2], name[3]]);
    let ip = Ipv4Addr::new(name[4], name[5], name[6], name[7]);
    Some(SocketAddrV4::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        let a = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 36002);
        let raw = sockaddr_in(a);
        // SAFETY: sockaddr_in is plain old data; viewing it as bytes is fine.
        let bytes =
            unsafe { std::slice::from_raw_parts(ptr::addr_of!(raw).cast::<u8>(), NAME_LEN) };
        assert_eq!(parse_sockaddr_in(bytes), Some(a));
        assert_eq!(parse_sockaddr_in(&bytes[..4]), None);
        assert_eq!(parse_sockaddr_in(&[0; 16]), None);
    }

    #[test]
    fn payload_follows_header_and_name() {
        assert_eq!(PAYLOAD_OFFSET, 32);
    }
}
