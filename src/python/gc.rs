//! Walking the garbage collector's lists of the main interpreter: every object that can take
//! part in a reference cycle (greenlets among them) is linked into one of them.
//!
//! The lists are circular, doubly linked through a `PyGC_Head {_gc_next, _gc_prev}` in front of
//! each object; their heads sit in the interpreter's GC state (three generations, then the
//! permanent generation that `gc.freeze()` fills). The heads' address is taken from the
//! `generation0` pointer the runtime sets at start-up, not from the struct's declared layout:
//! Debian's 3.13 moves the generations by four bytes with an alignment patch that no published
//! offset shows. Each head is checked (its first node must point back at it) before it is
//! walked. Low bits of the links are flags and are masked.
//!
//! A full walk of a large heap reads millions of nodes scattered over the heap, so nodes are
//! read through [`Blocks`], a cache of 64 KiB copies: a million objects cost about 20,000
//! system calls instead of a million.

use std::time::{Duration, Instant};

use super::layout::Layout;
use super::objects::ObjectError;
use crate::target::memory::{u64_at, RemoteMemory};

/// `sizeof(PyGC_Head)`: the object follows its links.
const GC_HEAD: u64 = 16;
/// `sizeof(struct gc_generation)`: a head and two ints.
const GENERATION: u64 = 24;
/// Flag bits in the links.
const LINK_MASK: u64 = !3;
/// Most nodes one walk follows (a heap of 50 million tracked objects is ~5 GiB of them).
const MAX_NODES: u64 = 50_000_000;

/// The list heads of an interpreter: `young` (generations 0 and 1) and `old` (generation 2
/// and the permanent generation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcLists {
    pub young: Vec<u64>,
    pub old: Vec<u64>,
}

/// What a walk cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalkStats {
    pub objects: u64,
    pub reads: u64,
    pub elapsed: Duration,
    /// The walk stopped at its time limit or node bound before the end of every list.
    pub cut_short: bool,
}

impl GcLists {
    /// Find and check the list heads of the main interpreter. None when this version keeps
    /// no GC state memspy knows of (3.8).
    pub fn find(
        mem: &dyn RemoteMemory,
        layout: &Layout,
        runtime: u64,
    ) -> Result<Option<GcLists>, ObjectError> {
        let o = &layout.objects;
        let (Some(gc_off), Some(gen0_off), Some(perm_off)) =
            (o.interp_gc, o.gc_generation0, o.gc_permanent)
        else {
            return Ok(None);
        };
        let word = |addr: u64| -> Result<u64, ObjectError> {
            let mut b = [0u8; 8];
            mem.read(addr, &mut b)?;
            Ok(u64::from_le_bytes(b))
        };
        let interp = word(runtime.wrapping_add(layout.interpreters_main))?;
        if interp == 0 {
            return Err(ObjectError::Invalid("no main interpreter"));
        }
        let gc = interp.wrapping_add(gc_off);
        let gen0 = word(gc.wrapping_add(gen0_off))?;
        // generation0 points at generations[0].head, inside the GC state, before itself.
        if gen0 < gc || gen0 >= gc.wrapping_add(gen0_off) {
            return Err(ObjectError::Invalid("generation0 outside the GC state"));
        }
        let lists = GcLists {
            young: vec![gen0, gen0 + GENERATION],
            old: vec![gen0 + 2 * GENERATION, gc.wrapping_add(perm_off)],
        };
        for &head in lists.young.iter().chain(&lists.old) {
            let first = word(head)? & LINK_MASK;
            if first != head && word(first.wrapping_add(8))? & LINK_MASK != head {
                return Err(ObjectError::Invalid("GC list head does not check"));
            }
        }
        Ok(Some(lists))
    }

    /// Every list head.
    pub fn all(&self) -> Vec<u64> {
        self.young.iter().chain(&self.old).copied().collect()
    }

    /// Call `visit(object, type)` for every object of the lists `heads` (some of `all_heads`,
    /// the heads of every list), for at most `limit`.
    pub fn walk(
        mem: &dyn RemoteMemory,
        heads: &[u64],
        all_heads: &[u64],
        limit: Duration,
        visit: impl FnMut(u64, u64),
    ) -> Result<WalkStats, ObjectError> {
        Self::walk_lists(mem, heads, all_heads, limit, None, visit)
    }

    /// Like [`GcLists::walk`], but from each list's newest end (the tail, through the prev
    /// links), at most `per_list` objects of each: where objects that just survived a
    /// collection are (a collection appends a younger generation's survivors to the older
    /// list's tail), so a greenlet made a moment ago is found without walking the whole heap.
    pub fn walk_newest(
        mem: &dyn RemoteMemory,
        heads: &[u64],
        all_heads: &[u64],
        per_list: u64,
        limit: Duration,
        visit: impl FnMut(u64, u64),
    ) -> Result<WalkStats, ObjectError> {
        Self::walk_lists(mem, heads, all_heads, limit, Some(per_list), visit)
    }

    fn walk_lists(
        mem: &dyn RemoteMemory,
        heads: &[u64],
        all_heads: &[u64],
        limit: Duration,
        newest: Option<u64>,
        mut visit: impl FnMut(u64, u64),
    ) -> Result<WalkStats, ObjectError> {
        let start = Instant::now();
        let mut blocks = Blocks::new();
        let mut stats = WalkStats::default();
        let backwards = newest.is_some();
        'lists: for &head in heads {
            let first = blocks.word(mem, head + if backwards { 8 } else { 0 })?;
            let mut node = first & LINK_MASK;
            let mut in_list = 0u64;
            let (mut mark, mut power, mut steps) = (node, 1u64, 0u64);
            while node != head {
                in_list += 1;
                if newest.is_some_and(|n| in_list > n) {
                    continue 'lists;
                }
                // A freed or moved node (the walk does not pause the program): the rest of
                // this list is out of reach this time; what was found so far stands.
                if node == 0 {
                    stats.cut_short = true;
                    continue 'lists;
                }
                // Another list's head: the program moved the objects being walked to another
                // generation meanwhile (the walk does not pause it); the rest of this list is
                // not reachable from here, and going on would go round the other for ever.
                if all_heads.contains(&node) {
                    stats.cut_short = true;
                    continue 'lists;
                }
                stats.objects += 1;
                if stats.objects > MAX_NODES
                    || (stats.objects % 4096 == 0 && start.elapsed() > limit)
                {
                    stats.cut_short = true;
                    break 'lists;
                }
                let (next, ob_type) = match blocks.node(mem, node, backwards) {
                    Ok(n) => n,
                    Err(ObjectError::Read(e)) if e.fault == crate::target::ReadFault::Gone => {
                        return Err(ObjectError::Read(e))
                    }
                    Err(_) => {
                        stats.cut_short = true;
                        continue 'lists;
                    }
                };
                visit(node + GC_HEAD, ob_type);
                node = next & LINK_MASK;
                // A cycle that never comes back to the head: the walk strayed into a list
                // of the collector's own (a collection in progress moves objects to lists
                // whose heads are on its stack). Brent's check: a mark moved at every power of
                // two steps is met again within twice the cycle's length.
                steps += 1;
                if node == mark {
                    stats.cut_short = true;
                    continue 'lists;
                }
                if steps == power {
                    (mark, power, steps) = (node, power * 2, 0);
                }
            }
        }
        stats.reads = blocks.reads;
        stats.elapsed = start.elapsed();
        Ok(stats)
    }
}

const BLOCK: u64 = 64 << 10;
const PAGE: u64 = 4096;
const SLOTS: usize = 64;

/// Copies of the target's memory in 64 KiB blocks (4 KiB pages where a block runs past the
/// end of a mapping), direct-mapped, valid for one walk.
struct Blocks {
    bases: [u64; SLOTS],
    sizes: [u64; SLOTS],
    data: Vec<u8>,
    reads: u64,
}

impl Blocks {
    fn new() -> Blocks {
        Blocks {
            bases: [u64::MAX; SLOTS],
            sizes: [0; SLOTS],
            data: vec![0; SLOTS * BLOCK as usize],
            reads: 0,
        }
    }

    /// The bytes [addr, addr + len) (len at most a page, not crossing one).
    fn bytes(&mut self, mem: &dyn RemoteMemory, addr: u64, len: u64) -> Result<&[u8], ObjectError> {
        let block = addr & !(BLOCK - 1);
        let slot = ((block / BLOCK) as usize) % SLOTS;
        let cached = self.bases[slot] <= addr && addr + len <= self.bases[slot] + self.sizes[slot];
        if !cached {
            let buf = &mut self.data[slot * BLOCK as usize..(slot + 1) * BLOCK as usize];
            self.reads += 1;
            self.bases[slot] = u64::MAX;
            if mem.read(block, buf).is_ok() {
                self.bases[slot] = block;
                self.sizes[slot] = BLOCK;
            } else {
                let page = addr & !(PAGE - 1);
                self.reads += 1;
                mem.read(page, &mut buf[..PAGE as usize])?;
                self.bases[slot] = page;
                self.sizes[slot] = PAGE;
            }
        }
        let off = slot * BLOCK as usize + (addr - self.bases[slot]) as usize;
        Ok(&self.data[off..off + len as usize])
    }

    fn word(&mut self, mem: &dyn RemoteMemory, addr: u64) -> Result<u64, ObjectError> {
        if addr % PAGE > PAGE - 8 {
            return Err(ObjectError::Invalid("misaligned GC link"));
        }
        Ok(u64_at(self.bytes(mem, addr, 8)?, 0))
    }

    /// A node's next link and its object's type.
    /// A node's link (next, or prev when `backwards`) and its object's type.
    fn node(
        &mut self,
        mem: &dyn RemoteMemory,
        node: u64,
        backwards: bool,
    ) -> Result<(u64, u64), ObjectError> {
        // next @0, prev @8, the object's refcount @16 and type @24.
        if node % 8 != 0 {
            return Err(ObjectError::Invalid("misaligned GC node"));
        }
        let link = if backwards { 8 } else { 0 };
        if node % PAGE <= PAGE - 32 {
            let b = self.bytes(mem, node, 32)?;
            Ok((u64_at(b, link), u64_at(b, 24)))
        } else {
            Ok((self.word(mem, node + link)?, self.word(mem, node + 24)?))
        }
    }
}
