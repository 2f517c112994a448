//! `memspy export`: a recording in other tools' formats.

use std::path::PathBuf;

use crate::analysis::Metric;
use crate::commands::flame::write_file;
use crate::commands::plot::attributed;
use crate::error::{Error, Result};
use crate::output::mprof::{roles, write_dat};
use crate::output::plot::top_functions;

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
        ExportFormat::Mprof => mprof(opts),
        _ => Err(Error::Unsupported("memspy export is being built".into())),
    }
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
