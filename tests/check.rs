//! `memspy check` and `memspy diff` as a CI gate, on real recordings of a fixture whose leak
//! size is an argument.
mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{fixtures_dir, memspy};
use serde_json::Value;

/// Recordings of `leak.py 10` (twice) and `leak.py 60`, made once for all tests here.
struct Runs {
    _dir: tempfile::TempDir,
    base: PathBuf,
    again: PathBuf,
    leak: PathBuf,
}

fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let py = common::interpreter_from((3, 11));
        let dir = tempfile::tempdir().unwrap();
        let script = fixtures_dir().join("leak.py");
        let record = |name: &str, mib: &str| -> PathBuf {
            common::record_python(&py, dir.path(), name, &[script.to_str().unwrap(), mib])
        };
        Runs {
            base: record("base.msp", "10"),
            again: record("again.msp", "10"),
            leak: record("leak.msp", "60"),
            _dir: dir,
        }
    })
}

fn check(input: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["check", "-i", input.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = memspy(&all);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bigger_leak_fails_against_the_baseline_and_is_named() {
    let r = runs();
    let (code, out, err) = check(
        &r.leak,
        &["--baseline", r.base.to_str().unwrap(), "--tolerance", "20%"],
    );
    assert_eq!(code, 1, "{out}{err}");
    let failing: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("FAIL"))
        .collect();
    assert!(failing.iter().any(|l| l.contains("Cache.fill")), "{out}");
    assert!(out.contains("+"), "the change is shown: {out}");
}

#[test]
fn run_to_run_noise_passes() {
    let r = runs();
    let (code, out, err) = check(
        &r.again,
        &["--baseline", r.base.to_str().unwrap(), "--tolerance", "20%"],
    );
    assert_eq!(code, 0, "{out}{err}");
    // And the other way round.
    let (code, out, _) = check(
        &r.base,
        &[
            "--baseline",
            r.again.to_str().unwrap(),
            "--tolerance",
            "20%",
        ],
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn median_of_several_baselines() {
    let r = runs();
    // Two small baselines and a leaky one: the median is small, so the leak still fails...
    let bases = [
        r.base.to_str().unwrap(),
        r.again.to_str().unwrap(),
        r.leak.to_str().unwrap(),
    ];
    let args: Vec<&str> = bases.iter().flat_map(|b| ["--baseline", *b]).collect();
    let (code, out, _) = check(&r.leak, &args);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("median of 3 baselines"), "{out}");
    // ...and a small run passes.
    let (code, out, _) = check(&r.again, &args);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn budgets_on_both_sides_of_the_limit() {
    let r = runs();
    let cases: &[(&Path, &[&str], i32)] = &[
        (&r.base, &["--max-peak", "512MiB"], 0),
        (&r.base, &["--max-peak", "5MiB"], 1),
        (&r.leak, &["--max-peak-total", "1GiB"], 0),
        (&r.leak, &["--max-peak-total", "10MiB"], 1),
        (&r.base, &["--max-growth", "Cache.fill=30MiB"], 0),
        (&r.leak, &["--max-growth", "Cache.fill=30MiB"], 1),
        (&r.leak, &["--max-growth", "leak.Cache.*=30MiB"], 1),
        (&r.base, &["--max-retained", "fill=30MiB"], 0),
        (&r.leak, &["--max-retained", "fill=30MiB"], 1),
        // The name the budget had before retained memory replaced net change.
        (&r.leak, &["--max-net", "fill=30MiB"], 1),
        (&r.base, &["--max-cpu", "work=10s"], 0),
        (&r.base, &["--max-cpu", "work=1ms"], 1),
        (&r.base, &["--max-wall", "work=100%"], 0),
        (&r.base, &["--max-wall", "work=1%"], 1),
        (&r.leak, &["--max-growth", "Cache.fill=50%"], 1),
        (&r.leak, &["--max-growth", "Cache.fill=90%"], 0),
    ];
    for (input, args, expected) in cases {
        let (code, out, err) = check(input, args);
        assert_eq!(
            code,
            *expected,
            "{args:?} on {}: {out}{err}",
            input.display()
        );
    }
}

#[test]
fn json_and_markdown() {
    let r = runs();
    let (code, out, _) = check(
        &r.leak,
        &["--baseline", r.base.to_str().unwrap(), "--format", "json"],
    );
    assert_eq!(code, 1);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["passed"], false);
    let checks = doc["checks"].as_array().unwrap();
    assert!(checks
        .iter()
        .any(|c| c["passed"] == false && c["check"].as_str().unwrap().contains("Cache.fill")));
    assert!(checks
        .iter()
        .all(|c| c["unit"] == "bytes" && c["value"].is_number()));
    let (code, out, _) = check(
        &r.leak,
        &[
            "--baseline",
            r.base.to_str().unwrap(),
            "--format",
            "markdown",
        ],
    );
    assert_eq!(code, 1);
    assert!(out.starts_with("### memspy check: ❌"), "{out}");
    assert!(out.contains("| ❌ |") && out.contains("|---|"), "{out}");
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let r = runs();
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.msp");
    let mut bytes = std::fs::read(&r.base).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--max-peak", "lots"],
        vec!["--max-growth", "no-equals-sign"],
        vec!["--max-growth", "no_such_function=1MiB"],
        vec!["--tolerance", "ten"],
        vec!["--baseline", "/no/such/file.msp"],
        vec!["--baseline", corrupt.to_str().unwrap()],
    ];
    for args in cases {
        let (code, out, err) = check(&r.base, &args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(!err.contains("panicked"), "{err}");
        let error_lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(error_lines.len(), 1, "{args:?}: {err}");
    }
}

#[test]
fn diff_names_the_biggest_change() {
    let r = runs();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("diff.svg");
    let out = memspy(&[
        "diff",
        r.base.to_str().unwrap(),
        r.leak.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
        "--metric",
        "growth",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().nth(2).unwrap_or("");
    assert!(
        first.contains("Cache.fill") || first.contains("main") || first.contains("<module>"),
        "{text}"
    );
    assert!(
        text.lines()
            .skip(2)
            .take(3)
            .any(|l| l.contains("Cache.fill")),
        "{text}"
    );
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.starts_with("<?xml") && svg_text.contains("Cache.fill"));
    let mut reader = quick_xml::Reader::from_str(&svg_text);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Err(e) => panic!("diff SVG is not well-formed: {e}"),
            _ => {}
        }
    }
    let out = memspy(&["diff", r.base.to_str().unwrap(), "/no/such.msp"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Budgets per process: `--each-process` holds every worker to the budget on its own (workers
/// of workers.py grow about 10, 20, 30 and 40 MiB in `serve`), `--pid` one of them; without
/// either, all processes count together.
#[test]
fn budgets_per_process() {
    let py = common::interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    let path = common::record_workers(&py, dir.path(), "w.msp");
    let budget = [
        "--max-growth",
        "serve=25MiB",
        "--format",
        "json",
        "--verbose",
    ];
    let findings = |stdout: &str| -> Vec<Value> {
        let doc: Value = serde_json::from_str(stdout).unwrap();
        doc["checks"].as_array().unwrap().clone()
    };
    let (code, stdout, err) = check(&path, &budget);
    assert_eq!(code, 1, "all workers together grow 100 MiB: {stdout}{err}");
    assert_eq!(findings(&stdout).len(), 1);
    let mut args = budget.to_vec();
    args.push("--each-process");
    let (code, stdout, err) = check(&path, &args);
    assert_eq!(code, 1, "{stdout}{err}");
    let each = findings(&stdout);
    let rec = memspy::recording::Recording::open(&path).unwrap();
    assert_eq!(each.len(), rec.sampled_pids().len(), "{stdout}");
    let passed: Vec<&Value> = each.iter().filter(|f| f["passed"] == true).collect();
    let failed: Vec<&Value> = each.iter().filter(|f| f["passed"] == false).collect();
    // The two big workers fail, the small ones and the supervisor pass.
    assert_eq!(failed.len(), 2, "{stdout}");
    assert!(passed.len() >= 3, "{stdout}");
    let small = passed
        .iter()
        .find(|f| f["value"].as_f64().unwrap() > 5.0 * 1048576.0)
        .expect("a small worker that grew");
    let pid: String = small["check"]
        .as_str()
        .unwrap()
        .trim_start_matches("process ")
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let mut one = budget.to_vec();
    one.extend_from_slice(&["--pid", &pid]);
    let (code, stdout, _) = check(&path, &one);
    assert_eq!(code, 0, "{stdout}");
    let (code, _, err) = check(&path, &["--max-growth", "serve=1MiB", "--pid", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("has no process 1"), "{err}");
}

/// A baseline recorded at another rate or in another mode is compared all the same, with a
/// warning that says how they differ.
#[test]
fn a_baseline_recorded_otherwise_is_warned_about() {
    let py = common::interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    let script = fixtures_dir().join("leak.py");
    let record = |name: &str, extra: &[&str]| -> PathBuf {
        let path = dir.path().join(name);
        let mut args = vec!["record", "-o", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "--",
            py.exe.to_str().unwrap(),
            script.to_str().unwrap(),
            "10",
        ]);
        assert!(memspy(&args).status.success());
        path
    };
    let base = record("base.msp", &["-r", "100", "--blocking"]);
    let new = record("new.msp", &["-r", "300"]);
    let (code, stdout, err) = check(&new, &["--baseline", base.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(
        err.contains(
            "was recorded at 100 Hz (this one at 300 Hz), blocking (this one non-blocking)"
        ),
        "{err}"
    );
    let (_, _, err) = check(&base, &["--baseline", base.to_str().unwrap()]);
    assert!(!err.contains("warning"), "{err}");
}
