//! The stream header's start tag, parsed by the framer as soon as it has cut it out.

use quick_xml::events::BytesStart;
use quick_xml::name::PrefixDeclaration;

use super::chars::attr_value;
use crate::error::XmlErrorKind;
use crate::stanza::{StreamHeader, ns};

/// Parses the stream header's start tag (`<stream:stream ...>` or self-closed).
pub(super) fn parse_header(bytes: &[u8]) -> Result<StreamHeader, XmlErrorKind> {
    let text = std::str::from_utf8(bytes).map_err(|_| XmlErrorKind::InvalidUtf8)?;
    super::chars::check_raw_chars(bytes)?;
    let inner = text
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .ok_or_else(|| XmlErrorKind::Malformed {
            detail: "stream header is not a tag".to_owned(),
        })?;
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    let name_len = inner.find([' ', '\t', '\r', '\n']).unwrap_or(inner.len());
    let start = BytesStart::from_content(inner, name_len);
    let mut header = StreamHeader::default();
    for a in start.attributes().with_checks(true) {
        let a = a.map_err(|e| XmlErrorKind::Malformed {
            detail: e.to_string(),
        })?;
        let value = attr_value(&a)?.into_owned();
        match a.key.as_namespace_binding() {
            Some(PrefixDeclaration::Default) => header.namespaces.push((None, value)),
            Some(PrefixDeclaration::Named(p)) => {
                header.namespaces.push((Some(p.to_owned()), value))
            }
            None => header.attributes.push((a.key.as_ref().to_owned(), value)),
        }
    }
    let qname = &inner[..name_len];
    let (prefix, local) = match qname.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, qname),
    };
    let uri = header
        .namespaces
        .iter()
        .find(|(p, _)| p.as_deref() == prefix)
        .map(|(_, u)| u.as_str());
    if local != "stream" || uri != Some(ns::STREAMS) {
        return Err(XmlErrorKind::NotAStreamHeader {
            found: qname.to_owned(),
        });
    }
    header.prefix = prefix.map(str::to_owned);
    Ok(header)
}
