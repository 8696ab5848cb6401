//! `edgeway-loadgen sip-call` through real processes: an edge and a core
//! (`edgeway-control` with `[media]`), both data planes (`edgeway-dataplane`, edge relay
//! and core re-key) and ucm-sim with generated users. Five callers register over TLS at
//! the edge and call five phones registered at ucm-sim over TCP; SRTP flows caller ->
//! edge relay -> core re-key -> phone and back for 3 s; BYE leaves no flow on either node.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use edgeway_flowtable::FlowTable;
use edgeway_testkit::control::{dataplane_binary, eventually, Cluster, ClusterOptions};
use serde_json::Value;

/// A data plane on its own table directory; killed and removed on drop.
struct Dataplane {
    dir: PathBuf,
    child: Child,
}

impl Dataplane {
    fn start(role: &str, range: &str, extra: &[&str]) -> Dataplane {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/dev/shm/edgeway-sipcall-{}-{role}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let child = Command::new(dataplane_binary())
            .args(["--shm-dir", &dir.display().to_string(), "--role", role])
            .args(["--bind", "127.0.0.1", "--workers", "1"])
            .args(["--media-range", range])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start edgeway-dataplane");
        let dp = Dataplane { dir, child };
        assert!(
            eventually(Duration::from_secs(10), || FlowTable::open_at(&dp.dir)
                .is_ok_and(|t| t.dataplane().workers > 0)),
            "data plane {role} did not publish its table"
        );
        dp
    }

    fn flows(&self) -> usize {
        FlowTable::open_at(&self.dir).expect("table").iter().count()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn media_section(dp: &Dataplane, extra: &str) -> String {
    format!(
        "[media]\ntable_dir = \"{}\"\naddress = \"127.0.0.1\"\n{extra}\n",
        dp.dir.display()
    )
}

/// Media ranges of their own below the ephemeral range (control/node's calls.rs takes
/// 16000-19999), so this test runs beside the others.
const CORE_RANGE: &str = "12000-12999";
const EDGE_DEMUX: u16 = 14000;
const EDGE_RANGE: &str = "14000-14999";

#[test]
fn five_srtp_calls_set_up_carry_media_both_ways_and_bye_leaves_no_flow() {
    let core_dp = Dataplane::start("core", CORE_RANGE, &[]);
    let edge_dp = Dataplane::start("edge", EDGE_RANGE, &["--demux", "first-pair"]);
    let mut ucm_extra: Vec<String> = ["--min-expires", "1", "--generate-users", "10"]
        .map(String::from)
        .to_vec();
    ucm_extra.extend(["--password-prefix".into(), "pass".into()]);
    let cluster = Cluster::up(ClusterOptions {
        edge_extra: media_section(&edge_dp, &format!("demux_ports = [{EDGE_DEMUX}]")),
        core_extra: media_section(&core_dp, "inside_security = \"secure\""),
        ucm_extra,
        ..ClusterOptions::default()
    });
    let registrar = cluster.ucm.sip_tcp.expect("ucm-sim TCP listener");
    let out = Command::new(env!("CARGO_BIN_EXE_edgeway-loadgen"))
        .arg("sip-call")
        .args(["--edge", &cluster.edge.addr("sip").to_string()])
        .args(["--server-name", "edge.example.com"])
        .arg("--ca")
        .arg(cluster.pki.ca_path())
        .args(["--registrar", &registrar.to_string()])
        .args(["--callers", "5", "--domain", "example.com", "--rate", "20"])
        .args(["--media", "3", "--media-warmup", "1", "--timeout", "10"])
        .args(["--pid", &format!("edge-control={}", cluster.edge.pid())])
        .args(["--pid", &format!("core-control={}", cluster.core().pid())])
        .args(["--pid", &format!("edge-dataplane={}", edge_dp.pid())])
        .args(["--pid", &format!("core-dataplane={}", core_dp.pid())])
        .args(["--pid", &format!("ucm-sim={}", cluster.ucm.pid())])
        .stderr(Stdio::inherit())
        .output()
        .expect("run edgeway-loadgen sip-call");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs = || {
        format!(
            "{stdout}\nedge:\n{}\ncore:\n{}",
            cluster.edge.log.text(),
            cluster.core().log.text()
        )
    };
    assert!(out.status.success(), "sip-call failed: {}", logs());
    let r: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no RESULT line: {}", logs()));

    assert_eq!(r["callees_registered"], 5, "{r}");
    assert_eq!(r["callers_registered"], 5, "{r}");
    assert_eq!(r["attempted"], 5, "{r}");
    assert_eq!(r["established"], 5, "every call set up: {r}\n{}", logs());
    assert_eq!(r["failures"], serde_json::json!({}), "{r}");
    assert_eq!(r["callee_answered"], 5, "{r}");
    assert_eq!(r["callee_acked"], 5, "{r}");
    assert_eq!(r["concurrent_peak"], 5, "{r}");
    assert_eq!(r["media_calls"], 5, "{r}");
    assert_eq!(
        r["inside_srtp_calls"], 5,
        "secure inside: SRTP to the phones: {r}"
    );
    let m = &r["media"];
    assert_eq!(m["streams"], 10, "{m}");
    let sent = m["sent"].as_u64().expect("sent");
    let received = m["received"].as_u64().expect("received");
    // 10 streams x 50 pps x 3 s; a lost direction would be half the packets.
    assert!(sent >= 1200, "{m}");
    assert!(
        received * 100 >= sent * 95,
        "media received both ways (lost {} of {sent}): {m}",
        sent - received
    );
    assert_eq!(m["corrupt"], 0, "no SRTP authentication failures: {m}");
    assert_eq!(m["duplicates"], 0, "{m}");
    assert!(
        m["latency_us"]["p50"].as_f64().is_some_and(|p| p > 0.0),
        "{m}"
    );

    assert_eq!(r["ended_ok"], 5, "every BYE answered 200: {r}");
    assert_eq!(r["callee_ended"], 5, "every phone saw its BYE: {r}");
    let roles: Vec<&str> = r["cpu"]
        .as_array()
        .expect("cpu")
        .iter()
        .filter_map(|c| c["role"].as_str())
        .collect();
    assert_eq!(
        roles,
        [
            "edge-control",
            "core-control",
            "edge-dataplane",
            "core-dataplane",
            "ucm-sim",
            "generator"
        ]
    );
    assert!(
        eventually(Duration::from_secs(3), || edge_dp.flows() == 0
            && core_dp.flows() == 0),
        "flows left after BYE: edge {} core {}",
        edge_dp.flows(),
        core_dp.flows()
    );
}
