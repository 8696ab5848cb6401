//! Packet fixtures through `BPF_PROG_TEST_RUN`: for every path of `media.bpf.c` and every
//! drop reason it can give, an input frame, the expected action, and (for relayed frames)
//! the exact expected output frame, built independently with etherparse.
//!
//! Needs root (loading BPF). The routes and neighbours that the program's FIB lookup sees
//! live in a network namespace of the test's own (two veth pairs: `e0` towards clients and
//! the core on 192.0.2.0/24, `e1` towards an inside network on 10.9.0.0/24 for the dual-NIC
//! case); the test thread enters it and it is deleted at the end.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use edgeway_map_schema::{flags, xdp_mode, Action, DropReason, Endpoint, FlowEntry, FlowKey};
use edgeway_testkit::{ip, netns_sysctl, root_or_skip};
use edgeway_xdp::{action, xdp_event, MediaProgram, TestOutcome, XdpConfig};
use etherparse::PacketBuilder;

const EDGE: [u8; 4] = [192, 0, 2, 10];
const EDGE_INSIDE: [u8; 4] = [10, 9, 0, 10];
const CLIENT: [u8; 4] = [192, 0, 2, 50];
const CORE: [u8; 4] = [192, 0, 2, 20];
const INSIDE_HOST: [u8; 4] = [10, 9, 0, 20];
const STRANGER: [u8; 4] = [192, 0, 2, 66];
const E0_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x01];
const E1_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x50];
const CORE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];
const INSIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x21];

/// The test's namespace; deleted on drop, whatever happened.
struct Lab {
    name: String,
}

impl Lab {
    fn new() -> Lab {
        let name = format!("ewxdp-fix-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let lab = Lab { name };
        let n = lab.name.as_str();
        for (dev, peer, mac, addr) in [
            ("e0", "e0p", mac_str(E0_MAC), "192.0.2.10/24"),
            ("e1", "e1p", mac_str(E1_MAC), "10.9.0.10/24"),
        ] {
            ip(&[
                "-n", n, "link", "add", dev, "address", &mac, "type", "veth", "peer", "name", peer,
            ]);
            ip(&["-n", n, "addr", "add", addr, "dev", dev]);
            ip(&["-n", n, "link", "set", dev, "up"]);
            ip(&["-n", n, "link", "set", peer, "up"]);
        }
        // The program's FIB lookup, like the kernel's own forwarding, wants forwarding on the
        // interfaces it relays between (the data plane warns where it is off).
        for dev in ["e0", "e1"] {
            netns_sysctl(n, &format!("net.ipv4.conf.{dev}.forwarding=1"));
        }
        for (addr, mac, dev) in [
            ("192.0.2.50", CLIENT_MAC, "e0"),
            ("192.0.2.20", CORE_MAC, "e0"),
            ("192.0.2.66", CLIENT_MAC, "e0"),
            ("10.9.0.20", INSIDE_MAC, "e1"),
        ] {
            ip(&[
                "-n",
                n,
                "neigh",
                "replace",
                addr,
                "lladdr",
                &mac_str(mac),
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
        lab
    }

    fn ifindex(&self, dev: &str) -> u32 {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-j", "link", "show", dev])
            .output()
            .expect("ip link show");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        v[0]["ifindex"].as_u64().expect("an ifindex") as u32
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An Ethernet/IPv4/UDP frame with correct checksums and TTL `ttl`.
#[allow(clippy::too_many_arguments)]
fn udp_frame(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src, dst, ttl)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("building a frame");
    out
}

/// A frame from `src:sport` to the edge's `dport` on e0.
fn inbound(src: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    udp_frame(CLIENT_MAC, E0_MAC, src, sport, EDGE, dport, 61, payload)
}

/// An RTP packet: version 2, PT 0, `seq`, SSRC `ssrc`, 20 bytes of audio.
fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&1000u32.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xd5; 20]);
    p
}

fn relay_entry(
    generation: u32,
    out_local_port: u16,
    out_remote: Endpoint,
    peer: FlowKey,
) -> FlowEntry {
    FlowEntry {
        flow_id: 7,
        generation,
        action: Action::Relay as u8,
        flags: flags::LATCH,
        permit_ip: CLIENT,
        out_local_port,
        out_remote,
        peer,
        ..FlowEntry::default()
    }
}

struct Bench {
    prog: MediaProgram,
    e0: u32,
}

impl Bench {
    fn run(&self, frame: &[u8]) -> TestOutcome {
        self.prog.test_run(frame, self.e0).expect("test run")
    }

    fn expect_drop(&self, what: &str, frame: &[u8], reason: DropReason) {
        let before = self.prog.counters().expect("counters").drops[reason.index()];
        let out = self.run(frame);
        assert_eq!(out.action, action::DROP, "{what}: expected a drop");
        let after = self.prog.counters().expect("counters").drops[reason.index()];
        assert_eq!(after, before + 1, "{what}: {} not counted", reason.name());
    }

    fn expect_pass_unchanged(&self, what: &str, frame: &[u8]) {
        let out = self.run(frame);
        assert_eq!(out.action, action::PASS, "{what}: expected XDP_PASS");
        assert_eq!(out.packet, frame, "{what}: a passed frame is not touched");
    }
}

#[test]
fn every_path_and_drop_reason_through_prog_test_run() {
    if !root_or_skip("XDP packet fixtures") {
        return;
    }
    let lab = Lab::new();
    let e0 = lab.ifindex("e0");
    let e1 = lab.ifindex("e1");
    edgeway_xdp::enter_network_namespace(&lab.path()).expect("entering the lab namespace");
    let mut prog = MediaProgram::load(None).expect("loading media.bpf.o");
    let mut demux = [0u16; 12];
    demux[0] = 2776;
    demux[1] = 2777;
    prog.set_config(&XdpConfig {
        media_port_min: 36000,
        media_port_max: 59999,
        demux_ports: demux,
        mode: xdp_mode::RELAY | xdp_mode::STEER,
        noflow_window_ns: 0,
    })
    .expect("config");
    let mut b = Bench { prog, e0 };

    // Not ours: passes untouched.
    let mut arp = inbound(CLIENT, 5000, 5061, b"");
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    b.expect_pass_unchanged("ARP", &arp);
    b.expect_pass_unchanged(
        "SIP over UDP",
        &inbound(CLIENT, 5060, 5061, b"OPTIONS sip:x SIP/2.0\r\n"),
    );
    let tcp = {
        let bld = PacketBuilder::ethernet2(CLIENT_MAC, E0_MAC)
            .ipv4(CLIENT, EDGE, 61)
            .tcp(40000, 40000, 1, 1000);
        let mut v = Vec::new();
        bld.write(&mut v, b"x").expect("tcp frame");
        v
    };
    b.expect_pass_unchanged("TCP to a media port", &tcp);

    // Nothing programmed: the whole media range is closed, and says so in an event.
    b.expect_drop(
        "no flow",
        &inbound(STRANGER, 9, 40000, &rtp(1, 1)),
        DropReason::NoFlow,
    );
    b.expect_drop(
        "no flow, demux",
        &inbound(STRANGER, 9, 2776, &rtp(1, 1)),
        DropReason::NoFlow,
    );
    let mut events = Vec::new();
    b.prog.drain_events(&mut events).expect("events");
    let no_flow: Vec<_> = events
        .iter()
        .filter(|e| e.kind == xdp_event::NO_FLOW)
        .collect();
    // One event per burst window per CPU; the test thread may move between the two CPUs.
    assert!(
        (1..=2).contains(&no_flow.len()),
        "one event per burst window and CPU: {events:?}"
    );
    assert_eq!(no_flow[0].key.local_port, 40000);
    assert_eq!(no_flow[0].src, Endpoint::new(STRANGER, 9));

    // Blocked sources die first, whatever they carry.
    b.prog.block(Ipv4Addr::from(STRANGER)).expect("block");
    b.expect_drop(
        "blocked, media",
        &inbound(STRANGER, 9, 40000, &rtp(1, 1)),
        DropReason::BlockedSource,
    );
    b.expect_drop(
        "blocked, SIP",
        &inbound(STRANGER, 9, 5061, b"x"),
        DropReason::BlockedSource,
    );
    assert!(b.prog.unblock(Ipv4Addr::from(STRANGER)).expect("unblock"));

    // The edge's two legs of one stream: client -> 40000 -> core's demux 2776 from port
    // 40002, and core -> demux 2776 (key: the core's address and port) -> client's latch.
    let client_leg = FlowKey::port(40000);
    let core_leg = FlowKey::demux(2776, CORE, 36000);
    b.prog
        .insert_flow(
            client_leg,
            &relay_entry(1, 40002, Endpoint::new(CORE, 2776), core_leg),
        )
        .expect("insert");
    let mut back = relay_entry(1, 40000, Endpoint::default(), client_leg);
    back.flags = 0;
    b.prog.insert_flow(core_leg, &back).expect("insert");

    // Before the client latched, the core's media has nowhere to go.
    b.expect_drop(
        "core leg before the client latched",
        &udp_frame(CORE_MAC, E0_MAC, CORE, 36000, EDGE, 2776, 61, &rtp(1, 9)),
        DropReason::NotLatched,
    );
    // A stranger cannot take the latch.
    b.expect_drop(
        "latch from a foreign source",
        &inbound(STRANGER, 5004, 40000, &rtp(1, 5)),
        DropReason::ForeignSource,
    );
    // Malformed media on a programmed port.
    let mut v1 = rtp(1, 5);
    v1[0] = 0x40;
    b.expect_drop(
        "RTP version 1",
        &inbound(CLIENT, 5004, 40000, &v1),
        DropReason::Malformed,
    );
    let mut ext = rtp(1, 5);
    ext[0] |= 0x10; // extension bit with a length running past the packet
    ext[12..16].copy_from_slice(&[0xbe, 0xde, 0x00, 0xff]);
    b.expect_drop(
        "RTP extension past the end",
        &inbound(CLIENT, 5004, 40000, &ext),
        DropReason::Malformed,
    );
    let mut short_udp = inbound(CLIENT, 5004, 40000, &rtp(1, 5));
    short_udp[38..40].copy_from_slice(&20u16.to_be_bytes()); // UDP length disagrees with IP
    b.expect_drop("UDP length mismatch", &short_udp, DropReason::Malformed);
    let mut frag = inbound(CLIENT, 5004, 40000, &rtp(1, 5));
    frag[20] |= 0x20; // more fragments
    b.expect_drop("first fragment", &frag, DropReason::Malformed);

    // The client's first packet latches and is relayed to the core, rewritten exactly.
    let out = b.run(&inbound(CLIENT, 5004, 40000, &rtp(1, 5)));
    assert_eq!(out.action, action::TX, "relayed back out of e0");
    let want = udp_frame(E0_MAC, CORE_MAC, EDGE, 40002, CORE, 2776, 64, &rtp(1, 5));
    assert_eq!(out.packet, want, "client -> core, rewritten with checksums");
    let latch = b.prog.latch(client_leg).expect("latch").expect("latched");
    assert_eq!(latch.source(1), Some(Endpoint::new(CLIENT, 5004)));
    events.clear();
    b.prog.drain_events(&mut events).expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.kind == xdp_event::LATCHED && e.key == client_leg),
        "latch event: {events:?}"
    );
    // Now the other source is foreign, and the core's media reaches the latched client.
    b.expect_drop(
        "foreign after latching",
        &inbound(CLIENT, 5006, 40000, &rtp(2, 5)),
        DropReason::ForeignSource,
    );
    let out = b.run(&udp_frame(
        CORE_MAC,
        E0_MAC,
        CORE,
        36000,
        EDGE,
        2776,
        61,
        &rtp(7, 9),
    ));
    assert_eq!(out.action, action::TX);
    assert_eq!(
        out.packet,
        udp_frame(
            E0_MAC,
            CLIENT_MAC,
            EDGE,
            40000,
            CLIENT,
            5004,
            64,
            &rtp(7, 9)
        ),
        "core -> latched client"
    );
    // A UDP checksum of zero (none) stays zero.
    let mut nocsum = udp_frame(CORE_MAC, E0_MAC, CORE, 36000, EDGE, 2776, 61, &rtp(8, 9));
    nocsum[40..42].copy_from_slice(&[0, 0]);
    let out = b.run(&nocsum);
    assert_eq!(out.action, action::TX);
    assert_eq!(&out.packet[40..42], &[0, 0], "no checksum stays none");
    // Keepalives are consumed and counted.
    let ka_before = b.prog.counters().expect("counters").keepalives_rx;
    let out = b.run(&inbound(CLIENT, 5004, 40000, b""));
    assert_eq!(out.action, action::DROP);
    assert_eq!(
        b.prog.counters().expect("counters").keepalives_rx,
        ka_before + 1
    );
    let c = b
        .prog
        .flow_counters(client_leg)
        .expect("counters")
        .expect("some");
    assert_eq!((c.tx_packets, c.keepalives_rx), (1, 1), "{c:?}");
    assert_eq!(c.drops[DropReason::ForeignSource.index()], 2);
    assert_eq!(
        c.drops[DropReason::Malformed.index()],
        2,
        "RTP version and extension"
    );

    // SSRC lock: another SSRC from the latched source is refused.
    let locked = FlowKey::port(40010);
    let mut e = relay_entry(1, 40012, Endpoint::new(CORE, 2776), core_leg);
    e.flags |= flags::SSRC_LOCK;
    b.prog.insert_flow(locked, &e).expect("insert");
    assert_eq!(
        b.run(&inbound(CLIENT, 6000, 40010, &rtp(1, 77))).action,
        action::TX
    );
    b.expect_drop(
        "another SSRC",
        &inbound(CLIENT, 6000, 40010, &rtp(2, 78)),
        DropReason::WrongSsrc,
    );
    assert_eq!(
        b.run(&inbound(CLIENT, 6000, 40010, &rtp(3, 77))).action,
        action::TX
    );

    // A new generation of the entry forgets the old latch: another permitted port latches.
    b.prog
        .insert_flow(
            client_leg,
            &relay_entry(2, 40002, Endpoint::new(CORE, 2776), core_leg),
        )
        .expect("update");
    assert_eq!(
        b.run(&inbound(CLIENT, 5008, 40000, &rtp(1, 5))).action,
        action::TX
    );
    let latch = b.prog.latch(client_leg).expect("latch").expect("latched");
    assert_eq!(latch.source(2), Some(Endpoint::new(CLIENT, 5008)));

    // No neighbour for the destination yet: the worker relays it (the kernel resolves ARP).
    let unresolved = FlowKey::port(40020);
    let mut e = relay_entry(1, 40022, Endpoint::new([192, 0, 2, 99], 2776), core_leg);
    e.flags = 0;
    b.prog.insert_flow(unresolved, &e).expect("insert");
    b.expect_pass_unchanged("no neighbour", &inbound(CLIENT, 5004, 40020, &rtp(1, 5)));

    // Dual-NIC: the inside host is behind e1. Only an interface in tx_ports may take it.
    let inside = FlowKey::port(40030);
    let mut e = relay_entry(1, 40032, Endpoint::new(INSIDE_HOST, 2776), core_leg);
    e.flags = 0;
    b.prog.insert_flow(inside, &e).expect("insert");
    b.expect_pass_unchanged(
        "egress not allowed",
        &inbound(CLIENT, 5004, 40030, &rtp(1, 5)),
    );
    b.prog
        .add_tx_port(e1, Some(Ipv4Addr::from(EDGE_INSIDE)))
        .expect("tx port");
    let out = b.run(&inbound(CLIENT, 5004, 40030, &rtp(1, 5)));
    assert_eq!(out.action, action::REDIRECT, "through the DEVMAP to e1");
    assert_eq!(
        out.packet,
        udp_frame(
            E1_MAC,
            INSIDE_MAC,
            EDGE_INSIDE,
            40032,
            INSIDE_HOST,
            2776,
            64,
            &rtp(1, 5)
        ),
        "rewritten with e1's address and MACs"
    );

    // Re-key legs go to their worker's CPU, or pass where they arrived without steering.
    let rekey = FlowKey::port(40040);
    let e = FlowEntry {
        action: Action::Rekey as u8,
        worker: 1,
        out_local_port: 40042,
        out_remote: Endpoint::new(CORE, 2776),
        ..FlowEntry::default()
    };
    b.prog.insert_flow(rekey, &e).expect("insert");
    b.expect_pass_unchanged(
        "re-key, worker CPU unknown",
        &inbound(CLIENT, 5004, 40040, &rtp(1, 5)),
    );
    b.prog.set_worker_cpu(1, 0).expect("worker cpu");
    let steered = b.prog.counters().expect("counters").steered_packets;
    assert_eq!(
        b.run(&inbound(CLIENT, 5004, 40040, &rtp(1, 5))).action,
        action::REDIRECT
    );
    assert_eq!(
        b.prog.counters().expect("counters").steered_packets,
        steered + 1
    );
    // Counted per flow as well, passed or steered, for the live view.
    let c = b
        .prog
        .flow_counters(rekey)
        .expect("counters")
        .expect("some");
    assert_eq!((c.rx_packets, c.rx_bytes), (2, 2 * 32), "{c:?}");

    // Relay off (the workers carry all media): relay legs pass to the stack untouched.
    let mut cfg = b.prog.config().expect("config");
    cfg.mode = xdp_mode::STEER;
    b.prog.set_config(&cfg).expect("config");
    b.expect_pass_unchanged(
        "relay off",
        &udp_frame(CORE_MAC, E0_MAC, CORE, 36000, EDGE, 2776, 61, &rtp(9, 9)),
    );
    cfg.mode = xdp_mode::RELAY | xdp_mode::STEER;
    b.prog.set_config(&cfg).expect("config");

    // Drop entries and damaged entries.
    let dropping = FlowKey::port(40050);
    b.prog
        .insert_flow(
            dropping,
            &FlowEntry {
                action: Action::Drop as u8,
                ..FlowEntry::default()
            },
        )
        .expect("insert");
    b.expect_drop(
        "action drop",
        &inbound(CLIENT, 5004, 40050, &rtp(1, 5)),
        DropReason::ActionDrop,
    );
    b.prog
        .insert_flow(
            FlowKey::port(40060),
            &FlowEntry {
                action: 9,
                ..FlowEntry::default()
            },
        )
        .expect("insert");
    b.expect_drop(
        "unknown action",
        &inbound(CLIENT, 5004, 40060, &rtp(1, 5)),
        DropReason::BadEntry,
    );

    // Removal closes the port again and takes the entry's latch and counters with it.
    assert!(b.prog.remove_flow(client_leg).expect("remove"));
    assert_eq!(b.prog.latch(client_leg).expect("latch"), None);
    assert_eq!(b.prog.flow_counters(client_leg).expect("counters"), None);
    b.expect_drop(
        "removed",
        &inbound(CLIENT, 5008, 40000, &rtp(2, 5)),
        DropReason::NoFlow,
    );
    assert!(!b.prog.remove_flow(client_leg).expect("remove twice"));

    let total = b.prog.counters().expect("counters");
    assert!(total.relayed_packets >= 6, "{total:?}");
    assert!(total.rx_packets > total.relayed_packets);
}

/// The maps outlive the process that made them: a second load of the same node finds the
/// flows, latches and counters of the first (how a restarted data plane keeps calls).
#[test]
fn pinned_maps_survive_the_loader_and_are_root_only() {
    if !root_or_skip("XDP map pinning") {
        return;
    }
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/edgeway-test-{}/n1",
        std::process::id()
    ));
    let parent = dir.parent().expect("a parent").to_owned();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(parent);
    let key = FlowKey::port(41000);
    {
        let mut prog = MediaProgram::load(Some(&dir)).expect("first load");
        prog.insert_flow(key, &relay_entry(3, 41002, Endpoint::new(CORE, 2776), key))
            .expect("insert");
        prog.block(Ipv4Addr::from(STRANGER)).expect("block");
    }
    for map in [
        "flows",
        "latches",
        "flow_stats",
        "node_stats",
        "blocked",
        "config",
        "events",
    ] {
        assert!(dir.join(map).exists(), "{map} is pinned");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir)
        .expect("pin dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "pins are root's alone");
    let prog = MediaProgram::load(Some(&dir)).expect("second load");
    let entry = prog
        .flow(key)
        .expect("lookup")
        .expect("the flow is still there");
    assert_eq!((entry.generation, entry.out_local_port), (3, 41002));
    assert_eq!(prog.flow_keys().expect("keys"), vec![key]);
}
