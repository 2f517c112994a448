//! `memspy dump`: every Python thread's stack of a live process, now.

use std::io::{self, Write};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::output::pstree::{self, TaskNode};
use crate::output::text::{message, visible};
use crate::python::threadnames::ThreadNames;
use crate::python::units::{ThreadRef, Unit, UnitKind, UnitState, Units};
use crate::python::{self, Snapshot, StackReader, WalkError};
use crate::target::threads::ThreadMap;
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
    /// Print the await tree of asyncio tasks as `python -m asyncio pstree` does.
    pub pstree: bool,
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
    /// Greenlets or tasks whose thread could not be told, and those not started yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    other_units: Vec<UnitDump>,
    /// What memspy found of greenlet's module, or why it does not read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    greenlet: Option<String>,
    /// Its asyncio tasks, for the await tree.
    #[serde(skip)]
    tasks: Vec<TaskNode>,
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
    /// The kernel (host) thread id, proven to be one of the process's threads.
    native_id: Option<i32>,
    /// The id the process's own memory gives (its pid namespace's id), when it differs from
    /// `native_id` or names none of its threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_id: Option<i32>,
    /// `threading.Thread.name`, else the kernel's name.
    name: Option<String>,
    /// The kernel's name (`comm`).
    kernel_name: Option<String>,
    interpreter: i64,
    holds_gil: bool,
    active: Option<bool>,
    truncated: bool,
    frames: Vec<FrameDump>,
    /// Its greenlets or tasks: the running one first (its frames are the thread's), then the
    /// waiting ones with the frames they wait in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    units: Vec<UnitDump>,
}

#[derive(Serialize)]
struct UnitDump {
    kind: &'static str,
    /// The object's address.
    id: String,
    name: String,
    /// running, waiting or not started.
    state: &'static str,
    truncated: bool,
    frames: Vec<FrameDump>,
    /// asyncio tasks: the ids of the tasks (or futures) that await it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    awaited_by: Vec<String>,
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
                other_units: Vec::new(),
                greenlet: None,
                tasks: Vec::new(),
            }),
            Err(e) => return Err(e),
        }
    }
    if opts.pstree {
        return print_pstree(&processes);
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

/// What `memspy dump --json --nonblocking --pid PID` prints, as a value (for
/// `record --trigger-*`, which reads a process it records without pausing it again).
pub fn dump_json(pid: i32) -> Result<serde_json::Value> {
    let opts = DumpOptions {
        pid,
        subprocesses: false,
        json: true,
        nonblocking: true,
        verbose: false,
        pstree: false,
    };
    let out = DumpOutput {
        processes: vec![dump_process(pid, &opts)?],
    };
    serde_json::to_value(&out).map_err(|e| Error::Usage(format!("describing the stacks: {e}")))
}

/// The await tree of every process's asyncio tasks, as `python -m asyncio pstree` prints it;
/// an await graph with a cycle is an error, as there.
fn print_pstree(processes: &[ProcessDump]) -> Result<()> {
    let mut out = String::new();
    for p in processes {
        match pstree::render(&p.tasks) {
            Ok(lines) => {
                for l in lines {
                    out.push_str(&l);
                    out.push('\n');
                }
            }
            Err(cycles) => {
                let cycles: Vec<String> = cycles
                    .iter()
                    .map(|c| {
                        format!(
                            "cycle: {}",
                            c.iter().map(|n| visible(n)).collect::<Vec<_>>().join(" → ")
                        )
                    })
                    .collect();
                return Err(Error::Usage(format!(
                    "process {}: the await graph of its tasks has cycles, so it is not a tree ({})",
                    p.pid,
                    cycles.join("; ")
                )));
            }
        }
    }
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
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
            visible(&reader.binary.path),
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
    let mut units = Units::new(pid);
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let _stopped = if opts.nonblocking {
            None
        } else {
            Some(lock::stop(pid)?)
        };
        let read = reader.read(&mut snapshot).and_then(|()| {
            let threads = thread_refs(pid, &snapshot);
            units.read(&mut reader, &threads, crate::sample::now_ns(), true)
        });
        match read {
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
    // The ids in the process's memory are its own (a pid namespace's, or anything it wrote
    // there): only those that name one of its threads are shown as kernel ids.
    let mut thread_map = ThreadMap::new(pid);
    let mut names = ThreadNames::default();
    names.refresh(
        reader.memory(),
        &reader.layout,
        reader.binary.runtime_addr,
        0,
    );
    let mut placed = vec![false; units.units.len()];
    let threads = snapshot
        .threads
        .iter()
        .map(|t| {
            let host = t
                .native_id
                .and_then(|id| thread_map.host_tid(id, crate::sample::now_ns()));
            let mut dump = thread_dump(
                &reader,
                &snapshot,
                &states,
                pid,
                t,
                host,
                names.name_of(t.thread_id, host == Some(pid)),
            );
            // The running unit first, then the waiting ones, each in the order found.
            for running in [true, false] {
                for (i, u) in units.units.iter().enumerate() {
                    if u.tstate == Some(t.tstate)
                        && (u.state == UnitState::Running) == running
                        && u.state != UnitState::NotStarted
                    {
                        placed[i] = true;
                        let frames = if running { &dump.frames[..] } else { &[][..] };
                        let unit = unit_dump(&reader, &units, u, frames);
                        dump.units.push(unit);
                    }
                }
            }
            dump
        })
        .collect();
    let other_units = units
        .units
        .iter()
        .zip(&placed)
        .filter(|(_, &p)| !p)
        .map(|(u, _)| unit_dump(&reader, &units, u, &[]))
        .collect();
    let greenlet = match (units.greenlet_module(), &units.refused) {
        (Some((path, version, source)), _) => Some(format!(
            "greenlet {version} ({path}; version from {source})"
        )),
        (None, Some(why)) => Some(why.clone()),
        (None, None) => None,
    };
    if let Some(why) = &units.tasks_refused {
        eprintln!("memspy: note: process {pid}: {why}");
    }
    let tasks = units
        .units
        .iter()
        .filter(|u| u.kind == UnitKind::Task)
        .map(|u| TaskNode {
            id: u.addr,
            name: u.name.to_string(),
            stack: frame_dumps(&reader, &units.snapshot.frames[u.frames.clone()])
                .iter()
                .map(|f| pstree::frame_label(&f.function, &f.file, f.line as i64))
                .collect(),
            awaited_by: u.awaited_by.clone(),
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
        other_units,
        greenlet,
        tasks,
    })
}

/// The threads of a snapshot as the units reader needs them.
fn thread_refs(pid: i32, snapshot: &Snapshot) -> Vec<ThreadRef> {
    let mut map = ThreadMap::new(pid);
    snapshot
        .threads
        .iter()
        .map(|t| ThreadRef {
            tstate: t.tstate,
            ident: t.thread_id,
            main: t
                .native_id
                .and_then(|id| map.host_tid(id, crate::sample::now_ns()))
                == Some(pid),
        })
        .collect()
}

fn frame_dumps(reader: &StackReader<ProcessMemory>, frames: &[python::Frame]) -> Vec<FrameDump> {
    frames
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
        .collect()
}

/// One unit; a running one shows its thread's frames (`thread_frames`).
fn unit_dump(
    reader: &StackReader<ProcessMemory>,
    units: &Units,
    u: &Unit,
    thread_frames: &[FrameDump],
) -> UnitDump {
    UnitDump {
        kind: u.kind.name(),
        id: format!("{:#x}", u.addr),
        name: u.name.to_string(),
        state: match u.state {
            UnitState::Running => "running",
            UnitState::Waiting => "waiting",
            UnitState::NotStarted => "not started",
        },
        truncated: u.truncated,
        awaited_by: u.awaited_by.iter().map(|a| format!("{a:#x}")).collect(),
        frames: match u.state {
            UnitState::Running => thread_frames
                .iter()
                .map(|f| FrameDump {
                    function: f.function.clone(),
                    name: f.name.clone(),
                    file: f.file.clone(),
                    line: f.line,
                })
                .collect(),
            _ => frame_dumps(reader, &units.snapshot.frames[u.frames.clone()]),
        },
    }
}

/// One thread of a snapshot, `host` being its proven kernel id.
fn thread_dump(
    reader: &StackReader<ProcessMemory>,
    snapshot: &Snapshot,
    states: &[(i32, bool)],
    pid: i32,
    t: &python::ThreadStack,
    host: Option<i32>,
    python_name: Option<&str>,
) -> ThreadDump {
    let kernel_name = host.and_then(|tid| procfs::thread_name(pid, tid));
    ThreadDump {
        thread_id: t.thread_id,
        native_id: host,
        namespace_id: t.native_id.filter(|&id| Some(id) != host),
        name: python_name.map(str::to_string).or(kernel_name.clone()),
        kernel_name,
        interpreter: t.interpreter,
        holds_gil: t.holds_gil,
        active: host.and_then(|tid| states.iter().find(|s| s.0 == tid).map(|s| s.1)),
        truncated: t.truncated,
        frames: frame_dumps(reader, snapshot.frames_of(t)),
        units: Vec::new(),
    }
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
        // Everything but the numbers is the target's own text: made visible, never raw.
        writeln!(w, "Process {}: {}", p.pid, visible(&p.command))?;
        match (&p.python, &p.error) {
            (Some(py), _) => writeln!(w, "Python {} ({})", py.version, visible(&py.binary))?,
            (None, Some(e)) => {
                writeln!(w, "  skipped: {}", message(e))?;
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
            let id = match (t.native_id, t.namespace_id) {
                (Some(n), Some(ns)) => format!("{n} ({ns} in its pid namespace)"),
                (Some(n), None) => n.to_string(),
                (None, Some(claimed)) => format!(
                    "{:#x} (its memory names thread {claimed}, which is not one of its threads)",
                    t.thread_id
                ),
                (None, None) => format!("{:#x}", t.thread_id),
            };
            let name = t
                .name
                .as_deref()
                .map(|n| format!(" \"{}\"", visible(n)))
                .unwrap_or_default();
            writeln!(w, "\nThread {id}{name} ({})", flags.join(", "))?;
            for f in &t.frames {
                writeln!(
                    w,
                    "    {} ({}:{})",
                    visible(&f.function),
                    visible(&f.file),
                    f.line
                )?;
            }
            if t.truncated {
                writeln!(w, "    ... (deeper frames not shown)")?;
            }
            for u in &t.units {
                write_unit(&mut w, u)?;
            }
        }
        if !p.other_units.is_empty() {
            writeln!(w, "\nOn no thread memspy could tell, or not started:")?;
            for u in &p.other_units {
                write_unit(&mut w, u)?;
            }
        }
        if let Some(g) = &p.greenlet {
            writeln!(w, "\n({})", visible(g))?;
        }
    }
    w.flush()
}

fn write_unit(w: &mut impl Write, u: &UnitDump) -> io::Result<()> {
    writeln!(
        w,
        "\n  {} {} {} ({})",
        u.kind,
        u.id,
        visible(&u.name),
        u.state
    )?;
    for f in &u.frames {
        writeln!(
            w,
            "      {} ({}:{})",
            visible(&f.function),
            visible(&f.file),
            f.line
        )?;
    }
    if u.truncated {
        writeln!(w, "      ... (could not be read whole)")?;
    }
    Ok(())
}
