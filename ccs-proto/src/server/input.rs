//! The connection reading the client: stream headers, SASL, binding, messages and acks.

use serde::Deserialize as _;
use serde_json::Value;

use super::{
    MAX_RESOURCE, Pending, RECENT_INVALID, ServerCloseReason, ServerConnection, ServerEvent,
    ServerState,
};
use crate::error::{JsonError, XmlError, XmlErrorKind};
use crate::message::{AppAck, ClientMessage, Downstream, MessageId};
use crate::sasl;
use crate::stanza::{Auth, Iq, IqPayload, IqType, Message, Payload, Stanza, StreamHeader, ns};
use crate::xml::Event;
use crate::xml::write;

impl ServerConnection {
    pub(super) fn on_event(&mut self, event: Event) {
        match event {
            Event::Header(h) => self.on_header(&h),
            Event::Stanza(s) => {
                self.stats.stanzas_in += 1;
                self.on_stanza(s);
            }
            Event::Whitespace(_) => {}
            Event::StreamError(e) => {
                self.end_stream();
                self.close_with(ServerCloseReason::ClientStreamError(e));
            }
            Event::End => {
                if self.end_sent {
                    self.close_with(ServerCloseReason::ServerClosed);
                } else {
                    self.end_stream();
                    self.close_with(ServerCloseReason::ClientClosed);
                }
            }
        }
    }

    pub(super) fn on_header(&mut self, header: &StreamHeader) {
        if self.end_sent {
            // Only possible when close() was called before the client's first header: the
            // server's stream is over, the client's is ignored until it ends.
            return;
        }
        self.stream_to = header.to().map(str::to_owned);
        self.write_header();
        if header.default_namespace() != Some(ns::CLIENT) {
            return self.fail(
                "invalid-namespace",
                Some("the stream's default namespace must be jabber:client"),
            );
        }
        if let Some(version) = header.version() {
            let major = version.split('.').next().map(str::trim);
            if major != Some("1") {
                return self.fail("unsupported-version", Some("only XMPP 1.0 is supported"));
            }
        }
        match self.state {
            ServerState::AwaitingHeader => {
                let mechanisms: Vec<&str> =
                    self.config.mechanisms.iter().map(String::as_str).collect();
                write::features_sasl(&mut self.out, &mechanisms);
                self.stats.stanzas_out += 1;
                self.state = ServerState::Authenticating;
            }
            _ => {
                write::features_bind(&mut self.out, self.config.offer_session);
                self.stats.stanzas_out += 1;
                self.state = ServerState::Binding;
            }
        }
    }

    pub(super) fn on_stanza(&mut self, stanza: Stanza) {
        if self.end_sent {
            // Closing: nothing can be answered any more; late messages and acks are still
            // reported.
            if let Stanza::Message(m) = stanza
                && self.jid.is_some()
            {
                self.on_message(m);
            }
            return;
        }
        match stanza {
            Stanza::Auth(auth) => self.on_auth(&auth),
            Stanza::Iq(iq) => self.on_iq(iq),
            Stanza::Message(m) => self.on_message(m),
            Stanza::Other(o) if o.ns == ns::CLIENT && o.name == "presence" => {
                if !self.authenticated {
                    self.not_authorized();
                }
                // Presence means nothing to CCS: ignored (go-xmpp and slixmpp send it).
            }
            Stanza::Other(o) if o.ns == ns::SASL && o.name == "abort" => {
                if self.state == ServerState::Authenticating {
                    self.auth_failed("aborted");
                } else {
                    self.fail("policy-violation", Some("no SASL negotiation in progress"));
                }
            }
            Stanza::Other(o) => {
                let text = format!("unsupported top-level element {{{}}}{}", o.ns, o.name);
                self.fail("unsupported-stanza-type", Some(&text));
            }
            Stanza::Features(_) | Stanza::SaslSuccess | Stanza::SaslFailure(_) => {
                self.fail(
                    "unsupported-stanza-type",
                    Some("a client does not send this element"),
                );
            }
        }
    }

    pub(super) fn on_auth(&mut self, auth: &Auth) {
        if self.state != ServerState::Authenticating {
            return self.fail("policy-violation", Some("already authenticated"));
        }
        if auth.mechanism != "PLAIN" || !self.config.mechanisms.iter().any(|m| m == "PLAIN") {
            return self.auth_failed("invalid-mechanism");
        }
        let creds = match sasl::decode_plain(&auth.payload) {
            Ok(c) => c,
            Err(e) => return self.auth_failed(e.condition()),
        };
        // PROTOCOL.md §2.4 (inference from what worked and what failed): a bare sender id is
        // completed with the stream's `to`, which must then be the service's domain; an
        // authcid that names its domain is checked by `identity_matches` alone.
        let domain = &self.config.domain;
        let domain_ok = creds.authcid.contains('@')
            || self
                .stream_to
                .as_deref()
                .is_none_or(|to| to.eq_ignore_ascii_case(domain));
        let ok = domain_ok
            && sasl::identity_matches(&creds, self.config.sender_id.as_str(), domain)
            && sasl::key_matches(&creds.password, self.config.server_key.expose());
        if !ok {
            return self.auth_failed("not-authorized");
        }
        write::sasl_success(&mut self.out);
        self.stats.stanzas_out += 1;
        self.authenticated = true;
        self.state = ServerState::AwaitingRestart;
        self.header_sent = false;
        // Bytes after the </auth> already buffered belong to the restarted stream.
        self.reader.reset();
        self.events.push_back(ServerEvent::Authenticated {
            authcid: creds.authcid,
        });
    }

    pub(super) fn auth_failed(&mut self, condition: &str) {
        write::sasl_failure(&mut self.out, condition, None);
        self.stats.stanzas_out += 1;
        self.auth_failures = self.auth_failures.saturating_add(1);
        self.events.push_back(ServerEvent::AuthFailed {
            condition: condition.to_owned(),
        });
        if self.auth_failures >= self.config.max_auth_failures {
            self.fail(
                "policy-violation",
                Some("too many failed authentication attempts"),
            );
        }
    }

    pub(super) fn on_iq(&mut self, iq: Iq) {
        match (&iq.kind, &iq.payload) {
            (IqType::Get, IqPayload::Ping) => self.iq_result(&iq),
            (IqType::Result | IqType::Error, _) => {
                if let Some(id) = &iq.id
                    && let Some(i) = self.pings.iter().position(|p| p == id)
                {
                    self.pings.remove(i);
                    self.events.push_back(ServerEvent::Pong { id: id.clone() });
                }
            }
            _ if !self.authenticated => self.not_authorized(),
            (IqType::Set, IqPayload::Bind { resource, .. }) => {
                let resource = resource.clone();
                self.on_bind(&iq, resource.as_deref());
            }
            (IqType::Set, IqPayload::Session) => self.iq_result(&iq),
            (IqType::Get | IqType::Set, _) => {
                self.iq_error(&iq, "cancel", "service-unavailable");
            }
            (IqType::Unknown(_), _) => self.iq_error(&iq, "modify", "bad-request"),
        }
    }

    pub(super) fn on_bind(&mut self, iq: &Iq, requested: Option<&str>) {
        if self.jid.is_some() {
            return self.iq_error(iq, "cancel", "not-allowed");
        }
        let resource = match requested {
            Some(r) if !r.is_empty() => {
                if r.len() > MAX_RESOURCE || r.chars().any(char::is_control) {
                    return self.iq_error(iq, "modify", "bad-request");
                }
                format!("{r}{:08X}", self.rng.next() >> 32)
            }
            _ => format!("{:016X}", self.rng.next()),
        };
        let jid = format!(
            "{}@{}/{}",
            self.config.sender_id, self.config.domain, resource
        );
        write::iq_bind_result(&mut self.out, iq.id.as_deref(), &jid);
        self.stats.stanzas_out += 1;
        self.jid = Some(jid.clone());
        self.state = ServerState::Bound;
        self.deadline = None;
        self.events.push_back(ServerEvent::Bound { jid });
    }

    pub(super) fn on_message(&mut self, mut m: Message) {
        if self.jid.is_none() {
            return self.not_authorized();
        }
        if m.kind.as_deref() == Some("error") {
            return self.unexpected(Stanza::Message(m));
        }
        // Kept with the pending message (to echo in an error): a copy of its own, so that it
        // does not hold the read buffer.
        let Some(json) = m.gcm.take().map(Payload::into_string) else {
            return self.unexpected(Stanza::Message(m));
        };
        match ClientMessage::from_json(&json) {
            Ok(ClientMessage::Downstream(d)) => self.on_downstream(d, m.id, json),
            Ok(ClientMessage::Ack(ack)) => self.on_app_ack(ack),
            Err(error) => self.on_invalid(m.id, json, error),
        }
    }

    pub(super) fn on_downstream(
        &mut self,
        message: Downstream,
        stanza_id: Option<String>,
        json: String,
    ) {
        self.stats.downstream_received += 1;
        let from = message
            .to()
            .map(|t| t.as_str())
            .or(message.condition())
            .unwrap_or_default()
            .to_owned();
        if !self.admit(message.message_id(), from, stanza_id.clone(), json) {
            return;
        }
        self.events.push_back(ServerEvent::Downstream {
            message: Box::new(message),
            stanza_id,
        });
    }

    pub(super) fn on_invalid(&mut self, stanza_id: Option<String>, json: String, error: JsonError) {
        self.stats.invalid_payloads += 1;
        let (message_id, from) = probe_invalid(&json);
        if let Some(id) = &message_id {
            if !self.admit(id, from, stanza_id.clone(), json.clone()) {
                return;
            }
        } else if let Some(sid) = stanza_id.as_deref().filter(|s| !s.is_empty()) {
            if self.recent_invalid.len() >= RECENT_INVALID {
                self.recent_invalid.pop_front();
            }
            self.recent_invalid
                .push_back((sid.to_owned(), json.clone()));
        }
        self.events.push_back(ServerEvent::InvalidPayload {
            stanza_id,
            message_id: message_id.map(MessageId::into_string),
            json,
            error,
        });
    }

    /// Makes a message pending, or adds a copy to the pending message with its id (reported
    /// here as [`ServerEvent::DuplicatePending`], before the copy's own event). Returns
    /// whether the caller should report it: `false` when the connection was closed for
    /// `max_pending`.
    pub(super) fn admit(
        &mut self,
        id: &MessageId,
        from: String,
        stanza_id: Option<String>,
        json: String,
    ) -> bool {
        let pending = self.owed;
        if pending >= self.config.max_pending {
            self.fail(
                "policy-violation",
                Some("too many pending messages: wait for acks before sending more"),
            );
            return false;
        }
        if pending >= self.config.window {
            self.window_violations += 1;
            self.events.push_back(ServerEvent::WindowViolation {
                pending,
                window: self.config.window,
            });
        }
        self.owed += 1;
        if let Some(p) = self.pending.get_mut(id) {
            // PROTOCOL.md §7.1: every downstream message gets an answer, a copy too. The
            // answers go out under the one `message_id`; the first copy's `from`, stanza id
            // and JSON are kept for all of them.
            p.copies = p.copies.saturating_add(1);
            self.events.push_back(ServerEvent::DuplicatePending {
                message_id: id.clone(),
            });
            return true;
        }
        self.pending_seq += 1;
        self.pending.insert(
            id.clone(),
            Pending {
                from,
                copies: 1,
                stanza_id,
                json,
                seq: self.pending_seq,
            },
        );
        true
    }

    pub(super) fn on_app_ack(&mut self, ack: AppAck) {
        self.stats.app_acks_received += 1;
        let key = if self.config.strict_ack_to || self.unacked_by_id.contains_key(&ack) {
            Some(ack.clone())
        } else {
            self.lenient_key(&ack)
        };
        match key.and_then(|k| self.unacked_by_id.remove(&k).map(|seq| (k, seq))) {
            Some((key, seq)) => {
                self.unacked.remove(&seq);
                self.events.push_back(ServerEvent::AppAck(key));
            }
            None => self.events.push_back(ServerEvent::UnknownAck(ack)),
        }
    }

    /// Lenient mode ([`super::ServerConfig::strict_ack_to`] off): the key of the one unacked
    /// message with the ack's `message_id`, whatever its `from`; `None` if none or several.
    fn lenient_key(&self, ack: &AppAck) -> Option<AppAck> {
        let mut found = self
            .unacked_by_id
            .keys()
            .filter(|k| k.message_id == ack.message_id);
        let key = found.next()?;
        found.next().is_none().then(|| key.clone())
    }

    pub(super) fn unexpected(&mut self, stanza: Stanza) {
        self.events
            .push_back(ServerEvent::UnexpectedStanza(Box::new(stanza)));
    }

    pub(super) fn not_authorized(&mut self) {
        self.fail(
            "not-authorized",
            Some("authenticate and bind a resource before sending stanzas"),
        );
    }

    pub(super) fn on_xml_error(&mut self, e: XmlError) {
        let condition = stream_error_condition(&e.kind);
        // The kind only: the offset depends on how the bytes were split for size limits,
        // and the wire should not.
        let text = e.kind.to_string();
        self.fail_with(condition, Some(&text), ServerCloseReason::ProtocolError(e));
    }
}

/// The `message_id` of a payload that is not a valid app-server message, if it is a JSON
/// object with a string one, and the `from` its answer names: its `to`, else its
/// `condition`, else `""`.
fn probe_invalid(json: &str) -> (Option<MessageId>, String) {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(json) else {
        return (None, String::new());
    };
    let id = obj
        .get("message_id")
        .and_then(Value::as_str)
        // Peer ids are kept as received: MessageId's deserializer accepts any string (this
        // cannot fail on a string; if it ever did, the payload is treated as having no id).
        .and_then(|s| {
            MessageId::deserialize(
                serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s),
            )
            .ok()
        });
    let from = ["to", "condition"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    (id, from)
}

/// The stream error condition for an XML problem (RFC 6120 §4.9.3), as CCS sent it.
///
/// Ill-formed XML (a raw `&` or an undefined entity, a bad character reference, a broken
/// tag) draws `invalid-xml`, not RFC 6120's `not-well-formed`: PROTOCOL.md §8 and §3.1, the
/// clients of the real server (FCMS, BAU `isXMLStreamError`) match exactly
/// `<stream:error><invalid-xml xmlns="urn:ietf:params:xml:ns:xmpp-streams"/></stream:error>`,
/// "FCM Server is failed to parse the XML payload". Well-formed XML that XMPP forbids (DTD,
/// comment, processing instruction) keeps `restricted-xml`.
fn stream_error_condition(kind: &XmlErrorKind) -> &'static str {
    match kind {
        XmlErrorKind::StanzaTooLarge { .. }
        | XmlErrorKind::HeaderTooLarge { .. }
        | XmlErrorKind::TooDeep { .. } => "policy-violation",
        XmlErrorKind::Dtd | XmlErrorKind::Comment | XmlErrorKind::ProcessingInstruction => {
            "restricted-xml"
        }
        XmlErrorKind::UndefinedEntity { .. }
        | XmlErrorKind::InvalidCharRef { .. }
        | XmlErrorKind::Malformed { .. } => "invalid-xml",
        XmlErrorKind::InvalidUtf8 | XmlErrorKind::TextOutsideStanza => "bad-format",
        XmlErrorKind::NotAStreamHeader { found } => {
            let local = found.rsplit(':').next().unwrap_or(found);
            if local == "stream" {
                "invalid-namespace"
            } else {
                "not-well-formed"
            }
        }
        XmlErrorKind::DataAfterEnd => "not-well-formed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_errors_map_to_stream_conditions() {
        let cases = [
            (
                XmlErrorKind::StanzaTooLarge { limit: 1 },
                "policy-violation",
            ),
            (XmlErrorKind::Comment, "restricted-xml"),
            (XmlErrorKind::Dtd, "restricted-xml"),
            (
                XmlErrorKind::UndefinedEntity { name: "x".into() },
                "invalid-xml",
            ),
            (XmlErrorKind::InvalidUtf8, "bad-format"),
            (
                XmlErrorKind::Malformed {
                    detail: String::new(),
                },
                "invalid-xml",
            ),
            (
                XmlErrorKind::NotAStreamHeader {
                    found: "x:stream".into(),
                },
                "invalid-namespace",
            ),
            (
                XmlErrorKind::NotAStreamHeader {
                    found: "message".into(),
                },
                "not-well-formed",
            ),
        ];
        for (kind, want) in cases {
            assert_eq!(stream_error_condition(&kind), want, "{kind:?}");
        }
    }

    #[test]
    fn probe_finds_string_ids_only() {
        let (id, from) = probe_invalid(r#"{"message_id":"m1","to":"t","time_to_live":"x"}"#);
        assert_eq!(id.map(MessageId::into_string).as_deref(), Some("m1"));
        assert_eq!(from, "t");
        let (_, from) = probe_invalid(r#"{"message_id":"m1","condition":"'a' in topics","x":1}"#);
        assert_eq!(from, "'a' in topics");
        assert_eq!(probe_invalid(r#"{"message_id":"m1"}"#).1, "");
        assert_eq!(probe_invalid(r#"{"message_id":1}"#).0, None);
        assert_eq!(probe_invalid("not json").0, None);
        assert_eq!(probe_invalid(r#"["message_id"]"#).0, None);
    }
}
