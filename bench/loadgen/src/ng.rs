//! A minimal client for rtpengine's ng control protocol (a cookie, a space and a bencoded
//! dictionary over UDP) that sets up SDES-SRTP calls rtpengine must re-encrypt, and turns
//! them into a [`ScenarioFile`].
//!
//! Per call, side A offers RTP/SAVP with a fresh `AES_CM_128_HMAC_SHA1_80` key, and side B
//! answers with its own fresh key of a *different* suite (by default
//! `AES_CM_128_HMAC_SHA1_32`, the same AES-128 + HMAC-SHA1 work with a shorter tag).
//! rtpengine copies the offerer's crypto lines into the offer it passes on; if B accepted
//! the offerer's own suite, rtpengine would forward A's ciphertext untouched (its "SRTP
//! passthrough"). With a different suite it must decrypt with A's key and encrypt with a
//! key it generated for B, in both directions. Each stream's `rx_crypto` is the key
//! rtpengine wrote into the SDP it returned for the receiving side; [`setup_calls`] refuses
//! a call where that key equals the sender's.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::SrtpProfile;
use rand_core::{CryptoRng, RngCore};

use crate::bencode::{BencodeError, Value};
use crate::scenario::{ScenarioFile, StreamSpec};

/// Why an ng exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NgError {
    /// Socket error.
    #[error("ng socket: {0}")]
    Io(#[from] std::io::Error),
    /// No reply after all retransmissions.
    #[error("no reply from rtpengine at {0} (is it running with --listen-ng?)")]
    Timeout(SocketAddr),
    /// The reply is not `cookie SP bencode`.
    #[error("reply is not an ng message")]
    Framing,
    /// The reply's dictionary does not decode.
    #[error("reply does not decode: {0}")]
    Bencode(#[from] BencodeError),
    /// `result` is `error` (with rtpengine's reason) or missing.
    #[error("rtpengine refused {command}: {reason}")]
    Refused {
        /// The command sent.
        command: String,
        /// `error-reason` from the reply.
        reason: String,
    },
    /// The reply lacks an SDP, or the SDP lacks what a media relay must put in it.
    #[error("rewritten SDP unusable: {0}")]
    Sdp(String),
    /// rtpengine handed a receiver the sender's own key: it would pass ciphertext through.
    #[error("call {call}: rtpengine gave the receiver the sender's key (SRTP passthrough)")]
    Passthrough {
        /// Call index.
        call: usize,
    },
}

/// Splits an ng message into its cookie and decoded dictionary.
pub fn parse_message(msg: &[u8]) -> Result<(&[u8], Value), NgError> {
    let sp = msg
        .iter()
        .position(|&b| b == b' ')
        .ok_or(NgError::Framing)?;
    let (cookie, rest) = (&msg[..sp], &msg[sp + 1..]);
    if cookie.is_empty() {
        return Err(NgError::Framing);
    }
    let v = Value::decode(rest)?;
    if !matches!(v, Value::Dict(_)) {
        return Err(NgError::Framing);
    }
    Ok((cookie, v))
}

/// Checks `result` of a reply dictionary.
pub fn check_result(command: &str, reply: &Value) -> Result<(), NgError> {
    match reply.get("result").and_then(Value::as_str) {
        Some("ok") | Some("pong") => Ok(()),
        other => Err(NgError::Refused {
            command: command.to_owned(),
            reason: reply
                .get("error-reason")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("result {other:?}")),
        }),
    }
}

/// An ng client on UDP.
#[derive(Debug)]
pub struct NgClient {
    sock: UdpSocket,
    server: SocketAddr,
    next_cookie: u64,
    prefix: String,
}

impl NgClient {
    /// A client for the ng listener at `server`.
    pub fn new(server: SocketAddr) -> Result<NgClient, NgError> {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(|_| NgError::Framing)?;
        let sock = UdpSocket::bind(bind)?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(NgClient {
            sock,
            server,
            next_cookie: 1,
            prefix: format!("lg{}", std::process::id()),
        })
    }

    /// Sends `request` (a dictionary with `command`) and returns the reply dictionary,
    /// retransmitting with the same cookie (rtpengine deduplicates by cookie).
    pub fn request(&mut self, request: &Value) -> Result<Value, NgError> {
        let command = request
            .get("command")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let cookie = format!("{}_{}", self.prefix, self.next_cookie);
        self.next_cookie += 1;
        let mut msg = cookie.as_bytes().to_vec();
        msg.push(b' ');
        request.encode_into(&mut msg);
        let mut buf = vec![0u8; 65536];
        for _attempt in 0..6 {
            self.sock.send_to(&msg, self.server)?;
            loop {
                match self.sock.recv_from(&mut buf) {
                    Ok((n, from)) if from == self.server => {
                        let (c, reply) = parse_message(&buf[..n])?;
                        if c != cookie.as_bytes() {
                            continue; // a late reply to an earlier retransmission
                        }
                        check_result(&command, &reply)?;
                        return Ok(reply);
                    }
                    Ok(_) => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(NgError::Timeout(self.server))
    }
}

/// The parts of an SDP audio section a relay test needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpAudio {
    /// Connection address (media-level `c=` over session-level).
    pub addr: IpAddr,
    /// `m=audio` port.
    pub port: u16,
    /// `a=crypto` attribute values, in order.
    pub crypto: Vec<String>,
}

impl SdpAudio {
    /// Where to send media.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// The crypto line with suite `profile`.
    pub fn crypto_for(&self, profile: SrtpProfile) -> Option<CryptoAttribute> {
        self.crypto
            .iter()
            .filter_map(|c| c.parse::<CryptoAttribute>().ok())
            .find(|c| c.profile == profile)
    }
}

/// Parses the first `m=audio` section of an SDP.
pub fn parse_sdp(sdp: &str) -> Result<SdpAudio, NgError> {
    let mut session_c: Option<IpAddr> = None;
    let mut media_c: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    let mut crypto = Vec::new();
    let mut in_audio = false;
    let mut seen_audio = false;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            if seen_audio {
                break;
            }
            in_audio = m.starts_with("audio ");
            if in_audio {
                seen_audio = true;
                port = m
                    .split_ascii_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse().ok());
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let ip = c
                .split_ascii_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse().ok());
            if in_audio {
                media_c = ip;
            } else if !seen_audio {
                session_c = ip;
            }
        } else if let Some(a) = line.strip_prefix("a=crypto:") {
            if in_audio {
                crypto.push(a.to_owned());
            }
        }
    }
    let port = port.ok_or_else(|| NgError::Sdp("no m=audio port".into()))?;
    let addr = media_c
        .or(session_c)
        .ok_or_else(|| NgError::Sdp("no c= address".into()))?;
    Ok(SdpAudio { addr, port, crypto })
}

/// An SDP with one PCMU audio stream on RTP/SAVP.
pub fn offer_sdp(session: u64, addr: SocketAddr, crypto: &CryptoAttribute) -> String {
    let ipv = if addr.is_ipv4() { "IP4" } else { "IP6" };
    let ip = addr.ip();
    format!(
        "v=0\r\no=- {session} 1 IN {ipv} {ip}\r\ns=edgeway-loadgen\r\nc=IN {ipv} {ip}\r\n\
         t=0 0\r\nm=audio {} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n\
         a=sendrecv\r\na=crypto:{crypto}\r\n",
        addr.port()
    )
}

/// How to set up calls.
#[derive(Debug, Clone)]
pub struct CallSetup {
    /// Number of calls (two streams each).
    pub calls: usize,
    /// Local IP of the simulated endpoints.
    pub local_ip: IpAddr,
    /// First local port.
    pub port_base: u16,
    /// Distinct local ports per side; 0: one per call side (2 x calls ports). Shared ports
    /// let the generator batch receives (the relay is unaffected: its ports stay per call).
    pub ports_per_side: usize,
    /// Suite side A offers.
    pub a_suite: SrtpProfile,
    /// Suite side B answers with; must differ from `a_suite` or rtpengine passes through.
    pub b_suite: SrtpProfile,
    /// Call-ID prefix.
    pub call_prefix: String,
}

impl CallSetup {
    fn side_addr(&self, call: usize, side: usize) -> Result<SocketAddr, NgError> {
        crate::scenario::endpoint_addr(
            self.local_ip,
            self.port_base,
            self.ports_per_side,
            self.calls,
            call,
            side,
        )
        .ok_or_else(|| NgError::Sdp("local ports run past 65535".into()))
    }
}

/// The ng dictionary common to offer and answer.
fn call_request(command: &str, call_id: &str, sdp: String, to_tag: Option<&str>) -> Value {
    let mut pairs = vec![
        ("command", Value::str(command)),
        ("call-id", Value::str(call_id)),
        ("from-tag", Value::str("a")),
        ("sdp", Value::Bytes(sdp.into_bytes())),
        ("transport protocol", Value::str("RTP/SAVP")),
        ("ICE", Value::str("remove")),
        ("DTLS", Value::str("off")),
        (
            "replace",
            Value::str_list(&["origin", "session-connection"]),
        ),
    ];
    if let Some(t) = to_tag {
        pairs.push(("to-tag", Value::str(t)));
    }
    Value::dict(pairs)
}

/// Sets up `setup.calls` calls and returns their streams (A->B then B->A per call).
pub fn setup_calls<R: RngCore + CryptoRng>(
    client: &mut NgClient,
    setup: &CallSetup,
    rng: &mut R,
) -> Result<ScenarioFile, NgError> {
    if setup.a_suite == setup.b_suite {
        return Err(NgError::Sdp(
            "side B must answer with a suite other than A's, or rtpengine passes SRTP through"
                .into(),
        ));
    }
    let mut file = ScenarioFile::default();
    for call in 0..setup.calls {
        let call_id = format!("{}-{call}", setup.call_prefix);
        let a = setup.side_addr(call, 0)?;
        let b = setup.side_addr(call, 1)?;
        let a_key = CryptoAttribute::generate(1, setup.a_suite, rng);
        let offer = client.request(&call_request(
            "offer",
            &call_id,
            offer_sdp(rng.next_u64() >> 1, a, &a_key),
            None,
        ))?;
        let to_b = parse_sdp(reply_sdp(&offer)?)?;
        // B accepts rtpengine's line of B's suite: its key is what rtpengine sends B with.
        let b_rx = to_b.crypto_for(setup.b_suite).ok_or_else(|| {
            NgError::Sdp(format!(
                "offer to B carries no {} line",
                setup.b_suite.sdes_name()
            ))
        })?;
        let mut b_key = CryptoAttribute::generate(b_rx.tag, setup.b_suite, rng);
        b_key.tag = b_rx.tag;
        let answer = client.request(&call_request(
            "answer",
            &call_id,
            offer_sdp(rng.next_u64() >> 1, b, &b_key),
            Some("b"),
        ))?;
        let to_a = parse_sdp(reply_sdp(&answer)?)?;
        let a_rx = to_a.crypto_for(setup.a_suite).ok_or_else(|| {
            NgError::Sdp(format!(
                "answer to A carries no {} line",
                setup.a_suite.sdes_name()
            ))
        })?;
        if same_key(&a_rx, &b_key) || same_key(&b_rx, &a_key) {
            return Err(NgError::Passthrough { call });
        }
        file.streams.push(StreamSpec {
            tx_local: a.to_string(),
            tx_to: to_a.socket_addr().to_string(),
            tx_crypto: Some(a_key.to_string()),
            rx_local: b.to_string(),
            rx_crypto: Some(b_rx.to_string()),
        });
        file.streams.push(StreamSpec {
            tx_local: b.to_string(),
            tx_to: to_b.socket_addr().to_string(),
            tx_crypto: Some(b_key.to_string()),
            rx_local: a.to_string(),
            rx_crypto: Some(a_rx.to_string()),
        });
    }
    Ok(file)
}

fn reply_sdp(reply: &Value) -> Result<&str, NgError> {
    reply
        .get("sdp")
        .and_then(Value::as_str)
        .ok_or_else(|| NgError::Sdp("reply has no sdp".into()))
}

fn same_key(x: &CryptoAttribute, y: &CryptoAttribute) -> bool {
    x.keys[0].key.key() == y.keys[0].key.key() && x.keys[0].key.salt() == y.keys[0].key.salt()
}
