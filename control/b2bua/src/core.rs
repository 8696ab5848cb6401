//! The core role (Expressway-C): a B2BUA's media. Two legs per call: `Outside` towards the
//! edge (the remote client), always SRTP, and `Inside` towards the phone, SRTP or RTP by the
//! phone's security profile. The core never forwards a key: each leg gets fresh SDES keys
//! (RFC 4568) from the caller's CSPRNG, and the data plane re-keys every packet.
//!
//! Per relayed `m=` line the core takes two pairs: `E`/`E+1` facing the edge and `P`/`P+1`
//! facing the phone. SDP towards the phone says `inside_ip:P`, towards the edge
//! `outside_ip:E`. At the answer four Rekey entries carry the stream:
//!
//! | key | in (decrypt) | out (encrypt) | sends from → to | flags |
//! |---|---|---|---|---|
//! | `port(E)` | client's key | core→phone key / plain | `P` → phone RTP | |
//! | `port(P)` | phone's key / plain | core→client key | `E` → edge demux RTP | LATCH (phone IP), KEEPALIVE |
//! | `port(E+1)` | client's key | core→phone / plain | `P+1` → phone RTCP | RTCP |
//! | `port(P+1)` | phone's / plain | core→client | `E+1` → edge demux RTCP | RTCP, LATCH, KEEPALIVE |
//!
//! The KEEPALIVE entries make the core send first towards the edge's demux port (an empty
//! datagram at install and whenever idle), which opens and holds the firewall pinhole
//! (the edge's demux entry is keyed by exactly that source). All entries of a call are
//! owned by worker `call_id % workers` (invariant 5).
//!
//! Hold: a leg whose SDP says it will not send (`recvonly`, `inactive`, or `c=0.0.0.0`)
//! has its RTP ingress from the edge set to Drop (counted as `action_drop`); the phone's
//! ingress stays Rekey because it carries the pinhole keepalive. Resume restores Rekey.
//! While either direction is on hold (its sender's SDP says it will not send, or its
//! receiver's that it will not receive), the call's entries carry no idle timeout, nor do
//! RTCP entries ever (`Directions::idle_timeout`): the data plane never marks them idle or
//! removes them, so a hold longer than `idle_timeout_ms` keeps the call, its keepalive and
//! its entries, even a one-way hold whose holder sends nothing; the resume replaces them
//! with the timeout again, which restarts their idle clock.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use edgeway_flowtable::srtp_params_from_crypto;
use edgeway_map_schema::{flags, Action, Endpoint, FlowEntry, FlowKey, SrtpParams};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::SrtpProfile;
use rand_core::{CryptoRng, RngCore};

use crate::media::{
    choose_crypto, hide_sender, inspect, reject, rewrite_address, set_keys, usable_crypto,
    Directions, MediaLine, Remote,
};
use crate::plan::{FlowUpdate, PortPool};
use crate::session::{call_lifecycle, Kind, Session, StreamPorts};
use crate::{flow_id, Leg, Limits, PlanError, Planned};

/// How a core node runs its calls' media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// The core's media address as the edge sees it.
    pub outside_ip: Ipv4Addr,
    /// The core's media address as phones see it.
    pub inside_ip: Ipv4Addr,
    /// Data-plane workers on this node.
    pub workers: u32,
    /// Pinhole keepalive interval towards the edge (ms; 0: the data plane's 5000).
    pub keepalive_ms: u32,
    /// Entries idle this long are marked idle by the data plane (0: never).
    pub idle_timeout_ms: u32,
    /// Suites the core accepts and offers, in preference order (strongest first).
    pub suites: Vec<SrtpProfile>,
    /// Body and `m=` limits.
    pub limits: Limits,
}

impl CoreConfig {
    /// One worker, every suite of edgeway-srtp strongest first.
    pub fn new(outside_ip: Ipv4Addr, inside_ip: Ipv4Addr) -> CoreConfig {
        CoreConfig {
            outside_ip,
            inside_ip,
            workers: 1,
            keepalive_ms: 0,
            idle_timeout_ms: 0,
            suites: SrtpProfile::ALL.to_vec(),
            limits: Limits::default(),
        }
    }
}

/// The inside phone's security profile (Unified CM's phone security profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsideSecurity {
    /// Encrypted: SRTP with SDES on the inside leg too.
    Secure,
    /// Non-secure: plain RTP inside.
    NonSecure,
}

/// An SDES attribute and the flow-table keying it gives. `Debug` omits the key.
#[derive(Clone, PartialEq, Eq)]
struct Key {
    attr: CryptoAttribute,
    params: SrtpParams,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({} {})", self.attr.tag, self.attr.profile)
    }
}

impl Key {
    fn new(attr: CryptoAttribute) -> Result<Key, PlanError> {
        let params = srtp_params_from_crypto(&attr.to_string())
            .map_err(|e| PlanError::Keying(e.to_string()))?;
        Ok(Key { attr, params })
    }

    fn generate<R: RngCore + CryptoRng>(
        tag: u32,
        profile: SrtpProfile,
        rng: &mut R,
    ) -> Result<Key, PlanError> {
        Key::new(CryptoAttribute::generate(tag, profile, rng))
    }

    /// `self` answered under `tag` when its suite is `profile`, else a fresh key.
    fn reuse_or_generate<R: RngCore + CryptoRng>(
        current: &Option<Key>,
        tag: u32,
        profile: SrtpProfile,
        rng: &mut R,
    ) -> Result<Key, PlanError> {
        match current {
            Some(k) if k.attr.profile == profile => {
                let mut k = k.clone();
                k.attr.tag = tag;
                Ok(k)
            }
            _ => Key::generate(tag, profile, rng),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct CoreStream {
    /// Edge-facing RTP port.
    e: Option<u16>,
    /// Phone-facing RTP port.
    p: Option<u16>,
    edge: Option<Remote>,
    phone: Option<Remote>,
    /// What each leg's SDP says about sending and receiving (hold).
    dirs: Directions,
    clock_rate: u32,
    /// What the client encrypts with (the core decrypts).
    client_tx: Option<Key>,
    /// What the core encrypts towards the client with.
    client_rx: Option<Key>,
    /// What the phone encrypts with; `None`: plain RTP.
    phone_tx: Option<Key>,
    /// What the core encrypts towards the phone with; `None`: plain RTP.
    phone_rx: Option<Key>,
    /// The keys the core offered in its last offer (to the leg that answers).
    offered: Vec<Key>,
}

impl StreamPorts for CoreStream {
    fn pairs(&self) -> [Option<u16>; 2] {
        [self.e, self.p]
    }
}

/// One call's media on the core, both legs. Feed it every SDP body of either dialog.
#[derive(Debug, Clone)]
pub struct CoreCall {
    flows: CoreFlows,
    session: Session<CoreStream>,
}

/// What the entries of a core call derive from, apart from its streams.
#[derive(Debug, Clone)]
struct CoreFlows {
    config: CoreConfig,
    call_id: u64,
    inside: InsideSecurity,
    worker: u32,
}

impl CoreCall {
    /// A call numbered `call_id` (unique on the node: flow ids derive from it) to or from a
    /// phone whose profile is `inside`.
    pub fn new(config: &CoreConfig, call_id: u64, inside: InsideSecurity) -> CoreCall {
        CoreCall {
            flows: CoreFlows {
                worker: (call_id % u64::from(config.workers.max(1))) as u32,
                config: config.clone(),
                call_id,
                inside,
            },
            session: Session::new(call_id),
        }
    }

    /// An offer from `from`; returns the offer for the other leg (fresh keys, the core's
    /// addresses). Entries change only at the answer.
    pub fn offer<R: RngCore + CryptoRng>(
        &mut self,
        from: Leg,
        now_ms: u64,
        body: &[u8],
        pool: &mut dyn PortPool,
        rng: &mut R,
    ) -> Result<Planned, PlanError> {
        self.step(Kind::Offer, from, now_ms, body, pool, rng)
    }

    /// The answer from `from` to the other leg's pending offer; returns the answer for the
    /// other leg and the entries to program.
    pub fn answer<R: RngCore + CryptoRng>(
        &mut self,
        from: Leg,
        now_ms: u64,
        body: &[u8],
        pool: &mut dyn PortPool,
        rng: &mut R,
    ) -> Result<Planned, PlanError> {
        self.step(Kind::Answer, from, now_ms, body, pool, rng)
    }

    call_lifecycle!();

    fn step<R: RngCore + CryptoRng>(
        &mut self,
        kind: Kind,
        from: Leg,
        now_ms: u64,
        body: &[u8],
        pool: &mut dyn PortPool,
        rng: &mut R,
    ) -> Result<Planned, PlanError> {
        let flows = &self.flows;
        let desired = |s: &[CoreStream]| flows.entries(s);
        let sync: Option<&dyn Fn(&[CoreStream]) -> _> = match kind {
            Kind::Offer => None,
            Kind::Answer => Some(&desired),
        };
        self.session
            .run(kind, from, now_ms, pool, sync, |session, pool| {
                flows.rewrite(session, kind, from, now_ms, body, pool, rng)
            })
    }
}

impl CoreFlows {
    #[allow(clippy::too_many_arguments)]
    fn rewrite<R: RngCore + CryptoRng>(
        &self,
        session: &mut Session<CoreStream>,
        kind: Kind,
        from: Leg,
        now_ms: u64,
        body: &[u8],
        pool: &mut dyn PortPool,
        rng: &mut R,
    ) -> Result<Vec<u8>, PlanError> {
        let (mut sdp, lines) = inspect(body, &self.config.limits)?;
        session.check_count(kind, lines.len())?;
        let to_ip = match from {
            Leg::Outside => self.config.inside_ip,
            Leg::Inside => self.config.outside_ip,
        };
        for (i, line) in lines.iter().enumerate() {
            let offered_here = kind == Kind::Answer && session.streams[i].e.is_none();
            if !line.relayed || offered_here {
                *session.stream(i) = CoreStream::default();
                reject(&mut sdp, i);
                continue;
            }
            if session.stream(i).e.is_none() {
                let e = session.ledger.allocate(pool, now_ms)?;
                session.streams[i].e = Some(e);
                let p = session.ledger.allocate(pool, now_ms)?;
                session.streams[i].p = Some(p);
            }
            let keys = self.negotiate(session, kind, from, i, line, rng)?;
            let s = &mut session.streams[i];
            s.clock_rate = line.clock_rate;
            s.dirs.note(from, line);
            let port = match from {
                Leg::Outside => {
                    s.edge = line.remote.or(s.edge);
                    s.p
                }
                Leg::Inside => {
                    s.phone = line.remote.or(s.phone);
                    s.e
                }
            };
            let attrs: Vec<CryptoAttribute> = keys.into_iter().map(|k| k.attr).collect();
            set_keys(&mut sdp, i, &attrs);
            rewrite_address(&mut sdp, i, line.remote.map(|_| to_ip), port.unwrap_or(0))?;
        }
        hide_sender(&mut sdp, to_ip)?;
        Ok(sdp.to_bytes())
    }

    /// Takes the keys of line `i` from `from`'s SDP and returns those the core writes into
    /// the SDP for the other leg (empty: plain RTP).
    fn negotiate<R: RngCore + CryptoRng>(
        &self,
        session: &mut Session<CoreStream>,
        kind: Kind,
        from: Leg,
        i: usize,
        line: &MediaLine,
        rng: &mut R,
    ) -> Result<Vec<Key>, PlanError> {
        let secure_inside = self.inside == InsideSecurity::Secure;
        let suites = self.config.suites.clone();
        let s = &mut session.streams[i];
        // The SDP's own keys: what `from` will encrypt with.
        let theirs = match (from, secure_inside) {
            (Leg::Inside, false) => {
                if kind == Kind::Offer && line.is_secure_proto() {
                    return Err(PlanError::ProfileMismatch {
                        index: i,
                        proto: line.proto.clone(),
                    });
                }
                None
            }
            _ => Some(match kind {
                Kind::Offer => Key::new(choose_crypto(from, i, line, &suites)?)?,
                Kind::Answer => answered_key(from, i, line, &s.offered)?,
            }),
        };
        // What the core encrypts towards `from` with.
        let ours = match (&theirs, kind) {
            (None, _) => None,
            (Some(t), Kind::Offer) => {
                let current = if from == Leg::Outside {
                    &s.client_rx
                } else {
                    &s.phone_rx
                };
                Some(Key::reuse_or_generate(
                    current,
                    t.attr.tag,
                    t.attr.profile,
                    rng,
                )?)
            }
            (Some(t), Kind::Answer) => s.offered.iter().find(|k| k.attr.tag == t.attr.tag).cloned(),
        };
        match from {
            Leg::Outside => (s.client_tx, s.client_rx) = (theirs, ours),
            Leg::Inside => (s.phone_tx, s.phone_rx) = (theirs, ours),
        }
        let other_secure = from == Leg::Inside || secure_inside;
        Ok(match (kind, other_secure) {
            (_, false) => {
                s.offered.clear();
                Vec::new()
            }
            // Answering the other leg: the key the core agreed with it at its offer.
            (Kind::Answer, true) => {
                let agreed = if from == Leg::Outside {
                    &s.phone_rx
                } else {
                    &s.client_rx
                };
                agreed.iter().cloned().collect()
            }
            // Offering to the other leg: the agreed key again, or fresh keys of every suite.
            (Kind::Offer, true) => {
                let agreed = if from == Leg::Outside {
                    &s.phone_rx
                } else {
                    &s.client_rx
                };
                s.offered = match agreed {
                    Some(k) => vec![k.clone()],
                    None => suites
                        .iter()
                        .zip(1..)
                        .map(|(p, tag)| Key::generate(tag, *p, rng))
                        .collect::<Result<_, _>>()?,
                };
                s.offered.clone()
            }
        })
    }
}

impl CoreFlows {
    fn entries(&self, streams: &[CoreStream]) -> BTreeMap<FlowKey, FlowEntry> {
        let mut out = BTreeMap::new();
        for (i, s) in streams.iter().enumerate() {
            self.stream_entries(i, s, &mut out);
        }
        out
    }

    fn stream_entries(&self, index: usize, s: &CoreStream, out: &mut BTreeMap<FlowKey, FlowEntry>) {
        let secure_inside = self.inside == InsideSecurity::Secure;
        let (Some(e), Some(p), Some(edge), Some(phone), Some(client_tx), Some(client_rx)) =
            (s.e, s.p, s.edge, s.phone, &s.client_tx, &s.client_rx)
        else {
            return;
        };
        if secure_inside && (s.phone_tx.is_none() || s.phone_rx.is_none()) {
            return;
        }
        let plain = |k: &Option<Key>| k.as_ref().map_or(SrtpParams::PLAIN, |k| k.params);
        let base = FlowEntry {
            flow_id: flow_id(self.call_id, index),
            action: Action::Rekey as u8,
            worker: self.worker,
            clock_rate: s.clock_rate,
            ..FlowEntry::default()
        };
        for (rtcp, edge_port, phone_port) in [
            (0, edge.rtp, phone.rtp),
            (flags::RTCP, edge.rtcp, phone.rtcp),
        ] {
            let off = u16::from(rtcp != 0);
            let (ek, pk) = (FlowKey::port(e + off), FlowKey::port(p + off));
            let drop_rtp = rtcp == 0 && !s.dirs.sends(Leg::Outside);
            let timeout = self.config.idle_timeout_ms;
            out.insert(
                ek,
                FlowEntry {
                    action: if drop_rtp {
                        Action::Drop
                    } else {
                        Action::Rekey
                    } as u8,
                    flags: rtcp,
                    out_local_port: p + off,
                    out_remote: Endpoint::new(phone.ip.octets(), phone_port),
                    peer: pk,
                    srtp_in: client_tx.params,
                    srtp_out: plain(&s.phone_rx),
                    idle_timeout_ms: s.dirs.idle_timeout(rtcp != 0, timeout),
                    ..base
                },
            );
            out.insert(
                pk,
                FlowEntry {
                    flags: rtcp | flags::LATCH | flags::KEEPALIVE,
                    permit_ip: phone.ip.octets(),
                    out_local_port: e + off,
                    out_remote: Endpoint::new(edge.ip.octets(), edge_port),
                    peer: ek,
                    keepalive_ms: self.config.keepalive_ms,
                    srtp_in: plain(&s.phone_tx),
                    srtp_out: client_rx.params,
                    idle_timeout_ms: s.dirs.idle_timeout(rtcp != 0, timeout),
                    ..base
                },
            );
        }
    }
}

/// The key of an answer's `a=crypto`: exactly one usable attribute whose tag and suite are
/// among `offered`.
fn answered_key(
    from: Leg,
    index: usize,
    line: &MediaLine,
    offered: &[Key],
) -> Result<Key, PlanError> {
    if !line.is_secure_proto() || line.crypto.is_empty() {
        return Err(PlanError::MissingCrypto {
            leg: from,
            index,
            proto: line.proto.clone(),
        });
    }
    let bad = |reason: String| PlanError::AnswerCrypto { index, reason };
    if line.crypto.len() > 1 {
        return Err(bad(format!(
            "{} a=crypto lines, an answer has one",
            line.crypto.len()
        )));
    }
    let attr = usable_crypto(&line.crypto[0]).map_err(|e| bad(e.to_string()))?;
    match offered.iter().find(|k| k.attr.tag == attr.tag) {
        Some(k) if k.attr.profile == attr.profile => Key::new(attr),
        Some(k) => Err(bad(format!(
            "tag {} was offered as {}, answered as {}",
            attr.tag, k.attr.profile, attr.profile
        ))),
        None => Err(bad(format!("tag {} was not offered", attr.tag))),
    }
}
