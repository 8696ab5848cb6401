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
    BadResponse(#[from] ResponseError),
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

/// Why an answer could not be read as HTTP/1.x.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// No blank line within the first 64 KiB.
    #[error("head over 64 KiB")]
    HeadTooLarge,
    /// The head holds bytes that are not UTF-8.
    #[error("head is not UTF-8")]
    NotUtf8,
    /// The status line does not start with `HTTP/1.`.
    #[error("status line is not HTTP/1.x")]
    NotHttp1,
    /// No three-digit status code after the version.
    #[error("no status code")]
    NoStatus,
    /// A header line without a colon.
    #[error("header line without ':'")]
    BadHeader,
    /// A Content-Length that is not a number.
    #[error("bad Content-Length")]
    BadContentLength,
    /// A chunk-size line that is not hexadecimal.
    #[error("bad chunk size")]
    BadChunk,
}

/// A complete answer at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFrame {
    /// Its status code.
    pub status: u16,
    /// Whether the server closes the connection after it.
    pub closes: bool,
    /// Its length in bytes, head and body.
    pub len: usize,
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    Length(usize),
    Chunked,
    AtClose,
}

/// Whether `data` starts with a complete HTTP/1.x answer, sans-IO: `Ok(None)` while more
/// bytes are needed. `at_eof`: the server has closed, which completes a body delimited by
/// the close. Content-Length, chunked and close-delimited bodies; no body for 1xx, 204, 304.
pub fn response_frame(data: &[u8], at_eof: bool) -> Result<Option<ResponseFrame>, ResponseError> {
    let Some(head_end) = find(data, b"\r\n\r\n").map(|p| p + 4) else {
        return if data.len() > MAX_HEAD {
            Err(ResponseError::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    if head_end > MAX_HEAD + 4 {
        return Err(ResponseError::HeadTooLarge);
    }
    let (status, closes, end) = parse_head(&data[..head_end])?;
    let body = &data[head_end..];
    let body_len = match end {
        BodyEnd::Length(n) => (body.len() >= n).then_some(n),
        BodyEnd::Chunked => chunked_end(body)?,
        BodyEnd::AtClose => at_eof.then_some(body.len()),
    };
    Ok(body_len.map(|n| ResponseFrame {
        status,
        closes: closes || end == BodyEnd::AtClose,
        len: head_end + n,
    }))
}

/// Parses a response head (`head` ends with the blank line): status, whether the
/// connection closes after it, and how the body is framed.
fn parse_head(head: &[u8]) -> Result<(u16, bool, BodyEnd), ResponseError> {
    let text = std::str::from_utf8(head).map_err(|_| ResponseError::NotUtf8)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ResponseError::NotHttp1);
    }
    let status: u16 = parts
        .next()
        .filter(|c| c.len() == 3)
        .and_then(|c| c.parse().ok())
        .ok_or(ResponseError::NoStatus)?;
    let mut closes = version == "HTTP/1.0";
    let mut end = BodyEnd::AtClose;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(ResponseError::BadHeader)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") && end != BodyEnd::Chunked {
            end = BodyEnd::Length(value.parse().map_err(|_| ResponseError::BadContentLength)?);
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
    Ok((status, closes, end))
}

/// Where a chunked body ends in `data` (from its first chunk-size line), if it does yet.
fn chunked_end(data: &[u8]) -> Result<Option<usize>, ResponseError> {
    let mut at = 0;
    loop {
        let Some(eol) = find(&data[at..], b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&data[at..at + eol])
            .ok()
            .and_then(|l| l.split(';').next())
            .map(str::trim)
            .ok_or(ResponseError::BadChunk)?;
        let size = usize::from_str_radix(size_text, 16).map_err(|_| ResponseError::BadChunk)?;
        at += eol + 2;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            if data[at..].starts_with(b"\r\n") {
                return Ok(Some(at + 2));
            }
            return Ok(find(&data[at..], b"\r\n\r\n").map(|p| at + p + 4));
        }
        match at.checked_add(size).and_then(|n| n.checked_add(2)) {
            Some(next) if next <= data.len() => at = next,
            Some(_) => return Ok(None),
            None => return Err(ResponseError::BadChunk),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one whole answer from `stream` into `buf` (cleared first).
async fn read_answer(
    stream: &mut TlsStream<TcpStream>,
    buf: &mut Vec<u8>,
) -> Result<ResponseFrame, RequestFailure> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(frame) = response_frame(buf, false)? {
            return Ok(frame);
        }
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // Some servers end a close-delimited body without close_notify.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return response_frame(buf, true)?.ok_or(RequestFailure::Closed);
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

    fn frame(data: &[u8], eof: bool) -> Result<Option<(u16, bool, usize)>, ResponseError> {
        response_frame(data, eof).map(|f| f.map(|f| (f.status, f.closes, f.len)))
    }

    #[test]
    fn answers_frame_by_length_chunks_or_close() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(frame(ok, false), Ok(Some((200, false, ok.len()))));
        assert_eq!(frame(&ok[..ok.len() - 1], false), Ok(None));
        let mut two = ok.to_vec();
        two.extend_from_slice(ok);
        assert_eq!(frame(&two, false), Ok(Some((200, false, ok.len()))));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(frame(chunked, false), Ok(Some((404, true, chunked.len()))));
        assert_eq!(frame(&chunked[..chunked.len() - 2], false), Ok(None));
        let at_close = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(frame(at_close, false), Ok(None));
        assert_eq!(frame(at_close, true), Ok(Some((200, true, at_close.len()))));
        let no_body = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(frame(no_body, false), Ok(Some((204, false, no_body.len()))));
    }

    #[test]
    fn bad_answers_are_typed_errors() {
        assert_eq!(
            frame(b"SIP/2.0 200 OK\r\n\r\n", false),
            Err(ResponseError::NotHttp1)
        );
        assert_eq!(
            frame(b"HTTP/1.1 abc OK\r\n\r\n", false),
            Err(ResponseError::NoStatus)
        );
        assert_eq!(
            frame(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Err(ResponseError::BadContentLength)
        );
        assert_eq!(
            frame(b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", false),
            Err(ResponseError::BadHeader)
        );
        assert_eq!(
            frame(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false
            ),
            Err(ResponseError::BadChunk)
        );
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(
            frame(huge.as_bytes(), false),
            Err(ResponseError::HeadTooLarge)
        );
        let overflow = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
        assert_eq!(frame(overflow, false), Err(ResponseError::BadChunk));
    }
}
