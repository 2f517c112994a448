//! Reading a target's source files the way the target itself could, and no other way.
//!
//! A code object's file name is written by the target: it may name `/etc/shadow`, a FIFO,
//! `/dev/zero` or `/dev/watchdog`, or a symlink to any of them. memspy, often root, must not
//! read for the target what its user could not, nor block on or exhaust itself with a file
//! that is not a file. So, for each file:
//! 1. the name is resolved inside the target's own root (`/proc/PID/root`, opened when the
//!    process is adopted, so it stays valid after the process exits) with `openat2` and
//!    `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: absolute symlinks and `..` stay inside the
//!    target's file system view, never escaping to memspy's (a container's `/etc/x ->
//!    /etc/shadow` means the container's shadow, not the host's);
//! 2. it is first opened `O_PATH` (no device is opened, no FIFO waited on), `fstat`ed and
//!    `fstatfs`ed: only a regular file of at most [`MAX_FILE`] bytes, on a file system that is
//!    not a kernel pseudo file system (proc, sysfs, debugfs...), goes on;
//! 3. it is then reopened for reading through `/proc/self/fd/N` (the same inode, no race) with
//!    `O_NONBLOCK`, on a thread whose file-system credentials are the target's (its fsuid,
//!    fsgid and supplementary groups, from `/proc/PID/status`): the kernel's own permission
//!    check decides, as it would for the target. Raising the fsuid from 0 drops the file
//!    capabilities (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH...) from that thread.
//!
//! Symlinks are followed (inside the target's root): virtual environments, Bazel runfiles and
//! Debian's python packages put sources behind symlinks, and the permission check happens on
//! the file they lead to. All this runs on [`SourceReader`]'s own thread, so a file system that
//! hangs (an unresponsive FUSE or NFS server) never stalls sampling.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{open, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::sys::statfs::{self, fstatfs};
use nix::unistd::{Gid, Uid};

use super::procfs::{self, Credentials};

/// Largest source file kept.
pub const MAX_FILE: u64 = 4 << 20;

/// What is needed to read files as one target process: its root, its working directory (for
/// relative file names) and its credentials, taken when the process was adopted.
#[derive(Debug)]
pub struct FileAccess {
    pub pid: i32,
    root: OwnedFd,
    /// The working directory as a path inside the target's root, if it can be told.
    cwd: Option<String>,
    pub credentials: Credentials,
}

impl FileAccess {
    /// Take hold of `pid`'s root directory and credentials.
    pub fn open(pid: i32) -> io::Result<FileAccess> {
        let root = open(
            format!("/proc/{pid}/root").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let credentials = procfs::credentials(pid)?;
        // The working directory as the target names it: /proc/PID/cwd shows it from memspy's
        // root, so a target in a container has its root's path in front.
        let cwd = (|| {
            let root = std::fs::read_link(format!("/proc/{pid}/root")).ok()?;
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
            let inside = cwd.strip_prefix(&root).ok()?;
            Some(format!("/{}", inside.to_str()?))
        })();
        Ok(FileAccess {
            pid,
            root,
            cwd,
            credentials,
        })
    }

    /// The path of `name` inside the target's root (relative names are relative to its cwd).
    fn path_of(&self, name: &str) -> Option<String> {
        if name.starts_with('/') {
            Some(name.to_string())
        } else {
            Some(format!(
                "{}/{name}",
                self.cwd.as_deref()?.trim_end_matches('/')
            ))
        }
    }
}

/// Why a file's text was not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No such file in the target's file system, or its directory cannot be told.
    NotFound,
    /// The target's user may not read it.
    Denied,
    /// A device, FIFO, socket or directory.
    NotRegular,
    /// On a kernel pseudo file system (proc, sysfs, ...).
    PseudoFile,
    /// Too large (more than [`MAX_FILE`] for a source file), or empty.
    Size(u64),
    /// memspy cannot take the target's credentials (it needs root or CAP_SETUID/CAP_SETGID),
    /// or the kernel lacks `openat2`.
    Unsupported(String),
    Io(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Refused::NotFound => write!(f, "not found"),
            Refused::Denied => write!(f, "the target's user may not read it"),
            Refused::NotRegular => write!(f, "not a regular file"),
            Refused::PseudoFile => write!(f, "a kernel pseudo file"),
            Refused::Size(n) => write!(f, "{n} bytes (too large, or empty)"),
            Refused::Unsupported(why) => write!(f, "{why}"),
            Refused::Io(e) => write!(f, "{e}"),
        }
    }
}

fn refused(e: Errno) -> Refused {
    match e {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV => Refused::NotFound,
        Errno::EACCES | Errno::EPERM => Refused::Denied,
        Errno::ENOSYS => Refused::Unsupported("the kernel has no openat2 (Linux 5.6+)".into()),
        other => Refused::Io(other.desc().to_string()),
    }
}

/// Pseudo file systems whose "files" are kernel interfaces, never source code.
fn is_pseudo(fs: statfs::FsType) -> bool {
    [
        statfs::PROC_SUPER_MAGIC,
        statfs::SYSFS_MAGIC,
        statfs::DEBUGFS_MAGIC,
        statfs::TRACEFS_MAGIC,
        statfs::SECURITYFS_MAGIC,
        statfs::CGROUP_SUPER_MAGIC,
        statfs::CGROUP2_SUPER_MAGIC,
        statfs::BPF_FS_MAGIC,
        statfs::DEVPTS_SUPER_MAGIC,
        statfs::SELINUX_MAGIC,
        statfs::SMACK_MAGIC,
        statfs::NSFS_MAGIC,
        statfs::USBDEVICE_SUPER_MAGIC,
    ]
    .contains(&fs)
}

/// Read `name` as `access`'s process could, on a thread that already holds its credentials.
fn read_as_target(access: &FileAccess, name: &str) -> Result<Vec<u8>, Refused> {
    let path = access.path_of(name).ok_or(Refused::NotFound)?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let handle = openat2(&access.root, path.as_str(), how).map_err(refused)?;
    read_checked(handle, MAX_FILE)
}

/// Read a file of the target's that memspy needs for itself (an ELF file the target maps):
/// only a regular file of at most `max` bytes, never a device or FIFO put at its path.
pub fn read_regular(path: &std::path::Path, max: u64) -> Result<Vec<u8>, Refused> {
    let handle = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(refused)?;
    read_checked(handle, max)
}

/// The content of the file behind an `O_PATH` handle, if it is a regular file of 1 to `max`
/// bytes on a real file system: checked on the handle (nothing opened yet), then reopened for
/// reading through `/proc/self/fd/N` (the same inode, so nothing can be swapped in between),
/// where the kernel checks the calling thread's rights.
fn read_checked(handle: OwnedFd, max: u64) -> Result<Vec<u8>, Refused> {
    let st = fstat(&handle).map_err(refused)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(Refused::NotRegular);
    }
    if is_pseudo(fstatfs(&handle).map_err(refused)?.filesystem_type()) {
        return Err(Refused::PseudoFile);
    }
    let size = st.st_size.max(0) as u64;
    if size == 0 || size > max {
        return Err(Refused::Size(size));
    }
    let fd = open(
        format!("/proc/self/fd/{}", handle.as_raw_fd()).as_str(),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(refused)?;
    let mut data = Vec::with_capacity(size as usize);
    File::from(fd)
        .take(size)
        .read_to_end(&mut data)
        .map_err(|e| Refused::Io(e.to_string()))?;
    Ok(data)
}

/// The file-system credentials the calling thread holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ThreadCredentials {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<u32>,
}

impl ThreadCredentials {
    fn of(c: &Credentials) -> ThreadCredentials {
        let mut groups = c.groups.clone();
        groups.sort_unstable();
        ThreadCredentials {
            fsuid: c.fs_uid(),
            fsgid: c.fs_gid(),
            groups,
        }
    }

    /// This thread's own, before any change.
    fn current() -> ThreadCredentials {
        // An invalid id changes nothing and returns the current one.
        let fsuid = nix::unistd::setfsuid(Uid::from_raw(u32::MAX)).as_raw();
        let fsgid = nix::unistd::setfsgid(Gid::from_raw(u32::MAX)).as_raw();
        let mut groups: Vec<u32> = nix::unistd::getgroups()
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        groups.sort_unstable();
        ThreadCredentials {
            fsuid,
            fsgid,
            groups,
        }
    }

    /// Take these credentials on the calling thread only, and check that they took.
    fn take(&self) -> Result<(), Refused> {
        let cannot = || {
            Refused::Unsupported(
                "memspy cannot take the target's user rights to read its files (it needs root, \
                 or CAP_SETUID and CAP_SETGID)"
                    .into(),
            )
        };
        // Groups and group first, while this thread may still hold the rights to change them.
        // SAFETY: the raw setgroups(2) system call reads `groups.len()` gid_t values from a
        // pointer to a live Vec<u32> (gid_t is u32 on Linux) and changes the credentials of
        // the calling thread only. glibc's setgroups() would instead change every thread of
        // memspy (it broadcasts set*id calls), which is what this deliberately avoids.
        let r = unsafe {
            libc::syscall(
                libc::SYS_setgroups,
                self.groups.len() as libc::c_long,
                self.groups.as_ptr(),
            )
        };
        if r != 0 {
            return Err(cannot());
        }
        nix::unistd::setfsgid(Gid::from_raw(self.fsgid));
        nix::unistd::setfsuid(Uid::from_raw(self.fsuid));
        if ThreadCredentials::current() != *self {
            return Err(cannot());
        }
        Ok(())
    }
}

/// A request to [`SourceReader`]: read file `name` for process `access`.
struct Request {
    access: Arc<FileAccess>,
    name: String,
}

/// The outcome for one file name.
pub struct SourceText {
    pub name: String,
    pub pid: i32,
    pub text: Result<String, Refused>,
}

/// Reads source files on a thread of its own, each as the process that named it.
pub struct SourceReader {
    requests: Option<Sender<Request>>,
    results: Receiver<SourceText>,
    /// Requests sent and not yet answered.
    pending: usize,
}

impl SourceReader {
    /// Start the reading thread.
    pub fn start() -> io::Result<SourceReader> {
        let (requests, rx) = channel::<Request>();
        let (tx, results) = channel();
        std::thread::Builder::new()
            .name("memspy-sources".into())
            .spawn(move || {
                let own = ThreadCredentials::current();
                let mut holding = own.clone();
                for Request { access, name } in rx {
                    let wanted = ThreadCredentials::of(&access.credentials);
                    let ready = if holding == wanted {
                        Ok(())
                    } else {
                        // Back to memspy's own rights first (from there any user can be taken).
                        let taken = own.take().and_then(|()| wanted.take());
                        holding = ThreadCredentials::current();
                        taken
                    };
                    let text = ready
                        .and_then(|()| read_as_target(&access, &name))
                        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
                    let pid = access.pid;
                    if tx.send(SourceText { name, pid, text }).is_err() {
                        return;
                    }
                }
            })?;
        Ok(SourceReader {
            requests: Some(requests),
            results,
            pending: 0,
        })
    }

    /// Ask for `name` as `access`'s process sees it.
    pub fn request(&mut self, access: &Arc<FileAccess>, name: &str) {
        if let Some(tx) = &self.requests {
            if tx
                .send(Request {
                    access: access.clone(),
                    name: name.to_string(),
                })
                .is_ok()
            {
                self.pending += 1;
            }
        }
    }

    /// Answers that arrived so far.
    pub fn ready(&mut self) -> Vec<SourceText> {
        let got: Vec<SourceText> = self.results.try_iter().collect();
        self.pending -= got.len().min(self.pending);
        got
    }

    /// Wait up to `limit` for the remaining answers (a hung file system must not keep memspy
    /// from finishing); then stop the thread.
    pub fn finish(mut self, limit: Duration) -> Vec<SourceText> {
        self.requests = None;
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while self.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.results.recv_timeout(left) {
                Ok(r) => {
                    self.pending -= 1;
                    got.push(r);
                }
                Err(_) => break,
            }
        }
        got
    }
}

/// Per process and file name: whether it was asked for already (each process asks once).
#[derive(Default)]
pub struct Asked {
    seen: BTreeMap<(i32, String), ()>,
}

impl Asked {
    /// True the first time `pid` asks for `name`.
    pub fn first(&mut self, pid: i32, name: &str) -> bool {
        self.seen.insert((pid, name.to_string()), ()).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_one(access: FileAccess, name: &str) -> Result<String, Refused> {
        let mut r = SourceReader::start().unwrap();
        r.request(&Arc::new(access), name);
        r.finish(Duration::from_secs(10)).pop().unwrap().text
    }

    #[test]
    fn reads_regular_files_and_refuses_the_rest() {
        let pid = std::process::id() as i32;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.py");
        std::fs::write(&file, "x = 1\n").unwrap();
        let name = file.to_str().unwrap();
        assert_eq!(
            read_one(FileAccess::open(pid).unwrap(), name),
            Ok("x = 1\n".into())
        );
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::S_IRWXU).unwrap();
        for (name, want) in [
            (fifo.to_str().unwrap(), Refused::NotRegular),
            ("/dev/zero", Refused::NotRegular),
            ("/proc/self/status", Refused::Size(0)),
            ("/nonexistent/x.py", Refused::NotFound),
        ] {
            let got = read_one(FileAccess::open(pid).unwrap(), name);
            // /proc files are refused one way or another (size 0 or pseudo file system).
            if name.starts_with("/proc") {
                assert!(got.is_err(), "{name}: {got:?}");
            } else {
                assert_eq!(got, Err(want), "{name}");
            }
        }
        let big = dir.path().join("big.py");
        std::fs::write(&big, vec![b'#'; MAX_FILE as usize + 1]).unwrap();
        assert_eq!(
            read_one(FileAccess::open(pid).unwrap(), big.to_str().unwrap()),
            Err(Refused::Size(MAX_FILE + 1))
        );
    }

    #[test]
    fn names_resolve_inside_the_targets_root() {
        // A target whose root is `dir` (as in a container): its absolute symlink to /etc/hostname
        // and its ../../ climbs mean the files under `dir`, never memspy's own.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("app/link.py")).unwrap();
        std::fs::write(dir.path().join("app/own.py"), "own = 1\n").unwrap();
        let pid = std::process::id() as i32;
        let contained = |cwd: &str| FileAccess {
            pid,
            root: open(
                dir.path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .unwrap(),
            cwd: Some(cwd.to_string()),
            credentials: procfs::credentials(pid).unwrap(),
        };
        assert_eq!(
            read_one(contained("/"), "/app/link.py"),
            Err(Refused::NotFound)
        );
        assert_eq!(
            read_one(contained("/"), "/../../../etc/hostname"),
            Err(Refused::NotFound)
        );
        assert_eq!(
            read_one(contained("/app"), "own.py"),
            Ok("own = 1\n".into())
        );
        assert_eq!(
            read_one(contained("/app"), "../../app/own.py"),
            Ok("own = 1\n".into())
        );
    }

    #[test]
    fn reads_with_the_targets_rights() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let pid = std::process::id() as i32;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.py");
        std::fs::write(&secret, "s = 1\n").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let mut access = FileAccess::open(pid).unwrap();
        // Pretend the process runs as nobody (65534).
        access.credentials = Credentials {
            uids: [65534; 4],
            gids: [65534; 4],
            groups: vec![],
        };
        assert_eq!(
            read_one(access, secret.to_str().unwrap()),
            Err(Refused::Denied)
        );
        // The reading thread's rights never leak to the rest of the process.
        assert_eq!(nix::unistd::setfsuid(Uid::from_raw(u32::MAX)).as_raw(), 0);
        assert!(std::fs::read(&secret).is_ok());
    }
}
