//! `memspy dump` on bad input: each case gets one clear line on stderr, exit status 2, no panic;
//! and a target is never left stopped, even when memspy is killed while it holds it.
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{interpreters, memspy, memspy_bin, start_fixture};

/// Exit status 2 and exactly one line on stderr, starting with "memspy: error:".
fn assert_clean_failure(out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.starts_with("memspy: error:"), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
}

#[test]
fn pid_that_does_not_exist() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let out = memspy(&["dump", "--pid", &pid.to_string()]);
    assert_clean_failure(&out, &format!("no process with pid {pid}"));
}

#[test]
fn process_that_is_not_python() {
    let mut sleep = Command::new("sleep").arg("60").spawn().unwrap();
    let out = memspy(&["dump", "--pid", &sleep.id().to_string()]);
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert_clean_failure(&out, "is not a CPython program");
}

#[test]
fn invalid_pid_argument() {
    let out = memspy(&["dump", "--pid", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = memspy(&["dump", "--pid", "abc"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn no_permission() {
    let py = interpreters().into_iter().next().expect("an interpreter");
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "*** SKIPPED: needs root to start a target that an unprivileged user cannot read ***"
        );
        return;
    }
    let (target, _) = start_fixture(&py, "spin.py", &[]);
    // memspy as "nobody" against a root-owned target.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(memspy_bin())
        .args(["dump", "--pid", &target.pid().to_string()])
        .output()
        .expect("setpriv");
    assert_clean_failure(&out, "permission denied");
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_SYS_PTRACE"));
}

/// Short-lived Python processes dumped at random moments: whatever memspy catches (a stack, a
/// process not yet initialised, one that is exiting or gone) it must answer cleanly.
#[test]
fn process_that_exits_while_being_read() {
    let py = interpreters()
        .into_iter()
        .find(|i| i.minor() >= (3, 11))
        .expect("an interpreter");
    let mut outcomes = std::collections::BTreeMap::new();
    for i in 0..40 {
        let mut child = Command::new(&py.exe)
            .args(["-c", "import threading, time\n[threading.Thread(target=time.sleep, args=(0.01,)).start() for _ in range(20)]\ntime.sleep(0.03)"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(1000 * (i % 40)));
        let out = memspy(&["dump", "--pid", &child.id().to_string()]);
        let _ = child.wait();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.contains("panicked"), "{stderr}");
        match out.status.code() {
            Some(0) => *outcomes.entry("read").or_insert(0) += 1,
            Some(2) => {
                assert_eq!(stderr.lines().count(), 1, "{stderr}");
                assert!(stderr.starts_with("memspy: error:"), "{stderr}");
                *outcomes.entry("clean error").or_insert(0) += 1;
            }
            other => panic!("exit status {other:?}: {stderr}"),
        }
    }
    eprintln!("outcomes: {outcomes:?}");
}

/// Kill -9 memspy while it has the target stopped: the kernel detaches it and it runs on.
#[test]
fn target_runs_on_when_memspy_is_killed_mid_dump() {
    let py = interpreters().into_iter().next().expect("an interpreter");
    let (target, _) = start_fixture(&py, "spin.py", &[]);
    let pid = target.pid() as i32;
    let mut dump = Command::new(memspy_bin())
        .args(["dump", "--pid", &pid.to_string()])
        .env("MEMSPY_TEST_HOLD_LOCK_MS", "10000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until memspy has the target stopped (traced threads show state 't').
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        if stat
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('t')
        {
            break;
        }
        assert!(Instant::now() < deadline, "memspy never stopped the target");
        std::thread::sleep(Duration::from_millis(10));
    }
    dump.kill().unwrap();
    dump.wait().unwrap();
    // The spinning thread burns CPU again: its utime keeps growing.
    let utime = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap()
    };
    let before = utime();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        utime() > before,
        "target did not run after memspy was killed"
    );
    drop(target);
}
