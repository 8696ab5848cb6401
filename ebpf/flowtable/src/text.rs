//! Text forms of flow-table values for CLIs, scripts and logs: flow keys and endpoints,
//! SRTP parameters from an `a=crypto` line, and JSON views. The JSON views never contain
//! key material: SRTP parameters show their suite and MKI length only.

use std::net::Ipv4Addr;
use std::str::FromStr;

use edgeway_map_schema::{
    flags, Action, DropReason, Endpoint, FlowCounters, FlowEntry, FlowKey, FlowState, SrtpParams,
};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::SrtpProfile;
use serde_json::{json, Value};

use crate::{Error, NodeCounters, Result};

/// Parses a flow key: `PORT` (every packet to that local port) or `PORT@IP:PORT` (packets
/// from `IP:PORT` to demultiplexing port `PORT`).
pub fn parse_key(s: &str) -> Result<FlowKey> {
    let bad = |reason| Error::BadKey {
        input: s.to_owned(),
        reason,
    };
    let (local, remote) = match s.trim().split_once('@') {
        Some((l, r)) => (l, Some(r)),
        None => (s.trim(), None),
    };
    let local_port = parse_port(local).ok_or_else(|| bad("the local port must be 1-65535"))?;
    match remote {
        None => Ok(FlowKey::port(local_port)),
        Some(r) => {
            let ep =
                parse_endpoint(r).map_err(|_| bad("the remote must be IPv4:PORT, port 1-65535"))?;
            Ok(FlowKey::demux(local_port, ep.ip, ep.port))
        }
    }
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|&p| p != 0)
}

/// Formats a key the way [`parse_key`] reads it.
pub fn format_key(key: &FlowKey) -> String {
    if key.is_demux() || key.remote_ip != [0; 4] {
        format!(
            "{}@{}:{}",
            key.local_port,
            Ipv4Addr::from(key.remote_ip),
            key.remote_port
        )
    } else {
        key.local_port.to_string()
    }
}

/// Parses `IPv4:PORT` (port 1-65535).
pub fn parse_endpoint(s: &str) -> Result<Endpoint> {
    let bad = |reason| Error::BadEndpoint {
        input: s.to_owned(),
        reason,
    };
    let (ip, port) = s.trim().rsplit_once(':').ok_or_else(|| bad("no ':PORT'"))?;
    let ip = Ipv4Addr::from_str(ip).map_err(|_| bad("not an IPv4 address"))?;
    let port = parse_port(port).ok_or_else(|| bad("the port must be 1-65535"))?;
    Ok(Endpoint::new(ip.octets(), port))
}

/// Formats an endpoint as `IP:PORT` (`-` when unset).
pub fn format_endpoint(ep: &Endpoint) -> String {
    if ep.is_set() {
        format!("{}:{}", Ipv4Addr::from(ep.ip), ep.port)
    } else {
        "-".to_owned()
    }
}

/// The [`SrtpParams`] an `a=crypto` line describes (with or without `a=crypto:`).
/// Refused: several keys (an entry holds one), `UNENCRYPTED_SRTP`/`UNENCRYPTED_SRTCP` (an
/// entry has no field for them).
pub fn srtp_params_from_crypto(line: &str) -> Result<SrtpParams> {
    let attr: CryptoAttribute = line.parse()?;
    if attr.keys.len() != 1 {
        return Err(Error::UnsupportedCrypto(
            "a flow entry holds one master key; give one inline: key",
        ));
    }
    if attr.params.unencrypted_srtp || attr.params.unencrypted_srtcp {
        return Err(Error::UnsupportedCrypto(
            "UNENCRYPTED_SRTP/UNENCRYPTED_SRTCP cannot be expressed in a flow entry",
        ));
    }
    let mk = &attr.keys[0].key;
    let mut p = SrtpParams {
        suite: attr.profile.id() as u8,
        mki_len: mk.mki().len() as u8,
        replay_window: attr
            .params
            .window_size_hint
            .map_or(0, |w| w.clamp(64, edgeway_srtp::MAX_REPLAY_WINDOW) as u16),
        ..SrtpParams::PLAIN
    };
    p.mki[..mk.mki().len()].copy_from_slice(mk.mki());
    p.key[..mk.key().len()].copy_from_slice(mk.key());
    p.salt[..mk.salt().len()].copy_from_slice(mk.salt());
    Ok(p)
}

/// The suite's SDES name, `plain`, or `unknown(N)`.
pub fn suite_name(p: &SrtpParams) -> String {
    if p.is_plain() {
        return "plain".to_owned();
    }
    match SrtpProfile::from_id(p.suite.into()) {
        Some(profile) => profile.sdes_name().to_owned(),
        None => format!("unknown({})", p.suite),
    }
}

fn action_name(e: &FlowEntry) -> String {
    match e.action() {
        Some(Action::Drop) => "drop".into(),
        Some(Action::Relay) => "relay".into(),
        Some(Action::Rekey) => "rekey".into(),
        None => format!("unknown({})", e.action),
    }
}

fn flag_names(bits: u16) -> Vec<&'static str> {
    [
        (flags::LATCH, "latch"),
        (flags::LATCH_ANY_SOURCE, "latch_any_source"),
        (flags::RTCP, "rtcp"),
        (flags::SSRC_LOCK, "ssrc_lock"),
        (flags::KEEPALIVE, "keepalive"),
    ]
    .into_iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| n)
    .collect()
}

fn srtp_json(p: &SrtpParams) -> Value {
    // Never the key, salt or MKI value: the suite names the protection, the MKI length is
    // enough to tell keys apart in a trace.
    json!({
        "suite": suite_name(p),
        "mki_len": p.mki_len,
        "replay_window": p.replay_window,
    })
}

/// An entry as JSON, without key material.
pub fn entry_json(key: &FlowKey, e: &FlowEntry) -> Value {
    json!({
        "key": format_key(key),
        "flow_id": e.flow_id,
        "generation": e.generation,
        "created_ms": e.created_ms,
        "action": action_name(e),
        "flags": flag_names(e.flags),
        "worker": e.worker,
        "permit_ip": Ipv4Addr::from(e.permit_ip).to_string(),
        "out_from": e.out_local_port,
        "out_to": if e.out_remote.is_set() { format_endpoint(&e.out_remote) } else { "latched".to_owned() },
        "peer": if e.peer == FlowKey::default() { Value::Null } else { format_key(&e.peer).into() },
        "idle_timeout_ms": e.idle_timeout_ms,
        "keepalive_ms": e.keepalive_ms,
        "clock_rate": e.clock_rate,
        "srtp_in": srtp_json(&e.srtp_in),
        "srtp_out": srtp_json(&e.srtp_out),
    })
}

/// A state as JSON: latching, liveness, SRTP checkpoints (ROC and index), RTP statistics
/// (jitter in ms at `clock_rate` Hz; 0 means 8000).
pub fn state_json(s: &FlowState, clock_rate: u32) -> Value {
    let rate = if clock_rate == 0 { 8000 } else { clock_rate };
    let cp = |c: &edgeway_map_schema::SrtpCheckpoint| {
        if c.valid == 0 {
            Value::Null
        } else {
            json!({
                "ssrc": format!("{:#010x}", c.ssrc),
                "roc": c.highest_index >> 16,
                "highest_index": c.highest_index,
            })
        }
    };
    json!({
        "generation": s.generation,
        "latched": s.latched != 0,
        "latched_src": format_endpoint(&s.latched_src),
        "latched_ssrc": format!("{:#010x}", s.latched_ssrc),
        "idle": s.idle != 0,
        "last_rx_ms": s.last_rx_ms,
        "last_tx_ms": s.last_tx_ms,
        "srtp_in": cp(&s.srtp_in),
        "srtp_out": cp(&s.srtp_out),
        "rtp": {
            "ssrc": format!("{:#010x}", s.rtp.ssrc),
            "received": s.rtp.received,
            "lost": s.rtp.lost,
            "jitter_ms": f64::from(s.rtp.jitter_q4) / 16.0 * 1000.0 / f64::from(rate),
            "ext_max_seq": s.rtp.ext_max_seq,
        },
    })
}

fn drops_json(drops: &[u64]) -> Value {
    let mut m = serde_json::Map::new();
    for r in DropReason::ALL {
        m.insert(r.name().to_owned(), drops[r.index()].into());
    }
    Value::Object(m)
}

/// Counters as JSON, drops by [`DropReason::name`].
pub fn counters_json(c: &FlowCounters) -> Value {
    json!({
        "rx_packets": c.rx_packets,
        "rx_bytes": c.rx_bytes,
        "tx_packets": c.tx_packets,
        "tx_bytes": c.tx_bytes,
        "keepalives_rx": c.keepalives_rx,
        "keepalives_tx": c.keepalives_tx,
        "drops_total": edgeway_map_schema::saturating_sum(&c.drops),
        "drops": drops_json(&c.drops),
    })
}

/// A worker's node counters as JSON, drops by [`DropReason::name`].
pub fn node_counters_json(c: &NodeCounters) -> Value {
    json!({
        "rx_packets": c.rx_packets,
        "rx_bytes": c.rx_bytes,
        "tx_packets": c.tx_packets,
        "tx_bytes": c.tx_bytes,
        "keepalives_rx": c.keepalives_rx,
        "keepalives_tx": c.keepalives_tx,
        "flows": c.flows,
        "updated_ms": c.updated_ms,
        "drops_total": c.total_drops(),
        "drops": drops_json(&c.drops),
    })
}

/// The XDP program's node-wide counters as JSON, drops by [`DropReason::name`].
pub fn xdp_counters_json(c: &edgeway_map_schema::XdpCounters) -> Value {
    json!({
        "rx_packets": c.rx_packets,
        "rx_bytes": c.rx_bytes,
        "relayed_packets": c.relayed_packets,
        "relayed_bytes": c.relayed_bytes,
        "steered_packets": c.steered_packets,
        "passed_packets": c.passed_packets,
        "keepalives_rx": c.keepalives_rx,
        "events_lost": c.events_lost,
        "drops_total": edgeway_map_schema::saturating_sum(&c.drops),
        "drops": drops_json(&c.drops),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_format_both_ways() {
        for s in ["36002", "2776@192.0.2.1:40000", "65535"] {
            assert_eq!(format_key(&parse_key(s).expect(s)), s);
        }
        assert_eq!(
            parse_key("2776@192.0.2.1:40000").expect("demux"),
            FlowKey::demux(2776, [192, 0, 2, 1], 40000)
        );
        for bad in [
            "",
            "0",
            "70000",
            "-1",
            "x",
            "2776@",
            "2776@1.2.3:4",
            "2776@1.2.3.4:0",
            "2776@::1:5",
        ] {
            assert!(
                matches!(parse_key(bad), Err(Error::BadKey { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn crypto_lines_fill_params_and_json_hides_them() {
        let line = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4";
        let p = srtp_params_from_crypto(line).expect("parse");
        assert_eq!(p.suite, 1);
        assert_eq!(p.mki_len, 4);
        assert_eq!(&p.mki, &[0, 0, 0, 1]);
        assert_eq!(&p.key[..4], b"YS__");
        assert_eq!(suite_name(&p), "AES_CM_128_HMAC_SHA1_80");
        let e = FlowEntry {
            srtp_in: p,
            ..FlowEntry::default()
        };
        let text = entry_json(&FlowKey::port(36002), &e).to_string();
        assert!(text.contains("AES_CM_128_HMAC_SHA1_80"));
        assert!(!text.contains("salt") && !text.contains("YS__"), "{text}");
        assert!(matches!(
            srtp_params_from_crypto("a=crypto:1 NOPE inline:AAAA"),
            Err(Error::Sdes(_))
        ));
        assert!(matches!(
            srtp_params_from_crypto(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz UNENCRYPTED_SRTP"
            ),
            Err(Error::UnsupportedCrypto(_))
        ));
    }
}
