//! Python thread names: `threading.Thread.name` of each thread, read from the `threading`
//! module's table of live threads (`threading._active`: ident -> Thread) of the main
//! interpreter.
//!
//! The route is sys.modules -> `threading` -> its `_active` dict -> each Thread's `_name`
//! attribute, the same on every version; what differs is how dicts, ints and instance
//! attributes are laid out ([`super::objects`]). The table's address is found once and checked
//! at every use (it is never rebound, even after `fork`); names are read again only when asked
//! (a new thread appeared, or now and then to catch renames), so a sample costs nothing.
//!
//! Threads `threading` does not know (started with `_thread`, or not yet bootstrapped) have no
//! Python name; callers fall back to the kernel's.

use std::collections::HashMap;

use super::layout::Layout;
use super::objects::{read_str, ObjectError, Objects, TPFLAGS_DICT_SUBCLASS};
use crate::target::memory::RemoteMemory;

/// Most threads whose names are read (the walker follows at most 4096 threads).
const MAX_NAMED: usize = 4096;
/// How long to wait before looking for `threading` again when the program has not imported
/// it (ns).
const LOCATE_AGAIN_NS: u64 = 1_000_000_000;

/// The Python names of a process's threads, by `threading.get_ident()`.
#[derive(Debug, Default)]
pub struct ThreadNames {
    /// Address of `threading._active`, once found.
    active: Option<u64>,
    /// When to look for it again if it was not found.
    locate_after_ns: u64,
    names: HashMap<u64, String>,
    /// When the names were last read (ns, the caller's clock).
    pub read_ns: u64,
}

impl ThreadNames {
    /// The name of the thread whose `threading.get_ident()` is `ident`, as last read.
    pub fn get(&self, ident: u64) -> Option<&str> {
        self.names.get(&ident).map(String::as_str)
    }

    /// Read every name again. `runtime` is the address of `_PyRuntime`. A failure (the
    /// program changed the table while it was read, or has no `threading`) leaves the names
    /// known so far; names are a convenience, never a reason to fail a sample.
    pub fn refresh(&mut self, mem: &dyn RemoteMemory, layout: &Layout, runtime: u64, now_ns: u64) {
        self.read_ns = now_ns;
        let objects = Objects::new(mem, layout);
        if self.active.is_none() {
            if now_ns < self.locate_after_ns {
                return;
            }
            self.locate_after_ns = now_ns + LOCATE_AGAIN_NS;
            self.active = locate(&objects, runtime).ok().flatten();
        }
        let Some(active) = self.active else {
            return;
        };
        match read_names(&objects, active) {
            Ok(names) => self.names = names,
            // The table moved or was freed (the interpreter is finalizing): look again later.
            Err(_) => self.active = None,
        }
    }
}

/// Find `threading._active` of the main interpreter.
fn locate(objects: &Objects, runtime: u64) -> Result<Option<u64>, ObjectError> {
    let interp = objects.word(runtime.wrapping_add(objects.layout.interpreters_main))?;
    if interp == 0 {
        return Ok(None);
    }
    let Some(threading) = objects.module(interp, "threading")? else {
        return Ok(None);
    };
    let active = objects.module_global(threading, "_active")?;
    Ok(active.filter(|&d| is_dict(objects, d)))
}

fn is_dict(objects: &Objects, obj: u64) -> bool {
    objects
        .type_of(obj)
        .and_then(|tp| objects.type_flags(tp))
        .is_ok_and(|flags| flags & TPFLAGS_DICT_SUBCLASS != 0)
}

/// ident -> name for every thread in the table.
fn read_names(objects: &Objects, active: u64) -> Result<HashMap<u64, String>, ObjectError> {
    if !is_dict(objects, active) {
        return Err(ObjectError::Invalid(
            "threading._active is no longer a dict",
        ));
    }
    let mut names = HashMap::new();
    for (key, thread) in objects.dict_items(active)?.into_iter().take(MAX_NAMED) {
        // One thread that cannot be read (it is being torn down) does not hide the others.
        let Ok(ident) = objects.int_value(key) else {
            continue;
        };
        let Ok(Some(name)) = objects.attribute(thread, "_name") else {
            continue;
        };
        if let Ok(name) = read_str(objects.mem, objects.layout, name) {
            names.insert(ident as u64, name);
        }
    }
    Ok(names)
}
