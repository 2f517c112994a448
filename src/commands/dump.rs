//! `memspy dump`: every Python thread's stack of a live process, now.

use std::io::{self, Write};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::python::{self, Snapshot, StackReader, WalkError};
use crate::target::{lock, procfs, ProcessMemory};

/// Options of `memspy dump`.
#[derive(Clone, Debug)]
pub struct DumpOptions {
    pub pid: i32,
    pub subprocesses: bool,
    pub json: bool,
    /// Read without stopping the target (the stacks may be slightly inconsistent).
    pub nonblocking: bool,
    pub verbose: bool,
}

/// Attempts at a consistent walk before giving up on a process.
const ATTEMPTS: usize = 20;

#[derive(Serialize)]
struct DumpOutput {
    processes: Vec<ProcessDump>,
}

#[derive(Serialize)]
struct ProcessDump {
    pid: i32,
    command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    python: Option<PythonInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    threads: Vec<ThreadDump>,
}

#[derive(Serialize)]
struct PythonInfo {
    version: String,
    binary: String,
    version_source: &'static str,
    offsets: &'static str,
}

#[derive(Serialize)]
struct ThreadDump {
    thread_id: u64,
    native_id: Option<i32>,
    name: Option<String>,
    interpreter: i64,
    holds_gil: bool,
    active: Option<bool>,
    truncated: bool,
    frames: Vec<FrameDump>,
}

#[derive(Serialize)]
struct FrameDump {
    function: String,
    name: String,
    file: String,
    line: i32,
}

pub fn run(opts: &DumpOptions) -> Result<()> {
    let mut pids = vec![opts.pid];
    if opts.subprocesses {
        pids.extend(procfs::descendants(opts.pid));
    }
    let mut processes = Vec::new();
    for (i, &pid) in pids.iter().enumerate() {
        match dump_process(pid, opts) {
            Ok(p) => processes.push(p),
            // The process asked for must work; children that are not Python (or that exited)
            // are reported and skipped.
            Err(e) if i > 0 => processes.push(ProcessDump {
                pid,
                command: procfs::cmdline(pid).unwrap_or_default(),
                python: None,
                error: Some(e.to_string()),
                threads: Vec::new(),
            }),
            Err(e) => return Err(e),
        }
    }
    let out = DumpOutput { processes };
    let written = if opts.json {
        write_json(&out)
    } else {
        write_text(&out)
    };
    match written {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| Error::io("writing output", e)),
    }
}

fn dump_process(pid: i32, opts: &DumpOptions) -> Result<ProcessDump> {
    let command = procfs::cmdline(pid).map_err(|e| Error::proc_io(pid, e))?;
    let binary = python::locate(pid)?;
    let mut reader = StackReader::new(ProcessMemory::new(pid), binary)?;
    if opts.verbose {
        let l = &reader.layout;
        eprintln!(
            "memspy: pid {pid}: Python {} ({} from {}), _PyRuntime at {:#x}, offsets from {}",
            l.version,
            reader.binary.path,
            reader.binary.version_source,
            reader.binary.runtime_addr,
            if l.from_debug_offsets {
                "_Py_DebugOffsets"
            } else {
                "python-offsets table"
            }
        );
        for note in &l.notes {
            eprintln!("memspy: pid {pid}: debug offsets differ from the table: {note}");
        }
    }
    // Whether each thread is running, read before stopping the process (stopped threads all
    // look idle).
    let states: Vec<(i32, bool)> = procfs::threads(pid)
        .map_err(|e| Error::proc_io(pid, e))?
        .into_iter()
        .filter_map(|tid| {
            procfs::thread_stat(pid, tid)
                .ok()
                .map(|s| (tid, s.is_running()))
        })
        .collect();
    let mut snapshot = Snapshot::default();
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let _stopped = if opts.nonblocking {
            None
        } else {
            Some(lock::stop(pid)?)
        };
        match reader.read(&mut snapshot) {
            Ok(()) => {
                last_error = None;
                break;
            }
            Err(WalkError::Exited) => return Err(Error::Exited(pid)),
            Err(WalkError::Denied) => return Err(Error::PermissionDenied(pid)),
            Err(e @ WalkError::Raced(_)) => last_error = Some(e),
        }
    }
    if let Some(e) = last_error {
        return Err(Error::Other(format!(
            "could not read a consistent stack from process {pid} in {ATTEMPTS} attempts ({e})"
        )));
    }
    let threads = snapshot
        .threads
        .iter()
        .map(|t| ThreadDump {
            thread_id: t.thread_id,
            native_id: t.native_id,
            name: t.native_id.and_then(|tid| procfs::thread_name(pid, tid)),
            interpreter: t.interpreter,
            holds_gil: t.holds_gil,
            active: t
                .native_id
                .and_then(|tid| states.iter().find(|s| s.0 == tid).map(|s| s.1)),
            truncated: t.truncated,
            frames: snapshot
                .frames_of(t)
                .iter()
                .map(|f| {
                    let info = reader.code_info(f.code);
                    FrameDump {
                        function: info.qualname.to_string(),
                        name: info.name.to_string(),
                        file: info.filename.to_string(),
                        line: f.line,
                    }
                })
                .collect(),
        })
        .collect();
    Ok(ProcessDump {
        pid,
        command,
        python: Some(PythonInfo {
            version: reader.layout.version.to_string(),
            binary: reader.binary.path.clone(),
            version_source: reader.binary.version_source,
            offsets: if reader.layout.from_debug_offsets {
                "_Py_DebugOffsets"
            } else {
                "python-offsets"
            },
        }),
        error: None,
        threads,
    })
}

fn write_json(out: &DumpOutput) -> io::Result<()> {
    let mut w = io::stdout().lock();
    serde_json::to_writer_pretty(&mut w, out)?;
    writeln!(w)
}

fn write_text(out: &DumpOutput) -> io::Result<()> {
    let mut w = io::BufWriter::new(io::stdout().lock());
    for (i, p) in out.processes.iter().enumerate() {
        if i > 0 {
            writeln!(w)?;
        }
        writeln!(w, "Process {}: {}", p.pid, p.command)?;
        match (&p.python, &p.error) {
            (Some(py), _) => writeln!(w, "Python {} ({})", py.version, py.binary)?,
            (None, Some(e)) => {
                writeln!(w, "  skipped: {e}")?;
                continue;
            }
            (None, None) => {}
        }
        for t in &p.threads {
            let mut flags = Vec::new();
            match t.active {
                Some(true) => flags.push("active"),
                Some(false) => flags.push("idle"),
                None => {}
            }
            if t.holds_gil {
                flags.push("holds the GIL");
            }
            if t.interpreter != 0 {
                flags.push("subinterpreter");
            }
            let id = t
                .native_id
                .map_or(format!("{:#x}", t.thread_id), |n| n.to_string());
            let name = t
                .name
                .as_deref()
                .map(|n| format!(" \"{n}\""))
                .unwrap_or_default();
            writeln!(w, "\nThread {id}{name} ({})", flags.join(", "))?;
            for f in &t.frames {
                writeln!(w, "    {} ({}:{})", f.function, f.file, f.line)?;
            }
            if t.truncated {
                writeln!(w, "    ... (deeper frames not shown)")?;
            }
        }
    }
    w.flush()
}
