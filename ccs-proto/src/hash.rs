//! The hash tables of the core's hot paths: keyed by message id, looked up once or twice per
//! message.
//!
//! They use foldhash (seeded at random per process) instead of the standard library's SipHash,
//! which showed in profiles at about 5 % of the instructions of a round trip. Each of these
//! tables is bounded by a window or a queue limit, and the peer cannot insert keys into the
//! client's tables: tables filled by the peer's choice of keys (the upstream de-duplication,
//! the acks awaited) keep SipHash.

/// A `HashMap` with foldhash.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with foldhash.
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
