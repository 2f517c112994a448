//! Attribution: turning samples into time and memory per stack, function and line. All the
//! rules live here.
//!
//! **Time.** Every thread of every tick sample counts for the stack it was on:
//! - *wall*: the time since the process's previous sample (capped at ten sampling intervals,
//!   and at least 20 ms: a tick late by half a millisecond is ordinary at 20 kHz; so
//!   a pause of the recorder is not blamed on anyone; the first sample counts one interval);
//! - *cpu*: the CPU time the thread used since its previous sample (`schedstat`), so idle
//!   threads weigh nothing.
//!
//! **Memory.** A process is observed at ticks (all its threads) and at memory events (one
//! thread, read the moment the kernel said it faulted pages in, or returned from munmap,
//! madvise or brk; see `sample::events`). Its memory series is its RSS at every observation
//! (or, recorded with `--memory pss|uss`, its PSS/USS readings, taken less often). Each change
//! between two consecutive readings is attributed to what was observed in between:
//! 1. with an RSS series that is the reading's own observation; a sparser series (PSS/USS) is
//!    spread over the observations of the interval: a growth in proportion to their page
//!    faults, a decrease to the memory events that freed memory, else evenly over the ticks;
//! 2. a memory event's share goes to its own thread's stack: it was read right after the
//!    faults or the free, except for the part estimated to have happened before the thread
//!    left the stack memspy had read just before (from the kernel's timestamps of the faults,
//!    the moment of the change being unknown between the two reads), which goes to that
//!    earlier stack: a burst that ends just before the read is not blamed on the code after
//!    it. A tick's share is split between its threads by the minor page faults
//!    each caused since the previous tick and that no memory event of theirs has placed
//!    already (the thread that touched new pages grew the memory); with no faults to go by, it
//!    goes to the thread holding the GIL, else to the thread that used the most CPU, else
//!    evenly to the threads that were in Python code. A decrease at a tick is first looked for
//!    among the threads whose stack changed since the previous tick (memory is freed when code
//!    finishes), then by the same rules;
//! 3. within a tick's thread, a *growth* goes half to the stack it had when last observed (at
//!    its last memory event since the previous tick, else at that tick) and half to the one it
//!    has now (the growth happened in between; this halves the error at the boundary between
//!    two functions); a *decrease* goes to the stack it had at the previous tick, because
//!    memory is mostly released when the code holding it finishes;
//! 4. growth whose page faults were made by threads that never run Python (native thread
//!    pools, C extensions' workers: the process's faults minus its Python threads') is reported
//!    as `[non-Python threads]`, in proportion to those faults; a change with no observation
//!    to take it as `[unattributed]`; one that lands on a thread outside Python code as
//!    `[no Python frames]`: never hidden;
//! 5. **frees cancel the growth they undo.** Each growth is kept, per process, as a chunk owned
//!    by the stack it went to; a decrease cancels the most recent chunks first (temporaries are
//!    freed in the reverse order they were made, and the allocators hand back their newest
//!    memory first), wherever it happened. What is left at the end is the *retained* memory of
//!    each stack; what is left when the process reaches its highest reading is its part of the
//!    *peak*. A decrease with no growth left to cancel freed memory from before the recording
//!    and is counted, negative, as `[memory from before the recording]`. Memory released after
//!    the process's last Python frame, or once its interpreter was seen finalizing
//!    (`_PyRuntime._finalizing` set: the modules are being torn down, even if a `__del__` runs
//!    Python code then), is not a free of the program's: it is `[interpreter shutdown]`'s and
//!    cancels nothing, so a program's retained memory is what it held while it ran.
//!
//! Positive changes sum to *growth* (by the stack that grew), negative ones, as positive
//! numbers, to *freed* (by the stack that freed); *retained* is what rule 5
//! leaves. The totals agree: growth - freed = retained = the last reading minus the first.
//! The first reading of a process is its baseline and is attributed to nobody.
//!
//! Rule 5 replaced an earlier one, under which a stack's net was its own growth minus the
//! decreases that happened while it ran: memory allocated in a function and freed when its
//! caller returned showed as a large positive net on the function and a negative one on the
//! caller, so the top function by net was not the leak.

pub mod check;
pub mod findings;
pub mod functions;
pub mod timeline;

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use crate::recording::reader::{Sample, TaskState, ThreadSample};
use crate::recording::{MemoryKind, Recording};
use timeline::{Timeline, Who};

/// What a report measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    Wall,
    Cpu,
    Growth,
    Freed,
    Retained,
    Peak,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Wall,
        Metric::Cpu,
        Metric::Growth,
        Metric::Freed,
        Metric::Retained,
        Metric::Peak,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Wall => "wall",
            Metric::Cpu => "cpu",
            Metric::Growth => "growth",
            Metric::Freed => "freed",
            Metric::Retained => "retained",
            Metric::Peak => "peak",
        }
    }

    /// A phrase for titles.
    pub fn title(self) -> &'static str {
        match self {
            Metric::Wall => "Wall time",
            Metric::Cpu => "CPU time",
            Metric::Growth => "Memory growth",
            Metric::Freed => "Memory freed",
            Metric::Retained => "Memory retained",
            Metric::Peak => "Memory at peak",
        }
    }

    /// Whether values are bytes (else microseconds).
    pub fn is_memory(self) -> bool {
        !matches!(self, Metric::Wall | Metric::Cpu)
    }
}

/// Where a value landed within a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// A recorded stack (innermost frame's id in the stack tree).
    Stack(u32),
    /// A Python thread that was not running Python code.
    NoPythonFrames,
    /// Memory grown by threads that never run Python (their page faults, not Python's).
    NativeThreads,
    /// Memory that changed while no Python thread could take it.
    Unattributed,
    /// Memory from before the recording started, freed during it (retained can go below the
    /// first reading only here).
    BeforeRecording,
    /// Memory released by the interpreter as the process shut down, after its last Python
    /// frame: not a free of the program's, so it cancels no growth (see rule 5).
    Shutdown,
}

impl Site {
    /// The sites that are not Python stacks.
    pub const PSEUDO: [Site; 5] = [
        Site::NoPythonFrames,
        Site::NativeThreads,
        Site::Unattributed,
        Site::BeforeRecording,
        Site::Shutdown,
    ];

    /// How reports name a site that is not a stack.
    pub fn pseudo_label(self) -> Option<&'static str> {
        match self {
            Site::Stack(_) => None,
            Site::NoPythonFrames => Some("[no Python frames]"),
            Site::NativeThreads => Some("[non-Python threads]"),
            Site::Unattributed => Some("[unattributed]"),
            Site::BeforeRecording => Some("[memory from before the recording]"),
            Site::Shutdown => Some("[interpreter shutdown]"),
        }
    }
}

/// A site in a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Index into `Recording::processes`.
    pub process: u32,
    pub site: Site,
}

/// Every metric's values by key. Time in microseconds, memory in bytes.
#[derive(Clone, Debug, Default)]
pub struct Attribution {
    pub wall: HashMap<Key, f64>,
    pub cpu: HashMap<Key, f64>,
    pub growth: HashMap<Key, f64>,
    pub freed: HashMap<Key, f64>,
    pub retained: HashMap<Key, f64>,
    pub peak: HashMap<Key, f64>,
    /// Per process: its memory series (time µs, bytes) as attributed.
    pub series: Vec<Vec<(u64, u64)>>,
}

impl Attribution {
    pub fn values(&self, metric: Metric) -> &HashMap<Key, f64> {
        match metric {
            Metric::Wall => &self.wall,
            Metric::Cpu => &self.cpu,
            Metric::Growth => &self.growth,
            Metric::Freed => &self.freed,
            Metric::Retained => &self.retained,
            Metric::Peak => &self.peak,
        }
    }

    pub fn total(&self, metric: Metric) -> f64 {
        // `+ 0.0` turns the -0.0 of an empty sum into 0.0.
        self.values(metric).values().sum::<f64>() + 0.0
    }
}

/// Which processes to look at.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only processes with this pid.
    pub pid: Option<i32>,
    /// OS threads only: leave waiting greenlets and tasks out (`--tasks off`).
    pub threads_only: bool,
    /// Only observations in this time window (µs of recording time, both ends included): the
    /// reports then read as if the recording had started and ended there.
    pub window: Option<(u64, u64)>,
}

impl Filter {
    pub fn includes(&self, rec: &Recording, process: u32) -> bool {
        self.pid
            .is_none_or(|pid| rec.processes[process as usize].pid == pid)
    }

    /// Whether an observation at `time_us` is in the window.
    pub fn in_window(&self, time_us: u64) -> bool {
        self.window
            .is_none_or(|(from, to)| (from..=to).contains(&time_us))
    }
}

/// One end of a time window: seconds of recording time, or a share of the recording.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    Seconds(f64),
    Percent(f64),
}

impl std::str::FromStr for Bound {
    type Err = String;

    /// `12`, `12.5s`, `2m` (seconds, minutes) or `25%`.
    fn from_str(s: &str) -> std::result::Result<Bound, String> {
        let t = s.trim();
        let bad = || {
            format!(
                "{s:?} is not a time (give seconds like 12.5 or 12.5s, 2m, or a share like 25%)"
            )
        };
        let (number, scale, percent) = if let Some(n) = t.strip_suffix('%') {
            (n, 1.0, true)
        } else if let Some(n) = t.strip_suffix("ms") {
            (n, 1e-3, false)
        } else if let Some(n) = t.strip_suffix('s') {
            (n, 1.0, false)
        } else if let Some(n) = t.strip_suffix('m') {
            (n, 60.0, false)
        } else {
            (t, 1.0, false)
        };
        let v: f64 = number.trim().parse().map_err(|_| bad())?;
        if !v.is_finite() || v < 0.0 || (percent && v > 100.0) {
            return Err(bad());
        }
        Ok(if percent {
            Bound::Percent(v)
        } else {
            Bound::Seconds(v * scale)
        })
    }
}

/// The time window the reports look at: `--from`, `--to`, `--skip-startup`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowSpec {
    pub from: Option<Bound>,
    pub to: Option<Bound>,
    /// Start after the program's start-up: the last sample, in the first half of the
    /// recording, of a thread running an import (a frame of `<frozen importlib._bootstrap>`).
    pub skip_startup: bool,
}

impl WindowSpec {
    /// The window in µs of recording time (None: all of it). Times count from the first
    /// sample; a share is of the time from the first sample to the last.
    pub fn resolve(&self, rec: &Recording) -> std::result::Result<Option<(u64, u64)>, String> {
        if *self == WindowSpec::default() {
            return Ok(None);
        }
        let (Some(first), Some(last)) = (rec.samples.first(), rec.samples.last()) else {
            return Ok(None);
        };
        let (first, last) = (first.time_us, last.time_us);
        let span = last.saturating_sub(first);
        let at = |b: Bound| -> u64 {
            let offset = match b {
                Bound::Seconds(s) => (s * 1e6).min(u64::MAX as f64 / 2.0) as u64,
                Bound::Percent(p) => (span as f64 * p / 100.0) as u64,
            };
            first.saturating_add(offset)
        };
        let mut from = self.from.map_or(first, at);
        let to = self.to.map_or(last, at);
        if self.skip_startup {
            if let Some(end) = startup_end(rec, first + span / 2) {
                from = from.max(end.saturating_add(1));
            }
        }
        if from > to || from > last {
            return Err(format!(
                "the time window is empty: the recording's samples span {:.1} s",
                span as f64 / 1e6
            ));
        }
        Ok(Some((from, to)))
    }
}

/// The time of the last sample at or before `until` with a thread running an import.
fn startup_end(rec: &Recording, until: u64) -> Option<u64> {
    let importing: Vec<bool> = rec
        .functions
        .iter()
        .map(|f| rec.string(f.file).starts_with("<frozen importlib"))
        .collect();
    let mut memo: FxHashMap<u32, bool> = FxHashMap::default();
    let mut end = None;
    for s in rec.samples.iter().take_while(|s| s.time_us <= until) {
        let imports = rec.threads_of(s).iter().any(|t| {
            t.stack.is_some_and(|stack| {
                *memo.entry(stack).or_insert_with(|| {
                    rec.stack_frames(stack)
                        .any(|f| importing.get(f.function as usize).copied().unwrap_or(false))
                })
            })
        });
        if imports {
            end = Some(s.time_us);
        }
    }
    end
}

/// The memory kind a recording's attribution uses.
fn memory_kind(rec: &Recording) -> Option<MemoryKind> {
    match rec.meta.memory.as_str() {
        "pss" => Some(MemoryKind::Pss),
        "uss" => Some(MemoryKind::Uss),
        _ => None,
    }
}

/// Accumulates every metric of a key in one row: one hash lookup per update instead of one per
/// metric (a million-sample recording makes millions of updates).
#[derive(Default)]
struct Table {
    index: FxHashMap<Key, usize>,
    rows: Vec<(Key, [f64; 6])>,
}

const WALL: usize = 0;
const CPU: usize = 1;
const GROWTH: usize = 2;
const FREED: usize = 3;
const RETAINED: usize = 4;
const PEAK: usize = 5;

impl Table {
    fn row(&mut self, key: Key) -> &mut [f64; 6] {
        let next = self.rows.len();
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            self.rows.push((key, [0.0; 6]));
        }
        &mut self.rows[i].1
    }
}

/// The memory a process grew and has not freed, as chunks owned by the stacks that grew them,
/// newest last (rule 5 of the module documentation).
#[derive(Default)]
struct Ledger {
    /// (owner, amount, timeline bucket it was grown in: 0 without a timeline).
    chunks: Vec<(Key, f64, u32)>,
    /// Decreases beyond everything grown during the recording: memory from before it.
    freed_from_before: f64,
    /// Memory released at interpreter shutdown (it cancels nothing).
    freed_at_shutdown: f64,
}

/// Chunks smaller than this (bytes) are rounding residue.
const RESIDUE: f64 = 1e-6;

impl Ledger {
    /// `key` grew memory by `amount` at `time_us`.
    fn grow(
        &mut self,
        table: &mut Table,
        timeline: Option<&mut Timeline>,
        time_us: u64,
        key: Key,
        amount: f64,
    ) {
        table.row(key)[GROWTH] += amount;
        let bucket = match timeline {
            Some(t) => {
                t.grow(time_us, key, amount);
                t.bucket(time_us)
            }
            None => 0,
        };
        match self.chunks.last_mut() {
            Some((k, v, b)) if *k == key && *b == bucket => *v += amount,
            _ => self.chunks.push((key, amount, bucket)),
        }
    }

    /// Memory shrank by `amount` at `time_us` while `key` ran: freed there; it cancels the
    /// newest growth.
    fn free(
        &mut self,
        table: &mut Table,
        mut timeline: Option<&mut Timeline>,
        time_us: u64,
        key: Key,
        amount: f64,
    ) {
        table.row(key)[FREED] += amount;
        if let Some(t) = timeline.as_deref_mut() {
            t.add(time_us, key, timeline::FREED, amount);
        }
        if key.site == Site::Shutdown {
            self.freed_at_shutdown += amount;
            return;
        }
        let mut left = amount;
        while left > RESIDUE {
            let Some((owner, v, made)) = self.chunks.last_mut() else {
                break;
            };
            let take = v.min(left);
            *v -= take;
            left -= take;
            if let Some(t) = timeline.as_deref_mut() {
                t.cancel(*made, *owner, time_us, take);
            }
            if *v <= RESIDUE {
                self.chunks.pop();
            }
        }
        if left > RESIDUE {
            self.freed_from_before += left;
        }
    }

    /// What each stack holds now: its contribution to the peak, when this is the peak.
    fn held(&self, table: &mut Table, metric: usize, process: u32) {
        for &(key, v, _) in &self.chunks {
            table.row(key)[metric] += v;
        }
        for (site, amount) in [
            (Site::BeforeRecording, self.freed_from_before),
            (Site::Shutdown, self.freed_at_shutdown),
        ] {
            if amount > 0.0 {
                table.row(Key { process, site })[metric] -= amount;
            }
        }
    }
}

/// One observation of a process in time order: a tick sample or a memory event (indices into
/// `Recording::samples` / `Recording::memory_events`).
#[derive(Clone, Copy, Debug)]
enum Observation {
    Tick(u32),
    Event(u32),
}

impl Observation {
    fn time(self, rec: &Recording) -> u64 {
        match self {
            Observation::Tick(i) => rec.samples[i as usize].time_us,
            Observation::Event(i) => rec.memory_events[i as usize].time_us,
        }
    }

    fn rss(self, rec: &Recording) -> u64 {
        match self {
            Observation::Tick(i) => rec.samples[i as usize].rss_bytes,
            Observation::Event(i) => rec.memory_events[i as usize].rss_bytes,
        }
    }
}

/// The page faults a tick's thread made since the previous tick that no memory event of that
/// thread has placed already (rule 2: a tick splits only what the events left), by index into
/// `Recording::thread_samples`; entries not listed keep their recorded count.
fn faults_left_to_ticks(rec: &Recording, observations: &[Observation]) -> FxHashMap<u32, f64> {
    let mut placed: FxHashMap<u32, f64> = FxHashMap::default();
    let mut left = FxHashMap::default();
    for &o in observations {
        match o {
            Observation::Event(i) => {
                let e = &rec.memory_events[i as usize];
                *placed.entry(e.thread).or_insert(0.0) += e.faults as f64;
            }
            Observation::Tick(i) if !placed.is_empty() => {
                let s = &rec.samples[i as usize];
                for (k, t) in rec.threads_of(s).iter().enumerate() {
                    // A tick whose counters were not read (above ~1.3 kHz) says no faults: what
                    // events placed waits for the tick that reads them.
                    if t.minflt == 0 {
                        continue;
                    }
                    if let Some(done) = placed.remove(&t.thread) {
                        let index = s.first_thread + k as u32;
                        left.insert(index, (t.minflt as f64 - done).max(0.0));
                    }
                }
            }
            Observation::Tick(_) => {}
        }
    }
    left
}

/// For each memory event that freed memory, or says some of its faults or frees came before
/// its thread moved on, the stack the thread had at its previous observation (tick or event),
/// by event index.
fn stacks_before_events(
    rec: &Recording,
    observations: &[Observation],
) -> FxHashMap<u32, Option<u32>> {
    let mut last: FxHashMap<u32, Option<u32>> = FxHashMap::default();
    let mut before = FxHashMap::default();
    for &o in observations {
        match o {
            Observation::Tick(i) => {
                for t in rec.threads_of(&rec.samples[i as usize]) {
                    last.insert(t.thread, t.stack);
                }
            }
            Observation::Event(i) => {
                let e = &rec.memory_events[i as usize];
                if e.faults_before > 0 || e.frees_before > 0 || e.frees > 0 {
                    if let Some(&stack) = last.get(&e.thread) {
                        before.insert(i, stack);
                    }
                }
                last.insert(e.thread, e.stack);
            }
        }
    }
    before
}

/// For each tick's thread (by thread-sample index) that had memory events since the process's
/// previous tick, the stack of the last of them: the thread's latest observation before the
/// tick, which the growth the tick sees followed (rule 3's "previous stack").
fn event_stacks_before_ticks(
    rec: &Recording,
    observations: &[Observation],
) -> FxHashMap<u32, Option<u32>> {
    let mut since_tick: FxHashMap<u32, Option<u32>> = FxHashMap::default();
    let mut before = FxHashMap::default();
    for &o in observations {
        match o {
            Observation::Tick(i) => {
                let s = &rec.samples[i as usize];
                for (k, t) in rec.threads_of(s).iter().enumerate() {
                    if let Some(stack) = since_tick.remove(&t.thread) {
                        before.insert(s.first_thread + k as u32, stack);
                    }
                }
                since_tick.clear();
            }
            Observation::Event(i) => {
                let e = &rec.memory_events[i as usize];
                if e.fresh {
                    since_tick.insert(e.thread, e.stack);
                }
            }
        }
    }
    before
}

/// Wall time of process `p`'s waiting greenlets and tasks: each waits at its stack from the
/// sample of a change to the sample of its next change (`elapsed`: the wall time charged
/// before each sample; `end`: all of it), and is charged that time there, as a thread at
/// that stack would be. A running unit's time is its thread's, counted already.
#[allow(clippy::too_many_arguments)]
fn waiting_wall(
    rec: &Recording,
    window: Option<(u64, u64)>,
    p: u32,
    elapsed: &FxHashMap<u32, f64>,
    end: f64,
    table: &mut Table,
    mut timeline: Option<&mut Timeline>,
    clock: &[(f64, u64)],
) {
    // Per task: where it waits and since when (wall charged before that sample).
    let mut since: FxHashMap<u32, (u32, f64)> = FxHashMap::default();
    // The recording time at which `charged` of wall time had been charged (`clock`: the wall
    // charged before each tick, and its time).
    let time_at = |charged: f64| -> u64 {
        let i = clock.partition_point(|c| c.0 <= charged);
        clock
            .get(i.saturating_sub(1))
            .map_or(0, |&(c, t)| t + (charged - c).max(0.0) as u64)
    };
    let mut charge = |table: &mut Table, task: u32, stack: u32, from: f64, to: f64| {
        if to > from {
            let key = Key {
                process: p,
                site: Site::Stack(stack),
            };
            table.row(key)[WALL] += to - from;
            if let Some(t) = timeline.as_deref_mut() {
                t.spread_wall(time_at(from), time_at(to), key, Who::Task(task), to - from);
            }
        }
    };
    for c in &rec.task_changes {
        if rec
            .tasks
            .get(c.task as usize)
            .is_none_or(|t| t.process != p)
        {
            continue;
        }
        let at = match elapsed.get(&c.sample) {
            Some(&at) => at,
            // A change before the window holds at its start.
            None => match (window, rec.samples.get(c.sample as usize)) {
                (Some((from, _)), Some(s)) if s.time_us < from => 0.0,
                _ => continue,
            },
        };
        if let Some((stack, from)) = since.remove(&c.task) {
            charge(table, c.task, stack, from, at);
        }
        if let TaskState::Waiting(Some(stack)) = c.state {
            since.insert(c.task, (stack, at));
        }
    }
    for (task, (stack, from)) in since {
        charge(table, task, stack, from, end);
    }
}

/// Attribute a whole recording (see the module documentation for the rules).
pub fn attribute(rec: &Recording, filter: &Filter) -> Attribution {
    attribute_over_time(rec, filter, None)
}

/// [`attribute`], also keeping the values per time bucket in `timeline`.
pub fn attribute_over_time(
    rec: &Recording,
    filter: &Filter,
    mut timeline: Option<&mut Timeline>,
) -> Attribution {
    let n = rec.processes.len();
    let mut a = Attribution {
        series: vec![Vec::new(); n],
        ..Attribution::default()
    };
    let mut table = Table::default();
    // The sampling interval, at least 1 µs, whatever the recording says its rate is.
    const MIN_WALL_CAP_US: u64 = 20_000;
    let interval_us = if rec.meta.rate_hz > 0.0 {
        ((1e6 / rec.meta.rate_hz) as u64).max(1)
    } else {
        10_000
    };
    let kind = memory_kind(rec);
    let tasks = !filter.threads_only && !rec.task_changes.is_empty();

    // Observations of each process, in time order.
    let mut by_process: Vec<Vec<Observation>> = vec![Vec::new(); n];
    for (i, s) in rec.samples.iter().enumerate() {
        if filter.includes(rec, s.process) && filter.in_window(s.time_us) {
            by_process[s.process as usize].push(Observation::Tick(i as u32));
        }
    }
    if !rec.memory_events.is_empty() {
        for (i, e) in rec.memory_events.iter().enumerate() {
            if filter.includes(rec, e.process) && filter.in_window(e.time_us) {
                by_process[e.process as usize].push(Observation::Event(i as u32));
            }
        }
        for obs in &mut by_process {
            // Stable: a tick and an event in the same microsecond keep their file order.
            obs.sort_by_key(|o| o.time(rec));
        }
    }
    for (p, observations) in by_process.iter().enumerate() {
        if observations.is_empty() {
            continue;
        }
        let p = p as u32;
        // Time, from the ticks; `elapsed[i]` is the wall time charged before sample i.
        let mut previous_time: Option<u64> = None;
        let mut elapsed: FxHashMap<u32, f64> = FxHashMap::default();
        let mut charged = 0.0;
        let mut clock: Vec<(f64, u64)> = Vec::new();
        for &o in observations {
            let Observation::Tick(i) = o else {
                continue;
            };
            let s = &rec.samples[i as usize];
            let dt = match previous_time {
                Some(t) => s
                    .time_us
                    .saturating_sub(t)
                    .min(interval_us.saturating_mul(10).max(MIN_WALL_CAP_US)),
                None => interval_us,
            } as f64;
            previous_time = Some(s.time_us);
            if tasks {
                elapsed.insert(i, charged);
                if timeline.is_some() {
                    clock.push((charged, s.time_us));
                }
            }
            charged += dt;
            for t in rec.threads_of(s) {
                let key = Key {
                    process: p,
                    site: site_of(t),
                };
                let row = table.row(key);
                row[WALL] += dt;
                row[CPU] += t.cpu_us as f64;
                if let Some(tl) = timeline.as_deref_mut() {
                    tl.add_tick(s.time_us, key, dt, t.cpu_us as f64);
                    tl.add_time_of(s.time_us, key, Who::Thread(t.thread), dt, t.cpu_us as f64);
                }
            }
        }
        if tasks {
            waiting_wall(
                rec,
                filter.window,
                p,
                &elapsed,
                charged,
                &mut table,
                timeline.as_deref_mut(),
                &clock,
            );
        }
        let faults_left = faults_left_to_ticks(rec, observations);
        // The process ran Python code until its last observation with a Python frame; what
        // it releases after that is the interpreter shutting down.
        let python_until = observations
            .iter()
            .rev()
            .find(|&&o| match o {
                Observation::Tick(i) => rec
                    .threads_of(&rec.samples[i as usize])
                    .iter()
                    .any(|t| t.stack.is_some()),
                Observation::Event(i) => {
                    let e = &rec.memory_events[i as usize];
                    e.fresh && e.stack.is_some()
                }
            })
            .map_or(0, |o| o.time(rec));
        // Once the interpreter was seen finalizing, what the process frees is the
        // interpreter's, even while a `__del__` runs Python code during the teardown.
        let python_until = match rec.processes[p as usize].finalizing_us {
            Some(f) => python_until.min(f.saturating_sub(1)),
            None => python_until,
        };
        let before_events = stacks_before_events(rec, observations);
        let before_ticks = event_stacks_before_ticks(rec, observations);
        let split = Split {
            rec,
            process: p,
            faults_left: &faults_left,
            before_events: &before_events,
            before_ticks: &before_ticks,
            python_until,
        };
        // Memory: the series, then each change between consecutive readings.
        let series: Vec<(u64, u64)> = match kind {
            None => observations
                .iter()
                .map(|&o| (o.time(rec), o.rss(rec)))
                .collect(),
            Some(k) => rec
                .memory
                .iter()
                .filter(|m| m.process == p && m.kind == k && filter.in_window(m.time_us))
                .map(|m| (m.time_us, m.bytes))
                .collect(),
        };
        let peak_at = series
            .iter()
            .enumerate()
            .max_by_key(|(i, (_, v))| (*v, std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        let mut ledger = Ledger::default();
        let mut cursor = 0; // first observation not yet given a memory change
        let mut previous_tick: Option<u32> = None;
        let mut shares: Vec<(Key, f64)> = Vec::new();
        for j in 1..series.len() {
            let (t0, v0) = series[j - 1];
            let (t1, v1) = series[j];
            let delta = v1 as f64 - v0 as f64;
            // The observations in (t0, t1]; with an RSS series that is exactly reading j's.
            let in_interval = if kind.is_none() {
                j..j + 1
            } else {
                while cursor < observations.len() && observations[cursor].time(rec) <= t0 {
                    if let Observation::Tick(i) = observations[cursor] {
                        previous_tick = Some(i);
                    }
                    cursor += 1;
                }
                let mut end = cursor;
                while end < observations.len() && observations[end].time(rec) <= t1 {
                    end += 1;
                }
                cursor..end
            };
            shares.clear();
            if delta != 0.0 {
                split.interval(
                    &observations[in_interval.clone()],
                    previous_tick,
                    delta,
                    &mut shares,
                );
            }
            for &(key, amount) in &shares {
                if amount > 0.0 {
                    ledger.grow(&mut table, timeline.as_deref_mut(), t1, key, amount);
                } else if amount < 0.0 {
                    ledger.free(&mut table, timeline.as_deref_mut(), t1, key, -amount);
                }
            }
            if kind.is_none() {
                if let Observation::Tick(i) = observations[j] {
                    previous_tick = Some(i);
                }
            } else {
                for &o in &observations[in_interval] {
                    if let Observation::Tick(i) = o {
                        previous_tick = Some(i);
                    }
                }
            }
            if peak_at == Some(j) {
                ledger.held(&mut table, PEAK, p);
            }
        }
        ledger.held(&mut table, RETAINED, p);
        a.series[p as usize] = series;
    }
    for (key, row) in table.rows {
        for (metric, map) in [
            (WALL, &mut a.wall),
            (CPU, &mut a.cpu),
            (GROWTH, &mut a.growth),
            (FREED, &mut a.freed),
            (RETAINED, &mut a.retained),
            (PEAK, &mut a.peak),
        ] {
            if row[metric] != 0.0 {
                map.insert(key, row[metric]);
            }
        }
    }
    a
}

/// How a memory change within one sample is split between its threads (rule 2). A growth
/// follows the threads' page faults. A decrease is looked for among the threads whose stack
/// changed since the previous sample (freeing happens when code finishes), if any.
/// Then: the GIL holder, else the busiest thread, else the threads in Python code, evenly.
fn thread_weights(
    threads: &[ThreadSample],
    faults: &[f64],
    before: &Before,
    growth: bool,
) -> Vec<f64> {
    let moved = |t: &ThreadSample| before.stack(t.thread).is_none_or(|b| b != t.stack);
    let mut candidates: Vec<bool> = vec![true; threads.len()];
    if !growth && threads.iter().any(moved) {
        candidates = threads.iter().map(moved).collect();
    }
    let among = |x: usize| candidates[x];
    let one = |chosen: usize| {
        (0..threads.len())
            .map(|x| if x == chosen { 1.0 } else { 0.0 })
            .collect()
    };
    let total: f64 = faults.iter().sum();
    if growth && total > 0.0 {
        return faults.iter().map(|f| f / total).collect();
    }
    if let Some(g) = (0..threads.len())
        .find(|&x| among(x) && threads[x].flags & crate::recording::format::FLAG_GIL != 0)
    {
        return one(g);
    }
    if let Some(busiest) = (0..threads.len())
        .filter(|&x| among(x) && threads[x].cpu_us > 0)
        .max_by_key(|&x| threads[x].cpu_us)
    {
        return one(busiest);
    }
    let in_python: Vec<bool> = (0..threads.len())
        .map(|x| among(x) && threads[x].stack.is_some())
        .collect();
    let pool = if in_python.contains(&true) {
        in_python
    } else {
        candidates
    };
    let n = pool.iter().filter(|b| **b).count().max(1) as f64;
    pool.iter()
        .map(|&b| if b { 1.0 / n } else { 0.0 })
        .collect()
}

/// The stacks a sample's threads had at the process's previous sample, by thread: a linear
/// search for the usual few threads, a map for many (a sample can hold thousands of threads,
/// and every thread of the next one looks itself up).
enum Before<'a> {
    Few(&'a [ThreadSample]),
    Many(FxHashMap<u32, Option<u32>>),
}

impl<'a> Before<'a> {
    fn new(threads: &'a [ThreadSample]) -> Before<'a> {
        if threads.len() <= 16 {
            Before::Few(threads)
        } else {
            // The first entry of a thread, as the linear search finds it.
            let mut map = FxHashMap::default();
            for t in threads {
                map.entry(t.thread).or_insert(t.stack);
            }
            Before::Many(map)
        }
    }

    /// The stack of `thread` then (None: it was not in that sample).
    fn stack(&self, thread: u32) -> Option<Option<u32>> {
        match self {
            Before::Few(v) => v.iter().find(|b| b.thread == thread).map(|b| b.stack),
            Before::Many(m) => m.get(&thread).copied(),
        }
    }
}

fn site_of(t: &ThreadSample) -> Site {
    t.stack.map_or(Site::NoPythonFrames, Site::Stack)
}

/// Splits memory changes between the stacks of one process (rules 1 to 4).
struct Split<'a> {
    rec: &'a Recording,
    process: u32,
    /// Faults of tick threads not already placed by memory events (see
    /// [`faults_left_to_ticks`]).
    faults_left: &'a FxHashMap<u32, f64>,
    /// The stacks memory events' earlier faults and frees belong to (see
    /// [`stacks_before_events`]).
    before_events: &'a FxHashMap<u32, Option<u32>>,
    /// The stacks of memory events between a tick's thread and its previous tick (see
    /// [`event_stacks_before_ticks`]).
    before_ticks: &'a FxHashMap<u32, Option<u32>>,
    /// Time of the process's last observation with a Python frame.
    python_until: u64,
}

impl Split<'_> {
    fn key(&self, site: Site) -> Key {
        Key {
            process: self.process,
            site,
        }
    }

    /// Whether `stack` (None: no frames) is a proper ancestor of `of` in the stack tree: the
    /// same frames with fewer at the innermost end.
    fn is_ancestor(&self, stack: Option<u32>, of: u32) -> bool {
        let mut node = self.rec.stacks[of as usize].parent;
        while let Some(n) = node {
            if Some(n) == stack {
                return true;
            }
            node = self.rec.stacks[n as usize].parent;
        }
        stack.is_none()
    }

    /// The faults of each thread of tick `s` that are its own to split.
    fn tick_faults(&self, s: &Sample) -> Vec<f64> {
        self.rec
            .threads_of(s)
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let index = s.first_thread + k as u32;
                self.faults_left
                    .get(&index)
                    .copied()
                    .unwrap_or(t.minflt as f64)
            })
            .collect()
    }

    /// Split `delta` between the observations of one interval (rule 1): a memory event's
    /// share goes to its own stack; a growth follows faults (an event's, or a tick's threads'
    /// and its non-Python threads'), a decrease the events that freed memory, else the ticks.
    fn interval(
        &self,
        observations: &[Observation],
        previous_tick: Option<u32>,
        delta: f64,
        out: &mut Vec<(Key, f64)>,
    ) {
        let rec = self.rec;
        if observations.is_empty() {
            out.push((self.key(Site::Unattributed), delta));
            return;
        }
        let weight = |o: &Observation| -> f64 {
            match *o {
                Observation::Event(i) => {
                    let e = &rec.memory_events[i as usize];
                    if delta > 0.0 {
                        e.faults as f64
                    } else {
                        e.frees as f64
                    }
                }
                Observation::Tick(i) if delta > 0.0 => {
                    let s = &rec.samples[i as usize];
                    s.native_minflt as f64 + self.tick_faults(s).iter().sum::<f64>()
                }
                Observation::Tick(_) => 0.0,
            }
        };
        let weights: Vec<f64> = observations.iter().map(weight).collect();
        let total: f64 = weights.iter().sum();
        // Nothing to go by (a decrease with no free event, a growth without faults): evenly
        // between the ticks, or the events when there are none.
        let ticks = observations
            .iter()
            .filter(|o| matches!(o, Observation::Tick(_)))
            .count();
        let mut previous = previous_tick;
        for (o, w) in observations.iter().zip(weights) {
            let share = if total > 0.0 {
                w / total
            } else if ticks > 0 {
                if matches!(o, Observation::Tick(_)) {
                    1.0 / ticks as f64
                } else {
                    0.0
                }
            } else {
                1.0 / observations.len() as f64
            };
            if share > 0.0 {
                let from = out.len();
                match *o {
                    Observation::Event(i) => {
                        let e = &rec.memory_events[i as usize];
                        let site = e.stack.map_or(Site::NoPythonFrames, Site::Stack);
                        // The part that happened before the thread moved on is its previous
                        // stack's.
                        let (part, whole) = match delta > 0.0 {
                            true => (e.faults_before, e.faults),
                            false => (e.frees_before, e.frees),
                        };
                        let amount = delta * share;
                        let previous = self.before_events.get(&i).copied().flatten();
                        // A free read after its thread returned from the frames it was in
                        // (the stack now is an ancestor of the one before) happened in those
                        // frames: memory is freed when code finishes.
                        let returned_from =
                            previous.filter(|&then| delta < 0.0 && self.is_ancestor(e.stack, then));
                        match (returned_from, previous) {
                            (Some(then), _) => out.push((self.key(Site::Stack(then)), amount)),
                            (None, Some(then)) if part > 0 && whole > 0 => {
                                let f = part as f64 / whole as f64;
                                out.push((self.key(Site::Stack(then)), amount * f));
                                out.push((self.key(site), amount * (1.0 - f)));
                            }
                            _ => out.push((self.key(site), amount)),
                        }
                    }
                    Observation::Tick(i) => self.in_sample(i, previous, delta * share, out),
                }
                // Released after the last Python frame: the interpreter shutting down (a stack
                // carried over from an earlier tick does not say otherwise).
                if o.time(rec) > self.python_until {
                    for (key, amount) in &mut out[from..] {
                        if *amount < 0.0 {
                            key.site = Site::Shutdown;
                        }
                    }
                }
            }
            if let Observation::Tick(i) = *o {
                previous = Some(i);
            }
        }
    }

    /// Split `amount` between the threads of tick `i` (rules 2 to 4).
    fn in_sample(&self, i: u32, previous: Option<u32>, amount: f64, out: &mut Vec<(Key, f64)>) {
        let rec = self.rec;
        let s: &Sample = &rec.samples[i as usize];
        let threads = rec.threads_of(s);
        let faults = self.tick_faults(s);
        // Growth whose page faults were made by threads that never run Python is theirs.
        let mut amount = amount;
        if amount > 0.0 && s.native_minflt > 0 {
            let python: f64 = faults.iter().sum();
            let native = s.native_minflt as f64;
            let share = amount * native / (native + python);
            out.push((self.key(Site::NativeThreads), share));
            amount -= share;
            if amount <= 0.0 {
                return;
            }
        }
        if threads.is_empty() {
            out.push((self.key(Site::Unattributed), amount));
            return;
        }
        let before =
            Before::new(previous.map_or(&[], |pi| rec.threads_of(&rec.samples[pi as usize])));
        let weights = thread_weights(threads, &faults, &before, amount > 0.0);
        for (k, (t, w)) in threads.iter().zip(weights).enumerate() {
            if w == 0.0 {
                continue;
            }
            let share = amount * w;
            let now = site_of(t);
            // A growth: the thread's latest observation (a memory event since the previous
            // tick, else that tick); a decrease: the previous tick.
            let latest = match share > 0.0 {
                true => self.before_ticks.get(&(s.first_thread + k as u32)).copied(),
                false => None,
            };
            let then = latest
                .or_else(|| before.stack(t.thread))
                .map_or(now, |stack| stack.map_or(Site::NoPythonFrames, Site::Stack));
            let to_then = if share > 0.0 { share / 2.0 } else { share };
            out.push((self.key(then), to_then));
            if share - to_then != 0.0 {
                out.push((self.key(now), share - to_then));
            }
        }
    }
}

/// How frames are named in reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Naming {
    /// Leave line numbers out (one node per function).
    pub functions_only: bool,
    /// Files by their short names ([`short_file`]); exports keep full paths.
    pub short_files: bool,
}

/// A file's name as a person reads it in a report: within a `site-packages` or
/// `dist-packages` folder from there (`flask/app.py`), under the process's working directory
/// relative to it (`app/views.py`), in the standard library from it (`json/decoder.py`);
/// else, and for `<frozen ...>` names, the name as recorded.
pub fn short_file<'a>(rec: &Recording, process: Option<u32>, file: &'a str) -> &'a str {
    if file.starts_with('<') {
        return file;
    }
    for marker in ["/site-packages/", "/dist-packages/"] {
        if let Some(at) = file.rfind(marker) {
            return &file[at + marker.len()..];
        }
    }
    let cwd = process
        .and_then(|p| rec.processes.get(p as usize))
        .and_then(|p| p.cwd)
        .map(|c| rec.string(c).trim_end_matches('/'))
        .filter(|c| !c.is_empty());
    if let Some(rest) = cwd.and_then(|c| file.strip_prefix(c)?.strip_prefix('/')) {
        return rest;
    }
    // The standard library: .../lib/python3.N/...
    if let Some(at) = file.find("/lib/python3.") {
        let after = &file[at + "/lib/python3.".len()..];
        if let Some(slash) = after.find('/') {
            return &after[slash + 1..];
        }
    }
    file
}

/// A frame's label: `qualname (file:line)`, or `qualname (file)` without lines (`process`:
/// the recording's process the frame ran in, for short file names).
pub fn frame_label(
    rec: &Recording,
    process: Option<u32>,
    frame: crate::recording::reader::FrameDef,
    naming: Naming,
) -> String {
    let f = &rec.functions[frame.function as usize];
    let name = rec.string(f.qualname);
    let file = rec.string(f.file);
    let file = if naming.short_files {
        short_file(rec, process, file)
    } else {
        file
    };
    if naming.functions_only || frame.line < 0 {
        format!("{name} ({file})")
    } else {
        format!("{name} ({file}:{})", frame.line)
    }
}

/// The role of process `id` in `rec`: "launched" or "attached" (the process memspy was
/// given), "worker N of PID" (the Nth child of that process), "child of PID" (deeper).
pub fn process_role(rec: &Recording, id: usize) -> String {
    let p = &rec.processes[id];
    match p.parent {
        None => {
            let attached = rec.meta.command.iter().any(|a| a == "--pid" || a == "-p");
            if attached { "attached" } else { "launched" }.into()
        }
        Some(parent) => {
            let parent_pid = rec.processes.get(parent as usize).map_or(0, |q| q.pid);
            match worker_number(rec, id) {
                Some(n) => format!("worker {n} of {parent_pid}"),
                None => format!("child of {parent_pid}"),
            }
        }
    }
}

/// N when process `id` is the Nth child of the root process (its workers, in the order they
/// were found); None for the root and for deeper descendants.
pub fn worker_number(rec: &Recording, id: usize) -> Option<usize> {
    let parent = rec.processes.get(id)?.parent?;
    let root_child = rec
        .processes
        .get(parent as usize)
        .is_some_and(|q| q.parent.is_none());
    root_child.then(|| {
        rec.processes[..id]
            .iter()
            .filter(|q| q.parent == Some(parent))
            .count()
            + 1
    })
}

/// The label of a process's root node: `process 4243 (worker 1 of 4242) gunicorn: worker [app]`.
pub fn process_label(rec: &Recording, process: u32) -> String {
    let p = &rec.processes[process as usize];
    format!(
        "process {} ({}) {}",
        p.pid,
        process_role(rec, process as usize),
        crate::output::text::one_line(rec.string(p.command), 60)
    )
}

/// Frame labels of a site, outermost first (pseudo-frames for non-stack sites).
pub fn site_path(rec: &Recording, process: Option<u32>, site: Site, naming: Naming) -> Vec<String> {
    match site {
        Site::Stack(s) => {
            let mut v: Vec<String> = rec
                .stack_frames(s)
                .map(|f| frame_label(rec, process, f, naming))
                .collect();
            v.reverse();
            v
        }
        other => vec![other.pseudo_label().unwrap_or("?").to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::{short_file, Bound};
    use crate::recording::reader::Process;
    use crate::recording::Recording;

    #[test]
    fn files_get_short_names() {
        let mut rec = Recording {
            strings: vec!["/srv/app/".into()],
            ..Recording::default()
        };
        rec.processes.push(Process {
            pid: 1,
            starttime: 0,
            parent: None,
            start_us: 0,
            command: 0,
            exe: 0,
            python: 0,
            cwd: Some(0),
            finalizing_us: None,
            end_us: None,
            end_reason: None,
            exit: None,
        });
        let p = Some(0);
        let short = |f| short_file(&rec, p, f);
        assert_eq!(
            short("/venv/lib/python3.12/site-packages/flask/app.py"),
            "flask/app.py"
        );
        assert_eq!(
            short("/usr/lib/python3/dist-packages/yaml/__init__.py"),
            "yaml/__init__.py"
        );
        assert_eq!(short("/srv/app/views/index.py"), "views/index.py");
        assert_eq!(
            short("/usr/lib/python3.11/json/decoder.py"),
            "json/decoder.py"
        );
        assert_eq!(
            short("<frozen importlib._bootstrap>"),
            "<frozen importlib._bootstrap>"
        );
        // Not under the working directory (a sibling with the same prefix included).
        assert_eq!(short("/srv/application.py"), "/srv/application.py");
        assert_eq!(short_file(&rec, None, "/srv/app/x.py"), "/srv/app/x.py");
    }

    #[test]
    fn window_bounds_parse() {
        let ok = |s: &str| s.parse::<Bound>().unwrap();
        assert_eq!(ok("12"), Bound::Seconds(12.0));
        assert_eq!(ok("12.5s"), Bound::Seconds(12.5));
        assert_eq!(ok("250ms"), Bound::Seconds(0.25));
        assert_eq!(ok("2m"), Bound::Seconds(120.0));
        assert_eq!(ok(" 25% "), Bound::Percent(25.0));
        for bad in ["", "ten", "-1", "101%", "inf", "NaN", "1e400"] {
            assert!(bad.parse::<Bound>().is_err(), "{bad:?}");
        }
    }
}
