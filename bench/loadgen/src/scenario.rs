//! The scenario file: which streams to send, from where, to where, under which keys, and
//! where each is expected back. It is the whole contract between the load generator and a
//! target: whoever sets up the system under test (rtpengine over ng, edgeway's control
//! plane, the built-in reflector) writes one.
//!
//! ```json
//! { "streams": [ { "tx_local": "127.0.0.1:21000", "tx_to": "127.0.0.1:20000",
//!                  "tx_crypto": "AES_CM_128_HMAC_SHA1_80 inline:...",
//!                  "rx_local": "127.0.0.1:21001", "rx_crypto": null } ],
//!   "prime": [ { "from": "127.0.0.1:21001", "to": "127.0.0.1:20002" } ] }
//! ```
//!
//! Crypto is an RFC 4568 attribute in any of the forms `a=crypto:1 SUITE inline:..`,
//! `1 SUITE inline:..` or `SUITE inline:..` (tag 1 assumed); `null` means plain RTP.
//! Several streams may share a local address: the generator opens one socket per distinct
//! address and tells streams apart by SSRC.

use std::net::SocketAddr;
use std::path::Path;

use edgeway_srtp::sdes::{CryptoAttribute, SdesError};
use serde::{Deserialize, Serialize};

/// Address of one side (0: A, 1: B) of call `call` of `calls` for simulated endpoints on
/// `ip` from `port_base`: side A takes the first block of ports, side B the next. With
/// `ports_per_side` 0 every call side has its own port; otherwise calls share that many
/// ports per side (the generator tells streams apart by SSRC). `None` past port 65535.
pub fn endpoint_addr(
    ip: std::net::IpAddr,
    port_base: u16,
    ports_per_side: usize,
    calls: usize,
    call: usize,
    side: usize,
) -> Option<SocketAddr> {
    let per_side = if ports_per_side == 0 {
        calls
    } else {
        ports_per_side
    };
    let off = side * per_side + call % per_side.max(1);
    let port = u16::try_from(usize::from(port_base) + off).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// One stream as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Local address the stream is sent from.
    pub tx_local: String,
    /// Where the stream is sent (the system under test).
    pub tx_to: String,
    /// Key the generator protects with; `None`: plain RTP.
    pub tx_crypto: Option<String>,
    /// Local address the relayed stream is expected at.
    pub rx_local: String,
    /// Key the relayed stream is protected with; `None`: plain RTP.
    pub rx_crypto: Option<String>,
}

/// One datagram sent before the run, for relays that latch onto the first packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimeSpec {
    /// Local address to send from.
    pub from: String,
    /// Destination.
    pub to: String,
}

/// The file as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// The streams.
    pub streams: Vec<StreamSpec>,
    /// Datagrams to send first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prime: Vec<PrimeSpec>,
}

/// A validated stream.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Local send address.
    pub tx_local: SocketAddr,
    /// Destination.
    pub tx_to: SocketAddr,
    /// Sending key.
    pub tx_crypto: Option<CryptoAttribute>,
    /// Local receive address.
    pub rx_local: SocketAddr,
    /// Receiving key.
    pub rx_crypto: Option<CryptoAttribute>,
}

/// A validated prime datagram.
#[derive(Debug, Clone, Copy)]
pub struct Prime {
    /// Local address to send from.
    pub from: SocketAddr,
    /// Destination.
    pub to: SocketAddr,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The streams, in file order (the index is the stream id in payloads and reports).
    pub streams: Vec<Stream>,
    /// Datagrams to send before the run.
    pub prime: Vec<Prime>,
}

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not JSON of the scenario's shape.
    #[error("scenario is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// No streams.
    #[error("scenario has no streams")]
    NoStreams,
    /// An address that is not `IP:PORT`.
    #[error("stream {stream}: {field} {value:?} is not IP:PORT")]
    BadAddress {
        /// Stream index (or prime index for `prime.*` fields).
        stream: usize,
        /// Field name.
        field: &'static str,
        /// The text.
        value: String,
    },
    /// A local address with port 0: the system under test could not be told where to send.
    #[error("stream {stream}: {field} needs an explicit port")]
    ZeroPort {
        /// Stream index.
        stream: usize,
        /// Field name.
        field: &'static str,
    },
    /// A crypto attribute edgeway-srtp refuses.
    #[error("stream {stream}: {field}: {source}")]
    Crypto {
        /// Stream index.
        stream: usize,
        /// Field name.
        field: &'static str,
        /// Why.
        source: SdesError,
    },
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text)
    }

    /// Parses and validates scenario JSON.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let file: ScenarioFile = serde_json::from_str(text)?;
        Scenario::from_file(&file)
    }

    /// Validates a parsed file.
    pub fn from_file(file: &ScenarioFile) -> Result<Scenario, ScenarioError> {
        if file.streams.is_empty() {
            return Err(ScenarioError::NoStreams);
        }
        let streams = file
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(Stream {
                    tx_local: local_addr(i, "tx_local", &s.tx_local)?,
                    tx_to: addr(i, "tx_to", &s.tx_to)?,
                    tx_crypto: crypto(i, "tx_crypto", s.tx_crypto.as_deref())?,
                    rx_local: local_addr(i, "rx_local", &s.rx_local)?,
                    rx_crypto: crypto(i, "rx_crypto", s.rx_crypto.as_deref())?,
                })
            })
            .collect::<Result<Vec<_>, ScenarioError>>()?;
        let prime = file
            .prime
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(Prime {
                    from: local_addr(i, "prime.from", &p.from)?,
                    to: addr(i, "prime.to", &p.to)?,
                })
            })
            .collect::<Result<Vec<_>, ScenarioError>>()?;
        Ok(Scenario { streams, prime })
    }
}

fn addr(stream: usize, field: &'static str, value: &str) -> Result<SocketAddr, ScenarioError> {
    value.trim().parse().map_err(|_| ScenarioError::BadAddress {
        stream,
        field,
        value: value.to_owned(),
    })
}

fn local_addr(
    stream: usize,
    field: &'static str,
    value: &str,
) -> Result<SocketAddr, ScenarioError> {
    let a = addr(stream, field, value)?;
    if a.port() == 0 {
        return Err(ScenarioError::ZeroPort { stream, field });
    }
    Ok(a)
}

/// Parses any accepted form of a crypto attribute.
pub fn parse_crypto(text: &str) -> Result<CryptoAttribute, SdesError> {
    let t = text.trim();
    let t = t.strip_prefix("a=").unwrap_or(t);
    let t = t.strip_prefix("crypto:").unwrap_or(t);
    let first = t.split_ascii_whitespace().next().unwrap_or("");
    if !first.is_empty() && !first.bytes().all(|b| b.is_ascii_digit()) {
        format!("1 {t}").parse()
    } else {
        t.parse()
    }
}

fn crypto(
    stream: usize,
    field: &'static str,
    value: Option<&str>,
) -> Result<Option<CryptoAttribute>, ScenarioError> {
    value
        .map(|v| {
            parse_crypto(v).map_err(|source| ScenarioError::Crypto {
                stream,
                field,
                source,
            })
        })
        .transpose()
}
