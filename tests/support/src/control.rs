//! An edgeway control plane for end-to-end tests: real processes on loopback, port 0.
//!
//! A [`Cluster`] is a test CA, ucm-sim (the Unified CM registrar, [`peers::UcmSim`]), an
//! `edgeway-control` edge and core with the traversal zone between them; [`Node`] is one
//! of those processes with its admin socket; [`SipClient`] is a small blocking
//! SIP-over-TLS client (rustls) that registers with digest authentication and answers
//! requests from inside. The binaries come from the test's own target directory
//! ([`control_binary`]), built on first use, so any crate's tests can start a cluster.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeway_sip::{Frame, HeaderName, Message, ParseLimits, Request, Response, StreamFramer};
use md5::{Digest, Md5};
use rustls::pki_types::ServerName;
use serde_json::Value;

use crate::peers::{self, OutputLog, PeerProcess, UcmSim, UcmSimOptions};
use crate::pki::{Eku, TestPki};

/// The users every cluster's ucm-sim knows: alice, bob, carol (password `<name>-secret`).
pub const USERS: &str = r#"
[[user]]
name = "alice"
password = "alice-secret"
number = "1001"
security_profile = "non-secure"

[[user]]
name = "bob"
password = "bob-secret"
number = "1002"
security_profile = "non-secure"

[[user]]
name = "carol"
password = "carol-secret"
number = "1003"
security_profile = "non-secure"
"#;

/// The password of a [`USERS`] user.
pub fn password(user: &str) -> String {
    format!("{user}-secret")
}

/// A scratch directory removed on drop.
pub use crate::peers::ScratchDir as Scratch;

fn wait_ready(process: &mut PeerProcess, ready: &Path, what: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = std::fs::read_to_string(ready) {
            return serde_json::from_str(&text).expect("ready file is JSON");
        }
        if let Some(status) = process.exited() {
            panic!(
                "{what} exited ({status}) before ready:\n{}",
                process.log.text()
            );
        }
        assert!(
            Instant::now() < end,
            "{what} not ready in 15 s:\n{}",
            process.log.text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `edgeway-control` binary of this test's target directory and profile, built (once
/// per test process) with `cargo build -p edgeway-control` so it is never stale.
///
/// # Panics
/// When the build fails.
pub fn control_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| crate::workspace_binary("edgeway-control", "edgeway-control"))
        .clone()
}

/// The `edgeway-dataplane` binary of this test's target directory and profile, built once
/// per test process like [`control_binary`].
///
/// # Panics
/// When the build fails.
pub fn dataplane_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| crate::workspace_binary("edgeway-dataplane", "edgeway-dataplane"))
        .clone()
}

/// A running edgeway-control process (killed on drop).
#[derive(Debug)]
pub struct Node {
    process: PeerProcess,
    /// Its standard output and error.
    pub log: OutputLog,
    /// Its ready line (role, bound addresses, admin socket).
    pub ready: Value,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its admin socket.
    pub admin_path: PathBuf,
}

impl Node {
    /// Starts [`control_binary`] with `config` and waits for its ready file.
    pub fn start(config: &Path) -> Node {
        let ready_path = config.with_extension("ready");
        let _ = std::fs::remove_file(&ready_path);
        let mut process = PeerProcess::spawn(
            Command::new(control_binary())
                .arg("--config")
                .arg(config)
                .arg("--ready-file")
                .arg(&ready_path),
        );
        let ready = wait_ready(&mut process, &ready_path, "edgeway-control");
        let admin_path = PathBuf::from(ready["admin"].as_str().expect("admin path"));
        Node {
            log: process.log.clone(),
            process,
            ready,
            config: config.to_path_buf(),
            admin_path,
        }
    }

    /// An address from the ready line (`sip`, `traversal`).
    pub fn addr(&self, key: &str) -> SocketAddr {
        self.ready[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{key} in ready {}", self.ready))
    }

    /// One admin command and its JSON reply.
    pub fn admin(&self, cmd: &str) -> Value {
        let mut s = UnixStream::connect(&self.admin_path).expect("admin socket");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        writeln!(s, "{cmd}").expect("write admin");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read admin");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("admin reply {line:?}: {e}"))
    }

    /// The `status` object.
    pub fn status(&self) -> Value {
        self.admin("status")["status"].clone()
    }

    /// One counter from `status`.
    pub fn counter(&self, name: &str) -> u64 {
        self.status()["counters"][name].as_u64().unwrap_or(0)
    }

    /// The `registrations` list.
    pub fn registrations(&self) -> Vec<Value> {
        self.admin("registrations")["registrations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the traversal zone reaches the wanted state within `timeout`.
    pub fn wait_traversal(&self, up: bool, timeout: Duration) -> bool {
        let want = if up { "up" } else { "down" };
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.status()["traversal"] == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stops the process.
    pub fn kill(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Knobs a test turns on the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The core's "SIP Path headers" setting.
    pub path_headers: bool,
    /// The edge's "TLS verify subject name".
    pub verify_subject_name: String,
    /// The EKUs of the core's certificate.
    pub core_eku: Eku,
    /// Lines appended to the edge's `[edge]` section.
    pub edge_extra: String,
    /// Lines appended to the core's `[core]` section; `{http_tunnel}` in them becomes the
    /// edge's HTTP tunnel listener (when its `edge_extra` gives it an `[http]` section).
    pub core_extra: String,
    /// Further ucm-sim arguments.
    pub ucm_extra: Vec<String>,
    /// Whether the core reaches ucm-sim over TLS (else TCP).
    pub ucm_tls: bool,
    /// Send the core's Unified CM traffic here (e.g. kamailio) instead of ucm-sim (TCP).
    pub registrar: Option<SocketAddr>,
    /// ucm-sim's users file (TOML); `None`: [`USERS`].
    pub users: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            path_headers: false,
            verify_subject_name: "core.example.com".into(),
            core_eku: Eku::Both,
            edge_extra: String::new(),
            core_extra: String::new(),
            ucm_extra: vec!["--min-expires".into(), "1".into()],
            ucm_tls: false,
            registrar: None,
            users: None,
        }
    }
}

/// A CA, ucm-sim, an edge and a core, wired together on loopback.
#[derive(Debug)]
pub struct Cluster {
    /// The core (a test may stop and restart it).
    pub core: Option<Node>,
    /// The edge.
    pub edge: Node,
    /// The Unified CM stand-in.
    pub ucm: UcmSim,
    /// The CA and the nodes' certificates.
    pub pki: TestPki,
    /// The core's configuration file.
    pub core_config: PathBuf,
    /// Where it all lives.
    pub dir: Scratch,
}

/// Writes the edge's configuration (`extra` appended to `[edge]`) into `dir`.
pub fn edge_config(dir: &Path, subject: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"role = "edge"
node_name = "edge1"
state_dir = "{dir}/edge-state"
[tls]
certificate = "edge.example.com.pem"
key = "edge.example.com.key"
ca = "ca.pem"
[edge]
sip_listen = "127.0.0.1:0"
traversal_listen = "127.0.0.1:0"
sip_host = "edge.example.com"
tls_verify_subject_name = "{subject}"
tls_handshake_timeout_ms = 1000
{extra}
"#,
        dir = dir.display()
    );
    let path = dir.join("edge.toml");
    std::fs::write(&path, text).expect("edge config");
    path
}

/// Writes the core's configuration, dialling `traversal` and Unified CM at `ucm`.
pub fn core_config(
    dir: &Path,
    traversal: SocketAddr,
    ucm: SocketAddr,
    transport: &str,
    opts: &ClusterOptions,
) -> PathBuf {
    let text = format!(
        r#"role = "core"
node_name = "core1"
state_dir = "{dir}/core-state"
[tls]
certificate = "core.example.com.pem"
key = "core.example.com.key"
ca = "ca.pem"
[core]
edge_address = "{traversal}"
edge_name = "edge.example.com"
sip_listen = "127.0.0.1:0"
sip_host = "core.example.com"
sip_path_headers = {path}
keepalive_interval_ms = 200
dead_peer_timeout_ms = 3000
reconnect_max_ms = 400
retry_after_s = 30
{extra}
[[core.domains]]
name = "example.com"
sip_registrations = true
[[core.domains]]
name = "noreg.example.com"
sip_registrations = false
[[core.ucm]]
name = "cucm1"
address = "{ucm}"
transport = "{transport}"
"#,
        dir = dir.display(),
        path = opts.path_headers,
        extra = opts.core_extra,
    );
    let path = dir.join("core.toml");
    std::fs::write(&path, text).expect("core config");
    path
}

/// A test CA in `dir` with the pair's certificates: `edge.example.com` (SANs the name and
/// 127.0.0.1, both EKUs) and `core.example.com` with `core_eku`.
pub fn pair_pki(dir: &Path, core_eku: Eku) -> TestPki {
    let pki = TestPki::new(dir).expect("pki");
    pki.issue(
        "edge.example.com",
        &["edge.example.com", "127.0.0.1"],
        Eku::Both,
    )
    .expect("edge cert");
    pki.issue("core.example.com", &["core.example.com"], core_eku)
        .expect("core cert");
    pki
}

/// Whether curl is installed; without it, under `CI=true` this panics, elsewhere it says
/// what was not tested and the test returns.
pub fn curl_present(what: &str) -> bool {
    let found = Command::new("curl").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "curl is missing (scripts/setup installs it); under CI=true this fails"
        );
        eprintln!("SKIPPED: curl not installed: {what} not tested");
    }
    found
}

impl Cluster {
    /// Starts the CA, ucm-sim, the edge and the core.
    pub fn start(opts: ClusterOptions) -> Cluster {
        let dir = Scratch::new("cluster");
        let pki = pair_pki(dir.path(), opts.core_eku);
        let ucm_cert = pki
            .issue("ucm.example.com", &["127.0.0.1"], Eku::ServerAuth)
            .expect("ucm cert");
        let mut ucm_opts = UcmSimOptions::tcp_with_users(opts.users.as_deref().unwrap_or(USERS));
        ucm_opts.extra_args = opts.ucm_extra.clone();
        if opts.ucm_tls {
            let read = |p: &Path| std::fs::read_to_string(p).expect("ucm-sim certificate");
            ucm_opts = ucm_opts.with_tls(&read(&ucm_cert.cert_path), &read(&ucm_cert.key_path));
        }
        let ucm = UcmSim::spawn(&peers::ucm_sim_binary(), &ucm_opts);
        let edge = Node::start(&edge_config(
            dir.path(),
            &opts.verify_subject_name,
            &opts.edge_extra,
        ));
        let (ucm_addr, transport) = match (opts.registrar, ucm.sip_tls) {
            (Some(other), _) => (other, "tcp"),
            (None, Some(tls)) if opts.ucm_tls => (tls, "tls"),
            _ => (ucm.sip_tcp.expect("ucm-sim listens on TCP"), "tcp"),
        };
        let mut opts = opts;
        if let Some(tunnel) = edge.ready["http_tunnel"].as_str() {
            opts.core_extra = opts.core_extra.replace("{http_tunnel}", tunnel);
        }
        let core_config = core_config(
            dir.path(),
            edge.addr("traversal"),
            ucm_addr,
            transport,
            &opts,
        );
        let core = Node::start(&core_config);
        Cluster {
            core: Some(core),
            edge,
            ucm,
            pki,
            core_config,
            dir,
        }
    }

    /// A cluster whose traversal zone is up.
    pub fn up(opts: ClusterOptions) -> Cluster {
        let c = Cluster::start(opts);
        assert!(
            c.edge.wait_traversal(true, Duration::from_secs(10)),
            "traversal did not come up\nedge:\n{}\ncore:\n{}",
            c.edge.log.text(),
            c.core().log.text()
        );
        assert!(c.core().wait_traversal(true, Duration::from_secs(10)));
        c.wait_ucm();
        c
    }

    /// The core (panics when a test stopped it).
    pub fn core(&self) -> &Node {
        self.core.as_ref().expect("core running")
    }

    /// Waits until the core is connected to Unified CM.
    pub fn wait_ucm(&self) {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if self.core().status()["ucm_nodes"][0]["connected"] == true {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "core did not connect to ucm-sim:\n{}",
            self.core().log.text()
        );
    }

    /// A SIP client connected to the edge.
    pub fn client(&self) -> SipClient {
        SipClient::connect(self.edge.addr("sip"), &self.pki.ca_path())
    }
}

/// A TCP connection to `to`, from `source` (port 0) when given.
pub fn tcp_from(to: SocketAddr, source: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(to);
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    socket.connect(&to.into())?;
    Ok(socket.into())
}

/// A rustls client configuration trusting `ca` (PEM).
pub fn tls_client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("ca");
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).expect("root");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("pem")
}

/// A blocking SIP-over-TLS client: one TLS connection to the edge, like a soft client.
#[derive(Debug)]
pub struct SipClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    framer: StreamFramer,
    /// Its local address (the Contact host).
    pub local: SocketAddr,
    cseq: u32,
    call_id: String,
    tag: String,
}

static CLIENTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl SipClient {
    /// Connects to the edge trusting `ca`.
    pub fn connect(edge: SocketAddr, ca: &Path) -> SipClient {
        Self::connect_with(edge, tls_client_config(ca))
    }

    /// Connects with a given TLS configuration.
    pub fn connect_with(edge: SocketAddr, config: Arc<rustls::ClientConfig>) -> SipClient {
        Self::connect_from(edge, config, None)
    }

    /// Connects from a chosen loopback source address (a second "client host").
    pub fn connect_from(
        edge: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        source: Option<std::net::IpAddr>,
    ) -> SipClient {
        let tcp = tcp_from(edge, source).expect("connect to the edge");
        tcp.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let local = tcp.local_addr().expect("local");
        let conn = rustls::ClientConnection::new(
            config,
            ServerName::try_from("edge.example.com").expect("name"),
        )
        .expect("tls client");
        let n = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut client = SipClient {
            tls: rustls::StreamOwned::new(conn, tcp),
            framer: StreamFramer::new(ParseLimits::default()),
            local,
            cseq: 0,
            call_id: format!("call-{}-{n}@client", std::process::id()),
            tag: format!("t{n}"),
        };
        // Finish the handshake now so failures show here.
        while client.tls.conn.is_handshaking() {
            client
                .tls
                .conn
                .complete_io(&mut client.tls.sock)
                .expect("TLS handshake with the edge");
        }
        client
    }

    /// The negotiated TLS version.
    pub fn protocol(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.conn.protocol_version()
    }

    /// Writes bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// The next frame, or `None` after `timeout`; `Err` once the edge closed the connection.
    pub fn recv_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(f) = self.framer.poll_frame() {
                return Ok(Some(f));
            }
            if Instant::now() > end {
                return Ok(None);
            }
            let mut buf = [0u8; 8192];
            match self.tls.read(&mut buf) {
                Ok(0) => return Err("closed".into()),
                Ok(n) => self
                    .framer
                    .handle_data(&buf[..n])
                    .map_err(|e| format!("framing: {e}"))?,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// The next final response (panics on timeout or close).
    pub fn recv_response(&mut self, timeout: Duration) -> Response {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv_frame(left) {
                Ok(Some(Frame::Message(Message::Response(r)))) if r.status >= 200 => return r,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no response within {timeout:?}"),
                Err(e) => panic!("connection ended waiting for a response: {e}"),
            }
        }
    }

    /// The next request, if one comes within `timeout`.
    pub fn recv_request(&mut self, timeout: Duration) -> Option<Request> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv_frame(left) {
                Ok(Some(Frame::Message(Message::Request(r)))) => return Some(r),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Reads until the edge closes the connection; the raw bytes seen.
    pub fn read_until_closed(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let end = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < end {
            let mut buf = [0u8; 8192];
            match self.tls.read(&mut buf) {
                Ok(0) => return (seen, true),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return (seen, true),
            }
        }
        (seen, false)
    }

    fn contact(&self, user: &str) -> String {
        format!("<sip:{user}@{};transport=tls>", self.local)
    }

    /// A REGISTER for `user@domain` (next CSeq), with `authorization` when given.
    pub fn register_request(
        &mut self,
        user: &str,
        domain: &str,
        expires: u32,
        authorization: Option<&str>,
    ) -> Vec<u8> {
        self.cseq += 1;
        let auth = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "REGISTER sip:{domain} SIP/2.0\r\n\
Via: SIP/2.0/TLS {local};branch=z9hG4bK-c{cseq}-{tag}\r\n\
Max-Forwards: 70\r\n\
From: <sip:{user}@{domain}>;tag={tag}\r\n\
To: <sip:{user}@{domain}>\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} REGISTER\r\n\
Contact: {contact}\r\n\
Expires: {expires}\r\n\
{auth}Content-Length: 0\r\n\r\n",
            local = self.local,
            cseq = self.cseq,
            tag = self.tag,
            call_id = self.call_id,
            contact = self.contact(user),
        )
        .into_bytes()
    }

    /// REGISTER without credentials; the first response.
    pub fn register_once(&mut self, user: &str, domain: &str, expires: u32) -> Response {
        let req = self.register_request(user, domain, expires, None);
        self.send_raw(&req).expect("send REGISTER");
        self.recv_response(Duration::from_secs(5))
    }

    /// REGISTER, answer the digest challenge; returns (challenge status, final response).
    pub fn register(&mut self, user: &str, expires: u32) -> (u16, Response) {
        let first = self.register_once(user, "example.com", expires);
        if first.status != 401 {
            return (first.status, first);
        }
        let challenge = first
            .headers
            .first(&HeaderName::WwwAuthenticate)
            .expect("WWW-Authenticate in the 401")
            .to_owned();
        let auth = digest_authorization(&challenge, user, &password(user), "sip:example.com");
        let req = self.register_request(user, "example.com", expires, Some(&auth));
        self.send_raw(&req).expect("send REGISTER with credentials");
        (401, self.recv_response(Duration::from_secs(5)))
    }

    /// Answers an inbound request with `status`.
    pub fn respond(&mut self, req: &Request, status: u16) {
        let resp = req.make_response(status, "OK", Some("client"));
        self.send_raw(&resp.to_bytes()).expect("send response");
    }
}

fn param(challenge: &str, name: &str) -> Option<String> {
    let at = challenge.find(&format!("{name}="))? + name.len() + 1;
    let rest = &challenge[at..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next().map(str::to_owned)
    } else {
        rest.split([',', ' ']).next().map(str::to_owned)
    }
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// RFC 2617 digest (MD5, qop=auth when offered) for a REGISTER.
pub fn digest_authorization(challenge: &str, user: &str, password: &str, uri: &str) -> String {
    let realm = param(challenge, "realm").expect("realm");
    let nonce = param(challenge, "nonce").expect("nonce");
    let opaque = param(challenge, "opaque");
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("REGISTER:{uri}"));
    let mut auth = format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm=MD5"
    );
    if param(challenge, "qop").is_some_and(|q| q.split(',').any(|v| v.trim() == "auth")) {
        let cnonce = "0a4f113b";
        let response = md5_hex(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        auth.push_str(&format!(
            ", qop=auth, nc=00000001, cnonce=\"{cnonce}\", response=\"{response}\""
        ));
    } else {
        let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
        auth.push_str(&format!(", response=\"{response}\""));
    }
    if let Some(o) = opaque {
        auth.push_str(&format!(", opaque=\"{o}\""));
    }
    auth
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// ucm-sim with its HTTP side (UDS, TFTP, vmrest, the OAuth issuer) on plain HTTP and on
/// HTTPS, the certificate `ucm.example.com` (IP SAN 127.0.0.1) from `pki`; stopped on drop.
#[derive(Debug)]
pub struct UcmHttpSim {
    process: PeerProcess,
    /// Its output.
    pub log: OutputLog,
    /// SIP over TCP.
    pub sip_tcp: SocketAddr,
    /// The HTTP side in plain HTTP (TFTP files).
    pub http: SocketAddr,
    /// The HTTP side over TLS (UDS, vmrest, OAuth).
    pub https: SocketAddr,
    /// Its admin API.
    pub admin: SocketAddr,
}

impl UcmHttpSim {
    /// Starts ucm-sim in `dir` with `users` (TOML) and further arguments `extra`.
    pub fn start(dir: &Path, pki: &TestPki, users: &str, extra: &[&str]) -> UcmHttpSim {
        let cert = pki
            .issue("ucm.example.com", &["127.0.0.1"], Eku::ServerAuth)
            .expect("ucm-sim certificate");
        let users_path = dir.join("ucm-users.toml");
        std::fs::write(&users_path, users).expect("users file");
        let ready = dir.join("ucm-http.ready");
        let _ = std::fs::remove_file(&ready);
        let mut process = PeerProcess::spawn(
            Command::new(peers::ucm_sim_binary())
                .args(["--sip-tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
                .args(["--https", "127.0.0.1:0", "--domain", "example.com"])
                .arg("--cert")
                .arg(&cert.cert_path)
                .arg("--key")
                .arg(&cert.key_path)
                .arg("--users")
                .arg(&users_path)
                .arg("--ready-file")
                .arg(&ready)
                .args(extra),
        );
        let v = wait_ready(&mut process, &ready, "ucm-sim");
        let addr = |k: &str| -> SocketAddr {
            v[k].as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("ucm-sim ready file lacks {k}: {v}"))
        };
        UcmHttpSim {
            log: process.log.clone(),
            sip_tcp: addr("sip_tcp"),
            http: addr("http"),
            https: addr("https"),
            admin: addr("admin"),
            process,
        }
    }

    /// One of its admin API's counters.
    pub fn counter(&self, name: &str) -> u64 {
        let mut s = TcpStream::connect(self.admin).expect("ucm-sim admin API");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        writeln!(s, "{{\"cmd\":\"counters\"}}").expect("admin command");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("admin reply");
        let v: Value = serde_json::from_str(&line).expect("admin JSON");
        v["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name}: {line}"))
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.process.exited().is_none()
    }
}
