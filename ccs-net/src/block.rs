//! Running the shared async plumbing to completion on the calling thread, for the blocking
//! adapter (and for anyone who needs a deadline on one of these futures without a runtime).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Polls `fut` on this thread until it completes (`Some`) or `deadline` passes (`None`; the
/// future is dropped). The thread sleeps between wake-ups; nothing is spun.
pub fn wait<F: Future>(fut: F, deadline: Option<Instant>) -> Option<F::Output> {
    let (parker, unparker) = parking::pair();
    let waker = Waker::from(unparker);
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Some(out);
        }
        match deadline {
            None => parker.park(),
            Some(d) => {
                if !parker.park_deadline(d) && Instant::now() >= d {
                    return None;
                }
            }
        }
    }
}

/// Polls `fut` on this thread until it completes.
pub fn on<F: Future>(fut: F) -> F::Output {
    match wait(fut, None) {
        Some(out) => out,
        // `wait` gives up only at a deadline, and there is none.
        None => unreachable!("block::wait without a deadline returned without an output"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn completes_or_gives_up_at_the_deadline() {
        assert_eq!(wait(async { 7 }, None), Some(7));
        assert_eq!(on(async { 8 }), 8);
        let (tx, rx) = async_channel::bounded::<u8>(1);
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(wait(rx.recv(), Some(deadline)), None);
        assert!(Instant::now() >= deadline);
        let t = std::thread::spawn(move || tx.send_blocking(3));
        assert_eq!(wait(rx.recv(), None), Some(Ok(3)));
        t.join().unwrap().unwrap();
    }
}
