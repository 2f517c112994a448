//! memspy against targets that lie about their threads, live in their own pid namespace, or
//! are held by another tracer: nothing outside the target is ever stopped, whatever its memory
//! says, and the target's own threads are the ones paused.
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fixtures_dir, memspy_bin, Interpreter};
use memspy::python::layout;
use memspy::recording::Recording;
use serde_json::Value;

/// The tid offset in glibc's struct pthread (libc's `_thread_db_pthread_tid`); the fixture
/// checks it holds the thread's own id before writing anything.
const PTHREAD_TID_OFFSET: u64 = 720;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A root-owned process doing nothing: what a hostile target would like memspy to stop.
fn victim() -> Guard {
    Guard(
        Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .expect("start sleep"),
    )
}

/// `field` of `/proc/<path>/status`.
fn status_field(path: &str, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{path}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
}

/// Every task on the machine as "pid/task/tid".
fn all_tasks() -> Vec<String> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = p.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{name}/task")) {
            for t in tasks.flatten() {
                out.push(format!("{name}/task/{}", t.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// Watches the machine while memspy runs: the victims' state and tracer (every millisecond),
/// which tasks memspy traces (every 10 ms, over every task of the machine), and whether it
/// traced the target's own threads.
struct Watch {
    stop: Arc<AtomicBool>,
    found: Arc<Mutex<Findings>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default, Debug)]
struct Findings {
    /// Victim states seen stopped or traced: (pid, State, TracerPid).
    victims_disturbed: Vec<(u32, String, String)>,
    /// Tasks outside the target that memspy traced.
    outsiders_traced: BTreeSet<String>,
    /// Tids of the target that memspy traced at some point.
    target_traced: BTreeSet<i32>,
    polls: u64,
}

impl Watch {
    fn start(victims: Vec<u32>, target: u32, memspy: Arc<Mutex<Option<u32>>>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let found = Arc::new(Mutex::new(Findings::default()));
        let (s, f) = (stop.clone(), found.clone());
        let thread = std::thread::spawn(move || {
            let mut last_scan = Instant::now() - Duration::from_secs(1);
            while !s.load(Ordering::Relaxed) {
                let mut found = f.lock().unwrap();
                found.polls += 1;
                for &v in &victims {
                    let state = status_field(&v.to_string(), "State:").unwrap_or_default();
                    let tracer = status_field(&v.to_string(), "TracerPid:").unwrap_or_default();
                    if state.starts_with('t') || state.starts_with('T') || tracer != "0" {
                        found.victims_disturbed.push((v, state, tracer));
                    }
                }
                let memspy = *memspy.lock().unwrap();
                if let (Some(m), true) = (memspy, last_scan.elapsed() > Duration::from_millis(10)) {
                    last_scan = Instant::now();
                    for task in all_tasks() {
                        if status_field(&task, "TracerPid:").as_deref() != Some(&m.to_string()) {
                            continue;
                        }
                        let (pid, tid) = task.split_once("/task/").unwrap();
                        if pid == target.to_string() {
                            found.target_traced.insert(tid.parse().unwrap());
                        } else {
                            found.outsiders_traced.insert(task);
                        }
                    }
                }
                drop(found);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Watch {
            stop,
            found,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Findings {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.found.lock().unwrap())
    }
}

/// Run memspy with `args`, telling the watch its pid; returns (status, stdout, stderr). A
/// blocking dump holds the target for 300 ms (a test hook), long enough for the watch to see.
fn run_memspy(args: &[&str], pid_slot: &Arc<Mutex<Option<u32>>>) -> (i32, String, String) {
    let child = Command::new(memspy_bin())
        .args(args)
        .env("MEMSPY_TEST_HOLD_LOCK_MS", "300")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run memspy");
    *pid_slot.lock().unwrap() = Some(child.id());
    let out = child.wait_with_output().unwrap();
    *pid_slot.lock().unwrap() = None;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Start `cmd` (whose last steps are `python fixture args`) and wait for its ready file in a
/// folder `owner` may write. Returns the process and the ready file's JSON.
fn start_ready(mut cmd: Command, owner: u32, what: &str) -> (Guard, tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    nix::unistd::chown(dir.path(), Some(owner.into()), Some(owner.into())).unwrap();
    let ready = dir.path().join("ready.json");
    let child = cmd
        .env("MEMSPY_READY", &ready)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let mut guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            return (guard, dir, serde_json::from_str(&text).unwrap());
        }
        if let Ok(Some(status)) = guard.0.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(Instant::now() < deadline, "{what}: not ready after 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where the fixture writes the lie for this interpreter: (mode, offset).
fn lie_for(py: &Interpreter) -> (&'static str, u64) {
    let (major, minor) = py.minor();
    if (major, minor) >= (3, 11) {
        let table = layout::table(&format!("{major}.{minor}")).unwrap();
        ("tstate", table.get("thread", "native_thread_id").unwrap())
    } else {
        ("pthread", PTHREAD_TID_OFFSET)
    }
}

/// An unprivileged target (nobody) whose threads claim to be two root-owned processes: in
/// blocking mode, a recording and a dump never stop or trace them, and still pause the
/// target's own threads.
fn check_lying_target(py: &Interpreter) {
    if !is_root() {
        eprintln!("*** SKIPPED: needs root (to run memspy as root against a nobody target) ***");
        return;
    }
    let victims = [victim(), victim()];
    let victim_pids: Vec<u32> = victims.iter().map(|v| v.0.id()).collect();
    let (mode, offset) = lie_for(py);
    let list = victim_pids
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new("setpriv");
    // nobody, with only the right to read files (the interpreters live under /root, which
    // nobody may not enter): it cannot ptrace or signal root's processes itself.
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
    ])
    .arg(&py.exe)
    .arg(fixtures_dir().join("hostile_tids.py"))
    .args([list.as_str(), mode, &offset.to_string()]);
    let (target, dir, ready) = start_ready(cmd, 65534, &py.label);
    assert_eq!(
        ready["errors"],
        Value::Array(vec![]),
        "{}: {ready}",
        py.label
    );
    let liars = ready["liars"].as_object().unwrap();
    assert_eq!(liars.len(), 2, "{}: {ready}", py.label);
    let honest = ready["honest"].as_i64().unwrap() as i32;
    let target_pid = target.0.id();

    let memspy = Arc::new(Mutex::new(None));
    let watch = Watch::start(victim_pids.clone(), target_pid, memspy.clone());
    let rec_path = dir.path().join("run.msp");
    let (code, _, stderr) = run_memspy(
        &[
            "record",
            "--blocking",
            "--pid",
            &target_pid.to_string(),
            "-d",
            "1.5",
            "-o",
            rec_path.to_str().unwrap(),
        ],
        &memspy,
    );
    assert_eq!(code, 0, "{}: record: {stderr}", py.label);
    let recording = watch.finish();
    // dump pauses the whole process, from the kernel's own list of its threads.
    let watch = Watch::start(victim_pids.clone(), target_pid, memspy.clone());
    let (code, stdout, stderr) = run_memspy(
        &["dump", "--pid", &target_pid.to_string(), "--json"],
        &memspy,
    );
    assert_eq!(code, 0, "{}: dump: {stderr}", py.label);
    let dumping = watch.finish();

    for (what, found) in [("record", &recording), ("dump", &dumping)] {
        assert!(
            found.polls > 3,
            "{}: {what}: the watch hardly ran ({} polls)",
            py.label,
            found.polls
        );
        assert!(
            found.victims_disturbed.is_empty(),
            "{}: {what}: victims stopped or traced: {:?}",
            py.label,
            found.victims_disturbed
        );
        assert!(
            found.outsiders_traced.is_empty(),
            "{}: {what}: memspy traced tasks outside the target: {:?}",
            py.label,
            found.outsiders_traced
        );
        assert!(
            found.target_traced.contains(&honest),
            "{}: {what}: the honest thread {honest} was never paused (traced: {:?})",
            py.label,
            found.target_traced
        );
    }
    // The recorder pauses threads by proven id only: the liars (whose own ids it never learns)
    // are read without pausing.
    for liar in liars.keys() {
        let tid: i32 = liar.parse().unwrap();
        assert!(
            !recording.target_traced.contains(&tid),
            "{}: thread {tid}, whose id is a lie, was paused by record",
            py.label
        );
    }

    // The recording: the liars' stacks are there, under no kernel id, with their claim kept.
    let rec = Recording::open(&rec_path).unwrap();
    let claims: BTreeSet<i32> = rec
        .threads
        .iter()
        .filter(|t| t.unproven())
        .filter_map(|t| t.claimed)
        .collect();
    let want: BTreeSet<i32> = victim_pids.iter().map(|&p| p as i32).collect();
    assert_eq!(claims, want, "{}: unproven threads", py.label);
    assert!(
        rec.threads.iter().any(|t| t.tid == honest && !t.unproven()),
        "{}: the honest thread is not recorded under its id",
        py.label
    );
    let liar_samples = rec
        .thread_samples
        .iter()
        .filter(|ts| rec.threads[ts.thread as usize].unproven() && ts.stack.is_some())
        .count();
    assert!(
        liar_samples > 50,
        "{}: the lying threads' stacks were not read ({liar_samples} samples)",
        py.label
    );
    let info = common::memspy(&["info", rec_path.to_str().unwrap()]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("2 threads with an unproven id"),
        "{}: info does not count them:\n{info}",
        py.label
    );

    // The dump: the liars show no kernel id, only the claim.
    let dump: Value = serde_json::from_str(&stdout).unwrap();
    let threads = dump["processes"][0]["threads"].as_array().unwrap();
    let shown: BTreeSet<i64> = threads
        .iter()
        .filter(|t| t["native_id"].is_null())
        .filter_map(|t| t["namespace_id"].as_i64())
        .collect();
    assert_eq!(
        shown,
        want.iter().map(|&p| p as i64).collect(),
        "{}: {dump}",
        py.label
    );
    drop(victims);
}

per_interpreter! {
    check_lying_target;
    lying_target_pyenv_3_8 => "pyenv-3.8.18",
    lying_target_pyenv_3_9 => "pyenv-3.9.18",
    lying_target_pyenv_3_10 => "pyenv-3.10.13",
    lying_target_pyenv_3_11 => "pyenv-3.11.7",
    lying_target_pyenv_3_12 => "pyenv-3.12.1",
    lying_target_pyenv_3_13 => "pyenv-3.13.0",
    lying_target_debian_3_9 => "debian-bullseye-3.9",
    lying_target_debian_3_11 => "debian-bookworm-3.11",
    lying_target_debian_3_13 => "debian-trixie-3.13",
    lying_target_debian_3_14 => "debian-sid-3.14",
    lying_target_debian_3_15 => "debian-sid-3.15",
}

/// The children of `pid` (all its threads').
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let path = t.path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

fn host_tids(pid: u32) -> BTreeSet<i64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// A target in its own pid namespace (`unshare --fork --pid --mount-proc`), whose thread ids
/// mean other processes on the host: dumped and recorded from outside, its own threads are the
/// ones shown (by host id, with names and states) and paused, and nothing else is traced.
#[test]
fn target_in_a_pid_namespace() {
    if !is_root() {
        eprintln!("*** SKIPPED: unshare --pid needs root ***");
        return;
    }
    for label in ["pyenv-3.10.13", "debian-bookworm-3.11", "debian-sid-3.15"] {
        let Some(py) = common::interpreter(label) else {
            continue;
        };
        let mut cmd = Command::new("unshare");
        cmd.args(["--fork", "--kill-child", "--pid", "--mount-proc"])
            .arg(&py.exe)
            .arg(fixtures_dir().join("hostile_tids.py"))
            .args(["-", "tstate", "0"]);
        let (unshare, _dir, ready) = start_ready(cmd, 0, label);
        let host_pid = children_of(unshare.0.id())[0];
        // Inside, the target is process 1 and its threads have small ids.
        let inner = ready["honest"].as_i64().unwrap();
        assert!(
            inner < 10,
            "{label}: not in a fresh pid namespace ({ready})"
        );
        let tids = host_tids(host_pid);

        let memspy = Arc::new(Mutex::new(None));
        let watch = Watch::start(vec![], host_pid, memspy.clone());
        let (code, stdout, stderr) =
            run_memspy(&["dump", "--pid", &host_pid.to_string(), "--json"], &memspy);
        assert_eq!(code, 0, "{label}: dump: {stderr}");
        let dump: Value = serde_json::from_str(&stdout).unwrap();
        let threads = dump["processes"][0]["threads"].as_array().unwrap().clone();
        let rec_dir = tempfile::tempdir().unwrap();
        let rec_path = rec_dir.path().join("ns.msp");
        let (code, _, stderr) = run_memspy(
            &[
                "record",
                "--blocking",
                "--pid",
                &host_pid.to_string(),
                "-d",
                "1",
                "-o",
                rec_path.to_str().unwrap(),
            ],
            &memspy,
        );
        assert_eq!(code, 0, "{label}: record: {stderr}");
        let found = watch.finish();

        assert_eq!(threads.len(), 2, "{label}: {dump}");
        for t in &threads {
            let tid = t["native_id"].as_i64().unwrap_or_else(|| {
                panic!("{label}: a thread without its host id: {t}");
            });
            assert!(
                tids.contains(&tid),
                "{label}: {tid} is not a thread of {host_pid}"
            );
            assert!(t["namespace_id"].as_i64().unwrap() < 10, "{label}: {t}");
            assert!(t["name"].is_string(), "{label}: no name: {t}");
            assert!(t["active"].is_boolean(), "{label}: no state: {t}");
        }
        assert!(
            found.outsiders_traced.is_empty(),
            "{label}: memspy traced tasks outside the target: {:?}",
            found.outsiders_traced
        );
        let paused: BTreeSet<i64> = found.target_traced.iter().map(|&t| t as i64).collect();
        assert!(
            paused.len() >= 2 && paused.is_subset(&tids),
            "{label}: the target's threads {tids:?} were not the ones paused: {paused:?}"
        );
        let rec = Recording::open(&rec_path).unwrap();
        let recorded: BTreeSet<i64> = rec.threads.iter().map(|t| t.tid as i64).collect();
        assert_eq!(recorded, tids, "{label}: recorded thread ids");
        assert!(rec.threads.iter().all(|t| !t.unproven()), "{label}");
    }
}

/// A target another tracer holds: a blocking dump names the tracer, a recording says once that
/// it reads without pausing, and both still work.
#[test]
fn target_held_by_another_tracer() {
    if !is_root() {
        eprintln!("*** SKIPPED: needs root ***");
        return;
    }
    let py = common::interpreter_from((3, 11));
    let (target, _) = common::start_fixture(&py, "spin.py", &[]);
    let pid = target.pid();
    // A tracer: a Python process that seizes the target (without stopping it) and waits.
    let tracer_src = format!(
        "import ctypes, sys, time\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         PTRACE_SEIZE = 0x4206\n\
         if libc.ptrace(PTRACE_SEIZE, {pid}, 0, 0) != 0:\n\
         \x20   sys.exit('seize failed: %d' % ctypes.get_errno())\n\
         print('seized', flush=True)\n\
         time.sleep(60)\n"
    );
    let mut tracer = Guard(
        Command::new(&py.exe)
            .args(["-c", &tracer_src])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(tracer.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "seized");
    let tracer_pid = tracer.0.id().to_string();

    let out = common::memspy(&["dump", "--pid", &pid.to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("traced by process {tracer_pid}"))
            && stderr.contains("--nonblocking"),
        "{stderr}"
    );
    assert!(!stderr.contains("run memspy as root"), "{stderr}");
    let out = common::memspy(&["dump", "--pid", &pid.to_string(), "--nonblocking"]);
    assert_eq!(out.status.code(), Some(0));

    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("t.msp");
    let out = common::memspy(&[
        "record",
        "--blocking",
        "--pid",
        &pid.to_string(),
        "-d",
        "0.5",
        "-o",
        rec.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("is being traced by process").count(),
        1,
        "{stderr}"
    );
    let rec = Recording::open(&rec).unwrap();
    assert!(rec.samples.len() > 20, "{} samples", rec.samples.len());
    drop(tracer);
}

/// Pythons too old to read get their version named, not "not a CPython program".
#[test]
fn unsupported_versions_are_named() {
    let home = std::env::var("HOME").unwrap();
    for (version, exe) in [
        ("2.7.18", "python2.7"),
        ("3.6.15", "python3.6"),
        ("3.7.16", "python3.7"),
    ] {
        let path = Path::new(&home).join(format!(".pyenv/versions/{version}/bin/{exe}"));
        if !path.exists() {
            let msg = format!("{} is not installed", path.display());
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg}");
            }
            eprintln!("*** SKIPPED: {msg} ***");
            continue;
        }
        let target = Guard(
            Command::new(&path)
                .args(["-c", "import time; time.sleep(60)"])
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(300));
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("old.msp");
        for args in [
            vec!["dump", "--pid"],
            vec!["record", "-d", "0.2", "-o", rec.to_str().unwrap(), "--pid"],
        ] {
            let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            args.push(target.0.id().to_string());
            let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let out = common::memspy(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{version}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{version}: {stderr}");
            assert!(
                stderr.contains(&format!("CPython {version}"))
                    && stderr.contains("3.8 to 3.15")
                    && !stderr.contains("not a CPython program"),
                "{version}: {stderr}"
            );
        }
    }
}
