//! Stopping a process's threads for a consistent snapshot (blocking mode).
//!
//! Each thread is `PTRACE_SEIZE`d and interrupted, and detached again when the returned guard
//! is dropped. If memspy dies while holding it, the kernel detaches the threads itself and they
//! run on: a target is never left stopped.
//!
//! `dump` stops a whole process with remoteprocess's lock. The recorder stops only the threads
//! that run Python, with [`stop_threads`], which is written here because of one case
//! remoteprocess cannot handle: when the process memspy launched exits while one of its
//! threads is being stopped, the `waitpid` that waits for the stop collects the process's exit
//! status, which would then be lost to memspy's own wait. [`stop_threads`] hands such a status
//! to [`super::launch`], so the recording still ends with the program's exit status.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

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
    pid: i32,
    tids: Vec<Pid>,
    /// When the first thread was asked to stop (CLOCK_MONOTONIC, ns; 0: none was).
    pub first_stop_ns: u64,
}

impl Drop for StoppedThreads {
    fn drop(&mut self) {
        for &tid in &self.tids {
            release(self.pid, tid);
        }
    }
}

/// Let go of a seized thread. PTRACE_DETACH needs the thread in a ptrace stop: one that was
/// seized but never stopped (an error cut the stop short) answers ESRCH while it runs, and is
/// then stopped first, or it would stay traced by memspy and hang at its next signal. ESRCH
/// after that: the thread is gone.
fn release(pid: i32, tid: Pid) {
    if ptrace::detach(tid, None) == Err(Errno::ESRCH) && ptrace::interrupt(tid).is_ok() {
        wait_for_stop(pid, tid);
        let _ = ptrace::detach(tid, None);
    }
}

/// Stop only the given threads of `pid` (the ones that run Python: stopping every native
/// thread of a process with hundreds of them is what makes sampling profilers stall targets).
///
/// `tids` must be kernel thread ids already proven to be threads of `pid` (see
/// [`super::threads`]). Because a proven thread can exit and its number be reused by another
/// process at any moment, each thread is first only *seized* (`PTRACE_SEIZE` does not stop
/// it), then `still_ours(i)` is asked whether `tids[i]` still names the thread that was proven
/// (the caller re-reads a file of that thread held open since), and only then interrupted. A
/// thread that fails the check is let go at once, never stopped. Threads that exit meanwhile
/// are skipped.
///
/// All are seized and checked first, then all interrupted, then all waited for: the threads
/// stop together (each on its own CPU) and the time they are held is one stop, not the sum of
/// one stop after another.
pub fn stop_threads(
    pid: i32,
    tids: &[i32],
    mut still_ours: impl FnMut(usize) -> bool,
) -> Result<StoppedThreads, Error> {
    let mut stopped = StoppedThreads {
        pid,
        tids: Vec::with_capacity(tids.len()),
        first_stop_ns: 0,
    };
    for (i, &raw) in tids.iter().enumerate() {
        let tid = Pid::from_raw(raw);
        match ptrace::seize(tid, ptrace::Options::PTRACE_O_TRACEEXIT) {
            Ok(()) => {}
            Err(Errno::ESRCH) => continue,
            Err(Errno::EPERM) => {
                return Err(match super::procfs::tracer_pid(pid) {
                    Some(tracer) => Error::Traced { pid, tracer },
                    None => Error::PermissionDenied(pid),
                })
            }
            Err(e) => {
                return Err(Error::Other(format!(
                    "stopping thread {tid} of process {pid}: {e}"
                )))
            }
        }
        if !still_ours(i) {
            release(pid, tid);
            continue;
        }
        // From here on the guard detaches it, whatever happens.
        stopped.tids.push(tid);
    }
    if !stopped.tids.is_empty() {
        stopped.first_stop_ns = crate::sample::now_ns();
    }
    let mut asked = 0;
    for i in 0..stopped.tids.len() {
        // A thread that cannot be interrupted (it is exiting) is not waited for.
        if ptrace::interrupt(stopped.tids[i]).is_ok() {
            stopped.tids.swap(asked, i);
            asked += 1;
        }
    }
    for &tid in &stopped.tids[..asked] {
        wait_for_stop(pid, tid);
    }
    Ok(stopped)
}

/// Wait until `tid` reports the stop we asked for (or its exit).
fn wait_for_stop(pid: i32, tid: Pid) {
    for _ in 0..64 {
        match waitpid(tid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(_, _, event))
                if event == ptrace::Event::PTRACE_EVENT_STOP as i32
                    || event == ptrace::Event::PTRACE_EVENT_EXIT as i32 =>
            {
                return;
            }
            // A signal on its way to the thread: let it through and keep waiting for our stop.
            Ok(WaitStatus::Stopped(_, signal)) => {
                let _ = ptrace::cont(tid, signal);
            }
            Ok(WaitStatus::PtraceEvent(..)) | Ok(WaitStatus::PtraceSyscall(_)) => {
                let _ = ptrace::cont(tid, None);
            }
            // The thread ended. If it is the main thread, the process ended and this wait
            // collected its status: keep it for the launcher.
            Ok(WaitStatus::Exited(_, code)) => {
                if tid.as_raw() == pid {
                    super::launch::reaped(pid, ExitStatus::from_raw((code & 0xff) << 8));
                }
                return;
            }
            Ok(WaitStatus::Signaled(_, signal, core)) => {
                if tid.as_raw() == pid {
                    let core = if core { 0x80 } else { 0 };
                    super::launch::reaped(pid, ExitStatus::from_raw(signal as i32 | core));
                }
                return;
            }
            Err(Errno::EINTR) => {}
            _ => return,
        }
    }
}
