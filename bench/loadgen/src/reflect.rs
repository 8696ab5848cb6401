//! A trivial relay for the generator's own calibration: it binds every `tx_to` of a
//! scenario, re-keys what arrives (unprotect with the stream's `tx_crypto`, protect with
//! its `rx_crypto`, or plain) and sends it to the stream's `rx_local`, from the socket it
//! arrived on, with the same batched syscalls as the generator. Pinned to the other core,
//! it shows how fast the generator can go when the relay is not the limit; with
//! `--plain` scenarios it is cheaper than the generator by the crypto work.
//!
//! Streams sharing a `tx_to` are told apart by SSRC, learned on a stream's first packet
//! (plain: from the payload's stream index; SRTP: by trying the candidate keys once).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgeway_srtp::SrtpContext;

use crate::engine::SetupError;
use crate::scenario::Scenario;
use crate::sys::{self, Epoll, MmsgBatch, RawAddr};

/// Counters of a reflector run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReflectStats {
    /// Datagrams forwarded.
    pub forwarded: u64,
    /// Datagrams dropped (no stream, or failed authentication).
    pub dropped: u64,
}

struct Leg {
    inbound: Option<SrtpContext>,
    outbound: Option<SrtpContext>,
    dst: RawAddr,
}

fn ctx(
    stream: usize,
    c: &Option<edgeway_srtp::sdes::CryptoAttribute>,
) -> Result<Option<SrtpContext>, SetupError> {
    c.as_ref()
        .map(|c| {
            let mut cfg = c.to_config();
            cfg.max_streams = 4;
            SrtpContext::new(&cfg).map_err(|source| SetupError::Srtp { stream, source })
        })
        .transpose()
}

/// Relays the scenario's streams until `stop` is set.
pub fn reflect(
    scenario: &Scenario,
    sock_buf: usize,
    stop: &AtomicBool,
) -> Result<ReflectStats, SetupError> {
    sys::raise_nofile_limit();
    let mut socks: Vec<UdpSocket> = Vec::new();
    let mut index: HashMap<SocketAddr, usize> = HashMap::new();
    let mut candidates: Vec<Vec<usize>> = Vec::new();
    let mut legs = Vec::with_capacity(scenario.streams.len());
    for (i, s) in scenario.streams.iter().enumerate() {
        let si = match index.get(&s.tx_to) {
            Some(&si) => si,
            None => {
                let u = UdpSocket::bind(s.tx_to).map_err(|source| SetupError::Bind {
                    addr: s.tx_to,
                    source,
                })?;
                sys::set_socket_buffers(&u, sock_buf)?;
                socks.push(u);
                candidates.push(Vec::new());
                index.insert(s.tx_to, socks.len() - 1);
                socks.len() - 1
            }
        };
        candidates[si].push(i);
        legs.push(Leg {
            inbound: ctx(i, &s.tx_crypto)?,
            outbound: ctx(i, &s.rx_crypto)?,
            dst: RawAddr::new(s.rx_local),
        });
    }
    let mut epoll = Epoll::new(1024)?;
    for (i, s) in socks.iter().enumerate() {
        epoll.add(s.as_raw_fd(), i as u64)?;
    }
    let mut learned: HashMap<(usize, u32), usize> = HashMap::new();
    let mut rx = MmsgBatch::new();
    let mut tx = MmsgBatch::new();
    let mut scratch = vec![0u8; sys::SLOT];
    let mut stats = ReflectStats::default();
    while !stop.load(Ordering::Relaxed) {
        let ready = epoll.wait(Duration::from_millis(50))?;
        for e in 0..ready {
            let sock = epoll.token(e) as usize;
            let fd = socks[sock].as_raw_fd();
            loop {
                let got = rx.recv(fd)?;
                for i in 0..got {
                    let (buf, len) = rx.datagram_mut(i);
                    if !(12..=sys::SLOT - 32).contains(&len) {
                        stats.dropped += 1;
                        continue;
                    }
                    let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                    let leg_i = match learned.get(&(sock, ssrc)) {
                        Some(&l) => Some(l),
                        None => {
                            let found = candidates[sock].iter().copied().find(|&c| {
                                scratch[..len].copy_from_slice(&buf[..len]);
                                match &legs[c].inbound {
                                    // Trial on a clone: the real context commits below.
                                    Some(ctx) => {
                                        ctx.clone().unprotect_rtp(&mut scratch, len).is_ok()
                                    }
                                    None => crate::payload::parse(&buf[..len])
                                        .is_some_and(|p| p.stream as usize == c),
                                }
                            });
                            if let Some(f) = found {
                                learned.insert((sock, ssrc), f);
                            }
                            found
                        }
                    };
                    let Some(l) = leg_i else {
                        stats.dropped += 1;
                        continue;
                    };
                    let leg = &mut legs[l];
                    let plain = match leg.inbound.as_mut() {
                        Some(c) => match c.unprotect_rtp(buf, len) {
                            Ok(n) => n,
                            Err(_) => {
                                stats.dropped += 1;
                                continue;
                            }
                        },
                        None => len,
                    };
                    let slot = tx.next_slot();
                    slot[..plain].copy_from_slice(&buf[..plain]);
                    let out = match leg.outbound.as_mut() {
                        Some(c) => match c.protect_rtp(slot, plain) {
                            Ok(n) => n,
                            Err(_) => {
                                stats.dropped += 1;
                                continue;
                            }
                        },
                        None => plain,
                    };
                    tx.push(out, &leg.dst);
                    stats.forwarded += 1;
                }
                if !tx.is_empty() {
                    tx.send(fd);
                }
                if got < sys::BATCH {
                    break;
                }
            }
        }
    }
    Ok(stats)
}
