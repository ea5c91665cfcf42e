//! Decoding of complete stanzas into typed [`Stanza`] values.
//!
//! quick-xml only ever sees one complete stanza, cut out by the [`super::Framer`], so it never
//! meets a short read. Namespaces are resolved with a resolver seeded from the stream header:
//! an element is matched on (namespace, local name), never on its prefix.

use std::borrow::Cow;

use bytes::Bytes;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::PrefixDeclaration;
use quick_xml::reader::Reader;

use super::chars::{attr_value, resolve_ref};
use crate::error::XmlErrorKind;
use crate::stanza::{
    Auth, Features, Iq, IqPayload, IqType, Message, Other, SaslFailure, Stanza, StanzaError,
    StreamError, StreamHeader, ns,
};

/// Decodes one complete stanza (as handed out by [`super::Frame::Stanza`]) in the namespace
/// context of `header` (the stream's header; `None` resolves only what the stanza declares).
///
/// Unknown elements decode to [`Stanza::Other`], keeping their bytes. An error means the
/// stanza is not well-formed XML (or not UTF-8): the stream cannot go on.
pub fn decode(stanza: &Bytes, header: Option<&StreamHeader>) -> Result<Stanza, XmlErrorKind> {
    decode_with(stanza, header, &mut Scratch::default())
}

/// Reusable buffers for decoding, so that a stream of stanzas costs no allocation beyond the
/// decoded values themselves.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Namespace declarations made inside the stanza, innermost last.
    decls: Vec<(Option<String>, Cow<'static, str>)>,
    /// `decls.len()` at each open element.
    marks: Vec<usize>,
    /// Qualified names of the open elements, concatenated, to check end tags.
    names: Vec<u8>,
    /// Where each open element's name starts in `names`.
    name_starts: Vec<usize>,
}

/// [`decode`] with reused buffers: the fast path for the shape CCS writes
/// ([`super::fast`]), else the general path.
pub(crate) fn decode_with(
    stanza: &Bytes,
    header: Option<&StreamHeader>,
    scratch: &mut Scratch,
) -> Result<Stanza, XmlErrorKind> {
    if let Some(m) = super::fast::message(stanza, header) {
        return Ok(Stanza::Message(m));
    }
    decode_general(stanza, header, scratch)
}

/// The general path of [`decode_with`]: any stanza, through quick-xml. Kept callable on its
/// own so that the tests can hold the fast path to it.
pub(crate) fn decode_general(
    stanza: &Bytes,
    header: Option<&StreamHeader>,
    scratch: &mut Scratch,
) -> Result<Stanza, XmlErrorKind> {
    // quick-xml checks the UTF-8 of every event it reads; the characters UTF-8 allows and
    // XML does not (a NUL byte) are checked here.
    super::chars::check_raw_chars(stanza)?;
    let mut d = Decoder::new(stanza, header, scratch);
    let (root, empty) = d.root()?;
    let root_ns = d.namespace(&root);
    let local = root.local_name();
    let stanza = match (&*root_ns, local.as_ref()) {
        (ns::CLIENT, "message") => Stanza::Message(d.message(&root, empty)?),
        (ns::CLIENT, "iq") => Stanza::Iq(d.iq(&root, empty)?),
        (ns::STREAMS, "features") => Stanza::Features(d.features(empty)?),
        (ns::SASL, "auth") => Stanza::Auth(Auth {
            mechanism: attr(&root, "mechanism")?.unwrap_or_default(),
            payload: d.text(empty)?.trim().to_owned(),
        }),
        (ns::SASL, "success") => {
            d.skip(empty)?;
            Stanza::SaslSuccess
        }
        (ns::SASL, "failure") => {
            let (condition, _, text) = d.condition(empty, ns::SASL)?;
            Stanza::SaslFailure(SaslFailure { condition, text })
        }
        _ => {
            let other = Other {
                ns: root_ns.into_owned(),
                name: local.as_ref().to_owned(),
                raw: stanza.clone(),
            };
            d.skip(empty)?;
            Stanza::Other(other)
        }
    };
    d.finish()?;
    Ok(stanza)
}

/// Decodes a top-level element if it is a `<stream:error>` (in the streams namespace).
pub(crate) fn decode_stream_error(
    stanza: &[u8],
    header: Option<&StreamHeader>,
) -> Result<Option<StreamError>, XmlErrorKind> {
    let mut scratch = Scratch::default();
    let mut d = Decoder::new(stanza, header, &mut scratch);
    let (root, empty) = d.root()?;
    if d.namespace(&root) != ns::STREAMS || root.local_name().as_ref() != "error" {
        return Ok(None);
    }
    let (condition, condition_text, text) = d.condition(empty, ns::STREAM_ERRORS)?;
    d.finish()?;
    Ok(Some(StreamError {
        condition,
        condition_text,
        text,
    }))
}

/// One pass over one stanza, with the namespace scope.
struct Decoder<'a, 's> {
    reader: Reader<&'a [u8]>,
    header: &'a [(Option<String>, String)],
    s: &'s mut Scratch,
}

impl<'a, 's> Decoder<'a, 's> {
    fn new(input: &'a [u8], header: Option<&'a StreamHeader>, s: &'s mut Scratch) -> Self {
        let mut reader = Reader::from_reader(input);
        let config = reader.config_mut();
        config.trim_text(false);
        // End names are checked here, against reused buffers (quick-xml's own check
        // allocates for every reader).
        config.check_end_names = false;
        config.expand_empty_elements = false;
        s.decls.clear();
        s.marks.clear();
        s.names.clear();
        s.name_starts.clear();
        Self {
            reader,
            header: header.map(|h| h.namespaces.as_slice()).unwrap_or(&[]),
            s,
        }
    }

    fn event(&mut self) -> Result<Event<'a>, XmlErrorKind> {
        let ev = self.reader.read_event().map_err(|e| match e {
            quick_xml::Error::Encoding(_) => XmlErrorKind::InvalidUtf8,
            e => malformed(&e.to_string()),
        })?;
        match &ev {
            Event::Start(e) => {
                self.s.name_starts.push(self.s.names.len());
                self.s.names.extend_from_slice(e.name().as_ref().as_bytes());
            }
            Event::End(e) => {
                let start = self
                    .s
                    .name_starts
                    .pop()
                    .ok_or_else(|| malformed("end tag without a start tag"))?;
                let name = e.name();
                if &self.s.names[start..] != name.as_ref().as_bytes() {
                    return Err(XmlErrorKind::Malformed {
                        detail: format!(
                            "end tag `</{}>` does not match `<{}>`",
                            name.as_ref(),
                            String::from_utf8_lossy(&self.s.names[start..])
                        ),
                    });
                }
                self.s.names.truncate(start);
            }
            _ => {}
        }
        Ok(ev)
    }

    /// Reads the root element's start tag.
    fn root(&mut self) -> Result<(BytesStart<'a>, bool), XmlErrorKind> {
        match self.event()? {
            Event::Start(e) => {
                self.enter(&e)?;
                Ok((e, false))
            }
            Event::Empty(e) => {
                self.enter(&e)?;
                Ok((e, true))
            }
            _ => Err(malformed("stanza does not start with an element")),
        }
    }

    /// Checks that nothing but whitespace follows the root element.
    fn finish(&mut self) -> Result<(), XmlErrorKind> {
        loop {
            match self.event()? {
                Event::Eof => return Ok(()),
                Event::Text(t) if t.trim_ascii().is_empty() => {}
                _ => return Err(malformed("data after the stanza's root element")),
            }
        }
    }

    /// Opens a namespace scope for an element and records its declarations.
    fn enter(&mut self, e: &BytesStart<'a>) -> Result<(), XmlErrorKind> {
        self.s.marks.push(self.s.decls.len());
        // Duplicate names are checked here over a small stack array: quick-xml's own check
        // allocates for every element.
        let mut seen: [&str; 8] = [""; 8];
        let mut more: Vec<&str> = Vec::new();
        for (i, a) in e.attributes().with_checks(false).enumerate() {
            let a = a.map_err(|err| malformed(&err.to_string()))?;
            let key = a.key.0;
            if seen[..i.min(seen.len())].contains(&key) || more.contains(&key) {
                return Err(XmlErrorKind::Malformed {
                    detail: format!("duplicate attribute `{key}`"),
                });
            }
            match seen.get_mut(i) {
                Some(slot) => *slot = key,
                None => more.push(key),
            }
            match a.key.as_namespace_binding() {
                Some(PrefixDeclaration::Default) => {
                    self.s.decls.push((None, intern(attr_value(&a)?)))
                }
                Some(PrefixDeclaration::Named(p)) => {
                    let value = intern(attr_value(&a)?);
                    self.s.decls.push((Some(p.to_owned()), value));
                }
                None => {}
            }
        }
        Ok(())
    }

    fn leave(&mut self) {
        if let Some(mark) = self.s.marks.pop() {
            self.s.decls.truncate(mark);
        }
    }

    fn resolve(&self, prefix: Option<&str>) -> Option<&str> {
        if prefix == Some("xml") {
            return Some(ns::XML);
        }
        if let Some((_, uri)) = self
            .s
            .decls
            .iter()
            .rev()
            .find(|(p, _)| p.as_deref() == prefix)
        {
            return non_empty(uri);
        }
        self.header
            .iter()
            .find(|(p, _)| p.as_deref() == prefix)
            .and_then(|(_, uri)| non_empty(uri))
    }

    /// The element's namespace: one of the [`ns`] constants without allocating, any other
    /// namespace copied, `""` for none.
    fn namespace(&self, e: &BytesStart<'_>) -> Cow<'static, str> {
        let name = e.name();
        let prefix = name.prefix().map(|p| p.into_inner());
        match self.resolve(prefix) {
            None => Cow::Borrowed(""),
            Some(uri) => intern(Cow::Borrowed(uri)),
        }
    }

    /// The next child element of the current element: its start tag, namespace and local
    /// name, and whether it is empty. `None` at the current element's end tag.
    fn child(&mut self) -> Result<Option<Child<'a>>, XmlErrorKind> {
        loop {
            match self.event()? {
                Event::Start(e) => return self.open_child(e, false).map(Some),
                Event::Empty(e) => return self.open_child(e, true).map(Some),
                Event::End(_) => {
                    self.leave();
                    return Ok(None);
                }
                Event::Eof => return Err(malformed("stanza ended inside an element")),
                Event::Comment(_) => return Err(XmlErrorKind::Comment),
                Event::PI(_) | Event::Decl(_) => return Err(XmlErrorKind::ProcessingInstruction),
                Event::DocType(_) => return Err(XmlErrorKind::Dtd),
                Event::GeneralRef(r) => {
                    resolve_ref(&r)?;
                }
                Event::Text(_) | Event::CData(_) => {}
            }
        }
    }

    fn open_child(&mut self, e: BytesStart<'a>, empty: bool) -> Result<Child<'a>, XmlErrorKind> {
        self.enter(&e)?;
        let ns = self.namespace(&e);
        Ok(Child {
            start: e,
            ns,
            empty,
        })
    }

    /// Reads all character data up to the current element's end tag (entities decoded, CDATA
    /// and split pieces joined; text of nested elements included) and closes the element.
    fn text(&mut self, empty: bool) -> Result<String, XmlErrorKind> {
        let mut out = String::new();
        if empty {
            self.leave();
            return Ok(out);
        }
        let mut depth = 0usize;
        loop {
            match self.event()? {
                Event::Text(t) => push_cow(&mut out, t.xml10_content()),
                Event::CData(t) => push_cow(&mut out, t.xml10_content()),
                Event::GeneralRef(r) => out.push_str(&resolve_ref(&r)?),
                Event::Start(e) => {
                    self.enter(&e)?;
                    depth += 1;
                }
                Event::Empty(_) => {}
                Event::End(_) => {
                    self.leave();
                    if depth == 0 {
                        return Ok(out);
                    }
                    depth -= 1;
                }
                Event::Eof => return Err(malformed("stanza ended inside an element")),
                Event::Comment(_) => return Err(XmlErrorKind::Comment),
                Event::PI(_) | Event::Decl(_) => return Err(XmlErrorKind::ProcessingInstruction),
                Event::DocType(_) => return Err(XmlErrorKind::Dtd),
            }
        }
    }

    /// Skips the rest of the current element (checking it is well-formed).
    fn skip(&mut self, empty: bool) -> Result<(), XmlErrorKind> {
        self.text(empty).map(drop)
    }

    fn message(&mut self, root: &BytesStart<'a>, empty: bool) -> Result<Message, XmlErrorKind> {
        let [id, kind, to, from] = attrs(root, ["id", "type", "to", "from"])?;
        let mut msg = Message {
            id,
            kind,
            to,
            from,
            gcm: None,
            error: None,
        };
        if empty {
            self.leave();
            return Ok(msg);
        }
        while let Some(c) = self.child()? {
            if msg.gcm.is_none() && c.is(ns::GCM, "gcm") {
                msg.gcm = Some(trim_owned(self.text(c.empty)?).into());
            } else if msg.error.is_none() && c.is(ns::CLIENT, "error") {
                msg.error = Some(Box::new(self.stanza_error(&c)?));
            } else {
                self.skip(c.empty)?;
            }
        }
        Ok(msg)
    }

    fn stanza_error(&mut self, c: &Child<'a>) -> Result<StanzaError, XmlErrorKind> {
        let [code, kind] = attrs(&c.start, ["code", "type"])?;
        let (condition, _, text) = self.condition(c.empty, ns::STANZAS)?;
        Ok(StanzaError {
            code,
            kind,
            condition,
            text,
        })
    }

    /// Reads an error-like element: a condition child in `cond_ns` (its name, and its text if
    /// any) and a `<text>` in the same namespace.
    #[allow(clippy::type_complexity)]
    fn condition(
        &mut self,
        empty: bool,
        cond_ns: &str,
    ) -> Result<(String, Option<String>, Option<String>), XmlErrorKind> {
        let (mut condition, mut condition_text, mut text) = (String::new(), None, None);
        if empty {
            self.leave();
            return Ok((condition, condition_text, text));
        }
        while let Some(c) = self.child()? {
            let in_ns = c.ns == cond_ns;
            if c.is(cond_ns, "text") {
                text = Some(trim_owned(self.text(c.empty)?));
            } else if in_ns && condition.is_empty() {
                condition = c.local()?;
                let t = trim_owned(self.text(c.empty)?);
                condition_text = (!t.is_empty()).then_some(t);
            } else {
                self.skip(c.empty)?;
            }
        }
        Ok((condition, condition_text, text))
    }

    fn features(&mut self, empty: bool) -> Result<Features, XmlErrorKind> {
        let mut f = Features::default();
        if empty {
            self.leave();
            return Ok(f);
        }
        while let Some(c) = self.child()? {
            if c.is(ns::SASL, "mechanisms") {
                if c.empty {
                    self.leave();
                    continue;
                }
                while let Some(m) = self.child()? {
                    if m.is(ns::SASL, "mechanism") {
                        f.mechanisms.push(trim_owned(self.text(m.empty)?));
                    } else {
                        self.skip(m.empty)?;
                    }
                }
            } else if c.is(ns::BIND, "bind") {
                f.bind = true;
                self.skip(c.empty)?;
            } else if c.is(ns::SESSION, "session") {
                f.session = true;
                self.skip(c.empty)?;
            } else {
                f.other.push((c.ns.clone().into_owned(), c.local()?));
                self.skip(c.empty)?;
            }
        }
        Ok(f)
    }

    fn iq(&mut self, root: &BytesStart<'a>, empty: bool) -> Result<Iq, XmlErrorKind> {
        let [id, kind, to, from] = attrs(root, ["id", "type", "to", "from"])?;
        let mut iq = Iq {
            id,
            kind: IqType::parse(kind.as_deref().unwrap_or("")),
            to,
            from,
            payload: IqPayload::None,
            error: None,
        };
        if empty {
            self.leave();
            return Ok(iq);
        }
        while let Some(c) = self.child()? {
            if iq.error.is_none() && c.is(ns::CLIENT, "error") {
                iq.error = Some(Box::new(self.stanza_error(&c)?));
            } else if iq.payload != IqPayload::None {
                self.skip(c.empty)?;
            } else if c.is(ns::BIND, "bind") {
                let (mut resource, mut jid) = (None, None);
                if c.empty {
                    self.leave();
                } else {
                    while let Some(b) = self.child()? {
                        if b.is(ns::BIND, "resource") {
                            resource = Some(trim_owned(self.text(b.empty)?));
                        } else if b.is(ns::BIND, "jid") {
                            jid = Some(trim_owned(self.text(b.empty)?));
                        } else {
                            self.skip(b.empty)?;
                        }
                    }
                }
                iq.payload = IqPayload::Bind { resource, jid };
            } else if c.is(ns::SESSION, "session") {
                self.skip(c.empty)?;
                iq.payload = IqPayload::Session;
            } else if c.is(ns::PING, "ping") {
                self.skip(c.empty)?;
                iq.payload = IqPayload::Ping;
            } else {
                iq.payload = IqPayload::Other {
                    ns: c.ns.clone().into_owned(),
                    name: c.local()?,
                };
                self.skip(c.empty)?;
            }
        }
        Ok(iq)
    }
}

/// A child element just opened.
struct Child<'a> {
    start: BytesStart<'a>,
    ns: Cow<'static, str>,
    empty: bool,
}

impl Child<'_> {
    fn is(&self, ns: &str, local: &str) -> bool {
        self.ns == ns && self.start.local_name().as_ref() == local
    }

    fn local(&self) -> Result<String, XmlErrorKind> {
        Ok(self.start.local_name().as_ref().to_owned())
    }
}

const KNOWN: &[&str] = &[
    ns::CLIENT,
    ns::GCM,
    ns::STREAMS,
    ns::SASL,
    ns::BIND,
    ns::SESSION,
    ns::PING,
    ns::STANZAS,
    ns::STREAM_ERRORS,
    ns::XML,
];

/// The unescaped, normalized value of a named attribute of `e`.
fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, XmlErrorKind> {
    let [v] = attrs(e, [name])?;
    Ok(v)
}

/// The values of several attributes of `e`, in one pass (duplicates were refused by
/// `Decoder::enter`).
fn attrs<const N: usize>(
    e: &BytesStart<'_>,
    names: [&str; N],
) -> Result<[Option<String>; N], XmlErrorKind> {
    let mut out = [const { None }; N];
    for a in e.attributes().with_checks(false) {
        let a = a.map_err(|err| malformed(&err.to_string()))?;
        if let Some(i) = names.iter().position(|n| *n == a.key.0) {
            out[i] = Some(attr_value(&a)?.into_owned());
        }
    }
    Ok(out)
}

/// A namespace name as one of the [`ns`] constants when it is one (no allocation).
fn intern(uri: Cow<'_, str>) -> Cow<'static, str> {
    match KNOWN.iter().find(|k| **k == uri) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(uri.into_owned()),
    }
}

fn push_cow(out: &mut String, s: Cow<'_, str>) {
    if out.is_empty() {
        *out = s.into_owned();
    } else {
        out.push_str(&s);
    }
}

fn trim_owned(mut s: String) -> String {
    let end = s.trim_end().len();
    s.truncate(end);
    let start = s.len() - s.trim_start().len();
    if start > 0 {
        s.drain(..start);
    }
    s
}

fn non_empty(uri: &str) -> Option<&str> {
    (!uri.is_empty()).then_some(uri)
}

fn malformed(detail: &str) -> XmlErrorKind {
    XmlErrorKind::Malformed {
        detail: detail.to_owned(),
    }
}
