//! The one lock-poison policy. A std `Mutex` is poisoned when a thread
//! panicked while holding it. Every such mutex in sandcron guards data that
//! its critical sections leave whole (an insert, a remove, a pop, one
//! store transaction applied in memory before it is acknowledged), so the
//! data is still good. Failing every later call instead would turn one
//! panic into a worker that can no longer kill a run or a store that answers
//! nothing, and silently skipping the work (`if let Ok(..) = lock()`) could
//! lose a kill without a trace. So: recover the guard, say so once in the
//! log, clear the flag, and go on. Locks are taken only through [`lock`];
//! `host/tests/tidy.rs` checks that no other way is used.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering it (with one error in the log) if an earlier
/// panic poisoned it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| {
        tracing::error!("a panic poisoned a lock; its data is whole by construction, carrying on with it");
        mutex.clear_poison();
        poisoned.into_inner()
    })
}

/// The inside of a mutex held exclusively (in a `Drop`), under the same
/// policy.
pub(crate) fn get_mut<T>(mutex: &mut Mutex<T>) -> &mut T {
    mutex.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::lock;

    #[test]
    fn a_poisoned_lock_is_recovered_with_its_data_and_unpoisoned() {
        let shared = Arc::new(Mutex::new(vec![1]));
        let inside = Arc::clone(&shared);
        let panicked = std::thread::spawn(move || {
            let mut guard = inside.lock().expect("not poisoned yet");
            guard.push(2);
            panic!("while holding the lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(shared.is_poisoned());
        assert_eq!(*lock(&shared), vec![1, 2]);
        assert!(!shared.is_poisoned(), "recovered once, then clear");
    }
}
