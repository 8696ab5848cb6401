//! Requests, responses, the strict parser and the serializer (RFC 3261 §7, §20, §25).

use crate::error::ParseError;
use crate::header::{check_name, Header, HeaderName, Headers};
use crate::text::{parse_decimal, trim_wsp};
use crate::typed::{validate, CSeq, Method};
use crate::uri::Uri;

/// Bounds on what the parser accepts; everything above is refused with a typed error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest whole message (start line, headers and body), default 64 KiB.
    pub max_message_size: usize,
    /// Most header lines (after unfolding), default 256.
    pub max_headers: usize,
    /// Longest single header field or start line after unfolding, default 8 KiB.
    pub max_header_line: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_message_size: 64 * 1024,
            max_headers: 256,
            max_header_line: 8 * 1024,
        }
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method on the request line.
    pub method: Method,
    /// Request-URI.
    pub uri: Uri,
    /// Header fields in order.
    pub headers: Headers,
    /// Body (its length is written as Content-Length when that header is present).
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 100-699.
    pub status: u16,
    /// Reason phrase (may be empty).
    pub reason: String,
    /// Header fields in order.
    pub headers: Headers,
    /// Body.
    pub body: Vec<u8>,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn truncated(s: &str) -> String {
    s.chars().take(120).collect()
}

impl Message {
    /// Parses one message from a datagram (or a framed stream message) with the default
    /// limits. Octets after the Content-Length body are ignored (RFC 3261 §18.3).
    pub fn parse(input: &[u8]) -> Result<Message, ParseError> {
        Self::parse_with(input, &ParseLimits::default())
    }

    /// Parses with explicit limits.
    pub fn parse_with(input: &[u8], limits: &ParseLimits) -> Result<Message, ParseError> {
        if input.len() > limits.max_message_size {
            return Err(ParseError::TooLarge {
                size: input.len(),
                limit: limits.max_message_size,
            });
        }
        let mut data = input;
        // §7.5: CRLFs before the start line are ignored.
        while let Some(rest) = data.strip_prefix(b"\r\n") {
            data = rest;
        }
        let head_end = find(data, b"\r\n\r\n").ok_or(ParseError::Incomplete)?;
        let head = std::str::from_utf8(&data[..head_end]).map_err(|e| ParseError::InvalidUtf8 {
            line: 1 + data[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
        })?;
        let available = &data[head_end + 4..];

        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap_or_default();
        if start.len() > limits.max_header_line {
            return Err(ParseError::HeaderLineTooLong {
                name: "start line".into(),
                len: start.len(),
                limit: limits.max_header_line,
            });
        }
        let start = parse_start_line(start)?;
        let headers = parse_header_lines(lines, limits)?;

        // Validate known headers in order, so the first bad line is the one reported.
        let mut seen: Vec<&HeaderName> = Vec::new();
        let mut content_length = None;
        for h in headers.iter() {
            let name = h.name();
            if name.is_single() {
                if seen.contains(&name) {
                    return Err(ParseError::DuplicateHeader(name.as_str().to_owned()));
                }
                seen.push(name);
            }
            if *name == HeaderName::ContentLength {
                let v = parse_decimal(h.value(), u64::MAX)
                    .map_err(|_| ParseError::BadContentLength(truncated(h.value())))?;
                if v > limits.max_message_size as u64 {
                    return Err(ParseError::ContentLengthExceedsLimit {
                        declared: v,
                        limit: limits.max_message_size,
                    });
                }
                content_length = Some(v as usize);
            } else {
                validate(name, h.value())?;
            }
        }
        let mut headers = headers;
        if let Some(cl) = content_length {
            // Canonical spelling ("0150" → "150") so re-serialisation is stable.
            for h in headers.lines_mut() {
                if *h.name() == HeaderName::ContentLength {
                    h.set_value_unchecked(cl.to_string());
                }
            }
        }

        let is_request = matches!(start, StartLine::Request(..));
        let mandatory: &[(HeaderName, &'static str)] = &[
            (HeaderName::To, "To"),
            (HeaderName::From, "From"),
            (HeaderName::CSeq, "CSeq"),
            (HeaderName::CallId, "Call-ID"),
            (HeaderName::MaxForwards, "Max-Forwards"),
            (HeaderName::Via, "Via"),
        ];
        for (name, label) in mandatory {
            if *name == HeaderName::MaxForwards && !is_request {
                continue;
            }
            if !headers.contains(name) {
                return Err(ParseError::MissingHeader(label));
            }
        }

        let body = match content_length {
            Some(n) if n > available.len() => {
                return Err(ParseError::ContentLengthExceedsBody {
                    declared: n,
                    available: available.len(),
                })
            }
            Some(n) => available[..n].to_vec(),
            None => available.to_vec(),
        };

        Ok(match start {
            StartLine::Request(method, uri) => {
                let cseq = headers.cseq()?;
                if cseq.method != method {
                    return Err(ParseError::CSeqMismatch {
                        method: method.as_str().to_owned(),
                        cseq: cseq.method.as_str().to_owned(),
                    });
                }
                Message::Request(Request {
                    method,
                    uri,
                    headers,
                    body,
                })
            }
            StartLine::Response(status, reason) => Message::Response(Response {
                status,
                reason,
                headers,
                body,
            }),
        })
    }

    /// The header fields.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    /// The header fields, mutably.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    /// Serializes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body().len());
        self.write_to(&mut out);
        out
    }

    /// Appends the serialized message to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Message::Request(r) => r.write_to(out),
            Message::Response(r) => r.write_to(out),
        }
    }
}

enum StartLine {
    Request(Method, Uri),
    Response(u16, String),
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    let bad = |reason| ParseError::BadStartLine {
        line: truncated(line),
        reason,
    };
    if let Some(rest) = line.strip_prefix("SIP/") {
        let (version, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if version != "2.0" {
            return Err(ParseError::UnsupportedVersion(format!(
                "SIP/{}",
                truncated(version)
            )));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status = match code.parse::<u16>() {
            Ok(c) if code.len() == 3 && (100..=699).contains(&c) => c,
            _ => return Err(ParseError::BadStatusCode(truncated(code))),
        };
        if reason.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad("control character in reason phrase"));
        }
        return Ok(StartLine::Response(status, reason.to_owned()));
    }
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad(
            "expected exactly 'Method SP Request-URI SP SIP-Version'",
        ));
    }
    let method = Method::parse(parts[0]).ok_or_else(|| bad("method is not a token"))?;
    match parts[2] {
        "SIP/2.0" => {}
        v if v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) => {
            return Err(ParseError::UnsupportedVersion(truncated(v)))
        }
        _ => return Err(bad("bad SIP-Version")),
    }
    let uri_text = parts[1];
    let bad_uri = |reason: String| ParseError::BadRequestUri {
        uri: truncated(uri_text),
        reason,
    };
    if uri_text.starts_with('<') {
        return Err(bad_uri("Request-URI must not be enclosed in <>".into()));
    }
    let uri = Uri::parse(uri_text).map_err(|e| bad_uri(e.to_string()))?;
    if uri.as_sip().is_some_and(|u| !u.headers.is_empty()) {
        return Err(bad_uri("headers are not allowed in a Request-URI".into()));
    }
    Ok(StartLine::Request(method, uri))
}

fn parse_header_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
    limits: &ParseLimits,
) -> Result<Headers, ParseError> {
    let mut headers = Headers::new();
    let mut current: Option<(&str, String)> = None;
    let flush = |cur: Option<(&str, String)>, headers: &mut Headers| -> Result<(), ParseError> {
        let Some((name, value)) = cur else {
            return Ok(());
        };
        let value = trim_wsp(&value);
        if name.len() + value.len() + 2 > limits.max_header_line {
            return Err(ParseError::HeaderLineTooLong {
                name: truncated(name),
                len: name.len() + value.len() + 2,
                limit: limits.max_header_line,
            });
        }
        if headers.len() >= limits.max_headers {
            return Err(ParseError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        headers.push_received(Header::received(HeaderName::parse(name), name, value));
        Ok(())
    };
    for line in lines {
        if line.contains(['\r', '\n']) {
            return Err(ParseError::BadHeaderLine {
                line: truncated(line),
                reason: "bare CR or LF",
            });
        }
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = current.as_mut() else {
                return Err(ParseError::BadHeaderLine {
                    line: truncated(line),
                    reason: "continuation line before any header",
                });
            };
            let more = trim_wsp(line);
            if value.len() + more.len() > limits.max_header_line {
                return Err(ParseError::HeaderLineTooLong {
                    name: "folded header".into(),
                    len: value.len() + more.len(),
                    limit: limits.max_header_line,
                });
            }
            // LWS (CRLF + WSP) is equivalent to a single SP.
            let trimmed_len = value.trim_end_matches([' ', '\t']).len();
            value.truncate(trimmed_len);
            if !more.is_empty() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
            }
            continue;
        }
        flush(current.take(), &mut headers)?;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ParseError::BadHeaderLine {
                line: truncated(line),
                reason: "no ':'",
            })?;
        let name = check_name(name).ok_or_else(|| ParseError::BadHeaderLine {
            line: truncated(line),
            reason: "header name is not a token",
        })?;
        current = Some((name, value.to_owned()));
    }
    flush(current.take(), &mut headers)?;
    Ok(headers)
}

/// Start line, headers (Content-Length from the body), blank line and body.
fn write_message(
    start: std::fmt::Arguments<'_>,
    headers: &Headers,
    body: &[u8],
    out: &mut Vec<u8>,
) {
    let _ = std::io::Write::write_fmt(out, start);
    write_headers(headers, body.len(), out);
    out.extend_from_slice(body);
}

fn write_headers(headers: &Headers, body_len: usize, out: &mut Vec<u8>) {
    for h in headers {
        out.extend_from_slice(h.spelled().as_bytes());
        out.extend_from_slice(b": ");
        if *h.name() == HeaderName::ContentLength {
            out.extend_from_slice(body_len.to_string().as_bytes());
        } else {
            out.extend_from_slice(h.value().as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Appends the serialized request to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let start = format_args!("{} {} SIP/2.0\r\n", self.method, self.uri);
        write_message(start, &self.headers, &self.body, out);
    }

    /// Serializes the request.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        self.write_to(&mut out);
        out
    }

    /// Replaces the body, setting Content-Type (when given) and Content-Length.
    pub fn set_body(
        &mut self,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(), ParseError> {
        set_body(&mut self.headers, &mut self.body, content_type, body)
    }

    /// Decrements Max-Forwards as a proxy must (RFC 3261 §16.6 step 3), adding
    /// `Max-Forwards: 70` when absent. Returns `Ok(None)` when it is already 0: the
    /// request must not be forwarded (answer 483, or 200 for OPTIONS).
    pub fn decrement_max_forwards(&mut self) -> Result<Option<u8>, ParseError> {
        match self.headers.max_forwards()? {
            None => {
                self.headers.push(HeaderName::MaxForwards, "70")?;
                Ok(Some(70))
            }
            Some(0) => Ok(None),
            Some(n) => {
                self.headers
                    .replace(HeaderName::MaxForwards, (n - 1).to_string())?;
                Ok(Some(n - 1))
            }
        }
    }

    /// Builds a response as a UAS does (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq
    /// copied; a To tag added when given and the request's To has none; Record-Route
    /// copied into 101-299 responses (§12.1.1); `Content-Length: 0`.
    pub fn make_response(&self, status: u16, reason: &str, to_tag: Option<&str>) -> Response {
        let mut headers = Headers::new();
        for h in self.headers.iter() {
            let copy = match h.name() {
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => true,
                HeaderName::RecordRoute => (101..300).contains(&status),
                HeaderName::Timestamp => status == 100,
                HeaderName::To => {
                    let mut value = h.value().to_owned();
                    if let Some(tag) = to_tag {
                        let has_tag = self.headers.to_addr().is_ok_and(|t| t.tag().is_some());
                        if !has_tag && status > 100 {
                            value.push_str(";tag=");
                            value.push_str(tag);
                        }
                    }
                    headers.push_received(Header::received(HeaderName::To, h.spelled(), &value));
                    false
                }
                _ => false,
            };
            if copy {
                headers.push_received(h.clone());
            }
        }
        headers.push_received(Header::received(
            HeaderName::ContentLength,
            "Content-Length",
            "0",
        ));
        Response {
            status,
            reason: reason.replace(['\r', '\n'], " "),
            headers,
            body: Vec::new(),
        }
    }

    /// Builds the CANCEL for this (INVITE) request (RFC 3261 §9.1): same Request-URI,
    /// Call-ID, From, To, CSeq number and top Via; Route copied.
    pub fn make_cancel(&self) -> Result<Request, ParseError> {
        self.derived(Method::Cancel, None)
    }

    /// Builds the ACK for a non-2xx final response to this INVITE (RFC 3261 §17.1.1.3):
    /// To from the response (with its tag), everything else from the request.
    pub fn make_ack_for_non_2xx(&self, response: &Response) -> Result<Request, ParseError> {
        let to = response
            .headers
            .first(&HeaderName::To)
            .ok_or(ParseError::MissingHeader("To"))?;
        self.derived(Method::Ack, Some(to))
    }

    fn derived(&self, method: Method, to: Option<&str>) -> Result<Request, ParseError> {
        let mut r = Request::new(method.clone(), self.uri.clone());
        let top_via = self
            .headers
            .values(&HeaderName::Via)?
            .first()
            .map(|s| (*s).to_owned())
            .ok_or(ParseError::MissingHeader("Via"))?;
        r.headers.push(HeaderName::Via, top_via)?;
        r.headers.push(HeaderName::MaxForwards, "70")?;
        for (name, label) in [(HeaderName::From, "From"), (HeaderName::To, "To")] {
            let v = match (&name, to) {
                (HeaderName::To, Some(t)) => t,
                _ => self
                    .headers
                    .first(&name)
                    .ok_or(ParseError::MissingHeader(label))?,
            };
            r.headers.push(name, v)?;
        }
        r.headers
            .push(HeaderName::CallId, self.headers.call_id()?)?;
        let cseq = self.headers.cseq()?;
        r.headers.push(
            HeaderName::CSeq,
            CSeq {
                seq: cseq.seq,
                method,
            }
            .to_string(),
        )?;
        for h in self
            .headers
            .iter()
            .filter(|h| *h.name() == HeaderName::Route)
        {
            r.headers.push(HeaderName::Route, h.value())?;
        }
        r.headers.push(HeaderName::ContentLength, "0")?;
        Ok(r)
    }
}

impl Response {
    /// Appends the serialized response to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let reason = self.reason.replace(['\r', '\n'], " ");
        let start = format_args!("SIP/2.0 {} {}\r\n", self.status, reason);
        write_message(start, &self.headers, &self.body, out);
    }

    /// Serializes the response.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        self.write_to(&mut out);
        out
    }

    /// Replaces the body, setting Content-Type (when given) and Content-Length.
    pub fn set_body(
        &mut self,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(), ParseError> {
        set_body(&mut self.headers, &mut self.body, content_type, body)
    }

    /// 1xx.
    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn set_body(
    headers: &mut Headers,
    slot: &mut Vec<u8>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<(), ParseError> {
    if let Some(ct) = content_type {
        headers.replace(HeaderName::ContentType, ct)?;
    }
    headers.replace(HeaderName::ContentLength, body.len().to_string())?;
    *slot = body;
    Ok(())
}

impl From<Request> for Message {
    fn from(r: Request) -> Self {
        Message::Request(r)
    }
}

impl From<Response> for Message {
    fn from(r: Response) -> Self {
        Message::Response(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
        Via: SIP/2.0/TLS client.atlanta.example.com:5061;branch=z9hG4bK74bf9\r\n\
        Max-Forwards: 70\r\n\
        From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
        To: Bob <sip:bob@biloxi.example.com>\r\n\
        Call-ID: 3848276298220188511@atlanta.example.com\r\n\
        CSeq: 1 INVITE\r\n\
        Contact: <sip:alice@client.atlanta.example.com;transport=tls>\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\r\nv=0\n";

    fn req(s: &str) -> Request {
        match Message::parse(s.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => panic!("response"),
        }
    }

    #[test]
    fn parse_and_round_trip() {
        let r = req(INVITE);
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.body, b"v=0\n");
        assert_eq!(r.headers.cseq().unwrap().seq, 1);
        let bytes = Message::Request(r.clone()).to_bytes();
        assert_eq!(bytes, INVITE.as_bytes());
        assert_eq!(Message::parse(&bytes).unwrap(), Message::Request(r));
    }

    #[test]
    fn proxy_edits_leave_other_headers_alone() {
        let mut r = req(INVITE);
        r.headers
            .prepend(
                HeaderName::Via,
                "SIP/2.0/TLS edge.example.com;branch=z9hG4bKp1",
            )
            .unwrap();
        r.headers
            .prepend(HeaderName::RecordRoute, "<sip:edge.example.com;lr>")
            .unwrap();
        assert_eq!(r.decrement_max_forwards().unwrap(), Some(69));
        let out = String::from_utf8(r.to_bytes()).unwrap();
        assert!(out.starts_with(
            "INVITE sip:bob@biloxi.example.com SIP/2.0\r\nRecord-Route: <sip:edge.example.com;lr>\r\nVia: SIP/2.0/TLS edge.example.com;branch=z9hG4bKp1\r\nVia: SIP/2.0/TLS client"
        ));
        assert!(out.contains(
            "Max-Forwards: 69\r\nFrom: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
        ));
        assert_eq!(r.headers.via().unwrap().len(), 2);
    }

    #[test]
    fn responses_and_derived_requests() {
        let r = req(INVITE);
        let resp = r.make_response(486, "Busy Here", Some("8321234356"));
        assert_eq!(resp.headers.to_addr().unwrap().tag(), Some("8321234356"));
        let bytes = resp.to_bytes();
        let parsed = Message::parse(&bytes).unwrap();
        assert_eq!(parsed, Message::Response(resp.clone()));
        let ack = r.make_ack_for_non_2xx(&resp).unwrap();
        assert_eq!(ack.headers.cseq().unwrap().to_string(), "1 ACK");
        assert_eq!(ack.headers.to_addr().unwrap().tag(), Some("8321234356"));
        let cancel = r.make_cancel().unwrap();
        assert_eq!(
            cancel.headers.top_via().unwrap().branch(),
            Some("z9hG4bK74bf9")
        );
        assert!(Message::parse(&cancel.to_bytes()).is_ok());
    }

    #[test]
    fn limits_are_enforced() {
        let small = ParseLimits {
            max_message_size: 100,
            ..ParseLimits::default()
        };
        assert!(matches!(
            Message::parse_with(INVITE.as_bytes(), &small),
            Err(ParseError::TooLarge { .. })
        ));
        let few = ParseLimits {
            max_headers: 3,
            ..ParseLimits::default()
        };
        assert_eq!(
            Message::parse_with(INVITE.as_bytes(), &few),
            Err(ParseError::TooManyHeaders { limit: 3 })
        );
        let short = ParseLimits {
            max_header_line: 40,
            ..ParseLimits::default()
        };
        assert!(matches!(
            Message::parse_with(INVITE.as_bytes(), &short),
            Err(ParseError::HeaderLineTooLong { .. })
        ));
        let big = INVITE.replace("Content-Length: 4", "Content-Length: 70000");
        assert_eq!(
            Message::parse(big.as_bytes()).unwrap_err().to_string(),
            "Content-Length 70000 exceeds limit 65536"
        );
    }

    #[test]
    fn strictness() {
        let e = |s: String| Message::parse(s.as_bytes()).unwrap_err();
        assert_eq!(
            e(INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE")).status_code(),
            400
        );
        assert_eq!(
            e(INVITE.replace("Call-ID: 3848276298220188511@atlanta.example.com\r\n", "")),
            ParseError::MissingHeader("Call-ID")
        );
        assert_eq!(
            e(INVITE.replace("CSeq: 1 INVITE\r\n", "CSeq: 1 INVITE\r\nCSeq: 2 INVITE\r\n")),
            ParseError::DuplicateHeader("CSeq".into())
        );
        assert!(matches!(
            e(INVITE.replace("Content-Length: 4", "Content-Length: five")),
            ParseError::BadContentLength(_)
        ));
        assert!(matches!(
            e(INVITE.replace("\r\n\r\n", "\r\n")),
            ParseError::Incomplete
        ));
        assert!(matches!(
            e(INVITE.replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\n")),
            ParseError::BadHeaderLine { .. }
        ));
        assert!(matches!(
            e(INVITE
                .replace("Max-Forwards: 70", " Max-Forwards: 70")
                .replacen("Via", "\r\n", 0)),
            ParseError::Incomplete
                | ParseError::BadHeaderLine { .. }
                | ParseError::BadHeader { .. }
        ));
        assert_eq!(
            e("SIP/2.0 99 Low\r\n\r\n".into()),
            ParseError::BadStatusCode("99".into())
        );
    }

    #[test]
    fn folding_is_unfolded() {
        let s = INVITE
            .replace("Max-Forwards: 70", "Max-Forwards:\r\n   70")
            .replace("Subject", "x");
        let r = req(&s);
        assert_eq!(r.headers.max_forwards().unwrap(), Some(70));
    }
}
