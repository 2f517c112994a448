//! Memory events from the kernel (`perf_event_open`) for one thread of a target: a sample every
//! N minor page faults (memory being touched for the first time: what grows RSS), and every
//! return from `munmap`, `madvise` and `brk` (memory being handed back). Each event lands in a
//! small ring buffer shared by the thread's events and makes one file descriptor readable, so
//! the sampler can read the thread's stack while it grows or frees memory.
//!
//! Minor faults rather than all faults: the anonymous memory programs leak and churn grows
//! through minor faults (first touch, copy-on-write); major faults are file pages read from
//! disk, which are I/O more than growth and rare in a steady service.
//!
//! The free events are tracepoints (`syscalls:sys_exit_*`), whose ids are in tracefs. When
//! tracefs is not mounted, memspy mounts it for a moment on a thread of its own inside a private
//! mount namespace (nothing changes on the host); where that is not possible, only faults are
//! sampled.
//!
//! This is platform code with `unsafe` blocks, each with the reason it is sound: the system
//! call itself, the ring buffer's `mmap`, and reading records out of it following the kernel's
//! documented protocol (`data_head` read with acquire ordering, records copied out, then
//! `data_tail` stored with release ordering).

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use perf_event_open_sys::bindings as sys;

/// Data pages of each thread's ring buffer (plus one page of metadata). A sample is 32 bytes,
/// so this holds 256 of them between two drains.
const DATA_PAGES: usize = 2;
const PAGE: usize = 4096;

/// Why events could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The kernel refused (perf_event_paranoid, a missing CAP_PERFMON, seccomp in a container).
    Refused(String),
    /// This kernel has no such event or no perf events at all.
    Unsupported(String),
    /// The thread is gone.
    Gone,
}

fn open_error(errno: nix::errno::Errno) -> OpenError {
    use nix::errno::Errno::*;
    match errno {
        EACCES | EPERM => OpenError::Refused(errno.desc().to_string()),
        ESRCH => OpenError::Gone,
        ENOSYS | ENOENT | EOPNOTSUPP | EINVAL => OpenError::Unsupported(errno.desc().to_string()),
        other => OpenError::Unsupported(other.desc().to_string()),
    }
}

/// Events that keep the kernel's machinery for memory events switched on while memspy runs.
///
/// The first event of a kind on the whole system switches it on: the kernel patches its code
/// (static keys) and, for system call tracepoints, flags every thread of the system; the
/// last one to close switches it off again. That costs about 100 ms each time: too much for
/// every thread that comes and goes. These counting events (no samples, no buffer) on
/// memspy's own thread hold it switched on from before the recording starts to its end.
pub struct Warm {
    _events: Vec<OwnedFd>,
}

/// Switch the memory events on (see [`Warm`]); None when the kernel refuses them.
pub fn keep_warm() -> Option<Warm> {
    let mut events = vec![open_counting(
        sys::PERF_TYPE_SOFTWARE,
        sys::PERF_COUNT_SW_PAGE_FAULTS_MIN as u64,
    )?];
    for &id in free_tracepoints() {
        events.extend(open_counting(sys::PERF_TYPE_TRACEPOINT, id));
    }
    Some(Warm { _events: events })
}

/// A counting event on the calling thread.
fn open_counting(type_: u32, config: u64) -> Option<OwnedFd> {
    let mut attr = sys::perf_event_attr {
        type_,
        size: std::mem::size_of::<sys::perf_event_attr>() as u32,
        config,
        ..Default::default()
    };
    attr.set_exclude_hv(1);
    // SAFETY: as in `open_event`: a fully initialised attr for the call, and a new descriptor
    // owned by nobody else.
    let fd = unsafe {
        perf_event_open_sys::perf_event_open(
            &mut attr,
            0,
            -1,
            -1,
            sys::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    // SAFETY: see above.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What one record of the ring buffer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// `period` page faults happened in the thread; the last at `time_ns` (CLOCK_MONOTONIC).
    Faults { time_ns: u64 },
    /// The thread returned from a system call that hands memory back.
    Free { time_ns: u64 },
    /// The kernel dropped this many records (the buffer was full).
    Lost(u64),
}

/// The ids of the free tracepoints, found once.
fn free_tracepoints() -> &'static [u64] {
    static IDS: OnceLock<Vec<u64>> = OnceLock::new();
    IDS.get_or_init(|| {
        let names = ["sys_exit_munmap", "sys_exit_madvise", "sys_exit_brk"];
        let read = |root: &str| -> Option<Vec<u64>> {
            names
                .iter()
                .map(|n| {
                    std::fs::read_to_string(format!("{root}/events/syscalls/{n}/id"))
                        .ok()?
                        .trim()
                        .parse()
                        .ok()
                })
                .collect()
        };
        read("/sys/kernel/tracing")
            .or_else(|| read("/sys/kernel/debug/tracing"))
            .or_else(|| mount_tracefs_privately(&read))
            .unwrap_or_default()
    })
}

/// Mount tracefs on a thread that first leaves memspy's mount namespace (unshare(CLONE_FS |
/// CLONE_NEWNS): the mount is seen by that thread alone and vanishes with it), and read from
/// it there.
fn mount_tracefs_privately(read: &(dyn Fn(&str) -> Option<Vec<u64>> + Sync)) -> Option<Vec<u64>> {
    std::thread::scope(|s| {
        s.spawn(|| {
            use nix::mount::{mount, MsFlags};
            use nix::sched::{unshare, CloneFlags};
            unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).ok()?;
            // Keep the mounts below from propagating back to the host's namespace.
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .ok()?;
            // Tracefs's usual mount point, empty when it is not mounted; else a folder of our own.
            let usual = std::path::Path::new("/sys/kernel/tracing");
            let (dir, made) = if usual.is_dir() {
                (usual.to_path_buf(), false)
            } else {
                (
                    nix::unistd::mkdtemp("/tmp/memspy-tracefs-XXXXXX").ok()?,
                    true,
                )
            };
            let mounted = mount(
                Some("tracefs"),
                &dir,
                Some("tracefs"),
                MsFlags::empty(),
                None::<&str>,
            );
            let ids = mounted.ok().and_then(|()| read(dir.to_str()?));
            let _ = nix::mount::umount(&dir);
            if made {
                let _ = std::fs::remove_dir(&dir);
            }
            ids
        })
        .join()
        .ok()
        .flatten()
    })
}

/// An open perf event and its kernel id.
struct Event {
    fd: OwnedFd,
    id: u64,
}

impl Event {
    /// How many events it has counted since it was opened: every one, sampled or not (the
    /// default read format is that one u64).
    fn count(&self) -> u64 {
        let mut value = [0u8; 8];
        match nix::unistd::read(&self.fd, &mut value) {
            Ok(8) => u64::from_ne_bytes(value),
            _ => 0,
        }
    }
}

fn open_event(
    tid: i32,
    type_: u32,
    config: u64,
    period: u64,
    group: Option<&Event>,
) -> Result<Event, OpenError> {
    let mut attr = sys::perf_event_attr {
        type_,
        size: std::mem::size_of::<sys::perf_event_attr>() as u32,
        config,
        sample_type: (sys::PERF_SAMPLE_TIME | sys::PERF_SAMPLE_ID) as u64,
        ..Default::default()
    };
    attr.sample_period = period;
    attr.wakeup_events = 1;
    attr.set_exclude_hv(1);
    attr.set_use_clockid(1);
    attr.clockid = libc::CLOCK_MONOTONIC;
    // SAFETY: `attr` is a fully initialised perf_event_attr of the size it declares, living for
    // the call; the kernel reads it (and may write its `size` back). The returned descriptor is
    // new and owned by nobody else, so it is safe to take ownership of.
    let fd = unsafe {
        perf_event_open_sys::perf_event_open(
            &mut attr,
            tid,
            -1,
            -1,
            sys::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(open_error(nix::errno::Errno::last()));
    }
    // SAFETY: see above; `fd` is a valid, open, unshared descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut id = 0u64;
    // SAFETY: PERF_EVENT_IOC_ID writes one u64 through the pointer, which points to `id`.
    if unsafe { perf_event_open_sys::ioctls::ID(fd.as_raw_fd(), &mut id) } != 0 {
        return Err(open_error(nix::errno::Errno::last()));
    }
    if let Some(leader) = group {
        // The thread's events share the first one's ring buffer: one descriptor to wait on.
        // SAFETY: both descriptors are open perf events of the same task; the ioctl takes the
        // other descriptor by value.
        if unsafe { perf_event_open_sys::ioctls::SET_OUTPUT(fd.as_raw_fd(), leader.fd.as_raw_fd()) }
            != 0
        {
            return Err(open_error(nix::errno::Errno::last()));
        }
    }
    Ok(Event { fd, id })
}

/// Change an event's sample period. The kernel restarts the count towards the next sample, so
/// the faults since the last one are never sampled: amounts come from [`ThreadEvents::take_counts`].
fn set_period(fd: &OwnedFd, period: u64) -> io::Result<()> {
    // SAFETY: PERIOD takes a pointer to the new period, a u64 that lives for the call.
    let r = unsafe {
        perf_event_open_sys::ioctls::PERIOD(fd.as_raw_fd(), &period as *const u64 as u64)
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The ring buffer of a thread's events, mapped into memspy.
struct Ring {
    base: NonNull<libc::c_void>,
    len: usize,
    /// Copy of one record, which may wrap around the end of the data area.
    scratch: Vec<u8>,
}

// SAFETY: the mapping is only touched through &mut self; moving it to another thread is fine.
unsafe impl Send for Ring {}

impl Ring {
    fn map(fd: BorrowedFd) -> Result<Ring, OpenError> {
        let len = (1 + DATA_PAGES) * PAGE;
        // SAFETY: mapping a fresh perf event descriptor shared and writable is the documented
        // way to get its ring buffer; the mapping is owned by the returned Ring and unmapped
        // exactly once, in Drop.
        let base = unsafe {
            mmap(
                None,
                NonZeroUsize::new(len).expect("non-zero"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .map_err(open_error)?;
        Ok(Ring {
            base,
            len,
            scratch: Vec::with_capacity(64),
        })
    }

    fn head_and_tail(&self) -> (&AtomicU64, &AtomicU64) {
        // SAFETY: the first page is the kernel's struct perf_event_mmap_page, whose data_head
        // and data_tail are naturally aligned u64s at fixed offsets, valid for the mapping's
        // life; the kernel writes data_head and reads data_tail concurrently, hence atomics.
        unsafe {
            let page = self.base.as_ptr() as *const u8;
            let head = page.add(std::mem::offset_of!(sys::perf_event_mmap_page, data_head));
            let tail = page.add(std::mem::offset_of!(sys::perf_event_mmap_page, data_tail));
            (
                AtomicU64::from_ptr(head as *mut u64),
                AtomicU64::from_ptr(tail as *mut u64),
            )
        }
    }

    /// Hand every record written since the last call to `f` (raw header type and body).
    fn drain(&mut self, mut f: impl FnMut(u32, &[u8])) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let (head_ref, tail_ref) = self.head_and_tail();
        let head = head_ref.load(Ordering::Acquire);
        let mut tail = tail_ref.load(Ordering::Relaxed);
        let size = (DATA_PAGES * PAGE) as u64;
        // SAFETY: the data area is the DATA_PAGES pages after the metadata page, inside the
        // mapping; every read below is reduced modulo its size.
        let data = unsafe {
            std::slice::from_raw_parts((self.base.as_ptr() as *const u8).add(PAGE), size as usize)
        };
        while tail + 8 <= head {
            let at = |pos: u64| data[(pos % size) as usize];
            let header: [u8; 8] = std::array::from_fn(|i| at(tail + i as u64));
            let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let len = u16::from_le_bytes([header[6], header[7]]) as u64;
            if len < 8 || tail + len > head {
                break; // a torn or impossible header: drop what is left
            }
            scratch.clear();
            scratch.extend((8..len).map(|i| at(tail + i)));
            f(kind, &scratch);
            tail += len;
        }
        // Everything up to `head` is consumed (an impossible record discards the rest).
        tail_ref.store(head, Ordering::Release);
        self.scratch = scratch;
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `map`, unmapped only here.
        let _ = unsafe { munmap(self.base, self.len) };
    }
}

/// The memory events of one thread.
pub struct ThreadEvents {
    faults: Event,
    frees: Vec<Event>,
    ring: Ring,
    /// Faults per sample.
    pub period: u64,
    /// Frees per sample (1 unless a storm of frees raised it).
    pub free_period: u64,
    /// The faults and frees counted when [`ThreadEvents::take_counts`] last looked.
    taken: (u64, u64),
}

/// What kinds of memory events this kernel lets memspy open, decided with the first thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Faults and frees.
    FaultsAndFrees,
    /// Faults only (no tracefs, or the tracepoints are refused).
    FaultsOnly(String),
}

impl ThreadEvents {
    /// Open the events of thread `tid`: a sample every `period` minor faults, and every free.
    /// `with_frees` false skips the free tracepoints (known not to be available).
    pub fn open(
        tid: i32,
        period: u64,
        with_frees: bool,
    ) -> Result<(ThreadEvents, Capability), OpenError> {
        let faults = open_event(
            tid,
            sys::PERF_TYPE_SOFTWARE,
            sys::PERF_COUNT_SW_PAGE_FAULTS_MIN as u64,
            period.max(1),
            None,
        )?;
        let ring = Ring::map(faults.fd.as_fd())?;
        let mut frees = Vec::new();
        let mut capability = Capability::FaultsAndFrees;
        let ids = if with_frees { free_tracepoints() } else { &[] };
        if with_frees && ids.is_empty() {
            capability = Capability::FaultsOnly("tracefs is not available".into());
        }
        for &id in ids {
            match open_event(tid, sys::PERF_TYPE_TRACEPOINT, id, 1, Some(&faults)) {
                Ok(e) => frees.push(e),
                Err(OpenError::Gone) => return Err(OpenError::Gone),
                Err(OpenError::Refused(why) | OpenError::Unsupported(why)) => {
                    capability = Capability::FaultsOnly(format!("system call events: {why}"));
                    frees.clear();
                    break;
                }
            }
        }
        Ok((
            ThreadEvents {
                faults,
                frees,
                ring,
                period: period.max(1),
                free_period: 1,
                taken: (0, 0),
            },
            capability,
        ))
    }

    /// The descriptor that becomes readable when events arrive.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.faults.fd.as_fd()
    }

    /// Sample every `period` faults from now on.
    pub fn set_period(&mut self, period: u64) -> io::Result<()> {
        let period = period.max(1);
        set_period(&self.faults.fd, period)?;
        self.period = period;
        Ok(())
    }

    /// Sample every `period` frees from now on.
    pub fn set_free_period(&mut self, period: u64) -> io::Result<()> {
        let period = period.max(1);
        for e in &self.frees {
            set_period(&e.fd, period)?;
        }
        self.free_period = period;
        Ok(())
    }

    /// The faults and frees of the thread since the last call, exactly: the kernel counts every
    /// one, whatever the periods (samples only say when they happened). A period change drops
    /// the count towards the next sample, and records drained after a change were taken at the
    /// old period, so samples times periods would be wrong by up to a period each time.
    pub fn take_counts(&mut self) -> (u64, u64) {
        let faults = self.faults.count();
        let frees: u64 = self.frees.iter().map(Event::count).sum();
        let taken = self.taken;
        self.taken = (faults.max(taken.0), frees.max(taken.1));
        (
            faults.saturating_sub(taken.0),
            frees.saturating_sub(taken.1),
        )
    }

    /// The faults of the thread since its events were opened (a running total).
    pub fn faults_total(&self) -> u64 {
        self.faults.count()
    }

    /// Every record since the last drain, oldest first.
    pub fn drain(&mut self, mut f: impl FnMut(Record)) {
        let (faults_id, frees) = (self.faults.id, &self.frees);
        self.ring.drain(|kind, body| {
            let word = |i: usize| {
                body.get(i * 8..i * 8 + 8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            };
            if kind == sys::PERF_RECORD_SAMPLE {
                // sample_type TIME | ID: { u64 time; u64 id; }
                let (time_ns, id) = (word(0), word(1));
                if id == faults_id {
                    f(Record::Faults { time_ns });
                } else if frees.iter().any(|e| e.id == id) {
                    f(Record::Free { time_ns });
                }
            } else if kind == sys::PERF_RECORD_LOST {
                // { u64 id; u64 lost; }
                f(Record::Lost(word(1)));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's own thread faulting and freeing memory produces the records.
    #[test]
    fn faults_and_frees_of_this_thread() {
        let tid = nix::unistd::gettid().as_raw();
        let (mut events, capability) = match ThreadEvents::open(tid, 16, true) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("*** SKIPPED: perf events unavailable here: {e:?} ***");
                return;
            }
        };
        // Touch 4 MiB of fresh memory, then give it back.
        let mut block = vec![0u8; 4 << 20];
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        std::hint::black_box(&block);
        drop(block);
        let (mut faults, mut frees, mut lost) = (0, 0, 0);
        events.drain(|r| match r {
            Record::Faults { .. } => faults += 1,
            Record::Free { .. } => frees += 1,
            Record::Lost(n) => lost += n,
        });
        assert!(
            faults + lost >= 1024 / 16 / 2,
            "{faults} fault samples, {lost} lost"
        );
        eprintln!("{faults} fault samples, {frees} frees, {lost} lost, {capability:?}");
        if capability == Capability::FaultsAndFrees {
            assert!(frees >= 1, "the munmap of the block was not seen");
        }
        events.set_period(1000).unwrap();
        assert_eq!(events.period, 1000);
    }
}
