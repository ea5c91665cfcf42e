//! [`Incoming::from_json`], and its fast path for what CCS sends most, acks and nacks:
//! [`IncomingRef`], a view borrowed from the JSON text. Everything else goes to the general
//! reader in `incoming.rs`.

use serde_json::Map;

use super::id::MessageId;
use super::incoming::{Ack, Incoming};
use super::nack::{Nack, NackCode};
use crate::error::JsonError;

impl Incoming {
    /// Decodes the JSON text of one `<gcm>` element from CCS.
    ///
    /// Errors when the text is not one JSON object, when a required field is missing or not a
    /// string (`message_id` on everything but control and unknown messages, `from` on
    /// upstream messages and receipts, `control_type` on control messages), or when
    /// `message_type` is neither a string nor null; the error names the field. An optional
    /// field of the wrong type is no error: it is kept in `extra` (the rules are in the
    /// [module documentation](super#leniency-what-ccs-sends)).
    ///
    /// An ack or a nack in its plainest form is read by [`IncomingRef::parse`] (no
    /// `serde_json`). Anything else is decoded in one pass without building a
    /// `serde_json::Value`. Only when that fails (a field given twice, or an error) is it
    /// parsed again as a `Value`, in which each name keeps its last value; that second
    /// decoding is used if it gives an upstream message or a receipt, and otherwise the first
    /// error is returned.
    pub fn from_json(json: &str) -> Result<Self, JsonError> {
        match IncomingRef::parse(json) {
            Some(fast) => Ok(fast.into_owned()),
            None => Self::from_json_general(json),
        }
    }
}

/// An ack or a nack read without copying: its strings borrow from the JSON text.
///
/// [`IncomingRef::parse`] takes only the plainest form of the two: one flat JSON object whose
/// names are among those the message kind reads and whose values are all strings without a
/// backslash escape. It declines (`None`) anything else: escapes, numbers, `null`, nested
/// values, a name given twice, a name the kind does not read (which would go to `extra`), a
/// `message_type` other than exactly `"ack"` or `"nack"`, a missing `message_id`, or text
/// after the object. Declined text goes to [`Incoming::from_json`], which gives the same
/// result as `parse(..).map(IncomingRef::into_owned)` wherever `parse` accepts (the property
/// tests hold the two to that), so a caller may try this first and fall back.
///
/// ```
/// use ccs_proto::message::{Incoming, IncomingRef};
///
/// let json = r#"{"from":"REG","message_id":"m-1","message_type":"ack"}"#;
/// let Some(IncomingRef::Ack(ack)) = IncomingRef::parse(json) else { panic!() };
/// assert_eq!((ack.message_id, ack.from), ("m-1", Some("REG")));
/// assert_eq!(IncomingRef::Ack(ack).into_owned(), Incoming::from_json(json).unwrap());
///
/// // An escape, a number, an unknown field: declined, for `Incoming::from_json`.
/// assert_eq!(IncomingRef::parse(r#"{"message_id":"m\u002d1","message_type":"ack"}"#), None);
/// assert_eq!(IncomingRef::parse(r#"{"message_id":"m-1","message_type":"ack","n":1}"#), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IncomingRef<'a> {
    /// `"message_type":"ack"`.
    Ack(AckRef<'a>),
    /// `"message_type":"nack"`.
    Nack(NackRef<'a>),
}

/// A borrowed [`Ack`] (see [`IncomingRef`]); it has no `extra` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AckRef<'a> {
    /// `from`.
    pub from: Option<&'a str>,
    /// `message_id`.
    pub message_id: &'a str,
    /// `registration_id`: the canonical token.
    pub registration_id: Option<&'a str>,
}

/// A borrowed [`Nack`] (see [`IncomingRef`]); it has no `extra` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NackRef<'a> {
    /// `from`.
    pub from: Option<&'a str>,
    /// `message_id`.
    pub message_id: &'a str,
    /// `error` as received.
    pub error: Option<&'a str>,
    /// `error_description`.
    pub error_description: Option<&'a str>,
}

impl<'a> IncomingRef<'a> {
    /// Reads `json` when it is an ack or a nack in the plain form described on
    /// [`IncomingRef`]; `None` otherwise (use [`Incoming::from_json`] then).
    pub fn parse(json: &'a str) -> Option<Self> {
        let fields = Fields::parse(json)?;
        match fields.message_type? {
            "ack" if fields.error.is_none() && fields.error_description.is_none() => {
                Some(Self::Ack(AckRef {
                    from: fields.from,
                    message_id: fields.message_id?,
                    registration_id: fields.registration_id,
                }))
            }
            "nack" if fields.registration_id.is_none() => Some(Self::Nack(NackRef {
                from: fields.from,
                message_id: fields.message_id?,
                error: fields.error,
                error_description: fields.error_description,
            })),
            _ => None,
        }
    }

    /// The owned message: what [`Incoming::from_json`] gives for the same text.
    pub fn into_owned(self) -> Incoming {
        match self {
            Self::Ack(a) => Incoming::Ack(a.into_owned()),
            Self::Nack(n) => Incoming::Nack(n.into_owned()),
        }
    }
}

impl AckRef<'_> {
    /// The owned ack.
    pub fn into_owned(self) -> Ack {
        Ack {
            from: self.from.map(str::to_owned),
            message_id: MessageId(self.message_id.into()),
            registration_id: self.registration_id.map(str::to_owned),
            extra: Map::new(),
        }
    }
}

impl NackRef<'_> {
    /// The typed `error` ([`NackCode::Unknown`] with an empty string when absent).
    pub fn code(&self) -> NackCode {
        NackCode::parse(self.error.unwrap_or_default())
    }

    /// The owned nack.
    pub fn into_owned(self) -> Nack {
        let raw_error = self.error.unwrap_or_default().to_owned();
        Nack {
            from: self.from.map(str::to_owned),
            message_id: MessageId(self.message_id.into()),
            error: NackCode::parse(&raw_error),
            raw_error,
            error_description: self.error_description.map(str::to_owned),
            extra: Map::new(),
        }
    }
}

/// The string fields an ack or a nack reads, each seen at most once.
#[derive(Default)]
struct Fields<'a> {
    message_type: Option<&'a str>,
    from: Option<&'a str>,
    message_id: Option<&'a str>,
    registration_id: Option<&'a str>,
    error: Option<&'a str>,
    error_description: Option<&'a str>,
}

impl<'a> Fields<'a> {
    /// `ws { ws (name ws : ws value ws (, ws name ws : ws value ws)*)? } ws`, every name and
    /// value a plain string, every name one of the fields.
    fn parse(json: &'a str) -> Option<Self> {
        let mut c = Cursor { text: json, pos: 0 };
        let mut f = Self::default();
        c.ws();
        c.eat(b'{')?;
        c.ws();
        if c.eat(b'}').is_none() {
            loop {
                let slot = match c.name()? {
                    Name::MessageType => &mut f.message_type,
                    Name::From => &mut f.from,
                    Name::MessageId => &mut f.message_id,
                    Name::RegistrationId => &mut f.registration_id,
                    Name::Error => &mut f.error,
                    Name::ErrorDescription => &mut f.error_description,
                };
                c.ws();
                c.eat(b':')?;
                c.ws();
                let value = c.string()?;
                c.ws();
                if slot.replace(value).is_some() {
                    return None;
                }
                if c.eat(b',').is_some() {
                    c.ws();
                    continue;
                }
                c.eat(b'}')?;
                break;
            }
        }
        c.ws();
        (c.pos == json.len()).then_some(f)
    }
}

/// The names [`Fields`] reads.
#[derive(Clone, Copy)]
enum Name {
    MessageType,
    From,
    MessageId,
    RegistrationId,
    Error,
    ErrorDescription,
}

/// Each name as it is written (quotes included), by its first letter.
const NAMES: [(&[u8], Name); 6] = [
    (b"\"message_type\"", Name::MessageType),
    (b"\"message_id\"", Name::MessageId),
    (b"\"from\"", Name::From),
    (b"\"registration_id\"", Name::RegistrationId),
    (b"\"error\"", Name::Error),
    (b"\"error_description\"", Name::ErrorDescription),
];

/// A position in JSON text.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        self.text.as_bytes().get(self.pos..).unwrap_or_default()
    }

    /// JSON's whitespace, as serde_json skips it.
    fn ws(&mut self) {
        let n = self
            .rest()
            .iter()
            .take_while(|&&b| matches!(b, b' ' | b'\n' | b'\t' | b'\r'))
            .count();
        self.pos += n;
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.rest().first() == Some(&b)).then(|| self.pos += 1)
    }

    /// One of the [`NAMES`], written exactly so (a name with an escape is not matched).
    fn name(&mut self) -> Option<Name> {
        let rest = self.rest();
        let candidates: &[(&[u8], Name)] = match rest.get(1)? {
            b'm' => &NAMES[0..2],
            b'f' => &NAMES[2..3],
            b'r' => &NAMES[3..4],
            b'e' => &NAMES[4..6],
            _ => return None,
        };
        let (written, name) = candidates
            .iter()
            .find(|(written, _)| rest.starts_with(written))?;
        self.pos += written.len();
        Some(*name)
    }

    /// A string without escapes (serde_json refuses raw control characters in strings).
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let rest = self.rest();
        let end = string_end(rest)?;
        if rest.get(end) != Some(&b'"') {
            return None;
        }
        let s = self.text.get(self.pos..self.pos + end)?;
        self.pos += end + 1;
        Some(s)
    }
}

/// Where a string's body ends: the first `"`, `\` or control character of `s`.
///
/// Eight bytes at a time: in `(v - 0x01..01) & !v & 0x80..80` the lowest set bit marks the
/// first zero byte of `v` exactly (borrows only make false marks above it), and likewise
/// `(x - 0x20..20) & !x & 0x80..80` for the first byte below 0x20; so the lowest mark of the
/// three tests is the first byte that ends the string.
fn string_end(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let marks = |x: u64| {
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | x.wrapping_sub(ONES * 0x20) & !x)
            & HIGH
    };
    let mut words = s.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let m = marks(u64::from_le_bytes(bytes));
        if m != 0 {
            return Some(at + m.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = words.remainder();
    let found = tail
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    Some(at + found)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn string_end_finds_the_first_quote_backslash_or_control(
            s in proptest::collection::vec(prop_oneof![
                8 => 0x20u8..=0xFF,
                1 => Just(b'"'),
                1 => Just(b'\\'),
                1 => 0u8..0x20,
            ], 0..40),
        ) {
            let naive = s.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(super::string_end(&s), naive);
        }
    }
}
