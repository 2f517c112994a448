//! `memspy top` against a real service (fixtures/live.py: one thread burns CPU in `burn`,
//! another grows memory in `grow`): the full-screen table in a tmux pane shows both within
//! 3 s, its keys sort, switch the time metric and quit; `--once` prints a stable plain table.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixtures_dir, interpreter_from, memspy_bin};

/// The service, killed when dropped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn service() -> (Service, i32) {
    let py = interpreter_from((3, 12));
    let mut child = Command::new(&py.exe)
        .arg(fixtures_dir().join("live.py"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let pid = child.id() as i32;
    (Service(child), pid)
}

fn tmux_bin() -> PathBuf {
    common::provisioned("MEMSPY_TMUX", "provision-tmux.sh")
}

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux {
    bin: PathBuf,
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            bin: tmux_bin(),
            socket: format!("memspy-top-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "top"]).status.success()
    }

    /// Wait until the screen satisfies `ok`; the screen then.
    fn wait_for(&self, what: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not shown within {within:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The first table row on a screen, after the column header.
fn first_row(screen: &str) -> String {
    screen
        .lines()
        .skip_while(|l| !l.contains("FUNCTION (FILE)"))
        .nth(1)
        .unwrap_or("")
        .to_string()
}

#[test]
fn top_in_tmux_shows_the_hot_and_the_growing_function() {
    let (_service, pid) = service();
    let tmux = Tmux::new();
    let tmp = tempfile::tempdir().unwrap();
    let command = format!(
        "env TMPDIR={} {} top --pid {pid}",
        tmp.path().display(),
        memspy_bin().display()
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "40",
        &command,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both functions within 3 s of starting.
    let screen = tmux.wait_for("burn and grow", Duration::from_secs(3), |s| {
        s.contains("burn") && s.contains("grow (") && s.contains("FUNCTION (FILE)")
    });
    assert!(
        screen.contains("shares of CPU time") && screen.contains("sorted by own %"),
        "{screen}"
    );
    assert!(
        screen.contains(&format!("RSS: {pid} the program")),
        "{screen}"
    );
    // The hottest function first (sorted by own share of CPU time).
    assert!(first_row(&screen).contains("burn"), "{screen}");
    // Key 4: sorted by growth per second: grow first.
    tmux.run(&["send-keys", "-t", "top", "4"]);
    let screen = tmux.wait_for("sorted by growth", Duration::from_secs(3), |s| {
        s.contains("sorted by growth/s") && first_row(s).contains("grow (")
    });
    assert!(first_row(&screen).contains("MiB/s"), "{screen}");
    // m: shares of wall time.
    tmux.run(&["send-keys", "-t", "top", "m"]);
    tmux.wait_for("wall time", Duration::from_secs(3), |s| {
        s.contains("shares of wall time")
    });
    // p: one process (here the only one); space: paused.
    tmux.run(&["send-keys", "-t", "top", "p"]);
    tmux.wait_for("the process picked", Duration::from_secs(3), |s| {
        s.contains(&format!("process {pid}"))
    });
    tmux.run(&["send-keys", "-t", "top", "Space"]);
    tmux.wait_for("paused", Duration::from_secs(3), |s| s.contains("(paused)"));
    // q: memspy ends, its folder with it.
    tmux.run(&["send-keys", "-t", "top", "q"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.alive() {
        assert!(
            Instant::now() < deadline,
            "memspy top did not quit:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn top_once_prints_a_stable_table() {
    let (_service, pid) = service();
    let run = |extra: &[&str]| -> String {
        let out = Command::new(memspy_bin())
            .args(["top", "--pid", &pid.to_string(), "--duration", "2"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Not a terminal: one table, as with --once.
    let text = run(&[]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("memspy top: 1 process, last ")
            && lines[0].ends_with("shares of CPU time; sorted by own %; all processes"),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!("RSS: {pid} the program ")),
        "{text}"
    );
    assert_eq!(
        lines[2],
        "   OWN%  TOTAL%    CPU     GROWTH/s    RETAINED  FUNCTION (FILE)"
    );
    // Every row: five numbers in their columns, then the function and its file.
    for row in &lines[3..] {
        let (numbers, function) = row.split_at(47);
        let cells: Vec<&str> = numbers.split_whitespace().collect();
        assert_eq!(cells.len(), 7, "{row:?}"); // growth and retained carry their unit
        assert!(
            cells[0].parse::<f64>().is_ok() && cells[2].parse::<f64>().is_ok(),
            "{row:?}"
        );
        assert!(
            function.starts_with("  ") && function.trim_end().ends_with(')'),
            "{row:?}"
        );
    }
    assert!(lines[3].contains("burn"), "{text}");
    let by_growth = run(&["--once", "--sort", "growth"]);
    let first = by_growth.lines().nth(3).unwrap();
    assert!(
        first.contains("grow (") && first.contains("MiB/s"),
        "{by_growth}"
    );
    // A program top starts ends when top does.
    let py = interpreter_from((3, 12));
    let t0 = Instant::now();
    let out = Command::new(memspy_bin())
        .args(["top", "--once", "--duration", "1", "--"])
        .arg(&py.exe)
        .arg(fixtures_dir().join("live.py"))
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("burn"));
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    // Bad input: no target, one line, exit 2.
    let out = Command::new(memspy_bin()).args(["top"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
