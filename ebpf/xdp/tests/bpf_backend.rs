//! The flow table's BPF backend (`edgeway_xdp::open_table`): a writer's insert and remove
//! reach the program's pinned `flows` map in the same call, so the program's verdict on the
//! very next packet follows the table with no data plane running at all.
//!
//! Needs root (loading BPF); under `CI=true` it fails rather than skip. The pins and the
//! table directory are the test's own and removed at the end.

use std::path::{Path, PathBuf};

use edgeway_flowtable::{FlowTable, TableOptions, XdpStatus};
use edgeway_map_schema::{xdp_mode, Action, DropReason, FlowEntry, FlowKey};
use edgeway_testkit::root_or_skip;
use edgeway_xdp::{action, Error, MediaProgram, XdpConfig};
use etherparse::PacketBuilder;

/// Removes the test's pins and table directory, whatever happened.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn frame(dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x50], [2, 0xee, 0, 0, 0, 1])
        .ipv4([192, 0, 2, 50], [192, 0, 2, 10], 61)
        .udp(5004, dport);
    let mut rtp = vec![0x80, 0x00, 0, 1, 0, 0, 3, 232, 0, 0, 0, 9];
    rtp.extend_from_slice(&[0xd5; 20]);
    let mut out = Vec::new();
    b.write(&mut out, &rtp).expect("building a frame");
    out
}

/// Runs the program on a packet to `port` and returns which drop counter moved.
fn verdict(prog: &MediaProgram, port: u16) -> Option<DropReason> {
    let before = prog.counters().expect("counters").drops;
    let out = prog.test_run(&frame(port), 0).expect("test run");
    let after = prog.counters().expect("counters").drops;
    let moved = DropReason::ALL
        .iter()
        .copied()
        .find(|r| after[r.index()] != before[r.index()]);
    if moved.is_some() {
        assert_eq!(out.action, action::DROP, "a counted drop is XDP_DROP");
    }
    moved
}

fn loaded(pins: &Path) -> MediaProgram {
    let mut prog = MediaProgram::load(Some(pins)).expect("loading the program");
    prog.set_config(&XdpConfig {
        media_port_min: 36000,
        media_port_max: 59999,
        demux_ports: [0; edgeway_map_schema::XDP_MAX_DEMUX_PORTS],
        mode: xdp_mode::RELAY | xdp_mode::STEER,
        noflow_window_ns: 0,
    })
    .expect("config");
    prog
}

#[test]
fn a_writers_insert_and_remove_reach_the_pinned_flow_map_in_the_same_call() {
    if !root_or_skip("the flow table's BPF backend") {
        return;
    }
    let pid = std::process::id();
    let pins = PathBuf::from(format!("/sys/fs/bpf/edgeway-backend-test-{pid}"));
    let dir = PathBuf::from(format!("/dev/shm/edgeway-backend-test-{pid}"));
    let _cleanup = Cleanup(vec![pins.clone(), dir.clone()]);
    let _ = std::fs::remove_dir_all(&dir);
    let prog = loaded(&pins);
    drop(FlowTable::create_at(&dir, &TableOptions::default()).expect("a table"));

    // Without a recorded pin directory (and none for this node under /sys/fs/bpf/edgeway)
    // the writer gets a plain table; naming a directory without pins is an error.
    let (plain, at) = edgeway_xdp::open_table(&dir, None).expect("plain table");
    assert!(at.is_none() && plain.map_hook().is_none());
    let missing = edgeway_xdp::open_table(&dir, Some(&pins.join("nothing-here")));
    assert!(
        matches!(missing, Err(Error::NotPinned { .. })),
        "{missing:?}"
    );

    // The data plane records where it pinned the maps; writers find them there.
    let mut status = XdpStatus::default();
    status.push_pin_dir(&pins);
    status.write(&dir).expect("status");
    let (table, at) = edgeway_xdp::open_table(&dir, None).expect("table with the BPF backend");
    assert_eq!(at.as_deref(), Some(pins.as_path()));
    let described = table.map_hook().expect("a hook").describe();
    assert!(
        described.contains(&pins.display().to_string()),
        "{described}"
    );

    let key = FlowKey::port(41000);
    assert_eq!(verdict(&prog, 41000), Some(DropReason::NoFlow));
    let entry = FlowEntry {
        flow_id: 9,
        action: Action::Drop as u8,
        ..FlowEntry::default()
    };
    table.insert(key, entry).expect("insert");
    // No mirror runs: the entry is in the map because insert wrote it.
    let in_map = prog.flow(key).expect("lookup").expect("in the map at once");
    let (_, in_table) = table.lookup(&key).expect("in the table");
    assert_eq!(in_map.generation, in_table.generation);
    assert_eq!(in_map.flow_id, 9);
    assert_eq!(verdict(&prog, 41000), Some(DropReason::ActionDrop));
    assert!(prog.flow_counters(key).expect("counters").is_some());

    // A replace bumps the generation in both.
    let relay = FlowEntry {
        flow_id: 10,
        ..entry
    };
    table.insert(key, relay).expect("replace");
    let in_map = prog.flow(key).expect("lookup").expect("still there");
    assert_eq!(
        (in_map.generation, in_map.flow_id),
        (in_table.generation + 1, 10)
    );

    // Remove takes the entry and its counters out of the map in the call.
    table.remove(&key).expect("remove").expect("it was there");
    assert_eq!(prog.flow(key).expect("lookup"), None);
    assert!(prog.flow_counters(key).expect("counters").is_none());
    assert_eq!(verdict(&prog, 41000), Some(DropReason::NoFlow));

    // A writer that opens after the pins are gone gets a plain table again.
    drop(prog);
    std::fs::remove_dir_all(&pins).expect("unpinning");
    let (after, at) = edgeway_xdp::open_table(&dir, None).expect("opening without pins");
    assert!(at.is_none() && after.map_hook().is_none());
}
