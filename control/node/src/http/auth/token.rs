//! What a client presents, parsed without IO: the `Authorization` header (RFC 9110 11.6.2:
//! `Basic` per RFC 7617, `Bearer` per RFC 6750) and self-describing access tokens, which are
//! JWT compact serialisations (RFC 7519) signed with Ed25519 (`alg` `EdDSA`, RFC 8037), and
//! the issuers' signing keys ([`KeySet`], a JWKS-like document with the issuer's name).
//!
//! A token is accepted only when its `kid` names a key fetched from a refresh server, the
//! signature verifies, `iss` is the issuer that server named, `exp` is in the future and its
//! `scope` carries the MRA access policy ([`MRA_SCOPE`]).

use std::collections::HashMap;

use base64::Engine;
use serde::Deserialize;

/// Longest `Authorization` value looked at; longer is refused before any decoding.
pub const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// The scope value a token must carry: the user's access policy allows Mobile and Remote
/// Access (Unified CM's per-user MRA access policy).
pub const MRA_SCOPE: &str = "mra";

/// The credentials of one request.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Basic`: a user name and password to check with Unified CM.
    Basic {
        /// The user name (before the first `:`).
        user: String,
        /// The password (never logged, never stored: the cache keeps a keyed hash).
        password: String,
    },
    /// `Bearer`: an access token.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    // Never print a password or a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user:?}, <password>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<token>)"),
        }
    }
}

/// Why an `Authorization` header or a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The `Authorization` header is not `Basic` or `Bearer` in the expected form.
    #[error("malformed Authorization header: {0}")]
    Header(&'static str),
    /// The token is not a JWT compact serialisation with the expected fields.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token names an algorithm other than `EdDSA` (`none` included).
    #[error("token algorithm {0:?} is not accepted (EdDSA only)")]
    Algorithm(String),
    /// No key with this `kid` was fetched from the refresh servers.
    #[error("token signed by unknown key {0:?}")]
    UnknownKey(String),
    /// The signature does not verify with the named key.
    #[error("token signature does not verify")]
    Signature,
    /// `iss` is not the issuer whose key signed it.
    #[error("token issuer {found:?} is not {expected:?}, whose key signed it")]
    Issuer {
        /// The token's `iss`.
        found: String,
        /// The issuer the key came from.
        expected: String,
    },
    /// `exp` is not after now.
    #[error("the access token expired {ago} s ago")]
    Expired {
        /// Seconds since it expired.
        ago: u64,
    },
    /// The token's scope lacks the MRA access policy.
    #[error("the user's access policy does not allow Mobile and Remote Access")]
    NoMraPolicy,
    /// A keys document that cannot be used.
    #[error("keys document: {0}")]
    Keys(String),
}

/// Parses an `Authorization` header value (scheme case-insensitive, RFC 9110 11.1).
pub fn parse_authorization(value: &[u8]) -> Result<Credentials, TokenError> {
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(TokenError::Header("longer than 8 KiB"));
    }
    let text = std::str::from_utf8(value).map_err(|_| TokenError::Header("not UTF-8"))?;
    let (scheme, rest) = text
        .trim()
        .split_once(' ')
        .ok_or(TokenError::Header("no credentials after the scheme"))?;
    let rest = rest.trim();
    if rest.is_empty() || rest.contains(' ') {
        return Err(TokenError::Header("expected one credentials token"));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| TokenError::Header("Basic credentials are not base64"))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| TokenError::Header("Basic credentials are not UTF-8"))?;
        let (user, password) = text
            .split_once(':')
            .ok_or(TokenError::Header("Basic credentials lack ':'"))?;
        if user.is_empty() || user.chars().any(char::is_control) {
            return Err(TokenError::Header(
                "Basic user name is empty or has controls",
            ));
        }
        Ok(Credentials::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        // RFC 6750 2.1 b64token characters.
        let b64token = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
        if !rest.chars().all(b64token) {
            return Err(TokenError::Header(
                "Bearer token has characters outside b64token",
            ));
        }
        Ok(Credentials::Bearer(rest.to_owned()))
    } else {
        Err(TokenError::Header("scheme is neither Basic nor Bearer"))
    }
}

#[derive(Debug, Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
}

/// The claims edgeway reads from an access token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// The user.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Space-separated scopes: the access policy.
    #[serde(default)]
    pub scope: String,
}

/// A token split and decoded, not yet verified.
#[derive(Debug, Clone)]
pub struct ParsedToken {
    /// The signing key's id.
    pub kid: String,
    /// The claims, as the token states them.
    pub claims: Claims,
    signing_input_len: usize,
    signature: Vec<u8>,
}

fn b64url(part: &str, what: &'static str) -> Result<Vec<u8>, TokenError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(what))
}

/// Splits `header.claims.signature` and decodes the first two (nothing verified yet).
pub fn parse_token(token: &str) -> Result<ParsedToken, TokenError> {
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let header: JoseHeader = serde_json::from_slice(&b64url(head, "header is not base64url")?)
        .map_err(|_| TokenError::Malformed("header is not the expected JSON"))?;
    if header.alg != "EdDSA" {
        return Err(TokenError::Algorithm(header.alg));
    }
    let kid = header
        .kid
        .ok_or(TokenError::Malformed("header has no kid"))?;
    let claims: Claims = serde_json::from_slice(&b64url(body, "claims are not base64url")?)
        .map_err(|_| TokenError::Malformed("claims lack iss, sub or exp"))?;
    Ok(ParsedToken {
        kid,
        claims,
        signing_input_len: head.len() + 1 + body.len(),
        signature: b64url(sig, "signature is not base64url")?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SigningKey {
    issuer: String,
    public: Vec<u8>,
}

/// The signing keys fetched from the refresh servers, by `kid`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: HashMap<String, SigningKey>,
}

#[derive(Deserialize)]
struct KeysDocument {
    issuer: String,
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    kid: String,
    x: Option<String>,
}

impl KeySet {
    /// Reads a keys document: `{"issuer": "...", "keys": [{"kty": "OKP", "crv": "Ed25519",
    /// "kid": "...", "x": "<base64url public key>"}]}`; keys of other types are skipped.
    pub fn from_document(text: &str) -> Result<KeySet, TokenError> {
        let doc: KeysDocument =
            serde_json::from_str(text).map_err(|e| TokenError::Keys(e.to_string()))?;
        let mut keys = HashMap::new();
        for jwk in doc.keys {
            if jwk.kty != "OKP" || jwk.crv.as_deref() != Some("Ed25519") {
                continue;
            }
            let x = jwk
                .x
                .as_deref()
                .map(|x| b64url(x, "x"))
                .transpose()
                .ok()
                .flatten()
                .filter(|x| x.len() == 32)
                .ok_or_else(|| TokenError::Keys(format!("key {:?}: x is not 32 bytes", jwk.kid)))?;
            keys.insert(
                jwk.kid,
                SigningKey {
                    issuer: doc.issuer.clone(),
                    public: x,
                },
            );
        }
        Ok(KeySet { keys })
    }

    /// Adds every key of `other` (a later document wins for a repeated `kid`).
    pub fn extend(&mut self, other: KeySet) {
        self.keys.extend(other.keys);
    }

    /// Whether a key with this id is known.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Verifies `parsed` (the split form of `token`) at `unix_now`: key, signature, issuer,
    /// expiry, then access policy, in that order, so only a genuine token's claims are
    /// reported back.
    pub fn verify(
        &self,
        token: &str,
        parsed: &ParsedToken,
        unix_now: u64,
    ) -> Result<Claims, TokenError> {
        let key = self
            .keys
            .get(&parsed.kid)
            .ok_or_else(|| TokenError::UnknownKey(parsed.kid.clone()))?;
        let signed = token
            .as_bytes()
            .get(..parsed.signing_input_len)
            .ok_or(TokenError::Malformed("token shorter than its parts"))?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key.public)
            .verify(signed, &parsed.signature)
            .map_err(|_| TokenError::Signature)?;
        let claims = &parsed.claims;
        if claims.iss != key.issuer {
            return Err(TokenError::Issuer {
                found: claims.iss.clone(),
                expected: key.issuer.clone(),
            });
        }
        if claims.exp <= unix_now {
            return Err(TokenError::Expired {
                ago: unix_now - claims.exp,
            });
        }
        if !claims.scope.split(' ').any(|s| s == MRA_SCOPE) {
            return Err(TokenError::NoMraPolicy);
        }
        Ok(claims.clone())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    /// A signing key and the keys document that publishes it.
    pub(crate) struct TestIssuer {
        pkcs8: Vec<u8>,
        pair: Ed25519KeyPair,
        pub(crate) kid: String,
        pub(crate) issuer: String,
    }

    impl TestIssuer {
        pub(crate) fn new(kid: &str) -> TestIssuer {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
            TestIssuer::from_pkcs8(pkcs8.as_ref().to_vec(), kid, "ucm-test")
        }

        fn from_pkcs8(pkcs8: Vec<u8>, kid: &str, issuer: &str) -> TestIssuer {
            TestIssuer {
                pair: Ed25519KeyPair::from_pkcs8(&pkcs8).expect("key"),
                pkcs8,
                kid: kid.to_owned(),
                issuer: issuer.to_owned(),
            }
        }

        /// The same key, claiming another issuer name.
        pub(crate) fn posing_as(&self, issuer: &str) -> TestIssuer {
            TestIssuer::from_pkcs8(self.pkcs8.clone(), &self.kid, issuer)
        }

        pub(crate) fn document(&self) -> String {
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(self.pair.public_key().as_ref());
            format!(
                r#"{{"issuer":"{}","keys":[{{"kty":"OKP","crv":"Ed25519","kid":"{}","x":"{x}"}}]}}"#,
                self.issuer, self.kid
            )
        }

        pub(crate) fn sign(&self, claims: &str) -> String {
            let e = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            let head = e(format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, self.kid).as_bytes());
            let input = format!("{head}.{}", e(claims.as_bytes()));
            let sig = self.pair.sign(input.as_bytes());
            format!("{input}.{}", e(sig.as_ref()))
        }

        pub(crate) fn token(&self, sub: &str, exp: u64, scope: &str) -> String {
            self.sign(&format!(
                r#"{{"iss":"{}","sub":"{sub}","exp":{exp},"scope":"{scope}"}}"#,
                self.issuer
            ))
        }
    }

    fn check(keys: &KeySet, token: &str, now: u64) -> Result<Claims, TokenError> {
        keys.verify(token, &parse_token(token)?, now)
    }

    #[test]
    fn basic_and_bearer_headers_parse_and_junk_is_refused() {
        let basic = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pa:ss")
        );
        assert_eq!(
            parse_authorization(basic.as_bytes()),
            Ok(Credentials::Basic {
                user: "alice".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(
            parse_authorization(b"Bearer abc.def-_"),
            Ok(Credentials::Bearer("abc.def-_".into()))
        );
        for bad in [
            &b"Basic"[..],
            b"Basic !!!",
            b"Digest x",
            b"Bearer a b",
            b"Bearer a\"b",
            b"\xff\xfe",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad:?}");
        }
        let no_colon = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice")
        );
        assert!(parse_authorization(no_colon.as_bytes()).is_err());
        assert!(parse_authorization(&vec![b'a'; 9000]).is_err());
        let shown = format!(
            "{:?}",
            Credentials::Basic {
                user: "u".into(),
                password: "hunter2".into()
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_genuine_token_verifies_and_every_kind_of_forgery_is_refused() {
        let issuer = TestIssuer::new("k1");
        let keys = KeySet::from_document(&issuer.document()).expect("keys");
        let good = issuer.token("alice", 1_000, "mra uds");
        assert_eq!(check(&keys, &good, 999).expect("valid").sub, "alice");
        assert_eq!(
            check(&keys, &good, 1_010),
            Err(TokenError::Expired { ago: 10 })
        );
        assert_eq!(
            check(&keys, &issuer.token("alice", 1_000, "uds"), 10),
            Err(TokenError::NoMraPolicy)
        );
        // Flip one bit of the signature.
        let (input, sig) = good.rsplit_once('.').expect("three parts");
        let mut raw = b64url(sig, "sig").expect("sig");
        raw[0] ^= 1;
        let flipped = format!(
            "{input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        assert_eq!(check(&keys, &flipped, 10), Err(TokenError::Signature));
        // Claims changed under the original signature.
        let (head, rest) = good.split_once('.').expect("parts");
        let (_, sig) = rest.split_once('.').expect("parts");
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iss":"ucm-test","sub":"bob","exp":1000,"scope":"mra"}"#);
        assert_eq!(
            check(&keys, &format!("{head}.{claims}.{sig}"), 10),
            Err(TokenError::Signature)
        );
        // Another key under the same kid, and an unknown kid.
        let other = TestIssuer::new("k1");
        assert_eq!(
            check(&keys, &other.token("alice", 1_000, "mra"), 10),
            Err(TokenError::Signature)
        );
        let stranger = TestIssuer::new("k2");
        assert_eq!(
            check(&keys, &stranger.token("alice", 1_000, "mra"), 10),
            Err(TokenError::UnknownKey("k2".into()))
        );
        // Right key, wrong issuer.
        let liar = issuer.posing_as("elsewhere");
        assert!(matches!(
            check(&keys, &liar.token("alice", 1_000, "mra"), 10),
            Err(TokenError::Issuer { .. })
        ));
        // alg none.
        let e = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let none = format!(
            "{}.{}.",
            e(br#"{"alg":"none","kid":"k1"}"#),
            e(br#"{"iss":"ucm-test","sub":"a","exp":1000,"scope":"mra"}"#)
        );
        assert_eq!(
            check(&keys, &none, 10),
            Err(TokenError::Algorithm("none".into()))
        );
        for junk in ["", "a.b", "a.b.c.d", "!.!.!", "e30.e30.AA"] {
            assert!(check(&keys, junk, 10).is_err(), "{junk}");
        }
    }

    #[test]
    fn keys_documents_are_checked() {
        assert!(KeySet::from_document("{}").is_err());
        let short = r#"{"issuer":"i","keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"AAAA"}]}"#;
        assert!(KeySet::from_document(short).is_err());
        let rsa = r#"{"issuer":"i","keys":[{"kty":"RSA","kid":"r","n":"x","e":"AQAB"}]}"#;
        let keys = KeySet::from_document(rsa).expect("other key types are skipped");
        assert!(!keys.contains("r"));
    }
}
