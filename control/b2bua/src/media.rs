//! What the planner reads from an SDP body and how it rewrites one: per `m=` line, whether
//! it is relayed, where its RTP and RTCP go, its direction and its `a=crypto` lines; and the
//! checks every body passes before anything is allocated.

use std::net::{IpAddr, Ipv4Addr};

use edgeway_sip::sdp::{CryptoAttribute as SdpCrypto, SessionDescription};
use edgeway_srtp::sdes::{CryptoAttribute, SdesError};
use edgeway_srtp::SrtpProfile;

use crate::error::truncated;
use crate::{Leg, Limits, PlanError};

/// Where one side receives a stream: RTP at `ip:rtp`, RTCP at `ip:rtcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// IPv4 unicast address.
    pub ip: Ipv4Addr,
    /// RTP port (even).
    pub rtp: u16,
    /// RTCP port (`a=rtcp`, else `rtp + 1`).
    pub rtcp: u16,
}

/// One `m=` line as the planner sees it.
#[derive(Debug, Clone)]
pub(crate) struct MediaLine {
    /// RTP with a non-zero port: relayed. Otherwise rejected or passed with port 0.
    pub(crate) relayed: bool,
    /// `RTP/AVP`, `RTP/SAVP`, ...
    pub(crate) proto: String,
    /// Where the sender of the SDP receives; `None` on hold (`c=0.0.0.0`).
    pub(crate) remote: Option<Remote>,
    /// Whether the sender of the SDP will send (sendrecv/sendonly, address not 0.0.0.0).
    pub(crate) sends: bool,
    /// Whether the sender of the SDP will receive (sendrecv/recvonly, address not 0.0.0.0).
    pub(crate) receives: bool,
    /// The `a=crypto` values, in order.
    pub(crate) crypto: Vec<String>,
    /// RTP clock rate of the first format (a=rtpmap, static types), 0 when unknown.
    pub(crate) clock_rate: u32,
}

impl MediaLine {
    /// Whether the transport is SRTP (`RTP/SAVP`, `RTP/SAVPF`).
    pub(crate) fn is_secure_proto(&self) -> bool {
        self.proto.starts_with("RTP/SAVP")
    }
}

/// Parses and checks `body`: size, syntax, `m=` count, ports, addresses. Returns the parsed
/// description (to rewrite) and its lines.
pub(crate) fn inspect(
    body: &[u8],
    limits: &Limits,
) -> Result<(SessionDescription, Vec<MediaLine>), PlanError> {
    if body.len() > limits.max_body {
        return Err(PlanError::BodyTooLarge {
            len: body.len(),
            limit: limits.max_body,
        });
    }
    let sdp = SessionDescription::parse(body)?;
    let count = sdp.media().len();
    if count > limits.max_media {
        return Err(PlanError::TooManyMedia {
            count,
            limit: limits.max_media,
        });
    }
    let session_dir = direction(
        sdp.session_lines()
            .iter()
            .filter(|l| l.kind == 'a')
            .map(|l| l.value.as_str()),
    );
    let mut lines = Vec::with_capacity(count);
    for (index, m) in sdp.media().iter().enumerate() {
        let proto = m.proto.clone();
        let crypto: Vec<String> = m
            .attributes()
            .filter(|(n, _)| *n == "crypto")
            .map(|(_, v)| v.unwrap_or_default().to_owned())
            .collect();
        let relayed = m.port != 0 && proto.starts_with("RTP/");
        if !relayed {
            lines.push(MediaLine {
                relayed,
                proto,
                remote: None,
                sends: false,
                receives: false,
                crypto,
                clock_rate: 0,
            });
            continue;
        }
        if m.port & 1 == 1 {
            return Err(PlanError::OddRtpPort {
                index,
                port: m.port,
            });
        }
        if let Some(count) = m.port_count.filter(|c| *c != 1) {
            return Err(PlanError::PortCount { index, count });
        }
        let (conn, port) = sdp.media_address(index)?;
        let conn = conn.ok_or(PlanError::NoConnection { index })?;
        let ip = conn.ip();
        let address = match ip {
            Some(IpAddr::V4(v4)) if conn.addr_type == "IP4" && conn.net_type == "IN" => v4,
            _ => return Err(PlanError::bad_address(index, ip, &conn.address)),
        };
        if address.is_multicast() || address.is_broadcast() {
            return Err(PlanError::bad_address(index, ip, &conn.address));
        }
        let rtcp = match m.attributes().find(|(n, _)| *n == "rtcp") {
            Some((_, v)) => {
                let v = v.unwrap_or_default();
                let port = v.split(' ').next().unwrap_or_default();
                match port.parse::<u16>() {
                    Ok(p) if p != 0 => p,
                    _ => {
                        return Err(PlanError::BadRtcp {
                            index,
                            value: truncated(v),
                        })
                    }
                }
            }
            None => port.saturating_add(1),
        };
        let dir =
            direction(m.attributes().filter_map(|(n, v)| v.is_none().then_some(n))).or(session_dir);
        let hold = address.is_unspecified();
        lines.push(MediaLine {
            relayed,
            proto,
            remote: (!hold).then_some(Remote {
                ip: address,
                rtp: port,
                rtcp,
            }),
            sends: !hold && matches!(dir, None | Some("sendrecv") | Some("sendonly")),
            receives: !hold && matches!(dir, None | Some("sendrecv") | Some("recvonly")),
            crypto,
            clock_rate: clock_rate(m),
        });
    }
    if !lines.iter().any(|l| l.relayed) {
        return Err(PlanError::NoUsableMedia);
    }
    Ok((sdp, lines))
}

/// What each leg's last SDP said about one stream: whether its sender will send and will
/// receive. Until a leg has spoken it counts as sendrecv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Directions {
    /// Sends, receives: the outside leg's.
    outside: (bool, bool),
    /// Sends, receives: the inside leg's.
    inside: (bool, bool),
}

impl Default for Directions {
    fn default() -> Self {
        Directions {
            outside: (true, true),
            inside: (true, true),
        }
    }
}

impl Directions {
    /// Records what `line`, written by `from`, says.
    pub(crate) fn note(&mut self, from: Leg, line: &MediaLine) {
        let side = match from {
            Leg::Outside => &mut self.outside,
            Leg::Inside => &mut self.inside,
        };
        *side = (line.sends, line.receives);
    }

    /// Whether `leg` said it will send.
    pub(crate) fn sends(&self, leg: Leg) -> bool {
        match leg {
            Leg::Outside => self.outside.0,
            Leg::Inside => self.inside.0,
        }
    }

    /// Whether media from `leg` is on hold: `leg` will not send (recvonly, inactive,
    /// 0.0.0.0) or the other leg will not receive (sendonly, inactive, 0.0.0.0). Silence
    /// is then what the SDP asked for, not dead media.
    pub(crate) fn held_from(&self, leg: Leg) -> bool {
        let (from, to) = match leg {
            Leg::Outside => (self.outside, self.inside),
            Leg::Inside => (self.inside, self.outside),
        };
        !from.0 || !to.1
    }

    /// Whether either direction is on hold.
    pub(crate) fn on_hold(&self) -> bool {
        self.held_from(Leg::Outside) || self.held_from(Leg::Inside)
    }

    /// The idle timeout of a call's entries: `configured` for RTP while neither direction
    /// is on hold (a changed timeout replaces the entry, which restarts its idle clock at
    /// resume); 0 (never idle) otherwise:
    /// - on hold in either direction: a one-way hold unwatches the direction that may still
    ///   send too, since many clients hold with `a=sendonly` and send nothing (no music on
    ///   hold of their own); a held call must not end for that, and signalling and session
    ///   timers still end an abandoned one;
    /// - RTCP: many phones send none, and the data plane removes an idle entry, which on the
    ///   core would also stop its pinhole keepalive and so cut the other side's RTCP. The
    ///   call's end removes them.
    pub(crate) fn idle_timeout(&self, rtcp: bool, configured: u32) -> u32 {
        if rtcp || self.on_hold() {
            0
        } else {
            configured
        }
    }
}

fn direction<'a>(mut attrs: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    attrs.find(|a| matches!(*a, "sendrecv" | "sendonly" | "recvonly" | "inactive"))
}

/// The clock rate of the section's first format: its `a=rtpmap`, else the static payload
/// types' (RFC 3551), else 0 (the data plane's default, 8000).
fn clock_rate(m: &edgeway_sip::sdp::MediaSection) -> u32 {
    let Some(first) = m.formats.first() else {
        return 0;
    };
    let mapped = m
        .attributes()
        .filter(|(n, _)| *n == "rtpmap")
        .filter_map(|(_, v)| v?.split_once(' '))
        .find(|(pt, _)| pt == first)
        .and_then(|(_, enc)| enc.split('/').nth(1)?.parse().ok());
    mapped.unwrap_or(match first.as_str() {
        "0" | "3" | "4" | "5" | "8" | "9" | "12" | "15" | "18" => 8000,
        "26" | "31" | "32" | "34" => 90_000,
        _ => 0,
    })
}

/// Chooses the strongest usable `a=crypto` of `line` in `preference` order. Errors name the
/// leg and say whether crypto was missing or only unusable.
pub(crate) fn choose_crypto(
    leg: Leg,
    index: usize,
    line: &MediaLine,
    preference: &[SrtpProfile],
) -> Result<CryptoAttribute, PlanError> {
    if !line.is_secure_proto() || line.crypto.is_empty() {
        return Err(PlanError::MissingCrypto {
            leg,
            index,
            proto: line.proto.clone(),
        });
    }
    let mut refused: Vec<(String, SdesError)> = Vec::new();
    let mut usable: Vec<CryptoAttribute> = Vec::new();
    for value in &line.crypto {
        match usable_crypto(value) {
            Ok(a) if preference.contains(&a.profile) => usable.push(a),
            Ok(a) => refused.push((
                a.profile.sdes_name().to_owned(),
                SdesError::UnknownSuite(a.profile.sdes_name().to_owned()),
            )),
            Err(e) => refused.push((value.split(' ').nth(1).unwrap_or_default().to_owned(), e)),
        }
    }
    usable
        .into_iter()
        .min_by_key(|a| preference.iter().position(|p| *p == a.profile))
        .ok_or_else(|| PlanError::suite_refusal(index, &refused))
}

/// Parses one `a=crypto` value as something a flow entry can hold: one key, encrypted
/// SRTP and SRTCP (the data plane has no place for more).
pub(crate) fn usable_crypto(value: &str) -> Result<CryptoAttribute, SdesError> {
    let a: CryptoAttribute = value.parse()?;
    if a.keys.len() != 1 {
        return Err(SdesError::Unsupported("several master keys".into()));
    }
    if a.params.unencrypted_srtp || a.params.unencrypted_srtcp {
        return Err(SdesError::Unsupported("UNENCRYPTED_SRTP/SRTCP".into()));
    }
    Ok(a)
}

/// Rewrites `m=` line `index` of `sdp` to receive at `ip:port` (RTCP at `port + 1`); `None`
/// keeps the hold address 0.0.0.0.
pub(crate) fn rewrite_address(
    sdp: &mut SessionDescription,
    index: usize,
    ip: Option<Ipv4Addr>,
    port: u16,
) -> Result<(), PlanError> {
    let ip = IpAddr::V4(ip.unwrap_or(Ipv4Addr::UNSPECIFIED));
    sdp.set_media_address(index, ip, port)?;
    let m = &mut sdp.media_mut()[index];
    if m.remove_attribute("rtcp") > 0 {
        m.push_line('a', format!("rtcp:{}", port + 1));
    }
    Ok(())
}

/// Hides the sender's addresses (`o=`, session `c=`) behind ours, keeping a hold address.
pub(crate) fn hide_sender(sdp: &mut SessionDescription, ip: Ipv4Addr) -> Result<(), PlanError> {
    sdp.set_origin_address(IpAddr::V4(ip))?;
    if let Some(c) = sdp.session_connection() {
        if c.ip() != Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)) {
            sdp.set_session_connection(IpAddr::V4(ip));
        }
    }
    Ok(())
}

/// Sets line `index`'s `a=crypto` to `keys` (none: plain RTP) and its protocol to match.
pub(crate) fn set_keys(sdp: &mut SessionDescription, index: usize, keys: &[CryptoAttribute]) {
    let m = &mut sdp.media_mut()[index];
    let lines: Vec<SdpCrypto> = keys
        .iter()
        .filter_map(|k| SdpCrypto::parse(&k.to_string()).ok())
        .collect();
    m.set_crypto(&lines);
    let feedback = m.proto.ends_with('F');
    m.proto = match (keys.is_empty(), feedback) {
        (true, false) => "RTP/AVP",
        (true, true) => "RTP/AVPF",
        (false, false) => "RTP/SAVP",
        (false, true) => "RTP/SAVPF",
    }
    .to_owned();
}

/// Sets line `index` to port 0 (rejected), dropping its keys.
pub(crate) fn reject(sdp: &mut SessionDescription, index: usize) {
    let m = &mut sdp.media_mut()[index];
    m.port = 0;
    m.set_crypto(&[]);
}
