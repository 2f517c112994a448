//! The CI gate: budgets a recording must stay within, and comparison with baseline recordings.
//!
//! **Budgets** are absolute limits, or percentages of the recording's own total:
//! - peak memory of each process (`--max-peak`) and of all processes together
//!   (`--max-peak-total`, the highest sum of the processes' memory at one moment);
//! - memory growth or retained memory of the code under a function (`--max-growth
//!   PATTERN=SIZE`, `--max-retained`): what was attributed to stacks passing through a
//!   matching function (see `crate::analysis` for what retained means);
//! - wall or CPU time of the code under a function (`--max-wall PATTERN=TIME`, `--max-cpu`),
//!   most useful as a share (`--max-cpu 'render_*=30%'`).
//!
//! **Baselines.** The new recording is compared with the median of one or more baselines on:
//! the peak memory of the largest process, the total growth, and each function's own (self)
//! growth (self, so that a leak is blamed on the function that leaks rather than on every
//! caller above it). Retained memory is not compared: growth is placed by page faults and
//! repeats from run to run, while what a run still holds depends on when it frees (a 20 MiB
//! temporary was seen once at -1 MiB and once at +10 MiB under the earlier rule for net
//! change), which would fail builds on noise. A retained leak shows as growth. A value
//! regresses when it exceeds the baseline by more than the tolerance *and* by more than the noise floor: the tolerance absorbs
//! proportional run-to-run variation, the floor keeps small functions (where sampling noise is
//! a large fraction) from failing the build. Functions below the floor in both recordings are
//! not compared. Time is compared only when asked (`--compare-time`): on shared CI machines it
//! varies far more than memory; then each function's share of the total CPU time is compared,
//! in percentage points, against `--time-tolerance`.

use std::collections::{BTreeMap, HashMap};

use super::functions::{by_function, matching_total};
use super::{Attribution, Metric};
use crate::output::units::Amount;
use crate::recording::Recording;

/// What a finding's numbers are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Bytes,
    Microseconds,
    Percent,
}

/// One check and how it went.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Finding {
    /// What was checked, e.g. `peak memory of process 4242 (python app.py)`.
    pub check: String,
    pub unit: Unit,
    pub value: f64,
    /// The budget, or the most the baseline allows (baseline plus tolerance and floor).
    pub limit: Option<f64>,
    pub baseline: Option<f64>,
    pub passed: bool,
}

/// What a budget limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    PeakProcess,
    PeakTotal,
    Growth,
    Retained,
    Wall,
    Cpu,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub measure: Measure,
    /// Function pattern (Growth, Retained, Wall, Cpu).
    pub pattern: Option<String>,
    pub limit: Amount,
}

/// How baselines are compared.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    /// Allowed increase over the baseline, in percent.
    pub tolerance_pct: f64,
    /// Increases smaller than this (bytes) never fail.
    pub memory_floor: f64,
    pub compare_time: bool,
    /// Allowed increase of a function's share of CPU time, in percentage points.
    pub time_tolerance_pts: f64,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            tolerance_pct: 10.0,
            memory_floor: 5.0 * 1048576.0,
            compare_time: false,
            time_tolerance_pts: 5.0,
        }
    }
}

/// Peak memory of each process and of all of them together.
pub fn peaks(rec: &Recording, attr: &Attribution) -> (Vec<(u32, f64)>, f64) {
    let per_process: Vec<(u32, f64)> = attr
        .series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(p, s)| {
            (
                p as u32,
                s.iter().map(|(_, v)| *v).max().unwrap_or(0) as f64,
            )
        })
        .collect();
    // The highest sum of every process's latest reading, over time; a process that ended no
    // longer counts after its end. Readings (0) and ends (1) in time order, an end after the
    // readings of its moment, so the work grows with readings plus processes, not their
    // product.
    let ended = |p: usize| rec.processes.get(p).and_then(|q| q.end_us);
    let mut events: Vec<(u64, u8, usize, u64)> = attr
        .series
        .iter()
        .enumerate()
        .flat_map(|(p, s)| s.iter().map(move |(t, v)| (*t, 0, p, *v)))
        .chain((0..attr.series.len()).filter_map(|p| ended(p).map(|e| (e, 1, p, 0))))
        .collect();
    events.sort_unstable();
    let mut current = vec![0u64; attr.series.len()];
    let (mut sum, mut best) = (0i128, 0i128);
    for (t, kind, p, v) in events {
        sum -= current[p] as i128;
        current[p] = 0;
        if kind == 1 {
            continue;
        }
        sum += v as i128;
        best = best.max(sum);
        // A reading taken after the process ended counts at its moment only.
        if ended(p).is_none_or(|e| e >= t) {
            current[p] = v;
        } else {
            sum -= v as i128;
        }
    }
    (per_process, best as f64)
}

fn process_name(rec: &Recording, p: u32) -> String {
    let proc = &rec.processes[p as usize];
    format!(
        "process {} ({})",
        proc.pid,
        crate::output::text::one_line(rec.string(proc.command), 40)
    )
}

/// Evaluate budgets against one recording.
pub fn check_budgets(
    rec: &Recording,
    attr: &Attribution,
    budgets: &[Budget],
) -> Result<Vec<Finding>, String> {
    let mut findings = Vec::new();
    let (per_process, total_peak) = peaks(rec, attr);
    for b in budgets {
        match b.measure {
            Measure::PeakProcess => {
                for &(p, peak) in &per_process {
                    let limit = b.limit.of(peak);
                    findings.push(Finding {
                        check: format!("peak memory of {}", process_name(rec, p)),
                        unit: Unit::Bytes,
                        value: peak,
                        limit: Some(limit),
                        baseline: None,
                        passed: peak <= limit,
                    });
                }
            }
            Measure::PeakTotal => {
                let limit = b.limit.of(total_peak);
                findings.push(Finding {
                    check: "peak memory of all processes together".into(),
                    unit: Unit::Bytes,
                    value: total_peak,
                    limit: Some(limit),
                    baseline: None,
                    passed: total_peak <= limit,
                });
            }
            Measure::Growth | Measure::Retained | Measure::Wall | Measure::Cpu => {
                let (metric, word, unit) = match b.measure {
                    Measure::Growth => (Metric::Growth, "memory growth", Unit::Bytes),
                    Measure::Retained => (Metric::Retained, "memory retained", Unit::Bytes),
                    Measure::Wall => (Metric::Wall, "wall time", Unit::Microseconds),
                    _ => (Metric::Cpu, "CPU time", Unit::Microseconds),
                };
                let pattern = b.pattern.as_deref().unwrap_or("*");
                let (value, matched) = matching_total(rec, attr, metric, pattern);
                if matched == 0 {
                    return Err(format!(
                        "no function in the recording matches {pattern:?} (see `memspy lines`)"
                    ));
                }
                let limit = b.limit.of(attr.total(metric));
                findings.push(Finding {
                    check: format!("{word} under {pattern}"),
                    unit,
                    value,
                    limit: Some(limit),
                    baseline: None,
                    passed: value <= limit,
                });
            }
        }
    }
    Ok(findings)
}

/// The figures a baseline comparison looks at.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub peak: f64,
    pub growth: f64,
    /// Per function label: (self growth, share of CPU time in percent).
    pub functions: BTreeMap<String, (f64, f64)>,
}

/// The comparison figures of a recording whose attribution is `attr`.
pub fn figures(rec: &Recording, attr: &Attribution) -> Figures {
    let (per_process, _) = peaks(rec, attr);
    let mut functions: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for f in by_function(rec, attr, Metric::Growth) {
        functions.entry(f.label()).or_default().0 = f.self_value;
    }
    let cpu_total = attr.total(Metric::Cpu);
    if cpu_total > 0.0 {
        for f in by_function(rec, attr, Metric::Cpu) {
            functions.entry(f.label()).or_default().1 = 100.0 * f.self_value / cpu_total;
        }
    }
    Figures {
        peak: per_process.iter().map(|p| p.1).fold(0.0, f64::max),
        growth: attr.total(Metric::Growth),
        functions,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Compare `new` with the median of `baselines`.
pub fn compare(new: &Figures, baselines: &[Figures], rule: Rule) -> Vec<Finding> {
    let memory = |check: String, value: f64, base: f64| -> Finding {
        let limit = (base * (1.0 + rule.tolerance_pct / 100.0)).max(base + rule.memory_floor);
        Finding {
            check,
            unit: Unit::Bytes,
            value,
            limit: Some(limit),
            baseline: Some(base),
            passed: value <= limit,
        }
    };
    let mut out = vec![
        memory(
            "peak memory (largest process)".into(),
            new.peak,
            median(baselines.iter().map(|b| b.peak).collect()),
        ),
        memory(
            "total memory growth".into(),
            new.growth,
            median(baselines.iter().map(|b| b.growth).collect()),
        ),
    ];
    let mut names: Vec<&String> = new.functions.keys().collect();
    for b in baselines {
        names.extend(b.functions.keys());
    }
    names.sort();
    names.dedup();
    let zero = (0.0, 0.0);
    let per: HashMap<&String, Vec<(f64, f64)>> = names
        .iter()
        .map(|n| {
            (
                *n,
                baselines
                    .iter()
                    .map(|b| *b.functions.get(*n).unwrap_or(&zero))
                    .collect(),
            )
        })
        .collect();
    for name in names {
        let now = *new.functions.get(name).unwrap_or(&zero);
        let before = &per[name];
        let base_growth = median(before.iter().map(|v| v.0).collect());
        if now.0.max(base_growth) >= rule.memory_floor {
            out.push(memory(
                format!("memory growth in {name}"),
                now.0,
                base_growth,
            ));
        }
        if rule.compare_time {
            let base_cpu = median(before.iter().map(|v| v.1).collect());
            if now.1.max(base_cpu) >= rule.time_tolerance_pts {
                let limit = base_cpu + rule.time_tolerance_pts;
                out.push(Finding {
                    check: format!("share of CPU time in {name}"),
                    unit: Unit::Percent,
                    value: now.1,
                    limit: Some(limit),
                    baseline: Some(base_cpu),
                    passed: now.1 <= limit,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figs(peak: f64, fill_growth: f64) -> Figures {
        let mut f = Figures {
            peak,
            growth: peak,
            ..Figures::default()
        };
        f.functions
            .insert("fill (app.py)".into(), (fill_growth, 10.0));
        f
    }

    #[test]
    fn tolerance_and_floor() {
        const MIB: f64 = 1048576.0;
        let rule = Rule {
            tolerance_pct: 20.0,
            ..Rule::default()
        };
        // 10 -> 60 MiB: fails, and names the function.
        let f = compare(
            &figs(70.0 * MIB, 60.0 * MIB),
            &[figs(20.0 * MIB, 10.0 * MIB)],
            rule,
        );
        assert!(f.iter().any(|x| !x.passed && x.check.contains("fill")));
        // 10 -> 11 MiB: within the floor.
        let f = compare(
            &figs(21.0 * MIB, 11.0 * MIB),
            &[figs(20.0 * MIB, 10.0 * MIB)],
            rule,
        );
        assert!(f.iter().all(|x| x.passed), "{f:?}");
        // The median of three baselines ignores one outlier.
        let f = compare(
            &figs(200.0 * MIB, 100.0 * MIB),
            &[
                figs(200.0 * MIB, 100.0 * MIB),
                figs(20.0 * MIB, 10.0 * MIB),
                figs(210.0 * MIB, 105.0 * MIB),
            ],
            rule,
        );
        assert!(f.iter().all(|x| x.passed), "{f:?}");
    }

    #[test]
    fn total_peak_drops_processes_that_ended() {
        let process = |end_us| crate::recording::reader::Process {
            pid: 1,
            starttime: 0,
            parent: None,
            start_us: 0,
            command: 0,
            exe: 0,
            python: 0,
            cwd: None,
            finalizing_us: None,
            end_us,
            end_reason: None,
            exit: None,
        };
        let rec = Recording {
            processes: vec![process(None), process(Some(25)), process(None)],
            ..Recording::default()
        };
        let attr = Attribution {
            series: vec![
                vec![(0, 100), (10, 100), (30, 50)],
                vec![(5, 200), (20, 300)],
                vec![(26, 10)],
            ],
            ..Attribution::default()
        };
        // 100 + 300 at 20 µs; at 26 µs the second process has ended: 100 + 10, not 410.
        let (per_process, total) = peaks(&rec, &attr);
        assert_eq!(total, 400.0);
        assert_eq!(per_process, vec![(0, 100.0), (1, 300.0), (2, 10.0)]);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
