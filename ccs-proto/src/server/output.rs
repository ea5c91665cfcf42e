//! The connection writing to the client, and the checks commands make before they write.

use super::{Pending, ServerCloseReason, ServerConnection, ServerError, ServerEvent, ServerState};
use crate::message::{AppAck, Incoming, MessageId};
use crate::stanza::Iq;
use crate::xml::write::{self, MessageAttrs};

/// An ack as the server writes it: the fields of [`Ack`](crate::message::Ack)'s serialization,
/// in its order, borrowed.
pub(super) struct AckOut<'a> {
    pub(super) from: &'a str,
    pub(super) message_id: &'a str,
    pub(super) registration_id: Option<&'a str>,
}

impl serde::Serialize for AckOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("message_type", "ack")?;
        m.serialize_entry("from", self.from)?;
        m.serialize_entry("message_id", self.message_id)?;
        if let Some(r) = self.registration_id {
            m.serialize_entry("registration_id", r)?;
        }
        m.end()
    }
}

impl AckOut<'_> {
    /// Writes the ack stanza to `out`: what [`write::gcm_message_serialize`] writes for it
    /// with no stanza attributes. When no string needs a JSON or XML escape (as for every
    /// token and id CCS issues) the bytes are copied into the known shape; otherwise serde
    /// writes it.
    pub(super) fn write(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        /// A string JSON and XML both carry as it is: no control character, no `"` or `\`,
        /// no `&`, `<`, `>`, and no 0xEF (the lead byte of U+FFFE and U+FFFF).
        fn plain(s: &str) -> bool {
            s.bytes()
                .all(|b| b >= 0x20 && !matches!(b, b'"' | b'\\' | b'&' | b'<' | b'>' | 0xEF))
        }
        if !plain(self.from) || !plain(self.message_id) || !self.registration_id.is_none_or(plain) {
            return write::gcm_message_serialize(out, &MessageAttrs::default(), self);
        }
        out.extend_from_slice(
            b"<message><gcm xmlns=\"google:mobile:data\">{\"message_type\":\"ack\",\"from\":\"",
        );
        out.extend_from_slice(self.from.as_bytes());
        out.extend_from_slice(b"\",\"message_id\":\"");
        out.extend_from_slice(self.message_id.as_bytes());
        if let Some(r) = self.registration_id {
            out.extend_from_slice(b"\",\"registration_id\":\"");
            out.extend_from_slice(r.as_bytes());
        }
        out.extend_from_slice(b"\"}</gcm></message>");
        Ok(())
    }
}

impl ServerConnection {
    /// Commands that write messages need a bound, open stream.
    pub(super) fn ready(&self) -> Result<(), ServerError> {
        match self.state {
            ServerState::Bound | ServerState::Draining => Ok(()),
            ServerState::Closing => Err(ServerError::Closing),
            ServerState::Closed => Err(ServerError::Closed),
            state => Err(ServerError::NotReady { state }),
        }
    }

    /// Commands that write anything need the server's stream not to be over.
    pub(super) fn writable(&self) -> Result<(), ServerError> {
        match self.state {
            ServerState::Closed => Err(ServerError::Closed),
            _ if self.end_sent => Err(ServerError::Closing),
            _ => Ok(()),
        }
    }

    pub(super) fn pending_entry(
        &self,
        message_id: &str,
    ) -> Result<(&MessageId, &Pending), ServerError> {
        self.pending
            .get_key_value(message_id)
            .ok_or_else(|| ServerError::NotPending {
                id: message_id.to_owned(),
            })
    }

    /// One answer to the pending message `message_id` went out: one copy fewer is owed; the
    /// entry goes when none is.
    pub(super) fn answered_one(&mut self, message_id: &str) {
        let Some(p) = self.pending.get_mut(message_id) else {
            return;
        };
        p.copies = p.copies.saturating_sub(1);
        if p.copies == 0 {
            self.pending.remove(message_id);
        }
        self.owed = self.owed.saturating_sub(1);
    }

    pub(super) fn check_unacked(&self, key: &AppAck) -> Result<(), ServerError> {
        let limit = self.config.max_unacked_upstream;
        if self.unacked.len() >= limit && !self.unacked_by_id.contains_key(key) {
            return Err(ServerError::TooManyUnacked { limit });
        }
        Ok(())
    }

    pub(super) fn track_unacked(&mut self, message: Incoming) {
        let Some(key) = message.ack_for() else {
            return;
        };
        self.unacked_seq += 1;
        if let Some(old) = self.unacked_by_id.insert(key, self.unacked_seq) {
            self.unacked.remove(&old);
        }
        self.unacked.insert(self.unacked_seq, message);
    }

    /// Writes a `<message>` with CCS JSON: `type` as given, `to` the bare JID and `from`
    /// `devices@DOMAIN` for upstream-like messages (`type="normal"`), no attributes
    /// otherwise.
    pub(super) fn write_gcm<T: serde::Serialize>(
        &mut self,
        kind: Option<&str>,
        value: &T,
    ) -> Result<(), ServerError> {
        let (to, from) = if kind.is_some() {
            (
                Some(format!("{}@{}", self.config.sender_id, self.config.domain)),
                Some(format!("devices@{}", self.config.domain)),
            )
        } else {
            (None, None)
        };
        let attrs = MessageAttrs {
            id: None,
            to: to.as_deref(),
            from: from.as_deref(),
            kind,
        };
        write::gcm_message_serialize(&mut self.out, &attrs, value)
            .map_err(|e| ServerError::Encode(e.into()))?;
        self.stats.stanzas_out += 1;
        Ok(())
    }

    pub(super) fn write_stanza_error(
        &mut self,
        stanza_id: Option<&str>,
        echoed_json: Option<&str>,
        condition: &str,
        text: Option<&str>,
    ) {
        let (kind, code) = stanza_error_type(condition);
        let attrs = MessageAttrs {
            id: stanza_id,
            to: self.jid.as_deref(),
            ..MessageAttrs::default()
        };
        write::stanza_error_message(
            &mut self.out,
            &attrs,
            echoed_json,
            code,
            kind,
            condition,
            text,
        );
        self.stats.stanzas_out += 1;
        self.stats.stanza_errors_sent += 1;
    }

    pub(super) fn iq_result(&mut self, iq: &Iq) {
        write::iq_result(&mut self.out, iq.id.as_deref(), None);
        self.stats.stanzas_out += 1;
    }

    pub(super) fn iq_error(&mut self, iq: &Iq, kind: &str, condition: &str) {
        write::iq_error(&mut self.out, iq.id.as_deref(), None, kind, condition);
        self.stats.stanzas_out += 1;
    }

    /// Writes the server's stream header for the current stream.
    pub(super) fn write_header(&mut self) {
        let id = format!("{:016X}", self.rng.next());
        let from = self.stream_to.as_deref().unwrap_or(&self.config.domain);
        write::server_header(&mut self.out, from, &id);
        self.stream_id = Some(id);
        self.header_sent = true;
    }

    /// Answers the client's end of stream with ours, unless ours was sent.
    pub(super) fn end_stream(&mut self) {
        if !self.end_sent {
            if !self.header_sent {
                self.write_header();
            }
            write::stream_end(&mut self.out);
            self.end_sent = true;
        }
    }

    pub(super) fn fail(&mut self, condition: &str, text: Option<&str>) {
        let reason = ServerCloseReason::StreamError {
            condition: condition.to_owned(),
            text: text.map(str::to_owned),
        };
        self.fail_with(condition, text, reason);
    }

    /// Sends a stream error and the end tag (with a header first if this stream has none,
    /// RFC 6120 §4.9.1.1) unless the end tag was already sent, then closes.
    pub(super) fn fail_with(
        &mut self,
        condition: &str,
        text: Option<&str>,
        reason: ServerCloseReason,
    ) {
        if self.state == ServerState::Closed {
            return;
        }
        if !self.end_sent {
            if !self.header_sent {
                self.write_header();
            }
            write::stream_error(&mut self.out, condition, text);
            self.stats.stanzas_out += 1;
            write::stream_end(&mut self.out);
            self.end_sent = true;
        }
        self.close_with(reason);
    }

    /// Closes once: the one place that emits [`ServerEvent::Closed`].
    pub(super) fn close_with(&mut self, reason: ServerCloseReason) {
        if self.state == ServerState::Closed {
            return;
        }
        self.state = ServerState::Closed;
        self.deadline = None;
        self.events.push_back(ServerEvent::Closed { reason });
    }
}

/// The error `type` and legacy `code` (XEP-0086) of a stanza error condition.
fn stanza_error_type(condition: &str) -> (&'static str, Option<&'static str>) {
    match condition {
        "bad-request" => ("modify", Some("400")),
        "conflict" => ("cancel", Some("409")),
        "feature-not-implemented" => ("cancel", Some("501")),
        "forbidden" => ("auth", Some("403")),
        "gone" => ("modify", Some("302")),
        "internal-server-error" => ("wait", Some("500")),
        "item-not-found" => ("cancel", Some("404")),
        "jid-malformed" => ("modify", Some("400")),
        "not-acceptable" => ("modify", Some("406")),
        "not-allowed" => ("cancel", Some("405")),
        "not-authorized" => ("auth", Some("401")),
        "policy-violation" => ("modify", None),
        "recipient-unavailable" => ("wait", Some("404")),
        "redirect" => ("modify", Some("302")),
        "registration-required" => ("auth", Some("407")),
        "remote-server-not-found" => ("cancel", Some("404")),
        "remote-server-timeout" => ("wait", Some("504")),
        "resource-constraint" => ("wait", Some("500")),
        "service-unavailable" => ("cancel", Some("503")),
        "subscription-required" => ("auth", Some("407")),
        "undefined-condition" => ("cancel", Some("500")),
        "unexpected-request" => ("wait", Some("400")),
        _ => ("cancel", None),
    }
}

#[cfg(test)]
mod tests {
    use super::AckOut;
    use crate::message::{Ack, MessageId};
    use crate::xml::write::{self, MessageAttrs};

    /// The borrowed ack writes the same bytes as the owned `Ack` it stands for.
    #[test]
    fn ack_out_is_written_as_ack() {
        let awkward = [
            "",
            "tok",
            "fKx3Zq7nRbGf:APA91bHPRgkF3J-_.~ /+=é\u{7f}\u{f000}",
            "a\"b\\c",
            "<&>]]>",
            "é\u{FFFE}\u{FFFF}\u{1F600}",
            "\t\n\u{1}",
        ];
        for from in awkward {
            for id in ["m-1", "<&\"'>", "\u{FFFF}x", "m\\1", "m'2"] {
                for reg in [None, Some("canon-1"), Some("canon<&>")] {
                    let mut ack = Ack::new(
                        MessageId::new(id)
                            .unwrap_or_else(|_| MessageId::try_from("fallback").unwrap()),
                    );
                    ack.from = Some(from.to_owned());
                    ack.registration_id = reg.map(str::to_owned);
                    let mut want = Vec::new();
                    write::gcm_message_serialize(&mut want, &MessageAttrs::default(), &ack)
                        .unwrap();
                    let out = AckOut {
                        from,
                        message_id: ack.message_id.as_str(),
                        registration_id: reg,
                    };
                    // Through serde (the fallback), and as `write` writes it (the direct shape
                    // for plain strings), after bytes already in the buffer.
                    let mut got = Vec::new();
                    write::gcm_message_serialize(&mut got, &MessageAttrs::default(), &out).unwrap();
                    assert_eq!(String::from_utf8(got), String::from_utf8(want.clone()));
                    let mut direct = b"<r/>".to_vec();
                    out.write(&mut direct).unwrap();
                    assert_eq!(&direct[..4], b"<r/>");
                    assert_eq!(
                        String::from_utf8(direct[4..].to_vec()),
                        String::from_utf8(want)
                    );
                }
            }
        }
    }
}
