//! Big services: with hundreds of idle threads (not walked, stopped or read while their CPU
//! time does not move), every thread still counts its wall time on its own stack and the busy
//! ones their CPU, in both modes.

mod common;

use common::{interpreter_from, memspy, start_fixture};
use memspy::analysis::functions::by_function;
use memspy::analysis::{attribute, Filter, Metric};
use memspy::recording::Recording;

fn total(rec: &Recording, metric: Metric, qualname: &str) -> f64 {
    let attr = attribute(rec, &Filter::default());
    by_function(rec, &attr, metric)
        .iter()
        .filter(|f| f.qualname == qualname)
        .map(|f| f.total_value)
        .sum::<f64>()
        / 1e6
}

fn check(blocking: bool) {
    let py = interpreter_from((3, 11));
    let (target, _) = start_fixture(&py, "many_threads.py", &["300", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.msp");
    let pid = target.pid().to_string();
    let mut args = vec![
        "record",
        "--pid",
        &pid,
        "-d",
        "1.5",
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
    // 298 idle threads and 2 busy ones, each counted at every tick.
    assert!(
        idle_wall >= 0.9 * 298.0 * seconds && idle_wall <= 1.1 * 298.0 * seconds,
        "idle threads: {idle_wall:.1} s of wall over {seconds:.2} s"
    );
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
