//! Writing a recording as it happens (see [`super::format`] for the layout).
//!
//! Definitions (strings, functions, frames, stacks, processes, threads) are written as they
//! first appear; samples and other events collect in an in-memory batch that becomes one
//! `Events` record at least once a second, after the definitions it uses. Each flush hands
//! whole records to the kernel, so a crash of memspy loses at most the last second.
//!
//! The first write error (a full disk) stops all writing: the file keeps every record written
//! before it and stays readable; the error is returned from that call and from [`Writer::finish`].

use std::collections::HashMap;

use crate::FastMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use super::format::*;

/// Longest time samples wait in memory before they are written.
pub const FLUSH_INTERVAL_US: u64 = 1_000_000;
/// Size at which a batch is written early.
const MAX_BATCH: usize = 256 << 10;

/// A thread's part of one sample, as the writer takes it.
#[derive(Clone, Copy, Debug)]
pub struct ThreadEntry {
    /// Thread slot from [`Writer::thread`].
    pub slot: u32,
    /// Stack id from [`Writer::stack`], or None when the thread had no Python frames.
    pub stack: Option<u32>,
    pub flags: u8,
    /// The thread's total CPU time so far, in nanoseconds (the writer stores differences).
    pub cpu_ns_total: u64,
    /// Minor page faults since the thread's previous sample.
    pub minflt: u64,
}

/// A memory event of a thread (see `sample::events`), as the writer takes it.
#[derive(Clone, Copy, Debug)]
pub struct MemoryEventEntry {
    pub slot: u32,
    pub stack: Option<u32>,
    pub rss_bytes: u64,
    /// Kernel records since the thread's previous memory event.
    pub faults: u64,
    pub frees: u64,
    pub delay_us: u64,
    /// The stack was read at the event (else it is the thread's stack at its last tick).
    pub fresh: bool,
    /// Of `faults` and `frees`, how many are estimated to have happened before the thread's
    /// stack changed from the one memspy read last (see `sample::process`).
    pub faults_before: u64,
    pub frees_before: u64,
}

/// What the memory events of a recording were, for `info`.
#[derive(Clone, Debug, Default)]
pub struct MemoryEventsSummary {
    /// "faults and frees", "faults" or "off: <why>".
    pub mode: String,
    pub period: u64,
    pub samples: u64,
    pub faults: u64,
    pub frees: u64,
    pub lost: u64,
    pub failed: u64,
    pub max_period: u64,
    pub delay_p50_us: u64,
    pub delay_p99_us: u64,
}

/// What a process record says.
#[derive(Clone, Debug)]
pub struct ProcessDef<'a> {
    pub pid: i32,
    pub starttime: u64,
    pub parent: Option<u32>,
    pub time_us: u64,
    pub command: &'a str,
    pub exe: &'a str,
    pub python: &'a str,
    /// Its working directory when found ("" when unknown): reports name files under it
    /// relative to it.
    pub cwd: &'a str,
}

#[derive(Default)]
struct ProcessState {
    last_rss_kib: i64,
}

/// Writes one recording.
pub struct Writer {
    out: BufWriter<File>,
    record: Vec<u8>,
    batch: Vec<u8>,
    batch_events: u32,
    batch_base_us: u64,
    last_event_us: u64,
    /// When records were last handed to the kernel, and how often they are.
    last_flush_us: u64,
    flush_interval_us: u64,
    strings: FastMap<Arc<str>, u32>,
    functions: FastMap<(u32, u32, u32, i32), u32>,
    frames: FastMap<(u32, i32), u32>,
    stacks: FastMap<(u32, u32), u32>,
    next_stack: u32,
    processes: Vec<ProcessState>,
    /// Per (process, slot): CPU time at the previous sample (µs) and the stack then.
    thread_last: FastMap<(u32, u32), (u64, Option<u32>)>,
    threads_per_process: HashMap<u32, u32>,
    tasks_per_process: HashMap<u32, u32>,
    pub samples: u64,
    pub bytes_written: u64,
    /// The first write error (its kind and message): nothing is written after it.
    failed: Option<(io::ErrorKind, String)>,
    /// The file is readable by its owner only.
    private: bool,
    /// The description, and every definition record written so far (strings, functions,
    /// frames, stacks, processes, threads, tasks, sources) as framed bytes: what a new file
    /// of a rotated recording starts with.
    meta: Meta,
    definitions: Vec<u8>,
}

/// Whether records of type `kind` define something later records refer to.
fn is_definition(kind: u8) -> bool {
    !matches!(kind, T_META | T_EVENTS | T_STATS | T_END | T_MEMORY_EVENTS)
}

impl Writer {
    /// Create the file and write the header and `meta`.
    pub fn create(path: &Path, meta: &Meta) -> io::Result<Writer> {
        let file = File::create(path)?;
        let mut w = Writer {
            out: BufWriter::with_capacity(1 << 20, file),
            record: Vec::with_capacity(4096),
            batch: Vec::with_capacity(MAX_BATCH + 4096),
            batch_events: 0,
            batch_base_us: 0,
            last_event_us: 0,
            last_flush_us: 0,
            flush_interval_us: FLUSH_INTERVAL_US,
            strings: FastMap::default(),
            functions: FastMap::default(),
            frames: FastMap::default(),
            stacks: FastMap::default(),
            next_stack: 0,
            processes: Vec::new(),
            thread_last: FastMap::default(),
            threads_per_process: HashMap::new(),
            tasks_per_process: HashMap::new(),
            samples: 0,
            bytes_written: 0,
            failed: None,
            private: false,
            meta: meta.clone(),
            definitions: Vec::new(),
        };
        w.write_head()?;
        w.out.flush()?;
        Ok(w)
    }

    /// Write the header and the description (at the start of a file).
    fn write_head(&mut self) -> io::Result<()> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        self.out.write_all(&header)?;
        self.bytes_written += header.len() as u64;
        let json = serde_json::to_vec(&self.meta).map_err(io::Error::other)?;
        self.begin(T_META);
        self.record.extend_from_slice(&json);
        self.end_record()
    }

    /// End this file (as `finish` does) and go on in a new one at `path`, part `part` of the
    /// recording: it starts with the description and every definition so far, so it reads on
    /// its own. Per-file state starts again: the sample count, and the deltas samples are
    /// written against (RSS, each thread's previous stack).
    pub fn rotate(&mut self, path: &Path, part: u32) -> io::Result<()> {
        self.end_file()?;
        let file = File::create(path)?;
        if self.private {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        self.out = BufWriter::with_capacity(1 << 20, file);
        self.bytes_written = 0;
        self.samples = 0;
        self.meta.part = Some(part);
        self.write_head()?;
        self.out.write_all(&self.definitions)?;
        self.bytes_written += self.definitions.len() as u64;
        for p in &mut self.processes {
            p.last_rss_kib = 0;
        }
        // No stack id is u32::MAX: every thread's next sample names its stack.
        for last in self.thread_last.values_mut() {
            last.1 = Some(u32::MAX);
        }
        self.out.flush()
    }

    fn begin(&mut self, kind: u8) {
        self.record.clear();
        self.record.push(kind);
    }

    /// Frame `self.record` as a record and hand it to the buffered file.
    fn end_record(&mut self) -> io::Result<()> {
        if let Some((kind, cause)) = &self.failed {
            return Err(io::Error::new(
                *kind,
                format!("the recording stopped at an earlier write error: {cause}"),
            ));
        }
        let len = self.record.len() as u32;
        let crc = crc32fast::hash(&self.record);
        let result = self
            .out
            .write_all(&len.to_le_bytes())
            .and_then(|()| self.out.write_all(&self.record))
            .and_then(|()| self.out.write_all(&crc.to_le_bytes()));
        match result {
            Ok(()) => {
                self.bytes_written += 8 + self.record.len() as u64;
                if is_definition(self.record[0]) {
                    self.definitions.extend_from_slice(&len.to_le_bytes());
                    self.definitions.extend_from_slice(&self.record);
                    self.definitions.extend_from_slice(&crc.to_le_bytes());
                }
                Ok(())
            }
            Err(e) => {
                self.failed = Some((e.kind(), e.to_string()));
                Err(e)
            }
        }
    }

    /// The id of a string, defining it on first use.
    pub fn string(&mut self, s: &str) -> io::Result<u32> {
        if let Some(&id) = self.strings.get(s) {
            return Ok(id);
        }
        let id = self.strings.len() as u32;
        self.begin(T_STRING);
        put_uv(&mut self.record, id as u64);
        put_str(&mut self.record, s);
        self.end_record()?;
        self.strings.insert(Arc::from(s), id);
        Ok(id)
    }

    /// The id of a function, defining it on first use.
    pub fn function(
        &mut self,
        name: &str,
        qualname: &str,
        file: &str,
        firstlineno: i32,
    ) -> io::Result<u32> {
        let key = (
            self.string(name)?,
            self.string(qualname)?,
            self.string(file)?,
            firstlineno,
        );
        if let Some(&id) = self.functions.get(&key) {
            return Ok(id);
        }
        let id = self.functions.len() as u32;
        self.begin(T_FUNCTION);
        for v in [id, key.0, key.1, key.2] {
            put_uv(&mut self.record, v as u64);
        }
        put_sv(&mut self.record, firstlineno as i64);
        self.end_record()?;
        self.functions.insert(key, id);
        Ok(id)
    }

    /// The id of a (function, line) frame.
    pub fn frame(&mut self, function: u32, line: i32) -> io::Result<u32> {
        if let Some(&id) = self.frames.get(&(function, line)) {
            return Ok(id);
        }
        let id = self.frames.len() as u32;
        self.begin(T_FRAME);
        put_uv(&mut self.record, id as u64);
        put_uv(&mut self.record, function as u64);
        put_sv(&mut self.record, line as i64);
        self.end_record()?;
        self.frames.insert((function, line), id);
        Ok(id)
    }

    /// The id of a stack given by frame ids from the outermost to the innermost; None for an
    /// empty stack.
    pub fn stack(
        &mut self,
        outermost_first: impl IntoIterator<Item = u32>,
    ) -> io::Result<Option<u32>> {
        let mut node: Option<u32> = None;
        for frame in outermost_first {
            let parent = node.map_or(0, |n| n + 1);
            node = Some(match self.stacks.get(&(parent, frame)) {
                Some(&id) => id,
                None => {
                    let id = self.next_stack;
                    self.next_stack += 1;
                    self.begin(T_STACK);
                    put_uv(&mut self.record, id as u64);
                    put_uv(&mut self.record, parent as u64);
                    put_uv(&mut self.record, frame as u64);
                    self.end_record()?;
                    self.stacks.insert((parent, frame), id);
                    id
                }
            });
        }
        Ok(node)
    }

    /// Define a process; returns its id in the recording.
    pub fn process_start(&mut self, p: &ProcessDef) -> io::Result<u32> {
        let id = self.processes.len() as u32;
        let (command, exe, python) = (
            self.string(p.command)?,
            self.string(p.exe)?,
            self.string(p.python)?,
        );
        let cwd = match p.cwd {
            "" => 0,
            cwd => self.string(cwd)? + 1,
        };
        self.flush_batch()?;
        self.begin(T_PROCESS_START);
        for v in [
            id as u64,
            p.pid as u64,
            p.starttime,
            p.parent.map_or(0, |x| x as u64 + 1),
            p.time_us,
        ] {
            put_uv(&mut self.record, v);
        }
        for s in [command, exe, python, cwd] {
            put_uv(&mut self.record, s as u64);
        }
        self.end_record()?;
        self.processes.push(ProcessState::default());
        Ok(id)
    }

    /// A process's series ended (`exit`: its exit status when known).
    pub fn process_end(
        &mut self,
        process: u32,
        time_us: u64,
        reason: EndReason,
        exit: Option<i32>,
    ) -> io::Result<()> {
        self.flush_batch()?;
        self.begin(T_PROCESS_END);
        put_uv(&mut self.record, process as u64);
        put_uv(&mut self.record, time_us);
        self.record.push(reason as u8);
        put_sv(&mut self.record, exit.map_or(-1, |e| e as i64));
        self.end_record()
    }

    /// Define a thread of a process; returns its slot. `tid` is the kernel (host) thread id,
    /// 0 when the id the target's memory gave (`claimed`) names no thread of the target.
    pub fn thread(
        &mut self,
        process: u32,
        tid: i32,
        claimed: Option<i32>,
        name: &str,
    ) -> io::Result<u32> {
        let name = self.string(name)?;
        let count = self.threads_per_process.entry(process).or_insert(0);
        let slot = *count;
        *count += 1;
        self.begin(T_THREAD);
        for v in [process, slot, tid as u32, name] {
            put_uv(&mut self.record, v as u64);
        }
        put_uv(
            &mut self.record,
            claimed.map_or(0, |c| (c as u32) as u64 + 1),
        );
        self.end_record()?;
        Ok(slot)
    }

    /// A thread defined with tid 0 (its claimed id unproven) was proven to be kernel thread
    /// `tid` after all.
    pub fn thread_proven(&mut self, process: u32, slot: u32, tid: i32) -> io::Result<()> {
        self.begin(T_THREAD_ID);
        for v in [process, slot, tid as u32] {
            put_uv(&mut self.record, v as u64);
        }
        self.end_record()
    }

    /// Thread `slot` of `process` has this Python name (first found, or changed).
    pub fn thread_name(&mut self, process: u32, slot: u32, name: &str) -> io::Result<()> {
        let name = self.string(name)?;
        self.begin(T_THREAD_NAME);
        for v in [process, slot, name] {
            put_uv(&mut self.record, v as u64);
        }
        self.end_record()
    }

    /// A greenlet or asyncio task of `process`, on thread `thread` (a slot) if known. Returns
    /// its id within the process.
    pub fn task(
        &mut self,
        process: u32,
        kind: TaskKind,
        thread: Option<u32>,
        address: u64,
        name: &str,
    ) -> io::Result<u32> {
        let name = self.string(name)?;
        let count = self.tasks_per_process.entry(process).or_insert(0);
        let id = *count;
        *count += 1;
        self.begin(T_TASK);
        put_uv(&mut self.record, process as u64);
        put_uv(&mut self.record, id as u64);
        self.record.push(kind as u8);
        put_uv(&mut self.record, thread.map_or(0, |t| t as u64 + 1));
        put_uv(&mut self.record, address);
        put_uv(&mut self.record, name as u64);
        self.end_record()?;
        Ok(id)
    }

    /// Tasks of `process` whose state changed at its sample at `time_us` (written right after
    /// that sample): (task id, state code as in the format's tasks event).
    pub fn task_states(
        &mut self,
        process: u32,
        time_us: u64,
        changes: &[(u32, u64)],
    ) -> io::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.event(E_EXTENDED, process, time_us);
        self.batch.push(X_TASKS);
        put_uv(&mut self.batch, changes.len() as u64);
        for &(task, state) in changes {
            put_uv(&mut self.batch, task as u64);
            put_uv(&mut self.batch, state);
        }
        self.flush_if_due(time_us)
    }

    fn event(&mut self, tag: u8, process: u32, time_us: u64) {
        if self.batch_events == 0 {
            self.batch_base_us = time_us;
            self.last_event_us = time_us;
        }
        // Events are written in time order; a clock that went backwards counts as no time.
        let dt = time_us.saturating_sub(self.last_event_us);
        self.last_event_us = self.last_event_us.max(time_us);
        put_uv(&mut self.batch, (process as u64) << 2 | tag as u64);
        put_uv(&mut self.batch, dt);
        self.batch_events += 1;
    }

    /// One sample of a process: its RSS and its Python threads.
    /// `native_minflt`: minor page faults since the previous sample by the process's threads
    /// that are not among `threads` (threads that never run Python).
    pub fn sample(
        &mut self,
        process: u32,
        time_us: u64,
        rss_bytes: u64,
        native_minflt: u64,
        threads: &[ThreadEntry],
    ) -> io::Result<()> {
        self.event(E_SAMPLE, process, time_us);
        let rss_kib = (rss_bytes / 1024) as i64;
        let state = &mut self.processes[process as usize];
        put_sv(&mut self.batch, rss_kib - state.last_rss_kib);
        state.last_rss_kib = rss_kib;
        put_uv(&mut self.batch, native_minflt);
        put_uv(&mut self.batch, threads.len() as u64);
        for t in threads {
            let cpu_us = t.cpu_ns_total / 1000;
            let previous = self
                .thread_last
                .insert((process, t.slot), (cpu_us, t.stack));
            let same = previous.is_some_and(|p| p.1 == t.stack);
            let head =
                (t.slot as u64) << 3 | if same { SAME_STACK } else { 0 } | (t.flags & 3) as u64;
            put_uv(&mut self.batch, head);
            if !same {
                put_uv(&mut self.batch, t.stack.map_or(0, |s| s as u64 + 1));
            }
            put_uv(
                &mut self.batch,
                cpu_us.saturating_sub(previous.map_or(cpu_us, |p| p.0)),
            );
            put_uv(&mut self.batch, t.minflt);
        }
        self.samples += 1;
        self.flush_if_due(time_us)
    }

    /// A memory event of a thread of `process`: its stack right after the kernel said it
    /// faulted or freed memory, and the process's RSS then.
    pub fn memory_event(
        &mut self,
        process: u32,
        time_us: u64,
        e: &MemoryEventEntry,
    ) -> io::Result<()> {
        self.event(E_EXTENDED, process, time_us);
        self.batch.push(X_MEMORY_EVENT);
        put_uv(&mut self.batch, e.slot as u64);
        put_uv(&mut self.batch, e.stack.map_or(0, |s| s as u64 + 1));
        let rss_kib = (e.rss_bytes / 1024) as i64;
        let state = &mut self.processes[process as usize];
        put_sv(&mut self.batch, rss_kib - state.last_rss_kib);
        state.last_rss_kib = rss_kib;
        for v in [
            e.faults,
            e.frees,
            e.delay_us,
            if e.fresh { FRESH_STACK } else { 0 },
            e.faults_before.min(e.faults),
            e.frees_before.min(e.frees),
        ] {
            put_uv(&mut self.batch, v);
        }
        self.flush_if_due(time_us)
    }

    /// What the memory events have been so far (the last one written counts).
    pub fn memory_events(&mut self, m: &MemoryEventsSummary) -> io::Result<()> {
        self.flush_batch()?;
        self.begin(T_MEMORY_EVENTS);
        put_str(&mut self.record, &m.mode);
        for v in [
            m.period,
            m.samples,
            m.faults,
            m.frees,
            m.lost,
            m.failed,
            m.max_period,
            m.delay_p50_us,
            m.delay_p99_us,
        ] {
            put_uv(&mut self.record, v);
        }
        self.end_record()
    }

    /// A sample of `process` that could not be taken.
    pub fn failure(&mut self, process: u32, time_us: u64, kind: FailureKind) -> io::Result<()> {
        self.event(E_FAILURE, process, time_us);
        self.batch.push(kind as u8);
        self.flush_if_due(time_us)
    }

    /// A memory reading other than the per-sample RSS.
    pub fn memory(
        &mut self,
        process: u32,
        time_us: u64,
        kind: MemoryKind,
        bytes: u64,
    ) -> io::Result<()> {
        self.event(E_MEMORY, process, time_us);
        self.batch.push(kind as u8);
        put_uv(&mut self.batch, bytes / 1024);
        self.flush_if_due(time_us)
    }

    /// Cumulative schedule statistics (µs); written with the next batch.
    pub fn stats(
        &mut self,
        ticks: u64,
        missed: u64,
        late_max_us: u64,
        late_total_us: u64,
        busy_us: u64,
        (pauses, paused_total_us, paused_max_us): (u64, u64, u64),
    ) -> io::Result<()> {
        self.flush_batch()?;
        self.begin(T_STATS);
        for v in [
            ticks,
            missed,
            late_max_us,
            late_total_us,
            busy_us,
            pauses,
            paused_total_us,
            paused_max_us,
        ] {
            put_uv(&mut self.record, v);
        }
        self.end_record()
    }

    /// Hand records to the kernel at least every `us` (default [`FLUSH_INTERVAL_US`]): `top`
    /// reads the file as it is written.
    pub fn set_flush_interval(&mut self, us: u64) {
        self.flush_interval_us = us.max(1);
    }

    fn flush_if_due(&mut self, now_us: u64) -> io::Result<()> {
        if now_us.saturating_sub(self.last_flush_us) >= self.flush_interval_us {
            self.last_flush_us = now_us;
            self.flush()?;
        } else if self.batch.len() >= MAX_BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> io::Result<()> {
        if self.batch_events == 0 {
            return Ok(());
        }
        self.begin(T_EVENTS);
        put_uv(&mut self.record, self.batch_base_us);
        put_uv(&mut self.record, self.batch_events as u64);
        self.record.extend_from_slice(&self.batch);
        self.batch.clear();
        self.batch_events = 0;
        self.end_record()
    }

    /// Write pending events and hand everything to the kernel.
    pub fn flush(&mut self) -> io::Result<()> {
        self.flush_batch()?;
        self.out.flush().inspect_err(|e| {
            self.failed.get_or_insert((e.kind(), e.to_string()));
        })
    }

    /// Flush if the last flush is a second old (for periods without events).
    pub fn tick(&mut self, now_us: u64) -> io::Result<()> {
        self.flush_if_due(now_us)
    }

    /// The text of a source file, for per-line reports.
    pub fn source(&mut self, file: &str, text: &str) -> io::Result<()> {
        let id = self.string(file)?;
        self.flush_batch()?;
        self.begin(T_SOURCE);
        put_uv(&mut self.record, id as u64);
        put_str(&mut self.record, text);
        self.end_record()
    }

    /// Write the end record and close the file (synced to disk).
    pub fn finish(mut self) -> io::Result<u64> {
        self.end_file()?;
        Ok(self.bytes_written)
    }

    /// Write what is batched and the end record, and sync the file to disk.
    fn end_file(&mut self) -> io::Result<()> {
        self.flush_batch()?;
        self.begin(T_END);
        put_uv(&mut self.record, self.samples);
        self.end_record()?;
        self.out.flush()?;
        self.out.get_ref().sync_all()
    }

    /// Make the file readable by its owner only (it is about to hold another user's code and
    /// data).
    pub fn make_private(&mut self) -> io::Result<()> {
        if !self.private {
            use std::os::unix::fs::PermissionsExt;
            self.out
                .get_ref()
                .set_permissions(std::fs::Permissions::from_mode(0o600))?;
            self.private = true;
        }
        Ok(())
    }

    /// The size a new file of a rotated recording starts at: the header, the description and
    /// every definition so far.
    pub fn rotated_start_size(&self) -> u64 {
        HEADER_LEN as u64 + 4096 + self.definitions.len() as u64
    }

    /// The file's size once what is buffered is written.
    pub fn size(&self) -> u64 {
        self.bytes_written + self.batch.len() as u64
    }

    /// The interpreter of `process` was seen shutting down at `time_us` (written once).
    pub fn finalizing(&mut self, process: u32, time_us: u64) -> io::Result<()> {
        self.event(E_EXTENDED, process, time_us);
        self.batch.push(X_FINALIZING);
        self.flush_if_due(time_us)
    }

    /// Process `process` crossed a trigger's limit (`reason`: 0 RSS, 1 growth) at `time_us`,
    /// at `bytes`.
    pub fn trigger(
        &mut self,
        process: u32,
        time_us: u64,
        reason: u8,
        bytes: u64,
        limit: u64,
    ) -> io::Result<()> {
        self.event(E_EXTENDED, process, time_us);
        self.batch.push(X_TRIGGER);
        self.batch.push(reason);
        put_uv(&mut self.batch, bytes);
        put_uv(&mut self.batch, limit);
        self.flush_if_due(time_us)
    }

    /// The first write error, if any.
    pub fn failed(&self) -> Option<io::ErrorKind> {
        self.failed.as_ref().map(|f| f.0)
    }
}
