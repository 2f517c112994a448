//! Finding the processes to sample, off the sampling thread: scanning the target's process
//! tree for new children, and retrying processes that are not Python yet (an interpreter still
//! starting, a fork about to exec, a shell that will exec python). Locating an interpreter
//! parses ELF files and would make the sampling loop miss ticks; here it costs nothing to it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use crate::python::{binary, BinaryCache, StackReader};
use crate::target::family::{Family, ProcessKey};
use crate::target::{procfs, ProcessMemory};

/// How often children are looked for (a worker living 200 ms is caught several times).
pub const INTERVAL: Duration = Duration::from_millis(20);
/// A process is retried at every scan while it is this young, then once a second.
const YOUNG_NS: u64 = 2_000_000_000;

/// A Python process ready to be sampled.
pub struct Found {
    pub key: ProcessKey,
    /// The pid of the parent it was found under (None for the root).
    pub parent_pid: Option<i32>,
    pub reader: StackReader<ProcessMemory>,
}

struct Waiting {
    parent_pid: Option<i32>,
    exe: String,
    first_seen_ns: u64,
    next_try_ns: u64,
}

fn now_ns() -> u64 {
    super::now_ns()
}

/// Runs until `done` is set or the sampler hangs up. `recheck` receives processes the sampler
/// gave up (after an exec) to be looked at again.
pub fn run(
    root: ProcessKey,
    root_is_waiting: bool,
    subprocesses: bool,
    found: Sender<Found>,
    recheck: Receiver<(ProcessKey, Option<i32>)>,
    done: Arc<AtomicBool>,
) {
    let mut family = subprocesses.then(|| Family::new(root.pid));
    let mut waiting: BTreeMap<ProcessKey, Waiting> = BTreeMap::new();
    let mut known: Vec<ProcessKey> = vec![root];
    let mut binaries = BinaryCache::default();
    let add =
        |waiting: &mut BTreeMap<ProcessKey, Waiting>, key: ProcessKey, parent_pid: Option<i32>| {
            let now = now_ns();
            let exe = procfs::exe(key.pid)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            waiting.insert(
                key,
                Waiting {
                    parent_pid,
                    exe,
                    first_seen_ns: now,
                    next_try_ns: now,
                },
            );
        };
    if root_is_waiting {
        add(&mut waiting, root, None);
    }
    while !done.load(Ordering::Relaxed) {
        while let Ok((key, parent)) = recheck.try_recv() {
            add(&mut waiting, key, parent);
        }
        if let Some(family) = family.as_mut() {
            let changes = family.scan();
            for (key, parent_pid) in changes.appeared {
                if !known.contains(&key) {
                    known.push(key);
                    add(&mut waiting, key, Some(parent_pid));
                }
            }
            known.retain(|k| !changes.ended.contains(k));
        }
        let now = now_ns();
        let due: Vec<ProcessKey> = waiting
            .iter()
            .filter(|(_, w)| w.next_try_ns <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if !key.alive() {
                waiting.remove(&key);
                continue;
            }
            let located = binary::locate_cached(key.pid, &mut binaries)
                .and_then(|b| StackReader::new(ProcessMemory::new(key.pid), b));
            match located {
                Ok(reader) => {
                    let w = waiting.remove(&key).expect("waiting entry");
                    if found
                        .send(Found {
                            key,
                            parent_pid: w.parent_pid,
                            reader,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                Err(_) => {
                    let w = waiting.get_mut(&key).expect("waiting entry");
                    let exe = procfs::exe(key.pid)
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let young = now.saturating_sub(w.first_seen_ns) < YOUNG_NS;
                    let changed = exe != w.exe;
                    w.exe = exe;
                    w.next_try_ns = now + if young || changed { 0 } else { 1_000_000_000 };
                }
            }
        }
        std::thread::sleep(INTERVAL);
    }
}
