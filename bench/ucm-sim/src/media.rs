//! The media of a simulated phone, sans-IO: G.711-sized RTP (or SRTP) packets to send every
//! 20 ms, and a check of what arrives (decrypted, counted good/bad, lost by sequence).
//!
//! The IO layer owns the UDP socket and the 20 ms tick: it calls [`MediaStream::next_packet`]
//! on each tick and sends the bytes to [`MediaStream::remote`], and hands every datagram to
//! [`MediaStream::receive`].

use std::net::SocketAddr;

use edgeway_srtp::rtp::RtpPacket;
use edgeway_srtp::{SrtpContext, MAX_TRAILER_LEN};
use serde::Serialize;

use crate::offer::{Direction, MediaPlan, SdpRefusal};

/// RTP header plus 20 ms of G.711 at 8 kHz: the 172 bytes an IP phone sends 50 times a second.
pub const G711_PACKET: usize = 12 + 160;
/// Packets per second (ptime 20).
pub const PACKETS_PER_SECOND: u32 = 50;
/// Buffer size for one packet plus the SRTP trailer.
pub const PACKET_BUF: usize = G711_PACKET + MAX_TRAILER_LEN + 64;

/// What one stream sent and received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MediaCounters {
    /// Packets sent.
    pub tx: u64,
    /// Packets received that decrypted (or, for RTP, parsed).
    pub rx: u64,
    /// Packets that failed SRTP authentication or replay checks.
    pub decrypt_failures: u64,
    /// Packets that are not RTP or carry no payload.
    pub bad: u64,
    /// Sequence numbers skipped (counted when a later packet arrives).
    pub lost: u64,
}

/// One direction pair of a phone's audio; see the module docs.
#[derive(Debug)]
pub struct MediaStream {
    remote: SocketAddr,
    direction: Direction,
    payload_type: u8,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    tx: Option<SrtpContext>,
    rx: Option<SrtpContext>,
    /// The highest sequence received, extended to 64 bits.
    highest: Option<u64>,
    counters: MediaCounters,
}

fn context(
    attr: Option<&edgeway_srtp::sdes::CryptoAttribute>,
) -> Result<Option<SrtpContext>, SdpRefusal> {
    attr.map(|a| {
        SrtpContext::new(&a.to_config()).map_err(|e| SdpRefusal {
            warn_code: 306,
            text: format!("a=crypto cannot be used: {e}"),
        })
    })
    .transpose()
}

impl MediaStream {
    /// A stream following `plan`, sending as `ssrc` from `first_seq`.
    pub fn new(plan: &MediaPlan, ssrc: u32, first_seq: u16) -> Result<MediaStream, SdpRefusal> {
        Ok(MediaStream {
            remote: plan.remote,
            direction: plan.direction,
            payload_type: plan.payload_type,
            ssrc,
            seq: first_seq,
            timestamp: u32::from(first_seq) * 160,
            tx: context(plan.tx_crypto.as_ref())?,
            rx: context(plan.rx_crypto.as_ref())?,
            highest: None,
            counters: MediaCounters::default(),
        })
    }

    /// Applies a new offer/answer (re-INVITE, UPDATE): address, direction and keys. A key
    /// that did not change keeps its context, so the rollover counter and replay state stay.
    pub fn update(&mut self, old: &MediaPlan, plan: &MediaPlan) -> Result<(), SdpRefusal> {
        if plan.tx_crypto != old.tx_crypto {
            self.tx = context(plan.tx_crypto.as_ref())?;
        }
        if plan.rx_crypto != old.rx_crypto {
            self.rx = context(plan.rx_crypto.as_ref())?;
            self.highest = None;
        }
        self.remote = plan.remote;
        self.direction = plan.direction;
        self.payload_type = plan.payload_type;
        Ok(())
    }

    /// Where packets go.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The counters.
    pub fn counters(&self) -> MediaCounters {
        self.counters
    }

    /// The next 20 ms packet in `buf` (at least [`PACKET_BUF`] long); `None` when this side
    /// does not send (hold) or protection failed.
    pub fn next_packet(&mut self, buf: &mut [u8]) -> Option<usize> {
        if !self.direction.sends() || buf.len() < PACKET_BUF {
            return None;
        }
        buf[0] = 0x80;
        buf[1] = self.payload_type;
        buf[2..4].copy_from_slice(&self.seq.to_be_bytes());
        buf[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        // A recognisable payload: the low byte of the sequence number, repeated.
        buf[12..G711_PACKET].fill(self.seq as u8);
        let len = match &mut self.tx {
            Some(ctx) => ctx.protect_rtp(buf, G711_PACKET).ok()?,
            None => G711_PACKET,
        };
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(160);
        self.counters.tx += 1;
        Some(len)
    }

    /// Checks one received datagram (decrypted in place when SRTP).
    pub fn receive(&mut self, buf: &mut [u8], len: usize) {
        let len = match &mut self.rx {
            Some(ctx) => match ctx.unprotect_rtp(buf, len) {
                Ok(n) => n,
                Err(_) => {
                    self.counters.decrypt_failures += 1;
                    return;
                }
            },
            None => len,
        };
        let Ok(packet) = RtpPacket::parse(&buf[..len]) else {
            self.counters.bad += 1;
            return;
        };
        // Another ucm-sim phone fills the payload with the sequence's low byte; a real peer
        // sends audio: only RTP itself is checked (SRTP authentication already was).
        if packet.payload().is_empty() {
            self.counters.bad += 1;
            return;
        }
        self.counters.rx += 1;
        let seq = packet.sequence_number();
        let index = match self.highest {
            None => u64::from(seq),
            Some(h) => {
                // Extend around the highest seen (RFC 3711 §3.3.1 style).
                let base = h & !0xffff;
                let candidates = [base.wrapping_sub(0x1_0000), base, base + 0x1_0000];
                candidates
                    .into_iter()
                    .map(|b| b | u64::from(seq))
                    .min_by_key(|&i| i.abs_diff(h))
                    .unwrap_or(h)
            }
        };
        match self.highest {
            Some(h) if index > h => {
                self.counters.lost += index - h - 1;
                self.highest = Some(index);
            }
            // Late or duplicate packets: a gap counted as lost is not given back.
            Some(_) => {}
            None => self.highest = Some(index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offer::{answer, make_offer, read_answer};
    use crate::users::SecurityProfile;

    fn pair(profile: SecurityProfile) -> (MediaStream, MediaStream) {
        let mut rng = rand::thread_rng();
        let a_addr = SocketAddr::from(([127, 0, 0, 1], 41000));
        let b_addr = SocketAddr::from(([127, 0, 0, 1], 42000));
        let offer = make_offer(profile, a_addr, &mut rng);
        let (body, b_plan) =
            answer(&offer.body, profile, b_addr, 1, None, &mut rng).expect("answer");
        let a_plan = read_answer(&body, profile, &offer).expect("read");
        (
            MediaStream::new(&a_plan, 1, 65530).expect("a"),
            MediaStream::new(&b_plan, 2, 100).expect("b"),
        )
    }

    #[test]
    fn srtp_both_ways_counts_good_lost_and_forged() {
        let (mut a, mut b) = pair(SecurityProfile::Secure);
        let mut buf = [0u8; PACKET_BUF];
        for i in 0..20 {
            let n = a.next_packet(&mut buf).expect("sends");
            assert_eq!(n, G711_PACKET + 10, "SRTP adds the 80-bit tag");
            if i == 7 || i == 8 {
                continue; // lost in the network (across the sequence wrap)
            }
            b.receive(&mut buf, n);
        }
        let n = b.next_packet(&mut buf).expect("sends");
        a.receive(&mut buf, n);
        let n = b.next_packet(&mut buf).expect("sends");
        buf[20] ^= 1;
        a.receive(&mut buf, n);
        let (ca, cb) = (a.counters(), b.counters());
        assert_eq!((cb.rx, cb.lost, cb.decrypt_failures), (18, 2, 0), "{cb:?}");
        assert_eq!((ca.tx, ca.rx, ca.decrypt_failures), (20, 1, 1), "{ca:?}");
    }

    #[test]
    fn rtp_counts_and_rejects_garbage() {
        let (mut a, mut b) = pair(SecurityProfile::NonSecure);
        let mut buf = [0u8; PACKET_BUF];
        let n = a.next_packet(&mut buf).expect("sends");
        assert_eq!(n, G711_PACKET);
        b.receive(&mut buf, n);
        b.receive(&mut [0xff; 4], 4);
        assert_eq!((b.counters().rx, b.counters().bad), (1, 1));
    }
}
