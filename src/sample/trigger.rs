//! `record --trigger-rss SIZE` and `--trigger-growth SIZE/TIME`: acting when a process's
//! memory crosses a line, without code in the target (memory_profiler's `--pdb-mmem` needs
//! its own code inside the process).
//!
//! The sampler hands each process's RSS at each tick to [`Triggers::check`]. A trigger fires
//! when the RSS reaches the limit (or grew by SIZE within TIME: the RSS minus the lowest RSS
//! of the last TIME), once per crossing: it re-arms when the RSS is back below 90 % of the
//! limit (or the growth below half). Firing marks the recording (an extended event, so `plot`
//! and the report show it) and hands the moment to a thread that, without holding up
//! sampling:
//! - reads every thread's stack as `memspy dump --json` does (without pausing the target);
//! - reads the recording so far and lists the process's top functions by retained memory;
//! - writes both to `memspy-trigger-PID-YYYYmmdd-HHMMSS.json` (in `--trigger-dir`, default
//!   the current folder), prints one line, and runs `--trigger-exec CMD` (with `sh -c`) with
//!   `MEMSPY_PID`, `MEMSPY_DUMP`, `MEMSPY_REASON` and `MEMSPY_BYTES` in its environment.
//!
//! The process acted on is one the sampler proved to be a recorded process (never a pid read
//! from the target's memory), and it is checked again (pid and start time) right before the
//! dump and right before the command: a process that ended meanwhile, its pid maybe reused,
//! gets neither. Dump files are readable by their owner only, as private recordings are.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use crate::analysis::functions::by_function;
use crate::analysis::{attribute, Filter, Metric};
use crate::output::text::message;
use crate::output::units::bytes;
use crate::recording::{Recording, Writer};
use crate::target::family::ProcessKey;
use crate::FastMap;

/// What to watch and what to do.
#[derive(Clone, Debug, Default)]
pub struct TriggerConfig {
    pub rss: Option<u64>,
    /// Growth of this many bytes within this span.
    pub growth: Option<(u64, Duration)>,
    pub exec: Option<String>,
    /// Where dump files go.
    pub dir: PathBuf,
    /// The recording being written: one file, or the `%n` template of a rotated one.
    pub recording: PathBuf,
    pub rotated: bool,
}

/// The state of one process.
#[derive(Default)]
struct Watch {
    rss_armed: bool,
    growth_armed: bool,
    /// The candidates for the lowest RSS of the growth span: (time µs, RSS), times and RSS
    /// both increasing, so the front is the lowest (a sliding minimum, O(1) per tick).
    lows: VecDeque<(u64, u64)>,
}

/// At most this many candidates per process; past it, a reading no lower than the newest
/// candidate and close to it in time is left out (the lowest RSS then shows a little late).
const MAX_LOWS: usize = 4096;

/// One crossing, for the dump thread.
struct Crossing {
    key: ProcessKey,
    process: u32,
    reason: &'static str,
    bytes: u64,
    limit: u64,
    /// `--trigger-growth`'s span.
    span: Option<Duration>,
}

pub struct Triggers {
    config: TriggerConfig,
    watches: FastMap<u32, Watch>,
    tx: Option<Sender<Crossing>>,
    worker: Option<JoinHandle<()>>,
    pub fired: u64,
}

impl Triggers {
    pub fn new(config: TriggerConfig) -> Triggers {
        let (tx, rx) = channel::<Crossing>();
        let worker_config = config.clone();
        let worker = std::thread::Builder::new()
            .name("memspy-trigger".into())
            .spawn(move || {
                for c in rx {
                    act(&worker_config, &c);
                }
            })
            .expect("start the trigger thread");
        Triggers {
            config,
            watches: FastMap::default(),
            tx: Some(tx),
            worker: Some(worker),
            fired: 0,
        }
    }

    /// Process `process` (`key`) had `rss` bytes at `time_us`.
    pub fn check(
        &mut self,
        writer: &mut Writer,
        process: u32,
        key: ProcessKey,
        time_us: u64,
        rss: u64,
    ) -> io::Result<()> {
        let w = self.watches.entry(process).or_insert_with(|| Watch {
            rss_armed: true,
            growth_armed: true,
            lows: VecDeque::new(),
        });
        let mut fire: Vec<(u8, &'static str, u64, u64, Option<Duration>)> = Vec::new();
        if let Some(limit) = self.config.rss {
            if w.rss_armed && rss >= limit {
                w.rss_armed = false;
                fire.push((0, "rss", rss, limit, None));
            } else if !w.rss_armed && (rss as f64) < 0.9 * limit as f64 {
                w.rss_armed = true;
            }
        }
        if let Some((size, span)) = self.config.growth {
            let span_us = span.as_micros() as u64;
            let crowded = w.lows.len() >= MAX_LOWS
                && w.lows
                    .back()
                    .is_some_and(|&(t, v)| v <= rss && time_us < t + span_us / MAX_LOWS as u64);
            if !crowded {
                while w.lows.back().is_some_and(|&(_, v)| v >= rss) {
                    w.lows.pop_back();
                }
                w.lows.push_back((time_us, rss));
            }
            while w.lows.len() > 1 && w.lows.front().is_some_and(|&(t, _)| t + span_us < time_us) {
                w.lows.pop_front();
            }
            let low = w.lows.front().map_or(rss, |l| l.1);
            let grown = rss.saturating_sub(low);
            if w.growth_armed && grown >= size {
                w.growth_armed = false;
                fire.push((1, "growth", grown, size, Some(span)));
            } else if !w.growth_armed && grown < size / 2 {
                w.growth_armed = true;
            }
        }
        for (code, reason, value, limit, span) in fire {
            writer.trigger(process, time_us, code, value, limit)?;
            // The dump lists what the recording holds so far: all of it, on disk.
            writer.flush()?;
            self.fired += 1;
            if let Some(tx) = &self.tx {
                let _ = tx.send(Crossing {
                    key,
                    process,
                    reason,
                    bytes: value,
                    limit,
                    span,
                });
            }
        }
        Ok(())
    }

    /// Process `process` ended: nothing more to watch.
    pub fn forget(&mut self, process: u32) {
        self.watches.remove(&process);
    }

    /// Wait for the dumps of crossings already seen.
    pub fn finish(mut self) -> u64 {
        drop(self.tx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        self.fired
    }
}

/// The process's top functions by retained memory in the recording's current file so far.
fn top_retained(config: &TriggerConfig, pid: i32) -> Value {
    let path = crate::sample::newest_part(&config.recording, config.rotated);
    let rec = match crate::recording::reader::read_regular_file(&path)
        .map_err(|e| e.to_string())
        .and_then(|d| Recording::parse(&d))
    {
        Ok(r) => r,
        Err(e) => return json!({"error": format!("reading {}: {e}", path.display())}),
    };
    let filter = Filter {
        pid: Some(pid),
        ..Filter::default()
    };
    let attr = attribute(&rec, &filter);
    let top: Vec<Value> = by_function(&rec, &attr, Metric::Retained)
        .into_iter()
        .filter(|f| f.total_value > 0.0)
        .take(10)
        .map(|f| {
            json!({
                "function": f.qualname,
                "file": f.file,
                "retained": f.total_value,
                "retained_self": f.self_value,
            })
        })
        .collect();
    Value::Array(top)
}

/// Write the dump file of a crossing, say so, run the command.
fn act(config: &TriggerConfig, c: &Crossing) {
    let pid = c.key.pid;
    let now = chrono::Local::now();
    let stamp = now.format("%Y%m%d-%H%M%S").to_string();
    let mut path = config
        .dir
        .join(format!("memspy-trigger-{pid}-{stamp}.json"));
    for n in 2.. {
        if !path.exists() {
            break;
        }
        path = config
            .dir
            .join(format!("memspy-trigger-{pid}-{stamp}-{n}.json"));
    }
    let what = match c.reason {
        "rss" => format!(
            "--trigger-rss {} at {}",
            bytes(c.limit as f64),
            bytes(c.bytes as f64)
        ),
        _ => format!(
            "--trigger-growth {} in {:.0} s (grew {})",
            bytes(c.limit as f64),
            c.span.map_or(0.0, |s| s.as_secs_f64()),
            bytes(c.bytes as f64)
        ),
    };
    if !c.key.alive() {
        eprintln!(
            "{}",
            message(&format!(
                "memspy: process {pid} crossed {what}, but ended before its stacks could be read: no dump"
            ))
        );
        return;
    }
    let dump = match crate::commands::dump::dump_json(pid) {
        Ok(v) => v,
        Err(e) => json!({"error": e.to_string()}),
    };
    let doc = json!({
        "pid": pid,
        "time": now.to_rfc3339(),
        "reason": c.reason,
        "bytes": c.bytes,
        "limit": c.limit,
        "span_s": c.span.map(|s| s.as_secs_f64()),
        "recording_process": c.process,
        "top_retained": top_retained(config, pid),
        "dump": dump,
    });
    let written = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
    }
    .and_then(|f| {
        let mut w = io::BufWriter::new(f);
        serde_json::to_writer_pretty(&mut w, &doc)?;
        io::Write::flush(&mut w)
    });
    match written {
        Ok(()) => eprintln!(
            "{}",
            message(&format!(
                "memspy: process {pid} crossed {what}: wrote {}",
                path.display()
            ))
        ),
        Err(e) => eprintln!(
            "{}",
            message(&format!(
                "memspy: process {pid} crossed {what}, but {} could not be written: {e}",
                path.display()
            ))
        ),
    }
    if let Some(cmd) = &config.exec {
        if c.key.alive() {
            run_exec(cmd, c, &path);
        } else {
            eprintln!(
                "{}",
                message(&format!(
                    "memspy: process {pid} ended before --trigger-exec could run: not run"
                ))
            );
        }
    }
}

fn run_exec(cmd: &str, c: &Crossing, dump: &Path) {
    let spawned = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("MEMSPY_PID", c.key.pid.to_string())
        .env("MEMSPY_DUMP", dump)
        .env("MEMSPY_REASON", c.reason)
        .env("MEMSPY_BYTES", c.bytes.to_string())
        .stdin(std::process::Stdio::null())
        .spawn();
    match spawned {
        // Reaped by a thread of its own: a slow command holds nothing up.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => eprintln!(
            "{}",
            message(&format!("memspy: --trigger-exec could not run: {e}"))
        ),
    }
}
