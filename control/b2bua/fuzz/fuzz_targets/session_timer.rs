//! Arbitrary `Session-Expires` values in a 2xx to INVITE: reading them never panics; an
//! accepted value gives an interval of at least RFC 4028's 90 s, and a refused one leaves
//! the interval as it was.
#![no_main]

use std::time::Instant;

use edgeway_b2bua::{SessionTimer, MIN_SESSION_INTERVAL};
use edgeway_sip::{Message, Response};
use libfuzzer_sys::fuzz_target;

fn ok_with(value: &str) -> Option<Response> {
    let text = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 10.0.0.2;branch=z9hG4bK-1\r\nFrom: <sip:a@x>;tag=1\r\n\
         To: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nSession-Expires: {value}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    match Message::parse(text.as_bytes()) {
        Ok(Message::Response(r)) => Some(r),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let Some(response) = ok_with(value) else {
        return;
    };
    let now = Instant::now();
    let mut timer = SessionTimer::default();
    let before = timer.interval();
    match timer.response(now, &response) {
        Ok(()) => assert!(timer.interval().is_none_or(|i| i >= MIN_SESSION_INTERVAL)),
        Err(_) => assert_eq!(timer.interval(), before),
    }
});
