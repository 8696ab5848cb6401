//! Drives the call switch with arbitrary SIP messages (requests and responses, raw bytes
//! and INVITE-shaped ones with arbitrary SDP) from two registered users' connections and a
//! stranger's, plus admin commands (call, hangup, answer modes) and time passing. Whatever
//! the input: no panic, every message the switch writes parses, and no call outlives the
//! connections it uses.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use edgeway_sip::{HeaderName, Message, Request};
use edgeway_ucm_sim::calls::AnswerMode;
use edgeway_ucm_sim::digest::client_authorization;
use edgeway_ucm_sim::{
    Action, Origin, Registrar, RegistrarConfig, Switch, Transport, UserDirectory,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Step {
    Raw {
        connection: u8,
        bytes: Vec<u8>,
    },
    Invite {
        connection: u8,
        to: u8,
        call_id: u8,
        to_tag: bool,
        method: u8,
        sdp: String,
    },
    Call {
        from: u8,
        to: u8,
    },
    Hangup(u8),
    Mode {
        user: u8,
        mode: u8,
    },
    Close(u8),
    Wait(u16),
}

const USERS: &str = r#"
[[user]]
name = "alice"
password = "a"
number = "1001"
security_profile = "secure"
[[user]]
name = "bob"
password = "b"
number = "1002"
security_profile = "non-secure"
[[user]]
name = "desk"
password = "d"
number = "2001"
security_profile = "secure"
phone = "sim"
[[user]]
name = "fax"
password = "f"
number = "2002"
security_profile = "non-secure"
phone = "sim"
"#;
const NAMES: [&str; 6] = ["1001", "1002", "2001", "2002", "9999", "alice"];
const METHODS: [&str; 8] = [
    "INVITE", "ACK", "BYE", "CANCEL", "UPDATE", "INFO", "REFER", "MESSAGE",
];

fn request(text: &str) -> Option<Request> {
    match Message::parse(text.as_bytes()) {
        Ok(Message::Request(r)) => Some(r),
        _ => None,
    }
}

fn origin(connection: u64) -> Origin {
    Origin {
        connection,
        transport: Transport::Tcp,
        peer: SocketAddr::from(([127, 0, 0, 1], 40000 + connection as u16)),
    }
}

fn check(actions: &[Action]) {
    for a in actions {
        if let Action::Send { bytes, .. } = a {
            Message::parse(bytes).expect("what the switch writes must parse");
        }
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let t0 = Instant::now();
    let mut now = t0;
    let users = UserDirectory::from_toml(USERS).expect("users");
    let mut reg = Registrar::new(RegistrarConfig::default(), users, [1; 32], t0);
    let mut sw = Switch::new([2; 32]);
    let local = SocketAddr::from(([127, 0, 0, 1], 5060));
    for (conn, name, pw) in [(1u64, "alice", "a"), (2, "bob", "b")] {
        sw.connection_opened(&origin(conn), local);
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKr\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{name}@example.com>;tag=r\r\nTo: <sip:{name}@example.com>\r\n\
             Call-ID: reg{conn}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{name}@127.0.0.1:{port};transport=tcp>\r\n\
             Content-Length: 0\r\n\r\n",
            port = 40000 + conn
        );
        let req = request(&text).expect("REGISTER");
        let ch = reg.handle_request(t0, &req, &origin(conn)).expect("401");
        let Ok(mut auths) = ch.headers.auth(&HeaderName::WwwAuthenticate) else {
            return;
        };
        let Some(auth) = client_authorization(
            &auths.remove(0),
            name,
            pw,
            "REGISTER",
            "sip:example.com",
            1,
            "c",
        ) else {
            return;
        };
        let mut req = request(&text.replace("CSeq: 1", "CSeq: 2")).expect("REGISTER");
        let _ = req.headers.push(HeaderName::Authorization, auth);
        let _ = reg.handle_request(t0, &req, &origin(conn));
    }
    sw.connection_opened(&origin(3), local);
    let mut port = 30000u16;
    let mut bind = move || {
        port = port.wrapping_add(1).max(1024);
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    };
    for step in steps {
        let actions = match step {
            Step::Raw { connection, bytes } => match Message::parse(&bytes) {
                Ok(Message::Request(r)) => sw.handle_request(
                    now,
                    &mut reg,
                    &r,
                    &origin(u64::from(connection % 4)),
                    &mut bind,
                ),
                Ok(Message::Response(r)) => sw
                    .handle_response(&r, &origin(u64::from(connection % 4)))
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            },
            Step::Invite {
                connection,
                to,
                call_id,
                to_tag,
                method,
                sdp,
            } => {
                let conn = u64::from(connection % 3) + 1;
                let from = if conn == 2 { "1002" } else { "1001" };
                let to = NAMES[usize::from(to) % NAMES.len()];
                let method = METHODS[usize::from(method) % METHODS.len()];
                let tag = if to_tag { ";tag=t" } else { "" };
                let text = format!(
                    "{method} sip:{to}@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKf{call_id}\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:{from}@example.com>;tag=f\r\nTo: <sip:{to}@example.com>{tag}\r\n\
                     Call-ID: c{call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:{from}@127.0.0.1:4000{conn}>\r\n\
                     Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    sdp.len()
                );
                match request(&text) {
                    Some(r) => sw.handle_request(now, &mut reg, &r, &origin(conn), &mut bind),
                    None => Vec::new(),
                }
            }
            Step::Call { from, to } => sw
                .place_call(
                    now,
                    &reg,
                    NAMES[usize::from(from) % NAMES.len()],
                    NAMES[usize::from(to) % NAMES.len()],
                    &mut bind,
                )
                .map(|(_, a)| a)
                .unwrap_or_default(),
            Step::Hangup(n) => sw.hangup(u64::from(n)).unwrap_or_default(),
            Step::Mode { user, mode } => {
                let mode =
                    [AnswerMode::Auto, AnswerMode::Busy, AnswerMode::Ring][usize::from(mode) % 3];
                let _ = sw.set_answer_mode(&mut reg, NAMES[usize::from(user) % NAMES.len()], mode);
                Vec::new()
            }
            Step::Close(c) => sw.connection_closed(u64::from(c % 4)),
            Step::Wait(s) => {
                now += Duration::from_secs(u64::from(s));
                sw.expire(now)
            }
        };
        check(&actions);
    }
    for c in 0..4 {
        sw.connection_closed(c);
    }
    assert!(
        sw.calls(now).iter().all(|c| c.kind == "sim-to-sim"),
        "a call outlived its connections"
    );
});
