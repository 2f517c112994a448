//! Text that comes from a recording (a target's function and file names, its command line, its
//! source, the paths a user passed) made safe for where reports write it. A target controls its
//! own names: without this, a name holding `ESC [` sequences writes into the user's terminal,
//! and one holding control characters makes an SVG that no XML parser reads.
//!
//! [`visible`] is the one rule every text output uses: each character that a terminal, a
//! spreadsheet, a Markdown renderer or an XML parser would act on instead of showing is written
//! as a visible escape, and every other character is kept as it is:
//! - C0 controls and DEL: `\t`, `\n`, `\r`, else `\x1b` (XML 1.0 forbids most of them even as
//!   character references);
//! - C1 controls (U+0080 to U+009F, e.g. CSI U+009B, which terminals take as `ESC [`):
//!   `\u{9b}`;
//! - the Unicode bidirectional controls that reorder what a reader sees ("Trojan source":
//!   U+202A to U+202E, U+2066 to U+2069, and the marks U+200E, U+200F, U+061C), the line and
//!   paragraph separators U+2028 and U+2029, and U+FFFE and U+FFFF (not characters; XML forbids
//!   them): `\u{202e}`.
//!
//! JSON outputs do not use it: serde escapes what JSON needs and keeps names exact.

use std::borrow::Cow;

/// The visible escape of `c`, if it needs one.
fn escape(c: char) -> Option<String> {
    Some(match c {
        '\t' => "\\t".into(),
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        '\0'..='\x1f' | '\x7f' => format!("\\x{:02x}", c as u32),
        '\u{80}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}'
        | '\u{fffe}'
        | '\u{ffff}' => format!("\\u{{{:x}}}", c as u32),
        _ => return None,
    })
}

/// `s` with every character that would act instead of show replaced by a visible escape
/// (see the module documentation); borrowed when nothing needed one.
pub fn visible(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| escape(c).is_some()) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match escape(c) {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Text on one line, made [`visible`]: runs of whitespace (the newlines of a `python -c`
/// script) become one space, and text longer than `max` characters is cut (never inside an
/// escape) and ends with "…".
pub fn one_line(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut width = 0;
    // How much of `out` to keep if the text turns out too long: what leaves room for "…".
    let mut keep = 0;
    let mut first = true;
    for word in s.split_whitespace() {
        for (at, c) in word.char_indices() {
            let piece: Cow<str> = match escape(c) {
                Some(e) => Cow::Owned(e),
                None => Cow::Borrowed(&word[at..at + c.len_utf8()]),
            };
            let space = at == 0 && !first;
            let n = piece.chars().count() + usize::from(space);
            if width + n > max {
                out.truncate(keep);
                out.push('…');
                return out;
            }
            if space {
                out.push(' ');
            }
            out.push_str(&piece);
            width += n;
            if width < max {
                keep = out.len();
            }
        }
        first = false;
    }
    out
}

/// Text for a cell of a Markdown table (and the lines around one), on one line: made
/// [`visible`], with what Markdown or the HTML it allows would act on made literal: `|` would
/// end the cell, `` ` ``, `*`, `_`, `[`, `]`, `~` and `\` would format or link, `<`, `>` and `&`
/// would open HTML tags and entities.
pub fn markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in one_line(s, usize::MAX).chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '|' | '`' | '*' | '_' | '[' | ']' | '~' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// The longest error or warning line memspy prints, in characters.
pub const MESSAGE_MAX: usize = 400;

/// An error or warning for the terminal: one line, [`visible`], at most [`MESSAGE_MAX`]
/// characters (a message can quote a target's command or a path from a recording).
pub fn message(s: &str) -> String {
    one_line(s, MESSAGE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible() {
        assert_eq!(visible("plain é 漢字 <&>"), "plain é 漢字 <&>");
        assert!(matches!(visible("plain"), Cow::Borrowed(_)));
        assert_eq!(visible("a\x1b[31mred"), "a\\x1b[31mred");
        assert_eq!(visible("\0\x07\x7f\t\n\r"), "\\x00\\x07\\x7f\\t\\n\\r");
        assert_eq!(visible("\u{9b}2J\u{85}"), "\\u{9b}2J\\u{85}");
        assert_eq!(
            visible("admin\u{202e}\u{2066}txt.exe\u{2069}\u{200f}"),
            "admin\\u{202e}\\u{2066}txt.exe\\u{2069}\\u{200f}"
        );
        assert_eq!(
            visible("\u{fffe}\u{ffff}\u{2028}"),
            "\\u{fffe}\\u{ffff}\\u{2028}"
        );
        // Escaping twice changes nothing.
        let once = visible("x\x1by\u{9b}").into_owned();
        assert_eq!(visible(&once), once);
    }

    #[test]
    fn one_line_squeezes_escapes_and_cuts() {
        assert_eq!(
            one_line("python -c \"\nimport x\n  x.y()\"", 80),
            "python -c \" import x x.y()\""
        );
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("abcd", 4), "abcd");
        assert_eq!(one_line("  a  ", 4), "a");
        assert_eq!(one_line("", 4), "");
        // NEL and the line separator are whitespace; ESC is not, and is escaped.
        assert_eq!(one_line("a\u{85}b\u{2028}c\x1bd", 80), "a b c\\x1bd");
        // Never cut inside an escape.
        assert_eq!(one_line("ab\x1bcd", 5), "ab…");
        assert_eq!(one_line("ab\x1b", 6), "ab\\x1b");
        let long = "x".repeat(100_000);
        assert_eq!(one_line(&long, 400).chars().count(), 400);
        assert_eq!(one_line("ab cd", 4), "ab…");
        assert_eq!(one_line("ab cd", 5), "ab cd");
        assert_eq!(one_line("abc", 0), "…");
        assert_eq!(one_line(&long, usize::MAX), long);
    }

    #[test]
    fn markdown_cells_cannot_break_out() {
        assert_eq!(
            markdown("a|b `c` <script>&amp; [x](http://e) *y* _z_ \\ ~w~"),
            "a\\|b \\`c\\` &lt;script&gt;&amp;amp; \\[x\\](http://e) \\*y\\* \\_z\\_ \\\\ \\~w\\~"
        );
        assert_eq!(markdown("two\nlines\x1b"), "two lines\\\\x1b");
    }

    #[test]
    fn messages_are_short_single_lines() {
        let m = message(&format!("bad {}\nsecond line\x1b[2J", "v".repeat(100_000)));
        assert!(m.chars().count() <= MESSAGE_MAX && !m.contains('\n') && !m.contains('\x1b'));
        assert!(m.ends_with('…'));
    }
}
