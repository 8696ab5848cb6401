//! `edgeway-dataplane`: the media data plane of one node, its own process.
//!
//! N worker threads (default one per online CPU), each pinned to its core and owning one
//! io_uring (`edgeway-uring`), the sockets of its flows and a sans-IO `MediaWorker`
//! (`edgeway-media`). The flow table (`edgeway-flowtable`, shared memory under
//! `/dev/shm/edgeway/<node>/`) is the only thing the workers share with the control plane and
//! `edgewayctl`: they read entries, and write back state (latching, SRTP checkpoints, RTP
//! statistics) and counters. Nothing mutable is shared between workers.
//!
//! The packet path is `Uring::run_once` → `MediaWorker::handle` → a zero-copy send from the
//! same buffer: no lock, no allocation, and no syscall beyond the one batched
//! `io_uring_enter` per loop turn. Everything else (applying table changes, binding sockets,
//! keepalives, idle marking, exporting state) happens between turns, at most every few ms.
//!
//! Restart safety: all state a worker needs to resume is in the table. A restarted process
//! rebuilds its flows from the entries and their exported state (same generation), restores
//! the SRTP checkpoints and binds the sockets again.

mod worker;
mod xdp;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use edgeway_flowtable::XdpStatus;
use edgeway_media::{DemuxLayout, MediaConfig, Role};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command line of the data plane.
#[derive(Debug, Parser)]
#[command(name = "edgeway-dataplane", version, about)]
struct Args {
    /// Node name: the flow table lives in /dev/shm/edgeway/<node>/.
    #[arg(long, default_value = "edgeway")]
    node: String,
    /// Flow table directory (overrides --node).
    #[arg(long)]
    shm_dir: Option<PathBuf>,
    /// Role of this node: edge (relays, demultiplexes) or core (re-keys).
    #[arg(long, value_enum)]
    role: RoleArg,
    /// Worker threads (default: one per online CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// CPUs to pin workers to, in order (default: 0, 1, ...).
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Local IPv4 address media sockets bind to.
    #[arg(long, default_value = "0.0.0.0")]
    bind: Ipv4Addr,
    /// Demultiplexing layout: `small` (2776/2777), `small:PORT` (configured pair),
    /// `first-pair` (first pair of the media range) or `large` (six pairs at the range start).
    #[arg(long, default_value = "small")]
    demux: String,
    /// Media port range, inclusive.
    #[arg(long, default_value = "36000-59999")]
    media_range: String,
    /// Slots of the flow table when this process creates it.
    #[arg(long, default_value_t = 65536)]
    capacity: u32,
    /// Microseconds a worker's wait may hold out for a batch of completions once one has
    /// arrived (0: wake on the first). Trades added latency for fewer wake-ups per packet.
    #[arg(long, default_value_t = 50)]
    batch_window_us: u64,
    /// Completions that end a batch window early.
    #[arg(long, default_value_t = 32)]
    batch: u32,
    /// Attach the XDP media program to these interfaces (`IFACE` or `IFACE=SOURCE_IP`, the
    /// source address relayed packets take when they leave by it on a dual-NIC edge).
    /// Without it, or when it cannot be attached, the workers carry all media.
    #[arg(long, value_delimiter = ',')]
    xdp: Vec<xdp::XdpInterface>,
    /// Attach in generic (skb) mode only, never native: for veth peers that run no XDP
    /// program of their own, which natively redirected frames need.
    #[arg(long)]
    xdp_generic: bool,
    /// Where the XDP program's maps and links are pinned (default
    /// /sys/fs/bpf/edgeway/<node>).
    #[arg(long)]
    xdp_pin_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Edge,
    Core,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let config = media_config(&args)?;
    let dir = args
        .shm_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/dev/shm/edgeway").join(&args.node));
    let workers = args
        .workers
        .unwrap_or_else(edgeway_uring::online_cpus)
        .max(1);
    let cpus: Vec<usize> = if args.cpus.is_empty() {
        (0..edgeway_uring::online_cpus()).collect()
    } else {
        args.cpus.clone()
    };
    let table = worker::open_or_create_table(&dir, &config, args.capacity)?;
    table
        .publish_dataplane(std::process::id(), workers as u32)
        .context("publishing the data plane in the flow table header")?;
    eprintln!(
        "edgeway-dataplane: node {} ({}), role {:?}, {} worker(s) on cpus {:?}, demux ports {:?}, \
         media {}-{}",
        args.node,
        dir.display(),
        args.role,
        workers,
        &cpus[..workers.min(cpus.len())],
        config.demux_ports(),
        config.media_range.0,
        config.media_range.1,
    );
    let worker_cpus: Vec<usize> = (0..workers).map(|i| cpus[i % cpus.len()]).collect();
    let mut xdp_node = if args.xdp.is_empty() {
        xdp::publish_status(&dir, &XdpStatus::off("not requested (--xdp)"));
        None
    } else {
        let pin_dir = args
            .xdp_pin_dir
            .clone()
            .unwrap_or_else(|| edgeway_xdp::pin_dir(&args.node));
        let previous = XdpStatus::read(&dir);
        match xdp::XdpNode::start(
            &pin_dir,
            &args.xdp,
            args.xdp_generic,
            &config,
            &worker_cpus,
            &table,
            previous.as_ref(),
        ) {
            Ok((node, status)) => {
                xdp::publish_status(&dir, &status);
                Some(node)
            }
            Err(e) => {
                xdp::publish_status(&dir, &XdpStatus::off(&format!("{e:#}")));
                None
            }
        }
    };

    let uring = edgeway_uring::UringConfig {
        batch_window: Duration::from_micros(args.batch_window_us),
        batch_completions: args.batch,
        ..Default::default()
    };
    uring.validate().context("--batch / --batch-window-us")?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(workers);
    for (index, &cpu) in worker_cpus.iter().enumerate() {
        let spec = worker::WorkerSpec {
            index,
            workers,
            cpu,
            bind: args.bind,
            dir: dir.clone(),
            pin_dir: xdp_node
                .as_ref()
                .and_then(|n| n.pin_dir().map(Path::to_owned)),
            config: config.clone(),
            uring: uring.clone(),
            stop: Arc::clone(&stop),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("edgeway-w{index}"))
                .spawn(move || worker::run(spec))
                .context("spawning a worker thread")?,
        );
    }

    // The main thread keeps the heartbeat that edgewayctl reads, mirrors the table into the
    // XDP flow map, drains XDP's events, and notices a dead worker.
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if let Err(e) = table.heartbeat() {
            eprintln!("edgeway-dataplane: heartbeat: {e}");
        }
        if let Some(node) = xdp_node.as_mut() {
            if let Err(e) = node.sync(&table) {
                eprintln!("edgeway-dataplane: XDP flow map: {e:#}");
            }
            if let Err(e) = node.drain_events() {
                eprintln!("edgeway-dataplane: XDP events: {e:#}");
            }
        }
        if let Some(done) = threads.iter().position(|t| t.is_finished()) {
            stop.store(true, Ordering::Relaxed);
            let t = threads.swap_remove(done);
            let outcome = t.join();
            for t in threads {
                let _ = t.join();
            }
            match outcome {
                Ok(Ok(())) => bail!("worker {done} stopped"),
                Ok(Err(e)) => return Err(e.context(format!("worker {done} failed"))),
                Err(_) => bail!("worker {done} panicked"),
            }
        }
    }
}

/// The media configuration from the command line, validated.
fn media_config(args: &Args) -> Result<MediaConfig> {
    let (lo, hi) = args
        .media_range
        .split_once('-')
        .with_context(|| format!("--media-range {:?}: expected LOW-HIGH", args.media_range))?;
    let lo: u16 = lo.trim().parse().context("--media-range: low port")?;
    let hi: u16 = hi.trim().parse().context("--media-range: high port")?;
    let layout = match args.demux.as_str() {
        "small" => DemuxLayout::Small {
            configured: Some(edgeway_map_schema::DEMUX_RTP_PORT),
        },
        "first-pair" => DemuxLayout::Small { configured: None },
        "large" => DemuxLayout::Large,
        other => match other.strip_prefix("small:") {
            Some(p) => DemuxLayout::Small {
                configured: Some(
                    p.parse()
                        .with_context(|| format!("--demux {other:?}: port"))?,
                ),
            },
            None => bail!("--demux {other:?}: expected small, small:PORT, first-pair or large"),
        },
    };
    let role = match args.role {
        RoleArg::Edge => Role::Edge,
        RoleArg::Core => Role::Core,
    };
    let config = MediaConfig {
        role,
        layout,
        media_range: (lo, hi),
    };
    config.validate().context("media configuration")?;
    Ok(config)
}
