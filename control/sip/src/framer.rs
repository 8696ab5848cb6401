//! Cutting a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3) and RFC 5626
//! keep-alives.
//!
//! The framer never holds more than one partial message (at most
//! [`ParseLimits::max_message_size`] bytes): complete frames are parsed as soon as they
//! are whole, and a message whose header section or declared Content-Length would exceed
//! the limit is refused as soon as that is known, before its body is buffered.
//!
//! Only losing the framing is final (no readable Content-Length, a message over the
//! limit): a message that frames but does not parse becomes [`Frame::Invalid`], and the
//! stream goes on after it, so a server can answer that one message with a 400 the client
//! can match ([`InvalidMessage::response`]) and keep the connection.

use crate::error::{FramerError, ParseError};
use crate::header::{HeaderName, Headers};
use crate::message::{Message, ParseLimits, Response};
use crate::text::{parse_decimal, trim_wsp};
use crate::typed::{CSeq, Method, NameAddr, Via};
use std::collections::VecDeque;

/// One unit cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete, parsed message.
    Message(Message),
    /// A complete message (its length was readable) that failed to parse; the stream
    /// continues after it.
    Invalid(InvalidMessage),
    /// A double-CRLF keep-alive ping: answer with a single CRLF (RFC 5626 §3.5.1).
    Ping,
    /// A single-CRLF pong (answer to a ping this side sent).
    Pong,
}

/// Frames messages out of a byte stream; see the module docs.
#[derive(Debug)]
pub struct StreamFramer {
    limits: ParseLimits,
    buf: Vec<u8>,
    /// Total length of the message being buffered, once its header section is known.
    expected: Option<usize>,
    frames: VecDeque<Frame>,
    awaiting_pong: bool,
    failed: bool,
}

impl StreamFramer {
    /// A framer with the given limits.
    pub fn new(limits: ParseLimits) -> Self {
        StreamFramer {
            limits,
            buf: Vec::new(),
            expected: None,
            frames: VecDeque::new(),
            awaiting_pong: false,
            failed: false,
        }
    }

    /// Tells the framer this side just sent a ping, so a lone CRLF is a pong and can be
    /// reported without waiting for more bytes.
    pub fn ping_sent(&mut self) {
        self.awaiting_pong = true;
    }

    /// Bytes held for a partial frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes read from the stream. Whole frames become available from
    /// [`poll_frame`](Self::poll_frame). An error means the framing is lost and is final:
    /// close the connection (a message that frames but does not parse is a
    /// [`Frame::Invalid`] instead).
    pub fn handle_data(&mut self, mut data: &[u8]) -> Result<(), FramerError> {
        if self.failed {
            return Err(FramerError::Failed);
        }
        while !data.is_empty() {
            // Take only what the current frame can still use, so the buffer stays bounded.
            let room = match self.expected {
                Some(total) => total - self.buf.len(),
                None => (self.limits.max_message_size + 4)
                    .saturating_sub(self.buf.len())
                    .max(1),
            };
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if let Err(e) = self.advance() {
                self.failed = true;
                self.buf.clear();
                return Err(e);
            }
        }
        Ok(())
    }

    /// The next complete frame, if any.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    /// Extracts every complete frame at the front of the buffer.
    fn advance(&mut self) -> Result<(), FramerError> {
        loop {
            if self.expected.is_none() {
                // Keep-alives live between messages only.
                if self.buf.starts_with(b"\r\n\r\n") {
                    self.buf.drain(..4);
                    self.frames.push_back(Frame::Ping);
                    continue;
                }
                if self.buf.starts_with(b"\r\n") {
                    if self.buf.len() == 2 && !self.awaiting_pong {
                        return Ok(()); // could be the first half of a ping
                    }
                    if self.buf.len() >= 3 && self.buf[2] == b'\r' && self.buf.len() < 4 {
                        return Ok(()); // "\r\n\r": wait for the last byte
                    }
                    self.buf.drain(..2);
                    self.awaiting_pong = false;
                    self.frames.push_back(Frame::Pong);
                    continue;
                }
                if self.buf == b"\r" {
                    return Ok(());
                }
                let Some(head_end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    if self.buf.len() > self.limits.max_message_size {
                        return Err(FramerError::HeaderTooLarge {
                            limit: self.limits.max_message_size,
                        });
                    }
                    return Ok(());
                };
                let head_len = head_end + 4;
                let cl = scan_content_length(&self.buf[..head_end])?
                    .ok_or(FramerError::MissingContentLength)?;
                let total = head_len as u64 + cl;
                if total > self.limits.max_message_size as u64 {
                    return Err(FramerError::TooLarge {
                        size: total,
                        limit: self.limits.max_message_size,
                    });
                }
                self.expected = Some(total as usize);
            }
            let Some(total) = self.expected else {
                return Ok(());
            };
            if self.buf.len() < total {
                return Ok(());
            }
            let frame = match Message::parse_with(&self.buf[..total], &self.limits) {
                Ok(msg) => Frame::Message(msg),
                Err(error) => Frame::Invalid(InvalidMessage::new(error, &self.buf[..total])),
            };
            self.buf.drain(..total);
            self.expected = None;
            self.frames.push_back(frame);
        }
    }
}

/// Most bytes of an invalid message's header section kept for salvaging its response.
const SALVAGE_HEAD: usize = 8 * 1024;

/// A framed message that failed to parse: the error, and enough of its header section to
/// answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMessage {
    error: ParseError,
    head: String,
}

impl InvalidMessage {
    fn new(error: ParseError, message: &[u8]) -> Self {
        let message = trim_leading_crlf(message);
        let end = message
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(message.len())
            .min(SALVAGE_HEAD);
        InvalidMessage {
            error,
            head: String::from_utf8_lossy(&message[..end]).into_owned(),
        }
    }

    /// Why the message was refused.
    pub fn error(&self) -> &ParseError {
        &self.error
    }

    /// Whether the message looks like a response (its start line begins with `SIP/`);
    /// responses are never answered.
    pub fn is_response(&self) -> bool {
        self.head.starts_with("SIP/")
    }

    /// Whether `response` carries Via, From, To, Call-ID and CSeq: what a client needs to
    /// match it to its transaction (and what the parser demands of a response).
    pub fn is_matchable(response: &Response) -> bool {
        [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ]
        .iter()
        .all(|h| response.headers.contains(h))
    }

    /// The response to send back: the status [`ParseError::status_code`] suggests, the
    /// parse error as reason phrase and as a `Warning: 399 <agent>`, and whichever of
    /// Via, From, To (tagged), Call-ID and CSeq can be salvaged, each only when it parses,
    /// so the client can match the response to its transaction. `None` for a response
    /// or an ACK, which are never answered (RFC 3261 §17.2.1, §8.2).
    pub fn response(&self, agent: &str) -> Option<Response> {
        if self.is_response() || self.head.split([' ', '\r']).next() == Some("ACK") {
            return None;
        }
        let status = self.error.status_code();
        let label = match status {
            505 => "Version Not Supported",
            513 => "Message Too Large",
            _ => "Bad Request",
        };
        let text: String = self
            .error
            .to_string()
            .chars()
            .map(|c| match c {
                '"' | '\\' => '\'',
                c if c.is_control() => ' ',
                c => c,
            })
            .take(200)
            .collect();
        let mut headers = Headers::new();
        let mut vias_intact = true;
        let mut seen_single: Vec<HeaderName> = Vec::new();
        for (name, value) in unfolded_headers(&self.head) {
            let value = value.as_str();
            let name = HeaderName::parse(name);
            let keep = match &name {
                // Vias in order, stopping at the first that does not parse: the top one is
                // what the client matches on.
                HeaderName::Via => {
                    vias_intact &= value.split(',').all(|v| Via::parse(v).is_ok());
                    vias_intact
                }
                HeaderName::From | HeaderName::To => NameAddr::parse(value).is_ok(),
                HeaderName::CallId => !value.is_empty() && !value.contains(char::is_whitespace),
                HeaderName::CSeq => CSeq::parse(value).is_ok_and(|c| c.method != Method::Ack),
                _ => false,
            };
            if !keep || seen_single.contains(&name) {
                continue;
            }
            if name != HeaderName::Via {
                seen_single.push(name.clone());
            }
            let value = if name == HeaderName::To
                && NameAddr::parse(value).is_ok_and(|t| t.tag().is_none())
            {
                format!("{value};tag={:08x}", fnv1a(self.head.as_bytes()))
            } else {
                value.to_owned()
            };
            // A value with a stray CR or LF is refused by push: then it is left out.
            let _ = headers.push(name, value);
        }
        let _ = headers.push(HeaderName::Warning, format!("399 {agent} \"{text}\""));
        let _ = headers.push(HeaderName::ContentLength, "0");
        Some(Response {
            status,
            reason: format!("{label} ({text})"),
            headers,
            body: Vec::new(),
        })
    }
}

fn trim_leading_crlf(mut data: &[u8]) -> &[u8] {
    while let Some(rest) = data.strip_prefix(b"\r\n") {
        data = rest;
    }
    data
}

/// `(name, value)` of each header line after the start line, folded lines joined.
fn unfolded_headers(head: &str) -> Vec<(&str, String)> {
    let mut out: Vec<(&str, String)> = Vec::new();
    for line in head.split("\r\n").skip(1) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(trim_wsp(line));
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((trim_wsp(name), trim_wsp(value).to_owned()));
        }
    }
    out
}

/// A stable To tag for a stateless answer: a retransmission gets the same one.
fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Finds Content-Length (or `l`) in a raw header section, honouring line folding.
fn scan_content_length(head: &[u8]) -> Result<Option<u64>, FramerError> {
    let text = String::from_utf8_lossy(head);
    let mut found: Option<String> = None;
    let mut current: Option<String> = None;
    let mut finish = |cur: Option<String>| -> Result<(), FramerError> {
        if let Some(v) = cur {
            if found.is_some() {
                return Err(ParseError::DuplicateHeader("Content-Length".into()).into());
            }
            found = Some(v);
        }
        Ok(())
    };
    for line in text.split("\r\n").skip(1) {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = current.as_mut() {
                v.push(' ');
                v.push_str(trim_wsp(line));
            }
            continue;
        }
        finish(current.take())?;
        if let Some((name, value)) = line.split_once(':') {
            let name = trim_wsp(name);
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
                current = Some(value.to_owned());
            }
        }
    }
    finish(current.take())?;
    match found {
        None => Ok(None),
        Some(v) => {
            let v = trim_wsp(&v);
            parse_decimal(v, u64::MAX)
                .map(Some)
                .map_err(|_| ParseError::BadContentLength(v.chars().take(40).collect()).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &str = "OPTIONS sip:edge.example.com SIP/2.0\r\n\
        Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKa1\r\n\
        Max-Forwards: 70\r\n\
        To: <sip:edge.example.com>\r\n\
        From: <sip:core.example.com>;tag=1\r\n\
        Call-ID: abc@core\r\n\
        CSeq: 1 OPTIONS\r\n\
        l: 5\r\n\r\nhello";

    fn frames(f: &mut StreamFramer) -> Vec<Frame> {
        std::iter::from_fn(|| f.poll_frame()).collect()
    }

    #[test]
    fn byte_by_byte_with_keepalives() {
        let mut f = StreamFramer::new(ParseLimits::default());
        let stream = format!("\r\n\r\n{OPTIONS}\r\n\r\n{OPTIONS}");
        for b in stream.as_bytes() {
            f.handle_data(std::slice::from_ref(b)).unwrap();
        }
        let got = frames(&mut f);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], Frame::Ping);
        assert!(matches!(&got[1], Frame::Message(m) if m.body() == b"hello"));
        assert_eq!(got[2], Frame::Ping);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn pong_after_ping_sent() {
        let mut f = StreamFramer::new(ParseLimits::default());
        f.handle_data(b"\r\n").unwrap();
        assert_eq!(f.poll_frame(), None, "could still become a ping");
        f.handle_data(OPTIONS.as_bytes()).unwrap();
        assert_eq!(f.poll_frame(), Some(Frame::Pong));
        assert!(matches!(f.poll_frame(), Some(Frame::Message(_))));
        f.ping_sent();
        f.handle_data(b"\r\n").unwrap();
        assert_eq!(f.poll_frame(), Some(Frame::Pong));
    }

    #[test]
    fn refuses_early_and_stays_failed() {
        let mut f = StreamFramer::new(ParseLimits::default());
        let big = OPTIONS.replace("l: 5", "l: 70000");
        let head = &big[..big.find("hello").unwrap()];
        assert!(matches!(
            f.handle_data(head.as_bytes()),
            Err(FramerError::TooLarge { .. })
        ));
        assert_eq!(f.handle_data(b"x"), Err(FramerError::Failed));

        let mut f = StreamFramer::new(ParseLimits::default());
        let no_cl = OPTIONS.replace("l: 5\r\n", "");
        assert_eq!(
            f.handle_data(no_cl.as_bytes()),
            Err(FramerError::MissingContentLength)
        );

        let mut f = StreamFramer::new(ParseLimits {
            max_message_size: 1000,
            ..ParseLimits::default()
        });
        let junk = vec![b'a'; 5000];
        assert!(matches!(
            f.handle_data(&junk),
            Err(FramerError::HeaderTooLarge { .. })
        ));
        assert!(f.buffered() == 0);
    }

    #[test]
    fn unparsable_message_is_answered_and_the_stream_goes_on() {
        let mut f = StreamFramer::new(ParseLimits::default());
        let bad = OPTIONS
            .replace("Max-Forwards: 70", "Max-Forwards: seventy")
            .replace(
                "To: <sip:edge.example.com>",
                "t: <sip:edge.example.com>\r\n ;x=1",
            );
        for b in format!("{bad}{OPTIONS}").as_bytes() {
            f.handle_data(std::slice::from_ref(b)).unwrap();
        }
        let Some(Frame::Invalid(invalid)) = f.poll_frame() else {
            panic!("expected an invalid message");
        };
        assert!(
            matches!(f.poll_frame(), Some(Frame::Message(_))),
            "next one parses"
        );
        assert!(
            matches!(invalid.error(), ParseError::BadHeader { name, .. } if name == "Max-Forwards")
        );
        let resp = invalid.response("edge.example.com").unwrap();
        let bytes = resp.to_bytes();
        let Ok(Message::Response(parsed)) = Message::parse(&bytes) else {
            panic!("400 must parse: {}", String::from_utf8_lossy(&bytes));
        };
        assert_eq!(parsed.status, 400);
        assert!(parsed.reason.contains("Max-Forwards"), "{}", parsed.reason);
        let via = parsed.headers.top_via().unwrap();
        assert_eq!(via.branch(), Some("z9hG4bKa1"));
        assert_eq!(parsed.headers.call_id().unwrap(), "abc@core");
        let to = parsed.headers.to_addr().unwrap();
        assert!(to.tag().is_some(), "a To tag is added");
        assert_eq!(to.params.get("x"), Some("1"), "folded To kept");
        assert!(parsed
            .headers
            .first(&HeaderName::Warning)
            .is_some_and(|w| w.starts_with("399 edge.example.com \"Max-Forwards")));
        assert_eq!(parsed.headers.cseq().unwrap().seq, 1);

        // What does not parse is left out; the rest still comes back.
        let mut f = StreamFramer::new(ParseLimits::default());
        f.handle_data(OPTIONS.replace("CSeq: 1", "CSeq: one").as_bytes())
            .unwrap();
        let Some(Frame::Invalid(invalid)) = f.poll_frame() else {
            panic!("expected an invalid message");
        };
        let text = String::from_utf8(invalid.response("edge").unwrap().to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 400 Bad Request (CSeq"), "{text}");
        assert!(
            text.contains("branch=z9hG4bKa1") && !text.contains("CSeq: one"),
            "{text}"
        );
    }

    #[test]
    fn responses_and_acks_are_never_answered() {
        let bad_resp = "SIP/2.0 200 OK\r\nVia: x\r\nContent-Length: 0\r\n\r\n";
        let bad_ack = OPTIONS.replace("OPTIONS sip", "ACK sip");
        for bad in [bad_resp.to_owned(), bad_ack] {
            let mut f = StreamFramer::new(ParseLimits::default());
            f.handle_data(bad.as_bytes()).unwrap();
            let Some(Frame::Invalid(invalid)) = f.poll_frame() else {
                panic!("expected an invalid frame for {bad:?}");
            };
            assert_eq!(invalid.response("edge"), None);
        }
    }

    #[test]
    fn unreadable_length_stays_final() {
        let mut f = StreamFramer::new(ParseLimits::default());
        let bad = OPTIONS.replace("l: 5", "l: five");
        assert!(matches!(
            f.handle_data(bad.as_bytes()),
            Err(FramerError::Message(ParseError::BadContentLength(_)))
        ));
        assert_eq!(f.handle_data(OPTIONS.as_bytes()), Err(FramerError::Failed));
    }

    #[test]
    fn folded_content_length() {
        let mut f = StreamFramer::new(ParseLimits::default());
        let s = OPTIONS.replace("l: 5", "Content-Length:\r\n 5");
        f.handle_data(s.as_bytes()).unwrap();
        assert!(matches!(f.poll_frame(), Some(Frame::Message(_))));
    }
}
