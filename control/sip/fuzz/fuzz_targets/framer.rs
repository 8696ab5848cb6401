//! Feeds an arbitrary byte stream, cut into arbitrary chunks, to the stream framer. The
//! frames must not depend on how the stream was chunked, and the buffer stays bounded.
//! The 400 salvaged for a message that framed but did not parse must serialize into a
//! response that parses whenever it carries the five headers a client matches on.
#![no_main]

use arbitrary::Arbitrary;
use edgeway_sip::{Frame, InvalidMessage, Message, ParseLimits, StreamFramer};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    stream: Vec<u8>,
    cuts: Vec<u16>,
    small_limit: bool,
}

fn check_salvage(invalid: &InvalidMessage) {
    let Some(resp) = invalid.response("edge.example.com") else {
        return; // a response or an ACK: never answered
    };
    let bytes = resp.to_bytes();
    let complete = InvalidMessage::is_matchable(&resp);
    match Message::parse(&bytes) {
        Ok(Message::Response(parsed)) => assert_eq!(parsed.status, resp.status),
        Ok(Message::Request(_)) => panic!("a response serialized as a request"),
        Err(e) => assert!(!complete, "salvaged response does not parse: {e}"),
    }
}

fn run(limits: ParseLimits, chunks: &[&[u8]]) -> (Vec<Frame>, bool) {
    let mut f = StreamFramer::new(limits);
    let mut frames = Vec::new();
    for c in chunks {
        let r = f.handle_data(c);
        assert!(
            f.buffered() <= limits.max_message_size + 4,
            "unbounded buffer"
        );
        while let Some(fr) = f.poll_frame() {
            if let Frame::Invalid(invalid) = &fr {
                check_salvage(invalid);
            }
            frames.push(fr);
        }
        if r.is_err() {
            return (frames, true);
        }
    }
    (frames, false)
}

fuzz_target!(|input: Input| {
    let limits = if input.small_limit {
        ParseLimits {
            max_message_size: 512,
            ..ParseLimits::default()
        }
    } else {
        ParseLimits::default()
    };
    let mut chunks = Vec::new();
    let mut rest = input.stream.as_slice();
    for c in &input.cuts {
        if rest.is_empty() {
            break;
        }
        let n = (*c as usize % (rest.len() + 1)).max(1);
        chunks.push(&rest[..n]);
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        chunks.push(rest);
    }
    let (chunked, chunked_failed) = run(limits, &chunks);
    let (whole, whole_failed) = run(limits, &[input.stream.as_slice()]);
    // A lone trailing CRLF may be held back differently; compare everything else.
    assert_eq!(chunked_failed, whole_failed, "failure depends on chunking");
    assert_eq!(chunked, whole, "frames depend on chunking");
});
