//! `edgewayctl srtp decrypt|encrypt`: SRTP captures to plain RTP and back, with the keys an
//! operator copies from the `a=crypto` lines of a SIP trace.
//!
//! Every UDP packet whose payload looks like RTP or RTCP (version 2) is tried. A flow (source
//! and destination address and port) is bound to the first key that authenticates on it, or
//! to the key named with `--stream`; everything else is copied through unchanged unless
//! `--drop-unmatched`. Results are counted per flow and SSRC: decrypted, authentication
//! failures, replays, too old, malformed. A capture full of failures is a result, not an error:
//! the exit status is non-zero only for usage and I/O problems, or with `--strict`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::{rtp, Error, SrtpContext, MAX_TRAILER_LEN};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use pcap_file::DataLink;

/// SRTP capture tools.
#[derive(Debug, Subcommand)]
pub(crate) enum SrtpCommand {
    /// Turn an SRTP capture into plain RTP, reporting authentication failures and replays.
    Decrypt(Options),
    /// Turn a plain RTP capture into SRTP with the given keys.
    Encrypt(Options),
}

/// Options shared by decrypt and encrypt.
#[derive(Debug, Args)]
pub(crate) struct Options {
    /// Input capture (classic pcap: Ethernet, Linux SLL, or raw IP link types).
    #[arg(long = "in", short = 'i')]
    input: PathBuf,
    /// Output capture (classic pcap, same link type and timestamps as the input).
    #[arg(long = "out", short = 'o')]
    output: PathBuf,
    /// An SDES attribute, e.g. "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<key>". Repeat
    /// for each direction or call in the capture.
    #[arg(long = "crypto", short = 'c', required = true)]
    crypto: Vec<String>,
    /// Bind the packets sent FROM an address to the key with a crypto tag: `IP:PORT=TAG`.
    /// Without a binding, each new flow is tried against every key (encrypt: the first key).
    #[arg(long = "stream", value_name = "IP:PORT=TAG")]
    streams: Vec<String>,
    /// Leave packets that are not (or cannot be) transformed out of the output.
    #[arg(long)]
    drop_unmatched: bool,
    /// Print the report as JSON on stdout instead of text on stderr.
    #[arg(long)]
    json: bool,
    /// Exit with status 3 when any RTP/RTCP packet failed to authenticate or was replayed.
    #[arg(long)]
    strict: bool,
}

/// Counters for one flow and SSRC.
#[derive(Debug, Default, Clone)]
struct Counts {
    key_tag: Option<u32>,
    ok: u64,
    auth_failed: u64,
    replayed: u64,
    too_old: u64,
    malformed: u64,
}

type FlowId = (SocketAddr, SocketAddr);

struct Keys {
    attrs: Vec<CryptoAttribute>,
    bindings: BTreeMap<SocketAddr, usize>,
}

impl Keys {
    fn parse(opts: &Options) -> Result<Self> {
        let attrs = opts
            .crypto
            .iter()
            .map(|c| {
                c.parse::<CryptoAttribute>()
                    .with_context(|| format!("--crypto {c:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut bindings = BTreeMap::new();
        for s in &opts.streams {
            let (addr, tag) = s
                .rsplit_once('=')
                .with_context(|| format!("--stream {s:?}: expected IP:PORT=TAG"))?;
            let addr: SocketAddr = addr
                .parse()
                .with_context(|| format!("--stream {s:?}: bad address"))?;
            let tag: u32 = tag
                .parse()
                .with_context(|| format!("--stream {s:?}: bad tag"))?;
            let Some(i) = attrs.iter().position(|a| a.tag == tag) else {
                bail!("--stream {s:?}: no --crypto line has tag {tag}");
            };
            bindings.insert(addr, i);
        }
        Ok(Keys { attrs, bindings })
    }
}

/// Per-flow state: the contexts tried so far (one per key), and the key that stuck.
struct Flow {
    contexts: Vec<Option<SrtpContext>>,
    bound: Option<usize>,
}

/// Where the UDP datagram sits inside a captured frame.
struct Located {
    ip_off: usize,
    ipv4: bool,
    udp_off: usize,
    payload_len: usize,
    src: SocketAddr,
    dst: SocketAddr,
}

fn offset_of(outer: &[u8], inner: &[u8]) -> usize {
    inner.as_ptr() as usize - outer.as_ptr() as usize
}

fn locate(link: DataLink, frame: &[u8]) -> Option<Located> {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(frame),
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(frame),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(frame),
        _ => return None,
    }
    .ok()?;
    let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
        return None;
    };
    let (ip_off, ipv4, src_ip, dst_ip, fragmented) = match sliced.net.as_ref()? {
        NetSlice::Ipv4(v4) => (
            offset_of(frame, v4.header().slice()),
            true,
            IpAddr::V4(v4.header().source_addr()),
            IpAddr::V4(v4.header().destination_addr()),
            v4.payload().fragmented,
        ),
        NetSlice::Ipv6(v6) => (
            offset_of(frame, v6.header().slice()),
            false,
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
            v6.payload().fragmented,
        ),
    };
    if fragmented {
        return None;
    }
    Some(Located {
        ip_off,
        ipv4,
        udp_off: offset_of(frame, udp.slice()),
        payload_len: udp.payload().len(),
        src: SocketAddr::new(src_ip, udp.source_port()),
        dst: SocketAddr::new(dst_ip, udp.destination_port()),
    })
}

/// The frame with its UDP payload replaced and the IP and UDP lengths and checksums fixed.
fn rebuild(frame: &[u8], at: &Located, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(at.udp_off + 8 + payload.len());
    out.extend_from_slice(&frame[..at.udp_off + 8]);
    out.extend_from_slice(payload);
    let udp_len = u16::try_from(8 + payload.len()).ok()?;
    out[at.udp_off + 4..at.udp_off + 6].copy_from_slice(&udp_len.to_be_bytes());
    out[at.udp_off + 6..at.udp_off + 8].copy_from_slice(&[0, 0]);
    let mut sum: u32 = 0;
    if at.ipv4 {
        let ihl = usize::from(out[at.ip_off] & 0x0f) * 4;
        let total = u16::try_from(at.udp_off - at.ip_off + usize::from(udp_len)).ok()?;
        out[at.ip_off + 2..at.ip_off + 4].copy_from_slice(&total.to_be_bytes());
        out[at.ip_off + 10..at.ip_off + 12].copy_from_slice(&[0, 0]);
        let hsum = checksum(0, &out[at.ip_off..at.ip_off + ihl]);
        out[at.ip_off + 10..at.ip_off + 12].copy_from_slice(&hsum.to_be_bytes());
        sum = checksum_add(sum, &out[at.ip_off + 12..at.ip_off + 20]);
    } else {
        let plen = u16::try_from(at.udp_off - at.ip_off - 40 + usize::from(udp_len)).ok()?;
        out[at.ip_off + 4..at.ip_off + 6].copy_from_slice(&plen.to_be_bytes());
        sum = checksum_add(sum, &out[at.ip_off + 8..at.ip_off + 40]);
    }
    sum += 17 + u32::from(udp_len);
    sum = checksum_add(sum, &out[at.udp_off..]);
    let mut c = fold(sum);
    if c == 0 {
        c = 0xffff;
    }
    out[at.udp_off + 6..at.udp_off + 8].copy_from_slice(&c.to_be_bytes());
    Some(out)
}

fn checksum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in chunks.by_ref() {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn checksum(sum: u32, data: &[u8]) -> u16 {
    fold(checksum_add(sum, data))
}

fn ssrc_of(payload: &[u8], rtcp: bool) -> Option<u32> {
    let at = if rtcp { 4 } else { 8 };
    payload
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn run(cmd: SrtpCommand) -> Result<()> {
    let (decrypt, opts) = match cmd {
        SrtpCommand::Decrypt(o) => (true, o),
        SrtpCommand::Encrypt(o) => (false, o),
    };
    let keys = Keys::parse(&opts)?;
    let mut magic = [0u8; 4];
    File::open(&opts.input)
        .and_then(|mut f| f.read_exact(&mut magic))
        .with_context(|| format!("reading {}", opts.input.display()))?;
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        bail!(
            "{} is pcapng; convert it first: editcap -F pcap in.pcapng out.pcap",
            opts.input.display()
        );
    }
    let input =
        File::open(&opts.input).with_context(|| format!("opening {}", opts.input.display()))?;
    let mut reader = PcapReader::new(BufReader::new(input))
        .with_context(|| format!("{} is not a pcap capture", opts.input.display()))?;
    let header = reader.header();
    let link = header.datalink;
    let output = File::create(&opts.output)
        .with_context(|| format!("creating {}", opts.output.display()))?;
    let mut writer = PcapWriter::with_header(BufWriter::new(output), header)?;

    let mut flows: BTreeMap<FlowId, Flow> = BTreeMap::new();
    let mut report: BTreeMap<(FlowId, u32), Counts> = BTreeMap::new();
    let (mut frames, mut transformed, mut passed) = (0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 65_536 + MAX_TRAILER_LEN];
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.with_context(|| format!("reading {}", opts.input.display()))?;
        frames += 1;
        let frame: &[u8] = &pkt.data;
        let located = locate(link, frame).filter(|l| l.payload_len >= 8);
        let Some(at) = located else {
            if !opts.drop_unmatched {
                writer.write_packet(&pkt)?;
                passed += 1;
            }
            continue;
        };
        let payload = &frame[at.udp_off + 8..at.udp_off + 8 + at.payload_len];
        if payload[0] >> 6 != 2 {
            if !opts.drop_unmatched {
                writer.write_packet(&pkt)?;
                passed += 1;
            }
            continue;
        }
        let rtcp = rtp::is_rtcp(payload);
        let flow_id = (at.src, at.dst);
        let flow = flows.entry(flow_id).or_insert_with(|| Flow {
            contexts: (0..keys.attrs.len()).map(|_| None).collect(),
            bound: keys
                .bindings
                .get(&at.src)
                .copied()
                .or((!decrypt).then_some(0)),
        });
        let counts = report
            .entry((flow_id, ssrc_of(payload, rtcp).unwrap_or(0)))
            .or_default();
        let candidates: Vec<usize> = match flow.bound {
            Some(i) => vec![i],
            None => (0..keys.attrs.len()).collect(),
        };
        let mut result: Option<std::result::Result<usize, Error>> = None;
        for i in candidates {
            let ctx = match &mut flow.contexts[i] {
                Some(c) => c,
                slot => slot.insert(SrtpContext::new(&keys.attrs[i].to_config())?),
            };
            buf[..payload.len()].copy_from_slice(payload);
            let r = match (decrypt, rtcp) {
                (true, false) => ctx.unprotect_rtp(&mut buf, payload.len()),
                (true, true) => ctx.unprotect_rtcp(&mut buf, payload.len()),
                (false, false) => ctx.protect_rtp(&mut buf, payload.len()),
                (false, true) => ctx.protect_rtcp(&mut buf, payload.len()),
            };
            if r.is_ok() {
                flow.bound = Some(i);
                counts.key_tag = Some(keys.attrs[i].tag);
                result = Some(r);
                break;
            }
            // Keep the most telling failure: anything beats an authentication failure from
            // a key that simply is not this flow's.
            if !matches!(result, Some(Err(e)) if e != Error::AuthFailed) {
                result = Some(r);
            }
        }
        match result {
            Some(Ok(n)) => {
                counts.ok += 1;
                match rebuild(frame, &at, &buf[..n]) {
                    Some(data) => {
                        let out = PcapPacket::new_owned(pkt.timestamp, data.len() as u32, data);
                        writer.write_packet(&out)?;
                        transformed += 1;
                    }
                    None => counts.malformed += 1,
                }
                continue;
            }
            Some(Err(Error::AuthFailed | Error::UnknownMki)) => counts.auth_failed += 1,
            Some(Err(Error::Replayed { .. })) => counts.replayed += 1,
            Some(Err(Error::TooOld { .. })) => counts.too_old += 1,
            Some(Err(_)) | None => counts.malformed += 1,
        }
        if !opts.drop_unmatched {
            writer.write_packet(&pkt)?;
            passed += 1;
        }
    }
    drop(writer);

    let failures: u64 = report
        .values()
        .map(|c| c.auth_failed + c.replayed + c.too_old)
        .sum();
    if opts.json {
        let rows: Vec<_> = report
            .iter()
            .map(|((flow, ssrc), c)| {
                serde_json::json!({
                    "src": flow.0.to_string(), "dst": flow.1.to_string(),
                    "ssrc": format!("{ssrc:#010x}"), "key_tag": c.key_tag, "ok": c.ok,
                    "auth_failed": c.auth_failed, "replayed": c.replayed,
                    "too_old": c.too_old, "malformed": c.malformed,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "frames": frames, "transformed": transformed, "passed_through": passed, "streams": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        eprintln!(
            "{frames} frames: {transformed} {}, {passed} copied unchanged",
            if decrypt { "decrypted" } else { "encrypted" }
        );
        eprintln!(
            "{:<44} {:>10} {:>4} {:>8} {:>8} {:>8} {:>8} {:>9}",
            "flow", "ssrc", "key", "ok", "auth", "replay", "old", "malformed"
        );
        for ((flow, ssrc), c) in &report {
            let key = c.key_tag.map_or("-".to_owned(), |t| t.to_string());
            eprintln!(
                "{:<44} {:>#10x} {:>4} {:>8} {:>8} {:>8} {:>8} {:>9}",
                format!("{} -> {}", flow.0, flow.1),
                ssrc,
                key,
                c.ok,
                c.auth_failed,
                c.replayed,
                c.too_old,
                c.malformed
            );
        }
    }
    if opts.strict && failures > 0 {
        std::process::exit(3);
    }
    Ok(())
}
