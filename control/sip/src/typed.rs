//! Typed views of the headers the stack and its users act on (RFC 3261 §20).
//!
//! Each type parses from the unfolded header value and writes back in canonical form.
//! The accessors on [`Headers`] parse on demand; the message parser has already run the
//! same parsers once, so on a parsed message they only fail after the caller edited the
//! raw value.

use crate::error::ParseError;
use crate::header::{HeaderName, Headers};
use crate::params::Params;
use crate::text::{
    is_token, is_token_char, is_word_char, is_wsp, parse_decimal, parse_quoted, split_top_level,
    trim_wsp, write_quoted,
};
use crate::uri::{parse_hostport, Host, Uri};
use std::fmt;
use std::net::IpAddr;

/// The RFC 3261 branch prefix ("magic cookie").
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// A SIP method; comparison is case-sensitive (RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// INVITE.
    Invite,
    /// ACK.
    Ack,
    /// BYE.
    Bye,
    /// CANCEL.
    Cancel,
    /// REGISTER.
    Register,
    /// OPTIONS.
    Options,
    /// INFO (RFC 6086).
    Info,
    /// UPDATE (RFC 3311).
    Update,
    /// PRACK (RFC 3262).
    Prack,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// NOTIFY (RFC 6665).
    Notify,
    /// REFER (RFC 3515).
    Refer,
    /// MESSAGE (RFC 3428).
    Message,
    /// PUBLISH (RFC 3903).
    Publish,
    /// Any other token.
    Other(String),
}

impl Method {
    /// Parses a method token.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            s if is_token(s) => Method::Other(s.to_owned()),
            _ => return None,
        })
    }

    /// The method as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Via value (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Protocol name and version, normally `SIP/2.0`.
    pub protocol: String,
    /// Transport as written (`UDP`, `TCP`, `TLS`, `WSS`...).
    pub transport: String,
    /// sent-by host.
    pub host: Host,
    /// sent-by port.
    pub port: Option<u16>,
    /// Parameters (branch, received, rport, maddr, ttl, ...).
    pub params: Params,
}

impl Via {
    /// A `SIP/2.0/<transport> host[:port];branch=<branch>` value.
    pub fn new(transport: &str, host: Host, port: Option<u16>, branch: &str) -> Via {
        let mut params = Params::new();
        params.set("branch", Some(branch));
        Via {
            protocol: "SIP/2.0".to_owned(),
            transport: transport.to_owned(),
            host,
            port,
            params,
        }
    }

    /// Parses one Via value.
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        let e = |r: &str| ParseError::header("Via", r);
        let s = trim_wsp(s);
        let (name, rest) = s
            .split_once('/')
            .ok_or_else(|| e("missing sent-protocol"))?;
        let (version, rest) = rest
            .split_once('/')
            .ok_or_else(|| e("missing sent-protocol"))?;
        let (name, version) = (trim_wsp(name), trim_wsp(version));
        if !is_token(name) || !is_token(version) {
            return Err(e("bad protocol name or version"));
        }
        let rest = rest.trim_start_matches(is_wsp);
        let t_end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
        let transport = &rest[..t_end];
        if transport.is_empty() {
            return Err(e("missing transport"));
        }
        let rest = &rest[t_end..];
        if !rest.starts_with(is_wsp) {
            return Err(e("missing sent-by"));
        }
        let rest = trim_wsp(rest);
        let semi = rest.find(';').unwrap_or(rest.len());
        let sent_by = trim_wsp(&rest[..semi]);
        let (host, port) = split_sent_by(sent_by).ok_or_else(|| e("bad sent-by"))?;
        let (host, port) = parse_hostport(&join_hostport(host, port))
            .map_err(|r| e(&format!("bad sent-by: {r}")))?;
        let params = Params::parse_header(&rest[semi..]).map_err(e)?;
        let via = Via {
            protocol: format!("{name}/{version}"),
            transport: transport.to_owned(),
            host,
            port,
            params,
        };
        via.check_params()?;
        Ok(via)
    }

    fn check_params(&self) -> Result<(), ParseError> {
        let e = |r: &str| ParseError::header("Via", r);
        if let Some(p) = self.params.find("branch") {
            match p.value.as_deref() {
                Some(v) if is_token(v) => {}
                _ => return Err(e("branch parameter is not a token")),
            }
        }
        if let Some(p) = self.params.find("received") {
            if p.value.as_deref().and_then(parse_ip).is_none() {
                return Err(e("received parameter is not an IP address"));
            }
        }
        if let Some(p) = self.params.find("rport") {
            if let Some(v) = &p.value {
                parse_decimal(v, u64::from(u16::MAX)).map_err(|_| e("bad rport parameter"))?;
            }
        }
        if let Some(p) = self.params.find("ttl") {
            parse_decimal(p.value.as_deref().unwrap_or(""), 255)
                .map_err(|_| e("bad ttl parameter"))?;
        }
        Ok(())
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch")
    }

    /// The branch, required to carry the RFC 3261 magic cookie.
    pub fn rfc3261_branch(&self) -> Result<&str, ParseError> {
        match self.branch() {
            None => Err(ParseError::header("Via", "missing branch parameter")),
            Some(b) if !b.starts_with(MAGIC_COOKIE) => Err(ParseError::header(
                "Via",
                format!("branch {b:?} lacks the z9hG4bK magic cookie"),
            )),
            Some(b) => Ok(b),
        }
    }

    /// The received parameter.
    pub fn received(&self) -> Option<IpAddr> {
        self.params.get("received").and_then(parse_ip)
    }

    /// `None` without rport, `Some(None)` for a bare `;rport`, `Some(Some(p))` when filled.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .find("rport")
            .map(|p| p.value.as_deref().and_then(|v| v.parse().ok()))
    }

    /// `true` for transports with their own retransmission (everything but UDP).
    pub fn is_reliable(&self) -> bool {
        !self.transport.eq_ignore_ascii_case("UDP")
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// Splits `host [SWS ":" SWS port]`, allowing LWS around the colon only.
fn split_sent_by(s: &str) -> Option<(&str, Option<&str>)> {
    let colon = if s.starts_with('[') {
        let end = s.find(']')?;
        s[end..].find(':').map(|i| i + end)
    } else {
        s.find(':')
    };
    let (host, port) = match colon {
        Some(i) => (trim_wsp(&s[..i]), Some(trim_wsp(&s[i + 1..]))),
        None => (s, None),
    };
    if host.contains(is_wsp) || port.is_some_and(|p| p.contains(is_wsp)) {
        return None;
    }
    Some((host, port))
}

fn join_hostport(host: &str, port: Option<&str>) -> String {
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.protocol, self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// A name-addr or addr-spec with header parameters: From, To, Contact, Route,
/// Record-Route, Path, Refer-To.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name (unquoted and unescaped).
    pub display_name: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters (tag, expires, q, ...).
    pub params: Params,
}

fn find_unquoted(s: &str, target: char) -> Option<usize> {
    let mut in_q = false;
    let mut esc = false;
    for (i, c) in s.char_indices() {
        if in_q {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_q = false;
            }
        } else if c == '"' {
            in_q = true;
        } else if c == target {
            return Some(i);
        }
    }
    None
}

impl NameAddr {
    /// A name-addr with no display name and no parameters.
    pub fn new(uri: Uri) -> Self {
        NameAddr {
            display_name: None,
            uri,
            params: Params::new(),
        }
    }

    /// Parses `[display-name] <uri> *(;param)` or `addr-spec *(;param)`.
    pub fn parse(s: &str) -> Result<NameAddr, &'static str> {
        let s = trim_wsp(s);
        let (display_name, rest) = if s.starts_with('"') {
            let (d, rest) = parse_quoted(s)?;
            let rest = rest.trim_start_matches(is_wsp);
            if !rest.starts_with('<') {
                return Err("quoted display name not followed by <URI>");
            }
            (Some(d), rest)
        } else if let Some(lt) = find_unquoted(s, '<') {
            let d = trim_wsp(&s[..lt]);
            if !d.split(is_wsp).all(|w| w.is_empty() || is_token(w)) {
                return Err("unquoted display name has non-token characters");
            }
            (
                if d.is_empty() {
                    None
                } else {
                    Some(d.to_owned())
                },
                &s[lt..],
            )
        } else {
            // addr-spec: everything up to the first ';' is the URI.
            let end = s.find(';').unwrap_or(s.len());
            let uri_text = trim_wsp(&s[..end]);
            if uri_text.contains(|c: char| c == ',' || c == '?' || is_wsp(c)) {
                return Err("URI with ',', '?' or spaces must be enclosed in <>");
            }
            let uri = Uri::parse(uri_text).map_err(|_| "bad URI")?;
            let params = Params::parse_header(&s[end..])?;
            return Ok(NameAddr {
                display_name: None,
                uri,
                params,
            });
        };
        let inner_end = rest.find('>').ok_or("missing '>'")?;
        let inner = &rest[1..inner_end];
        if inner.starts_with(is_wsp) || inner.ends_with(is_wsp) {
            return Err("whitespace inside <>");
        }
        let uri = Uri::parse(inner).map_err(|_| "bad URI")?;
        let params = Params::parse_header(&rest[inner_end + 1..])?;
        Ok(NameAddr {
            display_name,
            uri,
            params,
        })
    }

    /// The tag parameter (From/To).
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag")
    }

    /// The expires parameter (Contact), if it is a valid delta-seconds.
    pub fn expires(&self) -> Option<u32> {
        self.params
            .get("expires")
            .and_then(|v| parse_decimal(v, u64::from(u32::MAX)).ok())
            .and_then(|v| u32::try_from(v).ok())
    }

    /// The q parameter (Contact) in thousandths (`q=0.33` → 330).
    pub fn q(&self) -> Option<u16> {
        let v = self.params.get("q")?;
        let (int, frac) = v.split_once('.').unwrap_or((v, ""));
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let whole = match int {
            "0" => 0u16,
            "1" => 1000,
            _ => return None,
        };
        let mut f = 0u16;
        for (i, b) in frac.bytes().enumerate() {
            f += u16::from(b - b'0') * [100, 10, 1][i];
        }
        let q = whole + f;
        (q <= 1000).then_some(q)
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            let mut s = String::new();
            write_quoted(&mut s, d);
            write!(f, "{s} ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// The Contact header: `*` or a list of addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactList {
    /// `Contact: *` (REGISTER removing all bindings).
    Wildcard,
    /// Zero or more addresses.
    Addresses(Vec<NameAddr>),
}

/// CSeq: sequence number and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (< 2^31).
    pub seq: u32,
    /// Method.
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`.
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let e = |r: &str| ParseError::header("CSeq", r);
        let mut it = trim_wsp(s).split(is_wsp).filter(|w| !w.is_empty());
        let (Some(n), Some(m), None) = (it.next(), it.next(), it.next()) else {
            return Err(e("expected sequence number and method"));
        };
        let seq = parse_decimal(n, (1 << 31) - 1)
            .map_err(|_| e(&format!("sequence number {n:?} is not below 2^31")))?;
        let method = Method::parse(m).ok_or_else(|| e("method is not a token"))?;
        Ok(CSeq {
            seq: u32::try_from(seq).map_err(|_| e("sequence number out of range"))?,
            method,
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Content-Type (media type with parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// Type, e.g. `application`.
    pub mtype: String,
    /// Subtype, e.g. `sdp`.
    pub subtype: String,
    /// Parameters (boundary, charset...).
    pub params: Params,
}

impl ContentType {
    /// Parses `type SLASH subtype *(SEMI param)`.
    pub fn parse(s: &str) -> Result<ContentType, ParseError> {
        let e = |r: &str| ParseError::header("Content-Type", r);
        let s = trim_wsp(s);
        let semi = s.find(';').unwrap_or(s.len());
        let (t, st) = s[..semi].split_once('/').ok_or_else(|| e("missing '/'"))?;
        let (t, st) = (trim_wsp(t), trim_wsp(st));
        if !is_token(t) || !is_token(st) {
            return Err(e("type or subtype is not a token"));
        }
        Ok(ContentType {
            mtype: t.to_owned(),
            subtype: st.to_owned(),
            params: Params::parse_header(&s[semi..]).map_err(e)?,
        })
    }

    /// `true` for `application/sdp` (case-insensitive).
    pub fn is_sdp(&self) -> bool {
        self.mtype.eq_ignore_ascii_case("application") && self.subtype.eq_ignore_ascii_case("sdp")
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.mtype, self.subtype, self.params)
    }
}

/// One auth-param of a credentials or challenge value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParam {
    /// Name (`realm`, `nonce`, `response`...).
    pub name: String,
    /// Value, unquoted.
    pub value: String,
    /// Whether it was (and will be written) quoted.
    pub quoted: bool,
}

/// Authorization, Proxy-Authorization, WWW-Authenticate or Proxy-Authenticate value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Scheme (`Digest`, ...).
    pub scheme: String,
    /// Comma-separated auth-params.
    pub params: Vec<AuthParam>,
    /// A token68 value for schemes that use one (`Bearer abc`), instead of params.
    pub token68: Option<String>,
}

impl Auth {
    /// Parses `scheme LWS auth-param *(COMMA auth-param)` (or `scheme token68`).
    pub fn parse(name: &str, s: &str) -> Result<Auth, ParseError> {
        let e = |r: &str| ParseError::header(name, r);
        let s = trim_wsp(s);
        let (scheme, rest) = match s.find(is_wsp) {
            Some(i) => (&s[..i], trim_wsp(&s[i..])),
            None => (s, ""),
        };
        if !is_token(scheme) {
            return Err(e("auth scheme is not a token"));
        }
        let mut params = Vec::new();
        let mut token68 = None;
        if !rest.is_empty() {
            let parts = split_top_level(rest, ',', false).map_err(e)?;
            if parts.len() == 1 && !parts[0].contains('=')
                || parts.len() == 1 && parts[0].trim_end_matches('=').bytes().all(is_b64)
            {
                token68 = Some(parts[0].to_owned());
            } else {
                for p in parts {
                    let (n, v) = p
                        .split_once('=')
                        .ok_or_else(|| e("auth-param without '='"))?;
                    let (n, v) = (trim_wsp(n), trim_wsp(v));
                    if !is_token(n) {
                        return Err(e("auth-param name is not a token"));
                    }
                    let (value, quoted) = if v.starts_with('"') {
                        let (q, rest) = parse_quoted(v).map_err(e)?;
                        if !rest.is_empty() {
                            return Err(e("text after quoted auth-param"));
                        }
                        (q, true)
                    } else if is_token(v) {
                        (v.to_owned(), false)
                    } else {
                        return Err(e("auth-param value is not a token or quoted string"));
                    };
                    params.push(AuthParam {
                        name: n.to_owned(),
                        value,
                        quoted,
                    });
                }
            }
        }
        Ok(Auth {
            scheme: scheme.to_owned(),
            params,
            token68,
        })
    }

    /// The value of an auth-param (case-insensitive name), unquoted.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_str())
    }

    /// `true` for the Digest scheme.
    pub fn is_digest(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("Digest")
    }
}

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'.' | b'_' | b'~')
}

impl fmt::Display for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scheme)?;
        if let Some(t) = &self.token68 {
            return write!(f, " {t}");
        }
        for (i, p) in self.params.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            if p.quoted {
                let mut s = String::new();
                write_quoted(&mut s, &p.value);
                write!(f, "{}={}", p.name, s)?;
            } else {
                write!(f, "{}={}", p.name, p.value)?;
            }
        }
        Ok(())
    }
}

/// Retry-After: seconds, optional comment, parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAfter {
    /// Delay in seconds.
    pub seconds: u32,
    /// The comment without parentheses, if any.
    pub comment: Option<String>,
    /// Parameters (duration...).
    pub params: Params,
}

impl RetryAfter {
    /// Parses `delta-seconds [comment] *(SEMI retry-param)`.
    pub fn parse(s: &str) -> Result<RetryAfter, ParseError> {
        let e = |r: &str| ParseError::header("Retry-After", r);
        let s = trim_wsp(s);
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let seconds = parse_decimal(&s[..end], u64::from(u32::MAX))
            .map_err(|_| e(&format!("{:?} is not a delta-seconds", &s[..end])))?;
        let mut rest = trim_wsp(&s[end..]);
        let mut comment = None;
        if let Some(r) = rest.strip_prefix('(') {
            let close = r.rfind(')').ok_or_else(|| e("unterminated comment"))?;
            comment = Some(r[..close].to_owned());
            rest = trim_wsp(&r[close + 1..]);
        }
        Ok(RetryAfter {
            seconds: u32::try_from(seconds).map_err(|_| e("out of range"))?,
            comment,
            params: Params::parse_header(rest).map_err(e)?,
        })
    }
}

fn parse_u32(name: &str, v: &str) -> Result<u32, ParseError> {
    parse_decimal(trim_wsp(v), u64::from(u32::MAX))
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ParseError::header(name, format!("{v:?} is not a 32-bit delta-seconds")))
}

fn name_addrs(h: &Headers, name: HeaderName) -> Result<Vec<NameAddr>, ParseError> {
    h.values(&name)?
        .into_iter()
        .map(|v| NameAddr::parse(v).map_err(|r| ParseError::header(name.as_str(), r)))
        .collect()
}

fn single_name_addr(
    h: &Headers,
    name: HeaderName,
    label: &'static str,
) -> Result<NameAddr, ParseError> {
    let v = h.first(&name).ok_or(ParseError::MissingHeader(label))?;
    NameAddr::parse(v).map_err(|r| ParseError::header(label, r))
}

/// Checks a SIP-date: `Sat, 15 Oct 2005 04:44:56 GMT` (RFC 1123, GMT only).
fn check_date(v: &str) -> Result<(), &'static str> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let w: Vec<&str> = v.split(' ').collect();
    let ok = w.len() == 6
        && w[0].strip_suffix(',').is_some_and(|d| DAYS.contains(&d))
        && w[1].len() == 2
        && parse_decimal(w[1], 31).is_ok()
        && MONTHS.contains(&w[2])
        && w[3].len() == 4
        && w[3].bytes().all(|b| b.is_ascii_digit())
        && w[4].len() == 8
        && w[4].split(':').count() == 3
        && w[4]
            .split(':')
            .all(|p| p.len() == 2 && parse_decimal(p, 60).is_ok());
    if !ok {
        return Err("not an RFC 1123 date");
    }
    if w[5] != "GMT" {
        return Err("time zone must be GMT");
    }
    Ok(())
}

/// Validates a known header's value during parsing (strict mode).
pub(crate) fn validate(name: &HeaderName, value: &str) -> Result<(), ParseError> {
    let label = name.as_str();
    fn list<'v>(label: &str, v: &'v str) -> Result<Vec<&'v str>, ParseError> {
        if v.is_empty() {
            return Ok(Vec::new());
        }
        split_top_level(v, ',', false).map_err(|r| ParseError::header(label, r))
    }
    match name {
        HeaderName::Via => {
            let vs = list(label, value)?;
            if vs.is_empty() {
                return Err(ParseError::header(label, "empty value"));
            }
            for v in vs {
                Via::parse(v)?;
            }
        }
        HeaderName::From | HeaderName::To | HeaderName::ReferTo | HeaderName::ReferredBy => {
            NameAddr::parse(value).map_err(|r| ParseError::header(label, r))?;
        }
        HeaderName::Contact => {
            if trim_wsp(value) == "*" {
                return Ok(());
            }
            let vs = list(label, value)?;
            if vs.is_empty() {
                return Err(ParseError::header(label, "empty value"));
            }
            for v in vs {
                let na = NameAddr::parse(v).map_err(|r| ParseError::header(label, r))?;
                if na.params.contains("expires") && na.expires().is_none() {
                    return Err(ParseError::header(label, "expires parameter out of range"));
                }
            }
        }
        HeaderName::Route | HeaderName::RecordRoute | HeaderName::Path => {
            let vs = list(label, value)?;
            if vs.is_empty() {
                return Err(ParseError::header(label, "empty value"));
            }
            for v in vs {
                NameAddr::parse(v).map_err(|r| ParseError::header(label, r))?;
            }
        }
        HeaderName::CallId => {
            if value.is_empty() || !value.chars().all(|c| c == '@' || is_word_char(c)) {
                return Err(ParseError::header(label, "not a word[@word]"));
            }
            if value.matches('@').count() > 1 {
                return Err(ParseError::header(label, "more than one '@'"));
            }
        }
        HeaderName::CSeq => {
            CSeq::parse(value)?;
        }
        HeaderName::MaxForwards => {
            parse_decimal(value, 255)
                .map_err(|_| ParseError::header(label, format!("{value:?} is not in 0-255")))?;
        }
        HeaderName::Expires | HeaderName::MinExpires => {
            parse_u32(label, value)?;
        }
        HeaderName::ContentType => {
            ContentType::parse(value)?;
        }
        HeaderName::Date => check_date(value).map_err(|r| ParseError::header(label, r))?,
        HeaderName::RetryAfter => {
            RetryAfter::parse(value)?;
        }
        HeaderName::Supported
        | HeaderName::Require
        | HeaderName::ProxyRequire
        | HeaderName::Unsupported
        | HeaderName::Allow => {
            for v in list(label, value)? {
                if !is_token(v) {
                    return Err(ParseError::header(label, format!("{v:?} is not a token")));
                }
            }
        }
        HeaderName::Authorization
        | HeaderName::ProxyAuthorization
        | HeaderName::WwwAuthenticate
        | HeaderName::ProxyAuthenticate => {
            Auth::parse(label, value)?;
        }
        _ => {}
    }
    Ok(())
}

/// Typed accessors.
impl Headers {
    /// All Via values, topmost first.
    pub fn via(&self) -> Result<Vec<Via>, ParseError> {
        self.values(&HeaderName::Via)?
            .into_iter()
            .map(Via::parse)
            .collect()
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Result<Via, ParseError> {
        let first = self.values(&HeaderName::Via)?;
        Via::parse(first.first().ok_or(ParseError::MissingHeader("Via"))?)
    }

    /// From.
    pub fn from_addr(&self) -> Result<NameAddr, ParseError> {
        single_name_addr(self, HeaderName::From, "From")
    }

    /// To.
    pub fn to_addr(&self) -> Result<NameAddr, ParseError> {
        single_name_addr(self, HeaderName::To, "To")
    }

    /// Call-ID.
    pub fn call_id(&self) -> Result<&str, ParseError> {
        self.first(&HeaderName::CallId)
            .ok_or(ParseError::MissingHeader("Call-ID"))
    }

    /// CSeq.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(
            self.first(&HeaderName::CSeq)
                .ok_or(ParseError::MissingHeader("CSeq"))?,
        )
    }

    /// Max-Forwards, if present.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        self.first(&HeaderName::MaxForwards)
            .map(|v| {
                parse_decimal(v, 255)
                    .ok()
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(|| {
                        ParseError::header("Max-Forwards", format!("{v:?} is not in 0-255"))
                    })
            })
            .transpose()
    }

    /// Contact values (or the wildcard).
    pub fn contacts(&self) -> Result<ContactList, ParseError> {
        let values = self.values(&HeaderName::Contact)?;
        if values.contains(&"*") {
            if values.len() != 1 {
                return Err(ParseError::header("Contact", "'*' mixed with addresses"));
            }
            return Ok(ContactList::Wildcard);
        }
        values
            .into_iter()
            .map(|v| NameAddr::parse(v).map_err(|r| ParseError::header("Contact", r)))
            .collect::<Result<_, _>>()
            .map(ContactList::Addresses)
    }

    /// Expires, if present.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.first(&HeaderName::Expires)
            .map(|v| parse_u32("Expires", v))
            .transpose()
    }

    /// Content-Length, if present.
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        self.first(&HeaderName::ContentLength)
            .map(|v| {
                parse_decimal(v, usize::MAX as u64)
                    .ok()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| ParseError::BadContentLength(v.to_owned()))
            })
            .transpose()
    }

    /// Content-Type, if present.
    pub fn content_type(&self) -> Result<Option<ContentType>, ParseError> {
        self.first(&HeaderName::ContentType)
            .map(ContentType::parse)
            .transpose()
    }

    /// Route values in order.
    pub fn routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        name_addrs(self, HeaderName::Route)
    }

    /// Record-Route values in order.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        name_addrs(self, HeaderName::RecordRoute)
    }

    /// Path values in order (RFC 3327).
    pub fn paths(&self) -> Result<Vec<NameAddr>, ParseError> {
        name_addrs(self, HeaderName::Path)
    }

    /// Every Authorization / Proxy-Authorization / WWW-Authenticate / Proxy-Authenticate
    /// value of the given name.
    pub fn auth(&self, name: &HeaderName) -> Result<Vec<Auth>, ParseError> {
        self.iter()
            .filter(|h| h.name() == name)
            .map(|h| Auth::parse(name.as_str(), h.value()))
            .collect()
    }

    /// Retry-After, if present.
    pub fn retry_after(&self) -> Result<Option<RetryAfter>, ParseError> {
        self.first(&HeaderName::RetryAfter)
            .map(RetryAfter::parse)
            .transpose()
    }

    /// Option tags of Supported.
    pub fn supported(&self) -> Result<Vec<&str>, ParseError> {
        self.token_list(HeaderName::Supported)
    }

    /// Option tags of Require.
    pub fn require(&self) -> Result<Vec<&str>, ParseError> {
        self.token_list(HeaderName::Require)
    }

    /// Methods of Allow.
    pub fn allow(&self) -> Result<Vec<&str>, ParseError> {
        self.token_list(HeaderName::Allow)
    }

    fn token_list(&self, name: HeaderName) -> Result<Vec<&str>, ParseError> {
        let mut out = Vec::new();
        for h in self.iter().filter(|h| h.name() == &name) {
            if h.value().is_empty() {
                continue;
            }
            for v in split_top_level(h.value(), ',', false)
                .map_err(|r| ParseError::header(name.as_str(), r))?
            {
                if !is_token(v) {
                    return Err(ParseError::header(
                        name.as_str(),
                        format!("{v:?} is not a token"),
                    ));
                }
                out.push(v);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_everywhere() {
        let v = Via::parse("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.protocol, "SIP/2.0");
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, Host::V4("192.0.2.2".parse().unwrap()));
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(v.rfc3261_branch().is_err());
        let v = Via::parse(
            "SIP/2.0/TCP h.example.com : 5061 ;branch = z9hG4bKx;rport;received=10.0.0.1",
        )
        .unwrap();
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/TCP h.example.com:5061;branch=z9hG4bKx;rport;received=10.0.0.1"
        );
        let v = Via::parse("SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKa;rport=5062").unwrap();
        assert_eq!(v.rport(), Some(Some(5062)));
        assert_eq!(Via::parse(&v.to_string()).unwrap(), v);
    }

    #[test]
    fn via_errors_name_the_header() {
        let err = Via::parse("SIP/2.0/UDP host")
            .unwrap()
            .rfc3261_branch()
            .unwrap_err();
        assert_eq!(err.to_string(), "Via: missing branch parameter");
        for bad in [
            "SIP/2.0/UDP",
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0 UDP host",
            "SIP/2.0/UDP host;received=nonsense",
            "SIP/2.0/UDP ho st",
            "SIP/2.0/UDP host:99999",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(r#""J Rosenberg \\\"" <sip:jdrosen@example.com> ; tag = 98asjd8"#)
            .unwrap();
        assert_eq!(n.display_name.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("caller"));
        let n = NameAddr::parse("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert!(n.params.contains("unknownparam"));
        assert!(n.uri.as_sip().unwrap().params.is_empty());
        let n = NameAddr::parse("<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert!(n.params.is_empty());
        assert_eq!(NameAddr::parse(&n.to_string()).unwrap(), n);
        let n = NameAddr::parse("<sip:a@b>;expires=3600;q=0.7").unwrap();
        assert_eq!(n.expires(), Some(3600));
        assert_eq!(n.q(), Some(700));
        for bad in [
            "\"open <sip:a@b>",
            "Bell, Alexander <sip:a@b>",
            "< sip:a@b >",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:a@b>;;",
            "<sip:a@b",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cseq_and_scalars() {
        let c = CSeq::parse("0009\t INVITE").unwrap();
        assert_eq!((c.seq, c.method), (9, Method::Invite));
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(validate(&HeaderName::MaxForwards, "300").is_err());
        assert!(validate(&HeaderName::Date, "Fri, 01 Jan 2010 16:00:00 EST").is_err());
        assert!(validate(&HeaderName::Date, "Sat, 15 Oct 2005 04:44:56 GMT").is_ok());
        assert!(validate(&HeaderName::Expires, "4294967296").is_err());
    }

    #[test]
    fn auth_values() {
        let a = Auth::parse(
            "Authorization",
            r#"Digest username="bob", realm="atlanta.example.com", nonce="ea9c8e88df84f1cec4341ae6cbe5a359", uri="sips:ss2.biloxi.example.com", response="dfe56131d1958046689d83306477ecc", algorithm=MD5, qop=auth, nc=00000001, cnonce="0a4f113b""#,
        )
        .unwrap();
        assert!(a.is_digest());
        assert_eq!(a.param("realm"), Some("atlanta.example.com"));
        assert_eq!(a.param("NC"), Some("00000001"));
        assert_eq!(Auth::parse("Authorization", &a.to_string()).unwrap(), a);
        let b = Auth::parse("Authorization", "Bearer abc.def-ghi").unwrap();
        assert_eq!(b.token68.as_deref(), Some("abc.def-ghi"));
        let o = Auth::parse("Authorization", "NoOneKnowsThisScheme opaque-data=here").unwrap();
        assert_eq!(o.param("opaque-data"), Some("here"));
    }

    #[test]
    fn retry_after_and_content_type() {
        let r = RetryAfter::parse("18000 (in a meeting);duration=3600").unwrap();
        assert_eq!(r.seconds, 18000);
        assert_eq!(r.comment.as_deref(), Some("in a meeting"));
        assert_eq!(r.params.get("duration"), Some("3600"));
        assert!(RetryAfter::parse("949302838503028349304023988").is_err());
        let c = ContentType::parse("multipart/mixed;boundary=7a9cbec02ceef655").unwrap();
        assert_eq!(c.params.get("boundary"), Some("7a9cbec02ceef655"));
        assert!(ContentType::parse("application / sdp").unwrap().is_sdp());
    }
}
