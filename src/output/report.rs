//! The HTML report: one self-contained page (script, styles and data inline, nothing from the
//! network) with the summary, the memory of every process over time, flamegraphs for time and
//! memory, and the per-line table of a function.
//!
//! The page gets the attribution over time ([`crate::analysis::timeline`]): values per stack
//! and time bucket, growth as chunks with what later frees cancelled, so it can add up any
//! time window a person drags on the chart without the recording. The page's code is in
//! `report/page.js`; what it reads is built here:
//! - `functions`: `[qualified name, short file, full file, first line]`, one per (name, file);
//! - `nodes`: the stack tree, flat, three numbers per frame: parent (-1 at a root), function,
//!   line;
//! - `sites`: `[process, node]` where a value landed; a negative node `-k` is the pseudo-site
//!   `pseudo[k - 1]` (`[no Python frames]` ...);
//! - per site, flat arrays: `time` `[bucket, wall µs, CPU µs, ...]`, `mem` `[bucket, growth,
//!   freed, ...]` (bytes) and `chunks` `[bucket, grown, n, then n pairs (bucket, cancelled)]`;
//! - `series`: each process's memory readings (ms from the first sample, bytes), thinned to
//!   what a chart can show, and `total`, their sum;
//! - `sources`: the source lines of the functions a person is likely to open;
//! - `info`: what `memspy info --json` says, and `findings`, in words;
//! - `triggers`: where a process crossed a `record --trigger-*` limit.
//!
//! All text from the recording is escaped for the page: the JSON is in a `<script
//! type="application/json">` element with every `<` written `\u003c`, and the page's code puts
//! it in the document as text, never as markup.

use std::io::Write;

use rustc_hash::FxHashMap;
use serde_json::{json, Value};

use crate::analysis::findings::{findings, process_name};
use crate::analysis::timeline::{self, Timeline};
use crate::analysis::{attribute_over_time, short_file, Filter, Key, Site};
use crate::recording::Recording;

const PAGE: &str = include_str!("report/page.html");
const SCRIPT: &str = include_str!("report/page.js");
const STYLE: &str = include_str!("report/page.css");

/// Buckets the time line starts with; fewer when the data would be too large.
const BUCKETS: u32 = 400;
/// At most this many cells and cancellations before the buckets are made longer (keeps a
/// 10-minute recording of a service well under 2 MB).
const MAX_CELLS: usize = 120_000;
/// Points of a memory series (each process, and the total).
const SERIES_POINTS: usize = 1_200;
/// Functions whose source goes in the page, and lines per function.
const SOURCE_FUNCTIONS: usize = 150;
const SOURCE_LINES: usize = 400;

/// What a report says about itself, for the command's message.
pub struct Written {
    pub buckets: u32,
    pub sites: usize,
    pub bytes: usize,
}

/// Write the report of `rec` (its file is named `name`); `window`: the time window (µs of
/// recording time) the page opens with.
pub fn write_report(
    rec: &Recording,
    name: &str,
    info: Value,
    window: Option<(u64, u64)>,
    startup_end: Option<u64>,
    out: &mut dyn Write,
) -> std::io::Result<Written> {
    let (first, last) = match (rec.samples.first(), rec.samples.last()) {
        (Some(a), Some(b)) => (a.time_us, b.time_us.max(a.time_us)),
        _ => (0, 0),
    };
    let mut tl = Timeline::new(first, last, BUCKETS);
    let attr = attribute_over_time(rec, &Filter::default(), Some(&mut tl));
    // Longer buckets until the page is small enough: first by the factor the size says,
    // then by halves (sparse cells shrink less than the factor).
    let factor = size(&tl).div_ceil(MAX_CELLS).next_power_of_two() as u32;
    if factor > 1 {
        tl.coarsen(factor.min(tl.buckets / 25).max(1));
    }
    while size(&tl) > MAX_CELLS && tl.buckets > 25 {
        tl.coarsen(2);
    }
    let data = Data::build(rec, &tl);
    let start_us = tl.start_us;
    let to_bucket = |t: u64| tl.bucket(t);
    let doc = json!({
        "name": name,
        "info": info,
        "findings": findings(rec, &attr, 3),
        "start_us": start_us,
        "bucket_us": tl.bucket_us,
        "buckets": tl.buckets,
        "window": window.map(|(a, b)| [to_bucket(a), to_bucket(b)]),
        "startup_end": startup_end.map(to_bucket),
        "processes": processes(rec),
        "functions": data.functions,
        "nodes": data.nodes,
        "pseudo": Site::PSEUDO.iter().map(|s| s.pseudo_label().unwrap_or("?")).collect::<Vec<_>>(),
        "sites": data.sites,
        "time": data.time,
        "mem": data.mem,
        "chunks": data.chunks,
        "series": series(rec, &attr.series, start_us),
        "total": total_series(rec, &attr.series, start_us),
        "sources": data.sources,
        "triggers": rec.triggers.iter().map(|t| json!({
            "process": t.process,
            "t_ms": ms(t.time_us, start_us),
            "reason": match t.reason {
                crate::recording::reader::TriggerReason::Rss => "rss",
                crate::recording::reader::TriggerReason::Growth => "growth",
            },
            "bytes": t.bytes,
            "limit": t.limit,
        })).collect::<Vec<_>>(),
    });
    let json = serde_json::to_string(&doc)
        .map_err(std::io::Error::other)?
        .replace('<', "\\u003c");
    let title = escape_html(&format!("memspy report — {name}"));
    let page = fill(
        PAGE,
        &[
            ("/*STYLE*/", STYLE),
            ("/*SCRIPT*/", SCRIPT),
            ("{{TITLE}}", &title),
            ("/*DATA*/", &json),
        ],
    );
    out.write_all(page.as_bytes())?;
    Ok(Written {
        buckets: tl.buckets,
        sites: data.sites.len(),
        bytes: page.len(),
    })
}

/// Numbers the page will hold, roughly: cells and cancellations.
fn size(tl: &Timeline) -> usize {
    tl.cells.len()
        + tl.chunks
            .values()
            .map(|c| 1 + c.cancelled.len())
            .sum::<usize>()
}

/// The template with each marker replaced by its value; values are not searched for markers
/// (a recording's text can hold any of them).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some((at, marker, value)) = values
        .iter()
        .filter_map(|&(m, v)| rest.find(m).map(|at| (at, m, v)))
        .min_by_key(|e| e.0)
    {
        out.push_str(&rest[..at]);
        out.push_str(value);
        rest = &rest[at + marker.len()..];
    }
    out.push_str(rest);
    out
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[derive(Default)]
struct Data {
    functions: Vec<Value>,
    nodes: Vec<i64>,
    sites: Vec<[i64; 2]>,
    time: Vec<Vec<i64>>,
    mem: Vec<Vec<i64>>,
    chunks: Vec<Vec<i64>>,
    sources: FxHashMap<String, Value>,
}

impl Data {
    fn build(rec: &Recording, tl: &Timeline) -> Data {
        let mut d = Data::default();
        // Sites in a stable order: by process, then pseudo-sites, then stacks.
        let mut keys: Vec<Key> = tl
            .cells
            .keys()
            .map(|k| k.1)
            .chain(tl.chunks.keys().map(|k| k.1))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut function_ids: FxHashMap<(u32, u32), usize> = FxHashMap::default();
        let mut function_of: FxHashMap<u32, usize> = FxHashMap::default();
        let mut node_of: FxHashMap<u32, i64> = FxHashMap::default();
        let mut site_of: FxHashMap<Key, usize> = FxHashMap::default();
        let mut function = |d: &mut Data, id: u32, process: u32| -> usize {
            if let Some(&f) = function_of.get(&id) {
                return f;
            }
            let f = &rec.functions[id as usize];
            let next = function_ids.len();
            let slot = *function_ids.entry((f.qualname, f.file)).or_insert(next);
            if slot == next {
                let file = rec.string(f.file);
                d.functions.push(json!([
                    rec.string(f.qualname),
                    short_file(rec, Some(process), file),
                    file,
                    f.firstlineno
                ]));
            }
            function_of.insert(id, slot);
            slot
        };
        for key in keys {
            let node = match key.site {
                Site::Stack(stack) => {
                    // The stack's frames, root first, each added once.
                    let mut path = Vec::new();
                    let mut n = Some(stack);
                    while let Some(id) = n {
                        if node_of.contains_key(&id) || path.len() > 4096 {
                            break;
                        }
                        path.push(id);
                        n = rec.stacks.get(id as usize).and_then(|s| s.parent);
                    }
                    for &id in path.iter().rev() {
                        let s = &rec.stacks[id as usize];
                        let frame = rec.frames.get(s.frame as usize).copied();
                        let parent = s.parent.and_then(|p| node_of.get(&p).copied());
                        let (f, line) = match frame {
                            Some(fr) if (fr.function as usize) < rec.functions.len() => {
                                (function(&mut d, fr.function, key.process) as i64, fr.line)
                            }
                            _ => continue,
                        };
                        let index = (d.nodes.len() / 3) as i64;
                        d.nodes.extend([parent.unwrap_or(-1), f, i64::from(line)]);
                        node_of.insert(id, index);
                    }
                    match node_of.get(&stack) {
                        Some(&n) => n,
                        None => continue,
                    }
                }
                other => match Site::PSEUDO.iter().position(|&s| s == other) {
                    Some(k) => -(k as i64) - 1,
                    None => continue,
                },
            };
            site_of.insert(key, d.sites.len());
            d.sites.push([i64::from(key.process), node]);
        }
        let n = d.sites.len();
        d.time = vec![Vec::new(); n];
        d.mem = vec![Vec::new(); n];
        d.chunks = vec![Vec::new(); n];
        let mut cells: Vec<(&(u32, Key), &[f64; 4])> = tl.cells.iter().collect();
        cells.sort_unstable_by_key(|c| c.0 .0);
        let round = |v: f64| v.round() as i64;
        for ((b, key), v) in cells {
            let Some(&s) = site_of.get(key) else {
                continue;
            };
            if round(v[timeline::WALL]) != 0 || round(v[timeline::CPU]) != 0 {
                d.time[s].extend([
                    i64::from(*b),
                    round(v[timeline::WALL]),
                    round(v[timeline::CPU]),
                ]);
            }
            if round(v[timeline::GROWTH]) != 0 || round(v[timeline::FREED]) != 0 {
                d.mem[s].extend([
                    i64::from(*b),
                    round(v[timeline::GROWTH]),
                    round(v[timeline::FREED]),
                ]);
            }
        }
        let mut chunks: Vec<_> = tl.chunks.iter().collect();
        chunks.sort_unstable_by_key(|c| c.0 .0);
        for ((b, key), c) in chunks {
            let Some(&s) = site_of.get(key) else {
                continue;
            };
            let out = &mut d.chunks[s];
            out.extend([i64::from(*b), round(c.grown), c.cancelled.len() as i64]);
            for &(at, v) in &c.cancelled {
                out.extend([i64::from(at), round(v)]);
            }
        }
        d.sources = sources(rec, tl, &function_of, &d);
        d
    }
}

/// The source lines of the functions with the most time or memory (their innermost or any
/// frame), by function index of the page: `{"first": N, "lines": [...]}`.
fn sources(
    rec: &Recording,
    tl: &Timeline,
    function_of: &FxHashMap<u32, usize>,
    d: &Data,
) -> FxHashMap<String, Value> {
    // Each function's largest share of any column, over the whole recording.
    let mut totals: FxHashMap<Key, [f64; 4]> = FxHashMap::default();
    for ((_, key), v) in &tl.cells {
        let t = totals.entry(*key).or_default();
        for (a, b) in t.iter_mut().zip(v) {
            *a += b.abs();
        }
    }
    let mut column_total = [0.0f64; 4];
    for v in totals.values() {
        for (a, b) in column_total.iter_mut().zip(v) {
            *a += b;
        }
    }
    let mut score: FxHashMap<u32, f64> = FxHashMap::default();
    for (key, v) in &totals {
        let Site::Stack(stack) = key.site else {
            continue;
        };
        let share = v
            .iter()
            .zip(column_total)
            .map(|(a, t)| if t > 0.0 { a / t } else { 0.0 })
            .fold(0.0, f64::max);
        let mut seen: Vec<u32> = Vec::new();
        for frame in rec.stack_frames(stack) {
            if !seen.contains(&frame.function) {
                seen.push(frame.function);
                *score.entry(frame.function).or_default() += share;
            }
        }
    }
    let mut ranked: Vec<(u32, f64)> = score.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut out = FxHashMap::default();
    for (id, _) in ranked {
        if out.len() >= SOURCE_FUNCTIONS {
            break;
        }
        let (Some(&page_id), Some(f)) = (function_of.get(&id), rec.functions.get(id as usize))
        else {
            continue;
        };
        if out.contains_key(&page_id.to_string()) || page_id >= d.functions.len() {
            continue;
        }
        let Some(text) = rec.sources.get(&f.file) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let first = f.firstlineno.max(1);
        let end = crate::output::lines::function_end(&lines, first).unwrap_or(first);
        let from = (first - 1) as usize;
        let to = (end as usize).min(lines.len()).min(from + SOURCE_LINES);
        if from >= to {
            continue;
        }
        out.insert(
            page_id.to_string(),
            json!({"first": first, "lines": &lines[from..to]}),
        );
    }
    out
}

fn processes(rec: &Recording) -> Vec<Value> {
    let first = rec.samples.first().map_or(0, |s| s.time_us);
    rec.processes
        .iter()
        .enumerate()
        .map(|(id, p)| {
            json!({
                "pid": p.pid,
                "name": process_name(rec, id),
                "role": crate::analysis::process_role(rec, id),
                "command": rec.string(p.command),
                "python": rec.string(p.python),
                "parent": p.parent,
                "start_ms": p.start_us.saturating_sub(first) as f64 / 1e3,
                "end_ms": p.end_us.map(|t| t.saturating_sub(first) as f64 / 1e3),
                "ended": p.end_reason.map(|r| r.describe_with(p.exit)),
            })
        })
        .collect()
}

/// Each process's series, thinned to at most SERIES_POINTS points that keep every slot's
/// lowest and highest reading: `{"t": [ms], "v": [bytes]}`.
fn series(rec: &Recording, all: &[Vec<(u64, u64)>], start_us: u64) -> Vec<Value> {
    let (first, last) = span(rec);
    all.iter()
        .map(|s| {
            let (t, v) = thin(s, first, last, start_us);
            json!({"t": t, "v": v})
        })
        .collect()
}

fn span(rec: &Recording) -> (u64, u64) {
    match (rec.samples.first(), rec.samples.last()) {
        (Some(a), Some(b)) => (a.time_us, b.time_us.max(a.time_us)),
        _ => (0, 0),
    }
}

fn ms(t: u64, start_us: u64) -> f64 {
    (t.saturating_sub(start_us) as f64 / 100.0).round() / 10.0
}

fn thin(s: &[(u64, u64)], first: u64, last: u64, start_us: u64) -> (Vec<f64>, Vec<u64>) {
    let (mut t, mut v) = (Vec::new(), Vec::new());
    if s.len() <= SERIES_POINTS {
        for &(a, b) in s {
            t.push(ms(a, start_us));
            v.push(b);
        }
        return (t, v);
    }
    let slots = (SERIES_POINTS / 2) as u64;
    let width = (last.saturating_sub(first) / slots).max(1);
    let mut i = 0;
    while i < s.len() {
        let slot = s[i].0.saturating_sub(first) / width;
        let mut j = i;
        let (mut lo, mut hi) = (i, i);
        while j < s.len() && s[j].0.saturating_sub(first) / width == slot {
            if s[j].1 < s[lo].1 {
                lo = j;
            }
            if s[j].1 > s[hi].1 {
                hi = j;
            }
            j += 1;
        }
        // The slot's last reading too, so a flat line after it starts at the right level.
        let mut keep = vec![lo, hi, j - 1];
        keep.sort_unstable();
        keep.dedup();
        for k in keep {
            t.push(ms(s[k].0, start_us));
            v.push(s[k].1);
        }
        i = j;
    }
    (t, v)
}

/// The sum of every process's memory at SERIES_POINTS moments: each process counts its latest
/// reading from its first reading on, until it ended.
fn total_series(rec: &Recording, all: &[Vec<(u64, u64)>], start_us: u64) -> Value {
    let (first, last) = span(rec);
    let points = SERIES_POINTS as u64;
    let step = (last.saturating_sub(first) / points).max(1);
    let mut cursor = vec![0usize; all.len()];
    let (mut t, mut v) = (Vec::new(), Vec::new());
    let mut now = first;
    loop {
        let mut sum = 0u64;
        for (p, s) in all.iter().enumerate() {
            let c = &mut cursor[p];
            while *c < s.len() && s[*c].0 <= now {
                *c += 1;
            }
            let ended = rec
                .processes
                .get(p)
                .and_then(|q| q.end_us)
                .is_some_and(|e| e < now);
            if *c > 0 && !ended {
                sum += s[*c - 1].1;
            }
        }
        t.push(ms(now, start_us));
        v.push(sum);
        if now >= last {
            break;
        }
        now = (now + step).min(last);
    }
    json!({"t": t, "v": v})
}
