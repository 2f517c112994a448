//! `memspy check`: fail a CI job when memory or time go over budget or regress against a
//! baseline (the rules are in `analysis::check`).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::analysis::check::{check_budgets, compare, figures, Budget, Finding, Rule};
use crate::analysis::{attribute, Filter};
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
    /// OS threads only (`--tasks off`).
    pub threads_only: bool,
    pub input: Option<PathBuf>,
    pub budgets: Vec<Budget>,
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
    let filter = Filter {
        threads_only: opts.threads_only,
        ..Filter::default()
    };
    let attr = attribute(rec, &filter);
    let mut findings: Vec<Finding> =
        check_budgets(rec, &attr, &opts.budgets).map_err(Error::Usage)?;
    let mut context = name.to_string();
    if !baselines.is_empty() {
        let figures_of_baselines: Vec<_> = baselines
            .iter()
            .map(|(_, base)| figures(base, &attribute(base, &filter)))
            .collect();
        findings.extend(compare(
            &figures(rec, &attr),
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
