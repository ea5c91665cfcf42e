//! Byte-level mutations of valid inputs, for the property tests that hold a fast path to the
//! general path it stands in for (`xml/fast_tests.rs`, `message/incoming_ref_tests.rs`).

use proptest::prelude::*;

/// One edit of an input. Positions are taken modulo the input's length (plus one).
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Inserts one of the tokens.
    Token { at: usize, token: usize },
    /// Inserts a token many times over (a huge string, or a long run of one character).
    Repeat {
        at: usize,
        token: usize,
        times: usize,
    },
    /// Inserts one byte.
    Byte { at: usize, byte: u8 },
    /// Removes up to `len` bytes.
    Delete { at: usize, len: usize },
    /// Flips bits of one byte.
    Flip { at: usize, mask: u8 },
    /// Copies a span of the input to another place (a second attribute, a duplicate key).
    Copy { from: usize, len: usize, to: usize },
    /// Cuts the input short.
    Truncate { at: usize },
}

/// Up to `max` edits, with tokens drawn from a list of `tokens` entries.
pub(crate) fn ops(tokens: usize, max: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (any::<usize>(), 0..tokens).prop_map(|(at, token)| Op::Token { at, token }),
        1 => (any::<usize>(), 0..tokens, 100usize..5000)
            .prop_map(|(at, token, times)| Op::Repeat { at, token, times }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Op::Byte { at, byte }),
        2 => (any::<usize>(), 1usize..12).prop_map(|(at, len)| Op::Delete { at, len }),
        2 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Op::Flip { at, mask }),
        1 => (any::<usize>(), 1usize..40, any::<usize>())
            .prop_map(|(from, len, to)| Op::Copy { from, len, to }),
        1 => any::<usize>().prop_map(|at| Op::Truncate { at }),
    ];
    proptest::collection::vec(op, 0..=max)
}

/// `input` with `ops` applied in order.
pub(crate) fn apply(input: &[u8], ops: &[Op], tokens: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    for op in ops {
        let at = |i: usize, out: &Vec<u8>| i % (out.len() + 1);
        match *op {
            Op::Token { at: i, token } => {
                let i = at(i, &out);
                out.splice(i..i, tokens[token % tokens.len()].iter().copied());
            }
            Op::Repeat {
                at: i,
                token,
                times,
            } => {
                let i = at(i, &out);
                let t = tokens[token % tokens.len()];
                out.splice(i..i, t.iter().copied().cycle().take(t.len() * times));
            }
            Op::Byte { at: i, byte } => {
                let i = at(i, &out);
                out.insert(i, byte);
            }
            Op::Delete { at: i, len } => {
                let i = at(i, &out);
                let end = (i + len).min(out.len());
                out.drain(i..end);
            }
            Op::Flip { at: i, mask } => {
                if !out.is_empty() {
                    let i = i % out.len();
                    out[i] ^= mask;
                }
            }
            Op::Copy { from, len, to } => {
                let from = at(from, &out);
                let end = (from + len).min(out.len());
                let span = out[from..end].to_vec();
                let to = at(to, &out);
                out.splice(to..to, span);
            }
            Op::Truncate { at: i } => {
                let i = at(i, &out);
                out.truncate(i);
            }
        }
    }
    out
}

/// Every input one edit away from `input`: each character of `alphabet` inserted at, and put
/// in place of, each byte position, and each byte deleted. Positions inside a multi-byte
/// character are included (the result is then not UTF-8).
pub(crate) fn single_edits<'a>(
    input: &'a [u8],
    alphabet: &'a [char],
) -> impl Iterator<Item = Vec<u8>> + 'a {
    (0..=input.len()).flat_map(move |at| {
        let deleted = (at < input.len()).then(|| {
            let mut v = input.to_vec();
            v.remove(at);
            v
        });
        alphabet
            .iter()
            .flat_map(move |c| {
                let mut buf = [0; 4];
                let c = c.encode_utf8(&mut buf).as_bytes().to_vec();
                let mut inserted = input.to_vec();
                inserted.splice(at..at, c.iter().copied());
                let replaced = (at < input.len()).then(|| {
                    let mut v = input.to_vec();
                    v.splice(at..=at, c.iter().copied());
                    v
                });
                std::iter::once(inserted).chain(replaced)
            })
            .chain(deleted)
    })
}

/// ASCII and a few characters that matter to XML or JSON (white space Rust trims and XML does
/// not, characters XML forbids, a byte order mark).
pub(crate) fn edit_alphabet() -> Vec<char> {
    (0u8..0x80)
        .map(char::from)
        .chain([
            '\u{85}', '\u{A0}', '\u{2028}', '\u{3000}', '\u{FEFF}', '\u{FFFE}', '\u{FFFF}', 'é',
            '😀',
        ])
        .collect()
}

/// How many of 1,000 values drawn from `strategy` the fast path takes, and declines: `agree`
/// holds it to the general path and says whether it took the value (a disagreement panics).
/// A property proves little unless the strategy makes the fast path do both often.
pub(crate) fn outcomes<T: std::fmt::Debug>(
    strategy: impl Strategy<Value = T>,
    mut agree: impl FnMut(&T) -> Result<bool, TestCaseError>,
) -> (usize, usize) {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut took, mut declined) = (0, 0);
    for _ in 0..1000 {
        match agree(&strategy.new_tree(&mut runner).unwrap().current()) {
            Ok(true) => took += 1,
            Ok(false) => declined += 1,
            Err(e) => panic!("{e}"),
        }
    }
    (took, declined)
}
