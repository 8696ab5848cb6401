//! Property: whatever sequence of offers, answers (good and bad), refusals and re-INVITEs
//! several concurrent calls go through, the flow table holds exactly the entries of the
//! live calls and the allocator exactly their pairs; after teardown, nothing at all. Seeded,
//! so a failure names its case.
#![allow(clippy::unwrap_used)]
mod common;

use std::collections::BTreeMap;

use common::*;
use edgeway_b2bua::{CoreCall, EdgeCall, FlowUpdate, InsideSecurity, Leg, PortPool};
use edgeway_map_schema::{FlowEntry, FlowKey};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::SrtpProfile;
use rand::rngs::StdRng;
use rand::Rng;

enum Call {
    Core(CoreCall),
    Edge(EdgeCall),
}

/// A call and the offer it forwarded that awaits an answer (offering leg, body).
type Live = (Call, Option<(Leg, Vec<u8>)>);

/// A random body from `leg`: mostly well formed, sometimes broken.
fn body(r: &mut StdRng, call: usize, leg: Leg, answering: Option<&[u8]>) -> Vec<u8> {
    // Each call's inside party its own address: two calls naming one core source are the
    // conflict `FlowUpdate::apply` refuses (tested in edge tests), not this property.
    let inside = format!("10.1.1.{}", 9 + call);
    let ip = if leg == Leg::Outside {
        "198.51.100.7"
    } else {
        inside.as_str()
    };
    let n = match answering {
        Some(o) => SessionDescriptionCount::of(o),
        None => r.gen_range(1..=3),
    };
    let mut m: Vec<(String, u16, String, Vec<String>, String)> = Vec::new();
    for i in 0..n {
        let rejected = r.gen_ratio(1, 8);
        let port = if rejected {
            0
        } else {
            20000 + 2 * (i as u16) + 100 * r.gen_range(0..3)
        };
        let crypto = match answering {
            // Answer one of the offered tags (or, rarely, something else).
            Some(o) => {
                let offered: Vec<CryptoAttribute> = edgeway_sip::sdp::SessionDescription::parse(o)
                    .ok()
                    .and_then(|s| s.media().get(i).and_then(|m| m.crypto().ok()))
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|c| c.to_string().parse().ok())
                    .collect();
                match offered.get(r.gen_range(0..offered.len().max(1))) {
                    Some(c) if !r.gen_ratio(1, 10) => {
                        vec![CryptoAttribute::generate(c.tag, c.profile, r).to_string()]
                    }
                    _ if r.gen_bool(0.5) => vec![],
                    _ => vec![
                        CryptoAttribute::generate(1, SrtpProfile::AesCm128HmacSha1_32, r)
                            .to_string(),
                    ],
                }
            }
            None => {
                let k = r.gen_range(0..=3);
                SrtpProfile::ALL[..k]
                    .iter()
                    .zip(1..)
                    .map(|(p, t)| CryptoAttribute::generate(t, *p, r).to_string())
                    .collect()
            }
        };
        let proto = if crypto.is_empty() && r.gen_bool(0.5) {
            "RTP/AVP"
        } else {
            "RTP/SAVP"
        };
        let extra = [
            "",
            "a=sendonly\r\n",
            "a=inactive\r\n",
            "a=recvonly\r\n",
            "a=rtcp:30001\r\n",
        ][r.gen_range(0..5)];
        m.push((
            if i == 1 { "video" } else { "audio" }.into(),
            port,
            proto.into(),
            crypto,
            extra.into(),
        ));
    }
    let view: Vec<(&str, u16, &str, &[String], &str)> = m
        .iter()
        .map(|(a, b, c, d, e)| (a.as_str(), *b, c.as_str(), &d[..], e.as_str()))
        .collect();
    let mut b = sdp(ip, &view);
    match r.gen_range(0..12) {
        0 => b.truncate(r.gen_range(0..b.len())),
        1 => {
            b = String::from_utf8(b)
                .unwrap()
                .replacen("c=IN IP4", "c=IN IP6 ::1 x", 1)
                .into_bytes()
        }
        2 => {
            b = String::from_utf8(b)
                .unwrap()
                .replace(&format!("IN IP4 {ip}"), "IN IP4 0.0.0.0")
                .into_bytes()
        }
        _ => {}
    }
    b
}

struct SessionDescriptionCount;
impl SessionDescriptionCount {
    fn of(body: &[u8]) -> usize {
        edgeway_sip::sdp::SessionDescription::parse(body).map_or(1, |s| s.media().len())
    }
}

fn apply(t: &Table, u: &FlowUpdate) {
    t.apply(u);
}

fn stripped(e: &FlowEntry) -> FlowEntry {
    FlowEntry {
        generation: 0,
        created_ms: 0,
        ..*e
    }
}

fn check(case: u64, t: &Table, calls: &[Live]) {
    let mut want: BTreeMap<FlowKey, FlowEntry> = BTreeMap::new();
    let mut pairs = 0;
    for (c, _) in calls {
        let (entries, ports) = match c {
            Call::Core(c) => (c.entries(), c.ports()),
            Call::Edge(c) => (c.entries(), c.ports()),
        };
        for (k, e) in entries {
            assert!(
                want.insert(*k, *e).is_none(),
                "case {case}: two calls share {k:?}"
            );
        }
        pairs += ports.len() as u32;
    }
    let have: BTreeMap<FlowKey, FlowEntry> =
        t.table.iter().map(|(_, k, e)| (k, stripped(&e))).collect();
    assert_eq!(
        have, want,
        "case {case}: the table is not the live calls' entries"
    );
    assert_eq!(
        t.ports_in_use(),
        2 * pairs,
        "case {case}: ports held by no call"
    );
}

/// What a case went through, so the property cannot pass vacuously.
#[derive(Default)]
struct Seen {
    answers: u32,
    entries: usize,
    refused: u32,
}

fn run_case(case: u64, seen: &mut Seen) {
    let t = Table::new();
    let mut pool = t.table.ports();
    let mut r = rng(case);
    let mut calls: Vec<Live> = (0..3u64)
        .map(|id| {
            let c = if r.gen_bool(0.5) {
                let sec = if r.gen_bool(0.5) {
                    InsideSecurity::Secure
                } else {
                    InsideSecurity::NonSecure
                };
                Call::Core(CoreCall::new(&core_config(), id, sec))
            } else {
                Call::Edge(EdgeCall::new(&edge_config(), id, CLIENT_IP))
            };
            (c, None)
        })
        .collect();
    for _ in 0..25 {
        let i = r.gen_range(0..calls.len());
        let (call, pending) = &mut calls[i];
        let pool: &mut dyn PortPool = &mut pool;
        let step = r.gen_range(0..10);
        let update = if step == 0 {
            *pending = None;
            Some(match call {
                Call::Core(c) => c.offer_failed(NOW, pool),
                Call::Edge(c) => c.offer_failed(NOW, pool),
            })
        } else if let (Some((offerer, forwarded)), true) = (pending.clone(), step < 7) {
            let from = if offerer == Leg::Outside {
                Leg::Inside
            } else {
                Leg::Outside
            };
            let b = body(&mut r, i, from, Some(&forwarded));
            let res = match call {
                Call::Core(c) => c.answer(from, NOW, &b, pool, &mut r),
                Call::Edge(c) => c.answer(from, NOW, &b, pool),
            };
            seen.refused += u32::from(res.is_err());
            res.ok().map(|p| {
                *pending = None;
                seen.answers += 1;
                p.flows
            })
        } else {
            let from = if r.gen_bool(0.5) {
                Leg::Outside
            } else {
                Leg::Inside
            };
            let b = body(&mut r, i, from, None);
            let res = match call {
                Call::Core(c) => c.offer(from, NOW, &b, pool, &mut r),
                Call::Edge(c) => c.offer(from, NOW, &b, pool),
            };
            seen.refused += u32::from(res.is_err());
            res.ok().map(|p| {
                *pending = Some((from, p.sdp));
                p.flows
            })
        };
        if let Some(u) = update {
            apply(&t, &u);
        }
        check(case, &t, &calls);
        seen.entries = seen.entries.max(t.entries());
    }
    for (c, _) in &mut calls {
        let u = match c {
            Call::Core(c) => c.teardown(NOW, &mut pool),
            Call::Edge(c) => c.teardown(NOW, &mut pool),
        };
        apply(&t, &u);
    }
    check(case, &t, &calls);
    assert_eq!(
        (t.entries(), t.ports_in_use()),
        (0, 0),
        "case {case}: something outlived its call"
    );
}

#[test]
fn no_flow_outlives_its_call() {
    let cases: u64 = std::env::var("B2BUA_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut seen = Seen::default();
    for case in 0..cases {
        run_case(case, &mut seen);
    }
    eprintln!(
        "{cases} cases: {} answers accepted, {} messages refused, at most {} entries live",
        seen.answers, seen.refused, seen.entries
    );
    assert!(
        seen.answers > cases as u32 && seen.refused > cases as u32 && seen.entries >= 12,
        "the cases must reach established calls and refusals"
    );
}
