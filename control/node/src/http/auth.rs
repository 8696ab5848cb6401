//! MRA access control on the core, sans-IO: who may use the HTTP tunnel ("Configuring MRA
//! Access Control", the guide's table 2), "Credential Caching" and "Authorization Rate
//! Control". [`AccessControl::authorize`] takes a request's `Authorization` header with the
//! caller's `now` (monotonic, for caches and rate windows) and `unix_now` (for token expiry)
//! and answers a [`Step`]: a [`Decision`], or work for the IO layer (check a password with
//! Unified CM, fetch signing keys from the refresh servers), whose result comes back through
//! [`AccessControl::basic_checked`] or [`AccessControl::install_keys`] and a second
//! `authorize`.
//!
//! The guide's settings map onto what a request may present:
//!
//! | Authentication path      | user credentials (`Basic`)            | self-describing token (`Bearer`)          |
//! |--------------------------|----------------------------------------|-------------------------------------------|
//! | `UCM/LDAP`               | if "Authorize by user credentials"     | if "Authorize by OAuth token with refresh" |
//! | `SAML SSO and UCM/LDAP`  | if "Authorize by user credentials"     | if "Authorize by OAuth token with refresh" |
//! | `SAML SSO`               | never                                  | if "Authorize by OAuth token with refresh" |
//! | `None`                   | not asked: every request passes        | not asked                                 |
//!
//! With both on, tokens are offered first in the challenge and basic is the fallback. SAML
//! SSO itself (the IdP redirect, `get_edge_sso`, simple OAuth tokens: "Authorize by OAuth
//! token") is not supported yet: the path is an arm of [`AuthenticationPath`] so a token-only
//! deployment can name it, and "Authorize by OAuth token" is refused when the configuration is
//! read, with that reason.
//!
//! An *authorization* (what rate control counts) is a password check with Unified CM (a cache
//! miss, counted before Unified CM is asked, so a flood of guesses cannot reach it) or the
//! first use of a genuine token (counted after the signature verified, so forged tokens
//! cannot lock a user out). Requests served from the caches are not authorizations.

pub mod token;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::ConfigError;
use token::{parse_authorization, parse_token, Credentials, KeySet, TokenError};

/// How MRA clients authenticate (table 2, "Authentication path").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthenticationPath {
    /// "UCM/LDAP basic authentication": Unified CM checks the user's (LDAP) credentials.
    #[serde(rename = "UCM/LDAP")]
    UcmLdap,
    /// "SAML SSO authentication": an external IdP authenticates. Edgeway has no IdP support
    /// yet; on this path only self-describing tokens (issued by Unified CM) are accepted.
    #[serde(rename = "SAML SSO")]
    SamlSso,
    /// "SAML SSO and UCM/LDAP": either (here: Unified CM credentials or tokens).
    #[serde(rename = "SAML SSO and UCM/LDAP")]
    SamlSsoAndUcmLdap,
    /// "None": no authentication (the guide: only for deployments that need MRA on for
    /// something that is not MRA; not recommended otherwise).
    #[serde(rename = "None")]
    None,
}

/// The `[http.access]` section as written (names as the guide's fields).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    authentication_path: Option<AuthenticationPath>,
    authorize_by_oauth_token_with_refresh: Option<bool>,
    authorize_by_oauth_token: Option<bool>,
    authorize_by_user_credentials: Option<bool>,
    credentials_refresh_interval_min: Option<u64>,
    credentials_cleanup_interval_min: Option<u64>,
    authorization_rate_control: Option<bool>,
    max_authorizations_per_period: Option<u32>,
    rate_control_period_s: Option<u64>,
}

/// MRA access control settings, defaults as the guide's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    /// "Authentication path" (default `UCM/LDAP`, the guide's value once MRA is on).
    pub path: AuthenticationPath,
    /// "Authorize by OAuth token with refresh" (default on).
    pub oauth_token_with_refresh: bool,
    /// "Authorize by user credentials" (default off, as the guide's table 2).
    pub user_credentials: bool,
    /// "Credentials refresh interval": how long a password Unified CM accepted is served
    /// from the cache (default 480 min).
    pub refresh_interval: Duration,
    /// "Credentials cleanup interval": how often expired cache entries are dropped (default
    /// 720 min).
    pub cleanup_interval: Duration,
    /// "Authorization rate control" (default off).
    pub rate_control: bool,
    /// "Maximum authorizations per period" (default 3; not in the seed guide: Cisco's
    /// published default).
    pub max_authorizations: u32,
    /// "Rate control period" (default 300 s; not in the seed guide: Cisco's default).
    pub rate_period: Duration,
}

impl AccessConfig {
    /// No `[http.access]` section: authentication path "None" (the guide's value before
    /// MRA access control is configured); the internal servers still check what they need.
    pub fn absent() -> AccessConfig {
        AccessConfig {
            path: AuthenticationPath::None,
            ..AccessConfig::from_raw(RawAccess::default()).unwrap_or_else(|_| unreachable!())
        }
    }

    /// Validates `[http.access]`; refusals name the field.
    pub fn from_raw(raw: RawAccess) -> Result<AccessConfig, ConfigError> {
        let field = |name: &str, reason: &str| ConfigError::Field {
            field: format!("http.access.{name}"),
            reason: reason.to_owned(),
        };
        if raw.authorize_by_oauth_token == Some(true) {
            return Err(field(
                "authorize_by_oauth_token",
                "simple OAuth tokens come from SAML SSO through an IdP, which edgeway does not \
                 support yet; use authorize_by_oauth_token_with_refresh (self-describing tokens)",
            ));
        }
        let minutes = |v: Option<u64>, default: u64, name: &str| match v.unwrap_or(default) {
            0 => Err(field(name, "must be above 0 minutes")),
            m => Ok(Duration::from_secs(m * 60)),
        };
        let cfg = AccessConfig {
            path: raw
                .authentication_path
                .unwrap_or(AuthenticationPath::UcmLdap),
            oauth_token_with_refresh: raw.authorize_by_oauth_token_with_refresh.unwrap_or(true),
            user_credentials: raw.authorize_by_user_credentials.unwrap_or(false),
            refresh_interval: minutes(
                raw.credentials_refresh_interval_min,
                480,
                "credentials_refresh_interval_min",
            )?,
            cleanup_interval: minutes(
                raw.credentials_cleanup_interval_min,
                720,
                "credentials_cleanup_interval_min",
            )?,
            rate_control: raw.authorization_rate_control.unwrap_or(false),
            max_authorizations: match raw.max_authorizations_per_period.unwrap_or(3) {
                0 => return Err(field("max_authorizations_per_period", "must be above 0")),
                n => n,
            },
            rate_period: match raw.rate_control_period_s.unwrap_or(300) {
                0 => return Err(field("rate_control_period_s", "must be above 0 seconds")),
                s => Duration::from_secs(s),
            },
        };
        if cfg.path != AuthenticationPath::None && !cfg.accepts_basic() && !cfg.accepts_tokens() {
            return Err(field(
                "authentication_path",
                "no client could authorize: turn on authorize_by_user_credentials (UCM/LDAP \
                 paths) or authorize_by_oauth_token_with_refresh (SAML SSO is not supported yet)",
            ));
        }
        Ok(cfg)
    }

    /// Whether `Basic` credentials are checked (rather than refused).
    pub fn accepts_basic(&self) -> bool {
        self.user_credentials
            && matches!(
                self.path,
                AuthenticationPath::UcmLdap | AuthenticationPath::SamlSsoAndUcmLdap
            )
    }

    /// Whether self-describing tokens are verified (rather than refused).
    pub fn accepts_tokens(&self) -> bool {
        self.oauth_token_with_refresh && self.path != AuthenticationPath::None
    }
}

/// How an allowed request was authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizedBy {
    /// Authentication path "None".
    Nothing,
    /// A password Unified CM accepted just now.
    UserCredentials,
    /// A password served from the credential cache.
    CachedCredentials,
    /// A verified self-describing token.
    Token,
}

/// What to answer a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on (to the allow list); `user` is `None` on path "None".
    Allowed {
        /// The authorized user.
        user: Option<String>,
        /// How.
        by: AuthorizedBy,
    },
    /// 401 without credentials: the `WWW-Authenticate` challenges to send.
    Challenge {
        /// One header value per scheme, tokens first.
        challenges: Vec<String>,
    },
    /// 401 for credentials that did not authorize.
    Refused {
        /// The `WWW-Authenticate` values (a bad token's carries `error="invalid_token"`).
        challenges: Vec<String>,
        /// Why, for the log and the body (never the secret).
        reason: String,
    },
    /// 403: a genuine token whose access policy does not include MRA (RFC 6750
    /// `insufficient_scope`).
    Forbidden {
        /// The `WWW-Authenticate` value.
        challenge: String,
    },
    /// 429: over "Maximum authorizations per period" for this user.
    TooMany {
        /// The user.
        user: String,
        /// Seconds until one more authorization fits (`Retry-After`).
        retry_after_s: u64,
    },
    /// 502: Unified CM could not be asked.
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl Decision {
    /// The HTTP status this decision answers with (200 for allowed: go on).
    pub fn status(&self) -> u16 {
        match self {
            Decision::Allowed { .. } => 200,
            Decision::Challenge { .. } | Decision::Refused { .. } => 401,
            Decision::Forbidden { .. } => 403,
            Decision::TooMany { .. } => 429,
            Decision::Unavailable { .. } => 502,
        }
    }
}

/// What the IO layer must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Answer (or go on) with this.
    Decided(Decision),
    /// Ask Unified CM whether this user's password is right (UDS `GET /cucm-uds/user/<user>`
    /// with the request's own `Authorization`), then call [`AccessControl::basic_checked`].
    CheckWithUnifiedCm(BasicCheck),
    /// Fetch the keys documents from the refresh servers, [`AccessControl::install_keys`],
    /// then `authorize` again (an unknown `kid`; at most once per [`KEY_REFETCH_INTERVAL`]).
    FetchKeys,
}

/// A pending password check: the user and the cache key of the password it carried.
#[derive(Debug, PartialEq, Eq)]
pub struct BasicCheck {
    /// The user to ask about.
    pub user: String,
    realm: String,
    key: CacheKey,
}

/// What Unified CM said about a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// 2xx: right.
    Accepted,
    /// 401/403/404: wrong password or unknown user.
    Rejected,
    /// No answer, or another status.
    Unreachable(String),
}

/// The fewest seconds between two key fetches caused by unknown `kid`s, so forged tokens
/// cannot make the core hammer Unified CM.
pub const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Most cache entries (credentials and tokens each) and rate-control users kept; beyond
/// this, new entries are not cached (the request is still decided).
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    user: String,
    password_hash: [u8; 32],
}

/// Per-user sliding windows of authorization times.
#[derive(Debug, Default)]
struct RateControl {
    users: HashMap<String, VecDeque<Instant>>,
}

impl RateControl {
    /// Records one authorization for `user` at `now`, or says how long until one fits.
    fn admit(&mut self, now: Instant, user: &str, max: u32, period: Duration) -> Result<(), u64> {
        if self.users.len() >= MAX_ENTRIES && !self.users.contains_key(user) {
            self.prune(now, period);
            if self.users.len() >= MAX_ENTRIES {
                return Ok(());
            }
        }
        let window = self.users.entry(user.to_owned()).or_default();
        while window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= period)
        {
            window.pop_front();
        }
        if window.len() >= max as usize {
            let oldest = window.front().copied().unwrap_or(now);
            let wait = period.saturating_sub(now.saturating_duration_since(oldest));
            return Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
        }
        window.push_back(now);
        Ok(())
    }

    fn prune(&mut self, now: Instant, period: Duration) {
        self.users.retain(|_, w| {
            w.back()
                .is_some_and(|t| now.saturating_duration_since(*t) < period)
        });
    }
}

/// Counters per outcome, for the admin API's status.
#[derive(Debug, Default)]
pub struct AccessCounters {
    /// Allowed on path "None".
    pub allowed_unauthenticated: AtomicU64,
    /// Allowed: password checked with Unified CM.
    pub allowed_checked: AtomicU64,
    /// Allowed from the credential cache (no Unified CM request).
    pub allowed_cached: AtomicU64,
    /// Allowed by a self-describing token.
    pub allowed_token: AtomicU64,
    /// 401 challenges (no credentials).
    pub challenged: AtomicU64,
    /// 401 refusals (wrong password, bad token, a scheme not authorized).
    pub refused: AtomicU64,
    /// 403: token without the MRA access policy.
    pub forbidden_policy: AtomicU64,
    /// 429: authorization rate control.
    pub rate_limited: AtomicU64,
    /// 502: Unified CM could not be asked.
    pub check_unavailable: AtomicU64,
}

impl AccessCounters {
    /// Counts `decision` under its outcome.
    pub fn count(&self, decision: &Decision) {
        let counter = match decision {
            Decision::Allowed { by, .. } => match by {
                AuthorizedBy::Nothing => &self.allowed_unauthenticated,
                AuthorizedBy::UserCredentials => &self.allowed_checked,
                AuthorizedBy::CachedCredentials => &self.allowed_cached,
                AuthorizedBy::Token => &self.allowed_token,
            },
            Decision::Challenge { .. } => &self.challenged,
            Decision::Refused { .. } => &self.refused,
            Decision::Forbidden { .. } => &self.forbidden_policy,
            Decision::TooMany { .. } => &self.rate_limited,
            Decision::Unavailable { .. } => &self.check_unavailable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "allowed_unauthenticated": n(&self.allowed_unauthenticated),
            "allowed_checked": n(&self.allowed_checked),
            "allowed_cached": n(&self.allowed_cached),
            "allowed_token": n(&self.allowed_token),
            "challenged": n(&self.challenged),
            "refused": n(&self.refused),
            "forbidden_policy": n(&self.forbidden_policy),
            "rate_limited": n(&self.rate_limited),
            "check_unavailable": n(&self.check_unavailable),
        })
    }
}

/// `text` fit for a quoted-string in a header: printable ASCII without `"` and `\\` (a
/// token's `alg`, quoted back in `error_description`, is the client's text), at most 200.
fn quotable(text: &str) -> String {
    text.chars()
        .filter(|c| matches!(c, ' '..='~') && !matches!(c, '"' | '\\'))
        .take(200)
        .collect()
}

/// The core's access control state: configuration, signing keys, the credential and token
/// caches and the rate-control windows.
#[derive(Debug)]
pub struct AccessControl {
    cfg: AccessConfig,
    /// Keys the password hashes so a cache dump is no offline dictionary target.
    hash_key: [u8; 32],
    keys: KeySet,
    last_key_fetch: Option<Instant>,
    /// Passwords Unified CM accepted: until when they are served from here.
    credentials: HashMap<CacheKey, Instant>,
    /// Tokens already verified (by hash): user and Unix expiry.
    tokens: HashMap<[u8; 32], (String, u64)>,
    rate: RateControl,
    next_cleanup: Instant,
}

impl AccessControl {
    /// Access control with `cfg`; `hash_key` comes from the caller's CSPRNG.
    pub fn new(cfg: AccessConfig, hash_key: [u8; 32], now: Instant) -> AccessControl {
        AccessControl {
            next_cleanup: now + cfg.cleanup_interval,
            cfg,
            hash_key,
            keys: KeySet::default(),
            last_key_fetch: None,
            credentials: HashMap::new(),
            tokens: HashMap::new(),
            rate: RateControl::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AccessConfig {
        &self.cfg
    }

    /// Replaces the signing keys with those just fetched (an empty fetch keeps the old ones:
    /// refresh servers that are down must not void every token).
    pub fn install_keys(&mut self, keys: KeySet) {
        if keys != KeySet::default() {
            self.keys = keys;
        }
    }

    /// When [`AccessControl::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Instant {
        self.next_cleanup
    }

    /// The credentials cleanup: drops expired cache entries and idle rate windows.
    pub fn handle_timeout(&mut self, now: Instant, unix_now: u64) {
        if now < self.next_cleanup {
            return;
        }
        self.next_cleanup = now + self.cfg.cleanup_interval;
        self.credentials.retain(|_, until| *until > now);
        self.tokens.retain(|_, (_, exp)| *exp > unix_now);
        self.rate.prune(now, self.cfg.rate_period);
    }

    /// Number of cached credentials and tokens (for tests and status).
    pub fn cached(&self) -> (usize, usize) {
        (self.credentials.len(), self.tokens.len())
    }

    fn challenges(&self, realm: &str, error: Option<&str>) -> Vec<String> {
        let realm = quotable(realm);
        let mut out = Vec::new();
        if self.cfg.accepts_tokens() {
            out.push(match error {
                Some(e) => format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                    quotable(e)
                ),
                None => format!("Bearer realm=\"{realm}\""),
            });
        }
        if self.cfg.accepts_basic() {
            out.push(format!("Basic realm=\"{realm}\", charset=\"UTF-8\""));
        }
        out
    }

    fn refused(&self, realm: &str, token_error: Option<&str>, reason: String) -> Step {
        Step::Decided(Decision::Refused {
            challenges: self.challenges(realm, token_error),
            reason,
        })
    }

    fn admit(&mut self, now: Instant, user: &str) -> Result<(), Decision> {
        if !self.cfg.rate_control {
            return Ok(());
        }
        self.rate
            .admit(now, user, self.cfg.max_authorizations, self.cfg.rate_period)
            .map_err(|retry_after_s| Decision::TooMany {
                user: user.to_owned(),
                retry_after_s,
            })
    }

    fn password_hash(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.hash_key);
        h.update((user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Decides a request for `realm` (the SIP domain it names) carrying `authorization`.
    pub fn authorize(
        &mut self,
        now: Instant,
        unix_now: u64,
        realm: &str,
        authorization: Option<&[u8]>,
    ) -> Step {
        self.handle_timeout(now, unix_now);
        if self.cfg.path == AuthenticationPath::None {
            return Step::Decided(Decision::Allowed {
                user: None,
                by: AuthorizedBy::Nothing,
            });
        }
        let Some(header) = authorization else {
            return Step::Decided(Decision::Challenge {
                challenges: self.challenges(realm, None),
            });
        };
        match parse_authorization(header) {
            Err(e) => self.refused(realm, None, e.to_string()),
            Ok(Credentials::Basic { .. }) if !self.cfg.accepts_basic() => self.refused(
                realm,
                None,
                "user credentials are not an authorization method here (authorize by user \
                 credentials is off, or the path is SAML SSO)"
                    .into(),
            ),
            Ok(Credentials::Bearer(_)) if !self.cfg.accepts_tokens() => self.refused(
                realm,
                None,
                "OAuth tokens are not an authorization method here".into(),
            ),
            Ok(Credentials::Basic { user, password }) => {
                let key = CacheKey {
                    password_hash: self.password_hash(&user, &password),
                    user,
                };
                if self.credentials.get(&key).is_some_and(|until| *until > now) {
                    return Step::Decided(Decision::Allowed {
                        user: Some(key.user),
                        by: AuthorizedBy::CachedCredentials,
                    });
                }
                if let Err(too_many) = self.admit(now, &key.user) {
                    return Step::Decided(too_many);
                }
                Step::CheckWithUnifiedCm(BasicCheck {
                    user: key.user.clone(),
                    realm: realm.to_owned(),
                    key,
                })
            }
            Ok(Credentials::Bearer(token)) => self.authorize_token(now, unix_now, realm, &token),
        }
    }

    fn authorize_token(&mut self, now: Instant, unix_now: u64, realm: &str, token: &str) -> Step {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((user, exp)) = self.tokens.get(&digest) {
            if *exp > unix_now {
                return Step::Decided(Decision::Allowed {
                    user: Some(user.clone()),
                    by: AuthorizedBy::Token,
                });
            }
        }
        let verified = parse_token(token).and_then(|parsed| {
            match self.keys.verify(token, &parsed, unix_now) {
                Err(TokenError::UnknownKey(kid)) => {
                    let recent = self
                        .last_key_fetch
                        .is_some_and(|t| now.saturating_duration_since(t) < KEY_REFETCH_INTERVAL);
                    if recent {
                        Err(TokenError::UnknownKey(kid))
                    } else {
                        Ok(None)
                    }
                }
                other => other.map(Some),
            }
        });
        match verified {
            Ok(None) => {
                self.last_key_fetch = Some(now);
                Step::FetchKeys
            }
            Ok(Some(claims)) => {
                if let Err(too_many) = self.admit(now, &claims.sub) {
                    return Step::Decided(too_many);
                }
                if self.tokens.len() < MAX_ENTRIES {
                    self.tokens.insert(digest, (claims.sub.clone(), claims.exp));
                }
                Step::Decided(Decision::Allowed {
                    user: Some(claims.sub),
                    by: AuthorizedBy::Token,
                })
            }
            Err(TokenError::NoMraPolicy) => Step::Decided(Decision::Forbidden {
                challenge: format!(
                    "Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{}\"",
                    quotable(realm),
                    token::MRA_SCOPE
                ),
            }),
            Err(e) => {
                let why = e.to_string();
                self.refused(realm, Some(&why), why.clone())
            }
        }
    }

    /// Unified CM's answer to `check`: caches an accepted password for the credentials
    /// refresh interval.
    pub fn basic_checked(
        &mut self,
        now: Instant,
        check: BasicCheck,
        outcome: CheckOutcome,
    ) -> Decision {
        match outcome {
            CheckOutcome::Accepted => {
                if self.credentials.len() < MAX_ENTRIES {
                    self.credentials
                        .insert(check.key, now + self.cfg.refresh_interval);
                }
                Decision::Allowed {
                    user: Some(check.user),
                    by: AuthorizedBy::UserCredentials,
                }
            }
            // Other cached passwords of this user stay: a stranger's wrong guesses must not
            // cost the user its cache (a changed password ages out with the refresh interval).
            CheckOutcome::Rejected => Decision::Refused {
                challenges: self.challenges(&check.realm, None),
                reason: format!("Unified CM refused the credentials of {:?}", check.user),
            },
            CheckOutcome::Unreachable(reason) => Decision::Unavailable { reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::token::tests::TestIssuer;
    use super::*;
    use base64::Engine;

    fn cfg(toml_text: &str) -> AccessConfig {
        AccessConfig::from_raw(toml::from_str(toml_text).expect("toml")).expect("valid")
    }

    fn basic(user: &str, password: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
        .into_bytes()
    }

    fn decided(step: Step) -> Decision {
        match step {
            Step::Decided(d) => d,
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    fn check(step: Step) -> BasicCheck {
        match step {
            Step::CheckWithUnifiedCm(c) => c,
            other => panic!("expected a Unified CM check, got {other:?}"),
        }
    }

    const BOTH: &str = "authorize_by_user_credentials = true\n";

    #[test]
    fn defaults_are_the_guides_and_unusable_settings_are_refused() {
        let d = cfg("");
        assert_eq!(d.path, AuthenticationPath::UcmLdap);
        assert!(d.oauth_token_with_refresh && !d.user_credentials && !d.rate_control);
        assert_eq!(d.refresh_interval, Duration::from_secs(480 * 60));
        assert_eq!(d.cleanup_interval, Duration::from_secs(720 * 60));
        assert_eq!((d.max_authorizations, d.rate_period.as_secs()), (3, 300));
        assert_eq!(AccessConfig::absent().path, AuthenticationPath::None);
        assert_eq!(
            cfg("authentication_path = \"SAML SSO and UCM/LDAP\"").path,
            AuthenticationPath::SamlSsoAndUcmLdap
        );
        for (bad, field) in [
            (
                "authorize_by_oauth_token = true",
                "authorize_by_oauth_token",
            ),
            (
                "authentication_path = \"SAML SSO\"\nauthorize_by_oauth_token_with_refresh = false",
                "authentication_path",
            ),
            ("rate_control_period_s = 0", "rate_control_period_s"),
            (
                "credentials_refresh_interval_min = 0",
                "credentials_refresh_interval_min",
            ),
        ] {
            let err = AccessConfig::from_raw(toml::from_str(bad).expect("toml"))
                .expect_err(bad)
                .to_string();
            assert!(err.starts_with(&format!("http.access.{field}:")), "{err}");
        }
        assert!(toml::from_str::<RawAccess>("authentication_path = \"SSO\"").is_err());
        assert!(toml::from_str::<RawAccess>("typo = 1").is_err());
    }

    #[test]
    fn path_none_lets_everything_through_and_no_credentials_get_a_challenge() {
        let t0 = Instant::now();
        let mut none = AccessControl::new(AccessConfig::absent(), [1; 32], t0);
        assert_eq!(
            decided(none.authorize(t0, 0, "example.com", None)),
            Decision::Allowed {
                user: None,
                by: AuthorizedBy::Nothing
            }
        );
        let mut ac = AccessControl::new(cfg(BOTH), [1; 32], t0);
        assert_eq!(
            decided(ac.authorize(t0, 0, "example.com", None)),
            Decision::Challenge {
                challenges: vec![
                    "Bearer realm=\"example.com\"".into(),
                    "Basic realm=\"example.com\", charset=\"UTF-8\"".into()
                ]
            }
        );
        let mut tokens_only = AccessControl::new(cfg(""), [1; 32], t0);
        let d = decided(tokens_only.authorize(t0, 0, "example.com", Some(&basic("a", "b"))));
        assert!(
            matches!(&d, Decision::Refused { challenges, .. } if challenges.len() == 1 && challenges[0].starts_with("Bearer")),
            "{d:?}"
        );
        let d = decided(ac.authorize(t0, 0, "example.com", Some(b"Digest x=y")));
        assert_eq!(d.status(), 401);
    }

    #[test]
    fn an_accepted_password_is_cached_for_the_refresh_interval_and_cleaned_up() {
        let t0 = Instant::now();
        let mut ac = AccessControl::new(
            cfg("authorize_by_user_credentials = true\ncredentials_refresh_interval_min = 10\ncredentials_cleanup_interval_min = 30"),
            [7; 32],
            t0,
        );
        let c = check(ac.authorize(t0, 0, "d", Some(&basic("alice", "pw"))));
        assert_eq!(c.user, "alice");
        assert_eq!(
            ac.basic_checked(t0, c, CheckOutcome::Accepted),
            Decision::Allowed {
                user: Some("alice".into()),
                by: AuthorizedBy::UserCredentials
            }
        );
        let later = t0 + Duration::from_secs(9 * 60);
        assert_eq!(
            decided(ac.authorize(later, 0, "d", Some(&basic("alice", "pw")))),
            Decision::Allowed {
                user: Some("alice".into()),
                by: AuthorizedBy::CachedCredentials
            }
        );
        // Another password for the same user is not the cached one.
        let wrong = check(ac.authorize(later, 0, "d", Some(&basic("alice", "nope"))));
        let refused = ac.basic_checked(later, wrong, CheckOutcome::Rejected);
        assert_eq!(refused.status(), 401);
        // The stranger's guess did not evict the right password.
        assert!(matches!(
            decided(ac.authorize(later, 0, "d", Some(&basic("alice", "pw")))),
            Decision::Allowed {
                by: AuthorizedBy::CachedCredentials,
                ..
            }
        ));
        // Past the refresh interval Unified CM is asked again.
        let stale = t0 + Duration::from_secs(11 * 60);
        let again = check(ac.authorize(stale, 0, "d", Some(&basic("alice", "pw"))));
        assert_eq!(ac.cached().0, 1, "still held until the cleanup");
        ac.handle_timeout(t0 + Duration::from_secs(31 * 60), 0);
        assert_eq!(ac.cached().0, 0, "the cleanup dropped the expired entry");
        let unreachable = ac.basic_checked(stale, again, CheckOutcome::Unreachable("down".into()));
        assert_eq!(unreachable.status(), 502);
        // The cache key never holds the password.
        let dump = format!("{:?}", ac.credentials);
        assert!(!dump.contains("pw\""), "{dump}");
    }

    #[test]
    fn rate_control_refuses_the_authorization_over_the_limit_with_retry_after() {
        let t0 = Instant::now();
        let mut ac = AccessControl::new(
            cfg("authorize_by_user_credentials = true\nauthorization_rate_control = true\nmax_authorizations_per_period = 2\nrate_control_period_s = 60"),
            [7; 32],
            t0,
        );
        for i in 0..2 {
            let c = check(ac.authorize(
                t0 + Duration::from_secs(i),
                0,
                "d",
                Some(&basic("alice", "x")),
            ));
            ac.basic_checked(t0, c, CheckOutcome::Rejected);
        }
        let at = t0 + Duration::from_secs(10);
        assert_eq!(
            decided(ac.authorize(at, 0, "d", Some(&basic("alice", "right")))),
            Decision::TooMany {
                user: "alice".into(),
                retry_after_s: 50
            }
        );
        // Another user is not affected; alice fits again once the window moved on.
        check(ac.authorize(at, 0, "d", Some(&basic("bob", "x"))));
        check(ac.authorize(
            t0 + Duration::from_secs(60),
            0,
            "d",
            Some(&basic("alice", "right")),
        ));
    }

    #[test]
    fn tokens_are_verified_with_fetched_keys_cached_and_rate_controlled() {
        let t0 = Instant::now();
        let issuer = TestIssuer::new("k1");
        let mut ac = AccessControl::new(
            cfg("authorization_rate_control = true\nmax_authorizations_per_period = 2"),
            [7; 32],
            t0,
        );
        let token = issuer.token("alice", 2_000, "mra");
        let bearer = format!("Bearer {token}");
        // No keys yet: fetch, then decide.
        assert_eq!(
            ac.authorize(t0, 1_000, "d", Some(bearer.as_bytes())),
            Step::FetchKeys
        );
        ac.install_keys(KeySet::from_document(&issuer.document()).expect("keys"));
        assert_eq!(
            decided(ac.authorize(t0, 1_000, "d", Some(bearer.as_bytes()))),
            Decision::Allowed {
                user: Some("alice".into()),
                by: AuthorizedBy::Token
            }
        );
        // Served from the token cache: not another authorization.
        for _ in 0..5 {
            assert_eq!(
                decided(ac.authorize(t0, 1_001, "d", Some(bearer.as_bytes()))).status(),
                200
            );
        }
        let second = format!("Bearer {}", issuer.token("alice", 2_001, "mra"));
        assert_eq!(
            decided(ac.authorize(t0, 1_001, "d", Some(second.as_bytes()))).status(),
            200
        );
        let third = format!("Bearer {}", issuer.token("alice", 2_002, "mra"));
        assert_eq!(
            decided(ac.authorize(t0, 1_001, "d", Some(third.as_bytes()))).status(),
            429
        );
        // Expired, even though cached.
        let d = decided(ac.authorize(t0, 2_000, "d", Some(bearer.as_bytes())));
        assert!(
            matches!(&d, Decision::Refused { challenges, .. } if challenges[0].contains("error=\"invalid_token\"")),
            "{d:?}"
        );
        // No MRA policy: 403 insufficient_scope.
        let no_mra = format!("Bearer {}", issuer.token("bob", 2_000, "uds"));
        let d = decided(ac.authorize(t0, 1_000, "d", Some(no_mra.as_bytes())));
        assert!(
            matches!(&d, Decision::Forbidden { challenge } if challenge.contains("insufficient_scope")),
            "{d:?}"
        );
        // An unknown kid fetches keys once per interval, then is refused without a fetch.
        let stranger = format!(
            "Bearer {}",
            TestIssuer::new("k9").token("alice", 2_000, "mra")
        );
        let d = decided(ac.authorize(t0, 1_000, "d", Some(stranger.as_bytes())));
        assert_eq!(d.status(), 401, "keys were fetched just now");
        let t1 = t0 + KEY_REFETCH_INTERVAL;
        assert_eq!(
            ac.authorize(t1, 1_000, "d", Some(stranger.as_bytes())),
            Step::FetchKeys
        );
        ac.install_keys(KeySet::default());
        let d = decided(ac.authorize(t1, 1_000, "d", Some(stranger.as_bytes())));
        assert_eq!(d.status(), 401);
        // The empty fetch kept the keys: alice's token still verifies.
        let fourth = format!("Bearer {}", issuer.token("carol", 2_000, "mra"));
        assert_eq!(
            decided(ac.authorize(t1, 1_000, "d", Some(fourth.as_bytes()))).status(),
            200
        );
        assert_eq!(
            ac.authorize(
                t1 + KEY_REFETCH_INTERVAL,
                1_000,
                "d",
                Some(stranger.as_bytes())
            ),
            Step::FetchKeys
        );
    }
}
