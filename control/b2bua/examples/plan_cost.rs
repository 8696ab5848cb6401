//! What the media plan costs a core per call: a Jabber-like offer planned towards a secure
//! phone, its answer planned back (fresh keys, four Rekey entries), the entries written to a
//! real flow table, then BYE (entries removed, pairs released). Prints the median and p99
//! per step over `CALLS` calls (default 20000).
//!
//! `cargo build --release -p edgeway-b2bua --example plan_cost &&
//!  taskset -c 1 target/release/examples/plan_cost`
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Instant;

use edgeway_b2bua::{CoreCall, CoreConfig, InsideSecurity, Leg};
use edgeway_flowtable::{FlowTable, TableOptions};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::SrtpProfile;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn body(ip: &str, port: u16, keys: &[CryptoAttribute]) -> Vec<u8> {
    let mut s = format!(
        "v=0\r\no=- 7 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    );
    for k in keys {
        s.push_str(&format!("a=crypto:{k}\r\n"));
    }
    s.into_bytes()
}

fn report(name: &str, mut ns: Vec<u128>) {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<28} median {:>7} ns   p99 {:>7} ns",
        at(0.5),
        at(0.99)
    );
}

fn main() {
    let calls: usize = std::env::var("CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = std::path::PathBuf::from(format!(
        "/dev/shm/edgeway-b2bua-cost-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut opts = TableOptions::default();
    opts.capacity = 4096;
    opts.port_quarantine_ms = 0;
    opts.tombstone_quarantine_ms = 0;
    let table = FlowTable::create_at(&dir, &opts).unwrap();
    let mut pool = table.ports();
    let mut rng = StdRng::seed_from_u64(1);
    let config = CoreConfig::new(Ipv4Addr::new(172, 16, 0, 2), Ipv4Addr::new(10, 0, 0, 2));
    let suites = [
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ];
    let (mut offer_ns, mut answer_ns, mut apply_ns, mut bye_ns) = (vec![], vec![], vec![], vec![]);
    for id in 0..calls {
        let keys: Vec<_> = suites
            .iter()
            .zip(1..)
            .map(|(p, t)| CryptoAttribute::generate(t, *p, &mut rng))
            .collect();
        let offer = body("172.16.0.1", 2776, &keys);
        let mut call = CoreCall::new(&config, id as u64, InsideSecurity::Secure);
        let t0 = Instant::now();
        let inside = call
            .offer(Leg::Outside, id as u64, &offer, &mut pool, &mut rng)
            .unwrap();
        let t1 = Instant::now();
        let offered = edgeway_sip::sdp::SessionDescription::parse(&inside.sdp)
            .unwrap()
            .media()[0]
            .crypto()
            .unwrap();
        let chosen: CryptoAttribute = offered[3].to_string().parse().unwrap();
        let answer = body(
            "10.1.1.9",
            20000,
            &[CryptoAttribute::generate(
                chosen.tag,
                chosen.profile,
                &mut rng,
            )],
        );
        let t2 = Instant::now();
        let out = call
            .answer(Leg::Inside, id as u64, &answer, &mut pool, &mut rng)
            .unwrap();
        let t3 = Instant::now();
        out.flows.apply(&table).unwrap();
        let t4 = Instant::now();
        call.teardown(id as u64 + 1, &mut pool)
            .apply(&table)
            .unwrap();
        let t5 = Instant::now();
        offer_ns.push((t1 - t0).as_nanos());
        answer_ns.push((t3 - t2).as_nanos());
        apply_ns.push((t4 - t3).as_nanos());
        bye_ns.push((t5 - t4).as_nanos());
    }
    println!("{calls} calls, core role, secure phone, shm flow table (no BPF backend)");
    report("offer (plan + 6 fresh keys)", offer_ns);
    report("answer (plan + 4 entries)", answer_ns);
    report("apply 4 inserts", apply_ns);
    report("teardown + apply 4 removes", bye_ns);
    let _ = std::fs::remove_dir_all(&dir);
}
