//! `edgewayctl calls`: the built binary against a real edge and core (edgeway-control) and
//! ucm-sim on loopback, without data planes: no call is current or completed and the
//! tables say so, the JSON is the node's lists, `--limit` needs `--history`, a node with
//! maintenance on and nothing to drain says it drained (`control status` and its JSON),
//! and an absent socket is named. A call's rows, flows and counters are asserted with
//! data planes in control/node/tests/call_status.rs.

use std::process::{Command, Output};

use edgeway_testkit::control::{Cluster, ClusterOptions, Scratch};
use serde_json::Value;

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgewayctl"))
        .args(args)
        .output()
        .expect("run edgewayctl")
}

/// `edgewayctl <args> --socket <socket>`: standard output, asserting success.
fn ok(socket: &std::path::Path, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--socket", socket.to_str().expect("utf-8 path")]);
    let out = ctl(&all);
    assert!(
        out.status.success(),
        "edgewayctl {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn calls_and_history_of_idle_nodes_and_drained_maintenance() {
    let c = Cluster::up(ClusterOptions::default());
    for socket in [&c.edge.admin_path, &c.core().admin_path] {
        assert_eq!(ok(socket, &["calls"]), "no current calls\n");
        assert_eq!(
            ok(socket, &["calls", "--history"]),
            "no completed calls since the node started\n"
        );
        let json: Value =
            serde_json::from_str(&ok(socket, &["calls", "--json"])).expect("calls --json");
        assert_eq!(json["ok"], true, "{json}");
        assert_eq!(json["calls"], serde_json::json!([]), "{json}");
        let json: Value = serde_json::from_str(&ok(
            socket,
            &["calls", "--history", "--limit", "5", "--json"],
        ))
        .expect("history --json");
        assert_eq!(json["history"], serde_json::json!([]), "{json}");

        let status = ok(socket, &["control", "status"]);
        assert!(
            !status.lines().any(|l| l.starts_with("drained")),
            "drained only shows in maintenance:\n{status}"
        );
        ok(socket, &["control", "maintenance", "on"]);
        let status = ok(socket, &["control", "status"]);
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("drained") && l.contains("yes")),
            "nothing to drain:\n{status}"
        );
        let json: Value =
            serde_json::from_str(&ok(socket, &["control", "status", "--json"])).expect("JSON");
        assert_eq!(json["status"]["drain"]["drained"], true, "{json}");
    }
}

#[test]
fn limit_without_history_and_an_absent_socket_are_refused() {
    let out = ctl(&["calls", "--limit", "3", "--socket", "/nonexistent.sock"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--history"), "{err}");

    let dir = Scratch::new("calls-errors");
    let absent = dir.path().join("nothing.sock");
    let out = ctl(&["calls", "--socket", absent.to_str().expect("path")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no admin socket at") && err.contains("nothing.sock"),
        "{err}"
    );
}
