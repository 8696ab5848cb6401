//! PortAllocator: parity, exclusion, quarantine, round-robin, exhaustion, persistence.

mod common;

use common::table;
use edgeway_flowtable::{Error, FlowTable, PortState, TableOptions};

fn opts(range: (u16, u16), excluded: &[u16], quarantine_ms: u64) -> TableOptions {
    let mut o = TableOptions::default();
    o.capacity = 8;
    o.port_range = range;
    o.excluded_ports = excluded.to_vec();
    o.port_quarantine_ms = quarantine_ms;
    o
}

#[test]
fn pairs_are_even_odd_round_robin_and_skip_excluded_ports() {
    let (_d, t) = table("ports-rr", &opts((36000, 36011), &[36000, 36001], 1000));
    let ports = t.ports();
    let got: Vec<u16> = (0..5)
        .map(|_| ports.allocate_pair(0).expect("pair"))
        .collect();
    assert_eq!(got, vec![36002, 36004, 36006, 36008, 36010]);
    for p in &got {
        assert_eq!(p % 2, 0, "RTP port is even");
        assert_eq!(ports.state(*p, 0), PortState::InUse);
        assert_eq!(ports.state(p + 1, 0), PortState::InUse);
    }
    assert_eq!(ports.state(36000, 0), PortState::Excluded);
    match ports.allocate_pair(0) {
        Err(Error::PortsExhausted {
            min: 36000,
            max: 36011,
            in_use: 10,
            quarantined: 0,
            excluded: 2,
        }) => {}
        other => panic!("expected exhaustion, got {other:?}"),
    }
    // Released pairs wait out their quarantine, then come back in round-robin order.
    ports.release_pair(36004, 100).expect("release");
    ports.release_pair(36008, 100).expect("release");
    assert_eq!(
        ports.state(36005, 500),
        PortState::Quarantined { until_ms: 1100 }
    );
    let err = ports.allocate_pair(500).expect_err("both in quarantine");
    assert!(err.to_string().contains("4 in quarantine"), "{err}");
    assert_eq!(ports.allocate_pair(1100).expect("after quarantine"), 36004);
    assert_eq!(ports.allocate_pair(1100).expect("next"), 36008);
}

#[test]
fn a_just_released_pair_is_the_last_reused() {
    let (_d, t) = table("ports-last", &opts((30000, 30009), &[], 0));
    let ports = t.ports();
    let a = ports.allocate_pair(0).expect("a");
    assert_eq!(a, 30000);
    ports.release_pair(a, 0).expect("release");
    // No quarantine here: still, every other free pair comes first.
    let next: Vec<u16> = (0..4)
        .map(|_| ports.allocate_pair(10).expect("pair"))
        .collect();
    assert_eq!(next, vec![30002, 30004, 30006, 30008]);
    assert_eq!(
        ports.allocate_pair(10).expect("wraps to the released one"),
        30000
    );
}

#[test]
fn reserve_release_and_their_refusals() {
    let (_d, t) = table(
        "ports-reserve",
        &opts((36000, 36019), &[36000, 36001], 60_000),
    );
    let ports = t.ports();
    ports.reserve_pair(36010, 0).expect("reserve");
    assert!(matches!(
        ports.reserve_pair(36010, 0),
        Err(Error::PortUnavailable { port: 36010, .. })
    ));
    assert!(matches!(
        ports.reserve_pair(36000, 0),
        Err(Error::PortUnavailable { port: 36000, .. })
    ));
    assert!(matches!(
        ports.reserve_pair(36011, 0),
        Err(Error::OddPort { port: 36011 })
    ));
    assert!(matches!(
        ports.reserve_pair(2776, 0),
        Err(Error::PortOutOfRange { .. })
    ));
    assert!(matches!(
        ports.release_pair(36012, 0),
        Err(Error::PortNotAllocated { port: 36012 })
    ));
    ports.release_pair(36010, 0).expect("release");
    let err = ports.reserve_pair(36010, 1000).expect_err("quarantined");
    assert!(
        err.to_string().contains("in quarantine for 59000 ms more"),
        "{err}"
    );
    ports
        .reserve_pair(36010, 60_000)
        .expect("after the quarantine");
    // The allocator skips the reserved pair.
    let got: Vec<u16> = (0..3)
        .map(|_| ports.allocate_pair(0).expect("pair"))
        .collect();
    assert_eq!(got, vec![36002, 36004, 36006]);
    let u = ports.usage(0);
    assert_eq!((u.in_use, u.excluded, u.free_pairs), (8, 2, 5));
}

#[test]
fn allocations_and_cursor_persist_across_open() {
    let (d, t) = table(
        "ports-persist",
        &opts((36000, 36019), &[36000, 36001], 60_000),
    );
    assert_eq!(t.ports().allocate_pair(0).expect("pair"), 36002);
    assert_eq!(t.ports().allocate_pair(0).expect("pair"), 36004);
    drop(t);
    let t = FlowTable::open_at(&d.0).expect("open");
    let ports = t.ports();
    assert_eq!(ports.range(), (36000, 36019));
    assert_eq!(ports.state(36003, 0), PortState::InUse);
    assert_eq!(
        ports.allocate_pair(0).expect("continues after the cursor"),
        36006
    );
    // Two handles (two processes) share one allocator.
    let t2 = FlowTable::open_at(&d.0).expect("open");
    assert_eq!(t2.ports().allocate_pair(0).expect("pair"), 36008);
    assert_eq!(ports.allocate_pair(0).expect("pair"), 36010);
}
