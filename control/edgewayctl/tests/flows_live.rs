//! `edgewayctl flows` and `edgewayctl status` against the real XDP program attached to a
//! veth in a namespace of the test's own, with flows programmed and real packets sent
//! through it: what the CLI prints is what was sent.
//!
//! The program is loaded, configured and attached here the way the data plane does it
//! (`MediaProgram::load` with pinned maps, `attach_pinned`), and then the loader is dropped:
//! the CLI reads only the pins, as it would after the data plane was killed. Needs root; under
//! `CI=true` it fails rather than skip. Namespaces and pins are removed at the end.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use edgeway_flowtable::{FlowTable, TableOptions, XdpAttachment, XdpStatus};
use edgeway_map_schema::{flags, xdp_mode, Action, Endpoint, FlowEntry, FlowKey};
use edgeway_testkit::{ip, netns_sysctl, root_or_skip};
use edgeway_xdp::{MediaProgram, XdpConfig};
use serde_json::Value;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const EDGE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const CLIENT_MAC: &str = "02:00:00:00:0c:02";
const RELAYED: u16 = 40000;
const DROPPING: u16 = 40002;

/// A client namespace and an edge namespace joined by one veth, the edge's pins and table
/// directory; all removed on drop.
struct Lab {
    client: String,
    edge: String,
    pins: PathBuf,
    table: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            client: format!("ewfc-{pid}"),
            edge: format!("ewfe-{pid}"),
            pins: PathBuf::from(format!("/sys/fs/bpf/edgeway-ctl-test-{pid}")),
            table: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("flows-live-{pid}")),
        };
        for n in [&lab.client, &lab.edge] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ip(&[
            "link",
            "add",
            "fc0",
            "netns",
            &lab.client,
            "address",
            CLIENT_MAC,
            "type",
            "veth",
            "peer",
            "name",
            "fe0",
            "netns",
            &lab.edge,
        ]);
        for (n, dev, addr) in [
            (&lab.client, "fc0", "198.51.100.2/24"),
            (&lab.edge, "fe0", "198.51.100.1/24"),
        ] {
            ip(&["-n", n, "addr", "add", addr, "dev", dev]);
            ip(&["-n", n, "link", "set", dev, "up"]);
        }
        // The client fills in its UDP checksums; the edge knows the client's MAC, so the
        // program's FIB lookup succeeds from the first packet.
        let ok = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.client,
                "ethtool",
                "-K",
                "fc0",
                "tx",
                "off",
            ])
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "ethtool -K fc0 tx off");
        ip(&[
            "-n",
            &lab.edge,
            "neigh",
            "replace",
            "198.51.100.2",
            "lladdr",
            CLIENT_MAC,
            "dev",
            "fe0",
        ]);
        netns_sysctl(&lab.edge, "net.ipv4.conf.fe0.forwarding=1");
        let _ = std::fs::remove_dir_all(&lab.table);
        lab
    }

    fn netns(&self, n: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(n)
    }

    /// A UDP socket bound to `addr` in the client namespace.
    fn client_socket(&self, port: u16) -> UdpSocket {
        let ns = self.netns(&self.client);
        std::thread::spawn(move || {
            edgeway_xdp::enter_network_namespace(&ns).unwrap();
            let s = UdpSocket::bind(SocketAddrV4::new(CLIENT, port)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s
        })
        .join()
        .unwrap()
    }

    /// Loads the program with its maps pinned, programs the two flows and attaches it to
    /// the edge's veth through a pinned link, as the data plane does; then lets go of it.
    fn attach(&self) {
        let ns = self.netns(&self.edge);
        let pins = self.pins.clone();
        std::thread::spawn(move || {
            edgeway_xdp::enter_network_namespace(&ns).unwrap();
            let mut p = MediaProgram::load(Some(&pins)).unwrap();
            let mut demux = [0u16; 12];
            demux[0] = 2776;
            p.set_config(&XdpConfig {
                media_port_min: 36000,
                media_port_max: 59999,
                demux_ports: demux,
                mode: xdp_mode::RELAY | xdp_mode::STEER,
                noflow_window_ns: 0,
            })
            .unwrap();
            p.insert_flow(
                FlowKey::port(RELAYED),
                &FlowEntry {
                    flow_id: 7,
                    action: Action::Relay as u8,
                    flags: flags::LATCH,
                    permit_ip: CLIENT.octets(),
                    out_local_port: RELAYED,
                    out_remote: Endpoint::new(CLIENT.octets(), 7000),
                    generation: 1,
                    ..FlowEntry::default()
                },
            )
            .unwrap();
            p.insert_flow(
                FlowKey::port(DROPPING),
                &FlowEntry {
                    flow_id: 8,
                    action: Action::Drop as u8,
                    generation: 1,
                    ..FlowEntry::default()
                },
            )
            .unwrap();
            let ifindex = edgeway_xdp::interface_index("fe0").unwrap();
            p.add_tx_port(ifindex, None).unwrap();
            p.attach_pinned("fe0", true).unwrap();
        })
        .join()
        .unwrap();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Removing the pinned link detaches the program; the maps go with their pins.
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = std::fs::remove_dir_all(&self.table);
        for n in [&self.client, &self.edge] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend([0xd5u8; 160]);
    p
}

fn edgewayctl(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_edgewayctl"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "edgewayctl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn edgewayctl_json(args: &[&str]) -> Value {
    let text = edgewayctl(args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Sends `n` packets to the edge's `port`, 1 ms apart.
fn send(from: &UdpSocket, port: u16, ssrc: u32, n: u16) {
    for seq in 0..n {
        from.send_to(&rtp(ssrc, seq), SocketAddrV4::new(EDGE, port))
            .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn row<'a>(list: &'a Value, key: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no flow {key} in {list}"))
}

#[test]
fn the_live_view_shows_what_was_sent_through_the_attached_program() {
    if !root_or_skip("edgewayctl flows against an attached XDP program") {
        return;
    }
    let lab = Lab::new();
    lab.attach();
    let pins = lab.pins.display().to_string();
    let pin = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["--pin-dir".to_owned(), pins.clone()]);
        v
    };
    let run =
        |args: &[&str]| edgewayctl_json(&pin(args).iter().map(String::as_str).collect::<Vec<_>>());

    let media = lab.client_socket(5004);
    let back = lab.client_socket(7000);
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut got = 0;
        while let Ok((len, from)) = back.recv_from(&mut buf) {
            assert_eq!(from, SocketAddrV4::new(EDGE, RELAYED).into());
            if len == 172 {
                got += 1;
            }
            if got == 50 {
                break;
            }
        }
        got
    });
    send(&media, RELAYED, 1, 50);
    assert_eq!(receiver.join().unwrap(), 50, "relayed back in the kernel");
    send(&media, DROPPING, 2, 30);
    send(&media, 41000, 3, 20);

    let list = run(&["flows", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let r = row(&list, "40000");
    assert_eq!(r["action"], "relay");
    assert_eq!(r["rx_packets"], 50, "{r}");
    assert_eq!(r["tx_packets"], 50, "{r}");
    assert_eq!(r["rx_bytes"], 50 * 172, "{r}");
    assert_eq!(r["latched_src"], "198.51.100.2:5004", "{r}");
    assert_eq!(r["out_to"], "198.51.100.2:7000");
    let d = row(&list, "40002");
    assert_eq!(d["action"], "drop");
    assert_eq!(
        (d["rx_packets"].clone(), d["drops"].clone()),
        (30.into(), 30.into())
    );
    assert_eq!(d["latched_src"], Value::Null);

    let text = edgewayctl(
        &pin(&["flows", "list"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let line = text.lines().find(|l| l.starts_with("40000 ")).unwrap();
    for want in ["relay", "198.51.100.2:5004", " 50 "] {
        assert!(line.contains(want), "{want:?} in {line:?}");
    }
    assert!(text.contains("2 flows in the XDP map"), "{text}");

    let show = run(&["flows", "show", "40000", "--json"]);
    assert_eq!(show["latched_src"], "198.51.100.2:5004");
    assert_eq!(show["latched_ssrc"], "0x00000001");
    assert_eq!(show["entry"]["flow_id"], 7);
    assert_eq!(show["counters"]["tx_packets"], 50);
    let show = run(&["flows", "show", "40002", "--json"]);
    assert_eq!(show["counters"]["drops"]["action_drop"], 30);
    let missing = Command::new(env!("CARGO_BIN_EXE_edgewayctl"))
        .args(pin(&["flows", "show", "40004"]))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no flow 40004 in the XDP map"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    let drops = run(&["flows", "drops", "--json"]);
    assert_eq!(drops["rx_packets"], 100, "{drops}");
    assert_eq!(drops["relayed_packets"], 50, "{drops}");
    assert_eq!(drops["drops"]["no_flow"], 20, "{drops}");
    assert_eq!(drops["drops"]["action_drop"], 30, "{drops}");
    assert_eq!(drops["drops_total"], 50, "{drops}");
    let text = edgewayctl(
        &pin(&["flows", "drops"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let names: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names.len(), edgeway_map_schema::DROP_REASONS, "{text}");
    assert!(text.contains("  no_flow          20\n"), "{text}");

    // top: 40000 streams during the interval; 40002 gets a little; the rate is per second.
    let streamer = {
        let media = media.try_clone().unwrap();
        std::thread::spawn(move || {
            for seq in 0..600u16 {
                media
                    .send_to(&rtp(1, 100 + seq), SocketAddrV4::new(EDGE, RELAYED))
                    .unwrap();
                if seq % 20 == 0 {
                    media
                        .send_to(&rtp(2, seq), SocketAddrV4::new(EDGE, DROPPING))
                        .unwrap();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let top = run(&["flows", "top", "--interval", "0.5", "-n", "2", "--json"]);
    streamer.join().unwrap();
    let top = top.as_array().unwrap();
    assert_eq!(top.len(), 2, "{top:?}");
    assert_eq!(top[0]["key"], "40000", "{top:?}");
    assert_eq!(top[1]["key"], "40002", "{top:?}");
    let rate = top[0]["rx_pps"].as_f64().unwrap();
    assert!(
        (100.0..=600.0).contains(&rate),
        "about 400 packets/s sent (2 ms apart, minus scheduling): {rate}"
    );
    assert!(top[1]["rx_pps"].as_f64().unwrap() < rate / 5.0, "{top:?}");
    let top1 = run(&["flows", "top", "--interval", "0.1", "-n", "1", "--json"]);
    assert_eq!(top1.as_array().unwrap().len(), 1);

    status_reports_the_attach_state(&lab);
}

/// `status` from a table whose data plane is gone: not running, XDP generic on fe0 with the
/// pinned link running the program, and the consequence said once.
fn status_reports_the_attach_state(lab: &Lab) {
    FlowTable::create_at(&lab.table, &TableOptions::default()).unwrap();
    let dir = lab.table.display().to_string();
    let text = edgewayctl(&["status", "--shm-dir", &dir]);
    assert!(text.contains("data plane: not running"), "{text}");
    assert!(
        text.contains("xdp: unknown: no data plane has started on this table"),
        "{text}"
    );

    // What the data plane records when it attaches (dataplane/worker/src/xdp.rs).
    let mut s = XdpStatus::default();
    s.push_pin_dir(&lab.pins);
    s.push_attached(&XdpAttachment {
        interface: "fe0".into(),
        mode: "generic".into(),
        replaced: false,
    });
    s.write(&lab.table).unwrap();
    let v = edgewayctl_json(&["status", "--shm-dir", &dir, "--json"]);
    assert_eq!(v["dataplane"]["state"], "not running", "{v}");
    assert_eq!(v["xdp"]["mode"], "generic", "{v}");
    assert_eq!(v["xdp"]["pin_dir"], lab.pins.display().to_string(), "{v}");
    let links = v["xdp"]["links"].as_array().unwrap();
    assert_eq!(links.len(), 1, "{v}");
    assert_eq!(links[0]["interface"], "fe0");
    assert!(links[0]["program_id"].as_u64().unwrap() > 0, "{v}");
    let text = edgewayctl(&["status", "--shm-dir", &dir]);
    let xdp: Vec<&str> = text.lines().filter(|l| l.starts_with("xdp")).collect();
    assert_eq!(xdp.len(), 1, "said once: {text}");
    assert!(
        xdp[0].starts_with("xdp: generic: attached to fe0 (generic, pinned link"),
        "{text}"
    );
    assert!(xdp[0].contains("relay flows keep forwarding"), "{text}");

    // The pin directory recorded in the status is where `flows` looks by default.
    let list = edgewayctl_json(&["flows", "--shm-dir", &dir, "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 2);

    // The link removed: status says the program is no longer attached.
    std::fs::remove_file(lab.pins.join("link-fe0")).unwrap();
    let text = edgewayctl(&["status", "--shm-dir", &dir]);
    assert!(
        text.contains("xdp: none: fe0 detached (the data plane attached it generic"),
        "{text}"
    );
    XdpStatus::off("no such interface ewnosuch0")
        .write(&lab.table)
        .unwrap();
    let text = edgewayctl(&["status", "--shm-dir", &dir]);
    assert!(
        text.contains("xdp: none: no such interface ewnosuch0; the workers carry all media"),
        "{text}"
    );
}

/// `flows events` prints the data plane's event log, oldest first, and follows it.
#[test]
fn events_print_and_follow_the_event_log() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    use edgeway_flowtable::{event_json, EventLog};
    use edgeway_xdp::{xdp_event, XdpEvent};

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("flows-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = EventLog::new(&dir);
    let latched = XdpEvent {
        kind: xdp_event::LATCHED,
        count: 1,
        key: FlowKey::port(RELAYED),
        src: Endpoint::new(CLIENT.octets(), 5004),
        ktime_ns: 1,
    };
    let no_flow = XdpEvent {
        kind: xdp_event::NO_FLOW,
        count: 24_000,
        key: FlowKey::port(41000),
        src: Endpoint::new(CLIENT.octets(), 6000),
        ktime_ns: 2,
    };
    log.append(&[event_json(&latched, 1000), event_json(&no_flow, 2000)])
        .unwrap();
    let d = dir.display().to_string();
    let text = edgewayctl(&["flows", "--shm-dir", &d, "events"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "1000 flow 40000 latched 198.51.100.2:5004",
            "2000 24000 packet(s) for no flow, the last to port 41000 from 198.51.100.2:6000"
        ]
    );
    let json = edgewayctl(&["flows", "--shm-dir", &d, "events", "--json"]);
    let first: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "latched");
    assert_eq!(first["key"], "40000");

    let mut follower = Command::new(env!("CARGO_BIN_EXE_edgewayctl"))
        .args(["flows", "--shm-dir", &d, "events", "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(follower.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        out.read_line(&mut line).unwrap();
    }
    log.append(&[event_json(&no_flow, 3000)]).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    follower.kill().unwrap();
    let _ = follower.wait();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["time_ms"], 3000, "the appended event, followed: {line}");
    let _ = std::fs::remove_dir_all(&dir);
}
