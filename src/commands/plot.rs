//! `memspy plot`: memory over time, one line per process, with the top functions by growth
//! marked where they ran.

use std::path::PathBuf;

use crate::analysis::{attribute, Attribution, Filter, WindowSpec};
use crate::commands::flame::{check_pid, file_name, shown, write_file};
use crate::commands::info::open_recording;
use crate::commands::written;
use crate::error::{Error, Result};
use crate::output::plot::{memory_name, top_functions, write_svg};
use crate::output::units::count;
use crate::recording::Recording;

#[derive(Clone, Debug)]
pub struct PlotOptions {
    /// The time window looked at (`--from`, `--to`, `--skip-startup`).
    pub window: WindowSpec,
    pub output: PathBuf,
    pub input: Option<PathBuf>,
    pub pid: Option<i32>,
    /// How many functions (by memory growth) to mark on the curves.
    pub functions: usize,
}

pub fn run(opts: &PlotOptions) -> Result<()> {
    let (path, rec) = open_recording(opts.input.as_deref())?;
    let mut svg = Vec::new();
    let (processes, marked) = report(&rec, &file_name(&path), opts, &mut svg)?;
    write_file(&opts.output, |w| w.write_all(&svg))?;
    eprintln!(
        "memspy: wrote {} ({} over time, {} {}, {} functions marked)",
        shown(&opts.output),
        memory_name(&rec),
        count(processes as u64),
        if processes == 1 {
            "process"
        } else {
            "processes"
        },
        marked
    );
    Ok(())
}

/// Draw the chart of `rec` (its file is named `name`) as `opts` say (`input` and `output` are
/// not used); returns how many processes and functions it shows.
pub fn report(
    rec: &Recording,
    name: &str,
    opts: &PlotOptions,
    out: &mut dyn std::io::Write,
) -> Result<(usize, usize)> {
    let (filter, attr) = attributed(rec, name, opts.pid, &opts.window)?;
    let marked = top_functions(rec, &attr, &filter, opts.functions);
    let processes = attr.series.iter().filter(|s| !s.is_empty()).count();
    let title = format!("Memory over time — {name}");
    let subtitle = format!(
        "{} of {} · top {} functions by memory growth marked where they ran",
        memory_name(rec),
        match opts.pid {
            Some(pid) => format!("process {pid}"),
            None if processes == 1 => "1 process".to_string(),
            None => format!("{processes} processes"),
        },
        opts.functions
    );
    written(write_svg(rec, &attr, &marked, &title, &subtitle, out))?;
    Ok((processes, marked.len()))
}

/// Attribute a recording, for the commands that draw memory over time (plot, the mprof
/// export). Fails with one line when `pid` is not in the recording or there is nothing to draw
/// (no samples, or no PSS/USS readings in a recording made with `--memory pss|uss`).
pub fn attributed(
    rec: &Recording,
    name: &str,
    pid: Option<i32>,
    window: &WindowSpec,
) -> Result<(Filter, Attribution)> {
    check_pid(rec, name, pid)?;
    let filter = Filter {
        pid,
        window: window.resolve(rec).map_err(Error::Usage)?,
        ..Filter::default()
    };
    let attr = attribute(rec, &filter);
    if attr.series.iter().all(|s| s.is_empty()) {
        let samples = rec.samples.iter().any(|s| filter.includes(rec, s.process));
        return Err(Error::Other(if samples {
            format!(
                "{name} has no {} readings to draw (they are taken every {} ms or so; record longer)",
                memory_name(rec),
                rec.meta.rollup_interval_ms.unwrap_or(100)
            )
        } else {
            format!(
                "{name} holds no samples{}: there is no memory to draw",
                pid.map_or(String::new(), |p| format!(" of process {p}"))
            )
        }));
    }
    Ok((filter, attr))
}
