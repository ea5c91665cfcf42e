//! Many CCS connections behind one queue, sans-IO: [`Client`].
//!
//! A [`Connection`] is one XMPP stream. The client owns every connection and all the policy
//! around them: how many to keep open, where each message goes, what happens to messages in
//! flight when a connection ends, which nacks are retried and when, reconnect backoff,
//! upstream de-duplication, expiry and the graceful close. It reads no clock and touches no
//! socket: an adapter feeds it transport events and time, and carries out its outputs.
//!
//! # The contract
//!
//! - **Getters**: [`Client::stats`], [`Client::queued`], [`Client::in_flight`],
//!   [`Client::connections`], [`Client::is_closed`].
//! - **Outputs**: [`Client::poll_output`] gives, in order, [`Output::Connect`] (open a
//!   transport for this id), [`Output::Transmit`] (write these bytes on it),
//!   [`Output::Disconnect`] (close it after writing what came before; forget the id), and
//!   [`Output::Event`] for the application. [`Client::poll_timeout`] says when to call
//!   `handle_timeout` next.
//! - **Inputs** (from the adapter): [`Client::handle_connected`],
//!   [`Client::handle_connect_failed`], [`Client::handle_input`], [`Client::handle_eof`],
//!   [`Client::handle_timeout`] (may be called spuriously: it then does nothing).
//! - **Commands** (from the application): [`Client::send`], [`Client::send_priority`],
//!   [`Client::ack`] and [`Client::release`] (manual acks), [`Client::close`].
//!
//! After any input or command, drain every output. [`Client::poll_output`] is one queue, in
//! order: a command issued while handling an [`Output::Event`] (a `send`, an `ack`) adds its
//! outputs to the same queue, so they go out in the same turn of the loop an adapter runs:
//!
//! ```text
//! let mut client = Client::new(config, clock())?;
//! loop {
//!     while let Some(out) = client.poll_output() {
//!         match out {
//!             Output::Connect(id) => dial(id),        // later: handle_connected / handle_connect_failed
//!             Output::Transmit(id, bytes) => { sockets[id].write_all(&bytes); sockets[id].flush() }
//!             Output::Disconnect(id) => drop(sockets.remove(id)),
//!             Output::Event(event) => app(event),     // may call client.send / ack / close
//!         }
//!     }
//!     if client.is_closed() { break }
//!     match wait_until(client.poll_timeout()) {       // readable socket, dial result, app command
//!         Dialled(id, Ok(s)) => { sockets.insert(id, s); client.handle_connected(clock(), id) }
//!         Dialled(id, Err(e)) => client.handle_connect_failed(clock(), id, e.to_string()),
//!         Read(id, bytes) if bytes.is_empty() => client.handle_eof(clock(), id),
//!         Read(id, bytes) => client.handle_input(clock(), id, &bytes),
//!         TimedOut => client.handle_timeout(clock()),
//!     }
//! }
//! ```
//!
//! Every [`Output::Connect`] is followed, sooner or later, by exactly one
//! [`Output::Disconnect`] and one [`ClientEvent::ConnectionDown`] for the same id (and by a
//! second `Disconnect` only if the adapter reports a transport up for an attempt the client
//! had already given up on, so that it closes that stray transport too).
//!
//! # Guarantees
//!
//! Every message `send` accepts gets exactly one [`ClientEvent::Outcome`]: acked, nacked with
//! a final code, rejected with a stanza error, failed after the retry policy gave up,
//! expired, or unsent at close. A message may go on the wire more than once (again after its
//! connection died, with the same `message_id`), never be reported twice. No connection ever
//! has more than its window of messages in flight, and nothing new is sent on a draining
//! connection. Every upstream message and receipt is acked on the connection it came on and
//! handed to the application at least once; with de-duplication on (the default), once per
//! `(from, message_id)` within the window.
//!
//! # Order
//!
//! Messages wait in one queue with two lanes, both counted by [`Client::queued`] and
//! limited together by [`ClientConfig::max_queue`]. Connections with window room take,
//! first, messages put back for a resend (their connection ended or returned them) or due
//! for a retry, in their original order; then [`Client::send_priority`] messages (replies
//! that must not wait behind a bulk backlog), oldest first; then [`Client::send`] messages,
//! oldest first. Expiry, close and the close report treat both lanes alike.
//!
//! # Bounded time
//!
//! Every message gets its outcome in bounded time, whatever the server or the network does.
//! With the defaults: a message not yet sent after [`ClientConfig::max_queue_time`] (10 min,
//! e.g. while no connection can be made) expires unsent; a message on the wire without an
//! answer after [`ClientConfig::ack_timeout`] (60 s, e.g. a server that answers pings but not
//! messages) expires, maybe delivered. So an outcome comes within 11 minutes of `send`
//! at the latest; set both to `None` to wait as long as it takes.
//!
//! # Protocol decisions
//!
//! Where the CCS documents are silent, the client decides as follows.
//!
//! - **Liveness** comes from complete frames only (a stanza, a whitespace keepalive between
//!   stanzas). Bytes of an unfinished stanza do not move the ping deadline, and a stanza left
//!   unfinished for [`ConnectionConfig::stanza_timeout`] (30 s) ends the connection: a peer
//!   trickling bytes cannot hold messages in flight forever.
//! - **Draining** (CONNECTION_DRAINING, by control message or nack, in any state where
//!   messages are processed) stops sends on the connection at once and opens a replacement;
//!   the old connection keeps receiving and acking until the server closes it, or until
//!   [`ConnectionConfig::drain_timeout`] (60 s) passes: then the client closes it itself
//!   and only then gives its unanswered messages back for resending with the same ids (no
//!   answer can arrive on a closed connection, so none is reported twice).
//! - **The first connection**: transient failures (refused, timed out, a stream error, a
//!   protocol violation, an early close) are retried with the reconnect backoff until
//!   [`ReconnectPolicy::first_connect_timeout`] (30 s); a failure retrying cannot fix
//!   ([`DownReason::is_permanent`]) ends it at once. Either way
//!   [`ClientEvent::FirstConnectFailed`] says why and the client closes itself. After one
//!   connection has come up, the client never gives up by itself.
//! - **Backoff** is for connections that achieve nothing. A connection that got at least one
//!   answer, or lived [`ReconnectPolicy::healthy_after`], is replaced at once when it ends.
//! - **Leniency**: an upstream message or receipt with a usable `from` and `message_id`
//!   always reaches the application and is acked, whatever its other fields hold (see
//!   [`crate::message`]); nothing the server sends can become a poison message that loops.
//! - **Acks of our acks**: a `BAD_ACK` nack, or a stanza error echoing one of our acks, is
//!   about that upstream message ([`Anomaly::AckRefused`]), never about a downstream message
//!   that shares its id.
//!
//! # Example
//!
//! A client and the crate's own server role, wired by hand:
//!
//! ```
//! use std::time::Instant;
//! use ccs_proto::client::{Client, ClientConfig, ClientEvent, Outcome, Output};
//! use ccs_proto::credentials::{SenderId, ServerKey};
//! use ccs_proto::message::Downstream;
//! use ccs_proto::server::{ServerConfig, ServerConnection, ServerEvent};
//! use ccs_proto::ConnectionConfig;
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let (sender, key) = (SenderId::new("1234")?, ServerKey::new("key")?);
//! let mut client = Client::new(ClientConfig::new(ConnectionConfig::new(sender.clone(), key.clone())), now)?;
//! let mut server = ServerConnection::new(ServerConfig::new(sender, key), now);
//! let ticket = client.send(now, Downstream::builder("device-token", "m-1")?.build()).unwrap();
//!
//! let mut outcome = None;
//! for _ in 0..20 {
//!     while let Some(out) = client.poll_output() {
//!         match out {
//!             Output::Connect(id) => client.handle_connected(now, id),
//!             Output::Transmit(_, bytes) => server.handle_input(now, &bytes),
//!             Output::Event(ClientEvent::Outcome { ticket: t, outcome: o, .. }) => outcome = Some((t, o)),
//!             _ => {}
//!         }
//!     }
//!     while let Some(event) = server.poll_event() {
//!         if let ServerEvent::Downstream { message, .. } = event {
//!             server.ack(message.message_id().as_str(), None)?;
//!         }
//!     }
//!     if let Some(bytes) = server.poll_transmit() {
//!         let id = client.connections().next().unwrap().id;
//!         client.handle_input(now, id, &bytes);
//!     }
//! }
//! let (t, o) = outcome.unwrap();
//! assert_eq!(t, ticket);
//! assert!(matches!(o, Outcome::Acked { .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backoff;
mod book;
mod config;
mod dedup;
mod event;
mod live;
mod queue;
mod slots;
mod upstream;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use std::time::Instant;

use crate::connection::{AckError, AckHandle, ConnId, Connection, ConnectionEvent, State, later};
#[cfg(doc)]
use crate::connection::{Anomaly, config::ConnectionConfig};
use crate::error::UsageError;
use crate::message::{Downstream, NackCode};
use crate::rng::SplitMix64;
use crate::timer::TimerQueue;

use book::Deadlines;
use dedup::Dedup;
use live::{Live, Meta, MsgState};
use queue::{Lane, Queue};
use slots::{Entry, Slot};
use upstream::Held;

pub use config::{ClientConfig, Jitter, ReconnectPolicy, RetryPolicy};
pub use event::{
    ClientEvent, ClientStats, CloseReport, ConnectFailure, ConnectionInfo, DownReason, ExpiryKind,
    FailReason, MessageTicket, Outcome, Output, Phase, SendError, SendErrorKind,
};

/// The most connections a client may keep (the per-sender limit CCS was known to enforce).
pub const MAX_CONNECTIONS: usize = 1000;

pub use crate::connection::config::MAX_DURATION;

/// The key of [`ClientStats::nacked_by_code`] that counts every nack code this crate does
/// not know ([`NackCode::Unknown`]).
pub const UNKNOWN_NACK_CODES: &str = "UNKNOWN";

/// Every connection to CCS and the policy around them, sans-IO. See the [module
/// docs](self) for the contract, the run loop and the guarantees.
///
/// Messages go to the connections with window room, round robin. When a connection ends,
/// its unanswered messages go back to the front of the queue in their original order, with
/// their original `message_id`s, ahead of newer messages (priority ones too); the
/// application is not told (no outcome yet) unless a time limit passes. `now` must not go backwards between calls.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    rng: SplitMix64,
    lifecycle: Lifecycle,
    next_conn: u64,
    next_ticket: u64,
    conns: BTreeMap<ConnId, Entry>,
    /// Each connection's next deadline (or, while connecting, its connect deadline).
    timers: BTreeSet<(Instant, ConnId)>,
    /// Connections up, not draining, not closing: where messages may go.
    sendable: Vec<ConnId>,
    rr: usize,
    slots: Vec<Slot>,
    /// Slots without a connection, by the time they may open one.
    waiting: BTreeSet<(Instant, usize)>,
    /// Attempts not yet up (transport or stream setup).
    connecting: usize,
    /// Accepted, waiting for window room: put back, priority, then normal messages.
    queue: Queue,
    /// Messages waiting for their retry.
    delayed: TimerQueue<Box<Downstream>>,
    /// Every message accepted and not yet reported (plus expired ones still in flight).
    live: Live<Meta>,
    ack_deadlines: Deadlines,
    queue_deadlines: Deadlines,
    dedup: Dedup<Held>,
    outputs: VecDeque<Output>,
    touched: Vec<ConnId>,
    scratch: Vec<ConnectionEvent>,
    queue_was_full: bool,
    /// Until the first connection comes up: when the client gives up on it.
    first_deadline: Option<Instant>,
    /// The last failure before the first connection came up.
    first_error: Option<DownReason>,
    stats: ClientStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Running,
    Closing { deadline: Instant },
    Closed,
}

impl Client {
    /// A client that starts opening its connections at once (drain
    /// [`poll_output`](Self::poll_output) for the [`Output::Connect`]s).
    pub fn new(config: ClientConfig, now: Instant) -> Result<Self, UsageError> {
        config.validate()?;
        let slots = config.connections;
        let mut client = Self {
            rng: SplitMix64(config.seed),
            dedup: Dedup::new(config.dedup_window),
            config,
            lifecycle: Lifecycle::Running,
            next_conn: 1,
            next_ticket: 0,
            conns: BTreeMap::new(),
            timers: BTreeSet::new(),
            sendable: Vec::new(),
            rr: 0,
            slots: Vec::with_capacity(slots),
            waiting: BTreeSet::new(),
            connecting: 0,
            queue: Queue::default(),
            delayed: TimerQueue::new(),
            live: Live::default(),
            ack_deadlines: Deadlines::default(),
            queue_deadlines: Deadlines::default(),
            outputs: VecDeque::new(),
            touched: Vec::new(),
            scratch: Vec::new(),
            queue_was_full: false,
            first_deadline: None,
            first_error: None,
            stats: ClientStats::default(),
        };
        client.first_deadline = Some(later(now, client.config.reconnect.first_connect_timeout));
        for s in 0..slots {
            client.slots.push(Slot::default());
            client.schedule(s, now);
        }
        client.pump(now);
        Ok(client)
    }

    // ---- getters ----

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Messages accepted and not on the wire: waiting in the queue (either lane) or for a
    /// retry.
    pub fn queued(&self) -> usize {
        self.queue.len() + self.delayed.len()
    }

    /// Messages on the wire without an answer, over every connection (expired ones
    /// included until answered or their connection ends).
    pub fn in_flight(&self) -> usize {
        self.conns
            .values()
            .filter_map(|e| e.conn.as_ref())
            .map(Connection::in_flight)
            .sum()
    }

    /// Every connection and connection attempt, by id.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionInfo> + '_ {
        self.conns.iter().map(|(&id, e)| ConnectionInfo {
            id,
            phase: match &e.conn {
                None => Phase::Connecting,
                Some(c) => match c.state() {
                    s if s.is_setup() => Phase::SettingUp,
                    State::Connected => Phase::Up,
                    State::Draining => Phase::Draining,
                    _ => Phase::Closing,
                },
            },
            in_flight: e.conn.as_ref().map_or(0, Connection::in_flight),
            window: self.config.connection.window,
            buffered_in: e.conn.as_ref().map_or(0, Connection::buffered_input),
        })
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.lifecycle != Lifecycle::Running
    }

    /// Whether the close finished ([`ClientEvent::Closed`] was emitted).
    pub fn is_closed(&self) -> bool {
        self.lifecycle == Lifecycle::Closed
    }

    // ---- outputs ----

    /// The next thing to do, oldest first.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next; `None` once
    /// closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let closing = match self.lifecycle {
            Lifecycle::Closed => return None,
            Lifecycle::Closing { deadline } => Some(deadline),
            Lifecycle::Running => None,
        };
        let opening = (self.may_open() && self.connecting < self.config.reconnect.max_connecting)
            .then(|| self.waiting.first().map(|&(t, _)| t))
            .flatten();
        [
            self.timers.first().map(|&(t, _)| t),
            opening,
            self.delayed.next_at(),
            self.ack_deadlines.front(),
            self.queue_deadlines.front(),
            self.first_deadline,
            closing,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- inputs ----

    /// The transport of `id` is up (TCP and TLS): the connection starts (its stream header
    /// is the first [`Output::Transmit`]). For an id the client no longer knows (its
    /// attempt timed out), a [`Output::Disconnect`] asks to close the stray transport.
    pub fn handle_connected(&mut self, now: Instant, id: ConnId) {
        let Some(entry) = self.conns.get_mut(&id) else {
            self.outputs.push_back(Output::Disconnect(id));
            return;
        };
        if entry.conn.is_some() {
            return;
        }
        match Connection::new(id, self.config.connection.clone(), now) {
            Ok(conn) => {
                entry.conn = Some(conn);
                self.touch(id);
            }
            // Unreachable: the config was validated by `Client::new`.
            Err(e) => self.end_entry(now, id, DownReason::ConnectFailed(e.to_string()), vec![]),
        }
        self.pump(now);
    }

    /// The transport of `id` could not be opened.
    pub fn handle_connect_failed(
        &mut self,
        now: Instant,
        id: ConnId,
        failure: impl Into<ConnectFailure>,
    ) {
        match self.conns.get(&id) {
            None => return,
            Some(e) if e.conn.is_some() => return self.handle_eof(now, id),
            Some(_) => {
                let failure = failure.into();
                let reason = if failure.permanent {
                    DownReason::ConnectFailedPermanently(failure.message)
                } else {
                    DownReason::ConnectFailed(failure.message)
                };
                self.end_entry(now, id, reason, vec![])
            }
        }
        self.pump(now);
    }

    /// Bytes received on `id`.
    pub fn handle_input(&mut self, now: Instant, id: ConnId, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id).and_then(|e| e.conn.as_mut()) else {
            return;
        };
        self.stats.bytes_in += data.len() as u64;
        conn.handle_input(now, data);
        self.touch(id);
        self.pump(now);
    }

    /// The transport of `id` ended (also in the middle of a stanza).
    pub fn handle_eof(&mut self, now: Instant, id: ConnId) {
        match self.conns.get_mut(&id) {
            None => return,
            Some(Entry {
                conn: Some(conn), ..
            }) => {
                conn.handle_eof(now);
                self.touch(id);
            }
            Some(_) => {
                let reason =
                    DownReason::ConnectFailed("the transport ended before it was up".into());
                self.end_entry(now, id, reason, vec![]);
            }
        }
        self.pump(now);
    }

    /// A deadline from [`poll_timeout`](Self::poll_timeout) passed. Safe to call at any
    /// time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.lifecycle == Lifecycle::Closed {
            return;
        }
        let due: Vec<ConnId> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|&(_, id)| id)
            .collect();
        for id in due {
            match self.conns.get_mut(&id) {
                None => {}
                Some(Entry {
                    conn: Some(conn), ..
                }) => {
                    conn.handle_timeout(now);
                    self.touch(id);
                }
                Some(e) if e.connect_deadline <= now => {
                    self.end_entry(now, id, DownReason::ConnectTimeout, vec![]);
                }
                Some(_) => {}
            }
        }
        self.expire_acks(now);
        self.expire_queued(now);
        if self.first_deadline.is_some_and(|d| now >= d) {
            let error = self
                .first_error
                .take()
                .unwrap_or(DownReason::ConnectTimeout);
            self.give_up(now, error, false);
        }
        self.pump(now);
    }

    // ---- commands ----

    /// Queues a message. It goes out as soon as a connection has window room, and its one
    /// [`ClientEvent::Outcome`] carries the returned ticket. Messages go out oldest first,
    /// after those of [`send_priority`](Self::send_priority) and after messages put back
    /// for a resend or retry.
    ///
    /// Refused, with the message given back, when the queue is full (back-pressure: wait for
    /// [`ClientEvent::QueueOpen`]), when a message with the same `message_id` is still
    /// pending, over the optional payload limit, and once [`close`](Self::close) was called.
    pub fn send(
        &mut self,
        now: Instant,
        message: impl Into<Box<Downstream>>,
    ) -> Result<MessageTicket, SendError> {
        self.enqueue(now, message.into(), Lane::Normal)
    }

    /// Queues a message in the priority lane: like [`send`](Self::send) (the same refusals,
    /// ticket and one outcome), but it goes out before every message `send` queued, so a
    /// reply need not wait behind a bulk backlog. Priority messages go out oldest first
    /// among themselves; messages put back for a resend (their connection ended) or a retry
    /// still go first, in their order, whatever their lane. The priority lane counts toward
    /// [`queued`](Self::queued) and [`ClientConfig::max_queue`], and is expired, drained at
    /// [`close`](Self::close) and given back as [`Outcome::Unsent`] like the rest.
    pub fn send_priority(
        &mut self,
        now: Instant,
        message: impl Into<Box<Downstream>>,
    ) -> Result<MessageTicket, SendError> {
        self.enqueue(now, message.into(), Lane::Priority)
    }

    /// Acks an upstream message or receipt handed over with a handle (manual-ack mode), on
    /// the connection it came on. Refused with [`AckError::ConnectionGone`] once that
    /// connection has ended: the server redelivers the message, and its new copy comes with
    /// a new handle.
    pub fn ack(&mut self, now: Instant, handle: &AckHandle) -> Result<(), AckError> {
        let id = handle.conn();
        let Some(conn) = self.conns.get_mut(&id).and_then(|e| e.conn.as_mut()) else {
            return Err(AckError::ConnectionGone);
        };
        conn.ack(now, handle)?;
        self.touch(id);
        for held in self.dedup.app_acked(handle.to(), handle.message_id()) {
            let hid = held.conn();
            if let Some(c) = self.conns.get_mut(&hid).and_then(|e| e.conn.as_mut())
                && c.ack(now, &held).is_ok()
            {
                self.touch(hid);
            }
        }
        self.pump(now);
        Ok(())
    }

    /// Starts a graceful close: `send` refuses new messages; the queue is still sent while
    /// connections live (and connections are still opened while there is something to
    /// send); once nothing waits to be sent, each connection is closed after the answers to
    /// its messages in flight and the application's acks of the upstream messages it holds
    /// handles for (manual mode: [`ack`](Self::ack) goes through until the deadline, and
    /// [`release`](Self::release) gives a handle up), or at `deadline`. Then every message never answered is given
    /// back as [`Outcome::Unsent`], and [`ClientEvent::Closed`] ends it all. Calling it
    /// again can only bring the deadline forward.
    pub fn close(&mut self, now: Instant, deadline: Instant) {
        self.lifecycle = match self.lifecycle {
            Lifecycle::Closed => return,
            Lifecycle::Closing { deadline: d } => Lifecycle::Closing {
                deadline: d.min(deadline),
            },
            Lifecycle::Running => Lifecycle::Closing { deadline },
        };
        self.pump(now);
    }

    // ---- internals: the pump ----

    fn emit(&mut self, event: ClientEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    fn touch(&mut self, id: ConnId) {
        if let Some(e) = self.conns.get_mut(&id)
            && !e.dirty
        {
            e.dirty = true;
            self.touched.push(id);
        }
    }

    fn has_work(&self) -> bool {
        !self.queue.is_empty() || !self.delayed.is_empty()
    }

    /// Whether slots may open connections (running, or closing with messages to send).
    fn may_open(&self) -> bool {
        match self.lifecycle {
            Lifecycle::Running => true,
            Lifecycle::Closing { .. } => self.has_work(),
            Lifecycle::Closed => false,
        }
    }

    /// Runs after every input and command: moves everything that can move.
    fn pump(&mut self, now: Instant) {
        if self.lifecycle == Lifecycle::Closed {
            return;
        }
        loop {
            while let Some(id) = self.touched.pop() {
                self.flush_conn(now, id);
            }
            let released = self.release_retries(now);
            self.dispatch(now);
            self.maintain(now);
            if self.touched.is_empty() && !released {
                break;
            }
        }
        let live = &self.live;
        self.ack_deadlines.trim(live.len(), |key, generation| {
            live.by_key(key).is_some_and(|m| {
                m.generation == generation && matches!(m.state, MsgState::InFlight(_))
            })
        });
        self.queue_deadlines.trim(live.len(), |key, ticket| {
            live.by_key(key).is_some_and(|m| m.ticket.0 == ticket)
        });
        if self.queue_was_full
            && self.lifecycle == Lifecycle::Running
            && self.queued() < self.config.max_queue
        {
            self.queue_was_full = false;
            self.emit(ClientEvent::QueueOpen);
        }
    }

    /// Takes a connection's bytes and events until it has none.
    fn flush_conn(&mut self, now: Instant, id: ConnId) {
        loop {
            let Some(entry) = self.conns.get_mut(&id) else {
                return;
            };
            entry.dirty = false;
            let Some(conn) = entry.conn.as_mut() else {
                return;
            };
            if let Some(bytes) = conn.poll_transmit() {
                self.stats.bytes_out += bytes.len() as u64;
                self.outputs.push_back(Output::Transmit(id, bytes));
            }
            let mut events = std::mem::take(&mut self.scratch);
            while let Some(ev) = conn.poll_event() {
                events.push(ev);
            }
            if events.is_empty() {
                self.scratch = events;
                self.refresh_timer(id);
                return;
            }
            for ev in events.drain(..) {
                self.on_conn_event(now, id, ev);
            }
            self.scratch = events;
        }
    }

    fn on_conn_event(&mut self, now: Instant, id: ConnId, ev: ConnectionEvent) {
        if matches!(
            ev,
            ConnectionEvent::Acked { .. }
                | ConnectionEvent::Nacked { .. }
                | ConnectionEvent::StanzaError { .. }
        ) && let Some(e) = self.conns.get_mut(&id)
        {
            e.answers += 1;
        }
        match ev {
            ConnectionEvent::Connected { jid } => {
                if let Some(e) = self.conns.get_mut(&id) {
                    e.up_since = Some(now);
                    if e.counted_connecting {
                        e.counted_connecting = false;
                        self.connecting = self.connecting.saturating_sub(1);
                    }
                    if !e.told_to_close
                        && e.conn
                            .as_ref()
                            .is_some_and(|c| c.state() == State::Connected)
                    {
                        self.sendable.push(id);
                    }
                }
                self.stats.connections_opened += 1;
                self.first_deadline = None;
                self.first_error = None;
                self.emit(ClientEvent::ConnectionUp { id, jid });
            }
            ConnectionEvent::Acked {
                message,
                canonical_registration_id,
            } => self.answered(
                id,
                message,
                Outcome::Acked {
                    canonical_registration_id,
                },
            ),
            ConnectionEvent::Nacked { message, nack } => {
                self.count_nack(&nack.error);
                self.on_nack(now, id, message, nack);
            }
            ConnectionEvent::StanzaError { message, error } => {
                self.answered(id, message, Outcome::Rejected { error });
            }
            ConnectionEvent::Returned { message } => {
                self.count_nack(&NackCode::ConnectionDraining);
                self.stats.returned += 1;
                if let Some(MsgState::Expired(c)) =
                    self.live.get(message.message_id()).map(|m| m.state)
                {
                    self.live.remove(message.message_id());
                    self.late_answer(c, message.message_id().clone());
                } else {
                    self.take_back(now, vec![message]);
                }
            }
            ConnectionEvent::Upstream { message, ack } => {
                self.stats.upstream_received += 1;
                self.upstream(now, id, Held::Upstream(message), ack);
            }
            ConnectionEvent::Receipt { receipt, ack } => {
                self.stats.receipts_received += 1;
                self.upstream(now, id, Held::Receipt(receipt), ack);
            }
            ConnectionEvent::Draining => self.on_draining(now, id),
            ConnectionEvent::LateAnswer { message_id } => {
                if let Some(Meta {
                    state: MsgState::Expired(c),
                    ..
                }) = self.live.get(&message_id)
                    && *c == id
                {
                    self.live.remove(&message_id);
                }
                self.late_answer(id, message_id);
            }
            ConnectionEvent::WindowOpen => {}
            ConnectionEvent::Unrecognized(message) => {
                self.emit(ClientEvent::Unrecognized { id, message });
            }
            ConnectionEvent::Anomaly(anomaly) => self.emit(ClientEvent::Anomaly { id, anomaly }),
            ConnectionEvent::Closed { reason, unanswered } => {
                self.end_entry(now, id, DownReason::Closed(reason), unanswered);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_send() {
        fn is_send<T: Send>() {}
        is_send::<Client>();
        is_send::<Output>();
    }
}
