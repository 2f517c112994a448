//! Units of work beyond OS threads: greenlets (gevent, eventlet) and asyncio tasks. A thread
//! runs one of them at a time, and its frames are the thread's; every other one is parked
//! somewhere, and that place is what a wall-time profile of a server must show.
//!
//! [`Units`] finds what a process has (greenlet's module is looked for again now and then: a
//! program imports gevent when it likes), reads each unit's state and, for a parked one, its
//! frames, into a [`Snapshot`] of its own (one stack per unit, in the order of
//! [`Units::units`]).

use std::collections::HashMap;
use std::ops::Range;

use super::asyncio::{self, AsyncioOffsets, TaskView};
use super::greenlet::{self, GreenletState, GreenletView, Greenlets, Support};
use super::objects::Objects;
use super::walk::{Frame, Snapshot, StackReader, ThreadStack, WalkError};
use crate::target::memory::RemoteMemory;
use crate::target::procfs;

/// How often to look for greenlet's module again while it is not loaded (ns): soon at first
/// (programs import gevent as they start), then less and less often, down to once a second.
const LOOK_AGAIN_FIRST_NS: u64 = 50_000_000;
const LOOK_AGAIN_MAX_NS: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnitKind {
    Greenlet,
    Task,
}

impl UnitKind {
    pub fn name(self) -> &'static str {
        match self {
            UnitKind::Greenlet => "greenlet",
            UnitKind::Task => "task",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitState {
    /// Its thread runs it: its frames are the thread's.
    Running,
    /// Parked: its frames are in [`Units::snapshot`].
    Waiting,
    /// Created, never started (shown by `dump`, not sampled).
    NotStarted,
}

/// One greenlet or task at the moment of the read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub kind: UnitKind,
    /// The object's address.
    pub addr: u64,
    /// With `addr`, what tells it from a later object at the same address (a greenlet's C++
    /// object).
    pub serial: u64,
    /// The type's name (greenlets) or the task's name (shared: a read of a thousand greenlets
    /// makes no copies of their type names).
    pub name: std::sync::Arc<str>,
    /// The `PyThreadState` of the thread it belongs to, when known.
    pub tstate: Option<u64>,
    pub state: UnitState,
    /// Its stack in [`Units::snapshot`] (empty unless waiting).
    pub frames: Range<usize>,
    pub truncated: bool,
    /// The tasks (or futures) that await it, by address (asyncio tasks).
    pub awaited_by: Vec<u64>,
}

/// A thread as [`Units::read`] needs it: its state, its `threading.get_ident()`, and whether
/// it is the process's main thread.
#[derive(Clone, Copy, Debug)]
pub struct ThreadRef {
    pub tstate: u64,
    pub ident: u64,
    pub main: bool,
}

/// A parked greenlet's frames stay as they are until it runs again; a greenlet whose top frame
/// reads the same as when its chain was last walked is taken to wait where it did, and walked
/// again at least this often anyway (ns).
const REWALK_NS: u64 = 1_000_000_000;

/// What a parked greenlet's chain was when last walked.
struct Parked {
    first_frame: u64,
    /// The digest of its C++ object then ([`GreenletView::print`]).
    print: u64,
    frames: Vec<Frame>,
    truncated: bool,
    walk_after_ns: u64,
    seen: bool,
}

/// How a parked greenlet's frames are had in one read.
#[derive(Clone, Copy)]
enum Chain {
    None,
    Walked(usize),
    Cached,
}

/// When to look again for something a program may load at any time: soon at first, then
/// less and less often (see [`LOOK_AGAIN_FIRST_NS`]).
struct LookAgain {
    after_ns: u64,
    every_ns: u64,
}

impl Default for LookAgain {
    fn default() -> Self {
        LookAgain {
            after_ns: 0,
            every_ns: LOOK_AGAIN_FIRST_NS,
        }
    }
}

impl LookAgain {
    /// Whether to look now (`now` forces it); if so, the next look is scheduled.
    fn due(&mut self, now_ns: u64, now: bool) -> bool {
        if !now && now_ns < self.after_ns {
            return false;
        }
        self.after_ns = now_ns + self.every_ns;
        self.every_ns = (self.every_ns * 2).min(LOOK_AGAIN_MAX_NS);
        true
    }
}

/// The units of one process.
pub struct Units {
    pid: i32,
    greenlets: Option<Greenlets>,
    /// Why greenlets cannot be read here (said once by the caller).
    pub refused: Option<String>,
    look_greenlet: LookAgain,
    views: Vec<GreenletView>,
    chains: Vec<u64>,
    chain_of: Vec<Chain>,
    chain_snapshot: Snapshot,
    /// Parked greenlets by (address, serial).
    parked: HashMap<(u64, u64), Parked>,
    pub units: Vec<Unit>,
    pub snapshot: Snapshot,
    /// System calls of the last read.
    pub last_reads: u32,
    /// asyncio's published offsets (3.14+), once found, and when to look again.
    asyncio: Option<AsyncioOffsets>,
    look_asyncio: LookAgain,
    tasks: Vec<TaskView>,
    /// Before 3.14, when the program uses asyncio: why its tasks are not read.
    pub tasks_refused: Option<String>,
}

impl Units {
    pub fn new(pid: i32) -> Units {
        Units {
            pid,
            greenlets: None,
            refused: None,
            look_greenlet: LookAgain::default(),
            views: Vec::new(),
            chains: Vec::new(),
            chain_of: Vec::new(),
            chain_snapshot: Snapshot::default(),
            parked: HashMap::new(),
            units: Vec::new(),
            snapshot: Snapshot::default(),
            last_reads: 0,
            asyncio: None,
            look_asyncio: LookAgain::default(),
            tasks: Vec::new(),
            tasks_refused: None,
        }
    }

    /// Whether units may have appeared that the next read would find although the process did
    /// not run since the last one: greenlets the background walks found meanwhile.
    pub fn has_news(&mut self) -> bool {
        self.greenlets.as_mut().is_some_and(Greenlets::has_news)
    }

    /// asyncio's offsets were found: tasks are read (CPython 3.14+ with asyncio imported).
    pub fn reads_tasks(&self) -> bool {
        self.asyncio.is_some()
    }

    /// The greenlet module read, if any: (path, version, how the version was told).
    pub fn greenlet_module(&self) -> Option<(&str, &str, &str)> {
        self.greenlets.as_ref().map(|g| {
            (
                g.module.path.as_str(),
                g.module.version.as_str(),
                g.module.version_source.as_str(),
            )
        })
    }

    /// Greenlets known, and what the last full walk of the GC lists found and cost.
    pub fn greenlet_stats(&self) -> Option<(usize, super::gc::WalkStats)> {
        self.greenlets.as_ref().map(|g| (g.known(), g.last_walk))
    }

    /// Read every unit now. `threads` are the process's Python threads (from the thread walk
    /// just made); `now_ns` paces the searches; `thorough`: search the whole heap now (dump).
    pub fn read<M: RemoteMemory>(
        &mut self,
        reader: &mut StackReader<M>,
        threads: &[ThreadRef],
        now_ns: u64,
        thorough: bool,
    ) -> Result<(), WalkError> {
        self.units.clear();
        self.snapshot.clear();
        self.last_reads = 0;
        self.read_greenlets(reader, threads, now_ns, thorough)?;
        self.read_tasks(reader, threads, now_ns, thorough)
    }

    /// The asyncio tasks of every thread (3.14+): each waiting at its coroutine chain, or the
    /// running one of its thread.
    fn read_tasks<M: RemoteMemory>(
        &mut self,
        reader: &mut StackReader<M>,
        threads: &[ThreadRef],
        now_ns: u64,
        thorough: bool,
    ) -> Result<(), WalkError> {
        let version = reader.layout.version;
        if (version.major, version.minor) < (3, 14) {
            // Said when the program has imported asyncio (looked for now and then).
            if self.tasks_refused.is_none() && self.look_asyncio.due(now_ns, thorough) {
                let objects = Objects::new(reader.memory(), &reader.layout);
                let imported = objects
                    .word(
                        reader
                            .binary
                            .runtime_addr
                            .wrapping_add(reader.layout.interpreters_main),
                    )
                    .and_then(|interp| objects.module(interp, "asyncio"))
                    .is_ok_and(|m| m.is_some());
                if imported {
                    self.tasks_refused = Some(format!(
                        "asyncio tasks are read on CPython 3.14 and later (this is {version}); \
                         a thread's stack shows the task it runs"
                    ));
                }
            }
            return Ok(());
        }
        if self.asyncio.is_none() && self.look_asyncio.due(now_ns, thorough) {
            if let Ok(maps) = procfs::maps(self.pid) {
                let exe = reader.binary.path.clone();
                self.asyncio = asyncio::find(self.pid, &maps, reader.memory(), &exe);
            }
        }
        let Some(offsets) = self.asyncio else {
            return Ok(());
        };
        let runtime = reader.binary.runtime_addr;
        let mem = reader.memory() as &dyn RemoteMemory;
        let interp = Objects::new(mem, &reader.layout)
            .word(runtime.wrapping_add(reader.layout.interpreters_main))
            .map_err(WalkError::from)?;
        let tstates: Vec<u64> = threads.iter().map(|t| t.tstate).collect();
        self.tasks = asyncio::read_tasks(mem, &reader.layout, &offsets, interp, &tstates)
            .map_err(WalkError::from)?;
        // Each coroutine's frame is the first of a chain of its own (a suspended one has no
        // caller; a running one's caller is its thread's, not the task's).
        self.chains.clear();
        for t in &self.tasks {
            self.chains.extend_from_slice(&t.frames);
        }
        reader.read_chains(&self.chains, &mut self.chain_snapshot)?;
        self.last_reads += reader.last_reads;
        let mut c = 0;
        for t in &self.tasks {
            let start = self.snapshot.frames.len();
            let mut truncated = false;
            for _ in &t.frames {
                let chain = &self.chain_snapshot.threads[c];
                c += 1;
                match self.chain_snapshot.frames_of(chain).first() {
                    Some(f) => self.snapshot.frames.push(*f),
                    None => truncated = true,
                }
            }
            self.units.push(Unit {
                kind: UnitKind::Task,
                addr: t.addr,
                serial: 0,
                name: t.name.as_str().into(),
                tstate: t.tstate,
                state: if t.running {
                    UnitState::Running
                } else {
                    UnitState::Waiting
                },
                frames: start..self.snapshot.frames.len(),
                truncated,
                awaited_by: t.awaited_by.clone(),
            });
        }
        Ok(())
    }

    /// The greenlets of every thread.
    fn read_greenlets<M: RemoteMemory>(
        &mut self,
        reader: &mut StackReader<M>,
        threads: &[ThreadRef],
        now_ns: u64,
        thorough: bool,
    ) -> Result<(), WalkError> {
        if self.greenlets.is_none()
            && self.refused.is_none()
            && self.look_greenlet.due(now_ns, false)
        {
            if let Ok(maps) = procfs::maps(self.pid) {
                match greenlet::find(self.pid, &maps, reader.layout.version) {
                    Support::Absent => {}
                    Support::Supported(m) => self.greenlets = Some(Greenlets::new(m)),
                    Support::Refused(why) => self.refused = Some(why),
                }
            }
        }
        let Some(g) = self.greenlets.as_mut() else {
            return Ok(());
        };
        let runtime = reader.binary.runtime_addr;
        let (mem, layout) = (reader.memory() as &dyn RemoteMemory, &reader.layout);
        if thorough {
            match g.discover_now(mem, layout, runtime) {
                Err(e) if e.fault() == Some(crate::target::ReadFault::Gone) => {
                    return Err(WalkError::Exited)
                }
                // A walk that failed (the lists changed under us): the greenlets known still
                // are read.
                _ => {}
            }
        } else {
            g.discover_in_background(self.pid, layout, runtime);
        }
        g.read(mem, layout, &mut self.views)
            .map_err(WalkError::from)?;
        let refs: Vec<(u64, u64, bool)> = threads
            .iter()
            .map(|t| (t.tstate, t.ident, t.main))
            .collect();
        g.match_threads(self.pid, &refs);
        self.last_reads += g.last_reads;
        // A parked greenlet whose C++ object reads as when its chain was last walked has not
        // run since, and waits where it did; the others are walked.
        self.chains.clear();
        self.chain_of.clear();
        for v in &self.views {
            let GreenletState::Suspended { first_frame } = v.state else {
                self.chain_of.push(Chain::None);
                continue;
            };
            let same = self.parked.get(&(v.addr, v.pimpl)).is_some_and(|p| {
                p.first_frame == first_frame && p.print == v.print && now_ns < p.walk_after_ns
            });
            if same {
                self.chain_of.push(Chain::Cached);
            } else {
                self.chain_of.push(Chain::Walked(self.chains.len()));
                self.chains.push(first_frame);
            }
        }
        let objects = Objects::new(mem, layout);
        let mut names = Vec::with_capacity(self.views.len());
        for v in &self.views {
            names.push(g.type_name(&objects, v.type_addr));
        }
        let tstates: Vec<Option<u64>> = self
            .views
            .iter()
            .map(|v| g.groups.get(&v.group).and_then(|grp| grp.tstate))
            .collect();
        reader.read_chains(&self.chains, &mut self.chain_snapshot)?;
        self.last_reads += reader.last_reads;
        for p in self.parked.values_mut() {
            p.seen = false;
        }
        for (i, v) in self.views.iter().enumerate() {
            let key = (v.addr, v.pimpl);
            let (state, frames, truncated) = match (v.state, self.chain_of[i]) {
                (GreenletState::Suspended { first_frame }, chain) => {
                    if let Chain::Walked(c) = chain {
                        let t: &ThreadStack = &self.chain_snapshot.threads[c];
                        let entry = self.parked.entry(key).or_insert_with(|| Parked {
                            first_frame,
                            print: 0,
                            frames: Vec::new(),
                            truncated: false,
                            walk_after_ns: 0,
                            seen: false,
                        });
                        entry.first_frame = first_frame;
                        entry.print = v.print;
                        entry.frames.clear();
                        entry
                            .frames
                            .extend_from_slice(self.chain_snapshot.frames_of(t));
                        entry.truncated = t.truncated;
                        // Spread over the period, so that walks do not come all at once.
                        entry.walk_after_ns =
                            now_ns + REWALK_NS / 2 + (v.addr >> 4) % (REWALK_NS / 2);
                    }
                    match self.parked.get_mut(&key) {
                        Some(p) => {
                            p.seen = true;
                            let start = self.snapshot.frames.len();
                            self.snapshot.frames.extend_from_slice(&p.frames);
                            (
                                UnitState::Waiting,
                                start..self.snapshot.frames.len(),
                                p.truncated,
                            )
                        }
                        None => (UnitState::Waiting, 0..0, true),
                    }
                }
                (GreenletState::Running, _) => (UnitState::Running, 0..0, false),
                _ => (UnitState::NotStarted, 0..0, false),
            };
            self.units.push(Unit {
                kind: UnitKind::Greenlet,
                addr: v.addr,
                serial: v.pimpl,
                name: std::mem::take(&mut names[i]),
                tstate: tstates[i],
                state,
                frames,
                truncated,
                awaited_by: Vec::new(),
            });
        }
        self.parked.retain(|_, p| p.seen);
        Ok(())
    }
}
