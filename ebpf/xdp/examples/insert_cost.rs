//! What a flow-table write costs a writer (the control plane's call setup), with and without
//! the BPF backend's synchronous map write: `FlowTable::insert` and `remove` on a plain
//! shared-memory table, and on one opened through `edgeway_xdp::open_table` with the
//! program's maps pinned (one `BPF_MAP_UPDATE_ELEM` per insert; three deletes per remove:
//! the flow, its latch, its counters). Root only (pins under /sys/fs/bpf, removed at exit).
//!
//! `taskset -c 1 cargo run --release -p edgeway-xdp --example insert_cost [N] [ROUNDS]`
//! (N entries per round, at most 16384; rounds alternate plain and BPF-backed).

use std::path::PathBuf;
use std::time::Instant;

use edgeway_flowtable::{FlowTable, TableOptions, XdpStatus};
use edgeway_map_schema::{Action, Endpoint, FlowEntry, FlowKey};
use edgeway_xdp::MediaProgram;

/// Removes the example's pins and table, however it ends.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Nanoseconds per call, sorted.
#[derive(Default)]
struct Samples(Vec<u64>);

impl Samples {
    fn line(&mut self, what: &str) -> String {
        self.0.sort_unstable();
        let at = |q: f64| self.0[((self.0.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        let mean = self.0.iter().sum::<u64>() as f64 / self.0.len() as f64 / 1000.0;
        format!(
            "| {what} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.0.len(),
            at(0.5),
            mean,
            at(0.99),
            at(1.0)
        )
    }
}

fn key(round: usize, i: usize) -> FlowKey {
    let i = i as u32;
    FlowKey::demux(2776, [10, round as u8, (i >> 8) as u8, i as u8], 40000)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(10_000), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(6), |s| s.parse())?;
    if n == 0 || n > 16_384 {
        return Err("N must be 1..=16384 (the BPF flows map holds 65536)".into());
    }
    let pid = std::process::id();
    let pins = PathBuf::from(format!("/sys/fs/bpf/edgeway-insert-cost-{pid}"));
    let dir = PathBuf::from(format!("/dev/shm/edgeway-insert-cost-{pid}"));
    let _cleanup = Cleanup(vec![pins.clone(), dir.clone()]);
    let _program = MediaProgram::load(Some(&pins))?;
    let mut opts = TableOptions::default();
    // Room for every round's tombstones (quarantined 2 s) beside the live entries.
    opts.capacity = 1 << 18;
    drop(FlowTable::create_at(&dir, &opts)?);
    let mut status = XdpStatus::default();
    status.push_pin_dir(&pins);
    status.write(&dir)?;
    let plain = FlowTable::open_at(&dir)?;
    let (backed, at) = edgeway_xdp::open_table(&dir, None)?;
    assert!(at.is_some(), "the BPF backend found the pins");

    let entry = FlowEntry {
        flow_id: 1,
        action: Action::Relay as u8,
        out_local_port: 40000,
        out_remote: Endpoint::new([192, 0, 2, 20], 36000),
        ..FlowEntry::default()
    };
    let mut ins = [Samples::default(), Samples::default()];
    let mut rem = [Samples::default(), Samples::default()];
    for round in 0..rounds {
        let which = round % 2;
        let table = [&plain, &backed][which];
        for i in 0..n {
            let t = Instant::now();
            table.insert(key(round, i), entry)?;
            ins[which].0.push(t.elapsed().as_nanos() as u64);
        }
        for i in 0..n {
            let t = Instant::now();
            table.remove(&key(round, i))?;
            rem[which].0.push(t.elapsed().as_nanos() as u64);
        }
    }
    println!("| operation | calls | median µs | mean µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|---|");
    println!("{}", ins[0].line("insert, shared memory only"));
    println!("{}", ins[1].line("insert + pinned map write (BPF backend)"));
    println!("{}", rem[0].line("remove, shared memory only"));
    println!(
        "{}",
        rem[1].line("remove + pinned map deletes (BPF backend)")
    );
    Ok(())
}
