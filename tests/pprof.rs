//! `memspy export --format pprof`, read by the reference reader, `go tool pprof` (Debian's Go,
//! provisioned by scripts/provision-go.sh): it accepts every profile (`-raw`, `-top`), and its
//! totals and top functions are what memspy's own JSON export says of the same recording.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{fixtures_dir, interpreter_from, memspy_bin, pprof_raw_totals, record_workers};
use serde_json::Value;

/// The `go` wrapper (scripts/provision-go.sh).
fn go() -> &'static Path {
    static GO: OnceLock<PathBuf> = OnceLock::new();
    GO.get_or_init(|| common::provisioned("MEMSPY_GO", "provision-go.sh"))
}

/// `go tool pprof ARGS PROFILE`: its stdout; it must succeed.
fn pprof(args: &[&str], profile: &Path) -> String {
    let out = Command::new(go())
        .args(["tool", "pprof"])
        .args(args)
        .arg(profile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "go tool pprof {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn memspy(args: &[&str]) -> std::process::Output {
    Command::new(memspy_bin()).args(args).output().unwrap()
}

fn export(rec: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "export",
        "-i",
        rec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
    ];
    args.extend_from_slice(extra);
    let o = memspy(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `-top` of one sample type in its base unit: (flat, name) per row, largest flat first.
fn top(profile: &Path, metric: &str) -> Vec<(i64, String)> {
    let unit = if metric == "wall" || metric == "cpu" {
        "ns"
    } else {
        "B"
    };
    let text = pprof(
        &[
            "-top",
            "-nodecount=10",
            &format!("-sample_index={metric}"),
            &format!("-unit={unit}"),
        ],
        profile,
    );
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let flat = parts.next()?.trim_end_matches(unit).parse().ok()?;
            let name = parts.nth(4)?.to_string();
            Some((flat, name))
        })
        .collect()
}

fn summary(rec: &Path, dir: &Path) -> Value {
    let json = dir.join("summary.json");
    export(rec, &json, &["json"]);
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

/// The largest own value of a Python function in memspy's JSON export (pseudo-sites left out).
fn json_top_self(summary: &Value, metric: &str) -> (f64, String) {
    summary["top_functions"][metric]["self"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f["function"].as_str().unwrap().starts_with('['))
        .map(|f| {
            (
                f["self"].as_f64().unwrap(),
                f["function"].as_str().unwrap().to_string(),
            )
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap()
}

const METRICS: [&str; 6] = ["wall", "cpu", "growth", "freed", "retained", "peak"];

/// Check a recording's all-metric pprof profile and one single-metric one against memspy's
/// JSON export.
fn check_recording(rec: &Path, dir: &Path) {
    let all = dir.join("all.pb.gz");
    export(rec, &all, &["pprof"]);
    let raw = pprof(&["-raw"], &all);
    let (types, sums) = pprof_raw_totals(&raw);
    assert_eq!(types, METRICS, "{raw}");
    assert!(raw.contains("PeriodType: wall nanoseconds"), "{raw}");
    assert!(raw.contains("pid:[") && raw.contains("process:[") && raw.contains("thread_name:["));
    let summary = summary(rec, dir);
    for (i, metric) in METRICS.iter().enumerate() {
        let expected = summary["totals"][metric].as_f64().unwrap();
        let scale = if i < 2 { 1000.0 } else { 1.0 };
        // Values are whole nanoseconds and bytes: rounding per sample.
        let samples = raw.lines().filter(|l| l.contains(": ")).count() as f64;
        assert!(
            (sums[i] as f64 - expected * scale).abs() <= samples + expected.abs() * scale * 1e-9,
            "{metric}: pprof reads {} , memspy says {}",
            sums[i],
            expected * scale
        );
        // The top function by own value is memspy's.
        let rows = top(&all, metric);
        let (value, name) = json_top_self(&summary, metric);
        if value > 0.0 {
            let first = rows
                .iter()
                .find(|r| !r.1.starts_with('['))
                .unwrap_or_else(|| panic!("{metric}: no function in -top"));
            assert_eq!(first.1, name, "{metric}: {rows:?}");
            assert!(
                (first.0 as f64 - value * scale).abs() <= samples,
                "{metric} {name}: {} vs {}",
                first.0,
                value * scale
            );
        }
    }
    // One metric alone: one sample type, the same total.
    let one = dir.join("retained.pb.gz");
    export(rec, &one, &["pprof", "--metric", "retained"]);
    let (types, sums_one) = pprof_raw_totals(&pprof(&["-raw"], &one));
    assert_eq!(types, ["retained"]);
    assert_eq!(sums_one[0], sums[4]);
}

#[test]
fn pprof_of_one_process() {
    let py = interpreter_from((3, 12));
    let dir = tempfile::tempdir().unwrap();
    let rec = common::record_leak(&py, dir.path(), "leak.msp", 16);
    check_recording(&rec, dir.path());
    // Functions carry their file and first line; locations their line.
    let all = dir.path().join("all.pb.gz");
    let raw = pprof(&["-raw"], &all);
    assert!(
        raw.contains("Cache.fill") && raw.contains("leak.py"),
        "{raw}"
    );
    let list = pprof(&["-list=Cache.fill", "-sample_index=growth"], &all);
    assert!(list.contains("leak.py"), "{list}");
}

#[test]
fn pprof_of_workers() {
    let py = interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    let rec = record_workers(&py, dir.path(), "workers.msp");
    check_recording(&rec, dir.path());
    // Each process is its own label: the reader can pick one.
    let all = dir.path().join("all.pb.gz");
    let tags = pprof(&["-tags", "-sample_index=wall"], &all);
    let workers: BTreeMap<&str, ()> = tags
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("worker")))
        .map(|w| (w, ()))
        .collect();
    assert!(tags.contains("master") && !workers.is_empty(), "{tags}");
    let first_worker = dir.path().join("w.pb.gz");
    let o = memspy(&[
        "export",
        "-i",
        rec.to_str().unwrap(),
        "-o",
        first_worker.to_str().unwrap(),
        "--format",
        "pprof",
        "--from",
        "25%",
    ]);
    assert!(o.status.success());
    let (_, window) = pprof_raw_totals(&pprof(&["-raw"], &first_worker));
    let (_, whole) = pprof_raw_totals(&pprof(&["-raw"], &all));
    assert!(
        window[0] < whole[0],
        "a window has less wall time: {window:?} vs {whole:?}"
    );
}

/// `record --serve`: `go tool pprof URL` fetches the profile of the next seconds while the
/// recording runs; a bad request gets 400.
#[test]
fn served_profiles_are_fetched_by_the_reference_reader() {
    use std::io::{BufRead, BufReader, Read, Write};
    let py = interpreter_from((3, 12));
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("served.msp");
    let mut child = Command::new(memspy_bin())
        .args([
            "record",
            "-o",
            rec.to_str().unwrap(),
            "--serve",
            "127.0.0.1:0",
            "--",
        ])
        .arg(&py.exe)
        .arg(fixtures_dir().join("leak.py"))
        .arg("150")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "memspy said nothing of serving"
        );
        if let Some(rest) = line
            .trim()
            .strip_prefix("memspy: serving pprof profiles at ")
        {
            break rest.split('?').next().unwrap().to_string();
        }
    };
    // `go tool pprof -raw URL` (it keeps what it fetched in PPROF_TMPDIR).
    let fetch = || -> String {
        let out = Command::new(go())
            .args(["tool", "pprof", "-raw"])
            .arg(format!("{url}?seconds=1"))
            .env("PPROF_TMPDIR", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let raw = fetch();
    let (types, sums) = pprof_raw_totals(&raw);
    assert_eq!(types, METRICS);
    assert!(sums[0] > 0, "no wall time in {raw}");
    // A second one reads on from where the first left the file.
    let (_, again) = pprof_raw_totals(&fetch());
    assert!(again[0] > 0, "no wall time the second time");
    // A second request, asking for nothing sensible.
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /debug/pprof/profile?seconds=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(child.wait().unwrap().success());
}
