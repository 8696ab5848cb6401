//! HTTPS request load (`edgeway-loadgen https`): closed-loop HTTP/1.1 clients over rustls,
//! each sending the same GET again as soon as the previous answer is complete, either on
//! one kept-alive connection per client or on a fresh TCP + TLS connection per request
//! (`Connection: close`, no session resumption unless asked: a full handshake each time).
//!
//! All clients run on one (pinnable) thread. Only requests completed inside the measured
//! window (after `--warmup`) are counted; the reported latency of a request runs from its
//! first byte written (kept-alive) or from the TCP connect (new connection, handshake
//! included) to the last byte of the answer's body. CPU of the generator and of the
//! system-under-test processes is taken over the same window.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::engine::Latency;
use crate::procstat::process_cpu_ns;
use crate::sip_load::{client_config, ProcessCpu, SipLoadError, TlsVersion};

/// Largest response head accepted; beyond it the answer counts as `bad-response`.
const MAX_HEAD: usize = 64 * 1024;

/// Command-line arguments of `edgeway-loadgen https`.
#[derive(clap::Args, Debug)]
pub struct HttpsLoadArgs {
    /// HTTPS listener under test.
    #[arg(long)]
    pub target: SocketAddr,
    /// Name for SNI, certificate verification and the Host header.
    #[arg(long)]
    pub server_name: String,
    /// PEM file of the CA certificate(s) to trust.
    #[arg(long)]
    pub ca: PathBuf,
    /// Request path (and query), sent as is.
    #[arg(long)]
    pub path: String,
    /// Extra request header "Name: value" (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Concurrent clients, each with at most one request in flight.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// A new TCP + TLS connection for every request (`Connection: close`).
    #[arg(long)]
    pub new_connection: bool,
    /// Allow TLS session resumption (off: every handshake is a full one).
    #[arg(long)]
    pub resume: bool,
    /// Offer TLS 1.2 instead of TLS 1.3.
    #[arg(long)]
    pub tls12: bool,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measured window (connections opened, caches warm).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds allowed for one request (connect to last body byte).
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Status every answer should have; others count as failures `status-<code>`.
    #[arg(long, default_value_t = 200)]
    pub expect_status: u16,
    /// CPU to pin the generator to.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// PID of a system-under-test process whose CPU use is reported (repeatable).
    #[arg(long = "sut-pid")]
    pub sut_pids: Vec<u32>,
}

/// Errors that stop a run before it starts (per-request problems are counted instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsLoadError {
    /// The CA file or TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] SipLoadError),
    /// The CA file could not be read.
    #[error("reading CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A parameter is out of range or malformed.
    #[error("invalid parameter: {0}")]
    Parameter(String),
    /// The runtime could not be built.
    #[error("tokio runtime: {0}")]
    Runtime(io::Error),
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct HttpsLoadReport {
    /// `keep-alive` or `new-connection`.
    pub mode: &'static str,
    /// TLS version offered.
    pub tls_version: TlsVersion,
    /// Concurrent clients.
    pub connections: usize,
    /// Length of the measured window, seconds.
    pub elapsed_s: f64,
    /// Requests answered with the expected status inside the window.
    pub requests: u64,
    /// `requests / elapsed_s`.
    pub requests_per_s: f64,
    /// Latency of those requests, µs (from connect in new-connection mode).
    pub latency_us: Latency,
    /// TCP connect + TLS handshake, µs, of connections opened inside the window.
    pub handshake_latency_us: Latency,
    /// Connections opened inside the window.
    pub connections_opened: u64,
    /// Failures inside the window by cause (`connect`, `tls-handshake`, `timeout`,
    /// `closed`, `io`, `bad-response`, `status-<code>`).
    pub failures: BTreeMap<String, u64>,
    /// One example message per failure cause.
    pub failure_examples: BTreeMap<String, String>,
    /// The generator's own CPU, percent of one core.
    pub gen_cpu_pct: f64,
    /// Each `--sut-pid` process's CPU, percent of one core.
    pub sut_cpu: Vec<ProcessCpu>,
}

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
enum RequestFailure {
    #[error("TCP connect: {0}")]
    Connect(io::Error),
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
    #[error("no complete answer within the timeout")]
    Timeout,
    #[error("connection closed before the answer was complete")]
    Closed,
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("unreadable answer: {0}")]
    BadResponse(String),
    #[error("answered {0}")]
    Status(u16),
}

impl RequestFailure {
    fn label(&self) -> String {
        match self {
            RequestFailure::Connect(_) => "connect".into(),
            RequestFailure::Handshake(_) => "tls-handshake".into(),
            RequestFailure::Timeout => "timeout".into(),
            RequestFailure::Closed => "closed".into(),
            RequestFailure::Io(_) => "io".into(),
            RequestFailure::BadResponse(_) => "bad-response".into(),
            RequestFailure::Status(code) => format!("status-{code}"),
        }
    }
}

/// One parsed answer: its status and whether the server will close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    status: u16,
    closes: bool,
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    Length(usize),
    Chunked,
    AtClose,
}

/// Parses a response head (`head` ends with the blank line): status, whether the
/// connection closes after it, and how the body is framed.
fn parse_head(head: &[u8]) -> Result<(Answer, BodyEnd), RequestFailure> {
    let bad = |why: &str| RequestFailure::BadResponse(why.to_string());
    let text = std::str::from_utf8(head).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad("status line is not HTTP/1.x"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let mut closes = version == "HTTP/1.0";
    let mut end = BodyEnd::AtClose;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("header without ':'"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") && end != BodyEnd::Chunked {
            end = BodyEnd::Length(value.parse().map_err(|_| bad("bad Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            end = BodyEnd::Chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            closes = v.contains("close") || (closes && !v.contains("keep-alive"));
        }
    }
    if status == 204 || status == 304 || (100..200).contains(&status) {
        end = BodyEnd::Length(0);
    }
    Ok((Answer { status, closes }, end))
}

/// Where a chunked body ends in `data` (from its first chunk-size line), if it does yet.
fn chunked_end(data: &[u8]) -> Result<Option<usize>, RequestFailure> {
    let mut at = 0;
    loop {
        let Some(eol) = find(&data[at..], b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&data[at..at + eol])
            .ok()
            .and_then(|l| l.split(';').next())
            .map(str::trim)
            .ok_or_else(|| RequestFailure::BadResponse("bad chunk size".into()))?;
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| RequestFailure::BadResponse("bad chunk size".into()))?;
        at += eol + 2;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            if data[at..].starts_with(b"\r\n") {
                return Ok(Some(at + 2));
            }
            return Ok(find(&data[at..], b"\r\n\r\n").map(|p| at + p + 4));
        }
        if data.len() < at + size + 2 {
            return Ok(None);
        }
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one whole answer from `stream` into `buf` (cleared first).
async fn read_answer(
    stream: &mut TlsStream<TcpStream>,
    buf: &mut Vec<u8>,
) -> Result<Answer, RequestFailure> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(RequestFailure::BadResponse("head over 64 KiB".into()));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(RequestFailure::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (answer, end) = parse_head(&buf[..head_end])?;
    loop {
        let body = &buf[head_end..];
        let complete = match end {
            BodyEnd::Length(n) => body.len() >= n,
            BodyEnd::Chunked => chunked_end(body)?.is_some(),
            BodyEnd::AtClose => false,
        };
        if complete {
            return Ok(answer);
        }
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // Some servers reset instead of sending close_notify once they are done.
            Err(e) if end == BodyEnd::AtClose && e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return if end == BodyEnd::AtClose {
                Ok(Answer {
                    closes: true,
                    ..answer
                })
            } else {
                Err(RequestFailure::Closed)
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Counters of one run (one thread: `RefCell`).
struct Stats {
    requests: u64,
    connections_opened: u64,
    failures: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
    latency: Histogram<u64>,
    handshake: Histogram<u64>,
}

impl Stats {
    fn fail(&mut self, failure: &RequestFailure) {
        let label = failure.label();
        *self.failures.entry(label.clone()).or_insert(0) += 1;
        self.examples
            .entry(label)
            .or_insert_with(|| failure.to_string());
    }
}

/// What every client shares.
struct Plan {
    target: SocketAddr,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    request: Vec<u8>,
    new_connection: bool,
    expect_status: u16,
    per_request: Duration,
    measure_from: Instant,
    end: Instant,
}

async fn connect(plan: &Plan) -> Result<TlsStream<TcpStream>, RequestFailure> {
    let tcp = TcpStream::connect(plan.target)
        .await
        .map_err(RequestFailure::Connect)?;
    let _ = tcp.set_nodelay(true);
    plan.connector
        .connect(plan.server_name.clone(), tcp)
        .await
        .map_err(RequestFailure::Handshake)
}

/// One client: requests back to back until the window ends.
async fn client(plan: Rc<Plan>, stats: Rc<RefCell<Stats>>) {
    let mut conn: Option<TlsStream<TcpStream>> = None;
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < plan.end {
        let started = Instant::now();
        let measured = started >= plan.measure_from;
        let attempt = async {
            let stream = match conn.as_mut() {
                Some(s) => s,
                None => {
                    let s = connect(&plan).await?;
                    if measured {
                        let mut st = stats.borrow_mut();
                        st.connections_opened += 1;
                        let _ = st.handshake.record(micros(started.elapsed()));
                    }
                    conn.insert(s)
                }
            };
            stream.write_all(&plan.request).await?;
            stream.flush().await?;
            read_answer(stream, &mut buf).await
        };
        let outcome = match timeout(plan.per_request, attempt).await {
            Ok(r) => r,
            Err(_) => Err(RequestFailure::Timeout),
        };
        let done = Instant::now();
        let keep = matches!(outcome, Ok(a) if !a.closes && !plan.new_connection);
        if !keep {
            if let Some(mut s) = conn.take() {
                if plan.new_connection {
                    // close_notify, as a well-behaved client ends its connection.
                    let _ = timeout(Duration::from_millis(100), s.shutdown()).await;
                }
            }
        }
        let failed = outcome.is_err();
        if measured && done <= plan.end {
            let mut st = stats.borrow_mut();
            match outcome {
                Ok(a) if a.status == plan.expect_status => {
                    st.requests += 1;
                    let _ = st.latency.record(micros(done - started));
                }
                Ok(a) => st.fail(&RequestFailure::Status(a.status)),
                Err(e) => st.fail(&e),
            }
        }
        if failed {
            // A refused or failing target must not turn the loop into a spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn new_histogram() -> Result<Histogram<u64>, HttpsLoadError> {
    // 1 µs .. 10 min, 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| HttpsLoadError::Parameter(format!("histogram: {e}")))
}

/// The request every client sends.
fn request_bytes(a: &HttpsLoadArgs) -> Result<Vec<u8>, HttpsLoadError> {
    if !a.path.starts_with('/') || a.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(HttpsLoadError::Parameter(format!(
            "--path {:?}: must start with '/' and hold no spaces or control characters",
            a.path
        )));
    }
    let mut r = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: edgeway-loadgen\r\nAccept: */*\r\n",
        a.path,
        a.server_name,
        a.target.port()
    );
    for h in &a.headers {
        let ok = h.split_once(':').is_some_and(|(n, _)| !n.trim().is_empty())
            && !h.contains(['\r', '\n']);
        if !ok {
            return Err(HttpsLoadError::Parameter(format!(
                "--header {h:?}: expected \"Name: value\" on one line"
            )));
        }
        r.push_str(h);
        r.push_str("\r\n");
    }
    if a.new_connection {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    Ok(r.into_bytes())
}

/// Runs one load run on the calling thread (pin it first) and reports it.
pub fn run(a: &HttpsLoadArgs) -> Result<HttpsLoadReport, HttpsLoadError> {
    let secs = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s)
            .map_err(|_| HttpsLoadError::Parameter(format!("{what} {s}: not a duration")))
    };
    if a.connections == 0 {
        return Err(HttpsLoadError::Parameter("--connections 0".into()));
    }
    let pem = std::fs::read(&a.ca).map_err(|source| HttpsLoadError::CaFile {
        path: a.ca.clone(),
        source,
    })?;
    let version = if a.tls12 {
        TlsVersion::Tls12
    } else {
        TlsVersion::Tls13
    };
    let tls: Arc<ClientConfig> = client_config(&pem, version, a.resume)?;
    let server_name = ServerName::try_from(a.server_name.clone())
        .map_err(|e| HttpsLoadError::Parameter(format!("--server-name: {e}")))?;
    let duration = secs(a.duration, "--duration")?;
    let warmup = secs(a.warmup, "--warmup")?;
    let start = Instant::now();
    let plan = Rc::new(Plan {
        target: a.target,
        server_name,
        connector: TlsConnector::from(tls),
        request: request_bytes(a)?,
        new_connection: a.new_connection,
        expect_status: a.expect_status,
        per_request: secs(a.timeout, "--timeout")?,
        measure_from: start + warmup,
        end: start + warmup + duration,
    });
    let stats = Rc::new(RefCell::new(Stats {
        requests: 0,
        connections_opened: 0,
        failures: BTreeMap::new(),
        examples: BTreeMap::new(),
        latency: new_histogram()?,
        handshake: new_histogram()?,
    }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HttpsLoadError::Runtime)?;
    let local = tokio::task::LocalSet::new();
    let my_pid = std::process::id();
    let (cpu, sut) = local.block_on(&runtime, async {
        let tasks: Vec<_> = (0..a.connections)
            .map(|_| tokio::task::spawn_local(client(plan.clone(), stats.clone())))
            .collect();
        tokio::time::sleep_until(plan.measure_from.into()).await;
        let cpu_start = process_cpu_ns(my_pid);
        let sut_start: Vec<Option<u64>> = a.sut_pids.iter().map(|&p| process_cpu_ns(p)).collect();
        tokio::time::sleep_until(plan.end.into()).await;
        let cpu_end = process_cpu_ns(my_pid);
        let sut_end: Vec<Option<u64>> = a.sut_pids.iter().map(|&p| process_cpu_ns(p)).collect();
        for t in tasks {
            let _ = t.await;
        }
        ((cpu_start, cpu_end), (sut_start, sut_end))
    });
    let window = duration.as_secs_f64();
    let pct = |from: Option<u64>, to: Option<u64>| {
        Some(to?.saturating_sub(from?) as f64 / 1e9 / window * 100.0)
    };
    let st = stats.borrow();
    Ok(HttpsLoadReport {
        mode: if a.new_connection {
            "new-connection"
        } else {
            "keep-alive"
        },
        tls_version: version,
        connections: a.connections,
        elapsed_s: window,
        requests: st.requests,
        requests_per_s: st.requests as f64 / window,
        latency_us: Latency::from_histogram(&st.latency, 1.0),
        handshake_latency_us: Latency::from_histogram(&st.handshake, 1.0),
        connections_opened: st.connections_opened,
        failures: st.failures.clone(),
        failure_examples: st.examples.clone(),
        gen_cpu_pct: pct(cpu.0, cpu.1).unwrap_or(0.0),
        sut_cpu: a
            .sut_pids
            .iter()
            .zip(sut.0.iter().zip(&sut.1))
            .map(|(&pid, (&from, &to))| ProcessCpu {
                pid,
                cpu_pct: pct(from, to),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_status_framing_and_close() {
        let (a, end) = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!((a.status, a.closes, end), (200, false, BodyEnd::Length(12)));
        let (a, end) = parse_head(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!((a.status, a.closes, end), (404, true, BodyEnd::Chunked));
        let (a, end) = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap();
        assert_eq!((a.closes, end), (true, BodyEnd::AtClose));
        assert!(parse_head(b"SIP/2.0 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies_end_after_the_last_chunk() {
        assert_eq!(chunked_end(b"5\r\nhello\r\n").unwrap(), None);
        assert_eq!(chunked_end(b"5\r\nhello\r\n0\r\n").unwrap(), None);
        assert_eq!(chunked_end(b"5\r\nhello\r\n0\r\n\r\n").unwrap(), Some(15));
        assert_eq!(chunked_end(b"0\r\n\r\n").unwrap(), Some(5));
        assert!(chunked_end(b"zz\r\n").is_err());
    }
}
