//! `memspy export`: a recording in other tools' formats.

use std::path::{Path, PathBuf};

use crate::analysis::{attribute, Filter, Metric, Naming};
use crate::commands::flame::{file_name, write_file};
use crate::commands::info::open_recording;
use crate::commands::plot::attributed;
use crate::error::{Error, Result};
use crate::output::mprof::{roles, write_dat};
use crate::output::plot::top_functions;
use crate::output::{collapsed, json, speedscope};
use crate::recording::Recording;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// speedscope's file format (https://www.speedscope.app): one profile per process and unit.
    Speedscope,
    /// Folded stacks (inferno / flamegraph.pl input) of one metric.
    Collapsed,
    /// A JSON summary: processes, totals, top functions and lines per metric.
    Json,
    /// memory_profiler's `mprof` .dat file (MEM, CHLD, FUNC lines), for `mprof plot`.
    Mprof,
}

#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub output: PathBuf,
    pub input: Option<PathBuf>,
    pub format: ExportFormat,
    pub metric: Metric,
    pub pid: Option<i32>,
    pub merge_processes: bool,
    pub functions_only: bool,
}

pub fn run(opts: &ExportOptions) -> Result<()> {
    match opts.format {
        ExportFormat::Collapsed => export_collapsed(opts),
        ExportFormat::Speedscope => export_speedscope(opts),
        ExportFormat::Json => export_json(opts),
        ExportFormat::Mprof => mprof(opts),
    }
}

/// The recording, its filter and the processes the filter keeps (indices into
/// `Recording::processes`); a pid that is not in the recording is an error.
fn open(opts: &ExportOptions) -> Result<(PathBuf, Recording, Filter, Vec<u32>)> {
    let (path, rec) = open_recording(opts.input.as_deref())?;
    if let Some(pid) = opts.pid {
        if !rec.processes.iter().any(|p| p.pid == pid) {
            return Err(Error::Usage(format!(
                "{} has no process {pid} (see `memspy info`)",
                path.display()
            )));
        }
    }
    let filter = Filter { pid: opts.pid };
    let processes = (0..rec.processes.len() as u32)
        .filter(|&p| filter.includes(&rec, p))
        .collect();
    Ok((path, rec, filter, processes))
}

fn naming(opts: &ExportOptions) -> Naming {
    Naming {
        functions_only: opts.functions_only,
    }
}

fn wrote(output: &Path, what: &str) {
    eprintln!("memspy: wrote {} ({what})", output.display());
}

fn export_collapsed(opts: &ExportOptions) -> Result<()> {
    let (_, rec, filter, _) = open(opts)?;
    let attr = attribute(&rec, &filter);
    let folded = collapsed::fold(
        &rec,
        &attr,
        opts.metric,
        collapsed::Fold {
            merge_processes: opts.merge_processes,
            naming: naming(opts),
        },
    );
    write_file(&opts.output, |w| collapsed::write(&folded, w))?;
    wrote(
        &opts.output,
        &format!(
            "folded stacks of {}, {} stacks",
            opts.metric.title().to_lowercase(),
            folded.len()
        ),
    );
    Ok(())
}

fn export_speedscope(opts: &ExportOptions) -> Result<()> {
    let (path, rec, filter, processes) = open(opts)?;
    let attr = attribute(&rec, &filter);
    // Processes without samples have nothing to show.
    let processes: Vec<u32> = processes
        .into_iter()
        .filter(|&p| rec.samples.iter().any(|s| s.process == p))
        .collect();
    write_file(&opts.output, |w| {
        speedscope::write(&rec, &attr, &processes, &file_name(&path), naming(opts), w)
    })?;
    wrote(
        &opts.output,
        &format!(
            "speedscope, {} profiles",
            processes.len() * speedscope::PROFILES.len()
        ),
    );
    Ok(())
}

fn export_json(opts: &ExportOptions) -> Result<()> {
    let (path, rec, filter, processes) = open(opts)?;
    let attr = attribute(&rec, &filter);
    write_file(&opts.output, |w| {
        json::write(&rec, &attr, &processes, &path, w)
    })?;
    wrote(&opts.output, "JSON summary");
    Ok(())
}

/// How many functions the mprof export brackets (`memspy plot`'s default).
const MPROF_FUNCTIONS: usize = 5;

fn mprof(opts: &ExportOptions) -> Result<()> {
    let (_, rec, filter, attr) = attributed(opts.input.as_deref(), opts.pid)?;
    let Some(roles) = roles(&rec, &attr) else {
        return Err(Error::Other("no process has memory readings".into()));
    };
    let marked = top_functions(&rec, &attr, &filter, MPROF_FUNCTIONS);
    write_file(&opts.output, |w| write_dat(&rec, &attr, &roles, &marked, w))?;
    eprintln!(
        "memspy: wrote {} (mprof data: process {}{}; plot it with `mprof plot {}`)",
        opts.output.display(),
        roles.main_pid,
        match roles.children.len() {
            0 => String::new(),
            1 => " and 1 child".to_string(),
            n => format!(" and {n} children"),
        },
        opts.output.display()
    );
    Ok(())
}
