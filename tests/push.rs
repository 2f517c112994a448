//! `record --push`: a local HTTP receiver on 127.0.0.1 stands in for Pyroscope, stores what it
//! gets, and the windows are checked with the reference reader (`go tool pprof`): in order,
//! whole seconds end to end, labelled, adding up to the recording. A receiver that answers 500
//! or never answers costs no samples and is reported.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fixtures_dir, interpreter_from, memspy_bin};
use serde_json::Value;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Fail,
    Hang,
}

/// One request the receiver got: its path and query, and the pprof bytes of its form.
#[derive(Clone, Debug)]
struct Received {
    query: Vec<(String, String)>,
    profile: Vec<u8>,
}

impl Received {
    fn get(&self, key: &str) -> &str {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A receiver on a free port; what it got so far.
fn receiver(mode: Mode) -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let store = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let store = store.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut length = 0usize;
                    let mut boundary = String::new();
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => length = v.trim().parse().unwrap(),
                            "content-type" => {
                                boundary = v.split("boundary=").nth(1).unwrap_or("").to_string()
                            }
                            _ => {}
                        }
                    }
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).unwrap();
                    let query = target
                        .split_once('?')
                        .map_or("", |q| q.1)
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), percent_decode(v)))
                        .collect();
                    // The form's `profile` part: after its headers, up to the closing boundary.
                    let start = find(&body, b"\r\n\r\n").unwrap() + 4;
                    let end = find(&body, format!("\r\n--{boundary}--").as_bytes()).unwrap();
                    store.lock().unwrap().push(Received {
                        query,
                        profile: body[start..end].to_vec(),
                    });
                    match mode {
                        Mode::Ok => {
                            let _ =
                                stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                        }
                        Mode::Fail => {
                            let _ = stream.write_all(
                                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom",
                            );
                        }
                        Mode::Hang => std::thread::sleep(Duration::from_secs(3600)),
                    }
                }
            });
        }
    });
    (port, got)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn go() -> PathBuf {
    common::provisioned("MEMSPY_GO", "provision-go.sh")
}

/// Each sample type's total in a profile, as `go tool pprof -raw` decodes it.
fn totals(profile: &[u8], dir: &Path, n: usize) -> Vec<i64> {
    let path = dir.join(format!("window-{n}.pb.gz"));
    std::fs::write(&path, profile).unwrap();
    let out = Command::new(go())
        .args(["tool", "pprof", "-raw"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = String::from_utf8(out.stdout).unwrap();
    assert!(raw.contains("pid:[") && raw.contains("process:["), "{raw}");
    let (types, sums) = common::pprof_raw_totals(&raw);
    assert_eq!(types.len(), 6, "{raw}");
    sums
}

/// Record leak.py (its cache fills 1 MiB each 20 ms) with --push to `port`.
fn record(port: u16, dir: &Path, mib: &str) -> (std::process::Output, Duration, PathBuf) {
    let py = interpreter_from((3, 12));
    let rec = dir.join("leak.msp");
    let t0 = Instant::now();
    let out = Command::new(memspy_bin())
        .args(["record", "-o", rec.to_str().unwrap(), "--push"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args([
            "--push-every",
            "1s",
            "--label",
            "service=leaky",
            "--label",
            "env=test,team=mem",
        ])
        .arg("--")
        .arg(&py.exe)
        .arg(fixtures_dir().join("leak.py"))
        .arg(mib)
        .output()
        .unwrap();
    (out, t0.elapsed(), rec)
}

#[test]
fn pushed_windows_add_up_to_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let (port, got) = receiver(Mode::Ok);
    let (out, _, rec) = record(port, dir.path(), "80");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let got = got.lock().unwrap().clone();
    assert!(got.len() >= 2, "{} windows; {stderr}", got.len());
    assert!(
        stderr.contains(&format!("pushed {} window(s)", got.len())),
        "{stderr}"
    );
    // In order, end to end, whole seconds.
    for pair in got.windows(2) {
        assert_eq!(pair[0].get("until"), pair[1].get("from"), "{got:?}");
    }
    let mut sums = [0i64; 6];
    for (n, w) in got.iter().enumerate() {
        let (from, until): (u64, u64) = (
            w.get("from").parse().unwrap(),
            w.get("until").parse().unwrap(),
        );
        assert!(until > from && until - from <= 1, "{from}..{until}");
        assert_eq!(w.get("format"), "pprof");
        assert_eq!(w.get("spyName"), "memspy");
        assert_eq!(w.get("sampleRate"), "100");
        let name = w.get("name");
        assert!(
            name.starts_with("leaky{")
                && name.contains("env=test")
                && name.contains("team=mem")
                && name.contains("host="),
            "{name}"
        );
        for (s, x) in sums.iter_mut().zip(totals(&w.profile, dir.path(), n)) {
            *s += x;
        }
    }
    // CPU adds up exactly; wall time to within a few samples (each window's first sample
    // counts one interval); growth loses at most the change across each boundary (a window
    // starts at its first reading, as `--from` does).
    let cpu = common::lines_total(&rec, "cpu", &[]) * 1000.0;
    assert!(
        (sums[1] as f64 - cpu).abs() <= 1e6,
        "cpu {} vs {cpu}",
        sums[1]
    );
    let wall = common::lines_total(&rec, "wall", &[]) * 1000.0;
    assert!(
        (sums[0] as f64 - wall).abs() <= 0.05 * wall,
        "wall {} vs {wall}",
        sums[0]
    );
    let growth = common::lines_total(&rec, "growth", &[]);
    let boundaries = got.len() as f64;
    assert!(
        sums[2] as f64 <= growth + 1.0 && sums[2] as f64 >= growth - boundaries * 2.5 * 1048576.0,
        "growth {} vs {growth}",
        sums[2]
    );
}

#[test]
fn a_failing_backend_costs_no_samples() {
    for mode in [Mode::Fail, Mode::Hang] {
        let dir = tempfile::tempdir().unwrap();
        let (port, got) = receiver(mode);
        let (out, took, rec) = record(port, dir.path(), "40");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            !got.lock().unwrap().is_empty(),
            "the backend was never called"
        );
        let failures = stderr.lines().filter(|l| l.contains("push to")).count();
        match mode {
            Mode::Fail => {
                assert_eq!(failures, 1, "{stderr}");
                assert!(
                    stderr.contains("pushed 0 window(s),") && stderr.contains("failed"),
                    "{stderr}"
                );
            }
            _ => {
                // The end waits for a hanging backend a bounded time.
                assert!(took < Duration::from_secs(30), "{took:?}");
                assert!(
                    stderr.contains("pushed 0 window(s)") && stderr.contains("dropped"),
                    "{stderr}"
                );
            }
        }
        // The recording is whole: every tick sampled, nothing failed.
        let info = Command::new(memspy_bin())
            .args(["info", "--json", rec.to_str().unwrap()])
            .output()
            .unwrap();
        let info: Value = serde_json::from_slice(&info.stdout).unwrap();
        let (ticks, missed) = (
            info["ticks"].as_u64().unwrap(),
            info["missed_ticks"].as_u64().unwrap(),
        );
        assert!(info["complete"].as_bool().unwrap());
        assert!(missed * 50 <= ticks, "{missed} of {ticks} ticks missed");
        assert!(info["samples"].as_u64().unwrap() >= 100);
    }
}

/// `-o none`: windows are pushed and no file is left behind.
#[test]
fn push_without_a_recording_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (port, got) = receiver(Mode::Ok);
    let py = interpreter_from((3, 12));
    let out = Command::new(memspy_bin())
        .args(["record", "-o", "none", "--push"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--push-every", "1s", "--"])
        .arg(&py.exe)
        .arg(fixtures_dir().join("leak.py"))
        .arg("40")
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("no file kept"), "{stderr}");
    assert!(!got.lock().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "files left in {}",
        tmp.display()
    );
    // -o none without --push keeps nothing at all: refused.
    let out = Command::new(memspy_bin())
        .args(["record", "-o", "none", "--"])
        .arg(&py.exe)
        .args(["-c", "pass"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A --push that is not a URL is refused before anything starts.
#[test]
fn a_push_that_is_not_a_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let rec = dir.path().join("r.msp");
    let py = interpreter_from((3, 12));
    let out = Command::new(memspy_bin())
        .args([
            "record",
            "-o",
            rec.to_str().unwrap(),
            "--push",
            "pyroscope:4040",
            "--",
        ])
        .arg(&py.exe)
        .arg("-c")
        .arg(format!("open({:?}, 'w')", started.to_str().unwrap()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("http://") && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert!(!started.exists() && !rec.exists());
}
