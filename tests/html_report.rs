//! `memspy report`: the HTML report of real recordings, loaded in Debian's Chromium (provisioned
//! by scripts/provision-chromium.sh) and driven over the DevTools protocol as a person would
//! use it: no console errors, the names and numbers in the rendered page, a window dragged on
//! the chart and a process picked change the flamegraph, a click on a frame shows its lines.
//! Screenshots go to target/tmp/report-screenshots/ for a person to look at.
//!
//! The attribution over time the page adds up is checked against `memspy lines` (whole
//! recording, every metric) and against the attribution of a window.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::{Emulation, Input, Page as Cdp, Runtime};
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;

use common::{fixtures_dir, interpreter_from, lines_total, memspy_bin, record_workers};

/// A runnable Chromium (scripts/provision-chromium.sh).
fn chromium() -> PathBuf {
    common::provisioned("MEMSPY_CHROMIUM", "provision-chromium.sh")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A report loaded in a browser tab, with the errors the page raised.
struct Page {
    _browser: Browser,
    tab: Arc<Tab>,
    errors: Arc<Mutex<Vec<String>>>,
    width: u32,
}

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 1000;

impl Page {
    fn open(html: &Path) -> Page {
        let browser = Browser::new(LaunchOptions {
            path: Some(chromium()),
            headless: true,
            // Tests run as root, where Chromium's sandbox cannot start.
            sandbox: false,
            window_size: Some((WIDTH, HEIGHT)),
            args: vec![OsStr::new("--hide-scrollbars")],
            idle_browser_timeout: Duration::from_secs(120),
            ..LaunchOptions::default()
        })
        .expect("launch chromium");
        let tab = browser.new_tab().unwrap();
        let page = Page {
            _browser: browser,
            tab,
            errors: Arc::default(),
            width: WIDTH,
        };
        page.viewport(HEIGHT);
        // Listen before navigating, so errors raised while the page loads are seen.
        let sink = page.errors.clone();
        page.tab.enable_runtime().unwrap();
        page.tab.enable_log().unwrap();
        page.tab
            .add_event_listener(Arc::new(move |event: &Event| {
                let message = match event {
                    Event::RuntimeConsoleAPICalled(e)
                        if matches!(
                            e.params.Type,
                            Runtime::ConsoleAPICalledEventTypeOption::Error
                                | Runtime::ConsoleAPICalledEventTypeOption::Warning
                        ) =>
                    {
                        let args: Vec<String> = e
                            .params
                            .args
                            .iter()
                            .map(|a| {
                                a.value.as_ref().map_or_else(
                                    || format!("{:?}", a.description),
                                    |v| v.to_string(),
                                )
                            })
                            .collect();
                        format!("console: {}", args.join(" "))
                    }
                    Event::RuntimeExceptionThrown(e) => {
                        let d = &e.params.exception_details;
                        let what = d
                            .exception
                            .as_ref()
                            .and_then(|x| x.description.clone())
                            .unwrap_or_default();
                        format!(
                            "exception: {} {what} at {}:{}",
                            d.text, d.line_number, d.column_number
                        )
                    }
                    // Failed loads, CSP violations and other browser-side errors.
                    Event::LogEntryAdded(e) => {
                        format!("log {:?}: {}", e.params.entry.level, e.params.entry.text)
                    }
                    _ => return,
                };
                sink.lock().unwrap().push(message);
            }))
            .unwrap();
        page.tab
            .navigate_to(&format!("file://{}", html.display()))
            .unwrap()
            .wait_until_navigated()
            .unwrap();
        page.wait("document.body.dataset.ready === '1'");
        page
    }

    fn viewport(&self, height: u32) {
        self.tab
            .call_method(Emulation::SetDeviceMetricsOverride {
                width: self.width,
                height,
                device_scale_factor: 1.0,
                mobile: false,
                scale: None,
                screen_width: None,
                screen_height: None,
                position_x: None,
                position_y: None,
                dont_set_visible_size: None,
                screen_orientation: None,
                viewport: None,
                display_feature: None,
                device_posture: None,
            })
            .unwrap();
    }

    /// The value of a JavaScript expression.
    fn eval(&self, expr: &str) -> Value {
        let r = self
            .tab
            .call_method(Runtime::Evaluate {
                expression: expr.into(),
                return_by_value: Some(true),
                await_promise: Some(true),
                object_group: None,
                include_command_line_api: None,
                silent: None,
                context_id: None,
                generate_preview: None,
                user_gesture: None,
                throw_on_side_effect: None,
                timeout: None,
                disable_breaks: None,
                repl_mode: None,
                allow_unsafe_eval_blocked_by_csp: None,
                unique_context_id: None,
                serialization_options: None,
            })
            .unwrap();
        if let Some(e) = r.exception_details {
            panic!(
                "{expr}: {} {:?}",
                e.text,
                e.exception.and_then(|x| x.description)
            );
        }
        r.result.value.unwrap_or(Value::Null)
    }

    fn number(&self, expr: &str) -> f64 {
        let v = self.eval(expr);
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("{expr} is not a number: {v}"))
    }

    fn text(&self, expr: &str) -> String {
        match self.eval(expr) {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    fn wait(&self, expr: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval(&format!("!!({expr})")) != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "the page never got to {expr}; errors: {:?}",
                self.errors()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn mouse(&self, kind: Input::DispatchMouseEventTypeOption, x: f64, y: f64, buttons: u32) {
        let button = match (&kind, buttons) {
            (Input::DispatchMouseEventTypeOption::MouseMoved, 0) => Input::MouseButton::None,
            _ => Input::MouseButton::Left,
        };
        self.tab
            .call_method(Input::DispatchMouseEvent {
                Type: kind,
                x,
                y,
                modifiers: None,
                timestamp: None,
                button: Some(button),
                buttons: Some(buttons),
                click_count: Some(1),
                force: None,
                tangential_pressure: None,
                tilt_x: None,
                tilt_y: None,
                twist: None,
                delta_x: None,
                delta_y: None,
                pointer_Type: None,
            })
            .unwrap();
    }

    /// Drag across the memory chart from one share of its time axis to another.
    fn drag_chart(&self, from: f64, to: f64) {
        self.eval("document.getElementById('chart-svg').scrollIntoView({block: 'center'})");
        let r = self.eval(
            "(() => { const r = document.getElementById('chart-svg').getBoundingClientRect(); \
             return [r.left, r.top, r.width, r.height]; })()",
        );
        let r: Vec<f64> = r
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        // The plot area: 70 px of axis labels on the left, 16 px of margin on the right.
        let x = |share: f64| r[0] + 70.0 + share * (r[2] - 86.0);
        let y = r[1] + r[3] / 2.0;
        use Input::DispatchMouseEventTypeOption::*;
        self.mouse(MouseMoved, x(from), y, 0);
        self.mouse(MousePressed, x(from), y, 1);
        for step in 1..=8 {
            let share = from + (to - from) * f64::from(step) / 8.0;
            self.mouse(MouseMoved, x(share), y, 1);
        }
        self.mouse(MouseReleased, x(to), y, 0);
    }

    /// Click the flamegraph frame whose tooltip starts with `name`.
    fn click_frame(&self, name: &str) {
        let r = self.eval(&format!(
            "(() => {{ for (const g of document.querySelectorAll('#flame g')) {{ \
               const t = g.querySelector('title'); \
               if (t && t.textContent.startsWith({name:?})) {{ \
                 g.scrollIntoView({{block: 'center'}}); \
                 const r = g.querySelector('rect').getBoundingClientRect(); \
                 return [r.left + r.width / 2, r.top + r.height / 2]; }} }} \
               return null; }})()"
        ));
        let point = r
            .as_array()
            .unwrap_or_else(|| panic!("no frame {name} drawn"));
        let (x, y) = (point[0].as_f64().unwrap(), point[1].as_f64().unwrap());
        use Input::DispatchMouseEventTypeOption::*;
        self.mouse(MouseMoved, x, y, 0);
        self.mouse(MousePressed, x, y, 1);
        self.mouse(MouseReleased, x, y, 0);
    }

    /// Write the whole page as a PNG.
    fn screenshot(&self, name: &str) -> PathBuf {
        let height = self.number("document.documentElement.scrollHeight") as u32;
        self.viewport(height.clamp(HEIGHT, 6000));
        let png = self
            .tab
            .capture_screenshot(Cdp::CaptureScreenshotFormatOption::Png, None, None, true)
            .unwrap();
        self.viewport(HEIGHT);
        assert!(png.starts_with(b"\x89PNG"));
        let path = screenshots().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// No console error, warning or exception, once the last events have arrived.
    fn assert_no_errors(&self) {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(self.errors(), Vec::<String>::new());
    }

    /// What the page draws as text.
    fn flame_text(&self) -> String {
        self.text("document.getElementById('flame').textContent")
    }

    fn flame_total(&self) -> f64 {
        self.number("document.getElementById('flame').dataset.total")
    }

    fn set_metric(&self, metric: &str) {
        self.eval(&format!(
            "document.querySelector('#metrics [data-metric={metric}]').click()"
        ));
        self.wait(&format!(
            "document.getElementById('flame').dataset.metric === '{metric}'"
        ));
    }

    fn set_process(&self, value: &str) {
        self.eval(&format!(
            "(() => {{ const s = document.getElementById('process'); s.value = {value:?}; \
             s.dispatchEvent(new Event('change')); }})()"
        ));
        self.wait(&format!(
            "document.getElementById('flame').dataset.process === {value:?}"
        ));
    }
}

fn memspy(args: &[&str]) -> std::process::Output {
    Command::new(memspy_bin()).args(args).output().unwrap()
}

/// `memspy report -i rec -o page`, checked for the self-contained page it must be.
fn report(rec: &Path, page: &Path) -> String {
    let out = memspy(&[
        "report",
        "-i",
        rec.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("memspy: wrote"));
    let html = std::fs::read_to_string(page).unwrap();
    assert!(html.len() < 2 << 20, "{} bytes", html.len());
    // Nothing from the network: no external script, style, image or font.
    for external in ["<script src", "<link", "@import", "url(", "<img", "<iframe"] {
        assert!(!html.contains(external), "the page has {external}");
    }
    html
}

fn assert_close(what: &str, page: f64, expected: f64, slack: f64) {
    assert!(
        (page - expected).abs() <= slack + expected.abs() * 1e-3,
        "{what}: the page says {page}, memspy lines {expected}"
    );
}

const MIB: f64 = 1024.0 * 1024.0;

/// One process: leak.py keeps 24 MiB in Cache.fill, burns CPU in work, churns 20 MiB.
#[test]
fn html_report_of_one_process() {
    let py = interpreter_from((3, 12));
    let dir = tempfile::tempdir().unwrap();
    let rec = common::record_leak(&py, dir.path(), "leak.msp", 24);
    let html = dir.path().join("leak.html");
    report(&rec, &html);
    let page = Page::open(&html);

    // The summary: names and numbers, and the findings in words.
    let info: Value =
        serde_json::from_slice(&memspy(&["info", "-i", rec.to_str().unwrap(), "--json"]).stdout)
            .unwrap();
    let body = page.text("document.body.innerText");
    let samples = info["samples"].as_u64().unwrap();
    assert!(body.contains(&format!("samples: {samples}")), "{body}");
    assert!(body.contains("the program"), "{body}");
    let findings = page.text("document.getElementById('findings').innerText");
    assert!(
        findings.contains("retained")
            && findings.contains("Cache.fill")
            && findings.contains("leak.py:"),
        "{findings}"
    );
    assert!(findings.contains("work"), "{findings}");
    // The leak, nearly all the memory held at the end, comes first.
    assert!(
        findings.lines().next().unwrap_or("").contains("retained"),
        "{findings}"
    );
    page.screenshot("one-process-wall");

    // Every metric of the whole recording adds up to what `memspy lines` says.
    for metric in ["wall", "cpu", "growth", "freed", "retained"] {
        page.set_metric(metric);
        let total = page.number(&format!("memspyReport.total('{metric}')"));
        let slack = if metric == "wall" || metric == "cpu" {
            1e3
        } else {
            64.0 * 1024.0
        };
        assert_close(metric, total, lines_total(&rec, metric, &[]), slack);
    }
    // Retained memory: Cache.fill's 24 MiB, drawn.
    page.set_metric("retained");
    let retained = page.flame_total();
    assert!((22.0 * MIB..30.0 * MIB).contains(&retained), "{retained}");
    assert!(page.flame_text().contains("Cache.fill"));

    // A click on Cache.fill: its lines, with the source, the allocating line's growth.
    page.click_frame("Cache.fill");
    page.wait("document.getElementById('lines-title').textContent === 'Lines of Cache.fill'");
    let fill_line = std::fs::read_to_string(fixtures_dir().join("leak.py"))
        .unwrap()
        .lines()
        .position(|l| l.contains("# @fill"))
        .unwrap()
        + 1;
    let row = page.text(&format!(
        "document.querySelector('#line-table tr[data-line=\"{fill_line}\"]').innerText"
    ));
    assert!(
        row.contains("os.urandom(1 << 20)") && row.contains("MiB"),
        "{row}"
    );
    // Every line of the function, sampled or not: from `def fill` to its last line.
    let rows = page.number("document.querySelectorAll('#line-table tr[data-line]').length");
    assert!(rows >= 3.0, "{rows} lines");
    assert!(page
        .text("document.getElementById('line-table').innerText")
        .contains("def fill(self, mib):"));
    page.screenshot("one-process-retained-fill");

    // Search marks the matching frames.
    page.eval("document.getElementById('flame').scrollIntoView()");
    page.eval("(() => { const s = document.getElementById('search'); s.value = 'urandom fill'; s.value = 'fill'; s.dispatchEvent(new Event('input')); })()");
    page.wait("document.querySelectorAll('#flame rect.match').length > 0");
    assert!(page
        .text("document.getElementById('flame-info').textContent")
        .contains("search matches"));
    page.eval("(() => { const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input')); })()");
    page.wait("document.querySelectorAll('#flame rect.match').length === 0");

    // A window dragged over the start (before the cache fills): no Cache.fill growth there,
    // and what the page shows is what `memspy lines --from --to` says of about that window.
    page.set_metric("growth");
    let whole_growth = page.flame_total();
    let whole_wall = page.number("memspyReport.total('wall')");
    page.drag_chart(0.0, 0.3);
    page.wait("document.getElementById('window-label').textContent.startsWith('Window')");
    let window: Vec<u64> = page
        .eval("memspyReport.state.window")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let buckets = page.number("memspyReport.buckets");
    assert!(
        window[0] == 0 && (window[1] as f64) < buckets * 0.35,
        "{window:?} of {buckets}"
    );
    assert!(page.flame_total() < whole_growth);
    assert!(
        !page.flame_text().contains("Cache.fill"),
        "{}",
        page.flame_text()
    );
    let wall = page.number("memspyReport.total('wall')");
    assert!(
        wall < whole_wall * 0.45 && wall > whole_wall * 0.15,
        "{wall} of {whole_wall}"
    );
    page.screenshot("one-process-window-start");
    // The end: the cache fills there.
    page.drag_chart(0.6, 1.0);
    page.wait(&format!("memspyReport.state.window[0] > {}", window[1]));
    assert!(page.flame_text().contains("Cache.fill"));
    // Back to the whole recording.
    page.eval("document.getElementById('whole').click()");
    page.wait("document.getElementById('window-label').textContent.startsWith('Whole')");
    assert_close("growth", page.flame_total(), whole_growth, 1.0);

    page.assert_no_errors();
}

/// A pre-fork server: a master and workers that each grow their own amount; the process
/// selector and the window change what the flamegraph shows.
#[test]
fn html_report_of_workers() {
    let py = interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    let rec = record_workers(&py, dir.path(), "workers.msp");
    let html = dir.path().join("workers.html");
    report(&rec, &html);
    let page = Page::open(&html);
    let processes = page
        .number("JSON.parse(document.getElementById('memspy-data').textContent).processes.length")
        as usize;
    assert!(processes >= 4, "{processes} processes");
    // Roles: the master and its workers, in the table and the chart's legend.
    let legend = page.text("document.getElementById('legend').innerText");
    assert!(
        legend.contains("master (pid")
            && legend.contains("worker 1 (pid")
            && legend.contains("worker 3 (pid"),
        "{legend}"
    );
    let table = page.text("document.getElementById('processes').innerText");
    assert!(
        table.contains("launched") && table.contains("worker 2 of"),
        "{table}"
    );
    page.screenshot("workers-wall");

    // Growth: each worker's own, adding up to the merged view.
    page.set_metric("growth");
    let merged = page.flame_total();
    let mut each = Vec::new();
    for p in 0..processes {
        page.set_process(&p.to_string());
        each.push(page.flame_total());
        // The chart shows the chosen one; the others are dimmed in the legend.
        let dimmed = page.number("document.querySelectorAll('#legend span.dim').length") as usize;
        assert_eq!(dimmed, processes - 1);
    }
    let sum: f64 = each.iter().sum();
    assert_close("growth of the processes", sum, merged, 1.0);
    let (least, most) = each
        .iter()
        .filter(|v| **v > MIB)
        .fold((f64::MAX, 0.0f64), |(a, b), v| (a.min(*v), b.max(*v)));
    assert!(most - least > 5.0 * MIB, "{each:?}");
    // Side by side: one tree per process, named.
    page.set_process("each");
    let text = page.flame_text();
    assert!(
        text.contains("worker 1 (pid") || text.contains("worker 1"),
        "{text}"
    );
    page.screenshot("workers-growth-each");

    // The biggest worker, then a window of the first quarter: less of its growth there.
    let biggest = each
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    page.set_process(&biggest.to_string());
    let whole = page.flame_total();
    page.drag_chart(0.0, 0.25);
    page.wait("document.getElementById('window-label').textContent.startsWith('Window')");
    let early = page.flame_total();
    assert!(early < whole, "{early} of {whole}");
    page.screenshot("workers-window");

    page.assert_no_errors();
}

/// Bad input: no recording, an empty window; a one-line error and exit 2.
#[test]
fn report_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(memspy_bin())
        .arg("report")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no recording") && err.lines().count() == 1,
        "{err}"
    );
    let out = memspy(&["report", "-i", "/nonexistent.msp"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// The attribution over time the page adds up: its whole-recording sums are the attribution's,
/// key by key, for every metric, with buckets of any length; a window's retained memory is
/// the window's growth minus its frees, and close to what the attribution of that window says.
#[test]
fn timeline_adds_up_to_the_attribution() {
    use memspy::analysis::timeline::{self, Timeline};
    use memspy::analysis::{attribute, attribute_over_time, Filter, Metric};
    use memspy::recording::Recording;
    let py = interpreter_from((3, 12));
    let dir = tempfile::tempdir().unwrap();
    let path = record_workers(&py, dir.path(), "workers.msp");
    let rec = Recording::open(&path).unwrap();
    let (first, last) = (rec.samples[0].time_us, rec.samples.last().unwrap().time_us);
    let mut tl = Timeline::new(first, last, 400);
    let attr = attribute_over_time(&rec, &Filter::default(), Some(&mut tl));
    // Chunks split at bucket boundaries: the same sums, added in another order.
    let plain = attribute(&rec, &Filter::default());
    assert_eq!(attr.retained.len(), plain.retained.len());
    for (key, v) in &plain.retained {
        let got = attr.retained[key];
        assert!(
            (got - v).abs() <= 1e-6 * v.abs(),
            "keeping a timeline changed {key:?}: {got} vs {v}"
        );
    }
    for factor in [1, 3, 8] {
        tl.coarsen(factor);
        for (column, metric) in [
            (timeline::WALL, Metric::Wall),
            (timeline::CPU, Metric::Cpu),
            (timeline::GROWTH, Metric::Growth),
            (timeline::FREED, Metric::Freed),
        ] {
            let mut sums = std::collections::HashMap::new();
            for ((_, key), v) in &tl.cells {
                *sums.entry(*key).or_insert(0.0) += v[column];
            }
            for (key, v) in attr.values(metric) {
                let got = sums.get(key).copied().unwrap_or(0.0);
                assert!(
                    (got - v).abs() <= 1e-6 * v.abs() + 1e-3,
                    "{metric:?} {key:?}: {got} vs {v}"
                );
            }
        }
        let retained = tl.retained(0, tl.buckets - 1);
        for (key, v) in &attr.retained {
            let got = retained.get(key).copied().unwrap_or(0.0);
            assert!(
                (got - v).abs() <= 1e-6 * v.abs() + 1.0,
                "retained {key:?}: {got} vs {v}"
            );
        }
    }
    // Windows: retained = growth - freed, and near the attribution of the same window (which
    // takes the window's first reading as its baseline: one reading's change apart).
    let b = tl.buckets;
    for (from, to) in [(0, b / 3), (b / 4, b / 2), (b / 2, b - 1)] {
        let retained: f64 = tl.retained(from, to).values().sum();
        let (mut growth, mut freed) = (0.0, 0.0);
        for ((at, _), v) in &tl.cells {
            if (from..=to).contains(at) {
                growth += v[timeline::GROWTH];
                freed += v[timeline::FREED];
            }
        }
        assert!(
            (retained - (growth - freed)).abs() < 1.0,
            "{retained} vs {growth} - {freed}"
        );
        let window = Filter {
            window: Some((
                tl.start_us + u64::from(from) * tl.bucket_us,
                tl.start_us + u64::from(to + 1) * tl.bucket_us - 1,
            )),
            ..Filter::default()
        };
        let exact = attribute(&rec, &window);
        let exact_growth = exact.total(Metric::Growth);
        assert!(
            (growth - exact_growth).abs() <= 4.0 * MIB + 0.05 * exact_growth,
            "window {from}..={to}: growth {growth} vs {exact_growth}"
        );
    }
}

/// A target whose function and file names are markup, controls and bidi overrides: the page
/// shows each name exactly, as text, and runs no script or markup of the target's.
#[test]
fn html_report_of_hostile_names() {
    let py = interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("hostile.msp");
    let names = dir.path().join("names.json");
    let out = Command::new(memspy_bin())
        .args(["record", "-r", "500", "-o", rec.to_str().unwrap(), "--"])
        .arg(&py.exe)
        .arg(fixtures_dir().join("hostile_names.py"))
        .arg(&names)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let functions: Value = serde_json::from_str(&std::fs::read_to_string(&names).unwrap()).unwrap();
    let html_path = dir.path().join("hostile.html");
    let html = report(&rec, &html_path);
    assert!(
        !html.contains("<script>alert"),
        "a name went into the page as markup"
    );
    let page = Page::open(&html_path);
    page.set_metric("cpu");
    // Only the page's own two scripts, no element of a name's markup.
    assert_eq!(page.number("document.scripts.length"), 2.0);
    assert_eq!(
        page.number("document.querySelectorAll('img, iframe, #flame b, #findings b').length"),
        0.0
    );
    let titles: Vec<String> = serde_json::from_value(
        page.eval("[...document.querySelectorAll('#flame title')].map((t) => t.textContent)"),
    )
    .unwrap();
    for pair in functions["functions"].as_array().unwrap() {
        let name = pair[0].as_str().unwrap();
        assert!(
            titles.iter().any(|t| t.starts_with(name)),
            "{name:?} is not shown as it is"
        );
    }
    page.screenshot("hostile-names");
    page.assert_no_errors();
}

/// `memspy report` with no arguments reads the newest recording here and writes
/// memspy-report.html beside it; `--open` hands the page to $BROWSER.
#[test]
fn report_defaults_and_open() {
    let py = interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(memspy_bin())
        .args(["record", "-o", "run.msp", "--"])
        .arg(&py.exe)
        .args([
            "-c",
            "import time\nt = time.time()\nwhile time.time() - t < 0.3: pass",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opened = dir.path().join("opened");
    let browser = dir.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\necho \"$1\" > {}\n", opened.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &browser,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new(memspy_bin())
        .args(["report", "--open"])
        .env("BROWSER", &browser)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(dir.path().join("memspy-report.html")).unwrap();
    assert!(html.contains("run.msp"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !opened.exists() {
        assert!(Instant::now() < deadline, "the browser was not started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        std::fs::read_to_string(&opened).unwrap().trim(),
        "memspy-report.html"
    );
    // No opener at all: the page is written, a note says to open it by hand.
    let out = Command::new(memspy_bin())
        .args(["report", "--open", "-o", "again.html"])
        .env("BROWSER", "/nonexistent/browser")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("open again.html yourself"));
}
