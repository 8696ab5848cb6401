//! A UDP echo server on one pinned `Uring` worker, and a simple std-socket client to load it:
//! shows throughput and that `io_uring_enter` is the only per-packet syscall.
//!
//! ```text
//! cargo build --release -p edgeway-uring --example echo
//! # server: pinned to core 0, echoes on 127.0.0.1:40000 for 10 s, then prints pps and
//! # enters/packet; run it under strace to count its syscalls:
//! strace -c -f target/release/examples/echo serve 40000 10 0
//! # client (another shell): pinned to core 1, 172-byte datagrams, 64 in flight, 8 s:
//! target/release/examples/echo blast 127.0.0.1:40000 8 1 64 172
//! # the peer to compare with in the same run: a blocking recv_from/send_to loop
//! target/release/examples/echo serve-std 40001 10 0
//! ```
//!
//! The client is deliberately plain (one `send_to`/`recv_from` syscall per datagram), so on
//! a small machine it, not the server, is usually the bottleneck: compare enters per packet,
//! not absolute pps, across machines.

use std::net::{SocketAddrV4, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use edgeway_uring::{pin_current_thread, Disposition, Uring, UringConfig};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("serve-std") => serve_std(&args[1..]),
        Some("blast") => blast(&args[1..]),
        _ => Err("usage: echo serve|serve-std PORT SECONDS [CORE] | echo blast ADDR SECONDS [CORE] [WINDOW] [SIZE]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: all-zero is a valid rusage, and getrusage only writes into the one we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: Option<T>) -> Result<T, String> {
    match args.get(i) {
        Some(s) => s.parse().map_err(|_| format!("bad argument {s:?}")),
        None => default.ok_or_else(|| format!("missing argument {}", i + 1)),
    }
}

fn serve(args: &[String]) -> Res {
    let port: u16 = arg(args, 0, None)?;
    let seconds: u64 = arg(args, 1, None)?;
    let core: usize = arg(args, 2, Some(0))?;
    pin_current_thread(core)?;
    let mut uring = Uring::new(&UringConfig::default())?;
    let id = uring.bind_udp(SocketAddrV4::new([127, 0, 0, 1].into(), port))?;
    println!(
        "echo: serving on {} (core {core}) for {seconds} s; features {:?}",
        uring.local_addr(id).ok_or("socket closed")?,
        uring.features()
    );
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut echo = |d: edgeway_uring::Datagram<'_>| Disposition::Send {
        from: d.socket,
        to: d.src,
        len: d.len,
    };
    // Measure from the first datagram to the last, with the counters at those points.
    let mut first: Option<(Instant, edgeway_uring::UringStats)> = None;
    let mut last = None;
    while Instant::now() < end {
        if uring.run_once(Some(Duration::from_millis(100)), &mut echo)? > 0 {
            let now = (Instant::now(), uring.stats());
            first.get_or_insert(now);
            last = Some(now);
        }
    }
    uring.flush()?;
    let cpu = cpu_time();
    let (Some((t0, s0)), Some((t1, s1))) = (first, last) else {
        println!("echo: no traffic");
        return Ok(());
    };
    let secs = (t1 - t0).as_secs_f64().max(1e-9);
    let packets = s1.received - s0.received;
    println!(
        "echo: {packets} datagrams in {secs:.2} s = {:.0} pps, {:.2} us CPU/packet; {} io_uring_enter = \
         {:.3} enters/packet; send errors {}, enobufs {}, totals {:?}",
        packets as f64 / secs,
        cpu.as_secs_f64() * 1e6 / s1.received.max(1) as f64,
        s1.enters - s0.enters,
        (s1.enters - s0.enters) as f64 / packets.max(1) as f64,
        s1.send_errors.total(),
        s1.enobufs,
        uring.stats()
    );
    Ok(())
}

/// The baseline: one `recvfrom` and one `sendto` per datagram on a blocking std socket.
fn serve_std(args: &[String]) -> Res {
    let port: u16 = arg(args, 0, None)?;
    let seconds: u64 = arg(args, 1, None)?;
    let core: usize = arg(args, 2, Some(0))?;
    pin_current_thread(core)?;
    let s = UdpSocket::bind(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    println!(
        "echo (std): serving on {} (core {core}) for {seconds} s",
        s.local_addr()?
    );
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut buf = vec![0u8; 65536];
    let (mut n, mut first, mut last) = (0u64, None, None);
    while Instant::now() < end {
        if let Ok((len, from)) = s.recv_from(&mut buf) {
            s.send_to(&buf[..len], from)?;
            n += 1;
            let now = Instant::now();
            first.get_or_insert((now, n));
            last = Some((now, n));
        }
    }
    if let (Some((t0, n0)), Some((t1, n1))) = (first, last) {
        let secs = (t1 - t0).as_secs_f64().max(1e-9);
        println!(
            "echo (std): {n} datagrams, {:.0} pps, {:.2} us CPU/packet (2 syscalls/packet)",
            (n1 - n0) as f64 / secs,
            cpu_time().as_secs_f64() * 1e6 / n.max(1) as f64
        );
    }
    Ok(())
}

fn blast(args: &[String]) -> Res {
    let to: SocketAddrV4 = arg(args, 0, None)?;
    let seconds: u64 = arg(args, 1, None)?;
    let core: usize = arg(args, 2, Some(1))?;
    let window: usize = arg(args, 3, Some(64))?;
    let size: usize = arg(args, 4, Some(172))?;
    pin_current_thread(core)?;
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let payload = vec![0x80u8; size];
    let mut buf = vec![0u8; 65536];
    let (mut sent, mut got) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    while Instant::now() < end {
        for _ in 0..window {
            s.send_to(&payload, to)?;
            sent += 1;
        }
        for _ in 0..window {
            match s.recv_from(&mut buf) {
                Ok(_) => got += 1,
                Err(_) => break, // lost: carry on with the next window
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "blast: sent {sent}, echoed {got} ({:.0} round trips/s, {} lost)",
        got as f64 / secs,
        sent - got
    );
    Ok(())
}
