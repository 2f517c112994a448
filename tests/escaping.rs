//! A target that names its functions and files to attack the reader of its profile
//! (`fixtures/hostile_names.py`: markup, terminal escapes, C0 and C1 controls, DEL, bidi
//! overrides, Markdown breakers, a 10,000-character name), recorded for real, through every
//! output of the real binary:
//! - every SVG (flame of each metric, diff, plot) is well-formed XML without a character XML 1.0
//!   forbids, injects no markup, and still shows each name (made visible);
//! - terminal, CSV, Markdown, mprof and folded-stack outputs, and stderr, hold no raw control
//!   character and keep their structure (CSV fields, mprof fields, table cells);
//! - JSON outputs parse and hold the original names exactly.
mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{fixtures_dir, interpreter_from, memspy, memspy_bin};
use serde_json::Value;

/// The recording of the hostile target and its (name, file) pairs.
struct Hostile {
    _dir: tempfile::TempDir,
    rec: PathBuf,
    functions: Vec<(String, String)>,
}

fn hostile() -> &'static Hostile {
    static ONCE: OnceLock<Hostile> = OnceLock::new();
    ONCE.get_or_init(|| {
        let py = interpreter_from((3, 11));
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("hostile.msp");
        let names = dir.path().join("names.json");
        let out = std::process::Command::new(memspy_bin())
            .args(["record", "-r", "500", "-o"])
            .arg(&rec)
            .arg("--")
            .arg(&py.exe)
            .arg(fixtures_dir().join("hostile_names.py"))
            .arg(&names)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&names).unwrap()).unwrap();
        let functions = doc["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        Hostile {
            _dir: dir,
            rec,
            functions,
        }
    })
}

/// Run memspy; check its stderr is short visible lines; return (status, stdout).
fn run(args: &[&str]) -> (i32, Vec<u8>) {
    let out = memspy(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        raw_control(&stderr),
        None,
        "memspy {args:?} stderr: {stderr:?}"
    );
    for line in stderr.lines() {
        assert!(
            line.chars().count() <= 400,
            "memspy {args:?}: a stderr line of {} characters",
            line.chars().count()
        );
    }
    assert!(stderr.lines().count() <= 3, "memspy {args:?}: {stderr}");
    (out.status.code().unwrap_or(-1), out.stdout)
}

/// Run memspy, which must succeed; returns stdout.
fn run_ok(args: &[&str]) -> String {
    let (code, out) = run(args);
    assert_eq!(code, 0, "memspy {args:?}");
    String::from_utf8(out).unwrap()
}

/// Run a command that writes its output to a file (`OUT` in `args`); returns what it wrote.
fn run_to_file(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args: Vec<&str> = args
        .iter()
        .map(|a| {
            if *a == "OUT" {
                out.to_str().unwrap()
            } else {
                a
            }
        })
        .collect();
    run_ok(&args);
    std::fs::read_to_string(&out).unwrap()
}

/// The first character that must not reach a terminal or a text file raw: C0 controls but
/// the newline, DEL, C1 controls, bidi controls, line and paragraph separators.
fn raw_control(text: &str) -> Option<char> {
    text.chars().find(|&c| {
        (c.is_control() && c != '\n')
            || matches!(
                c,
                '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{61c}'
                    | '\u{2028}'
                    | '\u{2029}'
            )
    })
}

/// Whether XML 1.0 allows `c` in a document.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// Parse an SVG strictly; returns the text of every `<title>` (entities decoded).
fn svg_titles(what: &str, svg: &str) -> Vec<String> {
    if let Some(c) = svg.chars().find(|&c| !xml_char(c)) {
        panic!("{what}: the character {c:?} is not allowed in XML 1.0");
    }
    let mut reader = quick_xml::Reader::from_str(svg);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    let (mut titles, mut in_title, mut scripts) = (Vec::new(), false, 0);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) => {
                let name = e.name().as_ref().to_vec();
                if name == b"title" {
                    in_title = true;
                    titles.push(String::new());
                }
                if name == b"script" || name == b"img" || name == b"b" {
                    scripts += 1;
                }
                for a in e.attributes() {
                    let a = a.unwrap_or_else(|e| panic!("{what}: bad attribute: {e}"));
                    a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .unwrap_or_else(|e| panic!("{what}: bad attribute value: {e}"));
                }
            }
            Ok(quick_xml::events::Event::End(e)) if e.name().as_ref() == b"title" => {
                in_title = false
            }
            Ok(quick_xml::events::Event::Text(t)) => {
                let text = t
                    .decode()
                    .unwrap_or_else(|e| panic!("{what}: bad text: {e}"));
                if in_title {
                    titles.last_mut().unwrap().push_str(&text);
                }
            }
            Ok(quick_xml::events::Event::GeneralRef(r)) => {
                let entity = match r.decode().unwrap().as_ref() {
                    "lt" => "<".to_string(),
                    "gt" => ">".to_string(),
                    "amp" => "&".to_string(),
                    "quot" => "\"".to_string(),
                    "apos" => "'".to_string(),
                    other => match other.strip_prefix("#x").or(other.strip_prefix('#')) {
                        Some(_) => panic!("{what}: character reference &{other};"),
                        None => panic!("{what}: unknown entity &{other};"),
                    },
                };
                if in_title {
                    titles.last_mut().unwrap().push_str(&entity);
                }
            }
            Ok(quick_xml::events::Event::Eof) => break,
            Err(e) => panic!("{what} is not well-formed XML: {e}"),
            _ => {}
        }
    }
    // inferno's own script element is the only one; no name made an element.
    assert!(scripts <= 1, "{what}: {scripts} script/img/b elements");
    titles
}

/// How the text outputs show a name: made visible, whitespace runs as one space.
fn shown(name: &str) -> String {
    memspy::output::text::one_line(name, usize::MAX)
}

#[test]
fn every_svg_is_xml_and_shows_the_names() {
    let h = hostile();
    let rec = h.rec.to_str().unwrap();
    let mut svgs = Vec::new();
    for metric in ["wall", "cpu", "growth", "freed", "retained", "peak"] {
        svgs.push((
            format!("flame --metric {metric}"),
            run_to_file(&["flame", "-i", rec, "--metric", metric, "OUT"]),
        ));
    }
    svgs.push((
        "flame --function --merge-processes".into(),
        run_to_file(&["flame", "-i", rec, "--function", "--merge-processes", "OUT"]),
    ));
    svgs.push(("plot".into(), run_to_file(&["plot", "-i", rec, "OUT"])));
    svgs.push((
        "diff".into(),
        run_to_file(&["diff", rec, rec, "-o", "OUT", "--metric", "wall"]),
    ));
    for (what, svg) in &svgs {
        let titles = svg_titles(what, svg);
        assert!(
            !svg.contains("<script>alert") && !svg.contains("<img"),
            "{what}: markup injected"
        );
        if what.starts_with("flame --metric wall") || what.starts_with("diff") {
            // Each function is a node, its name made visible (`;` separates frames).
            for (name, _) in &h.functions {
                let label = memspy::output::text::visible(name).replace(';', ":");
                assert!(
                    titles.iter().any(|t| t.contains(&label)),
                    "{what}: no frame shows {label:?}"
                );
            }
        }
    }
    // The plot marks the function that allocated, by its visible name (cut at 60 characters).
    let (plot_what, plot) = &svgs[7];
    let grower = shown(&h.functions[2].0);
    assert!(
        plot.contains(&grower[..40]),
        "{plot_what}: {grower:?} is not marked"
    );
}

#[test]
fn text_outputs_hold_no_raw_control_character() {
    let h = hostile();
    let rec = h.rec.to_str().unwrap();
    let texts = [
        ("info", run_ok(&["info", rec])),
        ("lines", run_ok(&["lines", "-i", rec])),
        (
            "lines --metric growth",
            run_ok(&["lines", "-i", rec, "--metric", "growth"]),
        ),
        (
            "lines --function",
            run_ok(&["lines", "-i", rec, "--function", &h.functions[0].0]),
        ),
        ("diff", run_ok(&["diff", rec, rec, "--metric", "wall"])),
        (
            "check",
            String::from_utf8(
                run(&[
                    "check",
                    "-i",
                    rec,
                    "--baseline",
                    rec,
                    "--noise-floor",
                    "0",
                    "-v",
                ])
                .1,
            )
            .unwrap(),
        ),
        (
            "collapsed",
            run_to_file(&["export", "-i", rec, "-o", "OUT", "--format", "collapsed"]),
        ),
        (
            "mprof",
            run_to_file(&["export", "-i", rec, "-o", "OUT", "--format", "mprof"]),
        ),
    ];
    for (what, text) in &texts {
        assert_eq!(raw_control(text), None, "{what}: {text}");
    }
    // The names are there, visibly.
    let lines = &texts[1].1;
    for (name, _) in &h.functions {
        let visible: String = shown(name).chars().take(20).collect();
        assert!(
            lines.contains(&visible),
            "lines does not show {visible:?}:\n{lines}"
        );
    }
    assert!(lines.contains("red\\x1b[31mRED"), "{lines}");
    // Folded stacks: one stack and a count per line.
    for line in texts[6].1.lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap();
        assert!(
            count.parse::<u64>().is_ok() && !stack.is_empty(),
            "{line:?}"
        );
    }
    // mprof: every line splits into its fields (names have no spaces left).
    for line in texts[7].1.lines() {
        let fields = line.split(' ').count();
        match line.split(' ').next().unwrap() {
            "CMDLINE" => {}
            "MEM" => assert_eq!(fields, 3, "{line:?}"),
            "CHLD" => assert_eq!(fields, 4, "{line:?}"),
            "FUNC" => assert_eq!(fields, 7, "{line:?}"),
            other => panic!("mprof line {other:?}"),
        }
    }
    assert!(
        texts[7].1.contains("FUNC "),
        "no function marked:\n{}",
        texts[7].1
    );
}

/// The fields of one CSV record (quoted fields may hold commas and doubled quotes).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quote: {line:?}");
    fields.push(field);
    fields
}

#[test]
fn csv_keeps_one_record_per_line() {
    let h = hostile();
    let csv = run_ok(&["lines", "-i", h.rec.to_str().unwrap(), "--format", "csv"]);
    assert_eq!(raw_control(&csv), None);
    let mut lines = csv.lines();
    let header = csv_fields(lines.next().unwrap());
    assert_eq!(header.len(), 11);
    let mut functions = Vec::new();
    for line in lines {
        let fields = csv_fields(line);
        assert_eq!(fields.len(), 11, "{line:?}");
        functions.push(fields[2].clone());
    }
    for (name, _) in &h.functions {
        assert!(
            functions.contains(&memspy::output::text::visible(name).into_owned()),
            "CSV has no row of {name:?}"
        );
    }
}

#[test]
fn markdown_cells_cannot_be_broken_out_of() {
    let h = hostile();
    let rec = h.rec.to_str().unwrap();
    let (code, md) = run(&[
        "check",
        "-i",
        rec,
        "--baseline",
        rec,
        "--noise-floor",
        "0",
        "--format",
        "markdown",
    ]);
    assert_eq!(code, 0);
    let md = String::from_utf8(md).unwrap();
    assert_eq!(raw_control(&md), None, "{md}");
    assert!(!md.contains('<'), "HTML in the Markdown:\n{md}");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
    assert!(rows.len() > h.functions.len(), "{md}");
    for row in &rows {
        // Six cells: seven pipes that are not escaped; nothing else Markdown acts on.
        let mut pipes = 0;
        let mut chars = row.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '|' => pipes += 1,
                '`' | '[' | ']' | '*' | '_' => panic!("unescaped {c:?} in {row:?}"),
                _ => {}
            }
        }
        assert_eq!(pipes, 7, "{row:?}");
    }
    for (name, _) in &h.functions[..3] {
        let cell = memspy::output::text::markdown(name);
        assert!(
            md.contains(&cell[..cell.len().min(30)]),
            "no row for {name:?}:\n{md}"
        );
    }
}

/// Every string value of a JSON document.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[test]
fn json_keeps_the_names_exactly() {
    let h = hostile();
    let rec = h.rec.to_str().unwrap();
    let docs = [
        (
            "lines --format json",
            run_ok(&["lines", "-i", rec, "--format", "json"]),
        ),
        (
            "export json",
            run_to_file(&["export", "-i", rec, "-o", "OUT", "--format", "json"]),
        ),
        (
            "export speedscope",
            run_to_file(&["export", "-i", rec, "-o", "OUT", "--format", "speedscope"]),
        ),
    ];
    for (what, text) in &docs {
        let doc: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut all = Vec::new();
        strings(&doc, &mut all);
        for (name, file) in &h.functions {
            assert!(all.contains(name), "{what} lost {name:?}");
            assert!(all.contains(file), "{what} lost {file:?}");
        }
    }
    // check's JSON names the functions it compared, exactly.
    let (code, out) = run(&[
        "check",
        "-i",
        rec,
        "--baseline",
        rec,
        "--noise-floor",
        "0",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_slice(&out).unwrap();
    let checks: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for (name, file) in &h.functions {
        let label = format!("{name} ({file})");
        assert!(
            checks.iter().any(|c| c.ends_with(&label)),
            "check JSON lost {label:?}"
        );
    }
    let info: Value = serde_json::from_str(&run_ok(&["info", "--json", rec])).unwrap();
    assert_eq!(info["processes"].as_array().unwrap().len(), 1);
}

#[test]
fn error_lines_are_short_and_visible() {
    let dir = tempfile::tempdir().unwrap();
    // A file named with an escape sequence, which is no recording.
    let evil: PathBuf = dir.path().join("evil\x1b]0;pwned\x07\x1b[2J.msp");
    std::fs::write(&evil, b"garbage").unwrap();
    let (code, _) = run(&["info", evil.to_str().unwrap()]);
    assert_eq!(code, 2);
    let out = memspy(&["info", evil.to_str().unwrap()]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("evil\\x1b]0;pwned\\x07\\x1b[2J.msp"),
        "{stderr}"
    );
    // A description holding a 100 KB value: serde's error quotes it; the line stays short.
    let long = long_meta_recording(dir.path());
    let (code, _) = run(&["info", long.to_str().unwrap()]);
    assert_eq!(code, 2);
    // A FIFO is refused at once, in one line that says what it is.
    let fifo = dir.path().join("fifo.msp");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let started = std::time::Instant::now();
    let out = memspy(&["lines", "-i", fifo.to_str().unwrap()]);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("is a FIFO, not a recording"), "{stderr}");
}

/// A recording whose description's memspy_version is a 100,000-character number.
fn long_meta_recording(dir: &Path) -> PathBuf {
    let json = format!(r#"{{"memspy_version":{}}}"#, "1".repeat(100_000));
    let mut body = vec![memspy::recording::format::T_META];
    body.extend_from_slice(json.as_bytes());
    let mut file = memspy::recording::format::MAGIC.to_vec();
    file.extend_from_slice(&memspy::recording::format::VERSION.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file.extend_from_slice(&body);
    file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    let path = dir.join("long.msp");
    std::fs::write(&path, file).unwrap();
    path
}

/// `dump` of the live target: its frames, with their hostile names, shown visible and never
/// raw, in the text output; the JSON output keeps them exactly.
#[test]
fn dump_shows_a_live_targets_names_visibly() {
    let py = interpreter_from((3, 11));
    let dir = tempfile::tempdir().unwrap();
    let names = dir.path().join("names.json");
    let mut target = std::process::Command::new(&py.exe)
        .arg(fixtures_dir().join("hostile_names.py"))
        .arg(&names)
        .env("HOSTILE_FOREVER", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = target.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // The fixture writes the names first, then starts its hostile functions.
    while !names.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the fixture never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut caught = 0;
    while caught < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no hostile frame caught by dump in 30 s"
        );
        let (code, out) = run(&["dump", "--pid", &pid]);
        if code != 0 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        let text = String::from_utf8(out).unwrap();
        if let Some(c) = raw_control(&text) {
            panic!("dump printed a raw {c:?}:\n{text}");
        }
        if text.contains("<script>") || text.contains("\\x1b[31m") || text.contains("long_xxx") {
            caught += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (code, out) = run(&["dump", "--pid", &pid, "--json"]);
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_slice(&out).unwrap();
    let mut found = Vec::new();
    strings(&doc, &mut found);
    let hostile: Vec<String> =
        serde_json::from_str::<Value>(&std::fs::read_to_string(&names).unwrap()).unwrap()
            ["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_str().unwrap().to_string())
            .collect();
    // Every thread's frames are hostile functions or the fixture's own: at least the file of
    // the one running is there, exactly.
    assert!(
        found.iter().any(|s| hostile.contains(s))
            || found.iter().any(|s| s.ends_with("hostile_names.py")),
        "{doc}"
    );
    let _ = target.kill();
    let _ = target.wait();
}
