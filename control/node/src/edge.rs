//! The edge's proxy decisions (sans-IO): what to do with a message from a client flow or
//! from the traversal zone.
//!
//! The edge keeps no per-transaction state. Each client TLS connection is a flow with a
//! number; the edge writes it into its own Via (`ewf=<flow>`) so a response finds its way
//! back down the right connection, and into the Path it adds to REGISTER (and the
//! Record-Route of dialog-forming requests) as the user part `ewf<flow>`, RFC 5626 style,
//! so a request from inside names the connection to use. A flow that is gone answers 430.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use edgeway_b2bua::Leg;
use edgeway_sip::{HeaderName, Host, Message, Method, Request, Response, Uri, Via};

use crate::counters::Counters;
use crate::media::CallMedia;
use crate::sip_util::{
    acks_local_response, bad_request, check_request, derived_branch, hop, pop_own_via, refuse,
};

/// A client connection's number.
pub type FlowId = u64;

/// What the IO layer must send after a call into [`EdgeProxy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeOutput {
    /// Write these bytes down a client's own connection.
    ToClient(FlowId, Vec<u8>),
    /// Write these bytes to the core over the traversal zone.
    ToCore(Vec<u8>),
}

/// The edge's proxy state: open flows, registered flows, traversal and maintenance state.
#[derive(Debug)]
pub struct EdgeProxy {
    host: String,
    port: u16,
    flows: HashSet<FlowId>,
    registered: HashSet<FlowId>,
    traversal_up: bool,
    maintenance: bool,
    retry_after_s: u32,
    counters: Arc<Counters>,
    /// Calls' media (SDP rewrite and relay flows), when `[media]` is configured.
    media: Option<CallMedia>,
    /// Each client flow's signalling address: the only one its media may latch from.
    flow_addresses: HashMap<FlowId, Ipv4Addr>,
}

const FLOW_USER_PREFIX: &str = "ewf";

impl EdgeProxy {
    /// An edge writing `host:port` (its client-facing listener) into Via and Path.
    pub fn new(host: &str, port: u16, counters: Arc<Counters>) -> EdgeProxy {
        EdgeProxy {
            host: host.to_owned(),
            port,
            flows: HashSet::new(),
            registered: HashSet::new(),
            traversal_up: false,
            maintenance: false,
            retry_after_s: 60,
            counters,
            media: None,
            flow_addresses: HashMap::new(),
        }
    }

    /// Plans every call's media through `media` from now on.
    pub fn set_media(&mut self, media: CallMedia) {
        self.media = Some(media);
    }

    /// The calls' media, when configured.
    pub fn media(&self) -> Option<&CallMedia> {
        self.media.as_ref()
    }

    /// The address client flow `flow` connected from.
    pub fn flow_address(&mut self, flow: FlowId, address: IpAddr) {
        if let IpAddr::V4(v4) = address {
            self.flow_addresses.insert(flow, v4);
        }
    }

    /// A client connection opened.
    pub fn flow_opened(&mut self, flow: FlowId) {
        self.flows.insert(flow);
    }

    /// A client connection closed: requests for it now get 430.
    pub fn flow_closed(&mut self, flow: FlowId) {
        self.flows.remove(&flow);
        self.registered.remove(&flow);
        self.flow_addresses.remove(&flow);
        if let Some(media) = &mut self.media {
            media.end_owned_by(flow);
        }
    }

    /// Open client flows.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Flows that have completed a registration.
    pub fn registered_flows(&self) -> usize {
        self.registered.len()
    }

    /// The traversal zone came up or went down.
    pub fn set_traversal_up(&mut self, up: bool) {
        self.traversal_up = up;
        if let (false, Some(media)) = (up, &mut self.media) {
            media.end_all();
        }
    }

    /// Whether the traversal zone is up.
    pub fn traversal_up(&self) -> bool {
        self.traversal_up
    }

    /// The Retry-After seconds maintenance refusals carry (default 60).
    pub fn set_retry_after(&mut self, seconds: u32) {
        self.retry_after_s = seconds;
    }

    /// Maintenance mode: REGISTER from a flow that has not registered gets 503.
    pub fn set_maintenance(&mut self, on: bool) {
        self.maintenance = on;
        if let Some(m) = &mut self.media {
            m.log_mut()
                .set_maintenance(on, edgeway_flowtable::unix_ms());
        }
    }

    /// Whether maintenance mode is on.
    pub fn maintenance(&self) -> bool {
        self.maintenance
    }

    fn own_uri(&self, flow: FlowId) -> String {
        format!(
            "<sip:{FLOW_USER_PREFIX}{flow}@{}:{};transport=tls;lr;ob>",
            self.host, self.port
        )
    }

    /// A message arrived on client flow `flow`.
    pub fn client_message(&mut self, flow: FlowId, msg: Message, out: &mut Vec<EdgeOutput>) {
        self.counters
            .client_messages
            .fetch_add(1, Ordering::Relaxed);
        match msg {
            Message::Request(req) => self.client_request(flow, req, out),
            Message::Response(resp) => self.client_response(resp, out),
        }
    }

    fn client_request(&mut self, flow: FlowId, mut req: Request, out: &mut Vec<EdgeOutput>) {
        let reply = |out: &mut Vec<EdgeOutput>, bytes| out.push(EdgeOutput::ToClient(flow, bytes));
        let via = match check_request(&req, &self.counters) {
            Ok(via) => via,
            Err(bytes) => return reply(out, bytes),
        };
        if acks_local_response(&req) {
            return;
        }
        if req.method == Method::Register && self.maintenance && !self.registered.contains(&flow) {
            let retry = [(HeaderName::RetryAfter, self.retry_after_s.to_string())];
            return reply(
                out,
                refuse(
                    &self.counters.maintenance_refused,
                    &req,
                    503,
                    "Maintenance mode: new registrations refused",
                    &retry,
                ),
            );
        }
        if let Some(bytes) = crate::calls::maintenance_refusal(
            self.maintenance,
            &req,
            Leg::Outside,
            self.retry_after_s,
            &self.counters,
            self.media.as_mut(),
        ) {
            return reply(out, bytes);
        }
        if !self.traversal_up {
            return reply(
                out,
                refuse(
                    &self.counters.traversal_down_refused,
                    &req,
                    503,
                    "Traversal zone to the core is down",
                    &[],
                ),
            );
        }
        if let Err(bytes) = hop(&mut req) {
            return reply(out, bytes);
        }
        // Loose routing (RFC 3261 §16.4): the client's route set starts with the edge's
        // own Record-Route; it has done its job once the request is here.
        self.pop_own_route(&mut req);
        if let Some(media) = &mut self.media {
            let client = self.flow_addresses.get(&flow).map(|ip| (flow, *ip));
            if let Err(bytes) = media.request(Leg::Outside, &mut req, client) {
                return reply(out, bytes);
            }
        }
        let incoming = via.branch().unwrap_or("");
        let branch = derived_branch(&["edge", &flow.to_string(), incoming]);
        let mut own = Via::new(
            "TLS",
            Host::Domain(self.host.clone()),
            Some(self.port),
            &branch,
        );
        own.params.set("ewf", Some(&flow.to_string()));
        let added = req
            .headers
            .prepend(HeaderName::Via, own.to_string())
            .and_then(|()| match req.method {
                Method::Register => req.headers.prepend(HeaderName::Path, self.own_uri(flow)),
                Method::Invite | Method::Subscribe | Method::Refer => req
                    .headers
                    .prepend(HeaderName::RecordRoute, self.own_uri(flow)),
                _ => Ok(()),
            });
        if let Err(e) = added {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return reply(out, bad_request(&req, &e));
        }
        out.push(EdgeOutput::ToCore(req.to_bytes()));
    }

    fn client_response(&mut self, mut resp: Response, out: &mut Vec<EdgeOutput>) {
        // A client's answer to a request from inside: the edge's Via is on top.
        if pop_own_via(&mut resp, &self.host).is_none() {
            self.counters
                .stray_responses
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(media) = &mut self.media {
            media.response(Leg::Outside, &mut resp);
        }
        if self.traversal_up {
            out.push(EdgeOutput::ToCore(resp.to_bytes()));
        }
    }

    /// A message arrived from the core over the traversal zone.
    pub fn core_message(&mut self, msg: Message, out: &mut Vec<EdgeOutput>) {
        match msg {
            Message::Response(resp) => self.core_response(resp, out),
            Message::Request(req) => self.core_request(req, out),
        }
    }

    fn core_response(&mut self, mut resp: Response, out: &mut Vec<EdgeOutput>) {
        let Some(via) = pop_own_via(&mut resp, &self.host) else {
            self.counters
                .stray_responses
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(flow) = via.params.get("ewf").and_then(|f| f.parse::<FlowId>().ok()) else {
            self.counters
                .stray_responses
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !self.flows.contains(&flow) {
            self.counters.flow_gone.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let is_register = resp
            .headers
            .cseq()
            .is_ok_and(|c| c.method == Method::Register);
        if is_register && resp.is_success() {
            self.registered.insert(flow);
        }
        if matches!(resp.status, 401 | 407) {
            self.counters
                .challenges_relayed
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some(media) = &mut self.media {
            media.response(Leg::Inside, &mut resp);
        }
        out.push(EdgeOutput::ToClient(flow, resp.to_bytes()));
    }

    /// The flow a URI of this edge names (`ewf<N>@<edge host>`).
    fn flow_of(&self, uri: &Uri) -> Option<FlowId> {
        let sip = uri.as_sip()?;
        if !sip.host.to_string().eq_ignore_ascii_case(&self.host) {
            return None;
        }
        sip.user
            .as_deref()?
            .strip_prefix(FLOW_USER_PREFIX)?
            .parse()
            .ok()
    }

    /// Removes the top Route when it is one of this edge's own; the flow it named.
    fn pop_own_route(&self, req: &mut Request) -> Option<FlowId> {
        let route = req.headers.routes().ok()?.into_iter().next()?;
        let flow = self.flow_of(&route.uri)?;
        req.headers.remove_first_value(&HeaderName::Route).ok()?;
        Some(flow)
    }

    /// Which flow a request from inside is for: the edge's own Route entry (popped), else
    /// a Request-URI naming the flow.
    fn target_flow(&self, req: &mut Request) -> Option<FlowId> {
        self.pop_own_route(req).or_else(|| self.flow_of(&req.uri))
    }

    fn core_request(&mut self, mut req: Request, out: &mut Vec<EdgeOutput>) {
        let reply = |out: &mut Vec<EdgeOutput>, bytes| out.push(EdgeOutput::ToCore(bytes));
        let via = match check_request(&req, &self.counters) {
            Ok(via) => via,
            Err(bytes) => return reply(out, bytes),
        };
        if acks_local_response(&req) {
            return;
        }
        let Some(flow) = self.target_flow(&mut req) else {
            return reply(
                out,
                refuse(
                    &self.counters.inbound_unknown,
                    &req,
                    404,
                    "No client flow named in Route",
                    &[],
                ),
            );
        };
        if !self.flows.contains(&flow) {
            return reply(
                out,
                refuse(&self.counters.flow_gone, &req, 430, "Flow Failed", &[]),
            );
        }
        if let Some(bytes) = crate::calls::maintenance_refusal(
            self.maintenance,
            &req,
            Leg::Inside,
            self.retry_after_s,
            &self.counters,
            self.media.as_mut(),
        ) {
            return reply(out, bytes);
        }
        if let Err(bytes) = hop(&mut req) {
            return reply(out, bytes);
        }
        if let Some(media) = &mut self.media {
            // A call to the client: its media may latch only from the client's address,
            // and ends with the client's connection.
            let client = self.flow_addresses.get(&flow).map(|ip| (flow, *ip));
            if let Err(bytes) = media.request(Leg::Inside, &mut req, client) {
                return reply(out, bytes);
            }
        }
        let branch = derived_branch(&["edge-in", via.branch().unwrap_or("")]);
        let own = Via::new(
            "TLS",
            Host::Domain(self.host.clone()),
            Some(self.port),
            &branch,
        );
        let added = req
            .headers
            .prepend(HeaderName::Via, own.to_string())
            .and_then(|()| match req.method {
                // The edge stays in the dialog's path (Expressway-E record-routes): the
                // core's later requests name the client's flow through it.
                Method::Invite | Method::Subscribe | Method::Refer
                    if req.headers.to_addr().is_ok_and(|t| t.tag().is_none()) =>
                {
                    req.headers
                        .prepend(HeaderName::RecordRoute, self.own_uri(flow))
                }
                _ => Ok(()),
            });
        if let Err(e) = added {
            return reply(out, bad_request(&req, &e));
        }
        self.counters
            .inbound_requests
            .fetch_add(1, Ordering::Relaxed);
        out.push(EdgeOutput::ToClient(flow, req.to_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKc1\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=1\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: c1\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:alice@192.0.2.1:5061;transport=tls>\r\n\
Content-Length: 0\r\n\r\n";

    fn parse(b: &[u8]) -> Message {
        Message::parse(b).expect("parse")
    }

    #[test]
    fn register_gets_via_and_path_with_the_flow_and_the_response_returns_down_it() {
        let mut edge = EdgeProxy::new("edge.example.com", 5061, Arc::default());
        edge.flow_opened(7);
        edge.set_traversal_up(true);
        let mut out = Vec::new();
        edge.client_message(7, parse(REGISTER.as_bytes()), &mut out);
        let [EdgeOutput::ToCore(fwd)] = &out[..] else {
            panic!("{out:?}")
        };
        let Message::Request(fwd) = parse(fwd) else {
            panic!()
        };
        let path = fwd.headers.paths().expect("path");
        assert_eq!(
            path[0].uri.to_string(),
            "sip:ewf7@edge.example.com:5061;transport=tls;lr;ob"
        );
        let top = fwd.headers.top_via().expect("via");
        assert_eq!(top.params.get("ewf"), Some("7"));
        let resp = fwd.make_response(200, "OK", None);
        out.clear();
        edge.core_message(Message::Response(resp), &mut out);
        let [EdgeOutput::ToClient(7, back)] = &out[..] else {
            panic!("{out:?}")
        };
        let Message::Response(back) = parse(back) else {
            panic!()
        };
        assert_eq!(
            back.headers.top_via().expect("via").branch(),
            Some("z9hG4bKc1")
        );
        assert_eq!(edge.registered_flows(), 1);
    }

    #[test]
    fn refusals_traversal_down_maintenance_and_gone_flows() {
        let counters = Arc::new(Counters::default());
        let mut edge = EdgeProxy::new("edge.example.com", 5061, counters.clone());
        edge.flow_opened(1);
        let mut out = Vec::new();
        edge.client_message(1, parse(REGISTER.as_bytes()), &mut out);
        assert!(matches!(&out[..], [EdgeOutput::ToClient(1, b)] if b.starts_with(b"SIP/2.0 503")));
        edge.set_traversal_up(true);
        edge.set_maintenance(true);
        out.clear();
        edge.client_message(1, parse(REGISTER.as_bytes()), &mut out);
        let [EdgeOutput::ToClient(1, b)] = &out[..] else {
            panic!()
        };
        assert!(String::from_utf8_lossy(b).contains("Retry-After: 60"));
        let options = "OPTIONS sip:alice@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/TCP core:5060;branch=z9hG4bKx\r\n\
Route: <sip:ewf9@edge.example.com:5061;lr>\r\nFrom: <sip:ucm@example.com>;tag=a\r\nTo: <sip:alice@example.com>\r\n\
Call-ID: o1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        out.clear();
        edge.core_message(parse(options.as_bytes()), &mut out);
        assert!(matches!(&out[..], [EdgeOutput::ToCore(b)] if b.starts_with(b"SIP/2.0 430")));
        assert_eq!(counters.flow_gone.load(Ordering::Relaxed), 1);
        // The ACK of a refusal the edge answered itself ends at the edge, from either side;
        // another ACK (of a dialog's 2xx) goes on.
        let ack = |to_tag: &str, route: &str| {
            format!(
                "ACK sip:alice@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/TCP core:5060;branch=z9hG4bKa\r\n\
{route}From: <sip:ucm@example.com>;tag=a\r\nTo: <sip:alice@example.com>;tag={to_tag}\r\n\
Call-ID: a1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
        };
        edge.flow_opened(9);
        let via_flow = "Route: <sip:ewf9@edge.example.com:5061;lr>\r\n";
        out.clear();
        edge.core_message(parse(ack("ew", via_flow).as_bytes()), &mut out);
        edge.client_message(1, parse(ack("ew", "").as_bytes()), &mut out);
        assert!(out.is_empty(), "{out:?}");
        edge.core_message(parse(ack("phone", via_flow).as_bytes()), &mut out);
        assert!(
            matches!(&out[..], [EdgeOutput::ToClient(9, b)] if b.starts_with(b"ACK ")),
            "{out:?}"
        );
        assert_eq!(counters.maintenance_refused.load(Ordering::Relaxed), 1);
        assert_eq!(counters.traversal_down_refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_call_to_a_client_is_record_routed_and_the_clients_route_to_the_edge_is_popped() {
        let mut edge = EdgeProxy::new("edge.example.com", 5061, Arc::default());
        edge.flow_opened(4);
        edge.set_traversal_up(true);
        let invite = "INVITE sip:alice@192.0.2.1:5061;transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS core.example.com:5060;branch=z9hG4bK-ewx\r\n\
Route: <sip:ewf4@edge.example.com:5061;transport=tls;lr;ob>\r\nMax-Forwards: 70\r\n\
From: <sip:2001@example.com>;tag=c1\r\nTo: <sip:alice@example.com>\r\nCall-ID: o1\r\n\
CSeq: 1 INVITE\r\nContact: <sip:core.example.com:5060;transport=tls>\r\nContent-Length: 0\r\n\r\n";
        let mut out = Vec::new();
        edge.core_message(parse(invite.as_bytes()), &mut out);
        let [EdgeOutput::ToClient(4, fwd)] = &out[..] else {
            panic!("{out:?}")
        };
        let Message::Request(fwd) = parse(fwd) else {
            panic!("request")
        };
        assert!(
            fwd.headers.routes().expect("Route").is_empty(),
            "its Route popped"
        );
        let rr = fwd.headers.record_routes().expect("Record-Route");
        assert_eq!(
            rr[0].uri.to_string(),
            "sip:ewf4@edge.example.com:5061;transport=tls;lr;ob",
            "the edge stays in the dialog, naming the flow"
        );
        // The client's BYE routes through the edge first: that Route is the edge's own.
        let bye = "BYE sip:core.example.com:5060;transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKb1\r\n\
Route: <sip:ewf4@edge.example.com:5061;transport=tls;lr;ob>\r\nMax-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a\r\nTo: <sip:2001@example.com>;tag=c1\r\nCall-ID: o1\r\n\
CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
        out.clear();
        edge.client_message(4, parse(bye.as_bytes()), &mut out);
        let [EdgeOutput::ToCore(fwd)] = &out[..] else {
            panic!("{out:?}")
        };
        let Message::Request(fwd) = parse(fwd) else {
            panic!("request")
        };
        assert!(fwd.headers.routes().expect("Route").is_empty());
    }
}
