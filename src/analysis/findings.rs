//! Findings in words: the few facts of a recording a person should read first ("worker 2
//! retained 80 MiB in Cache.fill, app.py:22"), for the top of the HTML report.
//!
//! Each finding is the largest value of one question, at the source line where it landed
//! (the innermost frame): which line holds the most memory that was never freed, which line
//! burnt the most CPU, which line made the most memory that was freed again (churn), and,
//! when nothing else stands out, where the wall time went. A finding names its process when
//! the recording has more than one.

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
    let name = match p.parent {
        None if rec.processes.iter().any(|q| q.parent == Some(id as u32)) => "master".into(),
        None => "the program".into(),
        Some(parent) => {
            let root_child = rec
                .processes
                .get(parent as usize)
                .is_some_and(|q| q.parent.is_none());
            if root_child {
                let n = rec.processes[..id]
                    .iter()
                    .filter(|q| q.parent == Some(parent))
                    .count()
                    + 1;
                format!("worker {n}")
            } else {
                "a child process".into()
            }
        }
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

/// Up to `max` findings, most important first.
pub fn findings(rec: &Recording, attr: &Attribution, max: usize) -> Vec<String> {
    let lines = per_line(rec, attr);
    let several = rec.processes.len() > 1;
    let at = |k: &(u32, u32, u32, i32)| -> String {
        let file = short_file(rec, Some(k.0), rec.string(k.2));
        if k.3 > 0 {
            format!("{}, {}:{}", rec.string(k.1), file, k.3)
        } else {
            format!("{}, {}", rec.string(k.1), file)
        }
    };
    let who = |k: &(u32, u32, u32, i32)| -> String {
        if several {
            process_name(rec, k.0 as usize)
        } else {
            "the program".into()
        }
    };
    let top = |column: usize, value: &dyn Fn(&[f64; 4]) -> f64| {
        lines
            .iter()
            .map(|(k, v)| (k, value(v), v[column]))
            .filter(|e| e.1 > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(k, v, _)| (*k, v))
    };
    let mut out: Vec<(f64, String)> = Vec::new();
    // Memory that stayed: the line holding the most of it.
    let growth_total = attr.total(Metric::Growth).max(1.0);
    if let Some((k, v)) = top(3, &|v| v[3]) {
        if v >= MEMORY_WORTH {
            out.push((
                3.0 + v / growth_total,
                format!(
                    "{} retained {} in {} ({:.0}% of all memory growth, never freed)",
                    who(&k),
                    bytes(v),
                    at(&k),
                    100.0 * v / growth_total
                ),
            ));
        }
    }
    // CPU: the hottest line.
    let cpu_total = attr.total(Metric::Cpu).max(1.0);
    if let Some((k, v)) = top(1, &|v| v[1]) {
        out.push((
            2.0 + v / cpu_total,
            format!(
                "{} spent the most CPU time in {}: {} ({:.0}% of all CPU time)",
                who(&k),
                at(&k),
                duration(v as u64),
                100.0 * v / cpu_total
            ),
        ));
    }
    // Churn: grown and freed again.
    if let Some((k, v)) = top(2, &|v| v[2] - v[3].max(0.0)) {
        if v >= MEMORY_WORTH {
            out.push((
                1.5 + v / growth_total,
                format!(
                    "{} made {} of memory that was freed again in {} (temporary memory: {:.0}% of all growth)",
                    who(&k),
                    bytes(v),
                    at(&k),
                    100.0 * v / growth_total
                ),
            ));
        }
    }
    // Wall time: where the threads were.
    let wall_total = attr.total(Metric::Wall).max(1.0);
    if let Some((k, v)) = top(0, &|v| v[0]) {
        out.push((
            1.0 + v / wall_total,
            format!(
                "{}'s threads spent the most wall time in {}: {} ({:.0}% of all wall time)",
                who(&k),
                at(&k),
                duration(v as u64),
                100.0 * v / wall_total
            ),
        ));
    }
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.into_iter().take(max).map(|(_, s)| s).collect()
}
