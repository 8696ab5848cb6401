//! Forwarding between sockets, growth in place, many sockets on one ring.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::{client, echo, spawn_worker};
use edgeway_uring::{Disposition, UringConfig};

#[test]
fn relays_from_socket_a_out_of_socket_b() {
    let worker = spawn_worker(UringConfig::default(), 2, |ids| {
        let (a, b) = (ids[0], ids[1]);
        move |d: edgeway_uring::Datagram<'_>| {
            if d.socket == a {
                Disposition::Send {
                    from: b,
                    to: d.src,
                    len: d.len,
                }
            } else {
                Disposition::Recycle
            }
        }
    });
    let (a, b) = (worker.addrs[0], worker.addrs[1]);
    assert_ne!(a.port(), b.port());
    let c = client();
    let mut buf = [0u8; 2048];
    for i in 0..100u32 {
        let msg = format!("relay {i}").into_bytes();
        c.send_to(&msg, a).expect("send");
        let (len, from) = c.recv_from(&mut buf).expect("relayed datagram");
        assert_eq!(from, SocketAddr::V4(b), "the client sees B's port");
        assert_eq!(&buf[..len], &msg[..]);
    }
    // Traffic to B is recycled: nothing comes back.
    c.send_to(b"to b", b).expect("send");
    c.set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .expect("timeout");
    assert!(c.recv_from(&mut buf).is_err());
    let stats = worker.stop();
    assert_eq!(stats.received, 101);
    assert_eq!(stats.sent, 100);
}

#[test]
fn handler_grows_the_datagram_in_place() {
    const TAG: &[u8; 10] = b"+SRTP-TAG!";
    let worker = spawn_worker(UringConfig::default(), 1, |_| {
        |d: edgeway_uring::Datagram<'_>| {
            if d.len + TAG.len() > d.buf.len() {
                // Asking for more than the buffer holds is refused, not truncated.
                return Disposition::Send {
                    from: d.socket,
                    to: d.src,
                    len: d.buf.len() + 1,
                };
            }
            d.buf[d.len..d.len + TAG.len()].copy_from_slice(TAG);
            Disposition::Send {
                from: d.socket,
                to: d.src,
                len: d.len + TAG.len(),
            }
        }
    });
    let server = worker.addrs[0];
    let cap = UringConfig::default().payload_capacity();
    let c = client();
    let mut buf = vec![0u8; 4096];
    for size in [0, 1, 172, 1400, cap - TAG.len()] {
        let msg: Vec<u8> = (0..size).map(|i| i as u8).collect();
        c.send_to(&msg, server).expect("send");
        let (len, _) = c.recv_from(&mut buf).expect("grown datagram");
        assert_eq!(len, size + TAG.len());
        assert_eq!(&buf[..size], &msg[..]);
        assert_eq!(&buf[size..len], TAG);
    }
    // One byte more and the growth no longer fits: the send is rejected.
    let msg = vec![7u8; cap - TAG.len() + 1];
    c.send_to(&msg, server).expect("send");
    c.set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .expect("timeout");
    assert!(c.recv_from(&mut buf).is_err());
    let stats = worker.stop();
    assert_eq!(stats.send_rejected, 1);
    assert_eq!(stats.sent, 5);
    assert_eq!(stats.buffers_in_flight, 0);
}

#[test]
fn five_hundred_sockets_on_one_ring() {
    const N: usize = 500;
    let worker = spawn_worker(UringConfig::default(), N, |_| echo);
    let by_port: HashMap<u16, usize> = worker
        .addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (a.port(), i))
        .collect();
    assert_eq!(by_port.len(), N, "distinct ports");
    let c = client();
    let mut buf = [0u8; 64];
    let mut seen = vec![0u32; N];
    for round in 0..2u8 {
        for chunk in (0..N).collect::<Vec<_>>().chunks(50) {
            for &i in chunk {
                c.send_to(&[round, (i >> 8) as u8, i as u8], worker.addrs[i])
                    .expect("send");
            }
            for _ in chunk {
                let (len, from) = c.recv_from(&mut buf).expect("echo");
                assert_eq!(len, 3);
                assert_eq!(buf[0], round);
                let i = (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                let SocketAddr::V4(from) = from else {
                    panic!("v6 reply")
                };
                assert_eq!(
                    by_port.get(&from.port()),
                    Some(&i),
                    "reply from the socket it was sent to"
                );
                seen[i] += 1;
            }
        }
    }
    assert!(seen.iter().all(|&n| n == 2));
    let stats = worker.stop();
    assert_eq!(stats.sockets_open, N as u32);
    assert_eq!(stats.received, 2 * N as u64);
    assert_eq!(stats.sent, 2 * N as u64);
}
