//! What the server sends once the stream is set up: answers to our messages (acks, nacks,
//! stanza errors), upstream messages and receipts to ack, pings, and CONNECTION_DRAINING.

use std::time::Instant;

use crate::message::{
    Ack, AckRef, AppAck, Control, ControlType, Incoming, IncomingRef, MessageId, NackCode,
};
use crate::stanza::{Iq, IqPayload, IqType, Message, Stanza};
use crate::xml::write;

use super::config::AckMode;
use super::flow::Found;
use super::{AckHandle, Anomaly, Connection, ConnectionEvent, State, later};

impl Connection {
    pub(super) fn handle_iq(&mut self, now: Instant, iq: Iq) {
        match iq.kind {
            IqType::Get | IqType::Set => {
                if iq.payload == IqPayload::Ping {
                    write::iq_result(&mut self.out, iq.id.as_deref(), iq.from.as_deref());
                } else {
                    write::iq_error(
                        &mut self.out,
                        iq.id.as_deref(),
                        iq.from.as_deref(),
                        "cancel",
                        "service-unavailable",
                    );
                }
                self.sent(now);
            }
            // Results (our pings) and errors need nothing: the frame already counted as life.
            _ => {}
        }
    }

    pub(super) fn handle_message(&mut self, now: Instant, m: Message) {
        if m.kind.as_deref() == Some("error") {
            return self.stanza_error(m);
        }
        let Some(json) = m.gcm else {
            return self.anomaly(Anomaly::UnexpectedStanza(Box::new(Stanza::Message(m))));
        };
        // What CCS sends most, a plain ack, is read without copying its strings; everything
        // else (a nack read that way too) is handled as an owned `Incoming`.
        let incoming = match IncomingRef::parse(&json) {
            Some(IncomingRef::Ack(ack)) => return self.handle_ack(AnyAck::Borrowed(ack)),
            Some(other) => other.into_owned(),
            None => match Incoming::from_json_general(&json) {
                Ok(i) => i,
                Err(error) => {
                    let json = json.into_string();
                    return self.anomaly(Anomaly::InvalidPayload { json, error });
                }
            },
        };
        match incoming {
            Incoming::Ack(ack) => self.handle_ack(AnyAck::Owned(ack)),
            // BAD_ACK answers one of our acks of an upstream message, never a downstream
            // message, whatever id it carries.
            Incoming::Nack(nack) if nack.error == NackCode::BadAck => {
                self.anomaly(Anomaly::AckRefused {
                    message_id: Some(nack.message_id.as_str().to_owned()),
                    nack: Some(Box::new(nack)),
                    error: None,
                })
            }
            Incoming::Nack(nack) => match self.answered(nack.message_id.as_str()) {
                Some(found) => {
                    self.stats.nacked += 1;
                    let draining = nack.error == NackCode::ConnectionDraining;
                    if draining {
                        self.start_draining(now);
                    }
                    match found {
                        Found::Message(message) if draining => {
                            self.emit(ConnectionEvent::Returned { message })
                        }
                        Found::Message(message) => {
                            self.emit(ConnectionEvent::Nacked { message, nack })
                        }
                        Found::Taken => self.late_answer(nack.message_id),
                    }
                }
                None => self.anomaly(Anomaly::UnknownNack(nack)),
            },
            Incoming::Upstream(message) => {
                self.stats.upstream += 1;
                let ack = self.ack_or_handle(now, message.ack());
                self.emit(ConnectionEvent::Upstream { message, ack });
            }
            Incoming::Receipt(receipt) => {
                self.stats.receipts += 1;
                let ack = self.ack_or_handle(now, receipt.ack());
                self.emit(ConnectionEvent::Receipt { receipt, ack });
            }
            Incoming::Control(Control {
                control_type: ControlType::ConnectionDraining,
                ..
            }) => self.start_draining(now),
            other => self.emit(ConnectionEvent::Unrecognized(other)),
        }
    }

    pub(super) fn stanza_error(&mut self, m: Message) {
        let echoed = m.gcm.as_deref().and_then(echoed_payload);
        if let Some(Echo {
            message_id,
            message_type: Some(t),
        }) = &echoed
            && t == "ack"
        {
            // The server refused one of our acks (which carry no stanza id): it concerns an
            // upstream message, not a downstream message that happens to share its id.
            let message_id = message_id.clone();
            return self.anomaly(Anomaly::AckRefused {
                message_id,
                nack: None,
                error: m.error,
            });
        }
        // Tie it to the message by stanza id, else by the message_id in the echoed JSON.
        let by_stanza_id = m.id.as_deref().filter(|id| self.in_flight.contains(id));
        let echoed = echoed.and_then(|e| e.message_id);
        let id = by_stanza_id
            .map(str::to_owned)
            .or(echoed.filter(|id| self.in_flight.contains(id)));
        let found = id.and_then(|id| {
            let mid = MessageId::new(id).ok()?;
            Some((self.answered(mid.as_str())?, mid))
        });
        match found {
            Some((Found::Message(message), _)) => {
                self.stats.stanza_errors += 1;
                let error = m.error.unwrap_or_default();
                self.emit(ConnectionEvent::StanzaError { message, error });
            }
            Some((Found::Taken, message_id)) => {
                self.stats.stanza_errors += 1;
                self.late_answer(message_id);
            }
            None => self.anomaly(Anomaly::UnmatchedStanzaError {
                id: m.id,
                error: m.error,
            }),
        }
    }

    /// An ack: the message it answers, a late answer, or an anomaly.
    fn handle_ack(&mut self, ack: AnyAck<'_>) {
        match self.answered(ack.message_id()) {
            Some(Found::Message(message)) => {
                self.stats.acked += 1;
                self.emit(ConnectionEvent::Acked {
                    message,
                    canonical_registration_id: ack.registration_id(),
                });
            }
            Some(Found::Taken) => {
                self.stats.acked += 1;
                self.late_answer(ack.into_owned().message_id);
            }
            None => self.anomaly(Anomaly::UnknownAck(ack.into_owned())),
        }
    }

    /// Removes an answered message from the in-flight table, reporting window room.
    pub(super) fn answered(&mut self, id: &str) -> Option<Found> {
        let found = self.in_flight.remove(id)?;
        if self.window_was_full && self.in_flight.len() < self.config.window {
            self.window_was_full = false;
            if self.state == State::Connected {
                self.emit(ConnectionEvent::WindowOpen);
            }
        }
        Some(found)
    }

    pub(super) fn late_answer(&mut self, message_id: MessageId) {
        self.emit(ConnectionEvent::LateAnswer { message_id });
    }

    pub(super) fn ack_or_handle(&mut self, now: Instant, ack: AppAck) -> Option<AckHandle> {
        match self.config.ack_mode {
            AckMode::Auto => {
                self.write_ack(now, &ack);
                None
            }
            AckMode::Manual => {
                self.awaiting_ack.insert(ack.clone());
                Some(AckHandle { conn: self.id, ack })
            }
        }
    }

    pub(super) fn write_ack(&mut self, now: Instant, ack: &AppAck) {
        let start = self.out.len();
        write::app_ack(&mut self.out, ack);
        self.stats.bytes_out += (self.out.len() - start) as u64;
        self.stats.acks_sent += 1;
        self.sent(now);
    }

    /// CONNECTION_DRAINING, in whatever state messages are processed: while the session is
    /// still being set up it takes effect as setup ends; while closing it bounds the close.
    pub(super) fn start_draining(&mut self, now: Instant) {
        if self.drain_deadline.is_some() {
            return;
        }
        match self.state {
            State::Connected => self.state = State::Draining,
            State::Closing => {}
            s if s.is_setup() => {
                self.drain_pending = true;
                return;
            }
            _ => return,
        }
        self.drain_deadline = Some(later(now, self.config.drain_timeout));
        self.emit(ConnectionEvent::Draining);
    }
}

/// An ack as read: borrowed from the payload (the common case) or owned.
enum AnyAck<'a> {
    Borrowed(AckRef<'a>),
    Owned(Ack),
}

impl AnyAck<'_> {
    fn message_id(&self) -> &str {
        match self {
            Self::Borrowed(a) => a.message_id,
            Self::Owned(a) => a.message_id.as_str(),
        }
    }

    fn registration_id(self) -> Option<String> {
        match self {
            Self::Borrowed(a) => a.registration_id.map(str::to_owned),
            Self::Owned(a) => a.registration_id,
        }
    }

    fn into_owned(self) -> Ack {
        match self {
            Self::Borrowed(a) => a.into_owned(),
            Self::Owned(a) => a,
        }
    }
}

/// The parts of an echoed payload that tell what it answers.
#[derive(serde::Deserialize)]
struct Echo {
    message_id: Option<String>,
    message_type: Option<String>,
}

/// The echoed payload of a stanza error, if it is a JSON object with string fields.
fn echoed_payload(json: &str) -> Option<Echo> {
    serde_json::from_str::<Echo>(json).ok()
}
