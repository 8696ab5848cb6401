//! Sans-IO SIP for the edgeway control plane: the message model, a strict parser and
//! serializer, a stream framer, the RFC 3261 transaction layer, dialogs and SDP access.
//!
//! Nothing here opens a socket, reads a clock or spawns a thread. The caller feeds bytes
//! and the current time in and drains what comes out, in the manner of `quinn-proto`:
//!
//! * [`Message::parse`] turns a datagram into a [`Request`] or [`Response`] (strictly:
//!   RFC 4475's invalid messages are refused with a typed [`ParseError`]);
//!   [`StreamFramer`] cuts a TCP/TLS byte stream into messages and RFC 5626 keep-alives;
//!   a message that frames but does not parse is a non-final [`Frame::Invalid`], whose
//!   [`InvalidMessage::response`] is a 400 the sender can match.
//! * [`TransactionLayer`] runs the client and server state machines of RFC 3261 §17.
//!   Drive it with `handle_*(now, ..)` and then drain `poll_transmit()` and
//!   `poll_event()` until both return `None`; call `handle_timeout(now)` when
//!   `poll_timeout()` is reached. Time is only ever the `now: Instant` the caller passes.
//! * [`Dialog`] keeps the §12 dialog state and builds in-dialog requests.
//! * [`sdp::SessionDescription`] parses SDP losslessly and rewrites what a B2BUA must
//!   (connection address and port, `a=crypto`).
//!
//! Network input never panics; every layer has one `#[non_exhaustive]` error enum whose
//! messages name the offending header or line.
#![forbid(unsafe_code)]

mod dialog;
mod error;
mod framer;
mod header;
mod message;
mod params;
pub mod sdp;
mod text;
mod transaction;
mod typed;
mod uri;

pub use dialog::{Dialog, DialogError, DialogId, DialogState};
pub use error::{FramerError, ParseError};
pub use framer::{Frame, InvalidMessage, StreamFramer};
pub use header::{Header, HeaderName, Headers};
pub use message::{Message, ParseLimits, Request, Response};
pub use params::{Param, Params};
pub use transaction::{
    branch_from_random, TransactionConfig, TransactionError, TransactionEvent, TransactionId,
    TransactionKind, TransactionLayer, TransactionState, Transmit,
};
pub use typed::{
    Auth, AuthParam, CSeq, ContactList, ContentType, Method, NameAddr, RetryAfter, Via,
    MAGIC_COOKIE,
};
pub use uri::{AbsoluteUri, Host, SipUri, Uri};
