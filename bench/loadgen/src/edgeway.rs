//! Calls on edgeway's data plane, programmed straight into its flow table (no control plane
//! yet), written out as a scenario. Each call is what the core does for a remote client's
//! call: two media ports from the node's allocator, SRTP in from each side under the key
//! that side offered, re-keyed out to the other side under a fresh key of that side's suite
//! (side A AES_CM_128_HMAC_SHA1_80, side B by default AES_CM_128_HMAC_SHA1_32, as the
//! rtpengine setup does, so both targets re-encrypt every packet).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use edgeway_flowtable::{srtp_params_from_crypto, unix_ms, FlowTable};
use edgeway_map_schema::{Action, Endpoint, FlowEntry, FlowKey};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::SrtpProfile;
use rand_core::{CryptoRng, RngCore};

use crate::scenario::{endpoint_addr, ScenarioFile, StreamSpec};

/// What to set up.
#[derive(Debug, Clone)]
pub struct EdgewaySetup {
    /// Calls (two streams each).
    pub calls: usize,
    /// IPv4 address of the simulated endpoints.
    pub local_ip: Ipv4Addr,
    /// First local port of the simulated endpoints.
    pub port_base: u16,
    /// Distinct local ports per call side (0: one per call side); see
    /// [`endpoint_addr`].
    pub ports_per_side: usize,
    /// Address edgeway's media sockets are bound to.
    pub sut_ip: Ipv4Addr,
    /// Suite of side A (offered and answered).
    pub a_suite: SrtpProfile,
    /// Suite of side B.
    pub b_suite: SrtpProfile,
    /// Data-plane workers to spread the calls over (entry.worker = call % workers).
    pub workers: u32,
    /// First flow id.
    pub flow_id_base: u64,
}

/// Why setting calls up failed.
#[derive(Debug, thiserror::Error)]
pub enum EdgewaySetupError {
    /// The flow table refused (ports exhausted, table full, ...).
    #[error("flow table: {0}")]
    Table(#[from] edgeway_flowtable::Error),
    /// Only IPv4 endpoints exist in the flow table.
    #[error("simulated endpoints run past port 65535")]
    Ports,
    /// The data plane did not install the entries in time.
    #[error("the data plane installed {installed} of {live} entries within {waited:?}")]
    NotInstalled {
        /// Entries its workers report.
        installed: u64,
        /// Entries in the table.
        live: u64,
        /// How long we waited.
        waited: Duration,
    },
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    match addr.ip() {
        IpAddr::V4(ip) => Endpoint::new(ip.octets(), addr.port()),
        IpAddr::V6(_) => Endpoint::default(),
    }
}

/// Programs `setup.calls` calls into `table` and returns their streams (A->B then B->A per
/// call), in the form the generator plays.
pub fn setup_calls<R: RngCore + CryptoRng>(
    table: &FlowTable,
    setup: &EdgewaySetup,
    rng: &mut R,
) -> Result<ScenarioFile, EdgewaySetupError> {
    let mut file = ScenarioFile::default();
    let ports = table.ports();
    let ip = IpAddr::V4(setup.local_ip);
    for call in 0..setup.calls {
        let side = |side| {
            endpoint_addr(
                ip,
                setup.port_base,
                setup.ports_per_side,
                setup.calls,
                call,
                side,
            )
            .ok_or(EdgewaySetupError::Ports)
        };
        let (a, b) = (side(0)?, side(1)?);
        let now = unix_ms();
        let pa = ports.allocate_pair(now)?;
        let pb = ports.allocate_pair(now)?;
        // What each endpoint sends with, and what edgeway sends each endpoint with.
        let a_key = CryptoAttribute::generate(1, setup.a_suite, rng);
        let b_key = CryptoAttribute::generate(1, setup.b_suite, rng);
        let to_a = CryptoAttribute::generate(1, setup.a_suite, rng);
        let to_b = CryptoAttribute::generate(1, setup.b_suite, rng);
        let worker = (call as u32) % setup.workers.max(1);
        let flow_id = setup.flow_id_base + call as u64;
        let leg = |from_port: u16,
                   to: SocketAddr,
                   peer: u16,
                   rx: &CryptoAttribute,
                   tx: &CryptoAttribute|
         -> Result<FlowEntry, EdgewaySetupError> {
            Ok(FlowEntry {
                flow_id,
                created_ms: now,
                action: Action::Rekey as u8,
                worker,
                permit_ip: setup.local_ip.octets(),
                out_local_port: from_port,
                out_remote: endpoint(to),
                peer: FlowKey::port(peer),
                srtp_in: srtp_params_from_crypto(&rx.to_string())?,
                srtp_out: srtp_params_from_crypto(&tx.to_string())?,
                ..FlowEntry::default()
            })
        };
        table.insert(FlowKey::port(pa), leg(pb, b, pb, &a_key, &to_b)?)?;
        table.insert(FlowKey::port(pb), leg(pa, a, pa, &b_key, &to_a)?)?;
        // A -> edgeway port pa -> B, and B -> pb -> A.
        for (from, port, key, to, rx_key) in [(a, pa, &a_key, b, &to_b), (b, pb, &b_key, a, &to_a)]
        {
            file.streams.push(StreamSpec {
                tx_local: from.to_string(),
                tx_to: SocketAddr::new(IpAddr::V4(setup.sut_ip), port).to_string(),
                tx_crypto: Some(key.to_string()),
                rx_local: to.to_string(),
                rx_crypto: Some(rx_key.to_string()),
            });
        }
    }
    Ok(file)
}

/// Waits until the running data plane's workers have installed every live entry of the
/// table (their node-counter rows, exported every few ms, say how many each holds).
pub fn wait_installed(table: &FlowTable, timeout: Duration) -> Result<(), EdgewaySetupError> {
    let started = Instant::now();
    let mark = unix_ms();
    loop {
        let live = table.iter().count() as u64;
        let workers = table.dataplane().workers as usize;
        let rows: Vec<_> = (0..workers).map(|w| table.node_counters(w)).collect();
        let installed: u64 = rows.iter().map(|r| r.flows).sum();
        if workers > 0 && rows.iter().all(|r| r.updated_ms > mark) && installed == live {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(EdgewaySetupError::NotInstalled {
                installed,
                live,
                waited: started.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeway_flowtable::TableOptions;

    #[test]
    fn every_call_gets_two_allocated_ports_and_both_legs_rekeyed_to_fresh_keys() {
        let dir = std::env::temp_dir().join(format!("edgeway-lg-setup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut opts = TableOptions::default();
        opts.capacity = 64;
        opts.port_range = (30000, 30099);
        opts.excluded_ports = vec![];
        let table = FlowTable::create_at(&dir, &opts).unwrap();
        let setup = EdgewaySetup {
            calls: 3,
            local_ip: Ipv4Addr::new(127, 0, 0, 2),
            port_base: 20000,
            ports_per_side: 2,
            sut_ip: Ipv4Addr::LOCALHOST,
            a_suite: SrtpProfile::AesCm128HmacSha1_80,
            b_suite: SrtpProfile::AesCm128HmacSha1_32,
            workers: 2,
            flow_id_base: 100,
        };
        let file = setup_calls(&table, &setup, &mut rand::rngs::OsRng).unwrap();
        assert_eq!(file.streams.len(), 6);
        assert_eq!(table.iter().count(), 6);
        for (i, pair) in file.streams.chunks(2).enumerate() {
            let (ab, ba) = (&pair[0], &pair[1]);
            // A's stream arrives on one allocated even port and leaves from B's, and back.
            let pa: SocketAddr = ab.tx_to.parse().unwrap();
            let pb: SocketAddr = ba.tx_to.parse().unwrap();
            assert!(
                pa.port().is_multiple_of(2)
                    && pb.port().is_multiple_of(2)
                    && pa.port() != pb.port()
            );
            let (_, ea) = table.lookup(&FlowKey::port(pa.port())).unwrap();
            let (_, eb) = table.lookup(&FlowKey::port(pb.port())).unwrap();
            assert_eq!(ea.out_local_port, pb.port());
            assert_eq!(eb.out_local_port, pa.port());
            assert_eq!(ea.worker, (i as u32) % 2);
            assert_eq!(
                ea.out_remote,
                endpoint(ab.rx_local.parse().unwrap()),
                "A->B goes to B"
            );
            // The key edgeway decrypts with is what the endpoint sends with; what it
            // encrypts with is what the endpoint receives with, and the two differ.
            let p = |s: &Option<String>| srtp_params_from_crypto(s.as_deref().unwrap()).unwrap();
            assert_eq!(ea.srtp_in, p(&ab.tx_crypto));
            assert_eq!(ea.srtp_out, p(&ab.rx_crypto));
            assert_ne!(ea.srtp_in.key, ea.srtp_out.key);
            assert_eq!(
                u32::from(eb.srtp_out.suite),
                SrtpProfile::AesCm128HmacSha1_80.id()
            );
            assert_eq!(
                u32::from(ea.srtp_out.suite),
                SrtpProfile::AesCm128HmacSha1_32.id()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
