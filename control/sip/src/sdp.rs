//! Lossless SDP (RFC 8866) with the edits a B2BUA makes: connection address and port of
//! a media section, and its `a=crypto` lines (RFC 4568).
//!
//! Every line is kept in order and written back as received unless it was edited, so
//! attributes this crate does not know (vendor `a=x-...`, BFCP, `a=label`) pass through.
//! `webrtc-sdp` was the first choice but it drops every attribute it does not model —
//! `a=crypto` included — which would strip SDES keys from a re-emitted offer.

use crate::text::parse_decimal;
use std::fmt;
use std::net::IpAddr;
use thiserror::Error;

/// Why an SDP body was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SdpError {
    /// Not UTF-8.
    #[error("SDP is not valid UTF-8")]
    InvalidUtf8,
    /// The body does not start with `v=0`.
    #[error("SDP must start with v=0")]
    NoVersion,
    /// A line is not `<letter>=<value>`.
    #[error("SDP line {line}: {text:?} is not <type>=<value>")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The line (truncated).
        text: String,
    },
    /// An `o=` line is missing or malformed.
    #[error("o=: {0}")]
    BadOrigin(&'static str),
    /// An `m=` line is malformed.
    #[error("m=: {0}")]
    BadMedia(&'static str),
    /// A `c=` line is malformed.
    #[error("c=: {0}")]
    BadConnection(&'static str),
    /// An `a=crypto` line is malformed.
    #[error("a=crypto: {0}")]
    BadCrypto(&'static str),
    /// A media section index out of range.
    #[error("no media section {0}")]
    NoSuchMedia(usize),
}

/// One `<type>=<value>` line other than `m=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpLine {
    /// The type letter.
    pub kind: char,
    /// Everything after `=`.
    pub value: String,
}

/// A connection line's contents (`c=IN IP4 192.0.2.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Network type, `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// Address, possibly with `/ttl[/count]` for multicast.
    pub address: String,
}

impl Connection {
    fn parse(v: &str) -> Result<Connection, SdpError> {
        let mut it = v.split(' ');
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(n), Some(a), Some(addr), None)
                if !n.is_empty() && !a.is_empty() && !addr.is_empty() =>
            {
                Ok(Connection {
                    net_type: n.to_owned(),
                    addr_type: a.to_owned(),
                    address: addr.to_owned(),
                })
            }
            _ => Err(SdpError::BadConnection(
                "expected <nettype> <addrtype> <address>",
            )),
        }
    }

    /// For `IN IP4/IP6` unicast, the address as an [`IpAddr`].
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }

    fn for_ip(ip: IpAddr) -> Connection {
        Connection {
            net_type: "IN".into(),
            addr_type: if ip.is_ipv4() { "IP4" } else { "IP6" }.into(),
            address: ip.to_string(),
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.net_type, self.addr_type, self.address)
    }
}

/// One SDES key parameter: `inline:<key||salt>[|lifetime][|MKI:length]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParam {
    /// Key method, `inline`.
    pub method: String,
    /// Base64 master key and salt.
    pub key_salt: String,
    /// Lifetime as written (`2^31` or a decimal), if any.
    pub lifetime: Option<String>,
    /// MKI value and length, if any.
    pub mki: Option<(u32, u8)>,
}

/// An `a=crypto` attribute (RFC 4568 §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// Tag (1-999999999).
    pub tag: u32,
    /// Crypto suite, e.g. `AES_CM_128_HMAC_SHA1_80`.
    pub suite: String,
    /// Key parameters (usually one).
    pub key_params: Vec<KeyParam>,
    /// Session parameters as written (`UNENCRYPTED_SRTCP`, `KDR=...`).
    pub session_params: Vec<String>,
}

impl CryptoAttribute {
    /// Parses the value after `a=crypto:`.
    pub fn parse(v: &str) -> Result<CryptoAttribute, SdpError> {
        let e = SdpError::BadCrypto;
        let mut words = v.split(' ').filter(|w| !w.is_empty());
        let tag = words.next().ok_or(e("missing tag"))?;
        if tag.len() > 9 {
            return Err(e("tag longer than 9 digits"));
        }
        let tag = u32::try_from(parse_decimal(tag, 999_999_999).map_err(|_| e("bad tag"))?)
            .map_err(|_| e("bad tag"))?;
        let suite = words.next().ok_or(e("missing crypto suite"))?;
        if !suite
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(e("bad crypto suite"));
        }
        let keys = words.next().ok_or(e("missing key parameters"))?;
        let mut key_params = Vec::new();
        for kp in keys.split(';') {
            let (method, info) = kp.split_once(':').ok_or(e("key parameter without ':'"))?;
            let mut parts = info.split('|');
            let key_salt = parts.next().unwrap_or_default();
            if key_salt.is_empty()
                || !key_salt
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            {
                return Err(e("key is not base64"));
            }
            let mut lifetime = None;
            let mut mki = None;
            for p in parts {
                if let Some((value, len)) = p.split_once(':') {
                    if mki.is_some() {
                        return Err(e("two MKI fields"));
                    }
                    let value = parse_decimal(value, u64::from(u32::MAX))
                        .map_err(|_| e("bad MKI value"))?;
                    let len = parse_decimal(len, 128).map_err(|_| e("bad MKI length"))?;
                    mki = Some((
                        u32::try_from(value).map_err(|_| e("bad MKI value"))?,
                        u8::try_from(len).map_err(|_| e("bad MKI length"))?,
                    ));
                } else {
                    if lifetime.is_some() || mki.is_some() {
                        return Err(e("lifetime must come once, before the MKI"));
                    }
                    let ok = match p.strip_prefix("2^") {
                        Some(exp) => parse_decimal(exp, 64).is_ok(),
                        None => parse_decimal(p, u64::MAX).is_ok(),
                    };
                    if !ok {
                        return Err(e("bad lifetime"));
                    }
                    lifetime = Some(p.to_owned());
                }
            }
            key_params.push(KeyParam {
                method: method.to_owned(),
                key_salt: key_salt.to_owned(),
                lifetime,
                mki,
            });
        }
        Ok(CryptoAttribute {
            tag,
            suite: suite.to_owned(),
            key_params,
            session_params: words.map(str::to_owned).collect(),
        })
    }
}

impl fmt::Display for CryptoAttribute {
    /// The attribute value (without `a=crypto:`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.tag, self.suite)?;
        for (i, k) in self.key_params.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{}:{}", k.method, k.key_salt)?;
            if let Some(l) = &k.lifetime {
                write!(f, "|{l}")?;
            }
            if let Some((v, len)) = k.mki {
                write!(f, "|{v}:{len}")?;
            }
        }
        for p in &self.session_params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

/// One media section: its `m=` line and the lines under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// Media type (`audio`, `video`, `application`...).
    pub media: String,
    /// Port (0 = disabled stream).
    pub port: u16,
    /// Number of ports, when written as `port/count`.
    pub port_count: Option<u16>,
    /// Transport protocol (`RTP/SAVP`...).
    pub proto: String,
    /// Formats (payload types).
    pub formats: Vec<String>,
    lines: Vec<SdpLine>,
}

impl MediaSection {
    fn parse_m(v: &str) -> Result<MediaSection, SdpError> {
        let e = SdpError::BadMedia;
        let mut it = v.split(' ').filter(|w| !w.is_empty());
        let media = it.next().ok_or(e("missing media type"))?;
        let port = it.next().ok_or(e("missing port"))?;
        let (port, count) = match port.split_once('/') {
            Some((p, c)) => (p, Some(c)),
            None => (port, None),
        };
        let parse_port = |s: &str| {
            parse_decimal(s, u64::from(u16::MAX))
                .map(|v| v as u16)
                .map_err(|_| e("bad port"))
        };
        let port = parse_port(port)?;
        let port_count = count.map(parse_port).transpose()?;
        let proto = it.next().ok_or(e("missing protocol"))?;
        let formats: Vec<String> = it.map(str::to_owned).collect();
        if formats.is_empty() {
            return Err(e("no formats"));
        }
        Ok(MediaSection {
            media: media.to_owned(),
            port,
            port_count,
            proto: proto.to_owned(),
            formats,
            lines: Vec::new(),
        })
    }

    /// The lines under the `m=` line.
    pub fn lines(&self) -> &[SdpLine] {
        &self.lines
    }

    /// The section's own `c=` line, if any.
    pub fn connection(&self) -> Option<Connection> {
        self.lines
            .iter()
            .find(|l| l.kind == 'c')
            .and_then(|l| Connection::parse(&l.value).ok())
    }

    /// Attributes as `(name, value)`; `a=sendrecv` gives `("sendrecv", None)`.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.lines
            .iter()
            .filter(|l| l.kind == 'a')
            .map(|l| match l.value.split_once(':') {
                Some((n, v)) => (n, Some(v)),
                None => (l.value.as_str(), None),
            })
    }

    /// The `a=crypto` attributes in order.
    pub fn crypto(&self) -> Result<Vec<CryptoAttribute>, SdpError> {
        self.attributes()
            .filter(|(n, _)| *n == "crypto")
            .map(|(_, v)| CryptoAttribute::parse(v.unwrap_or_default()))
            .collect()
    }

    /// Sets this section's connection address (`c=IN IP4|IP6 <ip>`), replacing its `c=`
    /// lines or adding one in the position RFC 8866 gives it (after `i=`).
    pub fn set_connection(&mut self, ip: IpAddr) {
        let value = Connection::for_ip(ip).to_string();
        let first = self.lines.iter().position(|l| l.kind == 'c');
        self.lines.retain(|l| l.kind != 'c');
        let at = first.unwrap_or_else(|| self.lines.iter().take_while(|l| l.kind == 'i').count());
        self.lines
            .insert(at.min(self.lines.len()), SdpLine { kind: 'c', value });
    }

    /// Replaces every `a=crypto` line with `crypto` (at the first one's position, or at
    /// the end of the section).
    pub fn set_crypto(&mut self, crypto: &[CryptoAttribute]) {
        let is_crypto = |l: &SdpLine| l.kind == 'a' && l.value.starts_with("crypto:");
        let first = self.lines.iter().position(is_crypto);
        self.lines.retain(|l| !is_crypto(l));
        let at = first.unwrap_or(self.lines.len()).min(self.lines.len());
        for (i, c) in crypto.iter().enumerate() {
            self.lines.insert(
                at + i,
                SdpLine {
                    kind: 'a',
                    value: format!("crypto:{c}"),
                },
            );
        }
    }

    /// Appends a line to the section.
    pub fn push_line(&mut self, kind: char, value: impl Into<String>) {
        self.lines.push(SdpLine {
            kind,
            value: value.into(),
        });
    }

    /// Removes the attributes called `name`; returns how many.
    pub fn remove_attribute(&mut self, name: &str) -> usize {
        let before = self.lines.len();
        self.lines.retain(|l| {
            !(l.kind == 'a'
                && (l.value == name
                    || l.value
                        .strip_prefix(name)
                        .is_some_and(|r| r.starts_with(':'))))
        });
        before - self.lines.len()
    }
}

/// A parsed SDP body; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    session: Vec<SdpLine>,
    media: Vec<MediaSection>,
}

impl SessionDescription {
    /// Parses an SDP body. Lines may end in CRLF or LF (RFC 8866 §5).
    pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::InvalidUtf8)?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let mut session = Vec::new();
        let mut media: Vec<MediaSection> = Vec::new();
        for (n, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let bytes = line.as_bytes();
            if bytes.len() < 2
                || !bytes[0].is_ascii_lowercase()
                || bytes[1] != b'='
                || line.contains('\r')
            {
                return Err(SdpError::BadLine {
                    line: n + 1,
                    text: line.chars().take(80).collect(),
                });
            }
            let kind = bytes[0] as char;
            let value = &line[2..];
            if n == 0 && (kind != 'v' || value != "0") {
                return Err(SdpError::NoVersion);
            }
            match kind {
                'm' => {
                    media.push(MediaSection::parse_m(value)?);
                    continue;
                }
                'c' => {
                    Connection::parse(value)?;
                }
                'a' if value.starts_with("crypto:") => {
                    CryptoAttribute::parse(&value[7..])?;
                }
                _ => {}
            }
            let l = SdpLine {
                kind,
                value: value.to_owned(),
            };
            match media.last_mut() {
                Some(m) => m.lines.push(l),
                None => session.push(l),
            }
        }
        let sdp = SessionDescription { session, media };
        sdp.origin_fields()?;
        Ok(sdp)
    }

    fn origin_fields(&self) -> Result<Vec<&str>, SdpError> {
        let o = self
            .session
            .iter()
            .find(|l| l.kind == 'o')
            .ok_or(SdpError::BadOrigin("missing"))?;
        let f: Vec<&str> = o.value.split(' ').collect();
        if f.len() != 6 || f.iter().any(|x| x.is_empty()) {
            return Err(SdpError::BadOrigin("expected 6 fields"));
        }
        Ok(f)
    }

    /// Session-level lines (before the first `m=`).
    pub fn session_lines(&self) -> &[SdpLine] {
        &self.session
    }

    /// The media sections.
    pub fn media(&self) -> &[MediaSection] {
        &self.media
    }

    /// The media sections, mutably.
    pub fn media_mut(&mut self) -> &mut [MediaSection] {
        &mut self.media
    }

    /// The session-level `c=` line.
    pub fn session_connection(&self) -> Option<Connection> {
        self.session
            .iter()
            .find(|l| l.kind == 'c')
            .and_then(|l| Connection::parse(&l.value).ok())
    }

    /// The connection that applies to media section `index` (its own or the session's)
    /// and its port: where its RTP goes.
    pub fn media_address(&self, index: usize) -> Result<(Option<Connection>, u16), SdpError> {
        let m = self.media.get(index).ok_or(SdpError::NoSuchMedia(index))?;
        Ok((m.connection().or_else(|| self.session_connection()), m.port))
    }

    /// Rewrites where media section `index` receives RTP: its `c=` line and port.
    pub fn set_media_address(
        &mut self,
        index: usize,
        ip: IpAddr,
        port: u16,
    ) -> Result<(), SdpError> {
        let m = self
            .media
            .get_mut(index)
            .ok_or(SdpError::NoSuchMedia(index))?;
        m.set_connection(ip);
        m.port = port;
        Ok(())
    }

    /// Replaces the session-level `c=` line (or adds one before `t=`).
    pub fn set_session_connection(&mut self, ip: IpAddr) {
        let value = Connection::for_ip(ip).to_string();
        if let Some(l) = self.session.iter_mut().find(|l| l.kind == 'c') {
            l.value = value;
            return;
        }
        let at = self
            .session
            .iter()
            .position(|l| matches!(l.kind, 'b' | 't' | 'r' | 'z' | 'k' | 'a'))
            .unwrap_or(self.session.len());
        self.session.insert(at, SdpLine { kind: 'c', value });
    }

    /// Increments the `o=` session version, as every changed offer/answer must.
    pub fn increment_origin_version(&mut self) -> Result<(), SdpError> {
        let f = self.origin_fields()?;
        let v = parse_decimal(f[2], u64::MAX)
            .map_err(|_| SdpError::BadOrigin("bad session version"))?;
        let value = format!(
            "{} {} {} {} {} {}",
            f[0],
            f[1],
            v.wrapping_add(1),
            f[3],
            f[4],
            f[5]
        );
        if let Some(o) = self.session.iter_mut().find(|l| l.kind == 'o') {
            o.value = value;
        }
        Ok(())
    }

    /// Replaces the `o=` line's address type and address with `ip` (a B2BUA's SDP names
    /// itself, not the party behind it).
    pub fn set_origin_address(&mut self, ip: IpAddr) -> Result<(), SdpError> {
        let f = self.origin_fields()?;
        let c = Connection::for_ip(ip);
        let value = format!(
            "{} {} {} {} {} {}",
            f[0], f[1], f[2], c.net_type, c.addr_type, c.address
        );
        if let Some(o) = self.session.iter_mut().find(|l| l.kind == 'o') {
            o.value = value;
        }
        Ok(())
    }

    /// Serializes with CRLF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.session {
            write!(f, "{}={}\r\n", l.kind, l.value)?;
        }
        for m in &self.media {
            write!(f, "m={} {}", m.media, m.port)?;
            if let Some(c) = m.port_count {
                write!(f, "/{c}")?;
            }
            write!(f, " {}", m.proto)?;
            for fmt in &m.formats {
                write!(f, " {fmt}")?;
            }
            f.write_str("\r\n")?;
            for l in &m.lines {
                write!(f, "{}={}\r\n", l.kind, l.value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
        o=- 1 1 IN IP4 10.0.0.1\r\n\
        s=-\r\n\
        c=IN IP4 10.0.0.1\r\n\
        t=0 0\r\n\
        m=audio 49170 RTP/SAVP 0 101\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n\
        a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32 UNENCRYPTED_SRTCP\r\n\
        a=x-cisco-foo:bar\r\n\
        a=sendrecv\r\n\
        m=video 0 RTP/SAVP 96\r\n\
        b=TIAS:1000\r\n";

    #[test]
    fn lossless_round_trip() {
        let sdp = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(sdp.to_string(), OFFER);
        assert_eq!(sdp.media().len(), 2);
        let (c, port) = sdp.media_address(0).unwrap();
        assert_eq!(c.unwrap().ip(), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(port, 49170);
        let lf = OFFER.replace("\r\n", "\n");
        assert_eq!(SessionDescription::parse(lf.as_bytes()).unwrap(), sdp);
    }

    #[test]
    fn crypto_lines() {
        let sdp = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let c = sdp.media()[0].crypto().unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].tag, 1);
        assert_eq!(c[0].suite, "AES_CM_128_HMAC_SHA1_80");
        assert_eq!(
            c[0].key_params[0].key_salt,
            "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
        );
        assert_eq!(c[0].key_params[0].lifetime.as_deref(), Some("2^20"));
        assert_eq!(c[0].key_params[0].mki, Some((1, 32)));
        assert_eq!(c[1].session_params, vec!["UNENCRYPTED_SRTCP"]);
        for a in &c {
            assert_eq!(&CryptoAttribute::parse(&a.to_string()).unwrap(), a);
        }
        for bad in [
            "",
            "1",
            "x AES inline:abc",
            "1 AES_CM_128_HMAC_SHA1_80 inline:",
            "1 AES_CM_128_HMAC_SHA1_80 inline:abc|1:2|2^20",
            "1 AES_CM_128_HMAC_SHA1_80 inline:abc|2^x",
            "1234567890 A inline:abc",
        ] {
            assert!(CryptoAttribute::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn b2bua_rewrite() {
        let mut sdp = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        sdp.set_media_address(0, "203.0.113.7".parse().unwrap(), 36002)
            .unwrap();
        sdp.set_media_address(1, "2001:db8::7".parse().unwrap(), 36004)
            .unwrap();
        let mut key = sdp.media()[0].crypto().unwrap()[0].clone();
        key.key_params[0].key_salt = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk".into();
        key.key_params[0].mki = None;
        sdp.media_mut()[0].set_crypto(&[key]);
        sdp.increment_origin_version().unwrap();
        let out = sdp.to_string();
        assert!(out.contains("o=- 1 2 IN IP4 10.0.0.1\r\n"));
        assert!(out.contains(
            "m=audio 36002 RTP/SAVP 0 101\r\nc=IN IP4 203.0.113.7\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk|2^20\r\na=x-cisco-foo:bar\r\n"
        ));
        assert!(
            out.contains("m=video 36004 RTP/SAVP 96\r\nc=IN IP6 2001:db8::7\r\nb=TIAS:1000\r\n")
        );
        assert_eq!(SessionDescription::parse(out.as_bytes()).unwrap(), sdp);
        assert_eq!(sdp.media_mut()[0].remove_attribute("x-cisco-foo"), 1);
        sdp.set_origin_address("198.51.100.1".parse().unwrap())
            .unwrap();
        assert!(sdp.to_string().contains("o=- 1 2 IN IP4 198.51.100.1\r\n"));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            SessionDescription::parse(b"o=x\r\n"),
            Err(SdpError::NoVersion)
        );
        assert!(SessionDescription::parse(b"v=0\r\ns=-\r\n").is_err());
        assert!(SessionDescription::parse(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN\r\n").is_err());
        assert!(SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n"
        )
        .is_err());
        assert!(SessionDescription::parse(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nbad\r\n").is_err());
        assert!(SessionDescription::parse(&[0xff, 0xfe]).is_err());
    }
}
