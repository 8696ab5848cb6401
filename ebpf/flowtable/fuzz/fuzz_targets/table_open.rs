//! Opening and using a damaged flow table file. Once per process a real table is built
//! through the public API under `/dev/shm/edgeway-flowtable-fuzz-<pid>/` (flows on ports and
//! demultiplexing keys, removals leaving tombstones, state, counters, node rows, a published
//! data plane, allocated/reserved/released port pairs); its bytes are the base. Each input:
//! - writes the base to the work directory, optionally applies writes through the API;
//! - overwrites parts of the file with fuzzer bytes (header, node rows, port words, the tail
//!   regions: change log, slots, states, counters, or anywhere), maybe truncates or extends it;
//! - opens it and, when it opens, reads everything `edgewayctl` and the data plane read:
//!   `info`, `iter`, `lookup`/`try_lookup`, `home_slot`, `state`/`counters`, the change log,
//!   node counters, the data plane's liveness, the port allocator, and the JSON views of it
//!   all; then applies more writes (insert, remove, state, counters, node rows, ports, data
//!   plane publication) and opens the file once more.
//!
//! Properties: `open` gives a typed error or a handle; nothing panics, reads or writes
//! outside the mapping, or loops for ever; slots handed out are inside the table; a change
//! log read never delivers more than the log holds.
#![no_main]

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use edgeway_flowtable::{
    counters_json, entry_json, format_key, node_counters_json, state_json, unix_ms, ChangesResult,
    Error, FlowCounters, FlowEntry, FlowKey, FlowState, FlowTable, NodeCounters, TableOptions,
    MAX_WORKERS, TABLE_FILE,
};
use edgeway_map_schema::{Endpoint, SrtpParams};
use libfuzzer_sys::fuzz_target;

const ROOT_PREFIX: &str = "/dev/shm/edgeway-flowtable-fuzz-";
const HEADER: usize = 4096;

// ---- fuzzer input ----

#[derive(Debug, Arbitrary)]
enum KeySel {
    Base(u8),
    Port(u16),
    Demux(u16, [u8; 4], u16),
}

#[derive(Debug, Arbitrary)]
struct FuzzEntry {
    flow_id: u64,
    created_ms: u64,
    generation: u32,
    action: u8,
    flags: u16,
    worker: u32,
    out_local_port: u16,
    out_remote: ([u8; 4], u16),
    suite_in: u8,
    suite_out: u8,
    mki_len: u8,
}

#[derive(Debug, Arbitrary)]
enum Write {
    Insert(KeySel, FuzzEntry),
    Remove(KeySel),
    State(u8, [u64; 4]),
    Counters(u8, u64),
    Node(u8, u64),
    Allocate,
    Reserve(u16),
    Release(u16),
    Publish(u32, u8),
    Role(String),
    Heartbeat,
    Withdraw,
}

/// Where fuzzer bytes land (offsets only steer: every byte of the file is reachable).
#[derive(Debug, Arbitrary)]
enum Where {
    Header(u16),
    Nodes(u16),
    Ports(u32),
    /// Counted back from the end of the file: counters, states, slots, change log.
    Tail(u16),
    Any(u32),
}

#[derive(Debug, Arbitrary)]
struct Patch {
    at: Where,
    bytes: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Resize {
    Truncate(u32),
    Extend(u16),
}

#[derive(Debug, Arbitrary)]
struct Input {
    before: Vec<Write>,
    patches: Vec<Patch>,
    resize: Option<Resize>,
    keys: Vec<KeySel>,
    cursor: u64,
    after: Vec<Write>,
    reopen: bool,
}

// ---- the base table ----

struct Env {
    root: PathBuf,
    work: PathBuf,
    base: Vec<u8>,
    keys: Vec<FlowKey>,
}

static ENV: OnceLock<Env> = OnceLock::new();

fn base_keys() -> Vec<FlowKey> {
    let mut keys: Vec<FlowKey> = (0..8).map(|i| FlowKey::port(36002 + 2 * i)).collect();
    keys.extend((0..4).map(|i| FlowKey::demux(36000, [10, 0, 0, 5], 36100 + i)));
    keys
}

fn entry_for(i: usize, key: &FlowKey) -> FlowEntry {
    let mut srtp = SrtpParams {
        suite: (i % 7) as u8,
        mki_len: (i % 3) as u8,
        replay_window: 1024,
        ..SrtpParams::PLAIN
    };
    srtp.key.fill(0x11 * i as u8);
    FlowEntry {
        flow_id: 100 + i as u64,
        idle_timeout_ms: 30_000,
        action: (i % 3) as u8,
        flags: (i as u16) & 0x1f,
        worker: (i % 2) as u32,
        permit_ip: [198, 51, 100, i as u8],
        out_local_port: key.local_port ^ 1,
        out_remote: Endpoint::new([192, 0, 2, i as u8], 40_000 + i as u16),
        peer: FlowKey::port(36002),
        srtp_in: srtp,
        srtp_out: srtp,
        ..FlowEntry::default()
    }
}

/// Removes the directories of fuzzing processes that are gone.
fn clean_stale() {
    let Ok(dir) = fs::read_dir("/dev/shm") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&ROOT_PREFIX["/dev/shm/".len()..]) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

extern "C" fn remove_root() {
    if let Some(env) = ENV.get() {
        let _ = fs::remove_dir_all(&env.root);
    }
}

fn setup() -> Env {
    clean_stale();
    let root = PathBuf::from(format!("{ROOT_PREFIX}{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let base_dir = root.join("base");
    let mut o = TableOptions::default();
    o.capacity = 16;
    o.change_log_len = 16;
    o.port_range = (36000, 36099);
    o.excluded_ports = vec![36000, 36001];
    let t = FlowTable::create_at(&base_dir, &o).expect("create the base table");
    let keys = base_keys();
    for (i, k) in keys.iter().enumerate() {
        let slot = t.insert(*k, entry_for(i, k)).expect("insert");
        let state = FlowState {
            generation: 1,
            latched: (i % 2) as u32,
            last_rx_ms: 1_700_000_000_000 + i as u64,
            srtcp_out_next: i as u64,
            ..FlowState::default()
        };
        t.write_state(slot, &state);
        let mut c = FlowCounters {
            rx_packets: 1000 * i as u64,
            rx_bytes: 172_000 * i as u64,
            ..FlowCounters::default()
        };
        c.drops[i % c.drops.len()] = i as u64;
        t.write_counters(slot, &c);
    }
    t.remove(&keys[3]).expect("remove");
    t.remove(&keys[9]).expect("remove");
    for w in 0..2 {
        let n = NodeCounters {
            rx_packets: 5 + w as u64,
            flows: 5,
            updated_ms: unix_ms(),
            ..NodeCounters::default()
        };
        t.write_node_counters(w, &n).expect("node row");
    }
    t.publish_dataplane(std::process::id(), 2).expect("publish");
    t.publish_role("edge small");
    let ports = t.ports();
    let now = unix_ms();
    let first = ports.allocate_pair(now).expect("allocate");
    ports.allocate_pair(now).expect("allocate");
    ports.release_pair(first, now).expect("release");
    ports.reserve_pair(36050, now).expect("reserve");
    drop(t);
    let base = fs::read(base_dir.join(TABLE_FILE)).expect("read the base table");
    let work = root.join("t");
    fs::create_dir_all(&work).expect("work directory");
    // SAFETY: registering a plain `extern "C" fn()` with atexit has no preconditions.
    unsafe {
        libc::atexit(remove_root);
    }
    Env {
        root,
        work,
        base,
        keys,
    }
}

// ---- driving the table ----

fn key(env: &Env, k: &KeySel) -> FlowKey {
    match *k {
        KeySel::Base(i) => env.keys[usize::from(i) % env.keys.len()],
        KeySel::Port(p) => FlowKey::port(p),
        KeySel::Demux(p, ip, rp) => FlowKey::demux(p, ip, rp),
    }
}

fn apply(env: &Env, t: &FlowTable, w: &Write) {
    let cap = t.capacity();
    let now = unix_ms();
    let r: Result<(), Error> = match w {
        Write::Insert(k, f) => {
            let k = key(env, k);
            let entry = FlowEntry {
                flow_id: f.flow_id,
                created_ms: f.created_ms,
                generation: f.generation,
                action: f.action,
                flags: f.flags,
                worker: f.worker,
                out_local_port: f.out_local_port,
                out_remote: Endpoint::new(f.out_remote.0, f.out_remote.1),
                srtp_in: SrtpParams {
                    suite: f.suite_in,
                    mki_len: f.mki_len,
                    ..SrtpParams::PLAIN
                },
                srtp_out: SrtpParams {
                    suite: f.suite_out,
                    ..SrtpParams::PLAIN
                },
                ..FlowEntry::default()
            };
            t.insert(k, entry).map(|slot| {
                assert!(
                    slot.index() < cap,
                    "insert gave slot {} of {cap}",
                    slot.index()
                );
                if let Ok(Some((s, e))) = t.try_lookup(&k) {
                    assert_eq!(s, slot, "{k:?} inserted in one slot, found in another");
                    assert_eq!(e.flow_id, f.flow_id);
                }
            })
        }
        Write::Remove(k) => t.remove(&key(env, k)).map(drop),
        Write::State(slot, words) => {
            let s = FlowState {
                generation: words[0] as u32,
                latched: (words[0] >> 32) as u32,
                last_rx_ms: words[1],
                last_tx_ms: words[2],
                srtcp_out_next: words[3],
                ..FlowState::default()
            };
            t.write_state(u32::from(*slot) % cap, &s);
            Ok(())
        }
        Write::Counters(slot, v) => {
            let c = FlowCounters {
                rx_packets: *v,
                tx_bytes: v.rotate_left(17),
                ..FlowCounters::default()
            };
            t.write_counters(u32::from(*slot) % cap, &c);
            Ok(())
        }
        Write::Node(w, v) => {
            let n = NodeCounters {
                tx_packets: *v,
                ..NodeCounters::default()
            };
            t.write_node_counters(usize::from(*w), &n)
        }
        Write::Allocate => t.ports().allocate_pair(now).map(drop),
        Write::Reserve(p) => t.ports().reserve_pair(*p, now),
        Write::Release(p) => t.ports().release_pair(*p, now),
        Write::Publish(pid, workers) => t.publish_dataplane(*pid, u32::from(*workers)),
        Write::Role(s) => {
            t.publish_role(s);
            Ok(())
        }
        Write::Heartbeat => t.heartbeat(),
        Write::Withdraw => {
            t.withdraw_dataplane();
            Ok(())
        }
    };
    if let Err(e) = r {
        let _ = e.to_string();
    }
}

/// Everything a reader does with a table, JSON views included.
fn read_all(env: &Env, t: &FlowTable, input: &Input, fresh: bool) {
    let cap = t.capacity();
    let info = t.info();
    assert_eq!(info.capacity, cap);
    assert!(info.max_live <= cap);
    let now = unix_ms();
    let mut live = 0u32;
    for (slot, k, e) in t.iter() {
        live += 1;
        assert!(live <= cap, "iter gave more entries than slots");
        assert!(
            slot.index() < cap,
            "iter gave slot {} of {cap}",
            slot.index()
        );
        assert!(t.home_slot(&k) < cap);
        let _ = (t.lookup(&k), t.try_lookup(&k), t.try_state(slot));
        let s = t.state(slot);
        let c = t.counters(slot);
        let _ = format_key(&k);
        if fresh {
            let _ = entry_json(&k, &e).to_string();
            let _ = state_json(&s, e.clock_rate).to_string();
            let _ = counters_json(&c).to_string();
        }
    }
    for k in input.keys.iter().take(8) {
        let k = key(env, k);
        assert!(t.home_slot(&k) < cap);
        if let Ok(Some((slot, _))) = t.try_lookup(&k) {
            assert!(
                slot.index() < cap,
                "lookup gave slot {} of {cap}",
                slot.index()
            );
        }
    }
    let head = t.change_cursor();
    for from in [
        0,
        head.saturating_sub(3),
        head,
        input.cursor,
        head.wrapping_add(input.cursor),
    ] {
        let mut delivered = 0u64;
        let r = t.changes_since(from, &mut |c| {
            delivered += 1;
            if c.slot.index() < cap {
                let _ = (t.state(c.slot), t.counters(c.slot));
            }
            let _ = format_key(&c.key);
        });
        assert!(
            delivered <= u64::from(info.change_log_len),
            "{delivered} changes"
        );
        if let ChangesResult::UpTo(to) = r {
            assert_eq!(to, head, "no writer: the log ends where it ended");
        }
    }
    for w in 0..=MAX_WORKERS {
        let n = t.node_counters(w);
        // The JSON view allocates a lot under ASan: the rows the base table wrote, and one.
        if fresh && (w < 2 || w == usize::from(input.cursor as u8) % MAX_WORKERS) {
            let _ = node_counters_json(&n).to_string();
        }
    }
    let dp = t.dataplane();
    for at in [now, 0, u64::MAX] {
        let _ = dp.liveness(at);
    }
    if fresh {
        assert!(matches!(t.heartbeat(), Err(Error::NotPublished)));
    }
    let ports = t.ports();
    let (lo, hi) = ports.range();
    for p in [
        0,
        1,
        lo,
        hi,
        lo.wrapping_add(1),
        hi.wrapping_sub(1),
        36050,
        u16::MAX,
    ] {
        let _ = ports.state(p, now);
    }
    let _ = ports.usage(now);
}

fn write_file(env: &Env, input: &Input) {
    let path = env.work.join(TABLE_FILE);
    fs::write(&path, &env.base).expect("write the work table");
    if !input.before.is_empty() {
        let t = FlowTable::open_at(&env.work).expect("the base table opens");
        for w in input.before.iter().take(16) {
            apply(env, &t, w);
        }
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open the work table");
    let len = env.base.len();
    let nodes = MAX_WORKERS * (8 + std::mem::size_of::<NodeCounters>());
    let ports_at = (HEADER + nodes).div_ceil(64) * 64;
    for p in input.patches.iter().take(8) {
        let bytes = &p.bytes[..p.bytes.len().min(512)];
        let at = match p.at {
            Where::Header(o) => usize::from(o) % HEADER,
            Where::Nodes(o) => HEADER + usize::from(o) % nodes,
            Where::Ports(o) => ports_at + o as usize % (65536 * 8),
            Where::Tail(o) => len - 1 - usize::from(o) % (16 * 1024),
            Where::Any(o) => o as usize % len,
        };
        f.write_all_at(bytes, at as u64).expect("patch");
    }
    match input.resize {
        Some(Resize::Truncate(n)) => f.set_len(u64::from(n) % (len as u64 + 1)),
        Some(Resize::Extend(n)) => f.set_len(len as u64 + u64::from(n) + 1),
        None => Ok(()),
    }
    .expect("resize");
}

fn open_and_use(env: &Env, input: &Input, writes: bool) {
    match FlowTable::open_at(&env.work) {
        Ok(t) => {
            read_all(env, &t, input, true);
            if writes {
                for w in input.after.iter().take(16) {
                    apply(env, &t, w);
                }
                read_all(env, &t, input, false);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|input: Input| {
    let env = ENV.get_or_init(setup);
    write_file(env, &input);
    open_and_use(env, &input, true);
    if input.reopen {
        open_and_use(env, &input, false);
    }
});
