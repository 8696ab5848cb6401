//! The node configuration file (TOML), read once at start and validated field by field, so
//! every refusal names the field an operator must fix (`core.ucm[1].address: ...`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Not TOML, or a value of the wrong type (toml's message names the key and line).
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A field is missing or holds a value that cannot work.
    #[error("{field}: {reason}")]
    Field {
        /// Dotted path of the field, e.g. `core.ucm[1].address`.
        field: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Which half of the MRA pair this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Expressway-E: faces clients, accepts the traversal zone.
    Edge,
    /// Expressway-C: dials the edge, proxies to Unified CM.
    Core,
}

/// Transport from the core to one Unified CM node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UcmTransport {
    /// SIP over TCP (5060).
    Tcp,
    /// SIP over TLS (5061): the node runs in mixed (secure) mode.
    Tls,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    role: Option<Role>,
    node_name: Option<String>,
    state_dir: Option<PathBuf>,
    admin_socket: Option<PathBuf>,
    ready_file: Option<PathBuf>,
    max_message_size: Option<usize>,
    maintenance: Option<bool>,
    tls: Option<RawTls>,
    edge: Option<RawEdge>,
    core: Option<RawCore>,
    http: Option<RawHttp>,
    media: Option<RawMedia>,
    protection: Option<crate::protect::RawProtection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    table_dir: Option<PathBuf>,
    node: Option<String>,
    address: Option<String>,
    inside_address: Option<String>,
    demux_ports: Option<Vec<u16>>,
    workers: Option<u32>,
    idle_timeout_ms: Option<u32>,
    inside_security: Option<String>,
}

/// Calls' media on this node (`[media]`; absent: calls are proxied with their SDP untouched
/// and no flow is programmed).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The node's flow table directory (`table_dir`, or `/dev/shm/edgeway/<node>`), created
    /// by its `edgeway-dataplane` (which owns the port range).
    pub table_dir: PathBuf,
    /// Edge: the public address clients send media to. Core: the address the edge sends to.
    pub address: std::net::Ipv4Addr,
    /// Edge: the address of the demux ports the core sends to. Core: the address phones
    /// send to.
    pub inside_address: std::net::Ipv4Addr,
    /// Edge: the demux pairs' RTP ports, as given to the data plane's `--demux`.
    pub demux_ports: Vec<u16>,
    /// The data plane's `--workers`.
    pub workers: u32,
    /// Entries idle this long are removed by the data plane (0, the default: never).
    pub idle_timeout_ms: u32,
    /// Core: whether phones get SRTP (`secure`, default) or RTP (`non-secure`).
    pub inside_secure: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    tunnel_listen: Option<String>,
    max_header_bytes: Option<usize>,
    max_body_bytes: Option<u64>,
    tunnel_address: Option<String>,
    edge_sip_port: Option<u16>,
    edge_http_port: Option<u16>,
    uds_port: Option<u16>,
    tftp_port: Option<u16>,
    allowlist_store: Option<PathBuf>,
    #[serde(default)]
    nodes: Vec<edgeway_allowlist::Node>,
    access: Option<crate::http::auth::RawAccess>,
}

/// The `[http]` section: HTTPS through the edge ([`crate::http`]). Edge fields and core
/// fields share the section; each role reads its own.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Edge: client HTTPS listener (8443).
    pub listen: Option<SocketAddr>,
    /// Edge: the HTTP tunnel listener the core dials with mutual TLS (2222).
    pub tunnel_listen: Option<SocketAddr>,
    /// Edge: largest request head (line and headers) a client may send (default 16 KiB).
    pub max_header_bytes: usize,
    /// Edge: largest request body a client may send (default 16 MiB): a larger
    /// Content-Length gets 413 from the head, a chunked body once it passes the limit
    /// (chunked bodies are read whole before forwarding); the connection is then closed.
    pub max_body_bytes: u64,
    /// Core: the edge's tunnel listener to dial.
    pub tunnel_address: Option<SocketAddr>,
    /// Core: SIP TLS port of the edge, as get_edge_config advertises it (default 5061).
    pub edge_sip_port: u16,
    /// Core: HTTPS port of the edge, as get_edge_config advertises it (default 8443).
    pub edge_http_port: u16,
    /// Core: UDS (HTTPS) port of the Unified CM nodes (default 8443).
    pub uds_port: u16,
    /// Core: TFTP configuration file (HTTP) port of the Unified CM nodes (default 6970).
    pub tftp_port: u16,
    /// Core: the rules store `edgewayctl allowlist upload` writes (absent: automatic rules only).
    pub allowlist_store: Option<PathBuf>,
    /// Core: further nodes (IM and Presence, Unity Connection) for automatic rules.
    pub nodes: Vec<edgeway_allowlist::Node>,
    /// Core: MRA access control (`[http.access]`; absent: authentication path "None").
    pub access: crate::http::auth::AccessConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    sip_listen: Option<String>,
    traversal_listen: Option<String>,
    sip_host: Option<String>,
    tls_verify_subject_name: Option<String>,
    max_connections_per_source: Option<usize>,
    tls_handshake_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    traversal_dead_peer_ms: Option<u64>,
    retry_after_s: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCore {
    edge_address: Option<String>,
    edge_name: Option<String>,
    sip_listen: Option<String>,
    sip_host: Option<String>,
    sip_path_headers: Option<bool>,
    keepalive_interval_ms: Option<u64>,
    dead_peer_timeout_ms: Option<u64>,
    reconnect_max_ms: Option<u64>,
    retry_after_s: Option<u32>,
    call_setup_timeout_ms: Option<u64>,
    #[serde(default)]
    domains: Vec<RawDomain>,
    #[serde(default)]
    ucm: Vec<RawUcm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: Option<String>,
    sip_registrations: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUcm {
    name: Option<String>,
    address: Option<String>,
    transport: Option<UcmTransport>,
}

/// Certificate, key and trust anchor paths.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// PEM certificate chain of this node.
    pub certificate: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates this node trusts (for the traversal peer and Unified CM).
    pub ca: PathBuf,
}

/// Edge-only settings.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Client SIP over TLS listener (5061).
    pub sip_listen: SocketAddr,
    /// Traversal zone listener the core dials (7001).
    pub traversal_listen: SocketAddr,
    /// Host name the edge writes into Via, Path and Record-Route.
    pub sip_host: String,
    /// "TLS verify subject name": must equal the core certificate's CN or a SAN.
    pub tls_verify_subject_name: String,
    /// Most simultaneous client connections from one source address.
    pub max_connections_per_source: usize,
    /// A client that has not finished its TLS handshake by then is dropped.
    pub tls_handshake_timeout: Duration,
    /// A client connection with no bytes (not even a keep-alive) for this long is closed.
    pub idle_timeout: Duration,
    /// The traversal connection is dropped after this long without a byte from the core.
    pub traversal_dead_peer: Duration,
    /// Retry-After seconds sent while in maintenance mode.
    pub retry_after_s: u32,
}

/// One configured SIP domain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DomainConfig {
    /// The domain (compared case-insensitively with the AOR's host).
    pub name: String,
    /// "SIP registrations and provisioning on Unified CM".
    pub sip_registrations: bool,
}

/// One Unified CM node the core proxies to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UcmNode {
    /// Node name (zones are named after it).
    pub name: String,
    /// Address `host:port` as configured.
    pub address: String,
    /// Resolved socket address.
    pub socket: SocketAddr,
    /// Host part of `address` (the TLS server name).
    pub host: String,
    /// Transport the core uses to this node.
    pub transport: UcmTransport,
}

/// Core-only settings.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The edge's traversal listener to dial.
    pub edge_address: SocketAddr,
    /// Name the edge's certificate must carry (CN or SAN).
    pub edge_name: String,
    /// TCP listener for requests Unified CM opens connections for.
    pub sip_listen: SocketAddr,
    /// Host name the core writes into Via, Path and rewritten Contacts.
    pub sip_host: String,
    /// "SIP Path headers": add a Path and keep the Contact instead of rewriting it.
    pub sip_path_headers: bool,
    /// Interval between CRLF pings on the traversal zone.
    pub keepalive_interval: Duration,
    /// The traversal connection is declared dead after this long without a byte.
    pub dead_peer_timeout: Duration,
    /// Ceiling of the exponential reconnect backoff.
    pub reconnect_max: Duration,
    /// Retry-After seconds sent while in maintenance mode.
    pub retry_after_s: u32,
    /// A call not answered within this long is cancelled on both legs (default 180 s,
    /// Unified CM's maximum ring time).
    pub call_setup_timeout: Duration,
    /// Configured domains.
    pub domains: Vec<DomainConfig>,
    /// Configured Unified CM nodes, in configuration order (which is the route order).
    pub ucm: Vec<UcmNode>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Edge or core.
    pub role: Role,
    /// This node's name.
    pub node_name: String,
    /// Where runtime files live (admin socket by default).
    pub state_dir: PathBuf,
    /// The admin API's Unix socket.
    pub admin_socket: PathBuf,
    /// Where to write the `ready` JSON, if anywhere.
    pub ready_file: Option<PathBuf>,
    /// Largest SIP message accepted (default 64 KiB).
    pub max_message_size: usize,
    /// Maintenance mode at start.
    pub maintenance: bool,
    /// Certificate paths.
    pub tls: TlsPaths,
    /// Present when `role = "edge"`.
    pub edge: Option<EdgeConfig>,
    /// Present when `role = "core"`.
    pub core: Option<CoreConfig>,
    /// Present when the file has an `[http]` section.
    pub http: Option<HttpConfig>,
    /// Present when `[media]` is.
    pub media: Option<MediaConfig>,
    /// Edge: automated intrusion protection (`[protection]`; absent: off).
    pub protection: Option<crate::protect::ProtectionConfig>,
}

fn required<T>(value: Option<T>, name: &str) -> Result<T, ConfigError> {
    value.ok_or_else(|| field(name, "missing (required)"))
}

fn socket(value: Option<String>, name: &str) -> Result<SocketAddr, ConfigError> {
    let text = required(value, name)?;
    text.parse().map_err(|_| {
        field(
            name,
            format!("{text:?} is not an IP:port address (e.g. 127.0.0.1:5061)"),
        )
    })
}

fn millis(value: Option<u64>, default: u64, name: &str) -> Result<Duration, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(field(name, "must be above 0")),
        ms => Ok(Duration::from_millis(ms)),
    }
}

fn existing_file(path: Option<PathBuf>, name: &str, base: &Path) -> Result<PathBuf, ConfigError> {
    let path = required(path, name)?;
    let path = if path.is_relative() {
        base.join(path)
    } else {
        path
    };
    if !path.is_file() {
        return Err(field(name, format!("{}: no such file", path.display())));
    }
    Ok(path)
}

fn host_name(value: Option<String>, name: &str) -> Result<String, ConfigError> {
    let host = required(value, name)?;
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
    {
        return Err(field(
            name,
            format!("{host:?} is not a host name (letters, digits, '.', '-')"),
        ));
    }
    Ok(host)
}

impl Config {
    /// Reads and validates a configuration file; relative paths are taken from its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Validates configuration text; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let role = required(raw.role, "role")?;
        let node_name = host_name(raw.node_name, "node_name")?;
        let state_dir = required(raw.state_dir, "state_dir")?;
        let state_dir = if state_dir.is_relative() {
            base.join(state_dir)
        } else {
            state_dir
        };
        let admin_socket = raw
            .admin_socket
            .unwrap_or_else(|| state_dir.join("admin.sock"));
        let max_message_size = raw.max_message_size.unwrap_or(64 * 1024);
        if !(1024..=16 * 1024 * 1024).contains(&max_message_size) {
            return Err(field(
                "max_message_size",
                format!("{max_message_size} is outside 1024..=16777216 bytes"),
            ));
        }
        let raw_tls = required(raw.tls, "tls")?;
        let tls = TlsPaths {
            certificate: existing_file(raw_tls.certificate, "tls.certificate", base)?,
            key: existing_file(raw_tls.key, "tls.key", base)?,
            ca: existing_file(raw_tls.ca, "tls.ca", base)?,
        };
        if role == Role::Core && raw.protection.is_some() {
            return Err(field(
                "protection",
                "intrusion protection runs on the edge; the guide recommends it off on the core",
            ));
        }
        let (edge, core) = match role {
            Role::Edge => {
                if raw.core.is_some() {
                    return Err(field("core", "present but role is \"edge\""));
                }
                (Some(edge_config(required(raw.edge, "edge")?)?), None)
            }
            Role::Core => {
                if raw.edge.is_some() {
                    return Err(field("edge", "present but role is \"core\""));
                }
                (None, Some(core_config(required(raw.core, "core")?)?))
            }
        };
        Ok(Config {
            role,
            node_name,
            state_dir,
            admin_socket,
            ready_file: raw.ready_file,
            max_message_size,
            maintenance: raw.maintenance.unwrap_or(false),
            tls,
            edge,
            core,
            http: raw.http.map(|h| http_config(h, base)).transpose()?,
            media: raw.media.map(media_config).transpose()?,
            protection: raw
                .protection
                .map(|p| crate::protect::ProtectionConfig::from_raw(p, base))
                .transpose()?,
        })
    }
}

fn ipv4(value: Option<String>, name: &str) -> Result<std::net::Ipv4Addr, ConfigError> {
    let text = required(value, name)?;
    text.parse()
        .map_err(|_| field(name, format!("{text:?} is not an IPv4 address")))
}

fn media_config(raw: RawMedia) -> Result<MediaConfig, ConfigError> {
    let table_dir = match (raw.table_dir, raw.node) {
        (Some(dir), None) => dir,
        (None, Some(node)) => {
            Path::new("/dev/shm/edgeway").join(host_name(Some(node), "media.node")?)
        }
        _ => {
            return Err(field(
                "media.table_dir",
                "give exactly one of table_dir or node",
            ))
        }
    };
    let address = ipv4(raw.address, "media.address")?;
    let inside_address = match raw.inside_address {
        Some(a) => ipv4(Some(a), "media.inside_address")?,
        None => address,
    };
    let demux_ports = raw.demux_ports.unwrap_or_else(|| vec![2776]);
    if demux_ports.is_empty() || demux_ports.iter().any(|p| p % 2 != 0 || *p == 0) {
        return Err(field(
            "media.demux_ports",
            "one or more even, non-zero RTP ports",
        ));
    }
    let workers = raw.workers.unwrap_or(1);
    if !(1..=64).contains(&workers) {
        return Err(field(
            "media.workers",
            format!("{workers} is outside 1..=64"),
        ));
    }
    let inside_secure = match raw.inside_security.as_deref() {
        None | Some("secure") => true,
        Some("non-secure") => false,
        Some(other) => {
            return Err(field(
                "media.inside_security",
                format!("{other:?}: expected \"secure\" or \"non-secure\""),
            ))
        }
    };
    Ok(MediaConfig {
        table_dir,
        address,
        inside_address,
        demux_ports,
        workers,
        idle_timeout_ms: raw.idle_timeout_ms.unwrap_or(0),
        inside_secure,
    })
}

fn optional_socket(value: Option<String>, name: &str) -> Result<Option<SocketAddr>, ConfigError> {
    value.map(|v| socket(Some(v), name)).transpose()
}

fn http_config(raw: RawHttp, base: &Path) -> Result<HttpConfig, ConfigError> {
    let max_header_bytes = raw.max_header_bytes.unwrap_or(16 * 1024);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        return Err(field(
            "http.max_header_bytes",
            format!("{max_header_bytes} is outside 1024..=1048576 bytes"),
        ));
    }
    Ok(HttpConfig {
        listen: optional_socket(raw.listen, "http.listen")?,
        tunnel_listen: optional_socket(raw.tunnel_listen, "http.tunnel_listen")?,
        max_header_bytes,
        max_body_bytes: match raw.max_body_bytes.unwrap_or(16 << 20) {
            0 => return Err(field("http.max_body_bytes", "must be above 0")),
            n => n,
        },
        tunnel_address: optional_socket(raw.tunnel_address, "http.tunnel_address")?,
        edge_sip_port: raw.edge_sip_port.unwrap_or(5061),
        edge_http_port: raw.edge_http_port.unwrap_or(8443),
        uds_port: raw.uds_port.unwrap_or(8443),
        tftp_port: raw.tftp_port.unwrap_or(6970),
        allowlist_store: raw
            .allowlist_store
            .map(|p| if p.is_relative() { base.join(p) } else { p }),
        nodes: raw.nodes,
        access: match raw.access {
            Some(access) => crate::http::auth::AccessConfig::from_raw(access)?,
            None => crate::http::auth::AccessConfig::absent(),
        },
    })
}

fn edge_config(raw: RawEdge) -> Result<EdgeConfig, ConfigError> {
    let max_connections_per_source = raw.max_connections_per_source.unwrap_or(64);
    if max_connections_per_source == 0 {
        return Err(field("edge.max_connections_per_source", "must be above 0"));
    }
    Ok(EdgeConfig {
        sip_listen: socket(raw.sip_listen, "edge.sip_listen")?,
        traversal_listen: socket(raw.traversal_listen, "edge.traversal_listen")?,
        sip_host: host_name(raw.sip_host, "edge.sip_host")?,
        tls_verify_subject_name: host_name(
            raw.tls_verify_subject_name,
            "edge.tls_verify_subject_name",
        )?,
        max_connections_per_source,
        tls_handshake_timeout: millis(
            raw.tls_handshake_timeout_ms,
            10_000,
            "edge.tls_handshake_timeout_ms",
        )?,
        idle_timeout: millis(raw.idle_timeout_ms, 300_000, "edge.idle_timeout_ms")?,
        traversal_dead_peer: millis(
            raw.traversal_dead_peer_ms,
            30_000,
            "edge.traversal_dead_peer_ms",
        )?,
        retry_after_s: raw.retry_after_s.unwrap_or(60),
    })
}

fn core_config(raw: RawCore) -> Result<CoreConfig, ConfigError> {
    let mut domains = Vec::new();
    for (i, d) in raw.domains.into_iter().enumerate() {
        let name = host_name(d.name, &format!("core.domains[{i}].name"))?.to_ascii_lowercase();
        if domains.iter().any(|x: &DomainConfig| x.name == name) {
            return Err(field(
                format!("core.domains[{i}].name"),
                format!("{name:?} is configured twice"),
            ));
        }
        domains.push(DomainConfig {
            name,
            sip_registrations: d.sip_registrations.unwrap_or(true),
        });
    }
    let mut ucm = Vec::new();
    for (i, u) in raw.ucm.into_iter().enumerate() {
        let at = |f: &str| format!("core.ucm[{i}].{f}");
        let name = host_name(u.name, &at("name"))?;
        if ucm.iter().any(|x: &UcmNode| x.name == name) {
            return Err(field(at("name"), format!("{name:?} is configured twice")));
        }
        let address = required(u.address, &at("address"))?;
        let (host, _port) = address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                field(
                    at("address"),
                    format!("{address:?} is not host:port (e.g. 10.0.0.5:5060)"),
                )
            })?;
        // Only literal addresses: the control plane does no DNS (resolution would block).
        let socket: SocketAddr = address.parse().map_err(|_| {
            field(
                at("address"),
                format!("{address:?}: host must be an IP address (no DNS lookups)"),
            )
        })?;
        ucm.push(UcmNode {
            name,
            address,
            socket,
            host,
            transport: u.transport.unwrap_or(UcmTransport::Tcp),
        });
    }
    if ucm.is_empty() {
        return Err(field(
            "core.ucm",
            "at least one Unified CM node is required",
        ));
    }
    let retry_after_s = raw.retry_after_s.unwrap_or(60);
    Ok(CoreConfig {
        edge_address: socket(raw.edge_address, "core.edge_address")?,
        edge_name: host_name(raw.edge_name, "core.edge_name")?,
        sip_listen: socket(raw.sip_listen, "core.sip_listen")?,
        sip_host: host_name(raw.sip_host, "core.sip_host")?,
        sip_path_headers: raw.sip_path_headers.unwrap_or(false),
        keepalive_interval: millis(
            raw.keepalive_interval_ms,
            5_000,
            "core.keepalive_interval_ms",
        )?,
        dead_peer_timeout: millis(
            raw.dead_peer_timeout_ms,
            15_000,
            "core.dead_peer_timeout_ms",
        )?,
        reconnect_max: millis(raw.reconnect_max_ms, 5_000, "core.reconnect_max_ms")?,
        retry_after_s,
        call_setup_timeout: millis(
            raw.call_setup_timeout_ms,
            180_000,
            "core.call_setup_timeout_ms",
        )?,
        domains,
        ucm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("edgeway-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for f in ["c.pem", "c.key", "ca.pem"] {
            std::fs::write(dir.join(f), "x").expect("file");
        }
        dir
    }

    const CORE: &str = r#"
role = "core"
node_name = "core1"
state_dir = "state"
[tls]
certificate = "c.pem"
key = "c.key"
ca = "ca.pem"
[core]
edge_address = "127.0.0.1:7001"
edge_name = "edge.example.com"
sip_listen = "127.0.0.1:0"
sip_host = "core.example.com"
[[core.domains]]
name = "example.com"
[[core.ucm]]
name = "cucm1"
address = "127.0.0.1:5060"
[[core.ucm]]
name = "cucm2"
address = "127.0.0.1:5061"
transport = "tls"
"#;

    #[test]
    fn a_valid_core_config_loads() {
        let cfg = Config::parse(CORE, &files()).expect("valid");
        let core = cfg.core.expect("core");
        assert_eq!(core.ucm[1].transport, UcmTransport::Tls);
        assert!(core.domains[0].sip_registrations);
        assert_eq!(cfg.max_message_size, 65536);
    }

    #[test]
    fn errors_name_the_field() {
        let dir = files();
        let bad = CORE.replace("127.0.0.1:5061", "cucm2.example.com");
        let err = Config::parse(&bad, &dir).expect_err("refused").to_string();
        assert!(err.starts_with("core.ucm[1].address: "), "{err}");
        let bad = CORE.replace("key = \"c.key\"", "key = \"missing.key\"");
        let err = Config::parse(&bad, &dir).expect_err("refused").to_string();
        assert!(err.starts_with("tls.key: "), "{err}");
        let bad = CORE.replace("edge_address = \"127.0.0.1:7001\"\n", "");
        let err = Config::parse(&bad, &dir).expect_err("refused").to_string();
        assert_eq!(err, "core.edge_address: missing (required)");
        let bad = CORE.replace("sip_host", "sip_hots");
        let err = Config::parse(&bad, &dir).expect_err("refused").to_string();
        assert!(err.contains("sip_hots"), "{err}");
    }
}
