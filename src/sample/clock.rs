//! The sampler's two clocks in one wait: the tick schedule (a periodic `timerfd` on
//! CLOCK_MONOTONIC, absolute, so ticks never drift and a late wake-up shows as missed
//! expirations) and the memory events of every recorded thread (their perf descriptors), in
//! one epoll set. Each wake-up says how many ticks are due and which threads have events.
//!
//! Below [`SPIN_BELOW_NS`] between ticks (10 kHz and up) the clock does not sleep: it watches
//! CLOCK_MONOTONIC (vDSO, no system call) until the tick is due, then collects memory events
//! without waiting. A timer that fires 50,000 times a second costs more than the samples
//! (re-arming it exits to the hypervisor on a VM: a fifth of memspy's time at 50 kHz) and
//! wakes up late; and at that rate there is no time left to sleep anyway. memspy then uses a
//! whole core, whatever the target does: that is the price of such rates, as for CPython's own
//! sampler, which spins too.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

/// The epoll token of the tick timer; memory events use any other value.
const TIMER: u64 = u64::MAX;

/// Tick intervals under this are waited for by watching the clock (see the module docs).
pub const SPIN_BELOW_NS: u64 = 100_000;

/// What a wake-up brought.
#[derive(Debug, Default)]
pub struct Woken {
    /// Tick periods that elapsed since the last wake-up (0: only memory events; more than 1:
    /// ticks were missed).
    pub ticks: u64,
    /// Tokens of the event sources that are ready.
    pub events: Vec<u64>,
    /// Tokens of the event sources that hung up (their thread exited): they must be unwatched,
    /// or every wait would return at once for them.
    pub hung_up: Vec<u64>,
}

/// The wait of the sampling loop.
pub struct Clock {
    epoll: Epoll,
    timer: TimerFd,
    ready: Vec<EpollEvent>,
    /// When spinning: the schedule (first tick, interval) and the next tick's number.
    spin: Option<(u64, u64, u64)>,
}

impl Clock {
    /// Ticks every `interval_ns`, the first at `start_ns` (CLOCK_MONOTONIC).
    pub fn new(start_ns: u64, interval_ns: u64) -> io::Result<Clock> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        let interval_ns = interval_ns.max(1);
        let spin = Clock::spins(interval_ns).then_some((start_ns, interval_ns, 0));
        if spin.is_none() {
            let ns = |t: u64| TimeSpec::new((t / 1_000_000_000) as i64, (t % 1_000_000_000) as i64);
            timer.set(
                Expiration::IntervalDelayed(ns(start_ns.max(1)), ns(interval_ns)),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            )?;
            epoll.add(timer.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, TIMER))?;
        }
        Ok(Clock {
            epoll,
            timer,
            ready: vec![EpollEvent::empty(); 256],
            spin,
        })
    }

    /// Whether ticks `interval_ns` apart are waited for by spinning.
    pub fn spins(interval_ns: u64) -> bool {
        interval_ns < SPIN_BELOW_NS
    }

    /// Wait for the next tick or memory event (a signal interrupting the wait returns an empty
    /// wake-up, so the caller can look at its flags).
    pub fn wait(&mut self, out: &mut Woken) {
        out.ticks = 0;
        out.events.clear();
        out.hung_up.clear();
        let mut timeout = EpollTimeout::NONE;
        if let Some((start, interval, next)) = &mut self.spin {
            let due = start.saturating_add(next.saturating_mul(*interval));
            let mut now = super::now_ns();
            while now < due {
                std::hint::spin_loop();
                now = super::now_ns();
            }
            // Every tick due by now: the ones before the last were missed.
            let reached = (now - *start) / *interval + 1;
            out.ticks = reached.saturating_sub(*next);
            *next = reached;
            timeout = EpollTimeout::ZERO;
        }
        let n = match self.epoll.wait(&mut self.ready, timeout) {
            Ok(n) => n,
            Err(_) => return,
        };
        for e in &self.ready[..n] {
            if e.data() == TIMER {
                let mut count = [0u8; 8];
                if nix::unistd::read(self.timer.as_fd(), &mut count).is_ok() {
                    out.ticks += u64::from_le_bytes(count);
                }
            } else {
                if e.events().intersects(EpollFlags::EPOLLIN) {
                    out.events.push(e.data());
                }
                if e.events()
                    .intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
                {
                    out.hung_up.push(e.data());
                }
            }
        }
    }

    /// Wake up when `fd` becomes readable, with `token`.
    pub fn watch(&self, fd: BorrowedFd, token: u64) -> io::Result<()> {
        debug_assert_ne!(token, TIMER);
        Ok(self
            .epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))?)
    }

    /// Stop watching `fd` (before it is closed).
    pub fn unwatch(&self, fd: BorrowedFd) {
        let _ = self.epoll.delete(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_on_an_absolute_schedule() {
        let start = crate::sample::now_ns();
        let mut clock = Clock::new(start + 1_000_000, 2_000_000).unwrap();
        let mut woken = Woken::default();
        let mut ticks = 0;
        while ticks < 5 {
            clock.wait(&mut woken);
            ticks += woken.ticks;
            assert!(woken.events.is_empty());
        }
        // Five ticks due from start + 1 ms, every 2 ms: the fifth is due at start + 9 ms.
        let elapsed = crate::sample::now_ns() - start;
        assert!(elapsed >= 9_000_000, "{elapsed} ns");
        // A late waker sees the missed ticks as expirations.
        std::thread::sleep(std::time::Duration::from_millis(10));
        clock.wait(&mut woken);
        assert!(woken.ticks >= 4, "{} ticks", woken.ticks);
    }

    #[test]
    fn spins_on_the_same_schedule_at_high_rates() {
        let start = crate::sample::now_ns();
        let interval = 20_000;
        assert!(Clock::spins(interval) && !Clock::spins(1_000_000));
        let mut clock = Clock::new(start + 100_000, interval).unwrap();
        let mut woken = Woken::default();
        let mut ticks = 0;
        while ticks < 50 {
            clock.wait(&mut woken);
            assert!(woken.ticks >= 1);
            ticks += woken.ticks;
        }
        // The fiftieth tick is due at start + 100 µs + 49 intervals.
        let elapsed = crate::sample::now_ns() - start;
        assert!(elapsed >= 100_000 + 49 * interval, "{elapsed} ns");
        std::thread::sleep(std::time::Duration::from_millis(1));
        clock.wait(&mut woken);
        assert!(woken.ticks >= 40, "{} ticks", woken.ticks);
    }
}
