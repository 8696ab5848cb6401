//! edgeway's XDP media program (`media.bpf.c`, built by this crate's build.rs with clang
//! against a header generated from `edgeway-map-schema`): loading it, pinning its maps under
//! `/sys/fs/bpf/edgeway/<node>/`, attaching it to interfaces, and reading and writing its
//! maps.
//!
//! How it is driven: [`MediaProgram::load`] loads the object and creates its maps, or reuses
//! the ones already pinned in the node's directory, so a restarted process finds the flows,
//! latches and counters of the one before it. The owner then writes the settings
//! ([`MediaProgram::set_config`]), the flows ([`MediaProgram::insert_flow`]), the workers'
//! CPUs and the egress interfaces, and attaches the program ([`MediaProgram::attach`]) in the
//! best mode the interface allows. [`MediaProgram::test_run`] runs the program on one packet
//! through `BPF_PROG_TEST_RUN`, which the packet-fixture tests use.
//!
//! It is also the flow table's BPF backend for writers: [`open_table`] opens a node's
//! shared-memory [`FlowTable`] with a [`PinnedFlowMap`] hook, so the handle's `insert` and
//! `remove` write the pinned `flows` map too, in the same call, after the shared-memory slot
//! is published. Workers keep reading the shared-memory table (no syscall per packet), and
//! the data plane's 50 ms mirror stays as the reconciler for writers that died between the
//! two writes. The control plane opens its table this way.
//!
//! This is an IO crate: the map value types are wrapped to tell aya they are plain old data,
//! and the setns/if_nametoindex calls are the only `unsafe` here.

#![warn(missing_docs)]

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aya::maps::{
    Array, CpuMap, DevMapHash, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap,
    PerCpuValues, RingBuf,
};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::{XdpLink, XdpLinkId};
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader, Pod};
use edgeway_flowtable::{FlowTable, MapHook, XdpStatus};
pub use edgeway_map_schema::{
    xdp_event, xdp_mode, FlowCounters, FlowEntry, FlowKey, XdpConfig, XdpCounters, XdpEvent,
    XdpLatch,
};

/// Where node directories of pinned maps live: node `N` pins under `PIN_ROOT/N/`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/edgeway";
/// The compiled program, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/media.bpf.o"));
/// The program's section name in the object.
const PROGRAM: &str = "edgeway_media";
/// Frames queued per CPU in the CPUMAP before the kernel drops.
const CPU_QUEUE: u32 = 2048;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why loading, attaching or a map operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel refused to load the object or a map (no privilege, verifier).
    #[error("loading the XDP program: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program operation failed (verifier, attach, test run).
    #[error("XDP program: {0}")]
    Program(#[from] ProgramError),
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// What aya said.
        source: MapError,
    },
    /// A CPUMAP or DEVMAP entry was refused.
    #[error("map {map}: {source}")]
    XdpMap {
        /// The map's name.
        map: &'static str,
        /// What aya said.
        source: aya::maps::xdp::XdpMapError,
    },
    /// The object lacks a map or program this crate expects (a build mismatch).
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
    /// A map is not pinned where it should be (no data plane has loaded the program for
    /// this node, or another pin directory was meant).
    #[error("no pinned map at {}: {source}", path.display())]
    NotPinned {
        /// The pin path.
        path: PathBuf,
        /// What aya said.
        source: MapError,
    },
    /// The pin directory could not be prepared.
    #[error("pin directory {}: {source}", path.display())]
    PinDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// No attach mode worked on the interface.
    #[error("attaching to {interface}: native: {native}; generic: {generic}")]
    Attach {
        /// The interface.
        interface: String,
        /// Why native (driver) mode failed.
        native: Box<Error>,
        /// Why generic (skb) mode failed.
        generic: Box<Error>,
    },
    /// A BPF link operation failed.
    #[error("XDP link: {0}")]
    Link(#[from] aya::programs::links::LinkError),
    /// A link could not be pinned.
    #[error("pinning {}: {reason}", path.display())]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// What the kernel said.
        reason: String,
    },
    /// The flow table refused (not found, another layout, ...).
    #[error(transparent)]
    Table(#[from] edgeway_flowtable::Error),
    /// `test_run` was given a packet it cannot run.
    #[error("test packet of {0} bytes: must be 14..=4096")]
    TestPacket(usize),
}

/// How the program sits on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver, before any allocation (the fast path).
    Native,
    /// After the kernel built an skb: works on every interface, slower.
    Generic,
}

impl AttachMode {
    /// Lower-case name for logs and `edgewayctl status`.
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

/// What [`MediaProgram::attach_pinned`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// Attached anew, in this mode.
    New(AttachMode),
    /// An earlier process's pinned link was kept and its program replaced by this one.
    Replaced,
}

/// What [`MediaProgram::test_run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestOutcome {
    /// The XDP action (`XDP_DROP` = 1, `XDP_PASS` = 2, `XDP_TX` = 3, `XDP_REDIRECT` = 4).
    pub action: u32,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
}

/// XDP actions, as [`TestOutcome::action`] reports them.
pub mod action {
    /// `XDP_ABORTED`.
    pub const ABORTED: u32 = 0;
    /// `XDP_DROP`.
    pub const DROP: u32 = 1;
    /// `XDP_PASS`.
    pub const PASS: u32 = 2;
    /// `XDP_TX`.
    pub const TX: u32 = 3;
    /// `XDP_REDIRECT`.
    pub const REDIRECT: u32 = 4;
}

// Map values cross to the kernel as bytes. The wrappers are `repr(transparent)` over the
// schema's `repr(C)` types, which are integers and byte arrays with explicit padding (checked
// by the schema crate's size assertions), so every bit pattern is a valid value.
macro_rules! pod {
    ($($name:ident($inner:ty)),* $(,)?) => {$(
        #[repr(transparent)]
        #[derive(Clone, Copy, Debug)]
        struct $name($inner);
        // SAFETY: repr(transparent) over a repr(C) type of integers and byte arrays with no
        // implicit padding: any bytes are a valid value and no byte is uninitialised.
        unsafe impl Pod for $name {}
    )*};
}
pod!(
    Key(FlowKey),
    Entry(FlowEntry),
    Counters(FlowCounters),
    Config(XdpConfig),
    Latch(XdpLatch),
    Node(XdpCounters),
);

/// The loaded program and its maps.
#[derive(Debug)]
pub struct MediaProgram {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
}

/// The pin directory of node `node`.
pub fn pin_dir(node: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(node)
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> Error {
    move |source| Error::Map { map, source }
}

impl MediaProgram {
    /// Loads the program. With `pin_dir`, its maps are pinned there (created 0700, bpffs
    /// mounted by the caller: scripts/setup does it) or, when a previous process pinned them,
    /// reused with everything in them; without, they live as long as this value.
    pub fn load(pin_dir: Option<&Path>) -> Result<Self> {
        // The object asks for pinning by name; an unpinned load pins in a fresh private
        // directory and removes the pins at once (the maps live on through their fds).
        let private;
        let dir = match pin_dir {
            Some(dir) => dir,
            None => {
                private = Path::new("/sys/fs/bpf").join(format!(
                    "edgeway-private-{}-{}",
                    std::process::id(),
                    unique()
                ));
                private.as_path()
            }
        };
        let pin_err = |source| Error::PinDir {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(pin_err)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(pin_err)?;
        let loaded = EbpfLoader::new()
            .default_map_pin_directory(dir)
            .load(OBJECT);
        if pin_dir.is_none() {
            let _ = fs::remove_dir_all(dir);
        }
        let mut program = MediaProgram {
            ebpf: loaded?,
            pin_dir: pin_dir.map(Path::to_owned),
        };
        program.xdp_mut()?.load()?;
        Ok(program)
    }

    fn xdp(&self) -> Result<&Xdp> {
        let p = self
            .ebpf
            .program(PROGRAM)
            .ok_or(Error::Missing("program edgeway_media"))?;
        Ok(p.try_into()?)
    }

    fn xdp_mut(&mut self) -> Result<&mut Xdp> {
        let p = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(Error::Missing("program edgeway_media"))?;
        Ok(p.try_into()?)
    }

    /// Where the maps are pinned, if they are.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map> {
        self.ebpf.map_mut(name).ok_or(Error::Missing(name))
    }

    fn map(&self, name: &'static str) -> Result<&Map> {
        self.ebpf.map(name).ok_or(Error::Missing(name))
    }

    /// Writes the program's settings.
    pub fn set_config(&mut self, config: &XdpConfig) -> Result<()> {
        let mut a: Array<&mut MapData, Config> =
            Array::try_from(self.map_mut("config")?).map_err(map_err("config"))?;
        a.set(0, Config(*config), 0).map_err(map_err("config"))
    }

    /// The program's settings.
    pub fn config(&self) -> Result<XdpConfig> {
        let a: Array<&MapData, Config> =
            Array::try_from(self.map("config")?).map_err(map_err("config"))?;
        Ok(a.get(&0, 0).map_err(map_err("config"))?.0)
    }

    /// Adds or replaces the entry for `key`. A replaced entry's latch holds only if its
    /// generation (low 16 bits) is unchanged.
    pub fn insert_flow(&mut self, key: FlowKey, entry: &FlowEntry) -> Result<()> {
        write_flow(self.map_mut("flows")?, key, entry)
    }

    /// Removes the entry for `key` with its latch and counters; false if there was none.
    pub fn remove_flow(&mut self, key: FlowKey) -> Result<bool> {
        let existed = delete_flow(self.map_mut("flows")?, key)?;
        delete_latch(self.map_mut("latches")?, key)?;
        delete_flow_counters(self.map_mut("flow_stats")?, key)?;
        Ok(existed)
    }

    /// The entry for `key`.
    pub fn flow(&self, key: FlowKey) -> Result<Option<FlowEntry>> {
        read_flow(self.map("flows")?, key)
    }

    /// Every entry's key.
    pub fn flow_keys(&self) -> Result<Vec<FlowKey>> {
        read_flow_keys(self.map("flows")?)
    }

    /// What the program latched for `key`, if anything.
    pub fn latch(&self, key: FlowKey) -> Result<Option<XdpLatch>> {
        read_latch(self.map("latches")?, key)
    }

    /// The entry's counters, summed over CPUs (None before its first packet).
    pub fn flow_counters(&self, key: FlowKey) -> Result<Option<FlowCounters>> {
        read_flow_counters(self.map("flow_stats")?, key)
    }

    /// The node-wide counters, summed over CPUs.
    pub fn counters(&self) -> Result<XdpCounters> {
        read_node_counters(self.map("node_stats")?)
    }

    /// Drops everything from `ip` (intrusion protection), counted as `blocked_source`.
    pub fn block(&mut self, ip: Ipv4Addr) -> Result<()> {
        write_blocked(self.map_mut("blocked")?, ip)
    }

    /// Lets `ip` through again; false if it was not blocked.
    pub fn unblock(&mut self, ip: Ipv4Addr) -> Result<bool> {
        delete_blocked(self.map_mut("blocked")?, ip)
    }

    /// Steers re-key packets of `worker`'s entries to `cpu` (its pinned core).
    pub fn set_worker_cpu(&mut self, worker: u32, cpu: u32) -> Result<()> {
        let mut cpus: CpuMap<&mut MapData> =
            CpuMap::try_from(self.map_mut("cpu_map")?).map_err(map_err("cpu_map"))?;
        cpus.set(cpu, CPU_QUEUE, None, 0)
            .map_err(|source| Error::XdpMap {
                map: "cpu_map",
                source,
            })?;
        let mut w: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut("worker_cpus")?).map_err(map_err("worker_cpus"))?;
        w.set(worker, cpu + 1, 0).map_err(map_err("worker_cpus"))
    }

    /// Lets relayed packets leave by interface `ifindex` (besides the one they came in by),
    /// with `source` as their source address there (None: the address they were sent to).
    pub fn add_tx_port(&mut self, ifindex: u32, source: Option<Ipv4Addr>) -> Result<()> {
        let mut d: DevMapHash<&mut MapData> =
            DevMapHash::try_from(self.map_mut("tx_ports")?).map_err(map_err("tx_ports"))?;
        d.insert(ifindex, ifindex, None, 0)
            .map_err(|source| Error::XdpMap {
                map: "tx_ports",
                source,
            })?;
        let mut a: HashMap<&mut MapData, u32, u32> =
            HashMap::try_from(self.map_mut("local_addrs")?).map_err(map_err("local_addrs"))?;
        match source {
            Some(ip) => a
                .insert(ifindex, u32::from_ne_bytes(ip.octets()), 0)
                .map_err(map_err("local_addrs")),
            None => remove_quietly(a.remove(&ifindex))
                .map(|_| ())
                .map_err(map_err("local_addrs")),
        }
    }

    /// Moves the events the program has written since the last call into `out`.
    pub fn drain_events(&mut self, out: &mut Vec<XdpEvent>) -> Result<usize> {
        let mut ring: RingBuf<&mut MapData> =
            RingBuf::try_from(self.map_mut("events")?).map_err(map_err("events"))?;
        let before = out.len();
        while let Some(item) = ring.next() {
            if let Some(ev) = parse_event(&item) {
                out.push(ev);
            }
        }
        Ok(out.len() - before)
    }

    /// Attaches to `interface`: natively where the driver can, generically otherwise. The
    /// program stays attached as long as this value lives.
    pub fn attach(&mut self, interface: &str) -> Result<AttachMode> {
        let xdp = self.xdp_mut()?;
        Ok(attach_best(xdp, interface, false)?.0)
    }

    /// Attaches to `interface` through a BPF link pinned in the node's directory
    /// (`link-<interface>`), so the program stays attached, and edge relay flows keep
    /// forwarding, after this process exits or is killed. When an earlier process left such a
    /// link, the program in it is replaced atomically (no packet sees no program) and
    /// [`Attached::Replaced`] says so. Needs a pinned load.
    /// `generic_only` skips native mode (veth peers without an XDP program of their own
    /// cannot take natively redirected frames).
    pub fn attach_pinned(&mut self, interface: &str, generic_only: bool) -> Result<Attached> {
        let dir = self
            .pin_dir
            .clone()
            .ok_or(Error::Missing("pin directory"))?;
        let path = dir.join(format!("link-{interface}"));
        let xdp = self.xdp_mut()?;
        if path.exists() {
            let old = PinnedLink::from_pin(&path)?
                .unpin()
                .map_err(|source| Error::PinDir {
                    path: path.clone(),
                    source,
                })?;
            let id = xdp.attach_to_link(XdpLink::try_from(old)?)?;
            pin_link(xdp.take_link(id)?, &path)?;
            return Ok(Attached::Replaced);
        }
        let (mode, id) = attach_best(xdp, interface, generic_only)?;
        pin_link(xdp.take_link(id)?, &path)?;
        Ok(Attached::New(mode))
    }

    /// Detaches from `interface` for good: removes the link pinned by
    /// [`MediaProgram::attach_pinned`]. False if there was none.
    pub fn detach_pinned(&mut self, interface: &str) -> Result<bool> {
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(false);
        };
        let path = dir.join(format!("link-{interface}"));
        if !path.exists() {
            return Ok(false);
        }
        fs::remove_file(&path).map_err(|source| Error::PinDir { path, source })?;
        Ok(true)
    }

    /// Runs the program `repeat` times on `packet` and returns the kernel's average time per
    /// run in nanoseconds (the program alone: no driver, no wire).
    pub fn time_run(&self, packet: &[u8], repeat: u32) -> Result<f64> {
        let xdp = self.xdp()?;
        check_test_packet(packet)?;
        let result = xdp.test_run(TestRunOptions {
            data_in: Some(packet),
            repeat: repeat.max(1),
            ..TestRunOptions::default()
        })?;
        Ok(result.duration.as_nanos() as f64)
    }

    /// Injects `count` copies of `frame` as live frames arriving on `ingress_ifindex`
    /// (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`, Linux 5.18+), `batch` at a
    /// time: the program runs on each, and what it returns really happens (XDP_TX leaves by
    /// that interface, XDP_REDIRECT by the map's, XDP_PASS goes up the stack). A packet
    /// generator that is no socket, on the calling thread's CPU; perf-lab/xdp drives it.
    /// Returns the kernel's mean time per frame.
    pub fn inject_live(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
        count: u32,
        batch: u32,
    ) -> Result<std::time::Duration> {
        let xdp = self.xdp()?;
        check_test_packet(frame)?;
        let ctx = xdp_md(frame.len() as u32, ingress_ifindex);
        let result = xdp.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx[..]),
            repeat: count.max(1),
            attrs: aya::programs::TestRunAttrs::new().xdp_live_frames(batch.max(1)),
            ..TestRunOptions::default()
        })?;
        Ok(result.duration)
    }

    /// Runs the program once on `packet` (an Ethernet frame) through `BPF_PROG_TEST_RUN`, as
    /// if it arrived on interface `ingress_ifindex` (0: loopback), and returns the action and
    /// the packet as the program left it.
    pub fn test_run(&self, packet: &[u8], ingress_ifindex: u32) -> Result<TestOutcome> {
        let xdp = self.xdp()?;
        check_test_packet(packet)?;
        let mut out = vec![0u8; packet.len() + 256];
        let ctx = xdp_md(packet.len() as u32, ingress_ifindex);
        let result = xdp.test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ctx_in: (ingress_ifindex != 0).then_some(&ctx[..]),
            ..TestRunOptions::default()
        })?;
        out.truncate(result.data_size_out as usize);
        Ok(TestOutcome {
            action: result.return_value,
            packet: out,
        })
    }
}

/// A read-only view of a node's pinned maps, for tools that inspect a running (or killed)
/// data plane without loading a program of their own: `edgewayctl flows` and `status`.
/// Every read goes to the kernel, so each call sees the program's current counts.
#[derive(Debug)]
pub struct PinnedMaps {
    dir: PathBuf,
    flows: Map,
    latches: Map,
    flow_stats: Map,
    node_stats: Map,
}

/// One BPF link pinned in a node's directory by [`MediaProgram::attach_pinned`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedLinkInfo {
    /// The interface named in the pin (`link-<interface>`).
    pub interface: String,
    /// The kernel's id of the link.
    pub link_id: u32,
    /// The id of the program the link runs (0: the link no longer holds one).
    pub program_id: u32,
}

/// The map pinned as `name` in `dir`.
fn open_pinned(dir: &Path, name: &'static str) -> Result<Map> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| Error::NotPinned {
        path: path.clone(),
        source,
    })?;
    Map::from_map_data(data).map_err(map_err(name))
}

impl PinnedMaps {
    /// Opens the maps pinned in `dir` (`/sys/fs/bpf/edgeway/<node>/`, see [`pin_dir`]).
    pub fn open(dir: &Path) -> Result<Self> {
        let open = |name: &'static str| open_pinned(dir, name);
        Ok(PinnedMaps {
            dir: dir.to_owned(),
            flows: open("flows")?,
            latches: open("latches")?,
            flow_stats: open("flow_stats")?,
            node_stats: open("node_stats")?,
        })
    }

    /// The directory the maps are pinned in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every entry in the program's flow map.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowEntry)>> {
        let m: HashMap<&MapData, Key, Entry> =
            HashMap::try_from(&self.flows).map_err(map_err("flows"))?;
        m.iter()
            .map(|kv| kv.map(|(k, e)| (k.0, e.0)))
            .collect::<Result<_, _>>()
            .map_err(map_err("flows"))
    }

    /// The entry for `key`.
    pub fn flow(&self, key: FlowKey) -> Result<Option<FlowEntry>> {
        read_flow(&self.flows, key)
    }

    /// What the program latched for `key`, if anything.
    pub fn latch(&self, key: FlowKey) -> Result<Option<XdpLatch>> {
        read_latch(&self.latches, key)
    }

    /// The entry's counters, summed over CPUs (None before its first packet).
    pub fn flow_counters(&self, key: FlowKey) -> Result<Option<FlowCounters>> {
        read_flow_counters(&self.flow_stats, key)
    }

    /// Every entry's counters, summed over CPUs, in one pass over the map.
    pub fn all_flow_counters(&self) -> Result<Vec<(FlowKey, FlowCounters)>> {
        let m: PerCpuHashMap<&MapData, Key, Counters> =
            PerCpuHashMap::try_from(&self.flow_stats).map_err(map_err("flow_stats"))?;
        m.iter()
            .map(|kv| kv.map(|(k, per_cpu)| (k.0, sum_flow_counters(&per_cpu))))
            .collect::<Result<_, _>>()
            .map_err(map_err("flow_stats"))
    }

    /// The node-wide counters, summed over CPUs.
    pub fn counters(&self) -> Result<XdpCounters> {
        read_node_counters(&self.node_stats)
    }

    /// The links pinned beside the maps, one per attached interface.
    pub fn links(&self) -> Result<Vec<PinnedLinkInfo>> {
        pinned_links(&self.dir)
    }
}

impl PinnedMaps {
    /// Adds or replaces `key`'s entry in the program's flow map, as
    /// [`MediaProgram::insert_flow`] does (a latch holds only while the generation does).
    pub fn insert_flow(&mut self, key: FlowKey, entry: &FlowEntry) -> Result<()> {
        write_flow(&mut self.flows, key, entry)
    }

    /// Removes `key`'s entry with its latch and counters, as [`MediaProgram::remove_flow`]
    /// does; false if there was none.
    pub fn remove_flow(&mut self, key: FlowKey) -> Result<bool> {
        let existed = delete_flow(&mut self.flows, key)?;
        delete_latch(&mut self.latches, key)?;
        delete_flow_counters(&mut self.flow_stats, key)?;
        Ok(existed)
    }
}

/// A node's pinned `blocked` map (source IPv4 addresses the program drops whatever they
/// carry), for intrusion protection in edgeway-control: it writes each block and lift here,
/// so media and any UDP from a blocked address die in the kernel, with or without a data
/// plane running. Every call is one syscall on the pinned map.
#[derive(Debug)]
pub struct PinnedBlockedMap {
    dir: PathBuf,
    blocked: Map,
}

impl PinnedBlockedMap {
    /// Opens the `blocked` map pinned in `dir` (see [`pin_dir`]).
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(PinnedBlockedMap {
            dir: dir.to_owned(),
            blocked: open_pinned(dir, "blocked")?,
        })
    }

    /// The directory the map is pinned in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Drops everything from `ip` from now on, counted as `blocked_source`.
    pub fn block(&mut self, ip: Ipv4Addr) -> Result<()> {
        write_blocked(&mut self.blocked, ip)
    }

    /// Lets `ip` through again; false if it was not in the map.
    pub fn unblock(&mut self, ip: Ipv4Addr) -> Result<bool> {
        delete_blocked(&mut self.blocked, ip)
    }

    /// Every address in the map.
    pub fn addresses(&self) -> Result<Vec<Ipv4Addr>> {
        let m: HashMap<&MapData, u32, u32> =
            HashMap::try_from(&self.blocked).map_err(map_err("blocked"))?;
        m.keys()
            .map(|k| k.map(|k| Ipv4Addr::from(k.to_ne_bytes())))
            .collect::<Result<_, _>>()
            .map_err(map_err("blocked"))
    }
}

/// The flow table's BPF backend: a [`MapHook`] that writes every insert and remove of a
/// [`FlowTable`] handle into the node's pinned `flows` map (and drops the removed flow's
/// latch and counters) in the same call, so XDP relays or drops by the new entry from the
/// very next packet instead of after the data plane's next 50 ms mirror pass. Open a table
/// with it through [`open_table`].
#[derive(Debug)]
pub struct PinnedFlowMap {
    maps: std::sync::Mutex<PinnedMaps>,
}

impl PinnedFlowMap {
    /// Opens the maps pinned in `dir` for writing.
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(PinnedFlowMap {
            maps: std::sync::Mutex::new(PinnedMaps::open(dir)?),
        })
    }

    fn with_maps<R>(&self, f: impl FnOnce(&mut PinnedMaps) -> Result<R>) -> Result<R, String> {
        // A panic in another writer thread cannot leave a map half-written: each write is
        // one syscall.
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut maps).map_err(|e| e.to_string())
    }
}

impl MapHook for PinnedFlowMap {
    fn inserted(&self, key: &FlowKey, entry: &FlowEntry) -> Result<(), String> {
        self.with_maps(|m| m.insert_flow(*key, entry))
    }

    fn removed(&self, key: &FlowKey) -> Result<(), String> {
        self.with_maps(|m| m.remove_flow(*key).map(|_| ()))
    }

    fn describe(&self) -> String {
        let dir = self
            .with_maps(|m| Ok(m.dir().to_owned()))
            .unwrap_or_default();
        format!("the XDP flows map in {}", dir.display())
    }
}

/// Where a writer finds a node's pinned maps: `explicit`, else the directory the data plane
/// recorded in the table directory's XDP status, else `/sys/fs/bpf/edgeway/<node>/` with
/// the node named by the table directory's last component.
pub fn pin_dir_for_table(table_dir: &Path, explicit: Option<&Path>) -> PathBuf {
    if let Some(d) = explicit {
        return d.to_owned();
    }
    XdpStatus::read(table_dir)
        .and_then(|s| s.pin_dir())
        .unwrap_or_else(|| {
            pin_dir(
                &table_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        })
}

/// Opens the flow table in `table_dir` for a writer (the control plane, `edgewayctl flow`,
/// the load generator's setup): when the node has pinned maps (see [`pin_dir_for_table`]),
/// the handle's [`FlowTable::insert`] and [`FlowTable::remove`] also write the XDP `flows`
/// map before they return, through [`PinnedFlowMap`]; without pins it is a plain table and
/// the workers carry the media. Returns the pin directory in use. Pins that exist but cannot
/// be opened (not root) are an error: a writer that skipped them would let XDP drop the new
/// flow's packets until the next mirror pass.
pub fn open_table(
    table_dir: &Path,
    explicit_pin_dir: Option<&Path>,
) -> Result<(FlowTable, Option<PathBuf>)> {
    let mut table = FlowTable::open_at(table_dir)?;
    let dir = pin_dir_for_table(table_dir, explicit_pin_dir);
    // An explicit directory without pins fails below, naming the missing pin.
    if explicit_pin_dir.is_none() && !dir.join("flows").exists() {
        return Ok((table, None));
    }
    table.set_map_hook(Box::new(PinnedFlowMap::open(&dir)?));
    Ok((table, Some(dir)))
}

/// The links pinned in `dir` by [`MediaProgram::attach_pinned`], sorted by interface.
pub fn pinned_links(dir: &Path) -> Result<Vec<PinnedLinkInfo>> {
    let pin_err = |source| Error::PinDir {
        path: dir.to_owned(),
        source,
    };
    let mut links = Vec::new();
    for item in fs::read_dir(dir).map_err(pin_err)? {
        let item = item.map_err(pin_err)?;
        let name = item.file_name().to_string_lossy().into_owned();
        let Some(interface) = name.strip_prefix("link-") else {
            continue;
        };
        let info = FdLink::from(PinnedLink::from_pin(item.path())?).info()?;
        links.push(PinnedLinkInfo {
            interface: interface.to_owned(),
            link_id: info.id(),
            program_id: info.program_id(),
        });
    }
    links.sort_by(|a, b| a.interface.cmp(&b.interface));
    Ok(links)
}

/// The kernel's CLOCK_MONOTONIC now, in ns: the clock of [`XdpEvent::ktime_ns`]
/// (`bpf_ktime_get_ns`), so an event's age is `monotonic_ns() - ktime_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the value we own; CLOCK_MONOTONIC
    // always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn write_flow(map: &mut Map, key: FlowKey, entry: &FlowEntry) -> Result<()> {
    let mut m: HashMap<&mut MapData, Key, Entry> =
        HashMap::try_from(map).map_err(map_err("flows"))?;
    m.insert(Key(key), Entry(*entry), 0)
        .map_err(map_err("flows"))
}

fn delete_flow(map: &mut Map, key: FlowKey) -> Result<bool> {
    let mut m: HashMap<&mut MapData, Key, Entry> =
        HashMap::try_from(map).map_err(map_err("flows"))?;
    remove_quietly(m.remove(&Key(key))).map_err(map_err("flows"))
}

/// The `blocked` map's key for `ip`: its packet bytes, as the program reads `saddr`.
fn blocked_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn write_blocked(map: &mut Map, ip: Ipv4Addr) -> Result<()> {
    let mut m: HashMap<&mut MapData, u32, u32> =
        HashMap::try_from(map).map_err(map_err("blocked"))?;
    m.insert(blocked_key(ip), 1, 0).map_err(map_err("blocked"))
}

fn delete_blocked(map: &mut Map, ip: Ipv4Addr) -> Result<bool> {
    let mut m: HashMap<&mut MapData, u32, u32> =
        HashMap::try_from(map).map_err(map_err("blocked"))?;
    remove_quietly(m.remove(&blocked_key(ip))).map_err(map_err("blocked"))
}

fn delete_latch(map: &mut Map, key: FlowKey) -> Result<bool> {
    let mut m: HashMap<&mut MapData, Key, Latch> =
        HashMap::try_from(map).map_err(map_err("latches"))?;
    remove_quietly(m.remove(&Key(key))).map_err(map_err("latches"))
}

fn delete_flow_counters(map: &mut Map, key: FlowKey) -> Result<bool> {
    let mut m: PerCpuHashMap<&mut MapData, Key, Counters> =
        PerCpuHashMap::try_from(map).map_err(map_err("flow_stats"))?;
    remove_quietly(m.remove(&Key(key))).map_err(map_err("flow_stats"))
}

fn read_flow(map: &Map, key: FlowKey) -> Result<Option<FlowEntry>> {
    let m: HashMap<&MapData, Key, Entry> = HashMap::try_from(map).map_err(map_err("flows"))?;
    found(m.get(&Key(key), 0).map(|e| e.0)).map_err(map_err("flows"))
}

fn read_flow_keys(map: &Map) -> Result<Vec<FlowKey>> {
    let m: HashMap<&MapData, Key, Entry> = HashMap::try_from(map).map_err(map_err("flows"))?;
    m.keys()
        .map(|k| k.map(|k| k.0))
        .collect::<Result<_, _>>()
        .map_err(map_err("flows"))
}

fn read_latch(map: &Map, key: FlowKey) -> Result<Option<XdpLatch>> {
    let m: HashMap<&MapData, Key, Latch> = HashMap::try_from(map).map_err(map_err("latches"))?;
    found(m.get(&Key(key), 0).map(|l| l.0)).map_err(map_err("latches"))
}

fn read_flow_counters(map: &Map, key: FlowKey) -> Result<Option<FlowCounters>> {
    let m: PerCpuHashMap<&MapData, Key, Counters> =
        PerCpuHashMap::try_from(map).map_err(map_err("flow_stats"))?;
    let per_cpu = found(m.get(&Key(key), 0)).map_err(map_err("flow_stats"))?;
    Ok(per_cpu.map(|p| sum_flow_counters(&p)))
}

fn sum_flow_counters(per_cpu: &PerCpuValues<Counters>) -> FlowCounters {
    let mut total = FlowCounters::default();
    for c in per_cpu.iter() {
        total.accumulate(&c.0);
    }
    total
}

fn read_node_counters(map: &Map) -> Result<XdpCounters> {
    let a: PerCpuArray<&MapData, Node> =
        PerCpuArray::try_from(map).map_err(map_err("node_stats"))?;
    let per_cpu: PerCpuValues<Node> = a.get(&0, 0).map_err(map_err("node_stats"))?;
    let mut total = XdpCounters::default();
    for c in per_cpu.iter() {
        total.accumulate(&c.0);
    }
    Ok(total)
}

/// Moves the calling thread into the network namespace at `path` (`/run/netns/<name>`), as
/// `nsenter --net` does for a process: loaders attach there, and test runs resolve their
/// ingress interface, routes and neighbours there. Other threads stay where they were.
pub fn enter_network_namespace(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ns = fs::File::open(path)?;
    // SAFETY: setns(2) on a file descriptor we own for the call's duration; it changes only
    // the calling thread's namespace and touches no memory of ours.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Native mode where the driver has it, generic otherwise.
fn attach_best(
    xdp: &mut Xdp,
    interface: &str,
    generic_only: bool,
) -> Result<(AttachMode, XdpLinkId)> {
    let native = if generic_only {
        ProgramError::UnknownInterface {
            name: format!("{interface} (native mode not tried: generic only)"),
        }
    } else {
        match xdp.attach(interface, XdpMode::Driver) {
            Ok(id) => return Ok((AttachMode::Native, id)),
            Err(e) => e,
        }
    };
    match xdp.attach(interface, XdpMode::Skb) {
        Ok(id) => Ok((AttachMode::Generic, id)),
        Err(generic) => Err(Error::Attach {
            interface: interface.to_owned(),
            native: Box::new(native.into()),
            generic: Box::new(generic.into()),
        }),
    }
}

fn pin_link(link: XdpLink, path: &Path) -> Result<()> {
    FdLink::try_from(link)?.pin(path).map_err(|e| Error::Pin {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(())
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn interface_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: if_nametoindex reads the NUL-terminated string we own for the call's duration.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// `BPF_PROG_TEST_RUN` takes Ethernet frames up to a page.
fn check_test_packet(packet: &[u8]) -> Result<()> {
    if !(14..=4096).contains(&packet.len()) {
        return Err(Error::TestPacket(packet.len()));
    }
    Ok(())
}

/// `struct xdp_md` for a test run: data 0..len, arriving on `ifindex`, queue 0.
fn xdp_md(len: u32, ifindex: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&len.to_ne_bytes()); // data_end
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes()); // ingress_ifindex
    ctx
}

fn parse_event(bytes: &[u8]) -> Option<XdpEvent> {
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(bytes.get(o..o + 4)?.try_into().ok()?))
    };
    let u16_at = |o: usize| -> Option<u16> {
        Some(u16::from_ne_bytes(bytes.get(o..o + 2)?.try_into().ok()?))
    };
    let ip_at = |o: usize| -> Option<[u8; 4]> { bytes.get(o..o + 4)?.try_into().ok() };
    Some(XdpEvent {
        kind: u32_at(0)?,
        count: u32_at(4)?,
        key: FlowKey::demux(u16_at(12)?, ip_at(8)?, u16_at(14)?),
        src: edgeway_map_schema::Endpoint::new(ip_at(16)?, u16_at(20)?),
        ktime_ns: u64::from_ne_bytes(bytes.get(24..32)?.try_into().ok()?),
    })
}

/// A removal of an absent key is not an error for us.
fn remove_quietly(r: Result<(), MapError>) -> Result<bool, MapError> {
    match r {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// A lookup of an absent key is `None`, not an error.
fn found<T>(r: Result<T, MapError>) -> Result<Option<T>, MapError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_in_the_schema_layout() {
        let mut b = vec![0u8; 32];
        b[0..4].copy_from_slice(&xdp_event::NO_FLOW.to_ne_bytes());
        b[4..8].copy_from_slice(&7u32.to_ne_bytes());
        b[8..12].copy_from_slice(&[203, 0, 113, 9]);
        b[12..14].copy_from_slice(&40_000u16.to_ne_bytes());
        b[16..20].copy_from_slice(&[198, 51, 100, 1]);
        b[20..22].copy_from_slice(&5004u16.to_ne_bytes());
        b[24..32].copy_from_slice(&99u64.to_ne_bytes());
        let ev = parse_event(&b).expect("a full record");
        assert_eq!(ev.kind, xdp_event::NO_FLOW);
        assert_eq!(ev.count, 7);
        assert_eq!(ev.key.local_port, 40_000);
        assert_eq!(ev.key.remote_ip, [203, 0, 113, 9]);
        assert_eq!(ev.src.port, 5004);
        assert_eq!(ev.ktime_ns, 99);
        assert_eq!(parse_event(&b[..31]), None, "a short record is refused");
    }
}
