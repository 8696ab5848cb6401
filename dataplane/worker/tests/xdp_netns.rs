//! The edge with XDP attached, end to end across network namespaces: a client host, a
//! dual-NIC edge running `edgeway-dataplane --xdp`, and a core host, joined by veth.
//!
//! - a relayed call crosses the edge in both directions in the kernel (DEVMAP redirect
//!   between the edge's two interfaces, each side seeing the edge's own address there);
//! - a UDP scan of the whole media range and the demultiplexing port, beside the call, reaches
//!   no socket on the edge (the kernel's "no port" counter does not move, nor the workers'
//!   no-flow count), is counted by XDP as dropped, and the call loses nothing;
//! - the program's events (the latch, the scan's no-flow bursts) reach the table directory's
//!   event log through the data plane;
//! - kill -9 of the data plane leaves the call forwarding (pinned link and maps), and a
//!   restarted data plane takes the pinned link over.
//!
//! Needs root; the namespaces and pins are the test's own and removed at the end.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use edgeway_flowtable::{EventLog, TableOptions, XdpStatus};
use edgeway_map_schema::{flags, Action, DropReason, FlowKey, SrtpParams};
use edgeway_testkit::{ip, netns_sysctl, root_or_skip};
use edgeway_xdp::MediaProgram;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const EDGE_OUT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const EDGE_IN: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const CORE: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

/// Three namespaces and the edge's pin directory; all removed on drop.
struct Topology {
    client: String,
    edge: String,
    core: String,
    pins: PathBuf,
}

impl Topology {
    fn new() -> Topology {
        let pid = std::process::id();
        let t = Topology {
            client: format!("ewc-{pid}"),
            edge: format!("ewe-{pid}"),
            core: format!("ewk-{pid}"),
            pins: PathBuf::from(format!("/sys/fs/bpf/edgeway-test-{pid}")),
        };
        for n in [&t.client, &t.edge, &t.core] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ip(&[
            "link", "add", "ewc0", "netns", &t.client, "type", "veth", "peer", "name", "e0",
            "netns", &t.edge,
        ]);
        ip(&[
            "link", "add", "e1", "netns", &t.edge, "type", "veth", "peer", "name", "ewk0", "netns",
            &t.core,
        ]);
        for (n, dev, addr) in [
            (&t.client, "ewc0", "198.51.100.2/24"),
            (&t.edge, "e0", "198.51.100.1/24"),
            (&t.edge, "e1", "10.9.0.1/24"),
            (&t.core, "ewk0", "10.9.0.2/24"),
        ] {
            ip(&["-n", n, "addr", "add", addr, "dev", dev]);
            ip(&["-n", n, "link", "set", dev, "up"]);
        }
        // Senders fill in their UDP checksums (veth would leave them to an offload that never
        // comes, and the relay updates checksums incrementally).
        for (n, dev) in [(&t.client, "ewc0"), (&t.core, "ewk0")] {
            let ok = Command::new("ip")
                .args(["netns", "exec", n, "ethtool", "-K", dev, "tx", "off"])
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "ethtool -K {dev} tx off");
        }
        for dev in ["e0", "e1"] {
            netns_sysctl(&t.edge, &format!("net.ipv4.conf.{dev}.forwarding=1"));
        }
        t
    }

    fn socket(&self, n: &str, addr: SocketAddrV4) -> UdpSocket {
        socket_in(n, addr)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
        for n in [&self.client, &self.edge, &self.core] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

#[test]
fn the_edge_relays_in_the_kernel_closes_the_media_range_and_survives_kill_9() {
    if !root_or_skip("XDP end-to-end across namespaces") {
        return;
    }
    let topo = Topology::new();
    let pins = topo.pins.join("edge");
    let mut dp =
        Dataplane::start_with_xdp(&topo.edge, "edge", "e0=198.51.100.1,e1=10.9.0.1", &pins);

    // One call leg: the client's port 40000 <-> the core's media port via demux 2776.
    let client_port = 40000;
    let core_media = SocketAddrV4::new(CORE, 36000);
    let demux_key = FlowKey::demux(2776, CORE.octets(), 36000);
    let mut to_core = entry(
        1,
        Action::Relay,
        flags::LATCH,
        2776,
        Some(core_media),
        demux_key,
        SrtpParams::PLAIN,
        SrtpParams::PLAIN,
    );
    to_core.permit_ip = CLIENT.octets();
    dp.insert(FlowKey::port(client_port), to_core);
    let to_client = entry(
        1,
        Action::Relay,
        0,
        client_port,
        None,
        FlowKey::port(client_port),
        SrtpParams::PLAIN,
        SrtpParams::PLAIN,
    );
    dp.insert(demux_key, to_client);
    dp.settle();
    let status = std::fs::read_to_string(dp.dir.join("xdp")).unwrap();
    assert!(status.contains("attached to e0 (generic)"), "{status}");
    assert!(status.contains("attached to e1 (generic)"), "{status}");
    let recorded = XdpStatus::read(&dp.dir).unwrap();
    assert_eq!(recorded.pin_dir().as_deref(), Some(pins.as_path()));

    let client = topo.socket(&topo.client, SocketAddrV4::new(CLIENT, 5004));
    let core = topo.socket(&topo.core, core_media);
    let edge_client_side = SocketAddrV4::new(EDGE_OUT, client_port);
    let edge_core_side = SocketAddrV4::new(EDGE_IN, 2776);

    // Both ways, with the edge's own address on each side.
    send_until_forwarded(&client, edge_client_side, &rtp(1, 0, 0), &core);
    let (_, from) = send_until_forwarded_from(&core, edge_core_side, &rtp(2, 0, 0), &client);
    assert_eq!(
        from, edge_client_side,
        "the client hears the edge, not the core"
    );
    let xdp = MediaProgram::load(Some(&pins)).unwrap();
    let relayed_before = xdp.counters().unwrap().relayed_packets;
    assert_eq!(stream(&client, edge_client_side, &core, 3, 100), 100);
    assert_eq!(stream(&core, edge_core_side, &client, 4, 100), 100);
    let relayed = xdp.counters().unwrap().relayed_packets - relayed_before;
    assert!(relayed >= 200, "the kernel relayed the call: {relayed}");

    // The operator's view of it: edgewayctl status and flows, from the table and the pins.
    let ctl = edgewayctl_binary();
    let dir = dp.dir.display().to_string();
    let status = run_ok(&ctl, &["status", "--shm-dir", &dir]);
    assert!(status.contains("data plane: running"), "{status}");
    let xdp_line: Vec<&str> = status.lines().filter(|l| l.starts_with("xdp")).collect();
    assert_eq!(xdp_line.len(), 1, "said once: {status}");
    assert!(
        xdp_line[0].starts_with("xdp: generic: attached to e0 (generic, pinned link"),
        "{status}"
    );
    assert!(xdp_line[0].contains("attached to e1 (generic"), "{status}");
    let list: serde_json::Value = serde_json::from_str(&run_ok(
        &ctl,
        &["flows", "--shm-dir", &dir, "list", "--json"],
    ))
    .unwrap();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    let up = rows.iter().find(|r| r["key"] == "40000").unwrap();
    let c = xdp
        .flow_counters(FlowKey::port(client_port))
        .unwrap()
        .unwrap();
    assert_eq!(up["rx_packets"], c.rx_packets, "{up}");
    assert!(c.rx_packets >= 101, "{c:?}");
    assert_eq!(up["latched_src"], "198.51.100.2:5004", "{up}");
    let down = rows
        .iter()
        .find(|r| r["key"] == "2776@10.9.0.2:36000")
        .unwrap();
    assert_eq!(down["out_to"], "latched", "{down}");
    assert!(down["tx_packets"].as_u64().unwrap() >= 101, "{down}");

    // A scan of the whole media range and the demux port beside the call.
    let no_ports = udp_no_ports(&topo.edge);
    let worker_no_flow = dp.node_drops(DropReason::NoFlow);
    let xdp_no_flow = xdp.counters().unwrap().drops[DropReason::NoFlow.index()];
    let scanner = topo.socket(&topo.client, SocketAddrV4::new(CLIENT, 6000));
    let scan = scan_media_range(scanner, EDGE_OUT, &[2776, 2777]);
    let during = stream(&client, edge_client_side, &core, 5, 500);
    let sent = scan.join().unwrap();
    assert_eq!(during, 500, "the call lost packets during the scan");
    let dropped = xdp.counters().unwrap().drops[DropReason::NoFlow.index()] - xdp_no_flow;
    // Port 40000 has a flow: the scan's packet there is refused as not RTP, not as no-flow.
    assert_eq!(
        dropped,
        sent - 1,
        "every scan packet for no flow dropped in XDP"
    );
    assert_scan_reached_no_socket(&topo.edge, &dp, no_ports, worker_no_flow);
    let c = xdp
        .flow_counters(FlowKey::port(client_port))
        .unwrap()
        .unwrap();
    assert_eq!(c.drops[DropReason::Malformed.index()], 1, "{c:?}");

    // The program's events reached the control plane's side: the data plane drained the ring
    // buffer into the table directory's event log (every 50 ms).
    let log = EventLog::new(&dp.dir);
    let deadline = Instant::now() + Duration::from_secs(2);
    let events = loop {
        let events = log.read_all().unwrap();
        let no_flow: u64 = events
            .iter()
            .filter(|e| e["kind"] == "no_flow")
            .map(|e| e["count"].as_u64().unwrap())
            .sum();
        if no_flow > 0 || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let latched: Vec<_> = events.iter().filter(|e| e["kind"] == "latched").collect();
    assert_eq!(latched.len(), 1, "one latch, said once: {events:?}");
    assert_eq!(latched[0]["key"], "40000");
    assert_eq!(latched[0]["src"], "198.51.100.2:5004");
    let now = edgeway_flowtable::unix_ms();
    let t = latched[0]["time_ms"].as_u64().unwrap();
    assert!(t <= now && now - t < 60_000, "a Unix time: {t} vs {now}");
    let bursts: Vec<_> = events.iter().filter(|e| e["kind"] == "no_flow").collect();
    assert!(!bursts.is_empty(), "the scan was reported: {events:?}");
    // One event per 100 ms window at most, not one per packet.
    assert!(bursts.len() < 100, "{} no-flow events", bursts.len());
    assert!(
        bursts
            .iter()
            .all(|e| e["src"].as_str().unwrap().starts_with("198.51.100.2:")),
        "{bursts:?}"
    );

    // kill -9: the pinned link and maps keep the call going without any process.
    dp.kill9();
    let t0 = Instant::now();
    assert_eq!(stream(&client, edge_client_side, &core, 6, 100), 100);
    assert_eq!(stream(&core, edge_core_side, &client, 7, 100), 100);
    eprintln!(
        "relayed 200 packets with no data plane running ({:?})",
        t0.elapsed()
    );
    let status = run_ok(&ctl, &["status", "--shm-dir", &dir]);
    assert!(status.contains("data plane: exited"), "{status}");
    assert!(
        status.contains("no data plane is running: relay flows keep forwarding"),
        "{status}"
    );
    let events = run_ok(&ctl, &["flows", "--shm-dir", &dir, "events"]);
    assert!(
        events.contains("flow 40000 latched 198.51.100.2:5004"),
        "{events}"
    );

    // A new data plane takes over the pinned link; the call goes on.
    dp.spawn();
    dp.settle();
    let status = std::fs::read_to_string(dp.dir.join("xdp")).unwrap();
    assert!(status.contains("kept the pinned link"), "{status}");
    // The taken-over link keeps the mode it was made with, and the status still names it.
    let modes: Vec<_> = XdpStatus::read(&dp.dir)
        .unwrap()
        .attachments()
        .into_iter()
        .map(|a| (a.interface, a.mode, a.replaced))
        .collect();
    assert_eq!(
        modes,
        [
            ("e0".to_owned(), "generic".to_owned(), true),
            ("e1".to_owned(), "generic".to_owned(), true)
        ]
    );
    assert_eq!(stream(&client, edge_client_side, &core, 8, 100), 100);
    drop(dp);
    drop(xdp);
}

/// When XDP cannot be attached the node says why, once, and the workers carry the media.
#[test]
fn without_xdp_the_node_says_so_and_the_workers_relay() {
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/edgeway-test-noif-{}",
        std::process::id()
    ));
    let pins_arg = pins.display().to_string();
    let dp = Dataplane::start_in(
        &[],
        "edge",
        &["--xdp", "ewnosuch0", "--xdp-pin-dir", &pins_arg],
        &TableOptions::default(),
    );
    dp.settle();
    let _ = std::fs::remove_dir_all(&pins);
    let status = std::fs::read_to_string(dp.dir.join("xdp")).unwrap();
    assert!(status.starts_with("off: "), "{status}");
    assert!(status.contains("the workers carry all media"), "{status}");
    assert_eq!(status.lines().count(), 1, "said once: {status}");
    let ctl = edgewayctl_binary();
    let dir = dp.dir.display().to_string();
    let status = run_ok(&ctl, &["status", "--shm-dir", &dir]);
    assert!(
        status.contains("xdp: none: --xdp ewnosuch0: no such interface"),
        "{status}"
    );
    assert!(status.contains("the workers carry all media"), "{status}");
    // The workers relay: a leg on loopback forwards.
    let client = party();
    let core = party();
    let ec = free_port();
    let mut e = entry(
        1,
        Action::Relay,
        0,
        ec,
        Some(addr(&core)),
        FlowKey::port(ec),
        SrtpParams::PLAIN,
        SrtpParams::PLAIN,
    );
    e.flags = 0;
    dp.insert(FlowKey::port(ec), e);
    dp.settle();
    let _ = send_until_forwarded(&client, SocketAddrV4::new(LO, ec), &rtp(1, 0, 0), &core);
}
