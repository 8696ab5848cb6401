//! The generator: paced sending and receiving on one thread.
//!
//! Packets are numbered globally (`k`); packet `k` belongs to stream `order[k % S]` and is
//! that stream's `j = k / S`-th packet (RTP sequence `j`, timestamp `160 j`). Sending `k` at
//! `t0 + k / rate` is therefore a round robin that keeps every stream at `rate / S`
//! packets per second (20 ms cadence when `rate = 50 S`). `order` groups streams by send
//! socket so consecutive packets share a socket and go out in one `sendmmsg`.
//!
//! One thread does everything: each turn it sends what is due (in batches of up to 64,
//! stamping `CLOCK_MONOTONIC` into each payload just before protecting it), then waits
//! in `epoll_pwait2` until the next packet is due or one of its sockets is readable
//! (at least `tick` between send turns), and drains readable sockets with `recvmmsg`.
//! Numbering continues across trials of one [`Generator`], so a relay's SRTP replay state
//! stays valid when `find-max` runs trial after trial.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use edgeway_srtp::{Error as SrtpError, SrtpContext};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::payload::{self, PACKET_LEN};
use crate::scenario::Scenario;
use crate::sys::{self, Epoll, MmsgBatch, RawAddr};

/// Generator settings that do not change between trials.
#[derive(Debug, Clone)]
pub struct Options {
    /// Minimum time between send turns when idle.
    pub tick: Duration,
    /// SO_RCVBUF/SO_SNDBUF of every socket.
    pub sock_buf: usize,
    /// SSRC of stream 0 (stream i uses base + i); random when `None`. A fresh base per
    /// invocation keeps a stateful relay's replay windows from rejecting a second run.
    pub ssrc_base: Option<u32>,
    /// Process whose CPU time (utime + stime, all threads) is reported per trial.
    pub sut_pid: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tick: Duration::from_micros(200),
            sock_buf: 4 << 20,
            ssrc_base: None,
            sut_pid: None,
        }
    }
}

/// One trial's load.
#[derive(Debug, Clone, Copy)]
pub struct TrialParams {
    /// Offered packets per second, all streams together.
    pub rate: f64,
    /// Sent but not measured.
    pub warmup: Duration,
    /// Measured sending time.
    pub duration: Duration,
    /// Time to wait for stragglers after sending stops (ends early when all arrived).
    pub drain: Duration,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// The percentiles of a histogram recorded in units of `1 / units_per_us` µs (1000 for
    /// nanoseconds, 1 for microseconds); all zero when it is empty.
    pub fn from_histogram(h: &Histogram<u64>, units_per_us: f64) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |v: u64| v as f64 / units_per_us;
        Latency {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / units_per_us,
        }
    }
}

/// What one trial measured. Counts cover packets sent after the warmup.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrialReport {
    /// Streams in the scenario.
    pub streams: usize,
    /// Measured sending time in seconds.
    pub duration_s: f64,
    /// Offered rate.
    pub offered_pps: f64,
    /// Achieved send rate.
    pub sent_pps: f64,
    /// Rate of distinct measured packets received.
    pub received_pps: f64,
    /// Packets sent.
    pub sent: u64,
    /// Distinct packets received intact.
    pub received: u64,
    /// Sent and never received intact (after the drain).
    pub lost: u64,
    /// `lost / sent` in percent.
    pub loss_pct: f64,
    /// Failed authentication, or decrypted to a payload that is not ours / not the
    /// stream's (misdelivered).
    pub corrupt: u64,
    /// Received again (SRTP replay rejections, or a second copy of plain RTP).
    pub duplicates: u64,
    /// Arrived after a later packet of the same stream.
    pub reordered: u64,
    /// SRTP packets older than the receiver's replay window (1024): dropped, so also lost.
    pub too_old: u64,
    /// Datagrams that matched no stream (unknown SSRC on that socket, runts).
    pub unmatched: u64,
    /// Datagrams the generator could not send (kernel error).
    pub send_errors: u64,
    /// One-way added latency, send stamp to receive.
    pub latency_us: Latency,
    /// Generator thread CPU (user + system) over the trial's wall time, percent of a core.
    pub gen_cpu_pct: f64,
    /// CPU of the system under test over the measured window, percent of a core.
    pub sut_cpu_pct: Option<f64>,
    /// Host-wide UDP receive-buffer overflows (drops at a full socket) during the trial.
    pub udp_rcvbuf_errors: u64,
    /// True when the generator could not send at the offered rate (sent < 98% offered):
    /// the result then says nothing about the system under test at that rate.
    pub generator_limited: bool,
    /// Packets the schedule gave up on because the generator was more than the backlog
    /// cap (20 ms of packets) behind: never sent, so they lower `sent_pps`.
    pub skipped: u64,
    /// Times the generator thread was preempted (involuntary context switches) during the
    /// trial. Many, with a low `gen_cpu_pct`, means the thread was runnable but another
    /// task held its CPU: a contended core, not a generator waiting for work.
    pub gen_preempted: u64,
    /// Times the generator thread slept voluntarily (in `epoll_pwait2`) during the trial.
    pub gen_sleeps: u64,
}

struct StreamState {
    tx_sock: usize,
    rx_sock: usize,
    dst: RawAddr,
    ssrc: u32,
    tx: Option<SrtpContext>,
    rx: Option<SrtpContext>,
    highest_k: Option<u64>,
}

/// Per-trial measurement state.
struct Meas {
    start_k: u64,
    end_k: u64,
    seen: Vec<u64>,
    received: u64,
    corrupt: u64,
    duplicates: u64,
    reordered: u64,
    too_old: u64,
    unmatched: u64,
    hist: Histogram<u64>,
}

impl Meas {
    fn new(expected: u64) -> Meas {
        Meas {
            start_k: u64::MAX,
            end_k: u64::MAX,
            seen: Vec::with_capacity((expected / 64 + 1) as usize),
            received: 0,
            corrupt: 0,
            duplicates: 0,
            reordered: 0,
            too_old: 0,
            unmatched: 0,
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .unwrap_or_else(|_| unreachable!("static bounds are valid")),
        }
    }

    /// Marks `k` received; false when it already was.
    fn mark(&mut self, k: u64) -> bool {
        let off = k - self.start_k;
        let (w, b) = ((off / 64) as usize, off % 64);
        if w >= self.seen.len() {
            self.seen.resize(w + 1 + w / 4, 0);
        }
        let fresh = self.seen[w] & (1 << b) == 0;
        self.seen[w] |= 1 << b;
        fresh
    }
}

/// The load generator over one scenario.
pub struct Generator {
    socks: Vec<UdpSocket>,
    streams: Vec<StreamState>,
    order: Vec<u32>,
    /// Streams received on each socket (for SSRC-less matching).
    rx_candidates: Vec<Vec<u32>>,
    ssrc_base: u32,
    next_k: u64,
    epoll: Epoll,
    tx: MmsgBatch,
    rx: MmsgBatch,
    scratch: Vec<u8>,
    opts: Options,
    send_errors: u64,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("sockets", &self.socks.len())
            .field("streams", &self.streams.len())
            .field("next_k", &self.next_k)
            .finish_non_exhaustive()
    }
}

/// Why a generator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// Binding a local address failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Another socket or epoll error.
    #[error("socket setup: {0}")]
    Io(#[from] std::io::Error),
    /// A key edgeway-srtp refuses.
    #[error("stream {stream}: {source}")]
    Srtp {
        /// Stream index.
        stream: usize,
        /// The cause.
        source: SrtpError,
    },
}

fn context(
    stream: usize,
    c: &Option<edgeway_srtp::sdes::CryptoAttribute>,
) -> Result<Option<SrtpContext>, SetupError> {
    c.as_ref()
        .map(|c| {
            let mut cfg = c.to_config();
            cfg.max_streams = 1;
            SrtpContext::new(&cfg).map_err(|source| SetupError::Srtp { stream, source })
        })
        .transpose()
}

impl Generator {
    /// Binds every distinct local address of the scenario and prepares the streams.
    pub fn new(scenario: &Scenario, opts: Options) -> Result<Generator, SetupError> {
        Generator::with_sockets(scenario, opts, Vec::new())
    }

    /// As [`Generator::new`], but the scenario's local addresses that one of `bound` is
    /// bound to use that socket (a caller that had to name its media ports in SDP before
    /// the run binds them first, so no other process can take them meanwhile).
    pub fn with_sockets(
        scenario: &Scenario,
        opts: Options,
        bound: Vec<UdpSocket>,
    ) -> Result<Generator, SetupError> {
        sys::raise_nofile_limit();
        let mut index: HashMap<SocketAddr, usize> = HashMap::new();
        let mut socks = Vec::new();
        let mut prebound: HashMap<SocketAddr, UdpSocket> = HashMap::new();
        for s in bound {
            prebound.insert(s.local_addr()?, s);
        }
        let mut sock_for = |addr: SocketAddr| -> Result<usize, SetupError> {
            if let Some(&i) = index.get(&addr) {
                return Ok(i);
            }
            let s = match prebound.remove(&addr) {
                Some(s) => s,
                None => {
                    UdpSocket::bind(addr).map_err(|source| SetupError::Bind { addr, source })?
                }
            };
            sys::set_socket_buffers(&s, opts.sock_buf)?;
            socks.push(s);
            index.insert(addr, socks.len() - 1);
            Ok(socks.len() - 1)
        };
        let ssrc_base = opts.ssrc_base.unwrap_or_else(rand::random);
        let mut streams = Vec::with_capacity(scenario.streams.len());
        for (i, s) in scenario.streams.iter().enumerate() {
            streams.push(StreamState {
                tx_sock: sock_for(s.tx_local)?,
                rx_sock: sock_for(s.rx_local)?,
                dst: RawAddr::new(s.tx_to),
                ssrc: ssrc_base.wrapping_add(i as u32),
                tx: context(i, &s.tx_crypto)?,
                rx: context(i, &s.rx_crypto)?,
                highest_k: None,
            });
        }
        let prime_socks = scenario
            .prime
            .iter()
            .map(|p| sock_for(p.from))
            .collect::<Result<Vec<_>, _>>()?;
        let epoll = Epoll::new(1024)?;
        for (i, s) in socks.iter().enumerate() {
            epoll.add(s.as_raw_fd(), i as u64)?;
        }
        let mut rx_candidates = vec![Vec::new(); socks.len()];
        for (i, s) in streams.iter().enumerate() {
            rx_candidates[s.rx_sock].push(i as u32);
        }
        let mut order: Vec<u32> = (0..streams.len() as u32).collect();
        order.sort_by_key(|&i| (streams[i as usize].tx_sock, i));
        // Relays that latch on the first packet: prime them.
        for (p, &si) in scenario.prime.iter().zip(&prime_socks) {
            let mut pkt = [0u8; PACKET_LEN];
            payload::template(&mut pkt, 0);
            socks[si].send_to(&pkt, p.to)?;
        }
        Ok(Generator {
            socks,
            streams,
            order,
            rx_candidates,
            ssrc_base,
            next_k: 0,
            epoll,
            tx: MmsgBatch::new(),
            rx: MmsgBatch::new(),
            scratch: vec![0u8; sys::SLOT],
            opts,
            send_errors: 0,
        })
    }

    /// Streams in the scenario.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Local sockets opened.
    pub fn socket_count(&self) -> usize {
        self.socks.len()
    }

    /// Runs one trial: warmup, measured sending, drain.
    pub fn trial(&mut self, p: &TrialParams) -> std::io::Result<TrialReport> {
        let n = self.streams.len() as u64;
        let rate = p.rate.max(1.0);
        let ns_per_pkt = 1e9 / rate;
        let mut meas = Meas::new((rate * p.duration.as_secs_f64() * 1.05) as u64);
        // How far behind the schedule may fall before it is moved forward: 20 ms, one
        // packet per stream at the G.711 cadence. A preempted thread (a shared core's time
        // slice is a few ms) then catches up with at most one late packet per stream; a
        // 2 ms cap dropped every packet of each preemption from the schedule for good.
        let backlog_cap = ((rate * 0.020) as u64).max(4 * sys::BATCH as u64);
        let mut skipped = 0u64;
        let snmp0 = crate::procstat::udp_rcvbuf_errors();
        let cpu0 = sys::thread_cpu_ns();
        let csw0 = sys::thread_context_switches();
        let t_start = sys::monotonic_ns();
        let t_meas = t_start + p.warmup.as_nanos() as u64;
        let t_end = t_meas + p.duration.as_nanos() as u64;
        // Schedule origin: packet base_k + x is due at t0 + x * ns_per_pkt. Moved forward
        // when the generator falls behind by more than backlog_cap (no catch-up bursts).
        let mut t0 = t_start as f64;
        let mut base_k = self.next_k;
        let mut sut0 = None;
        let mut last_send = 0u64;
        loop {
            let now = sys::monotonic_ns();
            if now >= t_end {
                break;
            }
            if meas.start_k == u64::MAX && now >= t_meas {
                meas.start_k = self.next_k;
                sut0 = self.opts.sut_pid.and_then(crate::procstat::process_cpu_ns);
            }
            let mut due = base_k + ((now as f64 - t0) / ns_per_pkt) as u64;
            if due > self.next_k + backlog_cap {
                if meas.start_k != u64::MAX {
                    skipped += due - (self.next_k + backlog_cap);
                }
                base_k = self.next_k;
                t0 = now as f64 - backlog_cap as f64 * ns_per_pkt;
                due = self.next_k + backlog_cap;
            }
            if due > self.next_k && now >= last_send + self.opts.tick.as_nanos() as u64 / 4 {
                self.send_until(due);
                last_send = now;
            }
            // Sleep until the next packet is due (at least a tick after this send turn),
            // or until a socket is readable.
            let next_due = t0 + ((self.next_k + 1 - base_k) as f64) * ns_per_pkt;
            let wake = (next_due as u64)
                .max(last_send + self.opts.tick.as_nanos() as u64)
                .min(t_end)
                .min(if meas.start_k == u64::MAX {
                    t_meas
                } else {
                    t_end
                });
            let now = sys::monotonic_ns();
            let timeout = Duration::from_nanos(wake.saturating_sub(now));
            self.poll_receive(timeout, &mut meas)?;
        }
        if meas.start_k == u64::MAX {
            meas.start_k = self.next_k;
        }
        meas.end_k = self.next_k;
        let sut1 = self.opts.sut_pid.and_then(crate::procstat::process_cpu_ns);
        let t_sent = sys::monotonic_ns();
        let sent = meas.end_k - meas.start_k;
        let drain_end = t_sent + p.drain.as_nanos() as u64;
        while meas.received < sent {
            let now = sys::monotonic_ns();
            if now >= drain_end {
                break;
            }
            self.poll_receive(Duration::from_nanos(drain_end - now), &mut meas)?;
        }
        let wall = (sys::monotonic_ns() - t_start) as f64;
        let cpu = (sys::thread_cpu_ns() - cpu0) as f64;
        let csw1 = sys::thread_context_switches();
        let dur = p.duration.as_secs_f64();
        let h = &meas.hist;
        let lost = sent.saturating_sub(meas.received);
        let offered = rate * dur;
        Ok(TrialReport {
            streams: n as usize,
            duration_s: dur,
            offered_pps: rate,
            sent_pps: sent as f64 / dur,
            received_pps: meas.received as f64 / dur,
            sent,
            received: meas.received,
            lost,
            loss_pct: if sent == 0 {
                0.0
            } else {
                100.0 * lost as f64 / sent as f64
            },
            corrupt: meas.corrupt,
            duplicates: meas.duplicates,
            reordered: meas.reordered,
            too_old: meas.too_old,
            unmatched: meas.unmatched,
            send_errors: std::mem::take(&mut self.send_errors),
            latency_us: Latency::from_histogram(h, 1000.0),
            gen_cpu_pct: 100.0 * cpu / wall,
            sut_cpu_pct: match (sut0, sut1) {
                (Some(a), Some(b)) => Some(100.0 * (b - a) as f64 / (dur * 1e9)),
                _ => None,
            },
            udp_rcvbuf_errors: crate::procstat::udp_rcvbuf_errors().saturating_sub(snmp0),
            generator_limited: (sent as f64) < 0.98 * offered,
            skipped,
            gen_preempted: csw1.1.saturating_sub(csw0.1),
            gen_sleeps: csw1.0.saturating_sub(csw0.0),
        })
    }

    /// Sends packets `next_k..upto`.
    fn send_until(&mut self, upto: u64) {
        let n = self.streams.len() as u64;
        let mut cur_sock = usize::MAX;
        while self.next_k < upto {
            let k = self.next_k;
            let si = self.order[(k % n) as usize] as usize;
            let st = &mut self.streams[si];
            if !self.tx.is_empty() && (st.tx_sock != cur_sock || self.tx.is_full()) {
                let fd = self.socks[cur_sock].as_raw_fd();
                let q = self.tx.len();
                self.send_errors += (q - self.tx.send(fd)) as u64;
            }
            cur_sock = st.tx_sock;
            let slot = self.tx.next_slot();
            let j = k / n;
            payload::fill(slot, st.ssrc, j, si as u32, k, sys::monotonic_ns());
            let len = match st.tx.as_mut() {
                Some(ctx) => match ctx.protect_rtp(slot, PACKET_LEN) {
                    Ok(len) => len,
                    Err(_) => {
                        self.send_errors += 1;
                        self.next_k += 1;
                        continue;
                    }
                },
                None => PACKET_LEN,
            };
            self.tx.push(len, &st.dst);
            self.next_k += 1;
        }
        if !self.tx.is_empty() {
            let fd = self.socks[cur_sock].as_raw_fd();
            let q = self.tx.len();
            self.send_errors += (q - self.tx.send(fd)) as u64;
        }
    }

    fn poll_receive(&mut self, timeout: Duration, meas: &mut Meas) -> std::io::Result<()> {
        let ready = self.epoll.wait(timeout)?;
        for e in 0..ready {
            let sock = self.epoll.token(e) as usize;
            let fd = self.socks[sock].as_raw_fd();
            loop {
                let got = self.rx.recv(fd)?;
                let now = sys::monotonic_ns();
                for i in 0..got {
                    let trunc = self.rx.truncated(i);
                    let (buf, len) = self.rx.datagram_mut(i);
                    if trunc {
                        meas.unmatched += 1;
                        continue;
                    }
                    on_datagram(
                        &mut self.streams,
                        &self.order,
                        &self.rx_candidates[sock],
                        &mut self.scratch,
                        self.ssrc_base,
                        sock,
                        buf,
                        len,
                        now,
                        meas,
                    );
                }
                if got < sys::BATCH {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn on_datagram(
    streams: &mut [StreamState],
    order: &[u32],
    candidates: &[u32],
    scratch: &mut [u8],
    ssrc_base: u32,
    sock: usize,
    buf: &mut [u8],
    len: usize,
    now: u64,
    meas: &mut Meas,
) {
    if len < 12 {
        meas.unmatched += 1;
        return;
    }
    let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let by_ssrc = ssrc.wrapping_sub(ssrc_base) as usize;
    let (si, plain_len) = if by_ssrc < streams.len() && streams[by_ssrc].rx_sock == sock {
        let st = &mut streams[by_ssrc];
        match st.rx.as_mut() {
            None => (by_ssrc, len),
            Some(ctx) => match ctx.unprotect_rtp(buf, len) {
                Ok(l) => (by_ssrc, l),
                Err(SrtpError::Replayed { .. }) => {
                    meas.duplicates += 1;
                    return;
                }
                Err(SrtpError::TooOld { .. }) => {
                    meas.too_old += 1;
                    return;
                }
                Err(_) => {
                    meas.corrupt += 1;
                    return;
                }
            },
        }
    } else if candidates.len() <= 8 {
        // The relay rewrote the SSRC: try the streams this socket receives.
        let mut found = None;
        for &c in candidates {
            let st = &mut streams[c as usize];
            match st.rx.as_mut() {
                None => {
                    found = Some((c as usize, len));
                    break;
                }
                Some(ctx) => {
                    scratch[..len].copy_from_slice(&buf[..len]);
                    if let Ok(l) = ctx.unprotect_rtp(scratch, len) {
                        buf[..l].copy_from_slice(&scratch[..l]);
                        found = Some((c as usize, l));
                        break;
                    }
                }
            }
        }
        match found {
            Some(f) => f,
            None => {
                meas.corrupt += 1;
                return;
            }
        }
    } else {
        meas.unmatched += 1;
        return;
    };
    let Some(p) = payload::parse(&buf[..plain_len]) else {
        meas.corrupt += 1;
        return;
    };
    let n = streams.len() as u64;
    if p.stream as usize != si || order[(p.k % n) as usize] as usize != si {
        meas.corrupt += 1; // decrypted fine but belongs to another stream: misdelivered
        return;
    }
    let st = &mut streams[si];
    let reordered = matches!(st.highest_k, Some(h) if p.k < h);
    if !reordered {
        st.highest_k = Some(p.k);
    }
    if p.k < meas.start_k || p.k >= meas.end_k {
        return; // warmup traffic, or an earlier trial's straggler
    }
    if !meas.mark(p.k) {
        meas.duplicates += 1;
        return;
    }
    meas.received += 1;
    if reordered {
        meas.reordered += 1;
    }
    let _ = meas.hist.record(now.saturating_sub(p.sent_ns).max(1));
}

/// Result of a search for the highest rate within a loss budget.
#[derive(Debug, Clone, Serialize)]
pub struct FindMaxReport {
    /// Highest offered rate that passed (0 when none did).
    pub max_pps: f64,
    /// Loss threshold in percent.
    pub loss_threshold_pct: f64,
    /// True when the search stopped because the generator could not send faster: the
    /// system under test is at least this fast.
    pub generator_limited: bool,
    /// The passing trial at `max_pps`.
    pub best: Option<TrialReport>,
    /// Every trial, in order, with its offered rate and verdict.
    pub trials: Vec<TrialReport>,
}

/// How to search.
#[derive(Debug, Clone, Copy)]
pub struct FindMaxParams {
    /// Loss threshold in percent.
    pub loss_pct: f64,
    /// Optional p99 latency limit in microseconds (a saturated relay that queues instead
    /// of dropping passes a loss-only criterion with seconds of delay).
    pub p99_limit_us: Option<f64>,
    /// First rate tried.
    pub start_rate: f64,
    /// Highest rate tried.
    pub max_rate: f64,
    /// Factor between successive rates.
    pub step: f64,
    /// Per-trial timing (its `rate` is ignored).
    pub trial: TrialParams,
    /// Pause between trials, for queues to empty.
    pub pause: Duration,
}

impl Generator {
    /// Raises the rate by `step` from `start_rate` until a trial fails (loss above the
    /// threshold, or p99 above its limit) or the generator cannot keep up. It never
    /// bisects back down: a relay overloaded once may not recover (rtpengine throttles
    /// sockets whose queue overflowed), so only the first failure is trusted, and the
    /// precision is the step.
    pub fn find_max(
        &mut self,
        p: &FindMaxParams,
        mut on_trial: impl FnMut(&TrialReport, bool),
    ) -> std::io::Result<FindMaxReport> {
        let mut out = FindMaxReport {
            max_pps: 0.0,
            loss_threshold_pct: p.loss_pct,
            generator_limited: false,
            best: None,
            trials: Vec::new(),
        };
        let mut lo = 0.0f64;
        let mut rate = p.start_rate.min(p.max_rate);
        loop {
            let r = self.trial(&TrialParams { rate, ..p.trial })?;
            let within = r.loss_pct <= p.loss_pct
                && p.p99_limit_us.is_none_or(|lim| r.latency_us.p99 <= lim);
            let pass = within && !r.generator_limited;
            on_trial(&r, pass);
            out.trials.push(r.clone());
            if within && r.generator_limited {
                // Cannot offer more: what it did send is a lower bound for the target.
                out.generator_limited = true;
                if r.sent_pps > lo {
                    lo = r.sent_pps;
                    out.best = Some(r);
                }
                break;
            }
            if !pass {
                break;
            }
            lo = rate;
            out.best = Some(r);
            if rate >= p.max_rate {
                break;
            }
            rate = (rate * p.step.max(1.01)).min(p.max_rate);
            std::thread::sleep(p.pause);
        }
        out.max_pps = lo;
        Ok(out)
    }
}
