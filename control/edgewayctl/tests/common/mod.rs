//! Helpers for the `edgewayctl srtp` tests: captures built from scratch, the built binary
//! run on them, and what came out read back.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use edgeway_srtp::sdes::{CryptoAttribute, KeyParam, SessionParams};
use edgeway_srtp::{MasterKey, SrtpProfile};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};
use serde_json::Value;

/// A fresh directory for one test's files.
pub fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("srtp-pcap-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Key material for `profile` derived from `seed`.
pub fn master_key(profile: SrtpProfile, seed: u8) -> MasterKey {
    let key: Vec<u8> = (0..profile.master_key_len() as u8)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i))
        .collect();
    let salt: Vec<u8> = (0..profile.master_salt_len() as u8)
        .map(|i| seed.wrapping_mul(17) ^ i.wrapping_mul(7))
        .collect();
    MasterKey::new(profile, &key, &salt).unwrap()
}

/// The `a=crypto` line for `key`.
pub fn crypto_line(tag: u32, profile: SrtpProfile, key: &MasterKey) -> String {
    let attr = CryptoAttribute {
        tag,
        profile,
        keys: vec![KeyParam {
            key: key.clone(),
            lifetime: Some(1 << 31),
        }],
        params: SessionParams::default(),
    };
    format!("a=crypto:{attr}")
}

/// A plain RTP packet with a payload that depends on all its fields.
pub fn rtp(ssrc: u32, seq: u16, pt: u8, payload_len: usize) -> Vec<u8> {
    let ts = u32::from(seq).wrapping_mul(160);
    let mut p = vec![0x80, pt & 0x7f];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8) ^ (ssrc as u8)));
    p
}

/// A plain RTCP sender report from `ssrc`.
pub fn rtcp_sr(ssrc: u32, n: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xe8, 0, 0, 0, 0, 0, 0, n as u8]); // NTP timestamp
    p.extend_from_slice(&(n * 160).to_be_bytes()); // RTP timestamp
    p.extend_from_slice(&n.to_be_bytes()); // packet count
    p.extend_from_slice(&(n * 160).to_be_bytes()); // octet count
    p
}

pub const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// An Ethernet/IPv4/UDP frame with correct lengths and checksums.
pub fn udp4(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.0, dst.0, 64)
        .udp(src.1, dst.1);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// An Ethernet/IPv6/UDP frame with correct lengths and checksum.
pub fn udp6(src: ([u8; 16], u16), dst: ([u8; 16], u16), payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_B, MAC_A)
        .ipv6(src.0, dst.0, 64)
        .udp(src.1, dst.1);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// An ARP request: a frame that is not IP at all.
pub fn arp() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    f.resize(60, 0);
    f
}

pub fn pcap_header() -> PcapHeader {
    PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: 65535,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
    }
}

/// Writes Ethernet `frames` as a classic pcap, 20 ms apart.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    write_pcap_link(path, DataLink::ETHERNET, frames);
}

/// Writes `frames` of link type `link` as a classic pcap, 20 ms apart.
pub fn write_pcap_link(path: &Path, link: DataLink, frames: &[Vec<u8>]) {
    let header = PcapHeader {
        datalink: link,
        ..pcap_header()
    };
    let mut w = PcapWriter::with_header(File::create(path).unwrap(), header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::from_millis(1_700_000_000_000 + 20 * i as u64);
        w.write_packet(&PcapPacket {
            timestamp: ts,
            orig_len: f.len() as u32,
            data: Cow::Borrowed(f),
        })
        .unwrap();
    }
}

/// The frames of a classic pcap.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(File::open(path).unwrap()).unwrap();
    let mut frames = Vec::new();
    while let Some(p) = r.next_packet() {
        frames.push(p.unwrap().data.into_owned());
    }
    frames
}

/// The UDP payload of an Ethernet frame, if it is IP/UDP, after checking that every length
/// and checksum field of the frame is right (etherparse computes them independently).
pub fn udp_payload(frame: &[u8]) -> Option<Vec<u8>> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        return None;
    };
    let payload = udp.payload();
    let header = udp.to_header();
    assert_eq!(usize::from(header.length), 8 + payload.len(), "UDP length");
    match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "IPv4 header checksum"
            );
            assert_eq!(usize::from(h.total_len), h.header_len() + 8 + payload.len());
            if header.checksum != 0 {
                let want = header.calc_checksum_ipv4(&h, payload).unwrap();
                assert_eq!(header.checksum, want, "UDP checksum over IPv4");
            }
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(usize::from(h.payload_length), 8 + payload.len());
            let want = header.calc_checksum_ipv6(&h, payload).unwrap();
            assert_eq!(header.checksum, want, "UDP checksum over IPv6");
        }
        None => return None,
    }
    Some(payload.to_vec())
}

/// Runs the built `edgewayctl` with `args`.
pub fn edgewayctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgewayctl"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `edgewayctl srtp ... --json`, expects `status`, and returns the report.
pub fn srtp_json(args: &[&str], status: i32) -> Value {
    let mut all = vec!["srtp"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = edgewayctl(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(status),
        "edgewayctl {all:?}\nstderr: {stderr}\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {stderr}"))
}

/// The report's row for the stream of `ssrc` and `kind` ("rtp" or "rtcp").
pub fn stream<'a>(report: &'a Value, kind: &str, ssrc: u32) -> &'a Value {
    report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == kind && s["ssrc"] == ssrc)
        .unwrap_or_else(|| panic!("no {kind} stream {ssrc:#x} in {report:#}"))
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Asserts that two frame lists are equal, naming the first difference (not dumping bytes).
pub fn same_frames(got: &[Vec<u8>], want: &[Vec<u8>]) {
    assert_eq!(got.len(), want.len(), "frame count");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "frame {i} differs: {} bytes, {} expected",
            got[i].len(),
            want[i].len()
        );
    }
}

/// Asserts that two files are byte for byte equal.
pub fn same_file(got: &Path, want: &Path) {
    let (g, w) = (std::fs::read(got).unwrap(), std::fs::read(want).unwrap());
    if g != w {
        let at = g.iter().zip(&w).position(|(a, b)| a != b);
        panic!(
            "{} differs from {}: {} bytes vs {}, first difference at {at:?}",
            got.display(),
            want.display(),
            g.len(),
            w.len()
        );
    }
}
