//! Decoding Python objects memspy needs from a target's memory: `str` (names and file names,
//! in all four storage kinds) and `bytes` (line tables, 3.8-3.10 bytecode).
//!
//! Lengths are bounded so that a pointer that raced a deallocation yields an error, not a huge
//! allocation.

use super::layout::Layout;
use crate::target::memory::{i64_at, u32_at, u64_at, ReadError, ReadFault, RemoteMemory};

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
