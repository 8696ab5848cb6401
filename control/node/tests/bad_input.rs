//! Bad input at the edge: malformed SIP, oversized messages, header floods, slow TLS
//! clients, idle connections, too many connections from one source, wrong credentials.
//! Each gets the right response or a closed connection, each is counted, and a good client
//! keeps registering and receiving throughout.

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use common::{eventually, tcp_from, tls_client_config, Cluster, ClusterOptions, SipClient};

fn cluster() -> Cluster {
    Cluster::up(ClusterOptions {
        edge_extra: "max_connections_per_source = 3\nidle_timeout_ms = 1500".into(),
        ..ClusterOptions::default()
    })
}

fn bad_source() -> Option<IpAddr> {
    Some("127.0.0.2".parse().expect("ip"))
}

/// The good client still registers (a full challenge round) and still gets requests.
fn good_client_unaffected(alice: &mut SipClient) {
    assert_eq!(
        alice.register("alice", 120).1.status,
        200,
        "good client registers"
    );
    // Keep the good client's connection alive across the idle timeout.
    alice.send_raw(b"\r\n\r\n").expect("ping");
}

/// Waits for `cond` while the good client keeps its flow alive with RFC 5626 pings (the
/// edge's idle timeout is 1.5 s here, shorter than some waits).
fn while_pinging(alice: &mut SipClient, timeout: Duration, cond: impl Fn() -> bool) -> bool {
    eventually(timeout, || {
        alice.send_raw(b"\r\n\r\n").expect("ping");
        cond()
    })
}

/// The first line and the whole text of the next message the edge sends.
fn raw_status_line(client: &mut SipClient) -> (String, String) {
    let mut seen = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && std::time::Instant::now() < end {
        let (more, closed) = client.read_until_closed(Duration::from_millis(100));
        seen.extend_from_slice(&more);
        assert!(!closed, "connection kept after a message that framed");
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    (text.lines().next().unwrap_or_default().to_owned(), text)
}

/// The Via branch of a request as sent.
fn sent_branch(request: &str) -> &str {
    let at = request.find("branch=").expect("branch") + "branch=".len();
    request[at..]
        .split(['\r', ';'])
        .next()
        .expect("branch value")
}

fn expect_refusal_then_close(client: &mut SipClient, status_line: &str) -> String {
    let (seen, closed) = client.read_until_closed(Duration::from_secs(5));
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        text.starts_with(status_line),
        "expected {status_line:?}, got {text:?}"
    );
    assert!(closed, "connection closed after the refusal");
    text
}

#[test]
fn misbehaving_clients_are_refused_counted_and_do_not_affect_a_good_one() {
    let c = cluster();
    let config = tls_client_config(&c.pki.ca_path());
    let edge = c.edge.addr("sip");
    let mut alice = c.client();
    good_client_unaffected(&mut alice);

    // Malformed SIP that still frames: 400 naming the error, and the connection stays.
    let mut bad = c.client();
    bad.send_raw(b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.2:5061;branch=z9hG4bKx\r\nCSeq: one REGISTER\r\nContent-Length: 0\r\n\r\n")
        .expect("send");
    let (status, text) = raw_status_line(&mut bad);
    assert!(
        status.starts_with("SIP/2.0 400 Bad Request (CSeq"),
        "the reason names the header: {text}"
    );
    assert!(
        text.contains("branch=z9hG4bKx"),
        "the Via is salvaged: {text}"
    );
    assert_eq!(c.edge.counter("malformed"), 1);
    assert_eq!(c.edge.counter("malformed_survived"), 1);
    good_client_unaffected(&mut alice);

    // A bad REGISTER then a good one on the same connection: the client matches the 400
    // to its transaction and then registers.
    let mut carol = c.client();
    let good = carol.register_request("carol", "example.com", 60, None);
    let bad_register = String::from_utf8(good.clone())
        .expect("utf8")
        .replace("Max-Forwards: 70", "Max-Forwards: seventy");
    carol.send_raw(bad_register.as_bytes()).expect("send");
    let refused = carol.recv_response(Duration::from_secs(5));
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.reason.contains("Max-Forwards"), "{refused:?}");
    let sent = edgeway_sip::Message::parse(bad_register.as_bytes());
    assert!(sent.is_err(), "the REGISTER sent really is malformed");
    let via = refused.headers.top_via().expect("Via");
    assert_eq!(via.branch(), Some(sent_branch(&bad_register)));
    let cseq = refused.headers.cseq().expect("CSeq");
    assert_eq!((cseq.seq, cseq.method), (1, edgeway_sip::Method::Register));
    assert!(refused.headers.to_addr().is_ok_and(|to| to.tag().is_some()));
    assert!(refused
        .headers
        .first(&edgeway_sip::HeaderName::Warning)
        .is_some_and(|w| w.starts_with("399 edgeway \"Max-Forwards")));
    assert_eq!(
        carol.register("carol", 60).1.status,
        200,
        "the same connection registers"
    );
    assert_eq!(c.edge.counter("malformed_survived"), 2);
    drop(bad);
    drop(carol);

    // Oversized: a declared body beyond 64 KiB is refused before it is buffered.
    let mut big = SipClient::connect_from(edge, config.clone(), bad_source());
    let mut msg = alice.register_request("mallory", "example.com", 60, None);
    let at = msg
        .windows(17)
        .position(|w| w == b"Content-Length: 0")
        .expect("cl");
    msg.splice(at..at + 17, b"Content-Length: 70000".iter().copied());
    big.send_raw(&msg).expect("send");
    expect_refusal_then_close(&mut big, "SIP/2.0 513 ");
    assert_eq!(c.edge.counter("oversized"), 1);
    good_client_unaffected(&mut alice);

    // Header flood: 300 header lines (the limit is 256); the message framed, so the
    // connection stays and still answers pings.
    let mut flood = c.client();
    let mut msg = String::from("OPTIONS sip:example.com SIP/2.0\r\n");
    for i in 0..300 {
        msg.push_str(&format!("X-Flood-{i}: {i}\r\n"));
    }
    msg.push_str("Content-Length: 0\r\n\r\n");
    flood.send_raw(msg.as_bytes()).expect("send");
    let (status, _) = raw_status_line(&mut flood);
    assert!(status.starts_with("SIP/2.0 400 "), "{status}");
    assert_eq!(c.edge.counter("header_flood"), 1);
    flood.send_raw(b"\r\n\r\n").expect("ping");
    let (pong, closed) = flood.read_until_closed(Duration::from_millis(500));
    assert_eq!(
        (pong.as_slice(), closed),
        (&b"\r\n"[..], false),
        "pong, still open"
    );
    drop(flood);
    good_client_unaffected(&mut alice);

    // Wrong password: ucm-sim's refusal is relayed; nothing is registered for bob.
    let mut bob = SipClient::connect_from(edge, config.clone(), bad_source());
    let first = bob.register_once("bob", "example.com", 60);
    assert_eq!(
        first.status, 401,
        "unauthenticated REGISTER is challenged by Unified CM"
    );
    let challenge = first
        .headers
        .first(&edgeway_sip::HeaderName::WwwAuthenticate)
        .expect("challenge")
        .to_owned();
    let auth = common::digest_authorization(&challenge, "bob", "wrong", "sip:example.com");
    let req = bob.register_request("bob", "example.com", 60, Some(&auth));
    bob.send_raw(&req).expect("send");
    let refused = bob.recv_response(Duration::from_secs(5));
    assert_eq!(refused.status, 403, "{refused:?}");
    let aors: Vec<String> = c
        .core()
        .registrations()
        .iter()
        .map(|r| r["aor"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        !aors.iter().any(|a| a.contains("bob")),
        "bob is not registered: {aors:?}"
    );
    assert_eq!(aors.len(), 2, "alice and carol: {aors:?}");
    drop(bob);

    // Slow TLS client: connects and never finishes the handshake (1 s limit).
    let mut slow = tcp_from(edge, bad_source()).expect("tcp");
    slow.write_all(&[0x16, 0x03, 0x01])
        .expect("a few bytes of a ClientHello");
    assert!(while_pinging(&mut alice, Duration::from_secs(4), || c
        .edge
        .counter("client_tls_timeout")
        == 1));
    good_client_unaffected(&mut alice);

    // Too many connections from one source: the fourth and fifth are refused.
    let held: Vec<_> = (0..3)
        .map(|_| SipClient::connect_from(edge, config.clone(), bad_source()))
        .collect();
    for _ in 0..2 {
        let tcp = tcp_from(edge, bad_source()).expect("tcp");
        let _ = tcp;
    }
    assert!(while_pinging(&mut alice, Duration::from_secs(3), || c
        .edge
        .counter("refused_per_source_limit")
        == 2));
    good_client_unaffected(&mut alice);

    // Idle connections are closed; the pinging good client is not.
    assert!(
        while_pinging(&mut alice, Duration::from_secs(4), || c
            .edge
            .counter("client_idle_closed")
            >= 3),
        "{}",
        c.edge.status()
    );
    drop(held);
    assert!(c.edge.counter("keepalive_pings") >= 1);
    alice.send_raw(b"\r\n\r\n").expect("ping");
    good_client_unaffected(&mut alice);
    // A request from inside still reaches alice's connection after all of it.
    let ucm = &c.ucm;
    std::thread::scope(|s| {
        let sent = s.spawn(|| ucm.admin(&serde_json::json!({"cmd":"send","method":"MESSAGE","to":"alice","body":"still here","timeout_ms":5000})));
        let req = alice
            .recv_request(Duration::from_secs(5))
            .expect("MESSAGE reaches alice");
        assert_eq!(req.body, b"still here");
        alice.respond(&req, 200);
        assert_eq!(sent.join().expect("join")["status"], 200);
    });
}

#[test]
fn tls_1_2_and_1_3_clients_are_both_served() {
    let c = cluster();
    let mut v13 = c.client();
    assert_eq!(v13.protocol(), Some(rustls::ProtocolVersion::TLSv1_3));
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(c.pki.ca_path()).expect("ca"))
        .expect("root");
    let tls12 = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("tls12")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let mut v12 = SipClient::connect_with(c.edge.addr("sip"), tls12);
    assert_eq!(v12.protocol(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(v12.register("alice", 60).1.status, 200);
    assert_eq!(v13.register("bob", 60).1.status, 200);
}
