//! Buffer exhaustion, closing and reusing sockets, copy sends, teardown. These drive the ring
//! on the test thread, so every step is deterministic.

mod common;

use std::cell::Cell;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, echo, LOCALHOST};
use edgeway_uring::{Datagram, Disposition, SendError, Uring, UringConfig, UringStats};

/// Runs the ring until `done` holds (or fails after 5 s).
fn pump<H>(uring: &mut Uring, handler: &mut H, done: impl Fn(&UringStats) -> bool)
where
    H: FnMut(Datagram<'_>) -> Disposition,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(&uring.stats()) {
        assert!(
            Instant::now() < deadline,
            "timed out; stats: {:?}",
            uring.stats()
        );
        uring
            .run_once(Some(Duration::from_millis(10)), handler)
            .expect("run_once");
    }
}

fn any_port() -> SocketAddrV4 {
    SocketAddrV4::new(LOCALHOST, 0)
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("v6"),
    }
}

#[test]
fn recovers_from_buffer_ring_exhaustion() {
    const FLOOD: u64 = 300;
    let cfg = UringConfig {
        buf_count: 8,
        ..UringConfig::default()
    };
    let mut uring = Uring::new(&cfg).expect("new");
    let a = uring.bind_udp(any_port()).expect("bind");
    let addr = uring.local_addr(a).expect("open");
    uring.flush().expect("arm");
    // Flood while the worker is not draining: only 8 buffers for 300 datagrams.
    let c = client();
    for i in 0..FLOOD {
        c.send_to(&i.to_be_bytes(), addr).expect("send");
    }
    let mut seen = Vec::new();
    let mut keep = |d: Datagram<'_>| {
        seen.push(u64::from_be_bytes(d.buf[..8].try_into().expect("8 bytes")));
        Disposition::Recycle
    };
    pump(&mut uring, &mut keep, |s| s.received >= FLOOD);
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..FLOOD).collect::<Vec<_>>(),
        "every queued datagram arrives"
    );
    let s = uring.stats();
    assert!(s.enobufs > 0, "the ring ran dry: {s:?}");
    assert!(
        s.rearms >= s.enobufs,
        "every ended receive was re-armed: {s:?}"
    );
    assert_eq!(s.buffers_in_flight, 0);

    // Normal traffic still flows after recovery.
    let mut buf = [0u8; 64];
    for i in 0..20u8 {
        c.send_to(&[i; 20], addr).expect("send");
        pump(&mut uring, &mut echo, |s| s.sent > u64::from(i));
        uring.flush().expect("flush");
        let (len, _) = c.recv_from(&mut buf).expect("echo after recovery");
        assert_eq!(&buf[..len], &[i; 20]);
    }
}

#[test]
fn tiny_queues_force_submits_and_survive_cq_overflow() {
    // 8 SQ entries for bursts of 200 echoes: the drain must submit mid-way instead of
    // dropping sends. 16 CQ entries for 200 receive completions at once: the kernel parks the
    // rest (IORING_FEAT_NODROP) and the next enter delivers them.
    const BURST: u64 = 200;
    let cfg = UringConfig {
        sq_entries: 8,
        cq_entries: 16,
        buf_count: 256,
        ..UringConfig::default()
    };
    let mut uring = Uring::new(&cfg).expect("new");
    let a = uring.bind_udp(any_port()).expect("bind");
    let addr = uring.local_addr(a).expect("open");
    uring.flush().expect("arm");
    let c = client();
    let mut buf = [0u8; 64];
    for round in 0..3u64 {
        for i in 0..BURST {
            c.send_to(&(round * BURST + i).to_be_bytes(), addr)
                .expect("send");
        }
        pump(&mut uring, &mut echo, |s| s.sent == (round + 1) * BURST);
        let mut got: Vec<u64> = (0..BURST)
            .map(|_| {
                let (len, _) = c.recv_from(&mut buf).expect("echo");
                u64::from_be_bytes(buf[..len].try_into().expect("8 bytes"))
            })
            .collect();
        got.sort_unstable();
        assert_eq!(
            got,
            (round * BURST..(round + 1) * BURST).collect::<Vec<_>>()
        );
    }
    let s = uring.stats();
    assert!(s.sq_full_submits > 0, "{s:?}");
    assert!(s.cq_overflows > 0, "{s:?}");
    assert_eq!(
        (s.cqes_lost, s.unexpected_cqes, s.buffers_in_flight),
        (0, 0, 0),
        "{s:?}"
    );
    println!("tiny queues: {s:?}");
}

#[test]
fn close_while_traffic_flows_then_reuse_the_slot() {
    let mut uring = Uring::new(&UringConfig::default()).expect("new");
    let a = uring.bind_udp(any_port()).expect("bind a");
    let b = uring.bind_udp(any_port()).expect("bind b");
    let (a_addr, b_addr) = (
        uring.local_addr(a).expect("a"),
        uring.local_addr(b).expect("b"),
    );
    uring.flush().expect("arm");

    // A blaster keeps both sockets busy for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let blaster = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = UdpSocket::bind((LOCALHOST, 0)).expect("blaster");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = s.send_to(&n.to_be_bytes(), a_addr);
                let _ = s.send_to(&n.to_be_bytes(), b_addr);
                n += 1;
                if n.is_multiple_of(32) {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
    };
    let per_socket = [Cell::new(0u64), Cell::new(0u64)];
    let mut count = |d: Datagram<'_>| {
        let n = &per_socket[d.socket.index()];
        n.set(n.get() + 1);
        // Echo into the void (the blaster never reads): keeps sends in flight during close.
        Disposition::Send {
            from: d.socket,
            to: d.src,
            len: d.len,
        }
    };
    pump(&mut uring, &mut count, |s| s.received > 500);

    assert!(uring.close(a));
    assert!(!uring.close(a), "closing twice is a no-op");
    assert_eq!(uring.local_addr(a), None);
    assert!(matches!(
        uring.send_copy(a, b_addr, b"x"),
        Err(SendError::UnknownSocket(id)) if id == a
    ));
    pump(&mut uring, &mut count, |s| s.sockets_closing == 0);
    // The port is free again: the socket really is closed.
    drop(UdpSocket::bind(a_addr).expect("A's port was released"));

    let c_id = uring.bind_udp(any_port()).expect("bind c");
    assert_eq!(c_id.index(), a.index(), "the slot is reused");
    assert_ne!(c_id, a, "but the stale id does not name the new socket");
    assert!(uring.send_copy(a, b_addr, b"x").is_err());
    let c_addr = uring.local_addr(c_id).expect("c open");

    // B kept working throughout, and C works.
    let b_before = per_socket[1].get();
    let probe = client();
    probe.send_to(b"to c", c_addr).expect("send");
    let mut buf = [0u8; 16];
    let deadline = Instant::now() + Duration::from_secs(5);
    probe.set_nonblocking(true).expect("nonblocking");
    let (len, from) = loop {
        uring
            .run_once(Some(Duration::from_millis(10)), &mut count)
            .expect("run_once");
        uring.flush().expect("flush");
        if let Ok(r) = probe.recv_from(&mut buf) {
            break r;
        }
        assert!(Instant::now() < deadline, "no echo from the reused slot");
    };
    assert_eq!((&buf[..len], v4(from)), (&b"to c"[..], c_addr));
    // B still receives (pump fails after 5 s otherwise).
    pump(&mut uring, &mut count, |_| {
        per_socket[1].get() > b_before + 100
    });
    stop.store(true, Ordering::Relaxed);
    blaster.join().expect("blaster");
    pump(&mut uring, &mut count, |s| s.buffers_in_flight == 0);
    let s = uring.stats();
    assert_eq!((s.sockets_open, s.sockets_closing), (2, 0));
    assert_eq!(s.unexpected_cqes, 0);
}

#[test]
fn send_copy_including_zero_length() {
    let cfg = UringConfig {
        send_slots: 2,
        ..UringConfig::default()
    };
    let mut uring = Uring::new(&cfg).expect("new");
    let a = uring.bind_udp(any_port()).expect("bind");
    let a_addr = uring.local_addr(a).expect("open");
    let c = client();
    let to = v4(c.local_addr().expect("addr"));

    uring.send_copy(a, to, b"keepalive").expect("first");
    uring.send_copy(a, to, &[]).expect("zero length");
    assert!(matches!(
        uring.send_copy(a, to, b"x"),
        Err(SendError::NoFreeSlot)
    ));
    let big = vec![0u8; uring.payload_capacity() + 1];
    assert!(matches!(
        uring.send_copy(a, to, &big),
        Err(SendError::TooLong { .. })
    ));
    uring.flush().expect("flush");

    let mut buf = [0u8; 64];
    let (len, from) = c.recv_from(&mut buf).expect("keepalive");
    assert_eq!((&buf[..len], v4(from)), (&b"keepalive"[..], a_addr));
    let (len, from) = c.recv_from(&mut buf).expect("empty datagram");
    assert_eq!((len, v4(from)), (0, a_addr));

    pump(&mut uring, &mut echo, |s| s.sent == 2);
    let s = uring.stats();
    assert_eq!(s.copy_slots_in_use, 0);
    assert_eq!(s.copy_slots_exhausted, 1);
    // Slots are free again.
    uring.send_copy(a, to, &[1, 2, 3]).expect("slot reused");
    uring.flush().expect("flush");
    let (len, _) = c.recv_from(&mut buf).expect("third");
    assert_eq!(&buf[..len], &[1, 2, 3]);
}

#[test]
fn drop_with_operations_in_flight_releases_everything() {
    let mut uring = Uring::new(&UringConfig::default()).expect("new");
    let ids: Vec<_> = (0..4)
        .map(|_| uring.bind_udp(any_port()).expect("bind"))
        .collect();
    let addrs: Vec<_> = ids
        .iter()
        .map(|&id| uring.local_addr(id).expect("open"))
        .collect();
    uring.flush().expect("arm");
    let c = client();
    for &addr in &addrs {
        for i in 0..50u8 {
            c.send_to(&[i; 100], addr).expect("send");
        }
    }
    // Handle some, leave sends queued and datagrams pending, then drop.
    uring
        .run_once(Some(Duration::from_millis(10)), &mut echo)
        .expect("run_once");
    let to = v4(c.local_addr().expect("addr"));
    uring
        .send_copy(ids[0], to, b"queued at drop")
        .expect("copy");
    drop(uring);
    for addr in addrs {
        drop(UdpSocket::bind(addr).expect("port released by drop"));
    }
}

#[test]
fn features_report_the_preferred_setup_on_this_kernel() {
    let uring = Uring::new(&UringConfig::default()).expect("new");
    let f = uring.features();
    assert!(
        f.single_issuer && f.defer_taskrun && f.submit_all && f.nodrop,
        "{f:?}"
    );
    assert!(f.sq_entries >= 4096 && f.cq_entries >= 4 * 4096, "{f:?}");
}

#[test]
fn bind_failure_leaves_no_trace() {
    let taken = UdpSocket::bind((LOCALHOST, 0)).expect("std bind");
    let mut uring = Uring::new(&UringConfig::default()).expect("new");
    let e = uring
        .bind_udp(v4(taken.local_addr().expect("addr")))
        .expect_err("port in use");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    let s = uring.stats();
    assert_eq!((s.sockets_open, s.sockets_closing), (0, 0));
    let id = uring.bind_udp(any_port()).expect("bind");
    assert_eq!(id.index(), 0, "no slot was consumed by the failure");
}

#[test]
fn rejects_bad_config() {
    for cfg in [
        UringConfig {
            buf_count: 100,
            ..UringConfig::default()
        },
        UringConfig {
            buf_size: 40,
            ..UringConfig::default()
        },
        UringConfig {
            cq_entries: 1,
            ..UringConfig::default()
        },
        UringConfig {
            send_slots: 0,
            ..UringConfig::default()
        },
    ] {
        let e = Uring::new(&cfg).expect_err("invalid config");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{cfg:?}");
    }
}
