//! HTTP digest authentication as a SIP registrar does it (RFC 2617 with `qop=auth`,
//! RFC 8760 for SHA-256), sans-IO: the caller passes `now` and the secret.
//!
//! Nonces are stateless until used: `<issued ms since start>.<serial>.<MAC>` (hex) where
//! the MAC is SHA-256 over the secret, the issue time, the serial and the realm (the serial
//! keeps two challenges in one millisecond apart), so a forged or foreign nonce is
//! recognised without a table and an old one is reported stale (`stale=true`, RFC 2617
//! §3.2.1) after [`DigestConfig::nonce_lifetime`]. Only nonces that authenticated a request
//! are remembered, with the highest nonce-count seen, to refuse replays; they are
//! forgotten once expired ([`DigestAuthenticator::expire`]).
//!
//! Challenges offer MD5 only (what Jabber, sipp and baresip speak); a response computed
//! with SHA-256 is verified too. The `uri` parameter enters the hash but is not compared
//! with the Request-URI: sipp puts the remote address there, and a proxy in front may
//! rewrite the Request-URI.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use edgeway_sip::Auth;
use md5::Md5;
use sha2::{Digest, Sha256};

/// Digest settings.
#[derive(Debug, Clone)]
pub struct DigestConfig {
    /// The realm in challenges (Unified CM uses `ccmsipline`).
    pub realm: String,
    /// How long a nonce is accepted before it is answered with `stale=true`.
    pub nonce_lifetime: Duration,
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            realm: "ccmsipline".to_owned(),
            nonce_lifetime: Duration::from_secs(300),
        }
    }
}

/// The outcome of checking one set of credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestVerdict {
    /// The response is right and the nonce-count is new.
    Authenticated,
    /// The response is right but the nonce expired: challenge again with `stale=true`.
    Stale,
    /// The nonce was not issued by this server (or belongs to another realm).
    UnknownNonce,
    /// The nonce-count was already used with this nonce: a replay.
    Replayed,
    /// The credentials are well formed but the response is wrong (wrong password).
    WrongResponse,
    /// A parameter is missing or malformed (the reason says which).
    Malformed(&'static str),
}

/// Issues challenges and verifies credentials; see the module docs.
#[derive(Debug)]
pub struct DigestAuthenticator {
    config: DigestConfig,
    secret: [u8; 32],
    epoch: Instant,
    /// Nonce -> highest nonce-count that authenticated with it.
    used: HashMap<String, u32>,
    serial: u64,
}

/// The hash functions a digest response may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    fn hex(self, parts: &[&str]) -> String {
        let joined = parts.join(":");
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(joined.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(joined.as_bytes())),
        }
    }
}

impl DigestAuthenticator {
    /// An authenticator whose nonce times count from `now`; `secret` keys the nonce MAC
    /// (pass random bytes: nonces from another instance must not verify).
    pub fn new(config: DigestConfig, secret: [u8; 32], now: Instant) -> Self {
        DigestAuthenticator {
            config,
            secret,
            epoch: now,
            used: HashMap::new(),
            serial: 0,
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.config.realm
    }

    /// A `WWW-Authenticate` value with a fresh nonce.
    pub fn challenge(&mut self, now: Instant, stale: bool) -> String {
        let issued = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.serial += 1;
        let serial = self.serial;
        let nonce = format!("{issued:x}.{serial:x}.{}", self.nonce_mac(issued, serial));
        let stale = if stale { ", stale=true" } else { "" };
        format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"{stale}",
            self.config.realm
        )
    }

    fn nonce_mac(&self, issued: u64, serial: u64) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(issued.to_le_bytes());
        h.update(serial.to_le_bytes());
        h.update(self.config.realm.as_bytes());
        hex::encode(&h.finalize()[..16])
    }

    /// When `nonce` was issued by this authenticator, the time it was issued (ms since
    /// the epoch).
    fn nonce_issued(&self, nonce: &str) -> Option<u64> {
        let mut parts = nonce.splitn(3, '.');
        let (issued, serial, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let hex = |t: &str| {
            (!t.is_empty() && t.len() <= 16)
                .then(|| u64::from_str_radix(t, 16).ok())
                .flatten()
        };
        let (issued, serial) = (hex(issued)?, hex(serial)?);
        constant_time_eq(mac.as_bytes(), self.nonce_mac(issued, serial).as_bytes())
            .then_some(issued)
    }

    /// Checks `auth` (a Digest Authorization value) for a request of `method` from the
    /// user whose password is `password`. The caller has matched `username` to the user.
    pub fn verify(
        &mut self,
        now: Instant,
        method: &str,
        auth: &Auth,
        password: &str,
    ) -> DigestVerdict {
        use DigestVerdict::Malformed;
        if !auth.is_digest() {
            return Malformed("scheme is not Digest");
        }
        let (Some(username), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            auth.param("username"),
            auth.param("realm"),
            auth.param("nonce"),
            auth.param("uri"),
            auth.param("response"),
        ) else {
            return Malformed("username, realm, nonce, uri and response are required");
        };
        let algorithm = match auth.param("algorithm") {
            None => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
            Some(_) => return Malformed("algorithm is not MD5 or SHA-256"),
        };
        if !auth
            .param("qop")
            .is_some_and(|q| q.eq_ignore_ascii_case("auth"))
        {
            return Malformed("qop=auth is required (it was offered)");
        }
        let (Some(nc_text), Some(cnonce)) = (auth.param("nc"), auth.param("cnonce")) else {
            return Malformed("nc and cnonce are required with qop=auth");
        };
        let Some(nc) = (nc_text.len() == 8)
            .then(|| u32::from_str_radix(nc_text, 16).ok())
            .flatten()
            .filter(|&n| n > 0)
        else {
            return Malformed("nc is not 8 hex digits above zero");
        };
        if realm != self.config.realm {
            return DigestVerdict::UnknownNonce;
        }
        let Some(issued) = self.nonce_issued(nonce) else {
            return DigestVerdict::UnknownNonce;
        };
        let ha1 = algorithm.hex(&[username, realm, password]);
        let ha2 = algorithm.hex(&[method, uri]);
        let expected = algorithm.hex(&[&ha1, nonce, nc_text, cnonce, "auth", &ha2]);
        if !constant_time_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            return DigestVerdict::WrongResponse;
        }
        let age = Duration::from_millis(
            (now.saturating_duration_since(self.epoch).as_millis() as u64).saturating_sub(issued),
        );
        if age > self.config.nonce_lifetime {
            return DigestVerdict::Stale;
        }
        let highest = self.used.entry(nonce.to_owned()).or_insert(0);
        if nc <= *highest {
            return DigestVerdict::Replayed;
        }
        *highest = nc;
        DigestVerdict::Authenticated
    }

    /// Forgets the nonce-counts of expired nonces (they are refused as stale anyway).
    pub fn expire(&mut self, now: Instant) {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let lifetime = self.config.nonce_lifetime.as_millis() as u64;
        self.used.retain(|nonce, _| {
            nonce
                .split_once('.')
                .and_then(|(t, _)| u64::from_str_radix(t, 16).ok())
                .is_some_and(|t| now_ms.saturating_sub(t) <= lifetime)
        });
    }

    /// Nonces currently remembered for replay checks.
    pub fn tracked_nonces(&self) -> usize {
        self.used.len()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Builds the Authorization value a client would send (for tests, the fuzz target and
/// the load generator): `qop=auth`, MD5, the given nonce-count and cnonce.
#[allow(clippy::too_many_arguments)]
pub fn client_authorization(
    challenge: &Auth,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> Option<String> {
    let realm = challenge.param("realm")?;
    let nonce = challenge.param("nonce")?;
    let nc = format!("{nc:08x}");
    let a = Algorithm::Md5;
    let ha1 = a.hex(&[username, realm, password]);
    let ha2 = a.hex(&[method, uri]);
    let response = a.hex(&[&ha1, nonce, &nc, cnonce, "auth", &ha2]);
    Some(format!(
        "Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"{cnonce}\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Auth {
        Auth::parse("Authorization", v).expect("auth value")
    }

    fn setup() -> (DigestAuthenticator, Instant) {
        let now = Instant::now();
        (
            DigestAuthenticator::new(DigestConfig::default(), [7; 32], now),
            now,
        )
    }

    fn creds(a: &mut DigestAuthenticator, now: Instant, pw: &str, nc: u32) -> Auth {
        let ch = parse(&a.challenge(now, false));
        parse(
            &client_authorization(&ch, "alice", pw, "REGISTER", "sip:example.com", nc, "c1")
                .expect("challenge has realm and nonce"),
        )
    }

    #[test]
    fn rfc2617_md5_response_vector() {
        // RFC 2617 §3.5's example, computed with qop=auth and method GET.
        let ha1 = Algorithm::Md5.hex(&["Mufasa", "testrealm@host.com", "Circle Of Life"]);
        let ha2 = Algorithm::Md5.hex(&["GET", "/dir/index.html"]);
        let r = Algorithm::Md5.hex(&[
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            "auth",
            &ha2,
        ]);
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn right_password_authenticates_once_per_nonce_count() {
        let (mut a, now) = setup();
        let c = creds(&mut a, now, "pw", 1);
        assert_eq!(
            a.verify(now, "REGISTER", &c, "pw"),
            DigestVerdict::Authenticated
        );
        assert_eq!(a.verify(now, "REGISTER", &c, "pw"), DigestVerdict::Replayed);
        let c2 = creds(&mut a, now, "pw", 2);
        assert_eq!(
            a.verify(now, "REGISTER", &c2, "pw"),
            DigestVerdict::Authenticated
        );
    }

    #[test]
    fn wrong_password_and_foreign_nonce_are_refused() {
        let (mut a, now) = setup();
        let c = creds(&mut a, now, "wrong", 1);
        assert_eq!(
            a.verify(now, "REGISTER", &c, "pw"),
            DigestVerdict::WrongResponse
        );
        let mut other = DigestAuthenticator::new(DigestConfig::default(), [8; 32], now);
        let foreign = creds(&mut other, now, "pw", 1);
        assert_eq!(
            a.verify(now, "REGISTER", &foreign, "pw"),
            DigestVerdict::UnknownNonce
        );
    }

    #[test]
    fn old_nonce_is_stale_and_forgotten() {
        let (mut a, now) = setup();
        let c = creds(&mut a, now, "pw", 1);
        assert_eq!(
            a.verify(now, "REGISTER", &c, "pw"),
            DigestVerdict::Authenticated
        );
        assert_eq!(a.tracked_nonces(), 1);
        let later = now + Duration::from_secs(301);
        let c2 = creds(&mut a, now, "pw", 2);
        assert_eq!(a.verify(later, "REGISTER", &c2, "pw"), DigestVerdict::Stale);
        a.expire(later);
        assert_eq!(a.tracked_nonces(), 0);
        assert!(a.challenge(later, true).ends_with("stale=true"));
    }

    #[test]
    fn malformed_credentials_say_why() {
        let (mut a, now) = setup();
        for bad in [
            "Digest username=\"alice\"",
            "Digest username=\"alice\", realm=\"ccmsipline\", nonce=\"1.2\", uri=\"sip:x\", response=\"00\"",
            "Digest username=\"alice\", realm=\"ccmsipline\", nonce=\"1.2\", uri=\"sip:x\", response=\"00\", qop=auth, nc=0000000g, cnonce=\"x\"",
            "Digest username=\"alice\", realm=\"ccmsipline\", nonce=\"1.2\", uri=\"sip:x\", response=\"00\", qop=auth, nc=00000001, cnonce=\"x\", algorithm=SHA-512",
        ] {
            assert!(
                matches!(a.verify(now, "REGISTER", &parse(bad), "pw"), DigestVerdict::Malformed(_)),
                "{bad}"
            );
        }
    }
}
