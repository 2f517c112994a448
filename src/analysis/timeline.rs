//! Attribution over time: the same values as [`super::attribute`], kept per time bucket, so a
//! reader (the HTML report) can add them up for any window of whole buckets without the
//! recording.
//!
//! Time, growth and freed memory are sums, so a window's value is the sum of its buckets'.
//! Retained memory is not: rule 5 of the attribution lets a free cancel the newest growth.
//! It is kept as *chunks*: the growth each stack made in each bucket, with the amounts later
//! frees cancelled of it and when. Because frees cancel the newest growth first, the growth
//! made inside a window that is still held at its end is the same whether the replay starts
//! at the recording's start or at the window's: a window's retained memory is, per stack, its
//! chunks' growth minus what frees up to the window's end cancelled of them. What the window's
//! frees took beyond its own growth is `[memory from before the recording]`'s, as in a
//! recording that started there; frees at shutdown cancel nothing.

use rustc_hash::FxHashMap;

use super::Key;

/// Columns of a cell.
pub const WALL: usize = 0;
pub const CPU: usize = 1;
pub const GROWTH: usize = 2;
pub const FREED: usize = 3;

/// Whose time a value is: a thread's (index into `Recording::threads`) or a waiting greenlet's
/// or task's (index into `Recording::tasks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Who {
    Thread(u32),
    Task(u32),
}

/// The growth one stack made in one bucket, and what later frees cancelled of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chunk {
    pub grown: f64,
    /// (bucket, amount), in bucket order, one entry per bucket.
    pub cancelled: Vec<(u32, f64)>,
}

/// Values per time bucket (see the module documentation).
#[derive(Clone, Debug)]
pub struct Timeline {
    /// Recording time (µs) of the start of bucket 0.
    pub start_us: u64,
    /// Length of a bucket (µs, at least 1).
    pub bucket_us: u64,
    pub buckets: u32,
    /// Wall, CPU (µs), growth and freed (bytes) per (bucket, key).
    pub cells: FxHashMap<(u32, Key), [f64; 4]>,
    /// Growth per (bucket made, key).
    pub chunks: FxHashMap<(u32, Key), Chunk>,
    /// Wall and CPU time (µs) per (bucket, key, whose), when asked for
    /// ([`Timeline::with_threads`]). Memory is a process's, so it has no such split.
    pub threads: Option<FxHashMap<(u32, Key, Who), [f64; 2]>>,
}

impl Timeline {
    /// `buckets` buckets over `[start_us, end_us]`.
    pub fn new(start_us: u64, end_us: u64, buckets: u32) -> Timeline {
        let buckets = buckets.max(1);
        let span = end_us.saturating_sub(start_us) + 1;
        Timeline {
            start_us,
            bucket_us: span.div_ceil(u64::from(buckets)).max(1),
            buckets,
            cells: FxHashMap::default(),
            chunks: FxHashMap::default(),
            threads: None,
        }
    }

    /// Also keep time per thread and waiting task.
    pub fn with_threads(mut self) -> Timeline {
        self.threads = Some(FxHashMap::default());
        self
    }

    /// A tick's wall and CPU time at `key` (one lookup for both).
    pub fn add_tick(&mut self, time_us: u64, key: Key, wall: f64, cpu: f64) {
        let b = self.bucket(time_us);
        let cell = self.cells.entry((b, key)).or_default();
        cell[WALL] += wall;
        cell[CPU] += cpu;
    }

    /// Time of `who` at `key` (after [`Timeline::add`] of the same values).
    pub fn add_time_of(&mut self, time_us: u64, key: Key, who: Who, wall: f64, cpu: f64) {
        let b = self.bucket(time_us);
        if let Some(threads) = &mut self.threads {
            let cell = threads.entry((b, key, who)).or_default();
            cell[0] += wall;
            cell[1] += cpu;
        }
    }

    /// The bucket of a moment (clamped to the first and last).
    pub fn bucket(&self, time_us: u64) -> u32 {
        let b = time_us.saturating_sub(self.start_us) / self.bucket_us;
        b.min(u64::from(self.buckets - 1)) as u32
    }

    pub fn add(&mut self, time_us: u64, key: Key, column: usize, value: f64) {
        if value != 0.0 {
            let b = self.bucket(time_us);
            self.cells.entry((b, key)).or_default()[column] += value;
        }
    }

    /// Wall time `value` of `who` over `[from_us, to_us]`, each bucket its share of the span.
    pub fn spread_wall(&mut self, from_us: u64, to_us: u64, key: Key, who: Who, value: f64) {
        // Within the timeline's range, so that all of `value` lands somewhere (a wait can run
        // past the last sample: the last bucket takes that part).
        let end = self.start_us + u64::from(self.buckets) * self.bucket_us - 1;
        let (from_us, to_us) = (
            from_us.clamp(self.start_us, end),
            to_us.clamp(self.start_us, end),
        );
        let (first, last) = (self.bucket(from_us), self.bucket(to_us));
        if first == last || to_us <= from_us {
            self.add(from_us, key, WALL, value);
            self.add_time_of(from_us, key, who, value, 0.0);
            return;
        }
        let span = (to_us - from_us) as f64;
        for b in first..=last {
            let start = self.start_us + u64::from(b) * self.bucket_us;
            let lo = start.max(from_us);
            let hi = (start + self.bucket_us).min(to_us);
            let share = value * hi.saturating_sub(lo) as f64 / span;
            if share != 0.0 {
                self.cells.entry((b, key)).or_default()[WALL] += share;
                self.add_time_of(start, key, who, share, 0.0);
            }
        }
    }

    /// `key` grew `amount` at `time_us`: a chunk of that bucket.
    pub fn grow(&mut self, time_us: u64, key: Key, amount: f64) {
        let b = self.bucket(time_us);
        self.cells.entry((b, key)).or_default()[GROWTH] += amount;
        self.chunks.entry((b, key)).or_default().grown += amount;
    }

    /// A free at `time_us` (already counted with [`Timeline::add`]) cancelled `amount` of the
    /// growth `key` made in bucket `made`.
    pub fn cancel(&mut self, made: u32, key: Key, time_us: u64, amount: f64) {
        let b = self.bucket(time_us);
        let chunk = self.chunks.entry((made, key)).or_default();
        match chunk.cancelled.last_mut() {
            Some((at, v)) if *at == b => *v += amount,
            _ => chunk.cancelled.push((b, amount)),
        }
    }

    /// The same values in buckets `factor` times longer (a smaller report).
    pub fn coarsen(&mut self, factor: u32) {
        if factor <= 1 {
            return;
        }
        let mut cells: FxHashMap<(u32, Key), [f64; 4]> = FxHashMap::default();
        for ((b, key), v) in self.cells.drain() {
            let cell = cells.entry((b / factor, key)).or_default();
            for (c, x) in cell.iter_mut().zip(v) {
                *c += x;
            }
        }
        let mut chunks: FxHashMap<(u32, Key), Chunk> = FxHashMap::default();
        for ((b, key), c) in self.chunks.drain() {
            let chunk = chunks.entry((b / factor, key)).or_default();
            chunk.grown += c.grown;
            for (at, v) in c.cancelled {
                chunk.cancelled.push((at / factor, v));
            }
        }
        for chunk in chunks.values_mut() {
            chunk.cancelled.sort_by_key(|c| c.0);
            chunk.cancelled.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    earlier.1 += later.1;
                }
                same
            });
        }
        if let Some(threads) = self.threads.take() {
            let mut coarse: FxHashMap<(u32, Key, Who), [f64; 2]> = FxHashMap::default();
            for ((b, key, who), v) in threads {
                let cell = coarse.entry((b / factor, key, who)).or_default();
                cell[0] += v[0];
                cell[1] += v[1];
            }
            self.threads = Some(coarse);
        }
        self.cells = cells;
        self.chunks = chunks;
        self.buckets = self.buckets.div_ceil(factor);
        self.bucket_us *= u64::from(factor);
    }

    /// Per key: the retained memory of the window of buckets `[from, to]` (see the module
    /// documentation), `[memory from before the recording]` and `[interpreter shutdown]`
    /// included. A reader does the same sum; this one checks it against the attribution.
    pub fn retained(&self, from: u32, to: u32) -> FxHashMap<Key, f64> {
        use super::Site;
        let mut out: FxHashMap<Key, f64> = FxHashMap::default();
        // Per process: the frees of the window that cancel nothing of its growth.
        let mut unmatched: FxHashMap<u32, f64> = FxHashMap::default();
        for (&(b, key), cell) in &self.cells {
            if (from..=to).contains(&b) && cell[FREED] != 0.0 {
                if key.site == Site::Shutdown {
                    *out.entry(key).or_default() -= cell[FREED];
                } else {
                    *unmatched.entry(key.process).or_default() += cell[FREED];
                }
            }
        }
        for (&(b, key), chunk) in &self.chunks {
            if !(from..=to).contains(&b) {
                continue;
            }
            let cancelled: f64 = chunk
                .cancelled
                .iter()
                .take_while(|c| c.0 <= to)
                .map(|c| c.1)
                .sum();
            *out.entry(key).or_default() += chunk.grown - cancelled;
            *unmatched.entry(key.process).or_default() -= cancelled;
        }
        for (process, v) in unmatched {
            if v > 1e-6 {
                let key = Key {
                    process,
                    site: Site::BeforeRecording,
                };
                *out.entry(key).or_default() -= v;
            }
        }
        out
    }
}
