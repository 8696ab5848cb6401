//! Cross-process concurrency: a writer process updates entries, state and counters as fast
//! as it can, every field derived from one counter; this process reads them at the same
//! time and checks that every copy it gets is self-consistent (no torn reads).
//!
//! The writer is this test binary re-executed with `EDGEWAY_FT_WRITER_DIR` set, running the
//! `writer_process` test (which does nothing in a normal run).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{opts, TempDir};
use edgeway_flowtable::{ChangesResult, FlowCounters, FlowEntry, FlowKey, FlowState, FlowTable};

const KEYS: u16 = 24;
const RUN_MS: u64 = 1500;
const DIR_ENV: &str = "EDGEWAY_FT_WRITER_DIR";

fn key(i: u16) -> FlowKey {
    if i.is_multiple_of(2) {
        FlowKey::port(40000 + i)
    } else {
        FlowKey::demux(2776, [10, 0, (i >> 8) as u8, i as u8], 5000 + i)
    }
}

/// An entry whose every field follows from `c`.
fn entry(c: u64) -> FlowEntry {
    let b = c as u8;
    let mut e = FlowEntry {
        flow_id: c,
        created_ms: c.wrapping_mul(3),
        idle_timeout_ms: (c as u32) ^ 0x5555_5555,
        action: (c % 3) as u8,
        flags: (c as u16) & 0x1f,
        worker: (c >> 3) as u32,
        permit_ip: [b, b ^ 1, b ^ 2, b ^ 3],
        clock_rate: c as u32 | 1,
        out_local_port: c as u16,
        keepalive_ms: !(c as u32),
        ..FlowEntry::default()
    };
    e.out_remote.ip = [b; 4];
    e.out_remote.port = !(c as u16);
    e.peer = FlowKey::demux(c as u16, [b; 4], (c >> 16) as u16);
    e.srtp_in.key = [b; 32];
    e.srtp_in.salt = [!b; 14];
    e.srtp_out.key = [b ^ 0x5a; 32];
    e
}

fn check_entry(e: &FlowEntry) {
    let mut want = entry(e.flow_id);
    want.generation = e.generation;
    assert_eq!(*e, want, "torn entry read (flow_id {})", e.flow_id);
}

fn state(c: u64) -> FlowState {
    let mut s = FlowState {
        generation: c as u32,
        latched: (c & 1) as u32,
        latched_ssrc: !(c as u32),
        last_rx_ms: c,
        last_tx_ms: c.wrapping_mul(7),
        ..FlowState::default()
    };
    s.srtp_in.highest_index = c << 1;
    s.srtp_out.recent = [c, !c];
    s.rtp.received = c.wrapping_mul(11);
    s.rtp.lost = c ^ 0xffff;
    s
}

fn counters(c: u64) -> FlowCounters {
    FlowCounters {
        rx_packets: c,
        rx_bytes: c,
        tx_packets: c,
        tx_bytes: c,
        keepalives_rx: c,
        keepalives_tx: c,
        drops: [c; edgeway_flowtable::DROP_REASONS],
    }
}

/// The writer role: runs only when re-executed by `no_torn_reads_across_processes`.
#[test]
fn writer_process() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let t = FlowTable::open_at(std::path::Path::new(&dir)).expect("writer opens the table");
    let until = Instant::now() + Duration::from_millis(RUN_MS);
    let mut c: u64 = 1;
    while Instant::now() < until {
        let i = (c % u64::from(KEYS)) as u16;
        if c.is_multiple_of(97) {
            t.remove(&key(i)).expect("remove");
        } else {
            let slot = t.insert(key(i), entry(c)).expect("insert");
            // Pretend to be the owning worker too.
            for _ in 0..4 {
                t.write_state(slot, &state(c));
                t.write_counters(slot, &counters(c));
                c += 1;
            }
        }
        c += 1;
    }
    println!("writer-updates={c}");
}

#[test]
fn no_torn_reads_across_processes() {
    let d = TempDir::new("xproc");
    // Short tombstone quarantine: the writer's removals make slots reusable within the run,
    // so reads also race with slot reuse and the zeroing of state and counters.
    let mut o = opts(256);
    o.tombstone_quarantine_ms = 5;
    let t = FlowTable::create_at(&d.0, &o).expect("create");
    for i in 0..KEYS {
        t.insert(key(i), entry(u64::from(i) + 1_000_000))
            .expect("seed");
    }
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "writer_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, &d.0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn writer");

    let (mut found, mut absent, mut states, mut changes) = (0u64, 0u64, 0u64, 0u64);
    let mut cursor = t.change_cursor();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "writer did not finish");
        for i in 0..KEYS {
            match t.lookup(&key(i)) {
                Some((slot, e)) => {
                    found += 1;
                    check_entry(&e);
                    let s = t.state(slot);
                    // A zeroed state (new slot) is consistent too.
                    if s != FlowState::default() {
                        assert_eq!(s, state(s.last_rx_ms), "torn state read");
                        states += 1;
                    }
                    let c = t.counters(slot);
                    assert_eq!(c, counters(c.rx_packets), "torn counters read");
                }
                None => absent += 1,
            }
        }
        for (_, k, e) in t.iter() {
            check_entry(&e);
            assert!((0..KEYS).any(|i| key(i) == k), "unknown key {k:?}");
        }
        match t.changes_since(cursor, &mut |c| {
            assert!(
                (0..KEYS).any(|i| key(i) == c.key),
                "bad change key {:?}",
                c.key
            );
            changes += 1;
        }) {
            ChangesResult::UpTo(n) => cursor = n,
            ChangesResult::Overrun => cursor = t.change_cursor(),
        }
    }
    let out = child.wait_with_output().expect("writer output");
    assert!(out.status.success(), "writer failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let updates: u64 = text
        .split("writer-updates=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("writer reports its updates");
    eprintln!(
        "writer {updates} updates; reader {found} entries, {absent} absent, {states} states, {changes} changes"
    );
    assert!(updates > 1000, "the writer barely ran");
    assert!(found > 1000, "the reader barely ran");
    assert!(changes > 0);
}
