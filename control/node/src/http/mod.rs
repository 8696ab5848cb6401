//! HTTPS through the edge: what an MRA client asks before and besides SIP (its edge
//! configuration, UDS, TFTP configuration files, voicemail).
//!
//! * The **edge** ([`edge`]) terminates the client's HTTPS (8443, HTTP/1.1 over rustls) and
//!   accepts the HTTP tunnel the core dials (2222): mutual TLS with the same certificate and
//!   subject-name/EKU checks as the SIP traversal zone, carrying HTTP/2 in which the core is
//!   the server. The edge is the HTTP/2 client on a connection it never opened, so it never
//!   dials inwards; it forwards each client request over the tunnel and streams the answer.
//! * The **core** ([`core`]) dials the tunnel with backoff and answers on it: the edge
//!   configuration itself, or the tunnelled form judged by `edgeway-allowlist` and proxied to
//!   the internal server (HTTP or HTTPS, the certificate verified against `tls.ca`).
//!
//! What a path means is decided without IO by [`route`]; who may ask (MRA access control,
//! credential caching, OAuth tokens, authorization rate control) by [`auth`], which the core
//! applies before the allow list.

pub mod auth;
pub mod core;
pub mod edge;
pub mod pool;
pub mod route;

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Response, StatusCode};

/// Why an HTTP exchange failed, as logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// No core has the tunnel open.
    #[error("no HTTP tunnel to the core")]
    NoTunnel,
    /// The tunnel failed while carrying the request.
    #[error("HTTP tunnel: {0}")]
    Tunnel(hyper::Error),
    /// The internal server could not be reached or answered garbage.
    #[error("internal server {url}: {reason}")]
    Upstream {
        /// The URL forwarded to.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// What the HTTP side of either role counts, for the admin API's status.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Requests received (edge: from clients; core: over the tunnel).
    pub requests: AtomicU64,
    /// Core: refused by the allow list (403).
    pub denied: AtomicU64,
    /// Core: unknown domain or path form (404).
    pub not_found: AtomicU64,
    /// Core: the internal server could not be reached or failed (502).
    pub upstream_failed: AtomicU64,
    /// Edge: answered 502 because no tunnel was up or it failed mid-request.
    pub no_tunnel: AtomicU64,
    /// Edge: client connections refused over `edge.max_connections_per_source`.
    pub refused_per_source: AtomicU64,
    /// Edge: requests refused with 413 for announcing a body over `http.max_body_bytes`.
    pub body_too_large: AtomicU64,
    /// Tunnel connections established.
    pub tunnel_up: AtomicU64,
    /// Tunnel connections lost.
    pub tunnel_lost: AtomicU64,
    /// Core: MRA access control outcomes.
    pub access: auth::AccessCounters,
    /// The core's upstream connection pool: new connections vs reused ones.
    pub upstream: std::sync::Arc<pool::PoolCounters>,
}

impl HttpCounters {
    /// The counters as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "requests": n(&self.requests),
            "denied": n(&self.denied),
            "not_found": n(&self.not_found),
            "upstream_failed": n(&self.upstream_failed),
            "no_tunnel": n(&self.no_tunnel),
            "refused_per_source": n(&self.refused_per_source),
            "body_too_large": n(&self.body_too_large),
            "tunnel_up": n(&self.tunnel_up),
            "tunnel_lost": n(&self.tunnel_lost),
            "access": self.access.to_json(),
            "upstream": self.upstream.to_json(),
        })
    }
}

/// The body type of every response the edge and core send.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A small text answer (errors, refusals) with `status`.
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    body(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

/// A whole answer with `status`, content type and body.
pub fn body(status: StatusCode, content_type: &'static str, text: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Removes the hop-by-hop headers (RFC 9110 7.6.1), which HTTP/2 forbids and which must not
/// travel past a proxy, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
        "host",
    ] {
        headers.remove(name);
    }
}
