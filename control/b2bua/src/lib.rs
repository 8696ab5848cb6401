//! The media plan of edgeway's calls, sans-IO: what the control plane (`edgeway-control`)
//! does with every SDP body of a call, on either role.
//!
//! - **Edge** ([`EdgeCall`]): each relayed `m=` line gets a client-facing port pair from the
//!   node's [`PortAllocator`](edgeway_flowtable::PortAllocator); SDP is rewritten to the
//!   edge's public address towards the client and to its demux pair towards the core; Relay
//!   entries join the two, latching the client from its signalling address only.
//! - **Core** ([`CoreCall`]): a B2BUA's two legs. Towards the edge SRTP is required (a
//!   client offer without a usable `a=crypto` is refused with 488 and a `Warning`); each leg
//!   gets fresh SDES keys (RFC 4568, edgeway-srtp's suites strongest first) and the client's
//!   keys never reach the inside. Rekey entries (SRTP↔SRTP, or SRTP↔RTP for a non-secure
//!   phone profile), RTCP included, and the pinhole keepalive towards the edge's demux port.
//!
//! How it is driven: one call object per call; hand it each offer and answer as it crosses
//! (`offer(from, now_ms, body, pool, ..)`, `answer(..)`), a failed or cancelled offer
//! (`offer_failed`), and the end of the call (`teardown`: BYE, CANCEL, failure, media
//! timeout). Each returns the body to forward and a [`FlowUpdate`] to apply to the flow
//! table at once (removals, then inserts). Time (`now_ms`, the table's Unix ms) and the
//! CSPRNG for keys come from the caller; ports come through [`PortPool`], implemented for
//! the table's allocator. Errors ([`PlanError`]) carry the SIP status and `Warning` to
//! answer with, and leave the call exactly as before the message: nothing allocated,
//! no entry produced. `teardown` removes every entry the call ever handed out and releases
//! every pair: no flow outlives its call.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use edgeway_b2bua::{CoreCall, CoreConfig, InsideSecurity, Leg, PlanError, PortPool};
//!
//! // The node's `FlowTable::ports()` in production; any pool of even ports here.
//! struct Pairs(u16);
//! impl PortPool for Pairs {
//!     fn allocate_pair(&mut self, _now: u64) -> Result<u16, PlanError> {
//!         self.0 += 2;
//!         Ok(self.0)
//!     }
//!     fn release_pair(&mut self, _port: u16, _now: u64) {}
//! }
//!
//! let config = CoreConfig::new(Ipv4Addr::new(172, 16, 0, 2), Ipv4Addr::new(10, 0, 0, 2));
//! let mut call = CoreCall::new(&config, 1, InsideSecurity::Secure);
//! let (mut pool, mut rng) = (Pairs(40000), rand_core::OsRng);
//! // A client offer without a=crypto: refused before anything is allocated.
//! let plain = b"v=0\r\no=- 1 1 IN IP4 172.16.0.1\r\ns=-\r\nc=IN IP4 172.16.0.1\r\nt=0 0\r\n\
//!               m=audio 2776 RTP/AVP 0\r\n";
//! let err = call.offer(Leg::Outside, 0, plain, &mut pool, &mut rng).unwrap_err();
//! assert_eq!(err.status(), 488);
//! assert!(err.warning("edgeway").starts_with("302 edgeway \"m= line 0 from the outside leg: SRTP is required"));
//! assert!(call.ports().is_empty());
//! ```
//!
//! **Signalling** ([`B2bCall`], [`DialogPair`]): the B2BUA's two dialogs per call, each
//! with its own Call-ID, tags and CSeq space. `B2bCall::start` turns the INVITE received
//! on one leg into a new INVITE on the other (fresh Call-ID and From tag from the caller's
//! RNG, this node's Via and Contact, CSeq 1, identities and end-to-end headers kept);
//! responses map back with this node's tag and Contact, a 1xx with a To tag makes both
//! early dialogs (PRACK with its RAck translated, UPDATE before the answer), a non-2xx is
//! ACKed hop by hop, CANCEL is answered and sent on as the CANCEL of the new INVITE, and a
//! call not answered in time is given up (408 back, CANCEL on). In-dialog requests
//! (re-INVITE and its ACK, UPDATE, PRACK, INFO, REFER, NOTIFY, SUBSCRIBE, MESSAGE, OPTIONS,
//! BYE) are rebuilt on the other dialog by [`DialogPair`] and their responses mapped back
//! onto the original request; a request the far leg never answers gets 408, and a
//! re-INVITE crossing a pending one is refused (`PairError::Glare`: answer 491). Attended
//! transfer: a `Replaces` (RFC 3891) in an INVITE or in a REFER's Refer-To names a dialog by
//! one leg's identifiers; [`DialogPair::map_replaces`] gives the other leg's, and
//! [`rewrite_refer_to`] puts them back into the Refer-To. Session timers (RFC 4028,
//! [`SessionTimer`]): an answered call whose negotiated interval passes with no refresh
//! (re-INVITE or UPDATE answered 2xx) is to be hung up. Not here: forking (the first To
//! tag is the call's). The media plan only needs to be told which leg an SDP body came from and
//! whether it is an offer or an answer (offer in INVITE/UPDATE, answer in its 2xx; or
//! offer in a 2xx, answer in the ACK).
#![forbid(unsafe_code)]

mod call;
mod core;
mod dialogs;
mod edge;
mod error;
mod media;
mod plan;
mod replaces;
mod session;
mod timer;

use std::fmt;

pub use crate::core::{CoreCall, CoreConfig, InsideSecurity};
pub use call::{B2bCall, CallError, NewLeg, SetupOutcome, SetupState};
pub use dialogs::{DialogPair, PairError};
pub use edge::{EdgeCall, EdgeConfig};
pub use error::PlanError;
pub use media::Remote;
pub use plan::{ApplyError, FlowUpdate, PortPool};
pub use replaces::{refer_to_replaces, rewrite_refer_to, Replaces, ReplacesError};
pub use timer::{SessionTimer, TimerError, MIN_SESSION_INTERVAL};

/// A call's two sides as seen from one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// Towards the remote client (on the core: towards the edge).
    Outside,
    /// Towards the enterprise (on the edge: the core; on the core: the phone).
    Inside,
}

impl fmt::Display for Leg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Leg::Outside => "outside",
            Leg::Inside => "inside",
        })
    }
}

/// Limits on what an SDP body may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted (bytes).
    pub max_body: usize,
    /// Most `m=` lines accepted (each relayed one costs one or two port pairs).
    pub max_media: usize,
}

impl Default for Limits {
    /// 16 KiB and 8 `m=` lines: audio, video, presentation and data with room to spare.
    fn default() -> Self {
        Limits {
            max_body: 16 * 1024,
            max_media: 8,
        }
    }
}

/// The result of one offer or answer: the body to forward and the table changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The rewritten SDP for the other leg.
    pub sdp: Vec<u8>,
    /// Entries to remove and insert now.
    pub flows: FlowUpdate,
}

/// The flow id of `m=` line `index` of call `call_id` (both directions and RTCP share it):
/// `call_id << 8 | index`, so call numbers must stay below 2^56.
pub(crate) fn flow_id(call_id: u64, index: usize) -> u64 {
    (call_id << 8) | (index as u64 & 0xff)
}
