//! Per-line tables: like memory_profiler's line-by-line output, but from sampling, for any
//! metric and without decorators.
//!
//! For each source line: *self* is what was attributed while the line was the innermost frame
//! (memory allocated by the line itself), *total* includes everything that happened in calls
//! made from it (a line that appears several times in one stack, as in recursion, counts once).

use std::collections::HashMap;
use std::io::{self, Write};

use serde::Serialize;

use super::flame::duration;
use super::text::{one_line, visible};
use super::units::bytes;
use crate::analysis::{Attribution, Metric, Site};
use crate::recording::Recording;

/// One source line's figures. Time in µs, memory in bytes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LineRow {
    pub file: String,
    pub line: i32,
    pub function: String,
    /// The chosen metric, on the line itself and including its calls.
    pub self_value: f64,
    pub total_value: f64,
    /// Share of all wall time spent on or under this line, in percent.
    pub time_pct: f64,
    pub growth: f64,
    pub net: f64,
    /// Net memory this line (with its calls) had contributed when memory was at its highest.
    pub peak: f64,
    /// That, as a share of the growth over the baseline at the peak, in percent.
    pub peak_pct: f64,
    pub source: Option<String>,
}

type LineKey = (u32, i32, u32); // (file string, line, function)

/// (self, total) of a metric per line.
fn per_line(rec: &Recording, attr: &Attribution, metric: Metric) -> HashMap<LineKey, (f64, f64)> {
    let mut out: HashMap<LineKey, (f64, f64)> = HashMap::new();
    let mut seen: Vec<LineKey> = Vec::new();
    for (key, &value) in attr.values(metric) {
        let Site::Stack(stack) = key.site else {
            continue;
        };
        seen.clear();
        for (depth, frame) in rec.stack_frames(stack).enumerate() {
            let f = &rec.functions[frame.function as usize];
            let k = (f.file, frame.line, frame.function);
            let entry = out.entry(k).or_insert((0.0, 0.0));
            if depth == 0 {
                entry.0 += value;
            }
            if !seen.contains(&k) {
                seen.push(k);
                entry.1 += value;
            }
        }
    }
    out
}

/// Source lines of a file: the copy in the recording, else the file itself.
struct Sources<'a> {
    rec: &'a Recording,
    cache: HashMap<u32, Option<Vec<String>>>,
}

impl Sources<'_> {
    fn line(&mut self, file: u32, line: i32) -> Option<String> {
        let rec = self.rec;
        let lines = self.cache.entry(file).or_insert_with(|| {
            let text = rec
                .sources
                .get(&file)
                .cloned()
                .or_else(|| std::fs::read_to_string(rec.string(file)).ok())?;
            Some(text.lines().map(|l| l.to_string()).collect())
        });
        let text = lines
            .as_ref()?
            .get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        Some(one_line(text.trim(), 80))
    }
}

/// The table for `metric`: every line with a non-zero value, sorted by the metric on the line
/// itself (then including calls); or, with `function`, every line of that function in source
/// order (lines without samples included, as memory_profiler shows them).
pub fn rows(
    rec: &Recording,
    attr: &Attribution,
    metric: Metric,
    function: Option<&str>,
) -> Vec<LineRow> {
    let chosen = per_line(rec, attr, metric);
    let wall = per_line(rec, attr, Metric::Wall);
    let growth = per_line(rec, attr, Metric::Growth);
    let net = per_line(rec, attr, Metric::Net);
    let peak = per_line(rec, attr, Metric::Peak);
    let (wall_total, peak_total) = (attr.total(Metric::Wall), attr.total(Metric::Peak));
    let pct = |v: f64, total: f64| if total > 0.0 { 100.0 * v / total } else { 0.0 };
    let mut sources = Sources {
        rec,
        cache: HashMap::new(),
    };
    let matches = |id: u32| -> bool {
        let f = &rec.functions[id as usize];
        function.is_none_or(|want| {
            let q = rec.string(f.qualname);
            q == want || rec.string(f.name) == want || q.ends_with(&format!(".{want}"))
        })
    };
    let mut keys: Vec<LineKey> = chosen
        .keys()
        .chain(wall.keys())
        .copied()
        .filter(|k| matches(k.2))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if function.is_some() {
        // Fill in the function's lines that no sample caught, from its first line to its last
        // line seen.
        let mut extra = Vec::new();
        for fid in keys
            .iter()
            .map(|k| k.2)
            .collect::<std::collections::BTreeSet<_>>()
        {
            let f = &rec.functions[fid as usize];
            let last = keys
                .iter()
                .filter(|k| k.2 == fid)
                .map(|k| k.1)
                .max()
                .unwrap_or(f.firstlineno);
            for line in f.firstlineno.max(1)..=last {
                extra.push((f.file, line, fid));
            }
        }
        keys.extend(extra);
        keys.sort_unstable();
        keys.dedup();
    }
    let mut out: Vec<LineRow> = keys
        .into_iter()
        .map(|k| {
            let f = &rec.functions[k.2 as usize];
            let (self_value, total_value) = chosen.get(&k).copied().unwrap_or_default();
            LineRow {
                file: rec.string(k.0).to_string(),
                line: k.1,
                function: rec.string(f.qualname).to_string(),
                self_value,
                total_value,
                time_pct: pct(wall.get(&k).map_or(0.0, |v| v.1), wall_total),
                growth: growth.get(&k).map_or(0.0, |v| v.1),
                net: net.get(&k).map_or(0.0, |v| v.1),
                peak: peak.get(&k).map_or(0.0, |v| v.1),
                peak_pct: pct(peak.get(&k).map_or(0.0, |v| v.1), peak_total),
                source: sources.line(k.0, k.1),
            }
        })
        .collect();
    if function.is_none() {
        // What no source line can take is listed too, not hidden.
        for site in Site::PSEUDO {
            let label = site.pseudo_label().unwrap_or("?");
            let sum = |m: Metric| -> f64 {
                attr.values(m)
                    .iter()
                    .filter(|(k, _)| k.site == site)
                    .map(|(_, v)| v)
                    .sum::<f64>()
                    + 0.0
            };
            let value = sum(metric);
            if value != 0.0 {
                out.push(LineRow {
                    function: label.to_string(),
                    self_value: value,
                    total_value: value,
                    time_pct: pct(sum(Metric::Wall), wall_total),
                    growth: sum(Metric::Growth),
                    net: sum(Metric::Net),
                    peak: sum(Metric::Peak),
                    peak_pct: pct(sum(Metric::Peak), peak_total),
                    ..LineRow::default()
                });
            }
        }
        out.retain(|r| r.self_value.abs() > 0.0 || r.total_value.abs() > 0.0);
        out.sort_by(|a, b| {
            b.self_value
                .abs()
                .total_cmp(&a.self_value.abs())
                .then(b.total_value.abs().total_cmp(&a.total_value.abs()))
        });
    }
    out
}

fn value(metric: Metric, v: f64) -> String {
    if metric.is_memory() {
        bytes(v)
    } else {
        duration(v.max(0.0) as u64)
    }
}

/// A text table for a terminal.
pub fn write_text(rows: &[LineRow], metric: Metric, mut w: impl Write) -> io::Result<()> {
    writeln!(
        w,
        "{} by line (self: on the line itself; total: including the calls it makes)",
        metric.title()
    )?;
    writeln!(
        w,
        "{:>11} {:>11} {:>7} {:>11} {:>11} {:>11}  {:<28} {:<30} source",
        "self", "total", "time %", "growth", "net", "at peak", "function", "location"
    )?;
    for r in rows {
        let file = r.file.rsplit('/').next().unwrap_or(&r.file);
        writeln!(
            w,
            "{:>11} {:>11} {:>6.1}% {:>11} {:>11} {:>11}  {:<28} {:<30} {}",
            value(metric, r.self_value),
            value(metric, r.total_value),
            r.time_pct,
            bytes(r.growth),
            bytes(r.net),
            bytes(r.peak),
            one_line(&r.function, 28),
            if r.file.is_empty() {
                String::new()
            } else {
                one_line(&format!("{file}:{}", r.line), 30)
            },
            visible(r.source.as_deref().unwrap_or(""))
        )?;
    }
    w.flush()
}

/// CSV with raw numbers (µs or bytes).
pub fn write_csv(rows: &[LineRow], metric: Metric, mut w: impl Write) -> io::Result<()> {
    let unit = if metric.is_memory() { "bytes" } else { "us" };
    writeln!(w, "file,line,function,self_{unit},total_{unit},time_pct,growth_bytes,net_bytes,peak_bytes,peak_pct,source")?;
    // Fields are quoted; a name's control characters (a newline would end the row) are made
    // visible.
    let quote = |s: &str| format!("\"{}\"", visible(s).replace('"', "\"\""));
    for r in rows {
        writeln!(
            w,
            "{},{},{},{:.0},{:.0},{:.3},{:.0},{:.0},{:.0},{:.3},{}",
            quote(&r.file),
            r.line,
            quote(&r.function),
            r.self_value,
            r.total_value,
            r.time_pct,
            r.growth,
            r.net,
            r.peak,
            r.peak_pct,
            quote(r.source.as_deref().unwrap_or(""))
        )?;
    }
    w.flush()
}

/// JSON: the metric and its unit, and the rows.
pub fn write_json(rows: &[LineRow], metric: Metric, mut w: impl Write) -> io::Result<()> {
    let doc = serde_json::json!({
        "metric": metric.name(),
        "unit": if metric.is_memory() { "bytes" } else { "us" },
        "lines": rows,
    });
    serde_json::to_writer_pretty(&mut w, &doc)?;
    writeln!(w)
}
