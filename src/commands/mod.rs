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

/// A new folder in the temporary directory that only this user (root, usually) can enter,
/// `memspy-PURPOSE-…`: where `top` and `record -o none` keep their recording's files.
pub(crate) fn private_folder(purpose: &str) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for attempt in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!(
            "memspy-{purpose}-{}-{nanos:x}{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("cannot create {}", dir.display()), e)),
        }
    }
    Err(Error::Usage(format!(
        "cannot create a private folder in {} for memspy {purpose}",
        base.display()
    )))
}
