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
    /// The test's own namespaces, told apart from other tests' by `tag`.
    fn new(tag: &str) -> Topology {
        let pid = std::process::id();
        let t = Topology {
            client: format!("ewc-{pid}-{tag}"),
            edge: format!("ewe-{pid}-{tag}"),
            core: format!("ewk-{pid}-{tag}"),
            pins: PathBuf::from(format!("/sys/fs/bpf/edgeway-test-{pid}-{tag}")),
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
    let topo = Topology::new("call");
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
    // The test wrote the table only (not through `edgeway_xdp::open_table`, as the control
    // plane does), so the XDP map gets the entries from the data plane's mirror, up to one
    // period (50 ms) after the workers have them; a packet before that is dropped as no-flow.
    let xdp = MediaProgram::load(Some(&pins)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while [FlowKey::port(client_port), demux_key]
        .iter()
        .any(|k| xdp.flow(*k).unwrap().is_none())
    {
        assert!(
            Instant::now() < deadline,
            "the mirror did not fill the XDP map within 5 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
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

/// The MAC address of `dev` in namespace `netns`.
fn mac_of(netns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", netns, "-j", "link", "show", dev])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["address"].as_str().unwrap().to_owned()
}

/// Set when this test binary runs as the writer that dies between its two writes.
const KILLED_WRITER: &str = "EDGEWAY_TEST_KILLED_WRITER_DIR";

/// The writer of `killed_writer`: its hook SIGKILLs the process at the moment the pinned map
/// would be written, i.e. after the shared-memory slot is published, with the writer lock held.
#[derive(Debug)]
struct DieBeforeTheMapWrite;

impl edgeway_flowtable::MapHook for DieBeforeTheMapWrite {
    fn inserted(&self, _: &FlowKey, _: &edgeway_map_schema::FlowEntry) -> Result<(), String> {
        let me = std::process::id().to_string();
        let _ = Command::new("kill").args(["-9", &me]).status();
        std::thread::sleep(Duration::from_secs(60));
        Err("still alive after kill -9".into())
    }

    fn removed(&self, _: &FlowKey) -> Result<(), String> {
        Err("not used".into())
    }

    fn describe(&self) -> String {
        "a writer about to die".into()
    }
}

/// Runs this test again as a separate process that inserts `key` through a table handle
/// whose writer dies between the shared-memory write and the map write; returns once it died.
fn killed_writer(dir: &std::path::Path, test: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(KILLED_WRITER, dir)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the writer was to die by kill -9: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn client_leg(key: u16) -> Vec<String> {
    [
        "add",
        "--key",
        &key.to_string(),
        "--action",
        "relay",
        "--flow-id",
        "1",
        "--out-from",
        "2776",
        "--out-to",
        "10.9.0.2:36000",
        "--peer",
        "2776@10.9.0.2:36000",
        "--latch",
        "--permit",
        "198.51.100.2",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The BPF backend: with XDP attached and no data plane running, `edgewayctl flow add` makes
/// XDP relay the very next packet, `flow del` makes the next one a no-flow drop; and a writer
/// killed between the table write and the map write is repaired by the mirror of a running
/// data plane within its period.
#[test]
fn flow_writes_reach_xdp_in_the_call_and_the_mirror_repairs_a_dead_writer() {
    const TEST: &str = "flow_writes_reach_xdp_in_the_call_and_the_mirror_repairs_a_dead_writer";
    if let Some(dir) = std::env::var_os(KILLED_WRITER) {
        let mut t = edgeway_flowtable::FlowTable::open_at(std::path::Path::new(&dir)).unwrap();
        t.set_map_hook(Box::new(DieBeforeTheMapWrite));
        let e = edgeway_map_schema::FlowEntry {
            flow_id: 2,
            action: Action::Relay as u8,
            out_local_port: 2776,
            out_remote: edgeway_map_schema::Endpoint::new(CORE.octets(), 36000),
            ..Default::default()
        };
        let _ = t.insert(FlowKey::port(40002), e);
        unreachable!("the writer survived its own kill -9");
    }
    if !root_or_skip("the flow table's BPF backend across namespaces") {
        return;
    }
    let topo = Topology::new("write");
    // The edge knows both neighbours, so the program's FIB lookup succeeds on the first
    // packet (no ARP round trip through the stack, which nobody would answer for it).
    for (addr, n, dev, edge_dev) in [
        ("198.51.100.2", &topo.client, "ewc0", "e0"),
        ("10.9.0.2", &topo.core, "ewk0", "e1"),
    ] {
        let mac = mac_of(n, dev);
        ip(&[
            "-n",
            &topo.edge,
            "neigh",
            "replace",
            addr,
            "lladdr",
            &mac,
            "dev",
            edge_dev,
            "nud",
            "permanent",
        ]);
    }
    let pins = topo.pins.join("edge");
    let mut dp =
        Dataplane::start_with_xdp(&topo.edge, "edge", "e0=198.51.100.1,e1=10.9.0.1", &pins);
    dp.settle();
    let ctl = edgewayctl_binary();
    let dir = dp.dir.display().to_string();
    let maps = edgeway_xdp::PinnedMaps::open(&pins).unwrap();
    let client = topo.socket(&topo.client, SocketAddrV4::new(CLIENT, 5004));
    let core = topo.socket(&topo.core, SocketAddrV4::new(CORE, 36000));
    let edge_client_side = SocketAddrV4::new(EDGE_OUT, 40000);
    let edge_core_side = SocketAddrV4::new(EDGE_IN, 2776);

    // (1) No data plane at all: XDP is attached through the pinned link, nobody mirrors.
    dp.kill9();
    let mut add: Vec<String> = vec!["flow".into(), "--shm-dir".into(), dir.clone()];
    add.extend(client_leg(40000));
    let args: Vec<&str> = add.iter().map(String::as_str).collect();
    let said = run_ok(&ctl, &args);
    let down = run_ok(
        &ctl,
        &[
            "flow",
            "--shm-dir",
            &dir,
            "add",
            "--key",
            "2776@10.9.0.2:36000",
            "--action",
            "relay",
            "--flow-id",
            "1",
            "--out-from",
            "40000",
            "--peer",
            "40000",
        ],
    );
    let relayed = maps.counters().unwrap().relayed_packets;
    // At once: the very next packet, with nothing in between.
    client.send_to(&rtp(1, 0, 0), edge_client_side).unwrap();
    let (got, _) = recv(&core).expect("XDP relayed the first packet after flow add");
    assert_eq!(got, rtp(1, 0, 0));
    assert_eq!(maps.counters().unwrap().relayed_packets, relayed + 1);
    for said in [&said, &down] {
        assert!(
            said.contains(&format!(
                "written to the XDP flows map in {} too",
                pins.display()
            )),
            "{said}"
        );
    }
    core.send_to(&rtp(2, 0, 0), edge_core_side).unwrap();
    let (got, from) = recv(&client).expect("and back to the latched client");
    assert_eq!((got, from), (rtp(2, 0, 0), edge_client_side));
    assert_eq!(maps.counters().unwrap().relayed_packets, relayed + 2);

    let no_flow = maps.counters().unwrap().drops[DropReason::NoFlow.index()];
    let del = run_ok(&ctl, &["flow", "--shm-dir", &dir, "del", "40000"]);
    assert!(del.starts_with("removed 40000"), "{del}");
    client.send_to(&rtp(1, 1, 160), edge_client_side).unwrap();
    assert_eq!(recv(&core), None, "relayed after flow del");
    let c = maps.counters().unwrap();
    assert_eq!(c.drops[DropReason::NoFlow.index()], no_flow + 1, "{c:?}");
    assert_eq!(c.relayed_packets, relayed + 2);
    assert_eq!(
        maps.latch(FlowKey::port(40000)).unwrap(),
        None,
        "latch gone"
    );

    // (2) A writer killed between its two writes, while a data plane runs (stopped for the
    // moment, so the gap is seen): the table has the flow, XDP does not, until the mirror.
    dp.spawn();
    dp.settle();
    let pid = dp.pid().unwrap().to_string();
    let key = FlowKey::port(40002);
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    killed_writer(&dp.dir, TEST);
    assert!(dp.table.lookup(&key).is_some(), "the table write happened");
    assert_eq!(maps.flow(key).unwrap(), None, "the map write did not");
    let no_flow = maps.counters().unwrap().drops[DropReason::NoFlow.index()];
    let to_40002 = SocketAddrV4::new(EDGE_OUT, 40002);
    client.send_to(&rtp(3, 0, 0), to_40002).unwrap();
    assert_eq!(recv(&core), None, "no flow in XDP yet");
    assert_eq!(
        maps.counters().unwrap().drops[DropReason::NoFlow.index()],
        no_flow + 1
    );
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    let resumed = Instant::now();
    while maps.flow(key).unwrap().is_none() {
        assert!(
            resumed.elapsed() < Duration::from_secs(1),
            "the mirror did not repair the map within 1 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let repaired = resumed.elapsed();
    eprintln!("the data plane's mirror repaired the dead writer's flow {repaired:?} after SIGCONT");
    // One mirror period (50 ms) plus the loop's own work, with room for a loaded machine.
    assert!(repaired < Duration::from_millis(250), "{repaired:?}");
    let relayed = maps.counters().unwrap().relayed_packets;
    client.send_to(&rtp(3, 1, 160), to_40002).unwrap();
    assert_eq!(recv(&core).map(|(p, _)| p), Some(rtp(3, 1, 160)));
    assert_eq!(maps.counters().unwrap().relayed_packets, relayed + 1);
}
