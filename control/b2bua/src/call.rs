//! [`B2bCall`]: the signalling of one B2BUA call from its first INVITE to its end, sans-IO.
//!
//! The INVITE received on one leg (the caller's) becomes a new INVITE on the other (the
//! callee's) with its own identity: a fresh Call-ID and From tag and this B2BUA's Via and
//! Contact (all from the caller of [`B2bCall::start`]: its RNG, its addresses), CSeq 1 in
//! a CSeq space of its own. The Request-URI, From and To identities are kept, Max-Forwards
//! carries on from the received value, and the end-to-end headers (Allow, Supported,
//! Require, Session-Expires, P-Asserted-Identity, ...) are copied. The caller's Contact,
//! Via and Record-Route never reach the callee.
//!
//! Responses from the callee map back onto the received INVITE with this B2BUA's own To
//! tag and Contact: a 1xx with a To tag creates both early dialogs (so PRACK and UPDATE
//! work before the answer), a 2xx confirms them; from then on in-dialog requests cross
//! through [`DialogPair`]. A non-2xx final response is ACKed here, hop by hop, and the
//! caller's ACK for the mapped one is absorbed; the ACK for a 2xx is end to end per
//! dialog: the caller's ACK becomes this B2BUA's ACK on the callee's dialog. CANCEL is
//! answered 200 on the caller's leg and sent as a CANCEL of the forwarded INVITE; the
//! callee's 487 maps back as the 487 to the caller. A call not answered in time is given
//! up ([`B2bCall::give_up`]: 408 to the caller, CANCEL to the callee), and an established
//! one can be hung up on both legs ([`B2bCall::hang_up`]).
//!
//! Session timers (RFC 4028, [`crate::SessionTimer`]): every 2xx to INVITE or UPDATE the
//! caller hands to [`B2bCall::session_response`] restarts the negotiated interval; an
//! answered call whose interval passed with no refresh is [`B2bCall::session_expired`].
//!
//! Forking is not handled: the first To tag a callee answers with is the call's.

use std::time::Instant;

use edgeway_sip::{Dialog, HeaderName, Method, NameAddr, Request, Response, Uri, Via};
use thiserror::Error;

use crate::dialogs::{copy_headers, DialogPair, PairError, END_TO_END, RESPONSE_END_TO_END};
use crate::timer::{SessionTimer, TimerError};
use crate::Leg;

/// Why a message could not be handled by the call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CallError {
    /// The received INVITE lacks what a new leg needs (From, To, CSeq, Call-ID...).
    #[error("INVITE: {0}")]
    Invite(String),
    /// An in-dialog message before any dialog exists, or after the call ended.
    #[error("no dialog on the {0} leg yet (or any more)")]
    NoDialog(Leg),
    /// The dialog pair refused the message.
    #[error(transparent)]
    Pair(#[from] PairError),
}

/// How this B2BUA writes a new leg: its identity there, made by the caller.
#[derive(Debug, Clone)]
pub struct NewLeg {
    /// The new leg's Call-ID (random, never the caller's).
    pub call_id: String,
    /// Our From tag on the new leg.
    pub from_tag: String,
    /// Our To tag towards the caller (its responses' and its dialog's).
    pub answer_tag: String,
    /// Our Via on the new leg (fresh branch); CANCEL and the non-2xx ACK reuse it.
    pub via: Via,
    /// Our Contact on the new leg.
    pub contact: NameAddr,
    /// Our Contact towards the caller.
    pub answer_contact: NameAddr,
    /// The new INVITE's Request-URI.
    pub target: Uri,
    /// Route values it carries (e.g. the edge's Path towards a registered client).
    pub routes: Vec<String>,
}

/// Where the call's setup stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupState {
    /// INVITE sent, no dialog yet.
    Calling,
    /// Early dialogs (a 1xx with a To tag).
    Early,
    /// CANCEL sent; the callee's 487 (or 200) is awaited.
    Cancelling,
    /// Answered (2xx).
    Confirmed,
    /// Failed, cancelled, given up or hung up: nothing more to set up.
    Ended,
}

/// What a callee's response to the initial INVITE produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupOutcome {
    /// The response to send to the caller.
    pub to_caller: Option<Response>,
    /// The ACK to send to the callee (non-2xx final responses, hop by hop).
    pub to_callee: Option<Request>,
    /// Whether this response ended the call (a final failure).
    pub ended: bool,
    /// Whether it answered the call (a 2xx).
    pub answered: bool,
}

/// One call's two legs; see the module docs.
#[derive(Debug, Clone)]
pub struct B2bCall {
    caller: Leg,
    incoming: Request,
    outgoing: Request,
    answer_tag: String,
    answer_contact: NameAddr,
    pair: Option<DialogPair>,
    state: SetupState,
    /// Whether a final response went to the caller (its ACK for a non-2xx is absorbed).
    final_sent: bool,
    /// The session timer (RFC 4028) the endpoints negotiated.
    timer: SessionTimer,
}

fn other(leg: Leg) -> Leg {
    match leg {
        Leg::Outside => Leg::Inside,
        Leg::Inside => Leg::Outside,
    }
}

fn invite_error(e: impl std::fmt::Display) -> CallError {
    CallError::Invite(e.to_string())
}

impl B2bCall {
    /// A call for `invite` received on `caller`, and the INVITE to send on the other leg
    /// carrying `body` (already rewritten by the media plan) when given.
    pub fn start(
        caller: Leg,
        invite: &Request,
        leg: NewLeg,
        body: Option<Vec<u8>>,
    ) -> Result<(B2bCall, Request), CallError> {
        let h = &invite.headers;
        let mut from = h.from_addr().map_err(invite_error)?;
        from.params.set("tag", Some(&leg.from_tag));
        let mut to = h.to_addr().map_err(invite_error)?;
        to.params.remove("tag");
        let max_forwards = h.max_forwards().map_err(invite_error)?.unwrap_or(70);
        h.cseq().map_err(invite_error)?;
        h.call_id().map_err(invite_error)?;
        let mut out = Request::new(Method::Invite, leg.target.clone());
        let o = &mut out.headers;
        let lines = [
            (HeaderName::Via, leg.via.to_string()),
            (HeaderName::MaxForwards, max_forwards.to_string()),
        ]
        .into_iter()
        .chain(leg.routes.iter().map(|r| (HeaderName::Route, r.clone())))
        .chain([
            (HeaderName::From, from.to_string()),
            (HeaderName::To, to.to_string()),
            (HeaderName::CallId, leg.call_id.clone()),
            (HeaderName::CSeq, "1 INVITE".to_owned()),
            (HeaderName::Contact, leg.contact.to_string()),
        ]);
        for (name, value) in lines {
            o.push(name, value).map_err(invite_error)?;
        }
        copy_headers(&END_TO_END, h, o);
        if let Some(body) = body {
            let ct = h.first(&HeaderName::ContentType);
            out.set_body(ct, body).map_err(invite_error)?;
        }
        let call = B2bCall {
            caller,
            incoming: invite.clone(),
            outgoing: out.clone(),
            answer_tag: leg.answer_tag,
            answer_contact: leg.answer_contact,
            pair: None,
            state: SetupState::Calling,
            final_sent: false,
            timer: SessionTimer::default(),
        };
        Ok((call, out))
    }

    /// The leg the initial INVITE came from.
    pub fn caller(&self) -> Leg {
        self.caller
    }

    /// Where setup stands.
    pub fn state(&self) -> SetupState {
        self.state
    }

    /// The Call-ID of `leg`.
    pub fn call_id(&self, leg: Leg) -> &str {
        let r = if leg == self.caller {
            &self.incoming
        } else {
            &self.outgoing
        };
        r.headers.call_id().unwrap_or("")
    }

    /// A response received on either leg at `now`, for the session timer: a 2xx to INVITE
    /// or UPDATE (the answer or a refresh) restarts the session interval (RFC 4028).
    pub fn session_response(
        &mut self,
        now: Instant,
        response: &Response,
    ) -> Result<(), TimerError> {
        self.timer.response(now, response)
    }

    /// Whether the answered call's session interval passed by `now` with no refresh: it
    /// should be hung up ([`B2bCall::hang_up`]).
    pub fn session_expired(&self, now: Instant) -> bool {
        self.state == SetupState::Confirmed && self.timer.expired(now)
    }

    /// The call's session timer.
    pub fn session_timer(&self) -> &SessionTimer {
        &self.timer
    }

    /// The INVITE sent on the callee's leg.
    pub fn outgoing(&self) -> &Request {
        &self.outgoing
    }

    /// The dialogs, once the callee answered with a To tag.
    pub fn pair(&self) -> Option<&DialogPair> {
        self.pair.as_ref()
    }

    /// `100 Trying` for the received INVITE (hop by hop: the B2BUA answers it itself).
    pub fn trying(&self) -> Response {
        self.incoming.make_response(100, "Trying", None)
    }

    /// Whether `response` (received on the callee's leg) answers the initial INVITE or its
    /// CANCEL: the top Via is the one the INVITE went out with.
    pub fn is_setup_response(&self, response: &Response) -> bool {
        let branch =
            |h: &edgeway_sip::Headers| h.top_via().ok().and_then(|v| v.branch().map(str::to_owned));
        let method = response.headers.cseq().map(|c| c.method);
        branch(&response.headers).is_some()
            && branch(&response.headers) == branch(&self.outgoing.headers)
            && matches!(method, Ok(Method::Invite | Method::Cancel))
    }

    /// The response to the caller for `status`, with our tag, Contact (dialog-creating
    /// ones) and `response`'s end-to-end headers.
    fn mapped(&self, response: &Response, body: Option<Vec<u8>>) -> Result<Response, CallError> {
        let mut out =
            self.incoming
                .make_response(response.status, &response.reason, Some(&self.answer_tag));
        copy_headers(&RESPONSE_END_TO_END, &response.headers, &mut out.headers);
        if (101..300).contains(&response.status) {
            out.headers
                .push(HeaderName::Contact, self.answer_contact.to_string())
                .map_err(invite_error)?;
        }
        if let Some(body) = body {
            let ct = response.headers.first(&HeaderName::ContentType);
            out.set_body(ct, body).map_err(invite_error)?;
        }
        Ok(out)
    }

    /// A response on the callee's leg to the initial INVITE (or its CANCEL), carrying
    /// `body` (rewritten by the media plan) to the caller when given.
    pub fn setup_response(
        &mut self,
        response: &Response,
        body: Option<Vec<u8>>,
    ) -> Result<SetupOutcome, CallError> {
        let mut outcome = SetupOutcome::default();
        let callee = other(self.caller);
        let method = response.headers.cseq().map_err(invite_error)?.method;
        if method == Method::Cancel || response.status == 100 {
            return Ok(outcome);
        }
        if response.status >= 300 {
            // The callee's transaction wants its ACK whatever became of the call.
            outcome.to_callee = Some(
                self.outgoing
                    .make_ack_for_non_2xx(response)
                    .map_err(invite_error)?,
            );
            if self.state != SetupState::Confirmed && !self.final_sent {
                outcome.to_caller = Some(self.mapped(response, None)?);
                self.final_sent = true;
            }
            if self.state != SetupState::Confirmed {
                self.state = SetupState::Ended;
                outcome.ended = true;
            }
            return Ok(outcome);
        }
        if self.state == SetupState::Ended || self.final_sent && !response.is_success() {
            return Ok(outcome);
        }
        let has_tag = response.headers.to_addr().is_ok_and(|t| t.tag().is_some());
        let to_caller = self.mapped(response, body)?;
        if has_tag {
            match &mut self.pair {
                Some(pair) => pair.dialog_response(callee, response)?,
                None => {
                    let dialogs = Dialog::new_uac(&self.outgoing, response)
                        .map_err(|source| PairError::Dialog {
                            leg: callee,
                            source,
                        })
                        .and_then(|uac| {
                            Dialog::new_uas(&self.incoming, &to_caller)
                                .map(|uas| (uac, uas))
                                .map_err(|source| PairError::Dialog {
                                    leg: self.caller,
                                    source,
                                })
                        });
                    let (uac, uas) = match dialogs {
                        Ok(d) => d,
                        // A 1xx without a Contact still reports progress; only the answer
                        // must make a dialog.
                        Err(_) if !response.is_success() => {
                            outcome.to_caller = Some(to_caller);
                            return Ok(outcome);
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let mut pair = match self.caller {
                        Leg::Outside => DialogPair::new(uas, uac),
                        Leg::Inside => DialogPair::new(uac, uas),
                    };
                    let their_seq = self.incoming.headers.cseq().map_err(invite_error)?.seq;
                    pair.initial_invite(self.caller, their_seq, 1);
                    pair.set_contact(self.caller, self.answer_contact.clone());
                    if let Ok(edgeway_sip::ContactList::Addresses(c)) =
                        self.outgoing.headers.contacts()
                    {
                        if let Some(c) = c.into_iter().next() {
                            pair.set_contact(callee, c);
                        }
                    }
                    self.pair = Some(pair);
                }
            }
        }
        if response.is_success() {
            outcome.answered = self.state != SetupState::Confirmed;
            self.state = SetupState::Confirmed;
            self.final_sent = true;
        } else if self.state == SetupState::Calling && has_tag {
            self.state = SetupState::Early;
        }
        outcome.to_caller = Some(to_caller);
        Ok(outcome)
    }

    /// The callee answered (2xx) with something this B2BUA cannot use (the media plan
    /// refused its SDP): the caller gets `refusal` (the planner's status and `Warning`)
    /// instead, and since RFC 3264 has no way to refuse an answer the callee's dialog is
    /// ACKed and hung up: the ACK and the BYE to send there (`vias`: theirs).
    pub fn refuse_answer(
        &mut self,
        answer: &Response,
        refusal: &Response,
        vias: [&Via; 2],
    ) -> Result<(Response, Vec<Request>), CallError> {
        let callee = other(self.caller);
        self.setup_response(answer, None)?;
        self.state = SetupState::Ended;
        let mut back =
            self.incoming
                .make_response(refusal.status, &refusal.reason, Some(&self.answer_tag));
        copy_headers(&["Warning"], &refusal.headers, &mut back.headers);
        let pair = self.pair.as_mut().ok_or(CallError::NoDialog(callee))?;
        let ack = pair
            .dialog(callee)
            .create_ack(1, vias[0])
            .map_err(|source| PairError::Dialog {
                leg: callee,
                source,
            })?;
        let mut bye = pair.create_request(callee, Method::Bye, vias[1])?;
        let reason = format!("SIP;cause={};text=\"media refused\"", refusal.status);
        let _ = bye.headers.push(HeaderName::parse("Reason"), reason);
        Ok((back, vec![ack, bye]))
    }

    /// A CANCEL from the caller: the 200 for it and, while setup is in progress, the
    /// CANCEL of the forwarded INVITE.
    pub fn cancel(&mut self, cancel: &Request) -> (Response, Option<Request>) {
        let ok = cancel.make_response(200, "OK", Some(&self.answer_tag));
        match self.state {
            SetupState::Calling | SetupState::Early => {
                self.state = SetupState::Cancelling;
                (ok, self.outgoing.make_cancel().ok())
            }
            _ => (ok, None),
        }
    }

    /// Gives up a call not answered in time: the 408 for the caller (unless it already
    /// had a final response) and the CANCEL for the callee.
    pub fn give_up(&mut self) -> (Option<Response>, Option<Request>) {
        let was = self.state;
        self.state = SetupState::Ended;
        let resp = (!self.final_sent).then(|| {
            self.final_sent = true;
            self.incoming
                .make_response(408, "Request Timeout", Some(&self.answer_tag))
        });
        let cancel = matches!(
            was,
            SetupState::Calling | SetupState::Early | SetupState::Cancelling
        )
        .then(|| self.outgoing.make_cancel().ok())
        .flatten();
        (resp, cancel)
    }

    /// Ends an established call from here (media idle, shutdown): a BYE for each leg,
    /// `vias` being this B2BUA's Via on the outside and inside legs, with `reason`.
    pub fn hang_up(&mut self, vias: [&Via; 2], reason: &str) -> Vec<(Leg, Request)> {
        self.state = SetupState::Ended;
        let Some(pair) = &mut self.pair else {
            return Vec::new();
        };
        [(Leg::Outside, vias[0]), (Leg::Inside, vias[1])]
            .into_iter()
            .filter_map(|(leg, via)| {
                let mut bye = pair.create_request(leg, Method::Bye, via).ok()?;
                let _ = bye.headers.push(HeaderName::parse("Reason"), reason);
                Some((leg, bye))
            })
            .collect()
    }

    /// An in-dialog request received on `from`: `Ok(None)` when it ends here (the ACK
    /// for a non-2xx this B2BUA sent), else the request for the other leg with `via`.
    pub fn request(
        &mut self,
        from: Leg,
        request: &Request,
        via: &Via,
        body: Option<Vec<u8>>,
    ) -> Result<Option<Request>, CallError> {
        if matches!(request.method, Method::Ack | Method::Invite) && from == self.caller {
            let seq = request.headers.cseq().map_err(invite_error)?.seq;
            let initial = self.incoming.headers.cseq().map_err(invite_error)?.seq;
            let untagged = request.headers.to_addr().is_ok_and(|t| t.tag().is_none());
            if request.method == Method::Invite && untagged && seq == initial {
                // The initial INVITE again (a retransmission): already forwarded.
                return Ok(None);
            }
            if request.method == Method::Ack
                && seq == initial
                && self.state != SetupState::Confirmed
            {
                return Ok(None);
            }
        }
        let pair = self.pair.as_mut().ok_or(CallError::NoDialog(from))?;
        if request.method == Method::Bye {
            self.state = SetupState::Ended;
        }
        Ok(Some(pair.forward_request(from, request, via, body)?))
    }

    /// A response on `leg` to an in-dialog request the pair forwarded there.
    pub fn response(
        &mut self,
        leg: Leg,
        response: &Response,
        body: Option<Vec<u8>>,
    ) -> Result<Response, CallError> {
        let pair = self.pair.as_mut().ok_or(CallError::NoDialog(leg))?;
        Ok(pair.forward_response(leg, response, body)?)
    }

    /// Requests forwarded in the dialogs and unanswered for `timeout`: the 408s to send
    /// back, each with the leg it goes to.
    pub fn expire(
        &mut self,
        now: std::time::Instant,
        timeout: std::time::Duration,
    ) -> Vec<(Leg, Response)> {
        self.pair
            .as_mut()
            .map(|p| p.expire(now, timeout))
            .unwrap_or_default()
    }
}
