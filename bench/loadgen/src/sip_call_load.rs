//! Call load (`edgeway-loadgen sip-call`): one process plays both ends of every call.
//! Callers are remote clients, each on its own TLS connection through the edge (they
//! register first, [`crate::sip_register`]); callees are inside phones, each on its own
//! TCP connection registered straight at the registrar (ucm-sim). Caller `i` always calls
//! callee `i`, so the two SDP exchanges of one call meet by index, never by Call-ID (which
//! a B2BUA changes).
//!
//! Calls are placed at `rate` per second on free callers (so at most `callers` at once),
//! each held `hold` (or until the run ends), then hung up with BYE. With `media`, every
//! caller places one call; once all have been answered or refused, the media engine
//! ([`crate::engine`], on its own pinned thread) sends G.711 20 ms both ways on every
//! established call, each direction protected with the key its sender put in SDP and
//! checked with the key the receiver got, for `media.seconds`; then every call is hung up.
//! The run reports setups/s, INVITE→200 latency, failures by cause, concurrent calls, the
//! media trial (loss, corruption/auth failures, duplicates, one-way latency) and CPU per
//! named process from /proc.
//!
//! Driven by [`run`] on the calling thread (a current-thread tokio runtime, one task per
//! caller and callee); this module is only sockets, TLS, pacing and counting.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use edgeway_flowtable::unix_ms;
use edgeway_sip::{Frame, FramerError, Message, ParseLimits, Request, StreamFramer};
use edgeway_srtp::SrtpProfile;
use hdrhistogram::Histogram;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_rustls::TlsConnector;

use crate::engine::{Generator, Latency, Options, TrialParams, TrialReport};
use crate::procstat::process_cpu_ns;
use crate::scenario::{Scenario, Stream};
use crate::sip_call::{
    CallError, Callee, CalleeEvent, CallerSetup, CallerStep, MediaEndpoint, OutgoingCall,
};
use crate::sip_load::{histogram, micros, ClientFailure as Failure};
use crate::sip_register::{Identity, RegisterClient, Step};

/// Errors that stop a run (per-call problems are counted instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallLoadError {
    /// The runtime could not be built.
    #[error("tokio runtime: {0}")]
    Runtime(io::Error),
    /// A parameter is out of range.
    #[error("invalid parameter: {0}")]
    Parameter(String),
    /// A media socket could not be bound.
    #[error("media socket on {ip}: {source}")]
    MediaSocket {
        /// The address asked for.
        ip: IpAddr,
        /// The cause.
        source: io::Error,
    },
}

/// The media trial of a `media` run.
#[derive(Debug, Clone)]
pub struct MediaParams {
    /// Measured seconds of media.
    pub seconds: Duration,
    /// Unmeasured media before (latching, pinholes).
    pub warmup: Duration,
    /// Wait for stragglers after sending.
    pub drain: Duration,
    /// CPU the media thread is pinned to.
    pub cpu: Option<usize>,
    /// SO_RCVBUF/SO_SNDBUF of each media socket.
    pub sock_buf: usize,
}

/// What one run does.
#[derive(Debug, Clone)]
pub struct CallLoadParams {
    /// The edge's SIP/TLS listener (callers).
    pub edge: SocketAddr,
    /// Name for SNI and the edge certificate's check.
    pub server_name: ServerName<'static>,
    /// TLS client configuration ([`crate::sip_load::client_config`]).
    pub tls: Arc<ClientConfig>,
    /// The registrar's SIP/TCP listener (callees).
    pub registrar: SocketAddr,
    /// Callers, and as many callees: the most calls at once.
    pub callers: usize,
    /// Index of the first caller user (`<user_prefix><index>`).
    pub first_caller: usize,
    /// Index of the first callee user.
    pub first_callee: usize,
    /// Minimum digits of user numbers, zero-padded.
    pub user_digits: usize,
    /// User name prefix.
    pub user_prefix: String,
    /// Password prefix (`<password_prefix><index>`).
    pub password_prefix: String,
    /// Domain of every address of record.
    pub domain: String,
    /// New calls per second.
    pub rate: f64,
    /// Hold each call this long (None: until the run ends).
    pub hold: Option<Duration>,
    /// Without media: how long calls are placed.
    pub duration: Duration,
    /// Place one call per caller and run media on all of them.
    pub media: Option<MediaParams>,
    /// The callers' SRTP suite (`None`: plain RTP offers, which the core refuses).
    pub suite: Option<SrtpProfile>,
    /// Address the media sockets bind to.
    pub media_ip: IpAddr,
    /// The phones' network namespace (`/run/netns/NAME`): their SIP connections to the
    /// registrar and their media sockets are made there; `None`: the generator's own.
    pub phone_netns: Option<PathBuf>,
    /// Address the phones' media sockets bind to (`None`: `media_ip`).
    pub phone_ip: Option<IpAddr>,
    /// Registrations per second while signing every caller and callee in.
    pub register_rate: f64,
    /// Expires asked for.
    pub expires: u32,
    /// Limit for a registration, an INVITE's final response and a BYE's.
    pub timeout: Duration,
    /// Processes whose CPU is reported, by role name.
    pub roles: Vec<(String, u32)>,
    /// Progress line on stderr every second.
    pub progress: bool,
}

impl CallLoadParams {
    fn identity(&self, user: usize) -> Identity {
        Identity::numbered(
            &self.user_prefix,
            &self.password_prefix,
            self.user_digits,
            &self.domain,
            user,
        )
    }
}

/// CPU of one role's process.
#[derive(Debug, Clone, Serialize)]
pub struct RoleCpu {
    /// Role name (`edge-control`, `core-dataplane`, `generator`...).
    pub role: String,
    /// Process id.
    pub pid: u32,
    /// CPU seconds over the whole run (registration included).
    pub cpu_s: Option<f64>,
    /// CPU seconds during the calls phase (first INVITE to last BYE answered).
    pub calls_cpu_s: Option<f64>,
    /// Percent of one core during the measured media (None without media).
    pub media_cpu_pct: Option<f64>,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct CallLoadReport {
    /// `media` or `rate`.
    pub mode: &'static str,
    /// Offered calls per second.
    pub offered_rate: f64,
    /// Callers (and callees) registered, of `callers`.
    pub callers_registered: u64,
    /// Callees registered.
    pub callees_registered: u64,
    /// INVITEs sent.
    pub attempted: u64,
    /// Calls answered 200 with usable SDP.
    pub established: u64,
    /// Established calls per second, first INVITE to last 200 (media mode) or over the
    /// placing window (rate mode).
    pub setups_per_s: f64,
    /// Seconds from the first INVITE to the last final response.
    pub setup_phase_s: f64,
    /// Arrivals that found no free caller for more than 10 ms.
    pub late_arrivals: u64,
    /// Most calls established at once.
    pub concurrent_peak: u64,
    /// Calls hung up with BYE answered 2xx.
    pub ended_ok: u64,
    /// Failures by cause (`invite-486`, `invite-timeout`, `bye-timeout`, `register-...`).
    pub failures: BTreeMap<String, u64>,
    /// The first message seen for each cause.
    pub failure_examples: BTreeMap<String, String>,
    /// INVITE sent → 200 received.
    pub setup_latency_us: Latency,
    /// BYE sent → 200 received.
    pub bye_latency_us: Latency,
    /// INVITEs the phones answered, ACKs and BYEs they received.
    pub callee_answered: u64,
    /// ACKs the phones received.
    pub callee_acked: u64,
    /// BYEs the phones answered.
    pub callee_ended: u64,
    /// Calls whose media both ends agreed (streams = 2 per call).
    pub media_calls: u64,
    /// Inside legs that got SRTP (the rest got RTP).
    pub inside_srtp_calls: u64,
    /// The media trial (None without media or when no call was established).
    pub media: Option<TrialReport>,
    /// CPU per role, the generator included.
    pub cpu: Vec<RoleCpu>,
    /// The window `media_cpu_pct` covers (warm-up over → the trial's drain done) in Unix ms, so
    /// counters sampled outside the generator (per-CPU time, XDP program statistics) can be
    /// cut to the same window. None without media.
    pub media_window_unix_ms: Option<(u64, u64)>,
}

/// Counters shared by the tasks (one thread: `RefCell`).
struct Stats {
    callers_registered: u64,
    callees_registered: u64,
    attempted: u64,
    established: u64,
    final_responses: u64,
    ended_ok: u64,
    calls_done: u64,
    late: u64,
    concurrent: u64,
    concurrent_peak: u64,
    first_invite: Option<Instant>,
    last_final: Option<Instant>,
    callee_answered: u64,
    callee_acked: u64,
    callee_ended: u64,
    failures: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
    setup: Histogram<u64>,
    bye: Histogram<u64>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            callers_registered: 0,
            callees_registered: 0,
            attempted: 0,
            established: 0,
            final_responses: 0,
            ended_ok: 0,
            calls_done: 0,
            late: 0,
            concurrent: 0,
            concurrent_peak: 0,
            first_invite: None,
            last_final: None,
            callee_answered: 0,
            callee_acked: 0,
            callee_ended: 0,
            failures: BTreeMap::new(),
            examples: BTreeMap::new(),
            setup: histogram(),
            bye: histogram(),
        }
    }

    fn fail(&mut self, prefix: &str, f: &Failure) {
        let label = format!("{prefix}{}", f.label());
        *self.failures.entry(label.clone()).or_default() += 1;
        self.examples.entry(label).or_insert_with(|| f.to_string());
    }
}

/// The media both ends of call `i` agreed.
#[derive(Debug, Clone, Default)]
struct CallMedia {
    /// The caller's own key, and the core's answer (edge address, key towards the caller).
    outside: Option<(Option<edgeway_srtp::sdes::CryptoAttribute>, MediaEndpoint)>,
    /// The core's inside offer (its address, key towards the phone) and the phone's key.
    inside: Option<(MediaEndpoint, Option<edgeway_srtp::sdes::CryptoAttribute>)>,
}

/// Everything the tasks share.
struct Shared {
    params: CallLoadParams,
    stats: RefCell<Stats>,
    media: RefCell<Vec<CallMedia>>,
    /// Callers registered and not in a call.
    free: RefCell<VecDeque<usize>>,
    freed: Notify,
    /// Something the main task waits for changed (a final response, a call done).
    progress_made: Notify,
    live: Cell<usize>,
}

/// One SIP connection (TLS or TCP) and its framer.
struct SipConn<S> {
    io: S,
    framer: StreamFramer,
    read_buf: Box<[u8]>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SipConn<S> {
    fn new(io: S) -> Self {
        SipConn {
            io,
            framer: StreamFramer::new(ParseLimits::default()),
            read_buf: vec![0; 4096].into_boxed_slice(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// The next request or response, answering keep-alive pings on the way; cancel-safe
    /// (a partial frame stays in the framer).
    async fn next_message(&mut self) -> Result<Message, Failure> {
        loop {
            while let Some(frame) = self.framer.poll_frame() {
                match frame {
                    Frame::Message(m) => return Ok(m),
                    Frame::Ping => self.send(b"\r\n").await?,
                    Frame::Pong => {}
                    Frame::Invalid(bad) => {
                        return Err(FramerError::Message(bad.error().clone()).into())
                    }
                }
            }
            let n = self.io.read(&mut self.read_buf).await?;
            if n == 0 {
                return Err(Failure::Closed);
            }
            self.framer.handle_data(&self.read_buf[..n])?;
        }
    }

    /// Registers `client` (digest, 423), answering whatever else arrives meanwhile.
    async fn register(
        &mut self,
        client: &mut RegisterClient,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let first = client.start(&mut rand::thread_rng())?;
        self.send(&first).await?;
        loop {
            let m = timeout_at(deadline, self.next_message())
                .await
                .map_err(|_| Failure::Timeout)??;
            match m {
                Message::Response(r) => {
                    match client.handle_response(&r, &mut rand::thread_rng())? {
                        Step::Send(next) => self.send(&next).await?,
                        Step::Wait => {}
                        Step::Registered { .. } => return Ok(()),
                    }
                }
                Message::Request(req) => self.answer_stray(&req).await?,
            }
        }
    }

    async fn answer_stray(&mut self, req: &Request) -> Result<(), Failure> {
        if let Some(answer) = RegisterClient::answer_request(req) {
            self.send(&answer).await?;
        }
        Ok(())
    }
}

/// Decrements the live-task count however a task ends.
struct LiveGuard<'a>(&'a Shared);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.live.set(self.0.live.get().saturating_sub(1));
        self.0.progress_made.notify_waiters();
    }
}

/// Binds `n` UDP sockets on even ports (RTP, RFC 3550) of `ip`.
fn media_sockets(ip: IpAddr, n: usize) -> Result<Vec<UdpSocket>, CallLoadError> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let s = UdpSocket::bind(SocketAddr::new(ip, 0))
            .map_err(|source| CallLoadError::MediaSocket { ip, source })?;
        let port = s
            .local_addr()
            .map_err(|source| CallLoadError::MediaSocket { ip, source })?
            .port();
        if port % 2 == 0 {
            out.push(s);
        }
    }
    Ok(out)
}

/// A phone's TCP connection to the registrar, from the phones' namespace when there is one.
async fn phone_connect(netns: Option<&Path>, to: SocketAddr) -> io::Result<TcpStream> {
    let Some(ns) = netns else {
        return TcpStream::connect(to).await;
    };
    let sock = crate::sys::in_netns(ns, || {
        socket2::Socket::new(
            socket2::Domain::for_address(to),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
    })?;
    sock.set_nonblocking(true)?;
    tokio::net::TcpSocket::from_std_stream(sock.into())
        .connect(to)
        .await
}

async fn callee_task(
    shared: Rc<Shared>,
    index: usize,
    media: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let _live = LiveGuard(&shared);
    let p = &shared.params;
    let deadline = Instant::now() + p.timeout;
    let registered = async {
        let tcp = timeout_at(
            deadline,
            phone_connect(p.phone_netns.as_deref(), p.registrar),
        )
        .await
        .map_err(|_| Failure::Timeout)?
        .map_err(Failure::Connect)?;
        tcp.set_nodelay(true).map_err(Failure::Connect)?;
        let local = tcp.local_addr()?;
        let mut conn = SipConn::new(tcp);
        let identity = p.identity(p.first_callee + index);
        let user = identity.user.clone();
        let mut client =
            RegisterClient::new(identity, local, p.expires, &mut rand::thread_rng()).over_tcp();
        conn.register(&mut client, deadline).await?;
        Ok::<_, Failure>((conn, Callee::new(user, local, media)))
    };
    let (mut conn, mut callee) = match registered.await {
        Ok(ok) => {
            shared.stats.borrow_mut().callees_registered += 1;
            ok
        }
        Err(e) => {
            shared.stats.borrow_mut().fail("register-callee-", &e);
            return;
        }
    };
    shared.progress_made.notify_waiters();
    let mut rng = rand::rngs::OsRng;
    loop {
        let m = tokio::select! {
            _ = stop.changed() => break,
            m = conn.next_message() => m,
        };
        let req = match m {
            Ok(Message::Request(req)) => req,
            Ok(Message::Response(_)) => continue,
            Err(e) => {
                if !*stop.borrow() {
                    shared.stats.borrow_mut().fail("callee-connection-", &e);
                }
                break;
            }
        };
        let step = callee.handle_request(&req, &mut rng);
        if let Some(event) = step.event {
            let mut st = shared.stats.borrow_mut();
            match event {
                CalleeEvent::Answered { far, own, .. } => {
                    st.callee_answered += 1;
                    if let Some(m) = shared.media.borrow_mut().get_mut(index) {
                        m.inside = Some((far, own));
                    }
                }
                CalleeEvent::Refused { error } => st.fail("callee-", &Failure::Call(error)),
                CalleeEvent::Acked { .. } => st.callee_acked += 1,
                CalleeEvent::Ended { .. } => st.callee_ended += 1,
            }
        }
        if let Some(reply) = step.reply {
            if conn.send(&reply).await.is_err() {
                break;
            }
        }
    }
}

/// What a caller is told to do.
enum CallerCommand {
    /// Place a call that was due at this instant.
    Place(Instant),
}

/// One placed call, INVITE to BYE's answer. `phase` says where a failure happened
/// (`invite-` until the final response, `hold-`, then `bye-`).
async fn place_call<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    conn: &mut SipConn<S>,
    index: usize,
    local: SocketAddr,
    media: SocketAddr,
    hangup: &mut watch::Receiver<bool>,
    phase: &mut &'static str,
) -> Result<(), Failure> {
    *phase = "invite-";
    let p = &shared.params;
    let setup = CallerSetup {
        user: p.identity(p.first_caller + index).user,
        callee: p.identity(p.first_callee + index).user,
        domain: p.domain.clone(),
        local,
        media,
        suite: p.suite,
    };
    let mut rng = rand::rngs::OsRng;
    let (mut call, invite) = OutgoingCall::new(&setup, &mut rng)?;
    let sent = Instant::now();
    {
        let mut st = shared.stats.borrow_mut();
        st.attempted += 1;
        st.first_invite.get_or_insert(sent);
    }
    conn.send(&invite).await?;
    let deadline = sent + p.timeout;
    let answered = loop {
        let m = match timeout_at(deadline, conn.next_message()).await {
            Ok(m) => m?,
            Err(_) => return Err(Failure::Timeout),
        };
        let step = match m {
            Message::Response(r) => call.handle_response(&r, &mut rng)?,
            Message::Request(req) => match call.handle_request(&req) {
                Some(step) => step,
                None => {
                    conn.answer_stray(&req).await?;
                    continue;
                }
            },
        };
        match step {
            CallerStep::Wait => {}
            CallerStep::Send(b) => conn.send(&b).await?,
            CallerStep::Answered { ack, far } => {
                conn.send(&ack).await?;
                break far;
            }
            CallerStep::Refused { ack, error } => {
                conn.send(&ack).await?;
                return Err(error.into());
            }
            CallerStep::Ended { reply } => {
                if let Some(r) = reply {
                    conn.send(&r).await?;
                }
                return Err(Failure::Closed);
            }
        }
    };
    let now = Instant::now();
    let answered_ok = answered.is_ok();
    {
        let mut st = shared.stats.borrow_mut();
        st.setup.saturating_record(micros(now - sent));
        if answered_ok {
            st.established += 1;
            st.concurrent += 1;
            st.concurrent_peak = st.concurrent_peak.max(st.concurrent);
        }
    }
    let _concurrent = ConcurrentGuard(shared, answered_ok);
    match answered {
        Ok(far) => {
            if let Some(m) = shared.media.borrow_mut().get_mut(index) {
                m.outside = Some((call.own_crypto().cloned(), far));
            }
        }
        Err(e) => shared.stats.borrow_mut().fail("answer-", &Failure::Call(e)),
    }
    final_response_seen(shared);
    *phase = "hold-";
    if answered_ok {
        // Hold: until the hold time is over or the run hangs up, answering what arrives.
        let hold_end = p.hold.map(|h| now + h);
        loop {
            if *hangup.borrow() {
                break;
            }
            let far = Instant::now() + Duration::from_secs(365 * 86_400);
            tokio::select! {
                _ = hangup.changed() => break,
                _ = sleep_until(hold_end.unwrap_or(far)), if hold_end.is_some() => break,
                m = conn.next_message() => match m? {
                    Message::Request(req) => match call.handle_request(&req) {
                        Some(CallerStep::Ended { reply }) => {
                            if let Some(r) = reply {
                                conn.send(&r).await?;
                            }
                            return Err(CallError::Status {
                                method: "BYE",
                                status: 0,
                                reason: "hung up by the far side".into(),
                            }
                            .into());
                        }
                        Some(CallerStep::Send(b)) => conn.send(&b).await?,
                        _ => conn.answer_stray(&req).await?,
                    },
                    Message::Response(r) => {
                        if let CallerStep::Send(b) = call.handle_response(&r, &mut rng)? {
                            conn.send(&b).await?;
                        }
                    }
                },
            }
        }
    }
    *phase = "bye-";
    let bye = call.hang_up(&mut rng)?;
    let bye_sent = Instant::now();
    conn.send(&bye).await?;
    let deadline = bye_sent + p.timeout;
    loop {
        let m = timeout_at(deadline, conn.next_message())
            .await
            .map_err(|_| Failure::Timeout)??;
        let step = match m {
            Message::Response(r) => call.handle_response(&r, &mut rng)?,
            Message::Request(req) => {
                conn.answer_stray(&req).await?;
                continue;
            }
        };
        if let CallerStep::Ended { .. } = step {
            let mut st = shared.stats.borrow_mut();
            st.ended_ok += 1;
            st.bye.saturating_record(micros(bye_sent.elapsed()));
            return Ok(());
        }
    }
}

/// Counts an established call out of `concurrent` however the call ends.
struct ConcurrentGuard<'a>(&'a Shared, bool);

impl Drop for ConcurrentGuard<'_> {
    fn drop(&mut self) {
        if self.1 {
            let mut st = self.0.stats.borrow_mut();
            st.concurrent = st.concurrent.saturating_sub(1);
        }
    }
}

fn final_response_seen(shared: &Shared) {
    let mut st = shared.stats.borrow_mut();
    st.final_responses += 1;
    st.last_final = Some(Instant::now());
    drop(st);
    shared.progress_made.notify_waiters();
}

async fn caller_task(
    shared: Rc<Shared>,
    connector: TlsConnector,
    index: usize,
    media: SocketAddr,
    mut commands: mpsc::UnboundedReceiver<CallerCommand>,
    mut stop: watch::Receiver<bool>,
    mut hangup: watch::Receiver<bool>,
) {
    let _live = LiveGuard(&shared);
    let p = &shared.params;
    let deadline = Instant::now() + p.timeout;
    let registered = async {
        let tcp = timeout_at(deadline, TcpStream::connect(p.edge))
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(Failure::Connect)?;
        tcp.set_nodelay(true).map_err(Failure::Connect)?;
        let local = tcp.local_addr()?;
        let tls = timeout_at(deadline, connector.connect(p.server_name.clone(), tcp))
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(Failure::Handshake)?;
        let mut conn = SipConn::new(tls);
        let mut client = RegisterClient::new(
            p.identity(p.first_caller + index),
            local,
            p.expires,
            &mut rand::thread_rng(),
        );
        conn.register(&mut client, deadline).await?;
        Ok::<_, Failure>((conn, local))
    };
    let (mut conn, local) = match registered.await {
        Ok(ok) => {
            shared.stats.borrow_mut().callers_registered += 1;
            ok
        }
        Err(e) => {
            shared.stats.borrow_mut().fail("register-caller-", &e);
            return;
        }
    };
    shared.free.borrow_mut().push_back(index);
    shared.freed.notify_one();
    shared.progress_made.notify_waiters();
    loop {
        let cmd = tokio::select! {
            _ = stop.changed() => break,
            c = commands.recv() => c,
            m = conn.next_message() => {
                match m {
                    Ok(Message::Request(req)) => {
                        if conn.answer_stray(&req).await.is_err() {
                            break;
                        }
                    }
                    Ok(Message::Response(_)) => {}
                    Err(e) => {
                        shared.stats.borrow_mut().fail("caller-connection-", &e);
                        break;
                    }
                }
                continue;
            }
        };
        let Some(CallerCommand::Place(due)) = cmd else {
            break;
        };
        if Instant::now() > due + Duration::from_millis(10) {
            shared.stats.borrow_mut().late += 1;
        }
        let mut phase = "invite-";
        let outcome = place_call(
            &shared,
            &mut conn,
            index,
            local,
            media,
            &mut hangup,
            &mut phase,
        )
        .await;
        let broken = matches!(
            outcome,
            Err(Failure::Closed | Failure::Io(_) | Failure::Framing(_))
        );
        if let Err(e) = &outcome {
            // Status labels name their method already (`invite-486`, `bye-481`).
            let prefix = if matches!(e, Failure::Call(CallError::Status { .. })) {
                ""
            } else {
                phase
            };
            shared.stats.borrow_mut().fail(prefix, e);
            if phase == "invite-" {
                // Refused or never answered: the media phase must not wait for it.
                final_response_seen(&shared);
            }
        }
        shared.stats.borrow_mut().calls_done += 1;
        shared.progress_made.notify_waiters();
        if broken {
            break;
        }
        shared.free.borrow_mut().push_back(index);
        shared.freed.notify_one();
    }
    let _ = conn.io.shutdown().await;
}

fn check(p: &CallLoadParams) -> Result<(), CallLoadError> {
    let bad = |m: &str| Err(CallLoadError::Parameter(m.into()));
    if p.callers == 0 {
        return bad("--callers must be at least 1");
    }
    if !(p.rate > 0.0 && p.rate.is_finite()) {
        return bad("--rate must be a finite number above 0");
    }
    if !(p.register_rate > 0.0 && p.register_rate.is_finite()) {
        return bad("--register-rate must be a finite number above 0");
    }
    if p.media.is_some() && p.hold.is_some() {
        return bad("--media holds every call for the media trial: leave --hold out");
    }
    Ok(())
}

/// Runs one call load run on the calling thread (pin it first) and reports it.
pub fn run(params: CallLoadParams) -> Result<CallLoadReport, CallLoadError> {
    check(&params)?;
    crate::sys::raise_nofile_limit();
    let n = params.callers;
    let sockets = media_sockets(params.media_ip, n)?;
    let phone_ip = params.phone_ip.unwrap_or(params.media_ip);
    let callee_sockets =
        match &params.phone_netns {
            None => media_sockets(phone_ip, n)?,
            Some(ns) => crate::sys::in_netns(ns, || Ok(media_sockets(phone_ip, n))).map_err(
                |source| CallLoadError::MediaSocket {
                    ip: phone_ip,
                    source,
                },
            )??,
        };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CallLoadError::Runtime)?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&runtime, drive(params, sockets, callee_sockets)))
}

/// CPU ns of every role at one moment.
fn cpu_sample(pids: &[u32]) -> Vec<Option<u64>> {
    pids.iter().map(|&p| process_cpu_ns(p)).collect()
}

async fn wait_until(shared: &Shared, deadline: Instant, mut done: impl FnMut(&Shared) -> bool) {
    while !done(shared) {
        let notified = shared.progress_made.notified();
        if done(shared) || timeout_at(deadline, notified).await.is_err() {
            return;
        }
    }
}

async fn drive(
    params: CallLoadParams,
    caller_sockets: Vec<UdpSocket>,
    callee_sockets: Vec<UdpSocket>,
) -> CallLoadReport {
    let n = params.callers;
    let shared = Rc::new(Shared {
        stats: RefCell::new(Stats::new()),
        media: RefCell::new(vec![CallMedia::default(); n]),
        free: RefCell::new(VecDeque::new()),
        freed: Notify::new(),
        progress_made: Notify::new(),
        live: Cell::new(0),
        params,
    });
    let p = &shared.params;
    let mut pids: Vec<u32> = p.roles.iter().map(|(_, pid)| *pid).collect();
    pids.push(std::process::id());
    let cpu_start = cpu_sample(&pids);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (hangup_tx, hangup_rx) = watch::channel(false);
    if p.progress {
        tokio::task::spawn_local(progress(shared.clone()));
    }
    let addr = |s: &UdpSocket| {
        s.local_addr()
            .unwrap_or_else(|_| SocketAddr::new(p.media_ip, 0))
    };
    // Sign everybody in: callees first (they must be reachable), then callers.
    let t0 = Instant::now();
    for (i, s) in callee_sockets.iter().enumerate() {
        sleep_until(t0 + Duration::from_secs_f64(i as f64 / p.register_rate)).await;
        shared.live.set(shared.live.get() + 1);
        tokio::task::spawn_local(callee_task(shared.clone(), i, addr(s), stop_rx.clone()));
    }
    let reg_deadline = Instant::now() + p.timeout;
    wait_until(&shared, reg_deadline, |s| {
        let st = s.stats.borrow();
        st.callees_registered
            + st.failures
                .iter()
                .filter(|(k, _)| k.starts_with("register-callee"))
                .map(|(_, v)| v)
                .sum::<u64>()
            >= n as u64
    })
    .await;
    let connector = TlsConnector::from(p.tls.clone());
    let mut senders = Vec::with_capacity(n);
    let t1 = Instant::now();
    for (i, s) in caller_sockets.iter().enumerate() {
        sleep_until(t1 + Duration::from_secs_f64(i as f64 / p.register_rate)).await;
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        shared.live.set(shared.live.get() + 1);
        tokio::task::spawn_local(caller_task(
            shared.clone(),
            connector.clone(),
            i,
            addr(s),
            rx,
            stop_rx.clone(),
            hangup_rx.clone(),
        ));
    }
    let reg_deadline = Instant::now() + p.timeout;
    wait_until(&shared, reg_deadline, |s| {
        let st = s.stats.borrow();
        st.callers_registered
            + st.failures
                .iter()
                .filter(|(k, _)| k.starts_with("register-caller"))
                .map(|(_, v)| v)
                .sum::<u64>()
            >= n as u64
    })
    .await;
    let callers_ready = shared.stats.borrow().callers_registered as usize;

    // Place calls.
    let cpu_calls = cpu_sample(&pids);
    let start = Instant::now();
    let end = start + p.duration;
    let limit = if p.media.is_some() {
        callers_ready
    } else {
        usize::MAX
    };
    let mut arrivals = 0usize;
    while arrivals < limit {
        let due = start + Duration::from_secs_f64(arrivals as f64 / p.rate);
        if p.media.is_none() && due >= end {
            break;
        }
        sleep_until(due).await;
        let caller = loop {
            if let Some(c) = shared.free.borrow_mut().pop_front() {
                break Some(c);
            }
            let wait_end = if p.media.is_none() {
                end
            } else {
                Instant::now() + p.timeout
            };
            if timeout_at(wait_end, shared.freed.notified()).await.is_err() {
                break None;
            }
        };
        let Some(caller) = caller else { break };
        if senders[caller].send(CallerCommand::Place(due)).is_err() {
            continue;
        }
        arrivals += 1;
    }
    let placed = arrivals as u64;
    // Every placed call answered or refused (or timed out).
    wait_until(
        &shared,
        Instant::now() + p.timeout + Duration::from_secs(1),
        |s| s.stats.borrow().final_responses >= placed,
    )
    .await;
    if p.media.is_none() {
        sleep_until(end).await;
    }
    let setup_window = {
        let st = shared.stats.borrow();
        match (st.first_invite, st.last_final) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => Duration::ZERO,
        }
    };

    // Media on every call both ends agreed.
    let mut media_report = None;
    let mut media_cpu = None;
    let mut media_window = None;
    let mut media_calls = 0u64;
    let mut inside_srtp = 0u64;
    if let Some(mp) = &p.media {
        let mut streams = Vec::new();
        let mut bound = Vec::new();
        let mut caller_sockets: Vec<Option<UdpSocket>> =
            caller_sockets.into_iter().map(Some).collect();
        let mut callee_sockets: Vec<Option<UdpSocket>> =
            callee_sockets.into_iter().map(Some).collect();
        for (i, m) in shared.media.borrow().iter().enumerate() {
            let (Some((caller_key, answer)), Some((offer, phone_key))) = (&m.outside, &m.inside)
            else {
                continue;
            };
            let (Some(cs), Some(ps)) = (caller_sockets[i].take(), callee_sockets[i].take()) else {
                continue;
            };
            let (c_addr, p_addr) = (addr(&cs), addr(&ps));
            media_calls += 1;
            inside_srtp += u64::from(offer.crypto.is_some());
            // Caller -> edge -> core -> phone, and back.
            streams.push(Stream {
                tx_local: c_addr,
                tx_to: answer.addr,
                tx_crypto: caller_key.clone(),
                rx_local: p_addr,
                rx_crypto: offer.crypto.clone(),
            });
            streams.push(Stream {
                tx_local: p_addr,
                tx_to: offer.addr,
                tx_crypto: phone_key.clone(),
                rx_local: c_addr,
                rx_crypto: answer.crypto.clone(),
            });
            bound.push(cs);
            bound.push(ps);
        }
        if !streams.is_empty() {
            let scenario = Scenario {
                streams,
                prime: Vec::new(),
            };
            let trial = TrialParams {
                rate: 50.0 * scenario.streams.len() as f64,
                warmup: mp.warmup,
                duration: mp.seconds,
                drain: mp.drain,
            };
            let opts = Options {
                sock_buf: mp.sock_buf,
                ..Options::default()
            };
            let cpu = mp.cpu;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let before = Rc::new(RefCell::new(None));
            let before_set = before.clone();
            let pids_media = pids.clone();
            let pids_warm = pids.clone();
            // The measured window starts after the warmup: sample CPU then.
            let warm = Instant::now() + mp.warmup;
            tokio::task::spawn_local(async move {
                sleep_until(warm).await;
                *before_set.borrow_mut() =
                    Some((Instant::now(), unix_ms(), cpu_sample(&pids_warm)));
            });
            std::thread::spawn(move || {
                let result = (|| {
                    if let Some(c) = cpu {
                        crate::sys::pin_to_cpu(c).map_err(|e| format!("pinning media: {e}"))?;
                    }
                    let mut gen = Generator::with_sockets(&scenario, opts, bound)
                        .map_err(|e| e.to_string())?;
                    gen.trial(&trial).map_err(|e| e.to_string())
                })();
                let _ = tx.send((Instant::now(), unix_ms(), cpu_sample(&pids_media), result));
            });
            if let Ok((t_end, unix_end, after, result)) = rx.await {
                let b = before.borrow().clone();
                if let Some((t_start, unix_start, before)) = b {
                    // Both samples bound the window: warm-up over → the trial returned (its
                    // drain ends as soon as every packet is in, so it is not a fixed second).
                    let wall = t_end.saturating_duration_since(t_start).as_secs_f64();
                    media_window = Some((unix_start, unix_end));
                    media_cpu = Some(
                        before
                            .iter()
                            .zip(&after)
                            .map(|(a, b)| match (a, b) {
                                (Some(a), Some(b)) if wall > 0.0 => {
                                    Some(100.0 * b.saturating_sub(*a) as f64 / 1e9 / wall)
                                }
                                _ => None,
                            })
                            .collect::<Vec<_>>(),
                    );
                }
                match result {
                    Ok(r) => media_report = Some(r),
                    Err(e) => {
                        let mut st = shared.stats.borrow_mut();
                        *st.failures.entry("media-engine".into()).or_default() += 1;
                        st.examples.entry("media-engine".into()).or_insert(e);
                    }
                }
            }
        }
    }

    // Hang up and wait for the BYEs.
    let _ = hangup_tx.send(true);
    let bye_deadline = Instant::now() + p.timeout + Duration::from_secs(1);
    wait_until(&shared, bye_deadline, |s| {
        let st = s.stats.borrow();
        st.calls_done >= st.attempted
    })
    .await;
    let cpu_calls_end = cpu_sample(&pids);
    let _ = stop_tx.send(true);
    wait_until(&shared, Instant::now() + Duration::from_secs(2), |s| {
        s.live.get() == 0
    })
    .await;
    let cpu_end = cpu_sample(&pids);

    let secs = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
        _ => None,
    };
    let mut names: Vec<String> = p.roles.iter().map(|(r, _)| r.clone()).collect();
    names.push("generator".into());
    let cpu = names
        .into_iter()
        .enumerate()
        .map(|(i, role)| RoleCpu {
            role,
            pid: pids[i],
            cpu_s: secs(cpu_start[i], cpu_end[i]),
            calls_cpu_s: secs(cpu_calls[i], cpu_calls_end[i]),
            media_cpu_pct: media_cpu.as_ref().and_then(|m| m[i]),
        })
        .collect();
    let st = shared.stats.borrow();
    let window = if p.media.is_some() {
        setup_window
    } else {
        p.duration
    };
    CallLoadReport {
        mode: if p.media.is_some() { "media" } else { "rate" },
        offered_rate: p.rate,
        callers_registered: st.callers_registered,
        callees_registered: st.callees_registered,
        attempted: st.attempted,
        established: st.established,
        setups_per_s: st.established as f64 / window.as_secs_f64().max(1e-9),
        setup_phase_s: setup_window.as_secs_f64(),
        late_arrivals: st.late,
        concurrent_peak: st.concurrent_peak,
        ended_ok: st.ended_ok,
        failures: st.failures.clone(),
        failure_examples: st.examples.clone(),
        setup_latency_us: Latency::from_histogram(&st.setup, 1.0),
        bye_latency_us: Latency::from_histogram(&st.bye, 1.0),
        callee_answered: st.callee_answered,
        callee_acked: st.callee_acked,
        callee_ended: st.callee_ended,
        media_calls,
        inside_srtp_calls: inside_srtp,
        media: media_report,
        cpu,
        media_window_unix_ms: media_window,
    }
}

/// One stderr line per second.
async fn progress(shared: Rc<Shared>) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let st = shared.stats.borrow();
        let failed: u64 = st.failures.values().sum();
        eprintln!(
            "t={:.0}s callees={} callers={} attempted={} established={} concurrent={} ended={} failed={}",
            start.elapsed().as_secs_f64(),
            st.callees_registered,
            st.callers_registered,
            st.attempted,
            st.established,
            st.concurrent,
            st.ended_ok,
            failed
        );
    }
}
