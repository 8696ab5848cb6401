//! `edgewayctl srtp encrypt|decrypt` on real pcap files: round trips over IPv4 and IPv6 with
//! several SSRCs, muxed RTCP and a sequence wrap; forged, replayed, garbage and wrong-key
//! packets reported in the counts; output frames with valid lengths and checksums.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgeway_srtp::{sdes::CryptoAttribute, SrtpProfile};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::DataLink;

fn frame(src: (IpAddr, u16), dst: (IpAddr, u16), payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    let udp_len = (8 + payload.len()) as u16;
    let mut udp = Vec::new();
    udp.extend_from_slice(&src.1.to_be_bytes());
    udp.extend_from_slice(&dst.1.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
            let total = 20 + udp_len;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&udp_len.to_be_bytes());
            f.extend_from_slice(&[17, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => unreachable!(),
    }
    f.extend_from_slice(&udp);
    f
}

fn rtp(ssrc: u32, seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((0..len).map(|i| (i as u8).wrapping_mul(seq as u8)));
    p
}

fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(std::fs::File::create(path).unwrap(), header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let p = PcapPacket::new(Duration::from_millis(20 * i as u64), f.len() as u32, f);
        w.write_packet(&p).unwrap();
    }
}

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}

/// The UDP payload of a frame (lengths checked by the slicer).
fn udp_payload(f: &[u8]) -> Vec<u8> {
    let sliced = etherparse::SlicedPacket::from_ethernet(f).unwrap();
    let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
        panic!("not udp")
    };
    udp.payload().to_vec()
}

/// Checks the IPv4 header checksum and the UDP checksum of a frame edgewayctl rewrote.
fn assert_checksums(f: &[u8]) {
    let sliced = etherparse::SlicedPacket::from_ethernet(f).unwrap();
    let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
        panic!("not udp")
    };
    match sliced.net.unwrap() {
        etherparse::NetSlice::Ipv4(v4) => {
            let h = v4.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "IPv4 header checksum"
            );
            let c = udp
                .to_header()
                .calc_checksum_ipv4(&h, udp.payload())
                .unwrap();
            assert_eq!(udp.checksum(), c, "UDP checksum over IPv4");
        }
        etherparse::NetSlice::Ipv6(v6) => {
            let h = v6.header().to_header();
            let c = udp
                .to_header()
                .calc_checksum_ipv6(&h, udp.payload())
                .unwrap();
            assert_eq!(udp.checksum(), c, "UDP checksum over IPv6");
        }
    }
}

fn ctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgewayctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Fixture {
    dir: PathBuf,
    plain: Vec<Vec<u8>>,
    rtp_frames: usize,
    key1: String,
    key2: String,
}

fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("edgewayctl-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = rand_core::OsRng;
    let key1 = CryptoAttribute::generate(1, SrtpProfile::AesCm128HmacSha1_80, &mut rng).to_string();
    let key2 = CryptoAttribute::generate(2, SrtpProfile::AeadAes256Gcm, &mut rng).to_string();
    let a = (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40_000);
    let b = (IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 50_000);
    let c = (
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        40_002,
    );
    let d = (
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
        50_002,
    );
    let mut plain = Vec::new();
    let mut rtp_frames = 0;
    for i in 0..120u16 {
        // Flow a->b wraps its sequence number; two SSRCs share it.
        plain.push(frame(a, b, &rtp(0x1111, 65_480u16.wrapping_add(i), 160)));
        plain.push(frame(a, b, &rtp(0x3333, i, 40)));
        plain.push(frame(c, d, &rtp(0x2222, 1000 + i, 1200)));
        rtp_frames += 3;
        if i % 50 == 0 {
            plain.push(frame(a, b, &rtcp(0x1111)));
            plain.push(frame(c, d, &rtcp(0x2222)));
            rtp_frames += 2;
            // Something that is not RTP: a DNS-looking datagram passes through untouched.
            plain.push(frame(
                a,
                (b.0, 53),
                b"\x12\x34\x01\x00\x00\x01\x00\x00not rtp",
            ));
        }
    }
    write_pcap(&dir.join("plain.pcap"), &plain);
    Fixture {
        dir,
        plain,
        rtp_frames,
        key1,
        key2,
    }
}

impl Fixture {
    fn path(&self, f: &str) -> String {
        self.dir.join(f).to_string_lossy().into_owned()
    }
    fn encrypt(&self) -> Vec<Vec<u8>> {
        let (ok, _, err) = ctl(&[
            "srtp",
            "encrypt",
            "-i",
            &self.path("plain.pcap"),
            "-o",
            &self.path("srtp.pcap"),
            "-c",
            &format!("a=crypto:{}", self.key1),
            "-c",
            &self.key2,
            "--stream",
            "192.0.2.1:40000=1",
            "--stream",
            "[2001:db8::1]:40002=2",
        ]);
        assert!(ok, "{err}");
        read_pcap(&self.dir.join("srtp.pcap"))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn encrypt_then_decrypt_restores_every_payload() {
    let fx = fixture("roundtrip");
    let srtp = fx.encrypt();
    assert_eq!(srtp.len(), fx.plain.len());
    let mut changed = 0;
    for (p, s) in fx.plain.iter().zip(&srtp) {
        let (pp, sp) = (udp_payload(p), udp_payload(s));
        if pp != sp {
            assert_checksums(s);
            changed += 1;
            assert!(sp.len() > pp.len(), "SRTP adds a tag");
        }
    }
    assert_eq!(
        changed, fx.rtp_frames,
        "every RTP/RTCP frame and nothing else is encrypted"
    );
    // Decrypt without bindings: each flow finds its key by authentication.
    let (ok, out, err) = ctl(&[
        "srtp",
        "decrypt",
        "-i",
        &fx.path("srtp.pcap"),
        "-o",
        &fx.path("back.pcap"),
        "-c",
        &fx.key2,
        "-c",
        &fx.key1,
        "--json",
    ]);
    assert!(ok, "{err}");
    let back = read_pcap(&fx.dir.join("back.pcap"));
    assert_eq!(back.len(), fx.plain.len());
    for (p, b) in fx.plain.iter().zip(&back) {
        assert_eq!(udp_payload(p), udp_payload(b));
        if p != b {
            assert_checksums(b);
        }
    }
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["transformed"], fx.rtp_frames as u64);
    for s in report["streams"].as_array().unwrap() {
        assert_eq!(s["auth_failed"], 0, "{s}");
        let tag = if s["src"].as_str().unwrap().starts_with('[') {
            2
        } else {
            1
        };
        assert_eq!(s["key_tag"], tag, "{s}");
    }
}

#[test]
fn forged_replayed_garbage_and_wrong_key_are_counted() {
    let fx = fixture("failures");
    let mut srtp = fx.encrypt();
    // A replay of frame 10, a forged copy of frame 40 placed before it, garbage RTP.
    let replay = srtp[10].clone();
    let mut forged = srtp[40].clone();
    let n = forged.len();
    forged[n - 3] ^= 0x10;
    srtp.insert(40, forged);
    srtp.push(replay);
    let a = (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40_000);
    let b = (IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 50_000);
    srtp.push(frame(a, b, &[0x80, 0x00, 0x00]));
    srtp.push(frame(a, b, &[0x80; 40]));
    write_pcap(&fx.dir.join("bad.pcap"), &srtp);
    let (ok, out, err) = ctl(&[
        "srtp",
        "decrypt",
        "-i",
        &fx.path("bad.pcap"),
        "-o",
        &fx.path("out.pcap"),
        "-c",
        &fx.key1,
        "-c",
        &fx.key2,
        "--json",
        "--drop-unmatched",
    ]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let total = |k: &str| -> u64 {
        report["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[k].as_u64().unwrap())
            .sum()
    };
    assert_eq!(total("replayed"), 1, "{out}");
    assert!(total("auth_failed") >= 2, "forged + garbage: {out}");
    assert_eq!(total("ok"), fx.rtp_frames as u64);
    // --drop-unmatched: exactly the genuine packets remain, decrypted.
    assert_eq!(read_pcap(&fx.dir.join("out.pcap")).len(), fx.rtp_frames);
    // --strict turns failures into exit status 3.
    let st = Command::new(env!("CARGO_BIN_EXE_edgewayctl"))
        .args([
            "srtp",
            "decrypt",
            "-i",
            &fx.path("bad.pcap"),
            "-o",
            &fx.path("o2.pcap"),
        ])
        .args(["-c", &fx.key1, "-c", &fx.key2, "--strict"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(3));
    // The wrong key authenticates nothing, and says so.
    let wrong =
        CryptoAttribute::generate(9, SrtpProfile::AesCm128HmacSha1_80, &mut rand_core::OsRng);
    let (ok, out, _) = ctl(&[
        "srtp",
        "decrypt",
        "-i",
        &fx.path("srtp.pcap"),
        "-o",
        &fx.path("o3.pcap"),
        "-c",
        &wrong.to_string(),
        "--json",
    ]);
    assert!(ok);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["transformed"], 0);
    let failed: u64 = report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["auth_failed"].as_u64().unwrap() + s["malformed"].as_u64().unwrap())
        .sum();
    assert_eq!(failed, fx.rtp_frames as u64);
}

#[test]
fn refuses_bad_usage_clearly() {
    let fx = fixture("usage");
    let (ok, _, err) = ctl(&[
        "srtp",
        "decrypt",
        "-i",
        &fx.path("plain.pcap"),
        "-o",
        &fx.path("x"),
        "-c",
        "1 BOGUS inline:AAAA",
    ]);
    assert!(!ok);
    assert!(err.contains("unsupported crypto-suite"), "{err}");
    let (ok, _, err) = ctl(&[
        "srtp",
        "decrypt",
        "-i",
        &fx.path("missing.pcap"),
        "-o",
        &fx.path("x"),
        "-c",
        &fx.key1,
    ]);
    assert!(!ok);
    assert!(err.contains("missing.pcap"), "{err}");
    std::fs::write(fx.dir.join("junk.pcap"), b"definitely not a capture").unwrap();
    let (ok, _, err) = ctl(&[
        "srtp",
        "decrypt",
        "-i",
        &fx.path("junk.pcap"),
        "-o",
        &fx.path("x"),
        "-c",
        &fx.key1,
    ]);
    assert!(!ok);
    assert!(err.contains("not a pcap"), "{err}");
    let (ok, _, err) = ctl(&[
        "srtp",
        "decrypt",
        "-i",
        &fx.path("plain.pcap"),
        "-o",
        &fx.path("x"),
        "-c",
        &fx.key1,
        "--stream",
        "192.0.2.1:1=7",
    ]);
    assert!(!ok);
    assert!(err.contains("no --crypto line has tag 7"), "{err}");
}
