//! `memspy lines`: the per-line table of a recording.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use crate::analysis::{attribute, Filter, Metric};
use crate::commands::info::open_recording;
use crate::commands::{to_stdout, written};
use crate::error::{Error, Result};
use crate::output::lines::{rows, write_csv, write_json, write_text};
use crate::recording::Recording;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Csv,
    Json,
}

#[derive(Clone, Debug)]
pub struct LinesOptions {
    /// OS threads only (`--tasks off`).
    pub threads_only: bool,
    pub input: Option<PathBuf>,
    pub metric: Metric,
    pub top: Option<usize>,
    pub function: Option<String>,
    pub pid: Option<i32>,
    pub format: Format,
}

pub fn run(opts: &LinesOptions) -> Result<()> {
    let (_, rec) = open_recording(opts.input.as_deref())?;
    let terminal = io::stdout().is_terminal();
    to_stdout(|out| report(&rec, opts, terminal, out))
}

/// Write the table of `rec` as `opts` say (`input` is not used); `terminal`: the output is a
/// terminal, which gets the top 20 lines unless `opts.top` says otherwise.
pub fn report(
    rec: &Recording,
    opts: &LinesOptions,
    terminal: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let attr = attribute(
        rec,
        &Filter {
            pid: opts.pid,
            threads_only: opts.threads_only,
        },
    );
    let mut table = rows(rec, &attr, opts.metric, opts.function.as_deref());
    if let Some(f) = &opts.function {
        if table.is_empty() {
            return Err(Error::Usage(format!(
                "no function named {f} in the recording"
            )));
        }
    }
    // A terminal gets the top 20 by default; a pipe or file gets everything.
    let top = opts
        .top
        .or((opts.function.is_none() && terminal).then_some(20));
    if let Some(n) = top {
        table.truncate(n);
    }
    written(match opts.format {
        Format::Text => write_text(&table, opts.metric, out),
        Format::Csv => write_csv(&table, opts.metric, out),
        Format::Json => write_json(&table, opts.metric, out),
    })
}
