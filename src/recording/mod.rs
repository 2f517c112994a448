//! The recording: a durable, crash-tolerant stream of samples on disk ([`format`] documents the
//! bytes), written while sampling ([`writer`]) and read back by every report ([`reader`]).
pub mod format;
pub mod reader;
pub mod writer;

pub use format::{EndReason, FailureKind, MemoryKind, Meta};
pub use reader::Recording;
pub use writer::Writer;

#[cfg(test)]
mod tests {
    use super::reader::Damage;
    use super::writer::{ProcessDef, ThreadEntry};
    use super::*;

    /// A small recording: one process, two threads, a few samples, a failure, a memory reading.
    fn sample_file() -> Vec<u8> {
        file_with_samples(50)
    }

    fn file_with_samples(n: u64) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.msp");
        let meta = Meta {
            memspy_version: "test".into(),
            rate_hz: 100.0,
            memory: "rss".into(),
            ..Meta::default()
        };
        let mut w = Writer::create(&path, &meta).unwrap();
        let p = w
            .process_start(&ProcessDef {
                pid: 42,
                starttime: 7,
                parent: None,
                time_us: 0,
                command: "python app.py",
                exe: "/usr/bin/python3",
                python: "3.11.2",
                cwd: "/srv",
            })
            .unwrap();
        let main = w.thread(p, 42, Some(42), "MainThread").unwrap();
        let worker = w.thread(p, 43, Some(43), "worker").unwrap();
        let f_main = w.function("main", "main", "app.py", 1).unwrap();
        let f_leak = w.function("leak", "Cache.leak", "app.py", 10).unwrap();
        let (a, b) = (w.frame(f_main, 5).unwrap(), w.frame(f_leak, 12).unwrap());
        let s1 = w.stack([a]).unwrap();
        let s2 = w.stack([a, b]).unwrap();
        for i in 0..n {
            let threads = [
                ThreadEntry {
                    slot: main,
                    stack: s1,
                    flags: 0,
                    cpu_ns_total: 0,
                    minflt: 0,
                },
                ThreadEntry {
                    slot: worker,
                    stack: s2,
                    flags: 3,
                    cpu_ns_total: i * 10_000_000,
                    minflt: i,
                },
            ];
            w.sample(p, i * 10_000, (100 + i) << 20, 0, &threads)
                .unwrap();
        }
        w.failure(p, 500_000, FailureKind::Raced).unwrap();
        w.memory(p, 500_000, MemoryKind::Pss, 90 << 20).unwrap();
        w.stats(51, 1, 300, 900, 40, (0, 0, 0)).unwrap();
        w.process_end(p, 510_000, EndReason::Exited, Some(0))
            .unwrap();
        w.finish().unwrap();
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn round_trip() {
        let rec = Recording::parse(&sample_file()).unwrap();
        assert!(rec.complete);
        assert_eq!(rec.damage, None);
        assert_eq!(rec.samples.len(), 50);
        assert_eq!(rec.processes[0].pid, 42);
        assert_eq!(rec.processes[0].exit, Some(0));
        let last = rec.samples[49];
        assert_eq!(last.rss_bytes, 149 << 20);
        assert_eq!(last.time_us, 490_000);
        let t = rec.threads_of(&last);
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].cpu_us, 10_000);
        assert_eq!(t[1].minflt, 49);
        assert_eq!(t[1].flags, 3);
        let frames: Vec<_> = rec.stack_frames(t[1].stack.unwrap()).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(
            rec.string(rec.functions[frames[0].function as usize].qualname),
            "Cache.leak"
        );
        assert_eq!(frames[0].line, 12);
        assert_eq!(rec.failures.len(), 1);
        assert_eq!(rec.memory[0].bytes, 90 << 20);
        assert_eq!(rec.stats.missed, 1);
        assert_eq!(rec.string(rec.threads[1].name), "worker");
    }

    #[test]
    fn stays_small_for_repeated_stacks() {
        // Samples of a process with two threads, one of them burning CPU and faulting pages on
        // every sample while RSS grows: what each sample adds to the file.
        let per_sample =
            (file_with_samples(1000).len() - file_with_samples(0).len()) as f64 / 1000.0;
        assert!(per_sample <= 16.0, "{per_sample} bytes per sample");
    }

    #[test]
    fn every_prefix_reads() {
        let file = sample_file();
        let mut last_samples = 0;
        for cut in 0..file.len() {
            match Recording::parse(&file[..cut]) {
                Ok(rec) => {
                    assert!(
                        rec.samples.len() >= last_samples,
                        "prefixes never lose samples"
                    );
                    last_samples = rec.samples.len();
                    assert!(!rec.complete || cut == file.len());
                    assert!(
                        matches!(rec.damage, None | Some(Damage::Truncated { .. })),
                        "cut {cut}"
                    );
                }
                Err(e) => {
                    // Only a file cut inside its first record (the description) is unreadable.
                    let first_end =
                        16 + 8 + u32::from_le_bytes(file[16..20].try_into().unwrap()) as usize;
                    assert!(cut < first_end, "cut at {cut}: {e}")
                }
            }
        }
    }

    #[test]
    fn flipped_bits_never_panic() {
        let file = sample_file();
        for i in 0..file.len() {
            for bit in [0, 3, 7] {
                let mut bad = file.clone();
                bad[i] ^= 1 << bit;
                if let Ok(rec) = Recording::parse(&bad) {
                    if i >= crate::recording::format::HEADER_LEN {
                        assert!(rec.damage.is_some(), "flip at {i} went unnoticed");
                    }
                }
            }
        }
    }
}
