//! Call status and call history of one node, as the guide's Status > Calls pages show them
//! (sans-IO: every event comes with the caller's `now`, Unix milliseconds).
//!
//! [`CallLog`] is fed by the node's call media ([`crate::media::CallMedia`]): a call is
//! [`started`](CallLog::started) by the INVITE that opens it, moves through proceeding,
//! ringing, established and on hold with the requests and responses that cross the node
//! ([`request`](CallLog::request), [`response`](CallLog::response)), learns why it ends
//! ([`set_cause`](CallLog::set_cause), first cause wins) and is moved into the bounded
//! history by [`ended`](CallLog::ended) with its final media counters. Each node keeps its
//! own: the edge's view (one component, through the traversal zone) and the core's (both
//! legs, with their Call-IDs and tags where the B2BUA makes them differ).
//!
//! Flows and their counters are not copied into the log: [`flows`] reads a call's entries
//! from the node's flow table when they are asked for (never key material, only the
//! suite's name). The log also keeps the node's drain state for maintenance mode: when
//! maintenance is on and the last call ends, the time it drained.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;

use edgeway_b2bua::Leg;
use edgeway_flowtable::unix_ms;
use edgeway_flowtable::{format_endpoint, suite_name, DropReason, FlowEntry, FlowKey, FlowTable};
use edgeway_sip::{HeaderName, Method, Request, Response};
use serde_json::{json, Value};

use crate::counters::Counters;
use crate::media::CallMedia;
use crate::sip_util::refuse;

/// Completed calls kept per node (the guide: "limited to the most recent 500 calls").
pub const HISTORY_LEN: usize = 500;

/// Where a current call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// INVITE sent on, no ringing yet.
    Proceeding,
    /// 180/183 seen.
    Ringing,
    /// The INVITE got its 2xx.
    Established,
    /// An offer after answer put the media on hold (sendonly, inactive, or 0.0.0.0).
    OnHold,
    /// BYE or CANCEL crossed; the call is being torn down.
    Ending,
}

impl CallState {
    /// The state's name in the admin API and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            CallState::Proceeding => "proceeding",
            CallState::Ringing => "ringing",
            CallState::Established => "established",
            CallState::OnHold => "on hold",
            CallState::Ending => "ending",
        }
    }
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndCause {
    /// The INVITE got this final failure status from the called side.
    Status(u16),
    /// A BYE from this side.
    Bye(Leg),
    /// The caller cancelled before answer.
    Cancel,
    /// Not answered in time.
    Timeout,
    /// Hung up by this node: no RTP either way, in a call not on hold, for the media
    /// timeout.
    MediaIdle,
    /// Hung up by this node: a whole session interval (RFC 4028) passed with no refresh.
    SessionExpired,
    /// This node refused the call's SDP (or its flows) with this status.
    MediaRefused(u16),
    /// The client's connection or the traversal zone went away mid-call.
    ConnectionLost,
    /// Refused because the node is in maintenance mode (503).
    Maintenance,
    /// Torn down by the node for no reason it recorded.
    Released,
}

impl EndCause {
    /// The SIP status the cause carries, if any.
    pub fn status(self) -> Option<u16> {
        match self {
            EndCause::Status(s) | EndCause::MediaRefused(s) => Some(s),
            EndCause::Maintenance => Some(503),
            _ => None,
        }
    }
}

impl fmt::Display for EndCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndCause::Status(s) => write!(f, "status {s}"),
            EndCause::Bye(leg) => write!(f, "BYE from {leg}"),
            EndCause::Cancel => f.write_str("CANCEL"),
            EndCause::Timeout => f.write_str("timeout"),
            EndCause::MediaIdle => f.write_str("media idle"),
            EndCause::SessionExpired => f.write_str("session expired"),
            EndCause::MediaRefused(s) => write!(f, "media refused ({s})"),
            EndCause::ConnectionLost => f.write_str("connection lost"),
            EndCause::Maintenance => f.write_str("maintenance (503)"),
            EndCause::Released => f.write_str("released"),
        }
    }
}

/// One leg's dialog identifiers as seen on that leg.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegIds {
    /// Call-ID.
    pub call_id: String,
    /// The caller's tag (From).
    pub from_tag: Option<String>,
    /// The callee's tag (To), once a response carried one.
    pub to_tag: Option<String>,
}

impl LegIds {
    fn json(&self, leg: &str) -> Value {
        json!({"leg": leg, "call_id": self.call_id, "from_tag": self.from_tag, "to_tag": self.to_tag})
    }
}

/// A call in progress.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The node's number for the call (its flows' call number).
    pub number: u64,
    /// The side the INVITE came from: outside for calls from a remote client.
    pub caller: Leg,
    /// From URI.
    pub from: String,
    /// To URI.
    pub to: String,
    /// The outside leg's identifiers, once a message crossed on it.
    pub outside: Option<LegIds>,
    /// The inside leg's identifiers, once a message crossed on it.
    pub inside: Option<LegIds>,
    /// When the INVITE crossed.
    pub started_ms: u64,
    /// When its 2xx crossed.
    pub answered_ms: Option<u64>,
    /// Where the call is.
    pub state: CallState,
    /// Why it is ending, once known.
    pub cause: Option<EndCause>,
    /// The state before a re-offer awaiting its answer (restored if it is refused).
    pub before_offer: Option<CallState>,
}

impl CallRecord {
    fn leg_mut(&mut self, leg: Leg) -> &mut Option<LegIds> {
        match leg {
            Leg::Outside => &mut self.outside,
            Leg::Inside => &mut self.inside,
        }
    }

    fn json(&self, now_ms: u64) -> Value {
        // A proxy's two sides carry one dialog (same Call-ID and caller's tag): listed once,
        // with the callee's tag from whichever side saw it. The B2BUA's two are both listed.
        let same = |o: &LegIds, i: &LegIds| o.call_id == i.call_id && o.from_tag == i.from_tag;
        let legs: Vec<Value> = match (&self.outside, &self.inside) {
            (Some(o), Some(i)) if same(o, i) => {
                let mut one = o.clone();
                one.to_tag = o.to_tag.clone().or_else(|| i.to_tag.clone());
                vec![one.json("outside")]
            }
            (o, i) => o
                .iter()
                .map(|o| o.json("outside"))
                .chain(i.iter().map(|i| i.json("inside")))
                .collect(),
        };
        json!({
            "call": self.number,
            "caller": self.caller.to_string(),
            "from": self.from,
            "to": self.to,
            "legs": legs,
            "state": self.state.name(),
            "started_ms": self.started_ms,
            "answered_ms": self.answered_ms,
            "duration_ms": now_ms.saturating_sub(self.started_ms),
        })
    }
}

/// A completed call in the history.
#[derive(Debug, Clone)]
pub struct CompletedCall {
    /// The call as it was when it ended.
    pub call: CallRecord,
    /// When it ended.
    pub ended_ms: u64,
    /// Why.
    pub cause: EndCause,
    /// Its media counters at the end (all its flows together).
    pub media: MediaCounters,
}

impl CompletedCall {
    /// The record as the admin API's `calls history` lists it.
    pub fn json(&self) -> Value {
        let mut v = self.call.json(self.ended_ms);
        v["state"] = json!("completed");
        v["ended_ms"] = json!(self.ended_ms);
        v["cause"] = json!(self.cause.to_string());
        v["status"] = json!(self.cause.status());
        v["media"] = self.media.json();
        v
    }
}

/// Media counters of a flow or of a whole call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaCounters {
    /// Packets received.
    pub packets_in: u64,
    /// Bytes (UDP payload) received.
    pub bytes_in: u64,
    /// Packets sent on.
    pub packets_out: u64,
    /// Bytes sent on.
    pub bytes_out: u64,
    /// Packets dropped, every reason.
    pub drops: u64,
    /// Of those, SRTP/SRTCP authentication failures.
    pub auth_failures: u64,
}

impl MediaCounters {
    fn add(&mut self, o: &MediaCounters) {
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        self.drops += o.drops;
        self.auth_failures += o.auth_failures;
    }

    /// The counters as JSON.
    pub fn json(&self) -> Value {
        json!({
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "drops": self.drops,
            "auth_failures": self.auth_failures,
        })
    }
}

/// One flow entry of a call as read from the table: where it receives, where it sends,
/// its suites (names only) and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowView {
    /// Local UDP port it receives on.
    pub local_port: u16,
    /// The source it latched (or, before that, the only address allowed to latch, or
    /// `any` when it does not latch).
    pub remote: String,
    /// Local port it sends from.
    pub out_port: u16,
    /// Where it sends, or `latched` when it answers the peer entry's source.
    pub out_to: String,
    /// The suite it decrypts with (`plain` for RTP).
    pub suite_in: String,
    /// The suite it encrypts with.
    pub suite_out: String,
    /// Its counters.
    pub counters: MediaCounters,
}

impl FlowView {
    fn json(&self) -> Value {
        let mut v = self.counters.json();
        for (k, x) in [
            ("local_port", json!(self.local_port)),
            ("remote", json!(self.remote)),
            ("out_port", json!(self.out_port)),
            ("out_to", json!(self.out_to)),
            ("suite_in", json!(self.suite_in)),
            ("suite_out", json!(self.suite_out)),
        ] {
            v[k] = x;
        }
        v
    }
}

/// A call's entries as they stand in `table` now (entries the data plane has not seen yet
/// read as zero counters).
pub fn flows(table: &FlowTable, entries: &BTreeMap<FlowKey, FlowEntry>) -> Vec<FlowView> {
    entries
        .iter()
        .map(|(key, planned)| {
            let found = table.lookup(key);
            let entry = found.as_ref().map_or(planned, |(_, e)| e);
            let (counters, state) = match &found {
                Some((slot, _)) => (table.counters(*slot), Some(table.state(*slot))),
                None => Default::default(),
            };
            let remote = match state.filter(|s| s.latched != 0) {
                Some(s) => format_endpoint(&s.latched_src),
                None if key.remote_port != 0 => {
                    format!("{}:{}", Ipv4Addr::from(key.remote_ip), key.remote_port)
                }
                // No source to latch to: the entry takes what its port receives.
                None if entry.permit_ip == [0; 4] => "any".to_owned(),
                None => format!("{} (not latched)", Ipv4Addr::from(entry.permit_ip)),
            };
            FlowView {
                local_port: key.local_port,
                remote,
                out_port: entry.out_local_port,
                out_to: if entry.out_remote.is_set() {
                    format_endpoint(&entry.out_remote)
                } else {
                    "latched".to_owned()
                },
                suite_in: suite_name(&entry.srtp_in),
                suite_out: suite_name(&entry.srtp_out),
                counters: MediaCounters {
                    packets_in: counters.rx_packets,
                    bytes_in: counters.rx_bytes,
                    packets_out: counters.tx_packets,
                    bytes_out: counters.tx_bytes,
                    drops: counters.drops.iter().sum(),
                    auth_failures: counters.drops[DropReason::AuthFailed as usize],
                },
            }
        })
        .collect()
}

/// All of `flows`' counters together.
pub fn totals(flows: &[FlowView]) -> MediaCounters {
    let mut sum = MediaCounters::default();
    for f in flows {
        sum.add(&f.counters);
    }
    sum
}

/// A current call with its flows, as the admin API's `calls` lists it.
pub fn current_json(call: &CallRecord, flows: &[FlowView], now_ms: u64) -> Value {
    let mut v = call.json(now_ms);
    v["flows"] = flows.iter().map(FlowView::json).collect();
    v["media"] = totals(flows).json();
    v
}

/// Whether a request opens a new call: an INVITE outside any dialog (no To tag).
pub fn is_new_call(req: &Request) -> bool {
    req.method == Method::Invite && req.headers.to_addr().is_ok_and(|t| t.tag().is_none())
}

/// Whether an SDP body puts its media on hold: `None` without a body.
fn holds(body: &[u8]) -> Option<bool> {
    if body.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    Some(
        text.lines()
            .map(str::trim)
            .any(|l| matches!(l, "a=sendonly" | "a=inactive") || l.starts_with("c=IN IP4 0.0.0.0")),
    )
}

/// The call status and call history of one node.
#[derive(Debug, Default)]
pub struct CallLog {
    current: HashMap<String, CallRecord>,
    history: VecDeque<CompletedCall>,
    completed: u64,
    maintenance_since: Option<u64>,
    drained_ms: Option<u64>,
}

impl CallLog {
    /// An empty log.
    pub fn new() -> CallLog {
        CallLog::default()
    }

    /// The INVITE `req` from `caller` opened call `key` (the media's call number `number`).
    pub fn started(&mut self, key: &str, number: u64, caller: Leg, req: &Request, now_ms: u64) {
        self.current
            .insert(key.to_owned(), record(number, caller, req, now_ms));
        // A call from inside may still arrive while draining: the node is busy again.
        self.drained_ms = None;
    }

    /// Records the identifiers `leg` carries for call `key` (what a message seen on that
    /// leg says; the B2BUA may set its own inside leg's here).
    pub fn leg_seen(&mut self, key: &str, leg: Leg, ids: LegIds) {
        if let Some(call) = self.current.get_mut(key) {
            let slot = call.leg_mut(leg);
            match slot {
                Some(known) if known.call_id == ids.call_id => {
                    if known.to_tag.is_none() {
                        known.to_tag = ids.to_tag;
                    }
                }
                _ => *slot = Some(ids),
            }
        }
    }

    /// A request of call `key` crossing from `from`: hold and resume, BYE, CANCEL.
    pub fn request(&mut self, key: &str, from: Leg, req: &Request) {
        let Some(call) = self.current.get_mut(key) else {
            return;
        };
        match req.method {
            Method::Bye => {
                call.state = CallState::Ending;
                call.cause.get_or_insert(EndCause::Bye(from));
            }
            Method::Cancel => {
                call.state = CallState::Ending;
                call.cause.get_or_insert(EndCause::Cancel);
            }
            Method::Invite | Method::Update
                if matches!(call.state, CallState::Established | CallState::OnHold) =>
            {
                let offered = match holds(&req.body) {
                    Some(true) => Some(CallState::OnHold),
                    Some(false) => Some(CallState::Established),
                    None => None,
                };
                if let Some(state) = offered {
                    call.before_offer.get_or_insert(call.state);
                    call.state = state;
                }
            }
            _ => {}
        }
        if call
            .leg_mut(from)
            .as_ref()
            .is_some_and(|l| l.to_tag.is_some())
        {
            // Both tags known: nothing to parse on this message's way through.
            return;
        }
        // The party on `from` is its dialog's caller only on the caller's leg: elsewhere
        // its own tag (From) is the callee's.
        let (own, peer) = (
            tag_of(req.headers.from_addr()),
            tag_of(req.headers.to_addr()),
        );
        let (from_tag, to_tag) = if from == call.caller {
            (own, peer)
        } else {
            (peer, own)
        };
        let call_id = req.headers.call_id().unwrap_or_default().to_owned();
        self.leg_seen(
            key,
            from,
            LegIds {
                call_id,
                from_tag,
                to_tag,
            },
        );
    }

    /// A response of call `key` crossing from `from` (the answering side).
    pub fn response(&mut self, key: &str, from: Leg, resp: &Response, now_ms: u64) {
        let Some(call) = self.current.get_mut(key) else {
            return;
        };
        let Ok(cseq) = resp.headers.cseq() else {
            return;
        };
        if cseq.method == Method::Update || call.answered_ms.is_some() {
            // A re-offer's outcome: a refusal puts the call back where it was.
            match (resp.status, call.before_offer) {
                (200..=299, _) => call.before_offer = None,
                (300.., Some(state)) => {
                    call.state = state;
                    call.before_offer = None;
                }
                _ => {}
            }
        }
        if cseq.method != Method::Invite {
            return;
        }
        let ids = LegIds {
            call_id: resp.headers.call_id().unwrap_or_default().to_owned(),
            from_tag: tag_of(resp.headers.from_addr()),
            to_tag: tag_of(resp.headers.to_addr()),
        };
        match resp.status {
            180..=199 if call.answered_ms.is_none() => call.state = CallState::Ringing,
            200..=299 if call.answered_ms.is_none() => {
                call.answered_ms = Some(now_ms);
                call.state = CallState::Established;
            }
            300.. if call.answered_ms.is_none() => {
                call.cause.get_or_insert(EndCause::Status(resp.status));
            }
            _ => {}
        }
        self.leg_seen(key, from, ids);
    }

    /// Why call `key` is ending, unless a cause is already known (the first one wins:
    /// a BYE's teardown is not "released").
    pub fn set_cause(&mut self, key: &str, cause: EndCause) {
        if let Some(call) = self.current.get_mut(key) {
            call.cause.get_or_insert(cause);
        }
    }

    /// Call `key` is over: into the history with its final `media` counters.
    pub fn ended(&mut self, key: &str, media: MediaCounters, now_ms: u64) {
        let Some(mut call) = self.current.remove(key) else {
            return;
        };
        call.state = CallState::Ending;
        let cause = call.cause.unwrap_or(EndCause::Released);
        self.push(CompletedCall {
            call,
            ended_ms: now_ms,
            cause,
            media,
        });
        if self.current.is_empty() && self.maintenance_since.is_some() {
            self.drained_ms.get_or_insert(now_ms);
        }
    }

    /// A new call `req` from `caller` refused before it had any state (maintenance mode):
    /// straight into the history, leaving the drain state as it was.
    pub fn refused(&mut self, caller: Leg, req: &Request, cause: EndCause, now_ms: u64) {
        let mut call = record(0, caller, req, now_ms);
        call.state = CallState::Ending;
        self.push(CompletedCall {
            call,
            ended_ms: now_ms,
            cause,
            media: MediaCounters::default(),
        });
    }

    fn push(&mut self, done: CompletedCall) {
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(done);
        self.completed += 1;
    }

    /// Maintenance mode switched `on` (or off) at `now_ms`.
    pub fn set_maintenance(&mut self, on: bool, now_ms: u64) {
        match (on, self.maintenance_since) {
            (true, None) => {
                self.maintenance_since = Some(now_ms);
                self.drained_ms = self.current.is_empty().then_some(now_ms);
            }
            (false, _) => {
                self.maintenance_since = None;
                self.drained_ms = None;
            }
            (true, Some(_)) => {}
        }
    }

    /// The current calls, by key.
    pub fn current(&self) -> impl Iterator<Item = (&str, &CallRecord)> {
        self.current.iter().map(|(k, c)| (k.as_str(), c))
    }

    /// Current calls.
    pub fn current_count(&self) -> usize {
        self.current.len()
    }

    /// The completed calls, newest first, at most `limit`.
    pub fn history(&self, limit: usize) -> impl Iterator<Item = &CompletedCall> {
        self.history.iter().rev().take(limit)
    }

    /// Calls completed since start (the history keeps the last [`HISTORY_LEN`]).
    pub fn completed_total(&self) -> u64 {
        self.completed
    }

    /// `drained` (maintenance on and no call left) and since when, for `status` and the
    /// `maintenance` command.
    pub fn drain_json(&self) -> Value {
        json!({
            "drained": self.maintenance_since.is_some() && self.current.is_empty(),
            "drained_at_ms": self.drained_ms,
            "maintenance_since_ms": self.maintenance_since,
            "calls": self.current.len(),
        })
    }
}

/// A new call's record from its INVITE.
fn record(number: u64, caller: Leg, req: &Request, now_ms: u64) -> CallRecord {
    let from = req.headers.from_addr().ok();
    let to = req.headers.to_addr().ok();
    let mut call = CallRecord {
        number,
        caller,
        from: from.as_ref().map(|a| a.uri.to_string()).unwrap_or_default(),
        to: to.as_ref().map(|a| a.uri.to_string()).unwrap_or_default(),
        outside: None,
        inside: None,
        started_ms: now_ms,
        answered_ms: None,
        state: CallState::Proceeding,
        cause: None,
        before_offer: None,
    };
    *call.leg_mut(caller) = Some(LegIds {
        call_id: req.headers.call_id().unwrap_or_default().to_owned(),
        from_tag: from.as_ref().and_then(|a| a.tag().map(str::to_owned)),
        to_tag: None,
    });
    call
}

/// In maintenance mode, the 503 with Retry-After for a request from `caller` that would
/// open a new call (counted, and kept in `media`'s history with cause maintenance); `None`
/// for anything else: calls already up and their in-dialog requests go on untouched.
pub fn maintenance_refusal(
    maintenance: bool,
    req: &Request,
    caller: Leg,
    retry_after_s: u32,
    counters: &Counters,
    media: Option<&mut CallMedia>,
) -> Option<Vec<u8>> {
    if !maintenance || !is_new_call(req) {
        return None;
    }
    if let Some(media) = media {
        media
            .log_mut()
            .refused(caller, req, EndCause::Maintenance, unix_ms());
    }
    let retry = [(HeaderName::RetryAfter, retry_after_s.to_string())];
    Some(refuse(
        &counters.maintenance_calls_refused,
        req,
        503,
        "Maintenance mode: new calls refused",
        &retry,
    ))
}

/// The admin API's `calls`: every current call with its flows and counters.
pub fn calls_json(media: Option<&CallMedia>) -> Value {
    let Some(media) = media else {
        return json!([]);
    };
    let now = unix_ms();
    let mut calls: Vec<(&str, &CallRecord)> = media.log().current().collect();
    calls.sort_by_key(|(_, c)| (c.started_ms, c.number));
    calls
        .into_iter()
        .map(|(key, call)| current_json(call, &media.call_flows(key), now))
        .collect()
}

/// The admin API's `calls history`: the last `limit` completed calls, newest first.
pub fn history_json(media: Option<&CallMedia>, limit: usize) -> Value {
    media
        .map(|m| m.log().history(limit).map(CompletedCall::json).collect())
        .unwrap_or_else(|| json!([]))
}

/// `drained` for `status` and the `maintenance` command: maintenance on and no call left
/// (a node without `[media]` keeps no call state, so it is drained as soon as it is on).
pub fn drain_json(maintenance: bool, media: Option<&CallMedia>) -> Value {
    match media {
        Some(m) => m.log().drain_json(),
        None => json!({"drained": maintenance, "drained_at_ms": null, "calls": 0}),
    }
}

fn tag_of(addr: Result<edgeway_sip::NameAddr, edgeway_sip::ParseError>) -> Option<String> {
    addr.ok().and_then(|a| a.tag().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeway_sip::Message;

    fn invite(call_id: &str, to_tag: Option<&str>, body: &str) -> Request {
        let to = match to_tag {
            Some(t) => format!("<sip:phone1@example.com>;tag={t}"),
            None => "<sip:phone1@example.com>".to_owned(),
        };
        let text = format!(
            "INVITE sip:phone1@example.com SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a1\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match Message::parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("test INVITE: {other:?}"),
        }
    }

    fn request(method: &str, call_id: &str) -> Request {
        let text = format!(
            "{method} sip:phone1@example.com SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK2\r\nMax-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:phone1@example.com>;tag=p1\r\nCall-ID: {call_id}\r\n\
CSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        match Message::parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("test {method}: {other:?}"),
        }
    }

    fn response(status: u16, call_id: &str) -> Response {
        let text = format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK1\r\n\
From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:phone1@example.com>;tag=p1\r\nCall-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        match Message::parse(text.as_bytes()) {
            Ok(Message::Response(r)) => r,
            other => panic!("test response: {other:?}"),
        }
    }

    #[test]
    fn a_call_moves_through_its_states_and_ends_in_history_with_its_cause() {
        let mut log = CallLog::new();
        log.started("c1", 7, Leg::Outside, &invite("c1", None, ""), 1_000);
        assert_eq!(log.current_count(), 1);
        log.response("c1", Leg::Inside, &response(100, "c1"), 1_010);
        log.response("c1", Leg::Inside, &response(180, "c1"), 1_100);
        let state = |log: &CallLog| log.current().next().map(|(_, c)| c.state);
        assert_eq!(state(&log), Some(CallState::Ringing));
        log.response("c1", Leg::Inside, &response(200, "c1"), 2_000);
        assert_eq!(state(&log), Some(CallState::Established));
        let hold = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/SAVP 0\r\na=sendonly\r\n";
        log.request("c1", Leg::Outside, &invite("c1", Some("p1"), hold));
        assert_eq!(state(&log), Some(CallState::OnHold));
        // Refused (488): the call is back where it was.
        log.response("c1", Leg::Inside, &response(488, "c1"), 2_500);
        assert_eq!(state(&log), Some(CallState::Established));
        log.request("c1", Leg::Outside, &invite("c1", Some("p1"), hold));
        assert_eq!(state(&log), Some(CallState::OnHold));
        let resume = hold.replace("sendonly", "sendrecv");
        log.request("c1", Leg::Outside, &invite("c1", Some("p1"), &resume));
        assert_eq!(state(&log), Some(CallState::Established));
        let (_, call) = log.current().next().expect("call");
        let v = current_json(call, &[], 3_000);
        assert_eq!(v["call"], 7);
        assert_eq!(v["from"], "sip:alice@example.com");
        assert_eq!(v["answered_ms"], 2_000);
        assert_eq!(v["duration_ms"], 2_000);
        assert_eq!(
            v["legs"].as_array().map(Vec::len),
            Some(1),
            "a proxied call's two sides are one dialog: {v}"
        );
        assert_eq!(v["legs"][0]["to_tag"], "p1");

        log.request("c1", Leg::Inside, &request("BYE", "c1"));
        let media = MediaCounters {
            packets_in: 10,
            ..MediaCounters::default()
        };
        // The teardown that follows names no cause of its own: the BYE's stays.
        log.set_cause("c1", EndCause::Released);
        log.ended("c1", media, 5_000);
        assert_eq!(log.current_count(), 0);
        let done = log.history(10).next().expect("in history");
        let v = done.json();
        assert_eq!(v["cause"], "BYE from inside");
        assert_eq!(v["duration_ms"], 4_000);
        assert_eq!(v["media"]["packets_in"], 10);
        assert_eq!(v["state"], "completed");
    }

    #[test]
    fn the_inside_leg_is_listed_when_its_dialog_differs() {
        let mut log = CallLog::new();
        log.started("c1", 1, Leg::Outside, &invite("c1", None, ""), 0);
        log.response("c1", Leg::Inside, &response(200, "inside-c1"), 10);
        let (_, call) = log.current().next().expect("call");
        let v = current_json(call, &[], 20);
        assert_eq!(v["legs"][1]["leg"], "inside", "{v}");
        assert_eq!(v["legs"][1]["call_id"], "inside-c1");
        assert!(
            v["legs"][0]["to_tag"].is_null(),
            "the B2BUA answered outside: {v}"
        );
        // The caller's ACK carries the outside dialog's callee tag.
        log.request("c1", Leg::Outside, &request("ACK", "c1"));
        let (_, call) = log.current().next().expect("call");
        assert_eq!(current_json(call, &[], 30)["legs"][0]["to_tag"], "p1");
    }

    #[test]
    fn refusals_and_failures_carry_their_status() {
        let mut log = CallLog::new();
        log.started("c1", 1, Leg::Outside, &invite("c1", None, ""), 0);
        log.response("c1", Leg::Inside, &response(486, "c1"), 10);
        log.ended("c1", MediaCounters::default(), 10);
        log.started("c2", 2, Leg::Outside, &invite("c2", None, ""), 20);
        log.set_cause("c2", EndCause::MediaRefused(488));
        log.ended("c2", MediaCounters::default(), 20);
        let causes: Vec<Value> = log.history(10).map(|c| c.json()).collect();
        assert_eq!(causes[0]["cause"], "media refused (488)");
        assert_eq!(causes[0]["status"], 488);
        assert_eq!(causes[1]["cause"], "status 486");
    }

    #[test]
    fn history_keeps_the_last_500_calls_newest_first() {
        let mut log = CallLog::new();
        for n in 0..(HISTORY_LEN as u64 + 37) {
            let key = format!("c{n}");
            log.started(&key, n, Leg::Outside, &invite(&key, None, ""), n);
            log.ended(&key, MediaCounters::default(), n + 1);
        }
        assert_eq!(log.history(usize::MAX).count(), HISTORY_LEN);
        assert_eq!(log.completed_total(), HISTORY_LEN as u64 + 37);
        let newest = log.history(1).next().expect("newest");
        assert_eq!(newest.call.number, HISTORY_LEN as u64 + 36);
        let oldest = log.history(usize::MAX).last().expect("oldest");
        assert_eq!(oldest.call.number, 37, "the first 37 fell off");
        assert_eq!(log.history(3).count(), 3);
    }

    #[test]
    fn maintenance_drains_when_the_last_call_ends() {
        let mut log = CallLog::new();
        log.started("c1", 1, Leg::Outside, &invite("c1", None, ""), 0);
        log.set_maintenance(true, 100);
        assert_eq!(log.drain_json()["drained"], false);
        log.refused(
            Leg::Outside,
            &invite("c2", None, ""),
            EndCause::Maintenance,
            150,
        );
        assert_eq!(log.drain_json()["drained"], false, "c1 still runs");
        assert_eq!(
            log.history(1).next().map(|c| c.cause),
            Some(EndCause::Maintenance)
        );
        log.ended("c1", MediaCounters::default(), 200);
        let d = log.drain_json();
        assert_eq!(d["drained"], true);
        assert_eq!(d["drained_at_ms"], 200);
        log.set_maintenance(false, 300);
        assert_eq!(log.drain_json()["drained"], false);
        log.set_maintenance(true, 400);
        assert_eq!(log.drain_json()["drained_at_ms"], 400, "nothing to drain");
    }

    #[test]
    fn only_out_of_dialog_invites_are_new_calls() {
        assert!(is_new_call(&invite("c1", None, "")));
        assert!(!is_new_call(&invite("c1", Some("p1"), "")));
        assert!(!is_new_call(&request("BYE", "c1")));
    }
}
