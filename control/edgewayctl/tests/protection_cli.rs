//! `edgewayctl control blocked|unblock` and the protection section of `status`, the built
//! binary against a real edge and core ([`Cluster`]) with HTTPS and intrusion protection:
//! two requests the allow list refuses (curl, from 127.0.0.1) block the source, the table
//! and `--json` list it with its category and counts, `unblock` lifts it (and says so when
//! there is nothing to lift), and the core, which runs no protection, refuses clearly.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use edgeway_testkit::control::{curl_present, eventually, Cluster, ClusterOptions};
use serde_json::Value;

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgewayctl"))
        .arg("control")
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("run edgewayctl")
}

/// Standard output of a command that must succeed.
fn ok(socket: &Path, args: &[&str]) -> String {
    let out = ctl(socket, args);
    assert!(
        out.status.success(),
        "edgewayctl control {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The HTTP status curl got for `path` on the edge's HTTPS listener (0: no answer).
fn curl(c: &Cluster, path: &str) -> u16 {
    let https = c.edge.addr("https");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["--interface", "127.0.0.1", "--cacert"])
        .arg(c.pki.ca_path())
        .arg("--resolve")
        .arg(format!("edge.example.com:{}:127.0.0.1", https.port()))
        .arg(format!("https://edge.example.com:{}{path}", https.port()))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn blocked_lists_and_unblock_lifts_a_blocked_source() {
    if !curl_present("edgewayctl control blocked|unblock") {
        return;
    }
    let c = Cluster::up(ClusterOptions {
        edge_extra: "[http]\nlisten = \"127.0.0.1:0\"\ntunnel_listen = \"127.0.0.1:0\"\n\
                     [protection]\n[protection.http-ce-intrusion]\ntrigger_level = 2\n"
            .into(),
        core_extra: "[http]\ntunnel_address = \"{http_tunnel}\"\n".into(),
        ..ClusterOptions::default()
    });
    let domain = "ZXhhbXBsZS5jb20="; // base64 of example.com
    let edge_config = format!("/{domain}/get_edge_config/");
    assert!(
        eventually(Duration::from_secs(15), || curl(&c, &edge_config) == 200),
        "HTTP tunnel up"
    );
    let edge = &c.edge.admin_path;
    assert_eq!(ok(edge, &["blocked"]), "no blocked sources\n");
    let denied = format!("/{domain}/https/evil.example.com/8443/x");
    assert_eq!((curl(&c, &denied), curl(&c, &denied)), (403, 403));
    assert_eq!(curl(&c, &edge_config), 0, "blocked: no HTTP answer");

    let table = ok(edge, &["blocked"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ADDRESS    CATEGORY"), "{table}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[7]),
        ("127.0.0.1", "http-ce-intrusion", "2"),
        "address, category, failures: {table}"
    );
    let remaining: u64 = row[6].trim_end_matches('s').parse().expect("seconds");
    assert!((590..=600).contains(&remaining), "10 minutes: {table}");
    let json: Value = serde_json::from_str(&ok(edge, &["blocked", "--json"])).expect("JSON");
    assert_eq!(json["blocked"][0]["address"], "127.0.0.1", "{json}");
    assert!(
        json["blocked"][0]["refused"].as_u64().unwrap_or(0) >= 1,
        "{json}"
    );

    let status = ok(edge, &["status"]);
    let intrusion = status
        .lines()
        .find(|l| l.starts_with("http-ce-intrusion"))
        .unwrap_or_else(|| panic!("category row in\n{status}"));
    let cols: Vec<&str> = intrusion.split_whitespace().collect();
    assert_eq!(cols[1..], ["on", "2", "30s", "600s", "2", "1"], "{status}");
    assert!(
        status.contains("Intrusion protection (on; 1 sources tracked, 1 blocked)"),
        "{status}"
    );

    assert_eq!(ok(edge, &["unblock", "127.0.0.1"]), "unblocked 127.0.0.1\n");
    assert_eq!(curl(&c, &edge_config), 200);
    assert_eq!(
        ok(edge, &["unblock", "127.0.0.1"]),
        "127.0.0.1 was not blocked\n"
    );
    let bad = ctl(edge, &["unblock", "nobody"]);
    assert!(!bad.status.success(), "not an address");

    let core = ctl(&c.core().admin_path, &["blocked"]);
    let why = String::from_utf8_lossy(&core.stderr);
    assert!(
        !core.status.success() && why.contains("intrusion protection is off"),
        "{why}"
    );
}
