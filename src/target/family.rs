//! Following a process tree while recording: which descendants appeared and which ended, each
//! identified by (pid, start time) because pids are reused.

use std::collections::BTreeMap;

use super::procfs;

/// A process for good: its pid and when it started (clock ticks after boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    pub pid: i32,
    pub starttime: u64,
}

impl ProcessKey {
    /// The key of a running process, or None when it is gone.
    pub fn of(pid: i32) -> Option<ProcessKey> {
        let stat = procfs::stat(pid).ok()?;
        (stat.state != b'Z' && stat.state != b'X').then_some(ProcessKey {
            pid,
            starttime: stat.starttime,
        })
    }

    /// Whether this very process still runs (not a zombie, not a new process with its pid).
    pub fn alive(&self) -> bool {
        ProcessKey::of(self.pid) == Some(*self)
    }
}

/// Descendants of a root process, as last seen.
pub struct Family {
    root: i32,
    known: BTreeMap<i32, ProcessKey>,
}

/// What changed since the previous scan.
#[derive(Debug, Default)]
pub struct Changes {
    /// New processes, parents before children, with their parent's pid.
    pub appeared: Vec<(ProcessKey, i32)>,
    pub ended: Vec<ProcessKey>,
}

impl Family {
    pub fn new(root: i32) -> Family {
        Family {
            root,
            known: BTreeMap::new(),
        }
    }

    /// Scan `/proc` for the root's descendants.
    pub fn scan(&mut self) -> Changes {
        let mut changes = Changes::default();
        let mut seen = BTreeMap::new();
        let mut queue = vec![self.root];
        while let Some(parent) = queue.pop() {
            for child in procfs::children(parent) {
                if seen.contains_key(&child) || seen.len() >= 65536 {
                    continue;
                }
                let Some(key) = ProcessKey::of(child) else {
                    continue;
                };
                seen.insert(child, key);
                queue.push(child);
                if self.known.get(&child) != Some(&key) {
                    changes.appeared.push((key, parent));
                }
            }
        }
        for (pid, key) in &self.known {
            if seen.get(pid) != Some(key) {
                changes.ended.push(*key);
            }
        }
        self.known = seen;
        changes
    }
}
