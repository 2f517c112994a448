//! `record --serve ADDR`: the recording's pprof profiles over HTTP, for backends and tools
//! that pull (Parca's scrape configs, Pyroscope's pull mode, `go tool pprof URL`).
//!
//! `GET /debug/pprof/profile?seconds=N` (the path Go's net/http/pprof serves CPU profiles at,
//! which pullers ask for by default) waits N seconds (default 30, at most 600) and answers
//! with the gzipped pprof profile of those seconds, every metric a sample type, as
//! `memspy export --format pprof --from --to` would write it; `/debug/pprof/memspy` is the same.
//! The server only reads the recording file the sampler writes (what was appended since the
//! last request, see [`LiveRecording`]); it answers at most 8 requests
//! at a time, reads at most 8 KiB of a request, and listens where it is told (memspy says so
//! when that is not a loopback address: profiles name the target's functions and files).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::sync::Mutex;

use crate::output::push::window_profile;
use crate::recording::reader::LiveRecording;

/// The file being read, as it grows (shared by the requests: each parses what was appended).
type Live = Mutex<Option<(PathBuf, LiveRecording)>>;

/// At most this many requests at once.
const MAX_REQUESTS: usize = 8;
const DEFAULT_SECONDS: u64 = 30;
const MAX_SECONDS: u64 = 600;

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// The recording: one file, or the `%n` template of a rotated one.
    pub template: PathBuf,
    pub rotated: bool,
}

pub struct Server {
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
    pub addr: SocketAddr,
}

impl Server {
    /// Listen (an address that cannot be bound is an error now, before recording starts).
    pub fn start(config: ServeConfig) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        let live: Arc<Live> = Arc::default();
        let accept = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("memspy-serve".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                let (config, stop, busy, live) =
                                    (config.clone(), stop.clone(), busy.clone(), live.clone());
                                if busy.fetch_add(1, Ordering::SeqCst) >= MAX_REQUESTS {
                                    busy.fetch_sub(1, Ordering::SeqCst);
                                    let _ = answer(
                                        stream,
                                        "503 Service Unavailable",
                                        "text/plain",
                                        b"busy\n",
                                    );
                                    continue;
                                }
                                std::thread::spawn(move || {
                                    handle(stream, &config, &stop, &live);
                                    busy.fetch_sub(1, Ordering::SeqCst);
                                });
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(50)),
                        }
                    }
                })?
        };
        Ok(Server { stop, accept, addr })
    }

    /// The recording ended: answer what waits with what there is, stop listening.
    pub fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.accept.join();
        // Requests in flight notice the stop within 50 ms and answer; give them a moment.
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn answer(mut stream: TcpStream, status: &str, kind: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn handle(mut stream: TcpStream, config: &ServeConfig, stop: &AtomicBool, live: &Live) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&request);
    let target = line
        .lines()
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    match path {
        "/debug/pprof/profile" | "/debug/pprof/memspy" => {}
        "/" | "/debug/pprof" | "/debug/pprof/" => {
            let _ = answer(
                stream,
                "200 OK",
                "text/plain; charset=utf-8",
                b"memspy: GET /debug/pprof/profile?seconds=N for the pprof profile of the next N seconds\n",
            );
            return;
        }
        _ => {
            let _ = answer(stream, "404 Not Found", "text/plain", b"not found\n");
            return;
        }
    }
    let seconds = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("seconds="))
        .map_or(Some(DEFAULT_SECONDS), |v| v.parse::<u64>().ok());
    let Some(seconds) = seconds.filter(|s| (1..=MAX_SECONDS).contains(s)) else {
        let _ = answer(
            stream,
            "400 Bad Request",
            "text/plain",
            b"seconds must be 1 to 600\n",
        );
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // What the sampler wrote last reaches the file within its flush interval.
    std::thread::sleep(Duration::from_millis(400));
    let path = crate::sample::newest_part(&config.template, config.rotated);
    let body = {
        let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
        // A new part of a rotated recording: read it from its start.
        if live.as_ref().is_none_or(|(p, _)| *p != path) {
            *live = Some((path.clone(), LiveRecording::new(&path)));
        }
        live.as_mut().and_then(|(_, l)| l.update()).and_then(|rec| {
            let end = rec.samples.last()?.time_us;
            window_profile(rec, end.saturating_sub(seconds * 1_000_000), end)
        })
    };
    let _ = match body {
        Some(b) => answer(stream, "200 OK", "application/octet-stream", &b),
        None => answer(
            stream,
            "503 Service Unavailable",
            "text/plain",
            b"no samples yet\n",
        ),
    };
}
