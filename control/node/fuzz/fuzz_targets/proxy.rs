//! Arbitrary messages from every side into an edge and a core wired back to back: a client
//! flow, the traversal zone in both directions, and Unified CM connections. Nothing may
//! panic, and everything either proxy emits must be a SIP message that parses again (a
//! proxy must never turn bad input into bad output for another peer). `Answer` replies to
//! the last request the core sent Unified CM or the edge sent a client, so the core's
//! B2BUA calls (whose Call-IDs and tags are random) reach their setup, early-dialog,
//! in-dialog and timeout paths too.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use edgeway_control::config::{DomainConfig, UcmNode, UcmTransport};
use edgeway_control::core::{CoreOutput, CoreProxy, CoreSettings};
use edgeway_control::edge::{EdgeOutput, EdgeProxy};
use edgeway_sip::{HeaderName, Message};
use libfuzzer_sys::fuzz_target;

/// A message assembled from parts, so most inputs parse and reach the proxy logic.
#[derive(Debug, Arbitrary)]
struct Shaped {
    status: Option<u16>,
    method: u8,
    uri: u8,
    headers: Vec<(u8, String)>,
    keep: [bool; 8],
    body: String,
}

const METHODS: &[&str] = &["REGISTER", "OPTIONS", "MESSAGE", "INVITE", "ACK", "BYE", "CANCEL", "SUBSCRIBE"];
const URIS: &[&str] = &[
    "sip:example.com",
    "sip:alice@example.com",
    "sip:b1@core.example.com:5060;transport=tcp",
    "sip:b2@core.example.com:5060",
    "sip:alice@192.0.2.1:5061;transport=tls",
    "sip:ewf1@edge.example.com:5061;lr",
    "sip:other.org",
    "tel:+1234",
];
const NAMES: &[&str] = &[
    "Via", "Route", "Path", "Contact", "Expires", "Record-Route", "Max-Forwards", "To", "From",
    "Retry-After", "WWW-Authenticate", "Authorization", "CSeq", "Call-ID", "Supported",
];
/// Header lines a well-formed message starts from (each kept or dropped by `keep`).
const BASE: &[&str] = &[
    "Via: SIP/2.0/TLS edge.example.com:5061;branch=z9hG4bK-ewabc;ewf=1",
    "Via: SIP/2.0/TCP core.example.com:5060;branch=z9hG4bK-ewdef;ewc=1",
    "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKc1",
    "From: <sip:alice@example.com>;tag=1",
    "To: <sip:alice@example.com>",
    "Call-ID: c1",
    "CSeq: 1 REGISTER",
    "Contact: <sip:b1@core.example.com:5060;transport=tcp>;expires=60",
];

impl Shaped {
    fn bytes(&self) -> Vec<u8> {
        let mut s = match self.status {
            Some(code) => format!("SIP/2.0 {} R\r\n", 100 + code % 600),
            None => format!(
                "{} {} SIP/2.0\r\n",
                METHODS[usize::from(self.method) % METHODS.len()],
                URIS[usize::from(self.uri) % URIS.len()]
            ),
        };
        for (line, keep) in BASE.iter().zip(self.keep) {
            if keep {
                s.push_str(line);
                s.push_str("\r\n");
            }
        }
        for (name, value) in self.headers.iter().take(16) {
            s.push_str(NAMES[usize::from(*name) % NAMES.len()]);
            s.push_str(": ");
            s.push_str(value);
            s.push_str("\r\n");
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n{}", self.body.len(), self.body));
        s.into_bytes()
    }
}

#[derive(Debug, Arbitrary)]
enum Input {
    FromClient { flow: u8, msg: Shaped },
    FromUcm { conn: u8, msg: Shaped },
    RawFromClient { flow: u8, bytes: Vec<u8> },
    RawFromUcm { conn: u8, bytes: Vec<u8> },
    CloseFlow(u8),
    Maintenance(bool),
    Advance(u16),
    /// A response to the last request the core sent Unified CM (`to_ucm`) or the edge sent
    /// a client, so the B2BUA's calls (random Call-IDs and tags) are answered too.
    Answer { to_ucm: bool, status: u16, tagged: bool, contact: bool, body: String },
}

fn must_parse(bytes: &[u8]) -> Message {
    match Message::parse(bytes) {
        Ok(m) => m,
        Err(e) => panic!("proxy emitted unparsable SIP ({e}): {:?}", String::from_utf8_lossy(bytes)),
    }
}

fuzz_target!(|inputs: Vec<Input>| {
    let counters = Arc::default();
    let mut edge = EdgeProxy::new("edge.example.com", 5061, Arc::clone(&counters));
    let node = UcmNode {
        name: "cucm1".into(),
        address: "127.0.0.1:5060".into(),
        socket: "127.0.0.1:5060".parse().expect("addr"),
        host: "127.0.0.1".into(),
        transport: UcmTransport::Tcp,
    };
    let mut core = CoreProxy::new(
        CoreSettings {
            host: "core.example.com".into(),
            port: 5060,
            path_headers: false,
            retry_after_s: 60,
            domains: vec![DomainConfig { name: "example.com".into(), sip_registrations: true }],
            nodes: vec![node],
            binding_id_base: 1,
        },
        counters,
    );
    // Short enough for Advance steps to reach it.
    core.set_call_setup_timeout(Duration::from_secs(2));
    edge.set_traversal_up(true);
    core.set_traversal_up(true);
    core.set_node_connection(0, Some(1));
    for f in 0..4 {
        edge.flow_opened(f);
    }
    let mut now = Instant::now();
    let mut last_ucm: Option<edgeway_sip::Request> = None;
    let mut last_client: Option<(u64, edgeway_sip::Request)> = None;
    for input in inputs.into_iter().take(64) {
        let input = match input {
            Input::FromClient { flow, msg } => Input::RawFromClient { flow, bytes: msg.bytes() },
            Input::FromUcm { conn, msg } => Input::RawFromUcm { conn, bytes: msg.bytes() },
            other => other,
        };
        let mut to_edge: Vec<Vec<u8>> = Vec::new();
        let mut to_core: Vec<Vec<u8>> = Vec::new();
        match input {
            Input::RawFromClient { flow, bytes } => {
                let Ok(msg) = Message::parse(&bytes) else { continue };
                let mut out = Vec::new();
                edge.client_message(u64::from(flow % 5), msg, &mut out);
                for o in out {
                    match o {
                        EdgeOutput::ToClient(f, b) => {
                            if let Message::Request(r) = must_parse(&b) {
                                last_client = Some((f, r));
                            }
                        }
                        EdgeOutput::ToCore(b) => to_core.push(b),
                    }
                }
            }
            Input::RawFromUcm { conn, bytes } => {
                let Ok(msg) = Message::parse(&bytes) else { continue };
                let mut out = Vec::new();
                core.ucm_message(now, u64::from(conn % 3), msg, &mut out);
                for o in out {
                    match o {
                        CoreOutput::ToUcm(_, b) => {
                            if let Message::Request(r) = must_parse(&b) {
                                last_ucm = Some(r);
                            }
                        }
                        CoreOutput::ToEdge(b) => to_edge.push(b),
                    }
                }
            }
            Input::CloseFlow(f) => edge.flow_closed(u64::from(f % 5)),
            Input::Maintenance(on) => {
                edge.set_maintenance(on);
                core.set_maintenance(on);
            }
            Input::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 100);
                core.handle_timeout(now);
                // The B2BUA's timers: setup give-ups (CANCEL + 408), 408s, idle BYEs.
                let mut out = Vec::new();
                core.call_timeouts(now, &mut out);
                for o in out {
                    match o {
                        CoreOutput::ToEdge(b) => to_edge.push(b),
                        CoreOutput::ToUcm(_, b) => {
                            if let Message::Request(r) = must_parse(&b) {
                                last_ucm = Some(r);
                            }
                        }
                    }
                }
            }
            Input::Answer { to_ucm, status, tagged, contact, body } => {
                let answered = if to_ucm {
                    last_ucm.as_ref().map(|r| (None, r))
                } else {
                    last_client.as_ref().map(|(f, r)| (Some(*f), r))
                };
                let Some((flow, req)) = answered else { continue };
                let mut resp = req.make_response(100 + status % 600, "R", tagged.then_some("far"));
                if contact {
                    let _ = resp.headers.push(HeaderName::Contact, "<sip:far@192.0.2.9:5060>");
                }
                if !body.is_empty() {
                    let _ = resp.set_body(Some("application/sdp"), body.into_bytes());
                }
                let mut out = Vec::new();
                match flow {
                    None => {
                        let mut o = Vec::new();
                        core.ucm_message(now, 1, Message::Response(resp), &mut o);
                        for o in o {
                            match o {
                                CoreOutput::ToUcm(_, b) => {
                                    if let Message::Request(r) = must_parse(&b) {
                                        last_ucm = Some(r);
                                    }
                                }
                                CoreOutput::ToEdge(b) => to_edge.push(b),
                            }
                        }
                    }
                    Some(f) => {
                        edge.client_message(f, Message::Response(resp), &mut out);
                        for o in out {
                            match o {
                                EdgeOutput::ToClient(_, b) => {
                                    must_parse(&b);
                                }
                                EdgeOutput::ToCore(b) => to_core.push(b),
                            }
                        }
                    }
                }
            }
            Input::FromClient { .. } | Input::FromUcm { .. } => {} // normalised above
        }
        // Carry what crosses the traversal zone, a few rounds at most.
        for _ in 0..4 {
            for b in std::mem::take(&mut to_core) {
                let mut out = Vec::new();
                core.edge_message(now, must_parse(&b), &mut out);
                for o in out {
                    match o {
                        CoreOutput::ToEdge(b) => to_edge.push(b),
                        CoreOutput::ToUcm(_, b) => {
                            if let Message::Request(r) = must_parse(&b) {
                                last_ucm = Some(r);
                            }
                        }
                    }
                }
            }
            for b in std::mem::take(&mut to_edge) {
                let mut out = Vec::new();
                edge.core_message(must_parse(&b), &mut out);
                for o in out {
                    match o {
                        EdgeOutput::ToCore(b) => to_core.push(b),
                        EdgeOutput::ToClient(f, b) => {
                            if let Message::Request(r) = must_parse(&b) {
                                last_client = Some((f, r));
                            }
                        }
                    }
                }
            }
        }
        let _ = core.registrations(now);
    }
});
