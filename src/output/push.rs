//! `record --push URL`: while recording, the pprof profile of every `--push-every` window is
//! sent to a Pyroscope-compatible ingest endpoint.
//!
//! The API followed is Grafana Pyroscope's HTTP ingest API (`POST /ingest`, documented at
//! https://grafana.com/docs/pyroscope/latest/configure-server/about-server-api/, the same as
//! Pyroscope 0.37's https://pyroscope.io/docs/server-api-reference/): the query holds `name`
//! (the service name with its labels, `checkout{env=prod,host=a}`), `from` and `until` (Unix
//! seconds), `format=pprof`, `sampleRate` and `spyName`; the body is `multipart/form-data`
//! with the gzipped profile in the field `profile`.
//!
//! Two threads, so that a slow or unreachable backend never holds up sampling:
//! - the *window* thread wakes after each window (plus the writer's flush interval, so the
//!   window's samples are on disk), reads what the sampler appended to the recording file
//!   since the last window, attributes the window as `memspy export --format pprof --from
//!   --to` would, and queues the profile;
//! - the *sender* thread posts queued profiles, retrying a failure three times with backoff.
//!   The queue holds a few windows; when it is full, a window is dropped and counted.
//!
//! Nothing here can lose the local recording: the pusher only reads it. A failure is one line
//! on stderr (the first, and every tenth after), never an exit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::analysis::{Filter, Metric};
use crate::output::pprof;
use crate::output::text::message;
use crate::recording::reader::LiveRecording;
use crate::recording::writer::FLUSH_INTERVAL_US;
use crate::recording::Recording;

/// Windows waiting to be sent, at most.
const QUEUE: usize = 4;
/// Tries per window, and the wait before the first retry (doubling).
const TRIES: u32 = 4;
const BACKOFF: Duration = Duration::from_millis(500);
/// One request, at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After the recording ends: how long the last windows may take to send.
const FINAL_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct PushConfig {
    /// The backend's base URL (`http://pyroscope:4040`); `/ingest` is added.
    pub url: String,
    pub every: Duration,
    /// The service name, and its labels (`--label k=v`).
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// The recording's files: one path, or a `%n` template of a rotated recording.
    pub template: PathBuf,
    pub rotated: bool,
    /// Delete parts of a rotated recording once their windows are sent (`-o none`).
    pub delete_parts: bool,
}

/// What the pusher did, for the summary line.
#[derive(Clone, Debug, Default)]
pub struct PushReport {
    pub sent: u64,
    pub dropped: u64,
    pub failed: u64,
    /// Windows with no samples (nothing to send).
    pub empty: u64,
}

pub struct Pusher {
    stop: Arc<AtomicBool>,
    windows: JoinHandle<()>,
    sender: JoinHandle<()>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Queued or being sent.
    pending: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    empty: AtomicU64,
}

/// A profile ready to send: its window in Unix seconds.
struct Window {
    from_s: u64,
    until_s: u64,
    body: Vec<u8>,
}

impl Pusher {
    /// Start pushing windows of the recording that began at `start_unix_ns` at `rate_hz`.
    pub fn start(config: PushConfig, start_unix_ns: u64, rate_hz: f64) -> Pusher {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let (tx, rx) = sync_channel::<Window>(QUEUE);
        let sender = {
            let (config, counts, stop) = (config.clone(), counts.clone(), stop.clone());
            std::thread::Builder::new()
                .name("memspy-push".into())
                .spawn(move || send_loop(&config, rate_hz, rx, &counts, &stop))
                .expect("start the push thread")
        };
        let windows = {
            let (counts, stop) = (counts.clone(), stop.clone());
            std::thread::Builder::new()
                .name("memspy-windows".into())
                .spawn(move || window_loop(&config, start_unix_ns, tx, &counts, &stop))
                .expect("start the window thread")
        };
        Pusher {
            stop,
            windows,
            sender,
            counts,
        }
    }

    /// The recording has ended (its file is complete): send the last windows, wait a little
    /// for them, and tell what was done.
    pub fn finish(self) -> PushReport {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.windows.join();
        let deadline = Instant::now() + FINAL_WAIT;
        while !self.sender.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let c = &self.counts;
        let mut report = PushReport {
            sent: c.sent.load(Ordering::SeqCst),
            dropped: c.dropped.load(Ordering::SeqCst),
            failed: c.failed.load(Ordering::SeqCst),
            empty: c.empty.load(Ordering::SeqCst),
        };
        if !self.sender.is_finished() {
            // Still trying a slow backend: what it holds and what waits is not sent.
            report.dropped += c.pending.load(Ordering::SeqCst);
        }
        report
    }
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The files of the recording that exist now, oldest first; `first`: the lowest part number
/// that may still exist (parts before it were deleted).
fn parts(config: &PushConfig, first: &mut u32) -> Vec<PathBuf> {
    if !config.rotated {
        return vec![config.template.clone()];
    }
    let mut out = Vec::new();
    let mut n = *first;
    loop {
        let path = crate::sample::part_path(&config.template, n);
        if !path.exists() {
            break;
        }
        out.push(path);
        n += 1;
    }
    out
}

fn window_loop(
    config: &PushConfig,
    start_unix_ns: u64,
    tx: SyncSender<Window>,
    counts: &Counts,
    stop: &AtomicBool,
) {
    // Windows end on whole multiples of the interval in Unix time (Pyroscope's `from` and
    // `until` are whole seconds): the first one is shorter.
    let every_s = config.every.as_secs().max(1);
    let start_us = start_unix_ns / 1000;
    let start_s = start_us / 1_000_000;
    let mut boundary_s = (start_s / every_s + 1) * every_s;
    // The writer hands records to the file at least once per flush interval.
    let lag_us = 2 * FLUSH_INTERVAL_US;
    // Recording time now, on a monotonic clock (a step of the wall clock moves no window).
    let (t0, base_us) = (
        Instant::now(),
        now_unix_ns().saturating_sub(start_unix_ns) / 1000,
    );
    let now_us = || base_us + t0.elapsed().as_micros() as u64;
    let mut from_us = 0u64;
    let mut from_s = start_s;
    let mut dropping = false;
    let mut first_part = 1u32;
    let mut stopped_at: Option<Instant> = None;
    // Each file, read as it grows (only what was appended is parsed at each window).
    let mut lives: std::collections::HashMap<PathBuf, LiveRecording> = Default::default();
    loop {
        let until_us = (boundary_s * 1_000_000).saturating_sub(start_us);
        // Wait for the window to be on disk, or for the end.
        let mut ended = false;
        let mut waited = 0;
        let files = loop {
            if stop.load(Ordering::SeqCst) {
                ended = true;
            }
            if ended || now_us() >= until_us + lag_us {
                let files = parts(config, &mut first_part);
                // The samples' clock starts a little after the recording's: the window is
                // complete once a sample after it is on disk (waiting at most 3 s more).
                let done = ended
                    || waited >= 15
                    || files
                        .last()
                        .and_then(|p| live(&mut lives, p).update())
                        .and_then(|r| r.samples.last().map(|s| s.time_us))
                        .is_some_and(|t| t >= until_us);
                if done {
                    break files;
                }
                waited += 1;
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if ended {
            // The last windows, for a bounded time.
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if since.elapsed() > FINAL_WAIT {
                return;
            }
        }
        let mut last_sample = 0;
        let mut in_window = false;
        for (i, path) in files.iter().enumerate() {
            let Some(rec) = live(&mut lives, path).update() else {
                continue;
            };
            last_sample = last_sample.max(rec.samples.last().map_or(0, |s| s.time_us));
            let Some(body) = window_profile(rec, from_us, until_us - 1) else {
                // The oldest part, ending before the window with a newer part after it, is
                // done with: it is not read again (and -o none deletes it).
                let done = i == 0
                    && i + 1 < files.len()
                    && rec.samples.last().is_none_or(|s| s.time_us < from_us);
                if done && (!config.delete_parts || std::fs::remove_file(path).is_ok()) {
                    first_part += 1;
                    lives.remove(path);
                }
                continue;
            };
            in_window = true;
            let window = Window {
                from_s,
                until_s: boundary_s,
                body,
            };
            match tx.try_send(window) {
                Ok(()) => {
                    counts.pending.fetch_add(1, Ordering::SeqCst);
                    dropping = false;
                }
                Err(TrySendError::Full(_)) => {
                    counts.dropped.fetch_add(1, Ordering::SeqCst);
                    if !dropping {
                        eprintln!(
                            "{}",
                            message(&format!(
                                "memspy: the push backend {} is too slow: windows are being dropped (sampling goes on)",
                                config.url
                            ))
                        );
                    }
                    dropping = true;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        if !in_window {
            counts.empty.fetch_add(1, Ordering::SeqCst);
        }
        from_us = until_us;
        from_s = boundary_s;
        boundary_s += every_s;
        if ended && from_us > last_sample {
            return;
        }
    }
}

/// The live reader of `path`, made on first use.
fn live<'a>(
    lives: &'a mut std::collections::HashMap<PathBuf, LiveRecording>,
    path: &Path,
) -> &'a mut LiveRecording {
    lives
        .entry(path.to_path_buf())
        .or_insert_with(|| LiveRecording::new(path))
}

/// The gzipped pprof profile of `[from_us, to_us]` of `rec` (every metric), if it has samples
/// there.
pub(crate) fn window_profile(rec: &Recording, from_us: u64, to_us: u64) -> Option<Vec<u8>> {
    if !rec
        .samples
        .iter()
        .any(|s| (from_us..=to_us).contains(&s.time_us))
    {
        return None;
    }
    let filter = Filter {
        window: Some((from_us, to_us)),
        ..Filter::default()
    };
    let profile = pprof::window(rec, &filter, pprof::Span { from_us, to_us }, &Metric::ALL);
    let mut body = Vec::new();
    pprof::write_gzipped(&profile, &mut body).ok()?;
    Some(body)
}

/// `service{k=v,k2=v2}`, as Pyroscope names a series.
pub fn series_name(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

fn send_loop(
    config: &PushConfig,
    rate_hz: f64,
    rx: Receiver<Window>,
    counts: &Counts,
    stop: &AtomicBool,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into();
    let url = format!("{}/ingest", config.url.trim_end_matches('/'));
    let name = series_name(&config.name, &config.labels);
    let boundary = format!("memspy-{:016x}", now_unix_ns());
    let mut failures = 0u64;
    while let Ok(w) = rx.recv() {
        let mut body = Vec::with_capacity(w.body.len() + 256);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&w.body);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut wait = BACKOFF;
        let mut outcome = Err(String::new());
        for attempt in 0..TRIES {
            if attempt > 0 {
                // At the end, retries wait no longer than the final wait allows.
                std::thread::sleep(if stop.load(Ordering::SeqCst) {
                    wait.min(Duration::from_millis(200))
                } else {
                    wait
                });
                wait *= 2;
            }
            let result = agent
                .post(&url)
                .query("name", &name)
                .query("from", w.from_s.to_string())
                .query("until", w.until_s.to_string())
                .query("format", "pprof")
                .query("sampleRate", format!("{}", rate_hz.round() as u64))
                .query("spyName", "memspy")
                .header(
                    "Content-Type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .send(&body[..]);
            outcome = result.map(|_| ()).map_err(|e| e.to_string());
            if outcome.is_ok() {
                break;
            }
        }
        counts.pending.fetch_sub(1, Ordering::SeqCst);
        match outcome {
            Ok(()) => {
                counts.sent.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                counts.failed.fetch_add(1, Ordering::SeqCst);
                failures += 1;
                if failures == 1 || failures % 10 == 0 {
                    eprintln!(
                        "{}",
                        message(&format!(
                            "memspy: push to {url} failed ({e}); {failures} window(s) not sent so far, recording goes on"
                        ))
                    );
                }
            }
        }
    }
}
