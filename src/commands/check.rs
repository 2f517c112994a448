//! `memspy check`: fail a CI job when memory or time go over budget or regress against a
//! baseline (the rules are in `analysis::check`).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::analysis::check::{check_budgets, compare, figures, Budget, Finding, Rule};
use crate::analysis::{attribute, Filter, WindowSpec};
use crate::commands::info::open_recording;
use crate::commands::{to_stdout, written};
use crate::error::{Error, Result};
use crate::output::check::{write_json, write_markdown, write_text};
use crate::recording::reader::Damage;
use crate::recording::Recording;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// The time window looked at (`--from`, `--to`, `--skip-startup`).
    pub window: WindowSpec,
    /// OS threads only (`--tasks off`).
    pub threads_only: bool,
    pub input: Option<PathBuf>,
    pub budgets: Vec<Budget>,
    /// Budgets for this process only, or for each process on its own (`--pid`,
    /// `--each-process`); baselines always compare whole recordings.
    pub pid: Option<i32>,
    pub each_process: bool,
    pub baselines: Vec<PathBuf>,
    pub rule: Rule,
    pub format: Format,
    pub verbose: bool,
}

/// A recording for the gate: cut-short files are fine (a crashed job still has its data), a
/// damaged one is not (the numbers could be wrong), so that is an error.
fn usable(name: &str, rec: &Recording) -> Result<()> {
    if let Some(Damage::Corrupt { offset, what }) = &rec.damage {
        return Err(Error::Recording(format!(
            "{name} is damaged at byte {offset} ({what}); the check cannot rely on it"
        )));
    }
    if rec.samples.is_empty() {
        return Err(Error::Recording(format!("{name} holds no samples")));
    }
    Ok(())
}

fn load(path: Option<&Path>) -> Result<(String, Recording)> {
    let (path, rec) = open_recording(path)?;
    let name = path.display().to_string();
    usable(&name, &rec)?;
    Ok((name, rec))
}

/// How `base` was recorded otherwise than `rec` (rate, mode, memory measure, memory events),
/// in words; None when alike.
fn differently_recorded(base: &Recording, rec: &Recording) -> Option<String> {
    let (b, r) = (&base.meta, &rec.meta);
    let mode = |blocking: bool| if blocking { "blocking" } else { "non-blocking" };
    let events = |on: bool| {
        if on {
            "with memory events"
        } else {
            "without memory events"
        }
    };
    let mut diffs = Vec::new();
    if b.rate_hz != r.rate_hz {
        diffs.push(format!(
            "at {} Hz (this one at {} Hz)",
            b.rate_hz, r.rate_hz
        ));
    }
    if b.blocking != r.blocking {
        diffs.push(format!(
            "{} (this one {})",
            mode(b.blocking),
            mode(r.blocking)
        ));
    }
    if b.memory != r.memory {
        diffs.push(format!("with memory {} (this one {})", b.memory, r.memory));
    }
    if b.memory_events != r.memory_events {
        diffs.push(format!(
            "{} (this one {})",
            events(b.memory_events),
            events(r.memory_events)
        ));
    }
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

/// Run the checks; returns 0 when all pass, 1 when one fails.
pub fn run(opts: &CheckOptions) -> Result<u8> {
    nothing_to_check(opts)?;
    let (name, rec) = load(opts.input.as_deref())?;
    let mut baselines = Vec::new();
    for b in &opts.baselines {
        baselines.push(load(Some(b))?);
    }
    let baselines: Vec<(&str, &Recording)> =
        baselines.iter().map(|(n, r)| (n.as_str(), r)).collect();
    to_stdout(|out| report((&name, &rec), &baselines, opts, out))
}

fn nothing_to_check(opts: &CheckOptions) -> Result<()> {
    if opts.budgets.is_empty() && opts.baselines.is_empty() {
        return Err(Error::Usage(
            "nothing to check: give budgets (--max-peak, --max-growth, ...) or --baseline FILE"
                .into(),
        ));
    }
    Ok(())
}

/// Check `input` (name, recording) against the budgets of `opts` and against `baselines`
/// (`opts.input` and `opts.baselines` are not used; the names are the files' as messages show
/// them); writes the findings and returns 0 when all pass, 1 when one fails.
pub fn report(
    input: (&str, &Recording),
    baselines: &[(&str, &Recording)],
    opts: &CheckOptions,
    out: &mut dyn Write,
) -> Result<u8> {
    nothing_to_check(opts)?;
    let (name, rec) = input;
    usable(name, rec)?;
    for (b, base) in baselines {
        usable(b, base)?;
    }
    crate::commands::flame::check_pid(rec, name, opts.pid)?;
    let filter_of = |rec: &Recording, pid: Option<i32>| -> Result<Filter> {
        Ok(Filter {
            pid,
            threads_only: opts.threads_only,
            window: opts.window.resolve(rec).map_err(Error::Usage)?,
        })
    };
    let whole = attribute(rec, &filter_of(rec, None)?);
    let mut findings: Vec<Finding> = Vec::new();
    let scopes: Vec<Option<i32>> = if opts.each_process {
        rec.sampled_pids().into_iter().map(Some).collect()
    } else {
        vec![opts.pid]
    };
    for pid in scopes {
        let attr = match pid {
            Some(_) => attribute(rec, &filter_of(rec, pid)?),
            None => whole.clone(),
        };
        let mut found = check_budgets(rec, &attr, &opts.budgets).map_err(Error::Usage)?;
        if let Some(pid) = pid {
            // Say which process a function's budget was checked in.
            for f in &mut found {
                if !f.check.contains(&format!("process {pid}")) {
                    f.check = format!("process {pid}: {}", f.check);
                }
            }
        }
        findings.extend(found);
    }
    let mut context = name.to_string();
    if !baselines.is_empty() {
        for (b, base) in baselines {
            if let Some(why) = differently_recorded(base, rec) {
                eprintln!(
                    "{}",
                    crate::output::text::message(&format!(
                        "memspy: warning: {b} was recorded {why}: differences may come from that alone"
                    ))
                );
            }
        }
        let mut figures_of_baselines = Vec::new();
        for (_, base) in baselines {
            figures_of_baselines.push(figures(base, &attribute(base, &filter_of(base, None)?)));
        }
        findings.extend(compare(
            &figures(rec, &whole),
            &figures_of_baselines,
            opts.rule,
        ));
        context = format!(
            "{name} against {} (tolerance {}%, noise floor {})",
            match baselines.len() {
                1 => baselines[0].0.to_string(),
                n => format!("the median of {n} baselines"),
            },
            opts.rule.tolerance_pct,
            crate::output::units::bytes(opts.rule.memory_floor)
        );
    }
    written(match opts.format {
        Format::Text => write_text(&findings, &context, opts.verbose, &mut *out),
        Format::Json => write_json(&findings, &context, &mut *out),
        Format::Markdown => write_markdown(&findings, &context, &mut *out),
    })?;
    Ok(if findings.iter().all(|f| f.passed) {
        0
    } else {
        1
    })
}
