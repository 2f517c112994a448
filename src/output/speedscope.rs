//! speedscope's JSON file format (<https://www.speedscope.app>), for its web viewer.
//!
//! The format follows speedscope's own schema, `https://www.speedscope.app/file-format-schema.json`,
//! as shipped in the npm package `speedscope` 1.25.0 (`dist/release/file-format-schema.json`; a
//! copy is in `tests/data/`): a `shared.frames` table and a list of `sampled` profiles whose
//! samples are lists of frame indices (outermost first) with one weight each.
//!
//! memspy writes three profiles per process: wall time and CPU time (microseconds) and memory
//! growth (bytes), each with one sample per distinct stack weighted by what the attribution gave
//! it (speedscope adds up the weights of equal stacks). Samples are sorted by their frames'
//! names, so the "time order" view reads like a flamegraph.

use std::collections::HashMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::analysis::{Attribution, Metric, Naming, Site};
use crate::recording::Recording;

/// The `$schema` value speedscope requires.
pub const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

/// The metrics exported, one profile each per process, with speedscope's unit for them.
pub const PROFILES: [(Metric, &str); 3] = [
    (Metric::Wall, "microseconds"),
    (Metric::Cpu, "microseconds"),
    (Metric::Growth, "bytes"),
];

#[derive(Serialize)]
struct File {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared,
    profiles: Vec<Profile>,
    name: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    exporter: String,
}

#[derive(Serialize)]
struct Shared {
    frames: Vec<Frame>,
}

#[derive(Serialize)]
struct Frame {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<i32>,
}

#[derive(Serialize)]
struct Profile {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: f64,
    #[serde(rename = "endValue")]
    end_value: f64,
    samples: Vec<Vec<usize>>,
    weights: Vec<f64>,
}

/// What identifies a frame of the shared table.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum FrameKey {
    /// A function, at a line unless frames are named by function only.
    Code { function: u32, line: Option<i32> },
    /// A site that is not a Python stack (`[no Python frames]`, ...).
    Pseudo(Site),
}

/// The shared frame table, built as frames are first used.
struct Frames<'a> {
    rec: &'a Recording,
    naming: Naming,
    index: HashMap<FrameKey, usize>,
    frames: Vec<Frame>,
}

impl Frames<'_> {
    fn get(&mut self, key: FrameKey) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let rec = self.rec;
        let frame = match key {
            FrameKey::Code { function, line } => {
                let f = &rec.functions[function as usize];
                Frame {
                    name: rec.string(f.qualname).to_string(),
                    file: Some(rec.string(f.file).to_string()),
                    line,
                }
            }
            FrameKey::Pseudo(site) => Frame {
                name: site.pseudo_label().unwrap_or("?").into(),
                file: None,
                line: None,
            },
        };
        let i = self.frames.len();
        self.frames.push(frame);
        self.index.insert(key, i);
        i
    }

    /// Frame indices of a site, outermost first.
    fn stack(&mut self, site: Site) -> Vec<usize> {
        match site {
            Site::Stack(s) => {
                let keys: Vec<FrameKey> = self
                    .rec
                    .stack_frames(s)
                    .map(|f| FrameKey::Code {
                        function: f.function,
                        line: (!self.naming.functions_only && f.line >= 0).then_some(f.line),
                    })
                    .collect();
                keys.into_iter().rev().map(|k| self.get(k)).collect()
            }
            pseudo => vec![self.get(FrameKey::Pseudo(pseudo))],
        }
    }
}

/// The profile name: `process 4242 python app.py: wall time`.
fn profile_name(rec: &Recording, process: u32, metric: Metric) -> String {
    format!(
        "{}: {}",
        crate::analysis::process_label(rec, process),
        metric.title().to_lowercase()
    )
}

/// Write the speedscope document of an attribution. `processes` are the recording's processes
/// to export (indices into `Recording::processes`), `name` the document's name (the recording's
/// file name).
pub fn write(
    rec: &Recording,
    attr: &Attribution,
    processes: &[u32],
    name: &str,
    naming: Naming,
    mut w: impl Write,
) -> io::Result<()> {
    let mut frames = Frames {
        rec,
        naming,
        index: HashMap::new(),
        frames: Vec::new(),
    };
    let mut profiles = Vec::new();
    for &p in processes {
        for (metric, unit) in PROFILES {
            // Stacks of this process with their weight; equal stacks (the same function at
            // several lines, with `functions_only`) are added up.
            let mut by_stack: HashMap<Vec<usize>, f64> = HashMap::new();
            for (key, &value) in attr.values(metric) {
                if key.process != p || value <= 0.0 {
                    continue;
                }
                *by_stack.entry(frames.stack(key.site)).or_insert(0.0) += value;
            }
            let mut stacks: Vec<(Vec<String>, Vec<usize>, f64)> = by_stack
                .into_iter()
                .map(|(stack, v)| {
                    let names = stack.iter().map(|&i| frame_sort_key(&frames, i)).collect();
                    (names, stack, v)
                })
                .collect();
            stacks.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
            let total = stacks.iter().map(|s| s.2).sum::<f64>() + 0.0; // not -0.0 when empty
            let (samples, weights) = stacks.into_iter().map(|(_, s, v)| (s, v)).unzip();
            profiles.push(Profile {
                kind: "sampled",
                name: profile_name(rec, p, metric),
                unit,
                start_value: 0.0,
                end_value: total,
                samples,
                weights,
            });
        }
    }
    let file = File {
        schema: SCHEMA,
        shared: Shared {
            frames: frames.frames,
        },
        profiles,
        name: name.to_string(),
        active_profile_index: 0,
        exporter: format!("memspy {}", env!("CARGO_PKG_VERSION")),
    };
    serde_json::to_writer(&mut w, &file)?;
    writeln!(w)?;
    w.flush()
}

/// What samples are ordered by: the frame's name, file and line.
fn frame_sort_key(frames: &Frames, i: usize) -> String {
    let f = &frames.frames[i];
    format!(
        "{}\u{0}{}\u{0}{:010}",
        f.name,
        f.file.as_deref().unwrap_or(""),
        f.line.unwrap_or(-1)
    )
}
