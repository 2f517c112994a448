//! Walking a live interpreter: interpreters -> thread states -> frames, once per sample.
//!
//! A walk happens in two passes so that the hot path stays cheap:
//! 1. follow the pointer chains (through a [`PageCache`], so frames that share pages cost one
//!    read) and note each frame's code object address and instruction position;
//! 2. read the identity header of every distinct code object in one batched `process_vm_readv`,
//!    check it against the [`CodeCache`], decode only what is new, and turn positions into lines.
//!
//! Output goes into a reused [`Snapshot`]: after warm-up a walk allocates nothing. Every chain is
//! bounded and every value read is checked, so a target that changes under us (non-blocking
//! mode) or a corrupt one gives an error for that sample, never a hang or a panic; addresses
//! computed from pointers the target holds wrap instead of overflowing (a wrapped address just
//! fails to read).

use std::ops::Range;

use super::binary::PythonBinary;
use super::code::{CodeCache, CodeIdentity, CodeInfo};
use super::layout::{FrameModel, GilModel, Layout};
use super::linetable::LineTableFormat;
use super::objects::ObjectError;
use crate::error::{Error, Result};
use crate::target::memory::{
    i32_at, u64_at, u8_at, PageCache, ReadError, ReadFault, RemoteIoVec, RemoteMemory,
};

/// Most interpreters, threads (of all interpreters) and frames per thread a walk follows.
pub const MAX_INTERPRETERS: usize = 256;
pub const MAX_THREADS: usize = 4096;
pub const MAX_FRAMES: usize = 8192;

/// `_PyInterpreterFrame.owner` of a generator or coroutine frame.
const FRAME_OWNED_BY_GENERATOR: u8 = 1;

/// Why one walk failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The process exited.
    Exited,
    /// The kernel refused the read (permissions).
    Denied,
    /// The target changed under us or holds something that makes no sense: this sample is lost,
    /// the next one will probably succeed.
    Raced(String),
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            WalkError::Exited => write!(f, "process exited"),
            WalkError::Denied => write!(f, "permission denied"),
            WalkError::Raced(what) => write!(f, "inconsistent read: {what}"),
        }
    }
}

impl From<ReadError> for WalkError {
    fn from(e: ReadError) -> Self {
        match e.fault {
            ReadFault::Gone => WalkError::Exited,
            ReadFault::Denied => WalkError::Denied,
            _ => WalkError::Raced(e.to_string()),
        }
    }
}

impl From<ObjectError> for WalkError {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::Read(r) => r.into(),
            ObjectError::Invalid(what) => WalkError::Raced(what.to_string()),
        }
    }
}

/// One frame of a stack: a function (see [`StackReader::code_info`]) and the line executing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub code: u32,
    /// -1 when the instruction has no line.
    pub line: i32,
}

/// One Python thread at the moment of the walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadStack {
    /// The interpreter's id (0 = main).
    pub interpreter: i64,
    /// Address of the `PyThreadState`.
    pub tstate: u64,
    /// `threading.get_ident()` (the pthread id).
    pub thread_id: u64,
    /// Kernel thread id, when known.
    pub native_id: Option<i32>,
    pub holds_gil: bool,
    /// Frames in [`Snapshot::frames`], innermost first.
    pub frames: Range<usize>,
    /// The stack was deeper than [`MAX_FRAMES`]: only the innermost frames are kept.
    pub truncated: bool,
}

/// The result of one walk; reuse it across walks to avoid allocation.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub threads: Vec<ThreadStack>,
    pub frames: Vec<Frame>,
    /// The interpreter was shutting down (`_PyRuntime._finalizing` set) when this was read.
    pub finalizing: bool,
}

impl Snapshot {
    pub fn clear(&mut self) {
        self.threads.clear();
        self.frames.clear();
        self.finalizing = false;
    }

    pub fn frames_of(&self, thread: &ThreadStack) -> &[Frame] {
        &self.frames[thread.frames.clone()]
    }
}

/// A frame found in pass 1, before its code object is resolved.
#[derive(Clone, Copy, Debug, Default)]
struct RawFrame {
    code: u64,
    /// 3.8-3.10: `f_lasti`; 3.11+: the instruction pointer.
    position: u64,
    owner: u8,
    /// Index of the code object in the pass-2 tables.
    slot: u32,
}

/// Reads the Python stacks of one process.
pub struct StackReader<M: RemoteMemory> {
    mem: M,
    pub binary: PythonBinary,
    pub layout: Layout,
    codes: CodeCache,
    pages: PageCache,
    /// The pages the previous tick's walk used, read in one gather before the next.
    walk_pages: Vec<u64>,
    raw: Vec<RawFrame>,
    /// Pass 2 scratch: distinct code addresses, their read spans and header bytes.
    code_addrs: Vec<u64>,
    spans: Vec<RemoteIoVec>,
    headers: Vec<u8>,
    /// Per distinct code object: resolved info id and a validity flag.
    resolved: Vec<Option<u32>>,
    /// Statistics: system calls of the last walk.
    pub last_reads: u32,
    /// Thread states the caller knows did not run since the previous walk (their kernel
    /// threads used no CPU): their frames cannot have changed, and are taken from that walk
    /// when their first frame is still the same, instead of walked again.
    pub unchanged: crate::FastSet<u64>,
    /// Per thread state: its first frame and raw frames at the previous walk.
    previous: crate::FastMap<u64, (u64, bool, Vec<RawFrame>)>,
    /// How many threads the last walk took from the previous one.
    pub last_reused: u32,
    /// The thread states of the previous walk, in order, read again in one gather before the
    /// next walk (a list changes rarely, and following it one read at a time costs a system
    /// call per thread): their bytes and where each starts.
    tstate_order: Vec<u64>,
    tstate_spans: Vec<RemoteIoVec>,
    tstate_bytes: Vec<u8>,
    tstate_at: crate::FastMap<u64, usize>,
    /// The thread states were read ahead by [`StackReader::prepare`].
    prepared: bool,
}

impl<M: RemoteMemory> StackReader<M> {
    /// A reader for the interpreter `binary` found in a process whose memory is `mem`.
    pub fn new(mem: M, binary: PythonBinary) -> Result<StackReader<M>> {
        let layout = if binary.version.at_least(3, 13) {
            match Layout::from_debug_offsets(&mem, binary.runtime_addr) {
                Ok(Some(layout)) => layout,
                Ok(None) => Layout::from_table(binary.version)?,
                Err(Error::Read { source, .. }) => return Err(Error::read(binary.pid, source)),
                Err(e) => return Err(e),
            }
        } else {
            Layout::from_table(binary.version)?
        };
        Ok(StackReader {
            mem,
            binary,
            layout,
            codes: CodeCache::default(),
            pages: PageCache::default(),
            walk_pages: Vec::new(),
            raw: Vec::new(),
            code_addrs: Vec::new(),
            spans: Vec::new(),
            headers: Vec::new(),
            resolved: Vec::new(),
            last_reads: 0,
            unchanged: Default::default(),
            previous: Default::default(),
            last_reused: 0,
            tstate_order: Vec::new(),
            tstate_spans: Vec::new(),
            tstate_bytes: Vec::new(),
            tstate_at: Default::default(),
            prepared: false,
        })
    }

    pub fn memory(&self) -> &M {
        &self.mem
    }

    pub fn code_info(&self, id: u32) -> &CodeInfo {
        self.codes.info(id)
    }

    pub fn code_infos(&self) -> &[CodeInfo] {
        self.codes.infos()
    }

    /// Code objects decoded so far (cache misses).
    pub fn codes_decoded(&self) -> u64 {
        self.codes.decoded
    }

    /// Walk every thread of every interpreter into `out`.
    pub fn read(&mut self, out: &mut Snapshot) -> Result<(), WalkError> {
        out.clear();
        self.pages.clear();
        self.pages.prefetch(&self.mem, &self.walk_pages);
        self.raw.clear();
        self.last_reused = 0;
        let mut syscalls = if self.prepared {
            1
        } else {
            self.prefetch_tstates()
        };
        let mut walked = self.walk_threads(out);
        // Thread states read ahead (before the stop) hold `next` links that a thread exiting
        // meanwhile may have changed: when the list is not the one of the previous walk, it is
        // walked again from what the states hold now.
        let changed = walked.is_ok()
            && self.prepared
            && !out
                .threads
                .iter()
                .map(|t| t.tstate)
                .eq(self.tstate_order.iter().copied());
        if changed || (walked.is_err() && self.prepared) {
            out.clear();
            self.raw.clear();
            self.pages.clear();
            self.tstate_at.clear();
            self.last_reused = 0;
            walked = self.walk_threads(out);
        }
        let result = walked.and_then(|()| {
            syscalls += self.pages.reads;
            self.pages.used_pages(&mut self.walk_pages);
            self.resolve(out)
        });
        self.last_reads = syscalls + 1;
        if self.previous.len() > out.threads.len() {
            let live: crate::FastSet<u64> = out.threads.iter().map(|t| t.tstate).collect();
            self.previous.retain(|t, _| live.contains(t));
        }
        self.tstate_order.clear();
        self.tstate_order
            .extend(out.threads.iter().map(|t| t.tstate));
        self.tstate_at.clear();
        self.prepared = false;
        result
    }

    /// Read the thread states of threads that did not run ([`StackReader::unchanged`]) now,
    /// before the caller stops the others (blocking mode): a thousand idle thread states are
    /// then not read while the running threads are held. The next [`StackReader::read`] takes
    /// only those from this read; the others it reads afresh.
    pub fn prepare(&mut self) {
        self.prefetch_tstates();
        self.prepared = true;
    }

    /// Read the previous walk's thread states in one gather (a few, past 1,024 threads), so
    /// that following the list costs no system call per thread while it is unchanged; a state
    /// that cannot be read is read the usual way. Returns the system calls made.
    fn prefetch_tstates(&mut self) -> u32 {
        self.tstate_at.clear();
        if self.tstate_order.len() < 2 {
            return 0;
        }
        let len = self.layout.thread.read_len;
        self.tstate_spans.clear();
        self.tstate_spans
            .extend(self.tstate_order.iter().map(|&t| RemoteIoVec {
                base: t as usize,
                len,
            }));
        self.tstate_bytes.resize(self.tstate_spans.len() * len, 0);
        let mut calls = 0;
        let mut done = 0;
        while done < self.tstate_spans.len() {
            calls += 1;
            let n = self
                .mem
                .read_gather(
                    &self.tstate_spans[done..],
                    &mut self.tstate_bytes[done * len..],
                )
                .unwrap_or(0);
            for i in done..done + n {
                self.tstate_at.insert(self.tstate_order[i], i * len);
            }
            done += n.max(1);
        }
        calls
    }

    /// Walk one thread state only (the thread a memory event came from), into `out`. The
    /// caller checks that the state still belongs to the thread it expects (thread states are
    /// freed and reused). The GIL is not looked at.
    pub fn read_thread(&mut self, tstate: u64, out: &mut Snapshot) -> Result<(), WalkError> {
        out.clear();
        self.pages.clear();
        self.raw.clear();
        // The thread is running (it just faulted): walked, whatever the last tick said.
        let was_unchanged = self.unchanged.remove(&tstate);
        if let Some(off) = self.layout.runtime_finalizing {
            let runtime = self.binary.runtime_addr;
            out.finalizing = self.word(runtime.wrapping_add(off))? != 0;
        }
        let result = self
            .walk_thread(out, 0, tstate, 0)
            .and_then(|_next| self.resolve(out));
        if was_unchanged {
            self.unchanged.insert(tstate);
        }
        self.last_reads = self.pages.reads + 1;
        result
    }

    /// Walk frame chains that belong to no thread's state (suspended greenlets), each from its
    /// first frame (a frame object on 3.8-3.10, an interpreter frame on 3.11+; 0: none), into
    /// `out`: one [`ThreadStack`] per chain, in order, with `tstate` set to the chain's index.
    /// A chain that cannot be read (it changed under us) comes back empty with `truncated` set;
    /// the others are unaffected.
    pub fn read_chains(&mut self, chains: &[u64], out: &mut Snapshot) -> Result<(), WalkError> {
        out.clear();
        self.pages.clear();
        self.raw.clear();
        for (i, &first) in chains.iter().enumerate() {
            let start = self.raw.len();
            let walked = self.walk_frames(first);
            let failed = match walked {
                Ok(_) => false,
                Err(WalkError::Exited) => return Err(WalkError::Exited),
                Err(_) => {
                    self.raw.truncate(start);
                    true
                }
            };
            out.threads.push(ThreadStack {
                interpreter: 0,
                tstate: i as u64,
                thread_id: 0,
                native_id: None,
                holds_gil: false,
                frames: start..self.raw.len(),
                truncated: failed || walked.unwrap_or(false),
            });
        }
        let result = self.resolve_lenient(out, true);
        self.last_reads = self.pages.reads + 1;
        result
    }

    fn word(&mut self, addr: u64) -> Result<u64, WalkError> {
        Ok(self.pages.u64(&self.mem, addr)?)
    }

    /// Pass 1: the interpreter and thread lists, and every thread's frame chain.
    fn walk_threads(&mut self, out: &mut Snapshot) -> Result<(), WalkError> {
        let l = &self.layout;
        let runtime = self.binary.runtime_addr;
        let (tstate_current_off, head_off) = (l.tstate_current, l.interpreters_head);
        let gil_model = l.gil_model;
        let runtime_holder = match (gil_model, tstate_current_off) {
            (GilModel::Runtime, Some(off)) => self.word(runtime.wrapping_add(off))?,
            _ => 0,
        };
        if let Some(off) = self.layout.runtime_finalizing {
            out.finalizing = self.word(runtime.wrapping_add(off))? != 0;
        }
        let mut interp = self.word(runtime.wrapping_add(head_off))?;
        let mut interpreters = 0;
        // Threads of all interpreters together (a recording's sample holds at most twice
        // this many).
        let mut threads = 0;
        while interp != 0 {
            interpreters += 1;
            if interpreters > MAX_INTERPRETERS {
                return Err(WalkError::Raced("interpreter list does not end".into()));
            }
            let l = &self.layout;
            let (id_off, head, next_off, gil_off) = (
                l.interp_id,
                l.interp_threads_head,
                l.interp_next,
                l.interp_ceval_gil,
            );
            let (locked_off, holder_off) = (l.gil_locked, l.gil_last_holder);
            let interp_id = self.word(interp.wrapping_add(id_off))? as i64;
            let gil_holder = match (gil_model, gil_off) {
                (GilModel::Runtime, _) => runtime_holder,
                (GilModel::Interpreter, Some(off)) => {
                    let gil = self.word(interp.wrapping_add(off))?;
                    if gil == 0 {
                        0
                    } else {
                        let locked = self.word(gil.wrapping_add(locked_off))? as u32;
                        if locked != 0 {
                            self.word(gil.wrapping_add(holder_off))?
                        } else {
                            0
                        }
                    }
                }
                _ => 0,
            };
            let mut tstate = self.word(interp.wrapping_add(head))?;
            while tstate != 0 {
                threads += 1;
                if threads > MAX_THREADS {
                    return Err(WalkError::Raced("thread list does not end".into()));
                }
                let next = self.walk_thread(out, interp_id, tstate, gil_holder)?;
                if next == tstate {
                    return Err(WalkError::Raced("thread list loops".into()));
                }
                tstate = next;
            }
            let next = self.word(interp.wrapping_add(next_off))?;
            if next == interp {
                return Err(WalkError::Raced("interpreter list loops".into()));
            }
            interp = next;
        }
        Ok(())
    }

    /// One thread state: its fields and frame chain. Returns the next thread state.
    fn walk_thread(
        &mut self,
        out: &mut Snapshot,
        interpreter: i64,
        tstate: u64,
        gil_holder: u64,
    ) -> Result<u64, WalkError> {
        let t = self.layout.thread.clone();
        let prefetched = self
            .tstate_at
            .get(&tstate)
            .copied()
            .filter(|_| !self.prepared || self.unchanged.contains(&tstate));
        let (thread_id, native, holds_flag, next, frame_field) = {
            let b = match prefetched {
                Some(at) => &self.tstate_bytes[at..at + t.read_len],
                None => self.pages.read(&self.mem, tstate, t.read_len)?,
            };
            (
                u64_at(b, t.thread_id),
                t.native_thread_id.map(|o| u64_at(b, o)),
                t.holds_gil.map(|o| i32_at(b, o)),
                u64_at(b, t.next),
                u64_at(b, t.frame),
            )
        };
        let native_id = match native {
            Some(n) => i32::try_from(n).ok(),
            // 3.8-3.10: the kernel tid sits in glibc's struct pthread (thread_id is pthread_self()).
            None if thread_id != 0 => {
                let b = self.pages.read(
                    &self.mem,
                    thread_id.wrapping_add(self.binary.pthread_tid_offset),
                    4,
                )?;
                Some(i32_at(b, 0))
            }
            None => None,
        };
        let holds_gil = match holds_flag {
            Some(flag) => flag == 1,
            None => gil_holder == tstate,
        };
        // A thread that did not run has the frames it had: on 3.11 and 3.12 even the read of
        // its `cframe` (on its C stack, a page of its own) is saved.
        let unchanged = self.unchanged.contains(&tstate);
        let first = match self.layout.frame_model {
            FrameModel::CFrame if frame_field != 0 => match self.previous.get(&tstate) {
                Some((first, _, _)) if unchanged => *first,
                _ => {
                    let off = self.layout.cframe_current_frame;
                    self.word(frame_field.wrapping_add(off))?
                }
            },
            FrameModel::CFrame => 0,
            _ => frame_field,
        };
        let start = self.raw.len();
        let reuse = unchanged
            && self
                .previous
                .get(&tstate)
                .is_some_and(|(f, _, _)| *f == first);
        let truncated = if reuse {
            let (_, truncated, raw) = &self.previous[&tstate];
            self.raw.extend_from_slice(raw);
            self.last_reused += 1;
            *truncated
        } else {
            let truncated = self.walk_frames(first)?;
            let entry = self.previous.entry(tstate).or_default();
            entry.0 = first;
            entry.1 = truncated;
            entry.2.clear();
            entry.2.extend_from_slice(&self.raw[start..]);
            truncated
        };
        // Frames are resolved in pass 2; record the raw range for now.
        out.threads.push(ThreadStack {
            interpreter,
            tstate,
            thread_id,
            native_id: native_id.filter(|&n| n > 0),
            holds_gil,
            frames: start..self.raw.len(),
            truncated,
        });
        Ok(next)
    }

    /// Follow a frame chain, appending to `self.raw`. Returns whether it was cut at MAX_FRAMES.
    fn walk_frames(&mut self, mut frame: u64) -> Result<bool, WalkError> {
        let f = self.layout.frame.clone();
        let tag_mask = !self.layout.executable_tag_mask;
        let object_frames = self.layout.frame_model == FrameModel::FrameObject;
        let mut depth = 0;
        while frame != 0 {
            if depth == MAX_FRAMES {
                return Ok(true);
            }
            depth += 1;
            let b = self.pages.read(&self.mem, frame, f.read_len)?;
            let back = u64_at(b, f.back);
            let code = u64_at(b, f.code) & tag_mask;
            let position = if object_frames {
                i32_at(b, f.lasti) as i64 as u64
            } else {
                u64_at(b, f.lasti)
            };
            let owner = f.owner.map_or(0, |o| u8_at(b, o));
            if back == frame {
                return Err(WalkError::Raced("frame chain loops".into()));
            }
            if !self.layout.skips_owner(owner) && code != 0 {
                self.raw.push(RawFrame {
                    code,
                    position,
                    owner,
                    slot: 0,
                });
            }
            frame = back;
        }
        Ok(false)
    }

    /// Pass 2: validate and decode code objects, compute lines, fill `out.frames`.
    fn resolve(&mut self, out: &mut Snapshot) -> Result<(), WalkError> {
        self.resolve_lenient(out, false)
    }

    /// Pass 2; `lenient`: a code object that cannot be read or decoded, or a position outside
    /// it, drops that frame instead of failing the walk (chains read without their thread's
    /// consistency, see [`StackReader::read_chains`]).
    fn resolve_lenient(&mut self, out: &mut Snapshot, lenient: bool) -> Result<(), WalkError> {
        // Distinct code objects, in first-seen order (stacks repeat functions a lot: recursion).
        self.code_addrs.clear();
        for raw in self.raw.iter_mut() {
            let slot = match self.code_addrs.iter().rposition(|&a| a == raw.code) {
                Some(i) => i,
                None => {
                    self.code_addrs.push(raw.code);
                    self.code_addrs.len() - 1
                }
            };
            raw.slot = slot as u32;
        }
        let header_len = self.layout.code.read_len;
        let n = self.code_addrs.len();
        self.headers.resize(n * header_len, 0);
        self.spans.clear();
        self.spans
            .extend(self.code_addrs.iter().map(|&a| RemoteIoVec {
                base: a as usize,
                len: header_len,
            }));
        let mut done = if n == 0 {
            0
        } else {
            self.mem.read_gather(&self.spans, &mut self.headers)?
        };
        // Anything the batch could not read is retried alone; a code object that cannot be read
        // at all means the frame raced its deallocation.
        while done < n {
            let (addr, dest) = (
                self.code_addrs[done],
                &mut self.headers[done * header_len..(done + 1) * header_len],
            );
            if let Err(e) = self.mem.read(addr, dest) {
                if !lenient || e.fault == ReadFault::Gone {
                    return Err(e.into());
                }
                // Unreadable: left zeroed, so its type matches no code type below.
                dest.fill(0);
            }
            done += 1;
            if done < n {
                done += self
                    .mem
                    .read_gather(&self.spans[done..], &mut self.headers[done * header_len..])?;
            }
        }
        self.resolved.clear();
        let code_type = self.binary.code_type_addr;
        for i in 0..n {
            let addr = self.code_addrs[i];
            let identity = CodeIdentity::decode(
                &self.layout,
                &self.headers[i * header_len..(i + 1) * header_len],
            );
            // Not a code object: 3.13's entry frames carry None; anything else is a race.
            if code_type.is_some_and(|t| t != identity.ob_type) {
                self.resolved.push(None);
                continue;
            }
            if identity.ob_type == 0 {
                self.resolved.push(None);
                continue;
            }
            let known = self.codes.lookup(addr, &identity).is_some();
            if !known {
                if let Err(e) = self.codes.insert(&self.mem, &self.layout, addr, identity) {
                    let e = WalkError::from(e);
                    if lenient && e != WalkError::Exited {
                        self.resolved.push(None);
                        continue;
                    }
                    return Err(e);
                }
            }
            self.resolved.push(Some(i as u32));
        }
        // Lines, thread by thread.
        let code_adaptive = self.layout.code.code_adaptive;
        let lasti_scale: i64 = if self.layout.line_table == LineTableFormat::Linetable310 {
            2
        } else {
            1
        };
        for thread in out.threads.iter_mut() {
            let start = out.frames.len();
            for (depth, raw) in self.raw[thread.frames.clone()].iter().enumerate() {
                let Some(slot) = self.resolved[raw.slot as usize] else {
                    continue;
                };
                let addr = self.code_addrs[slot as usize];
                let identity = CodeIdentity::decode(
                    &self.layout,
                    &self.headers[slot as usize * header_len..(slot as usize + 1) * header_len],
                );
                let Some(entry) = self.codes.lookup(addr, &identity) else {
                    continue;
                };
                let offset = match code_adaptive {
                    // 3.11+: instruction pointer minus the start of the inline bytecode.
                    Some(off) => (raw.position as i64).wrapping_sub(addr.wrapping_add(off) as i64),
                    None => (raw.position as i32 as i64) * lasti_scale,
                };
                if offset >= entry.code_len as i64 || offset < -2 {
                    // The innermost frame of a running thread may be caught while it is being
                    // pushed or popped (its code set, its instruction pointer not yet): CPython
                    // itself would call it incomplete. Deeper frames do not change under a
                    // running thread, so there it means the read is inconsistent.
                    if depth == 0 || lenient {
                        continue;
                    }
                    return Err(WalkError::Raced(format!(
                        "instruction offset {offset} outside its code object ({} bytes)",
                        entry.code_len
                    )));
                }
                // 3.11+: a frame still being set up (before _co_firsttraceable) is not shown by
                // CPython either.
                if code_adaptive.is_some()
                    && raw.owner != FRAME_OWNED_BY_GENERATOR
                    && offset / 2 < identity.firsttraceable as i64
                {
                    continue;
                }
                out.frames.push(super::walk::Frame {
                    code: entry.info,
                    line: entry.lines.line_at(offset),
                });
            }
            thread.frames = start..out.frames.len();
        }
        Ok(())
    }
}
