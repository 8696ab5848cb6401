//! perf-lab/xdp's socket generator for the paths that start in the stack (the io_uring
//! workers, rtpengine): one UDP socket in `--netns` sending an RTP packet to each of the
//! destinations in turn (`--dst IP:PORT`, or one per line in `--dst-file`) at `--rate`
//! packets/s in all for `--seconds`, paced by the clock (bursts of at most 1 ms' worth).
//! A socket generator tops out near a few hundred thousand packets/s on one core, above what
//! those paths take per core; the in-kernel relay needs `xdp_inject` instead.
//!
//! `udp_pace --netns /run/netns/ew-client --src IP:PORT (--dst IP:PORT | --dst-file F)
//!   --rate PPS --seconds S`
//! prints one JSON line: packets sent, seconds, achieved rate.

use std::net::{SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let mut it = std::env::args().skip(1);
    let (mut netns, mut src, mut rate, mut seconds) = (None, None, 100_000u64, 3.0);
    let mut dsts: Vec<SocketAddrV4> = Vec::new();
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--netns" => netns = Some(PathBuf::from(v)),
            "--src" => src = Some(v.parse::<SocketAddrV4>()?),
            "--dst" => dsts.push(v.parse()?),
            "--dst-file" => {
                for line in std::fs::read_to_string(&v)?.lines() {
                    dsts.push(line.trim().parse()?);
                }
            }
            "--rate" => rate = v.parse()?,
            "--seconds" => seconds = v.parse()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let netns = netns.ok_or("--netns is required")?;
    let src = src.ok_or("--src is required")?;
    if dsts.is_empty() {
        return Err("--dst or --dst-file is required".into());
    }
    edgeway_xdp::enter_network_namespace(&netns)?;
    let socket = UdpSocket::bind(src)?;
    let mut packet = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0x5e, 0xed];
    packet.resize(172, 0xd5);
    let total = (rate as f64 * seconds) as u64;
    let per_tick = (rate / 1000).max(1);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = 0u64;
    while sent < total {
        for _ in 0..per_tick.min(total - sent) {
            // A full socket buffer is the generator's limit, not an error of the path.
            let dst = dsts[(sent as usize) % dsts.len()];
            if socket.send_to(&packet, dst).is_ok() {
                sent += 1;
            }
        }
        tick += 1;
        let due = started + Duration::from_millis(tick);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"sent\":{sent},\"seconds\":{secs:.6},\"rate\":{:.0}}}",
        sent as f64 / secs
    );
    Ok(())
}
