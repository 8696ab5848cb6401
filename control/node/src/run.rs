//! The IO layer: thin tokio tasks around the sans-IO proxies. Each connection has a reader
//! task (framing with [`StreamFramer`], keep-alives, timeouts) and a writer task fed by a
//! bounded queue, so a slow reader only loses its own messages. The proxies sit behind one
//! mutex each and are only ever called with non-blocking sends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use edgeway_sip::{Frame, FramerError, Message, ParseLimits, StreamFramer};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{Config, CoreConfig, EdgeConfig, Role, UcmTransport};
use crate::core::{ConnId, CoreOutput, CoreProxy, CoreSettings};
use crate::counters::Counters;
use crate::edge::{EdgeOutput, EdgeProxy, FlowId};
use crate::protect::Shield;
use crate::sip_util::count_parse_error;
use crate::tls::{self, Identity};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// TLS material unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A listener or file could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `[media]` is configured but the node's flow table could not be opened.
    #[error("media: {0}")]
    Media(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}

/// Bytes read from a connection at a time.
const READ_BUFFER: usize = 2048;
/// Most bytes coalesced into one write.
const WRITE_BATCH: usize = 64 * 1024;
/// Messages queued per client connection before it counts as a slow reader.
const CLIENT_QUEUE: usize = 256;
/// Messages queued towards the traversal peer or a Unified CM connection.
const TRUNK_QUEUE: usize = 16_384;

type Sender = mpsc::Sender<Vec<u8>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the node down with it: the data is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn send(tx: &Sender, bytes: Vec<u8>, counters: &Counters) {
    if tx.try_send(bytes).is_err() {
        counters.send_queue_full.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts the writer half of a connection: writes what arrives on its queue (of
/// `capacity` messages), in order, and shuts the stream down when every sender is gone.
fn spawn_writer<W>(mut writer: W, capacity: usize) -> (Sender, tokio::task::JoinHandle<()>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(capacity);
    let task = tokio::spawn(async move {
        while let Some(mut bytes) = rx.recv().await {
            // Coalesce what is already queued into one write: one TLS record and one
            // syscall for a burst instead of one per message (the traversal carries all).
            while bytes.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(more) => bytes.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    (tx, task)
}

/// Why a connection's reader stopped.
#[derive(Debug)]
enum ReadEnd {
    Closed,
    Idle,
    Framing(FramerError),
}

/// The Warning agent of this node's own 400s: a pseudonym (RFC 3261 §20.43), so a refusal
/// does not tell a client the core's or the edge's host names.
const WARN_AGENT: &str = "edgeway";

/// Reads frames until the peer closes, goes quiet for `idle`, or breaks framing; each
/// message goes to `on_frame`. Pings and messages that framed but did not parse are
/// answered on `tx` here.
async fn read_frames<R>(
    mut reader: R,
    limits: ParseLimits,
    idle: Duration,
    tx: &Sender,
    counters: &Counters,
    ping_counter: &AtomicU64,
    mut on_frame: impl FnMut(Message),
) -> ReadEnd
where
    R: AsyncRead + Unpin,
{
    let mut framer = StreamFramer::new(limits);
    // Small on purpose: one per connection, and idle connections dominate (a larger
    // message just takes more reads).
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = match tokio::time::timeout(idle, reader.read(&mut buf)).await {
            Err(_) => return ReadEnd::Idle,
            Ok(Err(_)) | Ok(Ok(0)) => return ReadEnd::Closed,
            Ok(Ok(n)) => n,
        };
        if let Err(e) = framer.handle_data(&buf[..n]) {
            return ReadEnd::Framing(e);
        }
        while let Some(frame) = framer.poll_frame() {
            match frame {
                Frame::Ping => {
                    ping_counter.fetch_add(1, Ordering::Relaxed);
                    send(tx, b"\r\n".to_vec(), counters);
                }
                Frame::Pong => {}
                Frame::Message(m) => on_frame(m),
                Frame::Invalid(bad) => {
                    // Framing held, so only this message is lost: answer it (requests
                    // only) and keep the connection.
                    count_parse_error(counters, bad.error());
                    counters.malformed_survived.fetch_add(1, Ordering::Relaxed);
                    if let Some(response) = bad.response(WARN_AGENT) {
                        send(tx, response.to_bytes(), counters);
                    }
                }
            }
        }
    }
}

/// Counts a framing failure and builds the last words sent before closing: 513 for
/// oversized messages, 400 naming the error otherwise.
fn framing_refusal(e: &FramerError, counters: &Counters) -> Vec<u8> {
    let (status, reason) = match e {
        FramerError::TooLarge { .. } => {
            counters.oversized.fetch_add(1, Ordering::Relaxed);
            (513, format!("Message Too Large ({e})"))
        }
        FramerError::HeaderTooLarge { .. } => {
            counters.header_flood.fetch_add(1, Ordering::Relaxed);
            (513, format!("Message Too Large ({e})"))
        }
        FramerError::Message(pe) => {
            count_parse_error(counters, pe);
            (pe.status_code(), format!("Bad Request ({pe})"))
        }
        _ => {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            (400, format!("Bad Request ({e})"))
        }
    };
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    format!("SIP/2.0 {status} {reason}\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

/// What `ready` reports: the addresses actually bound.
#[derive(Debug, Clone)]
pub struct Ready {
    /// JSON object written to stdout and the ready file.
    pub json: Value,
}

/// Validates what the configuration file alone cannot: certificates load, and a core's
/// certificate carries the Client Authentication EKU the edge will demand.
pub fn check_tls(cfg: &Config) -> Result<Identity, NodeError> {
    let identity = Identity::load(&cfg.tls.certificate, &cfg.tls.key)?;
    tls::roots(&cfg.tls.ca)?;
    if cfg.role == Role::Core {
        tls::check_traversal_client_certificate(&identity, &cfg.tls.certificate)?;
    }
    Ok(identity)
}

/// Runs the node until the process is stopped.
pub async fn run(cfg: Config, ready_file: Option<PathBuf>) -> Result<(), NodeError> {
    let identity = check_tls(&cfg)?;
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(io_error(format!("state_dir {}", cfg.state_dir.display())))?;
    let counters = Arc::new(Counters::default());
    let limits = ParseLimits {
        max_message_size: cfg.max_message_size,
        ..ParseLimits::default()
    };
    let mut ready = json!({
        "ready": true,
        "role": cfg.role,
        "node": cfg.node_name,
        "pid": std::process::id(),
        "admin": cfg.admin_socket,
    });
    let admin: Arc<dyn AdminTarget> = match (&cfg.edge, &cfg.core) {
        (Some(edge), _) => {
            start_edge(&cfg, edge, &identity, counters.clone(), limits, &mut ready).await?
        }
        (_, Some(core)) => {
            start_core(&cfg, core, &identity, counters.clone(), limits, &mut ready).await?
        }
        _ => unreachable_config(),
    };
    admin.set_maintenance(cfg.maintenance);
    let _ = std::fs::remove_file(&cfg.admin_socket);
    let listener = tokio::net::UnixListener::bind(&cfg.admin_socket).map_err(io_error(format!(
        "admin socket {}",
        cfg.admin_socket.display()
    )))?;
    // The admin API changes the node's behaviour (maintenance): owner only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.admin_socket, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error(format!(
                "admin socket {}",
                cfg.admin_socket.display()
            )))?;
    }
    let line = ready.to_string();
    println!("{line}");
    if let Some(path) = ready_file.or(cfg.ready_file.clone()) {
        // Written whole then renamed, so a reader never sees half a line.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{line}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(io_error(format!("ready file {}", path.display())))?;
    }
    serve_admin(listener, admin).await;
    Ok(())
}

fn unreachable_config() -> Arc<dyn AdminTarget> {
    // Config::parse guarantees the section of the role; keep a harmless answer anyway.
    Arc::new(NoTarget)
}

#[derive(Debug)]
struct NoTarget;
impl AdminTarget for NoTarget {
    fn status(&self) -> Value {
        json!({})
    }
    fn registrations(&self) -> Value {
        json!([])
    }
    fn set_maintenance(&self, _on: bool) {}
}

/// What the admin API can ask of a running node.
trait AdminTarget: Send + Sync + std::fmt::Debug {
    /// The edge's intrusion protection, when `[protection]` turns it on.
    fn shield(&self) -> Option<&Arc<Shield>> {
        None
    }
    fn status(&self) -> Value;
    fn registrations(&self) -> Value;
    fn set_maintenance(&self, on: bool);
    /// Current calls (`None`) or the last `n` completed ones (`Some(n)`).
    fn calls(&self, _history: Option<usize>) -> Value {
        json!([])
    }
    /// `drained` and since when (see [`crate::calls::drain_json`]).
    fn drain(&self) -> Value {
        json!({"drained": false})
    }
}

/// The admin API: JSON lines on a Unix socket. Commands (a word per line, or a JSON object
/// with `cmd`): `status`, `registrations`, `maintenance on|off`, `calls`,
/// `calls history [--limit N]`.
async fn serve_admin(listener: tokio::net::UnixListener, target: Arc<dyn AdminTarget>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(r.take(64 * 1024));
            let mut line = String::new();
            loop {
                line.clear();
                match tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let reply = admin_command(&*target, line.trim());
                if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The answer to `blocked` and `unblock` on a node without protection.
const PROTECTION_OFF: &str =
    "intrusion protection is off on this node (it runs on the edge, with a [protection] section)";

fn admin_command(target: &dyn AdminTarget, line: &str) -> Value {
    let words: Vec<String> = match serde_json::from_str::<Value>(line) {
        Ok(v) if v.is_object() => [v.get("cmd"), v.get("arg")]
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => line.split_whitespace().map(str::to_owned).collect(),
    };
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["status"] => json!({"ok": true, "status": target.status()}),
        ["registrations"] => json!({"ok": true, "registrations": target.registrations()}),
        ["blocked"] => match target.shield() {
            Some(shield) => json!({"ok": true, "blocked": shield.blocked_json()}),
            None => json!({"ok": false, "error": PROTECTION_OFF}),
        },
        ["unblock", address] => match (target.shield(), address.parse::<IpAddr>()) {
            (None, _) => json!({"ok": false, "error": PROTECTION_OFF}),
            (_, Err(_)) => {
                json!({"ok": false, "error": format!("unblock wants an IP address, not {address:?}")})
            }
            (Some(shield), Ok(ip)) => {
                json!({"ok": true, "address": ip.to_string(), "unblocked": shield.unblock(ip)})
            }
        },
        ["maintenance", on @ ("on" | "off")] => {
            target.set_maintenance(on == "on");
            let drain = target.drain();
            json!({"ok": true, "maintenance": on == "on", "drained": drain["drained"], "drained_at_ms": drain["drained_at_ms"]})
        }
        ["calls"] => json!({"ok": true, "calls": target.calls(None)}),
        ["calls", "history"] => {
            json!({"ok": true, "history": target.calls(Some(crate::calls::HISTORY_LEN))})
        }
        ["calls", "history", "--limit", n] => match n.parse::<usize>() {
            Ok(n) => json!({"ok": true, "history": target.calls(Some(n))}),
            Err(_) => {
                json!({"ok": false, "error": format!("calls history --limit wants a number of calls, not {n:?}")})
            }
        },
        _ => {
            json!({"ok": false, "error": format!("unknown command {line:?}: use status, registrations, maintenance on|off, calls, calls history [--limit N]")})
        }
    }
}

// ---------------------------------------------------------------- edge

#[derive(Debug)]
struct EdgeState {
    proxy: EdgeProxy,
    flows: HashMap<FlowId, Sender>,
    per_source: HashMap<IpAddr, usize>,
    traversal: Option<(u64, Sender)>,
}

#[derive(Debug)]
struct Edge {
    state: Mutex<EdgeState>,
    /// Intrusion protection (`[protection]`), shared with the HTTPS listeners.
    shield: Option<Arc<Shield>>,
    counters: Arc<Counters>,
    cfg: EdgeConfig,
    limits: ParseLimits,
    next_id: AtomicU64,
}

impl Edge {
    fn dispatch(&self, state: &mut EdgeState, out: Vec<EdgeOutput>) {
        for o in out {
            match o {
                EdgeOutput::ToClient(flow, bytes) => match state.flows.get(&flow) {
                    Some(tx) => send(tx, bytes, &self.counters),
                    None => {
                        self.counters.flow_gone.fetch_add(1, Ordering::Relaxed);
                    }
                },
                EdgeOutput::ToCore(bytes) => match &state.traversal {
                    Some((_, tx)) => send(tx, bytes, &self.counters),
                    None => {
                        self.counters
                            .traversal_down_refused
                            .fetch_add(1, Ordering::Relaxed);
                    }
                },
            }
        }
    }
}

impl AdminTarget for Edge {
    fn status(&self) -> Value {
        let s = lock(&self.state);
        json!({
            "role": "edge",
            "traversal": if s.traversal.is_some() { "up" } else { "down" },
            "maintenance": s.proxy.maintenance(),
            // `s` is held: the drain state read from it, not through `self.drain()`.
            "drain": crate::calls::drain_json(s.proxy.maintenance(), s.proxy.media()),
            "client_flows": s.proxy.flow_count(),
            "registered_flows": s.proxy.registered_flows(),
            "media": s.proxy.media().map(|m| m.status_json()),
            "protection": self.shield.as_ref().map(|p| p.status_json()),
            "counters": self.counters.to_json(),
        })
    }
    fn shield(&self) -> Option<&Arc<Shield>> {
        self.shield.as_ref()
    }
    fn registrations(&self) -> Value {
        // The edge holds flows, not bindings: the core's admin API lists registrations.
        json!([])
    }
    fn set_maintenance(&self, on: bool) {
        lock(&self.state).proxy.set_maintenance(on);
    }
    fn calls(&self, history: Option<usize>) -> Value {
        let s = lock(&self.state);
        match history {
            None => crate::calls::calls_json(s.proxy.media()),
            Some(n) => crate::calls::history_json(s.proxy.media(), n),
        }
    }
    fn drain(&self) -> Value {
        let s = lock(&self.state);
        crate::calls::drain_json(s.proxy.maintenance(), s.proxy.media())
    }
}

/// The node's calls' media from its `[media]` section.
fn media_for(
    cfg: &Config,
    media: &crate::config::MediaConfig,
    counters: &Arc<Counters>,
) -> Result<crate::media::CallMedia, NodeError> {
    crate::media::CallMedia::from_config(media, cfg.role, &cfg.node_name, counters.clone())
        .map_err(|e| NodeError::Media(e.to_string()))
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(io_error(format!("{what} {addr}")))
}

async fn start_edge(
    cfg: &Config,
    edge_cfg: &EdgeConfig,
    identity: &Identity,
    counters: Arc<Counters>,
    limits: ParseLimits,
    ready: &mut Value,
) -> Result<Arc<dyn AdminTarget>, NodeError> {
    let sip = bind(edge_cfg.sip_listen, "edge.sip_listen").await?;
    let traversal = bind(edge_cfg.traversal_listen, "edge.traversal_listen").await?;
    let sip_addr = sip.local_addr().map_err(io_error("edge.sip_listen"))?;
    let traversal_addr = traversal
        .local_addr()
        .map_err(io_error("edge.traversal_listen"))?;
    ready["sip"] = json!(sip_addr.to_string());
    ready["traversal"] = json!(traversal_addr.to_string());
    let client_tls = TlsAcceptor::from(tls::client_facing_server(identity)?);
    let traversal_tls = TlsAcceptor::from(tls::traversal_server(
        identity,
        tls::roots(&cfg.tls.ca)?,
        &edge_cfg.tls_verify_subject_name,
        counters.clone(),
    )?);
    let edge = Arc::new(Edge {
        state: Mutex::new(EdgeState {
            proxy: {
                let mut proxy =
                    EdgeProxy::new(&edge_cfg.sip_host, sip_addr.port(), counters.clone());
                proxy.set_retry_after(edge_cfg.retry_after_s);
                if let Some(media) = &cfg.media {
                    proxy.set_media(media_for(cfg, media, &counters)?);
                }
                proxy
            },
            flows: HashMap::new(),
            per_source: HashMap::new(),
            traversal: None,
        }),
        shield: cfg.protection.clone().map(|p| {
            // Without `xdp_pin_dir`, the pins the data plane recorded for the media table.
            let recorded = cfg
                .media
                .as_ref()
                .map(|m| edgeway_xdp::pin_dir_for_table(&m.table_dir, None));
            let shield = Shield::new(p, recorded);
            shield.spawn_timer();
            shield
        }),
        counters,
        cfg: edge_cfg.clone(),
        limits,
        next_id: AtomicU64::new(1),
    });
    tokio::spawn(accept_clients(edge.clone(), sip, client_tls));
    tokio::spawn(accept_traversal(edge.clone(), traversal, traversal_tls));
    if let Some(http) = &cfg.http {
        crate::http::edge::start(
            cfg,
            edge_cfg,
            http,
            identity,
            edge.counters.clone(),
            edge.shield.clone(),
            ready,
        )
        .await?;
    }
    Ok(edge)
}

async fn accept_clients(edge: Arc<Edge>, listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if edge.shield.as_ref().is_some_and(|p| !p.admit(peer.ip())) {
            continue; // a blocked source: dropping `tcp` closes it before any TLS
        }
        {
            let mut s = lock(&edge.state);
            let n = s.per_source.entry(peer.ip()).or_insert(0);
            if *n >= edge.cfg.max_connections_per_source {
                edge.counters
                    .refused_per_source_limit
                    .fetch_add(1, Ordering::Relaxed);
                continue; // dropping `tcp` closes it
            }
            *n += 1;
        }
        let _ = tcp.set_nodelay(true);
        tokio::spawn(client_connection(edge.clone(), tcp, peer, acceptor.clone()));
    }
}

async fn client_connection(
    edge: Arc<Edge>,
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
) {
    serve_client(&edge, tcp, acceptor).await;
    let mut s = lock(&edge.state);
    if let Some(n) = s.per_source.get_mut(&peer.ip()) {
        *n -= 1;
        if *n == 0 {
            s.per_source.remove(&peer.ip());
        }
    }
}

async fn serve_client(edge: &Arc<Edge>, tcp: TcpStream, acceptor: TlsAcceptor) {
    let counters = &edge.counters;
    let peer = tcp.peer_addr().ok();
    let stream =
        match tokio::time::timeout(edge.cfg.tls_handshake_timeout, acceptor.accept(tcp)).await {
            Err(_) => {
                counters.client_tls_timeout.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Err(_)) => {
                counters.client_tls_failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Ok(s)) => s,
        };
    counters.client_connections.fetch_add(1, Ordering::Relaxed);
    let flow = edge.next_id.fetch_add(1, Ordering::Relaxed);
    let (reader, writer) = tokio::io::split(stream);
    let (tx, writer_task) = spawn_writer(writer, CLIENT_QUEUE);
    {
        let mut s = lock(&edge.state);
        s.flows.insert(flow, tx.clone());
        s.proxy.flow_opened(flow);
        if let Some(peer) = peer {
            s.proxy.flow_address(flow, peer.ip());
        }
    }
    let end = read_frames(
        reader,
        edge.limits,
        edge.cfg.idle_timeout,
        &tx,
        counters,
        &counters.keepalive_pings,
        |msg| {
            let mut s = lock(&edge.state);
            let mut out = Vec::new();
            s.proxy.client_message(flow, msg, &mut out);
            edge.dispatch(&mut s, out);
        },
    )
    .await;
    match end {
        ReadEnd::Idle => {
            counters.client_idle_closed.fetch_add(1, Ordering::Relaxed);
        }
        ReadEnd::Framing(e) => send(&tx, framing_refusal(&e, counters), counters),
        ReadEnd::Closed => {}
    }
    {
        let mut s = lock(&edge.state);
        s.flows.remove(&flow);
        s.proxy.flow_closed(flow);
    }
    drop(tx);
    // Let the last words (a 400/513) reach the client before the connection closes.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer_task).await;
}

/// Traversal handshakes in progress at once: one core needs one; a flood of half-open
/// handshakes on 7001 must not eat the edge's memory.
const TRAVERSAL_HANDSHAKES: usize = 8;

async fn accept_traversal(edge: Arc<Edge>, listener: TcpListener, acceptor: TlsAcceptor) {
    let pending = Arc::new(tokio::sync::Semaphore::new(TRAVERSAL_HANDSHAKES));
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if edge.shield.as_ref().is_some_and(|p| !p.admit(peer.ip())) {
            continue; // a blocked source: dropping `tcp` closes it before any TLS
        }
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            edge.counters
                .traversal_tls_failed
                .fetch_add(1, Ordering::Relaxed);
            continue; // dropping `tcp` refuses it
        };
        let edge = edge.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(edge.cfg.tls_handshake_timeout, acceptor.accept(tcp)).await;
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    // The verifier counted and logged its own refusals.
                    if !e.to_string().contains("traversal peer") {
                        edge.counters
                            .traversal_tls_failed
                            .fetch_add(1, Ordering::Relaxed);
                        eprintln!("edgeway-control: traversal handshake failed: {e}");
                    }
                    return;
                }
                Err(_) => {
                    edge.counters
                        .traversal_tls_failed
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            drop(permit);
            serve_traversal(&edge, stream).await;
        });
    }
}

async fn serve_traversal<S>(edge: &Arc<Edge>, stream: S)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let counters = &edge.counters;
    let generation = edge.next_id.fetch_add(1, Ordering::Relaxed);
    let (reader, writer) = tokio::io::split(stream);
    let (tx, writer_task) = spawn_writer(writer, TRUNK_QUEUE);
    {
        // A new core connection replaces the old one (the core restarted or reconnected).
        let mut s = lock(&edge.state);
        s.traversal = Some((generation, tx.clone()));
        s.proxy.set_traversal_up(true);
    }
    counters.traversal_connected.fetch_add(1, Ordering::Relaxed);
    eprintln!("edgeway-control: traversal zone up (core connected)");
    let end = read_frames(
        reader,
        edge.limits,
        edge.cfg.traversal_dead_peer,
        &tx,
        counters,
        &counters.traversal_pings,
        |msg| {
            let mut s = lock(&edge.state);
            let mut out = Vec::new();
            s.proxy.core_message(msg, &mut out);
            edge.dispatch(&mut s, out);
        },
    )
    .await;
    counters.traversal_lost.fetch_add(1, Ordering::Relaxed);
    eprintln!("edgeway-control: traversal connection ended: {end:?}");
    {
        let mut s = lock(&edge.state);
        if s.traversal.as_ref().is_some_and(|(g, _)| *g == generation) {
            s.traversal = None;
            s.proxy.set_traversal_up(false);
        }
    }
    drop(tx);
    writer_task.abort();
}

// ---------------------------------------------------------------- core

#[derive(Debug)]
struct CoreState {
    proxy: CoreProxy,
    edge: Option<Sender>,
    ucm: HashMap<ConnId, Sender>,
}

#[derive(Debug)]
struct Core {
    state: Mutex<CoreState>,
    counters: Arc<Counters>,
    cfg: CoreConfig,
    limits: ParseLimits,
    next_id: AtomicU64,
    /// The HTTP side's counters (tunnel, allow list, upstream pool), once it started.
    http: std::sync::OnceLock<Arc<crate::http::HttpCounters>>,
}

impl Core {
    fn dispatch(&self, state: &mut CoreState, out: Vec<CoreOutput>) {
        for o in out {
            match o {
                CoreOutput::ToEdge(bytes) => match &state.edge {
                    Some(tx) => send(tx, bytes, &self.counters),
                    None => {
                        self.counters
                            .traversal_down_refused
                            .fetch_add(1, Ordering::Relaxed);
                    }
                },
                CoreOutput::ToUcm(conn, bytes) => match state.ucm.get(&conn) {
                    Some(tx) => send(tx, bytes, &self.counters),
                    None => {
                        self.counters
                            .ucm_unreachable
                            .fetch_add(1, Ordering::Relaxed);
                    }
                },
            }
        }
    }

    fn with_proxy(&self, f: impl FnOnce(&mut CoreProxy, &mut Vec<CoreOutput>)) {
        let mut s = lock(&self.state);
        let mut out = Vec::new();
        f(&mut s.proxy, &mut out);
        self.dispatch(&mut s, out);
    }
}

impl AdminTarget for Core {
    fn status(&self) -> Value {
        let s = lock(&self.state);
        let (zones, rules) = s.proxy.zones();
        let nodes: Vec<Value> = s
            .proxy
            .node_states()
            .into_iter()
            .map(|(name, up)| json!({"name": name, "connected": up}))
            .collect();
        json!({
            "role": "core",
            "traversal": if s.edge.is_some() { "up" } else { "down" },
            "maintenance": s.proxy.maintenance(),
            // `s` is held: the drain state read from it, not through `self.drain()`.
            "drain": crate::calls::drain_json(s.proxy.maintenance(), s.proxy.media()),
            "sip_path_headers": self.cfg.sip_path_headers,
            "registrations": s.proxy.registrations(Instant::now()).len(),
            "ucm_nodes": nodes,
            "zones": zones,
            "search_rules": rules,
            "media": s.proxy.media().map(|m| m.status_json()),
            "counters": self.counters.to_json(),
            "http": self.http.get().map(|c| c.to_json()),
        })
    }
    fn registrations(&self) -> Value {
        let s = lock(&self.state);
        let list: Vec<Value> = s
            .proxy
            .registrations(Instant::now())
            .into_iter()
            .map(|(b, left)| {
                let mut v = json!(b);
                v["expires_in"] = json!(left);
                v
            })
            .collect();
        json!(list)
    }
    fn set_maintenance(&self, on: bool) {
        lock(&self.state).proxy.set_maintenance(on);
    }
    fn calls(&self, history: Option<usize>) -> Value {
        let s = lock(&self.state);
        match history {
            None => crate::calls::calls_json(s.proxy.media()),
            Some(n) => crate::calls::history_json(s.proxy.media(), n),
        }
    }
    fn drain(&self) -> Value {
        let s = lock(&self.state);
        crate::calls::drain_json(s.proxy.maintenance(), s.proxy.media())
    }
}

async fn start_core(
    cfg: &Config,
    core_cfg: &CoreConfig,
    identity: &Identity,
    counters: Arc<Counters>,
    limits: ParseLimits,
    ready: &mut Value,
) -> Result<Arc<dyn AdminTarget>, NodeError> {
    let sip = bind(core_cfg.sip_listen, "core.sip_listen").await?;
    let sip_addr = sip.local_addr().map_err(io_error("core.sip_listen"))?;
    ready["sip"] = json!(sip_addr.to_string());
    let roots = tls::roots(&cfg.tls.ca)?;
    let traversal_tls = TlsConnector::from(tls::client(Some(identity), roots.clone())?);
    let ucm_tls = TlsConnector::from(tls::client(None, roots)?);
    let settings = CoreSettings {
        host: core_cfg.sip_host.clone(),
        port: sip_addr.port(),
        path_headers: core_cfg.sip_path_headers,
        retry_after_s: core_cfg.retry_after_s,
        domains: core_cfg.domains.clone(),
        nodes: core_cfg.ucm.clone(),
        // Random high half, so a restarted core never reissues a number Unified CM holds.
        binding_id_base: (u64::from(rand::random::<u32>()) << 32) | 1,
    };
    let mut proxy = CoreProxy::new(settings, counters.clone());
    proxy.set_call_setup_timeout(core_cfg.call_setup_timeout);
    if let Some(media) = &cfg.media {
        proxy.set_media(media_for(cfg, media, &counters)?);
    }
    let core = Arc::new(Core {
        state: Mutex::new(CoreState {
            proxy,
            edge: None,
            ucm: HashMap::new(),
        }),
        counters,
        cfg: core_cfg.clone(),
        limits,
        next_id: AtomicU64::new(1),
        http: std::sync::OnceLock::new(),
    });
    tokio::spawn(dial_edge(core.clone(), traversal_tls));
    if let Some(http) = &cfg.http {
        let counters = crate::http::core::start(cfg, core_cfg, http, identity)?;
        let _ = core.http.set(counters);
    }
    for index in 0..core_cfg.ucm.len() {
        tokio::spawn(dial_ucm(core.clone(), index, ucm_tls.clone()));
    }
    tokio::spawn(accept_ucm(core.clone(), sip));
    let timer = core.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            timer.with_proxy(|p, out| {
                let now = Instant::now();
                p.handle_timeout(now);
                p.call_timeouts(now, out);
            });
        }
    });
    Ok(core)
}

/// Exponential backoff: 100 ms doubling up to `max`.
pub(crate) fn next_backoff(current: Duration, max: Duration) -> Duration {
    (current * 2).min(max)
}

async fn dial_edge(core: Arc<Core>, connector: TlsConnector) {
    let initial = Duration::from_millis(100);
    let mut backoff = initial;
    let name = match rustls_pki_types::ServerName::try_from(core.cfg.edge_name.clone()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("edgeway-control: core.edge_name is not a TLS server name: {e}");
            return;
        }
    };
    loop {
        let attempt = async {
            let tcp = TcpStream::connect(core.cfg.edge_address).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(name.clone(), tcp).await
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(stream)) => {
                backoff = initial;
                eprintln!(
                    "edgeway-control: traversal zone up ({})",
                    core.cfg.edge_address
                );
                core.counters
                    .traversal_connected
                    .fetch_add(1, Ordering::Relaxed);
                serve_edge_link(&core, stream).await;
                core.counters.traversal_lost.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                core.counters
                    .traversal_tls_failed
                    .fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "edgeway-control: traversal to {} failed: {e}; retrying in {backoff:?}",
                    core.cfg.edge_address
                );
            }
            Err(_) => {
                core.counters
                    .traversal_tls_failed
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = next_backoff(backoff, core.cfg.reconnect_max);
    }
}

async fn serve_edge_link<S>(core: &Arc<Core>, stream: S)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let (tx, writer_task) = spawn_writer(writer, TRUNK_QUEUE);
    {
        let mut s = lock(&core.state);
        s.edge = Some(tx.clone());
        s.proxy.set_traversal_up(true);
    }
    let pinger = {
        let tx = tx.clone();
        let core = core.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(core.cfg.keepalive_interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                core.counters
                    .traversal_pings
                    .fetch_add(1, Ordering::Relaxed);
                send(&tx, b"\r\n\r\n".to_vec(), &core.counters);
            }
        })
    };
    let ignored = AtomicU64::new(0);
    let end = read_frames(
        reader,
        core.limits,
        core.cfg.dead_peer_timeout,
        &tx,
        &core.counters,
        &ignored,
        |msg| core.with_proxy(|p, out| p.edge_message(Instant::now(), msg, out)),
    )
    .await;
    eprintln!("edgeway-control: traversal connection ended: {end:?}");
    pinger.abort();
    {
        let mut s = lock(&core.state);
        s.edge = None;
        s.proxy.set_traversal_up(false);
    }
    drop(tx);
    writer_task.abort();
}

async fn dial_ucm(core: Arc<Core>, index: usize, connector: TlsConnector) {
    let node = core.cfg.ucm[index].clone();
    let initial = Duration::from_millis(100);
    let mut backoff = initial;
    loop {
        match TcpStream::connect(node.socket).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                backoff = initial;
                match node.transport {
                    UcmTransport::Tcp => serve_ucm(&core, tcp, Some(index)).await,
                    UcmTransport::Tls => {
                        let name = rustls_pki_types::ServerName::try_from(node.host.clone());
                        match name {
                            Ok(name) => match connector.connect(name, tcp).await {
                                Ok(tls) => serve_ucm(&core, tls, Some(index)).await,
                                Err(e) => eprintln!(
                                    "edgeway-control: TLS to Unified CM {} ({}) failed: {e}",
                                    node.name, node.address
                                ),
                            },
                            Err(e) => eprintln!("edgeway-control: core.ucm {}: {e}", node.name),
                        }
                    }
                }
            }
            Err(e) => eprintln!(
                "edgeway-control: Unified CM {} ({}) unreachable: {e}; retrying in {backoff:?}",
                node.name, node.address
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = next_backoff(backoff, core.cfg.reconnect_max);
    }
}

async fn accept_ucm(core: Arc<Core>, listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let core = core.clone();
        tokio::spawn(async move { serve_ucm(&core, tcp, None).await });
    }
}

/// One connection to (`node` = its index) or from Unified CM.
async fn serve_ucm<S>(core: &Arc<Core>, stream: S, node: Option<usize>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let conn = core.next_id.fetch_add(1, Ordering::Relaxed);
    let (reader, writer) = tokio::io::split(stream);
    let (tx, writer_task) = spawn_writer(writer, TRUNK_QUEUE);
    {
        let mut s = lock(&core.state);
        s.ucm.insert(conn, tx.clone());
        if let Some(i) = node {
            s.proxy.set_node_connection(i, Some(conn));
        }
    }
    let ignored = AtomicU64::new(0);
    // Unified CM connections are trunks: only a dead peer (TCP error) ends them.
    let end = read_frames(
        reader,
        core.limits,
        Duration::from_secs(24 * 3600),
        &tx,
        &core.counters,
        &ignored,
        |msg| core.with_proxy(|p, out| p.ucm_message(Instant::now(), conn, msg, out)),
    )
    .await;
    if let ReadEnd::Framing(e) = &end {
        // Counted like a client's; there is no one to answer on a broken trunk.
        let _ = framing_refusal(e, &core.counters);
    }
    {
        let mut s = lock(&core.state);
        s.ucm.remove(&conn);
        if let Some(i) = node {
            s.proxy.set_node_connection(i, None);
        }
    }
    drop(tx);
    writer_task.abort();
}
