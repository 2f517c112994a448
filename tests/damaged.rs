//! Damaged and forged recordings through every report: thousands of seeded mutants of real
//! recordings (real Python runs recorded by the real memspy binary) must never make a report
//! panic, hang (more than 10 s) or use more than 1 GiB.
//!
//! Mutants are bit flips, overwritten bytes, truncations, duplicated, swapped and removed
//! records and huge record lengths (caught by checksums and framing), and structure-aware lies
//! with the checksum recomputed, which only the reader's validation can catch: a varint of any
//! record replaced by a huge or off-by-one value (parent indices, thread slots, stack ids, line
//! numbers 2^31-1, counts, times), descriptions with impossible rates, strings of 10,000
//! characters or holding control bytes. The generator is deterministic by seed; a mutant that
//! fails is saved next to the test's temporary files and named in the failure.
//!
//! Most mutants run in this process, through the `report` functions the commands run
//! (`catch_unwind` catches panics; a counting allocator measures each run's memory and stops
//! one that passes 1 GiB; a watchdog fails a run that takes over 10 s). A few hundred run
//! through the binary itself, under `RLIMIT_AS` = 1 GiB and a 10 s timeout: the exit status
//! must never be 101 (a panic) and stderr must be a few short, visible lines.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fixtures_dir, interpreter_from, memspy_bin, Interpreter};
use memspy::analysis::check::{Budget, Measure, Rule};
use memspy::analysis::Metric;
use memspy::commands::check::{self, CheckOptions};
use memspy::commands::diff::{self, DiffOptions};
use memspy::commands::export::{self, ExportFormat, ExportOptions};
use memspy::commands::flame::{self, FlameOptions};
use memspy::commands::info;
use memspy::commands::lines::{self, Format, LinesOptions};
use memspy::commands::plot::{self, PlotOptions};
use memspy::commands::report::{self, ReportOptions};
use memspy::output::units::Amount;
use memspy::recording::format::*;
use memspy::recording::Recording;

// --- Memory: a counting allocator -------------------------------------------------------------

/// Most memory one report may use.
const MEMORY_LIMIT: isize = 1 << 30;
/// Longest time one report may take.
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// Counts the bytes each thread has allocated and not freed, and the highest count since the
/// last [`start_measuring`]. While a thread measures, an allocation that would take it past
/// [`MEMORY_LIMIT`] fails: the process aborts, after saying which mutant did it.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// While measuring: the count at the start, and the mutant's seed + 1.
    static BASE: Cell<isize> = const { Cell::new(0) };
    static MUTANT: Cell<u64> = const { Cell::new(0) };
}

impl Counting {
    /// Count `delta` bytes for this thread; false if that breaks the limit.
    fn count(delta: isize) -> bool {
        let live = LIVE.with(|l| l.get()) + delta;
        let mutant = MUTANT.with(|m| m.get());
        if mutant != 0 && delta > 0 && live - BASE.with(|b| b.get()) > MEMORY_LIMIT {
            over_limit(mutant - 1);
            return false;
        }
        LIVE.with(|l| l.set(live));
        PEAK.with(|p| p.set(p.get().max(live)));
        true
    }
}

/// Say which mutant passed the memory limit, without allocating (the allocation then fails and
/// the process aborts).
fn over_limit(seed: u64) {
    // Twenty decimal digits, zero-padded.
    let mut digits = [b'0'; 20];
    let mut v = seed;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    for part in [
        &b"\nmemspy damaged-recording test: mutant "[..],
        &digits[..],
        &b" used more than 1 GiB in one report\n"[..],
    ] {
        // SAFETY: write(2) on stderr from a buffer that lives through the call.
        unsafe {
            libc::write(2, part.as_ptr().cast(), part.len());
        }
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; the counting only reads
// and writes this thread's counters (const-initialised thread locals without destructors, so
// touching them never allocates), and a refused allocation returns null as the contract allows.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Counting::count(layout.size() as isize) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Counting::count(layout.size() as isize) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Counting::count(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Counting::count(new_size as isize - layout.size() as isize) {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Measure this thread's memory from now on, for mutant `seed`.
fn start_measuring(seed: u64) {
    let live = LIVE.with(|l| l.get());
    BASE.with(|b| b.set(live));
    PEAK.with(|p| p.set(live));
    MUTANT.with(|m| m.set(seed + 1));
}

/// Stop measuring; the most this thread had allocated since `start_measuring`, bytes.
fn stop_measuring() -> isize {
    MUTANT.with(|m| m.set(0));
    PEAK.with(|p| p.get()) - BASE.with(|b| b.get())
}

// --- Mutants ----------------------------------------------------------------------------------

/// xorshift64*: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A recording as its header and record bodies (type byte and payload).
#[derive(Clone)]
struct Records {
    header: Vec<u8>,
    bodies: Vec<Vec<u8>>,
}

impl Records {
    /// The records of a file whose framing is whole (lengths add up, none empty); None
    /// otherwise.
    fn split(file: &[u8]) -> Option<Records> {
        let mut bodies = Vec::new();
        let mut pos = HEADER_LEN;
        while pos < file.len() {
            let len = u32::from_le_bytes(file.get(pos..pos + 4)?.try_into().ok()?) as usize;
            let body = file.get(pos + 4..(pos + 4).checked_add(len)?)?;
            if body.is_empty() || file.len() < pos + 8 + len {
                return None;
            }
            bodies.push(body.to_vec());
            pos += 8 + len;
        }
        Some(Records {
            header: file.get(..HEADER_LEN)?.to_vec(),
            bodies,
        })
    }

    /// The file, every record framed with its right length and checksum.
    fn join(&self) -> Vec<u8> {
        let mut out = self.header.clone();
        for body in &self.bodies {
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        }
        out
    }

    /// Byte ranges of the records in `join()`'s output (length field to checksum).
    fn spans(&self) -> Vec<(usize, usize)> {
        let mut pos = self.header.len();
        self.bodies
            .iter()
            .map(|b| {
                let span = (pos, pos + 8 + b.len());
                pos = span.1;
                span
            })
            .collect()
    }
}

/// A field of a record body.
#[derive(Clone, Debug)]
enum Field {
    Unsigned(usize, usize),
    Signed(usize, usize),
    /// A string: its length varint starts at .0, its bytes end at .1.
    Text(usize, usize),
}

/// Reads varints and notes where each was.
struct Fields<'a> {
    body: &'a [u8],
    pos: usize,
    found: Vec<Field>,
}

impl Fields<'_> {
    fn raw(&mut self) -> Option<(u64, usize)> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.body.get(self.pos)?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some((v, start));
            }
        }
        None
    }
    fn uv(&mut self) -> Option<u64> {
        let (v, start) = self.raw()?;
        self.found.push(Field::Unsigned(start, self.pos));
        Some(v)
    }
    fn sv(&mut self) -> Option<()> {
        let (_, start) = self.raw()?;
        self.found.push(Field::Signed(start, self.pos));
        Some(())
    }
    fn text(&mut self) -> Option<()> {
        let (n, start) = self.raw()?;
        self.pos = self.pos.checked_add(n as usize)?;
        (self.pos <= self.body.len()).then_some(())?;
        self.found.push(Field::Text(start, self.pos));
        Some(())
    }
    fn byte(&mut self) -> Option<()> {
        self.body.get(self.pos)?;
        self.pos += 1;
        Some(())
    }

    /// The fields of a body, as the format (src/recording/format.rs) lays them out.
    fn of(body: &[u8]) -> Vec<Field> {
        let mut f = Fields {
            body,
            pos: 1,
            found: Vec::new(),
        };
        let _ = (|| -> Option<()> {
            match body[0] {
                T_STRING => {
                    f.uv()?;
                    f.text()?;
                }
                T_FUNCTION => {
                    for _ in 0..4 {
                        f.uv()?;
                    }
                    f.sv()?;
                }
                T_FRAME => {
                    f.uv()?;
                    f.uv()?;
                    f.sv()?;
                }
                T_STACK | T_THREAD | T_PROCESS_START | T_STATS | T_END => {
                    while f.pos < body.len() {
                        f.uv()?;
                    }
                }
                T_PROCESS_END => {
                    f.uv()?;
                    f.uv()?;
                    f.byte()?;
                    f.sv()?;
                }
                T_SOURCE => {
                    f.uv()?;
                    f.text()?;
                }
                T_EVENTS => {
                    f.uv()?;
                    let count = f.uv()?;
                    for _ in 0..count {
                        let head = f.uv()?;
                        f.uv()?;
                        match (head & 3) as u8 {
                            E_SAMPLE => {
                                f.sv()?;
                                f.uv()?;
                                let n = f.uv()?;
                                for _ in 0..n {
                                    let h = f.uv()?;
                                    if h & SAME_STACK == 0 {
                                        f.uv()?;
                                    }
                                    f.uv()?;
                                    f.uv()?;
                                }
                            }
                            E_FAILURE => f.byte()?,
                            _ => {
                                f.byte()?;
                                f.uv()?;
                            }
                        }
                    }
                }
                _ => {}
            }
            Some(())
        })();
        f.found
    }
}

/// Values a lying varint takes.
fn lying_unsigned(rng: &mut Rng, was: u64) -> u64 {
    let random = rng.next();
    *rng.pick(&[
        0,
        1,
        2,
        was.wrapping_add(1),
        was.wrapping_sub(1),
        was.wrapping_mul(1000),
        (1 << 31) - 1,
        1 << 31,
        u32::MAX as u64,
        u32::MAX as u64 + 1,
        1 << 42,
        1 << 53,
        i64::MAX as u64,
        u64::MAX,
        random,
        random % 1000,
    ])
}

fn lying_signed(rng: &mut Rng) -> i64 {
    let random = rng.next() as i64;
    *rng.pick(&[
        0,
        -1,
        -2,
        1,
        i32::MAX as i64,
        i32::MIN as i64,
        i32::MAX as i64 + 1,
        i64::MAX,
        i64::MIN,
        1 << 42,
        -(1 << 42),
        random,
    ])
}

/// Text a lying string holds.
fn lying_text(rng: &mut Rng) -> Vec<u8> {
    let long: String = "x".repeat(10_000);
    let controls: String = (0u8..32).map(|b| b as char).collect::<String>() + "\x7f";
    match rng.below(8) {
        0 => long.into_bytes(),
        1 => format!("evil\x1b[31m\x1b]0;title\x07{controls}").into_bytes(),
        2 => "\u{9b}2J\u{85}\u{202e}gnp.exe\u{2066}\u{ffff}"
            .as_bytes()
            .to_vec(),
        3 => b"<script>alert(1)</script>&amp;]]>\"'|`*_[x](y)".to_vec(),
        4 => vec![0xff, 0xfe, 0x80, b'a'], // not UTF-8
        5 => Vec::new(),
        6 => format!("{}\n{}", "line;with;semicolons ", "y".repeat(20_000)).into_bytes(),
        _ => "/etc/shadow".as_bytes().to_vec(),
    }
}

/// Descriptions a forged recording gives.
fn lying_meta(rng: &mut Rng) -> Vec<u8> {
    let meta = |rate: &str, memory: &str, version: &str| {
        format!(
            r#"{{"memspy_version":{version},"start_unix_ns":1764000000000000000,"command":["memspy"],"rate_hz":{rate},"blocking":true,"memory":"{memory}","subprocesses":true}}"#
        )
        .into_bytes()
    };
    let ten_thousand = format!("{:?}", "\x1b[2J".repeat(2_500));
    match rng.below(14) {
        0 => meta("1e300", "rss", "\"x\""),
        1 => meta("NaN", "rss", "\"x\""),
        2 => meta("-1", "rss", "\"x\""),
        3 => meta("0", "rss", "\"x\""),
        4 => meta("1000000", "rss", "\"x\""),
        5 => meta("1000001", "rss", "\"x\""),
        6 => meta("1e-300", "pss", "\"x\""),
        7 => meta("100", "swap", "\"x\""),
        8 => meta("100", "uss", &ten_thousand),
        9 => meta("100", "rss", &format!("\"{}\"", "v".repeat(100_000))),
        10 => br#"{"rate_hz": 100, "memory": "rss", "start_unix_ns": 18446744073709551615}"#.to_vec(),
        11 => b"not json at all".to_vec(),
        12 => br#"{"memspy_version":"x","start_unix_ns":0,"command":[],"rate_hz":0.5,"blocking":false,"memory":"pss","subprocesses":false,"rollup_interval_ms":18446744073709551615}"#.to_vec(),
        _ => meta("100", "rss", "\"x\""),
    }
}

/// One mutation of `file` (whose records are `records`).
fn mutate_once(rng: &mut Rng, file: &mut Vec<u8>) {
    let Some(records) = Records::split(file).filter(|r| !r.bodies.is_empty()) else {
        // No longer whole: only raw changes.
        let i = rng.below(file.len());
        file[i] ^= 1 << rng.below(8);
        return;
    };
    let spans = records.spans();
    // A position inside a random record (records, not bytes, are picked evenly: a recording's
    // source records are most of its bytes).
    let pos_in_record = |rng: &mut Rng| {
        let (a, b) = *rng.pick(&spans);
        a + rng.below(b - a)
    };
    match rng.below(16) {
        0 | 1 => {
            for _ in 0..1 + rng.below(8) {
                let i = pos_in_record(rng);
                file[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            let i = pos_in_record(rng);
            for j in i..(i + 1 + rng.below(16)).min(file.len()) {
                let random = rng.next() as u8;
                file[j] = *rng.pick(&[0, 0xff, 0x80, random]);
            }
        }
        3 => {
            let cut = pos_in_record(rng);
            file.truncate(cut);
        }
        4 | 5 => {
            // Duplicate, remove or swap whole records.
            let mut r = records.clone();
            let i = rng.below(r.bodies.len());
            match rng.below(3) {
                0 => {
                    let copy = r.bodies[i].clone();
                    let at = rng.below(r.bodies.len() + 1);
                    r.bodies.insert(at, copy);
                }
                1 => {
                    r.bodies.remove(i);
                }
                _ => {
                    let j = rng.below(r.bodies.len());
                    r.bodies.swap(i, j);
                }
            }
            *file = r.join();
        }
        6 => {
            // A huge or wrong length.
            let (a, b) = *rng.pick(&spans);
            let random = rng.next() as u32;
            let len = *rng.pick(&[
                u32::MAX,
                MAX_RECORD as u32 + 1,
                MAX_RECORD as u32,
                (file.len() - a) as u32,
                (b - a) as u32,
                0,
                random,
            ]);
            file[a..a + 4].copy_from_slice(&len.to_le_bytes());
        }
        7 => {
            // An impossible description, with a right checksum.
            let mut r = records.clone();
            let mut body = vec![T_META];
            body.extend_from_slice(&lying_meta(rng));
            r.bodies[0] = body;
            *file = r.join();
        }
        8 | 9 => {
            // A lying string or source text.
            let mut r = records.clone();
            let texts: Vec<usize> = (0..r.bodies.len())
                .filter(|&i| matches!(r.bodies[i][0], T_STRING | T_SOURCE))
                .collect();
            if texts.is_empty() {
                return;
            }
            let i = *rng.pick(&texts);
            let fields = Fields::of(&r.bodies[i]);
            if let Some(Field::Text(a, b)) = fields.last().cloned() {
                let new = lying_text(rng);
                let mut text = Vec::new();
                put_uv(&mut text, new.len() as u64);
                text.extend_from_slice(&new);
                r.bodies[i].splice(a..b, text);
            }
            *file = r.join();
        }
        _ => {
            // A lying number in any record, with a right checksum. The kind of record is
            // picked first, so the few events records (most of the numbers that matter) are
            // lied in as often as the many definitions.
            let mut r = records.clone();
            let mut kinds: Vec<u8> = r.bodies.iter().map(|b| b[0]).collect();
            kinds.sort_unstable();
            kinds.dedup();
            let kind = *rng.pick(&kinds);
            let of_kind: Vec<usize> = (0..r.bodies.len())
                .filter(|&i| r.bodies[i][0] == kind)
                .collect();
            let i = *rng.pick(&of_kind);
            let fields = Fields::of(&r.bodies[i]);
            let numbers: Vec<&Field> = fields
                .iter()
                .filter(|f| !matches!(f, Field::Text(..)))
                .collect();
            if numbers.is_empty() {
                return;
            }
            let mut value = Vec::new();
            let (a, b) = match *rng.pick(&numbers) {
                Field::Unsigned(a, b) => {
                    let was = Fields {
                        body: &r.bodies[i],
                        pos: *a,
                        found: Vec::new(),
                    }
                    .raw()
                    .map_or(0, |v| v.0);
                    put_uv(&mut value, lying_unsigned(rng, was));
                    (*a, *b)
                }
                Field::Signed(a, b) => {
                    put_sv(&mut value, lying_signed(rng));
                    (*a, *b)
                }
                Field::Text(..) => unreachable!(),
            };
            r.bodies[i].splice(a..b, value);
            *file = r.join();
        }
    }
}

/// Mutant `seed` of `base`: one to three mutations.
fn mutant(base: &[u8], seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut file = base.to_vec();
    for _ in 0..1 + rng.below(3) {
        if file.len() <= HEADER_LEN {
            break;
        }
        mutate_once(&mut rng, &mut file);
    }
    file
}

// --- The reports ------------------------------------------------------------------------------

/// Every report command with the variants the test runs, by name.
const REPORTS: &[&str] = &[
    "info",
    "info --json",
    "flame --metric wall",
    "flame --metric cpu",
    "flame --metric growth",
    "flame --metric freed",
    "flame --metric net",
    "flame --metric peak --function --merge-processes",
    "flame --pid (first process)",
    "lines",
    "lines --format csv --metric growth",
    "lines --format json --metric peak",
    "lines --function grow",
    "plot",
    "export --format speedscope",
    "export --format collapsed --metric net",
    "export --format json",
    "export --format mprof",
    "check budgets",
    "check --baseline (mutant as baseline)",
    "check --baseline --format markdown",
    "check --format json budgets and baseline",
    "export --format pprof",
    "report (html)",
    "diff (svg)",
];

fn flame_opts(metric: Metric) -> FlameOptions {
    FlameOptions {
        // A window too: its bounds come from the (damaged) samples' times.
        window: memspy::analysis::WindowSpec {
            from: Some(memspy::analysis::Bound::Percent(10.0)),
            to: Some(memspy::analysis::Bound::Seconds(1e9)),
            skip_startup: true,
        },
        threads_only: false,
        output: PathBuf::new(),
        input: None,
        metric,
        pid: None,
        merge_processes: false,
        functions_only: false,
    }
}

fn lines_opts(metric: Metric, format: Format, function: Option<&str>) -> LinesOptions {
    LinesOptions {
        window: Default::default(),
        threads_only: false,
        input: None,
        metric,
        top: None,
        function: function.map(str::to_string),
        pid: None,
        format,
    }
}

fn export_opts(format: ExportFormat, metric: Metric) -> ExportOptions {
    ExportOptions {
        window: Default::default(),
        threads_only: false,
        output: PathBuf::new(),
        input: None,
        format,
        metric: Some(metric),
        pid: None,
        merge_processes: false,
        functions_only: false,
    }
}

fn check_opts(budgets: bool, format: check::Format) -> CheckOptions {
    // With budgets, each process on its own (the per-process path sees the damage too).
    let each_process = budgets;
    let budgets = if budgets {
        vec![
            Budget {
                measure: Measure::PeakProcess,
                pattern: None,
                limit: Amount::Absolute(512.0 * 1048576.0),
            },
            Budget {
                measure: Measure::PeakTotal,
                pattern: None,
                limit: Amount::Percent(90.0),
            },
            Budget {
                measure: Measure::Growth,
                pattern: Some("*grow".into()),
                limit: Amount::Absolute(1048576.0),
            },
            Budget {
                measure: Measure::Wall,
                pattern: Some("*".into()),
                limit: Amount::Percent(50.0),
            },
        ]
    } else {
        Vec::new()
    };
    CheckOptions {
        window: Default::default(),
        pid: None,
        each_process,
        threads_only: false,
        input: None,
        budgets,
        baselines: Vec::new(),
        rule: Rule::default(),
        format,
        verbose: true,
    }
}

/// Run report `which` on the mutant `m` (and the undamaged `base` where it takes two).
/// Errors are fine (the CLI turns them into one line and exit 2); only what it writes counts.
fn run_report(which: usize, base: &Recording, m: &Recording, out: &mut Vec<u8>, svg: &mut Vec<u8>) {
    let _ = match which {
        0 => info::report("m.msp", m, false, out).map(|_| ()),
        1 => info::report("m.msp", m, true, out).map(|_| ()),
        2..=6 => {
            let metric = [
                Metric::Wall,
                Metric::Cpu,
                Metric::Growth,
                Metric::Freed,
                Metric::Retained,
            ][which - 2];
            flame::report(m, "m.msp", &flame_opts(metric), svg).map(|_| ())
        }
        7 => {
            let opts = FlameOptions {
                threads_only: false,
                merge_processes: true,
                functions_only: true,
                ..flame_opts(Metric::Peak)
            };
            flame::report(m, "m.msp", &opts, svg).map(|_| ())
        }
        8 => {
            let opts = FlameOptions {
                threads_only: false,
                pid: m.processes.first().map(|p| p.pid),
                ..flame_opts(Metric::Growth)
            };
            flame::report(m, "m.msp", &opts, svg).map(|_| ())
        }
        9 => lines::report(m, &lines_opts(Metric::Wall, Format::Text, None), true, out),
        10 => lines::report(
            m,
            &lines_opts(Metric::Growth, Format::Csv, None),
            false,
            out,
        ),
        11 => lines::report(m, &lines_opts(Metric::Peak, Format::Json, None), false, out),
        12 => lines::report(
            m,
            &lines_opts(Metric::Retained, Format::Text, Some("grow")),
            false,
            out,
        ),
        13 => {
            let opts = PlotOptions {
                window: Default::default(),
                output: PathBuf::new(),
                input: None,
                pid: None,
                functions: 5,
            };
            plot::report(m, "m.msp", &opts, svg).map(|_| ())
        }
        14 => export::report(
            m,
            "m.msp",
            &export_opts(ExportFormat::Speedscope, Metric::Wall),
            out,
        )
        .map(|_| ()),
        15 => export::report(
            m,
            "m.msp",
            &export_opts(ExportFormat::Collapsed, Metric::Retained),
            out,
        )
        .map(|_| ()),
        16 => export::report(
            m,
            "m.msp",
            &export_opts(ExportFormat::Json, Metric::Wall),
            out,
        )
        .map(|_| ()),
        17 => export::report(
            m,
            "m.msp",
            &export_opts(ExportFormat::Mprof, Metric::Wall),
            out,
        )
        .map(|_| ()),
        18 => check::report(
            ("m.msp", m),
            &[],
            &check_opts(true, check::Format::Text),
            out,
        )
        .map(|_| ()),
        19 => check::report(
            ("base.msp", base),
            &[("m.msp", m)],
            &check_opts(false, check::Format::Text),
            out,
        )
        .map(|_| ()),
        20 => check::report(
            ("m.msp", m),
            &[("base.msp", base)],
            &check_opts(false, check::Format::Markdown),
            out,
        )
        .map(|_| ()),
        21 => check::report(
            ("m.msp", m),
            &[("base.msp", base), ("m.msp", m)],
            &check_opts(true, check::Format::Json),
            out,
        )
        .map(|_| ()),
        22 => export::report(
            m,
            "m.msp",
            &export_opts(ExportFormat::Pprof, Metric::Wall),
            out,
        )
        .map(|_| ()),
        23 => {
            let opts = ReportOptions {
                input: None,
                output: PathBuf::new(),
                window: Default::default(),
                open: false,
            };
            report::report(m, "m.msp", &opts, out).map(|_| ())
        }
        _ => {
            let opts = DiffOptions {
                window: Default::default(),
                threads_only: false,
                base: PathBuf::new(),
                new: PathBuf::new(),
                output: None,
                metric: Metric::Growth,
                top: 15,
                functions_only: false,
                normalize: true,
            };
            diff::report(("base.msp", base), ("m.msp", m), &opts, Some(svg), out)
        }
    };
}

/// Whether text written for a terminal, CSV, Markdown, mprof or folded stacks holds a raw
/// control character (newlines end lines; nothing else may act).
fn raw_control(text: &[u8]) -> Option<char> {
    String::from_utf8_lossy(text).chars().find(|&c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

/// Check an SVG is well-formed XML without a character XML 1.0 forbids.
fn check_svg(svg: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(svg).map_err(|e| format!("not UTF-8: {e}"))?;
    if let Some(c) = text.chars().find(|&c| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}')
    }) {
        return Err(format!("character {:?} forbidden in XML", c));
    }
    let mut reader = quick_xml::Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => return Ok(()),
            Err(e) => return Err(format!("not well-formed: {e}")),
            _ => {}
        }
    }
}

/// Reports whose output is text that must hold no raw control character.
fn is_text_report(which: usize) -> bool {
    matches!(which, 0 | 9 | 10 | 12 | 15 | 17 | 18..=20 | 24)
}

// --- The test -----------------------------------------------------------------------------------

/// Real recordings of `fixtures/mutation_base.py`: one process at 300 Hz with RSS, and with a
/// forked child at 200 Hz with PSS readings.
fn base_recordings(py: &Interpreter, dir: &Path) -> Vec<Vec<u8>> {
    let script = fixtures_dir().join("mutation_base.py");
    let mut out = Vec::new();
    for (name, memspy_args, args) in [
        ("one.msp", vec!["-r", "300"], vec![]),
        (
            "fork.msp",
            vec!["-r", "200", "--subprocesses", "--memory", "pss"],
            vec!["fork"],
        ),
    ] {
        let path = dir.join(name);
        // greenlet's wheel for this interpreter, when provisioned: parked greenlets (tasks).
        let minor = py.version.split('.').take(2).collect::<Vec<_>>().join("");
        let site = common::venv(&format!("sites/gevent-cp{minor}")).unwrap_or_default();
        let status = Command::new(memspy_bin())
            .env("PYTHONPATH", site)
            .arg("record")
            .arg("-o")
            .arg(&path)
            .args(&memspy_args)
            .arg("--")
            .arg(&py.exe)
            .arg(&script)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{}: memspy record {memspy_args:?}",
            py.label
        );
        let bytes = std::fs::read(&path).unwrap();
        let rec = Recording::parse(&bytes).unwrap();
        assert!(rec.complete && rec.damage.is_none() && !rec.samples.is_empty());
        if std::env::var_os("CI").is_some() {
            assert!(
                !rec.task_changes.is_empty(),
                "{name}: no greenlets recorded"
            );
        }
        // Kept next to the failing mutants, to make any of them again: mutant SEED is
        // `mutant(base SEED % 2, SEED)`.
        let kept =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("damaged-base-{}.msp", out.len()));
        std::fs::write(kept, &bytes).unwrap();
        out.push(bytes);
    }
    out
}

/// Save a mutant that failed, for a rerun by hand; returns where.
fn save(bytes: &[u8], seed: u64) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("damaged-mutant-{seed}.msp"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// What the in-process runs found.
#[derive(Default)]
struct Tally {
    mutants: u64,
    unreadable: u64,
    damaged: u64,
    runs: u64,
    slowest: Duration,
    slowest_what: String,
    peak_bytes: isize,
    failures: Vec<String>,
    /// How many mutants each kind of damage or refusal stopped (the reader's reason, numbers
    /// left out).
    reasons: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.mutants += other.mutants;
        self.unreadable += other.unreadable;
        self.damaged += other.damaged;
        self.runs += other.runs;
        if other.slowest > self.slowest {
            self.slowest = other.slowest;
            self.slowest_what = other.slowest_what;
        }
        self.peak_bytes = self.peak_bytes.max(other.peak_bytes);
        self.failures.extend(other.failures);
        for (k, n) in other.reasons {
            *self.reasons.entry(k).or_default() += n;
        }
    }
}

/// A reader's reason without its numbers, to count kinds of damage.
fn reason_kind(what: &str) -> String {
    what.split_whitespace()
        .filter(|w| !w.chars().any(|c| c.is_ascii_digit()))
        .take(7)
        .collect::<Vec<_>>()
        .join(" ")
}

const IN_PROCESS: u64 = 5_000;
const THROUGH_BINARY: u64 = 300;

#[test]
fn damaged_recordings_never_break_a_report() {
    let started = Instant::now();
    let py = interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    let bases = Arc::new(base_recordings(&py, dir.path()));
    let parsed: Arc<Vec<Recording>> =
        Arc::new(bases.iter().map(|b| Recording::parse(b).unwrap()).collect());
    eprintln!(
        "base recordings: {:?} bytes ({:.1} s)",
        bases.iter().map(|b| b.len()).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );

    // The binary, on a thread of its own, while mutants run in-process on another.
    let binary = {
        let bases = bases.clone();
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || through_binary(&bases, &dir))
    };

    // In-process, on WORKERS threads (seeds split between them), watched: each worker says
    // what it is running; the watchdog fails the test on a run that takes too long (a hang
    // never returns to be measured).
    keep_report_panics();
    let now_running: Arc<Vec<Mutex<Running>>> =
        Arc::new((0..WORKERS).map(|_| Mutex::new(None)).collect());
    let (done_tx, done_rx) = mpsc::channel();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (bases, parsed, now_running) = (bases.clone(), parsed.clone(), now_running.clone());
            let done = done_tx.clone();
            std::thread::Builder::new()
                .name(WORKER.into())
                .spawn(move || {
                    let seeds = (w as u64..IN_PROCESS).step_by(WORKERS);
                    let tally = in_process(&bases, &parsed, seeds, &now_running[w]);
                    let _ = done.send(());
                    tally
                })
                .unwrap()
        })
        .collect();
    drop(done_tx);
    let mut finished = 0;
    while finished < WORKERS {
        match done_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => finished += 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                for running in now_running.iter() {
                    if let Some((since, seed, which)) = *running.lock().unwrap() {
                        if since.elapsed() > TIME_LIMIT {
                            let base = &bases[(seed % bases.len() as u64) as usize];
                            let saved = save(&mutant(base, seed), seed);
                            panic!(
                                "mutant {seed} ({}): `{}` has run for over {TIME_LIMIT:?}",
                                saved.display(),
                                REPORTS[which]
                            );
                        }
                    }
                }
            }
        }
    }
    let mut tally = Tally::default();
    for w in workers {
        tally.add(w.join().expect("in-process runs"));
    }
    let (spawned, binary_failures, binary_time) = binary.join().expect("binary runs");

    eprintln!(
        "in-process: {} mutants ({} unreadable, {} read as damaged), {} report runs; slowest {:.0} ms ({}); most memory of a run {:.1} MiB",
        tally.mutants,
        tally.unreadable,
        tally.damaged,
        tally.runs,
        tally.slowest.as_secs_f64() * 1e3,
        tally.slowest_what,
        tally.peak_bytes as f64 / 1048576.0
    );
    let mut reasons: Vec<_> = tally.reasons.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1));
    for (what, n) in reasons {
        eprintln!("  {n:>5}  {what}");
    }
    eprintln!(
        "through the binary: {spawned} mutants in {:.1} s",
        binary_time.as_secs_f64()
    );
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());
    let failures: Vec<String> = tally
        .failures
        .iter()
        .chain(&binary_failures)
        .cloned()
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(tally.mutants, IN_PROCESS);
    assert_eq!(spawned, THROUGH_BINARY);
    // The mutations reach the reader's checks: many mutants are damaged, some unreadable.
    assert!(
        tally.damaged > IN_PROCESS / 4 && tally.unreadable > 0,
        "mutations too mild"
    );
}

/// What a worker is running: since when, which mutant, which report.
type Running = Option<(Instant, u64, usize)>;

thread_local! {
    /// The message of the last panic on this thread.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A report's panic on a worker is kept for the failure message rather than printed at once;
/// panics of other threads go to the usual hook.
fn keep_report_panics() {
    let usual = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(WORKER) {
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
        } else {
            usual(info);
        }
    }));
}

fn last_panic() -> String {
    LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_default()
}

fn in_process(
    bases: &[Vec<u8>],
    parsed: &[Recording],
    seeds: impl Iterator<Item = u64>,
    now_running: &Mutex<Running>,
) -> Tally {
    let mut tally = Tally::default();
    let (mut out, mut svg) = (Vec::new(), Vec::new());
    for seed in seeds {
        let which_base = (seed % bases.len() as u64) as usize;
        let bytes = mutant(&bases[which_base], seed);
        tally.mutants += 1;
        start_measuring(seed);
        let parse_started = Instant::now();
        let parsed_mutant = catch_unwind(|| Recording::parse(&bytes));
        let parse_time = parse_started.elapsed();
        let parse_peak = stop_measuring();
        tally.peak_bytes = tally.peak_bytes.max(parse_peak);
        let m = match parsed_mutant {
            Err(_) => {
                let saved = save(&bytes, seed);
                tally.failures.push(format!(
                    "mutant {seed} ({}): the reader panicked: {}",
                    saved.display(),
                    last_panic()
                ));
                continue;
            }
            Ok(Err(e)) => {
                tally.unreadable += 1;
                *tally
                    .reasons
                    .entry(reason_kind(&format!("unreadable: {e}")))
                    .or_default() += 1;
                continue;
            }
            Ok(Ok(m)) => m,
        };
        if parse_time > TIME_LIMIT {
            tally
                .failures
                .push(format!("mutant {seed}: reading took {parse_time:?}"));
        }
        match &m.damage {
            Some(memspy::recording::reader::Damage::Corrupt { what, .. }) => {
                tally.damaged += 1;
                *tally.reasons.entry(reason_kind(what)).or_default() += 1;
            }
            Some(_) => {
                tally.damaged += 1;
                *tally.reasons.entry("cut short".into()).or_default() += 1;
            }
            None => *tally.reasons.entry("(read whole)".into()).or_default() += 1,
        }
        for (which, name) in REPORTS.iter().enumerate() {
            out.clear();
            svg.clear();
            *now_running.lock().unwrap() = Some((Instant::now(), seed, which));
            start_measuring(seed);
            let t0 = Instant::now();
            let result = catch_unwind(AssertUnwindSafe(|| {
                run_report(which, &parsed[which_base], &m, &mut out, &mut svg)
            }));
            let took = t0.elapsed();
            let peak = stop_measuring();
            *now_running.lock().unwrap() = None;
            tally.runs += 1;
            tally.peak_bytes = tally.peak_bytes.max(peak);
            if took > tally.slowest {
                tally.slowest = took;
                tally.slowest_what = format!("mutant {seed}, {}", name);
            }
            let mut fail = |what: String| {
                let saved = save(&bytes, seed);
                tally.failures.push(format!(
                    "mutant {seed} ({}), `{}`: {what}",
                    saved.display(),
                    name
                ));
            };
            if result.is_err() {
                fail(format!("panicked: {}", last_panic()));
                continue;
            }
            if took > TIME_LIMIT {
                fail(format!("took {took:?}"));
            }
            if matches!(which, 1 | 11 | 14 | 16 | 21) && !out.is_empty() {
                if let Err(e) = serde_json::from_slice::<serde_json::Value>(&out) {
                    fail(format!("wrote JSON that does not parse: {e}"));
                }
            }
            // The page's own two scripts, and no other: a name cannot close them.
            if which == 23 && !out.is_empty() {
                let page = String::from_utf8_lossy(&out);
                if page.matches("<script").count() != 2 {
                    fail("wrote an HTML page with a script of the recording's".into());
                }
            }
            if is_text_report(which) {
                if let Some(c) = raw_control(&out) {
                    fail(format!("wrote the raw control character {c:?}"));
                }
            }
            // (Every other mutant's: parsing SVGs is most of the test's time otherwise.)
            if !svg.is_empty() && seed % 2 == 0 {
                if let Err(e) = check_svg(&svg) {
                    fail(format!("wrote an SVG that is not XML: {e}"));
                }
            }
        }
    }
    tally
}

/// The name of the threads that run mutants in-process, and how many there are.
const WORKER: &str = "mutants";
const WORKERS: usize = 2;

/// Command lines of the binary, for a mutant at `m` (and the undamaged base at `base`).
fn command_line(which: usize, m: &str, base: &str, out: &str) -> Vec<String> {
    let v: Vec<&str> = match which % 14 {
        0 => vec!["info", m],
        1 => vec!["info", "--json", m],
        2 => vec!["flame", "-i", m, out],
        3 => vec!["flame", "-i", m, "--metric", "peak", out],
        4 => vec!["lines", "-i", m, "--metric", "growth"],
        5 => vec!["lines", "-i", m, "--format", "csv", "--function", "grow"],
        6 => vec!["plot", "-i", m, out],
        7 => vec!["export", "-i", m, "-o", out, "--format", "speedscope"],
        8 => vec!["export", "-i", m, "-o", out, "--format", "json"],
        9 => vec!["export", "-i", m, "-o", out, "--format", "mprof"],
        10 => vec![
            "export",
            "-i",
            m,
            "-o",
            out,
            "--format",
            "collapsed",
            "--metric",
            "growth",
        ],
        11 => vec![
            "check",
            "-i",
            m,
            "--max-peak",
            "1GiB",
            "--max-growth",
            "grow=1MiB",
        ],
        12 => vec!["check", "-i", m, "--baseline", base, "--format", "markdown"],
        _ => vec!["diff", base, m, "-o", out],
    };
    v.into_iter().map(String::from).collect()
}

/// Run memspy under a 1 GiB address-space limit, killed after the time limit. Returns the exit
/// status (None: killed by a signal), stderr, and whether it timed out.
fn run_limited(args: &[String]) -> (Option<i32>, String, bool) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(memspy_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only setrlimit(2), which is async-signal-safe, runs in the
    // child; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: MEMORY_LIMIT as libc::rlim_t,
                rlim_max: MEMORY_LIMIT as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn memspy");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + TIME_LIMIT;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status, false);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break (child.wait().unwrap(), true);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    (status.code(), reader.join().unwrap(), timed_out)
}

fn through_binary(bases: &[Vec<u8>], dir: &Path) -> (u64, Vec<String>, Duration) {
    let started = Instant::now();
    let mut failures = Vec::new();
    let base_path = dir.join("base.msp");
    std::fs::write(&base_path, &bases[0]).unwrap();
    let (m_path, out_path) = (dir.join("m.msp"), dir.join("out"));
    let mut spawned = 0;
    for i in 0..THROUGH_BINARY {
        // Seeds of their own, after the in-process ones.
        let seed = 1_000_000 + i;
        let bytes = mutant(&bases[(i % 2) as usize], seed);
        std::fs::write(&m_path, &bytes).unwrap();
        let args = command_line(
            i as usize,
            m_path.to_str().unwrap(),
            base_path.to_str().unwrap(),
            out_path.to_str().unwrap(),
        );
        let (code, stderr, timed_out) = run_limited(&args);
        spawned += 1;
        let mut fail = |what: String| {
            let saved = save(&bytes, seed);
            failures.push(format!(
                "mutant {seed} ({}), memspy {}: {what}\n{stderr}",
                saved.display(),
                args.join(" ")
            ));
        };
        if timed_out {
            fail(format!("still running after {TIME_LIMIT:?}"));
            continue;
        }
        match code {
            Some(0 | 2) => {}
            Some(1) if args[0] == "check" => {}
            Some(101) => fail("panicked (exit 101)".into()),
            Some(c) => fail(format!("exit status {c}")),
            None => fail("killed by a signal (out of memory under RLIMIT_AS?)".into()),
        }
        let lines: Vec<&str> = stderr.lines().collect();
        if lines.len() > 3 {
            fail(format!("{} lines on stderr", lines.len()));
        }
        for l in &lines {
            if l.chars().count() > 400 {
                fail(format!("a stderr line of {} characters", l.chars().count()));
            }
            if let Some(c) = raw_control(l.as_bytes()) {
                fail(format!("stderr holds the raw control character {c:?}"));
            }
        }
    }
    (spawned, failures, started.elapsed())
}

/// A recording read while it is written (`LiveRecording`, for top, --push and --serve) ends up
/// the same as the whole file parsed at once, whatever sizes the writes came in: records cut
/// anywhere wait for their end.
#[test]
fn a_recording_read_while_written_is_the_whole_file() {
    use memspy::recording::reader::LiveRecording;
    let py = common::interpreter_from((3, 12));
    let dir = tempfile::tempdir().unwrap();
    for (n, whole) in base_recordings(&py, dir.path()).iter().enumerate() {
        let expected = Recording::parse(whole).unwrap();
        let path = dir.path().join(format!("live-{n}.msp"));
        let mut file = std::fs::File::create(&path).unwrap();
        let mut live = LiveRecording::new(&path);
        let mut at = 0;
        let mut step = 1usize;
        while at < whole.len() {
            // 1, 2, 4, ... bytes, then a few KiB: cuts inside headers, lengths and bodies.
            let end = (at + step).min(whole.len());
            std::io::Write::write_all(&mut file, &whole[at..end]).unwrap();
            at = end;
            step = if step < 4096 {
                step * 2
            } else {
                1 + (at * 7919) % 9000
            };
            live.update();
        }
        let got = live.update().expect("the description was read");
        assert_eq!(got.samples.len(), expected.samples.len());
        assert_eq!(got.thread_samples.len(), expected.thread_samples.len());
        assert_eq!(got.memory_events.len(), expected.memory_events.len());
        assert_eq!(got.stacks.len(), expected.stacks.len());
        assert_eq!(got.strings, expected.strings);
        assert_eq!(got.complete, expected.complete);
        assert!(got.damage.is_none());
        let rss = |r: &Recording| r.samples.iter().map(|s| s.rss_bytes).sum::<u64>();
        assert_eq!(rss(got), rss(&expected));
    }
}
