//! Bad input on the edge's client HTTPS listener (8443), against a real edge and core on
//! loopback: raw TLS sockets (rustls) say exactly what goes on the wire, and the core answers
//! get_edge_config over the HTTP tunnel so a good request is a real round trip through both
//! nodes. Each case holds the edge to what `http::edge` promises: huge heads get 431 and the
//! connection closed, slow heads (slowloris) are cut at the header-read timeout while other
//! clients are served, one source gets at most `edge.max_connections_per_source`
//! connections, malformed request lines get 400, HTTP/1.0 and pipelined requests are
//! answered in order, and a client that never finishes its TLS handshake is cut by the
//! handshake timeout; a body announced over `http.max_body_bytes`, or a chunked one that
//! grows past it, gets 413.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use edgeway_testkit::control::{
    core_config, edge_config, tcp_from, tls_client_config, ClusterOptions, Node,
};
use edgeway_testkit::control::{pair_pki, Scratch, USERS};
use edgeway_testkit::peers::{ucm_sim_binary, UcmSim, UcmSimOptions};
use edgeway_testkit::pki::Eku;
use rustls::pki_types::ServerName;

/// The edge's `edge.tls_handshake_timeout_ms`, also its header-read timeout.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1500);
/// `edge.max_connections_per_source`.
const PER_SOURCE: usize = 4;
/// `http.max_header_bytes`.
const MAX_HEADER_BYTES: usize = 8192;
/// `http.max_body_bytes`.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// ucm-sim (SIP only: the core needs a Unified CM), an edge and a core whose tunnel is up.
struct Rig {
    _ucm: UcmSim,
    edge: Node,
    _core: Node,
    _dir: Scratch,
    https: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Rig {
    fn start() -> Rig {
        let dir = Scratch::new("https-abuse");
        pair_pki(dir.path(), Eku::Both);
        let ucm = UcmSim::spawn(&ucm_sim_binary(), &UcmSimOptions::tcp_with_users(USERS));
        // The shared edge configuration with a longer handshake (and header-read) timeout
        // than its 1 s, so the cases that hold connections have room on a busy host.
        let edge_toml = edge_config(
            dir.path(),
            "core.example.com",
            &format!(
                "max_connections_per_source = {PER_SOURCE}\n[http]\nlisten = \"127.0.0.1:0\"\ntunnel_listen = \"127.0.0.1:0\"\nmax_header_bytes = {MAX_HEADER_BYTES}\nmax_body_bytes = {MAX_BODY_BYTES}\n"
            ),
        );
        let text = std::fs::read_to_string(&edge_toml).expect("edge config");
        let timeout_line = format!(
            "tls_handshake_timeout_ms = {}",
            HANDSHAKE_TIMEOUT.as_millis()
        );
        let adjusted = text.replace("tls_handshake_timeout_ms = 1000", &timeout_line);
        assert!(
            adjusted.contains(&timeout_line),
            "no handshake timeout in {text}"
        );
        std::fs::write(&edge_toml, adjusted).expect("edge config");
        let edge = Node::start(&edge_toml);
        let opts = ClusterOptions {
            core_extra: format!(
                "[http]\ntunnel_address = \"{}\"\n",
                edge.addr("http_tunnel")
            ),
            ..ClusterOptions::default()
        };
        let sip = ucm.sip_tcp.expect("ucm-sim listens on TCP");
        let core = Node::start(&core_config(
            dir.path(),
            edge.addr("traversal"),
            sip,
            "tcp",
            &opts,
        ));
        let rig = Rig {
            https: edge.addr("https"),
            tls: tls_client_config(&ca_path(&dir)),
            _ucm: ucm,
            edge,
            _core: core,
            _dir: dir,
        };
        rig.wait_tunnel();
        rig
    }

    fn wait_tunnel(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.get_edge_config(None) == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HTTP tunnel did not come up\nedge:\n{}",
                self.edge.log.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A TLS connection to the edge from `source` (default 127.0.0.1), handshake done.
    fn connect_from(&self, source: Option<IpAddr>) -> std::io::Result<Tls> {
        let tcp = tcp_from(self.https, source)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::try_from("edge.example.com").expect("name");
        let conn = rustls::ClientConnection::new(self.tls.clone(), name).expect("client");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(tls)
    }

    fn connect(&self) -> Tls {
        self.connect_from(None).expect("TLS to the edge")
    }

    /// One good request on a fresh connection from `source`: the answer's status (0: none).
    fn get_edge_config(&self, source: Option<IpAddr>) -> u16 {
        let Ok(mut tls) = self.connect_from(source) else {
            return 0;
        };
        let request = format!("GET {} HTTP/1.1\r\nHost: edge\r\n\r\n", edge_config_path());
        if tls.write_all(request.as_bytes()).is_err() {
            return 0;
        }
        read_response(&mut tls).map_or(0, |r| r.status)
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn ca_path(dir: &Scratch) -> PathBuf {
    dir.path().join("ca.pem")
}

fn edge_config_path() -> String {
    format!(
        "/{}/get_edge_config/",
        base64::engine::general_purpose::STANDARD.encode("example.com")
    )
}

/// One HTTP/1.x response as read off the wire.
#[derive(Debug)]
struct Answer {
    version: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Bytes read from a connection but not yet consumed, kept per stream by the caller.
fn fill(stream: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        // The edge closing without close_notify reads as an unexpected EOF: closed all the same.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads the next response from `stream`, `buf` holding what was read before and keeping
/// what follows it (pipelined answers). Content-Length, chunked and close-delimited bodies.
fn next_response(stream: &mut impl Read, buf: &mut Vec<u8>) -> Option<Answer> {
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        if !fill(stream, buf).ok()? {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.splitn(3, ' ');
    let version = status_line.next()?.to_string();
    let status = status_line.next()?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    buf.drain(..head_end);
    let mut answer = Answer {
        version,
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = answer.header("content-length") {
        let len: usize = len.parse().ok()?;
        while buf.len() < len {
            if !fill(stream, buf).ok()? {
                return None;
            }
        }
        answer.body = buf.drain(..len).collect();
    } else if answer
        .header("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        loop {
            let eol = loop {
                if let Some(p) = find(buf, b"\r\n") {
                    break p;
                }
                if !fill(stream, buf).ok()? {
                    return None;
                }
            };
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&buf[..eol]).trim(), 16).ok()?;
            while buf.len() < eol + 2 + size + 2 {
                if !fill(stream, buf).ok()? {
                    return None;
                }
            }
            answer.body.extend_from_slice(&buf[eol + 2..eol + 2 + size]);
            buf.drain(..eol + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        while fill(stream, buf).unwrap_or(false) {}
        answer.body = std::mem::take(buf);
    }
    Some(answer)
}

fn read_response(stream: &mut impl Read) -> Option<Answer> {
    next_response(stream, &mut Vec::new())
}

/// Whether the edge has closed `stream`: a read sees end of stream (or a reset) rather than
/// data or the read timeout.
fn closed(stream: &mut impl Read) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// Sends `request` on a fresh connection and reads one answer (the edge may answer and
/// close while a flood is still being written: what came is read all the same).
fn exchange(rig: &Rig, request: &[u8]) -> (Option<Answer>, Tls) {
    let mut tls = rig.connect();
    let _ = tls.write_all(request);
    let _ = tls.flush();
    (read_response(&mut tls), tls)
}

#[test]
fn huge_heads_get_431_and_the_connection_is_closed() {
    let rig = Rig::start();
    let path = edge_config_path();
    let cases = [
        (
            "one header just over the limit",
            format!(
                "GET {path} HTTP/1.1\r\nHost: edge\r\nX-Big: {}\r\n\r\n",
                "a".repeat(MAX_HEADER_BYTES + 512)
            ),
        ),
        (
            "2,000 small headers",
            format!(
                "GET {path} HTTP/1.1\r\nHost: edge\r\n{}\r\n",
                (0..2000)
                    .map(|i| format!("X-{i}: v\r\n"))
                    .collect::<String>()
            ),
        ),
        (
            "a request line over the limit",
            format!(
                "GET {path}?q={} HTTP/1.1\r\nHost: edge\r\n\r\n",
                "q".repeat(MAX_HEADER_BYTES + 512)
            ),
        ),
    ];
    for (what, request) in cases {
        let (answer, mut tls) = exchange(&rig, request.as_bytes());
        let answer = answer.unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(answer.status, 431, "{what}: {answer:?}");
        assert!(closed(&mut tls), "{what}: the connection stayed open");
    }
    // Far over the limit (256 KiB) the edge answers and closes while the client still
    // writes: the client may see only the reset, never anything but a 431.
    let (answer, _) = exchange(
        &rig,
        format!(
            "GET {path} HTTP/1.1\r\nHost: edge\r\nX-Big: {}\r\n\r\n",
            "a".repeat(256 * 1024)
        )
        .as_bytes(),
    );
    if let Some(answer) = answer {
        assert_eq!(answer.status, 431, "{answer:?}");
    }
    // A head just under the limit is served.
    let (answer, _) = exchange(
        &rig,
        format!(
            "GET {path} HTTP/1.1\r\nHost: edge\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_BYTES - 512)
        )
        .as_bytes(),
    );
    assert_eq!(answer.expect("answer").status, 200);
}

#[test]
fn a_slow_head_is_cut_at_the_header_read_timeout_while_others_are_served() {
    let rig = Rig::start();
    let mut slow = rig.connect();
    slow.get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: edge\r\nX-Slow: ",
        edge_config_path()
    );
    let started = Instant::now();
    let mut cut_after = None;
    let mut served_meanwhile = 0;
    // One byte a second, for up to 10 s: the head never completes.
    for byte in head.bytes().chain(std::iter::repeat(b'z')).take(10) {
        if slow.write_all(&[byte]).and_then(|()| slow.flush()).is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        // A normal client on its own connection, while the slow one holds its own.
        if rig.get_edge_config(None) == 200 {
            served_meanwhile += 1;
        }
        let second = Instant::now() + Duration::from_secs(1);
        let mut buf = Vec::new();
        while Instant::now() < second {
            match fill(&mut slow, &mut buf) {
                Ok(true) => {}
                Ok(false) => {
                    cut_after = Some(started.elapsed());
                    break;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    cut_after = Some(started.elapsed());
                    break;
                }
            }
        }
        assert!(
            !String::from_utf8_lossy(&buf).contains(" 200 "),
            "the slow head was answered 200"
        );
        if cut_after.is_some() {
            break;
        }
    }
    let cut_after = cut_after.expect("a head dribbled at 1 byte/s was never cut (10 s)");
    assert!(
        cut_after >= HANDSHAKE_TIMEOUT - Duration::from_millis(200)
            && cut_after < HANDSHAKE_TIMEOUT + Duration::from_secs(5),
        "cut after {cut_after:?}; the header-read timeout is {HANDSHAKE_TIMEOUT:?}"
    );
    assert!(
        served_meanwhile >= 1,
        "no normal client was served meanwhile"
    );
    assert_eq!(rig.get_edge_config(None), 200, "served after the cut");
}

#[test]
fn a_source_over_its_connection_limit_is_refused_while_another_is_served() {
    let rig = Rig::start();
    let other: IpAddr = Ipv4Addr::new(127, 0, 0, 2).into();
    // PER_SOURCE connections from 127.0.0.1 with their handshakes done, each with a request
    // under way (an unfinished head), so the edge holds them all ...
    let mut held: Vec<Tls> = (0..PER_SOURCE).map(|_| rig.connect()).collect();
    for tls in &mut held {
        tls.write_all(b"GET / HTTP/1.1\r\n").expect("partial head");
        tls.flush().expect("flush");
    }
    let started = Instant::now();
    // ... so one more from 127.0.0.1 is closed before its handshake completes,
    let refused = rig.connect_from(None);
    assert!(
        refused.is_err(),
        "a connection over the per-source limit completed its TLS handshake"
    );
    // while 127.0.0.2 is served through edge and core.
    assert_eq!(rig.get_edge_config(Some(other)), 200);
    assert!(
        started.elapsed() < HANDSHAKE_TIMEOUT,
        "too slow to prove anything: the held connections may have been cut ({:?})",
        started.elapsed()
    );
    // Slots come back when the held connections end.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.get_edge_config(None) != 200 {
        assert!(Instant::now() < deadline, "slots were not given back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn malformed_request_lines_get_400_and_the_connection_is_closed() {
    let rig = Rig::start();
    let path = edge_config_path();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not HTTP at all", b"NOT HTTP AT ALL\r\n\r\n".to_vec()),
        ("no target or version", b"GET\r\n\r\n".to_vec()),
        ("no version", format!("GET {path}\r\n\r\n").into_bytes()),
        (
            "a token that is no method",
            format!("G(T {path} HTTP/1.1\r\nHost: e\r\n\r\n").into_bytes(),
        ),
        (
            "a space in the target",
            b"GET /a b HTTP/1.1\r\nHost: e\r\n\r\n".to_vec(),
        ),
        (
            "a NUL in the target",
            b"GET /a\0b HTTP/1.1\r\nHost: e\r\n\r\n".to_vec(),
        ),
        (
            "a bare CR inside a header",
            format!("GET {path} HTTP/1.1\r\nHost: e\rX: y\r\n\r\n").into_bytes(),
        ),
        (
            "a header without a colon",
            format!("GET {path} HTTP/1.1\r\nHost e\r\n\r\n").into_bytes(),
        ),
        (
            "a space before the colon",
            format!("GET {path} HTTP/1.1\r\nHost : e\r\n\r\n").into_bytes(),
        ),
        (
            "two Content-Lengths that differ",
            format!(
                "GET {path} HTTP/1.1\r\nHost: e\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx"
            )
            .into_bytes(),
        ),
        (
            "a Content-Length that is no number",
            format!("GET {path} HTTP/1.1\r\nHost: e\r\nContent-Length: x\r\n\r\n").into_bytes(),
        ),
        ("binary garbage", (0u8..=255).cycle().take(600).collect()),
    ];
    let mut wrong = Vec::new();
    for (what, request) in &cases {
        let (answer, mut tls) = exchange(&rig, request);
        match answer {
            Some(a) if a.status == 400 => {
                if !closed(&mut tls) {
                    wrong.push(format!("{what}: 400 but the connection stayed open"));
                }
            }
            other => wrong.push(format!("{what}: {:?}", other.map(|a| a.status))),
        }
    }
    assert!(wrong.is_empty(), "not a 400 + close:\n{}", wrong.join("\n"));
    // Bare LF line ends are tolerated, as RFC 9112 section 2.2 lets a recipient do.
    let (answer, _) = exchange(&rig, format!("GET {path} HTTP/1.1\nHost: e\n\n").as_bytes());
    assert_eq!(answer.map(|a| a.status), Some(200));
    // HTTP/2's preface on the HTTP/1.1 listener (no ALPN h2): refused, never served.
    let (answer, _) = exchange(&rig, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    if let Some(a) = answer {
        assert!((400..=505).contains(&a.status), "{a:?}");
    }
    assert_eq!(rig.get_edge_config(None), 200, "the edge still serves");
}

#[test]
fn http_1_0_and_pipelined_requests_are_answered_in_order() {
    let rig = Rig::start();
    let path = edge_config_path();
    // HTTP/1.0 without a Host and without keep-alive: answered, then closed.
    let (answer, mut tls) = exchange(&rig, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
    let answer = answer.expect("an HTTP/1.0 answer");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        String::from_utf8_lossy(&answer.body).contains("<getEdgeConfigResponse"),
        "{answer:?}"
    );
    assert!(closed(&mut tls), "HTTP/1.0 without keep-alive stayed open");
    // HTTP/1.0 asking for keep-alive: two requests on one connection.
    let mut tls = rig.connect();
    let mut buf = Vec::new();
    for _ in 0..2 {
        tls.write_all(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes())
            .expect("write");
        let a = next_response(&mut tls, &mut buf).expect("keep-alive answer");
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.version.starts_with("HTTP/1."), "{a:?}");
    }
    // Three pipelined requests in one write: 200, 404 (unknown domain), 200 with
    // Connection: close, in that order, then the edge closes.
    let unknown = format!(
        "/{}/get_edge_config/",
        base64::engine::general_purpose::STANDARD.encode("other.example.org")
    );
    let pipelined = format!(
        "GET {path} HTTP/1.1\r\nHost: e\r\n\r\nGET {unknown} HTTP/1.1\r\nHost: e\r\n\r\nGET {path} HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n"
    );
    let mut tls = rig.connect();
    tls.write_all(pipelined.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let statuses: Vec<u16> = (0..3)
        .map(|_| next_response(&mut tls, &mut buf).map_or(0, |a| a.status))
        .collect();
    assert_eq!(statuses, [200, 404, 200]);
    assert!(buf.is_empty(), "bytes after the last answer: {buf:?}");
    assert!(closed(&mut tls), "Connection: close was not honoured");
}

#[test]
fn a_client_that_never_finishes_its_handshake_is_cut_by_the_handshake_timeout() {
    let rig = Rig::start();
    // One that sends nothing, one that stops inside its ClientHello.
    let silent = TcpStream::connect(rig.https).expect("connect");
    let mut partial = TcpStream::connect(rig.https).expect("connect");
    partial
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .expect("partial ClientHello");
    let started = Instant::now();
    // Others are served meanwhile.
    assert_eq!(rig.get_edge_config(None), 200);
    for (what, mut tcp) in [("silent", silent), ("partial ClientHello", partial)] {
        tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT + Duration::from_secs(10)))
            .expect("timeout");
        let mut rest = Vec::new();
        let outcome = tcp.read_to_end(&mut rest);
        let after = started.elapsed();
        assert!(
            outcome.is_ok()
                || outcome
                    .as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
            "{what}: not closed: {outcome:?}"
        );
        assert!(
            after >= HANDSHAKE_TIMEOUT - Duration::from_millis(300)
                && after < HANDSHAKE_TIMEOUT + Duration::from_secs(5),
            "{what}: cut after {after:?}; the handshake timeout is {HANDSHAKE_TIMEOUT:?}"
        );
        // Whatever came back is at most a TLS alert, never an HTTP answer.
        assert!(!rest.starts_with(b"HTTP/"), "{what}: {rest:?}");
    }
}

#[test]
fn a_body_announced_over_the_limit_gets_413_and_one_within_it_goes_through() {
    let rig = Rig::start();
    let path = edge_config_path();
    // 64 MiB announced: refused from the head, before a byte of body is read.
    let (answer, mut tls) = exchange(
        &rig,
        format!("POST {path} HTTP/1.1\r\nHost: e\r\nContent-Length: 67108864\r\n\r\n").as_bytes(),
    );
    assert_eq!(answer.map(|a| a.status), Some(413));
    assert!(closed(&mut tls), "the connection stayed open after 413");
    // One byte over the limit, body sent.
    let over = format!(
        "POST {path} HTTP/1.1\r\nHost: e\r\nContent-Length: {}\r\n\r\n{}",
        MAX_BODY_BYTES + 1,
        "b".repeat(MAX_BODY_BYTES + 1)
    );
    assert_eq!(
        exchange(&rig, over.as_bytes()).0.map(|a| a.status),
        Some(413)
    );
    // Within the limit the request reaches the core, which refuses the method (405).
    let within = format!(
        "POST {path} HTTP/1.1\r\nHost: e\r\nContent-Length: {MAX_BODY_BYTES}\r\n\r\n{}",
        "b".repeat(MAX_BODY_BYTES)
    );
    assert_eq!(
        exchange(&rig, within.as_bytes()).0.map(|a| a.status),
        Some(405)
    );
}

/// A client that sends its whole refused body before reading still reads the 413: the edge
/// answers from the head, then reads and discards the rest before it closes. (Closing with
/// the body unread makes the kernel send a reset, which destroys the answer in the
/// client's receive buffer.)
#[test]
fn a_client_still_sending_a_refused_body_reads_its_413() {
    let rig = Rig::start();
    let path = edge_config_path();
    let body = 4 << 20;
    for (what, head) in [
        (
            "announced",
            format!("POST {path} HTTP/1.1\r\nHost: e\r\nContent-Length: {body}\r\n\r\n"),
        ),
        (
            "chunked",
            format!(
                "POST {path} HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                body
            ),
        ),
    ] {
        let mut tls = rig.connect();
        tls.write_all(head.as_bytes()).expect("head");
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..body / chunk.len() {
            tls.write_all(&chunk)
                .unwrap_or_else(|e| panic!("{what}: the edge reset the upload: {e}"));
        }
        tls.flush().expect("flush");
        let answer = read_response(&mut tls).unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(answer.status, 413, "{what}: {answer:?}");
        assert!(
            closed(&mut tls),
            "{what}: the connection stayed open after 413"
        );
    }
    // The edge is still serving.
    assert_eq!(rig.get_edge_config(None), 200);
}

#[test]
fn a_chunked_body_over_the_limit_gets_413() {
    let rig = Rig::start();
    let chunk = format!("4000\r\n{}\r\n", "c".repeat(0x4000));
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        edge_config_path(),
        chunk.repeat(2 * MAX_BODY_BYTES / 0x4000)
    );
    let (answer, _) = exchange(&rig, request.as_bytes());
    assert_eq!(answer.map(|a| a.status), Some(413));
}
