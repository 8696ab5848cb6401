//! The edge's half: client HTTPS (HTTP/1.1 over rustls) and the tunnel listener, where the
//! core's mutual-TLS connection arrives and the edge becomes its HTTP/2 client. A newer
//! tunnel replaces an older one (the core restarted); with none up, clients get 502.
//!
//! With intrusion protection ([`Shield`]), both listeners drop a blocked source's
//! connection at accept, before TLS, and feed it what they see: on 8443 the core's 401 to
//! a request that carried credentials (`http-ce-auth`); malformed TLS or HTTP, header
//! floods (431), bodies over `http.max_body_bytes` (413) and the allow list's 403
//! (`http-ce-intrusion`); 404 (`http-ce-resource`). On 2222: refused certificates
//! (`sshpfwd-auth`) and bytes that are not TLS (`sshpfwd-intrusion`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{strip_hop_by_hop, text, Body, HttpCounters, HttpError};
use crate::config::{Config, EdgeConfig, HttpConfig};
use crate::counters::Counters;
use crate::protect::{Category, Shield};
use crate::run::NodeError;
use crate::tls::{self, Identity};

/// The open tunnel, tagged with its generation so an old one's end does not clear a new one.
type Tunnel = Arc<Mutex<Option<(u64, SendRequest<Body>)>>>;

fn io(what: &str) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        what: what.to_string(),
        source,
    }
}

/// Binds the edge's HTTPS and tunnel listeners (reported in `ready` as `https` and
/// `http_tunnel`) and serves them in the background, guarded by `shield` when protection is
/// on; the counters are for the admin API.
pub async fn start(
    cfg: &Config,
    edge: &EdgeConfig,
    http: &HttpConfig,
    identity: &Identity,
    counters: Arc<Counters>,
    shield: Option<Arc<Shield>>,
    ready: &mut Value,
) -> Result<Arc<HttpCounters>, NodeError> {
    let listen = http
        .listen
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8443)));
    let tunnel_listen = http
        .tunnel_listen
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 2222)));
    let clients = TcpListener::bind(listen).await.map_err(io("http.listen"))?;
    let tunnels = TcpListener::bind(tunnel_listen)
        .await
        .map_err(io("http.tunnel_listen"))?;
    ready["https"] = json!(clients.local_addr().map_err(io("http.listen"))?.to_string());
    ready["http_tunnel"] = json!(tunnels
        .local_addr()
        .map_err(io("http.tunnel_listen"))?
        .to_string());
    let client_tls = TlsAcceptor::from(tls::client_facing_server(identity)?);
    let tunnel_tls = TlsAcceptor::from(tls::traversal_server(
        identity,
        tls::roots(&cfg.tls.ca)?,
        &edge.tls_verify_subject_name,
        counters,
    )?);
    let tunnel: Tunnel = Arc::new(Mutex::new(None));
    let http_counters = Arc::new(HttpCounters::default());
    tokio::spawn(accept_tunnels(
        tunnels,
        tunnel_tls,
        tunnel.clone(),
        edge.tls_handshake_timeout,
        http_counters.clone(),
        shield.clone(),
    ));
    tokio::spawn(accept_clients(
        clients,
        client_tls,
        tunnel,
        ClientLimits {
            max_header_bytes: http.max_header_bytes,
            max_body_bytes: http.max_body_bytes,
            handshake_timeout: edge.tls_handshake_timeout,
            per_source: edge.max_connections_per_source,
        },
        http_counters.clone(),
        shield,
    ));
    Ok(http_counters)
}

fn current(tunnel: &Tunnel) -> Option<(u64, SendRequest<Body>)> {
    tunnel.lock().map(|t| t.clone()).unwrap_or(None)
}

/// What a failed TLS handshake says about the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsFailure {
    /// Its certificate was refused (or it sent none where one is demanded).
    Credentials,
    /// It did not speak TLS, or broke the protocol.
    Protocol,
    /// Anything else (it hung up, sent an alert, timed out): not held against it.
    Other,
}

fn tls_failure(e: &std::io::Error) -> TlsFailure {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return TlsFailure::Other;
    };
    match tls {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            TlsFailure::Credentials
        }
        // The traversal verifier's own refusals (EKU, subject name).
        rustls::Error::General(why) if why.contains("traversal peer") => TlsFailure::Credentials,
        rustls::Error::InvalidMessage(_)
        | rustls::Error::PeerMisbehaved(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => TlsFailure::Protocol,
        _ => TlsFailure::Other,
    }
}

/// Whether a new connection from `peer` may go on (false: drop it before any TLS).
fn admit(shield: &Option<Arc<Shield>>, peer: SocketAddr) -> bool {
    shield.as_ref().is_none_or(|s| s.admit(peer.ip()))
}

fn record(shield: &Option<Arc<Shield>>, category: Category, peer: SocketAddr) {
    if let Some(s) = shield {
        s.record(category, peer.ip());
    }
}

async fn accept_tunnels(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tunnel: Tunnel,
    handshake_timeout: Duration,
    counters: Arc<HttpCounters>,
    shield: Option<Arc<Shield>>,
) {
    let mut generation = 0u64;
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !admit(&shield, peer) {
            continue; // dropping `tcp` closes it before any TLS
        }
        generation += 1;
        let (acceptor, tunnel, id) = (acceptor.clone(), tunnel.clone(), generation);
        let (counters, shield) = (counters.clone(), shield.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    eprintln!("edgeway-control: HTTP tunnel handshake from {peer} failed: {e}");
                    match tls_failure(&e) {
                        TlsFailure::Credentials => record(&shield, Category::SshpfwdAuth, peer),
                        TlsFailure::Protocol => record(&shield, Category::SshpfwdIntrusion, peer),
                        TlsFailure::Other => {}
                    }
                    return;
                }
                Err(_) => return,
            };
            let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20))
                .handshake::<_, Body>(TokioIo::new(stream))
                .await;
            let (sender, connection) = match handshake {
                Ok(pair) => pair,
                Err(e) => {
                    eprintln!("edgeway-control: HTTP tunnel from {peer}: HTTP/2 failed: {e}");
                    return;
                }
            };
            if let Ok(mut t) = tunnel.lock() {
                *t = Some((id, sender));
            }
            counters.tunnel_up.fetch_add(1, Ordering::Relaxed);
            eprintln!("edgeway-control: HTTP tunnel up ({peer})");
            let _ = connection.await;
            if let Ok(mut t) = tunnel.lock() {
                if t.as_ref().is_some_and(|(g, _)| *g == id) {
                    *t = None;
                }
            }
            counters.tunnel_lost.fetch_add(1, Ordering::Relaxed);
            eprintln!("edgeway-control: HTTP tunnel from {peer} closed");
        });
    }
}

/// What bounds one client connection.
#[derive(Debug, Clone, Copy)]
struct ClientLimits {
    max_header_bytes: usize,
    max_body_bytes: u64,
    handshake_timeout: Duration,
    /// `edge.max_connections_per_source`, counted apart from the SIP listener's.
    per_source: usize,
}

/// One source address's share of the client connections, given back on drop.
struct SourceSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    source: IpAddr,
}

impl SourceSlot {
    /// A slot for `source`, or `None` when it already holds `most`.
    fn take(
        counts: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        source: IpAddr,
        most: usize,
    ) -> Option<SourceSlot> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(source).or_insert(0);
        if *n >= most {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            counts: counts.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.source);
            }
        }
    }
}

async fn accept_clients(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tunnel: Tunnel,
    limits: ClientLimits,
    counters: Arc<HttpCounters>,
    shield: Option<Arc<Shield>>,
) {
    let per_source = Arc::new(Mutex::new(HashMap::new()));
    let ClientLimits {
        max_header_bytes,
        max_body_bytes,
        handshake_timeout,
        per_source: most,
    } = limits;
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !admit(&shield, peer) {
            continue; // dropping `tcp` closes it before any TLS
        }
        let Some(slot) = SourceSlot::take(&per_source, peer.ip(), most) else {
            counters.refused_per_source.fetch_add(1, Ordering::Relaxed);
            continue; // dropping `tcp` refuses it
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, tunnel, counters) = (acceptor.clone(), tunnel.clone(), counters.clone());
        let shield = shield.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    if tls_failure(&e) == TlsFailure::Protocol {
                        record(&shield, Category::HttpCeIntrusion, peer);
                    }
                    return;
                }
                Err(_) => return,
            };
            // Set when an answer leaves part of the request unread (a refused body).
            let unread = Arc::new(AtomicBool::new(false));
            let service = {
                let (shield, unread) = (shield.clone(), unread.clone());
                hyper::service::service_fn(move |request| {
                    Box::pin(forward(
                        tunnel.clone(),
                        counters.clone(),
                        shield.clone(),
                        unread.clone(),
                        peer,
                        max_body_bytes,
                        request,
                    ))
                })
            };
            let mut conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                // A slow client (slowloris) loses its connection instead of holding a task.
                .header_read_timeout(handshake_timeout)
                .max_buf_size(max_header_bytes.max(8192))
                .serve_connection(TokioIo::new(stream), service);
            let served = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await;
            // hyper answered a malformed request (400) or a header flood (431) itself.
            let refused = served.is_err_and(|e| e.is_parse() || e.is_parse_too_large());
            if refused {
                record(&shield, Category::HttpCeIntrusion, peer);
            }
            close(
                conn.into_parts().io.into_inner(),
                refused || unread.load(Ordering::Relaxed),
            )
            .await;
        });
    }
}

/// How long a refused client's remaining bytes are read and discarded after the answer.
const LINGER: Duration = Duration::from_secs(2);
/// The most bytes read and discarded so.
const LINGER_BYTES: usize = 4 << 20;

/// Closes a client connection: the answer and close_notify flushed, our side shut down.
/// After a refusal that left input unread (`linger`: a body over the limit, a header
/// flood), the rest is then read and discarded until the client closes, for at most
/// [`LINGER`] and [`LINGER_BYTES`]: closing a socket with unread input makes the kernel send
/// a reset, and a reset that reaches the client before it reads our answer destroys the
/// answer in its receive buffer (RFC 9112 §9.6). The connection keeps its per-source slot
/// meanwhile.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, linger: bool) {
    let deadline = tokio::time::Instant::now() + LINGER;
    let shut = tokio::time::timeout_at(deadline, stream.shutdown()).await;
    if !linger || shut.is_err() {
        return;
    }
    let mut sink = vec![0u8; 16 << 10];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => break,
        }
    }
}

/// A refusal after which the connection closes.
fn closing(status: StatusCode, message: &str) -> Response<Body> {
    let mut refusal = text(status, message);
    refusal.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    refusal
}

/// Sends one client request over the tunnel and hands back the core's answer as it streams.
async fn forward(
    tunnel: Tunnel,
    counters: Arc<HttpCounters>,
    shield: Option<Arc<Shield>>,
    unread: Arc<AtomicBool>,
    peer: SocketAddr,
    max_body_bytes: u64,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    if shield.as_ref().is_some_and(|s| s.is_blocked(peer.ip())) {
        // Blocked while this connection was open: no more requests on it.
        return Ok(closing(StatusCode::FORBIDDEN, "source blocked"));
    }
    let announced = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > max_body_bytes) {
        // Refused from the head: not a byte of the body is read or forwarded.
        counters.body_too_large.fetch_add(1, Ordering::Relaxed);
        record(&shield, Category::HttpCeIntrusion, peer);
        unread.store(true, Ordering::Relaxed);
        return Ok(closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body over {max_body_bytes} bytes"),
        ));
    }
    // A 401 to a request without credentials is the challenge that starts a sign-in, not
    // an authorization failure.
    let presented_credentials = request.headers().contains_key(hyper::header::AUTHORIZATION);
    let (mut parts, body) = request.into_parts();
    let body = if announced.is_none() && !hyper::body::Body::is_end_stream(&body) {
        // A chunked body has no length to judge from the head: it is read here, up to the
        // limit, before anything goes to the core (announced bodies stream).
        match http_body_util::Limited::new(body, max_body_bytes.try_into().unwrap_or(usize::MAX))
            .collect()
            .await
        {
            Ok(whole) => Full::new(whole.to_bytes())
                .map_err(|never| match never {})
                .boxed(),
            Err(e) => {
                record(&shield, Category::HttpCeIntrusion, peer);
                unread.store(true, Ordering::Relaxed);
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    counters.body_too_large.fetch_add(1, Ordering::Relaxed);
                    return Ok(closing(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("request body over {max_body_bytes} bytes"),
                    ));
                }
                return Ok(closing(StatusCode::BAD_REQUEST, "broken request body"));
            }
        }
    } else {
        body.boxed()
    };
    let outcome = async {
        let (_, mut sender) = current(&tunnel).ok_or(HttpError::NoTunnel)?;
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        // HTTP/2 needs a scheme and authority; the core reads only the path.
        parts.uri = format!("https://edge{path}")
            .parse()
            .map_err(|_| HttpError::NoTunnel)?;
        parts.version = hyper::Version::HTTP_2;
        strip_hop_by_hop(&mut parts.headers);
        if let Ok(v) = hyper::header::HeaderValue::from_str(&peer.ip().to_string()) {
            parts.headers.insert("x-forwarded-for", v);
        }
        sender.ready().await.map_err(HttpError::Tunnel)?;
        let response = sender
            .send_request(Request::from_parts(parts, body))
            .await
            .map_err(HttpError::Tunnel)?;
        let (mut parts, body) = response.into_parts();
        parts.version = hyper::Version::HTTP_11;
        Ok::<_, HttpError>(Response::from_parts(parts, body.boxed()))
    };
    Ok(match outcome.await {
        Ok(response) => {
            let category = match response.status() {
                StatusCode::UNAUTHORIZED if presented_credentials => Some(Category::HttpCeAuth),
                StatusCode::FORBIDDEN => Some(Category::HttpCeIntrusion),
                StatusCode::NOT_FOUND => Some(Category::HttpCeResource),
                _ => None,
            };
            if let Some(category) = category {
                record(&shield, category, peer);
            }
            response
        }
        Err(HttpError::NoTunnel) => {
            counters.no_tunnel.fetch_add(1, Ordering::Relaxed);
            text(StatusCode::BAD_GATEWAY, "no HTTP tunnel to the core")
        }
        Err(e) => {
            counters.no_tunnel.fetch_add(1, Ordering::Relaxed);
            eprintln!("edgeway-control: HTTP request from {peer}: {e}");
            text(StatusCode::BAD_GATEWAY, &e.to_string())
        }
    })
}
