//! A table in a unique directory under /dev/shm, removed on drop.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use edgeway_flowtable::{FlowTable, TableOptions};

pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let d = PathBuf::from(format!(
            "/dev/shm/edgeway-test-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options with `capacity` slots and everything else default.
pub(crate) fn opts(capacity: u32) -> TableOptions {
    let mut o = TableOptions::default();
    o.capacity = capacity;
    o
}

/// A fresh table; keep the TempDir alive as long as the table.
pub(crate) fn table(name: &str, o: &TableOptions) -> (TempDir, FlowTable) {
    let d = TempDir::new(name);
    let t = FlowTable::create_at(&d.0, o).expect("create table");
    (d, t)
}
