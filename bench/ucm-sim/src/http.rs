//! ucm-sim's HTTP side, what an MRA client reaches through the edge: the UDS user query
//! (`GET /cucm-uds/user/<name>`, basic authentication as that user or any known user), TFTP
//! configuration files (`GET /<device>.cnf.xml`, no authentication, as on Unified CM's TFTP
//! service) and a voicemail endpoint (`GET /vmrest/user`, basic authentication). The answer is
//! decided by [`respond`] (no IO); [`serve`] is the hyper layer over plain TCP or TLS.

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use edgeway_ucm_sim::users::UserDirectory;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What [`respond`] decided: status, content type, body.
pub(crate) type Answer = (StatusCode, &'static str, String);

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

/// Decides the answer to `method path` with the request's `Authorization` header.
pub(crate) fn respond(
    users: &UserDirectory,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> Answer {
    if method != "GET" && method != "HEAD" {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
    }
    let path = path.split('?').next().unwrap_or(path);
    if let Some(name) = path.strip_prefix("/cucm-uds/user/") {
        if authenticated(users, authorization).is_none() {
            return refuse(StatusCode::UNAUTHORIZED, "UDS needs basic authentication");
        }
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
        return match authenticated(users, authorization) {
            Some(name) => (
                StatusCode::OK,
                "application/xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<User><Alias>{}</Alias><VoiceMailboxes>0</VoiceMailboxes></User>\n",
                    xml_escape(name)
                ),
            ),
            None => refuse(StatusCode::UNAUTHORIZED, "vmrest needs basic authentication"),
        };
    }
    refuse(StatusCode::NOT_FOUND, "not served by ucm-sim")
}

async fn handle(
    users: Arc<UserDirectory>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let authorization = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (status, content_type, body) = respond(
        &users,
        request.method().as_str(),
        request.uri().path(),
        authorization,
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    Ok(response)
}

/// Serves HTTP/1.1 on `listener` (over TLS when `tls` is given) until the process ends.
pub(crate) async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, users: UserDirectory) {
    let users = Arc::new(users);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let users = users.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |r| handle(users.clone(), r));
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

    fn users() -> UserDirectory {
        UserDirectory::from_toml(
            "[[user]]\nname = \"alice\"\npassword = \"pw\"\nnumber = \"1001\"\nsecurity_profile = \"non-secure\"\ndevices = [\"CSFALICE\"]\n",
        )
        .expect("users")
    }

    fn basic(credentials: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    }

    #[test]
    fn uds_needs_the_right_password() {
        let u = users();
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
    fn tftp_serves_known_devices_only() {
        let u = users();
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
