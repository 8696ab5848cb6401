//! Calls through edge and core with real processes: two `edgeway-control`s, both data planes
//! (`edgeway-dataplane`, edge role relaying and core role re-keying) and ucm-sim with a
//! simulated secure phone. A TLS client registers and calls the phone; SRTP flows client ->
//! edge relay -> core re-key -> phone and back; BYE leaves no flow on either node, and an
//! offer without crypto gets 488 and leaves none.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use edgeway_flowtable::FlowTable;
use edgeway_sip::{HeaderName, Response};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::SrtpContext;
use edgeway_testkit::control::{
    dataplane_binary, eventually, Cluster, ClusterOptions, SipClient, USERS,
};

/// `USERS` plus a simulated inside phone with a secure profile.
fn users() -> String {
    format!(
        "{USERS}
[[user]]
name = \"phone1\"
password = \"phone1-secret\"
number = \"2001\"
security_profile = \"secure\"
phone = \"sim\"
"
    )
}

/// A data plane on its own table directory; killed and removed on drop.
struct Dataplane {
    dir: PathBuf,
    child: Child,
}

impl Dataplane {
    fn start(role: &str, range: &str, extra: &[&str]) -> Dataplane {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/dev/shm/edgeway-calls-{}-{role}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let child = Command::new(dataplane_binary())
            .args(["--shm-dir", &dir.display().to_string(), "--role", role])
            .args([
                "--bind",
                "127.0.0.1",
                "--workers",
                "1",
                "--media-range",
                range,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start edgeway-dataplane");
        let dp = Dataplane { dir, child };
        assert!(
            eventually(Duration::from_secs(10), || FlowTable::open_at(&dp.dir)
                .is_ok_and(|t| t.dataplane().workers > 0)),
            "data plane {role} did not publish its table"
        );
        dp
    }

    fn flows(&self) -> usize {
        FlowTable::open_at(&self.dir).expect("table").iter().count()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn media_section(dir: &Path, extra: &str) -> String {
    format!(
        "[media]\ntable_dir = \"{}\"\naddress = \"127.0.0.1\"\n{extra}\n",
        dir.display()
    )
}

fn invite(client: &SipClient, call_id: &str, sdp: &str) -> Vec<u8> {
    format!(
        "INVITE sip:phone1@example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS {local};branch=z9hG4bK-inv-{call_id}\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a-{call_id}\r\n\
To: <sip:phone1@example.com>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@{local};transport=tls>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {len}\r\n\r\n{sdp}",
        local = client.local,
        len = sdp.len(),
    )
    .into_bytes()
}

fn in_dialog(client: &SipClient, method: &str, cseq: u32, ok: &Response) -> Vec<u8> {
    let to = ok.headers.first(&HeaderName::To).expect("To").to_owned();
    let from = ok
        .headers
        .first(&HeaderName::From)
        .expect("From")
        .to_owned();
    let call_id = ok.headers.call_id().expect("Call-ID");
    let mut routes: Vec<String> = ok
        .headers
        .values(&HeaderName::RecordRoute)
        .expect("Record-Route")
        .into_iter()
        .map(str::to_owned)
        .collect();
    routes.reverse();
    let route = routes
        .iter()
        .map(|r| format!("Route: {r}\r\n"))
        .collect::<String>();
    format!(
        "{method} sip:phone1@example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS {local};branch=z9hG4bK-{method}-{cseq}-{call_id}\r\n\
Max-Forwards: 70\r\n\
From: {from}\r\n\
To: {to}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
{route}Content-Length: 0\r\n\r\n",
        local = client.local,
    )
    .into_bytes()
}

fn final_response(client: &mut SipClient) -> Response {
    loop {
        let r = client.recv_response(Duration::from_secs(10));
        if r.status >= 200 {
            return r;
        }
    }
}

/// `c=` address and `m=audio` port of an SDP body, and its first `a=crypto` value.
fn media_of(sdp: &str) -> (SocketAddr, Option<String>) {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c=")
        .trim();
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .expect("m=audio");
    let crypto = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .map(|c| c.trim().to_owned());
    (format!("{ip}:{port}").parse().expect("address"), crypto)
}

fn context(crypto: &str) -> SrtpContext {
    let attr: CryptoAttribute = crypto.parse().expect("a=crypto");
    SrtpContext::new(&attr.to_config()).expect("context")
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5, 160));
    p
}

struct Rig {
    cluster: Cluster,
    edge_dp: Dataplane,
    core_dp: Dataplane,
    client: SipClient,
}

/// Each test its own media ranges below the ephemeral range (core `base`.., edge
/// `base + 2000`.., the edge's demux pair first), so tests run in parallel.
fn rig(base: u16) -> Rig {
    let core_dp = Dataplane::start("core", &format!("{base}-{}", base + 999), &[]);
    let edge = base + 2000;
    let edge_dp = Dataplane::start(
        "edge",
        &format!("{edge}-{}", edge + 999),
        &["--demux", "first-pair"],
    );
    let opts = ClusterOptions {
        edge_extra: media_section(&edge_dp.dir, &format!("demux_ports = [{edge}]")),
        core_extra: media_section(&core_dp.dir, "inside_security = \"secure\""),
        users: Some(users()),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::up(opts);
    let mut client = cluster.client();
    let (_, ok) = client.register("alice", 600);
    assert_eq!(ok.status, 200, "{ok:?}");
    Rig {
        cluster,
        edge_dp,
        core_dp,
        client,
    }
}

/// The client's key in every offer.
const CLIENT_CRYPTO: &str =
    "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

/// An answered, acknowledged SRTP call from the rig's client to the phone: the client's
/// media socket, the 200, the edge's media address and the answer's `a=crypto`.
fn establish(
    rig: &mut Rig,
    call_id: &str,
    edge_range: std::ops::Range<u16>,
) -> (UdpSocket, Response, SocketAddr, String) {
    // RTP takes an even port (RFC 3550), which the planner checks.
    let media = std::iter::repeat_with(|| UdpSocket::bind("127.0.0.1:0").expect("client media"))
        .find(|s| s.local_addr().is_ok_and(|a| a.port() % 2 == 0))
        .expect("an even port");
    media.set_nonblocking(true).expect("nonblocking");
    let port = media.local_addr().expect("addr").port();
    let sdp = format!(
        "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:{CLIENT_CRYPTO}\r\na=sendrecv\r\n"
    );
    rig.client
        .send_raw(&invite(&rig.client, call_id, &sdp))
        .expect("INVITE");
    let ok = final_response(&mut rig.client);
    assert_eq!(
        ok.status,
        200,
        "{ok:?}\nedge:\n{}\ncore:\n{}",
        rig.cluster.edge.log.text(),
        rig.cluster.core().log.text()
    );
    let answer = String::from_utf8_lossy(&ok.body).into_owned();
    let (edge_media, crypto) = media_of(&answer);
    let crypto = crypto.expect("the core's answer carries a=crypto");
    assert!(
        edge_range.contains(&edge_media.port()),
        "answer names the edge's media port: {answer}"
    );
    assert!(!crypto.contains("WVNfX19zZW1jdGwg"), "client key echoed");
    assert_eq!(rig.edge_dp.flows(), 4, "edge relay entries");
    assert_eq!(rig.core_dp.flows(), 4, "core re-key entries");
    rig.client
        .send_raw(&in_dialog(&rig.client, "ACK", 1, &ok))
        .expect("ACK");
    (media, ok, edge_media, crypto)
}

#[test]
fn srtp_call_through_edge_relay_and_core_rekey_and_bye_leaves_no_flow() {
    let mut rig = rig(16000);
    let (media, ok, edge_media, crypto) = establish(&mut rig, "call-srtp-1", 18000..19000);

    // Media: client SRTP to the edge; the phone's media comes back re-keyed with the
    // answer's key.
    let (received, decrypted) = exchange(
        &media,
        edge_media,
        &mut context(CLIENT_CRYPTO),
        &crypto,
        1,
        150,
    );
    assert!(
        received > 10,
        "media from the phone reached the client: {received}"
    );
    assert_eq!(
        decrypted, received,
        "every packet decrypts with the answer's key"
    );
    let calls = rig.cluster.ucm.calls();
    let leg = calls
        .iter()
        .flat_map(|c| c["legs"].as_array().cloned().unwrap_or_default())
        .find(|l| l.get("media").is_some())
        .unwrap_or_else(|| panic!("a simulated phone leg: {calls:?}"));
    assert!(
        leg["media"]["rx"].as_u64().unwrap_or(0) > 10,
        "the phone received the client's media: {leg}"
    );
    assert_eq!(leg["media"]["decrypt_failures"], 0, "{leg}");

    rig.client
        .send_raw(&in_dialog(&rig.client, "BYE", 2, &ok))
        .expect("BYE");
    let bye_ok = final_response(&mut rig.client);
    assert_eq!(bye_ok.status, 200, "{bye_ok:?}");
    assert!(
        eventually(Duration::from_secs(2), || rig.edge_dp.flows() == 0
            && rig.core_dp.flows() == 0),
        "flows left after BYE: edge {} core {}",
        rig.edge_dp.flows(),
        rig.core_dp.flows()
    );
}

#[test]
fn an_offer_without_crypto_gets_488_and_leaves_no_flow() {
    let mut rig = rig(17000);
    let sdp = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    rig.client
        .send_raw(&invite(&rig.client, "call-plain-1", sdp))
        .expect("INVITE");
    let refused = final_response(&mut rig.client);
    assert_eq!(refused.status, 488, "{refused:?}");
    let warning = refused
        .headers
        .first(&HeaderName::Warning)
        .expect("Warning")
        .to_owned();
    assert!(warning.starts_with("302 core1 "), "{warning}");
    assert!(warning.contains("SRTP is required"), "{warning}");
    assert_eq!(rig.edge_dp.flows(), 0);
    assert_eq!(rig.core_dp.flows(), 0);
    assert_eq!(rig.cluster.core().counter("media_refused"), 1);
    assert!(rig.cluster.edge.status()["media"]["calls"] == 0);
}

#[test]
fn a_client_that_disconnects_mid_call_leaves_no_flow_on_the_edge() {
    let mut rig = rig(20000);
    let _call = establish(&mut rig, "call-gone-1", 22000..23000);
    // The client's TLS connection goes away without BYE.
    let replacement = rig.cluster.client();
    drop(std::mem::replace(&mut rig.client, replacement));
    assert!(
        eventually(Duration::from_secs(3), || rig.edge_dp.flows() == 0),
        "edge flows left after the client's connection closed: {}\n{}",
        rig.edge_dp.flows(),
        rig.cluster.edge.status()
    );
    assert_eq!(rig.cluster.edge.status()["media"]["calls"], 0);
}

/// Sends `packets` SRTP packets (sequence from `first_seq`, 20 ms apart) with `tx` to the
/// edge and counts what comes back and how much of it decrypts with `answer_crypto`.
fn exchange(
    media: &UdpSocket,
    edge_media: SocketAddr,
    tx: &mut SrtpContext,
    answer_crypto: &str,
    first_seq: u16,
    packets: u16,
) -> (usize, usize) {
    let mut rx = context(answer_crypto);
    let (mut received, mut decrypted) = (0, 0);
    for seq in first_seq..first_seq + packets {
        let mut pkt = rtp(seq);
        let len = pkt.len();
        pkt.resize(len + 64, 0);
        let n = tx.protect_rtp(&mut pkt, len).expect("protect");
        media.send_to(&pkt[..n], edge_media).expect("send");
        let mut buf = [0u8; 2048];
        // Drain what arrived since the last packet went out.
        while let Ok((n, _)) = media.recv_from(&mut buf) {
            received += 1;
            if rx.unprotect_rtp(&mut buf, n).is_ok() {
                decrypted += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (received, decrypted)
}

/// The client's offer for a call whose media socket is on `port`, with `direction`.
fn client_offer(port: u16, version: u32, direction: &str) -> String {
    format!(
        "v=0\r\no=alice 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:{CLIENT_CRYPTO}\r\na={direction}\r\n"
    )
}

/// An in-dialog request carrying `sdp`.
fn with_sdp(request: Vec<u8>, sdp: &str) -> Vec<u8> {
    let Ok(edgeway_sip::Message::Request(mut req)) = edgeway_sip::Message::parse(&request) else {
        panic!("request parses");
    };
    req.set_body(Some("application/sdp"), sdp.as_bytes().to_vec())
        .expect("body");
    req.to_bytes()
}

fn phone_rx(rig: &Rig) -> u64 {
    rig.cluster
        .ucm
        .calls()
        .iter()
        .flat_map(|c| c["legs"].as_array().cloned().unwrap_or_default())
        .find_map(|l| l["media"]["rx"].as_u64())
        .unwrap_or(0)
}

#[test]
fn hold_and_resume_reinvites_keep_the_call_and_media_resumes() {
    let mut rig = rig(24000);
    let (media, ok, edge_media, _) = establish(&mut rig, "call-hold-1", 26000..27000);
    let port = media.local_addr().expect("addr").port();
    let mut tx = context(CLIENT_CRYPTO);
    for (cseq, version, direction) in [(2, 2, "sendonly"), (3, 3, "sendrecv")] {
        let reinvite = with_sdp(
            in_dialog(&rig.client, "INVITE", cseq, &ok),
            &client_offer(port, version, direction),
        );
        rig.client.send_raw(&reinvite).expect("re-INVITE");
        let answered = final_response(&mut rig.client);
        assert_eq!(answered.status, 200, "{direction}: {answered:?}");
        rig.client
            .send_raw(&in_dialog(&rig.client, "ACK", cseq, &ok))
            .expect("ACK");
        assert_eq!(rig.edge_dp.flows(), 4, "edge entries after {direction}");
        assert_eq!(rig.core_dp.flows(), 4, "core entries after {direction}");
        if direction == "sendrecv" {
            let answer = String::from_utf8_lossy(&answered.body).into_owned();
            let (again, crypto) = media_of(&answer);
            assert_eq!(again, edge_media, "the edge keeps the call's port");
            let before = phone_rx(&rig);
            let (received, decrypted) =
                exchange(&media, edge_media, &mut tx, &crypto.expect("crypto"), 1, 75);
            assert!(received > 10, "media after resume: {received}");
            assert_eq!(decrypted, received, "resumed media decrypts");
            assert!(
                phone_rx(&rig) > before + 10,
                "the phone hears the client again"
            );
        }
    }
    rig.client
        .send_raw(&in_dialog(&rig.client, "BYE", 4, &ok))
        .expect("BYE");
    assert_eq!(final_response(&mut rig.client).status, 200);
    assert!(eventually(Duration::from_secs(2), || rig.edge_dp.flows()
        == 0
        && rig.core_dp.flows() == 0));
}
