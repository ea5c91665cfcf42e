//! Framing of one endless XMPP stream: see [`Framer`].

use bytes::{Bytes, BytesMut};
use memchr::{memchr, memchr2, memchr3};

use super::chars::is_xml_char;
use super::header::parse_header;
use super::read;
use crate::error::{XmlError, XmlErrorKind};
use crate::stanza::{StreamError, StreamHeader};

/// Limits of the framer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramerConfig {
    /// The largest stanza accepted, in bytes. A stanza is rejected as soon as it grows past this, closed or not.
    /// Default 64 KiB: CCS payloads are at most 4 KB of data.
    pub max_stanza_bytes: usize,
    /// The deepest element nesting inside a stanza (the stanza's own element is depth 1).
    /// Default 32; CCS stanzas nest at most 4 deep.
    pub max_depth: usize,
    /// The largest stream header accepted, with any XML declaration and whitespace before
    /// it. Default 4 KiB.
    pub max_header_bytes: usize,
}

impl Default for FramerConfig {
    fn default() -> Self {
        Self {
            max_stanza_bytes: 64 * 1024,
            max_depth: 32,
            max_header_bytes: 4096,
        }
    }
}

/// One unit of the stream, as handed out by [`Framer::next_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// The `<stream:stream ...>` header that opens the stream (or a restarted stream).
    Header(StreamHeader),
    /// One complete top-level element, as the exact bytes received, well-formed as far as
    /// framing can tell. [`crate::xml::read::decode`] types it and checks the rest (UTF-8
    /// validity, matching end tags, attribute syntax): the stanza is validated once, there.
    Stanza(Bytes),
    /// Whitespace between stanzas: a keepalive. The count of bytes.
    Whitespace(usize),
    /// A `<stream:error>`: the peer is ending the stream.
    StreamError(StreamError),
    /// `</stream:stream>` (or a self-closed header): the peer ended the stream.
    End,
}

/// The resumable framer for one XMPP stream.
///
/// [`Framer`] owns the connection's input buffer. Bytes go in with [`Framer::push`] in pieces
/// of any size; [`Framer::next_frame`] hands out the stream header, each complete top-level
/// stanza (cut from the buffer without copying), whitespace keepalives, stream errors and the
/// stream's end. It remembers how far it has scanned, so every byte is looked at once however
/// the input is split, and it enforces the size and depth limits while a stanza is still open.
///
/// The framer checks XMPP's restricted XML as it goes: a DTD, a comment, a processing
/// instruction (other than the XML declaration before the header) or an entity other than the
/// five predefined ones is an error, never expanded. Errors are sticky: once `next_frame` has
/// returned one, it returns the same error again.
#[derive(Debug)]
pub struct Framer {
    config: FramerConfig,
    buf: BytesMut,
    scan: Scanner,
    header: Option<StreamHeader>,
    stream_qname: String,
    consumed: u64,
    /// Prolog bytes (XML declaration, whitespace) skipped before the header being waited
    /// for: they count toward `max_header_bytes`.
    prolog: usize,
    error: Option<XmlError>,
    pending_end: bool,
}

impl Framer {
    /// A framer waiting for a stream header.
    pub fn new(config: FramerConfig) -> Self {
        Self {
            config,
            buf: BytesMut::new(),
            scan: Scanner::default(),
            header: None,
            stream_qname: String::new(),
            consumed: 0,
            prolog: 0,
            error: None,
            pending_end: false,
        }
    }

    /// Appends received bytes. Nothing is scanned until [`Framer::next_frame`].
    ///
    /// Memory stays bounded as long as the caller drains frames after each push: the framer
    /// keeps at most one open stanza (up to `max_stanza_bytes`) plus the last piece pushed.
    /// After an error, further bytes are dropped.
    pub fn push(&mut self, data: &[u8]) {
        if self.error.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, XmlError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.frame() {
            Ok(f) => Ok(f),
            Err(kind) => {
                let e = XmlError {
                    kind,
                    offset: self.consumed + self.scan.pos as u64,
                };
                self.error = Some(e.clone());
                self.buf = BytesMut::new();
                Err(e)
            }
        }
    }

    /// Prepares for a restarted stream (after SASL success): the next frame must be a new
    /// stream header. Bytes already received after the last frame are kept: they belong to
    /// the new stream.
    pub fn reset(&mut self) {
        self.scan = Scanner::default();
        self.header = None;
        self.stream_qname.clear();
        self.pending_end = false;
        self.prolog = 0;
    }

    /// The header of the current stream, once received.
    pub fn header(&self) -> Option<&StreamHeader> {
        self.header.as_ref()
    }

    /// Bytes received and not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Total bytes handed out as frames (or skipped as prolog) since the framer was created.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The configured limits.
    pub fn config(&self) -> &FramerConfig {
        &self.config
    }

    fn frame(&mut self) -> Result<Option<Frame>, XmlErrorKind> {
        if self.pending_end {
            self.pending_end = false;
            return Ok(Some(Frame::End));
        }
        loop {
            let limit = self.limit();
            let step = self.scan.run(&self.buf, limit, self.config.max_depth)?;
            match step {
                Step::NeedMore => {
                    let open = !matches!(self.scan.state, State::Between | State::Ended);
                    if open && self.scan.pos > self.limit() {
                        return Err(self.too_large());
                    }
                    return Ok(None);
                }
                Step::Skip(n) => {
                    self.take(n);
                    if self.header.is_none() {
                        self.prolog += n;
                        if self.prolog > self.config.max_header_bytes {
                            return Err(XmlErrorKind::HeaderTooLarge {
                                limit: self.config.max_header_bytes,
                            });
                        }
                    }
                }
                Step::Whitespace(n) => {
                    self.take(n);
                    return Ok(Some(Frame::Whitespace(n)));
                }
                Step::Header { len, self_closing } => {
                    if len > limit {
                        return Err(XmlErrorKind::HeaderTooLarge {
                            limit: self.config.max_header_bytes,
                        });
                    }
                    let bytes = self.take(len);
                    self.prolog = 0;
                    let header = parse_header(&bytes)?;
                    self.stream_qname = match &header.prefix {
                        Some(p) => format!("{p}:stream"),
                        None => "stream".to_owned(),
                    };
                    self.header = Some(header.clone());
                    if self_closing {
                        self.scan.state = State::Ended;
                        self.pending_end = true;
                    }
                    return Ok(Some(Frame::Header(header)));
                }
                Step::Stanza { len, name } => {
                    if len > limit {
                        return Err(self.too_large());
                    }
                    let bytes = self.take(len);
                    let local = &bytes[name.0..name.1];
                    let local = match local.iter().position(|&c| c == b':') {
                        Some(i) => &local[i + 1..],
                        None => local,
                    };
                    if local == b"error" {
                        let header = self.header.as_ref();
                        if let Some(err) = read::decode_stream_error(&bytes, header)? {
                            return Ok(Some(Frame::StreamError(err)));
                        }
                    }
                    return Ok(Some(Frame::Stanza(bytes)));
                }
                Step::End { len, name } => {
                    let found = trim_ascii(&self.buf[name.0..name.1]);
                    if found != self.stream_qname.as_bytes() {
                        return Err(XmlErrorKind::Malformed {
                            detail: format!(
                                "end tag `</{}>` does not close `<{}>`",
                                String::from_utf8_lossy(found),
                                self.stream_qname
                            ),
                        });
                    }
                    self.take(len);
                    return Ok(Some(Frame::End));
                }
            }
        }
    }

    /// The size limit of the frame being scanned.
    fn limit(&self) -> usize {
        if self.scan.depth == 0 && self.header.is_none() {
            // The prolog skipped so far counts toward the header's limit.
            self.config.max_header_bytes.saturating_sub(self.prolog)
        } else if self.scan.depth == 0 {
            self.config.max_header_bytes
        } else {
            self.config.max_stanza_bytes
        }
    }

    fn too_large(&self) -> XmlErrorKind {
        if self.scan.depth == 0 {
            XmlErrorKind::HeaderTooLarge {
                limit: self.config.max_header_bytes,
            }
        } else {
            XmlErrorKind::StanzaTooLarge {
                limit: self.config.max_stanza_bytes,
            }
        }
    }

    fn take(&mut self, n: usize) -> Bytes {
        self.consumed += n as u64;
        self.scan.frame_done();
        self.buf.split_to(n).freeze()
    }
}

/// What one run of the scanner found.
#[derive(Debug)]
enum Step {
    NeedMore,
    /// Prolog bytes to drop (whitespace, the XML declaration).
    Skip(usize),
    Whitespace(usize),
    Header {
        len: usize,
        self_closing: bool,
    },
    /// A complete top-level element; `name` is the span of its qualified name.
    Stanza {
        len: usize,
        name: (usize, usize),
    },
    /// The stream's end tag; `name` is the span of the name inside `</...>`.
    End {
        len: usize,
        name: (usize, usize),
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Before the header: whitespace, an XML declaration, or `<`.
    #[default]
    Prolog,
    /// Between stanzas: whitespace or `<`.
    Between,
    /// Character data inside a stanza.
    Text,
    /// Just after `<`.
    Lt,
    /// In a start tag's name.
    Name,
    /// In a start tag after its name; `quote` is the open quote or 0, `slash` says the last
    /// byte was `/`.
    Tag { quote: u8, slash: bool },
    /// In an end tag, up to `>`.
    EndTag,
    /// After `<!`, `matched` bytes of `[CDATA[` seen.
    Bang { matched: u8 },
    /// In a CDATA section, `brackets` consecutive `]` seen.
    CData { brackets: u8 },
    /// In `<?...?>` (prolog only); `question` says the last byte was `?`.
    Pi { question: bool },
    /// In an entity reference; `quote` is the attribute quote to return to, 0 for text.
    Entity { quote: u8 },
    /// After the stream's end.
    Ended,
}

const CDATA_OPEN: &[u8] = b"[CDATA[";
const MAX_ENTITY: usize = 10;

/// The resumable scanning state. Positions are relative to the start of the buffer, which is
/// always the start of the current frame.
#[derive(Debug, Default)]
struct Scanner {
    state: State,
    pos: usize,
    /// Open elements, counting the stream element.
    depth: usize,
    /// `depth` when the current tag's `<` was seen.
    tag_depth: usize,
    name_start: usize,
    /// Qualified name span of the current top-level element.
    top_name: (usize, usize),
    entity_start: usize,
}

impl Scanner {
    fn frame_done(&mut self) {
        self.pos = 0;
    }

    fn run(&mut self, buf: &[u8], limit: usize, max_depth: usize) -> Result<Step, XmlErrorKind> {
        let len = buf.len();
        while self.pos < len {
            let b = buf[self.pos];
            match self.state {
                State::Prolog | State::Between => {
                    if is_ws(b) {
                        let n = buf[self.pos..]
                            .iter()
                            .position(|&c| !is_ws(c))
                            .unwrap_or(len - self.pos);
                        self.pos += n;
                        return Ok(if self.state == State::Prolog {
                            Step::Skip(self.pos)
                        } else {
                            Step::Whitespace(self.pos)
                        });
                    }
                    if b != b'<' {
                        return Err(if self.state == State::Between {
                            XmlErrorKind::TextOutsideStanza
                        } else if b == 0x15 || b == 0x16 {
                            XmlErrorKind::NotAStreamHeader {
                                found: format!("byte {b:#04x} (a TLS record: is this port TLS?)"),
                            }
                        } else {
                            XmlErrorKind::NotAStreamHeader {
                                found: "character data".into(),
                            }
                        });
                    }
                    self.tag_depth = self.depth;
                    self.state = State::Lt;
                    self.pos += 1;
                }
                State::Lt => {
                    match b {
                        b'/' => {
                            if self.depth == 0 {
                                return Err(malformed("end tag before the stream header"));
                            }
                            self.name_start = self.pos + 1;
                            self.state = State::EndTag;
                        }
                        b'!' => self.state = State::Bang { matched: 0 },
                        b'?' => {
                            if self.depth > 0 {
                                return Err(XmlErrorKind::ProcessingInstruction);
                            }
                            self.state = State::Pi { question: false };
                        }
                        _ if is_name_byte(b) => {
                            self.name_start = self.pos;
                            self.state = State::Name;
                        }
                        _ => return Err(malformed("invalid character after `<`")),
                    }
                    self.pos += 1;
                }
                State::Name => {
                    let n = buf[self.pos..]
                        .iter()
                        .position(|&c| !is_name_byte(c))
                        .unwrap_or(len - self.pos);
                    self.pos += n;
                    if self.pos < len {
                        if self.tag_depth == 1 {
                            self.top_name = (self.name_start, self.pos);
                        }
                        self.state = State::Tag {
                            quote: 0,
                            slash: false,
                        };
                    }
                }
                State::Tag { quote: 0, slash } => {
                    self.pos += 1;
                    match b {
                        b'>' => {
                            if let Some(step) = self.start_tag_closed(slash, max_depth)? {
                                return Ok(step);
                            }
                        }
                        b'"' | b'\'' => {
                            self.state = State::Tag {
                                quote: b,
                                slash: false,
                            }
                        }
                        b'/' => {
                            self.state = State::Tag {
                                quote: 0,
                                slash: true,
                            }
                        }
                        b'<' | b'&' => return Err(malformed("`<` or `&` inside a tag")),
                        _ => {
                            // Names, `=` and whitespace: the whole run in this one step.
                            self.pos += buf[self.pos..]
                                .iter()
                                .take_while(|&&c| !is_tag_markup(c))
                                .count();
                            self.state = State::Tag {
                                quote: 0,
                                slash: false,
                            }
                        }
                    }
                }
                State::Tag { quote, .. } => match memchr3(quote, b'<', b'&', &buf[self.pos..]) {
                    None => self.pos = len,
                    Some(i) => {
                        self.pos += i;
                        match buf[self.pos] {
                            b'<' => return Err(malformed("`<` inside an attribute value")),
                            b'&' => {
                                self.entity_start = self.pos + 1;
                                self.state = State::Entity { quote };
                            }
                            _ => {
                                self.state = State::Tag {
                                    quote: 0,
                                    slash: false,
                                }
                            }
                        }
                        self.pos += 1;
                    }
                },
                // End tag names are short: a plain loop beats memchr's set-up.
                State::EndTag => match buf[self.pos..].iter().position(|&c| c == b'>') {
                    None => self.pos = len,
                    Some(i) => {
                        let name = (self.name_start, self.pos + i);
                        self.pos += i + 1;
                        self.depth -= 1;
                        match self.depth {
                            0 => {
                                self.state = State::Ended;
                                return Ok(Step::End {
                                    len: self.pos,
                                    name,
                                });
                            }
                            1 => {
                                self.state = State::Between;
                                return Ok(Step::Stanza {
                                    len: self.pos,
                                    name: self.top_name,
                                });
                            }
                            _ => self.state = State::Text,
                        }
                    }
                },
                State::Text => match markup_in_text(&buf[self.pos..]) {
                    None => self.pos = len,
                    Some(i) => {
                        self.pos += i;
                        if buf[self.pos] == b'<' {
                            self.tag_depth = self.depth;
                            self.state = State::Lt;
                        } else {
                            self.entity_start = self.pos + 1;
                            self.state = State::Entity { quote: 0 };
                        }
                        self.pos += 1;
                    }
                },
                State::Entity { quote } => {
                    if b == b';' {
                        check_entity(&buf[self.entity_start..self.pos])?;
                        self.state = if quote == 0 {
                            State::Text
                        } else {
                            State::Tag {
                                quote,
                                slash: false,
                            }
                        };
                    } else if self.pos - self.entity_start >= MAX_ENTITY
                        || is_ws(b)
                        || b == b'<'
                        || b == b'&'
                    {
                        return Err(XmlErrorKind::UndefinedEntity {
                            name: String::from_utf8_lossy(&buf[self.entity_start..self.pos])
                                .into_owned(),
                        });
                    }
                    self.pos += 1;
                }
                State::Bang { matched } => {
                    let inside_stanza = self.tag_depth >= 2;
                    match (matched, b) {
                        (0, b'-') => return Err(XmlErrorKind::Comment),
                        (0, b'D') => return Err(XmlErrorKind::Dtd),
                        (0, b'[') if !inside_stanza => {
                            return Err(if self.depth == 0 {
                                XmlErrorKind::NotAStreamHeader {
                                    found: "CDATA".into(),
                                }
                            } else {
                                XmlErrorKind::TextOutsideStanza
                            });
                        }
                        _ if b == CDATA_OPEN[matched as usize] => {
                            let matched = matched + 1;
                            self.state = if matched as usize == CDATA_OPEN.len() {
                                State::CData { brackets: 0 }
                            } else {
                                State::Bang { matched }
                            };
                        }
                        _ => return Err(malformed("unknown markup after `<!`")),
                    }
                    self.pos += 1;
                }
                State::CData { brackets } => {
                    if brackets == 0 {
                        match memchr(b']', &buf[self.pos..]) {
                            None => {
                                self.pos = len;
                                continue;
                            }
                            Some(i) => self.pos += i,
                        }
                    }
                    let b = buf[self.pos];
                    self.state = match (brackets, b) {
                        (_, b']') => State::CData {
                            brackets: (brackets + 1).min(2),
                        },
                        (2, b'>') => State::Text,
                        _ => State::CData { brackets: 0 },
                    };
                    self.pos += 1;
                }
                State::Pi { question } => {
                    self.pos += 1;
                    if question && b == b'>' {
                        // Only the XML declaration is allowed, and only before the header.
                        let body = &buf[2..self.pos];
                        let is_decl = body.len() > 3
                            && &body[..3] == b"xml"
                            && (is_ws(body[3]) || body[3] == b'?');
                        if !is_decl {
                            return Err(XmlErrorKind::ProcessingInstruction);
                        }
                        // Its content is not interpreted, but it is XML text like the rest:
                        // invalid UTF-8 or a character XML cannot carry is refused here too.
                        if std::str::from_utf8(body).is_err() {
                            return Err(XmlErrorKind::Malformed {
                                detail: "invalid UTF-8 in the XML declaration".to_owned(),
                            });
                        }
                        super::chars::check_raw_chars(body)?;
                        self.state = State::Prolog;
                        return Ok(Step::Skip(self.pos));
                    }
                    self.state = State::Pi {
                        question: b == b'?',
                    };
                }
                State::Ended => {
                    if !is_ws(b) {
                        return Err(XmlErrorKind::DataAfterEnd);
                    }
                    self.pos += 1;
                    return Ok(Step::Skip(self.pos));
                }
            }
            if self.pos > limit && self.state != State::Between {
                // Checked per step so that one huge push cannot make us scan past the limit.
                return Ok(Step::NeedMore);
            }
        }
        Ok(Step::NeedMore)
    }

    /// `>` of a start tag was just consumed.
    fn start_tag_closed(
        &mut self,
        self_closing: bool,
        max_depth: usize,
    ) -> Result<Option<Step>, XmlErrorKind> {
        if self.tag_depth == 0 {
            self.state = State::Between;
            if !self_closing {
                self.depth = 1;
            }
            return Ok(Some(Step::Header {
                len: self.pos,
                self_closing,
            }));
        }
        if self_closing {
            if self.tag_depth == 1 {
                self.state = State::Between;
                return Ok(Some(Step::Stanza {
                    len: self.pos,
                    name: self.top_name,
                }));
            }
            self.state = State::Text;
            return Ok(None);
        }
        self.depth += 1;
        if self.depth - 1 > max_depth {
            return Err(XmlErrorKind::TooDeep { limit: max_depth });
        }
        self.state = State::Text;
        Ok(None)
    }
}

fn malformed(detail: &str) -> XmlErrorKind {
    XmlErrorKind::Malformed {
        detail: detail.to_owned(),
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Bytes that change the state inside a start tag (outside attribute values).
fn is_tag_markup(b: u8) -> bool {
    matches!(b, b'>' | b'"' | b'\'' | b'/' | b'<' | b'&')
}

/// The first `<` or `&` in character data; between tags (the most common text of all, the
/// empty one) without calling memchr.
fn markup_in_text(s: &[u8]) -> Option<usize> {
    match s.first() {
        Some(b'<' | b'&') => Some(0),
        _ => memchr2(b'<', b'&', s),
    }
}

/// Bytes that may appear in a tag name as far as framing cares (quick-xml checks the rest).
fn is_name_byte(b: u8) -> bool {
    !matches!(
        b,
        b' ' | b'\t'
            | b'\n'
            | b'\r'
            | b'/'
            | b'>'
            | b'<'
            | b'='
            | b'"'
            | b'\''
            | b'&'
            | b'!'
            | b'?'
    )
}

fn trim_ascii(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// Accepts the five predefined entities and character references to characters XML allows.
fn check_entity(name: &[u8]) -> Result<(), XmlErrorKind> {
    match name {
        b"lt" | b"gt" | b"amp" | b"quot" | b"apos" => Ok(()),
        [b'#', rest @ ..] => {
            let text = String::from_utf8_lossy(name).into_owned();
            let value = match rest {
                [b'x', hex @ ..] if !hex.is_empty() => std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok()),
                dec if !dec.is_empty() && dec.iter().all(u8::is_ascii_digit) => {
                    std::str::from_utf8(dec).ok().and_then(|d| d.parse().ok())
                }
                _ => None,
            };
            match value.and_then(char::from_u32) {
                Some(c) if is_xml_char(c) => Ok(()),
                _ => Err(XmlErrorKind::InvalidCharRef { name: text }),
            }
        }
        _ => Err(XmlErrorKind::UndefinedEntity {
            name: String::from_utf8_lossy(name).into_owned(),
        }),
    }
}
