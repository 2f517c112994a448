//! `memspy export` (collapsed, speedscope, json) and the per-line table: golden files from a
//! recording built with the writer (exact, hand-checked values), and checks on real recordings
//! of fixtures (known allocations, workers). `MEMSPY_BLESS=1` rewrites the golden files.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{fixtures_dir, interpreters_from, marker, memspy};
use memspy::recording::writer::{ProcessDef, ThreadEntry};
use memspy::recording::{EndReason, FailureKind, Meta, Writer};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Compare `actual` with `tests/golden/<name>`, or write it there under `MEMSPY_BLESS=1`.
fn check_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("MEMSPY_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        eprintln!("blessed {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with MEMSPY_BLESS=1 to create it)",
            path.display()
        )
    });
    assert!(
        actual == expected,
        "{name} differs from its golden file (MEMSPY_BLESS=1 rewrites it)\n--- expected\n{expected}--- actual\n{actual}"
    );
}

/// A file's text with `lines` (1-based number, text) at their place and blank lines elsewhere.
fn source(lines: &[(usize, &str)]) -> String {
    let n = lines.iter().map(|l| l.0).max().unwrap();
    let mut out = vec![""; n];
    for &(i, text) in lines {
        out[i - 1] = text;
    }
    out.join("\n") + "\n"
}

/// A recording written with the writer, so every figure of the reports is known exactly.
///
/// Process A (pid 4242, 100 Hz, RSS) has a main thread T0 and a worker T1; process B (pid
/// 4300) is a worker with one thread. Stacks (outermost first):
/// `L12` = main:5 > Loader.load:12, `L14` = main:5 > Loader.load:14,
/// `F` = main:5 > Loader.load:14 > Cache.fill:22, `R` = Worker.run:33.
///
/// | sample | time ms | RSS MiB | T0 stack, flags, CPU total ms, minflt | T1 |
/// |---|---|---|---|---|
/// | a0 | 0 | 100 | L12, GIL, 0, 0 | R, -, 0, 0 |
/// | a1 | 10 | 110 | L12, GIL, 8, 30 | R, -, 1, 10 |
/// | a2 | 20 | 118 | L14, GIL, 16, 0 | R, -, 1, 0 |
/// | a3 | 30 | 126 | F, active, 22, 0 | R, active, 5, 0 |
/// | a4 | 40 | 96 | none, -, 22, 0 | R, GIL, 5, 0 |
/// | a5 | 50 | 100 | none, -, 22, 8 | R, -, 5, 0 |
/// | a6 | 60 | 102 | (no threads) | |
/// | a7 | 200 | 102 | F, GIL, 30, 0 | R, -, 5, 0 |
///
/// B: b0 at 5 ms 50 MiB, b1 at 15 ms 51 MiB, b2 at 25 ms 53 MiB, all on R; b1 has 5 faults and
/// 10 ms CPU, b2 no faults, 10 ms more CPU and no GIL. A raced failure of A at 65 ms.
fn golden_recording(dir: &Path) -> PathBuf {
    let path = dir.join("golden.msp");
    let meta = Meta {
        memspy_version: "golden".into(),
        start_unix_ns: 1_764_000_000_000_000_000,
        command: vec!["memspy".into(), "record".into()],
        rate_hz: 100.0,
        blocking: true,
        memory: "rss".into(),
        subprocesses: true,
        rollup_interval_ms: None,
        ..Meta::default()
    };
    let mut w = Writer::create(&path, &meta).unwrap();
    let a = w
        .process_start(&ProcessDef {
            pid: 4242,
            starttime: 1000,
            parent: None,
            time_us: 0,
            command: "python app.py",
            exe: "/usr/bin/python3.11",
            python: "3.11.2",
            cwd: "/srv",
        })
        .unwrap();
    let t0 = w.thread(a, 4242, Some(4242), "MainThread").unwrap();
    let t1 = w.thread(a, 4243, Some(4243), "worker").unwrap();
    let f_main = w.function("main", "main", "/srv/app.py", 1).unwrap();
    let f_load = w
        .function("load", "Loader.load", "/srv/app.py", 10)
        .unwrap();
    let f_fill = w
        .function("fill", "Cache.fill", "/srv/cache.py", 20)
        .unwrap();
    let f_run = w.function("run", "Worker.run", "/srv/app.py", 31).unwrap();
    let main5 = w.frame(f_main, 5).unwrap();
    let load12 = w.frame(f_load, 12).unwrap();
    let load14 = w.frame(f_load, 14).unwrap();
    let fill22 = w.frame(f_fill, 22).unwrap();
    let run33 = w.frame(f_run, 33).unwrap();
    let l12 = w.stack([main5, load12]).unwrap();
    let l14 = w.stack([main5, load14]).unwrap();
    let fill = w.stack([main5, load14, fill22]).unwrap();
    let run = w.stack([run33]).unwrap();
    const GIL: u8 = 3; // holds the GIL, active
    const ACTIVE: u8 = 2;
    let entry = |slot, stack, flags, cpu_ms: u64, minflt| ThreadEntry {
        slot,
        stack,
        flags,
        cpu_ns_total: cpu_ms * 1_000_000,
        minflt,
    };
    let a_samples: [(u64, u64, Vec<ThreadEntry>); 8] = [
        (
            0,
            100,
            vec![entry(t0, l12, GIL, 0, 0), entry(t1, run, 0, 0, 0)],
        ),
        (
            10,
            110,
            vec![entry(t0, l12, GIL, 8, 30), entry(t1, run, 0, 1, 10)],
        ),
        (
            20,
            118,
            vec![entry(t0, l14, GIL, 16, 0), entry(t1, run, 0, 1, 0)],
        ),
        (
            30,
            126,
            vec![entry(t0, fill, ACTIVE, 22, 0), entry(t1, run, ACTIVE, 5, 0)],
        ),
        (
            40,
            96,
            vec![entry(t0, None, 0, 22, 0), entry(t1, run, GIL, 5, 0)],
        ),
        (
            50,
            100,
            vec![entry(t0, None, 0, 22, 8), entry(t1, run, 0, 5, 0)],
        ),
        (60, 102, vec![]),
        (
            200,
            102,
            vec![entry(t0, fill, GIL, 30, 0), entry(t1, run, 0, 5, 0)],
        ),
    ];
    let mut b = None;
    let mut b_thread = 0;
    let b_samples = [
        (5u64, 50u64, 0u64, 0u64, GIL),
        (15, 51, 10, 5, GIL),
        (25, 53, 20, 0, ACTIVE),
    ];
    for (i, (ms, rss, threads)) in a_samples.iter().enumerate() {
        w.sample(a, ms * 1000, rss * MIB, 0, threads).unwrap();
        if i == 6 {
            w.failure(a, 65_000, FailureKind::Raced).unwrap();
        }
        if let Some(&(bms, brss, cpu, minflt, flags)) = b_samples.get(i) {
            let p = *b.get_or_insert_with(|| {
                let p = w
                    .process_start(&ProcessDef {
                        pid: 4300,
                        starttime: 1100,
                        parent: Some(a),
                        time_us: 5_000,
                        command: "python worker.py --id 1",
                        exe: "/usr/bin/python3.11",
                        python: "3.11.2",
                        cwd: "/srv",
                    })
                    .unwrap();
                b_thread = w.thread(p, 4300, Some(4300), "MainThread").unwrap();
                p
            });
            w.sample(
                p,
                bms * 1000,
                brss * MIB,
                0,
                &[entry(b_thread, run, flags, cpu, minflt)],
            )
            .unwrap();
            if i == 2 {
                w.process_end(p, 30_000, EndReason::Exited, Some(0))
                    .unwrap();
            }
        }
    }
    w.process_end(a, 210_000, EndReason::Exited, Some(0))
        .unwrap();
    w.source(
        "/srv/app.py",
        &source(&[
            (1, "def main():"),
            (5, "    return Loader().load()"),
            (10, "    def load(self):"),
            (12, "        self.items = read_all()"),
            (14, "        return Cache().fill(self.items)"),
            (31, "    def run(self):"),
            (33, "            serve_one(self.queue.get())"),
        ]),
    )
    .unwrap();
    w.source(
        "/srv/cache.py",
        &source(&[
            (20, "    def fill(self, items):"),
            (22, "        self.data = {i.key: i for i in items}"),
        ]),
    )
    .unwrap();
    w.stats(21, 0, 100, 300, 20, (0, 0, 0)).unwrap();
    w.finish().unwrap();
    path
}

/// Run memspy and return its stdout; fails the test on a non-zero exit.
fn run_ok(args: &[&str]) -> String {
    let out = memspy(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "memspy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `memspy export -i <rec> -o <tmp file> <args>`; returns what it wrote.
fn export(rec: &Path, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut all = vec![
        "export",
        "-i",
        rec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    run_ok(&all);
    std::fs::read_to_string(&out).unwrap()
}

/// Folded stacks as a map (stack -> value).
fn folded(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .map(|l| {
            let (stack, v) = l.rsplit_once(' ').unwrap();
            (stack.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn collapsed_golden() {
    let dir = tempfile::tempdir().unwrap();
    let rec = golden_recording(dir.path());
    let growth = export(&rec, &["--format", "collapsed", "--metric", "growth"]);
    let wall = export(&rec, &["--format", "collapsed", "--metric", "wall"]);
    let merged = export(
        &rec,
        &[
            "--format",
            "collapsed",
            "--metric",
            "growth",
            "--merge-processes",
            "--function",
        ],
    );
    check_golden("collapsed-growth.txt", &growth);
    check_golden("collapsed-wall.txt", &wall);
    check_golden("collapsed-growth-merged-functions.txt", &merged);

    // The same figures, derived by hand from the rules of src/analysis/mod.rs (see
    // `golden_recording` for the samples).
    let a = "process 4242 (launched) python app.py;";
    let b = "process 4300 (worker 1 of 4242) python worker.py --id 1;";
    let (l12, l14) = (
        "main (/srv/app.py:5);Loader.load (/srv/app.py:12)",
        "main (/srv/app.py:5);Loader.load (/srv/app.py:14)",
    );
    let fill = format!("{l14};Cache.fill (/srv/cache.py:22)");
    let run = "Worker.run (/srv/app.py:33)";
    let half_mib = MIB / 2;
    let expected_growth: BTreeMap<String, u64> = [
        // a1: +10 MiB split by faults 30:10; T0's 7.5 MiB goes half to its previous stack and
        // half to its current one, both L12. a2: +8 MiB, no faults, to the GIL holder T0: half
        // to L12 (before), half to L14 (now).
        (format!("{a}{l12}"), 15 * half_mib + 4 * MIB),
        // a3: +8 MiB, no faults, no GIL: to the busiest thread, T0 (6 ms against 4): half to
        // L14, half to F.
        (format!("{a}{l14}"), 8 * MIB),
        (format!("{a}{fill}"), 4 * MIB),
        // a1: T1's 2.5 MiB.
        (format!("{a}{run}"), 5 * half_mib),
        // a5: +4 MiB, all faults by T0, which has no Python frames before and now.
        (format!("{a}[no Python frames]"), 4 * MIB),
        // a6: +2 MiB in a sample without threads.
        (format!("{a}[unattributed]"), 2 * MIB),
        // b1 +1 MiB (faults), b2 +2 MiB (busiest thread): all on R.
        (format!("{b}{run}"), 3 * MIB),
    ]
    .into_iter()
    .collect();
    assert_eq!(folded(&growth), expected_growth);
    // Wall: 10 ms per thread per sample (the first counts one interval), a7 is capped at ten
    // intervals (140 ms late -> 100 ms); a6 has no thread to count.
    let expected_wall: BTreeMap<String, u64> = [
        (format!("{a}{l12}"), 20_000),
        (format!("{a}{l14}"), 10_000),
        (format!("{a}{fill}"), 110_000),
        (format!("{a}{run}"), 160_000),
        (format!("{a}[no Python frames]"), 20_000),
        (format!("{b}{run}"), 30_000),
    ]
    .into_iter()
    .collect();
    assert_eq!(folded(&wall), expected_wall);
    // One tree for both processes and one node per function.
    let merged = folded(&merged);
    assert_eq!(merged["Worker.run (/srv/app.py)"], 11 * half_mib);
    assert_eq!(
        merged["main (/srv/app.py);Loader.load (/srv/app.py)"],
        15 * half_mib + 12 * MIB
    );

    // Freed: a4's 30 MiB decrease goes to T0, the only thread whose stack changed (F -> no
    // Python frames), on the stack it had before.
    let freed = export(&rec, &["--format", "collapsed", "--metric", "freed"]);
    assert_eq!(folded(&freed), [(format!("{a}{fill}"), 30 * MIB)].into());

    // Only one process.
    let only_b = export(
        &rec,
        &[
            "--format",
            "collapsed",
            "--metric",
            "growth",
            "--pid",
            "4300",
        ],
    );
    assert_eq!(only_b, format!("{b}{run} {}\n", 3 * MIB));
}

#[test]
fn lines_golden() {
    let dir = tempfile::tempdir().unwrap();
    let rec = golden_recording(dir.path());
    let rec = rec.to_str().unwrap();
    let csv = run_ok(&["lines", "-i", rec, "--format", "csv", "--metric", "growth"]);
    let text = run_ok(&["lines", "-i", rec, "--format", "text", "--metric", "growth"]);
    check_golden("lines-growth.csv", &csv);
    check_golden("lines-growth.txt", &text);
    // By hand (MiB): self / total per line, both processes together; time % of 350 ms of wall
    // time; net = growth - freed, where a4's 30 MiB decrease goes to T0, the only thread whose
    // stack changed (F -> none), on the stack it had before (F); at peak: what each line had
    // contributed when its process was at its highest (A at a3, B at b2), and that as a share
    // of the 29 MiB grown over the baselines by then (A: 11.5 + 8 + 4 + 2.5, B: 3).
    let rows: Vec<Vec<String>> = csv
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .map(|f| f.trim_matches('"').to_string())
                .collect()
        })
        .collect();
    let m = |x: f64| format!("{:.0}", x * MIB as f64);
    let pct = |x: f64| format!("{x:.3}");
    let expected = [
        // line, function, self, total, time (ms), growth, retained, at peak. Cache.fill's
        // free at a4 cancels all of A's earlier growth (newest first), so only what grew
        // after it is retained in A; B keeps Worker.run's 3 MiB.
        ("12", "Loader.load", 11.5, 11.5, 20.0, 11.5, 0.0, 11.5),
        ("14", "Loader.load", 8.0, 12.0, 120.0, 12.0, 0.0, 12.0),
        ("33", "Worker.run", 5.5, 5.5, 190.0, 5.5, 3.0, 5.5),
        ("22", "Cache.fill", 4.0, 4.0, 110.0, 4.0, 0.0, 4.0),
        // What no line can take is listed, not hidden: a5's growth landed on a thread outside
        // Python code (a5), a6's on a sample without threads.
        ("0", "[no Python frames]", 4.0, 4.0, 20.0, 4.0, 4.0, 0.0),
        ("0", "[unattributed]", 2.0, 2.0, 0.0, 2.0, 2.0, 0.0),
        ("5", "main", 0.0, 23.5, 140.0, 23.5, 0.0, 23.5),
    ];
    assert_eq!(rows.len(), expected.len(), "{csv}");
    for (row, e) in rows.iter().zip(expected) {
        assert_eq!(
            &row[1..10],
            &[
                e.0.to_string(),
                e.1.to_string(),
                m(e.2),
                m(e.3),
                pct(e.4 / 350.0 * 100.0),
                m(e.5),
                m(e.6),
                m(e.7),
                pct(e.7 / 29.0 * 100.0),
            ],
            "{csv}"
        );
    }
}

/// Real recordings: X of known_memory.py and Y of workers.py (with --subprocesses), in a
/// temporary folder; None when no Python 3.11+ is provisioned.
fn record_live() -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    let Some(py) = interpreters_from((3, 11)).into_iter().next() else {
        eprintln!("*** SKIPPED: no Python 3.11+ is provisioned ***");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let known_memory = dir.path().join("known_memory.msp");
    let workers = dir.path().join("workers.msp");
    let exe = py.exe.to_str().unwrap();
    let script = |name: &str| fixtures_dir().join(name).to_str().unwrap().to_string();
    run_ok(&[
        "record",
        "-o",
        known_memory.to_str().unwrap(),
        "--",
        exe,
        &script("known_memory.py"),
    ]);
    run_ok(&[
        "record",
        "--subprocesses",
        "-o",
        workers.to_str().unwrap(),
        "--",
        exe,
        &script("workers.py"),
        "2",
    ]);
    Some((dir, known_memory, workers))
}
/// Folded growth of known_memory.py puts each retained block on its allocating line.
fn check_growth_on_allocating_lines(known_memory: &Path) {
    let growth = folded(&export(
        known_memory,
        &["--format", "collapsed", "--metric", "growth"],
    ));
    let file = fixtures_dir().join("known_memory.py");
    for (function, marker_name, mib) in [
        ("retain_200", "retain-200", 200),
        ("retain_50", "retain-50", 50),
    ] {
        let innermost = format!(
            "{function} ({}:{})",
            file.display(),
            marker("known_memory.py", marker_name)
        );
        let best = growth
            .iter()
            .filter(|(stack, _)| stack.rsplit(';').next() == Some(innermost.as_str()))
            .map(|(_, &v)| v)
            .max()
            .unwrap_or(0);
        assert!(
            best as f64 >= 0.9 * (mib * MIB) as f64,
            "{innermost}: {:.1} MiB of {mib}\n{growth:#?}",
            best as f64 / MIB as f64
        );
    }
}

fn speedscope_validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/speedscope-file-format-schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    jsonschema::draft7::new(&schema).unwrap()
}

/// Check a speedscope export against the schema and memspy's own promises; returns it.
fn check_speedscope(rec: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--format", "speedscope"];
    all.extend_from_slice(args);
    let doc: Value = serde_json::from_str(&export(rec, &all)).unwrap();
    let errors: Vec<String> = speedscope_validator()
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{}: {errors:#?}", rec.display());
    assert_eq!(doc["activeProfileIndex"], 0);
    assert_eq!(
        doc["exporter"],
        format!("memspy {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(doc["name"], rec.file_name().unwrap().to_str().unwrap());
    let recording = memspy::recording::Recording::open(rec).unwrap();
    let pids: Vec<i32> = recording
        .processes
        .iter()
        .enumerate()
        .filter(|(i, _)| recording.samples.iter().any(|s| s.process as usize == *i))
        .map(|(_, p)| p.pid)
        .collect();
    let profiles = doc["profiles"].as_array().unwrap();
    let frames = doc["shared"]["frames"].as_array().unwrap().len() as u64;
    assert_eq!(
        profiles.len(),
        3 * pids.len(),
        "one profile per process and unit"
    );
    for (i, pid) in pids.iter().enumerate() {
        let units: Vec<&str> = profiles[3 * i..3 * i + 3]
            .iter()
            .map(|p| p["unit"].as_str().unwrap())
            .collect();
        assert_eq!(units, ["microseconds", "microseconds", "bytes"]);
        for p in &profiles[3 * i..3 * i + 3] {
            let name = p["name"].as_str().unwrap();
            assert!(name.contains(&format!("process {pid} ")), "{name}");
            let weights = p["weights"].as_array().unwrap();
            let samples = p["samples"].as_array().unwrap();
            assert_eq!(weights.len(), samples.len());
            assert!(weights.iter().all(|w| w.as_f64().unwrap() > 0.0), "{name}");
            let total: f64 = weights.iter().map(|w| w.as_f64().unwrap()).sum();
            assert!((p["endValue"].as_f64().unwrap() - total).abs() < 1e-3);
            for s in samples {
                let s = s.as_array().unwrap();
                assert!(!s.is_empty());
                assert!(s.iter().all(|f| f.as_u64().unwrap() < frames));
            }
        }
    }
    doc
}

#[test]
fn speedscope_validates_against_the_schema() {
    // The validator is not vacuous: a document without frames is refused.
    let bad = serde_json::json!({
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "profiles": [{"type": "sampled", "name": "x", "unit": "furlongs"}],
    });
    assert!(!speedscope_validator().is_valid(&bad));

    let dir = tempfile::tempdir().unwrap();
    let rec = golden_recording(dir.path());
    let doc = check_speedscope(&rec, &[]);
    // Process A's growth profile: the same stacks and weights as the folded growth.
    let growth = &doc["profiles"][2];
    assert_eq!(growth["endValue"].as_f64().unwrap(), (32 * MIB) as f64);
    let frames = doc["shared"]["frames"].as_array().unwrap();
    let fill = frames
        .iter()
        .position(|f| f["name"] == "Cache.fill")
        .unwrap();
    assert_eq!(frames[fill]["file"], "/srv/cache.py");
    assert_eq!(frames[fill]["line"], 22);
    // One frame per function with --function.
    let doc = check_speedscope(&rec, &["--function"]);
    let frames = doc["shared"]["frames"].as_array().unwrap();
    let loads: Vec<&Value> = frames
        .iter()
        .filter(|f| f["name"] == "Loader.load")
        .collect();
    assert_eq!(loads.len(), 1);
    assert!(loads[0].get("line").is_none());
}

/// The documented keys of the JSON summary, checked on a document.
fn check_json_shape(doc: &Value) {
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(doc),
        [
            "exporter",
            "processes",
            "recording",
            "top_functions",
            "top_lines",
            "totals",
            "units"
        ]
    );
    assert_eq!(
        keys(&doc["recording"]),
        [
            "blocking",
            "complete",
            "duration_s",
            "failed",
            "file",
            "memory",
            "memspy_version",
            "rate_hz",
            "samples",
            "start",
            "start_unix_ns"
        ]
    );
    assert_eq!(
        keys(&doc["recording"]["failed"]),
        ["exited", "fatal", "raced"]
    );
    let metrics = ["cpu", "freed", "growth", "peak", "retained", "wall"];
    for k in ["totals", "units", "top_functions", "top_lines"] {
        assert_eq!(keys(&doc[k]), metrics, "{k}");
    }
    for p in doc["processes"].as_array().unwrap() {
        assert_eq!(
            keys(p),
            [
                "command",
                "failed",
                "parent_pid",
                "peak",
                "pid",
                "python",
                "rss_last",
                "rss_max",
                "rss_min",
                "samples",
                "tasks",
                "threads",
                "totals"
            ]
        );
        assert_eq!(keys(&p["totals"]), metrics);
        let threads = p["threads"].as_array().unwrap();
        assert!(!threads.is_empty());
        for t in threads {
            assert_eq!(keys(t), ["name", "tid"]);
        }
    }
    for m in metrics {
        let top = &doc["top_functions"][m];
        assert_eq!(keys(top), ["inclusive", "self"]);
        for list in ["inclusive", "self"] {
            let list = top[list].as_array().unwrap();
            assert!(list.len() <= 20);
            for f in list {
                assert_eq!(keys(f), ["dotted", "file", "function", "inclusive", "self"]);
            }
        }
        let lines = doc["top_lines"][m].as_array().unwrap();
        assert!(lines.len() <= 20);
        for l in lines {
            assert_eq!(
                keys(l),
                ["file", "function", "line", "self", "source", "total"]
            );
        }
    }
}

/// Totals of the summary equal the totals of the folded stacks (which round each stack).
fn check_json_totals(rec: &Path, doc: &Value) {
    for metric in ["wall", "cpu", "growth"] {
        let folded = folded(&export(rec, &["--format", "collapsed", "--metric", metric]));
        let sum: u64 = folded.values().sum();
        let total = doc["totals"][metric].as_f64().unwrap();
        assert!(
            (total - sum as f64).abs() <= 0.5 * folded.len() as f64 + 1.0,
            "{}: {metric} total {total} against folded {sum}",
            rec.display()
        );
    }
}

#[test]
fn json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let rec = golden_recording(dir.path());
    let doc: Value = serde_json::from_str(&export(&rec, &["--format", "json"])).unwrap();
    check_json_shape(&doc);
    check_json_totals(&rec, &doc);
    // Exact figures of the written recording (see `golden_recording`).
    let r = &doc["recording"];
    assert_eq!(r["file"], "golden.msp");
    assert_eq!(r["start"], "2025-11-24T16:00:00.000Z");
    assert_eq!(r["samples"], 11);
    assert_eq!(r["failed"]["raced"], 1);
    assert_eq!(r["duration_s"], 0.2);
    let mib = |x: f64| x * MIB as f64;
    let t = &doc["totals"];
    assert_eq!(t["wall"], 350_000.0);
    assert_eq!(t["cpu"], 55_000.0);
    assert_eq!(t["growth"], mib(35.0));
    assert_eq!(t["freed"], mib(30.0));
    assert_eq!(t["retained"], mib(5.0));
    assert_eq!(t["peak"], mib(29.0));
    let a = &doc["processes"][0];
    assert_eq!(a["pid"], 4242);
    assert_eq!(a["samples"], 8);
    assert_eq!(a["rss_min"], 96 * MIB);
    assert_eq!(a["rss_max"], 126 * MIB);
    assert_eq!(a["rss_last"], 102 * MIB);
    assert_eq!(a["peak"]["time_s"], 0.03);
    assert_eq!(a["peak"]["bytes"], 126 * MIB);
    assert_eq!(a["totals"]["growth"], mib(32.0));
    assert_eq!(doc["processes"][1]["parent_pid"], 4242);
    let entry = |list: &Value, name: &str| -> (f64, f64) {
        let f = list
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == name)
            .unwrap_or_else(|| panic!("{name} not in {list}"));
        (
            f["inclusive"].as_f64().unwrap(),
            f["self"].as_f64().unwrap(),
        )
    };
    let growth = &doc["top_functions"]["growth"]["inclusive"];
    assert_eq!(entry(growth, "main"), (mib(23.5), 0.0));
    assert_eq!(entry(growth, "Loader.load"), (mib(23.5), mib(19.5)));
    assert_eq!(entry(growth, "Cache.fill"), (mib(4.0), mib(4.0)));
    assert_eq!(entry(growth, "Worker.run"), (mib(5.5), mib(5.5)));
    assert_eq!(entry(growth, "[unattributed]"), (mib(2.0), mib(2.0)));
    let fill = growth
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == "Cache.fill")
        .unwrap();
    assert_eq!(fill["dotted"], "srv.cache.Cache.fill");
    assert_eq!(fill["file"], "/srv/cache.py");
    // Retained: Cache.fill's free of 30 MiB (at a4) cancels the newest growth first: its own
    // 4, Loader.load's 8 + 4 + 7.5 and Worker.run's 2.5 in process A, and 4 MiB of memory from
    // before the recording. What A keeps is what grew after: 4 without Python frames and 2
    // unattributed; B keeps Worker.run's 3. Totals agree: 35 grown - 30 freed = 5 retained.
    let retained = &doc["top_functions"]["retained"]["self"];
    let value = |name: &str| {
        retained
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == name)
            .map(|f| f["self"].as_f64().unwrap())
    };
    assert_eq!(value("[memory from before the recording]"), Some(mib(-4.0)));
    assert_eq!(value("[no Python frames]"), Some(mib(4.0)));
    assert_eq!(value("[unattributed]"), Some(mib(2.0)));
    assert_eq!(value("Worker.run"), Some(mib(3.0)));
    assert_eq!(value("Cache.fill"), None);
    assert_eq!(value("Loader.load"), None);
    assert_eq!(doc["totals"]["retained"], mib(5.0));
    assert_eq!(doc["totals"]["growth"], mib(35.0));
    assert_eq!(doc["totals"]["freed"], mib(30.0));
    // The peak (a3, 126 MiB): what each stack held then.
    let peak = &doc["top_functions"]["peak"]["self"];
    assert_eq!(entry(peak, "Loader.load"), (mib(23.5), mib(19.5)));
    assert_eq!(doc["totals"]["peak"], mib(26.0 + 3.0));
    let by_self = &doc["top_functions"]["growth"]["self"];
    assert_eq!(by_self[0]["function"], "Loader.load");
    assert!(by_self
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["function"] != "main"));
    let lines = &doc["top_lines"]["growth"];
    assert_eq!(lines[0]["line"], 12);
    assert_eq!(lines[0]["source"], "self.items = read_all()");
}

#[test]
fn export_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let rec = golden_recording(dir.path());
    let rec = rec.to_str().unwrap();
    for format in ["collapsed", "speedscope", "json", "pprof"] {
        let out = memspy(&[
            "export",
            "-i",
            rec,
            "-o",
            "/no/such/dir/out",
            "--format",
            format,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{format}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{format}: {stderr}");
        assert!(stderr.contains("/no/such/dir/out"), "{stderr}");
    }
    let out_path = dir.path().join("out");
    let out_path = out_path.to_str().unwrap();
    // An unknown format is refused by the argument parser.
    let out = memspy(&["export", "-i", rec, "-o", out_path, "--format", "pprof3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'pprof3'"));
    // A pid that is not in the recording.
    let out = memspy(&[
        "export", "-i", rec, "-o", out_path, "--format", "json", "--pid", "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    assert!(!Path::new(out_path).exists());
}

/// Every export of real recordings: X of known_memory.py, Y of workers.py with its workers.
/// One test, so the fixtures are recorded once (nextest runs each test in its own process).
#[test]
fn exports_of_real_recordings() {
    let Some((_dir, known_memory, workers)) = record_live() else {
        return;
    };
    check_growth_on_allocating_lines(&known_memory);

    let doc = check_speedscope(&known_memory, &[]);
    assert_eq!(doc["profiles"].as_array().unwrap().len(), 3);
    let doc = check_speedscope(&workers, &[]);
    assert!(
        doc["profiles"].as_array().unwrap().len() >= 3 * 4,
        "supervisor and 3+ workers"
    );
    check_speedscope(&workers, &["--function"]);

    for rec in [&known_memory, &workers] {
        let doc: Value = serde_json::from_str(&export(rec, &["--format", "json"])).unwrap();
        check_json_shape(&doc);
        check_json_totals(rec, &doc);
    }
    let doc: Value = serde_json::from_str(&export(&known_memory, &["--format", "json"])).unwrap();
    let retain = doc["top_functions"]["growth"]["inclusive"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == "retain_200")
        .unwrap()["inclusive"]
        .as_f64()
        .unwrap();
    assert!(retain >= 0.9 * (200 * MIB) as f64, "{retain}");
}
