//! Automated intrusion protection on the edge, end to end: a real edge and core
//! ([`Cluster`], or one with access control checking passwords with ucm-sim) with the HTTPS
//! tunnel up, curl as the client. Repeated failures from one source within the detection
//! window block it: its next connection is dropped at accept, before TLS (curl fails to
//! connect or handshake, it gets no HTTP status); the admin socket lists the block and
//! `unblock` lifts it. Allow-list denials, wrong passwords (not bare challenges), malformed
//! requests and oversize bodies block; exempt sources and disabled categories never do; a
//! short block expires by itself; the tunnel listener's refused certificates and non-TLS
//! bytes block under the sshpfwd categories; with XDP pins, the block reaches the kernel's
//! `blocked` map and a packet from the source is dropped there.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{
    core_config, curl_present, edge_config, eventually, pair_pki, password, tcp_from,
    tls_client_config, Cluster, ClusterOptions, Node, Scratch, UcmHttpSim, USERS,
};
use edgeway_testkit::pki::{Eku, TestPki};
use rustls::pki_types::ServerName;
use serde_json::Value;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// An edge with HTTPS and `[protection]` (`protection` its lines), and a core whose HTTP
/// tunnel to it is up.
struct Protected {
    nodes: Nodes,
    https: SocketAddr,
    tunnel: SocketAddr,
}

/// The processes behind a [`Protected`] edge.
enum Nodes {
    /// The testkit's cluster (ucm-sim without its HTTP side).
    Cluster(Cluster),
    /// A core with MRA access control, checking passwords with ucm-sim's UDS.
    Access {
        edge: Node,
        core: Node,
        _ucm: UcmHttpSim,
        pki: TestPki,
        _dir: Scratch,
    },
}

fn edge_lines(protection: &str) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\ntunnel_listen = \"127.0.0.1:0\"\n[protection]\n{protection}\n"
    )
}

/// What one curl request came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// An HTTP answer with this status.
    Status(u16),
    /// No HTTP answer: curl's exit code (7 connect, 35 TLS handshake, 52/56 receive).
    NoAnswer(i32),
}

const EDGE_CONFIG: &str = "get_edge_config/?service_name=_cisco-uds";

impl Protected {
    fn start(protection: &str) -> Protected {
        let cluster = Cluster::up(ClusterOptions {
            edge_extra: edge_lines(protection),
            core_extra: "[http]\ntunnel_address = \"{http_tunnel}\"\n".into(),
            ..ClusterOptions::default()
        });
        Protected::wait(Nodes::Cluster(cluster), &[])
    }

    /// The edge, and a core whose access control checks basic credentials with ucm-sim.
    fn with_access(protection: &str) -> Protected {
        let dir = Scratch::new("protection");
        let pki = pair_pki(dir.path(), Eku::Both);
        let ucm = UcmHttpSim::start(dir.path(), &pki, USERS, &[]);
        let edge = Node::start(&edge_config(
            dir.path(),
            "core.example.com",
            &edge_lines(protection),
        ));
        let opts = ClusterOptions {
            core_extra: format!(
                "[http]\ntunnel_address = \"{}\"\nuds_port = {}\n[http.access]\nauthorize_by_user_credentials = true\n",
                edge.addr("http_tunnel"),
                ucm.https.port()
            ),
            ..ClusterOptions::default()
        };
        let core = Node::start(&core_config(
            dir.path(),
            edge.addr("traversal"),
            ucm.sip_tcp,
            "tcp",
            &opts,
        ));
        let nodes = Nodes::Access {
            edge,
            core,
            _ucm: ucm,
            pki,
            _dir: dir,
        };
        Protected::wait(nodes, &["-u", &format!("alice:{}", password("alice"))])
    }

    /// Waits until `nodes`' tunnel answers 200 to a request with `auth`; successful
    /// requests count against nobody.
    fn wait(nodes: Nodes, auth: &[&str]) -> Protected {
        let edge = match &nodes {
            Nodes::Cluster(c) => &c.edge,
            Nodes::Access { edge, .. } => edge,
        };
        let p = Protected {
            https: edge.addr("https"),
            tunnel: edge.addr("http_tunnel"),
            nodes,
        };
        let up = eventually(Duration::from_secs(15), || {
            p.curl_with(&p.edge_config(), "127.0.0.1", auth) == Outcome::Status(200)
        });
        assert!(
            up,
            "HTTP tunnel did not come up\nedge:\n{}\ncore:\n{}",
            p.edge().log.text(),
            p.core().log.text()
        );
        p
    }

    fn edge(&self) -> &Node {
        match &self.nodes {
            Nodes::Cluster(c) => &c.edge,
            Nodes::Access { edge, .. } => edge,
        }
    }

    fn core(&self) -> &Node {
        match &self.nodes {
            Nodes::Cluster(c) => c.core(),
            Nodes::Access { core, .. } => core,
        }
    }

    fn ca(&self) -> std::path::PathBuf {
        match &self.nodes {
            Nodes::Cluster(c) => c.pki.ca_path(),
            Nodes::Access { pki, .. } => pki.ca_path(),
        }
    }

    fn edge_config(&self) -> String {
        format!("/{}/{EDGE_CONFIG}", b64("example.com"))
    }

    /// A tunnelled request the allow list refuses (403).
    fn denied(&self) -> String {
        format!("/{}/https/evil.example.com/8443/steal", b64("example.com"))
    }

    /// curl of `path` from source address `from`.
    fn curl(&self, path: &str, from: &str) -> Outcome {
        self.curl_with(path, from, &[])
    }

    /// curl of `path` from `from` with further arguments `extra`.
    fn curl_with(&self, path: &str, from: &str, extra: &[&str]) -> Outcome {
        let out = Command::new("curl")
            .args(["-sS", "--path-as-is", "--max-time", "5", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "--interface", from])
            .args(extra)
            .arg("--cacert")
            .arg(self.ca())
            .arg("--resolve")
            .arg(format!("edge.example.com:{}:127.0.0.1", self.https.port()))
            .arg(format!(
                "https://edge.example.com:{}{path}",
                self.https.port()
            ))
            .output()
            .expect("run curl");
        let code: u16 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        match (out.status.code(), code) {
            (Some(0), c) if c > 0 => Outcome::Status(c),
            (exit, _) => Outcome::NoAnswer(exit.unwrap_or(-1)),
        }
    }

    fn protection(&self) -> Value {
        self.edge().status()["protection"].clone()
    }

    fn blocked(&self) -> Vec<Value> {
        let reply = self.edge().admin("blocked");
        assert_eq!(reply["ok"], true, "{reply}");
        reply["blocked"].as_array().cloned().unwrap_or_default()
    }

    fn log(&self) -> String {
        self.edge().log.text()
    }
}

/// Whether a fresh TCP connection from `from` to `to` is closed by the edge without
/// waiting for a ClientHello: EOF or reset well inside the 1 s TLS handshake timeout.
fn closed_at_accept(to: SocketAddr, from: &str) -> bool {
    let start = Instant::now();
    let Ok(mut tcp) = tcp_from(to, Some(from.parse().expect("source"))) else {
        return true; // refused outright
    };
    tcp.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    let closed = matches!(tcp.read(&mut byte), Ok(0) | Err(_));
    closed && start.elapsed() < Duration::from_millis(600)
}

#[test]
fn repeated_denials_block_the_source_before_tls_until_unblocked() {
    if !curl_present("intrusion protection") {
        return;
    }
    let p = Protected::start(
        "[protection.http-ce-intrusion]\ntrigger_level = 3\ndetection_window_s = 60\n",
    );
    for i in 0..3 {
        assert_eq!(
            p.curl(&p.denied(), "127.0.0.1"),
            Outcome::Status(403),
            "denial {i}"
        );
    }
    let refused_before = p.protection()["counters"]["blocked_connections"]
        .as_u64()
        .unwrap_or(0);
    let next = p.curl(&p.edge_config(), "127.0.0.1");
    assert!(
        matches!(next, Outcome::NoAnswer(_)),
        "the blocked source gets no HTTP answer, not even a 4xx: {next:?}\n{}",
        p.log()
    );
    assert!(closed_at_accept(p.https, "127.0.0.1"), "closed before TLS");
    assert!(
        closed_at_accept(p.edge().addr("sip"), "127.0.0.1"),
        "the SIP listener drops it too"
    );
    let status = p.protection();
    assert!(
        status["counters"]["blocked_connections"]
            .as_u64()
            .unwrap_or(0)
            >= refused_before + 3,
        "{status}"
    );
    let intrusion = &status["categories"][1];
    assert_eq!(
        (&intrusion["id"], &intrusion["blocks"]),
        (&Value::from("http-ce-intrusion"), &Value::from(1)),
        "{status}"
    );

    let blocked = p.blocked();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    let b = &blocked[0];
    assert_eq!(b["address"], "127.0.0.1");
    assert_eq!(b["category"], "http-ce-intrusion");
    assert_eq!(b["failures"], 3);
    assert!(b["refused"].as_u64().unwrap_or(0) >= 3, "{b}");
    let (since, until) = (
        b["since"].as_f64().unwrap_or(0.0),
        b["until"].as_f64().unwrap_or(0.0),
    );
    assert!(
        (until - since - 600.0).abs() < 0.01,
        "default block: 10 minutes: {b}"
    );

    assert_eq!(p.curl(&p.edge_config(), "127.0.0.2"), Outcome::Status(200));

    let reply = p.edge().admin("unblock 127.0.0.1");
    assert_eq!(
        (&reply["ok"], &reply["unblocked"]),
        (&Value::Bool(true), &Value::Bool(true)),
        "{reply}"
    );
    assert_eq!(p.curl(&p.edge_config(), "127.0.0.1"), Outcome::Status(200));
    assert!(p.blocked().is_empty());
    let again = p.edge().admin("unblock 127.0.0.1");
    assert_eq!(again["unblocked"], false, "{again}");
    let bad = p.edge().admin("unblock not-an-address");
    assert_eq!(bad["ok"], false, "{bad}");
    let core = p.core().admin("blocked");
    assert_eq!(core["ok"], false, "the core runs no protection: {core}");
}

#[test]
fn wrong_passwords_block_under_http_ce_auth_but_challenges_do_not() {
    if !curl_present("intrusion protection (http-ce-auth)") {
        return;
    }
    let p = Protected::with_access(
        "[protection.http-ce-auth]\ntrigger_level = 3\nexemptions = [\"127.0.0.3\"]\n",
    );
    let right = format!("alice:{}", password("alice"));
    let config = p.edge_config();
    for _ in 0..5 {
        // No credentials: the core's 401 is the challenge of a sign-in, not a failure.
        assert_eq!(p.curl(&config, "127.0.0.1"), Outcome::Status(401));
    }
    for _ in 0..5 {
        let wrong = p.curl_with(&config, "127.0.0.3", &["-u", "alice:wrong"]);
        assert_eq!(wrong, Outcome::Status(401), "exempt for http-ce-auth");
    }
    assert_eq!(
        p.curl_with(&config, "127.0.0.3", &["-u", &right]),
        Outcome::Status(200)
    );
    for i in 0..3 {
        let wrong = p.curl_with(&config, "127.0.0.1", &["-u", "alice:wrong"]);
        assert_eq!(wrong, Outcome::Status(401), "wrong password {i}");
    }
    let next = p.curl_with(&config, "127.0.0.1", &["-u", &right]);
    assert!(
        matches!(next, Outcome::NoAnswer(_)),
        "blocked, even with the right password: {next:?}\n{}",
        p.log()
    );
    let blocked = p.blocked();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(
        (&blocked[0]["address"], &blocked[0]["category"]),
        (&Value::from("127.0.0.1"), &Value::from("http-ce-auth"))
    );
    let status = p.protection();
    assert_eq!(status["categories"][0]["failures"], 3, "{status}");
    assert_eq!(status["counters"]["exempt"], 5, "{status}");
}

#[test]
fn exempt_sources_and_disabled_categories_are_never_blocked() {
    if !curl_present("intrusion protection") {
        return;
    }
    let p = Protected::start(
        "exemptions = [\"127.0.0.2\"]\n[protection.http-ce-intrusion]\ntrigger_level = 2\n[protection.http-ce-auth]\nexemptions = [\"127.0.0.3/32\"]\n",
    );
    for _ in 0..6 {
        assert_eq!(p.curl(&p.denied(), "127.0.0.2"), Outcome::Status(403));
    }
    // 404s are "resource access failure", off by default as the guide advises.
    let unknown = format!("/{}/{EDGE_CONFIG}", b64("unknown.example.org"));
    for _ in 0..6 {
        assert_eq!(p.curl(&unknown, "127.0.0.4"), Outcome::Status(404));
    }
    assert_eq!(p.curl(&p.edge_config(), "127.0.0.2"), Outcome::Status(200));
    assert_eq!(p.curl(&p.edge_config(), "127.0.0.4"), Outcome::Status(200));
    // A category's own exemption covers only that category.
    assert_eq!(p.curl(&p.denied(), "127.0.0.3"), Outcome::Status(403));
    assert_eq!(p.curl(&p.denied(), "127.0.0.3"), Outcome::Status(403));
    assert!(matches!(
        p.curl(&p.edge_config(), "127.0.0.3"),
        Outcome::NoAnswer(_)
    ));
    let blocked = p.blocked();
    let addresses: Vec<&str> = blocked
        .iter()
        .filter_map(|b| b["address"].as_str())
        .collect();
    assert_eq!(addresses, ["127.0.0.3"], "{blocked:?}");
    let status = p.protection();
    assert_eq!(status["counters"]["exempt"], 6, "{status}");
    assert_eq!(status["categories"][2]["id"], "http-ce-resource");
    assert_eq!(status["categories"][2]["enabled"], false);
    assert_eq!(status["categories"][2]["failures"], 0, "{status}");
}

#[test]
fn malformed_requests_and_oversize_bodies_block_for_a_short_duration_that_expires() {
    if !curl_present("intrusion protection") {
        return;
    }
    let p = Protected::start(
        "[protection.http-ce-intrusion]\ntrigger_level = 2\nblock_duration_s = 2\ndetection_window_s = 30\n",
    );
    let config = tls_client_config(&p.ca());
    // hyper's own 400 for a broken request line; the edge's 413 for a 64 MiB body,
    // refused from the head.
    let tries: [(&[u8], &str); 2] = [
        (b"GET /\x01bad HTTP/1.1\r\n\r\n", "HTTP/1.1 400"),
        (
            b"POST /x HTTP/1.1\r\nHost: e\r\nContent-Length: 67108864\r\n\r\n",
            "HTTP/1.1 413",
        ),
    ];
    for (request, want) in tries {
        let answer = raw_https(&config, p.https, request);
        assert!(answer.starts_with(want), "{want}: {answer:?}");
    }
    assert!(eventually(Duration::from_secs(2), || !p
        .blocked()
        .is_empty()));
    assert!(matches!(
        p.curl(&p.edge_config(), "127.0.0.1"),
        Outcome::NoAnswer(_)
    ));
    let b = &p.blocked()[0];
    assert_eq!(b["category"], "http-ce-intrusion", "{b}");
    assert!(b["remaining_s"].as_u64().unwrap_or(99) <= 2, "{b}");
    let lifted = eventually(Duration::from_secs(4), || p.blocked().is_empty());
    assert!(lifted, "the 2 s block ran out: {:?}", p.blocked());
    assert_eq!(p.curl(&p.edge_config(), "127.0.0.1"), Outcome::Status(200));
    // The list hides a block past its end at once; the 200 ms tick then counts it expired.
    let counted = eventually(Duration::from_secs(2), || {
        p.protection()["counters"]["expired"] == 1
    });
    assert!(counted, "{}", p.protection());
}

/// Sends `request` over TLS to `to` (from 127.0.0.1) and reads the answer's start.
fn raw_https(config: &Arc<rustls::ClientConfig>, to: SocketAddr, request: &[u8]) -> String {
    let name = ServerName::try_from("edge.example.com").expect("name");
    let conn = rustls::ClientConnection::new(config.clone(), name).expect("client");
    let tcp = TcpStream::connect(to).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request).expect("write");
    let mut buf = vec![0u8; 256];
    let n = tls.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn tunnel_listener_refusals_block_under_the_sshpfwd_categories() {
    if !curl_present("intrusion protection") {
        return;
    }
    let p = Protected::start(
        "[protection.sshpfwd-auth]\ntrigger_level = 2\n[protection.sshpfwd-intrusion]\ntrigger_level = 2\n",
    );
    // No client certificate: the tunnel demands the core's.
    let config = tls_client_config(&p.ca());
    for _ in 0..2 {
        let name = ServerName::try_from("edge.example.com").expect("name");
        let mut conn = rustls::ClientConnection::new(config.clone(), name).expect("client");
        let mut tcp = tcp_from(p.tunnel, Some("127.0.0.5".parse().expect("ip"))).expect("tcp");
        tcp.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        while conn.is_handshaking() {
            if conn.complete_io(&mut tcp).is_err() {
                break;
            }
        }
        let _ = conn.complete_io(&mut tcp); // the edge's alert arrives after the flight
    }
    // Bytes that are not TLS (an SSH client, say).
    for _ in 0..2 {
        let mut tcp = tcp_from(p.tunnel, Some("127.0.0.6".parse().expect("ip"))).expect("tcp");
        tcp.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let _ = tcp.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
        let _ = tcp.read(&mut [0u8; 64]);
    }
    let both = eventually(Duration::from_secs(3), || p.blocked().len() == 2);
    let blocked = p.blocked();
    assert!(both, "{blocked:?}\n{}", p.log());
    let by_address = |a: &str| {
        blocked
            .iter()
            .find(|b| b["address"] == a)
            .map(|b| b["category"].clone())
    };
    assert_eq!(by_address("127.0.0.5"), Some(Value::from("sshpfwd-auth")));
    assert_eq!(
        by_address("127.0.0.6"),
        Some(Value::from("sshpfwd-intrusion"))
    );
    assert!(closed_at_accept(p.tunnel, "127.0.0.5"));
    assert!(closed_at_accept(p.https, "127.0.0.6"));
    // The core's tunnel (from 127.0.0.1) is untouched.
    assert_eq!(p.curl(&p.edge_config(), "127.0.0.1"), Outcome::Status(200));
}

#[test]
fn a_block_reaches_the_pinned_xdp_map_and_the_kernel_drops_the_source() {
    if !curl_present("intrusion protection") {
        return;
    }
    if !may_pin() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs root and bpffs; under CI=true this fails"
        );
        eprintln!("SKIPPED: not root or no bpffs: the XDP blocked map was not tested");
        return;
    }
    let pins = PinDir::new();
    let program = edgeway_xdp::MediaProgram::load(Some(&pins.0)).expect("load the XDP program");
    let probe = udp_frame([127, 0, 0, 1], 40_000);
    let pass = program.test_run(&probe, 1).expect("test run");
    assert_eq!(
        pass.action,
        edgeway_xdp::action::PASS,
        "not blocked yet: not media, passed"
    );

    let p = Protected::start(&format!(
        "xdp_pin_dir = \"{}\"\n[protection.http-ce-intrusion]\ntrigger_level = 2\n",
        pins.0.display()
    ));
    for _ in 0..2 {
        assert_eq!(p.curl(&p.denied(), "127.0.0.1"), Outcome::Status(403));
    }
    let map = edgeway_xdp::PinnedBlockedMap::open(&pins.0).expect("blocked map");
    let ip = std::net::Ipv4Addr::LOCALHOST;
    let in_map = eventually(Duration::from_secs(2), || {
        map.addresses().expect("read blocked").contains(&ip)
    });
    assert!(in_map, "{}\n{}", p.protection(), p.log());
    let dropped_before = program.counters().expect("counters").drops[9];
    let drop = program.test_run(&probe, 1).expect("test run");
    assert_eq!(drop.action, edgeway_xdp::action::DROP);
    assert_eq!(
        program.counters().expect("counters").drops[9],
        dropped_before + 1,
        "counted as blocked_source"
    );
    let other = program
        .test_run(&udp_frame([127, 0, 0, 2], 40_000), 1)
        .expect("test run");
    assert_eq!(other.action, edgeway_xdp::action::PASS, "others pass");
    assert_eq!(p.protection()["xdp"]["active"], true);

    assert_eq!(p.edge().admin("unblock 127.0.0.1")["unblocked"], true);
    assert!(map.addresses().expect("read blocked").is_empty());
    assert_eq!(
        program.test_run(&probe, 1).expect("test run").action,
        edgeway_xdp::action::PASS
    );
}

/// Root, as far as this test needs: allowed to create a directory under bpffs.
fn may_pin() -> bool {
    let probe =
        std::path::Path::new("/sys/fs/bpf").join(format!("edgeway-probe-{}", std::process::id()));
    let ok = std::fs::create_dir(&probe).is_ok();
    let _ = std::fs::remove_dir(&probe);
    ok
}

/// A bpffs pin directory for one test, removed with its pins on drop.
struct PinDir(std::path::PathBuf);

impl PinDir {
    fn new() -> PinDir {
        let dir = std::path::Path::new("/sys/fs/bpf")
            .join(format!("edgeway-protection-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        PinDir(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An Ethernet + IPv4 + UDP frame from `source` to 127.0.0.1:`port`, checksums right.
fn udp_frame(source: [u8; 4], port: u16) -> Vec<u8> {
    let payload = [0x80u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip.extend_from_slice(&source);
    ip.extend_from_slice(&[127, 0, 0, 1]);
    let sum = !ones_complement(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40_001u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    f.extend_from_slice(&payload);
    f
}

fn ones_complement(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}
