//! How the kernel schedules memspy's sampling thread.
//!
//! A memory event is worth something only if the faulting thread's stack is read while it is
//! still in the code that faults. The kernel wakes memspy on the CPU the target runs on, and
//! Linux's fair scheduler (EEVDF, 6.6+) lets the running task finish its slice (about 3 ms)
//! before the woken one runs: a 1 ms allocation burst was over, and its thread elsewhere,
//! before memspy read it (a third of a test's leak landed on the line after the allocating
//! one). Asking for a short slice (100 µs, Linux 6.12+; no privilege needed, and only for this
//! thread) lets the woken sampler run at once. Older kernels ignore the request.

/// The slice asked for, ns.
const SLICE_NS: u64 = 100_000;

/// `struct sched_attr` of sched_setattr(2) (SCHED_ATTR_SIZE_VER1, 56 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Ask for short time slices for the calling thread (keeping its policy, SCHED_OTHER, and its
/// nice value). Returns whether the kernel took the request.
pub fn prefer_short_slices() -> bool {
    nix::errno::Errno::clear();
    // SAFETY: getpriority(2) takes two integers and touches no memory; PRIO_PROCESS with 0 is
    // the calling thread on Linux. -1 is a valid nice value, told from an error by errno.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let nice = if nice == -1 && nix::errno::Errno::last_raw() != 0 {
        0
    } else {
        nice
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime: SLICE_NS,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: sched_setattr(2) reads `attr.size` bytes from the pointer, which points to a
    // live, fully initialised struct of that size; pid 0 is the calling thread only.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) == 0 }
}
