//! Numbers as people read them: byte sizes in KiB/MiB/GiB, counts with thousands separators,
//! durations in s/ms, and parsing of sizes and percentages given on the command line.

/// "512 B", "1.5 KiB", "212.0 MiB", "1.25 GiB" (negative values keep their sign).
pub fn bytes(v: f64) -> String {
    let (sign, a) = if v < 0.0 { ("-", -v) } else { ("", v) };
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = a;
    let mut unit = 0;
    while x >= 1024.0 && unit < UNITS.len() - 1 {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{sign}{x:.0} B")
    } else {
        format!("{sign}{x:.1} {}", UNITS[unit])
    }
}

/// 1234567 -> "1,234,567".
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Text on one line: runs of whitespace (newlines of a `python -c` script) become one space,
/// and text longer than `max` characters ends with "…".
pub fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > max {
        out = out.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(200.0 * 1048576.0), "200.0 MiB");
        assert_eq!(bytes(-3.0 * 1073741824.0), "-3.0 GiB");
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(100), "100");
        assert_eq!(
            one_line("python -c \"\nimport x\n  x.y()\"", 80),
            "python -c \" import x x.y()\""
        );
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}
