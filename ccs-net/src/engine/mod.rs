//! [`Engine`]: everything an adapter's loop does that is not IO. It owns the sans-IO
//! [`ccs_proto::Client`], takes the application's commands and the connections' bytes from
//! bounded channels, routes outcomes to waiting senders, hands upstream messages to the
//! stream, and tells the adapter what to do with sockets ([`Action`]).
//!
//! # The adapter's loop
//!
//! ```text
//! loop {
//!     let listener = engine.listen();          // before the turn: no wake-up is missed
//!     let wait = engine.turn(Instant::now());
//!     while let Some(action) = engine.poll_action() { /* dial, or retire a socket */ }
//!     match wait {
//!         Wait::Done => break,
//!         Wait::Again => continue,                // (yield first if connection tasks share this executor)
//!         Wait::Until(deadline) => { /* wait for the listener, the deadline, or a retired socket's end */ }
//!     }
//! }
//! engine.finish();
//! ```
//!
//! # Channels, and why nothing deadlocks
//!
//! | channel | from → to | bound |
//! |---|---|---|
//! | submit | `send`/`try_send`/`enqueue_batch` → engine | `max_queue` messages (a batch's stretch of messages is one item) |
//! | control | acks, `close`, `stats` → engine | 64 commands |
//! | net | connections → engine | 64 reads (4 MiB at the default read size) |
//! | outbox | engine → one connection's writer | [`Config::write_limit`](crate::Config::write_limit) bytes |
//! | upstream | engine → [`UpstreamStream`] | [`Config::upstream_capacity`](crate::Config::upstream_capacity) |
//! | taken | stream → engine (auto acks) | as many as the upstream room |
//! | events | engine → `Client::events` | [`Config::event_capacity`](crate::Config::event_capacity), oldest dropped |
//!
//! **The engine never waits.** Everything it sends goes into a queue that cannot be full for
//! it or that it may skip: outboxes refuse instead of waiting (a refusal means the peer no
//! longer reads: the transport counts as failed); the upstream channel is sent to only while
//! it has room (otherwise the item is left un-acked for the server to redeliver); events go
//! to a broadcast channel that drops the oldest; replies go to one-shot channels. Everyone
//! else may wait for the engine, and the engine always comes back to drain its inputs, a
//! bounded batch of each per turn. So every wait ends.
//!
//! # Back-pressure comes from the core
//!
//! `max_queue` limits the messages not yet on the wire, as the core counts them
//! ([`ccs_proto::Client::queued`]). The handles keep one shared count of those: a sender
//! adds its message before putting it in the submit channel (`send` waits while the count
//! is at the limit, `try_send` refuses), and after every turn the engine brings the count in
//! line with the core's own: messages that went on the wire (or were refused, or expired)
//! free their place, messages the core put back in its queue (their connection ended) take
//! one again. Should the core still refuse a message for a full queue, the engine holds it
//! and stops taking from the submit channel until the core says
//! [`ClientEvent::QueueOpen`](ccs_proto::client::ClientEvent::QueueOpen).

mod metrics;
mod router;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ccs_proto::client::{CloseReport, MessageTicket, Output, SendErrorKind};
use ccs_proto::connection::ConnId;
use ccs_proto::message::Downstream;
use futures_channel::oneshot;
use tracing::{debug, info, warn};

use crate::UpstreamStream;
use crate::control::{Command, Tokens};
use crate::handle::{Handle, HandleShared, Lane, Queued, Reply, Submit};
use crate::link::{DialInfo, Inbox, Link, Listener, Net, Orphans, Outbox, Wake};
use crate::upstream::{Delivery, StreamShared, Taken};
use crate::{Config, ConnectError, Event, Report, SendError, Stats};

use self::metrics::Meter;
use router::Unacked;

/// Items taken from each input per turn, so that no input starves the others.
const BATCH: usize = 64;

/// How long the client gets to finish when every handle was dropped without `close`.
const DROP_CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// What the adapter does for the engine, from [`Engine::poll_action`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Action {
    /// Start a connection: dial (TCP, then TLS), report through the [`Link`], then move
    /// bytes both ways until the link's outbox says close or the transport ends.
    Dial(Link),
    /// The core gave this connection up. Let its task end by itself within `grace` (it is
    /// writing what was queued, its stream end and TLS `close_notify`), then stop it and
    /// close its socket; then call [`Engine::socket_closed`].
    Retire {
        /// Which.
        id: ConnId,
        /// How long it may take.
        grace: Duration,
    },
}

/// What the adapter's loop does after a turn, from [`Engine::turn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Inputs are still waiting: turn again at once.
    Again,
    /// Wait for the listener taken before the turn, a retired socket's end, or this
    /// deadline (`None`: no deadline).
    Until(Option<Instant>),
    /// The client has closed and every socket is closed: call [`Engine::finish`].
    Done,
}

/// Wakes an adapter's loop, from [`Engine::nudge`].
#[derive(Debug, Clone)]
pub struct Nudge(Wake);

impl Nudge {
    /// Wakes the loop's listener. As for the engine's own inputs, the loop takes its
    /// listener before it looks at what the nudge is about: a nudge before that is the
    /// next turn's.
    pub fn nudge(&self) {
        self.0.notify();
    }
}

/// How the first connection went: awaited by an adapter's `connect`.
#[derive(Debug)]
pub struct FirstConnect(oneshot::Receiver<Result<(), ConnectError>>);

impl FirstConnect {
    /// Waits for the core's verdict on the first connection; on failure the client is
    /// closed (at once) before the error is returned.
    pub async fn wait(self, handle: &Handle) -> Result<(), ConnectError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                handle.close(Duration::ZERO).await;
                Err(e)
            }
            Err(_) => Err(ConnectError::Connect("the client stopped".into())),
        }
    }
}

/// The application's side of the upstream flow, as the engine sees it.
struct UpstreamSide {
    tx: async_channel::Sender<Delivery>,
    capacity: usize,
    shared: Arc<StreamShared>,
    tokens: Arc<Tokens>,
    /// The application asked for auto-ack mode (the core runs in manual mode regardless).
    auto: bool,
}

struct Conn {
    outbox: Arc<Outbox>,
    /// TCP and TLS are up (the core was told).
    connected: bool,
    /// Its writer fell a whole write limit behind: the core was told the transport failed.
    broken: bool,
}

/// The IO-free heart of every adapter; see the module docs.
pub struct Engine {
    core: ccs_proto::Client,
    wake: Wake,
    submit_rx: async_channel::Receiver<Submit>,
    /// Messages the core refused for a full queue, oldest first, until it has room.
    parked: VecDeque<Queued>,
    /// Messages counted in the handles' queue load that the engine holds (in the core's
    /// queue or parked), as of the last reconciliation.
    accounted: usize,
    /// The core said its queue has room again.
    queue_open: bool,
    /// `false` once every `Client` handle is gone.
    handles_open: bool,
    handle_shared: Arc<HandleShared>,
    control_rx: async_channel::Receiver<Command>,
    /// For the tokens handed out (keeps the control channel open while the engine runs).
    control_tx: Inbox<Command>,
    taken_rx: async_channel::Receiver<Taken>,
    net_rx: async_channel::Receiver<Net>,
    net_tx: Inbox<Net>,
    /// Links dropped without reporting their connection's end.
    orphans: Arc<Orphans>,
    upstream: UpstreamSide,
    events: async_broadcast::Sender<Event>,
    dial: Arc<DialInfo>,
    write_limit: usize,
    disconnect_grace: Duration,
    first: Option<oneshot::Sender<Result<(), ConnectError>>>,
    /// Connections the core has asked for and not yet given up.
    conns: HashMap<ConnId, Conn>,
    /// Connections given up whose socket the adapter has not yet reported closed.
    retiring: usize,
    actions: VecDeque<Action>,
    waiters: HashMap<MessageTicket, Reply, TicketHasher>,
    close_replies: Vec<oneshot::Sender<Report>>,
    /// The core's report, once it has closed.
    closed: Option<CloseReport>,
    unacked: Unacked,
    stats: Stats,
    /// What the `metrics` feature records (nothing without it).
    meter: Meter,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("conns", &self.conns.len())
            .field("retiring", &self.retiring)
            .field("waiters", &self.waiters.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Whatever is still in an input channel would otherwise wait there for as long as a
        // sender lives: every reply channel in it is dropped now, so every waiter wakes up
        // (a message gets its `Closed` error with the message back).
        self.close_inputs();
        while let Ok(s) = self.submit_rx.try_recv() {
            for q in s.into_queued() {
                let _ = q.reply.send(Err(SendError::closed(Some(q.message))));
            }
        }
        for q in self.parked.drain(..) {
            let _ = q.reply.send(Err(SendError::closed(Some(q.message))));
        }
        while self.control_rx.try_recv().is_ok() {}
        while self.taken_rx.try_recv().is_ok() {}
        while self.net_rx.try_recv().is_ok() {}
        self.upstream.tx.close();
    }
}

impl Engine {
    /// Builds the engine and the application's handle from `config`. The adapter runs the
    /// engine's loop (see the module docs) and awaits [`FirstConnect::wait`] before giving
    /// the handle to the application.
    pub fn new(config: Config, now: Instant) -> Result<(Self, Handle, FirstConnect), ConnectError> {
        let tls = match &config.tls_config {
            Some(c) => Arc::clone(c),
            None => crate::tls::client_config(&config.tls).map_err(ConnectError::Config)?,
        };
        let server_name =
            crate::tls::server_name(&config.endpoint, &config.tls).map_err(ConnectError::Config)?;
        let auto = config.auto_acks();
        let mut core_config = config.client;
        // The engine acks on hand-over in auto mode (see the crate docs): the core only
        // ever acks when told.
        core_config.connection.ack_mode = ccs_proto::AckMode::Manual;
        let max_queue = core_config.max_queue;
        let core = ccs_proto::Client::new(core_config, now)
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        let wake = Wake::default();
        let (submit_tx, submit_rx) = async_channel::bounded(max_queue.max(1));
        let (control_tx, control_rx) = async_channel::bounded(crate::control::CONTROL_CAPACITY);
        let (net_tx, net_rx) = async_channel::bounded(crate::link::NET_CAPACITY);
        let capacity = config.upstream_capacity.max(1);
        let (up_tx, up_rx) = async_channel::bounded(capacity);
        let (taken_tx, taken_rx) = async_channel::bounded(capacity);
        let stream = Arc::new(StreamShared::default());
        let (mut events, events_rx) = async_broadcast::broadcast(config.event_capacity.max(1));
        events.set_overflow(true);
        events.set_await_active(false);
        let (first_tx, first_rx) = oneshot::channel();
        let handle_shared = Arc::new(HandleShared::default());
        let control_tx = Inbox::new(control_tx, wake.clone());
        let upstream = UpstreamStream::new(
            up_rx,
            Inbox::new(taken_tx, wake.clone()),
            Arc::clone(&stream),
        );
        let handle = Handle::new(
            Inbox::new(submit_tx, wake.clone()),
            control_tx.clone(),
            Arc::clone(&handle_shared),
            upstream,
            Arc::clone(&stream),
            events.clone(),
            events_rx.deactivate(),
            max_queue,
        );
        let engine = Self {
            core,
            submit_rx,
            parked: VecDeque::new(),
            accounted: 0,
            queue_open: false,
            handles_open: true,
            handle_shared,
            control_rx,
            control_tx,
            taken_rx,
            net_rx,
            net_tx: Inbox::new(net_tx, wake.clone()),
            orphans: Orphans::new(wake.clone()),
            upstream: UpstreamSide {
                tx: up_tx,
                capacity,
                shared: stream,
                tokens: Tokens::new(wake.clone()),
                auto,
            },
            events,
            dial: Arc::new(DialInfo {
                endpoint: config.endpoint,
                server_name,
                tls,
                read_buffer: config.read_buffer.max(4096),
            }),
            write_limit: config.write_limit.max(64 * 1024),
            disconnect_grace: config.disconnect_grace,
            first: Some(first_tx),
            conns: HashMap::new(),
            retiring: 0,
            actions: VecDeque::new(),
            waiters: HashMap::default(),
            close_replies: Vec::new(),
            closed: None,
            unacked: Unacked::default(),
            stats: Stats::default(),
            meter: Meter::new(),
            wake,
        };
        Ok((engine, handle, FirstConnect(first_rx)))
    }

    /// Something that wakes the loop's listener from another thread or task: for an
    /// adapter's own inputs, such as a retired connection's thread ending.
    pub fn nudge(&self) -> Nudge {
        Nudge(self.wake.clone())
    }

    /// A listener woken by the next input. Take it before [`Engine::turn`]: it resolves once
    /// an input has come since it was taken (inputs that came before are the turn's).
    pub fn listen(&self) -> Listener {
        self.wake.listen()
    }

    /// Takes what is ready from every input (a bounded batch of each), lets the core act on
    /// it and on the time, and queues the resulting [`Action`]s.
    pub fn turn(&mut self, now: Instant) -> Wait {
        let mut again = false;
        let net_more = self.drain(now, |e| e.net_rx.try_recv().ok(), Self::on_net);
        if !net_more {
            // After every byte such a link did send.
            for id in self.orphans.take() {
                self.on_orphan(now, id);
            }
        }
        again |= net_more;
        again |= self.drain(now, |e| e.taken_rx.try_recv().ok(), Self::on_taken);
        again |= self.drain(now, |e| e.control_rx.try_recv().ok(), Self::on_command);
        again |= self.take_submits(now);
        for handle in self.upstream.tokens.take_released() {
            self.core.release(now, &handle);
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        self.flush_outputs(now);
        self.reconcile_load();
        self.meter.turned(&self.core);
        if self.queue_open && !self.parked.is_empty() {
            again = true;
        }
        if self.core.is_closed() && self.conns.is_empty() && self.retiring == 0 {
            Wait::Done
        } else if again {
            Wait::Again
        } else {
            Wait::Until(self.core.poll_timeout())
        }
    }

    /// Brings the handles' count of queued messages in line with the core's: messages that
    /// left the queue (on the wire, refused, expired) free their place; messages the core put
    /// back (a connection ended) take one again.
    fn reconcile_load(&mut self) {
        let now = self.core.queued() + self.parked.len();
        let shared = &self.handle_shared;
        if now < self.accounted {
            shared
                .load
                .fetch_sub(self.accounted - now, Ordering::AcqRel);
            shared.room.notify(usize::MAX);
        } else if now > self.accounted {
            shared
                .load
                .fetch_add(now - self.accounted, Ordering::AcqRel);
        }
        self.accounted = now;
    }

    /// The next thing to do for the engine.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A retired connection's socket is closed and its task has ended; `graceful` if it
    /// ended by itself (everything written, the stream end and `close_notify` sent, the
    /// peer's end seen) within the grace.
    pub fn socket_closed(&mut self, id: ConnId, graceful: bool) {
        self.retiring = self.retiring.saturating_sub(1);
        debug!(conn = %id, graceful, "socket closed");
        let _ = self
            .events
            .try_broadcast(Event::SocketClosed { id, graceful });
    }

    /// The client stops: every waiting handle is told, and the stream ends.
    pub fn finish(mut self) {
        // No send into the engine succeeds from here on; a close asked for meanwhile gets
        // the report too (what else was queued is answered when the engine is dropped).
        self.close_inputs();
        while let Ok(cmd) = self.control_rx.try_recv() {
            if let Command::Close { reply, .. } = cmd {
                self.close_replies.push(reply);
            }
        }
        let core = self.closed.take().unwrap_or_default();
        let report = Report {
            unsent: core.unsent.into_iter().map(|(_, id)| id).collect(),
            deadline_passed: core.deadline_passed,
            unacked_upstream: self.unacked.list(),
        };
        info!(
            unsent = report.unsent.len(),
            unacked_upstream = report.unacked_upstream.len(),
            "client closed"
        );
        self.upstream.shared.finished.store(true, Ordering::Release);
        self.upstream.tx.close();
        let _ = self.events.try_broadcast(Event::Closed);
        // Receivers get what is buffered, then the end (`RecvError::Closed`).
        self.events.close();
        for r in self.close_replies.drain(..) {
            let _ = r.send(report.clone());
        }
        debug!("ccs client engine stopped");
    }

    /// Closes every input channel. The engine holds no sender of them, but others may
    /// (tokens, links, handles), and a closed channel still holds what was sent before: it
    /// is drained when the engine is dropped.
    fn close_inputs(&self) {
        self.submit_rx.close();
        self.control_rx.close();
        self.taken_rx.close();
        self.net_rx.close();
        self.handle_shared.closing.store(true, Ordering::Release);
        self.handle_shared.room.notify(usize::MAX);
    }

    // ---- inputs ------------------------------------------------------------------------

    /// Up to [`BATCH`] items from one input; whether the batch was full (more may wait).
    fn drain<T>(
        &mut self,
        now: Instant,
        mut next: impl FnMut(&mut Self) -> Option<T>,
        mut on: impl FnMut(&mut Self, Instant, T),
    ) -> bool {
        for _ in 0..BATCH {
            match next(self) {
                Some(item) => on(self, now, item),
                None => return false,
            }
        }
        true
    }

    fn take_submits(&mut self, now: Instant) -> bool {
        if self.queue_open {
            self.queue_open = false;
            while let Some(q) = self.parked.pop_front() {
                if let Some(q) = self.submit(now, q.message, q.reply, q.lane) {
                    self.parked.push_front(q);
                    break;
                }
            }
        }
        if !self.handles_open {
            return false;
        }
        for _ in 0..BATCH {
            if !self.parked.is_empty() {
                return false;
            }
            match self.submit_rx.try_recv() {
                Ok(s) => self.take_submit(now, s),
                Err(async_channel::TryRecvError::Empty) => return false,
                Err(async_channel::TryRecvError::Closed) => {
                    self.on_handles_gone(now);
                    return false;
                }
            }
        }
        true
    }

    /// Gives the messages of one item of the submit channel to the core, in order; once the
    /// core refuses one for a full queue, it and the rest are parked.
    fn take_submit(&mut self, now: Instant, s: Submit) {
        self.accounted += s.len();
        for q in s.into_queued() {
            self.submit_or_park(now, q);
        }
    }

    /// Gives a message to the core, or parks it behind those parked already.
    fn submit_or_park(&mut self, now: Instant, q: Queued) {
        if self.parked.is_empty() {
            let refused = self.submit(now, q.message, q.reply, q.lane);
            self.parked.extend(refused);
        } else {
            self.parked.push_back(q);
        }
    }

    /// Gives a message to the core; gives it back if the core's queue is full (it is then
    /// parked, see the module docs).
    fn submit(
        &mut self,
        now: Instant,
        message: Box<Downstream>,
        reply: Reply,
        lane: Lane,
    ) -> Option<Queued> {
        let result = match lane {
            Lane::Normal => self.core.send(now, message),
            Lane::Priority => self.core.send_priority(now, message),
        };
        match result {
            Ok(ticket) => {
                self.meter.accepted(ticket, now);
                self.waiters.insert(ticket, reply);
                None
            }
            Err(e) if matches!(e.kind, SendErrorKind::QueueFull { .. }) => Some(Queued {
                message: e.message,
                reply,
                lane,
            }),
            Err(e) => {
                let _ = reply.send(Err(SendError::from_core(e)));
                None
            }
        }
    }

    fn on_handles_gone(&mut self, now: Instant) {
        // Every handle is gone: finish what was queued, then stop.
        self.handles_open = false;
        self.request_close(now, DROP_CLOSE_DEADLINE, None);
    }

    fn on_net(&mut self, now: Instant, net: Net) {
        match net {
            Net::Connected(id) => {
                // A connection given up meanwhile is being closed already.
                if let Some(c) = self.conns.get_mut(&id) {
                    c.connected = true;
                    self.core.handle_connected(now, id);
                }
            }
            Net::ConnectFailed(id, reason) => {
                if self.conns.remove(&id).is_some() {
                    info!(conn = %id, reason = %reason.message, permanent = reason.permanent, "connection attempt failed");
                    self.retire(id, Duration::ZERO);
                    self.core.handle_connect_failed(now, id, reason);
                }
            }
            Net::Data(id, bytes) => {
                if self.conns.contains_key(&id) {
                    self.core.handle_input(now, id, &bytes);
                }
            }
            Net::Eof(id) => {
                if self.conns.contains_key(&id) {
                    self.core.handle_eof(now, id);
                }
            }
        }
    }

    /// A link was dropped without saying how its connection ended (its task panicked or was
    /// cancelled): a dial that failed, or a transport that ended.
    fn on_orphan(&mut self, now: Instant, id: ConnId) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        if c.connected {
            warn!(conn = %id, "the connection's task ended without a word: connection dropped");
            self.core.handle_eof(now, id);
        } else {
            self.on_net(
                now,
                Net::ConnectFailed(
                    id,
                    ccs_proto::client::ConnectFailure::transient(
                        "the connection's task ended before the connection was up",
                    ),
                ),
            );
        }
    }

    fn on_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Ack {
                handle,
                guard,
                reply,
            } => {
                let result = self.ack(now, &handle);
                guard.used();
                let _ = reply.send(result);
            }
            Command::Close { deadline, reply } => {
                // Messages handed to `send`/`try_send` before `close` was called are in the
                // submit channel now: they were accepted, so they go to the core first.
                while self.handles_open
                    && let Ok(s) = self.submit_rx.try_recv()
                {
                    self.take_submit(now, s);
                }
                self.request_close(now, deadline, Some(reply));
                // The core takes nothing more: what waited for queue room is given back.
                for q in self.parked.drain(..) {
                    let e = SendError {
                        kind: SendErrorKind::Closing,
                        message: Some(q.message),
                    };
                    let _ = q.reply.send(Err(e));
                }
            }
            Command::Stats { reply } => {
                let mut stats = self.stats.clone();
                stats.core = self.core.stats().clone();
                stats.sockets = self.conns.len() + self.retiring;
                let _ = reply.send(stats);
            }
        }
    }

    /// An item taken from the stream in auto-ack mode: ack it now.
    fn on_taken(&mut self, now: Instant, taken: Taken) {
        self.upstream
            .shared
            .outstanding
            .fetch_sub(1, Ordering::AcqRel);
        if let Err(e) = self.ack(now, &taken.handle) {
            // Its connection ended first: the server redelivers it (and the report lists it).
            debug!(message_id = %taken.handle.message_id(), error = %e, "ack on hand-over refused");
        }
        taken.guard.used();
    }

    /// A close asked for (by `close`, or by the last handle going away): passed to the core
    /// at once. The core keeps each connection open until the acks the application owes on
    /// it have come (or their handles came back unused), or the deadline passes.
    fn request_close(
        &mut self,
        now: Instant,
        within: Duration,
        reply: Option<oneshot::Sender<Report>>,
    ) {
        self.handle_shared.closing.store(true, Ordering::Release);
        // Senders waiting for room are refused now.
        self.handle_shared.room.notify(usize::MAX);
        self.close_replies.extend(reply);
        let deadline = now.checked_add(within).unwrap_or(now + DROP_CLOSE_DEADLINE);
        // A second call can only bring the deadline forward (the core's rule).
        self.core.close(now, deadline);
    }

    // ---- outputs -----------------------------------------------------------------------

    fn flush_outputs(&mut self, now: Instant) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Connect(id) => self.open(id),
                Output::Transmit(id, bytes) => self.transmit(now, id, &bytes),
                Output::Disconnect(id) => {
                    if let Some(c) = self.conns.remove(&id) {
                        // A socket that is up gets to write what is queued and close cleanly;
                        // an attempt still dialling is stopped at once.
                        let grace = if c.connected {
                            c.outbox.close();
                            self.disconnect_grace
                        } else {
                            Duration::ZERO
                        };
                        self.retire(id, grace);
                    }
                }
                Output::Event(ev) => self.on_event(now, ev),
                _ => {}
            }
        }
    }

    fn open(&mut self, id: ConnId) {
        let outbox = Outbox::new(self.write_limit);
        let link = Link::new(
            id,
            self.net_tx.clone(),
            Arc::clone(&outbox),
            Arc::clone(&self.dial),
            Arc::clone(&self.orphans),
        );
        self.conns.insert(
            id,
            Conn {
                outbox,
                connected: false,
                broken: false,
            },
        );
        self.actions.push_back(Action::Dial(link));
    }

    fn transmit(&mut self, now: Instant, id: ConnId, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.broken || c.outbox.push(bytes) {
            return;
        }
        // The writer is a whole write limit behind: the peer is not reading. The transport
        // cannot carry the stream any more; to the core that is a failed transport.
        c.broken = true;
        warn!(conn = %id, limit = self.write_limit, "the server stopped reading: connection dropped");
        self.core.handle_eof(now, id);
    }

    fn retire(&mut self, id: ConnId, grace: Duration) {
        self.retiring += 1;
        self.actions.push_back(Action::Retire { id, grace });
    }
}

/// The waiters' table hasher: foldhash, as the core's tables keyed by message id. Tickets
/// are a counter the core assigns (nobody picks them to collide), and SipHash, the default,
/// showed in profiles of the per-message path.
type TicketHasher = foldhash::fast::RandomState;
