//! [`DialogPair`]: the two dialogs of one B2BUA call and the translation of in-dialog
//! requests and their responses from one leg to the other (RFC 3261 §12 on each side,
//! edgeway-sip's [`Dialog`]). Each leg keeps its own Call-ID, tags and CSeq space; a
//! request received on one leg becomes a new request of the other dialog (its identity, its
//! route set, its next CSeq), and the response that comes back is answered on the original
//! request. An ACK for a 2xx goes out with the CSeq of the INVITE it acknowledges on that
//! leg. Bodies are the caller's: SDP passes through [`crate::CoreCall`] first.

use edgeway_sip::{Dialog, DialogError, HeaderName, Method, Request, Response, Via};
use thiserror::Error;

use crate::Leg;

/// Headers copied from a forwarded request: what the far end needs to act on it (the
/// others are hop-by-hop or belong to one dialog).
const END_TO_END: [&str; 7] = [
    "Reason",
    "Event",
    "Subscription-State",
    "Refer-To",
    "Referred-By",
    "Info-Package",
    "Replaces",
];

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
}

/// The outside and inside dialogs of one call.
#[derive(Debug, Clone)]
pub struct DialogPair {
    outside: Dialog,
    inside: Dialog,
    forwarded: Vec<Forwarded>,
    /// INVITEs forwarded: (from leg, its CSeq there, our CSeq on the other leg), for ACKs.
    invites: Vec<(Leg, u32, u32)>,
}

impl DialogPair {
    /// The pair of a call established on both legs.
    pub fn new(outside: Dialog, inside: Dialog) -> DialogPair {
        DialogPair {
            outside,
            inside,
            forwarded: Vec::new(),
            invites: Vec::new(),
        }
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
        for name in END_TO_END {
            let name = HeaderName::parse(name);
            for v in request.headers.values(&name).unwrap_or_default() {
                let _ = out.headers.push(name.clone(), v);
            }
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
            });
        }
        Ok(out)
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
}

fn other(leg: Leg) -> Leg {
    match leg {
        Leg::Outside => Leg::Inside,
        Leg::Inside => Leg::Outside,
    }
}
