//! How long one stack read takes, per interpreter, at depth 50.
//!
//!     cargo bench --bench stack_read
//!
//! For each provisioned interpreter a thread is parked 50 frames deep; memspy's reader walks it
//! repeatedly (non-blocking, so only the read itself is timed; and blocking, which adds stopping
//! and resuming the target's threads). The baseline, measured in the same run, is the same walk
//! with every cache disabled: a new reader per read, which must locate nothing (the binary is
//! reused) but decodes every code object again, as a reader without caches would.
//!
//! Then the per-sample cost of greenlets: a gevent program with 1,000 greenlets parked ten
//! frames deep (fixtures/gevent_many.py), on each interpreter whose greenlet wheel is
//! provisioned. A sample reads the thread's stack and then every greenlet's state and parked
//! frames (the GC walks that find new greenlets run on a thread of their own, not timed); the
//! ratio is against the thread's stack read alone, measured in the same run.
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use memspy::python::units::{ThreadRef, Units};
use memspy::python::{self, Snapshot, StackReader};
use memspy::target::{lock, ProcessMemory};

const DEPTH: usize = 50;

fn per_read(iterations: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / iterations as f64
}

fn main() {
    println!("stack read at depth {DEPTH} (microseconds per read; median of 5 runs)");
    println!(
        "{:<22} {:>8} {:>10} {:>9} {:>12} {:>10} {:>8}",
        "interpreter", "frames", "syscalls", "read", "no caches", "ratio", "blocking"
    );
    for py in common::interpreters() {
        let (target, _) = common::start_fixture(&py, "deep.py", &[&DEPTH.to_string(), "park"]);
        let pid = target.pid() as i32;
        let binary = python::locate(pid).expect("locate");
        let mut reader = StackReader::new(ProcessMemory::new(pid), binary.clone()).expect("reader");
        let mut snap = Snapshot::default();
        reader.read(&mut snap).expect("read");
        let frames = snap
            .threads
            .iter()
            .map(|t| t.frames.len())
            .max()
            .unwrap_or(0);
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let warm = median(
            (0..5)
                .map(|_| per_read(2000, || reader.read(&mut snap).expect("read")))
                .collect(),
        );
        let syscalls = reader.last_reads;
        let cold = median(
            (0..5)
                .map(|_| {
                    per_read(50, || {
                        let mut r =
                            StackReader::new(ProcessMemory::new(pid), binary.clone()).unwrap();
                        r.read(&mut snap).expect("read");
                    })
                })
                .collect(),
        );
        let blocking = median(
            (0..5)
                .map(|_| {
                    per_read(200, || {
                        let _stopped = lock::stop(pid).expect("stop");
                        reader.read(&mut snap).expect("read");
                    })
                })
                .collect(),
        );
        println!(
            "{:<22} {:>8} {:>10} {:>9.1} {:>12.1} {:>9.1}x {:>8.1}",
            py.label,
            frames,
            syscalls,
            warm,
            cold,
            cold / warm,
            blocking
        );
        drop(target);
    }
    greenlets();
}

const GREENLETS: usize = 1000;

fn greenlets() {
    println!();
    println!(
        "a sample with {GREENLETS} parked greenlets (microseconds per sample; median of 5 runs)"
    );
    println!(
        "{:<22} {:>9} {:>10} {:>12} {:>10} {:>8}",
        "interpreter", "greenlets", "syscalls", "thread only", "with units", "ratio"
    );
    for py in common::interpreters() {
        let minor: String = py.version.split('.').take(2).collect::<Vec<_>>().join("");
        let Some(site) = common::venv(&format!("sites/gevent-cp{minor}")) else {
            continue;
        };
        let mut cmd = std::process::Command::new(&py.exe);
        cmd.arg(common::fixtures_dir().join("gevent_many.py"))
            .arg(GREENLETS.to_string())
            .env("PYTHONPATH", &site);
        let (target, _) = common::start_target(cmd, &format!("{} gevent_many.py", py.label));
        let pid = target.pid() as i32;
        let binary = python::locate(pid).expect("locate");
        let mut reader = StackReader::new(ProcessMemory::new(pid), binary).expect("reader");
        let mut snap = Snapshot::default();
        reader.read(&mut snap).expect("read");
        let refs: Vec<ThreadRef> = snap
            .threads
            .iter()
            .map(|t| ThreadRef {
                tstate: t.tstate,
                ident: t.thread_id,
                main: true,
            })
            .collect();
        let mut units = Units::new(pid);
        let clock = Instant::now();
        let now = || clock.elapsed().as_nanos() as u64;
        // Until the background walks have found them all.
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while units.units.len() < GREENLETS && Instant::now() < deadline {
            units.read(&mut reader, &refs, now(), false).expect("units");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let found = units.units.len();
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let thread_only = median(
            (0..5)
                .map(|_| per_read(500, || reader.read(&mut snap).expect("read")))
                .collect(),
        );
        let with_units = median(
            (0..5)
                .map(|_| {
                    per_read(100, || {
                        reader.read(&mut snap).expect("read");
                        units.read(&mut reader, &refs, now(), false).expect("units");
                    })
                })
                .collect(),
        );
        println!(
            "{:<22} {:>9} {:>10} {:>12.1} {:>10.1} {:>7.1}x",
            py.label,
            found,
            units.last_reads,
            thread_only,
            with_units,
            with_units / thread_only
        );
        drop(target);
    }
}
