//! Scenario files: the accepted forms and the typed refusals.

#![allow(clippy::unwrap_used)]

use edgeway_loadgen::scenario::{Scenario, ScenarioError};
use edgeway_srtp::sdes::SdesError;
use edgeway_srtp::SrtpProfile;

const KEY: &str = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

fn one(tx_crypto: &str, rx_crypto: &str) -> String {
    format!(
        r#"{{"streams":[{{"tx_local":"127.0.0.1:21000","tx_to":"127.0.0.1:20000",
            "tx_crypto":{tx_crypto},"rx_local":"127.0.0.1:21001","rx_crypto":{rx_crypto}}}]}}"#
    )
}

#[test]
fn accepts_all_crypto_forms_and_null() {
    for form in [
        format!("\"AES_CM_128_HMAC_SHA1_80 {KEY}\""),
        format!("\"1 AES_CM_128_HMAC_SHA1_80 {KEY}\""),
        format!("\"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}\""),
    ] {
        let s = Scenario::parse(&one(&form, "null")).unwrap();
        let c = s.streams[0].tx_crypto.as_ref().unwrap();
        assert_eq!(c.profile, SrtpProfile::AesCm128HmacSha1_80);
        assert!(s.streams[0].rx_crypto.is_none());
    }
    let s = Scenario::parse(
        r#"{"streams":[{"tx_local":"[::1]:21000","tx_to":"[::1]:20000","tx_crypto":null,
            "rx_local":"[::1]:21001","rx_crypto":null}],
            "prime":[{"from":"127.0.0.1:21001","to":"127.0.0.1:20002"}]}"#,
    )
    .unwrap();
    assert!(s.streams[0].tx_local.is_ipv6());
    assert_eq!(s.prime[0].to.port(), 20002);
}

#[test]
fn refusals_are_typed() {
    assert!(matches!(
        Scenario::parse(r#"{"streams":[]}"#),
        Err(ScenarioError::NoStreams)
    ));
    assert!(matches!(
        Scenario::parse("{not json"),
        Err(ScenarioError::Json(_))
    ));
    // Missing field and unknown field are shape errors.
    assert!(matches!(
        Scenario::parse(r#"{"streams":[{"tx_local":"127.0.0.1:1"}]}"#),
        Err(ScenarioError::Json(_))
    ));
    assert!(matches!(
        Scenario::parse(&one("null", "null").replace("\"rx_crypto\"", "\"rx_crypt\"")),
        Err(ScenarioError::Json(_))
    ));
    match Scenario::parse(&one("null", "null").replace("127.0.0.1:20000", "localhost:20000")) {
        Err(ScenarioError::BadAddress {
            stream: 0,
            field: "tx_to",
            value,
        }) => assert_eq!(value, "localhost:20000"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Scenario::parse(&one("null", "null").replace("127.0.0.1:21001", "127.0.0.1:0")),
        Err(ScenarioError::ZeroPort {
            stream: 0,
            field: "rx_local"
        })
    ));
    assert!(matches!(
        Scenario::parse(&one("\"AES_CM_999 inline:AAAA\"", "null")),
        Err(ScenarioError::Crypto {
            stream: 0,
            field: "tx_crypto",
            source: SdesError::UnknownSuite(_)
        })
    ));
    assert!(matches!(
        Scenario::parse(&one("null", "\"AES_CM_128_HMAC_SHA1_80 inline:AAAA\"")),
        Err(ScenarioError::Crypto {
            stream: 0,
            field: "rx_crypto",
            source: SdesError::KeyLength { .. }
        })
    ));
    assert!(matches!(
        Scenario::load(std::path::Path::new("/nonexistent/scenario.json")),
        Err(ScenarioError::Io { .. })
    ));
}
