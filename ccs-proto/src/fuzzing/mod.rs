//! Fuzz target bodies (feature `fuzzing`): one function per target of the cargo-fuzz crate in
//! `fuzz/`, each taking the fuzzer's bytes. They live here, not in `fuzz/`, so that the
//! corpora replay as ordinary tests on stable (`tests/fuzz_corpus.rs`).
//!
//! Each body panics when an invariant breaks (a panic in the code under test is a finding
//! too). Bodies that need a clock take `now`, the simulated clock's start: the crate never
//! reads the clock, its callers pass `Instant::now()`.
//!
//! Many bodies read a few leading bytes as parameters (a piece size, a count) and feed the
//! rest as input: [`pieces`] cuts the input the same way everywhere.

mod client;
mod json;
mod stream;
mod xml;

pub use client::client_ops;
pub use json::{downstream_json, incoming_json};
pub use stream::{connection_input, server_input};
pub use xml::{framer, stanza};

/// Splits off the first byte of `data` as a piece size (1..=64; 0 for an empty input) and
/// cuts the rest into pieces of that size, the last one shorter.
pub fn pieces(data: &[u8]) -> (usize, std::slice::Chunks<'_, u8>) {
    let (size, rest) = match data.split_first() {
        Some((&b, rest)) => (usize::from(b % 64) + 1, rest),
        None => (1, data),
    };
    (size, rest.chunks(size))
}
