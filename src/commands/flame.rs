//! `memspy flame`: a flamegraph SVG of a recording, for time or memory.

use std::path::{Path, PathBuf};

use crate::analysis::{attribute, Filter, Metric, Naming, Site, WindowSpec};
use crate::commands::info::open_recording;
use crate::commands::written;
use crate::error::{Error, Result};
use crate::output::collapsed::{fold, Fold};
use crate::output::flame::{duration, write_svg};
use crate::output::text::visible;
use crate::output::units::{bytes, count};
use crate::recording::Recording;

#[derive(Clone, Debug)]
pub struct FlameOptions {
    /// The time window looked at (`--from`, `--to`, `--skip-startup`).
    pub window: WindowSpec,
    /// OS threads only (`--tasks off`).
    pub threads_only: bool,
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
    let mut svg = Vec::new();
    let stacks = report(&rec, &file_name(&path), opts, &mut svg)?;
    write_file(&opts.output, |w| w.write_all(&svg))?;
    eprintln!(
        "memspy: wrote {} ({}, {} stacks)",
        shown(&opts.output),
        opts.metric.title().to_lowercase(),
        stacks
    );
    Ok(())
}

/// Draw the flamegraph of `rec` (its file is named `name`) as `opts` say (`input` and `output`
/// are not used); returns how many stacks it has.
pub fn report(
    rec: &Recording,
    name: &str,
    opts: &FlameOptions,
    out: &mut dyn std::io::Write,
) -> Result<usize> {
    let filter = Filter {
        pid: opts.pid,
        threads_only: opts.threads_only,
        window: opts.window.resolve(rec).map_err(Error::Usage)?,
    };
    check_pid(rec, name, opts.pid)?;
    let attr = attribute(rec, &filter);
    let folded = fold(
        rec,
        &attr,
        opts.metric,
        Fold {
            merge_processes: opts.merge_processes,
            naming: Naming {
                functions_only: opts.functions_only,
                short_files: true,
            },
        },
    );
    let title = format!("{} — {}", opts.metric.title(), name);
    let samples = rec
        .samples
        .iter()
        .filter(|s| filter.includes(rec, s.process))
        .count() as u64;
    let amount = |v: f64| {
        if opts.metric.is_memory() {
            bytes(v)
        } else {
            duration(v.max(0.0) as u64)
        }
    };
    // A flamegraph draws positive values only: what it leaves out is said, by name.
    let below = |site: Site| -> f64 {
        attr.values(opts.metric)
            .iter()
            .filter(|(k, v)| k.site == site && **v < 0.0)
            .map(|(_, v)| -v)
            .sum()
    };
    let (shutdown, before) = (below(Site::Shutdown), below(Site::BeforeRecording));
    let drawn: f64 = attr
        .values(opts.metric)
        .values()
        .filter(|v| **v > 0.0)
        .sum();
    let mut total = format!("total {}", amount(drawn));
    for (what, v) in [
        ("released at interpreter shutdown", shutdown),
        ("freed of memory from before the recording", before),
    ] {
        if v > 0.0 {
            total.push_str(&format!(" (and {} {what}, not drawn)", amount(v)));
        }
    }
    let subtitle = format!(
        "{total} · {} samples · {} · {}",
        count(samples),
        match opts.pid {
            Some(pid) => format!("process {pid}"),
            None => match rec.processes.len() {
                1 => "1 process".to_string(),
                n => format!("{n} processes"),
            },
        },
        rec.sampling()
    );
    written(write_svg(&folded, opts.metric, &title, &subtitle, out))?;
    Ok(folded.len())
}

/// A `--pid` that names no process of the recording is an error.
pub fn check_pid(rec: &Recording, name: &str, pid: Option<i32>) -> Result<()> {
    match pid {
        Some(pid) if !rec.processes.iter().any(|p| p.pid == pid) => Err(Error::Usage(format!(
            "{name} has no process {pid} (see `memspy info`)"
        ))),
        _ => Ok(()),
    }
}

pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A path as messages show it.
pub fn shown(path: &Path) -> String {
    visible(&path.display().to_string()).into_owned()
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
