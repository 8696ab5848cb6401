//! The core's half: dials the edge's tunnel listener (mutual TLS, reconnecting with
//! backoff), serves HTTP/2 on that connection, answers get_edge_config per configured
//! domain and proxies the tunnelled form to internal servers when the allow list allows it.
//! The allow list is the automatic rules of the configured Unified CM nodes (UDS on
//! `uds_port`, TFTP on `tftp_port`) and `[[http.nodes]]`, plus the rules store, re-read
//! whenever its modification time changes.
//!
//! Before the allow list, every request naming a domain (get_edge_config and the tunnelled
//! form: UDS, TFTP, vmrest, ...) passes MRA access control ([`super::auth`]): this layer
//! asks Unified CM about passwords the cache does not hold (UDS `GET
//! /cucm-uds/user/<user>` with the client's own `Authorization`, on each `core.ucm` node in
//! turn) and fetches the token signing keys (`GET /oauth/keys` on the same servers, the
//! "Refresh servers") at start and when a token names an unknown key.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use edgeway_allowlist::{automatic_rules, AllowList, Node, NodeKind, Rule, RuleStore, Scheme};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::auth::{self, AccessControl, CheckOutcome, Decision, Step};
use super::pool::{empty_body, PoolLimits, UpstreamPool};
use super::route::{self, EdgeConfigDoc, Route, Server};
use super::{body, strip_hop_by_hop, text, Body, HttpCounters, HttpError};
use crate::config::{Config, CoreConfig, HttpConfig};
use crate::run::NodeError;
use crate::tls::{self, Identity};

struct Rules {
    automatic: Vec<Rule>,
    store: Option<PathBuf>,
    loaded: Option<SystemTime>,
    list: AllowList,
}

impl Rules {
    /// The current list, re-reading the store when it changed; a store that cannot be read
    /// keeps the last good list (and says why).
    fn refreshed(&mut self) -> &AllowList {
        let Some(path) = &self.store else {
            return &self.list;
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified != self.loaded {
            self.loaded = modified;
            let store = match std::fs::read_to_string(path) {
                Ok(text) => RuleStore::from_json(&text).map_err(|e| e.to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RuleStore::default()),
                Err(e) => Err(e.to_string()),
            };
            match store {
                Ok(store) => self.list = store.allow_list(self.automatic.clone()),
                Err(e) => eprintln!(
                    "edgeway-control: allow list store {}: {e}; keeping the previous rules",
                    path.display()
                ),
            }
        }
        &self.list
    }
}

struct HttpCore {
    cfg: CoreConfig,
    http: HttpConfig,
    rules: Mutex<Rules>,
    upstream: Arc<UpstreamPool>,
    counters: Arc<HttpCounters>,
    access: Mutex<AccessControl>,
}

fn ucm_nodes(cfg: &CoreConfig, http: &HttpConfig) -> Vec<Node> {
    let mut nodes = Vec::new();
    for ucm in &cfg.ucm {
        nodes.push(Node {
            kind: NodeKind::UnifiedCm,
            host: ucm.host.clone(),
            http_port: None,
            https_port: Some(http.uds_port),
        });
        nodes.push(Node {
            kind: NodeKind::Tftp,
            host: ucm.host.clone(),
            http_port: Some(http.tftp_port),
            https_port: None,
        });
    }
    nodes.extend(http.nodes.iter().cloned());
    nodes
}

/// Builds the allow list and starts dialling the edge's tunnel listener; the counters are
/// for the admin API's status.
pub fn start(
    cfg: &Config,
    core: &CoreConfig,
    http: &HttpConfig,
    identity: &Identity,
) -> Result<Arc<HttpCounters>, NodeError> {
    let Some(tunnel_address) = http.tunnel_address else {
        return Err(NodeError::Io {
            what: "http.tunnel_address".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "missing: the core needs the edge's HTTP tunnel address",
            ),
        });
    };
    let automatic = automatic_rules(&ucm_nodes(core, http)).map_err(|e| NodeError::Io {
        what: "http automatic rules".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
    })?;
    let roots = tls::roots(&cfg.tls.ca)?;
    let tunnel_tls = TlsConnector::from(tls::client(Some(identity), roots.clone())?);
    let mut list = AllowList::new();
    list.extend(automatic.clone());
    let counters = Arc::new(HttpCounters::default());
    let state = Arc::new(HttpCore {
        cfg: core.clone(),
        http: http.clone(),
        rules: Mutex::new(Rules {
            automatic,
            store: http.allowlist_store.clone(),
            loaded: None,
            list,
        }),
        upstream: UpstreamPool::new(
            TlsConnector::from(tls::client(None, roots)?),
            PoolLimits::default(),
            counters.upstream.clone(),
        ),
        counters,
        access: Mutex::new(AccessControl::new(
            http.access.clone(),
            rand::random(),
            Instant::now(),
        )),
    });
    let counters = state.counters.clone();
    if http.access.path == auth::AuthenticationPath::None {
        eprintln!(
            "edgeway-control: MRA access control: authentication path None (no [http.access]): \
             the core authenticates no HTTP request"
        );
    }
    if http.access.accepts_tokens() {
        tokio::spawn(fetch_keys_at_start(state.clone()));
    }
    tokio::spawn(dial_tunnel(state, tunnel_address, tunnel_tls));
    Ok(counters)
}

async fn dial_tunnel(core: Arc<HttpCore>, address: std::net::SocketAddr, connector: TlsConnector) {
    let initial = Duration::from_millis(100);
    let mut backoff = initial;
    let Ok(name) = rustls_pki_types::ServerName::try_from(core.cfg.edge_name.clone()) else {
        eprintln!("edgeway-control: core.edge_name is not a TLS server name");
        return;
    };
    loop {
        let attempt = async {
            let tcp = TcpStream::connect(address).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(name.clone(), tcp).await
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(stream)) => {
                backoff = initial;
                core.counters.tunnel_up.fetch_add(1, Ordering::Relaxed);
                eprintln!("edgeway-control: HTTP tunnel up ({address})");
                let state = core.clone();
                let service =
                    hyper::service::service_fn(move |request| answer(state.clone(), request));
                let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(20))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                core.counters.tunnel_lost.fetch_add(1, Ordering::Relaxed);
                eprintln!("edgeway-control: HTTP tunnel to {address} closed ({served:?})");
            }
            Ok(Err(e)) => {
                eprintln!("edgeway-control: HTTP tunnel to {address} failed: {e}; retrying in {backoff:?}");
            }
            Err(_) => eprintln!("edgeway-control: HTTP tunnel to {address} timed out"),
        }
        tokio::time::sleep(backoff).await;
        backoff = crate::run::next_backoff(backoff, core.cfg.reconnect_max);
    }
}

fn edge_config(core: &HttpCore, domain: &str) -> Option<String> {
    let configured = core.cfg.domains.iter().find(|d| d.name == domain)?;
    let edge = |port| Server {
        address: core.cfg.edge_name.clone(),
        port,
    };
    let internal = |port| {
        core.cfg
            .ucm
            .iter()
            .map(|u| Server {
                address: u.host.clone(),
                port,
            })
            .collect()
    };
    Some(
        EdgeConfigDoc {
            sip_edge: configured
                .sip_registrations
                .then(|| edge(core.http.edge_sip_port)),
            http_edge: edge(core.http.edge_http_port),
            uds: internal(core.http.uds_port),
            tftp: internal(core.http.tftp_port),
        }
        .to_xml(),
    )
}

async fn answer(
    core: Arc<HttpCore>,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    core.counters.requests.fetch_add(1, Ordering::Relaxed);
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let not_found = |why: &str| {
        core.counters.not_found.fetch_add(1, Ordering::Relaxed);
        text(StatusCode::NOT_FOUND, why)
    };
    let route = match route::parse(&path) {
        Ok(route) => route,
        Err(e) => return Ok(not_found(&e.to_string())),
    };
    match route {
        Route::EdgeConfig { domain } => Ok(match edge_config(&core, &domain) {
            Some(_) if request.method() != hyper::Method::GET => {
                text(StatusCode::METHOD_NOT_ALLOWED, "get_edge_config takes GET")
            }
            Some(xml) => match access_refusal(&core, &domain, &request).await {
                Some(refusal) => refusal,
                None => body(StatusCode::OK, "application/xml", xml),
            },
            None => not_found(&format!("domain {domain} is not configured")),
        }),
        Route::Tunnel { domain, url } => {
            if !core.cfg.domains.iter().any(|d| d.name == domain) {
                return Ok(not_found(&format!("domain {domain} is not configured")));
            }
            if let Some(refusal) = access_refusal(&core, &domain, &request).await {
                return Ok(refusal);
            }
            let decision = {
                let mut rules = core.rules.lock().unwrap_or_else(|p| p.into_inner());
                let list = rules.refreshed();
                let d = list.decide(None, request.method().as_str(), &url);
                (d.allowed, d.reason.to_string(), d.url)
            };
            match decision {
                (true, _, Some(target)) => Ok(proxy(&core, request, target).await),
                (_, reason, _) => {
                    core.counters.denied.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "edgeway-control: HTTP allow list refused {} {url}: {reason}",
                        request.method()
                    );
                    Ok(text(
                        StatusCode::FORBIDDEN,
                        &format!("refused by the HTTP allow list: {reason}"),
                    ))
                }
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock_access(core: &HttpCore) -> std::sync::MutexGuard<'_, AccessControl> {
    core.access.lock().unwrap_or_else(|p| p.into_inner())
}

/// MRA access control for one request naming `domain`: `None` to go on, or the answer.
async fn access_refusal(
    core: &HttpCore,
    domain: &str,
    request: &Request<Incoming>,
) -> Option<Response<Body>> {
    let authorization = request.headers().get(hyper::header::AUTHORIZATION);
    let header = authorization.map(|v| v.as_bytes());
    let mut fetched = false;
    let decision = loop {
        let step = lock_access(core).authorize(Instant::now(), unix_now(), domain, header);
        match step {
            Step::Decided(d) => break d,
            Step::CheckWithUnifiedCm(check) => {
                let outcome = match authorization {
                    Some(value) => check_with_unified_cm(core, &check.user, value).await,
                    None => CheckOutcome::Rejected,
                };
                break lock_access(core).basic_checked(Instant::now(), check, outcome);
            }
            // authorize asks at most once per KEY_REFETCH_INTERVAL; `fetched` is a second
            // guard against looping.
            Step::FetchKeys if !fetched => {
                fetched = true;
                refresh_keys(core).await;
            }
            Step::FetchKeys => {
                break Decision::Refused {
                    challenges: Vec::new(),
                    reason: "token signed by an unknown key".into(),
                }
            }
        }
    };
    core.counters.access.count(&decision);
    access_answer(request, decision)
}

/// The response for a decision that is not `Allowed`.
fn access_answer(request: &Request<Incoming>, decision: Decision) -> Option<Response<Body>> {
    let status = StatusCode::from_u16(decision.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let (message, challenges, retry_after) = match decision {
        Decision::Allowed { .. } => return None,
        Decision::Challenge { challenges } => (
            "authentication required (MRA access control)".to_owned(),
            challenges,
            None,
        ),
        Decision::Refused { challenges, reason } => (reason, challenges, None),
        Decision::Forbidden { challenge } => (
            "the user's access policy does not allow Mobile and Remote Access".to_owned(),
            vec![challenge],
            None,
        ),
        Decision::TooMany {
            user,
            retry_after_s,
        } => (
            format!("too many authorizations for {user:?} (authorization rate control)"),
            Vec::new(),
            Some(retry_after_s),
        ),
        Decision::Unavailable { reason } => (
            format!("cannot check credentials with Unified CM: {reason}"),
            Vec::new(),
            None,
        ),
    };
    eprintln!(
        "edgeway-control: MRA access control: {status} for {} {}: {message}",
        request.method(),
        request.uri().path()
    );
    let mut response = text(status, &message);
    let headers = response.headers_mut();
    for challenge in challenges {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&challenge) {
            headers.append(hyper::header::WWW_AUTHENTICATE, v);
        }
    }
    if let Some(seconds) = retry_after {
        headers.insert(hyper::header::RETRY_AFTER, seconds.into());
    }
    Some(response)
}

/// RFC 3986 percent-encoding of everything but unreserved characters, so a user name can
/// never add path segments to the UDS URL.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One GET to `path` on each Unified CM node's UDS port in turn, until one answers.
async fn ask_unified_cm(
    core: &HttpCore,
    path: &str,
    authorization: Option<&hyper::header::HeaderValue>,
) -> Result<(StatusCode, bytes::Bytes), String> {
    let mut last = "no core.ucm node configured".to_owned();
    for ucm in &core.cfg.ucm {
        let mut request = Request::get(path);
        if let Some(value) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, value.clone());
        }
        let authority = format!("{}:{}", ucm.host, core.http.uds_port);
        let request = match request
            .header(hyper::header::HOST, authority.as_str())
            .body(empty_body())
        {
            Ok(r) => r,
            Err(e) => return Err(format!("request: {e}")),
        };
        let answer = async {
            let response =
                internal_exchange(core, Scheme::Https, &ucm.host, core.http.uds_port, request)
                    .await?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), 256 * 1024)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        match answer.await {
            Ok(answer) => return Ok(answer),
            Err(e) => last = format!("{authority}: {e}"),
        }
    }
    Err(last)
}

/// Asks Unified CM (UDS) whether the client's credentials for `user` are right.
async fn check_with_unified_cm(
    core: &HttpCore,
    user: &str,
    authorization: &hyper::header::HeaderValue,
) -> CheckOutcome {
    let path = format!("/cucm-uds/user/{}", path_segment(user));
    match ask_unified_cm(core, &path, Some(authorization)).await {
        Ok((status, _)) if status.is_success() => CheckOutcome::Accepted,
        Ok((StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND, _)) => {
            CheckOutcome::Rejected
        }
        Ok((status, _)) => CheckOutcome::Unreachable(format!("UDS answered {status}")),
        Err(e) => CheckOutcome::Unreachable(e),
    }
}

/// Fetches the signing keys from the refresh servers (every Unified CM node) and installs
/// what came; returns whether any keys came.
async fn refresh_keys(core: &HttpCore) -> bool {
    match ask_unified_cm(core, "/oauth/keys", None).await {
        Ok((status, body)) if status.is_success() => {
            match auth::token::KeySet::from_document(&String::from_utf8_lossy(&body)) {
                Ok(keys) => {
                    lock_access(core).install_keys(keys);
                    true
                }
                Err(e) => {
                    eprintln!("edgeway-control: refresh servers: {e}");
                    false
                }
            }
        }
        Ok((status, _)) => {
            eprintln!("edgeway-control: refresh servers: /oauth/keys answered {status}");
            false
        }
        Err(e) => {
            eprintln!("edgeway-control: refresh servers: {e}");
            false
        }
    }
}

/// At start: fetch the signing keys, retrying with backoff until a fetch succeeds.
async fn fetch_keys_at_start(core: Arc<HttpCore>) {
    let mut backoff = Duration::from_millis(200);
    while !refresh_keys(&core).await {
        tokio::time::sleep(backoff).await;
        backoff = crate::run::next_backoff(backoff, core.cfg.reconnect_max);
    }
}

/// Forwards to the canonical URL the allow list returned, never the request's own text.
async fn proxy(
    core: &HttpCore,
    request: Request<Incoming>,
    target: edgeway_allowlist::NormalizedUrl,
) -> Response<Body> {
    match send_upstream(core, request, &target).await {
        Ok(response) => response,
        Err(e) => {
            core.counters
                .upstream_failed
                .fetch_add(1, Ordering::Relaxed);
            eprintln!("edgeway-control: {e}");
            text(StatusCode::BAD_GATEWAY, &e.to_string())
        }
    }
}

async fn send_upstream(
    core: &HttpCore,
    request: Request<Incoming>,
    target: &edgeway_allowlist::NormalizedUrl,
) -> Result<Response<Body>, HttpError> {
    let fail = |reason: String| HttpError::Upstream {
        url: target.to_string(),
        reason,
    };
    let (mut parts, body) = request.into_parts();
    let mut path = target.path.clone();
    if let Some(q) = &target.query {
        path.push('?');
        path.push_str(q);
    }
    parts.uri = path.parse().map_err(|_| fail("unusable path".into()))?;
    parts.version = hyper::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let authority = format!("{}:{}", target.host, target.port);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&authority) {
        parts.headers.insert(hyper::header::HOST, v);
    }
    let request = Request::from_parts(parts, body.boxed());
    let response = internal_exchange(core, target.scheme, &target.host, target.port, request)
        .await
        .map_err(fail)?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = hyper::Version::HTTP_2;
    Ok(Response::from_parts(parts, body.boxed()))
}

/// Sends one HTTP/1.1 request to an internal server (TLS verified against `tls.ca` for
/// HTTPS) on a pooled keep-alive connection, or a new one.
async fn internal_exchange(
    core: &HttpCore,
    scheme: Scheme,
    host: &str,
    port: u16,
    request: Request<Body>,
) -> Result<Response<Incoming>, String> {
    core.upstream.send(scheme, host, port, request).await
}
