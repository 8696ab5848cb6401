//! Deterministic simulated-time tests of the RFC 3261 §17 state machines: retransmission
//! schedules, timeouts, 100 Trying, ACK generation, and a UAC/UAS pair over a lossy
//! simulated network.
#![allow(clippy::unwrap_used)]

use edgeway_sip::{
    Dialog, Host, Message, Method, Request, Response, TransactionConfig, TransactionEvent,
    TransactionId, TransactionLayer, TransactionState, Via,
};
use std::time::{Duration, Instant};

const INVITE: &str = "INVITE sip:bob@core.example.com SIP/2.0\r\n\
    Via: SIP/2.0/UDP edge.example.com:5060;branch=z9hG4bKinv1\r\n\
    Max-Forwards: 70\r\n\
    From: <sip:alice@example.com>;tag=a1\r\n\
    To: <sip:bob@example.com>\r\n\
    Call-ID: call-1@edge\r\n\
    CSeq: 10 INVITE\r\n\
    Contact: <sip:alice@edge.example.com>\r\n\
    Route: <sip:core.example.com;lr>\r\n\
    Content-Length: 0\r\n\r\n";

const OPTIONS: &str = "OPTIONS sip:core.example.com SIP/2.0\r\n\
    Via: SIP/2.0/UDP edge.example.com:5060;branch=z9hG4bKopt1\r\n\
    Max-Forwards: 70\r\n\
    From: <sip:edge.example.com>;tag=o1\r\n\
    To: <sip:core.example.com>\r\n\
    Call-ID: opt-1@edge\r\n\
    CSeq: 1 OPTIONS\r\n\
    Content-Length: 0\r\n\r\n";

fn request(s: &str) -> Request {
    match Message::parse(s.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type Layer = TransactionLayer<&'static str>;

fn layer() -> Layer {
    TransactionLayer::new(TransactionConfig::default())
}

fn drain_transmits(l: &mut Layer) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| l.poll_transmit())
        .map(|t| t.payload)
        .collect()
}

fn drain_events(l: &mut Layer) -> Vec<TransactionEvent<&'static str>> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

/// Runs timers up to `until`, recording (offset from t0, payload) of every transmit.
fn run_timers(l: &mut Layer, t0: Instant, until: Duration) -> Vec<(Duration, Vec<u8>)> {
    let mut sent = Vec::new();
    while let Some(at) = l.poll_timeout() {
        if at > t0 + until {
            break;
        }
        l.handle_timeout(at);
        for p in drain_transmits(l) {
            sent.push((at - t0, p));
        }
    }
    sent
}

/// Runs the timers up to `t0 + until` and expects the transaction's end, and nothing else.
fn terminates_by(l: &mut Layer, t0: Instant, until: Duration, id: TransactionId) {
    run_timers(l, t0, until);
    assert_eq!(drain_events(l), vec![TransactionEvent::Terminated { id }]);
}

fn parse(bytes: &[u8]) -> Message {
    Message::parse(bytes).unwrap()
}

#[test]
fn invite_client_timer_a_then_b() {
    let mut l = layer();
    let t0 = Instant::now();
    let id = l.start_client(t0, request(INVITE), "core", false).unwrap();
    assert_eq!(drain_transmits(&mut l).len(), 1);
    let sent = run_timers(&mut l, t0, Duration::from_secs(40));
    let at: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    // Timer A doubles from T1; Timer B fires at 64*T1 = 32 s.
    assert_eq!(at, [500, 1500, 3500, 7500, 15500, 31500]);
    let events = drain_events(&mut l);
    assert_eq!(
        events,
        vec![
            TransactionEvent::Timeout { id },
            TransactionEvent::Terminated { id }
        ]
    );
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn invite_client_non_2xx_generates_ack() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request(INVITE);
    let id = l.start_client(t0, inv.clone(), "core", false).unwrap();
    drain_transmits(&mut l);

    // 100 Trying stops Timer A.
    let trying = inv.make_response(100, "Trying", None);
    l.handle_message(t0 + ms(100), trying.into(), "core", false)
        .unwrap();
    assert_eq!(l.state(id), Some(TransactionState::Proceeding));
    assert!(
        run_timers(&mut l, t0, Duration::from_secs(5)).is_empty(),
        "no retransmission once proceeding"
    );

    let busy = inv.make_response(486, "Busy Here", Some("b1"));
    l.handle_message(t0 + ms(5000), busy.clone().into(), "core", false)
        .unwrap();
    assert_eq!(l.state(id), Some(TransactionState::Completed));
    let out = drain_transmits(&mut l);
    assert_eq!(out.len(), 1);
    let Message::Request(ack) = parse(&out[0]) else {
        panic!("ACK expected")
    };
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, inv.uri);
    assert_eq!(ack.headers.cseq().unwrap().to_string(), "10 ACK");
    assert_eq!(ack.headers.to_addr().unwrap().tag(), Some("b1"));
    assert_eq!(ack.headers.top_via().unwrap().branch(), Some("z9hG4bKinv1"));
    assert_eq!(ack.headers.via().unwrap().len(), 1);
    assert_eq!(ack.headers.routes().unwrap().len(), 1);

    let events = drain_events(&mut l);
    assert_eq!(events.len(), 2, "100 and 486 delivered");

    // A retransmitted 486 is answered with the same ACK and not delivered again.
    l.handle_message(t0 + ms(6000), busy.into(), "core", false)
        .unwrap();
    assert_eq!(drain_transmits(&mut l), out);
    assert!(drain_events(&mut l).is_empty());

    // Timer D: 32 s after the final response.
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + ms(5000) + Duration::from_secs(32))
    );
    terminates_by(&mut l, t0, Duration::from_secs(60), id);
}

#[test]
fn reliable_transport_disables_retransmission_and_zeroes_d() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request(INVITE);
    let id = l.start_client(t0, inv.clone(), "core", true).unwrap();
    drain_transmits(&mut l);
    // Only Timer B is armed.
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    l.handle_message(
        t0 + ms(50),
        inv.make_response(503, "Unavailable", Some("x")).into(),
        "core",
        true,
    )
    .unwrap();
    assert_eq!(drain_transmits(&mut l).len(), 1, "ACK");
    let events = drain_events(&mut l);
    assert!(matches!(events[0], TransactionEvent::Response { .. }));
    assert_eq!(events[1], TransactionEvent::Terminated { id });
    assert!(l.is_empty());
}

#[test]
fn invite_client_2xx_retransmissions_reach_the_tu() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request(INVITE);
    let id = l.start_client(t0, inv.clone(), "core", false).unwrap();
    let mut ok = inv.make_response(200, "OK", Some("b2"));
    ok.headers
        .push("Contact".into(), "<sip:bob@core.example.com>")
        .unwrap();
    l.handle_message(t0 + ms(300), ok.clone().into(), "core", false)
        .unwrap();
    assert_eq!(l.state(id), Some(TransactionState::Accepted));
    l.handle_message(t0 + ms(800), ok.clone().into(), "core", false)
        .unwrap();
    let responses = drain_events(&mut l)
        .into_iter()
        .filter(|e| matches!(e, TransactionEvent::Response { .. }))
        .count();
    assert_eq!(responses, 2, "each 2xx goes up so the TU re-sends its ACK");
    // The TU builds the ACK from the dialog.
    let dialog = Dialog::new_uac(&inv, &ok).unwrap();
    let via = Via::new(
        "UDP",
        Host::Domain("edge.example.com".into()),
        Some(5060),
        "z9hG4bKack1",
    );
    let ack = dialog.create_ack(10, &via).unwrap();
    l.send_stateless("core", &ack.into());
    assert_eq!(drain_transmits(&mut l).len(), 2, "INVITE + ACK");
    // Timer M.
    terminates_by(&mut l, t0, Duration::from_secs(40), id);
}

#[test]
fn non_invite_client_timer_e_and_k() {
    let mut l = layer();
    let t0 = Instant::now();
    let opt = request(OPTIONS);
    let id = l.start_client(t0, opt.clone(), "core", false).unwrap();
    drain_transmits(&mut l);
    let sent = run_timers(&mut l, t0, ms(12000));
    let at: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    // T1, 2T1, 4T1, then capped at T2.
    assert_eq!(at, [500, 1500, 3500, 7500, 11500]);
    // A provisional moves Timer E to T2 steps.
    l.handle_message(
        t0 + ms(12000),
        opt.make_response(180, "x", None).into(),
        "core",
        false,
    )
    .unwrap();
    assert_eq!(l.state(id), Some(TransactionState::Proceeding));
    let sent = run_timers(&mut l, t0, ms(20000));
    let at: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    assert_eq!(at, [15500, 19500]);
    l.handle_message(
        t0 + ms(20000),
        opt.make_response(200, "OK", Some("c")).into(),
        "core",
        false,
    )
    .unwrap();
    assert_eq!(l.state(id), Some(TransactionState::Completed));
    // Timer K = T4.
    assert_eq!(l.poll_timeout(), Some(t0 + ms(25000)));
    run_timers(&mut l, t0, ms(30000));
    assert!(l.is_empty());
}

#[test]
fn non_invite_client_timer_f() {
    let mut l = layer();
    let t0 = Instant::now();
    let id = l.start_client(t0, request(OPTIONS), "core", false).unwrap();
    assert_eq!(drain_transmits(&mut l).len(), 1);
    let sent = run_timers(&mut l, t0, Duration::from_secs(40));
    assert_eq!(
        sent.len(),
        10,
        "E at 0.5,1.5,3.5,7.5 then every 4 s until F at 32 s"
    );
    assert_eq!(
        drain_events(&mut l),
        vec![
            TransactionEvent::Timeout { id },
            TransactionEvent::Terminated { id }
        ]
    );
}

#[test]
fn invite_server_100_trying_absorbs_retransmissions() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request(INVITE);
    l.handle_message(t0, inv.clone().into(), "edge", false)
        .unwrap();
    let events = drain_events(&mut l);
    let [TransactionEvent::Request { id, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    let id = *id;
    // A retransmission before any response: absorbed, nothing to resend yet.
    l.handle_message(t0 + ms(100), inv.clone().into(), "edge", false)
        .unwrap();
    assert!(drain_events(&mut l).is_empty());
    assert!(drain_transmits(&mut l).is_empty());
    // The TU is slow: the transaction sends 100 Trying after 200 ms.
    l.handle_timeout(t0 + ms(200));
    let out = drain_transmits(&mut l);
    let Message::Response(trying) = parse(&out[0]) else {
        panic!()
    };
    assert_eq!(trying.status, 100);
    assert_eq!(trying.headers.to_addr().unwrap().tag(), None);
    // Later retransmissions get the 100 again and still do not reach the TU.
    l.handle_message(t0 + ms(600), inv.clone().into(), "edge", false)
        .unwrap();
    assert_eq!(drain_transmits(&mut l), out);
    assert!(drain_events(&mut l).is_empty());

    // A final non-2xx: Timer G retransmits until the ACK.
    let busy = inv.make_response(486, "Busy Here", Some("s1"));
    l.respond(t0 + ms(1000), id, busy.clone()).unwrap();
    drain_transmits(&mut l);
    let sent = run_timers(&mut l, t0, ms(13000));
    let at: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    assert_eq!(at, [1500, 2500, 4500, 8500, 12500]);
    let ack = inv.make_ack_for_non_2xx(&busy).unwrap();
    l.handle_message(t0 + ms(13000), ack.into(), "edge", false)
        .unwrap();
    assert_eq!(l.state(id), Some(TransactionState::Confirmed));
    assert!(
        drain_events(&mut l).is_empty(),
        "the ACK for a non-2xx stays in the transaction"
    );
    // Timer I = T4.
    assert_eq!(l.poll_timeout(), Some(t0 + ms(18000)));
    terminates_by(&mut l, t0, ms(20000), id);
}

#[test]
fn invite_server_timer_h_without_ack() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request(INVITE);
    l.handle_message(t0, inv.clone().into(), "edge", true)
        .unwrap();
    let Some(TransactionEvent::Request { id, .. }) = l.poll_event() else {
        panic!()
    };
    l.respond(t0, id, inv.make_response(404, "Not Found", Some("s")))
        .unwrap();
    assert_eq!(drain_transmits(&mut l).len(), 1);
    // Reliable: no Timer G, Timer H at 64*T1.
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    run_timers(&mut l, t0, Duration::from_secs(33));
    assert_eq!(
        drain_events(&mut l),
        vec![
            TransactionEvent::Timeout { id },
            TransactionEvent::Terminated { id }
        ]
    );
}

#[test]
fn invite_server_2xx_retransmitted_until_ack() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request(INVITE);
    l.handle_message(t0, inv.clone().into(), "edge", false)
        .unwrap();
    let Some(TransactionEvent::Request { id, .. }) = l.poll_event() else {
        panic!()
    };
    let mut ok = inv.make_response(200, "OK", Some("s2"));
    ok.headers
        .push("Contact".into(), "<sip:bob@core.example.com>")
        .unwrap();
    l.respond(t0 + ms(100), id, ok.clone()).unwrap();
    assert_eq!(l.state(id), Some(TransactionState::Accepted));
    drain_transmits(&mut l);
    let sent = run_timers(&mut l, t0, ms(4000));
    assert_eq!(sent.len(), 3, "2xx at 0.6, 1.6, 3.6 s");
    // The ACK for a 2xx has its own branch; it goes to the TU and stops retransmission.
    let dialog = Dialog::new_uac(&inv, &ok).unwrap();
    let via = Via::new(
        "UDP",
        Host::Domain("edge.example.com".into()),
        Some(5060),
        "z9hG4bKack2",
    );
    let ack = dialog.create_ack(10, &via).unwrap();
    l.handle_message(t0 + ms(4000), ack.into(), "edge", false)
        .unwrap();
    let events = drain_events(&mut l);
    assert!(
        matches!(events.as_slice(), [TransactionEvent::Ack { transaction: Some(t), .. }] if *t == id)
    );
    assert!(run_timers(&mut l, t0, ms(31000)).is_empty());
    // Timer L ends it, without a timeout since the ACK came.
    terminates_by(&mut l, t0, ms(33000), id);
}

#[test]
fn non_invite_server_and_timer_j() {
    let mut l = layer();
    let t0 = Instant::now();
    let opt = request(OPTIONS);
    l.handle_message(t0, opt.clone().into(), "edge", false)
        .unwrap();
    let Some(TransactionEvent::Request { id, .. }) = l.poll_event() else {
        panic!()
    };
    l.handle_message(t0 + ms(500), opt.clone().into(), "edge", false)
        .unwrap();
    assert!(
        drain_transmits(&mut l).is_empty(),
        "Trying: retransmissions absorbed"
    );
    l.respond(t0 + ms(600), id, opt.make_response(200, "OK", Some("t")))
        .unwrap();
    let first = drain_transmits(&mut l);
    l.handle_message(t0 + ms(1500), opt.clone().into(), "edge", false)
        .unwrap();
    assert_eq!(
        drain_transmits(&mut l),
        first,
        "Completed: the final response is resent"
    );
    assert!(l
        .respond(t0 + ms(1600), id, opt.make_response(500, "x", None))
        .is_err());
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + ms(600) + Duration::from_secs(32))
    );
    terminates_by(&mut l, t0, Duration::from_secs(40), id);
}

#[test]
fn cancel_stray_response_and_transport_error() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request(INVITE);
    l.handle_message(t0, inv.clone().into(), "edge", true)
        .unwrap();
    let Some(TransactionEvent::Request { id, .. }) = l.poll_event() else {
        panic!()
    };
    let cancel = inv.make_cancel().unwrap();
    assert_eq!(l.find_invite_for_cancel(&cancel), Some(id));
    l.handle_message(t0, cancel.into(), "edge", true).unwrap();
    assert!(
        matches!(l.poll_event(), Some(TransactionEvent::Request { request, .. }) if request.method == Method::Cancel)
    );

    let stray = request(OPTIONS).make_response(200, "OK", None);
    l.handle_message(t0, stray.into(), "core", true).unwrap();
    assert!(matches!(
        l.poll_event(),
        Some(TransactionEvent::StrayResponse { .. })
    ));

    l.handle_transport_error(t0, id);
    assert_eq!(
        drain_events(&mut l),
        vec![
            TransactionEvent::TransportError { id },
            TransactionEvent::Terminated { id }
        ]
    );
    assert!(l
        .start_client(
            t0,
            inv.make_ack_for_non_2xx(&inv.make_response(400, "x", None))
                .unwrap(),
            "c",
            true
        )
        .is_err());
}

/// A UAC and a UAS joined by a simulated UDP network that drops chosen packets.
struct Pair {
    uac: Layer,
    uas: Layer,
    now: Instant,
    sent_to_uas: usize,
    sent_to_uac: usize,
}

impl Pair {
    fn new() -> Self {
        Pair {
            uac: layer(),
            uas: layer(),
            now: Instant::now(),
            sent_to_uas: 0,
            sent_to_uac: 0,
        }
    }

    /// Moves packets and fires timers until both sides are idle or `limit` passes.
    /// `drop_to_uas(n)` / `drop_to_uac(n)` decide the fate of the n-th packet each way.
    fn run(
        &mut self,
        limit: Duration,
        drop_to_uas: impl Fn(usize) -> bool,
        drop_to_uac: impl Fn(usize) -> bool,
        mut uas_tu: impl FnMut(&mut Layer, Instant, TransactionEvent<&'static str>),
        mut uac_tu: impl FnMut(&mut Layer, Instant, TransactionEvent<&'static str>),
    ) {
        let end = self.now + limit;
        loop {
            let mut moved = false;
            while let Some(t) = self.uac.poll_transmit() {
                moved = true;
                self.sent_to_uas += 1;
                if !drop_to_uas(self.sent_to_uas) {
                    self.uas
                        .handle_message(self.now, parse(&t.payload), "uac", false)
                        .unwrap();
                }
            }
            while let Some(t) = self.uas.poll_transmit() {
                moved = true;
                self.sent_to_uac += 1;
                if !drop_to_uac(self.sent_to_uac) {
                    self.uac
                        .handle_message(self.now, parse(&t.payload), "uas", false)
                        .unwrap();
                }
            }
            while let Some(e) = self.uas.poll_event() {
                moved = true;
                uas_tu(&mut self.uas, self.now, e);
            }
            while let Some(e) = self.uac.poll_event() {
                moved = true;
                uac_tu(&mut self.uac, self.now, e);
            }
            if moved {
                continue;
            }
            let next = [self.uac.poll_timeout(), self.uas.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= end => {
                    // 10 ms of one-way latency granularity is irrelevant here: timers only.
                    self.now = at;
                    self.uac.handle_timeout(at);
                    self.uas.handle_timeout(at);
                }
                _ => break,
            }
        }
    }
}

#[test]
fn lossy_network_call_setup_completes() {
    let mut p = Pair::new();
    let inv = request(INVITE);
    let id = p
        .uac
        .start_client(p.now, inv.clone(), "uas", false)
        .unwrap();
    let mut final_status = None;
    let mut uas_acked = false;
    p.run(
        Duration::from_secs(60),
        // Lose the first two INVITEs and the first ACK.
        |n| n <= 2 || n == 4,
        // Lose the first 200.
        |n| n == 1,
        |l, now, e| match e {
            TransactionEvent::Request { id, request, .. } => {
                let mut ok = request.make_response(200, "OK", Some("uas-tag"));
                ok.headers
                    .push("Contact".into(), "<sip:bob@core.example.com>")
                    .unwrap();
                l.respond(now, id, ok).unwrap();
            }
            TransactionEvent::Ack { transaction, .. } => uas_acked = transaction.is_some(),
            TransactionEvent::Timeout { .. } => panic!("UAS timed out"),
            _ => {}
        },
        |l, _now, e| {
            if let TransactionEvent::Response { response, .. } = e {
                final_status = Some(response.status);
                // The TU answers every 2xx (including retransmissions) with an ACK.
                let d = Dialog::new_uac(&inv, &response).unwrap();
                let via = Via::new(
                    "UDP",
                    Host::Domain("edge.example.com".into()),
                    Some(5060),
                    "z9hG4bKack",
                );
                l.send_stateless("uas", &d.create_ack(10, &via).unwrap().into());
            }
        },
    );
    let _ = id;
    assert_eq!(final_status, Some(200));
    assert!(uas_acked, "the UAS saw the 2xx acknowledged");
    assert!(
        p.uac.is_empty() && p.uas.is_empty(),
        "all transactions ended"
    );
    // 3 INVITEs (two lost), then ACKs; the UAS retransmitted its 200 at least once.
    assert!(p.sent_to_uas >= 5);
    assert!(p.sent_to_uac >= 2);
}

#[test]
fn response_helpers_round_trip() {
    let inv = request(INVITE);
    let r: Response = inv.make_response(183, "Session Progress", Some("z"));
    assert!(r.is_provisional());
    assert_eq!(parse(&r.to_bytes()), Message::Response(r));
}
