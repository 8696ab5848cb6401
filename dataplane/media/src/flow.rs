//! One installed entry: its settings decoded once, its SRTP contexts, and the state and
//! counters the worker keeps for it.

use edgeway_map_schema::{
    flags, Action, FlowCounters, FlowEntry, FlowKey, FlowState, SrtpCheckpoint, SrtpParams,
};
use edgeway_srtp::{
    LegCrypto, MasterKey, SrtpConfig, SrtpContext, SrtpProfile, StreamCheckpoint, StreamKind,
};

use crate::stats::RtpReceiver;
use crate::{Direction, InstallError};

/// SSRCs one direction of one entry tracks (stream-table slots per SRTP context). An entry
/// is one media stream; four covers a main SSRC, its retransmission SSRC and a change of
/// source, at about 2 KiB per slot and context.
pub const MAX_SSRCS_PER_ENTRY: usize = 4;

/// How far a restored SRTCP sender skips past its checkpointed index: more RTCP packets
/// than one stream sends between two exports (milliseconds apart).
pub const SRTCP_RESUME_SKIP: u64 = 1 << 10;

/// Default keepalive interval (`FlowEntry::keepalive_ms` = 0).
pub const DEFAULT_KEEPALIVE_MS: u64 = 5000;

/// Default RTP clock rate for jitter (`FlowEntry::clock_rate` = 0).
pub const DEFAULT_CLOCK_RATE: u32 = 8000;

/// A flow as the worker holds it.
#[derive(Debug)]
pub(crate) struct LocalFlow {
    pub(crate) slot: u32,
    pub(crate) key: FlowKey,
    pub(crate) entry: FlowEntry,
    pub(crate) action: Action,
    pub(crate) crypto_in: LegCrypto,
    pub(crate) crypto_out: LegCrypto,
    /// Live state; the SRTP checkpoints and RTP statistics in it are filled on export.
    pub(crate) state: FlowState,
    pub(crate) counters: FlowCounters,
    pub(crate) rtp: RtpReceiver,
    /// Whether `state.latched_ssrc` is known (a mux entry may latch on an RTCP packet).
    pub(crate) ssrc_latched: bool,
    /// SSRC whose SRTP stream is checkpointed: the latest RTP (or, on an RTCP entry, RTCP)
    /// SSRC forwarded.
    pub(crate) checkpoint_ssrc: Option<u32>,
    /// A keepalive is owed (one is sent at install).
    pub(crate) keepalive_pending: bool,
    /// When the idle clock started (first timer poll after install), if it has.
    pub(crate) idle_since: Option<u64>,
    pub(crate) keepalive_ms: u64,
    pub(crate) clock_rate: u64,
}

fn crypto(key: FlowKey, direction: Direction, p: &SrtpParams) -> Result<LegCrypto, InstallError> {
    if p.is_plain() {
        return Ok(LegCrypto::Plain);
    }
    let profile = SrtpProfile::from_id(u32::from(p.suite)).ok_or(InstallError::UnknownSuite {
        key,
        direction,
        suite: p.suite,
    })?;
    let srtp = |source| InstallError::Srtp {
        key,
        direction,
        source,
    };
    let mut master = MasterKey::new(
        profile,
        &p.key[..profile.master_key_len()],
        &p.salt[..profile.master_salt_len()],
    )
    .map_err(srtp)?;
    if p.mki_len > 0 {
        let mki =
            p.mki
                .get(..usize::from(p.mki_len))
                .ok_or(srtp(edgeway_srtp::Error::KeyLength {
                    what: "MKI",
                    profile: profile.sdes_name(),
                    expected: p.mki.len(),
                    got: usize::from(p.mki_len),
                }))?;
        master = master.with_mki(mki).map_err(srtp)?;
    }
    let mut config = SrtpConfig::new(profile, master);
    if p.replay_window != 0 {
        config.replay_window = u32::from(p.replay_window);
    }
    config.max_streams = MAX_SSRCS_PER_ENTRY;
    SrtpContext::new(&config).map(LegCrypto::Srtp).map_err(srtp)
}

impl LocalFlow {
    /// Decodes and checks `entry`; builds the SRTP contexts of a re-keying entry.
    pub(crate) fn build(slot: u32, key: FlowKey, entry: &FlowEntry) -> Result<Self, InstallError> {
        let action = entry.action().ok_or(InstallError::BadAction {
            key,
            action: entry.action,
        })?;
        if entry.flags & !flags::ALL != 0 {
            return Err(InstallError::UnknownFlags {
                key,
                bits: entry.flags & !flags::ALL,
            });
        }
        if key.local_port == 0 {
            return Err(InstallError::NoLocalPort { key });
        }
        if action != Action::Drop && entry.out_local_port == 0 {
            return Err(InstallError::NoOutPort { key });
        }
        let (crypto_in, crypto_out) = if action == Action::Rekey {
            (
                crypto(key, Direction::In, &entry.srtp_in)?,
                crypto(key, Direction::Out, &entry.srtp_out)?,
            )
        } else {
            // The edge has no keys: relayed packets pass unchanged.
            (LegCrypto::Plain, LegCrypto::Plain)
        };
        Ok(LocalFlow {
            slot,
            key,
            entry: *entry,
            action,
            crypto_in,
            crypto_out,
            state: FlowState {
                generation: entry.generation,
                ..FlowState::default()
            },
            counters: FlowCounters::default(),
            rtp: RtpReceiver::default(),
            ssrc_latched: false,
            checkpoint_ssrc: None,
            keepalive_pending: true,
            idle_since: None,
            keepalive_ms: match entry.keepalive_ms {
                0 => DEFAULT_KEEPALIVE_MS,
                ms => u64::from(ms),
            },
            clock_rate: match entry.clock_rate {
                0 => u64::from(DEFAULT_CLOCK_RATE),
                hz => u64::from(hz),
            },
        })
    }

    /// The stream kind this entry's checkpoints are for.
    fn checkpoint_kind(&self) -> StreamKind {
        if self.entry.has(flags::RTCP) {
            StreamKind::Rtcp
        } else {
            StreamKind::Rtp
        }
    }

    /// Continues from exported state of the same generation: latching, liveness, statistics
    /// and both SRTP directions.
    pub(crate) fn resume(&mut self, s: &FlowState) {
        self.state = FlowState {
            generation: self.entry.generation,
            ..*s
        };
        self.ssrc_latched = s.latched != 0 && s.latched_ssrc != 0;
        self.rtp = RtpReceiver::from_stats(&s.rtp);
        if s.last_rx_ms != 0 {
            self.idle_since = Some(s.last_rx_ms);
        }
        self.resume_srtp(s, true, true);
    }

    /// A new generation of the same key (a re-INVITE's hold or resume, a changed timeout)
    /// that kept a direction's SRTP parameters continues that direction's SRTP state from
    /// the flow it replaces: the same master key with a restarted rollover counter would
    /// reuse keystream on the way out (RFC 3711 section 9.1) and misjudge the index of
    /// everything past the first wrap on the way in. New keys start afresh, as does the
    /// rest of the state (latching, statistics).
    pub(crate) fn carry_srtp(&mut self, old: &mut LocalFlow) {
        let same_in = old.entry.srtp_in == self.entry.srtp_in;
        let same_out = old.entry.srtp_out == self.entry.srtp_out;
        if self.action != Action::Rekey || old.action != Action::Rekey || !(same_in || same_out) {
            return;
        }
        old.snapshot();
        // The exported checkpoints follow from the restored contexts at the next export.
        self.resume_srtp(&old.state, same_in, same_out);
    }

    /// Restores the chosen SRTP directions from the checkpoints in `s`.
    fn resume_srtp(&mut self, s: &FlowState, inbound: bool, outbound: bool) {
        let kind = self.checkpoint_kind();
        if let (LegCrypto::Srtp(ctx), 1, true) = (&mut self.crypto_in, s.srtp_in.valid, inbound) {
            let cp = &s.srtp_in;
            ctx.restore(&StreamCheckpoint::from_recent(
                kind,
                cp.ssrc,
                cp.highest_index,
                cp.recent,
            ));
            self.checkpoint_ssrc = Some(cp.ssrc);
        }
        if let (LegCrypto::Srtp(ctx), 1, true) = (&mut self.crypto_out, s.srtp_out.valid, outbound)
        {
            let cp = &s.srtp_out;
            let restored = match kind {
                // SRTP indices follow the sender's sequence numbers, which only move on.
                StreamKind::Rtp => {
                    StreamCheckpoint::from_recent(kind, cp.ssrc, cp.highest_index, cp.recent)
                }
                // SRTCP indices are ours to count: the checkpoint may predate indices already
                // used, so continue well past it (never reuse keystream or look like a replay).
                StreamKind::Rtcp => StreamCheckpoint::from_recent(
                    kind,
                    cp.ssrc,
                    cp.highest_index.saturating_add(SRTCP_RESUME_SKIP),
                    [u64::MAX; 2],
                ),
            };
            ctx.restore(&restored);
            self.checkpoint_ssrc = Some(cp.ssrc);
        }
        if let (LegCrypto::Srtp(ctx), 1.., true) =
            (&mut self.crypto_out, s.srtcp_out_next, outbound)
        {
            // Other SSRCs (RTCP muxed on an RTP entry, a second source) have no checkpoint:
            // start them past everything sent before the export and what may have followed.
            ctx.raise_srtcp_send_floor(s.srtcp_out_next.saturating_add(SRTCP_RESUME_SKIP));
        }
    }

    /// Brings the exported fields of `state` up to date: checkpoints and statistics.
    pub(crate) fn snapshot(&mut self) {
        let kind = self.checkpoint_kind();
        let ssrc = self.checkpoint_ssrc;
        let checkpoint = |crypto: &LegCrypto| -> SrtpCheckpoint {
            let (LegCrypto::Srtp(ctx), Some(ssrc)) = (crypto, ssrc) else {
                return SrtpCheckpoint::default();
            };
            ctx.compact_checkpoint(kind, ssrc).map_or_else(
                SrtpCheckpoint::default,
                |(highest_index, recent)| SrtpCheckpoint {
                    valid: 1,
                    ssrc,
                    highest_index,
                    recent,
                },
            )
        };
        self.state.srtp_in = checkpoint(&self.crypto_in);
        self.state.srtp_out = checkpoint(&self.crypto_out);
        if let LegCrypto::Srtp(ctx) = &self.crypto_out {
            self.state.srtcp_out_next = ctx.srtcp_send_next();
        }
        self.state.rtp = self.rtp.stats();
    }

    /// The earliest time (ms) at which the timer has something to do for this flow.
    pub(crate) fn deadline(&self) -> u64 {
        let mut at = u64::MAX;
        if self.entry.has(flags::KEEPALIVE) && self.entry.out_remote.is_set() {
            at = if self.keepalive_pending {
                0
            } else {
                self.state.last_tx_ms.saturating_add(self.keepalive_ms)
            };
        }
        if self.entry.idle_timeout_ms != 0 && self.state.idle == 0 {
            let idle = match self.idle_since {
                None => 0,
                Some(since) => since
                    .max(self.state.last_rx_ms)
                    .saturating_add(u64::from(self.entry.idle_timeout_ms)),
            };
            at = at.min(idle);
        }
        at
    }
}
