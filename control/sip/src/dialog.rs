//! Dialogs (RFC 3261 §12): identity, route set, remote target, CSeq bookkeeping and the
//! construction of in-dialog requests (BYE, re-INVITE, UPDATE, the ACK for a 2xx).

use crate::error::ParseError;
use crate::header::{HeaderName, Headers};
use crate::message::{Request, Response};
use crate::typed::{CSeq, ContactList, Method, NameAddr, Via};
use crate::uri::Uri;
use thiserror::Error;

/// The dialog identifier: Call-ID plus both tags (§12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag (From tag of our requests).
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

impl DialogId {
    /// The id a received in-dialog request belongs to (UAS view: To tag is ours).
    pub fn of_received_request(request: &Request) -> Result<DialogId, DialogError> {
        Self::from_headers(&request.headers, false)
    }

    /// The id a received response belongs to (UAC view: From tag is ours).
    pub fn of_received_response(response: &Response) -> Result<DialogId, DialogError> {
        Self::from_headers(&response.headers, true)
    }

    /// Call-ID plus the From and To tags, ours first (and checked first).
    fn from_headers(h: &Headers, ours_in_from: bool) -> Result<DialogId, DialogError> {
        let tag = |from: bool| -> Result<String, DialogError> {
            let (addr, name) = if from {
                (h.from_addr()?, "From")
            } else {
                (h.to_addr()?, "To")
            };
            Ok(addr.tag().ok_or(DialogError::MissingTag(name))?.to_owned())
        };
        Ok(DialogId {
            call_id: h.call_id()?.to_owned(),
            local_tag: tag(ours_in_from)?,
            remote_tag: tag(!ours_in_from)?,
        })
    }
}

/// Dialog state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a provisional response with a To tag.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
}

/// Why a dialog operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DialogError {
    /// A header the dialog needs is missing or malformed.
    #[error(transparent)]
    Message(#[from] ParseError),
    /// The named header lacks its tag.
    #[error("{0}: missing tag parameter")]
    MissingTag(&'static str),
    /// No usable Contact URI (a dialog needs a remote target).
    #[error("Contact: missing or wildcard, no remote target")]
    NoRemoteTarget,
    /// Only 101-299 responses create or update dialogs.
    #[error("a {0} response does not create a dialog")]
    NotDialogCreating(u16),
    /// The message belongs to another dialog.
    #[error("message does not belong to this dialog")]
    WrongDialog,
    /// A request with a lower CSeq than the last one (answer 500, §12.2.2).
    #[error("CSeq {got} is lower than the last remote CSeq {last}")]
    CSeqOutOfOrder {
        /// Last remote CSeq seen.
        last: u32,
        /// The refused one.
        got: u32,
    },
    /// The local CSeq would pass 2^31.
    #[error("local CSeq exhausted")]
    CSeqExhausted,
}

/// One dialog, from either side; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    id: DialogId,
    state: DialogState,
    local_seq: u32,
    remote_seq: Option<u32>,
    local_uri: NameAddr,
    remote_uri: NameAddr,
    remote_target: Uri,
    route_set: Vec<NameAddr>,
    local_contact: Option<NameAddr>,
    secure: bool,
}

fn first_contact(h: &crate::header::Headers) -> Result<Uri, DialogError> {
    match h.contacts()? {
        ContactList::Addresses(a) => a
            .into_iter()
            .next()
            .map(|n| n.uri)
            .ok_or(DialogError::NoRemoteTarget),
        ContactList::Wildcard => Err(DialogError::NoRemoteTarget),
    }
}

fn is_target_refresh(m: &Method) -> bool {
    matches!(
        m,
        Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
    )
}

impl Dialog {
    /// Creates the UAC side from the request we sent and a 101-299 response with a To
    /// tag (§12.1.2). The route set is the response's Record-Route, reversed.
    pub fn new_uac(request: &Request, response: &Response) -> Result<Dialog, DialogError> {
        if !(101..300).contains(&response.status) {
            return Err(DialogError::NotDialogCreating(response.status));
        }
        let id = DialogId::of_received_response(response)?;
        let mut route_set = response.headers.record_routes()?;
        route_set.reverse();
        Ok(Dialog {
            id,
            state: if response.is_success() {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local_seq: request.headers.cseq()?.seq,
            remote_seq: None,
            local_uri: request.headers.from_addr()?,
            remote_uri: response.headers.to_addr()?,
            remote_target: first_contact(&response.headers)?,
            route_set,
            local_contact: first_contact(&request.headers).ok().map(NameAddr::new),
            secure: matches!(&request.uri, Uri::Sip(u) if u.secure),
        })
    }

    /// Creates the UAS side from a received request and the 101-299 response we send
    /// (which carries our To tag) (§12.1.1). The route set is the request's Record-Route.
    pub fn new_uas(request: &Request, response: &Response) -> Result<Dialog, DialogError> {
        if !(101..300).contains(&response.status) {
            return Err(DialogError::NotDialogCreating(response.status));
        }
        let local_uri = response.headers.to_addr()?;
        let id = DialogId {
            call_id: request.headers.call_id()?.to_owned(),
            local_tag: local_uri
                .tag()
                .ok_or(DialogError::MissingTag("To"))?
                .to_owned(),
            remote_tag: request
                .headers
                .from_addr()?
                .tag()
                .ok_or(DialogError::MissingTag("From"))?
                .to_owned(),
        };
        Ok(Dialog {
            id,
            state: if response.is_success() {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local_seq: 0,
            remote_seq: Some(request.headers.cseq()?.seq),
            local_uri,
            remote_uri: request.headers.from_addr()?,
            remote_target: first_contact(&request.headers)?,
            route_set: request.headers.record_routes()?,
            local_contact: first_contact(&response.headers).ok().map(NameAddr::new),
            secure: matches!(&request.uri, Uri::Sip(u) if u.secure),
        })
    }

    /// The dialog id.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Early or confirmed.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// The last CSeq we used.
    pub fn local_seq(&self) -> u32 {
        self.local_seq
    }

    /// The last CSeq the peer used.
    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }

    /// Where in-dialog requests go (the peer's Contact).
    pub fn remote_target(&self) -> &Uri {
        &self.remote_target
    }

    /// The route set, in the order requests carry it.
    pub fn route_set(&self) -> &[NameAddr] {
        &self.route_set
    }

    /// `true` when the dialog was created over `sips:`.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Sets the Contact put in target-refresh requests we send (re-INVITE, UPDATE...).
    pub fn set_local_contact(&mut self, contact: NameAddr) {
        self.local_contact = Some(contact);
    }

    /// Applies a response to a request we sent in this dialog: a 2xx confirms an early
    /// dialog (and fixes its route set, §13.2.2.4); a 1xx/2xx to a target-refresh request
    /// updates the remote target.
    pub fn handle_response(&mut self, response: &Response) -> Result<(), DialogError> {
        if DialogId::of_received_response(response)? != self.id {
            return Err(DialogError::WrongDialog);
        }
        let method = response.headers.cseq()?.method;
        if response.is_success() && self.state == DialogState::Early {
            self.state = DialogState::Confirmed;
            let mut rr = response.headers.record_routes()?;
            rr.reverse();
            self.route_set = rr;
        }
        if response.status < 300 && is_target_refresh(&method) {
            if let Ok(target) = first_contact(&response.headers) {
                self.remote_target = target;
            }
        }
        Ok(())
    }

    /// Checks and records a request received in this dialog (§12.2.2): CSeq must not go
    /// backwards (except ACK and CANCEL, which reuse the INVITE's), and a target-refresh
    /// request updates the remote target.
    pub fn handle_request(&mut self, request: &Request) -> Result<(), DialogError> {
        if DialogId::of_received_request(request)? != self.id {
            return Err(DialogError::WrongDialog);
        }
        let cseq = request.headers.cseq()?;
        if !matches!(request.method, Method::Ack | Method::Cancel) {
            if let Some(last) = self.remote_seq {
                if cseq.seq < last {
                    return Err(DialogError::CSeqOutOfOrder {
                        last,
                        got: cseq.seq,
                    });
                }
            }
            self.remote_seq = Some(cseq.seq);
        }
        if is_target_refresh(&request.method) {
            if let Ok(target) = first_contact(&request.headers) {
                self.remote_target = target;
            }
        }
        Ok(())
    }

    /// Builds an in-dialog request (§12.2.1.1) with the next local CSeq: BYE, re-INVITE,
    /// UPDATE, INFO... `via` is this hop's Via (with a fresh branch).
    pub fn create_request(&mut self, method: Method, via: &Via) -> Result<Request, DialogError> {
        if matches!(method, Method::Ack | Method::Cancel) {
            // ACK and CANCEL reuse an existing CSeq; see create_ack / Request::make_cancel.
            return self.build(method, self.local_seq, via);
        }
        let next = self.local_seq.checked_add(1).filter(|n| *n < 1 << 31);
        self.local_seq = next.ok_or(DialogError::CSeqExhausted)?;
        self.build(method, self.local_seq, via)
    }

    /// Builds the ACK for a 2xx to the INVITE with CSeq `invite_seq` (§13.2.2.4).
    pub fn create_ack(&self, invite_seq: u32, via: &Via) -> Result<Request, DialogError> {
        self.build(Method::Ack, invite_seq, via)
    }

    fn build(&self, method: Method, seq: u32, via: &Via) -> Result<Request, DialogError> {
        let strict = self
            .route_set
            .first()
            .is_some_and(|r| r.uri.as_sip().is_some_and(|u| !u.is_loose_route()));
        let (uri, routes): (Uri, Vec<String>) = if strict {
            // Strict router (§12.2.1.1): its URI becomes the Request-URI, the remote
            // target goes last in Route.
            let mut first = self.route_set[0].uri.clone();
            if let Uri::Sip(u) = &mut first {
                u.headers.clear();
            }
            let mut routes: Vec<String> =
                self.route_set[1..].iter().map(|r| r.to_string()).collect();
            routes.push(format!("<{}>", self.remote_target));
            (first, routes)
        } else {
            (
                self.remote_target.clone(),
                self.route_set.iter().map(|r| r.to_string()).collect(),
            )
        };
        let mut r = Request::new(method.clone(), uri);
        let h = &mut r.headers;
        h.push(HeaderName::Via, via.to_string())?;
        h.push(HeaderName::MaxForwards, "70")?;
        for route in routes {
            h.push(HeaderName::Route, route)?;
        }
        h.push(HeaderName::From, self.local_uri.to_string())?;
        h.push(HeaderName::To, self.remote_uri.to_string())?;
        h.push(HeaderName::CallId, self.id.call_id.as_str())?;
        h.push(
            HeaderName::CSeq,
            CSeq {
                seq,
                method: method.clone(),
            }
            .to_string(),
        )?;
        if is_target_refresh(&method) {
            if let Some(c) = &self.local_contact {
                h.push(HeaderName::Contact, c.to_string())?;
            }
        }
        h.push(HeaderName::ContentLength, "0")?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::uri::Host;

    fn request() -> Request {
        let s = "INVITE sips:bob@biloxi.example.com SIP/2.0\r\n\
            Via: SIP/2.0/TLS client.atlanta.example.com:5061;branch=z9hG4bK74bf9\r\n\
            Max-Forwards: 70\r\n\
            From: Alice <sips:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
            To: Bob <sips:bob@biloxi.example.com>\r\n\
            Call-ID: 3848276298220188511@atlanta.example.com\r\n\
            CSeq: 2 INVITE\r\n\
            Contact: <sips:alice@client.atlanta.example.com>\r\n\
            Content-Length: 0\r\n\r\n";
        match Message::parse(s.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    fn ok_response(req: &Request, rr: &[&str]) -> Response {
        let mut resp = req.make_response(200, "OK", Some("314159"));
        for r in rr {
            resp.headers.push(HeaderName::RecordRoute, *r).unwrap();
        }
        resp.headers
            .push(HeaderName::Contact, "<sips:bob@client.biloxi.example.com>")
            .unwrap();
        resp
    }

    fn via() -> Via {
        Via::new(
            "TLS",
            Host::Domain("client.atlanta.example.com".into()),
            Some(5061),
            "z9hG4bKnew",
        )
    }

    #[test]
    fn uac_dialog_builds_bye_and_ack() {
        let req = request();
        let resp = ok_response(
            &req,
            &["<sips:p2.example.com;lr>", "<sips:p1.example.com;lr>"],
        );
        let mut d = Dialog::new_uac(&req, &resp).unwrap();
        assert_eq!(d.state(), DialogState::Confirmed);
        assert_eq!(d.id().remote_tag, "314159");
        assert_eq!(d.route_set()[0].uri.to_string(), "sips:p1.example.com;lr");
        let ack = d.create_ack(2, &via()).unwrap();
        assert_eq!(ack.headers.cseq().unwrap().to_string(), "2 ACK");
        let bye = d.create_request(Method::Bye, &via()).unwrap();
        assert_eq!(bye.uri.to_string(), "sips:bob@client.biloxi.example.com");
        assert_eq!(bye.headers.cseq().unwrap().seq, 3);
        let routes = bye.headers.routes().unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].uri.to_string(), "sips:p1.example.com;lr");
        assert_eq!(bye.headers.to_addr().unwrap().tag(), Some("314159"));
        assert_eq!(bye.headers.from_addr().unwrap().tag(), Some("9fxced76sl"));
        // It is a well-formed message.
        Message::parse(&bye.to_bytes()).unwrap();
    }

    #[test]
    fn strict_routing() {
        let req = request();
        let resp = ok_response(&req, &["<sips:p1.example.com>"]);
        let mut d = Dialog::new_uac(&req, &resp).unwrap();
        let bye = d.create_request(Method::Bye, &via()).unwrap();
        assert_eq!(bye.uri.to_string(), "sips:p1.example.com");
        let routes = bye.headers.routes().unwrap();
        assert_eq!(
            routes[0].uri.to_string(),
            "sips:bob@client.biloxi.example.com"
        );
    }

    #[test]
    fn uas_dialog_checks_cseq_and_refreshes_target() {
        let req = request();
        let resp = ok_response(&req, &[]);
        let mut d = Dialog::new_uas(&req, &resp).unwrap();
        assert_eq!(d.id().local_tag, "314159");
        assert_eq!(
            d.remote_target().to_string(),
            "sips:alice@client.atlanta.example.com"
        );
        // A re-INVITE from the peer with a new Contact.
        let mut reinvite = req.clone();
        reinvite
            .headers
            .replace(
                HeaderName::To,
                "Bob <sips:bob@biloxi.example.com>;tag=314159",
            )
            .unwrap();
        reinvite
            .headers
            .replace(HeaderName::CSeq, "3 INVITE")
            .unwrap();
        reinvite
            .headers
            .replace(HeaderName::Contact, "<sips:alice@new.example.com>")
            .unwrap();
        d.handle_request(&reinvite).unwrap();
        assert_eq!(d.remote_target().to_string(), "sips:alice@new.example.com");
        reinvite
            .headers
            .replace(HeaderName::CSeq, "1 INVITE")
            .unwrap();
        assert_eq!(
            d.handle_request(&reinvite),
            Err(DialogError::CSeqOutOfOrder { last: 3, got: 1 })
        );
        let bye = d.create_request(Method::Bye, &via()).unwrap();
        assert_eq!(bye.headers.cseq().unwrap().seq, 1);
        assert_eq!(bye.headers.from_addr().unwrap().tag(), Some("314159"));
    }

    #[test]
    fn early_dialog_confirms() {
        let req = request();
        let mut ringing = req.make_response(180, "Ringing", Some("314159"));
        ringing
            .headers
            .push(HeaderName::Contact, "<sips:bob@early.example.com>")
            .unwrap();
        let mut d = Dialog::new_uac(&req, &ringing).unwrap();
        assert_eq!(d.state(), DialogState::Early);
        let ok = ok_response(&req, &["<sips:p1.example.com;lr>"]);
        d.handle_response(&ok).unwrap();
        assert_eq!(d.state(), DialogState::Confirmed);
        assert_eq!(d.route_set().len(), 1);
        assert_eq!(
            d.remote_target().to_string(),
            "sips:bob@client.biloxi.example.com"
        );
        assert!(Dialog::new_uac(&req, &req.make_response(486, "Busy", Some("x"))).is_err());
    }
}
