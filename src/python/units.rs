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
    /// The type's name (greenlets) or the task's name.
    pub name: String,
    /// The `PyThreadState` of the thread it belongs to, when known.
    pub tstate: Option<u64>,
    pub state: UnitState,
    /// Its stack in [`Units::snapshot`] (empty unless waiting).
    pub frames: Range<usize>,
    pub truncated: bool,
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

/// The units of one process.
pub struct Units {
    pid: i32,
    greenlets: Option<Greenlets>,
    /// Why greenlets cannot be read here (said once by the caller).
    pub refused: Option<String>,
    look_after_ns: u64,
    look_every_ns: u64,
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
}

impl Units {
    pub fn new(pid: i32) -> Units {
        Units {
            pid,
            greenlets: None,
            refused: None,
            look_after_ns: 0,
            look_every_ns: LOOK_AGAIN_FIRST_NS,
            views: Vec::new(),
            chains: Vec::new(),
            chain_of: Vec::new(),
            chain_snapshot: Snapshot::default(),
            parked: HashMap::new(),
            units: Vec::new(),
            snapshot: Snapshot::default(),
            last_reads: 0,
        }
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
        if self.greenlets.is_none() && self.refused.is_none() && now_ns >= self.look_after_ns {
            self.look_after_ns = now_ns + self.look_every_ns;
            self.look_every_ns = (self.look_every_ns * 2).min(LOOK_AGAIN_MAX_NS);
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
            });
        }
        self.parked.retain(|_, p| p.seen);
        Ok(())
    }
}
