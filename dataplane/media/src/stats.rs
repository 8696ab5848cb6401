//! RFC 3550 receive statistics of one entry's RTP stream: extended highest sequence number
//! and loss (appendix A.1), interarrival jitter (appendix A.8).

use edgeway_map_schema::RtpStats;

const RTP_SEQ_MOD: u32 = 1 << 16;
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;

/// The A.1 source state plus the A.8 jitter estimator.
#[derive(Debug, Clone, Default)]
pub(crate) struct RtpReceiver {
    started: bool,
    ssrc: u32,
    max_seq: u16,
    /// Shifted count of sequence number cycles (cycles << 16).
    cycles: u32,
    base_seq: u32,
    /// Last "bad" sequence number + 1 (A.1), or a value no u16 can equal.
    bad_seq: u32,
    received: u64,
    have_transit: bool,
    transit: i32,
    jitter_q4: u32,
}

impl RtpReceiver {
    /// Resumes from exported statistics.
    pub(crate) fn from_stats(s: &RtpStats) -> Self {
        if s.received == 0 {
            return RtpReceiver::default();
        }
        RtpReceiver {
            started: true,
            ssrc: s.ssrc,
            max_seq: s.ext_max_seq as u16,
            cycles: s.ext_max_seq & !0xffff,
            base_seq: s.base_seq,
            bad_seq: RTP_SEQ_MOD + 1,
            received: s.received,
            have_transit: true,
            transit: s.last_transit,
            jitter_q4: s.jitter_q4,
        }
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
    }

    /// Accounts one forwarded packet: `arrival` is its arrival time in RTP timestamp units.
    pub(crate) fn update(&mut self, ssrc: u32, seq: u16, timestamp: u32, arrival: u32) {
        if !self.started || ssrc != self.ssrc {
            // A new source (or the first): statistics restart for it.
            *self = RtpReceiver {
                started: true,
                ssrc,
                ..RtpReceiver::default()
            };
            self.init_seq(seq);
        } else {
            let udelta = seq.wrapping_sub(self.max_seq);
            if udelta < MAX_DROPOUT {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
                }
                self.max_seq = seq;
            } else if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
                // A very large jump: believe it only when the next packet follows it (the
                // sender restarted); until then the packet does not count.
                if u32::from(seq) == self.bad_seq {
                    self.init_seq(seq);
                } else {
                    self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                    return;
                }
            }
            // Otherwise a duplicate or reordered packet: counted, sequence state unchanged.
        }
        self.received += 1;
        // A.8: D(i-1, i) = (R_i - R_{i-1}) - (S_i - S_{i-1}) = transit_i - transit_{i-1}.
        let transit = arrival.wrapping_sub(timestamp) as i32;
        if self.have_transit {
            // |D| comes from the sender's timestamps: saturate rather than wrap when a
            // hostile or broken sender makes it huge.
            let d = u64::from(transit.wrapping_sub(self.transit).unsigned_abs());
            let j = u64::from(self.jitter_q4);
            self.jitter_q4 = (j + d - ((j + 8) >> 4)).min(u64::from(u32::MAX)) as u32;
        }
        self.have_transit = true;
        self.transit = transit;
    }

    /// The statistics in the flow table's form.
    pub(crate) fn stats(&self) -> RtpStats {
        if !self.started {
            return RtpStats::default();
        }
        let ext_max = self.cycles.wrapping_add(u32::from(self.max_seq));
        let expected = u64::from(ext_max.wrapping_sub(self.base_seq)) + 1;
        RtpStats {
            ssrc: self.ssrc,
            base_seq: self.base_seq,
            ext_max_seq: ext_max,
            jitter_q4: self.jitter_q4,
            received: self.received,
            lost: expected.saturating_sub(self.received),
            last_transit: self.transit,
            _pad: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_loss_and_restart() {
        let mut r = RtpReceiver::default();
        let mut seq = 65_530u16;
        for i in 0..20u32 {
            if i != 7 && i != 8 {
                r.update(1, seq, i * 160, i * 160 + 1000);
            }
            seq = seq.wrapping_add(1);
        }
        let s = r.stats();
        assert_eq!(s.base_seq, 65_530);
        assert_eq!(s.ext_max_seq, (1 << 16) + 13);
        assert_eq!((s.received, s.lost), (18, 2));
        assert_eq!(s.jitter_q4, 0, "constant transit: no jitter");
        // A jump far ahead counts only once confirmed by its successor.
        r.update(1, 30_000, 0, 0);
        assert_eq!(r.stats().received, 18);
        r.update(1, 30_001, 0, 0);
        let s = r.stats();
        assert_eq!((s.base_seq, s.ext_max_seq, s.received), (30_001, 30_001, 1));
        // Resume from the exported form.
        let mut again = RtpReceiver::from_stats(&s);
        again.update(1, 30_002, 160, 160);
        assert_eq!(again.stats().received, 2);
        assert_eq!(again.stats().ext_max_seq, 30_002);
    }

    #[test]
    fn hostile_timestamps_saturate_the_jitter() {
        let mut r = RtpReceiver::default();
        for i in 0..200u16 {
            let ts = if i % 2 == 0 { 0 } else { 0x8000_0000 };
            r.update(1, i, ts, 0);
        }
        assert_eq!(r.stats().jitter_q4, u32::MAX);
        assert_eq!(r.stats().received, 200);
    }
}
