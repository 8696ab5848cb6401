//! Calls through edge and core with real peers, judged only by what the peers see: real
//! processes (two `edgeway-control`s, the edge's relaying and the core's re-keying
//! `edgeway-dataplane`, ucm-sim with simulated secure phones), and as the remote client
//! baresip (SDES-SRTP mandatory, a sine tone as microphone), sipp (through the testkit's socat
//! TLS bridge; CANCEL, hold/resume re-INVITEs, UPDATE before and after the answer) or the
//! test itself, whose SRTP both ways is made and checked by libsrtp (pylibsrtp, the testkit's
//! `LibsrtpOracle`), never by edgeway's own SRTP code. Every call ends with no flow left on
//! either node; one whose media died both ways without a hold (`[media] idle_timeout_ms`)
//! is ended with BYE on both legs. Under `CI=true` a missing peer fails the test (testkit
//! `require_peer`).

#[path = "common/call_rig.rs"]
mod call_rig;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use call_rig::{media_of, media_section, Dataplane};
use edgeway_sip::{Frame, HeaderName, Message, ParseLimits, Request, Response, StreamFramer};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_testkit::control::{
    digest_authorization, eventually, Cluster, ClusterOptions, SipClient, USERS,
};
use edgeway_testkit::peers::{
    require_peer, sipp_scenario, Baresip, BaresipCaller, BaresipOptions, Sipp, SippOutcome,
    SippTransport,
};
use edgeway_testkit::LibsrtpOracle;

/// `USERS` plus two simulated secure phones (`phone1` answers, `phone2` rings until
/// cancelled) and `callee`, a secure user the libsrtp test registers itself at ucm-sim.
fn users() -> String {
    let phone = |name: &str, number: u32| {
        format!(
            "[[user]]\nname = \"{name}\"\npassword = \"{name}-secret\"\nnumber = \"{number}\"\n\
             security_profile = \"secure\"\nphone = \"sim\"\n"
        )
    };
    format!(
        "{USERS}{}{}[[user]]\nname = \"callee\"\npassword = \"callee-secret\"\n\
         number = \"2009\"\nsecurity_profile = \"secure\"\n",
        phone("phone1", 2001),
        phone("phone2", 2002)
    )
}

/// Edge, core, both data planes and ucm-sim with the phones above.
struct Rig {
    cluster: Cluster,
    edge: Dataplane,
    core: Dataplane,
}

/// Each test its own 800 media ports from `base` (core 400, then the edge's 400 with its
/// demux pair first), apart from calls.rs's and call_status.rs's ranges and below the
/// ephemeral range, so tests run in parallel with each other and with calls.rs.
fn rig(base: u16) -> Rig {
    rig_with(base, "")
}

/// [`rig`] with `core_media` added to the core's `[media]` section.
fn rig_with(base: u16, core_media: &str) -> Rig {
    let core = Dataplane::start("core", &format!("{base}-{}", base + 399), &[]);
    let edge_low = base + 400;
    let edge = Dataplane::start(
        "edge",
        &format!("{edge_low}-{}", edge_low + 399),
        &["--demux", "first-pair"],
    );
    let cluster = Cluster::up(ClusterOptions {
        edge_extra: media_section(&edge.dir, &format!("demux_ports = [{edge_low}]")),
        core_extra: media_section(
            &core.dir,
            &format!("inside_security = \"secure\"\n{core_media}"),
        ),
        users: Some(users()),
        ..ClusterOptions::default()
    });
    cluster.ucm.answer_mode("phone2", "ring");
    Rig {
        cluster,
        edge,
        core,
    }
}

impl Rig {
    /// (edge entries, core entries).
    fn flows(&self) -> (usize, usize) {
        (self.edge.flows(), self.core.flows())
    }

    /// Panics unless both tables empty within 3 s.
    fn assert_no_flow_left(&self, after: &str) {
        assert!(
            eventually(Duration::from_secs(3), || self.flows() == (0, 0)),
            "flows left after {after} (edge, core): {:?}\n{}",
            self.flows(),
            self.logs()
        );
    }

    fn logs(&self) -> String {
        format!(
            "--- edge ---\n{}\n--- core ---\n{}\n--- ucm-sim ---\n{}",
            self.cluster.edge.log.text(),
            self.cluster.core().log.text(),
            self.cluster.ucm.output()
        )
    }
}

/// A UDP socket on an even loopback port (RTP's, RFC 3550; the planners check it).
fn even_media_socket() -> UdpSocket {
    let s = std::iter::repeat_with(|| UdpSocket::bind("127.0.0.1:0").expect("media socket"))
        .find(|s| s.local_addr().is_ok_and(|a| a.port() % 2 == 0))
        .expect("an even port");
    s.set_nonblocking(true).expect("nonblocking");
    s
}

/// Packets waiting on a non-blocking socket, drained.
fn drain(socket: &UdpSocket) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

/// A fresh SDES key line for the remote client's offers.
fn client_crypto() -> String {
    let attr = CryptoAttribute::generate(
        1,
        edgeway_srtp::SrtpProfile::AesCm128HmacSha1_80,
        &mut rand::thread_rng(),
    );
    attr.to_string()
}

/// The media legs of a sim phone's current call (`{"tx","rx","decrypt_failures",..}`).
fn phone_media(rig: &Rig) -> Vec<serde_json::Value> {
    rig.cluster
        .ucm
        .calls()
        .iter()
        .flat_map(|c| c["legs"].as_array().cloned().unwrap_or_default())
        .filter_map(|l| l.get("media").cloned())
        .collect()
}

// ---------------------------------------------------------------------------------------
// sipp

/// sipp, and socat for its TLS bridge, or `None` after saying `what` was not tested.
fn sipp_over_tls(what: &str) -> Option<std::path::PathBuf> {
    let sipp = require_peer("sipp", what)?;
    require_peer("socat", &format!("{what} (sipp's TLS bridge)"))?;
    Some(sipp)
}

/// What a sipp run through the edge showed: its outcome and the most entries seen on each
/// node's table while it ran.
struct SippCall {
    run: SippOutcome,
    most_flows: (usize, usize),
}

/// Runs `scenario` (an `edge_*.xml`) as alice over TLS through the edge, `callee` answering
/// and `ringing` ringing, sampling both tables while it runs. sipp sends no media, so the
/// edge never latches its media port and nothing comes back to it; the media of a call is
/// the baresip and libsrtp tests' business.
fn sipp_through_edge(rig: &Rig, sipp: &Path, scenario: &str) -> SippCall {
    // Held for the run, so no one else gets the port the SDP names.
    let media = even_media_socket();
    let port = media.local_addr().expect("addr").port();
    let csv = format!(
        "SEQUENTIAL\nalice;[authentication username=alice password=alice-secret];example.com;\
         phone1;{port};a=crypto:{};phone2\n",
        client_crypto()
    );
    let run = Sipp::new(sipp, &sipp_scenario(scenario))
        .remote(rig.cluster.edge.addr("sip"))
        .transport(SippTransport::Tls)
        .tls_ca(&rig.cluster.pki.ca_path())
        .users_csv(&csv)
        .timeout(Duration::from_secs(30));
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut most = (0, 0);
    let run = std::thread::scope(|s| {
        let sipp = s.spawn(|| {
            let r = run.run();
            done.store(true, std::sync::atomic::Ordering::Release);
            r
        });
        while !done.load(std::sync::atomic::Ordering::Acquire) {
            let (e, c) = rig.flows();
            most = (most.0.max(e), most.1.max(c));
            std::thread::sleep(Duration::from_millis(50));
        }
        sipp.join().expect("sipp thread")
    });
    drop(media);
    SippCall {
        run,
        most_flows: most,
    }
}

fn assert_sipp_succeeded(rig: &Rig, call: &SippCall) {
    assert!(
        call.run.status.success() && call.run.successful == 1 && call.run.failed == 0,
        "{}\n{}",
        call.run,
        rig.logs()
    );
}

#[test]
fn sipp_cancels_a_ringing_phone_through_edge_and_core() {
    let Some(sipp) = sipp_over_tls("CANCEL through edge and core") else {
        return;
    };
    let rig = rig(28000);
    let call = sipp_through_edge(&rig, &sipp, "edge_cancel.xml");
    assert_sipp_succeeded(&rig, &call);
    let m = &call.run.messages;
    assert!(m.contains("SIP/2.0 180"), "the phone rang: {m}");
    assert!(m.contains("SIP/2.0 487"), "the INVITE was terminated: {m}");
    rig.assert_no_flow_left("CANCEL");
    assert!(
        rig.cluster.ucm.calls().is_empty(),
        "{:?}",
        rig.cluster.ucm.calls()
    );
    assert_eq!(rig.cluster.ucm.counter("calls_cancelled"), 1);
    assert_eq!(rig.cluster.core().status()["media"]["calls"], 0);
    assert_eq!(rig.cluster.edge.status()["media"]["calls"], 0);
}

#[test]
fn sipp_holds_and_resumes_with_reinvites_through_edge_and_core() {
    let Some(sipp) = sipp_over_tls("hold/resume re-INVITEs through edge and core") else {
        return;
    };
    let rig = rig(28800);
    let call = sipp_through_edge(&rig, &sipp, "edge_reinvite.xml");
    assert_sipp_succeeded(&rig, &call);
    assert_eq!(
        call.most_flows,
        (4, 4),
        "a call is four entries on each node (RTP and RTCP both ways)"
    );
    rig.assert_no_flow_left("BYE");
    let c = rig.cluster.ucm.counters();
    assert_eq!(c["calls_established"], 1, "{c}");
    assert_eq!(c["calls_ended"], 1, "{c}");
}

#[test]
fn sipp_updates_media_before_and_after_the_answer_through_edge_and_core() {
    let Some(sipp) = sipp_over_tls("UPDATE through edge and core") else {
        return;
    };
    let rig = rig(29600);
    let call = sipp_through_edge(&rig, &sipp, "edge_update.xml");
    assert_sipp_succeeded(&rig, &call);
    assert_eq!(call.most_flows, (4, 4), "one call's entries at a time");
    let m = &call.run.messages;
    // RFC 3311 §5.2: an offer while the sender's own is unanswered gets 500 + Retry-After.
    assert!(
        m.contains("SIP/2.0 500 ") && m.contains("Retry-After: "),
        "the early UPDATE was not refused with 500 + Retry-After: {m}"
    );
    rig.assert_no_flow_left("CANCEL, then BYE");
    let c = rig.cluster.ucm.counters();
    assert_eq!(c["calls_cancelled"], 1, "{c}");
    assert_eq!(c["calls_ended"], 1, "{c}");
}

// ---------------------------------------------------------------------------------------
// baresip

#[test]
fn baresip_calls_a_secure_phone_with_srtp_through_edge_and_core() {
    let Some(baresip) = require_peer("baresip", "a baresip SRTP call through edge and core") else {
        return;
    };
    let rig = rig(30400);
    let client = Baresip::spawn_caller(
        &baresip,
        &BaresipOptions {
            user: "alice".to_owned(),
            domain: "example.com".to_owned(),
            password: "alice-secret".to_owned(),
            outbound: rig.cluster.edge.addr("sip"),
            transport: "tls".to_owned(),
            ca_pem: Some(std::fs::read_to_string(rig.cluster.pki.ca_path()).expect("CA")),
            regint: 600,
        },
        &BaresipCaller {
            mediaenc: "srtp-mand".to_owned(),
            tone_hz: 440,
        },
    );
    let mut client = client;
    assert!(
        client.wait_registered(Duration::from_secs(10)),
        "baresip did not register:\n{}\n{}",
        client.output(),
        rig.logs()
    );
    client
        .command("dial", "sip:phone1@example.com")
        .unwrap_or_else(|e| panic!("dial: {e}\n{}", client.output()));
    assert!(
        client.wait_for_output("SRTP is Enabled", Duration::from_secs(10)),
        "baresip's SRTP did not start:\n{}\n{}",
        client.output(),
        rig.logs()
    );
    assert_eq!(rig.flows(), (4, 4), "{}", rig.logs());
    // Two seconds of tone (100 packets at 50/s) reach the phone; its media comes back.
    assert!(
        eventually(Duration::from_secs(10), || phone_media(&rig)
            .first()
            .is_some_and(|m| m["rx"].as_u64() >= Some(100))),
        "the phone did not hear baresip: {:?}\nbaresip:\n{}\n{}",
        phone_media(&rig),
        client.output(),
        rig.logs()
    );
    let phone = phone_media(&rig).remove(0);
    assert_eq!(phone["decrypt_failures"], 0, "{phone}");
    assert_eq!(phone["bad"], 0, "{phone}");
    let stats = client
        .command("audio_debug", "")
        .unwrap_or_else(|e| panic!("audio_debug: {e}\n{}", client.output()));
    // The RTCP member row counts RTP that arrived from the phone and passed baresip's
    // SRTP (srtp-mand drops what does not decrypt).
    let rx = received_rtp(&stats).unwrap_or_else(|| panic!("no rcvd= in {stats}"));
    assert!(rx >= 50, "baresip received the phone's media: {stats}");
    assert!(stats.contains("menc: srtp-mand (secure=yes)"), "{stats}");
    let out = client.output();
    assert!(!out.contains("failed to decrypt"), "{out}");

    client.command("hangup", "").expect("hangup");
    rig.assert_no_flow_left(&format!(
        "baresip's BYE\n--- baresip ---\n{}",
        client.output()
    ));
    assert!(
        eventually(Duration::from_secs(3), || rig
            .cluster
            .ucm
            .calls()
            .is_empty()),
        "{:?}",
        rig.cluster.ucm.calls()
    );
    assert_eq!(rig.cluster.ucm.counter("calls_ended"), 1);
}

/// The `rcvd=` count of the RTCP member row in baresip's `audio_debug`
/// (`IP=127.0.0.1:30802 psent=0 rcvd=93`).
fn received_rtp(audio_debug: &str) -> Option<u64> {
    audio_debug
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rcvd="))
        .and_then(|n| n.parse().ok())
}

// ---------------------------------------------------------------------------------------
// the test as both ends, SRTP by libsrtp

/// A test-owned inside endpoint registered at ucm-sim over TCP: it receives the INVITE the
/// core sends inside and answers it with its own SDES key.
struct InsidePhone {
    stream: TcpStream,
    framer: StreamFramer,
    local: SocketAddr,
}

impl InsidePhone {
    fn register(ucm: SocketAddr, user: &str, password: &str) -> InsidePhone {
        let stream = TcpStream::connect(ucm).expect("connect to ucm-sim");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let local = stream.local_addr().expect("local");
        let mut phone = InsidePhone {
            stream,
            framer: StreamFramer::new(ParseLimits::default()),
            local,
        };
        let register = |cseq: u32, auth: &str| {
            format!(
                "REGISTER sip:example.com SIP/2.0\r\n\
                 Via: SIP/2.0/TCP {local};branch=z9hG4bK-in-{cseq}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=in1\r\n\
                 To: <sip:{user}@example.com>\r\nCall-ID: inside-reg-{local}\r\n\
                 CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{local};transport=tcp>\r\n\
                 Expires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
            )
        };
        phone.send(register(1, "").as_bytes());
        let challenge = phone.response();
        assert_eq!(challenge.status, 401, "{challenge:?}");
        let www = challenge
            .headers
            .first(&HeaderName::WwwAuthenticate)
            .expect("WWW-Authenticate")
            .to_owned();
        let auth = digest_authorization(&www, user, password, "sip:example.com");
        phone.send(register(2, &format!("Authorization: {auth}\r\n")).as_bytes());
        let ok = phone.response();
        assert_eq!(ok.status, 200, "{ok:?}");
        phone
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to ucm-sim");
    }

    fn frame(&mut self, timeout: Duration) -> Option<Message> {
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if let Some(Frame::Message(m)) = self.framer.poll_frame() {
                return Some(m);
            }
            let mut buf = [0u8; 8192];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.framer.handle_data(&buf[..n]).expect("framing"),
                Err(_) => {}
            }
        }
        None
    }

    fn response(&mut self) -> Response {
        match self.frame(Duration::from_secs(5)) {
            Some(Message::Response(r)) => r,
            other => panic!("ucm-sim did not answer: {other:?}"),
        }
    }

    /// The next request ucm-sim sends (panics after 10 s).
    fn request(&mut self) -> Request {
        loop {
            match self.frame(Duration::from_secs(10)) {
                Some(Message::Request(r)) => return r,
                Some(Message::Response(_)) => continue,
                None => panic!("no request reached the inside phone"),
            }
        }
    }

    /// Answers `req` with `status`, an SDP `body` when given.
    fn answer(&mut self, req: &Request, status: u16, body: Option<&str>) {
        let mut resp = req.make_response(status, "OK", Some("inside1"));
        resp.headers
            .push(
                HeaderName::Contact,
                format!("<sip:callee@{};transport=tcp>", self.local),
            )
            .expect("Contact");
        if let Some(b) = body {
            resp.set_body(Some("application/sdp"), b.as_bytes().to_vec())
                .expect("body");
        }
        self.send(&resp.to_bytes());
    }
}

/// A call about to be made from the client `alice` (registered through the edge) to
/// `callee`, registered at ucm-sim by the test: both ends' media sockets and the client's
/// SRTP offer.
struct InsideCall {
    inside: InsidePhone,
    client: SipClient,
    client_media: UdpSocket,
    inside_media: UdpSocket,
    client_key: CryptoAttribute,
    offer: String,
}

impl InsideCall {
    fn prepare(rig: &Rig) -> InsideCall {
        let ucm = rig.cluster.ucm.sip_tcp.expect("ucm-sim TCP");
        let inside = InsidePhone::register(ucm, "callee", "callee-secret");
        let mut client: SipClient = rig.cluster.client();
        let (_, ok) = client.register("alice", 600);
        assert_eq!(ok.status, 200, "{ok:?}");
        let client_media = even_media_socket();
        let client_key: CryptoAttribute = client_crypto().parse().expect("key");
        let offer = audio_sdp(
            "alice",
            client_media.local_addr().expect("addr").port(),
            &client_key,
        );
        InsideCall {
            inside,
            client,
            client_media,
            inside_media: even_media_socket(),
            client_key,
            offer,
        }
    }
}

fn audio_sdp(user: &str, port: u16, crypto: &CryptoAttribute) -> String {
    format!(
        "v=0\r\no={user} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:{crypto}\r\n\
         a=sendrecv\r\n"
    )
}

/// A libsrtp session keyed by `attr`'s first key.
fn session(oracle: &mut LibsrtpOracle, attr: &CryptoAttribute) -> u64 {
    let key = &attr.keys[0].key;
    let key_salt = [key.key(), key.salt()].concat();
    oracle.session(attr.profile.sdes_name(), &key_salt, 1024)
}

/// An RTP packet (PCMU, 160 bytes) whose payload names its sender and sequence number.
fn rtp(ssrc: u32, seq: u16, who: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(who, 158));
    p.extend_from_slice(&seq.to_be_bytes());
    p
}

/// How many of `packets` libsrtp decrypts in `session` into one of `sent` (same header and
/// payload: the core re-keyed the packet, it did not rewrite it).
fn decrypted_as_sent(
    oracle: &mut LibsrtpOracle,
    session: u64,
    packets: &[Vec<u8>],
    sent: &[Vec<u8>],
) -> usize {
    packets
        .iter()
        .filter(|p| {
            oracle
                .op(session, "unprotect", p)
                .is_ok_and(|plain| sent.contains(&plain))
        })
        .count()
}

#[test]
fn libsrtp_decrypts_the_core_rekeyed_media_both_ways() {
    let Some(mut oracle) = LibsrtpOracle::start("the core's re-keyed media checked by libsrtp")
    else {
        return;
    };
    let rig = rig(31200);
    // The remote client offers its key; the inside phone sees only the core's.
    let InsideCall {
        mut inside,
        mut client,
        client_media,
        inside_media,
        client_key,
        offer,
    } = InsideCall::prepare(&rig);
    let call_id = format!("libsrtp-{}", std::process::id());
    client
        .send_raw(&invite(&client, &call_id, &offer))
        .expect("INVITE");
    let inside_invite = inside.request();
    assert_eq!(inside_invite.method.as_str(), "INVITE");
    let inside_offer = String::from_utf8_lossy(&inside_invite.body).into_owned();
    let (core_inside, core_to_phone) = media_of(&inside_offer);
    let core_to_phone: CryptoAttribute = core_to_phone
        .expect("the core offers SDES inside")
        .parse()
        .expect("a=crypto");
    let client_inline = client_key.to_string();
    let client_inline = client_inline.split("inline:").nth(1).expect("inline key");
    assert!(
        !inside_offer.contains(client_inline),
        "the client's key went inside: {inside_offer}"
    );
    let phone_key = CryptoAttribute::generate(
        core_to_phone.tag,
        core_to_phone.profile,
        &mut rand::thread_rng(),
    );
    inside.answer(
        &inside_invite,
        200,
        Some(&audio_sdp(
            "callee",
            inside_media.local_addr().expect("addr").port(),
            &phone_key,
        )),
    );
    let ok = client.recv_response(Duration::from_secs(10));
    assert_eq!(ok.status, 200, "{ok:?}\n{}", rig.logs());
    let (edge_media, core_to_client) = media_of(&String::from_utf8_lossy(&ok.body));
    let core_to_client: CryptoAttribute = core_to_client
        .expect("the answer carries a=crypto")
        .parse()
        .expect("a=crypto");
    assert_ne!(
        core_to_client.keys[0].key.key(),
        phone_key.keys[0].key.key(),
        "the phone's key came out"
    );
    client
        .send_raw(&in_dialog(&client, "ACK", 1, &ok))
        .expect("ACK");
    assert_eq!(rig.flows(), (4, 4));

    // 50 packets each way, every one protected by libsrtp with the sender's own key.
    let (client_tx, phone_tx) = (
        session(&mut oracle, &client_key),
        session(&mut oracle, &phone_key),
    );
    let (mut sent_by_client, mut sent_by_phone) = (Vec::new(), Vec::new());
    let (mut at_phone, mut at_client) = (Vec::new(), Vec::new());
    for seq in 1..=50u16 {
        let from_client = rtp(0x0a11_ce00, seq, 0xc1);
        let from_phone = rtp(0x0ca1_1ee0, seq, 0x9e);
        let c = oracle
            .op(client_tx, "protect", &from_client)
            .expect("protect");
        let p = oracle
            .op(phone_tx, "protect", &from_phone)
            .expect("protect");
        client_media
            .send_to(&c, edge_media)
            .expect("send to the edge");
        inside_media
            .send_to(&p, core_inside)
            .expect("send to the core");
        sent_by_client.push(from_client);
        sent_by_phone.push(from_phone);
        std::thread::sleep(Duration::from_millis(20));
        at_phone.extend(drain(&inside_media));
        at_client.extend(drain(&client_media));
    }
    std::thread::sleep(Duration::from_millis(100));
    at_phone.extend(drain(&inside_media));
    at_client.extend(drain(&client_media));

    // The inside phone decrypts with the key of the INVITE it received, the client with
    // the key of its 200's SDP.
    let phone_rx = session(&mut oracle, &core_to_phone);
    let client_rx = session(&mut oracle, &core_to_client);
    let heard = decrypted_as_sent(&mut oracle, phone_rx, &at_phone, &sent_by_client);
    let heard_back = decrypted_as_sent(&mut oracle, client_rx, &at_client, &sent_by_phone);
    assert!(
        heard >= 45,
        "libsrtp decrypted {heard} of {} packets at the phone (50 sent)",
        at_phone.len()
    );
    assert!(
        heard_back >= 45,
        "libsrtp decrypted {heard_back} of {} packets at the client (50 sent)",
        at_client.len()
    );
    // The same packets do not decrypt with the sender's key: they were re-keyed.
    let not_rekeyed = session(&mut oracle, &client_key);
    assert_eq!(
        decrypted_as_sent(&mut oracle, not_rekeyed, &at_phone, &sent_by_client),
        0
    );

    client
        .send_raw(&in_dialog(&client, "BYE", 2, &ok))
        .expect("BYE");
    let bye = std::iter::repeat_with(|| inside.request())
        .find(|r| r.method.as_str() != "ACK")
        .expect("a request");
    assert_eq!(bye.method.as_str(), "BYE");
    inside.answer(&bye, 200, None);
    let bye_ok = client.recv_response(Duration::from_secs(10));
    assert_eq!(bye_ok.status, 200, "{bye_ok:?}");
    rig.assert_no_flow_left("BYE");
}

#[test]
fn a_call_whose_media_died_both_ways_without_hold_is_ended_with_bye_on_both_legs() {
    let rig = rig_with(12000, "idle_timeout_ms = 1500\n");
    // Both ends answer sendrecv and then send nothing at all: the media is dead, not held.
    let InsideCall {
        mut inside,
        mut client,
        inside_media,
        offer,
        ..
    } = InsideCall::prepare(&rig);
    client
        .send_raw(&invite(&client, "dead-media-1", &offer))
        .expect("INVITE");
    let inside_invite = inside.request();
    let (_, core_to_phone) = media_of(&String::from_utf8_lossy(&inside_invite.body));
    let core_to_phone: CryptoAttribute = core_to_phone
        .expect("the core offers SDES inside")
        .parse()
        .expect("a=crypto");
    let phone_key = CryptoAttribute::generate(
        core_to_phone.tag,
        core_to_phone.profile,
        &mut rand::thread_rng(),
    );
    let phone_port = inside_media.local_addr().expect("addr").port();
    inside.answer(
        &inside_invite,
        200,
        Some(&audio_sdp("callee", phone_port, &phone_key)),
    );
    let ok = client.recv_response(Duration::from_secs(10));
    assert_eq!(ok.status, 200, "{ok:?}\n{}", rig.logs());
    client
        .send_raw(&in_dialog(&client, "ACK", 1, &ok))
        .expect("ACK");
    let answered = std::time::Instant::now();
    let bye = client
        .recv_request(Duration::from_secs(8))
        .unwrap_or_else(|| panic!("no BYE for the dead call\n{}", rig.logs()));
    assert_eq!(bye.method.as_str(), "BYE");
    assert!(
        answered.elapsed() >= Duration::from_millis(1000),
        "BYE only after the idle timeout: {:?}",
        answered.elapsed()
    );
    let reason = |r: &Request| {
        r.headers
            .first(&HeaderName::parse("Reason"))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(reason(&bye).contains("media idle"), "{bye:?}");
    client.respond(&bye, 200);
    let inside_bye = std::iter::repeat_with(|| inside.request())
        .find(|r| r.method.as_str() != "ACK")
        .expect("a request");
    assert_eq!(inside_bye.method.as_str(), "BYE");
    assert!(reason(&inside_bye).contains("media idle"), "{inside_bye:?}");
    inside.answer(&inside_bye, 200, None);
    rig.assert_no_flow_left("the media timeout");
    // The core's call history names why it ended the call.
    let core = rig.cluster.core();
    let ended = std::time::Instant::now() + Duration::from_secs(5);
    let cause = loop {
        let history = core.admin("calls history")["history"].clone();
        if let Some(cause) = history[0]["cause"].as_str() {
            break cause.to_owned();
        }
        assert!(std::time::Instant::now() < ended, "no history: {history}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(cause, "media idle");
}

fn invite(client: &SipClient, call_id: &str, sdp: &str) -> Vec<u8> {
    format!(
        "INVITE sip:callee@example.com SIP/2.0\r\n\
         Via: SIP/2.0/TLS {local};branch=z9hG4bK-inv-{call_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a-{call_id}\r\n\
         To: <sip:callee@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:alice@{local};transport=tls>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{sdp}",
        local = client.local,
        len = sdp.len(),
    )
    .into_bytes()
}

/// An in-dialog request of the client's call answered by `ok` (its route set reversed).
fn in_dialog(client: &SipClient, method: &str, cseq: u32, ok: &Response) -> Vec<u8> {
    let header = |h: HeaderName| ok.headers.first(&h).expect("header").to_owned();
    let routes: String = ok
        .headers
        .values(&HeaderName::RecordRoute)
        .expect("Record-Route")
        .iter()
        .rev()
        .map(|r| format!("Route: {r}\r\n"))
        .collect();
    let target = ok
        .headers
        .first(&HeaderName::Contact)
        .and_then(|c| c.split(['<', '>']).nth(1))
        .unwrap_or("sip:callee@example.com")
        .to_owned();
    format!(
        "{method} {target} SIP/2.0\r\n\
         Via: SIP/2.0/TLS {local};branch=z9hG4bK-{method}-{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n{routes}Content-Length: 0\r\n\r\n",
        local = client.local,
        from = header(HeaderName::From),
        to = header(HeaderName::To),
        call_id = header(HeaderName::CallId),
    )
    .into_bytes()
}
