//! Attribution: turning samples into time and memory per stack, function and line. All the
//! rules live here.
//!
//! **Time.** Every thread of every sample counts for the stack it was on:
//! - *wall*: the time since the process's previous sample (capped at ten sampling intervals, so
//!   a pause of the recorder is not blamed on anyone; the first sample counts one interval);
//! - *cpu*: the CPU time the thread used since its previous sample (`schedstat`), so idle
//!   threads weigh nothing.
//!
//! **Memory.** A process's memory series is its RSS at every sample (or, recorded with
//! `--memory pss|uss`, its PSS/USS readings, taken less often). Each change between two
//! consecutive readings is attributed to what ran in between:
//! 1. when the series is sparser than the samples (PSS/USS), the change is spread over the
//!    samples taken in that interval, in proportion to the page faults each saw (evenly if none);
//! 2. within a sample, it is split between threads by the minor page faults each thread caused
//!    since its previous sample (the thread that touched new pages grew the memory); with no
//!    faults to go by, it goes to the thread holding the GIL, else to the thread that used the
//!    most CPU, else evenly to the threads that were in Python code. A decrease is first looked
//!    for among the threads whose stack changed since the previous sample (memory is freed when
//!    code finishes), then by the same rules;
//! 3. a thread's share of a *growth* goes half to the stack it had at the previous sample and
//!    half to the one it has now (the growth happened in between; this halves the error at the
//!    boundary between two functions); a *decrease* goes to the stack it had at the previous
//!    sample, because memory is mostly released when the code holding it finishes (a return
//!    drops its locals): a temporary buffer then shows as grown and freed by the same line,
//!    instead of its release landing on whatever runs next;
//! 4. growth whose page faults were made by threads that never run Python (native thread
//!    pools, C extensions' workers: the process's faults minus its Python threads') is reported
//!    as `[non-Python threads]`, in proportion to those faults; a change with no Python thread
//!    to take it as `[unattributed]`; one that lands on a thread outside Python code as
//!    `[no Python frames]`: never hidden.
//!
//! Positive changes sum to *growth*, negative ones (as positive numbers) to *freed*, both
//! together to *net*. *Peak* is the net each stack had contributed from the process's first
//! reading up to the moment it reached its highest reading. The first reading of a process is
//! its baseline and is attributed to nobody.

pub mod check;
pub mod functions;

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use crate::recording::reader::{Sample, ThreadSample};
use crate::recording::{MemoryKind, Recording};

/// What a report measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    Wall,
    Cpu,
    Growth,
    Freed,
    Net,
    Peak,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Wall,
        Metric::Cpu,
        Metric::Growth,
        Metric::Freed,
        Metric::Net,
        Metric::Peak,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Wall => "wall",
            Metric::Cpu => "cpu",
            Metric::Growth => "growth",
            Metric::Freed => "freed",
            Metric::Net => "net",
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
            Metric::Net => "Net memory change",
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
}

impl Site {
    /// The sites that are not Python stacks.
    pub const PSEUDO: [Site; 3] = [
        Site::NoPythonFrames,
        Site::NativeThreads,
        Site::Unattributed,
    ];

    /// How reports name a site that is not a stack.
    pub fn pseudo_label(self) -> Option<&'static str> {
        match self {
            Site::Stack(_) => None,
            Site::NoPythonFrames => Some("[no Python frames]"),
            Site::NativeThreads => Some("[non-Python threads]"),
            Site::Unattributed => Some("[unattributed]"),
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
    pub net: HashMap<Key, f64>,
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
            Metric::Net => &self.net,
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
}

impl Filter {
    pub fn includes(&self, rec: &Recording, process: u32) -> bool {
        self.pid
            .is_none_or(|pid| rec.processes[process as usize].pid == pid)
    }
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
const NET: usize = 4;
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

    fn add_memory(&mut self, key: Key, amount: f64, counts_for_peak: bool) {
        let row = self.row(key);
        if amount > 0.0 {
            row[GROWTH] += amount;
        } else {
            row[FREED] -= amount;
        }
        row[NET] += amount;
        if counts_for_peak {
            row[PEAK] += amount;
        }
    }
}

/// Attribute a whole recording (see the module documentation for the rules).
pub fn attribute(rec: &Recording, filter: &Filter) -> Attribution {
    let n = rec.processes.len();
    let mut a = Attribution {
        series: vec![Vec::new(); n],
        ..Attribution::default()
    };
    let mut table = Table::default();
    // The sampling interval, at least 1 µs, whatever the recording says its rate is.
    let interval_us = if rec.meta.rate_hz > 0.0 {
        ((1e6 / rec.meta.rate_hz) as u64).max(1)
    } else {
        10_000
    };
    let kind = memory_kind(rec);

    // Samples of each process, in time order (indices into rec.samples).
    let mut by_process: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (i, s) in rec.samples.iter().enumerate() {
        if filter.includes(rec, s.process) {
            by_process[s.process as usize].push(i as u32);
        }
    }
    for (p, samples) in by_process.iter().enumerate() {
        if samples.is_empty() {
            continue;
        }
        let p = p as u32;
        // Time.
        let mut previous_time: Option<u64> = None;
        for &i in samples {
            let s = &rec.samples[i as usize];
            let dt = match previous_time {
                Some(t) => s
                    .time_us
                    .saturating_sub(t)
                    .min(interval_us.saturating_mul(10)),
                None => interval_us,
            } as f64;
            previous_time = Some(s.time_us);
            for t in rec.threads_of(s) {
                let row = table.row(Key {
                    process: p,
                    site: site_of(t),
                });
                row[WALL] += dt;
                row[CPU] += t.cpu_us as f64;
            }
        }
        // Memory: the series, then each change between consecutive readings.
        let series: Vec<(u64, u64)> = match kind {
            None => samples
                .iter()
                .map(|&i| {
                    (
                        rec.samples[i as usize].time_us,
                        rec.samples[i as usize].rss_bytes,
                    )
                })
                .collect(),
            Some(k) => rec
                .memory
                .iter()
                .filter(|m| m.process == p && m.kind == k)
                .map(|m| (m.time_us, m.bytes))
                .collect(),
        };
        let peak_at = series
            .iter()
            .enumerate()
            .max_by_key(|(i, (_, v))| (*v, std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        let mut cursor = 0; // first sample not yet given a memory change
        for j in 1..series.len() {
            let (t0, v0) = series[j - 1];
            let (t1, v1) = series[j];
            let delta = v1 as f64 - v0 as f64;
            // Positions (in `samples`) of the samples in (t0, t1]; with an RSS series that is
            // exactly the sample of reading j.
            let in_interval = if kind.is_none() {
                j..j + 1
            } else {
                while cursor < samples.len() && rec.samples[samples[cursor] as usize].time_us <= t0
                {
                    cursor += 1;
                }
                let mut end = cursor;
                while end < samples.len() && rec.samples[samples[end] as usize].time_us <= t1 {
                    end += 1;
                }
                cursor..end
            };
            let counts_for_peak = peak_at.is_some_and(|pk| j <= pk);
            if delta == 0.0 {
                continue;
            }
            if in_interval.is_empty() {
                table.add_memory(
                    Key {
                        process: p,
                        site: Site::Unattributed,
                    },
                    delta,
                    counts_for_peak,
                );
                continue;
            }
            let faults_of = |pos: usize| -> f64 {
                let s = &rec.samples[samples[pos] as usize];
                s.native_minflt as f64
                    + rec
                        .threads_of(s)
                        .iter()
                        .map(|t| t.minflt as f64)
                        .sum::<f64>()
            };
            let total_faults: f64 = in_interval.clone().map(faults_of).sum();
            let count = in_interval.len() as f64;
            for pos in in_interval {
                let share = if total_faults > 0.0 {
                    faults_of(pos) / total_faults
                } else {
                    1.0 / count
                };
                if share > 0.0 {
                    let previous = pos.checked_sub(1).map(|q| samples[q]);
                    table.split_in_sample(
                        rec,
                        p,
                        samples[pos],
                        previous,
                        delta * share,
                        counts_for_peak,
                    );
                }
            }
        }
        a.series[p as usize] = series;
    }
    for (key, row) in table.rows {
        for (metric, map) in [
            (WALL, &mut a.wall),
            (CPU, &mut a.cpu),
            (GROWTH, &mut a.growth),
            (FREED, &mut a.freed),
            (NET, &mut a.net),
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
fn thread_weights(threads: &[ThreadSample], before: &Before, growth: bool) -> Vec<f64> {
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
    let faults: f64 = threads.iter().map(|t| t.minflt as f64).sum();
    if growth && faults > 0.0 {
        return threads.iter().map(|t| t.minflt as f64 / faults).collect();
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

impl Table {
    /// Split `amount` between the threads of sample `i` (rules 2 to 4).
    fn split_in_sample(
        &mut self,
        rec: &Recording,
        p: u32,
        i: u32,
        previous: Option<u32>,
        amount: f64,
        peak: bool,
    ) {
        let s: &Sample = &rec.samples[i as usize];
        let threads = rec.threads_of(s);
        // Growth whose page faults were made by threads that never run Python is theirs.
        let mut amount = amount;
        if amount > 0.0 && s.native_minflt > 0 {
            let python: f64 = threads.iter().map(|t| t.minflt as f64).sum();
            let native = s.native_minflt as f64;
            let share = amount * native / (native + python);
            let key = Key {
                process: p,
                site: Site::NativeThreads,
            };
            self.add_memory(key, share, peak);
            amount -= share;
            if amount <= 0.0 {
                return;
            }
        }
        if threads.is_empty() {
            self.add_memory(
                Key {
                    process: p,
                    site: Site::Unattributed,
                },
                amount,
                peak,
            );
            return;
        }
        let before =
            Before::new(previous.map_or(&[], |pi| rec.threads_of(&rec.samples[pi as usize])));
        let weights = thread_weights(threads, &before, amount > 0.0);
        for (t, w) in threads.iter().zip(weights) {
            if w == 0.0 {
                continue;
            }
            let share = amount * w;
            let now = site_of(t);
            let then = before
                .stack(t.thread)
                .map_or(now, |stack| stack.map_or(Site::NoPythonFrames, Site::Stack));
            let to_then = if share > 0.0 { share / 2.0 } else { share };
            let key = |site| Key { process: p, site };
            self.add_memory(key(then), to_then, peak);
            if share - to_then != 0.0 {
                self.add_memory(key(now), share - to_then, peak);
            }
        }
    }
}

/// How frames are named in reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Naming {
    /// Leave line numbers out (one node per function).
    pub functions_only: bool,
}

/// A frame's label: `qualname (file:line)`, or `qualname (file)` without lines.
pub fn frame_label(
    rec: &Recording,
    frame: crate::recording::reader::FrameDef,
    naming: Naming,
) -> String {
    let f = &rec.functions[frame.function as usize];
    let name = rec.string(f.qualname);
    let file = rec.string(f.file);
    if naming.functions_only || frame.line < 0 {
        format!("{name} ({file})")
    } else {
        format!("{name} ({file}:{})", frame.line)
    }
}

/// The label of a process's root node: `process 4242 gunicorn: worker [app]`.
pub fn process_label(rec: &Recording, process: u32) -> String {
    let p = &rec.processes[process as usize];
    format!(
        "process {} {}",
        p.pid,
        crate::output::text::one_line(rec.string(p.command), 60)
    )
}

/// Frame labels of a site, outermost first (pseudo-frames for non-stack sites).
pub fn site_path(rec: &Recording, site: Site, naming: Naming) -> Vec<String> {
    match site {
        Site::Stack(s) => {
            let mut v: Vec<String> = rec
                .stack_frames(s)
                .map(|f| frame_label(rec, f, naming))
                .collect();
            v.reverse();
            v
        }
        other => vec![other.pseudo_label().unwrap_or("?").to_string()],
    }
}
