//! SIP-over-TLS registration load: many simulated clients, each on its own TLS connection,
//! register (answering the digest challenge), optionally hold their connection with
//! refreshes and keep-alives, and the run reports registrations/s, setup latency (HDR
//! histogram), failures by cause, connections held and CPU.
//!
//! Driven by [`run`], which builds a current-thread tokio runtime on the calling thread
//! (the binary pins that thread first with `--cpu`): one process, one core, one small task
//! per client. The protocol itself is [`crate::sip_register`]'s sans-IO client; this
//! module is only sockets, TLS (rustls on ring), pacing and counting.
//!
//! Two modes: *churn* (default) registers users round-robin at `rate` for `duration`,
//! one fresh connection and full handshake per registration, and closes each after its
//! 200; *hold* registers each of `users` once at `rate` and keeps every connection open
//! until `duration` is over, answering CRLF keep-alive pings (RFC 5626), sending its own
//! when asked, and refreshing before expiry.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use edgeway_sip::{Frame, FramerError, Message, ParseLimits, Response, StreamFramer};
use hdrhistogram::Histogram;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::engine::Latency;
use crate::procstat::process_cpu_ns;
use crate::sip_register::{Identity, RegisterClient, RegisterError, Step};

/// Errors that stop a run before it starts (per-client problems are counted instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SipLoadError {
    /// The CA file holds no usable certificate.
    #[error("CA file: {0}")]
    Ca(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The runtime could not be built.
    #[error("tokio runtime: {0}")]
    Runtime(io::Error),
    /// A parameter is out of range.
    #[error("invalid parameter: {0}")]
    Parameter(String),
}

/// TLS protocol version the clients offer (only that one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsVersion {
    /// `1.2` or `1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

/// A client configuration trusting the CA certificates in `ca_pem`, offering one TLS
/// version. Session resumption is off unless `resume`: every simulated client is its own
/// device, so each connection pays a full handshake as a fresh client would.
pub fn client_config(
    ca_pem: &[u8],
    version: TlsVersion,
    resume: bool,
) -> Result<Arc<ClientConfig>, SipLoadError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| SipLoadError::Ca(format!("bad PEM: {e}")))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(SipLoadError::Ca("no CERTIFICATE block".into()));
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match version {
        TlsVersion::Tls12 => &[&rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// What one run does.
#[derive(Debug, Clone)]
pub struct LoadParams {
    /// The SIP/TLS listener under test.
    pub target: SocketAddr,
    /// Name sent as SNI and checked against the server certificate.
    pub server_name: ServerName<'static>,
    /// TLS client configuration ([`client_config`]).
    pub tls: Arc<ClientConfig>,
    /// Version `tls` offers (for the report).
    pub tls_version: TlsVersion,
    /// Users in the pool: `<user_prefix><first_user + i>` for i in 0..users, the number
    /// zero-padded to `user_digits` (ucm-sim's `--generate-users` makes `user0001`...).
    pub users: usize,
    /// Index of the first user.
    pub first_user: usize,
    /// Minimum digits of the user number (zero-padded), in names and passwords alike.
    pub user_digits: usize,
    /// User name prefix.
    pub user_prefix: String,
    /// Password prefix: user i's password is `<password_prefix><i>` (padded alike).
    pub password_prefix: String,
    /// Domain of every address of record.
    pub domain: String,
    /// New registrations started per second (0: as fast as `concurrency` allows).
    pub rate: f64,
    /// Most registrations in flight (connected, not yet answered 200 or failed).
    pub concurrency: usize,
    /// Hold every registered connection until the end instead of closing it.
    pub hold: bool,
    /// Expires asked for, seconds.
    pub expires: u32,
    /// Re-REGISTER held bindings at `refresh_fraction` of the granted expiry.
    pub refresh: bool,
    /// Fraction of the granted expiry after which a held client refreshes.
    pub refresh_fraction: f64,
    /// Send a CRLF keep-alive ping this often on each held connection (None: only answer).
    pub keepalive: Option<Duration>,
    /// Length of the run, from the first arrival.
    pub duration: Duration,
    /// Limit for one registration (connect, handshake, REGISTER... 200).
    pub timeout: Duration,
    /// Local addresses the clients bind to, round-robin (empty: the kernel chooses).
    pub sources: Vec<IpAddr>,
    /// Remove each held binding (Expires: 0) when the run ends.
    pub unregister: bool,
    /// Processes of the system under test whose CPU use is reported.
    pub sut_pids: Vec<u32>,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

impl LoadParams {
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

/// CPU use of one process over the run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCpu {
    /// Process id.
    pub pid: u32,
    /// Percent of one core (None: the process could not be read at start or end).
    pub cpu_pct: Option<f64>,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// `churn` or `hold`.
    pub mode: &'static str,
    /// TLS version offered.
    pub tls_version: TlsVersion,
    /// Seconds from the first arrival to the end of the run.
    pub elapsed_s: f64,
    /// Offered new registrations per second (0: unpaced).
    pub offered_rate: f64,
    /// Registrations started.
    pub attempted: u64,
    /// Initial registrations that ended in 200 OK (including those answered in the grace
    /// period after the run).
    pub registered: u64,
    /// Registrations answered within the run, per second of the run (in hold mode, when
    /// every user's registration ended within the run, per second until the last did).
    pub registrations_per_s: f64,
    /// Hold mode: seconds until every user's initial registration had ended (None when
    /// some were still in flight at the end).
    pub registration_phase_s: Option<f64>,
    /// Arrivals started more than 10 ms late because `concurrency` registrations were
    /// already in flight (the offered rate was not met).
    pub late_arrivals: u64,
    /// Refreshes answered 200.
    pub refreshes: u64,
    /// Failed registrations and refreshes, and held connections lost, by cause.
    pub failures: BTreeMap<String, u64>,
    /// The first error message seen for each cause.
    pub failure_examples: BTreeMap<String, String>,
    /// Connections held with a binding when the run ended (hold mode).
    pub held_at_end: u64,
    /// Most connections held at once.
    pub held_peak: u64,
    /// CRLF pings answered, sent, and pongs received.
    pub pings_answered: u64,
    /// Pings this side sent (`keepalive`).
    pub pings_sent: u64,
    /// Pongs received for them.
    pub pongs_received: u64,
    /// Requests from the far side answered (OPTIONS, NOTIFY...).
    pub requests_answered: u64,
    /// First REGISTER sent -> 200 OK, challenge round trip included (one sample per
    /// registration).
    pub setup_latency_us: Latency,
    /// TCP connect + TLS handshake.
    pub handshake_latency_us: Latency,
    /// Refresh REGISTER -> 200 OK (one sample per refresh).
    pub refresh_latency_us: Latency,
    /// The generator's own CPU, percent of one core.
    pub gen_cpu_pct: f64,
    /// Each `sut_pids` process's CPU, percent of one core.
    pub sut_cpu: Vec<ProcessCpu>,
    /// The open-file soft limit the run had.
    pub nofile_limit: Option<u64>,
    /// The generator's peak resident memory (VmHWM), KiB: what holding the run's
    /// connections cost on the client side.
    pub gen_peak_rss_kb: Option<u64>,
}

/// Why one client's registration, call or held connection ended badly (shared with
/// [`crate::sip_call_load`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientFailure {
    #[error("TCP connect: {0}")]
    Connect(io::Error),
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
    #[error("no final response within the timeout")]
    Timeout,
    #[error("connection closed by the far side")]
    Closed,
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("framing: {0}")]
    Framing(#[from] FramerError),
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error(transparent)]
    Call(#[from] crate::sip_call::CallError),
}

impl ClientFailure {
    pub(crate) fn label(&self) -> String {
        match self {
            ClientFailure::Connect(_) => "connect".into(),
            ClientFailure::Handshake(_) => "tls-handshake".into(),
            ClientFailure::Timeout => "timeout".into(),
            ClientFailure::Closed => "closed".into(),
            ClientFailure::Io(_) => "io".into(),
            ClientFailure::Framing(_) => "framing".into(),
            ClientFailure::Register(e) => e.label(),
            ClientFailure::Call(e) => e.label(),
        }
    }
}

/// An HDR histogram of microseconds, 1 µs .. 10 min.
pub(crate) fn histogram() -> Histogram<u64> {
    // 3 significant figures; the bounds are valid constants.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
    })
}

/// Counters shared by the tasks of one run (one thread: `RefCell`).
struct Stats {
    attempted: u64,
    registered: u64,
    refreshes: u64,
    late: u64,
    held: u64,
    held_peak: u64,
    ended: u64,
    ended_at_end: Option<u64>,
    last_initial_end: Option<Instant>,
    pings_answered: u64,
    pings_sent: u64,
    pongs: u64,
    requests_answered: u64,
    failures: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
    setup: Histogram<u64>,
    handshake: Histogram<u64>,
    refresh: Histogram<u64>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            attempted: 0,
            registered: 0,
            refreshes: 0,
            late: 0,
            held: 0,
            held_peak: 0,
            ended: 0,
            ended_at_end: None,
            last_initial_end: None,
            pings_answered: 0,
            pings_sent: 0,
            pongs: 0,
            requests_answered: 0,
            failures: BTreeMap::new(),
            examples: BTreeMap::new(),
            setup: histogram(),
            handshake: histogram(),
            refresh: histogram(),
        }
    }

    /// Whether `users` initial registrations had ended when the run did.
    fn ended_by_end(&self, users: u64) -> bool {
        self.ended_at_end.is_some_and(|n| n >= users)
    }

    fn fail(&mut self, prefix: &str, f: &ClientFailure) {
        let label = format!("{prefix}{}", f.label());
        *self.failures.entry(label.clone()).or_default() += 1;
        self.examples.entry(label).or_insert_with(|| f.to_string());
    }
}

/// A duration in whole microseconds, at least 1 (for histograms).
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Everything a client task shares with the others.
struct Shared {
    params: LoadParams,
    connector: TlsConnector,
    stats: RefCell<Stats>,
    live: Cell<usize>,
    all_done: Notify,
}

/// One client's TLS connection and its framer.
struct Connection {
    tls: TlsStream<TcpStream>,
    framer: StreamFramer,
    read_buf: Box<[u8]>,
}

/// Small per-connection read buffer: REGISTER responses are a few hundred bytes and the
/// framer keeps partial messages, so holding 15,000 connections stays cheap.
const READ_BUF: usize = 2048;

impl Connection {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), ClientFailure> {
        self.tls.write_all(bytes).await?;
        self.tls.flush().await?;
        Ok(())
    }

    /// The next frame; cancel-safe (a partial frame stays in the framer).
    async fn next_frame(&mut self) -> Result<Frame, ClientFailure> {
        loop {
            if let Some(f) = self.framer.poll_frame() {
                return Ok(f);
            }
            let n = self.tls.read(&mut self.read_buf).await?;
            if n == 0 {
                return Err(ClientFailure::Closed);
            }
            self.framer.handle_data(&self.read_buf[..n])?;
        }
    }

    /// Answers what the far side may send at any time; returns a response for the caller.
    async fn take_frame(
        &mut self,
        frame: Frame,
        shared: &Shared,
    ) -> Result<Option<Response>, ClientFailure> {
        match frame {
            Frame::Message(Message::Response(r)) => Ok(Some(r)),
            Frame::Message(Message::Request(req)) => {
                if let Some(answer) = RegisterClient::answer_request(&req) {
                    self.send(&answer).await?;
                    shared.stats.borrow_mut().requests_answered += 1;
                }
                Ok(None)
            }
            Frame::Ping => {
                self.send(b"\r\n").await?;
                shared.stats.borrow_mut().pings_answered += 1;
                Ok(None)
            }
            Frame::Pong => {
                shared.stats.borrow_mut().pongs += 1;
                Ok(None)
            }
            // Before edgeway-sip's Frame::Invalid this was a framing error: keep failing.
            Frame::Invalid(bad) => Err(FramerError::Message(bad.error().clone()).into()),
        }
    }

    /// Sends `first` and follows the registration until 200 (the granted expiry) or failure.
    async fn register(
        &mut self,
        client: &mut RegisterClient,
        first: Vec<u8>,
        deadline: Instant,
        shared: &Shared,
    ) -> Result<u32, ClientFailure> {
        self.send(&first).await?;
        loop {
            let frame = timeout_at(deadline, self.next_frame())
                .await
                .map_err(|_| ClientFailure::Timeout)??;
            let Some(resp) = self.take_frame(frame, shared).await? else {
                continue;
            };
            match client.handle_response(&resp, &mut rand::thread_rng())? {
                Step::Send(next) => self.send(&next).await?,
                Step::Wait => {}
                Step::Registered { expires } => return Ok(expires),
            }
        }
    }
}

async fn connect(shared: &Shared, index: usize) -> Result<Connection, ClientFailure> {
    let p = &shared.params;
    let tcp = if p.sources.is_empty() {
        TcpStream::connect(p.target)
            .await
            .map_err(ClientFailure::Connect)?
    } else {
        let source = p.sources[index % p.sources.len()];
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(ClientFailure::Connect)?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(ClientFailure::Connect)?;
        socket
            .connect(p.target)
            .await
            .map_err(ClientFailure::Connect)?
    };
    // Each REGISTER is one small write: waiting for more to coalesce only adds latency.
    tcp.set_nodelay(true).map_err(ClientFailure::Connect)?;
    let tls = shared
        .connector
        .connect(p.server_name.clone(), tcp)
        .await
        .map_err(ClientFailure::Handshake)?;
    Ok(Connection {
        tls,
        framer: StreamFramer::new(ParseLimits::default()),
        read_buf: vec![0; READ_BUF].into_boxed_slice(),
    })
}

/// Decrements the live-task count when a client task ends, however it ends.
struct LiveGuard<'a>(&'a Shared);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        let live = self.0.live.get().saturating_sub(1);
        self.0.live.set(live);
        if live == 0 {
            self.0.all_done.notify_waiters();
        }
    }
}

/// What woke a held client.
enum HeldEvent {
    Stop,
    Frame(Result<Frame, ClientFailure>),
    Refresh,
    Ping,
}

async fn client_task(
    shared: Rc<Shared>,
    index: usize,
    user: usize,
    permit: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    let _live = LiveGuard(&shared);
    let p = &shared.params;
    let started = Instant::now();
    let deadline = started + p.timeout;
    let initial = async {
        let mut conn = timeout_at(deadline, connect(&shared, index))
            .await
            .map_err(|_| ClientFailure::Timeout)??;
        let handshake_done = Instant::now();
        let local = conn.tls.get_ref().0.local_addr()?;
        let mut client =
            RegisterClient::new(p.identity(user), local, p.expires, &mut rand::thread_rng());
        let first = client.start(&mut rand::thread_rng())?;
        let expires = conn.register(&mut client, first, deadline, &shared).await?;
        let done = Instant::now();
        let mut st = shared.stats.borrow_mut();
        st.handshake
            .saturating_record(micros(handshake_done - started));
        st.setup.saturating_record(micros(done - handshake_done));
        Ok::<_, ClientFailure>((conn, client, expires))
    };
    let outcome = initial.await;
    drop(permit);
    let (mut conn, mut client, mut expires) = {
        let mut st = shared.stats.borrow_mut();
        st.ended += 1;
        st.last_initial_end = Some(Instant::now());
        match outcome {
            Ok(ok) => {
                st.registered += 1;
                ok
            }
            Err(e) => {
                st.fail("", &e);
                return;
            }
        }
    };
    if !p.hold {
        let _ = conn.tls.shutdown().await;
        return;
    }
    {
        let mut st = shared.stats.borrow_mut();
        st.held += 1;
        st.held_peak = st.held_peak.max(st.held);
    }
    let far = Instant::now() + Duration::from_secs(365 * 86_400);
    let refresh_after =
        |expires: u32| Duration::from_secs_f64(f64::from(expires.max(1)) * p.refresh_fraction);
    let mut next_refresh = Instant::now() + refresh_after(expires);
    let mut next_ping = p.keepalive.map_or(far, |k| Instant::now() + k);
    let mut lost = None;
    while !*stop.borrow() {
        let event = tokio::select! {
            _ = stop.changed() => HeldEvent::Stop,
            f = conn.next_frame() => HeldEvent::Frame(f),
            _ = sleep_until(next_refresh), if p.refresh => HeldEvent::Refresh,
            _ = sleep_until(next_ping), if p.keepalive.is_some() => HeldEvent::Ping,
        };
        let result = match event {
            HeldEvent::Stop => break,
            HeldEvent::Frame(f) => match f {
                // A response to nothing in flight (a late retransmission) is dropped.
                Ok(frame) => conn.take_frame(frame, &shared).await.map(drop),
                Err(e) => Err(e),
            },
            HeldEvent::Refresh => {
                let t = Instant::now();
                match client.start(&mut rand::thread_rng()) {
                    Ok(first) => conn
                        .register(&mut client, first, t + p.timeout, &shared)
                        .await
                        .map(|granted| {
                            expires = granted;
                            next_refresh = Instant::now() + refresh_after(granted);
                            let mut st = shared.stats.borrow_mut();
                            st.refreshes += 1;
                            st.refresh.saturating_record(micros(t.elapsed()));
                        }),
                    Err(e) => Err(e.into()),
                }
            }
            HeldEvent::Ping => {
                next_ping += p.keepalive.unwrap_or(Duration::MAX / 4);
                conn.framer.ping_sent();
                shared.stats.borrow_mut().pings_sent += 1;
                conn.send(b"\r\n\r\n").await
            }
        };
        if let Err(e) = result {
            lost = Some(e);
            break;
        }
    }
    match &lost {
        Some(e) => shared.stats.borrow_mut().fail("held-", e),
        None if p.unregister => {
            if let Ok(first) = client.start_unregister(&mut rand::thread_rng()) {
                let deadline = Instant::now() + p.timeout;
                if let Err(e) = conn.register(&mut client, first, deadline, &shared).await {
                    shared.stats.borrow_mut().fail("unregister-", &e);
                }
            }
        }
        None => {}
    }
    shared.stats.borrow_mut().held -= 1;
    let _ = conn.tls.shutdown().await;
}

/// This process's peak resident set (VmHWM) in KiB, from /proc/self/status.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The open-file soft limit, from /proc/self/limits.
fn nofile_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_ascii_whitespace().nth(3)?.parse().ok()
}

fn check(params: &LoadParams) -> Result<(), SipLoadError> {
    let bad = |m: &str| Err(SipLoadError::Parameter(m.into()));
    if params.users == 0 {
        return bad("--users must be at least 1");
    }
    if params.concurrency == 0 {
        return bad("--concurrency must be at least 1");
    }
    if !(params.rate >= 0.0 && params.rate.is_finite()) {
        return bad("--rate must be a finite number >= 0");
    }
    if !(params.refresh_fraction > 0.0 && params.refresh_fraction < 1.0) {
        return bad("--refresh-at must be between 0 and 1");
    }
    Ok(())
}

/// Runs one load run on the calling thread and reports it. Per-client errors are
/// counted in the report; only configuration problems are errors.
pub fn run(params: LoadParams) -> Result<LoadReport, SipLoadError> {
    check(&params)?;
    let nofile = nofile_soft_limit();
    if let Some(limit) = nofile {
        let needed = if params.hold {
            params.users
        } else {
            params.concurrency
        } as u64
            + 32;
        if limit < needed {
            eprintln!(
                "warning: open-file limit {limit} is below the {needed} this run needs; \
                 connections past it fail with 'connect' (Too many open files)"
            );
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SipLoadError::Runtime)?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, drive(params, nofile));
    Ok(report)
}

async fn drive(params: LoadParams, nofile: Option<u64>) -> LoadReport {
    let shared = Rc::new(Shared {
        connector: TlsConnector::from(params.tls.clone()),
        stats: RefCell::new(Stats::new()),
        live: Cell::new(0),
        all_done: Notify::new(),
        params,
    });
    let p = &shared.params;
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(p.concurrency));
    let my_pid = std::process::id();
    let cpu_start = process_cpu_ns(my_pid);
    let sut_start: Vec<Option<u64>> = p.sut_pids.iter().map(|&q| process_cpu_ns(q)).collect();
    let start = Instant::now();
    let end = start + p.duration;
    if p.progress {
        tokio::task::spawn_local(progress(shared.clone(), start));
    }
    let mut arrivals = 0usize;
    loop {
        if p.hold && arrivals >= p.users {
            break;
        }
        let due = if p.rate > 0.0 {
            start + Duration::from_secs_f64(arrivals as f64 / p.rate)
        } else {
            Instant::now()
        };
        if due >= end {
            break;
        }
        sleep_until(due).await;
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = sleep_until(end) => break,
        };
        {
            let mut st = shared.stats.borrow_mut();
            st.attempted += 1;
            if Instant::now() > due + Duration::from_millis(10) {
                st.late += 1;
            }
        }
        let user = p.first_user + arrivals % p.users;
        shared.live.set(shared.live.get() + 1);
        tokio::task::spawn_local(client_task(
            shared.clone(),
            arrivals,
            user,
            permit,
            stop_rx.clone(),
        ));
        arrivals += 1;
    }
    sleep_until(end).await;
    let elapsed = start.elapsed();
    let (held_at_end, registered_by_end, last_end_in_run) = {
        let mut st = shared.stats.borrow_mut();
        st.ended_at_end = Some(st.ended);
        (st.held, st.registered, st.last_initial_end)
    };
    let cpu_end = process_cpu_ns(my_pid);
    let sut_end: Vec<Option<u64>> = p.sut_pids.iter().map(|&q| process_cpu_ns(q)).collect();
    let _ = stop_tx.send(true);
    // Let registrations in flight finish (or time out) and held clients close.
    let grace = Instant::now() + p.timeout + Duration::from_secs(2);
    while shared.live.get() > 0 {
        let notified = shared.all_done.notified();
        if shared.live.get() == 0 || timeout_at(grace, notified).await.is_err() {
            break;
        }
    }
    let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / elapsed.as_nanos() as f64 * 100.0),
        _ => None,
    };
    let st = shared.stats.borrow();
    // Rates count only registrations that ended within the run; those finishing in the
    // grace period after it are in `registered` but not in the rate.
    let all_ended_in_run = st.ended_by_end(p.users as u64);
    let window = match last_end_in_run {
        Some(t) if p.hold && all_ended_in_run => t - start,
        _ => elapsed,
    };
    LoadReport {
        mode: if p.hold { "hold" } else { "churn" },
        tls_version: p.tls_version,
        elapsed_s: elapsed.as_secs_f64(),
        offered_rate: p.rate,
        attempted: st.attempted,
        registered: st.registered,
        registrations_per_s: registered_by_end as f64 / window.as_secs_f64().max(1e-9),
        registration_phase_s: (p.hold && all_ended_in_run).then_some(window.as_secs_f64()),
        late_arrivals: st.late,
        refreshes: st.refreshes,
        failures: st.failures.clone(),
        failure_examples: st.examples.clone(),
        held_at_end,
        held_peak: st.held_peak,
        pings_answered: st.pings_answered,
        pings_sent: st.pings_sent,
        pongs_received: st.pongs,
        requests_answered: st.requests_answered,
        setup_latency_us: Latency::from_histogram(&st.setup, 1.0),
        handshake_latency_us: Latency::from_histogram(&st.handshake, 1.0),
        refresh_latency_us: Latency::from_histogram(&st.refresh, 1.0),
        gen_cpu_pct: pct(cpu_start, cpu_end).unwrap_or(0.0),
        sut_cpu: p
            .sut_pids
            .iter()
            .zip(sut_start.iter().zip(&sut_end))
            .map(|(&pid, (&a, &b))| ProcessCpu {
                pid,
                cpu_pct: pct(a, b),
            })
            .collect(),
        nofile_limit: nofile,
        gen_peak_rss_kb: peak_rss_kb(),
    }
}

/// One stderr line per second; `REGISTRATION_PHASE_DONE` once every hold-mode user's
/// initial registration has ended (scripts wait for it before sampling memory).
async fn progress(shared: Rc<Shared>, start: Instant) {
    let mut announced = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let st = shared.stats.borrow();
        let failed: u64 = st.failures.values().sum();
        eprintln!(
            "t={:.0}s attempted={} registered={} held={} refreshes={} failed={}",
            start.elapsed().as_secs_f64(),
            st.attempted,
            st.registered,
            st.held,
            st.refreshes,
            failed
        );
        if shared.params.hold && !announced && st.ended >= shared.params.users as u64 {
            announced = true;
            eprintln!(
                "REGISTRATION_PHASE_DONE registered={} held={} t={:.1}s",
                st.registered,
                st.held,
                start.elapsed().as_secs_f64()
            );
        }
    }
}
