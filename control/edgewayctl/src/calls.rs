//! `edgewayctl calls`: a node's call status and call history, as the guide's Status >
//! Calls > Calls and Calls > History pages. It asks the node's admin socket for `calls`
//! (current calls with their legs, flows and media counters) or `calls history --limit N`
//! (the last completed calls with duration, cause and final counters) and prints one row
//! per call, or the node's JSON with `--json`. Ask the edge for its view of a call (the
//! traversal zone's component) and the core for its own (both legs).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::control::{ask, cell, table, RUN_DIR};

/// A node's current calls or call history.
#[derive(Debug, clap::Args)]
pub(crate) struct CallsArgs {
    /// The node's admin socket (its `admin_socket`, by default `<state_dir>/admin.sock`).
    #[arg(long, value_name = "PATH", conflicts_with = "node")]
    socket: Option<PathBuf>,
    /// Node name: its admin socket is /run/edgeway/<NODE>/admin.sock.
    #[arg(long, value_name = "NODE", default_value = "edgeway")]
    node: String,
    /// Completed calls (the last 500 since the node started) instead of current ones.
    #[arg(long)]
    history: bool,
    /// With `--history`: at most this many, newest first.
    #[arg(long, value_name = "N", requires = "history")]
    limit: Option<usize>,
    /// The node's JSON reply on standard output.
    #[arg(long)]
    json: bool,
}

/// Runs `edgewayctl calls`.
pub(crate) fn run(args: CallsArgs) -> anyhow::Result<()> {
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| Path::new(RUN_DIR).join(&args.node).join("admin.sock"));
    let command = match (args.history, args.limit) {
        (false, _) => "calls".to_owned(),
        (true, None) => "calls history".to_owned(),
        (true, Some(n)) => format!("calls history --limit {n}"),
    };
    let reply = ask(&socket, &command)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&reply)?)?;
        return Ok(());
    }
    let text = if args.history {
        history_text(&reply["history"])
    } else {
        current_text(&reply["calls"])
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// Milliseconds as `1h02m03s`, `2m05s` or `7.2s`.
fn duration(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else {
        return "-".into();
    };
    let s = ms / 1000;
    match s {
        0..=59 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60),
    }
}

/// The call's legs: the outside Call-ID, and the inside one when the B2BUA made it differ.
fn legs(call: &Value) -> String {
    let ids: Vec<String> = call["legs"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|leg| format!("{} {}", cell(&leg["leg"]), cell(&leg["call_id"])))
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        "-".into()
    } else {
        ids.join(" / ")
    }
}

/// `in/out` packet counts of a call's media.
fn packets(call: &Value) -> String {
    format!(
        "{}/{}",
        cell(&call["media"]["packets_in"]),
        cell(&call["media"]["packets_out"])
    )
}

fn drops(call: &Value) -> String {
    format!(
        "{} ({} auth)",
        cell(&call["media"]["drops"]),
        cell(&call["media"]["auth_failures"])
    )
}

/// A call's row: number, legs and parties, then `middle`, then its packets and drops.
fn row(c: &Value, middle: Vec<String>) -> Vec<String> {
    let mut r = vec![cell(&c["call"]), legs(c), cell(&c["from"]), cell(&c["to"])];
    r.extend(middle);
    r.extend([packets(c), drops(c)]);
    r
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn current_text(calls: &Value) -> String {
    let calls = list(calls);
    if calls.is_empty() {
        return "no current calls\n".into();
    }
    let rows: Vec<Vec<String>> = calls
        .iter()
        .map(|c| {
            row(
                c,
                vec![
                    cell(&c["state"]),
                    duration(&c["duration_ms"]),
                    list(&c["flows"]).len().to_string(),
                ],
            )
        })
        .collect();
    let mut out = table(
        &[
            "CALL",
            "LEGS",
            "FROM",
            "TO",
            "STATE",
            "DURATION",
            "FLOWS",
            "PACKETS IN/OUT",
            "DROPS",
        ],
        &rows,
    );
    out.push_str("\nFlows\n");
    let flows: Vec<Vec<String>> = calls
        .iter()
        .flat_map(|c| {
            list(&c["flows"]).iter().map(move |f| {
                vec![
                    cell(&c["call"]),
                    cell(&f["local_port"]),
                    cell(&f["remote"]),
                    format!("{} -> {}", cell(&f["out_port"]), cell(&f["out_to"])),
                    format!("{} -> {}", cell(&f["suite_in"]), cell(&f["suite_out"])),
                    format!("{}/{}", cell(&f["packets_in"]), cell(&f["packets_out"])),
                    format!("{}/{}", cell(&f["bytes_in"]), cell(&f["bytes_out"])),
                    format!("{} ({} auth)", cell(&f["drops"]), cell(&f["auth_failures"])),
                ]
            })
        })
        .collect();
    out.push_str(&table(
        &[
            "CALL",
            "PORT",
            "FROM",
            "SENDS",
            "SUITES",
            "PACKETS IN/OUT",
            "BYTES IN/OUT",
            "DROPS",
        ],
        &flows,
    ));
    out
}

fn history_text(history: &Value) -> String {
    let calls = list(history);
    if calls.is_empty() {
        return "no completed calls since the node started\n".into();
    }
    let rows: Vec<Vec<String>> = calls
        .iter()
        .map(|c| row(c, vec![duration(&c["duration_ms"]), cell(&c["cause"])]))
        .collect();
    table(
        &[
            "CALL",
            "LEGS",
            "FROM",
            "TO",
            "DURATION",
            "CAUSE",
            "PACKETS IN/OUT",
            "DROPS",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call() -> Value {
        json!({
            "call": 12, "caller": "outside", "from": "sip:alice@example.com",
            "to": "sip:phone1@example.com", "state": "established", "duration_ms": 65_300,
            "legs": [{"leg": "outside", "call_id": "c-1"}, {"leg": "inside", "call_id": "i-1"}],
            "flows": [{"local_port": 18000, "remote": "127.0.0.1:40000", "out_port": 18002,
                       "out_to": "127.0.0.1:16000", "suite_in": "AES_CM_128_HMAC_SHA1_80",
                       "suite_out": "plain", "packets_in": 50, "packets_out": 49,
                       "bytes_in": 9000, "bytes_out": 8800, "drops": 1, "auth_failures": 1}],
            "media": {"packets_in": 50, "packets_out": 49, "drops": 1, "auth_failures": 1},
        })
    }

    #[test]
    fn a_current_call_is_one_row_with_its_flows_below() {
        let text = current_text(&json!([call()]));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("CALL  LEGS"), "{text}");
        assert!(
            lines[1].contains("outside c-1 / inside i-1") && lines[1].contains("1m05s"),
            "{text}"
        );
        assert!(
            lines[1].contains("50/49") && lines[1].contains("1 (1 auth)"),
            "{text}"
        );
        let flow = lines
            .iter()
            .find(|l| l.starts_with("12    18000"))
            .expect("flow row");
        assert!(flow.contains("AES_CM_128_HMAC_SHA1_80 -> plain"), "{text}");
        assert!(flow.contains("18002 -> 127.0.0.1:16000"), "{text}");
    }

    #[test]
    fn history_rows_show_duration_and_cause() {
        let mut done = call();
        done["cause"] = json!("BYE from outside");
        done["duration_ms"] = json!(3_700_000);
        let text = history_text(&json!([done]));
        assert!(text.contains("1h01m40s"), "{text}");
        assert!(text.contains("BYE from outside"), "{text}");
    }

    #[test]
    fn nothing_to_show_says_so() {
        assert_eq!(current_text(&json!([])), "no current calls\n");
        assert!(history_text(&json!([])).contains("no completed calls"));
        assert_eq!(duration(&json!(7_250)), "7.2s");
    }
}
