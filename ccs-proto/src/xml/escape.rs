//! Escaping for the encoders of [`write`](super::write): XML text and attribute values, JSON
//! written as XML text, and condition names made valid element names. What each guarantees is
//! stated in the [`write` module documentation](super::write).

use std::io;

/// Appends `text` escaped as XML character data.
///
/// `&`, `<`, `>` become `&amp;`, `&lt;`, `&gt;`; a carriage return becomes `&#13;`; characters
/// XML 1.0 does not allow become U+FFFD (see the [module documentation](super::write)).
pub fn escape_text(out: &mut Vec<u8>, text: &str) {
    escape_text_bytes(out, text.as_bytes());
}

/// Appends `value` escaped for use inside a double- or single-quoted attribute value.
///
/// Like [`escape_text`], plus `"` → `&quot;`, `'` → `&apos;`, and tab, LF, CR as `&#9;`,
/// `&#10;`, `&#13;` (attribute-value normalization would otherwise turn them into spaces).
pub fn escape_attr(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    out.reserve(bytes.len());
    escape_with_table(out, bytes, &ATTR_CLASS);
}

/// An [`io::Write`] that appends everything written to it, escaped as XML text, to the vector.
///
/// Meant for serializers: `serde_json::to_writer(TextEscaper(&mut out), &value)` writes
/// escaped JSON straight into `out` with no intermediate `String`. It escapes exactly as
/// [`escape_text`] does, byte chunk by byte chunk: it expects UTF-8 and passes other bytes
/// through unchanged, and a U+FFFE/U+FFFF split across two `write` calls is not recognized
/// (serde_json never splits a character). Writing never fails.
///
/// [`gcm_message_serialize`] does not go through this type: it escapes inside serde_json's
/// formatter instead, where only string contents need looking at, which is several times
/// faster for the many tiny writes a serializer makes, and it keeps U+FFFE/U+FFFF intact as
/// JSON escapes where this type has to replace them.
///
/// [`gcm_message_serialize`]: super::write::gcm_message_serialize
#[derive(Debug)]
pub struct TextEscaper<'a>(pub &'a mut Vec<u8>);

impl io::Write for TextEscaper<'_> {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        escape_text_bytes(self.0, buf);
        Ok(buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        escape_text_bytes(self.0, buf);
        Ok(())
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Byte classes for the escaping tables.
const C_COPY: u8 = 0;
const C_AMP: u8 = 1;
const C_LT: u8 = 2;
const C_GT: u8 = 3;
const C_QUOT: u8 = 4;
const C_APOS: u8 = 5;
const C_TAB: u8 = 6;
const C_LF: u8 = 7;
const C_CR: u8 = 8;
/// A C0 control XML 1.0 does not allow: replaced by U+FFFD.
const C_BAD: u8 = 9;
/// 0xEF: the lead byte of U+FFFE (`EF BF BE`) and U+FFFF (`EF BF BF`), checked further.
const C_EF: u8 = 10;

/// U+FFFD REPLACEMENT CHARACTER in UTF-8.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

const fn class_table(attr: bool) -> [u8; 256] {
    let mut t = [C_COPY; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = C_BAD;
        i += 1;
    }
    t[b'\t' as usize] = if attr { C_TAB } else { C_COPY };
    t[b'\n' as usize] = if attr { C_LF } else { C_COPY };
    t[b'\r' as usize] = C_CR;
    t[b'&' as usize] = C_AMP;
    t[b'<' as usize] = C_LT;
    t[b'>' as usize] = C_GT;
    if attr {
        t[b'"' as usize] = C_QUOT;
        t[b'\'' as usize] = C_APOS;
    }
    t[0xEF] = C_EF;
    t
}

static TEXT_CLASS: [u8; 256] = class_table(false);
static ATTR_CLASS: [u8; 256] = class_table(true);

/// The replacement for a byte of class `class` (other than [`C_COPY`] and [`C_EF`]).
#[inline]
fn replacement(class: u8) -> &'static [u8] {
    match class {
        C_AMP => b"&amp;",
        C_LT => b"&lt;",
        C_GT => b"&gt;",
        C_QUOT => b"&quot;",
        C_APOS => b"&apos;",
        C_TAB => b"&#9;",
        C_LF => b"&#10;",
        C_CR => b"&#13;",
        _ => REPLACEMENT,
    }
}

/// Escapes text. The common case (no control character, no 0xEF byte) takes a vectorizable
/// check and then memchr3 over the three markup characters; anything else goes through the
/// table.
#[inline]
fn escape_text_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Serializers write many pieces of a few bytes (`"`, `:`, a key): for those a plain
    // table check is cheaper than setting up the vectorized searches.
    if bytes.len() <= SMALL {
        if bytes.iter().all(|&b| TEXT_CLASS[usize::from(b)] == C_COPY) {
            out.extend_from_slice(bytes);
        } else {
            escape_with_table(out, bytes, &TEXT_CLASS);
        }
        return;
    }
    out.reserve(bytes.len());
    if needs_table(bytes) {
        escape_with_table(out, bytes, &TEXT_CLASS);
    } else {
        escape_markup(out, bytes);
    }
}

/// Up to this many bytes, [`escape_text_bytes`] scans with the table directly.
const SMALL: usize = 16;

/// Whether `bytes` holds a byte the memchr3 path does not handle: a C0 control other than tab
/// and LF, or 0xEF. Written without early exit so that it vectorizes.
#[inline]
fn needs_table(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |acc, &b| {
        acc | u8::from(b < 0x20 && b != b'\t' && b != b'\n') | u8::from(b == 0xEF)
    }) != 0
}

/// Escapes `&`, `<`, `>` only, copying the runs between them.
#[inline]
fn escape_markup(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    for i in memchr::memchr3_iter(b'&', b'<', b'>', bytes) {
        if let (Some(run), Some(&b)) = (bytes.get(start..i), bytes.get(i)) {
            out.extend_from_slice(run);
            out.extend_from_slice(match b {
                b'&' => b"&amp;",
                b'<' => b"&lt;",
                _ => b"&gt;",
            });
        }
        start = i + 1;
    }
    if let Some(rest) = bytes.get(start..) {
        out.extend_from_slice(rest);
    }
}

/// Escapes by a class table, copying runs of [`C_COPY`] bytes whole.
fn escape_with_table(out: &mut Vec<u8>, bytes: &[u8], table: &[u8; 256]) {
    let mut rest = bytes;
    while let Some(pos) = rest.iter().position(|&b| table[usize::from(b)] != C_COPY) {
        let (run, tail) = rest.split_at(pos);
        out.extend_from_slice(run);
        let Some((&b, after)) = tail.split_first() else {
            // `pos` is the index of a byte in `rest`, so `tail` is never empty.
            break;
        };
        let class = table[usize::from(b)];
        if class == C_EF {
            if let [0xBF, 0xBE | 0xBF, after_nonchar @ ..] = after {
                out.extend_from_slice(REPLACEMENT);
                rest = after_nonchar;
            } else {
                // Another character starting with 0xEF: copy the lead byte, the continuation
                // bytes (>= 0x80) are copied with the next run.
                out.push(b);
                rest = after;
            }
        } else {
            out.extend_from_slice(replacement(class));
            rest = after;
        }
    }
    out.extend_from_slice(rest);
}

/// Writes a condition name as an XML NCName, sanitizing it (see the module documentation).
pub(super) fn write_name(out: &mut Vec<u8>, name: &str) {
    if name.is_empty() {
        out.extend_from_slice(b"undefined-condition");
        return;
    }
    let bytes = name.as_bytes();
    let ascii_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ascii_ok {
        out.extend_from_slice(bytes);
        return;
    }
    let mut buf = [0u8; 4];
    for (i, c) in name.chars().enumerate() {
        let c = if i == 0 {
            if is_name_start_char(c) { c } else { '_' }
        } else if is_name_char(c) {
            c
        } else {
            '-'
        };
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// XML 1.0 (fifth edition) `NameStartChar`, without `:` (an NCName).
fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 (fifth edition) `NameChar`, without `:`.
fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// serde_json's compact format, written as XML text: the formatter escapes `&`, `<`, `>`
/// inside string fragments (the only place JSON can hold them) and writes the non-characters
/// U+FFFE and U+FFFF as JSON escapes (XML 1.0 cannot carry them raw). Everything else
/// serde_json writes (punctuation, numbers, literals, its own `\n`-style escapes of control
/// characters) is ASCII that needs no escaping, so it goes to the writer untouched.
///
/// `added` counts the bytes its escapes add to what serde_json's compact format would write,
/// so the JSON's own length is the bytes written minus `added`.
pub(super) struct XmlJson<'a> {
    pub(super) added: &'a mut usize,
}

impl serde_json::ser::Formatter for XmlJson<'_> {
    #[inline]
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let mut rest = fragment.as_bytes();
        // Nearly every fragment has nothing to escape: a branch-free check (it vectorizes)
        // lets those through in one write.
        let special = rest.iter().fold(0u8, |acc, &b| {
            acc | u8::from(b == b'&')
                | u8::from(b == b'<')
                | u8::from(b == b'>')
                | u8::from(b == 0xEF)
        });
        if special == 0 {
            return writer.write_all(rest);
        }
        while let Some(pos) = rest.iter().position(|&b| FRAGMENT_SPECIAL[usize::from(b)]) {
            let (run, tail) = rest.split_at(pos);
            writer.write_all(run)?;
            let Some((&b, after)) = tail.split_first() else {
                // `pos` is the index of a byte in `rest`, so `tail` is never empty.
                break;
            };
            rest = after;
            match b {
                b'&' => {
                    writer.write_all(b"&amp;")?;
                    *self.added += 4;
                }
                b'<' => {
                    writer.write_all(b"&lt;")?;
                    *self.added += 3;
                }
                b'>' => {
                    writer.write_all(b"&gt;")?;
                    *self.added += 3;
                }
                _ => match after {
                    // 0xEF: U+FFFE is EF BF BE, U+FFFF is EF BF BF; the escape is 6 bytes.
                    [0xBF, 0xBE, r @ ..] => {
                        writer.write_all(b"\\ufffe")?;
                        *self.added += 3;
                        rest = r;
                    }
                    [0xBF, 0xBF, r @ ..] => {
                        writer.write_all(b"\\uffff")?;
                        *self.added += 3;
                        rest = r;
                    }
                    // Another character: its continuation bytes go with the next run.
                    _ => writer.write_all(&[b])?,
                },
            }
        }
        writer.write_all(rest)
    }
}

/// The bytes [`XmlJson`] must look at inside a JSON string: `&`, `<`, `>` and 0xEF (the lead
/// byte of U+FFFE and U+FFFF). serde_json has already escaped every control character.
static FRAGMENT_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'&' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[0xEF] = true;
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn text_escaping() {
        let mut out = Vec::new();
        escape_text(&mut out, "a<b>&c]]>\"'\t\n\r");
        assert_eq!(s(&out), "a&lt;b&gt;&amp;c]]&gt;\"'\t\n&#13;");
    }

    #[test]
    fn attr_escaping() {
        let mut out = Vec::new();
        escape_attr(&mut out, "a<b>&c\"d'e\tf\ng\rh");
        assert_eq!(s(&out), "a&lt;b&gt;&amp;c&quot;d&apos;e&#9;f&#10;g&#13;h");
    }

    #[test]
    fn invalid_characters_are_replaced() {
        let mut out = Vec::new();
        escape_text(
            &mut out,
            "a\0b\u{1}c\u{FFFE}d\u{FFFF}e\u{FFFD}f\u{FF21}g\u{EFFF}",
        );
        assert_eq!(
            s(&out),
            "a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}e\u{FFFD}f\u{FF21}g\u{EFFF}"
        );
        out.clear();
        escape_attr(&mut out, "\u{B}x\u{FFFF}");
        assert_eq!(s(&out), "\u{FFFD}x\u{FFFD}");
    }

    #[test]
    fn names_are_sanitized() {
        let cases = [
            ("not-authorized", "not-authorized"),
            ("", "undefined-condition"),
            ("a b", "a-b"),
            ("x:y", "x-y"),
            ("1abc", "_abc"),
            ("-abc", "_abc"),
            ("a<b/>", "a-b--"),
            ("é-ok", "é-ok"),
            ("a\u{FFFE}", "a-"),
        ];
        for (given, want) in cases {
            let mut out = Vec::new();
            write_name(&mut out, given);
            assert_eq!(s(&out), want, "for {given:?}");
        }
    }
}
