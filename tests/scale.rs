//! Big services: with hundreds of idle threads (not walked, stopped or read while their CPU
//! time does not move), every thread still counts its wall time on its own stack and the busy
//! ones their CPU, in both modes; at rates where the clock spins and counters are read less
//! often than stacks, attribution is the same; a long attach keeps memspy's memory flat and
//! the recording small.

mod common;

use common::{interpreter_from, memspy, start_fixture};
use memspy::analysis::{Filter, Metric};
use memspy::recording::Recording;

fn total(rec: &Recording, metric: Metric, qualname: &str) -> f64 {
    common::function_total(rec, &Filter::default(), metric, qualname) / 1e6
}

fn check(blocking: bool) {
    check_at(blocking, 300, "100");
}

/// `threads` threads (two busy) recorded at `rate` Hz for 1.5 s.
fn check_at(blocking: bool, threads: usize, rate: &str) {
    let py = interpreter_from((3, 11));
    let (target, _) = start_fixture(&py, "many_threads.py", &[&threads.to_string(), "2"]);
    let idle = (threads - 2) as f64;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.msp");
    let pid = target.pid().to_string();
    let mut args = vec![
        "record",
        "--pid",
        &pid,
        "-d",
        "1.5",
        "-r",
        rate,
        "-o",
        file.to_str().unwrap(),
    ];
    if blocking {
        args.push("--blocking");
    }
    let out = memspy(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = Recording::open(&file).unwrap();
    let seconds = (rec.samples.last().unwrap().time_us - rec.samples[0].time_us) as f64 / 1e6;
    let idle_wall = total(&rec, Metric::Wall, "idle");
    let busy_wall = total(&rec, Metric::Wall, "busy");
    let busy_cpu = total(&rec, Metric::Cpu, "busy");
    let idle_cpu = total(&rec, Metric::Cpu, "idle");
    eprintln!(
        "blocking {blocking}: {seconds:.2} s: idle wall {idle_wall:.1} s, busy wall {busy_wall:.2} s, cpu busy {busy_cpu:.2} s idle {idle_cpu:.3} s"
    );
    // The idle threads and 2 busy ones, each counted at every tick.
    assert!(
        idle_wall >= 0.9 * idle * seconds && idle_wall <= 1.1 * idle * seconds,
        "idle threads: {idle_wall:.1} s of wall over {seconds:.2} s"
    );
    assert!(
        rec.failures.is_empty(),
        "{} failed samples",
        rec.failures.len()
    );
    // Blocking mode says how long it held threads; non-blocking held none.
    let pauses = rec.stats.pauses.expect("pauses recorded");
    assert_eq!(pauses.0 > 0, blocking, "pauses {pauses:?}");
    assert!(
        busy_wall >= 0.9 * 2.0 * seconds,
        "busy threads: {busy_wall:.2} s of wall over {seconds:.2} s"
    );
    // The two busy threads share the GIL: about one core between them (less on a loaded
    // machine), all theirs.
    assert!(
        busy_cpu >= 0.25 * seconds,
        "busy threads: {busy_cpu:.2} s of CPU"
    );
    assert!(
        idle_cpu < 0.05 * busy_cpu,
        "idle threads: {idle_cpu:.3} s of CPU"
    );
}

#[test]
fn hundreds_of_idle_threads_nonblocking() {
    check(false);
}

#[test]
fn hundreds_of_idle_threads_blocking() {
    check(true);
}

/// At 20 kHz the clock spins, and from 2 kHz the counters are read about once a millisecond,
/// not at every tick: CPU time still goes to the busy threads, wall time to every thread.
/// (Blocking mode at 20 kHz stops the busy threads so often that they hardly run: the
/// observer's cost, not a fault of attribution.)
#[test]
fn high_rates_attribute_like_low_ones() {
    check_at(false, 20, "20000");
    check_at(true, 20, "2000");
}

/// memspy's resident memory of a steady 50-thread service does not grow after warm-up, and a
/// thread-sample whose stack repeats costs under 8 bytes of recording.
#[test]
fn a_long_attach_stays_flat() {
    let py = interpreter_from((3, 11));
    let (target, _) = start_fixture(&py, "many_threads.py", &["50", "5"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.msp");
    let mut memspy = std::process::Command::new(common::memspy_bin())
        .args([
            "record",
            "--pid",
            &target.pid().to_string(),
            "-d",
            "12",
            "-o",
        ])
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rss_kib = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    std::thread::sleep(std::time::Duration::from_secs(4));
    let warm = rss_kib(memspy.id());
    std::thread::sleep(std::time::Duration::from_secs(7));
    let late = rss_kib(memspy.id());
    assert!(memspy.wait().unwrap().success());
    let rec = Recording::open(&file).unwrap();
    let bytes = std::fs::metadata(&file).unwrap().len() as f64;
    let per_thread_sample = bytes / rec.thread_samples.len() as f64;
    eprintln!(
        "memspy RSS {warm} KiB at 4 s, {late} KiB at 11 s; {per_thread_sample:.1} bytes per thread-sample"
    );
    assert!(
        late <= warm + 1024,
        "memspy grew from {warm} KiB to {late} KiB"
    );
    assert!(
        per_thread_sample < 8.0,
        "{per_thread_sample:.1} bytes per thread-sample"
    );
}
