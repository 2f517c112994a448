//! Line-number tables of CPython code objects.
//!
//! CPython maps bytecode offsets to source lines with a per-code-object table whose format
//! changed twice:
//!
//! * 3.8, 3.9: `co_lnotab`, pairs `(address increment: u8, line increment: i8)`
//!   (CPython `Objects/lnotab_notes.txt`; lookup `PyCode_Addr2Line` in `Objects/codeobject.c`).
//! * 3.10: `co_linetable`, pairs `(range length in bytes: u8, line delta: i8)`, where a delta of
//!   -128 marks a range without a line (3.10 `Objects/lnotab_notes.txt`; lookup
//!   `PyCode_Addr2Line` / `_PyCode_CheckLineNumber` / `PyLineTable_NextAddressRange`).
//! * 3.11 and later: `co_linetable` is the location table of `Objects/locations.md`; only the
//!   start line is decoded here (lookup `advance()` / `get_line_delta()` in
//!   `Objects/codeobject.c`).
//!
//! [`LineTable::decode`] turns any of them, once per code object, into sorted ranges of byte
//! offsets; [`LineTable::line_at`] is then a binary search that allocates nothing.
//!
//! The answers follow CPython's `PyCode_Addr2Line` of the matching version, including its
//! edge cases (checked against every supported interpreter by `tests/linetable.rs`):
//!
//! * a negative offset (frame not started yet) gives `co_firstlineno`;
//! * 3.8/3.9: an offset past the last entry keeps the last line;
//! * 3.10+: an offset not covered by any range gives -1, as does a range without a line.
//!
//! Corrupt tables (e.g. memory read from a process while it changes) never panic: decoding
//! walks the input once, always advancing, and an entry whose line information is cut off by
//! the end of the table ends the table.

/// Which table format a code object carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineTableFormat {
    /// 3.8 and 3.9 `co_lnotab`.
    Lnotab,
    /// 3.10 `co_linetable`.
    Linetable310,
    /// 3.11+ `co_linetable` (location table).
    Locations,
}

/// One range of a decoded table: bytecode byte offsets from `start` up to the next range's
/// start (or the table's end) carry `line` (-1: no line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: u32,
    line: i32,
}

/// A decoded table: maps a bytecode *byte* offset to a source line.
#[derive(Clone, Debug)]
pub struct LineTable {
    /// Sorted by strictly increasing `start`, adjacent ranges have different lines, and the
    /// first range (if any) starts at 0.
    ranges: Box<[Range]>,
    /// Offsets at or past this get `past_end` instead of a binary search.
    end: u32,
    /// Line of offsets at or past `end`: the last line for lnotab, -1 otherwise.
    past_end: i32,
    /// Line of negative offsets.
    firstlineno: i32,
}

impl Default for LineTable {
    /// A table without any line information: -1 for every offset, 0 for negative ones.
    fn default() -> Self {
        LineTable {
            ranges: Box::default(),
            end: 0,
            past_end: -1,
            firstlineno: 0,
        }
    }
}

/// Collects ranges, merging neighbours with the same line and letting a later range that
/// starts at the same offset replace an earlier one.
struct Builder {
    ranges: Vec<Range>,
}

impl Builder {
    fn with_capacity(n: usize) -> Builder {
        Builder {
            ranges: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, start: u32, line: i32) {
        if self.ranges.last().is_some_and(|r| r.start == start) {
            self.ranges.pop();
        }
        if self.ranges.last().is_some_and(|r| r.line == line) {
            return;
        }
        self.ranges.push(Range { start, line });
    }
}

/// Reads an unsigned varint of the location table (6-bit chunks, least significant first,
/// bit 6 = more follows; `Objects/locations.md`) at `t[i..]`. Like CPython's `scan_varint`
/// it does not look at bit 7; bits beyond 32 are dropped. `None` if the table ends first.
fn read_varint(t: &[u8], mut i: usize) -> Option<u32> {
    let mut read = *t.get(i)?;
    let mut val = u32::from(read & 63);
    let mut shift = 0u32;
    while read & 64 != 0 {
        i += 1;
        read = *t.get(i)?;
        shift = shift.saturating_add(6);
        if shift < 32 {
            val |= u32::from(read & 63) << shift;
        }
    }
    Some(val)
}

/// Signed varint: the unsigned value's bit 0 is the sign, the rest the magnitude.
fn read_svarint(t: &[u8], i: usize) -> Option<i32> {
    let v = read_varint(t, i)?;
    // v >> 1 < 2^31, so the casts are lossless.
    Some(if v & 1 != 0 {
        -((v >> 1) as i32)
    } else {
        (v >> 1) as i32
    })
}

impl LineTable {
    /// Decode `table` (the raw bytes of co_lnotab / co_linetable). `firstlineno` is
    /// co_firstlineno. `code_len` is the bytecode length in bytes (len(co_code)).
    ///
    /// CPython's own lookups never consult the bytecode length (the table alone decides,
    /// also past the end of the code), so `code_len` only sizes the allocation; the answers
    /// do not depend on it. Never panics, and runs in time linear in `table.len()`.
    pub fn decode(
        format: LineTableFormat,
        table: &[u8],
        firstlineno: i32,
        code_len: u32,
    ) -> LineTable {
        // No more ranges than entries, nor (for sane tables) than instructions.
        let entries = match format {
            LineTableFormat::Lnotab | LineTableFormat::Linetable310 => table.len() / 2 + 1,
            LineTableFormat::Locations => table.len(),
        };
        let cap = entries.min(code_len as usize / 2 + 1);
        let mut b = Builder::with_capacity(cap);
        let (end, past_end) = match format {
            LineTableFormat::Lnotab => decode_lnotab(&mut b, table, firstlineno),
            LineTableFormat::Linetable310 => (decode_310(&mut b, table, firstlineno), -1),
            LineTableFormat::Locations => (decode_locations(&mut b, table, firstlineno), -1),
        };
        LineTable {
            ranges: b.ranges.into_boxed_slice(),
            end,
            past_end,
            firstlineno,
        }
    }

    /// Line of the instruction at `byte_offset` (a byte offset into the bytecode for every
    /// format: 3.8/3.9 `f_lasti`, 3.10 `2*f_lasti`, 3.11+ `2*` code-unit index). A negative
    /// offset (frame not started) gives co_firstlineno; "no line" is -1, as with CPython's
    /// `PyCode_Addr2Line`.
    pub fn line_at(&self, byte_offset: i64) -> i32 {
        if byte_offset < 0 {
            return self.firstlineno;
        }
        if byte_offset >= i64::from(self.end) {
            return self.past_end;
        }
        // end > 0 implies a first range starting at 0, so the partition point is >= 1.
        let i = self
            .ranges
            .partition_point(|r| i64::from(r.start) <= byte_offset);
        self.ranges[i - 1].line
    }

    /// Approximate heap bytes used (for cache accounting).
    pub fn heap_size(&self) -> usize {
        std::mem::size_of_val::<[Range]>(&self.ranges)
    }
}

/// 3.8/3.9 lnotab. CPython (`PyCode_Addr2Line`, 3.8 and 3.9):
/// `line = firstlineno; addr = 0; for (a, l): addr += a; if addr > q: break; line += (i8)l`.
/// So the line changes *at* each pair's cumulative address, and the last line holds for
/// every offset past the table. A trailing odd byte is ignored (CPython uses `len / 2` pairs).
/// Returns `(end, past_end)`.
fn decode_lnotab(b: &mut Builder, table: &[u8], firstlineno: i32) -> (u32, i32) {
    let mut addr = 0u32;
    let mut line = firstlineno;
    b.push(0, line);
    for pair in table.chunks_exact(2) {
        addr = addr.saturating_add(u32::from(pair[0]));
        line = line.wrapping_add(i32::from(pair[1] as i8));
        b.push(addr, line);
    }
    // From the last range's start on, past_end (the last line) answers without a search.
    let last = b.ranges.last().map_or(0, |r| r.start);
    (last, line)
}

/// 3.10 linetable. CPython (3.10 `advance()`): each pair is a range of `sdelta` bytes
/// following the previous one; `ldelta == -128` means no line and leaves the running line
/// alone, any other value is added to it. Empty ranges (`sdelta == 0`, used to split large
/// line deltas) still move the line but cover nothing. Offsets past the last range: -1.
/// A trailing odd byte is an incomplete entry and ends the table. Returns the end offset.
fn decode_310(b: &mut Builder, table: &[u8], firstlineno: i32) -> u32 {
    let mut end = 0u32;
    let mut line = firstlineno;
    for pair in table.chunks_exact(2) {
        let start = end;
        end = end.saturating_add(u32::from(pair[0]));
        let ldelta = pair[1] as i8;
        let cur = if ldelta == -128 {
            -1
        } else {
            line = line.wrapping_add(i32::from(ldelta));
            line
        };
        if end > start {
            b.push(start, cur);
        }
    }
    end
}

/// 3.11+ location table (`Objects/locations.md`). Each entry begins with a byte
/// `1 | code (4 bits) | length - 1 (3 bits)`, length in 2-byte code units, followed by payload
/// bytes with bit 7 clear. Line deltas: codes 0-9 none, 10-12 `code - 10`, 13 and 14 a signed
/// varint right after the first byte, 15 none and the range has no line.
///
/// Like CPython's `advance()`, the byte at the current position is taken as an entry's first
/// byte whatever its bit 7 says, and the next entry is the next byte with bit 7 set. An entry
/// whose line delta varint runs off the end of the table ends the table (CPython would read
/// past it); other entries only need their first byte for the line. Returns the end offset.
fn decode_locations(b: &mut Builder, t: &[u8], firstlineno: i32) -> u32 {
    let mut addr = 0u32;
    let mut line = firstlineno;
    let mut p = 0usize;
    while p < t.len() {
        let head = t[p];
        let code = (head >> 3) & 15;
        let delta = match code {
            13 | 14 => match read_svarint(t, p + 1) {
                Some(d) => d,
                None => break,
            },
            10..=12 => i32::from(code - 10),
            _ => 0,
        };
        line = line.wrapping_add(delta);
        // CPython's is_no_line_marker() compares the whole byte: `(b >> 3) == 0x1f`.
        let cur = if head >> 3 == 0x1f { -1 } else { line };
        let start = addr;
        addr = addr.saturating_add((u32::from(head & 7) + 1) * 2);
        if addr > start {
            b.push(start, cur);
        }
        p += 1;
        while p < t.len() && t[p] & 0x80 == 0 {
            p += 1;
        }
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;
    use LineTableFormat::*;

    /// All answers for offsets -2 ..= `upto`.
    fn lines(t: &LineTable, upto: i64) -> Vec<i32> {
        (-2..=upto).map(|o| t.line_at(o)).collect()
    }

    // ---- Reference implementations: the per-query loops CPython runs, transcribed naively.

    fn ref_lnotab(t: &[u8], first: i32, q: i64) -> i32 {
        let mut line = first;
        let mut addr = 0i64;
        for p in t.chunks_exact(2) {
            addr += i64::from(p[0]);
            if addr > q {
                break;
            }
            line = line.wrapping_add(i32::from(p[1] as i8));
        }
        line
    }

    fn ref_310(t: &[u8], first: i32, q: i64) -> i32 {
        if q < 0 {
            return first;
        }
        let mut line = first;
        let mut end = 0i64;
        for p in t.chunks_exact(2) {
            let start = end;
            end += i64::from(p[0]);
            let cur = if p[1] as i8 == -128 {
                -1
            } else {
                line = line.wrapping_add(i32::from(p[1] as i8));
                line
            };
            if start <= q && q < end {
                return cur;
            }
        }
        -1
    }

    fn ref_locations(t: &[u8], first: i32, q: i64) -> i32 {
        if q < 0 {
            return first;
        }
        let mut line = first;
        let mut addr = 0i64;
        let mut p = 0;
        while p < t.len() {
            let code = (t[p] >> 3) & 15;
            let n = i64::from(t[p] & 7) + 1;
            if code == 13 || code == 14 {
                // svarint, written out again independently of read_varint.
                let mut i = p + 1;
                let mut v = 0u64;
                let mut shift = 0;
                loop {
                    let Some(&byte) = t.get(i) else { return -1 };
                    if shift < 32 {
                        v |= u64::from(byte & 63) << shift;
                    }
                    shift += 6;
                    i += 1;
                    if byte & 64 == 0 {
                        break;
                    }
                }
                let v = v as u32;
                let d = if v & 1 == 1 {
                    -((v >> 1) as i32)
                } else {
                    (v >> 1) as i32
                };
                line = line.wrapping_add(d);
            } else if (10..=12).contains(&code) {
                line = line.wrapping_add(i32::from(code) - 10);
            }
            if addr * 2 <= q && q < (addr + n) * 2 {
                return if t[p] >> 3 == 0x1f { -1 } else { line };
            }
            addr += n;
            p += 1;
            while p < t.len() && t[p] & 0x80 == 0 {
                p += 1;
            }
        }
        -1
    }

    fn reference(format: LineTableFormat, t: &[u8], first: i32, q: i64) -> i32 {
        match format {
            Lnotab => ref_lnotab(t, first, q),
            Linetable310 => ref_310(t, first, q),
            Locations => ref_locations(t, first, q),
        }
    }

    /// Furthest offset a table can describe, plus a margin.
    fn span(format: LineTableFormat, t: &[u8]) -> i64 {
        match format {
            Lnotab | Linetable310 => t.chunks(2).map(|p| i64::from(p[0])).sum::<i64>() + 8,
            Locations => t.len() as i64 * 16 + 8,
        }
    }

    fn assert_matches_reference(format: LineTableFormat, t: &[u8], first: i32) {
        let lt = LineTable::decode(format, t, first, 1000);
        for q in (-3..span(format, t)).chain([i64::from(u32::MAX), i64::MAX]) {
            assert_eq!(
                lt.line_at(q),
                reference(format, t, first, q),
                "{format:?} table {t:02x?} first {first} offset {q}"
            );
        }
    }

    // ---- 3.8 / 3.9 lnotab

    #[test]
    fn lnotab_basic() {
        // line 10 at 0..6, 11 at 6..10, 13 from 10 on, for ever.
        let t = LineTable::decode(Lnotab, &[6, 1, 4, 2], 10, 16);
        assert_eq!(
            lines(&t, 12),
            [10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 13, 13, 13]
        );
        assert_eq!(t.line_at(1_000_000), 13);
        assert_eq!(t.line_at(i64::MAX), 13);
    }

    #[test]
    fn lnotab_split_jump() {
        // 300 bytes and +200 lines in one step, as the compiler splits it.
        let tab = [255, 0, 45, 127, 0, 73];
        let t = LineTable::decode(Lnotab, &tab, 1, 400);
        assert_eq!(t.line_at(0), 1);
        assert_eq!(t.line_at(254), 1);
        assert_eq!(t.line_at(255), 1);
        assert_eq!(t.line_at(299), 1);
        assert_eq!(t.line_at(300), 201);
        assert_eq!(t.line_at(398), 201);
        assert_matches_reference(Lnotab, &tab, 1);
    }

    #[test]
    fn lnotab_negative_and_leading_zero_address() {
        // A leading (0, +3) moves the line of offset 0 itself; at offset 12 the line goes back
        // 130 lines in two pairs (-100, then -30 at the same address).
        let tab = [0, 3, 8, 2, 4, 0x9c, 0, 0xe2, 2, 1];
        let t = LineTable::decode(Lnotab, &tab, 200, 20);
        assert_eq!(t.line_at(-1), 200);
        assert_eq!(t.line_at(0), 203);
        assert_eq!(t.line_at(8), 205);
        assert_eq!(t.line_at(12), 75);
        assert_eq!(t.line_at(14), 76);
        assert_matches_reference(Lnotab, &tab, 200);
    }

    #[test]
    fn lnotab_empty_and_odd() {
        let t = LineTable::decode(Lnotab, &[], 7, 10);
        assert_eq!(lines(&t, 3), [7; 6]);
        // The odd trailing byte is not a pair; CPython ignores it.
        let t = LineTable::decode(Lnotab, &[2, 1, 200], 7, 10);
        assert_eq!(lines(&t, 3), [7, 7, 7, 7, 8, 8]);
        assert_eq!(t.line_at(250), 8);
    }

    // ---- 3.10 linetable

    #[test]
    fn linetable310_basic_and_no_line() {
        // 0..4 line 5; 4..8 no line; 8..10 line 6 (the -128 did not move the line); then end.
        let tab = [4, 0, 4, 0x80, 2, 1];
        let t = LineTable::decode(Linetable310, &tab, 5, 10);
        assert_eq!(
            lines(&t, 11),
            [5, 5, 5, 5, 5, 5, -1, -1, -1, -1, 6, 6, -1, -1]
        );
        assert_eq!(t.line_at(i64::MAX), -1);
        assert_matches_reference(Linetable310, &tab, 5);
    }

    #[test]
    fn linetable310_zero_length_entries() {
        // +300 lines over three pairs, two of them empty; a 254-byte range needs no split.
        let tab = [0, 127, 0, 127, 254, 46, 2, 0xfe];
        let t = LineTable::decode(Linetable310, &tab, 1, 256);
        assert_eq!(t.line_at(0), 301);
        assert_eq!(t.line_at(253), 301);
        assert_eq!(t.line_at(254), 299);
        assert_eq!(t.line_at(255), 299);
        assert_eq!(t.line_at(256), -1);
        assert_matches_reference(Linetable310, &tab, 1);
    }

    #[test]
    fn linetable310_empty_and_odd() {
        let t = LineTable::decode(Linetable310, &[], 3, 0);
        assert_eq!(lines(&t, 2), [3, 3, -1, -1, -1]);
        // A trailing byte without its line delta ends the table.
        let t = LineTable::decode(Linetable310, &[2, 0, 6], 3, 8);
        assert_eq!(lines(&t, 4), [3, 3, 3, 3, -1, -1, -1]);
    }

    // ---- 3.11+ location table

    /// First byte of a location entry.
    fn head(code: u8, units: u8) -> u8 {
        0x80 | code << 3 | (units - 1)
    }

    /// Unsigned varint as in Objects/locations.md.
    fn varint(mut v: u32, out: &mut Vec<u8>) {
        while v >= 64 {
            out.push(64 | (v & 63) as u8);
            v >>= 6;
        }
        out.push(v as u8);
    }

    fn svarint(s: i32, out: &mut Vec<u8>) {
        let v = if s < 0 {
            (s.unsigned_abs() << 1) | 1
        } else {
            (s as u32) << 1
        };
        varint(v, out);
    }

    #[test]
    fn varint_examples_from_locations_md() {
        assert_eq!(read_varint(&[0x3f], 0), Some(63));
        assert_eq!(read_varint(&[0x48, 0x03], 0), Some(200));
        assert_eq!(read_varint(&[0x48], 0), None);
        assert_eq!(read_svarint(&[0x03], 0), Some(-1));
        assert_eq!(read_svarint(&[0x04], 0), Some(2));
    }

    #[test]
    fn locations_all_entry_kinds() {
        let mut t = Vec::new();
        // units 0..1: no location (line None, line unchanged)
        t.push(head(15, 1));
        // 1..3: short form, line 10 (= firstlineno)
        t.extend([head(3, 2), 0x12]);
        // 3..4: one-line form +2 -> 12
        t.extend([head(12, 1), 4, 9]);
        // 4..12: no-column form -7 -> 5
        t.push(head(13, 8));
        svarint(-7, &mut t);
        // 12..13: long form +1000 -> 1005 (multi-chunk varint), then columns
        t.push(head(14, 1));
        svarint(1000, &mut t);
        varint(3, &mut t);
        varint(1, &mut t);
        varint(300, &mut t);
        // 13..15: one-line +1 -> 1006, 15..16: one-line +0
        t.extend([head(11, 2), 1, 2, head(10, 1), 0, 1]);
        let lt = LineTable::decode(Locations, &t, 10, 32);
        let by_unit: Vec<i32> = (0..17).map(|u| lt.line_at(2 * u)).collect();
        assert_eq!(
            by_unit,
            [-1, 10, 10, 12, 5, 5, 5, 5, 5, 5, 5, 5, 1005, 1006, 1006, 1006, -1]
        );
        // Odd byte offsets belong to their code unit.
        assert_eq!(lt.line_at(7), 12);
        assert_eq!(lt.line_at(-1), 10);
        assert_eq!(lt.line_at(i64::MAX), -1);
        assert_matches_reference(Locations, &t, 10);
    }

    #[test]
    fn locations_truncated() {
        // A long-form entry whose line varint is cut off ends the table ...
        let mut t = vec![head(10, 2), 0, 0, head(14, 1), 0x41];
        let lt = LineTable::decode(Locations, &t, 4, 8);
        assert_eq!(lines(&lt, 6), [4, 4, 4, 4, 4, 4, -1, -1, -1]);
        // ... but a complete line delta is enough, whatever columns are missing.
        t.push(0x01);
        let lt = LineTable::decode(Locations, &t, 4, 8);
        // 0x41 0x01 = 65 = -(65 >> 1) as svarint.
        assert_eq!(lt.line_at(4), 4 - 32);
        assert_eq!(lt.line_at(6), -1);
        // A first byte without bit 7 still counts as an entry (as in CPython).
        let lt = LineTable::decode(Locations, &[0x7f, 0x07], 4, 8);
        assert_eq!(lt.line_at(0), 4);
        assert_eq!(lt.line_at(15), 4);
        assert_eq!(lt.line_at(16), -1);
        assert!(LineTable::decode(Locations, &[], 4, 0).line_at(0) == -1);
    }

    #[test]
    fn default_has_no_lines() {
        let t = LineTable::default();
        assert_eq!(t.line_at(0), -1);
        assert_eq!(t.line_at(-5), 0);
        assert_eq!(t.heap_size(), 0);
    }

    #[test]
    fn heap_size_counts_ranges() {
        let t = LineTable::decode(Lnotab, &[2, 1, 2, 1, 2, 1], 1, 8);
        assert_eq!(t.heap_size(), 4 * 8);
    }

    // ---- Property check: random tables agree with the naive loops and never panic.

    /// splitmix64: a tiny deterministic PRNG.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A random table: pure noise, or well-formed-looking entries with some noise mixed in.
    fn random_table(rng: &mut Rng, format: LineTableFormat) -> Vec<u8> {
        let len = rng.below(40) as usize;
        let mut t = Vec::with_capacity(len);
        let noise = rng.below(3) == 0;
        while t.len() < len {
            if noise || rng.below(10) == 0 {
                t.push(rng.next() as u8);
                continue;
            }
            match format {
                Lnotab | Linetable310 => {
                    let special = [0u8, 1, 2, 127, 128, 255];
                    t.push(if rng.below(2) == 0 {
                        special[rng.below(6) as usize]
                    } else {
                        rng.below(20) as u8 * 2
                    });
                    t.push(special[rng.below(6) as usize].wrapping_add(rng.below(3) as u8));
                }
                Locations => {
                    let code = rng.below(16) as u8;
                    t.push(head(code, 1 + rng.below(8) as u8));
                    match code {
                        0..=9 => t.push(rng.below(128) as u8),
                        10..=12 => t.extend([rng.below(128) as u8, rng.below(128) as u8]),
                        13 | 14 => {
                            svarint(rng.below(4000) as i32 - 2000, &mut t);
                            if code == 14 {
                                for _ in 0..3 {
                                    varint(rng.below(300) as u32, &mut t);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        t.truncate(len);
        t
    }

    #[test]
    fn random_tables_agree_with_reference() {
        let mut rng = Rng(0x5eed);
        for format in [Lnotab, Linetable310, Locations] {
            for _ in 0..3000 {
                let t = random_table(&mut rng, format);
                let first = match rng.below(4) {
                    0 => 0,
                    1 => i32::MAX - 3,
                    _ => rng.below(5000) as i32,
                };
                assert_matches_reference(format, &t, first);
            }
        }
    }

    #[test]
    fn large_random_input_is_linear() {
        // 1 MiB of noise in every format: decodes quickly, answers every query.
        let mut rng = Rng(42);
        let t: Vec<u8> = (0..1 << 20).map(|_| rng.next() as u8).collect();
        for format in [Lnotab, Linetable310, Locations] {
            let lt = LineTable::decode(format, &t, 1, u32::MAX);
            for _ in 0..10_000 {
                let q = rng.next() as i64 >> rng.below(64);
                let _ = lt.line_at(q);
            }
            assert!(lt.heap_size() <= (t.len() + 1) * 8);
        }
    }
}
