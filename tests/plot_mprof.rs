//! `memspy plot` and `memspy export --format mprof` on real recordings of the fixtures, and the
//! real `mprof plot` (memory_profiler and matplotlib from PyPI, in a virtualenv cached outside the
//! clone, in `~/.cache/memspy/venvs/mprof`) drawing the exports.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{fixtures_dir, interpreters_from, memspy, memspy_bin, Interpreter};
use memspy::recording::Recording;

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A 3.11+ interpreter to record the fixtures with (`interpreters()` already fails under CI when
/// any is missing).
fn python() -> Option<Interpreter> {
    let found = interpreters_from((3, 11)).into_iter().next();
    if found.is_none() {
        eprintln!("\n*** SKIPPING: no CPython 3.11+ is provisioned ***\n");
    }
    found
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstderr: {}",
        out.status,
        stderr(out)
    );
}

/// `memspy record [--subprocesses] -o DIR/NAME -- python fixtures/SCRIPT ARGS`; returns the
/// recording's path and the program's stdout.
fn record(
    dir: &Path,
    py: &Interpreter,
    name: &str,
    subprocesses: bool,
    script: &str,
    args: &[&str],
) -> (PathBuf, String) {
    let path = dir.join(name);
    let mut cmd = Command::new(memspy_bin());
    cmd.arg("record");
    if subprocesses {
        cmd.arg("--subprocesses");
    }
    let out = cmd
        .arg("-o")
        .arg(&path)
        .arg("--")
        .arg(&py.exe)
        .arg(fixtures_dir().join(script))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run memspy record");
    assert_ok(&out, &format!("record {script} with {}", py.label));
    (path, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pids of the workers that fixtures/workers.py announced ("worker <n> <pid>").
fn worker_pids(stdout: &str) -> BTreeSet<i32> {
    let pids: BTreeSet<i32> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("worker "))
        .filter_map(|l| l.split(' ').nth(1)?.parse().ok())
        .collect();
    assert_eq!(pids.len(), 5, "workers.py announced: {stdout}");
    pids
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Parse an SVG file as XML (failing on any error) and return the content of its `<text>`
/// elements, entities resolved, trimmed.
fn svg_texts(path: &Path) -> Vec<String> {
    use quick_xml::events::Event;
    let data = std::fs::read_to_string(path).unwrap();
    assert!(data.contains("<svg"), "{} is not an SVG", path.display());
    let mut reader = quick_xml::Reader::from_str(&data);
    let mut texts = Vec::new();
    let mut current: Option<String> = None;
    let mut depth = 0i32;
    loop {
        match reader.read_event() {
            Err(e) => panic!(
                "{} is not well-formed XML at byte {}: {e}",
                path.display(),
                reader.buffer_position()
            ),
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) => {
                depth += 1;
                if e.name().as_ref() == b"text" {
                    current = Some(String::new());
                }
            }
            Ok(Event::End(e)) => {
                depth -= 1;
                if e.name().as_ref() == b"text" {
                    texts.push(current.take().unwrap().trim().to_string());
                }
            }
            Ok(Event::Text(t)) => {
                if let Some(c) = current.as_mut() {
                    c.push_str(&t.decode().unwrap());
                }
            }
            Ok(Event::GeneralRef(r)) => {
                if let Some(c) = current.as_mut() {
                    match r.resolve_char_ref().unwrap() {
                        Some(ch) => c.push(ch),
                        None => {
                            let name = r.decode().unwrap();
                            let v = quick_xml::escape::resolve_predefined_entity(&name)
                                .unwrap_or_else(|| panic!("unknown entity &{name};"));
                            c.push_str(v);
                        }
                    }
                }
            }
            Ok(_) => {}
        }
    }
    assert_eq!(depth, 0, "unbalanced elements in {}", path.display());
    texts
}

/// The legend entry of a marked function: `name (file:line) +X MiB` -> X.
fn legend_growth(texts: &[String], function: &str) -> f64 {
    let entry = texts
        .iter()
        .find(|t| t.starts_with(&format!("{function} (")))
        .unwrap_or_else(|| panic!("no legend entry for {function} in {texts:?}"));
    let mib = entry
        .rsplit_once(" +")
        .and_then(|(_, v)| v.strip_suffix(" MiB"))
        .unwrap_or_else(|| panic!("legend entry without growth: {entry}"));
    mib.parse().unwrap()
}

/// Legend entries of processes: `pid <pid> <command>` -> pid.
fn legend_pids(texts: &[String]) -> BTreeSet<i32> {
    texts
        .iter()
        .filter_map(|t| t.strip_prefix("pid "))
        .filter_map(|t| t.split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn plot_single_process() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (rec_path, _) = record(dir.path(), &py, "known.msp", false, "known_memory.py", &[]);
    let rec = Recording::open(&rec_path).unwrap();
    let svg = dir.path().join("out.svg");
    let out = memspy(&["plot", s(&svg), "-i", s(&rec_path)]);
    assert_ok(&out, "memspy plot");
    assert!(
        stderr(&out).starts_with(&format!("memspy: wrote {}", svg.display())),
        "{}",
        stderr(&out)
    );
    let texts = svg_texts(&svg);
    assert!(
        texts.iter().any(|t| t == "Memory over time — known.msp"),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t == "RSS (MiB)"), "{texts:?}");
    let pids: BTreeSet<i32> = rec.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids.len(), 1);
    assert_eq!(legend_pids(&texts), pids, "{texts:?}");
    // The fixture keeps 200 MiB in retain_200 and 50 MiB in retain_50.
    let g200 = legend_growth(&texts, "retain_200");
    let g50 = legend_growth(&texts, "retain_50");
    assert!((150.0..260.0).contains(&g200), "retain_200 +{g200} MiB");
    assert!((25.0..80.0).contains(&g50), "retain_50 +{g50} MiB");

    // --functions 1 marks only the biggest grower: churn_150 allocates 3 x 150 MiB (in its
    // list comprehension, a function of its own before 3.12).
    let out = memspy(&["plot", s(&svg), "-i", s(&rec_path), "--functions", "1"]);
    assert_ok(&out, "memspy plot --functions 1");
    let texts = svg_texts(&svg);
    let marked: Vec<&String> = texts.iter().filter(|t| t.ends_with(" MiB")).collect();
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert!(marked[0].starts_with("churn_150"), "{marked:?}");
}

#[test]
fn plot_workers() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (rec_path, stdout) = record(dir.path(), &py, "workers.msp", true, "workers.py", &["2"]);
    let workers = worker_pids(&stdout);
    let rec = Recording::open(&rec_path).unwrap();
    let supervisor = rec.processes[0].pid;
    let svg = dir.path().join("workers.svg");
    let out = memspy(&["plot", s(&svg), "-i", s(&rec_path)]);
    assert_ok(&out, "memspy plot");
    let texts = svg_texts(&svg);
    let shown = legend_pids(&texts);
    for pid in workers.iter().chain([&supervisor]) {
        assert!(
            shown.contains(pid),
            "pid {pid} not in the legend: {texts:?}"
        );
    }
    // Every worker allocates in serve().
    assert!(legend_growth(&texts, "serve") > 10.0, "{texts:?}");

    // One process only.
    let one = *workers.iter().next().unwrap();
    let out = memspy(&[
        "plot",
        s(&svg),
        "-i",
        s(&rec_path),
        "--pid",
        &one.to_string(),
    ]);
    assert_ok(&out, "memspy plot --pid");
    let texts = svg_texts(&svg);
    assert_eq!(legend_pids(&texts), BTreeSet::from([one]), "{texts:?}");
}

/// A parsed mprof `.dat` file; parsing checks every line's form.
#[derive(Default, Debug)]
struct Dat {
    cmdline: String,
    /// (MiB, unix time)
    mem: Vec<(f64, f64)>,
    chld: BTreeMap<i32, Vec<(f64, f64)>>,
    /// (name, start MiB, start time, end MiB, end time, level)
    func: Vec<(String, f64, f64, f64, f64, u32)>,
}

fn parse_dat(path: &Path) -> Dat {
    let text = std::fs::read_to_string(path).unwrap();
    let mut dat = Dat::default();
    let num = |v: &str| -> f64 { v.parse().unwrap_or_else(|_| panic!("not a number: {v:?}")) };
    for (i, line) in text.lines().enumerate() {
        let (field, value) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("line {}: {line:?}", i + 1));
        let v: Vec<&str> = value.split(' ').collect();
        match field {
            "CMDLINE" => {
                assert_eq!(i, 0, "CMDLINE must come first");
                dat.cmdline = value.to_string();
            }
            "MEM" => {
                assert_eq!(v.len(), 2, "{line}");
                dat.mem.push((num(v[0]), num(v[1])));
            }
            "CHLD" => {
                assert_eq!(v.len(), 3, "{line}");
                dat.chld
                    .entry(v[0].parse().unwrap())
                    .or_default()
                    .push((num(v[1]), num(v[2])));
            }
            "FUNC" => {
                assert_eq!(v.len(), 6, "{line}");
                dat.func.push((
                    v[0].to_string(),
                    num(v[1]),
                    num(v[2]),
                    num(v[3]),
                    num(v[4]),
                    v[5].parse().unwrap(),
                ));
            }
            _ => panic!("unknown line {}: {line:?}", i + 1),
        }
    }
    assert!(!text.contains("\n\n"), "blank line in {}", path.display());
    assert!(!dat.cmdline.is_empty(), "no CMDLINE line");
    dat
}

fn assert_series(series: &[(f64, f64)], what: &str) {
    assert!(!series.is_empty(), "{what}: no readings");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for w in series.windows(2) {
        assert!(w[0].1 <= w[1].1, "{what}: timestamps go back: {w:?}");
    }
    for &(mib, t) in series {
        assert!(mib > 1.0 && mib < 4096.0, "{what}: {mib} MiB");
        assert!(
            (now - 900.0..now + 5.0).contains(&t),
            "{what}: timestamp {t} is not from this run"
        );
    }
}

#[test]
fn export_mprof_and_mprof_plot() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (known, _) = record(dir.path(), &py, "known.msp", false, "known_memory.py", &[]);
    let (workers, stdout) = record(dir.path(), &py, "workers.msp", true, "workers.py", &["2"]);
    let worker_pids = worker_pids(&stdout);

    let known_dat = dir.path().join("known.dat");
    let out = memspy(&[
        "export",
        "--format",
        "mprof",
        "-o",
        s(&known_dat),
        "-i",
        s(&known),
    ]);
    assert_ok(&out, "export known");
    let dat = parse_dat(&known_dat);
    assert!(dat.cmdline.contains("known_memory.py"), "{}", dat.cmdline);
    assert_series(&dat.mem, "MEM");
    assert!(dat.chld.is_empty());
    let peak = dat.mem.iter().map(|m| m.0).fold(0.0, f64::max);
    assert!(peak > 250.0, "peak {peak} MiB");
    let retain = dat
        .func
        .iter()
        .find(|f| f.0 == "known_memory.retain_200")
        .unwrap_or_else(|| panic!("no FUNC known_memory.retain_200: {:?}", dat.func));
    assert!(retain.4 >= retain.2, "{retain:?}");
    assert!(
        retain.3 - retain.1 > 120.0,
        "retain_200 grew only {retain:?}"
    );
    let (first, last) = (dat.mem[0].1, dat.mem[dat.mem.len() - 1].1);
    for f in &dat.func {
        assert!(f.2 >= first && f.4 <= last && f.5 >= 1, "{f:?}");
    }

    let workers_dat = dir.path().join("workers.dat");
    let out = memspy(&[
        "export",
        "--format",
        "mprof",
        "-o",
        s(&workers_dat),
        "-i",
        s(&workers),
    ]);
    assert_ok(&out, "export workers");
    let dat = parse_dat(&workers_dat);
    assert!(dat.cmdline.contains("workers.py"), "{}", dat.cmdline);
    assert_series(&dat.mem, "MEM");
    assert_eq!(
        dat.chld.keys().copied().collect::<BTreeSet<_>>(),
        worker_pids,
        "CHLD lines are the workers"
    );
    for (pid, series) in &dat.chld {
        assert_series(series, &format!("CHLD {pid}"));
    }

    // With --pid: that process alone, as the main one.
    let one = *worker_pids.iter().next().unwrap();
    let one_dat = dir.path().join("one.dat");
    let out = memspy(&[
        "export",
        "--format",
        "mprof",
        "-o",
        s(&one_dat),
        "-i",
        s(&workers),
        "--pid",
        &one.to_string(),
    ]);
    assert_ok(&out, "export --pid");
    let dat = parse_dat(&one_dat);
    assert_series(&dat.mem, "MEM of one worker");
    assert!(dat.chld.is_empty());

    // The real mprof plot draws both.
    let Some(mprof) = mprof_bin() else { return };
    for dat in [&known_dat, &workers_dat] {
        let png = dat.with_extension("png");
        let out = Command::new(&mprof)
            .arg("plot")
            .arg("-o")
            .arg(&png)
            .arg(dat)
            .env("MPLBACKEND", "Agg")
            // matplotlib's font cache, kept with the virtualenv so it is built once.
            .env("MPLCONFIGDIR", mprof.parent().unwrap().join("../mplconfig"))
            .stdin(Stdio::null())
            .output()
            .expect("run mprof");
        assert_ok(&out, &format!("mprof plot {}", dat.display()));
        let bytes = std::fs::read(&png).unwrap_or_default();
        assert!(
            bytes.len() > 1000 && bytes.starts_with(b"\x89PNG"),
            "mprof plot wrote no PNG ({} bytes); stdout: {}",
            bytes.len(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// Skip with a loud message, or fail under CI=true.
fn skip_or_fail(msg: &str) {
    if ci() {
        panic!("{msg}");
    }
    eprintln!("\n*** SKIPPING mprof plot: {msg} ***\n");
}

/// The `mprof` script of the mprof venv of `scripts/provision-venvs.sh` (memory_profiler and
/// matplotlib), which the test command provisions.
fn mprof_bin() -> Option<PathBuf> {
    let base = std::env::var_os("MEMSPY_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/memspy/venvs")
        });
    let mprof = base.join("mprof/bin/mprof");
    if base.join("mprof/.memspy-ready").exists() && mprof.exists() {
        return Some(mprof);
    }
    skip_or_fail(&format!(
        "no mprof venv in {} (run scripts/provision-venvs.sh)",
        base.display()
    ));
    None
}

#[test]
fn plot_and_export_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.msp");
    std::fs::write(&bogus, "this is not a recording\n").unwrap();
    let svg = dir.path().join("out.svg");
    let dat = dir.path().join("out.dat");
    let plot: [&str; 4] = ["plot", s(&svg), "-i", s(&bogus)];
    let export: [&str; 7] = [
        "export",
        "--format",
        "mprof",
        "-o",
        s(&dat),
        "-i",
        s(&bogus),
    ];
    for args in [&plot[..], &export[..]] {
        let out = memspy(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("memspy: error: ") && err.contains("not a memspy recording"),
            "{err}"
        );
    }
    assert!(!svg.exists() && !dat.exists());

    // A recording with no samples: a real one cut right after its first record (the description).
    let Some(py) = python() else { return };
    let rec = dir.path().join("short.msp");
    let out = Command::new(memspy_bin())
        .args(["record", "-o", s(&rec), "--"])
        .arg(&py.exe)
        .args(["-c", "import time; time.sleep(0.3)"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&out, "record a short program");
    let data = std::fs::read(&rec).unwrap();
    let header = memspy::recording::format::HEADER_LEN;
    let len = u32::from_le_bytes(data[header..header + 4].try_into().unwrap()) as usize;
    std::fs::write(&rec, &data[..header + 8 + len]).unwrap();
    assert!(Recording::open(&rec).unwrap().samples.is_empty());
    let empty_plot: [&str; 4] = ["plot", s(&svg), "-i", s(&rec)];
    let empty_export: [&str; 7] = ["export", "--format", "mprof", "-o", s(&dat), "-i", s(&rec)];
    for args in [&empty_plot[..], &empty_export[..]] {
        let out = memspy(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {err}");
        assert!(errors[0].contains("holds no samples"), "{err}");
    }
    assert!(!svg.exists() && !dat.exists());

    // A pid that is not in the recording.
    let out = memspy(&["plot", s(&svg), "-i", s(&rec), "--pid", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no process 1"),
        "{}",
        stderr(&out)
    );
}
