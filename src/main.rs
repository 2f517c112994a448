//! The `memspy` command line: parses arguments into each command's options and maps errors to
//! exit statuses (0 ok, 1 a check found a regression, 2 memspy could not do its job).

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use memspy::commands::dump::{self, DumpOptions};

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
    /// Print every Python thread's stack of a running process
    Dump(DumpArgs),
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
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memspy: error: {e}");
            ExitCode::from(2)
        }
    }
}
