//! Code objects: what memspy keeps of each (names, file, line table), cached by remote address.
//!
//! A cache entry remembers the code object's identity fields (type, size, first line and the
//! pointers to its name, file name and line table). A later sample that finds a code object at
//! the same address compares those fields, read in one small batched read, before trusting the
//! entry: a freed code object whose memory was reused fails the comparison and is decoded anew.

use crate::FastMap;
use std::sync::Arc;

use super::layout::Layout;
use super::linetable::LineTable;
use super::objects::{bytes_len, read_bytes, read_str, ObjectError};
use crate::target::memory::{i32_at, i64_at, u64_at, RemoteMemory};

/// What a profile shows of a function.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CodeInfo {
    /// `co_name`.
    pub name: Arc<str>,
    /// `co_qualname` (3.11+), else `co_name`.
    pub qualname: Arc<str>,
    /// `co_filename`.
    pub filename: Arc<str>,
    pub firstlineno: i32,
}

/// Fields that identify a code object at an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CodeIdentity {
    pub ob_type: u64,
    pub ob_size: i64,
    pub firstlineno: i32,
    pub filename: u64,
    pub name: u64,
    pub qualname: u64,
    pub linetable: u64,
    pub bytecode: u64,
    /// `_co_firsttraceable` (3.11+): frames before it are still being set up.
    pub firsttraceable: i32,
}

impl CodeIdentity {
    /// Decode from the first `layout.code.read_len` bytes of a code object.
    pub fn decode(layout: &Layout, header: &[u8]) -> CodeIdentity {
        let c = &layout.code;
        CodeIdentity {
            ob_type: u64_at(header, layout.ob_type),
            ob_size: i64_at(header, layout.ob_size),
            firstlineno: i32_at(header, c.firstlineno),
            filename: u64_at(header, c.filename),
            name: u64_at(header, c.name),
            qualname: c.qualname.map_or(0, |o| u64_at(header, o)),
            linetable: u64_at(header, c.linetable),
            bytecode: c.bytecode.map_or(0, |o| u64_at(header, o)),
            firsttraceable: c.firsttraceable.map_or(0, |o| i32_at(header, o)),
        }
    }
}

/// A decoded code object.
pub struct CodeEntry {
    pub identity: CodeIdentity,
    /// Index of its [`CodeInfo`] in [`CodeCache::infos`].
    pub info: u32,
    pub lines: LineTable,
    /// Bytecode length in bytes.
    pub code_len: u32,
}

/// Cache of decoded code objects of one process.
#[derive(Default)]
pub struct CodeCache {
    by_addr: FastMap<u64, CodeEntry>,
    /// Distinct functions seen; ids stay stable for the life of the cache.
    infos: Vec<CodeInfo>,
    info_ids: FastMap<CodeInfo, u32>,
    /// Code objects decoded (cache misses), for statistics.
    pub decoded: u64,
}

/// More entries than this and the address map is reset (infos are kept, ids stay valid).
const MAX_ENTRIES: usize = 200_000;

impl CodeCache {
    pub fn info(&self, id: u32) -> &CodeInfo {
        &self.infos[id as usize]
    }

    pub fn infos(&self) -> &[CodeInfo] {
        &self.infos
    }

    /// The cached entry at `addr` if its identity still matches.
    pub fn lookup(&self, addr: u64, identity: &CodeIdentity) -> Option<&CodeEntry> {
        self.by_addr.get(&addr).filter(|e| e.identity == *identity)
    }

    /// Decode the code object at `addr` whose header fields are `identity`, and cache it.
    pub fn insert(
        &mut self,
        mem: &dyn RemoteMemory,
        layout: &Layout,
        addr: u64,
        identity: CodeIdentity,
    ) -> Result<&CodeEntry, ObjectError> {
        let name: Arc<str> = read_str(mem, layout, identity.name)?.into();
        let qualname: Arc<str> = if identity.qualname != 0 {
            read_str(mem, layout, identity.qualname)?.into()
        } else {
            name.clone()
        };
        let filename: Arc<str> = read_str(mem, layout, identity.filename)?.into();
        let table = read_bytes(mem, layout, identity.linetable)?;
        let code_len = if layout.code.code_adaptive.is_some() {
            // 3.11+: Py_SIZE(code) counts 2-byte code units.
            if !(0..=1 << 24).contains(&identity.ob_size) {
                return Err(ObjectError::Invalid("code size out of range"));
            }
            identity.ob_size as u64 * 2
        } else {
            bytes_len(mem, layout, identity.bytecode)?
        };
        let lines = LineTable::decode(
            layout.line_table,
            &table,
            identity.firstlineno,
            code_len as u32,
        );
        let info = CodeInfo {
            name,
            qualname,
            filename,
            firstlineno: identity.firstlineno,
        };
        let id = match self.info_ids.get(&info) {
            Some(&id) => id,
            None => {
                let id = self.infos.len() as u32;
                self.infos.push(info.clone());
                self.info_ids.insert(info, id);
                id
            }
        };
        if self.by_addr.len() >= MAX_ENTRIES {
            self.by_addr.clear();
        }
        self.decoded += 1;
        self.by_addr.insert(
            addr,
            CodeEntry {
                identity,
                info: id,
                lines,
                code_len: code_len as u32,
            },
        );
        Ok(&self.by_addr[&addr])
    }
}
