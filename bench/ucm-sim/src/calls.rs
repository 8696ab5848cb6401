//! Call routing and simulated inside phones, as a sans-IO state machine.
//!
//! [`Switch`] takes every request other than REGISTER (and every response) with the
//! connection it came on and `now`, and returns [`Action`]s: bytes to write on a
//! connection, media to start, update or stop on a UDP socket the IO layer bound (through
//! the `bind_media` callback) for a simulated phone.
//!
//! What it does, as Unified CM would:
//! * an INVITE from a user registered on the connection it arrives on, to another user's
//!   number or name, is answered `100 Trying` and proxied to the callee's most recent
//!   binding, down the connection its REGISTER came on, with the Request-URI set to the
//!   Contact and Route from the stored Path; ucm-sim record-routes and stays in the path:
//!   provisional and final responses are relayed back, ACK, BYE, re-INVITE, UPDATE, PRACK,
//!   INFO, REFER, MESSAGE, NOTIFY and OPTIONS in the dialog go to the other side, CANCEL
//!   is answered 200 and sent on (the callee's 487 comes back), and ucm-sim ACKs a non-2xx
//!   final response itself (it is a transaction-stateful proxy);
//! * an unknown number gets 404, a `busy` user 486, a user without a live binding 480, a
//!   caller not registered on that connection 403;
//! * a user whose profile has `digest_authentication = true` must answer a 407 challenge
//!   on each INVITE (Unified CM challenges a device whose phone security profile enables
//!   digest authentication; without it Unified CM trusts the registered device);
//! * users with `phone = "sim"` are answered by ucm-sim itself (see [`crate::offer`] for
//!   the SDP and [`crate::media`] for the media it sends and checks); they can also place
//!   calls ([`Switch::place_call`]) to registered users or to each other, and hang up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgeway_sip::Dialog;
use edgeway_sip::{HeaderName, Method, Request, Response, Uri, Via, MAGIC_COOKIE};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::error::UcmSimError;
use crate::offer::{self, Direction, MediaPlan, Offer, SdpRefusal};
use crate::registrar::{respond, Registrar};
use crate::users::{PhoneKind, User};
use crate::{ConnectionId, Origin, Transport};

/// Identifies one call in the admin API.
pub type CallNumber = u64;

/// What the IO layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes on the connection.
    Send {
        /// The connection.
        connection: ConnectionId,
        /// A whole SIP message.
        bytes: Vec<u8>,
    },
    /// Start (or update) the media of the socket bound at `local`.
    Media {
        /// The socket `bind_media` returned.
        local: SocketAddr,
        /// Where to send, keys and direction.
        plan: MediaPlan,
    },
    /// Stop the media of (and close) the socket at `local`.
    StopMedia {
        /// The socket.
        local: SocketAddr,
    },
}

/// How a simulated phone answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// 180 then 200 at once.
    #[default]
    Auto,
    /// 486 Busy Here.
    Busy,
    /// 180 and keep ringing until cancelled or hung up.
    Ring,
    /// 183 Session Progress with the answer SDP, and media from the phone at once (early
    /// media: an announcement or a ringback tone played by the far end); never picks up.
    Early,
}

impl AnswerMode {
    /// Parses `auto`, `busy`, `ring` or `early`.
    pub fn parse(s: &str) -> Option<AnswerMode> {
        Some(match s {
            "auto" => AnswerMode::Auto,
            "busy" => AnswerMode::Busy,
            "ring" => AnswerMode::Ring,
            "early" => AnswerMode::Early,
            _ => return None,
        })
    }
}

/// Counters of call handling; every refusal has one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SwitchCounters {
    /// INVITEs proxied to a registered user.
    pub calls_routed: u64,
    /// INVITEs answered 200 by a simulated phone.
    pub calls_answered: u64,
    /// Calls placed by simulated phones.
    pub calls_placed: u64,
    /// Calls that reached the established state.
    pub calls_established: u64,
    /// Calls ended by BYE.
    pub calls_ended: u64,
    /// INVITEs cancelled (487).
    pub calls_cancelled: u64,
    /// 404: the number is not in the directory.
    pub not_found: u64,
    /// 486: the callee is busy.
    pub busy: u64,
    /// 480: the callee has no live binding or its connection closed.
    pub unavailable: u64,
    /// 403: the caller is not registered on the connection.
    pub caller_not_registered: u64,
    /// 407 challenges to INVITEs.
    pub invite_challenges: u64,
    /// 488: an offer or answer a phone refused.
    pub sdp_refused: u64,
    /// 481: an in-dialog request for no known call.
    pub no_such_call: u64,
    /// 483: Max-Forwards ran out.
    pub too_many_hops: u64,
    /// Requests forwarded in a dialog.
    pub in_dialog_forwarded: u64,
    /// Responses relayed back.
    pub responses_relayed: u64,
    /// Responses for no transaction ucm-sim knows.
    pub stray_responses: u64,
    /// Calls given up unanswered after [`SETUP_TIMEOUT`].
    pub setup_timeouts: u64,
}

/// The state of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    /// INVITE sent or received, no provisional answer yet.
    Trying,
    /// 180/183 seen.
    Ringing,
    /// 200 seen.
    Established,
    /// BYE or CANCEL sent, waiting for its answer.
    Ending,
}

/// One leg of a call as the admin `calls` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegView {
    /// The user on this leg.
    pub user: String,
    /// `sim` for a simulated phone, `registered` for a client behind a connection.
    pub phone: PhoneKind,
    /// The connection its SIP uses (none between two simulated phones).
    pub connection: Option<ConnectionId>,
    /// The phone's media socket (simulated phones only).
    pub media_local: Option<String>,
    /// Where its media goes.
    pub media_remote: Option<String>,
    /// `true` for SRTP.
    pub srtp: bool,
    /// The phone's media direction.
    pub direction: Option<Direction>,
}

/// A call as the admin `calls` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallView {
    /// The call's number (for `hangup`).
    pub call: CallNumber,
    /// The SIP Call-ID (none between two simulated phones).
    pub call_id: Option<String>,
    /// `proxied`, `sim-answered`, `sim-placed` or `sim-to-sim`.
    pub kind: &'static str,
    /// Its state.
    pub state: CallState,
    /// The caller's user.
    pub from: String,
    /// The callee's user.
    pub to: String,
    /// Seconds since it started.
    pub age: u64,
    /// Its legs: caller first.
    pub legs: Vec<LegView>,
}

/// A simulated phone's side of a call.
#[derive(Debug)]
struct SimLeg {
    user: User,
    /// The connection its SIP goes over (none for sim-to-sim).
    connection: Option<ConnectionId>,
    media_local: SocketAddr,
    plan: Option<MediaPlan>,
    /// The key it offered (placed calls, until the answer comes).
    offer: Option<Offer>,
    dialog: Option<Dialog>,
    /// The INVITE it received (answered calls) or sent (placed calls).
    invite: Option<Request>,
    /// Its Contact (in 2xx answers to re-INVITE and UPDATE: they refresh the target).
    contact: String,
    sdp_version: u64,
}

/// A call proxied between two registered users.
#[derive(Debug)]
struct Proxied {
    caller: ConnectionId,
    callee: ConnectionId,
    /// The INVITE as forwarded: CANCEL and the ACK of a non-2xx are built from it.
    forwarded: Request,
    caller_user: String,
    callee_user: String,
}

#[derive(Debug)]
enum Kind {
    Proxied(Box<Proxied>),
    /// A registered user called a simulated phone.
    SimAnswered(Box<SimLeg>),
    /// A simulated phone called a registered user.
    SimPlaced(Box<SimLeg>),
    /// Two simulated phones (no SIP).
    SimToSim(Box<SimLeg>, Box<SimLeg>),
}

#[derive(Debug)]
struct Call {
    call_id: Option<String>,
    kind: Kind,
    state: CallState,
    from: String,
    to: String,
    started: Instant,
    caller_registered: Option<String>,
}

/// A request ucm-sim forwarded or sent, waiting for responses.
#[derive(Debug)]
struct Pending {
    call: Option<CallNumber>,
    /// Where responses go back (proxied requests); `None` for the phones' own requests.
    upstream: Option<ConnectionId>,
    method: Method,
    /// When [`Switch::expire`] first saw it (set lazily: inserting needs no clock).
    seen: Option<Instant>,
}

/// A call still not answered after this long is given up (Unified CM's default maximum
/// ring time is 180 s); ucm-sim's own phones in `ring` mode ring on.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(180);
/// A forwarded or sent request with no final response after this long is forgotten
/// (twice RFC 3261's Timer F).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(64);

/// A connection's transport and local address (for Via, Contact and Record-Route).
#[derive(Debug, Clone, Copy)]
struct Link {
    transport: Transport,
    local: SocketAddr,
}

/// The user part of ucm-sim's Record-Route: in-dialog Route values naming it are removed.
const RR_USER: &str = "ucm-sim-rr";

/// The call router and simulated phones; see the module docs.
#[derive(Debug)]
pub struct Switch {
    calls: HashMap<CallNumber, Call>,
    by_call_id: HashMap<String, CallNumber>,
    pending: HashMap<String, Pending>,
    links: HashMap<ConnectionId, Link>,
    modes: HashMap<String, AnswerMode>,
    next: u64,
    rng: StdRng,
    counters: SwitchCounters,
}

type BindMedia<'a> = &'a mut dyn FnMut() -> Option<SocketAddr>;

fn send(connection: ConnectionId, msg: &impl ToBytes) -> Action {
    Action::Send {
        connection,
        bytes: msg.bytes(),
    }
}

/// Requests and responses written out.
trait ToBytes {
    fn bytes(&self) -> Vec<u8>;
}

impl ToBytes for Request {
    fn bytes(&self) -> Vec<u8> {
        self.to_bytes()
    }
}

impl ToBytes for Response {
    fn bytes(&self) -> Vec<u8> {
        self.to_bytes()
    }
}

fn with_warning(req: &Request, status: u16, reason: &str, warning: &str) -> Response {
    respond(
        req,
        status,
        reason,
        vec![(HeaderName::Warning, warning.to_owned())],
    )
}

fn uri_user(uri: &Uri) -> Option<&str> {
    match uri {
        Uri::Sip(s) => s.user.as_deref(),
        _ => None,
    }
}

fn to_has_tag(req: &Request) -> bool {
    req.headers.to_addr().is_ok_and(|t| t.tag().is_some())
}

fn has_sdp(body: &[u8], content_type: Option<&str>) -> bool {
    !body.is_empty()
        && content_type.is_none_or(|c| c.trim().eq_ignore_ascii_case("application/sdp"))
}

impl Switch {
    /// A switch whose SDES keys come from a CSPRNG seeded with `seed`.
    pub fn new(seed: [u8; 32]) -> Switch {
        Switch {
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            pending: HashMap::new(),
            links: HashMap::new(),
            modes: HashMap::new(),
            next: 0,
            rng: StdRng::from_seed(seed),
            counters: SwitchCounters::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &SwitchCounters {
        &self.counters
    }

    /// Tells the switch a connection is open and its local address.
    pub fn connection_opened(&mut self, origin: &Origin, local: SocketAddr) {
        self.links.insert(
            origin.connection,
            Link {
                transport: origin.transport,
                local,
            },
        );
    }

    /// Ends every call using the connection (its media stops).
    pub fn connection_closed(&mut self, connection: ConnectionId) -> Vec<Action> {
        self.links.remove(&connection);
        let gone: Vec<CallNumber> = self
            .calls
            .iter()
            .filter(|(_, c)| match &c.kind {
                Kind::Proxied(p) => p.caller == connection || p.callee == connection,
                Kind::SimAnswered(l) | Kind::SimPlaced(l) => l.connection == Some(connection),
                Kind::SimToSim(..) => false,
            })
            .map(|(n, _)| *n)
            .collect();
        let mut out = Vec::new();
        for n in gone {
            self.end_call(n, &mut out);
        }
        self.pending.retain(|_, p| p.upstream != Some(connection));
        out
    }

    fn number(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn branch(&mut self) -> String {
        let n = self.number();
        format!("{MAGIC_COOKIE}ucmc{n:x}")
    }

    fn via_for(&mut self, connection: ConnectionId) -> Option<(Via, String)> {
        let link = *self.links.get(&connection)?;
        let branch = self.branch();
        let via = Via::parse(&format!(
            "SIP/2.0/{} {};branch={branch}",
            link.transport.via_token(),
            link.local
        ))
        .ok()?;
        Some((via, branch))
    }

    fn end_call(&mut self, n: CallNumber, out: &mut Vec<Action>) {
        let Some(call) = self.calls.remove(&n) else {
            return;
        };
        if let Some(id) = &call.call_id {
            self.by_call_id.remove(id);
        }
        match call.kind {
            Kind::SimAnswered(l) | Kind::SimPlaced(l) => out.push(Action::StopMedia {
                local: l.media_local,
            }),
            Kind::SimToSim(a, b) => {
                out.push(Action::StopMedia {
                    local: a.media_local,
                });
                out.push(Action::StopMedia {
                    local: b.media_local,
                });
            }
            Kind::Proxied(_) => {}
        }
    }

    /// Handles a request that is not a REGISTER.
    pub fn handle_request(
        &mut self,
        now: Instant,
        reg: &mut Registrar,
        req: &Request,
        origin: &Origin,
        bind_media: BindMedia<'_>,
    ) -> Vec<Action> {
        let reply = |r: Response| vec![send(origin.connection, &r)];
        let Ok(call_id) = req.headers.call_id() else {
            return reg
                .handle_request(now, req, origin)
                .map(reply)
                .unwrap_or_default();
        };
        if let Some(&n) = self.by_call_id.get(call_id) {
            return self.in_call(n, req, origin);
        }
        if to_has_tag(req) || matches!(req.method, Method::Ack | Method::Cancel) {
            if matches!(req.method, Method::Ack) {
                return Vec::new();
            }
            self.counters.no_such_call += 1;
            return reply(respond(req, 481, "Call/Transaction Does Not Exist", vec![]));
        }
        let callee = uri_user(&req.uri)
            .and_then(|u| reg.users().find(u))
            .cloned();
        let Some(callee) = callee else {
            if matches!(req.method, Method::Invite | Method::Message) {
                self.counters.not_found += 1;
                return reply(with_warning(
                    req,
                    404,
                    "Not Found",
                    "399 ucm-sim \"no such directory number\"",
                ));
            }
            // Requests to ucm-sim itself (OPTIONS pings) keep the registrar's answers.
            return reg
                .handle_request(now, req, origin)
                .map(reply)
                .unwrap_or_default();
        };
        if req.method == Method::Invite {
            return self.new_invite(now, reg, req, origin, callee, bind_media);
        }
        if callee.phone == PhoneKind::Sim {
            let status = if req.method == Method::Refer {
                (202, "Accepted")
            } else {
                (200, "OK")
            };
            return reply(respond(req, status.0, status.1, vec![]));
        }
        match reg.target(now, &callee.name) {
            Some(target) => {
                let mut fwd = req.clone();
                fwd.uri = target.contact.clone();
                fwd.headers.remove_all(&HeaderName::Route);
                for p in &target.path {
                    let _ = fwd.headers.push(HeaderName::Route, p.clone());
                }
                self.forward(fwd, origin.connection, target.connection, None)
                    .unwrap_or_else(&reply)
            }
            None => {
                self.counters.unavailable += 1;
                reply(respond(req, 480, "Temporarily Unavailable", vec![]))
            }
        }
    }

    /// Sends `fwd` down `to` with ucm-sim's Via, remembering where responses go.
    fn forward(
        &mut self,
        mut fwd: Request,
        from: ConnectionId,
        to: ConnectionId,
        call: Option<CallNumber>,
    ) -> Result<Vec<Action>, Response> {
        match fwd.decrement_max_forwards() {
            Ok(Some(0)) | Err(_) => {
                self.counters.too_many_hops += 1;
                return Err(respond(&fwd, 483, "Too Many Hops", vec![]));
            }
            _ => {}
        }
        let Some((via, branch)) = self.via_for(to) else {
            self.counters.unavailable += 1;
            return Err(respond(
                &fwd,
                480,
                "Temporarily Unavailable (the callee's connection closed)",
                vec![],
            ));
        };
        let _ = fwd.headers.prepend(HeaderName::Via, via.to_string());
        if fwd.method != Method::Ack {
            self.pending.insert(
                branch,
                Pending {
                    call,
                    upstream: Some(from),
                    method: fwd.method.clone(),
                    seen: None,
                },
            );
        }
        Ok(vec![send(to, &fwd)])
    }

    fn new_invite(
        &mut self,
        now: Instant,
        reg: &mut Registrar,
        req: &Request,
        origin: &Origin,
        callee: User,
        bind_media: BindMedia<'_>,
    ) -> Vec<Action> {
        let reply = |r: Response| vec![send(origin.connection, &r)];
        let caller = req
            .headers
            .from_addr()
            .ok()
            .and_then(|f| uri_user(&f.uri).and_then(|u| reg.users().find(u)).cloned());
        let Some(caller) = caller.filter(|c| reg.registered_on(now, &c.name, origin.connection))
        else {
            self.counters.caller_not_registered += 1;
            return reply(with_warning(
                req,
                403,
                "Forbidden",
                "399 ucm-sim \"the caller is not registered on this connection\"",
            ));
        };
        if caller.digest_authentication {
            if let Err(r) = reg.authorize_request(now, req, &caller) {
                if r.status == 407 {
                    self.counters.invite_challenges += 1;
                }
                return reply(r);
            }
        }
        if callee.busy {
            self.counters.busy += 1;
            return reply(respond(req, 486, "Busy Here", vec![]));
        }
        let Ok(call_id) = req.headers.call_id().map(str::to_owned) else {
            return Vec::new();
        };
        if callee.phone == PhoneKind::Sim {
            return self.sim_answer(now, req, origin, caller, callee, call_id, bind_media);
        }
        let Some(target) = reg.target(now, &callee.name) else {
            self.counters.unavailable += 1;
            return reply(respond(req, 480, "Temporarily Unavailable", vec![]));
        };
        let Some(link) = self.links.get(&origin.connection).copied() else {
            return Vec::new();
        };
        let mut fwd = req.clone();
        fwd.uri = target.contact.clone();
        fwd.headers.remove_all(&HeaderName::Route);
        for p in &target.path {
            let _ = fwd.headers.push(HeaderName::Route, p.clone());
        }
        let rr = format!(
            "<sip:{RR_USER}@{};transport={};lr>",
            link.local,
            link.transport.via_token().to_ascii_lowercase()
        );
        let _ = fwd.headers.prepend(HeaderName::RecordRoute, rr);
        let n = self.number();
        let mut out = reply(respond(req, 100, "Trying", vec![]));
        match self.forward(fwd.clone(), origin.connection, target.connection, Some(n)) {
            Ok(sent) => out.extend(sent),
            Err(r) => return reply(r),
        }
        // The forwarded copy (with ucm-sim's Via) is what CANCEL and ACK are built from.
        let forwarded = match &out[1] {
            Action::Send { bytes, .. } => match edgeway_sip::Message::parse(bytes) {
                Ok(edgeway_sip::Message::Request(r)) => r,
                _ => fwd,
            },
            _ => fwd,
        };
        self.counters.calls_routed += 1;
        self.by_call_id.insert(call_id.clone(), n);
        self.calls.insert(
            n,
            Call {
                call_id: Some(call_id),
                kind: Kind::Proxied(Box::new(Proxied {
                    caller: origin.connection,
                    callee: target.connection,
                    forwarded,
                    caller_user: caller.name.clone(),
                    callee_user: callee.name.clone(),
                })),
                state: CallState::Trying,
                from: caller.name.clone(),
                to: callee.name.clone(),
                started: now,
                caller_registered: Some(caller.name),
            },
        );
        out
    }

    /// A simulated phone answers an INVITE (per its answer mode).
    #[allow(clippy::too_many_arguments)]
    fn sim_answer(
        &mut self,
        now: Instant,
        req: &Request,
        origin: &Origin,
        caller: User,
        callee: User,
        call_id: String,
        bind_media: BindMedia<'_>,
    ) -> Vec<Action> {
        let reply = |r: Response| vec![send(origin.connection, &r)];
        let mode = self.modes.get(&callee.name).copied().unwrap_or_default();
        if mode == AnswerMode::Busy {
            self.counters.busy += 1;
            return reply(respond(req, 486, "Busy Here", vec![]));
        }
        let Some(local) = bind_media() else {
            return reply(respond(
                req,
                503,
                "Service Unavailable (no media port)",
                vec![],
            ));
        };
        let (answer, plan) = match offer::answer(
            &req.body,
            callee.security_profile,
            local,
            1,
            None,
            &mut self.rng,
        ) {
            Ok(x) => x,
            Err(refusal) => {
                self.counters.sdp_refused += 1;
                let mut out = reply(not_acceptable(req, &refusal));
                out.push(Action::StopMedia { local });
                return out;
            }
        };
        let Some(link) = self.links.get(&origin.connection).copied() else {
            return vec![Action::StopMedia { local }];
        };
        let contact = format!(
            "<sip:{}@{};transport={}>",
            callee.number,
            link.local,
            link.transport.via_token().to_ascii_lowercase()
        );
        let ringing = respond(
            req,
            180,
            "Ringing",
            vec![(HeaderName::Contact, contact.clone())],
        );
        let mut out = reply(respond(req, 100, "Trying", vec![]));
        out.push(send(origin.connection, &ringing));
        let n = self.number();
        let mut leg = SimLeg {
            user: callee.clone(),
            connection: Some(origin.connection),
            media_local: local,
            plan: Some(plan),
            offer: None,
            dialog: None,
            invite: Some(req.clone()),
            contact: contact.clone(),
            sdp_version: 1,
        };
        let mut state = CallState::Ringing;
        if mode == AnswerMode::Auto {
            let ok = sim_ok(req, &contact, answer);
            leg.dialog = Dialog::new_uas(req, &ok).ok();
            out.push(send(origin.connection, &ok));
            if let Some(plan) = &leg.plan {
                out.push(Action::Media {
                    local,
                    plan: plan.clone(),
                });
            }
            state = CallState::Established;
            self.counters.calls_answered += 1;
            self.counters.calls_established += 1;
        } else {
            if mode == AnswerMode::Early {
                let mut progress = respond(
                    req,
                    183,
                    "Session Progress",
                    vec![(HeaderName::Contact, contact.clone())],
                );
                let _ = progress.set_body(Some("application/sdp"), answer.clone());
                out.push(send(origin.connection, &progress));
                if let Some(plan) = &leg.plan {
                    out.push(Action::Media {
                        local,
                        plan: plan.clone(),
                    });
                }
            }
            // Keep the answer for when the phone is picked up: ring and early never pick up.
            leg.offer = Some(Offer {
                body: answer,
                crypto: None,
            });
        }
        self.by_call_id.insert(call_id.clone(), n);
        self.calls.insert(
            n,
            Call {
                call_id: Some(call_id),
                kind: Kind::SimAnswered(Box::new(leg)),
                state,
                from: caller.name.clone(),
                to: callee.name,
                started: now,
                caller_registered: Some(caller.name),
            },
        );
        out
    }

    /// A request for a known call.
    fn in_call(&mut self, n: CallNumber, req: &Request, origin: &Origin) -> Vec<Action> {
        let reply = |r: Response| vec![send(origin.connection, &r)];
        let Some(call) = self.calls.get_mut(&n) else {
            return Vec::new();
        };
        match &mut call.kind {
            Kind::Proxied(p) => {
                let other = if origin.connection == p.caller {
                    p.callee
                } else {
                    p.caller
                };
                match req.method {
                    Method::Cancel if call.state != CallState::Established => {
                        let cancel = p.forwarded.make_cancel().ok();
                        let callee = p.callee;
                        call.state = CallState::Ending;
                        self.counters.calls_cancelled += 1;
                        let mut out = reply(respond(req, 200, "OK", vec![]));
                        if let Some(c) = cancel {
                            out.push(send(callee, &c));
                        }
                        out
                    }
                    Method::Cancel => reply(respond(req, 200, "OK", vec![])),
                    // The ACK of a non-2xx was ucm-sim's to send (it did): absorbed.
                    Method::Ack if call.state != CallState::Established => Vec::new(),
                    _ => {
                        if req.method == Method::Invite && !to_has_tag(req) {
                            // A retransmitted or forked initial INVITE: already handled.
                            return Vec::new();
                        }
                        let mut fwd = req.clone();
                        strip_own_routes(&mut fwd);
                        self.counters.in_dialog_forwarded += 1;
                        self.forward(fwd, origin.connection, other, Some(n))
                            .unwrap_or_else(&reply)
                    }
                }
            }
            Kind::SimAnswered(leg) | Kind::SimPlaced(leg) => {
                let answered_invite = leg.invite.clone();
                if req.method == Method::Invite && !to_has_tag(req) {
                    // The initial INVITE again (a retransmission): already answered.
                    return Vec::new();
                }
                match req.method {
                    Method::Cancel => {
                        if call.state == CallState::Established {
                            return reply(respond(req, 200, "OK", vec![]));
                        }
                        let mut out = reply(respond(req, 200, "OK", vec![]));
                        if let Some(inv) = answered_invite {
                            out.push(send(
                                origin.connection,
                                &respond(&inv, 487, "Request Terminated", vec![]),
                            ));
                        }
                        self.counters.calls_cancelled += 1;
                        self.end_call(n, &mut out);
                        out
                    }
                    Method::Ack => Vec::new(),
                    Method::Bye => {
                        let mut out = reply(respond(req, 200, "OK", vec![]));
                        self.counters.calls_ended += 1;
                        self.end_call(n, &mut out);
                        out
                    }
                    Method::Invite | Method::Update if has_sdp(&req.body, content_type(req)) => {
                        if let Some(d) = leg.dialog.as_mut() {
                            let _ = d.handle_request(req);
                        }
                        let local = leg.media_local;
                        let own = leg.plan.as_ref().and_then(|p| p.tx_crypto.clone());
                        leg.sdp_version += 1;
                        match offer::answer(
                            &req.body,
                            leg.user.security_profile,
                            local,
                            leg.sdp_version,
                            own.as_ref(),
                            &mut self.rng,
                        ) {
                            Ok((body, plan)) => {
                                leg.plan = Some(plan.clone());
                                let ok = sim_ok(req, &leg.contact, body);
                                vec![send(origin.connection, &ok), Action::Media { local, plan }]
                            }
                            Err(refusal) => {
                                self.counters.sdp_refused += 1;
                                reply(not_acceptable(req, &refusal))
                            }
                        }
                    }
                    Method::Refer => reply(respond(req, 202, "Accepted", vec![])),
                    _ => {
                        if let Some(d) = leg.dialog.as_mut() {
                            let _ = d.handle_request(req);
                        }
                        reply(respond(req, 200, "OK", vec![]))
                    }
                }
            }
            Kind::SimToSim(..) => Vec::new(),
        }
    }

    /// Handles a response; `None` when it answers nothing the switch sent (the admin
    /// `send` may be waiting for it).
    pub fn handle_response(&mut self, resp: &Response, origin: &Origin) -> Option<Vec<Action>> {
        let branch = resp.headers.top_via().ok()?.branch()?.to_owned();
        let method = resp.headers.cseq().ok()?.method;
        let pending = self.pending.get(&branch)?;
        let (call, upstream) = (pending.call, pending.upstream);
        if resp.status >= 200 && pending.method == method {
            self.pending.remove(&branch);
        }
        let Some(upstream) = upstream else {
            return Some(self.own_response(call?, resp, method, origin));
        };
        if method == Method::Cancel {
            // The answer to ucm-sim's own CANCEL (hop by hop): not relayed.
            return Some(Vec::new());
        }
        let mut back = resp.clone();
        let _ = back.headers.remove_first_value(&HeaderName::Via);
        self.counters.responses_relayed += 1;
        let mut out = vec![send(upstream, &back)];
        let Some(n) = call else {
            return Some(out);
        };
        let Some(c) = self.calls.get_mut(&n) else {
            return Some(out);
        };
        let Kind::Proxied(p) = &c.kind else {
            return Some(out);
        };
        match (method, resp.status) {
            (Method::Invite, 180..=199) if c.state == CallState::Trying => {
                c.state = CallState::Ringing;
            }
            (Method::Invite, 200..=299) => {
                if c.state != CallState::Established {
                    self.counters.calls_established += 1;
                }
                c.state = CallState::Established;
            }
            (Method::Invite, 300..) if c.state != CallState::Established => {
                if let Ok(ack) = p.forwarded.make_ack_for_non_2xx(resp) {
                    out.push(send(p.callee, &ack));
                }
                self.end_call(n, &mut out);
            }
            (Method::Bye, 200..) => {
                self.counters.calls_ended += 1;
                self.end_call(n, &mut out);
            }
            _ => {}
        }
        Some(out)
    }

    /// A response to a simulated phone's own INVITE, CANCEL or BYE.
    fn own_response(
        &mut self,
        n: CallNumber,
        resp: &Response,
        method: Method,
        origin: &Origin,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(call) = self.calls.get_mut(&n) else {
            return out;
        };
        let Kind::SimPlaced(leg) = &mut call.kind else {
            return out;
        };
        if method != Method::Invite {
            return out;
        }
        let Some(invite) = leg.invite.clone() else {
            return out;
        };
        match resp.status {
            100..=199 => {
                if resp.status >= 180 && call.state == CallState::Trying {
                    call.state = CallState::Ringing;
                }
            }
            200..=299 => {
                let plan = leg
                    .offer
                    .as_ref()
                    .map(|o| offer::read_answer(&resp.body, leg.user.security_profile, o));
                let Ok(mut dialog) = Dialog::new_uac(&invite, resp) else {
                    return out;
                };
                let Some((via, _)) = self.via_for(origin.connection) else {
                    return out;
                };
                if let Ok(ack) = dialog.create_ack(1, &via) {
                    out.push(send(origin.connection, &ack));
                }
                let Some(call) = self.calls.get_mut(&n) else {
                    return out;
                };
                let Kind::SimPlaced(leg) = &mut call.kind else {
                    return out;
                };
                match plan {
                    Some(Ok(plan)) => {
                        out.push(Action::Media {
                            local: leg.media_local,
                            plan: plan.clone(),
                        });
                        leg.plan = Some(plan);
                        leg.dialog = Some(dialog);
                        if call.state != CallState::Established {
                            self.counters.calls_established += 1;
                        }
                        call.state = CallState::Established;
                    }
                    _ => {
                        // RFC 3264 §5 has no way to refuse an answer: ACK, then BYE.
                        self.counters.sdp_refused += 1;
                        if let Some((via, _)) = self.via_for(origin.connection) {
                            if let Ok(mut bye) = dialog.create_request(Method::Bye, &via) {
                                let reason = plan
                                    .and_then(|p| p.err())
                                    .map_or("no SDP answer".to_owned(), |e| e.to_string());
                                let _ = bye.headers.push(
                                    HeaderName::Other("Reason".into()),
                                    format!("SIP;cause=488;text=\"{}\"", reason.replace('"', "'")),
                                );
                                out.push(send(origin.connection, &bye));
                            }
                        }
                        self.end_call(n, &mut out);
                    }
                }
            }
            _ => {
                if let Ok(ack) = invite.make_ack_for_non_2xx(resp) {
                    out.push(send(origin.connection, &ack));
                }
                self.end_call(n, &mut out);
            }
        }
        out
    }

    /// A simulated phone (`from`) calls `to`: a registered user (an INVITE down its
    /// connection) or another simulated phone (offer and answer exchanged in process).
    pub fn place_call(
        &mut self,
        now: Instant,
        reg: &Registrar,
        from: &str,
        to: &str,
        bind_media: BindMedia<'_>,
    ) -> Result<(CallNumber, Vec<Action>), UcmSimError> {
        let caller = reg
            .users()
            .find(from)
            .cloned()
            .ok_or_else(|| UcmSimError::UnknownUser(from.to_owned()))?;
        if caller.phone != PhoneKind::Sim {
            return Err(UcmSimError::NotASimPhone(caller.name));
        }
        let callee = reg
            .users()
            .find(to)
            .cloned()
            .ok_or_else(|| UcmSimError::UnknownUser(to.to_owned()))?;
        let no_port = || UcmSimError::Media("no UDP port for media".to_owned());
        if callee.phone == PhoneKind::Sim {
            return self.sim_to_sim(now, caller, callee, bind_media);
        }
        let target = reg
            .target(now, &callee.name)
            .ok_or_else(|| UcmSimError::NotRegistered(callee.name.clone()))?;
        let link = *self
            .links
            .get(&target.connection)
            .ok_or(UcmSimError::ConnectionClosed(target.connection))?;
        let local = bind_media().ok_or_else(no_port)?;
        let offer = offer::make_offer(caller.security_profile, local, &mut self.rng);
        let n = self.number();
        let branch = self.branch();
        let domain = &target.domain;
        let call_id = format!("ucm-sim-call-{n:x}@{domain}");
        let mut invite = Request::new(Method::Invite, target.contact.clone());
        let contact = format!(
            "<sip:{}@{};transport={}>",
            caller.number,
            link.local,
            link.transport.via_token().to_ascii_lowercase()
        );
        let headers = [
            (
                HeaderName::Via,
                format!(
                    "SIP/2.0/{} {};branch={branch}",
                    link.transport.via_token(),
                    link.local
                ),
            ),
            (HeaderName::MaxForwards, "70".to_owned()),
            (
                HeaderName::From,
                format!("<sip:{}@{domain}>;tag=ucm{n:x}", caller.number),
            ),
            (HeaderName::To, format!("<{}>", target.aor)),
            (HeaderName::CallId, call_id.clone()),
            (HeaderName::CSeq, "1 INVITE".to_owned()),
            (HeaderName::Contact, contact.clone()),
            (
                HeaderName::Allow,
                "INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, INFO, REFER, MESSAGE, OPTIONS".to_owned(),
            ),
        ];
        for (name, value) in headers {
            invite
                .headers
                .push(name, value)
                .map_err(|e| UcmSimError::Media(e.to_string()))?;
        }
        for p in &target.path {
            let _ = invite.headers.push(HeaderName::Route, p.clone());
        }
        invite
            .set_body(Some("application/sdp"), offer.body.clone())
            .map_err(|e| UcmSimError::Media(e.to_string()))?;
        let out = vec![send(target.connection, &invite)];
        self.pending.insert(
            branch,
            Pending {
                call: Some(n),
                upstream: None,
                method: Method::Invite,
                seen: None,
            },
        );
        self.counters.calls_placed += 1;
        self.by_call_id.insert(call_id.clone(), n);
        self.calls.insert(
            n,
            Call {
                call_id: Some(call_id),
                kind: Kind::SimPlaced(Box::new(SimLeg {
                    user: caller.clone(),
                    connection: Some(target.connection),
                    media_local: local,
                    plan: None,
                    offer: Some(offer),
                    dialog: None,
                    invite: Some(invite),
                    contact,
                    sdp_version: 1,
                })),
                state: CallState::Trying,
                from: caller.name,
                to: callee.name.clone(),
                started: now,
                caller_registered: None,
            },
        );
        Ok((n, out))
    }

    fn sim_to_sim(
        &mut self,
        now: Instant,
        caller: User,
        callee: User,
        bind_media: BindMedia<'_>,
    ) -> Result<(CallNumber, Vec<Action>), UcmSimError> {
        let no_port = || UcmSimError::Media("no UDP port for media".to_owned());
        let a = bind_media().ok_or_else(no_port)?;
        let Some(b) = bind_media() else {
            return Err(no_port());
        };
        let sdp_error = |e: SdpRefusal| UcmSimError::Media(format!("488 {e}"));
        let offer = offer::make_offer(caller.security_profile, a, &mut self.rng);
        let (answer, b_plan) = offer::answer(
            &offer.body,
            callee.security_profile,
            b,
            1,
            None,
            &mut self.rng,
        )
        .map_err(sdp_error)?;
        let a_plan =
            offer::read_answer(&answer, caller.security_profile, &offer).map_err(sdp_error)?;
        let n = self.number();
        let leg = |user: User, local, plan: MediaPlan| SimLeg {
            user,
            connection: None,
            media_local: local,
            plan: Some(plan),
            offer: None,
            dialog: None,
            invite: None,
            contact: String::new(),
            sdp_version: 1,
        };
        let out = vec![
            Action::Media {
                local: a,
                plan: a_plan.clone(),
            },
            Action::Media {
                local: b,
                plan: b_plan.clone(),
            },
        ];
        self.counters.calls_placed += 1;
        self.counters.calls_answered += 1;
        self.counters.calls_established += 1;
        self.calls.insert(
            n,
            Call {
                call_id: None,
                kind: Kind::SimToSim(
                    Box::new(leg(caller.clone(), a, a_plan)),
                    Box::new(leg(callee.clone(), b, b_plan)),
                ),
                state: CallState::Established,
                from: caller.name,
                to: callee.name,
                started: now,
                caller_registered: None,
            },
        );
        Ok((n, out))
    }

    /// Hangs up call `n` at its simulated phone: BYE when established, CANCEL while a
    /// placed call rings, 603 Decline for an answered call still ringing.
    pub fn hangup(&mut self, n: CallNumber) -> Result<Vec<Action>, UcmSimError> {
        let call = self.calls.get_mut(&n).ok_or(UcmSimError::NoSuchCall(n))?;
        let mut out = Vec::new();
        let state = call.state;
        let placed = matches!(call.kind, Kind::SimPlaced(_));
        match &mut call.kind {
            Kind::Proxied(_) => return Err(UcmSimError::NotASimCall(n)),
            Kind::SimToSim(..) => {}
            Kind::SimAnswered(leg) | Kind::SimPlaced(leg) => {
                let Some(conn) = leg.connection else {
                    self.end_call(n, &mut out);
                    return Ok(out);
                };
                let invite = leg.invite.clone();
                match (state, leg.dialog.as_mut(), invite) {
                    (CallState::Established, Some(d), _) => {
                        let mut d = d.clone();
                        if let Some((via, _)) = self.via_for(conn) {
                            if let Ok(bye) = d.create_request(Method::Bye, &via) {
                                out.push(send(conn, &bye));
                            }
                        }
                    }
                    (_, _, Some(inv)) if placed => {
                        if let Ok(cancel) = inv.make_cancel() {
                            out.push(send(conn, &cancel));
                        }
                        // The 487 that follows is ACKed by own_response, which ends the call.
                        call.state = CallState::Ending;
                        return Ok(out);
                    }
                    (_, _, Some(inv)) => {
                        out.push(send(conn, &respond(&inv, 603, "Decline", vec![])));
                    }
                    _ => {}
                }
            }
        }
        self.counters.calls_ended += 1;
        self.end_call(n, &mut out);
        Ok(out)
    }

    /// Gives up calls unanswered for [`SETUP_TIMEOUT`] (a proxied one gets 408 back to the
    /// caller and a CANCEL to the callee; a placed one is cancelled) and forgets requests
    /// unanswered for [`TRANSACTION_TIMEOUT`]. Call it about once a second.
    pub fn expire(&mut self, now: Instant) -> Vec<Action> {
        let calls = &self.calls;
        self.pending.retain(|_, p| {
            // An INVITE rings as long as its call lasts (the call has its own timeout).
            let ringing =
                p.method == Method::Invite && p.call.is_some_and(|c| calls.contains_key(&c));
            let seen = *p.seen.get_or_insert(now);
            ringing || now.saturating_duration_since(seen) < TRANSACTION_TIMEOUT
        });
        let stale: Vec<CallNumber> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.state != CallState::Established
                    && now.saturating_duration_since(c.started) >= SETUP_TIMEOUT
                    && !matches!(c.kind, Kind::SimAnswered(_))
            })
            .map(|(n, _)| *n)
            .collect();
        let mut out = Vec::new();
        for n in stale {
            self.counters.setup_timeouts += 1;
            if let Some(call) = self.calls.get(&n) {
                match &call.kind {
                    Kind::Proxied(p) => {
                        if let Ok(cancel) = p.forwarded.make_cancel() {
                            out.push(send(p.callee, &cancel));
                        }
                        let mut upstream = p.forwarded.clone();
                        let _ = upstream.headers.remove_first_value(&HeaderName::Via);
                        out.push(send(
                            p.caller,
                            &respond(&upstream, 408, "Request Timeout", vec![]),
                        ));
                    }
                    Kind::SimPlaced(leg) => {
                        let cancel = leg.invite.as_ref().and_then(|i| i.make_cancel().ok());
                        if let (Some(c), Some(conn)) = (cancel, leg.connection) {
                            out.push(send(conn, &c));
                        }
                    }
                    Kind::SimAnswered(_) | Kind::SimToSim(..) => {}
                }
            }
            self.end_call(n, &mut out);
        }
        out
    }

    /// Sets how a simulated phone answers (`busy` also applies to a registered user:
    /// calls to it get 486).
    pub fn set_answer_mode(
        &mut self,
        reg: &mut Registrar,
        user: &str,
        mode: AnswerMode,
    ) -> Result<(), UcmSimError> {
        let name = reg
            .users()
            .find(user)
            .map(|u| u.name.clone())
            .ok_or_else(|| UcmSimError::UnknownUser(user.to_owned()))?;
        reg.users_mut().set_busy(&name, mode == AnswerMode::Busy);
        self.modes.insert(name, mode);
        Ok(())
    }

    /// The current calls, oldest first.
    pub fn calls(&self, now: Instant) -> Vec<CallView> {
        let mut out: Vec<CallView> = self
            .calls
            .iter()
            .map(|(&n, c)| {
                let (kind, legs) = match &c.kind {
                    Kind::Proxied(p) => (
                        "proxied",
                        vec![
                            registered_leg(&p.caller_user, p.caller),
                            registered_leg(&p.callee_user, p.callee),
                        ],
                    ),
                    Kind::SimAnswered(l) => (
                        "sim-answered",
                        vec![
                            registered_leg(
                                c.caller_registered.as_deref().unwrap_or(""),
                                l.connection.unwrap_or(0),
                            ),
                            sim_leg(l),
                        ],
                    ),
                    Kind::SimPlaced(l) => (
                        "sim-placed",
                        vec![sim_leg(l), registered_leg(&c.to, l.connection.unwrap_or(0))],
                    ),
                    Kind::SimToSim(a, b) => ("sim-to-sim", vec![sim_leg(a), sim_leg(b)]),
                };
                CallView {
                    call: n,
                    call_id: c.call_id.clone(),
                    kind,
                    state: c.state,
                    from: c.from.clone(),
                    to: c.to.clone(),
                    age: now.saturating_duration_since(c.started).as_secs(),
                    legs,
                }
            })
            .collect();
        out.sort_by_key(|c| c.call);
        out
    }
}

fn registered_leg(user: &str, connection: ConnectionId) -> LegView {
    LegView {
        user: user.to_owned(),
        phone: PhoneKind::Registered,
        connection: Some(connection),
        media_local: None,
        media_remote: None,
        srtp: false,
        direction: None,
    }
}

fn sim_leg(l: &SimLeg) -> LegView {
    LegView {
        user: l.user.name.clone(),
        phone: PhoneKind::Sim,
        connection: l.connection,
        media_local: Some(l.media_local.to_string()),
        media_remote: l.plan.as_ref().map(|p| p.remote.to_string()),
        srtp: l.plan.as_ref().is_some_and(|p| p.tx_crypto.is_some()),
        direction: l.plan.as_ref().map(|p| p.direction),
    }
}

fn content_type(req: &Request) -> Option<&str> {
    req.headers.first(&HeaderName::ContentType)
}

fn not_acceptable(req: &Request, refusal: &SdpRefusal) -> Response {
    with_warning(req, 488, "Not Acceptable Here", &refusal.warning())
}

fn sim_ok(req: &Request, contact: &str, answer: Vec<u8>) -> Response {
    let mut ok = respond(
        req,
        200,
        "OK",
        vec![(HeaderName::Contact, contact.to_owned())],
    );
    let _ = ok.set_body(Some("application/sdp"), answer);
    ok
}

/// Removes the Route values naming ucm-sim's Record-Route (loose routing, RFC 3261 §16.4).
fn strip_own_routes(req: &mut Request) {
    let Ok(values) = req.headers.values(&HeaderName::Route) else {
        return;
    };
    let keep: Vec<String> = values
        .into_iter()
        .filter(|v| !v.contains(&format!("sip:{RR_USER}@")))
        .map(str::to_owned)
        .collect();
    req.headers.remove_all(&HeaderName::Route);
    for v in keep {
        let _ = req.headers.push(HeaderName::Route, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::client_authorization;
    use crate::registrar::RegistrarConfig;
    use crate::users::UserDirectory;
    use edgeway_sip::Message;

    fn origin(connection: ConnectionId) -> Origin {
        Origin {
            connection,
            transport: Transport::Tcp,
            peer: SocketAddr::from(([127, 0, 0, 1], 40000 + connection as u16)),
        }
    }

    fn parse(text: &str) -> Message {
        Message::parse(text.as_bytes()).expect("test message parses")
    }

    fn request(text: &str) -> Request {
        match parse(text) {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!("a request"),
        }
    }

    /// ucm-sim with alice (1001) registered on connection 1 and bob (1002) on connection 2.
    fn setup(now: Instant) -> (Registrar, Switch) {
        let users = UserDirectory::from_toml(
            r#"
            [[user]]
            name = "alice"
            password = "a"
            number = "1001"
            security_profile = "non-secure"
            [[user]]
            name = "bob"
            password = "b"
            number = "1002"
            security_profile = "non-secure"
            "#,
        )
        .expect("users");
        let mut reg = Registrar::new(RegistrarConfig::default(), users, [3; 32], now);
        let mut sw = Switch::new([4; 32]);
        for (conn, name, pw) in [(1, "alice", "a"), (2, "bob", "b")] {
            sw.connection_opened(&origin(conn), SocketAddr::from(([127, 0, 0, 1], 5060)));
            let text = format!(
                "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKr{conn}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:{name}@example.com>;tag=r\r\nTo: <sip:{name}@example.com>\r\n\
                 Call-ID: reg{conn}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{name}@127.0.0.1:{port};transport=tcp>\r\n\
                 Content-Length: 0\r\n\r\n",
                port = 40000 + conn
            );
            let first = reg
                .handle_request(now, &request(&text), &origin(conn))
                .expect("challenge");
            let ch = first
                .headers
                .auth(&HeaderName::WwwAuthenticate)
                .expect("challenge")
                .remove(0);
            let auth = client_authorization(&ch, name, pw, "REGISTER", "sip:example.com", 1, "c")
                .expect("credentials");
            let mut req = request(&text.replace("CSeq: 1", "CSeq: 2"));
            req.headers
                .push(HeaderName::Authorization, auth)
                .expect("header");
            let ok = reg.handle_request(now, &req, &origin(conn)).expect("200");
            assert_eq!(ok.status, 200);
        }
        (reg, sw)
    }

    const INVITE: &str = "INVITE sip:1002@example.com SIP/2.0\r\n\
        Via: SIP/2.0/TCP 127.0.0.1:40001;branch=z9hG4bKinv1\r\nMax-Forwards: 70\r\n\
        From: <sip:1001@example.com>;tag=a1\r\nTo: <sip:1002@example.com>\r\nCall-ID: c1\r\n\
        CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:40001;transport=tcp>\r\nContent-Length: 0\r\n\r\n";

    /// The messages sent on `conn`, parsed.
    fn sent(actions: &[Action], conn: ConnectionId) -> Vec<Message> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { connection, bytes } if *connection == conn => {
                    Message::parse(bytes).ok()
                }
                _ => None,
            })
            .collect()
    }

    fn status(m: &Message) -> u16 {
        match m {
            Message::Response(r) => r.status,
            Message::Request(_) => 0,
        }
    }

    fn no_media() -> Option<SocketAddr> {
        None
    }

    #[test]
    fn proxied_invite_cancel_487_and_ack_stay_hop_by_hop() {
        let now = Instant::now();
        let (mut reg, mut sw) = setup(now);
        let out = sw.handle_request(now, &mut reg, &request(INVITE), &origin(1), &mut no_media);
        assert_eq!(sent(&out, 1).iter().map(status).collect::<Vec<_>>(), [100]);
        let fwd = match sent(&out, 2).remove(0) {
            Message::Request(r) => r,
            other => panic!("INVITE forwarded to bob: {other:?}"),
        };
        assert_eq!(fwd.uri.to_string(), "sip:bob@127.0.0.1:40002;transport=tcp");
        assert!(fwd
            .headers
            .first(&HeaderName::RecordRoute)
            .is_some_and(|rr| rr.contains(RR_USER)));
        assert_eq!(fwd.headers.values(&HeaderName::Via).expect("vias").len(), 2);

        // bob rings; alice cancels: 200 to the CANCEL, a CANCEL of ucm-sim's own to bob.
        let ringing = fwd.make_response(180, "Ringing", Some("b1"));
        let out = sw.handle_response(&ringing, &origin(2)).expect("relayed");
        let back = sent(&out, 1);
        assert_eq!(back.iter().map(status).collect::<Vec<_>>(), [180]);
        assert_eq!(
            back[0]
                .headers()
                .values(&HeaderName::Via)
                .expect("via")
                .len(),
            1
        );
        let cancel = request(INVITE).make_cancel().expect("cancel");
        let out = sw.handle_request(now, &mut reg, &cancel, &origin(1), &mut no_media);
        assert_eq!(sent(&out, 1).iter().map(status).collect::<Vec<_>>(), [200]);
        let Message::Request(down) = &sent(&out, 2)[0] else {
            panic!("CANCEL to bob");
        };
        assert_eq!(down.method, Method::Cancel);
        assert_eq!(
            down.headers.top_via().expect("via").branch(),
            fwd.headers.top_via().expect("via").branch()
        );
        // bob's 200 to the CANCEL is absorbed; his 487 is relayed and ACKed by ucm-sim.
        let ok_cancel = down.make_response(200, "OK", Some("b1"));
        assert_eq!(sw.handle_response(&ok_cancel, &origin(2)), Some(vec![]));
        let terminated = fwd.make_response(487, "Request Terminated", Some("b1"));
        let out = sw
            .handle_response(&terminated, &origin(2))
            .expect("relayed");
        assert_eq!(sent(&out, 1).iter().map(status).collect::<Vec<_>>(), [487]);
        let Message::Request(ack) = &sent(&out, 2)[0] else {
            panic!("ACK to bob");
        };
        assert_eq!(ack.method, Method::Ack);
        assert!(sw.calls(now).is_empty());
        // alice's ACK for the 487 finds no call and goes nowhere.
        let alice_ack = request(INVITE)
            .make_ack_for_non_2xx(&terminated)
            .expect("ack");
        assert!(sw
            .handle_request(now, &mut reg, &alice_ack, &origin(1), &mut no_media)
            .is_empty());
        assert_eq!(sw.counters().calls_cancelled, 1);
    }

    #[test]
    fn established_call_routes_in_dialog_requests_to_the_other_side() {
        let now = Instant::now();
        let (mut reg, mut sw) = setup(now);
        let out = sw.handle_request(now, &mut reg, &request(INVITE), &origin(1), &mut no_media);
        let Message::Request(fwd) = sent(&out, 2).remove(0) else {
            panic!("forwarded");
        };
        let mut ok = fwd.make_response(200, "OK", Some("b1"));
        ok.headers
            .push(
                HeaderName::Contact,
                "<sip:bob@127.0.0.1:40002;transport=tcp>",
            )
            .expect("contact");
        let out = sw.handle_response(&ok, &origin(2)).expect("relayed");
        assert_eq!(sent(&out, 1).iter().map(status).collect::<Vec<_>>(), [200]);
        assert_eq!(sw.calls(now)[0].state, CallState::Established);
        // bob hangs up: the BYE (routed through ucm-sim's Record-Route) goes to alice.
        let rr = fwd.headers.first(&HeaderName::RecordRoute).expect("rr");
        let bye = request(&format!(
            "BYE sip:alice@127.0.0.1:40001;transport=tcp SIP/2.0\r\n\
             Via: SIP/2.0/TCP 127.0.0.1:40002;branch=z9hG4bKbye\r\nMax-Forwards: 70\r\n\
             Route: {rr}\r\nFrom: <sip:1002@example.com>;tag=b1\r\n\
             To: <sip:1001@example.com>;tag=a1\r\nCall-ID: c1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        ));
        let out = sw.handle_request(now, &mut reg, &bye, &origin(2), &mut no_media);
        let Message::Request(to_alice) = &sent(&out, 1)[0] else {
            panic!("BYE to alice");
        };
        assert!(
            to_alice.headers.first(&HeaderName::Route).is_none(),
            "own Route removed"
        );
        let out = sw
            .handle_response(&to_alice.make_response(200, "OK", None), &origin(1))
            .expect("relayed");
        assert_eq!(sent(&out, 2).iter().map(status).collect::<Vec<_>>(), [200]);
        assert!(sw.calls(now).is_empty());
        assert_eq!(sw.counters().calls_ended, 1);
    }

    #[test]
    fn unanswered_calls_time_out_with_408_and_cancel() {
        let now = Instant::now();
        let (mut reg, mut sw) = setup(now);
        let out = sw.handle_request(now, &mut reg, &request(INVITE), &origin(1), &mut no_media);
        assert_eq!(sent(&out, 2).len(), 1);
        assert!(sw.expire(now + Duration::from_secs(179)).is_empty());
        assert_eq!(sw.pending.len(), 1, "the INVITE may ring for 180 s");
        let out = sw.expire(now + SETUP_TIMEOUT);
        assert_eq!(sent(&out, 1).iter().map(status).collect::<Vec<_>>(), [408]);
        let Message::Request(cancel) = &sent(&out, 2)[0] else {
            panic!("CANCEL to bob");
        };
        assert_eq!(cancel.method, Method::Cancel);
        assert!(sw.calls(now).is_empty());
        assert_eq!(sw.counters().setup_timeouts, 1);
        // The forwarded INVITE's transaction is forgotten a while later.
        sw.expire(now + SETUP_TIMEOUT + TRANSACTION_TIMEOUT);
        assert!(sw.pending.is_empty());
    }

    #[test]
    fn unroutable_invites_are_refused() {
        let now = Instant::now();
        let (mut reg, mut sw) = setup(now);
        let cases = [
            (INVITE.replace("sip:1002@", "sip:9999@"), 1, 404),
            (INVITE.to_owned(), 3, 403), // alice is not registered on connection 3
            (
                INVITE.replace("Max-Forwards: 70", "Max-Forwards: 1"),
                1,
                483,
            ),
        ];
        for (text, conn, expected) in cases {
            sw.connection_opened(&origin(conn), SocketAddr::from(([127, 0, 0, 1], 5060)));
            let out =
                sw.handle_request(now, &mut reg, &request(&text), &origin(conn), &mut no_media);
            let statuses: Vec<u16> = sent(&out, conn).iter().map(status).collect();
            assert_eq!(
                statuses.last(),
                Some(&expected),
                "{statuses:?} for {text:.40}"
            );
        }
        sw.set_answer_mode(&mut reg, "bob", AnswerMode::Busy)
            .expect("bob exists");
        let out = sw.handle_request(now, &mut reg, &request(INVITE), &origin(1), &mut no_media);
        assert_eq!(sent(&out, 1).iter().map(status).collect::<Vec<_>>(), [486]);
        // bob's connection closes: his binding stays, but calls to him get 480.
        sw.set_answer_mode(&mut reg, "bob", AnswerMode::Auto)
            .expect("bob exists");
        sw.connection_closed(2);
        let out = sw.handle_request(now, &mut reg, &request(INVITE), &origin(1), &mut no_media);
        assert_eq!(sent(&out, 1).iter().map(status).collect::<Vec<_>>(), [480]);
        assert!(sw.calls(now).is_empty());
    }
}
