//! HTTPS through the edge, end to end with real processes and a real client (curl): the
//! core dials the edge's HTTP tunnel with mutual TLS and serves HTTP/2 on it; get_edge_config
//! is answered per domain; UDS, TFTP and vmrest requests reach ucm-sim through edge and core
//! when the allow list allows them, and encoded or dot-segment escapes of a prefix rule get
//! 403; malformed requests and huge headers get 4xx; the tunnel survives a core restart.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{core_config, edge_config, pair_pki, tls_client_config, ClusterOptions, Node};
use edgeway_testkit::control::curl_present;
use edgeway_testkit::control::UcmHttpSim;
use edgeway_testkit::pki::Eku;
use rustls::pki_types::ServerName;

const USERS: &str = r#"
[[user]]
name = "alice"
password = "alice-secret"
number = "1001"
security_profile = "non-secure"
devices = ["CSFALICE"]
"#;

/// A scratch folder, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("edgeway-https-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("scratch dir");
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The whole path: a CA, ucm-sim, an edge and a core whose HTTP tunnel is up.
struct Rig {
    dir: Dir,
    ucm: UcmHttpSim,
    edge: Node,
    core: Node,
    core_config: PathBuf,
    https: SocketAddr,
}

impl Rig {
    fn start() -> Rig {
        let rig = Rig::start_verifying("core.example.com");
        rig.wait_tunnel();
        rig
    }

    /// A rig whose edge demands `subject` of the core's certificate ("TLS verify subject
    /// name"); the tunnel may not be up yet.
    fn start_verifying(subject: &str) -> Rig {
        let dir = Dir::new();
        let pki = pair_pki(&dir.0, Eku::Both);
        let ucm = UcmHttpSim::start(&dir.0, &pki, USERS, &[]);
        let edge = Node::start(&edge_config(
            &dir.0,
            subject,
            "max_connections_per_source = 4\n[http]\nlisten = \"127.0.0.1:0\"\ntunnel_listen = \"127.0.0.1:0\"\nmax_header_bytes = 8192\n",
        ));
        let opts = ClusterOptions {
            core_extra: format!(
                "[http]\ntunnel_address = \"{tunnel}\"\nuds_port = {uds}\ntftp_port = {tftp}\nallowlist_store = \"allowlist.json\"\n[[http.nodes]]\nkind = \"unity_connection\"\nhost = \"127.0.0.1\"\nhttps_port = {uds}\n",
                tunnel = edge.addr("http_tunnel"),
                uds = ucm.https.port(),
                tftp = ucm.http.port(),
            ),
            ..ClusterOptions::default()
        };
        let core_config = core_config(&dir.0, edge.addr("traversal"), ucm.sip_tcp, "tcp", &opts);
        let core = Node::start(&core_config);
        let https = edge.addr("https");
        Rig {
            dir,
            ucm,
            edge,
            core,
            core_config,
            https,
        }
    }

    /// Waits until get_edge_config answers 200 (the tunnel is up).
    fn wait_tunnel(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, _) = self.curl(&format!("/{}/get_edge_config/", b64("example.com")), &[]);
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HTTP tunnel did not come up (last {status})\nedge:\n{}\ncore:\n{}",
                self.edge.log.text(),
                self.core.log.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `curl` of `path` on the edge (as edge.example.com, verified against the test CA):
    /// status and body. `--path-as-is` so dot segments reach the edge as written.
    fn curl(&self, path: &str, extra: &[&str]) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--path-as-is", "--max-time", "10"])
            .arg("--cacert")
            .arg(self.dir.0.join("ca.pem"))
            .arg("--resolve")
            .arg(format!("edge.example.com:{}:127.0.0.1", self.https.port()))
            .args(["-w", "\n%{http_code}"])
            .args(extra)
            .arg(format!(
                "https://edge.example.com:{}{path}",
                self.https.port()
            ))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn tunnelled(&self, scheme: &str, port: u16, rest: &str) -> String {
        format!("/{}/{scheme}/127.0.0.1/{port}/{rest}", b64("example.com"))
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn edge_config_uds_tftp_and_voicemail_through_edge_and_core() {
    if !curl_present("HTTPS through the edge") {
        return;
    }
    let rig = Rig::start();
    let (status, xml) = rig.curl(
        &format!(
            "/{}/get_edge_config/?service_name=_cisco-uds",
            b64("example.com")
        ),
        &[],
    );
    assert_eq!(status, 200, "{xml}");
    assert!(xml.contains("<getEdgeConfigResponse"), "{xml}");
    assert!(xml.contains("<sipEdgeServer><server>"), "{xml}");
    assert!(
        xml.contains("<tlsPort>5061</tlsPort><address>edge.example.com</address>"),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("<name>_cisco-uds</name><server><priority>1</priority><weight>1</weight><port>{}</port><address>127.0.0.1</address>", rig.ucm.https.port())),
        "{xml}"
    );
    // A domain without SIP registrations gets no SIP edge server; an unknown one nothing.
    let (status, xml) = rig.curl(
        &format!("/{}/get_edge_config/", b64("noreg.example.com")),
        &[],
    );
    assert_eq!(status, 200);
    assert!(!xml.contains("sipEdgeServer"), "{xml}");
    let (status, _) = rig.curl(
        &format!("/{}/get_edge_config/", b64("other.example.org")),
        &[],
    );
    assert_eq!(status, 404);

    let uds = rig.tunnelled("https", rig.ucm.https.port(), "cucm-uds/user/alice");
    let (status, body) = rig.curl(&uds, &["-u", "alice:alice-secret"]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<userName>alice</userName><phoneNumber>1001</phoneNumber>"),
        "{body}"
    );
    let (status, _) = rig.curl(&uds, &["-u", "alice:wrong"]);
    assert_eq!(
        status, 401,
        "ucm-sim's refusal comes back through the tunnel"
    );

    let tftp = rig.tunnelled("http", rig.ucm.http.port(), "CSFALICE.cnf.xml");
    let (status, body) = rig.curl(&tftp, &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<name>CSFALICE</name>"), "{body}");

    let vm = rig.tunnelled("https", rig.ucm.https.port(), "vmrest/user");
    let (status, body) = rig.curl(&vm, &["-u", "alice:alice-secret"]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Alias>alice</Alias>"), "{body}");
}

#[test]
fn disallowed_urls_and_escapes_get_403_and_the_store_allows_more() {
    if !curl_present("HTTPS through the edge") {
        return;
    }
    let rig = Rig::start();
    let port = rig.ucm.https.port();
    for escape in [
        "cucm-uds/../admin/secret",
        "cucm-uds/%2e%2e/admin/secret",
        "cucm-uds/%2E%2E/%2e%2e/admin",
        "cucm-uds/.%2e/admin",
        "cucm-uds/%2e%2e%2fadmin",
        "admin/secret",
    ] {
        let (status, body) = rig.curl(
            &rig.tunnelled("https", port, escape),
            &["-u", "alice:alice-secret"],
        );
        assert_eq!(status, 403, "{escape}: {body}");
    }
    // A method the UDS rule does not allow, a port with no rule, a host with no rule.
    let uds = rig.tunnelled("https", port, "cucm-uds/user/alice");
    assert_eq!(rig.curl(&uds, &["-X", "DELETE"]).0, 403);
    assert_eq!(rig.curl(&rig.tunnelled("http", 1, "cucm-uds/"), &[]).0, 403);
    let other = format!(
        "/{}/https/intranet.example.com/443/cucm-uds/",
        b64("example.com")
    );
    assert_eq!(rig.curl(&other, &[]).0, 403);
    let (status, _) = rig.curl(&rig.tunnelled("http", rig.ucm.http.port(), "../x"), &[]);
    assert_eq!(
        status, 404,
        "TFTP's prefix rule covers / of its port: ucm-sim answers"
    );

    // An editable rule in the store (what `edgewayctl allowlist upload` writes) takes effect
    // without a restart.
    // Plain HTTP to the HTTPS port: allowed, it reaches ucm-sim, which fails the exchange.
    let extra = rig.tunnelled("http", rig.ucm.https.port(), "extra/x");
    assert_eq!(rig.curl(&extra, &[]).0, 403);
    let csv = format!(
        "Url,Deployment,HttpMethods,MatchType,Description\nhttp://127.0.0.1:{}/extra/,,GET,prefix,\"extra\"\n",
        rig.ucm.https.port()
    );
    let parsed = edgeway_allowlist::parse_rules(&csv);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let store = edgeway_allowlist::RuleStore {
        rules: parsed.rows.into_iter().map(|(_, rule)| rule).collect(),
        ..Default::default()
    };
    std::fs::write(rig.dir.0.join("allowlist.json"), store.to_json()).expect("store");
    let (status, body) = rig.curl(&extra, &[]);
    assert_ne!(status, 403, "the stored rule allows it: {body}");
}

/// A raw HTTP/1.1 exchange over TLS with the edge: the status code of its answer.
fn raw_status(rig: &Rig, request: &[u8]) -> u16 {
    let config: Arc<rustls::ClientConfig> = tls_client_config(&rig.dir.0.join("ca.pem"));
    let name = ServerName::try_from("edge.example.com").expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    let tcp = TcpStream::connect(rig.https).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // The edge may answer and close before a flood is written: read what came all the same.
    let _ = tls.write_all(request);
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn malformed_requests_and_huge_headers_get_4xx() {
    if !curl_present("HTTPS through the edge") {
        return;
    }
    let rig = Rig::start();
    let garbage = raw_status(&rig, b"NOT HTTP AT ALL\r\n\r\n");
    assert!((400..500).contains(&garbage), "garbage got {garbage}");
    let huge = format!(
        "GET /{}/get_edge_config/ HTTP/1.1\r\nHost: edge\r\nX-Big: {}\r\n\r\n",
        b64("example.com"),
        "a".repeat(9 * 1024)
    );
    assert_eq!(
        raw_status(&rig, huge.as_bytes()),
        431,
        "a head just over the limit"
    );
    // Far over the limit the edge answers 431 and closes while the client still writes, so
    // the client may see only the reset: never anything but a 4xx.
    let flood = huge.replace(&"a".repeat(9 * 1024), &"a".repeat(256 * 1024));
    let status = raw_status(&rig, flood.as_bytes());
    assert!(
        status == 0 || (400..500).contains(&status),
        "a 256 KiB head got {status}"
    );
    let big = "a".repeat(20_000);
    let (status, _) = rig.curl(
        &format!("/{}/get_edge_config/", b64("example.com")),
        &["-H", &format!("X-Big: {big}")],
    );
    assert!(
        (400..500).contains(&status),
        "curl with a huge header got {status}"
    );
    for bad in [
        "/",
        "/!!!/get_edge_config/",
        &format!("/{}/ftp/h/21/x", b64("example.com")),
    ] {
        let (status, _) = rig.curl(bad, &[]);
        assert_eq!(status, 404, "{bad}");
    }
    // The edge still serves after all that.
    assert_eq!(
        rig.curl(&format!("/{}/get_edge_config/", b64("example.com")), &[])
            .0,
        200
    );
}

#[test]
fn the_tunnel_survives_a_core_restart() {
    if !curl_present("HTTPS through the edge") {
        return;
    }
    let mut rig = Rig::start();
    rig.core.kill();
    let path = format!("/{}/get_edge_config/", b64("example.com"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = rig.curl(&path, &[]);
        if status == 502 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "edge still answered 200 without a core"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    rig.core = Node::start(&rig.core_config);
    rig.wait_tunnel();
    assert_eq!(rig.curl(&path, &[]).0, 200);
}

#[test]
fn the_tunnel_demands_the_traversal_subject_name() {
    if !curl_present("HTTPS through the edge") {
        return;
    }
    let rig = Rig::start_verifying("other-core.example.com");
    assert!(
        rig.edge.log.wait_for(Duration::from_secs(10), |t| t
            .contains("HTTP tunnel handshake from")
            && t.contains("TLS verify subject name \"other-core.example.com\"")),
        "{}",
        rig.edge.log.text()
    );
    let (status, body) = rig.curl(&format!("/{}/get_edge_config/", b64("example.com")), &[]);
    assert_eq!(status, 502, "no tunnel, no answer: {body}");
}

#[test]
fn one_source_gets_at_most_its_share_of_connections() {
    if !curl_present("HTTPS through the edge") {
        return;
    }
    let rig = Rig::start();
    // Four idle connections from 127.0.0.1 (edge.max_connections_per_source = 4) are held
    // (for under the 1 s handshake timeout, which would free them)...
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(rig.https).expect("connect"))
        .collect();
    // ...so a fifth from the same source, accepted after them, is closed unanswered.
    let request = format!(
        "GET /{}/get_edge_config/ HTTP/1.1\r\nHost: edge\r\n\r\n",
        b64("example.com")
    );
    assert_eq!(
        raw_status(&rig, request.as_bytes()),
        0,
        "a connection over the per-source limit was served"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig
        .curl(&format!("/{}/get_edge_config/", b64("example.com")), &[])
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "slots were not given back");
        std::thread::sleep(Duration::from_millis(100));
    }
}
