//! Counters and the ring setup actually obtained.

/// Send completions that failed, by errno class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendErrorCounts {
    /// `ECONNREFUSED` (an ICMP port unreachable reported on the socket).
    pub refused: u64,
    /// `EHOSTUNREACH`, `ENETUNREACH`, `EADDRNOTAVAIL`, `ENETDOWN`: no route to the peer.
    pub unreachable: u64,
    /// `EAGAIN`, `ENOBUFS`, `ENOMEM`: the socket's send buffer or the host is out of room.
    pub no_room: u64,
    /// `EPERM`, `EACCES`: refused by a firewall rule or a broadcast address.
    pub denied: u64,
    /// `EMSGSIZE`: larger than the path allows.
    pub too_big: u64,
    /// `ECANCELED`: the ring was torn down with the send still queued.
    pub canceled: u64,
    /// Any other errno.
    pub other: u64,
}

impl SendErrorCounts {
    /// All failed sends.
    pub fn total(&self) -> u64 {
        self.refused
            + self.unreachable
            + self.no_room
            + self.denied
            + self.too_big
            + self.canceled
            + self.other
    }

    pub(crate) fn count(&mut self, errno: i32) {
        let slot = match errno {
            libc::ECONNREFUSED => &mut self.refused,
            libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EADDRNOTAVAIL | libc::ENETDOWN => {
                &mut self.unreachable
            }
            libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM => &mut self.no_room,
            libc::EPERM | libc::EACCES => &mut self.denied,
            libc::EMSGSIZE => &mut self.too_big,
            libc::ECANCELED => &mut self.canceled,
            _ => &mut self.other,
        };
        *slot += 1;
    }
}

/// Counters of one ring since it was created; copied out by [`Uring::stats`](crate::Uring::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UringStats {
    /// Datagrams handed to the handler.
    pub received: u64,
    /// Sends (zero-copy and `send_copy`) that completed successfully.
    pub sent: u64,
    /// Sends that completed with an error, by class.
    pub send_errors: SendErrorCounts,
    /// `Disposition::Send` refused before submission (unknown or closing socket, length beyond
    /// the buffer); the buffer was recycled.
    pub send_rejected: u64,
    /// Multishot receives ended by `ENOBUFS` (the buffer ring ran dry).
    pub enobufs: u64,
    /// Multishot receives re-armed after they ended (for any reason).
    pub rearms: u64,
    /// Multishot receive completions with another error (not `ENOBUFS`, not a cancel).
    pub recv_errors: u64,
    /// Datagrams dropped because they did not fit in a buffer (`MSG_TRUNC`).
    pub truncated: u64,
    /// Datagrams dropped because they arrived on a socket being closed, or with an unusable
    /// source address.
    pub dropped: u64,
    /// `io_uring_enter` calls made (waits, flushes and submissions forced by a full SQ).
    pub enters: u64,
    /// Of `enters`, those forced because the SQ filled up in the middle of a drain.
    pub sq_full_submits: u64,
    /// Completions processed.
    pub cqes: u64,
    /// Times the kernel reported a CQ overflow (completions parked in the kernel until the
    /// next enter); a sign that `cq_entries` is too small.
    pub cq_overflows: u64,
    /// Completions the kernel could not even park and dropped (`cq.overflow`); should stay 0.
    pub cqes_lost: u64,
    /// Completions whose `user_data` or buffer id made no sense (should stay 0).
    pub unexpected_cqes: u64,
    /// Provided buffers currently out of the buffer ring (in a queued or in-flight send).
    pub buffers_in_flight: u32,
    /// Copy-pool slots currently holding a `send_copy` datagram.
    pub copy_slots_in_use: u32,
    /// `send_copy` calls refused because every copy slot was in use.
    pub copy_slots_exhausted: u64,
    /// Sockets open (bound and receiving).
    pub sockets_open: u32,
    /// Sockets closed by the caller whose operations have not all completed yet.
    pub sockets_closing: u32,
}

/// How the ring was set up: which of the preferred flags the kernel accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringFeatures {
    /// `IORING_SETUP_SINGLE_ISSUER`: only the creating thread submits.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN`: completions run only inside our own `io_uring_enter`.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN`: the fallback when `defer_taskrun` is refused.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SUBMIT_ALL`: one bad SQE does not stop the rest of a batch.
    pub submit_all: bool,
    /// `IORING_FEAT_NODROP`: completions beyond the CQ are parked, not lost.
    pub nodrop: bool,
    /// `IORING_FEAT_MIN_TIMEOUT` (Linux 6.12): `batch_window` is honoured.
    pub min_timeout: bool,
    /// `IORING_ENTER_NO_IOWAIT` (Linux 6.15): waiting is not accounted as iowait.
    pub no_iowait: bool,
    /// Submission queue entries granted.
    pub sq_entries: u32,
    /// Completion queue entries granted.
    pub cq_entries: u32,
}
