//! What memory events cost an allocation-heavy target: its slowdown recorded with them, against
//! time sampling alone and against the target alone, in the same run; and memspy's CPU.
//!
//!     cargo bench --bench memory_events             # CPython 3.12 (pyenv) if provisioned
//!     MEMSPY_BENCH_PYTHON=debian-sid-3.14 cargo bench --bench memory_events
//!
//! The target is `fixtures/alloc_storm.py 4`: 4 GiB allocated and freed in pieces of 4 KiB to
//! 1 MiB, with MALLOC_MMAP_THRESHOLD_=4096 so that glibc maps every piece and unmaps it when
//! freed: a page fault for every page and a munmap for every piece, the worst case for memory
//! events (about 1 M faults and 13,500 frees in 3 s). It reports how long its allocations took.
//! Each round runs the target alone, recorded with --no-memory-events, and recorded with memory
//! events (the defaults), back to back; nine rounds; slowdowns are medians of the rounds'
//! ratios, with their range. Target and memspy run on CPUs of their own (taskset): on a small
//! machine the scheduler moving them around is most of the noise.
#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};

use memspy::recording::Recording;

const ROUNDS: usize = 9;
const TARGET_CPU: &str = "1";
const MEMSPY_CPU: &str = "0";
const GIB: &str = "4";

fn seconds(stdout: &[u8]) -> f64 {
    String::from_utf8_lossy(stdout)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("fixture time")
}

fn target(py: &common::Interpreter) -> Vec<String> {
    vec![
        "taskset".into(),
        "-c".into(),
        TARGET_CPU.into(),
        py.exe.to_string_lossy().into_owned(),
        common::fixtures_dir()
            .join("alloc_storm.py")
            .to_string_lossy()
            .into_owned(),
        GIB.into(),
    ]
}

/// The target's own time, and CPU seconds of everything run.
fn alone(py: &common::Interpreter) -> (f64, f64) {
    let cpu = common::cpu_of_children();
    let argv = target(py);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .env("MALLOC_MMAP_THRESHOLD_", "4096")
        .output()
        .expect("run the target");
    (seconds(&out.stdout), common::cpu_of_children() - cpu)
}

/// The target's own time, CPU seconds of memspy and target, and the recording's summary.
fn recorded(py: &common::Interpreter, args: &[&str]) -> (f64, f64, Recording) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.msp");
    let cpu = common::cpu_of_children();
    let out = Command::new("taskset")
        .args(["-c", MEMSPY_CPU])
        .arg(common::memspy_bin())
        .arg("record")
        .arg("-o")
        .arg(&path)
        .args(args)
        .arg("--")
        .args(target(py))
        .env("MALLOC_MMAP_THRESHOLD_", "4096")
        .stderr(Stdio::null())
        .output()
        .expect("run memspy");
    let cpu = common::cpu_of_children() - cpu;
    (
        seconds(&out.stdout),
        cpu,
        Recording::open(&path).expect("recording"),
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
        "memory events on an allocation storm ({}; {GIB} GiB in 4 KiB-1 MiB pieces, every piece \
         mapped and unmapped), {ROUNDS} rounds",
        py.label
    );
    let (mut vs_alone, mut vs_ticks, mut ticks_vs_alone) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_events, mut cpu_ticks, mut reads) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..ROUNDS {
        let (t_alone, cpu_alone) = alone(py);
        let (t_ticks, cpu_t, _) = recorded(py, &["--no-memory-events"]);
        let (t_events, cpu_e, rec) = recorded(py, &[]);
        vs_alone.push(t_events / t_alone);
        vs_ticks.push(t_events / t_ticks);
        ticks_vs_alone.push(t_ticks / t_alone);
        // memspy's CPU: the recorded pair's CPU minus the target's alone.
        cpu_ticks.push(cpu_t - cpu_alone);
        cpu_events.push(cpu_e - cpu_alone);
        let summary = rec.memory_events_summary.clone().unwrap_or_default();
        reads.push(summary.samples as f64);
        last = Some(summary);
    }
    let range = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        format!("{lo:.2}-{hi:.2}")
    };
    println!(
        "  target slowdown, memory events vs alone:        {:.2}x ({})",
        median(&mut vs_alone.clone()),
        range(&vs_alone)
    );
    println!(
        "  target slowdown, memory events vs ticks only:   {:.2}x ({})   goal: under 1.10x",
        median(&mut vs_ticks.clone()),
        range(&vs_ticks)
    );
    println!(
        "  target slowdown, ticks only vs alone:           {:.2}x ({})",
        median(&mut ticks_vs_alone.clone()),
        range(&ticks_vs_alone)
    );
    println!(
        "  memspy CPU: {:.2} s with memory events, {:.2} s with ticks only (medians)",
        median(&mut cpu_events),
        median(&mut cpu_ticks)
    );
    if let Some(m) = last {
        println!(
            "  memory events: {:.0} stack reads (median), {} fault and {} free records, period \
             {} up to {}, {} lost; delay median {} us, p99 {} us",
            median(&mut reads),
            m.faults,
            m.frees,
            m.period,
            m.max_period,
            m.lost,
            m.delay_p50_us,
            m.delay_p99_us
        );
    }
}
