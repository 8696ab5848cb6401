//! The B2BUA's two dialogs: in-dialog requests (re-INVITE with its ACK, UPDATE, REFER,
//! BYE) translated leg to leg with each leg's Call-ID, tags and CSeq space, responses
//! mapped back onto the original request, and what does not belong refused. Attended
//! transfer: `Replaces` (RFC 3891) and a Refer-To's `?Replaces=` mapped from one leg's
//! dialog identifiers to the other's, in both directions.
#![allow(clippy::unwrap_used)]

use edgeway_b2bua::{
    refer_to_replaces, rewrite_refer_to, DialogPair, Leg, PairError, Replaces, ReplacesError,
};
use edgeway_sip::{Dialog, HeaderName, Message, Method, Request, Response, Via};

fn request(text: &str) -> Request {
    match Message::parse(text.replace('\n', "\r\n").as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

fn with_contact(mut r: Response, contact: &str) -> Response {
    r.headers.push(HeaderName::Contact, contact).unwrap();
    r
}

/// Outside: the core is UAS of the edge's INVITE; inside: UAC of its own to the phone.
fn pair() -> DialogPair {
    let out_invite = request(
        "INVITE sip:1001@example.com SIP/2.0\n\
         Via: SIP/2.0/TLS 172.16.0.1:7001;branch=z9hG4bK-e1\n\
         Max-Forwards: 69\n\
         From: <sip:jabber@example.com>;tag=client1\n\
         To: <sip:1001@example.com>\n\
         Call-ID: out-call-1\n\
         CSeq: 10 INVITE\n\
         Contact: <sip:jabber@172.16.0.1:7001;transport=tls>\n\
         Content-Length: 0\n\n",
    );
    let ok = with_contact(
        out_invite.make_response(200, "OK", Some("core-out")),
        "<sip:core@172.16.0.2:5061;transport=tls>",
    );
    let outside = Dialog::new_uas(&out_invite, &ok).unwrap();
    let in_invite = request(
        "INVITE sip:1001@10.0.0.10 SIP/2.0\n\
         Via: SIP/2.0/TCP 10.0.0.2:5060;branch=z9hG4bK-i1\n\
         Max-Forwards: 70\n\
         From: <sip:jabber@example.com>;tag=core-in\n\
         To: <sip:1001@example.com>\n\
         Call-ID: in-call-1\n\
         CSeq: 1 INVITE\n\
         Contact: <sip:core@10.0.0.2:5060;transport=tcp>\n\
         Content-Length: 0\n\n",
    );
    let ok = with_contact(
        in_invite.make_response(200, "OK", Some("phone1")),
        "<sip:1001@10.1.1.9:5060>",
    );
    let inside = Dialog::new_uac(&in_invite, &ok).unwrap();
    DialogPair::new(outside, inside)
}

fn via(branch: &str) -> Via {
    Via::parse(&format!("SIP/2.0/TCP 10.0.0.2:5060;branch={branch}")).unwrap()
}

fn ids(r: &Request) -> (String, String, String, u32, Method) {
    let h = &r.headers;
    let cseq = h.cseq().unwrap();
    (
        h.call_id().unwrap().to_owned(),
        h.from_addr().unwrap().tag().unwrap().to_owned(),
        h.to_addr().unwrap().tag().unwrap().to_owned(),
        cseq.seq,
        cseq.method,
    )
}

const SDP: &[u8] = b"v=0\r\no=- 1 2 IN IP4 172.16.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 40002 RTP/SAVP 0\r\n";

#[test]
fn a_reinvite_its_answer_and_its_ack_cross_with_each_legs_identity() {
    let mut p = pair();
    let reinvite = request(
        "INVITE sip:core@172.16.0.2:5061;transport=tls SIP/2.0\n\
         Via: SIP/2.0/TLS 172.16.0.1:7001;branch=z9hG4bK-e2\n\
         Max-Forwards: 69\n\
         From: <sip:jabber@example.com>;tag=client1\n\
         To: <sip:1001@example.com>;tag=core-out\n\
         Call-ID: out-call-1\n\
         CSeq: 11 INVITE\n\
         Contact: <sip:jabber@172.16.0.1:7001;transport=tls>\n\
         Content-Type: application/sdp\n\
         Content-Length: 0\n\n",
    );
    let out = p
        .forward_request(
            Leg::Outside,
            &reinvite,
            &via("z9hG4bK-i2"),
            Some(SDP.to_vec()),
        )
        .unwrap();
    assert_eq!(out.method, Method::Invite);
    assert_eq!(
        out.uri.to_string(),
        "sip:1001@10.1.1.9:5060",
        "the phone's Contact"
    );
    assert_eq!(
        ids(&out),
        (
            "in-call-1".into(),
            "core-in".into(),
            "phone1".into(),
            2,
            Method::Invite
        )
    );
    assert_eq!(
        out.headers.first(&HeaderName::ContentType),
        Some("application/sdp")
    );
    assert_eq!(out.body, SDP);
    assert!(
        !out.to_bytes().windows(10).any(|w| w == b"out-call-1"),
        "the outside Call-ID stays outside"
    );
    // The phone's 200 becomes the 200 to the client's re-INVITE.
    let ok = with_contact(
        out.make_response(200, "OK", None),
        "<sip:1001@10.1.1.9:5060>",
    );
    let mut ok = ok;
    ok.set_body(Some("application/sdp"), SDP.to_vec()).unwrap();
    let back = p
        .forward_response(Leg::Inside, &ok, Some(SDP.to_vec()))
        .unwrap();
    assert_eq!(back.status, 200);
    let h = &back.headers;
    assert_eq!(h.call_id().unwrap(), "out-call-1");
    assert_eq!(h.cseq().unwrap().seq, 11);
    assert_eq!(h.to_addr().unwrap().tag(), Some("core-out"));
    assert_eq!(h.top_via().unwrap().branch(), Some("z9hG4bK-e2"));
    assert_eq!(back.body, SDP);
    // The client's ACK (CSeq 11) goes out as the ACK for the inside INVITE (CSeq 2).
    let ack = request(
        "ACK sip:core@172.16.0.2:5061;transport=tls SIP/2.0\n\
         Via: SIP/2.0/TLS 172.16.0.1:7001;branch=z9hG4bK-e3\n\
         Max-Forwards: 69\n\
         From: <sip:jabber@example.com>;tag=client1\n\
         To: <sip:1001@example.com>;tag=core-out\n\
         Call-ID: out-call-1\n\
         CSeq: 11 ACK\n\
         Content-Length: 0\n\n",
    );
    let ack = p
        .forward_request(Leg::Outside, &ack, &via("z9hG4bK-i3"), None)
        .unwrap();
    assert_eq!(
        ids(&ack),
        (
            "in-call-1".into(),
            "core-in".into(),
            "phone1".into(),
            2,
            Method::Ack
        )
    );
    assert_eq!(p.outstanding().count(), 0);
    // A second 200 (retransmission) for a settled request is no longer ours to map.
    assert!(matches!(
        p.forward_response(Leg::Inside, &ok, None),
        Err(PairError::UnknownResponse { .. })
    ));
}

#[test]
fn update_and_refer_from_the_phone_reach_the_client_in_the_outside_cseq_space() {
    let mut p = pair();
    let update = request(
        "UPDATE sip:core@10.0.0.2:5060;transport=tcp SIP/2.0\n\
         Via: SIP/2.0/TCP 10.1.1.9:5060;branch=z9hG4bK-p1\n\
         Max-Forwards: 70\n\
         From: <sip:1001@example.com>;tag=phone1\n\
         To: <sip:jabber@example.com>;tag=core-in\n\
         Call-ID: in-call-1\n\
         CSeq: 5 UPDATE\n\
         Contact: <sip:1001@10.1.1.9:5060>\n\
         Content-Length: 0\n\n",
    );
    let out = p
        .forward_request(Leg::Inside, &update, &via("z9hG4bK-o1"), None)
        .unwrap();
    assert_eq!(
        out.uri.to_string(),
        "sip:jabber@172.16.0.1:7001;transport=tls"
    );
    assert_eq!(
        ids(&out),
        (
            "out-call-1".into(),
            "core-out".into(),
            "client1".into(),
            1,
            Method::Update
        )
    );
    let refer = request(
        "REFER sip:core@10.0.0.2:5060;transport=tcp SIP/2.0\n\
         Via: SIP/2.0/TCP 10.1.1.9:5060;branch=z9hG4bK-p2\n\
         Max-Forwards: 70\n\
         From: <sip:1001@example.com>;tag=phone1\n\
         To: <sip:jabber@example.com>;tag=core-in\n\
         Call-ID: in-call-1\n\
         CSeq: 6 REFER\n\
         Refer-To: <sip:1002@example.com>\n\
         Referred-By: <sip:1001@example.com>\n\
         Content-Length: 0\n\n",
    );
    let out2 = p
        .forward_request(Leg::Inside, &refer, &via("z9hG4bK-o2"), None)
        .unwrap();
    assert_eq!(out2.headers.cseq().unwrap().seq, 2);
    assert_eq!(
        out2.headers.first(&HeaderName::parse("Refer-To")),
        Some("<sip:1002@example.com>")
    );
    assert_eq!(p.outstanding().count(), 2);
    // The client's 202 to the REFER answers the phone's REFER (CSeq 6), not the UPDATE.
    let accepted = p
        .forward_response(
            Leg::Outside,
            &out2.make_response(202, "Accepted", None),
            None,
        )
        .unwrap();
    assert_eq!(
        (accepted.status, accepted.headers.cseq().unwrap().seq),
        (202, 6)
    );
    assert_eq!(accepted.headers.to_addr().unwrap().tag(), Some("core-in"));
    assert_eq!(
        p.outstanding()
            .map(|(leg, r)| (leg, r.method.clone()))
            .collect::<Vec<_>>(),
        vec![(Leg::Inside, Method::Update)]
    );
    // Going backwards in the phone's CSeq space is refused by its dialog; CANCEL is hop-by-hop.
    let stale = request(
        &String::from_utf8(update.to_bytes())
            .unwrap()
            .replace("CSeq: 5 UPDATE", "CSeq: 4 UPDATE")
            .replace("\r\n", "\n"),
    );
    assert!(matches!(
        p.forward_request(Leg::Inside, &stale, &via("x"), None),
        Err(PairError::Dialog {
            leg: Leg::Inside,
            ..
        })
    ));
    let cancel = request(
        &String::from_utf8(update.to_bytes())
            .unwrap()
            .replace("UPDATE", "CANCEL")
            .replace("\r\n", "\n"),
    );
    assert_eq!(
        p.forward_request(Leg::Inside, &cancel, &via("x"), None)
            .unwrap_err(),
        PairError::Cancel
    );
    // A request of another dialog is not this call's.
    let foreign = request(
        &String::from_utf8(update.to_bytes())
            .unwrap()
            .replace("in-call-1", "other")
            .replace("CSeq: 5", "CSeq: 9")
            .replace("\r\n", "\n"),
    );
    assert!(matches!(
        p.forward_request(Leg::Inside, &foreign, &via("x"), None),
        Err(PairError::Dialog { .. })
    ));
    // An ACK for no forwarded INVITE.
    let ack = request(
        &String::from_utf8(update.to_bytes())
            .unwrap()
            .replace("UPDATE", "ACK")
            .replace("\r\n", "\n"),
    );
    assert!(matches!(
        p.forward_request(Leg::Inside, &ack, &via("x"), None),
        Err(PairError::UnknownAck { .. })
    ));
    // BYE from the client ends the phone's dialog in its CSeq space; the 200 maps back.
    let bye = request(
        "BYE sip:core@172.16.0.2:5061;transport=tls SIP/2.0\n\
         Via: SIP/2.0/TLS 172.16.0.1:7001;branch=z9hG4bK-e9\n\
         Max-Forwards: 69\n\
         From: <sip:jabber@example.com>;tag=client1\n\
         To: <sip:1001@example.com>;tag=core-out\n\
         Call-ID: out-call-1\n\
         CSeq: 12 BYE\n\
         Reason: Q.850;cause=16\n\
         Content-Length: 0\n\n",
    );
    let out = p
        .forward_request(Leg::Outside, &bye, &via("z9hG4bK-i9"), None)
        .unwrap();
    assert_eq!(
        ids(&out),
        (
            "in-call-1".into(),
            "core-in".into(),
            "phone1".into(),
            2,
            Method::Bye
        )
    );
    assert_eq!(
        out.headers.first(&HeaderName::parse("Reason")),
        Some("Q.850;cause=16")
    );
    let ok = p
        .forward_response(Leg::Inside, &out.make_response(200, "OK", None), None)
        .unwrap();
    assert_eq!(
        (
            ok.status,
            ok.headers.cseq().unwrap().seq,
            ok.headers.cseq().unwrap().method
        ),
        (200, 12, Method::Bye)
    );
}

fn replaces(value: &str) -> Replaces {
    Replaces::parse(value).unwrap()
}

#[test]
fn replaces_maps_each_legs_dialog_to_the_other_legs_both_ways() {
    let pair = pair();
    // The client names the outside dialog as the UA receiving the INVITE will see it:
    // to-tag the core's (its local tag there), from-tag the client's.
    let out = replaces("out-call-1;to-tag=core-out;from-tag=client1");
    let inside = pair.map_replaces(Leg::Outside, &out).unwrap().unwrap();
    assert_eq!(
        inside.to_string(),
        "in-call-1;to-tag=phone1;from-tag=core-in",
        "the phone compares to-tag to its own tag and from-tag to the core's"
    );
    // And back: what the phone writes for its dialog becomes the client's view.
    let back = pair
        .map_replaces(
            Leg::Inside,
            &replaces("in-call-1;to-tag=core-in;from-tag=phone1;early-only"),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        back.to_string(),
        "out-call-1;to-tag=client1;from-tag=core-out;early-only",
        "other parameters are kept"
    );
    // Written from the other end's view (tags the other way round): kept that way round.
    let reversed = pair
        .map_replaces(
            Leg::Outside,
            &replaces("out-call-1;to-tag=client1;from-tag=core-out"),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        reversed.to_string(),
        "in-call-1;to-tag=core-in;from-tag=phone1"
    );
    // Another dialog's Call-ID: not this pair's to map (it may not cross the B2BUA).
    assert_eq!(
        pair.map_replaces(Leg::Inside, &out).unwrap(),
        None,
        "the outside Call-ID is not an inside dialog"
    );
    assert_eq!(
        pair.map_replaces(Leg::Outside, &replaces("elsewhere@x;to-tag=a;from-tag=b"))
            .unwrap(),
        None
    );
    // Our Call-ID with tags that are not the dialog's: RFC 3891's "no match".
    let err = pair
        .map_replaces(
            Leg::Outside,
            &replaces("out-call-1;to-tag=core-out;from-tag=someone"),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            ReplacesError::NoMatch {
                leg: Leg::Outside,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn malformed_replaces_values_are_refused_precisely() {
    for (value, why) in [
        ("", "no Call-ID"),
        (";to-tag=a;from-tag=b", "no Call-ID"),
        ("c1;from-tag=b", "no to-tag"),
        ("c1;to-tag=a", "no from-tag"),
        ("c1;to-tag=;from-tag=b", "a tag without a value"),
        ("c1;to-tag;from-tag=b", "a tag without a value"),
        ("c1;to-tag=a;to-tag=c;from-tag=b", "a tag given twice"),
        ("c1;;to-tag=a;from-tag=b", "empty parameter"),
        (
            "c 1;to-tag=a;from-tag=b",
            "character not allowed in a Call-ID",
        ),
        (
            "c1,c2;to-tag=a;from-tag=b",
            "character not allowed in a Call-ID",
        ),
    ] {
        match Replaces::parse(value) {
            Err(ReplacesError::Syntax { reason, .. }) => assert_eq!(reason, why, "{value:?}"),
            other => panic!("{value:?}: {other:?}"),
        }
    }
    let long = format!("{};to-tag=a", "x".repeat(500));
    let err = Replaces::parse(&long).unwrap_err().to_string();
    assert!(err.len() < 150, "the value in the error is clipped: {err}");
    // Case-insensitive parameter names, spaces around them.
    let r = replaces("abc@host ; TO-TAG = a ; From-Tag=b");
    assert_eq!((r.to_tag.as_str(), r.from_tag.as_str()), ("a", "b"));
}

#[test]
fn a_refer_to_replaces_is_rewritten_escaped_and_the_rest_kept() {
    let pair = pair();
    let refer_to = "\"Bob\" <sip:2002@example.com;user=phone\
?Replaces=out-call-1%3Bto-tag%3Dcore-out%3Bfrom-tag%3Dclient1&Require=replaces>;method=INVITE";
    let found = refer_to_replaces(refer_to).unwrap().unwrap();
    assert_eq!(
        found,
        replaces("out-call-1;to-tag=core-out;from-tag=client1")
    );
    let mapped = pair.map_replaces(Leg::Outside, &found).unwrap().unwrap();
    let rewritten = rewrite_refer_to(refer_to, &mapped).unwrap();
    assert_eq!(
        rewritten,
        "\"Bob\" <sip:2002@example.com;user=phone\
?Replaces=in-call-1%3Bto-tag%3Dphone1%3Bfrom-tag%3Dcore-in&Require=replaces>;method=INVITE"
    );
    assert_eq!(refer_to_replaces(&rewritten).unwrap(), Some(mapped));
    // A Call-ID with '@' is escaped in the URI and decoded again.
    let at = replaces("abc@core.example.com;to-tag=x;from-tag=y");
    let with_at = rewrite_refer_to(refer_to, &at).unwrap();
    assert!(
        with_at.contains("abc%40core.example.com%3Bto-tag%3Dx"),
        "{with_at}"
    );
    assert_eq!(refer_to_replaces(&with_at).unwrap(), Some(at));
    // No Replaces (a blind transfer), or a non-SIP target: nothing to map.
    assert_eq!(refer_to_replaces("<sip:2002@example.com>").unwrap(), None);
    assert_eq!(refer_to_replaces("<tel:+15551234>").unwrap(), None);
    // A malformed Refer-To, or a malformed Replaces inside it.
    assert!(matches!(
        refer_to_replaces("<sip:2002@example.com"),
        Err(ReplacesError::ReferTo { .. })
    ));
    assert!(matches!(
        refer_to_replaces("<sip:2002@example.com?Replaces=c1%3Bto-tag%3Da>"),
        Err(ReplacesError::Syntax {
            reason: "no from-tag",
            ..
        })
    ));
}
