//! `edgewayctl flow`: the built binary against a table in a temporary directory under
//! /dev/shm — init, add, list, show (key material never printed), del, stats, ports, and
//! bad input refused with a clear message and a non-zero exit.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A unique table directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = PathBuf::from(format!(
            "/dev/shm/edgewayctl-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        Dir(d)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_edgewayctl"))
            .arg("flow")
            .arg("--shm-dir")
            .arg(&self.0)
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .output()
            .expect("run edgewayctl")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8(out.stderr).expect("utf-8")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Key "YS__semctl () {..." base64-encoded; neither form may ever be printed.
const CRYPTO: &str =
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4";
const SECRETS: [&str; 4] = ["WVNfX19z", "YS__", "59535f5f", "89, 83, 95"];

fn assert_no_secret(text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "key material {s:?} printed:\n{text}");
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn add_list_show_del_round_trip() {
    let d = Dir::new("round");
    assert!(d.ok(&["init", "--capacity", "64"]).contains("64 slots"));

    let out = d.ok(&[
        "add",
        "--key",
        "36002",
        "--action",
        "rekey",
        "--worker",
        "1",
        "--out-from",
        "36004",
        "--out-to",
        "192.0.2.9:5004",
        "--latch",
        "--permit",
        "198.51.100.1",
        "--flow-id",
        "7",
        "--ssrc-lock",
        "--keepalive",
        "4000",
        "--clock-rate",
        "48000",
        "--srtp-in",
        CRYPTO,
    ]);
    assert!(out.starts_with("added 36002 in slot"), "{out}");
    assert!(out.contains("(generation 1)"), "{out}");
    d.ok(&[
        "add",
        "--key",
        "2776@192.0.2.1:40000",
        "--action",
        "relay",
        "--out-from",
        "36002",
        "--peer",
        "36002",
    ]);
    // Replacing bumps the generation.
    let out = d.ok(&[
        "add",
        "--key",
        "2776@192.0.2.1:40000",
        "--action",
        "relay",
        "--out-from",
        "36006",
        "--peer",
        "36002",
    ]);
    assert!(out.starts_with("replaced 2776@192.0.2.1:40000"), "{out}");
    assert!(out.contains("(generation 2)"), "{out}");

    let list = d.ok(&["list"]);
    assert_no_secret(&list);
    assert!(list.contains("2 entries"), "{list}");
    let row = list
        .lines()
        .find(|l| l.starts_with("36002 "))
        .expect("row for 36002");
    for col in ["7", "rekey", "36004", "192.0.2.9:5004"] {
        assert!(
            row.split_whitespace().any(|c| c == col),
            "{col} missing in {row}"
        );
    }
    let lj = json(&d.ok(&["list", "--json"]));
    let rows = lj.as_array().expect("array");
    assert_eq!(rows.len(), 2);
    let demux = rows
        .iter()
        .find(|r| r["key"] == "2776@192.0.2.1:40000")
        .expect("demux row");
    assert_eq!(demux["out_from"], 36006);
    assert_eq!(demux["out_to"], "latched");
    assert_eq!(demux["latched_src"], serde_json::Value::Null);
    assert_eq!(demux["rx_packets"], 0);

    let show = d.ok(&["show", "36002"]);
    assert_no_secret(&show);
    for want in [
        "AES_CM_128_HMAC_SHA1_80",
        "latch,ssrc_lock,keepalive",
        "198.51.100.1",
        "drops",
    ] {
        assert!(show.contains(want), "{want} missing:\n{show}");
    }
    let sj = d.ok(&["show", "36002", "--json"]);
    assert_no_secret(&sj);
    let sj = json(&sj);
    assert_eq!(sj["entry"]["srtp_in"]["suite"], "AES_CM_128_HMAC_SHA1_80");
    assert_eq!(sj["entry"]["srtp_in"]["mki_len"], 4);
    assert_eq!(sj["entry"]["srtp_out"]["suite"], "plain");
    assert_eq!(sj["entry"]["keepalive_ms"], 4000);
    assert_eq!(sj["entry"]["worker"], 1);
    assert_eq!(
        sj["state"]["stale"], true,
        "no worker has reported state yet"
    );
    assert_eq!(sj["counters"]["drops"]["auth_failed"], 0);

    let del = d.ok(&["del", "36002"]);
    assert!(del.starts_with("removed 36002 (flow 7"), "{del}");
    assert!(d.ok(&["list"]).contains("1 entries"));
    let err = d.fails(&["del", "36002"]);
    assert!(err.contains("no entry for 36002"), "{err}");
    let err = d.fails(&["show", "36002"]);
    assert!(err.contains("no entry for 36002"), "{err}");
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let d = Dir::new("bad");
    // No table yet.
    let err = d.fails(&["list"]);
    assert!(
        err.contains("no flow table in") && err.contains("flow init"),
        "{err}"
    );
    d.ok(&["init", "--capacity", "16"]);
    let err = d.fails(&["init"]);
    assert!(err.contains("already exists"), "{err}");

    let base = [
        "add",
        "--action",
        "relay",
        "--out-from",
        "36004",
        "--out-to",
        "192.0.2.9:5004",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>| d.fails(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let err = run(with(&["--key", "70000"]));
    assert!(err.contains("bad flow key \"70000\""), "{err}");
    let err = run(with(&["--key", "2776@192.0.2:5"]));
    assert!(err.contains("bad flow key"), "{err}");
    let err = d.fails(&["add", "--key", "36002", "--action", "bounce"]);
    assert!(
        err.contains("invalid value 'bounce'") && err.contains("relay, rekey, drop"),
        "{err}"
    );
    let err = d.fails(&[
        "add",
        "--key",
        "36002",
        "--action",
        "rekey",
        "--out-from",
        "36004",
        "--out-to",
        "192.0.2.9:5004",
        "--srtp-in",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:notbase64!",
    ]);
    assert!(
        err.contains("bad a=crypto line: key is not base64"),
        "{err}"
    );
    let err = d.fails(&[
        "add",
        "--key",
        "36002",
        "--action",
        "rekey",
        "--out-from",
        "36004",
        "--out-to",
        "192.0.2.9:5004",
        "--srtp-out",
        "a=crypto:1 NO_SUCH_SUITE inline:AAAA",
    ]);
    assert!(err.contains("unsupported crypto-suite"), "{err}");
    let err = run(with(&["--key", "36002", "--srtp-in", CRYPTO]));
    assert_no_secret(&err);
    assert!(err.contains("--action rekey only"), "{err}");
    let err = d.fails(&["add", "--key", "36002", "--action", "relay"]);
    assert!(err.contains("needs --out-from"), "{err}");
    let err = d.fails(&[
        "add",
        "--key",
        "36002",
        "--action",
        "relay",
        "--out-from",
        "36004",
    ]);
    assert!(err.contains("needs --peer"), "{err}");
    // Nothing was added by any of these.
    assert!(d.ok(&["list"]).contains("0 entries"));
}

#[test]
fn stats_and_ports() {
    let d = Dir::new("stats");
    d.ok(&[
        "init",
        "--capacity",
        "16",
        "--port-range",
        "30000-30009",
        "--exclude",
        "30000,30001",
    ]);
    let s = d.ok(&["stats"]);
    assert!(s.contains("data plane: not running"), "{s}");
    assert!(s.contains("xdp: unknown (no data plane has started"), "{s}");
    assert!(s.contains("ports 30000-30009: 4 pairs free"), "{s}");
    assert_eq!(d.ok(&["ports", "alloc"]).trim(), "30002");
    assert_eq!(d.ok(&["ports", "alloc"]).trim(), "30004");
    assert!(d
        .ok(&["ports", "release", "30002"])
        .contains("released 30002/30003"));
    d.ok(&["ports", "reserve", "30008"]);
    let err = d.fails(&["ports", "reserve", "30002"]);
    assert!(err.contains("in quarantine"), "{err}");
    let sj = json(&d.ok(&["stats", "--json"]));
    assert_eq!(sj["dataplane"]["state"], "not running");
    assert_eq!(sj["ports"]["in_use"], 4);
    assert_eq!(sj["ports"]["quarantined"], 2);
    assert_eq!(sj["table"]["capacity"], 16);
    assert_eq!(sj["total"]["drops_total"], 0);
}

#[test]
fn show_and_list_render_what_the_worker_reported() {
    use edgeway_flowtable::{DropReason, FlowCounters, FlowState, FlowTable};
    let d = Dir::new("state");
    d.ok(&["init", "--capacity", "16"]);
    d.ok(&[
        "add",
        "--key",
        "36002",
        "--action",
        "rekey",
        "--out-from",
        "36004",
        "--out-to",
        "192.0.2.9:5004",
        "--clock-rate",
        "8000",
        "--srtp-in",
        CRYPTO,
    ]);
    // Play the owning worker: report state and counters for generation 1.
    let t = FlowTable::open_at(&d.0).expect("open");
    let (slot, e) = t
        .lookup(&edgeway_flowtable::parse_key("36002").expect("key"))
        .expect("entry");
    let mut s = FlowState {
        generation: e.generation,
        latched: 1,
        ..FlowState::default()
    };
    s.latched_src.ip = [203, 0, 113, 5];
    s.latched_src.port = 5062;
    s.srtp_in.valid = 1;
    s.srtp_in.ssrc = 0x1234;
    s.srtp_in.highest_index = (2 << 16) | 100;
    s.rtp.received = 500;
    s.rtp.lost = 3;
    s.rtp.jitter_q4 = 16 * 80; // 80 RTP units at 8 kHz: 10 ms
    t.write_state(slot, &s);
    let mut c = FlowCounters {
        rx_packets: 503,
        tx_packets: 500,
        ..FlowCounters::default()
    };
    c.drops[DropReason::Replay.index()] = 2;
    c.drops[DropReason::AuthFailed.index()] = 1;
    t.write_counters(slot, &c);

    let show = d.ok(&["show", "36002"]);
    assert_no_secret(&show);
    for want in [
        "latched          203.0.113.5:5062",
        "srtp in          ssrc 0x00001234 roc 2 index 131172",
        "received 500 lost 3 jitter 10.00 ms",
        "rx               503 packets",
        "drops            3",
        "replay         2",
        "auth_failed    1",
    ] {
        assert!(show.contains(want), "{want:?} missing:\n{show}");
    }
    let sj = json(&d.ok(&["show", "36002", "--json"]));
    assert_eq!(sj["state"]["stale"], false);
    assert_eq!(sj["state"]["srtp_in"]["roc"], 2);
    assert_eq!(sj["state"]["rtp"]["jitter_ms"], 10.0);
    assert_eq!(sj["counters"]["drops"]["replay"], 2);
    let list = d.ok(&["list"]);
    let row = list.lines().find(|l| l.starts_with("36002 ")).expect("row");
    for col in ["203.0.113.5:5062", "503", "500", "3"] {
        assert!(
            row.split_whitespace().any(|x| x == col),
            "{col} missing in {row}"
        );
    }
}
