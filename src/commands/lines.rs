//! `memspy lines`: the per-line table of a recording.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use crate::analysis::{attribute, Filter, Metric, WindowSpec};
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
    /// The time window looked at (`--from`, `--to`, `--skip-startup`).
    pub window: WindowSpec,
    /// OS threads only (`--tasks off`).
    pub threads_only: bool,
    pub input: Option<PathBuf>,
    pub metric: Metric,
    pub top: Option<usize>,
    pub function: Option<String>,
    pub pid: Option<i32>,
    pub format: Format,
}

/// Pids for a message: the first eight.
fn pid_list(pids: &[i32]) -> String {
    let mut s = pids
        .iter()
        .take(8)
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if pids.len() > 8 {
        s += &format!(" and {} more", pids.len() - 8);
    }
    s
}

/// The processes (pids) in which `function` has samples.
fn processes_with(rec: &Recording, opts: &LinesOptions, function: &str) -> Vec<i32> {
    rec.sampled_pids()
        .into_iter()
        .filter(|&pid| {
            let attr = attribute(
                rec,
                &Filter {
                    pid: Some(pid),
                    threads_only: opts.threads_only,
                    window: opts.window.resolve(rec).ok().flatten(),
                },
            );
            !rows(rec, &attr, Metric::Wall, Some(function)).is_empty()
        })
        .collect()
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
            window: opts.window.resolve(rec).map_err(Error::Usage)?,
        },
    );
    let mut table = rows(rec, &attr, opts.metric, opts.function.as_deref());
    if let Some(f) = &opts.function {
        if table.is_empty() {
            return Err(Error::Usage(match opts.pid {
                Some(pid) => {
                    let elsewhere = processes_with(rec, opts, f);
                    if elsewhere.is_empty() {
                        format!("no function named {f} in the recording")
                    } else {
                        format!(
                            "no samples of {f} in process {pid}; it ran in process{} {}",
                            if elsewhere.len() == 1 { "" } else { "es" },
                            pid_list(&elsewhere)
                        )
                    }
                }
                None => format!("no function named {f} in the recording"),
            }));
        }
    }
    // Several processes in one table: said, so a worker's lines are not taken for the whole.
    let sampled = rec.sampled_pids();
    if opts.format == Format::Text && opts.pid.is_none() && sampled.len() > 1 {
        writeln!(
            out,
            "{} processes merged in one table (--pid PID for one: {})",
            sampled.len(),
            pid_list(&sampled)
        )
        .map_err(|e| Error::io("writing the table", e))?;
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
