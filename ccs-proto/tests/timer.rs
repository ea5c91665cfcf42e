//! `TimerQueue`: earliest first, ties in push order, due items only.

use std::time::{Duration, Instant};

use ccs_proto::timer::TimerQueue;

#[test]
fn earliest_first_and_ties_in_push_order() {
    #[allow(clippy::disallowed_methods)] // an epoch for the test
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut q = TimerQueue::new();
    q.push(t0 + s(5), "e");
    q.push(t0 + s(1), "a");
    q.push(t0 + s(3), "c1");
    q.push(t0 + s(3), "c2");
    q.push(t0 + s(3), "c3");
    assert_eq!(q.len(), 5);
    assert_eq!(q.next_at(), Some(t0 + s(1)));
    assert_eq!(q.peek(), Some((t0 + s(1), &"a")));
    assert_eq!(q.pop_due(t0), None, "nothing due yet");
    assert_eq!(q.pop_due(t0 + s(1)), Some((t0 + s(1), "a")));
    let due: Vec<_> = std::iter::from_fn(|| q.pop_due(t0 + s(4)))
        .map(|(_, x)| x)
        .collect();
    assert_eq!(due, ["c1", "c2", "c3"]);
    q.push(t0 + s(2), "b");
    assert_eq!(q.drain_in_order(), [(t0 + s(2), "b"), (t0 + s(5), "e")]);
    assert!(q.is_empty());
    assert_eq!(q.pop(), None);
}
