//! CPython versions as memspy needs them: exact, comparable, and printable.

use std::fmt;

/// A CPython release, e.g. 3.11.7 or 3.15.0a2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub micro: u8,
    /// 0xA alpha, 0xB beta, 0xC release candidate, 0xF final (as in PY_VERSION_HEX).
    pub level: u8,
    pub serial: u8,
}

impl Version {
    pub fn new(major: u8, minor: u8, micro: u8) -> Version {
        Version {
            major,
            minor,
            micro,
            level: 0xF,
            serial: 0,
        }
    }

    /// Decode PY_VERSION_HEX (`Py_Version`, `_Py_DebugOffsets.version`).
    pub fn from_hex(hex: u64) -> Version {
        Version {
            major: (hex >> 24) as u8,
            minor: (hex >> 16) as u8,
            micro: (hex >> 8) as u8,
            level: ((hex >> 4) & 0xF) as u8,
            serial: (hex & 0xF) as u8,
        }
    }

    /// Parse "3.9.2", "3.13.0rc1", "3.15.0a2+" (a trailing "+" marks a development build).
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.strip_suffix('+').unwrap_or(s);
        let mut parts = s.splitn(3, '.');
        let major: u8 = parts.next()?.parse().ok()?;
        let minor: u8 = parts.next()?.parse().ok()?;
        let rest = parts.next()?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let micro: u8 = rest.get(..digits)?.parse().ok()?;
        let suffix = &rest[digits..];
        let (level, serial) = if suffix.is_empty() {
            (0xF, 0)
        } else {
            let (level, num) = if let Some(n) = suffix.strip_prefix("rc") {
                (0xC, n)
            } else if let Some(n) = suffix.strip_prefix('a') {
                (0xA, n)
            } else if let Some(n) = suffix.strip_prefix('b') {
                (0xB, n)
            } else {
                return None;
            };
            (level, num.parse().ok()?)
        };
        Some(Version {
            major,
            minor,
            micro,
            level,
            serial,
        })
    }

    /// "3.11", the key of the layout tables.
    pub fn minor_key(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    pub fn at_least(&self, major: u8, minor: u8) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)?;
        match self.level {
            0xA => write!(f, "a{}", self.serial),
            0xB => write!(f, "b{}", self.serial),
            0xC => write!(f, "rc{}", self.serial),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        assert_eq!(Version::parse("3.9.2"), Some(Version::new(3, 9, 2)));
        assert_eq!(Version::parse("3.15.0a2+").unwrap().to_string(), "3.15.0a2");
        assert_eq!(Version::parse("3.13.0rc1").unwrap().level, 0xC);
        assert_eq!(Version::parse("3.x.1"), None);
        assert_eq!(Version::from_hex(0x030F02F0), Version::new(3, 15, 2));
        assert_eq!(Version::from_hex(0x030D00F0).to_string(), "3.13.0");
    }
}
