//! `edgewayctl srtp decrypt|encrypt`: turn an SRTP capture into plain RTP with the keys of
//! the `a=crypto` lines from a SIP trace, or plain RTP into SRTP, and say per stream what
//! happened to every packet.
//!
//! Every UDP datagram whose payload looks like RTP or RTCP (version 2) belongs to a stream:
//! UDP source, UDP destination, RTP or RTCP, SSRC. Each stream gets its own
//! [`SrtpContext`], so rollover counters and replay windows are those of that stream alone.
//! A stream takes the `--crypto` key bound to it with `--stream`/`--ssrc`; without a binding,
//! decrypt tries every unbound key (and a few rollover counters, for captures that start
//! mid-call) until one authenticates, and that key sticks. A stream whose key stops
//! authenticating tries the other keys again, which follows an SDES re-key.
//!
//! Only the UDP payload and the length and checksum fields above it change (UDP length and
//! checksum, IPv4 total length and header checksum, IPv6 payload length); every other byte
//! of the frame and of the capture file is copied, so decrypting an encrypted capture gives
//! back the original file byte for byte. Classic pcap is written as pcap, pcapng as pcapng
//! (failed packets kept in a pcapng output carry a packet comment that says why).
//!
//! A capture full of forged or replayed packets is a result, not an error: it is reported,
//! and the exit status stays 0 unless `--strict`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Arg, ArgAction, ArgMatches, Subcommand, ValueEnum};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::{
    rtp, Error, SrtpContext, SrtpProfile, StreamCheckpoint, StreamKind, MAX_REPLAY_WINDOW,
    MAX_TRAILER_LEN,
};
use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::{PcapReader, PcapWriter, RawPcapPacket};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
use pcap_file::pcapng::{Block, PcapNgBlock, PcapNgReader, PcapNgWriter};
use pcap_file::{DataLink, PcapError};
use serde_json::json;

const EXIT_STATUS: &str = "\
Exit status: 0 when the capture was read and written, whatever became of its packets; \
1 on an I/O error or an unreadable capture; 2 on a usage error (including a bad a=crypto \
line); 3 with --strict when any packet of a keyed stream failed.";

/// Exit status of `--strict` when packets failed.
const EXIT_STRICT: i32 = 3;

/// Decrypt an SRTP capture to RTP, or encrypt RTP to SRTP, with keys from `a=crypto` lines.
#[derive(Debug, Subcommand)]
pub(crate) enum SrtpCommand {
    /// Decrypt SRTP/SRTCP in a capture to plain RTP/RTCP.
    ///
    /// Each stream (UDP source, UDP destination, RTP or RTCP, SSRC) is decrypted with the
    /// --crypto key bound to it by --stream/--ssrc, or else with the first unbound key under
    /// which its packets authenticate; that key sticks, and the report names it. Forged,
    /// replayed, too old and malformed packets, and packets under a wrong key, are counted
    /// per stream and kept unchanged or left out (--on-error).
    #[command(after_help = EXIT_STATUS)]
    Decrypt(CaptureArgs),
    /// Encrypt plain RTP/RTCP in a capture to SRTP/SRTCP.
    ///
    /// Each stream is protected with the --crypto key bound to it by --stream/--ssrc, or else
    /// with the one key given without a binding (at most one may be unbound). SRTCP indices
    /// count from 1 per SSRC; the rollover counter starts at 0.
    #[command(after_help = EXIT_STATUS)]
    Encrypt(CaptureArgs),
}

/// What both directions take.
#[derive(Debug, clap::Args)]
pub(crate) struct CaptureArgs {
    /// Capture to read: classic pcap or pcapng ("-" reads standard input). Link types:
    /// Ethernet (VLAN tags allowed), Linux cooked (SLL, SLL2), raw IP, BSD loopback.
    #[arg(value_name = "IN")]
    input: PathBuf,
    /// Capture to write, in the input's format ("-" writes standard output).
    #[arg(value_name = "OUT")]
    output: PathBuf,
    #[command(flatten)]
    keys: KeyArgs,
    /// How RTCP is told from RTP: by the second byte (RFC 5761: 192-223 is RTCP, right for
    /// muxed and unmuxed ports alike), or by an odd UDP destination port (for ports without
    /// rtcp-mux whose RTP uses payload types 64-95, which that byte cannot tell from RTCP).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = RtcpDemux::PayloadType)]
    rtcp_demux: RtcpDemux,
    /// What becomes of a packet of a keyed stream that fails (forged, wrong key, replayed,
    /// too old, malformed): kept unchanged (with a comment saying why in pcapng output), or
    /// left out.
    #[arg(long, value_enum, value_name = "WHAT", default_value_t = OnError::Keep)]
    on_error: OnError,
    /// Leave out the packets outside keyed streams (non-UDP, not RTP/RTCP, no key for their
    /// stream) instead of copying them unchanged.
    #[arg(long)]
    drop_other: bool,
    /// Decrypt: decrypt replayed and too-old packets too (still counted as such), for
    /// captures that see each packet twice (e.g. on "any"). Encrypt: protect a repeated
    /// sequence number again instead of refusing it.
    #[arg(long)]
    allow_replays: bool,
    /// Replay window in packets, 64 to 4096 [default: the a=crypto line's WSH=, else 1024].
    #[arg(long, value_name = "PACKETS", value_parser = clap::value_parser!(u32).range(64..=4096))]
    replay_window: Option<u32>,
    /// Decrypt: the highest rollover counter tried on the first packet of an SRTP stream, so
    /// that a capture that starts after the sequence number wrapped (every 65536 packets)
    /// still decrypts. 0 trusts that every stream starts in the capture.
    #[arg(long, value_name = "ROC", default_value_t = 16)]
    max_roc: u32,
    /// Write the report as JSON on standard output (standard error when OUT is "-") instead
    /// of a table on standard error.
    #[arg(long)]
    json: bool,
    /// Exit with status 3 when any packet of a keyed stream failed.
    #[arg(long)]
    strict: bool,
}

/// How RTCP is told from RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RtcpDemux {
    /// Second byte 192-223 is RTCP (RFC 5761 section 4).
    PayloadType,
    /// Odd UDP destination port is RTCP.
    Port,
}

/// What becomes of a packet that fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnError {
    /// Copy it unchanged (commented in pcapng output).
    Keep,
    /// Leave it out of the output.
    Drop,
}

pub(crate) fn run(cmd: SrtpCommand) -> anyhow::Result<()> {
    let (direction, args) = match cmd {
        SrtpCommand::Decrypt(args) => (Direction::Decrypt, args),
        SrtpCommand::Encrypt(args) => (Direction::Encrypt, args),
    };
    let mut engine = Engine::new(direction, &args)?;
    process_capture(&args.input, &args.output, &mut engine)?;
    let report_to_stdout = args.output != Path::new("-");
    if args.json {
        let text = serde_json::to_string_pretty(&engine.report_json())?;
        if report_to_stdout {
            writeln!(io::stdout().lock(), "{text}")?;
        } else {
            writeln!(io::stderr().lock(), "{text}")?;
        }
    } else {
        engine.write_report(&mut io::stderr().lock())?;
    }
    if args.strict && engine.failed_packets() > 0 {
        std::process::exit(EXIT_STRICT);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Keys and their bindings

/// The `--crypto` keys, each with the `--stream`/`--ssrc` bindings that follow it.
#[derive(Debug, Clone)]
pub(crate) struct KeyArgs {
    keys: Vec<KeySpec>,
}

#[derive(Debug, Clone)]
struct KeySpec {
    attr: CryptoAttribute,
    bindings: Vec<Binding>,
}

/// Which packets a key is meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// Packets from this UDP source (RTCP also from the next port up).
    Source(SocketAddr),
    /// Packets of this SSRC.
    Ssrc(u32),
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Binding::Source(a) => write!(f, "from {a}"),
            Binding::Ssrc(s) => write!(f, "ssrc {s:#010x}"),
        }
    }
}

fn parse_crypto(s: &str) -> Result<CryptoAttribute, String> {
    let attr: CryptoAttribute = s.parse().map_err(|e| format!("{e}"))?;
    SrtpContext::new(&attr.to_config()).map_err(|e| format!("{e}"))?;
    Ok(attr)
}

fn parse_ssrc(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a 32-bit SSRC (decimal or 0x hex)"))
}

impl clap::FromArgMatches for KeyArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut keys: Vec<(usize, KeySpec)> = match (
            m.get_many::<CryptoAttribute>("crypto"),
            m.indices_of("crypto"),
        ) {
            (Some(attrs), Some(at)) => at
                .zip(attrs)
                .map(|(i, attr)| {
                    let spec = KeySpec {
                        attr: attr.clone(),
                        bindings: Vec::new(),
                    };
                    (i, spec)
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut bindings: Vec<(usize, Binding)> = Vec::new();
        if let (Some(v), Some(at)) = (m.get_many::<SocketAddr>("stream"), m.indices_of("stream")) {
            bindings.extend(at.zip(v.map(|a| Binding::Source(*a))));
        }
        if let (Some(v), Some(at)) = (m.get_many::<u32>("ssrc"), m.indices_of("ssrc")) {
            bindings.extend(at.zip(v.map(|s| Binding::Ssrc(*s))));
        }
        for (at, binding) in bindings {
            // The binding belongs to the nearest --crypto before it on the command line.
            match keys.iter_mut().rev().find(|(i, _)| *i < at) {
                Some((_, spec)) => spec.bindings.push(binding),
                None => {
                    return Err(clap::Error::raw(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "--stream/--ssrc ({binding}) binds the --crypto before it, and \
                             none comes before it\n"
                        ),
                    ))
                }
            }
        }
        Ok(KeyArgs {
            keys: keys.into_iter().map(|(_, k)| k).collect(),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for KeyArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.arg(
            Arg::new("crypto")
                .long("crypto")
                .value_name("A=CRYPTO")
                .action(ArgAction::Append)
                .required(true)
                .value_parser(parse_crypto)
                .help("An a=crypto line from the SDP (repeatable)")
                .long_help(
                    "An a=crypto line from the SDP, quoted, e.g. \"a=crypto:1 \
                     AES_CM_128_HMAC_SHA1_80 inline:<base64 key||salt>[|2^31][|1:4]\". \
                     Repeat for each line: the key in an offer protects what the offerer \
                     sends, the key in the answer what the answerer sends. Keys are named \
                     #1, #2... in the order given.",
                ),
        )
        .arg(
            Arg::new("stream")
                .long("stream")
                .value_name("IP:PORT")
                .action(ArgAction::Append)
                .value_parser(clap::value_parser!(SocketAddr))
                .help("Bind the preceding --crypto to packets from this UDP source (repeatable)")
                .long_help(
                    "Bind the preceding --crypto to the packets sent from this UDP source \
                     (\"192.0.2.1:4000\", \"[2001:db8::1]:4000\"), and to RTCP from the next \
                     port up. With symmetric RTP that is the c= address and m= port of the SDP \
                     that carries the a=crypto line. A bound stream uses only its bound keys; \
                     other streams use only unbound keys. Repeatable.",
                ),
        )
        .arg(
            Arg::new("ssrc")
                .long("ssrc")
                .value_name("SSRC")
                .action(ArgAction::Append)
                .value_parser(parse_ssrc)
                .help("Bind the preceding --crypto to packets of this SSRC (decimal or 0x hex)")
                .long_help(
                    "Bind the preceding --crypto to the RTP and RTCP packets of this SSRC \
                     (decimal or 0x hex; for RTCP the sender SSRC of the first report). \
                     Repeatable.",
                ),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// A key ready to use: a context template that each of its streams clones.
struct Key {
    /// 1-based position among the `--crypto` options.
    number: usize,
    tag: u32,
    profile: SrtpProfile,
    bindings: Vec<Binding>,
    template: SrtpContext,
    streams: u64,
}

impl Key {
    fn label(&self) -> String {
        format!("#{} (tag {} {})", self.number, self.tag, self.profile)
    }

    fn binds(&self, id: &StreamId) -> bool {
        self.bindings.iter().any(|b| match *b {
            Binding::Source(a) => {
                id.src == a
                    || (id.kind == Kind::Rtcp
                        && id.src.ip() == a.ip()
                        && a.port().checked_add(1) == Some(id.src.port()))
            }
            Binding::Ssrc(s) => id.ssrc == Some(s),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Streams and the per-packet work

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Decrypt,
    Encrypt,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Decrypt => "decrypt",
            Direction::Encrypt => "encrypt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Rtp,
    Rtcp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rtp => "RTP",
            Kind::Rtcp => "RTCP",
        }
    }

    fn checkpoint_kind(self) -> StreamKind {
        match self {
            Kind::Rtp => StreamKind::Rtp,
            Kind::Rtcp => StreamKind::Rtcp,
        }
    }
}

/// One direction of one RTP or RTCP stream. `ssrc` is `None` for payloads too short to
/// carry one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StreamId {
    src: SocketAddr,
    dst: SocketAddr,
    kind: Kind,
    ssrc: Option<u32>,
}

/// What happened to a stream's packets.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    ok: u64,
    auth_failed: u64,
    replayed: u64,
    too_old: u64,
    malformed: u64,
    unknown_mki: u64,
    other_errors: u64,
    /// Packets of a stream that no key applies to (copied as other traffic).
    no_key: u64,
    /// Times the stream's key changed to another that authenticates.
    key_changes: u64,
}

impl Counts {
    fn failed(&self) -> u64 {
        self.auth_failed
            + self.replayed
            + self.too_old
            + self.malformed
            + self.unknown_mki
            + self.other_errors
    }
}

struct Stream {
    id: StreamId,
    /// Keys this stream may use (indices into `Engine::keys`).
    candidates: Vec<usize>,
    /// The key in use and the stream's context under it.
    active: Option<(usize, SrtpContext)>,
    /// Rollover counter the stream started at (decrypt; non-zero when the capture starts
    /// after a wrap).
    first_roc: u32,
    counts: Counts,
}

/// Why a packet failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    AuthFailed,
    Replayed(u64),
    TooOld(u64),
    Malformed(String),
    UnknownMki,
    Other(String),
}

impl Failure {
    fn of(e: Error) -> Self {
        match e {
            Error::AuthFailed => Failure::AuthFailed,
            Error::Replayed { index } => Failure::Replayed(index),
            Error::TooOld { index } => Failure::TooOld(index),
            Error::UnknownMki => Failure::UnknownMki,
            Error::Rtp(_) | Error::Rtcp(_) | Error::TooShort { .. } => {
                Failure::Malformed(e.to_string())
            }
            other => Failure::Other(other.to_string()),
        }
    }

    fn count(&self, c: &mut Counts) {
        match self {
            Failure::AuthFailed => c.auth_failed += 1,
            Failure::Replayed(_) => c.replayed += 1,
            Failure::TooOld(_) => c.too_old += 1,
            Failure::Malformed(_) => c.malformed += 1,
            Failure::UnknownMki => c.unknown_mki += 1,
            Failure::Other(_) => c.other_errors += 1,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::AuthFailed => {
                f.write_str("authentication failed (forged, corrupted or wrong key)")
            }
            Failure::Replayed(i) => write!(f, "replayed (index {i})"),
            Failure::TooOld(i) => write!(f, "older than the replay window (index {i})"),
            Failure::Malformed(why) => write!(f, "malformed: {why}"),
            Failure::UnknownMki => f.write_str("MKI names no key"),
            Failure::Other(why) => f.write_str(why),
        }
    }
}

/// The result of one packet's SRTP work.
enum Step {
    Done(usize),
    /// Decrypted although it failed the replay check (`--allow-replays`).
    Recovered(usize, Failure),
    Failed(Failure),
}

/// What to write for one frame.
#[derive(Debug)]
enum Verdict {
    /// The frame as it was, with a comment for pcapng output when it failed.
    Unchanged(Option<String>),
    /// The rewritten frame, with a comment for pcapng output.
    Rewritten(Vec<u8>, Option<String>),
    /// Nothing.
    Drop,
}

/// Frame-level totals.
#[derive(Debug, Default)]
struct Totals {
    read: u64,
    written: u64,
    rewritten: u64,
    dropped: u64,
    /// Not IP/UDP, or not decodable (truncated by the snap length, bad headers).
    not_udp: u64,
    /// UDP whose payload is not RTP/RTCP version 2.
    not_rtp: u64,
    ip_fragments: u64,
    unsupported_link: u64,
    /// Rewritten payload would not fit the UDP/IP length fields.
    too_big: u64,
    /// The capture ended inside a record.
    truncated_capture: bool,
}

struct Engine {
    direction: Direction,
    keys: Vec<Key>,
    streams: Vec<Stream>,
    index: HashMap<StreamId, usize>,
    totals: Totals,
    rtcp_demux: RtcpDemux,
    on_error: OnError,
    drop_other: bool,
    allow_replays: bool,
    max_roc: u32,
}

/// The length of a replay bitmap in a [`StreamCheckpoint`].
const REPLAY_WORDS: usize = MAX_REPLAY_WINDOW as usize / 64;

/// Puts `ctx`'s state for `ssrc` at `index` with an empty replay window: the next packet at
/// exactly that index is accepted, with the rollover counter it implies.
fn resume_at(ctx: &mut SrtpContext, kind: Kind, ssrc: u32, index: u64) {
    ctx.restore(&StreamCheckpoint {
        kind: kind.checkpoint_kind(),
        ssrc,
        highest_index: index,
        window: [0; REPLAY_WORDS],
    });
}

fn unprotect(
    ctx: &mut SrtpContext,
    kind: Kind,
    buf: &mut [u8],
    len: usize,
) -> Result<usize, Error> {
    match kind {
        Kind::Rtp => ctx.unprotect_rtp(buf, len),
        Kind::Rtcp => ctx.unprotect_rtcp(buf, len),
    }
}

fn protect(ctx: &mut SrtpContext, kind: Kind, buf: &mut [u8], len: usize) -> Result<usize, Error> {
    match kind {
        Kind::Rtp => ctx.protect_rtp(buf, len),
        Kind::Rtcp => ctx.protect_rtcp(buf, len),
    }
}

/// Runs `op` on a copy of `buf` and keeps the result only on success, so that a failed
/// attempt (which may leave the bytes unspecified) never spoils the next one.
fn attempt(
    buf: &mut [u8],
    op: impl FnOnce(&mut [u8]) -> Result<usize, Error>,
) -> Result<usize, Error> {
    let mut scratch = buf.to_vec();
    let n = op(&mut scratch)?;
    buf.copy_from_slice(&scratch);
    Ok(n)
}

impl Engine {
    fn new(direction: Direction, args: &CaptureArgs) -> anyhow::Result<Self> {
        let mut keys = Vec::with_capacity(args.keys.keys.len());
        for (i, spec) in args.keys.keys.iter().enumerate() {
            let mut cfg = spec.attr.to_config();
            cfg.max_streams = 1;
            if let Some(w) = args.replay_window {
                cfg.replay_window = w;
            }
            cfg.allow_repeat_tx = direction == Direction::Encrypt && args.allow_replays;
            let template = SrtpContext::new(&cfg)
                .with_context(|| format!("--crypto #{}: unusable key", i + 1))?;
            keys.push(Key {
                number: i + 1,
                tag: spec.attr.tag,
                profile: spec.attr.profile,
                bindings: spec.bindings.clone(),
                template,
                streams: 0,
            });
        }
        if direction == Direction::Encrypt {
            let unbound: Vec<String> = keys
                .iter()
                .filter(|k| k.bindings.is_empty())
                .map(Key::label)
                .collect();
            if unbound.len() > 1 {
                // A usage error like clap's own: exit status 2.
                clap::Error::raw(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "encrypt takes at most one --crypto without --stream/--ssrc, got {}: \
                         bind each key to the stream it protects\n",
                        unbound.join(", ")
                    ),
                )
                .exit();
            }
        }
        Ok(Engine {
            direction,
            keys,
            streams: Vec::new(),
            index: HashMap::new(),
            totals: Totals::default(),
            rtcp_demux: args.rtcp_demux,
            on_error: args.on_error,
            drop_other: args.drop_other,
            allow_replays: args.allow_replays,
            max_roc: args.max_roc,
        })
    }

    /// The verdict on one captured frame. `link` is `None` for frames that cannot be
    /// decoded (unsupported link type, or cut short by the snap length).
    fn frame(&mut self, link: Option<Link>, data: &[u8]) -> Verdict {
        self.totals.read += 1;
        let other = if self.drop_other {
            Verdict::Drop
        } else {
            Verdict::Unchanged(None)
        };
        let Some(link) = link else {
            self.totals.unsupported_link += 1;
            return self.tally(other);
        };
        let udp = match UdpFrame::locate(link, data) {
            Ok(udp) => udp,
            Err(Skip::NotUdp) => {
                self.totals.not_udp += 1;
                return self.tally(other);
            }
            Err(Skip::Fragment) => {
                self.totals.ip_fragments += 1;
                return self.tally(other);
            }
        };
        let payload = &data[udp.payload_range()];
        let verdict = match self.datagram(udp.src, udp.dst, payload) {
            None => other,
            Some(Ok((new_payload, note))) => match udp.rewrite(data, &new_payload) {
                Some(frame) => Verdict::Rewritten(frame, note),
                None => {
                    self.totals.too_big += 1;
                    self.failed_verdict("protected packet too big for UDP".to_owned())
                }
            },
            Some(Err(failure)) => self.failed_verdict(failure.to_string()),
        };
        self.tally(verdict)
    }

    fn failed_verdict(&self, why: String) -> Verdict {
        match self.on_error {
            OnError::Keep => Verdict::Unchanged(Some(format!(
                "edgewayctl srtp {}: {why}",
                self.direction.name()
            ))),
            OnError::Drop => Verdict::Drop,
        }
    }

    fn tally(&mut self, v: Verdict) -> Verdict {
        match &v {
            Verdict::Drop => self.totals.dropped += 1,
            Verdict::Rewritten(..) => {
                self.totals.written += 1;
                self.totals.rewritten += 1;
            }
            Verdict::Unchanged(_) => self.totals.written += 1,
        }
        v
    }

    /// The SRTP work on one UDP payload: `None` when it belongs to no keyed stream, else the
    /// new payload (with a note for the capture) or why it failed.
    #[allow(clippy::type_complexity)]
    fn datagram(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> Option<Result<(Vec<u8>, Option<String>), Failure>> {
        if !matches!(payload.first(), Some(b) if b >> 6 == 2) {
            self.totals.not_rtp += 1;
            return None;
        }
        let kind = match self.rtcp_demux {
            RtcpDemux::PayloadType if rtp::is_rtcp(payload) => Kind::Rtcp,
            RtcpDemux::Port if dst.port() % 2 == 1 => Kind::Rtcp,
            _ => Kind::Rtp,
        };
        let ssrc_at = match kind {
            Kind::Rtp => 8,
            Kind::Rtcp => 4,
        };
        let ssrc = payload
            .get(ssrc_at..ssrc_at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes);
        let id = StreamId {
            src,
            dst,
            kind,
            ssrc,
        };
        let si = self.stream(id);
        let stream = &mut self.streams[si];
        if stream.candidates.is_empty() {
            stream.counts.no_key += 1;
            return None;
        }
        let Some(ssrc) = ssrc else {
            let f = Failure::Malformed(format!("{}-byte payload has no SSRC", payload.len()));
            f.count(&mut stream.counts);
            return Some(Err(f));
        };
        let mut buf = vec![0u8; payload.len() + MAX_TRAILER_LEN];
        buf[..payload.len()].copy_from_slice(payload);
        let step = match self.direction {
            Direction::Decrypt => decrypt_step(
                stream,
                &mut self.keys,
                ssrc,
                &mut buf,
                payload.len(),
                self.allow_replays,
                self.max_roc,
            ),
            Direction::Encrypt => encrypt_step(stream, &mut buf, payload.len()),
        };
        Some(match step {
            Step::Done(n) => {
                stream.counts.ok += 1;
                buf.truncate(n);
                Ok((buf, None))
            }
            Step::Recovered(n, f) => {
                f.count(&mut stream.counts);
                buf.truncate(n);
                Ok((buf, Some(format!("edgewayctl: {f}; decrypted anyway"))))
            }
            Step::Failed(f) => {
                f.count(&mut stream.counts);
                Err(f)
            }
        })
    }

    /// The stream of `id`, created on its first packet.
    fn stream(&mut self, id: StreamId) -> usize {
        if let Some(&i) = self.index.get(&id) {
            return i;
        }
        let bound: Vec<usize> = (0..self.keys.len())
            .filter(|&k| self.keys[k].binds(&id))
            .collect();
        let candidates = if bound.is_empty() {
            (0..self.keys.len())
                .filter(|&k| self.keys[k].bindings.is_empty())
                .collect()
        } else {
            bound
        };
        // Encrypt has no trial: the stream's key is its (first) candidate from the start.
        let active = match (self.direction, candidates.first()) {
            (Direction::Encrypt, Some(&k)) => {
                self.keys[k].streams += 1;
                Some((k, self.keys[k].template.clone()))
            }
            _ => None,
        };
        self.streams.push(Stream {
            id,
            candidates,
            active,
            first_roc: 0,
            counts: Counts::default(),
        });
        let i = self.streams.len() - 1;
        self.index.insert(id, i);
        i
    }

    fn failed_packets(&self) -> u64 {
        self.streams.iter().map(|s| s.counts.failed()).sum()
    }
}

fn encrypt_step(stream: &mut Stream, buf: &mut [u8], len: usize) -> Step {
    let kind = stream.id.kind;
    let Some((_, ctx)) = &mut stream.active else {
        return Step::Failed(Failure::Other("no key".to_owned()));
    };
    match attempt(buf, |b| protect(ctx, kind, b, len)) {
        Ok(n) => Step::Done(n),
        Err(e) => Step::Failed(Failure::of(e)),
    }
}

fn decrypt_step(
    stream: &mut Stream,
    keys: &mut [Key],
    ssrc: u32,
    buf: &mut [u8],
    len: usize,
    allow_replays: bool,
    max_roc: u32,
) -> Step {
    let kind = stream.id.kind;
    let Some((key, ctx)) = &mut stream.active else {
        return match probe(stream, keys, None, ssrc, buf, len, max_roc) {
            Ok(n) => Step::Done(n),
            Err(f) => Step::Failed(f),
        };
    };
    let key = *key;
    match attempt(buf, |b| unprotect(ctx, kind, b, len)) {
        Ok(n) => Step::Done(n),
        Err(e @ (Error::Replayed { index } | Error::TooOld { index })) => {
            if allow_replays {
                // A scratch context positioned at the refused index decrypts the packet
                // without touching the stream's own replay state.
                let mut scratch = keys[key].template.clone();
                resume_at(&mut scratch, kind, ssrc, index);
                if let Ok(n) = attempt(buf, |b| unprotect(&mut scratch, kind, b, len)) {
                    return Step::Recovered(n, Failure::of(e));
                }
            }
            Step::Failed(Failure::of(e))
        }
        Err(Error::AuthFailed) if stream.candidates.len() > 1 => {
            // Perhaps the stream was re-keyed (a re-INVITE with new a=crypto lines).
            match probe(stream, keys, Some(key), ssrc, buf, len, max_roc) {
                Ok(n) => {
                    stream.counts.key_changes += 1;
                    Step::Done(n)
                }
                Err(_) => Step::Failed(Failure::AuthFailed),
            }
        }
        Err(e) => Step::Failed(Failure::of(e)),
    }
}

/// Tries the stream's candidate keys (but `except`) on a packet, each from a fresh context
/// and, for RTP, at rollover counters 0 to `max_roc`. The first that authenticates becomes
/// the stream's key. On failure, authentication failure wins over other reasons: with more
/// than one key, "wrong key" is the likeliest story.
fn probe(
    stream: &mut Stream,
    keys: &mut [Key],
    except: Option<usize>,
    ssrc: u32,
    buf: &mut [u8],
    len: usize,
    max_roc: u32,
) -> Result<usize, Failure> {
    let kind = stream.id.kind;
    let seq = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
    let max_roc = if kind == Kind::Rtp { max_roc } else { 0 };
    let mut auth_failed = false;
    let mut first_error = None;
    for &k in stream.candidates.iter().filter(|&&k| Some(k) != except) {
        let mut ctx = keys[k].template.clone();
        for roc in 0..=max_roc {
            if roc > 0 {
                resume_at(&mut ctx, kind, ssrc, (u64::from(roc) << 16) | seq);
            }
            match attempt(buf, |b| unprotect(&mut ctx, kind, b, len)) {
                Ok(n) => {
                    keys[k].streams += 1;
                    stream.active = Some((k, ctx));
                    stream.first_roc = roc;
                    return Ok(n);
                }
                Err(Error::AuthFailed) => auth_failed = true,
                Err(e) => {
                    // Not a matter of the rollover counter: the next key, then.
                    first_error.get_or_insert(e);
                    break;
                }
            }
        }
    }
    Err(match (auth_failed, first_error) {
        (false, Some(e)) => Failure::of(e),
        _ => Failure::AuthFailed,
    })
}

// ---------------------------------------------------------------------------------------
// Frames: finding the UDP payload and rewriting it

/// The link types this tool decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Ethernet,
    LinuxSll,
    LinuxSll2,
    RawIp,
    /// BSD loopback: a 4-byte address family, then IP.
    Loopback,
}

impl Link {
    fn of(dl: DataLink) -> Option<Link> {
        Some(match dl {
            DataLink::ETHERNET => Link::Ethernet,
            DataLink::LINUX_SLL => Link::LinuxSll,
            DataLink::LINUX_SLL2 => Link::LinuxSll2,
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Link::RawIp,
            DataLink::NULL | DataLink::LOOP => Link::Loopback,
            _ => return None,
        })
    }
}

enum Skip {
    NotUdp,
    Fragment,
}

/// Where a UDP datagram sits in a frame.
#[derive(Debug, Clone, Copy)]
struct UdpFrame {
    ipv6: bool,
    ip_at: usize,
    udp_at: usize,
    /// End of the UDP datagram (per its length field); bytes after it are link padding.
    udp_end: usize,
    src: SocketAddr,
    dst: SocketAddr,
}

/// Where `inner`, a sub-slice of `outer`, starts in it.
fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let at = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (at.checked_add(inner.len())? <= outer.len()).then_some(at)
}

/// The Internet checksum (RFC 1071) of `parts` laid end to end, each of even length but
/// the last.
fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        let mut words = part.chunks_exact(2);
        for w in &mut words {
            sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u64::from(u16::from_be_bytes([*last, 0]));
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl UdpFrame {
    fn locate(link: Link, data: &[u8]) -> Result<UdpFrame, Skip> {
        let sliced = match link {
            Link::Ethernet => SlicedPacket::from_ethernet(data),
            Link::LinuxSll => SlicedPacket::from_linux_sll(data),
            Link::LinuxSll2 => {
                // SLL2: protocol (2), reserved (2), ifindex (4), hatype (2), pkttype (1),
                // address length (1), address (8).
                let (Some(proto), Some(rest)) = (data.get(0..2), data.get(20..)) else {
                    return Err(Skip::NotUdp);
                };
                let proto = EtherType(u16::from_be_bytes([proto[0], proto[1]]));
                SlicedPacket::from_ether_type(proto, rest)
            }
            Link::RawIp => SlicedPacket::from_ip(data),
            Link::Loopback => SlicedPacket::from_ip(data.get(4..).ok_or(Skip::NotUdp)?),
        }
        .map_err(|_| Skip::NotUdp)?;
        if sliced.is_ip_payload_fragmented() {
            return Err(Skip::Fragment);
        }
        let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
            return Err(Skip::NotUdp);
        };
        let (ipv6, ip_header, src_ip, dst_ip) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                (
                    false,
                    h.slice(),
                    IpAddr::V4(h.source_addr()),
                    IpAddr::V4(h.destination_addr()),
                )
            }
            Some(NetSlice::Ipv6(ip)) => {
                let h = ip.header();
                (
                    true,
                    h.slice(),
                    IpAddr::V6(h.source_addr()),
                    IpAddr::V6(h.destination_addr()),
                )
            }
            _ => return Err(Skip::NotUdp),
        };
        let ip_at = offset_in(data, ip_header).ok_or(Skip::NotUdp)?;
        let udp_at = offset_in(data, udp.slice()).ok_or(Skip::NotUdp)?;
        let udp_end = udp_at + udp.slice().len();
        if udp.slice().len() < 8 {
            return Err(Skip::NotUdp);
        }
        Ok(UdpFrame {
            ipv6,
            ip_at,
            udp_at,
            udp_end,
            src: SocketAddr::new(src_ip, udp.source_port()),
            dst: SocketAddr::new(dst_ip, udp.destination_port()),
        })
    }

    fn payload_range(&self) -> std::ops::Range<usize> {
        self.udp_at + 8..self.udp_end
    }

    /// `frame` with the UDP payload replaced by `payload` and the length and checksum fields
    /// fixed; `None` when the new lengths do not fit their fields.
    fn rewrite(&self, frame: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
        let old_len = self.udp_end - (self.udp_at + 8);
        let grow = i64::try_from(payload.len()).ok()? - i64::try_from(old_len).ok()?;
        let mut out = Vec::with_capacity(frame.len() + MAX_TRAILER_LEN);
        out.extend_from_slice(frame.get(..self.udp_at + 8)?);
        out.extend_from_slice(payload);
        out.extend_from_slice(frame.get(self.udp_end..)?);

        let adjust = |out: &mut [u8], at: usize| -> Option<()> {
            let field = out.get_mut(at..at + 2)?;
            let v = i64::from(u16::from_be_bytes([field[0], field[1]])) + grow;
            field.copy_from_slice(&u16::try_from(v).ok()?.to_be_bytes());
            Some(())
        };
        let ip = self.ip_at;
        let (src, dst) = if self.ipv6 {
            adjust(&mut out, ip + 4)?;
            (ip + 8..ip + 24, ip + 24..ip + 40)
        } else {
            adjust(&mut out, ip + 2)?;
            let ihl = usize::from(out.get(ip)? & 0x0f) * 4;
            out.get_mut(ip + 10..ip + 12)?.fill(0);
            let sum = internet_checksum(&[out.get(ip..ip + ihl)?]);
            out[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
            (ip + 12..ip + 16, ip + 16..ip + 20)
        };
        let udp = self.udp_at;
        let udp_len = u16::try_from(8 + payload.len()).ok()?;
        out[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());
        // IPv4 allows "no checksum" (0); keep it so. Otherwise (and always for IPv6) compute.
        if self.ipv6 || out[udp + 6..udp + 8] != [0, 0] {
            out[udp + 6..udp + 8].fill(0);
            let mut sum = internet_checksum(&[
                out.get(src)?,
                out.get(dst)?,
                &[0, 17],
                &udp_len.to_be_bytes(),
                &out[udp..udp + usize::from(udp_len)],
            ]);
            if sum == 0 {
                sum = 0xffff;
            }
            out[udp + 6..udp + 8].copy_from_slice(&sum.to_be_bytes());
        }
        Some(out)
    }
}

// ---------------------------------------------------------------------------------------
// Capture files

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
    [0x4d, 0x3c, 0xb2, 0xa1],
];

/// Opens OUT only once IN has proved to be a capture, so that a bad input leaves no file.
struct Output<'a> {
    path: &'a Path,
}

impl Output<'_> {
    fn open(&self) -> anyhow::Result<Box<dyn Write>> {
        if self.path == Path::new("-") {
            return Ok(Box::new(BufWriter::new(io::stdout().lock())));
        }
        let file = File::create(self.path)
            .with_context(|| format!("cannot create {}", self.path.display()))?;
        Ok(Box::new(BufWriter::new(file)))
    }
}

fn process_capture(input: &Path, output: &Path, engine: &mut Engine) -> anyhow::Result<()> {
    if input != Path::new("-") && output != Path::new("-") {
        if let (Ok(a), Ok(b)) = (input.canonicalize(), output.canonicalize()) {
            if a == b {
                bail!("IN and OUT are the same file: {}", a.display());
            }
        }
    }
    let mut reader: Box<dyn Read> = if input == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        Box::new(BufReader::new(
            File::open(input).with_context(|| format!("cannot open {}", input.display()))?,
        ))
    };
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .with_context(|| format!("{} is not a capture: too short", input.display()))?;
    let reader = io::Cursor::new(magic).chain(reader);
    let out = Output { path: output };
    let result = if magic == PCAPNG_MAGIC {
        pcapng_capture(reader, &out, engine)
    } else if PCAP_MAGICS.contains(&magic) {
        pcap_capture(reader, &out, engine)
    } else {
        bail!(
            "{} is neither pcap nor pcapng (starts with {:02x?})",
            input.display(),
            magic
        );
    };
    result.with_context(|| format!("processing {}", input.display()))
}

/// Whether a read error is the capture ending inside a record (a capture cut short while
/// being written): reported, not fatal.
fn cut_short(e: &PcapError) -> bool {
    matches!(e, PcapError::IncompleteBuffer)
        || matches!(e, PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof)
}

fn pcap_capture(reader: impl Read, out: &Output<'_>, engine: &mut Engine) -> anyhow::Result<()> {
    let mut rd = PcapReader::new(reader).context("bad pcap header")?;
    let mut header = rd.header();
    let link = Link::of(header.datalink);
    // Complete packets may grow by an SRTP trailer; a snap length below the largest UDP
    // datagram gets room for it.
    if header.snaplen < 65535 {
        header.snaplen = header.snaplen.saturating_add(MAX_TRAILER_LEN as u32 + 8);
    }
    let mut wr = PcapWriter::with_header(out.open()?, header)?;
    while let Some(pkt) = rd.next_raw_packet() {
        let pkt = match pkt {
            Ok(p) => p,
            Err(e) if cut_short(&e) => {
                engine.totals.truncated_capture = true;
                break;
            }
            Err(e) => return Err(e).context("bad pcap record"),
        };
        let complete = pkt.incl_len == pkt.orig_len && pkt.data.len() == pkt.incl_len as usize;
        match engine.frame(link.filter(|_| complete), &pkt.data) {
            Verdict::Drop => {}
            Verdict::Unchanged(_) => {
                wr.write_raw_packet(&pkt)?;
            }
            Verdict::Rewritten(data, _) => {
                let len = u32::try_from(data.len()).context("packet too large")?;
                wr.write_raw_packet(&RawPcapPacket {
                    ts_sec: pkt.ts_sec,
                    ts_frac: pkt.ts_frac,
                    incl_len: len,
                    orig_len: len,
                    data: Cow::Owned(data),
                })?;
            }
        }
    }
    wr.into_writer().flush().context("writing the output")?;
    Ok(())
}

fn with_comment<'a>(
    mut options: Vec<EnhancedPacketOption<'a>>,
    comment: Option<String>,
) -> Vec<EnhancedPacketOption<'a>> {
    if let Some(c) = comment {
        options.push(EnhancedPacketOption::Comment(Cow::Owned(c)));
    }
    options
}

fn pcapng_capture(reader: impl Read, out: &Output<'_>, engine: &mut Engine) -> anyhow::Result<()> {
    let mut rd = PcapNgReader::new(reader).context("bad pcapng section header")?;
    let mut wr = PcapNgWriter::with_section_header(out.open()?, rd.section().clone())?;
    // Link type of each interface of the current section.
    let mut links: Vec<Option<Link>> = Vec::new();
    while let Some(block) = rd.next_block() {
        let block = match block {
            Ok(b) => b,
            Err(e) if cut_short(&e) => {
                engine.totals.truncated_capture = true;
                break;
            }
            Err(e) => return Err(e).context("bad pcapng block"),
        };
        match block {
            Block::SectionHeader(_) => {
                links.clear();
                wr.write_block(&block)?;
            }
            Block::InterfaceDescription(ref idb) => {
                links.push(Link::of(idb.linktype));
                wr.write_block(&block)?;
            }
            Block::EnhancedPacket(epb) => {
                let link = links.get(epb.interface_id as usize).copied().flatten();
                let complete = epb.original_len as usize == epb.data.len();
                match engine.frame(link.filter(|_| complete), &epb.data) {
                    Verdict::Drop => {}
                    Verdict::Unchanged(comment) => {
                        let options = with_comment(epb.options, comment);
                        let epb = EnhancedPacketBlock { options, ..epb };
                        wr.write_block(&epb.into_block())?;
                    }
                    Verdict::Rewritten(data, comment) => {
                        let epb = EnhancedPacketBlock {
                            interface_id: epb.interface_id,
                            timestamp: epb.timestamp,
                            original_len: u32::try_from(data.len()).context("packet too large")?,
                            data: Cow::Owned(data),
                            options: with_comment(epb.options, comment),
                        };
                        wr.write_block(&epb.into_block())?;
                    }
                }
            }
            Block::SimplePacket(spb) => {
                let link = links.first().copied().flatten();
                let complete = spb.original_len as usize == spb.data.len();
                match engine.frame(link.filter(|_| complete), &spb.data) {
                    Verdict::Drop => {}
                    Verdict::Unchanged(_) => wr.write_block(&spb.into_block()).map(drop)?,
                    Verdict::Rewritten(data, _) => {
                        let spb = SimplePacketBlock {
                            original_len: u32::try_from(data.len()).context("packet too large")?,
                            data: Cow::Owned(data),
                        };
                        wr.write_block(&spb.into_block())?;
                    }
                }
            }
            other => {
                wr.write_block(&other)?;
            }
        }
    }
    wr.into_inner().flush().context("writing the output")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The report

impl Engine {
    fn key_json(&self, k: usize) -> serde_json::Value {
        let key = &self.keys[k];
        json!({"key": key.number, "tag": key.tag, "suite": key.profile.sdes_name()})
    }

    fn report_json(&self) -> serde_json::Value {
        let t = &self.totals;
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|k| {
                json!({
                    "key": k.number,
                    "tag": k.tag,
                    "suite": k.profile.sdes_name(),
                    "bindings": k.bindings.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
                    "streams": k.streams,
                })
            })
            .collect();
        let streams: Vec<_> = self
            .streams
            .iter()
            .map(|s| {
                let c = &s.counts;
                json!({
                    "src": s.id.src.to_string(),
                    "dst": s.id.dst.to_string(),
                    "kind": s.id.kind.name().to_ascii_lowercase(),
                    "ssrc": s.id.ssrc,
                    "ssrc_hex": s.id.ssrc.map(|v| format!("{v:#010x}")),
                    "key": s.active.as_ref().map(|(k, _)| self.key_json(*k)),
                    "first_roc": s.first_roc,
                    "ok": c.ok,
                    "auth_failed": c.auth_failed,
                    "replayed": c.replayed,
                    "too_old": c.too_old,
                    "malformed": c.malformed,
                    "unknown_mki": c.unknown_mki,
                    "other_errors": c.other_errors,
                    "no_key": c.no_key,
                    "key_changes": c.key_changes,
                })
            })
            .collect();
        json!({
            "command": self.direction.name(),
            "frames": {
                "read": t.read,
                "written": t.written,
                "rewritten": t.rewritten,
                "dropped": t.dropped,
                "not_udp": t.not_udp,
                "not_rtp": t.not_rtp,
                "ip_fragments": t.ip_fragments,
                "unsupported_link": t.unsupported_link,
                "too_big": t.too_big,
                "truncated_capture": t.truncated_capture,
            },
            "keys": keys,
            "streams": streams,
            "failed": self.failed_packets(),
        })
    }

    fn write_report(&self, w: &mut dyn Write) -> io::Result<()> {
        let t = &self.totals;
        let mut sum = Counts::default();
        for s in &self.streams {
            let c = &s.counts;
            sum.ok += c.ok;
            sum.auth_failed += c.auth_failed;
            sum.replayed += c.replayed;
            sum.too_old += c.too_old;
            sum.malformed += c.malformed;
            sum.unknown_mki += c.unknown_mki + c.other_errors;
        }
        writeln!(
            w,
            "edgewayctl srtp {}: {} frames read, {} written ({} rewritten), {} dropped; \
             {} ok, {} auth failed, {} replayed, {} too old, {} malformed, {} other errors",
            self.direction.name(),
            t.read,
            t.written,
            t.rewritten,
            t.dropped,
            sum.ok,
            sum.auth_failed,
            sum.replayed,
            sum.too_old,
            sum.malformed,
            sum.unknown_mki,
        )?;
        let passed = [
            (t.not_udp, "not UDP or undecodable"),
            (t.not_rtp, "UDP but not RTP/RTCP"),
            (t.ip_fragments, "IP fragments"),
            (
                t.unsupported_link,
                "unsupported link type or cut by the snap length",
            ),
            (t.too_big, "too big once protected"),
        ];
        let passed: Vec<String> = passed
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        if !passed.is_empty() {
            writeln!(w, "other frames: {}", passed.join(", "))?;
        }
        if t.truncated_capture {
            writeln!(
                w,
                "warning: the capture ends inside a record; read up to there"
            )?;
        }
        if !self.streams.is_empty() {
            let header = [
                "STREAM",
                "KIND",
                "SSRC",
                "KEY",
                "OK",
                "AUTH",
                "REPLAY",
                "OLD",
                "MALFORMED",
                "OTHER",
                "NO-KEY",
            ];
            let mut rows: Vec<[String; 11]> = vec![header.map(str::to_owned)];
            for s in &self.streams {
                let c = &s.counts;
                let key = match &s.active {
                    Some((k, _)) => self.keys[*k].label(),
                    None if s.candidates.is_empty() => "none applies".to_owned(),
                    None => "none matched".to_owned(),
                };
                rows.push([
                    format!("{} > {}", s.id.src, s.id.dst),
                    s.id.kind.name().to_owned(),
                    s.id.ssrc.map_or("-".to_owned(), |v| format!("{v:#010x}")),
                    key,
                    c.ok.to_string(),
                    c.auth_failed.to_string(),
                    c.replayed.to_string(),
                    c.too_old.to_string(),
                    c.malformed.to_string(),
                    (c.unknown_mki + c.other_errors).to_string(),
                    c.no_key.to_string(),
                ]);
            }
            let mut width = [0usize; 11];
            for row in &rows {
                for (w, cell) in width.iter_mut().zip(row) {
                    *w = (*w).max(cell.len());
                }
            }
            for row in &rows {
                let mut line = String::new();
                for (i, (cell, w)) in row.iter().zip(width).enumerate() {
                    if i < 4 {
                        line.push_str(&format!("{cell:<w$}  "));
                    } else {
                        line.push_str(&format!("{cell:>w$}  "));
                    }
                }
                writeln!(w, "{}", line.trim_end())?;
            }
            for s in &self.streams {
                if s.first_roc > 0 {
                    writeln!(
                        w,
                        "note: {} > {} {:#010x} started at rollover counter {}",
                        s.id.src,
                        s.id.dst,
                        s.id.ssrc.unwrap_or(0),
                        s.first_roc
                    )?;
                }
                if s.counts.key_changes > 0 {
                    writeln!(
                        w,
                        "note: {} > {} changed key {} time(s) (re-key)",
                        s.id.src, s.id.dst, s.counts.key_changes
                    )?;
                }
            }
        }
        for k in &self.keys {
            if k.streams == 0 {
                writeln!(w, "note: key {} matched no stream", k.label())?;
            }
        }
        Ok(())
    }
}
