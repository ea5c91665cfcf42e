//! A strict little reader for the tests: parses what the encoders write with quick-xml 0.42
//! (namespace-aware, end names checked, text untrimmed) into a tree, and fails on anything an
//! XMPP stream may not carry.

#![allow(dead_code)]

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// An element with its resolved namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct El {
    /// The namespace URI, `None` if unbound.
    pub(crate) ns: Option<String>,
    /// The local name.
    pub(crate) name: String,
    /// Attributes other than namespace declarations: (qualified name, normalized value).
    pub(crate) attrs: Vec<(String, String)>,
    /// Children in order.
    pub(crate) children: Vec<Node>,
}

/// A child node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// An element.
    El(El),
    /// Character data (adjacent text, references and CDATA joined).
    Text(String),
}

impl El {
    /// The value of an attribute.
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Child elements.
    pub(crate) fn elements(&self) -> impl Iterator<Item = &El> {
        self.children.iter().filter_map(|n| match n {
            Node::El(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this namespace and local name.
    pub(crate) fn child(&self, ns: &str, name: &str) -> Option<&El> {
        self.elements()
            .find(|e| e.ns.as_deref() == Some(ns) && e.name == name)
    }

    /// All character data directly inside, joined.
    pub(crate) fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::El(_) => None,
            })
            .collect()
    }
}

/// Whether XML 1.0 allows `c` in a document.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// What the encoders promise to make of a string: every character XML cannot carry replaced
/// by U+FFFD.
pub(crate) fn sanitized(s: &str) -> String {
    s.chars()
        .map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' })
        .collect()
}

fn element(reader: &NsReader<&[u8]>, start: &BytesStart<'_>) -> El {
    let (resolved, local) = reader.resolver().resolve_element(start.name());
    let ns = match resolved {
        ResolveResult::Bound(ns) => Some(ns.0.to_owned()),
        ResolveResult::Unbound => None,
        ResolveResult::Unknown(p) => panic!("unbound prefix {p:?}"),
    };
    let mut attrs = Vec::new();
    for a in start.attributes().with_checks(true) {
        let a = a.expect("well-formed attribute");
        let key = a.key.as_ref().to_owned();
        // quick-xml does not check this well-formedness constraint itself.
        assert!(!a.value.contains('<'), "raw `<` in attribute {key}");
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .expect("attribute value unescapes")
            .into_owned();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        attrs.push((key, value));
    }
    El {
        ns,
        name: local.as_ref().to_owned(),
        attrs,
        children: Vec::new(),
    }
}

fn push_text(children: &mut Vec<Node>, s: &str) {
    if let Some(Node::Text(t)) = children.last_mut() {
        t.push_str(s);
    } else {
        children.push(Node::Text(s.to_owned()));
    }
}

/// Parses one complete document (one root element) strictly and returns its root.
pub(crate) fn parse(xml: &str) -> El {
    for c in xml.chars() {
        assert!(
            is_xml_char(c),
            "character {c:?} is not allowed in XML 1.0: {xml:?}"
        );
    }
    assert!(!xml.contains("]]>"), "`]]>` in the output: {xml:?}");
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<El> = Vec::new();
    let mut root: Option<El> = None;
    loop {
        let event = reader
            .read_resolved_event()
            .unwrap_or_else(|e| panic!("{e} in {xml:?}"))
            .1;
        match event {
            Event::Start(start) => {
                assert!(root.is_none(), "second root element in {xml:?}");
                let el = element(&reader, &start);
                stack.push(el);
            }
            Event::Empty(start) => {
                assert!(root.is_none(), "second root element in {xml:?}");
                let el = element(&reader, &start);
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::El(el)),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let el = stack.pop().expect("end tag matches a start tag");
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::El(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(parent) => push_text(&mut parent.children, &content),
                    None => panic!("text {content:?} outside the root in {xml:?}"),
                }
            }
            Event::GeneralRef(r) => {
                let resolved: String = match r.resolve_char_ref().expect("valid char ref") {
                    Some(c) => {
                        assert!(is_xml_char(c), "reference to {c:?} in {xml:?}");
                        c.to_string()
                    }
                    None => quick_xml::escape::resolve_predefined_entity(&r)
                        .unwrap_or_else(|| panic!("undefined entity &{}; in {xml:?}", &*r))
                        .to_owned(),
                };
                match stack.last_mut() {
                    Some(parent) => push_text(&mut parent.children, &resolved),
                    None => panic!("reference outside the root in {xml:?}"),
                }
            }
            Event::CData(c) => {
                let content = c.xml10_content();
                match stack.last_mut() {
                    Some(parent) => push_text(&mut parent.children, &content),
                    None => panic!("CDATA outside the root in {xml:?}"),
                }
            }
            Event::Eof => break,
            other => panic!("XMPP forbids {other:?} (in {xml:?})"),
        }
    }
    assert!(stack.is_empty(), "unclosed elements in {xml:?}");
    root.expect("a root element")
}

/// Parses bytes written by an encoder (they must be UTF-8).
pub(crate) fn parse_bytes(out: &[u8]) -> El {
    parse(std::str::from_utf8(out).expect("encoders write UTF-8"))
}
