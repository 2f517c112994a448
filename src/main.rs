//! The `memspy` command line: parses arguments into each command's options and maps errors to
//! exit statuses (0 ok, 1 a check found a regression, 2 memspy could not do its job).

use std::process::ExitCode;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use memspy::analysis::Metric;
use memspy::commands::dump::{self, DumpOptions};
use memspy::commands::export::{self, ExportFormat, ExportOptions};
use memspy::commands::flame::{self, FlameOptions};
use memspy::commands::info;
use memspy::commands::lines::{self, Format, LinesOptions};
use memspy::commands::plot::{self, PlotOptions};
use memspy::commands::record::{self, RecordOptions};
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
        after_help = "Examples:\n  memspy record -- python server.py\n  memspy record --pid 1234 -d 30\n  memspy record --subprocesses -- gunicorn -w 4 app:app\n  memspy record -o run.msp -r 1000 --nonblocking --pid 1234"
    )]
    Record(RecordArgs),
    /// Print every Python thread's stack of a running process
    Dump(DumpArgs),
    /// Draw a flamegraph SVG of a recording (time or memory)
    Flame(FlameArgs),
    /// Per-line table of a recording, with source text
    Lines(LinesArgs),
    /// Plot memory over time, one line per process, as an SVG
    Plot(PlotArgs),
    /// Write a recording in another tool's format
    Export(ExportArgs),
    /// Describe a recording: processes, samples, time span, failures
    Info(InfoArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum MetricArg {
    /// Wall-clock time of every thread
    Wall,
    /// CPU time (idle threads weigh nothing)
    Cpu,
    /// Memory growth: the increases of memory, by what ran while it grew
    Growth,
    /// Memory freed: the decreases
    Freed,
    /// Growth minus freed
    Net,
    /// What each stack had contributed when memory was at its highest
    Peak,
}

impl MetricArg {
    fn metric(self) -> Metric {
        match self {
            MetricArg::Wall => Metric::Wall,
            MetricArg::Cpu => Metric::Cpu,
            MetricArg::Growth => Metric::Growth,
            MetricArg::Freed => Metric::Freed,
            MetricArg::Net => Metric::Net,
            MetricArg::Peak => Metric::Peak,
        }
    }
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
    /// Where to write the recording [default: memspy-YYYYmmdd-HHMMSS.msp]
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
    /// Read stacks without pausing the target's Python threads
    #[arg(long)]
    nonblocking: bool,
    /// Memory measure that time is matched against
    #[arg(long, value_enum, default_value = "rss")]
    memory: MemoryArg,
    /// The program to launch and record (after --)
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
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
    /// What to measure (collapsed)
    #[arg(long, short, value_enum, default_value = "wall")]
    metric: MetricArg,
    /// Only this process
    #[arg(long, short)]
    pid: Option<i32>,
    /// One tree for all processes (collapsed)
    #[arg(long)]
    merge_processes: bool,
    /// One node per function, without line numbers (collapsed, speedscope)
    #[arg(long)]
    function: bool,
}

#[derive(Args)]
struct InfoArgs {
    /// The recording [default: the newest *.msp in the current folder]
    file: Option<PathBuf>,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dump(a) => dump::run(&DumpOptions {
            pid: a.pid,
            subprocesses: a.subprocesses,
            json: a.json,
            nonblocking: a.nonblocking,
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
            nonblocking: a.nonblocking,
            memory: match a.memory {
                MemoryArg::Rss => MemoryMode::Rss,
                MemoryArg::Pss => MemoryMode::Pss,
                MemoryArg::Uss => MemoryMode::Uss,
            },
        }),
        Command::Info(a) => info::run(a.file.as_deref(), a.json).map(|()| 0),
        Command::Flame(a) => flame::run(&FlameOptions {
            output: a.output,
            input: a.input,
            metric: a.metric.metric(),
            pid: a.pid,
            merge_processes: a.merge_processes,
            functions_only: a.function,
        })
        .map(|()| 0),
        Command::Plot(a) => plot::run(&PlotOptions {
            output: a.output,
            input: a.input,
            pid: a.pid,
            functions: a.functions,
        })
        .map(|()| 0),
        Command::Export(a) => export::run(&ExportOptions {
            output: a.output,
            input: a.input,
            format: match a.format {
                ExportFormatArg::Speedscope => ExportFormat::Speedscope,
                ExportFormatArg::Collapsed => ExportFormat::Collapsed,
                ExportFormatArg::Json => ExportFormat::Json,
                ExportFormatArg::Mprof => ExportFormat::Mprof,
            },
            metric: a.metric.metric(),
            pid: a.pid,
            merge_processes: a.merge_processes,
            functions_only: a.function,
        })
        .map(|()| 0),
        Command::Lines(a) => lines::run(&LinesOptions {
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
            eprintln!("memspy: error: {e}");
            ExitCode::from(2)
        }
    }
}
