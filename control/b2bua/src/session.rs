//! The offer/answer bookkeeping both roles share (RFC 3264 on RFC 3261 dialogs): one offer
//! outstanding at a time, a failed message restored to the state before it, and the ports
//! a pending offer took kept until its answer or failure decides.

use std::collections::{BTreeMap, BTreeSet};

use edgeway_map_schema::{FlowEntry, FlowKey};

use crate::plan::{FlowUpdate, Ledger, PortPool};
use crate::{Leg, PlanError, Planned};

/// The entries a call's streams need.
pub(crate) type Desired<'a, S> = &'a dyn Fn(&[S]) -> BTreeMap<FlowKey, FlowEntry>;

/// Offer or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Offer,
    Answer,
}

/// A stream's port pairs (RTP ports), so the ledger knows which pairs are still used.
pub(crate) trait StreamPorts {
    fn pairs(&self) -> [Option<u16>; 2];
}

/// The streams of a call and what it holds.
#[derive(Debug, Clone)]
pub(crate) struct Session<S> {
    /// The call's number (flow ids derive from it).
    call: u64,
    pub(crate) streams: Vec<S>,
    /// The leg whose offer is outstanding and the streams before it.
    pending: Option<(Leg, Vec<S>)>,
    pub(crate) ledger: Ledger,
    ended: bool,
}

impl<S: Clone + Default + StreamPorts> Session<S> {
    /// A call with no media yet.
    pub(crate) fn new(call: u64) -> Self {
        Session {
            call,
            streams: Vec::new(),
            pending: None,
            ledger: Ledger::default(),
            ended: false,
        }
    }

    /// Checks that `kind` from `from` may come now; returns the state to restore on failure.
    fn begin(&mut self, kind: Kind, from: Leg) -> Result<Vec<S>, PlanError> {
        if self.ended {
            return Err(PlanError::CallEnded);
        }
        match (kind, &self.pending) {
            (Kind::Offer, Some((offerer, _))) if *offerer == from => {
                return Err(PlanError::OfferUnanswered(from))
            }
            (Kind::Offer, Some(_)) => return Err(PlanError::OfferPending),
            (Kind::Answer, None) => return Err(PlanError::NoPendingOffer(from)),
            (Kind::Answer, Some((offerer, _))) if *offerer == from => {
                return Err(PlanError::NoPendingOffer(from))
            }
            _ => {}
        }
        self.ledger.begin();
        Ok(self.streams.clone())
    }

    /// Handles one offer or answer: `rewrite` updates the streams and returns the body for
    /// the other leg; on success the entries are synced to `desired` (when given), on
    /// failure the streams are restored and the ports `rewrite` took released.
    pub(crate) fn run(
        &mut self,
        kind: Kind,
        from: Leg,
        now_ms: u64,
        pool: &mut dyn PortPool,
        desired: Option<Desired<'_, S>>,
        rewrite: impl FnOnce(&mut Self, &mut dyn PortPool) -> Result<Vec<u8>, PlanError>,
    ) -> Result<Planned, PlanError> {
        let before = self.begin(kind, from)?;
        match rewrite(self, pool) {
            Ok(sdp) => {
                self.succeed(kind, from, before);
                let flows = match desired {
                    Some(d) => self.sync(d, pool, now_ms),
                    None => FlowUpdate::default(),
                };
                Ok(Planned { sdp, flows })
            }
            Err(e) => {
                self.fail(before, pool, now_ms);
                Err(e)
            }
        }
    }

    /// The offer's or answer's `m=` count is acceptable.
    pub(crate) fn check_count(&self, kind: Kind, count: usize) -> Result<(), PlanError> {
        let had = self.streams.len();
        match kind {
            Kind::Offer if count < had => Err(PlanError::MediaRemoved { had, got: count }),
            Kind::Answer if count != had => Err(PlanError::MediaCountMismatch {
                offered: had,
                answered: count,
            }),
            _ => Ok(()),
        }
    }

    /// The stream for `m=` line `index`, created when the offer adds one.
    pub(crate) fn stream(&mut self, index: usize) -> &mut S {
        if index >= self.streams.len() {
            self.streams.resize_with(index + 1, S::default);
        }
        &mut self.streams[index]
    }

    /// The message failed: back to `before`, fresh ports released.
    fn fail(&mut self, before: Vec<S>, pool: &mut dyn PortPool, now_ms: u64) {
        self.streams = before;
        self.ledger.abort(pool, now_ms);
    }

    /// The message succeeded: an offer becomes pending, an answer settles it.
    fn succeed(&mut self, kind: Kind, from: Leg, before: Vec<S>) {
        self.pending = match kind {
            Kind::Offer => Some((from, before)),
            Kind::Answer => None,
        };
    }

    /// The offer got a failure response (or was cancelled): back to before it.
    pub(crate) fn offer_failed(
        &mut self,
        desired: impl Fn(&[S]) -> BTreeMap<FlowKey, FlowEntry>,
        pool: &mut dyn PortPool,
        now_ms: u64,
    ) -> FlowUpdate {
        if let Some((_, before)) = self.pending.take() {
            self.streams = before;
        }
        self.sync(desired, pool, now_ms)
    }

    /// Brings the entries to what the streams need; releases pairs no stream (nor the
    /// state a pending offer may return to) uses.
    pub(crate) fn sync(
        &mut self,
        desired: impl Fn(&[S]) -> BTreeMap<FlowKey, FlowEntry>,
        pool: &mut dyn PortPool,
        now_ms: u64,
    ) -> FlowUpdate {
        let mut keep = BTreeSet::new();
        let pending = self.pending.iter().flat_map(|(_, s)| s.iter());
        for s in self.streams.iter().chain(pending) {
            keep.extend(s.pairs().into_iter().flatten());
        }
        let want = desired(&self.streams);
        self.ledger.sync(self.call, want, &keep, pool, now_ms)
    }

    /// Every entry removed, every pair released; the call takes no more messages.
    pub(crate) fn teardown(&mut self, pool: &mut dyn PortPool, now_ms: u64) -> FlowUpdate {
        self.ended = true;
        self.pending = None;
        self.streams.clear();
        self.ledger
            .sync(self.call, BTreeMap::new(), &BTreeSet::new(), pool, now_ms)
    }
}

/// The methods both call types share, over their `flows` (with `entries`) and `session`.
macro_rules! call_lifecycle {
    () => {
        /// The pending offer was refused or cancelled: back to the media before it.
        pub fn offer_failed(&mut self, now_ms: u64, pool: &mut dyn PortPool) -> FlowUpdate {
            let flows = &self.flows;
            self.session
                .offer_failed(|s| flows.entries(s), pool, now_ms)
        }

        /// BYE, CANCEL, failure or media timeout: every entry the call handed out removed,
        /// every pair released; the call takes no more SDP.
        pub fn teardown(&mut self, now_ms: u64, pool: &mut dyn PortPool) -> FlowUpdate {
            self.session.teardown(pool, now_ms)
        }

        /// The entries the call has handed out (and not removed).
        pub fn entries(&self) -> &BTreeMap<FlowKey, FlowEntry> {
            self.session.ledger.installed()
        }

        /// The keys of the entries a media timeout watches: those carrying RTP (not
        /// RTCP: many clients never send it) with an idle timeout. A call on hold has none
        /// (its entries never go idle), so a held call is never ended for silence.
        pub fn idle_watched_keys(&self) -> impl Iterator<Item = &FlowKey> + '_ {
            self.entries()
                .iter()
                .filter(|(_, e)| e.flags & edgeway_map_schema::flags::RTCP == 0)
                .filter(|(_, e)| e.idle_timeout_ms != 0)
                .map(|(k, _)| k)
        }

        /// The RTP ports of the pairs the call holds.
        pub fn ports(&self) -> Vec<u16> {
            self.session.ledger.held().iter().copied().collect()
        }
    };
}
pub(crate) use call_lifecycle;
