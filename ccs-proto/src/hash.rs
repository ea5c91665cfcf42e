//! The hash tables of the core's hot paths: keyed by message id, looked up once or twice per
//! message.
//!
//! They use foldhash (seeded at random per process) instead of the standard library's SipHash,
//! which showed in profiles at about 5 % of the instructions of a round trip. The client's
//! tables (in flight, live, expired) hold only ids the application chose. The server role's
//! pending table holds ids its peer chose, but it is bounded (`ServerConfig::max_pending`,
//! default 1000), so colliding keys cost at most that many probes each. Unbounded tables the
//! peer fills (the client's upstream de-duplication, the acks awaited) keep SipHash.

/// A `HashMap` with foldhash.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with foldhash.
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
