//! The lock of each handle and of the registry. With `std` it is a
//! `std::sync::Mutex`: a thread waiting for a handle whose holder is in device I/O
//! (a slow callback, `fdatasync`) sleeps in the kernel instead of burning a core.
//! Without `std` there is no operating system to sleep in, and it is a spin lock.

use core::ops::DerefMut;

/// A mutual-exclusion lock: sleeping with `std`, spinning without.
pub(crate) struct Lock<T> {
    #[cfg(feature = "std")]
    inner: std::sync::Mutex<T>,
    #[cfg(not(feature = "std"))]
    inner: spin::Mutex<T>,
}

impl<T> Lock<T> {
    /// A new, unlocked lock holding `value`.
    pub(crate) const fn new(value: T) -> Self {
        Lock {
            #[cfg(feature = "std")]
            inner: std::sync::Mutex::new(value),
            #[cfg(not(feature = "std"))]
            inner: spin::Mutex::new(value),
        }
    }

    /// Waits for the lock (sleeping with `std`) and returns its guard. A panic is
    /// always caught inside the lock and turns the handle's state into
    /// `State::Broken`, so a poisoned `std` mutex holds a consistent value: its
    /// poisoning is ignored.
    pub(crate) fn lock(&self) -> impl DerefMut<Target = T> + '_ {
        #[cfg(feature = "std")]
        {
            self.inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
        #[cfg(not(feature = "std"))]
        {
            self.inner.lock()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_sleeps_until_the_holder_lets_go() {
        use std::sync::Arc;
        use std::time::{Duration, Instant};
        let l = Arc::new(Lock::new(0u32));
        let g = l.lock();
        let l2 = Arc::clone(&l);
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            *l2.lock() += 1;
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(g);
        let waited = t.join().unwrap();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        assert_eq!(*l.lock(), 1);
    }
}
