//! FlowTable behaviour: entries, generations, tombstones, probing, capacity, layout checks,
//! change log, state and counters, node counters and liveness.

mod common;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::time::Duration;

use common::{opts, table, TempDir};
use edgeway_flowtable::{
    unix_ms, ChangeOp, ChangesResult, Error, FlowCounters, FlowEntry, FlowKey, FlowState,
    FlowTable, Liveness, NodeCounters, SlotRef, TableOptions, DROP_REASONS, LOCK_FILE, TABLE_FILE,
};

fn entry(flow_id: u64) -> FlowEntry {
    FlowEntry {
        flow_id,
        action: 1,
        worker: 3,
        out_local_port: 36010,
        ..FlowEntry::default()
    }
}

/// `n` keys (ports from 40000 up) whose first probe is `home`.
fn keys_homed_at(t: &FlowTable, home: u32, n: usize) -> Vec<FlowKey> {
    (40000..65000)
        .map(FlowKey::port)
        .filter(|k| t.home_slot(k) == home)
        .take(n)
        .collect()
}

#[test]
fn insert_lookup_replace_remove_iter() {
    let (_d, t) = table("basic", &opts(64));
    let a = FlowKey::port(36002);
    let b = FlowKey::demux(2776, [192, 0, 2, 1], 40000);
    let c = FlowKey::demux(2776, [192, 0, 2, 1], 40002);
    let sa = t.insert(a, entry(1)).expect("a");
    let sb = t.insert(b, entry(2)).expect("b");
    t.insert(c, entry(3)).expect("c");

    let (slot, got) = t.lookup(&a).expect("a is there");
    assert_eq!(slot, sa);
    assert_eq!(got.flow_id, 1);
    assert_eq!(got.generation, 1);
    assert_ne!(got.created_ms, 0, "created_ms filled in");
    assert_eq!(t.lookup(&b).map(|(_, e)| e.flow_id), Some(2));
    assert_eq!(t.lookup(&FlowKey::port(36004)), None);
    assert_eq!(t.lookup(&FlowKey::demux(2776, [192, 0, 2, 1], 40004)), None);

    // Replace: same slot, generation bumped, created_ms kept, contents new.
    let mut e = entry(10);
    e.worker = 7;
    assert_eq!(t.insert(a, e).expect("replace"), sa);
    let (_, got2) = t.lookup(&a).expect("a");
    assert_eq!((got2.flow_id, got2.worker, got2.generation), (10, 7, 2));
    assert_eq!(got2.created_ms, got.created_ms);
    assert_eq!(t.insert(a, entry(11)).expect("again").index(), sa.index());
    assert_eq!(t.lookup(&a).expect("a").1.generation, 3);

    let mut live: Vec<(SlotRef, FlowKey, u64)> =
        t.iter().map(|(s, k, e)| (s, k, e.flow_id)).collect();
    live.sort();
    assert_eq!(live.len(), 3);
    assert!(live.contains(&(sb, b, 2)));
    assert_eq!(t.info().live, 3);

    let removed = t.remove(&b).expect("remove").expect("was there");
    assert_eq!(removed.flow_id, 2);
    assert_eq!(t.lookup(&b), None);
    assert_eq!(t.remove(&b).expect("remove again"), None);
    assert_eq!(t.iter().count(), 2);
    let info = t.info();
    assert_eq!((info.live, info.tombstones), (2, 1));
}

#[test]
fn files_are_private_and_a_second_create_is_refused() {
    let (d, t) = table("perm", &opts(8));
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&d.0), 0o700);
    assert_eq!(mode(&d.0.join(TABLE_FILE)), 0o600);
    assert_eq!(mode(&d.0.join(LOCK_FILE)), 0o600);
    assert!(matches!(
        FlowTable::create_at(&d.0, &opts(8)),
        Err(Error::AlreadyExists { .. })
    ));
    // A second handle (another process would do the same) sees the first one's writes.
    t.insert(FlowKey::port(36100), entry(5)).expect("insert");
    let t2 = FlowTable::open_at(&d.0).expect("open");
    assert_eq!(
        t2.lookup(&FlowKey::port(36100)).map(|(_, e)| e.flow_id),
        Some(5)
    );
    let missing = TempDir::new("missing");
    assert!(matches!(
        FlowTable::open_at(&missing.0),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        FlowTable::dir_for("../etc"),
        Err(Error::BadNodeName(_))
    ));
    assert_eq!(
        FlowTable::dir_for("node-1").expect("name"),
        std::path::Path::new("/dev/shm/edgeway/node-1")
    );
}

#[test]
fn bad_options_are_refused_with_the_reason() {
    let d = TempDir::new("opts");
    let mut o = opts(100);
    let err = FlowTable::create_at(&d.0, &o).expect_err("not a power of two");
    assert!(err.to_string().contains("capacity 100"), "{err}");
    o.capacity = 8;
    o.port_range = (40000, 40000);
    assert!(matches!(
        FlowTable::create_at(&d.0, &o),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn another_layout_is_refused_naming_what_differs() {
    let (d, t) = table("layout", &opts(8));
    drop(t);
    let path = d.0.join(TABLE_FILE);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open file");
    // Header: magic (8), file version (4), schema version (4), key, entry, state, counters
    // sizes (4 each).
    file.write_at(&99u32.to_ne_bytes(), 12)
        .expect("poke schema version");
    match FlowTable::open_at(&d.0) {
        Err(Error::LayoutMismatch {
            what, table: 99, ..
        }) => assert_eq!(what, "schema version"),
        other => panic!("expected a schema mismatch, got {other:?}"),
    }
    file.write_at(&edgeway_flowtable::SCHEMA_VERSION.to_ne_bytes(), 12)
        .expect("restore");
    file.write_at(&180u32.to_ne_bytes(), 20)
        .expect("poke entry size");
    let err = FlowTable::open_at(&d.0).expect_err("entry size differs");
    assert!(
        err.to_string()
            .contains("FlowEntry size is 180 there and 176"),
        "{err}"
    );
    file.write_at(b"NOTATABL", 0).expect("poke magic");
    assert!(matches!(
        FlowTable::open_at(&d.0),
        Err(Error::NotATable { .. })
    ));
}

#[test]
fn collisions_probe_onwards_and_wrap_around_the_end() {
    let (_d, t) = table("probe", &opts(16));
    let last = t.capacity() - 1;
    let ks = keys_homed_at(&t, last, 3);
    assert_eq!(ks.len(), 3);
    let slots: Vec<u32> = ks
        .iter()
        .enumerate()
        .map(|(i, k)| t.insert(*k, entry(i as u64)).expect("insert").index())
        .collect();
    assert_eq!(slots, vec![last, 0, 1], "linear probing wraps to slot 0");
    for (i, k) in ks.iter().enumerate() {
        assert_eq!(
            t.lookup(k).map(|(s, e)| (s.index(), e.flow_id)),
            Some((slots[i], i as u64))
        );
    }
    // A tombstone in the middle of the run does not cut it.
    t.remove(&ks[1]).expect("remove");
    assert_eq!(t.lookup(&ks[1]), None);
    assert_eq!(t.lookup(&ks[2]).map(|(s, _)| s.index()), Some(1));
    // A key homed in the run but absent probes to the first empty slot and says None.
    let other = keys_homed_at(&t, last, 4)[3];
    assert_eq!(t.lookup(&other), None);
}

#[test]
fn tombstones_wait_out_their_quarantine_before_reuse() {
    let mut o = opts(16);
    o.tombstone_quarantine_ms = 300;
    let (_d, t) = table("quarantine", &o);
    let ks = keys_homed_at(&t, 5, 4);
    let s0 = t.insert(ks[0], entry(1)).expect("insert");
    assert_eq!(s0.index(), 5);
    t.write_state(
        s0,
        &FlowState {
            generation: 1,
            latched: 1,
            ..FlowState::default()
        },
    );
    t.write_counters(
        s0,
        &FlowCounters {
            rx_packets: 9,
            ..FlowCounters::default()
        },
    );
    t.remove(&ks[0]).expect("remove");

    // Within the quarantine another key homed there goes past the tombstone...
    let s1 = t.insert(ks[1], entry(2)).expect("insert");
    assert_eq!(s1.index(), 6);
    // ...and so does the removed key itself (a worker may still write through its old slot).
    let s0b = t.insert(ks[0], entry(3)).expect("re-insert");
    assert_eq!(s0b.index(), 7);
    assert_eq!(
        t.counters(s0b),
        FlowCounters::default(),
        "new slot starts from zero"
    );

    std::thread::sleep(Duration::from_millis(350));
    let s2 = t.insert(ks[2], entry(4)).expect("insert after quarantine");
    assert_eq!(s2.index(), 5, "expired tombstone reused");
    let (_, e) = t.lookup(&ks[2]).expect("there");
    assert_eq!(
        e.generation, 2,
        "generations continue across a slot's tenants"
    );
    assert_eq!(
        t.state(s2),
        FlowState::default(),
        "a new key's state is zeroed"
    );
    assert_eq!(
        t.counters(s2),
        FlowCounters::default(),
        "a new key's counters are zeroed"
    );
    assert_eq!(t.info().tombstones, 0);
}

#[test]
fn replace_keeps_state_and_counters_new_key_zeroes_them() {
    let (_d, t) = table("state", &opts(16));
    let k = FlowKey::port(36002);
    let s = t.insert(k, entry(1)).expect("insert");
    assert_eq!(t.state(s), FlowState::default());
    let mut st = FlowState {
        generation: 1,
        latched: 1,
        last_rx_ms: 1234,
        ..FlowState::default()
    };
    st.latched_src.ip = [198, 51, 100, 7];
    st.latched_src.port = 5004;
    st.srtp_in.valid = 1;
    st.srtp_in.highest_index = (3 << 16) | 17;
    let mut c = FlowCounters {
        rx_packets: 10,
        tx_bytes: 1600,
        ..FlowCounters::default()
    };
    c.drops[4] = 2;
    t.write_state(s, &st);
    t.write_counters(s, &c);
    assert_eq!(t.state(s), st);
    assert_eq!(t.try_state(s).expect("stable"), st);
    assert_eq!(t.counters(s), c);
    // Through a u32 index as well as a SlotRef (what a worker keeps).
    assert_eq!(t.counters(s.index()), c);

    t.insert(k, entry(2)).expect("replace");
    assert_eq!(t.state(s), st, "replace keeps state");
    assert_eq!(t.counters(s), c, "replace keeps counters");
    assert_ne!(t.state(s).generation, t.lookup(&k).expect("k").1.generation);
}

#[test]
fn a_full_table_refuses_new_keys_but_still_replaces() {
    let (_d, t) = table("full", &opts(8));
    for p in 0..7 {
        t.insert(FlowKey::port(36000 + p), entry(p.into()))
            .expect("fits");
    }
    match t.insert(FlowKey::port(37000), entry(99)) {
        Err(Error::TableFull {
            capacity: 8,
            max: 7,
            live: 7,
            tombstones: 0,
        }) => {}
        other => panic!("expected TableFull, got {other:?}"),
    }
    t.insert(FlowKey::port(36003), entry(50))
        .expect("replace in a full table");
    assert_eq!(
        t.lookup(&FlowKey::port(36003)).map(|(_, e)| e.flow_id),
        Some(50)
    );
    // Removing frees room only after the quarantine (default 2 s): still full now.
    t.remove(&FlowKey::port(36000)).expect("remove");
    t.insert(FlowKey::port(37000), entry(99))
        .expect("the 8th slot is still empty");
    let err = t
        .insert(FlowKey::port(37001), entry(100))
        .expect_err("full");
    assert!(
        err.to_string()
            .contains("1 removed entries still in quarantine"),
        "{err}"
    );
}

#[test]
fn change_log_delivers_updates_and_reports_overrun() {
    let mut o = opts(64);
    o.change_log_len = 16;
    let (_d, t) = table("changes", &o);
    let start = t.change_cursor();
    let mut seen = Vec::new();
    assert_eq!(
        t.changes_since(start, &mut |c| seen.push(c)),
        ChangesResult::UpTo(start)
    );
    assert!(seen.is_empty());

    let k = FlowKey::demux(2776, [10, 0, 0, 1], 5000);
    let s = t.insert(k, entry(1)).expect("insert");
    t.insert(k, entry(2)).expect("replace");
    t.remove(&k).expect("remove");
    let ChangesResult::UpTo(cur) = t.changes_since(start, &mut |c| seen.push(c)) else {
        panic!("no overrun expected");
    };
    assert_eq!(cur, start + 3);
    let summary: Vec<(ChangeOp, SlotRef, FlowKey, u32)> = seen
        .iter()
        .map(|c| (c.op, c.slot, c.key, c.generation))
        .collect();
    assert_eq!(
        summary,
        vec![
            (ChangeOp::Insert, s, k, 1),
            (ChangeOp::Insert, s, k, 2),
            (ChangeOp::Remove, s, k, 2)
        ]
    );
    assert_eq!(seen[0].seq, start);
    assert_eq!(
        t.changes_since(cur, &mut |_| panic!("nothing new")),
        ChangesResult::UpTo(cur)
    );

    // Fall more than the log's 16 records behind.
    for p in 0..17 {
        t.insert(FlowKey::port(40000 + p), entry(p.into()))
            .expect("insert");
    }
    assert_eq!(t.changes_since(cur, &mut |_| {}), ChangesResult::Overrun);
    // A cursor from the future (another table) is an overrun too.
    assert_eq!(
        t.changes_since(u64::MAX, &mut |_| {}),
        ChangesResult::Overrun
    );
    // The recovery: take the cursor, rescan, continue from it.
    let cur = t.change_cursor();
    assert_eq!(t.iter().count(), 17);
    t.remove(&FlowKey::port(40000)).expect("remove");
    let mut n = 0;
    assert_eq!(
        t.changes_since(cur, &mut |_| n += 1),
        ChangesResult::UpTo(cur + 1)
    );
    assert_eq!(n, 1);
}

#[test]
fn node_counters_and_dataplane_liveness() {
    let (d, t) = table("node", &opts(8));
    let mut nc = NodeCounters {
        rx_packets: 100,
        flows: 2,
        ..NodeCounters::default()
    };
    nc.drops[DROP_REASONS - 1] = 3;
    t.write_node_counters(5, &nc).expect("worker 5");
    let t2 = FlowTable::open_at(&d.0).expect("open");
    assert_eq!(t2.node_counters(5), nc);
    assert_eq!(t2.node_counters(4), NodeCounters::default());
    assert_eq!(t2.node_counters(1000), NodeCounters::default());
    assert!(matches!(
        t.write_node_counters(64, &nc),
        Err(Error::WorkerOutOfRange {
            worker: 64,
            max: 64
        })
    ));

    let now = unix_ms();
    assert_eq!(t2.dataplane().liveness(now), Liveness::None);
    assert!(matches!(t.heartbeat(), Err(Error::NotPublished)));
    t.publish_dataplane(std::process::id(), 2).expect("publish");
    t.publish_role("edge small");
    t.heartbeat().expect("heartbeat");
    let info = t2.dataplane();
    assert_eq!(
        (info.pid, info.workers, info.role.as_str()),
        (std::process::id(), 2, "edge small")
    );
    assert_eq!(info.liveness(unix_ms()), Liveness::Running);
    assert!(matches!(
        info.liveness(unix_ms() + 10_000),
        Liveness::Stalled { .. }
    ));
    // Another data plane takes over: the first one's heartbeat says so.
    t2.publish_dataplane(std::process::id() + 1, 1)
        .expect("publish");
    assert!(matches!(
        t.heartbeat(),
        Err(Error::DataplaneReplaced { .. })
    ));
    t2.withdraw_dataplane();
    assert_eq!(t.dataplane().pid, 0);
    // A pid that does not exist reads as exited.
    t2.publish_dataplane(u32::MAX - 7, 1).expect("publish");
    assert_eq!(t.dataplane().liveness(unix_ms()), Liveness::Exited);
}

#[test]
fn table_options_persist_across_open() {
    let mut o = TableOptions::default();
    o.capacity = 32;
    o.tombstone_quarantine_ms = 1234;
    o.port_range = (20000, 20099);
    o.port_quarantine_ms = 777;
    let (d, t) = table("persist", &o);
    drop(t);
    let info = FlowTable::open_at(&d.0).expect("open").info();
    assert_eq!(info.capacity, 32);
    assert_eq!(info.max_live, 28);
    assert_eq!(info.tombstone_quarantine_ms, 1234);
    assert_eq!(info.port_range, (20000, 20099));
    assert_eq!(info.port_quarantine_ms, 777);
    assert!(info.created_ms > 0);
}
