//! The crate's one error type.

use crate::{rtcp::RtcpError, rtp::RtpError};

/// Why a packet or a key could not be processed. Every variant is a refusal of one packet or
/// one configuration; none leaves a context in a worse state than before the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The RTP header is malformed.
    #[error("malformed RTP: {0}")]
    Rtp(#[from] RtpError),
    /// The RTCP header is malformed.
    #[error("malformed RTCP: {0}")]
    Rtcp(#[from] RtcpError),
    /// The packet is shorter than its header, MKI, index and tag.
    #[error("packet too short for SRTP: {len} bytes, at least {min} needed")]
    TooShort {
        /// Length of the packet.
        len: usize,
        /// Minimum length for this profile.
        min: usize,
    },
    /// `len` exceeds the buffer, or the buffer has no room for the trailer.
    #[error("buffer of {cap} bytes cannot hold {needed} bytes")]
    BufferTooSmall {
        /// Bytes the operation needs.
        needed: usize,
        /// Bytes the buffer has.
        cap: usize,
    },
    /// The authentication tag does not match: forged, corrupted, or the wrong key.
    #[error("authentication failed")]
    AuthFailed,
    /// The packet index was already received (or, on protect, already sent).
    #[error("replayed packet (index {index})")]
    Replayed {
        /// The 48-bit SRTP index or 31-bit SRTCP index.
        index: u64,
    },
    /// The packet index is older than the replay window.
    #[error("packet index {index} is older than the replay window")]
    TooOld {
        /// The 48-bit SRTP index or 31-bit SRTCP index.
        index: u64,
    },
    /// The packet carries an MKI that names no configured master key.
    #[error("unknown MKI")]
    UnknownMki,
    /// A master key or salt has the wrong length for the profile.
    #[error("{what} must be {expected} bytes for {profile}, got {got}")]
    KeyLength {
        /// "master key", "master salt" or "MKI".
        what: &'static str,
        /// The profile's SDES name.
        profile: &'static str,
        /// Required length.
        expected: usize,
        /// Supplied length.
        got: usize,
    },
    /// The configuration is not usable (no keys, MKI lengths differ, window out of range...).
    #[error("invalid SRTP configuration: {0}")]
    Config(&'static str),
    /// The SRTCP index space (2^31 packets) of this key is exhausted: re-key the session.
    #[error("SRTCP index exhausted: the master key must be replaced")]
    IndexExhausted,
    /// The stream table of the context is full and no stream could be evicted.
    #[error("too many SSRCs on one context")]
    TooManyStreams,
}
