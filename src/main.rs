//! The `memspy` command line: parses arguments into each command's options and maps errors to
//! exit statuses (0 ok, 1 a check found a regression, 2 memspy could not do its job).

use std::process::ExitCode;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use memspy::commands::dump::{self, DumpOptions};
use memspy::commands::info;
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
    /// Describe a recording: processes, samples, time span, failures
    Info(InfoArgs),
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
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("memspy: error: {e}");
            ExitCode::from(2)
        }
    }
}
