//! `edgewayctl control`: the control plane's admin API from the command line. It opens
//! edgeway-control's admin Unix socket (`admin_socket` in the node's TOML, by default
//! `<state_dir>/admin.sock`), sends one JSON-lines command (`status`, `registrations`,
//! `blocked`, `unblock IP`, `maintenance on|off`) and prints the reply as tables, or as the JSON itself with
//! `--json`. A socket that is absent, refuses, or is not ours to open gets an error that
//! says which and what to check.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

/// Where `--node NAME` looks for a node's admin socket: `<dir>/<NAME>/admin.sock`.
pub(crate) const RUN_DIR: &str = "/run/edgeway";

/// How long a reply may take: the node answers from memory, so this only catches a hang.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running node's status, registrations and maintenance mode.
#[derive(Debug, clap::Args)]
pub(crate) struct ControlArgs {
    #[command(subcommand)]
    command: ControlCommand,
    /// The node's admin socket (its `admin_socket`, by default `<state_dir>/admin.sock`).
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "node")]
    socket: Option<PathBuf>,
    /// Node name: its admin socket is /run/edgeway/<NODE>/admin.sock.
    #[arg(long, global = true, value_name = "NODE", default_value = "edgeway")]
    node: String,
    /// The node's JSON reply on standard output.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum ControlCommand {
    /// Role, traversal zone, maintenance, Unified CM nodes, zones and search rules, counters.
    Status,
    /// The registrations the core holds: AOR, contact, edge flow, node, expires in.
    Registrations,
    /// Sources intrusion protection blocks (edge): address, category, since, until, counts.
    Blocked,
    /// Lifts intrusion protection's block on one address (edge).
    Unblock {
        /// The blocked source address.
        address: std::net::IpAddr,
    },
    /// Maintenance mode: `on` refuses new registrations with 503, keeping existing ones.
    Maintenance {
        /// `on` or `off`.
        state: OnOff,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// Runs one `control` subcommand.
pub(crate) fn run(args: ControlArgs) -> anyhow::Result<()> {
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| Path::new(RUN_DIR).join(&args.node).join("admin.sock"));
    let unblock: String;
    let command = match args.command {
        ControlCommand::Status => "status",
        ControlCommand::Registrations => "registrations",
        ControlCommand::Blocked => "blocked",
        ControlCommand::Unblock { address } => {
            unblock = format!("unblock {address}");
            unblock.as_str()
        }
        ControlCommand::Maintenance { state: OnOff::On } => "maintenance on",
        ControlCommand::Maintenance { state: OnOff::Off } => "maintenance off",
    };
    let reply = ask(&socket, command)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&reply)?)?;
        return Ok(());
    }
    let text = match args.command {
        ControlCommand::Status => status_text(&reply["status"]),
        ControlCommand::Registrations => registrations_text(&reply["registrations"]),
        ControlCommand::Blocked => blocked_text(&reply["blocked"]),
        ControlCommand::Unblock { .. } => unblock_text(&reply),
        ControlCommand::Maintenance { .. } => format!(
            "maintenance {}\n",
            on_off(reply["maintenance"].as_bool().unwrap_or(false))
        ),
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// Sends `command` to the admin socket at `socket`; the reply when it says `"ok": true`.
pub(crate) fn ask(socket: &Path, command: &str) -> anyhow::Result<Value> {
    let shown = socket.display();
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        ErrorKind::NotFound => anyhow::anyhow!(
            "no admin socket at {shown}: is edgeway-control running with this admin_socket? \
             (pass --socket <state_dir>/admin.sock, or --node NAME for {RUN_DIR}/NAME/admin.sock)"
        ),
        ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "admin socket {shown} refuses connections: the node that made it is not running \
             (a stale socket file)"
        ),
        ErrorKind::PermissionDenied => anyhow::anyhow!(
            "may not open admin socket {shown}: it is owner-only (0600); run as the node's user"
        ),
        _ => anyhow::Error::new(e).context(format!("connecting to admin socket {shown}")),
    })?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .with_context(|| format!("sending {command:?} to {shown}"))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .with_context(|| format!("reading the reply to {command:?} from {shown}"))?;
    if line.is_empty() {
        bail!("admin socket {shown} closed without answering {command:?}");
    }
    let reply: Value = serde_json::from_str(&line)
        .with_context(|| format!("the reply from {shown} is not JSON: {:?}", line.trim_end()))?;
    if reply["ok"] != true {
        let why = reply["error"].as_str().unwrap_or("no reason given");
        bail!("the node refused {command:?}: {why}");
    }
    Ok(reply)
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Bool(b) => on_off(*b).into(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, two spaces apart, the header line first (none when empty).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).chain([header.len()]).max();
    let mut width = vec![0; columns.unwrap_or(0)];
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header = (!header.is_empty()).then_some(&header);
    for row in header.into_iter().chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Rows of `fields` taken from each object in `list`.
fn rows(list: &Value, fields: &[&str]) -> Vec<Vec<String>> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| fields.iter().map(|f| cell(&item[*f])).collect())
                .collect()
        })
        .unwrap_or_default()
}

fn status_text(status: &Value) -> String {
    let mut summary = vec![
        vec!["role".to_owned(), cell(&status["role"])],
        vec!["traversal zone".to_owned(), cell(&status["traversal"])],
        vec!["maintenance".to_owned(), cell(&status["maintenance"])],
    ];
    if status["maintenance"] == true {
        // Drained: maintenance on and no call left (the time it drained, Unix ms).
        let drain = &status["drain"];
        let at = drain["drained_at_ms"]
            .as_u64()
            .map(|ms| format!(" (at {ms} ms)"));
        let drained = if drain["drained"] == true {
            "yes"
        } else {
            "no"
        };
        summary.push(vec![
            "drained".to_owned(),
            format!("{drained}{}", at.unwrap_or_default()),
        ]);
    }
    for (key, label) in [
        ("sip_path_headers", "SIP Path headers"),
        ("registrations", "registrations"),
        ("client_flows", "client flows"),
        ("registered_flows", "registered flows"),
    ] {
        if !status[key].is_null() {
            summary.push(vec![label.to_owned(), cell(&status[key])]);
        }
    }
    let mut out = table(&[], &summary);
    if status["role"] == "core" {
        out.push_str("\nUnified CM nodes\n");
        out.push_str(&table(
            &["NAME", "CONNECTED"],
            &rows(&status["ucm_nodes"], &["name", "connected"])
                .into_iter()
                .map(|r| {
                    let up = if r[1] == "on" { "yes" } else { "no" };
                    vec![r[0].clone(), up.to_owned()]
                })
                .collect::<Vec<_>>(),
        ));
        out.push_str("\nZones\n");
        out.push_str(&table(
            &["NAME", "NODE", "TRANSPORT", "ADDRESS"],
            &rows(&status["zones"], &["name", "node", "transport", "address"]),
        ));
        out.push_str("\nSearch rules\n");
        out.push_str(&table(
            &["NAME", "PRIORITY", "PATTERN", "ZONE"],
            &rows(
                &status["search_rules"],
                &["name", "priority", "pattern", "zone"],
            ),
        ));
    }
    if status["protection"].is_object() {
        out.push_str(&protection_text(&status["protection"]));
    }
    out.push_str("\nCounters\n");
    out.push_str(&table(&["COUNTER", "VALUE"], &pairs(&status["counters"])));
    out
}

/// The edge's intrusion protection in `status`: each category's settings and counts, then
/// the protection counters.
fn protection_text(p: &Value) -> String {
    let mut out = format!(
        "\nIntrusion protection ({}; {} sources tracked, {} blocked)\n",
        on_off(p["enabled"].as_bool().unwrap_or(false)),
        cell(&p["tracked_sources"]),
        cell(&p["blocked_sources"]),
    );
    let categories: Vec<Vec<String>> = rows(
        &p["categories"],
        &[
            "id",
            "enabled",
            "trigger_level",
            "detection_window_s",
            "block_duration_s",
            "failures",
            "blocks",
        ],
    )
    .into_iter()
    .map(|mut r| {
        r[3].push('s');
        r[4].push('s');
        r
    })
    .collect();
    out.push_str(&table(
        &[
            "CATEGORY", "ENABLED", "TRIGGER", "WINDOW", "BLOCK", "FAILURES", "BLOCKS",
        ],
        &categories,
    ));
    out.push_str(&table(&[], &pairs(&p["counters"])));
    out
}

/// One `name  value` row per member of a JSON object.
fn pairs(object: &Value) -> Vec<Vec<String>> {
    object
        .as_object()
        .map(|m| m.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect())
        .unwrap_or_default()
}

/// `seconds` since the Unix epoch as UTC, `2026-12-01 11:30:05Z`.
fn utc(seconds: f64) -> String {
    let secs = seconds.max(0.0) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn blocked_text(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|b| {
                    vec![
                        cell(&b["address"]),
                        cell(&b["category"]),
                        utc(b["since"].as_f64().unwrap_or(0.0)),
                        utc(b["until"].as_f64().unwrap_or(0.0)),
                        format!("{}s", cell(&b["remaining_s"])),
                        cell(&b["failures"]),
                        cell(&b["refused"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        return "no blocked sources\n".into();
    }
    table(
        &[
            "ADDRESS",
            "CATEGORY",
            "SINCE",
            "UNTIL",
            "REMAINING",
            "FAILURES",
            "REFUSED",
        ],
        &rows,
    )
}

fn unblock_text(reply: &Value) -> String {
    let address = cell(&reply["address"]);
    if reply["unblocked"] == true {
        format!("unblocked {address}\n")
    } else {
        format!("{address} was not blocked\n")
    }
}

fn registrations_text(list: &Value) -> String {
    let rows: Vec<Vec<String>> = rows(list, &["aor", "contact", "edge_flow", "node", "expires_in"])
        .into_iter()
        .map(|mut r| {
            r[4].push('s');
            r
        })
        .collect();
    if rows.is_empty() {
        // The edge keeps flows, not bindings; say where the registrations are.
        return "no registrations (the core holds them: ask the core's admin socket)\n".into();
    }
    table(
        &["AOR", "CONTACT", "EDGE FLOW", "NODE", "EXPIRES IN"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registrations_table_lines_up() {
        let text = registrations_text(&json!([
            {"aor": "sip:alice@example.com", "contact": "<sip:alice@127.0.0.1:5000>",
             "edge_flow": "ewf3", "node": "cucm1", "expires_in": 58},
            {"aor": "sip:bob@example.com", "contact": "<sip:bob@h>", "edge_flow": null,
             "node": "cucm1", "expires_in": 7},
        ]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("AOR                    CONTACT"),
            "{text}"
        );
        assert!(
            lines[2].contains("  -  "),
            "a missing flow shows as -: {text}"
        );
        assert!(
            lines[1].ends_with("58s") && lines[2].ends_with("7s"),
            "{text}"
        );
        let at = lines[0].find("EDGE FLOW").expect("column");
        assert_eq!(&lines[1][at..at + 4], "ewf3");
    }

    #[test]
    fn blocked_table_shows_utc_times_and_counts() {
        let text = blocked_text(&json!([
            {"address": "192.0.2.7", "category": "http-ce-auth", "since": 1_764_588_605.25,
             "until": 1_764_589_205.25, "remaining_s": 599, "failures": 5, "refused": 2},
        ]));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ADDRESS    CATEGORY"), "{text}");
        let cols: Vec<&str> = lines[1]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cols,
            [
                "192.0.2.7",
                "http-ce-auth",
                "2025-12-01 11:30:05Z",
                "2025-12-01 11:40:05Z",
                "599s",
                "5",
                "2"
            ],
            "{text}"
        );
        assert_eq!(blocked_text(&json!([])), "no blocked sources\n");
        assert_eq!(utc(0.0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00Z");
    }

    #[test]
    fn empty_registrations_say_where_to_look() {
        assert!(registrations_text(&json!([])).contains("the core holds them"));
    }
}
