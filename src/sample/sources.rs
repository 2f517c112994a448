//! Keeping the source text of the files the recorded functions come from, for per-line
//! reports: each file is asked for as the process that named it (see `target::files`), read on
//! a thread of its own, and written to the recording as soon as it arrives, so a recording cut
//! short still has the sources of what it holds.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::recording::Writer;
use crate::target::files::{FileAccess, SourceReader, SourceText};

/// Most source text one recording keeps.
const MAX_TOTAL: u64 = 64 << 20;
/// Most files asked for (a target can name as many files as it likes).
const MAX_FILES: usize = 20_000;
/// How long the end of a recording waits for files still being read.
const FINISH_WAIT: Duration = Duration::from_secs(2);

/// The source files of one recording.
pub struct Sources {
    reader: Option<SourceReader>,
    /// (pid, file name) asked for, so each process asks once for each file.
    asked: HashSet<(i32, Arc<str>)>,
    /// File names whose text is in the recording.
    kept: HashSet<String>,
    total: u64,
}

impl Sources {
    pub fn new() -> Sources {
        Sources {
            // Without the thread there are simply no sources (reports say so).
            reader: SourceReader::start().ok(),
            asked: HashSet::new(),
            kept: HashSet::new(),
            total: 0,
        }
    }

    /// Ask for the files `pid` named since last time.
    pub fn ask(&mut self, pid: i32, access: Option<&Arc<FileAccess>>, names: &mut Vec<Arc<str>>) {
        let (Some(reader), Some(access)) = (self.reader.as_mut(), access) else {
            names.clear();
            return;
        };
        for name in names.drain(..) {
            // "<string>", "<frozen importlib._bootstrap>", "<stdin>": no file behind them.
            if name.is_empty() || name.starts_with('<') || self.kept.contains(&*name) {
                continue;
            }
            if self.asked.len() < MAX_FILES && self.asked.insert((pid, name.clone())) {
                reader.request(access, &name);
            }
        }
    }

    /// Write what has been read so far.
    pub fn write_ready(&mut self, writer: &mut Writer) -> io::Result<()> {
        let ready = match self.reader.as_mut() {
            Some(r) => r.ready(),
            None => return Ok(()),
        };
        self.write(ready, writer)
    }

    /// Wait (briefly) for the files still being read, and write them.
    pub fn finish(&mut self, writer: &mut Writer) -> io::Result<()> {
        let last = match self.reader.take() {
            Some(r) => r.finish(FINISH_WAIT),
            None => return Ok(()),
        };
        self.write(last, writer)
    }

    fn write(&mut self, texts: Vec<SourceText>, writer: &mut Writer) -> io::Result<()> {
        for t in texts {
            let Ok(text) = t.text else {
                continue;
            };
            let size = text.len() as u64;
            if self.kept.contains(&t.name) || self.total + size > MAX_TOTAL {
                continue;
            }
            writer.source(&t.name, &text)?;
            self.total += size;
            self.kept.insert(t.name);
        }
        Ok(())
    }
}

impl Default for Sources {
    fn default() -> Self {
        Sources::new()
    }
}
