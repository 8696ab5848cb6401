//! The perf-lab/xdp packet generator: injects one UDP frame `--frames` times as live frames
//! arriving on an interface (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`), so the
//! offered load is not limited by a socket generator. The frames run through edgeway's media
//! program, and what it returns really happens:
//!
//! - `--pin-dir DIR`: the program with the maps a data plane pinned in DIR (its flows,
//!   latches, config and egress ports): relay legs leave in the kernel (XDP_TX/redirect);
//! - `--pass`: the program with empty maps (no media range), which passes every frame up the
//!   stack, as if the NIC had received it: the io_uring workers or rtpengine take it there.
//!
//! Runs on the calling thread's CPU (pin it with taskset) inside `--netns`. Prints one JSON
//! line: frames injected, seconds, this thread's CPU time (`cpu_ns`, schedstat: the program,
//! the rewrite and the transmit all run in it) and the kernel-reported time. Root only.
//!
//! `xdp_inject --netns /run/netns/ew-edge --ifname e0 (--pin-dir DIR | --pass)
//!   --src-mac MAC --dst-mac MAC --src IP:PORT --dst IP:PORT [--frames N] [--batch B]
//!   [--payload BYTES]`

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Instant;

use edgeway_xdp::MediaProgram;

type Error = Box<dyn std::error::Error>;

#[derive(Debug)]
struct Args {
    netns: PathBuf,
    ifname: String,
    pin_dir: Option<PathBuf>,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    frames: u64,
    batch: u32,
    payload: usize,
}

fn mac(s: &str) -> Result<[u8; 6], Error> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    bytes
        .try_into()
        .map_err(|_| format!("{s:?}: not a MAC address").into())
}

fn args() -> Result<Args, Error> {
    let mut it = std::env::args().skip(1);
    let (mut netns, mut ifname, mut pin_dir, mut pass) = (None, None, None, false);
    let (mut src_mac, mut dst_mac, mut src, mut dst) = (None, None, None, None);
    let (mut frames, mut batch, mut payload) = (10_000_000u64, 64u32, 172usize);
    while let Some(flag) = it.next() {
        if flag == "--pass" {
            pass = true;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--netns" => netns = Some(PathBuf::from(v)),
            "--ifname" => ifname = Some(v),
            "--pin-dir" => pin_dir = Some(PathBuf::from(v)),
            "--src-mac" => src_mac = Some(mac(&v)?),
            "--dst-mac" => dst_mac = Some(mac(&v)?),
            "--src" => src = Some(v.parse()?),
            "--dst" => dst = Some(v.parse()?),
            "--frames" => frames = v.parse()?,
            "--batch" => batch = v.parse()?,
            "--payload" => payload = v.parse()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if pass == pin_dir.is_some() {
        return Err("give exactly one of --pin-dir DIR and --pass".into());
    }
    let need = |name: &str| format!("{name} is required");
    Ok(Args {
        netns: netns.ok_or_else(|| need("--netns"))?,
        ifname: ifname.ok_or_else(|| need("--ifname"))?,
        pin_dir,
        src_mac: src_mac.ok_or_else(|| need("--src-mac"))?,
        dst_mac: dst_mac.ok_or_else(|| need("--dst-mac"))?,
        src: src.ok_or_else(|| need("--src"))?,
        dst: dst.ok_or_else(|| need("--dst"))?,
        frames,
        batch,
        payload,
    })
}

/// An RTP packet of `len` bytes (12-byte header, SSRC 0x5eed).
fn rtp(len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0x5e, 0xed];
    p.resize(len.max(12), 0xd5);
    p
}

/// This thread's time on a CPU so far (ns, `/proc/thread-self/schedstat`): what injecting
/// cost, program and transmit included.
fn thread_cpu_ns() -> Result<u64, Error> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let first = s.split_whitespace().next().ok_or("empty schedstat")?;
    Ok(first.parse()?)
}

fn main() -> Result<(), Error> {
    let a = args()?;
    edgeway_xdp::enter_network_namespace(&a.netns)?;
    let ifindex = edgeway_xdp::interface_index(&a.ifname)?;
    let program = MediaProgram::load(a.pin_dir.as_deref())?;
    let builder = etherparse::PacketBuilder::ethernet2(a.src_mac, a.dst_mac)
        .ipv4(a.src.ip().octets(), a.dst.ip().octets(), 64)
        .udp(a.src.port(), a.dst.port());
    let mut frame = Vec::new();
    builder.write(&mut frame, &rtp(a.payload))?;
    let cpu_before = thread_cpu_ns()?;
    let started = Instant::now();
    // The kernel reports the mean time per frame of each call.
    let mut kernel_ns = 0f64;
    let mut left = a.frames;
    // Calls of 8M frames (one call injects at most u32::MAX) keep each syscall short. No
    // pacing: every call sets up a page pool of its own (tens of ms), so this generator
    // offers all it can; udp_pace offers a set rate.
    while left > 0 {
        let n = left.min(1 << 23) as u32;
        kernel_ns +=
            program.inject_live(&frame, ifindex, n, a.batch)?.as_nanos() as f64 * f64::from(n);
        left -= u64::from(n);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_ns = thread_cpu_ns()? - cpu_before;
    println!(
        "{{\"frames\":{},\"seconds\":{secs:.6},\"cpu_ns\":{cpu_ns},\"kernel_ns_per_frame\":{:.1},\"frame_bytes\":{}}}",
        a.frames,
        kernel_ns / a.frames.max(1) as f64,
        frame.len()
    );
    Ok(())
}
