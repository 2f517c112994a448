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

/// An amount given on the command line: an absolute value (bytes or µs) or a percentage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    Absolute(f64),
    Percent(f64),
}

impl Amount {
    /// The amount in absolute terms, a percentage taken of `total`.
    pub fn of(self, total: f64) -> f64 {
        match self {
            Amount::Absolute(v) => v,
            Amount::Percent(p) => total * p / 100.0,
        }
    }
}

fn split_number(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let end = t
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(t.len(), |(i, _)| i);
    let n: f64 = t[..end].parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n, t[end..].trim()))
}

/// "512MiB", "1.5 GiB", "200KB" (decimal), "4096" (bytes), "10%".
pub fn parse_size(text: &str) -> Result<Amount, String> {
    let (n, unit) =
        split_number(text).ok_or_else(|| format!("{text:?} is not a size (try 512MiB or 10%)"))?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "%" => return Ok(Amount::Percent(n)),
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1048576.0,
        "g" | "gib" => 1073741824.0,
        "t" | "tib" => 1099511627776.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, KB, MB, GB or %)"
            ))
        }
    };
    Ok(Amount::Absolute(n * scale))
}

/// "2s", "500ms", "750us", "1.5 s", "30%" (values in µs).
pub fn parse_duration(text: &str) -> Result<Amount, String> {
    let (n, unit) = split_number(text)
        .ok_or_else(|| format!("{text:?} is not a duration (try 2s, 500ms or 30%)"))?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "%" => return Ok(Amount::Percent(n)),
        "s" | "" => 1e6,
        "ms" => 1e3,
        "us" | "µs" => 1.0,
        "m" | "min" => 60e6,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use s, ms, us or %)"
            ))
        }
    };
    Ok(Amount::Absolute(n * scale))
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
    }

    #[test]
    fn parses_sizes_and_durations() {
        assert_eq!(
            parse_size("512MiB"),
            Ok(Amount::Absolute(512.0 * 1048576.0))
        );
        assert_eq!(
            parse_size("1.5 GiB"),
            Ok(Amount::Absolute(1.5 * 1073741824.0))
        );
        assert_eq!(parse_size("200KB"), Ok(Amount::Absolute(200e3)));
        assert_eq!(parse_size("4096"), Ok(Amount::Absolute(4096.0)));
        assert_eq!(parse_size("10%"), Ok(Amount::Percent(10.0)));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("-5MiB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Amount::Absolute(500e3)));
        assert_eq!(parse_duration("2s"), Ok(Amount::Absolute(2e6)));
        assert_eq!(parse_duration("30%").unwrap().of(1000.0), 300.0);
    }
}
