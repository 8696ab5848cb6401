//! The generator against an in-test re-keying reflector (std sockets, one thread): it
//! unprotects with the stream's key A, protects with key B and sends to rx_local, dropping
//! every 100th packet and corrupting one in 500 when asked. The generator must account
//! for every one of them.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use edgeway_loadgen::engine::{Generator, Options, TrialParams};
use edgeway_loadgen::scenario::{parse_crypto, Scenario};
use edgeway_srtp::sdes::CryptoAttribute;
use edgeway_srtp::{SrtpContext, SrtpProfile};

const STREAMS: usize = 4;

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Default)]
struct Faults {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    corrupted: AtomicU64,
}

struct Reflector {
    stop: Arc<AtomicBool>,
    faults: Arc<Faults>,
    handle: Option<JoinHandle<()>>,
}

impl Reflector {
    /// One socket per stream; `faulty` turns on the drops and corruption.
    fn start(
        socks: Vec<UdpSocket>,
        keys: Vec<(Option<String>, Option<String>, SocketAddr)>,
        faulty: bool,
    ) -> Reflector {
        let stop = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(Faults::default());
        let (st, fl) = (stop.clone(), faults.clone());
        let handle = std::thread::spawn(move || {
            let ctx = |k: &Option<String>| {
                k.as_ref()
                    .map(|k| SrtpContext::new(&parse_crypto(k).unwrap().to_config()).unwrap())
            };
            let mut legs: Vec<_> = keys
                .iter()
                .map(|(a, b, dst)| (ctx(a), ctx(b), *dst))
                .collect();
            for s in &socks {
                s.set_nonblocking(true).unwrap();
            }
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            while !st.load(Ordering::Relaxed) {
                let mut idle = true;
                for (i, s) in socks.iter().enumerate() {
                    let Ok(len) = s.recv(&mut buf) else { continue };
                    idle = false;
                    let (a, b, dst) = &mut legs[i];
                    let len = match a {
                        Some(a) => a.unprotect_rtp(&mut buf, len).expect("key A"),
                        None => len,
                    };
                    let len = match b {
                        Some(b) => b.protect_rtp(&mut buf, len).unwrap(),
                        None => len,
                    };
                    n += 1;
                    if faulty && n.is_multiple_of(100) {
                        fl.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if faulty && n % 500 == 250 {
                        buf[40] ^= 0x5a; // inside the payload: authentication must fail
                        fl.corrupted.fetch_add(1, Ordering::Relaxed);
                    }
                    s.send_to(&buf[..len], *dst).unwrap();
                    fl.forwarded.fetch_add(1, Ordering::Relaxed);
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        });
        Reflector {
            stop,
            faults,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Arc<Faults> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.faults.clone()
    }
}

/// Builds a scenario of STREAMS streams through a fresh reflector.
fn setup(srtp: bool, faulty: bool) -> (Scenario, Reflector) {
    let mut rng = rand::rngs::OsRng;
    let mut key = || {
        srtp.then(|| {
            CryptoAttribute::generate(1, SrtpProfile::AesCm128HmacSha1_80, &mut rng).to_string()
        })
    };
    let mut streams = Vec::new();
    let mut socks = Vec::new();
    let mut legs = Vec::new();
    for _ in 0..STREAMS {
        let refl = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx_local: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let rx_local: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let (a, b) = (key(), key());
        streams.push(serde_json::json!({
            "tx_local": tx_local.to_string(),
            "tx_to": refl.local_addr().unwrap().to_string(),
            "tx_crypto": a,
            "rx_local": rx_local.to_string(),
            // Exercise the "a=crypto:" form too.
            "rx_crypto": b.as_ref().map(|b| format!("a=crypto:{b}")),
        }));
        legs.push((a, b, rx_local));
        socks.push(refl);
    }
    let json = serde_json::json!({ "streams": streams }).to_string();
    let scenario = Scenario::parse(&json).unwrap();
    (scenario, Reflector::start(socks, legs, faulty))
}

fn params(rate: f64, secs: f64) -> TrialParams {
    TrialParams {
        rate,
        warmup: Duration::ZERO,
        duration: Duration::from_secs_f64(secs),
        drain: Duration::from_millis(500),
    }
}

#[test]
fn faulty_srtp_reflector_is_measured_exactly() {
    let (scenario, refl) = setup(true, true);
    let mut gen = Generator::new(&scenario, Options::default()).unwrap();
    let r = gen.trial(&params(1200.0, 2.5)).unwrap();
    let f = refl.finish();
    let (dropped, corrupted) = (
        f.dropped.load(Ordering::Relaxed),
        f.corrupted.load(Ordering::Relaxed),
    );
    eprintln!("{r:?}\ndropped {dropped} corrupted {corrupted}");
    assert!(!r.generator_limited);
    assert!((2900..=3100).contains(&r.sent), "sent {}", r.sent);
    assert_eq!(r.corrupt, corrupted);
    assert_eq!(r.lost, dropped + corrupted);
    assert_eq!(r.received + r.lost, r.sent);
    // Every 100th dropped and one in 500 corrupted: 1.2 % of what was sent.
    assert!((r.loss_pct - 1.2).abs() < 0.15, "loss {}", r.loss_pct);
    assert_eq!(r.duplicates, 0);
    assert_eq!(r.unmatched, 0);
    assert!(r.latency_us.p50 > 0.0 && r.latency_us.max < 1_000_000.0);
}

#[test]
fn clean_srtp_reflector_loses_nothing() {
    let (scenario, refl) = setup(true, false);
    let mut gen = Generator::new(&scenario, Options::default()).unwrap();
    // Two trials: numbering continues, so SRTP replay state stays valid between them.
    for _ in 0..2 {
        let r = gen.trial(&params(1000.0, 1.0)).unwrap();
        assert_eq!((r.lost, r.corrupt, r.duplicates), (0, 0, 0), "{r:?}");
        assert!(r.sent >= 950, "{r:?}");
    }
    refl.finish();
}

#[test]
fn clean_plain_reflector_loses_nothing() {
    let (scenario, refl) = setup(false, false);
    let mut gen = Generator::new(&scenario, Options::default()).unwrap();
    let r = gen.trial(&params(STREAMS as f64 * 50.0, 1.0)).unwrap();
    assert_eq!((r.lost, r.corrupt, r.duplicates), (0, 0, 0), "{r:?}");
    assert!((195..=201).contains(&r.sent), "{r:?}");
    // At 200 pps the paced thread sleeps between turns (counted from its own rusage) and
    // never falls 20 ms behind, so the schedule gives up no packet.
    assert_eq!(r.skipped, 0, "{r:?}");
    assert!(r.gen_sleeps >= 50, "{r:?}");
    refl.finish();
}
