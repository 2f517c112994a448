//! The recorder under load: sampling rate achieved, failed samples, memspy's CPU per sample,
//! and how much a CPU-bound target slows down, all against the target alone in the same run.
//!
//!     cargo bench --bench record               # default: CPython 3.12 (pyenv) if provisioned
//!     MEMSPY_BENCH_PYTHON=debian-sid-3.14 cargo bench --bench record
//!
//! The target is `fixtures/deep.py 45 spin SECONDS`: a ~45-frame-deep stack running a
//! CPU-bound loop that reports its own iterations per second. For each configuration the target
//! runs alone and then under `memspy record` (launch mode, so the whole run is recorded), five
//! times; the slowdown is the median of the five alone/recorded ratios (pairs run back to back,
//! so slow drifts of the machine cancel out), and memspy's CPU is the recorded pair's CPU time
//! minus the target's alone.
#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};

use memspy::recording::Recording;

const SECONDS: f64 = 3.0;
const PAIRS: usize = 5;
/// The target and memspy run on CPUs of their own (taskset), in every run: on a small machine
/// the scheduler moving them around is most of the noise.
const TARGET_CPU: &str = "1";
const MEMSPY_CPU: &str = "0";
const DEPTH: &str = "45";

fn iterations(stdout: &[u8]) -> f64 {
    String::from_utf8_lossy(stdout)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("fixture rate")
}

/// The target alone: its iterations per second and CPU seconds.
fn alone(py: &common::Interpreter) -> (f64, f64) {
    let cpu_before = common::cpu_of_children();
    let out = Command::new("taskset")
        .args(["-c", TARGET_CPU])
        .arg(&py.exe)
        .arg(common::fixtures_dir().join("deep.py"))
        .args([DEPTH, "spin", &SECONDS.to_string()])
        .output()
        .expect("run fixture");
    (
        iterations(&out.stdout),
        common::cpu_of_children() - cpu_before,
    )
}

struct Measured {
    target_rate: f64,
    /// CPU seconds of memspy and the target together.
    cpu: f64,
    achieved_hz: f64,
    samples: usize,
    failed: usize,
    cpu_per_sample_us: f64,
    missed_ticks: u64,
}

fn under_memspy(py: &common::Interpreter, args: &[&str]) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.msp");
    let cpu_before = common::cpu_of_children();
    let out = Command::new("taskset")
        .args(["-c", MEMSPY_CPU])
        .arg(common::memspy_bin())
        .arg("record")
        .arg("-o")
        .arg(&path)
        .args(args)
        .args(["--", "taskset", "-c", TARGET_CPU])
        .arg(&py.exe)
        .arg(common::fixtures_dir().join("deep.py"))
        .args([DEPTH, "spin", &SECONDS.to_string()])
        .stderr(Stdio::null())
        .output()
        .expect("run memspy");
    let cpu = common::cpu_of_children() - cpu_before;
    let rec = Recording::open(&path).expect("recording");
    let span = rec.duration_us() as f64 / 1e6;
    Measured {
        target_rate: iterations(&out.stdout),
        cpu,
        achieved_hz: rec.samples.len() as f64 / span.max(1e-9),
        samples: rec.samples.len(),
        failed: rec.failures.len(),
        cpu_per_sample_us: 0.0,
        missed_ticks: rec.stats.missed,
    }
}

fn main() {
    let wanted = std::env::var("MEMSPY_BENCH_PYTHON").unwrap_or_else(|_| "pyenv-3.12.1".into());
    let interpreters = common::interpreters();
    let Some(py) = interpreters
        .iter()
        .find(|i| i.label == wanted)
        .or(interpreters.first())
    else {
        eprintln!("no interpreter provisioned: run scripts/provision-pythons.sh");
        return;
    };
    println!(
        "recorder benchmark: {} ({}), stack depth {DEPTH}, {SECONDS} s per run, {PAIRS} pairs per configuration",
        py.label, py.version
    );
    let configs: [(&str, &[&str]); 5] = [
        ("blocking 100 Hz", &["-r", "100", "--blocking"]),
        ("blocking 1 kHz", &["-r", "1000", "--blocking"]),
        ("nonblocking 100 Hz (default)", &["-r", "100"]),
        ("nonblocking 1 kHz", &["-r", "1000"]),
        ("nonblocking 10 kHz", &["-r", "10000"]),
    ];
    println!(
        "{:<20} {:>11} {:>9} {:>9} {:>9} {:>14} {:>10} {:>15}",
        "configuration",
        "achieved Hz",
        "samples",
        "failed",
        "missed",
        "CPU/sample µs",
        "slowdown",
        "(range)"
    );
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    for (name, args) in configs {
        let mut ratios = Vec::new();
        let mut last = None;
        let mut cpu_per_sample = Vec::new();
        for _ in 0..PAIRS {
            let (rate_alone, cpu_alone) = alone(py);
            let mut m = under_memspy(py, args);
            ratios.push(rate_alone / m.target_rate);
            cpu_per_sample.push((m.cpu - cpu_alone).max(0.0) * 1e6 / m.samples.max(1) as f64);
            m.cpu_per_sample_us = median(cpu_per_sample.clone());
            last = Some(m);
        }
        let m = last.expect("runs");
        println!(
            "{:<20} {:>11.0} {:>9} {:>8.3}% {:>9} {:>14.1} {:>9.3}x {:>15}",
            name,
            m.achieved_hz,
            m.samples,
            100.0 * m.failed as f64 / (m.samples + m.failed).max(1) as f64,
            m.missed_ticks,
            m.cpu_per_sample_us,
            median(ratios.clone()),
            format!(
                "{:.2}-{:.2}x",
                ratios.iter().cloned().fold(f64::MAX, f64::min),
                ratios.iter().cloned().fold(0.0, f64::max)
            )
        );
    }
}
