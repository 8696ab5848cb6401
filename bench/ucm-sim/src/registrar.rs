//! The registrar (RFC 3261 §10.3, RFC 3327 Path) as a sans-IO state machine.
//!
//! [`Registrar::handle_request`] takes a parsed request, the connection it came on and
//! `now`, and returns the response to write back on that connection (or nothing, for
//! ACK). [`Registrar::expire`] drops bindings and nonces whose time is up; call it every
//! second or so. [`Registrar::outbound_request`] builds a request towards a registered
//! user, to be written on the connection its REGISTER came on, routed by the stored Path.
//!
//! How Unified CM's answers are mirrored (and why):
//! * a REGISTER for a user not in the directory gets **404 Not Found** with
//!   `Warning: 399 ... "Unable to find device/user in database"`, before any challenge:
//!   Unified CM looks the device/line up first and answers 404 for an unknown one rather
//!   than challenging credentials it cannot check;
//! * credentials whose response is wrong (a wrong password) get **403 Forbidden**: the
//!   client has already answered one challenge, and Unified CM does not challenge again;
//! * a registration domain (the To URI's host) not in the served list gets **403 Forbidden**
//!   with reason `Domain Not Served`. The Request-URI is not checked: a proxy in front
//!   (edgeway's core) may address it to ucm-sim's own host.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgeway_sip::{
    Auth, CSeq, ContactList, HeaderName, Host, Method, NameAddr, ParseError, Request, Response,
    Uri, Via, MAGIC_COOKIE,
};
use serde::Serialize;

use crate::digest::{DigestAuthenticator, DigestConfig, DigestVerdict};
use crate::error::UcmSimError;
use crate::users::{SecurityProfile, User, UserDirectory};

/// Identifies one accepted TCP/TLS connection (assigned by the IO layer).
pub type ConnectionId = u64;

/// The stream transport a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The connection.
    pub connection: ConnectionId,
    /// Its transport.
    pub transport: Transport,
    /// The peer's address.
    pub peer: SocketAddr,
}

/// Registrar settings.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Registration domains served (To URI host, case-insensitive); empty serves any.
    pub domains: Vec<String>,
    /// Shortest accepted non-zero expiry; shorter ones get 423 (RFC 3261 §10.3 step 7).
    pub min_expires: u32,
    /// Longest granted expiry; longer requests are shortened to this.
    pub max_expires: u32,
    /// Expiry when the request states none.
    pub default_expires: u32,
    /// Most contacts one user may hold; more are refused with 403 (bounds memory).
    pub max_bindings_per_user: usize,
    /// Refuse (403) a REGISTER for a user with the secure (encrypted) phone security profile
    /// that arrives over plain TCP: a cluster in mixed mode takes those devices over TLS
    /// only (the core's CEtls zone). Off: secure profiles are "downgraded to use TCP", as
    /// the deployment guide says of a cluster not in mixed mode.
    pub require_tls_for_secure: bool,
    /// Digest settings.
    pub digest: DigestConfig,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            domains: Vec::new(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_bindings_per_user: 10,
            require_tls_for_secure: false,
            digest: DigestConfig::default(),
        }
    }
}

/// What happened, by kind; every refusal has its counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RegistrarCounters {
    /// Requests handled.
    pub requests: u64,
    /// REGISTER requests.
    pub registers: u64,
    /// REGISTERs answered 200.
    pub registers_ok: u64,
    /// OPTIONS answered 200.
    pub options: u64,
    /// Other methods (answered 405, or ignored for ACK).
    pub other_methods: u64,
    /// 401 challenges sent (stale ones included).
    pub challenges: u64,
    /// Challenges with `stale=true` (right password, expired nonce).
    pub stale_nonces: u64,
    /// Credentials naming a nonce this server did not issue (answered with a challenge).
    pub unknown_nonces: u64,
    /// Nonce-counts seen before (answered with a fresh challenge).
    pub replays: u64,
    /// Wrong responses (wrong password) and username/AOR mismatches: 403.
    pub auth_failures: u64,
    /// REGISTERs for users not in the directory: 404.
    pub unknown_users: u64,
    /// REGISTERs for domains not served: 403.
    pub unknown_domains: u64,
    /// Secure-profile users registering over plain TCP when TLS is required: 403.
    pub profile_mismatches: u64,
    /// Requests refused as malformed: 400.
    pub bad_requests: u64,
    /// Expiry below the minimum: 423.
    pub interval_too_brief: u64,
    /// Out-of-order CSeq for an existing binding: 500.
    pub out_of_order: u64,
    /// Contacts refused beyond the per-user limit: 403.
    pub too_many_bindings: u64,
    /// Bindings created.
    pub bindings_added: u64,
    /// Bindings refreshed.
    pub bindings_refreshed: u64,
    /// Bindings removed by the client (expires 0 or `*`).
    pub bindings_removed: u64,
    /// Bindings removed because their time was up.
    pub bindings_expired: u64,
}

/// One stored contact of a user.
#[derive(Debug, Clone)]
struct Binding {
    /// The Contact as registered, without `expires` (kept for the 200's Contact list).
    contact: NameAddr,
    /// `contact.uri` written out: the comparison key.
    key: String,
    call_id: String,
    cseq: u32,
    expires_at: Instant,
    /// The request's Path values, in order (RFC 3327).
    path: Vec<String>,
    origin: Origin,
    aor: String,
    /// The AOR's host: the domain of requests ucm-sim sends to this contact.
    domain: String,
    registered_at: Instant,
}

/// A binding as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindingView {
    /// User id.
    pub user: String,
    /// The user's directory number.
    pub number: String,
    /// The user's phone security profile.
    pub security_profile: SecurityProfile,
    /// The address of record registered (the To URI).
    pub aor: String,
    /// The Contact URI.
    pub contact: String,
    /// Path values stored with it.
    pub path: Vec<String>,
    /// Seconds until it expires.
    pub expires: u64,
    /// The connection its REGISTER came on.
    pub connection: ConnectionId,
    /// That connection's transport.
    pub transport: Transport,
    /// The peer address of that connection.
    pub peer: String,
}

/// A request to send to a registered user, and where.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The request (Via branch set).
    pub request: Request,
    /// The connection to write it on.
    pub connection: ConnectionId,
    /// Its Via branch, to match the response.
    pub branch: String,
}

/// Where requests to a registered user go (its most recent binding).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The Contact URI: the Request-URI.
    pub contact: Uri,
    /// The stored Path: the Route set.
    pub path: Vec<String>,
    /// The connection the REGISTER came on.
    pub connection: ConnectionId,
    /// The address of record.
    pub aor: String,
    /// The AOR's host.
    pub domain: String,
}

/// The registrar; see the module docs.
#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    users: UserDirectory,
    auth: DigestAuthenticator,
    bindings: HashMap<String, Vec<Binding>>,
    counters: RegistrarCounters,
    outbound_seq: u64,
}

/// One authenticated REGISTER's binding changes, before they are applied.
struct Update<'a> {
    user: &'a User,
    aor: String,
    domain: &'a str,
    header_expires: Option<u32>,
    call_id: &'a str,
    cseq: u32,
    path: &'a [String],
    origin: &'a Origin,
}

/// Why a REGISTER is refused, with the response it gets.
struct Refusal {
    status: u16,
    reason: String,
    extra: Vec<(HeaderName, String)>,
}

impl Refusal {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
            extra: Vec::new(),
        }
    }

    fn with(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    fn bad(e: ParseError) -> Self {
        Refusal::new(400, format!("Bad Request ({e})"))
    }
}

/// What ucm-sim takes as a whole (the registrar and the call switch), as OPTIONS answers say.
const ALLOW: &str =
    "REGISTER, OPTIONS, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, INFO, REFER, MESSAGE, NOTIFY";

impl Registrar {
    /// A registrar for `users`; `secret` keys the digest nonces, `now` is the time origin.
    pub fn new(
        config: RegistrarConfig,
        users: UserDirectory,
        secret: [u8; 32],
        now: Instant,
    ) -> Self {
        let auth = DigestAuthenticator::new(config.digest.clone(), secret, now);
        Registrar {
            config,
            users,
            auth,
            bindings: HashMap::new(),
            counters: RegistrarCounters::default(),
            outbound_seq: 0,
        }
    }

    /// The counters.
    pub fn counters(&self) -> &RegistrarCounters {
        &self.counters
    }

    /// The user directory.
    pub fn users(&self) -> &UserDirectory {
        &self.users
    }

    /// Handles one request; returns the response to send back on the same connection
    /// (`None` for ACK, which gets none).
    pub fn handle_request(
        &mut self,
        now: Instant,
        req: &Request,
        origin: &Origin,
    ) -> Option<Response> {
        self.counters.requests += 1;
        let result = match &req.method {
            Method::Register => {
                self.counters.registers += 1;
                self.register(now, req, origin)
            }
            Method::Options => {
                self.counters.options += 1;
                return Some(respond(
                    req,
                    200,
                    "OK",
                    vec![
                        (HeaderName::Allow, ALLOW.to_owned()),
                        (HeaderName::Accept, "application/sdp".to_owned()),
                    ],
                ));
            }
            Method::Ack => {
                self.counters.other_methods += 1;
                return None;
            }
            _ => {
                self.counters.other_methods += 1;
                Err(Refusal::new(405, "Method Not Allowed").with(HeaderName::Allow, ALLOW))
            }
        };
        Some(match result {
            Ok(r) => r,
            Err(refusal) => {
                if refusal.status == 400 {
                    self.counters.bad_requests += 1;
                }
                respond(req, refusal.status, &refusal.reason, refusal.extra)
            }
        })
    }

    fn register(
        &mut self,
        now: Instant,
        req: &Request,
        origin: &Origin,
    ) -> Result<Response, Refusal> {
        let to = req.headers.to_addr().map_err(Refusal::bad)?;
        let Uri::Sip(aor_uri) = &to.uri else {
            return Err(Refusal::new(400, "Bad Request (To is not a SIP URI)"));
        };
        let domain = host_text(&aor_uri.host);
        if !self.serves(&domain) {
            self.counters.unknown_domains += 1;
            return Err(Refusal::new(403, "Domain Not Served").with(
                HeaderName::Warning,
                format!("399 ucm-sim \"domain {domain} is not served by this cluster\""),
            ));
        }
        let Some(user) = aor_uri.user.as_deref().and_then(|u| self.users.find(u)) else {
            self.counters.unknown_users += 1;
            return Err(Refusal::new(404, "Not Found").with(
                HeaderName::Warning,
                "399 ucm-sim \"Unable to find device/user in database\"",
            ));
        };
        let user = user.clone();
        if self.config.require_tls_for_secure
            && user.security_profile == SecurityProfile::Secure
            && origin.transport != Transport::Tls
        {
            self.counters.profile_mismatches += 1;
            return Err(Refusal::new(403, "Secure Profile Requires TLS").with(
                HeaderName::Warning,
                format!(
                    "399 ucm-sim \"user {} has an encrypted phone security profile: register over TLS\"",
                    user.name
                ),
            ));
        }
        self.authenticate(now, req, &user)?;

        let contacts = req.headers.contacts().map_err(Refusal::bad)?;
        let header_expires = req.headers.expires().map_err(Refusal::bad)?;
        let call_id = req.headers.call_id().map_err(Refusal::bad)?.to_owned();
        let cseq = req.headers.cseq().map_err(Refusal::bad)?.seq;
        let path: Vec<String> = req
            .headers
            .values(&HeaderName::Path)
            .map_err(Refusal::bad)?
            .into_iter()
            .map(str::to_owned)
            .collect();
        // Path must parse as name-addrs: they become Route values of requests to the user.
        req.headers.paths().map_err(Refusal::bad)?;

        match contacts {
            ContactList::Wildcard => {
                if header_expires != Some(0) {
                    return Err(Refusal::new(
                        400,
                        "Bad Request (Contact: * needs Expires: 0)",
                    ));
                }
                let list = self.bindings.entry(user.name.clone()).or_default();
                // §10.3 step 6: a '*' with an older CSeq on the same Call-ID is ignored.
                let before = list.len();
                list.retain(|b| b.call_id == call_id && b.cseq >= cseq);
                self.counters.bindings_removed += (before - list.len()) as u64;
            }
            ContactList::Addresses(addrs) => {
                let update = Update {
                    user: &user,
                    aor: to.uri.to_string(),
                    domain: &domain,
                    header_expires,
                    call_id: &call_id,
                    cseq,
                    path: &path,
                    origin,
                };
                self.apply_contacts(now, &update, addrs)?;
            }
        }
        self.counters.registers_ok += 1;
        Ok(self.ok_response(now, req, &user, &path))
    }

    fn apply_contacts(
        &mut self,
        now: Instant,
        update: &Update<'_>,
        addrs: Vec<NameAddr>,
    ) -> Result<(), Refusal> {
        let Update {
            user,
            header_expires,
            call_id,
            cseq,
            ..
        } = *update;
        let cfg = &self.config;
        // Validate everything first: a refused REGISTER changes nothing.
        let mut updates = Vec::with_capacity(addrs.len());
        for mut contact in addrs {
            let expires = contact
                .expires()
                .or(header_expires)
                .unwrap_or(cfg.default_expires);
            if expires != 0 && expires < cfg.min_expires {
                self.counters.interval_too_brief += 1;
                return Err(Refusal::new(423, "Interval Too Brief")
                    .with(HeaderName::MinExpires, cfg.min_expires.to_string()));
            }
            contact.params.remove("expires");
            updates.push((
                contact.uri.to_string(),
                contact,
                expires.min(cfg.max_expires),
            ));
        }
        let list = self.bindings.entry(user.name.clone()).or_default();
        for (key, _, _) in &updates {
            if let Some(b) = list.iter().find(|b| &b.key == key) {
                if b.call_id == call_id && b.cseq >= cseq {
                    self.counters.out_of_order += 1;
                    return Err(Refusal::new(
                        500,
                        "Server Internal Error (CSeq out of order)",
                    ));
                }
            }
        }
        let new = updates
            .iter()
            .filter(|(key, _, e)| *e != 0 && !list.iter().any(|b| &b.key == key))
            .count();
        if list.len() + new > cfg.max_bindings_per_user {
            self.counters.too_many_bindings += 1;
            return Err(Refusal::new(403, "Too Many Contacts").with(
                HeaderName::Warning,
                format!(
                    "399 ucm-sim \"at most {} contacts per user\"",
                    cfg.max_bindings_per_user
                ),
            ));
        }
        for (key, contact, expires) in updates {
            let pos = list.iter().position(|b| b.key == key);
            match (pos, expires) {
                (Some(i), 0) => {
                    list.remove(i);
                    self.counters.bindings_removed += 1;
                }
                (None, 0) => {}
                (pos, expires) => {
                    let binding = Binding {
                        contact,
                        key,
                        call_id: call_id.to_owned(),
                        cseq,
                        expires_at: now + Duration::from_secs(u64::from(expires)),
                        path: update.path.to_vec(),
                        origin: *update.origin,
                        aor: update.aor.clone(),
                        domain: update.domain.to_owned(),
                        registered_at: now,
                    };
                    match pos {
                        Some(i) => {
                            list[i] = binding;
                            self.counters.bindings_refreshed += 1;
                        }
                        None => {
                            list.push(binding);
                            self.counters.bindings_added += 1;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the request's credentials; `Ok` when they authenticate `user`.
    fn authenticate(&mut self, now: Instant, req: &Request, user: &User) -> Result<(), Refusal> {
        let creds = req
            .headers
            .auth(&HeaderName::Authorization)
            .map_err(Refusal::bad)?;
        let realm = self.auth.realm();
        let Some(creds) = creds
            .into_iter()
            .find(|a| a.is_digest() && a.param("realm") == Some(realm))
        else {
            return Err(self.challenge(now, false));
        };
        let same_user = creds
            .param("username")
            .and_then(|n| self.users.find(n))
            .is_some_and(|u| u.name == user.name);
        if !same_user {
            self.counters.auth_failures += 1;
            return Err(Refusal::new(
                403,
                "Forbidden (username does not match the AOR)",
            ));
        }
        match self.verify(now, req, &creds, user) {
            DigestVerdict::Authenticated => Ok(()),
            DigestVerdict::Stale => {
                self.counters.stale_nonces += 1;
                Err(self.challenge(now, true))
            }
            DigestVerdict::UnknownNonce => {
                self.counters.unknown_nonces += 1;
                Err(self.challenge(now, false))
            }
            DigestVerdict::Replayed => {
                self.counters.replays += 1;
                Err(self.challenge(now, false))
            }
            DigestVerdict::WrongResponse => {
                self.counters.auth_failures += 1;
                Err(Refusal::new(403, "Forbidden"))
            }
            DigestVerdict::Malformed(why) => Err(Refusal::new(400, format!("Bad Request ({why})"))),
        }
    }

    fn verify(&mut self, now: Instant, req: &Request, creds: &Auth, user: &User) -> DigestVerdict {
        self.auth
            .verify(now, req.method.as_str(), creds, &user.password)
    }

    fn challenge(&mut self, now: Instant, stale: bool) -> Refusal {
        self.counters.challenges += 1;
        Refusal::new(401, "Unauthorized")
            .with(HeaderName::WwwAuthenticate, self.auth.challenge(now, stale))
    }

    fn ok_response(&self, now: Instant, req: &Request, user: &User, path: &[String]) -> Response {
        let mut extra = Vec::new();
        for b in self.bindings.get(&user.name).into_iter().flatten() {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            extra.push((HeaderName::Contact, format!("{};expires={left}", b.contact)));
        }
        for p in path {
            extra.push((HeaderName::Path, p.clone()));
        }
        if !path.is_empty() {
            extra.push((HeaderName::Supported, "path".to_owned()));
        }
        respond(req, 200, "OK", extra)
    }

    fn serves(&self, domain: &str) -> bool {
        self.config.domains.is_empty()
            || self
                .config
                .domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Drops expired bindings and forgotten nonces.
    pub fn expire(&mut self, now: Instant) {
        let mut expired = 0;
        self.bindings.retain(|_, list| {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            expired += before - list.len();
            !list.is_empty()
        });
        self.counters.bindings_expired += expired as u64;
        self.auth.expire(now);
    }

    /// Every live binding, sorted by user then contact.
    pub fn bindings(&self, now: Instant) -> Vec<BindingView> {
        let mut out: Vec<BindingView> = self
            .bindings
            .iter()
            .flat_map(|(name, list)| {
                let user = self.users.find(name);
                let number = user.map(|u| u.number.clone()).unwrap_or_default();
                let security_profile =
                    user.map_or(SecurityProfile::NonSecure, |u| u.security_profile);
                list.iter()
                    .filter(move |b| b.expires_at > now)
                    .map(move |b| BindingView {
                        user: name.clone(),
                        number: number.clone(),
                        security_profile,
                        aor: b.aor.clone(),
                        contact: b.key.clone(),
                        path: b.path.clone(),
                        expires: b.expires_at.saturating_duration_since(now).as_secs(),
                        connection: b.origin.connection,
                        transport: b.origin.transport,
                        peer: b.origin.peer.to_string(),
                    })
            })
            .collect();
        out.sort_by(|a, b| (&a.user, &a.contact).cmp(&(&b.user, &b.contact)));
        out
    }

    /// Number of live bindings (expired ones not yet swept included).
    pub fn binding_count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    /// The user directory, for the admin API's changes (busy flags).
    pub(crate) fn users_mut(&mut self) -> &mut UserDirectory {
        &mut self.users
    }

    /// Where requests to `name` go: its most recent live binding.
    pub(crate) fn target(&self, now: Instant, name: &str) -> Option<Target> {
        let b = self
            .bindings
            .get(name)
            .into_iter()
            .flatten()
            .filter(|b| b.expires_at > now)
            .max_by_key(|b| b.registered_at)?;
        Some(Target {
            contact: b.contact.uri.clone(),
            path: b.path.clone(),
            connection: b.origin.connection,
            aor: b.aor.clone(),
            domain: b.domain.clone(),
        })
    }

    /// `true` when `name` holds a live binding registered over `connection`.
    pub(crate) fn registered_on(&self, now: Instant, name: &str, connection: ConnectionId) -> bool {
        self.bindings
            .get(name)
            .into_iter()
            .flatten()
            .any(|b| b.expires_at > now && b.origin.connection == connection)
    }

    /// Checks the Proxy-Authorization of a request from `user` (digest over its method),
    /// or returns the 407 challenge / 403 refusal to answer it with.
    pub(crate) fn authorize_request(
        &mut self,
        now: Instant,
        req: &Request,
        user: &User,
    ) -> Result<(), Response> {
        let realm = self.auth.realm().to_owned();
        let creds = req
            .headers
            .auth(&HeaderName::ProxyAuthorization)
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.is_digest() && a.param("realm") == Some(realm.as_str()));
        let challenge = |r: &mut Registrar, stale: bool| {
            r.counters.challenges += 1;
            let value = r.auth.challenge(now, stale);
            respond(
                req,
                407,
                "Proxy Authentication Required",
                vec![(HeaderName::ProxyAuthenticate, value)],
            )
        };
        let Some(creds) = creds else {
            return Err(challenge(self, false));
        };
        if creds.param("username") != Some(user.name.as_str()) {
            self.counters.auth_failures += 1;
            return Err(respond(
                req,
                403,
                "Forbidden (username does not match the caller)",
                vec![],
            ));
        }
        match self.verify(now, req, &creds, user) {
            DigestVerdict::Authenticated => Ok(()),
            DigestVerdict::Stale => Err(challenge(self, true)),
            DigestVerdict::WrongResponse => {
                self.counters.auth_failures += 1;
                Err(respond(req, 403, "Forbidden", vec![]))
            }
            _ => Err(challenge(self, false)),
        }
    }

    /// Builds `method` (OPTIONS or MESSAGE) towards `user`'s most recent binding: the
    /// Request-URI is its Contact, the Route set its stored Path, and it is to be written
    /// on the connection the REGISTER came on. `local_addr` tells that connection's local
    /// address (for Via), `None` when it has closed; `body` is a MESSAGE's text/plain body.
    pub fn outbound_request(
        &mut self,
        now: Instant,
        method: &str,
        user: &str,
        body: Option<&str>,
        local_addr: impl FnOnce(ConnectionId) -> Option<SocketAddr>,
    ) -> Result<Outbound, UcmSimError> {
        let method = match method {
            "OPTIONS" => Method::Options,
            "MESSAGE" => Method::Message,
            other => return Err(UcmSimError::UnsupportedMethod(other.to_owned())),
        };
        let u = self
            .users
            .find(user)
            .ok_or_else(|| UcmSimError::UnknownUser(user.to_owned()))?;
        let name = u.name.clone();
        let binding = self
            .bindings
            .get(&name)
            .into_iter()
            .flatten()
            .filter(|b| b.expires_at > now)
            .max_by_key(|b| b.registered_at)
            .ok_or_else(|| UcmSimError::NotRegistered(name.clone()))?
            .clone();
        let sent_by = local_addr(binding.origin.connection)
            .ok_or(UcmSimError::ConnectionClosed(binding.origin.connection))?;
        let bad = |reason: String| UcmSimError::BadBinding {
            user: name.clone(),
            reason,
        };
        self.outbound_seq += 1;
        let seq = self.outbound_seq;
        let branch = format!("{MAGIC_COOKIE}ucm{seq:x}");
        let mut req = Request::new(method.clone(), binding.contact.uri.clone());
        let h = &mut req.headers;
        let via = format!(
            "SIP/2.0/{} {sent_by};branch={branch}",
            binding.origin.transport.via_token()
        );
        let aor_host = &binding.domain;
        let headers = [
            (HeaderName::Via, via),
            (HeaderName::MaxForwards, "70".to_owned()),
            (
                HeaderName::From,
                format!("<sip:ucm-sim@{aor_host}>;tag=ucm{seq:x}"),
            ),
            (HeaderName::To, format!("<{}>", binding.aor)),
            (HeaderName::CallId, format!("ucm-sim-{seq:x}@{aor_host}")),
            (HeaderName::CSeq, format!("1 {method}")),
        ];
        for (name, value) in headers {
            h.push(name, value).map_err(|e| bad(e.to_string()))?;
        }
        for p in &binding.path {
            h.push(HeaderName::Route, p.clone())
                .map_err(|e| bad(e.to_string()))?;
        }
        match body {
            Some(text) if method == Method::Message => req
                .set_body(Some("text/plain"), text.as_bytes().to_vec())
                .map_err(|e| bad(e.to_string()))?,
            _ => req
                .headers
                .push(HeaderName::ContentLength, "0")
                .map_err(|e| bad(e.to_string()))?,
        }
        Ok(Outbound {
            request: req,
            connection: binding.origin.connection,
            branch,
        })
    }
}

fn host_text(host: &Host) -> String {
    match host {
        Host::Domain(d) => d.to_ascii_lowercase(),
        other => other.to_string(),
    }
}

/// The response to `req` with `extra` headers, Content-Length last (as Unified CM writes it).
pub(crate) fn respond(
    req: &Request,
    status: u16,
    reason: &str,
    extra: Vec<(HeaderName, String)>,
) -> Response {
    let mut r = req.make_response(status, reason, Some(&to_tag(req)));
    r.headers.remove_all(&HeaderName::ContentLength);
    for (name, value) in extra {
        // Values come from parsed, validated parts: a CR/LF cannot occur, so push cannot fail.
        let _ = r.headers.push(name, value);
    }
    let _ = r.headers.push(HeaderName::ContentLength, "0");
    r
}

/// A To tag stable for one request (retransmissions get the same one): FNV-1a over the
/// Call-ID and the From tag.
pub(crate) fn to_tag(req: &Request) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let call_id = req.headers.first(&HeaderName::CallId).unwrap_or("");
    let from = req.headers.first(&HeaderName::From).unwrap_or("");
    for b in call_id.bytes().chain(from.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A best-effort 400/513 for bytes that did not parse: the Via, From, To, Call-ID and
/// CSeq lines of the last request head found in `raw` are copied when they are valid on
/// their own (a bad CSeq becomes `0 <method>`), so the sender can match the answer. `None`
/// when no valid response can be made (no request head, no valid Via): then there is
/// nobody to answer.
pub fn refusal_for_unparsed(raw: &[u8], status: u16, why: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(raw);
    let head = text
        .split("\r\n\r\n")
        .filter(|block| {
            block
                .lines()
                .next()
                .is_some_and(|l| l.trim_end().ends_with("SIP/2.0"))
        })
        .last()?;
    let mut lines = head.lines();
    let method = lines.next()?.split(' ').next()?.to_owned();
    let reason = if status == 513 {
        "Message Too Large"
    } else {
        "Bad Request"
    };
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    let mut cseq = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let canonical = match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" if Via::parse(value).is_ok() => "Via",
            "from" | "f" if NameAddr::parse(value).is_ok() => "From",
            "to" | "t" if NameAddr::parse(value).is_ok() => "To",
            "call-id" | "i" if !value.is_empty() => "Call-ID",
            "cseq" => {
                cseq = CSeq::parse(value).ok();
                continue;
            }
            _ => continue,
        };
        out.push_str(&format!("{canonical}: {value}\r\n"));
    }
    let cseq = cseq.map_or_else(|| format!("0 {method}"), |c| c.to_string());
    let why: String = why
        .chars()
        .map(|c| if c == '"' || c.is_control() { '\'' } else { c })
        .take(200)
        .collect();
    out.push_str(&format!(
        "CSeq: {cseq}\r\nWarning: 399 ucm-sim \"{why}\"\r\nContent-Length: 0\r\n\r\n"
    ));
    edgeway_sip::Message::parse(out.as_bytes())
        .is_ok()
        .then(|| out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::client_authorization;
    use edgeway_sip::Message;

    const ORIGIN: Origin = Origin {
        connection: 7,
        transport: Transport::Tls,
        peer: SocketAddr::V4(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::LOCALHOST,
            40000,
        )),
    };

    fn registrar(now: Instant) -> Registrar {
        let users = UserDirectory::new(vec![User {
            name: "alice".into(),
            password: "pw".into(),
            number: "1001".into(),
            security_profile: SecurityProfile::Secure,
            ..User::default()
        }])
        .expect("users");
        let config = RegistrarConfig {
            domains: vec!["example.com".into()],
            ..RegistrarConfig::default()
        };
        Registrar::new(config, users, [1; 32], now)
    }

    /// A REGISTER from alice; `extra` is inserted as header lines.
    fn register(aor_user: &str, domain: &str, cseq: u32, extra: &str) -> Request {
        let text = format!(
            "REGISTER sip:{domain} SIP/2.0\r\n\
             Via: SIP/2.0/TLS 127.0.0.1:40000;branch=z9hG4bKr{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{aor_user}@{domain}>;tag=f1\r\n\
             To: <sip:{aor_user}@{domain}>\r\n\
             Call-ID: reg-1\r\n\
             CSeq: {cseq} REGISTER\r\n\
             {extra}\
             Content-Length: 0\r\n\r\n"
        );
        match Message::parse(text.as_bytes()).expect("test REGISTER parses") {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!("a request"),
        }
    }

    /// Sends `req` unauthenticated, then answers the challenge with `password`.
    fn with_auth(r: &mut Registrar, now: Instant, req: Request, password: &str) -> Response {
        let first = r.handle_request(now, &req, &ORIGIN).expect("a response");
        assert_eq!(first.status, 401, "{first:?}");
        let ch = first
            .headers
            .auth(&HeaderName::WwwAuthenticate)
            .expect("challenge parses")
            .remove(0);
        authed(r, now, req, &ch, password, 1)
    }

    fn authed(
        r: &mut Registrar,
        now: Instant,
        mut req: Request,
        challenge: &Auth,
        password: &str,
        nc: u32,
    ) -> Response {
        let value = client_authorization(
            challenge,
            "alice",
            password,
            "REGISTER",
            &req.uri.to_string(),
            nc,
            "cn",
        )
        .expect("challenge has realm and nonce");
        req.headers
            .push(HeaderName::Authorization, value)
            .expect("header");
        r.handle_request(now, &req, &ORIGIN).expect("a response")
    }

    /// alice's REGISTER with `extra` headers, authenticated with the right password.
    fn alice(r: &mut Registrar, now: Instant, cseq: u32, extra: &str) -> Response {
        with_auth(r, now, register("alice", "example.com", cseq, extra), "pw")
    }

    fn contacts(resp: &Response) -> Vec<String> {
        resp.headers
            .values(&HeaderName::Contact)
            .expect("contacts")
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    const CONTACT: &str =
        "Contact: <sip:alice@127.0.0.1:40000;transport=tls>;+sip.instance=\"<urn:uuid:1>\"\r\n";

    #[test]
    fn challenge_then_200_with_contacts_and_path() {
        let now = Instant::now();
        let mut r = registrar(now);
        let req = register(
            "1001",
            "example.com",
            1,
            &format!(
                "{CONTACT}Expires: 600\r\nPath: <sip:core.example.com;lr>\r\nSupported: path\r\n"
            ),
        );
        let ok = with_auth(&mut r, now, req, "pw");
        assert_eq!(ok.status, 200, "{ok:?}");
        assert_eq!(
            contacts(&ok),
            ["<sip:alice@127.0.0.1:40000;transport=tls>;+sip.instance=\"<urn:uuid:1>\";expires=600"]
        );
        assert_eq!(
            ok.headers.first(&HeaderName::Path),
            Some("<sip:core.example.com;lr>")
        );
        assert!(ok.headers.to_addr().expect("To").tag().is_some());
        let b = r.bindings(now);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].user, "alice");
        assert_eq!(b[0].path, ["<sip:core.example.com;lr>"]);
        assert_eq!(b[0].connection, 7);
        assert_eq!(r.counters().challenges, 1);
        assert_eq!(r.counters().bindings_added, 1);
    }

    #[test]
    fn refusals_unknown_user_domain_wrong_password() {
        let now = Instant::now();
        let mut r = registrar(now);
        let resp = r
            .handle_request(now, &register("carol", "example.com", 1, CONTACT), &ORIGIN)
            .expect("response");
        assert_eq!(resp.status, 404);
        assert!(resp.headers.first(&HeaderName::Warning).is_some());
        let resp = r
            .handle_request(now, &register("alice", "example.org", 1, CONTACT), &ORIGIN)
            .expect("response");
        assert_eq!(
            (resp.status, resp.reason.as_str()),
            (403, "Domain Not Served")
        );
        let resp = with_auth(
            &mut r,
            now,
            register("alice", "example.com", 1, CONTACT),
            "nope",
        );
        assert_eq!(resp.status, 403);
        let c = r.counters();
        assert_eq!(
            (c.unknown_users, c.unknown_domains, c.auth_failures),
            (1, 1, 1)
        );
        assert_eq!(r.binding_count(), 0);
    }

    #[test]
    fn expires_rules_refresh_removal_and_expiry() {
        let now = Instant::now();
        let mut r = registrar(now);
        let brief = alice(&mut r, now, 1, &format!("{CONTACT}Expires: 10\r\n"));
        assert_eq!(brief.status, 423);
        assert_eq!(brief.headers.first(&HeaderName::MinExpires), Some("60"));
        let long = alice(&mut r, now, 2, &format!("{CONTACT}Expires: 99999\r\n"));
        assert_eq!(long.status, 200);
        assert!(contacts(&long)[0].ends_with(";expires=3600"), "{long:?}");
        // A refresh on the same Call-ID needs a higher CSeq.
        let stale_cseq = alice(&mut r, now, 2, CONTACT);
        assert_eq!(stale_cseq.status, 500);
        let refresh = alice(
            &mut r,
            now + Duration::from_secs(100),
            3,
            &format!("{CONTACT}Expires: 120\r\n"),
        );
        assert_eq!(refresh.status, 200);
        assert_eq!(r.counters().bindings_refreshed, 1);
        r.expire(now + Duration::from_secs(219));
        assert_eq!(r.binding_count(), 1);
        r.expire(now + Duration::from_secs(221));
        assert_eq!(r.binding_count(), 0);
        assert_eq!(r.counters().bindings_expired, 1);

        let t = now + Duration::from_secs(230);
        let again = alice(&mut r, t, 4, CONTACT);
        assert_eq!(again.status, 200);
        let removal = alice(&mut r, t, 5, "Contact: *\r\nExpires: 0\r\n");
        assert_eq!(removal.status, 200);
        assert!(contacts(&removal).is_empty());
        assert_eq!(r.binding_count(), 0);
        let bad_star = alice(&mut r, t, 6, "Contact: *\r\n");
        assert_eq!(bad_star.status, 400);
        let zero = alice(&mut r, t, 7, &format!("{CONTACT}Expires: 0\r\n"));
        assert_eq!(zero.status, 200);
        assert_eq!(r.counters().bindings_removed, 1);
    }

    #[test]
    fn stale_nonce_and_replay_get_a_new_challenge() {
        let now = Instant::now();
        let mut r = registrar(now);
        let req = register("alice", "example.com", 1, CONTACT);
        let first = r.handle_request(now, &req, &ORIGIN).expect("response");
        let ch = first
            .headers
            .auth(&HeaderName::WwwAuthenticate)
            .expect("challenge")
            .remove(0);
        assert_eq!(authed(&mut r, now, req.clone(), &ch, "pw", 1).status, 200);
        let replay = authed(
            &mut r,
            now,
            register("alice", "example.com", 2, CONTACT),
            &ch,
            "pw",
            1,
        );
        assert_eq!(replay.status, 401);
        assert_eq!(r.counters().replays, 1);
        let later = now + Duration::from_secs(400);
        let stale = authed(
            &mut r,
            later,
            register("alice", "example.com", 3, CONTACT),
            &ch,
            "pw",
            2,
        );
        assert_eq!(stale.status, 401);
        let www = stale
            .headers
            .first(&HeaderName::WwwAuthenticate)
            .expect("challenge");
        assert!(www.contains("stale=true"), "{www}");
    }

    #[test]
    fn secure_profile_over_tcp_refused_when_tls_is_required() {
        let now = Instant::now();
        let mut r = registrar(now);
        r.config.require_tls_for_secure = true;
        let tcp = Origin {
            transport: Transport::Tcp,
            ..ORIGIN
        };
        let resp = r
            .handle_request(now, &register("alice", "example.com", 1, CONTACT), &tcp)
            .expect("response");
        assert_eq!(
            (resp.status, resp.reason.as_str()),
            (403, "Secure Profile Requires TLS")
        );
        assert_eq!(r.counters().profile_mismatches, 1);
        // Over TLS (ORIGIN) the same user is challenged as usual.
        assert_eq!(alice(&mut r, now, 2, CONTACT).status, 200);
        assert_eq!(r.bindings(now)[0].security_profile, SecurityProfile::Secure);
    }

    #[test]
    fn options_answered_other_methods_refused() {
        let now = Instant::now();
        let mut r = registrar(now);
        let text = "OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKo\r\nMax-Forwards: 70\r\n\
            From: <sip:a@example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: o\r\n\
            CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let opt = match Message::parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("OPTIONS parses: {other:?}"),
        };
        assert_eq!(
            r.handle_request(now, &opt, &ORIGIN).map(|r| r.status),
            Some(200)
        );
        let invite = text.replace("OPTIONS", "INVITE");
        let Ok(Message::Request(inv)) = Message::parse(invite.as_bytes()) else {
            panic!("INVITE parses");
        };
        assert_eq!(
            r.handle_request(now, &inv, &ORIGIN).map(|r| r.status),
            Some(405)
        );
    }

    #[test]
    fn outbound_request_follows_path_to_the_registering_connection() {
        let now = Instant::now();
        let mut r = registrar(now);
        let req = register(
            "alice",
            "example.com",
            1,
            &format!("{CONTACT}Path: <sip:core.example.com;lr>, <sip:edge.example.com;lr>\r\n"),
        );
        assert_eq!(with_auth(&mut r, now, req, "pw").status, 200);
        let local: SocketAddr = "127.0.0.1:5061".parse().expect("addr");
        let out = r
            .outbound_request(now, "MESSAGE", "1001", Some("hi"), |id| {
                assert_eq!(id, 7);
                Some(local)
            })
            .expect("registered");
        assert_eq!(out.connection, 7);
        let text = String::from_utf8(out.request.to_bytes()).expect("utf8");
        assert!(
            text.starts_with("MESSAGE sip:alice@127.0.0.1:40000;transport=tls SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Route: <sip:core.example.com;lr>\r\nRoute: <sip:edge.example.com;lr>\r\n"
            ),
            "{text}"
        );
        assert!(text.contains(&format!(
            "Via: SIP/2.0/TLS 127.0.0.1:5061;branch={}",
            out.branch
        )));
        assert!(text.ends_with("\r\n\r\nhi"), "{text}");
        assert!(Message::parse(text.as_bytes()).is_ok());
        let closed = r.outbound_request(now, "OPTIONS", "alice", None, |_| None);
        assert!(matches!(closed, Err(UcmSimError::ConnectionClosed(7))));
        assert!(matches!(
            r.outbound_request(now, "INVITE", "alice", None, |_| Some(local)),
            Err(UcmSimError::UnsupportedMethod(_))
        ));
    }

    #[test]
    fn unparsed_bytes_get_a_matching_400() {
        let raw = b"REGISTER sip:x SIP/2.0\r\nv: SIP/2.0/TCP h;branch=z9hG4bKb\r\nf: <sip:a@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: c\r\nCSeq: one REGISTER\r\n\r\n";
        let out = refusal_for_unparsed(raw, 400, "CSeq: \"bad\"").expect("has a Via");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.starts_with("SIP/2.0 400 Bad Request\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKb\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nCSeq: 0 REGISTER\r\n"), "{text}");
        assert!(
            text.contains("Warning: 399 ucm-sim \"CSeq: 'bad'\""),
            "{text}"
        );
        assert!(refusal_for_unparsed(b"garbage\r\n\r\n", 400, "x").is_none());
    }
}
