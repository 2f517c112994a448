//! Stopping a process's threads for a consistent snapshot (blocking mode).
//!
//! This uses remoteprocess's ptrace lock: every thread is `PTRACE_SEIZE`d and interrupted, and
//! detached again when the returned guard is dropped. If memspy dies while holding it, the
//! kernel detaches the threads itself and they run on: a target is never left stopped.

use crate::error::Error;

/// Threads of a process stopped until this is dropped.
pub struct StoppedProcess {
    _lock: remoteprocess::Lock,
}

/// Stop every thread of `pid`.
pub fn stop(pid: i32) -> Result<StoppedProcess, Error> {
    let process =
        remoteprocess::Process::new(pid).map_err(|e| Error::from_remoteprocess(pid, e))?;
    let lock = process
        .lock()
        .map_err(|e| Error::from_remoteprocess(pid, e))?;
    // Test hook: hold the lock so a test can kill memspy while the target is stopped and check
    // that the target runs on.
    if let Some(ms) = std::env::var("MEMSPY_TEST_HOLD_LOCK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    Ok(StoppedProcess { _lock: lock })
}

/// Threads stopped until this is dropped.
pub struct StoppedThreads {
    _locks: Vec<remoteprocess::ThreadLock>,
}

/// Stop only the given threads of `pid` (the ones that run Python: stopping every native
/// thread of a process with hundreds of them is what makes sampling profilers stall targets).
/// Threads that exited meanwhile are skipped.
pub fn stop_threads(pid: i32, tids: &[i32]) -> Result<StoppedThreads, Error> {
    let mut locks = Vec::with_capacity(tids.len());
    for &tid in tids {
        let thread =
            remoteprocess::Thread::new(tid).map_err(|e| Error::from_remoteprocess(pid, e))?;
        match thread.lock() {
            Ok(lock) => locks.push(lock),
            Err(remoteprocess::Error::NixError(nix::errno::Errno::ESRCH)) => continue,
            Err(e) => return Err(Error::from_remoteprocess(pid, e)),
        }
    }
    Ok(StoppedThreads { _locks: locks })
}
