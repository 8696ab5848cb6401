//! Session timers (RFC 4028) as the B2BUA enforces them, sans-IO: the 2xx to an INVITE or
//! UPDATE (the answer, then each refresh) restarts the session interval from `now`, taking
//! its `Session-Expires`; once a whole interval passes with no refresh the session has
//! expired and the B2BUA ends the call (BYE on both legs). The B2BUA never refreshes a
//! session itself: the endpoints do (the refresher at half the interval), and the one that
//! is not the refresher sends its own BYE min(32 s, interval / 3) before expiry (RFC 4028
//! §10). Ending at the interval itself makes the B2BUA a backstop for endpoints that are
//! gone, never earlier than an endpoint would. Both legs carry the same value (the header
//! crosses end to end) and every refresh crosses both, so one timer serves the call.
//!
//! A `Session-Expires` below RFC 4028's smallest interval (90 s, the floor of Min-SE, §4)
//! is enforced as 90 s; one that is not delta-seconds is refused with
//! [`TimerError::BadSessionExpires`] (the 2xx still counts as a refresh).

use std::time::{Duration, Instant};

use edgeway_sip::{HeaderName, Method, Response};
use thiserror::Error;

/// The smallest session interval RFC 4028 allows (§4: Min-SE is at least 90 s).
pub const MIN_SESSION_INTERVAL: Duration = Duration::from_secs(90);

/// Why a response's session timer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TimerError {
    /// `Session-Expires` is not `delta-seconds *(;param)` with a non-zero value.
    #[error("Session-Expires {value:?} is not a number of seconds (RFC 4028 §4)")]
    BadSessionExpires {
        /// The value (at most 64 characters).
        value: String,
    },
}

/// One call's session timer; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionTimer {
    interval: Option<Duration>,
    refreshed: Option<Instant>,
}

impl SessionTimer {
    /// A response crossing the call at `now`: a 2xx to INVITE or UPDATE restarts the
    /// interval, taken from its `Session-Expires` (none: the session no longer expires);
    /// other responses change nothing.
    pub fn response(&mut self, now: Instant, response: &Response) -> Result<(), TimerError> {
        let refreshes = response.is_success()
            && matches!(
                response.headers.cseq().map(|c| c.method),
                Ok(Method::Invite | Method::Update)
            );
        if !refreshes {
            return Ok(());
        }
        self.refreshed = Some(now);
        match response.headers.first(&HeaderName::SessionExpires) {
            None => {
                self.interval = None;
                Ok(())
            }
            Some(value) => {
                self.interval = Some(session_interval(value)?);
                Ok(())
            }
        }
    }

    /// The interval in force (`None`: the session does not expire).
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// When the session expires unless refreshed before.
    pub fn expires_at(&self) -> Option<Instant> {
        Some(self.refreshed? + self.interval?)
    }

    /// Whether the session expired by `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at().is_some_and(|at| now >= at)
    }
}

/// `delta-seconds *(;param)` (RFC 4028 §4), at least [`MIN_SESSION_INTERVAL`].
fn session_interval(value: &str) -> Result<Duration, TimerError> {
    let seconds = value.split(';').next().unwrap_or_default().trim();
    match seconds.parse::<u32>() {
        Ok(s) if s > 0 && seconds.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Duration::from_secs(u64::from(s)).max(MIN_SESSION_INTERVAL))
        }
        _ => Err(TimerError::BadSessionExpires {
            value: value.chars().take(64).collect(),
        }),
    }
}
