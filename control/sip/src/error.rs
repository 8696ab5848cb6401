//! Errors of the message layer (parsing, limits, stream framing).

use thiserror::Error;

/// Why a message, header or URI was refused.
///
/// Every variant names what was wrong so the caller can log it or put it in a 400's
/// reason phrase; [`ParseError::status_code`] gives the response RFC 3261 suggests.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The message is larger than [`ParseLimits::max_message_size`](crate::ParseLimits).
    #[error("message of {size} bytes exceeds limit {limit}")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More header fields than [`ParseLimits::max_headers`](crate::ParseLimits).
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// One (unfolded) header field is longer than the limit.
    #[error("{name}: header field of {len} bytes exceeds limit {limit}")]
    HeaderLineTooLong {
        /// Header name.
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The input ends before the empty line that closes the header section.
    #[error("message ends before the empty line after the headers")]
    Incomplete,
    /// The header section is not UTF-8.
    #[error("header section is not valid UTF-8 (line {line})")]
    InvalidUtf8 {
        /// 1-based line number.
        line: usize,
    },
    /// The request or status line is malformed.
    #[error("bad start line {line:?}: {reason}")]
    BadStartLine {
        /// The line (truncated).
        line: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A SIP version other than 2.0 (answer 505).
    #[error("unsupported SIP version {0:?}")]
    UnsupportedVersion(String),
    /// A status code that is not three digits in 100-699.
    #[error("bad status code {0:?}")]
    BadStatusCode(String),
    /// The Request-URI is malformed or not allowed there.
    #[error("bad Request-URI {uri:?}: {reason}")]
    BadRequestUri {
        /// The URI as received (truncated).
        uri: String,
        /// What is wrong.
        reason: String,
    },
    /// A URI is malformed.
    #[error("bad URI {uri:?}: {reason}")]
    BadUri {
        /// The URI as received (truncated).
        uri: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A header line cannot be split into name and value.
    #[error("bad header line {line:?}: {reason}")]
    BadHeaderLine {
        /// The line (truncated).
        line: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A known header's value is malformed, e.g. "Via: missing branch parameter".
    #[error("{name}: {reason}")]
    BadHeader {
        /// Canonical header name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A mandatory header is absent.
    #[error("missing mandatory header {0}")]
    MissingHeader(&'static str),
    /// A header that may appear once appears more than once.
    #[error("{0} appears more than once")]
    DuplicateHeader(String),
    /// The CSeq method differs from the request method.
    #[error("CSeq method {cseq:?} does not match request method {method:?}")]
    CSeqMismatch {
        /// Method on the request line.
        method: String,
        /// Method in CSeq.
        cseq: String,
    },
    /// Content-Length is not a non-negative decimal.
    #[error("bad Content-Length {0:?}")]
    BadContentLength(String),
    /// Content-Length promises more body than the datagram holds.
    #[error("Content-Length {declared} exceeds the {available} body bytes received")]
    ContentLengthExceedsBody {
        /// Declared length.
        declared: usize,
        /// Bytes after the header section.
        available: usize,
    },
    /// Content-Length is larger than the message size limit.
    #[error("Content-Length {declared} exceeds limit {limit}")]
    ContentLengthExceedsLimit {
        /// Declared length.
        declared: u64,
        /// The limit.
        limit: usize,
    },
    /// A header value set by the caller would break the framing (CR or LF inside).
    #[error("{name}: value contains CR or LF")]
    HeaderValueInjection {
        /// Header name.
        name: String,
    },
}

impl ParseError {
    /// The response a UAS or proxy should answer with (RFC 3261 §8.2, §16.3).
    pub fn status_code(&self) -> u16 {
        match self {
            ParseError::UnsupportedVersion(_) => 505,
            ParseError::TooLarge { .. } | ParseError::ContentLengthExceedsLimit { .. } => 513,
            _ => 400,
        }
    }

    pub(crate) fn header(name: &str, reason: impl Into<String>) -> Self {
        ParseError::BadHeader {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Why a stream (TCP/TLS) could not be framed; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FramerError {
    /// No empty line within the size limit.
    #[error("header section exceeds {limit} bytes without an empty line")]
    HeaderTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A message on a stream without Content-Length (RFC 3261 §18.3 makes it mandatory).
    #[error("message on a stream transport lacks Content-Length")]
    MissingContentLength,
    /// The whole message would exceed the limit (refused before buffering the body).
    #[error("message of {size} bytes exceeds limit {limit}")]
    TooLarge {
        /// Header section plus declared body.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// The Content-Length could not be read (not a number, or given twice), so where the
    /// message ends is unknown. (A message that frames but fails to parse otherwise is a
    /// non-final [`Frame::Invalid`](crate::Frame::Invalid), not this.)
    #[error("framed message refused: {0}")]
    Message(#[from] ParseError),
    /// An earlier error made the stream unusable.
    #[error("stream already failed; close the connection")]
    Failed,
}
