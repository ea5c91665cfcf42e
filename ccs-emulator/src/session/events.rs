//! Answering the core's events: the policy's verdicts, the fault plan's decisions, the
//! ledger. No IO: everything goes through the core's output.

use std::time::{SystemTime, UNIX_EPOCH};

use ccs_proto::message::{Incoming, MessageId, NackCode, Receipt};
use ccs_proto::server::{ServerCloseReason, ServerEvent};
use ccs_proto::stanza::Stanza;
use tokio::time::Instant;

use super::Session;
use crate::faults::Answering;
use crate::ledger::{Answer, ConnectionEnd};
use crate::policy::{self, InvalidVerdict, STANZA_ERROR_CONDITION, Verdict};
use crate::shared::{Queued, State};

impl Session {
    pub(super) fn drain_events(&mut self, st: &mut State, now: Instant) {
        while let Some(ev) = self.core.poll_event() {
            self.on_event(st, ev, now);
        }
    }

    fn on_event(&mut self, st: &mut State, ev: ServerEvent, now: Instant) {
        let conn = self.conn;
        match ev {
            ServerEvent::AuthFailed { condition } => {
                tracing::debug!(conn, %condition, "SASL failure");
                st.ledger.conn(conn).counters.auth_failures += 1;
            }
            ServerEvent::Bound { jid } => {
                self.schedule.bound(now, self.core.stats().stanzas_in);
                st.ledger.conn(conn).jid = Some(jid);
            }
            ServerEvent::Downstream { message, .. } => {
                let id = message.message_id().clone();
                let to = message.to().map(|t| t.as_str());
                st.ledger.received(conn, id.as_str(), to);
                self.downstream_seen += 1;
                if self.schedule.draining() {
                    let verdict = Verdict::Nack {
                        code: NackCode::ConnectionDraining,
                        description: "Connection is draining: send it on another connection"
                            .to_owned(),
                    };
                    return self.answer(st, &id, verdict);
                }
                let verdict = policy::judge(&message, &self.shared.config);
                self.answer_with_faults(st, id, verdict);
                if self
                    .shared
                    .config
                    .drain_after
                    .is_some_and(|n| self.downstream_seen >= n)
                {
                    // At once, so that messages behind it in the same read are nacked.
                    self.start_drain(st, now);
                }
            }
            // A copy of a pending id is a message of its own: its Downstream or
            // InvalidPayload event follows, and it is answered like any other (see
            // `Counters::duplicates_pending`).
            ServerEvent::DuplicatePending { .. } => st.ledger.duplicate_pending(conn),
            ServerEvent::WindowViolation { pending, window } => {
                st.ledger.conn(conn).counters.window_violations += 1;
                if self.shared.config.strict_window {
                    let text = format!(
                        "{pending} messages pending, the window is {window}: wait for acks"
                    );
                    let _ = self.core.stream_error("policy-violation", Some(&text));
                }
            }
            ServerEvent::InvalidPayload {
                stanza_id,
                message_id,
                json,
                error,
            } => {
                let verdict = policy::judge_invalid(&json, &error, message_id.is_some());
                let to = policy::string_field(&json, "to");
                match (message_id, verdict) {
                    (Some(id), InvalidVerdict::Nack { code, description }) => {
                        st.ledger.received(conn, &id, to.as_deref());
                        self.nack(st, &id, code, description);
                    }
                    (Some(id), InvalidVerdict::StanzaError { text }) => {
                        st.ledger.received(conn, &id, to.as_deref());
                        let ok = self
                            .core
                            .stanza_error(&id, STANZA_ERROR_CONDITION, Some(&text))
                            .is_ok();
                        if ok {
                            st.ledger.answered(conn, Some(&id), stanza_answer(text));
                        }
                    }
                    (None, InvalidVerdict::StanzaError { text })
                    | (
                        None,
                        InvalidVerdict::Nack {
                            description: text, ..
                        },
                    ) => {
                        // By stanza id and echoed payload, touching no pending message.
                        let ok = self
                            .core
                            .send_stanza_error_raw(
                                stanza_id.as_deref(),
                                Some(&json),
                                STANZA_ERROR_CONDITION,
                                Some(&text),
                            )
                            .is_ok();
                        if ok {
                            st.ledger.answered(conn, None, stanza_answer(text));
                        }
                    }
                }
            }
            ServerEvent::AppAck(key) => {
                // The core names the message acked by its own key, also for a lenient ack
                // that named another `to`.
                if let Some(sent) = self.sent_up.remove(&key) {
                    st.ledger
                        .upstream_acked(conn, &key.to, key.message_id.as_str(), sent.receipt);
                }
            }
            ServerEvent::UnexpectedStanza(stanza) => self.on_unexpected(st, *stanza),
            ServerEvent::UnknownAck(ack) => {
                let text = format!(
                    "Invalid ack: no unacked message with message_id {}",
                    ack.message_id
                );
                if self.core.nack_bad_ack(&ack, Some(&text)).is_ok() {
                    st.ledger.conn(conn).counters.bad_acks += 1;
                }
            }
            ServerEvent::Closed { reason } => {
                if self.end.is_none() {
                    self.end = Some(end_of(reason));
                }
            }
            // Authenticated, Pong: nothing to decide.
            other => tracing::trace!(conn, ?other, "event"),
        }
    }

    /// A `<message>` without `<gcm xmlns="google:mobile:data">` (none, or one in another
    /// namespace) gets a `bad-request` stanza error, as a payload without `message_id` does
    /// (PROTOCOL.md §3.8: CCS answered what it could not take at all with a stanza error).
    /// A client's own `type="error"` stanza is never answered (RFC 6120 §8.3.1); anything
    /// else that is not a message is ignored.
    fn on_unexpected(&mut self, st: &mut State, stanza: Stanza) {
        let Stanza::Message(m) = stanza else {
            return;
        };
        if m.kind.as_deref() == Some("error") || m.gcm.is_some() {
            return;
        }
        let text = "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: gcm element in \
                    namespace google:mobile:data";
        let ok = self
            .core
            .send_stanza_error_raw(m.id.as_deref(), None, STANZA_ERROR_CONDITION, Some(text))
            .is_ok();
        if ok {
            let c = &mut st.ledger.conn(self.conn).counters;
            c.messages_without_gcm += 1;
            st.ledger
                .answered(self.conn, None, stanza_answer(text.to_owned()));
        }
    }

    /// Answers a downstream message now, later, never, or ends the stream instead, as the
    /// fault plan says.
    fn answer_with_faults(&mut self, st: &mut State, id: MessageId, verdict: Verdict) {
        match self.faults.answering() {
            Answering::Now => self.answer(st, &id, verdict),
            Answering::Later(delay) => {
                self.schedule.answer_at(Instant::now() + delay, id, verdict);
            }
            Answering::Never => {
                tracing::debug!(conn = self.conn, id = %id, "fault: never answered");
            }
            Answering::StreamError(condition) => {
                let _ = self.core.stream_error(condition, None);
            }
        }
    }

    /// Sends the answer and records it; an ack may queue a delivery receipt.
    pub(super) fn answer(&mut self, st: &mut State, id: &MessageId, verdict: Verdict) {
        let conn = self.conn;
        match verdict {
            Verdict::Ack {
                registration_id,
                receipt_to,
            } => {
                if self
                    .core
                    .ack(id.as_str(), registration_id.as_deref())
                    .is_err()
                {
                    // Not pending any more, or the stream is closing: nothing was sent.
                    return;
                }
                // The device gets a message once, whatever copies of it the app server sent:
                // one delivery receipt per message id (known with `track_ids`; without it,
                // every acked copy gets one).
                let first_ack = !st.ledger.was_acked(id.as_str());
                st.ledger
                    .answered(conn, Some(id.as_str()), Answer::Acked { registration_id });
                if let Some(device) = receipt_to
                    && first_ack
                    && st.upstream.len() < self.shared.config.max_queued_upstream
                {
                    let mut receipt = Receipt::sent_to_device(id, device, unix_millis());
                    receipt.category = Some(self.shared.config.category.clone());
                    st.upstream.push_back(Queued {
                        message: Incoming::Receipt(receipt),
                        deliveries: 0,
                    });
                    self.queued_receipt = true;
                }
            }
            Verdict::Nack { code, description } => self.nack(st, id.as_str(), code, description),
        }
    }

    fn nack(&mut self, st: &mut State, id: &str, code: NackCode, description: String) {
        if self.core.nack(id, code.clone(), Some(&description)).is_ok() {
            let answer = Answer::Nacked {
                code: code.as_str().to_owned(),
                description: Some(description),
            };
            st.ledger.answered(self.conn, Some(id), answer);
        }
    }
}

fn stanza_answer(text: String) -> Answer {
    Answer::StanzaError {
        condition: STANZA_ERROR_CONDITION.to_owned(),
        text: Some(text),
    }
}

fn end_of(reason: ServerCloseReason) -> ConnectionEnd {
    match reason {
        ServerCloseReason::ClientClosed => ConnectionEnd::ClientClosed,
        ServerCloseReason::ServerClosed => ConnectionEnd::ServerClosed,
        ServerCloseReason::Eof => ConnectionEnd::Eof,
        ServerCloseReason::ProtocolError(e) => ConnectionEnd::ProtocolError {
            detail: e.to_string(),
        },
        ServerCloseReason::ClientStreamError(e) => ConnectionEnd::ClientStreamError {
            condition: e.condition,
        },
        ServerCloseReason::StreamError { condition, text } => {
            ConnectionEnd::StreamError { condition, text }
        }
        ServerCloseReason::SetupTimeout => ConnectionEnd::SetupTimeout,
        ServerCloseReason::CloseTimeout => ConnectionEnd::CloseTimeout,
        other => ConnectionEnd::Other {
            detail: format!("{other:?}"),
        },
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
