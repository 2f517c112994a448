//! `memspy top`: a live table of the functions burning CPU and growing memory in a running
//! service, refreshed every second, per process or merged.
//!
//! It is `record` and a report at once, with no second code path: the sampler records (never
//! pausing the target) into rotated files in a private temporary folder, flushed every 200 ms,
//! and every refresh reads what was appended to the newest file, attributes its last
//! `--window` seconds as `lines --from` would, and ranks the functions. On a terminal the table fills the screen (ratatui;
//! works over SSH and in tmux); with `--once`, or when stdout is not a terminal, it samples
//! for `--duration` seconds, prints one plain table and exits. A program `top` started (after
//! `--`) is sent SIGTERM when it quits.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row, Table};

use crate::analysis::findings::process_name;
use crate::analysis::functions::by_function;
use crate::analysis::{attribute, short_file, Filter, Metric};
use crate::error::{Error, Result};
use crate::output::text::one_line;
use crate::output::units::bytes;
use crate::recording::reader::LiveRecording;
use crate::recording::{Meta, Recording, Writer};
use crate::sample::{Config, MemoryMode, Root, Sampler};
use crate::target::launch::Launched;

#[derive(Clone, Debug)]
pub struct TopOptions {
    pub pid: Option<i32>,
    pub command: Vec<String>,
    pub subprocesses: bool,
    pub rate_hz: f64,
    /// The span each refresh looks at (the last this many seconds).
    pub window: Duration,
    /// One plain table after `duration`, then exit.
    pub once: bool,
    pub duration: Duration,
    pub sort: Column,
    /// Own and total shares of wall time instead of CPU time.
    pub wall: bool,
}

/// The columns a table can be sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Own,
    Total,
    Cpu,
    Growth,
    Retained,
}

impl Column {
    const ALL: [Column; 5] = [
        Column::Own,
        Column::Total,
        Column::Cpu,
        Column::Growth,
        Column::Retained,
    ];

    fn name(self) -> &'static str {
        match self {
            Column::Own => "own %",
            Column::Total => "total %",
            Column::Cpu => "CPU",
            Column::Growth => "growth/s",
            Column::Retained => "retained",
        }
    }
}

/// The files of a top session: rotated parts of this size in a private folder.
const PART_SIZE: u64 = 8 << 20;
const REFRESH: Duration = Duration::from_secs(1);
const FLUSH_US: u64 = 200_000;

/// One function's figures over the window.
#[derive(Clone, Debug, Default)]
struct FunctionRow {
    name: String,
    file: String,
    own: f64,
    total: f64,
    /// CPU cores used (own CPU time over the window's length).
    cpu: f64,
    growth_per_s: f64,
    retained: f64,
}

/// What one refresh shows.
#[derive(Default)]
struct View {
    /// One line per process: pid, role, RSS.
    processes: Vec<(i32, String, u64)>,
    rows: Vec<FunctionRow>,
    window_s: f64,
    recorded_s: f64,
    /// The end of the window (recording time, µs).
    last_us: u64,
}

pub fn run(opts: &TopOptions) -> Result<u8> {
    if opts.pid.is_some() != opts.command.is_empty() {
        return Err(Error::Usage(
            "give either --pid PID or a command after --".into(),
        ));
    }
    let dir = crate::commands::private_folder("top")?;
    let result = session(opts, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn session(opts: &TopOptions, dir: &Path) -> Result<u8> {
    let template = dir.join("top-%n.msp");
    let meta = Meta {
        memspy_version: env!("CARGO_PKG_VERSION").to_string(),
        start_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        command: std::env::args().collect(),
        rate_hz: opts.rate_hz,
        blocking: false,
        memory: MemoryMode::Rss.name().to_string(),
        subprocesses: opts.subprocesses,
        rollup_interval_ms: None,
        memory_events: true,
        fault_period: crate::commands::record::DEFAULT_FAULT_PERIOD,
        tasks: true,
        part: Some(1),
    };
    let mut writer = Writer::create(&crate::sample::part_path(&template, 1), &meta)
        .map_err(|e| Error::io("cannot write the session's recording", e))?;
    writer.make_private().ok();
    writer.set_flush_interval(FLUSH_US);
    let root = match opts.pid {
        Some(pid) => Root::Attach(pid),
        None => Root::Launch(Launched::spawn(&opts.command)?),
    };
    let resume = match &root {
        Root::Launch(l) => Some(l.pid()),
        Root::Attach(_) => None,
    };
    let config = Config {
        rate_hz: opts.rate_hz,
        duration: None,
        blocking: false,
        memory: MemoryMode::Rss,
        subprocesses: opts.subprocesses,
        memory_events: true,
        fault_period: crate::commands::record::DEFAULT_FAULT_PERIOD,
        tasks: true,
        max_size: Some(PART_SIZE),
        rotate: Some(template.clone()),
        announce: false,
        triggers: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| Error::io("installing signal handlers", e))?;
    }
    let sampler = Sampler::new(config, writer, root, &stop)?;
    if let Some(pid) = resume {
        crate::target::launch::resume(pid)?;
    }
    let plain = opts.once || !std::io::stdout().is_terminal();
    std::thread::scope(|scope| {
        let sampling = scope.spawn(|| sampler.run(|_| {}));
        let shown = if plain {
            once(opts, &template, &stop)
        } else {
            live(opts, &template, &stop)
        };
        stop.store(true, Ordering::SeqCst);
        let finished = sampling
            .join()
            .map_err(|_| Error::Other("the sampler panicked".into()))?;
        // A program top started ends with it.
        if let Some(mut l) = finished.running {
            let pid = nix::unistd::Pid::from_raw(l.pid());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = l.wait();
        }
        shown.map(|()| 0)
    })
}

/// The session's files, each read as it grows (an update parses what was appended).
struct Files {
    template: PathBuf,
    lives: std::collections::HashMap<u32, LiveRecording>,
}

impl Files {
    fn new(template: &Path) -> Files {
        Files {
            template: template.to_path_buf(),
            lives: Default::default(),
        }
    }

    fn live(&mut self, n: u32) -> &mut LiveRecording {
        let path = crate::sample::part_path(&self.template, n);
        self.lives
            .entry(n)
            .or_insert_with(|| LiveRecording::new(&path))
    }

    /// The newest file, or the one before it while the newest, just begun after a rotation,
    /// covers less than half the window; older files are deleted.
    fn newest(&mut self, window: Duration) -> Option<&Recording> {
        let n = crate::sample::last_part(&self.template);
        for old in 1..n.saturating_sub(1) {
            let _ = std::fs::remove_file(crate::sample::part_path(&self.template, old));
            self.lives.remove(&old);
        }
        let span = self
            .live(n)
            .update()
            .map(|r| match (r.samples.first(), r.samples.last()) {
                (Some(a), Some(b)) => b.time_us - a.time_us,
                _ => 0,
            });
        let young = span.is_none_or(|s| s < window.as_micros() as u64 / 2);
        let which = if n > 1 && young && self.live(n - 1).update().is_some() {
            n - 1
        } else {
            n
        };
        self.lives.get_mut(&which)?.update()
    }
}

/// The table of the last `window` of the recording, for one process (pid) or all.
fn view(
    rec: &Recording,
    window: Duration,
    pid: Option<i32>,
    wall: bool,
    until: Option<u64>,
) -> View {
    let mut v = View::default();
    let (Some(first), Some(last)) = (rec.samples.first(), rec.samples.last()) else {
        return v;
    };
    let (first, last) = (
        first.time_us,
        until.map_or(last.time_us, |u| u.min(last.time_us)),
    );
    v.last_us = last;
    let from = last.saturating_sub(window.as_micros() as u64).max(first);
    v.window_s = (last - from) as f64 / 1e6;
    v.recorded_s = last as f64 / 1e6;
    for (id, p) in rec.processes.iter().enumerate() {
        if p.end_us.is_some() {
            continue;
        }
        let rss = rec
            .samples
            .iter()
            .rev()
            .find(|s| s.process as usize == id)
            .map_or(0, |s| s.rss_bytes);
        let name = process_name(rec, id);
        let role = name
            .rsplit_once(" (pid")
            .map_or(name.as_str(), |n| n.0)
            .to_string();
        v.processes.push((p.pid, role, rss));
    }
    let filter = Filter {
        pid,
        window: Some((from, last)),
        ..Filter::default()
    };
    let attr = attribute(rec, &filter);
    let span_s = v.window_s.max(1e-3);
    let time_metric = if wall { Metric::Wall } else { Metric::Cpu };
    let time_total = attr.total(time_metric).max(1.0);
    let mut rows: std::collections::HashMap<(String, String), FunctionRow> =
        std::collections::HashMap::new();
    let process = pid
        .and_then(|p| rec.processes.iter().position(|q| q.pid == p))
        .map(|i| i as u32);
    for (metric, put) in [
        (time_metric, 0usize),
        (Metric::Cpu, 1),
        (Metric::Growth, 2),
        (Metric::Retained, 3),
    ] {
        for f in by_function(rec, &attr, metric) {
            let row = rows
                .entry((f.qualname.clone(), f.file.clone()))
                .or_insert_with(|| FunctionRow {
                    name: f.qualname.clone(),
                    file: short_file(rec, process.or(Some(0)), &f.file).to_string(),
                    ..FunctionRow::default()
                });
            match put {
                0 => {
                    row.own = 100.0 * f.self_value / time_total;
                    row.total = 100.0 * f.total_value / time_total;
                }
                1 => row.cpu = f.self_value / 1e6 / span_s,
                2 => row.growth_per_s = f.self_value / span_s,
                _ => row.retained = f.self_value,
            }
        }
    }
    v.rows = rows.into_values().collect();
    v
}

fn sort(rows: &mut [FunctionRow], by: Column) {
    let key = |r: &FunctionRow| match by {
        Column::Own => r.own,
        Column::Total => r.total,
        Column::Cpu => r.cpu,
        Column::Growth => r.growth_per_s,
        Column::Retained => r.retained,
    };
    rows.sort_by(|a, b| {
        key(b)
            .total_cmp(&key(a))
            .then_with(|| b.own.total_cmp(&a.own))
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// The cells of a row, as both outputs show them.
fn cells(r: &FunctionRow) -> [String; 6] {
    [
        format!("{:.1}", r.own),
        format!("{:.1}", r.total),
        format!("{:.2}", r.cpu),
        format!("{}/s", bytes(r.growth_per_s)),
        bytes(r.retained),
        format!("{} ({})", one_line(&r.name, 60), one_line(&r.file, 50)),
    ]
}

const HEADS: [&str; 6] = [
    "OWN%",
    "TOTAL%",
    "CPU",
    "GROWTH/s",
    "RETAINED",
    "FUNCTION (FILE)",
];

fn header(v: &View, opts_window: Duration, wall: bool, sort: Column, pick: &str) -> Vec<String> {
    let mut lines = vec![format!(
        "memspy top: {} process{}, last {:.0} s of {:.0} s; shares of {} time; sorted by {}; {}",
        v.processes.len(),
        if v.processes.len() == 1 { "" } else { "es" },
        v.window_s.min(opts_window.as_secs_f64()),
        v.recorded_s,
        if wall { "wall" } else { "CPU" },
        sort.name(),
        pick
    )];
    let procs: Vec<String> = v
        .processes
        .iter()
        .map(|(pid, role, rss)| format!("{pid} {role} {}", bytes(*rss as f64)))
        .collect();
    lines.push(format!("RSS: {}", procs.join(" | ")));
    lines
}

/// `--once`: sample for the duration, print one table.
fn once(opts: &TopOptions, template: &Path, stop: &AtomicBool) -> Result<()> {
    let deadline = Instant::now() + opts.duration;
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // What the sampler wrote last is on disk within the flush interval.
    std::thread::sleep(Duration::from_micros(2 * FLUSH_US));
    let mut files = Files::new(template);
    let Some(rec) = files.newest(opts.window) else {
        return Err(Error::Other("nothing was recorded".into()));
    };
    let mut v = view(rec, opts.window, None, opts.wall, None);
    sort(&mut v.rows, opts.sort);
    let mut out = String::new();
    for l in header(&v, opts.window, opts.wall, opts.sort, "all processes") {
        out.push_str(&l);
        out.push('\n');
    }
    out.push_str(&format!(
        "{:>7} {:>7} {:>6} {:>12} {:>11}  {}\n",
        HEADS[0], HEADS[1], HEADS[2], HEADS[3], HEADS[4], HEADS[5]
    ));
    for r in v.rows.iter().take(40) {
        let c = cells(r);
        out.push_str(&format!(
            "{:>7} {:>7} {:>6} {:>12} {:>11}  {}\n",
            c[0], c[1], c[2], c[3], c[4], c[5]
        ));
    }
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| Error::io("writing output", e)),
    }
}

/// The full-screen table until `q`.
fn live(opts: &TopOptions, template: &Path, stop: &AtomicBool) -> Result<()> {
    let mut terminal = ratatui::try_init().map_err(|e| Error::io("starting the terminal", e))?;
    let result = live_loop(opts, template, stop, &mut terminal);
    ratatui::restore();
    result
}

fn live_loop(
    opts: &TopOptions,
    template: &Path,
    stop: &AtomicBool,
    terminal: &mut ratatui::DefaultTerminal,
) -> Result<()> {
    let mut sort_by = opts.sort;
    let mut wall = opts.wall;
    let mut paused = false;
    // None: all processes; else one pid.
    let mut pick: Option<i32> = None;
    let mut shown = View::default();
    let mut files = Files::new(template);
    // While paused, the window ends where it did.
    let mut paused_at: Option<u64> = None;
    let mut next = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let now = Instant::now();
        let mut redraw = false;
        if now >= next {
            next = now + REFRESH;
            redraw = true;
        }
        if event::poll(Duration::from_millis(100)).map_err(|e| Error::io("reading keys", e))? {
            if let Event::Key(k) = event::read().map_err(|e| Error::io("reading keys", e))? {
                if k.kind == KeyEventKind::Press {
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                            return Ok(())
                        }
                        KeyCode::Char('s') | KeyCode::Tab => {
                            let i = Column::ALL.iter().position(|c| *c == sort_by).unwrap_or(0);
                            sort_by = Column::ALL[(i + 1) % Column::ALL.len()];
                        }
                        KeyCode::Char(d @ '1'..='5') => {
                            sort_by = Column::ALL[(d as u8 - b'1') as usize];
                        }
                        KeyCode::Char('m') => wall = !wall,
                        KeyCode::Char(' ') => {
                            paused = !paused;
                            paused_at = paused.then_some(shown.last_us);
                        }
                        KeyCode::Char('p') => {
                            let pids: Vec<i32> = shown.processes.iter().map(|p| p.0).collect();
                            pick = match pick.and_then(|p| pids.iter().position(|&q| q == p)) {
                                None => pids.first().copied(),
                                Some(i) if i + 1 < pids.len() => Some(pids[i + 1]),
                                Some(_) => None,
                            };
                        }
                        _ => {}
                    }
                    redraw = true;
                }
            }
        }
        if !redraw {
            continue;
        }
        if let Some(r) = files.newest(opts.window) {
            shown = view(r, opts.window, pick, wall, paused_at);
        }
        sort(&mut shown.rows, sort_by);
        let pick_text = match pick {
            None => "all processes".to_string(),
            Some(p) => format!("process {p}"),
        };
        let mut head = header(&shown, opts.window, wall, sort_by, &pick_text);
        head.push(format!(
            "keys: s or 1-5 sort, m wall/CPU, p process, space {}, q quit",
            if paused { "resume (paused)" } else { "pause" }
        ));
        terminal
            .draw(|frame| {
                let [top, body] =
                    Layout::vertical([Constraint::Length(head.len() as u16), Constraint::Min(1)])
                        .areas(frame.area());
                frame.render_widget(
                    Paragraph::new(
                        head.iter()
                            .map(|l| Line::from(l.as_str()))
                            .collect::<Vec<_>>(),
                    ),
                    top,
                );
                let rows = shown.rows.iter().map(|r| Row::new(cells(r)));
                let widths = [
                    Constraint::Length(7),
                    Constraint::Length(7),
                    Constraint::Length(6),
                    Constraint::Length(12),
                    Constraint::Length(11),
                    Constraint::Min(20),
                ];
                let heads = HEADS.iter().enumerate().map(|(i, h)| {
                    let sorted = Column::ALL.get(i) == Some(&sort_by);
                    let style = if sorted {
                        Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
                    } else {
                        Style::default().add_modifier(Modifier::BOLD)
                    };
                    ratatui::widgets::Cell::from(*h).style(style)
                });
                frame.render_widget(Table::new(rows, widths).header(Row::new(heads)), body);
            })
            .map_err(|e| Error::io("drawing", e))?;
    }
}
