//! `scripts/netns`, the deployment's hosts as namespaces, and the core role behind XDP on it.
//!
//! - both variants (dual-NIC edge; single-NIC edge behind a firewall host) come up, carry
//!   UDP between the hosts that should talk, are idempotent, and `down` leaves no namespace
//!   or state behind;
//! - on the core (re-key legs steered to the owning worker's CPU), a UDP scan of the whole
//!   media range reaches no socket (the core's `Udp NoPorts` and the workers' no-flow count
//!   do not move, XDP counts it as dropped) while a call beside it loses nothing.
//!
//! Needs root. Each test uses its own prefix, so they run in parallel with each other and
//! with the other namespace tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Command;

use common::*;
use edgeway_map_schema::{Action, DropReason, FlowKey, SrtpParams};
use edgeway_testkit::{repo_root, root_or_skip};
use edgeway_xdp::PinnedMaps;

fn netns_script(args: &[&str]) -> String {
    run_ok(&repo_root().join("scripts/netns"), args)
}

fn namespaces_with(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// A topology built by the script; `down` on drop, even when the test fails.
struct Built {
    prefix: String,
}

impl Built {
    fn up(prefix: String, variant: &str) -> Built {
        netns_script(&["up", variant, "--prefix", &prefix]);
        Built { prefix }
    }

    fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }
}

impl Drop for Built {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/netns"))
            .args(["down", "--prefix", &self.prefix])
            .output();
    }
}

/// One datagram from `from` (in host `a`) to `to` (bound in host `b`) arrives.
fn reaches(t: &Built, a: &str, from: Ipv4Addr, b: &str, to: SocketAddrV4) -> bool {
    let rx = socket_in(&t.ns(b), to);
    let tx = socket_in(&t.ns(a), SocketAddrV4::new(from, 0));
    // The first datagram may wait on ARP; a few tries.
    (0..5).any(|_| {
        tx.send_to(b"hello", to).unwrap();
        recv(&rx).is_some_and(|(p, _)| p == b"hello")
    })
}

/// The client reaches the edge's outside address, the core its inside one, the inside host
/// the core: the paths a deployment uses.
fn all_reach(t: &Built, edge_outside: Ipv4Addr, edge_inside: Ipv4Addr) {
    let client = Ipv4Addr::new(198, 51, 100, 2);
    let core = Ipv4Addr::new(10, 9, 0, 2);
    let inside = Ipv4Addr::new(10, 10, 0, 2);
    for (a, from, b, to) in [
        (
            "client",
            client,
            "edge",
            SocketAddrV4::new(edge_outside, 5061),
        ),
        ("core", core, "edge", SocketAddrV4::new(edge_inside, 7001)),
        ("inside", inside, "core", SocketAddrV4::new(core, 5060)),
    ] {
        assert!(reaches(t, a, from, b, to), "{a} -> {b} {to}");
    }
}

#[test]
fn scripts_netns_builds_both_variants_idempotently_and_leaves_nothing_behind() {
    if !root_or_skip("scripts/netns topologies") {
        return;
    }
    let prefix = format!("ewt{}-", std::process::id());
    {
        let t = Built::up(prefix.clone(), "--dual");
        assert_eq!(namespaces_with(&prefix).len(), 4);
        let again = netns_script(&["up", "--dual", "--prefix", &prefix]);
        assert!(again.contains("already up"), "{again}");
        let edge_out = Ipv4Addr::new(198, 51, 100, 1);
        let edge_in = Ipv4Addr::new(10, 9, 0, 1);
        all_reach(&t, edge_out, edge_in);
        // Each host keeps its ephemeral ports out of the media range.
        let range = Command::new("ip")
            .args(["netns", "exec", &t.ns("edge"), "sysctl", "-n"])
            .arg("net.ipv4.ip_local_port_range")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&range.stdout)
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["20000", "35999"]
        );

        // Another variant under the same prefix replaces this one.
        let t = Built::up(prefix.clone(), "--single");
        assert_eq!(namespaces_with(&prefix).len(), 5, "the firewall host too");
        let edge = Ipv4Addr::new(192, 0, 2, 1);
        all_reach(&t, edge, edge);
    }
    assert_eq!(
        namespaces_with(&prefix),
        Vec::<String>::new(),
        "down left namespaces"
    );
    assert!(
        !PathBuf::from(format!("/run/edgeway-netns/{prefix}variant")).exists(),
        "down left its state"
    );
    let again = netns_script(&["down", "--prefix", &prefix]);
    assert!(again.is_empty(), "down twice is quiet: {again}");
}

#[test]
fn a_scan_of_the_core_media_range_reaches_no_socket_and_the_call_beside_it_loses_nothing() {
    if !root_or_skip("XDP on the core role across namespaces") {
        return;
    }
    let t = Built::up(format!("ewk{}-", std::process::id()), "--dual");
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/edgeway-test-core-{}",
        std::process::id()
    ));
    let core = Ipv4Addr::new(10, 9, 0, 2);
    let edge = Ipv4Addr::new(10, 9, 0, 1);
    let dp = Dataplane::start_with_xdp(&t.ns("core"), "core", "k0", &pins);
    // One re-key leg (plain in, plain out: the steering is what is under test): the edge's
    // media to the core's 36002 leaves from 36002 towards the edge's 5000.
    let port = 36002;
    let sink = SocketAddrV4::new(edge, 5000);
    let leg = entry(
        1,
        Action::Rekey,
        0,
        port,
        Some(sink),
        FlowKey::port(port),
        SrtpParams::PLAIN,
        SrtpParams::PLAIN,
    );
    dp.insert(FlowKey::port(port), leg);
    dp.settle();
    let status = std::fs::read_to_string(dp.dir.join("xdp")).unwrap();
    assert!(status.contains("attached to k0 (generic)"), "{status}");

    let media = socket_in(&t.ns("edge"), SocketAddrV4::new(edge, 6000));
    let rx = socket_in(&t.ns("edge"), sink);
    let to = SocketAddrV4::new(core, port);
    send_until_forwarded(&media, to, &rtp(1, 0, 0), &rx);
    let xdp = PinnedMaps::open(&pins).unwrap();
    let before = xdp.counters().unwrap();
    let no_ports = udp_no_ports(&t.ns("core"));
    let worker_no_flow = dp.node_drops(DropReason::NoFlow);

    let scanner = socket_in(&t.ns("edge"), SocketAddrV4::new(edge, 6001));
    let scan = scan_media_range(scanner, core, &[]);
    let during = stream(&media, to, &rx, 5, 500);
    let sent = scan.join().unwrap();
    assert_eq!(during, 500, "the re-key call lost packets during the scan");
    let after = xdp.counters().unwrap();
    let dropped =
        after.drops[DropReason::NoFlow.index()] - before.drops[DropReason::NoFlow.index()];
    // 36002 has a flow: its scan packet is steered to the worker, which refuses it as not RTP.
    assert_eq!(
        dropped,
        sent - 1,
        "every scan packet for no flow dropped in XDP"
    );
    assert!(
        after.steered_packets - before.steered_packets >= 501,
        "the call and one scan packet steered to the worker's CPU: {after:?}"
    );
    // The live view counts the re-key leg too (edgewayctl flows list/top read this).
    let leg = xdp.flow_counters(FlowKey::port(port)).unwrap().unwrap();
    assert!(leg.rx_packets >= 502, "{leg:?}");
    assert_scan_reached_no_socket(&t.ns("core"), &dp, no_ports, worker_no_flow);
    drop(dp);
    drop(xdp);
    let _ = std::fs::remove_dir_all(&pins);
}
