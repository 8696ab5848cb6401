//! Many clients, each registered on its own TLS connection and kept open: every one gets a
//! binding on its own connection, and ucm-sim's resident memory per connection is reported
//! (not asserted: figures live in the report, not in a unit test).
//!
//! `UCM_SIM_CONNECTIONS` sets the count (default 500; the 15,000 fits the
//! 20,000-file limit: `UCM_SIM_CONNECTIONS=15000 cargo test -p edgeway-ucm-sim --release
//! --test capacity -- --nocapture`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeway_sip::{Auth, Frame, HeaderName, Message, ParseLimits, Response, StreamFramer};
use edgeway_testkit::peers::{ScratchDir, UcmSim, UcmSimOptions};
use edgeway_ucm_sim::digest::client_authorization;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn read_response(
    s: &mut TlsStream<TcpStream>,
    framer: &mut StreamFramer,
) -> Option<Response> {
    let mut buf = [0u8; 2048];
    loop {
        if let Some(Frame::Message(Message::Response(r))) = framer.poll_frame() {
            return Some(r);
        }
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        framer.handle_data(&buf[..n]).ok()?;
    }
}

fn register(i: usize, local: std::net::SocketAddr, cseq: u32, auth: Option<&str>) -> Vec<u8> {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/TLS {local};branch=z9hG4bK-cap-{i}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:user{i:04}@example.com>;tag=cap{i}\r\n\
         To: <sip:user{i:04}@example.com>\r\n\
         Call-ID: cap-{i}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:user{i:04}@{local};transport=tls>\r\n\
         Expires: 3600\r\n\
         {auth}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Registers user `i` on a new TLS connection and returns the open connection.
async fn client(
    i: usize,
    addr: std::net::SocketAddr,
    connector: TlsConnector,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let local = tcp.local_addr().map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut s = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut framer = StreamFramer::new(ParseLimits::default());
    s.write_all(&register(i, local, 1, None))
        .await
        .map_err(|e| e.to_string())?;
    let challenge = read_response(&mut s, &mut framer).await.ok_or("no 401")?;
    let www = challenge
        .headers
        .first(&HeaderName::WwwAuthenticate)
        .ok_or("no challenge")?;
    let ch = Auth::parse("WWW-Authenticate", www).map_err(|e| e.to_string())?;
    let auth = client_authorization(
        &ch,
        &format!("user{i:04}"),
        &format!("pw{i:04}"),
        "REGISTER",
        "sip:example.com",
        1,
        "cap",
    )
    .ok_or("challenge without realm/nonce")?;
    s.write_all(&register(i, local, 2, Some(&auth)))
        .await
        .map_err(|e| e.to_string())?;
    let ok = read_response(&mut s, &mut framer).await.ok_or("no 200")?;
    if ok.status != 200 {
        return Err(format!("user{i:04}: {} {}", ok.status, ok.reason));
    }
    Ok(s)
}

#[test]
fn every_client_holds_its_own_registered_tls_connection() {
    let count: usize = std::env::var("UCM_SIM_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let dir = ScratchDir::new("ucm-capacity");
    let (pki, cert) = common::server_cert(&dir, "ucm");
    let opts = UcmSimOptions {
        generate_users: Some((count, "pw".to_owned())),
        domains: vec!["example.com".to_owned()],
        ..UcmSimOptions::default()
    }
    .with_tls(&cert.cert_pem, &cert.key_pem);
    let ucm = UcmSim::spawn(env!("CARGO_BIN_EXE_ucm-sim").as_ref(), &opts);
    let addr = ucm.sip_tls.expect("tls");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca_path()).expect("CA"))
        .expect("add CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let before = rss_kib(ucm.pid());
    let started = Instant::now();
    let conns = rt.block_on(async {
        let mut held = Vec::with_capacity(count);
        // 64 handshakes in flight at a time: a steady ramp, not a SYN flood.
        for chunk in (1..=count).collect::<Vec<_>>().chunks(64) {
            let tasks: Vec<_> = chunk
                .iter()
                .map(|&i| tokio::spawn(client(i, addr, connector.clone())))
                .collect();
            for t in tasks {
                held.push(t.await.expect("client task").expect("registered"));
            }
        }
        held
    });
    let ramp = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kib(ucm.pid());
    let c = ucm.counters();
    assert_eq!(c["connections_open"], count as u64, "{c}");
    assert_eq!(c["registers_ok"], count as u64, "{c}");
    let bindings = ucm.bindings();
    assert_eq!(bindings.len(), count);
    let mut connections: Vec<u64> = bindings
        .iter()
        .map(|b| b["connection"].as_u64().expect("connection id"))
        .collect();
    connections.sort_unstable();
    connections.dedup();
    assert_eq!(connections.len(), count, "one connection per registration");
    eprintln!(
        "ucm-sim: {count} TLS connections registered in {:.1} s; RSS {before} KiB -> {after} KiB, \
         {:.1} KiB per registered connection",
        ramp.as_secs_f64(),
        (after.saturating_sub(before)) as f64 / count as f64
    );
    drop(conns);
}
