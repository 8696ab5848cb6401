//! `edgewayctl control`: the built binary against a real edge and core (edgeway-control)
//! and ucm-sim on loopback ([`edgeway_testkit::control::Cluster`]): status tables and JSON
//! for both roles, a registration made through the edge listed with its flow and node,
//! maintenance mode switched on (a new REGISTER gets 503, the existing binding stays) and
//! off again, and the errors for an absent socket, a stale one and a refused command.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};

use edgeway_testkit::control::{Cluster, ClusterOptions, Scratch};
use serde_json::Value;

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgewayctl"))
        .args(args)
        .output()
        .expect("run edgewayctl")
}

/// `edgewayctl control <args> --socket <socket>`: standard output, asserting success.
fn control(socket: &Path, args: &[&str]) -> String {
    let socket = socket.to_str().expect("utf-8 path");
    let mut all = vec!["control"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--socket", socket]);
    let out = ctl(&all);
    assert!(
        out.status.success(),
        "edgewayctl {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The value column of a `KEY  VALUE` line in a table.
fn row<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key}  ")) || l.split("  ").next() == Some(key))
        .unwrap_or_else(|| panic!("no {key:?} row in\n{text}"));
    line[key.len()..].split_whitespace().collect()
}

#[test]
fn status_registrations_and_maintenance_of_a_running_node() {
    let c = Cluster::up(ClusterOptions::default());
    let core = &c.core().admin_path;
    let edge = &c.edge.admin_path;
    let mut alice = c.client();
    assert_eq!(alice.register("alice", 120).1.status, 200);

    let status = control(core, &["status"]);
    assert_eq!(row(&status, "role"), ["core"], "{status}");
    assert_eq!(row(&status, "traversal zone"), ["up"], "{status}");
    assert_eq!(row(&status, "maintenance"), ["off"], "{status}");
    assert_eq!(row(&status, "registrations"), ["1"], "{status}");
    assert_eq!(
        row(&status, "cucm1"),
        ["yes"],
        "Unified CM connected: {status}"
    );
    let ucm = c.ucm.sip_tcp.expect("tcp").to_string();
    assert_eq!(
        row(&status, "CEtcp-cucm1")[..3],
        ["cucm1", "tcp", ucm.as_str()],
        "the zone: {status}"
    );
    let rule = status
        .lines()
        .skip_while(|l| *l != "Search rules")
        .find(|l| l.starts_with("CEtcp-cucm1"))
        .unwrap_or_else(|| panic!("search rule in\n{status}"));
    let rule: Vec<&str> = rule.split_whitespace().collect();
    assert_eq!((rule[1], rule[3]), ("45", "CEtcp-cucm1"), "{status}");
    assert_eq!(row(&status, "registrations_accepted"), ["1"], "{status}");

    let json: Value =
        serde_json::from_str(&control(core, &["status", "--json"])).expect("status --json");
    assert_eq!(json["status"]["role"], "core");
    assert_eq!(json["status"]["search_rules"][0]["priority"], 45);
    assert_eq!(json["status"]["counters"]["registers_proxied"], 2, "{json}");

    let edge_status = control(edge, &["status"]);
    assert_eq!(row(&edge_status, "role"), ["edge"], "{edge_status}");
    assert_eq!(row(&edge_status, "traversal zone"), ["up"]);
    assert_eq!(row(&edge_status, "client flows"), ["1"], "{edge_status}");
    assert!(
        !edge_status.contains("Zones"),
        "zones are the core's: {edge_status}"
    );

    // The registration, as the core holds it.
    let regs = control(core, &["registrations"]);
    let lines: Vec<&str> = regs.lines().collect();
    assert_eq!(lines.len(), 2, "header and alice: {regs}");
    assert!(lines[0].starts_with("AOR") && lines[0].contains("EXPIRES IN"));
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cols[0], "sip:alice@example.com", "{regs}");
    assert!(
        cols[1].contains(&alice.local.to_string()),
        "contact: {regs}"
    );
    assert!(cols[2].starts_with("ewf"), "edge flow: {regs}");
    assert_eq!(cols[3], "cucm1");
    let left: u64 = cols[4].trim_end_matches('s').parse().expect("seconds");
    assert!((100..=120).contains(&left), "expires in {left}: {regs}");
    let json: Value = serde_json::from_str(&control(core, &["registrations", "--json"]))
        .expect("registrations --json");
    assert_eq!(json["registrations"][0]["aor"], "sip:alice@example.com");

    // Maintenance: new registrations refused with 503, alice's kept; then off again.
    assert_eq!(control(core, &["maintenance", "on"]), "maintenance on\n");
    assert_eq!(row(&control(core, &["status"]), "maintenance"), ["on"]);
    let mut bob = c.client();
    let refused = bob.register_once("bob", "example.com", 60);
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(
        refused
            .headers
            .iter()
            .any(|h| h.name().as_str() == "Retry-After"),
        "{refused:?}"
    );
    assert_eq!(control(core, &["registrations"]).lines().count(), 2);
    assert_eq!(control(core, &["maintenance", "off"]), "maintenance off\n");
    assert_eq!(bob.register("bob", 60).1.status, 200);
    assert_eq!(control(core, &["registrations"]).lines().count(), 3);
}

#[test]
fn absent_stale_and_refusing_sockets_are_named() {
    let dir = Scratch::new("ctl-errors");
    let absent = dir.path().join("nothing.sock");
    let out = ctl(&[
        "control",
        "status",
        "--socket",
        absent.to_str().expect("path"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no admin socket at") && err.contains("nothing.sock"),
        "{err}"
    );

    let out = ctl(&["control", "status", "--node", "no-such-node"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/run/edgeway/no-such-node/admin.sock"),
        "{err}"
    );

    // A socket file whose listener is gone: connect is refused.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).expect("bind"));
    let out = ctl(&[
        "control",
        "status",
        "--socket",
        stale.to_str().expect("path"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("refuses connections"),
        "{err}"
    );

    // A listener that answers with a refusal, as the node does for a command it lacks.
    let refusing = dir.path().join("refusing.sock");
    let listener = UnixListener::bind(&refusing).expect("bind");
    let server = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let (mut s, _) = listener.accept().expect("accept");
        let mut line = String::new();
        std::io::BufReader::new(&s)
            .read_line(&mut line)
            .expect("read");
        let reply = serde_json::json!({
            "ok": false,
            "error": format!("unknown command {:?}", line.trim()),
        });
        writeln!(s, "{reply}").expect("write");
    });
    let out = ctl(&[
        "control",
        "registrations",
        "--socket",
        refusing.to_str().expect("path"),
    ]);
    server.join().expect("server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the node refused \"registrations\""),
        "{err}"
    );

    let out = ctl(&["control", "status", "--socket", "/x", "--node", "y"]);
    assert!(!out.status.success(), "--socket and --node conflict");
}
