//! `memspy check`: fail a CI job when memory or time go over budget or regress against a
//! baseline (the rules are in `analysis::check`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::analysis::check::{check_budgets, compare, figures, Budget, Finding, Rule};
use crate::analysis::{attribute, Filter};
use crate::commands::info::open_recording;
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
    pub input: Option<PathBuf>,
    pub budgets: Vec<Budget>,
    pub baselines: Vec<PathBuf>,
    pub rule: Rule,
    pub format: Format,
    pub verbose: bool,
}

/// A recording for the gate: cut-short files are fine (a crashed job still has its data), a
/// damaged one is not (the numbers could be wrong), so that is an error.
fn load(path: Option<&Path>) -> Result<(PathBuf, Recording)> {
    let (path, rec) = open_recording(path)?;
    if let Some(Damage::Corrupt { offset, what }) = &rec.damage {
        return Err(Error::Recording(format!(
            "{} is damaged at byte {offset} ({what}); the check cannot rely on it",
            path.display()
        )));
    }
    if rec.samples.is_empty() {
        return Err(Error::Recording(format!(
            "{} holds no samples",
            path.display()
        )));
    }
    Ok((path, rec))
}

/// Run the checks; returns 0 when all pass, 1 when one fails.
pub fn run(opts: &CheckOptions) -> Result<u8> {
    if opts.budgets.is_empty() && opts.baselines.is_empty() {
        return Err(Error::Usage(
            "nothing to check: give budgets (--max-peak, --max-growth, ...) or --baseline FILE"
                .into(),
        ));
    }
    let (path, rec) = load(opts.input.as_deref())?;
    let attr = attribute(&rec, &Filter::default());
    let mut findings: Vec<Finding> =
        check_budgets(&rec, &attr, &opts.budgets).map_err(Error::Usage)?;
    let mut context = format!("{}", path.display());
    if !opts.baselines.is_empty() {
        let mut baselines = Vec::new();
        for b in &opts.baselines {
            let base = load(Some(b))?.1;
            baselines.push(figures(&base, &attribute(&base, &Filter::default())));
        }
        findings.extend(compare(&figures(&rec, &attr), &baselines, opts.rule));
        context = format!(
            "{} against {} (tolerance {}%, noise floor {})",
            path.display(),
            match opts.baselines.len() {
                1 => opts.baselines[0].display().to_string(),
                n => format!("the median of {n} baselines"),
            },
            opts.rule.tolerance_pct,
            crate::output::units::bytes(opts.rule.memory_floor)
        );
    }
    let out = io::BufWriter::new(io::stdout().lock());
    let written = match opts.format {
        Format::Text => write_text(&findings, &context, opts.verbose, out),
        Format::Json => write_json(&findings, &context, out).and_then(|()| io::stdout().flush()),
        Format::Markdown => write_markdown(&findings, &context, out),
    };
    match written {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            return Err(Error::io("writing output", e))
        }
        _ => {}
    }
    Ok(if findings.iter().all(|f| f.passed) {
        0
    } else {
        1
    })
}
