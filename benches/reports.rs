//! How fast reports are on a big recording: a generated file with 1,000,000 samples (4
//! processes, 2 threads each, 2,000 distinct stacks 20 to 60 frames deep, RSS moving on every
//! sample). Target: `memspy flame` under 2 s. The baseline, measured in the same run, is
//! reading the file alone (`memspy info`), so the ratio shows what attribution and drawing add.
//!
//!     cargo bench --bench reports
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use memspy::recording::writer::{ProcessDef, ThreadEntry};
use memspy::recording::{Meta, Writer};

const SAMPLES: u64 = 1_000_000;

/// A small deterministic PRNG (xorshift), so every run writes the same file.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn generate(path: &Path) {
    let meta = Meta {
        memspy_version: "bench".into(),
        rate_hz: 1000.0,
        memory: "rss".into(),
        ..Meta::default()
    };
    let mut w = Writer::create(path, &meta).unwrap();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let functions: Vec<u32> = (0..500)
        .map(|i| {
            w.function(
                &format!("f{i}"),
                &format!("Module{}.f{i}", i % 37),
                &format!("/srv/app/mod{}.py", i % 50),
                i * 3,
            )
            .unwrap()
        })
        .collect();
    let stacks: Vec<Option<u32>> = (0..2000)
        .map(|_| {
            let depth = 20 + rng.below(41);
            let frames: Vec<u32> = (0..depth)
                .map(|_| {
                    let f = functions[rng.below(500) as usize];
                    w.frame(f, 1 + rng.below(400) as i32).unwrap()
                })
                .collect();
            w.stack(frames).unwrap()
        })
        .collect();
    let processes: Vec<u32> = (0..4)
        .map(|i| {
            w.process_start(&ProcessDef {
                pid: 1000 + i,
                starttime: i as u64,
                parent: None,
                time_us: 0,
                command: "python server.py",
                exe: "/usr/bin/python3",
                python: "3.12.1",
                cwd: "",
            })
            .unwrap()
        })
        .collect();
    let slots: Vec<[u32; 2]> = processes
        .iter()
        .map(|&p| {
            [
                w.thread(p, 1, Some(1), "main").unwrap(),
                w.thread(p, 2, Some(2), "worker").unwrap(),
            ]
        })
        .collect();
    let mut rss = [100u64 << 20; 4];
    let mut cpu = [[0u64; 2]; 4];
    for i in 0..SAMPLES {
        let p = (i % 4) as usize;
        rss[p] = (rss[p] as i64 + rng.below(1 << 20) as i64 - (1 << 19)).max(1 << 20) as u64;
        let mut threads = [ThreadEntry {
            slot: 0,
            stack: None,
            flags: 0,
            cpu_ns_total: 0,
            minflt: 0,
        }; 2];
        for (t, entry) in threads.iter_mut().enumerate() {
            cpu[p][t] += rng.below(1_000_000);
            *entry = ThreadEntry {
                slot: slots[p][t],
                // Mostly the same few stacks, like a real program.
                stack: stacks[(rng.below(50) * rng.below(40)) as usize],
                flags: (rng.below(4)) as u8,
                cpu_ns_total: cpu[p][t],
                minflt: rng.below(64),
            };
        }
        w.sample(processes[p], i * 250, rss[p], 0, &threads)
            .unwrap();
    }
    w.finish().unwrap();
}

fn time(args: &[&str]) -> f64 {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_memspy"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    // MEMSPY_BENCH_KEEP=FILE keeps the generated recording there, to profile reports on it.
    let rec = std::env::var_os("MEMSPY_BENCH_KEEP")
        .map_or_else(|| dir.path().join("big.msp"), Into::into);
    let started = Instant::now();
    generate(&rec);
    let size = std::fs::metadata(&rec).unwrap().len();
    println!(
        "generated {SAMPLES} samples ({:.1} MiB, {:.1} bytes per sample) in {:.1} s",
        size as f64 / 1048576.0,
        size as f64 / SAMPLES as f64,
        started.elapsed().as_secs_f64()
    );
    let r = rec.to_str().unwrap();
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let baseline = time(&["info", r]);
    println!(
        "{:<36} {:>8} {:>14} {:>12}",
        "report", "seconds", "vs reading", "vs 2 s goal"
    );
    let wall_svg = out("wall.svg");
    let growth_svg = out("growth.svg");
    let (page, pprof) = (out("report.html"), out("run.pb.gz"));
    for (name, args) in [
        ("info (reading the file: baseline)", vec!["info", r]),
        ("flame (wall)", vec!["flame", "-i", r, &wall_svg]),
        (
            "flame --metric growth",
            vec!["flame", "-i", r, "--metric", "growth", &growth_svg],
        ),
        (
            "lines --metric growth",
            vec!["lines", "-i", r, "--metric", "growth", "--top", "20"],
        ),
        (
            "report (the HTML page)",
            vec!["report", "-i", r, "-o", &page],
        ),
        (
            "export --format pprof",
            vec!["export", "-i", r, "-o", &pprof, "--format", "pprof"],
        ),
    ] {
        let t = time(&args);
        println!(
            "{name:<36} {t:>8.2} {:>13.2}x {:>11.2}x",
            t / baseline,
            t / 2.0
        );
    }
}
