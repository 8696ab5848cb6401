//! A throwaway certificate authority for tests: [`TestPki::new`] makes a CA in a directory and
//! [`TestPki::issue`] writes PEM certificate/key pairs signed by it, with the subject
//! alternative names and Extended Key Usages a test asks for (so a test can make, say, a core
//! certificate that lacks the Client Authentication EKU and watch it be refused).
//!
//! Keys are ECDSA P-256 (rcgen on ring). Every file is PEM: `<name>.pem` holds the
//! certificate, `<name>.key` the PKCS#8 private key, `ca.pem`/`ca.key` the CA.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Which Extended Key Usages a certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eku {
    /// TLS Web Server Authentication only.
    ServerAuth,
    /// TLS Web Client Authentication only.
    ClientAuth,
    /// Both server and client authentication (what a traversal-zone peer needs).
    Both,
    /// No Extended Key Usage extension at all.
    None,
}

/// A certificate and key written by [`TestPki::issue`].
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// Path of the PEM certificate.
    pub cert_path: PathBuf,
    /// Path of the PEM (PKCS#8) private key.
    pub key_path: PathBuf,
    /// The certificate in PEM.
    pub cert_pem: String,
    /// The private key in PEM.
    pub key_pem: String,
}

/// A test CA living in a directory; certificates it issues are written beside it.
pub struct TestPki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The CA key stays out of Debug output.
        f.debug_struct("TestPki").field("dir", &self.dir).finish()
    }
}

fn rcgen_error(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("rcgen: {e}"))
}

impl TestPki {
    /// Makes a CA ("edgeway test CA") in `dir` (created if missing): `ca.pem` and `ca.key`.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<TestPki> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "edgeway test CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        fs::write(dir.join("ca.pem"), cert.pem())?;
        fs::write(dir.join("ca.key"), key.serialize_pem())?;
        Ok(TestPki {
            dir,
            issuer: Issuer::new(params, key),
        })
    }

    /// Path of the CA certificate (PEM), the trust anchor for everything issued here.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The directory holding the CA and the issued files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues a certificate with common name `name` and the given SANs (DNS names, or IP
    /// addresses when they parse as one), writing `<name>.pem` and `<name>.key`.
    pub fn issue(&self, name: &str, sans: &[&str], ekus: Eku) -> io::Result<IssuedCert> {
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(
                    (*san).to_string().try_into().map_err(rcgen_error)?,
                )),
            })
            .collect::<io::Result<_>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match ekus {
            Eku::ServerAuth => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Eku::ClientAuth => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Eku::Both => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Eku::None => Vec::new(),
        };
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        let issued = IssuedCert {
            cert_path: self.dir.join(format!("{name}.pem")),
            key_path: self.dir.join(format!("{name}.key")),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        fs::write(&issued.cert_path, &issued.cert_pem)?;
        fs::write(&issued.key_path, &issued.key_pem)?;
        Ok(issued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_certificates_with_the_requested_ekus() -> io::Result<()> {
        let dir = std::env::temp_dir().join(format!("edgeway-pki-{}", std::process::id()));
        let pki = TestPki::new(&dir)?;
        assert!(pki.ca_path().exists());
        let core = pki.issue(
            "core.example.com",
            &["core.example.com", "127.0.0.1"],
            Eku::ServerAuth,
        )?;
        assert!(core.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(core.key_pem.contains("PRIVATE KEY"));
        let both = pki.issue("edge", &["edge.example.com"], Eku::Both)?;
        assert_ne!(both.cert_pem, core.cert_pem);
        let ekus = |pem: &str| {
            let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
            let cert = pem.parse_x509().expect("x509");
            let eku = cert.extended_key_usage().expect("eku ext");
            eku.map(|e| (e.value.server_auth, e.value.client_auth))
        };
        assert_eq!(ekus(&core.cert_pem), Some((true, false)));
        assert_eq!(ekus(&both.cert_pem), Some((true, true)));
        let client = pki.issue("client", &["c"], Eku::ClientAuth)?;
        assert_eq!(ekus(&client.cert_pem), Some((false, true)));
        let none = pki.issue("none", &["n"], Eku::None)?;
        assert_eq!(ekus(&none.cert_pem), None);
        fs::remove_dir_all(&dir)
    }
}
