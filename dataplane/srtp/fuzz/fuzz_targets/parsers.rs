//! The RTP, RTCP and SDES parsers on arbitrary bytes: typed errors, never a panic, and a
//! parsed `a=crypto` attribute formats to text that parses back to the same value.
#![no_main]

use edgeway_srtp::{rtcp::RtcpCompound, rtp::RtpPacket, sdes::CryptoAttribute};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = RtpPacket::parse(data) {
        let _ = (p.csrcs().count(), p.payload().len());
        if let Some(ext) = p.extension() {
            for e in ext.elements() {
                let _ = e;
            }
        }
    }
    if let Ok(c) = RtcpCompound::parse(data) {
        for p in c.packets() {
            let _ = (p.sender_info(), p.report_blocks().count());
        }
    }
    if let Ok(s) = core::str::from_utf8(data) {
        if let Ok(a) = s.parse::<CryptoAttribute>() {
            let again: CryptoAttribute = a.to_string().parse().expect("formatted attribute parses");
            assert_eq!(a, again);
        }
    }
});
