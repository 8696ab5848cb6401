//! Header names, the ordered header list and its editing operations.
//!
//! Headers are kept as received (name spelling and unfolded value), so a proxy that
//! prepends a Via or rewrites a Contact re-emits every other header byte for byte.
//! Typed views are parsed on demand (see [`crate::typed`]).

use crate::error::ParseError;
use crate::text::{split_top_level, trim_wsp};
use std::fmt;

/// A header field name, normalised: compact forms map to their full names and lookup is
/// case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    /// Accept.
    Accept,
    /// Accept-Contact (compact `a`, RFC 3841).
    AcceptContact,
    /// Accept-Encoding.
    AcceptEncoding,
    /// Accept-Language.
    AcceptLanguage,
    /// Alert-Info.
    AlertInfo,
    /// Allow.
    Allow,
    /// Allow-Events (compact `u`, RFC 6665).
    AllowEvents,
    /// Authorization.
    Authorization,
    /// Call-ID (compact `i`).
    CallId,
    /// Call-Info.
    CallInfo,
    /// Contact (compact `m`).
    Contact,
    /// Content-Disposition.
    ContentDisposition,
    /// Content-Encoding (compact `e`).
    ContentEncoding,
    /// Content-Language.
    ContentLanguage,
    /// Content-Length (compact `l`).
    ContentLength,
    /// Content-Type (compact `c`).
    ContentType,
    /// CSeq.
    CSeq,
    /// Date.
    Date,
    /// Error-Info.
    ErrorInfo,
    /// Event (compact `o`, RFC 6665).
    Event,
    /// Expires.
    Expires,
    /// From (compact `f`).
    From,
    /// Identity (compact `y`, RFC 8224).
    Identity,
    /// Identity-Info (compact `n`, RFC 4474).
    IdentityInfo,
    /// In-Reply-To.
    InReplyTo,
    /// Max-Forwards.
    MaxForwards,
    /// Min-Expires.
    MinExpires,
    /// Path (RFC 3327).
    Path,
    /// Proxy-Authenticate.
    ProxyAuthenticate,
    /// Proxy-Authorization.
    ProxyAuthorization,
    /// Proxy-Require.
    ProxyRequire,
    /// Record-Route.
    RecordRoute,
    /// Refer-To (compact `r`, RFC 3515).
    ReferTo,
    /// Referred-By (compact `b`, RFC 3892).
    ReferredBy,
    /// Reject-Contact (compact `j`, RFC 3841).
    RejectContact,
    /// Request-Disposition (compact `d`, RFC 3841).
    RequestDisposition,
    /// Require.
    Require,
    /// Retry-After.
    RetryAfter,
    /// Route.
    Route,
    /// RSeq (RFC 3262).
    RSeq,
    /// RAck (RFC 3262).
    RAck,
    /// Server.
    Server,
    /// Session-Expires (compact `x`, RFC 4028).
    SessionExpires,
    /// Subject (compact `s`).
    Subject,
    /// Supported (compact `k`).
    Supported,
    /// Timestamp.
    Timestamp,
    /// To (compact `t`).
    To,
    /// Unsupported.
    Unsupported,
    /// User-Agent.
    UserAgent,
    /// Via (compact `v`).
    Via,
    /// Warning.
    Warning,
    /// WWW-Authenticate.
    WwwAuthenticate,
    /// Any other header; holds the lower-cased name.
    Other(String),
}

/// (name, compact form, canonical spelling, comma-separated list?)
const KNOWN: &[(HeaderName, Option<&str>, &str, bool)] = &[
    (HeaderName::Accept, None, "Accept", true),
    (HeaderName::AcceptContact, Some("a"), "Accept-Contact", true),
    (HeaderName::AcceptEncoding, None, "Accept-Encoding", true),
    (HeaderName::AcceptLanguage, None, "Accept-Language", true),
    (HeaderName::AlertInfo, None, "Alert-Info", true),
    (HeaderName::Allow, None, "Allow", true),
    (HeaderName::AllowEvents, Some("u"), "Allow-Events", true),
    (HeaderName::Authorization, None, "Authorization", false),
    (HeaderName::CallId, Some("i"), "Call-ID", false),
    (HeaderName::CallInfo, None, "Call-Info", true),
    (HeaderName::Contact, Some("m"), "Contact", true),
    (
        HeaderName::ContentDisposition,
        None,
        "Content-Disposition",
        false,
    ),
    (
        HeaderName::ContentEncoding,
        Some("e"),
        "Content-Encoding",
        true,
    ),
    (HeaderName::ContentLanguage, None, "Content-Language", true),
    (
        HeaderName::ContentLength,
        Some("l"),
        "Content-Length",
        false,
    ),
    (HeaderName::ContentType, Some("c"), "Content-Type", false),
    (HeaderName::CSeq, None, "CSeq", false),
    (HeaderName::Date, None, "Date", false),
    (HeaderName::ErrorInfo, None, "Error-Info", true),
    (HeaderName::Event, Some("o"), "Event", false),
    (HeaderName::Expires, None, "Expires", false),
    (HeaderName::From, Some("f"), "From", false),
    (HeaderName::Identity, Some("y"), "Identity", false),
    (HeaderName::IdentityInfo, Some("n"), "Identity-Info", false),
    (HeaderName::InReplyTo, None, "In-Reply-To", true),
    (HeaderName::MaxForwards, None, "Max-Forwards", false),
    (HeaderName::MinExpires, None, "Min-Expires", false),
    (HeaderName::Path, None, "Path", true),
    (
        HeaderName::ProxyAuthenticate,
        None,
        "Proxy-Authenticate",
        false,
    ),
    (
        HeaderName::ProxyAuthorization,
        None,
        "Proxy-Authorization",
        false,
    ),
    (HeaderName::ProxyRequire, None, "Proxy-Require", true),
    (HeaderName::RecordRoute, None, "Record-Route", true),
    (HeaderName::ReferTo, Some("r"), "Refer-To", false),
    (HeaderName::ReferredBy, Some("b"), "Referred-By", false),
    (HeaderName::RejectContact, Some("j"), "Reject-Contact", true),
    (
        HeaderName::RequestDisposition,
        Some("d"),
        "Request-Disposition",
        true,
    ),
    (HeaderName::Require, None, "Require", true),
    (HeaderName::RetryAfter, None, "Retry-After", false),
    (HeaderName::Route, None, "Route", true),
    (HeaderName::RSeq, None, "RSeq", false),
    (HeaderName::RAck, None, "RAck", false),
    (HeaderName::Server, None, "Server", false),
    (
        HeaderName::SessionExpires,
        Some("x"),
        "Session-Expires",
        false,
    ),
    (HeaderName::Subject, Some("s"), "Subject", false),
    (HeaderName::Supported, Some("k"), "Supported", true),
    (HeaderName::Timestamp, None, "Timestamp", false),
    (HeaderName::To, Some("t"), "To", false),
    (HeaderName::Unsupported, None, "Unsupported", true),
    (HeaderName::UserAgent, None, "User-Agent", false),
    (HeaderName::Via, Some("v"), "Via", true),
    (HeaderName::Warning, None, "Warning", true),
    (HeaderName::WwwAuthenticate, None, "WWW-Authenticate", false),
];

impl HeaderName {
    /// Normalises a header name as received (any case, compact or full form).
    pub fn parse(name: &str) -> HeaderName {
        if name.len() == 1 {
            for (h, compact, _, _) in KNOWN {
                if compact.is_some_and(|c| c.eq_ignore_ascii_case(name)) {
                    return h.clone();
                }
            }
        }
        for (h, _, full, _) in KNOWN {
            if full.eq_ignore_ascii_case(name) {
                return h.clone();
            }
        }
        HeaderName::Other(name.to_ascii_lowercase())
    }

    fn entry(&self) -> Option<&'static (HeaderName, Option<&'static str>, &'static str, bool)> {
        KNOWN.iter().find(|(h, _, _, _)| h == self)
    }

    /// The canonical (full, conventionally capitalised) name; `Other` names lower-case.
    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Other(s) => s,
            h => h.entry().map_or("", |e| e.2),
        }
    }

    /// `true` when several values may share one line separated by commas (RFC 3261 §7.3.1).
    pub fn is_list(&self) -> bool {
        self.entry().is_some_and(|e| e.3)
    }

    /// `true` for headers that must appear at most once: a second copy makes the message
    /// ambiguous (which Call-ID? which body length?) and is refused.
    pub fn is_single(&self) -> bool {
        matches!(
            self,
            HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::MaxForwards
                | HeaderName::ContentLength
                | HeaderName::ContentType
                | HeaderName::Expires
        )
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for HeaderName {
    fn from(s: &str) -> Self {
        HeaderName::parse(s)
    }
}

/// One header line: normalised name, the name as written, and the unfolded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    name: HeaderName,
    spelled: String,
    value: String,
}

impl Header {
    /// A line added by us: the canonical spelling of `name`.
    fn added(name: HeaderName, value: String) -> Header {
        Header {
            spelled: name.as_str().to_owned(),
            name,
            value,
        }
    }

    /// Normalised name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The name as it will be written (as received, or canonical for added headers).
    pub fn spelled(&self) -> &str {
        &self.spelled
    }

    /// The value (unfolded, trimmed).
    pub fn value(&self) -> &str {
        &self.value
    }

    pub(crate) fn received(name: HeaderName, spelled: &str, value: &str) -> Self {
        Header {
            name,
            spelled: spelled.to_owned(),
            value: value.to_owned(),
        }
    }

    pub(crate) fn set_value_unchecked(&mut self, value: String) {
        self.value = value;
    }
}

/// The ordered header fields of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    lines: Vec<Header>,
}

fn check_value(name: &HeaderName, value: &str) -> Result<(), ParseError> {
    if value.contains(['\r', '\n']) {
        return Err(ParseError::HeaderValueInjection {
            name: name.as_str().to_owned(),
        });
    }
    Ok(())
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn push_received(&mut self, h: Header) {
        self.lines.push(h);
    }

    /// All header lines in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.lines.iter()
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// `true` when there are no header lines.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// `true` when at least one line has this name.
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.lines.iter().any(|h| &h.name == name)
    }

    /// The value of the first line with this name.
    pub fn first(&self, name: &HeaderName) -> Option<&str> {
        self.lines
            .iter()
            .find(|h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    /// Every value with this name: list headers are split on top-level commas, so
    /// `Via: a, b` and two `Via` lines give the same sequence.
    pub fn values(&self, name: &HeaderName) -> Result<Vec<&str>, ParseError> {
        let mut out = Vec::new();
        for h in self.lines.iter().filter(|h| &h.name == name) {
            if name.is_list() {
                let parts = split_top_level(&h.value, ',', false)
                    .map_err(|r| ParseError::header(name.as_str(), r))?;
                out.extend(parts);
            } else {
                out.push(h.value.as_str());
            }
        }
        Ok(out)
    }

    /// Appends a line with the canonical spelling of `name`.
    pub fn push(&mut self, name: HeaderName, value: impl Into<String>) -> Result<(), ParseError> {
        let value = value.into();
        check_value(&name, &value)?;
        self.lines.push(Header::added(name, value));
        Ok(())
    }

    /// Inserts a line before the first line of the same name (or at the top if there is
    /// none): what a proxy does with Via, Record-Route and Path.
    pub fn prepend(
        &mut self,
        name: HeaderName,
        value: impl Into<String>,
    ) -> Result<(), ParseError> {
        let value = value.into();
        check_value(&name, &value)?;
        let at = self.lines.iter().position(|h| h.name == name).unwrap_or(0);
        self.lines.insert(at, Header::added(name, value));
        Ok(())
    }

    /// Replaces the value of the first line with this name and removes the others; appends
    /// a line if there is none. The replaced line keeps its position and spelling.
    pub fn replace(
        &mut self,
        name: HeaderName,
        value: impl Into<String>,
    ) -> Result<(), ParseError> {
        let value = value.into();
        check_value(&name, &value)?;
        match self.lines.iter().position(|h| h.name == name) {
            Some(i) => {
                self.lines[i].value = value;
                let mut n = 0;
                self.lines.retain(|h| {
                    let keep = h.name != name || n == i;
                    n += 1;
                    keep
                });
                Ok(())
            }
            None => self.push(name, value),
        }
    }

    /// Removes every line with this name; returns how many were removed.
    pub fn remove_all(&mut self, name: &HeaderName) -> usize {
        let before = self.lines.len();
        self.lines.retain(|h| &h.name != name);
        before - self.lines.len()
    }

    /// Removes the first value of a (list) header: the whole first line if it holds one
    /// value, otherwise that value only (the rest of the line is re-joined with ", ").
    /// This is how a proxy pops its own Via from a response or a Route entry.
    pub fn remove_first_value(&mut self, name: &HeaderName) -> Result<Option<String>, ParseError> {
        let Some(i) = self.lines.iter().position(|h| &h.name == name) else {
            return Ok(None);
        };
        if !name.is_list() {
            return Ok(Some(self.lines.remove(i).value));
        }
        let parts = split_top_level(&self.lines[i].value, ',', false)
            .map_err(|r| ParseError::header(name.as_str(), r))?;
        let first = parts.first().map(|s| (*s).to_owned());
        if parts.len() <= 1 {
            self.lines.remove(i);
        } else {
            let rest = parts[1..].join(", ");
            self.lines[i].value = rest;
        }
        Ok(first)
    }

    /// Replaces the first value of a list header (e.g. rewriting the first Contact),
    /// leaving the other values on that line untouched.
    pub fn replace_first_value(
        &mut self,
        name: &HeaderName,
        value: &str,
    ) -> Result<(), ParseError> {
        check_value(name, value)?;
        let Some(i) = self.lines.iter().position(|h| &h.name == name) else {
            return self.push(name.clone(), value);
        };
        if !name.is_list() {
            self.lines[i].value = value.to_owned();
            return Ok(());
        }
        let parts = split_top_level(&self.lines[i].value, ',', false)
            .map_err(|r| ParseError::header(name.as_str(), r))?;
        let mut joined = value.to_owned();
        for p in parts.iter().skip(1) {
            joined.push_str(", ");
            joined.push_str(p);
        }
        self.lines[i].value = joined;
        Ok(())
    }

    pub(crate) fn lines_mut(&mut self) -> std::slice::IterMut<'_, Header> {
        self.lines.iter_mut()
    }
}

/// Trims and checks a header name as received.
pub(crate) fn check_name(name: &str) -> Option<&str> {
    let n = trim_wsp(name);
    if crate::text::is_token(n) && !name.starts_with([' ', '\t']) {
        Some(n)
    } else {
        None
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.lines.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(HeaderName::parse("v"), HeaderName::Via);
        assert_eq!(HeaderName::parse("ViA"), HeaderName::Via);
        assert_eq!(HeaderName::parse("I"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::parse("k"), HeaderName::Supported);
        assert_eq!(
            HeaderName::parse("WWW-authenticate"),
            HeaderName::WwwAuthenticate
        );
        assert_eq!(
            HeaderName::parse("X-Foo"),
            HeaderName::Other("x-foo".into())
        );
        assert_eq!(HeaderName::CallId.as_str(), "Call-ID");
        assert!(HeaderName::Via.is_list());
        assert!(!HeaderName::Authorization.is_list());
    }

    #[test]
    fn edit_operations() {
        let mut h = Headers::new();
        h.push(
            HeaderName::Via,
            "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
        )
        .unwrap();
        h.push(HeaderName::Other("x-a".into()), "1").unwrap();
        h.prepend(HeaderName::Via, "SIP/2.0/TLS p;branch=z9hG4bK0")
            .unwrap();
        assert_eq!(h.values(&HeaderName::Via).unwrap().len(), 3);
        assert_eq!(
            h.remove_first_value(&HeaderName::Via).unwrap().as_deref(),
            Some("SIP/2.0/TLS p;branch=z9hG4bK0")
        );
        assert_eq!(
            h.remove_first_value(&HeaderName::Via).unwrap().as_deref(),
            Some("SIP/2.0/UDP a;branch=z9hG4bK1")
        );
        assert_eq!(
            h.first(&HeaderName::Via),
            Some("SIP/2.0/UDP b;branch=z9hG4bK2")
        );
        h.replace(HeaderName::Other("x-a".into()), "2").unwrap();
        assert_eq!(h.first(&"X-A".into()), Some("2"));
        assert!(h.push(HeaderName::Subject, "a\r\nVia: evil").is_err());
        assert_eq!(h.remove_all(&HeaderName::Via), 1);
    }
}
