//! ucm-sim's OAuth issuer, standing in for Unified CM's self-describing tokens:
//! `POST /oauth/token` (RFC 6749 4.3 `grant_type=password` with `username`/`password`, and
//! 6 `grant_type=refresh_token`) answers an access token, a JWT (RFC 7519) signed with
//! Ed25519 (`alg` `EdDSA`, RFC 8037) carrying `iss`, `sub`, `iat`, `exp` and `scope`, plus an
//! opaque refresh token; `GET /oauth/keys` publishes the signing key (JWKS-like, with `kid`
//! and the issuer's name), which is what the core's "Refresh servers" fetches.
//!
//! The `scope` is the user's access policy: `mra uds vmrest`, or without `mra` for users
//! named by `--oauth-no-mra`. The signing key is made fresh at each start, so a restarted
//! ucm-sim has a new `kid` (the core refetches keys for an unknown `kid`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use base64::Engine;
use edgeway_ucm_sim::users::UserDirectory;
use hyper::StatusCode;
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::Digest;

use crate::http::Answer;

/// Refresh tokens kept at most; past this the oldest grants must sign in again.
const MAX_REFRESH_TOKENS: usize = 100_000;

/// The issuer's settings.
#[derive(Debug, Clone)]
pub(crate) struct IssuerSettings {
    /// `iss` of every token.
    pub(crate) name: String,
    /// Access token lifetime, seconds (Unified CM's default: 60 minutes).
    pub(crate) access_lifetime: u64,
    /// Refresh token lifetime, seconds (Unified CM's default: 60 days).
    pub(crate) refresh_lifetime: u64,
    /// Users whose access policy does not include MRA.
    pub(crate) no_mra: HashSet<String>,
}

/// Signs access tokens and remembers refresh tokens.
pub(crate) struct Issuer {
    settings: IssuerSettings,
    pair: Ed25519KeyPair,
    kid: String,
    /// Refresh token → (user, Unix expiry).
    refresh: Mutex<HashMap<String, (String, u64)>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.settings.name)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn json_answer(status: StatusCode, value: serde_json::Value) -> Answer {
    (status, "application/json", format!("{value}\n"))
}

/// RFC 6749 5.2 error answer.
fn grant_error(status: StatusCode, error: &str, description: &str) -> Answer {
    json_answer(
        status,
        serde_json::json!({ "error": error, "error_description": description }),
    )
}

/// `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` a byte).
fn form(body: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match std::str::from_utf8(&bytes[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

impl Issuer {
    /// An issuer with a fresh Ed25519 key.
    pub(crate) fn new(settings: IssuerSettings) -> anyhow::Result<Issuer> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow::anyhow!("cannot generate the OAuth signing key"))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("cannot load the OAuth signing key"))?;
        let kid = hex::encode(&sha2::Sha256::digest(pair.public_key().as_ref())[..8]);
        Ok(Issuer {
            settings,
            pair,
            kid,
            refresh: Mutex::new(HashMap::new()),
        })
    }

    /// `GET /oauth/keys`.
    pub(crate) fn keys_document(&self) -> Answer {
        json_answer(
            StatusCode::OK,
            serde_json::json!({
                "issuer": self.settings.name,
                "keys": [{
                    "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                    "kid": self.kid, "x": b64url(self.pair.public_key().as_ref()),
                }],
            }),
        )
    }

    fn access_token(&self, user: &str, unix_now: u64) -> (String, String) {
        let scope = if self.settings.no_mra.contains(user) {
            "uds vmrest"
        } else {
            "mra uds vmrest"
        };
        let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.kid });
        let claims = serde_json::json!({
            "iss": self.settings.name,
            "sub": user,
            "iat": unix_now,
            "exp": unix_now + self.settings.access_lifetime,
            "scope": scope,
        });
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = self.pair.sign(input.as_bytes());
        (
            format!("{input}.{}", b64url(signature.as_ref())),
            scope.to_owned(),
        )
    }

    /// The user a token this issuer signed names, if it verifies and has not expired (what
    /// UDS and vmrest accept as `Bearer`).
    pub(crate) fn verify(&self, token: &str, unix_now: u64) -> Option<String> {
        let (input, signature) = token.rsplit_once('.')?;
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .ok()?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ED25519,
            self.pair.public_key().as_ref(),
        )
        .verify(input.as_bytes(), &signature)
        .ok()?;
        let claims = input.split_once('.')?.1;
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .ok()?,
        )
        .ok()?;
        (claims["exp"].as_u64()? > unix_now).then(|| claims["sub"].as_str().map(str::to_owned))?
    }

    /// `POST /oauth/token` with its form body; `Ok` carries whether it was a refresh.
    pub(crate) fn grant(
        &self,
        users: &UserDirectory,
        body: &str,
        unix_now: u64,
    ) -> Result<(Answer, bool), Answer> {
        let form = form(body);
        let field = |name: &str| form.get(name).map(String::as_str);
        let (user, refreshed) = match field("grant_type") {
            Some("password") => {
                let (Some(name), Some(password)) = (field("username"), field("password")) else {
                    return Err(grant_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "grant_type=password needs username and password",
                    ));
                };
                match users.find(name).filter(|u| u.name == name) {
                    Some(u) if u.password == password => (u.name.clone(), false),
                    _ => {
                        return Err(grant_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_grant",
                            "unknown user or wrong password",
                        ))
                    }
                }
            }
            Some("refresh_token") => {
                let Some(token) = field("refresh_token") else {
                    return Err(grant_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "grant_type=refresh_token needs refresh_token",
                    ));
                };
                let known = self
                    .refresh
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(token)
                    .cloned();
                match known {
                    Some((user, exp)) if exp > unix_now => (user, true),
                    _ => {
                        return Err(grant_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_grant",
                            "unknown or expired refresh token",
                        ))
                    }
                }
            }
            _ => {
                return Err(grant_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "grant_type is password or refresh_token",
                ))
            }
        };
        let (access, scope) = self.access_token(&user, unix_now);
        let refresh_token = match refreshed {
            true => field("refresh_token").unwrap_or_default().to_owned(),
            false => {
                let token = hex::encode(rand::random::<[u8; 32]>());
                let mut refresh = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
                if refresh.len() >= MAX_REFRESH_TOKENS {
                    refresh.retain(|_, (_, exp)| *exp > unix_now);
                }
                if refresh.len() < MAX_REFRESH_TOKENS {
                    refresh.insert(
                        token.clone(),
                        (user.clone(), unix_now + self.settings.refresh_lifetime),
                    );
                }
                token
            }
        };
        Ok((
            json_answer(
                StatusCode::OK,
                serde_json::json!({
                    "access_token": access,
                    "token_type": "Bearer",
                    "expires_in": self.settings.access_lifetime,
                    "refresh_token": refresh_token,
                    "scope": scope,
                }),
            ),
            refreshed,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(no_mra: &[&str]) -> Issuer {
        Issuer::new(IssuerSettings {
            name: "ucm-sim".into(),
            access_lifetime: 60,
            refresh_lifetime: 600,
            no_mra: no_mra.iter().map(|s| s.to_string()).collect(),
        })
        .expect("issuer")
    }

    fn users() -> UserDirectory {
        UserDirectory::from_toml(
            "[[user]]\nname = \"alice\"\npassword = \"p w&\"\nnumber = \"1001\"\nsecurity_profile = \"non-secure\"\n",
        )
        .expect("users")
    }

    #[test]
    fn password_then_refresh_grants_and_tokens_expire() {
        let iss = issuer(&[]);
        let u = users();
        let ((status, _, body), refreshed) = iss
            .grant(
                &u,
                "grant_type=password&username=alice&password=p+w%26",
                1_000,
            )
            .expect("granted");
        assert_eq!((status, refreshed), (StatusCode::OK, false));
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let access = v["access_token"].as_str().expect("token");
        assert_eq!(iss.verify(access, 1_059).as_deref(), Some("alice"));
        assert_eq!(iss.verify(access, 1_060), None, "expired");
        assert_eq!(v["scope"], "mra uds vmrest");
        let refresh = v["refresh_token"].as_str().expect("refresh");
        let ((_, _, body), refreshed) = iss
            .grant(
                &u,
                &format!("grant_type=refresh_token&refresh_token={refresh}"),
                1_100,
            )
            .expect("refreshed");
        assert!(refreshed);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            iss.verify(v["access_token"].as_str().expect("token"), 1_101)
                .as_deref(),
            Some("alice")
        );
        for bad in [
            "grant_type=password&username=alice&password=wrong",
            "grant_type=password&username=alice",
            "grant_type=refresh_token&refresh_token=nope",
            "grant_type=client_credentials",
            "",
            "%%%=%",
        ] {
            assert_eq!(
                iss.grant(&u, bad, 1_000).expect_err(bad).0,
                StatusCode::BAD_REQUEST
            );
        }
        assert!(iss
            .grant(
                &u,
                &format!("grant_type=refresh_token&refresh_token={refresh}"),
                1_700
            )
            .is_err());
    }

    #[test]
    fn the_access_policy_is_the_scope_and_another_key_does_not_verify() {
        let iss = issuer(&["alice"]);
        let (token, scope) = iss.access_token("alice", 0);
        assert_eq!(scope, "uds vmrest");
        assert_eq!(issuer(&[]).verify(&token, 1), None);
        let (_, _, keys) = iss.keys_document();
        assert!(
            keys.contains(&iss.kid) && keys.contains("\"issuer\":\"ucm-sim\""),
            "{keys}"
        );
    }
}
