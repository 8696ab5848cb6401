//! Survivable parse errors on a stream: every RFC 4475 torture message, sent on a stream
//! and followed by a good request. A refused message that frames is a `Frame::Invalid`
//! whose answer (for requests) parses whenever it carries the headers a client matches
//! on, and the good request behind it still comes through; only a lost framing ends the
//! stream.
#![allow(clippy::unwrap_used)]

use edgeway_sip::{Frame, FramerError, InvalidMessage, Message, ParseLimits, StreamFramer};

const GOOD: &[u8] = b"OPTIONS sip:edge.example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKgood\r\nMax-Forwards: 70\r\n\
To: <sip:edge.example.com>\r\nFrom: <sip:c@example.com>;tag=1\r\nCall-ID: good@c\r\n\
CSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n";

#[test]
fn torture_messages_on_a_stream_leave_it_usable() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475");
    let (mut invalid, mut matchable, mut lost) = (0, 0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "dat") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        let mut framer = StreamFramer::new(ParseLimits::default());
        if let Err(e) = framer.handle_data(&data) {
            // Only an unreadable or oversized length may end the stream.
            assert!(
                matches!(
                    e,
                    FramerError::Message(_)
                        | FramerError::MissingContentLength
                        | FramerError::TooLarge { .. }
                ),
                "{name}: {e}"
            );
            lost += 1;
            continue;
        }
        let mut frames: Vec<Frame> = std::iter::from_fn(|| framer.poll_frame()).collect();
        if framer.buffered() != 0 {
            continue; // a body still owed (clerr and the like): the next bytes belong to it
        }
        for frame in &frames {
            let Frame::Invalid(bad) = frame else { continue };
            invalid += 1;
            assert!(Message::parse(&data).is_err(), "{name} parses whole");
            match bad.response("edge.example.com") {
                None => assert!(bad.is_response(), "{name}: a request gets an answer"),
                Some(resp) if InvalidMessage::is_matchable(&resp) => {
                    matchable += 1;
                    let bytes = resp.to_bytes();
                    let parsed = Message::parse(&bytes)
                        .unwrap_or_else(|e| panic!("{name}: answer does not parse: {e}"));
                    assert!(matches!(parsed, Message::Response(r) if r.status >= 400));
                }
                Some(_) => {}
            }
        }
        framer.handle_data(GOOD).unwrap();
        frames.extend(std::iter::from_fn(|| framer.poll_frame()));
        assert!(
            matches!(frames.last(), Some(Frame::Message(m)) if m.body().is_empty()
                && m.headers().call_id().ok() == Some("good@c")),
            "{name}: the good request after it is framed: {:?}",
            frames.last()
        );
    }
    // The data holds 20-odd invalid messages; most frame, and most answers are matchable.
    assert!(
        invalid >= 10,
        "{invalid} invalid frames, {lost} lost framings"
    );
    assert!(matchable >= 5, "{matchable} matchable answers");
}
