//! [`ShardLock`]: the lock of one connection-table shard.
//!
//! std's `Mutex` takes a locked compare-exchange to lock and a locked swap
//! to unlock (it must learn whether a waiter sleeps on the futex); on the
//! bench machine the pair costs ~25 ns, a fifth of an established packet.
//! A shard is held briefly — one lookup and update per packet (~50 ns), at
//! most `SWEEP_BUDGET` slots per `handle_timeout`; the longest hold is
//! `Director::connections` (`rvs conns`) copying one shard, 1/64 of the
//! table — so this lock never sleeps: one locked swap takes it, a plain release store gives it back.
//! A waiter spins on a plain load for a while, then yields its core
//! (`thread::yield_now`) so that a holder descheduled inside its section
//! (more runnable threads than cores) gets to finish it.
//!
//! There is no poisoning: a panic unwinds through the guard, which releases
//! the lock. The director ignored poisoning on shards anyway, since every
//! change to an entry is a single assignment.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// Spins before the first yield: a little above the length of a
/// per-packet section at one spin per few nanoseconds.
const SPINS: u32 = 128;

/// A mutual-exclusion lock that spins, then yields; see the module docs.
pub struct ShardLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a `ShardGuard`, and at most one
// guard exists at a time (`locked` is taken with an acquire swap and given
// back with a release store), exactly as for `std::sync::Mutex<T>`, which is
// `Sync` for `T: Send`.
unsafe impl<T: Send> Sync for ShardLock<T> {}

impl<T> ShardLock<T> {
    pub fn new(value: T) -> ShardLock<T> {
        ShardLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, waiting (spinning, then yielding) while another
    /// thread holds it.
    #[inline]
    pub fn lock(&self) -> ShardGuard<'_, T> {
        if !self.locked.swap(true, Ordering::Acquire) {
            return ShardGuard { lock: self };
        }
        self.lock_contended()
    }

    #[cold]
    fn lock_contended(&self) -> ShardGuard<'_, T> {
        let mut spins = 0;
        loop {
            // Wait on a plain load: a swap per spin would bounce the line.
            while self.locked.load(Ordering::Relaxed) {
                if spins < SPINS {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if !self.locked.swap(true, Ordering::Acquire) {
                return ShardGuard { lock: self };
            }
        }
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> Option<ShardGuard<'_, T>> {
        if self.locked.load(Ordering::Relaxed) || self.locked.swap(true, Ordering::Acquire) {
            return None;
        }
        Some(ShardGuard { lock: self })
    }
}

impl<T> std::fmt::Debug for ShardLock<T> {
    /// The value is not shown: reading it would need the lock.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardLock")
            .field("locked", &self.locked.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The holder's access to a [`ShardLock`]'s value; releases it on drop.
pub struct ShardGuard<'a, T> {
    lock: &'a ShardLock<T>,
}

impl<T> Deref for ShardGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (see `ShardLock`'s Sync), so
        // nothing else reaches the value while it lives.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for ShardGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for ShardGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for ShardGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_and_releases() {
        let l = ShardLock::new(1);
        {
            let mut g = l.lock();
            *g += 1;
            assert!(l.try_lock().is_none(), "held");
        }
        assert_eq!(*l.try_lock().expect("released"), 2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _g = l.lock();
            panic!("inside");
        }));
        assert!(r.is_err());
        assert_eq!(*l.lock(), 2, "released by unwinding");
    }

    #[test]
    fn threads_do_not_lose_updates() {
        // More threads than this machine's cores: holders get descheduled
        // inside the section, so waiters must yield rather than spin forever.
        let l = Arc::new(ShardLock::new(0u64));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        *l.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*l.lock(), 160_000);
    }
}
