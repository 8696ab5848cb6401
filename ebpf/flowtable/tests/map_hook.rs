//! The writer hook (`MapHook`) that keeps a second copy of the flow map in the same call
//! (edgeway-xdp's pinned `flows` map; its own tests run the real one): it sees every change
//! after the slot is published, in the table's order, with the generation the table gave;
//! and a refusal is a typed error that leaves the table, and its change log, holding the
//! change for the reconciler.

mod common;

use std::sync::{Arc, Mutex};

use common::{opts, table};
use edgeway_flowtable::{ChangesResult, Error, FlowEntry, FlowKey, FlowTable, MapHook};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Inserted(FlowKey, u32, u64),
    Removed(FlowKey),
}

/// Records what it is told, checking each time through its own handle that the table
/// already shows the change (published before the hook runs); refuses keys on port 666.
#[derive(Debug)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    table: FlowTable,
}

impl MapHook for Recorder {
    fn inserted(&self, key: &FlowKey, entry: &FlowEntry) -> Result<(), String> {
        let (_, published) = self.table.lookup(key).ok_or("not published yet")?;
        assert_eq!(published.generation, entry.generation);
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Seen::Inserted(*key, entry.generation, entry.flow_id));
        if key.local_port == 666 {
            return Err("map full".into());
        }
        Ok(())
    }

    fn removed(&self, key: &FlowKey) -> Result<(), String> {
        if self.table.lookup(key).is_some() {
            return Err("removal not published yet".into());
        }
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Seen::Removed(*key));
        Ok(())
    }

    fn describe(&self) -> String {
        "the recorder".into()
    }
}

fn entry(flow_id: u64) -> FlowEntry {
    FlowEntry {
        flow_id,
        action: 1,
        out_local_port: 36010,
        ..FlowEntry::default()
    }
}

#[test]
fn the_hook_sees_every_published_change_in_order() {
    let (d, mut t) = table("hook", &opts(64));
    let seen = Arc::new(Mutex::new(Vec::new()));
    t.set_map_hook(Box::new(Recorder {
        seen: Arc::clone(&seen),
        table: FlowTable::open_at(&d.0).expect("a second handle"),
    }));
    assert_eq!(
        t.map_hook().map(|h| h.describe()).as_deref(),
        Some("the recorder")
    );
    let a = FlowKey::port(36002);
    let b = FlowKey::demux(2776, [192, 0, 2, 1], 40000);
    t.insert(a, entry(1)).expect("a");
    t.insert(b, entry(2)).expect("b");
    t.insert(a, entry(3)).expect("a replaced");
    assert_eq!(t.remove(&b).expect("remove").map(|e| e.flow_id), Some(2));
    assert_eq!(
        t.remove(&b).expect("remove again"),
        None,
        "nothing to remove"
    );
    assert_eq!(
        *seen.lock().expect("seen"),
        [
            Seen::Inserted(a, 1, 1),
            Seen::Inserted(b, 1, 2),
            Seen::Inserted(a, 2, 3),
            Seen::Removed(b),
        ]
    );
}

#[test]
fn a_refusing_hook_is_a_typed_error_and_the_table_keeps_the_change() {
    let (d, mut t) = table("hook-refuses", &opts(64));
    let seen = Arc::new(Mutex::new(Vec::new()));
    t.set_map_hook(Box::new(Recorder {
        seen,
        table: FlowTable::open_at(&d.0).expect("a second handle"),
    }));
    let cursor = t.change_cursor();
    let bad = FlowKey::port(666);
    let err = t.insert(bad, entry(7)).expect_err("the hook refused");
    let text = err.to_string();
    assert!(
        matches!(&err, Error::MapWrite { op: "insert", key, .. } if key == "666"),
        "{err:?}"
    );
    assert!(
        text.contains("the recorder") && text.contains("map full"),
        "{text}"
    );
    assert!(text.contains("is in the flow table"), "{text}");
    // The table is the record: the entry is there, and the change log carries it for the
    // data plane's mirror to reconcile.
    assert_eq!(t.lookup(&bad).map(|(_, e)| e.flow_id), Some(7));
    let mut changes = Vec::new();
    let r = t.changes_since(cursor, &mut |c| changes.push(c.key));
    assert!(matches!(r, ChangesResult::UpTo(_)));
    assert_eq!(changes, [bad]);
    // The writer lock was released: the next write goes through.
    t.insert(FlowKey::port(36004), entry(8))
        .expect("next write");
}
