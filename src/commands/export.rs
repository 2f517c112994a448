//! `memspy export`: a recording in other tools' formats.

use std::path::PathBuf;

use crate::analysis::Metric;
use crate::error::{Error, Result};

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

pub fn run(_opts: &ExportOptions) -> Result<()> {
    Err(Error::Unsupported("memspy export is being built".into()))
}
