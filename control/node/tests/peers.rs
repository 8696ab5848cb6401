//! Real peers through edge and core: sipp (Debian sip-tester) registering over TLS (through
//! the testkit's socat bridge: Debian's sipp has no TLS of its own), kamailio as the inside
//! registrar instead of ucm-sim, and baresip registering and answering OPTIONS from inside.
//! Under `CI=true` a missing peer fails the test (testkit `require_peer`).

mod common;

use std::time::Duration;

use common::{password, Cluster, ClusterOptions};
use edgeway_testkit::peers::{
    require_peer, sipp_scenario, sipp_users_csv, Baresip, BaresipOptions, Kamailio,
    KamailioOptions, Sipp, SippTransport,
};

fn users_csv(users: &[&str], password_of: impl Fn(&str) -> String) -> String {
    let rows: Vec<(String, String)> = users
        .iter()
        .map(|u| (u.to_string(), password_of(u)))
        .collect();
    sipp_users_csv(
        rows.iter()
            .map(|(u, p)| (u.as_str(), p.as_str(), "example.com")),
    )
}

#[test]
fn sipp_registers_refreshes_and_unregisters_over_tls_through_edge_and_core() {
    let (Some(sipp), Some(_)) = (
        require_peer("sipp", "sipp registering through edge and core"),
        require_peer("socat", "sipp over TLS to the edge"),
    ) else {
        return;
    };
    let c = Cluster::up(ClusterOptions::default());
    let users = ["alice", "bob", "carol"];
    let run = Sipp::new(&sipp, &sipp_scenario("register.xml"))
        .remote(c.edge.addr("sip"))
        .transport(SippTransport::TlsPerCall)
        .tls_ca(&c.pki.ca_path())
        .users_csv(&users_csv(&users, password))
        .calls(3)
        .run();
    assert!(
        run.all_succeeded(),
        "{run}\nedge:\n{}\ncore:\n{}",
        c.edge.log.text(),
        c.core().log.text()
    );
    assert_eq!(run.successful, 3);
    let counters = c.ucm.admin(&serde_json::json!({"cmd": "counters"}))["counters"].clone();
    assert_eq!(counters["bindings_added"], 3, "{counters}");
    assert_eq!(counters["bindings_removed"], 3, "{counters}");
    assert_eq!(
        c.edge.counter("client_connections"),
        3,
        "one TLS connection per sipp call"
    );
    assert!(c.core().registrations().is_empty(), "all unregistered");
    assert_eq!(c.core().counter("registrations_accepted"), 9);
}

#[test]
fn kamailio_as_the_inside_registrar() {
    let (Some(kamailio), Some(sipp), Some(_)) = (
        require_peer("kamailio", "kamailio as the registrar behind the core"),
        require_peer(
            "sipp",
            "sipp registering through edge and core into kamailio",
        ),
        require_peer("socat", "sipp over TLS to the edge"),
    ) else {
        return;
    };
    let k = Kamailio::spawn(
        &kamailio,
        &KamailioOptions {
            domain: "example.com".to_owned(),
            password: "kam-secret".to_owned(),
            tls: None,
        },
    );
    let c = Cluster::up(ClusterOptions {
        registrar: Some(k.tcp),
        ..ClusterOptions::default()
    });
    let run = Sipp::new(&sipp, &sipp_scenario("register.xml"))
        .remote(c.edge.addr("sip"))
        .transport(SippTransport::Tls)
        .users_csv(&users_csv(&["alice", "bob"], |_| "kam-secret".into()))
        .calls(2)
        .run();
    assert!(
        run.all_succeeded(),
        "{run}\nkamailio:\n{}\ncore:\n{}",
        k.output(),
        c.core().log.text()
    );
    // kamailio's 200 lists the core's rewritten Contact; the client gets its own back.
    assert!(
        run.messages.contains("expires=120"),
        "kamailio's 200 lists the binding"
    );
    assert!(
        !run.messages.contains("@core.example.com"),
        "rewritten Contact never reaches the client"
    );
    assert_eq!(c.core().counter("challenges_relayed"), 6);
}

#[test]
fn baresip_registers_through_edge_and_core_and_answers_options_from_inside() {
    let Some(baresip) = require_peer("baresip", "baresip registering through edge and core") else {
        return;
    };
    let c = Cluster::up(ClusterOptions::default());
    let mut client = Baresip::spawn(
        &baresip,
        &BaresipOptions {
            user: "alice".to_owned(),
            domain: "example.com".to_owned(),
            password: password("alice"),
            outbound: c.edge.addr("sip"),
            transport: "tls".to_owned(),
            ca_pem: Some(std::fs::read_to_string(c.pki.ca_path()).expect("CA")),
            regint: 600,
        },
    );
    assert!(
        client.wait_registered(Duration::from_secs(10)),
        "baresip did not register:\n{}\nedge:\n{}\ncore:\n{}",
        client.output(),
        c.edge.log.text(),
        c.core().log.text()
    );
    let regs = c.core().registrations();
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0]["aor"], "sip:alice@example.com");
    let sent = c.ucm.admin(
        &serde_json::json!({"cmd":"send","method":"OPTIONS","to":"alice","timeout_ms":5000}),
    );
    assert_eq!(
        sent["status"],
        200,
        "baresip answers on its own TLS connection: {sent}\n{}",
        client.output()
    );
}
