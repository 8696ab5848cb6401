//! The edge role (Expressway-E): media relayed between a client's port and the demux port
//! the core's media arrives on, with no crypto and no key in sight.
//!
//! Per relayed `m=` line the edge takes one client-facing pair `E`/`E+1` from the node's
//! allocator. SDP going inward (from the client) is rewritten to the edge's inside address
//! and the call's demux pair `D`/`D+1`; SDP going outward (from the core) to the edge's
//! public address and `E`/`E+1`, after noting where the core sends from (its `c=`/`m=`,
//! because the core sends from the port it receives on). Once the core's address is known,
//! four Relay entries carry the stream:
//!
//! | key | sends from | to | latch |
//! |---|---|---|---|
//! | `port(E)` | `D` | core RTP | the client, from its signalling IP only |
//! | `demux(D, core ip, core rtp)` | `E` | the client's latched source | |
//! | `port(E+1)` (RTCP) | `D+1` | core RTCP | the client |
//! | `demux(D+1, core ip, core rtcp)` (RTCP) | `E+1` | the client's latched RTCP source | |
//!
//! All of a call's entries use one demux pair and are owned by that pair's worker
//! (`pair % workers`, invariant 5). The edge passes `a=crypto`, directions and hold
//! through untouched: encryption is the core's to enforce. As on the core, the entries of
//! a call on hold (either direction) and all RTCP entries carry no idle timeout (the data
//! plane would otherwise remove them during a long hold, and nothing would reinstall them
//! at the resume; see `Directions::idle_timeout`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use edgeway_map_schema::{flags, Action, Endpoint, FlowEntry, FlowKey, DEMUX_RTP_PORT};

use crate::media::{hide_sender, inspect, reject, rewrite_address, Directions, Remote};
use crate::plan::{FlowUpdate, PortPool};
use crate::session::{call_lifecycle, Kind, Session, StreamPorts};
use crate::{flow_id, Leg, Limits, PlanError, Planned};

/// How an edge node relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// Where clients send media (the edge's public address).
    pub public_ip: Ipv4Addr,
    /// Where the core sends media (the address of the demux ports).
    pub inside_ip: Ipv4Addr,
    /// The RTP ports of the demux pairs (2776, or the six large pairs 36000..36010).
    pub demux_ports: Vec<u16>,
    /// Data-plane workers on this node.
    pub workers: u32,
    /// Entries idle this long are marked idle by the data plane (0: never).
    pub idle_timeout_ms: u32,
    /// Body and `m=` limits.
    pub limits: Limits,
}

impl EdgeConfig {
    /// A small/medium edge (demux pair 2776/2777) with one worker.
    pub fn new(public_ip: Ipv4Addr, inside_ip: Ipv4Addr) -> EdgeConfig {
        EdgeConfig {
            public_ip,
            inside_ip,
            demux_ports: vec![DEMUX_RTP_PORT],
            workers: 1,
            idle_timeout_ms: 0,
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct EdgeStream {
    /// Client-facing RTP port (RTCP the next), while the stream is relayed.
    port: Option<u16>,
    /// Where the core receives (and so sends from).
    core: Option<Remote>,
    clock_rate: u32,
    /// What each leg's SDP says about sending and receiving (hold).
    dirs: Directions,
}

impl StreamPorts for EdgeStream {
    fn pairs(&self) -> [Option<u16>; 2] {
        [self.port, None]
    }
}

/// One call's media on the edge. Feed it every SDP body crossing the edge, in order.
#[derive(Debug, Clone)]
pub struct EdgeCall {
    flows: EdgeFlows,
    session: Session<EdgeStream>,
}

/// What the entries of an edge call derive from, apart from its streams.
#[derive(Debug, Clone)]
struct EdgeFlows {
    config: EdgeConfig,
    call_id: u64,
    client_ip: Ipv4Addr,
    demux: u16,
    worker: u32,
}

impl EdgeCall {
    /// A call numbered `call_id` (unique on the node: flow ids derive from it) with the
    /// client whose signalling comes from `client_ip` (the only address that may latch).
    /// Its demux pair is `call_id % pairs`.
    pub fn new(config: &EdgeConfig, call_id: u64, client_ip: Ipv4Addr) -> EdgeCall {
        let pairs = config.demux_ports.len().max(1);
        let pair = (call_id % pairs as u64) as usize;
        EdgeCall {
            flows: EdgeFlows {
                demux: config
                    .demux_ports
                    .get(pair)
                    .copied()
                    .unwrap_or(DEMUX_RTP_PORT),
                worker: pair as u32 % config.workers.max(1),
                config: config.clone(),
                call_id,
                client_ip,
            },
            session: Session::new(call_id),
        }
    }

    /// An offer from `from` (the client: `Outside`; the core: `Inside`); returns the body
    /// to forward and the entries that are already known (the core's offers carry its
    /// address).
    pub fn offer(
        &mut self,
        from: Leg,
        now_ms: u64,
        body: &[u8],
        pool: &mut dyn PortPool,
    ) -> Result<Planned, PlanError> {
        self.step(Kind::Offer, from, now_ms, body, pool)
    }

    /// The answer to the pending offer, from the other leg.
    pub fn answer(
        &mut self,
        from: Leg,
        now_ms: u64,
        body: &[u8],
        pool: &mut dyn PortPool,
    ) -> Result<Planned, PlanError> {
        self.step(Kind::Answer, from, now_ms, body, pool)
    }

    call_lifecycle!();

    fn step(
        &mut self,
        kind: Kind,
        from: Leg,
        now_ms: u64,
        body: &[u8],
        pool: &mut dyn PortPool,
    ) -> Result<Planned, PlanError> {
        let flows = &self.flows;
        let desired = |s: &[EdgeStream]| flows.entries(s);
        self.session
            .run(kind, from, now_ms, pool, Some(&desired), |session, pool| {
                flows.rewrite(session, kind, from, now_ms, body, pool)
            })
    }
}

impl EdgeFlows {
    fn rewrite(
        &self,
        session: &mut Session<EdgeStream>,
        kind: Kind,
        from: Leg,
        now_ms: u64,
        body: &[u8],
        pool: &mut dyn PortPool,
    ) -> Result<Vec<u8>, PlanError> {
        let (mut sdp, lines) = inspect(body, &self.config.limits)?;
        session.check_count(kind, lines.len())?;
        let (to_ip, demux) = match from {
            Leg::Outside => (self.config.inside_ip, self.demux),
            Leg::Inside => (self.config.public_ip, 0),
        };
        for (i, line) in lines.iter().enumerate() {
            let stream = session.stream(i);
            // An answer cannot revive a stream its offer rejected (RFC 3264 §6).
            let rejected_by_offer = kind == Kind::Answer && stream.port.is_none();
            if !line.relayed || rejected_by_offer {
                *stream = EdgeStream::default();
                reject(&mut sdp, i);
                continue;
            }
            let port = match stream.port {
                Some(p) => p,
                None => {
                    let p = session.ledger.allocate(pool, now_ms)?;
                    session.streams[i].port = Some(p);
                    p
                }
            };
            let stream = &mut session.streams[i];
            stream.clock_rate = line.clock_rate;
            stream.dirs.note(from, line);
            if from == Leg::Inside {
                stream.core = line.remote.or(stream.core);
            }
            let ip = line.remote.map(|_| to_ip);
            let towards = if from == Leg::Outside { demux } else { port };
            rewrite_address(&mut sdp, i, ip, towards)?;
        }
        hide_sender(&mut sdp, to_ip)?;
        distinct_core_sources(&session.streams)?;
        Ok(sdp.to_bytes())
    }
}

impl EdgeFlows {
    fn entries(&self, streams: &[EdgeStream]) -> BTreeMap<FlowKey, FlowEntry> {
        let mut out = BTreeMap::new();
        for (i, s) in streams.iter().enumerate() {
            if let (Some(e), Some(core)) = (s.port, s.core) {
                self.stream_entries(i, e, core, s, &mut out);
            }
        }
        out
    }

    fn stream_entries(
        &self,
        index: usize,
        e: u16,
        core: Remote,
        s: &EdgeStream,
        out: &mut BTreeMap<FlowKey, FlowEntry>,
    ) {
        let timeout = self.config.idle_timeout_ms;
        let base = FlowEntry {
            flow_id: flow_id(self.call_id, index),
            action: Action::Relay as u8,
            worker: self.worker,
            clock_rate: s.clock_rate,
            ..FlowEntry::default()
        };
        for (client_port, demux, core_port, rtcp) in [
            (e, self.demux, core.rtp, 0),
            (e + 1, self.demux + 1, core.rtcp, flags::RTCP),
        ] {
            let client_key = FlowKey::port(client_port);
            let demux_key = FlowKey::demux(demux, core.ip.octets(), core_port);
            out.insert(
                client_key,
                FlowEntry {
                    flags: flags::LATCH | rtcp,
                    permit_ip: self.client_ip.octets(),
                    out_local_port: demux,
                    out_remote: Endpoint::new(core.ip.octets(), core_port),
                    peer: demux_key,
                    idle_timeout_ms: s.dirs.idle_timeout(rtcp != 0, timeout),
                    ..base
                },
            );
            out.insert(
                demux_key,
                FlowEntry {
                    flags: rtcp,
                    out_local_port: client_port,
                    peer: client_key,
                    idle_timeout_ms: s.dirs.idle_timeout(rtcp != 0, timeout),
                    ..base
                },
            );
        }
    }
}

/// The core's sources key the demux entries: no two streams (of this SDP, or one of it and
/// one on hold keeping its old address) may share an RTP or an RTCP source.
fn distinct_core_sources(streams: &[EdgeStream]) -> Result<(), PlanError> {
    let mut rtp = std::collections::BTreeSet::new();
    let mut rtcp = std::collections::BTreeSet::new();
    for (index, s) in streams.iter().enumerate() {
        let Some(core) = s.core.filter(|_| s.port.is_some()) else {
            continue;
        };
        for (seen, port) in [(&mut rtp, core.rtp), (&mut rtcp, core.rtcp)] {
            if !seen.insert((core.ip, port)) {
                return Err(PlanError::SharedPort {
                    index,
                    address: core.ip,
                    port,
                });
            }
        }
    }
    Ok(())
}
