//! Decoding Python objects memspy needs from a target's memory: `str` (names and file names,
//! in all four storage kinds), `bytes` (line tables, 3.8-3.10 bytecode), and, through
//! [`Objects`], ints, types, dicts, modules and instance attributes (thread names, gevent's and
//! asyncio's objects).
//!
//! Lengths are bounded so that a pointer that raced a deallocation yields an error, not a huge
//! allocation; every count read from the target is checked before it sizes anything.

use super::layout::{InstanceDict, Layout};
use crate::target::memory::{i64_at, u32_at, u64_at, u8_at, ReadError, ReadFault, RemoteMemory};

/// Longest str memspy decodes (characters).
pub const MAX_STR_CHARS: u64 = 1 << 16;
/// Longest bytes object memspy reads (line tables of huge functions stay well below this).
pub const MAX_BYTES: u64 = 1 << 24;

/// Why an object could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectError {
    Read(ReadError),
    /// The bytes read do not make a valid object of the expected type.
    Invalid(&'static str),
}

impl From<ReadError> for ObjectError {
    fn from(e: ReadError) -> Self {
        ObjectError::Read(e)
    }
}

impl ObjectError {
    pub fn fault(&self) -> Option<ReadFault> {
        match self {
            ObjectError::Read(e) => Some(e.fault),
            ObjectError::Invalid(_) => None,
        }
    }
}

/// Read a `str` object.
pub fn read_str(mem: &dyn RemoteMemory, layout: &Layout, addr: u64) -> Result<String, ObjectError> {
    if addr == 0 {
        return Err(ObjectError::Invalid("NULL str"));
    }
    let u = &layout.unicode;
    let mut header = [0u8; 96];
    let header_len =
        (u.compact_data.max(u.data_any + 8).max(u.state + 4) as usize).min(header.len());
    mem.read(addr, &mut header[..header_len])?;
    let length = i64_at(&header, u.length);
    let state = u32_at(&header, u.state);
    let kind = (state >> 2) & 7;
    let compact = (state >> 5) & 1 == 1;
    let ascii = (state >> 6) & 1 == 1;
    if u.has_ready_bit && (state >> 7) & 1 == 0 {
        return Err(ObjectError::Invalid("str not ready (legacy wchar string)"));
    }
    if !(0..=MAX_STR_CHARS as i64).contains(&length) {
        return Err(ObjectError::Invalid("str length out of range"));
    }
    let width = match kind {
        1 | 2 | 4 => kind as usize,
        _ => return Err(ObjectError::Invalid("str kind")),
    };
    let data = match (compact, ascii) {
        (true, true) => addr.wrapping_add(u.ascii_data),
        (true, false) => addr.wrapping_add(u.compact_data),
        (false, _) => u64_at(&header, u.data_any),
    };
    let mut raw = vec![0u8; length as usize * width];
    mem.read(data, &mut raw)?;
    Ok(decode_str(&raw, width))
}

/// Decode the characters of a str of `width` bytes per character (1 = Latin-1, 2 = UCS-2,
/// 4 = UCS-4). Lone surrogates (possible in Python strs) become U+FFFD.
pub fn decode_str(raw: &[u8], width: usize) -> String {
    match width {
        1 => raw.iter().map(|&b| b as char).collect(),
        2 => raw
            .chunks_exact(2)
            .map(|c| char::from_u32(u16::from_le_bytes([c[0], c[1]]) as u32).unwrap_or('\u{FFFD}'))
            .collect(),
        _ => raw
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{FFFD}')
            })
            .collect(),
    }
}

/// Read a `bytes` object's content.
pub fn read_bytes(
    mem: &dyn RemoteMemory,
    layout: &Layout,
    addr: u64,
) -> Result<Vec<u8>, ObjectError> {
    if addr == 0 {
        return Err(ObjectError::Invalid("NULL bytes"));
    }
    let mut header = [0u8; 8];
    mem.read(addr.wrapping_add(layout.ob_size), &mut header)?;
    let len = i64_at(&header, 0);
    if !(0..=MAX_BYTES as i64).contains(&len) {
        return Err(ObjectError::Invalid("bytes length out of range"));
    }
    let mut out = vec![0u8; len as usize];
    mem.read(addr.wrapping_add(layout.bytes_sval), &mut out)?;
    Ok(out)
}

/// Length of a `bytes` object.
pub fn bytes_len(mem: &dyn RemoteMemory, layout: &Layout, addr: u64) -> Result<u64, ObjectError> {
    let mut header = [0u8; 8];
    mem.read(addr.wrapping_add(layout.ob_size), &mut header)?;
    let len = i64_at(&header, 0);
    if !(0..=MAX_BYTES as i64).contains(&len) {
        return Err(ObjectError::Invalid("bytes length out of range"));
    }
    Ok(len as u64)
}

/// `tp_flags` bits (Include/object.h).
pub const TPFLAGS_INLINE_VALUES: u64 = 1 << 2;
pub const TPFLAGS_MANAGED_DICT: u64 = 1 << 4;
pub const TPFLAGS_LONG_SUBCLASS: u64 = 1 << 24;
pub const TPFLAGS_UNICODE_SUBCLASS: u64 = 1 << 28;
pub const TPFLAGS_DICT_SUBCLASS: u64 = 1 << 29;

/// Most entries memspy reads from one dict (`sys.modules` of a big application has a few
/// thousand; a thread table as many as there are threads).
pub const MAX_DICT_ENTRIES: u64 = 1 << 17;
/// Longest base-class chain followed.
const MAX_BASES: usize = 64;

/// Reads ints, types, dicts and attributes of a target's objects.
pub struct Objects<'a> {
    pub mem: &'a dyn RemoteMemory,
    pub layout: &'a Layout,
}

impl<'a> Objects<'a> {
    pub fn new(mem: &'a dyn RemoteMemory, layout: &'a Layout) -> Objects<'a> {
        Objects { mem, layout }
    }

    pub fn word(&self, addr: u64) -> Result<u64, ObjectError> {
        let mut b = [0u8; 8];
        self.mem.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn type_of(&self, obj: u64) -> Result<u64, ObjectError> {
        if obj == 0 {
            return Err(ObjectError::Invalid("NULL object"));
        }
        self.word(obj.wrapping_add(self.layout.ob_type))
    }

    pub fn type_flags(&self, tp: u64) -> Result<u64, ObjectError> {
        self.word(tp.wrapping_add(self.layout.objects.type_flags))
    }

    /// `tp_name` of a type (a C string; at most 200 bytes are read).
    pub fn type_name(&self, tp: u64) -> Result<String, ObjectError> {
        let name = self.word(tp.wrapping_add(self.layout.objects.type_name))?;
        self.c_string(name, 200)
    }

    /// A NUL-terminated string of at most `max` bytes (the read stops at the end of a page, so
    /// a short string at the end of a mapping reads).
    pub fn c_string(&self, addr: u64, max: usize) -> Result<String, ObjectError> {
        if addr == 0 {
            return Err(ObjectError::Invalid("NULL C string"));
        }
        let mut buf = vec![0u8; max];
        let to_page_end = (4096 - (addr % 4096)) as usize;
        let first = to_page_end.min(max);
        self.mem.read(addr, &mut buf[..first])?;
        let mut end = buf[..first].iter().position(|&b| b == 0);
        if end.is_none() && first < max {
            self.mem
                .read(addr.wrapping_add(first as u64), &mut buf[first..])?;
            end = buf.iter().position(|&b| b == 0);
        }
        let end = end.ok_or(ObjectError::Invalid("C string too long"))?;
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    /// Whether type `tp` is `base` or inherits from it (through `tp_base`).
    pub fn is_subtype(&self, mut tp: u64, base: u64) -> Result<bool, ObjectError> {
        for _ in 0..MAX_BASES {
            if tp == base {
                return Ok(true);
            }
            if tp == 0 {
                return Ok(false);
            }
            tp = self.word(tp.wrapping_add(self.layout.objects.type_base))?;
        }
        Err(ObjectError::Invalid("base-class chain does not end"))
    }

    /// The value of an int that fits in an `i64` (larger ones are refused).
    pub fn int_value(&self, obj: u64) -> Result<i64, ObjectError> {
        let o = &self.layout.objects;
        let mut b = [0u8; 40];
        let len = (o.long_digits + 12) as usize;
        if len > b.len() {
            return Err(ObjectError::Invalid("int layout"));
        }
        self.mem.read(obj, &mut b[..len])?;
        let header = i64_at(&b, self.layout.ob_size);
        let (count, sign) = if o.long_tagged {
            let tag = header as u64;
            let sign = match tag & 3 {
                0 => 1i128,
                1 => 0,
                _ => -1,
            };
            (tag >> 3, sign)
        } else {
            (header.unsigned_abs(), header.signum() as i128)
        };
        if count > 3 {
            return Err(ObjectError::Invalid("int too large"));
        }
        let mut value: i128 = 0;
        for i in 0..count {
            let digit = u32_at(&b, o.long_digits + 4 * i) & 0x3fff_ffff;
            value |= (digit as i128) << (30 * i);
        }
        i64::try_from(sign * value).map_err(|_| ObjectError::Invalid("int too large"))
    }

    /// Whether `obj` is a str equal to the ASCII text `name` (one read of the header and the
    /// characters; only compact ASCII strs can be equal to an ASCII name).
    pub fn str_equals(&self, obj: u64, name: &str) -> Result<bool, ObjectError> {
        if obj == 0 {
            return Ok(false);
        }
        let u = &self.layout.unicode;
        let data = u.ascii_data as usize;
        let mut b = [0u8; 160];
        let len = data + name.len();
        if len > b.len() {
            return Ok(false);
        }
        self.mem.read(obj, &mut b[..len])?;
        let length = i64_at(&b, u.length);
        let state = u32_at(&b, u.state);
        // compact (bit 5) and ascii (bit 6)
        if length != name.len() as i64 || (state >> 5) & 3 != 3 || &b[data..len] != name.as_bytes()
        {
            return Ok(false);
        }
        let tp = u64_at(&b, self.layout.ob_type);
        Ok(self.type_flags(tp)? & TPFLAGS_UNICODE_SUBCLASS != 0)
    }

    /// Where the entries of a dict-keys object are: (first entry, entry size, key offset, value
    /// offset, number of entries).
    fn keys_entries(&self, keys: u64) -> Result<(u64, u64, u64, u64, u64), ObjectError> {
        let o = &self.layout.objects;
        let mut b = [0u8; 48];
        self.mem.read(keys, &mut b)?;
        let nentries = i64_at(&b, o.keys_nentries);
        if !(0..=MAX_DICT_ENTRIES as i64).contains(&nentries) {
            return Err(ObjectError::Invalid("dict entry count out of range"));
        }
        let indices = keys.wrapping_add(o.keys_indices);
        if let Some(size_off) = o.keys_size {
            // 3.8-3.10: the index table's width follows from its size.
            let size = i64_at(&b, size_off);
            if !(1..=(MAX_DICT_ENTRIES as i64) * 4).contains(&size) {
                return Err(ObjectError::Invalid("dict size out of range"));
            }
            let width = if size <= 0xff {
                1
            } else if size <= 0xffff {
                2
            } else {
                4
            };
            let entries = indices.wrapping_add(size as u64 * width);
            return Ok((entries, 24, 8, 16, nentries as u64));
        }
        let log2_index_bytes = u8_at(&b, o.keys_log2_index_bytes.unwrap_or(9)) as u64;
        let kind = u8_at(&b, o.keys_kind.unwrap_or(10));
        if log2_index_bytes > 24 {
            return Err(ObjectError::Invalid("dict index size out of range"));
        }
        let entries = indices.wrapping_add(1 << log2_index_bytes);
        Ok(if kind == 0 {
            (entries, 24, 8, 16, nentries as u64)
        } else {
            // Unicode-keyed and split tables: {key, value} pairs.
            (entries, 16, 0, 8, nentries as u64)
        })
    }

    /// The (key, value) pairs of a dict, or of a split table (`keys` with a separate `values`
    /// array), in order; empty slots are skipped.
    pub fn dict_items(&self, dict: u64) -> Result<Vec<(u64, u64)>, ObjectError> {
        let o = &self.layout.objects;
        let keys = self.word(dict.wrapping_add(o.dict_keys))?;
        let values = self.word(dict.wrapping_add(o.dict_values))?;
        self.table_items(keys, (values != 0).then_some(values))
    }

    fn table_items(&self, keys: u64, values: Option<u64>) -> Result<Vec<(u64, u64)>, ObjectError> {
        let o = &self.layout.objects;
        let (entries, size, key_off, value_off, n) = self.keys_entries(keys)?;
        let mut raw = vec![0u8; (n * size) as usize];
        self.mem.read(entries, &mut raw)?;
        let split = match values {
            Some(v) => {
                let mut vals = vec![0u8; (n * 8) as usize];
                self.mem.read(v.wrapping_add(o.values_array), &mut vals)?;
                Some(vals)
            }
            None => None,
        };
        let mut out = Vec::new();
        for i in 0..n {
            let key = u64_at(&raw, i * size + key_off);
            let value = match &split {
                Some(vals) => u64_at(vals, i * 8),
                None => u64_at(&raw, i * size + value_off),
            };
            if key != 0 && value != 0 {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// `dict[name]` for a str key.
    pub fn dict_get(&self, dict: u64, name: &str) -> Result<Option<u64>, ObjectError> {
        self.find(self.dict_items(dict)?, name)
    }

    fn find(&self, items: Vec<(u64, u64)>, name: &str) -> Result<Option<u64>, ObjectError> {
        for (key, value) in items {
            // A key that cannot be read is not the one looked for (the dict may hold
            // anything); the dict itself was read whole.
            if self.str_equals(key, name).unwrap_or(false) {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// `obj.__dict__[name]` for an instance of a Python class, wherever this version keeps
    /// the instance's attributes.
    pub fn attribute(&self, obj: u64, name: &str) -> Result<Option<u64>, ObjectError> {
        let o = &self.layout.objects;
        let tp = self.type_of(obj)?;
        let flags = self.type_flags(tp)?;
        let by_offset = |this: &Self| -> Result<Option<u64>, ObjectError> {
            let off = this.word(tp.wrapping_add(o.type_dictoffset))? as i64;
            if off <= 0 || off > 1 << 16 {
                return Ok(None);
            }
            match this.word(obj.wrapping_add(off as u64))? {
                0 => Ok(None),
                dict => this.dict_get(dict, name),
            }
        };
        if o.instance_dict == InstanceDict::DictOffset || flags & TPFLAGS_MANAGED_DICT == 0 {
            return by_offset(self);
        }
        let cached_keys = || self.word(tp.wrapping_add(o.heap_cached_keys));
        match o.instance_dict {
            InstanceDict::Values311 => {
                let values = self.word(obj.wrapping_sub(32))?;
                if values != 0 {
                    return self.find(self.table_items(cached_keys()?, Some(values))?, name);
                }
                match self.word(obj.wrapping_sub(24))? {
                    0 => Ok(None),
                    dict => self.dict_get(dict, name),
                }
            }
            InstanceDict::Tagged312 => {
                let v = self.word(obj.wrapping_sub(24))?;
                if v & 1 == 1 {
                    // Values stored as `values - 1` (odd: values are word-aligned).
                    let values = v.wrapping_add(1);
                    return self.find(self.table_items(cached_keys()?, Some(values))?, name);
                }
                match v {
                    0 => Ok(None),
                    dict => self.dict_get(dict, name),
                }
            }
            _ => {
                let dict = self.word(obj.wrapping_sub(24))?;
                if dict != 0 {
                    return self.dict_get(dict, name);
                }
                if flags & TPFLAGS_INLINE_VALUES == 0 {
                    return Ok(None);
                }
                let basicsize = self.word(tp.wrapping_add(o.type_basicsize))?;
                if basicsize == 0 || basicsize > 1 << 16 {
                    return Err(ObjectError::Invalid("type size out of range"));
                }
                let values = obj.wrapping_add(basicsize);
                // Invalidated inline values (the attributes moved to a dict) are not read.
                let mut valid = [0u8; 1];
                self.mem
                    .read(values.wrapping_add(o.values_valid.unwrap_or(3)), &mut valid)?;
                if valid[0] == 0 {
                    return Ok(None);
                }
                self.find(self.table_items(cached_keys()?, Some(values))?, name)
            }
        }
    }

    /// `sys.modules[name]` of the interpreter at `interp`.
    pub fn module(&self, interp: u64, name: &str) -> Result<Option<u64>, ObjectError> {
        let modules = self.word(interp.wrapping_add(self.layout.objects.interp_modules))?;
        if modules == 0 {
            return Ok(None);
        }
        self.dict_get(modules, name)
    }

    /// A module's global `name`.
    pub fn module_global(&self, module: u64, name: &str) -> Result<Option<u64>, ObjectError> {
        let dict = self.word(module.wrapping_add(self.layout.objects.module_dict))?;
        if dict == 0 {
            return Ok(None);
        }
        self.dict_get(dict, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_kind() {
        assert_eq!(decode_str(b"caf\xe9", 1), "café");
        let ucs2: Vec<u8> = "漢字"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(decode_str(&ucs2, 2), "漢字");
        let ucs4: Vec<u8> = "f_𠀀"
            .chars()
            .flat_map(|c| (c as u32).to_le_bytes())
            .collect();
        assert_eq!(decode_str(&ucs4, 4), "f_𠀀");
        // A lone surrogate (e.g. from surrogateescape) does not break decoding.
        assert_eq!(decode_str(&[0x00, 0xD8], 2), "\u{FFFD}");
    }
}
