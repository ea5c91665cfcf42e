//! The server side of one CCS stream, sans-IO: what the emulator and the in-memory test pair
//! drive.
//!
//! [`ServerConnection`] speaks CCS as the real connection server did (PROTOCOL.md Part 2):
//! stream header and SASL features with `X-OAUTH2`, `X-GOOGLE-TOKEN`, `PLAIN`; SASL PLAIN
//! against a configured sender id and server key, accepting every identity form CCS accepted
//! (§2.4); the stream restart; binding with a server suffix on the resource (§2.8); the
//! optional session; XEP-0199 pings; then `<message>` stanzas carrying CCS JSON both ways. It
//! stays within RFC 6120, so unmodified XMPP clients work against it.
//!
//! It decides nothing about the messages themselves: each downstream message is reported as
//! a [`ServerEvent`] and stays *pending* until the owner answers it with exactly one
//! [`ServerConnection::ack`], [`ServerConnection::nack`] or
//! [`ServerConnection::stanza_error`]. A copy that arrives with the `message_id` of a
//! pending message is a message of its own and is owed its own answer (PROTOCOL.md §7.1:
//! every downstream message gets exactly one ACK or NACK): see
//! [`ServerEvent::DuplicatePending`]. Every ack and nack names a `from` (§6.1). Upstream messages and receipts the owner sends stay
//! *unacked* until the client acks them ([`ServerConnection::unacked_upstream`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use crate::hash::FastMap;
use crate::message::{
    AppAck, Control, ControlType, Incoming, MessageId, Nack, NackCode, Receipt, Upstream,
};
use crate::rng::SplitMix64;
use crate::xml::StreamReader;
use crate::xml::write;

mod config;
mod event;
mod input;
mod output;

pub use config::ServerConfig;
pub use event::{ServerCloseReason, ServerError, ServerEvent, ServerState, ServerStats};

/// The old name of [`ServerCloseReason`] (renamed so that it is not mistaken for the client
/// side's [`crate::connection::CloseReason`]).
#[deprecated(since = "0.1.0", note = "renamed `ServerCloseReason`")]
pub type CloseReason = ServerCloseReason;

/// The server side of one CCS stream, from the client's first byte to the last. Sans-IO: no
/// sockets, no clock, no threads; time is passed in.
///
/// # Run loop
///
/// ```text
/// let mut conn = ServerConnection::new(config, now);          // a client connected
/// loop {
///     // inputs: bytes, EOF, or the deadline of poll_timeout() passing
///     conn.handle_input(now, &bytes) | conn.handle_eof(now) | conn.handle_timeout(now);
///     while let Some(ev) = conn.poll_event() { /* answer: conn.ack(..), conn.nack(..) */ }
///     if let Some(buf) = conn.poll_transmit() { /* write and flush buf */ }
///     if conn.state() == ServerState::Closed { break; }        // then close the socket
///     // sleep until readable or until conn.poll_timeout()
/// }
/// ```
///
/// - **Getters:** [`state`](Self::state), [`pending`](Self::pending), [`jid`](Self::jid),
///   [`unacked_upstream`](Self::unacked_upstream), [`stats`](Self::stats), ...
/// - **Outputs:** [`poll_transmit`](Self::poll_transmit) (bytes to write),
///   [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
/// - **Inputs:** [`handle_input`](Self::handle_input) (bytes received),
///   [`handle_eof`](Self::handle_eof) (the transport ended),
///   [`handle_timeout`](Self::handle_timeout) (the deadline from `poll_timeout` passed; a
///   spurious call does nothing).
/// - **Commands:** [`ack`](Self::ack), [`nack`](Self::nack),
///   [`stanza_error`](Self::stanza_error), [`send_upstream`](Self::send_upstream),
///   [`send_receipt`](Self::send_receipt), [`send_control`](Self::send_control),
///   [`ping`](Self::ping), [`close`](Self::close) (it arms a timer: it takes `now`), ...
///   Caller mistakes come back as a [`ServerError`]; nothing else changes then.
///
/// After any input or command, drain every output: events first (answering one may call a
/// command, which queues bytes), then transmits, until both are empty. Bytes queued by a
/// handler then go out in the same turn, not at the next wake-up. `now` is the only clock.
///
/// Misbehaviour of the client never panics and never returns an error: it closes the stream
/// with the stream error RFC 6120 prescribes and shows up once, as [`ServerEvent::Closed`].
///
/// ```
/// use std::time::Instant;
/// use ccs_proto::credentials::{SenderId, ServerKey};
/// use ccs_proto::server::{ServerConfig, ServerConnection, ServerEvent, ServerState};
/// use ccs_proto::xml::write;
///
/// # #[allow(clippy::disallowed_methods)]
/// let now = Instant::now();
/// let config = ServerConfig::new(SenderId::new("1234")?, ServerKey::new("key")?);
/// let mut conn = ServerConnection::new(config, now);
///
/// let mut client = Vec::new();
/// write::client_header(&mut client, "gcm.googleapis.com");
/// write::auth_plain(&mut client, "", "1234@gcm.googleapis.com", "key");
/// conn.handle_input(now, &client);
/// assert_eq!(
///     conn.poll_event(),
///     Some(ServerEvent::Authenticated { authcid: "1234@gcm.googleapis.com".into() })
/// );
/// let out = conn.poll_transmit().unwrap();
/// assert!(out.ends_with(b"<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>"));
///
/// client.clear();
/// write::client_header(&mut client, "gcm.googleapis.com");
/// write::iq_bind_set(&mut client, "b1", Some("test"));
/// conn.handle_input(now, &client);
/// let Some(ServerEvent::Bound { jid }) = conn.poll_event() else { panic!() };
/// assert!(jid.starts_with("1234@gcm.googleapis.com/test"));
/// assert_eq!(conn.state(), ServerState::Bound);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ServerConnection {
    config: ServerConfig,
    state: ServerState,
    reader: StreamReader,
    rng: SplitMix64,
    deadline: Option<Instant>,
    /// Whether this stream's header (the current one, after a restart) has been written.
    header_sent: bool,
    /// Whether `</stream:stream>` has been written.
    end_sent: bool,
    /// The `to` of the client's current stream header.
    stream_to: Option<String>,
    stream_id: Option<String>,
    auth_failures: u32,
    authenticated: bool,
    jid: Option<String>,
    /// Pending downstream messages by `message_id`.
    pending: FastMap<MessageId, Pending>,
    /// Answers owed: every pending message with its copies.
    owed: usize,
    pending_seq: u64,
    window_violations: u64,
    /// Invalid payloads without a `message_id` but with a stanza id, newest last, so that
    /// [`Self::stanza_error`] can answer them by stanza id.
    recent_invalid: VecDeque<(String, String)>,
    /// Upstream messages and receipts sent and not acked, in send order.
    unacked: BTreeMap<u64, Incoming>,
    /// Keyed by the ack each expects: `(from, message_id)`, since device-chosen ids collide
    /// across devices.
    unacked_by_id: HashMap<AppAck, u64>,
    unacked_seq: u64,
    /// Ids of pings sent and not answered, oldest first.
    pings: VecDeque<String>,
    ping_seq: u64,
    out: Vec<u8>,
    events: VecDeque<ServerEvent>,
    stats: ServerStats,
}

/// A downstream message waiting for its answer (with the copies that arrived under its id
/// while it was pending).
#[derive(Debug)]
struct Pending {
    /// What an ack or nack names as `from`: the message's `to`, else its `condition`, else
    /// `""` (PROTOCOL.md §6.1: `from` is in both; the doc examples always show it).
    from: String,
    /// Answers owed under this id: 1, plus one per copy that arrived while it was pending.
    copies: u32,
    /// The `id` attribute of its stanza.
    stanza_id: Option<String>,
    /// The JSON text as received (a stanza error echoes it).
    json: String,
    /// Arrival order.
    seq: u64,
}

/// How many invalid payloads without a `message_id` are remembered for
/// [`ServerConnection::stanza_error`].
const RECENT_INVALID: usize = 32;
/// How many unanswered pings are remembered.
const MAX_PINGS: usize = 16;
/// The longest resource a client may request (RFC 6120 allows 1023 bytes, the server
/// appends 8).
const MAX_RESOURCE: usize = 1023 - 8;

impl ServerConnection {
    /// A connection whose client has just connected (nothing is written until the client's
    /// stream header arrives).
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        let deadline = config.setup_timeout.and_then(|t| now.checked_add(t));
        Self {
            reader: StreamReader::new(config.framer.clone()),
            rng: SplitMix64(config.seed),
            config,
            state: ServerState::AwaitingHeader,
            deadline,
            header_sent: false,
            end_sent: false,
            stream_to: None,
            stream_id: None,
            auth_failures: 0,
            authenticated: false,
            jid: None,
            pending: FastMap::default(),
            owed: 0,
            pending_seq: 0,
            window_violations: 0,
            recent_invalid: VecDeque::new(),
            unacked: BTreeMap::new(),
            unacked_by_id: HashMap::new(),
            unacked_seq: 0,
            pings: VecDeque::new(),
            ping_seq: 0,
            out: Vec::new(),
            events: VecDeque::new(),
            stats: ServerStats::default(),
        }
    }

    // ---- getters ------------------------------------------------------------------------

    /// Where the stream is.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Bytes received and not yet decoded: after [`handle_input`](Self::handle_input)
    /// returns, at most one open stanza (or stream header), so never more than the larger of
    /// the framer's `max_stanza_bytes` and `max_header_bytes`.
    pub fn buffered_input(&self) -> usize {
        self.reader.framer().buffered()
    }

    /// Downstream messages received and not yet answered (with an invalid payload that had a
    /// `message_id`), copies under a pending id included: the answers owed.
    pub fn pending(&self) -> usize {
        self.owed
    }

    /// Whether a message with this id is pending.
    pub fn is_pending(&self, message_id: &str) -> bool {
        self.pending.contains_key(message_id)
    }

    /// The ids of the pending messages, in arrival order (an id with pending copies once).
    pub fn pending_ids(&self) -> Vec<&MessageId> {
        let mut ids: Vec<(&MessageId, u64)> =
            self.pending.iter().map(|(id, p)| (id, p.seq)).collect();
        ids.sort_unstable_by_key(|&(_, seq)| seq);
        ids.into_iter().map(|(id, _)| id).collect()
    }

    /// How many downstream messages arrived while `pending >= window`.
    pub fn window_violations(&self) -> u64 {
        self.window_violations
    }

    /// The bound JID (`SENDER@domain/RESOURCE`), once bound.
    pub fn jid(&self) -> Option<&str> {
        self.jid.as_deref()
    }

    /// The `id` of the server's current stream header, once written.
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }

    /// Upstream messages and receipts sent by [`Self::send_upstream`] and
    /// [`Self::send_receipt`] that the client has not acked, in send order (the real server
    /// redelivered them on the client's next connection).
    pub fn unacked_upstream(&self) -> impl Iterator<Item = &Incoming> {
        self.unacked.values()
    }

    /// The counters.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    // ---- outputs ------------------------------------------------------------------------

    /// Everything queued for the wire since the last call, as one buffer; `None` if nothing.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            return None;
        }
        self.stats.bytes_out += self.out.len() as u64;
        Some(std::mem::take(&mut self.out))
    }

    /// Appends everything queued for the wire to `buf` (an allocation-free form of
    /// [`poll_transmit`](Self::poll_transmit)); returns whether there was anything.
    pub fn transmit_into(&mut self, buf: &mut Vec<u8>) -> bool {
        if self.out.is_empty() {
            return false;
        }
        self.stats.bytes_out += self.out.len() as u64;
        buf.extend_from_slice(&self.out);
        self.out.clear();
        true
    }

    /// The next event, oldest first; `None` when there is none.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should be called next: the setup deadline (if
    /// [`ServerConfig::setup_timeout`] is set and the client has not bound yet) or the end of
    /// the wait after [`Self::close`]. `None` when there is no timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ServerState::Closed => None,
            _ => self.deadline,
        }
    }

    // ---- inputs -------------------------------------------------------------------------

    /// Bytes received from the client, in pieces of any size. Bytes that arrive after a
    /// stream restart point (SASL success) in the same piece are kept for the new stream.
    /// Ignored once closed. Nothing read arms a timer, so `now` is unused; it is taken like
    /// every other input's, so that one could without an API change.
    pub fn handle_input(&mut self, _now: Instant, data: &[u8]) {
        self.stats.bytes_in += data.len() as u64;
        if self.state == ServerState::Closed {
            return;
        }
        self.reader.push(data);
        while self.state != ServerState::Closed {
            match self.reader.next_event() {
                Ok(Some(event)) => self.on_event(event),
                Ok(None) => break,
                Err(e) => {
                    self.on_xml_error(e);
                    break;
                }
            }
        }
    }

    /// The client's bytes ended (TCP or TLS EOF): [`ServerCloseReason::Eof`] unless already closed.
    /// `now` is unused, as in [`Self::handle_input`].
    pub fn handle_eof(&mut self, _now: Instant) {
        self.close_with(ServerCloseReason::Eof);
    }

    /// Time passed. Does nothing unless the deadline of [`Self::poll_timeout`] has come
    /// (calling it early or twice is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        self.deadline = None;
        match self.state {
            ServerState::Closed | ServerState::Bound | ServerState::Draining => {}
            ServerState::Closing => self.close_with(ServerCloseReason::CloseTimeout),
            _ => self.fail_with(
                "connection-timeout",
                Some("stream setup did not complete in time"),
                ServerCloseReason::SetupTimeout,
            ),
        }
    }

    // ---- commands -----------------------------------------------------------------------

    /// Acks a pending downstream message: `{"message_type":"ack","from":<its to>,
    /// "message_id":..[,"registration_id":<canonical_registration_id>]}`, stanza without
    /// `type`. The message is no longer pending (or one copy fewer is owed an answer).
    pub fn ack(
        &mut self,
        message_id: &str,
        canonical_registration_id: Option<&str>,
    ) -> Result<(), ServerError> {
        self.ready()?;
        let (id, pending) =
            self.pending
                .get_key_value(message_id)
                .ok_or_else(|| ServerError::NotPending {
                    id: message_id.to_owned(),
                })?;
        // What `Ack`'s serialization writes, from borrowed strings: the server's hottest
        // output, written without copying the token and the id.
        let ack = output::AckOut {
            from: &pending.from,
            message_id: id.as_str(),
            registration_id: canonical_registration_id,
        };
        ack.write(&mut self.out)
            .map_err(|e| ServerError::Encode(e.into()))?;
        self.stats.stanzas_out += 1;
        self.answered_one(message_id);
        self.stats.acks_sent += 1;
        Ok(())
    }

    /// Nacks a pending downstream message: `{"message_type":"nack","from":<its to>,
    /// "message_id":..,"error":<code>[,"error_description":..]}`, stanza without `type`.
    /// The message is no longer pending (or one copy fewer is owed an answer).
    pub fn nack(
        &mut self,
        message_id: &str,
        code: NackCode,
        description: Option<&str>,
    ) -> Result<(), ServerError> {
        self.ready()?;
        let (id, pending) = self.pending_entry(message_id)?;
        let mut nack = Nack::new(id.clone(), code);
        nack.from = Some(pending.from.clone());
        nack.error_description = description.map(str::to_owned);
        self.write_gcm(None, &nack)?;
        self.answered_one(message_id);
        self.stats.nacks_sent += 1;
        Ok(())
    }

    /// Nacks a client ack with `BAD_ACK` (as CCS answered a malformed ack; the nack's
    /// `message_id` is the ack's, its `from` the ack's `to`, PROTOCOL.md §6.1). Touches
    /// neither pending nor unacked messages.
    pub fn nack_bad_ack(
        &mut self,
        ack: &AppAck,
        description: Option<&str>,
    ) -> Result<(), ServerError> {
        self.ready()?;
        let mut nack = Nack::new(ack.message_id.clone(), NackCode::BadAck);
        nack.from = Some(ack.to.clone());
        nack.error_description = description.map(str::to_owned);
        self.write_gcm(None, &nack)?;
        self.stats.nacks_sent += 1;
        Ok(())
    }

    /// Answers a message with a stanza error in CCS's form (PROTOCOL.md §3.8): the original
    /// stanza id, `type="error"`, `to` the bound JID, the original JSON echoed in `<gcm>`, and
    /// `<error code=.. type=..><CONDITION/><text>TEXT</text></error>` with the error type and
    /// the legacy code of the condition (`modify` and `400` for `bad-request`).
    ///
    /// `id` is looked up as a pending `message_id` first, then as the stanza id of a pending
    /// message, then as the stanza id of one of the last 32 invalid payloads that had no
    /// `message_id` (as CCS answered a missing `message_id`). A pending message is then no
    /// longer pending (or one copy fewer is owed an answer).
    pub fn stanza_error(
        &mut self,
        id: &str,
        condition: &str,
        text: Option<&str>,
    ) -> Result<(), ServerError> {
        self.ready()?;
        let (stanza_id, json, found) = if let Some(p) = self.pending.get(id) {
            (
                p.stanza_id.clone(),
                p.json.to_string(),
                Found::Pending(None),
            )
        } else if let Some((mid, p)) = self
            .pending
            .iter()
            .filter(|(_, p)| !id.is_empty() && p.stanza_id.as_deref() == Some(id))
            .min_by_key(|(_, p)| p.seq)
        {
            (
                p.stanza_id.clone(),
                p.json.to_string(),
                Found::Pending(Some(mid.clone())),
            )
        } else if let Some(i) = self
            .recent_invalid
            .iter()
            .rposition(|(sid, _)| !id.is_empty() && sid == id)
        {
            let json = self
                .recent_invalid
                .get(i)
                .map(|(_, json)| json.clone())
                .unwrap_or_default();
            (Some(id.to_owned()), json, Found::Invalid(i))
        } else {
            return Err(ServerError::NotPending { id: id.to_owned() });
        };
        self.write_stanza_error(stanza_id.as_deref(), Some(&json), condition, text);
        match found {
            Found::Pending(None) => self.answered_one(id),
            Found::Pending(Some(mid)) => self.answered_one(mid.as_str()),
            Found::Invalid(i) => {
                self.recent_invalid.remove(i);
            }
        }
        Ok(())
    }

    /// Writes a stanza error as [`Self::stanza_error`] does, with the stanza id and the
    /// echoed JSON given here. Touches no pending message.
    pub fn send_stanza_error_raw(
        &mut self,
        stanza_id: Option<&str>,
        echoed_json: Option<&str>,
        condition: &str,
        text: Option<&str>,
    ) -> Result<(), ServerError> {
        self.ready()?;
        self.write_stanza_error(stanza_id, echoed_json, condition, text);
        Ok(())
    }

    /// Sends an upstream message (stanza `to` the client's bare JID, `from`
    /// `devices@DOMAIN`, `type="normal"`, as captured in PROTOCOL.md §3.2). It stays in
    /// [`Self::unacked_upstream`] until the client acks it (sending the same `message_id`
    /// again replaces the entry).
    pub fn send_upstream(&mut self, message: &Upstream) -> Result<(), ServerError> {
        self.ready()?;
        self.check_unacked(&message.ack())?;
        self.write_gcm(Some("normal"), message)?;
        self.track_unacked(Incoming::Upstream(message.clone()));
        self.stats.upstream_sent += 1;
        Ok(())
    }

    /// Sends a delivery receipt (stanza as for [`Self::send_upstream`]). It stays in
    /// [`Self::unacked_upstream`] until the client acks it.
    pub fn send_receipt(&mut self, receipt: &Receipt) -> Result<(), ServerError> {
        self.ready()?;
        self.check_unacked(&receipt.ack())?;
        self.write_gcm(Some("normal"), receipt)?;
        self.track_unacked(Incoming::Receipt(receipt.clone()));
        self.stats.receipts_sent += 1;
        Ok(())
    }

    /// Sends a control message (stanza without `type`). `CONNECTION_DRAINING` puts the stream
    /// in [`ServerState::Draining`].
    pub fn send_control(&mut self, control: &Control) -> Result<(), ServerError> {
        self.ready()?;
        self.write_gcm(None, control)?;
        if control.control_type == ControlType::ConnectionDraining {
            self.state = ServerState::Draining;
        }
        Ok(())
    }

    /// Sends any server message as is (for tests: a bogus ack, an unknown `message_type`):
    /// stanza `type="normal"` for upstream messages and receipts, no `type` otherwise. It is
    /// not tracked: pending and unacked messages are not touched.
    pub fn send_raw_incoming(&mut self, message: &Incoming) -> Result<(), ServerError> {
        self.ready()?;
        let kind = match message {
            Incoming::Upstream(_) | Incoming::Receipt(_) => Some("normal"),
            _ => None,
        };
        self.write_gcm(kind, message)
    }

    /// Sends an XEP-0199 ping and returns its id; the client's answer is reported as
    /// [`ServerEvent::Pong`]. At most 16 unanswered pings are remembered.
    pub fn ping(&mut self) -> Result<String, ServerError> {
        self.ready()?;
        self.ping_seq += 1;
        let id = format!("s2c-ping-{}", self.ping_seq);
        write::iq_ping(&mut self.out, &id, self.jid.as_deref());
        self.stats.stanzas_out += 1;
        if self.pings.len() >= MAX_PINGS {
            self.pings.pop_front();
        }
        self.pings.push_back(id.clone());
        Ok(id)
    }

    /// Sends a whitespace keepalive (one space), as CCS did when idle. Allowed whenever the
    /// server's stream is open (after its header, before its end tag).
    pub fn whitespace(&mut self) -> Result<(), ServerError> {
        self.writable()?;
        if !self.header_sent {
            return Err(ServerError::NotReady { state: self.state });
        }
        write::whitespace_keepalive(&mut self.out);
        Ok(())
    }

    /// Ends the stream with a stream error (`<stream:error>` with the condition and text,
    /// then `</stream:stream>`, preceded by a stream header if the server had not sent one on
    /// this stream). The connection is then closed ([`ServerCloseReason::StreamError`]). After
    /// [`Self::close`], nothing can be written any more and this only closes.
    pub fn stream_error(&mut self, condition: &str, text: Option<&str>) -> Result<(), ServerError> {
        if self.state == ServerState::Closed {
            return Err(ServerError::Closed);
        }
        self.fail(condition, text);
        Ok(())
    }

    /// Closes the server's side of the stream: writes `</stream:stream>` (preceded by a
    /// stream header if none was sent on this stream) and enters [`ServerState::Closing`].
    /// The client's input is still read (its acks and late messages are reported) until its
    /// `</stream:stream>` ([`ServerCloseReason::ServerClosed`]), its EOF, or
    /// [`ServerConfig::close_timeout`] after `now` ([`ServerCloseReason::CloseTimeout`]).
    pub fn close(&mut self, now: Instant) -> Result<(), ServerError> {
        self.writable()?;
        if !self.header_sent {
            self.write_header();
        }
        write::stream_end(&mut self.out);
        self.end_sent = true;
        self.state = ServerState::Closing;
        self.deadline = now.checked_add(self.config.close_timeout);
        Ok(())
    }
}

/// Where [`ServerConnection::stanza_error`] found its message.
enum Found {
    /// Pending, under the id given (`None`) or under this `message_id` (found by stanza id).
    Pending(Option<MessageId>),
    /// An invalid payload in `recent_invalid` at this index.
    Invalid(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_is_send() {
        fn is_send<T: Send>() {}
        is_send::<ServerConnection>();
        is_send::<ServerEvent>();
    }
}
