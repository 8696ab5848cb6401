//! Harness for the data plane's end-to-end tests: a real `edgeway-dataplane` process on
//! loopback, flows programmed through the flow-table library, UDP sockets as the parties.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use edgeway_flowtable::{FlowTable, TableOptions};
use edgeway_map_schema::{
    Action, DropReason, Endpoint, FlowCounters, FlowEntry, FlowKey, FlowState, SrtpParams,
};
use edgeway_srtp::{MasterKey, SrtpConfig, SrtpContext, SrtpProfile};

pub const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A loopback port nobody uses right now (bound and released).
pub fn free_port() -> u16 {
    loop {
        let s = UdpSocket::bind((LO, 0)).unwrap();
        let p = s.local_addr().unwrap().port();
        if p.is_multiple_of(2) && p < 65534 && UdpSocket::bind((LO, p + 1)).is_ok() {
            return p;
        }
    }
}

/// A free even/odd pair below the media range (36000-59999), for a configured
/// demultiplexing pair, which must lie outside it.
pub fn free_demux_pair() -> u16 {
    static PAIRS: AtomicU32 = AtomicU32::new(0);
    // Spread concurrent tests and processes over 20000-35999.
    let first = (std::process::id() % 2000 + PAIRS.fetch_add(97, Ordering::Relaxed)) % 8000;
    (0..8000u32)
        .map(|i| 20_000 + 2 * ((first + i) % 8000) as u16)
        .find(|&p| UdpSocket::bind((LO, p)).is_ok() && UdpSocket::bind((LO, p + 1)).is_ok())
        .unwrap()
}

/// A UDP party on loopback with a short receive timeout.
pub fn party() -> UdpSocket {
    let s = UdpSocket::bind((LO, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

pub fn addr(s: &UdpSocket) -> SocketAddrV4 {
    match s.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        std::net::SocketAddr::V6(_) => unreachable!(),
    }
}

/// Receives one datagram (None on timeout).
pub fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddrV4)> {
    let mut buf = [0u8; 2048];
    match s.recv_from(&mut buf) {
        Ok((n, std::net::SocketAddr::V4(a))) => Some((buf[..n].to_vec(), a)),
        _ => None,
    }
}

/// Receives datagrams until `want` arrived or 1 s of silence, skipping zero-length keepalives.
pub fn recv_n(s: &UdpSocket, want: usize) -> Vec<(Vec<u8>, SocketAddrV4)> {
    let mut got = Vec::new();
    while got.len() < want {
        match recv(s) {
            Some((p, a)) if !p.is_empty() => got.push((p, a)),
            Some(_) => {}
            None => break,
        }
    }
    got
}

pub fn master_key(profile: SrtpProfile, seed: u8) -> MasterKey {
    let k: Vec<u8> = (0..profile.master_key_len())
        .map(|i| seed.wrapping_mul(37).wrapping_add(i as u8 * 7))
        .collect();
    let s: Vec<u8> = (0..profile.master_salt_len())
        .map(|i| seed ^ (0x5a + i as u8))
        .collect();
    MasterKey::new(profile, &k, &s).unwrap()
}

pub fn params(profile: SrtpProfile, key: &MasterKey) -> SrtpParams {
    let mut p = SrtpParams::PLAIN;
    p.suite = profile.id() as u8;
    p.key[..key.key().len()].copy_from_slice(key.key());
    p.salt[..key.salt().len()].copy_from_slice(key.salt());
    p
}

pub fn context(profile: SrtpProfile, key: &MasterKey) -> SrtpContext {
    SrtpContext::new(&SrtpConfig::new(profile, key.clone())).unwrap()
}

/// A G.711-sized RTP packet whose payload encodes (ssrc, seq).
pub fn rtp(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u32).map(|i| (i as u8) ^ (seq as u8) ^ (ssrc as u8)));
    p
}

/// An entry with the fields every test sets; the rest zero.
#[allow(clippy::too_many_arguments)]
pub fn entry(
    flow_id: u64,
    action: Action,
    flags: u16,
    out_from: u16,
    out_to: Option<SocketAddrV4>,
    peer: FlowKey,
    srtp_in: SrtpParams,
    srtp_out: SrtpParams,
) -> FlowEntry {
    FlowEntry {
        flow_id,
        action: action as u8,
        flags,
        permit_ip: [127, 0, 0, 1],
        out_local_port: out_from,
        out_remote: out_to
            .map(|a| Endpoint::new(a.ip().octets(), a.port()))
            .unwrap_or_default(),
        peer,
        srtp_in,
        srtp_out,
        ..FlowEntry::default()
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running `edgeway-dataplane` with its own flow table; killed and cleaned up on drop.
pub struct Dataplane {
    pub dir: PathBuf,
    pub table: FlowTable,
    args: Vec<String>,
    /// A command the data plane runs under (`nsenter --net=...`), if any.
    pub prefix: Vec<String>,
    child: Option<Child>,
}

impl Dataplane {
    /// Creates a table in a fresh directory and starts the data plane on it.
    pub fn start(role: &str, extra: &[&str]) -> Dataplane {
        Self::start_with(role, extra, &TableOptions::default())
    }

    pub fn start_with(role: &str, extra: &[&str], opts: &TableOptions) -> Dataplane {
        Self::start_in(&[], role, extra, opts)
    }

    /// Like `start_with`, with the process run under `prefix` (`nsenter --net=...`).
    pub fn start_in(prefix: &[&str], role: &str, extra: &[&str], opts: &TableOptions) -> Dataplane {
        let dir = PathBuf::from(format!(
            "/dev/shm/edgeway-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let table = FlowTable::create_at(&dir, opts).unwrap();
        let mut args: Vec<String> = vec![
            "--shm-dir".into(),
            dir.display().to_string(),
            "--role".into(),
            role.into(),
        ];
        if !extra.contains(&"--bind") {
            args.extend(["--bind".into(), "127.0.0.1".into()]);
        }
        if !extra.contains(&"--workers") {
            args.extend(["--workers".into(), "1".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut dp = Dataplane {
            dir,
            table,
            args,
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        dp.spawn();
        dp
    }

    /// Starts the process and waits until its workers have bound what the table asks.
    pub fn spawn(&mut self) -> Instant {
        let started = Instant::now();
        let bin = env!("CARGO_BIN_EXE_edgeway-dataplane");
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        started
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Inserts an entry and, while the data plane runs, waits until its workers have applied
    /// it (so the test's first packet does not race the install).
    pub fn insert(&self, key: FlowKey, e: FlowEntry) {
        self.table.insert(key, e).unwrap();
        if self.child.is_some() {
            self.settle();
        }
    }

    /// Waits until every worker has exported a row after now, and together they hold every
    /// live entry of the table (each entry is owned by exactly one worker).
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        // An export carries changes applied by a sync at least one sync period before it.
        let mark = edgeway_flowtable::unix_ms() + 3;
        loop {
            let dp = self.table.dataplane();
            let live = self.table.iter().count() as u64;
            let workers = dp.workers as usize;
            let rows: Vec<_> = (0..workers).map(|w| self.table.node_counters(w)).collect();
            let pid_ok = self.child.as_ref().map(|c| c.id()) == Some(dp.pid);
            if pid_ok
                && workers > 0
                && rows.iter().all(|r| r.updated_ms >= mark)
                && rows.iter().map(|r| r.flows).sum::<u64>() == live
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "data plane did not apply the table within 5 s: {live} live, rows {rows:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Counters of `key` once the workers exported them (waits for an export).
    pub fn counters(&self, key: FlowKey) -> FlowCounters {
        std::thread::sleep(Duration::from_millis(80));
        let (slot, _) = self.table.lookup(&key).unwrap();
        self.table.counters(slot)
    }

    pub fn state(&self, key: FlowKey) -> FlowState {
        std::thread::sleep(Duration::from_millis(80));
        let (slot, _) = self.table.lookup(&key).unwrap();
        self.table.state(slot)
    }

    pub fn node_drops(&self, reason: DropReason) -> u64 {
        std::thread::sleep(Duration::from_millis(80));
        (0..4)
            .map(|w| self.table.node_counters(w).drops[reason.index()])
            .sum()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `pkt` and waits until the data plane forwards something to `to` (flows are applied
/// within a few ms of the insert; the first packets may arrive before).
pub fn send_until_forwarded(
    from: &UdpSocket,
    dst: SocketAddrV4,
    pkt: &[u8],
    to: &UdpSocket,
) -> Vec<u8> {
    send_until_forwarded_from(from, dst, pkt, to).0
}

/// Like `send_until_forwarded`, also returning the source the packet arrived from.
pub fn send_until_forwarded_from(
    from: &UdpSocket,
    dst: SocketAddrV4,
    pkt: &[u8],
    to: &UdpSocket,
) -> (Vec<u8>, SocketAddrV4) {
    let deadline = Instant::now() + Duration::from_secs(5);
    to.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    while Instant::now() < deadline {
        from.send_to(pkt, dst).unwrap();
        if let Some((p, src)) = recv(to) {
            if !p.is_empty() {
                to.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                return (p, src);
            }
        }
    }
    panic!("nothing forwarded to {:?} within 5 s", to.local_addr());
}

/// A UDP socket bound to `addr` inside network namespace `netns` (`/run/netns/<netns>`), with
/// a 500 ms receive timeout; the socket stays in that namespace wherever it is used.
pub fn socket_in(netns: &str, addr: SocketAddrV4) -> UdpSocket {
    let path = PathBuf::from("/run/netns").join(netns);
    std::thread::spawn(move || {
        edgeway_xdp::enter_network_namespace(&path).unwrap();
        let s = UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    })
    .join()
    .unwrap()
}

/// `Udp: NoPorts` of namespace `netns`: datagrams that found no socket there.
pub fn udp_no_ports(netns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "cat", "/proc/net/snmp"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next().unwrap().split_whitespace().collect();
    let values: Vec<&str> = udp.next().unwrap().split_whitespace().collect();
    let i = names.iter().position(|n| *n == "NoPorts").unwrap();
    values[i].parse().unwrap()
}

/// Sends `n` RTP packets 1 ms apart and returns how many arrived (read as they come, so the
/// receiver's socket buffer is never what loses them).
pub fn stream(from: &UdpSocket, to: SocketAddrV4, rx: &UdpSocket, ssrc: u32, n: u16) -> usize {
    let rx = rx.try_clone().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let counter = std::thread::spawn(move || {
        let mut got = 0;
        let mut buf = [0u8; 2048];
        while let Ok((len, _)) = rx.recv_from(&mut buf) {
            if len >= 12 && u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) == ssrc {
                got += 1;
                if got == n as usize {
                    break;
                }
            }
        }
        got
    });
    for seq in 0..n {
        from.send_to(&rtp(ssrc, seq, 160 * seq as u32), to).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    counter.join().unwrap()
}

impl Dataplane {
    /// A data plane of `role` inside namespace `netns`, XDP attached (generic) to
    /// `interfaces` (`IF[=SRC],...`) with its pins in `pins`.
    pub fn start_with_xdp(
        netns: &str,
        role: &str,
        interfaces: &str,
        pins: &std::path::Path,
    ) -> Dataplane {
        let nsenter = format!("--net=/run/netns/{netns}");
        let pins = pins.display().to_string();
        Self::start_in(
            &["nsenter", &nsenter],
            role,
            &[
                "--bind",
                "0.0.0.0",
                "--xdp",
                interfaces,
                "--xdp-generic",
                "--xdp-pin-dir",
                &pins,
            ],
            &TableOptions::default(),
        )
    }
}

/// Sends one datagram from `from` to every media port (36000-59999) of `to`, then to each
/// of `extra`, 200 per ms, on a thread of its own; the thread returns how many it sent.
pub fn scan_media_range(
    from: UdpSocket,
    to: Ipv4Addr,
    extra: &[u16],
) -> std::thread::JoinHandle<u64> {
    let extra = extra.to_vec();
    std::thread::spawn(move || {
        let mut sent = 0u64;
        for port in (36000..=59999u16).chain(extra) {
            from.send_to(b"scan", SocketAddrV4::new(to, port)).unwrap();
            sent += 1;
            if sent.is_multiple_of(200) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        sent
    })
}

/// Nothing of a scan reached a socket in `netns`: its `Udp NoPorts` and the data plane's
/// no-flow drops are what they were before it.
pub fn assert_scan_reached_no_socket(netns: &str, dp: &Dataplane, no_ports: u64, no_flow: u64) {
    assert_eq!(
        udp_no_ports(netns),
        no_ports,
        "a scan packet reached the stack"
    );
    assert_eq!(
        dp.node_drops(DropReason::NoFlow),
        no_flow,
        "a scan packet reached a worker"
    );
}

/// The `edgewayctl` binary, built on demand into this test's target directory and profile,
/// so the data plane's tests can read the node the way an operator does.
pub fn edgewayctl_binary() -> PathBuf {
    edgeway_testkit::workspace_binary("edgewayctl", "edgewayctl")
}

/// `program ARGS...` (edgewayctl, scripts/netns), which must succeed; its standard output.
pub fn run_ok(program: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {}: {}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
