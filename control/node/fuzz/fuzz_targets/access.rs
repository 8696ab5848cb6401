//! MRA access control (`edgeway_control::http::auth`) on arbitrary `Authorization` headers
//! and keys documents: never a panic; a parsed Basic user is never empty and has no control
//! characters; nothing the fuzzer makes is allowed without Unified CM's word (it cannot sign
//! with the installed key); every challenge is a valid header value; an unknown key is
//! fetched at most once per interval, so the IO layer's loop ends.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use edgeway_control::http::auth::token::{parse_authorization, parse_token, Credentials, KeySet};
use edgeway_control::http::auth::{
    AccessConfig, AccessControl, AuthenticationPath, CheckOutcome, Decision, Step,
};
use libfuzzer_sys::fuzz_target;

/// A keys document for a key nobody holds (32 random bytes as the public key).
const KEYS: &str = r#"{"issuer":"ucm-sim","keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"kdCpcgsxAvzosQyU8h9jKvkAQK7ITwxq0OKbcvTx7_o"}]}"#;

fn start() -> &'static Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    T0.get_or_init(Instant::now)
}

fn header_safe(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let (selector, header) = data.split_first().unwrap_or((&0, &[]));
    if let Ok(Credentials::Basic { user, .. }) = parse_authorization(header) {
        assert!(!user.is_empty() && !user.chars().any(char::is_control));
    }
    if let Ok(text) = std::str::from_utf8(header) {
        let _ = parse_token(text);
        let _ = KeySet::from_document(text);
    }
    let cfg = AccessConfig {
        path: match selector % 3 {
            0 => AuthenticationPath::UcmLdap,
            1 => AuthenticationPath::SamlSso,
            _ => AuthenticationPath::SamlSsoAndUcmLdap,
        },
        oauth_token_with_refresh: true,
        user_credentials: true,
        refresh_interval: Duration::from_secs(60),
        cleanup_interval: Duration::from_secs(120),
        rate_control: selector & 4 != 0,
        max_authorizations: 1,
        rate_period: Duration::from_secs(300),
    };
    let t0 = *start();
    let mut ac = AccessControl::new(cfg, [9; 32], t0);
    ac.install_keys(KeySet::from_document(KEYS).expect("fixed keys"));
    let now = t0 + Duration::from_secs(u64::from(*selector));
    let mut fetches = 0;
    let decision = loop {
        match ac.authorize(now, 1_700_000_000, "example.com", Some(header)) {
            Step::Decided(d) => break d,
            Step::CheckWithUnifiedCm(check) => {
                break ac.basic_checked(now, check, CheckOutcome::Rejected)
            }
            Step::FetchKeys => {
                fetches += 1;
                assert!(fetches == 1, "asked to fetch keys twice for one request");
            }
        }
    };
    match &decision {
        Decision::Allowed { .. } => panic!("allowed without Unified CM or a real key: {decision:?}"),
        Decision::Challenge { challenges } | Decision::Refused { challenges, .. } => {
            assert!(challenges.iter().all(|c| header_safe(c)), "{challenges:?}")
        }
        Decision::Forbidden { challenge } => assert!(header_safe(challenge)),
        _ => {}
    }
    assert!(matches!(decision.status(), 401 | 403 | 429 | 502));
});
