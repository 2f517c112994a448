//! Finding CPython inside a process: which mapped ELF file holds the interpreter (`python3.X`
//! with a static libpython, `libpython3.X.so`, or any executable that embeds it), where its
//! symbols landed (the load bias of a PIE or shared object), and which exact version it is.
//!
//! Files are opened through `/proc/PID/root` (so a target in a container is read from its own
//! file system), falling back to `/proc/PID/map_files` (files deleted since they were mapped).

use std::collections::HashMap;

use goblin::elf::{program_header::PT_LOAD, Elf};

use super::version::Version;
use crate::error::{Error, Result};
use crate::target::files;
use crate::target::procfs::{self, MapRange};

/// glibc's `struct pthread.tid` offset on x86_64 (libc's `_thread_db_pthread_tid` says 720 in
/// every glibc memspy was tested with); used when the target's libc does not tell.
const DEFAULT_PTHREAD_TID_OFFSET: u64 = 720;

/// Where the interpreter lives in a process and what it is.
#[derive(Clone, Debug)]
pub struct PythonBinary {
    pub pid: i32,
    /// The ELF file that defines `_PyRuntime`, as the target names it.
    pub path: String,
    /// True when that file is the process's executable (libpython linked in statically).
    pub in_executable: bool,
    pub version: Version,
    /// Where the version came from: `Py_Version`, `version string`, or `file name`.
    pub version_source: &'static str,
    /// Address of `_PyRuntime` in the target.
    pub runtime_addr: u64,
    /// Address of `PyCode_Type` in the target, to recognise code objects.
    pub code_type_addr: Option<u64>,
    /// Offset of the kernel thread id inside glibc's `struct pthread` (for 3.8-3.10, whose
    /// thread states only hold the pthread id).
    pub pthread_tid_offset: u64,
}

/// What memspy needs of one ELF file, whatever address it is loaded at.
#[derive(Clone, Debug)]
struct ElfFacts {
    /// `_PyRuntime` (or the `.PyRuntime` section), before relocation; None: not an interpreter.
    runtime: Option<u64>,
    code_type: Option<u64>,
    version: Option<(Version, &'static str)>,
    /// ET_EXEC: loaded at its link addresses.
    fixed: bool,
    /// `p_vaddr - p_offset` of the lowest PT_LOAD.
    base: u64,
    /// glibc's `struct pthread.tid` offset, when this file is a libc that publishes it.
    pthread_tid: Option<u64>,
    /// A CPython too old to have `_PyRuntime` (2.x, 3.0-3.6), and its version if it tells.
    old_python: Option<Option<Version>>,
}

/// Facts about ELF files already analysed, by (path, device, inode): forked workers of one
/// server share their interpreter, which is then read and parsed once.
#[derive(Default)]
pub struct BinaryCache {
    files: HashMap<(String, String, u64), Option<ElfFacts>>,
}

impl BinaryCache {
    fn facts(&mut self, pid: i32, m: &MapRange) -> Option<ElfFacts> {
        let key = (m.path.clone(), m.dev.clone(), m.inode);
        self.files
            .entry(key)
            .or_insert_with(|| analyse(pid, m))
            .clone()
    }
}

/// Largest ELF file memspy reads (a libpython with full debug information is ~100 MiB).
const MAX_ELF: u64 = 1 << 30;

fn analyse(pid: i32, m: &MapRange) -> Option<ElfFacts> {
    let data = read_mapped_file(pid, m)?;
    // The file is the target's: a parser bug on a crafted file must cost this file, not memspy.
    std::panic::catch_unwind(|| analyse_elf(&data, m.file_name())).ok()?
}

fn analyse_elf(data: &[u8], file_name: &str) -> Option<ElfFacts> {
    let elf = Elf::parse(data).ok()?;
    let runtime = symbol(&elf, "_PyRuntime").or_else(|| section_addr(&elf, ".PyRuntime"));
    let base = elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD)
        .min_by_key(|ph| ph.p_vaddr)
        .map_or(0, |ph| ph.p_vaddr.wrapping_sub(ph.p_offset));
    Some(ElfFacts {
        runtime,
        code_type: runtime.and_then(|_| symbol(&elf, "PyCode_Type")),
        version: runtime.and_then(|_| find_version(&elf, data, file_name)),
        fixed: elf.header.e_type == goblin::elf::header::ET_EXEC,
        base,
        pthread_tid: thread_db_tid(&elf, data),
        old_python: (runtime.is_none() && symbol(&elf, "Py_Initialize").is_some())
            .then(|| find_version(&elf, data, file_name).map(|v| v.0)),
    })
}

/// Locate the interpreter in process `pid`.
pub fn locate(pid: i32) -> Result<PythonBinary> {
    locate_cached(pid, &mut BinaryCache::default())
}

/// Locate the interpreter in process `pid`, reusing what `cache` knows of its files.
pub fn locate_cached(pid: i32, cache: &mut BinaryCache) -> Result<PythonBinary> {
    let maps = procfs::maps(pid).map_err(|e| Error::proc_io(pid, e))?;
    let exe = procfs::exe(pid).map_err(|e| Error::proc_io(pid, e))?;
    let exe = exe.to_string_lossy().into_owned();

    // The executable first (static libpython, or an embedding program), then anything named
    // like python or libpython.
    let plausible = |m: &MapRange| {
        let name = m.file_name();
        m.is_file()
            && (m.path.strip_suffix(" (deleted)").unwrap_or(&m.path) == exe
                || name.starts_with("python")
                || name.starts_with("libpython"))
    };
    let exe_maps = maps.iter().filter(|m| m.path == exe);
    let mut candidates: Vec<&MapRange> = Vec::new();
    for m in exe_maps.chain(maps.iter()) {
        if plausible(m) && !candidates.iter().any(|c| c.path == m.path) {
            candidates.push(m);
        }
    }

    let mut old_python = None;
    for m in candidates {
        let Some(facts) = cache.facts(pid, m) else {
            continue;
        };
        let Some(runtime) = facts.runtime else {
            if let Some(version) = facts.old_python {
                old_python.get_or_insert((version, m.path.clone()));
            }
            continue;
        };
        let bias = load_bias(&facts, &maps, &m.path)
            .ok_or_else(|| Error::Other(format!("cannot find where {} is loaded", m.path)))?;
        let (version, version_source) = facts.version.ok_or_else(|| {
            Error::Unsupported(format!("cannot tell which Python version {} is", m.path))
        })?;
        let libc = maps.iter().find(|m| {
            let n = m.file_name();
            m.is_file() && (n.starts_with("libc.so") || n.starts_with("libc-"))
        });
        let pthread_tid_offset = facts
            .pthread_tid
            .or_else(|| {
                libc.and_then(|l| cache.facts(pid, l))
                    .and_then(|f| f.pthread_tid)
            })
            .unwrap_or(DEFAULT_PTHREAD_TID_OFFSET);
        return Ok(PythonBinary {
            pid,
            path: m.path.clone(),
            in_executable: m.path == exe,
            version,
            version_source,
            runtime_addr: runtime.wrapping_add(bias),
            code_type_addr: facts.code_type.map(|a| a.wrapping_add(bias)),
            pthread_tid_offset,
        });
    }
    if let Some((version, path)) = old_python {
        let version = version.map_or("an old version".to_string(), |v| {
            format!("{}.{}.{}", v.major, v.minor, v.micro)
        });
        return Err(Error::Unsupported(format!(
            "process {pid} runs CPython {version} ({path}), which memspy does not read: it \
             supports CPython 3.8 to 3.15"
        )));
    }
    Err(Error::NotPython { pid, exe })
}

/// What memspy needs of another ELF file the process mapped (an extension module such as
/// greenlet's `_greenlet*.so`, or 3.14's `_asyncio*.so`): some symbols and sections, relocated
/// to where the file is loaded, and its GNU build id.
#[derive(Clone, Debug, Default)]
pub struct Module {
    pub path: String,
    pub build_id: Option<String>,
    pub symbols: HashMap<String, u64>,
    /// Section name -> (address, size).
    pub sections: HashMap<String, (u64, u64)>,
}

impl Module {
    /// Read the file behind mapping `m` of `pid` and look up `symbols` and `sections`. None
    /// when it cannot be read or parsed, or its load address cannot be told.
    pub fn read(
        pid: i32,
        maps: &[MapRange],
        m: &MapRange,
        symbols: &[&str],
        sections: &[&str],
    ) -> Option<Module> {
        let data = read_mapped_file(pid, m)?;
        // The file is the target's: a parser bug on a crafted file costs this file only.
        std::panic::catch_unwind(|| {
            let elf = Elf::parse(&data).ok()?;
            let base = elf
                .program_headers
                .iter()
                .filter(|ph| ph.p_type == PT_LOAD)
                .min_by_key(|ph| ph.p_vaddr)
                .map_or(0, |ph| ph.p_vaddr.wrapping_sub(ph.p_offset));
            let bias = if elf.header.e_type == goblin::elf::header::ET_EXEC {
                0
            } else {
                let first = maps
                    .iter()
                    .filter(|x| x.path == m.path && x.offset == 0)
                    .min_by_key(|x| x.start)?;
                first.start.wrapping_sub(base)
            };
            let build_id = elf
                .iter_note_sections(&data, Some(".note.gnu.build-id"))
                .and_then(|notes| {
                    notes
                        .flatten()
                        .find(|n| n.n_type == goblin::elf::note::NT_GNU_BUILD_ID)
                        .map(|n| n.desc.iter().map(|b| format!("{b:02x}")).collect())
                });
            let mut module = Module {
                path: m.path.clone(),
                build_id,
                ..Module::default()
            };
            for &name in symbols {
                if let Some(addr) = symbol(&elf, name) {
                    module.symbols.insert(name.into(), addr.wrapping_add(bias));
                }
            }
            for &name in sections {
                if let Some(sh) = elf
                    .section_headers
                    .iter()
                    .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(name))
                {
                    module
                        .sections
                        .insert(name.into(), (sh.sh_addr.wrapping_add(bias), sh.sh_size));
                }
            }
            Some(module)
        })
        .ok()?
    }
}

/// Read a mapped file: through the target's root, else through `map_files` (files deleted
/// since they were mapped). The target may have put anything at that path since it mapped the
/// file: only a regular file is read (see `target::files`).
fn read_mapped_file(pid: i32, m: &MapRange) -> Option<Vec<u8>> {
    let by_path = procfs::target_path(pid, &m.path);
    let by_mapping = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    files::read_regular(&by_path, MAX_ELF)
        .or_else(|_| files::read_regular(std::path::Path::new(&by_mapping), MAX_ELF))
        .ok()
}

/// Address (before relocation) of a symbol from `.dynsym` or `.symtab`.
fn symbol(elf: &Elf, name: &str) -> Option<u64> {
    let dynamic = elf
        .dynsyms
        .iter()
        .find(|s| s.st_value != 0 && elf.dynstrtab.get_at(s.st_name) == Some(name));
    let dynamic = dynamic.map(|s| s.st_value);
    dynamic.or_else(|| {
        elf.syms
            .iter()
            .find(|s| s.st_value != 0 && elf.strtab.get_at(s.st_name) == Some(name))
            .map(|s| s.st_value)
    })
}

fn section_addr(elf: &Elf, name: &str) -> Option<u64> {
    elf.section_headers
        .iter()
        .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(name))
        .map(|sh| sh.sh_addr)
}

/// Difference between where the file's segments are and where its ELF headers say they are.
/// Computed from the mapping of file offset 0 and the lowest `PT_LOAD` (patchelf can add
/// segments, so "the first mapping" is not reliable).
fn load_bias(facts: &ElfFacts, maps: &[MapRange], path: &str) -> Option<u64> {
    if facts.fixed {
        return Some(0);
    }
    let map = maps
        .iter()
        .filter(|m| m.path == path && m.offset == 0)
        .min_by_key(|m| m.start)?;
    Some(map.start.wrapping_sub(facts.base))
}

/// The bytes of the file behind virtual address `vaddr` (all arithmetic checked: the file is
/// the target's).
fn file_bytes_at<'a>(elf: &Elf, data: &'a [u8], vaddr: u64, len: usize) -> Option<&'a [u8]> {
    let end = vaddr.checked_add(len as u64)?;
    let ph = elf.program_headers.iter().find(|ph| {
        ph.p_type == PT_LOAD
            && vaddr >= ph.p_vaddr
            && ph
                .p_vaddr
                .checked_add(ph.p_filesz)
                .is_some_and(|e| end <= e)
    })?;
    let off = usize::try_from((vaddr - ph.p_vaddr).checked_add(ph.p_offset)?).ok()?;
    data.get(off..off.checked_add(len)?)
}

/// The exact version: `Py_Version` (3.11+), else the PY_VERSION string in `.rodata`, else the
/// file name (`python3.9`, `libpython3.10.so.1.0`).
fn find_version(elf: &Elf, data: &[u8], file_name: &str) -> Option<(Version, &'static str)> {
    if let Some(addr) = symbol(elf, "Py_Version") {
        if let Some(bytes) = file_bytes_at(elf, data, addr, 8) {
            let hex = u64::from_le_bytes(bytes.try_into().ok()?);
            let v = Version::from_hex(hex);
            if v.major == 3 {
                return Some((v, "Py_Version"));
            }
        }
    }
    let from_name = version_from_file_name(file_name);
    let rodata = elf
        .section_headers
        .iter()
        .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(".rodata"))
        .and_then(|sh| {
            let end = usize::try_from(sh.sh_offset.checked_add(sh.sh_size)?).ok()?;
            data.get(usize::try_from(sh.sh_offset).ok()?..end)
        });
    if let Some(rodata) = rodata {
        let found =
            rodata
                .split(|b| *b == 0)
                .filter_map(version_suffix)
                .find(|v| match from_name {
                    Some(n) => (n.major, n.minor) == (v.major, v.minor),
                    // Without a hint from the file name, ignore version-like strings of other software
                    // ("3.2.0" is glibc's ABI tag).
                    None => v.minor >= 8,
                });
        if let Some(v) = found {
            return Some((v, "version string"));
        }
    }
    from_name.map(|v| (v, "file name"))
}

/// A version at the end of a `.rodata` string. PY_VERSION ("3.8.18") need not stand alone: the
/// linker merges a string into the tail of a longer one that ends the same way (such as the
/// install prefix ".../versions/3.8.18"), so look at suffixes that start after a non-digit.
fn version_suffix(s: &[u8]) -> Option<Version> {
    let text = std::str::from_utf8(s).ok()?;
    let start = text
        .char_indices()
        .rev()
        .take(16)
        .filter(|&(i, c)| {
            (c == '3' || c == '2')
                && (i == 0 || !matches!(text.as_bytes()[i - 1], b'0'..=b'9' | b'.'))
        })
        .map(|(i, _)| i)
        .last()?;
    let candidate = &text[start..];
    (candidate.starts_with("3.") || candidate.starts_with("2."))
        .then(|| Version::parse(candidate))
        .flatten()
}

/// "python3.9" / "libpython3.10.so.1.0" / "libpython3.8d.so" / "python2.7" -> X.Y.0
fn version_from_file_name(name: &str) -> Option<Version> {
    let rest = name
        .strip_prefix("lib")
        .unwrap_or(name)
        .strip_prefix("python")?;
    let (major, rest) = rest.split_once('.')?;
    let major: u8 = major.parse().ok().filter(|m| (2..=3).contains(m))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(Version::new(major, digits.parse().ok()?, 0))
}

/// glibc publishes where `struct pthread` keeps the kernel tid for libthread_db, as the symbol
/// `_thread_db_pthread_tid` = { size in bits, count, offset }.
fn thread_db_tid(elf: &Elf, data: &[u8]) -> Option<u64> {
    let addr = symbol(elf, "_thread_db_pthread_tid")?;
    let b = file_bytes_at(elf, data, addr, 12)?;
    let bits = u32::from_le_bytes(b[0..4].try_into().ok()?);
    let offset = u32::from_le_bytes(b[8..12].try_into().ok()?);
    (bits == 32 && offset < 4096).then_some(offset as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_names() {
        assert_eq!(
            version_from_file_name("python3.9"),
            Some(Version::new(3, 9, 0))
        );
        assert_eq!(
            version_from_file_name("libpython3.10.so.1.0"),
            Some(Version::new(3, 10, 0))
        );
        assert_eq!(version_from_file_name("python"), None);
        assert_eq!(
            version_from_file_name("python2.7"),
            Some(Version::new(2, 7, 0))
        );
    }

    #[test]
    fn versions_at_the_end_of_strings() {
        assert_eq!(version_suffix(b"3.9.2"), Some(Version::new(3, 9, 2)));
        assert_eq!(
            version_suffix(b"/root/.pyenv/versions/3.8.18"),
            Some(Version::new(3, 8, 18))
        );
        assert_eq!(
            version_suffix(b"/opt/python-3.15.0a2+")
                .unwrap()
                .to_string(),
            "3.15.0a2"
        );
        assert_eq!(version_suffix(b"GCC 12.3.0"), None);
        assert_eq!(version_suffix(b"lib/python3.8"), None);
    }
}
