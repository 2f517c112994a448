//! Reading a recording back, tolerantly: a file cut short (crash, kill -9, full disk) yields
//! everything up to its last whole record; a damaged record (bad checksum, impossible content)
//! ends the reading there and is reported, keeping everything before it. Nothing in a file
//! can make the reader panic or allocate without bound.

use std::path::Path;

use super::format::*;
use crate::error::{Error, Result};

/// A function as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: u32,
    pub qualname: u32,
    pub file: u32,
    pub firstlineno: i32,
}

/// A (function, line) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameDef {
    pub function: u32,
    pub line: i32,
}

/// A node of the stack tree: a frame called from `parent` (None = outermost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackNode {
    pub parent: Option<u32>,
    pub frame: u32,
    pub depth: u32,
}

/// A process and its series.
#[derive(Clone, Debug)]
pub struct Process {
    pub pid: i32,
    pub starttime: u64,
    pub parent: Option<u32>,
    pub start_us: u64,
    pub command: u32,
    pub exe: u32,
    pub python: u32,
    pub end_us: Option<u64>,
    pub end_reason: Option<EndReason>,
    pub exit: Option<i32>,
}

/// A thread of a process.
#[derive(Clone, Debug)]
pub struct Thread {
    pub process: u32,
    pub slot: u32,
    pub tid: i32,
    pub name: u32,
}

/// One sample of one process.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub process: u32,
    pub time_us: u64,
    pub rss_bytes: u64,
    /// Minor page faults since the previous sample by threads that are not Python threads.
    pub native_minflt: u64,
    /// Its threads: `Recording::thread_samples[first_thread..first_thread + threads]`.
    pub first_thread: u32,
    pub threads: u32,
}

/// A thread's part of a sample.
#[derive(Clone, Copy, Debug)]
pub struct ThreadSample {
    /// Index into `Recording::threads`.
    pub thread: u32,
    pub stack: Option<u32>,
    pub flags: u8,
    /// CPU time since the thread's previous sample, µs.
    pub cpu_us: u64,
    /// Minor page faults since the thread's previous sample.
    pub minflt: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Failure {
    pub process: u32,
    pub time_us: u64,
    pub kind: FailureKind,
}

#[derive(Clone, Copy, Debug)]
pub struct MemoryReading {
    pub process: u32,
    pub time_us: u64,
    pub kind: MemoryKind,
    pub bytes: u64,
}

/// Schedule statistics (µs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub ticks: u64,
    pub missed: u64,
    pub late_max_us: u64,
    pub late_total_us: u64,
}

/// Where reading stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside a record (normal after a crash or kill -9).
    Truncated { offset: u64 },
    /// A record is damaged: reading stopped there.
    Corrupt { offset: u64, what: String },
}

/// A whole recording in memory.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    pub meta: Meta,
    pub strings: Vec<String>,
    pub functions: Vec<Function>,
    pub frames: Vec<FrameDef>,
    pub stacks: Vec<StackNode>,
    pub processes: Vec<Process>,
    pub threads: Vec<Thread>,
    pub samples: Vec<Sample>,
    pub thread_samples: Vec<ThreadSample>,
    pub failures: Vec<Failure>,
    pub memory: Vec<MemoryReading>,
    pub stats: Stats,
    /// Source files by file-name string id.
    pub sources: std::collections::HashMap<u32, String>,
    /// The writer closed the file properly.
    pub complete: bool,
    pub damage: Option<Damage>,
    pub file_bytes: u64,
}

impl Recording {
    /// Read a recording file. Only a regular file is read (see [`read_regular_file`]).
    pub fn open(path: &Path) -> Result<Recording> {
        let data = read_regular_file(path)?;
        Recording::parse(&data)
            .map_err(|what| Error::Recording(format!("{}: {what}", path.display())))
    }

    /// Parse the bytes of a recording. Fails only when the start of the file is not a memspy
    /// recording at all; damage later on is reported in `damage`.
    pub fn parse(data: &[u8]) -> std::result::Result<Recording, String> {
        if data.len() < HEADER_LEN || &data[..8] != MAGIC {
            return Err("not a memspy recording (bad magic bytes)".into());
        }
        let version = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(format!(
                "recording format version {version} is not supported by this memspy (it reads version {VERSION})"
            ));
        }
        let mut rec = Recording {
            file_bytes: data.len() as u64,
            ..Recording::default()
        };
        let mut state = ReadState::default();
        let mut pos = HEADER_LEN;
        let mut saw_meta = false;
        while pos < data.len() {
            let offset = pos as u64;
            let Some(len_bytes) = data.get(pos..pos + 4) else {
                rec.damage = Some(Damage::Truncated { offset });
                break;
            };
            let len = u32::from_le_bytes(len_bytes.try_into().unwrap_or_default()) as usize;
            if len == 0 || len > MAX_RECORD {
                rec.damage = Some(Damage::Corrupt {
                    offset,
                    what: format!("impossible record length {len}"),
                });
                break;
            }
            let Some(body) = data.get(pos + 4..pos + 4 + len) else {
                rec.damage = Some(Damage::Truncated { offset });
                break;
            };
            let Some(crc) = data.get(pos + 4 + len..pos + 8 + len) else {
                rec.damage = Some(Damage::Truncated { offset });
                break;
            };
            if u32::from_le_bytes(crc.try_into().unwrap_or_default()) != crc32fast::hash(body) {
                rec.damage = Some(Damage::Corrupt {
                    offset,
                    what: "checksum mismatch".into(),
                });
                break;
            }
            if !saw_meta && body[0] != T_META {
                return Err("the first record is not the recording's description".into());
            }
            saw_meta = true;
            if let Err(what) = rec.apply(&mut state, body) {
                rec.damage = Some(Damage::Corrupt { offset, what });
                break;
            }
            pos += 8 + len;
        }
        if !saw_meta {
            return Err("the recording holds no data (it was cut before its first record)".into());
        }
        Ok(rec)
    }

    /// Decode one record body into the recording.
    fn apply(&mut self, state: &mut ReadState, body: &[u8]) -> std::result::Result<(), String> {
        let mut c = Cursor::new(&body[1..]);
        let bad = |what: &str| format!("malformed {what} record");
        match body[0] {
            T_META => {
                self.meta = serde_json::from_slice(c.rest())
                    .map_err(|e| format!("bad description: {e}"))?;
            }
            T_STRING => {
                let id = c.uv32().ok_or_else(|| bad("string"))?;
                let s = c.str().ok_or_else(|| bad("string"))?;
                expect_next(id, self.strings.len(), "string")?;
                self.strings.push(s.to_string());
            }
            T_FUNCTION => {
                let f = (|| {
                    let id = c.uv32()?;
                    let (name, qualname, file) = (c.uv32()?, c.uv32()?, c.uv32()?);
                    let firstlineno = c.sv()? as i32;
                    Some((
                        id,
                        Function {
                            name,
                            qualname,
                            file,
                            firstlineno,
                        },
                    ))
                })()
                .ok_or_else(|| bad("function"))?;
                expect_next(f.0, self.functions.len(), "function")?;
                for s in [f.1.name, f.1.qualname, f.1.file] {
                    known(s, self.strings.len(), "string")?;
                }
                self.functions.push(f.1);
            }
            T_FRAME => {
                let (id, function, line) = (|| Some((c.uv32()?, c.uv32()?, c.sv()? as i32)))()
                    .ok_or_else(|| bad("frame"))?;
                expect_next(id, self.frames.len(), "frame")?;
                known(function, self.functions.len(), "function")?;
                self.frames.push(FrameDef { function, line });
            }
            T_STACK => {
                let (id, parent, frame) =
                    (|| Some((c.uv32()?, c.uv32()?, c.uv32()?)))().ok_or_else(|| bad("stack"))?;
                expect_next(id, self.stacks.len(), "stack")?;
                known(frame, self.frames.len(), "frame")?;
                let parent = match parent {
                    0 => None,
                    p => {
                        known(p - 1, self.stacks.len(), "stack")?;
                        Some(p - 1)
                    }
                };
                let depth = parent.map_or(1, |p| self.stacks[p as usize].depth + 1);
                self.stacks.push(StackNode {
                    parent,
                    frame,
                    depth,
                });
            }
            T_PROCESS_START => {
                let p = (|| {
                    let id = c.uv32()?;
                    let pid = c.uv()? as i32;
                    let starttime = c.uv()?;
                    let parent = c.uv32()?;
                    let start_us = c.uv()?;
                    let (command, exe, python) = (c.uv32()?, c.uv32()?, c.uv32()?);
                    Some((id, pid, starttime, parent, start_us, command, exe, python))
                })()
                .ok_or_else(|| bad("process"))?;
                expect_next(p.0, self.processes.len(), "process")?;
                for s in [p.5, p.6, p.7] {
                    known(s, self.strings.len(), "string")?;
                }
                self.processes.push(Process {
                    pid: p.1,
                    starttime: p.2,
                    parent: p.3.checked_sub(1),
                    start_us: p.4,
                    command: p.5,
                    exe: p.6,
                    python: p.7,
                    end_us: None,
                    end_reason: None,
                    exit: None,
                });
                state.last_rss_kib.push(0);
            }
            T_PROCESS_END => {
                let (id, time, reason, exit) = (|| Some((c.uv32()?, c.uv()?, c.u8()?, c.sv()?)))()
                    .ok_or_else(|| bad("process end"))?;
                known(id, self.processes.len(), "process")?;
                let p = &mut self.processes[id as usize];
                p.end_us = Some(time);
                p.end_reason = Some(EndReason::from_u8(reason).ok_or_else(|| bad("process end"))?);
                p.exit = (exit >= 0).then_some(exit as i32);
            }
            T_THREAD => {
                let (process, slot, tid, name) =
                    (|| Some((c.uv32()?, c.uv32()?, c.uv()? as i32, c.uv32()?)))()
                        .ok_or_else(|| bad("thread"))?;
                known(process, self.processes.len(), "process")?;
                known(name, self.strings.len(), "string")?;
                let slots = state.thread_index.entry(process).or_default();
                expect_next(slot, slots.len(), "thread")?;
                slots.push(self.threads.len() as u32);
                self.threads.push(Thread {
                    process,
                    slot,
                    tid,
                    name,
                });
            }
            T_EVENTS => self
                .apply_events(state, &mut c)
                .ok_or_else(|| bad("events"))??,
            T_STATS => {
                let s = (|| Some((c.uv()?, c.uv()?, c.uv()?, c.uv()?)))()
                    .ok_or_else(|| bad("stats"))?;
                self.stats = Stats {
                    ticks: s.0,
                    missed: s.1,
                    late_max_us: s.2,
                    late_total_us: s.3,
                };
            }
            T_END => self.complete = true,
            T_SOURCE => {
                let file = c.uv32().ok_or_else(|| bad("source"))?;
                known(file, self.strings.len(), "string")?;
                let text = c.str().ok_or_else(|| bad("source"))?;
                self.sources.insert(file, text.to_string());
            }
            // Unknown record types from a newer writer of the same format version are skipped.
            _ => {}
        }
        Ok(())
    }

    fn apply_events(
        &mut self,
        state: &mut ReadState,
        c: &mut Cursor,
    ) -> Option<std::result::Result<(), String>> {
        let mut time = c.uv()?;
        let count = c.uv()?;
        for _ in 0..count {
            let head = c.uv()?;
            let tag = (head & 3) as u8;
            let process = u32::try_from(head >> 2).ok()?;
            if process as usize >= self.processes.len() {
                return Some(Err(format!("event for undefined process {process}")));
            }
            time = time.checked_add(c.uv()?)?;
            match tag {
                E_SAMPLE => {
                    let rss = state.last_rss_kib[process as usize].checked_add(c.sv()?)?;
                    state.last_rss_kib[process as usize] = rss;
                    let native_minflt = c.uv()?;
                    let n = c.uv32()?;
                    let first = self.thread_samples.len() as u32;
                    for _ in 0..n {
                        let head = c.uv()?;
                        let slot = u32::try_from(head >> 3).ok()?;
                        let flags = (head & 3) as u8;
                        let Some(&thread) = state
                            .thread_index
                            .get(&process)
                            .and_then(|s| s.get(slot as usize))
                        else {
                            return Some(Err(format!("sample of undefined thread {slot}")));
                        };
                        let stack = if head & SAME_STACK != 0 {
                            match state.last_stack.get(thread as usize) {
                                Some(&s) => s,
                                None => {
                                    return Some(Err(
                                        "repeated stack of a thread never sampled".into()
                                    ))
                                }
                            }
                        } else {
                            match c.uv32()? {
                                0 => None,
                                s if (s as usize) <= self.stacks.len() => Some(s - 1),
                                s => {
                                    return Some(Err(format!(
                                        "sample of undefined stack {}",
                                        s - 1
                                    )))
                                }
                            }
                        };
                        let cpu_us = c.uv()?;
                        let minflt = c.uv()?;
                        if state.last_stack.len() <= thread as usize {
                            state.last_stack.resize(thread as usize + 1, None);
                        }
                        state.last_stack[thread as usize] = stack;
                        self.thread_samples.push(ThreadSample {
                            thread,
                            stack,
                            flags,
                            cpu_us,
                            minflt,
                        });
                    }
                    self.samples.push(Sample {
                        process,
                        time_us: time,
                        rss_bytes: (rss.max(0) as u64) * 1024,
                        native_minflt,
                        first_thread: first,
                        threads: n,
                    });
                }
                E_FAILURE => {
                    let kind = FailureKind::from_u8(c.u8()?)?;
                    self.failures.push(Failure {
                        process,
                        time_us: time,
                        kind,
                    });
                }
                E_MEMORY => {
                    let kind = MemoryKind::from_u8(c.u8()?)?;
                    let kib = c.uv()?;
                    self.memory.push(MemoryReading {
                        process,
                        time_us: time,
                        kind,
                        bytes: kib.saturating_mul(1024),
                    });
                }
                _ => return Some(Err(format!("unknown event type {tag}"))),
            }
        }
        Some(Ok(()))
    }

    pub fn string(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("?", |s| s.as_str())
    }

    /// Thread samples of one sample.
    pub fn threads_of(&self, s: &Sample) -> &[ThreadSample] {
        &self.thread_samples[s.first_thread as usize..(s.first_thread + s.threads) as usize]
    }

    /// Frames of a stack, innermost first.
    pub fn stack_frames(&self, stack: u32) -> impl Iterator<Item = FrameDef> + '_ {
        let mut node = Some(stack);
        std::iter::from_fn(move || {
            let n = self.stacks[node? as usize];
            node = n.parent;
            Some(self.frames[n.frame as usize])
        })
    }

    /// Time span covered by samples, µs.
    pub fn duration_us(&self) -> u64 {
        match (self.samples.first(), self.samples.last()) {
            (Some(a), Some(b)) => b.time_us - a.time_us,
            _ => 0,
        }
    }
}

#[derive(Default)]
struct ReadState {
    last_rss_kib: Vec<i64>,
    /// Per process: thread slot -> index in `threads`.
    thread_index: std::collections::HashMap<u32, Vec<u32>>,
    /// Per thread: the stack of its previous sample.
    last_stack: Vec<Option<u32>>,
}

fn expect_next(id: u32, next: usize, what: &str) -> std::result::Result<(), String> {
    if id as usize == next {
        Ok(())
    } else {
        Err(format!(
            "{what} {id} defined out of order (expected {next})"
        ))
    }
}

fn known(id: u32, len: usize, what: &str) -> std::result::Result<(), String> {
    if (id as usize) < len {
        Ok(())
    } else {
        Err(format!("reference to undefined {what} {id}"))
    }
}

/// The largest file [`Recording::open`] reads. A regular file's size is known before reading,
/// but a sparse file can claim terabytes while taking no disk space; and the reader's tables
/// take several times a file's size in memory, so a larger file could not be read anyway. An
/// hour at 10 kHz of a busy process is about 0.5 GB.
pub const MAX_FILE: u64 = 4 << 30;

/// The bytes of a file that must be a regular file.
///
/// The path is resolved without opening what it names (`O_PATH`), so naming a FIFO cannot hang
/// and naming a device (a tape, a watchdog, `/dev/zero`) has no effect; only a regular file is
/// then opened for reading (through `/proc/self/fd`, the very file that was checked; `O_NONBLOCK`
/// and `O_NOCTTY` in case it was swapped for something else meanwhile) and read up to the size
/// `fstat` gave, never more.
pub fn read_regular_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

    let cannot = |e| Error::io(format!("cannot read {}", path.display()), e);
    // std opens every file with O_CLOEXEC.
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .map_err(cannot)?;
    let checked = handle.metadata().map_err(cannot)?;
    let kind = |t: std::fs::FileType| {
        if t.is_fifo() {
            "a FIFO"
        } else if t.is_dir() {
            "a directory"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        }
    };
    if !checked.file_type().is_file() {
        return Err(Error::Recording(format!(
            "{} is {}, not a recording",
            path.display(),
            kind(checked.file_type())
        )));
    }
    let reopen = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(p)
    };
    // Without /proc, the path itself, checked to be the same file below.
    let file = reopen(Path::new(&format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&handle)
    )))
    .or_else(|_| reopen(path))
    .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.file_type().is_file() || (meta.dev(), meta.ino()) != (checked.dev(), checked.ino()) {
        return Err(Error::Recording(format!(
            "{} changed while it was being opened",
            path.display()
        )));
    }
    let size = meta.len();
    if size > MAX_FILE {
        return Err(Error::Recording(format!(
            "{} is {}: larger than any recording memspy reads ({})",
            path.display(),
            crate::output::units::bytes(size as f64),
            crate::output::units::bytes(MAX_FILE as f64)
        )));
    }
    let mut data = Vec::with_capacity(size as usize);
    file.take(size).read_to_end(&mut data).map_err(cannot)?;
    Ok(data)
}
