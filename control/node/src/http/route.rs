//! What a path sent to the edge means (sans-IO), and the edge configuration document.
//!
//! Paths are `/<base64 of the domain>/get_edge_config/...` or the tunnelled form
//! `/<base64 domain>/<http|https>/<internal host>/<port>/<path>`. The domain is decoded from
//! standard or URL-safe base64, padded or not. The internal URL is rebuilt as
//! `scheme://host:port/path?query` and handed to the allow list, which normalizes it; the
//! raw path is never forwarded.
//!
//! The get_edge_config answer follows the `getEdgeConfigResponse` document MRA clients
//! parse, as public troubleshooting material shows it (`serviceConfig` with `_cisco-uds`
//! and `tftpServer` services, `edgeConfig` with `sipEdgeServer`, `sipRequest` route,
//! `httpEdgeServer`); element order and the `version` attribute are inferred, and XMPP and
//! TURN servers are left out until edgeway serves them.

use base64::Engine;

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The edge configuration of `domain` (lower case).
    EdgeConfig {
        /// The decoded domain.
        domain: String,
    },
    /// A request to an internal server.
    Tunnel {
        /// The decoded domain.
        domain: String,
        /// `scheme://host:port/path[?query]`, not yet normalized.
        url: String,
    },
}

/// Why a path means nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The first segment is not base64 of a UTF-8 domain.
    #[error("first path segment is not base64 of a domain")]
    BadDomain,
    /// Neither `get_edge_config` nor `<http|https>/<host>/<port>/...`.
    #[error("path is neither get_edge_config nor <http|https>/<host>/<port>/<path>")]
    UnknownForm,
    /// The port segment is not a port number.
    #[error("port segment {0:?} is not a port number")]
    BadPort(String),
}

fn decode_domain(segment: &str) -> Result<String, RouteError> {
    let trimmed = segment.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .map_err(|_| RouteError::BadDomain)?;
    let domain = String::from_utf8(bytes).map_err(|_| RouteError::BadDomain)?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty()
        || !domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
    {
        return Err(RouteError::BadDomain);
    }
    Ok(domain)
}

/// Reads `path_and_query` (as the request line carried it, still percent-encoded).
pub fn parse(path_and_query: &str) -> Result<Route, RouteError> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let rest = path.strip_prefix('/').ok_or(RouteError::UnknownForm)?;
    let (domain, rest) = rest.split_once('/').ok_or(RouteError::UnknownForm)?;
    let domain = decode_domain(domain)?;
    if rest == "get_edge_config" || rest.starts_with("get_edge_config/") {
        return Ok(Route::EdgeConfig { domain });
    }
    let mut parts = rest.splitn(4, '/');
    let scheme = parts.next().unwrap_or_default();
    if scheme != "http" && scheme != "https" {
        return Err(RouteError::UnknownForm);
    }
    let host = parts
        .next()
        .filter(|h| !h.is_empty())
        .ok_or(RouteError::UnknownForm)?;
    let port_text = parts.next().ok_or(RouteError::UnknownForm)?;
    let port: u16 = port_text
        .parse()
        .map_err(|_| RouteError::BadPort(port_text.to_string()))?;
    let tail = parts.next().unwrap_or_default();
    let mut url = format!("{scheme}://{host}:{port}/{tail}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    Ok(Route::Tunnel { domain, url })
}

/// One server in the edge configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Host name or address.
    pub address: String,
    /// Port.
    pub port: u16,
}

/// What get_edge_config tells a client of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfigDoc {
    /// The edge's SIP TLS server, when the domain has SIP registrations.
    pub sip_edge: Option<Server>,
    /// The edge's HTTPS server.
    pub http_edge: Server,
    /// The internal UDS servers (Unified CM).
    pub uds: Vec<Server>,
    /// The internal TFTP servers.
    pub tftp: Vec<Server>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn server_xml(out: &mut String, server: &Server, port_tag: &str) {
    out.push_str(&format!(
        "<server><priority>1</priority><weight>1</weight><{port_tag}>{}</{port_tag}><address>{}</address></server>",
        server.port,
        escape(&server.address)
    ));
}

impl EdgeConfigDoc {
    /// The `getEdgeConfigResponse` XML.
    pub fn to_xml(&self) -> String {
        let mut out = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<getEdgeConfigResponse version=\"1.0\"><serviceConfig>",
        );
        for (name, servers) in [("_cisco-uds", &self.uds), ("tftpServer", &self.tftp)] {
            if servers.is_empty() {
                continue;
            }
            out.push_str(&format!("<service><name>{name}</name>"));
            for s in servers {
                server_xml(&mut out, s, "port");
            }
            out.push_str("</service>");
        }
        out.push_str("</serviceConfig><edgeConfig>");
        if let Some(sip) = &self.sip_edge {
            out.push_str("<sipEdgeServer>");
            server_xml(&mut out, sip, "tlsPort");
            out.push_str("</sipEdgeServer>");
            out.push_str(&format!(
                "<sipRequest><route>&lt;sip:{}:{};transport=tls;lr&gt;</route></sipRequest>",
                escape(&sip.address),
                sip.port
            ));
        }
        out.push_str("<httpEdgeServer>");
        server_xml(&mut out, &self.http_edge, "tlsPort");
        out.push_str("</httpEdgeServer></edgeConfig></getEdgeConfigResponse>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn edge_config_and_tunnel_forms() {
        let d = b64("Example.COM");
        assert_eq!(
            parse(&format!("/{d}/get_edge_config/?service_name=_cisco-uds")),
            Ok(Route::EdgeConfig {
                domain: "example.com".into()
            })
        );
        assert_eq!(
            parse(&format!("/{d}/https/cucm1/8443/cucm-uds/user/alice?x=1")),
            Ok(Route::Tunnel {
                domain: "example.com".into(),
                url: "https://cucm1:8443/cucm-uds/user/alice?x=1".into()
            })
        );
    }

    #[test]
    fn nonsense_is_refused_precisely() {
        let d = b64("example.com");
        assert_eq!(parse("/!!/get_edge_config"), Err(RouteError::BadDomain));
        assert_eq!(
            parse(&format!("/{}/get_edge_config", b64("a b"))),
            Err(RouteError::BadDomain)
        );
        assert_eq!(
            parse(&format!("/{d}/ftp/h/21/x")),
            Err(RouteError::UnknownForm)
        );
        assert_eq!(
            parse(&format!("/{d}/http/h/99999/x")),
            Err(RouteError::BadPort("99999".into()))
        );
        assert_eq!(parse("/"), Err(RouteError::UnknownForm));
        assert_eq!(parse(""), Err(RouteError::UnknownForm));
    }

    #[test]
    fn edge_config_xml_escapes_and_lists_servers() {
        let doc = EdgeConfigDoc {
            sip_edge: Some(Server {
                address: "edge.example.com".into(),
                port: 5061,
            }),
            http_edge: Server {
                address: "edge.example.com".into(),
                port: 8443,
            },
            uds: vec![Server {
                address: "cucm<1>".into(),
                port: 8443,
            }],
            tftp: vec![],
        };
        let xml = doc.to_xml();
        assert!(xml.contains("<service><name>_cisco-uds</name><server><priority>1</priority><weight>1</weight><port>8443</port><address>cucm&lt;1&gt;</address></server></service>"), "{xml}");
        assert!(xml.contains("<sipEdgeServer><server><priority>1</priority><weight>1</weight><tlsPort>5061</tlsPort><address>edge.example.com</address>"), "{xml}");
        assert!(!xml.contains("tftpServer"));
    }
}
