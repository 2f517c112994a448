//! `memspy record` and `memspy info` with real interpreters: what a recording holds, workers,
//! crash safety, damaged files, exit statuses and signals.
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{fixtures_dir, interpreters, marker, memspy, memspy_bin, start_fixture, Interpreter};
use memspy::recording::{EndReason, Recording};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// `memspy record -o <tmp>/run.msp <args>`; returns its output, the recording path and the dir.
fn record(args: &[&str]) -> (Output, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.msp");
    let out = Command::new(memspy_bin())
        .arg("record")
        .arg("-o")
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, path, dir)
}

fn info_json(path: &Path) -> Value {
    let out = memspy(&["info", "--json", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "info: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Names (qualified) of the functions on the stacks of a recording's samples.
fn functions_seen(rec: &Recording) -> Vec<String> {
    rec.functions
        .iter()
        .map(|f| rec.string(f.qualname).to_string())
        .collect()
}
fn check_alloc(py: &Interpreter) {
    let script = fixtures_dir().join("alloc.py");
    let (out, path, _dir) = record(&[
        "-r",
        "200",
        "--",
        py.exe.to_str().unwrap(),
        script.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: {}",
        py.label,
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = Recording::open(&path).unwrap();
    assert!(rec.complete, "{}: recording not closed", py.label);
    assert_eq!(rec.processes.len(), 1, "{}", py.label);
    assert_eq!(
        rec.string(rec.processes[0].python),
        py.version,
        "{}",
        py.label
    );
    assert_eq!(rec.processes[0].end_reason, Some(EndReason::Exited));
    assert_eq!(rec.processes[0].exit, Some(0));
    let functions = functions_seen(&rec);
    for f in ["grow", "hold", "main"] {
        assert!(
            functions.iter().any(|n| n == f),
            "{}: {f} not in {functions:?}",
            py.label
        );
    }
    // Some sample caught grow() on its allocation line, and hold() on its line.
    let grow_line = marker("alloc.py", "grow");
    let lines_of = |name: &str| -> Vec<i64> {
        rec.frames
            .iter()
            .filter(|fr| rec.string(rec.functions[fr.function as usize].qualname) == name)
            .map(|fr| fr.line as i64)
            .collect()
    };
    assert!(
        lines_of("grow").contains(&grow_line),
        "{}: grow lines {:?}",
        py.label,
        lines_of("grow")
    );
    assert!(
        lines_of("hold").contains(&marker("alloc.py", "hold")),
        "{}",
        py.label
    );
    // RSS rises by the 200 MiB the fixture allocates, while grow() runs.
    let in_function = |s: &memspy::recording::reader::Sample, name: &str| {
        rec.threads_of(s).iter().any(|t| {
            t.stack.is_some_and(|st| {
                rec.stack_frames(st)
                    .any(|f| rec.string(rec.functions[f.function as usize].qualname) == name)
            })
        })
    };
    let before = rec
        .samples
        .iter()
        .filter(|s| !in_function(s, "hold"))
        .map(|s| s.rss_bytes)
        .min()
        .unwrap();
    // The median: RSS and stacks are read a moment apart, so under load a sample can pair
    // the new stack with an RSS read just before (seen once in a full run: 12 MiB short).
    let mut holding: Vec<u64> = rec
        .samples
        .iter()
        .filter(|s| in_function(s, "hold"))
        .map(|s| s.rss_bytes)
        .collect();
    holding.sort_unstable();
    let holding = holding[holding.len() / 2];
    assert!(
        holding >= before + 190 * MIB,
        "{}: rss {} MiB -> {} MiB",
        py.label,
        before / MIB,
        holding / MIB
    );
    let samples = rec.samples.len();
    assert!(
        samples >= 150,
        "{}: only {samples} samples at 200 Hz over ~1.5 s",
        py.label
    );
    let per_thread_sample = rec.file_bytes as f64 / rec.thread_samples.len() as f64;
    eprintln!(
        "{}: {samples} samples, {:.1} bytes per sample with definitions",
        py.label, per_thread_sample
    );
}

per_interpreter! {
    check_alloc;
    record_pyenv_3_8 => "pyenv-3.8.18",
    record_pyenv_3_9 => "pyenv-3.9.18",
    record_pyenv_3_10 => "pyenv-3.10.13",
    record_pyenv_3_11 => "pyenv-3.11.7",
    record_pyenv_3_12 => "pyenv-3.12.1",
    record_pyenv_3_13 => "pyenv-3.13.0",
    record_debian_3_9 => "debian-bullseye-3.9",
    record_debian_3_11 => "debian-bookworm-3.11",
    record_debian_3_13 => "debian-trixie-3.13",
    record_debian_3_14 => "debian-sid-3.14",
    record_debian_3_15 => "debian-sid-3.15",
}

/// A supervisor with a multiprocessing worker, a forked worker and a worker that dies young and
/// is replaced: every worker is recorded with its own samples and memory.
#[test]
fn subprocesses_and_replaced_workers() {
    for py in interpreters().into_iter().filter(|p| {
        ["pyenv-3.8.18", "debian-bookworm-3.11", "debian-sid-3.15"].contains(&p.label.as_str())
    }) {
        let script = fixtures_dir().join("workers.py");
        let (out, path, _dir) = record(&[
            "--subprocesses",
            "--",
            py.exe.to_str().unwrap(),
            script.to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            py.label,
            String::from_utf8_lossy(&out.stderr)
        );
        let workers: BTreeMap<u32, i32> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3 && f[0] == "worker")
                    .then(|| (f[1].parse().unwrap(), f[2].parse().unwrap()))
            })
            .collect();
        assert_eq!(workers.len(), 5, "{}: {workers:?}", py.label);
        let rec = Recording::open(&path).unwrap();
        // The worker that lived 0.2 s was caught and sampled.
        let brief = rec.processes.iter().position(|p| p.pid == workers[&4]);
        let brief = brief
            .unwrap_or_else(|| panic!("{}: the 0.2 s worker was not recorded", py.label))
            as u32;
        let brief_samples = rec.samples.iter().filter(|s| s.process == brief).count();
        assert!(
            brief_samples >= 5,
            "{}: the 0.2 s worker has {brief_samples} samples",
            py.label
        );
        for (n, pid) in workers.iter().filter(|(n, _)| **n < 4) {
            let id = rec
                .processes
                .iter()
                .position(|p| p.pid == *pid)
                .unwrap_or_else(|| panic!("{}: worker {n} (pid {pid}) not recorded", py.label))
                as u32;
            let samples: Vec<_> = rec.samples.iter().filter(|s| s.process == id).collect();
            assert!(
                samples.len() >= 20,
                "{}: worker {n}: {} samples",
                py.label,
                samples.len()
            );
            let rss_min = samples.iter().map(|s| s.rss_bytes).min().unwrap();
            let rss_max = samples.iter().map(|s| s.rss_bytes).max().unwrap();
            let expected = 10 * (*n as u64 + 1) * MIB;
            assert!(
                rss_max - rss_min >= expected * 6 / 10,
                "{}: worker {n} grew {} MiB",
                py.label,
                (rss_max - rss_min) / MIB
            );
            let p = &rec.processes[id as usize];
            assert!(p.parent.is_some(), "{}: worker {n} has no parent", py.label);
            let serve = rec.threads_of(samples[samples.len() / 2]).iter().any(|t| {
                t.stack.is_some_and(|st| {
                    rec.stack_frames(st)
                        .any(|f| rec.string(rec.functions[f.function as usize].name) == "serve")
                })
            });
            assert!(serve, "{}: worker {n} not seen in serve()", py.label);
        }
        let young = &rec.processes[rec
            .processes
            .iter()
            .position(|p| p.pid == workers[&1])
            .unwrap()];
        assert_eq!(young.end_reason, Some(EndReason::Exited), "{}", py.label);
        assert!(
            young.end_us.unwrap() < 1_500_000,
            "{}: worker 1 ended at {:?}",
            py.label,
            young.end_us
        );
    }
}

/// kill -9 of memspy: the file is readable and holds the samples up to about a second before.
#[test]
fn killed_recorder_leaves_a_readable_file() {
    let py = common::interpreter_from((3, 11));
    let (target, _) = start_fixture(&py, "spin.py", &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.msp");
    let started = Instant::now();
    let mut rec = Command::new(memspy_bin())
        .args([
            "record",
            "--pid",
            &target.pid().to_string(),
            "-o",
            path.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    rec.kill().unwrap();
    let lived = started.elapsed();
    rec.wait().unwrap();
    let info = info_json(&path);
    assert_eq!(info["complete"], false);
    let recording = Recording::open(&path).unwrap();
    let last = recording
        .samples
        .last()
        .expect("samples were recovered")
        .time_us;
    assert!(
        Duration::from_micros(last) + Duration::from_millis(1300) >= lived,
        "last sample at {last} µs, memspy lived {lived:?}: more than ~1 s of samples lost"
    );
    // The target was left running.
    assert!(target.pid() > 0 && std::path::Path::new(&format!("/proc/{}", target.pid())).exists());
}

/// Damaged recordings: `info` reports what it recovered and never panics.
#[test]
fn truncated_and_corrupt_recordings() {
    let py = interpreters().into_iter().next().expect("interpreter");
    let script = fixtures_dir().join("alloc.py");
    let (out, path, dir) = record(&[
        "--",
        py.exe.to_str().unwrap(),
        script.to_str().unwrap(),
        "20",
        "0.5",
    ]);
    assert!(out.status.success());
    let good = std::fs::read(&path).unwrap();
    let full = info_json(&path)["samples"].as_u64().unwrap();

    let cut = dir.path().join("cut.msp");
    std::fs::write(&cut, &good[..good.len() * 6 / 10]).unwrap();
    let info = info_json(&cut);
    assert!(
        info["damage"].as_str().unwrap().contains("cut short"),
        "{info}"
    );
    assert!(info["samples"].as_u64().unwrap() <= full);

    for at in [good.len() / 3, good.len() / 2, good.len() - 10] {
        let mut bad = good.clone();
        bad[at] ^= 0x5a;
        let flipped = dir.path().join("flipped.msp");
        std::fs::write(&flipped, &bad).unwrap();
        let out = memspy(&["info", flipped.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("panicked"));
        // A flipped length field may make the file look cut short instead: either way the
        // damage is reported and the records before it are kept.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("damaged at byte") || stdout.contains("cut short at byte"),
            "flip at {at}: {stdout}"
        );
    }

    // Not a recording at all, an empty file, a missing file: one clear line, status 2.
    for (name, content) in [
        ("text.msp", &b"hello world, not a recording"[..]),
        ("empty.msp", &b""[..]),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        let out = memspy(&["info", p.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("memspy: error:") && stderr.contains("not a memspy recording"),
            "{stderr}"
        );
    }
    let out = memspy(&["info", dir.path().join("missing.msp").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// The launched program's exit status is memspy's: 0, 3, and 143 for death by SIGTERM.
#[test]
fn exit_status_passthrough() {
    let py = interpreters().into_iter().next().expect("interpreter");
    let exe = py.exe.to_str().unwrap();
    for (code, expected) in [
        ("import sys; sys.exit(0)", 0),
        ("import sys; sys.exit(3)", 3),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
            143,
        ),
    ] {
        let (out, path, _dir) = record(&["--", exe, "-c", code]);
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{code}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(Recording::open(&path).unwrap().complete);
    }
}

/// stdin, stdout and stderr reach the program unchanged.
#[test]
fn standard_streams_pass_through() {
    let py = interpreters().into_iter().next().expect("interpreter");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(memspy_bin())
        .args([
            "record",
            "-o",
            dir.path().join("io.msp").to_str().unwrap(),
            "--",
            py.exe.to_str().unwrap(),
            "-c",
        ])
        .arg("import sys; line = input(); print(line.upper()); print('to stderr', file=sys.stderr)")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("to stderr"));
    assert!(out.status.success());
}

/// SIGTERM to memspy is passed on to a program it launched; the recording is finished.
#[test]
fn sigterm_is_forwarded_to_the_launched_program() {
    let py = interpreters().into_iter().next().expect("interpreter");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("term.msp");
    let child = Command::new(memspy_bin())
        .args([
            "record",
            "-o",
            path.to_str().unwrap(),
            "--",
            py.exe.to_str().unwrap(),
            "-c",
            "import time; time.sleep(60)",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    let rec = Recording::open(&path).unwrap();
    assert!(rec.complete);
    assert!(!rec.samples.is_empty());
}

/// SIGINT to memspy attached to a process ends the recording and leaves the process running.
#[test]
fn sigint_ends_an_attached_recording_and_the_target_runs_on() {
    let py = interpreters().into_iter().next().expect("interpreter");
    let (target, _) = start_fixture(&py, "spin.py", &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attached.msp");
    let child = Command::new(memspy_bin())
        .args([
            "record",
            "--pid",
            &target.pid().to_string(),
            "-o",
            path.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a terminal: no progress line, only one line per event (the start, the process
    // found), then the summary.
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].starts_with("memspy: recording to "), "{err}");
    assert!(
        lines[1].starts_with(&format!(
            "memspy: recording process {} (Python ",
            target.pid()
        )),
        "{err}"
    );
    assert!(lines[2].contains(" samples of 1 process in "), "{err}");
    assert!(Recording::open(&path).unwrap().complete);
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", target.pid())).unwrap();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap()
        .trim_start()
        .chars()
        .next()
        .unwrap();
    assert!(
        state == 'R' || state == 'S',
        "target state {state} after memspy left"
    );
}

/// `-d` ends an attached recording after that many seconds; without -o the file is named
/// memspy-<date>-<time>.msp in the current folder, and `info` finds the newest one.
#[test]
fn duration_and_default_output() {
    let py = interpreters().into_iter().next().expect("interpreter");
    let (target, _) = start_fixture(&py, "spin.py", &[]);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(memspy_bin())
        .args(["record", "--pid", &target.pid().to_string(), "-d", "1"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(
        files[0].starts_with("memspy-") && files[0].ends_with(".msp") && files[0].len() == 26,
        "{files:?}"
    );
    let out = Command::new(memspy_bin())
        .args(["info", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = info["samples"].as_u64().unwrap();
    assert!(
        (60..=110).contains(&samples),
        "{samples} samples in 1 s at 100 Hz"
    );
}

/// `memspy record --pid PID -r 500 -d SECONDS --max-size SIZE -o OUTPUT`: its output and stderr.
fn record_capped(
    pid: u32,
    seconds: &str,
    size: &str,
    output: &Path,
) -> (std::process::Output, String) {
    let out = Command::new(memspy_bin())
        .args([
            "record",
            "--pid",
            &pid.to_string(),
            "-r",
            "500",
            "-d",
            seconds,
        ])
        .args(["--max-size", size, "-o"])
        .arg(output)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

/// `--max-size` ends a recording cleanly once its file reaches the size (at the batch that
/// crosses it: within about a second's worth of data), and the target runs on.
#[test]
fn max_size_ends_the_recording_cleanly() {
    let py = interpreters().into_iter().next().expect("interpreter");
    // Deep, changing stacks at a high rate: the file grows fast.
    let (target, _) = start_fixture(&py, "many_threads.py", &["200", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("capped.msp");
    let (out, err) = record_capped(target.pid(), "30", "256KiB", &file);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("reached --max-size (256.0 KiB)"), "{err}");
    let rec = memspy::recording::Recording::open(&file).unwrap();
    assert!(rec.complete && rec.damage.is_none());
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(
        (256 << 10..4 << 20).contains(&size),
        "{size} bytes for a 256 KiB cap"
    );
    let last = rec.samples.last().unwrap().time_us as f64 / 1e6;
    assert!(last < 25.0, "it ran {last:.1} s: the cap did not end it");
    let mut target = target;
    assert!(
        target.child.try_wait().unwrap().is_none(),
        "the target must run on"
    );
    let bad = Command::new(memspy_bin())
        .args([
            "record",
            "--pid",
            &target.pid().to_string(),
            "--max-size",
            "10%",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// `-o run-%n.msp --max-size S` rotates: each file ends cleanly near the size, a later one
/// stands alone (it starts with every definition, says which part it is, and its times go on
/// from the first file's), and together they hold every sample of the run.
#[test]
fn max_size_with_numbered_files_rotates() {
    let py = interpreters().into_iter().next().expect("interpreter");
    let (target, _) = start_fixture(&py, "many_threads.py", &["200", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("run-%n.msp");
    let (out, err) = record_capped(target.pid(), "4", "128KiB", &template);
    assert!(out.status.success(), "{err}");
    let files: Vec<_> = (1..)
        .map(|n| dir.path().join(format!("run-{n}.msp")))
        .take_while(|f| f.exists())
        .collect();
    assert!(files.len() >= 3, "{} files: {err}", files.len());
    assert!(
        err.contains(&format!("written to {} files", files.len())),
        "{err}"
    );
    let summary: u64 = err
        .lines()
        .find(|l| l.contains(" samples of "))
        .and_then(|l| l.strip_prefix("memspy: ")?.split(' ').next())
        .map(|n| n.replace(',', "").parse().unwrap())
        .unwrap();
    assert!(err.contains("reached --max-size; going on in"), "{err}");
    let mut samples = 0;
    let mut last_time = 0;
    for (i, file) in files.iter().enumerate() {
        let rec = memspy::recording::Recording::open(file).unwrap();
        assert!(rec.complete && rec.damage.is_none(), "{}", file.display());
        assert_eq!(rec.meta.part, Some(i as u32 + 1));
        let size = std::fs::metadata(file).unwrap().len();
        if i + 1 < files.len() {
            assert!(
                (128 << 10..(128 << 10) + (64 << 10)).contains(&size),
                "{size} bytes for a 128 KiB cap"
            );
        }
        // Every part names the busy threads' function by itself.
        let svg = dir.path().join(format!("flame-{i}.svg"));
        let flame = memspy(&["flame", "-i", file.to_str().unwrap(), svg.to_str().unwrap()]);
        assert!(flame.status.success());
        assert!(std::fs::read_to_string(&svg).unwrap().contains("busy"));
        let first = rec.samples.first().unwrap().time_us;
        assert!(first >= last_time, "part {} starts at {first} us", i + 1);
        last_time = rec.samples.last().unwrap().time_us;
        samples += rec.samples.len() as u64;
    }
    assert_eq!(samples, summary, "{err}");
    let bad = memspy(&[
        "record",
        "--pid",
        &target.pid().to_string(),
        "-o",
        template.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("give --max-size too"));
}

/// On a stderr that is not a terminal, record says what happens, one line each; the recording
/// keeps each process's role and how it ended, a signal by name (read from the zombie while
/// its parent has not reaped it).
#[test]
fn process_roles_and_ends_are_told() {
    let py = interpreters().into_iter().next().expect("interpreter");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ends.msp");
    let script = "import os, signal, time\n\
        a = os.fork()\n\
        if a == 0:\n    time.sleep(30)\n    os._exit(0)\n\
        b = os.fork()\n\
        if b == 0:\n    time.sleep(0.6)\n    os._exit(3)\n\
        time.sleep(1.0)\n\
        os.kill(a, signal.SIGKILL)\n\
        time.sleep(0.5)\n\
        os.waitpid(a, 0)\n\
        os.waitpid(b, 0)\n\
        print(a, b)\n";
    let out = Command::new(memspy_bin())
        .args(["record", "--subprocesses", "-o"])
        .arg(&file)
        .arg("--")
        .arg(&py.exe)
        .args(["-c", script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<&str> = stdout.split_whitespace().collect();
    let (a, b) = (pids[0], pids[1]);
    let rec = memspy::recording::Recording::open(&file).unwrap();
    let root = rec.processes[0].pid;
    for line in [
        "memspy: recording to ".to_string(),
        format!("memspy: recording process {root} (Python "),
        format!("memspy: found process {a}, child of {root}"),
        format!("memspy: process {a} killed by SIGKILL"),
        format!("memspy: process {b} exited, status 3"),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&line)),
            "no {line:?} in\n{err}"
        );
    }
    let info = memspy(&["info", file.to_str().unwrap()]);
    let info = String::from_utf8_lossy(&info.stdout);
    let row = |pid: &str| {
        info.lines()
            .find(|l| l.split_whitespace().next() == Some(pid))
            .unwrap_or_else(|| panic!("no row for {pid} in\n{info}"))
            .to_string()
    };
    assert!(
        row(&root.to_string()).ends_with("[launched; exited, status 0]"),
        "{info}"
    );
    assert!(
        row(a).ends_with(&format!("[worker 1 of {root}; killed by SIGKILL]")),
        "{info}"
    );
    assert!(
        row(b).ends_with(&format!("[worker 2 of {root}; exited, status 3]")),
        "{info}"
    );
}

/// A rotated recording whose definitions alone (here the source text of the stdlib modules
/// sampled while importing) take half of --max-size ends instead of making file after file.
#[test]
fn rotation_ends_when_definitions_fill_the_size() {
    let py = interpreters().into_iter().next().expect("interpreter");
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("run-%n.msp");
    let script = "import time\n\
        import decimal, json, http.client, email.parser, xml.dom.minidom, unittest, argparse\n\
        t = time.time()\n\
        while time.time() - t < 2:\n    pass\n";
    let out = Command::new(memspy_bin())
        .args(["record", "-r", "2000", "--max-size", "64KiB", "-o"])
        .arg(&template)
        .arg("--")
        .arg(&py.exe)
        .args(["-c", script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("reached --max-size (64.0 KiB) and ended there"),
        "{err}"
    );
    assert!(dir.path().join("run-1.msp").exists());
    assert!(!dir.path().join("run-2.msp").exists(), "{err}");
}

/// Bad arguments and targets: one clear line, status 2.
#[test]
fn record_bad_input() {
    let mut sleep = Command::new("sleep").arg("30").spawn().unwrap();
    let out = memspy(&[
        "record",
        "--pid",
        &sleep.id().to_string(),
        "-o",
        "/tmp/never.msp",
        "-d",
        "1",
    ]);
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a CPython program"), "{stderr}");
    assert!(
        !Path::new("/tmp/never.msp").exists(),
        "no empty recording is left behind"
    );
    for args in [
        &["record"][..],
        &["record", "-r", "0", "--", "true"][..],
        &["record", "-d", "-1", "--", "true"][..],
        &["record", "--", "/no/such/program"][..],
        &["record", "-o", "/no/such/dir/x.msp", "--", "true"][..],
    ] {
        let out = memspy(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Programs that become Python later are not forgotten: a shell that execs python (the root,
/// not Python when it starts), and a Python parent whose child execs another Python program.
#[test]
fn processes_that_become_python_later() {
    let py = common::interpreter_from((3, 11));
    let alloc = fixtures_dir().join("alloc.py");
    let shell = format!(
        "sleep 0.3; exec {} {} 20 0.5",
        py.exe.display(),
        alloc.display()
    );
    let (out, path, _dir) = record(&["--", "sh", "-c", &shell]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = Recording::open(&path).unwrap();
    assert!(
        functions_seen(&rec).contains(&"grow".to_string()),
        "the exec'd python was not recorded"
    );

    let parent = format!(
        "import subprocess, sys, time\nsubprocess.run([sys.executable, {:?}, '20', '0.5'])\ntime.sleep(0.2)",
        alloc.to_str().unwrap()
    );
    let (out, path, _dir) = record(&[
        "--subprocesses",
        "--",
        py.exe.to_str().unwrap(),
        "-c",
        &parent,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = Recording::open(&path).unwrap();
    let grow = rec
        .samples
        .iter()
        .filter(|s| {
            rec.threads_of(s).iter().any(|t| {
                t.stack.is_some_and(|st| {
                    rec.stack_frames(st)
                        .any(|f| rec.string(rec.functions[f.function as usize].name) == "grow")
                })
            })
        })
        .map(|s| rec.processes[s.process as usize].pid)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(grow.len(), 1, "the child that ran alloc.py: {grow:?}");
    assert!(
        !grow.contains(&rec.processes[0].pid),
        "grow() was attributed to the parent"
    );
}

/// --memory pss records PSS and USS (and the RSS split) for each process.
#[test]
fn pss_and_uss_readings() {
    let py = common::interpreter_from((3, 11));
    let script = fixtures_dir().join("workers.py");
    let (out, path, _dir) = record(&[
        "--memory",
        "pss",
        "--subprocesses",
        "--",
        py.exe.to_str().unwrap(),
        script.to_str().unwrap(),
        "2",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = Recording::open(&path).unwrap();
    assert_eq!(rec.meta.memory, "pss");
    use memspy::recording::MemoryKind;
    for (i, p) in rec.processes.iter().enumerate() {
        let kinds: std::collections::BTreeSet<MemoryKind> = rec
            .memory
            .iter()
            .filter(|m| m.process == i as u32)
            .map(|m| m.kind)
            .collect();
        for kind in [
            MemoryKind::Pss,
            MemoryKind::Uss,
            MemoryKind::RssAnon,
            MemoryKind::RssFile,
        ] {
            assert!(kinds.contains(&kind), "pid {}: no {kind:?} reading", p.pid);
        }
        let pss = rec
            .memory
            .iter()
            .find(|m| m.process == i as u32 && m.kind == MemoryKind::Pss)
            .unwrap();
        assert!(
            pss.bytes > MIB && pss.bytes < 1 << 30,
            "pid {}: PSS {}",
            p.pid,
            pss.bytes
        );
    }
}
