//! The `memspy` command line: parses arguments into each command's options and maps errors to
//! exit statuses (0 ok, 1 a check found a regression, 2 memspy could not do its job).

use std::process::ExitCode;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use memspy::analysis::check::{Budget, Measure, Rule};
use memspy::analysis::{Bound, Metric, WindowSpec};
use memspy::commands::check::{self, CheckOptions};
use memspy::commands::diff::{self, DiffOptions};
use memspy::commands::dump::{self, DumpOptions};
use memspy::commands::export::{self, ExportFormat, ExportOptions};
use memspy::commands::flame::{self, FlameOptions};
use memspy::commands::info;
use memspy::commands::lines::{self, Format, LinesOptions};
use memspy::commands::plot::{self, PlotOptions};
use memspy::commands::record::{self, RecordOptions};
use memspy::commands::report::{self, ReportOptions};
use memspy::commands::top::{self, Column, TopOptions};
use memspy::output::text::message;
use memspy::output::units::{parse_duration, parse_size, Amount};
use memspy::sample::MemoryMode;

#[derive(Parser)]
#[command(
    name = "memspy",
    version,
    about = "Profile time and memory of running Python programs from the outside"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sample a Python program's stacks and memory into a recording
    #[command(
        after_help = "Examples:\n  memspy record -- python server.py\n  memspy record --pid 1234 -d 30\n  memspy record --subprocesses -- gunicorn -w 4 app:app\n  memspy record -o run.msp -r 1000 --pid 1234\n  memspy record --blocking --pid 1234          # pause the target for exact stacks\n  memspy record --pid 1234 --subprocesses --push http://pyroscope:4040 --label service=checkout\n  memspy record --pid 1234 --trigger-rss 1.5GiB --trigger-exec 'page-me \"$MEMSPY_DUMP\"'"
    )]
    Record(RecordArgs),
    /// Print every Python thread's stack of a running process
    Dump(DumpArgs),
    /// A live table of the functions using CPU and growing memory, refreshed every second
    #[command(
        after_help = "Examples:\n  memspy top --pid 1234 --subprocesses\n  memspy top --pid 1234 --once --duration 5 --sort growth   # one plain table\n\nKeys: s or 1-5 sort by a column, m wall/CPU shares, p next process, space pause, q quit."
    )]
    Top(TopArgs),
    /// Write the interactive HTML report of a recording: one file to open first
    #[command(
        after_help = "Examples:\n  memspy report                          # newest recording -> memspy-report.html\n  memspy report -i run.msp -o run.html --open\n  memspy report --skip-startup           # the page opens on the time after start-up"
    )]
    Report(ReportArgs),
    /// Draw a flamegraph SVG of a recording (time or memory)
    Flame(FlameArgs),
    /// Per-line table of a recording, with source text
    Lines(LinesArgs),
    /// Plot memory over time, one line per process, as an SVG
    Plot(PlotArgs),
    /// Write a recording in another tool's format
    Export(ExportArgs),
    /// Check a recording against budgets or baselines: exit 1 on a regression (for CI)
    #[command(
        after_help = "Examples:\n  memspy check -i new.msp --max-peak 512MiB --max-growth 'app.cache.fill=50MiB'\n  memspy check -i new.msp --baseline main.msp --tolerance 10%\n  memspy check -i new.msp --baseline a.msp --baseline b.msp --baseline c.msp --format markdown\n\nExit status: 0 all checks passed, 1 a check failed, 2 memspy could not do its job."
    )]
    Check(CheckArgs),
    /// Compare two recordings: differential flamegraph and the functions that changed most
    Diff(DiffArgs),
    /// Describe a recording: processes, samples, time span, failures
    Info(InfoArgs),
}

fn size_arg(text: &str) -> Result<Amount, String> {
    parse_size(text)
}

fn byte_size_arg(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        Amount::Absolute(b) if b >= 1.0 => Ok(b as u64),
        _ => Err(format!("{text:?} is not a size in bytes (try 500MiB)")),
    }
}

/// Whole seconds, at least one (Pyroscope's windows are whole seconds).
fn seconds_arg(text: &str) -> Result<f64, String> {
    match parse_duration(text)? {
        Amount::Absolute(us) if us >= 1e6 && (us / 1e6).fract() == 0.0 => Ok(us / 1e6),
        _ => Err(format!(
            "{text:?} is not a whole number of seconds, at least 1 (try 15s)"
        )),
    }
}

fn percent_arg(text: &str) -> Result<f64, String> {
    let t = text.trim().trim_end_matches('%');
    t.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{text:?} is not a percentage (try 10%)"))
}

/// PATTERN=AMOUNT, where AMOUNT is a size (memory) or a duration (time).
fn budget_arg(text: &str, measure: Measure) -> Result<Budget, String> {
    let (pattern, amount) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?}: expected FUNCTION=LIMIT, e.g. 'app.cache.fill=50MiB'"))?;
    if pattern.trim().is_empty() {
        return Err(format!("{text:?}: the function pattern is empty"));
    }
    let limit = match measure {
        Measure::Wall | Measure::Cpu => parse_duration(amount)?,
        _ => parse_size(amount)?,
    };
    Ok(Budget {
        measure,
        pattern: Some(pattern.trim().to_string()),
        limit,
    })
}

#[derive(Clone, Copy, ValueEnum)]
enum CheckFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Args)]
struct CheckArgs {
    /// The recording to check [default: the newest *.msp in the current folder]
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Peak memory allowed for each process (e.g. 512MiB)
    #[arg(long, value_parser = size_arg)]
    max_peak: Option<Amount>,
    /// Peak memory allowed for all processes together
    #[arg(long, value_parser = size_arg)]
    max_peak_total: Option<Amount>,
    /// Apply the budgets to this process only
    #[arg(long, short)]
    pid: Option<i32>,
    /// Apply the budgets to each process on its own (a worker's growth against the budget,
    /// not all workers' together)
    #[arg(long, conflicts_with = "pid")]
    each_process: bool,
    /// Memory growth allowed under a function: PATTERN=SIZE (repeatable; SIZE may be a % of all growth)
    #[arg(long, value_parser = |s: &str| budget_arg(s, Measure::Growth))]
    max_growth: Vec<Budget>,
    /// Memory retained (grown and not freed) allowed under a function: PATTERN=SIZE (repeatable)
    #[arg(long, alias = "max-net", value_parser = |s: &str| budget_arg(s, Measure::Retained))]
    max_retained: Vec<Budget>,
    /// Wall time allowed under a function: PATTERN=TIME, e.g. 'render_*=2s' or '=30%' (repeatable)
    #[arg(long, value_parser = |s: &str| budget_arg(s, Measure::Wall))]
    max_wall: Vec<Budget>,
    /// CPU time allowed under a function: PATTERN=TIME (repeatable)
    #[arg(long, value_parser = |s: &str| budget_arg(s, Measure::Cpu))]
    max_cpu: Vec<Budget>,
    /// Baseline recording to compare with (repeatable: their median is used)
    #[arg(long, short)]
    baseline: Vec<PathBuf>,
    /// Allowed increase over the baseline
    #[arg(long, short, value_parser = percent_arg, default_value = "10%")]
    tolerance: f64,
    /// Increases smaller than this never fail, and functions below it are not compared
    #[arg(long, value_parser = size_arg, default_value = "5MiB")]
    noise_floor: Amount,
    /// Also compare each function's share of CPU time with the baseline
    #[arg(long)]
    compare_time: bool,
    /// Allowed increase of a function's CPU share, in percentage points
    #[arg(long, value_parser = percent_arg, default_value = "5")]
    time_tolerance: f64,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: CheckFormat,
    /// List passed checks too
    #[arg(long, short)]
    verbose: bool,
    /// Greenlets and asyncio tasks: `on` counts every waiting one's wall time where it waits;
    /// `off` gives the OS threads' view
    #[arg(long, value_enum, default_value = "on")]
    tasks: TasksArg,
    #[command(flatten)]
    window: WindowArgs,
}

#[derive(Args)]
struct DiffArgs {
    /// The baseline recording
    base: PathBuf,
    /// The new recording
    new: PathBuf,
    /// Write a differential flamegraph SVG here
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// What to compare
    #[arg(long, short, value_enum, default_value = "growth")]
    metric: MetricArg,
    /// How many functions to list
    #[arg(long, default_value_t = 15)]
    top: usize,
    /// One node per function, without line numbers
    #[arg(long)]
    function: bool,
    /// Scale the baseline to the new recording's total (compare shares rather than amounts)
    #[arg(long)]
    normalize: bool,
    /// Greenlets and asyncio tasks: `on` counts every waiting one's wall time where it waits;
    /// `off` gives the OS threads' view
    #[arg(long, value_enum, default_value = "on")]
    tasks: TasksArg,
    #[command(flatten)]
    window: WindowArgs,
}

/// The time window of a report.
#[derive(Args, Clone, Copy)]
struct WindowArgs {
    /// Start of the window: seconds from the first sample (12.5, 12.5s, 2m) or a share of the
    /// recording (25%)
    #[arg(long, value_name = "TIME")]
    from: Option<Bound>,
    /// End of the window, the same way
    #[arg(long, value_name = "TIME")]
    to: Option<Bound>,
    /// Start after the program's start-up (its imports, in the first half of the recording)
    #[arg(long)]
    skip_startup: bool,
}

impl WindowArgs {
    fn spec(self) -> WindowSpec {
        WindowSpec {
            from: self.from,
            to: self.to,
            skip_startup: self.skip_startup,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TasksArg {
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum MetricArg {
    /// Wall-clock time of every thread
    Wall,
    /// CPU time (idle threads weigh nothing)
    Cpu,
    /// Memory growth: the increases of memory, by what ran while it grew
    Growth,
    /// Memory freed: the decreases, by the code that freed
    Freed,
    /// Memory grown and not freed by the end, by the code that grew it ("net" too)
    #[value(alias = "net")]
    Retained,
    /// Memory each stack had grown and still held when memory was at its highest
    Peak,
}

impl MetricArg {
    fn metric(self) -> Metric {
        match self {
            MetricArg::Wall => Metric::Wall,
            MetricArg::Cpu => Metric::Cpu,
            MetricArg::Growth => Metric::Growth,
            MetricArg::Freed => Metric::Freed,
            MetricArg::Retained => Metric::Retained,
            MetricArg::Peak => Metric::Peak,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SortArg {
    Own,
    Total,
    Cpu,
    Growth,
    Retained,
}

#[derive(Args)]
struct TopArgs {
    /// Attach to this running process
    #[arg(long, short, value_parser = clap::value_parser!(i32).range(1..), conflicts_with = "command")]
    pid: Option<i32>,
    /// Also every child process (workers), including ones started later
    #[arg(long, short)]
    subprocesses: bool,
    /// Samples per second
    #[arg(long, short, default_value_t = 100.0)]
    rate: f64,
    /// Each refresh shows the last this many seconds
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = seconds_arg)]
    window: f64,
    /// Print one plain table after --duration and exit (also when stdout is not a terminal)
    #[arg(long)]
    once: bool,
    /// How long --once samples
    #[arg(long, short, value_name = "SECONDS", default_value_t = 3.0)]
    duration: f64,
    /// The column to sort by
    #[arg(long, value_enum, default_value = "own")]
    sort: SortArg,
    /// Own and total shares of wall time (every thread) instead of CPU time
    #[arg(long)]
    wall: bool,
    /// The program to launch and watch (after --)
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Args)]
struct ReportArgs {
    /// The recording [default: the newest *.msp in the current folder]
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// The HTML file to write
    #[arg(long, short, default_value = "memspy-report.html")]
    output: PathBuf,
    /// Open the report in the browser ($BROWSER, else xdg-open) once written
    #[arg(long)]
    open: bool,
    #[command(flatten)]
    window: WindowArgs,
}

#[derive(Args)]
struct FlameArgs {
    /// The SVG file to write
    output: PathBuf,
    /// The recording [default: the newest *.msp in the current folder]
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// What to measure
    #[arg(long, short, value_enum, default_value = "wall")]
    metric: MetricArg,
    /// Only this process
    #[arg(long, short)]
    pid: Option<i32>,
    /// One tree for all processes (workers folded together)
    #[arg(long)]
    merge_processes: bool,
    /// One node per function, without line numbers
    #[arg(long)]
    function: bool,
    /// Greenlets and asyncio tasks: `on` counts every waiting one's wall time where it waits;
    /// `off` gives the OS threads' view
    #[arg(long, value_enum, default_value = "on")]
    tasks: TasksArg,
    #[command(flatten)]
    window: WindowArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum LinesFormat {
    Text,
    Csv,
    Json,
}

#[derive(Args)]
struct LinesArgs {
    /// The recording [default: the newest *.msp in the current folder]
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// What to measure and sort by
    #[arg(long, short, value_enum, default_value = "wall")]
    metric: MetricArg,
    /// Show the N first lines [default: 20 on a terminal, all otherwise]
    #[arg(long, short)]
    top: Option<usize>,
    /// Show every line of this function (qualified or plain name), in source order
    #[arg(long, short)]
    function: Option<String>,
    /// Only this process
    #[arg(long, short)]
    pid: Option<i32>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: LinesFormat,
    /// Greenlets and asyncio tasks: `on` counts every waiting one's wall time where it waits;
    /// `off` gives the OS threads' view
    #[arg(long, value_enum, default_value = "on")]
    tasks: TasksArg,
    #[command(flatten)]
    window: WindowArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum MemoryArg {
    /// Resident set size, read on every sample
    Rss,
    /// Proportional set size (shared pages split between the processes sharing them)
    Pss,
    /// Unique set size (pages of this process alone)
    Uss,
}

#[derive(Args)]
struct RecordArgs {
    /// Attach to this running process
    #[arg(long, short, value_parser = clap::value_parser!(i32).range(1..), conflicts_with = "command")]
    pid: Option<i32>,
    /// Where to write the recording [default: memspy-YYYYmmdd-HHMMSS.msp]; with --max-size,
    /// %n in the name (run-%n.msp) makes a rotated recording: run-1.msp, run-2.msp, ...
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Samples per second
    #[arg(long, short, default_value_t = 100.0)]
    rate: f64,
    /// Stop after this many seconds
    #[arg(long, short)]
    duration: Option<f64>,
    /// Also record every child process (workers), including ones started later
    #[arg(long, short)]
    subprocesses: bool,
    /// Pause the target's Python threads for each tick's read (exact stacks; each pause waits
    /// for the thread to be scheduled, which delays memory events on a busy machine)
    #[arg(long, conflicts_with = "nonblocking")]
    blocking: bool,
    /// Read stacks without pausing the target (the default)
    #[arg(long, hide = true)]
    nonblocking: bool,
    /// Memory measure that time is matched against
    #[arg(long, value_enum, default_value = "rss")]
    memory: MemoryArg,
    /// Sample on ticks only: no page-fault and free events from the kernel
    #[arg(long)]
    no_memory_events: bool,
    /// Page faults per memory-event sample, at least (it grows under a fault storm)
    #[arg(long, value_name = "PAGES", default_value_t = record::DEFAULT_FAULT_PERIOD)]
    fault_period: u64,
    /// Record OS threads only: no greenlets or asyncio tasks
    #[arg(long)]
    no_tasks: bool,
    /// End the recording cleanly once its file reaches this size (e.g. 500MiB), checked at
    /// every tick; with %n in -o, go on in the next numbered file instead (each file stands
    /// alone)
    #[arg(long, value_name = "SIZE", value_parser = byte_size_arg)]
    max_size: Option<u64>,
    /// Send the pprof profile of every window to this Pyroscope-compatible backend while
    /// recording (http://pyroscope:4040); with `-o none`, keep no recording
    #[arg(long, value_name = "URL")]
    push: Option<String>,
    /// Serve pprof profiles over HTTP at this address while recording (127.0.0.1:7071):
    /// GET /debug/pprof/profile?seconds=N, for Parca's scrapes and `go tool pprof URL`
    #[arg(long, value_name = "ADDR")]
    serve: Option<std::net::SocketAddr>,
    /// The window of each push
    #[arg(long, value_name = "TIME", default_value = "15s", value_parser = seconds_arg, requires = "push")]
    push_every: f64,
    /// Labels of the pushed profiles: k=v, comma-separated or repeated (`service` names the
    /// series; `host` is this machine's name unless given)
    #[arg(long, value_name = "K=V,...", requires = "push")]
    label: Vec<String>,
    /// When a process's RSS reaches SIZE (e.g. 1.5GiB): write a dump of its stacks and its top
    /// functions by retained memory to memspy-trigger-PID-TIME.json, mark the recording, go on
    #[arg(long, value_name = "SIZE", value_parser = byte_size_arg)]
    trigger_rss: Option<u64>,
    /// The same when a process grows by SIZE within TIME (e.g. 200MiB/30s)
    #[arg(long, value_name = "SIZE/TIME", value_parser = growth_arg)]
    trigger_growth: Option<(u64, f64)>,
    /// Run this shell command at each crossing, with MEMSPY_PID, MEMSPY_DUMP, MEMSPY_REASON and
    /// MEMSPY_BYTES set
    #[arg(long, value_name = "CMD")]
    trigger_exec: Option<String>,
    /// Where trigger dumps are written [default: the current folder]
    #[arg(long, value_name = "DIR")]
    trigger_dir: Option<PathBuf>,
    /// The program to launch and record (after --)
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// `200MiB/30s`: a size and a time.
fn growth_arg(text: &str) -> Result<(u64, f64), String> {
    let (size, time) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not SIZE/TIME (try 200MiB/30s)"))?;
    let size = byte_size_arg(size)?;
    match parse_duration(time)? {
        Amount::Absolute(us) if us >= 1e3 => Ok((size, us / 1e6)),
        _ => Err(format!("{time:?} is not a time (try 30s)")),
    }
}

#[derive(Args)]
struct PlotArgs {
    /// The SVG file to write
    output: PathBuf,
    /// The recording [default: the newest *.msp in the current folder]
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Only this process
    #[arg(long, short)]
    pid: Option<i32>,
    /// How many functions (by memory growth) to mark on the curves
    #[arg(long, default_value_t = 5)]
    functions: usize,
    #[command(flatten)]
    window: WindowArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormatArg {
    /// speedscope JSON (https://www.speedscope.app), one profile per process and unit
    Speedscope,
    /// Folded stacks for inferno or flamegraph.pl, of one metric
    Collapsed,
    /// A JSON summary: processes, totals, top functions and lines
    Json,
    /// memory_profiler's mprof .dat file, for `mprof plot`
    Mprof,
    /// A gzipped pprof profile (go tool pprof, Grafana Pyroscope, Parca): every metric in one
    /// profile, or the one --metric names
    Pprof,
}

#[derive(Args)]
struct ExportArgs {
    /// The file to write
    #[arg(long, short)]
    output: PathBuf,
    /// The recording [default: the newest *.msp in the current folder]
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Output format
    #[arg(long, short, value_enum)]
    format: ExportFormatArg,
    /// What to measure (collapsed: default wall; pprof: default every metric, each a sample type)
    #[arg(long, short, value_enum)]
    metric: Option<MetricArg>,
    /// Only this process
    #[arg(long, short)]
    pid: Option<i32>,
    /// One tree for all processes (collapsed)
    #[arg(long)]
    merge_processes: bool,
    /// One node per function, without line numbers (collapsed, speedscope)
    #[arg(long)]
    function: bool,
    /// Greenlets and asyncio tasks: `on` counts every waiting one's wall time where it waits;
    /// `off` gives the OS threads' view
    #[arg(long, value_enum, default_value = "on")]
    tasks: TasksArg,
    #[command(flatten)]
    window: WindowArgs,
}

#[derive(Args)]
struct InfoArgs {
    /// The recording [default: the newest *.msp in the current folder]
    file: Option<PathBuf>,
    /// The recording, named as the other commands name it
    #[arg(long, short, conflicts_with = "file")]
    input: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DumpArgs {
    /// Process id of the Python program
    #[arg(long, short, value_parser = clap::value_parser!(i32).range(1..))]
    pid: i32,
    /// Also dump every descendant process that runs Python
    #[arg(long, short)]
    subprocesses: bool,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// Do not stop the process while reading (stacks may be slightly inconsistent)
    #[arg(long)]
    nonblocking: bool,
    /// Print where the interpreter was found and which offsets are used
    #[arg(long, short)]
    verbose: bool,
    /// Print the await tree of the asyncio tasks, as `python -m asyncio pstree PID` does
    /// (CPython 3.14+)
    #[arg(long, conflicts_with = "json")]
    pstree: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dump(a) => dump::run(&DumpOptions {
            pid: a.pid,
            subprocesses: a.subprocesses,
            json: a.json,
            nonblocking: a.nonblocking,
            pstree: a.pstree,
            verbose: a.verbose,
        })
        .map(|()| 0),
        Command::Record(a) => record::run(&RecordOptions {
            pid: a.pid,
            command: a.command,
            output: a.output,
            rate_hz: a.rate,
            duration: a.duration,
            subprocesses: a.subprocesses,
            nonblocking: !a.blocking,
            memory: match a.memory {
                MemoryArg::Rss => MemoryMode::Rss,
                MemoryArg::Pss => MemoryMode::Pss,
                MemoryArg::Uss => MemoryMode::Uss,
            },
            memory_events: !a.no_memory_events,
            fault_period: a.fault_period,
            tasks: !a.no_tasks,
            max_size: a.max_size,
            serve: a.serve,
            triggers: record::TriggerOptions {
                rss: a.trigger_rss,
                growth: a
                    .trigger_growth
                    .map(|(size, s)| (size, std::time::Duration::from_secs_f64(s))),
                exec: a.trigger_exec,
                dir: a.trigger_dir,
            },
            push: a.push.map(|url| record::PushOptions {
                url,
                every: std::time::Duration::from_secs_f64(a.push_every),
                labels: a.label,
            }),
        }),
        Command::Info(a) => info::run(a.file.or(a.input).as_deref(), a.json).map(|()| 0),
        Command::Check(a) => {
            let mut budgets = Vec::new();
            if let Some(limit) = a.max_peak {
                budgets.push(Budget {
                    measure: Measure::PeakProcess,
                    pattern: None,
                    limit,
                });
            }
            if let Some(limit) = a.max_peak_total {
                budgets.push(Budget {
                    measure: Measure::PeakTotal,
                    pattern: None,
                    limit,
                });
            }
            budgets.extend(
                a.max_growth
                    .into_iter()
                    .chain(a.max_retained)
                    .chain(a.max_wall)
                    .chain(a.max_cpu),
            );
            let memory_floor = match a.noise_floor {
                Amount::Absolute(v) => v,
                Amount::Percent(_) => {
                    eprintln!(
                        "memspy: error: --noise-floor takes a size (e.g. 5MiB), not a percentage"
                    );
                    return ExitCode::from(2);
                }
            };
            check::run(&CheckOptions {
                window: a.window.spec(),
                pid: a.pid,
                each_process: a.each_process,
                threads_only: a.tasks == TasksArg::Off,
                input: a.input,
                budgets,
                baselines: a.baseline,
                rule: Rule {
                    tolerance_pct: a.tolerance,
                    memory_floor,
                    compare_time: a.compare_time,
                    time_tolerance_pts: a.time_tolerance,
                },
                format: match a.format {
                    CheckFormat::Text => check::Format::Text,
                    CheckFormat::Json => check::Format::Json,
                    CheckFormat::Markdown => check::Format::Markdown,
                },
                verbose: a.verbose,
            })
        }
        Command::Diff(a) => diff::run(&DiffOptions {
            window: a.window.spec(),
            threads_only: a.tasks == TasksArg::Off,
            base: a.base,
            new: a.new,
            output: a.output,
            metric: a.metric.metric(),
            top: a.top,
            functions_only: a.function,
            normalize: a.normalize,
        })
        .map(|()| 0),
        Command::Top(a) => {
            if !(a.duration > 0.0 && a.duration.is_finite() && a.rate > 0.0 && a.rate <= 10_000.0) {
                eprintln!("memspy: error: --duration must be positive and --rate at most 10000");
                return ExitCode::from(2);
            }
            top::run(&TopOptions {
                pid: a.pid,
                command: a.command,
                subprocesses: a.subprocesses,
                rate_hz: a.rate,
                window: std::time::Duration::from_secs_f64(a.window),
                once: a.once,
                duration: std::time::Duration::from_secs_f64(a.duration),
                sort: match a.sort {
                    SortArg::Own => Column::Own,
                    SortArg::Total => Column::Total,
                    SortArg::Cpu => Column::Cpu,
                    SortArg::Growth => Column::Growth,
                    SortArg::Retained => Column::Retained,
                },
                wall: a.wall,
            })
        }
        Command::Report(a) => report::run(&ReportOptions {
            input: a.input,
            output: a.output,
            window: a.window.spec(),
            open: a.open,
        })
        .map(|()| 0),
        Command::Flame(a) => flame::run(&FlameOptions {
            window: a.window.spec(),
            threads_only: a.tasks == TasksArg::Off,
            output: a.output,
            input: a.input,
            metric: a.metric.metric(),
            pid: a.pid,
            merge_processes: a.merge_processes,
            functions_only: a.function,
        })
        .map(|()| 0),
        Command::Plot(a) => plot::run(&PlotOptions {
            window: a.window.spec(),
            output: a.output,
            input: a.input,
            pid: a.pid,
            functions: a.functions,
        })
        .map(|()| 0),
        Command::Export(a) => export::run(&ExportOptions {
            window: a.window.spec(),
            threads_only: a.tasks == TasksArg::Off,
            output: a.output,
            input: a.input,
            format: match a.format {
                ExportFormatArg::Speedscope => ExportFormat::Speedscope,
                ExportFormatArg::Collapsed => ExportFormat::Collapsed,
                ExportFormatArg::Json => ExportFormat::Json,
                ExportFormatArg::Mprof => ExportFormat::Mprof,
                ExportFormatArg::Pprof => ExportFormat::Pprof,
            },
            metric: a.metric.map(MetricArg::metric),
            pid: a.pid,
            merge_processes: a.merge_processes,
            functions_only: a.function,
        })
        .map(|()| 0),
        Command::Lines(a) => lines::run(&LinesOptions {
            window: a.window.spec(),
            threads_only: a.tasks == TasksArg::Off,
            input: a.input,
            metric: a.metric.metric(),
            top: a.top,
            function: a.function,
            pid: a.pid,
            format: match a.format {
                LinesFormat::Text => Format::Text,
                LinesFormat::Csv => Format::Csv,
                LinesFormat::Json => Format::Json,
            },
        })
        .map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line, at most 400 characters, nothing invisible: an error can quote a
            // target's command, a path or a value from a recording.
            eprintln!("{}", message(&format!("memspy: error: {e}")));
            ExitCode::from(2)
        }
    }
}
