//! [`DialogPair`]: the two dialogs of one B2BUA call and the translation of in-dialog
//! requests and their responses from one leg to the other (RFC 3261 §12 on each side,
//! edgeway-sip's [`Dialog`]). Each leg keeps its own Call-ID, tags and CSeq space; a
//! request received on one leg becomes a new request of the other dialog (its identity, its
//! route set, its next CSeq), and the response that comes back is answered on the original
//! request. An ACK for a 2xx goes out with the CSeq of the INVITE it acknowledges on that
//! leg. Bodies are the caller's: SDP passes through [`crate::CoreCall`] first.
//!
//! A PRACK's `RAck` names the INVITE of its own leg: it is rewritten to the CSeq of the
//! INVITE this pair sent on the other leg (the `RSeq` numbers themselves pass unchanged:
//! each reliable provisional maps to exactly one on the other leg, so they stay increasing
//! per dialog). 2xx responses to target-refresh requests carry this B2BUA's Contact of that
//! leg ([`DialogPair::set_contact`]).

use std::time::{Duration, Instant};

use edgeway_sip::{Dialog, DialogError, HeaderName, Method, NameAddr, Request, Response, Via};
use thiserror::Error;

use crate::Leg;

/// Headers copied from a forwarded request: what the far end needs to act on it (the
/// others are hop-by-hop or belong to one dialog).
pub(crate) const END_TO_END: [&str; 24] = [
    "Reason",
    "Event",
    "Subscription-State",
    "Refer-To",
    "Referred-By",
    "Info-Package",
    "Recv-Info",
    "Replaces",
    "Allow",
    "Allow-Events",
    "Supported",
    "Require",
    "Session-Expires",
    "Min-SE",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Privacy",
    "Accept",
    "Alert-Info",
    "Call-Info",
    "Subject",
    "Priority",
    "Content-Disposition",
    "Expires",
];

/// Headers copied from a response onto the response mapped back.
pub(crate) const RESPONSE_END_TO_END: [&str; 14] = [
    "Allow",
    "Allow-Events",
    "Supported",
    "Require",
    "Unsupported",
    "Session-Expires",
    "Min-SE",
    "RSeq",
    "P-Asserted-Identity",
    "Warning",
    "Reason",
    "Retry-After",
    "Accept",
    "Expires",
];

/// Copies every value of each header in `names` from `from` onto `to`.
pub(crate) fn copy_headers(
    names: &[&str],
    from: &edgeway_sip::Headers,
    to: &mut edgeway_sip::Headers,
) {
    for name in names {
        let name = HeaderName::parse(name);
        for v in from.values(&name).unwrap_or_default() {
            // A value that parsed once re-serializes; a refusal only loses that line.
            let _ = to.push(name.clone(), v);
        }
    }
}

/// Methods whose 2xx refreshes the remote target, so must carry our Contact.
fn is_target_refresh(m: &Method) -> bool {
    matches!(
        m,
        Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
    )
}

/// Why a message could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PairError {
    /// The dialog refused the message (wrong dialog, CSeq going backwards, missing header).
    #[error("{leg} dialog: {source}")]
    Dialog {
        /// The leg.
        leg: Leg,
        /// What the dialog said.
        source: DialogError,
    },
    /// A response for a request this pair did not forward (or answered already).
    #[error("a {status} response on the {leg} leg to no forwarded request (CSeq {seq})")]
    UnknownResponse {
        /// The leg it came from.
        leg: Leg,
        /// Its status.
        status: u16,
        /// Its CSeq number.
        seq: u32,
    },
    /// An ACK for no INVITE forwarded from that leg.
    #[error("ACK with CSeq {seq} from the {leg} leg matches no forwarded INVITE")]
    UnknownAck {
        /// The leg it came from.
        leg: Leg,
        /// Its CSeq number.
        seq: u32,
    },
    /// CANCEL is hop-by-hop (§9.2): answer it and cancel the forwarded INVITE instead.
    #[error(
        "CANCEL is not forwarded inside a dialog; answer it and CANCEL the other leg's INVITE"
    )]
    Cancel,
    /// A re-INVITE crossed one this pair sent the same way and still awaits (RFC 3261
    /// §14.2: answer 491 Request Pending; the sender retries after a random wait).
    #[error("a re-INVITE from the {0} leg crossed one still pending on it (glare)")]
    Glare(Leg),
    /// The body could not be set (a Content-Type the SIP layer refuses).
    #[error("body: {0}")]
    Body(String),
}

/// A request forwarded to `to` as CSeq `seq`, awaiting its final response.
#[derive(Debug, Clone)]
struct Forwarded {
    to: Leg,
    seq: u32,
    original: Request,
    /// When [`DialogPair::expire`] first saw it (set lazily: forwarding needs no clock).
    seen: Option<Instant>,
}

/// The outside and inside dialogs of one call.
#[derive(Debug, Clone)]
pub struct DialogPair {
    outside: Dialog,
    inside: Dialog,
    forwarded: Vec<Forwarded>,
    /// INVITEs forwarded: (from leg, its CSeq there, our CSeq on the other leg), for ACKs.
    invites: Vec<(Leg, u32, u32)>,
    /// Our Contact on the outside and inside legs.
    contacts: [Option<NameAddr>; 2],
}

fn index(leg: Leg) -> usize {
    match leg {
        Leg::Outside => 0,
        Leg::Inside => 1,
    }
}

impl DialogPair {
    /// The pair of a call established on both legs.
    pub fn new(outside: Dialog, inside: Dialog) -> DialogPair {
        DialogPair {
            outside,
            inside,
            forwarded: Vec::new(),
            invites: Vec::new(),
            contacts: [None, None],
        }
    }

    /// Our Contact on `leg`: put in target-refresh requests and their 2xx responses.
    pub fn set_contact(&mut self, leg: Leg, contact: NameAddr) {
        self.dialog_mut(leg).set_local_contact(contact.clone());
        self.contacts[index(leg)] = Some(contact);
    }

    /// Records the call's initial INVITE: received on `from` with CSeq `their_seq`, sent
    /// on the other leg as `our_seq` (so its ACK and PRACKs map).
    pub fn initial_invite(&mut self, from: Leg, their_seq: u32, our_seq: u32) {
        self.invites.retain(|(l, _, _)| *l != from);
        self.invites.push((from, their_seq, our_seq));
    }

    /// Applies a response to a request this B2BUA sent on `leg` outside the pair (the
    /// initial INVITE): a 2xx confirms an early dialog, a target refresh updates it.
    pub fn dialog_response(&mut self, leg: Leg, response: &Response) -> Result<(), PairError> {
        self.dialog_mut(leg)
            .handle_response(response)
            .map_err(|source| PairError::Dialog { leg, source })
    }

    /// A new in-dialog request from this B2BUA itself on `leg` (a BYE when the call's
    /// media went idle): its responses are not forwarded.
    pub fn create_request(
        &mut self,
        leg: Leg,
        method: Method,
        via: &Via,
    ) -> Result<Request, PairError> {
        self.dialog_mut(leg)
            .create_request(method, via)
            .map_err(|source| PairError::Dialog { leg, source })
    }

    /// The dialog of `leg`.
    pub fn dialog(&self, leg: Leg) -> &Dialog {
        match leg {
            Leg::Outside => &self.outside,
            Leg::Inside => &self.inside,
        }
    }

    fn dialog_mut(&mut self, leg: Leg) -> &mut Dialog {
        match leg {
            Leg::Outside => &mut self.outside,
            Leg::Inside => &mut self.inside,
        }
    }

    /// Translates an in-dialog request received on `from` into the request for the other
    /// leg, carrying `body` (with the original's Content-Type) when given. `via` is this
    /// hop's Via on the other leg (fresh branch).
    pub fn forward_request(
        &mut self,
        from: Leg,
        request: &Request,
        via: &Via,
        body: Option<Vec<u8>>,
    ) -> Result<Request, PairError> {
        let to = other(from);
        let dialog_err = |leg| move |source| PairError::Dialog { leg, source };
        if request.method == Method::Cancel {
            return Err(PairError::Cancel);
        }
        let offer_pending = |leg: Leg| {
            self.forwarded
                .iter()
                .any(|f| f.to == leg && matches!(f.original.method, Method::Invite))
        };
        if request.method == Method::Invite && (offer_pending(from) || offer_pending(to)) {
            // Ours towards `from` is unanswered (glare), or theirs still is (§14.2: 500
            // with Retry-After would do too; 491 makes the sender retry either way).
            return Err(PairError::Glare(from));
        }
        self.dialog_mut(from)
            .handle_request(request)
            .map_err(dialog_err(from))?;
        let their_seq = request
            .headers
            .cseq()
            .map_err(|e| PairError::Dialog {
                leg: from,
                source: e.into(),
            })?
            .seq;
        let mut out = if request.method == Method::Ack {
            let ours = self
                .invites
                .iter()
                .find(|(l, s, _)| *l == from && *s == their_seq)
                .map(|(_, _, ours)| *ours)
                .ok_or(PairError::UnknownAck {
                    leg: from,
                    seq: their_seq,
                })?;
            self.dialog(to)
                .create_ack(ours, via)
                .map_err(dialog_err(to))?
        } else {
            self.dialog_mut(to)
                .create_request(request.method.clone(), via)
                .map_err(dialog_err(to))?
        };
        copy_headers(&END_TO_END, &request.headers, &mut out.headers);
        if request.method == Method::Prack {
            self.translate_rack(from, request, &mut out);
        }
        if let Some(body) = body {
            let ct = request.headers.first(&HeaderName::ContentType);
            out.set_body(ct, body)
                .map_err(|e| PairError::Body(e.to_string()))?;
        }
        let ours = self.dialog(to).local_seq();
        if request.method == Method::Invite {
            self.invites.retain(|(l, _, _)| *l != from);
            self.invites.push((from, their_seq, ours));
        }
        if request.method != Method::Ack {
            self.forwarded.push(Forwarded {
                to,
                seq: ours,
                original: request.clone(),
                seen: None,
            });
        }
        Ok(out)
    }

    /// `RAck: <rseq> <cseq> INVITE` names the INVITE of the PRACK's own leg: the copy on
    /// the other leg names the INVITE this pair sent there.
    fn translate_rack(&self, from: Leg, request: &Request, out: &mut Request) {
        let Some(rack) = request.headers.first(&HeaderName::RAck) else {
            return;
        };
        let parts: Vec<&str> = rack.split_whitespace().collect();
        let [rseq, cseq, method] = parts[..] else {
            return;
        };
        let (Ok(rseq), Ok(cseq)) = (rseq.parse::<u32>(), cseq.parse::<u32>()) else {
            return;
        };
        let Some(ours) = self
            .invites
            .iter()
            .find(|(l, s, _)| *l == from && *s == cseq)
            .map(|(_, _, ours)| *ours)
        else {
            return;
        };
        let _ = out
            .headers
            .push(HeaderName::RAck, format!("{rseq} {ours} {method}"));
    }

    /// Translates a response received on `leg` (to a request this pair forwarded there)
    /// into the response to the original request, carrying `body` when given. A final
    /// response settles the request.
    pub fn forward_response(
        &mut self,
        leg: Leg,
        response: &Response,
        body: Option<Vec<u8>>,
    ) -> Result<Response, PairError> {
        self.dialog_mut(leg)
            .handle_response(response)
            .map_err(|source| PairError::Dialog { leg, source })?;
        let cseq = response.headers.cseq().map_err(|e| PairError::Dialog {
            leg,
            source: e.into(),
        })?;
        let at = self
            .forwarded
            .iter()
            .position(|f| f.to == leg && f.seq == cseq.seq && f.original.method == cseq.method)
            .ok_or(PairError::UnknownResponse {
                leg,
                status: response.status,
                seq: cseq.seq,
            })?;
        let from = other(leg);
        let tag = self.dialog(from).id().local_tag.clone();
        let original = &self.forwarded[at].original;
        let mut out = original.make_response(response.status, &response.reason, Some(&tag));
        copy_headers(&RESPONSE_END_TO_END, &response.headers, &mut out.headers);
        if (101..300).contains(&response.status) && is_target_refresh(&cseq.method) {
            if let Some(c) = &self.contacts[index(from)] {
                let _ = out.headers.push(HeaderName::Contact, c.to_string());
            }
        }
        if let Some(body) = body {
            let ct = response.headers.first(&HeaderName::ContentType);
            out.set_body(ct, body)
                .map_err(|e| PairError::Body(e.to_string()))?;
        }
        if response.status >= 200 {
            self.forwarded.remove(at);
        }
        Ok(out)
    }

    /// Requests forwarded and not yet finally answered (for timeouts: answer them 408).
    pub fn outstanding(&self) -> impl Iterator<Item = (Leg, &Request)> {
        self.forwarded.iter().map(|f| (other(f.to), &f.original))
    }

    /// Gives up forwarded requests unanswered for `timeout` since this was first called
    /// after they went out (Timer B/F: the far leg never answered): each is settled and
    /// returned as the 408 to send on the leg its original came from.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<(Leg, Response)> {
        let mut gone = Vec::new();
        let mut kept = Vec::new();
        for mut f in std::mem::take(&mut self.forwarded) {
            let seen = *f.seen.get_or_insert(now);
            if now.saturating_duration_since(seen) >= timeout {
                gone.push(f);
            } else {
                kept.push(f);
            }
        }
        self.forwarded = kept;
        gone.into_iter()
            .map(|f| {
                let from = other(f.to);
                let tag = self.dialog(from).id().local_tag.clone();
                (
                    from,
                    f.original.make_response(408, "Request Timeout", Some(&tag)),
                )
            })
            .collect()
    }
}

fn other(leg: Leg) -> Leg {
    match leg {
        Leg::Outside => Leg::Inside,
        Leg::Inside => Leg::Outside,
    }
}
