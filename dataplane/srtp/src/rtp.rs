//! Zero-copy views over RTP packets (RFC 3550 §5.1) with RFC 8285 header extensions.
//!
//! [`RtpPacket::parse`] validates a plain packet completely (padding included);
//! [`header_len`] validates only what SRTP leaves in clear (fixed header, CSRCs, extension),
//! which is all that can be checked before decryption.

/// Why an RTP packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Fewer than 12 bytes, or shorter than the header it announces.
    #[error("packet of {len} bytes is shorter than its {needed}-byte header")]
    TooShort {
        /// Length of the packet.
        len: usize,
        /// Bytes the header needs.
        needed: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// The padding count is zero or larger than the payload.
    #[error("padding count {count} does not fit a {payload}-byte payload")]
    BadPadding {
        /// The last byte of the packet.
        count: u8,
        /// Bytes after the header.
        payload: usize,
    },
    /// An RFC 8285 header extension element overruns the extension block.
    #[error("header extension element overruns the extension block")]
    BadExtension,
    /// The second byte marks an RTCP packet (RFC 5761 demultiplexing), not RTP.
    #[error("packet type {0} is RTCP, not RTP")]
    IsRtcp(u8),
}

/// Length of the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;

/// Whether a packet on a muxed RTP/RTCP port is RTCP (RFC 5761 §4: payload types 64-95 with
/// the marker bit, i.e. second byte 192-223).
#[inline]
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 2 && (192..=223).contains(&packet[1])
}

/// Validates the clear part of an RTP header and returns its length: fixed header, CSRC list
/// and header extension. Padding is not looked at (under SRTP it is encrypted).
#[inline]
pub fn header_len(packet: &[u8]) -> Result<usize, RtpError> {
    let len = packet.len();
    if len < FIXED_HEADER_LEN {
        return Err(RtpError::TooShort {
            len,
            needed: FIXED_HEADER_LEN,
        });
    }
    let b0 = packet[0];
    if b0 >> 6 != 2 {
        return Err(RtpError::BadVersion(b0 >> 6));
    }
    if is_rtcp(packet) {
        return Err(RtpError::IsRtcp(packet[1]));
    }
    let mut needed = FIXED_HEADER_LEN + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        if len < needed + 4 {
            return Err(RtpError::TooShort {
                len,
                needed: needed + 4,
            });
        }
        let words = u16::from_be_bytes([packet[needed + 2], packet[needed + 3]]);
        needed += 4 + 4 * usize::from(words);
    }
    if len < needed {
        return Err(RtpError::TooShort { len, needed });
    }
    Ok(needed)
}

/// A validated plain RTP packet.
#[derive(Debug, Clone, Copy)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    header_len: usize,
    padding_len: usize,
}

impl<'a> RtpPacket<'a> {
    /// Validates `buf` as a whole RTP packet: header, CSRCs, extension and padding.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let header_len = header_len(buf)?;
        let mut padding_len = 0;
        if buf[0] & 0x20 != 0 {
            let payload = buf.len() - header_len;
            let count = buf[buf.len() - 1];
            if count == 0 || usize::from(count) > payload {
                return Err(RtpError::BadPadding { count, payload });
            }
            padding_len = usize::from(count);
        }
        let pkt = RtpPacket {
            buf,
            header_len,
            padding_len,
        };
        if let Some(ext) = pkt.extension() {
            for element in ext.elements() {
                element?;
            }
        }
        Ok(pkt)
    }

    /// The marker bit.
    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }
    /// The payload type (7 bits).
    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7f
    }
    /// The sequence number.
    pub fn sequence_number(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }
    /// The RTP timestamp.
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
    }
    /// The synchronization source.
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]])
    }
    /// The contributing sources.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let n = usize::from(self.buf[0] & 0x0f);
        self.buf[FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4 * n]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
    /// The header extension, if the X bit is set.
    pub fn extension(&self) -> Option<HeaderExtension<'a>> {
        if self.buf[0] & 0x10 == 0 {
            return None;
        }
        let start = FIXED_HEADER_LEN + 4 * usize::from(self.buf[0] & 0x0f);
        let profile = u16::from_be_bytes([self.buf[start], self.buf[start + 1]]);
        Some(HeaderExtension {
            profile,
            data: &self.buf[start + 4..self.header_len],
        })
    }
    /// Header length: fixed header, CSRCs and extension.
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// The payload, without padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..self.buf.len() - self.padding_len]
    }
    /// Number of padding bytes, the count byte included.
    pub fn padding_len(&self) -> usize {
        self.padding_len
    }
}

/// An RTP header extension block.
#[derive(Debug, Clone, Copy)]
pub struct HeaderExtension<'a> {
    /// The 16-bit "defined by profile" field: 0xBEDE for one-byte elements, 0x100x for two-byte.
    pub profile: u16,
    /// The extension body (without the 4-byte block header).
    pub data: &'a [u8],
}

/// One RFC 8285 extension element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionElement<'a> {
    /// Element id (1-14 one-byte form, 1-255 two-byte form).
    pub id: u8,
    /// Element data.
    pub data: &'a [u8],
}

impl<'a> HeaderExtension<'a> {
    /// Whether the block uses the RFC 8285 one-byte form.
    pub fn is_one_byte(&self) -> bool {
        self.profile == 0xBEDE
    }
    /// Whether the block uses the RFC 8285 two-byte form.
    pub fn is_two_byte(&self) -> bool {
        self.profile & 0xfff0 == 0x1000
    }

    /// The elements of an RFC 8285 block (none for other profiles). An element that overruns
    /// the block yields an error and ends the iteration.
    pub fn elements(&self) -> Elements<'a> {
        let form = if self.is_one_byte() {
            1
        } else if self.is_two_byte() {
            2
        } else {
            0
        };
        Elements {
            data: self.data,
            pos: 0,
            form,
            done: form == 0,
        }
    }
}

/// Iterator over RFC 8285 elements.
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    data: &'a [u8],
    pos: usize,
    form: u8,
    done: bool,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<ExtensionElement<'a>, RtpError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some(&b) = self.data.get(self.pos) else {
                self.done = true;
                return None;
            };
            if b == 0 {
                // Padding between elements.
                self.pos += 1;
                continue;
            }
            let (id, len, hdr) = if self.form == 1 {
                if b >> 4 == 15 {
                    // Id 15 ends processing of the block (RFC 8285 §4.2).
                    self.done = true;
                    return None;
                }
                (b >> 4, usize::from(b & 0x0f) + 1, 1)
            } else {
                let Some(&l) = self.data.get(self.pos + 1) else {
                    self.done = true;
                    return Some(Err(RtpError::BadExtension));
                };
                (b, usize::from(l), 2)
            };
            let start = self.pos + hdr;
            let Some(data) = self.data.get(start..start + len) else {
                self.done = true;
                return Some(Err(RtpError::BadExtension));
            };
            self.pos = start + len;
            return Some(Ok(ExtensionElement { id, data }));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_csrcs_extension_and_padding() {
        let mut p = vec![
            0xB2,
            0x80 | 96,
            0x12,
            0x34,
            0,
            0,
            0,
            5,
            0xde,
            0xad,
            0xbe,
            0xef,
        ];
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); // 2 CSRCs
        p.extend_from_slice(&[0xBE, 0xDE, 0, 2]); // one-byte ext, 2 words
        p.extend_from_slice(&[0x10, 0xAA, 0x21, 0xBB, 0xCC, 0, 0, 0]);
        p.extend_from_slice(&[1, 2, 3, 0, 0, 3]); // payload 1,2,3 + 3 padding bytes
        let r = RtpPacket::parse(&p).unwrap();
        assert!(r.marker());
        assert_eq!(r.payload_type(), 96);
        assert_eq!(r.sequence_number(), 0x1234);
        assert_eq!(r.ssrc(), 0xdeadbeef);
        assert_eq!(r.csrcs().collect::<Vec<_>>(), vec![1, 2]);
        let ext = r.extension().unwrap();
        let els: Vec<_> = ext.elements().map(Result::unwrap).collect();
        assert_eq!(els.len(), 2);
        assert_eq!(
            els[0],
            ExtensionElement {
                id: 1,
                data: &[0xAA]
            }
        );
        assert_eq!(
            els[1],
            ExtensionElement {
                id: 2,
                data: &[0xBB, 0xCC]
            }
        );
        assert_eq!(r.payload(), &[1, 2, 3]);
        assert_eq!(header_len(&p).unwrap(), 12 + 8 + 12);
    }

    #[test]
    fn two_byte_extension() {
        let mut p = vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        p.extend_from_slice(&[0x10, 0x00, 0, 2, 7, 3, 1, 2, 3, 9, 0, 0]);
        let r = RtpPacket::parse(&p).unwrap();
        let els: Vec<_> = r
            .extension()
            .unwrap()
            .elements()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            els,
            vec![
                ExtensionElement {
                    id: 7,
                    data: &[1, 2, 3]
                },
                ExtensionElement { id: 9, data: &[] }
            ]
        );
    }

    #[test]
    fn refuses_malformed() {
        assert!(matches!(
            header_len(&[0x80; 5]),
            Err(RtpError::TooShort { .. })
        ));
        assert_eq!(header_len(&[0x40; 12]), Err(RtpError::BadVersion(1)));
        let csrc_overrun = [0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
        assert!(matches!(
            header_len(&csrc_overrun),
            Err(RtpError::TooShort { .. })
        ));
        let ext_overrun = [
            0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xBE, 0xDE, 0xff, 0xff,
        ];
        assert!(matches!(
            header_len(&ext_overrun),
            Err(RtpError::TooShort { .. })
        ));
        let bad_pad = [0xA0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 9];
        assert!(matches!(
            RtpPacket::parse(&bad_pad),
            Err(RtpError::BadPadding { .. })
        ));
        let zero_pad = [0xA0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0];
        assert!(matches!(
            RtpPacket::parse(&zero_pad),
            Err(RtpError::BadPadding { .. })
        ));
        let bad_el = [
            0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xBE, 0xDE, 0, 1, 0x1f, 0, 0, 0,
        ];
        assert_eq!(
            RtpPacket::parse(&bad_el).unwrap_err(),
            RtpError::BadExtension
        );
        assert_eq!(
            header_len(&[0x80, 200, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(RtpError::IsRtcp(200))
        );
    }
}
