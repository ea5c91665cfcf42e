//! Stream setup, client side: stream header, SASL PLAIN, the stream restart, resource
//! binding and the optional session, each step under [`ConnectionConfig::setup_timeout`].

use std::time::Instant;

use crate::stanza::{Features, Iq, IqPayload, IqType, Stanza};
use crate::xml::{Event as XmlEvent, write};

use super::config::AuthcidForm;
#[cfg(doc)]
use super::config::ConnectionConfig;
use super::{Anomaly, CloseReason, Connection, ConnectionEvent, State, later};

const BIND_ID: &str = "bind_1";
const SESSION_ID: &str = "sess_1";

impl Connection {
    pub(super) fn handle_xml(&mut self, now: Instant, ev: XmlEvent) {
        match ev {
            XmlEvent::Whitespace(_) => {}
            XmlEvent::Header(_) => match self.state {
                State::AwaitingHeader => self.step(now, State::AwaitingFeatures),
                State::AwaitingRestart => self.step(now, State::AwaitingBindFeatures),
                _ => self.fail(now, "unexpected stream header"),
            },
            XmlEvent::End => {
                self.finish(now, CloseReason::ServerClosed);
            }
            XmlEvent::StreamError(e) => {
                self.finish(now, CloseReason::StreamError(e));
            }
            XmlEvent::Stanza(s) => self.handle_stanza(now, s),
        }
    }

    pub(super) fn step(&mut self, now: Instant, state: State) {
        self.state = state;
        self.setup_deadline = state
            .is_setup()
            .then(|| later(now, self.config.setup_timeout));
    }

    pub(super) fn handle_stanza(&mut self, now: Instant, stanza: Stanza) {
        match (self.state, stanza) {
            (State::AwaitingFeatures, Stanza::Features(f)) => self.authenticate(now, f),
            (State::Authenticating, Stanza::SaslSuccess) => {
                self.reader.reset();
                write::client_header(&mut self.out, &self.config.domain);
                self.sent(now);
                self.step(now, State::AwaitingRestart);
            }
            (State::Authenticating, Stanza::SaslFailure(f)) => self.finish(
                now,
                CloseReason::AuthFailed {
                    condition: f.condition,
                    text: f.text,
                },
            ),
            (State::AwaitingBindFeatures, Stanza::Features(f)) => self.bind(now, f),
            // A result without an id is taken too: some servers answered an id-less request
            // that way (PROTOCOL.md §2.8), and only our setup iq can be waiting.
            (State::Binding, Stanza::Iq(iq))
                if matches!(iq.id.as_deref(), Some(BIND_ID) | None)
                    && matches!(iq.kind, IqType::Result | IqType::Error) =>
            {
                self.setup_iq(now, iq)
            }
            (State::StartingSession, Stanza::Iq(iq))
                if matches!(iq.id.as_deref(), Some(SESSION_ID) | None)
                    && matches!(iq.kind, IqType::Result | IqType::Error) =>
            {
                self.setup_iq(now, iq)
            }
            (_, Stanza::Iq(iq)) => self.handle_iq(now, iq),
            // Once bound the server may send at once, before the optional session result.
            (
                State::StartingSession | State::Connected | State::Draining | State::Closing,
                Stanza::Message(m),
            ) => self.handle_message(now, m),
            (_, other) => self.anomaly(Anomaly::UnexpectedStanza(Box::new(other))),
        }
    }

    pub(super) fn authenticate(&mut self, now: Instant, f: Features) {
        if !f.offers_plain() {
            self.finish(
                now,
                CloseReason::PlainNotOffered {
                    offered: f.mechanisms,
                },
            );
            return;
        }
        let authcid = match self.config.authcid {
            AuthcidForm::Qualified => format!("{}@{}", self.config.sender_id, self.config.domain),
            AuthcidForm::Bare => self.config.sender_id.to_string(),
        };
        write::auth_plain(&mut self.out, "", &authcid, self.config.server_key.expose());
        self.sent(now);
        self.step(now, State::Authenticating);
    }

    pub(super) fn bind(&mut self, now: Instant, f: Features) {
        if !f.bind {
            self.finish(
                now,
                CloseReason::BindFailed {
                    condition: "the server did not offer resource binding".into(),
                },
            );
            return;
        }
        self.session_offered = f.session;
        write::iq_bind_set(&mut self.out, BIND_ID, self.config.resource.as_deref());
        self.sent(now);
        self.step(now, State::Binding);
    }

    pub(super) fn setup_iq(&mut self, now: Instant, iq: Iq) {
        match (self.state, iq.kind) {
            (State::Binding, IqType::Result) => {
                let jid = match iq.payload {
                    IqPayload::Bind { jid: Some(jid), .. } => jid,
                    _ => {
                        return self.finish(
                            now,
                            CloseReason::BindFailed {
                                condition: "bind result without a JID".into(),
                            },
                        );
                    }
                };
                self.jid = Some(jid);
                if self.session_offered && self.config.request_session {
                    write::iq_session_set(&mut self.out, SESSION_ID);
                    self.sent(now);
                    self.step(now, State::StartingSession);
                } else {
                    self.connected(now);
                }
            }
            (State::Binding, _) => {
                let condition = iq
                    .error
                    .map(|e| e.condition)
                    .unwrap_or_else(|| "bind refused".into());
                self.finish(now, CloseReason::BindFailed { condition });
            }
            // Session is optional in practice (PROTOCOL.md §2.9): an error does not stop us.
            (State::StartingSession, _) => self.connected(now),
            _ => {}
        }
    }

    pub(super) fn connected(&mut self, now: Instant) {
        self.step(now, State::Connected);
        let jid = self.jid.clone().unwrap_or_default();
        self.emit(ConnectionEvent::Connected { jid });
        if self.drain_pending {
            self.start_draining(now);
        }
    }
}
