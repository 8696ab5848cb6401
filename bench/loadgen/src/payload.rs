//! The test packet: a 12-byte RTP header (PT 0, PCMU) and a 160-byte payload (20 ms of
//! G.711) whose first 24 bytes identify it, so the receiver can measure loss, duplicates,
//! reordering and one-way latency per stream:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 12 | 4 | magic `EWLG` |
//! | 16 | 4 | stream index (big endian) |
//! | 20 | 8 | global packet number `k` |
//! | 28 | 8 | `CLOCK_MONOTONIC` send time, ns |
//!
//! The rest is PCMU silence (0xff).

/// RTP header + G.711 20 ms payload.
pub const PACKET_LEN: usize = 12 + 160;
/// Payload marker.
pub const MAGIC: [u8; 4] = *b"EWLG";

/// What the receiver reads back from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Stream index.
    pub stream: u32,
    /// Global packet number.
    pub k: u64,
    /// Send time, ns, CLOCK_MONOTONIC.
    pub sent_ns: u64,
}

/// Writes a complete packet with SSRC `ssrc` and zeroed stamp into `buf[..PACKET_LEN]`.
pub fn template(buf: &mut [u8], ssrc: u32) {
    buf[0] = 0x80;
    buf[1] = 0; // PT 0 (PCMU), no marker
    buf[2..8].fill(0);
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    buf[12..16].copy_from_slice(&MAGIC);
    buf[16..36].fill(0);
    buf[36..PACKET_LEN].fill(0xff);
}

/// Writes packet `j` of a stream (RTP sequence `j mod 2^16`, timestamp `160 j`).
pub fn fill(buf: &mut [u8], ssrc: u32, j: u64, stream: u32, k: u64, sent_ns: u64) {
    template(buf, ssrc);
    buf[2..4].copy_from_slice(&(j as u16).to_be_bytes());
    buf[4..8].copy_from_slice(&((j as u32).wrapping_mul(160)).to_be_bytes());
    buf[16..20].copy_from_slice(&stream.to_be_bytes());
    buf[20..28].copy_from_slice(&k.to_be_bytes());
    buf[28..36].copy_from_slice(&sent_ns.to_be_bytes());
}

/// Reads the stamp of a plain RTP packet; `None` if it is not one of ours.
pub fn parse(pkt: &[u8]) -> Option<Stamp> {
    let hdr = edgeway_srtp::rtp::header_len(pkt).ok()?;
    let p = pkt.get(hdr..hdr + 24)?;
    if p[..4] != MAGIC {
        return None;
    }
    Some(Stamp {
        stream: u32::from_be_bytes(p[4..8].try_into().ok()?),
        k: u64::from_be_bytes(p[8..16].try_into().ok()?),
        sent_ns: u64::from_be_bytes(p[16..24].try_into().ok()?),
    })
}
