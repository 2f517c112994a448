//! `memspy record`: sample a program (launched or attached to) into a recording file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use signal_hook::iterator::SignalsInfo;
use signal_hook::low_level::siginfo::Cause;

use crate::error::{Error, Result};
use crate::output::units::{bytes, count};
use crate::recording::{Meta, Writer};
use crate::sample::{Config, MemoryMode, Progress, Root, Sampler};
use crate::target::launch::{shell_status, Launched};

/// Options of `memspy record`.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub pid: Option<i32>,
    pub command: Vec<String>,
    pub output: Option<PathBuf>,
    pub rate_hz: f64,
    pub duration: Option<f64>,
    pub subprocesses: bool,
    pub nonblocking: bool,
    pub memory: MemoryMode,
    /// Sample on memory events (page faults, frees) as well as on ticks.
    pub memory_events: bool,
    /// Page faults per fault sample, at least.
    pub fault_period: u64,
    /// Read greenlets and asyncio tasks too.
    pub tasks: bool,
    /// End the recording when its file reaches this many bytes.
    pub max_size: Option<u64>,
    /// Push a pprof profile of every window to a backend (`--push`).
    pub push: Option<PushOptions>,
    pub triggers: TriggerOptions,
    /// Serve pprof profiles over HTTP here (`--serve`).
    pub serve: Option<std::net::SocketAddr>,
}

/// `--trigger-rss`, `--trigger-growth`, `--trigger-exec`, `--trigger-dir`.
#[derive(Clone, Debug, Default)]
pub struct TriggerOptions {
    pub rss: Option<u64>,
    pub growth: Option<(u64, Duration)>,
    pub exec: Option<String>,
    pub dir: Option<PathBuf>,
}

/// `--push URL --push-every T --label k=v,...`.
#[derive(Clone, Debug)]
pub struct PushOptions {
    pub url: String,
    pub every: Duration,
    /// As given: `k=v` items, comma-separated or one per flag.
    pub labels: Vec<String>,
}

/// A `-o none` recording (with `--push`) rotates in files this large, of which the pusher
/// keeps the newest two.
const NONE_PART_SIZE: u64 = 16 << 20;

/// The pushed series' labels from `--label` items, `host` added; and its name (the `service`
/// label, else the program's name).
fn push_labels(opts: &PushOptions, program: &str) -> Result<(String, Vec<(String, String)>)> {
    if !(opts.url.starts_with("http://") || opts.url.starts_with("https://")) {
        return Err(Error::Usage(format!(
            "--push takes a URL starting with http:// or https:// (http://pyroscope:4040), not {:?}",
            opts.url
        )));
    }
    let mut labels: Vec<(String, String)> = Vec::new();
    for item in opts.labels.iter().flat_map(|l| l.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(Error::Usage(format!(
                "--label takes k=v items (service=checkout,env=prod), not {item:?}"
            )));
        };
        let ok = |t: &str| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':'))
        };
        if !ok(k.trim()) || !ok(v.trim()) {
            return Err(Error::Usage(format!(
                "--label {item:?}: names and values are letters, digits and _-./: only"
            )));
        }
        labels.push((k.trim().to_string(), v.trim().to_string()));
    }
    if !labels.iter().any(|(k, _)| k == "host") {
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            labels.push(("host".into(), host.trim().to_string()));
        }
    }
    let name = match labels.iter().position(|(k, _)| k == "service") {
        Some(i) => labels.remove(i).1,
        None => program.to_string(),
    };
    Ok((name, labels))
}

/// Page faults per fault sample by default: 64 KiB of 4 KiB pages (see `cargo bench --bench
/// record` and the README for how it was chosen).
pub const DEFAULT_FAULT_PERIOD: u64 = 16;

/// `memspy-YYYYmmdd-HHMMSS.msp` in the current folder.
pub fn default_output() -> PathBuf {
    PathBuf::from(
        chrono::Local::now()
            .format("memspy-%Y%m%d-%H%M%S.msp")
            .to_string(),
    )
}

/// Record; returns the exit status memspy should end with.
pub fn run(opts: &RecordOptions) -> Result<u8> {
    if !(opts.rate_hz > 0.0 && opts.rate_hz <= 100_000.0) {
        return Err(Error::Usage(format!(
            "the rate must be between 0 and 100000 Hz, not {}",
            opts.rate_hz
        )));
    }
    if !(1..=1 << 16).contains(&opts.fault_period) {
        return Err(Error::Usage(format!(
            "the fault period must be between 1 and 65536 pages, not {}",
            opts.fault_period
        )));
    }
    if let Some(d) = opts.duration {
        if !(d > 0.0 && d.is_finite()) {
            return Err(Error::Usage(format!(
                "the duration must be a positive number of seconds, not {d}"
            )));
        }
    }
    if opts.max_size.is_some_and(|m| m < 64 << 10) {
        return Err(Error::Usage(
            "--max-size must be at least 64KiB (a recording's description alone takes some)".into(),
        ));
    }
    // The pushed series (checked before anything starts).
    let push_series = match &opts.push {
        Some(push) => {
            let program = opts
                .command
                .first()
                .and_then(|c| std::path::Path::new(c).file_name())
                .map_or("python".into(), |n| n.to_string_lossy().into_owned());
            Some(push_labels(push, &program)?)
        }
        None => None,
    };
    // `-o none` with --push: a private folder of rotated files that the pusher deletes once
    // sent, so an attach can run for weeks.
    let no_file = opts.output.as_deref() == Some(std::path::Path::new("none"));
    if no_file && opts.push.is_none() {
        return Err(Error::Usage(
            "-o none keeps no recording: it is for --push (give a file name otherwise)".into(),
        ));
    }
    let scratch = if no_file {
        Some(crate::commands::private_folder("push")?)
    } else {
        None
    };
    let template = match &scratch {
        Some(dir) => dir.join("run-%n.msp"),
        None => opts.output.clone().unwrap_or_else(default_output),
    };
    let max_size = match (&scratch, opts.max_size) {
        (Some(_), None) => Some(NONE_PART_SIZE),
        (_, m) => m,
    };
    // `-o run-%n.msp`: a rotated recording, files 1, 2, ... of at most --max-size each.
    let rotate = template
        .as_os_str()
        .as_encoded_bytes()
        .windows(2)
        .any(|w| w == b"%n");
    if rotate && max_size.is_none() {
        return Err(Error::Usage(
            "%n in -o numbers the files of a rotated recording: give --max-size too".into(),
        ));
    }
    let output = if rotate {
        crate::sample::part_path(&template, 1)
    } else {
        template.clone()
    };
    let triggers = triggers_config(&opts.triggers, &template, rotate)?;
    let (attach, launch) = (opts.pid.is_some(), !opts.command.is_empty());
    if attach == launch {
        return Err(Error::Usage(
            "give either --pid PID or a command after --".into(),
        ));
    }
    let meta = Meta {
        memspy_version: env!("CARGO_PKG_VERSION").to_string(),
        start_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        command: std::env::args().collect(),
        rate_hz: opts.rate_hz,
        blocking: !opts.nonblocking,
        memory: opts.memory.name().to_string(),
        subprocesses: opts.subprocesses,
        rollup_interval_ms: None,
        memory_events: opts.memory_events,
        fault_period: opts.fault_period,
        tasks: opts.tasks,
        part: rotate.then_some(1),
    };
    // The file first: if it cannot be written (a full disk, a folder that is not writable),
    // nothing is started and no empty file is left behind.
    let mut writer = Writer::create(&output, &meta).map_err(|e| {
        discard(&output);
        Error::io(
            format!(
                "cannot write the recording {}{}",
                output.display(),
                if opts.command.is_empty() {
                    ""
                } else {
                    " (the program was not started)"
                }
            ),
            e,
        )
    })?;
    // Pulled profiles end where the file does: hand records to it every 200 ms.
    if opts.serve.is_some() {
        writer.set_flush_interval(200_000);
    }
    let server = match opts.serve {
        Some(addr) => Some(
            crate::output::serve::Server::start(crate::output::serve::ServeConfig {
                addr,
                template: template.clone(),
                rotated: rotate,
            })
            .map_err(|e| {
                discard(&output);
                Error::Usage(format!("--serve {addr}: cannot listen there: {e}"))
            })?,
        ),
        None => None,
    };
    if let Some(s) = &server {
        eprintln!(
            "memspy: serving pprof profiles at http://{}/debug/pprof/profile?seconds=N{}",
            s.addr,
            if s.addr.ip().is_loopback() {
                ""
            } else {
                " (not a loopback address: anyone who can reach it reads the profiles)"
            }
        );
    }
    let root = match opts.pid {
        Some(pid) => Root::Attach(pid),
        None => match Launched::spawn(&opts.command) {
            Ok(l) => Root::Launch(l),
            Err(e) => {
                drop(writer);
                discard(&output);
                return Err(e);
            }
        },
    };
    let stop = Arc::new(AtomicBool::new(false));
    let child = Arc::new(AtomicI32::new(match &root {
        Root::Launch(l) => l.pid(),
        Root::Attach(_) => 0,
    }));
    watch_signals(stop.clone(), child.clone())?;
    let config = Config {
        rate_hz: opts.rate_hz,
        duration: opts.duration.map(Duration::from_secs_f64),
        blocking: !opts.nonblocking,
        memory: opts.memory,
        subprocesses: opts.subprocesses,
        memory_events: opts.memory_events,
        fault_period: opts.fault_period,
        tasks: opts.tasks,
        max_size,
        rotate: rotate.then(|| template.clone()),
        announce: !std::io::stderr().is_terminal(),
        triggers,
    };
    let launched = matches!(root, Root::Launch(_));
    let resume = match &root {
        Root::Launch(l) => Some(l.pid()),
        Root::Attach(_) => None,
    };
    let sampler = match Sampler::new(config, writer, root, &stop) {
        Ok(s) => s,
        Err(e) => {
            discard(&output);
            return Err(e);
        }
    };
    if let Some(pid) = resume {
        crate::target::launch::resume(pid)?;
    }
    if !std::io::stderr().is_terminal() {
        eprintln!(
            "memspy: recording to {} at {} Hz, {}{}",
            crate::output::text::message(&output.to_string_lossy()),
            opts.rate_hz,
            if opts.nonblocking {
                "non-blocking"
            } else {
                "blocking (threads that ran are paused for each sample)"
            },
            if opts.memory_events {
                ", with memory events"
            } else {
                ""
            }
        );
    }
    let pusher = match (&opts.push, push_series) {
        (Some(push), Some((name, labels))) => {
            if scratch.is_none() && max_size.is_none() {
                eprintln!(
                    "memspy: note: --push holds the recording's samples in memory to attribute each window; for a long run, bound it with --max-size (and -o run-%n.msp) or keep none with -o none"
                );
            }
            if !std::io::stderr().is_terminal() {
                eprintln!(
                    "memspy: pushing a profile every {:.0} s to {} as {}",
                    push.every.as_secs_f64(),
                    crate::output::text::message(&push.url),
                    crate::output::text::message(&crate::output::push::series_name(&name, &labels))
                );
            }
            Some(crate::output::push::Pusher::start(
                crate::output::push::PushConfig {
                    url: push.url.clone(),
                    every: push.every,
                    name,
                    labels,
                    template: template.clone(),
                    rotated: rotate,
                    delete_parts: scratch.is_some(),
                },
                meta.start_unix_ns,
                opts.rate_hz,
            ))
        }
        _ => None,
    };
    let bar = progress_bar();
    let finished = sampler.run(|p| bar.set_message(progress_message(p)));
    bar.finish_and_clear();
    if let Some(s) = server {
        s.finish();
    }
    if let Some(pusher) = pusher {
        let r = pusher.finish();
        eprintln!(
            "memspy: pushed {} window(s){}{}",
            r.sent,
            if r.failed > 0 {
                format!(", {} failed", r.failed)
            } else {
                String::new()
            },
            if r.dropped > 0 {
                format!(", {} dropped (the backend was too slow)", r.dropped)
            } else {
                String::new()
            }
        );
    }
    if let Some(dir) = &scratch {
        let _ = std::fs::remove_dir_all(dir);
    }

    let p = &finished.progress;
    let mut failures: Vec<String> = p
        .failures
        .iter()
        .map(|(k, n)| format!("{n} {}", format!("{k:?}").to_lowercase()))
        .collect();
    if failures.is_empty() {
        failures.push("none".into());
    }
    let written = match &finished.write_error {
        None if scratch.is_some() => "pushed (-o none: no file kept)".to_string(),
        None if finished.parts > 1 => format!(
            "written to {} files, {} to {} ({})",
            finished.parts,
            output.display(),
            crate::sample::part_path(&template, finished.parts).display(),
            bytes(finished.bytes as f64)
        ),
        None => format!(
            "written to {} ({})",
            output.display(),
            bytes(finished.bytes as f64)
        ),
        Some(_) => "taken".to_string(),
    };
    eprintln!(
        "memspy: {} samples of {} process{} in {:.1} s {written}; failed samples: {}; {} of {} ticks missed (lateness max {:.1} ms)",
        count(p.samples),
        p.processes_seen,
        if p.processes_seen == 1 { "" } else { "es" },
        p.elapsed.as_secs_f64(),
        failures.join(", "),
        count(p.missed_ticks),
        count(p.ticks + p.missed_ticks),
        p.late_max.as_secs_f64() * 1e3,
    );
    if p.max_size_reached {
        eprintln!(
            "memspy: the recording reached --max-size ({}) and ended there",
            bytes(opts.max_size.unwrap_or(0) as f64)
        );
    }
    if p.processes_seen == 0 {
        eprintln!(
            "memspy: warning: no Python process was found{}",
            if opts.subprocesses {
                ""
            } else {
                " (if the command starts Python in a child process, add --subprocesses)"
            }
        );
    }
    if let Some(e) = &finished.write_error {
        let hint = if e.raw_os_error() == Some(libc::ENOSPC) {
            "; free some space, or record elsewhere with -o"
        } else {
            ""
        };
        eprintln!(
            "memspy: error: writing {} failed: {e}{hint}; the recording was cut short there and holds everything written before it",
            output.display(),
        );
    }
    let mut exit = finished.exit;
    if let Some(mut program) = finished.running {
        // The recording ended first (a write error, or -d): the program is still memspy's to
        // wait for, so its exit status is not lost and it is not left orphaned.
        eprintln!(
            "memspy: the recording has ended; waiting for the program (pid {}) to exit (Ctrl-C stops it)",
            program.pid()
        );
        exit = Some(program.wait());
    }
    if launched {
        // The program's own exit status, so memspy can wrap a CI job transparently.
        return Ok(exit.map_or(2, shell_status));
    }
    if finished.write_error.is_some() {
        return Ok(2);
    }
    Ok(0)
}

/// Remove a recording that holds nothing yet. Only a regular file: `-o /dev/null` (or any other
/// device) is not memspy's to remove.
/// The sampler's trigger settings, if any trigger is asked for.
fn triggers_config(
    t: &TriggerOptions,
    template: &std::path::Path,
    rotated: bool,
) -> Result<Option<crate::sample::trigger::TriggerConfig>> {
    if t.rss.is_none() && t.growth.is_none() {
        if t.exec.is_some() || t.dir.is_some() {
            return Err(Error::Usage(
                "--trigger-exec and --trigger-dir go with --trigger-rss or --trigger-growth".into(),
            ));
        }
        return Ok(None);
    }
    let dir = t.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "--trigger-dir {} is not a folder",
            dir.display()
        )));
    }
    Ok(Some(crate::sample::trigger::TriggerConfig {
        rss: t.rss,
        growth: t.growth,
        exec: t.exec.clone(),
        dir,
        recording: template.to_path_buf(),
        rotated,
    }))
}

fn discard(path: &std::path::Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        let _ = std::fs::remove_file(path);
    }
}

/// SIGINT and SIGTERM end an attached recording; with a launched program they are passed on to
/// it (unless the terminal already sent them to it), and the recording ends when it exits.
fn watch_signals(stop: Arc<AtomicBool>, child: Arc<AtomicI32>) -> Result<()> {
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM])
        .map_err(|e| Error::io("installing signal handlers", e))?;
    std::thread::spawn(move || {
        for info in signals.forever() {
            let pid = child.load(Ordering::Relaxed);
            if pid == 0 {
                stop.store(true, Ordering::Relaxed);
                continue;
            }
            // Ctrl-C in a terminal reaches the whole foreground process group, the program
            // included: only a signal sent to memspy alone (kill) is passed on.
            if !matches!(info.cause, Cause::Kernel) {
                // SAFETY-free: kill(2) through nix on a pid memspy started.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::try_from(info.signal).ok(),
                );
            }
        }
    });
    Ok(())
}

fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
    bar.set_style(
        ProgressStyle::with_template("{spinner} recording {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn progress_message(p: &Progress) -> String {
    format!(
        "· {} samples · {} process{} · RSS {} · {} errors · {} late ticks",
        count(p.samples),
        p.processes_now,
        if p.processes_now == 1 { "" } else { "es" },
        bytes(p.rss_now as f64),
        count(p.failed()),
        count(p.missed_ticks)
    )
}
