//! `memspy dump` against real interpreters: the stacks memspy reads from outside must be exactly
//! what the interpreter itself reports (sys._current_frames()), on every provisioned CPython.
mod common;

use std::collections::BTreeMap;

use std::process::Command;

use common::{
    fixtures_dir, interpreter, interpreters, marker, memspy, start_fixture, start_target,
    Interpreter, Target,
};
use serde_json::Value;

/// (function, file, line), innermost first.
type Stack = Vec<(String, String, i64)>;

fn truth(ready: &str) -> (u32, BTreeMap<String, Stack>) {
    let v: Value = serde_json::from_str(ready).expect("ready file is JSON");
    let reporter = v["reporter"].as_u64().unwrap() as u32;
    let threads = v["threads"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(tid, frames)| {
            let frames = frames
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f[0].as_str().unwrap().to_string(),
                        f[1].as_str().unwrap().to_string(),
                        f[2].as_i64().unwrap(),
                    )
                })
                .collect();
            (tid.clone(), frames)
        })
        .collect();
    (reporter, threads)
}

fn dumped(process: &Value) -> BTreeMap<String, Stack> {
    process["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let frames = t["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f["function"].as_str().unwrap().to_string(),
                        f["file"].as_str().unwrap().to_string(),
                        f["line"].as_i64().unwrap(),
                    )
                })
                .collect();
            (t["native_id"].to_string(), frames)
        })
        .collect()
}
fn find<'a>(stack: &'a Stack, function: &str) -> &'a (String, String, i64) {
    stack
        .iter()
        .find(|f| f.0 == function || f.0.ends_with(&format!(".{function}")))
        .unwrap_or_else(|| panic!("no frame {function} in {stack:?}"))
}

fn check_dump(py: &Interpreter) {
    let (target, ready) = start_fixture(py, "stacks.py", &[]);
    check_stacks(py, target, &ready);
}

/// Compare `memspy dump` of a running stacks.py with what it reported about itself.
fn check_stacks(py: &Interpreter, target: Target, ready: &str) {
    let pid = target.pid();
    let out = memspy(&["dump", "--pid", &pid.to_string(), "--json"]);
    assert!(
        out.status.success(),
        "{}: memspy failed: {}",
        py.label,
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("dump --json is JSON");
    let process = &json["processes"][0];
    assert_eq!(process["pid"], pid);
    assert_eq!(
        process["python"]["version"],
        py.version.as_str(),
        "{}: version",
        py.label
    );

    let (reporter, expected) = truth(ready);
    let got = dumped(process);
    // Every thread the interpreter knows, plus the reporter (parked after writing the truth).
    assert_eq!(
        got.len(),
        expected.len() + 1,
        "{}: threads {:?}",
        py.label,
        got.keys()
    );
    assert!(got.contains_key(&reporter.to_string()));
    for (tid, want) in &expected {
        let have = got
            .get(tid)
            .unwrap_or_else(|| panic!("{}: thread {tid} missing", py.label));
        if have != want {
            let first = have
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .unwrap_or(have.len().min(want.len()));
            panic!(
                "{}: thread {tid}: memspy read {} frames, the interpreter has {}; first difference at \
                 frame {first}: memspy {:?} vs interpreter {:?}",
                py.label,
                have.len(),
                want.len(),
                have.get(first),
                want.get(first)
            );
        }
    }

    // The same facts, checked against the fixture source rather than the interpreter's report.
    let main = &got[&pid.to_string()];
    let run = find(main, "run");
    assert!(
        run.1.ends_with("stacks.py") && run.2 == marker("stacks.py", "main"),
        "{main:?}"
    );
    let (major, minor) = py.minor();
    if (major, minor) >= (3, 11) {
        assert_eq!(run.0, "Service.run", "qualname on {}", py.label);
    }
    let deep = got
        .values()
        .find(|s| s.iter().any(|f| f.0 == "recurse"))
        .expect("deep thread");
    assert_eq!(deep.iter().filter(|f| f.0 == "recurse").count(), 501);
    assert_eq!(
        find(deep, "recurse").2,
        marker("stacks.py", "recurse-bottom")
    );
    let uni = got
        .values()
        .find(|s| s.iter().any(|f| f.0 == "漢字"))
        .expect("unicode thread");
    let f = find(uni, "f_𠀀");
    assert!(
        f.1.ends_with("pkg_ünï/mod_漢字.py") && f.2 == marker("pkg_ünï/mod_漢字.py", "call-then")
    );
    let f = find(uni, "漢字");
    assert_eq!(f.2, marker("pkg_ünï/mod_漢字.py", "call-ucs4"));
    let f = find(uni, "función_ñ");
    assert!(
        f.1.ends_with("pkg_ünï/latin_é.py") && f.2 == marker("pkg_ünï/latin_é.py", "call-latin")
    );
    let generator = got
        .values()
        .find(|s| s.iter().any(|f| f.0 == "numbers"))
        .expect("generator");
    assert_eq!(
        find(generator, "numbers").2,
        marker("stacks.py", "generator")
    );
    let coroutine = got
        .values()
        .find(|s| s.iter().any(|f| f.0 == "inner_coroutine"))
        .expect("coroutine");
    assert_eq!(
        find(coroutine, "inner_coroutine").2,
        marker("stacks.py", "coroutine")
    );
    assert_eq!(
        find(coroutine, "outer_coroutine").2,
        marker("stacks.py", "await")
    );
    let task = got
        .values()
        .find(|s| s.iter().any(|f| f.0 == "asyncio_task"))
        .expect("asyncio");
    assert_eq!(find(task, "asyncio_task").2, marker("stacks.py", "asyncio"));
    let exec = got
        .values()
        .find(|s| s.iter().any(|f| f.0 == "executed"))
        .expect("exec");
    assert_eq!(find(exec, "executed").1, "<exec-block>");
    assert_eq!(find(exec, "executed").2, 3);
    drop(target);
}

per_interpreter! {
    check_dump;
    dump_pyenv_3_8 => "pyenv-3.8.18",
    dump_pyenv_3_9 => "pyenv-3.9.18",
    dump_pyenv_3_10 => "pyenv-3.10.13",
    dump_pyenv_3_11 => "pyenv-3.11.7",
    dump_pyenv_3_12 => "pyenv-3.12.1",
    dump_pyenv_3_13 => "pyenv-3.13.0",
    dump_debian_3_9 => "debian-bullseye-3.9",
    dump_debian_3_11 => "debian-bookworm-3.11",
    dump_debian_3_13 => "debian-trixie-3.13",
    dump_debian_3_14 => "debian-sid-3.14",
    dump_debian_3_15 => "debian-sid-3.15",
}

/// A spinning thread holds the GIL and is running; a sleeping one neither.
#[test]
fn gil_holder_and_activity() {
    for py in interpreters() {
        let (target, _) = start_fixture(&py, "spin.py", &[]);
        let pid = target.pid();
        let out = memspy(&["dump", "--pid", &pid.to_string(), "--json"]);
        assert!(
            out.status.success(),
            "{}: {}",
            py.label,
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        let threads = json["processes"][0]["threads"].as_array().unwrap();
        let top = |t: &Value| {
            t["frames"][0]["function"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        let spinner = threads
            .iter()
            .find(|t| top(t) == "spin")
            .expect("spin thread");
        let idle = threads
            .iter()
            .find(|t| top(t) == "idle")
            .expect("idle thread");
        assert_eq!(
            spinner["holds_gil"], true,
            "{}: spinner should hold the GIL",
            py.label
        );
        assert_eq!(spinner["active"], true, "{}", py.label);
        assert_eq!(idle["holds_gil"], false, "{}", py.label);
        assert_eq!(idle["active"], false, "{}", py.label);
        assert_eq!(
            spinner["native_id"], pid,
            "{}: the main thread's tid is the pid",
            py.label
        );
    }
}

/// `python -m`: the fixture run as a module.
#[test]
fn dump_python_dash_m() {
    let Some(py) = interpreter("pyenv-3.12.1") else {
        return;
    };
    let mut cmd = Command::new(&py.exe);
    cmd.args(["-m", "stacks"]).current_dir(fixtures_dir());
    let (target, ready) = start_target(cmd, "python -m stacks");
    check_stacks(&py, target, &ready);
}

/// A virtual environment: its python is a symlink (pyenv 3.11) or, with --copies, a copy of a
/// static interpreter that is only called "python" (Debian 3.9: no Py_Version, so the version
/// comes from the binary's strings).
#[test]
fn dump_in_virtual_environments() {
    for (label, copies) in [("pyenv-3.11.7", false), ("debian-bullseye-3.9", true)] {
        let Some(py) = interpreter(label) else {
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        let mut make = Command::new(&py.exe);
        make.args(["-m", "venv", "--without-pip"]);
        if copies {
            make.arg("--copies");
        }
        let status = make.arg(&venv).status().unwrap();
        assert!(status.success(), "{label}: venv");
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.arg(fixtures_dir().join("stacks.py"));
        let (target, ready) = start_target(cmd, &format!("{label} venv"));
        check_stacks(&py, target, &ready);
    }
}

/// A C program that embeds libpython (pyenv 3.12's shared library) and runs the fixture.
#[test]
fn dump_embedded_libpython() {
    let Some(py) = interpreter("pyenv-3.12.1") else {
        return;
    };
    let prefix = py.exe.parent().unwrap().parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("embedder.c");
    let script = fixtures_dir().join("stacks.py");
    std::fs::write(
        &source,
        format!(
            "#include <Python.h>\nint main(void) {{ Py_Initialize(); \
             return PyRun_SimpleString(\"import runpy; runpy.run_path('{}', run_name='__main__')\"); }}\n",
            script.to_str().unwrap()
        ),
    )
    .unwrap();
    let exe = dir.path().join("embedder");
    let status = Command::new("gcc")
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .arg(format!("-I{}/include/python3.12", prefix.display()))
        .arg(format!("-L{}/lib", prefix.display()))
        .arg(format!("-Wl,-rpath,{}/lib", prefix.display()))
        .arg("-lpython3.12")
        .status()
        .expect("gcc");
    assert!(status.success(), "compiling the embedding program");
    let (target, ready) = start_target(Command::new(&exe), "embedded libpython");
    check_stacks(&py, target, &ready);
}

/// `--subprocesses`: the parent and each Python child, each with its own stacks.
#[test]
fn dump_subprocesses() {
    for label in ["pyenv-3.8.18", "debian-sid-3.15"] {
        let Some(py) = interpreter(label) else {
            continue;
        };
        let (target, ready) = start_fixture(&py, "family.py", &[]);
        let ready: Value = serde_json::from_str(&ready).unwrap();
        let children: Vec<u64> = ready["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        let out = memspy(&[
            "dump",
            "--pid",
            &target.pid().to_string(),
            "--subprocesses",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        let processes = json["processes"].as_array().unwrap();
        let functions = |p: &Value| -> Vec<String> {
            p["threads"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|t| t["frames"].as_array().unwrap().iter())
                .map(|f| f["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(processes[0]["pid"].as_u64(), Some(target.pid() as u64));
        assert!(
            functions(&processes[0]).contains(&"parent_wait".to_string()),
            "{label}"
        );
        for child in &children {
            let p = processes
                .iter()
                .find(|p| p["pid"].as_u64() == Some(*child))
                .unwrap_or_else(|| panic!("{label}: child {child} missing"));
            let f = functions(p);
            assert!(
                f.contains(&"park_forever".to_string()),
                "{label}: child {child}: {f:?}"
            );
            assert!(
                !f.contains(&"parent_wait".to_string()),
                "{label}: child {child} shows the parent's stack"
            );
        }
    }
}
