//! Starting the program to record (`memspy record -- cmd ...`), passing signals on to it, and
//! collecting its exit status.
//!
//! The child asks to be traced (PTRACE_TRACEME) before it executes the program, so the kernel
//! stops it right after exec, with the program loaded but not one of its instructions run;
//! memspy finishes setting up and [`Launched::resume`] detaches and lets it go. (Stopping before
//! exec would not do: `Command::spawn` waits for the exec to happen.)

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// A program memspy started.
pub struct Launched {
    child: Child,
    status: Option<ExitStatus>,
}

impl Launched {
    /// Start `argv`, stopped before it executes anything.
    pub fn spawn(argv: &[String]) -> Result<Launched> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Error::Usage("no command to run".into()))?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe functions may be called; ptrace(2) is a plain system call that
        // touches no memory shared with the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("cannot start {program}"), e))?;
        // The exec stops the traced child with SIGTRAP.
        let pid = Pid::from_raw(child.id() as i32);
        loop {
            match waitpid(pid, Some(WaitPidFlag::WUNTRACED)) {
                Ok(WaitStatus::Stopped(_, _)) => break,
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                    return Err(Error::Other(format!("{program} ended before it started")));
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => continue,
                Err(e) => return Err(Error::Other(format!("waiting for {program} to start: {e}"))),
            }
        }
        Ok(Launched {
            child,
            status: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Let the program run.
    pub fn resume(&self) -> Result<()> {
        resume(self.pid())
    }

    /// Send a signal to the program (memspy passes on SIGINT and SIGTERM sent to itself).
    pub fn signal(&self, signal: i32) {
        if self.status.is_none() {
            if let Ok(sig) = Signal::try_from(signal) {
                let _ = kill(Pid::from_raw(self.pid()), sig);
            }
        }
    }

    /// The exit status, once the program has ended (reaps it).
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => self.status = Some(status),
                Ok(None) => {}
                // Already collected by a wait for a ptrace stop (see target::lock).
                Err(_) => {
                    self.status =
                        Some(take_reaped(self.pid()).unwrap_or(ExitStatus::from_raw(2 << 8)))
                }
            }
        }
        self.status
    }

    /// Block until the program ends.
    pub fn wait(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let status = self
            .child
            .wait()
            .unwrap_or_else(|_| ExitStatus::from_raw(2 << 8));
        self.status = Some(status);
        status
    }
}

/// Exit statuses collected by waits that were not memspy's own wait for its program (a
/// `waitpid` for a ptrace stop of a thread that turned out to be the exiting program).
static REAPED: std::sync::Mutex<Vec<(i32, ExitStatus)>> = std::sync::Mutex::new(Vec::new());

/// Keep the exit status of `pid`, collected elsewhere.
pub fn reaped(pid: i32, status: ExitStatus) {
    if let Ok(mut r) = REAPED.lock() {
        r.push((pid, status));
    }
}

fn take_reaped(pid: i32) -> Option<ExitStatus> {
    let mut r = REAPED.lock().ok()?;
    let i = r.iter().position(|(p, _)| *p == pid)?;
    Some(r.remove(i).1)
}

/// The exit status a shell would report: the code, or 128 + N for death by signal N.
pub fn shell_status(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        _ => 2,
    }
}

/// Let a program started by [`Launched::spawn`] run (stop tracing it; its exec SIGTRAP is not
/// delivered).
pub fn resume(pid: i32) -> Result<()> {
    nix::sys::ptrace::detach(Pid::from_raw(pid), None)
        .map_err(|e| Error::Other(format!("resuming the program: {e}")))
}
