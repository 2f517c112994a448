//! Per-function totals, and naming functions the way people write them on a command line.
//!
//! A function is identified across recordings by its qualified name and file (its first line
//! may move between versions of the code). Its *self* value is what was attributed while it
//! was the innermost frame; its *total* includes its callees, counting a stack once even when
//! the function appears on it several times (recursion).
//!
//! Patterns name functions by a dotted path built from the file and the qualified name:
//! `/srv/app/cache.py` + `Cache.fill` is `srv.app.cache.Cache.fill`, and a pattern matches when
//! it equals that path or a tail of it that starts at a dot (`app.cache.Cache.fill`,
//! `cache.Cache.fill`, `Cache.fill`, `fill`). `*` matches any run of characters and `?` one
//! character (`app.cache.*`, `*.fill`).

use std::collections::HashMap;

use super::{Attribution, Metric, Site};
use crate::recording::Recording;

/// A function's figures for one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionTotal {
    pub qualname: String,
    pub file: String,
    pub dotted: String,
    pub self_value: f64,
    pub total_value: f64,
}

impl FunctionTotal {
    /// `Cache.fill (app/cache.py)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.qualname, self.file)
    }
}

/// `srv.app.cache.Cache.fill` from `/srv/app/cache.py` and `Cache.fill` (`__init__` and the
/// `.py` suffix dropped; `<string>` and other pseudo-files keep their name as one component).
pub fn dotted_name(file: &str, qualname: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !file.starts_with('<') {
        let stem = file.strip_suffix(".py").unwrap_or(file);
        parts.extend(
            stem.split('/')
                .filter(|p| !p.is_empty() && *p != "__init__" && *p != "."),
        );
    }
    let mut dotted = parts.join(".");
    if !dotted.is_empty() {
        dotted.push('.');
    }
    dotted.push_str(qualname);
    dotted
}

/// Whether `pattern` names the function whose dotted path is `dotted` (see the module docs).
/// A tail that starts after a dot matches exactly when `*.PATTERN` matches the whole path, so
/// this is two globs, not one per dot (a forged name can hold thousands).
pub fn pattern_matches(pattern: &str, dotted: &str) -> bool {
    glob(pattern, dotted) || glob(&format!("*.{pattern}"), dotted)
}

/// Shell-style matching with `*` and `?` (iterative, no recursion blow-up).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Self and total of every function for `metric`, sorted by total, largest first.
pub fn by_function(rec: &Recording, attr: &Attribution, metric: Metric) -> Vec<FunctionTotal> {
    // Functions with the same (qualname, file) are one, whatever their first line.
    let mut ids: HashMap<(u32, u32), usize> = HashMap::new();
    let mut out: Vec<FunctionTotal> = Vec::new();
    let mut index_of = vec![usize::MAX; rec.functions.len()];
    for (i, f) in rec.functions.iter().enumerate() {
        let next = out.len();
        let slot = *ids.entry((f.qualname, f.file)).or_insert(next);
        if slot == next {
            let (q, file) = (rec.string(f.qualname), rec.string(f.file));
            out.push(FunctionTotal {
                qualname: q.to_string(),
                file: file.to_string(),
                dotted: dotted_name(file, q),
                self_value: 0.0,
                total_value: 0.0,
            });
        }
        index_of[i] = slot;
    }
    // Per function: the last stack (numbered from 1) that counted for its total, so a stack
    // thousands of frames deep is walked once.
    let mut counted_in = vec![0u32; out.len()];
    for (n, (key, &value)) in attr.values(metric).iter().enumerate() {
        let Site::Stack(stack) = key.site else {
            continue;
        };
        let n = n as u32 + 1;
        for (depth, frame) in rec.stack_frames(stack).enumerate() {
            let f = index_of[frame.function as usize];
            if depth == 0 {
                out[f].self_value += value;
            }
            if counted_in[f] != n {
                counted_in[f] = n;
                out[f].total_value += value;
            }
        }
    }
    out.retain(|f| f.self_value != 0.0 || f.total_value != 0.0);
    out.sort_by(|a, b| {
        b.total_value
            .total_cmp(&a.total_value)
            .then(a.dotted.cmp(&b.dotted))
    });
    out
}

/// What the stacks that pass through a function matching `pattern` were attributed (a stack
/// counts once however many matching frames it has); and how many functions matched.
pub fn matching_total(
    rec: &Recording,
    attr: &Attribution,
    metric: Metric,
    pattern: &str,
) -> (f64, usize) {
    let matches: Vec<bool> = rec
        .functions
        .iter()
        .map(|f| {
            pattern_matches(
                pattern,
                &dotted_name(rec.string(f.file), rec.string(f.qualname)),
            )
        })
        .collect();
    let count = matches.iter().filter(|m| **m).count();
    let mut total = 0.0;
    for (key, &value) in attr.values(metric) {
        if let Site::Stack(stack) = key.site {
            if rec
                .stack_frames(stack)
                .any(|fr| matches[fr.function as usize])
            {
                total += value;
            }
        }
    }
    (total, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names() {
        assert_eq!(
            dotted_name("/srv/app/cache.py", "Cache.fill"),
            "srv.app.cache.Cache.fill"
        );
        assert_eq!(
            dotted_name("/srv/app/__init__.py", "setup"),
            "srv.app.setup"
        );
        assert_eq!(dotted_name("<string>", "<module>"), "<module>");
        assert_eq!(dotted_name("tool.py", "main"), "tool.main");
    }

    #[test]
    fn patterns() {
        let d = "srv.app.cache.Cache.fill";
        for p in [
            "app.cache.Cache.fill",
            "Cache.fill",
            "fill",
            "app.cache.*",
            "*.fill",
            "srv.app.cache.Cache.fill",
            "app.*.fill",
        ] {
            assert!(pattern_matches(p, d), "{p}");
        }
        for p in [
            "ill",
            "pp.cache.Cache.fill",
            "app.cache.fill",
            "Cache",
            "other.*",
        ] {
            assert!(!pattern_matches(p, d), "{p}");
        }
        // A forged name with 30,000 dots is matched in two passes, not one per dot.
        let many = format!("{}fill", "a.".repeat(30_000));
        assert!(pattern_matches("fill", &many) && pattern_matches("a.fill", &many));
        assert!(!pattern_matches("nope", &many) && !pattern_matches("a.b", &many));
    }
}
