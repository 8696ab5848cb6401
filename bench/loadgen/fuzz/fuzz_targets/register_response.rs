//! Drives the load generator's registration client (`sip_register::RegisterClient`) with
//! responses a registrar or proxy could send: a skeleton that matches the request in
//! flight (so the client takes it) with an arbitrary status, challenge, Contact, Expires
//! and Min-Expires, or arbitrary bytes. It must never panic, and whatever it sends next
//! must be a well-formed REGISTER that edgeway-sip parses back.
#![no_main]

use arbitrary::Arbitrary;
use edgeway_loadgen::sip_register::{Identity, RegisterClient, Step};
use edgeway_sip::{Message, Method};
use libfuzzer_sys::fuzz_target;
use rand::rngs::mock::StepRng;

#[derive(Debug, Arbitrary)]
struct Reply {
    status: u16,
    challenge: Option<String>,
    proxy: bool,
    contact: Option<String>,
    expires: Option<String>,
    min_expires: Option<String>,
    raw: Option<Vec<u8>>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    password: String,
    replies: Vec<Reply>,
}

fn take(client: &mut RegisterClient, bytes: &[u8], rng: &mut StepRng) -> Option<Vec<u8>> {
    let Ok(Message::Response(resp)) = Message::parse(bytes) else {
        return None;
    };
    match client.handle_response(&resp, rng) {
        Ok(Step::Send(next)) => Some(next),
        _ => None,
    }
}

fuzz_target!(|input: Input| {
    let mut rng = StepRng::new(7, 13);
    let identity = Identity {
        user: "user0001".into(),
        password: input.password,
        domain: "example.com".into(),
    };
    let local = "127.0.0.1:5060".parse().expect("literal address");
    let mut client = RegisterClient::new(identity, local, 60, &mut rng);
    let Ok(mut request) = client.start(&mut rng) else {
        return;
    };
    for reply in input.replies.iter().take(8) {
        let Ok(Message::Request(req)) = Message::parse(&request) else {
            panic!("the client sent a REGISTER edgeway-sip cannot parse");
        };
        assert_eq!(req.method, Method::Register);
        if let Some(raw) = &reply.raw {
            if let Some(next) = take(&mut client, raw, &mut rng) {
                request = next;
            }
            continue;
        }
        let mut text = String::new();
        text.push_str(&format!("SIP/2.0 {} Fuzz\r\n", reply.status % 1000));
        for h in req.headers.iter() {
            let n = h.name().as_str();
            if matches!(n, "Via" | "From" | "To" | "Call-ID" | "CSeq") {
                text.push_str(&format!("{n}: {}\r\n", h.value()));
            }
        }
        let mut add = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                text.push_str(&format!("{name}: {v}\r\n"));
            }
        };
        let challenge = if reply.proxy { "Proxy-Authenticate" } else { "WWW-Authenticate" };
        add(challenge, &reply.challenge);
        add("Contact", &reply.contact);
        add("Expires", &reply.expires);
        add("Min-Expires", &reply.min_expires);
        text.push_str("Content-Length: 0\r\n\r\n");
        match take(&mut client, text.as_bytes(), &mut rng) {
            Some(next) => request = next,
            None => {
                let Ok(next) = client.start(&mut rng) else { return };
                request = next;
            }
        }
    }
});
