//! Flamegraph SVGs, drawn by inferno from folded stacks.
//!
//! inferno writes each frame's tooltip as `name (1,234,567 bytes, 12.34%)`; memspy rewrites
//! those numbers into units people read (`1.2 MiB`, `350.0 ms`) after inferno is done. Frame
//! names are escaped by inferno's XML writer, so a hostile function name cannot inject markup;
//! control characters, which XML forbids even escaped, are made visible before
//! (`collapsed::fold` for frames, here for the title).

use std::io::{self, Write};

use inferno::flamegraph::{self, Options};

use super::text::visible;
use super::units::bytes;
use crate::analysis::Metric;

/// Draw `folded` (from [`super::collapsed::fold`]) as an SVG.
pub fn write_svg(
    folded: &[(String, u64)],
    metric: Metric,
    title: &str,
    subtitle: &str,
    mut w: impl Write,
) -> io::Result<()> {
    let mut opts = Options::default();
    opts.title = visible(title).into_owned();
    opts.subtitle = Some(visible(subtitle).into_owned());
    opts.count_name = if metric.is_memory() { "bytes" } else { "us" }.to_string();
    opts.name_type = "Function:".to_string();
    opts.deterministic = true;
    if metric.is_memory() {
        opts.colors = flamegraph::color::Palette::Basic(flamegraph::color::BasicPalette::Mem);
    }
    let lines: Vec<String> = folded.iter().map(|(s, v)| format!("{s} {v}")).collect();
    let mut svg = Vec::new();
    if lines.is_empty() {
        // inferno refuses empty input; draw an empty chart that says so.
        opts.subtitle = Some(format!("{} (no samples)", visible(subtitle)));
        flamegraph::from_lines(
            &mut opts,
            ["[nothing recorded] 1"].iter().copied(),
            &mut svg,
        )
        .map_err(io::Error::other)?;
    } else {
        flamegraph::from_lines(&mut opts, lines.iter().map(|s| s.as_str()), &mut svg)
            .map_err(io::Error::other)?;
    }
    let text = String::from_utf8(svg).map_err(io::Error::other)?;
    w.write_all(humanize_titles(&text, metric.is_memory()).as_bytes())?;
    w.flush()
}

/// Rewrite `(1,234 bytes, 5.00%)` / `(1,234 us, 5.00%)` at the end of every `<title>`.
fn humanize_titles(svg: &str, memory: bool) -> String {
    let unit = if memory { " bytes, " } else { " us, " };
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(start) = rest.find("<title>") {
        let Some(len) = rest[start..].find("</title>") else {
            break;
        };
        let end = start + len;
        out.push_str(&rest[..start + 7]);
        out.push_str(&humanize_title(&rest[start + 7..end], unit, memory));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn humanize_title(title: &str, unit: &str, memory: bool) -> String {
    let Some(open) = title.rfind(" (") else {
        return title.to_string();
    };
    let inner = &title[open + 2..];
    let Some(u) = inner.find(unit) else {
        return title.to_string();
    };
    let number: String = inner[..u].chars().filter(|c| *c != ',').collect();
    let Ok(n) = number.parse::<u64>() else {
        return title.to_string();
    };
    let human = if memory { bytes(n as f64) } else { duration(n) };
    format!("{} ({human}, {}", &title[..open], &inner[u + unit.len()..])
}

/// Microseconds as "850 µs", "12.5 ms", "3.20 s".
pub fn duration(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_get_units() {
        assert_eq!(
            humanize_title("f (a.py:3) (2,097,152 bytes, 50.00%)", " bytes, ", true),
            "f (a.py:3) (2.0 MiB, 50.00%)"
        );
        assert_eq!(
            humanize_title("all (1,500 us, 100%)", " us, ", false),
            "all (1.5 ms, 100%)"
        );
        assert_eq!(
            humanize_title("no numbers here", " us, ", false),
            "no numbers here"
        );
    }

    #[test]
    fn hostile_names_are_escaped() {
        let folded = vec![(
            "process 1 x;<script>alert(1)</script> (a.py:1)".to_string(),
            10,
        )];
        let mut svg = Vec::new();
        write_svg(&folded, Metric::Wall, "t", "s", &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(!svg.contains("<script>alert"), "markup injected");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }
}
