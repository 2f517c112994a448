//! `record --trigger-rss` and `--trigger-growth`: a target that grows past the limit gets
//! exactly one dump file per crossing, naming the growing function, `--trigger-exec` runs once
//! with the dump in its environment, and the recording marks the moment (plot and report).

mod common;

use std::path::Path;
use std::process::Command;

use common::{fixtures_dir, interpreter_from, memspy_bin};
use serde_json::Value;

/// Record leak.py 80 (its cache fills 80 MiB, 1 MiB every 20 ms, after a 20 MiB temporary)
/// with `trigger` arguments; the dump files written.
fn record(dir: &Path, trigger: &[&str]) -> (String, Vec<Value>, std::path::PathBuf) {
    let py = interpreter_from((3, 12));
    let rec = dir.join("leak.msp");
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let log = dir.join("exec.log");
    let out = Command::new(memspy_bin())
        .args(["record", "-o", rec.to_str().unwrap()])
        .args(trigger)
        .arg("--trigger-dir")
        .arg(&dumps)
        .arg("--trigger-exec")
        .arg(format!(
            "echo \"$MEMSPY_PID $MEMSPY_REASON $MEMSPY_DUMP\" >> {}",
            log.display()
        ))
        .arg("--")
        .arg(&py.exe)
        .arg(fixtures_dir().join("leak.py"))
        .arg("80")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let paths: Vec<std::path::PathBuf> = std::fs::read_dir(&dumps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    for p in &paths {
        // A dump holds what a private recording holds: its owner's only.
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{}", p.display());
    }
    let mut files: Vec<Value> = paths
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect();
    files.sort_by_key(|d| d["time"].as_str().unwrap_or("").to_string());
    // The command ran once per crossing (it is reaped in the background: give it a moment).
    for _ in 0..100 {
        if log.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let runs = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(runs.lines().count(), files.len(), "{runs}");
    (stderr, files, rec)
}

fn check_dump(d: &Value, reason: &str) {
    assert_eq!(d["reason"], reason);
    assert!(d["bytes"].as_u64().unwrap() >= d["limit"].as_u64().unwrap());
    // Every thread's stack, as dump --json gives it: the growing function is on it.
    let frames = d["dump"]["processes"][0]["threads"][0]["frames"].to_string();
    assert!(frames.contains("fill"), "{frames}");
    // And the top functions by retained memory so far.
    let top = d["top_retained"].as_array().unwrap();
    assert!(top.iter().any(|f| f["function"] == "Cache.fill"), "{top:?}");
}

#[test]
fn trigger_rss_dumps_once_per_crossing() {
    let dir = tempfile::tempdir().unwrap();
    let (stderr, dumps, rec) = record(dir.path(), &["--trigger-rss", "60MiB"]);
    assert_eq!(dumps.len(), 1, "{stderr}");
    check_dump(&dumps[0], "rss");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("crossed --trigger-rss"))
            .count(),
        1,
        "{stderr}"
    );
    // The recording marks it: plot draws it, the report has it.
    let svg = dir.path().join("mem.svg");
    let out = Command::new(memspy_bin())
        .args(["plot", "-i", rec.to_str().unwrap(), svg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = dumps[0]["pid"].as_i64().unwrap();
    assert!(std::fs::read_to_string(&svg)
        .unwrap()
        .contains(&format!("trigger: {pid}")));
    let html = dir.path().join("r.html");
    let out = Command::new(memspy_bin())
        .args([
            "report",
            "-i",
            rec.to_str().unwrap(),
            "-o",
            html.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("\"triggers\":[{") && page.contains("\"reason\":\"rss\""));
}

#[test]
fn trigger_growth_dumps_once_per_crossing() {
    let dir = tempfile::tempdir().unwrap();
    let (stderr, dumps, _) = record(dir.path(), &["--trigger-growth", "30MiB/1s"]);
    assert_eq!(dumps.len(), 1, "{stderr}");
    check_dump(&dumps[0], "growth");
    assert_eq!(dumps[0]["span_s"], 1.0);
}

#[test]
fn trigger_arguments_are_checked() {
    for args in [
        &["--trigger-growth", "30MiB"][..],
        &["--trigger-rss", "lots"],
        &["--trigger-exec", "true"],
        &["--trigger-rss", "1GiB", "--trigger-dir", "/nonexistent"],
    ] {
        let out = Command::new(memspy_bin())
            .args(["record", "-o", "/dev/null"])
            .args(args)
            .args(["--", "python3", "-c", "pass"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        // One line that says what is wrong (the argument parser adds its usage line after).
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("");
        assert!(
            first.contains("error") && first.contains("trigger"),
            "{args:?}: {stderr}"
        );
    }
}
