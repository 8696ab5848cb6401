//! Bencode round trips and refusals; rtpengine ng replies recorded from rtpengine 10.5.

#![allow(clippy::unwrap_used)]

use edgeway_loadgen::bencode::{BencodeError, Value};
use edgeway_loadgen::ng::{check_result, parse_message, parse_sdp, NgError};
use edgeway_srtp::SrtpProfile;

#[test]
fn round_trips() {
    let v = Value::dict([
        ("command", Value::str("offer")),
        ("n", Value::Int(-42)),
        ("zero", Value::Int(0)),
        ("flags", Value::str_list(&["trust-address", "SDES-pad"])),
        ("bin", Value::Bytes(vec![0, 255, b':', b'e'])),
        (
            "nested",
            Value::dict([("l", Value::List(vec![Value::List(vec![])]))]),
        ),
        ("empty", Value::Dict(Default::default())),
    ]);
    let enc = v.encode();
    assert_eq!(Value::decode(&enc).unwrap(), v);
    // Canonical: keys sorted.
    assert!(enc.starts_with(b"d3:bin4:"));
    assert_eq!(Value::str("spam").encode(), b"4:spam");
    assert_eq!(
        Value::Int(i64::MIN).encode(),
        format!("i{}e", i64::MIN).as_bytes()
    );
    assert_eq!(
        Value::decode(format!("i{}e", i64::MIN).as_bytes()).unwrap(),
        Value::Int(i64::MIN)
    );
}

#[test]
fn accepts_unsorted_keys() {
    let v = Value::decode(b"d6:result2:ok3:sdp1:xe").unwrap();
    assert_eq!(v.get("result").and_then(Value::as_str), Some("ok"));
    assert_eq!(v.get("sdp").and_then(Value::as_str), Some("x"));
}

#[test]
fn refuses_malformed() {
    use BencodeError::*;
    let cases: &[(&[u8], BencodeError)] = &[
        (b"", UnexpectedEnd(0)),
        (b"i12", UnexpectedEnd(3)),
        (b"i-0e", BadInt(0)),
        (b"i012e", BadInt(0)),
        (b"ie", BadInt(0)),
        (b"i99999999999999999999e", BadInt(0)),
        (b"5:abc", BadLength(0)),
        (b"05:abcde", BadLength(0)),
        (b"d3:keyi1e", UnexpectedEnd(9)),
        (b"di1ei2ee", NonStringKey(1)),
        (b"x", UnexpectedByte { at: 0, byte: b'x' }),
        (b"i1ei2e", TrailingData(3)),
        (b"l", UnexpectedEnd(1)),
    ];
    for (input, want) in cases {
        assert_eq!(
            Value::decode(input).unwrap_err(),
            *want,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    let deep = [vec![b'l'; 100], vec![b'e'; 100]].concat();
    assert_eq!(Value::decode(&deep).unwrap_err(), TooDeep);
}

#[test]
fn parses_recorded_offer_reply() {
    let msg = include_bytes!("fixtures/rtpengine-offer-reply.bin");
    let (cookie, reply) = parse_message(msg).unwrap();
    assert_eq!(cookie, b"lg1_1");
    check_result("offer", &reply).unwrap();
    let sdp = parse_sdp(reply.get("sdp").and_then(Value::as_str).unwrap()).unwrap();
    assert_eq!(sdp.addr.to_string(), "127.0.0.1");
    assert!((16000..32768).contains(&sdp.port));
    // rtpengine copies the offerer's line first (the passthrough candidate) and adds its
    // own fresh keys for every other suite it knows.
    assert!(sdp.crypto[0].starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:WVNf"));
    let b = sdp.crypto_for(SrtpProfile::AesCm128HmacSha1_32).unwrap();
    assert_eq!(b.tag, 8);
    assert!(sdp.crypto.len() > 2);
}

#[test]
fn parses_recorded_answer_reply() {
    let msg = include_bytes!("fixtures/rtpengine-answer-reply.bin");
    let (cookie, reply) = parse_message(msg).unwrap();
    assert_eq!(cookie, b"lg1_2");
    check_result("answer", &reply).unwrap();
    let sdp = parse_sdp(reply.get("sdp").and_then(Value::as_str).unwrap()).unwrap();
    assert_eq!(sdp.crypto.len(), 1);
    let a = sdp.crypto_for(SrtpProfile::AesCm128HmacSha1_80).unwrap();
    // A fresh key for A, not the offerer's own (which would mean passthrough).
    assert!(!sdp.crypto[0].contains("WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"));
    assert_eq!(a.tag, 1);
}

#[test]
fn error_reply_is_typed() {
    let msg = include_bytes!("fixtures/rtpengine-error-reply.bin");
    let (_, reply) = parse_message(msg).unwrap();
    match check_result("answer", &reply) {
        Err(NgError::Refused { command, reason }) => {
            assert_eq!(command, "answer");
            assert_eq!(reason, "Unknown call-id");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(parse_message(b"nocookie"), Err(NgError::Framing)));
    assert!(matches!(parse_message(b"c1 i3e"), Err(NgError::Framing)));
    assert!(matches!(
        parse_message(b"c1 d3:abc"),
        Err(NgError::Bencode(_))
    ));
}

#[test]
fn sdp_media_level_connection_wins() {
    let s = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/SAVP 0\r\nc=IN IP4 10.0.0.2\r\n\
             a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n\
             m=video 5000 RTP/AVP 96\r\na=crypto:9 junk\r\n";
    let a = parse_sdp(s).unwrap();
    assert_eq!(a.socket_addr().to_string(), "10.0.0.2:4000");
    assert_eq!(a.crypto.len(), 1);
    assert!(matches!(parse_sdp("v=0\r\n"), Err(NgError::Sdp(_))));
    assert!(matches!(
        parse_sdp("v=0\r\nm=audio 4000 RTP/AVP 0\r\n"),
        Err(NgError::Sdp(_))
    ));
}
