//! greenlets (gevent, eventlet): every greenlet of a process, and for each suspended one the
//! Python frames it will resume in.
//!
//! A gevent service runs hundreds of requests on one OS thread, each in its own greenlet; only
//! the one that runs is on the thread's frame chain. greenlet keeps no registry, but every
//! greenlet object is tracked by the garbage collector, so they are found by walking the GC
//! lists ([`super::gc`]) for objects whose type is `greenlet.greenlet` or a subclass. Each
//! `PyGreenlet` points (`pimpl`) to a C++ `greenlet::Greenlet` that holds its C-stack bounds
//! (which say whether it has started or finished) and, when it is suspended, its saved top
//! frame. On 3.12+ greenlet (since 3.0.3) rewrites a suspended greenlet's frame chain so that
//! it holds only complete frames on the heap, ending in NULL; before, frames are heap objects
//! anyway: so a suspended greenlet's stack is read like a thread's, from that top frame. The
//! greenlet that runs is its thread's `ThreadState.current_greenlet` (reached from any greenlet
//! through its main greenlet); its frames are the thread's own.
//!
//! Layouts depend on the greenlet release and the CPython minor: they are data
//! (`python-offsets/greenlet/3.X.toml`, from the DWARF of greenlet's own wheels), chosen by the
//! exact version, found from the module's GNU build id (PyPI's wheels) or else from the
//! metadata installed beside it. An unknown version is refused with a note; then memspy shows
//! threads only. Every greenlet is checked at every read (its type, its `pimpl`, the C++
//! object's vtable and back pointer), so a wrong layout or a freed greenlet is dropped, not
//! misread.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;

use super::binary::Module;
use super::gc::{GcLists, WalkStats};
use super::layout::{Field, Layout};
use super::objects::{ObjectError, Objects};
use super::version::Version;
use crate::target::memory::{i64_at, u64_at, RemoteIoVec, RemoteMemory};
use crate::target::procfs::{self, MapRange};

const TABLES: &[(&str, &str)] = &[
    (
        "3.9",
        include_str!("../../python-offsets/greenlet/3.9.toml"),
    ),
    (
        "3.10",
        include_str!("../../python-offsets/greenlet/3.10.toml"),
    ),
    (
        "3.11",
        include_str!("../../python-offsets/greenlet/3.11.toml"),
    ),
    (
        "3.12",
        include_str!("../../python-offsets/greenlet/3.12.toml"),
    ),
    (
        "3.13",
        include_str!("../../python-offsets/greenlet/3.13.toml"),
    ),
    (
        "3.14",
        include_str!("../../python-offsets/greenlet/3.14.toml"),
    ),
    (
        "3.15",
        include_str!("../../python-offsets/greenlet/3.15.toml"),
    ),
];

/// Build ids of the `_greenlet` modules in greenlet's PyPI wheels: version, CPython tag,
/// wheel kind, build id, sha256.
const WHEELS: &str = include_str!("../../python-offsets/greenlet/wheels.tsv");

/// Most greenlets followed per process.
pub const MAX_GREENLETS: usize = 100_000;

#[derive(Deserialize)]
struct Table {
    meta: TableMeta,
    layout: Vec<TableLayout>,
}

#[derive(Deserialize)]
struct TableMeta {
    type_symbol: String,
    user_vtable_symbol: String,
    main_vtable_symbol: String,
}

#[derive(Deserialize)]
pub struct TableLayout {
    pub versions: Vec<String>,
    pub frame_walk: String,
    pub pygreenlet: BTreeMap<String, Field>,
    pub greenlet: BTreeMap<String, Field>,
    pub user_greenlet: BTreeMap<String, Field>,
    pub main_greenlet: BTreeMap<String, Field>,
    pub thread_state: BTreeMap<String, Field>,
}

/// The minors with greenlet tables, and each table's layouts (for tests).
pub fn tables() -> impl Iterator<Item = (&'static str, Vec<TableLayout>)> {
    TABLES.iter().map(|(minor, text)| {
        let t: Table = toml::from_str(text)
            .unwrap_or_else(|e| panic!("python-offsets/greenlet/{minor}.toml: {e}"));
        (*minor, t.layout)
    })
}

/// Where a suspended greenlet's frames start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameWalk {
    /// 3.9-3.10: the top frame object, then `f_back`.
    FrameObject,
    /// 3.11+: the top frame object's `_PyInterpreterFrame`, then `previous`.
    InterpreterFrame,
}

/// The offsets of one greenlet release on one CPython minor.
#[derive(Clone, Debug)]
pub struct GreenletLayout {
    pub pimpl: u64,
    vptr: u64,
    /// The C++ object's pointer back to its `PyGreenlet` (user and main greenlets).
    user_self: u64,
    main_self: u64,
    stack_start: u64,
    stack_stop: u64,
    top_frame: u64,
    user_main_greenlet: u64,
    main_thread_state: u64,
    ts_current: u64,
    /// Bytes of the C++ object read to cover every field above.
    read_len: usize,
    pub walk: FrameWalk,
}

impl GreenletLayout {
    fn from_table(l: &TableLayout, minor_at_least_311: bool) -> Result<GreenletLayout, String> {
        let need = |section: &BTreeMap<String, Field>, name: &str, what: &str| {
            section
                .get(name)
                .map(|f| f.at)
                .ok_or_else(|| format!("greenlet table lacks {what}.{name}"))
        };
        let user_self = l
            .greenlet
            .get("self")
            .or_else(|| l.user_greenlet.get("self"))
            .map(|f| f.at)
            .ok_or("greenlet table lacks a self pointer")?;
        let walk = match (l.frame_walk.as_str(), minor_at_least_311) {
            ("frame_object", false) => FrameWalk::FrameObject,
            ("exposed" | "interpreter_frame", true) => FrameWalk::InterpreterFrame,
            (other, _) => return Err(format!("frame walk {other:?} is not supported")),
        };
        let mut layout = GreenletLayout {
            pimpl: need(&l.pygreenlet, "pimpl", "pygreenlet")?,
            vptr: need(&l.greenlet, "vptr", "greenlet")?,
            user_self,
            main_self: need(&l.main_greenlet, "self", "main_greenlet")?,
            stack_start: need(&l.greenlet, "stack_start", "greenlet")?,
            stack_stop: need(&l.greenlet, "stack_stop", "greenlet")?,
            top_frame: need(&l.greenlet, "top_frame", "greenlet")?,
            user_main_greenlet: need(&l.user_greenlet, "main_greenlet", "user_greenlet")?,
            main_thread_state: need(&l.main_greenlet, "thread_state", "main_greenlet")?,
            ts_current: need(&l.thread_state, "current_greenlet", "thread_state")?,
            read_len: 0,
            walk,
        };
        layout.read_len = [
            layout.vptr,
            layout.user_self,
            layout.main_self,
            layout.stack_start,
            layout.stack_stop,
            layout.top_frame,
            layout.user_main_greenlet,
            layout.main_thread_state,
        ]
        .into_iter()
        .max()
        .unwrap_or(0) as usize
            + 8;
        if layout.read_len > 1024 {
            return Err("greenlet table offsets out of range".into());
        }
        Ok(layout)
    }
}

/// What memspy knows of a process's greenlet module.
#[derive(Clone, Debug)]
pub struct GreenletModule {
    pub path: String,
    pub version: String,
    /// How the version was told: "build id" (a PyPI wheel) or the metadata file read.
    pub version_source: String,
    pub layout: GreenletLayout,
    /// `PyGreenlet_Type`, and the vtable pointers of user and main greenlets.
    type_addr: u64,
    user_vptr: u64,
    main_vptr: u64,
}

/// Whether a process can have its greenlets read.
#[derive(Clone, Debug)]
pub enum Support {
    /// No greenlet module is loaded (yet).
    Absent,
    Supported(GreenletModule),
    /// Loaded, but this memspy cannot read it: why (shown once to the user).
    Refused(String),
}

/// Look for greenlet's module in `maps` of `pid`, and decide whether its greenlets can be read.
pub fn find(pid: i32, maps: &[MapRange], version: Version) -> Support {
    let Some(m) = maps.iter().find(|m| {
        let name = m.file_name();
        m.is_file() && name.starts_with("_greenlet.") && name.contains(".so")
    }) else {
        return Support::Absent;
    };
    let minor = version.minor_key();
    let Some(text) = TABLES.iter().find(|(k, _)| *k == minor).map(|(_, t)| *t) else {
        return Support::Refused(format!(
            "greenlets are not read on CPython {minor} (memspy knows greenlet's layout on 3.9 to \
             3.15); showing threads only"
        ));
    };
    let table: Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => return Support::Refused(format!("greenlet table for {minor}: {e}")),
    };
    let symbols = [
        table.meta.type_symbol.as_str(),
        table.meta.user_vtable_symbol.as_str(),
        table.meta.main_vtable_symbol.as_str(),
    ];
    let Some(module) = Module::read(pid, maps, m, &symbols, &[]) else {
        return Support::Refused(format!(
            "cannot read greenlet's module {}; showing threads only",
            m.path
        ));
    };
    let (Some(&type_addr), Some(&user_vt), Some(&main_vt)) = (
        module.symbols.get(symbols[0]),
        module.symbols.get(symbols[1]),
        module.symbols.get(symbols[2]),
    ) else {
        return Support::Refused(format!(
            "greenlet's module {} lacks the symbols memspy needs (greenlet older than 3.0?); \
             showing threads only",
            m.path
        ));
    };
    let Some((found, source)) = greenlet_version(pid, m, module.build_id.as_deref(), &minor) else {
        return Support::Refused(format!(
            "cannot tell which greenlet version {} is (no PyPI build id, no metadata beside \
             it); showing threads only",
            m.path
        ));
    };
    let Some(entry) = table.layout.iter().find(|l| l.versions.contains(&found)) else {
        return Support::Refused(format!(
            "greenlet {found} on CPython {minor} has no verified layout in this memspy; showing \
             threads only (upgrade memspy, or greenlet to a release it knows)"
        ));
    };
    if entry.frame_walk == "c_stack" {
        return Support::Refused(format!(
            "greenlet {found} on CPython {minor} keeps suspended frames on the C stack (fixed in \
             greenlet 3.0.3); showing threads only"
        ));
    }
    match GreenletLayout::from_table(entry, version.at_least(3, 11)) {
        Ok(layout) => Support::Supported(GreenletModule {
            path: m.path.clone(),
            version: found,
            version_source: source,
            layout,
            type_addr,
            user_vptr: user_vt.wrapping_add(16),
            main_vptr: main_vt.wrapping_add(16),
        }),
        Err(e) => Support::Refused(format!("greenlet {found}: {e}")),
    }
}

/// The greenlet release of module `m`: by build id among PyPI's wheels, else from the
/// `greenlet-X.dist-info/METADATA` (or Debian's `egg-info/PKG-INFO`) installed beside it.
fn greenlet_version(
    pid: i32,
    m: &MapRange,
    build_id: Option<&str>,
    minor: &str,
) -> Option<(String, String)> {
    let tag = format!("cp{}", minor.replace('.', ""));
    if let Some(id) = build_id {
        let by_id = WHEELS
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[3] == id && f[1] == tag);
        if let Some(f) = by_id {
            return Some((f[0].to_string(), "build id of a PyPI wheel".into()));
        }
    }
    // .../site-packages/greenlet/_greenlet....so -> .../site-packages
    let path = m.path.strip_suffix(" (deleted)").unwrap_or(&m.path);
    let site = std::path::Path::new(path).parent()?.parent()?;
    let dir = procfs::target_path(pid, &site.to_string_lossy());
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = if name.starts_with("greenlet-") && name.ends_with(".dist-info") {
            "METADATA"
        } else if name.starts_with("greenlet-") && name.ends_with(".egg-info") {
            "PKG-INFO"
        } else {
            continue;
        };
        let file = entry.path().join(meta);
        let Ok(text) = crate::target::files::read_regular(&file, 256 << 10) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        let version = text
            .lines()
            .take(50)
            .find_map(|l| l.strip_prefix("Version: "))
            .map(|v| v.trim().to_string())
            .filter(|v| v.len() < 32);
        if let Some(v) = version {
            return Some((v, format!("{name}/{meta}")));
        }
    }
    None
}

/// One greenlet as read at a sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreenletView {
    /// The `PyGreenlet` object.
    pub addr: u64,
    /// Its C++ object: with `addr`, what tells a greenlet apart from a later one at the same
    /// address.
    pub pimpl: u64,
    pub type_addr: u64,
    pub main: bool,
    /// The main greenlet of its thread (itself for a main greenlet).
    pub group: u64,
    pub state: GreenletState,
    /// A digest of its C++ object as read: it changes when the greenlet switches (its saved
    /// C stack, frames and data-stack pointers do), so the same digest says it has not run.
    pub print: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GreenletState {
    /// It is its thread's current greenlet: its frames are the thread's.
    Running,
    /// Suspended; its frames start at this frame (see [`FrameWalk`]; 0: no Python frames).
    Suspended { first_frame: u64 },
    /// Created, never switched to: no thread, no frames yet.
    NotStarted,
}

/// A known greenlet: its object, C++ object and type.
#[derive(Clone, Copy, Debug)]
struct Known {
    addr: u64,
    pimpl: u64,
    type_addr: u64,
    /// When the walk that found it began (`sample::now_ns`).
    found_ns: u64,
}

/// What one walk of the GC lists found.
struct Found {
    greenlets: Vec<Known>,
    full: bool,
    stats: WalkStats,
    /// When the walk began (`sample::now_ns`).
    started_ns: u64,
}

/// Which walks a [`Finder`] makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walks {
    /// All of them (one caller, `memspy dump`).
    All,
    /// Full walks only, on their schedule.
    Full,
    /// The frequent ones only: the youngest generation, the young ones, the older lists'
    /// newest objects.
    Recent,
}

/// Walks a process's GC lists for greenlets, at its own pace: the youngest generation every
/// [`NURSERY_WALK_EVERY`], the young ones every [`YOUNG_WALK_EVERY`], everything every [`FULL_WALK_SHARE`] times what a full walk took (at
/// least [`FULL_WALK_MIN`]).
struct Finder {
    walks: Walks,
    lists: Option<GcLists>,
    /// Types seen in the GC lists: whether each is a greenlet type.
    types: HashMap<u64, bool>,
    greenlet_type: u64,
    pimpl_offset: u64,
    next_full_ns: u64,
    next_young_ns: u64,
    next_nursery_ns: u64,
}

impl Finder {
    fn new(greenlet_type: u64, pimpl_offset: u64, walks: Walks) -> Finder {
        Finder {
            walks,
            lists: None,
            types: HashMap::new(),
            greenlet_type,
            pimpl_offset,
            next_full_ns: 0,
            next_young_ns: 0,
            next_nursery_ns: 0,
        }
    }

    /// How long to wait from `now_ns` until the next walk is due.
    fn wait(&self, now_ns: u64) -> Duration {
        let next = match self.walks {
            Walks::All => self
                .next_full_ns
                .min(self.next_young_ns)
                .min(self.next_nursery_ns),
            Walks::Full => self.next_full_ns,
            Walks::Recent => self.next_young_ns.min(self.next_nursery_ns),
        };
        Duration::from_nanos(next.saturating_sub(now_ns).clamp(1_000_000, 1_000_000_000))
    }

    /// Walk the lists if a walk is due at `now_ns` (any monotonic clock), or fully if `force`.
    fn walk(
        &mut self,
        mem: &dyn RemoteMemory,
        layout: &Layout,
        runtime: u64,
        now_ns: u64,
        force: bool,
    ) -> Result<Option<Found>, ObjectError> {
        let started_ns = crate::sample::now_ns();
        let full = force || (self.walks != Walks::Recent && now_ns >= self.next_full_ns);
        if self.walks == Walks::Full && !full {
            return Ok(None);
        }
        let young = full || now_ns >= self.next_young_ns;
        if !young && now_ns < self.next_nursery_ns {
            return Ok(None);
        }
        self.next_nursery_ns = now_ns + NURSERY_WALK_EVERY.as_nanos() as u64;
        if self.lists.is_none() {
            self.lists = GcLists::find(mem, layout, runtime)?;
        }
        let Some(lists) = self.lists.clone() else {
            self.next_young_ns = now_ns + YOUNG_WALK_EVERY.as_nanos() as u64;
            self.next_full_ns = now_ns + FULL_WALK_MIN.as_nanos() as u64;
            return Ok(None);
        };
        let heads: Vec<u64> = if full {
            lists.young.iter().chain(&lists.old).copied().collect()
        } else if young {
            lists.young.clone()
        } else {
            lists.young[..1].to_vec()
        };
        let objects = Objects::new(mem, layout);
        let mut found = Vec::new();
        let (types, greenlet_type) = (&mut self.types, self.greenlet_type);
        let all = lists.all();
        let mut visit = |obj: u64, tp: u64| {
            let is = *types
                .entry(tp)
                .or_insert_with(|| objects.is_subtype(tp, greenlet_type).unwrap_or(false));
            if is && found.len() < MAX_GREENLETS {
                found.push((obj, tp));
            }
        };
        // The frequent walks cover a few thousand objects: one that takes long has strayed.
        let limit = if full { WALK_LIMIT } else { RECENT_WALK_LIMIT };
        let walked = GcLists::walk(mem, &heads, &all, limit, &mut visit);
        // Between walks of the older lists, their newest objects: a new greenlet survives a
        // collection or two within milliseconds of being made, and would otherwise wait for
        // the next full walk.
        let walked = match (walked, full || young) {
            (Ok(stats), false) => {
                let older: Vec<u64> = all[1..].to_vec();
                GcLists::walk_newest(mem, &older, &all, NEWEST_PER_LIST, limit, &mut visit).map(
                    |more| WalkStats {
                        objects: stats.objects + more.objects,
                        reads: stats.reads + more.reads,
                        elapsed: stats.elapsed + more.elapsed,
                        cut_short: stats.cut_short || more.cut_short,
                    },
                )
            }
            (w, _) => w,
        };
        let stats = match walked {
            Ok(s) => s,
            Err(e) => {
                // The heads may have moved (a fork, a finalizing interpreter): find them again.
                self.lists = None;
                self.next_young_ns = now_ns + YOUNG_WALK_EVERY.as_nanos() as u64;
                return Err(e);
            }
        };
        if full {
            // A walk cut short (the program moved objects under it) is made again soon.
            let spent = match stats.cut_short {
                true => FULL_WALK_MIN,
                false => stats.elapsed.saturating_mul(FULL_WALK_SHARE),
            };
            self.next_full_ns = now_ns + spent.max(FULL_WALK_MIN).as_nanos() as u64;
        }
        if young {
            self.next_young_ns = now_ns + YOUNG_WALK_EVERY.as_nanos() as u64;
        }
        let mut greenlets = Vec::with_capacity(found.len());
        for (obj, tp) in found {
            if let Ok(pimpl) = objects.word(obj.wrapping_add(self.pimpl_offset)) {
                if pimpl != 0 {
                    greenlets.push(Known {
                        addr: obj,
                        pimpl,
                        type_addr: tp,
                        found_ns: started_ns,
                    });
                }
            }
        }
        Ok(Some(Found {
            greenlets,
            full,
            stats,
            started_ns,
        }))
    }
}

/// The greenlets of one thread: its main greenlet, greenlet's `ThreadState`, which one runs,
/// and which Python thread it is (the `PyThreadState` address), once told.
#[derive(Clone, Debug, Default)]
pub struct Group {
    pub thread_state: u64,
    pub current: u64,
    pub tstate: Option<u64>,
    /// A C-stack address of the thread (any started greenlet's stack bound).
    stack_addr: Option<u64>,
}

/// Minimum time between two full walks of the GC lists, and the share of time they may take.
const FULL_WALK_MIN: Duration = Duration::from_millis(200);
const FULL_WALK_SHARE: u32 = 20;
/// Time between walks of the young generations.
const YOUNG_WALK_EVERY: Duration = Duration::from_millis(100);
/// How many of each older list's newest objects the frequent walks look at.
const NEWEST_PER_LIST: u64 = 4096;
/// Time between walks of the youngest generation alone, where new greenlets are (a few
/// hundred to a few thousand objects: tens of microseconds): a request's greenlet is seen
/// within this of its creation.
const NURSERY_WALK_EVERY: Duration = Duration::from_millis(10);
/// Longest a frequent walk (young generations, newest objects) may take.
const RECENT_WALK_LIMIT: Duration = Duration::from_millis(50);
/// Longest a walk of the GC lists may take.
const WALK_LIMIT: Duration = Duration::from_secs(2);

/// Finds and reads the greenlets of one process.
pub struct Greenlets {
    pub module: GreenletModule,
    /// Walks the GC lists on the caller's thread (dump), or on a thread of its own that sends
    /// what it finds to `background` (record).
    finder: Option<Finder>,
    background: Option<std::sync::mpsc::Receiver<Found>>,
    /// What the background walks sent and [`Greenlets::has_news`] took off the channel, for
    /// the next read.
    arrived: Vec<Found>,
    known: Vec<Known>,
    by_addr: HashMap<u64, usize>,
    type_names: HashMap<u64, std::sync::Arc<str>>,
    pub groups: HashMap<u64, Group>,
    /// The last full walk.
    pub last_walk: WalkStats,
    spans: Vec<RemoteIoVec>,
    buf: Vec<u8>,
    /// Greenlets whose object head was checked at least once, and how many reads were made.
    checked: std::collections::HashSet<u64>,
    reads_made: usize,
    /// Reads of the last [`Greenlets::read`] (system calls).
    pub last_reads: u32,
}

impl Greenlets {
    pub fn new(module: GreenletModule) -> Greenlets {
        Greenlets {
            module,
            finder: None,
            background: None,
            arrived: Vec::new(),
            known: Vec::new(),
            by_addr: HashMap::new(),
            type_names: HashMap::new(),
            groups: HashMap::new(),
            last_walk: WalkStats::default(),
            spans: Vec::new(),
            buf: Vec::new(),
            checked: std::collections::HashSet::new(),
            reads_made: 0,
            last_reads: 0,
        }
    }

    /// How many greenlets are known.
    pub fn known(&self) -> usize {
        self.known.len()
    }

    /// The name of a greenlet type (`tp_name`), read once.
    pub fn type_name(&mut self, objects: &Objects, tp: u64) -> std::sync::Arc<str> {
        self.type_names
            .entry(tp)
            .or_insert_with(|| {
                objects
                    .type_name(tp)
                    .unwrap_or_else(|_| "greenlet".to_string())
                    .into()
            })
            .clone()
    }

    /// Walk the GC lists now, on this thread, and take what the walk found (`memspy dump`).
    pub fn discover_now(
        &mut self,
        mem: &dyn RemoteMemory,
        layout: &Layout,
        runtime: u64,
    ) -> Result<(), ObjectError> {
        let finder = self.finder.get_or_insert_with(|| {
            Finder::new(self.module.type_addr, self.module.layout.pimpl, Walks::All)
        });
        if let Some(found) = finder.walk(mem, layout, runtime, 0, true)? {
            self.take(found);
        }
        Ok(())
    }

    /// Take what the background walks of process `pid` found since the last call, starting
    /// them the first time. The walks (milliseconds for a large heap) run on a thread of their
    /// own, so that they never delay a sample.
    pub fn discover_in_background(&mut self, pid: i32, layout: &Layout, runtime: u64) {
        if self.background.is_none() {
            // Two threads: full walks of a large heap take milliseconds, and must not hold up
            // the frequent walks that find new greenlets.
            let (tx, rx) = std::sync::mpsc::channel();
            for walks in [Walks::Recent, Walks::Full] {
                let mut finder =
                    Finder::new(self.module.type_addr, self.module.layout.pimpl, walks);
                let (layout, tx) = (layout.clone(), tx.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("memspy-greenlets-{pid}"))
                    .spawn(move || {
                        let mem = crate::target::ProcessMemory::new(pid);
                        let start = std::time::Instant::now();
                        loop {
                            let now_ns = start.elapsed().as_nanos() as u64;
                            match finder.walk(&mem, &layout, runtime, now_ns, false) {
                                Ok(Some(found)) => {
                                    if tx.send(found).is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => {}
                                Err(e) if e.fault() == Some(crate::target::ReadFault::Gone) => {
                                    return
                                }
                                Err(_) => {}
                            }
                            std::thread::sleep(finder.wait(now_ns));
                        }
                    });
                if spawned.is_err() {
                    return;
                }
            }
            self.background = Some(rx);
        }
        let mut arrived = std::mem::take(&mut self.arrived);
        if let Some(rx) = &self.background {
            while let Ok(found) = rx.try_recv() {
                arrived.push(found);
            }
        }
        for found in arrived {
            self.take(found);
        }
    }

    /// Whether the background walks found greenlets not known yet (kept for the next read).
    /// A process that did not run can still have those: it made them before it went idle.
    pub fn has_news(&mut self) -> bool {
        if let Some(rx) = &self.background {
            while let Ok(found) = rx.try_recv() {
                self.arrived.push(found);
            }
        }
        self.arrived.iter().any(|f| {
            f.greenlets
                .iter()
                .any(|k| !self.by_addr.contains_key(&k.addr))
        })
    }

    /// Merge what one walk found: a complete full walk replaces the greenlets known (those
    /// gone are forgotten); any other adds to them.
    fn take(&mut self, found: Found) {
        if found.full {
            self.last_walk = found.stats;
        }
        if found.full && !found.stats.cut_short {
            // Those found since the full walk began are kept: it may have passed them by.
            let since: Vec<Known> = self
                .known
                .iter()
                .filter(|k| k.found_ns > found.started_ns)
                .copied()
                .collect();
            self.known = found.greenlets;
            self.reindex();
            for k in since {
                if !self.by_addr.contains_key(&k.addr) {
                    self.by_addr.insert(k.addr, self.known.len());
                    self.known.push(k);
                }
            }
        } else {
            for k in found.greenlets {
                match self.by_addr.get(&k.addr) {
                    Some(&i) => self.known[i] = k,
                    None if self.known.len() < MAX_GREENLETS => {
                        self.by_addr.insert(k.addr, self.known.len());
                        self.known.push(k);
                    }
                    None => {}
                }
            }
        }
        self.reindex();
    }

    fn reindex(&mut self) {
        self.by_addr.clear();
        for (i, k) in self.known.iter().enumerate() {
            self.by_addr.insert(k.addr, i);
        }
        let by_addr = &self.by_addr;
        self.checked.retain(|a| by_addr.contains_key(a));
    }

    /// Read every known greenlet's state into `out` (greenlets found dead, freed or not
    /// started are left out, and the dead and freed forgotten).
    pub fn read(
        &mut self,
        mem: &dyn RemoteMemory,
        layout: &Layout,
        out: &mut Vec<GreenletView>,
    ) -> Result<(), ObjectError> {
        out.clear();
        self.last_reads = 0;
        let gl = self.module.layout.clone();
        // Pass 1: every greenlet's C++ object, the object heads of an eighth of them in turn
        // (a C++ object that points back at its greenlet proves it between two checks of the
        // head; a new greenlet's head is read at once), and every thread's current greenlet,
        // in one gather.
        self.spans.clear();
        self.reads_made = self.reads_made.wrapping_add(1);
        let mut head_span = Vec::with_capacity(self.known.len());
        let mut impl_span = Vec::with_capacity(self.known.len());
        for (n, k) in self.known.iter().enumerate() {
            let check_head =
                !self.checked.contains(&k.addr) || n % HEAD_EVERY == self.reads_made % HEAD_EVERY;
            head_span.push(check_head.then_some(self.spans.len()));
            if check_head {
                self.spans.push(RemoteIoVec {
                    base: k.addr as usize,
                    len: 40,
                });
            }
            impl_span.push(self.spans.len());
            self.spans.push(RemoteIoVec {
                base: k.pimpl as usize,
                len: gl.read_len,
            });
        }
        let groups: Vec<u64> = self.groups.keys().copied().collect();
        for main in &groups {
            let ts = self.groups[main].thread_state;
            self.spans.push(RemoteIoVec {
                base: ts.wrapping_add(gl.ts_current) as usize,
                len: 8,
            });
        }
        let total: usize = self.spans.iter().map(|s| s.len).sum();
        self.buf.resize(total, 0);
        let ok = gather_all(mem, &self.spans, &mut self.buf, &mut self.last_reads)?;
        // Offsets of each span in the buffer.
        let mut pos = Vec::with_capacity(self.spans.len());
        let mut p = 0;
        for s in &self.spans {
            pos.push(p);
            p += s.len;
        }
        let current_base = self.spans.len() - self.groups.len();
        for (g, main) in groups.iter().enumerate() {
            let i = current_base + g;
            let group = self.groups.get_mut(main).expect("listed");
            group.current = if ok[i] {
                u64_at(&self.buf[pos[i]..], 0)
            } else {
                0
            };
        }
        let mut keep = vec![true; self.known.len()];
        let mut new_groups: Vec<(u64, u64)> = Vec::new();
        let mut suspended: Vec<usize> = Vec::new();
        for (n, k) in self.known.iter().enumerate() {
            let impl_i = impl_span[n];
            if !ok[impl_i] || head_span[n].is_some_and(|h| !ok[h]) {
                keep[n] = false;
                continue;
            }
            let imp = &self.buf[pos[impl_i]..pos[impl_i] + gl.read_len];
            // A live greenlet: a plausible reference count (a freed block holds a free-list
            // link or zero there), its type, its C++ object, which points back at it.
            let head_ok = head_span[n].is_none_or(|h| {
                let head = &self.buf[pos[h]..pos[h] + 40];
                let refcnt = i64_at(head, 0);
                (1..1 << 40).contains(&refcnt)
                    && u64_at(head, layout.ob_type) == k.type_addr
                    && u64_at(head, gl.pimpl) == k.pimpl
            });
            let vptr = u64_at(imp, gl.vptr);
            let main = vptr == self.module.main_vptr;
            let self_ptr = u64_at(imp, if main { gl.main_self } else { gl.user_self });
            if !head_ok || !(main || vptr == self.module.user_vptr) || self_ptr != k.addr {
                keep[n] = false;
                continue;
            }
            if head_span[n].is_some() {
                self.checked.insert(k.addr);
            }
            let (start, stop) = (u64_at(imp, gl.stack_start), u64_at(imp, gl.stack_stop));
            let group = if main {
                let ts = u64_at(imp, gl.main_thread_state);
                if ts == 0 {
                    // Its thread has exited.
                    keep[n] = false;
                    continue;
                }
                if !self.groups.contains_key(&k.addr) {
                    new_groups.push((k.addr, ts));
                }
                k.addr
            } else {
                if stop == 0 {
                    out.push(GreenletView {
                        addr: k.addr,
                        pimpl: k.pimpl,
                        type_addr: k.type_addr,
                        main,
                        group: 0,
                        state: GreenletState::NotStarted,
                        print: 0,
                    });
                    continue;
                }
                if start == 0 {
                    // Finished.
                    keep[n] = false;
                    continue;
                }
                let group = u64_at(imp, gl.user_main_greenlet);
                if let Some(g) = self.groups.get_mut(&group) {
                    g.stack_addr.get_or_insert(stop);
                }
                group
            };
            let running = self.groups.get(&group).is_some_and(|g| g.current == k.addr);
            let state = if running {
                GreenletState::Running
            } else {
                suspended.push(out.len());
                GreenletState::Suspended {
                    first_frame: u64_at(imp, gl.top_frame),
                }
            };
            out.push(GreenletView {
                addr: k.addr,
                pimpl: k.pimpl,
                type_addr: k.type_addr,
                main,
                group,
                state,
                print: digest(imp),
            });
        }
        if !new_groups.is_empty() {
            // Threads seen for the first time: which greenlet runs there is read with them, so
            // read again (the second time, every group is known).
            for (main, ts) in new_groups {
                self.groups.insert(
                    main,
                    Group {
                        thread_state: ts,
                        ..Group::default()
                    },
                );
            }
            let reads = self.last_reads;
            let again = self.read(mem, layout, out);
            self.last_reads += reads;
            return again;
        }
        // Groups whose main greenlet is gone are gone.
        let mains: Vec<u64> = self
            .known
            .iter()
            .zip(&keep)
            .filter(|(_, &k)| k)
            .map(|(k, _)| k.addr)
            .collect();
        self.groups.retain(|main, _| mains.contains(main));
        // A current greenlet not known yet (it started since the last walk): known from now.
        for g in self.groups.values() {
            if g.current != 0 && !self.by_addr.contains_key(&g.current) {
                if let Ok(pimpl) = Objects::new(mem, layout).word(g.current.wrapping_add(gl.pimpl))
                {
                    if let Ok(tp) = Objects::new(mem, layout).type_of(g.current) {
                        self.known.push(Known {
                            addr: g.current,
                            pimpl,
                            type_addr: tp,
                            found_ns: crate::sample::now_ns(),
                        });
                        keep.push(true);
                    }
                }
            }
        }
        let mut i = 0;
        self.known.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        self.reindex();
        // Pass 2 (3.11+): a suspended greenlet's frames start at its top frame object's
        // interpreter frame.
        if gl.walk == FrameWalk::InterpreterFrame {
            let Some(f_frame) = layout.objects.frame_object_frame else {
                return Ok(());
            };
            self.spans.clear();
            let mut which = Vec::new();
            for &v in &suspended {
                if let GreenletState::Suspended { first_frame } = out[v].state {
                    if first_frame != 0 {
                        self.spans.push(RemoteIoVec {
                            base: first_frame.wrapping_add(f_frame) as usize,
                            len: 8,
                        });
                        which.push(v);
                    }
                }
            }
            self.buf.resize(self.spans.len() * 8, 0);
            let ok = gather_all(mem, &self.spans, &mut self.buf, &mut self.last_reads)?;
            for (j, &v) in which.iter().enumerate() {
                let frame = if ok[j] {
                    u64_at(&self.buf[j * 8..], 0)
                } else {
                    0
                };
                out[v].state = GreenletState::Suspended { first_frame: frame };
            }
        }
        Ok(())
    }

    /// Tell which Python thread each group of greenlets runs on: the thread whose C stack
    /// holds the group's stacks. `threads` are (`PyThreadState`, `threading.get_ident()`, is
    /// the main thread) of the process's threads; the ident of a thread other than the main one
    /// is the address of its glibc thread descriptor, which sits in its stack's mapping; the
    /// main thread's stack is `[stack]`.
    pub fn match_threads(&mut self, pid: i32, threads: &[(u64, u64, bool)]) {
        if self
            .groups
            .values()
            .all(|g| g.tstate.is_some() || g.stack_addr.is_none())
        {
            return;
        }
        let Ok(maps) = procfs::maps(pid) else {
            return;
        };
        for g in self.groups.values_mut() {
            let Some(addr) = g.stack_addr.filter(|_| g.tstate.is_none()) else {
                continue;
            };
            let Some(m) = maps.iter().find(|m| m.start <= addr && addr < m.end) else {
                continue;
            };
            g.tstate = if m.path == "[stack]" {
                threads.iter().find(|t| t.2).map(|t| t.0)
            } else {
                threads
                    .iter()
                    .find(|t| !t.2 && m.start <= t.1 && t.1 < m.end)
                    .map(|t| t.0)
            };
        }
    }
}

/// Read every span (each alone if the batch stops at one that cannot be read): which were read.
/// How many greenlets' object heads each read checks: one in this many.
const HEAD_EVERY: usize = 8;

/// FNV-1a of some bytes: a digest that tells whether they changed.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn gather_all(
    mem: &dyn RemoteMemory,
    spans: &[RemoteIoVec],
    buf: &mut [u8],
    reads: &mut u32,
) -> Result<Vec<bool>, ObjectError> {
    let mut ok = vec![false; spans.len()];
    let mut done = 0;
    let mut pos = 0;
    while done < spans.len() {
        *reads += 1;
        let n = match mem.read_gather(&spans[done..], &mut buf[pos..]) {
            Ok(n) => n,
            Err(e) if matches!(e.fault, crate::target::ReadFault::Gone) => return Err(e.into()),
            Err(_) => 0,
        };
        for i in done..done + n {
            ok[i] = true;
            pos += spans[i].len;
        }
        done += n;
        if done < spans.len() {
            // The span at `done` cannot be read: skip it.
            pos += spans[done].len;
            done += 1;
        }
    }
    Ok(ok)
}
