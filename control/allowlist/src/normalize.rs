//! URL normalization: every request URL and every rule URL is brought to one canonical form
//! before they are compared, so that no spelling of a path can step outside a prefix rule.
//!
//! The caller must forward the canonical form ([`NormalizedUrl`]'s `Display`), never the bytes
//! it received: then the internal server sees exactly the path the allow list judged.
//!
//! The rules, in the order they are applied:
//! 1. at most [`MAX_URL_LEN`] bytes, ASCII only (raw non-ASCII is refused: IDN hosts must come
//!    as `xn--` labels, and paths must percent-encode);
//! 2. the scheme is `http` or `https`, any case, stored lower case; `://` must follow;
//! 3. userinfo (`user@host`) is refused; a backslash anywhere before the query is refused
//!    (some servers read it as `/`);
//! 4. the host is a DNS name (letters, digits, `-`, labels of 1-63, at most 253, no `-` at a
//!    label's ends, one trailing dot dropped), a dotted-quad IPv4 address, or a bracketed IPv6
//!    address; stored lower case. A name whose last label is all digits or hex-looking
//!    (`127.1`, `0x7f.1`) is refused, since resolvers read those as addresses;
//! 5. the port is digits up to 65535 (empty `:` refused); absent means the scheme's default
//!    (80, 443), and a default port written out (`:443`) is the same URL;
//! 6. the fragment is dropped; the query is kept as it came (validated, never decoded) and
//!    plays no part in matching;
//! 7. the path is percent-decoded once for unreserved characters (`A-Z a-z 0-9 - . _ ~`); any
//!    other escape is kept with upper-case hex. Escapes of `/`, `\`, NUL and other control
//!    characters are refused, as is `%25` followed by two hex digits (double encoding, which a
//!    server that decodes twice would turn into a `.` or `/`), and escaped bytes that are not
//!    well-formed UTF-8 (overlong forms such as `%C0%AE` included);
//! 8. runs of `/` collapse to one, then RFC 3986 §5.2.4 remove_dot_segments runs; a segment
//!    that is `.` or `..` followed by `;parameters` is refused (Tomcat, which Unified CM runs,
//!    treats `..;x` as `..`). An empty path is `/`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The longest URL accepted, in bytes; longer ones are refused before any parsing.
pub const MAX_URL_LEN: usize = 8192;

/// Why a URL was refused by the normalizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
#[non_exhaustive]
pub enum NormalizeError {
    /// Longer than [`MAX_URL_LEN`].
    #[error("URL longer than {MAX_URL_LEN} bytes")]
    TooLong,
    /// Raw bytes outside ASCII; hosts must use `xn--` labels, paths percent-encoding.
    #[error("URL contains non-ASCII bytes (use xn-- labels for names, percent-encoding in paths)")]
    NonAscii,
    /// No `scheme://` at the start.
    #[error("URL is not absolute: expected http://host or https://host")]
    NotAbsolute,
    /// A scheme other than http and https.
    #[error("scheme is neither http nor https")]
    UnsupportedScheme,
    /// `user[:password]@` before the host.
    #[error("userinfo (user@host) is not allowed in URLs")]
    Userinfo,
    /// A backslash in the authority or path, raw or percent-encoded.
    #[error("backslash in URL (raw or %5C)")]
    Backslash,
    /// An empty host, or one that is neither a DNS name nor an IP address.
    #[error("host is not a valid DNS name or IP address")]
    InvalidHost,
    /// A port that is empty, not a number, or above 65535.
    #[error("port is not a number in 0-65535")]
    InvalidPort,
    /// `%` not followed by two hex digits.
    #[error("bad percent-encoding (% must be followed by two hex digits)")]
    InvalidPercentEncoding,
    /// `%2F` in the path: it would let a segment hide a `/`.
    #[error("encoded slash (%2F) in path")]
    EncodedSlash,
    /// `%00` in the path.
    #[error("encoded NUL (%00) in path")]
    EncodedNul,
    /// An encoded control character other than NUL.
    #[error("encoded control character in path")]
    EncodedControl,
    /// `%25` followed by two hex digits: double encoding.
    #[error("double percent-encoding (%25 followed by hex digits)")]
    DoubleEncoding,
    /// Escaped bytes that are not well-formed UTF-8 (including overlong forms).
    #[error("percent-encoded bytes are not well-formed UTF-8 (overlong or truncated)")]
    InvalidUtf8,
    /// A character that RFC 3986 does not allow unencoded here (space, `"`, `<`, `|`, ...).
    #[error("character not allowed unencoded in a URL")]
    InvalidCharacter,
    /// A `.` or `..` segment carrying `;parameters`.
    #[error("dot segment with parameters (..;) in path")]
    DotSegmentParameters,
}

/// An HTTP(S) URL in canonical form: what rules are matched against and what is forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NormalizedUrl {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Lower-case DNS name, dotted IPv4, or bracketed IPv6 (`[::1]`).
    pub host: String,
    /// Always present: the default port of the scheme when none was written.
    pub port: u16,
    /// Canonical path: starts with `/`, no dot segments, no runs of `/`.
    pub path: String,
    /// The query without `?`, as received (validated, not decoded); not used for matching.
    pub query: Option<String>,
}

/// The two schemes the allow list knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP, default port 80.
    Http,
    /// HTTP over TLS, default port 443.
    Https,
}

impl Scheme {
    /// The port used when a URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Display for NormalizedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path)?;
        if let Some(query) = &self.query {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

impl NormalizedUrl {
    /// Normalizes `url` (see the module docs for every rule) or says why it cannot be.
    pub fn parse(url: &str) -> Result<Self, NormalizeError> {
        if url.len() > MAX_URL_LEN {
            return Err(NormalizeError::TooLong);
        }
        if !url.is_ascii() {
            return Err(NormalizeError::NonAscii);
        }
        let (scheme_text, rest) = url.split_once("://").ok_or(NormalizeError::NotAbsolute)?;
        let scheme = match scheme_text.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ if scheme_text.is_empty() || scheme_text.contains(['/', '?', '#']) => {
                return Err(NormalizeError::NotAbsolute)
            }
            _ => return Err(NormalizeError::UnsupportedScheme),
        };
        // The fragment never reaches a server: drop it before anything else looks at the URL.
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(authority_end);
        let (host, port) = parse_authority(authority, scheme)?;
        let (raw_path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        if let Some(query) = query {
            validate_query(query)?;
        }
        let path = normalize_path(raw_path)?;
        Ok(NormalizedUrl {
            scheme,
            host,
            port,
            path,
            query: query.map(str::to_owned),
        })
    }
}

fn parse_authority(authority: &str, scheme: Scheme) -> Result<(String, u16), NormalizeError> {
    if authority.contains('@') {
        return Err(NormalizeError::Userinfo);
    }
    if authority.contains('\\') {
        return Err(NormalizeError::Backslash);
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inner, after) = bracketed
            .split_once(']')
            .ok_or(NormalizeError::InvalidHost)?;
        let address: Ipv6Addr = inner.parse().map_err(|_| NormalizeError::InvalidHost)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(NormalizeError::InvalidHost)?),
        };
        (format!("[{address}]"), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        (normalize_host(host)?, port)
    };
    let port = match port {
        None => scheme.default_port(),
        Some(digits) => parse_port(digits)?,
    };
    Ok((host, port))
}

fn parse_port(digits: &str) -> Result<u16, NormalizeError> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NormalizeError::InvalidPort);
    }
    digits.parse().map_err(|_| NormalizeError::InvalidPort)
}

fn normalize_host(host: &str) -> Result<String, NormalizeError> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty() || host.len() > 253 {
        return Err(NormalizeError::InvalidHost);
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host);
    }
    let labels: Vec<&str> = host.split('.').collect();
    for label in &labels {
        let bytes = label.as_bytes();
        let well_formed = !bytes.is_empty()
            && bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes.first() != Some(&b'-')
            && bytes.last() != Some(&b'-');
        if !well_formed {
            return Err(NormalizeError::InvalidHost);
        }
    }
    // `127.1`, `2130706433` or `0x7f.1` would be read as addresses by inet_aton-style
    // resolvers: a name must not look numeric in its last label.
    let last = labels.last().copied().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return Err(NormalizeError::InvalidHost);
    }
    Ok(host)
}

/// `sub-delims` and `:` `@`: allowed raw in a path segment besides unreserved characters.
fn is_pchar_extra(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@'
    )
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Reads the escape at `bytes[i]` (which is `%`) and returns the byte it stands for.
fn escaped_byte(bytes: &[u8], i: usize) -> Result<u8, NormalizeError> {
    let high = bytes.get(i + 1).copied().and_then(hex_value);
    let low = bytes.get(i + 2).copied().and_then(hex_value);
    match (high, low) {
        (Some(high), Some(low)) => Ok(high << 4 | low),
        _ => Err(NormalizeError::InvalidPercentEncoding),
    }
}

fn validate_query(query: &str) -> Result<(), NormalizeError> {
    let bytes = query.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' => {
                escaped_byte(bytes, i)?;
            }
            b'/' | b'?' => {}
            b'\\' => return Err(NormalizeError::Backslash),
            _ if is_unreserved(b) || is_pchar_extra(b) => {}
            _ => return Err(NormalizeError::InvalidCharacter),
        }
    }
    Ok(())
}

/// Decodes what may be decoded, validates the rest, collapses `//` and removes dot segments.
fn normalize_path(raw: &str) -> Result<String, NormalizeError> {
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    // Escaped bytes >= 0x80 are collected so the UTF-8 check sees whole sequences.
    let mut high_run: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let value = escaped_byte(bytes, i)?;
            if value >= 0x80 {
                high_run.push(value);
                i += 3;
                continue;
            }
            flush_high_run(&mut high_run, &mut decoded)?;
            match value {
                b'/' => return Err(NormalizeError::EncodedSlash),
                b'\\' => return Err(NormalizeError::Backslash),
                0 => return Err(NormalizeError::EncodedNul),
                0x01..=0x1f | 0x7f => return Err(NormalizeError::EncodedControl),
                _ if is_unreserved(value) => decoded.push(char::from(value)),
                _ => push_escape(&mut decoded, value),
            }
            i += 3;
            continue;
        }
        flush_high_run(&mut high_run, &mut decoded)?;
        match b {
            b'/' => decoded.push('/'),
            b'\\' => return Err(NormalizeError::Backslash),
            _ if is_unreserved(b) || is_pchar_extra(b) => decoded.push(char::from(b)),
            _ => return Err(NormalizeError::InvalidCharacter),
        }
        i += 1;
    }
    flush_high_run(&mut high_run, &mut decoded)?;
    // Checked on the decoded text, so `%25%32%65` (whose `%32%65` decode to `2e`) is caught
    // as surely as `%252e`, and the canonical form never reads as double encoding.
    if decoded
        .as_bytes()
        .windows(5)
        .any(|w| w[..3] == *b"%25" && hex_value(w[3]).is_some() && hex_value(w[4]).is_some())
    {
        return Err(NormalizeError::DoubleEncoding);
    }
    remove_dot_segments(&decoded)
}

fn push_escape(out: &mut String, value: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(value >> 4)]));
    out.push(char::from(HEX[usize::from(value & 0xf)]));
}

fn flush_high_run(run: &mut Vec<u8>, out: &mut String) -> Result<(), NormalizeError> {
    if run.is_empty() {
        return Ok(());
    }
    std::str::from_utf8(run).map_err(|_| NormalizeError::InvalidUtf8)?;
    for &value in run.iter() {
        push_escape(out, value);
    }
    run.clear();
    Ok(())
}

/// Collapses runs of `/` first, so `/a//../b` is `/b` (the stricter reading), then applies
/// RFC 3986 §5.2.4 on whole segments.
fn remove_dot_segments(path: &str) -> Result<String, NormalizeError> {
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let trailing_slash = path.ends_with('/');
    let mut ends_in_directory = trailing_slash;
    for (index, segment) in segments.iter().enumerate() {
        let last = index + 1 == segments.len();
        let bare = segment.split_once(';').map_or(*segment, |(name, _)| name);
        if (bare == "." || bare == "..") && bare != *segment {
            return Err(NormalizeError::DotSegmentParameters);
        }
        match *segment {
            "." => {}
            ".." => {
                output.pop();
            }
            _ => output.push(segment),
        }
        if last && (*segment == "." || *segment == "..") {
            // `/a/b/..` names the directory `/a/`, as RFC 3986 resolves it.
            ends_in_directory = true;
        }
    }
    let mut normalized = String::with_capacity(path.len() + 1);
    for segment in &output {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() || (ends_in_directory && !output.is_empty()) {
        normalized.push('/');
    }
    Ok(normalized)
}
