//! TLS settings for the three kinds of connection (rustls on ring): clients to the edge,
//! the traversal zone (mutual TLS, the edge checking the core's EKU and subject name), and
//! the core to Unified CM.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};

use crate::counters::Counters;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{field}: {path}: {reason}")]
    Pem {
        /// The configuration field naming the file.
        field: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The certificate cannot serve its purpose.
    #[error("{field}: {path}: {reason}")]
    Unsuitable {
        /// The configuration field naming the file.
        field: &'static str,
        /// The file.
        path: String,
        /// What is missing.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The message the traversal zone uses when a certificate lacks clientAuth (asserted by tests).
pub const LACKS_CLIENT_AUTH: &str = "certificate lacks the Client Authentication EKU (TLS Web Client Authentication), which the traversal zone requires";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// This node's certificate chain and key, loaded from PEM.
#[derive(Debug)]
pub struct Identity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Private key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads `certificate` and `key` (the field names are for errors).
    pub fn load(certificate: &Path, key: &Path) -> Result<Identity, TlsError> {
        let chain = certificates(certificate, "tls.certificate")?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
            field: "tls.key",
            path: key.display().to_string(),
            reason: format!("no usable private key ({e})"),
        })?;
        Ok(Identity { chain, key })
    }

    fn clone_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

fn certificates(
    path: &Path,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        field,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// Loads the CA file into a root store.
pub fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(ca, "tls.ca")? {
        store.add(cert).map_err(|e| TlsError::Pem {
            field: "tls.ca",
            path: ca.display().to_string(),
            reason: format!("not a usable CA certificate ({e})"),
        })?;
    }
    Ok(Arc::new(store))
}

/// The names a certificate answers to: its CN(s) and DNS/IP SANs, lower-cased.
pub fn certificate_names(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_ascii_lowercase)
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    names.push(d.to_ascii_lowercase())
                }
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    if let Ok(b) = <[u8; 4]>::try_from(*ip) {
                        names.push(std::net::Ipv4Addr::from(b).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(names)
}

/// Whether a certificate carries the Client Authentication EKU. Absent EKU counts as
/// lacking it: Expressway requires the EKU to be explicit on traversal certificates.
pub fn has_client_auth_eku(der: &[u8]) -> Result<bool, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    match cert.extended_key_usage() {
        Ok(Some(eku)) => Ok(eku.value.client_auth || eku.value.any),
        Ok(None) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Refuses, at configuration time, a core certificate the edge would refuse.
pub fn check_traversal_client_certificate(
    identity: &Identity,
    path: &Path,
) -> Result<(), TlsError> {
    let leaf = identity.chain.first().ok_or_else(|| TlsError::Pem {
        field: "tls.certificate",
        path: path.display().to_string(),
        reason: "empty chain".into(),
    })?;
    match has_client_auth_eku(leaf) {
        Ok(true) => Ok(()),
        Ok(false) => Err(TlsError::Unsuitable {
            field: "tls.certificate",
            path: path.display().to_string(),
            reason: LACKS_CLIENT_AUTH.into(),
        }),
        Err(e) => Err(TlsError::Pem {
            field: "tls.certificate",
            path: path.display().to_string(),
            reason: e,
        }),
    }
}

/// The edge's client-facing TLS (no client certificates), TLS 1.2 and 1.3.
pub fn client_facing_server(identity: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.clone_key())?;
    Ok(Arc::new(config))
}

/// The edge's traversal listener: mutual TLS with [`TraversalPeerVerifier`].
pub fn traversal_server(
    identity: &Identity,
    roots: Arc<RootCertStore>,
    subject_name: &str,
    counters: Arc<Counters>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| rustls::Error::General(format!("client verifier: {e}")))?;
    let verifier = Arc::new(TraversalPeerVerifier {
        inner,
        subject_name: subject_name.to_ascii_lowercase(),
        counters,
    });
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.clone_key())?;
    Ok(Arc::new(config))
}

/// A TLS client presenting `identity` (the core on the traversal zone), or none (to
/// Unified CM), verifying the server against `roots`.
pub fn client(
    identity: Option<&Identity>,
    roots: Arc<RootCertStore>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Verifies the core on the traversal zone: the Client Authentication EKU first (so the
/// refusal says exactly that), then the chain to the configured CA, then that the "TLS
/// verify subject name" is the certificate's CN or one of its SANs.
#[derive(Debug)]
pub struct TraversalPeerVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    subject_name: String,
    counters: Arc<Counters>,
}

impl ClientCertVerifier for TraversalPeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let names = certificate_names(end_entity).unwrap_or_default();
        let who = names.first().cloned().unwrap_or_else(|| "?".into());
        if !has_client_auth_eku(end_entity).unwrap_or(false) {
            self.counters
                .traversal_refused_eku
                .fetch_add(1, Ordering::Relaxed);
            let msg = format!("traversal peer {who:?} refused: {LACKS_CLIENT_AUTH}");
            eprintln!("edgeway-control: {msg}");
            return Err(rustls::Error::General(msg));
        }
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                self.counters
                    .traversal_tls_failed
                    .fetch_add(1, Ordering::Relaxed);
                eprintln!("edgeway-control: traversal peer {who:?} refused: {e}");
            })?;
        if !names.contains(&self.subject_name) {
            self.counters
                .traversal_refused_subject
                .fetch_add(1, Ordering::Relaxed);
            let msg = format!(
                "traversal peer refused: TLS verify subject name {:?} is not the certificate's CN or a SAN (it has {names:?})",
                self.subject_name
            );
            eprintln!("edgeway-control: {msg}");
            return Err(rustls::Error::General(msg));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
