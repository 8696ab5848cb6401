//! ucm-sim's settings: one struct read both from the command line and from a TOML file
//! (`--config`), command-line values winning.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::digest::DigestConfig;
use crate::error::UcmSimError;
use crate::registrar::RegistrarConfig;
use crate::users::{SecurityProfile, UserDirectory};

/// Every option of `ucm-sim`; in a `--config` file the same names with `_` (TOML).
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Listen for SIP over TCP on ADDR (e.g. 127.0.0.1:5060, or port 0 for any).
    #[arg(long, value_name = "ADDR")]
    pub sip_tcp: Option<String>,
    /// Listen for SIP over TLS on ADDR (needs --cert and --key).
    #[arg(long, value_name = "ADDR")]
    pub sip_tls: Option<String>,
    /// Serve the HTTP side (UDS, TFTP configuration files, vmrest) in plain HTTP here.
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    pub http: Option<String>,
    /// Serve the HTTP side over TLS here (with --cert and --key).
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    pub https: Option<String>,
    /// TLS certificate chain (PEM), leaf first.
    #[arg(long, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// Admin API (JSON lines over TCP) on ADDR; must be a loopback address [default: 127.0.0.1:0].
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Users file (TOML `[[user]]` tables: name, password, number, security_profile, devices).
    #[arg(long, value_name = "FILE")]
    pub users: Option<PathBuf>,
    /// Also generate N users user0001.. (password P0001.. for --password-prefix P, number 100001..).
    #[arg(long, value_name = "N")]
    pub generate_users: Option<usize>,
    /// Password prefix of generated users [default: password].
    #[arg(long, value_name = "P")]
    pub password_prefix: Option<String>,
    /// Security profile of generated users: secure or non-secure [default: secure].
    #[arg(long, value_name = "PROFILE")]
    pub generated_profile: Option<String>,
    /// A registration domain served (repeatable); REGISTERs for others get 403. None: any.
    #[arg(long = "domain", value_name = "DOMAIN")]
    #[serde(default)]
    pub domains: Vec<String>,
    /// Digest realm [default: ccmsipline, as Unified CM].
    #[arg(long)]
    pub realm: Option<String>,
    /// Shortest accepted registration expiry in seconds; shorter gets 423 [default: 60].
    #[arg(long, value_name = "S")]
    pub min_expires: Option<u32>,
    /// Longest granted expiry in seconds [default: 3600].
    #[arg(long, value_name = "S")]
    pub max_expires: Option<u32>,
    /// Seconds a nonce is accepted before it is answered stale=true [default: 300].
    #[arg(long, value_name = "S")]
    pub nonce_lifetime: Option<u64>,
    /// Largest SIP message accepted in bytes; larger closes the connection [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Refuse (403) secure-profile users registering over plain TCP, as a cluster in mixed
    /// mode does; by default they are accepted ("downgraded to TCP").
    #[arg(long)]
    #[serde(default)]
    pub require_tls_for_secure: bool,
    /// Seconds a TLS client has to finish its handshake before it is dropped [default: 10].
    #[arg(long, value_name = "S")]
    pub tls_handshake_timeout: Option<u64>,
    /// Runtime worker threads [default: 2].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// The address simulated phones bind their media sockets on [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub media_ip: Option<std::net::IpAddr>,
    /// Once listening, write the bound addresses here as one JSON line.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// OAuth: the issuer name (`iss`) of the access tokens [default: ucm-sim].
    #[arg(long, value_name = "NAME")]
    pub oauth_issuer: Option<String>,
    /// OAuth: access token lifetime in seconds [default: 3600, as Unified CM].
    #[arg(long, value_name = "S")]
    pub oauth_access_lifetime: Option<u64>,
    /// OAuth: refresh token lifetime in seconds [default: 5184000, 60 days, as Unified CM].
    #[arg(long, value_name = "S")]
    pub oauth_refresh_lifetime: Option<u64>,
    /// OAuth: a user whose access policy excludes MRA (tokens without the `mra` scope;
    /// repeatable).
    #[arg(long = "oauth-no-mra", value_name = "USER")]
    #[serde(default)]
    pub oauth_no_mra: Vec<String>,
}

impl Settings {
    /// Reads a `--config` file.
    pub fn from_toml(text: &str) -> Result<Settings, UcmSimError> {
        toml::from_str(text).map_err(|e| UcmSimError::Config(e.to_string()))
    }

    /// These settings with every unset field taken from `base`.
    pub fn over(self, base: Settings) -> Settings {
        Settings {
            sip_tcp: self.sip_tcp.or(base.sip_tcp),
            sip_tls: self.sip_tls.or(base.sip_tls),
            http: self.http.or(base.http),
            https: self.https.or(base.https),
            cert: self.cert.or(base.cert),
            key: self.key.or(base.key),
            admin: self.admin.or(base.admin),
            users: self.users.or(base.users),
            generate_users: self.generate_users.or(base.generate_users),
            password_prefix: self.password_prefix.or(base.password_prefix),
            generated_profile: self.generated_profile.or(base.generated_profile),
            domains: if self.domains.is_empty() {
                base.domains
            } else {
                self.domains
            },
            realm: self.realm.or(base.realm),
            min_expires: self.min_expires.or(base.min_expires),
            max_expires: self.max_expires.or(base.max_expires),
            nonce_lifetime: self.nonce_lifetime.or(base.nonce_lifetime),
            max_message_size: self.max_message_size.or(base.max_message_size),
            require_tls_for_secure: self.require_tls_for_secure || base.require_tls_for_secure,
            tls_handshake_timeout: self.tls_handshake_timeout.or(base.tls_handshake_timeout),
            threads: self.threads.or(base.threads),
            media_ip: self.media_ip.or(base.media_ip),
            ready_file: self.ready_file.or(base.ready_file),
            oauth_issuer: self.oauth_issuer.or(base.oauth_issuer),
            oauth_access_lifetime: self.oauth_access_lifetime.or(base.oauth_access_lifetime),
            oauth_refresh_lifetime: self.oauth_refresh_lifetime.or(base.oauth_refresh_lifetime),
            oauth_no_mra: if self.oauth_no_mra.is_empty() {
                base.oauth_no_mra
            } else {
                self.oauth_no_mra
            },
        }
    }

    /// The registrar configuration these settings describe.
    pub fn registrar_config(&self) -> Result<RegistrarConfig, UcmSimError> {
        let d = RegistrarConfig::default();
        let cfg = RegistrarConfig {
            domains: self
                .domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            min_expires: self.min_expires.unwrap_or(d.min_expires),
            max_expires: self.max_expires.unwrap_or(d.max_expires),
            default_expires: d.default_expires,
            max_bindings_per_user: d.max_bindings_per_user,
            require_tls_for_secure: self.require_tls_for_secure,
            digest: DigestConfig {
                realm: self.realm.clone().unwrap_or(d.digest.realm),
                nonce_lifetime: self
                    .nonce_lifetime
                    .map(Duration::from_secs)
                    .unwrap_or(d.digest.nonce_lifetime),
            },
        };
        if cfg.min_expires > cfg.max_expires {
            return Err(UcmSimError::Config(format!(
                "min_expires {} is above max_expires {}",
                cfg.min_expires, cfg.max_expires
            )));
        }
        Ok(RegistrarConfig {
            default_expires: cfg.default_expires.clamp(cfg.min_expires, cfg.max_expires),
            ..cfg
        })
    }

    /// The user directory: the users file's users, then the generated ones.
    pub fn user_directory(&self) -> Result<UserDirectory, UcmSimError> {
        let mut dir = match &self.users {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    UcmSimError::UsersFile(format!("cannot read {}: {e}", path.display()))
                })?;
                UserDirectory::from_toml(&text)?
            }
            None => UserDirectory::default(),
        };
        if let Some(n) = self.generate_users {
            let profile = match self.generated_profile.as_deref() {
                None | Some("secure") => SecurityProfile::Secure,
                Some("non-secure") => SecurityProfile::NonSecure,
                Some(other) => {
                    return Err(UcmSimError::Config(format!(
                        "generated_profile {other:?} is not secure or non-secure"
                    )))
                }
            };
            let prefix = self.password_prefix.as_deref().unwrap_or("password");
            for user in UserDirectory::generated(n, prefix, profile).iter() {
                dir.insert(user.clone())?;
            }
        }
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_wins_over_file_and_unknown_keys_are_refused() {
        let file = Settings::from_toml(
            "sip_tcp = \"127.0.0.1:0\"\ndomains = [\"example.com\"]\nmin_expires = 30\n",
        )
        .expect("valid");
        let cli = Settings {
            min_expires: Some(90),
            ..Settings::default()
        };
        let s = cli.over(file);
        assert_eq!(s.sip_tcp.as_deref(), Some("127.0.0.1:0"));
        let cfg = s.registrar_config().expect("valid");
        assert_eq!(cfg.min_expires, 90);
        assert_eq!(cfg.domains, ["example.com"]);
        let err = Settings::from_toml("sip_tpc = \"x\"\n").expect_err("typo");
        assert!(err.to_string().contains("sip_tpc"), "{err}");
    }

    #[test]
    fn inconsistent_expiry_bounds_are_refused() {
        let s = Settings {
            min_expires: Some(100),
            max_expires: Some(50),
            ..Settings::default()
        };
        assert!(s.registrar_config().is_err());
    }
}
