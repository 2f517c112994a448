//! Reading another process's memory.
//!
//! Everything memspy learns about a target comes through [`RemoteMemory`]. The Linux
//! implementation, [`ProcessMemory`], uses `process_vm_readv(2)` through nix's safe wrapper, which
//! lets one system call fill many buffers ([`RemoteMemory::read_many`]): the sampler uses that to
//! fetch the headers of every code object of a stack at once.
//!
//! Remote bytes are only ever copied into plain `u8` buffers; callers decode fields explicitly
//! with the `u64_at`-style helpers below, never by casting memory into Rust types.

use std::io::{ErrorKind, IoSliceMut};

use nix::errno::Errno;
use nix::sys::uio::process_vm_readv;
pub use nix::sys::uio::RemoteIoVec;
use nix::unistd::Pid;

/// Why a remote read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFault {
    /// The process no longer exists.
    Gone,
    /// The caller may not read this process (ptrace access mode check failed).
    Denied,
    /// The address is not mapped (freed memory, a pointer that raced, or a wrong offset).
    BadAddress,
    /// Any other errno.
    Other(i32),
}

/// A failed read of `len` bytes at `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadError {
    pub addr: u64,
    pub len: usize,
    pub fault: ReadFault,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let what = match self.fault {
            ReadFault::Gone => "process exited".to_string(),
            ReadFault::Denied => "permission denied".to_string(),
            ReadFault::BadAddress => "address not mapped".to_string(),
            ReadFault::Other(e) => Errno::from_raw(e).desc().to_string(),
        };
        write!(
            f,
            "cannot read {} bytes at {:#x}: {what}",
            self.len, self.addr
        )
    }
}

impl std::error::Error for ReadError {}

/// Most buffers one `process_vm_readv` call accepts (IOV_MAX on Linux).
pub const MAX_IOVECS: usize = 1024;

/// Source of a target's memory.
pub trait RemoteMemory {
    /// Fill `buf` with the bytes at `addr`; all or nothing.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError>;

    /// Read several spans into one buffer, back to back (`out` must hold the sum of their
    /// lengths); returns how many leading spans were read completely. The first span that could
    /// not be read, and everything after it, is left for the caller to retry one by one. The
    /// default reads one span at a time; [`ProcessMemory`] does it in one system call.
    fn read_gather(&self, spans: &[RemoteIoVec], out: &mut [u8]) -> Result<usize, ReadError> {
        let mut pos = 0;
        for (i, span) in spans.iter().enumerate() {
            if let Err(e) = self.read(span.base as u64, &mut out[pos..pos + span.len]) {
                if i == 0 {
                    return Err(e);
                }
                return Ok(i);
            }
            pos += span.len;
        }
        Ok(spans.len())
    }

    /// Read as many bytes as are mapped at `addr`, up to `buf.len()`; returns the count. Used to
    /// copy a window that may run past the end of a mapping.
    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        self.read(addr, buf).map(|()| buf.len())
    }
}

/// Memory of a live process, read with `process_vm_readv`.
#[derive(Clone, Copy, Debug)]
pub struct ProcessMemory {
    pid: Pid,
}

impl ProcessMemory {
    pub fn new(pid: i32) -> ProcessMemory {
        ProcessMemory {
            pid: Pid::from_raw(pid),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    fn fault(&self, errno: Errno) -> ReadFault {
        match errno {
            Errno::ESRCH => ReadFault::Gone,
            Errno::EPERM | Errno::EACCES => ReadFault::Denied,
            Errno::EFAULT | Errno::EIO | Errno::EINVAL => {
                // A process that exited between our reads also reports EFAULT (its mm is gone);
                // tell the two apart so the caller can end the series cleanly.
                if std::path::Path::new(&format!("/proc/{}/stat", self.pid)).exists() {
                    ReadFault::BadAddress
                } else {
                    ReadFault::Gone
                }
            }
            other => ReadFault::Other(other as i32),
        }
    }
}

impl RemoteMemory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let n = self.read_partial(addr, buf)?;
        if n == buf.len() {
            Ok(())
        } else {
            Err(ReadError {
                addr,
                len: buf.len(),
                fault: ReadFault::BadAddress,
            })
        }
    }

    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, ReadError> {
        let len = buf.len();
        if len == 0 {
            return Ok(0);
        }
        let remote = [RemoteIoVec {
            base: addr as usize,
            len,
        }];
        let mut local = [IoSliceMut::new(buf)];
        process_vm_readv(self.pid, &mut local, &remote).map_err(|e| ReadError {
            addr,
            len,
            fault: self.fault(e),
        })
    }

    fn read_gather(&self, spans: &[RemoteIoVec], out: &mut [u8]) -> Result<usize, ReadError> {
        let mut done = 0;
        let mut pos = 0;
        for batch in spans.chunks(MAX_IOVECS) {
            let total: usize = batch.iter().map(|s| s.len).sum();
            let Some(dest) = out.get_mut(pos..pos + total) else {
                return Ok(done);
            };
            // One local buffer, many remote spans: the kernel scatters them back to back.
            let got = match process_vm_readv(self.pid, &mut [IoSliceMut::new(dest)], batch) {
                Ok(n) => n,
                Err(e) => {
                    let fault = self.fault(e);
                    if done == 0 || matches!(fault, ReadFault::Gone | ReadFault::Denied) {
                        let (addr, len) = (batch[0].base as u64, batch[0].len);
                        return Err(ReadError { addr, len, fault });
                    }
                    return Ok(done);
                }
            };
            // The kernel copies spans in order and stops at the first unreadable one.
            let mut left = got;
            for span in batch {
                if left < span.len {
                    return Ok(done);
                }
                left -= span.len;
                done += 1;
            }
            pos += total;
        }
        Ok(done)
    }
}

/// Whether an I/O error from /proc means the process is gone.
pub fn is_gone(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Little-endian field decoders over a byte buffer read from the target. Out-of-range offsets
/// read as zero (a layout bug must not panic the sampler; the walk validates what it reads).
pub fn u64_at(buf: &[u8], off: u64) -> u64 {
    let o = off as usize;
    match buf.get(o..o.wrapping_add(8)) {
        Some(b) => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
        None => 0,
    }
}

pub fn i64_at(buf: &[u8], off: u64) -> i64 {
    u64_at(buf, off) as i64
}

pub fn u32_at(buf: &[u8], off: u64) -> u32 {
    let o = off as usize;
    match buf.get(o..o.wrapping_add(4)) {
        Some(b) => u32::from_le_bytes(b.try_into().unwrap_or([0; 4])),
        None => 0,
    }
}

pub fn i32_at(buf: &[u8], off: u64) -> i32 {
    u32_at(buf, off) as i32
}

pub fn u8_at(buf: &[u8], off: u64) -> u8 {
    buf.get(off as usize).copied().unwrap_or(0)
}

/// Size of the blocks [`PageCache`] copies.
const PAGE: u64 = 4096;
/// Blocks a [`PageCache`] keeps (128 KiB: the pages of a few dozen running threads).
const PAGE_SLOTS: usize = 32;

/// Copies of the target's pages, valid for one stack walk. Thread states and frames that sit
/// close together (3.11+ frames share a few pages of the thread's data stack) then cost one
/// system call per page instead of one per struct. A whole page is always readable when any
/// byte of it is: mappings are page-granular. Memory is allocated once and reused.
pub struct PageCache {
    addrs: [u64; PAGE_SLOTS],
    /// Which slots the walk used since the last `clear` (see [`PageCache::prefetch`]).
    used: [bool; PAGE_SLOTS],
    data: Vec<u8>,
    /// Scratch for the spans of a prefetch.
    spans: Vec<RemoteIoVec>,
    next_victim: usize,
    /// Scratch for reads that straddle two pages.
    span: Vec<u8>,
    /// System calls made since the last `clear` (for benchmarks and tests).
    pub reads: u32,
}

impl Default for PageCache {
    fn default() -> Self {
        PageCache {
            addrs: [u64::MAX; PAGE_SLOTS],
            used: [false; PAGE_SLOTS],
            data: vec![0; PAGE_SLOTS * PAGE as usize],
            spans: Vec::with_capacity(PAGE_SLOTS),
            next_victim: 0,
            span: vec![0; 2 * PAGE as usize],
            reads: 0,
        }
    }
}

impl PageCache {
    /// Forget every page (call before each walk: the target keeps running).
    pub fn clear(&mut self) {
        self.addrs = [u64::MAX; PAGE_SLOTS];
        self.used = [false; PAGE_SLOTS];
        self.next_victim = 0;
        self.reads = 0;
    }

    /// Load `pages` (those a previous walk used, see [`PageCache::used_pages`]) in one gathered
    /// read, right after `clear`: a walk of a running thread touches the same few pages every
    /// time (the runtime, its interpreter, its thread state, its C stack, its data stack), so
    /// one system call replaces one per page. A page that no longer reads ends the gather; it
    /// and the ones after it are read on demand, as without a prefetch.
    pub fn prefetch(&mut self, mem: &dyn RemoteMemory, pages: &[u64]) {
        let n = pages.len().min(PAGE_SLOTS);
        if n < 2 {
            return;
        }
        self.spans.clear();
        self.spans.extend(pages[..n].iter().map(|&p| RemoteIoVec {
            base: p as usize,
            len: PAGE as usize,
        }));
        self.reads += 1;
        let got = mem
            .read_gather(&self.spans, &mut self.data[..n * PAGE as usize])
            .unwrap_or(0);
        self.addrs[..got].copy_from_slice(&pages[..got]);
        self.next_victim = got % PAGE_SLOTS;
    }

    /// The pages the walk since the last `clear` used, into `out` (replacing its contents).
    pub fn used_pages(&self, out: &mut Vec<u64>) {
        out.clear();
        out.extend(
            self.addrs
                .iter()
                .zip(self.used)
                .filter(|&(&a, used)| used && a != u64::MAX)
                .map(|(&a, _)| a),
        );
    }

    fn slot(&mut self, mem: &dyn RemoteMemory, page: u64) -> Result<usize, ReadError> {
        if let Some(i) = self.addrs.iter().position(|&a| a == page) {
            self.used[i] = true;
            return Ok(i);
        }
        let i = self.next_victim;
        self.next_victim = (i + 1) % PAGE_SLOTS;
        let buf = &mut self.data[i * PAGE as usize..(i + 1) * PAGE as usize];
        self.addrs[i] = u64::MAX;
        self.used[i] = false;
        self.reads += 1;
        mem.read(page, buf)?;
        self.addrs[i] = page;
        self.used[i] = true;
        Ok(i)
    }

    /// `len` (at most one page) bytes at `addr`.
    pub fn read(
        &mut self,
        mem: &dyn RemoteMemory,
        addr: u64,
        len: usize,
    ) -> Result<&[u8], ReadError> {
        let len = len.min(PAGE as usize);
        let page = addr & !(PAGE - 1);
        let off = (addr - page) as usize;
        let first = self.slot(mem, page)?;
        if off + len <= PAGE as usize {
            let base = first * PAGE as usize + off;
            return Ok(&self.data[base..base + len]);
        }
        let head = PAGE as usize - off;
        let second = self.slot(mem, page.wrapping_add(PAGE))?;
        // `slot` may have evicted the first page while loading the second.
        if self.addrs[first] != page {
            mem.read(addr, &mut self.span[..len])?;
            self.reads += 1;
            return Ok(&self.span[..len]);
        }
        let a = first * PAGE as usize + off;
        self.span[..head].copy_from_slice(&self.data[a..a + head]);
        let b = second * PAGE as usize;
        self.span[head..len].copy_from_slice(&self.data[b..b + len - head]);
        Ok(&self.span[..len])
    }

    /// The 8-byte little-endian word at `addr`.
    pub fn u64(&mut self, mem: &dyn RemoteMemory, addr: u64) -> Result<u64, ReadError> {
        self.read(mem, addr, 8).map(|b| u64_at(b, 0))
    }
}

/// A [`RemoteMemory`] that keeps a copy of every page it reads, for one pass over many small
/// objects that sit close together (a dict of a thousand threads and their names): a few page
/// reads instead of a system call per object. Like [`PageCache`], valid for one pass only (the
/// target keeps running); reads longer than a page go straight through.
pub struct CachedMemory<'a> {
    mem: &'a dyn RemoteMemory,
    pages: std::cell::RefCell<PageCache>,
}

impl<'a> CachedMemory<'a> {
    pub fn new(mem: &'a dyn RemoteMemory) -> CachedMemory<'a> {
        CachedMemory {
            mem,
            pages: Default::default(),
        }
    }
}

impl RemoteMemory for CachedMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        if buf.len() > PAGE as usize {
            return self.mem.read(addr, buf);
        }
        let mut pages = self.pages.borrow_mut();
        buf.copy_from_slice(pages.read(self.mem, addr, buf.len())?);
        Ok(())
    }
}
