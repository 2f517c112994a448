//! memory_profiler's `mprof` data file (`.dat`), so that `mprof plot` draws a recording.
//!
//! The format, as memory_profiler 0.61.0 writes and reads it (`mprof.py`: `run_action` writes
//! `CMDLINE`, `read_mprofile_file` parses; `memory_profiler.py`: `memory_usage` writes `MEM` and
//! `CHLD` lines, `TimeStamper.show_results` writes `FUNC` lines), one record per line, fields
//! separated by single spaces, no blank line anywhere (the reader rejects one):
//!
//! ```text
//! CMDLINE <command line>
//! MEM <MiB, %.6f> <unix time s, %.4f>                       the main process
//! CHLD <child key> <MiB, %.6f> <unix time s, %.4f>          a child (mprof keys by index; we use the pid)
//! FUNC <module.function> <start MiB> <start s> <end MiB> <end s> <stack level>   (all %.4f but the level)
//! ```
//!
//! `mprof plot` merges every `FUNC` line's two (time, MiB) points into the *main* curve, so
//! only spans on the main process are written as `FUNC` lines: a child's would put the child's
//! memory on the main process's line.

use std::io::{self, Write};

use crate::analysis::Attribution;
use crate::output::plot::{base_name, value_at, Marked};
use crate::output::text::{one_line, visible};
use crate::recording::Recording;

const MIB: f64 = 1024.0 * 1024.0;

/// The processes of an export: the main one's entries (one pid; a process that exec'd has
/// several) and the children's. The main process is the first process with readings in the
/// attribution (the recording's first process, or the one chosen with --pid).
pub struct Roles {
    pub main_pid: i32,
    pub main: Vec<u32>,
    pub children: Vec<u32>,
}

/// Which processes are main and which are children; None if no process has readings.
pub fn roles(rec: &Recording, attr: &Attribution) -> Option<Roles> {
    let with_data: Vec<u32> = (0..attr.series.len() as u32)
        .filter(|&p| !attr.series[p as usize].is_empty())
        .collect();
    let main_pid = rec.processes[*with_data.first()? as usize].pid;
    let (main, children) = with_data
        .into_iter()
        .partition(|&p| rec.processes[p as usize].pid == main_pid);
    Some(Roles {
        main_pid,
        main,
        children,
    })
}

/// `module.qualname` as memory_profiler names functions (`func.__module__` + name): the module
/// is the file's base name without `.py` (a package's `__init__.py` is named after its folder,
/// a frozen module's `<frozen importlib._bootstrap>` after the module inside). Spaces, which
/// would split the line, become underscores, and control characters are made visible.
pub fn dotted_name(rec: &Recording, function: u32) -> String {
    let f = &rec.functions[function as usize];
    let file = rec.string(f.file);
    if let Some(frozen) = file
        .strip_prefix("<frozen ")
        .and_then(|m| m.strip_suffix('>'))
    {
        return mprof_word(&format!("{frozen}.{}", rec.string(f.qualname)));
    }
    let mut module = base_name(file).trim_end_matches(".py");
    if module == "__init__" {
        module = file
            .rsplit('/')
            .nth(1)
            .filter(|d| !d.is_empty())
            .unwrap_or(module);
    }
    mprof_word(&format!("{module}.{}", rec.string(f.qualname)))
}

/// One field of an mprof line: no whitespace, nothing invisible.
fn mprof_word(s: &str) -> String {
    visible(&s.replace(char::is_whitespace, "_")).into_owned()
}

/// Write the `.dat` file.
pub fn write_dat(
    rec: &Recording,
    attr: &Attribution,
    roles: &Roles,
    marked: &[Marked],
    w: &mut dyn Write,
) -> io::Result<()> {
    let main0 = roles.main[0] as usize;
    writeln!(
        w,
        "CMDLINE {}",
        one_line(rec.string(rec.processes[main0].command), usize::MAX)
    )?;
    let start_ns = rec.meta.start_unix_ns;
    let unix_s = |t_us: u64| start_ns.saturating_add(t_us.saturating_mul(1000)) as f64 / 1e9;
    let mib = |b: f64| b / MIB;

    // MEM and CHLD lines interleaved in time order, as memory_profiler writes them while sampling.
    let mut lines: Vec<(u64, u8, i32, f64)> = Vec::new();
    for (tag, list) in [(0u8, &roles.main), (1u8, &roles.children)] {
        for &p in list {
            let pid = rec.processes[p as usize].pid;
            for &(t, v) in &attr.series[p as usize] {
                lines.push((t, tag, pid, v as f64));
            }
        }
    }
    lines.sort_by_key(|a| (a.0, a.1, a.2));
    for (t, tag, pid, v) in lines {
        if tag == 0 {
            writeln!(w, "MEM {:.6} {:.4}", mib(v), unix_s(t))?;
        } else {
            writeln!(w, "CHLD {pid} {:.6} {:.4}", mib(v), unix_s(t))?;
        }
    }

    for m in marked {
        let name = dotted_name(rec, m.function);
        for span in m.spans.iter().filter(|s| roles.main.contains(&s.process)) {
            let series = &attr.series[span.process as usize];
            writeln!(
                w,
                "FUNC {name} {:.4} {:.4} {:.4} {:.4} {}",
                mib(value_at(series, span.start_us)),
                unix_s(span.start_us),
                mib(value_at(series, span.end_us)),
                unix_s(span.end_us),
                span.depth
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::reader::Function;

    #[test]
    fn names_functions_as_memory_profiler_does() {
        let mut rec = Recording::default();
        let files = [
            "/srv/app/cache.py",
            "/srv/app/pkg/__init__.py",
            "<frozen importlib._bootstrap>",
            "<string>",
            "/tmp/my script.py",
        ];
        for (i, file) in files.iter().enumerate() {
            rec.strings.push(file.to_string());
            rec.strings.push("Cache.fill".to_string());
            rec.functions.push(Function {
                name: 2 * i as u32 + 1,
                qualname: 2 * i as u32 + 1,
                file: 2 * i as u32,
                firstlineno: 1,
            });
        }
        let names: Vec<String> = (0..files.len() as u32)
            .map(|f| dotted_name(&rec, f))
            .collect();
        assert_eq!(
            names,
            [
                "cache.Cache.fill",
                "pkg.Cache.fill",
                "importlib._bootstrap.Cache.fill",
                "<string>.Cache.fill",
                "my_script.Cache.fill",
            ]
        );
    }
}
