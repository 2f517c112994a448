//! `memspy diff`: how a recording differs from a baseline: a differential flamegraph (inferno's:
//! red where the new recording has more, blue where it has less) and the functions that
//! changed most.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use inferno::flamegraph::{self, Options};

use crate::analysis::functions::by_function;
use crate::analysis::{attribute, Filter, Metric, Naming, WindowSpec};
use crate::commands::flame::{file_name, shown, write_file};
use crate::commands::info::open_recording;
use crate::commands::{to_stdout, written};
use crate::error::{Error, Result};
use crate::output::collapsed::{fold, Fold};
use crate::output::flame::duration;
use crate::output::text::{one_line, visible};
use crate::output::units::bytes;
use crate::recording::Recording;

#[derive(Clone, Debug)]
pub struct DiffOptions {
    /// The time window looked at (`--from`, `--to`, `--skip-startup`).
    pub window: WindowSpec,
    /// OS threads only (`--tasks off`).
    pub threads_only: bool,
    pub base: PathBuf,
    pub new: PathBuf,
    pub output: Option<PathBuf>,
    pub metric: Metric,
    pub top: usize,
    pub functions_only: bool,
    /// Scale the baseline to the new recording's total (time: compare shares, not durations).
    pub normalize: bool,
}

pub fn run(opts: &DiffOptions) -> Result<()> {
    let (base_path, base) = open_recording(Some(&opts.base))?;
    let (new_path, new) = open_recording(Some(&opts.new))?;
    let (base_name, new_name) = (file_name(&base_path), file_name(&new_path));
    let mut svg = Vec::new();
    to_stdout(|out| {
        report(
            (&base_name, &base),
            (&new_name, &new),
            opts,
            opts.output.is_some().then_some(&mut svg as &mut dyn Write),
            out,
        )
    })?;
    if let Some(output) = &opts.output {
        write_file(output, |w| w.write_all(&svg))?;
        eprintln!("memspy: wrote {}", shown(output));
    }
    Ok(())
}

/// Compare `new` with `base` (each a file name and its recording) as `opts` say (`base`, `new`
/// and `output` are not used): the functions that changed most go to `out`, the differential
/// flamegraph to `svg` when given.
pub fn report(
    base: (&str, &Recording),
    new: (&str, &Recording),
    opts: &DiffOptions,
    svg: Option<&mut dyn Write>,
    out: &mut dyn Write,
) -> Result<()> {
    let ((base_name, base), (new_name, new)) = (base, new);
    let filter = |rec: &Recording| -> Result<Filter> {
        Ok(Filter {
            threads_only: opts.threads_only,
            window: opts.window.resolve(rec).map_err(Error::Usage)?,
            ..Filter::default()
        })
    };
    let (base_attr, new_attr) = (
        attribute(base, &filter(base)?),
        attribute(new, &filter(new)?),
    );
    // Processes differ from run to run (pids), so both sides are folded into one tree.
    let how = Fold {
        merge_processes: true,
        naming: Naming {
            functions_only: opts.functions_only,
            // Short names also match between checkouts in different folders.
            short_files: true,
        },
    };
    let base_folded = fold(base, &base_attr, opts.metric, how);
    let new_folded = fold(new, &new_attr, opts.metric, how);
    let (base_total, new_total) = (
        base_folded.iter().map(|x| x.1).sum::<u64>() as f64,
        new_folded.iter().map(|x| x.1).sum::<u64>() as f64,
    );
    let scale = if opts.normalize && base_total > 0.0 {
        new_total / base_total
    } else {
        1.0
    };
    let mut both: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (stack, v) in &base_folded {
        both.entry(stack.clone()).or_default().0 = (*v as f64 * scale).round() as u64;
    }
    for (stack, v) in &new_folded {
        both.entry(stack.clone()).or_default().1 = *v;
    }
    let show = |v: f64| {
        if opts.metric.is_memory() {
            bytes(v)
        } else {
            duration(v.max(0.0) as u64)
        }
    };
    if let Some(svg) = svg {
        let mut fg = Options::default();
        fg.title = visible(&format!(
            "{}: {} vs {}",
            opts.metric.title(),
            new_name,
            base_name
        ))
        .into_owned();
        fg.subtitle = Some(
            visible(&format!(
                "red: more in {}, blue: less · total {} -> {}{}",
                new_name,
                show(base_total * scale),
                show(new_total),
                if opts.normalize {
                    " (baseline scaled to the same total)"
                } else {
                    ""
                }
            ))
            .into_owned(),
        );
        fg.count_name = if opts.metric.is_memory() {
            "bytes"
        } else {
            "us"
        }
        .into();
        fg.deterministic = true;
        let mut lines: Vec<String> = both
            .iter()
            .map(|(s, (a, b))| format!("{s} {a} {b}"))
            .collect();
        if lines.is_empty() {
            lines.push("[nothing recorded] 0 1".into());
        }
        written(
            flamegraph::from_lines(&mut fg, lines.iter().map(|l| l.as_str()), svg)
                .map_err(io::Error::other),
        )?;
    }
    // The functions that changed most (their totals, callees included).
    let mut changes: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for f in by_function(base, &base_attr, opts.metric) {
        changes.entry(f.label()).or_default().0 = f.total_value * scale;
    }
    for f in by_function(new, &new_attr, opts.metric) {
        changes.entry(f.label()).or_default().1 = f.total_value;
    }
    let mut ranked: Vec<(String, f64, f64)> =
        changes.into_iter().map(|(k, (a, b))| (k, a, b)).collect();
    ranked.sort_by(|x, y| (y.2 - y.1).abs().total_cmp(&(x.2 - x.1).abs()));
    let w = out;
    written((|| -> io::Result<()> {
        writeln!(
            w,
            "{} by function: {} -> {}",
            opts.metric.title(),
            visible(base_name),
            visible(new_name)
        )?;
        writeln!(
            w,
            "{:>11} {:>11} {:>11} {:>8}  function",
            "before", "after", "change", ""
        )?;
        for (name, a, b) in ranked.iter().take(opts.top) {
            let pct = if *a > 0.0 {
                format!("{:+.0}%", 100.0 * (b - a) / a)
            } else {
                "new".into()
            };
            writeln!(
                w,
                "{:>11} {:>11} {:>11} {:>8}  {}",
                show(*a),
                show(*b),
                show(b - a),
                pct,
                one_line(name, 90)
            )?;
        }
        Ok(())
    })())
}
