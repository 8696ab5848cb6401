//! Calls through edge and core with real processes: two `edgeway-control`s, both data planes
//! (`edgeway-dataplane`, edge role relaying and core role re-keying) and ucm-sim with a
//! simulated secure phone. A TLS client registers and calls the phone; SRTP flows client ->
//! edge relay -> core re-key -> phone and back; BYE leaves no flow on either node, and an
//! offer without crypto gets 488 and leaves none. The core is a B2BUA: what ucm-sim receives
//! (recorded on the wire) is a dialog of its own (Call-ID, From tag, the core's Via and
//! Contact); UPDATE mid-call, CANCEL before answer (487), the setup timeout (408), BYE
//! from either side and a call from the inside phone to the client each leave no flow. A
//! phone's 183 with SDP carries early media both ways before any answer.
//! With `[media] idle_timeout_ms` on both nodes, an `a=inactive` hold three times longer
//! than the timeout keeps the call and every entry and resumes with media both ways, and so
//! does a one-way (`a=sendonly`) hold whose holder sends nothing either.

#[path = "common/call_rig.rs"]
mod call_rig;

use call_rig::{
    client_media, client_offer, context, establish, exchange, final_response, in_dialog, invite,
    media_of, media_section, users, with_sdp, Dataplane, Rig, CLIENT_CRYPTO,
};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use edgeway_sip::{Frame, HeaderName, Message, Method, Response};
use edgeway_testkit::control::{eventually, Cluster, ClusterOptions};

/// Each test its own media ranges below the ephemeral range (core `base`.., edge
/// `base + 2000`.., the edge's demux pair first), so tests run in parallel.
fn rig(base: u16) -> Rig {
    rig_with(base, 999, 2000, |_| {}, None)
}

/// [`rig`] with `span + 1` ports per node, the edge's range `edge_offset` above the
/// core's, and `tune` changing the cluster's options before it starts; with `recorder`,
/// the core reaches ucm-sim through it.
fn rig_with(
    base: u16,
    span: u16,
    edge_offset: u16,
    tune: impl FnOnce(&mut ClusterOptions),
    recorder: Option<&Recorder>,
) -> Rig {
    let core_dp = Dataplane::start("core", &format!("{base}-{}", base + span), &[]);
    let edge = base + edge_offset;
    let edge_dp = Dataplane::start(
        "edge",
        &format!("{edge}-{}", edge + span),
        &["--demux", "first-pair"],
    );
    let mut opts = ClusterOptions {
        edge_extra: media_section(&edge_dp.dir, &format!("demux_ports = [{edge}]")),
        core_extra: media_section(&core_dp.dir, "inside_security = \"secure\""),
        users: Some(users()),
        ..ClusterOptions::default()
    };
    tune(&mut opts);
    if let Some(r) = recorder {
        opts.registrar = Some(r.address);
    }
    let cluster = match recorder {
        Some(r) => {
            let cluster = Cluster::start(opts);
            *r.target.lock().expect("target") = cluster.ucm.sip_tcp;
            assert!(cluster.edge.wait_traversal(true, Duration::from_secs(10)));
            assert!(cluster.core().wait_traversal(true, Duration::from_secs(10)));
            cluster.wait_ucm();
            cluster
        }
        None => Cluster::up(opts),
    };
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
    for (cseq, direction) in [(2, "sendonly"), (3, "sendrecv")] {
        let answered = reoffer(&mut rig, &ok, port, cseq, direction);
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

/// A re-INVITE of the client's call `ok` offering `direction` (SDP version `cseq`),
/// answered 200 and ACKed: the answer.
fn reoffer(rig: &mut Rig, ok: &Response, port: u16, cseq: u32, direction: &str) -> Response {
    let offer = with_sdp(
        in_dialog(&rig.client, "INVITE", cseq, ok),
        &client_offer(port, cseq, direction),
    );
    rig.client.send_raw(&offer).expect("re-INVITE");
    let answered = final_response(&mut rig.client);
    assert_eq!(answered.status, 200, "{direction}: {answered:?}");
    rig.client
        .send_raw(&in_dialog(&rig.client, "ACK", cseq, ok))
        .expect("ACK");
    answered
}

/// SRTP from the client reaches the phone and the phone's, re-keyed with `crypto`, reaches
/// and decrypts at the client (150 packets from sequence number `first_seq`, 3 s). A later
/// exchange under the same key must go on from where the last one stopped: the core's
/// replay protection keeps its state across hold and resume, and drops a repeated index.
fn media_flows_both_ways(
    rig: &Rig,
    media: &UdpSocket,
    edge_media: SocketAddr,
    crypto: &str,
    first_seq: u16,
    when: &str,
) {
    let before = phone_rx(rig);
    let (received, decrypted) = exchange(
        media,
        edge_media,
        &mut context(CLIENT_CRYPTO),
        crypto,
        first_seq,
        150,
    );
    assert!(
        received > 10,
        "{when}: media from the phone reached the client: {received}\nucm {:?}",
        rig.cluster.ucm.calls()
    );
    assert_eq!(decrypted, received, "{when}: every packet decrypts");
    assert!(
        phone_rx(rig) > before + 10,
        "{when}: the phone hears the client"
    );
}

/// A TCP relay between the core and ucm-sim that records what the core sends: the
/// inside leg as Unified CM receives it. The core dials it; it connects on once
/// [`Recorder::target`] is set (ucm-sim starts with the cluster).
struct Recorder {
    address: SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
    sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Recorder {
    fn start() -> Recorder {
        use std::io::{Read, Write};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("recorder");
        let address = listener.local_addr().expect("recorder address");
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let sent: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (t, log) = (target.clone(), sent.clone());
        std::thread::spawn(move || {
            for core in listener.incoming() {
                let Ok(mut core) = core else { return };
                let to = loop {
                    if let Some(to) = *t.lock().expect("target") {
                        break to;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                };
                let Ok(mut ucm) = std::net::TcpStream::connect(to) else {
                    continue;
                };
                let (Ok(mut core_r), Ok(mut ucm_w)) = (core.try_clone(), ucm.try_clone()) else {
                    continue;
                };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    while let Ok(n @ 1..) = core_r.read(&mut buf) {
                        log.lock().expect("log").extend_from_slice(&buf[..n]);
                        if ucm_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = ucm_w.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut ucm, &mut core);
                    let _ = core.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Recorder {
            address,
            target,
            sent,
        }
    }

    /// The requests the core sent to Unified CM so far.
    fn requests(&self) -> Vec<edgeway_sip::Request> {
        let mut framer = edgeway_sip::StreamFramer::new(edgeway_sip::ParseLimits::default());
        let bytes = self.sent.lock().expect("log").clone();
        framer
            .handle_data(&bytes)
            .expect("the core's stream frames");
        std::iter::from_fn(|| framer.poll_frame())
            .filter_map(|f| match f {
                edgeway_sip::Frame::Message(edgeway_sip::Message::Request(r)) => Some(r),
                _ => None,
            })
            .collect()
    }
}

fn tag_of(addr: &str) -> String {
    edgeway_sip::NameAddr::parse(addr)
        .ok()
        .and_then(|a| a.tag().map(str::to_owned))
        .unwrap_or_default()
}

/// The phone's call in ucm-sim's `calls`, once there is one.
fn phone_call(rig: &Rig) -> serde_json::Value {
    let mut found = None;
    eventually(Duration::from_secs(5), || {
        found = rig.cluster.ucm.calls().into_iter().next();
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no call in ucm-sim"))
}

#[test]
fn the_inside_leg_is_a_dialog_of_its_own_update_mid_call_and_bye_from_the_phone() {
    let recorder = Recorder::start();
    let mut rig = rig_with(21000, 499, 500, |_| {}, Some(&recorder));
    let (media, ok, edge_media, _) = establish(&mut rig, "call-b2b-1", 21500..22000);

    // On the wire towards Unified CM: a new dialog with the core's identity.
    let invites: Vec<_> = recorder
        .requests()
        .into_iter()
        .filter(|r| r.method == edgeway_sip::Method::Invite)
        .collect();
    let [inside] = &invites[..] else {
        panic!("one INVITE to Unified CM: {invites:?}");
    };
    let h = &inside.headers;
    let inside_call_id = h.call_id().expect("Call-ID").to_owned();
    assert_ne!(
        inside_call_id, "call-b2b-1",
        "the inside leg has its own Call-ID"
    );
    let from = h.from_addr().expect("From");
    assert_eq!(
        from.uri.to_string(),
        "sip:alice@example.com",
        "identity kept"
    );
    assert_ne!(
        from.tag(),
        Some("a-call-b2b-1"),
        "the inside leg has its own From tag"
    );
    assert_eq!(inside.uri.to_string(), "sip:phone1@example.com");
    assert_eq!(h.cseq().expect("CSeq").seq, 1);
    assert_eq!(
        h.max_forwards().expect("Max-Forwards"),
        Some(68),
        "edge and core each a hop"
    );
    let contact = h.first(&HeaderName::Contact).expect("Contact");
    assert!(
        contact.contains("core.example.com"),
        "the core's Contact: {contact}"
    );
    let vias = h.via().expect("Via");
    assert_eq!(vias.len(), 1, "only the core's Via goes inside: {vias:?}");
    assert_eq!(vias[0].host.to_string(), "core.example.com");
    let text = String::from_utf8_lossy(&inside.to_bytes()).into_owned();
    for outside in [
        "call-b2b-1",
        "edge.example.com",
        &rig.client.local.to_string(),
    ] {
        assert!(!text.contains(outside), "{outside} leaked inside:\n{text}");
    }
    assert!(
        !text.contains("WVNfX19zZW1jdGwg"),
        "the client's key went inside"
    );
    let call = phone_call(&rig);
    assert_eq!(
        call["call_id"],
        inside_call_id.as_str(),
        "ucm-sim sees the inside dialog"
    );
    // The client's dialog is the outside one: its own tags, the core's Contact.
    assert_eq!(ok.headers.call_id().expect("Call-ID"), "call-b2b-1");
    assert!(
        !tag_of(ok.headers.first(&HeaderName::To).expect("To")).is_empty(),
        "the core's To tag"
    );
    assert!(ok
        .headers
        .first(&HeaderName::Contact)
        .is_some_and(|c| c.contains("core.example.com")));

    // UPDATE mid-call (what the commercial edge lacks): new offer, answered by the phone.
    let port = media.local_addr().expect("addr").port();
    let update = with_sdp(
        in_dialog(&rig.client, "UPDATE", 2, &ok),
        &client_offer(port, 2, "sendrecv"),
    );
    rig.client.send_raw(&update).expect("UPDATE");
    let answered = final_response(&mut rig.client);
    assert_eq!(answered.status, 200, "{answered:?}");
    assert_eq!(answered.headers.cseq().expect("CSeq").seq, 2);
    let (again, crypto) = media_of(&String::from_utf8_lossy(&answered.body));
    assert_eq!(again, edge_media, "the edge keeps the call's port");
    assert_eq!(rig.edge_dp.flows(), 4);
    assert_eq!(rig.core_dp.flows(), 4);
    media_flows_both_ways(
        &rig,
        &media,
        edge_media,
        &crypto.expect("crypto"),
        1,
        "after UPDATE",
    );
    let updates = recorder
        .requests()
        .into_iter()
        .filter(|r| r.method == edgeway_sip::Method::Update)
        .count();
    assert_eq!(
        updates, 1,
        "the UPDATE crossed as an UPDATE of the inside dialog"
    );

    // BYE from the phone: the client gets it in its own dialog and the flows go.
    let n = call["call"].as_u64().expect("call number");
    rig.cluster.ucm.hangup(n).expect("hangup");
    let bye = rig
        .client
        .recv_request(Duration::from_secs(5))
        .expect("BYE reaches the client");
    assert_eq!(bye.method, edgeway_sip::Method::Bye);
    assert_eq!(bye.headers.call_id().expect("Call-ID"), "call-b2b-1");
    assert_eq!(
        bye.headers.to_addr().expect("To").tag(),
        Some("a-call-b2b-1"),
        "addressed to the client's tag"
    );
    rig.client.respond(&bye, 200);
    assert!(
        eventually(Duration::from_secs(3), || rig.edge_dp.flows() == 0
            && rig.core_dp.flows() == 0),
        "flows left after the phone's BYE: edge {} core {}",
        rig.edge_dp.flows(),
        rig.core_dp.flows()
    );
    assert!(eventually(Duration::from_secs(3), || rig
        .cluster
        .ucm
        .calls()
        .is_empty()));
}

/// CANCELs the rig client's INVITE of `call_id`: the CANCEL gets 200 and the INVITE 487,
/// which the client ACKs.
fn cancel_and_ack(rig: &mut Rig, call_id: &str) {
    rig.client
        .send_raw(&invite_sibling(
            rig,
            "CANCEL",
            call_id,
            "<sip:phone1@example.com>",
        ))
        .expect("CANCEL");
    let mut finals: Vec<Response> = (0..2).map(|_| final_response(&mut rig.client)).collect();
    finals.sort_by_key(|r| r.status);
    assert_eq!(
        finals.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 487],
        "CANCEL answered, the INVITE terminated: {finals:?}"
    );
    assert_eq!(
        finals[0].headers.cseq().expect("CSeq").method,
        Method::Cancel
    );
    let to = finals[1]
        .headers
        .first(&HeaderName::To)
        .expect("To")
        .to_owned();
    rig.client
        .send_raw(&invite_sibling(rig, "ACK", call_id, &to))
        .expect("ACK");
}

/// Within 3 s no flow is left on either node and ucm-sim has no call.
fn assert_call_gone(rig: &Rig, when: &str) {
    assert!(
        eventually(Duration::from_secs(3), || rig.edge_dp.flows() == 0
            && rig.core_dp.flows() == 0
            && rig.cluster.ucm.calls().is_empty()),
        "left {when}: edge {} core {} ucm {:?}",
        rig.edge_dp.flows(),
        rig.core_dp.flows(),
        rig.cluster.ucm.calls()
    );
}

/// The INVITE of call `call_id` from the rig's client with an SRTP offer (media on `port`).
fn srtp_invite(rig: &Rig, call_id: &str, port: u16) -> Vec<u8> {
    invite(&rig.client, call_id, &client_offer(port, 1, "sendrecv"))
}

/// CANCEL, or the ACK of a non-2xx, for the rig's INVITE of `call_id`.
fn invite_sibling(rig: &Rig, method: &str, call_id: &str, to: &str) -> Vec<u8> {
    format!(
        "{method} sip:phone1@example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS {local};branch=z9hG4bK-inv-{call_id}\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a-{call_id}\r\n\
To: {to}\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 {method}\r\n\
Content-Length: 0\r\n\r\n",
        local = rig.client.local,
    )
    .into_bytes()
}

/// Early media: a phone that answers 183 Session Progress with SDP (an announcement, a
/// far-end ringback) is heard before any answer. The 183 reaches the client with the edge's
/// relay address and fresh keys, both nodes' flows are programmed at the 183, and the
/// phone's SRTP, re-keyed by the core, decrypts at the client while the phone hears the
/// client. CANCEL then ends the call (487) and leaves no flow.
#[test]
fn early_media_in_a_183_reaches_the_client_before_the_answer_and_cancel_removes_it() {
    let mut rig = rig_with(28000, 499, 500, |_| {}, None);
    rig.cluster.ucm.answer_mode("phone1", "early");
    let media = client_media();
    let port = media.local_addr().expect("addr").port();
    rig.client
        .send_raw(&srtp_invite(&rig, "call-early-1", port))
        .expect("INVITE");
    let progress = loop {
        match rig.client.recv_frame(Duration::from_secs(10)) {
            Ok(Some(Frame::Message(Message::Response(r)))) => {
                assert!(r.status < 200, "answered or refused before a 183: {r:?}");
                if r.status == 183 {
                    break r;
                }
            }
            Ok(Some(_)) => {}
            other => panic!("no 183 within 10 s: {other:?}"),
        }
    };
    let answer = String::from_utf8_lossy(&progress.body).into_owned();
    let (edge_media, crypto) = media_of(&answer);
    let crypto = crypto.expect("the 183 carries the core's a=crypto");
    assert!(
        (28500..29000).contains(&edge_media.port()),
        "the 183 names the edge's media port: {answer}"
    );
    assert!(!crypto.contains("WVNfX19zZW1jdGwg"), "client key echoed");
    assert_eq!(
        (rig.edge_dp.flows(), rig.core_dp.flows()),
        (4, 4),
        "flows programmed at the 183"
    );
    media_flows_both_ways(&rig, &media, edge_media, &crypto, 1, "early media");

    cancel_and_ack(&mut rig, "call-early-1");
    assert_call_gone(&rig, "after CANCEL");
}

#[test]
fn cancel_before_answer_gets_487_and_an_unanswered_call_times_out_with_408() {
    let mut rig = rig_with(
        23000,
        499,
        500,
        |o| o.core_extra = format!("call_setup_timeout_ms = 3000\n{}", o.core_extra),
        None,
    );
    rig.cluster.ucm.answer_mode("phone1", "ring");

    // CANCEL while the phone rings.
    rig.client
        .send_raw(&srtp_invite(&rig, "call-cancel-1", 40000))
        .expect("INVITE");
    assert!(
        eventually(Duration::from_secs(5), || rig
            .cluster
            .ucm
            .calls()
            .first()
            .is_some_and(|c| c["state"] == "ringing")),
        "the phone rings: {:?}",
        rig.cluster.ucm.calls()
    );
    cancel_and_ack(&mut rig, "call-cancel-1");
    assert_eq!(
        rig.cluster.ucm.counter("calls_cancelled"),
        1,
        "the phone saw the CANCEL"
    );
    assert_call_gone(&rig, "after CANCEL");

    // Nobody answers: after the setup timeout the caller gets 408 and the phone a CANCEL.
    let sent = std::time::Instant::now();
    rig.client
        .send_raw(&srtp_invite(&rig, "call-timeout-1", 40002))
        .expect("INVITE");
    let timed_out = final_response(&mut rig.client);
    assert_eq!(timed_out.status, 408, "{timed_out:?}");
    assert!(
        sent.elapsed() >= Duration::from_millis(2500),
        "408 only after the setup timeout: {:?}",
        sent.elapsed()
    );
    let to = timed_out
        .headers
        .first(&HeaderName::To)
        .expect("To")
        .to_owned();
    rig.client
        .send_raw(&invite_sibling(&rig, "ACK", "call-timeout-1", &to))
        .expect("ACK");
    assert_call_gone(&rig, "after the setup timeout");
    assert_eq!(rig.cluster.ucm.counter("calls_cancelled"), 2);
}

#[test]
fn a_call_from_the_inside_phone_reaches_the_client_with_srtp_the_clients_bye_ends_it_and_a_plain_answer_gets_488(
) {
    let mut rig = rig_with(25000, 499, 500, |_| {}, None);
    let media = client_media();
    let port = media.local_addr().expect("addr").port();
    rig.cluster
        .ucm
        .call("phone1", "alice")
        .expect("ucm-sim call");
    let invite = rig
        .client
        .recv_request(Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "INVITE to the client\ncore:\n{}",
                rig.cluster.core().log.text()
            )
        });
    assert_eq!(invite.method, edgeway_sip::Method::Invite);
    let outside_call_id = invite.headers.call_id().expect("Call-ID").to_owned();
    let call = phone_call(&rig);
    assert_ne!(call["call_id"], outside_call_id.as_str(), "two dialogs");
    assert!(
        invite
            .uri
            .to_string()
            .contains(&rig.client.local.to_string()),
        "to the client's registered Contact: {}",
        invite.uri
    );
    let contact = invite.headers.first(&HeaderName::Contact).expect("Contact");
    assert!(contact.contains("core.example.com"), "{contact}");
    let offer = String::from_utf8_lossy(&invite.body).into_owned();
    let (edge_media, _) = media_of(&offer);
    assert!((25500..26000).contains(&edge_media.port()), "{offer}");
    // The core offers its suites strongest first; the client picks AES_CM_128_HMAC_SHA1_80
    // and answers with that line's tag and a key of its own.
    let crypto = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .find(|c| c.split(' ').nth(1) == Some("AES_CM_128_HMAC_SHA1_80"))
        .unwrap_or_else(|| panic!("an AES_CM_128_HMAC_SHA1_80 offer: {offer}"))
        .trim()
        .to_owned();
    let tag = crypto.split(' ').next().expect("tag");
    let client_key = CLIENT_CRYPTO.split_once(' ').expect("key").1;

    // The client answers; the core ACKs the 2xx on the client's dialog.
    let mut ok = invite.make_response(200, "OK", Some("alice-1"));
    ok.headers
        .push(
            HeaderName::Contact,
            format!("<sip:alice@{};transport=tls>", rig.client.local),
        )
        .expect("Contact");
    let answer = format!(
        "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:{tag} {client_key}\r\na=sendrecv\r\n"
    );
    ok.set_body(Some("application/sdp"), answer.into_bytes())
        .expect("body");
    rig.client.send_raw(&ok.to_bytes()).expect("200");
    let ack = rig
        .client
        .recv_request(Duration::from_secs(5))
        .expect("ACK for the 2xx");
    assert_eq!(ack.method, edgeway_sip::Method::Ack);
    assert_eq!(ack.headers.call_id().expect("Call-ID"), outside_call_id);
    assert_eq!(rig.edge_dp.flows(), 4, "edge relay entries");
    assert_eq!(rig.core_dp.flows(), 4, "core re-key entries");
    assert!(eventually(Duration::from_secs(3), || phone_call(&rig)
        ["state"]
        == "established"));

    media_flows_both_ways(
        &rig,
        &media,
        edge_media,
        &crypto,
        1,
        "the call from the phone",
    );

    // The client hangs up in its dialog: Route from the INVITE's Record-Route (the edge).
    let routes: String = invite
        .headers
        .values(&HeaderName::RecordRoute)
        .expect("Record-Route")
        .into_iter()
        .map(|r| format!("Route: {r}\r\n"))
        .collect();
    assert!(
        routes.contains("edge.example.com"),
        "the edge record-routes: {routes}"
    );
    let target = edgeway_sip::NameAddr::parse(contact).expect("Contact").uri;
    let bye = format!(
        "BYE {target} SIP/2.0\r\n\
Via: SIP/2.0/TLS {local};branch=z9hG4bK-bye-in-1\r\n\
Max-Forwards: 70\r\n\
{routes}From: {to};tag=alice-1\r\n\
To: {from}\r\n\
Call-ID: {outside_call_id}\r\n\
CSeq: 1 BYE\r\n\
Content-Length: 0\r\n\r\n",
        local = rig.client.local,
        to = invite.headers.first(&HeaderName::To).expect("To"),
        from = invite.headers.first(&HeaderName::From).expect("From"),
    );
    rig.client.send_raw(bye.as_bytes()).expect("BYE");
    let bye_ok = final_response(&mut rig.client);
    assert_eq!(bye_ok.status, 200, "{bye_ok:?}");
    assert_call_gone(&rig, "after the client's BYE");

    // A second call answered with plain RTP: the core cannot accept it (SRTP is required
    // towards the edge), so the phone gets 488 with the Warning and the client's dialog is
    // ACKed and hung up.
    rig.cluster
        .ucm
        .call("phone1", "alice")
        .expect("ucm-sim call");
    let invite = rig
        .client
        .recv_request(Duration::from_secs(10))
        .expect("second INVITE");
    let mut ok = invite.make_response(200, "OK", Some("alice-2"));
    ok.headers
        .push(
            HeaderName::Contact,
            format!("<sip:alice@{};transport=tls>", rig.client.local),
        )
        .expect("Contact");
    let plain = format!(
        "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    ok.set_body(Some("application/sdp"), plain.into_bytes())
        .expect("body");
    rig.client.send_raw(&ok.to_bytes()).expect("200");
    let ack = rig
        .client
        .recv_request(Duration::from_secs(5))
        .expect("ACK");
    assert_eq!(ack.method, edgeway_sip::Method::Ack);
    let bye = rig
        .client
        .recv_request(Duration::from_secs(5))
        .expect("BYE");
    assert_eq!(bye.method, edgeway_sip::Method::Bye);
    rig.client.respond(&bye, 200);
    assert_call_gone(&rig, "after a refused answer");
    assert_eq!(
        rig.cluster.ucm.counter("sdp_refused"),
        0,
        "the phone got a 488, not SDP"
    );
    assert_eq!(rig.cluster.core().counter("media_refused"), 1);
}

#[test]
fn holds_longer_than_the_media_timeout_keep_the_call_even_one_way_with_a_silent_holder() {
    let mut rig = rig_with(
        27000,
        499,
        500,
        |o| {
            o.core_extra.push_str("idle_timeout_ms = 1500\n");
            o.edge_extra.push_str("idle_timeout_ms = 1500\n");
        },
        None,
    );
    let (media, ok, edge_media, crypto) = establish(&mut rig, "call-idle-1", 27500..28000);
    let port = media.local_addr().expect("addr").port();
    // An a=inactive hold (the phone answers inactive: nothing flows either way) lasting
    // three times the media timeout: no BYE, and neither node lost an entry.
    reoffer(&mut rig, &ok, port, 2, "inactive");
    held_call_stays(&mut rig, "the held call");
    assert_eq!(rig.cluster.ucm.calls().len(), 1, "the phone's call is up");
    // Resume: media flows both ways again on the call's entries.
    let resumed = reoffer(&mut rig, &ok, port, 3, "sendrecv");
    let (again, _) = media_of(&String::from_utf8_lossy(&resumed.body));
    assert_eq!(again, edge_media);
    media_flows_both_ways(&rig, &media, edge_media, &crypto, 1, "after a long hold");
    // A one-way hold (a=sendonly: the phone answers recvonly and goes silent) whose
    // holder sends nothing either, as many clients without music on hold of their own do:
    // a hold all the same, so the call and its entries stay, and media resumes after it.
    reoffer(&mut rig, &ok, port, 4, "sendonly");
    held_call_stays(&mut rig, "the silent one-way hold");
    reoffer(&mut rig, &ok, port, 5, "sendrecv");
    media_flows_both_ways(
        &rig,
        &media,
        edge_media,
        &crypto,
        151,
        "after a silent one-way hold",
    );
    // Hung up by the client: nothing is left on either node or at the phone.
    rig.client
        .send_raw(&in_dialog(&rig.client, "BYE", 6, &ok))
        .expect("BYE");
    assert_eq!(final_response(&mut rig.client).status, 200);
    assert_call_gone(&rig, "after BYE");
    assert_eq!(
        rig.cluster.ucm.counter("calls_ended"),
        1,
        "the phone got its BYE"
    );
}

/// Three times the media timeout (1.5 s) on hold: no request reaches the client (no BYE)
/// and neither node loses one of the call's four entries.
fn held_call_stays(rig: &mut Rig, what: &str) {
    if let Some(r) = rig.client.recv_request(Duration::from_millis(4500)) {
        panic!(
            "{what} got {} {:?}\ncore:\n{}",
            r.method,
            r.headers.first(&HeaderName::parse("Reason")),
            rig.cluster.core().log.text()
        );
    }
    assert_eq!(
        (rig.edge_dp.flows(), rig.core_dp.flows()),
        (4, 4),
        "{what}: entries kept through the hold"
    );
}

/// `bytes` (a request) with the header line `header` added before its CSeq.
fn with_header(bytes: Vec<u8>, header: &str) -> Vec<u8> {
    String::from_utf8(bytes)
        .expect("text")
        .replacen("\r\nCSeq:", &format!("\r\n{header}\r\nCSeq:"), 1)
        .into_bytes()
}

/// Sends the client's INVITE of `call_id` (media `port`, `header` added) and returns its
/// final response, ACKing a 200.
fn call(rig: &mut Rig, call_id: &str, port: u16, header: Option<&str>) -> Response {
    let invite = srtp_invite(rig, call_id, port);
    let invite = match header {
        Some(h) => with_header(invite, h),
        None => invite,
    };
    rig.client.send_raw(&invite).expect("INVITE");
    let answered = final_response(&mut rig.client);
    if answered.status == 200 {
        rig.client
            .send_raw(&in_dialog(&rig.client, "ACK", 1, &answered))
            .expect("ACK");
    }
    answered
}

#[test]
fn attended_transfer_headers_reach_ucm_naming_the_inside_dialog_and_a_wrong_replaces_gets_481() {
    let recorder = Recorder::start();
    let mut rig = rig_with(13000, 499, 500, |_| {}, Some(&recorder));
    let (media, first, _, _) = establish(&mut rig, "xfer-1", 13500..14000);
    let port = media.local_addr().expect("addr").port();
    // The consultation call, and its inside dialog as the phone sees it: the core's
    // INVITE (Call-ID, From tag) and the phone's tag (the To of the core's ACK).
    let consult = call(&mut rig, "xfer-2", port + 2, None);
    assert_eq!(consult.status, 200, "{consult:?}");
    let core_tag = tag_of(consult.headers.first(&HeaderName::To).expect("To"));
    let mut inside = None;
    eventually(Duration::from_secs(3), || {
        let sent = recorder.requests();
        let invite = sent.iter().filter(|r| r.method == Method::Invite).nth(1);
        inside = invite.and_then(|i| {
            let call_id = i.headers.call_id().ok()?.to_owned();
            let ack = sent.iter().find(|r| {
                r.method == Method::Ack && r.headers.call_id().is_ok_and(|c| c == call_id)
            })?;
            let ours = i.headers.from_addr().ok()?.tag()?.to_owned();
            let phones = ack.headers.to_addr().ok()?.tag()?.to_owned();
            Some((call_id, ours, phones))
        });
        inside.is_some()
    });
    let (inside_call_id, core_inside_tag, phone_tag) =
        inside.unwrap_or_else(|| panic!("the consultation's inside INVITE and ACK"));
    assert_ne!(inside_call_id, "xfer-2");

    // REFER on the first call: transfer the phone to the consultation (RFC 3891 in the
    // Refer-To, written with the outside dialog's identifiers as the client knows them).
    let refer = with_header(
        in_dialog(&rig.client, "REFER", 2, &first),
        &format!(
            "Refer-To: <sip:phone1@example.com?Replaces=xfer-2%3Bto-tag%3D{core_tag}\
             %3Bfrom-tag%3Da-xfer-2>\r\nReferred-By: <sip:alice@example.com>"
        ),
    );
    rig.client.send_raw(&refer).expect("REFER");
    let accepted = final_response(&mut rig.client);
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let sent_refer = recorder
        .requests()
        .into_iter()
        .find(|r| r.method == Method::Refer)
        .expect("the REFER reached Unified CM");
    let expected = format!(
        "<sip:phone1@example.com?Replaces={}%3Bto-tag%3D{phone_tag}%3Bfrom-tag%3D{core_inside_tag}>",
        inside_call_id.replace('@', "%40")
    );
    assert_eq!(
        sent_refer.headers.first(&HeaderName::ReferTo),
        Some(expected.as_str()),
        "the Replaces names the inside dialog as the phone knows it"
    );

    // The transfer target's INVITE with Replaces (here from the client) likewise.
    let replacing = call(
        &mut rig,
        "xfer-3",
        port + 4,
        Some(&format!(
            "Replaces: xfer-2;to-tag={core_tag};from-tag=a-xfer-2"
        )),
    );
    assert_eq!(replacing.status, 200, "{replacing:?}");
    let sent: Vec<_> = recorder.requests();
    let replaces: Vec<&str> = sent
        .iter()
        .filter(|r| r.method == Method::Invite)
        .filter_map(|r| r.headers.first(&HeaderName::parse("Replaces")))
        .collect();
    assert_eq!(
        replaces,
        vec![format!(
            "{inside_call_id};to-tag={phone_tag};from-tag={core_inside_tag}"
        )],
        "the INVITE's Replaces names the inside dialog"
    );

    // Our Call-ID with tags that are not the dialog's: RFC 3891's no match, from the core.
    let wrong = call(
        &mut rig,
        "xfer-4",
        port + 6,
        Some("Replaces: xfer-2;to-tag=not-the-core;from-tag=a-xfer-2"),
    );
    assert_eq!(wrong.status, 481, "{wrong:?}");
    assert_eq!(rig.cluster.core().counter("transfer_refused"), 1);
    assert_eq!(
        recorder
            .requests()
            .iter()
            .filter(|r| r.method == Method::Invite)
            .count(),
        3,
        "the refused INVITE never went inside"
    );
}

#[test]
fn session_refreshes_cross_the_core_to_unified_cm_and_keep_the_call() {
    let recorder = Recorder::start();
    let mut rig = rig_with(14000, 499, 500, |_| {}, Some(&recorder));
    let (media, ok, edge_media, crypto) = establish(&mut rig, "refresh-1", 14500..15000);
    let port = media.local_addr().expect("addr").port();
    let timer = "Session-Expires: 90;refresher=uac\r\nSupported: timer";
    // A refresh by re-INVITE (the same media again), then one by UPDATE without a body.
    let reinvite = with_header(
        with_sdp(
            in_dialog(&rig.client, "INVITE", 2, &ok),
            &client_offer(port, 2, "sendrecv"),
        ),
        timer,
    );
    rig.client.send_raw(&reinvite).expect("re-INVITE");
    let refreshed = final_response(&mut rig.client);
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    rig.client
        .send_raw(&in_dialog(&rig.client, "ACK", 2, &ok))
        .expect("ACK");
    rig.client
        .send_raw(&with_header(
            in_dialog(&rig.client, "UPDATE", 3, &ok),
            timer,
        ))
        .expect("UPDATE");
    let updated = final_response(&mut rig.client);
    assert_eq!(updated.status, 200, "{updated:?}");
    let sent = recorder.requests();
    for method in [Method::Invite, Method::Update] {
        let refresh = sent
            .iter()
            .filter(|r| r.method == method)
            .find(|r| r.headers.to_addr().is_ok_and(|t| t.tag().is_some()))
            .unwrap_or_else(|| panic!("no in-dialog {method:?} reached Unified CM"));
        assert_eq!(
            refresh.headers.first(&HeaderName::SessionExpires),
            Some("90;refresher=uac"),
            "{method:?}"
        );
    }
    media_flows_both_ways(&rig, &media, edge_media, &crypto, 1, "after the refreshes");
}
