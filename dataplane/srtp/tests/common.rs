//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use edgeway_srtp::{MasterKey, SrtpConfig, SrtpContext, SrtpProfile};

/// Deterministic xorshift generator: tests stay reproducible without a rand dependency.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

pub fn key(profile: SrtpProfile, seed: u8) -> MasterKey {
    let k: Vec<u8> = (0..profile.master_key_len())
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
        .collect();
    let s: Vec<u8> = (0..profile.master_salt_len())
        .map(|i| seed ^ (0xa0 + i as u8))
        .collect();
    MasterKey::new(profile, &k, &s).unwrap()
}

pub fn context(profile: SrtpProfile, seed: u8) -> SrtpContext {
    SrtpContext::new(&SrtpConfig::new(profile, key(profile, seed))).unwrap()
}

/// An RTP packet of `len` bytes in total (header included) with a recognisable payload.
pub fn rtp(ssrc: u32, seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((12..len).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// An RTP packet with two CSRCs and a one-byte-form header extension.
pub fn rtp_with_extension(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x92, 0x60, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0x55, 0, 0]);
    p.extend_from_slice(b"payload after an extension");
    p
}

/// A sender report from `ssrc` with one report block, padded to `len` with an APP packet.
pub fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 200, 0, 12];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x11; 20]);
    p.extend_from_slice(&[0x22; 24]);
    p.extend_from_slice(&[0x81, 203, 0, 1]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

pub fn with_room(p: &[u8]) -> Vec<u8> {
    let mut b = p.to_vec();
    b.resize(p.len() + edgeway_srtp::MAX_TRAILER_LEN + 64, 0);
    b
}
