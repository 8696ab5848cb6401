//! One simulated call at both of its ends, sans-IO: the caller's INVITE with an SRTP offer
//! (RFC 4568 SDES, a fresh key per call), its ACK and BYE ([`OutgoingCall`]), and the
//! inside phone that answers it ([`Callee`]: 200 with an SDP answer, ACK, 200 to BYE).
//! Neither reads a clock or opens a socket: the caller hands in each parsed response or
//! request and sends the bytes that come back ([`crate::sip_call_load`] drives them over
//! TLS through the edge and TCP at the registrar).
//!
//! The media each end agreed is returned as a [`MediaEndpoint`] (where to send, and the
//! key the far side protects with), so the load generator can build the media engine's
//! streams from the two SDP exchanges of one call: the caller's offer and the core's
//! answer on the outside, the core's offer and the phone's answer inside. Call-IDs differ
//! across a B2BUA, so nothing here relies on them matching between the two ends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use edgeway_sip::sdp::SessionDescription;
use edgeway_sip::{Dialog, HeaderName, Host, Method, ParseError, Request, Response, Uri, Via};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::SrtpProfile;
use rand::{CryptoRng, RngCore};

/// Why a call (or one of its messages) failed: the causes the load report counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// A final response other than 2xx to the INVITE or the BYE.
    #[error("{method} answered {status} {reason}")]
    Status {
        /// INVITE or BYE.
        method: &'static str,
        /// Status code.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
    /// A response or request that could not be interpreted (missing or malformed headers,
    /// a dialog that cannot be formed).
    #[error("malformed message: {0}")]
    BadMessage(String),
    /// An SDP body without a usable audio stream (no body, no `c=` address, port 0).
    #[error("bad SDP: {0}")]
    BadSdp(String),
    /// An SRTP (`RTP/SAVP`) stream without an `a=crypto` line this generator can use.
    #[error("no usable a=crypto: {0}")]
    NoUsableCrypto(String),
    /// A hang-up asked for a call that is not established.
    #[error("call is {0}, not established")]
    NotEstablished(&'static str),
}

impl CallError {
    /// A short stable label for counting (`invite-486`, `bad-sdp`, ...).
    pub fn label(&self) -> String {
        match self {
            CallError::Status { method, status, .. } => {
                format!("{}-{status}", method.to_ascii_lowercase())
            }
            CallError::BadMessage(_) => "bad-message".into(),
            CallError::BadSdp(_) => "bad-sdp".into(),
            CallError::NoUsableCrypto(_) => "no-usable-crypto".into(),
            CallError::NotEstablished(_) => "not-established".into(),
        }
    }
}

impl From<ParseError> for CallError {
    fn from(e: ParseError) -> Self {
        CallError::BadMessage(e.to_string())
    }
}

impl From<edgeway_sip::DialogError> for CallError {
    fn from(e: edgeway_sip::DialogError) -> Self {
        CallError::BadMessage(format!("dialog: {e}"))
    }
}

/// One end's media as its SDP describes it: where that end receives RTP, and the key it
/// protects what it sends with (`None`: plain RTP).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaEndpoint {
    /// The RTP address (`c=` + `m=audio` port).
    pub addr: SocketAddr,
    /// The SDES key of that end (`RTP/SAVP`), or `None` for `RTP/AVP`.
    pub crypto: Option<CryptoAttribute>,
}

/// Reads the first audio stream of an SDP body. An `RTP/SAVP` stream must carry an
/// `a=crypto` whose suite edgeway-srtp implements (the first such line is taken).
pub fn read_sdp(body: &[u8]) -> Result<MediaEndpoint, CallError> {
    if body.is_empty() {
        return Err(CallError::BadSdp("no body".into()));
    }
    let sdp = SessionDescription::parse(body).map_err(|e| CallError::BadSdp(e.to_string()))?;
    let index = sdp
        .media()
        .iter()
        .position(|m| m.media == "audio")
        .ok_or_else(|| CallError::BadSdp("no m=audio line".into()))?;
    let (conn, port) = sdp
        .media_address(index)
        .map_err(|e| CallError::BadSdp(e.to_string()))?;
    let ip: IpAddr = conn
        .and_then(|c| c.ip())
        .ok_or_else(|| CallError::BadSdp("no unicast c= address".into()))?;
    if port == 0 {
        return Err(CallError::BadSdp("audio stream disabled (port 0)".into()));
    }
    let m = &sdp.media()[index];
    let crypto = match m.proto.as_str() {
        "RTP/AVP" => None,
        "RTP/SAVP" => {
            let lines: Vec<&str> = m
                .attributes()
                .filter(|(n, _)| *n == "crypto")
                .filter_map(|(_, v)| v)
                .collect();
            let usable = lines
                .iter()
                .find_map(|v| v.trim().parse::<CryptoAttribute>().ok());
            match usable {
                Some(c) => Some(c),
                None if lines.is_empty() => {
                    return Err(CallError::NoUsableCrypto(
                        "RTP/SAVP without a=crypto".into(),
                    ))
                }
                None => return Err(CallError::NoUsableCrypto(lines.join(" | "))),
            }
        }
        other => return Err(CallError::BadSdp(format!("transport {other}"))),
    };
    Ok(MediaEndpoint {
        addr: SocketAddr::new(ip, port),
        crypto,
    })
}

/// A one-stream G.711 (PCMU, 20 ms) SDP body receiving at `local`: `RTP/SAVP` with `crypto`,
/// `RTP/AVP` without.
pub fn write_sdp(local: SocketAddr, crypto: Option<&CryptoAttribute>, session: u64) -> Vec<u8> {
    let ip = local.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let proto = if crypto.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let mut s = format!(
        "v=0\r\no=edgeway-loadgen {session} 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\n\
t=0 0\r\nm=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n",
        port = local.port()
    );
    if let Some(c) = crypto {
        s.push_str(&format!("a=crypto:{c}\r\n"));
    }
    s.push_str("a=sendrecv\r\n");
    s.into_bytes()
}

fn random_hex(rng: &mut impl RngCore, bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rng.fill_bytes(&mut b);
    hex::encode(b)
}

fn via(transport: &str, local: SocketAddr, rng: &mut impl RngCore) -> Via {
    let host = match local.ip() {
        IpAddr::V4(a) => Host::V4(a),
        IpAddr::V6(a) => Host::V6(a),
    };
    let branch = format!("z9hG4bK{}", random_hex(rng, 10));
    let mut v = Via::new(transport, host, Some(local.port()), &branch);
    v.params.set("rport", None);
    v
}

/// Who places a call, to whom, from where.
#[derive(Debug, Clone)]
pub struct CallerSetup {
    /// The caller's user part (its registered address of record).
    pub user: String,
    /// The callee's user part (name or number).
    pub callee: String,
    /// Domain of both addresses of record.
    pub domain: String,
    /// The signalling connection's local address (Via and Contact).
    pub local: SocketAddr,
    /// The caller's RTP address, put in the offer.
    pub media: SocketAddr,
    /// SRTP suite of the offer's key; `None` offers plain RTP (for refusal tests).
    pub suite: Option<SrtpProfile>,
}

/// Where an outgoing call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerState {
    /// INVITE sent, no final response yet.
    Inviting,
    /// 2xx received and acknowledged.
    Established,
    /// BYE sent, no final response yet.
    Ending,
    /// Refused, or BYE answered (by us or the far side).
    Ended,
}

impl CallerState {
    fn as_str(self) -> &'static str {
        match self {
            CallerState::Inviting => "inviting",
            CallerState::Established => "established",
            CallerState::Ending => "ending",
            CallerState::Ended => "ended",
        }
    }
}

/// What the caller does after handing a message to an [`OutgoingCall`].
#[derive(Debug, Clone, PartialEq)]
pub enum CallerStep {
    /// A provisional or unrelated message: keep reading.
    Wait,
    /// Send these bytes (an ACK for a retransmitted 2xx, the answer to a far-end BYE).
    Send(Vec<u8>),
    /// The INVITE was answered: send `ack`; `far` is the answer's media (the edge's
    /// address and the key the core protects towards this caller with), or why the
    /// answer's SDP is unusable (the dialog exists all the same: ACK it, then hang up).
    Answered {
        /// The ACK to send.
        ack: Vec<u8>,
        /// The answer's media.
        far: Result<MediaEndpoint, CallError>,
    },
    /// The INVITE was refused: send `ack` (hop by hop, RFC 3261 §17.1.1.3); the call is
    /// over.
    Refused {
        /// The ACK to send.
        ack: Vec<u8>,
        /// Why.
        error: CallError,
    },
    /// Our BYE was answered 2xx, or the far end's BYE was (answer in `reply`).
    Ended {
        /// Bytes to send (the 200 to a far-end BYE), if any.
        reply: Option<Vec<u8>>,
    },
}

/// One caller-side call: INVITE → 2xx → ACK → BYE → 2xx.
#[derive(Debug)]
pub struct OutgoingCall {
    invite: Request,
    invite_branch: String,
    local: SocketAddr,
    own_crypto: Option<CryptoAttribute>,
    dialog: Option<Dialog>,
    ack: Option<Vec<u8>>,
    bye_branch: Option<String>,
    state: CallerState,
}

impl OutgoingCall {
    /// A new call and its INVITE: a fresh Call-ID, From tag, branch and SDES key.
    pub fn new(
        setup: &CallerSetup,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(OutgoingCall, Vec<u8>), CallError> {
        let own_crypto = setup
            .suite
            .map(|suite| CryptoAttribute::generate(1, suite, rng));
        let uri = Uri::parse(&format!("sip:{}@{}", setup.callee, setup.domain))?;
        let mut invite = Request::new(Method::Invite, uri);
        let v = via("TLS", setup.local, rng);
        let branch = v.branch().unwrap_or_default().to_owned();
        let h = &mut invite.headers;
        h.push(HeaderName::Via, v.to_string())?;
        h.push(HeaderName::MaxForwards, "70")?;
        h.push(
            HeaderName::From,
            format!(
                "<sip:{}@{}>;tag={}",
                setup.user,
                setup.domain,
                random_hex(rng, 6)
            ),
        )?;
        h.push(
            HeaderName::To,
            format!("<sip:{}@{}>", setup.callee, setup.domain),
        )?;
        h.push(
            HeaderName::CallId,
            format!("{}@{}", random_hex(rng, 12), setup.local.ip()),
        )?;
        h.push(HeaderName::CSeq, "1 INVITE")?;
        h.push(
            HeaderName::Contact,
            format!("<sip:{}@{};transport=tls>", setup.user, setup.local),
        )?;
        h.push(HeaderName::UserAgent, "edgeway-loadgen")?;
        let body = write_sdp(setup.media, own_crypto.as_ref(), rng.next_u64() >> 1);
        invite.set_body(Some("application/sdp"), body)?;
        let bytes = invite.to_bytes();
        Ok((
            OutgoingCall {
                invite,
                invite_branch: branch,
                local: setup.local,
                own_crypto,
                dialog: None,
                ack: None,
                bye_branch: None,
                state: CallerState::Inviting,
            },
            bytes,
        ))
    }

    /// The key this caller protects its media with (what the offer carried).
    pub fn own_crypto(&self) -> Option<&CryptoAttribute> {
        self.own_crypto.as_ref()
    }

    /// Where the call is.
    pub fn state(&self) -> CallerState {
        self.state
    }

    /// The outside Call-ID.
    pub fn call_id(&self) -> &str {
        self.invite.headers.call_id().unwrap_or_default()
    }

    fn answers(&self, resp: &Response, branch: &str, method: Method) -> bool {
        let branch_ok = resp
            .headers
            .top_via()
            .ok()
            .is_some_and(|v| v.branch() == Some(branch));
        let cseq_ok = resp.headers.cseq().ok().is_some_and(|c| c.method == method);
        let call_ok = resp.headers.call_id().ok() == Some(self.call_id());
        branch_ok && cseq_ok && call_ok
    }

    /// Takes one response read from the connection.
    pub fn handle_response(
        &mut self,
        resp: &Response,
        rng: &mut impl RngCore,
    ) -> Result<CallerStep, CallError> {
        if resp.is_provisional() {
            return Ok(CallerStep::Wait);
        }
        let invite_answer = resp.headers.cseq().ok().is_some_and(|c| c.seq == 1)
            && resp.headers.call_id().ok() == Some(self.call_id());
        if invite_answer && resp.is_success() && self.dialog.is_some() {
            // A retransmitted 2xx (our ACK was lost or late): ACK again.
            return Ok(match &self.ack {
                Some(ack) => CallerStep::Send(ack.clone()),
                None => CallerStep::Wait,
            });
        }
        let branch = self.invite_branch.clone();
        if self.state == CallerState::Inviting && self.answers(resp, &branch, Method::Invite) {
            if !resp.is_success() {
                self.state = CallerState::Ended;
                let ack = self.invite.make_ack_for_non_2xx(resp)?.to_bytes();
                return Ok(CallerStep::Refused {
                    ack,
                    error: CallError::Status {
                        method: "INVITE",
                        status: resp.status,
                        reason: resp.reason.clone(),
                    },
                });
            }
            let dialog = Dialog::new_uac(&self.invite, resp)?;
            let ack = dialog
                .create_ack(1, &via("TLS", self.local, rng))?
                .to_bytes();
            self.dialog = Some(dialog);
            self.ack = Some(ack.clone());
            self.state = CallerState::Established;
            // A 2xx with bad SDP still made a dialog: it must be ACKed, then hung up.
            let far = read_sdp(&resp.body);
            return Ok(CallerStep::Answered { ack, far });
        }
        if self.state == CallerState::Ending {
            if let Some(b) = self.bye_branch.clone() {
                if self.answers(resp, &b, Method::Bye) {
                    self.state = CallerState::Ended;
                    if resp.is_success() {
                        return Ok(CallerStep::Ended { reply: None });
                    }
                    return Err(CallError::Status {
                        method: "BYE",
                        status: resp.status,
                        reason: resp.reason.clone(),
                    });
                }
            }
        }
        Ok(CallerStep::Wait)
    }

    /// The BYE that ends an established call.
    pub fn hang_up(&mut self, rng: &mut impl RngCore) -> Result<Vec<u8>, CallError> {
        let Some(dialog) = self.dialog.as_mut() else {
            return Err(CallError::NotEstablished(self.state.as_str()));
        };
        if self.state != CallerState::Established {
            return Err(CallError::NotEstablished(self.state.as_str()));
        }
        let v = via("TLS", self.local, rng);
        self.bye_branch = v.branch().map(str::to_owned);
        let bye = dialog.create_request(Method::Bye, &v)?;
        self.state = CallerState::Ending;
        Ok(bye.to_bytes())
    }

    /// Takes a request the far side sent in this call's dialog: a BYE ends the call (its
    /// 200 is returned); anything else in the dialog gets 200; a stranger gets `None`.
    pub fn handle_request(&mut self, req: &Request) -> Option<CallerStep> {
        let ours = req.headers.call_id().ok() == Some(self.call_id());
        if !ours || req.method == Method::Ack {
            return None;
        }
        let reply = req.make_response(200, "OK", None).to_bytes();
        if req.method == Method::Bye {
            self.state = CallerState::Ended;
            return Some(CallerStep::Ended { reply: Some(reply) });
        }
        Some(CallerStep::Send(reply))
    }
}

/// What happened at a [`Callee`] after one request.
#[derive(Debug, Clone, PartialEq)]
pub enum CalleeEvent {
    /// An INVITE was answered 200: `far` is the offer's media (the core's inside address
    /// and the key it protects towards the phone with), `own` the key the phone answered
    /// with (`None` for plain RTP).
    Answered {
        /// The inside Call-ID.
        call_id: String,
        /// The offer's media.
        far: MediaEndpoint,
        /// The phone's key.
        own: Option<CryptoAttribute>,
    },
    /// An INVITE was refused with 488 (its SDP was unusable).
    Refused {
        /// Why.
        error: CallError,
    },
    /// The ACK for an answered call arrived.
    Acked {
        /// The inside Call-ID.
        call_id: String,
    },
    /// A BYE ended a call (answered 200).
    Ended {
        /// The inside Call-ID.
        call_id: String,
    },
}

/// What the IO layer does with one request handed to a [`Callee`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CalleeStep {
    /// Bytes to send back on the connection, if any.
    pub reply: Option<Vec<u8>>,
    /// What happened, if anything the report counts.
    pub event: Option<CalleeEvent>,
}

/// A simulated inside phone registered straight at the registrar: it answers every INVITE
/// at once with 200 and an SDP answer on its one media address (SRTP with a fresh key of
/// the offer's suite when the offer is `RTP/SAVP`, RTP otherwise), and answers ACK, BYE
/// and anything else in or out of a dialog.
#[derive(Debug)]
pub struct Callee {
    user: String,
    local: SocketAddr,
    media: SocketAddr,
    calls: HashMap<String, Dialog>,
}

impl Callee {
    /// A phone `user` on a connection whose local address is `local`, receiving media at
    /// `media`.
    pub fn new(user: impl Into<String>, local: SocketAddr, media: SocketAddr) -> Callee {
        Callee {
            user: user.into(),
            local,
            media,
            calls: HashMap::new(),
        }
    }

    /// Calls answered and not yet ended.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Takes one request read from the connection.
    pub fn handle_request(
        &mut self,
        req: &Request,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> CalleeStep {
        let call_id = req.headers.call_id().unwrap_or_default().to_owned();
        match req.method {
            Method::Invite if !self.calls.contains_key(&call_id) => self.answer(req, rng),
            Method::Ack => CalleeStep {
                reply: None,
                event: self
                    .calls
                    .contains_key(&call_id)
                    .then_some(CalleeEvent::Acked { call_id }),
            },
            Method::Bye => {
                let known = self.calls.remove(&call_id).is_some();
                let (status, reason) = if known {
                    (200, "OK")
                } else {
                    (481, "Call/Transaction Does Not Exist")
                };
                CalleeStep {
                    reply: Some(req.make_response(status, reason, None).to_bytes()),
                    event: known.then_some(CalleeEvent::Ended { call_id }),
                }
            }
            _ => CalleeStep {
                reply: Some(req.make_response(200, "OK", None).to_bytes()),
                event: None,
            },
        }
    }

    fn answer(&mut self, req: &Request, rng: &mut (impl RngCore + CryptoRng)) -> CalleeStep {
        let call_id = req.headers.call_id().unwrap_or_default().to_owned();
        let far = match read_sdp(&req.body) {
            Ok(far) => far,
            Err(error) => {
                let mut refusal = req.make_response(488, "Not Acceptable Here", None);
                let _ = refusal
                    .headers
                    .push(HeaderName::Warning, format!("399 loadgen \"{error}\""));
                return CalleeStep {
                    reply: Some(refusal.to_bytes()),
                    event: Some(CalleeEvent::Refused { error }),
                };
            }
        };
        let own = far
            .crypto
            .as_ref()
            .map(|theirs| CryptoAttribute::generate(theirs.tag, theirs.profile, rng));
        let tag = random_hex(rng, 6);
        let mut ok = req.make_response(200, "OK", Some(&tag));
        let built = ok
            .headers
            .push(
                HeaderName::Contact,
                format!("<sip:{}@{};transport=tcp>", self.user, self.local),
            )
            .and_then(|()| {
                ok.set_body(
                    Some("application/sdp"),
                    write_sdp(self.media, own.as_ref(), rng.next_u64() >> 1),
                )
            });
        let dialog = built
            .map_err(CallError::from)
            .and_then(|()| Dialog::new_uas(req, &ok).map_err(CallError::from));
        match dialog {
            Ok(d) => {
                self.calls.insert(call_id.clone(), d);
                CalleeStep {
                    reply: Some(ok.to_bytes()),
                    event: Some(CalleeEvent::Answered { call_id, far, own }),
                }
            }
            Err(error) => CalleeStep {
                reply: Some(req.make_response(400, "Bad Request", None).to_bytes()),
                event: Some(CalleeEvent::Refused { error }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeway_sip::Message;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn setup() -> CallerSetup {
        CallerSetup {
            user: "user0001".into(),
            callee: "user0002".into(),
            domain: "example.com".into(),
            local: "127.0.0.1:40001".parse().expect("addr"),
            media: "127.0.0.1:20000".parse().expect("addr"),
            suite: Some(SrtpProfile::AesCm128HmacSha1_80),
        }
    }

    fn request(bytes: &[u8]) -> Request {
        match Message::parse(bytes).expect("parses") {
            Message::Request(r) => r,
            Message::Response(r) => panic!("expected a request, got {r:?}"),
        }
    }

    fn response(bytes: &[u8]) -> Response {
        match Message::parse(bytes).expect("parses") {
            Message::Response(r) => r,
            Message::Request(r) => panic!("expected a response, got {r:?}"),
        }
    }

    fn phone() -> Callee {
        Callee::new(
            "user0002",
            "127.0.0.1:40002".parse().expect("addr"),
            "127.0.0.1:20002".parse().expect("addr"),
        )
    }

    #[test]
    fn invite_answer_ack_bye_back_to_back() {
        let mut rng = rng();
        let (mut call, invite) = OutgoingCall::new(&setup(), &mut rng).expect("INVITE");
        let invite = request(&invite);
        assert_eq!(invite.method, Method::Invite);
        let offer = read_sdp(&invite.body).expect("offer");
        assert_eq!(offer.addr, setup().media);
        assert_eq!(offer.crypto.as_ref(), call.own_crypto());
        assert_eq!(
            offer.crypto.as_ref().map(|c| c.profile),
            Some(SrtpProfile::AesCm128HmacSha1_80)
        );

        let mut phone = phone();
        let step = phone.handle_request(&invite, &mut rng);
        let Some(CalleeEvent::Answered { far, own, .. }) = step.event else {
            panic!("answered: {step:?}");
        };
        assert_eq!(far, offer, "the phone sees the offer's media");
        let own = own.expect("SRTP answer to an SRTP offer");
        assert_ne!(Some(&own), call.own_crypto(), "a fresh key, not an echo");
        let ok = response(&step.reply.expect("200"));
        assert_eq!(ok.status, 200);

        let trying = invite.make_response(100, "Trying", None);
        assert_eq!(
            call.handle_response(&trying, &mut rng),
            Ok(CallerStep::Wait)
        );
        let CallerStep::Answered { ack, far } = call.handle_response(&ok, &mut rng).expect("2xx")
        else {
            panic!("answered");
        };
        let far = far.expect("usable answer");
        assert_eq!(far.addr, "127.0.0.1:20002".parse().expect("addr"));
        assert_eq!(far.crypto, Some(own));
        assert_eq!(call.state(), CallerState::Established);
        let ack = request(&ack);
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(
            phone.handle_request(&ack, &mut rng).event,
            Some(CalleeEvent::Acked {
                call_id: call.call_id().to_owned()
            })
        );
        // A retransmitted 2xx gets the same ACK again.
        assert!(matches!(
            call.handle_response(&ok, &mut rng),
            Ok(CallerStep::Send(_))
        ));

        let bye = request(&call.hang_up(&mut rng).expect("BYE"));
        assert_eq!(bye.method, Method::Bye);
        assert_eq!(call.state(), CallerState::Ending);
        let step = phone.handle_request(&bye, &mut rng);
        assert!(matches!(step.event, Some(CalleeEvent::Ended { .. })));
        assert_eq!(phone.active_calls(), 0);
        let bye_ok = response(&step.reply.expect("200 to BYE"));
        assert_eq!(bye_ok.status, 200);
        assert_eq!(
            call.handle_response(&bye_ok, &mut rng),
            Ok(CallerStep::Ended { reply: None })
        );
        assert_eq!(call.state(), CallerState::Ended);
        assert_eq!(
            call.hang_up(&mut rng),
            Err(CallError::NotEstablished("ended"))
        );
    }

    #[test]
    fn a_refusal_is_acked_and_counted_by_status() {
        let mut rng = rng();
        let (mut call, invite) = OutgoingCall::new(&setup(), &mut rng).expect("INVITE");
        let invite = request(&invite);
        let busy = invite.make_response(486, "Busy Here", Some("t1"));
        let step = call.handle_response(&busy, &mut rng).expect("step");
        let CallerStep::Refused { ack, error } = step else {
            panic!("refused: {step:?}");
        };
        assert_eq!(error.label(), "invite-486");
        let ack = request(&ack);
        assert_eq!(ack.method, Method::Ack);
        assert!(ack
            .headers
            .first(&HeaderName::To)
            .is_some_and(|t| t.contains("tag=t1")));
        assert_eq!(call.state(), CallerState::Ended);
    }

    #[test]
    fn a_200_with_unusable_sdp_is_still_acked() {
        let mut rng = rng();
        let (mut call, invite) = OutgoingCall::new(&setup(), &mut rng).expect("INVITE");
        let invite = request(&invite);
        let mut ok = invite.make_response(200, "OK", Some("t2"));
        ok.headers
            .push(HeaderName::Contact, "<sip:user0002@127.0.0.1:40002>")
            .expect("contact");
        let step = call.handle_response(&ok, &mut rng).expect("step");
        let CallerStep::Answered { far, .. } = step else {
            panic!("answered: {step:?}");
        };
        assert_eq!(far.map_err(|e| e.label()), Err("bad-sdp".to_owned()));
        assert!(call.hang_up(&mut rng).is_ok(), "the dialog can be hung up");
    }

    #[test]
    fn the_phone_answers_plain_rtp_offers_in_rtp_and_refuses_bad_ones_with_488() {
        let mut rng = rng();
        let mut plain = setup();
        plain.suite = None;
        let (_, invite) = OutgoingCall::new(&plain, &mut rng).expect("INVITE");
        let invite = request(&invite);
        let mut phone = phone();
        let step = phone.handle_request(&invite, &mut rng);
        let Some(CalleeEvent::Answered { own, far, .. }) = step.event else {
            panic!("answered");
        };
        assert_eq!((own, far.crypto), (None, None));
        let answer = response(&step.reply.expect("200"));
        assert!(String::from_utf8_lossy(&answer.body).contains("RTP/AVP"));

        let mut bad = request(&OutgoingCall::new(&setup(), &mut rng).expect("INVITE").1);
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 20000 RTP/SAVP 0\r\na=crypto:1 F8_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
        bad.set_body(Some("application/sdp"), sdp.into())
            .expect("body");
        let step = phone.handle_request(&bad, &mut rng);
        assert_eq!(response(&step.reply.expect("488")).status, 488);
        assert!(matches!(
            step.event,
            Some(CalleeEvent::Refused {
                error: CallError::NoUsableCrypto(_)
            })
        ));
    }

    #[test]
    fn read_sdp_refuses_what_media_cannot_use() {
        let base = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
        let cases = [
            ("", "bad-sdp"),
            (
                "c=IN IP4 127.0.0.1\r\nm=video 20000 RTP/AVP 96\r\n",
                "bad-sdp",
            ),
            ("c=IN IP4 127.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n", "bad-sdp"),
            ("m=audio 20000 RTP/AVP 0\r\n", "bad-sdp"),
            (
                "c=IN IP4 127.0.0.1\r\nm=audio 20000 UDP/TLS/RTP/SAVPF 0\r\n",
                "bad-sdp",
            ),
            (
                "c=IN IP4 127.0.0.1\r\nm=audio 20000 RTP/SAVP 0\r\n",
                "no-usable-crypto",
            ),
        ];
        for (tail, label) in cases {
            let body = if tail.is_empty() {
                Vec::new()
            } else {
                format!("{base}{tail}").into_bytes()
            };
            let got = read_sdp(&body).map_err(|e| e.label());
            assert_eq!(got, Err(label.to_owned()), "{tail:?}");
        }
        let ok =
            read_sdp(format!("{base}c=IN IP4 10.0.0.1\r\nm=audio 30000 RTP/AVP 0\r\n").as_bytes())
                .expect("plain RTP");
        assert_eq!(ok.addr, "10.0.0.1:30000".parse().expect("addr"));
    }

    #[test]
    fn a_far_end_bye_ends_the_call_with_a_200() {
        let mut rng = rng();
        let (mut call, invite) = OutgoingCall::new(&setup(), &mut rng).expect("INVITE");
        let invite = request(&invite);
        let mut phone = phone();
        let ok = response(&phone.handle_request(&invite, &mut rng).reply.expect("200"));
        assert!(matches!(
            call.handle_response(&ok, &mut rng),
            Ok(CallerStep::Answered { .. })
        ));
        let bye = format!(
            "BYE sip:user0001@127.0.0.1:40001 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKb\r\n\
Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            ok.headers.first(&HeaderName::To).expect("To"),
            ok.headers.first(&HeaderName::From).expect("From"),
            call.call_id()
        );
        let step = call.handle_request(&request(bye.as_bytes()));
        let Some(CallerStep::Ended { reply: Some(reply) }) = step else {
            panic!("ended: {step:?}");
        };
        assert_eq!(response(&reply).status, 200);
        assert_eq!(call.state(), CallerState::Ended);
        let stranger = bye.replace(call.call_id(), "other@x");
        assert_eq!(call.handle_request(&request(stranger.as_bytes())), None);
    }
}
