//! SDP offer/answer for the simulated inside phones (RFC 3264, RFC 4568 SDES).
//!
//! A phone offers or answers one G.711 audio stream: `RTP/SAVP` with a fresh `a=crypto`
//! key when its user's phone security profile is secure, `RTP/AVP` otherwise. An offer the
//! phone cannot honour is refused with a [`SdpRefusal`]: the SIP layer turns it into
//! `488 Not Acceptable Here` with a `Warning` naming the problem (RFC 3261 §20.43 codes).
//!
//! Keys follow SDES: each side's `a=crypto` is the key it *sends* with, so a phone's
//! receive context is built from the peer's attribute and its send context from its own.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use edgeway_sip::sdp::SessionDescription;
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::SrtpProfile;
use rand::{CryptoRng, RngCore};

use crate::users::SecurityProfile;

/// Largest SDP body a phone reads; larger offers are refused (one audio stream needs < 1 KiB).
pub const MAX_SDP_BODY: usize = 8 * 1024;

/// The suite the phones generate, and prefer when an offer lists several.
pub const PREFERRED_SUITE: SrtpProfile = SrtpProfile::AesCm128HmacSha1_80;

/// Why an offer or answer was refused: a RFC 3261 warn-code and the text for `Warning`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpRefusal {
    /// 301 address, 302 transport, 304 media type, 305 format, 306 attribute, 399 other.
    pub warn_code: u16,
    /// What is wrong, for the operator.
    pub text: String,
}

impl SdpRefusal {
    fn new(warn_code: u16, text: impl Into<String>) -> Self {
        SdpRefusal {
            warn_code,
            text: text.into(),
        }
    }

    /// The `Warning` header value (`399 ucm-sim "..."`), quotes and controls replaced.
    pub fn warning(&self) -> String {
        let text: String = self
            .text
            .chars()
            .map(|c| if c == '"' || c.is_control() { '\'' } else { c })
            .take(200)
            .collect();
        format!("{} ucm-sim \"{text}\"", self.warn_code)
    }
}

impl std::fmt::Display for SdpRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.warn_code, self.text)
    }
}

/// The SDP direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Both ways.
    Sendrecv,
    /// This side only sends.
    Sendonly,
    /// This side only receives.
    Recvonly,
    /// Neither.
    Inactive,
}

impl Direction {
    fn from_attr(name: &str) -> Option<Direction> {
        Some(match name {
            "sendrecv" => Direction::Sendrecv,
            "sendonly" => Direction::Sendonly,
            "recvonly" => Direction::Recvonly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// The answer's direction for an offer's (RFC 3264 §6.1).
    pub fn answering(self) -> Direction {
        match self {
            Direction::Sendonly => Direction::Recvonly,
            Direction::Recvonly => Direction::Sendonly,
            other => other,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Sendrecv => "sendrecv",
            Direction::Sendonly => "sendonly",
            Direction::Recvonly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// `true` when this side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::Sendrecv | Direction::Sendonly)
    }
}

/// What a phone does with media once offer and answer are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPlan {
    /// Where the peer receives RTP.
    pub remote: SocketAddr,
    /// This side's direction.
    pub direction: Direction,
    /// The RTP payload type to send (0 PCMU or 8 PCMA).
    pub payload_type: u8,
    /// The key this side sends with (its own `a=crypto`); `None` for RTP.
    pub tx_crypto: Option<CryptoAttribute>,
    /// The key the peer sends with (its `a=crypto`); `None` for RTP.
    pub rx_crypto: Option<CryptoAttribute>,
}

/// The offer a phone makes, and the key it offered (needed to read the answer).
#[derive(Debug, Clone)]
pub struct Offer {
    /// The SDP body.
    pub body: Vec<u8>,
    /// The offered key (secure profile only).
    pub crypto: Option<CryptoAttribute>,
}

/// A phone's SDP: one audio stream at `local`, PCMU and PCMA.
fn phone_sdp(
    local: SocketAddr,
    version: u64,
    proto: &str,
    formats: &str,
    crypto: Option<&CryptoAttribute>,
    direction: Direction,
) -> Vec<u8> {
    let (ip, port) = (local.ip(), local.port());
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = format!(
        "v=0\r\no=ucm-sim {port} {version} IN {family} {ip}\r\ns=ucm-sim\r\nc=IN {family} {ip}\r\n\
         t=0 0\r\nm=audio {port} {proto} {formats}\r\n"
    );
    for pt in formats.split(' ') {
        let name = if pt == "8" { "PCMA" } else { "PCMU" };
        let _ = write!(s, "a=rtpmap:{pt} {name}/8000\r\n");
    }
    if let Some(c) = crypto {
        let _ = write!(s, "a=crypto:{c}\r\n");
    }
    let _ = write!(s, "a=ptime:20\r\na={}\r\n", direction.as_str());
    s.into_bytes()
}

fn proto_for(profile: SecurityProfile) -> &'static str {
    match profile {
        SecurityProfile::Secure => "RTP/SAVP",
        SecurityProfile::NonSecure => "RTP/AVP",
    }
}

/// A phone's initial offer at `local`: a fresh key for a secure profile.
pub fn make_offer<R: RngCore + CryptoRng>(
    profile: SecurityProfile,
    local: SocketAddr,
    rng: &mut R,
) -> Offer {
    let crypto = (profile == SecurityProfile::Secure)
        .then(|| CryptoAttribute::generate(1, PREFERRED_SUITE, rng));
    Offer {
        body: phone_sdp(
            local,
            1,
            proto_for(profile),
            "0 8",
            crypto.as_ref(),
            Direction::Sendrecv,
        ),
        crypto,
    }
}

/// The audio stream of a received offer or answer, checked.
struct Stream {
    remote: SocketAddr,
    direction: Direction,
    payload_type: u8,
    crypto: Vec<String>,
}

/// Reads and checks the first active audio stream of `body` for a phone with `profile`.
fn read_stream(body: &[u8], profile: SecurityProfile) -> Result<Stream, SdpRefusal> {
    if body.len() > MAX_SDP_BODY {
        return Err(SdpRefusal::new(
            399,
            format!(
                "SDP body of {} bytes is over the {MAX_SDP_BODY}-byte limit",
                body.len()
            ),
        ));
    }
    if body.is_empty() {
        return Err(SdpRefusal::new(399, "no SDP body"));
    }
    let sdp = SessionDescription::parse(body)
        .map_err(|e| SdpRefusal::new(399, format!("SDP does not parse: {e}")))?;
    let Some(index) = sdp
        .media()
        .iter()
        .position(|m| m.media == "audio" && m.port != 0)
    else {
        return Err(SdpRefusal::new(304, "no active audio stream (m=audio)"));
    };
    let m = &sdp.media()[index];
    let expected = proto_for(profile);
    if !m.proto.eq_ignore_ascii_case(expected) {
        let why = match profile {
            SecurityProfile::Secure => "encrypted phone security profile needs SRTP",
            SecurityProfile::NonSecure => "non-secure phone security profile takes RTP only",
        };
        return Err(SdpRefusal::new(
            302,
            format!("{} refused: {why} ({expected})", m.proto),
        ));
    }
    let payload_type = m
        .formats
        .iter()
        .find_map(|f| match f.as_str() {
            "0" => Some(0),
            "8" => Some(8),
            _ => None,
        })
        .ok_or_else(|| {
            SdpRefusal::new(
                305,
                format!("no G.711 format (0 or 8) in {:?}", m.formats.join(" ")),
            )
        })?;
    let (conn, port) = sdp
        .media_address(index)
        .map_err(|e| SdpRefusal::new(399, e.to_string()))?;
    let conn = conn.ok_or_else(|| SdpRefusal::new(301, "no c= line for the audio stream"))?;
    let ip = conn.ip().ok_or_else(|| {
        SdpRefusal::new(
            301,
            format!("connection address {:?} is not an IP address", conn.address),
        )
    })?;
    if !usable_unicast(ip) {
        return Err(SdpRefusal::new(
            301,
            format!("connection address {ip} cannot receive unicast media"),
        ));
    }
    if port < 1024 {
        return Err(SdpRefusal::new(
            399,
            format!("media port {port} is reserved (below 1024)"),
        ));
    }
    let direction = m
        .attributes()
        .find_map(|(n, _)| Direction::from_attr(n))
        .or_else(|| {
            sdp.session_lines()
                .iter()
                .filter(|l| l.kind == 'a')
                .find_map(|l| Direction::from_attr(&l.value))
        })
        .unwrap_or(Direction::Sendrecv);
    let crypto = m
        .attributes()
        .filter(|(n, _)| *n == "crypto")
        .filter_map(|(_, v)| v.map(str::to_owned))
        .collect();
    Ok(Stream {
        remote: SocketAddr::new(ip, port),
        direction,
        payload_type,
        crypto,
    })
}

fn usable_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// The offered key a phone accepts: AES_CM_128_HMAC_SHA1_80 when offered, else the first
/// supported line. With none, the refusal names the first line's problem.
fn choose_crypto(lines: &[String]) -> Result<CryptoAttribute, SdpRefusal> {
    if lines.is_empty() {
        return Err(SdpRefusal::new(
            306,
            "no a=crypto line: SDES keys are required for SRTP",
        ));
    }
    let mut first_error = None;
    let mut accepted = Vec::new();
    for line in lines {
        match line.parse::<CryptoAttribute>() {
            Ok(a) => accepted.push(a),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(i) = accepted.iter().position(|a| a.profile == PREFERRED_SUITE) {
        return Ok(accepted.swap_remove(i));
    }
    if !accepted.is_empty() {
        return Ok(accepted.swap_remove(0));
    }
    let e = first_error.map_or_else(String::new, |e| e.to_string());
    Err(SdpRefusal::new(306, format!("no usable a=crypto: {e}")))
}

/// A phone's answer to `offer` at `local`. `own_key` is the key this phone already sends
/// with in the call (a re-INVITE keeps it when the suite is unchanged).
pub fn answer<R: RngCore + CryptoRng>(
    offer: &[u8],
    profile: SecurityProfile,
    local: SocketAddr,
    version: u64,
    own_key: Option<&CryptoAttribute>,
    rng: &mut R,
) -> Result<(Vec<u8>, MediaPlan), SdpRefusal> {
    let stream = read_stream(offer, profile)?;
    let (rx, tx) = match profile {
        SecurityProfile::NonSecure => (None, None),
        SecurityProfile::Secure => {
            let theirs = choose_crypto(&stream.crypto)?;
            let mut ours = match own_key {
                Some(k) if k.profile == theirs.profile => k.clone(),
                _ => CryptoAttribute::generate(theirs.tag, theirs.profile, rng),
            };
            ours.tag = theirs.tag;
            (Some(theirs), Some(ours))
        }
    };
    let direction = stream.direction.answering();
    let body = phone_sdp(
        local,
        version,
        proto_for(profile),
        &stream.payload_type.to_string(),
        tx.as_ref(),
        direction,
    );
    Ok((
        body,
        MediaPlan {
            remote: stream.remote,
            direction,
            payload_type: stream.payload_type,
            tx_crypto: tx,
            rx_crypto: rx,
        },
    ))
}

/// Reads the answer to a phone's `offer`: the answer must accept the offered suite.
pub fn read_answer(
    answer: &[u8],
    profile: SecurityProfile,
    offer: &Offer,
) -> Result<MediaPlan, SdpRefusal> {
    let stream = read_stream(answer, profile)?;
    let rx = match &offer.crypto {
        None => None,
        Some(ours) => {
            let theirs = choose_crypto(&stream.crypto)?;
            if theirs.profile != ours.profile || theirs.tag != ours.tag {
                return Err(SdpRefusal::new(
                    306,
                    format!(
                        "answer's a=crypto {} {} does not answer the offered {} {}",
                        theirs.tag, theirs.profile, ours.tag, ours.profile
                    ),
                ));
            }
            Some(theirs)
        }
    };
    Ok(MediaPlan {
        remote: stream.remote,
        direction: stream.direction.answering(),
        payload_type: stream.payload_type,
        tx_crypto: offer.crypto.clone(),
        rx_crypto: rx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn offer_text(proto: &str, extra: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio 40000 {proto} 0 101\r\n{extra}"
        )
    }

    #[test]
    fn secure_offer_and_answer_exchange_keys_both_ways() {
        let mut rng = rand::thread_rng();
        let offer = make_offer(SecurityProfile::Secure, local(41000), &mut rng);
        let (body, answer_plan) = answer(
            &offer.body,
            SecurityProfile::Secure,
            local(42000),
            1,
            None,
            &mut rng,
        )
        .expect("own offer is acceptable");
        let text = String::from_utf8(body.clone()).expect("utf8");
        assert!(text.contains("m=audio 42000 RTP/SAVP 0\r\n"), "{text}");
        assert!(
            text.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{text}"
        );
        let offer_plan =
            read_answer(&body, SecurityProfile::Secure, &offer).expect("answer accepted");
        assert_eq!(answer_plan.remote, local(41000));
        assert_eq!(offer_plan.remote, local(42000));
        // Each side decrypts with the other's sending key.
        assert_eq!(answer_plan.rx_crypto, offer_plan.tx_crypto);
        assert_eq!(offer_plan.rx_crypto, answer_plan.tx_crypto);
        assert_ne!(answer_plan.tx_crypto, answer_plan.rx_crypto);
    }

    #[test]
    fn hold_is_answered_recvonly_and_the_key_is_kept() {
        let mut rng = rand::thread_rng();
        let key = CryptoAttribute::generate(1, PREFERRED_SUITE, &mut rng);
        let hold = offer_text("RTP/SAVP", &format!("a=crypto:{key}\r\na=sendonly\r\n"));
        let own = CryptoAttribute::generate(1, PREFERRED_SUITE, &mut rng);
        let (body, plan) = answer(
            hold.as_bytes(),
            SecurityProfile::Secure,
            local(42000),
            2,
            Some(&own),
            &mut rng,
        )
        .expect("hold accepted");
        assert!(String::from_utf8_lossy(&body).contains("a=recvonly\r\n"));
        assert_eq!(plan.direction, Direction::Recvonly);
        assert!(!plan.direction.sends());
        assert_eq!(plan.tx_crypto.as_ref(), Some(&own));
    }

    #[test]
    fn bad_offers_are_refused_with_the_problem_named() {
        let mut rng = rand::thread_rng();
        let key = CryptoAttribute::generate(1, PREFERRED_SUITE, &mut rng);
        let cases: Vec<(String, SecurityProfile, u16, &str)> = vec![
            (
                offer_text("RTP/SAVP", ""),
                SecurityProfile::Secure,
                306,
                "no a=crypto",
            ),
            (
                offer_text(
                    "RTP/SAVP",
                    "a=crypto:1 NULL_CIPHER inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n",
                ),
                SecurityProfile::Secure,
                306,
                "NULL_CIPHER",
            ),
            (
                offer_text("RTP/AVP", ""),
                SecurityProfile::Secure,
                302,
                "needs SRTP",
            ),
            (
                offer_text("RTP/SAVP", &format!("a=crypto:{key}\r\n")),
                SecurityProfile::NonSecure,
                302,
                "RTP only",
            ),
            (
                offer_text("RTP/AVP", "").replace("40000", "70000"),
                SecurityProfile::NonSecure,
                399,
                "bad port",
            ),
            (
                offer_text("RTP/AVP", "").replace("40000", "80"),
                SecurityProfile::NonSecure,
                399,
                "port 80",
            ),
            (
                offer_text("RTP/AVP", "").replace("c=IN IP4 127.0.0.1", "c=IN IP4 224.0.0.1"),
                SecurityProfile::NonSecure,
                301,
                "224.0.0.1",
            ),
            (
                offer_text("RTP/AVP", "").replace("c=IN IP4 127.0.0.1", "c=IN IP4 phone.invalid"),
                SecurityProfile::NonSecure,
                301,
                "not an IP",
            ),
            (
                offer_text("RTP/AVP", "").replace(" 0 101", " 18"),
                SecurityProfile::NonSecure,
                305,
                "G.711",
            ),
            (
                format!(
                    "{}{}",
                    offer_text("RTP/AVP", ""),
                    "a=x-pad:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n".repeat(300)
                ),
                SecurityProfile::NonSecure,
                399,
                "over the 8192-byte limit",
            ),
            (
                "hello".to_owned(),
                SecurityProfile::NonSecure,
                399,
                "does not parse",
            ),
        ];
        for (sdp, profile, code, needle) in cases {
            let err = answer(sdp.as_bytes(), profile, local(42000), 1, None, &mut rng)
                .expect_err("refused");
            assert_eq!(err.warn_code, code, "{err} for {sdp:.200}");
            assert!(err.text.contains(needle), "{err} lacks {needle:?}");
            assert!(err.warning().starts_with(&format!("{code} ucm-sim \"")));
        }
    }
}
