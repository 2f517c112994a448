//! Sampling one process: its memory, its Python threads' stacks, and each thread's CPU time and
//! page faults since the previous sample, joined into one sample for the recording.

use std::collections::HashMap;
use std::io;

use crate::error::Error;
use crate::python::{Frame, Snapshot, StackReader, WalkError};
use crate::recording::format::{FLAG_ACTIVE, FLAG_GIL};
use crate::recording::writer::{ProcessDef, ThreadEntry};
use crate::recording::{EndReason, FailureKind, MemoryKind, Writer};
use crate::target::family::ProcessKey;
use crate::target::procfs::{self, ProcFile};
use crate::target::{lock, ProcessMemory};

/// How one sampling attempt went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sampled,
    Failed(FailureKind),
    /// The series is over (the process exited or replaced its program).
    Ended(EndReason),
}

/// A thread as the sampler tracks it.
struct ThreadState {
    slot: u32,
    stat: Option<ProcFile>,
    schedstat: Option<ProcFile>,
    cpu_ns: u64,
    minflt: u64,
    minflt_reported: u64,
    running: bool,
    last_frames: Vec<Frame>,
    last_stack: Option<u32>,
    last_seen: u64,
}

impl ThreadState {
    /// Re-read the thread's counters (one `pread` per file).
    fn refresh(&mut self) {
        if let Some(f) = self.stat.as_mut() {
            if let Some(s) = f.read().ok().and_then(procfs::parse_stat) {
                self.minflt = s.minflt;
                self.running = s.is_running();
            }
        }
        if let Some(f) = self.schedstat.as_mut() {
            if let Some(ns) = f.read().ok().and_then(procfs::parse_schedstat) {
                self.cpu_ns = ns;
            }
        }
    }
}

/// Everything needed to sample one Python process.
pub struct ProcessSampler {
    pub key: ProcessKey,
    /// The process's id in the recording.
    pub id: u32,
    /// The recording id of its parent.
    pub parent: Option<u32>,
    pub exe: String,
    pub command: String,
    pub python: String,
    reader: StackReader<ProcessMemory>,
    snapshot: Snapshot,
    statm: ProcFile,
    /// The process's own `stat`: its minor page faults, all threads together.
    stat: Option<ProcFile>,
    /// Process-wide minor faults at the previous sample, and since then.
    process_minflt: Option<u64>,
    process_minflt_delta: u64,
    status: Option<ProcFile>,
    rollup: Option<ProcFile>,
    page_size: u64,
    /// By kernel thread id (or pthread id, negated, when the kernel id is unknown).
    threads: HashMap<i64, ThreadState>,
    /// Code object ids of the reader -> function ids of the recording.
    functions: Vec<Option<u32>>,
    scratch_frames: Vec<u32>,
    entries: Vec<ThreadEntry>,
    /// Kernel ids of the threads that ran Python at the previous sample (stopped in blocking mode).
    python_tids: Vec<i32>,
    ticks: u64,
    /// Failed samples by kind (raced, exited, fatal).
    pub failures: [u64; 3],
    pub samples: u64,
    pub last_rss: u64,
    consecutive_fatal: u32,
}

impl ProcessSampler {
    /// Prepare to sample `key.pid`, whose interpreter `reader` reads; defines the process in
    /// the recording (`parent`: the recording id of its parent).
    pub fn start(
        key: ProcessKey,
        reader: StackReader<ProcessMemory>,
        parent: Option<u32>,
        time_us: u64,
        writer: &mut Writer,
    ) -> Result<ProcessSampler, Error> {
        let pid = key.pid;
        let statm = ProcFile::open(format!("/proc/{pid}/statm"), 256)
            .map_err(|e| Error::proc_io(pid, e))?;
        let status = ProcFile::open(format!("/proc/{pid}/status"), 4096).ok();
        let exe = procfs::exe(pid)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let command = procfs::cmdline(pid).unwrap_or_default();
        let python = reader.layout.version.to_string();
        let id = writer
            .process_start(&ProcessDef {
                pid,
                starttime: key.starttime,
                parent,
                time_us,
                command: &command,
                exe: &exe,
                python: &python,
            })
            .map_err(|e| Error::io("writing the recording", e))?;
        Ok(ProcessSampler {
            key,
            id,
            parent,
            exe,
            command,
            python,
            reader,
            snapshot: Snapshot::default(),
            statm,
            stat: ProcFile::open(format!("/proc/{pid}/stat"), 1024).ok(),
            process_minflt: None,
            process_minflt_delta: 0,
            status,
            rollup: None,
            page_size: procfs::page_size(),
            threads: HashMap::new(),
            functions: Vec::new(),
            scratch_frames: Vec::new(),
            entries: Vec::new(),
            python_tids: Vec::new(),
            ticks: 0,
            failures: [0; 3],
            samples: 0,
            last_rss: 0,
            consecutive_fatal: 0,
        })
    }

    /// Take one sample and write it (or its failure).
    pub fn sample(
        &mut self,
        writer: &mut Writer,
        time_us: u64,
        blocking: bool,
    ) -> io::Result<Outcome> {
        self.ticks += 1;
        let pid = self.key.pid;
        let rss = match self
            .statm
            .read()
            .ok()
            .and_then(|b| procfs::parse_statm_rss(b, self.page_size))
        {
            Some(rss) if rss > 0 => rss,
            _ => {
                return self.record_failure(
                    writer,
                    time_us,
                    self.gone_or(Outcome::Failed(FailureKind::Exited)),
                )
            }
        };
        self.last_rss = rss;
        if let Some(now) = self
            .stat
            .as_mut()
            .and_then(|f| f.read().ok().and_then(procfs::parse_stat))
        {
            self.process_minflt_delta = self
                .process_minflt
                .map_or(0, |before| now.minflt.saturating_sub(before));
            self.process_minflt = Some(now.minflt);
        }
        // Counters first: a stopped thread would read as not running.
        for t in self.threads.values_mut() {
            t.refresh();
        }
        let walked = {
            let stopped = match blocking && !self.python_tids.is_empty() {
                true => lock::stop_threads(pid, &self.python_tids).ok(),
                false => None,
            };
            let walked = self.reader.read(&mut self.snapshot);
            drop(stopped);
            walked
        };
        if let Err(e) = walked {
            let outcome = match e {
                WalkError::Exited => self.gone_or(Outcome::Failed(FailureKind::Exited)),
                WalkError::Denied => Outcome::Failed(FailureKind::Fatal),
                WalkError::Raced(_) => self.exec_or(Outcome::Failed(FailureKind::Raced)),
            };
            return self.record_failure(writer, time_us, outcome);
        }
        self.consecutive_fatal = 0;
        self.join(writer, time_us)?;
        self.samples += 1;
        Ok(Outcome::Sampled)
    }

    /// Turn the snapshot into a sample: thread slots, stack ids, counters.
    fn join(&mut self, writer: &mut Writer, time_us: u64) -> io::Result<()> {
        let pid = self.key.pid;
        self.entries.clear();
        self.python_tids.clear();
        for t in &self.snapshot.threads {
            let key = t.native_id.map_or(-(t.thread_id as i64), |tid| tid as i64);
            if let Some(tid) = t.native_id {
                self.python_tids.push(tid);
            }
            let state = match self.threads.get_mut(&key) {
                Some(s) => s,
                None => {
                    let tid = t.native_id.unwrap_or(0);
                    let name = procfs::thread_name(pid, tid).unwrap_or_default();
                    let slot = writer.thread(self.id, tid, &name)?;
                    let open = |file: &str| {
                        ProcFile::open(format!("/proc/{pid}/task/{tid}/{file}"), 1024).ok()
                    };
                    let mut state = ThreadState {
                        slot,
                        stat: t.native_id.and_then(|_| open("stat")),
                        schedstat: t.native_id.and_then(|_| open("schedstat")),
                        cpu_ns: 0,
                        minflt: 0,
                        minflt_reported: 0,
                        running: false,
                        last_frames: Vec::new(),
                        last_stack: None,
                        last_seen: 0,
                    };
                    state.refresh();
                    state.minflt_reported = state.minflt;
                    self.threads.entry(key).or_insert(state)
                }
            };
            state.last_seen = self.ticks;
            let frames = self.snapshot.frames_of(t);
            if frames != state.last_frames.as_slice() || state.last_frames.is_empty() {
                // A new stack: map its frames to the recording's ids (outermost first).
                self.scratch_frames.clear();
                for f in frames.iter().rev() {
                    let code = f.code as usize;
                    if self.functions.len() <= code {
                        self.functions.resize(code + 1, None);
                    }
                    let function = match self.functions[code] {
                        Some(id) => id,
                        None => {
                            let info = self.reader.code_info(f.code);
                            let id = writer.function(
                                &info.name,
                                &info.qualname,
                                &info.filename,
                                info.firstlineno,
                            )?;
                            self.functions[code] = Some(id);
                            id
                        }
                    };
                    self.scratch_frames.push(writer.frame(function, f.line)?);
                }
                state.last_stack = writer.stack(self.scratch_frames.iter().copied())?;
                state.last_frames.clear();
                state.last_frames.extend_from_slice(frames);
            }
            let mut flags = 0;
            if t.holds_gil {
                flags |= FLAG_GIL;
            }
            if state.running {
                flags |= FLAG_ACTIVE;
            }
            let minflt = state.minflt.saturating_sub(state.minflt_reported);
            state.minflt_reported = state.minflt;
            self.entries.push(ThreadEntry {
                slot: state.slot,
                stack: state.last_stack,
                flags,
                cpu_ns_total: state.cpu_ns,
                minflt,
            });
        }
        // Forget threads that are gone (their files are closed with them).
        let now = self.ticks;
        self.threads.retain(|_, t| now - t.last_seen < 10);
        // Faults of the process that its Python threads did not make: threads that never run
        // Python (native pools, C extensions' workers).
        let python: u64 = self.entries.iter().map(|e| e.minflt).sum();
        let native = self.process_minflt_delta.saturating_sub(python);
        writer.sample(self.id, time_us, self.last_rss, native, &self.entries)
    }

    /// Read the memory numbers taken less often: RSS split (status) and, when asked, PSS/USS
    /// (smaps_rollup, which costs milliseconds on large processes). Returns the time the
    /// rollup read took, in µs.
    pub fn sample_memory_split(
        &mut self,
        writer: &mut Writer,
        time_us: u64,
        rollup: bool,
    ) -> io::Result<Option<u64>> {
        if let Some(f) = self.status.as_mut() {
            if let Some(split) = f
                .read()
                .ok()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(procfs::parse_status_rss)
            {
                writer.memory(self.id, time_us, MemoryKind::RssAnon, split.anon)?;
                writer.memory(self.id, time_us, MemoryKind::RssFile, split.file)?;
                writer.memory(self.id, time_us, MemoryKind::RssShmem, split.shmem)?;
            }
        }
        if !rollup {
            return Ok(None);
        }
        if self.rollup.is_none() {
            self.rollup = ProcFile::open(format!("/proc/{}/smaps_rollup", self.key.pid), 4096).ok();
        }
        let started = std::time::Instant::now();
        let read = self.rollup.as_mut().and_then(|f| {
            f.read().ok().and_then(|b| {
                std::str::from_utf8(b)
                    .ok()
                    .and_then(procfs::parse_smaps_rollup)
            })
        });
        let cost = started.elapsed().as_micros() as u64;
        if let Some(r) = read {
            writer.memory(self.id, time_us, MemoryKind::Pss, r.pss)?;
            writer.memory(self.id, time_us, MemoryKind::Uss, r.uss)?;
        }
        Ok(Some(cost))
    }

    /// Count and record a failed sample (an ended series is not a failure).
    fn record_failure(
        &mut self,
        writer: &mut Writer,
        time_us: u64,
        outcome: Outcome,
    ) -> io::Result<Outcome> {
        if let Outcome::Failed(kind) = outcome {
            self.failures[kind as usize] += 1;
            self.consecutive_fatal = if kind == FailureKind::Fatal {
                self.consecutive_fatal + 1
            } else {
                0
            };
            if self.consecutive_fatal >= 100 {
                return Ok(Outcome::Ended(EndReason::Lost));
            }
            writer.failure(self.id, time_us, kind)?;
        }
        Ok(outcome)
    }

    /// `otherwise`, unless the process is gone.
    fn gone_or(&self, otherwise: Outcome) -> Outcome {
        if self.key.alive() {
            otherwise
        } else {
            Outcome::Ended(EndReason::Exited)
        }
    }

    /// `otherwise`, unless the process replaced its program (exec) or is gone.
    fn exec_or(&self, otherwise: Outcome) -> Outcome {
        if !self.key.alive() {
            return Outcome::Ended(EndReason::Exited);
        }
        match procfs::exe(self.key.pid) {
            Ok(exe) if exe.to_string_lossy() != self.exe => Outcome::Ended(EndReason::Exec),
            _ => otherwise,
        }
    }

    pub fn failed(&self) -> u64 {
        self.failures.iter().sum()
    }
}
