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
