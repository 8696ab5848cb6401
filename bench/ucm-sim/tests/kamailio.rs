//! kamailio 5.6 as the second, real registrar (tests/peers/kamailio/registrar.cfg), proven
//! with sipp registering into it over TCP and TLS: the same scenarios ucm-sim passes, so
//! the core can register users into either.

mod common;

use edgeway_testkit::peers::{
    require_peer, sipp_scenario as scenario, sipp_users_csv, Kamailio, KamailioOptions, ScratchDir,
    Sipp, SippTransport,
};

fn csv(users: &[&str], password: &str, domain: &str) -> String {
    sipp_users_csv(users.iter().map(|u| (*u, password, domain)))
}

#[test]
fn sipp_registers_into_kamailio_over_tcp_and_tls() {
    let (Some(kamailio), Some(sipp), Some(_)) = (
        require_peer("kamailio", "kamailio as a registrar"),
        require_peer("sipp", "sipp registering into kamailio"),
        require_peer("socat", "sipp over TLS into kamailio"),
    ) else {
        return;
    };
    let dir = ScratchDir::new("kamailio-test");
    let (pki, cert) = common::server_cert(&dir, "kamailio");
    let k = Kamailio::spawn(
        &kamailio,
        &KamailioOptions {
            domain: "example.com".to_owned(),
            password: "kam-secret".to_owned(),
            tls: Some((cert.cert_pem.clone(), cert.key_pem.clone())),
        },
    );
    let users = ["alice", "bob", "carol"];
    for (transport, addr) in [
        (SippTransport::Tcp, k.tcp),
        (SippTransport::TlsPerCall, k.tls.expect("tls")),
    ] {
        let run = Sipp::new(&sipp, &scenario("register.xml"))
            .remote(addr)
            .transport(transport)
            .tls_ca(&pki.ca_path())
            .users_csv(&csv(&users, "kam-secret", "example.com"))
            .calls(3)
            .run();
        assert!(run.all_succeeded(), "{transport:?}: {run}\n{}", k.output());
        assert!(
            run.messages.contains("expires=120"),
            "kamailio's 200 lists the binding"
        );
    }
    let wrong = Sipp::new(&sipp, &scenario("register_wrong_password.xml"))
        .remote(k.tls.expect("tls"))
        .transport(SippTransport::Tls)
        .users_csv(&csv(&["alice"], "guess", "example.com"))
        .run();
    assert!(wrong.all_succeeded(), "403 expected: {wrong}");
    let domain = Sipp::new(&sipp, &scenario("register_refused.xml"))
        .remote(k.tcp)
        .users_csv(&csv(&["alice"], "kam-secret", "example.org"))
        .run();
    assert!(domain.all_succeeded(), "403 expected: {domain}");
}
