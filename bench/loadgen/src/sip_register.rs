//! One simulated SIP client's registration, sans-IO: it writes REGISTER requests and reads
//! the responses the caller hands it, answering a digest challenge (RFC 3261 §22, RFC 2617
//! MD5 with `qop=auth` and a nonce count) and a 423 Interval Too Brief, and reports when
//! the binding is granted or refused. The caller owns the connection, the clock and the
//! timeouts ([`crate::sip_load`] drives it over TLS).
//!
//! Every message goes through edgeway-sip: requests are built as [`Request`]s and
//! serialized by it, responses arrive parsed by its [`edgeway_sip::StreamFramer`].

use std::fmt;
use std::net::SocketAddr;

use edgeway_sip::{Auth, ContactList, HeaderName, Method, ParseError, Request, Response, Uri};
use md5::{Digest as _, Md5};
use rand::RngCore;

/// Who a client registers as.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// User part of the address of record and the digest username.
    pub user: String,
    /// Digest password.
    pub password: String,
    /// Domain of the address of record, also the Request-URI host.
    pub domain: String,
}

impl Identity {
    /// Generated user number `n`: `<user_prefix><n>` with password `<password_prefix><n>`,
    /// `n` zero-padded to `digits` (ucm-sim's `--generate-users` naming).
    pub fn numbered(
        user_prefix: &str,
        password_prefix: &str,
        digits: usize,
        domain: &str,
        n: usize,
    ) -> Identity {
        Identity {
            user: format!("{user_prefix}{n:0digits$}"),
            password: format!("{password_prefix}{n:0digits$}"),
            domain: domain.to_owned(),
        }
    }
}

impl fmt::Debug for Identity {
    // The password stays out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Why a registration did not succeed: the causes the load report counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A final response other than 2xx, 401/407 (answered) or 423 (answered once).
    #[error("registrar answered {status} {reason}")]
    Status {
        /// Status code.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
    /// The registrar challenged again the credentials it had just challenged for (wrong
    /// password or unknown user).
    #[error("credentials rejected: {status} again after answering the challenge for this nonce")]
    CredentialsRejected {
        /// 401 or 407.
        status: u16,
    },
    /// A challenge this client cannot answer.
    #[error("unsupported challenge: {0}")]
    UnsupportedChallenge(String),
    /// A response that could not be interpreted (missing or malformed headers).
    #[error("malformed response: {0}")]
    BadResponse(String),
    /// 423 answered once already, or without a usable Min-Expires.
    #[error("423 Interval Too Brief that raising Expires did not satisfy")]
    IntervalTooBrief,
}

impl RegisterError {
    /// A short stable label for counting (`status-403`, `credentials-rejected`, ...).
    pub fn label(&self) -> String {
        match self {
            RegisterError::Status { status, .. } => format!("status-{status}"),
            RegisterError::CredentialsRejected { status } => {
                format!("credentials-rejected-{status}")
            }
            RegisterError::UnsupportedChallenge(_) => "unsupported-challenge".into(),
            RegisterError::BadResponse(_) => "bad-response".into(),
            RegisterError::IntervalTooBrief => "interval-too-brief".into(),
        }
    }
}

impl From<ParseError> for RegisterError {
    fn from(e: ParseError) -> Self {
        RegisterError::BadResponse(e.to_string())
    }
}

/// What the caller does after handing a response to [`RegisterClient::handle_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes (the next REGISTER of the same registration) and keep reading.
    Send(Vec<u8>),
    /// A provisional or stray response: keep reading.
    Wait,
    /// The binding is in place for this many seconds.
    Registered {
        /// Expiry the registrar granted.
        expires: u32,
    },
}

/// A digest challenge as last received.
#[derive(Debug, Clone)]
struct Challenge {
    header: HeaderName,
    realm: String,
    nonce: String,
    opaque: Option<String>,
    qop_auth: bool,
    algorithm: Option<String>,
    nc: u32,
}

/// One client's registration state: Call-ID, tags, CSeq and the current challenge persist
/// across refreshes, as a real user agent keeps them (RFC 3261 §10.2.4).
#[derive(Debug)]
pub struct RegisterClient {
    identity: Identity,
    local: SocketAddr,
    call_id: String,
    from_tag: String,
    cseq: u32,
    expires: u32,
    branch: String,
    challenge: Option<Challenge>,
    /// Whether the request in flight carried credentials for the current challenge.
    answered_challenge: bool,
    raised_expires: bool,
    /// Via transport (`TLS` through the edge, `TCP` straight to a registrar).
    transport: &'static str,
}

fn random_hex(rng: &mut impl RngCore, bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rng.fill_bytes(&mut b);
    hex::encode(b)
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The RFC 2617 digest `response` value (MD5; with `qop=auth` when `nc_cnonce` is given).
pub fn digest_response(
    identity: &Identity,
    realm: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc_cnonce: Option<(u32, &str)>,
) -> String {
    let ha1 = md5_hex(&[&identity.user, realm, &identity.password]);
    let ha2 = md5_hex(&[method, uri]);
    match nc_cnonce {
        Some((nc, cnonce)) => md5_hex(&[&ha1, nonce, &format!("{nc:08x}"), cnonce, "auth", &ha2]),
        None => md5_hex(&[&ha1, nonce, &ha2]),
    }
}

impl RegisterClient {
    /// A client for `identity` whose connection's local address is `local` (it appears in
    /// Via and Contact), asking for `expires` seconds.
    pub fn new(
        identity: Identity,
        local: SocketAddr,
        expires: u32,
        rng: &mut impl RngCore,
    ) -> Self {
        RegisterClient {
            call_id: format!("{}@{}", random_hex(rng, 12), local.ip()),
            from_tag: random_hex(rng, 6),
            identity,
            local,
            cseq: 0,
            expires,
            branch: String::new(),
            challenge: None,
            answered_challenge: false,
            raised_expires: false,
            transport: "TLS",
        }
    }

    /// The same client on plain TCP (Via `SIP/2.0/TCP`, Contact `transport=tcp`), for
    /// simulated inside phones registering straight at the registrar.
    pub fn over_tcp(mut self) -> Self {
        self.transport = "TCP";
        self
    }

    /// Starts a registration (initial or refresh): the first REGISTER to send. A refresh
    /// reuses the last challenge with the next nonce count, as clients do, so a registrar
    /// that keeps its nonces answers 200 at once; the first one never carries credentials,
    /// so its latency includes the challenge round trip.
    pub fn start(&mut self, rng: &mut impl RngCore) -> Result<Vec<u8>, RegisterError> {
        self.raised_expires = false;
        self.answered_challenge = false;
        self.request(rng)
    }

    /// Starts removing the binding (Expires: 0).
    pub fn start_unregister(&mut self, rng: &mut impl RngCore) -> Result<Vec<u8>, RegisterError> {
        self.expires = 0;
        self.start(rng)
    }

    fn request_uri(&self) -> String {
        format!("sip:{}", self.identity.domain)
    }

    fn request(&mut self, rng: &mut impl RngCore) -> Result<Vec<u8>, RegisterError> {
        self.cseq += 1;
        self.branch = format!("z9hG4bK{}", random_hex(rng, 10));
        let ruri = self.request_uri();
        let uri = Uri::parse(&ruri)?;
        let mut req = Request::new(Method::Register, uri);
        let aor = format!("<sip:{}@{}>", self.identity.user, self.identity.domain);
        let h = &mut req.headers;
        h.push(
            HeaderName::Via,
            format!(
                "SIP/2.0/{} {};branch={};rport",
                self.transport, self.local, self.branch
            ),
        )?;
        h.push(HeaderName::MaxForwards, "70")?;
        h.push(HeaderName::From, format!("{aor};tag={}", self.from_tag))?;
        h.push(HeaderName::To, aor)?;
        h.push(HeaderName::CallId, self.call_id.clone())?;
        h.push(HeaderName::CSeq, format!("{} REGISTER", self.cseq))?;
        h.push(
            HeaderName::Contact,
            format!(
                "<sip:{}@{};transport={}>",
                self.identity.user,
                self.local,
                self.transport.to_ascii_lowercase()
            ),
        )?;
        h.push(HeaderName::Expires, self.expires.to_string())?;
        h.push(HeaderName::Supported, "path")?;
        h.push(HeaderName::UserAgent, "edgeway-loadgen")?;
        if let Some(c) = self.challenge.as_mut() {
            c.nc += 1;
            let cnonce = random_hex(rng, 8);
            let qop = c.qop_auth.then_some((c.nc, cnonce.as_str()));
            let response =
                digest_response(&self.identity, &c.realm, "REGISTER", &ruri, &c.nonce, qop);
            let mut v = format!(
                "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm=MD5",
                self.identity.user, c.realm, c.nonce, ruri, response
            );
            if let Some(o) = &c.opaque {
                v.push_str(&format!(", opaque=\"{o}\""));
            }
            if c.qop_auth {
                v.push_str(&format!(", qop=auth, nc={:08x}, cnonce=\"{cnonce}\"", c.nc));
            }
            let name = if c.header == HeaderName::ProxyAuthenticate {
                HeaderName::ProxyAuthorization
            } else {
                HeaderName::Authorization
            };
            h.push(name, v)?;
        }
        h.push(HeaderName::ContentLength, "0")?;
        Ok(req.to_bytes())
    }

    /// Whether `resp` answers the request in flight (same top Via branch and CSeq).
    fn matches(&self, resp: &Response) -> bool {
        let branch_ok = resp
            .headers
            .top_via()
            .ok()
            .is_some_and(|v| v.branch() == Some(self.branch.as_str()));
        let cseq_ok = resp
            .headers
            .cseq()
            .ok()
            .is_some_and(|c| c.seq == self.cseq && c.method == Method::Register);
        branch_ok && cseq_ok
    }

    /// Takes one response read from the connection.
    pub fn handle_response(
        &mut self,
        resp: &Response,
        rng: &mut impl RngCore,
    ) -> Result<Step, RegisterError> {
        if !self.matches(resp) || resp.is_provisional() {
            return Ok(Step::Wait);
        }
        match resp.status {
            200..=299 => Ok(Step::Registered {
                expires: self.granted_expires(resp),
            }),
            401 | 407 => {
                let header = if resp.status == 401 {
                    HeaderName::WwwAuthenticate
                } else {
                    HeaderName::ProxyAuthenticate
                };
                let challenge = self.take_challenge(resp, header)?;
                let stale = challenge.1;
                if self.answered_challenge && !stale {
                    return Err(RegisterError::CredentialsRejected {
                        status: resp.status,
                    });
                }
                self.challenge = Some(challenge.0);
                self.answered_challenge = true;
                Ok(Step::Send(self.request(rng)?))
            }
            423 => {
                let min = resp
                    .headers
                    .first(&HeaderName::MinExpires)
                    .and_then(|v| v.trim().parse::<u32>().ok());
                match min {
                    Some(m) if !self.raised_expires && m > self.expires => {
                        self.raised_expires = true;
                        self.expires = m;
                        Ok(Step::Send(self.request(rng)?))
                    }
                    _ => Err(RegisterError::IntervalTooBrief),
                }
            }
            status => Err(RegisterError::Status {
                status,
                reason: resp.reason.clone(),
            }),
        }
    }

    /// Parses the Digest challenge of a 401/407; the flag is `stale=true`.
    fn take_challenge(
        &self,
        resp: &Response,
        header: HeaderName,
    ) -> Result<(Challenge, bool), RegisterError> {
        let auths: Vec<Auth> = resp.headers.auth(&header)?;
        let Some(a) = auths.into_iter().find(Auth::is_digest) else {
            return Err(RegisterError::UnsupportedChallenge(format!(
                "{} {} without a Digest challenge",
                resp.status, resp.reason
            )));
        };
        let algorithm = a.param("algorithm").map(str::to_owned);
        if let Some(alg) = &algorithm {
            if !alg.eq_ignore_ascii_case("MD5") {
                return Err(RegisterError::UnsupportedChallenge(format!(
                    "algorithm {alg} (only MD5 is implemented)"
                )));
            }
        }
        let qop_auth = match a.param("qop") {
            None => false,
            Some(q) if q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) => true,
            Some(q) => {
                return Err(RegisterError::UnsupportedChallenge(format!(
                    "qop {q} (only auth is implemented)"
                )))
            }
        };
        let (Some(realm), Some(nonce)) = (a.param("realm"), a.param("nonce")) else {
            return Err(RegisterError::BadResponse(
                "Digest challenge without realm or nonce".into(),
            ));
        };
        let stale = a
            .param("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true"));
        Ok((
            Challenge {
                header,
                realm: realm.to_owned(),
                nonce: nonce.to_owned(),
                opaque: a.param("opaque").map(str::to_owned),
                qop_auth,
                algorithm,
                nc: 0,
            },
            stale,
        ))
    }

    /// The expiry of this client's binding in a 2xx: its Contact's `expires` parameter,
    /// else the Expires header, else what was asked.
    fn granted_expires(&self, resp: &Response) -> u32 {
        let ours = format!("{}@{}", self.identity.user, self.local);
        if let Ok(ContactList::Addresses(list)) = resp.headers.contacts() {
            let mine = list
                .iter()
                .find(|c| c.uri.to_string().contains(&ours))
                .or(list.first());
            if let Some(e) = mine.and_then(|c| c.expires()) {
                return e;
            }
        }
        match resp.headers.expires() {
            Ok(Some(e)) => e,
            _ => self.expires,
        }
    }

    /// The identity this client registers.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The digest algorithm the last challenge named (None: not given, MD5 implied).
    pub fn challenge_algorithm(&self) -> Option<&str> {
        self.challenge.as_ref().and_then(|c| c.algorithm.as_deref())
    }

    /// Answers a request the registrar side sent down the connection (OPTIONS, NOTIFY...):
    /// 200 OK, or nothing for ACK.
    pub fn answer_request(req: &Request) -> Option<Vec<u8>> {
        (req.method != Method::Ack).then(|| req.make_response(200, "OK", None).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeway_sip::Message;
    use rand::rngs::mock::StepRng;

    fn ident(user: &str, password: &str) -> Identity {
        Identity {
            user: user.into(),
            password: password.into(),
            domain: "example.com".into(),
        }
    }

    #[test]
    fn rfc2617_digest_example() {
        // RFC 2617 §3.5 (GET /dir/index.html).
        let id = Identity {
            user: "Mufasa".into(),
            password: "Circle Of Life".into(),
            domain: String::new(),
        };
        let r = digest_response(
            &id,
            "testrealm@host.com",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some((1, "0a4f113b")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    fn parse_request(bytes: &[u8]) -> Request {
        match Message::parse(bytes).expect("own request parses") {
            Message::Request(r) => r,
            Message::Response(_) => panic!("expected a request"),
        }
    }

    fn respond(req: &Request, status: u16, extra: &[(&str, &str)]) -> Response {
        let mut r = req.make_response(status, "X", Some("t1"));
        for (n, v) in extra {
            r.headers
                .push(HeaderName::parse(n), *v)
                .expect("valid header");
        }
        r
    }

    #[test]
    fn challenge_answered_then_registered_then_refresh_counts_nonce() {
        let mut rng = StepRng::new(1, 7);
        let local: SocketAddr = "127.0.0.1:5555".parse().expect("addr");
        let mut c = RegisterClient::new(ident("alice", "pw"), local, 60, &mut rng);
        let r1 = parse_request(&c.start(&mut rng).expect("request"));
        assert!(!r1.headers.contains(&HeaderName::Authorization));
        let ch = "Digest realm=\"example.com\", nonce=\"abc\", qop=\"auth\", algorithm=MD5";
        let Step::Send(b) = c
            .handle_response(&respond(&r1, 401, &[("WWW-Authenticate", ch)]), &mut rng)
            .expect("challenge answered")
        else {
            panic!("expected a second REGISTER");
        };
        let r2 = parse_request(&b);
        let auth = &r2.headers.auth(&HeaderName::Authorization).expect("auth")[0];
        assert_eq!(auth.param("nc"), Some("00000001"));
        let expected = digest_response(
            &ident("alice", "pw"),
            "example.com",
            "REGISTER",
            "sip:example.com",
            "abc",
            Some((1, auth.param("cnonce").expect("cnonce"))),
        );
        assert_eq!(auth.param("response"), Some(expected.as_str()));
        assert_eq!(r2.headers.cseq().expect("cseq").seq, 2);
        let ok = respond(
            &r2,
            200,
            &[("Contact", "<sip:alice@127.0.0.1:5555>;expires=30")],
        );
        assert_eq!(
            c.handle_response(&ok, &mut rng).expect("200"),
            Step::Registered { expires: 30 }
        );
        // A refresh reuses the nonce with the next count, and a stray response is ignored.
        let r3 = parse_request(&c.start(&mut rng).expect("refresh"));
        let auth = &r3.headers.auth(&HeaderName::Authorization).expect("auth")[0];
        assert_eq!(auth.param("nc"), Some("00000002"));
        assert_eq!(
            c.handle_response(&respond(&r2, 200, &[]), &mut rng)
                .expect("stray"),
            Step::Wait
        );
    }

    #[test]
    fn second_challenge_for_same_nonce_is_rejected_credentials_but_stale_is_retried() {
        let mut rng = StepRng::new(3, 11);
        let local: SocketAddr = "127.0.0.1:5556".parse().expect("addr");
        let mut c = RegisterClient::new(ident("bob", "wrong"), local, 60, &mut rng);
        let ch = "Digest realm=\"r\", nonce=\"n1\", qop=\"auth\"";
        let r1 = parse_request(&c.start(&mut rng).expect("request"));
        let Ok(Step::Send(b)) =
            c.handle_response(&respond(&r1, 401, &[("WWW-Authenticate", ch)]), &mut rng)
        else {
            panic!("expected an answer to the challenge");
        };
        let r2 = parse_request(&b);
        let stale = "Digest realm=\"r\", nonce=\"n2\", qop=\"auth\", stale=true";
        let Ok(Step::Send(b)) =
            c.handle_response(&respond(&r2, 401, &[("WWW-Authenticate", stale)]), &mut rng)
        else {
            panic!("stale nonce must be answered again");
        };
        let r3 = parse_request(&b);
        let err = c
            .handle_response(&respond(&r3, 401, &[("WWW-Authenticate", ch)]), &mut rng)
            .expect_err("wrong password");
        assert_eq!(err.label(), "credentials-rejected-401");
        let r4 = parse_request(&c.start(&mut rng).expect("again"));
        let err = c
            .handle_response(&respond(&r4, 403, &[]), &mut rng)
            .expect_err("403");
        assert_eq!(err.label(), "status-403");
    }

    #[test]
    fn interval_too_brief_raises_expires_once() {
        let mut rng = StepRng::new(5, 13);
        let local: SocketAddr = "127.0.0.1:5557".parse().expect("addr");
        let mut c = RegisterClient::new(ident("carol", "pw"), local, 5, &mut rng);
        let r1 = parse_request(&c.start(&mut rng).expect("request"));
        let Ok(Step::Send(b)) =
            c.handle_response(&respond(&r1, 423, &[("Min-Expires", "60")]), &mut rng)
        else {
            panic!("expected a REGISTER with Expires 60");
        };
        let r2 = parse_request(&b);
        assert_eq!(r2.headers.expires().expect("expires"), Some(60));
        let err = c
            .handle_response(&respond(&r2, 423, &[("Min-Expires", "120")]), &mut rng)
            .expect_err("only once");
        assert_eq!(err, RegisterError::IntervalTooBrief);
    }

    #[test]
    fn unsupported_algorithm_is_refused() {
        let mut rng = StepRng::new(5, 13);
        let local: SocketAddr = "127.0.0.1:5558".parse().expect("addr");
        let mut c = RegisterClient::new(ident("dave", "pw"), local, 60, &mut rng);
        let r1 = parse_request(&c.start(&mut rng).expect("request"));
        let ch = "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256";
        let err = c
            .handle_response(&respond(&r1, 401, &[("WWW-Authenticate", ch)]), &mut rng)
            .expect_err("refused");
        assert_eq!(err.label(), "unsupported-challenge");
    }
}
