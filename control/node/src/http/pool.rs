//! The core's upstream connection pool: HTTP/1.1 keep-alive connections to internal servers
//! (Unified CM, IM and Presence, TFTP, ...) reused per (scheme, host, port, TLS server name),
//! so a proxied request does not pay a TCP connect and a TLS handshake each time.
//!
//! A connection goes back to the pool once its answer has been read to the end (hyper's
//! `SendRequest` is ready again); one that errored, was answered `Connection: close`, or
//! whose answer was dropped half-read is not reused. At most [`PoolLimits::max_idle_per_host`]
//! idle connections are kept per server, each for at most [`PoolLimits::idle_timeout`].
//! A request that fails on a pooled connection before any byte of the answer (the server
//! closed it while idle) is sent once more on a fresh connection, for idempotent methods only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use edgeway_allowlist::Scheme;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Body;

/// How long an internal server may take to start its answer: a hung server must not hold
/// the client (and a tunnel stream) for ever.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new connection to an internal server (TCP connect and TLS handshake) may
/// take: a server that accepts and then says nothing must not hold the request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds on what the pool keeps.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Idle connections kept per internal server; more are closed when they come back.
    pub max_idle_per_host: usize,
    /// An idle connection older than this is closed rather than reused.
    pub idle_timeout: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_idle_per_host: 32,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What the pool did, for the admin API's status.
#[derive(Debug, Default)]
pub struct PoolCounters {
    /// Requests sent on a new connection (TCP connect, and TLS handshake for HTTPS).
    pub new_connections: AtomicU64,
    /// Requests sent on a pooled keep-alive connection.
    pub reused: AtomicU64,
    /// Requests that failed on a pooled connection before any answer and were sent again.
    pub retried: AtomicU64,
    /// Connections not pooled after their answer (`Connection: close`, error, pool full).
    pub not_pooled: AtomicU64,
    /// Idle connections closed for age or because the server had closed them.
    pub expired: AtomicU64,
}

impl PoolCounters {
    /// The counters as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "new_connections": n(&self.new_connections),
            "reused": n(&self.reused),
            "retried": n(&self.retried),
            "not_pooled": n(&self.not_pooled),
            "expired": n(&self.expired),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    scheme: Scheme,
    host: String,
    port: u16,
    server_name: String,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// Keep-alive HTTP/1.1 connections to internal servers, shared by every proxied request.
pub struct UpstreamPool {
    tls: TlsConnector,
    limits: PoolLimits,
    counters: Arc<PoolCounters>,
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("limits", &self.limits)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl UpstreamPool {
    /// A pool dialling HTTPS servers with `tls` (its roots decide what is verified); starts
    /// the task that closes idle connections past `limits.idle_timeout`.
    pub fn new(tls: TlsConnector, limits: PoolLimits, counters: Arc<PoolCounters>) -> Arc<Self> {
        let pool = Arc::new(UpstreamPool {
            tls,
            limits,
            counters,
            idle: Mutex::new(HashMap::new()),
        });
        tokio::spawn(sweep(Arc::downgrade(&pool)));
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `request` to `host:port` and returns the answer's head; its body streams.
    pub async fn send(
        self: &Arc<Self>,
        scheme: Scheme,
        host: &str,
        port: u16,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let key = Key {
            scheme,
            host: host.to_owned(),
            port,
            server_name: host.to_owned(),
        };
        let (parts, body) = request.into_parts();
        // A request without a body can be rebuilt if it was written before the connection
        // turned out dead; one with a body cannot (the body is consumed as it is sent).
        let replay = (idempotent(&parts.method) && body.is_end_stream()).then(|| parts.clone());
        let retry_allowed = idempotent(&parts.method);
        let mut request = Request::from_parts(parts, body);
        let mut replay = replay;
        let mut retried = false;
        loop {
            let (mut sender, reused) = match self.checkout(&key) {
                Some(sender) => {
                    self.counters.reused.fetch_add(1, Ordering::Relaxed);
                    (sender, true)
                }
                None => {
                    let sender = self.dial(&key).await?;
                    self.counters
                        .new_connections
                        .fetch_add(1, Ordering::Relaxed);
                    (sender, false)
                }
            };
            match tokio::time::timeout(UPSTREAM_TIMEOUT, sender.try_send_request(request)).await {
                Err(_) => return Err(format!("no answer within {UPSTREAM_TIMEOUT:?}")),
                Ok(Ok(response)) => {
                    self.release(key, sender, &response);
                    return Ok(response);
                }
                Ok(Err(mut failed)) => {
                    let again = if reused && !retried && retry_allowed && stale(failed.error()) {
                        failed.take_message().or_else(|| {
                            replay
                                .take()
                                .map(|parts| Request::from_parts(parts, empty_body()))
                        })
                    } else {
                        None
                    };
                    match again {
                        Some(next) => {
                            self.counters.retried.fetch_add(1, Ordering::Relaxed);
                            retried = true;
                            request = next;
                        }
                        None => return Err(failed.into_error().to_string()),
                    }
                }
            }
        }
    }

    /// The most recently used live idle connection to `key`, dropping dead or old ones.
    fn checkout(&self, key: &Key) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        while let Some(entry) = list.pop() {
            if entry.since.elapsed() <= self.limits.idle_timeout
                && entry.sender.is_ready()
                && !entry.sender.is_closed()
            {
                return Some(entry.sender);
            }
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    async fn dial(&self, key: &Key) -> Result<SendRequest<Body>, String> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect(key))
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
    }

    async fn connect(&self, key: &Key) -> Result<SendRequest<Body>, String> {
        let tcp = TcpStream::connect((key.host.as_str(), key.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match key.scheme {
            Scheme::Http => handshake(TokioIo::new(tcp)).await,
            Scheme::Https => {
                let name = rustls_pki_types::ServerName::try_from(key.server_name.clone())
                    .map_err(|e| format!("not a TLS name: {e}"))?;
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                handshake(TokioIo::new(tls)).await
            }
        }
    }

    /// Puts the connection back once the answer's body has been read to its end.
    fn release(
        self: &Arc<Self>,
        key: Key,
        mut sender: SendRequest<Body>,
        answer: &Response<Incoming>,
    ) {
        if closes(answer) {
            self.counters.not_pooled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            // Ready again only after the body was read to its end; an error or a body
            // dropped half-read closes the connection instead.
            let ready = sender.ready().await.is_ok();
            let Some(pool) = pool.upgrade() else {
                return;
            };
            let mut idle = pool.lock();
            let list = idle.entry(key).or_default();
            if ready && list.len() < pool.limits.max_idle_per_host {
                list.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            } else {
                pool.counters.not_pooled.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Closes idle connections past the idle timeout or already closed by their server.
    fn prune(&self) {
        let mut idle = self.lock();
        for list in idle.values_mut() {
            let before = list.len();
            list.retain(|e| e.since.elapsed() <= self.limits.idle_timeout && !e.sender.is_closed());
            let gone = (before - list.len()) as u64;
            self.counters.expired.fetch_add(gone, Ordering::Relaxed);
        }
        idle.retain(|_, list| !list.is_empty());
    }
}

async fn sweep(pool: Weak<UpstreamPool>) {
    let period = match pool.upgrade() {
        Some(p) => (p.limits.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        match pool.upgrade() {
            Some(pool) => pool.prune(),
            None => return,
        }
    }
}

async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Body>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// The body of a request that has none.
pub fn empty_body() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// RFC 9110 9.2.2: a repeated request has the same effect as one.
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether the failure is a pooled connection found dead before its answer began.
fn stale(error: &hyper::Error) -> bool {
    error.is_canceled() || error.is_incomplete_message() || error.is_closed() || {
        let mut source = std::error::Error::source(error);
        let mut io = false;
        while let Some(e) = source {
            io |= e.is::<std::io::Error>();
            source = e.source();
        }
        io
    }
}

/// Whether the server said this connection ends with this answer.
fn closes(answer: &Response<Incoming>) -> bool {
    answer.version() < hyper::Version::HTTP_11
        || answer
            .headers()
            .get_all(hyper::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("close"))
}
