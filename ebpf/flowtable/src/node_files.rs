//! The two small text files the data plane keeps beside the table, for the control plane and
//! `edgewayctl`: `xdp`, what became of the XDP program when the data plane started (attached
//! where and in which mode, or why not), and `events`, the XDP program's ring-buffer events
//! (latches, bursts of packets for no flow) as JSON lines. Both formats are written and read
//! only here, so the writer and its readers cannot drift apart.
//!
//! The event log is bounded: when an append would take `events` past its limit (1 MiB by
//! default), the file becomes `events.1` (replacing the one before) and a new `events`
//! starts, so at most two limits' worth is kept. Readers see `events.1` then `events`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use edgeway_map_schema::{xdp_event, XdpEvent};
use serde_json::{json, Value};

use crate::{format_endpoint, format_key};

/// Name of the XDP status file in the table directory.
pub const XDP_STATUS_FILE: &str = "xdp";
/// Name of the event log in the table directory.
pub const EVENTS_FILE: &str = "events";
/// The event log's size limit by default (bytes per file; one rotated file is kept).
pub const EVENTS_MAX_BYTES: u64 = 1 << 20;

/// What the data plane said of XDP when it started: one line per fact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpStatus {
    /// The lines, as written.
    pub lines: Vec<String>,
}

/// How the program sits on one interface, as the status file records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpAttachment {
    /// The interface.
    pub interface: String,
    /// `native` or `generic` (`unknown` when a pinned link was taken over from a data plane
    /// that left no status).
    pub mode: String,
    /// An earlier data plane's pinned link was kept and the program in it replaced.
    pub replaced: bool,
}

impl XdpStatus {
    /// XDP was not used: `why`, and that the workers carry all media.
    pub fn off(why: &str) -> XdpStatus {
        XdpStatus {
            lines: vec![format!("off: {why}; the workers carry all media")],
        }
    }

    /// Records that the program is attached to `a.interface`.
    pub fn push_attached(&mut self, a: &XdpAttachment) {
        let kept = if a.replaced {
            "; kept the pinned link, program replaced"
        } else {
            ""
        };
        self.lines
            .push(format!("attached to {} ({}{kept})", a.interface, a.mode));
    }

    /// Records where the program's maps and links are pinned.
    pub fn push_pin_dir(&mut self, dir: &Path) {
        self.lines.push(format!("maps pinned in {}", dir.display()));
    }

    /// Where the program's maps and links are pinned, if recorded.
    pub fn pin_dir(&self) -> Option<PathBuf> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix("maps pinned in "))
            .map(PathBuf::from)
    }

    /// Records a warning that does not stop XDP (e.g. forwarding off on an interface).
    pub fn push_note(&mut self, note: String) {
        self.lines.push(format!("note: {note}"));
    }

    /// The attachments recorded.
    pub fn attachments(&self) -> Vec<XdpAttachment> {
        self.lines
            .iter()
            .filter_map(|l| {
                let rest = l.strip_prefix("attached to ")?;
                let (interface, inner) = rest.split_once(" (")?;
                let inner = inner.strip_suffix(')')?;
                let (mode, kept) = match inner.split_once("; ") {
                    Some((m, _)) => (m, true),
                    None => (inner, false),
                };
                Some(XdpAttachment {
                    interface: interface.to_owned(),
                    mode: mode.to_owned(),
                    replaced: kept,
                })
            })
            .collect()
    }

    /// Why XDP is off, if it is.
    pub fn off_reason(&self) -> Option<&str> {
        self.lines.iter().find_map(|l| l.strip_prefix("off: "))
    }

    /// The warnings recorded.
    pub fn notes(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|l| l.strip_prefix("note: "))
    }

    /// Reads the status file of table directory `dir`; None if no data plane wrote one.
    pub fn read(dir: &Path) -> Option<XdpStatus> {
        let text = fs::read_to_string(dir.join(XDP_STATUS_FILE)).ok()?;
        Some(XdpStatus {
            lines: text.lines().map(str::to_owned).collect(),
        })
    }

    /// Replaces the status file of table directory `dir`.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        fs::write(dir.join(XDP_STATUS_FILE), self.lines.join("\n") + "\n")
    }
}

/// The name of an [`XdpEvent`] kind.
pub fn event_kind_name(kind: u32) -> &'static str {
    match kind {
        xdp_event::LATCHED => "latched",
        xdp_event::NO_FLOW => "no_flow",
        _ => "unknown",
    }
}

/// An event as one JSON object; `time_ms` is its Unix time (the caller converts the
/// program's monotonic `ktime_ns`).
pub fn event_json(ev: &XdpEvent, time_ms: u64) -> Value {
    json!({
        "time_ms": time_ms,
        "kind": event_kind_name(ev.kind),
        "count": ev.count,
        "key": format_key(&ev.key),
        "src": format_endpoint(&ev.src),
        "ktime_ns": ev.ktime_ns,
    })
}

/// The bounded JSON-lines event log of one table directory.
#[derive(Debug, Clone)]
pub struct EventLog {
    path: PathBuf,
    max_bytes: u64,
}

impl EventLog {
    /// The log of table directory `dir`, with the default limit.
    pub fn new(dir: &Path) -> EventLog {
        EventLog::with_limit(dir, EVENTS_MAX_BYTES)
    }

    /// The log of table directory `dir`, rotated past `max_bytes`.
    pub fn with_limit(dir: &Path, max_bytes: u64) -> EventLog {
        EventLog {
            path: dir.join(EVENTS_FILE),
            max_bytes: max_bytes.max(1),
        }
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rotated file (`events.1`).
    pub fn rotated_path(&self) -> PathBuf {
        self.path.with_extension("1")
    }

    /// Appends one line per value, rotating first when they would not fit under the limit.
    pub fn append(&self, values: &[Value]) -> io::Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for v in values {
            text.push_str(&v.to_string());
            text.push('\n');
        }
        let size = fs::metadata(&self.path).map_or(0, |m| m.len());
        if size > 0 && size + text.len() as u64 > self.max_bytes {
            fs::rename(&self.path, self.rotated_path())?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        // One write per batch: a reader never sees half a line unless the disk is full.
        f.write_all(text.as_bytes())
    }

    /// Every event kept, oldest first (`events.1`, then `events`); lines that are not JSON
    /// (a torn tail) are skipped.
    pub fn read_all(&self) -> io::Result<Vec<Value>> {
        let mut out = self.read_rotated()?;
        out.extend(self.read_from(0)?.0);
        Ok(out)
    }

    /// The events of the rotated file (`events.1`), oldest first.
    pub fn read_rotated(&self) -> io::Result<Vec<Value>> {
        let mut out = Vec::new();
        match File::open(self.rotated_path()) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    if let Ok(v) = serde_json::from_str(&line?) {
                        out.push(v);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(out)
    }

    /// Follows the log from `from` (a position in the current file): the events appended
    /// since and the position to continue from. A rotation since (the file is shorter than
    /// `from`) restarts at the new file's beginning.
    pub fn read_from(&self, from: u64) -> io::Result<(Vec<Value>, u64)> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let start = if len < from { 0 } else { from };
        f.seek(SeekFrom::Start(start))?;
        let mut reader = BufReader::new(f);
        let mut out = Vec::new();
        let mut pos = start;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line)?;
            // A line without its newline is still being written: read it next time.
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            pos += n as u64;
            if let Ok(v) = serde_json::from_str(&line) {
                out.push(v);
            }
        }
        Ok((out, pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeway_map_schema::{Endpoint, FlowKey};

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("edgeway-nodefiles-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("scratch dir");
        d
    }

    #[test]
    fn status_lines_round_trip() {
        let mut s = XdpStatus::default();
        s.push_attached(&XdpAttachment {
            interface: "e0".into(),
            mode: "native".into(),
            replaced: false,
        });
        s.push_attached(&XdpAttachment {
            interface: "e1".into(),
            mode: "generic".into(),
            replaced: true,
        });
        s.push_note("e1: forwarding is 0".into());
        s.push_pin_dir(Path::new("/sys/fs/bpf/edgeway/n1"));
        let dir = scratch("status");
        s.write(&dir).expect("write");
        let back = XdpStatus::read(&dir).expect("read");
        assert_eq!(back, s);
        let a = back.attachments();
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].mode.as_str(), a[0].replaced), ("native", false));
        assert_eq!((a[1].interface.as_str(), a[1].replaced), ("e1", true));
        assert_eq!(back.notes().collect::<Vec<_>>(), ["e1: forwarding is 0"]);
        assert_eq!(back.off_reason(), None);
        assert_eq!(
            back.pin_dir(),
            Some(PathBuf::from("/sys/fs/bpf/edgeway/n1"))
        );
        let off = XdpStatus::off("no such interface");
        assert_eq!(
            off.off_reason(),
            Some("no such interface; the workers carry all media")
        );
        assert!(off.attachments().is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_event_log_rotates_and_follows() {
        let dir = scratch("events");
        let log = EventLog::with_limit(&dir, 400);
        let ev = XdpEvent {
            kind: xdp_event::NO_FLOW,
            count: 3,
            key: FlowKey::port(41000),
            src: Endpoint::new([198, 51, 100, 2], 6000),
            ktime_ns: 5,
        };
        let mut cursor = 0;
        for i in 0..10u64 {
            log.append(&[event_json(&ev, i)]).expect("append");
            let (new, next) = log.read_from(cursor).expect("follow");
            // After a rotation the follower restarts on the new file and sees the new line.
            assert_eq!(new.last().expect("the new line")["time_ms"], i);
            cursor = next;
        }
        let all = log.read_all().expect("read");
        assert!(all.len() < 10, "older events were dropped: {}", all.len());
        assert_eq!(all.last().expect("events")["time_ms"], 9);
        assert_eq!(all[0]["kind"], "no_flow");
        assert_eq!(all[0]["key"], "41000");
        assert_eq!(all[0]["src"], "198.51.100.2:6000");
        let kept: u64 = [log.path().to_owned(), log.rotated_path()]
            .iter()
            .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        assert!(kept <= 800, "bounded to two files: {kept}");
        // A torn tail is not an event, and not read until it is whole.
        fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .and_then(|mut f| f.write_all(b"{\"kind\":"))
            .expect("torn write");
        let (new, at) = log.read_from(cursor).expect("follow");
        assert!(new.is_empty());
        assert_eq!(at, cursor);
        let _ = fs::remove_dir_all(&dir);
    }
}
