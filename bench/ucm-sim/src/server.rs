//! The IO layer: TCP and TLS listeners, one task per connection framing SIP with
//! `StreamFramer` and handing REGISTERs to the shared `Registrar` and everything else to
//! the shared `Switch` (calls), one task per simulated phone's media socket, and the admin
//! API.
//!
//! Per connection the task holds the stream (and rustls state), a framer, a 1 KiB read
//! buffer and a small channel through which the admin API and the switch (requests and
//! responses proxied from another connection) write down that same connection. A connection whose bytes cannot be framed (malformed or
//! oversized message) gets a best-effort 400/513 and is closed: the stream cannot be
//! resynchronised. Nothing a connection sends can affect another one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use edgeway_sip::Method;
use edgeway_sip::{Frame, FramerError, Message, ParseLimits, StreamFramer};
use edgeway_ucm_sim::media::PACKET_BUF;
use edgeway_ucm_sim::offer::MediaPlan;
use edgeway_ucm_sim::registrar::refusal_for_unparsed;
use edgeway_ucm_sim::{
    Action, AnswerMode, ConnectionId, MediaCounters, MediaStream, Origin, Registrar, Settings,
    Switch, Transport,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;

/// Read buffer per connection (held for the connection's life, so small): a REGISTER
/// through a proxy is about 1 KiB; larger messages take more reads.
const READ_BUF: usize = 1024;
/// Longest admin command line; a longer one is answered with an error and the session closed.
const MAX_ADMIN_LINE: u64 = 64 * 1024;
/// Default wait for the final response to an admin `send` (RFC 3261 Timer F is 32 s).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of the IO layer (the registrar keeps its own).
#[derive(Debug, Default)]
struct IoCounters {
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    accept_errors: AtomicU64,
    tls_handshake_failures: AtomicU64,
    framing_errors: AtomicU64,
    oversized: AtomicU64,
    keepalives: AtomicU64,
    sent: AtomicU64,
    send_failures: AtomicU64,
    stray_responses: AtomicU64,
}

impl IoCounters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn to_json(&self, into: &mut serde_json::Map<String, Value>) {
        let all = [
            ("connections_accepted", &self.connections_accepted),
            ("connections_open", &self.connections_open),
            ("accept_errors", &self.accept_errors),
            ("tls_handshake_failures", &self.tls_handshake_failures),
            ("framing_errors", &self.framing_errors),
            ("oversized", &self.oversized),
            ("keepalives", &self.keepalives),
            ("sent", &self.sent),
            ("send_failures", &self.send_failures),
            ("stray_responses", &self.stray_responses),
        ];
        for (name, c) in all {
            into.insert(name.to_owned(), json!(c.load(Ordering::Relaxed)));
        }
    }
}

/// What the admin API needs to write on a connection.
#[derive(Debug)]
struct ConnectionHandle {
    tx: mpsc::Sender<Vec<u8>>,
    local: SocketAddr,
}

/// A final response to an admin `send`: status and reason.
type FinalResponse = (u16, String);

/// A simulated phone's running media: plan updates go down `control`; dropping it stops
/// the task.
#[derive(Debug)]
struct MediaHandle {
    control: mpsc::UnboundedSender<MediaPlan>,
    counters: Arc<Mutex<MediaCounters>>,
}

#[derive(Debug)]
struct Shared {
    registrar: Mutex<Registrar>,
    /// Calls and simulated phones; locked after `registrar` when both are needed.
    switch: Mutex<Switch>,
    /// Media sockets bound for an offer or answer, not yet started.
    bound: Mutex<HashMap<SocketAddr, std::net::UdpSocket>>,
    media: Mutex<HashMap<SocketAddr, MediaHandle>>,
    /// The address simulated phones bind media on (`--media-ip`).
    media_ip: std::net::IpAddr,
    connections: Mutex<HashMap<ConnectionId, ConnectionHandle>>,
    pending: Mutex<HashMap<String, oneshot::Sender<FinalResponse>>>,
    limits: ParseLimits,
    /// A TLS client that has not finished its handshake by then is dropped (slow clients).
    handshake_timeout: Duration,
    io: IoCounters,
    next_connection: AtomicU64,
    /// The HTTP side (UDS, TFTP, vmrest, OAuth), shared by the HTTP and HTTPS listeners.
    http: Arc<crate::http::HttpSide>,
}

/// Locks, taking over a mutex poisoned by a panicked task (the state stays consistent:
/// every critical section is a single registrar call).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds every listener, writes the ready file and serves until SIGINT/SIGTERM.
pub(crate) async fn run(settings: Settings) -> anyhow::Result<()> {
    let config = settings.registrar_config()?;
    let users = settings.user_directory()?;
    let limits = ParseLimits {
        max_message_size: settings.max_message_size.unwrap_or(64 * 1024),
        ..ParseLimits::default()
    };
    let http = Arc::new(crate::http::HttpSide::new(
        settings.user_directory()?,
        crate::oauth::Issuer::new(crate::oauth::IssuerSettings {
            name: settings
                .oauth_issuer
                .clone()
                .unwrap_or_else(|| "ucm-sim".into()),
            access_lifetime: settings.oauth_access_lifetime.unwrap_or(3600).max(1),
            refresh_lifetime: settings.oauth_refresh_lifetime.unwrap_or(60 * 86_400),
            no_mra: settings.oauth_no_mra.iter().cloned().collect(),
        })?,
    ));
    if settings.sip_tcp.is_none() && settings.sip_tls.is_none() {
        bail!("nothing to listen on: give --sip-tcp ADDR and/or --sip-tls ADDR");
    }
    // One acceptor (one certificate) for SIP over TLS and the HTTPS side.
    let tls = match settings.sip_tls.is_some() || settings.https.is_some() {
        true => Some(tls_acceptor(
            settings.cert.as_deref(),
            settings.key.as_deref(),
        )?),
        false => None,
    };
    let user_count = users.len();
    let shared = Arc::new(Shared {
        registrar: Mutex::new(Registrar::new(
            config,
            users,
            rand::random(),
            Instant::now(),
        )),
        switch: Mutex::new(Switch::new(rand::random())),
        bound: Mutex::new(HashMap::new()),
        media: Mutex::new(HashMap::new()),
        media_ip: settings
            .media_ip
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
        connections: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        limits,
        handshake_timeout: Duration::from_secs(settings.tls_handshake_timeout.unwrap_or(10)),
        io: IoCounters::default(),
        next_connection: AtomicU64::new(1),
        http: http.clone(),
    });

    let tcp_listener = bind(settings.sip_tcp.as_deref(), "--sip-tcp").await?;
    let tls_listener = bind(settings.sip_tls.as_deref(), "--sip-tls").await?;
    let http_listener = bind(settings.http.as_deref(), "--http").await?;
    let https_listener = bind(settings.https.as_deref(), "--https").await?;
    let admin_addr = settings.admin.as_deref().unwrap_or("127.0.0.1:0");
    let admin = bind(Some(admin_addr), "--admin")
        .await?
        .context("admin listener")?;
    let admin_local = admin.local_addr()?;
    if !admin_local.ip().is_loopback() {
        bail!(
            "--admin {admin_local} is not a loopback address: the admin API has no authentication"
        );
    }
    let addr = |l: &Option<TcpListener>| {
        l.as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.to_string())
    };
    let ready = json!({
        "sip_tcp": addr(&tcp_listener),
        "sip_tls": addr(&tls_listener),
        "http": addr(&http_listener),
        "https": addr(&https_listener),
        "admin": admin_local.to_string(),
        "pid": std::process::id(),
    });
    eprintln!("ucm-sim: {user_count} users, listening {ready}");
    if let Some(path) = &settings.ready_file {
        write_ready_file(path, &ready)?;
    }

    if let Some(l) = tcp_listener {
        tokio::spawn(accept_loop(shared.clone(), l, None));
    }
    if let Some(l) = https_listener {
        tokio::spawn(crate::http::serve(l, tls.clone(), http.clone()));
    }
    if let (Some(l), Some(acceptor)) = (tls_listener, tls) {
        tokio::spawn(accept_loop(shared.clone(), l, Some(acceptor)));
    }
    if let Some(l) = http_listener {
        tokio::spawn(crate::http::serve(l, None, http.clone()));
    }
    tokio::spawn(admin_loop(shared.clone(), admin));
    tokio::spawn(expiry_loop(shared.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

async fn bind(addr: Option<&str>, flag: &str) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        None => Ok(None),
        Some(a) => TcpListener::bind(a)
            .await
            .map(Some)
            .with_context(|| format!("{flag} {a}: cannot listen")),
    }
}

/// Writes the ready line to a temporary file and renames it, so a reader never sees half.
fn write_ready_file(path: &Path, ready: &Value) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{ready}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("--ready-file {}: cannot write", path.display()))
}

fn tls_acceptor(cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<TlsAcceptor> {
    let (Some(cert), Some(key)) = (cert, key) else {
        bail!("--sip-tls and --https need --cert PEM and --key PEM");
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "--cert {}: cannot read a PEM certificate chain",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        bail!("--cert {}: no certificate in the file", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--key {}: cannot read a PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("--cert/--key: the key does not match the certificate or is unsupported")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays.
                IoCounters::bump(&shared.io.accept_errors);
                eprintln!("ucm-sim: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        IoCounters::bump(&shared.io.connections_accepted);
        let _ = tcp.set_nodelay(true);
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Ok(local) = tcp.local_addr() else {
                return;
            };
            match tls {
                None => {
                    let origin = Origin {
                        connection: id,
                        transport: Transport::Tcp,
                        peer,
                    };
                    serve_connection(shared, tcp, origin, local).await;
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(shared.handshake_timeout, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            _ => {
                                IoCounters::bump(&shared.io.tls_handshake_failures);
                                return;
                            }
                        };
                    let origin = Origin {
                        connection: id,
                        transport: Transport::Tls,
                        peer,
                    };
                    serve_connection(shared, stream, origin, local).await;
                }
            }
        });
    }
}

async fn serve_connection<S>(shared: Arc<Shared>, mut stream: S, origin: Origin, local: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    lock(&shared.connections).insert(origin.connection, ConnectionHandle { tx, local });
    lock(&shared.switch).connection_opened(&origin, local);
    shared.io.connections_open.fetch_add(1, Ordering::Relaxed);
    let mut framer = StreamFramer::new(shared.limits);
    let mut buf = vec![0u8; READ_BUF];
    loop {
        // Responses are built fresh per read: an idle connection keeps no output buffer.
        let mut out = Vec::new();
        tokio::select! {
            read = stream.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let fed = framer.handle_data(&buf[..n]);
                let keep = handle_frames(&shared, &mut framer, &origin, &buf[..n], &mut out);
                if !keep {
                    let _ = stream.write_all(&out).await;
                    break;
                }
                if let Err(e) = fed {
                    refuse_unframed(&shared, &e, &buf[..n], &mut out);
                    let _ = stream.write_all(&out).await;
                    break;
                }
                if !out.is_empty()
                    && (stream.write_all(&out).await.is_err() || stream.flush().await.is_err())
                {
                    break;
                }
            }
            Some(msg) = rx.recv() => {
                if stream.write_all(&msg).await.is_err() || stream.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    lock(&shared.connections).remove(&origin.connection);
    let actions = lock(&shared.switch).connection_closed(origin.connection);
    apply(&shared, actions, None);
    shared.io.connections_open.fetch_sub(1, Ordering::Relaxed);
    let _ = stream.shutdown().await;
}

/// Answers every complete frame: REGISTERs go to the registrar, other requests and the
/// responses the switch is waiting for to the switch, other final responses to the admin
/// `send` waiting for them, pings get a pong. `false` when the connection must close (a
/// message that did not parse; `chunk` is the last read, for the refusal).
fn handle_frames(
    shared: &Shared,
    framer: &mut StreamFramer,
    origin: &Origin,
    chunk: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    while let Some(frame) = framer.poll_frame() {
        match frame {
            Frame::Message(Message::Request(req)) if req.method == Method::Register => {
                let response = lock(&shared.registrar).handle_request(Instant::now(), &req, origin);
                if let Some(r) = response {
                    r.write_to(out);
                }
            }
            Frame::Message(Message::Request(req)) => {
                let actions = {
                    let mut registrar = lock(&shared.registrar);
                    let mut switch = lock(&shared.switch);
                    switch.handle_request(Instant::now(), &mut registrar, &req, origin, &mut || {
                        bind_media(shared)
                    })
                };
                apply(shared, actions, Some((origin.connection, out)));
            }
            Frame::Message(Message::Response(resp)) => {
                let relayed = lock(&shared.switch).handle_response(&resp, origin);
                if let Some(actions) = relayed {
                    apply(shared, actions, Some((origin.connection, out)));
                    continue;
                }
                if resp.status < 200 {
                    continue;
                }
                let branch = resp
                    .headers
                    .top_via()
                    .ok()
                    .and_then(|v| v.branch().map(str::to_owned));
                let waiter = branch.and_then(|b| lock(&shared.pending).remove(&b));
                match waiter {
                    Some(w) => {
                        let _ = w.send((resp.status, resp.reason));
                    }
                    None => IoCounters::bump(&shared.io.stray_responses),
                }
            }
            Frame::Invalid(bad) => {
                // A message that framed but did not parse: a best-effort 400 built from the
                // bytes read (it keeps a bad CSeq matchable as `0 <method>`), and the
                // connection is closed as for any framing error.
                IoCounters::bump(&shared.io.framing_errors);
                let why = bad.error().to_string();
                match refusal_for_unparsed(chunk, bad.error().status_code(), &why) {
                    Some(bytes) => out.extend_from_slice(&bytes),
                    None => {
                        if let Some(r) = bad.response("ucm-sim") {
                            r.write_to(out);
                        }
                    }
                }
                return false;
            }
            Frame::Ping => {
                IoCounters::bump(&shared.io.keepalives);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Pong => {}
        }
    }
    true
}

/// Counts a framing failure and writes a best-effort 400/513 for it into `out`.
fn refuse_unframed(shared: &Shared, e: &FramerError, chunk: &[u8], out: &mut Vec<u8>) {
    let status = match e {
        FramerError::TooLarge { .. } | FramerError::HeaderTooLarge { .. } => {
            IoCounters::bump(&shared.io.oversized);
            513
        }
        FramerError::Message(pe) => {
            IoCounters::bump(&shared.io.framing_errors);
            pe.status_code()
        }
        _ => {
            IoCounters::bump(&shared.io.framing_errors);
            400
        }
    };
    if let Some(bytes) = refusal_for_unparsed(chunk, status, &e.to_string()) {
        out.extend_from_slice(&bytes);
    }
}

async fn expiry_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        lock(&shared.registrar).expire(Instant::now());
        let actions = lock(&shared.switch).expire(Instant::now());
        apply(&shared, actions, None);
    }
}

async fn admin_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(admin_session(shared.clone(), stream));
    }
}

async fn admin_session(shared: Arc<Shared>, stream: TcpStream) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let Ok(n) = (&mut reader)
            .take(MAX_ADMIN_LINE)
            .read_until(b'\n', &mut line)
            .await
        else {
            break;
        };
        if n == 0 {
            break;
        }
        let too_long = !line.ends_with(b"\n") && n as u64 == MAX_ADMIN_LINE;
        if line.trim_ascii().is_empty() {
            continue;
        }
        let reply = if too_long {
            Err(format!("command longer than {MAX_ADMIN_LINE} bytes"))
        } else {
            match serde_json::from_slice::<Value>(&line) {
                Ok(cmd) => admin_command(&shared, &cmd).await,
                Err(e) => Err(format!("not a JSON object: {e}")),
            }
        };
        let reply = match reply {
            Ok(Value::Object(mut m)) => {
                m.insert("ok".to_owned(), json!(true));
                Value::Object(m)
            }
            Ok(other) => json!({"ok": true, "result": other}),
            Err(e) => json!({"ok": false, "error": e}),
        };
        if write
            .write_all(format!("{reply}\n").as_bytes())
            .await
            .is_err()
            || too_long
        {
            break;
        }
    }
}

async fn admin_command(shared: &Shared, cmd: &Value) -> Result<Value, String> {
    let field = |name: &str| cmd.get(name).and_then(Value::as_str);
    match field("cmd") {
        Some("bindings") => {
            let list = lock(&shared.registrar).bindings(Instant::now());
            Ok(json!({ "bindings": list }))
        }
        Some("counters") => {
            let mut counters = match serde_json::to_value(lock(&shared.registrar).counters()) {
                Ok(Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            };
            shared.io.to_json(&mut counters);
            shared.http.counters_json(&mut counters);
            if let Ok(Value::Object(m)) = serde_json::to_value(lock(&shared.switch).counters()) {
                counters.extend(m);
            }
            Ok(json!({ "counters": counters }))
        }
        Some("call") => {
            let (Some(from), Some(to)) = (field("from"), field("to")) else {
                return Err("call needs \"from\" (a sim phone) and \"to\"".to_owned());
            };
            let mut bound = Vec::new();
            let placed = {
                let registrar = lock(&shared.registrar);
                let mut switch = lock(&shared.switch);
                switch.place_call(Instant::now(), &registrar, from, to, &mut || {
                    let addr = bind_media(shared);
                    bound.extend(addr);
                    addr
                })
            };
            let (call, actions) = placed.map_err(|e| {
                // The sockets bound for a call that could not be set up are closed.
                let mut waiting = lock(&shared.bound);
                for addr in &bound {
                    waiting.remove(addr);
                }
                e.to_string()
            })?;
            apply(shared, actions, None);
            Ok(json!({ "call": call }))
        }
        Some("hangup") => {
            let call = cmd
                .get("call")
                .and_then(Value::as_u64)
                .ok_or("hangup needs \"call\": a number from calls")?;
            let actions = lock(&shared.switch)
                .hangup(call)
                .map_err(|e| e.to_string())?;
            apply(shared, actions, None);
            Ok(json!({ "call": call }))
        }
        Some("calls") => Ok(json!({ "calls": calls_view(shared) })),
        Some("answer_mode") => {
            let (Some(user), Some(mode)) = (field("user"), field("mode")) else {
                return Err("answer_mode needs \"user\" and \"mode\"".to_owned());
            };
            let mode = AnswerMode::parse(mode)
                .ok_or_else(|| format!("mode {mode:?} is not auto, busy, ring or early"))?;
            let mut registrar = lock(&shared.registrar);
            lock(&shared.switch)
                .set_answer_mode(&mut registrar, user, mode)
                .map_err(|e| e.to_string())?;
            Ok(json!({ "user": user }))
        }
        Some("send") => {
            let (Some(method), Some(to)) = (field("method"), field("to")) else {
                return Err("send needs \"method\" and \"to\"".to_owned());
            };
            let timeout = cmd
                .get("timeout_ms")
                .and_then(Value::as_u64)
                .map(Duration::from_millis)
                .unwrap_or(SEND_TIMEOUT);
            send(shared, method, to, field("body"), timeout).await
        }
        Some(other) => Err(format!(
            "unknown cmd {other:?} (bindings, counters, send, call, hangup, calls, answer_mode)"
        )),
        None => Err("missing \"cmd\"".to_owned()),
    }
}

/// The admin `send`: builds the request, writes it down the user's connection and waits
/// for the final response.
async fn send(
    shared: &Shared,
    method: &str,
    to: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Value, String> {
    let result = async {
        let (outbound, tx) = {
            let mut registrar = lock(&shared.registrar);
            let mut tx = None;
            let outbound = registrar
                .outbound_request(Instant::now(), method, to, body, |id| {
                    let conns = lock(&shared.connections);
                    let handle = conns.get(&id)?;
                    tx = Some(handle.tx.clone());
                    Some(handle.local)
                })
                .map_err(|e| e.to_string())?;
            (outbound, tx.ok_or("connection closed")?)
        };
        let (done, wait) = oneshot::channel();
        lock(&shared.pending).insert(outbound.branch.clone(), done);
        let sent = tx.send(outbound.request.to_bytes()).await;
        if sent.is_err() {
            lock(&shared.pending).remove(&outbound.branch);
            return Err(format!("connection {} closed", outbound.connection));
        }
        IoCounters::bump(&shared.io.sent);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok((status, reason))) => Ok(json!({
                "status": status,
                "reason": reason,
                "connection": outbound.connection,
            })),
            _ => {
                lock(&shared.pending).remove(&outbound.branch);
                Err(format!(
                    "no final response within {} ms on connection {}",
                    timeout.as_millis(),
                    outbound.connection
                ))
            }
        }
    }
    .await;
    if result.is_err() {
        IoCounters::bump(&shared.io.send_failures);
    }
    result
}

/// Binds a UDP socket for a simulated phone's media; it waits in `bound` until its media
/// starts (or is dropped when the offer is refused).
fn bind_media(shared: &Shared) -> Option<SocketAddr> {
    // RTP takes an even port (RFC 3550 §11), which edgeway's media planner requires; the
    // kernel's ephemeral choice is even about half the time.
    let (socket, addr) = (0..64).find_map(|_| {
        let socket = std::net::UdpSocket::bind((shared.media_ip, 0)).ok()?;
        let addr = socket.local_addr().ok()?;
        (addr.port() % 2 == 0).then_some((socket, addr))
    })?;
    lock(&shared.bound).insert(addr, socket);
    Some(addr)
}

/// Carries out the switch's actions: bytes for `own` (the connection being served) go into
/// its output buffer, other connections get them through their channel.
fn apply(shared: &Shared, actions: Vec<Action>, mut own: Option<(ConnectionId, &mut Vec<u8>)>) {
    for action in actions {
        match action {
            Action::Send { connection, bytes } => match &mut own {
                Some((id, out)) if *id == connection => out.extend_from_slice(&bytes),
                _ => {
                    let tx = lock(&shared.connections)
                        .get(&connection)
                        .map(|h| h.tx.clone());
                    match tx.map(|tx| tx.try_send(bytes)) {
                        Some(Ok(())) => IoCounters::bump(&shared.io.sent),
                        _ => IoCounters::bump(&shared.io.send_failures),
                    }
                }
            },
            Action::Media { local, plan } => {
                if let Some(handle) = lock(&shared.media).get(&local) {
                    let _ = handle.control.send(plan);
                    continue;
                }
                let Some(socket) = lock(&shared.bound).remove(&local) else {
                    continue;
                };
                let Ok(stream) = MediaStream::new(&plan, rand::random(), rand::random()) else {
                    continue;
                };
                let socket = match socket
                    .set_nonblocking(true)
                    .and_then(|()| UdpSocket::from_std(socket))
                {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                let (control, updates) = mpsc::unbounded_channel();
                let counters = Arc::new(Mutex::new(MediaCounters::default()));
                tokio::spawn(media_task(socket, stream, plan, updates, counters.clone()));
                lock(&shared.media).insert(local, MediaHandle { control, counters });
            }
            Action::StopMedia { local } => {
                lock(&shared.media).remove(&local);
                lock(&shared.bound).remove(&local);
            }
        }
    }
}

/// Sends a packet every 20 ms and checks what arrives, until the handle is dropped.
async fn media_task(
    socket: UdpSocket,
    mut stream: MediaStream,
    mut plan: MediaPlan,
    mut updates: mpsc::UnboundedReceiver<MediaPlan>,
    counters: Arc<Mutex<MediaCounters>>,
) {
    let period = Duration::from_secs(1) / edgeway_ucm_sim::media::PACKETS_PER_SECOND;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tx_buf = [0u8; PACKET_BUF];
    let mut rx_buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(n) = stream.next_packet(&mut tx_buf) {
                    let _ = socket.send_to(&tx_buf[..n], stream.remote()).await;
                }
            }
            got = socket.recv_from(&mut rx_buf) => {
                if let Ok((n, _)) = got {
                    stream.receive(&mut rx_buf, n);
                }
            }
            update = updates.recv() => match update {
                Some(new) => {
                    if stream.update(&plan, &new).is_ok() {
                        plan = new;
                    }
                }
                None => break,
            },
        }
        *lock(&counters) = stream.counters();
    }
}

/// The switch's calls with each simulated leg's media counters.
fn calls_view(shared: &Shared) -> Value {
    let calls = lock(&shared.switch).calls(Instant::now());
    let media = lock(&shared.media);
    let mut list = Vec::new();
    for call in calls {
        let Ok(mut v) = serde_json::to_value(&call) else {
            continue;
        };
        if let Some(legs) = v.get_mut("legs").and_then(Value::as_array_mut) {
            for leg in legs {
                let local = leg
                    .get("media_local")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<SocketAddr>().ok());
                if let Some(h) = local.and_then(|l| media.get(&l)) {
                    let c = *lock(&h.counters);
                    leg["media"] = json!(c);
                }
            }
        }
        list.push(v);
    }
    Value::Array(list)
}
