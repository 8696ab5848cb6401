//! One harness for every published known-answer vector in `tests/vectors/*.vec`.

#![allow(clippy::unwrap_used)]
use std::collections::BTreeMap;

use edgeway_srtp::{danger, MasterKey, SrtpConfig, SrtpContext, SrtpProfile};

type Record = BTreeMap<String, String>;

fn records() -> Vec<Record> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("vector dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        let mut rec = Record::new();
        for line in text.lines().chain(std::iter::once("")) {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            if line.is_empty() {
                if !rec.is_empty() {
                    out.push(std::mem::take(&mut rec));
                }
                continue;
            }
            let (k, v) = line.split_once(':').expect("key: value");
            rec.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    out
}

fn hex(rec: &Record, key: &str) -> Vec<u8> {
    let v = rec
        .get(key)
        .unwrap_or_else(|| panic!("{}: missing {key}", rec["name"]));
    hex::decode(v.replace(' ', "")).unwrap_or_else(|e| panic!("{}: {key}: {e}", rec["name"]))
}

fn profile(rec: &Record) -> SrtpProfile {
    SrtpProfile::from_sdes_name(&rec["profile"]).expect("known profile")
}

fn context(rec: &Record) -> SrtpContext {
    let p = profile(rec);
    if rec.contains_key("session_key") {
        danger::context_from_session_keys(
            p,
            &hex(rec, "session_key"),
            &hex(rec, "session_salt"),
            &[],
        )
        .expect("session context")
    } else {
        let key =
            MasterKey::new(p, &hex(rec, "master_key"), &hex(rec, "master_salt")).expect("key");
        SrtpContext::new(&SrtpConfig::new(p, key)).expect("context")
    }
}

fn index(rec: &Record) -> u64 {
    let s = &rec["index"];
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).expect("hex index"),
        None => s.parse().expect("index"),
    }
}

fn check(rec: &Record) {
    let name = &rec["name"];
    match rec["kind"].as_str() {
        "keystream" => {
            let want = hex(rec, "keystream");
            let mut ks = vec![0u8; want.len()];
            let iv: [u8; 16] = hex(rec, "iv").try_into().expect("16-byte iv");
            danger::aes_cm_keystream(&hex(rec, "key"), &iv, &mut ks);
            assert_eq!(ks, want, "{name}");
        }
        "kdf" => {
            for label in 0..6u8 {
                let Some(_) = rec.get(&format!("label{label}")) else {
                    continue;
                };
                let want = hex(rec, &format!("label{label}"));
                let mut out = vec![0u8; want.len()];
                danger::derive_session_key(
                    &hex(rec, "master_key"),
                    &hex(rec, "master_salt"),
                    label,
                    &mut out,
                );
                assert_eq!(hex::encode(out), hex::encode(want), "{name} label {label}");
            }
        }
        "srtp" | "srtp-session" => {
            let (plain, protected) = (hex(rec, "plain"), hex(rec, "protected"));
            let mut buf = vec![0u8; 2048];
            buf[..plain.len()].copy_from_slice(&plain);
            let n = context(rec).protect_rtp(&mut buf, plain.len()).expect(name);
            assert_eq!(
                hex::encode(&buf[..n]),
                hex::encode(&protected),
                "{name} protect"
            );
            buf[..protected.len()].copy_from_slice(&protected);
            let n = context(rec)
                .unprotect_rtp(&mut buf, protected.len())
                .expect(name);
            assert_eq!(
                hex::encode(&buf[..n]),
                hex::encode(&plain),
                "{name} unprotect"
            );
            // One flipped bit anywhere must fail authentication.
            for bit in [0, 8 * 12 + 3, 8 * protected.len() - 1] {
                let mut bad = protected.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                bad.resize(2048, 0);
                assert!(
                    context(rec)
                        .unprotect_rtp(&mut bad, protected.len())
                        .is_err(),
                    "{name}"
                );
            }
        }
        "srtcp" | "srtcp-session" => {
            let (plain, protected) = (hex(rec, "plain"), hex(rec, "protected"));
            let mut buf = vec![0u8; 2048];
            // Protecting numbers packets from 1: wind the sender up to the vector's index.
            let mut tx = context(rec);
            for _ in 1..index(rec) {
                buf[..plain.len()].copy_from_slice(&plain);
                tx.protect_rtcp(&mut buf, plain.len()).expect(name);
            }
            buf[..plain.len()].copy_from_slice(&plain);
            let n = tx.protect_rtcp(&mut buf, plain.len()).expect(name);
            assert_eq!(
                hex::encode(&buf[..n]),
                hex::encode(&protected),
                "{name} protect"
            );
            check_rtcp_unprotect(rec, &plain, &protected);
        }
        "srtcp-session-unprotect" => {
            check_rtcp_unprotect(rec, &hex(rec, "plain"), &hex(rec, "protected"));
        }
        other => panic!("{name}: unknown kind {other}"),
    }
}

fn check_rtcp_unprotect(rec: &Record, plain: &[u8], protected: &[u8]) {
    let name = &rec["name"];
    let mut buf = protected.to_vec();
    let n = context(rec)
        .unprotect_rtcp(&mut buf, protected.len())
        .expect(name);
    assert_eq!(
        hex::encode(&buf[..n]),
        hex::encode(plain),
        "{name} unprotect"
    );
    let mut bad = protected.to_vec();
    bad[9] ^= 0x40;
    assert!(
        context(rec)
            .unprotect_rtcp(&mut bad, protected.len())
            .is_err(),
        "{name}"
    );
}

#[test]
fn published_vectors() {
    let recs = records();
    assert!(
        recs.len() >= 13,
        "vector files went missing: {}",
        recs.len()
    );
    for rec in &recs {
        check(rec);
        eprintln!("ok {}", rec["name"]);
    }
}
