//! `MediaProgram::inject_live`, the perf-lab generator: live frames arriving on a veth run
//! through the program and are counted like received ones. Needs root; under `CI=true` it
//! fails rather than skip. The namespace is the test's own and removed at the end.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use edgeway_map_schema::{xdp_mode, DropReason};
use edgeway_testkit::{ip, root_or_skip};
use edgeway_xdp::{MediaProgram, XdpConfig};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn live_frames_run_through_the_program_and_are_counted() {
    if !root_or_skip("XDP live frames") {
        return;
    }
    let ns = Netns(format!("ewlive-{}", std::process::id()));
    let _ = Command::new("ip").args(["netns", "del", &ns.0]).output();
    ip(&["netns", "add", &ns.0]);
    ip(&[
        "-n", &ns.0, "link", "add", "lv0", "type", "veth", "peer", "name", "lv1",
    ]);
    for dev in ["lv0", "lv1"] {
        ip(&["-n", &ns.0, "link", "set", dev, "up"]);
    }
    let path = PathBuf::from("/run/netns").join(&ns.0);
    let counters = std::thread::spawn(move || {
        edgeway_xdp::enter_network_namespace(&path).unwrap();
        let mut p = MediaProgram::load(None).unwrap();
        p.set_config(&XdpConfig {
            media_port_min: 36000,
            media_port_max: 59999,
            mode: xdp_mode::RELAY,
            ..XdpConfig::default()
        })
        .unwrap();
        let frame = {
            let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([198, 51, 100, 2], [198, 51, 100, 1], 64)
                .udp(5004, 41000);
            let mut v = Vec::new();
            b.write(&mut v, &[0x80; 172]).unwrap();
            v
        };
        let ifindex = edgeway_xdp::interface_index("lv0").unwrap();
        let per_frame = p.inject_live(&frame, ifindex, 1000, 64).unwrap();
        assert!(per_frame.as_nanos() > 0, "the kernel timed the run");
        p.counters().unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(counters.rx_packets, 1000, "{counters:?}");
    assert_eq!(
        counters.drops[DropReason::NoFlow.index()],
        1000,
        "every frame for no flow dropped: {counters:?}"
    );
}
