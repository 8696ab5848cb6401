//! ucm-sim's HTTP side, what an MRA client reaches through the edge and what the core asks
//! itself: the UDS user query (`GET /cucm-uds/user/<name>`, basic authentication as that user
//! or any known user, or a token this ucm-sim issued; the core's credential check), TFTP
//! configuration files (`GET /<device>.cnf.xml`, no authentication, as on Unified CM's TFTP
//! service), a voicemail endpoint (`GET /vmrest/user`, basic or token) and the OAuth issuer
//! (`POST /oauth/token`, `GET /oauth/keys`: [`crate::oauth`]). The answer is decided by
//! [`HttpSide::respond`] (no IO); [`serve`] is the hyper layer over plain TCP or TLS.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use edgeway_ucm_sim::users::UserDirectory;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::oauth::Issuer;

/// What [`HttpSide::respond`] decided: status, content type, body.
pub(crate) type Answer = (StatusCode, &'static str, String);

/// Largest request body read (token requests are a few hundred bytes).
const MAX_BODY: usize = 16 * 1024;

/// What the HTTP side counts, reported by the admin API's `counters`.
#[derive(Debug, Default)]
struct HttpCounters {
    /// UDS user queries answered 200 (each is one credential check by the core).
    uds_user_ok: AtomicU64,
    /// UDS user queries refused 401.
    uds_user_refused: AtomicU64,
    /// vmrest requests answered 200 / refused 401.
    vmrest_ok: AtomicU64,
    vmrest_refused: AtomicU64,
    /// TFTP configuration files served.
    tftp_files: AtomicU64,
    /// Access tokens issued for a password / for a refresh token; grants refused.
    tokens_issued: AtomicU64,
    tokens_refreshed: AtomicU64,
    token_grants_refused: AtomicU64,
    /// Keys documents served.
    keys_served: AtomicU64,
}

/// The user directory, the OAuth issuer and the counters behind every HTTP listener.
#[derive(Debug)]
pub(crate) struct HttpSide {
    users: UserDirectory,
    issuer: Issuer,
    counters: HttpCounters,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The user named by `Authorization: Basic ...` when its password is right.
fn authenticated<'a>(users: &'a UserDirectory, authorization: Option<&str>) -> Option<&'a str> {
    let encoded = authorization?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    let user = users.find(name)?;
    (user.name == name && user.password == password).then_some(user.name.as_str())
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn refuse(status: StatusCode, why: &str) -> Answer {
    (status, "text/plain", format!("{why}\n"))
}

impl HttpSide {
    /// The HTTP side over `users`, issuing tokens with `issuer`.
    pub(crate) fn new(users: UserDirectory, issuer: Issuer) -> HttpSide {
        HttpSide {
            users,
            issuer,
            counters: HttpCounters::default(),
        }
    }

    /// Adds the HTTP side's counters to the admin API's `counters` object.
    pub(crate) fn counters_json(&self, into: &mut serde_json::Map<String, serde_json::Value>) {
        let c = &self.counters;
        for (name, value) in [
            ("http_uds_user_ok", &c.uds_user_ok),
            ("http_uds_user_refused", &c.uds_user_refused),
            ("http_vmrest_ok", &c.vmrest_ok),
            ("http_vmrest_refused", &c.vmrest_refused),
            ("http_tftp_files", &c.tftp_files),
            ("oauth_tokens_issued", &c.tokens_issued),
            ("oauth_tokens_refreshed", &c.tokens_refreshed),
            ("oauth_grants_refused", &c.token_grants_refused),
            ("oauth_keys_served", &c.keys_served),
        ] {
            into.insert(name.to_owned(), value.load(Ordering::Relaxed).into());
        }
    }

    /// The user named by `Authorization`: `Basic` with the right password, or `Bearer` with
    /// an unexpired token this ucm-sim signed.
    fn authenticated(&self, authorization: Option<&str>, unix_now: u64) -> Option<String> {
        let value = authorization?;
        if let Some(token) = value.strip_prefix("Bearer ") {
            return self.issuer.verify(token.trim(), unix_now);
        }
        authenticated(&self.users, Some(value)).map(str::to_owned)
    }

    /// Decides the answer to `method path` with the request's `Authorization` header and
    /// body at `unix_now`.
    pub(crate) fn respond(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: &str,
        unix_now: u64,
    ) -> Answer {
        let path = path.split('?').next().unwrap_or(path);
        if path == "/oauth/token" {
            if method != "POST" {
                return refuse(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "the token endpoint takes POST",
                );
            }
            return match self.issuer.grant(&self.users, body, unix_now) {
                Ok((answer, refreshed)) => {
                    bump(match refreshed {
                        true => &self.counters.tokens_refreshed,
                        false => &self.counters.tokens_issued,
                    });
                    answer
                }
                Err(answer) => {
                    bump(&self.counters.token_grants_refused);
                    answer
                }
            };
        }
        if method != "GET" && method != "HEAD" {
            return refuse(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        }
        if path == "/oauth/keys" {
            bump(&self.counters.keys_served);
            return self.issuer.keys_document();
        }
        let users = &self.users;
        if let Some(name) = path.strip_prefix("/cucm-uds/user/") {
            if self.authenticated(authorization, unix_now).is_none() {
                bump(&self.counters.uds_user_refused);
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "UDS needs basic authentication or a token",
                );
            }
            bump(&self.counters.uds_user_ok);
            return match users.find(name).filter(|u| u.name == name) {
            Some(user) => (
                StatusCode::OK,
                "application/xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<user uri=\"/cucm-uds/user/{n}\"><userName>{n}</userName><phoneNumber>{num}</phoneNumber><devices>{devs}</devices></user>\n",
                    n = xml_escape(&user.name),
                    num = xml_escape(&user.number),
                    devs = user
                        .devices
                        .iter()
                        .map(|d| format!("<device><name>{}</name></device>", xml_escape(d)))
                        .collect::<String>()
                ),
            ),
            None => refuse(StatusCode::NOT_FOUND, "no such user"),
        };
        }
        if let Some(device) = path
            .strip_prefix('/')
            .and_then(|p| p.strip_suffix(".cnf.xml"))
        {
            let known = users
                .iter()
                .any(|u| u.devices.iter().any(|d| d.eq_ignore_ascii_case(device)));
            if !known || device.contains('/') {
                return refuse(StatusCode::NOT_FOUND, "no such configuration file");
            }
            bump(&self.counters.tftp_files);
            return (
            StatusCode::OK,
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<device><fullConfig>true</fullConfig><deviceProtocol>SIP</deviceProtocol><name>{}</name></device>\n",
                xml_escape(device)
            ),
        );
        }
        if path.starts_with("/vmrest/") {
            return match self.authenticated(authorization, unix_now) {
                Some(name) => {
                    bump(&self.counters.vmrest_ok);
                    (
                StatusCode::OK,
                "application/xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<User><Alias>{}</Alias><VoiceMailboxes>0</VoiceMailboxes></User>\n",
                    xml_escape(&name)
                ),
            )
                }
                None => {
                    bump(&self.counters.vmrest_refused);
                    refuse(
                        StatusCode::UNAUTHORIZED,
                        "vmrest needs basic authentication or a token",
                    )
                }
            };
        }
        refuse(StatusCode::NOT_FOUND, "not served by ucm-sim")
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn handle(
    side: Arc<HttpSide>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let authorization = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (status, content_type, text) = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            side.respond(
                parts.method.as_str(),
                parts.uri.path(),
                authorization,
                &String::from_utf8_lossy(&bytes),
                unix_now(),
            )
        }
        Err(_) => refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body over 16 KiB"),
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    Ok(response)
}

/// Serves HTTP/1.1 on `listener` (over TLS when `tls` is given) until the process ends.
pub(crate) async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, side: Arc<HttpSide>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let side = side.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |r| handle(side.clone(), r));
            let http = hyper::server::conn::http1::Builder::new();
            let _ = match tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                    Err(_) => return,
                },
                None => http.serve_connection(TokioIo::new(tcp), service).await,
            };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side() -> HttpSide {
        let users = UserDirectory::from_toml(
            "[[user]]\nname = \"alice\"\npassword = \"pw\"\nnumber = \"1001\"\nsecurity_profile = \"non-secure\"\ndevices = [\"CSFALICE\"]\n",
        )
        .expect("users");
        let issuer = Issuer::new(crate::oauth::IssuerSettings {
            name: "ucm-sim".into(),
            access_lifetime: 60,
            refresh_lifetime: 600,
            no_mra: Default::default(),
        })
        .expect("issuer");
        HttpSide::new(users, issuer)
    }

    fn respond(side: &HttpSide, method: &str, path: &str, authorization: Option<&str>) -> Answer {
        side.respond(method, path, authorization, "", 1_000)
    }

    fn basic(credentials: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    }

    #[test]
    fn uds_needs_the_right_password() {
        let u = side();
        let ok = respond(&u, "GET", "/cucm-uds/user/alice", Some(&basic("alice:pw")));
        assert_eq!(ok.0, StatusCode::OK);
        assert!(ok.2.contains("<phoneNumber>1001</phoneNumber>"), "{}", ok.2);
        let wrong = respond(&u, "GET", "/cucm-uds/user/alice", Some(&basic("alice:no")));
        assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            respond(&u, "GET", "/cucm-uds/user/alice", None).0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn uds_accepts_its_own_tokens_and_counts_every_check() {
        let u = side();
        let (status, _, body) = u.respond(
            "POST",
            "/oauth/token",
            None,
            "grant_type=password&username=alice&password=pw",
            1_000,
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let bearer = format!("Bearer {}", v["access_token"].as_str().expect("token"));
        assert_eq!(
            u.respond("GET", "/cucm-uds/user/alice", Some(&bearer), "", 1_001)
                .0,
            StatusCode::OK
        );
        assert_eq!(
            u.respond("GET", "/cucm-uds/user/alice", Some(&bearer), "", 1_060)
                .0,
            StatusCode::UNAUTHORIZED,
            "expired"
        );
        assert_eq!(
            respond(&u, "GET", "/oauth/token", None).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(respond(&u, "GET", "/oauth/keys", None).0, StatusCode::OK);
        let mut counters = serde_json::Map::new();
        u.counters_json(&mut counters);
        assert_eq!(counters["http_uds_user_ok"], 1);
        assert_eq!(counters["http_uds_user_refused"], 1);
        assert_eq!(counters["oauth_tokens_issued"], 1);
        assert_eq!(counters["oauth_keys_served"], 1);
    }

    #[test]
    fn tftp_serves_known_devices_only() {
        let u = side();
        let ok = respond(&u, "GET", "/CSFALICE.cnf.xml", None);
        assert_eq!(ok.0, StatusCode::OK);
        assert!(ok.2.contains("<name>CSFALICE</name>"));
        assert_eq!(
            respond(&u, "GET", "/CSFBOB.cnf.xml", None).0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&u, "POST", "/CSFALICE.cnf.xml", None).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
