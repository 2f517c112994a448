//! Readers for `/proc`: memory maps, threads, per-thread state and counters, process memory.
//!
//! Files that are read on every sampling tick (`statm`, a thread's `stat` and `schedstat`) are
//! kept open in [`ProcFile`] and re-read with `pread` at offset 0, which costs one system call
//! and no allocation.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapRange {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub executable: bool,
    pub offset: u64,
    /// Device ("08:01") and inode of the mapped file: with the path, they identify it.
    pub dev: String,
    pub inode: u64,
    /// The path as the target sees it (may end with " (deleted)"), or a pseudo name like `[heap]`.
    pub path: String,
}

impl MapRange {
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }

    /// The file's name without directories.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

/// Parse `/proc/PID/maps`.
pub fn maps(pid: i32) -> io::Result<Vec<MapRange>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(text.lines().filter_map(parse_map_line).collect())
}

fn parse_map_line(line: &str) -> Option<MapRange> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?;
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let dev = it.next()?.to_string();
    let inode = it.next()?.parse().ok()?;
    let path = it.next().unwrap_or("").trim_start().to_string();
    let (start, end) = range.split_once('-')?;
    Some(MapRange {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: perms.starts_with('r'),
        executable: perms.as_bytes().get(2) == Some(&b'x'),
        offset,
        dev,
        inode,
        path,
    })
}

/// A path of the target's, opened through `/proc/PID/root` so that a target in another mount
/// namespace (a container) resolves it in its own file system.
pub fn target_path(pid: i32, path: &str) -> PathBuf {
    let clean = path.strip_suffix(" (deleted)").unwrap_or(path);
    PathBuf::from(format!("/proc/{pid}/root{clean}"))
}

/// The command line of a process, arguments joined by spaces.
pub fn cmdline(pid: i32) -> io::Result<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Ok(args.join(" "))
}

/// The target's executable as it sees it (`/proc/PID/exe`).
pub fn exe(pid: i32) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
}

/// Thread ids of a process.
pub fn threads(pid: i32) -> io::Result<Vec<i32>> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            tids.push(tid);
        }
    }
    tids.sort_unstable();
    Ok(tids)
}

/// The kernel's name of a thread (`comm`, at most 15 bytes).
pub fn thread_name(pid: i32, tid: i32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
    Some(s.trim_end_matches('\n').to_string())
}

/// The id thread `tid` of process `pid` has in the process's own pid namespace: the last
/// field of `NSpid` in its `status` (the same as `tid` outside namespaces). None when the
/// thread is gone.
pub fn thread_nspid(pid: i32, tid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_ascii_whitespace().last()?.parse().ok()
}

/// How many pid namespaces, from the one `/proc` shows down to the process's own, process
/// `pid` has an id in (the fields of `NSpid`): 1 when its ids are the ones `/proc` lists.
pub fn pid_namespace_depth(pid: i32) -> Option<usize> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    Some(line.split_ascii_whitespace().count())
}

/// Who a process runs as, for file access: its file-system user and group ids (the ones the
/// kernel checks on open) and its supplementary groups, from `/proc/PID/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Real, effective, saved and file-system user ids.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
}

impl Credentials {
    pub fn fs_uid(&self) -> u32 {
        self.uids[3]
    }

    pub fn fs_gid(&self) -> u32 {
        self.gids[3]
    }

    /// Whether any of the process's user ids differs from `uid`.
    pub fn other_user_than(&self, uid: u32) -> bool {
        self.uids.iter().any(|&u| u != uid)
    }
}

/// Parse the `Uid:`, `Gid:` and `Groups:` lines of a `status` file.
pub fn parse_credentials(text: &str) -> Option<Credentials> {
    let ids = |key: &str| -> Option<[u32; 4]> {
        let line = text.lines().find_map(|l| l.strip_prefix(key))?;
        let v: Vec<u32> = line
            .split_ascii_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        v.try_into().ok()
    };
    let groups = text
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))?
        .split_ascii_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<Vec<u32>>>()?;
    Some(Credentials {
        uids: ids("Uid:")?,
        gids: ids("Gid:")?,
        groups,
    })
}

pub fn credentials(pid: i32) -> io::Result<Credentials> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_credentials(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status"))
}

/// The pid of the process tracing `pid` (a debugger, strace, another profiler), if any.
pub fn tracer_pid(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("TracerPid:"))?;
    line.trim().parse().ok().filter(|&t| t > 0)
}

/// The fields memspy uses from a `stat` file (`/proc/PID/stat` or `/proc/PID/task/TID/stat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// R running, S sleeping, D disk sleep, Z zombie, T stopped, t tracing stop, ...
    pub state: u8,
    pub ppid: i32,
    /// Minor page faults so far.
    pub minflt: u64,
    pub majflt: u64,
    /// User and system CPU time in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Start time after boot in clock ticks: with the pid, it identifies a process for good.
    pub starttime: u64,
}

impl Stat {
    pub fn is_running(&self) -> bool {
        self.state == b'R'
    }
}

/// Parse the content of a `stat` file. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(buf: &[u8]) -> Option<Stat> {
    let close = buf.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(buf.get(close + 2..)?).ok()?;
    let mut stat = Stat::default();
    let mut seen = 0;
    // Field 3 (state) is index 0 here; no allocation: this runs for every thread on every tick.
    for (i, field) in rest.split_ascii_whitespace().enumerate() {
        let num = || field.parse::<u64>().ok();
        match i {
            0 => stat.state = *field.as_bytes().first()?,
            1 => stat.ppid = num()? as i32,
            7 => stat.minflt = num()?,
            9 => stat.majflt = num()?,
            11 => stat.utime = num()?,
            12 => stat.stime = num()?,
            19 => {
                stat.starttime = num()?;
                seen = i;
                break;
            }
            _ => {}
        }
    }
    (seen == 19).then_some(stat)
}

/// How a process that has exited but not been reaped yet (a zombie) ended, from the
/// `exit_code` field of its `stat` (field 52, as waitpid(2) reports it); None while it runs,
/// once it is reaped, or when the pid is now another process's (`starttime` differs).
pub fn zombie_status(pid: i32, starttime: u64) -> Option<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let buf = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let stat = parse_stat(&buf)?;
    if stat.state != b'Z' || stat.starttime != starttime {
        return None;
    }
    let close = buf.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(buf.get(close + 2..)?).ok()?;
    // Field 52 is the 50th after the command's closing parenthesis.
    let code: i32 = rest.split_ascii_whitespace().nth(49)?.parse().ok()?;
    Some(std::process::ExitStatus::from_raw(code))
}

pub fn stat(pid: i32) -> io::Result<Stat> {
    let buf = std::fs::read(format!("/proc/{pid}/stat"))?;
    parse_stat(&buf).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))
}

pub fn thread_stat(pid: i32, tid: i32) -> io::Result<Stat> {
    let buf = std::fs::read(format!("/proc/{pid}/task/{tid}/stat"))?;
    parse_stat(&buf).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))
}

/// A /proc file kept open and re-read from the start into a fixed buffer.
#[derive(Debug)]
pub struct ProcFile {
    file: File,
    buf: Vec<u8>,
}

impl ProcFile {
    pub fn open(path: impl AsRef<Path>, capacity: usize) -> io::Result<ProcFile> {
        Ok(ProcFile {
            file: File::open(path)?,
            buf: vec![0; capacity],
        })
    }

    /// Re-read the file; returns its content (truncated to the buffer's capacity).
    pub fn read(&mut self) -> io::Result<&[u8]> {
        let n = self.file.read_at(&mut self.buf, 0)?;
        Ok(&self.buf[..n])
    }
}

/// Page size in bytes.
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map(|v| v as u64)
        .unwrap_or(4096)
}

/// Clock ticks per second (for `stat` times).
pub fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|v| v as u64)
        .unwrap_or(100)
}

/// Resident set size in bytes from the content of `/proc/PID/statm` (second field, in pages).
pub fn parse_statm_rss(buf: &[u8], page_size: u64) -> Option<u64> {
    let s = std::str::from_utf8(buf).ok()?;
    let pages: u64 = s.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size)
}

/// Value in bytes of a `Key:   123 kB` line in `status` or `smaps_rollup`.
pub fn parse_kb_field(text: &str, key: &str) -> Option<u64> {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(key) {
            if let Some(rest) = rest.strip_prefix(':') {
                let kb: u64 = rest.split_ascii_whitespace().next()?.parse().ok()?;
                return Some(kb * 1024);
            }
        }
    }
    None
}

/// The RSS split from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssSplit {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

pub fn parse_status_rss(text: &str) -> Option<RssSplit> {
    Some(RssSplit {
        anon: parse_kb_field(text, "RssAnon")?,
        file: parse_kb_field(text, "RssFile")?,
        shmem: parse_kb_field(text, "RssShmem")?,
    })
}

/// Proportional and unique set size from `/proc/PID/smaps_rollup`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollup {
    pub pss: u64,
    pub uss: u64,
}

pub fn parse_smaps_rollup(text: &str) -> Option<Rollup> {
    let pss = parse_kb_field(text, "Pss")?;
    let private_clean = parse_kb_field(text, "Private_Clean").unwrap_or(0);
    let private_dirty = parse_kb_field(text, "Private_Dirty").unwrap_or(0);
    Some(Rollup {
        pss,
        uss: private_clean + private_dirty,
    })
}

/// CPU time a thread has run, in nanoseconds, from the content of its `schedstat`.
pub fn parse_schedstat(buf: &[u8]) -> Option<u64> {
    std::str::from_utf8(buf)
        .ok()?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Pids of the direct children of `pid` (all threads' children, from `task/*/children`).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tids) = threads(pid) {
        for tid in tids {
            let mut s = String::new();
            if let Ok(mut f) = File::open(format!("/proc/{pid}/task/{tid}/children")) {
                if f.read_to_string(&mut s).is_ok() {
                    out.extend(
                        s.split_ascii_whitespace()
                            .filter_map(|p| p.parse::<i32>().ok()),
                    );
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// All descendants of `pid` (children, grandchildren, ...), parents before children.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for c in children(p) {
            if c != pid && !out.contains(&c) && out.len() < 65536 {
                out.push(c);
                queue.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_name() {
        let line = b"1234 (my (weird) name) S 1 1234 1234 0 -1 4194304 150 0 2 0 7 3 0 0 20 0 1 0 98765 1000 100";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.minflt, 150);
        assert_eq!(s.majflt, 2);
        assert_eq!(s.utime, 7);
        assert_eq!(s.stime, 3);
        assert_eq!(s.starttime, 98765);
    }

    #[test]
    fn stat_of_this_process() {
        let pid = std::process::id() as i32;
        let s = thread_stat(pid, nix::unistd::gettid().as_raw()).unwrap();
        assert_eq!(
            s.state, b'R',
            "this thread is running while it reads its own stat"
        );
        assert!(s.starttime > 0);
    }

    #[test]
    fn maps_lines() {
        let m = parse_map_line(
            "7f1c2a000000-7f1c2a021000 r-xp 00001000 08:01 123 /usr/lib/libpython3.11.so.1.0",
        )
        .unwrap();
        assert_eq!(m.start, 0x7f1c2a000000);
        assert_eq!(m.offset, 0x1000);
        assert!(m.executable && m.readable && m.is_file());
        assert_eq!(m.file_name(), "libpython3.11.so.1.0");
        let anon = parse_map_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]").unwrap();
        assert!(!anon.is_file());
    }

    #[test]
    fn credentials_of_a_status_file() {
        let status =
            "Name:\tpython\nUid:\t1000\t1000\t1000\t1001\nGid:\t50\t50\t50\t50\nGroups:\t4 24 \n";
        let c = parse_credentials(status).unwrap();
        assert_eq!((c.fs_uid(), c.fs_gid()), (1001, 50));
        assert_eq!(c.groups, vec![4, 24]);
        assert!(c.other_user_than(1000));
        let none = parse_credentials("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n").unwrap();
        assert!(none.groups.is_empty() && !none.other_user_than(0));
        let me = credentials(std::process::id() as i32).unwrap();
        assert_eq!(me.uids[1], nix::unistd::geteuid().as_raw());
        let tid = nix::unistd::gettid().as_raw();
        assert_eq!(thread_nspid(std::process::id() as i32, tid), Some(tid));
    }

    #[test]
    fn status_and_rollup() {
        let status = "Name:\tpython\nRssAnon:\t  1000 kB\nRssFile:\t 20 kB\nRssShmem:\t 0 kB\n";
        assert_eq!(
            parse_status_rss(status),
            Some(RssSplit {
                anon: 1024000,
                file: 20480,
                shmem: 0
            })
        );
        let rollup = "Rss: 10 kB\nPss: 7 kB\nPrivate_Clean: 1 kB\nPrivate_Dirty: 2 kB\n";
        assert_eq!(
            parse_smaps_rollup(rollup),
            Some(Rollup {
                pss: 7168,
                uss: 3072
            })
        );
    }
}
