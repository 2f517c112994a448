//! `memspy export`: a recording in other tools' formats.

use std::io::Write;
use std::path::PathBuf;

use crate::analysis::{attribute, Filter, Metric, Naming, WindowSpec};
use crate::commands::flame::{check_pid, file_name, shown, write_file};
use crate::commands::info::open_recording;
use crate::commands::plot::attributed;
use crate::commands::written;
use crate::error::{Error, Result};
use crate::output::mprof::{roles, write_dat};
use crate::output::plot::top_functions;
use crate::output::{collapsed, json, pprof, speedscope};
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
    /// A gzipped pprof profile (`go tool pprof`, Pyroscope, Parca): every metric, or one.
    Pprof,
}

#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// The time window looked at (`--from`, `--to`, `--skip-startup`).
    pub window: WindowSpec,
    /// OS threads only (`--tasks off`).
    pub threads_only: bool,
    pub output: PathBuf,
    pub input: Option<PathBuf>,
    pub format: ExportFormat,
    /// The metric (collapsed: wall time when not given; pprof: every metric when not given).
    pub metric: Option<Metric>,
    pub pid: Option<i32>,
    pub merge_processes: bool,
    pub functions_only: bool,
}

pub fn run(opts: &ExportOptions) -> Result<()> {
    let (path, rec) = open_recording(opts.input.as_deref())?;
    let mut data = Vec::new();
    let what = report(&rec, &file_name(&path), opts, &mut data)?;
    write_file(&opts.output, |w| w.write_all(&data))?;
    let output = shown(&opts.output);
    match opts.format {
        ExportFormat::Mprof => eprintln!(
            "memspy: wrote {output} (mprof data: {what}; plot it with `mprof plot {output}`)"
        ),
        _ => eprintln!("memspy: wrote {output} ({what})"),
    }
    Ok(())
}

/// Write `rec` (its file is named `name`) in the format `opts` say (`input` and `output` are
/// not used); returns a few words on what was written.
pub fn report(
    rec: &Recording,
    name: &str,
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> Result<String> {
    match opts.format {
        ExportFormat::Collapsed => export_collapsed(rec, name, opts, out),
        ExportFormat::Speedscope => export_speedscope(rec, name, opts, out),
        ExportFormat::Json => export_json(rec, name, opts, out),
        ExportFormat::Mprof => mprof(rec, name, opts, out),
        ExportFormat::Pprof => export_pprof(rec, name, opts, out),
    }
}

/// The filter and the processes it keeps (indices into `Recording::processes`); a pid that is
/// not in the recording is an error.
fn processes(rec: &Recording, name: &str, opts: &ExportOptions) -> Result<(Filter, Vec<u32>)> {
    check_pid(rec, name, opts.pid)?;
    let filter = Filter {
        pid: opts.pid,
        threads_only: opts.threads_only,
        window: opts.window.resolve(rec).map_err(Error::Usage)?,
    };
    let processes = (0..rec.processes.len() as u32)
        .filter(|&p| filter.includes(rec, p))
        .collect();
    Ok((filter, processes))
}

fn naming(opts: &ExportOptions) -> Naming {
    Naming {
        functions_only: opts.functions_only,
        // Exports keep full paths: tools and scripts read them.
        short_files: false,
    }
}

fn export_collapsed(
    rec: &Recording,
    name: &str,
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> Result<String> {
    let (filter, _) = processes(rec, name, opts)?;
    let attr = attribute(rec, &filter);
    let metric = opts.metric.unwrap_or(Metric::Wall);
    let folded = collapsed::fold(
        rec,
        &attr,
        metric,
        collapsed::Fold {
            merge_processes: opts.merge_processes,
            naming: naming(opts),
        },
    );
    written(collapsed::write(&folded, out))?;
    Ok(format!(
        "folded stacks of {}, {} stacks",
        metric.title().to_lowercase(),
        folded.len()
    ))
}

fn export_speedscope(
    rec: &Recording,
    name: &str,
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> Result<String> {
    let (filter, processes) = processes(rec, name, opts)?;
    let attr = attribute(rec, &filter);
    // Processes without samples have nothing to show.
    let processes: Vec<u32> = processes
        .into_iter()
        .filter(|&p| rec.samples.iter().any(|s| s.process == p))
        .collect();
    written(speedscope::write(
        rec,
        &attr,
        &processes,
        name,
        naming(opts),
        out,
    ))?;
    Ok(format!(
        "speedscope, {} profiles",
        processes.len() * speedscope::PROFILES.len()
    ))
}

fn export_json(
    rec: &Recording,
    name: &str,
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> Result<String> {
    let (filter, processes) = processes(rec, name, opts)?;
    let attr = attribute(rec, &filter);
    written(json::write(rec, &attr, &processes, name, out))?;
    Ok("JSON summary".into())
}

/// How many functions the mprof export brackets (`memspy plot`'s default).
const MPROF_FUNCTIONS: usize = 5;

fn mprof(rec: &Recording, name: &str, opts: &ExportOptions, out: &mut dyn Write) -> Result<String> {
    let (filter, attr) = attributed(rec, name, opts.pid, &opts.window)?;
    let Some(roles) = roles(rec, &attr) else {
        return Err(Error::Other("no process has memory readings".into()));
    };
    let marked = top_functions(rec, &attr, &filter, MPROF_FUNCTIONS);
    written(write_dat(rec, &attr, &roles, &marked, out))?;
    Ok(format!(
        "process {}{}",
        roles.main_pid,
        match roles.children.len() {
            0 => String::new(),
            1 => " and 1 child".to_string(),
            n => format!(" and {n} children"),
        }
    ))
}

fn export_pprof(
    rec: &Recording,
    name: &str,
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> Result<String> {
    let (filter, _) = processes(rec, name, opts)?;
    let (first, last) = match (rec.samples.first(), rec.samples.last()) {
        (Some(a), Some(b)) => (a.time_us, b.time_us),
        _ => return Err(Error::Usage(format!("{name} has no samples to export"))),
    };
    let (from_us, to_us) = filter.window.unwrap_or((first, last));
    let metrics: Vec<Metric> = match opts.metric {
        Some(m) => vec![m],
        None => Metric::ALL.to_vec(),
    };
    let profile = pprof::window(rec, &filter, pprof::Span { from_us, to_us }, &metrics);
    written(pprof::write_gzipped(&profile, out))?;
    Ok(format!(
        "pprof profile of {}: {} samples, {} locations",
        metrics
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        profile.sample.len(),
        profile.location.len()
    ))
}
