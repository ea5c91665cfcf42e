//! What the emulator saw and did: [`Ledger`], per connection and in total, with every
//! downstream `message_id` and its answer.
//!
//! Tests use it to prove a client's promises from the server's side: every id the client sent
//! got an answer on some connection ([`Ledger::unanswered_ids`]), resends kept their ids
//! ([`Counters::resends`]), upstream messages were acked, nothing was lost on a cut
//! connection ([`Counters::redelivered`]), every upstream message was acked exactly once
//! ([`Ledger::upstream`], [`Ledger::unacked_upstream`]).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Counters of one connection, or of all of them ([`Ledger::total`]).
///
/// `downstream_received == unique_ids + resends` always holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Counters {
    /// Downstream messages with a `message_id` received (valid or not, duplicates of a
    /// pending id included).
    pub downstream_received: u64,
    /// Of those, ids never received before on any connection.
    pub unique_ids: u64,
    /// Of those, ids received before (on this or an earlier connection).
    pub resends: u64,
    /// Of the resends, those whose id was still pending on the same connection. Each copy
    /// is answered on its own (PROTOCOL.md §7.1: every message gets an ACK or a NACK), so
    /// the id gets one answer per copy.
    pub duplicates_pending: u64,
    /// Downstream messages acked.
    pub acked: u64,
    /// Acks that carried a canonical `registration_id`.
    pub canonical_ids: u64,
    /// Downstream messages nacked, by error code. A malformed ack that has a `message_id`
    /// is answered like a downstream message and counted here (`BAD_ACK`); acks of ids the
    /// server never sent are counted in [`Counters::bad_acks`] instead.
    pub nacked: BTreeMap<String, u64>,
    /// Stanza errors sent (with or without a `message_id`).
    pub stanza_errors: u64,
    /// `<message>` stanzas without a `gcm` element in `google:mobile:data` (none, or one in
    /// another namespace), each answered with a `bad-request` stanza error (also counted in
    /// [`Counters::stanza_errors`]).
    pub messages_without_gcm: u64,
    /// Downstream ids still pending when their connection ended.
    pub never_answered: u64,
    /// Upstream messages sent (redeliveries included).
    pub upstream_sent: u64,
    /// Upstream messages acked by the client.
    pub upstream_acked: u64,
    /// Upstream messages (not receipts: [`Counters::receipts_redelivered`]) sent again after
    /// an earlier connection ended before the client acked them.
    pub redelivered: u64,
    /// Delivery receipts sent again after an earlier connection ended before the client
    /// acked them.
    pub receipts_redelivered: u64,
    /// Delivery receipts sent (redeliveries included).
    pub receipts_sent: u64,
    /// Delivery receipts acked by the client.
    pub receipts_acked: u64,
    /// Client acks of ids the server never sent (or that were acked already, or whose `to`
    /// is not the device that sent the message while [`EmulatorConfig::strict_acks`] is
    /// on), answered with a `BAD_ACK` nack.
    ///
    /// [`EmulatorConfig::strict_acks`]: crate::EmulatorConfig::strict_acks
    pub bad_acks: u64,
    /// Downstream messages that arrived while the window was full.
    pub window_violations: u64,
    /// Bytes of XMPP received (after TLS).
    pub bytes_in: u64,
    /// Bytes of XMPP written (after TLS; a cut write counts what went out).
    pub bytes_out: u64,
    /// Failed SASL attempts.
    pub auth_failures: u64,
}

impl Counters {
    /// All nacks, whatever the code.
    pub fn nacked_total(&self) -> u64 {
        self.nacked.values().sum()
    }

    /// Nacks with this code (`"INVALID_JSON"`, ...).
    pub fn nacked_with(&self, code: &str) -> u64 {
        self.nacked.get(code).copied().unwrap_or(0)
    }

    fn add(&mut self, o: &Counters) {
        self.downstream_received += o.downstream_received;
        self.unique_ids += o.unique_ids;
        self.resends += o.resends;
        self.duplicates_pending += o.duplicates_pending;
        self.acked += o.acked;
        self.canonical_ids += o.canonical_ids;
        for (code, n) in &o.nacked {
            *self.nacked.entry(code.clone()).or_default() += n;
        }
        self.stanza_errors += o.stanza_errors;
        self.messages_without_gcm += o.messages_without_gcm;
        self.never_answered += o.never_answered;
        self.upstream_sent += o.upstream_sent;
        self.upstream_acked += o.upstream_acked;
        self.redelivered += o.redelivered;
        self.receipts_redelivered += o.receipts_redelivered;
        self.receipts_sent += o.receipts_sent;
        self.receipts_acked += o.receipts_acked;
        self.bad_acks += o.bad_acks;
        self.window_violations += o.window_violations;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.auth_failures += o.auth_failures;
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConnectionEnd {
    /// The client sent `</stream:stream>` first; the server answered with its own.
    ClientClosed,
    /// The server sent `</stream:stream>` (draining done, shutdown) and the client answered.
    ServerClosed,
    /// The client's bytes ended without a closing tag.
    Eof,
    /// Reading or writing failed.
    Io {
        /// The error.
        detail: String,
    },
    /// The TLS handshake failed or took longer than the setup timeout.
    TlsHandshake {
        /// The error.
        detail: String,
    },
    /// The client's bytes were not acceptable XMPP; the server sent a stream error.
    ProtocolError {
        /// What was wrong.
        detail: String,
    },
    /// The client sent a stream error.
    ClientStreamError {
        /// Its condition.
        condition: String,
    },
    /// The server ended the stream with a stream error (a fault, `strict_window`, too many
    /// failed authentications, ...).
    StreamError {
        /// The condition.
        condition: String,
        /// The text sent with it.
        text: Option<String>,
    },
    /// The client did not bind a resource in time.
    SetupTimeout,
    /// The client did not answer the server's `</stream:stream>` in time.
    CloseTimeout,
    /// A fault cut the connection after this many bytes written.
    FaultDrop {
        /// Bytes written before the cut.
        after_bytes: u64,
    },
    /// Anything else.
    Other {
        /// What happened.
        detail: String,
    },
}

impl ConnectionEnd {
    /// The `kind` tag, as in the JSON (`"client_closed"`, `"fault_drop"`, ...): the key of
    /// [`Ledger::close_reasons`].
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::ServerClosed => "server_closed",
            Self::Eof => "eof",
            Self::Io { .. } => "io",
            Self::TlsHandshake { .. } => "tls_handshake",
            Self::ProtocolError { .. } => "protocol_error",
            Self::ClientStreamError { .. } => "client_stream_error",
            Self::StreamError { .. } => "stream_error",
            Self::SetupTimeout => "setup_timeout",
            Self::CloseTimeout => "close_timeout",
            Self::FaultDrop { .. } => "fault_drop",
            Self::Other { .. } => "other",
        }
    }
}

/// One connection's part of the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ConnectionLedger {
    /// The connection's number, from 1 in the order accepted.
    pub id: u64,
    /// The client's address.
    pub peer: Option<String>,
    /// The JID bound, if the client got that far.
    pub jid: Option<String>,
    /// Whether `CONNECTION_DRAINING` was sent on it.
    pub drained: bool,
    /// Its counters.
    pub counters: Counters,
    /// Ids still pending when it ended, in arrival order.
    pub never_answered_ids: Vec<String>,
    /// How it ended; `None` while open.
    pub end: Option<ConnectionEnd>,
}

/// The final answer the server gave a downstream `message_id` (the latest, if it was sent
/// and answered more than once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Answer {
    /// Acked.
    Acked {
        /// The canonical registration id the ack carried.
        registration_id: Option<String>,
    },
    /// Nacked.
    Nacked {
        /// The error code.
        code: String,
        /// The description sent.
        description: Option<String>,
    },
    /// Answered with a stanza error.
    StanzaError {
        /// The condition.
        condition: String,
        /// The text sent.
        text: Option<String>,
    },
}

/// What the ledger knows about one downstream `message_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct IdRecord {
    /// The `to` of the latest copy received (`None` without one: a `condition` message, or
    /// a payload that was not valid).
    pub to: Option<String>,
    /// Times received, over all connections.
    pub received: u32,
    /// Times answered, over all connections.
    pub answers: u32,
    /// Times acked, over all connections (a copy can be nacked `CONNECTION_DRAINING` after
    /// another was acked: the latest answer alone does not say whether it ever was).
    pub acks: u32,
    /// The latest answer; `None` if none was ever given.
    pub answer: Option<Answer>,
}

/// What the ledger knows about one upstream message or delivery receipt the emulator sent
/// (recorded when `track_ids` is on).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct UpstreamRecord {
    /// Its `message_id` (a receipt's has the `dr2:` prefix).
    pub message_id: String,
    /// Its `from`: the device token, or `gcm.googleapis.com` for a receipt.
    pub from: String,
    /// Whether it is a delivery receipt.
    pub receipt: bool,
    /// Times sent, over all connections (redeliveries included).
    pub sent: u32,
    /// Of those, times sent again after a connection ended before the client acked it.
    pub redelivered: u32,
    /// The connections it was sent on, in order.
    pub sent_on: Vec<u64>,
    /// Times the client acked it (more than 1 never happens: a second ack is a `BAD_ACK`).
    pub acks: u32,
    /// The connection whose client acked it; `None` while not acked.
    pub acked_on: Option<u64>,
}

/// A snapshot of everything the emulator counted. Get one from
/// [`EmulatorHandle::ledger`](crate::EmulatorHandle::ledger) at any time, or the final one
/// from [`EmulatorHandle::shutdown`](crate::EmulatorHandle::shutdown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Ledger {
    /// The sum of every connection's counters.
    pub total: Counters,
    /// Connections accepted (TCP).
    pub connections_opened: u64,
    /// Connections over.
    pub connections_closed: u64,
    /// How many connections ended each way, by [`ConnectionEnd::kind`].
    pub close_reasons: BTreeMap<String, u64>,
    /// Upstream messages and receipts waiting for a connection when the snapshot was taken.
    pub upstream_queued: u64,
    /// Every connection, in the order accepted.
    pub connections: Vec<ConnectionLedger>,
    /// Every downstream `message_id` received (empty when `track_ids` is off), sorted.
    pub ids: BTreeMap<String, IdRecord>,
    /// Every upstream message and receipt sent, in the order first sent (empty when
    /// `track_ids` is off). Device-chosen ids may repeat across devices: a record is one
    /// `(from, message_id)`.
    pub upstream: Vec<UpstreamRecord>,
}

impl Ledger {
    /// Ids received at least once that never got an ack, a nack or a stanza error on any
    /// connection, sorted. Empty means every message the client sent was answered in the
    /// end (after resends).
    pub fn unanswered_ids(&self) -> Vec<String> {
        self.ids
            .iter()
            .filter(|(_, r)| r.answer.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The latest answer given to `message_id`; `None` if it was never answered (or never
    /// received).
    pub fn answered(&self, message_id: &str) -> Option<Answer> {
        self.ids.get(message_id).and_then(|r| r.answer.clone())
    }

    /// The record of the upstream message or receipt with this `message_id` (the first one
    /// sent, should devices have chosen the same id).
    pub fn upstream_record(&self, message_id: &str) -> Option<&UpstreamRecord> {
        self.upstream.iter().find(|r| r.message_id == message_id)
    }

    /// The `message_id`s of upstream messages and receipts sent and never acked, in the
    /// order first sent. Empty means every one was acked in the end.
    pub fn unacked_upstream(&self) -> Vec<String> {
        self.upstream
            .iter()
            .filter(|r| r.acked_on.is_none())
            .map(|r| r.message_id.clone())
            .collect()
    }

    /// The connection with this number.
    pub fn connection(&self, id: u64) -> Option<&ConnectionLedger> {
        self.connections.iter().find(|c| c.id == id)
    }

    /// The ledger as indented JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self)
            .expect("the ledger holds only strings, numbers, string-keyed maps and lists")
    }

    /// Reads a ledger written by [`Ledger::to_json_pretty`] or [`Ledger::write_json`].
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Writes [`Ledger::to_json_pretty`] to a file.
    pub fn write_json(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.to_json_pretty())
    }
}

/// The ledger as the connections update it: ids in a hash map, totals summed on snapshot.
#[derive(Debug, Default)]
pub(crate) struct LiveLedger {
    track_ids: bool,
    connections: Vec<ConnectionLedger>,
    ids: HashMap<String, IdRecord>,
    upstream: Vec<UpstreamRecord>,
    /// Index into `upstream` by `(from, message_id)`.
    upstream_index: HashMap<(String, String), usize>,
}

impl LiveLedger {
    pub(crate) fn new(track_ids: bool) -> Self {
        Self {
            track_ids,
            ..Self::default()
        }
    }

    /// Registers a new connection and returns its number (from 1).
    pub(crate) fn open(&mut self, peer: Option<String>) -> u64 {
        let id = self.connections.len() as u64 + 1;
        self.connections.push(ConnectionLedger {
            id,
            peer,
            ..ConnectionLedger::default()
        });
        id
    }

    /// The live entry of connection `id` (numbers come from [`Self::open`], so it exists).
    pub(crate) fn conn(&mut self, id: u64) -> &mut ConnectionLedger {
        let index = usize::try_from(id.saturating_sub(1)).unwrap_or(usize::MAX);
        if index >= self.connections.len() {
            // Not reachable through the crate's own use; a fresh entry keeps it panic-free.
            self.connections.push(ConnectionLedger {
                id,
                ..ConnectionLedger::default()
            });
            let last = self.connections.len() - 1;
            return &mut self.connections[last];
        }
        &mut self.connections[index]
    }

    /// A downstream message with this id (and this `to`) arrived on connection `conn`.
    pub(crate) fn received(&mut self, conn: u64, id: &str, to: Option<&str>) {
        let seen = if self.track_ids {
            match self.ids.get_mut(id) {
                Some(r) => {
                    r.received = r.received.saturating_add(1);
                    r.to = to.map(str::to_owned);
                    true
                }
                None => {
                    self.ids.insert(
                        id.to_owned(),
                        IdRecord {
                            to: to.map(str::to_owned),
                            received: 1,
                            ..IdRecord::default()
                        },
                    );
                    false
                }
            }
        } else {
            false
        };
        let c = &mut self.conn(conn).counters;
        c.downstream_received += 1;
        if seen {
            c.resends += 1;
        } else {
            c.unique_ids += 1;
        }
    }

    /// A downstream id arrived again while still pending on connection `conn` (its own
    /// [`Self::received`] follows, when the copy's event is answered).
    pub(crate) fn duplicate_pending(&mut self, conn: u64) {
        self.conn(conn).counters.duplicates_pending += 1;
    }

    /// An upstream message or receipt went out on connection `conn`; `deliveries_before`
    /// is how many times it was sent before.
    pub(crate) fn upstream_sent(
        &mut self,
        conn: u64,
        from: &str,
        id: &str,
        receipt: bool,
        deliveries_before: u32,
    ) {
        let c = &mut self.conn(conn).counters;
        match (receipt, deliveries_before > 0) {
            (true, again) => {
                c.receipts_sent += 1;
                c.receipts_redelivered += u64::from(again);
            }
            (false, again) => {
                c.upstream_sent += 1;
                c.redelivered += u64::from(again);
            }
        }
        if !self.track_ids {
            return;
        }
        let key = (from.to_owned(), id.to_owned());
        let index = *self.upstream_index.entry(key).or_insert_with(|| {
            self.upstream.push(UpstreamRecord {
                message_id: id.to_owned(),
                from: from.to_owned(),
                receipt,
                ..UpstreamRecord::default()
            });
            self.upstream.len() - 1
        });
        let r = &mut self.upstream[index];
        r.sent = r.sent.saturating_add(1);
        if deliveries_before > 0 {
            r.redelivered = r.redelivered.saturating_add(1);
        }
        r.sent_on.push(conn);
    }

    /// The client on connection `conn` acked the upstream message or receipt
    /// `(from, message_id)`.
    pub(crate) fn upstream_acked(&mut self, conn: u64, from: &str, id: &str, receipt: bool) {
        let c = &mut self.conn(conn).counters;
        if receipt {
            c.receipts_acked += 1;
        } else {
            c.upstream_acked += 1;
        }
        let key = (from.to_owned(), id.to_owned());
        if let Some(r) = self
            .upstream_index
            .get(&key)
            .and_then(|&i| self.upstream.get_mut(i))
        {
            r.acks = r.acks.saturating_add(1);
            r.acked_on = Some(conn);
        }
    }

    /// Whether `id` was acked before (known only with `track_ids`).
    pub(crate) fn was_acked(&self, id: &str) -> bool {
        self.ids.get(id).is_some_and(|r| r.acks > 0)
    }

    /// Connection `conn` answered `id` (or, for a stanza error without an id, answered a
    /// message that had none).
    pub(crate) fn answered(&mut self, conn: u64, id: Option<&str>, answer: Answer) {
        let c = &mut self.conn(conn).counters;
        match &answer {
            Answer::Acked { registration_id } => {
                c.acked += 1;
                if registration_id.is_some() {
                    c.canonical_ids += 1;
                }
            }
            Answer::Nacked { code, .. } => *c.nacked.entry(code.clone()).or_default() += 1,
            Answer::StanzaError { .. } => c.stanza_errors += 1,
        }
        if let Some(id) = id
            && let Some(r) = self.ids.get_mut(id)
        {
            r.answers = r.answers.saturating_add(1);
            if matches!(answer, Answer::Acked { .. }) {
                r.acks = r.acks.saturating_add(1);
            }
            r.answer = Some(answer);
        }
    }

    /// Connection `conn` ended.
    pub(crate) fn closed(&mut self, conn: u64, end: ConnectionEnd, never_answered: Vec<String>) {
        let c = self.conn(conn);
        c.counters.never_answered += never_answered.len() as u64;
        c.never_answered_ids.extend(never_answered);
        if c.end.is_none() {
            c.end = Some(end);
        }
    }

    /// A consistent copy, with totals.
    pub(crate) fn snapshot(&self, upstream_queued: usize) -> Ledger {
        let mut total = Counters::default();
        let mut close_reasons = BTreeMap::new();
        let mut closed = 0;
        for c in &self.connections {
            total.add(&c.counters);
            if let Some(end) = &c.end {
                closed += 1;
                *close_reasons.entry(end.kind().to_owned()).or_default() += 1;
            }
        }
        Ledger {
            total,
            connections_opened: self.connections.len() as u64,
            connections_closed: closed,
            close_reasons,
            upstream_queued: upstream_queued as u64,
            connections: self.connections.clone(),
            ids: self
                .ids
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            upstream: self.upstream.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_and_answers_are_counted() {
        let mut l = LiveLedger::new(true);
        let a = l.open(Some("peer".into()));
        l.received(a, "m1", Some("t"));
        l.received(a, "m2", None);
        l.answered(
            a,
            Some("m1"),
            Answer::Acked {
                registration_id: None,
            },
        );
        l.closed(a, ConnectionEnd::Eof, vec!["m2".into()]);
        let b = l.open(None);
        l.received(b, "m2", None);
        l.duplicate_pending(b);
        l.received(b, "m2", None);
        l.answered(
            b,
            Some("m2"),
            Answer::Nacked {
                code: "INVALID_JSON".into(),
                description: None,
            },
        );
        let snap = l.snapshot(0);
        assert_eq!(snap.total.downstream_received, 4);
        assert_eq!(snap.total.unique_ids, 2);
        assert_eq!(snap.total.resends, 2);
        assert_eq!(snap.total.duplicates_pending, 1);
        assert_eq!(snap.total.never_answered, 1);
        assert_eq!(snap.total.nacked_with("INVALID_JSON"), 1);
        assert_eq!(snap.connections_opened, 2);
        assert_eq!(snap.connections_closed, 1);
        assert_eq!(snap.close_reasons.get("eof"), Some(&1));
        assert!(snap.unanswered_ids().is_empty());
        assert!(matches!(snap.answered("m2"), Some(Answer::Nacked { .. })));
        assert_eq!(snap.answered("nope"), None);
    }

    #[test]
    fn json_round_trip() {
        let mut l = LiveLedger::new(true);
        let a = l.open(None);
        l.received(a, "x", None);
        l.closed(
            a,
            ConnectionEnd::StreamError {
                condition: "system-shutdown".into(),
                text: None,
            },
            vec!["x".into()],
        );
        l.upstream_sent(a, "dev", "u1", false, 0);
        l.upstream_sent(a, "gcm.googleapis.com", "dr2:x", true, 1);
        l.upstream_acked(a, "dev", "u1", false);
        let snap = l.snapshot(3);
        assert_eq!(snap.total.redelivered, 0);
        assert_eq!(snap.total.receipts_redelivered, 1);
        assert_eq!(snap.unacked_upstream(), vec!["dr2:x".to_owned()]);
        assert_eq!(snap.upstream_record("u1").unwrap().acked_on, Some(a));
        let back = Ledger::from_json(&snap.to_json_pretty()).unwrap();
        assert_eq!(back, snap);
        assert_eq!(back.unanswered_ids(), vec!["x".to_owned()]);
    }

    #[test]
    fn untracked_ids_still_count() {
        let mut l = LiveLedger::new(false);
        let a = l.open(None);
        l.received(a, "x", None);
        l.received(a, "x", None);
        let snap = l.snapshot(0);
        assert_eq!(snap.total.unique_ids, 2);
        assert!(snap.ids.is_empty());
    }
}
