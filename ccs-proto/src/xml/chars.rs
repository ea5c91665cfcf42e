//! Characters and references, shared by the framer, the header parser and the stanza
//! decoder: which characters XML 1.0 allows, and what references in text and attribute values
//! stand for.

use std::borrow::Cow;

use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::BytesRef;
use quick_xml::events::attributes::Attribute;

use crate::error::XmlErrorKind;

/// XML 1.0 `Char`.
pub(super) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Rejects raw characters that XML 1.0 does not allow and UTF-8 validation lets through: the
/// C0 controls other than tab, LF and CR (a NUL byte, for instance) and U+FFFE, U+FFFF.
/// (Character references to them are refused where they are resolved.)
pub(super) fn check_raw_chars(bytes: &[u8]) -> Result<(), XmlErrorKind> {
    // Nearly every stanza has no byte below 0x20 and no 0xEF (the lead byte of U+F000 to
    // U+FFFF): a branch-free pass over fixed chunks (it vectorizes) clears those at once;
    // the exact scan below runs only when one is there.
    let suspect = |chunk: &[u8]| {
        chunk
            .iter()
            .fold(false, |acc, &b| acc | (b < 0x20) | (b == 0xEF))
    };
    let mut chunks = bytes.chunks_exact(64);
    if !chunks.any(suspect) && !suspect(chunks.remainder()) {
        return Ok(());
    }
    let bad = bytes.iter().enumerate().find(|&(i, &b)| match b {
        b'\t' | b'\n' | b'\r' => false,
        0..0x20 => true,
        0xEF => matches!(bytes.get(i + 1..i + 3), Some([0xBF, 0xBE | 0xBF])),
        _ => false,
    });
    match bad {
        None => Ok(()),
        Some((i, b)) => Err(XmlErrorKind::Malformed {
            detail: format!("character not allowed in XML (byte 0x{b:02X} at {i} in the element)"),
        }),
    }
}

/// An attribute's value with references resolved and whitespace normalized.
pub(super) fn attr_value<'a>(a: &Attribute<'a>) -> Result<Cow<'a, str>, XmlErrorKind> {
    a.normalized_value(XmlVersion::Implicit1_0)
        .map_err(|e| entity_error(&e.to_string()))
}

/// The text a character or predefined entity reference stands for.
pub(super) fn resolve_ref(r: &BytesRef<'_>) -> Result<Cow<'static, str>, XmlErrorKind> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) if is_xml_char(c) => Ok(Cow::Owned(c.to_string())),
            _ => Err(XmlErrorKind::InvalidCharRef {
                name: r.to_string(),
            }),
        };
    }
    resolve_predefined_entity(r)
        .map(Cow::Borrowed)
        .ok_or_else(|| XmlErrorKind::UndefinedEntity {
            name: r.chars().take(16).collect(),
        })
}

fn entity_error(detail: &str) -> XmlErrorKind {
    if detail.contains("entity") || detail.contains("reference") {
        XmlErrorKind::UndefinedEntity {
            name: detail.chars().take(80).collect(),
        }
    } else {
        XmlErrorKind::Malformed {
            detail: detail.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_raw_chars;

    /// The chunked pre-check must never clear what the exact scan refuses, wherever the
    /// character sits (first chunk, a later one, the remainder).
    #[test]
    fn a_bad_character_is_found_anywhere() {
        for len in [0, 1, 63, 64, 65, 130, 200] {
            let clean = "a".repeat(len);
            assert!(check_raw_chars(clean.as_bytes()).is_ok());
            for at in 0..=len {
                for bad in ["\0", "\u{1}", "\u{1f}", "\u{fffe}", "\u{ffff}"] {
                    let s = format!("{}{bad}{}", &clean[..at], &clean[at..]);
                    assert!(check_raw_chars(s.as_bytes()).is_err(), "{len} {at} {bad:?}");
                }
                for good in ["\t", "\n", "\r", "\u{f000}", "\u{fffd}", "\u{efff}", "é"] {
                    let s = format!("{}{good}{}", &clean[..at], &clean[at..]);
                    assert!(check_raw_chars(s.as_bytes()).is_ok(), "{len} {at} {good:?}");
                }
            }
        }
    }
}
