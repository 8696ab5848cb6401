//! Calls' media on this node: every SDP body of a call crossing the node goes through the
//! b2bua planner (`EdgeCall` on the edge, `CoreCall` on the core), and each resulting
//! `FlowUpdate` is applied to the node's flow table at once, opened through
//! `edgeway_xdp::open_table` so a change reaches the XDP map in the same call.
//!
//! Driven by the signalling: [`CallMedia::request`] for a request crossing from one leg
//! (its body rewritten in place, or a refusal to send back to its sender) and
//! [`CallMedia::response`] for a response, keyed by the message's Call-ID (the edge is a
//! proxy: a call has one Call-ID there); the core's B2BUA, whose two dialogs have two
//! Call-IDs, calls [`CallMedia::request_for`] and [`CallMedia::response_for`] with the
//! outside one as the key. [`CallMedia::idle_calls`] lists established calls whose every
//! watched RTP entry went idle (the B2BUA hangs them up; a call on hold in either direction
//! has no entry with an idle timeout, so a hold of any flavour and length survives).
//! Offer or answer is decided per call: a body from the leg the pending offer did not come
//! from is its answer; any other body is a new offer. What happens per method:
//!
//! - INVITE, UPDATE (and PRACK or ACK carrying a body): offer or answer as above; an INVITE
//!   without a body opens the call so the offer in its 2xx is planned.
//! - a 1xx/2xx with a body to INVITE/UPDATE/PRACK: offer or answer; a repeat of the body
//!   last planned from that leg (the 2xx after a 183 with the same SDP, a retransmission)
//!   gets the same rewritten body again.
//! - a final failure to INVITE: a call not yet answered is torn down; a refused re-INVITE or
//!   UPDATE rolls back to the media before it (`offer_failed`).
//! - BYE or CANCEL: the call is torn down when the request crosses.
//! - the client connection that opened a call closes (edge), or the traversal zone goes
//!   down (both roles): its calls, or all calls, are torn down.
//! - a bad body in a request: the planner's status and `Warning` go back to its sender and
//!   the call is left as before (a new call is forgotten). In a response: the call is torn
//!   down and the response becomes the planner's status with its `Warning` (on the core
//!   the B2BUA then ACKs the callee's 2xx and hangs it up; on the edge, a proxy, the
//!   callee's dialog is left without an ACK: known limit).
//!
//! Time is the table's Unix milliseconds (`edgeway_flowtable::unix_ms`); keys come from the
//! OS CSPRNG.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use edgeway_b2bua::{
    CoreCall, CoreConfig, EdgeCall, EdgeConfig, FlowUpdate, InsideSecurity, Leg, PlanError, Planned,
};
use edgeway_flowtable::{unix_ms, FlowKey, FlowTable};
use edgeway_sip::{HeaderName, Method, Request, Response};

use crate::calls::{CallLog, EndCause};
use crate::counters::Counters;
use crate::sip_util::local_response;

/// What the node's media needs at start.
#[derive(Debug, Clone)]
pub enum MediaRole {
    /// An edge relaying between clients and the core.
    Edge(EdgeConfig),
    /// A core re-keying between the edge and the phones; `InsideSecurity` is the phones'
    /// profile when nothing else says (the configured default).
    Core(CoreConfig, InsideSecurity),
}

/// Why the node's media could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The flow table (or its XDP maps) could not be opened: is the data plane running?
    #[error("flow table {dir}: {message} (start edgeway-dataplane for this node first)")]
    Table {
        /// The table directory.
        dir: String,
        /// What went wrong.
        message: String,
    },
}

enum Plan {
    Edge(EdgeCall),
    Core(CoreCall),
}

struct Call {
    plan: Plan,
    /// The leg the offer awaiting its answer came from.
    pending: Option<Leg>,
    /// Whether an INVITE of the call got its 2xx.
    established: bool,
    /// The last body planned from each leg and what it became.
    last: HashMap<Leg, (Vec<u8>, Vec<u8>)>,
    /// The client connection whose INVITE opened the call (edge), ended with it.
    owner: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Offer,
    Answer,
}

/// The calls of one node and its flow table.
pub struct CallMedia {
    table: FlowTable,
    role: MediaRole,
    calls: HashMap<String, Call>,
    next_call: u64,
    counters: Arc<Counters>,
    agent: String,
    /// Call status and history (fed by the `self.log` hooks below).
    log: CallLog,
}

impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMedia")
            .field("calls", &self.calls.len())
            .field("next_call", &self.next_call)
            .finish()
    }
}

fn other(leg: Leg) -> Leg {
    match leg {
        Leg::Outside => Leg::Inside,
        Leg::Inside => Leg::Outside,
    }
}

impl CallMedia {
    /// Opens the table in `table_dir` (created by the node's data plane) for `role`;
    /// `agent` names this node in `Warning` headers.
    pub fn open(
        table_dir: &Path,
        role: MediaRole,
        agent: &str,
        counters: Arc<Counters>,
    ) -> Result<CallMedia, MediaError> {
        let (table, _) =
            edgeway_xdp::open_table(table_dir, None).map_err(|e| MediaError::Table {
                dir: table_dir.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(CallMedia {
            table,
            role,
            calls: HashMap::new(),
            // Call numbers start from a random base so a restarted node never reuses the flow
            // ids of entries its previous run may have left (below 2^40: flow ids need 8 bits).
            next_call: rand::random::<u64>() >> 24,
            counters,
            agent: agent.to_owned(),
            log: CallLog::new(),
        })
    }

    /// Calls with media state.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Entries in the node's table (every call's, and any written by hand).
    pub fn flow_count(&self) -> usize {
        self.table.iter().count()
    }

    /// The node's call status and history.
    pub fn log(&self) -> &CallLog {
        &self.log
    }

    /// The call log, to record what happens outside the media (maintenance, refusals).
    pub fn log_mut(&mut self) -> &mut CallLog {
        &mut self.log
    }

    /// Call `key`'s flows as they stand in the table now (empty for an unknown call).
    pub fn call_flows(&self, key: &str) -> Vec<crate::calls::FlowView> {
        self.calls
            .get(key)
            .map(|c| crate::calls::flows(&self.table, plan_entries(&c.plan)))
            .unwrap_or_default()
    }

    fn new_call(&mut self, client_ip: Option<Ipv4Addr>, owner: Option<u64>) -> Call {
        self.next_call += 1;
        let n = self.next_call;
        let plan = match &self.role {
            MediaRole::Edge(cfg) => Plan::Edge(EdgeCall::new(
                cfg,
                n,
                client_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            )),
            MediaRole::Core(cfg, inside) => Plan::Core(CoreCall::new(cfg, n, *inside)),
        };
        Call {
            plan,
            pending: None,
            established: false,
            last: HashMap::new(),
            owner,
        }
    }

    /// Applies `update`; a table refusal tears the call down (nothing of it stays).
    fn apply(&mut self, call_id: &str, update: &FlowUpdate) -> Result<(), String> {
        match update.apply(&self.table) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.counters
                    .media_table_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.log.set_cause(call_id, EndCause::MediaRefused(503));
                self.end(call_id);
                Err(e.to_string())
            }
        }
    }

    /// Tears down a call's media (BYE, CANCEL, failure): every entry removed.
    pub fn end(&mut self, call_id: &str) {
        let Some(mut call) = self.calls.remove(call_id) else {
            return;
        };
        let now = unix_ms();
        let media = crate::calls::flows(&self.table, plan_entries(&call.plan));
        self.log.ended(call_id, crate::calls::totals(&media), now);
        let mut pool = self.table.ports();
        let update = match &mut call.plan {
            Plan::Edge(c) => c.teardown(now, &mut pool),
            Plan::Core(c) => c.teardown(now, &mut pool),
        };
        if update.apply(&self.table).is_err() {
            self.counters
                .media_table_errors
                .fetch_add(1, Ordering::Relaxed);
        }
        self.counters.calls_ended.fetch_add(1, Ordering::Relaxed);
    }

    fn plan(&mut self, call_id: &str, from: Leg, body: &[u8]) -> Result<Vec<u8>, PlanError> {
        let Some(call) = self.calls.get_mut(call_id) else {
            return Ok(body.to_vec());
        };
        if let Some((input, output)) = call.last.get(&from) {
            if input == body && call.pending != Some(other(from)) {
                return Ok(output.clone());
            }
        }
        let kind = if call.pending == Some(other(from)) {
            Kind::Answer
        } else {
            Kind::Offer
        };
        let now = unix_ms();
        let mut pool = self.table.ports();
        let mut rng = rand::rngs::OsRng;
        let planned: Result<Planned, PlanError> = match (&mut call.plan, kind) {
            (Plan::Edge(c), Kind::Offer) => c.offer(from, now, body, &mut pool),
            (Plan::Edge(c), Kind::Answer) => c.answer(from, now, body, &mut pool),
            (Plan::Core(c), Kind::Offer) => c.offer(from, now, body, &mut pool, &mut rng),
            (Plan::Core(c), Kind::Answer) => c.answer(from, now, body, &mut pool, &mut rng),
        };
        let planned = planned?;
        call.pending = match kind {
            Kind::Offer => Some(from),
            Kind::Answer => None,
        };
        call.last.insert(from, (body.to_vec(), planned.sdp.clone()));
        self.apply(call_id, &planned.flows)
            .map_err(|e| PlanError::Ports(format!("flow table refused the call: {e}")))?;
        Ok(planned.sdp)
    }

    fn refusal(&self, e: &PlanError) -> (u16, String) {
        self.counters.media_refused.fetch_add(1, Ordering::Relaxed);
        (e.status(), e.warning(&self.agent))
    }

    /// The headers of a request's refusal: the `Warning`, and the `Retry-After` (random,
    /// 0-10 s) RFC 3311 §5.2 asks of a 500 for an offer sent before the last was answered.
    fn refusal_headers(e: &PlanError, warning: String) -> Vec<(HeaderName, String)> {
        let mut extra = vec![(HeaderName::Warning, warning)];
        if e.needs_retry_after() {
            let secs = rand::Rng::gen_range(&mut rand::rngs::OsRng, 0..=10u32);
            extra.push((HeaderName::RetryAfter, secs.to_string()));
        }
        extra
    }

    /// Ends every call opened from client connection `owner` (it closed: the client can
    /// no longer send BYE, so its media must not outlive it).
    pub fn end_owned_by(&mut self, owner: u64) {
        let gone: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.owner == Some(owner))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.log.set_cause(&id, EndCause::ConnectionLost);
            self.end(&id);
        }
    }

    /// Established calls whose every watched RTP entry the data plane marked idle or
    /// already removed for idleness (`[media] idle_timeout_ms`): no media arrives either way,
    /// so they should end. A call the SDP put on hold in either direction (sendonly,
    /// recvonly, inactive, 0.0.0.0) is not watched: its entries carry no idle timeout until
    /// the resume replaces them, which restarts their idle clock. RTCP entries never count
    /// (many clients never send RTCP).
    pub fn idle_calls(&self) -> Vec<String> {
        self.calls
            .iter()
            .filter(|(_, c)| c.established)
            .filter(|(_, c)| {
                let rtp: Vec<&FlowKey> = match &c.plan {
                    Plan::Edge(p) => p.idle_watched_keys().collect(),
                    Plan::Core(p) => p.idle_watched_keys().collect(),
                };
                !rtp.is_empty()
                    && rtp.into_iter().all(|key| {
                        self.table
                            .lookup(key)
                            .is_none_or(|(slot, _)| self.table.state(slot).idle != 0)
                    })
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ends every call (the traversal zone went down: no call crosses it any more).
    pub fn end_all(&mut self) {
        let all: Vec<String> = self.calls.keys().cloned().collect();
        for id in all {
            self.log.set_cause(&id, EndCause::ConnectionLost);
            self.end(&id);
        }
    }

    /// A request crossing the node from `from` (`client`: the client connection and its
    /// signalling address, on the edge's outside leg). Its SDP body is rewritten in place;
    /// `Err` holds the response to send back to its sender instead of forwarding it.
    pub fn request(
        &mut self,
        from: Leg,
        req: &mut Request,
        client: Option<(u64, Ipv4Addr)>,
    ) -> Result<(), Vec<u8>> {
        let Ok(call_id) = req.headers.call_id().map(str::to_owned) else {
            return Ok(());
        };
        self.request_for(&call_id, from, req, client)
    }

    /// [`CallMedia::request`] for the call keyed `call_id` whatever the request's own
    /// Call-ID (the core's B2BUA keys both of a call's dialogs by the outside one).
    pub fn request_for(
        &mut self,
        call_id: &str,
        from: Leg,
        req: &mut Request,
        client: Option<(u64, Ipv4Addr)>,
    ) -> Result<(), Vec<u8>> {
        let call_id = call_id.to_owned();
        self.log.request(&call_id, from, req);
        match req.method {
            Method::Bye | Method::Cancel => {
                self.end(&call_id);
                return Ok(());
            }
            Method::Invite if !self.calls.contains_key(&call_id) => {
                let call = self.new_call(client.map(|c| c.1), client.map(|c| c.0));
                self.calls.insert(call_id.clone(), call);
                self.log
                    .started(&call_id, self.next_call, from, req, unix_ms());
                self.counters.calls_started.fetch_add(1, Ordering::Relaxed);
            }
            Method::Invite | Method::Update | Method::Prack | Method::Ack => {}
            _ => return Ok(()),
        }
        if req.body.is_empty() {
            return Ok(());
        }
        let fresh = !self
            .calls
            .get(&call_id)
            .is_some_and(|c| c.established || !c.last.is_empty());
        match self.plan(&call_id, from, &req.body.clone()) {
            Ok(sdp) => {
                // The rewritten body is SDP this node made; a refusal cannot happen.
                let _ = req.set_body(None, sdp);
                Ok(())
            }
            Err(e) => {
                let (status, warning) = self.refusal(&e);
                if fresh || req.method == Method::Ack {
                    self.log.set_cause(&call_id, EndCause::MediaRefused(status));
                    self.end(&call_id);
                }
                let reason = match status {
                    488 => "Not Acceptable Here",
                    503 => "Service Unavailable",
                    _ => "Media refused",
                };
                Err(local_response(
                    req,
                    status,
                    reason,
                    &Self::refusal_headers(&e, warning),
                ))
            }
        }
    }

    /// A response crossing the node from `from` (the leg of the party that answered).
    pub fn response(&mut self, from: Leg, resp: &mut Response) {
        let Ok(call_id) = resp.headers.call_id().map(str::to_owned) else {
            return;
        };
        self.response_for(&call_id, from, resp);
    }

    /// [`CallMedia::response`] for the call keyed `call_id` (see [`CallMedia::request_for`]).
    pub fn response_for(&mut self, call_id: &str, from: Leg, resp: &mut Response) {
        let call_id = call_id.to_owned();
        let Ok(cseq) = resp.headers.cseq() else {
            return;
        };
        self.log.response(&call_id, from, resp, unix_ms());
        if !matches!(cseq.method, Method::Invite | Method::Update | Method::Prack) {
            return;
        }
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if resp.status >= 300 {
            if cseq.method == Method::Invite && !call.established {
                self.end(&call_id);
            } else if call.pending.is_some() {
                let now = unix_ms();
                let mut pool = self.table.ports();
                let update = match &mut call.plan {
                    Plan::Edge(c) => c.offer_failed(now, &mut pool),
                    Plan::Core(c) => c.offer_failed(now, &mut pool),
                };
                call.pending = None;
                let _ = self.apply(&call_id, &update);
            }
            return;
        }
        if resp.status >= 200 && cseq.method == Method::Invite {
            call.established = true;
        }
        if resp.body.is_empty() {
            return;
        }
        match self.plan(&call_id, from, &resp.body.clone()) {
            Ok(sdp) => {
                let _ = resp.set_body(None, sdp);
            }
            Err(e) => {
                let (status, warning) = self.refusal(&e);
                self.log.set_cause(&call_id, EndCause::MediaRefused(status));
                self.end(&call_id);
                resp.status = status;
                resp.reason = "Media refused".into();
                let _ = resp.set_body(None, Vec::new());
                resp.headers.remove_all(&HeaderName::ContentType);
                let _ = resp.headers.push(HeaderName::Warning, warning);
            }
        }
    }
}

/// The entries a call's plan has handed out.
fn plan_entries(
    plan: &Plan,
) -> &std::collections::BTreeMap<edgeway_flowtable::FlowKey, edgeway_flowtable::FlowEntry> {
    match plan {
        Plan::Edge(c) => c.entries(),
        Plan::Core(c) => c.entries(),
    }
}

impl CallMedia {
    /// The media of a node with `[media]` `cfg` in `role`.
    pub fn from_config(
        cfg: &crate::config::MediaConfig,
        role: crate::config::Role,
        agent: &str,
        counters: Arc<Counters>,
    ) -> Result<CallMedia, MediaError> {
        let role = match role {
            crate::config::Role::Edge => {
                let mut c = EdgeConfig::new(cfg.address, cfg.inside_address);
                c.demux_ports = cfg.demux_ports.clone();
                c.workers = cfg.workers;
                c.idle_timeout_ms = cfg.idle_timeout_ms;
                MediaRole::Edge(c)
            }
            crate::config::Role::Core => {
                let mut c = CoreConfig::new(cfg.address, cfg.inside_address);
                c.workers = cfg.workers;
                c.idle_timeout_ms = cfg.idle_timeout_ms;
                let inside = if cfg.inside_secure {
                    InsideSecurity::Secure
                } else {
                    InsideSecurity::NonSecure
                };
                MediaRole::Core(c, inside)
            }
        };
        CallMedia::open(&cfg.table_dir, role, agent, counters)
    }

    /// `calls` and `flows` for the admin `status`.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({"calls": self.call_count(), "flows": self.flow_count()})
    }
}
