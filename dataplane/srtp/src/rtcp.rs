//! Zero-copy views over RTCP packets and compound packets (RFC 3550 §6).

/// Why an RTCP packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// Shorter than a header, or than the length a header announces.
    #[error("RTCP packet of {len} bytes, {needed} needed")]
    TooShort {
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// The version field is not 2.
    #[error("RTCP version {0}, expected 2")]
    BadVersion(u8),
    /// The packet type is outside RTCP's range (192-223 on muxed ports, 200-211 in practice).
    #[error("packet type {0} is not RTCP")]
    NotRtcp(u8),
    /// Padding set on a packet that is not the last of its compound, or a bad padding count.
    #[error("bad RTCP padding")]
    BadPadding,
    /// Report blocks or SDES items overrun the packet.
    #[error("RTCP body overruns its length")]
    BodyOverrun,
}

/// Sender report.
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;
/// Application-defined.
pub const PT_APP: u8 = 204;
/// Transport-layer feedback (RFC 4585).
pub const PT_RTPFB: u8 = 205;
/// Payload-specific feedback (RFC 4585).
pub const PT_PSFB: u8 = 206;

/// The fixed part SRTCP needs in clear: the 4-byte header and the sender SSRC.
pub const SRTCP_CLEAR_LEN: usize = 8;

/// Validates the first RTCP header of a (possibly encrypted) compound packet: what SRTCP can
/// check before decryption. Returns the sender SSRC.
#[inline]
pub fn check_first_header(packet: &[u8]) -> Result<u32, RtcpError> {
    if packet.len() < SRTCP_CLEAR_LEN {
        return Err(RtcpError::TooShort {
            len: packet.len(),
            needed: SRTCP_CLEAR_LEN,
        });
    }
    if packet[0] >> 6 != 2 {
        return Err(RtcpError::BadVersion(packet[0] >> 6));
    }
    if !(192..=223).contains(&packet[1]) {
        return Err(RtcpError::NotRtcp(packet[1]));
    }
    Ok(u32::from_be_bytes([
        packet[4], packet[5], packet[6], packet[7],
    ]))
}

/// One RTCP packet inside a compound packet.
#[derive(Debug, Clone, Copy)]
pub struct RtcpPacket<'a> {
    buf: &'a [u8],
}

impl<'a> RtcpPacket<'a> {
    /// The 5-bit count field (reception report count, source count or feedback format).
    pub fn count(&self) -> u8 {
        self.buf[0] & 0x1f
    }
    /// The packet type.
    pub fn packet_type(&self) -> u8 {
        self.buf[1]
    }
    /// The whole packet, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// The first SSRC after the header (the sender's for SR, RR, feedback and APP), if any.
    pub fn ssrc(&self) -> Option<u32> {
        self.buf
            .get(4..8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The sender info of a sender report.
    pub fn sender_info(&self) -> Option<SenderInfo> {
        if self.packet_type() != PT_SR || self.buf.len() < 28 {
            return None;
        }
        let w = |i: usize| {
            u32::from_be_bytes([
                self.buf[i],
                self.buf[i + 1],
                self.buf[i + 2],
                self.buf[i + 3],
            ])
        };
        Some(SenderInfo {
            ntp_timestamp: (u64::from(w(8)) << 32) | u64::from(w(12)),
            rtp_timestamp: w(16),
            packet_count: w(20),
            octet_count: w(24),
        })
    }

    /// The reception report blocks of an SR or RR.
    pub fn report_blocks(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        let start = match self.packet_type() {
            PT_SR => 28,
            PT_RR => 8,
            _ => self.buf.len(),
        };
        let n = usize::from(self.count());
        self.buf
            .get(start..)
            .unwrap_or(&[])
            .chunks_exact(24)
            .take(n)
            .map(ReportBlock::from_bytes)
    }
}

/// Sender information of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp, 32.32 fixed point.
    pub ntp_timestamp: u64,
    /// RTP timestamp matching the NTP time.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packet_count: u32,
    /// Payload octets sent.
    pub octet_count: u32,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// Source the block reports on.
    pub ssrc: u32,
    /// Fraction lost since the last report, /256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Last SR timestamp (middle 32 bits of NTP).
    pub last_sr: u32,
    /// Delay since last SR, 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn from_bytes(b: &[u8]) -> Self {
        let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let lost = w(4) & 0x00ff_ffff;
        // Sign-extend the 24-bit field.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        ReportBlock {
            ssrc: w(0),
            fraction_lost: b[4],
            cumulative_lost,
            extended_highest_seq: w(8),
            jitter: w(12),
            last_sr: w(16),
            delay_since_last_sr: w(20),
        }
    }
}

/// A validated compound RTCP packet: every packet's header, length and padding checked.
#[derive(Debug, Clone, Copy)]
pub struct RtcpCompound<'a> {
    buf: &'a [u8],
}

impl<'a> RtcpCompound<'a> {
    /// Validates a compound packet (RFC 3550 Appendix A.2, minus the SR/RR-first rule, which
    /// RFC 5506 reduced-size RTCP relaxes).
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtcpError> {
        if buf.is_empty() {
            return Err(RtcpError::TooShort { len: 0, needed: 4 });
        }
        let mut pos = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            if rest.len() < 4 {
                return Err(RtcpError::TooShort {
                    len: rest.len(),
                    needed: 4,
                });
            }
            if rest[0] >> 6 != 2 {
                return Err(RtcpError::BadVersion(rest[0] >> 6));
            }
            if !(192..=223).contains(&rest[1]) {
                return Err(RtcpError::NotRtcp(rest[1]));
            }
            let len = 4 * (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1);
            if rest.len() < len {
                return Err(RtcpError::TooShort {
                    len: rest.len(),
                    needed: len,
                });
            }
            if rest[0] & 0x20 != 0 {
                let count = usize::from(rest[len - 1]);
                if pos + len != buf.len() || count == 0 || count > len - 4 {
                    return Err(RtcpError::BadPadding);
                }
            }
            let pkt = RtcpPacket { buf: &rest[..len] };
            let body = match pkt.packet_type() {
                PT_SR => 28 + 24 * usize::from(pkt.count()),
                PT_RR => 8 + 24 * usize::from(pkt.count()),
                PT_BYE => 4 + 4 * usize::from(pkt.count()),
                _ => 4,
            };
            if body > len {
                return Err(RtcpError::BodyOverrun);
            }
            pos += len;
        }
        Ok(RtcpCompound { buf })
    }

    /// The packets of the compound, in order.
    pub fn packets(&self) -> impl Iterator<Item = RtcpPacket<'a>> + 'a {
        let mut rest = self.buf;
        core::iter::from_fn(move || {
            if rest.len() < 4 {
                return None;
            }
            let len = 4 * (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1);
            let (pkt, tail) = rest.split_at(len.min(rest.len()));
            rest = tail;
            Some(RtcpPacket { buf: pkt })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sr_with_one_block() -> Vec<u8> {
        let mut p = vec![0x81, PT_SR, 0, 12, 0, 0, 0, 7];
        p.extend_from_slice(&[
            0, 0, 0, 1, 0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 10, 0, 0, 6, 64,
        ]);
        p.extend_from_slice(&[0, 0, 0, 9, 25, 0xff, 0xff, 0xfe, 0, 1, 0, 5, 0, 0, 0, 33]);
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        p
    }

    #[test]
    fn parses_compound_sr_and_bye() {
        let mut p = sr_with_one_block();
        p.extend_from_slice(&[0x81, PT_BYE, 0, 1, 0, 0, 0, 7]);
        let c = RtcpCompound::parse(&p).unwrap();
        let pkts: Vec<_> = c.packets().collect();
        assert_eq!(pkts.len(), 2);
        let si = pkts[0].sender_info().unwrap();
        assert_eq!(si.packet_count, 10);
        let rb: Vec<_> = pkts[0].report_blocks().collect();
        assert_eq!(rb[0].ssrc, 9);
        assert_eq!(rb[0].fraction_lost, 25);
        assert_eq!(rb[0].cumulative_lost, -2);
        assert_eq!(rb[0].extended_highest_seq, 0x10005);
        assert_eq!(pkts[1].packet_type(), PT_BYE);
        assert_eq!(check_first_header(&p).unwrap(), 7);
    }

    #[test]
    fn refuses_malformed() {
        assert!(RtcpCompound::parse(&[]).is_err());
        assert_eq!(
            RtcpCompound::parse(&[0x40, 200, 0, 0]).unwrap_err(),
            RtcpError::BadVersion(1)
        );
        assert_eq!(
            RtcpCompound::parse(&[0x80, 96, 0, 0]).unwrap_err(),
            RtcpError::NotRtcp(96)
        );
        assert!(matches!(
            RtcpCompound::parse(&[0x80, 200, 0, 9, 0, 0, 0, 0]),
            Err(RtcpError::TooShort { .. })
        ));
        // RR claiming 2 report blocks in 8 bytes.
        assert_eq!(
            RtcpCompound::parse(&[0x82, PT_RR, 0, 1, 0, 0, 0, 1]).unwrap_err(),
            RtcpError::BodyOverrun
        );
        // Padding on a packet that is not last.
        let mut p = vec![0xA0, PT_RR, 0, 1, 0, 0, 0, 4];
        p.extend_from_slice(&[0x80, PT_RR, 0, 1, 0, 0, 0, 1]);
        assert_eq!(RtcpCompound::parse(&p).unwrap_err(), RtcpError::BadPadding);
        assert!(check_first_header(&[0x80, 200, 0]).is_err());
    }
}
