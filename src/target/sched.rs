//! How the kernel schedules memspy's sampling thread.
//!
//! A memory event is worth something only if the faulting thread's stack is read while it is
//! still in the code that faults. The kernel wakes memspy on the CPU the target runs on, and
//! Linux's fair scheduler lets the running task go on (to the end of its slice, about 3 ms, or
//! to the next tick under lazy preemption) before the woken one runs: a 1 ms allocation burst
//! was over, and its thread elsewhere, before memspy read it (a third of a test's leak landed
//! on the line after the allocating one).
//!
//! So the sampling thread asks to run at once when woken: real-time priority 1 (SCHED_FIFO,
//! the lowest real-time priority) when it may (root, CAP_SYS_NICE or RLIMIT_RTPRIO), with
//! SCHED_RESET_ON_FORK so nothing it starts inherits it; else a short fair slice (100 µs,
//! Linux 6.12+, no privilege needed), which helps less. Only this thread changes: the program
//! and memspy's other threads were started before. What the thread does per second is
//! bounded (memory-event periods adapt to a budget of stack reads, see `sample::events`), and
//! the kernel's real-time throttling caps it at 95 % of a CPU whatever happens.

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

/// How the sampling thread is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Promptness {
    /// SCHED_FIFO priority 1: runs as soon as it is woken.
    Realtime,
    /// A short fair slice.
    ShortSlice,
    /// Neither was allowed.
    Normal,
}

/// Ask for the calling thread to run as soon as it is woken (see the module documentation).
pub fn run_promptly() -> Promptness {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler(2) reads one sched_param from a pointer to a live local; pid 0
    // is the calling thread only.
    let realtime = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    } == 0;
    if realtime {
        Promptness::Realtime
    } else if prefer_short_slices() {
        Promptness::ShortSlice
    } else {
        Promptness::Normal
    }
}

/// Ask for short time slices for the calling thread (keeping its policy, SCHED_OTHER, and its
/// nice value). Returns whether the kernel took the request.
fn prefer_short_slices() -> bool {
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
