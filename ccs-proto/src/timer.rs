//! [`TimerQueue`]: things due at instants, earliest first.
//!
//! The one timer structure of the workspace: the client's delayed retries, the in-memory
//! network's schedule (`testing::Net`) and the emulator's delayed answers all use it
//! instead of each writing its own `Ord` for a heap. Like every deadline in the core, the
//! instants come from the caller; the queue reads no clock.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Items due at instants. The earliest comes out first; items due at the same instant come
/// out in the order they were pushed. `push` and `pop` are O(log n).
#[derive(Debug)]
pub struct TimerQueue<T> {
    heap: BinaryHeap<Entry<T>>,
    next_seq: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }

    /// Adds `item`, due at `at`.
    pub fn push(&mut self, at: Instant, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { at, seq, item });
    }

    /// When the earliest item is due.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// The earliest item and when it is due, without taking it.
    pub fn peek(&self) -> Option<(Instant, &T)> {
        self.heap.peek().map(|e| (e.at, &e.item))
    }

    /// Takes the earliest item if it is due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, T)> {
        if self.heap.peek().is_some_and(|e| e.at <= now) {
            self.heap.pop().map(|e| (e.at, e.item))
        } else {
            None
        }
    }

    /// Takes the earliest item, due or not.
    pub fn pop(&mut self) -> Option<(Instant, T)> {
        self.heap.pop().map(|e| (e.at, e.item))
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Takes every item, in the order they would come out.
    pub fn drain_in_order(&mut self) -> Vec<(Instant, T)> {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.sort_unstable_by_key(|e| (e.at, e.seq));
        entries.into_iter().map(|e| (e.at, e.item)).collect()
    }
}

#[derive(Debug)]
struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}
