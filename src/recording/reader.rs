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

/// Why a trigger fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerReason {
    Rss,
    Growth,
}

/// A process crossed a `record --trigger-*` limit: its RSS (or growth over the trigger's span)
/// was `bytes`, the limit `limit`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TriggerMark {
    pub process: u32,
    pub time_us: u64,
    pub reason: TriggerReason,
    pub bytes: u64,
    pub limit: u64,
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
    /// Its working directory when found (a string id; None in older files or when unknown).
    pub cwd: Option<u32>,
    /// When its interpreter was first seen shutting down (µs), if it was.
    pub finalizing_us: Option<u64>,
    pub end_us: Option<u64>,
    pub end_reason: Option<EndReason>,
    pub exit: Option<i32>,
}

/// A thread of a process.
#[derive(Clone, Debug)]
pub struct Thread {
    pub process: u32,
    pub slot: u32,
    /// Kernel (host) thread id; 0 when the id the target claimed was not one of its threads.
    pub tid: i32,
    /// The kernel's name of the thread (`comm`) when it was first seen.
    pub name: u32,
    /// Its Python name (`threading.Thread.name`), as last recorded.
    pub python_name: Option<u32>,
    /// The id the target's memory gave for the thread (its own pid namespace's), if any.
    pub claimed: Option<i32>,
}

impl Thread {
    /// How reports name it: its Python name, else the kernel's.
    pub fn label<'a>(&self, rec: &'a Recording) -> &'a str {
        rec.string(self.python_name.unwrap_or(self.name))
    }

    /// The target claimed a kernel id that named none of its threads: memspy read the thread's
    /// stack but never stopped it, and has no counters for it.
    pub fn unproven(&self) -> bool {
        self.tid == 0 && self.claimed.is_some()
    }
}

/// A greenlet or asyncio task of a process.
#[derive(Clone, Debug)]
pub struct Task {
    pub process: u32,
    pub kind: TaskKind,
    /// Index into `Recording::threads` of the thread it belongs to, when known.
    pub thread: Option<u32>,
    pub address: u64,
    pub name: u32,
}

/// What a task was doing from a sample on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    Ended,
    /// Its thread runs it: its time and memory are the thread's.
    Running,
    /// Waiting at this stack (None: no Python frames).
    Waiting(Option<u32>),
}

/// A task's state, holding from sample `sample` (an index into `Recording::samples`, a sample
/// of the task's process) on.
#[derive(Clone, Copy, Debug)]
pub struct TaskChange {
    pub sample: u32,
    /// Index into `Recording::tasks`.
    pub task: u32,
    pub state: TaskState,
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

/// A memory event: a thread's stack read right after the kernel said it faulted or freed
/// memory, and the process's RSS then.
#[derive(Clone, Copy, Debug)]
pub struct MemoryEvent {
    pub process: u32,
    pub time_us: u64,
    /// Index into `Recording::threads`.
    pub thread: u32,
    pub stack: Option<u32>,
    pub rss_bytes: u64,
    /// Kernel records since the thread's previous memory event: fault samples (each standing
    /// for the period's number of faults) and frees (returns from munmap, madvise, brk).
    pub faults: u64,
    pub frees: u64,
    /// From the last kernel record to the stack read, µs.
    pub delay_us: u64,
    /// The stack was read at the event; else it is the thread's stack at its previous tick.
    pub fresh: bool,
    /// Of `faults` and `frees`, how many are estimated to belong to the stack the thread had
    /// at its previous observation (they happened before it moved on).
    pub faults_before: u64,
    pub frees_before: u64,
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
    /// The sampler's time outside its waits for ticks (None: not recorded).
    pub busy_us: Option<u64>,
    /// Blocking mode: how many times threads were held stopped, for how long in all and at
    /// most (µs; from the first stop to the last resume of a tick).
    pub pauses: Option<(u64, u64, u64)>,
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
    /// Greenlets and asyncio tasks, and their changes of state in file order.
    pub tasks: Vec<Task>,
    pub task_changes: Vec<TaskChange>,
    pub samples: Vec<Sample>,
    pub thread_samples: Vec<ThreadSample>,
    pub failures: Vec<Failure>,
    pub memory: Vec<MemoryReading>,
    /// Memory events, in time order (interleaved with `samples` in the file).
    pub memory_events: Vec<MemoryEvent>,
    /// The moments a process crossed a `record --trigger-*` limit.
    pub triggers: Vec<TriggerMark>,
    /// What the memory events were (the last summary the recorder wrote).
    pub memory_events_summary: Option<crate::recording::writer::MemoryEventsSummary>,
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
    /// recording at all, or its description (the first record) is damaged or impossible;
    /// damage later on is reported in `damage`.
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
        let mut saw_meta = false;
        rec.read_records(&mut state, &mut saw_meta, data, HEADER_LEN, true)?;
        if !saw_meta {
            return Err(match rec.damage {
                Some(Damage::Corrupt { what, .. }) => {
                    format!(
                        "damaged recording: its description (the first record) is damaged ({what})"
                    )
                }
                _ => "the recording holds no data (it was cut before its first record)".into(),
            });
        }
        Ok(rec)
    }

    /// Read the records of `data` from `pos` on (the header read already); `whole`: `data` is
    /// the whole file, so a record cut short is damage (else it is still being written, and
    /// waits). Returns where reading stopped: the end of the last whole record read.
    fn read_records(
        &mut self,
        state: &mut ReadState,
        saw_meta: &mut bool,
        data: &[u8],
        mut pos: usize,
        whole: bool,
    ) -> std::result::Result<usize, String> {
        let rec = self;
        while pos < data.len() {
            let offset = pos as u64;
            let cut = |rec: &mut Recording| {
                if whole {
                    rec.damage = Some(Damage::Truncated { offset });
                }
            };
            let Some(len_bytes) = data.get(pos..pos + 4) else {
                cut(rec);
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
                cut(rec);
                break;
            };
            let Some(crc) = data.get(pos + 4 + len..pos + 8 + len) else {
                cut(rec);
                break;
            };
            if u32::from_le_bytes(crc.try_into().unwrap_or_default()) != crc32fast::hash(body) {
                rec.damage = Some(Damage::Corrupt {
                    offset,
                    what: "checksum mismatch".into(),
                });
                break;
            }
            if !*saw_meta {
                // The description: without a sound one nothing else can be read.
                if body[0] != T_META {
                    return Err("the first record is not the recording's description".into());
                }
                rec.meta = parse_meta(&body[1..])
                    .map_err(|what| format!("damaged recording: its description {what}"))?;
                *saw_meta = true;
            } else {
                let before = rec.event_counts();
                if let Err(what) = rec.apply(state, body) {
                    // Nothing of a record that lies is kept, not even its first events.
                    rec.truncate_events(before);
                    rec.damage = Some(Damage::Corrupt { offset, what });
                    break;
                }
            }
            pos += 8 + len;
        }
        Ok(pos)
    }

    /// Decode one record body (after the description) into the recording. A record that is
    /// malformed or lies (see the list in [`super::format`]) is an error, and the reading
    /// stops there.
    fn apply(&mut self, state: &mut ReadState, body: &[u8]) -> std::result::Result<(), String> {
        let mut c = Cursor::new(&body[1..]);
        let bad = |what: &str| format!("malformed {what} record");
        match body[0] {
            T_META => return Err("a second description".into()),
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
                    Some((id, name, qualname, file, c.sv()?))
                })()
                .ok_or_else(|| bad("function"))?;
                expect_next(f.0, self.functions.len(), "function")?;
                for s in [f.1, f.2, f.3] {
                    known(s, self.strings.len(), "string")?;
                }
                let firstlineno = line_number(f.4)?;
                self.functions.push(Function {
                    name: f.1,
                    qualname: f.2,
                    file: f.3,
                    firstlineno,
                });
            }
            T_FRAME => {
                let (id, function, line) =
                    (|| Some((c.uv32()?, c.uv32()?, c.sv()?)))().ok_or_else(|| bad("frame"))?;
                expect_next(id, self.frames.len(), "frame")?;
                known(function, self.functions.len(), "function")?;
                let line = line_number(line)?;
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
                if depth > MAX_STACK_DEPTH {
                    return Err(format!(
                        "stack {id} is deeper than {MAX_STACK_DEPTH} frames"
                    ));
                }
                // What a report prints for its frames: `qualname (file:line)` each, and `;`.
                let f = &self.functions[self.frames[frame as usize].function as usize];
                let own = (self.string(f.qualname).len() + self.string(f.file).len() + 16) as u64;
                let above = parent.map_or(0, |p| state.stack_text[p as usize]);
                state.stack_text.push(above + own);
                self.stacks.push(StackNode {
                    parent,
                    frame,
                    depth,
                });
            }
            T_PROCESS_START => {
                let p = (|| {
                    let id = c.uv32()?;
                    let pid = c.uv()?;
                    let starttime = c.uv()?;
                    let parent = c.uv32()?;
                    let start_us = c.uv()?;
                    let (command, exe, python) = (c.uv32()?, c.uv32()?, c.uv32()?);
                    let cwd = if c.is_empty() {
                        None
                    } else {
                        c.uv32()?.checked_sub(1)
                    };
                    Some((
                        id, pid, starttime, parent, start_us, command, exe, python, cwd,
                    ))
                })()
                .ok_or_else(|| bad("process"))?;
                expect_next(p.0, self.processes.len(), "process")?;
                for s in [p.5, p.6, p.7].into_iter().chain(p.8) {
                    known(s, self.strings.len(), "string")?;
                }
                let pid = positive_id(p.1, "pid")?;
                // The recorder defines a child after the parent it found it under.
                let parent = p.3.checked_sub(1);
                if parent.is_some_and(|q| q >= p.0) {
                    return Err(format!(
                        "process {} has a parent that is not an earlier process",
                        p.0
                    ));
                }
                check_time(p.4)?;
                self.processes.push(Process {
                    pid,
                    starttime: p.2,
                    parent,
                    start_us: p.4,
                    command: p.5,
                    exe: p.6,
                    python: p.7,
                    cwd: p.8,
                    finalizing_us: None,
                    end_us: None,
                    end_reason: None,
                    exit: None,
                });
                state.last_rss_kib.push(0);
                state.last_sample.push(None);
            }
            T_PROCESS_END => {
                let (id, time, reason, exit) = (|| Some((c.uv32()?, c.uv()?, c.u8()?, c.sv()?)))()
                    .ok_or_else(|| bad("process end"))?;
                known(id, self.processes.len(), "process")?;
                let reason = EndReason::from_u8(reason).ok_or_else(|| bad("process end"))?;
                let exit =
                    match exit {
                        -1 => None,
                        e => Some(i32::try_from(e).ok().filter(|e| *e >= 0).ok_or_else(|| {
                            format!("process {id} has an impossible exit status")
                        })?),
                    };
                let p = &mut self.processes[id as usize];
                if p.end_us.is_some() {
                    return Err(format!("process {id} ends twice"));
                }
                check_time(time)?;
                if time < p.start_us {
                    return Err(format!("process {id} ends before it started"));
                }
                p.end_us = Some(time);
                p.end_reason = Some(reason);
                p.exit = exit;
            }
            T_THREAD => {
                let (process, slot, tid, name) =
                    (|| Some((c.uv32()?, c.uv32()?, c.uv()?, c.uv32()?)))()
                        .ok_or_else(|| bad("thread"))?;
                known(process, self.processes.len(), "process")?;
                known(name, self.strings.len(), "string")?;
                let tid = i32::try_from(tid).map_err(|_| "impossible thread id".to_string())?;
                let slots = state.thread_index.entry(process).or_default();
                expect_next(slot, slots.len(), "thread")?;
                slots.push(self.threads.len() as u32);
                // Absent in recordings made before memspy proved thread ids.
                let claimed = match c.is_empty() {
                    true => None,
                    false => c
                        .uv()
                        .ok_or_else(|| bad("thread"))?
                        .checked_sub(1)
                        .map(|v| v as u32 as i32),
                };
                self.threads.push(Thread {
                    process,
                    slot,
                    tid,
                    name,
                    python_name: None,
                    claimed,
                });
            }
            T_THREAD_NAME => {
                let (process, slot, name) = (|| Some((c.uv32()?, c.uv32()?, c.uv32()?)))()
                    .ok_or_else(|| bad("thread name"))?;
                known(name, self.strings.len(), "string")?;
                let index = state
                    .thread_index
                    .get(&process)
                    .and_then(|s| s.get(slot as usize))
                    .copied()
                    .ok_or_else(|| format!("name of undefined thread {slot}"))?;
                self.threads[index as usize].python_name = Some(name);
            }
            T_TASK => {
                let (process, id, kind, thread, address, name) =
                    (|| Some((c.uv32()?, c.uv32()?, c.u8()?, c.uv32()?, c.uv()?, c.uv32()?)))()
                        .ok_or_else(|| bad("task"))?;
                known(process, self.processes.len(), "process")?;
                known(name, self.strings.len(), "string")?;
                let kind = TaskKind::from_u8(kind).ok_or_else(|| bad("task kind"))?;
                let ids = state.task_index.entry(process).or_default();
                expect_next(id, ids.len(), "task")?;
                let thread = match thread {
                    0 => None,
                    slot => Some(
                        state
                            .thread_index
                            .get(&process)
                            .and_then(|s| s.get(slot as usize - 1))
                            .copied()
                            .ok_or_else(|| format!("task on undefined thread {}", slot - 1))?,
                    ),
                };
                ids.push(self.tasks.len() as u32);
                self.tasks.push(Task {
                    process,
                    kind,
                    thread,
                    address,
                    name,
                });
            }
            T_THREAD_ID => {
                let (process, slot, tid) =
                    (|| Some((c.uv32()?, c.uv32()?, c.uv()?)))().ok_or_else(|| bad("thread id"))?;
                let index = state
                    .thread_index
                    .get(&process)
                    .and_then(|s| s.get(slot as usize))
                    .copied()
                    .ok_or_else(|| format!("id of undefined thread {slot}"))?;
                let tid = i32::try_from(tid)
                    .ok()
                    .filter(|&t| t > 0)
                    .ok_or_else(|| "impossible thread id".to_string())?;
                let thread = &mut self.threads[index as usize];
                if thread.tid != 0 {
                    return Err(format!("thread {slot} proven twice"));
                }
                thread.tid = tid;
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
                    busy_us: if c.is_empty() { None } else { c.uv() },
                    pauses: if c.is_empty() {
                        None
                    } else {
                        (|| Some((c.uv()?, c.uv()?, c.uv()?)))()
                    },
                };
            }
            T_MEMORY_EVENTS => {
                let m = (|| {
                    let mode = c.str()?.to_string();
                    let mut v = [0u64; 9];
                    for x in &mut v {
                        *x = c.uv()?;
                    }
                    Some(crate::recording::writer::MemoryEventsSummary {
                        mode,
                        period: v[0],
                        samples: v[1],
                        faults: v[2],
                        frees: v[3],
                        lost: v[4],
                        failed: v[5],
                        max_period: v[6],
                        delay_p50_us: v[7],
                        delay_p99_us: v[8],
                    })
                })()
                .ok_or_else(|| bad("memory events"))?;
                self.memory_events_summary = Some(m);
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

    /// Decode an `Events` record. None: the record ends early or holds an impossible value
    /// (an unknown failure or memory kind, a memory amount that overflows); `Some(Err)`: an
    /// event contradicts what came before.
    fn apply_events(
        &mut self,
        state: &mut ReadState,
        c: &mut Cursor,
    ) -> Option<std::result::Result<(), String>> {
        let mut time = c.uv()?;
        if time < state.last_time_us {
            return Some(Err(format!(
                "time goes backwards (events at {time} µs after events at {} µs)",
                state.last_time_us
            )));
        }
        let count = c.uv()?;
        for _ in 0..count {
            let head = c.uv()?;
            let tag = (head & 3) as u8;
            let process = u32::try_from(head >> 2).ok()?;
            if process as usize >= self.processes.len() {
                return Some(Err(format!("event for undefined process {process}")));
            }
            time = time.checked_add(c.uv()?)?;
            if let Err(e) = check_time(time) {
                return Some(Err(e));
            }
            state.last_time_us = time;
            match tag {
                E_SAMPLE => {
                    if self.samples.len() >= u32::MAX as usize {
                        return Some(Err("more samples than a recording can hold".into()));
                    }
                    let rss = state.last_rss_kib[process as usize].checked_add(c.sv()?)?;
                    if !(0..=MAX_MEMORY_KIB as i64).contains(&rss) {
                        return Some(Err(format!("impossible memory size of process {process}")));
                    }
                    state.last_rss_kib[process as usize] = rss;
                    let native_minflt = c.uv()?;
                    let n = c.uv32()?;
                    if n > MAX_SAMPLE_THREADS {
                        return Some(Err(format!(
                            "a sample of process {process} has {n} threads"
                        )));
                    }
                    let first = self.thread_samples.len() as u32;
                    if first.checked_add(n).is_none_or(|end| end == u32::MAX) {
                        return Some(Err("more thread samples than a recording can hold".into()));
                    }
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
                        if let Some(s) = stack {
                            if let Err(e) = state.use_stack(process, s, &self.stacks) {
                                return Some(Err(e));
                            }
                        }
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
                    state.last_sample[process as usize] = Some(self.samples.len() as u32);
                    self.samples.push(Sample {
                        process,
                        time_us: time,
                        rss_bytes: rss as u64 * 1024,
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
                    if kib > MAX_MEMORY_KIB {
                        return Some(Err(format!("impossible memory size of process {process}")));
                    }
                    self.memory.push(MemoryReading {
                        process,
                        time_us: time,
                        kind,
                        bytes: kib * 1024,
                    });
                }
                E_EXTENDED => match c.u8()? {
                    X_MEMORY_EVENT => {
                        let slot = c.uv32()?;
                        let Some(&thread) = state
                            .thread_index
                            .get(&process)
                            .and_then(|s| s.get(slot as usize))
                        else {
                            return Some(Err(format!("memory event of undefined thread {slot}")));
                        };
                        let stack = match c.uv32()? {
                            0 => None,
                            s if (s as usize) <= self.stacks.len() => Some(s - 1),
                            s => {
                                return Some(Err(format!(
                                    "memory event on undefined stack {}",
                                    s - 1
                                )))
                            }
                        };
                        if let Some(s) = stack {
                            if let Err(e) = state.use_stack(process, s, &self.stacks) {
                                return Some(Err(e));
                            }
                        }
                        let rss = state.last_rss_kib[process as usize].checked_add(c.sv()?)?;
                        if !(0..=MAX_MEMORY_KIB as i64).contains(&rss) {
                            return Some(Err(format!(
                                "impossible memory size of process {process}"
                            )));
                        }
                        state.last_rss_kib[process as usize] = rss;
                        let (faults, frees, delay_us) = (c.uv()?, c.uv()?, c.uv()?);
                        let fresh = c.uv()? & FRESH_STACK != 0;
                        let (faults_before, frees_before) = (c.uv()?, c.uv()?);
                        if faults_before > faults || frees_before > frees {
                            return Some(Err("memory event splits more than it has".into()));
                        }
                        self.memory_events.push(MemoryEvent {
                            process,
                            time_us: time,
                            thread,
                            stack,
                            rss_bytes: rss as u64 * 1024,
                            faults,
                            frees,
                            delay_us,
                            fresh,
                            faults_before,
                            frees_before,
                        });
                    }
                    X_TASKS => {
                        // Right after a sample of the process: its state holds from that one.
                        let Some(sample) =
                            state.last_sample.get(process as usize).copied().flatten()
                        else {
                            return Some(Err(format!(
                                "tasks of process {process} before a sample"
                            )));
                        };
                        let n = c.uv()?;
                        if n > MAX_TASK_CHANGES {
                            return Some(Err(format!("{n} task changes in one event")));
                        }
                        for _ in 0..n {
                            let (id, code) = (c.uv32()?, c.uv()?);
                            let Some(&task) = state
                                .task_index
                                .get(&process)
                                .and_then(|t| t.get(id as usize))
                            else {
                                return Some(Err(format!("state of undefined task {id}")));
                            };
                            let task_state = match code {
                                TASK_ENDED => TaskState::Ended,
                                TASK_RUNNING => TaskState::Running,
                                TASK_WAITING_NO_FRAMES => TaskState::Waiting(None),
                                s if s - TASK_WAITING_AT < self.stacks.len() as u64 => {
                                    let stack = (s - TASK_WAITING_AT) as u32;
                                    if let Err(e) = state.use_stack(process, stack, &self.stacks) {
                                        return Some(Err(e));
                                    }
                                    TaskState::Waiting(Some(stack))
                                }
                                _ => return Some(Err("task waits at an undefined stack".into())),
                            };
                            self.task_changes.push(TaskChange {
                                sample,
                                task,
                                state: task_state,
                            });
                        }
                    }
                    X_FINALIZING => {
                        let p = &mut self.processes[process as usize];
                        p.finalizing_us.get_or_insert(time);
                    }
                    X_TRIGGER => {
                        let reason = match c.u8()? {
                            0 => TriggerReason::Rss,
                            1 => TriggerReason::Growth,
                            r => return Some(Err(format!("unknown trigger reason {r}"))),
                        };
                        let (bytes, limit) = (c.uv()?, c.uv()?);
                        self.triggers.push(TriggerMark {
                            process,
                            time_us: time,
                            reason,
                            bytes,
                            limit,
                        });
                    }
                    kind => return Some(Err(format!("unknown extended event kind {kind}"))),
                },
                _ => return Some(Err(format!("unknown event type {tag}"))),
            }
        }
        Some(Ok(()))
    }

    pub fn string(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("?", |s| s.as_str())
    }

    /// How many samples, thread samples, failures, memory readings and memory events there are.
    fn event_counts(&self) -> [usize; 5] {
        [
            self.samples.len(),
            self.thread_samples.len(),
            self.failures.len(),
            self.memory.len(),
            self.memory_events.len(),
        ]
    }

    /// Drop the events read after `event_counts` said `counts`.
    fn truncate_events(&mut self, counts: [usize; 5]) {
        self.samples.truncate(counts[0]);
        self.thread_samples.truncate(counts[1]);
        self.failures.truncate(counts[2]);
        self.memory.truncate(counts[3]);
        self.memory_events.truncate(counts[4]);
    }

    /// Thread samples of one sample (none for a sample that is not this recording's).
    pub fn threads_of(&self, s: &Sample) -> &[ThreadSample] {
        let first = s.first_thread as usize;
        self.thread_samples
            .get(first..first.saturating_add(s.threads as usize))
            .unwrap_or(&[])
    }

    /// Frames of a stack, innermost first (at most [`MAX_STACK_DEPTH`]; none for an unknown
    /// stack).
    pub fn stack_frames(&self, stack: u32) -> impl Iterator<Item = FrameDef> + '_ {
        let mut node = Some(stack);
        std::iter::from_fn(move || {
            let n = self.stacks.get(node? as usize)?;
            node = n.parent;
            self.frames.get(n.frame as usize).copied()
        })
        .take(MAX_STACK_DEPTH as usize)
    }

    /// How this recording's memory was sampled, for titles and `info`: "page faults and frees
    /// as they happened, and ticks" or "ticks only (why)".
    pub fn sampling(&self) -> String {
        match self.memory_events_summary.as_ref().map(|m| m.mode.as_str()) {
            Some("faults and frees") => "memory from page-fault and free events and ticks".into(),
            Some(m) if m.starts_with("faults only") => {
                "memory from page-fault events and ticks (no free events)".into()
            }
            Some(m) if m.starts_with("off") => format!(
                "memory from ticks only (memory events: {})",
                m.trim_start_matches("off: ")
            ),
            _ => "memory from ticks only".into(),
        }
    }

    /// Time span covered by samples, µs.
    /// The pids of the processes that have samples, in recording order (a pid that a later
    /// process reused counts once).
    pub fn sampled_pids(&self) -> Vec<i32> {
        let mut has = vec![false; self.processes.len()];
        for s in &self.samples {
            if let Some(h) = has.get_mut(s.process as usize) {
                *h = true;
            }
        }
        let mut pids: Vec<i32> = Vec::new();
        for (p, _) in self.processes.iter().zip(&has).filter(|(_, &h)| h) {
            if !pids.contains(&p.pid) {
                pids.push(p.pid);
            }
        }
        pids
    }

    pub fn duration_us(&self) -> u64 {
        match (self.samples.first(), self.samples.last()) {
            (Some(a), Some(b)) => b.time_us.saturating_sub(a.time_us),
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
    /// Per process: task id -> index in `tasks`.
    task_index: std::collections::HashMap<u32, Vec<u32>>,
    /// Per process: its last sample (index in `samples`).
    last_sample: Vec<Option<u32>>,
    /// The time of the last event.
    last_time_us: u64,
    /// Per stack: the bytes of the names of its frames (see [`MAX_SAMPLED_TEXT`]).
    stack_text: Vec<u64>,
    /// The (process, stack) pairs samples used already.
    sampled: rustc_hash::FxHashSet<(u32, u32)>,
    /// Their frames, and the bytes of the frames' names, added up.
    sampled_frames: u64,
    sampled_text: u64,
}

impl ReadState {
    /// Count a sample's use of `stack` in `process` against [`MAX_SAMPLED_FRAMES`] and
    /// [`MAX_SAMPLED_TEXT`].
    fn use_stack(
        &mut self,
        process: u32,
        stack: u32,
        stacks: &[StackNode],
    ) -> std::result::Result<(), String> {
        if self.sampled.insert((process, stack)) {
            self.sampled_frames += stacks[stack as usize].depth as u64;
            self.sampled_text += self.stack_text[stack as usize];
            if self.sampled_frames > MAX_SAMPLED_FRAMES {
                return Err(format!(
                    "the stacks samples use have more than {MAX_SAMPLED_FRAMES} frames in all"
                ));
            }
            if self.sampled_text > MAX_SAMPLED_TEXT {
                return Err(format!(
                    "the frames of the stacks samples use have more than {} MiB of names",
                    MAX_SAMPLED_TEXT >> 20
                ));
            }
        }
        Ok(())
    }
}

/// The description of a recording, or what makes it impossible.
fn parse_meta(json: &[u8]) -> std::result::Result<Meta, String> {
    let meta: Meta = serde_json::from_slice(json).map_err(|e| {
        // serde's message can quote a whole value: keep the start.
        let e = e.to_string();
        match e.char_indices().nth(160) {
            Some((cut, _)) => format!("is unreadable ({}…)", &e[..cut]),
            None => format!("is unreadable ({e})"),
        }
    })?;
    if !(meta.rate_hz.is_finite() && meta.rate_hz > 0.0 && meta.rate_hz <= MAX_RATE_HZ) {
        return Err(format!(
            "gives an impossible sampling rate ({:e} Hz)",
            meta.rate_hz
        ));
    }
    if !matches!(meta.memory.as_str(), "rss" | "pss" | "uss") {
        return Err("names no known memory measure (rss, pss or uss)".into());
    }
    if meta.start_unix_ns > i64::MAX as u64 {
        return Err("gives an impossible start time".into());
    }
    Ok(meta)
}

/// A line number as recorded (-1: none).
fn line_number(v: i64) -> std::result::Result<i32, String> {
    i32::try_from(v).map_err(|_| "impossible line number".to_string())
}

/// A pid or tid: positive, and an `i32`.
fn positive_id(v: u64, what: &str) -> std::result::Result<i32, String> {
    i32::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("impossible {what}"))
}

fn check_time(t: u64) -> std::result::Result<(), String> {
    if t < MAX_TIME_US {
        Ok(())
    } else {
        Err("impossible time".into())
    }
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

/// A recording read while it is written (by `memspy top`, `--push`, `--serve`): each
/// [`LiveRecording::update`] reads only what was appended to the file since the last one and
/// parses the records that are whole; a record still being written waits for the next update.
/// What was parsed stays parsed, so an update costs what was appended, not the file.
pub struct LiveRecording {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    /// Bytes read but not parsed yet (a record not yet whole, or the header).
    pending: Vec<u8>,
    rec: Recording,
    state: ReadState,
    header_read: bool,
    saw_meta: bool,
    /// The file is not a recording, or lies: it is read no further.
    stopped: bool,
}

impl LiveRecording {
    pub fn new(path: &Path) -> LiveRecording {
        LiveRecording {
            path: path.to_path_buf(),
            file: None,
            pending: Vec::new(),
            rec: Recording::default(),
            state: ReadState::default(),
            header_read: false,
            saw_meta: false,
            stopped: false,
        }
    }

    /// Read what was appended since, and the recording so far (None before its description
    /// is on disk, or when the file is not a recording).
    pub fn update(&mut self) -> Option<&Recording> {
        use std::io::Read;
        if !self.stopped {
            if self.file.is_none() {
                // Only a regular file, not followed through a link (as `read_regular_file`).
                use std::os::unix::fs::OpenOptionsExt;
                self.file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(&self.path)
                    .ok()
                    .filter(|f| f.metadata().is_ok_and(|m| m.file_type().is_file()));
            }
            if let Some(f) = self.file.as_mut() {
                let mut chunk = Vec::new();
                if f.read_to_end(&mut chunk).is_ok() {
                    self.rec.file_bytes += chunk.len() as u64;
                    self.pending.extend_from_slice(&chunk);
                }
            }
            self.parse_pending();
        }
        self.saw_meta.then_some(&self.rec)
    }

    fn parse_pending(&mut self) {
        if !self.header_read {
            if self.pending.len() < HEADER_LEN {
                return;
            }
            let version = u32::from_le_bytes(self.pending[8..12].try_into().unwrap_or_default());
            if &self.pending[..8] != MAGIC || version != VERSION {
                self.stopped = true;
                return;
            }
            self.pending.drain(..HEADER_LEN);
            self.header_read = true;
        }
        let pending = std::mem::take(&mut self.pending);
        match self
            .rec
            .read_records(&mut self.state, &mut self.saw_meta, &pending, 0, false)
        {
            Ok(used) => self.pending = pending[used..].to_vec(),
            Err(_) => self.stopped = true,
        }
        if self.rec.damage.is_some() {
            self.stopped = true;
        }
    }
}

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

#[cfg(test)]
mod tests {
    //! Each lie a record can tell is damage: the reading stops at that record and keeps
    //! everything before it. The lies are framed with a correct checksum, so only the
    //! validation of the content can catch them.
    use super::*;
    use crate::recording::writer::{ProcessDef, ThreadEntry, Writer};

    /// A valid recording: process 0 (pid 42) with thread slot 0, stack 0 (one frame), five
    /// samples 10 ms apart with RSS 100 MiB, not finished (so records can follow).
    fn valid() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.msp");
        let meta = Meta {
            memspy_version: "test".into(),
            rate_hz: 100.0,
            memory: "rss".into(),
            ..Meta::default()
        };
        let mut w = Writer::create(&path, &meta).unwrap();
        let p = w
            .process_start(&ProcessDef {
                pid: 42,
                starttime: 7,
                parent: None,
                time_us: 0,
                command: "python app.py",
                exe: "/usr/bin/python3",
                python: "3.11.2",
                cwd: "",
            })
            .unwrap();
        let slot = w.thread(p, 42, Some(42), "MainThread").unwrap();
        let f = w.function("main", "main", "app.py", 1).unwrap();
        let frame = w.frame(f, 2).unwrap();
        let stack = w.stack([frame]).unwrap();
        for i in 0..5 {
            let t = ThreadEntry {
                slot,
                stack,
                flags: 0,
                cpu_ns_total: 0,
                minflt: 0,
            };
            w.sample(p, i * 10_000, 100 << 20, 0, &[t]).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        std::fs::read(&path).unwrap()
    }

    /// A record with a correct length and checksum.
    fn record(kind: u8, fields: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut body = vec![kind];
        fields(&mut body);
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out
    }

    /// An events record of one sample of process 0 at `time_us`: RSS change `rss_kib`, and
    /// the threads given as (slot, stack id).
    fn sample(time_us: u64, rss_kib: i64, threads: &[(u64, u64)]) -> Vec<u8> {
        record(T_EVENTS, |b| {
            put_uv(b, time_us);
            put_uv(b, 1);
            put_uv(b, E_SAMPLE as u64); // process 0
            put_uv(b, 0);
            put_sv(b, rss_kib);
            put_uv(b, 0);
            put_uv(b, threads.len() as u64);
            for &(slot, stack) in threads {
                put_uv(b, slot << 3);
                put_uv(b, stack + 1);
                put_uv(b, 0);
                put_uv(b, 0);
            }
        })
    }

    fn process(id: u64, pid: u64, parent: u64, time_us: u64) -> Vec<u8> {
        record(T_PROCESS_START, |b| {
            for v in [id, pid, 1, parent, time_us, 0, 0, 0] {
                put_uv(b, v);
            }
        })
    }

    fn stack(id: u64, parent: u64, frame: u64) -> Vec<u8> {
        record(T_STACK, |b| {
            for v in [id, parent, frame] {
                put_uv(b, v);
            }
        })
    }

    /// The valid file, then `lie`, then a good sample that must not be read: the damage is
    /// reported at the lie's offset, with its reason, and the five samples before it kept.
    fn assert_damage(lie: &[u8], reason: &str) {
        let mut file = valid();
        let offset = file.len() as u64;
        file.extend_from_slice(lie);
        file.extend_from_slice(&sample(1_000_000, 0, &[(0, 0)]));
        let rec = Recording::parse(&file).expect("a damaged record is not a damaged file");
        match &rec.damage {
            Some(Damage::Corrupt { offset: o, what }) => {
                assert!(*o >= offset, "damage at {o}, before the lie at {offset}");
                assert!(what.contains(reason), "{what:?} does not say {reason:?}");
                assert!(what.len() < 200, "{what}");
            }
            other => panic!("{reason}: not detected ({other:?})"),
        }
        assert_eq!(rec.samples.len(), 5, "{reason}: what came before is kept");
        assert_eq!(rec.processes[0].pid, 42);
    }

    #[test]
    fn the_valid_file_reads_whole() {
        let mut file = valid();
        file.extend_from_slice(&sample(1_000_000, 0, &[(0, 0)]));
        let rec = Recording::parse(&file).unwrap();
        assert_eq!(rec.damage, None);
        assert_eq!(rec.samples.len(), 6);
    }

    #[test]
    fn process_parent_must_be_an_earlier_process() {
        // Process 1 naming itself (parent index 1, stored as 2) or a later one as its parent.
        assert_damage(&process(1, 43, 2, 50_000), "not an earlier process");
        assert_damage(&process(1, 43, 1000, 50_000), "not an earlier process");
        assert_damage(
            &process(1, 43, u32::MAX as u64, 50_000),
            "not an earlier process",
        );
        // Process 0 as the parent is fine.
        let mut file = valid();
        file.extend_from_slice(&process(1, 43, 1, 50_000));
        let rec = Recording::parse(&file).unwrap();
        assert_eq!((rec.damage, rec.processes[1].parent), (None, Some(0)));
    }

    #[test]
    fn pids_must_be_positive_i32() {
        assert_damage(&process(1, 0, 0, 50_000), "impossible pid");
        assert_damage(&process(1, 1 << 31, 0, 50_000), "impossible pid");
        assert_damage(&process(1, u64::MAX, 0, 50_000), "impossible pid");
        let thread = |tid: u64| {
            record(T_THREAD, |b| {
                for v in [0, 1, tid, 0] {
                    put_uv(b, v);
                }
            })
        };
        assert_damage(&thread(1 << 31), "impossible thread id");
        assert_damage(&thread(1 << 40), "impossible thread id");
        // A thread whose tid the recorder did not know yet is written with 0.
        let mut file = valid();
        file.extend_from_slice(&thread(0));
        let rec = Recording::parse(&file).unwrap();
        assert_eq!((rec.damage, rec.threads[1].tid), (None, 0));
    }

    #[test]
    fn stacks_are_at_most_max_depth() {
        // Stack 0 has depth 1: a chain on it reaches MAX_STACK_DEPTH, and one more is a lie.
        let mut chain = Vec::new();
        for id in 1..MAX_STACK_DEPTH as u64 {
            chain.extend_from_slice(&stack(id, id, 0));
        }
        let mut file = valid();
        file.extend_from_slice(&chain);
        let rec = Recording::parse(&file).unwrap();
        assert_eq!(rec.damage, None);
        assert_eq!(rec.stacks.last().unwrap().depth, MAX_STACK_DEPTH);
        assert_eq!(rec.stack_frames(MAX_STACK_DEPTH - 1).count(), 16384);
        let deeper = [
            chain.clone(),
            stack(MAX_STACK_DEPTH as u64, MAX_STACK_DEPTH as u64, 0),
        ]
        .concat();
        assert_damage(&deeper, "deeper than 16384 frames");
    }

    #[test]
    fn sampled_stacks_have_a_frame_budget() {
        // A chain MAX_STACK_DEPTH - 1 deep, and leaves under it, each sampled once: the
        // leaves' frames add up past MAX_SAMPLED_FRAMES at the 1025th.
        let depth = MAX_STACK_DEPTH as u64;
        let leaves = MAX_SAMPLED_FRAMES / depth + 1;
        let mut lie = Vec::new();
        for id in 1..depth - 1 {
            lie.extend_from_slice(&stack(id, id, 0));
        }
        for leaf in 0..leaves {
            lie.extend_from_slice(&stack(depth - 1 + leaf, depth - 1, 0));
        }
        for leaf in 0..leaves {
            lie.extend_from_slice(&sample(100_000 + leaf, 0, &[(0, depth - 1 + leaf)]));
        }
        let mut file = valid();
        file.extend_from_slice(&lie);
        let rec = Recording::parse(&file).unwrap();
        match rec.damage {
            Some(Damage::Corrupt { what, .. }) => assert!(what.contains("frames in all"), "{what}"),
            other => panic!("budget not enforced: {other:?}"),
        }
        // Every leaf sample before the one that broke the budget is kept (stack 0 of the valid
        // part counts one frame).
        assert_eq!(
            rec.samples.len() as u64,
            5 + (MAX_SAMPLED_FRAMES - 1) / depth
        );
    }

    #[test]
    fn sampled_stacks_have_a_budget_of_names() {
        // A function with a 60,000-character name, a stack of MAX_STACK_DEPTH of its frames
        // (about 980 MB of names), sampled in process 0, then in process 1: past the budget.
        let long = "n".repeat(60_000);
        let mut lie = vec![
            record(T_STRING, |b| {
                put_uv(b, 6); // strings 0 to 5 are the valid part's
                put_str(b, &long);
            }),
            record(T_FUNCTION, |b| {
                for v in [1, 6, 6, 5] {
                    put_uv(b, v);
                }
                put_sv(b, 1);
            }),
            record(T_FRAME, |b| {
                put_uv(b, 1);
                put_uv(b, 1);
                put_sv(b, 1);
            }),
        ];
        for id in 1..=MAX_STACK_DEPTH as u64 {
            lie.push(stack(id, if id == 1 { 0 } else { id }, 1));
        }
        let deep = MAX_STACK_DEPTH as u64;
        lie.push(sample(100_000, 0, &[(0, deep)]));
        lie.push(process(1, 43, 1, 100_000));
        lie.push(record(T_THREAD, |b| {
            for v in [1, 0, 43, 0] {
                put_uv(b, v);
            }
        }));
        let in_process_1 = record(T_EVENTS, |b| {
            for v in [100_000u64, 1, (1 << 2) | E_SAMPLE as u64, 0] {
                put_uv(b, v);
            }
            put_sv(b, 0);
            put_uv(b, 0);
            put_uv(b, 1);
            for v in [0, deep + 1, 0, 0] {
                put_uv(b, v);
            }
        });
        lie.push(in_process_1);
        let mut file = valid();
        file.extend_from_slice(&lie.concat());
        let rec = Recording::parse(&file).unwrap();
        match rec.damage {
            Some(Damage::Corrupt { what, .. }) => assert!(what.contains("MiB of names"), "{what}"),
            other => panic!("budget not enforced: {other:?}"),
        }
        // The first use of the stack is kept.
        assert_eq!(rec.samples.len(), 6);
    }

    #[test]
    fn time_never_goes_backwards() {
        // The valid file's last event is at 40 ms.
        assert_damage(&sample(39_999, 0, &[(0, 0)]), "time goes backwards");
        assert_damage(&sample(0, 0, &[(0, 0)]), "time goes backwards");
        assert_damage(&sample(MAX_TIME_US, 0, &[(0, 0)]), "impossible time");
        let mut file = valid();
        file.extend_from_slice(&sample(40_000, 0, &[(0, 0)]));
        assert_eq!(Recording::parse(&file).unwrap().damage, None);
        // A process that ends before it starts, or twice.
        let end = |time: u64| {
            record(T_PROCESS_END, |b| {
                put_uv(b, 1);
                put_uv(b, time);
                b.push(0);
                put_sv(b, 0);
            })
        };
        assert_damage(
            &[process(1, 43, 1, 50_000), end(49_999)].concat(),
            "ends before",
        );
        assert_damage(
            &[process(1, 43, 1, 50_000), end(60_000), end(70_000)].concat(),
            "ends twice",
        );
    }

    #[test]
    fn samples_name_defined_threads_and_stacks() {
        assert_damage(&sample(50_000, 0, &[(7, 0)]), "undefined thread 7");
        assert_damage(&sample(50_000, 0, &[(0, 1)]), "undefined stack 1");
        assert_damage(
            &sample(50_000, 0, &[(0, u32::MAX as u64 - 1)]),
            "undefined stack",
        );
        // A thread count far above any sample's, with no threads following it.
        let huge = record(T_EVENTS, |b| {
            for v in [50_000u64, 1, 0, 0] {
                put_uv(b, v);
            }
            put_sv(b, 0);
            put_uv(b, 0);
            put_uv(b, u32::MAX as u64);
        });
        assert_damage(&huge, "4294967295 threads");
        // The recorder can give a thread just started its creator's slot: the same slot twice
        // in one sample is read.
        let mut file = valid();
        file.extend_from_slice(&sample(50_000, 0, &[(0, 0), (0, 0)]));
        let rec = Recording::parse(&file).unwrap();
        assert_eq!(rec.damage, None);
        assert_eq!(rec.threads_of(&rec.samples[5]).len(), 2);
    }

    #[test]
    fn nothing_of_a_lying_events_record_is_kept() {
        // One events record: a good sample, then one of an undefined stack.
        let lie = record(T_EVENTS, |b| {
            put_uv(b, 50_000);
            put_uv(b, 2);
            for stack in [0u64, 9] {
                for v in [E_SAMPLE as u64, 10, 0] {
                    put_uv(b, v);
                }
                put_uv(b, 0); // native faults
                put_uv(b, 1);
                for v in [0, stack + 1, 0, 0] {
                    put_uv(b, v);
                }
            }
        });
        assert_damage(&lie, "undefined stack 9");
    }

    #[test]
    fn memory_sizes_are_bounded() {
        // RSS is 100 MiB = 102400 KiB: going below zero or above the bound is a lie.
        assert_damage(
            &sample(50_000, -102_401, &[(0, 0)]),
            "impossible memory size",
        );
        assert_damage(
            &sample(50_000, MAX_MEMORY_KIB as i64, &[(0, 0)]),
            "impossible memory size",
        );
        assert_damage(&sample(50_000, i64::MAX, &[(0, 0)]), "malformed events");
        let reading = record(T_EVENTS, |b| {
            for v in [50_000u64, 1, E_MEMORY as u64, 0] {
                put_uv(b, v);
            }
            b.push(MemoryKind::Pss as u8);
            put_uv(b, u64::MAX);
        });
        assert_damage(&reading, "impossible memory size");
    }

    #[test]
    fn line_numbers_fit_in_i32() {
        let frame = |line: i64| {
            record(T_FRAME, |b| {
                put_uv(b, 1);
                put_uv(b, 0);
                put_sv(b, line);
            })
        };
        assert_damage(&frame(1 << 31), "impossible line number");
        assert_damage(&frame(-(1 << 40)), "impossible line number");
        let function = record(T_FUNCTION, |b| {
            for v in [1, 0, 0, 0] {
                put_uv(b, v);
            }
            put_sv(b, 1 << 33);
        });
        assert_damage(&function, "impossible line number");
        // The largest one is a line number (reports must cope with it).
        let mut file = valid();
        file.extend_from_slice(&frame(i32::MAX as i64));
        assert_eq!(Recording::parse(&file).unwrap().frames[1].line, i32::MAX);
    }

    #[test]
    fn one_description_only() {
        let meta = record(T_META, |b| b.extend_from_slice(b"{}"));
        assert_damage(&meta, "a second description");
    }

    /// A file whose description is `json`.
    fn with_meta(json: &str) -> std::result::Result<Recording, String> {
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&VERSION.to_le_bytes());
        file.extend_from_slice(&0u32.to_le_bytes());
        file.extend_from_slice(&record(T_META, |b| b.extend_from_slice(json.as_bytes())));
        Recording::parse(&file)
    }

    #[test]
    fn an_impossible_description_makes_the_file_unreadable() {
        let meta = |rate: &str, memory: &str| {
            format!(
                r#"{{"memspy_version":"x","start_unix_ns":0,"command":[],"rate_hz":{rate},"blocking":true,"memory":"{memory}","subprocesses":false}}"#
            )
        };
        assert!(with_meta(&meta("100.0", "rss")).is_ok());
        assert!(with_meta(&meta("1000000", "pss")).is_ok());
        for (rate, memory) in [
            ("1e300", "rss"),
            ("1000001", "rss"),
            ("0", "rss"),
            ("-1", "rss"),
            ("1e400", "rss"),
            ("null", "rss"),
            ("100", "swap"),
        ] {
            let e = with_meta(&meta(rate, memory)).unwrap_err();
            assert!(e.starts_with("damaged recording: "), "{rate} {memory}: {e}");
        }
        // serde's message quotes the value it did not expect: it is cut short.
        let long = format!(r#"{{"memspy_version":{}}}"#, "1".repeat(100_000));
        let e = with_meta(&long).unwrap_err();
        assert!(e.starts_with("damaged recording: ") && e.len() < 300, "{e}");
        let e = with_meta(&meta("100", &"x".repeat(100_000))).unwrap_err();
        assert!(e.len() < 300, "{e}");
        let e = with_meta(r#"{"start_unix_ns":18446744073709551615,"rate_hz":1,"memory":"rss"}"#);
        assert!(e.is_err());
    }

    #[test]
    fn accessors_never_index_out_of_bounds() {
        let rec = Recording::parse(&valid()).unwrap();
        assert_eq!(rec.stack_frames(99).count(), 0);
        let forged = Sample {
            first_thread: u32::MAX,
            threads: u32::MAX,
            ..rec.samples[0]
        };
        assert!(rec.threads_of(&forged).is_empty());
        let mut backwards = rec.clone();
        backwards.samples.swap(0, 4);
        assert_eq!(backwards.duration_us(), 0);
    }
}
