//! pprof profiles: Google's `profile.proto` (vendored beside this file, compiled by build.rs
//! with prost), gzip-compressed, the format `go tool pprof`, Grafana Pyroscope, Parca and most
//! continuous-profiling backends read.
//!
//! A profile has one sample type per metric asked for: `wall` and `cpu` in nanoseconds,
//! `growth`, `freed`, `retained` and `peak` in bytes. Its samples are of two kinds, so that
//! every value adds up to what memspy's own reports say:
//! - time: one sample per (process, stack, thread or waiting greenlet/task), with the time
//!   values and zero memory, labelled with the process and the thread (`thread_id`,
//!   `thread_name`) or the task (`greenlet` or `task`);
//! - memory: one sample per (process, stack), with the memory values and zero time, labelled
//!   with the process only (a process's memory is not a thread's).
//!
//! Every sample has the process labels `pid` (number), `process` (its role: "master",
//! "worker 2", "the program") and `command`. Locations are Python frames (function and line),
//! leaf first; a function's name is its qualified name, its system name the plain one, its
//! file the full path. Samples that are not Python stacks get one pseudo-frame each
//! (`[no Python frames]`, `[interpreter shutdown]` ...).

mod proto {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/perftools.profiles.rs"));
}

use std::collections::HashMap;
use std::io::Write;

use prost::Message;
use rustc_hash::FxHashMap;

pub use proto::Profile;

use crate::analysis::findings::process_name;
use crate::analysis::timeline::{Timeline, Who};
use crate::analysis::{attribute_over_time, Attribution, Filter, Key, Metric, Site};
use crate::recording::format::TaskKind;
use crate::recording::Recording;

/// The id of the one mapping (the interpreter).
const MAPPING: u64 = 1;

/// The time span a profile covers (µs of recording time).
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub from_us: u64,
    pub to_us: u64,
}

/// Builds one profile; ids are assigned as things are first used.
struct Builder<'a> {
    rec: &'a Recording,
    p: Profile,
    strings: FxHashMap<String, i64>,
    /// Location id by frame index (`Recording::frames`), and pseudo-site locations by label.
    locations: FxHashMap<u32, u64>,
    pseudo: FxHashMap<&'static str, u64>,
    functions: FxHashMap<u32, u64>,
    /// Process labels by process index.
    process_labels: FxHashMap<u32, Vec<proto::Label>>,
}

impl<'a> Builder<'a> {
    fn new(rec: &'a Recording) -> Builder<'a> {
        let mut b = Builder {
            rec,
            p: Profile::default(),
            strings: FxHashMap::default(),
            locations: FxHashMap::default(),
            pseudo: FxHashMap::default(),
            functions: FxHashMap::default(),
            process_labels: FxHashMap::default(),
        };
        b.string(""); // string_table[0] must be ""
                      // One mapping, the interpreter: readers want one, and it says the locations are
                      // symbolized (functions, files and lines known).
        let filename = b.string("python");
        b.p.mapping.push(proto::Mapping {
            id: MAPPING,
            filename,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            ..proto::Mapping::default()
        });
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.p.string_table.len() as i64;
        self.p.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn function(&mut self, index: u32) -> u64 {
        if let Some(&id) = self.functions.get(&index) {
            return id;
        }
        let f = &self.rec.functions[index as usize];
        let (qualname, name, file) = (
            self.rec.string(f.qualname),
            self.rec.string(f.name),
            self.rec.string(f.file),
        );
        let id = self.p.function.len() as u64 + 1;
        let function = proto::Function {
            id,
            name: self.string(qualname),
            system_name: self.string(name),
            filename: self.string(file),
            start_line: i64::from(f.firstlineno.max(0)),
        };
        self.p.function.push(function);
        self.functions.insert(index, id);
        id
    }

    /// The location of frame `index` of the recording.
    fn location(&mut self, index: u32) -> Option<u64> {
        if let Some(&id) = self.locations.get(&index) {
            return Some(id);
        }
        let frame = *self.rec.frames.get(index as usize)?;
        if frame.function as usize >= self.rec.functions.len() {
            return None;
        }
        let function_id = self.function(frame.function);
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(proto::Location {
            id,
            mapping_id: MAPPING,
            line: vec![proto::Line {
                function_id,
                line: i64::from(frame.line.max(0)),
            }],
            ..proto::Location::default()
        });
        self.locations.insert(index, id);
        Some(id)
    }

    fn pseudo_location(&mut self, label: &'static str) -> u64 {
        if let Some(&id) = self.pseudo.get(label) {
            return id;
        }
        let name = self.string(label);
        let function_id = self.p.function.len() as u64 + 1;
        self.p.function.push(proto::Function {
            id: function_id,
            name,
            system_name: name,
            ..proto::Function::default()
        });
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(proto::Location {
            id,
            mapping_id: MAPPING,
            line: vec![proto::Line {
                function_id,
                line: 0,
            }],
            ..proto::Location::default()
        });
        self.pseudo.insert(label, id);
        id
    }

    /// Location ids of a site, leaf first.
    fn stack(&mut self, site: Site) -> Vec<u64> {
        match site {
            Site::Stack(leaf) => {
                let mut ids = Vec::new();
                let mut node = Some(leaf);
                while let Some(n) = node {
                    let Some(s) = self.rec.stacks.get(n as usize) else {
                        break;
                    };
                    if ids.len() >= 4096 {
                        break;
                    }
                    if let Some(id) = self.location(s.frame) {
                        ids.push(id);
                    }
                    node = s.parent;
                }
                ids
            }
            other => vec![self.pseudo_location(other.pseudo_label().unwrap_or("[unknown]"))],
        }
    }

    fn str_label(&mut self, key: &str, value: &str) -> proto::Label {
        proto::Label {
            key: self.string(key),
            str: self.string(value),
            ..proto::Label::default()
        }
    }

    fn num_label(&mut self, key: &str, value: i64) -> proto::Label {
        proto::Label {
            key: self.string(key),
            num: value,
            ..proto::Label::default()
        }
    }

    fn process_labels(&mut self, process: u32) -> Vec<proto::Label> {
        if let Some(l) = self.process_labels.get(&process) {
            return l.clone();
        }
        let rec = self.rec;
        let p = &rec.processes[process as usize];
        let name = process_name(rec, process as usize);
        let role = name.rsplit_once(" (pid").map_or(name.as_str(), |n| n.0);
        let labels = vec![
            self.num_label("pid", i64::from(p.pid)),
            self.str_label("process", role),
            self.str_label("command", rec.string(p.command)),
        ];
        self.process_labels.insert(process, labels.clone());
        labels
    }

    fn who_labels(&mut self, who: Option<Who>) -> Vec<proto::Label> {
        let rec = self.rec;
        match who {
            Some(Who::Thread(t)) => match rec.threads.get(t as usize) {
                Some(thread) => vec![
                    self.num_label("thread_id", i64::from(thread.tid)),
                    self.str_label("thread_name", thread.label(rec)),
                ],
                None => Vec::new(),
            },
            Some(Who::Task(t)) => match rec.tasks.get(t as usize) {
                Some(task) => {
                    let key = match task.kind {
                        TaskKind::Greenlet => "greenlet",
                        TaskKind::Asyncio => "task",
                    };
                    let name = rec.string(task.name);
                    let name = if name.is_empty() {
                        format!("{:#x}", task.address)
                    } else {
                        name.to_string()
                    };
                    vec![self.str_label(key, &name)]
                }
                None => Vec::new(),
            },
            None => Vec::new(),
        }
    }

    fn sample(&mut self, key: Key, who: Option<Who>, value: Vec<i64>) {
        if value.iter().all(|v| *v == 0) {
            return;
        }
        let location_id = self.stack(key.site);
        let mut label = self.process_labels(key.process);
        label.extend(self.who_labels(who));
        self.p.sample.push(proto::Sample {
            location_id,
            value,
            label,
        });
    }
}

fn unit(metric: Metric) -> &'static str {
    if metric.is_memory() {
        "bytes"
    } else {
        "nanoseconds"
    }
}

/// The profile of `rec` in `span` as `filter` selects it (its window is `span`), for `metrics`
/// (at least one): the attribution of the window, with each thread's and waiting task's time
/// kept apart (a one-bucket timeline).
pub fn window(rec: &Recording, filter: &Filter, span: Span, metrics: &[Metric]) -> Profile {
    let mut timeline = Timeline::new(span.from_us, span.to_us.max(span.from_us), 1).with_threads();
    let attr = attribute_over_time(rec, filter, Some(&mut timeline));
    let time_of = timeline
        .threads
        .unwrap_or_default()
        .into_iter()
        .map(|((_, key, who), v)| ((key, who), v))
        .collect();
    profile(rec, &attr, &time_of, metrics, span)
}

/// The profile of `attr` (the attribution of `span`), with `time_of` its time per thread and
/// waiting task, for `metrics` (at least one).
fn profile(
    rec: &Recording,
    attr: &Attribution,
    time_of: &HashMap<(Key, Who), [f64; 2]>,
    metrics: &[Metric],
    span: Span,
) -> Profile {
    let mut b = Builder::new(rec);
    for &m in metrics {
        let vt = proto::ValueType {
            r#type: b.string(m.name()),
            unit: b.string(unit(m)),
        };
        b.p.sample_type.push(vt);
    }
    b.p.default_sample_type = b.string(metrics[0].name());
    b.p.period_type = Some(proto::ValueType {
        r#type: b.string("wall"),
        unit: b.string("nanoseconds"),
    });
    b.p.period = if rec.meta.rate_hz > 0.0 {
        (1e9 / rec.meta.rate_hz).round() as i64
    } else {
        0
    };
    let start_ns = rec.meta.start_unix_ns as i64;
    b.p.time_nanos = start_ns.saturating_add(span.from_us as i64 * 1000);
    b.p.duration_nanos = span.to_us.saturating_sub(span.from_us) as i64 * 1000;
    let comment = b.string(&format!("memspy {}", rec.meta.memspy_version));
    b.p.comment.push(comment);

    let column = |m: Metric| metrics.iter().position(|x| *x == m);
    let (wall, cpu) = (column(Metric::Wall), column(Metric::Cpu));
    if wall.is_some() || cpu.is_some() {
        // Time per (key, whose), in a stable order; then what no thread or task took (none,
        // unless the recording's threads changed index: the totals still add up).
        let mut entries: Vec<(&(Key, Who), &[f64; 2])> = time_of.iter().collect();
        entries.sort_unstable_by_key(|e| *e.0);
        let mut taken: FxHashMap<Key, [f64; 2]> = FxHashMap::default();
        for (&(key, who), v) in entries {
            let t = taken.entry(key).or_default();
            t[0] += v[0];
            t[1] += v[1];
            let mut value = vec![0i64; metrics.len()];
            if let Some(c) = wall {
                value[c] = (v[0] * 1000.0).round() as i64;
            }
            if let Some(c) = cpu {
                value[c] = (v[1] * 1000.0).round() as i64;
            }
            b.sample(key, Some(who), value);
        }
        let mut keys: Vec<Key> = attr.wall.keys().chain(attr.cpu.keys()).copied().collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let t = taken.get(&key).copied().unwrap_or_default();
            let rest = [
                attr.wall.get(&key).copied().unwrap_or(0.0) - t[0],
                attr.cpu.get(&key).copied().unwrap_or(0.0) - t[1],
            ];
            let mut value = vec![0i64; metrics.len()];
            if let Some(c) = wall {
                value[c] = (rest[0] * 1000.0).round() as i64;
            }
            if let Some(c) = cpu {
                value[c] = (rest[1] * 1000.0).round() as i64;
            }
            b.sample(key, None, value);
        }
    }
    let memory: Vec<(usize, Metric)> = metrics
        .iter()
        .enumerate()
        .filter(|(_, m)| m.is_memory())
        .map(|(i, m)| (i, *m))
        .collect();
    if !memory.is_empty() {
        let mut keys: Vec<Key> = memory
            .iter()
            .flat_map(|(_, m)| attr.values(*m).keys().copied())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let mut value = vec![0i64; metrics.len()];
            for &(c, m) in &memory {
                value[c] = attr.values(m).get(&key).copied().unwrap_or(0.0).round() as i64;
            }
            b.sample(key, None, value);
        }
    }
    b.p
}

/// The profile, encoded and gzip-compressed, as a `.pb.gz` file holds it.
pub fn write_gzipped(profile: &Profile, out: &mut dyn Write) -> std::io::Result<()> {
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()?;
    Ok(())
}
