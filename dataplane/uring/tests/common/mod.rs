//! A worker thread around one `Uring`, and a UDP client, for the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use edgeway_uring::{Datagram, Disposition, SocketId, Uring, UringConfig, UringStats};

pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A thread running `run_once` on its own `Uring` until stopped.
pub struct Worker {
    pub addrs: Vec<SocketAddrV4>,
    pub ids: Vec<SocketId>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<UringStats>,
}

impl Worker {
    /// Stops the loop and returns the ring's final counters.
    pub fn stop(self) -> UringStats {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("worker panicked")
    }
}

/// Starts a worker with `n` sockets on 127.0.0.1 (ports picked by the kernel); its handler is
/// made on the worker thread from the socket ids.
pub fn spawn_worker<F, H>(cfg: UringConfig, n: usize, make: F) -> Worker
where
    F: FnOnce(Vec<SocketId>) -> H + Send + 'static,
    H: FnMut(Datagram<'_>) -> Disposition,
{
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let stop2 = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut uring = Uring::new(&cfg).expect("Uring::new");
        let ids: Vec<SocketId> = (0..n)
            .map(|_| {
                uring
                    .bind_udp(SocketAddrV4::new(LOCALHOST, 0))
                    .expect("bind_udp")
            })
            .collect();
        let addrs = ids
            .iter()
            .map(|&id| uring.local_addr(id).expect("open"))
            .collect::<Vec<_>>();
        // Arm the receives before anyone sends.
        uring.flush().expect("flush");
        tx.send((addrs, ids.clone())).expect("send addrs");
        let mut handler = make(ids);
        while !stop2.load(Ordering::Relaxed) {
            uring
                .run_once(Some(Duration::from_millis(5)), &mut handler)
                .expect("run_once");
        }
        uring.stats()
    });
    let (addrs, ids) = rx.recv().expect("worker started");
    Worker {
        addrs,
        ids,
        stop,
        handle,
    }
}

/// The echo handler: send each datagram back to its source from the socket it came in on.
pub fn echo(d: Datagram<'_>) -> Disposition {
    Disposition::Send {
        from: d.socket,
        to: d.src,
        len: d.len,
    }
}

/// A client socket on 127.0.0.1 with a read timeout.
pub fn client() -> UdpSocket {
    let s = UdpSocket::bind((LOCALHOST, 0)).expect("client bind");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s
}

/// Deterministic payload `i`: size in 0..1400 (every 97th is empty), bytes derived from `i`.
pub fn payload(i: usize) -> Vec<u8> {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let len = if i.is_multiple_of(97) {
        0
    } else {
        (x % 1400) as usize
    };
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
