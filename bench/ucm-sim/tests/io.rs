//! The ucm-sim binary over real sockets, driven by a hand-written SIP client: digest
//! registration over TCP, the admin API's `send` arriving on the registering connection,
//! keep-alives, and bad or oversized input answered, counted and confined to its connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use edgeway_sip::{Auth, HeaderName, Message, Response};
use edgeway_testkit::peers::{UcmSim, UcmSimOptions};
use edgeway_ucm_sim::digest::client_authorization;

mod common;

use common::ALICE;

fn ucm() -> UcmSim {
    UcmSim::spawn(
        env!("CARGO_BIN_EXE_ucm-sim").as_ref(),
        &UcmSimOptions::tcp_with_users(ALICE),
    )
}

/// A SIP client on one TCP connection, reading whole messages.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn local(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next message, or `None` when the server closed the connection.
    fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let cl: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let total = end + 4 + cl;
                if self.buf.len() >= total {
                    let msg = Message::parse(&self.buf[..total]).expect("server sends valid SIP");
                    self.buf.drain(..total);
                    return Some(msg);
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn response(&mut self) -> Response {
        match self.recv() {
            Some(Message::Response(r)) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    fn register(&mut self, user: &str, cseq: u32, expires: u32, auth: Option<&str>) -> Response {
        let local = self.local();
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let msg = format!(
            "REGISTER sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/TCP {local};branch=z9hG4bK-io-{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@example.com>;tag=io1\r\n\
             To: <sip:{user}@example.com>\r\n\
             Call-ID: io-test-call\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{local};transport=tcp>\r\n\
             Path: <sip:core.example.com;lr>\r\n\
             Expires: {expires}\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        );
        self.send(msg.as_bytes());
        self.response()
    }

    /// An unauthenticated REGISTER, which must be challenged: the challenge.
    fn challenge(&mut self, user: &str, cseq: u32, expires: u32) -> Auth {
        let challenge = self.register(user, cseq, expires, None);
        assert_eq!(challenge.status, 401, "{challenge:?}");
        let www = challenge
            .headers
            .first(&HeaderName::WwwAuthenticate)
            .expect("WWW-Authenticate");
        assert!(www.contains("qop=\"auth\""), "{www}");
        Auth::parse("WWW-Authenticate", www).expect("challenge parses")
    }

    /// REGISTER, answer the challenge, return the final response.
    fn register_with_password(&mut self, user: &str, password: &str, cseq: u32) -> Response {
        let ch = self.challenge(user, cseq, 300);
        let auth = digest(&ch, user, password, 1);
        self.register(user, cseq + 1, 300, Some(&auth))
    }
}

/// The Authorization value answering `ch` with nonce-count `nc`.
fn digest(ch: &Auth, user: &str, password: &str, nc: u32) -> String {
    client_authorization(ch, user, password, "REGISTER", "sip:example.com", nc, "io")
        .expect("realm and nonce")
}

#[test]
fn register_then_send_options_down_the_same_connection() {
    let ucm = ucm();
    let mut c = Client::connect(ucm.sip_tcp.expect("tcp"));
    let ok = c.register_with_password("1001", "alice-pw", 1);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        ok.headers.first(&HeaderName::Path),
        Some("<sip:core.example.com;lr>")
    );
    let contact = ok.headers.first(&HeaderName::Contact).expect("Contact");
    assert!(contact.ends_with(";expires=300"), "{contact}");

    let bindings = ucm.bindings();
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    assert_eq!(bindings[0]["user"], "alice");
    assert_eq!(bindings[0]["transport"], "tcp");
    assert_eq!(bindings[0]["peer"], c.local().to_string());
    assert_eq!(bindings[0]["path"][0], "<sip:core.example.com;lr>");

    // The admin send blocks until we answer, so it runs on a thread.
    let admin = ucm.admin;
    let sender = std::thread::spawn(move || {
        let mut s = TcpStream::connect(admin).expect("admin");
        s.write_all(b"{\"cmd\":\"send\",\"method\":\"OPTIONS\",\"to\":\"alice\"}\n")
            .expect("write");
        let mut reply = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut reply)
            .expect("admin reply");
        reply
    });
    let Some(Message::Request(req)) = c.recv() else {
        panic!("OPTIONS expected on the registering connection");
    };
    assert_eq!(req.method.as_str(), "OPTIONS");
    assert_eq!(
        req.uri.to_string(),
        format!("sip:1001@{};transport=tcp", c.local())
    );
    assert_eq!(
        req.headers.first(&HeaderName::Route),
        Some("<sip:core.example.com;lr>")
    );
    c.send(&req.make_response(200, "OK", Some("t1")).to_bytes());
    let reply: serde_json::Value =
        serde_json::from_str(&sender.join().expect("admin thread")).expect("JSON reply");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["status"], 200, "{reply}");

    // An RFC 5626 ping gets a pong on the same connection.
    c.send(b"\r\n\r\n");
    let mut pong = [0u8; 2];
    c.stream.read_exact(&mut pong).expect("pong");
    assert_eq!(&pong, b"\r\n");
    assert_eq!(ucm.counter("keepalives"), 1);
    assert_eq!(ucm.counter("sent"), 1);
}

#[test]
fn bad_and_oversized_messages_close_only_their_connection() {
    let ucm = ucm();
    let addr = ucm.sip_tcp.expect("tcp");
    let mut good = Client::connect(addr);
    assert_eq!(
        good.register_with_password("alice", "alice-pw", 1).status,
        200
    );

    let mut bad = Client::connect(addr);
    bad.send(
        b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKbad\r\n\
          Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n\
          Call-ID: bad\r\nCSeq: many REGISTER\r\nContent-Length: 0\r\n\r\n",
    );
    let r = bad.response();
    assert_eq!(r.status, 400);
    let warning = r.headers.first(&HeaderName::Warning).expect("Warning");
    assert!(warning.contains("CSeq"), "{warning}");
    assert!(
        bad.recv().is_none(),
        "connection closed after a framing error"
    );

    let mut big = Client::connect(addr);
    let huge = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKbig\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n\
         Call-ID: big\r\nCSeq: 1 REGISTER\r\nContent-Length: {}\r\n\r\n",
        1 << 20
    );
    big.send(huge.as_bytes());
    let r = big.response();
    assert_eq!(r.status, 513);
    assert!(
        big.recv().is_none(),
        "connection closed after an oversized message"
    );

    // The registered client is untouched: its refresh still works on its connection.
    assert_eq!(
        good.register_with_password("alice", "alice-pw", 3).status,
        200
    );
    let counters = ucm.counters();
    assert_eq!(counters["framing_errors"], 1, "{counters}");
    assert_eq!(counters["oversized"], 1, "{counters}");
    assert_eq!(ucm.bindings().len(), 1);
}

#[test]
fn unknown_user_wrong_password_and_unknown_domain() {
    let ucm = ucm();
    let mut c = Client::connect(ucm.sip_tcp.expect("tcp"));
    assert_eq!(c.register("mallory", 1, 300, None).status, 404);
    assert_eq!(c.register_with_password("alice", "guess", 2).status, 403);
    c.send(
        b"REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKdom\r\n\
          Max-Forwards: 70\r\nFrom: <sip:alice@example.org>;tag=1\r\nTo: <sip:alice@example.org>\r\n\
          Call-ID: dom\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@127.0.0.1:9>\r\nContent-Length: 0\r\n\r\n",
    );
    let r = c.response();
    assert_eq!((r.status, r.reason.as_str()), (403, "Domain Not Served"));
    let counters = ucm.counters();
    assert_eq!(counters["unknown_users"], 1, "{counters}");
    assert_eq!(counters["auth_failures"], 1, "{counters}");
    assert_eq!(counters["unknown_domains"], 1, "{counters}");
    assert!(ucm
        .send("OPTIONS", "alice")
        .is_err_and(|e| e.contains("no registered")));
}

#[test]
fn bindings_expire_over_time() {
    let ucm = UcmSim::spawn(
        env!("CARGO_BIN_EXE_ucm-sim").as_ref(),
        &UcmSimOptions {
            extra_args: vec!["--min-expires".into(), "1".into()],
            ..UcmSimOptions::tcp_with_users(ALICE)
        },
    );
    let mut c = Client::connect(ucm.sip_tcp.expect("tcp"));
    let ch = c.challenge("alice", 1, 2);
    let auth = digest(&ch, "alice", "alice-pw", 1);
    let ok = c.register("alice", 2, 2, Some(&auth));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ucm.bindings().len(), 1);
    std::thread::sleep(Duration::from_millis(3500));
    assert!(ucm.bindings().is_empty(), "the 2 s binding expired");
    assert_eq!(ucm.counter("bindings_expired"), 1);
    assert_eq!(
        ucm.send("OPTIONS", "alice"),
        Err("user \"alice\" has no registered contact".to_owned())
    );
}

#[test]
fn slow_and_garbage_tls_clients_are_dropped_and_counted() {
    let dir = edgeway_testkit::peers::ScratchDir::new("ucm-io-tls");
    let (_pki, cert) = common::server_cert(&dir, "ucm");
    let ucm = UcmSim::spawn(
        env!("CARGO_BIN_EXE_ucm-sim").as_ref(),
        &UcmSimOptions {
            extra_args: vec!["--tls-handshake-timeout".into(), "1".into()],
            ..UcmSimOptions::tcp_with_users(ALICE)
        }
        .with_tls(&cert.cert_pem, &cert.key_pem),
    );
    let tls = ucm.sip_tls.expect("tls");
    // Plain SIP on the TLS port is not a ClientHello.
    let mut garbage = TcpStream::connect(tls).expect("connect");
    garbage
        .write_all(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
        .expect("write");
    // A client that never speaks holds nothing after the handshake timeout.
    let mut silent = TcpStream::connect(tls).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert!(matches!(silent.read(&mut byte), Ok(0)), "closed by ucm-sim");
    let c = ucm.counters();
    assert_eq!(c["tls_handshake_failures"], 2, "{c}");
    assert_eq!(c["connections_open"], 0, "{c}");
    // Meanwhile plain TCP works as before.
    let mut ok = Client::connect(ucm.sip_tcp.expect("tcp"));
    assert_eq!(
        ok.register_with_password("alice", "alice-pw", 1).status,
        200
    );
}

#[test]
fn admin_api_refuses_bad_commands_with_reasons() {
    let ucm = ucm();
    for (cmd, why) in [
        (serde_json::json!({"cmd": "reboot"}), "unknown cmd"),
        (
            serde_json::json!({"cmd": "send", "method": "INVITE", "to": "alice"}),
            "only OPTIONS and MESSAGE",
        ),
        (
            serde_json::json!({"cmd": "send", "method": "OPTIONS", "to": "nobody"}),
            "no user",
        ),
    ] {
        let r = ucm.admin(&cmd);
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["error"].as_str().is_some_and(|e| e.contains(why)), "{r}");
    }
    let mut s = TcpStream::connect(ucm.admin).expect("admin");
    s.write_all(&vec![b'x'; 70 * 1024]).expect("write");
    let mut reply = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&s), &mut reply).expect("reply");
    assert!(reply.contains("longer than"), "{reply}");
    assert_eq!(ucm.counter("requests"), 0, "nothing reached the registrar");
}

#[test]
fn reused_nonce_is_replayed_or_stale_over_the_wire() {
    let ucm = UcmSim::spawn(
        env!("CARGO_BIN_EXE_ucm-sim").as_ref(),
        &UcmSimOptions {
            extra_args: vec!["--nonce-lifetime".into(), "1".into()],
            ..UcmSimOptions::tcp_with_users(ALICE)
        },
    );
    let mut c = Client::connect(ucm.sip_tcp.expect("tcp"));
    let ch = c.challenge("alice", 1, 300);
    let creds = |nc| digest(&ch, "alice", "alice-pw", nc);
    assert_eq!(c.register("alice", 2, 300, Some(&creds(1))).status, 200);
    // A refresh may reuse the nonce with a higher nonce-count, not the same one.
    assert_eq!(c.register("alice", 3, 300, Some(&creds(2))).status, 200);
    let replay = c.register("alice", 4, 300, Some(&creds(2)));
    assert_eq!(replay.status, 401);
    std::thread::sleep(Duration::from_millis(1200));
    let stale = c.register("alice", 5, 300, Some(&creds(3)));
    assert_eq!(stale.status, 401);
    let www = stale
        .headers
        .first(&HeaderName::WwwAuthenticate)
        .expect("challenge");
    assert!(www.contains("stale=true"), "{www}");
    let counters = ucm.counters();
    assert_eq!(counters["replays"], 1, "{counters}");
    assert_eq!(counters["stale_nonces"], 1, "{counters}");
    assert_eq!(counters["bindings_refreshed"], 1, "{counters}");
}
