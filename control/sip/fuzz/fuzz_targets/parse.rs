//! Parses arbitrary bytes as a SIP message; whatever parses must serialize to bytes that
//! parse back to the same message, and its typed views and SDP body must not panic.
#![no_main]

use edgeway_sip::sdp::SessionDescription;
use edgeway_sip::{HeaderName, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let bytes = msg.to_bytes();
    let again = Message::parse(&bytes).expect("serialized message must parse");
    assert_eq!(again, msg, "parse(serialize(m)) != m");

    let h = msg.headers();
    let _ = h.via();
    let _ = h.contacts();
    let _ = h.routes();
    let _ = h.record_routes();
    let _ = h.auth(&HeaderName::Authorization);
    let _ = h.retry_after();
    if let Ok(via) = h.top_via() {
        let _ = via.to_string();
    }
    if let Ok(sdp) = SessionDescription::parse(msg.body()) {
        let out = sdp.to_bytes();
        let again = SessionDescription::parse(&out).expect("serialized SDP must parse");
        assert_eq!(again, sdp, "SDP round trip");
        for m in sdp.media() {
            let _ = m.crypto();
        }
    }
});
