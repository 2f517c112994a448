//! `memspy info`: what a recording holds — processes, samples, time span, failures, damage.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::commands::{to_stdout, written};
use crate::error::{Error, Result};
use crate::output::text::{message, one_line, visible};
use crate::output::units::{bytes, count};
use crate::recording::format::TaskKind;
use crate::recording::reader::Damage;
use crate::recording::{FailureKind, Recording};

/// The newest `*.msp` file in the current folder (what report commands read by default).
pub fn newest_recording() -> Result<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    let dir = std::fs::read_dir(".").map_err(|e| Error::io("listing the current folder", e))?;
    for entry in dir.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "msp") {
            if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                if best.as_ref().is_none_or(|(t, _)| modified > *t) {
                    best = Some((modified, path));
                }
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        Error::Usage("no recording (*.msp) in the current folder: give one with -i FILE, or make one with `memspy record`".into())
    })
}

/// Open the recording the user named, or the newest one here; warn about damage on stderr.
pub fn open_recording(path: Option<&Path>) -> Result<(PathBuf, Recording)> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => newest_recording()?,
    };
    let rec = Recording::open(&path)?;
    if let Some(warning) = damage_warning(&path.display().to_string(), &rec) {
        eprintln!("{}", message(&warning));
    }
    Ok((path, rec))
}

/// What to tell about a recording that is damaged or was not closed, if anything.
pub fn damage_warning(file: &str, rec: &Recording) -> Option<String> {
    match &rec.damage {
        Some(Damage::Corrupt { offset, what }) => Some(format!(
            "memspy: warning: {file} is damaged at byte {offset} ({what}); using the {} samples before it",
            count(rec.samples.len() as u64)
        )),
        Some(Damage::Truncated { .. }) | None if !rec.complete => Some(format!(
            "memspy: note: {file} was not closed cleanly (memspy was killed or the disk filled up); {} samples recovered",
            count(rec.samples.len() as u64)
        )),
        _ => None,
    }
}

#[derive(Serialize)]
pub(crate) struct Info {
    file: String,
    bytes: u64,
    complete: bool,
    damage: Option<String>,
    memspy_version: String,
    start_unix_ns: u64,
    rate_hz: f64,
    blocking: bool,
    memory: String,
    duration_s: f64,
    samples: u64,
    failed: FailureCounts,
    ticks: u64,
    missed_ticks: u64,
    late_max_ms: f64,
    late_mean_ms: f64,
    /// Which file of a rotated recording this is.
    part: Option<u32>,
    /// The sampler's work per tick (its time outside waits, over ticks), µs.
    busy_per_tick_us: Option<f64>,
    /// Blocking mode: how long threads were held stopped per tick, mean and max (ms).
    paused_mean_ms: Option<f64>,
    paused_max_ms: Option<f64>,
    functions: usize,
    stacks: usize,
    /// How memory was sampled ("memory from page-fault and free events and ticks", ...).
    sampling: String,
    memory_events: Option<MemoryEventsInfo>,
    processes: Vec<ProcessInfo>,
}

/// What the memory events were (see `sample::events`).
#[derive(Serialize)]
struct MemoryEventsInfo {
    /// "faults and frees", "faults only: <why>" or "off: <why>".
    mode: String,
    /// Memory-event samples (stack reads) written.
    samples: u64,
    /// Records from the kernel: fault samples (each of `period` faults or more) and frees.
    fault_records: u64,
    free_records: u64,
    /// Records the kernel dropped (its buffer was full), and stack reads that raced.
    lost: u64,
    failed_reads: u64,
    period: u64,
    max_period: u64,
    delay_median_us: u64,
    delay_p99_us: u64,
}

#[derive(Serialize, Default)]
struct FailureCounts {
    raced: u64,
    exited: u64,
    fatal: u64,
}

#[derive(Serialize)]
struct ProcessInfo {
    pid: i32,
    command: String,
    python: String,
    parent_pid: Option<i32>,
    samples: u64,
    failed: FailureCounts,
    start_s: f64,
    end_s: Option<f64>,
    end: Option<String>,
    exit_code: Option<i32>,
    /// How it ended, in words ("exited, status 0", "killed by SIGKILL", "recording ended").
    ended: Option<String>,
    /// Its place in the recording: "launched" or "attached" (the process memspy was given),
    /// "worker N of PID" (the Nth child of that process), "child of PID".
    role: String,
    rss_min: u64,
    rss_max: u64,
    threads: usize,
    /// Each thread: its kernel id and how it is named (Python's name, else the kernel's).
    thread_names: Vec<(i32, String)>,
    /// Greenlets and asyncio tasks recorded.
    greenlets: usize,
    asyncio_tasks: usize,
    /// Threads whose kernel id, as the process's memory gave it, named none of its threads:
    /// their stacks were read, but they were never paused.
    unproven_threads: usize,
}

pub fn run(path: Option<&Path>, json: bool) -> Result<()> {
    let (path, rec) = open_recording(path)?;
    to_stdout(|out| report(&path.display().to_string(), &rec, json, out))
}

/// Describe `rec` (read from `file`), as text or JSON.
pub fn report(file: &str, rec: &Recording, json: bool, out: &mut dyn Write) -> Result<()> {
    let info = summarize(file, rec);
    written(if json {
        write_json(&info, out)
    } else {
        write_text(&info, out)
    })
}

pub(crate) fn summarize(file: &str, rec: &Recording) -> Info {
    let mut processes: Vec<ProcessInfo> = rec
        .processes
        .iter()
        .enumerate()
        .map(|(id, p)| ProcessInfo {
            pid: p.pid,
            command: rec.string(p.command).to_string(),
            python: rec.string(p.python).to_string(),
            parent_pid: p
                .parent
                .and_then(|i| rec.processes.get(i as usize))
                .map(|parent| parent.pid),
            samples: 0,
            failed: FailureCounts::default(),
            start_s: p.start_us as f64 / 1e6,
            end_s: p.end_us.map(|t| t as f64 / 1e6),
            end: p.end_reason.map(|r| r.describe().to_string()),
            exit_code: p.exit,
            ended: p.end_reason.map(|r| r.describe_with(p.exit)),
            role: crate::analysis::process_role(rec, id),
            rss_min: u64::MAX,
            rss_max: 0,
            threads: rec
                .threads
                .iter()
                .filter(|t| t.process as usize == id)
                .count(),
            unproven_threads: rec
                .threads
                .iter()
                .filter(|t| t.process as usize == id && t.unproven())
                .count(),
            thread_names: rec
                .threads
                .iter()
                .filter(|t| t.process as usize == id)
                .map(|t| (t.tid, t.label(rec).to_string()))
                .collect(),
            greenlets: rec
                .tasks
                .iter()
                .filter(|t| t.process as usize == id && t.kind == TaskKind::Greenlet)
                .count(),
            asyncio_tasks: rec
                .tasks
                .iter()
                .filter(|t| t.process as usize == id && t.kind == TaskKind::Asyncio)
                .count(),
        })
        .collect();
    for s in &rec.samples {
        if let Some(p) = processes.get_mut(s.process as usize) {
            p.samples += 1;
            p.rss_min = p.rss_min.min(s.rss_bytes);
            p.rss_max = p.rss_max.max(s.rss_bytes);
        }
    }
    let mut failed = FailureCounts::default();
    for f in &rec.failures {
        let mut counts = vec![&mut failed];
        counts.extend(processes.get_mut(f.process as usize).map(|p| &mut p.failed));
        for c in counts {
            match f.kind {
                FailureKind::Raced => c.raced += 1,
                FailureKind::Exited => c.exited += 1,
                FailureKind::Fatal => c.fatal += 1,
            }
        }
    }
    for p in &mut processes {
        if p.samples == 0 {
            p.rss_min = 0;
        }
    }
    let damage = rec.damage.as_ref().map(|d| match d {
        Damage::Truncated { offset } => {
            format!("cut short at byte {offset} (crash, kill -9 or full disk)")
        }
        Damage::Corrupt { offset, what } => format!("damaged at byte {offset}: {what}"),
    });
    let st = &rec.stats;
    Info {
        file: file.to_string(),
        bytes: rec.file_bytes,
        complete: rec.complete,
        damage,
        memspy_version: rec.meta.memspy_version.clone(),
        start_unix_ns: rec.meta.start_unix_ns,
        rate_hz: rec.meta.rate_hz,
        blocking: rec.meta.blocking,
        memory: rec.meta.memory.clone(),
        duration_s: rec.duration_us() as f64 / 1e6,
        samples: rec.samples.len() as u64,
        failed,
        ticks: st.ticks,
        missed_ticks: st.missed,
        late_max_ms: st.late_max_us as f64 / 1e3,
        late_mean_ms: if st.ticks > 0 {
            st.late_total_us as f64 / 1e3 / st.ticks as f64
        } else {
            0.0
        },
        part: rec.meta.part,
        busy_per_tick_us: st
            .busy_us
            .filter(|_| st.ticks > 0)
            .map(|b| b as f64 / st.ticks as f64),
        paused_mean_ms: st
            .pauses
            .filter(|p| p.0 > 0)
            .map(|p| p.1 as f64 / 1e3 / p.0 as f64),
        paused_max_ms: st.pauses.filter(|p| p.0 > 0).map(|p| p.2 as f64 / 1e3),
        functions: rec.functions.len(),
        stacks: rec.stacks.len(),
        sampling: rec.sampling(),
        memory_events: rec
            .memory_events_summary
            .as_ref()
            .map(|m| MemoryEventsInfo {
                mode: m.mode.clone(),
                samples: m.samples,
                fault_records: m.faults,
                free_records: m.frees,
                lost: m.lost,
                failed_reads: m.failed,
                period: m.period,
                max_period: m.max_period,
                delay_median_us: m.delay_p50_us,
                delay_p99_us: m.delay_p99_us,
            }),
        processes,
    }
}

fn write_json(info: &Info, mut w: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut w, info)?;
    writeln!(w)
}

/// The text form; everything that comes from the file is made visible.
fn write_text(i: &Info, w: &mut dyn Write) -> io::Result<()> {
    let state = match (&i.damage, i.complete) {
        (Some(d), _) => d.clone(),
        (None, true) => "closed cleanly".into(),
        (None, false) => "not closed (recording still running, or memspy was killed)".into(),
    };
    writeln!(
        w,
        "{}: {}, {}",
        visible(&i.file),
        bytes(i.bytes as f64),
        one_line(&state, 200)
    )?;
    let started = chrono::DateTime::from_timestamp_nanos(i.start_unix_ns as i64)
        .with_timezone(&chrono::Local);
    writeln!(
        w,
        "recorded {} for {:.1} s at {} Hz, {}, memory {}, by memspy {}",
        started.format("%Y-%m-%d %H:%M:%S"),
        i.duration_s,
        i.rate_hz,
        if i.blocking {
            "blocking"
        } else {
            "non-blocking"
        },
        visible(&i.memory),
        one_line(&i.memspy_version, 40)
    )?;
    if let Some(part) = i.part.filter(|&p| p > 1) {
        writeln!(
            w,
            "part {part} of a rotated recording: it starts with what the earlier parts defined; times go on from part 1's start"
        )?;
    }
    let f = &i.failed;
    writeln!(
        w,
        "samples: {}   failed: {} (raced {}, process exited {}, fatal {})",
        count(i.samples),
        count(f.raced + f.exited + f.fatal),
        f.raced,
        f.exited,
        f.fatal
    )?;
    writeln!(
        w,
        "schedule: {} ticks, {} missed, lateness mean {:.2} ms, max {:.2} ms",
        count(i.ticks),
        count(i.missed_ticks),
        i.late_mean_ms,
        i.late_max_ms
    )?;
    if let Some(busy) = i.busy_per_tick_us {
        let share = busy * i.ticks as f64 / (i.duration_s * 1e6).max(1.0) * 100.0;
        writeln!(
            w,
            "sampler: {busy:.1} µs of work per tick ({share:.0} % of its time, waits excluded)"
        )?;
    }
    if let (Some(mean), Some(max)) = (i.paused_mean_ms, i.paused_max_ms) {
        writeln!(
            w,
            "threads held stopped: mean {mean:.2} ms, max {max:.2} ms per tick (first stop to last resume)"
        )?;
    }
    writeln!(
        w,
        "functions: {}   distinct stacks: {}",
        count(i.functions as u64),
        count(i.stacks as u64)
    )?;
    match &i.memory_events {
        Some(m) if m.mode.starts_with("faults") => writeln!(
            w,
            "memory events: {} · {} stack reads from {} fault and {} free records ({} lost, {} \
             raced) · period {} faults{} · fault-to-read delay median {} µs, p99 {} µs",
            if m.mode == "faults and frees" {
                "page faults and frees".to_string()
            } else {
                format!(
                    "page faults only ({})",
                    visible(m.mode.trim_start_matches("faults only: "))
                )
            },
            count(m.samples),
            count(m.fault_records),
            count(m.free_records),
            count(m.lost),
            count(m.failed_reads),
            m.period,
            if m.max_period > m.period {
                format!(" (up to {} under load)", m.max_period)
            } else {
                String::new()
            },
            m.delay_median_us,
            m.delay_p99_us
        )?,
        Some(m) => writeln!(
            w,
            "memory events: off ({}): memory is attributed from ticks only",
            visible(m.mode.trim_start_matches("off: "))
        )?,
        None => writeln!(
            w,
            "memory events: none: memory is attributed from ticks only"
        )?,
    }
    let unproven: usize = i.processes.iter().map(|p| p.unproven_threads).sum();
    if unproven > 0 {
        writeln!(
            w,
            "{unproven} thread{} with an unproven id: the kernel id in the process's memory named \
             none of its threads, so memspy read {} stack but never paused it",
            if unproven == 1 { "" } else { "s" },
            if unproven == 1 { "its" } else { "their" }
        )?;
    }
    writeln!(
        w,
        "\n{:>8} {:>8} {:>8} {:>7} {:>10} {:>10} {:>16}  command",
        "pid", "python", "samples", "failed", "rss min", "rss max", "span (s)"
    )?;
    for p in &i.processes {
        let end = match &p.ended {
            Some(e) => format!("  [{}; {e}]", p.role),
            None => format!("  [{}]", p.role),
        };
        writeln!(
            w,
            "{:>8} {:>8} {:>8} {:>7} {:>10} {:>10} {:>16}  {}{}",
            p.pid,
            one_line(&p.python, 20),
            count(p.samples),
            p.failed.raced + p.failed.exited + p.failed.fatal,
            bytes(p.rss_min as f64),
            bytes(p.rss_max as f64),
            format!(
                "{:.1}-{}",
                p.start_s,
                p.end_s.map_or("".into(), |e| format!("{e:.1}"))
            ),
            one_line(&p.command, 100),
            end
        )?;
    }
    // Threads by name, and the units below them, when there is more than one thread to tell
    // apart or any unit.
    for p in &i.processes {
        if p.thread_names.len() < 2 && p.greenlets + p.asyncio_tasks == 0 {
            continue;
        }
        const SHOWN: usize = 8;
        let mut names: Vec<String> = p
            .thread_names
            .iter()
            .take(SHOWN)
            .map(|(tid, name)| format!("{} ({tid})", one_line(name, 40)))
            .collect();
        if p.thread_names.len() > SHOWN {
            names.push(format!("{} more", p.thread_names.len() - SHOWN));
        }
        let mut units = String::new();
        for (n, what) in [(p.greenlets, "greenlet"), (p.asyncio_tasks, "asyncio task")] {
            if n > 0 {
                units.push_str(&format!(
                    "; {} {what}{}",
                    count(n as u64),
                    if n == 1 { "" } else { "s" }
                ));
            }
        }
        writeln!(w, "{:>8} threads: {}{units}", p.pid, names.join(", "))?;
    }
    Ok(())
}
