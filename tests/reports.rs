//! Reports from real recordings: memory attribution on known allocations, the two-thread case,
//! flamegraph SVGs and the per-line table.
mod common;

use std::path::Path;
use std::process::Command;

use common::{fixtures_dir, interpreters, marker, memspy, memspy_bin, Interpreter};
use serde_json::Value;

const MIB: f64 = 1048576.0;

/// `memspy lines --format json` rows.
fn line_rows(rec: &Path, metric: &str) -> Vec<Value> {
    let out = memspy(&[
        "lines",
        "-i",
        rec.to_str().unwrap(),
        "--metric",
        metric,
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["lines"].as_array().unwrap().clone()
}

fn self_on_line(rows: &[Value], line: i64) -> f64 {
    rows.iter()
        .filter(|r| r["line"] == line)
        .map(|r| r["self_value"].as_f64().unwrap())
        .sum()
}

/// Every `<title>` of an SVG, after checking that the whole file is well-formed XML.
/// A fixture's name as reports show it: relative to the working directory of the recorded
/// program, which the tests run from.
fn short_fixture(name: &str) -> String {
    let full = fixtures_dir().join(name);
    let cwd = std::env::current_dir().unwrap();
    full.strip_prefix(&cwd)
        .map_or(full.clone(), |p| p.to_path_buf())
        .display()
        .to_string()
}

fn svg_titles(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut titles = Vec::new();
    let mut in_title = false;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) if e.name().as_ref() == b"title" => {
                in_title = true;
                titles.push(String::new());
            }
            Ok(quick_xml::events::Event::End(e)) if e.name().as_ref() == b"title" => {
                in_title = false
            }
            Ok(quick_xml::events::Event::Text(t)) if in_title => {
                titles.last_mut().unwrap().push_str(&t.decode().unwrap());
            }
            // quick-xml reports &lt; and friends as separate events.
            Ok(quick_xml::events::Event::GeneralRef(r)) if in_title => {
                let entity = match r.decode().unwrap().as_ref() {
                    "lt" => "<",
                    "gt" => ">",
                    "amp" => "&",
                    "quot" => "\"",
                    "apos" => "'",
                    other => panic!("unexpected entity &{other};"),
                };
                titles.last_mut().unwrap().push_str(entity);
            }
            Ok(quick_xml::events::Event::Eof) => break,
            Err(e) => panic!("{} is not well-formed XML: {e}", path.display()),
            _ => {}
        }
    }
    titles
}

/// "retain_200 (/x/known_memory.py:20) (200.5 MiB, 50.00%)" -> bytes.
fn title_bytes(title: &str) -> f64 {
    let inner = &title[title.rfind(" (").unwrap() + 2..];
    let amount = inner.split(',').next().unwrap();
    let (n, unit) = amount.split_once(' ').unwrap();
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => MIB,
        "GiB" => MIB * 1024.0,
        other => panic!("unit {other} in {title}"),
    };
    n.parse::<f64>().unwrap() * scale
}

fn check_known_memory(py: &Interpreter) {
    let dir = tempfile::tempdir().unwrap();
    let rec = common::record_python(
        py,
        dir.path(),
        "known.msp",
        &[fixtures_dir().join("known_memory.py").to_str().unwrap()],
    );
    let expect = [
        ("retain-200", "retain_200", 200.0 * MIB),
        ("retain-50", "retain_50", 50.0 * MIB),
    ];
    for metric in ["growth", "retained"] {
        // The line table: the allocating line itself.
        let rows = line_rows(&rec, metric);
        for (tag, _, amount) in expect {
            let got = self_on_line(&rows, marker("known_memory.py", tag));
            assert!(
                got >= 0.9 * amount,
                "{} {metric}: line {tag} got {:.1} MiB",
                py.label,
                got / MIB
            );
            assert!(
                got <= 1.1 * amount,
                "{} {metric}: line {tag} got {:.1} MiB",
                py.label,
                got / MIB
            );
        }
        // The flamegraph: the frame of that function and line.
        let svg = dir.path().join(format!("{metric}.svg"));
        let out = memspy(&[
            "flame",
            "-i",
            rec.to_str().unwrap(),
            "--metric",
            metric,
            svg.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let titles = svg_titles(&svg);
        let heading = if metric == "growth" {
            "Memory growth — known.msp"
        } else {
            "Memory retained — known.msp"
        };
        assert!(
            std::fs::read_to_string(&svg).unwrap().contains(heading),
            "the title names the metric and unit"
        );
        for (tag, function, amount) in expect {
            let frame = format!(
                "{function} ({}:{})",
                // Flamegraphs name files relative to the program's working directory (the
                // test's, the crate's root).
                short_fixture("known_memory.py"),
                marker("known_memory.py", tag)
            );
            let got: f64 = titles
                .iter()
                .filter(|t| t.starts_with(&frame))
                .map(|t| title_bytes(t))
                .sum();
            assert!(
                got >= 0.9 * amount,
                "{} {metric} flamegraph: {frame} got {:.1} MiB",
                py.label,
                got / MIB
            );
        }
    }
    // The churning function: a lot of growth, little of it kept.
    let growth = line_rows(&rec, "growth");
    let churn = self_on_line(&growth, marker("known_memory.py", "churn"));
    assert!(
        churn >= 2.0 * 150.0 * MIB,
        "{}: churn growth {:.1} MiB",
        py.label,
        churn / MIB
    );
    // Peak: the three functions' contributions when memory was highest (200 + 50 + 150 MiB).
    let peak = line_rows(&rec, "peak");
    let at_peak = self_on_line(&peak, marker("known_memory.py", "retain-200"));
    assert!(
        at_peak >= 0.9 * 200.0 * MIB,
        "{}: peak {:.1}",
        py.label,
        at_peak / MIB
    );
}

per_interpreter! {
    check_known_memory;
    known_memory_pyenv_3_11 => "pyenv-3.11.7",
    known_memory_debian_3_11 => "debian-bookworm-3.11",
    known_memory_pyenv_3_13 => "pyenv-3.13.0",
    known_memory_debian_3_13 => "debian-trixie-3.13",
    known_memory_debian_3_14 => "debian-sid-3.14",
    known_memory_debian_3_15 => "debian-sid-3.15",
}

/// One thread allocates (with the GIL released, during a read) while another burns CPU with the
/// GIL: the page faults put the growth on the allocating thread.
#[test]
fn growth_goes_to_the_allocating_thread() {
    for py in interpreters()
        .into_iter()
        .filter(|p| ["pyenv-3.8.18", "pyenv-3.12.1", "debian-sid-3.15"].contains(&p.label.as_str()))
    {
        let dir = tempfile::tempdir().unwrap();
        let rec = common::record_python(
            &py,
            dir.path(),
            "two.msp",
            &[fixtures_dir().join("two_threads.py").to_str().unwrap()],
        );
        let rows = line_rows(&rec, "growth");
        let total: f64 = rows.iter().map(|r| r["self_value"].as_f64().unwrap()).sum();
        let in_function = |name: &str| -> f64 {
            rows.iter()
                .filter(|r| r["function"] == name)
                .map(|r| r["self_value"].as_f64().unwrap())
                .sum()
        };
        let (on_allocate, on_burn) = (in_function("allocate"), in_function("burn"));
        assert!(
            total >= 150.0 * MIB,
            "{}: total growth {:.1} MiB",
            py.label,
            total / MIB
        );
        assert!(
            on_allocate >= 0.9 * total,
            "{}: allocate() got {:.1} of {:.1} MiB (burn() {:.1})",
            py.label,
            on_allocate / MIB,
            total / MIB,
            on_burn / MIB
        );
    }
}

/// Options of `flame` on a recording with several processes, and a hostile file name.
#[test]
fn flame_options_and_escaping() {
    let py = common::interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.msp");
    let out = Command::new(memspy_bin())
        .args([
            "record",
            "--subprocesses",
            "-o",
            path.to_str().unwrap(),
            "--",
            py.exe.to_str().unwrap(),
        ])
        .arg(fixtures_dir().join("workers.py"))
        .arg("1.5")
        .output()
        .unwrap();
    assert!(out.status.success());
    let rec = path.to_str().unwrap();
    let svg = |name: &str, args: &[&str]| -> Vec<String> {
        let out_path = dir.path().join(name);
        let mut all = vec!["flame", "-i", rec, out_path.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = memspy(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        svg_titles(&out_path)
    };
    let per_process = svg("wall.svg", &[]);
    let roots = per_process
        .iter()
        .filter(|t| t.starts_with("process "))
        .count();
    assert!(roots >= 4, "one root per process: {roots}");
    let merged = svg("merged.svg", &["--merge-processes"]);
    assert_eq!(
        merged.iter().filter(|t| t.starts_with("process ")).count(),
        0
    );
    let functions = svg("functions.svg", &["--function", "--metric", "cpu"]);
    assert!(
        functions
            .iter()
            .any(|t| t.starts_with("serve (") && !t.contains(".py:")),
        "no line numbers with --function"
    );
    let info: Value = serde_json::from_slice(&memspy(&["info", "--json", rec]).stdout).unwrap();
    let pid = info["processes"][1]["pid"].as_i64().unwrap().to_string();
    let one = svg("one.svg", &["--pid", &pid]);
    assert!(one
        .iter()
        .all(|t| !t.starts_with("process ") || t.starts_with(&format!("process {pid} "))));
    let out = memspy(&[
        "flame",
        "-i",
        rec,
        "--pid",
        "1",
        dir.path().join("x.svg").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "unknown pid");

    // Code whose file name is markup must not inject it into the SVG.
    let hostile = r#"exec(compile("import time\nfor _ in range(100): time.sleep(0.01)", "<b onmouseover=alert(1)>x</b>", "exec"))"#;
    let rec2 = dir.path().join("hostile.msp");
    let out = Command::new(memspy_bin())
        .args([
            "record",
            "-o",
            rec2.to_str().unwrap(),
            "--",
            py.exe.to_str().unwrap(),
            "-c",
            hostile,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let svg_path = dir.path().join("hostile.svg");
    assert!(memspy(&[
        "flame",
        "-i",
        rec2.to_str().unwrap(),
        svg_path.to_str().unwrap()
    ])
    .status
    .success());
    let text = std::fs::read_to_string(&svg_path).unwrap();
    assert!(
        !text.contains("<b onmouseover"),
        "markup from a file name reached the SVG"
    );
    assert!(
        svg_titles(&svg_path)
            .iter()
            .any(|t| t.contains("<b onmouseover=alert(1)>x</b>")),
        "the name is shown, escaped"
    );
}

/// `lines --function NAME` lists that function's lines in source order, with their source.
#[test]
fn lines_of_one_function() {
    let py = common::interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    let rec = common::record_python(
        &py,
        dir.path(),
        "k.msp",
        &[fixtures_dir().join("known_memory.py").to_str().unwrap()],
    );
    let out = memspy(&[
        "lines",
        "-i",
        rec.to_str().unwrap(),
        "--metric",
        "growth",
        "--function",
        "retain_200",
        "--format",
        "json",
    ]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = doc["lines"].as_array().unwrap();
    let lines: Vec<i64> = rows.iter().map(|r| r["line"].as_i64().unwrap()).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "source order");
    let def = marker("known_memory.py", "retain-200") - 2;
    assert_eq!(lines[0], def, "from the def line");
    let alloc = rows
        .iter()
        .find(|r| r["line"] == marker("known_memory.py", "retain-200"))
        .unwrap();
    assert!(alloc["source"]
        .as_str()
        .unwrap()
        .contains("os.urandom(1 << 20)"));
    let text = memspy(&[
        "lines",
        "-i",
        rec.to_str().unwrap(),
        "--metric",
        "growth",
        "--top",
        "3",
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.lines().count(), 2 + 3, "{text}");
    for f in ["churn_150", "retain_200", "retain_50"] {
        assert!(
            text.lines().skip(2).any(|l| l.contains(f)),
            "{f} in the top 3: {text}"
        );
    }
    let csv = memspy(&["lines", "-i", rec.to_str().unwrap(), "--format", "csv"]);
    assert!(String::from_utf8_lossy(&csv.stdout).starts_with("file,line,function,self_us,total_us"));
    let out = memspy(&[
        "lines",
        "-i",
        rec.to_str().unwrap(),
        "--function",
        "no_such_function",
    ]);
    assert_eq!(out.status.code(), Some(2));
    // Every line of a function, to its end in the source, sampled or not.
    let out = memspy(&[
        "lines",
        "-i",
        rec.to_str().unwrap(),
        "--function",
        "churn_150",
        "--format",
        "json",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = doc["lines"].as_array().unwrap();
    let last = rows.last().unwrap();
    assert_eq!(last["line"], marker("known_memory.py", "churn-end"));
    assert_eq!(last["self_value"].as_f64(), Some(0.0), "{last}");
    assert!(last["source"].as_str().unwrap().starts_with("return None"));
}

/// `lines` of a recording of several processes says they are merged, and a function asked
/// for in a process where it did not run is looked for in the others.
#[test]
fn lines_of_several_processes() {
    let py = common::interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    let path = common::record_workers(&py, dir.path(), "w.msp");
    let rec = memspy::recording::Recording::open(&path).unwrap();
    let supervisor = rec.processes[0].pid;
    let text = memspy(&["lines", "-i", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    let first = text.lines().next().unwrap();
    assert!(
        first.contains("processes merged in one table") && first.contains(&supervisor.to_string()),
        "{text}"
    );
    let one = memspy(&[
        "lines",
        "-i",
        path.to_str().unwrap(),
        "--pid",
        &supervisor.to_string(),
    ]);
    assert!(!String::from_utf8_lossy(&one.stdout).contains("merged"));
    let out = memspy(&[
        "lines",
        "-i",
        path.to_str().unwrap(),
        "--function",
        "serve",
        "--pid",
        &supervisor.to_string(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "no samples of serve in process {supervisor}; it ran in process"
        )),
        "{err}"
    );
    let worker = rec.processes[1].pid.to_string();
    assert!(err.contains(&worker), "{err}");
    // Flamegraph roots and the plot's legend tell the supervisor from its workers.
    let svg = dir.path().join("f.svg");
    assert!(
        memspy(&["flame", "-i", path.to_str().unwrap(), svg.to_str().unwrap()])
            .status
            .success()
    );
    let flame = std::fs::read_to_string(&svg).unwrap();
    assert!(
        flame.contains(&format!("process {supervisor} (launched)")),
        "no role for the supervisor"
    );
    assert!(flame.contains(&format!("process {worker} (worker 1 of {supervisor})")));
    let plot = dir.path().join("p.svg");
    assert!(
        memspy(&["plot", "-i", path.to_str().unwrap(), plot.to_str().unwrap()])
            .status
            .success()
    );
    let plot = std::fs::read_to_string(&plot).unwrap();
    assert!(
        plot.contains(&format!("pid {worker} (worker 1 of {supervisor})")),
        "legend"
    );
}

/// Memory grown by a thread that never runs Python is reported as such, not given to the
/// Python thread that happens to run (and hold the GIL) meanwhile.
#[test]
fn growth_of_native_threads_is_not_hidden() {
    let py = common::interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("libnative_alloc.so");
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-pthread", "-O1", "-o"])
        .arg(&library)
        .arg(fixtures_dir().join("native_alloc.c"))
        .status()
        .expect("gcc");
    assert!(status.success(), "building the native library");
    let rec = common::record_python(
        &py,
        dir.path(),
        "native.msp",
        &[
            fixtures_dir().join("native_thread.py").to_str().unwrap(),
            library.to_str().unwrap(),
        ],
    );
    let rows = line_rows(&rec, "growth");
    let native: f64 = rows
        .iter()
        .filter(|r| r["function"] == "[non-Python threads]")
        .map(|r| r["self_value"].as_f64().unwrap())
        .sum();
    let burn: f64 = rows
        .iter()
        .filter(|r| r["function"] == "burn")
        .map(|r| r["self_value"].as_f64().unwrap())
        .sum();
    assert!(
        native >= 100.0 * MIB,
        "{}: [non-Python threads] got {:.1} MiB (burn() {:.1})",
        py.label,
        native / MIB,
        burn / MIB
    );
    assert!(
        burn <= 0.1 * native,
        "{}: burn() got {:.1} MiB",
        py.label,
        burn / MIB
    );
}

/// `--from`/`--to` (seconds or shares) and `--skip-startup` narrow every report to a time
/// window: two halves add up to the whole, the start-up's imports can be left out, and an
/// empty or malformed window is a one-line error.
#[test]
fn reports_look_at_a_time_window() {
    let py = common::interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    // The start-up is a module whose import takes 0.3 s: cached standard-library imports can
    // end before the first sample on a fast machine.
    std::fs::write(
        dir.path().join("slow_start.py"),
        "import time\nt = time.time()\nwhile time.time() - t < 0.3:\n    pass\n",
    )
    .unwrap();
    let script = format!(
        "import sys, time\nsys.path.insert(0, {:?})\nimport slow_start\n\
        def spin():\n    t = time.time()\n    while time.time() - t < 0.6:\n        pass\n\
        spin()\n",
        dir.path().to_str().unwrap()
    );
    let path = dir.path().join("w.msp");
    let out = memspy(&[
        "record",
        "-r",
        "1000",
        "-o",
        path.to_str().unwrap(),
        "--",
        py.exe.to_str().unwrap(),
        "-c",
        &script,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = path.to_str().unwrap();
    let rows = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["lines", "-i", p, "--format", "json"];
        args.extend_from_slice(extra);
        let out = memspy(&args);
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["lines"].as_array().unwrap().clone()
    };
    let self_sum = |rows: &[Value], pred: &dyn Fn(&Value) -> bool| -> f64 {
        rows.iter()
            .filter(|r| pred(r))
            .map(|r| r["self_value"].as_f64().unwrap())
            .sum()
    };
    let all = |_: &Value| true;
    let whole = self_sum(&rows(&[]), &all);
    let first = self_sum(&rows(&["--to", "50%"]), &all);
    let second = self_sum(&rows(&["--from", "50%"]), &all);
    let explicit = self_sum(&rows(&["--from", "0", "--to", "100%"]), &all);
    eprintln!("wall: whole {whole} us, halves {first} + {second} us");
    assert_eq!(explicit, whole);
    // The sample at the boundary counts in both halves: within a few ms.
    assert!(first > 0.0 && second > 0.0);
    assert!(
        (first + second - whole).abs() <= 5_000.0,
        "{first} + {second} vs {whole}"
    );
    // Start-up: the imports are in the whole recording, not after --skip-startup; the work is.
    // The import machinery's frames take little time of their own; their total is the import.
    let importing = |r: &Value| r["file"].as_str().unwrap().starts_with("<frozen importlib");
    let largest_total = |rows: &[Value], pred: &dyn Fn(&Value) -> bool| -> f64 {
        rows.iter()
            .filter(|r| pred(r))
            .map(|r| r["total_value"].as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    let spinning = |r: &Value| r["function"] == "spin";
    let imported = largest_total(&rows(&[]), &importing);
    assert!(imported >= 250_000.0, "the import took {imported} us");
    let after = rows(&["--skip-startup"]);
    assert_eq!(largest_total(&after, &importing), 0.0);
    let slow_start = |r: &Value| r["file"].as_str().unwrap().ends_with("slow_start.py");
    assert_eq!(self_sum(&after, &slow_start), 0.0);
    assert!(self_sum(&after, &spinning) >= 400_000.0, "{after:?}");
    // The other reports take the window too.
    let svg = dir.path().join("f.svg");
    let flame = memspy(&["flame", "-i", p, svg.to_str().unwrap(), "--skip-startup"]);
    assert!(flame.status.success());
    assert!(!std::fs::read_to_string(&svg)
        .unwrap()
        .contains("_find_and_load"));
    for bad in [&["--from", "90%", "--to", "10%"][..], &["--from", "60s"]] {
        let mut args = vec!["lines", "-i", p];
        args.extend_from_slice(bad);
        let out = memspy(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("time window is empty"));
    }
    let out = memspy(&["plot", "-i", p, "-o", "/dev/null", "--from", "ten"]);
    assert_eq!(out.status.code(), Some(2));
}
