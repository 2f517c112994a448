//! `memspy report`: the interactive HTML report of a recording, one self-contained file.

use std::path::{Path, PathBuf};

use crate::analysis::WindowSpec;
use crate::commands::flame::{file_name, shown, write_file};
use crate::commands::info::{open_recording, summarize};
use crate::error::{Error, Result};
use crate::output::report::{write_report, Written};
use crate::output::units::bytes;
use crate::recording::Recording;

#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub input: Option<PathBuf>,
    pub output: PathBuf,
    /// The window the page opens with (`--from`, `--to`, `--skip-startup`); a person can drag
    /// another one on the page.
    pub window: WindowSpec,
    /// Open the page in the desktop's browser once written.
    pub open: bool,
}

pub fn run(opts: &ReportOptions) -> Result<()> {
    let (path, rec) = open_recording(opts.input.as_deref())?;
    let mut page = Vec::new();
    let written = report(&rec, &file_name(&path), opts, &mut page)?;
    write_file(&opts.output, |w| w.write_all(&page))?;
    eprintln!(
        "memspy: wrote {} ({}, {} stacks over {} time steps)",
        shown(&opts.output),
        bytes(written.bytes as f64),
        written.sites,
        written.buckets
    );
    if opts.open {
        open_in_browser(&opts.output);
    }
    Ok(())
}

/// Write the page of `rec` (its file is named `name`) as `opts` say (`input`, `output` and
/// `open` are not used).
pub fn report(
    rec: &Recording,
    name: &str,
    opts: &ReportOptions,
    out: &mut dyn std::io::Write,
) -> Result<Written> {
    if rec.samples.is_empty() {
        return Err(Error::Usage(format!(
            "{name} has no samples to report on: record for longer, or check `memspy info`"
        )));
    }
    let window = opts.window.resolve(rec).map_err(Error::Usage)?;
    let startup = WindowSpec {
        skip_startup: true,
        ..WindowSpec::default()
    }
    .resolve(rec)
    .ok()
    .flatten()
    .map(|w| w.0)
    .filter(|&t| rec.samples.first().is_some_and(|s| t > s.time_us));
    let info = serde_json::to_value(summarize(name, rec))
        .map_err(|e| Error::Usage(format!("cannot describe the recording: {e}")))?;
    write_report(rec, name, info, window, startup, out)
        .map_err(|e| Error::io("writing the report", e))
}

/// Hand the page to the desktop's opener; a machine without one gets a note, not an error
/// (the report is written).
fn open_in_browser(page: &Path) {
    let opener = std::env::var_os("BROWSER").unwrap_or_else(|| "xdg-open".into());
    let spawned = std::process::Command::new(&opener)
        .arg(page)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!(
            "memspy: could not open a browser ({}: {e}); open {} yourself",
            opener.to_string_lossy(),
            shown(page)
        );
    }
}
