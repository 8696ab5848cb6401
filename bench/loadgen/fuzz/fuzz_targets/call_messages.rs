//! Drives both ends of the load generator's call (`sip_call`) with what a proxy chain could
//! send: to the caller, responses built on its own INVITE (so it takes them) with an
//! arbitrary status, To tag, Contact, Record-Route and SDP body, or arbitrary bytes; to the
//! phone, an INVITE/ACK/BYE/other request with an arbitrary SDP body, or arbitrary bytes.
//! Neither may panic; every message either sends must parse back with edgeway-sip, and an
//! SDP either accepts must name a non-zero port.
#![no_main]

use arbitrary::Arbitrary;
use edgeway_loadgen::sip_call::{read_sdp, Callee, CallerSetup, CallerStep, OutgoingCall};
use edgeway_sip::{HeaderName, Message, Request};
use edgeway_srtp::SrtpProfile;
use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[derive(Debug, Arbitrary)]
struct Reply {
    status: u16,
    to_tag: Option<String>,
    contact: Option<String>,
    record_route: Option<String>,
    sdp: Vec<u8>,
    raw: Option<Vec<u8>>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    replies: Vec<Reply>,
    hang_up: bool,
    phone_method: u8,
    phone_sdp: Vec<u8>,
    phone_raw: Option<Vec<u8>>,
}

fn parses(bytes: &[u8]) {
    assert!(
        Message::parse(bytes).is_ok(),
        "sent an unparsable message: {:?}",
        String::from_utf8_lossy(bytes)
    );
}

fn check_step(step: &CallerStep) {
    match step {
        CallerStep::Wait => {}
        CallerStep::Send(b) => parses(b),
        CallerStep::Answered { ack, far } => {
            parses(ack);
            if let Ok(m) = far {
                assert_ne!(m.addr.port(), 0);
            }
        }
        CallerStep::Refused { ack, .. } => parses(ack),
        CallerStep::Ended { reply } => {
            if let Some(r) = reply {
                parses(r);
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let mut rng = StdRng::seed_from_u64(1);
    let setup = CallerSetup {
        user: "user0001".into(),
        callee: "user0002".into(),
        domain: "example.com".into(),
        local: "127.0.0.1:40001".parse().expect("literal"),
        media: "127.0.0.1:20000".parse().expect("literal"),
        suite: Some(SrtpProfile::AesCm128HmacSha1_80),
    };
    let Ok((mut call, invite)) = OutgoingCall::new(&setup, &mut rng) else {
        return;
    };
    let Ok(Message::Request(invite)) = Message::parse(&invite) else {
        panic!("own INVITE does not parse");
    };
    for reply in input.replies.iter().take(8) {
        let bytes = match &reply.raw {
            Some(raw) => raw.clone(),
            None => {
                let mut r = invite.make_response(reply.status, "X", reply.to_tag.as_deref());
                if let Some(c) = &reply.contact {
                    let _ = r.headers.push(HeaderName::Contact, c.clone());
                }
                if let Some(rr) = &reply.record_route {
                    let _ = r.headers.push(HeaderName::RecordRoute, rr.clone());
                }
                let _ = r.set_body(Some("application/sdp"), reply.sdp.clone());
                r.to_bytes()
            }
        };
        if let Ok(Message::Response(resp)) = Message::parse(&bytes) {
            if let Ok(step) = call.handle_response(&resp, &mut rng) {
                check_step(&step);
            }
        }
        if input.hang_up {
            if let Ok(bye) = call.hang_up(&mut rng) {
                parses(&bye);
            }
        }
    }
    if let Ok(m) = read_sdp(&input.phone_sdp) {
        assert_ne!(m.addr.port(), 0);
    }

    let mut phone = Callee::new(
        "user0002",
        "127.0.0.1:40002".parse().expect("literal"),
        "127.0.0.1:20002".parse().expect("literal"),
    );
    let request: Option<Request> = match &input.phone_raw {
        Some(raw) => match Message::parse(raw) {
            Ok(Message::Request(r)) => Some(r),
            _ => None,
        },
        None => {
            let mut r = invite.clone();
            r.method = match input.phone_method % 4 {
                0 => edgeway_sip::Method::Invite,
                1 => edgeway_sip::Method::Ack,
                2 => edgeway_sip::Method::Bye,
                _ => edgeway_sip::Method::Options,
            };
            let _ = r.set_body(Some("application/sdp"), input.phone_sdp.clone());
            Some(r)
        }
    };
    if let Some(req) = request {
        for _ in 0..2 {
            let step = phone.handle_request(&req, &mut rng);
            if let Some(reply) = step.reply {
                parses(&reply);
            }
        }
    }
});
