//! Following a process tree while recording: which descendants appeared and which ended, each
//! identified by (pid, start time) because pids are reused.
//!
//! Each known process is held by a pidfd, which becomes readable when it ends: one `poll` tells
//! which of fifty workers are still the processes they were, where reading each one's `stat`
//! again at every scan (fifty times a second) cost memspy 4 % of a core.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

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

/// Descendants of a root process, as last seen, each with a pidfd (None: not available).
pub struct Family {
    root: i32,
    known: BTreeMap<i32, (ProcessKey, Option<OwnedFd>)>,
}

/// A pidfd of process `pid` (pidfd_open(2), Linux 5.3+), or None.
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and touches no memory; a non-negative result is a
    // new descriptor that nothing else owns, so OwnedFd may take it.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
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
        let ended = self.ended_since();
        let mut seen: BTreeMap<i32, (ProcessKey, Option<OwnedFd>)> = BTreeMap::new();
        let mut queue = vec![self.root];
        while let Some(parent) = queue.pop() {
            for child in procfs::children(parent) {
                if seen.contains_key(&child) || seen.len() >= 65536 {
                    continue;
                }
                // A known process whose pidfd says it runs on is the one known: a live
                // process's pid cannot name another.
                let held = match self.known.remove(&child) {
                    Some((key, Some(fd))) if !ended.contains(&child) => Some((key, Some(fd))),
                    Some(old) => {
                        self.known.insert(child, old);
                        None
                    }
                    None => None,
                };
                let entry = match held {
                    Some(entry) => entry,
                    None => {
                        // The pidfd first, then the key: the key is then that of the process
                        // the pidfd holds.
                        let fd = pidfd(child);
                        let Some(key) = ProcessKey::of(child) else {
                            continue;
                        };
                        if self.known.get(&child).map(|k| k.0) != Some(key) {
                            changes.appeared.push((key, parent));
                        }
                        (key, fd)
                    }
                };
                seen.insert(child, entry);
                queue.push(child);
            }
        }
        for (pid, (key, _)) in &self.known {
            if seen.get(pid).map(|k| k.0) != Some(*key) {
                changes.ended.push(*key);
            }
        }
        self.known = seen;
        changes
    }

    /// The known processes whose pidfd says they ended (one `poll` for all).
    fn ended_since(&self) -> HashSet<i32> {
        let (pids, mut fds): (Vec<i32>, Vec<PollFd>) = self
            .known
            .iter()
            .filter_map(|(&pid, (_, fd))| {
                Some((pid, PollFd::new(fd.as_ref()?.as_fd(), PollFlags::POLLIN)))
            })
            .unzip();
        if fds.is_empty() || poll(&mut fds, PollTimeout::ZERO).is_err() {
            return HashSet::new();
        }
        pids.into_iter()
            .zip(fds)
            .filter(|(_, fd)| fd.revents().is_none_or(|r| !r.is_empty()))
            .map(|(pid, _)| pid)
            .collect()
    }
}
