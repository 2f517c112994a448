//! Greenlets in recordings and reports: a gevent WSGI service (Flask under gunicorn's gevent
//! worker) whose requests wait in a known function. Every waiting request greenlet counts
//! where it waits; CPU time still goes to the code that computes; `--tasks off` gives the OS
//! threads' view; `check --max-wall` finds the waiting function.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{fixtures_dir, get, memspy};
use memspy::analysis::{Filter, Metric};
use memspy::recording::reader::TaskState;
use memspy::recording::Recording;

/// The total (self and callees) of `metric` for the function named `qualname`, in seconds.
fn total_s(rec: &Recording, threads_only: bool, metric: Metric, qualname: &str) -> f64 {
    let filter = Filter {
        threads_only,
        ..Filter::default()
    };
    common::function_total(rec, &filter, metric, qualname) / 1e6
}

/// Record gunicorn with one gevent worker serving fixtures/web/app.py while `clients` clients
/// each make `requests` GET /test requests (each waits 0.3 s in `delay()`, then computes in
/// `build()`); the recording and the clients' summed request latencies (s).
fn record_gevent_service(
    dir: &std::path::Path,
    clients: usize,
    requests: usize,
) -> Option<(Recording, f64)> {
    let rec_path = dir.join("gevent.msp");
    let (service, port) = common::record_gunicorn("gevent", 1, &rec_path)?;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let mut waited = 0.0;
                for _ in 0..requests {
                    let start = Instant::now();
                    get(port, "/test").unwrap();
                    waited += start.elapsed().as_secs_f64();
                }
                waited
            })
        })
        .collect();
    let latencies: f64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    std::thread::sleep(Duration::from_millis(200));
    common::stop_gunicorn(service, &rec_path, "gevent-service.msp");
    Some((Recording::open(&rec_path).unwrap(), latencies))
}

#[test]
fn gevent_service_waits_where_its_requests_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (clients, requests) = (8, 5);
    let Some((rec, latencies)) = record_gevent_service(dir.path(), clients, requests) else {
        return;
    };
    let greenlets = rec
        .tasks
        .iter()
        .filter(|t| t.kind == memspy::recording::format::TaskKind::Greenlet)
        .count();
    let waiting = rec
        .task_changes
        .iter()
        .filter(|c| matches!(c.state, TaskState::Waiting(Some(_))))
        .count();
    // Each request has a greenlet of its own, and each waited. A greenlet that ends and one
    // made at the same addresses before the next sample are one unit of the recording (gevent
    // reuses memory), so there may be fewer units than requests, never fewer than clients.
    assert!(
        greenlets >= clients,
        "{greenlets} greenlets recorded for {clients} clients"
    );
    assert!(
        waiting >= clients * requests / 2,
        "{waiting} waiting states"
    );

    let delay = total_s(&rec, false, Metric::Wall, "delay");
    let view = total_s(&rec, false, Metric::Wall, "test_view");
    eprintln!(
        "{} requests, {latencies:.2} s of latency: delay {delay:.2} s, test_view {view:.2} s of wall",
        clients * requests
    );
    // The request greenlets' wall time is what the clients waited; at least 80 % of it is in
    // delay(), and no more than all of it.
    assert!(
        delay >= 0.8 * latencies && delay <= 1.05 * latencies,
        "delay has {delay:.2} s of wall for {latencies:.2} s of requests"
    );
    // CPU time is the code that computes, not the waiting.
    let build_cpu = total_s(&rec, false, Metric::Cpu, "build");
    let delay_cpu = total_s(&rec, false, Metric::Cpu, "delay");
    eprintln!("cpu: build {build_cpu:.3} s, delay {delay_cpu:.3} s");
    assert!(build_cpu > 0.0, "build has no CPU time");
    assert!(
        delay_cpu < 0.2 * build_cpu,
        "delay has {delay_cpu:.3} s of CPU, build {build_cpu:.3} s"
    );
    // The OS threads' view: the waiting greenlets are not on the thread.
    let delay_threads = total_s(&rec, true, Metric::Wall, "delay");
    assert!(
        delay_threads < 0.1 * delay,
        "--tasks off: delay still has {delay_threads:.2} s"
    );

    // As a user runs it: the flamegraph's widest request frame, the budget check.
    let file = dir.path().join("gevent.msp");
    let file = file.to_str().unwrap();
    let svg = dir.path().join("wall.svg");
    let out = memspy(&["flame", "-i", file, svg.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("delay (") && text.contains("app.py:"),
        "the flamegraph has no delay frame"
    );
    let over = memspy(&["check", "-i", file, "--max-wall", "app.delay=1s"]);
    assert_eq!(
        over.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&over.stdout)
    );
    let limit = format!("app.delay={}s", (latencies * 1.5).ceil());
    let within = memspy(&["check", "-i", file, "--max-wall", &limit]);
    assert!(
        within.status.success(),
        "{}{}",
        String::from_utf8_lossy(&within.stdout),
        String::from_utf8_lossy(&within.stderr)
    );
    let off = memspy(&[
        "check",
        "-i",
        file,
        "--tasks",
        "off",
        "--max-wall",
        "app.delay=1s",
    ]);
    assert!(
        off.status.success(),
        "--tasks off: {}",
        String::from_utf8_lossy(&off.stdout)
    );
}

/// `memspy dump --pstree` prints the await tree of fixtures/asyncio_tasks.py exactly as
/// CPython's own `python -m asyncio pstree` does; a recording counts every waiting task's wall
/// time where it waits. On 3.14.10 only the main thread's tasks with ASCII names are compared:
/// CPython 3.14.10's reader reads the main thread only and garbles non-ASCII names (its bugs
/// gh-149230 and gh-149214); 3.15 is compared with other threads, a task left by a thread that
/// ended, and a non-ASCII name.
fn check_asyncio(label: &str, main_only: bool) {
    let Some(py) = common::interpreter(label) else {
        return;
    };
    let mut cmd = Command::new(&py.exe);
    cmd.arg(fixtures_dir().join("asyncio_tasks.py"));
    if main_only {
        cmd.arg("main-only");
    }
    let (target, _) = common::start_target(cmd, &format!("{label} asyncio_tasks.py"));
    let pid = target.pid().to_string();
    let theirs = Command::new(&py.exe)
        .args(["-m", "asyncio", "pstree", &pid])
        .output()
        .unwrap();
    assert!(
        theirs.status.success(),
        "{label}: python -m asyncio pstree: {}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    let ours = memspy(&["dump", "--pid", &pid, "--pstree"]);
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let (theirs, ours) = (
        String::from_utf8(theirs.stdout).unwrap(),
        String::from_utf8(ours.stdout).unwrap(),
    );
    assert!(
        theirs.lines().count() >= 30,
        "{label}: CPython printed {theirs}"
    );
    assert_eq!(
        ours, theirs,
        "{label}: memspy's tree differs from CPython's"
    );

    // Recorded: every task waits somewhere; the nine that sleep count a second each.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.msp");
    let out = memspy(&[
        "record",
        "--pid",
        &pid,
        "-d",
        "1",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = Recording::open(&file).unwrap();
    let tasks = rec
        .tasks
        .iter()
        .filter(|t| t.kind == memspy::recording::format::TaskKind::Asyncio)
        .count();
    let sleeping = if main_only { 8 } else { 10 };
    assert!(tasks >= sleeping, "{label}: {tasks} tasks recorded");
    let sleep = total_s(&rec, false, Metric::Wall, "sleep");
    assert!(
        sleep >= 0.8 * sleeping as f64 && sleep <= 1.2 * sleeping as f64,
        "{label}: {sleep:.2} s of wall in sleep for {sleeping} sleeping tasks over 1 s"
    );
    let threads_only = total_s(&rec, true, Metric::Wall, "sleep");
    assert!(
        threads_only < 0.1,
        "{label}: --tasks off still has {threads_only:.2} s in sleep"
    );
}

#[test]
fn asyncio_tasks_debian_3_14() {
    check_asyncio("debian-sid-3.14", true);
}

#[test]
fn asyncio_tasks_debian_3_15() {
    check_asyncio("debian-sid-3.15", false);
}

/// Before 3.14 there is no published layout of asyncio's tasks: memspy says so.
#[test]
fn asyncio_before_3_14_is_named() {
    let Some(py) = common::interpreter("pyenv-3.13.0") else {
        return;
    };
    let (target, _) = common::start_fixture(&py, "asyncio_tasks.py", &["main-only"]);
    let out = memspy(&["dump", "--pid", &target.pid().to_string()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("asyncio tasks are read on CPython 3.14 and later"),
        "{}: {err}",
        py.label
    );
}
