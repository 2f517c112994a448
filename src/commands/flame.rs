//! `memspy flame`: a flamegraph SVG of a recording, for time or memory.

use std::path::{Path, PathBuf};

use crate::analysis::{attribute, Filter, Metric, Naming};
use crate::commands::info::open_recording;
use crate::error::{Error, Result};
use crate::output::collapsed::{fold, Fold};
use crate::output::flame::{duration, write_svg};
use crate::output::units::{bytes, count};

#[derive(Clone, Debug)]
pub struct FlameOptions {
    pub output: PathBuf,
    pub input: Option<PathBuf>,
    pub metric: Metric,
    pub pid: Option<i32>,
    pub merge_processes: bool,
    /// One node per function (no line numbers).
    pub functions_only: bool,
}

pub fn run(opts: &FlameOptions) -> Result<()> {
    let (path, rec) = open_recording(opts.input.as_deref())?;
    let filter = Filter { pid: opts.pid };
    if let Some(pid) = opts.pid {
        if !rec.processes.iter().any(|p| p.pid == pid) {
            return Err(Error::Usage(format!(
                "{} has no process {pid} (see `memspy info`)",
                path.display()
            )));
        }
    }
    let attr = attribute(&rec, &filter);
    let folded = fold(
        &rec,
        &attr,
        opts.metric,
        Fold {
            merge_processes: opts.merge_processes,
            naming: Naming {
                functions_only: opts.functions_only,
            },
        },
    );
    let total: u64 = folded.iter().map(|(_, v)| v).sum();
    let title = format!(
        "{} ({}) of {}",
        opts.metric.title(),
        if opts.metric.is_memory() {
            "bytes"
        } else {
            "time"
        },
        file_name(&path)
    );
    let samples = rec
        .samples
        .iter()
        .filter(|s| filter.includes(&rec, s.process))
        .count() as u64;
    let subtitle = format!(
        "total {} · {} samples · {}",
        if opts.metric.is_memory() {
            bytes(total as f64)
        } else {
            duration(total)
        },
        count(samples),
        match opts.pid {
            Some(pid) => format!("process {pid}"),
            None => match rec.processes.len() {
                1 => "1 process".to_string(),
                n => format!("{n} processes"),
            },
        }
    );
    write_file(&opts.output, |w| {
        write_svg(&folded, opts.metric, &title, &subtitle, w)
    })?;
    eprintln!(
        "memspy: wrote {} ({}, {} stacks)",
        opts.output.display(),
        opts.metric.title().to_lowercase(),
        folded.len()
    );
    Ok(())
}

pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Create `path` and write it through a buffer; a failure names the file.
pub fn write_file(
    path: &Path,
    f: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    let file = std::fs::File::create(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    let mut w = std::io::BufWriter::new(file);
    f(&mut w).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    std::io::Write::flush(&mut w).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
