//! memspy's errors. Each one prints as a single line that says what went wrong and what to do;
//! `main` turns any of them into exit status 2.

use std::io;

use crate::target::{ReadError, ReadFault};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no process with pid {0}: check the pid (is the program still running?)")]
    NoSuchProcess(i32),
    #[error(
        "permission denied for process {0}: run memspy as root or with CAP_SYS_PTRACE \
         (`sudo setcap cap_sys_ptrace+ep memspy`; containers need --cap-add SYS_PTRACE; \
         see also sysctl kernel.yama.ptrace_scope)"
    )]
    PermissionDenied(i32),
    #[error(
        "process {pid} is being traced by process {tracer} (a debugger, strace or another \
         profiler): memspy cannot pause it while that tracer holds it; detach it, or use \
         --nonblocking"
    )]
    Traced { pid: i32, tracer: i32 },
    #[error(
        "process {pid} ({exe}) is not a CPython program: no python executable or libpython \
         with the _PyRuntime symbol is loaded in it"
    )]
    NotPython { pid: i32, exe: String },
    #[error("process {0} exited while memspy was reading it")]
    Exited(i32),
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "reading process {pid}: {source} (the interpreter state looks inconsistent; try again)"
    )]
    Read { pid: i32, source: ReadError },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Recording(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An error from reading `/proc/PID/...`.
    pub fn proc_io(pid: i32, e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::NotFound => Error::NoSuchProcess(pid),
            io::ErrorKind::PermissionDenied => Error::PermissionDenied(pid),
            _ if e.raw_os_error() == Some(libc::ESRCH) => Error::Exited(pid),
            _ => Error::Io {
                context: format!("reading /proc/{pid}"),
                source: e,
            },
        }
    }

    /// An error from a remote memory read.
    pub fn read(pid: i32, e: ReadError) -> Error {
        match e.fault {
            ReadFault::Gone => Error::Exited(pid),
            ReadFault::Denied => Error::PermissionDenied(pid),
            _ => Error::Read { pid, source: e },
        }
    }

    /// An error from the remoteprocess crate (ptrace lock).
    pub fn from_remoteprocess(pid: i32, e: remoteprocess::Error) -> Error {
        match e {
            remoteprocess::Error::NixError(nix::errno::Errno::EPERM) => {
                match crate::target::procfs::tracer_pid(pid) {
                    Some(tracer) => Error::Traced { pid, tracer },
                    None => Error::PermissionDenied(pid),
                }
            }
            remoteprocess::Error::NixError(nix::errno::Errno::ESRCH) => Error::Exited(pid),
            remoteprocess::Error::IOError(io) => Error::proc_io(pid, io),
            other => Error::Other(format!("stopping process {pid}: {other}")),
        }
    }

    /// Context for a file error.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
