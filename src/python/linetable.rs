//! Line-number tables of CPython code objects (temporary version; replaced by the full decoder).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineTableFormat {
    Lnotab,
    Linetable310,
    Locations,
}

#[derive(Clone, Debug, Default)]
pub struct LineTable {
    starts: Vec<(u32, i32)>,
    firstlineno: i32,
}

impl LineTable {
    pub fn decode(format: LineTableFormat, t: &[u8], firstlineno: i32, code_len: u32) -> LineTable {
        let mut starts = Vec::new();
        match format {
            LineTableFormat::Lnotab => {
                let (mut addr, mut line) = (0u32, firstlineno);
                starts.push((0, line));
                for p in t.chunks_exact(2) {
                    addr += p[0] as u32;
                    line += p[1] as i8 as i32;
                    starts.push((addr, line));
                }
            }
            LineTableFormat::Linetable310 => {
                let (mut end, mut line) = (0u32, firstlineno);
                for p in t.chunks_exact(2) {
                    let start = end;
                    end += p[0] as u32;
                    let cur = if p[1] as i8 == -128 { -1 } else { line += p[1] as i8 as i32; line };
                    if end > start { starts.push((start, cur)); }
                }
                starts.push((end, -1));
            }
            LineTableFormat::Locations => {
                let (mut addr, mut line, mut p) = (0u32, firstlineno, 0usize);
                let varint = |p: &mut usize| -> u32 {
                    let mut v = 0u32; let mut shift = 0;
                    while *p < t.len() { let b = t[*p]; *p += 1; v |= ((b & 63) as u32) << shift; shift += 6; if b & 64 == 0 || shift > 30 { break; } }
                    v
                };
                while p < t.len() {
                    let code = (t[p] >> 3) & 15; let n = (t[p] & 7) as u32 + 1; p += 1;
                    let mut cur = line;
                    match code {
                        15 => cur = -1,
                        13 | 14 => { let v = varint(&mut p); let d = if v & 1 == 1 { -((v >> 1) as i32) } else { (v >> 1) as i32 }; line += d; cur = line; }
                        10..=12 => { line += code as i32 - 10; cur = line; }
                        _ => {}
                    }
                    starts.push((addr * 2, cur));
                    addr += n;
                    while p < t.len() && t[p] & 0x80 == 0 { p += 1; }
                }
                starts.push((addr * 2, -1));
            }
        }
        let _ = code_len;
        LineTable { starts, firstlineno }
    }

    pub fn line_at(&self, off: i64) -> i32 {
        if off < 0 { return self.firstlineno; }
        match self.starts.partition_point(|s| s.0 as i64 <= off) { 0 => -1, i => self.starts[i - 1].1 }
    }
}
