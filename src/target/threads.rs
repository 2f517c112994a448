//! Which kernel threads belong to a target, and which of them a thread id read from the target's
//! memory names.
//!
//! A Python thread state holds its thread's id as the target sees it: `native_thread_id` (3.11+)
//! or the tid in glibc's `struct pthread` (3.8-3.10). The target can write anything there, and
//! in a pid namespace (a container, `unshare --pid`) the honest value is a namespace id that
//! means another process on the host. So memspy never acts on such an id directly: it maps it
//! to a thread the kernel lists under `/proc/PID/task/`, through each thread's `NSpid` line
//! (`/proc/PID/task/TID/status`: the id in every nested namespace, the target's own last). An
//! id that maps to nothing is *unproven*: its stack may still be read (that only reads the
//! target's own memory), but its thread is never stopped or signalled.
//!
//! A process whose pid namespace is the one `/proc` shows (its `NSpid` has one field; all its
//! threads share its namespace) uses the listed ids itself: there an id is proven by the
//! existence of `/proc/PID/task/ID` alone, which lists only the process's own threads, and a
//! thousand threads cost one directory listing instead of a thousand `status` reads.
//!
//! Proof of membership at the moment of acting on a thread is kept by the thread's own
//! `/proc/PID/task/TID/stat` file held open (see `sample::process`): the open file stays bound
//! to that very thread, so a read that succeeds after `PTRACE_SEIZE` shows the seized id still
//! names it, not a process that reused the number after the thread exited.

use std::collections::HashMap;
use std::io;

use super::procfs;

/// Mapping from the thread ids a process uses for itself to the kernel's (host) thread ids.
#[derive(Debug)]
pub struct ThreadMap {
    pid: i32,
    /// Target's id -> host tid, as of the last scan.
    host: HashMap<i32, i32>,
    /// Whether the process lives in a pid namespace other than memspy's (its ids differ).
    pub namespaced: bool,
    /// Whether its ids are the ones `/proc` lists (known after the first scan).
    flat: Option<bool>,
    /// When the last scan happened (ns, monotonic), to bound rescans a target can provoke.
    last_scan_ns: Option<u64>,
    /// Ids checked one by one since the last scan.
    checks: u32,
}

/// Rescans for an id that is not in the map happen at most this often, and at most this many
/// ids are checked one by one between two rescans: a target that writes random ids into its
/// thread states must not make memspy list its threads, or open thousands of files, every tick.
const RESCAN_NS: u64 = 50_000_000;
const CHECKS_PER_RESCAN: u32 = 256;

impl ThreadMap {
    /// An empty map for `pid` (filled by the first lookup).
    pub fn new(pid: i32) -> ThreadMap {
        ThreadMap {
            pid,
            host: HashMap::new(),
            namespaced: false,
            flat: None,
            last_scan_ns: None,
            checks: 0,
        }
    }

    /// List the process's threads and their namespace ids.
    pub fn scan(&mut self, now_ns: u64) -> io::Result<()> {
        self.last_scan_ns = Some(now_ns);
        self.checks = 0;
        let flat = *self
            .flat
            .get_or_insert_with(|| procfs::pid_namespace_depth(self.pid) == Some(1));
        let tids = procfs::threads(self.pid)?;
        let mut host = HashMap::with_capacity(tids.len());
        if flat {
            host.extend(tids.into_iter().map(|tid| (tid, tid)));
            self.host = host;
            self.namespaced = false;
            return Ok(());
        }
        let mut namespaced = false;
        for tid in tids {
            // A thread that exits meanwhile has no status any more: it is simply not mapped.
            let Some(inner) = procfs::thread_nspid(self.pid, tid) else {
                continue;
            };
            namespaced |= inner != tid;
            host.insert(inner, tid);
        }
        self.host = host;
        self.namespaced = namespaced;
        Ok(())
    }

    /// The host tid of the target's thread `id`, or None when no thread of the target has it.
    /// An unknown id is first checked alone: a thread listed as `/proc/PID/task/ID` whose own
    /// id (last in `NSpid`) is ID is that very thread, in a namespace or not (a new thread,
    /// most often). Else a rescan (the id of a thread in a pid namespace), at most every 50 ms.
    pub fn host_tid(&mut self, id: i32, now_ns: u64) -> Option<i32> {
        if let Some(&tid) = self.host.get(&id) {
            return Some(tid);
        }
        if self.flat.is_none() && id > 0 {
            // The first lookup: one scan answers for every thread there is.
            return self
                .scan(now_ns)
                .ok()
                .and_then(|()| self.host.get(&id).copied());
        }
        if id > 0 && self.checks < CHECKS_PER_RESCAN {
            self.checks += 1;
            let listed = if self.flat == Some(true) {
                std::fs::symlink_metadata(format!("/proc/{}/task/{id}", self.pid))
                    .is_ok()
                    .then_some(id)
            } else {
                procfs::thread_nspid(self.pid, id)
            };
            if listed == Some(id) {
                self.host.insert(id, id);
                return Some(id);
            }
        }
        let due = self
            .last_scan_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= RESCAN_NS);
        if due && self.scan(now_ns).is_ok() {
            return self.host.get(&id).copied();
        }
        None
    }

    /// Forget the id of a thread that is gone (its number may be reused by another process).
    pub fn forget(&mut self, id: i32) {
        self.host.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_maps_its_own_threads() {
        let pid = std::process::id() as i32;
        let me = nix::unistd::gettid().as_raw();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = done_rx.recv();
        });
        let other_tid = rx.recv().unwrap();
        let mut map = ThreadMap::new(pid);
        assert_eq!(map.host_tid(me, 0), Some(me));
        assert_eq!(map.host_tid(other_tid, 0), Some(other_tid));
        assert!(!map.namespaced);
        // Process 1 is not a thread of this process, whatever a target's memory says.
        assert_eq!(map.host_tid(1, u64::MAX), None);
        done_tx.send(()).unwrap();
        other.join().unwrap();
    }

    #[test]
    fn unknown_ids_rescan_at_a_bounded_rate() {
        let mut map = ThreadMap::new(std::process::id() as i32);
        map.scan(1_000).unwrap();
        assert_eq!(map.host_tid(-5, 2_000), None);
        assert_eq!(map.last_scan_ns, Some(1_000), "rescanned too soon");
        assert_eq!(map.host_tid(-5, 1_000 + RESCAN_NS), None);
        assert_eq!(map.last_scan_ns, Some(1_000 + RESCAN_NS));
        // Ids checked one by one are bounded between rescans too.
        for id in 1..=2 * CHECKS_PER_RESCAN as i32 {
            let _ = map.host_tid(1_000_000 + id, 1_000 + RESCAN_NS);
        }
        assert_eq!(map.checks, CHECKS_PER_RESCAN);
    }

    #[test]
    fn a_thread_started_after_the_scan_is_proven_at_once() {
        let pid = std::process::id() as i32;
        let mut map = ThreadMap::new(pid);
        map.scan(1_000).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        // Right after the scan: no rescan is due, the id is proven by itself.
        assert_eq!(map.host_tid(tid, 2_000), Some(tid));
        assert_eq!(map.last_scan_ns, Some(1_000));
        done_tx.send(()).unwrap();
        other.join().unwrap();
    }
}
