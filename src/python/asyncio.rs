//! asyncio tasks of CPython 3.14+, read the way CPython's own `python -m asyncio pstree` reads
//! them: the `_asyncio` module publishes where its task bookkeeping lives in a section of its
//! own, `.AsyncioDebug` (`_Py_AsyncioModuleDebugOffsets`, Modules/_asynciomodule.c): thirteen
//! u64, the task object's fields and the heads of the task lists in the interpreter and thread
//! states. The section is in `_asyncio*.so` (mapped once the program imports asyncio) or in the
//! executable or libpython when `_asyncio` is built in.
//!
//! Every pending task of a thread is on a circular list whose head is in the thread state
//! (`asyncio_tasks_head`), oldest first; tasks of threads that ended are on the interpreter's
//! list. A task's coroutine is a generator object with its frame embedded (`gi_iframe`); a
//! coroutine parked in `await` on another coroutine holds that one in the slot below its stack
//! pointer, and the chain ends at a Future or anything that is not a coroutine. Who awaits a
//! task is `task_awaited_by`: nobody, one task, or a set of them. The facts were checked against
//! 3.14.10 and 3.15.2 (see the research notes named in python-offsets/README.md).

use std::collections::HashSet;

use super::binary::Module;
use super::layout::Layout;
use super::objects::{read_str, ObjectError, Objects, TPFLAGS_LONG_SUBCLASS};
use crate::target::memory::{u64_at, RemoteMemory};
use crate::target::procfs::MapRange;

/// The section's contents: `_Py_AsyncioModuleDebugOffsets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncioOffsets {
    pub task_size: u64,
    pub task_name: u64,
    pub task_awaited_by: u64,
    pub task_is_task: u64,
    pub task_awaited_by_is_set: u64,
    pub task_coro: u64,
    pub task_node: u64,
    pub interp_size: u64,
    pub interp_tasks_head: u64,
    pub tstate_size: u64,
    pub running_loop: u64,
    pub running_task: u64,
    pub tstate_tasks_head: u64,
}

const SECTION: &str = ".AsyncioDebug";
/// Most tasks read from one process, and most coroutines in one task's await chain.
const MAX_TASKS: usize = 100_000;
const MAX_CHAIN: usize = 256;
/// `PySetObject`: mask and table, and the size of an entry {key, hash} (`_Py_DebugOffsets
/// .set_object` of 3.14 and 3.15: used 24, mask 32, table 40).
const SET_MASK: u64 = 32;
const SET_TABLE: u64 = 40;
const SET_ENTRY: u64 = 16;
const MAX_SET: u64 = 1 << 16;

impl AsyncioOffsets {
    /// Parse and check the section's bytes: every offset must lie inside its structure.
    pub fn parse(bytes: &[u8]) -> Option<AsyncioOffsets> {
        if bytes.len() < 13 * 8 {
            return None;
        }
        let w = |i: u64| u64_at(bytes, i * 8);
        let o = AsyncioOffsets {
            task_size: w(0),
            task_name: w(1),
            task_awaited_by: w(2),
            task_is_task: w(3),
            task_awaited_by_is_set: w(4),
            task_coro: w(5),
            task_node: w(6),
            interp_size: w(7),
            interp_tasks_head: w(8),
            tstate_size: w(9),
            running_loop: w(10),
            running_task: w(11),
            tstate_tasks_head: w(12),
        };
        let within =
            |off: u64, len: u64, size: u64| off.checked_add(len).is_some_and(|e| e <= size);
        let ok = (64..=4096).contains(&o.task_size)
            && within(o.task_name, 8, o.task_size)
            && within(o.task_awaited_by, 8, o.task_size)
            && within(o.task_is_task, 1, o.task_size)
            && within(o.task_awaited_by_is_set, 1, o.task_size)
            && within(o.task_coro, 8, o.task_size)
            && within(o.task_node, 16, o.task_size)
            && (1024..=1 << 22).contains(&o.interp_size)
            && within(o.interp_tasks_head, 16, o.interp_size)
            && (256..=1 << 16).contains(&o.tstate_size)
            && within(o.running_loop, 8, o.tstate_size)
            && within(o.running_task, 8, o.tstate_size)
            && within(o.tstate_tasks_head, 16, o.tstate_size);
        ok.then_some(o)
    }
}

/// Look for `.AsyncioDebug` in the target's executable, libpython and `_asyncio` module, and
/// read it from the target's memory (where it is relocated and live).
pub fn find(
    pid: i32,
    maps: &[MapRange],
    mem: &dyn RemoteMemory,
    exe: &str,
) -> Option<AsyncioOffsets> {
    let mut tried = HashSet::new();
    for m in maps {
        let name = m.file_name();
        let candidate = m.is_file()
            && m.offset == 0
            && (m.path == exe || name.starts_with("libpython") || name.starts_with("_asyncio"));
        if !candidate || !tried.insert(m.path.as_str()) {
            continue;
        }
        let Some(module) = Module::read(pid, maps, m, &[], &[SECTION]) else {
            continue;
        };
        let Some(&(addr, size)) = module.sections.get(SECTION) else {
            continue;
        };
        let mut bytes = vec![0u8; size.min(4096) as usize];
        if mem.read(addr, &mut bytes).is_ok() {
            if let Some(o) = AsyncioOffsets::parse(&bytes) {
                return Some(o);
            }
        }
    }
    None
}

/// One pending task.
#[derive(Clone, Debug, Default)]
pub struct TaskView {
    pub addr: u64,
    pub name: String,
    /// The thread state whose list holds it (None: the interpreter's, its thread has ended).
    pub tstate: Option<u64>,
    /// It is its thread's running task (a step of it executes now).
    pub running: bool,
    /// The frames of its coroutine chain, innermost first (each embedded in a coroutine).
    pub frames: Vec<u64>,
    /// Tasks (or futures) that await it.
    pub awaited_by: Vec<u64>,
}

/// Read every pending task: those of each of `tstates` (in that order), then the
/// interpreter's (`interp`), each list oldest first.
pub fn read_tasks(
    mem: &dyn RemoteMemory,
    layout: &Layout,
    o: &AsyncioOffsets,
    interp: u64,
    tstates: &[u64],
) -> Result<Vec<TaskView>, ObjectError> {
    let objects = Objects::new(mem, layout);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let lists = tstates
        .iter()
        .map(|&t| (Some(t), t.wrapping_add(o.tstate_tasks_head)))
        .chain(std::iter::once((
            None,
            interp.wrapping_add(o.interp_tasks_head),
        )));
    for (tstate, head) in lists {
        let running = match tstate {
            Some(t) => objects.word(t.wrapping_add(o.running_task))?,
            None => 0,
        };
        let mut node = objects.word(head)?;
        while node != head {
            if node == 0 || out.len() >= MAX_TASKS {
                return Err(ObjectError::Invalid("asyncio task list broken"));
            }
            let task = node.wrapping_sub(o.task_node);
            if !seen.insert(task) {
                return Err(ObjectError::Invalid("asyncio task list loops"));
            }
            let mut obj = vec![0u8; o.task_size as usize];
            mem.read(task, &mut obj)?;
            let view = TaskView {
                addr: task,
                name: task_name(&objects, u64_at(&obj, o.task_name)),
                tstate,
                running: task == running,
                frames: coroutine_frames(&objects, layout, u64_at(&obj, o.task_coro))?,
                awaited_by: awaited_by(&objects, &obj, o)?,
            };
            out.push(view);
            node = u64_at(&obj, o.task_node);
        }
    }
    Ok(out)
}

/// A task's name: a str, or the int N of an unnamed task that `get_name()` would call
/// "Task-N".
fn task_name(objects: &Objects, name: u64) -> String {
    let flags = objects
        .type_of(name)
        .and_then(|tp| objects.type_flags(tp))
        .unwrap_or(0);
    if flags & TPFLAGS_LONG_SUBCLASS != 0 {
        return match objects.int_value(name) {
            Ok(n) => format!("Task-{n}"),
            Err(_) => "Task-?".into(),
        };
    }
    read_str(objects.mem, objects.layout, name).unwrap_or_else(|_| "?".into())
}

/// The frames of a coroutine and of the coroutines it awaits, innermost first.
fn coroutine_frames(
    objects: &Objects,
    layout: &Layout,
    coro: u64,
) -> Result<Vec<u64>, ObjectError> {
    let ob = &layout.objects;
    let (Some(iframe), Some(state_off), Some(sp_off), Some(slot)) = (
        ob.gen_iframe,
        ob.gen_frame_state,
        ob.frame_stackpointer,
        ob.awaited_slot,
    ) else {
        return Ok(Vec::new());
    };
    let mut frames = Vec::new();
    let coro_type = objects.type_of(coro)?;
    let mut coro = coro;
    while coro != 0 && frames.len() < MAX_CHAIN {
        let mut state = [0u8; 1];
        objects.mem.read(coro.wrapping_add(state_off), &mut state)?;
        let frame = coro.wrapping_add(iframe);
        frames.push(frame);
        if !ob.suspended_yield_from.contains(&(state[0] as i8)) {
            break;
        }
        let sp = objects.word(frame.wrapping_add(sp_off))?;
        let awaited = objects.word(sp.wrapping_add((slot * 8) as u64))? & !3;
        if awaited == 0 || objects.type_of(awaited)? != coro_type {
            break;
        }
        coro = awaited;
    }
    frames.reverse();
    Ok(frames)
}

/// Who awaits a task: nobody, one, or the members of a set.
fn awaited_by(objects: &Objects, task: &[u8], o: &AsyncioOffsets) -> Result<Vec<u64>, ObjectError> {
    let by = u64_at(task, o.task_awaited_by);
    if by == 0 {
        return Ok(Vec::new());
    }
    if task
        .get(o.task_awaited_by_is_set as usize)
        .copied()
        .unwrap_or(0)
        == 0
    {
        return Ok(vec![by]);
    }
    let mask = objects.word(by.wrapping_add(SET_MASK))?;
    if mask >= MAX_SET {
        return Err(ObjectError::Invalid("awaited-by set too large"));
    }
    let table = objects.word(by.wrapping_add(SET_TABLE))?;
    let mut entries = vec![0u8; ((mask + 1) * SET_ENTRY) as usize];
    objects.mem.read(table, &mut entries)?;
    Ok(entries
        .chunks_exact(SET_ENTRY as usize)
        .filter_map(|e| {
            let (key, hash) = (u64_at(e, 0), u64_at(e, 8) as i64);
            // Empty slots hold NULL, deleted ones a dummy key with hash -1.
            (key != 0 && hash != -1).then_some(key)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_of_3_15_parses_and_nonsense_does_not() {
        let values: [u64; 13] = [
            168, 136, 96, 108, 109, 128, 152, 226240, 10856, 1104, 1024, 1032, 1048,
        ];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let o = AsyncioOffsets::parse(&bytes).unwrap();
        assert_eq!((o.task_node, o.tstate_tasks_head), (152, 1048));
        let mut bad = bytes.clone();
        bad[6 * 8..7 * 8].copy_from_slice(&200u64.to_le_bytes());
        assert!(AsyncioOffsets::parse(&bad).is_none());
        assert!(AsyncioOffsets::parse(&bytes[..50]).is_none());
    }
}
