//! Folded stacks ("collapsed" format, the input of inferno and flamegraph.pl): one line per
//! distinct stack, frames from the outermost separated by `;`, then a space and the value.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::analysis::{process_label, site_path, Attribution, Metric, Naming};
use crate::output::text::visible;
use crate::recording::Recording;

/// How stacks are folded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fold {
    /// One tree for all processes instead of one root node per process.
    pub merge_processes: bool,
    pub naming: Naming,
}

/// Make a frame label safe for the folded format, and for the flamegraphs drawn from it: `;`
/// separates frames, so it becomes `:`; control characters (a newline would end the line) are
/// made visible ([`visible`]).
fn clean(label: &str) -> String {
    visible(label).replace(';', ":")
}

/// The most all the values of a fold add up to: 2^62 µs is 146,000 years and 2^62 bytes 4 EiB,
/// so only a forged recording comes near it; its values are scaled down to fit, since inferno
/// (and any reader of the folded format) adds them up in 64-bit integers.
const MAX_TOTAL: f64 = (1u64 << 62) as f64;

/// Folded stacks of a metric, sorted, with positive integer values (µs or bytes) that add up
/// to at most [`MAX_TOTAL`]. Negative values (a stack's net memory can be negative) cannot be
/// drawn and are left out.
pub fn fold(rec: &Recording, attr: &Attribution, metric: Metric, fold: Fold) -> Vec<(String, u64)> {
    let mut folded: HashMap<String, f64> = HashMap::new();
    for (key, &value) in attr.values(metric) {
        let mut path: Vec<String> = Vec::new();
        if !fold.merge_processes {
            path.push(process_label(rec, key.process));
        }
        path.extend(site_path(rec, Some(key.process), key.site, fold.naming));
        let line = path.iter().map(|l| clean(l)).collect::<Vec<_>>().join(";");
        *folded.entry(line).or_insert(0.0) += value;
    }
    let total: f64 = folded.values().filter(|v| **v >= 0.5).sum();
    let scale = if total > MAX_TOTAL {
        MAX_TOTAL / total
    } else {
        1.0
    };
    let mut out: Vec<(String, u64)> = folded
        .into_iter()
        .filter(|(_, v)| *v >= 0.5)
        .map(|(k, v)| {
            let v = if scale < 1.0 {
                (v * scale).floor()
            } else {
                v.round()
            };
            (k, v as u64)
        })
        .filter(|(_, v)| *v > 0)
        .collect();
    out.sort();
    out
}

/// Write folded stacks.
pub fn write(lines: &[(String, u64)], mut w: impl Write) -> io::Result<()> {
    for (stack, value) in lines {
        writeln!(w, "{stack} {value}")?;
    }
    w.flush()
}
