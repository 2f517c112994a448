//! The sampling loop: an absolute schedule of ticks; at each tick every recorded process is
//! sampled ([`process`]), processes found by the [`discovery`] thread join, lower-rate memory
//! readings are taken, and lateness is measured (how far behind the schedule, how many ticks
//! missed).

pub mod clock;
pub mod discovery;
pub mod events;
pub mod process;
pub mod sources;
pub mod trigger;

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

use crate::error::{Error, Result};
use crate::output::text::{one_line, visible};
use crate::python::{binary, StackReader};
use crate::recording::writer::MemoryEventsSummary;
use crate::recording::{EndReason, FailureKind, Writer};
use crate::target::family::ProcessKey;
use crate::target::launch::Launched;
use crate::target::{procfs, ProcessMemory};
use clock::{Clock, Woken};
use discovery::Found;
use events::{MemoryEvents, Mode};
use process::{Outcome, ProcessSampler};
use sources::Sources;

/// Which memory number attribution uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryMode {
    Rss,
    Pss,
    Uss,
}

impl MemoryMode {
    pub fn name(self) -> &'static str {
        match self {
            MemoryMode::Rss => "rss",
            MemoryMode::Pss => "pss",
            MemoryMode::Uss => "uss",
        }
    }
}

/// How to sample.
#[derive(Clone, Debug)]
pub struct Config {
    pub rate_hz: f64,
    pub duration: Option<Duration>,
    pub blocking: bool,
    pub memory: MemoryMode,
    pub subprocesses: bool,
    /// Sample on memory events (page faults, frees) as well as on ticks.
    pub memory_events: bool,
    /// Page faults per fault sample, at least (the period adapts upwards under a storm).
    pub fault_period: u64,
    /// Read greenlets and asyncio tasks after each sample.
    pub tasks: bool,
    /// End the recording once the file has grown to this many bytes.
    pub max_size: Option<u64>,
    /// Instead of ending there, go on in a new file: this name with `%n` replaced by the
    /// file's number (2, 3, ...; see [`part_path`]).
    pub rotate: Option<std::path::PathBuf>,
    /// Say on stderr, one line each, what happens: a process found, a process ended, a new
    /// file (for a stderr that is not a terminal, where no progress line shows).
    pub announce: bool,
    /// `--trigger-rss`, `--trigger-growth`: what to watch and do.
    pub triggers: Option<trigger::TriggerConfig>,
}

/// Say that `p` is recorded from now on (`parent`: the pid it was found under).
fn announce_found(p: &ProcessSampler, parent: Option<i32>) {
    let role = match parent {
        Some(parent) => format!("found process {}, child of {parent}", p.key.pid),
        None => format!("recording process {}", p.key.pid),
    };
    eprintln!(
        "memspy: {role} (Python {}): {}",
        visible(&p.python),
        one_line(&p.command, 120)
    );
}

/// How a process ended, from its exit status when known: a signal is `Killed` with the
/// signal's number, else `reason` with the exit code.
fn end_of(reason: EndReason, status: Option<std::process::ExitStatus>) -> (EndReason, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) if s.signal().is_some() => (EndReason::Killed, s.signal()),
        Some(s) => (reason, s.code()),
        None => (reason, None),
    }
}

/// The file a recording is being written to now: `path`, or the highest-numbered part of a
/// rotated one whose names are `path` (a `%n` template).
pub fn newest_part(path: &std::path::Path, rotated: bool) -> std::path::PathBuf {
    if !rotated {
        return path.to_path_buf();
    }
    part_path(path, last_part(path))
}

/// The number of the last part of a rotated recording that exists (1 when none does).
pub fn last_part(template: &std::path::Path) -> u32 {
    let mut n = 1;
    while part_path(template, n + 1).exists() {
        n += 1;
    }
    n
}

/// The name of file `n` of a rotated recording whose names are `template` (`%n` stands for
/// the number).
pub fn part_path(template: &std::path::Path, n: u32) -> std::path::PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let name = template.as_os_str().as_bytes();
    let number = n.to_string();
    let mut out = Vec::with_capacity(name.len() + 8);
    let mut i = 0;
    while i < name.len() {
        if name[i..].starts_with(b"%n") {
            out.extend_from_slice(number.as_bytes());
            i += 2;
        } else {
            out.push(name[i]);
            i += 1;
        }
    }
    std::ffi::OsString::from_vec(out).into()
}

/// Where the target comes from.
pub enum Root {
    Attach(i32),
    Launch(Launched),
}

impl Root {
    pub fn pid(&self) -> i32 {
        match self {
            Root::Attach(pid) => *pid,
            Root::Launch(l) => l.pid(),
        }
    }
}

/// Progress for the display and the final summary.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub elapsed: Duration,
    /// The recording ended because it reached `--max-size`.
    pub max_size_reached: bool,
    pub samples: u64,
    pub processes_now: usize,
    pub processes_seen: usize,
    pub rss_now: u64,
    pub failures: BTreeMap<FailureKind, u64>,
    pub ticks: u64,
    pub missed_ticks: u64,
    pub late_max: Duration,
    pub late_total: Duration,
    /// Time the sampler spent waiting for ticks and events (the rest of `elapsed` it worked).
    pub waited: Duration,
    /// How long blocking mode held threads stopped, per process and tick.
    pub pauses: process::Pauses,
    /// Memory-event samples written.
    pub memory_events: u64,
}

impl Progress {
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// How often fault periods adapt to the fault rates.
const ADAPT_NS: u64 = 50_000_000;
/// How often the RSS split (status) is read.
const STATUS_NS: u64 = 100_000_000;
/// Bounds of the PSS/USS reading interval; in between it adapts so that reading
/// smaps_rollup costs at most 1 % of one core.
const ROLLUP_MIN_NS: u64 = 100_000_000;
const ROLLUP_MAX_NS: u64 = 5_000_000_000;

pub fn now_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC)
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Runs the loop until the target is gone, the duration is over, or `stop` is set.
pub struct Sampler<'a> {
    config: Config,
    writer: Writer,
    root: Root,
    stop: &'a AtomicBool,
    processes: Vec<ProcessSampler>,
    found: Receiver<Found>,
    recheck: Sender<(ProcessKey, Option<i32>)>,
    discovery_done: Arc<AtomicBool>,
    progress: Progress,
    /// Rotation: the files written so far (1 while there is one), their bytes before the
    /// current one, and the progress when the current one started (its statistics count
    /// from there).
    parts: u32,
    bytes_before: u64,
    file_start: Progress,
    /// pid -> recording id of every process recorded so far (for parent links).
    recorded: BTreeMap<i32, u32>,
    /// Processes whose series ended: pid, command, failed samples.
    finished: Vec<(i32, String, u64)>,
    write_error: Option<io::Error>,
    /// The source text of the recorded functions' files.
    sources: Sources,
    /// Memory events (page faults and frees) of the recorded threads.
    memory_events: MemoryEvents,
    /// Keeps the kernel's memory events switched on for the whole recording.
    _warm: Option<crate::target::perf::Warm>,
    /// Memory limits to act on.
    triggers: Option<trigger::Triggers>,
}

/// What a finished recording run reports.
pub struct Finished {
    pub progress: Progress,
    /// Exit status of the launched program.
    pub exit: Option<std::process::ExitStatus>,
    pub bytes: u64,
    /// Files written (more than one when the recording rotated).
    pub parts: u32,
    pub write_error: Option<io::Error>,
    /// Processes recorded, with their failure counts.
    pub processes: Vec<(i32, String, u64)>,
    /// The launched program, when the recording ended before it did (a write error): the
    /// caller still waits for it.
    pub running: Option<Launched>,
    /// Trigger crossings (each with its dump file written).
    pub triggered: u64,
}

impl<'a> Sampler<'a> {
    /// Prepare to record `root`. Attaching to a process that is not Python fails here (unless
    /// its children are recorded too).
    pub fn new(
        config: Config,
        mut writer: Writer,
        root: Root,
        stop: &'a AtomicBool,
    ) -> Result<Sampler<'a>> {
        let pid = root.pid();
        let key = ProcessKey::of(pid).ok_or(Error::NoSuchProcess(pid))?;
        let mut processes = Vec::new();
        let mut recorded = BTreeMap::new();
        let mut progress = Progress::default();
        // An attached root must be Python now (that error is the user's to see); a launched one
        // becomes Python after it starts, found by the discovery thread.
        let root_waits = match &root {
            Root::Attach(_) => {
                let located =
                    binary::locate(pid).and_then(|b| StackReader::new(ProcessMemory::new(pid), b));
                match located {
                    Ok(reader) => {
                        let mut p = ProcessSampler::start(key, reader, None, 0, &mut writer)?;
                        if !config.tasks {
                            p.without_tasks();
                        }
                        recorded.insert(pid, p.id);
                        processes.push(p);
                        progress.processes_seen = 1;
                        false
                    }
                    Err(Error::NotPython { .. } | Error::Unsupported(_)) if config.subprocesses => {
                        true
                    }
                    Err(e) => return Err(e),
                }
            }
            Root::Launch(_) => true,
        };
        let (found_tx, found) = channel();
        let (recheck, recheck_rx) = channel();
        let discovery_done = Arc::new(AtomicBool::new(false));
        let done = discovery_done.clone();
        let subprocesses = config.subprocesses;
        std::thread::Builder::new()
            .name("memspy-discovery".into())
            .spawn(move || {
                discovery::run(key, root_waits, subprocesses, found_tx, recheck_rx, done)
            })
            .map_err(|e| Error::io("starting the discovery thread", e))?;
        Ok(Sampler {
            writer,
            root,
            stop,
            processes,
            found,
            recheck,
            discovery_done,
            progress,
            parts: 1,
            bytes_before: 0,
            file_start: Progress::default(),
            recorded,
            finished: Vec::new(),
            write_error: None,
            sources: Sources::new(),
            memory_events: MemoryEvents::new(config.memory_events, config.fault_period),
            // Before the recording (and a launched program) starts: switching the events on
            // costs about 100 ms once.
            _warm: config
                .memory_events
                .then(crate::target::perf::keep_warm)
                .flatten(),
            triggers: config.triggers.clone().map(trigger::Triggers::new),
            config,
        })
    }

    /// Record until done; `on_progress` is called about ten times a second.
    pub fn run(mut self, mut on_progress: impl FnMut(&Progress)) -> Finished {
        if self.config.announce {
            // An attached root, found before the recording started.
            for p in &self.processes {
                announce_found(p, None);
            }
        }
        let _ = nix::sys::prctl::set_timerslack(1);
        let interval = (1e9 / self.config.rate_hz).max(1.0) as u64;
        // Run as soon as a tick or memory event wakes this thread (see target::sched). Only
        // this thread: the program and memspy's other threads were started before. A clock
        // that spins never sleeps, and must not hold a CPU at real-time priority.
        if !Clock::spins(interval) {
            crate::target::sched::run_promptly();
        }
        let start = now_ns();
        let deadline = self.config.duration.map(|d| start + d.as_nanos() as u64);
        let (mut next_status, mut next_rollup, mut next_report, mut next_stats) =
            (start, start, start, start);
        let mut next_adapt = start + ADAPT_NS;
        let mut exit_status = None;
        let mut clock = match Clock::new(start, interval) {
            Ok(c) => c,
            Err(e) => {
                self.write_error = Some(io::Error::other(format!("the sampling clock: {e}")));
                return self.finish(None);
            }
        };
        let mut woken = Woken::default();
        // Ticks due so far: tick k is due at start + k * interval.
        let mut due: u64 = 0;
        loop {
            // Stop conditions.
            if self.stop.load(Ordering::Relaxed) || self.write_error.is_some() {
                break;
            }
            if deadline.is_some_and(|d| now_ns() >= d) {
                break;
            }
            if self
                .config
                .max_size
                .is_some_and(|m| self.writer.size() >= m)
            {
                // A new file starts with every definition so far: once those take half the
                // size, rotating would make file after file of definitions; it ends instead.
                let room = self
                    .config
                    .max_size
                    .is_some_and(|m| self.writer.rotated_start_size() * 2 <= m);
                match self.config.rotate.clone() {
                    Some(template) if room => self.rotate(&template),
                    _ => {
                        self.progress.max_size_reached = true;
                        break;
                    }
                }
            }
            if let Root::Launch(l) = &mut self.root {
                if let Some(status) = l.poll() {
                    exit_status = Some(status);
                    break;
                }
            } else if self.processes.is_empty() && !self.root_alive() {
                break;
            }

            // Wait for the next tick or memory event. Memory events are handled at once, in
            // between ticks: the thread's stack is read while it is still growing memory.
            let before = now_ns();
            clock.wait(&mut woken);
            let now = now_ns();
            self.progress.waited += Duration::from_nanos(now.saturating_sub(before));
            let time_us = now.saturating_sub(start) / 1000;
            for i in 0..woken.events.len() {
                self.memory_event(woken.events[i], time_us);
            }
            for i in 0..woken.hung_up.len() {
                let (process, thread) = ((woken.hung_up[i] >> 32) as u32, woken.hung_up[i] as u32);
                if let Some(p) = self.processes.iter_mut().find(|p| p.id == process) {
                    p.close_memory_events(thread, &clock);
                }
            }
            if woken.ticks == 0 {
                continue;
            }
            // The schedule is absolute: a wake-up that comes more than a period late finds
            // several expirations; all but the last are missed ticks, not made up in a burst.
            due += woken.ticks;
            self.progress.missed_ticks += woken.ticks - 1;
            let late = now.saturating_sub(start + (due - 1) * interval);
            self.progress.late_max = self.progress.late_max.max(Duration::from_nanos(late));
            self.progress.late_total += Duration::from_nanos(late);
            self.progress.ticks += 1;

            self.adopt(time_us);
            self.sample_all(time_us, &clock);
            if self.memory_events.enabled() {
                let threads: usize = self.processes.iter().map(|p| p.busy_event_threads()).sum();
                let budget = events::read_budget(threads);
                for p in &mut self.processes {
                    p.settle_periods(now, self.memory_events.period, budget);
                }
            }
            if now >= next_adapt {
                let window = (now - next_adapt + ADAPT_NS) as f64 / 1e9;
                next_adapt = now + ADAPT_NS;
                // The budget of stack reads is shared by the threads that read memory events.
                let threads: usize = self.processes.iter().map(|p| p.busy_event_threads()).sum();
                let budget = events::read_budget(threads);
                for p in &mut self.processes {
                    p.adapt_periods(window, budget, &mut self.memory_events);
                }
            }
            if now >= next_status {
                next_status = now + STATUS_NS.max(interval);
                let rollup = self.config.memory != MemoryMode::Rss && now >= next_rollup;
                let mut cost = 0;
                for p in &mut self.processes {
                    match p.sample_memory_split(&mut self.writer, time_us, rollup) {
                        Ok(c) => cost += c.unwrap_or(0),
                        Err(e) => {
                            self.write_error.get_or_insert(e);
                        }
                    }
                }
                if rollup {
                    next_rollup = now + (cost * 1000 * 100).clamp(ROLLUP_MIN_NS, ROLLUP_MAX_NS);
                }
            }
            if now >= next_report {
                next_report = now + 100_000_000;
                self.progress.elapsed = Duration::from_nanos(now - start);
                self.progress.processes_now = self.processes.len();
                self.progress.rss_now = self.processes.iter().map(|p| p.last_rss).sum();
                self.progress.memory_events = self.memory_events.counts.samples;
                on_progress(&self.progress);
            }
            if now >= next_stats {
                next_stats = now + 1_000_000_000;
                let written = self
                    .sources
                    .write_ready(&mut self.writer)
                    .and_then(|()| self.write_stats())
                    .and_then(|()| self.writer.tick(time_us));
                if let Err(e) = written {
                    self.write_error.get_or_insert(e);
                }
            }
        }
        self.progress.elapsed = Duration::from_nanos(now_ns() - start);
        if self.config.memory != MemoryMode::Rss {
            self.progress.processes_now = self.processes.len();
        }
        self.finish(exit_status)
    }

    /// A memory event of one recorded thread (token: process id << 32 | thread token).
    fn memory_event(&mut self, token: u64, time_us: u64) {
        let (process, thread) = ((token >> 32) as u32, token as u32);
        let Some(p) = self.processes.iter_mut().find(|p| p.id == process) else {
            return;
        };
        if let Err(e) = p.memory_event(&mut self.writer, thread, time_us, &mut self.memory_events) {
            self.write_error.get_or_insert(e);
        }
    }

    fn root_alive(&self) -> bool {
        ProcessKey::of(self.root.pid()).is_some()
            || (self.config.subprocesses && !procfs::descendants(self.root.pid()).is_empty())
    }

    /// Start sampling the processes the discovery thread found.
    fn adopt(&mut self, time_us: u64) {
        while let Ok(found) = self.found.try_recv() {
            let parent = found
                .parent_pid
                .and_then(|pid| self.recorded.get(&pid).copied());
            match ProcessSampler::start(found.key, found.reader, parent, time_us, &mut self.writer)
            {
                Ok(mut p) => {
                    if !self.config.tasks {
                        p.without_tasks();
                    }
                    // Every process gets its memory split (and PSS/USS when asked) once at
                    // once, however short its life; then at the usual rates.
                    let rollup = self.config.memory != MemoryMode::Rss;
                    if let Err(e) = p.sample_memory_split(&mut self.writer, time_us, rollup) {
                        self.write_error.get_or_insert(e);
                    }
                    if self.config.announce {
                        announce_found(&p, found.parent_pid);
                    }
                    self.recorded.insert(found.key.pid, p.id);
                    self.processes.push(p);
                    self.progress.processes_seen += 1;
                }
                Err(Error::Io { source, .. }) => {
                    self.write_error.get_or_insert(source);
                }
                // It ended between being found and being adopted.
                Err(_) => {}
            }
        }
    }

    /// One tick for every recorded process.
    fn sample_all(&mut self, time_us: u64, clock: &Clock) {
        let blocking = self.config.blocking;
        let mut ended = Vec::new();
        for (i, p) in self.processes.iter_mut().enumerate() {
            let mut ctx = process::Events {
                clock,
                memory: &mut self.memory_events,
            };
            let sampled = p.sample(&mut self.writer, time_us, blocking, &mut ctx);
            self.progress.pauses.merge(&std::mem::take(&mut p.pauses));
            p.hand_over_files(&mut self.sources);
            if let Some(e) = p.stop_refused.take() {
                if !p.said_stop_refused {
                    p.said_stop_refused = true;
                    match e {
                        Error::Traced { pid, tracer } => eprintln!(
                            "memspy: warning: process {pid} is being traced by process {tracer} \
                             (a debugger or another profiler); memspy reads its stacks without \
                             pausing it"
                        ),
                        other => eprintln!(
                            "memspy: warning: cannot pause process {}: {other}; reading its \
                             stacks without pausing it",
                            p.key.pid
                        ),
                    }
                }
            }
            if let (Ok(Outcome::Sampled), Some(t)) = (&sampled, self.triggers.as_mut()) {
                if let Err(e) = t.check(&mut self.writer, p.id, p.key, time_us, p.last_rss) {
                    self.write_error.get_or_insert(e);
                }
            }
            match sampled {
                Ok(Outcome::Sampled) => self.progress.samples += 1,
                Ok(Outcome::Failed(kind)) => *self.progress.failures.entry(kind).or_insert(0) += 1,
                Ok(Outcome::Ended(reason)) => ended.push((i, reason)),
                Err(e) => {
                    self.write_error.get_or_insert(e);
                    return;
                }
            }
        }
        for (i, reason) in ended.into_iter().rev() {
            let p = self.processes.remove(i);
            if let Some(t) = self.triggers.as_mut() {
                t.forget(p.id);
            }
            // The launched program's status from our wait; a worker's from its zombie, while
            // its parent has not reaped it yet.
            let status = match (&mut self.root, reason) {
                (Root::Launch(l), EndReason::Exited) if l.pid() == p.key.pid => l.poll(),
                (_, EndReason::Exited) => procfs::zombie_status(p.key.pid, p.key.starttime),
                _ => None,
            };
            let (reason, exit) = end_of(reason, status);
            if self.config.announce {
                eprintln!(
                    "memspy: process {} {}",
                    p.key.pid,
                    reason.describe_with(exit)
                );
            }
            if let Err(e) = self.writer.process_end(p.id, time_us, reason, exit) {
                self.write_error.get_or_insert(e);
            }
            if reason == EndReason::Exec {
                // Same process, new program: look at it again.
                let parent = self.processes_parent_pid(&p);
                let _ = self.recheck.send((p.key, parent));
            }
            self.finished
                .push((p.key.pid, p.command.clone(), p.failed()));
        }
    }

    /// The pid of the recorded parent of `p`, if any.
    fn processes_parent_pid(&self, p: &ProcessSampler) -> Option<i32> {
        let parent = p.parent?;
        self.recorded
            .iter()
            .find(|(_, id)| **id == parent)
            .map(|(pid, _)| *pid)
    }

    /// End the current file and go on in the next one (see [`Config::rotate`]).
    fn rotate(&mut self, template: &std::path::Path) {
        let stats = self.write_stats();
        let part = self.parts + 1;
        let path = part_path(template, part);
        let bytes = self.writer.bytes_written;
        match stats.and_then(|()| self.writer.rotate(&path, part)) {
            Ok(()) => {
                if self.config.announce {
                    eprintln!(
                        "memspy: {} reached --max-size; going on in {}",
                        visible(&part_path(template, self.parts).to_string_lossy()),
                        visible(&path.to_string_lossy())
                    );
                }
                self.parts = part;
                self.bytes_before += bytes;
                self.file_start = self.progress.clone();
            }
            Err(e) => {
                self.write_error = Some(io::Error::new(
                    e.kind(),
                    format!("starting {}: {e}", path.display()),
                ))
            }
        }
    }

    /// The schedule statistics of the current file (of the whole recording, without rotation).
    fn write_stats(&mut self) -> io::Result<()> {
        let (p, base) = (&self.progress, &self.file_start);
        let busy = p.elapsed.saturating_sub(p.waited);
        let busy_before = base.elapsed.saturating_sub(base.waited);
        self.writer.stats(
            p.ticks - base.ticks,
            p.missed_ticks - base.missed_ticks,
            p.late_max.as_micros() as u64,
            p.late_total.saturating_sub(base.late_total).as_micros() as u64,
            busy.saturating_sub(busy_before).as_micros() as u64,
            (
                p.pauses.count - base.pauses.count,
                (p.pauses.total_ns - base.pauses.total_ns) / 1000,
                p.pauses.max_ns / 1000,
            ),
        )?;
        let m = &self.memory_events;
        let (p50, p99) = m.delay_percentiles().unwrap_or((0, 0));
        self.writer.memory_events(&MemoryEventsSummary {
            mode: match &m.mode {
                Mode::FaultsAndFrees => "faults and frees".into(),
                Mode::FaultsOnly(why) => format!("faults only: {why}"),
                Mode::Off(why) => format!("off: {why}"),
                Mode::Untried => "off: no thread to open them on".into(),
            },
            period: m.period,
            samples: m.counts.samples,
            faults: m.counts.faults,
            frees: m.counts.frees,
            lost: m.counts.lost,
            failed: m.counts.failed,
            max_period: m.counts.max_period,
            delay_p50_us: p50,
            delay_p99_us: p99,
        })
    }

    fn finish(mut self, exit_status: Option<std::process::ExitStatus>) -> Finished {
        self.discovery_done.store(true, Ordering::Relaxed);
        if self.write_error.is_none() {
            if let Err(e) = self.sources.finish(&mut self.writer) {
                self.write_error.get_or_insert(e);
            }
        }
        let time_us = self.progress.elapsed.as_micros() as u64;
        let mut exit_status = exit_status;
        for p in std::mem::take(&mut self.processes) {
            let (reason, exit) = match &mut self.root {
                Root::Launch(l) if l.pid() == p.key.pid => {
                    let s = l.poll();
                    exit_status = exit_status.or(s);
                    match s {
                        Some(_) => end_of(EndReason::Exited, s),
                        None => (EndReason::RecordingEnded, None),
                    }
                }
                _ if !p.key.alive() => end_of(
                    EndReason::Exited,
                    procfs::zombie_status(p.key.pid, p.key.starttime),
                ),
                _ => (EndReason::RecordingEnded, None),
            };
            let _ = self.writer.process_end(p.id, time_us, reason, exit);
            self.finished
                .push((p.key.pid, p.command.clone(), p.failed()));
        }
        let stats = self.write_stats();
        let write_error = self.write_error.take().or(stats.err());
        let (bytes, write_error) = match write_error {
            Some(e) => {
                let _ = self.writer.flush();
                (self.bytes_before + self.writer.bytes_written, Some(e))
            }
            None => match self.writer.finish() {
                Ok(bytes) => (self.bytes_before + bytes, None),
                Err(e) => (self.bytes_before, Some(e)),
            },
        };
        self.progress.processes_seen = self.progress.processes_seen.max(self.finished.len());
        let running = match self.root {
            Root::Launch(l) if exit_status.is_none() => Some(l),
            _ => None,
        };
        // The dumps of the last crossings (they read the finished file).
        let triggered = self.triggers.map_or(0, trigger::Triggers::finish);
        Finished {
            parts: self.parts,
            progress: self.progress,
            exit: exit_status,
            bytes,
            write_error,
            processes: self.finished,
            running,
            triggered,
        }
    }
}
