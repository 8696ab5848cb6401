//! `edgewayctl srtp` against libsrtp, an independent implementation (through pylibsrtp and
//! `tests/oracle/libsrtp_oracle.py`): captures protected by libsrtp decrypt to the packets
//! libsrtp was given, and captures encrypted by `edgewayctl` unprotect under libsrtp; every
//! suite, across a sequence number wrap, with SRTCP.
//!
//! The oracle needs the project's venv (`scripts/setup` makes it). Without it the test fails
//! under CI (`CI=true`) and otherwise skips with a message saying what was not tested.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use edgeway_srtp::SrtpProfile;
use edgeway_testkit::LibsrtpOracle as Oracle;

const SRC: ([u8; 4], u16) = ([192, 0, 2, 10], 20000);
const DST: ([u8; 4], u16) = ([192, 0, 2, 20], 30000);

/// 40 RTP packets across a sequence wrap with two RTCP reports among them: (is RTCP, bytes).
fn plain_packets(ssrc: u32) -> Vec<(bool, Vec<u8>)> {
    let mut v = Vec::new();
    for i in 0..40u16 {
        v.push((
            false,
            rtp(ssrc, 65510u16.wrapping_add(i), 96, 100 + usize::from(i)),
        ));
        if i == 10 || i == 30 {
            v.push((true, rtcp_sr(ssrc, u32::from(i))));
        }
    }
    v
}

#[test]
fn libsrtp_and_edgewayctl_read_each_others_captures() {
    let Some(mut oracle) = Oracle::start("edgewayctl srtp") else {
        return;
    };
    let dir = scratch("libsrtp");
    for (n, profile) in SrtpProfile::ALL.into_iter().enumerate() {
        let key = master_key(profile, 60 + n as u8);
        let line = crypto_line(7, profile, &key);
        let ssrc = 0xcafe_0000 + n as u32;
        let plain = plain_packets(ssrc);
        let name = profile.sdes_name();

        // libsrtp protects; edgewayctl decrypts.
        let tx = oracle.session(profile.sdes_name(), &[key.key(), key.salt()].concat(), 1024);
        let frames: Vec<Vec<u8>> = plain
            .iter()
            .map(|(rtcp, p)| {
                let op = if *rtcp { "protect_rtcp" } else { "protect" };
                udp4(SRC, DST, &oracle.op(tx, op, p).unwrap())
            })
            .collect();
        let srtp = dir.join(format!("{name}-libsrtp.pcap"));
        let out = dir.join(format!("{name}-decrypted.pcap"));
        write_pcap(&srtp, &frames);
        let report = srtp_json(&["decrypt", p(&srtp), p(&out), "--crypto", &line], 0);
        assert_eq!(report["failed"], 0, "{name}: {report:#}");
        let got: Vec<Vec<u8>> = read_pcap(&out)
            .iter()
            .map(|f| udp_payload(f).unwrap())
            .collect();
        assert_eq!(got.len(), plain.len(), "{name}");
        for (i, (g, (_, want))) in got.iter().zip(&plain).enumerate() {
            assert!(
                g == want,
                "{name}: packet {i} decrypts differently from libsrtp's input"
            );
        }

        // edgewayctl encrypts; libsrtp unprotects.
        let frames: Vec<Vec<u8>> = plain.iter().map(|(_, p)| udp4(SRC, DST, p)).collect();
        let clear = dir.join(format!("{name}-plain.pcap"));
        let enc = dir.join(format!("{name}-edgeway.pcap"));
        write_pcap(&clear, &frames);
        let report = srtp_json(&["encrypt", p(&clear), p(&enc), "--crypto", &line], 0);
        assert_eq!(report["failed"], 0, "{name}: {report:#}");
        let rx = oracle.session(profile.sdes_name(), &[key.key(), key.salt()].concat(), 1024);
        for (i, (f, (rtcp, want))) in read_pcap(&enc).iter().zip(&plain).enumerate() {
            let op = if *rtcp { "unprotect_rtcp" } else { "unprotect" };
            let got = oracle.op(rx, op, &udp_payload(f).unwrap()).unwrap();
            assert!(&got == want, "{name}: libsrtp reads packet {i} differently");
        }
    }
}
