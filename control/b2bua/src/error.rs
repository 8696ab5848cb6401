//! [`PlanError`]: why an SDP body was refused, each mapped to the SIP status and `Warning`
//! (RFC 3261 §20.43) the signalling layer answers with.

use std::net::IpAddr;

use edgeway_sip::sdp::SdpError;
use edgeway_srtp::sdes::SdesError;
use thiserror::Error;

use crate::Leg;

/// Why an offer or answer was refused. Every variant leaves the call as it was before the
/// message: no entry produced, no port left allocated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The body exceeds [`crate::Limits::max_body`].
    #[error("SDP body of {len} bytes exceeds the limit of {limit}")]
    BodyTooLarge {
        /// Body length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not SDP (syntax).
    #[error("malformed SDP: {0}")]
    Sdp(#[from] SdpError),
    /// More `m=` lines than [`crate::Limits::max_media`].
    #[error("{count} m= lines exceed the limit of {limit}")]
    TooManyMedia {
        /// `m=` lines in the body.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Every `m=` line is rejected (port 0) or not RTP: nothing to relay.
    #[error("no usable RTP media stream (every m= line has port 0 or is not RTP)")]
    NoUsableMedia,
    /// An RTP port that is odd (RTP is even, RTCP the next odd port).
    #[error("m= line {index}: RTP port {port} is odd")]
    OddRtpPort {
        /// 0-based `m=` index.
        index: usize,
        /// The port.
        port: u16,
    },
    /// `m=<media> <port>/<count>`: several port pairs per stream (layered coding).
    #[error("m= line {index}: port/count ({count}) is not supported")]
    PortCount {
        /// 0-based `m=` index.
        index: usize,
        /// The count.
        count: u16,
    },
    /// `a=rtcp:` that is not a port in 1-65535.
    #[error("m= line {index}: bad a=rtcp {value:?}")]
    BadRtcp {
        /// 0-based `m=` index.
        index: usize,
        /// The attribute value (truncated).
        value: String,
    },
    /// Two streams at one address and port: on the edge their demux entries would collide.
    #[error("m= line {index}: {address}:{port} is already the address of another stream")]
    SharedPort {
        /// 0-based `m=` index.
        index: usize,
        /// The address.
        address: std::net::Ipv4Addr,
        /// The port (RTP or RTCP).
        port: u16,
    },
    /// A media stream with no `c=` line, neither its own nor the session's.
    #[error("m= line {index}: no connection address (c=)")]
    NoConnection {
        /// 0-based `m=` index.
        index: usize,
    },
    /// An IPv6 media address while the data plane is IPv4-only.
    #[error("m= line {index}: IPv6 media address {address} is not supported (the data plane is IPv4-only)")]
    Ipv6 {
        /// 0-based `m=` index.
        index: usize,
        /// The address.
        address: String,
    },
    /// A multicast, broadcast or unparsable media address (0.0.0.0 is hold, not refused).
    #[error("m= line {index}: media address {address:?} is not a unicast IPv4 address")]
    BadAddress {
        /// 0-based `m=` index.
        index: usize,
        /// The address as written (truncated).
        address: String,
    },
    /// SRTP is required on this leg and the stream carries no `a=crypto` (or is `RTP/AVP`).
    #[error("m= line {index} from the {leg} leg: SRTP is required (RTP/SAVP with a=crypto), got {proto} without a usable a=crypto")]
    MissingCrypto {
        /// The leg the SDP came from.
        leg: Leg,
        /// 0-based `m=` index.
        index: usize,
        /// The transport protocol written.
        proto: String,
    },
    /// Every `a=crypto` names a suite edgeway does not implement, or could not be used.
    #[error("m= line {index}: none of the offered crypto suites is usable: {suites}")]
    UnknownSuites {
        /// 0-based `m=` index.
        index: usize,
        /// The suites offered, with why each was refused.
        suites: String,
    },
    /// An answer's `a=crypto` does not match an offered tag and suite, or is unusable.
    #[error("m= line {index}: the answer's a=crypto does not match the offer: {reason}")]
    AnswerCrypto {
        /// 0-based `m=` index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A non-secure inside profile but the phone offered only SRTP.
    #[error("m= line {index}: the phone's security profile is non-secure but it offers {proto}")]
    ProfileMismatch {
        /// 0-based `m=` index.
        index: usize,
        /// The transport protocol written.
        proto: String,
    },
    /// An answer with another number of `m=` lines than its offer (RFC 3264 §6).
    #[error("the answer has {answered} m= lines, the offer had {offered}")]
    MediaCountMismatch {
        /// Lines in the offer.
        offered: usize,
        /// Lines in the answer.
        answered: usize,
    },
    /// A re-offer with fewer `m=` lines than the session has (RFC 3264 §8: never removed).
    #[error("a new offer has {got} m= lines, the session has {had}; m= lines are never removed")]
    MediaRemoved {
        /// Lines the session has.
        had: usize,
        /// Lines in the new offer.
        got: usize,
    },
    /// An offer while one this side sent the other way is unanswered: glare (RFC 3261
    /// §14.1, RFC 3311 §5.2: 491).
    #[error("an offer is already pending on this call")]
    OfferPending,
    /// A second offer from the leg whose earlier offer is still unanswered (RFC 3311 §5.2:
    /// 500 with a Retry-After of 0-10 s, see [`PlanError::needs_retry_after`]).
    #[error("the {0} leg's earlier offer is not answered yet")]
    OfferUnanswered(Leg),
    /// An answer with no offer outstanding from the other leg.
    #[error("an answer from the {0} leg with no offer pending from the other leg")]
    NoPendingOffer(Leg),
    /// The call was torn down.
    #[error("the call has ended")]
    CallEnded,
    /// Key material could not be turned into a flow entry's keying (a bug, not the peer's).
    #[error("keying: {0}")]
    Keying(String),
    /// No media port pair could be allocated.
    #[error("no media port pair: {0}")]
    Ports(String),
}

impl PlanError {
    /// The SIP status to answer the message with (an answer's error: the status of the
    /// BYE/CANCEL reason or of the failed re-INVITE's ACK handling, same numbers).
    pub fn status(&self) -> u16 {
        match self {
            PlanError::BodyTooLarge { .. } => 413,
            PlanError::Sdp(_) => 400,
            PlanError::OfferPending => 491,
            PlanError::NoPendingOffer(_)
            | PlanError::OfferUnanswered(_)
            | PlanError::CallEnded
            | PlanError::Keying(_) => 500,
            PlanError::Ports(_) => 503,
            _ => 488,
        }
    }

    /// Whether the refusal must carry `Retry-After` (RFC 3311 §5.2: a 500 for an offer that
    /// arrived while the sender's earlier one is unanswered; the value is chosen at random
    /// between 0 and 10 s by the caller, who owns the RNG).
    pub fn needs_retry_after(&self) -> bool {
        matches!(self, PlanError::OfferUnanswered(_))
    }

    /// The RFC 3261 warn-code: 301 incompatible address, 302 transport, 304 media type,
    /// 399 otherwise.
    pub fn warn_code(&self) -> u16 {
        match self {
            PlanError::Ipv6 { .. }
            | PlanError::BadAddress { .. }
            | PlanError::NoConnection { .. } => 301,
            PlanError::MissingCrypto { .. } | PlanError::ProfileMismatch { .. } => 302,
            PlanError::NoUsableMedia => 304,
            _ => 399,
        }
    }

    /// The `Warning` header value, `<code> <agent> "<text>"`, quotes and backslashes in the
    /// text escaped.
    pub fn warning(&self, agent: &str) -> String {
        let text: String = self
            .to_string()
            .chars()
            .filter(|c| !c.is_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("{} {agent} \"{text}\"", self.warn_code())
    }

    pub(crate) fn bad_address(index: usize, ip: Option<IpAddr>, written: &str) -> PlanError {
        match ip {
            Some(IpAddr::V6(_)) => PlanError::Ipv6 {
                index,
                address: truncated(written),
            },
            _ => PlanError::BadAddress {
                index,
                address: truncated(written),
            },
        }
    }

    pub(crate) fn suite_refusal(index: usize, refused: &[(String, SdesError)]) -> PlanError {
        let suites = refused
            .iter()
            .map(|(suite, why)| format!("{} ({why})", truncated(suite)))
            .collect::<Vec<_>>()
            .join(", ");
        PlanError::UnknownSuites { index, suites }
    }
}

/// At most 64 characters of peer-supplied text in an error.
pub(crate) fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}
