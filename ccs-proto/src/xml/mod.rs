//! XML for one XMPP stream: framing ([`Framer`]), decoding ([`read`], [`StreamReader`]) and
//! encoding ([`mod@write`]).

mod chars;
mod escape;
mod fast;
#[cfg(test)]
mod fast_tests;
mod framer;
mod header;
pub mod read;
pub mod write;

pub use framer::{Frame, Framer, FramerConfig};

use crate::error::XmlError;
use crate::stanza::{Stanza, StreamError, StreamHeader};

/// What a [`StreamReader`] hands out: the frames of a [`Framer`], with stanzas typed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The stream header (also after a restart).
    Header(StreamHeader),
    /// A decoded stanza.
    Stanza(Stanza),
    /// Whitespace between stanzas (a keepalive): the byte count.
    Whitespace(usize),
    /// The peer sent `<stream:error>`.
    StreamError(StreamError),
    /// The peer closed the stream.
    End,
}

/// A [`Framer`] plus the stanza decoder: bytes in, typed [`Event`]s out.
#[derive(Debug)]
pub struct StreamReader {
    framer: Framer,
    error: Option<XmlError>,
    scratch: read::Scratch,
}

impl StreamReader {
    /// A reader waiting for a stream header.
    pub fn new(config: FramerConfig) -> Self {
        Self {
            framer: Framer::new(config),
            error: None,
            scratch: read::Scratch::default(),
        }
    }

    /// Appends received bytes (see [`Framer::push`]).
    pub fn push(&mut self, data: &[u8]) {
        self.framer.push(data);
    }

    /// The next event, `Ok(None)` when more bytes are needed. Errors are fatal and sticky.
    pub fn next_event(&mut self) -> Result<Option<Event>, XmlError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let offset = self.framer.consumed();
        let Some(frame) = self.framer.next_frame()? else {
            return Ok(None);
        };
        Ok(Some(match frame {
            Frame::Header(h) => Event::Header(h),
            Frame::Whitespace(n) => Event::Whitespace(n),
            Frame::StreamError(e) => Event::StreamError(e),
            Frame::End => Event::End,
            Frame::Stanza(bytes) => {
                match read::decode_with(&bytes, self.framer.header(), &mut self.scratch) {
                    Ok(s) => Event::Stanza(s),
                    Err(kind) => {
                        let e = XmlError { kind, offset };
                        self.error = Some(e.clone());
                        return Err(e);
                    }
                }
            }
        }))
    }

    /// Prepares for a restarted stream; see [`Framer::reset`].
    pub fn reset(&mut self) {
        self.framer.reset();
    }

    /// The current stream's header, once received.
    pub fn header(&self) -> Option<&StreamHeader> {
        self.framer.header()
    }

    /// The framer underneath.
    pub fn framer(&self) -> &Framer {
        &self.framer
    }
}
