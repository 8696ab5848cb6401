//! sipp (Debian sip-tester), a real SIP peer, registering against the ucm-sim binary over
//! TCP and TLS with digest authentication: register, refresh, unregister; a wrong password
//! and an unknown domain refused; OPTIONS sent to a sipp client down its own TLS connection.

mod common;

use std::time::Duration;

use edgeway_testkit::peers::{
    require_peer, sipp_scenario as scenario, sipp_users_csv, ScratchDir, Sipp, SippTransport,
    UcmSim, UcmSimOptions,
};

/// `count` users `user0001`.. with password `<prefix>0001`.. (ucm-sim's --generate-users).
fn csv(count: usize, domain: &str, password_prefix: &str) -> String {
    let rows: Vec<(String, String)> = (1..=count)
        .map(|i| (format!("user{i:04}"), format!("{password_prefix}{i:04}")))
        .collect();
    sipp_users_csv(rows.iter().map(|(u, p)| (u.as_str(), p.as_str(), domain)))
}

/// ucm-sim with 50 generated users on TCP and TLS (a certificate for 127.0.0.1 from a
/// throwaway CA), serving example.com.
fn ucm(dir: &ScratchDir) -> UcmSim {
    let (_pki, cert) = common::server_cert(dir, "ucm");
    let opts = UcmSimOptions {
        tcp: true,
        generate_users: Some((50, "pw".to_owned())),
        domains: vec!["example.com".to_owned()],
        ..UcmSimOptions::default()
    }
    .with_tls(&cert.cert_pem, &cert.key_pem);
    UcmSim::spawn(env!("CARGO_BIN_EXE_ucm-sim").as_ref(), &opts)
}

#[test]
fn sipp_registers_refreshes_and_unregisters_over_tcp_and_tls() {
    let Some(sipp) = require_peer("sipp", "sipp registering against ucm-sim") else {
        return;
    };
    let dir = ScratchDir::new("ucm-sipp");
    let ucm = ucm(&dir);
    for (transport, addr) in [
        (SippTransport::Tcp, ucm.sip_tcp),
        (SippTransport::Tls, ucm.sip_tls),
        (SippTransport::TlsPerCall, ucm.sip_tls),
    ] {
        let run = Sipp::new(&sipp, &scenario("register.xml"))
            .remote(addr.expect("listener"))
            .transport(transport)
            .users_csv(&csv(10, "example.com", "pw"))
            .calls(10)
            .rate(50)
            .run();
        assert!(run.all_succeeded(), "{transport:?}: {run}");
        assert_eq!(run.successful, 10, "{transport:?}: {run}");
    }
    let c = ucm.counters();
    // 3 runs x 10 users x (register, refresh, unregister).
    assert_eq!(c["registers_ok"], 90, "{c}");
    assert_eq!(c["challenges"], 90, "{c}");
    assert_eq!(c["bindings_added"], 30, "{c}");
    assert_eq!(c["bindings_refreshed"], 30, "{c}");
    assert_eq!(c["bindings_removed"], 30, "{c}");
    assert_eq!(c["tls_handshake_failures"], 0, "{c}");
    assert!(ucm.bindings().is_empty(), "all unregistered");
}

#[test]
fn sipp_wrong_password_and_unknown_domain_are_refused() {
    let Some(sipp) = require_peer("sipp", "sipp refused by ucm-sim") else {
        return;
    };
    let dir = ScratchDir::new("ucm-sipp-refused");
    let ucm = ucm(&dir);
    let tls = ucm.sip_tls.expect("tls");
    let wrong = Sipp::new(&sipp, &scenario("register_wrong_password.xml"))
        .remote(tls)
        .transport(SippTransport::Tls)
        .users_csv(&csv(3, "example.com", "not-the-password"))
        .calls(3)
        .run();
    assert!(wrong.all_succeeded(), "403 expected for each: {wrong}");
    let domain = Sipp::new(&sipp, &scenario("register_refused.xml"))
        .remote(ucm.sip_tcp.expect("tcp"))
        .transport(SippTransport::Tcp)
        .users_csv(&csv(2, "example.org", "pw"))
        .calls(2)
        .run();
    assert!(domain.all_succeeded(), "403 expected for each: {domain}");
    assert!(
        domain.messages.contains("Domain Not Served"),
        "{}",
        domain.messages
    );
    let c = ucm.counters();
    assert_eq!(c["auth_failures"], 3, "{c}");
    assert_eq!(c["unknown_domains"], 2, "{c}");
    assert_eq!(c["registers_ok"], 0, "{c}");
    assert!(ucm.bindings().is_empty());
}

#[test]
fn options_reach_a_sipp_client_down_its_own_tls_connection() {
    let Some(sipp) = require_peer("sipp", "ucm-sim sending OPTIONS to a sipp client") else {
        return;
    };
    let dir = ScratchDir::new("ucm-sipp-send");
    let ucm = ucm(&dir);
    let tls = ucm.sip_tls.expect("tls");
    let client = std::thread::spawn(move || {
        Sipp::new(&sipp, &scenario("register_hold.xml"))
            .remote(tls)
            .transport(SippTransport::Tls)
            .users_csv(&csv(1, "example.com", "pw"))
            .arg("-aa")
            .run()
    });
    let binding = ucm.wait_for_bindings(1, Duration::from_secs(10)).remove(0);
    assert_eq!(binding["transport"], "tls");
    assert_eq!(ucm.send("OPTIONS", "user0001"), Ok(200));
    let run = client.join().expect("sipp thread");
    assert!(run.all_succeeded(), "{run}");
    // sipp saw the OPTIONS on its one TLS socket, from ucm-sim's TLS port.
    assert!(
        run.messages.contains("OPTIONS sip:user0001@127.0.0.1"),
        "{run}"
    );
    assert_eq!(ucm.counter("sent"), 1);
}
