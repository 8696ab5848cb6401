//! The calls harness the control plane's call tests share (moved here from calls.rs so
//! every call test starts the same processes): both data planes on their own table
//! directories, an edge and a core with `[media]`, ucm-sim with a simulated secure phone
//! `phone1`, and a TLS client `alice` registered through the edge; raw INVITE, in-dialog
//! requests and SRTP media from the client's side.
#![allow(dead_code)]

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
pub(crate) fn users() -> String {
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
pub(crate) struct Dataplane {
    /// Its table directory.
    pub(crate) dir: PathBuf,
    child: Child,
}

impl Dataplane {
    pub(crate) fn start(role: &str, range: &str, extra: &[&str]) -> Dataplane {
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

    /// Entries in its table now.
    pub(crate) fn flows(&self) -> usize {
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

pub(crate) fn media_section(dir: &Path, extra: &str) -> String {
    format!(
        "[media]\ntable_dir = \"{}\"\naddress = \"127.0.0.1\"\n{extra}\n",
        dir.display()
    )
}

pub(crate) fn invite(client: &SipClient, call_id: &str, sdp: &str) -> Vec<u8> {
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

pub(crate) fn in_dialog(client: &SipClient, method: &str, cseq: u32, ok: &Response) -> Vec<u8> {
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

pub(crate) fn final_response(client: &mut SipClient) -> Response {
    loop {
        let r = client.recv_response(Duration::from_secs(10));
        if r.status >= 200 {
            return r;
        }
    }
}

/// `c=` address and `m=audio` port of an SDP body, and its first `a=crypto` value.
pub(crate) fn media_of(sdp: &str) -> (SocketAddr, Option<String>) {
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

pub(crate) fn context(crypto: &str) -> SrtpContext {
    let attr: CryptoAttribute = crypto.parse().expect("a=crypto");
    SrtpContext::new(&attr.to_config()).expect("context")
}

pub(crate) fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5, 160));
    p
}

/// A running edge and core with both data planes and a registered client.
pub(crate) struct Rig {
    pub(crate) cluster: Cluster,
    pub(crate) edge_dp: Dataplane,
    pub(crate) core_dp: Dataplane,
    pub(crate) client: SipClient,
}

/// A rig whose core takes media ports `core` (`LOW-HIGH`) and whose edge takes `edge`
/// (its first pair the demultiplexing one); each test its own ranges, below the ephemeral
/// range, so tests run in parallel.
pub(crate) fn rig(core: (u16, u16), edge: (u16, u16)) -> Rig {
    rig_with(core, edge, "")
}

/// [`rig`] with `core_settings` added to the core's `[core]` section.
pub(crate) fn rig_with(core: (u16, u16), edge: (u16, u16), core_settings: &str) -> Rig {
    let core_dp = Dataplane::start("core", &format!("{}-{}", core.0, core.1), &[]);
    let edge_dp = Dataplane::start(
        "edge",
        &format!("{}-{}", edge.0, edge.1),
        &["--demux", "first-pair"],
    );
    let opts = ClusterOptions {
        edge_extra: media_section(&edge_dp.dir, &format!("demux_ports = [{}]", edge.0)),
        core_extra: format!(
            "{core_settings}\n{}",
            media_section(&core_dp.dir, "inside_security = \"secure\"")
        ),
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
pub(crate) const CLIENT_CRYPTO: &str =
    "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

/// An answered, acknowledged SRTP call from the rig's client to the phone: the client's
/// media socket, the 200, the edge's media address and the answer's `a=crypto`.
/// The client's non-blocking media socket on an even port (RTP takes one, RFC 3550, which
/// the planner checks).
pub(crate) fn client_media() -> UdpSocket {
    let media = std::iter::repeat_with(|| UdpSocket::bind("127.0.0.1:0").expect("client media"))
        .find(|s| s.local_addr().is_ok_and(|a| a.port() % 2 == 0))
        .expect("an even port");
    media.set_nonblocking(true).expect("nonblocking");
    media
}

pub(crate) fn establish(
    rig: &mut Rig,
    call_id: &str,
    edge_range: std::ops::Range<u16>,
) -> (UdpSocket, Response, SocketAddr, String) {
    let media = client_media();
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

/// Sends `packets` SRTP packets (sequence from `first_seq`, 20 ms apart) with `tx` to the
/// edge and counts what comes back and how much of it decrypts with `answer_crypto`.
pub(crate) fn exchange(
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
pub(crate) fn client_offer(port: u16, version: u32, direction: &str) -> String {
    format!(
        "v=0\r\no=alice 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:{CLIENT_CRYPTO}\r\na={direction}\r\n"
    )
}

/// An in-dialog request carrying `sdp`.
pub(crate) fn with_sdp(request: Vec<u8>, sdp: &str) -> Vec<u8> {
    let Ok(edgeway_sip::Message::Request(mut req)) = edgeway_sip::Message::parse(&request) else {
        panic!("request parses");
    };
    req.set_body(Some("application/sdp"), sdp.as_bytes().to_vec())
        .expect("body");
    req.to_bytes()
}
