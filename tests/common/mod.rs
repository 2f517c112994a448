//! Shared test support: the provisioned interpreters, the memspy binary, and helpers to start
//! fixture processes and wait for them to be ready.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The number of interpreters `scripts/provision-pythons.sh` provisions on a complete machine.
pub const FULL_SET: usize = 11;

/// One interpreter from the provisioning manifest.
#[derive(Clone, Debug)]
pub struct Interpreter {
    /// e.g. `pyenv-3.11.7` or `debian-sid-3.14`.
    pub label: String,
    /// Exact version, e.g. `3.11.7`.
    pub version: String,
    pub exe: PathBuf,
    /// `shared` (libpython3.X.so) or `static` (libpython linked into the executable).
    pub linkage: String,
}

impl Interpreter {
    /// (major, minor) of the version.
    pub fn minor(&self) -> (u32, u32) {
        let mut it = self.version.split('.').map(|p| p.parse::<u32>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }
}

pub fn cache_dir() -> PathBuf {
    match std::env::var_os("MEMSPY_PYTHONS") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/memspy/pythons")
        }
    }
}

/// All provisioned interpreters. Says loudly when some are missing; under CI=true a missing
/// interpreter fails the test instead of skipping it.
pub fn interpreters() -> Vec<Interpreter> {
    let manifest = cache_dir().join("manifest.tsv");
    let text = std::fs::read_to_string(&manifest).unwrap_or_default();
    let found: Vec<Interpreter> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (f.len() == 4).then(|| Interpreter {
                label: f[0].into(),
                version: f[1].into(),
                exe: f[2].into(),
                linkage: f[3].into(),
            })
        })
        .filter(|i| i.exe.exists())
        .collect();
    if found.len() < FULL_SET {
        let msg = format!(
            "only {} of {} test interpreters are provisioned ({}); run scripts/provision-pythons.sh",
            found.len(),
            FULL_SET,
            manifest.display()
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("\n*** SKIPPING INTERPRETERS: {msg} ***\n");
    }
    found
}

/// The first provisioned interpreter at least `min` (tests that need one, any one).
pub fn interpreter_from(min: (u32, u32)) -> Interpreter {
    interpreters_from(min)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no Python {}.{} or later is provisioned", min.0, min.1))
}

/// `memspy record -o DIR/NAME -- PYTHON ARGS...`; asserts it succeeded, returns the recording.
pub fn record_python(py: &Interpreter, dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new(memspy_bin())
        .arg("record")
        .arg("-o")
        .arg(&path)
        .arg("--")
        .arg(&py.exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run memspy record");
    assert!(
        out.status.success(),
        "{}: memspy record {args:?}: {}",
        py.label,
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// Record `workers.py 2` (a supervisor and its short- and long-lived workers, each growing
/// its own amount) with `--subprocesses` into `dir/name`.
pub fn record_workers(py: &Interpreter, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new(memspy_bin())
        .args(["record", "--subprocesses", "-o"])
        .arg(&path)
        .arg("--")
        .arg(&py.exe)
        .arg(fixtures_dir().join("workers.py"))
        .arg("2")
        .stdin(Stdio::null())
        .output()
        .expect("run memspy record");
    assert!(
        out.status.success(),
        "{}: memspy record workers.py: {}",
        py.label,
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// Interpreters whose (major, minor) is at least `min`.
pub fn interpreters_from(min: (u32, u32)) -> Vec<Interpreter> {
    interpreters()
        .into_iter()
        .filter(|i| i.minor() >= min)
        .collect()
}

pub fn memspy_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memspy"))
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Run memspy with arguments, capturing everything.
pub fn memspy(args: &[&str]) -> Output {
    Command::new(memspy_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run memspy")
}

/// A fixture process that is killed when dropped.
pub struct Target {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Target {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `python fixtures/<script> <args...>` with `MEMSPY_READY` pointing at a file the fixture
/// writes when it has reached its parked state, and wait (up to 60 s) until that file exists.
/// Returns the target and the content of the ready file.
pub fn start_fixture(py: &Interpreter, script: &str, args: &[&str]) -> (Target, String) {
    let mut cmd = Command::new(&py.exe);
    cmd.arg(fixtures_dir().join(script)).args(args);
    start_target(cmd, &format!("{} {script}", py.label))
}

/// Start a command with `MEMSPY_READY` set (see [`start_fixture`]) and wait until it is ready.
pub fn start_target(mut cmd: Command, what: &str) -> (Target, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready.json");
    let child = cmd
        .env("MEMSPY_READY", &ready)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let mut target = Target { child, dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            if text.ends_with('\n') {
                return (target, text);
            }
        }
        if let Ok(Some(status)) = target.child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(Instant::now() < deadline, "{what}: not ready after 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The line number (1-based) of the line that ends with `# @name` in a fixture file: tests
/// name source lines by marker so that editing a fixture does not break them.
pub fn marker(file: &str, name: &str) -> i64 {
    let text = std::fs::read_to_string(fixtures_dir().join(file)).unwrap();
    let tag = format!("# @{name}");
    let line = text
        .lines()
        .position(|l| l.trim_end().ends_with(&tag))
        .unwrap_or_else(|| panic!("no {tag} in fixtures/{file}"));
    line as i64 + 1
}

/// The provisioned interpreter with this label; says loudly when it is missing.
pub fn interpreter(label: &str) -> Option<Interpreter> {
    let found = interpreters().into_iter().find(|i| i.label == label);
    if found.is_none() {
        eprintln!("*** SKIPPED: interpreter {label} is not provisioned ***");
    }
    found
}

/// One test per interpreter label, each running `$check(&interpreter)`:
/// `per_interpreter!(check_dump; dump_pyenv_3_8 => "pyenv-3.8.18", ...)`.
#[macro_export]
macro_rules! per_interpreter {
    ($check:ident; $($name:ident => $label:literal,)*) => {$(
        #[test]
        fn $name() {
            if let Some(py) = common::interpreter($label) {
                $check(&py);
            }
        }
    )*};
}

/// A venv (or `sites/NAME`, a folder of unpacked wheels) of scripts/provision-venvs.sh; None (loudly, or failing under CI) when missing.
pub fn venv(name: &str) -> Option<PathBuf> {
    let base = std::env::var_os("MEMSPY_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/memspy/venvs")
        });
    let dir = base.join(name);
    if dir.join(".memspy-ready").exists() {
        return Some(dir);
    }
    let msg = format!(
        "the {name} venv is not provisioned in {} (run scripts/provision-venvs.sh)",
        base.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("*** SKIPPED: {msg} ***");
    None
}

/// GET `path` from 127.0.0.1:`port`; the response's body.
pub fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(body.trim().to_string())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// memspy recording a service, in a process group of its own: dropped (a test that fails),
/// the whole group is killed.
pub struct Service(pub std::process::Child);

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let group = nix::unistd::Pid::from_raw(-(self.0.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

/// `memspy record --subprocesses -o rec_path -- gunicorn -w workers -k class app:app` of
/// fixtures/web, on a free port, in a process group of its own; returned once every worker has
/// answered (each answers with its pid) and memspy had time to adopt them. None when the web
/// venv is not provisioned (a skip outside CI).
pub fn record_gunicorn(class: &str, workers: usize, rec_path: &Path) -> Option<(Service, u16)> {
    let venv = venv("web")?;
    let port = free_port();
    let mut memspy = Command::new(memspy_bin());
    // Its own process group, so that a failing test stops the service with it.
    std::os::unix::process::CommandExt::process_group(&mut memspy, 0);
    let child = memspy
        .args(["record", "--subprocesses", "-o"])
        .arg(rec_path)
        .arg("--")
        .arg(venv.join("bin/gunicorn"))
        .args(["-w", &workers.to_string(), "-k", class])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .arg("--chdir")
        .arg(fixtures_dir().join("web"))
        .args(["--graceful-timeout", "5", "app:app"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let service = Service(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < workers {
        assert!(
            Instant::now() < deadline,
            "{class}: the service never came up"
        );
        match get(port, "/work") {
            Ok(pid) => {
                seen.insert(pid);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    // Let memspy adopt the workers (and find their greenlets) before the measured requests.
    std::thread::sleep(Duration::from_millis(700));
    Some((service, port))
}

/// Stop a service started by [`record_gunicorn`] (SIGTERM to memspy, passed on to gunicorn)
/// and wait for memspy; its stderr. A copy of the recording goes to `$MEMSPY_TEST_KEEP/name`
/// when that is set, for a look at a failing run.
pub fn stop_gunicorn(mut service: Service, rec_path: &Path, name: &str) -> String {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(service.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut err = String::new();
    if let Some(mut stderr) = service.0.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    let status = service.0.wait().unwrap();
    assert!(
        status.code().is_some(),
        "{name}: memspy did not exit cleanly: {status}: {err}"
    );
    if let Some(keep) = std::env::var_os("MEMSPY_TEST_KEEP") {
        let _ = std::fs::copy(rec_path, Path::new(&keep).join(name));
    }
    err
}

/// CPU time (user + system, s) used so far by this process's children that have been waited
/// for: benchmarks take the difference around a child's run.
pub fn cpu_of_children() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// The total (self and callees) of `metric` for the functions named `qualname`, attributed
/// under `filter` (µs or bytes).
pub fn function_total(
    rec: &memspy::recording::Recording,
    filter: &memspy::analysis::Filter,
    metric: memspy::analysis::Metric,
    qualname: &str,
) -> f64 {
    let attr = memspy::analysis::attribute(rec, filter);
    memspy::analysis::functions::by_function(rec, &attr, metric)
        .iter()
        .filter(|f| f.qualname == qualname)
        .map(|f| f.total_value)
        .sum()
}

/// A tool the project's scripts provision (a browser, Go, tmux): `$env` when set (as
/// scripts/test.sh sets it), else the last line `scripts/<script>` prints (quick once the
/// tool is cached).
pub fn provisioned(env: &str, script: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let out = Command::new("bash")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "scripts/{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap_or_else(|| panic!("scripts/{script} printed no path"))
        .trim()
        .into()
}

/// A metric's total as `memspy lines --format json` gives it: the sum of every line's own
/// value, the pseudo-lines included.
pub fn lines_total(rec: &Path, metric: &str, extra: &[&str]) -> f64 {
    let out = Command::new(memspy_bin())
        .args(["lines", "-i"])
        .arg(rec)
        .args(["-m", metric, "--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["self_value"].as_f64().unwrap())
        .sum()
}

/// The sample types `go tool pprof -raw` lists, and each one's sum over every sample, as the
/// reference reader decoded them.
pub fn pprof_raw_totals(raw: &str) -> (Vec<String>, Vec<i64>) {
    let mut lines = raw
        .lines()
        .skip_while(|l| !l.starts_with("Samples:"))
        .skip(1);
    let header = lines.next().expect("no sample types");
    let types: Vec<String> = header
        .split_whitespace()
        .map(|t| t.split('/').next().unwrap().to_string())
        .collect();
    let mut sums = vec![0i64; types.len()];
    for line in lines {
        if line.starts_with("Locations") {
            break;
        }
        // "  v1 v2 ...: loc loc ..." (labels are on the lines after).
        let Some((values, _)) = line.split_once(':') else {
            continue;
        };
        let values: Vec<i64> = values
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if values.len() == types.len() {
            for (s, v) in sums.iter_mut().zip(values) {
                *s += v;
            }
        }
    }
    (types, sums)
}

/// Record `fixtures/leak.py MIB` (its cache keeps MIB MiB, it burns CPU in `work` and churns
/// 20 MiB) into `dir/name`.
pub fn record_leak(py: &Interpreter, dir: &Path, name: &str, mib: u32) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new(memspy_bin())
        .args(["record", "-o"])
        .arg(&path)
        .arg("--")
        .arg(&py.exe)
        .arg(fixtures_dir().join("leak.py"))
        .arg(mib.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run memspy record");
    assert!(
        out.status.success(),
        "{}: memspy record leak.py: {}",
        py.label,
        String::from_utf8_lossy(&out.stderr)
    );
    path
}
