//! SIP and SIPS URIs (RFC 3261 §19.1, §25.1) and other absolute URIs.
//!
//! Components are stored %-decoded (`sip:%75ser@h` has the user `user`), and written back
//! with only the characters that need it escaped, so a parsed URI and its re-parse are
//! equal even when the spelling changes.

use crate::error::ParseError;
use crate::params::{Param, Params};
use crate::text::{escape_into, unescape};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A Request-URI or a URI inside a name-addr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// Any other scheme (`tel:`, `http:`, `urn:`...), kept opaque.
    Other(AbsoluteUri),
}

/// A URI of a scheme this crate does not interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsoluteUri {
    /// Scheme, lower-cased.
    pub scheme: String,
    /// Everything after the first `:`, as written.
    pub rest: String,
}

/// Host part of a SIP URI or Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, as written.
    Domain(String),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 reference (written in brackets).
    V6(Ipv6Addr),
}

/// A parsed `sip:` / `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `true` for `sips:`.
    pub secure: bool,
    /// User part, %-decoded (may contain `;`, `@`, even NUL).
    pub user: Option<String>,
    /// Password, %-decoded.
    pub password: Option<String>,
    /// Host.
    pub host: Host,
    /// Port, if written.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`), names and values %-decoded.
    pub params: Params,
    /// URI headers (`?Route=...&Subject=...`), %-decoded.
    pub headers: Vec<(String, String)>,
}

fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '!' | '~' | '*' | '\'' | '(' | ')')
}
fn is_user_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '&' | '=' | '+' | '$' | ',' | ';' | '?' | '/')
}
fn is_password_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '&' | '=' | '+' | '$' | ',')
}
fn is_param_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '[' | ']' | '/' | ':' | '&' | '+' | '$')
}
fn is_header_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '[' | ']' | '/' | '?' | ':' | '+' | '$')
}

fn bad(uri: &str, reason: &'static str) -> ParseError {
    ParseError::BadUri {
        uri: uri.chars().take(200).collect(),
        reason,
    }
}

impl Host {
    /// Parses a host: `[v6]`, dotted IPv4 or a domain name.
    pub fn parse(s: &str) -> Result<Host, &'static str> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or("unterminated IPv6 reference")?;
            return inner
                .parse::<Ipv6Addr>()
                .map(Host::V6)
                .map_err(|_| "bad IPv6 address");
        }
        if s.is_empty() {
            return Err("empty host");
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return s
                .parse::<Ipv4Addr>()
                .map(Host::V4)
                .map_err(|_| "bad IPv4 address");
        }
        // hostname = *( domainlabel "." ) toplabel [ "." ]; '_' tolerated (seen in the field).
        let ok = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            && !s.starts_with('.')
            && !s.starts_with('-')
            && !s.contains("..");
        if ok {
            Ok(Host::Domain(s.to_owned()))
        } else {
            Err("bad host name")
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Parses `host[:port]`.
pub(crate) fn parse_hostport(s: &str) -> Result<(Host, Option<u16>), &'static str> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']').ok_or("unterminated IPv6 reference")?;
        let (h, rest) = s.split_at(end + 1);
        match rest {
            "" => (h, None),
            r => (
                h,
                Some(r.strip_prefix(':').ok_or("junk after IPv6 reference")?),
            ),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => {
            let v = crate::text::parse_decimal(p, u64::from(u16::MAX)).map_err(|_| "bad port")?;
            Some(u16::try_from(v).map_err(|_| "bad port")?)
        }
    };
    Ok((Host::parse(host)?, port))
}

impl Uri {
    /// Parses a URI with nothing around it (no brackets, no whitespace).
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        let colon = s.find(':').ok_or_else(|| bad(s, "no scheme"))?;
        let scheme = &s[..colon];
        let mut sc = scheme.chars();
        let scheme_ok = sc.next().is_some_and(|c| c.is_ascii_alphabetic())
            && sc.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(bad(s, "bad scheme"));
        }
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            return SipUri::parse(s).map(Uri::Sip);
        }
        let rest = &s[colon + 1..];
        if rest.is_empty() {
            return Err(bad(s, "empty URI after scheme"));
        }
        if rest
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
        {
            return Err(bad(s, "character not allowed in URI"));
        }
        Ok(Uri::Other(AbsoluteUri {
            scheme: scheme.to_ascii_lowercase(),
            rest: rest.to_owned(),
        }))
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other(_) => None,
        }
    }

    /// The SIP URI, mutably.
    pub fn as_sip_mut(&mut self) -> Option<&mut SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other(_) => None,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Other(u) => write!(f, "{}:{}", u.scheme, u.rest),
        }
    }
}

impl SipUri {
    /// A `sip:` URI with just a host.
    pub fn new(host: Host) -> Self {
        SipUri {
            secure: false,
            user: None,
            password: None,
            host,
            port: None,
            params: Params::new(),
            headers: Vec::new(),
        }
    }

    /// Parses a `sip:` or `sips:` URI.
    pub fn parse(s: &str) -> Result<SipUri, ParseError> {
        let has = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
        let (secure, rest) = if has("sip:") {
            (false, &s[4..])
        } else if has("sips:") {
            (true, &s[5..])
        } else {
            return Err(bad(s, "not a sip or sips URI"));
        };
        // '@' is not allowed unescaped anywhere but as the userinfo delimiter.
        let (userinfo, rest) = match rest.find('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (ui, None),
                };
                if u.is_empty() {
                    return Err(bad(s, "empty user part"));
                }
                let u = unescape(u, is_user_char).map_err(|r| bad(s, r))?;
                let p = match p {
                    Some(p) => Some(unescape(p, is_password_char).map_err(|r| bad(s, r))?),
                    None => None,
                };
                (Some(u), p)
            }
        };
        let hp_end = rest.find([';', '?']).unwrap_or(rest.len());
        let (host, port) = parse_hostport(&rest[..hp_end]).map_err(|r| bad(s, r))?;
        let mut rest = &rest[hp_end..];
        let mut params = Vec::new();
        while let Some(r) = rest.strip_prefix(';') {
            let end = r.find([';', '?']).unwrap_or(r.len());
            let p = &r[..end];
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            };
            if name.is_empty() {
                return Err(bad(s, "empty URI parameter"));
            }
            let name = unescape(name, is_param_char).map_err(|r| bad(s, r))?;
            let value = match value {
                Some("") => return Err(bad(s, "empty URI parameter value")),
                Some(v) => Some(unescape(v, is_param_char).map_err(|r| bad(s, r))?),
                None => None,
            };
            params.push(Param { name, value });
            rest = &r[end..];
        }
        let mut headers = Vec::new();
        if let Some(h) = rest.strip_prefix('?') {
            for pair in h.split('&') {
                let (n, v) = pair
                    .split_once('=')
                    .ok_or_else(|| bad(s, "URI header without '='"))?;
                if n.is_empty() {
                    return Err(bad(s, "empty URI header name"));
                }
                let n = unescape(n, is_header_char).map_err(|r| bad(s, r))?;
                let v = unescape(v, is_header_char).map_err(|r| bad(s, r))?;
                headers.push((n, v));
            }
        } else if !rest.is_empty() {
            return Err(bad(s, "junk after host"));
        }
        Ok(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params: Params(params),
            headers,
        })
    }

    /// `true` when the URI has the `lr` (loose routing) parameter.
    pub fn is_loose_route(&self) -> bool {
        self.params.contains("lr")
    }

    /// The `transport` parameter, if any.
    pub fn transport(&self) -> Option<&str> {
        self.params.get("transport")
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(64);
        s.push_str(if self.secure { "sips:" } else { "sip:" });
        if let Some(u) = &self.user {
            escape_into(&mut s, u, is_user_char);
            if let Some(p) = &self.password {
                s.push(':');
                escape_into(&mut s, p, is_password_char);
            }
            s.push('@');
        }
        f.write_str(&s)?;
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        s.clear();
        for p in self.params.iter() {
            s.push(';');
            escape_into(&mut s, &p.name, is_param_char);
            if let Some(v) = &p.value {
                s.push('=');
                escape_into(&mut s, v, is_param_char);
            }
        }
        for (i, (n, v)) in self.headers.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            escape_into(&mut s, n, is_header_char);
            s.push('=');
            escape_into(&mut s, v, is_header_char);
        }
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s).unwrap() {
            Uri::Sip(u) => u,
            Uri::Other(_) => panic!("not sip"),
        }
    }

    #[test]
    fn full_uri() {
        let u = sip("sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr?Subject=hi&X=a%20b");
        assert!(u.secure);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::V6("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some("tls"));
        assert!(u.is_loose_route());
        assert_eq!(u.headers[1], ("X".into(), "a b".into()));
        let again = sip(&u.to_string());
        assert_eq!(again, u);
    }

    #[test]
    fn escaped_user_and_params() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u@example.net"));
        let u = sip("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        assert_eq!(u.user.as_deref(), Some("caller"));
        assert!(u.params.contains("lr"));
        assert_eq!(u.params.get("name"), Some("value%41"));
        assert_eq!(sip(&u.to_string()), u);
        let u = sip("sip:null-%00-null@example.com");
        assert_eq!(u.user.as_deref(), Some("null-\0-null"));
        assert_eq!(u.to_string(), "sip:null-%00-null@example.com");
    }

    #[test]
    fn other_schemes() {
        assert_eq!(
            Uri::parse("soap.beep://192.0.2.103:3002").unwrap(),
            Uri::Other(AbsoluteUri {
                scheme: "soap.beep".into(),
                rest: "//192.0.2.103:3002".into()
            })
        );
        assert!(Uri::parse("tel:+1-201-555-0123").is_ok());
        assert!(Uri::parse("1nvalid:x").is_err());
        assert!(Uri::parse("nocolon").is_err());
    }

    #[test]
    fn refusals() {
        for s in [
            "sip:",
            "sip:@host",
            "sip:host:99999",
            "sip:host;;a",
            "sip:ho st",
            "sip:[::1",
            "sip:user@host?noequals",
            "sip:a%zz@host",
            "sip:host;a=",
        ] {
            assert!(Uri::parse(s).is_err(), "{s} should fail");
        }
    }
}
