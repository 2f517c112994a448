//! Sampling one process: its memory, its Python threads' stacks, and each thread's CPU time and
//! page faults since the previous sample, joined into one sample for the recording.

use std::collections::{HashMap, HashSet};

use crate::FastMap;
use std::io;
use std::sync::Arc;

use super::clock::Clock;
use super::events::{adapted_period, thread_budget, MemoryEvents};
use crate::error::Error;
use crate::python::threadnames::ThreadNames;
use crate::python::units::{ThreadRef, UnitKind, UnitState, Units};
use crate::python::{Frame, Snapshot, StackReader, WalkError};
use crate::recording::format::{
    TaskKind, FLAG_ACTIVE, FLAG_GIL, TASK_ENDED, TASK_RUNNING, TASK_WAITING_AT,
    TASK_WAITING_NO_FRAMES,
};
use crate::recording::writer::{MemoryEventEntry, ProcessDef, ThreadEntry};
use crate::recording::{EndReason, FailureKind, MemoryKind, Writer};
use crate::target::family::ProcessKey;
use crate::target::files::FileAccess;
use crate::target::perf::{Record, ThreadEvents};
use crate::target::procfs::{self, ProcFile};
use crate::target::threads::ThreadMap;
use crate::target::{lock, ProcessMemory};

/// What sampling needs of the recording-wide memory events: the clock to watch event
/// descriptors with, and the events' state.
pub struct Events<'a> {
    pub clock: &'a Clock,
    pub memory: &'a mut MemoryEvents,
}

/// How one sampling attempt went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sampled,
    Failed(FailureKind),
    /// The series is over (the process exited or replaced its program).
    Ended(EndReason),
}

/// How the sampler tells Python threads apart: the thread state's address, its
/// `threading.get_ident()`, and the kernel id the target's memory claims for it (or, when it
/// claims none, the negated ident). A thread state reused for a new thread is a new thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ThreadKey {
    tstate: u64,
    ident: u64,
    claimed: i64,
}

/// A thread as the sampler tracks it.
struct ThreadState {
    slot: u32,
    /// The kernel (host) id of the thread, proven to be one of the target's (see
    /// `target::threads`); None when the id in the target's memory names no thread of the
    /// target: then its stack is still read, but it is never stopped and has no counters.
    tid: Option<i32>,
    /// The thread's `stat` and `schedstat`, held open: besides the counters, a successful read
    /// proves the thread is alive and is the very thread that was proven (see `refresh`).
    stat: Option<ProcFile>,
    schedstat: Option<ProcFile>,
    cpu_ns: u64,
    minflt: u64,
    minflt_reported: u64,
    running: bool,
    /// Blocking mode stops this thread (its counters are read between seize and interrupt).
    stopped_each_sample: bool,
    /// Its kernel thread, proven as this tid, is gone.
    died: Option<i32>,
    /// Its memory events (page faults and frees), when the kernel allows them, with the token
    /// its descriptor is watched under, and the stack reads they cost in the current window,
    /// and in how many distinct milliseconds (its duty, see `sample::events`).
    events: Option<ThreadEvents>,
    token: u32,
    window_reads: u64,
    window_busy_ms: u64,
    last_read_ms: u64,
    last_frames: Vec<Frame>,
    last_stack: Option<u32>,
    last_seen: u64,
    /// When its stack was last read (tick or memory event, ns) and which stack that was: a
    /// memory event's faults are split between that stack and the new one by their times.
    read_ns: u64,
    read_stack: Option<u32>,
    /// Its faults (the kernel's running total) and the time at the previous tick, for
    /// [`ProcessSampler::settle_periods`].
    settle_faults: u64,
    settle_ns: u64,
    /// Its Python name (`threading.Thread.name`) as last written.
    python_name: Option<String>,
    /// It used CPU since the previous refresh (or that is not known).
    ran: bool,
    /// Its CPU time moved between two reads (unlike `ran`, never true on the first read).
    moved: bool,
    /// Its memory events are to be opened once it runs (see [`EVENTS_OPENED_PER_TICK`]).
    wants_events: bool,
    /// Ticks since it last used CPU.
    idle_ticks: u64,
}

impl ThreadState {
    fn new(slot: u32) -> ThreadState {
        ThreadState {
            slot,
            tid: None,
            stat: None,
            schedstat: None,
            cpu_ns: 0,
            minflt: 0,
            minflt_reported: 0,
            running: false,
            stopped_each_sample: false,
            died: None,
            events: None,
            token: 0,
            window_reads: 0,
            window_busy_ms: 0,
            last_read_ms: 0,
            last_frames: Vec::new(),
            last_stack: None,
            last_seen: 0,
            read_ns: 0,
            read_stack: None,
            settle_faults: 0,
            settle_ns: 0,
            python_name: None,
            ran: true,
            moved: false,
            wants_events: false,
            idle_ticks: 0,
        }
    }

    /// Whether the thread proven as this state's kernel id is still alive and that very
    /// thread (asked between seize and interrupt): a read of its `schedstat`, held open since
    /// the proof, succeeds only then. Its CPU time is left as the tick's counters read it:
    /// the process's CPU clock is compared with those (see `refresh_threads`).
    fn still_ours(&mut self) -> bool {
        let cpu = self
            .schedstat
            .as_mut()
            .and_then(|f| f.read().ok().and_then(procfs::parse_schedstat));
        match cpu {
            Some(_) => true,
            // No schedstat (it could not be opened), or gone: the full read, through the
            // held stat, tells which, and forgets the id of a thread that is gone.
            None => self.refresh(),
        }
    }

    /// Take `tid` (proven a thread of process `pid`) as this thread's kernel id: open its
    /// counters, whose files from now on stand for that very thread. False if it is gone.
    fn proven(&mut self, pid: i32, tid: i32) -> bool {
        let open = |file: &str| ProcFile::open(format!("/proc/{pid}/task/{tid}/{file}"), 1024).ok();
        self.stat = open("stat");
        self.schedstat = open("schedstat");
        self.tid = Some(tid);
        let alive = self.refresh();
        self.died = None;
        self.minflt_reported = self.minflt;
        alive
    }

    /// Re-read the thread's counters (one `pread` per file). Returns false, and forgets the
    /// thread's kernel id, when the thread is gone: its files, bound to the thread itself
    /// rather than to its number, then fail, even if the number now names another process.
    ///
    /// `schedstat` (three numbers) is read every time; `stat` (fifty-two) only when the thread
    /// used CPU since: a thread that did not run made no page faults and is not running. Most
    /// threads of a big service are idle, so this halves the cost of a tick for them.
    fn refresh(&mut self) -> bool {
        if self.stat.is_none() {
            return false;
        }
        let cpu = match self.schedstat.as_mut() {
            Some(f) => f.read().ok().and_then(procfs::parse_schedstat),
            None => None,
        };
        let ran = cpu.is_none_or(|ns| ns != self.cpu_ns || self.cpu_ns == 0);
        self.ran = ran;
        self.moved = cpu.is_some_and(|ns| self.cpu_ns != 0 && ns != self.cpu_ns);
        if let Some(ns) = cpu {
            self.cpu_ns = ns;
        }
        if !ran {
            self.running = false;
            return true;
        }
        let stat = self
            .stat
            .as_mut()
            .and_then(|f| f.read().ok().and_then(procfs::parse_stat));
        match stat {
            Some(s) => {
                self.minflt = s.minflt;
                self.running = s.is_running();
                true
            }
            None => {
                self.died = self.tid.take();
                self.stat = None;
                self.schedstat = None;
                self.running = false;
                false
            }
        }
    }
}

/// A thread's memory events are opened when memspy first finds it, for the first
/// [`EAGER_EVENTS`] threads of a process (a burst right after a long sleep is then caught); past
/// those, once it has run since memspy first read it (an idle thread makes no page faults, and
/// a service's thousand idle threads would cost four descriptors and a ring each, and a long
/// first tick), for at most [`EVENTS_OPENED_PER_TICK`] threads a tick. Until then its faults
/// are counted at ticks, from its `stat`.
const EAGER_EVENTS: usize = 32;
const EVENTS_OPENED_PER_TICK: usize = 8;

/// How often (ticks) an unproven thread state is tried again.
const REPROVE_TICKS: u64 = 10;

/// The proofs that thread states are threads of the target (see `target::threads`): the
/// kernel's threads and ids, and which host tids are taken, one thread state each.
struct Proofs {
    map: ThreadMap,
    taken: HashSet<i32>,
}

impl Proofs {
    /// The host tid the `claimed` id proves, if it is not another thread state's already.
    fn prove(&mut self, claimed: Option<i32>, now_ns: u64) -> Option<i32> {
        let tid = self.map.host_tid(claimed?, now_ns)?;
        self.taken.insert(tid).then_some(tid)
    }

    /// `tid` is no thread state's any more (and the claim may name something else later).
    fn release(&mut self, tid: i32, claimed: Option<i32>) {
        self.taken.remove(&tid);
        if let Some(id) = claimed {
            self.map.forget(id);
        }
    }
}

/// Open and watch the memory events of a newly proven thread, under the process's id and a
/// token of its own.
fn watch_events(
    ctx: &mut Events,
    process: u32,
    next_token: &mut u32,
    keys: &mut HashMap<u32, ThreadKey>,
    state: &mut ThreadState,
    key: ThreadKey,
) {
    let Some(events) = state.tid.and_then(|tid| ctx.memory.open(tid)) else {
        return;
    };
    let token = *next_token;
    *next_token = next_token.wrapping_add(1);
    if ctx
        .clock
        .watch(events.fd(), (process as u64) << 32 | token as u64)
        .is_ok()
    {
        state.events = Some(events);
        state.token = token;
        keys.insert(token, key);
    }
}

/// Turns the reader's frames into the recording's function, frame and stack ids, defining
/// what is new; notes the files new functions come from (for their source text).
#[derive(Default)]
struct Names {
    /// Code object ids of the reader -> function ids of the recording.
    functions: Vec<Option<u32>>,
    /// File names this process's functions come from, and those not yet handed on.
    files_named: HashSet<Arc<str>>,
    new_files: Vec<Arc<str>>,
    scratch: Vec<u32>,
}

impl Names {
    /// The stack id of `frames` (innermost first); None for no frames.
    fn stack(
        &mut self,
        reader: &StackReader<ProcessMemory>,
        writer: &mut Writer,
        frames: &[Frame],
    ) -> io::Result<Option<u32>> {
        self.scratch.clear();
        for f in frames.iter().rev() {
            let code = f.code as usize;
            if self.functions.len() <= code {
                self.functions.resize(code + 1, None);
            }
            let function = match self.functions[code] {
                Some(id) => id,
                None => {
                    let info = reader.code_info(f.code);
                    if !self.files_named.contains(&info.filename) {
                        self.files_named.insert(info.filename.clone());
                        self.new_files.push(info.filename.clone());
                    }
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
            self.scratch.push(writer.frame(function, f.line)?);
        }
        writer.stack(self.scratch.iter().copied())
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
    threads: FastMap<ThreadKey, ThreadState>,
    /// Scratch: how many of one walk's thread states have each (ident, kernel id) pair.
    seen_ids: FastMap<(u64, Option<i32>), u32>,
    /// Memory-event tokens (the low half; the high half is the process id) -> threads.
    event_keys: HashMap<u32, ThreadKey>,
    next_token: u32,
    /// Scratch for the stack of a thread a memory event came from, and its records.
    event_snapshot: Snapshot,
    event_records: Vec<Record>,
    /// The target's own threads and which its thread states were proven to be.
    proofs: Proofs,
    /// Threads whose claimed kernel id named no thread of the target (never stopped).
    pub unproven_threads: u64,
    /// The recording's ids of this process's functions and stacks.
    names: Names,
    /// How to read files as this process could (for the source text of its functions).
    pub files: Option<Arc<FileAccess>>,
    entries: Vec<ThreadEntry>,
    /// Proven kernel ids of the threads that ran Python at the previous sample, and their keys
    /// (stopped in blocking mode).
    stop_tids: Vec<i32>,
    stop_keys: Vec<ThreadKey>,
    /// The target refused our stop (another tracer holds it): said once.
    pub stop_refused: Option<Error>,
    pub said_stop_refused: bool,
    ticks: u64,
    /// Failed samples by kind (raced, exited, fatal).
    pub failures: [u64; 3],
    pub samples: u64,
    pub last_rss: u64,
    consecutive_fatal: u32,
    /// Python thread names, read when a thread appears and every [`NAMES_EVERY_NS`].
    thread_names: ThreadNames,
    names_due_ns: u64,
    names_soonest_ns: u64,
    /// Greenlets (and tasks) read after each sample; None when recording threads only.
    units: Option<Units>,
    /// Per unit (kind, address, serial): its task id in the recording, its last state code,
    /// and the tick it was last seen.
    tasks: HashMap<(UnitKind, u64, u64), TaskTrack>,
    task_changes: Vec<(u32, u64)>,
    task_refs: Vec<ThreadRef>,
    /// When the units are read next: reads cost at most [`UNITS_SHARE`] of the time.
    units_due_ns: u64,
    said_tasks_refused: bool,
    /// The process's CPU clock at the previous tick, and the CPU per tick its threads other
    /// than the Python ones used when last all were read (see `refresh_threads`).
    process_cpu: Option<u64>,
    other_cpu_per_tick: u64,
    /// The id of the process's CPU clock (found once: glibc checks it with a system call).
    cpu_clock: Option<nix::time::ClockId>,
    /// When the counters (RSS, faults, CPU) are read next, and how many times they were read.
    counters_due_ns: u64,
    counter_reads: u64,
    /// The previous tick was a sample (its entries stand for the threads as they are).
    sampled_last_tick: bool,
    /// Its interpreter was seen shutting down (said once in the recording).
    said_finalizing: bool,
    /// Why greenlets cannot be read here, once known (said once by the recorder).
    pub units_refused: Option<String>,
    /// How long its threads were held stopped at each tick (blocking mode).
    pub pauses: Pauses,
}

/// How long blocking mode held threads stopped: from asking the first to stop to letting the
/// last go, per tick.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pauses {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

impl Pauses {
    pub fn add(&mut self, ns: u64) {
        self.count += 1;
        self.total_ns += ns;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn merge(&mut self, other: &Pauses) {
        self.count += other.count;
        self.total_ns += other.total_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

/// A unit of work as the recording knows it.
struct TaskTrack {
    id: u32,
    state: u64,
    frames: Vec<Frame>,
    seen: u64,
}

/// The most of the sampler's time reading greenlets may take: with many of them (1,000 parked
/// greenlets cost about 2 ms a read) they are read every few ticks, their states holding in
/// between (a state holds until the next change, so nothing is lost but timing).
const UNITS_SHARE: u64 = 20;

/// The longest time between two reads of the units, whatever they cost.
const MAX_UNITS_GAP_NS: u64 = 200_000_000;

/// CPU time of the calling thread, ns.
fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// Every this many ticks every thread's counters are read, whatever the process's CPU clock
/// says; a thread idle for [`IDLE_AFTER_TICKS`] is read only then, or when the clock shows CPU
/// the others do not account for (more than what its non-Python threads usually take, twice,
/// plus [`GATE_SLACK_NS`]: reads are not atomic).
const FULL_REFRESH_TICKS: u64 = 25;
const IDLE_AFTER_TICKS: u64 = 3;
const GATE_SLACK_NS: u64 = 200_000;

/// The CPU time all threads of a process used, from its CPU clock
/// (`CLOCK_PROCESS_CPUTIME_ID` of another process, through the clock id the kernel derives
/// from its pid: `clock_getcpuclockid(3)`).
fn process_cpu_ns(clock: Option<nix::time::ClockId>) -> Option<u64> {
    let t = nix::time::clock_gettime(clock?).ok()?;
    Some(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// The shortest time between two reads of the counters (RSS, page faults, every thread's CPU
/// time): up to about 1,300 Hz every tick reads them; above, stacks are read at every tick and
/// the counters about once a millisecond, their changes going to the tick that reads them
/// (time and memory are then attributed at that rate, wall time at the asked one). The
/// counters cost more than the stack of a running thread (four `procfs` reads and a clock),
/// and a millisecond is finer than anything they measure.
const COUNTERS_GAP_NS: u64 = 750_000;

/// How often thread names are read again (a thread may be renamed).
const NAMES_EVERY_NS: u64 = 2_000_000_000;

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
        // Its root and rights, taken now: its files are read as it could, even after it exits.
        let files = FileAccess::open(pid).ok().map(Arc::new);
        // A recording of another user's program holds that user's code and data.
        let other_user = match &files {
            Some(f) => f
                .credentials
                .other_user_than(nix::unistd::geteuid().as_raw()),
            None => procfs::credentials(pid)
                .map_or(true, |c| c.other_user_than(nix::unistd::geteuid().as_raw())),
        };
        if other_user {
            writer
                .make_private()
                .map_err(|e| Error::io("writing the recording", e))?;
        }
        let id = writer
            .process_start(&ProcessDef {
                pid,
                starttime: key.starttime,
                parent,
                time_us,
                command: &command,
                exe: &exe,
                python: &python,
                cwd: &std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
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
            threads: FastMap::default(),
            seen_ids: FastMap::default(),
            event_keys: HashMap::new(),
            next_token: 0,
            event_snapshot: Snapshot::default(),
            event_records: Vec::new(),
            proofs: Proofs {
                map: ThreadMap::new(pid),
                taken: HashSet::new(),
            },
            unproven_threads: 0,
            names: Names::default(),
            files,
            entries: Vec::new(),
            stop_tids: Vec::new(),
            stop_keys: Vec::new(),
            stop_refused: None,
            said_stop_refused: false,
            ticks: 0,
            failures: [0; 3],
            samples: 0,
            last_rss: 0,
            consecutive_fatal: 0,
            thread_names: ThreadNames::default(),
            names_due_ns: 0,
            names_soonest_ns: 0,
            units: Some(Units::new(pid)),
            tasks: HashMap::new(),
            task_changes: Vec::new(),
            task_refs: Vec::new(),
            units_due_ns: 0,
            said_tasks_refused: false,
            process_cpu: None,
            cpu_clock: nix::time::clock_getcpuclockid(nix::unistd::Pid::from_raw(pid)).ok(),
            counters_due_ns: 0,
            counter_reads: 0,
            sampled_last_tick: false,
            said_finalizing: false,
            pauses: Pauses::default(),
            other_cpu_per_tick: 0,
            units_refused: None,
        })
    }

    /// Record OS threads only (`record --no-tasks`).
    pub fn without_tasks(&mut self) {
        self.units = None;
    }

    /// Take one sample and write it (or its failure).
    pub fn sample(
        &mut self,
        writer: &mut Writer,
        time_us: u64,
        blocking: bool,
        ctx: &mut Events,
    ) -> io::Result<Outcome> {
        self.ticks += 1;
        let now_ns = super::now_ns();
        let counters = now_ns >= self.counters_due_ns;
        if counters {
            self.counters_due_ns = now_ns + COUNTERS_GAP_NS;
            self.counter_reads += 1;
            let cpu = process_cpu_ns(self.cpu_clock);
            if cpu.is_some()
                && cpu == self.process_cpu
                && self.sampled_last_tick
                && self.counter_reads % FULL_REFRESH_TICKS != 0
                && !self.units.as_mut().is_some_and(Units::has_news)
            {
                if let Some(outcome) = self.repeat_sample(writer, time_us, now_ns)? {
                    return Ok(outcome);
                }
            }
            if let Some(outcome) = self.read_counters(writer, time_us, cpu)? {
                return Ok(outcome);
            }
        } else {
            self.process_minflt_delta = 0;
        }
        // A thread that used no CPU since the previous sample has the stack it had then: it is
        // not walked again (the reader takes its frames from the previous walk) and, in
        // blocking mode, not stopped. The threads blocking mode stops are read again between
        // seize and interrupt, where the read also proves each is still the thread it was.
        // Between two reads of the counters every thread is walked; the ones stopped are those
        // that ran before the last read (stopping an idle thread wakes it: at 20 kHz that
        // would be most of its CPU time).
        self.reader.unchanged.clear();
        let previous_tick = self.ticks - 1;
        if counters {
            for (key, t) in &self.threads {
                if t.tid.is_some() && !t.ran && t.last_seen == previous_tick {
                    self.reader.unchanged.insert(key.tstate);
                }
            }
        }
        if blocking {
            let threads = &self.threads;
            let mut i = 0;
            while i < self.stop_keys.len() {
                if threads.get(&self.stop_keys[i]).is_some_and(|t| !t.ran) {
                    self.stop_keys.swap_remove(i);
                    self.stop_tids.swap_remove(i);
                } else {
                    i += 1;
                }
            }
        }
        let pid = self.key.pid;
        let stopping = blocking && !self.stop_tids.is_empty();
        let walked = {
            let stopped = if stopping {
                self.reader.prepare();
                let (threads, keys) = (&mut self.threads, &self.stop_keys);
                let still_ours = |i: usize| {
                    threads
                        .get_mut(&keys[i])
                        .is_some_and(ThreadState::still_ours)
                };
                match lock::stop_threads(pid, &self.stop_tids, still_ours) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.stop_refused.get_or_insert(e);
                        None
                    }
                }
            } else {
                None
            };
            let walked = self.reader.read(&mut self.snapshot);
            if let Some(stopped) = stopped {
                let first = stopped.first_stop_ns;
                drop(stopped);
                if first > 0 {
                    self.pauses.add(super::now_ns().saturating_sub(first));
                }
            }
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
        if self.snapshot.finalizing && !self.said_finalizing {
            self.said_finalizing = true;
            writer.finalizing(self.id, time_us)?;
        }
        self.join(writer, time_us, ctx)?;
        self.samples += 1;
        self.sampled_last_tick = true;
        Ok(Outcome::Sampled)
    }

    /// The sample of a process that used no CPU since the previous tick (its CPU clock did
    /// not move) and whose RSS did not change: none of its threads ran, so each has the stack
    /// it had, made no page faults and used no CPU (None: it is to be read in full). Fifty idle workers then cost two system calls each per tick instead of eight.
    /// Every [`FULL_REFRESH_TICKS`] ticks the process is read in full all the same, and when
    /// the background walks found greenlets it made before it went idle (taken in only by a
    /// read: repeating through them lost a third of a gevent service's waiting time).
    fn repeat_sample(
        &mut self,
        writer: &mut Writer,
        time_us: u64,
        now_ns: u64,
    ) -> io::Result<Option<Outcome>> {
        let rss = self
            .statm
            .read()
            .ok()
            .and_then(|b| procfs::parse_statm_rss(b, self.page_size));
        let Some(rss) = rss.filter(|&r| r > 0) else {
            let outcome = self.gone_or(Outcome::Failed(FailureKind::Exited));
            return self.record_failure(writer, time_us, outcome).map(Some);
        };
        // Memory that moved says a thread ran after all (a thread running right now has its
        // time added to the clock only at the scheduler's next tick or switch): read in full.
        if rss != self.last_rss {
            return Ok(None);
        }
        self.last_rss = rss;
        self.process_minflt_delta = 0;
        for e in &mut self.entries {
            e.minflt = 0;
            e.flags &= !FLAG_ACTIVE;
        }
        let ticks = self.ticks;
        for t in self.threads.values_mut() {
            if t.last_seen + 1 == ticks {
                // Its stack was as good as read now (memory events split their faults between
                // the stack read last and the one they find, by this time).
                t.last_seen = ticks;
                t.read_ns = now_ns;
            }
            t.ran = false;
            t.moved = false;
            t.running = false;
            t.idle_ticks += 1;
        }
        writer.sample(self.id, time_us, rss, 0, &self.entries)?;
        self.samples += 1;
        Ok(Some(Outcome::Sampled))
    }

    /// Read the process's counters (RSS, faults) and its threads' (before any thread is
    /// stopped: a stopped thread would read as not running). Returns the tick's outcome when
    /// the process is gone.
    fn read_counters(
        &mut self,
        writer: &mut Writer,
        time_us: u64,
        cpu: Option<u64>,
    ) -> io::Result<Option<Outcome>> {
        let rss = match self
            .statm
            .read()
            .ok()
            .and_then(|b| procfs::parse_statm_rss(b, self.page_size))
        {
            Some(rss) if rss > 0 => rss,
            _ => {
                let outcome = self.gone_or(Outcome::Failed(FailureKind::Exited));
                return self.record_failure(writer, time_us, outcome).map(Some);
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
        self.refresh_threads(cpu);
        Ok(None)
    }

    /// Read the threads' counters. The process's CPU clock (one system call) says how much CPU
    /// all its threads used since the previous tick; when the threads that ran lately account
    /// for it (less what its other threads usually take), the others did not run and are not
    /// read: a thousand idle threads then cost nothing per tick. Every
    /// [`FULL_REFRESH_TICKS`] ticks, and whenever CPU is unaccounted for, all are read.
    fn refresh_threads(&mut self, cpu: Option<u64>) {
        let (before, now) = (self.process_cpu, cpu);
        self.process_cpu = cpu;
        let gate = match (before, now) {
            (Some(b), Some(n)) if self.counter_reads % FULL_REFRESH_TICKS != 0 => {
                Some(n.saturating_sub(b))
            }
            _ => None,
        };
        if let Some(total) = gate {
            let mut accounted = 0u64;
            for t in self.threads.values_mut() {
                if t.idle_ticks < IDLE_AFTER_TICKS || t.tid.is_none() {
                    let was = t.cpu_ns;
                    t.refresh();
                    accounted += t.cpu_ns.saturating_sub(was);
                    t.idle_ticks = if t.ran { 0 } else { t.idle_ticks + 1 };
                }
            }
            let unaccounted = total.saturating_sub(accounted);
            if unaccounted <= self.other_cpu_per_tick.saturating_mul(2) + GATE_SLACK_NS {
                for t in self.threads.values_mut() {
                    if t.idle_ticks >= IDLE_AFTER_TICKS && t.tid.is_some() {
                        t.ran = false;
                        t.moved = false;
                        t.running = false;
                        t.idle_ticks += 1;
                    }
                }
                return;
            }
        }
        // Every thread: then what the process used beyond its Python threads is its other
        // threads' (native pools), the part of the process's CPU the gate expects.
        let mut python = 0u64;
        for t in self.threads.values_mut() {
            if t.idle_ticks >= IDLE_AFTER_TICKS || gate.is_none() {
                let was = t.cpu_ns;
                t.refresh();
                python += t.cpu_ns.saturating_sub(was);
                t.idle_ticks = if t.ran { 0 } else { t.idle_ticks + 1 };
            }
        }
        if let (Some(b), Some(n), None) = (before, now, gate) {
            self.other_cpu_per_tick = n.saturating_sub(b).saturating_sub(python);
        }
    }

    /// Turn the snapshot into a sample: thread slots, stack ids, counters.
    fn join(&mut self, writer: &mut Writer, time_us: u64, ctx: &mut Events) -> io::Result<()> {
        let pid = self.key.pid;
        self.entries.clear();
        self.stop_tids.clear();
        self.stop_keys.clear();
        let now_ns = super::now_ns();
        // A new thread's state first holds its creator's ids, until the new thread runs
        // (CPython sets them from the creating thread); such a state has no frames yet and is
        // left out until it has ids of its own, or it would share its creator's counters (or,
        // the host id being taken, look unproven).
        // CPython puts new states first in the list, so which of two is the real thread is told
        // by frames: the state being set up has none yet.
        self.seen_ids.clear();
        let mut events_opened = 0;
        for t in &self.snapshot.threads {
            *self.seen_ids.entry((t.thread_id, t.native_id)).or_insert(0) += 1;
        }
        for t in &self.snapshot.threads {
            if self.seen_ids[&(t.thread_id, t.native_id)] > 1 && t.frames.is_empty() {
                continue;
            }
            let key = ThreadKey {
                tstate: t.tstate,
                ident: t.thread_id,
                claimed: t.native_id.map_or(-(t.thread_id as i64), |tid| tid as i64),
            };
            // A thread whose kernel thread died is proven again (its id may name a new one).
            if let Some(old) = self.threads.get(&key).and_then(|s| s.died) {
                self.threads.remove(&key);
                self.proofs.release(old, t.native_id);
            }
            if !self.threads.contains_key(&key) {
                let tid = self.proofs.prove(t.native_id, now_ns);
                let name = tid
                    .and_then(|tid| procfs::thread_name(pid, tid))
                    .unwrap_or_default();
                let slot = writer.thread(self.id, tid.unwrap_or(0), t.native_id, &name)?;
                let mut state = ThreadState::new(slot);
                if let Some(tid) = tid {
                    if state.proven(pid, tid) {
                        if self.event_keys.len() < EAGER_EVENTS {
                            watch_events(
                                ctx,
                                self.id,
                                &mut self.next_token,
                                &mut self.event_keys,
                                &mut state,
                                key,
                            );
                        } else {
                            state.wants_events = true;
                        }
                    } else {
                        self.proofs.release(tid, t.native_id);
                    }
                }
                if state.tid.is_none() && t.native_id.is_some() {
                    self.unproven_threads += 1;
                }
                self.threads.insert(key, state);
            } else if self.ticks % REPROVE_TICKS == 0 {
                // An unproven state is tried again now and then: its id may have been the
                // creator's, or not yet listed.
                let state = self
                    .threads
                    .get_mut(&key)
                    .filter(|s| s.tid.is_none() && s.died.is_none());
                if let (Some(state), Some(tid)) = (state, self.proofs.prove(t.native_id, now_ns)) {
                    if state.proven(pid, tid) {
                        writer.thread_proven(self.id, state.slot, tid)?;
                        self.unproven_threads = self.unproven_threads.saturating_sub(1);
                        state.wants_events = true;
                    } else {
                        self.proofs.release(tid, t.native_id);
                    }
                }
            }
            let Some(state) = self.threads.get_mut(&key) else {
                continue;
            };
            if state.wants_events && state.moved && events_opened < EVENTS_OPENED_PER_TICK {
                state.wants_events = false;
                events_opened += 1;
                watch_events(
                    ctx,
                    self.id,
                    &mut self.next_token,
                    &mut self.event_keys,
                    state,
                    key,
                );
            }
            // A host id is proven for one thread state only, so the list holds no duplicates.
            state.stopped_each_sample = state.tid.is_some();
            if let Some(tid) = state.tid {
                self.stop_tids.push(tid);
                self.stop_keys.push(key);
            }
            state.last_seen = self.ticks;
            let frames = self.snapshot.frames_of(t);
            if frames != state.last_frames.as_slice() || state.last_frames.is_empty() {
                state.last_stack = self.names.stack(&self.reader, writer, frames)?;
                state.last_frames.clear();
                state.last_frames.extend_from_slice(frames);
            }
            state.read_ns = now_ns;
            state.read_stack = state.last_stack;
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
        self.name_threads(writer, now_ns)?;
        // Forget threads that are gone (their files are closed with them).
        let now = self.ticks;
        let (clock, tokens, proofs) = (ctx.clock, &mut self.event_keys, &mut self.proofs);
        self.threads.retain(|key, t| {
            let keep = now - t.last_seen < 10;
            if !keep {
                if let Some(events) = t.events.as_ref() {
                    clock.unwatch(events.fd());
                    tokens.remove(&t.token);
                }
                if let Some(tid) = t.tid.or(t.died) {
                    proofs.release(tid, (key.claimed > 0).then_some(key.claimed as i32));
                }
            }
            keep
        });
        // Faults of the process that its Python threads did not make: threads that never run
        // Python (native pools, C extensions' workers).
        let python: u64 = self.entries.iter().map(|e| e.minflt).sum();
        let native = self.process_minflt_delta.saturating_sub(python);
        writer.sample(self.id, time_us, self.last_rss, native, &self.entries)?;
        self.sample_units(writer, time_us, now_ns)
    }

    /// Write the Python names of threads that have one and got it or changed it since: read
    /// when a thread is new, else every [`NAMES_EVERY_NS`] (one dict walk), and never more
    /// than the read's cost allows (reading a thousand names takes tens of milliseconds).
    fn name_threads(&mut self, writer: &mut Writer, now_ns: u64) -> io::Result<()> {
        let unnamed = self.threads.values().any(|t| t.python_name.is_none());
        let new_thread = unnamed && now_ns >= self.names_soonest_ns;
        if !(new_thread || now_ns >= self.names_due_ns) {
            return Ok(());
        }
        let started = thread_cpu_ns();
        self.thread_names.refresh(
            self.reader.memory(),
            &self.reader.layout,
            self.reader.binary.runtime_addr,
            now_ns,
        );
        let cost = thread_cpu_ns().saturating_sub(started);
        self.names_soonest_ns = now_ns + (cost * 50).max(100_000_000);
        self.names_due_ns = now_ns + (cost * 500).max(NAMES_EVERY_NS);
        let pid = self.key.pid;
        for (key, state) in self.threads.iter_mut() {
            let Some(name) = self.thread_names.name_of(key.ident, state.tid == Some(pid)) else {
                continue;
            };
            if state.python_name.as_deref() != Some(name) {
                writer.thread_name(self.id, state.slot, name)?;
                state.python_name = Some(name.to_string());
            }
        }
        Ok(())
    }

    /// Read the process's greenlets (and tasks) after its sample, and write what changed: new
    /// units, and the state of each from this sample on (running, or waiting at a stack).
    /// Units gone are ended. A failed read changes nothing (the states hold).
    fn sample_units(&mut self, writer: &mut Writer, time_us: u64, now_ns: u64) -> io::Result<()> {
        let Some(units) = self.units.as_mut() else {
            return Ok(());
        };
        if now_ns < self.units_due_ns {
            return Ok(());
        }
        self.task_refs.clear();
        for (key, state) in &self.threads {
            if state.last_seen == self.ticks {
                self.task_refs.push(ThreadRef {
                    tstate: key.tstate,
                    ident: key.ident,
                    main: state.tid == Some(self.key.pid),
                });
            }
        }
        // The budget counts memspy's CPU time, not the wall clock: on a loaded machine the read
        // may be preempted, which costs nothing.
        let started = thread_cpu_ns();
        let read = units.read(&mut self.reader, &self.task_refs, now_ns, false);
        let spent = thread_cpu_ns().saturating_sub(started);
        self.units_due_ns = now_ns + (spent * UNITS_SHARE).clamp(COUNTERS_GAP_NS, MAX_UNITS_GAP_NS);
        if read.is_err() {
            return Ok(());
        }
        if let (false, Some(why)) = (self.said_tasks_refused, &units.tasks_refused) {
            eprintln!("memspy: note: process {}: {why}", self.key.pid);
            self.said_tasks_refused = true;
        }
        if self.units_refused.is_none() {
            if let Some(why) = &units.refused {
                eprintln!(
                    "memspy: note: process {}: {why}; its greenlets are not recorded (its threads are)",
                    self.key.pid
                );
                self.units_refused = Some(why.clone());
            }
        }
        self.task_changes.clear();
        for u in &units.units {
            let key = (u.kind, u.addr, u.serial);
            let frames = &units.snapshot.frames[u.frames.clone()];
            let track = match self.tasks.get_mut(&key) {
                Some(t) => t,
                None => {
                    let thread = u.tstate.and_then(|ts| {
                        self.threads
                            .iter()
                            .find(|(k, _)| k.tstate == ts)
                            .map(|(_, s)| s.slot)
                    });
                    let kind = match u.kind {
                        UnitKind::Greenlet => TaskKind::Greenlet,
                        UnitKind::Task => TaskKind::Asyncio,
                    };
                    let id = writer.task(self.id, kind, thread, u.addr, &u.name)?;
                    self.tasks.entry(key).or_insert(TaskTrack {
                        id,
                        state: u64::MAX,
                        frames: Vec::new(),
                        seen: 0,
                    })
                }
            };
            track.seen = self.ticks;
            let state = match u.state {
                UnitState::Running => TASK_RUNNING,
                UnitState::NotStarted => TASK_WAITING_NO_FRAMES,
                UnitState::Waiting if frames.is_empty() => TASK_WAITING_NO_FRAMES,
                // A parked unit's frames do not change until it runs: intern them again only
                // when they differ from what it last waited at.
                UnitState::Waiting if track.frames == frames && track.state >= TASK_WAITING_AT => {
                    track.state
                }
                UnitState::Waiting => {
                    track.frames.clear();
                    track.frames.extend_from_slice(frames);
                    match self.names.stack(&self.reader, writer, frames)? {
                        Some(stack) => TASK_WAITING_AT + stack as u64,
                        None => TASK_WAITING_NO_FRAMES,
                    }
                }
            };
            if state != track.state {
                track.state = state;
                self.task_changes.push((track.id, state));
            }
        }
        let (ticks, changes) = (self.ticks, &mut self.task_changes);
        self.tasks.retain(|_, t| {
            let keep = t.seen == ticks;
            if !keep {
                changes.push((t.id, TASK_ENDED));
            }
            keep
        });
        writer.task_states(self.id, time_us, &self.task_changes)
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
        self.sampled_last_tick = false;
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

    /// A thread's memory events woke the sampler: take what the kernel recorded, read the
    /// thread's stack at once without stopping it (falling back to its last stack if it moved
    /// under the reader), and the process's RSS, and write one memory event.
    pub fn memory_event(
        &mut self,
        writer: &mut Writer,
        token: u32,
        time_us: u64,
        memory: &mut MemoryEvents,
    ) -> io::Result<()> {
        let Some(&key) = self.event_keys.get(&token) else {
            return Ok(());
        };
        let Some(state) = self.threads.get_mut(&key) else {
            return Ok(());
        };
        let Some(events) = state.events.as_mut() else {
            return Ok(());
        };
        let (mut lost, mut last_ns) = (0u64, 0u64);
        let records = &mut self.event_records;
        records.clear();
        events.drain(|r| match r {
            Record::Faults { time_ns } | Record::Free { time_ns } => {
                last_ns = last_ns.max(time_ns);
                records.push(r);
            }
            Record::Lost(n) => lost += n,
        });
        let count = |free: bool| {
            records
                .iter()
                .filter(|r| matches!(r, Record::Free { .. }) == free)
                .count() as u64
        };
        let fault_records = count(false);
        let (faults, frees) = events.take_counts();
        memory.counts.faults += fault_records;
        memory.counts.frees += frees;
        memory.counts.lost += lost;
        if faults == 0 && frees == 0 {
            return Ok(());
        }
        state.window_reads += 1;
        let ms = super::now_ns() / 1_000_000;
        if ms != state.last_read_ms {
            state.last_read_ms = ms;
            state.window_busy_ms += 1;
        }
        // A process on its way out reads as 0: no reading (the next tick ends its series).
        let Some(rss) = self
            .statm
            .read()
            .ok()
            .and_then(|b| procfs::parse_statm_rss(b, self.page_size))
            .filter(|&rss| rss > 0)
        else {
            return Ok(());
        };
        let read_ns = super::now_ns();
        let read = self
            .reader
            .read_thread(key.tstate, &mut self.event_snapshot);
        // The thread state must still be this thread's (states are freed and reused).
        let same = read.is_ok()
            && self.event_snapshot.threads.first().is_some_and(|t| {
                t.thread_id == key.ident
                    && t.native_id.map_or(-(t.thread_id as i64), |n| n as i64) == key.claimed
            });
        if self.event_snapshot.finalizing && !self.said_finalizing {
            self.said_finalizing = true;
            writer.finalizing(self.id, time_us)?;
        }
        let stack = if same {
            let frames = self
                .event_snapshot
                .frames_of(&self.event_snapshot.threads[0]);
            self.names.stack(&self.reader, writer, frames)?
        } else {
            memory.counts.failed += 1;
            state.last_stack
        };
        let delay_us = read_ns.saturating_sub(last_ns) / 1000;
        memory.delay(delay_us);
        memory.counts.samples += 1;
        self.last_rss = rss;
        // The stack may have changed between the thread's previous read and this one, and
        // some of these faults or frees happened before that change. With the moment of the
        // change unknown (uniform over the gap), a record at time r belongs to the previous
        // stack with probability (now - r) / (now - then).
        let (mut faults_before, mut frees_before) = (0.0, 0.0);
        if stack != state.read_stack && state.read_ns > 0 && read_ns > state.read_ns {
            let gap = (read_ns - state.read_ns) as f64;
            for r in records.iter() {
                let (Record::Faults { time_ns } | Record::Free { time_ns }) = *r else {
                    continue;
                };
                let before = (read_ns.saturating_sub(time_ns) as f64 / gap).clamp(0.0, 1.0);
                match r {
                    Record::Free { .. } => frees_before += before,
                    _ => faults_before += before * faults as f64 / fault_records as f64,
                }
            }
        }
        state.read_ns = read_ns;
        state.read_stack = stack;
        writer.memory_event(
            self.id,
            time_us,
            &MemoryEventEntry {
                slot: state.slot,
                stack,
                rss_bytes: rss,
                faults,
                frees,
                delay_us,
                fresh: same,
                faults_before: faults_before.round() as u64,
                frees_before: frees_before.round() as u64,
            },
        )
    }

    /// The memory events of a thread that exited hung up: stop watching them (what they hold
    /// was read with the last wake-up).
    pub fn close_memory_events(&mut self, token: u32, clock: &Clock) {
        let Some(key) = self.event_keys.remove(&token) else {
            return;
        };
        if let Some(events) = self.threads.get_mut(&key).and_then(|t| t.events.take()) {
            clock.unwatch(events.fd());
        }
    }

    /// Threads whose memory events caused stack reads in the current window (the budget of
    /// reads is shared among these: idle threads take no part of it).
    pub fn busy_event_threads(&self) -> usize {
        self.threads.values().filter(|t| t.window_reads > 0).count()
    }

    /// Adapt each thread's fault period to the stack reads its events cost over the last
    /// `window_s` seconds, against `budget` reads per second.
    pub fn adapt_periods(&mut self, window_s: f64, budget: f64, memory: &mut MemoryEvents) {
        for state in self.threads.values_mut() {
            let Some(events) = state.events.as_mut() else {
                continue;
            };
            let duty = state.window_busy_ms as f64 / (window_s * 1000.0).max(1.0);
            let budget = thread_budget(budget, duty);
            let period = adapted_period(
                events.period,
                state.window_reads,
                window_s,
                memory.period,
                budget,
            );
            // Frees share the budget: in a storm of frees their period rises too (from 1).
            let free_period =
                adapted_period(events.free_period, state.window_reads, window_s, 1, budget);
            state.window_reads = 0;
            state.window_busy_ms = 0;
            if period != events.period && events.set_period(period).is_ok() {
                memory.counts.max_period = memory.counts.max_period.max(period);
            }
            if free_period != events.free_period {
                let _ = events.set_free_period(free_period);
            }
        }
    }

    /// Lower the fault period of threads whose storm is over, at every tick, from the kernel's
    /// exact count of their faults since the previous tick: to the smallest period at which
    /// those faults would have cost no more stack reads than the sustained `budget` (reads per
    /// second) allows, down to `floor`. The next burst, often the request right after the one
    /// that raised the period, is then placed as finely as any; waiting for the next
    /// adaptation window would leave it to ticks. Only [`ProcessSampler::adapt_periods`]
    /// raises periods, and a change loses nothing (amounts are exact counts).
    pub fn settle_periods(&mut self, now_ns: u64, floor: u64, budget: f64) {
        for state in self.threads.values_mut() {
            let Some(events) = state.events.as_mut() else {
                continue;
            };
            if events.period <= floor {
                // Counted from the first tick after a raise.
                state.settle_ns = 0;
                continue;
            }
            let total = events.faults_total();
            let faults = total.saturating_sub(state.settle_faults);
            let elapsed_s = now_ns.saturating_sub(state.settle_ns) as f64 / 1e9;
            let fresh = state.settle_ns == 0;
            (state.settle_faults, state.settle_ns) = (total, now_ns);
            if fresh {
                continue;
            }
            let allowed = (budget * elapsed_s).max(1.0);
            let mut period = floor.max(1);
            while (faults as f64 / period as f64) > allowed && period < events.period {
                period *= 2;
            }
            if period < events.period {
                let _ = events.set_period(period);
            }
        }
    }

    /// Ask for the source text of the files new functions came from.
    pub fn hand_over_files(&mut self, sources: &mut super::sources::Sources) {
        if !self.names.new_files.is_empty() {
            sources.ask(self.key.pid, self.files.as_ref(), &mut self.names.new_files);
        }
    }
}
