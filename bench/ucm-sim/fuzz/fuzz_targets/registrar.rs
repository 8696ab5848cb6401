//! Drives the registrar with a sequence of REGISTER/OPTIONS/other requests built from
//! arbitrary parts (users, domains, Contact, Expires, Path, credentials right or wrong or
//! garbage, CSeq, time passing) plus raw bytes. Whatever the input: no panic, every response
//! serializes to SIP that parses, binding lifetimes stay within max-expires, and requests
//! built towards a registered user parse.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use edgeway_sip::{HeaderName, Message, Request};
use edgeway_ucm_sim::digest::client_authorization;
use edgeway_ucm_sim::registrar::refusal_for_unparsed;
use edgeway_ucm_sim::{
    Origin, Registrar, RegistrarConfig, SecurityProfile, Transport, User, UserDirectory,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Credentials {
    None,
    Right { nc: u32 },
    Wrong,
    Garbage(String),
}

#[derive(Debug, Arbitrary)]
enum Step {
    Register {
        user: u8,
        domain: bool,
        call_id: u8,
        cseq: u32,
        contact: String,
        expires: Option<String>,
        path: Option<String>,
        extra: String,
        credentials: Credentials,
        connection: u8,
    },
    Raw(Vec<u8>),
    Wait(u16),
    Send {
        user: u8,
        message: bool,
    },
}

const USERS: [&str; 3] = ["alice", "1002", "mallory"];

fn parse_request(text: &[u8]) -> Option<Request> {
    match Message::parse(text) {
        Ok(Message::Request(r)) => Some(r),
        _ => None,
    }
}

fn check_response(bytes: Vec<u8>) {
    Message::parse(&bytes).expect("a response ucm-sim writes must parse");
}

fuzz_target!(|steps: Vec<Step>| {
    let t0 = Instant::now();
    let mut now = t0;
    let users = UserDirectory::new(vec![
        User {
            name: "alice".into(),
            password: "pw".into(),
            number: "1001".into(),
            security_profile: SecurityProfile::Secure,
            ..User::default()
        },
        User {
            name: "bob".into(),
            password: "pw2".into(),
            number: "1002".into(),
            security_profile: SecurityProfile::NonSecure,
            ..User::default()
        },
    ])
    .expect("users");
    let config = RegistrarConfig {
        domains: vec!["example.com".into()],
        ..RegistrarConfig::default()
    };
    let max = Duration::from_secs(u64::from(config.max_expires));
    let mut reg = Registrar::new(config, users, [9; 32], t0);
    let local: SocketAddr = "127.0.0.1:5061".parse().expect("addr");
    let mut challenge = None;
    for step in steps.into_iter().take(24) {
        match step {
            Step::Wait(s) => {
                now += Duration::from_secs(u64::from(s));
                reg.expire(now);
            }
            Step::Raw(bytes) => {
                if let Some(req) = parse_request(&bytes) {
                    let origin = Origin {
                        connection: 0,
                        transport: Transport::Tcp,
                        peer: local,
                    };
                    if let Some(r) = reg.handle_request(now, &req, &origin) {
                        check_response(r.to_bytes());
                    }
                } else if let Some(out) = refusal_for_unparsed(&bytes, 400, "fuzz") {
                    check_response(out);
                }
            }
            Step::Send { user, message } => {
                let method = if message { "MESSAGE" } else { "OPTIONS" };
                let to = USERS[usize::from(user) % USERS.len()];
                if let Ok(out) = reg.outbound_request(now, method, to, Some("hi"), |_| Some(local))
                {
                    check_response(out.request.to_bytes());
                }
            }
            Step::Register {
                user,
                domain,
                call_id,
                cseq,
                contact,
                expires,
                path,
                extra,
                credentials,
                connection,
            } => {
                let user = USERS[usize::from(user) % USERS.len()];
                let domain = if domain { "example.com" } else { "example.org" };
                let mut text = format!(
                    "REGISTER sip:{domain} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bK{cseq}\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:{user}@{domain}>;tag=f\r\nTo: <sip:{user}@{domain}>\r\n\
                     Call-ID: c{call_id}\r\nCSeq: {} REGISTER\r\nContact: {contact}\r\n",
                    cseq % (1 << 31)
                );
                if let Some(e) = expires {
                    text.push_str(&format!("Expires: {e}\r\n"));
                }
                if let Some(p) = path {
                    text.push_str(&format!("Path: {p}\r\n"));
                }
                text.push_str(&extra);
                let Some(mut req) =
                    parse_request(format!("{text}Content-Length: 0\r\n\r\n").as_bytes())
                else {
                    continue;
                };
                let auth = match credentials {
                    Credentials::None => None,
                    Credentials::Right { nc } => challenge.as_ref().and_then(|c| {
                        client_authorization(c, user, "pw", "REGISTER", "sip:x", nc, "fz")
                    }),
                    Credentials::Wrong => challenge.as_ref().and_then(|c| {
                        client_authorization(c, user, "nope", "REGISTER", "sip:x", 1, "fz")
                    }),
                    Credentials::Garbage(g) => Some(g),
                };
                if let Some(a) = auth {
                    if req.headers.push(HeaderName::Authorization, a).is_err() {
                        continue;
                    }
                }
                let origin = Origin {
                    connection: u64::from(connection),
                    transport: Transport::Tls,
                    peer: local,
                };
                let Some(r) = reg.handle_request(now, &req, &origin) else {
                    continue;
                };
                if r.status == 401 {
                    challenge = r
                        .headers
                        .auth(&HeaderName::WwwAuthenticate)
                        .ok()
                        .and_then(|mut v| v.pop());
                }
                check_response(r.to_bytes());
            }
        }
        for b in reg.bindings(now) {
            assert!(
                Duration::from_secs(b.expires) <= max,
                "binding outlives max-expires"
            );
        }
    }
});
