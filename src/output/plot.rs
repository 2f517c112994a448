//! Memory over time as an SVG chart (`memspy plot`): one line per process, and the functions
//! that grew memory the most marked on the curves where they ran, in the manner of `mprof plot`'s
//! function brackets. Also computes those functions and their time spans, which the mprof export
//! shares.
//!
//! Drawn with plotters' SVG backend, which writes text as `<text>` elements and estimates text
//! sizes without loading any font, so nothing here depends on fonts installed on the machine.

use std::collections::HashMap;
use std::io;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::analysis::functions::{by_function, FunctionTotal};
use crate::analysis::{Attribution, Filter, Metric};
use crate::output::text::{one_line, visible};
use crate::recording::Recording;

const MIB: f64 = 1024.0 * 1024.0;

/// A function marked on the curves.
#[derive(Clone, Debug)]
pub struct Marked {
    /// Index into `Recording::functions` (the first of the function's entries: one with the
    /// same qualified name and file may be recorded more than once).
    pub function: u32,
    /// Memory growth attributed to it, bytes, over every process looked at.
    pub growth: f64,
    /// Where it ran, per process, in time order within each process.
    pub spans: Vec<Span>,
}

/// A contiguous run of samples of one process whose stack (any thread's) contained a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Index into `Recording::processes`.
    pub process: u32,
    /// Time of the run's first sample, µs since the recording started.
    pub start_us: u64,
    /// Time of the run's last sample (equal to `start_us` for a run of one sample).
    pub end_us: u64,
    /// Smallest depth of the function in the stacks of the run (1 = outermost frame).
    pub depth: u32,
}

/// The `n` functions with the most memory growth, and where each ran.
///
/// Growth is *self* growth (`analysis::functions::by_function`): a stack's growth counts for its
/// innermost function only, and functions with the same qualified name and file are one, as in
/// `memspy check`. Counted inclusively, the outer functions (`<module>`, `main`) would hold
/// everything and always come first, which says nothing; innermost-first picks the functions
/// that did the allocating. `[no Python frames]` and `[unattributed]` are never marked.
pub fn top_functions(
    rec: &Recording,
    attr: &Attribution,
    filter: &Filter,
    n: usize,
) -> Vec<Marked> {
    let mut top: Vec<FunctionTotal> = by_function(rec, attr, Metric::Growth)
        .into_iter()
        .filter(|f| f.self_value > 0.0)
        .collect();
    top.sort_by(|a, b| {
        b.self_value
            .total_cmp(&a.self_value)
            .then(a.dotted.cmp(&b.dotted))
    });
    top.truncate(n);
    // The marked function each recorded function is, if any.
    let rank: HashMap<u32, usize> = rec
        .functions
        .iter()
        .enumerate()
        .filter_map(|(id, f)| {
            let (q, file) = (rec.string(f.qualname), rec.string(f.file));
            let m = top.iter().position(|t| t.qualname == q && t.file == file)?;
            Some((id as u32, m))
        })
        .collect();
    let mut marked: Vec<Marked> = top
        .iter()
        .enumerate()
        .map(|(m, t)| Marked {
            function: (0..rec.functions.len() as u32)
                .find(|id| rank.get(id) == Some(&m))
                .unwrap_or_default(),
            growth: t.self_value,
            spans: Vec::new(),
        })
        .collect();
    if marked.is_empty() {
        return marked;
    }

    // For every node of the stack tree: which marked functions its stack contains, each with the
    // depth of its outermost frame. A parent always precedes its children in the tree.
    let mut contains: Vec<Vec<(usize, u32)>> = Vec::with_capacity(rec.stacks.len());
    for node in &rec.stacks {
        let mut v = node
            .parent
            .map_or_else(Vec::new, |p| contains[p as usize].clone());
        if let Some(&m) = rank.get(&rec.frames[node.frame as usize].function) {
            if !v.iter().any(|&(x, _)| x == m) {
                v.push((m, node.depth));
            }
        }
        contains.push(v);
    }

    // Runs of samples, per (process, marked function).
    let mut open: HashMap<(u32, usize), Span> = HashMap::new();
    let mut present: Vec<Option<u32>> = vec![None; marked.len()];
    for s in rec
        .samples
        .iter()
        .filter(|s| filter.includes(rec, s.process) && filter.in_window(s.time_us))
    {
        present.iter_mut().for_each(|p| *p = None);
        for t in rec.threads_of(s) {
            for &(m, depth) in t.stack.map_or(&[][..], |st| &contains[st as usize]) {
                present[m] = Some(present[m].map_or(depth, |d| d.min(depth)));
            }
        }
        for (m, here) in present.iter().enumerate() {
            let key = (s.process, m);
            match (*here, open.get_mut(&key)) {
                (Some(depth), Some(span)) => {
                    span.end_us = s.time_us;
                    span.depth = span.depth.min(depth);
                }
                (Some(depth), None) => {
                    open.insert(
                        key,
                        Span {
                            process: s.process,
                            start_us: s.time_us,
                            end_us: s.time_us,
                            depth,
                        },
                    );
                }
                (None, Some(_)) => {
                    if let Some(span) = open.remove(&key) {
                        marked[m].spans.push(span);
                    }
                }
                (None, None) => {}
            }
        }
    }
    for ((_, m), span) in open {
        marked[m].spans.push(span);
    }
    for m in &mut marked {
        m.spans.sort_by_key(|s| (s.process, s.start_us));
    }
    marked
}

/// `qualname (file.py:firstline)`, with the file's base name.
pub fn function_label(rec: &Recording, function: u32) -> String {
    let f = &rec.functions[function as usize];
    format!(
        "{} ({}:{})",
        one_line(rec.string(f.qualname), 60),
        one_line(base_name(rec.string(f.file)), 60),
        f.firstlineno
    )
}

/// The last component of a path.
pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The name of the memory measure the attribution's series hold: "RSS", "PSS" or "USS".
pub fn memory_name(rec: &Recording) -> &'static str {
    match rec.meta.memory.as_str() {
        "pss" => "PSS",
        "uss" => "USS",
        _ => "RSS",
    }
}

/// A process's value at time `t` on its series, as the chart draws it: linear between
/// readings, flat before the first and after the last.
pub fn value_at(series: &[(u64, u64)], t: u64) -> f64 {
    let i = series.partition_point(|&(ts, _)| ts <= t);
    match (i.checked_sub(1).map(|j| series[j]), series.get(i)) {
        (None, None) => 0.0,
        (None, Some(&(_, v))) | (Some((_, v)), None) => v as f64,
        (Some((t0, v0)), Some(&(t1, v1))) => {
            if t1 == t0 {
                v1 as f64
            } else {
                v0 as f64
                    + (v1 as f64 - v0 as f64) * t.saturating_sub(t0) as f64
                        / t1.saturating_sub(t0).max(1) as f64
            }
        }
    }
}

/// `pid 4243 (worker 1 of 4242) python3.12 server.py`: the pid, its role, and the command with
/// paths cut to their base names.
pub fn process_label(rec: &Recording, process: u32) -> String {
    let p = &rec.processes[process as usize];
    let command: Vec<&str> = rec
        .string(p.command)
        .split_whitespace()
        .map(|w| {
            if w.contains('/') && !w.ends_with('/') {
                base_name(w)
            } else {
                w
            }
        })
        .collect();
    format!(
        "pid {} ({}) {}",
        p.pid,
        crate::analysis::process_role(rec, process as usize),
        one_line(&command.join(" "), 40)
    )
}

// Colours: dark, muted ones for the processes' lines; bright ones for the function marks.
const PROCESS_COLORS: [RGBColor; 8] = [
    RGBColor(20, 20, 20),
    RGBColor(30, 80, 200),
    RGBColor(0, 125, 60),
    RGBColor(150, 30, 150),
    RGBColor(160, 80, 0),
    RGBColor(0, 120, 140),
    RGBColor(180, 20, 50),
    RGBColor(110, 110, 110),
];
const FUNCTION_COLORS: [RGBColor; 8] = [
    RGBColor(230, 40, 40),
    RGBColor(40, 170, 60),
    RGBColor(255, 140, 0),
    RGBColor(160, 90, 220),
    RGBColor(0, 180, 220),
    RGBColor(240, 90, 200),
    RGBColor(200, 180, 0),
    RGBColor(130, 200, 120),
];

const WIDTH: u32 = 1280;
const CHART_HEIGHT: u32 = 600;
const LEGEND_ROW: u32 = 20;
/// Points drawn per process at most (about two per horizontal pixel); longer series are thinned
/// keeping each bucket's first, last, lowest and highest reading, so peaks stay visible.
const BUCKETS: usize = 1200;

/// A pale, opaque version of a colour (for bands).
fn tint(c: RGBColor) -> RGBColor {
    let mix = |x: u8| (x as u16 * 2 / 5 + 255 * 3 / 5) as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// Every span with its marked function's rank and its nesting level: how many spans of other
/// functions on the same process enclose it (of two equal spans, the better-ranked function's
/// encloses the other's). Sorted outermost first, so inner bands are drawn over outer ones.
fn nested_spans(marked: &[Marked]) -> Vec<(u32, usize, Span)> {
    let mut out = Vec::new();
    for (i, m) in marked.iter().enumerate() {
        for s in &m.spans {
            let level = marked
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .filter(|&(j, other)| {
                    // A function's spans on one process are disjoint and sorted by start: only
                    // the last one starting at or before `s` can enclose it.
                    let k = other
                        .spans
                        .partition_point(|o| (o.process, o.start_us) <= (s.process, s.start_us));
                    k > 0 && {
                        let o = other.spans[k - 1];
                        o.process == s.process
                            && o.end_us >= s.end_us
                            && (o.start_us < s.start_us || o.end_us > s.end_us || j < i)
                    }
                })
                .count() as u32;
            out.push((level, i, *s));
        }
    }
    out.sort_by_key(|&(level, i, s)| (level, i, s.process, s.start_us));
    out
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("drawing the chart: {e}"))
}

/// Draw the chart. `subtitle` goes under the title. Any text is made [`visible`], so the SVG
/// is valid XML whatever the names in the recording.
pub fn write_svg(
    rec: &Recording,
    attr: &Attribution,
    marked: &[Marked],
    title: &str,
    subtitle: &str,
    w: &mut dyn io::Write,
) -> io::Result<()> {
    let (title, subtitle) = (visible(title), visible(subtitle));
    let processes: Vec<u32> = (0..attr.series.len() as u32)
        .filter(|&p| !attr.series[p as usize].is_empty())
        .collect();
    let color_of: HashMap<u32, RGBColor> = processes
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, PROCESS_COLORS[i % PROCESS_COLORS.len()]))
        .collect();
    // Spans can end after a process's last reading (PSS/USS readings are sparser than samples).
    let x_max = processes
        .iter()
        .filter_map(|&p| attr.series[p as usize].last().map(|&(t, _)| t))
        .chain(marked.iter().flat_map(|m| m.spans.iter().map(|s| s.end_us)))
        .map(|t| t as f64 / 1e6)
        .fold(0.0f64, f64::max);
    let x_max = if x_max > 0.0 { x_max * 1.02 } else { 1.0 };
    let y_max = processes
        .iter()
        .flat_map(|&p| attr.series[p as usize].iter())
        .map(|&(_, v)| v as f64 / MIB)
        .fold(0.0f64, f64::max);
    let y_max = (y_max * 1.08).max(1.0);

    let legend_rows = processes.len().max(marked.len().max(1)) as u32;
    let height = CHART_HEIGHT + 40 + legend_rows * LEGEND_ROW + 16;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, legend) = root.split_vertically(CHART_HEIGHT);
        let top = top
            .titled(&title, ("sans-serif", 22).into_font().color(&BLACK))
            .map_err(err)?;
        top.draw_text(
            &subtitle,
            &("sans-serif", 14)
                .into_font()
                .color(&RGBColor(90, 90, 90))
                .pos(Pos::new(HPos::Center, VPos::Top)),
            (WIDTH as i32 / 2, 0),
        )
        .map_err(err)?;
        let plot_area = top.margin(26, 0, 10, 30);
        let mut chart = ChartBuilder::on(&plot_area)
            .x_label_area_size(46)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time since the recording started (s)")
            .y_desc(format!("{} (MiB)", memory_name(rec)))
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(err)?;

        // Each process's series, thinned once.
        let thinned: Vec<Vec<(u64, u64)>> = attr
            .series
            .iter()
            .map(|series| decimate(series, BUCKETS))
            .collect();
        // A span runs from its first sample to its last; the function ran from about half a
        // sampling interval before to half after, which also gives a one-sample span a width
        // (at least 1 µs, whatever the rate says).
        let half_interval = if rec.meta.rate_hz > 0.0 {
            ((5e5 / rec.meta.rate_hz) as u64).max(1)
        } else {
            5_000
        };
        let (bw, bh) = (x_max * 0.006, y_max * 0.03);
        // The stretch a span covers, kept on the chart (a very low rate makes half an
        // interval longer than the whole recording).
        let x_end_us = (x_max * 1e6) as u64;
        let stretch = |span: &Span| {
            (
                span.start_us.saturating_sub(half_interval),
                span.end_us.saturating_add(half_interval).min(x_end_us),
            )
        };

        // Bands under the lines: the curve's stretch where each marked function ran, pale and
        // opaque so the lines stay readable; a span inside another function's span is drawn
        // narrower on top of it, so nested calls show as bands within bands.
        for (level, i, span) in nested_spans(marked) {
            let series = &attr.series[span.process as usize];
            if series.is_empty() {
                continue;
            }
            let (start, end) = stretch(&span);
            let thin = &thinned[span.process as usize];
            let from = thin.partition_point(|&(t, _)| t <= start);
            let inside = from..thin.partition_point(|&(t, _)| t < end).max(from);
            let band: Vec<(f64, f64)> = std::iter::once((start, value_at(series, start)))
                .chain(thin[inside].iter().map(|&(t, v)| (t, v as f64)))
                .chain(std::iter::once((end, value_at(series, end))))
                .map(|(t, v)| (t as f64 / 1e6, v / MIB))
                .collect();
            let width = 14u32.saturating_sub(5 * level).max(4);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    band,
                    tint(FUNCTION_COLORS[i % FUNCTION_COLORS.len()]).stroke_width(width),
                )))
                .map_err(err)?;
        }
        for &p in &processes {
            let points = thinned[p as usize]
                .iter()
                .map(|&(t, v)| (t as f64 / 1e6, v as f64 / MIB));
            chart
                .draw_series(LineSeries::new(points, color_of[&p].stroke_width(2)))
                .map_err(err)?;
        }
        // Where a process crossed a `record --trigger-*` limit: a red line, named.
        for t in &rec.triggers {
            let x = t.time_us as f64 / 1e6;
            if !processes.contains(&t.process) || x > x_max {
                continue;
            }
            let red = RGBColor(200, 30, 30);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, y_max)],
                    red.stroke_width(1),
                )))
                .map_err(err)?;
            let pid = rec.processes.get(t.process as usize).map_or(0, |p| p.pid);
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("trigger: {pid}"),
                    (x, y_max * 0.98),
                    ("sans-serif", 12).into_font().color(&red),
                )))
                .map_err(err)?;
        }
        // Brackets at both ends of each span, as mprof plot draws them; only on spans wide
        // enough to read, since a function called again and again (a request handler) would
        // bury the curve under brackets: its short spans show as bands only.
        for (i, m) in marked.iter().enumerate() {
            let color = FUNCTION_COLORS[i % FUNCTION_COLORS.len()];
            for span in &m.spans {
                let series = &attr.series[span.process as usize];
                let (start, end) = stretch(span);
                if series.is_empty() || (end.saturating_sub(start) as f64 / 1e6) < 4.0 * bw {
                    continue;
                }
                for (t, dir) in [(start, 1.0), (end, -1.0)] {
                    let (x, y) = (t as f64 / 1e6, value_at(series, t) / MIB);
                    let bracket = vec![
                        (x + dir * bw, y + bh),
                        (x, y + bh),
                        (x, y - bh),
                        (x + dir * bw, y - bh),
                    ];
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            bracket,
                            color.stroke_width(2),
                        )))
                        .map_err(err)?;
                }
            }
        }

        // The legend, under the chart: processes on the left, marked functions on the right.
        let left = Pos::new(HPos::Left, VPos::Center);
        let text = ("sans-serif", 13).into_font().color(&BLACK).pos(left);
        let head = ("sans-serif", 13)
            .into_font()
            .style(FontStyle::Bold)
            .color(&BLACK)
            .pos(left);
        let row_y = |r: u32| (40 + r * LEGEND_ROW + LEGEND_ROW / 2) as i32;
        let (c1, c2) = (80, WIDTH as i32 / 2);
        legend
            .draw_text(
                &format!("processes ({})", memory_name(rec)),
                &head,
                (c1, 20),
            )
            .map_err(err)?;
        for (r, &p) in processes.iter().enumerate() {
            let y = row_y(r as u32);
            legend
                .draw(&PathElement::new(
                    vec![(c1, y), (c1 + 28, y)],
                    color_of[&p].stroke_width(2),
                ))
                .map_err(err)?;
            legend
                .draw_text(&process_label(rec, p), &text, (c1 + 36, y))
                .map_err(err)?;
        }
        legend
            .draw_text(
                "functions by memory growth (innermost frame), marked where they ran",
                &head,
                (c2, 20),
            )
            .map_err(err)?;
        if marked.is_empty() {
            legend
                .draw_text("(none marked)", &text, (c2, row_y(0)))
                .map_err(err)?;
        }
        for (i, m) in marked.iter().enumerate() {
            let color = FUNCTION_COLORS[i % FUNCTION_COLORS.len()];
            let y = row_y(i as u32);
            legend
                .draw(&PathElement::new(
                    vec![(c2, y), (c2 + 28, y)],
                    tint(color).stroke_width(12),
                ))
                .map_err(err)?;
            legend
                .draw(&PathElement::new(
                    vec![(c2 + 5, y - 6), (c2, y - 6), (c2, y + 6), (c2 + 5, y + 6)],
                    color.stroke_width(2),
                ))
                .map_err(err)?;
            legend
                .draw(&PathElement::new(
                    vec![
                        (c2 + 23, y - 6),
                        (c2 + 28, y - 6),
                        (c2 + 28, y + 6),
                        (c2 + 23, y + 6),
                    ],
                    color.stroke_width(2),
                ))
                .map_err(err)?;
            legend
                .draw_text(
                    &format!(
                        "{} +{:.1} MiB",
                        function_label(rec, m.function),
                        m.growth / MIB
                    ),
                    &text,
                    (c2 + 36, y),
                )
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    w.write_all(svg.as_bytes())
}

/// At most about `4 * buckets` points of a series: each time bucket keeps its first, lowest,
/// highest and last readings, in time order.
fn decimate(series: &[(u64, u64)], buckets: usize) -> Vec<(u64, u64)> {
    if series.len() <= 4 * buckets {
        return series.to_vec();
    }
    let t0 = series[0].0;
    let span = series[series.len() - 1].0.saturating_sub(t0);
    let width = (span / buckets as u64).max(1);
    let mut out = Vec::with_capacity(4 * buckets + 4);
    let mut i = 0;
    while i < series.len() {
        let bucket = series[i].0.saturating_sub(t0) / width;
        let (mut lo, mut hi, mut j) = (i, i, i);
        while j < series.len() && series[j].0.saturating_sub(t0) / width == bucket {
            if series[j].1 < series[lo].1 {
                lo = j;
            }
            if series[j].1 > series[hi].1 {
                hi = j;
            }
            j += 1;
        }
        let mut keep = [i, lo, hi, j - 1];
        keep.sort_unstable();
        let mut last = usize::MAX;
        for k in keep {
            if k != last {
                out.push(series[k]);
                last = k;
            }
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_on_the_drawn_curve() {
        let s = [(100, 1000), (200, 3000), (300, 3000)];
        assert_eq!(value_at(&s, 0), 1000.0);
        assert_eq!(value_at(&s, 100), 1000.0);
        assert_eq!(value_at(&s, 150), 2000.0);
        assert_eq!(value_at(&s, 250), 3000.0);
        assert_eq!(value_at(&s, 900), 3000.0);
        assert_eq!(value_at(&[], 5), 0.0);
    }

    #[test]
    fn thinning_keeps_peaks_and_ends() {
        let series: Vec<(u64, u64)> = (0..100_000u64)
            .map(|i| (i * 10, if i == 54_321 { 1 << 30 } else { i % 7 }))
            .collect();
        let d = decimate(&series, 100);
        assert!(d.len() <= 400, "{}", d.len());
        assert_eq!(d.first(), series.first());
        assert_eq!(d.last(), series.last());
        assert!(d.contains(&series[54_321]));
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0));
        let short = &series[..10];
        assert_eq!(decimate(short, 100), short);
    }
}

#[cfg(test)]
mod drawing_tests {
    use super::*;
    use crate::analysis::attribute;
    use crate::recording::writer::{ProcessDef, ThreadEntry, Writer};
    use crate::recording::Meta;

    /// A recording at `rate_hz` whose function grows memory on every sample.
    fn growing(rate_hz: f64) -> Recording {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.msp");
        let meta = Meta {
            rate_hz,
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
        let f = w.function("grow", "grow", "/a.py", 1).unwrap();
        let frame = w.frame(f, 2).unwrap();
        let stack = w.stack([frame]).unwrap();
        for i in 0..20u64 {
            let t = ThreadEntry {
                slot,
                stack,
                flags: 3,
                cpu_ns_total: 0,
                minflt: 1,
            };
            w.sample(p, i, (10 + i) << 20, 0, &[t]).unwrap();
        }
        w.finish().unwrap();
        Recording::open(&path).unwrap()
    }

    #[test]
    fn draws_at_any_rate() {
        // At 1 MHz half a sampling interval rounded down to 0 µs, and a band of one sample
        // made a slice range that ends before it starts.
        for rate in [1e6, 999_999.0, 0.001, 100.0] {
            let rec = growing(rate);
            let filter = Filter::default();
            let attr = attribute(&rec, &filter);
            let marked = top_functions(&rec, &attr, &filter, 5);
            assert_eq!(marked.len(), 1);
            let mut svg = Vec::new();
            write_svg(&rec, &attr, &marked, "t", "s", &mut svg).unwrap();
            assert!(String::from_utf8(svg).unwrap().contains("grow (a.py:1)"));
        }
        // Rates no reader lets through, on a recording built in memory.
        for rate in [f64::NAN, f64::INFINITY, 1e300, -1.0, 0.0] {
            let mut rec = growing(100.0);
            rec.meta.rate_hz = rate;
            let filter = Filter::default();
            let attr = attribute(&rec, &filter);
            let marked = top_functions(&rec, &attr, &filter, 5);
            write_svg(&rec, &attr, &marked, "t", "s", &mut Vec::new()).unwrap();
        }
    }
}
