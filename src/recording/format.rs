//! The `.msp` file format, version 1.
//!
//! ```text
//! file    = header record*
//! header  = "MEMSPY\r\n" (8 bytes) version:u32le flags:u32le
//! record  = length:u32le body crc32:u32le      length = len(body), crc32 (IEEE) of body
//! body    = type:u8 payload
//! ```
//!
//! Integers inside payloads are LEB128 varints (`uv`); signed ones are zigzag-encoded first
//! (`sv`); strings are `uv` length + UTF-8 bytes. Times are microseconds since the recording
//! started (`Meta.start_unix_ns` anchors them to the wall clock).
//!
//! | type | record | payload |
//! |---|---|---|
//! | 1 | Meta | JSON object ([`Meta`]) |
//! | 2 | String | id:uv text |
//! | 3 | Function | id:uv name:uv qualname:uv file:uv (string ids) firstlineno:sv |
//! | 4 | Frame | id:uv function:uv line:sv (-1 = no line) |
//! | 5 | Stack | id:uv parent:uv (stack id + 1, 0 = none) frame:uv — stacks form a tree from the outermost frame; a stack id names the path to its innermost frame |
//! | 6 | ProcessStart | id:uv pid:uv starttime:uv parent:uv (process id + 1, 0 = none) time:uv command:uv exe:uv python:uv [cwd:uv] (string ids; cwd, the working directory when found, is a string id + 1, 0 = unknown, and absent in older files) |
//! | 7 | ProcessEnd | id:uv time:uv reason:u8 ([`EndReason`]) exit:sv (the exit status, or with reason 4 the signal that killed it; -1 unknown) |
//! | 8 | Thread | process:uv slot:uv tid:uv (kernel id; 0 = the id in the target's memory named no thread of the target) name:uv (string id) [claimed:uv (that id + 1, 0 = none; absent in older files)] |
//! | 9 | Events | base_time:uv count:uv event* |
//! | 10 | Stats | ticks:uv missed:uv late_max:uv late_total:uv busy:uv pauses:uv paused_total:uv paused_max:uv (µs; busy: the sampler's time outside its waits; pauses: how often blocking mode held threads stopped, and for how long; the last four absent in older files) |
//! | 11 | End | samples:uv |
//! | 12 | Source | file:uv (string id) text (a source file's text, as the target's user could read it) |
//! | 14 | ThreadId | process:uv slot:uv tid:uv — a thread defined with tid 0 (its id unproven) was proven to be this kernel thread |
//! | 13 | MemoryEvents | mode:str period:uv samples:uv faults:uv frees:uv lost:uv failed:uv max_period:uv delay_p50:uv delay_p99:uv (µs) — what the memory events were; written with the stats, the last one counts |
//! | 15 | ThreadName | process:uv slot:uv name:uv (string id) — the thread's Python name (`threading.Thread.name`), first found or changed; the last one counts |
//! | 16 | Task | process:uv id:uv (the process's tasks are numbered 0, 1, ...) kind:u8 ([`TaskKind`]) thread:uv (slot + 1, 0 = not known) address:uv name:uv (string id) — a greenlet or asyncio task |
//!
//! Events (in time order; each time is a delta from the previous event of the batch, the first
//! from `base_time`):
//!
//! ```text
//! event   = head:uv (process << 2 | type) dt:uv body
//! sample  (type 0) = rss:sv (change in KiB since the process's previous sample)
//!           native:uv (minor page faults of threads that are not Python's, since the previous
//!           sample) nthreads:uv thread*
//! thread  = head:uv (slot << 3 | same << 2 | flags)  [stack:uv (stack id + 1, 0 = no Python
//!           frames), absent when `same`: the slot's stack of its previous sample]
//!           cpu:uv (µs of CPU since the slot's previous sample) minflt:uv
//! failure (type 1) = kind:u8 ([`FailureKind`])
//! memory  (type 2) = kind:u8 ([`MemoryKind`]) KiB:uv
//! extended (type 3) = kind:u8 body:
//!   kind 0, memory event: slot:uv stack:uv (stack id + 1, 0 = no Python frames)
//!           rss:sv (change in KiB since the process's previous reading, sample or event)
//!           faults:uv frees:uv (kernel records since the thread's previous memory event:
//!           page faults, each standing for `period` faults, and returns from munmap/madvise/brk)
//!           delay:uv (µs from the last kernel record to the stack read)
//!           flags:uv (bit 0: the stack was read at the event; else it is the thread's stack at
//!           its previous tick, the read having raced)
//!           faults_before:uv frees_before:uv (of those, how many are estimated to have happened
//!           before the thread left the stack memspy had read last, tick or event)
//!   kind 1, tasks: count:uv (task:uv state:uv)* — tasks whose state changed, written right
//!           after a sample of the process and holding from that sample on: state 0 = ended,
//!           1 = running (its thread's stack is its own), 2 = waiting with no Python frames,
//!           3 + s = waiting at stack s
//!   kind 2, finalizing: (no body) — the process's interpreter had begun to shut down
//!           (`_PyRuntime._finalizing` set) when memspy read it at this time; what it frees
//!           from then on is the interpreter's, not the program's
//!   kind 3, trigger: reason:u8 (0 = --trigger-rss, 1 = --trigger-growth) bytes:uv (the RSS,
//!           or the growth over the trigger's span, when crossed) limit:uv (bytes) — the
//!           process crossed a `record --trigger-*` limit at this time
//! ```
//!
//! A repeated stack thus costs a few bytes: a sample of a one-thread process is typically 8 to
//! 10 bytes.
//!
//! Everything a record refers to is defined by an earlier record, so any prefix of a file that
//! ends at a record boundary is a complete recording of what happened until then. The writer
//! flushes at least once a second; a reader stops at a record cut short (crash, full disk) and
//! reports a record whose checksum or content is wrong as damage, keeping all before it.
//!
//! What a valid file also guarantees (a reader treats a record that breaks one as damage, like a
//! bad checksum; a description that breaks one makes the file unreadable):
//! - the description comes once, first, with a rate in (0, [`MAX_RATE_HZ`]] Hz and a memory
//!   measure of `rss`, `pss` or `uss`;
//! - ids are defined in order (0, 1, 2, ...) and refer only to what is already defined; a
//!   process's parent is an earlier process; line numbers, pids, tids and exit statuses fit in
//!   an `i32` (pids are positive; a tid is 0 when the thread's was not known yet);
//! - a stack is at most [`MAX_STACK_DEPTH`] frames deep, and the distinct stacks that samples
//!   use (in each process) have at most [`MAX_SAMPLED_FRAMES`] frames in all, whose names take
//!   at most [`MAX_SAMPLED_TEXT`] bytes;
//! - event times never go backwards (a batch starts at or after the last event before it) and
//!   stay below [`MAX_TIME_US`]; a process ends once, not before it started;
//! - a sample holds at most [`MAX_SAMPLE_THREADS`] threads (one slot can appear twice: the
//!   recorder gives a thread just started its creator's slot while CPython still shows it
//!   with its creator's thread id); memory amounts are at most [`MAX_MEMORY_KIB`] KiB.

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"MEMSPY\r\n";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 16;
/// No record is larger; a length above this is damage, not a reason to allocate.
pub const MAX_RECORD: usize = 64 << 20;
/// The highest sampling rate a recording can claim (`memspy record` takes up to 100 kHz).
pub const MAX_RATE_HZ: f64 = 1e6;
/// The deepest stack a recording holds (the sampler keeps at most 8192 frames of a thread).
pub const MAX_STACK_DEPTH: u32 = 16384;
/// The frames of the stacks that samples use, added up over each distinct (process, stack):
/// what reports walk and print per stack. A real recording has far fewer (16 workers with
/// 20,000 distinct stacks 100 frames deep each are 32 million); a forged one with thousands of
/// stacks thousands of frames deep would make every report take minutes and gigabytes.
pub const MAX_SAMPLED_FRAMES: u64 = 1 << 25;
/// The names and file names of those frames, added up, in bytes: what the folded stacks of a
/// flamegraph hold. A forged recording can give thousands of frames a 60,000-character name.
pub const MAX_SAMPLED_TEXT: u64 = 1 << 30;
/// The most threads one sample holds (the sampler reads at most 4096 per process).
pub const MAX_SAMPLE_THREADS: u32 = 8192;
/// The most task changes one tasks event holds (a process has at most 100,000 greenlets).
pub const MAX_TASK_CHANGES: u64 = 1 << 20;
/// The largest memory amount (RSS, PSS, ...) a sample or reading holds, KiB: 4 PiB, far above
/// any machine, small enough that bytes fit in a `u64` and count exactly in an `f64`.
pub const MAX_MEMORY_KIB: u64 = 1 << 42;
/// Event and process times stay below this (µs, about 285 years): exact in an `f64`.
pub const MAX_TIME_US: u64 = 1 << 53;

pub const T_META: u8 = 1;
pub const T_STRING: u8 = 2;
pub const T_FUNCTION: u8 = 3;
pub const T_FRAME: u8 = 4;
pub const T_STACK: u8 = 5;
pub const T_PROCESS_START: u8 = 6;
pub const T_PROCESS_END: u8 = 7;
pub const T_THREAD: u8 = 8;
pub const T_EVENTS: u8 = 9;
pub const T_STATS: u8 = 10;
pub const T_END: u8 = 11;
pub const T_SOURCE: u8 = 12;
pub const T_MEMORY_EVENTS: u8 = 13;
pub const T_THREAD_ID: u8 = 14;
pub const T_THREAD_NAME: u8 = 15;
pub const T_TASK: u8 = 16;

pub const E_SAMPLE: u8 = 0;
pub const E_FAILURE: u8 = 1;
pub const E_MEMORY: u8 = 2;
pub const E_EXTENDED: u8 = 3;
/// Kinds of extended events.
pub const X_MEMORY_EVENT: u8 = 0;
pub const X_TASKS: u8 = 1;
pub const X_FINALIZING: u8 = 2;
pub const X_TRIGGER: u8 = 3;
/// Task states in a tasks event.
pub const TASK_ENDED: u64 = 0;
pub const TASK_RUNNING: u64 = 1;
pub const TASK_WAITING_NO_FRAMES: u64 = 2;
pub const TASK_WAITING_AT: u64 = 3;

/// What kind of unit of work a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    Greenlet = 1,
    Asyncio = 2,
}

impl TaskKind {
    pub fn from_u8(v: u8) -> Option<TaskKind> {
        match v {
            1 => Some(TaskKind::Greenlet),
            2 => Some(TaskKind::Asyncio),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Greenlet => "greenlet",
            TaskKind::Asyncio => "asyncio task",
        }
    }
}
/// In a memory event's flags: its stack was read at the event.
pub const FRESH_STACK: u64 = 1;

/// Thread flags in a sample (2 bits).
pub const FLAG_GIL: u8 = 1;
pub const FLAG_ACTIVE: u8 = 2;
/// In a thread's head: its stack is the one of its previous sample.
pub const SAME_STACK: u64 = 4;

/// What the recording was asked to do, written once at the start.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub memspy_version: String,
    /// Wall-clock time of time 0, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// The memspy command line.
    pub command: Vec<String>,
    pub rate_hz: f64,
    pub blocking: bool,
    /// "rss", "pss" or "uss": the memory each sample's attribution uses.
    pub memory: String,
    pub subprocesses: bool,
    /// Interval between two PSS/USS readings, when recorded.
    #[serde(default)]
    pub rollup_interval_ms: Option<u64>,
    /// Memory events were asked for (what the kernel allowed is in the MemoryEvents record).
    #[serde(default)]
    pub memory_events: bool,
    /// Page faults per fault sample, at least.
    #[serde(default)]
    pub fault_period: u64,
    /// Greenlets and asyncio tasks were read (not `record --no-tasks`).
    #[serde(default)]
    pub tasks: bool,
    /// Which file of a rotated recording this is (`record -o run-%n.msp --max-size`): 1, 2, ...
    /// A later file starts with every definition of the earlier ones, so it stands alone; its
    /// times go on from the first file's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
}

/// Why a process's series ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Exited = 0,
    /// It replaced its program (exec); a new process entry continues the pid.
    Exec = 1,
    /// The recording stopped while it was still running.
    RecordingEnded = 2,
    /// It stopped being readable (permissions changed, not Python any more).
    Lost = 3,
    /// A signal ended it; the end record's exit field holds the signal's number.
    Killed = 4,
}

impl EndReason {
    /// How `info` says it.
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::Exited => "exited",
            EndReason::Exec => "exec",
            EndReason::RecordingEnded => "still running",
            EndReason::Lost => "lost",
            EndReason::Killed => "killed",
        }
    }

    /// How `info` and `record` say how a process ended, with its exit field: "exited, status
    /// 0", "killed by SIGKILL", "recording ended" (it was still running), ...
    pub fn describe_with(self, exit: Option<i32>) -> String {
        match (self, exit) {
            (EndReason::Killed, Some(signal)) => format!("killed by {}", signal_name(signal)),
            (EndReason::Exited, Some(code)) => format!("exited, status {code}"),
            (EndReason::RecordingEnded, _) => "recording ended".into(),
            (EndReason::Exec, _) => "replaced its program (exec)".into(),
            (reason, _) => reason.describe().into(),
        }
    }

    pub fn from_u8(v: u8) -> Option<EndReason> {
        Some(match v {
            0 => EndReason::Exited,
            1 => EndReason::Exec,
            2 => EndReason::RecordingEnded,
            3 => EndReason::Lost,
            4 => EndReason::Killed,
            _ => return None,
        })
    }
}

/// A signal's name ("SIGKILL"), or its number ("signal 70") when Linux has no such signal.
pub fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {signal}"),
    }
}

/// Why a sample failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The target changed while being read (non-blocking mode): this sample is lost.
    Raced = 0,
    /// The process exited during the sample.
    Exited = 1,
    /// Reading is impossible (permissions, an unsupported state).
    Fatal = 2,
}

impl FailureKind {
    pub fn from_u8(v: u8) -> Option<FailureKind> {
        Some(match v {
            0 => FailureKind::Raced,
            1 => FailureKind::Exited,
            2 => FailureKind::Fatal,
            _ => return None,
        })
    }
}

/// Memory readings taken less often than every sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKind {
    Pss = 0,
    Uss = 1,
    RssAnon = 2,
    RssFile = 3,
    RssShmem = 4,
}

impl MemoryKind {
    pub fn from_u8(v: u8) -> Option<MemoryKind> {
        Some(match v {
            0 => MemoryKind::Pss,
            1 => MemoryKind::Uss,
            2 => MemoryKind::RssAnon,
            3 => MemoryKind::RssFile,
            4 => MemoryKind::RssShmem,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            MemoryKind::Pss => "pss",
            MemoryKind::Uss => "uss",
            MemoryKind::RssAnon => "rss_anon",
            MemoryKind::RssFile => "rss_file",
            MemoryKind::RssShmem => "rss_shmem",
        }
    }
}

/// Append an unsigned LEB128 varint.
pub fn put_uv(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Append a zigzag-encoded signed varint.
pub fn put_sv(out: &mut Vec<u8>, v: i64) {
    put_uv(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uv(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads payload fields; every method fails (returns None) at the end of the input instead of
/// panicking.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    pub fn uv(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub fn uv32(&mut self) -> Option<u32> {
        u32::try_from(self.uv()?).ok()
    }

    pub fn sv(&mut self) -> Option<i64> {
        let v = self.uv()?;
        Some(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    pub fn str(&mut self) -> Option<&'a str> {
        let n = usize::try_from(self.uv()?).ok()?;
        std::str::from_utf8(self.bytes(n)?).ok()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let r = &self.buf[self.pos.min(self.buf.len())..];
        self.pos = self.buf.len();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        let values = [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX];
        let signed = [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX];
        let mut buf = Vec::new();
        for v in values {
            put_uv(&mut buf, v);
        }
        for v in signed {
            put_sv(&mut buf, v);
        }
        put_str(&mut buf, "héllo");
        let mut c = Cursor::new(&buf);
        for v in values {
            assert_eq!(c.uv(), Some(v));
        }
        for v in signed {
            assert_eq!(c.sv(), Some(v));
        }
        assert_eq!(c.str(), Some("héllo"));
        assert!(c.is_empty());
        assert_eq!(c.uv(), None);
        // A varint that never ends.
        assert_eq!(Cursor::new(&[0xff; 20]).uv(), None);
    }
}
