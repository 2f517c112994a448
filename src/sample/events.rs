//! Memory events as the sampler uses them: whether they are on and what the kernel allowed
//! (decided by the first thread that opens them, said once), how often a thread's faults are
//! sampled, and the counts `memspy info` reports.
//!
//! The period adapts to what memspy has to do, not to the fault rate as such: every wake-up
//! drains all the records the kernel has written and reads the thread's stack once, so a burst
//! (8 MiB in a millisecond) costs a few dozen reads and keeps the small period that places it
//! well; only a sustained storm, which would keep memspy reading stacks without pause, raises
//! the period (of faults, and of frees, which otherwise sample every one) until the reads fit in
//! their budget, a smaller one for a thread that reads without pause than for one that bursts.

use crate::target::perf::{Capability, OpenError, ThreadEvents};

/// Memory-event stack reads per second, over all threads, that memspy allows itself when they
/// come without pause (an allocation storm). A read costs memspy 10 to 60 µs, and each sample
/// costs the target some more in the kernel (a wake-up per sample, which traps in a VM, and
/// memspy's reads of its memory): at 500 a second a storm of faults and frees runs a few
/// percent slower (`cargo bench --bench memory_events`). Each thread gets its part (at least
/// [`MIN_THREAD_RATE`]); above it its period doubles, below an eighth of it the period halves
/// again (down to the configured period).
const TOTAL_RATE: f64 = 300.0;
const MIN_THREAD_RATE: f64 = 5.0;
/// A thread that causes reads in only part of a window's milliseconds works in bursts (a
/// request that allocates, then something else), and its reads are what places them: its part
/// of the budget grows as its duty shrinks (its idle time pays for it), up to this many times.
const MAX_BURST_FACTOR: f64 = 20.0;

/// The stack reads per second each of `threads` threads may cost when busy all the time.
pub fn read_budget(threads: usize) -> f64 {
    (TOTAL_RATE / threads.max(1) as f64).max(MIN_THREAD_RATE)
}

/// The reads per second a thread may cost given its `duty`: the share of milliseconds of the
/// window in which it caused reads.
pub fn thread_budget(budget: f64, duty: f64) -> f64 {
    budget / duty.clamp(1.0 / MAX_BURST_FACTOR, 1.0)
}

/// Largest period: one sample per 256 MiB of 4 KiB pages.
const MAX_PERIOD: u64 = 1 << 16;

/// What the recording's memory events are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Not decided yet (no thread has tried).
    Untried,
    /// Page faults (growth) and returns from munmap/madvise/brk (frees).
    FaultsAndFrees,
    /// Page faults only, and why not frees.
    FaultsOnly(String),
    /// Time sampling alone: turned off, or the kernel refused (why).
    Off(String),
}

impl Mode {
    /// How `info` and report subtitles name it.
    pub fn describe(&self) -> String {
        match self {
            Mode::Untried | Mode::Off(_) => "time sampling".into(),
            Mode::FaultsAndFrees => "memory events (page faults and frees) + time sampling".into(),
            Mode::FaultsOnly(_) => "memory events (page faults) + time sampling".into(),
        }
    }
}

/// Counts over the whole recording.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Memory-event samples written (a wake-up with several records is one sample).
    pub samples: u64,
    /// Fault and free records received from the kernel.
    pub faults: u64,
    pub frees: u64,
    /// Records the kernel dropped (ring buffer full).
    pub lost: u64,
    /// Stack reads for events that failed (the thread moved under the reader).
    pub failed: u64,
    /// Largest period the adaptation reached.
    pub max_period: u64,
}

/// The recording-wide state of memory events.
pub struct MemoryEvents {
    pub mode: Mode,
    /// The smallest (and first) fault period.
    pub period: u64,
    pub counts: Counts,
    /// Fault-to-read delays seen (µs), for the median and p99 in `info`.
    pub delays_us: Vec<u32>,
    said: bool,
}

impl MemoryEvents {
    pub fn new(enabled: bool, period: u64) -> MemoryEvents {
        MemoryEvents {
            mode: if enabled {
                Mode::Untried
            } else {
                Mode::Off("turned off with --no-memory-events".into())
            },
            period: period.max(1),
            counts: Counts {
                max_period: period.max(1),
                ..Counts::default()
            },
            delays_us: Vec::new(),
            said: false,
        }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.mode, Mode::Off(_))
    }

    /// Open the events of a thread, deciding the mode with the first one. Says once what the
    /// kernel refused.
    pub fn open(&mut self, tid: i32) -> Option<ThreadEvents> {
        if !self.enabled() {
            return None;
        }
        let with_frees = !matches!(self.mode, Mode::FaultsOnly(_));
        match ThreadEvents::open(tid, self.period, with_frees) {
            Ok((events, capability)) => {
                if self.mode == Mode::Untried {
                    self.mode = match capability {
                        Capability::FaultsAndFrees => Mode::FaultsAndFrees,
                        Capability::FaultsOnly(why) => {
                            self.say(&format!(
                                "memory events see page faults but not frees ({why}); frees \
                                 are placed by time sampling"
                            ));
                            Mode::FaultsOnly(why)
                        }
                    };
                }
                Some(events)
            }
            Err(OpenError::Gone) => None,
            Err(OpenError::Refused(why)) => {
                self.say(&format!(
                    "the kernel refused memory events (perf_event_open: {why}), so memory is \
                     attributed by time sampling alone; for sharper attribution run memspy as \
                     root or with CAP_PERFMON (Docker: --cap-add PERFMON), or set \
                     kernel.perf_event_paranoid to 1"
                ));
                self.mode = Mode::Off(format!("refused by the kernel: {why}"));
                None
            }
            Err(OpenError::Unsupported(why)) => {
                self.say(&format!(
                    "this kernel has no memory events (perf_event_open: {why}); memory is \
                     attributed by time sampling alone"
                ));
                self.mode = Mode::Off(format!("not supported by the kernel: {why}"));
                None
            }
        }
    }

    fn say(&mut self, what: &str) {
        if !self.said {
            self.said = true;
            eprintln!("memspy: note: {what}");
        }
    }

    /// Keep a fault-to-read delay (bounded: enough for percentiles).
    pub fn delay(&mut self, us: u64) {
        if self.delays_us.len() < 1 << 20 {
            self.delays_us.push(us.min(u32::MAX as u64) as u32);
        }
    }

    /// (median, p99) of the delays, µs.
    pub fn delay_percentiles(&self) -> Option<(u64, u64)> {
        if self.delays_us.is_empty() {
            return None;
        }
        let mut d = self.delays_us.clone();
        d.sort_unstable();
        let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize] as u64;
        Some((at(0.5), at(0.99)))
    }
}

/// The period a thread's faults should be sampled at, given how many memory-event stack reads
/// it cost over `window_s` seconds at its current `period` and the reads per second it may
/// cost (`budget`); never below `floor`.
pub fn adapted_period(period: u64, reads: u64, window_s: f64, floor: u64, budget: f64) -> u64 {
    let rate = reads as f64 / window_s.max(1e-3);
    if rate > budget {
        // Enough to bring the rate under the bound at once, in powers of two.
        let mut p = period;
        while (p as f64) < period as f64 * rate / budget && p < MAX_PERIOD {
            p *= 2;
        }
        p.min(MAX_PERIOD)
    } else if rate < budget / 4.0 && period > floor {
        // A storm is over: straight back to the smallest period the rate allows (twice the
        // rate's share of the budget), so that the bursts after it are placed as finely again.
        let mut p = floor;
        while (p as f64) < period as f64 * rate * 2.0 / budget && p < period {
            p *= 2;
        }
        p.min(period)
    } else {
        period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_follows_the_fault_rate() {
        let budget = 2_000.0;
        // 10,000 reads in 0.1 s at period 16: 100k/s, a storm: up to 1024 (under 2,000/s).
        let p = adapted_period(16, 10_000, 0.1, 16, budget);
        assert_eq!(p, 1024);
        assert!(10_000.0 * 16.0 / p as f64 / 0.1 <= budget);
        // Calm: back down at once to what the rate needs, never under the floor.
        assert_eq!(adapted_period(2048, 2, 0.1, 16, budget), 64);
        assert_eq!(adapted_period(2048, 40, 0.1, 16, budget), 1024);
        assert_eq!(adapted_period(16, 0, 0.1, 16, budget), 16);
        // In between (bursts of a service, a few dozen reads each): unchanged.
        assert_eq!(adapted_period(64, 50, 0.1, 16, budget), 64);
        assert_eq!(adapted_period(16, 120, 0.1, 16, budget), 16);
        assert_eq!(
            adapted_period(MAX_PERIOD, 1_000_000, 0.1, 16, budget),
            MAX_PERIOD
        );
        // Many threads share the budget, down to a floor each; bursts get more.
        assert_eq!(read_budget(1), TOTAL_RATE);
        assert_eq!(read_budget(1_000), MIN_THREAD_RATE);
        assert_eq!(thread_budget(100.0, 1.0), 100.0);
        assert_eq!(thread_budget(100.0, 0.25), 400.0);
        assert_eq!(thread_budget(100.0, 0.0), 100.0 * MAX_BURST_FACTOR);
    }

    #[test]
    fn delays_have_percentiles() {
        let mut m = MemoryEvents::new(true, 16);
        assert_eq!(m.delay_percentiles(), None);
        for us in 1..=100 {
            m.delay(us);
        }
        assert_eq!(m.delay_percentiles(), Some((51, 99)));
    }
}
