//! REGISTER from a TLS client through edge and core to ucm-sim, with the core's Contact
//! rewriting (default) or Path headers; challenges, refresh, expiry, domains, maintenance,
//! and a request from inside reaching the client on its own TLS connection.

mod common;

use std::time::Duration;

use common::{eventually, Cluster, ClusterOptions};

#[test]
fn register_through_edge_and_core_rewrites_the_contact_and_relays_the_challenge() {
    let c = Cluster::up(ClusterOptions::default());
    let mut alice = c.client();
    let (challenge, ok) = alice.register("alice", 120);
    assert_eq!(
        challenge, 401,
        "ucm-sim's digest challenge reaches the client"
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    // The client sees its own Contact back, not the core's.
    let contact = ok
        .headers
        .first(&edgeway_sip::HeaderName::Contact)
        .expect("contact");
    assert!(contact.contains(&alice.local.to_string()), "{contact}");
    // Unified CM holds the core's rewritten Contact, so it sends inbound requests to the core.
    let bindings = c.ucm.bindings();
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    let held = bindings[0]["contact"].as_str().expect("contact");
    assert!(
        held.starts_with("sip:b") && held.contains("@core.example.com:"),
        "{held}"
    );
    // The core keeps the binding: AOR, original contact, edge flow.
    let regs = c.core().registrations();
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0]["aor"], "sip:alice@example.com");
    assert!(regs[0]["contact"]
        .as_str()
        .expect("c")
        .contains(&alice.local.to_string()));
    assert!(regs[0]["edge_path"].as_str().expect("p").contains("ewf"));
    assert!(
        regs[0]["edge_flow"]
            .as_str()
            .is_some_and(|f| f.starts_with("ewf")),
        "{regs:?}"
    );
    assert!(
        regs[0]["expires_in"]
            .as_u64()
            .is_some_and(|e| e > 100 && e <= 120),
        "{regs:?}"
    );
    assert!(c.core().counter("challenges_relayed") >= 1);
    assert!(c.edge.counter("challenges_relayed") >= 1);
    assert_eq!(c.core().counter("registrations_accepted"), 1);
}

#[test]
fn with_sip_path_headers_the_core_adds_path_and_keeps_the_contact() {
    let c = Cluster::up(ClusterOptions {
        path_headers: true,
        ..ClusterOptions::default()
    });
    let mut alice = c.client();
    let (_, ok) = alice.register("alice", 120);
    assert_eq!(ok.status, 200, "{ok:?}");
    let bindings = c.ucm.bindings();
    assert_eq!(bindings.len(), 1);
    let held = bindings[0]["contact"].as_str().expect("contact");
    assert!(
        held.contains(&alice.local.to_string()),
        "contact preserved: {held}"
    );
    let path = bindings[0]["path"].to_string();
    assert!(path.contains("core.example.com"), "core's Path: {path}");
    assert!(
        path.contains("ewf") && path.contains("edge.example.com"),
        "edge's Path: {path}"
    );
    // A request from inside follows both Paths back to the client's connection.
    let ucm = &c.ucm;
    std::thread::scope(|s| {
        let sent = s.spawn(|| ucm.admin(&serde_json::json!({"cmd":"send","method":"OPTIONS","to":"alice","timeout_ms":5000})));
        let req = alice
            .recv_request(Duration::from_secs(5))
            .expect("OPTIONS reaches the client");
        assert_eq!(req.method, edgeway_sip::Method::Options);
        alice.respond(&req, 200);
        let r = sent.join().expect("join");
        assert_eq!(r["status"], 200, "{r}");
    });
}

#[test]
fn inbound_options_reaches_the_client_on_its_own_tls_connection() {
    let c = Cluster::up(ClusterOptions::default());
    let mut alice = c.client();
    let mut bob = c.client();
    assert_eq!(alice.register("alice", 120).1.status, 200);
    assert_eq!(bob.register("bob", 120).1.status, 200);
    let ucm = &c.ucm;
    std::thread::scope(|s| {
        let sent = s.spawn(|| {
            ucm.admin(
                &serde_json::json!({"cmd":"send","method":"OPTIONS","to":"bob","timeout_ms":5000}),
            )
        });
        let req = bob
            .recv_request(Duration::from_secs(5))
            .expect("OPTIONS reaches bob");
        assert!(
            req.uri.to_string().contains(&bob.local.to_string()),
            "Request-URI restored to bob's contact: {}",
            req.uri
        );
        bob.respond(&req, 200);
        let r = sent.join().expect("join");
        assert_eq!(r["status"], 200, "{r}");
    });
    // Nothing for alice.
    assert!(alice.recv_request(Duration::from_millis(300)).is_none());
    assert_eq!(c.edge.counter("inbound_requests"), 1);
}

#[test]
fn refresh_keeps_and_expiry_removes_the_binding() {
    let c = Cluster::up(ClusterOptions::default());
    let mut alice = c.client();
    assert_eq!(alice.register("alice", 2).1.status, 200);
    assert_eq!(c.core().registrations().len(), 1);
    // Refresh (a fresh challenge round, as ucm-sim's nonces are single-use per REGISTER).
    assert_eq!(alice.register("alice", 2).1.status, 200);
    let regs = c.core().registrations();
    assert_eq!(regs.len(), 1, "refresh reuses the binding: {regs:?}");
    assert!(
        eventually(Duration::from_secs(6), || c
            .core()
            .registrations()
            .is_empty()),
        "binding expires"
    );
    assert!(c.core().counter("bindings_expired") >= 1);
    // Expires: 0 removes at once.
    assert_eq!(alice.register("alice", 120).1.status, 200);
    assert_eq!(c.core().registrations().len(), 1);
    assert_eq!(alice.register("alice", 0).1.status, 200);
    assert!(c.core().registrations().is_empty());
}

#[test]
fn unknown_and_unserved_domains_are_refused_with_a_reason() {
    let c = Cluster::up(ClusterOptions::default());
    let mut client = c.client();
    for domain in ["other.example.org", "noreg.example.com"] {
        let r = client.register_once("alice", domain, 120);
        assert_eq!(r.status, 404, "{domain}: {r:?}");
        assert_eq!(r.reason, "Domain not served by this MRA edge");
    }
    assert_eq!(c.core().counter("unknown_domain"), 2);
    assert!(c.ucm.bindings().is_empty());
}

#[test]
fn maintenance_refuses_new_registrations_and_refreshes_existing_ones() {
    let c = Cluster::up(ClusterOptions::default());
    let mut alice = c.client();
    assert_eq!(alice.register("alice", 120).1.status, 200);
    let r = c.core().admin("maintenance on");
    assert_eq!(r["maintenance"], true);
    let mut bob = c.client();
    let refused = bob.register_once("bob", "example.com", 120);
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.headers.first(&edgeway_sip::HeaderName::RetryAfter),
        Some("30")
    );
    assert_eq!(
        alice.register("alice", 120).1.status,
        200,
        "existing binding refreshes"
    );
    assert_eq!(c.core().registrations().len(), 1);
    assert_eq!(c.core().counter("maintenance_refused"), 1);
    assert_eq!(c.core().status()["maintenance"], true);
    c.core().admin("maintenance off");
    assert_eq!(bob.register("bob", 120).1.status, 200);
    assert_eq!(c.core().registrations().len(), 2);
}

#[test]
fn edge_maintenance_refuses_new_flows_and_lets_registered_ones_refresh() {
    let c = Cluster::up(ClusterOptions {
        edge_extra: "retry_after_s = 7".into(),
        ..ClusterOptions::default()
    });
    let mut alice = c.client();
    assert_eq!(alice.register("alice", 120).1.status, 200);
    assert_eq!(c.edge.admin("maintenance on")["maintenance"], true);
    let mut bob = c.client();
    let refused = bob.register_once("bob", "example.com", 120);
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.headers.first(&edgeway_sip::HeaderName::RetryAfter),
        Some("7")
    );
    assert_eq!(
        alice.register("alice", 120).1.status,
        200,
        "registered flow refreshes"
    );
    assert_eq!(c.edge.counter("maintenance_refused"), 1);
    assert_eq!(
        c.core().counter("maintenance_refused"),
        0,
        "refused at the edge"
    );
    assert_eq!(c.edge.admin("bogus")["ok"], false);
}
