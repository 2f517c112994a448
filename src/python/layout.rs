//! Where the fields memspy reads sit in a given CPython build.
//!
//! For 3.8-3.12 the numbers come from `python-offsets/3.X.toml` (embedded at build time). For
//! 3.13 and later the target describes itself in `_Py_DebugOffsets` at the start of `_PyRuntime`;
//! memspy reads that and uses it for every field it covers, keeping the table for the rest (and
//! noting any table value the target contradicts: a patch release may move a field).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::linetable::LineTableFormat;
use super::version::Version;
use crate::error::{Error, Result};
use crate::target::memory::{u64_at, RemoteMemory};

/// One field of a python-offsets table.
#[derive(Clone, Debug, Deserialize)]
pub struct Field {
    /// Byte offset.
    pub at: u64,
    /// C path of the member, `Struct.member.sub`.
    pub c: String,
    /// Header that defines it.
    pub h: String,
    /// How the value was verified (`dwarf`, `live`, `debug-offsets`, `header`).
    pub checked: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Meta {
    pub minor: String,
    pub tag: String,
    pub dwarf_build: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Semantics {
    pub frame_model: String,
    pub line_table: String,
    pub skip_owners: Vec<u8>,
    pub executable_tag_mask: u64,
    pub gil: String,
    /// Where an instance keeps its `__dict__`: `dictoffset`, `values_3_11`, `tagged_3_12` or
    /// `managed` (see [`InstanceDict`]).
    pub instance_dict: String,
    /// How an int stores its digit count: `ob_size` (signed count) or `lv_tag` (3.12+).
    pub long_header: String,
    /// `gi_frame_state` values of a coroutine parked in `await` (3.14+).
    #[serde(default)]
    pub suspended_yield_from: Vec<i8>,
    /// Which slot below the stack pointer of a parked coroutine holds the awaited object
    /// (3.14+).
    pub awaited_slot: Option<i64>,
}

/// A parsed `python-offsets/3.X.toml`.
#[derive(Clone, Debug, Deserialize)]
pub struct OffsetsTable {
    pub meta: Meta,
    pub semantics: Semantics,
    #[serde(flatten)]
    pub sections: BTreeMap<String, BTreeMap<String, Field>>,
}

impl OffsetsTable {
    pub fn get(&self, section: &str, field: &str) -> Option<u64> {
        self.sections.get(section)?.get(field).map(|f| f.at)
    }

    fn need(&self, section: &str, field: &str) -> Result<u64> {
        self.get(section, field).ok_or_else(|| {
            Error::Other(format!(
                "python-offsets/{}.toml lacks {section}.{field}",
                self.meta.minor
            ))
        })
    }
}

const TABLES: &[(&str, &str)] = &[
    ("3.8", include_str!("../../python-offsets/3.8.toml")),
    ("3.9", include_str!("../../python-offsets/3.9.toml")),
    ("3.10", include_str!("../../python-offsets/3.10.toml")),
    ("3.11", include_str!("../../python-offsets/3.11.toml")),
    ("3.12", include_str!("../../python-offsets/3.12.toml")),
    ("3.13", include_str!("../../python-offsets/3.13.toml")),
    ("3.14", include_str!("../../python-offsets/3.14.toml")),
    ("3.15", include_str!("../../python-offsets/3.15.toml")),
];

const DEBUG_OFFSETS_LAYOUT: &str = include_str!("../../python-offsets/debug-offsets-layout.toml");

/// Minor versions memspy has tables for.
pub fn supported_minors() -> impl Iterator<Item = &'static str> {
    TABLES.iter().map(|(k, _)| *k)
}

/// The table for a minor version ("3.11").
pub fn table(minor: &str) -> Option<OffsetsTable> {
    let (_, text) = TABLES.iter().find(|(k, _)| *k == minor)?;
    // The tables are part of the source tree and checked by tests; a parse error is a bug.
    Some(toml::from_str(text).unwrap_or_else(|e| panic!("python-offsets/{minor}.toml: {e}")))
}

#[derive(Deserialize)]
struct DebugLayoutEntry {
    fields: Vec<String>,
}

/// Field names of `_Py_DebugOffsets` for a minor version, in order.
pub fn debug_offsets_fields(minor: &str) -> Option<Vec<String>> {
    let all: BTreeMap<String, DebugLayoutEntry> =
        toml::from_str(DEBUG_OFFSETS_LAYOUT).expect("python-offsets/debug-offsets-layout.toml");
    all.get(minor).map(|e| e.fields.clone())
}

/// How a thread's frames are chained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameModel {
    /// 3.8-3.10: `PyThreadState.frame` -> `PyFrameObject.f_back`.
    FrameObject,
    /// 3.11-3.12: `PyThreadState.cframe->current_frame` -> `_PyInterpreterFrame.previous`.
    CFrame,
    /// 3.13+: `PyThreadState.current_frame` -> `_PyInterpreterFrame.previous`.
    CurrentFrame,
}

/// Where the GIL holder is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GilModel {
    /// 3.8-3.11: `_PyRuntime.gilstate.tstate_current`.
    Runtime,
    /// 3.12-3.13: `*PyInterpreterState.ceval.gil`: `locked ? last_holder : nobody`.
    Interpreter,
    /// 3.14+: `PyThreadState.holds_gil`.
    ThreadFlag,
}

/// Offsets into `PyThreadState`.
#[derive(Clone, Debug)]
pub struct ThreadLayout {
    pub next: u64,
    /// `frame` (3.8-3.10), `cframe` (3.11-3.12) or `current_frame` (3.13+).
    pub frame: u64,
    pub thread_id: u64,
    pub native_thread_id: Option<u64>,
    pub holds_gil: Option<u64>,
    /// Bytes to read to cover every field above.
    pub read_len: usize,
}

/// Offsets into a frame: `PyFrameObject` (3.8-3.10) or `_PyInterpreterFrame` (3.11+).
#[derive(Clone, Debug)]
pub struct FrameLayout {
    /// `f_back` / `previous`.
    pub back: u64,
    /// `f_code` / `f_executable`.
    pub code: u64,
    /// `f_lasti` (int) or `prev_instr` / `instr_ptr` (pointer).
    pub lasti: u64,
    pub owner: Option<u64>,
    pub read_len: usize,
}

/// Offsets into `PyCodeObject`.
#[derive(Clone, Debug)]
pub struct CodeLayout {
    pub firstlineno: u64,
    pub filename: u64,
    pub name: u64,
    pub qualname: Option<u64>,
    pub linetable: u64,
    /// `co_code` bytes object (3.8-3.10).
    pub bytecode: Option<u64>,
    /// Inline bytecode (3.11+); its length in code units is `ob_size`.
    pub code_adaptive: Option<u64>,
    pub firsttraceable: Option<u64>,
    /// Bytes to read to cover every field above (the code object's "header").
    pub read_len: usize,
}

/// Offsets into str objects.
#[derive(Clone, Debug)]
pub struct UnicodeLayout {
    pub length: u64,
    pub state: u64,
    /// Where the characters of a compact ASCII string start.
    pub ascii_data: u64,
    /// Where the characters of a compact non-ASCII string start.
    pub compact_data: u64,
    /// Pointer to the characters of a non-compact string.
    pub data_any: u64,
    /// 3.8-3.11 have a `ready` bit (and kind 0 for not-ready strings).
    pub has_ready_bit: bool,
}

/// Where an instance keeps its attributes (`Include/internal/pycore_object.h` of each minor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceDict {
    /// 3.8-3.10: a dict pointer at `tp_dictoffset`.
    DictOffset,
    /// 3.11: values pointer at -4 words, dict pointer at -3 words.
    Values311,
    /// 3.12: one word at -3 words: values (tagged, bit 0 set, stored as values - 1) or a dict.
    Tagged312,
    /// 3.13+: a dict pointer at -3 words, else inline values after the object.
    Managed,
}

/// Offsets of the object types memspy reads beyond stacks: types, modules, dicts, ints (for
/// thread names), the GC lists (to find greenlets), generators and coroutines (asyncio).
#[derive(Clone, Debug)]
pub struct ObjectLayout {
    /// `sys.modules` in the interpreter state.
    pub interp_modules: u64,
    /// The interpreter's GC state (3.9+).
    pub interp_gc: Option<u64>,
    pub type_name: u64,
    pub type_basicsize: u64,
    pub type_flags: u64,
    pub type_base: u64,
    pub type_dictoffset: u64,
    pub heap_cached_keys: u64,
    pub module_dict: u64,
    pub dict_used: u64,
    pub dict_keys: u64,
    pub dict_values: u64,
    /// 3.8-3.10: `dk_size` (a count; index width follows from it).
    pub keys_size: Option<u64>,
    /// 3.11+: `dk_log2_index_bytes` and `dk_kind` (u8 each).
    pub keys_log2_index_bytes: Option<u64>,
    pub keys_kind: Option<u64>,
    pub keys_nentries: u64,
    pub keys_indices: u64,
    /// Where the values array starts in a split dict's values (0: `ma_values` is the array).
    pub values_array: u64,
    /// 3.13+: `PyDictValues.valid` (u8).
    pub values_valid: Option<u64>,
    pub long_digits: u64,
    /// 3.12+: `lv_tag` (count << 3 | sign) instead of a signed `ob_size`.
    pub long_tagged: bool,
    pub instance_dict: InstanceDict,
    /// `_gc_runtime_state.generation0` (a pointer to the first list head) and the permanent
    /// generation's head, relative to the GC state.
    pub gc_generation0: Option<u64>,
    pub gc_permanent: Option<u64>,
    /// 3.11+: `PyFrameObject.f_frame`.
    pub frame_object_frame: Option<u64>,
    /// 3.8-3.10: `PyGenObject.gi_frame` (a frame object); 3.11+: the embedded frame and its
    /// state.
    pub gen_frame: Option<u64>,
    pub gen_iframe: Option<u64>,
    pub gen_frame_state: Option<u64>,
    /// 3.14+: `_PyInterpreterFrame.stackpointer`.
    pub frame_stackpointer: Option<u64>,
    pub suspended_yield_from: Vec<i8>,
    pub awaited_slot: Option<i64>,
}

/// Everything the walker needs to know about one CPython build.
#[derive(Clone, Debug)]
pub struct Layout {
    pub version: Version,
    /// True when `_Py_DebugOffsets` from the target supplied the offsets it covers.
    pub from_debug_offsets: bool,
    pub frame_model: FrameModel,
    pub line_table: LineTableFormat,
    /// `_PyInterpreterFrame.owner` values that are not Python frames, as a bit set.
    pub skip_owners: u32,
    /// `_PyStackRef` tag bits to clear from `f_executable` (3.14+).
    pub executable_tag_mask: u64,
    pub gil_model: GilModel,
    pub interpreters_head: u64,
    pub interpreters_main: u64,
    pub tstate_current: Option<u64>,
    /// `_PyRuntime._finalizing`: set (the finalizing thread state) once `Py_FinalizeEx` has
    /// run the atexit callbacks and begins to tear the modules down.
    pub runtime_finalizing: Option<u64>,
    pub interp_next: u64,
    pub interp_threads_head: u64,
    pub interp_id: u64,
    pub interp_ceval_gil: Option<u64>,
    pub gil_last_holder: u64,
    pub gil_locked: u64,
    pub thread: ThreadLayout,
    pub cframe_current_frame: u64,
    pub frame: FrameLayout,
    pub code: CodeLayout,
    pub ob_type: u64,
    pub ob_size: u64,
    pub unicode: UnicodeLayout,
    pub bytes_sval: u64,
    pub objects: ObjectLayout,
    /// Table values the target's debug offsets contradicted (for `-v`).
    pub notes: Vec<String>,
}

impl Layout {
    /// The layout for `version` from the tables alone.
    pub fn from_table(version: Version) -> Result<Layout> {
        let minor = version.minor_key();
        let t = table(&minor).ok_or_else(|| {
            let known: Vec<&str> = supported_minors().collect();
            Error::Unsupported(format!(
                "CPython {version} is not supported: memspy reads CPython {} to {}",
                known[0],
                known[known.len() - 1]
            ))
        })?;
        let s = &t.semantics;
        let frame_model = match s.frame_model.as_str() {
            "frame_object" => FrameModel::FrameObject,
            "cframe" => FrameModel::CFrame,
            _ => FrameModel::CurrentFrame,
        };
        let line_table = match s.line_table.as_str() {
            "lnotab" => LineTableFormat::Lnotab,
            "linetable310" => LineTableFormat::Linetable310,
            _ => LineTableFormat::Locations,
        };
        let gil_model = match s.gil.as_str() {
            "runtime" => GilModel::Runtime,
            "interpreter" => GilModel::Interpreter,
            _ => GilModel::ThreadFlag,
        };
        let frame_field = match frame_model {
            FrameModel::FrameObject => "frame",
            FrameModel::CFrame => "cframe",
            FrameModel::CurrentFrame => "current_frame",
        };
        let frame = if frame_model == FrameModel::FrameObject {
            FrameLayout {
                back: t.need("frame_object", "f_back")?,
                code: t.need("frame_object", "f_code")?,
                lasti: t.need("frame_object", "f_lasti")?,
                owner: None,
                read_len: 0,
            }
        } else {
            FrameLayout {
                back: t.need("interpreter_frame", "previous")?,
                code: t.need("interpreter_frame", "executable")?,
                lasti: t.need("interpreter_frame", "instr_ptr")?,
                owner: t.get("interpreter_frame", "owner"),
                read_len: 0,
            }
        };
        let mut layout = Layout {
            version,
            from_debug_offsets: false,
            frame_model,
            line_table,
            skip_owners: s
                .skip_owners
                .iter()
                .fold(0, |acc, o| acc | (1u32 << (o & 31))),
            executable_tag_mask: s.executable_tag_mask,
            gil_model,
            interpreters_head: t.need("runtime", "interpreters_head")?,
            interpreters_main: t.need("runtime", "interpreters_main")?,
            tstate_current: t.get("runtime", "tstate_current"),
            runtime_finalizing: t.get("runtime", "finalizing"),
            interp_next: t.need("interpreter", "next")?,
            interp_threads_head: t.need("interpreter", "threads_head")?,
            interp_id: t.need("interpreter", "id")?,
            interp_ceval_gil: t.get("interpreter", "ceval_gil"),
            gil_last_holder: t.get("gil", "last_holder").unwrap_or(8),
            gil_locked: t.get("gil", "locked").unwrap_or(16),
            thread: ThreadLayout {
                next: t.need("thread", "next")?,
                frame: t.need("thread", frame_field)?,
                thread_id: t.need("thread", "thread_id")?,
                native_thread_id: t.get("thread", "native_thread_id"),
                holds_gil: t.get("thread", "holds_gil"),
                read_len: 0,
            },
            cframe_current_frame: t.get("cframe", "current_frame").unwrap_or(0),
            frame,
            code: CodeLayout {
                firstlineno: t.need("code", "firstlineno")?,
                filename: t.need("code", "filename")?,
                name: t.need("code", "name")?,
                qualname: t.get("code", "qualname"),
                linetable: t.need("code", "linetable")?,
                bytecode: t.get("code", "code"),
                code_adaptive: t.get("code", "code_adaptive"),
                firsttraceable: t.get("code", "firsttraceable"),
                read_len: 0,
            },
            ob_type: t.need("object", "ob_type")?,
            ob_size: t.need("object", "ob_size")?,
            unicode: UnicodeLayout {
                length: t.need("unicode", "length")?,
                state: t.need("unicode", "state")?,
                ascii_data: t.need("unicode", "ascii_data")?,
                compact_data: t.need("unicode", "compact_data")?,
                data_any: t.need("unicode", "data_any")?,
                has_ready_bit: !version.at_least(3, 12),
            },
            bytes_sval: t.need("bytes", "ob_sval")?,
            objects: ObjectLayout {
                interp_modules: t.need("interpreter", "modules")?,
                interp_gc: t.get("interpreter", "gc"),
                type_name: t.need("type", "name")?,
                type_basicsize: t.need("type", "basicsize")?,
                type_flags: t.need("type", "flags")?,
                type_base: t.need("type", "base")?,
                type_dictoffset: t.need("type", "dictoffset")?,
                heap_cached_keys: t.need("heap_type", "cached_keys")?,
                module_dict: t.need("module", "dict")?,
                dict_used: t.need("dict", "used")?,
                dict_keys: t.need("dict", "keys")?,
                dict_values: t.need("dict", "values")?,
                keys_size: t.get("dict_keys", "size"),
                keys_log2_index_bytes: t.get("dict_keys", "log2_index_bytes"),
                keys_kind: t.get("dict_keys", "kind"),
                keys_nentries: t.need("dict_keys", "nentries")?,
                keys_indices: t.need("dict_keys", "indices")?,
                values_array: t.get("dict_values", "values").unwrap_or(0),
                values_valid: t.get("dict_values", "valid"),
                long_digits: t.need("long", "digits")?,
                long_tagged: s.long_header == "lv_tag",
                instance_dict: match s.instance_dict.as_str() {
                    "dictoffset" => InstanceDict::DictOffset,
                    "values_3_11" => InstanceDict::Values311,
                    "tagged_3_12" => InstanceDict::Tagged312,
                    _ => InstanceDict::Managed,
                },
                gc_generation0: t.get("gc", "generation0"),
                gc_permanent: t.get("gc", "permanent"),
                frame_object_frame: t.get("frame_object", "frame"),
                gen_frame: t.get("generator", "frame"),
                gen_iframe: t.get("generator", "iframe"),
                gen_frame_state: t.get("generator", "frame_state"),
                frame_stackpointer: t.get("interpreter_frame", "stackpointer"),
                suspended_yield_from: s.suspended_yield_from.clone(),
                awaited_slot: s.awaited_slot,
            },
            notes: Vec::new(),
        };
        layout.compute_read_lengths();
        Ok(layout)
    }

    /// The layout for a 3.13+ target: its `_Py_DebugOffsets` over the table.
    pub fn from_debug_offsets(mem: &dyn RemoteMemory, runtime_addr: u64) -> Result<Option<Layout>> {
        let mut header = [0u8; 24];
        mem.read(runtime_addr, &mut header)
            .map_err(|e| Error::read(0, e))?;
        if &header[..8] != b"xdebugpy" {
            return Ok(None);
        }
        let version = Version::from_hex(u64_at(&header, 8));
        if u64_at(&header, 16) != 0 {
            return Err(Error::Unsupported(format!(
                "Python {version} is a free-threaded build, which memspy does not support yet"
            )));
        }
        let minor = version.minor_key();
        let fields = debug_offsets_fields(&minor).ok_or_else(|| {
            Error::Unsupported(format!(
                "Python {version} is newer than this memspy knows (its _Py_DebugOffsets layout is \
                 unknown); upgrade memspy"
            ))
        })?;
        let mut raw = vec![0u8; fields.len() * 8];
        mem.read(runtime_addr + 24, &mut raw)
            .map_err(|e| Error::read(0, e))?;
        let published: BTreeMap<&str, u64> = fields
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), u64_at(&raw, i as u64 * 8)))
            .collect();
        let mut layout = Layout::from_table(version)?;
        layout.apply_debug_offsets(&published)?;
        Ok(Some(layout))
    }

    fn apply_debug_offsets(&mut self, d: &BTreeMap<&str, u64>) -> Result<()> {
        let mut o = Overlay {
            published: d,
            notes: Vec::new(),
            implausible: None,
        };
        o.set(
            &mut self.interpreters_head,
            "runtime_state.interpreters_head",
        );
        if let Some(f) = self.runtime_finalizing.as_mut() {
            o.set(f, "runtime_state.finalizing");
        }
        o.set(&mut self.interp_next, "interpreter_state.next");
        o.set(
            &mut self.interp_threads_head,
            "interpreter_state.threads_head",
        );
        o.set(&mut self.interp_id, "interpreter_state.id");
        if let Some(g) = self.interp_ceval_gil.as_mut() {
            o.set(g, "interpreter_state.ceval_gil");
        }
        // The GIL's fields are published relative to PyInterpreterState (the main interpreter's
        // own GIL); memspy reads them relative to the GIL struct that ceval.gil points to.
        if let Some(&base) = d.get("interpreter_state.gil_runtime_state") {
            for (slot, key) in [
                (
                    &mut self.gil_locked,
                    "interpreter_state.gil_runtime_state_locked",
                ),
                (
                    &mut self.gil_last_holder,
                    "interpreter_state.gil_runtime_state_holder",
                ),
            ] {
                if let Some(&v) = d.get(key) {
                    o.put(slot, key, v.wrapping_sub(base));
                }
            }
        }
        o.set(&mut self.thread.next, "thread_state.next");
        o.set(&mut self.thread.frame, "thread_state.current_frame");
        o.set(&mut self.thread.thread_id, "thread_state.thread_id");
        if let Some(n) = self.thread.native_thread_id.as_mut() {
            o.set(n, "thread_state.native_thread_id");
        }
        if let Some(h) = self.thread.holds_gil.as_mut() {
            o.set(h, "thread_state.holds_gil");
        }
        o.set(&mut self.frame.back, "interpreter_frame.previous");
        o.set(&mut self.frame.code, "interpreter_frame.executable");
        o.set(&mut self.frame.lasti, "interpreter_frame.instr_ptr");
        if let Some(ow) = self.frame.owner.as_mut() {
            o.set(ow, "interpreter_frame.owner");
        }
        o.set(&mut self.code.filename, "code_object.filename");
        o.set(&mut self.code.name, "code_object.name");
        if let Some(q) = self.code.qualname.as_mut() {
            o.set(q, "code_object.qualname");
        }
        o.set(&mut self.code.linetable, "code_object.linetable");
        o.set(&mut self.code.firstlineno, "code_object.firstlineno");
        if let Some(a) = self.code.code_adaptive.as_mut() {
            o.set(a, "code_object.co_code_adaptive");
        }
        o.set(&mut self.ob_type, "pyobject.ob_type");
        o.set(&mut self.unicode.state, "unicode_object.state");
        o.set(&mut self.unicode.length, "unicode_object.length");
        o.set(
            &mut self.unicode.ascii_data,
            "unicode_object.asciiobject_size",
        );
        o.set(
            &mut self.unicode.compact_data,
            "unicode_object.compactunicodeobject_size",
        );
        o.set(&mut self.bytes_sval, "bytes_object.ob_sval");
        let ob = &mut self.objects;
        o.set(&mut ob.interp_modules, "interpreter_state.imports_modules");
        if let Some(gc) = ob.interp_gc.as_mut() {
            o.set(gc, "interpreter_state.gc");
        }
        o.set(&mut ob.type_name, "type_object.tp_name");
        o.set(&mut ob.type_flags, "type_object.tp_flags");
        o.set(&mut ob.type_basicsize, "type_object.tp_basicsize");
        o.set(&mut ob.type_dictoffset, "type_object.tp_dictoffset");
        o.set(&mut ob.heap_cached_keys, "heap_type_object.ht_cached_keys");
        o.set(&mut ob.dict_keys, "dict_object.ma_keys");
        o.set(&mut ob.dict_values, "dict_object.ma_values");
        o.set(&mut ob.long_digits, "long_object.ob_digit");
        for (slot, key) in [
            (&mut ob.gen_iframe, "gen_object.gi_iframe"),
            (&mut ob.gen_frame_state, "gen_object.gi_frame_state"),
            (&mut ob.frame_stackpointer, "interpreter_frame.stackpointer"),
        ] {
            if let Some(v) = slot.as_mut() {
                o.set(v, key);
            }
        }
        o.set(&mut self.ob_size, "bytes_object.ob_size");
        if let Some(bad) = o.implausible {
            return Err(Error::Unsupported(format!(
                "Python {}: the interpreter's _Py_DebugOffsets make no sense ({bad}); memspy \
                 cannot read this process",
                self.version
            )));
        }
        self.notes = o.notes;
        self.from_debug_offsets = true;
        // Published sizes bound what we read: a field outside its struct means the layout file
        // for this minor version is wrong, not that the target is.
        let within = |what: &str, off: u64, size_key: &str| -> Result<()> {
            match d.get(size_key) {
                Some(&size) if off >= size => Err(Error::Unsupported(format!(
                    "Python {}: _Py_DebugOffsets puts {what} at {off}, outside its struct ({size} \
                     bytes); this memspy does not understand this build",
                    self.version
                ))),
                _ => Ok(()),
            }
        };
        within("the frame pointer", self.thread.frame, "thread_state.size")?;
        within(
            "the native thread id",
            self.thread.native_thread_id.unwrap_or(0),
            "thread_state.size",
        )?;
        within(
            "the previous frame",
            self.frame.back,
            "interpreter_frame.size",
        )?;
        within(
            "the frame owner",
            self.frame.owner.unwrap_or(0),
            "interpreter_frame.size",
        )?;
        within("co_linetable", self.code.linetable, "code_object.size")?;
        self.compute_read_lengths();
        Ok(())
    }

    fn compute_read_lengths(&mut self) {
        let t = &self.thread;
        self.thread.read_len = [
            Some(t.next),
            Some(t.frame),
            Some(t.thread_id),
            t.native_thread_id,
        ]
        .into_iter()
        .flatten()
        .map(|o| o + 8)
        .chain(t.holds_gil.map(|o| o + 4))
        .max()
        .unwrap_or(0) as usize;
        let f = &self.frame;
        let lasti_len = if self.frame_model == FrameModel::FrameObject {
            4
        } else {
            8
        };
        self.frame.read_len = [
            f.back + 8,
            f.code + 8,
            f.lasti + lasti_len,
            f.owner.map_or(0, |o| o + 1),
        ]
        .into_iter()
        .max()
        .unwrap_or(0) as usize;
        let c = &self.code;
        self.code.read_len = [
            Some(self.ob_type + 8),
            Some(self.ob_size + 8),
            Some(c.firstlineno + 4),
            Some(c.filename + 8),
            Some(c.name + 8),
            c.qualname.map(|o| o + 8),
            Some(c.linetable + 8),
            c.bytecode.map(|o| o + 8),
            c.firsttraceable.map(|o| o + 4),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0) as usize;
    }

    /// Whether `owner` marks a frame that is not a Python function's (C-stack shims, entry frames).
    pub fn skips_owner(&self, owner: u8) -> bool {
        owner < 32 && self.skip_owners & (1 << owner) != 0
    }
}

/// Applies published debug offsets over table values, noting each disagreement.
struct Overlay<'a> {
    published: &'a BTreeMap<&'a str, u64>,
    notes: Vec<String>,
    /// The first published value that cannot be a field offset.
    implausible: Option<String>,
}

/// No field memspy reads lies this far into its struct: a published offset beyond it is a
/// corrupt or hostile `_Py_DebugOffsets` (it would make memspy read, or allocate, without bound).
const MAX_FIELD_OFFSET: u64 = 1 << 16;

impl Overlay<'_> {
    fn put(&mut self, slot: &mut u64, key: &str, value: u64) {
        if value > MAX_FIELD_OFFSET {
            self.implausible.get_or_insert(format!("{key} = {value}"));
            return;
        }
        if *slot != value {
            self.notes
                .push(format!("{key}: table says {}, target says {value}", *slot));
        }
        *slot = value;
    }

    fn set(&mut self, slot: &mut u64, key: &str) {
        if let Some(&v) = self.published.get(key) {
            self.put(slot, key, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_parses_and_builds_a_layout() {
        for minor in supported_minors() {
            let t = table(minor).unwrap();
            assert_eq!(t.meta.minor, minor);
            for (section, fields) in &t.sections {
                for (name, f) in fields {
                    assert!(
                        !f.c.is_empty()
                            && (f.h.starts_with("Include/") || f.h.starts_with("Objects/")),
                        "{minor} {section}.{name}"
                    );
                    assert!(
                        !f.checked.is_empty(),
                        "{minor} {section}.{name}: how was it checked?"
                    );
                }
            }
            let v = Version::parse(&format!("{minor}.0")).unwrap();
            let l = Layout::from_table(v).unwrap();
            assert!(l.thread.read_len > 0 && l.frame.read_len > 0 && l.code.read_len > 0);
            assert!(
                l.code.read_len <= 256,
                "{minor}: code header {}",
                l.code.read_len
            );
        }
    }

    #[test]
    fn debug_offsets_layouts_exist_for_313_and_later() {
        for minor in ["3.13", "3.14", "3.15"] {
            let f = debug_offsets_fields(minor).unwrap();
            assert!(f.contains(&"thread_state.current_frame".to_string()));
        }
        assert!(debug_offsets_fields("3.12").is_none());
    }

    /// `_Py_DebugOffsets` bytes as a 3.13 target would publish them, from `layout`, with one
    /// field replaced.
    struct Published(Vec<u8>);

    impl RemoteMemory for Published {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), crate::target::ReadError> {
            let start = addr as usize;
            buf.copy_from_slice(&self.0[start..start + buf.len()]);
            Ok(())
        }
    }

    fn published_313(field: &str, value: u64) -> Published {
        let mut bytes = b"xdebugpy".to_vec();
        bytes.extend_from_slice(&0x030D00F0u64.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        let table = Layout::from_table(Version::new(3, 13, 0)).unwrap();
        for name in debug_offsets_fields("3.13").unwrap() {
            let v = match name.as_str() {
                n if n == field => value,
                n if n.ends_with(".size") => 4096,
                "thread_state.next" => table.thread.next,
                "thread_state.current_frame" => table.thread.frame,
                _ => 0,
            };
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Published(bytes)
    }

    #[test]
    fn implausible_debug_offsets_are_refused() {
        let fine = published_313("code_object.qualname", 128);
        let layout = Layout::from_debug_offsets(&fine, 0).unwrap().unwrap();
        assert_eq!(layout.code.qualname, Some(128));
        for field in [
            "code_object.qualname",
            "thread_state.next",
            "pyobject.ob_type",
        ] {
            let hostile = published_313(field, 1 << 40);
            let err = Layout::from_debug_offsets(&hostile, 0).unwrap_err();
            assert!(err.to_string().contains("make no sense"), "{field}: {err}");
        }
    }

    #[test]
    fn unknown_versions_are_refused() {
        assert!(Layout::from_table(Version::new(3, 7, 1)).is_err());
        assert!(Layout::from_table(Version::new(3, 16, 0)).is_err());
    }
}
