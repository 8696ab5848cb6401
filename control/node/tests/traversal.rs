//! The traversal zone: the core dials the edge with mutual TLS; the edge checks the chain,
//! the Client Authentication EKU and the "TLS verify subject name"; keep-alives; reconnect
//! after the core restarts. Also: configuration errors name the field.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{
    core_config, edge_config, eventually, Cluster, ClusterOptions, Node, Scratch, SipClient,
};
use edgeway_testkit::pki::{Eku, TestPki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A core configuration in `dir` (its certificate issued by the caller) and `--check` on it:
/// whether it passed, and what it wrote to stderr.
fn check_core_config(dir: &std::path::Path, edit: impl Fn(String) -> String) -> (bool, String) {
    let cfg = core_config(
        dir,
        "127.0.0.1:7001".parse().expect("addr"),
        "127.0.0.1:5060".parse().expect("addr"),
        "tcp",
        &ClusterOptions::default(),
    );
    let text = edit(std::fs::read_to_string(&cfg).expect("read"));
    std::fs::write(&cfg, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_edgeway-control"))
        .args(["--check", "--config"])
        .arg(&cfg)
        .output()
        .expect("run --check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn traversal_comes_up_with_mutual_tls_and_reports_zones() {
    let c = Cluster::up(ClusterOptions::default());
    let status = c.core().status();
    assert_eq!(status["traversal"], "up");
    assert_eq!(status["zones"][0]["name"], "CEtcp-cucm1");
    assert_eq!(status["search_rules"][0]["priority"], 45);
    assert_eq!(
        status["zones"].as_array().map(Vec::len),
        Some(1),
        "no TLS zone for a TCP node"
    );
    // Keep-alives cross the zone and are answered.
    assert!(eventually(Duration::from_secs(3), || c
        .edge
        .counter("traversal_pings")
        >= 2));
    assert_eq!(c.edge.counter("traversal_lost"), 0);
}

/// The zone names a core's `status` reports, in order.
fn zone_names(status: &serde_json::Value) -> Vec<&str> {
    status["zones"]
        .as_array()
        .expect("zones")
        .iter()
        .filter_map(|z| z["name"].as_str())
        .collect()
}

#[test]
fn a_tls_node_gets_a_cetls_zone_and_registrations_cross_it() {
    let c = Cluster::up(ClusterOptions {
        ucm_tls: true,
        ..ClusterOptions::default()
    });
    let status = c.core().status();
    let names = zone_names(&status);
    assert_eq!(names, ["CEtcp-cucm1", "CEtls-cucm1"]);
    let rules = status["search_rules"].as_array().expect("rules");
    assert!(rules.iter().all(|r| r["priority"] == 45));
    let mut alice = c.client();
    assert_eq!(alice.register("alice", 120).1.status, 200);
    assert_eq!(
        c.ucm.bindings()[0]["transport"],
        "tls",
        "core to ucm-sim over TLS"
    );
}

#[test]
fn a_wrong_subject_name_is_refused_and_says_why() {
    let c = Cluster::start(ClusterOptions {
        verify_subject_name: "other-core.example.com".into(),
        ..ClusterOptions::default()
    });
    assert!(
        eventually(Duration::from_secs(5), || c
            .edge
            .counter("traversal_refused_subject")
            >= 2),
        "refused repeatedly as the core retries with backoff\n{}",
        c.edge.log.text()
    );
    assert_eq!(c.edge.status()["traversal"], "down");
    assert!(c.edge.log.text().contains("TLS verify subject name \"other-core.example.com\" is not the certificate's CN or a SAN"),
        "{}", c.edge.log.text());
    // A client is told the zone is down rather than left hanging.
    let mut client = c.client();
    let r = client.register_once("alice", "example.com", 60);
    assert_eq!(r.status, 503);
    assert_eq!(c.edge.counter("traversal_down_refused"), 1);
}

#[test]
fn a_core_certificate_without_client_auth_is_refused_at_load_and_by_the_edge() {
    let dir = Scratch::new("eku");
    let pki = TestPki::new(dir.path()).expect("pki");
    pki.issue("edge.example.com", &["edge.example.com"], Eku::Both)
        .expect("edge");
    let core = pki
        .issue("core.example.com", &["core.example.com"], Eku::ServerAuth)
        .expect("core");
    // At load, on the core: --check says exactly what is wrong.
    let (ok, err) = check_core_config(dir.path(), |t| t);
    assert!(!ok);
    assert!(
        err.contains("tls.certificate")
            && err.contains("certificate lacks the Client Authentication EKU"),
        "{err}"
    );
    // At the edge: a peer presenting such a certificate is refused, and the log says why.
    let edge = Node::start(&edge_config(dir.path(), "core.example.com", ""));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca_path()).expect("ca"))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_file(&core.cert_path).expect("cert")],
        PrivateKeyDer::from_pem_file(&core.key_path).expect("key"),
    )
    .expect("client auth");
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("edge.example.com").expect("name"),
    )
    .expect("conn");
    let mut tcp = TcpStream::connect(edge.addr("traversal")).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut failed = false;
    for _ in 0..20 {
        match conn.complete_io(&mut tcp) {
            Err(_) => {
                failed = true;
                break;
            }
            Ok(_) if !conn.is_handshaking() => {
                // TLS 1.3: the client finishes first; the refusal arrives as an alert.
                let mut buf = [0u8; 64];
                use std::io::Read;
                let mut s = rustls::Stream::new(&mut conn, &mut tcp);
                failed = s.read(&mut buf).map(|n| n == 0).unwrap_or(true);
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(failed, "the edge accepted a certificate without clientAuth");
    assert!(eventually(Duration::from_secs(3), || edge
        .counter("traversal_refused_eku")
        == 1));
    // The counter is bumped before the log line is written and collected: wait for it.
    assert!(
        edge.log.wait_for(Duration::from_secs(3), |t| t
            .contains("lacks the Client Authentication EKU")),
        "{}",
        edge.log.text()
    );
    assert_eq!(edge.status()["traversal"], "down");
}

#[test]
fn the_core_reconnects_after_it_restarts_and_registrations_resume() {
    let mut c = Cluster::up(ClusterOptions::default());
    let mut alice = c.client();
    assert_eq!(alice.register("alice", 120).1.status, 200);
    let alice_contact = c.ucm.bindings()[0]["contact"]
        .as_str()
        .expect("contact")
        .to_owned();
    // The restarted core listens where the old one did, as a production core would
    // (its Contact addresses must stay valid), so only the binding number tells apart.
    let port = c.core().addr("sip").port();
    let text = std::fs::read_to_string(&c.core_config).expect("config");
    std::fs::write(
        &c.core_config,
        text.replace(
            "sip_listen = \"127.0.0.1:0\"",
            &format!("sip_listen = \"127.0.0.1:{port}\""),
        ),
    )
    .expect("config");
    if let Some(mut core) = c.core.take() {
        core.kill();
    }
    assert!(
        c.edge.wait_traversal(false, Duration::from_secs(5)),
        "edge sees the core go"
    );
    let refused = alice.register_once("alice", "example.com", 120);
    assert_eq!(refused.status, 503, "zone down: {refused:?}");
    c.core = Some(Node::start(&c.core_config));
    assert!(
        c.edge.wait_traversal(true, Duration::from_secs(10)),
        "{}",
        c.edge.log.text()
    );
    c.wait_ucm();
    // The new core never reissues a binding number ucm-sim still holds for alice: bob's
    // Contact differs, and a request to alice's stale Contact (sent the way Unified CM
    // would, on a new connection to the core) is refused, not delivered to bob.
    let mut bob = c.client();
    assert_eq!(bob.register("bob", 120).1.status, 200);
    let contact_of = |user: &str| -> String {
        c.ucm
            .bindings()
            .iter()
            .find(|b| b["user"] == user)
            .and_then(|b| b["contact"].as_str().map(str::to_owned))
            .expect("binding")
    };
    let bob_contact = contact_of("bob");
    assert_ne!(alice_contact, bob_contact);
    let mut tcp = TcpStream::connect(c.core().addr("sip")).expect("connect to the core");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let options = format!(
        "OPTIONS {alice_contact} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKstale\r\n\
Max-Forwards: 70\r\nFrom: <sip:ucm@example.com>;tag=u\r\nTo: <sip:alice@example.com>\r\n\
Call-ID: stale\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    std::io::Write::write_all(&mut tcp, options.as_bytes()).expect("send");
    let mut answer = [0u8; 512];
    let n = std::io::Read::read(&mut tcp, &mut answer).expect("read");
    assert!(
        answer[..n].starts_with(b"SIP/2.0 480 "),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    assert!(
        bob.recv_request(Duration::from_millis(300)).is_none(),
        "nothing for bob"
    );
    assert_eq!(
        alice.register("alice", 120).1.status,
        200,
        "same client connection, new core"
    );
    assert_eq!(c.edge.counter("traversal_connected"), 2);
}

#[test]
fn configuration_errors_name_the_field() {
    let dir = Scratch::new("config");
    let pki = TestPki::new(dir.path()).expect("pki");
    pki.issue("core.example.com", &["core.example.com"], Eku::Both)
        .expect("core");
    let (ok, err) = check_core_config(dir.path(), |t| {
        t.replace(
            "address = \"127.0.0.1:5060\"",
            "address = \"cucm1.example.com\"",
        )
    });
    assert!(!ok);
    assert!(
        err.contains("core.ucm[0].address: \"cucm1.example.com\""),
        "{err}"
    );
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn a_silent_peer_is_declared_dead_on_both_sides_and_the_zone_recovers() {
    let c = Cluster::up(ClusterOptions {
        edge_extra: "traversal_dead_peer_ms = 1000".into(),
        ..ClusterOptions::default()
    });
    // The core stops answering (frozen, its TCP connection still open): the edge gives up
    // on it after its dead-peer time instead of holding a zone that carries nothing.
    signal(c.core().pid(), "-STOP");
    assert!(
        c.edge.wait_traversal(false, Duration::from_secs(4)),
        "edge: dead core detected"
    );
    signal(c.core().pid(), "-CONT");
    assert!(
        c.edge.wait_traversal(true, Duration::from_secs(10)),
        "{}",
        c.core().log.text()
    );
    // The edge stops answering pings: the core declares it dead and redials with backoff.
    signal(c.edge.pid(), "-STOP");
    assert!(
        eventually(Duration::from_secs(8), || c.core().status()["traversal"]
            == "down"),
        "core: dead edge detected"
    );
    signal(c.edge.pid(), "-CONT");
    assert!(
        c.core().wait_traversal(true, Duration::from_secs(15)),
        "{}",
        c.core().log.text()
    );
    assert!(c.edge.wait_traversal(true, Duration::from_secs(5)));
    c.wait_ucm();
    let mut alice = c.client();
    assert_eq!(alice.register("alice", 60).1.status, 200);
    assert!(c.core().counter("traversal_lost") >= 2);
}

/// Local ports of every TCP socket a process holds (from /proc: its fds' socket inodes,
/// matched against /proc/net/tcp).
fn local_tcp_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").expect("tcp table");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let inode = f.get(9)?;
            if !inodes.iter().any(|i| i == inode) {
                return None;
            }
            u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

#[test]
fn the_edge_never_opens_a_connection_inwards() {
    let c = Cluster::up(ClusterOptions::default());
    let mut alice = c.client();
    assert_eq!(alice.register("alice", 60).1.status, 200);
    let listeners = [c.edge.addr("sip").port(), c.edge.addr("traversal").port()];
    let ports = local_tcp_ports(c.edge.pid());
    assert!(
        ports.len() >= 4,
        "listeners, the traversal and alice: {ports:?}"
    );
    // Every TCP socket of the edge is a listener or was accepted by one: none dialled out.
    assert!(
        ports.iter().all(|p| listeners.contains(p)),
        "{ports:?} vs {listeners:?}"
    );
}

#[test]
fn the_core_routes_to_the_first_connected_node_in_configuration_order() {
    let dir = Scratch::new("failover");
    let mut c = Cluster::up(ClusterOptions::default());
    // A second core: cucm-down (nothing listens) first, then ucm-sim.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    for f in ["core.example.com.pem", "core.example.com.key", "ca.pem"] {
        std::fs::copy(c.dir.path().join(f), dir.path().join(f)).expect("copy");
    }
    let opts = ClusterOptions::default();
    let cfg = core_config(
        dir.path(),
        c.edge.addr("traversal"),
        c.ucm.sip_tcp.expect("ucm-sim on TCP"),
        "tcp",
        &opts,
    );
    let text = std::fs::read_to_string(&cfg).expect("read").replace(
        "[[core.ucm]]\nname = \"cucm1\"",
        &format!("[[core.ucm]]\nname = \"cucm-down\"\naddress = \"{dead}\"\ntransport = \"tcp\"\n[[core.ucm]]\nname = \"cucm1\""),
    );
    std::fs::write(&cfg, text).expect("write");
    if let Some(mut first) = c.core.take() {
        first.kill();
    }
    let core = Node::start(&cfg);
    assert!(c.edge.wait_traversal(true, Duration::from_secs(10)));
    assert!(eventually(Duration::from_secs(5), || core.status()
        ["ucm_nodes"][1]["connected"]
        == true));
    let status = core.status();
    assert_eq!(status["ucm_nodes"][0]["connected"], false, "{status}");
    let names = zone_names(&status);
    assert_eq!(names, ["CEtcp-cucm-down", "CEtcp-cucm1"]);
    let mut alice = SipClient::connect(c.edge.addr("sip"), &c.pki.ca_path());
    assert_eq!(alice.register("alice", 60).1.status, 200);
    assert_eq!(core.registrations()[0]["node"], "cucm1");
}

#[test]
fn the_core_refuses_an_edge_whose_certificate_lacks_the_configured_name() {
    let mut c = Cluster::up(ClusterOptions::default());
    if let Some(mut core) = c.core.take() {
        core.kill();
    }
    assert!(c.edge.wait_traversal(false, Duration::from_secs(5)));
    let text = std::fs::read_to_string(&c.core_config).expect("config");
    std::fs::write(
        &c.core_config,
        text.replace(
            "edge_name = \"edge.example.com\"",
            "edge_name = \"impostor.example.com\"",
        ),
    )
    .expect("config");
    let core = Node::start(&c.core_config);
    assert!(
        eventually(Duration::from_secs(5), || core
            .counter("traversal_tls_failed")
            >= 2),
        "{}",
        core.log.text()
    );
    assert_eq!(core.status()["traversal"], "down");
    assert_eq!(c.edge.status()["traversal"], "down");
    assert!(
        core.log
            .text()
            .contains("certificate not valid for name \"impostor.example.com\""),
        "{}",
        core.log.text()
    );
}
