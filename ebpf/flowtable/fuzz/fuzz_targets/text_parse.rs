//! The flow table's text parsers (what `edgewayctl flow add` and scripts feed it) on
//! arbitrary text: the input as lossy UTF-8, each of its first lines, and an `a=crypto` line
//! assembled from the input (suite, key length and bytes, lifetime, MKI, session
//! parameters), so that well-formed keying is reached without a dictionary. Properties: typed
//! errors of the right variant, never a panic; what parses formats to text that parses back
//! to the same value; `a=crypto` lines give SRTP parameters the data plane can build a
//! context from; node names never leave `SHM_ROOT`; the XDP status file's views never panic
//! and its attachments round-trip.
#![no_main]

use std::ffi::OsStr;
use std::path::Path;

use edgeway_flowtable::{
    format_endpoint, format_key, parse_endpoint, parse_key, srtp_params_from_crypto, suite_name,
    Error, FlowTable, XdpStatus, SHM_ROOT,
};
use edgeway_srtp::{MasterKey, SrtpConfig, SrtpContext, SrtpProfile};
use libfuzzer_sys::fuzz_target;

fn check(s: &str) {
    match parse_key(s) {
        Ok(k) => {
            assert_ne!(k.local_port, 0, "{s:?}: key without a local port");
            let text = format_key(&k);
            let again = parse_key(&text).unwrap_or_else(|e| panic!("{text:?} from {s:?}: {e}"));
            assert_eq!(again, k, "{s:?} -> {text:?}");
        }
        Err(e) => {
            assert!(matches!(e, Error::BadKey { .. }), "{s:?}: {e:?}");
            let _ = e.to_string();
        }
    }
    match parse_endpoint(s) {
        Ok(ep) => {
            assert!(ep.is_set(), "{s:?}: endpoint without a port");
            let text = format_endpoint(&ep);
            let again =
                parse_endpoint(&text).unwrap_or_else(|e| panic!("{text:?} from {s:?}: {e}"));
            assert_eq!(again, ep, "{s:?} -> {text:?}");
        }
        Err(e) => {
            assert!(matches!(e, Error::BadEndpoint { .. }), "{s:?}: {e:?}");
            let _ = e.to_string();
        }
    }
    match srtp_params_from_crypto(s) {
        Ok(p) => {
            let profile = SrtpProfile::from_id(p.suite.into())
                .unwrap_or_else(|| panic!("{s:?}: suite id {} unknown", p.suite));
            assert_eq!(suite_name(&p), profile.sdes_name());
            let mki_len = usize::from(p.mki_len);
            assert!(mki_len <= p.mki.len(), "{s:?}: MKI length {mki_len}");
            assert!(
                p.replay_window == 0 || p.replay_window >= 64,
                "{s:?}: window {}",
                p.replay_window
            );
            // What the data plane does with an entry's keying (edgeway-media flow.rs).
            let mut key = MasterKey::new(
                profile,
                &p.key[..profile.master_key_len()],
                &p.salt[..profile.master_salt_len()],
            )
            .unwrap_or_else(|e| panic!("{s:?}: parsed key refused: {e}"));
            if mki_len > 0 {
                key = key
                    .with_mki(&p.mki[..mki_len])
                    .unwrap_or_else(|e| panic!("{s:?}: parsed MKI refused: {e}"));
            }
            let mut config = SrtpConfig::new(profile, key);
            if p.replay_window != 0 {
                config.replay_window = u32::from(p.replay_window);
            }
            if let Err(e) = SrtpContext::new(&config) {
                panic!("{s:?}: parsed keying makes no context: {e}");
            }
        }
        Err(e) => {
            assert!(
                matches!(e, Error::Sdes(_) | Error::UnsupportedCrypto(_)),
                "{s:?}: {e:?}"
            );
            let _ = e.to_string();
        }
    }
    match FlowTable::dir_for(s) {
        Ok(dir) => {
            assert_eq!(dir.parent(), Some(Path::new(SHM_ROOT)), "{s:?}: {dir:?}");
            assert_eq!(dir.file_name(), Some(OsStr::new(s)), "{s:?}: {dir:?}");
        }
        Err(e) => {
            assert!(matches!(e, Error::BadNodeName(_)), "{s:?}: {e:?}");
            let _ = e.to_string();
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=c.len() {
            out.push(char::from(A[(n >> (18 - 6 * i)) as usize & 63]));
        }
        for _ in c.len()..3 {
            out.push('=');
        }
    }
    out
}

/// An `a=crypto` line whose parts the input picks: mostly well formed, sometimes not.
fn crypto_line(data: &[u8]) -> String {
    const SUITES: [&str; 8] = [
        "AES_CM_128_HMAC_SHA1_80",
        "AES_CM_128_HMAC_SHA1_32",
        "AES_256_CM_HMAC_SHA1_80",
        "AES_256_CM_HMAC_SHA1_32",
        "AEAD_AES_128_GCM",
        "AEAD_AES_256_GCM",
        "F8_128_HMAC_SHA1_80",
        "aes_cm_128_hmac_sha1_80",
    ];
    const PARAMS: [&str; 10] = [
        "",
        " UNENCRYPTED_SRTP",
        " UNENCRYPTED_SRTCP",
        " UNAUTHENTICATED_SRTP",
        " KDR=0",
        " KDR=24",
        " WSH=64",
        " WSH=99999999999",
        " FEC_ORDER=FEC_SRTP",
        " WSH=128 UNENCRYPTED_SRTCP",
    ];
    let at = |i: usize| data.get(i).copied().unwrap_or(0);
    let suite = SUITES[usize::from(at(1)) % SUITES.len()];
    let profile = SrtpProfile::ALL
        .into_iter()
        .find(|p| p.sdes_name() == suite)
        .unwrap_or(SrtpProfile::AesCm128HmacSha1_80);
    let want = profile.master_key_len() + profile.master_salt_len();
    let len = match at(2) % 8 {
        0 => want.saturating_sub(1),
        1 => want + 1,
        _ => want,
    };
    let body = data.get(8..).unwrap_or(&[]);
    let key: Vec<u8> = (0..len)
        .map(|i| body.get(i % body.len().max(1)).copied().unwrap_or(0x5a) ^ i as u8)
        .collect();
    let mut line = format!("a=crypto:{} {suite} inline:{}", at(3), base64(&key));
    match at(4) % 5 {
        1 => line.push_str("|2^31"),
        2 => line += &format!("|{}", u32::from_le_bytes([at(5), at(6), 0, 0])),
        3 => line.push_str("|2^48"),
        _ => {}
    }
    match at(5) % 5 {
        1 => line.push_str("|1:4"),
        2 => line += &format!("|{}:{}", at(6), at(7) % 9),
        3 => {
            line += &format!(
                "|{}:{}",
                u64::from_le_bytes([at(6), at(7), 0, 0, 0, 0, 0, 0]),
                2
            )
        }
        _ => {}
    }
    if at(6) % 7 == 1 {
        line += &format!(";inline:{}|1:4", base64(&key));
    }
    line.push_str(PARAMS[usize::from(at(7)) % PARAMS.len()]);
    if at(0) & 2 != 0 {
        line.push_str(&String::from_utf8_lossy(body.get(len..).unwrap_or(&[])));
    }
    line
}

/// The XDP status file (`<table dir>/xdp`) as a reader sees it: whatever it holds, the
/// views never panic, and attachments with plain interface names and modes write and read
/// back unchanged.
fn check_xdp_status(text: &str) {
    let status = XdpStatus {
        lines: text.lines().map(str::to_owned).collect(),
    };
    let _ = (
        status.off_reason(),
        status.pin_dir(),
        status.notes().count(),
    );
    let mut again = XdpStatus::default();
    let plain = |s: &str| !s.is_empty() && !s.contains(['(', ')', ';', '\n', '\r']);
    let attached: Vec<_> = status
        .attachments()
        .into_iter()
        .filter(|a| plain(&a.interface) && plain(&a.mode) && !a.interface.contains(' '))
        .collect();
    for a in &attached {
        again.push_attached(a);
    }
    assert_eq!(again.attachments(), attached, "{text:?}");
}

fuzz_target!(|data: &[u8]| {
    if data.first().is_some_and(|b| b & 1 == 1) {
        check(&crypto_line(data));
    }
    let text = String::from_utf8_lossy(data);
    check(&text);
    check_xdp_status(&text);
    for line in text.lines().take(4) {
        if line.len() != text.len() {
            check(line);
        }
    }
});
