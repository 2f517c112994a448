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
    /// The file as reports show it (see `analysis::short_file`).
    pub short_file: String,
    pub line: i32,
    pub function: String,
    /// The chosen metric, on the line itself and including its calls.
    pub self_value: f64,
    pub total_value: f64,
    /// Share of all wall time spent on or under this line, in percent.
    pub time_pct: f64,
    pub growth: f64,
    /// Memory grown on or under this line and not freed by the end.
    pub retained: f64,
    /// Memory this line (with its calls) had grown and still held when memory was at its
    /// highest.
    pub peak: f64,
    /// That, as a share of the growth over the baseline at the peak, in percent.
    pub peak_pct: f64,
    pub source: Option<String>,
}

type LineKey = (u32, i32, u32); // (file string, line, function)

/// (self, total) of a metric per line.
fn per_line(rec: &Recording, attr: &Attribution, metric: Metric) -> HashMap<LineKey, (f64, f64)> {
    let mut out: HashMap<LineKey, (f64, f64)> = HashMap::new();
    // A set, not a list: a stack can be thousands of frames deep.
    let mut seen: rustc_hash::FxHashSet<LineKey> = Default::default();
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
            if seen.insert(k) {
                entry.1 += value;
            }
        }
    }
    out
}

/// Source lines of a file, from the copy the recording holds. Never from the file system: the
/// file name comes from the target (or a forged recording) and could name `/etc/shadow` or a
/// FIFO, read by a report running as root.
struct Sources<'a> {
    rec: &'a Recording,
    cache: HashMap<u32, Option<Vec<&'a str>>>,
}

impl<'a> Sources<'a> {
    fn lines(&mut self, file: u32) -> Option<&[&'a str]> {
        let rec = self.rec;
        self.cache
            .entry(file)
            .or_insert_with(|| Some(rec.sources.get(&file)?.lines().collect()))
            .as_deref()
    }

    /// The text of a line, trimmed, on one line and at most 80 characters (not escaped: the
    /// text writers make it visible, JSON keeps it as it is).
    fn line(&mut self, file: u32, line: i32) -> Option<String> {
        let text = self
            .lines(file)?
            .get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        Some(squeeze(text.trim(), 80))
    }
}

/// The last line of the function defined at line `first` of `text` (its `def`, or its first
/// decorator): the lines after the `def` that are blank, comments, or indented deeper than it
/// (a closing `)` of its parameters too). None when `first` is not a `def` (module code,
/// lambdas, classes' bodies: their end is not told by indentation).
pub(crate) fn function_end(text: &[&str], first: i32) -> Option<i32> {
    let start = usize::try_from(first).ok()?.checked_sub(1)?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let base = indent(text.get(start)?);
    let mut def = start;
    while text.get(def)?.trim_start().starts_with('@') {
        def += 1;
    }
    let head = text.get(def)?.trim_start();
    if !(head.starts_with("def ") || head.starts_with("async def ")) {
        return None;
    }
    let mut last = def;
    for (i, l) in text.iter().enumerate().skip(def + 1) {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if indent(l) <= base && !t.starts_with(')') {
            break;
        }
        last = i;
    }
    i32::try_from(last + 1).ok()
}

/// Runs of whitespace as one space, and at most `max` characters (ending with "…").
fn squeeze(s: &str, max: usize) -> String {
    let mut out = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > max {
        out = out.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
    }
    out
}

/// With `--function`, the lines of a function no sample caught are listed too, but at most
/// this many per function (a forged line number of 2^31-1 must not make 2 billion rows)...
const MAX_FILLED_PER_FUNCTION: i32 = 10_000;
/// ... and in all.
const MAX_FILLED: usize = 100_000;

/// The table for `metric`: every line with a non-zero value, sorted by the metric on the line
/// itself (then including calls); or, with `function`, every line of that function in source
/// order, from its first line to its last (told from the source text the recording holds,
/// else the last line sampled), lines without samples included, as memory_profiler shows
/// them.
pub fn rows(
    rec: &Recording,
    attr: &Attribution,
    metric: Metric,
    function: Option<&str>,
) -> Vec<LineRow> {
    let chosen = per_line(rec, attr, metric);
    let wall = per_line(rec, attr, Metric::Wall);
    let growth = per_line(rec, attr, Metric::Growth);
    let retained = per_line(rec, attr, Metric::Retained);
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
        // line seen, but not past the end of its source (when the recording has it) and not
        // more than MAX_FILLED_PER_FUNCTION lines.
        let mut extra = Vec::new();
        for fid in keys
            .iter()
            .map(|k| k.2)
            .collect::<std::collections::BTreeSet<_>>()
        {
            let f = &rec.functions[fid as usize];
            let first = f.firstlineno.max(1);
            let mut last = keys
                .iter()
                .filter(|k| k.2 == fid)
                .map(|k| k.1)
                .max()
                .unwrap_or(first);
            if let Some(text) = sources.lines(f.file) {
                if let Some(end) = function_end(text, first) {
                    last = last.max(end);
                }
                last = last.min(i32::try_from(text.len()).unwrap_or(i32::MAX));
            }
            last = last.min(first.saturating_add(MAX_FILLED_PER_FUNCTION - 1));
            for line in first..=last {
                if extra.len() >= MAX_FILLED {
                    break;
                }
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
                short_file: crate::analysis::short_file(rec, Some(0), rec.string(k.0)).to_string(),
                line: k.1,
                function: rec.string(f.qualname).to_string(),
                self_value,
                total_value,
                time_pct: pct(wall.get(&k).map_or(0.0, |v| v.1), wall_total),
                growth: growth.get(&k).map_or(0.0, |v| v.1),
                retained: retained.get(&k).map_or(0.0, |v| v.1),
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
                    retained: sum(Metric::Retained),
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
        "self", "total", "time %", "growth", "retained", "at peak", "function", "location"
    )?;
    for r in rows {
        let file = &r.short_file;
        writeln!(
            w,
            "{:>11} {:>11} {:>6.1}% {:>11} {:>11} {:>11}  {:<28} {:<30} {}",
            value(metric, r.self_value),
            value(metric, r.total_value),
            r.time_pct,
            bytes(r.growth),
            bytes(r.retained),
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
    writeln!(w, "file,line,function,self_{unit},total_{unit},time_pct,growth_bytes,retained_bytes,peak_bytes,peak_pct,source")?;
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
            r.retained,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{attribute, Filter};
    use crate::recording::writer::{ProcessDef, ThreadEntry, Writer};
    use crate::recording::Meta;

    /// A recording of one function in `file` (first line 10) sampled at `lines`, 10 ms apart,
    /// with the memory growing 1 MiB a sample; `source`: the file's text, kept in the recording.
    fn recording(file: &str, lines: &[i32], source: Option<&str>) -> Recording {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.msp");
        let meta = Meta {
            rate_hz: 100.0,
            memory: "rss".into(),
            ..Meta::default()
        };
        let mut w = Writer::create(&path, &meta).unwrap();
        let p = w
            .process_start(&ProcessDef {
                pid: 1,
                starttime: 1,
                parent: None,
                time_us: 0,
                command: "python",
                exe: "python",
                python: "3.12.1",
                cwd: "",
            })
            .unwrap();
        let slot = w.thread(p, 1, Some(1), "MainThread").unwrap();
        let f = w.function("f", "f", file, 10).unwrap();
        for (i, &line) in lines.iter().enumerate() {
            let frame = w.frame(f, line).unwrap();
            let stack = w.stack([frame]).unwrap();
            let t = ThreadEntry {
                slot,
                stack,
                flags: 3,
                cpu_ns_total: 0,
                minflt: 1,
            };
            w.sample(p, i as u64 * 10_000, (100 + i as u64) << 20, 0, &[t])
                .unwrap();
        }
        if let Some(text) = source {
            w.source(file, text).unwrap();
        }
        w.finish().unwrap();
        Recording::open(&path).unwrap()
    }

    fn function_rows(rec: &Recording) -> Vec<LineRow> {
        let attr = attribute(rec, &Filter::default());
        rows(rec, &attr, Metric::Wall, Some("f"))
    }

    #[test]
    fn a_huge_line_number_makes_a_bounded_table() {
        // Without the source: from the first line, at most MAX_FILLED_PER_FUNCTION filled
        // rows, and the sampled lines.
        let rec = recording("/srv/app.py", &[12, i32::MAX, i32::MAX], None);
        let table = function_rows(&rec);
        assert_eq!(table.len(), MAX_FILLED_PER_FUNCTION as usize + 1);
        assert_eq!(table.first().unwrap().line, 10);
        assert_eq!(table.last().unwrap().line, i32::MAX);
        assert!(table.iter().any(|r| r.line == 12 && r.time_pct > 0.0));
        // With it: no filled row past the end of the source.
        let text = (1..=20).map(|i| format!("line {i}\n")).collect::<String>();
        let rec = recording("/srv/app.py", &[12, i32::MAX], Some(&text));
        let lines: Vec<i32> = function_rows(&rec).iter().map(|r| r.line).collect();
        let expected: Vec<i32> = (10..=20).chain([i32::MAX]).collect();
        assert_eq!(lines, expected);
        assert_eq!(function_rows(&rec)[2].source.as_deref(), Some("line 12"));
    }

    #[test]
    fn source_text_never_comes_from_the_file_system() {
        // The recording names a real file but holds no copy of it: the report must not read
        // it (it could be /etc/shadow, or a FIFO that hangs).
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.py");
        std::fs::write(&secret, "SECRET 1\nSECRET 2\nSECRET 3\n").unwrap();
        let rec = recording(secret.to_str().unwrap(), &[2], None);
        let attr = attribute(&rec, &Filter::default());
        let table = rows(&rec, &attr, Metric::Wall, None);
        assert_eq!(table[0].line, 2);
        assert_eq!(table[0].source, None);
        let mut text = Vec::new();
        write_text(&table, Metric::Wall, &mut text).unwrap();
        assert!(!String::from_utf8(text).unwrap().contains("SECRET"));
    }
}
