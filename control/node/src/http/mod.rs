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
//! What a path means is decided without IO by [`route`].
//!
//! Not yet here (issue 7, later items): MRA access control (authentication paths, credential
//! caching, OAuth), authorization rate control, automated intrusion protection.

pub mod core;
pub mod edge;
pub mod route;

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
