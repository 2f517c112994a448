//! Python thread names: `threading.Thread.name` of each thread, read from the `threading`
//! module's table of live threads (`threading._active`: ident -> Thread) of the main
//! interpreter.
//!
//! The route is sys.modules -> `threading` -> its `_active` dict -> each Thread's `_name`
//! attribute, the same on every version; what differs is how dicts, ints and instance
//! attributes are laid out ([`super::objects`]). The table is found again at every read (a
//! few lookups), and names are read only when asked (a new thread appeared, or now and then to
//! catch renames), so a sample costs nothing.
//!
//! gevent's monkey-patching keys the table by greenlet ids, not thread idents: the main
//! thread's name is also read from `threading._main_thread`, for the thread the kernel says is
//! the process's main one.
//!
//! Threads `threading` does not know (started with `_thread`, or not yet bootstrapped) have no
//! Python name; callers fall back to the kernel's.

use std::collections::HashMap;

use super::layout::Layout;
use super::objects::{read_str, ObjectError, Objects, TPFLAGS_DICT_SUBCLASS};
use crate::target::memory::{CachedMemory, RemoteMemory};

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
    main_name: Option<String>,
    /// When the names were last read (ns, the caller's clock).
    pub read_ns: u64,
}

impl ThreadNames {
    /// The name of the thread whose `threading.get_ident()` is `ident`, as last read.
    pub fn get(&self, ident: u64) -> Option<&str> {
        self.names.get(&ident).map(String::as_str)
    }

    /// The name of the thread whose ident is `ident`, or of the main thread (`main`) when the
    /// table does not know that ident.
    pub fn name_of(&self, ident: u64, main: bool) -> Option<&str> {
        self.get(ident)
            .or_else(|| self.main_name.as_deref().filter(|_| main))
    }

    /// Read every name again. `runtime` is the address of `_PyRuntime`. A failure (the
    /// program changed the table while it was read, or has no `threading`) leaves the names
    /// known so far; names are a convenience, never a reason to fail a sample.
    pub fn refresh(&mut self, mem: &dyn RemoteMemory, layout: &Layout, runtime: u64, now_ns: u64) {
        self.read_ns = now_ns;
        let cached = CachedMemory::new(mem);
        let objects = Objects::new(&cached, layout);
        // Found again at every read (a few dict lookups): the table is a new dict after a
        // fork (`threading._after_fork`), and a worker is often found before it has run.
        if self.active.is_some() || now_ns >= self.locate_after_ns {
            self.locate_after_ns = now_ns + LOCATE_AGAIN_NS;
            let found = locate(&objects, runtime).ok().flatten();
            self.active = found.map(|(active, _)| active);
            if let Some((_, threading)) = found {
                self.main_name = main_thread_name(&objects, threading);
            }
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

/// The name of `threading._main_thread`.
fn main_thread_name(objects: &Objects, threading: u64) -> Option<String> {
    let thread = objects.module_global(threading, "_main_thread").ok()??;
    let name = objects.attribute(thread, "_name").ok()??;
    read_str(objects.mem, objects.layout, name).ok()
}

/// Find `threading._active` of the main interpreter, and the `threading` module.
fn locate(objects: &Objects, runtime: u64) -> Result<Option<(u64, u64)>, ObjectError> {
    let interp = objects.word(runtime.wrapping_add(objects.layout.interpreters_main))?;
    if interp == 0 {
        return Ok(None);
    }
    let Some(threading) = objects.module(interp, "threading")? else {
        return Ok(None);
    };
    let active = objects.module_global(threading, "_active")?;
    Ok(active
        .filter(|&d| is_dict(objects, d))
        .map(|active| (active, threading)))
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
