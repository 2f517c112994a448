//! A JSON summary of a recording, for scripts and bots (`memspy export --format json`).
//!
//! Time is in microseconds and memory in bytes, as unrounded numbers; times of day are seconds
//! since the recording started. The document:
//!
//! ```text
//! {
//!   "exporter": "memspy 0.1.0",
//!   "recording": {
//!     "file": "run.msp", "memspy_version": "0.1.0" (the recorder's), "complete": true,
//!     "start_unix_ns": 1764000000000000000, "start": "2025-11-24T16:00:00.000Z",
//!     "duration_s": 3.0, "rate_hz": 100.0, "blocking": true, "memory": "rss" (or pss, uss),
//!     "samples": 1134, "failed": {"raced": 0, "exited": 0, "fatal": 0}
//!   },
//!   "units": {"wall": "us", "cpu": "us", "growth": "bytes", "freed": .., "retained": .., "peak": ..},
//!   "processes": [{
//!     "pid": 362, "parent_pid": null, "command": "python app.py", "python": "3.12.1",
//!     "samples": 297, "failed": {"raced": 0, "exited": 0, "fatal": 0},
//!     "rss_min": 13422592, "rss_max": 13422592, "rss_last": 13422592,
//!     "peak": {"time_s": 1.2, "bytes": 13422592} (highest reading of the memory series the
//!              attribution uses: RSS, or PSS/USS; null without readings),
//!     "totals": {"wall": .., "cpu": .., "growth": .., "freed": .., "retained": .., "peak": ..}
//!     "threads": [{"tid": .., "name": ..}], "tasks": ..
//!   }],
//!   "totals": {"wall": .., "cpu": .., "growth": .., "freed": .., "retained": .., "peak": ..},
//!   "top_functions": {"<metric>": {
//!     "inclusive": [{"function": "Cache.fill", "file": "/srv/cache.py",
//!                    "dotted": "srv.cache.Cache.fill", "inclusive": .., "self": ..}]
//!                   (top 20 by inclusive),
//!     "self": [..] (the same entries, top 20 by self)
//!   }},
//!   "top_lines": {"<metric>": [{"file": .., "line": 22, "function": .., "self": .., "total": ..,
//!                               "source": "text of the line" or null}] (top 20 by self)}
//! }
//! ```
//!
//! Each metric of `totals` adds up every value of the attribution (see `crate::analysis`).
//! Functions are those of `crate::analysis::functions` (one per qualified name and file;
//! `dotted` is the name `memspy check` patterns match): *inclusive* counts each stack once if
//! the function is on it (recursion does not count twice), *self* the stacks where it is the
//! innermost frame. The pseudo-functions `[no Python frames]` and `[unattributed]` (file and
//! dotted null) hold what landed outside Python code. Lists are sorted by the absolute
//! value (pseudo-entries of retained memory can be negative); lines come from the per-line table (`memspy lines`).

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use super::lines::rows;
use crate::analysis::functions::by_function;
use crate::analysis::{Attribution, Metric, Site};
use crate::recording::{FailureKind, Recording};

/// How many functions and lines each list holds.
pub const TOP: usize = 20;

#[derive(Serialize)]
struct Summary {
    exporter: String,
    recording: RecordingFacts,
    units: BTreeMap<&'static str, &'static str>,
    processes: Vec<ProcessFacts>,
    totals: BTreeMap<&'static str, f64>,
    top_functions: BTreeMap<&'static str, TopFunctions>,
    top_lines: BTreeMap<&'static str, Vec<LineEntry>>,
}

#[derive(Serialize)]
struct RecordingFacts {
    file: String,
    memspy_version: String,
    complete: bool,
    start_unix_ns: u64,
    start: String,
    duration_s: f64,
    rate_hz: f64,
    blocking: bool,
    memory: String,
    samples: u64,
    failed: Failed,
}

#[derive(Serialize, Default, Clone, Copy)]
struct Failed {
    raced: u64,
    exited: u64,
    fatal: u64,
}

#[derive(Serialize)]
struct ProcessFacts {
    pid: i32,
    parent_pid: Option<i32>,
    command: String,
    python: String,
    samples: u64,
    failed: Failed,
    rss_min: Option<u64>,
    rss_max: Option<u64>,
    rss_last: Option<u64>,
    peak: Option<Peak>,
    totals: BTreeMap<&'static str, f64>,
    /// Its threads: kernel id (0: unproven) and name (Python's, else the kernel's).
    threads: Vec<ThreadFacts>,
    /// Greenlets and asyncio tasks recorded.
    tasks: usize,
}

#[derive(Serialize)]
struct ThreadFacts {
    tid: i32,
    name: String,
}

#[derive(Serialize)]
struct Peak {
    time_s: f64,
    bytes: u64,
}

#[derive(Serialize)]
struct TopFunctions {
    inclusive: Vec<FunctionEntry>,
    #[serde(rename = "self")]
    self_: Vec<FunctionEntry>,
}

#[derive(Serialize, Clone)]
struct FunctionEntry {
    function: String,
    file: Option<String>,
    dotted: Option<String>,
    inclusive: f64,
    #[serde(rename = "self")]
    self_: f64,
}

#[derive(Serialize)]
struct LineEntry {
    file: String,
    line: i32,
    function: String,
    #[serde(rename = "self")]
    self_: f64,
    total: f64,
    source: Option<String>,
}

fn top_functions(rec: &Recording, attr: &Attribution, metric: Metric) -> TopFunctions {
    let mut all: Vec<FunctionEntry> = by_function(rec, attr, metric)
        .into_iter()
        .map(|f| FunctionEntry {
            function: f.qualname,
            file: Some(f.file),
            dotted: Some(f.dotted),
            inclusive: f.total_value,
            self_: f.self_value,
        })
        .collect();
    // What landed outside Python code, as pseudo-functions.
    for site in Site::PSEUDO {
        let name = site.pseudo_label().unwrap_or("?");
        let value: f64 = attr
            .values(metric)
            .iter()
            .filter(|(k, _)| k.site == site)
            .map(|(_, v)| v)
            .sum();
        if value != 0.0 {
            all.push(FunctionEntry {
                function: name.to_string(),
                file: None,
                dotted: None,
                inclusive: value,
                self_: value,
            });
        }
    }
    // A stable order first, so equal values always come out the same way.
    all.sort_by(|a, b| (&a.dotted, &a.function).cmp(&(&b.dotted, &b.function)));
    let mut by_self = all.clone();
    all.sort_by(|a, b| b.inclusive.abs().total_cmp(&a.inclusive.abs()));
    all.truncate(TOP);
    by_self.retain(|e| e.self_ != 0.0);
    by_self.sort_by(|a, b| b.self_.abs().total_cmp(&a.self_.abs()));
    by_self.truncate(TOP);
    TopFunctions {
        inclusive: all,
        self_: by_self,
    }
}

fn totals(attr: &Attribution, process: Option<u32>) -> BTreeMap<&'static str, f64> {
    Metric::ALL
        .iter()
        .map(|&m| {
            let total = attr
                .values(m)
                .iter()
                .filter(|(k, _)| process.is_none_or(|p| k.process == p))
                .map(|(_, v)| v)
                .sum::<f64>();
            // An empty sum is -0.0; write 0.
            (m.name(), total + 0.0)
        })
        .collect()
}

fn count_failure(f: &mut Failed, kind: FailureKind) {
    match kind {
        FailureKind::Raced => f.raced += 1,
        FailureKind::Exited => f.exited += 1,
        FailureKind::Fatal => f.fatal += 1,
    }
}

fn process_facts(rec: &Recording, attr: &Attribution, p: u32) -> ProcessFacts {
    let proc = &rec.processes[p as usize];
    let samples: Vec<_> = rec.samples.iter().filter(|s| s.process == p).collect();
    let mut failed = Failed::default();
    for f in rec.failures.iter().filter(|f| f.process == p) {
        count_failure(&mut failed, f.kind);
    }
    // The highest reading, the first one if it was reached several times.
    let peak = attr
        .series
        .get(p as usize)
        .and_then(|s| {
            s.iter()
                .enumerate()
                .max_by_key(|(i, (_, v))| (*v, std::cmp::Reverse(*i)))
        })
        .map(|(_, &(t, v))| Peak {
            time_s: t as f64 / 1e6,
            bytes: v,
        });
    ProcessFacts {
        pid: proc.pid,
        parent_pid: proc
            .parent
            .and_then(|i| rec.processes.get(i as usize))
            .map(|parent| parent.pid),
        command: rec.string(proc.command).to_string(),
        python: rec.string(proc.python).to_string(),
        samples: samples.len() as u64,
        failed,
        rss_min: samples.iter().map(|s| s.rss_bytes).min(),
        rss_max: samples.iter().map(|s| s.rss_bytes).max(),
        rss_last: samples.last().map(|s| s.rss_bytes),
        peak,
        totals: totals(attr, Some(p)),
        threads: rec
            .threads
            .iter()
            .filter(|t| t.process == p)
            .map(|t| ThreadFacts {
                tid: t.tid,
                name: t.label(rec).to_string(),
            })
            .collect(),
        tasks: rec.tasks.iter().filter(|t| t.process == p).count(),
    }
}

/// Write the summary of a recording's attribution, for the given processes (indices into
/// `Recording::processes`). `file` is the name of the recording's file.
pub fn write(
    rec: &Recording,
    attr: &Attribution,
    processes: &[u32],
    file: &str,
    mut w: impl Write,
) -> io::Result<()> {
    let included = |p: u32| processes.contains(&p);
    let mut failed = Failed::default();
    for f in rec.failures.iter().filter(|f| included(f.process)) {
        count_failure(&mut failed, f.kind);
    }
    let times: Vec<u64> = rec
        .samples
        .iter()
        .filter(|s| included(s.process))
        .map(|s| s.time_us)
        .collect();
    let duration_us = match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) => b.saturating_sub(*a),
        _ => 0,
    };
    let start = chrono::DateTime::from_timestamp_nanos(rec.meta.start_unix_ns as i64)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let summary = Summary {
        exporter: format!("memspy {}", env!("CARGO_PKG_VERSION")),
        recording: RecordingFacts {
            file: file.to_string(),
            memspy_version: rec.meta.memspy_version.clone(),
            complete: rec.complete,
            start_unix_ns: rec.meta.start_unix_ns,
            start,
            duration_s: duration_us as f64 / 1e6,
            rate_hz: rec.meta.rate_hz,
            blocking: rec.meta.blocking,
            memory: rec.meta.memory.clone(),
            samples: times.len() as u64,
            failed,
        },
        units: Metric::ALL
            .iter()
            .map(|m| (m.name(), if m.is_memory() { "bytes" } else { "us" }))
            .collect(),
        processes: processes
            .iter()
            .map(|&p| process_facts(rec, attr, p))
            .collect(),
        totals: totals(attr, None),
        top_functions: Metric::ALL
            .iter()
            .map(|&m| (m.name(), top_functions(rec, attr, m)))
            .collect(),
        top_lines: Metric::ALL
            .iter()
            .map(|&m| {
                let lines = rows(rec, attr, m, None)
                    .into_iter()
                    .take(TOP)
                    .map(|r| LineEntry {
                        file: r.file,
                        line: r.line,
                        function: r.function,
                        self_: r.self_value,
                        total: r.total_value,
                        source: r.source,
                    })
                    .collect();
                (m.name(), lines)
            })
            .collect(),
    };
    serde_json::to_writer_pretty(&mut w, &summary)?;
    writeln!(w)?;
    w.flush()
}
