//! Cutting a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3) and RFC 5626
//! keep-alives.
//!
//! The framer never holds more than one partial message (at most
//! [`ParseLimits::max_message_size`] bytes): complete frames are parsed as soon as they
//! are whole, and a message whose header section or declared Content-Length would exceed
//! the limit is refused as soon as that is known, before its body is buffered.

use crate::error::{FramerError, ParseError};
use crate::message::{Message, ParseLimits};
use crate::text::{parse_decimal, trim_wsp};
use std::collections::VecDeque;

/// One unit cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete, parsed message.
    Message(Message),
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
    /// [`poll_frame`](Self::poll_frame). An error is final: close the connection.
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
            let msg = Message::parse_with(&self.buf[..total], &self.limits)?;
            self.buf.drain(..total);
            self.expected = None;
            self.frames.push_back(Frame::Message(msg));
        }
    }
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
    fn folded_content_length() {
        let mut f = StreamFramer::new(ParseLimits::default());
        let s = OPTIONS.replace("l: 5", "Content-Length:\r\n 5");
        f.handle_data(s.as_bytes()).unwrap();
        assert!(matches!(f.poll_frame(), Some(Frame::Message(_))));
    }
}
