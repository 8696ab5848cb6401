//! `edgewayctl srtp encrypt|decrypt` end to end: captures built here, the built binary run
//! on them, the output captures and JSON reports checked.
#![allow(clippy::unwrap_used)]

mod common;

use std::borrow::Cow;
use std::fs::File;
use std::time::Duration;

use common::*;
use edgeway_srtp::SrtpProfile;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};
use pcap_file::DataLink;

const A_SRC: ([u8; 4], u16) = ([10, 0, 0, 1], 4000);
const A_DST: ([u8; 4], u16) = ([10, 0, 0, 2], 5000);
const A_RTCP_SRC: ([u8; 4], u16) = ([10, 0, 0, 1], 4001);
const A_RTCP_DST: ([u8; 4], u16) = ([10, 0, 0, 2], 5001);
const B_SRC: ([u8; 16], u16) = (
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    6000,
);
const B_DST: ([u8; 16], u16) = (
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    7000,
);
const SSRC_A1: u32 = 0x1111_1111;
const SSRC_A2: u32 = 0x3333_3333;
const SSRC_B: u32 = 0x2222_2222;
const PROFILE_A: SrtpProfile = SrtpProfile::AesCm128HmacSha1_80;
const PROFILE_B: SrtpProfile = SrtpProfile::AeadAes128Gcm;

/// What a frame of the test capture is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    /// RTP of an SSRC, with its sequence number.
    Rtp(u32, u16),
    /// RTCP of an SSRC.
    Rtcp(u32),
    /// Not media.
    Other,
}

/// The mixed plain capture: SSRC A1 (IPv4, sequence wrapping past 65535) and A2 on the same
/// flow under key A, their RTCP on the next port up, SSRC B over IPv6 under key B with
/// muxed RTCP, and frames that are not media (ARP, a DNS-looking datagram).
fn mixed_capture() -> (Vec<Vec<u8>>, Vec<What>) {
    let mut frames = Vec::new();
    let mut what = Vec::new();
    frames.push(arp());
    what.push(What::Other);
    for i in 0..24u16 {
        let seq = 65524u16.wrapping_add(i);
        frames.push(udp4(A_SRC, A_DST, &rtp(SSRC_A1, seq, 0, 160)));
        what.push(What::Rtp(SSRC_A1, seq));
        if i % 3 == 0 {
            let seq = 1000 + i;
            frames.push(udp4(A_SRC, A_DST, &rtp(SSRC_A2, seq, 96, 900)));
            what.push(What::Rtp(SSRC_A2, seq));
        }
        let seq = 300 + i;
        frames.push(udp6(
            B_SRC,
            B_DST,
            &rtp(SSRC_B, seq, 111, 60 + usize::from(i)),
        ));
        what.push(What::Rtp(SSRC_B, seq));
        if i == 10 {
            frames.push(udp4(A_RTCP_SRC, A_RTCP_DST, &rtcp_sr(SSRC_A1, 1)));
            what.push(What::Rtcp(SSRC_A1));
            frames.push(udp6(B_SRC, B_DST, &rtcp_sr(SSRC_B, 1)));
            what.push(What::Rtcp(SSRC_B));
            frames.push(udp4(
                ([10, 0, 0, 1], 53000),
                ([10, 0, 0, 53], 53),
                &[0x12, 0x34, 1, 0, 0, 1],
            ));
            what.push(What::Other);
        }
    }
    (frames, what)
}

fn keys() -> (String, String) {
    (
        crypto_line(1, PROFILE_A, &master_key(PROFILE_A, 1)),
        crypto_line(1, PROFILE_B, &master_key(PROFILE_B, 2)),
    )
}

#[test]
fn encrypt_then_decrypt_gives_back_the_capture_byte_for_byte() {
    let dir = scratch("roundtrip");
    let (frames, what) = mixed_capture();
    let plain = dir.join("plain.pcap");
    let srtp = dir.join("srtp.pcap");
    write_pcap(&plain, &frames);
    let (key_a, key_b) = keys();

    let report = srtp_json(
        &[
            "encrypt",
            p(&plain),
            p(&srtp),
            "--crypto",
            &key_a,
            "--stream",
            "10.0.0.1:4000",
            "--crypto",
            &key_b,
            "--ssrc",
            "0x22222222",
        ],
        0,
    );
    let media = what.iter().filter(|w| **w != What::Other).count() as u64;
    assert_eq!(report["frames"]["read"], frames.len());
    assert_eq!(report["frames"]["rewritten"], media);
    assert_eq!(report["failed"], 0);
    assert_eq!(stream(&report, "rtp", SSRC_A1)["ok"], 24);
    assert_eq!(stream(&report, "rtp", SSRC_A1)["key"]["key"], 1);
    assert_eq!(
        stream(&report, "rtcp", SSRC_A1)["key"]["key"],
        1,
        "RTCP on port+1 binds"
    );
    assert_eq!(stream(&report, "rtp", SSRC_B)["key"]["key"], 2);
    assert_eq!(
        stream(&report, "rtcp", SSRC_B)["key"]["suite"],
        "AEAD_AES_128_GCM"
    );

    // Every SRTP frame is well formed, as long as the plain one plus the trailer, and
    // encrypted; other frames are untouched.
    let protected = read_pcap(&srtp);
    assert_eq!(protected.len(), frames.len());
    for ((s, f), w) in protected.iter().zip(&frames).zip(&what) {
        let grow = match w {
            What::Other => {
                assert!(s == f, "{w:?} frame is copied unchanged");
                continue;
            }
            What::Rtp(SSRC_B, _) => 16,
            What::Rtcp(SSRC_B) => 16 + 4,
            What::Rtp(..) => 10,
            What::Rtcp(_) => 4 + 10,
        };
        let (sp, fp) = (udp_payload(s).unwrap(), udp_payload(f).unwrap());
        assert_eq!(sp.len(), fp.len() + grow, "{w:?}");
        assert_ne!(sp[12..fp.len()], fp[12..], "{w:?} payload is encrypted");
    }

    // Decrypt with the keys unbound: each stream finds its key; and bound.
    let back = dir.join("back.pcap");
    let report = srtp_json(
        &[
            "decrypt",
            p(&srtp),
            p(&back),
            "--crypto",
            &key_a,
            "--crypto",
            &key_b,
        ],
        0,
    );
    same_file(&back, &plain);
    assert_eq!(report["failed"], 0);
    for (kind, ssrc, key, ok) in [
        ("rtp", SSRC_A1, 1, 24),
        ("rtp", SSRC_A2, 1, 8),
        ("rtcp", SSRC_A1, 1, 1),
        ("rtp", SSRC_B, 2, 24),
        ("rtcp", SSRC_B, 2, 1),
    ] {
        let s = stream(&report, kind, ssrc);
        assert_eq!(s["key"]["key"], key, "{s}");
        assert_eq!(s["ok"], ok, "{s}");
        assert_eq!(s["first_roc"], 0, "{s}");
    }

    let back_bound = dir.join("back-bound.pcap");
    srtp_json(
        &[
            "decrypt",
            p(&srtp),
            p(&back_bound),
            "--crypto",
            &key_b,
            "--stream",
            "[2001:db8::2]:6000",
            "--crypto",
            &key_a,
            "--ssrc",
            "286331153",
            "--ssrc",
            "0x33333333",
        ],
        0,
    );
    same_file(&back_bound, &plain);

    // A capture that starts after A1's sequence number wrapped still decrypts: the rollover
    // counter is found by trial.
    let late: Vec<Vec<u8>> = protected
        .iter()
        .zip(&what)
        .filter(|(_, w)| !matches!(w, What::Rtp(SSRC_A1, seq) if *seq >= 65524))
        .map(|(f, _)| f.clone())
        .collect();
    let late_path = dir.join("late.pcap");
    write_pcap(&late_path, &late);
    let report = srtp_json(
        &[
            "decrypt",
            p(&late_path),
            p(&dir.join("late-back.pcap")),
            "--crypto",
            &key_a,
            "--stream",
            "10.0.0.1:4000",
        ],
        0,
    );
    let a1 = stream(&report, "rtp", SSRC_A1);
    assert_eq!(
        (a1["ok"].as_u64(), a1["first_roc"].as_u64()),
        (Some(12), Some(1)),
        "{a1}"
    );
    assert_eq!(report["failed"], 0);
    // B had no key this time (A is bound to its own source): B's packets are other
    // traffic, not failures.
    assert_eq!(stream(&report, "rtp", SSRC_B)["no_key"], 24);
    assert!(stream(&report, "rtp", SSRC_B)["key"].is_null());
}

/// One stream, encrypted by the tool, and the plain capture it came from.
fn single_stream(dir: &std::path::Path, key: &str) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut frames: Vec<Vec<u8>> = (0..20u16)
        .map(|i| udp4(A_SRC, A_DST, &rtp(SSRC_A1, 40000 + i, 8, 160)))
        .collect();
    frames.insert(7, udp4(A_SRC, A_DST, &rtcp_sr(SSRC_A1, 7)));
    frames.push(udp4(A_SRC, A_DST, &rtcp_sr(SSRC_A1, 20)));
    let plain = dir.join("single-plain.pcap");
    let srtp = dir.join("single-srtp.pcap");
    write_pcap(&plain, &frames);
    srtp_json(&["encrypt", p(&plain), p(&srtp), "--crypto", key], 0);
    (frames, read_pcap(&srtp))
}

#[test]
fn forged_and_replayed_packets_are_counted_and_kept_marked_or_dropped() {
    let dir = scratch("forged");
    let (key, _) = keys();
    let (plain, protected) = single_stream(&dir, &key);
    // A forged copy of frame 5 before the genuine one (a copy after it would be a replay),
    // and a replay of frame 3 at the end.
    let mut forged = protected[5].clone();
    let at = forged.len() - 12; // the last byte before the 10-byte tag
    forged[at] ^= 0x01;
    let mut capture = protected.clone();
    capture.insert(5, forged.clone());
    capture.push(protected[3].clone());
    let input = dir.join("attacked.pcap");
    write_pcap(&input, &capture);

    // Kept: unchanged, where they were.
    let kept = dir.join("kept.pcap");
    let report = srtp_json(&["decrypt", p(&input), p(&kept), "--crypto", &key], 0);
    let s = stream(&report, "rtp", SSRC_A1);
    assert_eq!(
        (
            s["ok"].as_u64(),
            s["auth_failed"].as_u64(),
            s["replayed"].as_u64()
        ),
        (Some(20), Some(1), Some(1)),
        "{s}"
    );
    assert_eq!(stream(&report, "rtcp", SSRC_A1)["ok"], 2);
    assert_eq!(report["failed"], 2);
    let mut want = plain.clone();
    want.insert(5, forged.clone());
    want.push(protected[3].clone());
    same_frames(&read_pcap(&kept), &want);

    // Dropped: exactly the original plain capture.
    let dropped = dir.join("dropped.pcap");
    let report = srtp_json(
        &[
            "decrypt",
            p(&input),
            p(&dropped),
            "--crypto",
            &key,
            "--on-error",
            "drop",
        ],
        0,
    );
    assert_eq!(report["frames"]["dropped"], 2);
    same_frames(&read_pcap(&dropped), &plain);

    // --allow-replays decrypts the replay too, still counting it.
    let report = srtp_json(
        &[
            "decrypt",
            p(&input),
            p(&dir.join("replays.pcap")),
            "--crypto",
            &key,
            "--allow-replays",
        ],
        0,
    );
    assert_eq!(stream(&report, "rtp", SSRC_A1)["replayed"], 1);
    let out = read_pcap(&dir.join("replays.pcap"));
    assert!(out.last() == Some(&plain[3]), "the replay is decrypted");

    // --strict turns failures into exit status 3; the output is still written.
    srtp_json(
        &[
            "decrypt",
            p(&input),
            p(&dir.join("strict.pcap")),
            "--crypto",
            &key,
            "--strict",
        ],
        3,
    );
    assert_eq!(read_pcap(&dir.join("strict.pcap")).len(), want.len());

    // pcapng in, pcapng out: the failed packets carry a comment that says why.
    let ng_in = dir.join("attacked.pcapng");
    {
        let mut w = PcapNgWriter::new(File::create(&ng_in).unwrap()).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 65535))
            .unwrap();
        for (i, f) in capture.iter().enumerate() {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_micros(20_000 * i as u64),
                original_len: f.len() as u32,
                data: Cow::Borrowed(f),
                options: vec![],
            })
            .unwrap();
        }
    }
    let ng_out = dir.join("kept.pcapng");
    let report = srtp_json(&["decrypt", p(&ng_in), p(&ng_out), "--crypto", &key], 0);
    assert_eq!(report["failed"], 2);
    let mut r = PcapNgReader::new(File::open(&ng_out).unwrap()).unwrap();
    let mut got = Vec::new();
    while let Some(b) = r.next_block() {
        if let Block::EnhancedPacket(epb) = b.unwrap() {
            let comment = epb.options.iter().find_map(|o| match o {
                EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                _ => None,
            });
            got.push((epb.data.into_owned(), comment));
        }
    }
    assert_eq!(got.len(), want.len());
    for (i, ((data, comment), w)) in got.iter().zip(&want).enumerate() {
        assert!(data == w, "frame {i} differs");
        match i {
            5 => assert!(comment
                .as_deref()
                .unwrap()
                .contains("authentication failed")),
            _ if i == want.len() - 1 => {
                assert!(comment.as_deref().unwrap().contains("replayed"))
            }
            _ => assert_eq!(comment, &None, "frame {i}"),
        }
    }
}

#[test]
fn a_wrong_key_reports_every_packet_as_an_auth_failure() {
    let dir = scratch("wrong-key");
    let (key, _) = keys();
    let (_, protected) = single_stream(&dir, &key);
    let wrong = crypto_line(1, PROFILE_A, &master_key(PROFILE_A, 9));
    let out = dir.join("out.pcap");
    let report = srtp_json(
        &[
            "decrypt",
            p(&dir.join("single-srtp.pcap")),
            p(&out),
            "--crypto",
            &wrong,
        ],
        0,
    );
    let rtp = stream(&report, "rtp", SSRC_A1);
    assert_eq!(
        (rtp["ok"].as_u64(), rtp["auth_failed"].as_u64()),
        (Some(0), Some(20)),
        "{rtp}"
    );
    assert!(rtp["key"].is_null());
    assert_eq!(stream(&report, "rtcp", SSRC_A1)["auth_failed"], 2);
    assert_eq!(report["failed"], 22);
    assert_eq!(
        read_pcap(&out),
        protected,
        "failed packets are kept unchanged"
    );
    assert_eq!(report["keys"][0]["streams"], 0);

    // The table on stderr says the same.
    let table = edgewayctl(&[
        "srtp",
        "decrypt",
        p(&dir.join("single-srtp.pcap")),
        p(&out),
        "--crypto",
        &wrong,
    ]);
    assert_eq!(table.status.code(), Some(0));
    let text = String::from_utf8_lossy(&table.stderr);
    assert!(text.contains("0 ok, 22 auth failed"), "{text}");
    assert!(text.contains("none matched"), "{text}");
}

#[test]
fn garbage_does_not_crash_and_is_copied_through() {
    let dir = scratch("garbage");
    let (key, _) = keys();
    let mut payloads: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        vec![0x80, 0],
        vec![0x80; 11],
        rtp(1, 1, 0, 0), // header only
        vec![0x8f; 12],  // 15 CSRCs announced, none there
        vec![
            0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0xff, 0xff,
        ], // huge extension
        vec![0x80, 200, 0, 1, 0, 0, 0, 2], // bare RTCP header
        vec![0x80, 200, 0, 1], // RTCP without an SSRC
        vec![
            0xbf, 0xc8, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
        ],
    ];
    let mut x: u32 = 0x1234_5678;
    for n in 0..200usize {
        let mut p: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        if let Some(b) = p.first_mut() {
            *b = 0x80 | (*b & 0x3f);
        }
        payloads.push(p);
    }
    let frames: Vec<Vec<u8>> = payloads.iter().map(|p| udp4(A_SRC, A_DST, p)).collect();
    let input = dir.join("garbage.pcap");
    write_pcap(&input, &frames);
    for cmd in ["decrypt", "encrypt"] {
        let out = dir.join(format!("{cmd}.pcap"));
        let report = srtp_json(&[cmd, p(&input), p(&out), "--crypto", &key], 0);
        assert_eq!(report["frames"]["read"], frames.len(), "{cmd}");
        assert_eq!(read_pcap(&out).len(), frames.len(), "{cmd}");
        // Whatever came out is still well-formed UDP.
        for f in read_pcap(&out) {
            udp_payload(&f).unwrap();
        }
    }

    // A frame cut by the snap length and a capture cut inside its last record: read up to
    // there, copied, no error.
    let frame = udp4(A_SRC, A_DST, &rtp(5, 5, 0, 100));
    write_pcap(&dir.join("three.pcap"), &vec![frame.clone(); 3]);
    let mut bytes = std::fs::read(dir.join("three.pcap")).unwrap();
    // Record 2 (after the 24-byte file header and the first record) keeps 40 bytes of its
    // frame: incl_len 40, orig_len unchanged. Record 3 loses its last 30 bytes.
    let rec = 16 + frame.len();
    let second = 24 + rec;
    bytes[second + 8..second + 12].copy_from_slice(&40u32.to_le_bytes());
    bytes.drain(second + 16 + 40..second + rec);
    bytes.truncate(bytes.len() - 30);
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &bytes).unwrap();
    let report = srtp_json(
        &[
            "decrypt",
            p(&cut),
            p(&dir.join("cut-out.pcap")),
            "--crypto",
            &key,
        ],
        0,
    );
    assert_eq!(report["frames"]["read"], 2);
    assert_eq!(report["frames"]["truncated_capture"], true);
    assert_eq!(
        report["frames"]["unsupported_link"], 1,
        "the snapped frame is passed through"
    );
}

#[test]
fn usage_and_io_errors_have_their_exit_status() {
    let dir = scratch("usage");
    let (key_a, key_b) = keys();
    let plain = dir.join("plain.pcap");
    write_pcap(&plain, &[udp4(A_SRC, A_DST, &rtp(1, 1, 0, 10))]);
    let out = dir.join("out.pcap");
    let run = |args: &[&str]| {
        let mut all = vec!["srtp"];
        all.extend_from_slice(args);
        let o = edgewayctl(&all);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };

    let (code, err) = run(&[
        "decrypt",
        p(&plain),
        p(&out),
        "--crypto",
        "a=crypto:1 NOPE inline:AAAA",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unsupported crypto-suite"), "{err}");
    let (code, err) = run(&[
        "decrypt",
        p(&plain),
        p(&out),
        "--stream",
        "10.0.0.1:4000",
        "--crypto",
        &key_a,
    ]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&[
        "decrypt",
        p(&plain),
        p(&out),
        "--crypto",
        &key_a,
        "--ssrc",
        "0xZZ",
    ]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&[
        "encrypt",
        p(&plain),
        p(&out),
        "--crypto",
        &key_a,
        "--crypto",
        &key_b,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at most one --crypto without"), "{err}");
    let (code, err) = run(&[
        "decrypt",
        p(&dir.join("missing.pcap")),
        p(&out),
        "--crypto",
        &key_a,
    ]);
    assert_eq!(code, Some(1), "{err}");
    std::fs::write(dir.join("text.pcap"), "not a capture at all").unwrap();
    let (code, err) = run(&[
        "decrypt",
        p(&dir.join("text.pcap")),
        p(&out),
        "--crypto",
        &key_a,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("neither pcap nor pcapng"), "{err}");
    let (code, err) = run(&["decrypt", p(&plain), p(&plain), "--crypto", &key_a]);
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn every_supported_link_type_round_trips() {
    let dir = scratch("links");
    let (key, _) = keys();
    let eth: Vec<Vec<u8>> = (0..5u16)
        .map(|i| udp4(A_SRC, A_DST, &rtp(SSRC_A1, 65533u16.wrapping_add(i), 0, 40)))
        .collect();
    let ip = |f: &Vec<u8>| f[14..].to_vec();
    type Wrap = Box<dyn Fn(&Vec<u8>) -> Vec<u8>>;
    let cases: Vec<(&str, DataLink, Wrap)> = vec![
        ("raw", DataLink::RAW, Box::new(ip)),
        ("ipv4", DataLink::IPV4, Box::new(ip)),
        (
            "vlan",
            DataLink::ETHERNET,
            Box::new(|f: &Vec<u8>| [&f[..12], &[0x81, 0, 0, 42], &f[12..]].concat()),
        ),
        (
            "sll",
            DataLink::LINUX_SLL,
            Box::new(|f: &Vec<u8>| {
                let head = [0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 8, 0];
                [&head[..], &f[14..]].concat()
            }),
        ),
        (
            "sll2",
            DataLink::LINUX_SLL2,
            Box::new(|f: &Vec<u8>| {
                let head = [8, 0, 0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0];
                [&head[..], &f[14..]].concat()
            }),
        ),
        (
            "null",
            DataLink::NULL,
            Box::new(|f: &Vec<u8>| [&2u32.to_le_bytes()[..], &f[14..]].concat()),
        ),
    ];
    for (name, link, wrap) in cases {
        let frames: Vec<Vec<u8>> = eth.iter().map(&wrap).collect();
        let plain = dir.join(format!("{name}.pcap"));
        let srtp = dir.join(format!("{name}-srtp.pcap"));
        let back = dir.join(format!("{name}-back.pcap"));
        write_pcap_link(&plain, link, &frames);
        let report = srtp_json(&["encrypt", p(&plain), p(&srtp), "--crypto", &key], 0);
        assert_eq!(report["frames"]["rewritten"], 5, "{name}: {report:#}");
        let grown: Vec<usize> = read_pcap(&srtp).iter().map(Vec::len).collect();
        assert_eq!(grown, vec![frames[0].len() + 10; 5], "{name}");
        let report = srtp_json(&["decrypt", p(&srtp), p(&back), "--crypto", &key], 0);
        assert_eq!(report["frames"]["rewritten"], 5, "{name}: {report:#}");
        same_file(&back, &plain);
    }
}

#[test]
fn a_stream_re_keyed_mid_capture_follows_the_new_key() {
    let dir = scratch("rekey");
    let (old_key, _) = keys();
    let new_key = crypto_line(2, PROFILE_A, &master_key(PROFILE_A, 5));
    let plain: Vec<Vec<u8>> = (0..20u16)
        .map(|i| udp4(A_SRC, A_DST, &rtp(SSRC_A1, 500 + i, 0, 80)))
        .collect();
    let mut protected = Vec::new();
    for (half, key) in [(&plain[..10], &old_key), (&plain[10..], &new_key)] {
        let (clear, srtp) = (dir.join("half.pcap"), dir.join("half-srtp.pcap"));
        write_pcap(&clear, half);
        srtp_json(&["encrypt", p(&clear), p(&srtp), "--crypto", key], 0);
        protected.extend(read_pcap(&srtp));
    }
    let input = dir.join("rekeyed.pcap");
    let out = dir.join("out.pcap");
    write_pcap(&input, &protected);
    let report = srtp_json(
        &[
            "decrypt",
            p(&input),
            p(&out),
            "--crypto",
            &old_key,
            "--crypto",
            &new_key,
        ],
        0,
    );
    let s = stream(&report, "rtp", SSRC_A1);
    assert_eq!(
        (
            s["ok"].as_u64(),
            s["key_changes"].as_u64(),
            s["key"]["key"].as_u64()
        ),
        (Some(20), Some(1), Some(2)),
        "{s}"
    );
    same_frames(&read_pcap(&out), &plain);
}
