//! A B2BUA call from its first INVITE: the new leg's identity, early dialogs with PRACK
//! (RAck translated) and UPDATE, the answer and its end-to-end ACK, INFO/REFER/NOTIFY in
//! the dialogs, CANCEL with the 487 and its hop-by-hop ACK, the setup give-up and the 408
//! for a request the far leg never answers; session timers (RFC 4028) on a fake clock.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use edgeway_b2bua::{B2bCall, Leg, NewLeg, SetupState, TimerError};
use edgeway_sip::{HeaderName, Message, Method, NameAddr, Request, Response, Uri, Via};

fn request(text: &str) -> Request {
    match Message::parse(text.replace('\n', "\r\n").as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

/// The client's INVITE as the core receives it from the edge.
fn client_invite() -> Request {
    request(
        "INVITE sip:1001@example.com SIP/2.0\n\
         Via: SIP/2.0/TLS edge.example.com:5061;branch=z9hG4bK-ewe1;ewf=3\n\
         Via: SIP/2.0/TLS 192.0.2.1:7001;branch=z9hG4bK-c1\n\
         Record-Route: <sip:ewf3@edge.example.com:5061;transport=tls;lr;ob>\n\
         Max-Forwards: 68\n\
         From: \"Jabber\" <sip:jabber@example.com>;tag=client1\n\
         To: <sip:1001@example.com>\n\
         Call-ID: out-1\n\
         CSeq: 10 INVITE\n\
         Contact: <sip:jabber@192.0.2.1:7001;transport=tls>\n\
         Supported: 100rel, timer\n\
         Session-Expires: 1800\n\
         P-Asserted-Identity: <sip:jabber@example.com>\n\
         Allow: INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, INFO, REFER, NOTIFY\n\
         Content-Length: 0\n\n",
    )
}

fn via(branch: &str) -> Via {
    Via::parse(&format!(
        "SIP/2.0/TCP core.example.com:5060;branch={branch}"
    ))
    .unwrap()
}

fn contact(uri: &str) -> NameAddr {
    NameAddr::parse(uri).unwrap()
}

fn start() -> (B2bCall, Request) {
    let leg = NewLeg {
        call_id: "in-1@core.example.com".into(),
        from_tag: "core-in".into(),
        answer_tag: "core-out".into(),
        via: via("z9hG4bK-ewi1"),
        contact: contact("<sip:core.example.com:5060;transport=tcp>"),
        answer_contact: contact("<sip:core.example.com:5060;transport=tls>"),
        target: Uri::parse("sip:1001@example.com").unwrap(),
        routes: Vec::new(),
    };
    B2bCall::start(
        Leg::Outside,
        &client_invite(),
        leg,
        Some(b"v=0\r\n".to_vec()),
    )
    .unwrap()
}

/// The phone's response to `req` with its tag and Contact.
fn phone(req: &Request, status: u16, extra: &[(&str, &str)]) -> Response {
    let mut r = req.make_response(status, "x", Some("phone1"));
    r.headers
        .push(HeaderName::Contact, "<sip:1001@10.1.1.9:5060>")
        .unwrap();
    for (n, v) in extra {
        r.headers.push(HeaderName::parse(n), *v).unwrap();
    }
    r
}

fn ids(r: &Request) -> (String, Option<String>, Option<String>, u32) {
    let h = &r.headers;
    (
        h.call_id().unwrap().to_owned(),
        h.from_addr().unwrap().tag().map(str::to_owned),
        h.to_addr().unwrap().tag().map(str::to_owned),
        h.cseq().unwrap().seq,
    )
}

/// A request from the client in its dialog with the core (`method`, CSeq `seq`).
fn from_client(method: &str, seq: u32, extra: &str) -> Request {
    request(&format!(
        "{method} sip:core.example.com:5060;transport=tls SIP/2.0\n\
         Via: SIP/2.0/TLS edge.example.com:5061;branch=z9hG4bK-ewe{seq}{method};ewf=3\n\
         Max-Forwards: 69\n\
         From: <sip:jabber@example.com>;tag=client1\n\
         To: <sip:1001@example.com>;tag=core-out\n\
         Call-ID: out-1\n\
         CSeq: {seq} {method}\n\
         {extra}Content-Length: 0\n\n"
    ))
}

/// A request from the phone in its dialog with the core.
fn from_phone(method: &str, seq: u32, extra: &str) -> Request {
    request(&format!(
        "{method} sip:core.example.com:5060;transport=tcp SIP/2.0\n\
         Via: SIP/2.0/TCP 10.1.1.9:5060;branch=z9hG4bK-p{seq}\n\
         Max-Forwards: 70\n\
         From: <sip:1001@example.com>;tag=phone1\n\
         To: \"Jabber\" <sip:jabber@example.com>;tag=core-in\n\
         Call-ID: in-1@core.example.com\n\
         CSeq: {seq} {method}\n\
         {extra}Content-Length: 0\n\n"
    ))
}

#[test]
fn the_new_leg_has_its_own_identity_and_keeps_the_callers() {
    let (call, out) = start();
    assert_eq!(call.state(), SetupState::Calling);
    assert_eq!(out.uri.to_string(), "sip:1001@example.com");
    assert_eq!(
        ids(&out),
        (
            "in-1@core.example.com".into(),
            Some("core-in".into()),
            None,
            1
        )
    );
    let h = &out.headers;
    assert_eq!(
        h.from_addr().unwrap().uri.to_string(),
        "sip:jabber@example.com"
    );
    assert_eq!(
        h.from_addr().unwrap().display_name.as_deref(),
        Some("Jabber")
    );
    assert_eq!(h.max_forwards().unwrap(), Some(68));
    assert_eq!(h.via().unwrap().len(), 1, "only the core's Via");
    assert!(
        h.first(&HeaderName::RecordRoute).is_none(),
        "the edge's Record-Route stays out"
    );
    assert_eq!(
        h.first(&HeaderName::Contact),
        Some("<sip:core.example.com:5060;transport=tcp>")
    );
    for kept in [
        "Supported",
        "Session-Expires",
        "P-Asserted-Identity",
        "Allow",
    ] {
        assert!(
            h.first(&HeaderName::parse(kept)).is_some(),
            "{kept} is end to end"
        );
    }
    assert_eq!(out.body, b"v=0\r\n");
    let text = String::from_utf8(out.to_bytes()).unwrap();
    assert!(
        !text.contains("out-1") && !text.contains("192.0.2.1"),
        "{text}"
    );
    assert_eq!(call.call_id(Leg::Outside), "out-1");
    assert_eq!(call.call_id(Leg::Inside), "in-1@core.example.com");
    assert_eq!(call.trying().status, 100);
}

#[test]
fn early_dialogs_prack_update_answer_ack_and_in_dialog_requests_cross() {
    let (mut call, out) = start();
    // The initial INVITE again (a retransmission) is absorbed, not refused.
    assert_eq!(
        call.request(Leg::Outside, &client_invite(), &via("x"), None)
            .unwrap(),
        None
    );
    // A reliable 183: both early dialogs; the caller sees our tag and Contact, RSeq kept.
    let p183 = phone(&out, 183, &[("RSeq", "1"), ("Require", "100rel")]);
    assert!(call.is_setup_response(&p183));
    let o = call.setup_response(&p183, None).unwrap();
    let r = o.to_caller.unwrap();
    assert_eq!(r.status, 183);
    assert_eq!(r.headers.to_addr().unwrap().tag(), Some("core-out"));
    assert_eq!(r.headers.call_id().unwrap(), "out-1");
    assert_eq!(r.headers.cseq().unwrap().seq, 10);
    assert_eq!(r.headers.first(&HeaderName::RSeq), Some("1"));
    assert_eq!(r.headers.first(&HeaderName::Require), Some("100rel"));
    assert_eq!(
        r.headers.first(&HeaderName::Contact),
        Some("<sip:core.example.com:5060;transport=tls>")
    );
    assert!(
        r.headers.first(&HeaderName::RecordRoute).is_some(),
        "the edge's Record-Route goes back to the client"
    );
    assert_eq!(call.state(), SetupState::Early);
    // PRACK: the RAck names the caller's INVITE (10); inside it names ours (1).
    let prack = from_client("PRACK", 11, "RAck: 1 10 INVITE\n");
    let fwd = call
        .request(Leg::Outside, &prack, &via("z9hG4bK-ewi2"), None)
        .unwrap()
        .unwrap();
    assert_eq!(fwd.method, Method::Prack);
    assert_eq!(
        fwd.uri.to_string(),
        "sip:1001@10.1.1.9:5060",
        "the phone's Contact"
    );
    assert_eq!(
        ids(&fwd),
        (
            "in-1@core.example.com".into(),
            Some("core-in".into()),
            Some("phone1".into()),
            2
        )
    );
    assert_eq!(fwd.headers.first(&HeaderName::RAck), Some("1 1 INVITE"));
    let ok = call
        .response(Leg::Inside, &fwd.make_response(200, "OK", None), None)
        .unwrap();
    assert_eq!((ok.status, ok.headers.cseq().unwrap().seq), (200, 11));
    // UPDATE in the early dialog (before the answer), from the caller.
    let update = from_client("UPDATE", 12, "");
    let fwd = call
        .request(
            Leg::Outside,
            &update,
            &via("z9hG4bK-ewi3"),
            Some(b"v=0\r\n".to_vec()),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        (fwd.method.clone(), fwd.headers.cseq().unwrap().seq),
        (Method::Update, 3)
    );
    let ok = call
        .response(Leg::Inside, &phone(&fwd, 200, &[]), None)
        .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.headers.first(&HeaderName::Contact),
        Some("<sip:core.example.com:5060;transport=tls>"),
        "a 2xx to a target refresh carries our Contact"
    );
    // The answer: confirmed; the client's ACK (CSeq 10) is the ACK of our INVITE (CSeq 1).
    let o = call.setup_response(&phone(&out, 200, &[]), None).unwrap();
    assert!(o.answered && !o.ended && o.to_callee.is_none());
    assert_eq!(o.to_caller.unwrap().status, 200);
    assert_eq!(call.state(), SetupState::Confirmed);
    let ack = call
        .request(
            Leg::Outside,
            &from_client("ACK", 10, ""),
            &via("z9hG4bK-ewi4"),
            None,
        )
        .unwrap()
        .unwrap();
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ids(&ack).3, 1);
    // Glare: a re-INVITE from the phone while the client's is still unanswered is refused.
    let reinvite = call
        .request(
            Leg::Outside,
            &from_client("INVITE", 13, ""),
            &via("z9hG4bK-ewi6"),
            None,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        call.request(Leg::Inside, &from_phone("INVITE", 4, ""), &via("x"), None),
        Err(edgeway_b2bua::CallError::Pair(
            edgeway_b2bua::PairError::Glare(Leg::Inside)
        ))
    );
    call.response(Leg::Inside, &phone(&reinvite, 200, &[]), None)
        .unwrap();
    call.request(
        Leg::Outside,
        &from_client("ACK", 13, ""),
        &via("z9hG4bK-ewi7"),
        None,
    )
    .unwrap()
    .unwrap();
    // INFO and REFER from the phone reach the client in the outside dialog's CSeq space.
    let info = call
        .request(
            Leg::Inside,
            &from_phone("INFO", 5, ""),
            &via("z9hG4bK-ewo1"),
            None,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        info.uri.to_string(),
        "sip:jabber@192.0.2.1:7001;transport=tls"
    );
    assert_eq!(
        info.headers.routes().unwrap()[0].uri.to_string(),
        "sip:ewf3@edge.example.com:5061;transport=tls;lr;ob",
        "through the edge's flow"
    );
    assert_eq!(
        ids(&info),
        (
            "out-1".into(),
            Some("core-out".into()),
            Some("client1".into()),
            1
        )
    );
    let refer = call
        .request(
            Leg::Inside,
            &from_phone("REFER", 6, "Refer-To: <sip:1002@example.com>\n"),
            &via("z9hG4bK-ewo2"),
            None,
        )
        .unwrap()
        .unwrap();
    assert_eq!(ids(&refer).3, 2);
    assert_eq!(
        refer.headers.first(&HeaderName::parse("Refer-To")),
        Some("<sip:1002@example.com>")
    );
    let accepted = call
        .response(
            Leg::Outside,
            &refer.make_response(202, "Accepted", None),
            None,
        )
        .unwrap();
    assert_eq!(
        (accepted.status, accepted.headers.cseq().unwrap().seq),
        (202, 6)
    );
    // The NOTIFY of the transfer's progress comes back translated.
    let notify = call
        .request(
            Leg::Outside,
            &from_client(
                "NOTIFY",
                14,
                "Event: refer\nSubscription-State: terminated;reason=noresource\n",
            ),
            &via("z9hG4bK-ewi5"),
            None,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        notify.headers.first(&HeaderName::parse("Event")),
        Some("refer")
    );
    assert_eq!(ids(&notify).0, "in-1@core.example.com");
    // The INFO is never answered: after the timeout its sender gets 408.
    let t0 = Instant::now();
    assert!(call.expire(t0, Duration::from_secs(32)).is_empty());
    let gone = call.expire(t0 + Duration::from_secs(33), Duration::from_secs(32));
    let statuses: Vec<_> = gone
        .iter()
        .map(|(leg, r)| (*leg, r.status, r.headers.cseq().unwrap().method))
        .collect();
    assert!(
        statuses.contains(&(Leg::Inside, 408, Method::Info)),
        "{statuses:?}"
    );
    // Hang up from here: a BYE on each leg, each in its own dialog.
    let byes = call.hang_up(
        [&via("z9hG4bK-ewo9"), &via("z9hG4bK-ewi9")],
        "SIP;cause=408",
    );
    let legs: Vec<_> = byes.iter().map(|(l, b)| (*l, ids(b).0)).collect();
    assert_eq!(
        legs,
        vec![
            (Leg::Outside, "out-1".to_owned()),
            (Leg::Inside, "in-1@core.example.com".to_owned())
        ]
    );
}

#[test]
fn cancel_sends_a_cancel_of_the_new_invite_and_the_487_comes_back_acked_hop_by_hop() {
    let (mut call, out) = start();
    call.setup_response(&phone(&out, 180, &[]), None).unwrap();
    let cancel = client_invite().make_cancel().unwrap();
    let (ok, fwd) = call.cancel(&cancel);
    assert_eq!(ok.status, 200);
    let fwd = fwd.expect("CANCEL of the inside INVITE");
    assert_eq!(fwd.method, Method::Cancel);
    assert_eq!(
        fwd.headers.top_via().unwrap().branch(),
        out.headers.top_via().unwrap().branch(),
        "same branch as the INVITE it cancels"
    );
    assert_eq!(call.state(), SetupState::Cancelling);
    // The phone's 200 to the CANCEL stays here; its 487 goes back and is ACKed here.
    assert!(call
        .setup_response(&fwd.make_response(200, "OK", None), None)
        .unwrap()
        .to_caller
        .is_none());
    let o = call.setup_response(&phone(&out, 487, &[]), None).unwrap();
    assert!(o.ended);
    let back = o.to_caller.unwrap();
    assert_eq!(
        (back.status, back.headers.call_id().unwrap()),
        (487, "out-1")
    );
    let ack = o.to_callee.unwrap();
    assert_eq!((ack.method.clone(), ids(&ack).3), (Method::Ack, 1));
    assert_eq!(ack.headers.to_addr().unwrap().tag(), Some("phone1"));
    // The client's ACK for the 487 ends at the core.
    let client_ack = from_client("ACK", 10, "");
    assert_eq!(
        call.request(Leg::Outside, &client_ack, &via("x"), None)
            .unwrap(),
        None
    );
    assert_eq!(call.state(), SetupState::Ended);
}

#[test]
fn an_unanswered_call_is_given_up_with_408_and_cancel_and_failures_map_back() {
    let (mut call, out) = start();
    let (resp, cancel) = call.give_up();
    assert_eq!(resp.unwrap().status, 408);
    assert_eq!(cancel.unwrap().method, Method::Cancel);
    // The 487 that follows is ACKed but nothing more reaches the caller.
    let o = call.setup_response(&phone(&out, 487, &[]), None).unwrap();
    assert!(o.to_caller.is_none() && o.to_callee.is_some());

    let (mut call, out) = start();
    let busy = phone(&out, 486, &[("Retry-After", "30")]);
    let o = call.setup_response(&busy, None).unwrap();
    let back = o.to_caller.unwrap();
    assert_eq!(back.status, 486);
    assert_eq!(back.headers.first(&HeaderName::RetryAfter), Some("30"));
    assert!(o.ended && o.to_callee.is_some());
    // Nothing in a dialog before there is one.
    let (mut call, _) = start();
    assert!(call
        .request(Leg::Outside, &from_client("BYE", 11, ""), &via("x"), None)
        .is_err());
}

#[test]
fn an_answer_the_media_plan_refuses_goes_back_as_the_refusal_and_the_callee_is_acked_and_hung_up() {
    let (mut call, out) = start();
    let answer = phone(&out, 200, &[]);
    let mut refusal = answer.clone();
    refusal.status = 488;
    refusal.reason = "Not Acceptable Here".into();
    refusal
        .headers
        .push(HeaderName::Warning, "302 core1 \"SRTP is required\"")
        .unwrap();
    let (back, to_callee) = call
        .refuse_answer(&answer, &refusal, [&via("z9hG4bK-a"), &via("z9hG4bK-b")])
        .unwrap();
    assert_eq!(back.status, 488);
    assert_eq!(back.headers.call_id().unwrap(), "out-1");
    assert_eq!(
        back.headers.first(&HeaderName::Warning),
        Some("302 core1 \"SRTP is required\"")
    );
    let methods: Vec<_> = to_callee
        .iter()
        .map(|r| (r.method.clone(), ids(r)))
        .collect();
    assert_eq!(
        methods,
        vec![
            (
                Method::Ack,
                (
                    "in-1@core.example.com".into(),
                    Some("core-in".into()),
                    Some("phone1".into()),
                    1
                )
            ),
            (
                Method::Bye,
                (
                    "in-1@core.example.com".into(),
                    Some("core-in".into()),
                    Some("phone1".into()),
                    2
                )
            ),
        ]
    );
    assert_eq!(call.state(), SetupState::Ended);
}

#[test]
fn a_session_interval_with_no_refresh_expires_the_call_and_refreshes_restart_it() {
    let secs = Duration::from_secs;
    let t0 = Instant::now();
    let (mut call, out) = start();
    // Ringing does not start the timer; the answer does, with its Session-Expires.
    let ringing = phone(&out, 180, &[("Session-Expires", "90;refresher=uac")]);
    call.session_response(t0, &ringing).unwrap();
    assert_eq!(call.session_timer().expires_at(), None);
    let ok = phone(&out, 200, &[("Session-Expires", "90;refresher=uac")]);
    call.setup_response(&ok, None).unwrap();
    call.session_response(t0, &ok).unwrap();
    assert_eq!(call.session_timer().interval(), Some(secs(90)));
    assert!(!call.session_expired(t0 + secs(89)));
    assert!(call.session_expired(t0 + secs(90)), "no refresh in 90 s");

    // The client refreshes at 60 s with a re-INVITE: its 2xx (from the phone's leg, as it
    // crosses) restarts the interval; an UPDATE at 140 s does too.
    let reinvite = call
        .request(
            Leg::Outside,
            &from_client("INVITE", 11, ""),
            &via("z9hG4bK-r1"),
            None,
        )
        .unwrap()
        .unwrap();
    let refreshed = phone(&reinvite, 200, &[("Session-Expires", "90;refresher=uac")]);
    call.session_response(t0 + secs(60), &refreshed).unwrap();
    assert!(!call.session_expired(t0 + secs(149)));
    let update = call
        .request(
            Leg::Outside,
            &from_client("UPDATE", 12, ""),
            &via("z9hG4bK-u1"),
            None,
        )
        .unwrap()
        .unwrap();
    call.session_response(
        t0 + secs(140),
        &phone(&update, 200, &[("Session-Expires", "120")]),
    )
    .unwrap();
    assert!(!call.session_expired(t0 + secs(259)));
    assert!(
        call.session_expired(t0 + secs(260)),
        "the new interval: 120 s"
    );
    // A refused refresh (491) or a 2xx to another method is no refresh.
    call.session_response(t0 + secs(250), &phone(&update, 491, &[]))
        .unwrap();
    let info = call
        .request(
            Leg::Outside,
            &from_client("INFO", 13, ""),
            &via("z9hG4bK-i1"),
            None,
        )
        .unwrap()
        .unwrap();
    call.session_response(t0 + secs(250), &phone(&info, 200, &[]))
        .unwrap();
    assert!(call.session_expired(t0 + secs(260)));

    // Below RFC 4028's 90 s floor: enforced as 90 s. Not a number: refused, counted by
    // the caller, the interval unchanged (the 2xx is still a refresh).
    call.session_response(
        t0 + secs(300),
        &phone(&update, 200, &[("Session-Expires", "5")]),
    )
    .unwrap();
    assert_eq!(call.session_timer().interval(), Some(secs(90)));
    for bad in ["abc", "-5", "0", "+9", " ;refresher=uas", "99999999999"] {
        let err = call
            .session_response(
                t0 + secs(300),
                &phone(&update, 200, &[("Session-Expires", bad)]),
            )
            .unwrap_err();
        assert!(
            matches!(err, TimerError::BadSessionExpires { .. }),
            "{bad}: {err}"
        );
    }
    assert_eq!(call.session_timer().interval(), Some(secs(90)));
    // A 2xx with no Session-Expires: the session no longer expires.
    call.session_response(t0 + secs(300), &phone(&update, 200, &[]))
        .unwrap();
    assert!(!call.session_expired(t0 + secs(100_000)));
}

#[test]
fn a_call_not_answered_never_expires_by_its_session_timer() {
    let t0 = Instant::now();
    let (mut call, out) = start();
    let early = phone(&out, 183, &[("Session-Expires", "90")]);
    call.setup_response(&early, None).unwrap();
    call.session_response(t0, &early).unwrap();
    assert!(!call.session_expired(t0 + Duration::from_secs(1000)));
}
