//! Findings in words: the few facts of a recording a person should read first ("worker 2
//! retained 80 MiB in Cache.fill, app.py:22"), for the top of the HTML report.
//!
//! Each finding is the largest value of one question, at the source line where it landed
//! (the innermost frame): which line holds the most memory that was never freed, which line
//! burnt the most CPU, which line made the most memory that was freed again (churn), and,
//! when nothing else stands out, where the wall time went. A finding names its process when
//! the recording has more than one.
//!
//! They are ranked by the share of its total each one is (of the memory held at the end, all
//! CPU time, all growth, all wall time), retained memory weighing 1.5 times and wall time half:
//! a leak is the question first asked, and wall time is mostly waiting.

use rustc_hash::FxHashMap;

use super::{short_file, Attribution, Key, Metric, Site};
use crate::output::flame::duration;
use crate::output::units::bytes;
use crate::recording::Recording;

/// Memory below this is not worth a sentence (bytes).
const MEMORY_WORTH: f64 = 1024.0 * 1024.0;

/// A person's name for a process: "worker 2 (pid 4244)", "master (pid 4242)" when it has
/// workers, "the program (pid 4242)" when alone.
pub fn process_name(rec: &Recording, id: usize) -> String {
    let p = &rec.processes[id];
    let name = match (p.parent, super::worker_number(rec, id)) {
        (None, _) if rec.processes.iter().any(|q| q.parent == Some(id as u32)) => "master".into(),
        (None, _) => "the program".into(),
        (Some(_), Some(n)) => format!("worker {n}"),
        (Some(_), None) => "a child process".into(),
    };
    format!("{name} (pid {})", p.pid)
}

/// Values per (process, function name, file, line) of the innermost frame: wall, CPU,
/// growth, retained.
type LineValues = FxHashMap<(u32, u32, u32, i32), [f64; 4]>;

fn per_line(rec: &Recording, attr: &Attribution) -> LineValues {
    let mut out = LineValues::default();
    for (column, metric) in [Metric::Wall, Metric::Cpu, Metric::Growth, Metric::Retained]
        .into_iter()
        .enumerate()
    {
        for (key, &v) in attr.values(metric) {
            let Key {
                process,
                site: Site::Stack(stack),
            } = *key
            else {
                continue;
            };
            let Some(frame) = rec.stack_frames(stack).next() else {
                continue;
            };
            let Some(f) = rec.functions.get(frame.function as usize) else {
                continue;
            };
            out.entry((process, f.qualname, f.file, frame.line))
                .or_default()[column] += v;
        }
    }
    out
}

/// A source line: function name, file (string ids) and line number.
type SourceLine = (u32, u32, i32);

/// A line's value, and each process's part of it, largest first.
struct Found {
    line: SourceLine,
    value: f64,
    parts: Vec<(u32, f64)>,
}

/// Up to `max` findings, most important first.
pub fn findings(rec: &Recording, attr: &Attribution, max: usize) -> Vec<String> {
    // The same line in several processes (every worker runs the same code) is one finding.
    let mut lines: FxHashMap<SourceLine, Vec<(u32, [f64; 4])>> = FxHashMap::default();
    for ((process, name, file, line), v) in per_line(rec, attr) {
        lines
            .entry((name, file, line))
            .or_default()
            .push((process, v));
    }
    let several = rec.processes.len() > 1;
    let at = |k: &Found| -> String {
        let (name, file, line) = k.line;
        let file = short_file(rec, k.parts.first().map(|p| p.0), rec.string(file));
        if line > 0 {
            format!("{}, {}:{}", rec.string(name), file, line)
        } else {
            format!("{}, {}", rec.string(name), file)
        }
    };
    // Who: the program, one process, or how many share the finding, and their parts
    // (" (worker 1: 3.0 MiB, worker 2: 2.0 MiB)").
    let who = |k: &Found, amount: &dyn Fn(f64) -> String| -> (String, String) {
        if !several {
            return ("the program".into(), String::new());
        }
        if k.parts.len() == 1 {
            return (process_name(rec, k.parts[0].0 as usize), String::new());
        }
        if k.parts[0].1 >= 0.9 * k.value {
            // Named alone, but the value is everyone's: say how much is its own.
            return (
                process_name(rec, k.parts[0].0 as usize),
                format!(" ({} of it its own)", amount(k.parts[0].1)),
            );
        }
        let mut parts: Vec<String> = k
            .parts
            .iter()
            .take(3)
            .map(|(p, v)| {
                let name = process_name(rec, *p as usize);
                let short = name.rsplit_once(" (pid").map_or(name.as_str(), |n| n.0);
                format!("{short}: {}", amount(*v))
            })
            .collect();
        if k.parts.len() > 3 {
            parts.push(format!("{} more", k.parts.len() - 3));
        }
        (
            format!("{} processes", k.parts.len()),
            format!(" ({})", parts.join(", ")),
        )
    };
    let top = |value: &dyn Fn(&[f64; 4]) -> f64| -> Option<Found> {
        lines
            .iter()
            .filter_map(|(k, per)| {
                let mut parts: Vec<(u32, f64)> = per
                    .iter()
                    .map(|(p, v)| (*p, value(v)))
                    .filter(|e| e.1 > 0.0)
                    .collect();
                parts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let total: f64 = parts.iter().map(|e| e.1).sum();
                (total > 0.0).then_some(Found {
                    line: *k,
                    value: total,
                    parts,
                })
            })
            .max_by(|a, b| a.value.total_cmp(&b.value).then(b.line.cmp(&a.line)))
    };
    let mem = |v: f64| bytes(v);
    let time = |v: f64| duration(v as u64);
    let mut out: Vec<(f64, String)> = Vec::new();
    // Memory that stayed: the line holding the most of it.
    let growth_total = attr.total(Metric::Growth).max(1.0);
    let held: f64 = attr
        .retained
        .values()
        .filter(|v| **v > 0.0)
        .sum::<f64>()
        .max(1.0);
    if let Some(k) = top(&|v| v[3]) {
        let v = k.value;
        if v >= MEMORY_WORTH {
            out.push((
                1.5 * v / held,
                {
                    let (subject, parts) = who(&k, &mem);
                    format!(
                        "{subject} retained {} in {}{parts}: never freed ({:.0}% of the memory held at the end)",
                        bytes(v),
                        at(&k),
                        100.0 * v / held
                    )
                },
            ));
        }
    }
    // CPU: the hottest line.
    let cpu_total = attr.total(Metric::Cpu).max(1.0);
    if let Some(k) = top(&|v| v[1]) {
        let v = k.value;
        out.push((v / cpu_total, {
            let (subject, parts) = who(&k, &time);
            format!(
                "{subject} spent the most CPU time in {}: {}{parts}, {:.0}% of all CPU time",
                at(&k),
                duration(v as u64),
                100.0 * v / cpu_total
            )
        }));
    }
    // Churn: grown and freed again.
    if let Some(k) = top(&|v| v[2] - v[3].max(0.0)) {
        let v = k.value;
        if v >= MEMORY_WORTH {
            out.push((
                v / growth_total,
                {
                    let (subject, parts) = who(&k, &mem);
                    format!(
                        "{subject} made {} of memory that was freed again in {}{parts}: temporary memory, {:.0}% of all growth",
                        bytes(v),
                        at(&k),
                        100.0 * v / growth_total
                    )
                },
            ));
        }
    }
    // Wall time: where the threads were.
    let wall_total = attr.total(Metric::Wall).max(1.0);
    if let Some(k) = top(&|v| v[0]) {
        let v = k.value;
        out.push((
            0.5 * v / wall_total,
            {
                let (subject, parts) = who(&k, &time);
                format!(
                    "{subject}: the threads spent the most wall time in {}: {}{parts}, {:.0}% of all wall time",
                    at(&k),
                    duration(v as u64),
                    100.0 * v / wall_total
                )
            },
        ));
    }
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.into_iter().take(max).map(|(_, s)| s).collect()
}
