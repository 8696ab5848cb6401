//! Inputs the fuzzers found (`tests/data/fuzz/`), replayed with the `parse` target's
//! checks: no panic, and whatever parses survives serialize → parse unchanged.
#![allow(clippy::unwrap_used)]

use edgeway_sip::sdp::SessionDescription;
use edgeway_sip::{Frame, InvalidMessage, Message, ParseLimits, SipUri, StreamFramer};

fn check(data: &[u8]) {
    if let Ok(msg) = Message::parse(data) {
        let again = Message::parse(&msg.to_bytes()).expect("serialized message must parse");
        assert_eq!(again, msg);
        if let Ok(sdp) = SessionDescription::parse(msg.body()) {
            assert_eq!(SessionDescription::parse(&sdp.to_bytes()).unwrap(), sdp);
        }
    }
    let mut f = StreamFramer::new(ParseLimits::default());
    let _ = f.handle_data(data);
    while let Some(frame) = f.poll_frame() {
        if let Frame::Invalid(invalid) = frame {
            // The framer target's check: a salvaged 400 with the matching headers parses.
            if let Some(resp) = invalid.response("edge") {
                if InvalidMessage::is_matchable(&resp) {
                    Message::parse(&resp.to_bytes()).expect("salvaged 400 must parse");
                }
            }
        }
    }
}

#[test]
fn replay_fuzz_finds() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fuzz");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            check(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n > 0);
}

#[test]
fn multibyte_text_where_ascii_prefixes_are_sliced() {
    // Found by `parse`: a request line whose version field starts with a multi-byte
    // character panicked when its first four bytes were sliced as a str.
    check("OPTIONS sip:a@b \u{440}\u{430}bc\r\nVia: x\r\n\r\n".as_bytes());
    assert!(SipUri::parse("s\u{e9}p:x").is_err());
    assert!(SipUri::parse("si\u{440}:x").is_err());
}
