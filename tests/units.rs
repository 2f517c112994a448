//! Units of work beyond OS threads, read from real interpreters: gevent's greenlets (with
//! greenlet and gevent from PyPI, for every interpreter the newest greenlet supports, and older
//! greenlet releases whose layouts differ) and Python thread names, compared with what the
//! program itself sees.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{fixtures_dir, interpreter, memspy, start_target, venv, Interpreter};
use serde_json::Value;

/// Start fixtures/gevent_parked.py with the wheels of `site` on its path; returns the target
/// and its own view of its greenlets.
fn parked_greenlets(py: &Interpreter, site: &str) -> Option<(common::Target, Value)> {
    let site = venv(&format!("sites/{site}"))?;
    let mut cmd = Command::new(&py.exe);
    cmd.arg(fixtures_dir().join("gevent_parked.py"))
        .env("PYTHONPATH", &site);
    let (target, view) = start_target(cmd, &format!("{} gevent_parked.py", py.label));
    Some((target, serde_json::from_str(&view).expect("view")))
}

/// (function, line) of each frame of a dumped stack.
fn frames(stack: &Value) -> Vec<(String, i64)> {
    stack
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap().to_string(),
                f["line"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// `memspy dump --json` lists every live greenlet under the thread it belongs to, with the
/// state and, for a waiting one, exactly the stack the program sees; the running one shows its
/// thread's stack; finished ones are not listed.
fn check_greenlets(py: &Interpreter, site: &str) {
    let Some((target, view)) = parked_greenlets(py, site) else {
        return;
    };
    let pid = target.pid().to_string();
    let out = memspy(&["dump", "--pid", &pid, "--json"]);
    assert!(
        out.status.success(),
        "{}: {}",
        py.label,
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: Value = serde_json::from_slice(&out.stdout).unwrap();
    let process = &dump["processes"][0];
    let note = process["greenlet"].as_str().unwrap_or_default();
    let version = view["greenlet"].as_str().unwrap();
    assert!(
        note.starts_with(&format!("greenlet {version} ")),
        "{}: {note}",
        py.label
    );
    // Every unit memspy lists, by address, with the thread it was listed under.
    let mut listed: BTreeMap<String, (Value, Option<String>)> = BTreeMap::new();
    for t in process["threads"].as_array().unwrap() {
        for u in t["units"].as_array().into_iter().flatten() {
            let thread = t["name"].as_str().map(str::to_string);
            listed.insert(u["id"].as_str().unwrap().into(), (u.clone(), thread));
        }
    }
    for u in process["other_units"].as_array().into_iter().flatten() {
        listed.insert(u["id"].as_str().unwrap().into(), (u.clone(), None));
    }
    let mut waiting = 0;
    for (addr, g) in view["greenlets"].as_object().unwrap() {
        let state = g["state"].as_str().unwrap();
        let found = listed.get(addr);
        if state == "dead" {
            assert!(
                found.is_none(),
                "{}: finished greenlet {addr} listed",
                py.label
            );
            continue;
        }
        let (unit, thread) =
            found.unwrap_or_else(|| panic!("{}: greenlet {addr} ({state}) not listed", py.label));
        assert_eq!(unit["kind"], "greenlet");
        assert_eq!(unit["state"], state, "{}: greenlet {addr}", py.label);
        match state {
            "waiting" => {
                waiting += 1;
                assert_eq!(
                    frames(&unit["frames"]),
                    frames(&g["frames"]),
                    "{}: greenlet {addr} ({})",
                    py.label,
                    g["type"]
                );
                assert!(thread.is_some(), "{}: {addr} on no thread", py.label);
            }
            "running" if g["frames"].is_array() => {
                // The greenlet computing: its thread's stack, whose innermost line moves.
                let (want, got) = (frames(&g["frames"]), frames(&unit["frames"]));
                assert_eq!(got.len(), want.len(), "{}: running stack", py.label);
                assert_eq!(got[1..], want[1..], "{}: running stack", py.label);
                assert_eq!(got[0].0, want[0].0);
                assert_eq!(thread.as_deref(), Some("MainThread"), "{}", py.label);
            }
            "running" => assert_eq!(thread.as_deref(), Some("other"), "{}", py.label),
            _ => {}
        }
    }
    // 3 naps, 2 event waits, the recursion, the C call, the generator, the raw greenlet, the
    // main greenlet, the hub; and on the other thread its main greenlet and two naps.
    assert_eq!(waiting, 14, "{}: waiting greenlets", py.label);
}

macro_rules! greenlet_tests {
    ($($name:ident => ($label:literal, $site:literal),)*) => {$(
        #[test]
        fn $name() {
            if let Some(py) = interpreter($label) {
                check_greenlets(&py, $site);
            }
        }
    )*};
}

greenlet_tests! {
    greenlets_pyenv_3_9 => ("pyenv-3.9.18", "gevent-cp39"),
    greenlets_debian_3_9 => ("debian-bullseye-3.9", "gevent-cp39"),
    greenlets_pyenv_3_10 => ("pyenv-3.10.13", "gevent-cp310"),
    greenlets_pyenv_3_11 => ("pyenv-3.11.7", "gevent-cp311"),
    greenlets_debian_3_11 => ("debian-bookworm-3.11", "gevent-cp311"),
    greenlets_pyenv_3_12 => ("pyenv-3.12.1", "gevent-cp312"),
    greenlets_pyenv_3_13 => ("pyenv-3.13.0", "gevent-cp313"),
    greenlets_debian_3_13 => ("debian-trixie-3.13", "gevent-cp313"),
    greenlets_debian_3_14 => ("debian-sid-3.14", "gevent-cp314"),
    greenlets_debian_3_15 => ("debian-sid-3.15", "gevent-cp315"),
    greenlet_3_0_3_pyenv_3_11 => ("pyenv-3.11.7", "gevent-cp311-gl3.0.3"),
    greenlet_3_1_1_pyenv_3_12 => ("pyenv-3.12.1", "gevent-cp312-gl3.1.1"),
}

/// `dump` names every thread `threading` knows by its Python name (in every str kind, after a
/// rename, whatever holds the thread's attributes), and a thread `threading` never heard of
/// by the kernel's name.
fn check_thread_names(py: &Interpreter) {
    let (target, view) = common::start_fixture(py, "thread_names.py", &[]);
    let view: Value = serde_json::from_str(&view).unwrap();
    let out = memspy(&["dump", "--pid", &target.pid().to_string(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: BTreeMap<String, (Value, Value)> = dump["processes"][0]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["thread_id"].to_string(),
                (t["name"].clone(), t["kernel_name"].clone()),
            )
        })
        .collect();
    let want = view["threads"].as_object().unwrap();
    assert_eq!(want.len(), 12, "{}", py.label);
    for (ident, name) in want {
        let (got, _) = names
            .get(ident)
            .unwrap_or_else(|| panic!("{}: thread {ident} ({name}) not dumped", py.label));
        assert_eq!(got, name, "{}: thread {ident}", py.label);
    }
    let (got, kernel) = &names[view["unnamed"].as_str().unwrap()];
    assert_eq!(
        got, kernel,
        "{}: a thread threading does not know",
        py.label
    );
    // The recording has the same names, as reports show them.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("names.msp");
    let pid = target.pid().to_string();
    let out = memspy(&[
        "record",
        "--pid",
        &pid,
        "-d",
        "0.3",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = memspy::recording::Recording::open(&file).unwrap();
    let recorded: std::collections::BTreeSet<&str> =
        rec.threads.iter().map(|t| t.label(&rec)).collect();
    for name in want.values() {
        let name = name.as_str().unwrap();
        assert!(
            recorded.contains(name),
            "{}: {name:?} not in the recording's {recorded:?}",
            py.label
        );
    }
}

per_interpreter! {
    check_thread_names;
    thread_names_pyenv_3_8 => "pyenv-3.8.18",
    thread_names_pyenv_3_9 => "pyenv-3.9.18",
    thread_names_pyenv_3_10 => "pyenv-3.10.13",
    thread_names_pyenv_3_11 => "pyenv-3.11.7",
    thread_names_pyenv_3_12 => "pyenv-3.12.1",
    thread_names_pyenv_3_13 => "pyenv-3.13.0",
    thread_names_debian_3_9 => "debian-bullseye-3.9",
    thread_names_debian_3_11 => "debian-bookworm-3.11",
    thread_names_debian_3_13 => "debian-trixie-3.13",
    thread_names_debian_3_14 => "debian-sid-3.14",
    thread_names_debian_3_15 => "debian-sid-3.15",
}
