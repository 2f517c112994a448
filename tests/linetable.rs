//! `LineTable` against the interpreters themselves: fixtures/linetable_dump.py compiles a slice
//! of each provisioned interpreter's standard library (plus synthetic edge cases), dumps every
//! code object's raw line table with CPython's own line for each instruction offset, and this
//! test decodes the tables and compares every answer.
//!
//! Oracles: `code.co_lines()` on 3.10+, `PyCode_Addr2Line` through ctypes everywhere ctypes
//! imports (every offset on 3.8/3.9, a sample of code objects on 3.10+), `dis.findlinestarts`
//! on 3.8/3.9 without ctypes. Run with `--nocapture` to see the per-interpreter counts.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use common::Interpreter;
use memspy::python::linetable::{LineTable, LineTableFormat};
use serde::Deserialize;

/// One line of the fixture's output.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Record {
    Header {
        version: Vec<u32>,
        format: String,
        oracles: Vec<String>,
        notes: Vec<String>,
    },
    Code(CodeRecord),
    Done {
        files: u64,
        skipped: Vec<String>,
        code_objects: u64,
    },
}

/// A code object with CPython's answers; ranges are `(start, end, line)` in bytes, -1 = None.
#[derive(Deserialize)]
struct CodeRecord {
    file: String,
    qual: String,
    first: i32,
    code_len: u32,
    /// Hex of co_lnotab (3.8/3.9) or co_linetable (3.10+).
    table: String,
    /// co_lines() (3.10+).
    lines: Option<Vec<(i64, i64, i32)>>,
    /// PyCode_Addr2Line for offsets 0, 2, .. < code_len, run-length encoded.
    addr2line: Option<Vec<(i64, i64, i32)>>,
    /// PyCode_Addr2Line at single offsets outside the bytecode.
    probes: Option<Vec<(i64, i32)>>,
    /// dis.findlinestarts (3.8/3.9 without ctypes).
    starts: Option<Vec<(i64, i32)>>,
}

/// Mismatches kept per interpreter for the report.
const SHOWN: usize = 15;

#[derive(Default)]
struct Outcome {
    summary: String,
    code_objects: u64,
    lookups: u64,
    mismatches: u64,
    shown: Vec<String>,
    /// Fixture failures and missing data, as opposed to wrong answers.
    errors: Vec<String>,
}

fn format_for(py: &Interpreter) -> LineTableFormat {
    match py.minor() {
        (3, 8) | (3, 9) => LineTableFormat::Lnotab,
        (3, 10) => LineTableFormat::Linetable310,
        _ => LineTableFormat::Locations,
    }
}

fn unhex(s: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("bad hex digit {c:?}"),
    };
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| digit(p[0]) << 4 | digit(p[1]))
        .collect()
}

impl Outcome {
    fn check(&mut self, rec: &CodeRecord, lt: &LineTable, oracle: &str, offset: i64, want: i32) {
        self.lookups += 1;
        let got = lt.line_at(offset);
        if got != want {
            self.mismatches += 1;
            if self.shown.len() < SHOWN {
                self.shown.push(format!(
                    "{}:{} ({oracle}) offset {offset}: CPython {want}, LineTable {got} \
                     [firstlineno {}, code_len {}, table {}]",
                    rec.file, rec.qual, rec.first, rec.code_len, rec.table
                ));
            }
        }
    }

    /// Every offset `0, 2, ..` below `upto` against sorted `(start, end, line)` ranges, -1 where
    /// no range covers it.
    fn check_ranges(
        &mut self,
        rec: &CodeRecord,
        lt: &LineTable,
        oracle: &str,
        ranges: &[(i64, i64, i32)],
        upto: i64,
    ) {
        let mut r = ranges.iter().peekable();
        for offset in (0..upto).step_by(2) {
            while r.peek().is_some_and(|&&(_, end, _)| end <= offset) {
                r.next();
            }
            let want = match r.peek() {
                Some(&&(start, _, line)) if start <= offset => line,
                _ => -1,
            };
            self.check(rec, lt, oracle, offset, want);
        }
    }

    fn code(&mut self, rec: &CodeRecord, format: LineTableFormat) {
        self.code_objects += 1;
        let lt = LineTable::decode(format, &unhex(&rec.table), rec.first, rec.code_len);
        let code_len = i64::from(rec.code_len);
        let mut has_oracle = false;
        if let Some(lines) = &rec.lines {
            has_oracle = true;
            // co_lines() walks the whole table, so past its last range CPython answers -1.
            let end = lines.iter().map(|r| r.1).max().unwrap_or(0).max(code_len);
            self.check_ranges(rec, &lt, "co_lines", lines, end + 4);
            for far in [i64::from(u32::MAX), i64::MAX] {
                self.check(rec, &lt, "co_lines, past the table", far, -1);
            }
        }
        if let Some(ranges) = &rec.addr2line {
            has_oracle = true;
            self.check_ranges(rec, &lt, "PyCode_Addr2Line", ranges, code_len);
        }
        for &(offset, want) in rec.probes.iter().flatten() {
            self.check(rec, &lt, "PyCode_Addr2Line probe", offset, want);
        }
        if let Some(starts) = &rec.starts {
            has_oracle = true;
            let mut next = 0;
            let mut want = -1;
            for offset in (0..code_len).step_by(2) {
                while next < starts.len() && starts[next].0 <= offset {
                    want = starts[next].1;
                    next += 1;
                }
                self.check(rec, &lt, "dis.findlinestarts", offset, want);
            }
        }
        if !has_oracle && self.errors.len() < SHOWN {
            self.errors
                .push(format!("{}:{}: no oracle in the dump", rec.file, rec.qual));
        }
    }
}

fn run(py: &Interpreter) -> Outcome {
    let started = Instant::now();
    let mut out = Outcome::default();
    let format = format_for(py);
    let mut child = Command::new(&py.exe)
        .arg("-I")
        .arg(common::fixtures_dir().join("linetable_dump.py"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", py.exe.display()));
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (mut header, mut done) = (None, None);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.expect("read fixture output");
        match serde_json::from_str::<Record>(&line) {
            Ok(Record::Code(rec)) => out.code(&rec, format),
            Ok(Record::Header {
                version,
                format: name,
                oracles,
                notes,
            }) => {
                let ours = match name.as_str() {
                    "lnotab" => Some(LineTableFormat::Lnotab),
                    "linetable310" => Some(LineTableFormat::Linetable310),
                    "locations" => Some(LineTableFormat::Locations),
                    _ => None,
                };
                if ours != Some(format) {
                    out.errors
                        .push(format!("fixture says format {name}, we expect {format:?}"));
                }
                header = Some(format!(
                    "{:?} {name}, oracles {}{}",
                    version,
                    oracles.join(" + "),
                    notes
                        .iter()
                        .map(|n| format!("\n      note: {n}"))
                        .collect::<String>()
                ));
            }
            Ok(Record::Done {
                files,
                skipped,
                code_objects,
            }) => {
                if code_objects != out.code_objects {
                    out.errors.push(format!(
                        "fixture reports {code_objects} code objects, we read {}",
                        out.code_objects
                    ));
                }
                done = Some((files, skipped));
            }
            Err(e) => out
                .errors
                .push(format!("unparsable line ({e}): {line:.200}")),
        }
    }
    let status = child.wait().expect("wait for fixture");
    let stderr = stderr.join().unwrap();
    if !status.success() {
        out.errors
            .push(format!("fixture failed ({status}):\n{stderr}"));
    }
    let Some((files, skipped)) = done else {
        out.errors
            .push(format!("fixture output incomplete\n{stderr}"));
        return out;
    };
    // A vacuous pass (an empty slice of the library) would prove nothing.
    if out.code_objects < 1000 || out.lookups < 100_000 {
        out.errors.push(format!(
            "only {} code objects / {} lookups",
            out.code_objects, out.lookups
        ));
    }
    out.summary = format!(
        "{:<22} {}\n      {files} files ({} did not compile), {} code objects, {} lookups, \
         {} mismatches, {:.1} s",
        py.label,
        header.unwrap_or_default(),
        skipped.len(),
        out.code_objects,
        out.lookups,
        out.mismatches,
        started.elapsed().as_secs_f64()
    );
    out
}

#[test]
fn line_tables_agree_with_every_interpreter() {
    let started = Instant::now();
    let pythons = common::interpreters();
    // Each fixture run is one busy Python process plus this checking thread; one worker per
    // core keeps them from fighting.
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(pythons.len().max(1));
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(py) = pythons.get(i) else { break };
                let outcome = run(py);
                results.lock().unwrap().push((i, outcome));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let mut failed = Vec::new();
    let mut total = 0;
    for (i, o) in &results {
        println!("{}", o.summary);
        total += o.lookups;
        if o.mismatches > 0 || !o.errors.is_empty() {
            failed.push(format!(
                "{}: {} mismatches of {} lookups{}{}",
                pythons[*i].label,
                o.mismatches,
                o.lookups,
                o.errors
                    .iter()
                    .map(|e| format!("\n  error: {e}"))
                    .collect::<String>(),
                o.shown
                    .iter()
                    .map(|m| format!("\n  {m}"))
                    .collect::<String>()
            ));
        }
    }
    println!(
        "{} interpreters, {total} lookups, {:.1} s",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}
