//! `memspy plot`: memory over time, one line per process, with the top functions by growth
//! marked where they ran.

use std::path::{Path, PathBuf};

use crate::analysis::{attribute, Attribution, Filter};
use crate::commands::flame::{file_name, write_file};
use crate::commands::info::open_recording;
use crate::error::{Error, Result};
use crate::output::plot::{memory_name, top_functions, write_svg};
use crate::output::units::count;
use crate::recording::Recording;

#[derive(Clone, Debug)]
pub struct PlotOptions {
    pub output: PathBuf,
    pub input: Option<PathBuf>,
    pub pid: Option<i32>,
    /// How many functions (by memory growth) to mark on the curves.
    pub functions: usize,
}

pub fn run(opts: &PlotOptions) -> Result<()> {
    let (path, rec, filter, attr) = attributed(opts.input.as_deref(), opts.pid)?;
    let marked = top_functions(&rec, &attr, &filter, opts.functions);
    let processes = attr.series.iter().filter(|s| !s.is_empty()).count();
    let title = format!("Memory over time — {}", file_name(&path));
    let subtitle = format!(
        "{} of {} · top {} functions by memory growth marked where they ran",
        memory_name(&rec),
        match opts.pid {
            Some(pid) => format!("process {pid}"),
            None if processes == 1 => "1 process".to_string(),
            None => format!("{processes} processes"),
        },
        opts.functions
    );
    write_file(&opts.output, |w| {
        write_svg(&rec, &attr, &marked, &title, &subtitle, w)
    })?;
    eprintln!(
        "memspy: wrote {} ({} over time, {} {}, {} functions marked)",
        opts.output.display(),
        memory_name(&rec),
        count(processes as u64),
        if processes == 1 {
            "process"
        } else {
            "processes"
        },
        marked.len()
    );
    Ok(())
}

/// Open a recording and attribute it, for the commands that draw memory over time (plot, the
/// mprof export). Fails with one line when `pid` is not in the recording or there is nothing to
/// draw (no samples, or no PSS/USS readings in a recording made with `--memory pss|uss`).
pub fn attributed(
    input: Option<&Path>,
    pid: Option<i32>,
) -> Result<(PathBuf, Recording, Filter, Attribution)> {
    let (path, rec) = open_recording(input)?;
    if let Some(pid) = pid {
        if !rec.processes.iter().any(|p| p.pid == pid) {
            return Err(Error::Usage(format!(
                "{} has no process {pid} (see `memspy info`)",
                path.display()
            )));
        }
    }
    let filter = Filter { pid };
    let attr = attribute(&rec, &filter);
    if attr.series.iter().all(|s| s.is_empty()) {
        let samples = rec.samples.iter().any(|s| filter.includes(&rec, s.process));
        return Err(Error::Other(if samples {
            format!(
                "{} has no {} readings to draw (they are taken every {} ms or so; record longer)",
                path.display(),
                memory_name(&rec),
                rec.meta.rollup_interval_ms.unwrap_or(100)
            )
        } else {
            format!(
                "{} holds no samples{}: there is no memory to draw",
                path.display(),
                pid.map_or(String::new(), |p| format!(" of process {p}"))
            )
        }));
    }
    Ok((path, rec, filter, attr))
}
