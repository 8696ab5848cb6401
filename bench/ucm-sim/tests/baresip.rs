//! baresip, a real SIP client, registering to ucm-sim directly over TLS with digest
//! authentication, answering OPTIONS that ucm-sim sends down baresip's own TLS connection,
//! and refused with a wrong password.

mod common;

use std::time::Duration;

use common::ALICE;
use edgeway_testkit::peers::{
    require_peer, Baresip, BaresipOptions, ScratchDir, UcmSim, UcmSimOptions,
};

#[test]
fn baresip_registers_over_tls_and_answers_requests_on_its_connection() {
    let Some(baresip) = require_peer("baresip", "baresip registering to ucm-sim") else {
        return;
    };
    let dir = ScratchDir::new("ucm-baresip");
    let (pki, cert) = common::server_cert(&dir, "ucm");
    let opts = UcmSimOptions {
        users_toml: Some(ALICE.to_owned()),
        domains: vec!["example.com".to_owned()],
        ..UcmSimOptions::default()
    }
    .with_tls(&cert.cert_pem, &cert.key_pem);
    let ucm = UcmSim::spawn(env!("CARGO_BIN_EXE_ucm-sim").as_ref(), &opts);
    let account = |password: &str| BaresipOptions {
        user: "alice".to_owned(),
        domain: "example.com".to_owned(),
        password: password.to_owned(),
        outbound: ucm.sip_tls.expect("tls"),
        transport: "tls".to_owned(),
        ca_pem: Some(std::fs::read_to_string(pki.ca_path()).expect("CA")),
        regint: 600,
    };

    let mut client = Baresip::spawn(&baresip, &account("alice-pw"));
    assert!(
        client.wait_registered(Duration::from_secs(10)),
        "baresip did not register:\n{}\nucm-sim:\n{}",
        client.output(),
        ucm.output()
    );
    let bindings = ucm.bindings();
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    assert_eq!(bindings[0]["user"], "alice");
    assert_eq!(bindings[0]["transport"], "tls");
    let expires = bindings[0]["expires"].as_u64().unwrap_or(0);
    assert!(
        (590..=600).contains(&expires),
        "regint 600 granted: {expires}"
    );
    // ucm-sim writes the OPTIONS on the TLS connection baresip registered on; baresip's
    // answer coming back is the proof (it has no other connection to ucm-sim).
    assert_eq!(ucm.send("OPTIONS", "1001"), Ok(200));
    let c = ucm.counters();
    assert_eq!(c["connections_accepted"], 1, "{c}");
    assert_eq!(c["sent"], 1, "{c}");
    drop(client);

    let mut wrong = Baresip::spawn(&baresip, &account("not-alice-pw"));
    assert!(!wrong.wait_registered(Duration::from_secs(3)));
    let out = wrong.output();
    assert!(out.contains("403 Forbidden"), "{out}");
    assert!(ucm.counter("auth_failures") >= 1);
}
