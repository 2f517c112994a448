//! How `memspy check` reports: a short table on a terminal, JSON for bots, Markdown for CI job
//! summaries. Failed checks come first.

use std::io::{self, Write};

use super::flame::duration;
use super::text::{markdown, one_line};
use super::units::bytes;
use crate::analysis::check::{Finding, Unit};

fn show(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Bytes => bytes(v),
        Unit::Microseconds => duration(v.max(0.0) as u64),
        Unit::Percent => format!("{v:.1}%"),
    }
}

fn change(f: &Finding) -> String {
    match f.baseline {
        Some(b) if b.abs() > 0.0 && f.unit != Unit::Percent => {
            format!("{:+.0}%", 100.0 * (f.value - b) / b.abs())
        }
        Some(b) if f.unit == Unit::Percent => format!("{:+.1} pts", f.value - b),
        Some(_) => "new".into(),
        None => String::new(),
    }
}

fn ordered(findings: &[Finding]) -> Vec<&Finding> {
    let mut v: Vec<&Finding> = findings.iter().collect();
    v.sort_by_key(|f| f.passed);
    v
}

/// A headline and the failed checks; passed checks are counted (all of them with `verbose`).
pub fn write_text(
    findings: &[Finding],
    context: &str,
    verbose: bool,
    mut w: impl Write,
) -> io::Result<()> {
    let failed = findings.iter().filter(|f| !f.passed).count();
    if failed == 0 {
        writeln!(
            w,
            "memspy check: passed, {} checks ({})",
            findings.len(),
            one_line(context, usize::MAX)
        )?;
    } else {
        writeln!(
            w,
            "memspy check: FAILED, {failed} of {} checks ({})",
            findings.len(),
            one_line(context, usize::MAX)
        )?;
    }
    for f in ordered(findings) {
        if f.passed && !verbose {
            continue;
        }
        let mut line = format!(
            "  {:<4}  {:<60} {:>11}",
            if f.passed { "ok" } else { "FAIL" },
            one_line(&f.check, 160),
            show(f.unit, f.value)
        );
        if let Some(b) = f.baseline {
            line.push_str(&format!("  baseline {:>11}", show(f.unit, b)));
        }
        if let Some(l) = f.limit {
            line.push_str(&format!("  limit {:>11}", show(f.unit, l)));
        }
        let c = change(f);
        if !c.is_empty() {
            line.push_str(&format!("  ({c})"));
        }
        writeln!(w, "{line}")?;
    }
    let passed = findings.len() - failed;
    if !verbose && passed > 0 {
        writeln!(
            w,
            "  {passed} check{} passed",
            if passed == 1 { "" } else { "s" }
        )?;
    }
    w.flush()
}

pub fn write_json(findings: &[Finding], context: &str, mut w: impl Write) -> io::Result<()> {
    let doc = serde_json::json!({
        "passed": findings.iter().all(|f| f.passed),
        "failed": findings.iter().filter(|f| !f.passed).count(),
        "context": context,
        "checks": ordered(findings),
    });
    serde_json::to_writer_pretty(&mut w, &doc)?;
    writeln!(w)
}

pub fn write_markdown(findings: &[Finding], context: &str, mut w: impl Write) -> io::Result<()> {
    let failed = findings.iter().filter(|f| !f.passed).count();
    if failed == 0 {
        writeln!(
            w,
            "### memspy check: ✅ passed ({} checks)\n",
            findings.len()
        )?;
    } else {
        writeln!(
            w,
            "### memspy check: ❌ {failed} of {} checks failed\n",
            findings.len()
        )?;
    }
    writeln!(w, "{}\n", markdown(context))?;
    writeln!(w, "| | check | value | baseline | limit | change |")?;
    writeln!(w, "|---|---|---:|---:|---:|---:|")?;
    for f in ordered(findings) {
        let cell = |v: Option<f64>| v.map_or(String::new(), |v| show(f.unit, v));
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            if f.passed { "✅" } else { "❌" },
            markdown(&f.check),
            show(f.unit, f.value),
            cell(f.baseline),
            cell(f.limit),
            change(f)
        )?;
    }
    w.flush()
}
