//! What ucm-sim's integration tests share: a one-user directory and a server certificate.
#![allow(dead_code)] // each test binary uses its own part

use edgeway_testkit::peers::ScratchDir;
use edgeway_testkit::pki::{Eku, IssuedCert, TestPki};

/// A users file with alice (number 1001, password `alice-pw`, secure profile).
pub(crate) const ALICE: &str = r#"
[[user]]
name = "alice"
password = "alice-pw"
number = "1001"
security_profile = "secure"
devices = ["CSFALICE"]
"#;

/// A throwaway CA in `dir` and a server certificate `name` for 127.0.0.1 signed by it.
pub(crate) fn server_cert(dir: &ScratchDir, name: &str) -> (TestPki, IssuedCert) {
    let pki = TestPki::new(dir.path().join("pki")).expect("test CA");
    let cert = pki
        .issue(name, &["127.0.0.1", "localhost"], Eku::ServerAuth)
        .expect("server certificate");
    (pki, cert)
}
