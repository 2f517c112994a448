//! One module per subcommand: each turns its parsed arguments into calls to the stage modules
//! (target, python, sample, recording, analysis, output) and prints the result.
//!
//! Every report command has a `report` function that takes recordings already read and writes
//! to any `Write` (the `run` function opens the files, calls it and writes where the command
//! line says), so tests can run the reports on recordings in memory.
pub mod check;
pub mod diff;
pub mod dump;
pub mod export;
pub mod flame;
pub mod info;
pub mod lines;
pub mod plot;
pub mod record;
pub mod report;
pub mod top;

use std::io;

use crate::error::{Error, Result};

/// The result of writing a report: a reader that went away (`memspy lines | head`) is not an
/// error; anything else is.
pub(crate) fn written(result: io::Result<()>) -> Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| Error::io("writing output", e)),
    }
}

/// Write a report to standard output through a buffer.
pub(crate) fn to_stdout<T>(report: impl FnOnce(&mut dyn io::Write) -> Result<T>) -> Result<T> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let value = report(&mut out)?;
    written(io::Write::flush(&mut out))?;
    Ok(value)
}
