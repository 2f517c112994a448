//! What `memspy record`, run as root, does with what a hostile target names and with a disk
//! that fills up: it copies no file the target's user could not read, never blocks on or
//! exhausts itself with something that is not a file, keeps another user's recording private,
//! and a full disk ends the recording cleanly while the launched program is still waited for.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixtures_dir, memspy_bin};
use memspy::recording::Recording;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Debian's own python3.11, which an unprivileged user can run (the pyenv and provisioned
/// interpreters live under /root, which nobody may not enter).
fn system_python() -> Option<PathBuf> {
    let py = PathBuf::from("/usr/bin/python3.11");
    if py.exists() {
        return Some(py);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("/usr/bin/python3.11 is missing");
    }
    eprintln!("*** SKIPPED: /usr/bin/python3.11 is missing ***");
    None
}

/// The files a hostile target names, and what each holds.
struct Bait {
    /// Holds the bait files for as long as the test runs.
    _dir: tempfile::TempDir,
    secret_marker: String,
    public_marker: String,
    /// Names the target gives its code, and whether their text may be kept.
    names: Vec<(String, bool)>,
}

fn bait() -> Bait {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let secret_marker = format!("SECRET-{}", std::process::id());
    let public_marker = format!("PUBLIC-{}", std::process::id());
    std::fs::write(p("secret.py"), format!("# {secret_marker}\n")).unwrap();
    std::fs::set_permissions(p("secret.py"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(p("secret.py"), p("link_to_secret.py")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", p("link_to_shadow.py")).unwrap();
    nix::unistd::mkfifo(
        Path::new(&p("fifo.py")),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    std::fs::write(p("public.py"), format!("# {public_marker}\n")).unwrap();
    std::fs::set_permissions(p("public.py"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let names = vec![
        ("/etc/shadow".to_string(), false),
        ("/dev/zero".to_string(), false),
        ("/dev/urandom".to_string(), false),
        ("/proc/1/environ".to_string(), false),
        (p("fifo.py"), false),
        (p("secret.py"), false),
        (p("link_to_secret.py"), false),
        (p("link_to_shadow.py"), false),
        (p("public.py"), true),
    ];
    Bait {
        _dir: dir,
        secret_marker,
        public_marker,
        names,
    }
}

/// The command that runs the fixture as nobody with no capabilities.
fn as_nobody(py: &Path, bait: &Bait) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(py)
        .arg(fixtures_dir().join("hostile_files.py"))
        .args(bait.names.iter().map(|(n, _)| n));
    cmd
}

/// Peak resident memory of the children waited for so far (KiB).
fn children_max_rss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss()
}

fn check_capture(rec_path: &Path, bait: &Bait, what: &str, started: Instant) {
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{what}: took {:?}",
        started.elapsed()
    );
    let rss = children_max_rss_kib();
    assert!(rss < 512 * 1024, "{what}: memspy used {rss} KiB");
    let bytes = std::fs::read(rec_path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(&bait.secret_marker),
        "{what}: the secret is in the recording"
    );
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    for line in shadow.lines().filter(|l| l.len() > 8) {
        assert!(
            !text.contains(line),
            "{what}: /etc/shadow is in the recording"
        );
    }
    let rec = Recording::open(rec_path).unwrap();
    let kept: Vec<&str> = rec.sources.keys().map(|&id| rec.string(id)).collect();
    for (name, allowed) in &bait.names {
        // Every bait function was sampled, so each file was asked for.
        assert!(
            rec.functions.iter().any(|f| rec.string(f.file) == name),
            "{what}: {name} never sampled"
        );
        assert_eq!(
            kept.contains(&name.as_str()),
            *allowed,
            "{what}: source of {name} kept: {kept:?}"
        );
    }
    let public = bait.names.iter().find(|n| n.1).unwrap();
    let id = rec.strings.iter().position(|s| *s == public.0).unwrap() as u32;
    assert!(rec.sources[&id].contains(&bait.public_marker), "{what}");
    let mode = std::fs::metadata(rec_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{what}: another user's recording is {mode:o}");
}

/// A nobody target names /etc/shadow, devices, a FIFO, a root-only file and symlinks to them:
/// attached to and launched, memspy keeps only the file nobody may read, finishes in bounded
/// time and memory, and the recording is private.
#[test]
fn sources_are_read_only_as_the_target_could() {
    if !is_root() {
        eprintln!("*** SKIPPED: needs root ***");
        return;
    }
    let Some(py) = system_python() else {
        return;
    };
    let bait = bait();
    let out_dir = tempfile::tempdir().unwrap();

    // Attached.
    let ready_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(ready_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let ready = ready_dir.path().join("ready");
    let mut target = as_nobody(&py, &bait)
        .env("MEMSPY_READY", &ready)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the target never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rec = out_dir.path().join("attached.msp");
    let started = Instant::now();
    let out = Command::new(memspy_bin())
        .args(["record", "-d", "2", "-o", rec.to_str().unwrap(), "--pid"])
        .arg(target.id().to_string())
        .output()
        .unwrap();
    let _ = target.kill();
    let _ = target.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_capture(&rec, &bait, "attached", started);

    // Launched: memspy (root) starts setpriv, which becomes the nobody target.
    let rec = out_dir.path().join("launched.msp");
    let started = Instant::now();
    let mut cmd = Command::new(memspy_bin());
    cmd.args(["record", "-o", rec.to_str().unwrap(), "--"])
        .arg("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&py)
        .arg(fixtures_dir().join("hostile_files.py"))
        .args(bait.names.iter().map(|(n, _)| n))
        .env("MEMSPY_READY", ready_dir.path().join("ready2"))
        .env("RUN_SECONDS", "2");
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_capture(&rec, &bait, "launched", started);
}

/// Many distinct functions with long names, so a recording grows fast; exits with status 7.
const BLOAT: &str = r#"
import sys, time
src = "\n".join(
    f"def f_{i}_{'x' * 200}():\n    t = time.time()\n    while time.time() - t < 0.002: pass\n"
    for i in range(3000)
)
space = {"time": time}
exec(compile(src, "generated_bloat.py", "exec"), space)
for i in range(3000):
    space[f"f_{i}_{'x' * 200}"]()
sys.exit(7)
"#;

/// A shell script run in a private mount namespace with a 64 KiB tmpfs at $DISK.
fn on_a_small_disk(script: &str) -> (String, String) {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("bloat.py"), BLOAT).unwrap();
    let full =
        format!("set -u\nDISK=$(mktemp -d)\nmount -t tmpfs -o size=64k tmpfs \"$DISK\"\n{script}");
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &full])
        .env("MEMSPY", memspy_bin())
        .env("PY", common::interpreter_from((3, 11)).exe)
        .env("WORK", work.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The disk fills while a launched program runs: the recording stops with the cause named
/// once, the program is still waited for and its status comes back, and the file reads.
#[test]
fn a_full_disk_cuts_the_recording_short() {
    if !is_root() {
        eprintln!("*** SKIPPED: mounting a tmpfs needs root ***");
        return;
    }
    let (stdout, stderr) = on_a_small_disk(
        "\"$MEMSPY\" record -o \"$DISK/run.msp\" -- \"$PY\" \"$WORK/bloat.py\"\n\
         echo \"status=$?\"\n\
         \"$MEMSPY\" info --json \"$DISK/run.msp\"\n",
    );
    assert!(stdout.contains("status=7"), "{stdout}\n{stderr}");
    assert_eq!(
        stderr.matches("No space left on device").count(),
        1,
        "the cause, once: {stderr}"
    );
    assert!(stderr.contains("cut short"), "{stderr}");
    assert!(!stderr.contains("earlier write error"), "{stderr}");
    let json = &stdout[stdout.find('{').expect("info output")..];
    let info: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(info["samples"].as_u64().unwrap() > 10, "{info}");
    assert!(!info["complete"].as_bool().unwrap(), "{info}");
}

/// The disk is full before the recording starts: nothing is started and no empty file is left.
#[test]
fn an_already_full_disk_starts_nothing() {
    if !is_root() {
        eprintln!("*** SKIPPED: mounting a tmpfs needs root ***");
        return;
    }
    let (stdout, stderr) = on_a_small_disk(
        "dd if=/dev/zero of=\"$DISK/fill\" bs=4k 2>/dev/null\n\
         \"$MEMSPY\" record -o \"$DISK/run.msp\" -- \"$PY\" -c 'print(\"PROGRAM RAN\")'\n\
         echo \"status=$?\"\n\
         ls \"$DISK\"\n",
    );
    assert!(stdout.contains("status=2"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("PROGRAM RAN"), "{stdout}");
    assert!(!stdout.contains("run.msp"), "a file was left: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("No space left on device") && stderr.contains("not started"),
        "{stderr}"
    );
}
