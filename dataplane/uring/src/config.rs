//! Sizing of one worker's ring, buffer ring and send pool.

use std::io;
use std::time::Duration;

/// Bytes in front of the payload in every provided buffer: the kernel's `io_uring_recvmsg_out`
/// header (16) followed by the source `sockaddr_in` (16). No control data is requested.
pub(crate) const RECVMSG_OUT_LEN: usize = 16;
pub(crate) const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in>();
pub(crate) const PAYLOAD_OFFSET: usize = RECVMSG_OUT_LEN + NAME_LEN;

/// The largest buffer ring the kernel accepts (entries are indexed by a `u16` tail, capped at
/// 2^15).
const MAX_BUF_COUNT: u16 = 1 << 15;

/// Sizing of one [`Uring`](crate::Uring); every figure is allocated once, at
/// [`Uring::new`](crate::Uring::new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringConfig {
    /// Submission queue entries (the kernel rounds up to a power of two).
    pub sq_entries: u32,
    /// Completion queue entries; keep it well above `buf_count + send_slots` so that every
    /// operation in flight fits without overflow.
    pub cq_entries: u32,
    /// Buffers in the provided buffer ring shared by all sockets of the ring (power of two,
    /// at most 32768). Bounds the datagrams in flight between the kernel and the handler.
    pub buf_count: u16,
    /// Bytes per provided buffer; the payload room is `buf_size - 32` (receive header and
    /// source address come first). Room beyond a datagram lets the handler grow it in place.
    pub buf_size: u32,
    /// `SO_RCVBUF` requested for every socket (the kernel caps it at `net.core.rmem_max`).
    pub rcvbuf: usize,
    /// `SO_SNDBUF` requested for every socket (capped at `net.core.wmem_max`).
    pub sndbuf: usize,
    /// Slots of the copy pool used by [`Uring::send_copy`](crate::Uring::send_copy); each holds
    /// one datagram of up to `buf_size - 32` bytes until its send completes.
    pub send_slots: u32,
    /// Completions a wait in [`Uring::run_once`](crate::Uring::run_once) holds out for before
    /// waking early (32; 1 wakes on the first completion). Only with a non-zero `batch_window`.
    pub batch_completions: u32,
    /// How long a wait may hold out for `batch_completions` before it returns with what it has
    /// (50 µs; zero turns batching off). A wait that sees nothing in this window returns on the
    /// first completion after it, so an idle worker adds no delay and a busy one adds at most
    /// this much, in exchange for far fewer wake-ups per datagram. Needs Linux 6.12
    /// (`IORING_FEAT_MIN_TIMEOUT`); ignored before (see `features().min_timeout`).
    pub batch_window: Duration,
}

impl Default for UringConfig {
    fn default() -> Self {
        Self {
            sq_entries: 4096,
            cq_entries: 4 * 4096,
            buf_count: 4096,
            buf_size: 2048,
            rcvbuf: 4 << 20,
            sndbuf: 4 << 20,
            send_slots: 256,
            batch_completions: 32,
            batch_window: Duration::from_micros(50),
        }
    }
}

impl UringConfig {
    /// Payload bytes available in each buffer (and in each copy slot).
    pub fn payload_capacity(&self) -> usize {
        (self.buf_size as usize).saturating_sub(PAYLOAD_OFFSET)
    }

    /// Checks the values [`Uring::new`](crate::Uring::new) would refuse, so a caller can
    /// refuse them at start-up, before any ring exists.
    pub fn validate(&self) -> io::Result<()> {
        let bad = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what.to_owned()));
        if self.buf_count == 0
            || !self.buf_count.is_power_of_two()
            || self.buf_count > MAX_BUF_COUNT
        {
            return bad("buf_count must be a power of two between 1 and 32768");
        }
        if (self.buf_size as usize) < PAYLOAD_OFFSET + 64 || self.buf_size > (1 << 16) + 64 {
            return bad("buf_size must be between 96 and 65600 bytes");
        }
        if self.sq_entries == 0 || self.sq_entries > 32768 {
            return bad("sq_entries must be between 1 and 32768");
        }
        if self.cq_entries < self.sq_entries {
            return bad("cq_entries must be at least sq_entries");
        }
        if self.send_slots == 0 || self.send_slots > (1 << 24) {
            return bad("send_slots must be between 1 and 2^24");
        }
        if self.batch_completions == 0 || self.batch_window > Duration::from_secs(1) {
            return bad("batch_completions must be at least 1 and batch_window at most 1 s");
        }
        Ok(())
    }
}
