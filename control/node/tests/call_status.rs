//! Call status, call history and maintenance mode for calls, with real processes: an edge
//! and a core (`edgeway-control`), both data planes and ucm-sim's simulated secure phone
//! (`common/call_rig.rs`), read through the built `edgewayctl calls` as an operator does.
//!
//! - During an SRTP call both nodes list it with its four flows and packet counters that
//!   rise; after BYE it is in both histories with its duration, "BYE from outside" and its
//!   final counters.
//! - An offer without crypto (488 from the core) is in the core's history as media refused
//!   and in the edge's as the 488 it relayed.
//! - With maintenance on during a call, a new INVITE gets 503 with Retry-After from either
//!   node, the established call keeps its media, takes a re-INVITE, hangs up normally, and
//!   then both nodes say they drained (and `edgewayctl control status` shows it).

#[path = "common/call_rig.rs"]
mod call_rig;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use call_rig::{
    client_offer, context, establish, exchange, final_response, in_dialog, invite, rig, rig_with,
    with_sdp, Rig, CLIENT_CRYPTO,
};
use edgeway_sip::HeaderName;
use edgeway_testkit::control::eventually;
use serde_json::Value;

fn edgewayctl() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| edgeway_testkit::workspace_binary("edgewayctl", "edgewayctl"))
}

/// `edgewayctl <args> --socket <socket>`: its standard output, asserting success.
fn ctl(socket: &Path, args: &[&str]) -> String {
    let out = Command::new(edgewayctl())
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("run edgewayctl");
    assert!(
        out.status.success(),
        "edgewayctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `edgewayctl calls [--history] --json` on one node: the list.
fn calls_json(socket: &Path, history: bool) -> Vec<Value> {
    let mut args = vec!["calls", "--json"];
    if history {
        args.push("--history");
    }
    let reply: Value = serde_json::from_str(&ctl(socket, &args)).expect("JSON reply");
    let key = if history { "history" } else { "calls" };
    reply[key]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no {key} list: {reply}"))
}

fn packets_in(call: &Value) -> u64 {
    call["media"]["packets_in"].as_u64().unwrap_or(0)
}

/// The one current call on `socket`, asserting it is established with four SRTP flows.
fn the_call(socket: &Path, node: &str) -> Value {
    let calls = calls_json(socket, false);
    assert_eq!(calls.len(), 1, "{node}: {calls:?}");
    let call = calls[0].clone();
    assert_eq!(call["state"], "established", "{node}: {call}");
    assert_eq!(call["from"], "sip:alice@example.com", "{node}: {call}");
    assert_eq!(call["to"], "sip:phone1@example.com", "{node}: {call}");
    let flows = call["flows"].as_array().expect("flows");
    assert_eq!(flows.len(), 4, "{node}: four entries per call: {call}");
    assert!(
        flows.iter().all(|f| f.get("key").is_none()
            && !f.to_string().contains("inline:")
            && f["local_port"].as_u64().is_some()),
        "{node}: flows show ports and suites, never keys: {call}"
    );
    call
}

#[test]
fn a_call_is_listed_on_both_nodes_with_rising_counters_then_in_history_with_its_cause() {
    let mut rig = rig((10000, 10499), (10500, 10999));
    let edge = rig.cluster.edge.admin_path.clone();
    let core = rig.cluster.core().admin_path.clone();
    let (media, ok, edge_media, crypto) = establish(&mut rig, "cs-call-1", 10500..11000);
    let mut tx = context(CLIENT_CRYPTO);
    let (received, _) = exchange(&media, edge_media, &mut tx, &crypto, 1, 40);
    assert!(received > 10, "media reached the client: {received}");

    let edge_call = the_call(&edge, "edge");
    let core_call = the_call(&core, "core");
    assert_eq!(edge_call["legs"][0]["call_id"], "cs-call-1", "{edge_call}");
    let legs = core_call["legs"].as_array().expect("legs");
    assert_eq!(
        (legs.len(), &legs[0]["leg"], &legs[0]["call_id"]),
        (2, &Value::from("outside"), &Value::from("cs-call-1")),
        "the core lists both of its dialogs: {core_call}"
    );
    assert_eq!(legs[1]["leg"], "inside", "{core_call}");
    assert_ne!(
        legs[1]["call_id"], "cs-call-1",
        "the B2BUA's inside leg has its own Call-ID: {core_call}"
    );
    assert!(
        legs[1]["to_tag"].is_string() && legs[0]["to_tag"].is_string(),
        "both legs' tags once answered: {core_call}"
    );
    let suites: Vec<&str> = core_call["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| [&f["suite_in"], &f["suite_out"]])
        .filter_map(Value::as_str)
        .collect();
    assert!(
        suites.iter().any(|s| s.starts_with("AES")),
        "the core re-keys SRTP: {suites:?}"
    );
    let (edge_before, core_before) = (packets_in(&edge_call), packets_in(&core_call));
    assert!(
        edge_before > 10 && core_before > 10,
        "{edge_call}\n{core_call}"
    );

    let (received, _) = exchange(&media, edge_media, &mut tx, &crypto, 41, 40);
    assert!(received > 10, "{received}");
    let edge_after = packets_in(&the_call(&edge, "edge"));
    let core_after = packets_in(&the_call(&core, "core"));
    assert!(
        edge_after > edge_before + 10 && core_after > core_before + 10,
        "counters rise with the media: edge {edge_before} -> {edge_after}, core {core_before} -> {core_after}"
    );
    let table = ctl(&core, &["calls"]);
    let row = table
        .lines()
        .find(|l| l.contains("sip:alice@example.com"))
        .unwrap_or_else(|| panic!("a row for the call:\n{table}"));
    assert!(row.contains("established"), "{table}");
    assert!(table.contains("\nFlows\n"), "{table}");

    rig.client
        .send_raw(&in_dialog(&rig.client, "BYE", 2, &ok))
        .expect("BYE");
    assert_eq!(final_response(&mut rig.client).status, 200);
    for (socket, node, before) in [(&edge, "edge", edge_after), (&core, "core", core_after)] {
        assert!(
            eventually(Duration::from_secs(3), || calls_json(socket, false)
                .is_empty()),
            "{node}: the call is no longer current"
        );
        let history = calls_json(socket, true);
        assert_eq!(history.len(), 1, "{node}: {history:?}");
        let done = &history[0];
        assert_eq!(done["cause"], "BYE from outside", "{node}: {done}");
        assert!(
            done["duration_ms"].as_u64().unwrap_or(0) >= 1_000,
            "{node}: 80 packets 20 ms apart: {done}"
        );
        assert!(done["answered_ms"].as_u64().is_some(), "{node}: {done}");
        assert!(
            packets_in(done) >= before,
            "{node}: the final counters are kept: {done}"
        );
        let text = ctl(socket, &["calls", "--history"]);
        assert!(text.contains("BYE from outside"), "{node}:\n{text}");
    }
    assert_eq!(rig.edge_dp.flows() + rig.core_dp.flows(), 0);
}

#[test]
fn a_refused_offer_is_in_history_with_its_cause_on_both_nodes() {
    let mut rig = rig((11500, 11749), (11750, 11999));
    let sdp = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    rig.client
        .send_raw(&invite(&rig.client, "cs-plain-1", sdp))
        .expect("INVITE");
    assert_eq!(final_response(&mut rig.client).status, 488);
    let core = calls_json(&rig.cluster.core().admin_path, true);
    assert_eq!(core.len(), 1, "{core:?}");
    assert_eq!(core[0]["cause"], "media refused (488)", "{}", core[0]);
    assert_eq!(core[0]["status"], 488);
    assert!(core[0]["answered_ms"].is_null(), "{}", core[0]);
    let edge = calls_json(&rig.cluster.edge.admin_path, true);
    assert_eq!(edge.len(), 1, "{edge:?}");
    assert_eq!(
        edge[0]["cause"], "status 488",
        "the edge relayed it: {}",
        edge[0]
    );
    assert!(calls_json(&rig.cluster.core().admin_path, false).is_empty());
    let core = rig.cluster.core();
    assert_eq!(
        core.admin("calls history --limit 0")["history"],
        serde_json::json!([])
    );
    let bad = core.admin("calls history --limit many");
    assert_eq!(bad["ok"], false, "{bad}");
    assert!(
        bad["error"].as_str().is_some_and(|e| e.contains("--limit")),
        "{bad}"
    );
}

#[test]
fn an_unanswered_call_rings_then_ends_in_history_as_a_timeout() {
    let mut rig = rig_with(
        (11000, 11249),
        (11250, 11499),
        "call_setup_timeout_ms = 3000",
    );
    rig.cluster.ucm.answer_mode("phone1", "ring");
    let core = rig.cluster.core().admin_path.clone();
    let edge = rig.cluster.edge.admin_path.clone();
    let sdp = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40002 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 \
inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
    rig.client
        .send_raw(&invite(&rig.client, "cs-ring-1", sdp))
        .expect("INVITE");
    for (socket, node) in [(&core, "core"), (&edge, "edge")] {
        assert!(
            eventually(Duration::from_secs(2), || calls_json(socket, false)
                .first()
                .is_some_and(|c| c["state"] == "ringing")),
            "{node} shows the call ringing: {:?}",
            calls_json(socket, false)
        );
    }
    let gave_up = final_response(&mut rig.client);
    assert_eq!(gave_up.status, 408, "{gave_up:?}");
    let history = calls_json(&core, true);
    assert_eq!(history[0]["cause"], "timeout", "{history:?}");
    assert!(history[0]["answered_ms"].is_null(), "{history:?}");
    let history = calls_json(&edge, true);
    assert_eq!(history[0]["cause"], "status 408", "{history:?}");
}

/// A new INVITE from the rig's client: its final response.
fn new_call(rig: &mut Rig, call_id: &str) -> edgeway_sip::Response {
    let sdp = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40002 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 \
inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
    rig.client
        .send_raw(&invite(&rig.client, call_id, sdp))
        .expect("INVITE");
    final_response(&mut rig.client)
}

/// The inside phone calls the client: refused by the node in maintenance, so the client
/// never sees an INVITE.
fn refused_from_inside(rig: &mut Rig, node: &str) {
    rig.cluster
        .ucm
        .call("phone1", "alice")
        .expect("ucm-sim call");
    // Only an INVITE counts: the ACK for the node's own 503 is still proxied on to the
    // client (hop-by-hop ACKs of local refusals are not absorbed yet; b2bua's).
    let end = std::time::Instant::now() + Duration::from_secs(2);
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        if let Some(req) = rig.client.recv_request(left) {
            assert_ne!(
                req.method,
                edgeway_sip::Method::Invite,
                "{node} in maintenance let a new call through: {req:?}"
            );
        }
    }
}

fn drained(socket: &Path) -> Value {
    let reply: Value =
        serde_json::from_str(&ctl(socket, &["control", "status", "--json"])).expect("JSON");
    reply["status"]["drain"].clone()
}

#[test]
fn maintenance_refuses_new_calls_keeps_the_established_one_and_reports_drained() {
    let mut rig = rig((9000, 9499), (9500, 9999));
    let edge = rig.cluster.edge.admin_path.clone();
    let core = rig.cluster.core().admin_path.clone();
    let (media, ok, edge_media, crypto) = establish(&mut rig, "cs-maint-1", 9500..10000);
    let mut tx = context(CLIENT_CRYPTO);

    ctl(&core, &["control", "maintenance", "on"]);
    assert_eq!(drained(&core)["drained"], false, "a call is still up");
    let refused = new_call(&mut rig, "cs-maint-2");
    assert_eq!(refused.status, 503, "core in maintenance: {refused:?}");
    let retry = refused.headers.first(&HeaderName::RetryAfter);
    assert!(
        retry
            .and_then(|r| r.parse::<u32>().ok())
            .is_some_and(|r| r > 0),
        "Retry-After in seconds: {refused:?}"
    );
    refused_from_inside(&mut rig, "core");
    assert_eq!(rig.cluster.core().counter("maintenance_calls_refused"), 2);

    // The edge on its own: the same, from either side.
    ctl(&core, &["control", "maintenance", "off"]);
    ctl(&edge, &["control", "maintenance", "on"]);
    let refused = new_call(&mut rig, "cs-maint-3");
    assert_eq!(refused.status, 503, "edge in maintenance: {refused:?}");
    assert!(refused.headers.first(&HeaderName::RetryAfter).is_some());
    assert!(refused.reason.contains("new calls"), "{refused:?}");
    refused_from_inside(&mut rig, "edge");
    assert_eq!(rig.cluster.edge.counter("maintenance_calls_refused"), 2);
    assert_eq!(rig.cluster.core().counter("maintenance_calls_refused"), 2);
    ctl(&core, &["control", "maintenance", "on"]);

    // The established call is untouched: media both ways, an in-dialog re-INVITE, BYE.
    let (received, decrypted) = exchange(&media, edge_media, &mut tx, &crypto, 1, 75);
    assert!(
        received > 10 && decrypted == received,
        "received {received}, decrypted {decrypted}\ncore: {:?}\nedge: {:?}\nucm-sim: {:?}",
        calls_json(&core, false),
        calls_json(&edge, false),
        rig.cluster.ucm.calls()
    );
    // In-dialog re-INVITEs go on: hold, then resume, each state on both nodes.
    let port = media.local_addr().expect("addr").port();
    for (cseq, direction, state) in [(2, "sendonly", "on hold"), (3, "sendrecv", "established")] {
        let reinvite = with_sdp(
            in_dialog(&rig.client, "INVITE", cseq, &ok),
            &client_offer(port, cseq, direction),
        );
        rig.client.send_raw(&reinvite).expect("re-INVITE");
        let answered = final_response(&mut rig.client);
        assert_eq!(answered.status, 200, "re-INVITE {direction}: {answered:?}");
        rig.client
            .send_raw(&in_dialog(&rig.client, "ACK", cseq, &ok))
            .expect("ACK");
        for (socket, node) in [(&edge, "edge"), (&core, "core")] {
            let calls = calls_json(socket, false);
            assert_eq!(calls.len(), 1, "{node}: {calls:?}");
            assert_eq!(
                calls[0]["state"], state,
                "{node} after {direction}: {calls:?}"
            );
        }
    }
    rig.client
        .send_raw(&in_dialog(&rig.client, "BYE", 4, &ok))
        .expect("BYE");
    assert_eq!(final_response(&mut rig.client).status, 200);

    for (socket, node) in [(&edge, "edge"), (&core, "core")] {
        assert!(
            eventually(Duration::from_secs(3), || drained(socket)["drained"]
                == true),
            "{node} drained: {}",
            drained(socket)
        );
        assert!(drained(socket)["drained_at_ms"].as_u64().is_some());
        let status = ctl(socket, &["control", "status"]);
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("drained") && l.contains("yes")),
            "{node}:\n{status}"
        );
        let history = calls_json(socket, true);
        assert_eq!(
            history[0]["cause"], "BYE from outside",
            "{node}: {history:?}"
        );
    }
    let core_history = calls_json(&core, true);
    assert!(
        core_history
            .iter()
            .any(|c| c["cause"] == "maintenance (503)"),
        "the refusal is in the core's history: {core_history:?}"
    );
}
