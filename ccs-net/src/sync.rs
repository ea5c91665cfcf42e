//! The poison-tolerant lock every shared state in this crate is taken with, and the waker
//! slot a future waiting on that state registers in.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Waker;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds valid data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps `waker` in `slot` to be woken, unless the waker already there wakes the same task
/// (then nothing is cloned).
pub(crate) fn register(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Task;

    impl Wake for Task {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn register_keeps_a_waker_for_the_same_task_and_replaces_another() {
        let (a, b) = (Arc::new(Task), Arc::new(Task));
        let (waker_a, waker_b) = (Waker::from(Arc::clone(&a)), Waker::from(Arc::clone(&b)));
        let mut slot = None;
        register(&mut slot, &waker_a);
        assert_eq!(Arc::strong_count(&a), 3, "stored: cloned once");
        register(&mut slot, &waker_a);
        assert_eq!(Arc::strong_count(&a), 3, "the same task: not cloned again");
        register(&mut slot, &waker_b);
        assert_eq!(
            Arc::strong_count(&a),
            2,
            "another task: the old waker is dropped"
        );
        assert!(slot.is_some_and(|w| w.will_wake(&waker_b)));
    }
}
