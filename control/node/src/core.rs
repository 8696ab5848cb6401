//! The core's proxy decisions (sans-IO): domains, maintenance, the registration table,
//! Contact/Path rewriting, and routing between the traversal zone and Unified CM.
//!
//! REGISTER from the edge carries the edge's Path (naming the client's flow). By default
//! the core keeps that Path in its binding, removes it, and rewrites each Contact to
//! `sip:b<id>@<core>` so Unified CM sends inbound requests to the core, which restores the
//! original Contact as Request-URI and routes through the edge's Path. With "SIP Path
//! headers" on, the core adds its own Path and leaves Contact and the edge's Path alone;
//! Unified CM then routes through both. Digest challenges pass through untouched.
//!
//! Route choice: a request goes to the first configured Unified CM node that is connected,
//! through its `CEtls-` zone when the node is configured for TLS, else its `CEtcp-` zone.
//!
//! Calls: the core is a B2BUA (`edgeway_b2bua::B2bCall`). An INVITE outside a dialog from
//! the edge (a client calling in) or from Unified CM to a binding (a call to a client)
//! gets `100 Trying` and becomes a second, independent dialog on the other side: a fresh
//! Call-ID and From tag, the core's own Via and Contact, CSeq 1; Request-URI, From and To
//! identities and the end-to-end headers kept (the client's Contact, Via and Record-Route
//! never go inside). Towards a client the new INVITE is routed by the binding's edge Path
//! (the edge record-routes it, so the outside dialog's later requests name the client's
//! flow). Every later message is matched to its call by (leg, Call-ID) before any proxy
//! logic: responses map back with the other dialog's tags, the 2xx ACK is rebuilt per
//! dialog and a non-2xx is ACKed here, CANCEL is answered 200 and sent on for the new
//! INVITE (its 487 comes back), and BYE, re-INVITE, UPDATE, PRACK, INFO, REFER/NOTIFY,
//! OPTIONS, SUBSCRIBE and MESSAGE inside the call's dialogs cross through `DialogPair`.
//! Attended transfer: a `Replaces` in an INVITE and the `?Replaces=` of a REFER's Refer-To
//! name a dialog by the identifiers of the leg they arrive on; when it is one of this
//! core's calls they are rewritten to the call's other leg (its Call-ID, tags swapped per
//! side), otherwise passed unchanged; an INVITE naming one of our Call-IDs with the wrong
//! tags gets 481 (RFC 3891 §3), a malformed value 400.
//! Out-of-dialog OPTIONS, MESSAGE, SUBSCRIBE and NOTIFY (and dialogs a SUBSCRIBE makes)
//! stay proxied as before. Both dialogs' SDP goes through [`CallMedia`] keyed by the
//! outside Call-ID (the one the edge sees). [`CoreProxy::call_timeouts`]: a call not
//! answered within `core.call_setup_timeout_ms` (180 s) gets 408 on the caller's leg and a
//! CANCEL on the callee's; an in-dialog request unanswered for 32 s gets 408 (the timer
//! F give-up; TCP/TLS only, so nothing is retransmitted); an established call not on hold
//! whose every watched RTP entry went idle, or whose negotiated session interval (RFC 4028:
//! the Session-Expires of the last 2xx to INVITE or UPDATE, at least 90 s) passed with no
//! refresh, is hung up with BYE on both legs (recorded as `media idle` or `session
//! expired`); after the traversal zone drops, the inside legs are ended.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeway_b2bua::{
    refer_to_replaces, rewrite_refer_to, B2bCall, CallError, Leg, NewLeg, PairError, Replaces,
    ReplacesError, SetupState,
};
use edgeway_sip::{
    ContactList, DialogError, HeaderName, Host, Message, Method, NameAddr, Request, Response,
    SipUri, Uri, Via,
};
use serde::Serialize;

use crate::config::{DomainConfig, UcmNode, UcmTransport};
use crate::counters::Counters;
use crate::media::CallMedia;
use crate::sip_util::{
    acks_local_response, bad_request, check_request, derived_branch, hop, local_response,
    pop_own_via, reason_phrase, refuse,
};

/// A connection to or from Unified CM, numbered by the IO layer.
pub type ConnId = u64;

/// What the IO layer must send after a call into [`CoreProxy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreOutput {
    /// Write to the edge over the traversal zone.
    ToEdge(Vec<u8>),
    /// Write on this Unified CM connection.
    ToUcm(ConnId, Vec<u8>),
}

/// An automatically generated neighbour zone towards one Unified CM node.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Zone {
    /// `CEtcp-<node>` or `CEtls-<node>`.
    pub name: String,
    /// The node's name.
    pub node: String,
    /// `tcp` or `tls`.
    pub transport: &'static str,
    /// Peer address `host:port`.
    pub address: String,
}

/// The search rule generated for each zone.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SearchRule {
    /// Same name as its zone.
    pub name: String,
    /// Always 45, as on Expressway-C.
    pub priority: u32,
    /// Regex on the destination that sends a request to this zone.
    pub pattern: String,
    /// Target zone.
    pub zone: String,
}

/// The zones and search rules generated for the configured nodes: a TCP zone always
/// (5060), and a TLS zone too when the node is configured for TLS (mixed mode).
pub fn generated_zones(nodes: &[UcmNode]) -> (Vec<Zone>, Vec<SearchRule>) {
    let mut zones = Vec::new();
    for n in nodes {
        let tcp_address = match n.transport {
            UcmTransport::Tcp => n.address.clone(),
            UcmTransport::Tls => format!("{}:5060", n.host),
        };
        zones.push(Zone {
            name: format!("CEtcp-{}", n.name),
            node: n.name.clone(),
            transport: "tcp",
            address: tcp_address,
        });
        if n.transport == UcmTransport::Tls {
            zones.push(Zone {
                name: format!("CEtls-{}", n.name),
                node: n.name.clone(),
                transport: "tls",
                address: n.address.clone(),
            });
        }
    }
    let rules = zones
        .iter()
        .map(|z| SearchRule {
            name: z.name.clone(),
            priority: 45,
            pattern: format!(
                ".*@{}(:[0-9]+)?((;|\\?).*)?",
                z.address
                    .rsplit_once(':')
                    .map_or(z.address.as_str(), |(h, _)| h)
                    .replace('.', "\\.")
            ),
            zone: z.name.clone(),
        })
        .collect();
    (zones, rules)
}

/// One registered contact the core holds.
#[derive(Debug, Clone, Serialize)]
pub struct Binding {
    /// Binding number (the user part of the rewritten Contact).
    pub id: u64,
    /// Address of record (the To URI).
    pub aor: String,
    /// The client's Contact as it sent it (name-addr with parameters).
    pub contact: String,
    /// The client's Contact URI.
    pub contact_uri: String,
    /// The Contact Unified CM holds (rewritten, or the original with Path headers on).
    pub registered_contact: String,
    /// The edge's Path entry, naming the client's flow.
    pub edge_path: String,
    /// The flow token in that Path (its user part): the client's TLS connection on the edge.
    pub edge_flow: Option<String>,
    /// Unified CM node the registration went to.
    pub node: String,
    /// Seconds until expiry (`None` while the first REGISTER is unanswered).
    #[serde(skip)]
    expires_at: Option<Instant>,
}

#[derive(Debug)]
struct PendingRegister {
    aor: String,
    ids: Vec<u64>,
    wildcard: bool,
    sent: Instant,
}

/// The core's proxy state; see the module docs.
#[derive(Debug)]
pub struct CoreProxy {
    host: String,
    port: u16,
    path_headers: bool,
    retry_after_s: u32,
    domains: Vec<DomainConfig>,
    nodes: Vec<UcmNode>,
    node_conns: Vec<Option<ConnId>>,
    traversal_up: bool,
    maintenance: bool,
    bindings: HashMap<u64, Binding>,
    by_contact: HashMap<(String, String), u64>,
    pending: HashMap<String, PendingRegister>,
    next_id: u64,
    counters: Arc<Counters>,
    /// Calls' media (SRTP re-keying flows), when `[media]` is configured.
    media: Option<CallMedia>,
    /// The B2BUA's calls, by number.
    calls: HashMap<u64, CoreCallLegs>,
    /// Each call's two dialogs' Call-IDs (with the leg) to its number.
    call_ids: HashMap<(Leg, String), u64>,
    next_call: u64,
    call_setup_timeout: Duration,
    /// The traversal zone went down: every call's outside leg is gone.
    calls_orphaned: bool,
}

/// One B2BUA call on the core: its signalling, where its inside leg runs, and its times.
#[derive(Debug)]
struct CoreCallLegs {
    call: B2bCall,
    /// The Unified CM connection its inside dialog uses.
    ucm: ConnId,
    /// The key of its media (the outside Call-ID, the one the edge sees too).
    media_key: String,
    started: Instant,
    /// When it ended (its last responses and ACKs are still absorbed for a while).
    ended: Option<Instant>,
}

/// Settings [`CoreProxy::new`] takes (the IO layer knows the bound port).
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// Host name written into Via, Path and rewritten Contacts.
    pub host: String,
    /// Port of the core's SIP listener (for Unified CM).
    pub port: u16,
    /// "SIP Path headers".
    pub path_headers: bool,
    /// Retry-After seconds in maintenance mode.
    pub retry_after_s: u32,
    /// Configured domains.
    pub domains: Vec<DomainConfig>,
    /// Configured Unified CM nodes.
    pub nodes: Vec<UcmNode>,
    /// First binding number. The caller passes a random base so numbers never repeat
    /// across restarts: Unified CM may still hold a `b<id>` Contact from before a restart,
    /// and a reused number would send that user's calls to someone else.
    pub binding_id_base: u64,
}

/// How long a REGISTER may stay unanswered before its pending state is dropped (64*T1).
const PENDING_LIFETIME: Duration = Duration::from_secs(32);
/// Unified CM's default maximum ring time.
const DEFAULT_CALL_SETUP_TIMEOUT: Duration = Duration::from_secs(180);
/// A request forwarded in a dialog and unanswered this long gets 408 (64*T1, Timer F).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(32);
/// How long an ended call still absorbs its late responses and ACKs (Timer H-like).
const ENDED_LINGER: Duration = Duration::from_secs(32);
const BINDING_USER_PREFIX: &str = "b";
const DEFAULT_EXPIRES: u32 = 3600;

impl CoreProxy {
    /// A core with no node connected and the traversal zone down.
    pub fn new(settings: CoreSettings, counters: Arc<Counters>) -> CoreProxy {
        CoreProxy {
            node_conns: vec![None; settings.nodes.len()],
            host: settings.host,
            port: settings.port,
            path_headers: settings.path_headers,
            retry_after_s: settings.retry_after_s,
            domains: settings.domains,
            nodes: settings.nodes,
            traversal_up: false,
            maintenance: false,
            bindings: HashMap::new(),
            by_contact: HashMap::new(),
            pending: HashMap::new(),
            next_id: settings.binding_id_base,
            counters,
            media: None,
            calls: HashMap::new(),
            call_ids: HashMap::new(),
            next_call: 1,
            call_setup_timeout: DEFAULT_CALL_SETUP_TIMEOUT,
            calls_orphaned: false,
        }
    }

    /// A call not answered within `timeout` is cancelled on both legs (default 180 s).
    pub fn set_call_setup_timeout(&mut self, timeout: Duration) {
        self.call_setup_timeout = timeout;
    }

    /// Calls the B2BUA holds (in setup, established, or just ended).
    pub fn call_count(&self) -> usize {
        self.calls.values().filter(|c| c.ended.is_none()).count()
    }

    /// Plans every call's media through `media` from now on.
    pub fn set_media(&mut self, media: CallMedia) {
        self.media = Some(media);
    }

    /// The calls' media, when configured.
    pub fn media(&self) -> Option<&CallMedia> {
        self.media.as_ref()
    }

    /// The traversal zone came up or went down.
    pub fn set_traversal_up(&mut self, up: bool) {
        self.traversal_up = up;
        if let (false, Some(media)) = (up, &mut self.media) {
            media.end_all();
        }
        if !up && !self.calls.is_empty() {
            // The inside legs are hung up at the next `call_timeouts`.
            self.calls_orphaned = true;
        }
    }

    /// Whether the traversal zone is up.
    pub fn traversal_up(&self) -> bool {
        self.traversal_up
    }

    /// Node `index` is now reachable over `conn`, or not at all.
    pub fn set_node_connection(&mut self, index: usize, conn: Option<ConnId>) {
        if let Some(slot) = self.node_conns.get_mut(index) {
            *slot = conn;
        }
    }

    /// Maintenance mode: new registrations get 503 + Retry-After; bindings stay.
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

    /// Active bindings with their seconds left.
    pub fn registrations(&self, now: Instant) -> Vec<(Binding, u64)> {
        let mut list: Vec<_> = self
            .bindings
            .values()
            .filter_map(|b| {
                let at = b.expires_at?;
                Some((b.clone(), at.saturating_duration_since(now).as_secs()))
            })
            .collect();
        list.sort_by_key(|(b, _)| b.id);
        list
    }

    /// Node names with whether each is connected.
    pub fn node_states(&self) -> Vec<(String, bool)> {
        self.nodes
            .iter()
            .zip(&self.node_conns)
            .map(|(n, c)| (n.name.clone(), c.is_some()))
            .collect()
    }

    /// The generated zones and search rules.
    pub fn zones(&self) -> (Vec<Zone>, Vec<SearchRule>) {
        generated_zones(&self.nodes)
    }

    /// Removes expired bindings and forgotten REGISTERs; call at least every second.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .bindings
            .values()
            .filter(|b| b.expires_at.is_some_and(|at| at <= now))
            .map(|b| b.id)
            .collect();
        for id in expired {
            self.counters
                .bindings_expired
                .fetch_add(1, Ordering::Relaxed);
            self.remove_binding(id);
        }
        let stale: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.sent) > PENDING_LIFETIME)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(p) = self.pending.remove(&key) {
                self.drop_unconfirmed(&p.ids);
            }
        }
    }

    fn remove_binding(&mut self, id: u64) {
        if let Some(b) = self.bindings.remove(&id) {
            self.by_contact.remove(&(b.aor, b.contact_uri));
        }
    }

    fn drop_unconfirmed(&mut self, ids: &[u64]) {
        for id in ids {
            if self
                .bindings
                .get(id)
                .is_some_and(|b| b.expires_at.is_none())
            {
                self.remove_binding(*id);
            }
        }
    }

    fn own_uri(&self) -> String {
        format!("<sip:{}:{};transport=tcp;lr>", self.host, self.port)
    }

    fn own_via(&self, branch: &str) -> Via {
        Via::new(
            "TCP",
            Host::Domain(self.host.clone()),
            Some(self.port),
            branch,
        )
    }

    fn route_node(&self) -> Option<(usize, ConnId)> {
        self.node_conns
            .iter()
            .enumerate()
            .find_map(|(i, c)| c.map(|c| (i, c)))
    }

    fn domain_served(&self, uri: &Uri) -> bool {
        let Some(host) = uri
            .as_sip()
            .map(|s| s.host.to_string().to_ascii_lowercase())
        else {
            return false;
        };
        self.domains
            .iter()
            .any(|d| d.sip_registrations && d.name == host)
    }

    /// A message from the edge over the traversal zone.
    pub fn edge_message(&mut self, now: Instant, msg: Message, out: &mut Vec<CoreOutput>) {
        match msg {
            Message::Request(req) => self.edge_request(now, req, out),
            Message::Response(resp) if self.call_of(Leg::Outside, &resp.headers).is_some() => {
                self.call_response(now, Leg::Outside, resp, out)
            }
            Message::Response(mut resp) => {
                // A client's answer to a request from Unified CM: our Via names the connection.
                let conn = pop_own_via(&mut resp, &self.host)
                    .and_then(|v| v.params.get("ewc").and_then(|c| c.parse::<ConnId>().ok()));
                match conn {
                    Some(conn) => {
                        if let Some(media) = &mut self.media {
                            media.response(Leg::Outside, &mut resp);
                        }
                        out.push(CoreOutput::ToUcm(conn, resp.to_bytes()))
                    }
                    None => {
                        self.counters
                            .stray_responses
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn edge_request(&mut self, now: Instant, mut req: Request, out: &mut Vec<CoreOutput>) {
        let reply = |out: &mut Vec<CoreOutput>, bytes| out.push(CoreOutput::ToEdge(bytes));
        let via = match check_request(&req, &self.counters) {
            Ok(via) => via,
            Err(bytes) => return reply(out, bytes),
        };
        if let Some(n) = self.call_of(Leg::Outside, &req.headers) {
            return self.call_request(now, n, Leg::Outside, req, out);
        }
        if acks_local_response(&req) {
            return;
        }
        let target = if req.method == Method::Register {
            req.headers
                .to_addr()
                .map(|t| t.uri)
                .unwrap_or(req.uri.clone())
        } else {
            req.uri.clone()
        };
        if !self.domain_served(&target) {
            return reply(
                out,
                refuse(
                    &self.counters.unknown_domain,
                    &req,
                    404,
                    "Domain not served by this MRA edge",
                    &[],
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
        if let Err(bytes) = hop(&mut req) {
            return reply(out, bytes);
        }
        if let (Some(media), false) = (&mut self.media, is_new_call(&req)) {
            if let Err(bytes) = media.request(Leg::Outside, &mut req, None) {
                return reply(out, bytes);
            }
        }
        let Some((node, conn)) = self.route_node() else {
            return reply(
                out,
                refuse(
                    &self.counters.ucm_unreachable,
                    &req,
                    503,
                    "No Unified CM node reachable",
                    &[],
                ),
            );
        };
        if is_new_call(&req) {
            let target = req.uri.clone();
            return self.start_call(now, Leg::Outside, req, conn, target, Vec::new(), out);
        }
        let branch = derived_branch(&[
            "core",
            via.branch().unwrap_or(""),
            via.host.to_string().as_str(),
        ]);
        if req.method == Method::Register {
            if let Err(bytes) = self.prepare_register(now, &mut req, node, &branch) {
                return reply(out, bytes);
            }
            self.counters
                .registers_proxied
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = req
            .headers
            .prepend(HeaderName::Via, self.own_via(&branch).to_string())
        {
            return reply(out, bad_request(&req, &e));
        }
        out.push(CoreOutput::ToUcm(conn, req.to_bytes()));
    }

    /// Records the bindings a REGISTER asks for and rewrites it (Contact or Path); `Err`
    /// holds the refusal to send back.
    fn prepare_register(
        &mut self,
        now: Instant,
        req: &mut Request,
        node: usize,
        branch: &str,
    ) -> Result<(), Vec<u8>> {
        let bad = |req: &Request, e: &dyn std::fmt::Display| {
            local_response(req, 400, &reason_phrase("Bad Request", e), &[])
        };
        let aor = req
            .headers
            .to_addr()
            .map_err(|e| bad(req, &e))?
            .uri
            .to_string();
        let contacts = req.headers.contacts().map_err(|e| bad(req, &e))?;
        let edge_path = req
            .headers
            .paths()
            .map_err(|e| bad(req, &e))?
            .first()
            .map(|p| p.to_string())
            .ok_or_else(|| {
                local_response(req, 403, "REGISTER did not come through the edge", &[])
            })?;
        let edge_flow = NameAddr::parse(&edge_path)
            .ok()
            .and_then(|p| p.uri.as_sip().and_then(|u| u.user.clone()));
        let addresses = match contacts {
            ContactList::Wildcard => {
                self.pending.insert(
                    branch.to_owned(),
                    PendingRegister {
                        aor,
                        ids: Vec::new(),
                        wildcard: true,
                        sent: now,
                    },
                );
                return Ok(());
            }
            ContactList::Addresses(a) => a,
        };
        let header_expires = req.headers.expires().ok().flatten();
        let is_refresh_or_removal = addresses.iter().all(|c| {
            let removal = c.expires().or(header_expires) == Some(0);
            removal
                || self
                    .by_contact
                    .contains_key(&(aor.clone(), c.uri.to_string()))
        });
        if self.maintenance && !is_refresh_or_removal {
            self.counters
                .maintenance_refused
                .fetch_add(1, Ordering::Relaxed);
            let retry = [(HeaderName::RetryAfter, self.retry_after_s.to_string())];
            return Err(local_response(
                req,
                503,
                "Maintenance mode: new registrations refused",
                &retry,
            ));
        }
        let mut ids = Vec::new();
        let mut rewritten = Vec::new();
        for c in &addresses {
            let key = (aor.clone(), c.uri.to_string());
            let id = match self.by_contact.get(&key) {
                Some(id) => *id,
                None => {
                    let id = self.next_id;
                    self.next_id = self.next_id.wrapping_add(1);
                    self.by_contact.insert(key.clone(), id);
                    id
                }
            };
            let mut registered = c.clone();
            if !self.path_headers {
                let mut uri = SipUri::new(Host::Domain(self.host.clone()));
                uri.user = Some(format!("{BINDING_USER_PREFIX}{id}"));
                uri.port = Some(self.port);
                uri.params.set("transport", Some("tcp"));
                registered.uri = Uri::Sip(uri);
            }
            let registered_contact = registered.to_string();
            let previous_expiry = self.bindings.get(&id).and_then(|b| b.expires_at);
            self.bindings.insert(
                id,
                Binding {
                    id,
                    aor: aor.clone(),
                    contact: c.to_string(),
                    contact_uri: key.1,
                    registered_contact: registered_contact.clone(),
                    edge_path: edge_path.clone(),
                    edge_flow: edge_flow.clone(),
                    node: self.nodes[node].name.clone(),
                    expires_at: previous_expiry,
                },
            );
            rewritten.push(registered_contact);
            ids.push(id);
        }
        let rewrite = if self.path_headers {
            req.headers.prepend(HeaderName::Path, self.own_uri())
        } else {
            req.headers
                .remove_first_value(&HeaderName::Path)
                .map(|_| ())
                .and_then(|()| {
                    req.headers.remove_all(&HeaderName::Contact);
                    if rewritten.is_empty() {
                        Ok(())
                    } else {
                        req.headers.push(HeaderName::Contact, rewritten.join(", "))
                    }
                })
        };
        rewrite.map_err(|e| bad(req, &e))?;
        self.pending.insert(
            branch.to_owned(),
            PendingRegister {
                aor,
                ids,
                wildcard: false,
                sent: now,
            },
        );
        Ok(())
    }

    /// A message from Unified CM on connection `conn`.
    pub fn ucm_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        msg: Message,
        out: &mut Vec<CoreOutput>,
    ) {
        match msg {
            Message::Response(resp) if self.call_of(Leg::Inside, &resp.headers).is_some() => {
                self.call_response(now, Leg::Inside, resp, out)
            }
            Message::Response(resp) => self.ucm_response(now, resp, out),
            Message::Request(req) => self.ucm_request(now, conn, req, out),
        }
    }

    fn ucm_response(&mut self, now: Instant, mut resp: Response, out: &mut Vec<CoreOutput>) {
        let Some(via) = pop_own_via(&mut resp, &self.host) else {
            self.counters
                .stray_responses
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let branch = via.branch().unwrap_or("").to_owned();
        if resp.status >= 200 {
            if let Some(pending) = self.pending.remove(&branch) {
                if resp.is_success() {
                    self.counters
                        .registrations_accepted
                        .fetch_add(1, Ordering::Relaxed);
                    self.confirm_register(now, &mut resp, pending);
                } else {
                    if matches!(resp.status, 401 | 407) {
                        self.counters
                            .challenges_relayed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    self.drop_unconfirmed(&pending.ids);
                }
            }
        }
        if let Some(media) = &mut self.media {
            media.response(Leg::Inside, &mut resp);
        }
        if self.traversal_up {
            out.push(CoreOutput::ToEdge(resp.to_bytes()));
        }
    }

    /// Applies a 2xx to REGISTER: expiries from the returned Contacts, bindings the
    /// registrar no longer lists removed, rewritten Contacts restored for the client.
    fn confirm_register(&mut self, now: Instant, resp: &mut Response, pending: PendingRegister) {
        if pending.wildcard {
            let ids: Vec<u64> = self
                .bindings
                .values()
                .filter(|b| b.aor == pending.aor)
                .map(|b| b.id)
                .collect();
            for id in ids {
                self.remove_binding(id);
            }
            return;
        }
        let header_expires = resp.headers.expires().ok().flatten();
        let listed = match resp.headers.contacts() {
            Ok(ContactList::Addresses(a)) => a,
            _ => Vec::new(),
        };
        let mut seen = Vec::new();
        let mut restored = Vec::new();
        for c in listed {
            let expires = c.expires().or(header_expires).unwrap_or(DEFAULT_EXPIRES);
            let id = self.binding_for_registered(&pending.aor, &c.uri);
            let Some(id) = id else {
                restored.push(c.to_string());
                continue;
            };
            seen.push(id);
            let mut back = c.clone();
            if let Some(b) = self.bindings.get_mut(&id) {
                b.expires_at = Some(now + Duration::from_secs(u64::from(expires)));
                if let Ok(original) = NameAddr::parse(&b.contact) {
                    back.uri = original.uri;
                }
            }
            if expires == 0 {
                self.remove_binding(id);
            }
            restored.push(back.to_string());
        }
        for id in pending.ids {
            if !seen.contains(&id) {
                self.remove_binding(id);
            }
        }
        if !self.path_headers {
            resp.headers.remove_all(&HeaderName::Contact);
            if !restored.is_empty() {
                let _ = resp.headers.push(HeaderName::Contact, restored.join(", "));
            }
        }
    }

    /// The binding a Contact in a registrar's 2xx stands for, in O(1): the id in the
    /// rewritten Contact's user part, or (Path mode, Contact preserved) the AOR and URI.
    fn binding_for_registered(&self, aor: &str, uri: &Uri) -> Option<u64> {
        let id = if self.path_headers {
            *self.by_contact.get(&(aor.to_owned(), uri.to_string()))?
        } else {
            self.own_binding_id(uri)?
        };
        self.bindings
            .get(&id)
            .filter(|b| b.aor == aor)
            .map(|b| b.id)
    }

    /// Whether a URI names this core (host and port).
    fn is_own_uri(&self, uri: &Uri) -> bool {
        uri.as_sip().is_some_and(|s| {
            s.host.to_string().eq_ignore_ascii_case(&self.host)
                && s.port.unwrap_or(5060) == self.port
        })
    }

    /// `b<id>` in a URI at this core's host and port.
    fn own_binding_id(&self, uri: &Uri) -> Option<u64> {
        if !self.is_own_uri(uri) {
            return None;
        }
        uri.as_sip()?
            .user
            .as_deref()?
            .strip_prefix(BINDING_USER_PREFIX)?
            .parse()
            .ok()
    }

    fn ucm_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        mut req: Request,
        out: &mut Vec<CoreOutput>,
    ) {
        let reply = |out: &mut Vec<CoreOutput>, bytes| out.push(CoreOutput::ToUcm(conn, bytes));
        let via = match check_request(&req, &self.counters) {
            Ok(via) => via,
            Err(bytes) => return reply(out, bytes),
        };
        if let Some(n) = self.call_of(Leg::Inside, &req.headers) {
            return self.call_request(now, n, Leg::Inside, req, out);
        }
        if acks_local_response(&req) {
            return;
        }
        if !self.traversal_up {
            return reply(
                out,
                refuse(
                    &self.counters.traversal_down_refused,
                    &req,
                    503,
                    "Traversal zone to the edge is down",
                    &[],
                ),
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
        if let (Some(media), false) = (&mut self.media, is_new_call(&req)) {
            if let Err(bytes) = media.request(Leg::Inside, &mut req, None) {
                return reply(out, bytes);
            }
        }
        let top_route_is_own = req
            .headers
            .routes()
            .ok()
            .and_then(|r| r.first().map(|r| self.is_own_uri(&r.uri)))
            .unwrap_or(false);
        if top_route_is_own {
            // Path mode: Unified CM routes through the core's Path, then the edge's.
            let _ = req.headers.remove_first_value(&HeaderName::Route);
            if is_new_call(&req) {
                let routes = route_values(&req);
                let target = req.uri.clone();
                return self.start_call(now, Leg::Inside, req, conn, target, routes, out);
            }
        } else {
            let binding = self
                .own_binding_id(&req.uri)
                .and_then(|id| self.bindings.get(&id))
                .filter(|b| b.expires_at.is_some());
            let Some(binding) = binding else {
                return reply(
                    out,
                    refuse(
                        &self.counters.inbound_unknown,
                        &req,
                        480,
                        "Temporarily Unavailable (no binding)",
                        &[],
                    ),
                );
            };
            let target = NameAddr::parse(&binding.contact).map(|n| n.uri);
            let edge_path = binding.edge_path.clone();
            if let (true, Ok(uri)) = (is_new_call(&req), &target) {
                let uri = uri.clone();
                return self.start_call(now, Leg::Inside, req, conn, uri, vec![edge_path], out);
            }
            match target {
                Ok(uri) => req.uri = uri,
                Err(_) => {
                    return reply(
                        out,
                        local_response(&req, 500, "Stored contact unusable", &[]),
                    );
                }
            }
            if let Err(e) = req.headers.prepend(HeaderName::Route, edge_path) {
                return reply(
                    out,
                    local_response(&req, 500, &reason_phrase("Server Error", &e), &[]),
                );
            }
        }
        let branch = derived_branch(&["core-in", &conn.to_string(), via.branch().unwrap_or("")]);
        let mut own = self.own_via(&branch);
        own.transport = "TLS".into();
        own.params.set("ewc", Some(&conn.to_string()));
        if let Err(e) = req.headers.prepend(HeaderName::Via, own.to_string()) {
            return reply(out, bad_request(&req, &e));
        }
        self.counters
            .inbound_requests
            .fetch_add(1, Ordering::Relaxed);
        out.push(CoreOutput::ToEdge(req.to_bytes()));
    }
}

/// An INVITE outside any dialog: a new call for the B2BUA.
fn is_new_call(req: &Request) -> bool {
    req.method == Method::Invite && req.headers.to_addr().is_ok_and(|t| t.tag().is_none())
}

/// The Route values a request still carries.
fn route_values(req: &Request) -> Vec<String> {
    req.headers
        .values(&HeaderName::Route)
        .map(|v| v.into_iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn other_leg(leg: Leg) -> Leg {
    match leg {
        Leg::Outside => Leg::Inside,
        Leg::Inside => Leg::Outside,
    }
}

fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The B2BUA: every INVITE outside a dialog, from either side, becomes a call with two
/// dialogs (see `edgeway_b2bua::B2bCall`); requests and responses of those dialogs are
/// matched by Call-ID and leg before any proxy logic runs.
impl CoreProxy {
    /// The call whose dialog on `leg` has this message's Call-ID.
    fn call_of(&self, leg: Leg, headers: &edgeway_sip::Headers) -> Option<u64> {
        let call_id = headers.call_id().ok()?;
        self.call_ids.get(&(leg, call_id.to_owned())).copied()
    }

    /// This core's Via on `leg` with a fresh branch (inside: the node's transport).
    fn leg_via(&self, leg: Leg) -> Via {
        let mut via = self.own_via(&format!("z9hG4bK-ew{}", random_hex()));
        via.transport = match leg {
            Leg::Outside => "TLS".into(),
            Leg::Inside => match self.nodes.first().map(|n| n.transport) {
                Some(UcmTransport::Tls) => "TLS".into(),
                _ => "TCP".into(),
            },
        };
        via
    }

    /// This core's Contact on `leg`: the peer's in-dialog requests come back to it.
    fn leg_contact(&self, leg: Leg) -> NameAddr {
        let mut uri = SipUri::new(Host::Domain(self.host.clone()));
        uri.port = Some(self.port);
        let transport = match leg {
            Leg::Outside => "tls",
            Leg::Inside => "tcp",
        };
        uri.params.set("transport", Some(transport));
        NameAddr::new(Uri::Sip(uri))
    }

    fn send_on(out: &mut Vec<CoreOutput>, leg: Leg, ucm: ConnId, bytes: Vec<u8>) {
        out.push(match leg {
            Leg::Outside => CoreOutput::ToEdge(bytes),
            Leg::Inside => CoreOutput::ToUcm(ucm, bytes),
        });
    }

    /// A new call: `req` (Max-Forwards already decremented) arrived on `caller`; the
    /// callee's INVITE goes to `target` through `routes`, the inside leg on `ucm`.
    #[allow(clippy::too_many_arguments)]
    fn start_call(
        &mut self,
        now: Instant,
        caller: Leg,
        mut req: Request,
        ucm: ConnId,
        target: Uri,
        routes: Vec<String>,
        out: &mut Vec<CoreOutput>,
    ) {
        let callee = other_leg(caller);
        if let Err(bytes) = self.map_transfer_headers(caller, &mut req) {
            return Self::send_on(out, caller, ucm, bytes);
        }
        let new_call_id = format!("{}{}@{}", random_hex(), random_hex(), self.host);
        let media_key = match caller {
            Leg::Outside => req.headers.call_id().unwrap_or_default().to_owned(),
            Leg::Inside => new_call_id.clone(),
        };
        if let Some(media) = &mut self.media {
            if let Err(bytes) = media.request_for(&media_key, caller, &mut req, None) {
                return Self::send_on(out, caller, ucm, bytes);
            }
        }
        let leg = NewLeg {
            call_id: new_call_id,
            from_tag: random_hex(),
            answer_tag: random_hex(),
            via: self.leg_via(callee),
            contact: self.leg_contact(callee),
            answer_contact: self.leg_contact(caller),
            target,
            routes,
        };
        let body = (!req.body.is_empty()).then(|| req.body.clone());
        let (call, invite) = match B2bCall::start(caller, &req, leg, body) {
            Ok(x) => x,
            Err(e) => {
                if let Some(media) = &mut self.media {
                    media.end(&media_key);
                }
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                return Self::send_on(out, caller, ucm, bad_request(&req, &e));
            }
        };
        Self::send_on(out, caller, ucm, call.trying().to_bytes());
        Self::send_on(out, callee, ucm, invite.to_bytes());
        let n = self.next_call;
        self.next_call += 1;
        for leg in [Leg::Outside, Leg::Inside] {
            self.call_ids.insert((leg, call.call_id(leg).to_owned()), n);
        }
        self.calls.insert(
            n,
            CoreCallLegs {
                call,
                ucm,
                media_key,
                started: now,
                ended: None,
            },
        );
    }

    /// A `Replaces` written on `leg` mapped to the other leg of the call it names;
    /// `Ok(None)` when it names no call of this core (a dialog that does not cross it).
    fn map_replaces(&self, leg: Leg, r: &Replaces) -> Result<Option<Replaces>, ReplacesError> {
        let Some(c) = self
            .call_ids
            .get(&(leg, r.call_id.clone()))
            .and_then(|n| self.calls.get(n))
        else {
            return Ok(None);
        };
        match c.call.pair() {
            Some(pair) => pair.map_replaces(leg, r),
            // Ours, but no dialog yet (no To tag answered): nothing it can match.
            None => Err(ReplacesError::NoMatch {
                leg,
                call_id: r.call_id.clone(),
            }),
        }
    }

    /// Rewrites the transfer headers of `req` (received on `leg`) to name the other legs'
    /// dialogs: `Replaces` in an INVITE (RFC 3891) and the `?Replaces=` of a REFER's
    /// Refer-To (RFC 3515). `Err` holds the refusal: 400 for a malformed value or a
    /// Replaces in another method or given twice (RFC 3891 §3), 481 for an INVITE's
    /// Replaces naming one of this core's calls with tags that are not its dialog's. A
    /// REFER's unmatched Replaces passes unchanged (the INVITE it leads to is refused).
    fn map_transfer_headers(&self, leg: Leg, req: &mut Request) -> Result<(), Vec<u8>> {
        let replaces_name = HeaderName::parse("Replaces");
        let refuse_with = |req: &Request, status: u16, reason: String| {
            self.counters
                .transfer_refused
                .fetch_add(1, Ordering::Relaxed);
            if status == 400 {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            }
            local_response(req, status, &reason, &[])
        };
        let bad = |req: &Request, e: &dyn std::fmt::Display| {
            refuse_with(req, 400, reason_phrase("Bad Request", e))
        };
        let values: Vec<String> = req
            .headers
            .values(&replaces_name)
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect();
        if !values.is_empty() {
            if req.method != Method::Invite {
                return Err(bad(
                    req,
                    &format!("Replaces is for INVITE only, not {}", req.method),
                ));
            }
            if values.len() > 1 {
                return Err(bad(req, &"more than one Replaces"));
            }
            let r = Replaces::parse(&values[0]).map_err(|e| bad(req, &e))?;
            match self.map_replaces(leg, &r) {
                Ok(Some(mapped)) => {
                    let _ = req.headers.replace(replaces_name, mapped.to_string());
                }
                Ok(None) => {}
                Err(e) => {
                    let reason = reason_phrase("Call/Transaction Does Not Exist", &e);
                    return Err(refuse_with(req, 481, reason));
                }
            }
        }
        if req.method == Method::Refer {
            let Some(refer_to) = req.headers.first(&HeaderName::ReferTo).map(str::to_owned) else {
                return Ok(());
            };
            let mapped = refer_to_replaces(&refer_to)
                .map_err(|e| bad(req, &e))?
                .and_then(|r| self.map_replaces(leg, &r).ok().flatten());
            if let Some(mapped) = mapped {
                let value = rewrite_refer_to(&refer_to, &mapped).map_err(|e| bad(req, &e))?;
                req.headers
                    .replace(HeaderName::ReferTo, value)
                    .map_err(|e| bad(req, &e))?;
            }
        }
        Ok(())
    }

    /// A request in call `n`'s dialog on `from`.
    fn call_request(
        &mut self,
        now: Instant,
        n: u64,
        from: Leg,
        mut req: Request,
        out: &mut Vec<CoreOutput>,
    ) {
        let to = other_leg(from);
        let via = self.leg_via(to);
        if req.method != Method::Ack {
            if let Err(bytes) = self.map_transfer_headers(from, &mut req) {
                let ucm = self.calls.get(&n).map_or(0, |c| c.ucm);
                return Self::send_on(out, from, ucm, bytes);
            }
        }
        let Some(c) = self.calls.get_mut(&n) else {
            return;
        };
        let ucm = c.ucm;
        if req.method == Method::Cancel {
            if from != c.call.caller() {
                let bytes = local_response(&req, 481, "Call/Transaction Does Not Exist", &[]);
                return Self::send_on(out, from, ucm, bytes);
            }
            let (ok, cancel) = c.call.cancel(&req);
            Self::send_on(out, from, ucm, ok.to_bytes());
            if let Some(cancel) = cancel {
                Self::send_on(out, to, ucm, cancel.to_bytes());
            }
            return;
        }
        if let Some(media) = &mut self.media {
            if let Err(bytes) = media.request_for(&c.media_key, from, &mut req, None) {
                if req.method != Method::Ack {
                    Self::send_on(out, from, ucm, bytes);
                }
                return;
            }
        }
        let body = (!req.body.is_empty()).then(|| req.body.clone());
        match c.call.request(from, &req, &via, body) {
            Ok(Some(fwd)) => {
                if req.method == Method::Bye && c.ended.is_none() {
                    c.ended = Some(now);
                }
                Self::send_on(out, to, ucm, fwd.to_bytes());
            }
            Ok(None) => {}
            Err(_) if req.method == Method::Ack => {
                self.counters
                    .stray_responses
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let (status, reason) = match e {
                    CallError::Pair(PairError::Dialog {
                        source: DialogError::CSeqOutOfOrder { .. },
                        ..
                    }) => (500, "Server Internal Error (CSeq out of order)".to_owned()),
                    CallError::Pair(PairError::Glare(_)) => (491, "Request Pending".to_owned()),
                    e => (481, reason_phrase("Call/Transaction Does Not Exist", &e)),
                };
                let bytes = local_response(&req, status, &reason, &[]);
                Self::send_on(out, from, ucm, bytes);
            }
        }
    }

    /// A response on `leg` for a request of one of the B2BUA's calls.
    fn call_response(
        &mut self,
        now: Instant,
        leg: Leg,
        mut resp: Response,
        out: &mut Vec<CoreOutput>,
    ) {
        let Some(n) = self.call_of(leg, &resp.headers) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&n) else {
            return;
        };
        let ucm = c.ucm;
        let to = other_leg(leg);
        let method = resp.headers.cseq().map(|c| c.method).ok();
        if c.call.session_response(now, &resp).is_err() {
            // A bad Session-Expires in a 2xx: the call goes on with the interval it had.
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
        }
        if leg != c.call.caller() && c.call.is_setup_response(&resp) {
            let answer = resp.is_success().then(|| resp.clone());
            if let Some(media) = &mut self.media {
                if c.ended.is_none() {
                    media.response_for(&c.media_key, leg, &mut resp);
                }
            }
            if let (Some(answer), true) = (answer, resp.status >= 300) {
                // The media plan refused the callee's answer (and ended the call's media).
                let vias = [self.leg_via(leg), self.leg_via(leg)];
                let Some(c) = self.calls.get_mut(&n) else {
                    return;
                };
                c.ended.get_or_insert(now);
                if let Ok((back, to_callee)) =
                    c.call.refuse_answer(&answer, &resp, [&vias[0], &vias[1]])
                {
                    Self::send_on(out, to, ucm, back.to_bytes());
                    for r in to_callee {
                        Self::send_on(out, leg, ucm, r.to_bytes());
                    }
                }
                return;
            }
            let body = (!resp.body.is_empty()).then(|| resp.body.clone());
            match c.call.setup_response(&resp, body) {
                Ok(outcome) => {
                    if let Some(r) = outcome.to_caller {
                        Self::send_on(out, to, ucm, r.to_bytes());
                    }
                    if let Some(ack) = outcome.to_callee {
                        Self::send_on(out, leg, ucm, ack.to_bytes());
                    }
                    if outcome.ended && c.ended.is_none() {
                        c.ended = Some(now);
                        if let Some(media) = &mut self.media {
                            media.end(&c.media_key);
                        }
                    }
                }
                Err(e) => {
                    // An answer this core cannot turn into a dialog: the caller is told.
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    let (resp408, cancel) = c.call.give_up();
                    if let Some(r) = resp408 {
                        let mut r = r;
                        r.status = 502;
                        r.reason = reason_phrase("Bad Gateway", &e);
                        Self::send_on(out, to, ucm, r.to_bytes());
                    }
                    if let Some(cancel) = cancel {
                        Self::send_on(out, leg, ucm, cancel.to_bytes());
                    }
                    c.ended.get_or_insert(now);
                    if let Some(media) = &mut self.media {
                        media.end(&c.media_key);
                    }
                }
            }
            return;
        }
        if let Some(media) = &mut self.media {
            if c.ended.is_none() {
                media.response_for(&c.media_key, leg, &mut resp);
            }
        }
        let body = (!resp.body.is_empty()).then(|| resp.body.clone());
        // An error is a response to the core's own BYE, or one for nothing forwarded.
        if let Ok(back) = c.call.response(leg, &resp, body) {
            Self::send_on(out, to, ucm, back.to_bytes());
        }
        if method == Some(Method::Bye) && resp.status >= 200 {
            self.forget_call(n);
        }
    }

    fn forget_call(&mut self, n: u64) {
        if let Some(c) = self.calls.remove(&n) {
            for leg in [Leg::Outside, Leg::Inside] {
                self.call_ids.remove(&(leg, c.call.call_id(leg).to_owned()));
            }
            if let Some(media) = &mut self.media {
                media.end(&c.media_key);
            }
        }
    }

    /// The B2BUA's timers; call about every second: calls not answered within the setup
    /// timeout are cancelled (408 to the caller, CANCEL to the callee), requests forwarded
    /// in a dialog and unanswered for 32 s get 408, calls whose media went idle or whose
    /// session interval (RFC 4028 Session-Expires) passed with no refresh are hung up with
    /// BYE on both legs, ended calls are forgotten after 32 s, and after the
    /// traversal zone went down every call's inside leg is ended.
    pub fn call_timeouts(&mut self, now: Instant, out: &mut Vec<CoreOutput>) {
        let idle: Vec<String> = self
            .media
            .as_ref()
            .map(CallMedia::idle_calls)
            .unwrap_or_default();
        let orphaned = std::mem::take(&mut self.calls_orphaned);
        let vias = [self.leg_via(Leg::Outside), self.leg_via(Leg::Inside)];
        let counters = &self.counters;
        let mut forget = Vec::new();
        let mut end_media = Vec::new();
        for (n, c) in &mut self.calls {
            let ucm = c.ucm;
            let caller = c.call.caller();
            if let Some(at) = c.ended {
                if now.saturating_duration_since(at) >= ENDED_LINGER {
                    forget.push(*n);
                }
                continue;
            }
            let setting_up = matches!(
                c.call.state(),
                SetupState::Calling | SetupState::Early | SetupState::Cancelling
            );
            let media_idle = idle.contains(&c.media_key);
            let session_expired = c.call.session_expired(now);
            if orphaned
                || media_idle
                || session_expired
                || (setting_up
                    && now.saturating_duration_since(c.started) >= self.call_setup_timeout)
            {
                if setting_up {
                    let (resp, cancel) = c.call.give_up();
                    if let (Some(r), false) = (resp, orphaned && caller == Leg::Outside) {
                        Self::send_on(out, caller, ucm, r.to_bytes());
                    }
                    if let Some(cancel) = cancel {
                        Self::send_on(out, other_leg(caller), ucm, cancel.to_bytes());
                    }
                } else {
                    let reason = if media_idle {
                        "SIP;cause=408;text=\"media idle\""
                    } else if session_expired {
                        counters
                            .calls_session_expired
                            .fetch_add(1, Ordering::Relaxed);
                        "SIP;cause=408;text=\"session expired\""
                    } else {
                        "SIP;cause=503;text=\"traversal zone down\""
                    };
                    for (leg, bye) in c.call.hang_up([&vias[0], &vias[1]], reason) {
                        if !(orphaned && leg == Leg::Outside) {
                            Self::send_on(out, leg, ucm, bye.to_bytes());
                        }
                    }
                }
                c.ended = Some(now);
                let cause = if orphaned {
                    crate::calls::EndCause::ConnectionLost
                } else if setting_up {
                    crate::calls::EndCause::Timeout
                } else if media_idle {
                    crate::calls::EndCause::MediaIdle
                } else {
                    crate::calls::EndCause::SessionExpired
                };
                end_media.push((c.media_key.clone(), cause));
                continue;
            }
            for (leg, r) in c.call.expire(now, TRANSACTION_TIMEOUT) {
                Self::send_on(out, leg, ucm, r.to_bytes());
            }
        }
        if let Some(media) = &mut self.media {
            for (key, cause) in end_media {
                // A cause already recorded (an orphaned call's lost connection) stays.
                media.log_mut().set_cause(&key, cause);
                media.end(&key);
            }
        }
        for n in forget {
            self.forget_call(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> (CoreProxy, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
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
                domains: vec![DomainConfig {
                    name: "example.com".into(),
                    sip_registrations: true,
                }],
                nodes: vec![node],
                binding_id_base: 1,
            },
            counters.clone(),
        );
        core.set_traversal_up(true);
        core.set_node_connection(0, Some(1));
        (core, counters)
    }

    #[test]
    fn a_response_ending_at_the_core_is_dropped_not_forwarded_without_via() {
        // Found by the proxy fuzz target: popping the only Via left a message without one.
        let (mut core, counters) = core();
        let resp =
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP core.example.com:5060;branch=z9hG4bK-ewabc\r\n\
From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: c1\r\n\
CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
        let mut out = Vec::new();
        core.ucm_message(
            Instant::now(),
            1,
            Message::parse(resp.as_bytes()).expect("parse"),
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(counters.stray_responses.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn zones_follow_the_guide() {
        let (core, _) = core();
        let (zones, rules) = core.zones();
        assert_eq!(zones[0].name, "CEtcp-cucm1");
        assert_eq!(rules[0].priority, 45);
        assert_eq!(rules[0].zone, "CEtcp-cucm1");
    }

    fn parse(bytes: &[u8]) -> Message {
        Message::parse(bytes).expect("proxy output parses")
    }

    #[test]
    fn register_rewrites_the_contact_restores_it_routes_inbound_and_expires_in_simulated_time() {
        let (mut core, counters) = core();
        let t0 = Instant::now();
        let register = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS edge.example.com:5061;branch=z9hG4bK-ewe1;ewf=3\r\n\
Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKc1\r\n\
Path: <sip:ewf3@edge.example.com:5061;transport=tls;lr;ob>\r\n\
Max-Forwards: 69\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n\
Call-ID: c1\r\nCSeq: 2 REGISTER\r\nContact: <sip:alice@192.0.2.1:5061;transport=tls>\r\n\
Expires: 60\r\nContent-Length: 0\r\n\r\n";
        let mut out = Vec::new();
        core.edge_message(t0, parse(register.as_bytes()), &mut out);
        let [CoreOutput::ToUcm(1, fwd)] = &out[..] else {
            panic!("{out:?}")
        };
        let Message::Request(fwd) = parse(fwd) else {
            panic!("request")
        };
        assert!(
            fwd.headers.paths().expect("paths").is_empty(),
            "edge Path kept by the core"
        );
        let ContactList::Addresses(c) = fwd.headers.contacts().expect("contact") else {
            panic!("addresses")
        };
        assert_eq!(
            c[0].uri.to_string(),
            "sip:b1@core.example.com:5060;transport=tcp"
        );
        // The registrar's 200 lists the rewritten contact; the client sees its own.
        let mut ok = fwd.make_response(200, "OK", Some("r"));
        ok.headers
            .push(HeaderName::Contact, format!("{};expires=60", c[0]))
            .expect("contact");
        out.clear();
        core.ucm_message(t0, 1, Message::Response(ok), &mut out);
        let [CoreOutput::ToEdge(back)] = &out[..] else {
            panic!("{out:?}")
        };
        let Message::Response(back) = parse(back) else {
            panic!("response")
        };
        let contact = back.headers.first(&HeaderName::Contact).expect("contact");
        assert!(contact.contains("sip:alice@192.0.2.1:5061"), "{contact}");
        assert_eq!(core.registrations(t0).len(), 1);
        // Inbound: Unified CM addresses the rewritten contact; it goes to the edge's flow.
        let options = "OPTIONS sip:b1@core.example.com:5060;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKu1\r\nMax-Forwards: 70\r\n\
From: <sip:ucm@example.com>;tag=u\r\nTo: <sip:alice@example.com>\r\nCall-ID: o1\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        out.clear();
        core.ucm_message(t0, 1, parse(options.as_bytes()), &mut out);
        let [CoreOutput::ToEdge(inbound)] = &out[..] else {
            panic!("{out:?}")
        };
        let Message::Request(inbound) = parse(inbound) else {
            panic!("request")
        };
        assert_eq!(
            inbound.uri.to_string(),
            "sip:alice@192.0.2.1:5061;transport=tls"
        );
        assert!(inbound.headers.routes().expect("route")[0]
            .uri
            .to_string()
            .contains("ewf3@"));
        // 61 s later the binding is gone and the same request gets 480.
        core.handle_timeout(t0 + Duration::from_secs(61));
        assert!(core.registrations(t0 + Duration::from_secs(61)).is_empty());
        assert_eq!(counters.bindings_expired.load(Ordering::Relaxed), 1);
        out.clear();
        core.ucm_message(t0, 1, parse(options.as_bytes()), &mut out);
        assert!(matches!(&out[..], [CoreOutput::ToUcm(1, b)] if b.starts_with(b"SIP/2.0 480")));
    }

    fn request(b: &[u8]) -> Request {
        match parse(b) {
            Message::Request(r) => r,
            Message::Response(r) => panic!("a request, not {r:?}"),
        }
    }

    fn response(b: &[u8]) -> Response {
        match parse(b) {
            Message::Response(r) => r,
            Message::Request(r) => panic!("a response, not {r:?}"),
        }
    }

    const CLIENT_INVITE: &str = "INVITE sip:phone1@example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS edge.example.com:5061;branch=z9hG4bK-ewe1;ewf=3\r\n\
Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKc1\r\n\
Record-Route: <sip:ewf3@edge.example.com:5061;transport=tls;lr;ob>\r\n\
Max-Forwards: 69\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:phone1@example.com>\r\n\
Call-ID: out1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.1:5061;transport=tls>\r\n\
Content-Length: 0\r\n\r\n";

    /// The To tag of `r`.
    fn to_tag(r: &Response) -> String {
        let to = r.headers.to_addr().expect("To");
        to.tag().expect("To tag").to_owned()
    }

    /// The client's INVITE reaches the core: the INVITE it sends Unified CM.
    fn client_calls(core: &mut CoreProxy, t0: Instant) -> Request {
        let mut out = Vec::new();
        core.edge_message(t0, parse(CLIENT_INVITE.as_bytes()), &mut out);
        let [_, CoreOutput::ToUcm(1, inside)] = &out[..] else {
            panic!("{out:?}")
        };
        request(inside)
    }

    /// The phone answers the core's `inside` INVITE 200 with To tag `ph` (and `extra`
    /// headers): what the edge gets.
    fn phone_answers(
        core: &mut CoreProxy,
        t0: Instant,
        inside: &Request,
        extra: &[(HeaderName, &str)],
    ) -> Response {
        let mut ok = inside.make_response(200, "OK", Some("ph"));
        ok.headers
            .push(HeaderName::Contact, "<sip:2001@127.0.0.1:5060>")
            .expect("Contact");
        for (name, value) in extra {
            ok.headers.push(name.clone(), *value).expect("header");
        }
        let mut out = Vec::new();
        core.ucm_message(t0, 1, Message::Response(ok), &mut out);
        let [CoreOutput::ToEdge(back)] = &out[..] else {
            panic!("{out:?}")
        };
        response(back)
    }

    #[test]
    fn a_client_invite_becomes_a_dialog_of_its_own_and_the_answer_maps_back() {
        let (mut core, _) = core();
        let t0 = Instant::now();
        let mut out = Vec::new();
        core.edge_message(t0, parse(CLIENT_INVITE.as_bytes()), &mut out);
        let [CoreOutput::ToEdge(trying), CoreOutput::ToUcm(1, inside)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(response(trying).status, 100);
        let inside = request(inside);
        let h = &inside.headers;
        assert_ne!(h.call_id().expect("Call-ID"), "out1");
        assert_ne!(h.from_addr().expect("From").tag(), Some("a1"));
        assert_eq!(h.via().expect("Via").len(), 1);
        assert_eq!(h.max_forwards().expect("Max-Forwards"), Some(68));
        assert!(h.first(&HeaderName::RecordRoute).is_none());
        assert_eq!(core.call_count(), 1);
        // The phone answers on the inside dialog; the client gets the core's tag.
        let back = phone_answers(&mut core, t0, &inside, &[]);
        assert_eq!(back.status, 200);
        assert_eq!(back.headers.call_id().expect("Call-ID"), "out1");
        assert_eq!(
            back.headers.top_via().expect("Via").branch(),
            Some("z9hG4bK-ewe1"),
            "back down the edge's Via"
        );
        let tag = back.headers.to_addr().expect("To").tag().map(str::to_owned);
        assert!(tag.is_some_and(|t| t != "ph"), "the core's own To tag");
        assert!(back
            .headers
            .first(&HeaderName::Contact)
            .is_some_and(|c| c.contains("core.example.com")));
    }

    #[test]
    fn a_phones_refer_with_replaces_reaches_the_edge_naming_the_outside_dialog() {
        let (mut core, counters) = core();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let inside = client_calls(&mut core, t0);
        let back = phone_answers(&mut core, t0, &inside, &[]);
        let core_outside_tag = to_tag(&back);
        let inside_call_id = inside.headers.call_id().expect("Call-ID").to_owned();
        let core_inside_tag = inside
            .headers
            .from_addr()
            .expect("From")
            .tag()
            .expect("tag")
            .to_owned();
        // The phone transfers: it names its own dialog (the core's tag is its remote one).
        let in_dialog = |method: &str, extra: &str| {
            format!(
                "{method} sip:core.example.com:5060;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-{method}\r\nMax-Forwards: 70\r\n\
From: <sip:phone1@example.com>;tag=ph\r\nTo: <sip:alice@example.com>;tag={core_inside_tag}\r\n\
Call-ID: {inside_call_id}\r\nCSeq: 2 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
            )
        };
        let escaped = inside_call_id.replace('@', "%40");
        let refer = in_dialog(
            "REFER",
            &format!(
                "Refer-To: <sip:2002@example.com?Replaces={escaped}%3Bto-tag%3D{core_inside_tag}\
%3Bfrom-tag%3Dph>\r\n"
            ),
        );
        out.clear();
        core.ucm_message(t0, 1, parse(refer.as_bytes()), &mut out);
        let [CoreOutput::ToEdge(fwd)] = &out[..] else {
            panic!("{out:?}")
        };
        let fwd = request(fwd);
        assert_eq!(
            fwd.headers.first(&HeaderName::ReferTo),
            Some(
                format!(
                    "<sip:2002@example.com?Replaces=out1%3Bto-tag%3Da1%3Bfrom-tag%3D{core_outside_tag}>"
                )
                .as_str()
            ),
            "the client's view of the dialog: its own tag to, the core's from"
        );
        // Replaces outside an INVITE: 400 (RFC 3891 §3), counted; nothing forwarded.
        out.clear();
        let info = in_dialog("INFO", "Replaces: out1;to-tag=a;from-tag=b\r\n");
        core.ucm_message(t0, 1, parse(info.as_bytes()), &mut out);
        let [CoreOutput::ToUcm(1, refused)] = &out[..] else {
            panic!("{out:?}")
        };
        let refused = response(refused);
        assert_eq!(refused.status, 400);
        assert!(
            refused
                .reason
                .contains("Replaces is for INVITE only, not INFO"),
            "{}",
            refused.reason
        );
        // A malformed Replaces inside a Refer-To: 400 too.
        out.clear();
        let bad = in_dialog(
            "REFER",
            "Refer-To: <sip:2002@example.com?Replaces=x%3Bto-tag%3Da>\r\n",
        );
        core.ucm_message(t0, 1, parse(bad.as_bytes()), &mut out);
        let [CoreOutput::ToUcm(1, refused)] = &out[..] else {
            panic!("{out:?}")
        };
        let refused = response(refused);
        assert_eq!(refused.status, 400);
        assert!(refused.reason.contains("no from-tag"), "{}", refused.reason);
        assert_eq!(counters.transfer_refused.load(Ordering::Relaxed), 2);
        assert_eq!(counters.malformed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_session_interval_without_refresh_ends_the_call_and_a_refresh_restarts_it() {
        let (mut core, counters) = core();
        let secs = Duration::from_secs;
        let t0 = Instant::now();
        let mut out = Vec::new();
        let inside = client_calls(&mut core, t0);
        let se = [(HeaderName::SessionExpires, "90;refresher=uac")];
        let answered = phone_answers(&mut core, t0, &inside, &se);
        let core_tag = to_tag(&answered);
        // The client refreshes at 60 s; the phone's 2xx crosses back.
        let reinvite = format!(
            "INVITE sip:core.example.com:5060;transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS edge.example.com:5061;branch=z9hG4bK-ewe2;ewf=3\r\n\
Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKc2\r\nMax-Forwards: 69\r\n\
From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:phone1@example.com>;tag={core_tag}\r\n\
Call-ID: out1\r\nCSeq: 2 INVITE\r\nSession-Expires: 90;refresher=uac\r\n\
Content-Length: 0\r\n\r\n"
        );
        out.clear();
        core.edge_message(t0 + secs(60), parse(reinvite.as_bytes()), &mut out);
        let [CoreOutput::ToUcm(1, refresh)] = &out[..] else {
            panic!("{out:?}")
        };
        let refresh = request(refresh);
        assert_eq!(
            refresh.headers.first(&HeaderName::SessionExpires),
            Some("90;refresher=uac"),
            "the refresh carries the interval inside"
        );
        let mut ok = refresh.make_response(200, "OK", Some("ph"));
        ok.headers.push(se[0].0.clone(), se[0].1).expect("header");
        out.clear();
        core.ucm_message(t0 + secs(60), 1, Message::Response(ok), &mut out);
        assert!(matches!(&out[..], [CoreOutput::ToEdge(_)]), "{out:?}");
        // 90 s after the answer the session was refreshed: nothing happens.
        out.clear();
        core.call_timeouts(t0 + secs(149), &mut out);
        assert!(out.is_empty(), "{out:?}");
        // 90 s after the refresh with none since: BYE on both legs.
        core.call_timeouts(t0 + secs(150), &mut out);
        let [CoreOutput::ToEdge(outside), CoreOutput::ToUcm(1, inside_bye)] = &out[..] else {
            panic!("{out:?}")
        };
        for bye in [request(outside), request(inside_bye)] {
            assert_eq!(bye.method, Method::Bye);
            assert!(bye
                .headers
                .first(&HeaderName::parse("Reason"))
                .is_some_and(|r| r.contains("session expired")));
        }
        assert_eq!(counters.calls_session_expired.load(Ordering::Relaxed), 1);
        assert_eq!(core.call_count(), 0);
    }

    #[test]
    fn an_unanswered_call_times_out_on_both_legs_and_is_forgotten() {
        let (mut core, _) = core();
        core.set_call_setup_timeout(Duration::from_secs(5));
        let t0 = Instant::now();
        let mut out = Vec::new();
        core.edge_message(t0, parse(CLIENT_INVITE.as_bytes()), &mut out);
        out.clear();
        core.call_timeouts(t0 + Duration::from_secs(4), &mut out);
        assert!(out.is_empty(), "{out:?}");
        core.call_timeouts(t0 + Duration::from_secs(5), &mut out);
        let [CoreOutput::ToEdge(timeout), CoreOutput::ToUcm(1, cancel)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(response(timeout).status, 408);
        assert_eq!(request(cancel).method, Method::Cancel);
        assert_eq!(core.call_count(), 0);
        // After the linger the call's Call-IDs are forgotten: a late 487 is a stray.
        out.clear();
        core.call_timeouts(t0 + Duration::from_secs(40), &mut out);
        assert!(core.calls.is_empty() && core.call_ids.is_empty());
    }
}
