//! An echo worker: every datagram comes back byte-identical, in few syscalls.

mod common;

use common::{client, echo, payload, spawn_worker};
use std::time::Duration;

use edgeway_uring::UringConfig;

const DATAGRAMS: usize = 10_000;
const BURST: usize = 64;

/// Echoes `DATAGRAMS` datagrams in bursts of `BURST` and returns (enters, datagrams).
fn echo_run(cfg: UringConfig, label: &str) -> (u64, u64) {
    let worker = spawn_worker(cfg, 1, |_| echo);
    let server = worker.addrs[0];
    let c = client();
    let mut buf = [0u8; 2048];
    let mut sent = 0;
    while sent < DATAGRAMS {
        let n = BURST.min(DATAGRAMS - sent);
        let mut want: Vec<Vec<u8>> = (sent..sent + n).map(payload).collect();
        for p in &want {
            c.send_to(p, server).expect("send");
        }
        let mut got = Vec::with_capacity(n);
        for _ in 0..n {
            let (len, from) = c.recv_from(&mut buf).expect("echo lost (2 s timeout)");
            assert_eq!(from, server.into(), "reply from the receiving socket");
            got.push(buf[..len].to_vec());
        }
        // Loopback keeps order in practice; compare as multisets so the test asserts content.
        want.sort();
        got.sort();
        assert_eq!(got, want, "burst starting at {sent}");
        sent += n;
    }
    let stats = worker.stop();
    assert_eq!(stats.received, DATAGRAMS as u64);
    assert_eq!(stats.sent, DATAGRAMS as u64);
    assert_eq!(stats.send_errors.total(), 0);
    assert_eq!(stats.buffers_in_flight, 0);
    println!(
        "echo {label}: {} datagrams, {} enters ({:.3} per datagram), {} cqes",
        DATAGRAMS,
        stats.enters,
        stats.enters as f64 / DATAGRAMS as f64,
        stats.cqes
    );
    (stats.enters, DATAGRAMS as u64)
}

#[test]
fn echoes_ten_thousand_datagrams_byte_identical_in_few_enters() {
    // Default: a wait holds out up to 50 µs for 32 completions, so a burst is handled in a
    // few wake-ups whatever the scheduling.
    let (enters, datagrams) = echo_run(UringConfig::default(), "default");
    assert!(
        enters <= datagrams / 4,
        "{enters} io_uring_enter calls for {datagrams} datagrams"
    );
}

#[test]
fn without_batch_window_sends_still_ride_on_the_wait() {
    // Waking on the first completion, the number of wake-ups depends on how the client and
    // the worker are scheduled; what must hold is that sends cost no enter of their own:
    // each enter both submits the previous drain's sends and reaps at least one completion.
    let cfg = UringConfig {
        batch_window: Duration::ZERO,
        ..UringConfig::default()
    };
    let (enters, datagrams) = echo_run(cfg, "unbatched");
    // + slack for the 5 ms idle timeouts of the worker loop.
    assert!(
        enters <= datagrams + 200,
        "{enters} io_uring_enter calls for {datagrams} datagrams"
    );
}
