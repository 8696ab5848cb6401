//! The crate's error types: one for configuration, one for installing a flow. Packets are
//! never errors: a refused packet is a [`crate::Verdict::Drop`] with its reason, counted.

use edgeway_map_schema::FlowKey;

/// Why a [`crate::MediaConfig`] is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The media port range is empty, starts at port 0, or ends past 65535.
    #[error("media port range {low}-{high} is empty or starts at port 0")]
    BadRange {
        /// Low end (inclusive).
        low: u16,
        /// High end (inclusive).
        high: u16,
    },
    /// The range starts on an odd port, so its first pairs would put RTP on odd ports.
    #[error(
        "media port range must start on an even port (RTP even, RTCP odd) for the {layout} \
         demultiplexing layout; it starts at {low}"
    )]
    OddRangeStart {
        /// Low end of the range.
        low: u16,
        /// "first-pair" or "large".
        layout: &'static str,
    },
    /// The range is too small to keep any port for clients after the demultiplexing pairs.
    #[error(
        "media port range {low}-{high} leaves no client ports after the {reserved} ports \
         reserved for demultiplexing"
    )]
    RangeTooSmall {
        /// Low end (inclusive).
        low: u16,
        /// High end (inclusive).
        high: u16,
        /// Ports the layout reserves at the start of the range.
        reserved: u16,
    },
    /// The configured demultiplexing RTP port is 0, odd, or 65535 (no room for RTCP).
    #[error("configured demultiplexing RTP port {0} must be even and between 2 and 65534")]
    BadDemuxPort(u16),
    /// The configured pair falls inside the media range without being its first pair, which
    /// would split the client ports in two.
    #[error(
        "configured demultiplexing pair {port}/{} lies inside the media range {low}-{high}; \
         use a pair outside it, or the range's first pair",
        port + 1
    )]
    DemuxPairInsideRange {
        /// The configured RTP port.
        port: u16,
        /// Low end of the range.
        low: u16,
        /// High end of the range.
        high: u16,
    },
}

/// Which direction of an entry's SRTP keying a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `FlowEntry::srtp_in`: how packets arrive.
    In,
    /// `FlowEntry::srtp_out`: how they leave.
    Out,
}

impl core::fmt::Display for Direction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Direction::In => "srtp_in",
            Direction::Out => "srtp_out",
        })
    }
}

/// Why a flow entry could not be installed on a worker. The caller counts the entry as
/// `DropReason::BadEntry`; nothing is installed for the key (an older flow under it is gone).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The entry's action byte names no `Action`.
    #[error("flow {key:?}: action byte {action} is not drop (0), relay (1) or rekey (2)")]
    BadAction {
        /// The entry's key.
        key: FlowKey,
        /// The byte.
        action: u8,
    },
    /// The entry sets flag bits that this build does not know.
    #[error("flow {key:?}: unknown flag bits {bits:#06x}")]
    UnknownFlags {
        /// The entry's key.
        key: FlowKey,
        /// The unknown bits.
        bits: u16,
    },
    /// The key's local port is 0.
    #[error("flow {key:?}: local port 0")]
    NoLocalPort {
        /// The entry's key.
        key: FlowKey,
    },
    /// A port key on a demultiplexing port, or a demultiplexing key on another port.
    #[error(
        "flow {key:?}: {}",
        if key.is_demux() {
            "a key naming a remote needs a demultiplexing port"
        } else {
            "a demultiplexing port needs a key naming the remote (address and port)"
        }
    )]
    KeyKind {
        /// The entry's key.
        key: FlowKey,
    },
    /// A relaying or re-keying entry without `out_local_port`.
    #[error("flow {key:?}: no out_local_port to send from")]
    NoOutPort {
        /// The entry's key.
        key: FlowKey,
    },
    /// The SRTP suite id is not one of `SrtpProfile`'s (1..=6) nor 0 (plain).
    #[error("flow {key:?}: {direction} suite {suite} is unknown")]
    UnknownSuite {
        /// The entry's key.
        key: FlowKey,
        /// Which direction.
        direction: Direction,
        /// The suite id.
        suite: u8,
    },
    /// The SRTP engine refused the keying (key/MKI length, replay window...).
    #[error("flow {key:?}: {direction}: {source}")]
    Srtp {
        /// The entry's key.
        key: FlowKey,
        /// Which direction.
        direction: Direction,
        /// The engine's refusal.
        source: edgeway_srtp::Error,
    },
}
