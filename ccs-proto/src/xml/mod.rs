//! XML for one XMPP stream: framing, decoding, encoding.

pub mod write;
