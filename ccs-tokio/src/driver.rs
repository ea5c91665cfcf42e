//! The one task that owns the sans-IO [`ccs_proto::Client`] and moves bytes for it.
//!
//! It makes no protocol decision: it feeds the core what happened (bytes, EOF, connect
//! results, the time, the application's commands) and carries out what the core asks (dial,
//! write, close), then hands events to the application. Each connection is a task of its
//! own ([`crate::transport`]).
//!
//! # Channels, and why nothing deadlocks
//!
//! Every channel is bounded:
//!
//! | channel | from → to | bound |
//! |---|---|---|
//! | submit | `send`/`try_send` → driver | `max_queue` messages |
//! | control | acks, `close`, `stats` → driver | [`CONTROL_CAPACITY`](crate::control::CONTROL_CAPACITY) commands |
//! | net | connection tasks → driver | [`NET_CAPACITY`](crate::transport::NET_CAPACITY) |
//! | outbox | driver → one connection's writer | [`Config::write_limit`](crate::Config::write_limit) bytes |
//! | upstream | driver → [`UpstreamStream`](crate::UpstreamStream) | [`Config::upstream_capacity`](crate::Config::upstream_capacity) |
//! | taken | stream → driver (auto acks) | as many as the upstream room |
//! | events | driver → [`Client::events`](crate::Client::events) | [`Config::event_capacity`](crate::Config::event_capacity), oldest dropped |
//!
//! The rule that keeps this free of deadlocks: **the driver never waits to send**. It only
//! waits in one place, the `select!` of [`Driver::run`], for any of its inputs; everything it
//! sends goes into a queue that cannot be full for it or that it may skip:
//!
//! - outboxes refuse instead of waiting; a refusal means the writer is stuck (a peer that no
//!   longer reads), and the driver reports that transport as failed to the core;
//! - the upstream channel is sent to with `try_send`; when it is full the item is neither
//!   handed over nor acked (the server redelivers it), so a slow reader slows nobody;
//! - events go to a broadcast channel, which drops the oldest for slow receivers;
//! - replies go to oneshots.
//!
//! Everyone else may wait for the driver (a `send` for room in the submit channel, a reader
//! for room in the net channel), and the driver always comes back to drain its inputs, a
//! bounded batch of each per turn. So every wait ends.
//!
//! The submit channel is never full for a sender that holds a queue permit: there are
//! `max_queue` permits and as many slots, and a permit travels with its message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ccs_proto::client::{ClientEvent, CloseReport, MessageTicket, Output};
use ccs_proto::connection::{AckError, AckHandle, ConnId};
use ccs_proto::message::{Downstream, MessageId};
use rustls::pki_types::ServerName;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::control::{Command, Tokens};
use crate::transport::{ConnTask, Dial, Net, Outbox};
use crate::upstream::{Delivery, StreamShared, Taken};
use crate::{AckToken, Event, Report, Stats, UnackedUpstream, UpstreamItem};

/// Items taken from each input per turn of the loop, so that no input starves the others.
const BATCH: usize = 64;

/// How long the client gets to finish when every handle was dropped without `close`.
const DROP_CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// Upstream messages and receipts remembered for [`Report::unacked_upstream`]: the oldest
/// are forgotten beyond this.
const UNACKED_MEMORY: usize = 10_000;

/// A message to send (the submit channel).
pub(crate) struct Submit {
    pub(crate) message: Downstream,
    pub(crate) reply: oneshot::Sender<crate::Answer>,
    pub(crate) permit: OwnedSemaphorePermit,
}

/// How the first connection went, for `Client::connect`.
pub(crate) type FirstResult = Result<(), crate::ConnectError>;

/// The application's side of the upstream flow.
pub(crate) struct UpstreamSide {
    pub(crate) tx: mpsc::Sender<Delivery>,
    /// One permit per item in the upstream channel or taken and not yet acked (auto mode).
    pub(crate) room: Arc<Semaphore>,
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) tokens: Arc<Tokens>,
    /// The application asked for auto-ack mode (the core runs in manual mode regardless).
    pub(crate) auto: bool,
}

/// Everything the driver needs; see [`Driver::new`].
pub(crate) struct Parts {
    pub(crate) core: ccs_proto::Client,
    pub(crate) submit_rx: mpsc::Receiver<Submit>,
    pub(crate) control_rx: mpsc::Receiver<Command>,
    pub(crate) control_tx: mpsc::Sender<Command>,
    pub(crate) taken_rx: mpsc::Receiver<Taken>,
    pub(crate) upstream: UpstreamSide,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) endpoint: crate::Endpoint,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) tls: TlsConnector,
    pub(crate) read_buffer: usize,
    pub(crate) write_limit: usize,
    pub(crate) disconnect_grace: Duration,
    pub(crate) first: oneshot::Sender<FirstResult>,
}

pub(crate) struct Driver {
    core: ccs_proto::Client,
    submit_rx: mpsc::Receiver<Submit>,
    /// `false` once every `Client` handle is gone.
    handles_open: bool,
    control_rx: mpsc::Receiver<Command>,
    /// For the tokens handed out (keeps the control channel open while the driver runs).
    control_tx: mpsc::Sender<Command>,
    taken_rx: mpsc::Receiver<Taken>,
    net_rx: mpsc::Receiver<Net>,
    net_tx: mpsc::Sender<Net>,
    upstream: UpstreamSide,
    events: broadcast::Sender<Event>,
    endpoint: crate::Endpoint,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    read_buffer: usize,
    write_limit: usize,
    disconnect_grace: Duration,
    first: Option<oneshot::Sender<FirstResult>>,
    /// Connections the core has asked for and not yet given up.
    conns: HashMap<ConnId, Conn>,
    /// Connections given up, until their task has ended: `(id, graceful)`.
    closing: JoinSet<(ConnId, bool)>,
    waiters: HashMap<MessageTicket, Waiter>,
    close_replies: Vec<oneshot::Sender<Report>>,
    /// The core's report, once it has closed.
    closed: Option<CloseReport>,
    unacked: Unacked,
    stats: Stats,
}

struct Conn {
    outbox: Arc<Outbox>,
    task: ConnTask,
    /// TCP and TLS are up (the core was told).
    connected: bool,
    /// Its writer fell [`Config::write_limit`](crate::Config::write_limit) behind: the core
    /// was told the transport failed.
    broken: bool,
}

struct Waiter {
    reply: oneshot::Sender<crate::Answer>,
    _permit: OwnedSemaphorePermit,
}

impl Driver {
    pub(crate) fn new(p: Parts) -> Self {
        let (net_tx, net_rx) = mpsc::channel(crate::transport::NET_CAPACITY);
        Self {
            core: p.core,
            submit_rx: p.submit_rx,
            handles_open: true,
            control_rx: p.control_rx,
            control_tx: p.control_tx,
            taken_rx: p.taken_rx,
            net_rx,
            net_tx,
            upstream: p.upstream,
            events: p.events,
            endpoint: p.endpoint,
            server_name: p.server_name,
            tls: p.tls,
            read_buffer: p.read_buffer,
            write_limit: p.write_limit,
            disconnect_grace: p.disconnect_grace,
            first: Some(p.first),
            conns: HashMap::new(),
            closing: JoinSet::new(),
            waiters: HashMap::new(),
            close_replies: Vec::new(),
            closed: None,
            unacked: Unacked::default(),
            stats: Stats::default(),
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            self.release_unused(Instant::now());
            self.flush_outputs();
            if self.core.is_closed() && self.conns.is_empty() && self.closing.is_empty() {
                break;
            }
            let wake = self.core.poll_timeout();
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let tokens = Arc::clone(&self.upstream.tokens);
            tokio::select! {
                biased;
                Some(done) = self.closing.join_next(), if !self.closing.is_empty() => {
                    self.on_socket_closed(done);
                }
                // The driver holds a sender: never closed.
                Some(net) = self.net_rx.recv() => self.on_net(net),
                // Closed only with the stream; then nothing more comes.
                Some(taken) = self.taken_rx.recv() => self.on_taken(taken),
                // The driver holds a sender: never closed.
                Some(cmd) = self.control_rx.recv() => self.on_command(cmd),
                submit = self.submit_rx.recv(), if self.handles_open => match submit {
                    Some(s) => self.on_submit(s),
                    None => self.on_handles_gone(),
                },
                () = tokens.changed() => {}
                () = sleep => {}
            }
            self.drain_ready();
            let now = Instant::now();
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now);
            }
        }
        self.finish();
    }

    /// Takes what else is ready, a bounded batch from each input.
    fn drain_ready(&mut self) {
        for _ in 0..BATCH {
            match self.net_rx.try_recv() {
                Ok(net) => self.on_net(net),
                Err(_) => break,
            }
        }
        for _ in 0..BATCH {
            match self.taken_rx.try_recv() {
                Ok(taken) => self.on_taken(taken),
                Err(_) => break,
            }
        }
        for _ in 0..BATCH {
            match self.control_rx.try_recv() {
                Ok(cmd) => self.on_command(cmd),
                Err(_) => break,
            }
        }
        if self.handles_open {
            for _ in 0..BATCH {
                match self.submit_rx.try_recv() {
                    Ok(s) => self.on_submit(s),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.on_handles_gone();
                        break;
                    }
                }
            }
        }
    }

    /// Tells the core about ack handles that came back unused (tokens dropped, items never
    /// taken), so that a close does not wait for them.
    fn release_unused(&mut self, now: Instant) {
        for handle in self.upstream.tokens.take_released() {
            self.core.release(now, &handle);
        }
    }

    /// The client stops: every handle is told, and the stream ends.
    fn finish(mut self) {
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
        let _ = self.events.send(Event::Closed);
        for r in self.close_replies.drain(..) {
            let _ = r.send(report.clone());
        }
        debug!("ccs client driver stopped");
    }

    // ---- inputs ------------------------------------------------------------------------

    fn on_net(&mut self, net: Net) {
        let now = Instant::now();
        match net {
            Net::Connected(id) => {
                // A connection given up meanwhile is being closed already.
                if let Some(c) = self.conns.get_mut(&id) {
                    c.connected = true;
                    self.core.handle_connected(now, id);
                }
            }
            Net::ConnectFailed(id, reason) => {
                if let Some(c) = self.conns.remove(&id) {
                    info!(conn = %id, reason = %reason.message, permanent = reason.permanent, "connection attempt failed");
                    self.retire(id, c.task, Duration::ZERO);
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

    fn on_socket_closed(&mut self, done: Result<(ConnId, bool), tokio::task::JoinError>) {
        match done {
            Ok((id, graceful)) => {
                debug!(conn = %id, graceful, "socket closed");
                let _ = self.events.send(Event::SocketClosed { id, graceful });
            }
            // Only if the runtime is shutting down: nothing left to tell.
            Err(e) => debug!(error = %e, "closing task ended abnormally"),
        }
    }

    fn on_submit(&mut self, s: Submit) {
        match self.core.send(Instant::now(), s.message) {
            Ok(ticket) => {
                self.waiters.insert(
                    ticket,
                    Waiter {
                        reply: s.reply,
                        _permit: s.permit,
                    },
                );
            }
            Err(e) => {
                let _ = s.reply.send(Err(crate::SendError::from_core(e)));
            }
        }
    }

    fn on_handles_gone(&mut self) {
        // Every handle is gone: finish what was queued, then stop.
        self.handles_open = false;
        self.request_close(Instant::now(), DROP_CLOSE_DEADLINE, None);
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
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
                    self.on_submit(s);
                }
                self.request_close(now, deadline, Some(reply));
            }
            Command::Stats { reply } => {
                let mut stats = self.stats.clone();
                stats.core = self.core.stats().clone();
                stats.sockets = self.conns.len() + self.closing.len();
                let _ = reply.send(stats);
            }
        }
    }

    /// An item taken from the stream in auto-ack mode: ack it now.
    fn on_taken(&mut self, taken: Taken) {
        if let Err(e) = self.ack(Instant::now(), &taken.handle) {
            // Its connection ended first: the server redelivers it (and the report lists it).
            debug!(message_id = %taken.handle.message_id(), error = %e, "ack on hand-over refused");
        }
        taken.guard.used();
    }

    fn ack(&mut self, now: Instant, handle: &AckHandle) -> Result<(), AckError> {
        self.core.ack(now, handle)?;
        self.unacked.remove(handle.to(), handle.message_id());
        Ok(())
    }

    // ---- close ---------------------------------------------------------------------------

    /// A close asked for (by `close`, or by the last handle going away): passed to the core
    /// at once. The core keeps each connection open until the acks the application owes on
    /// it have come (or their handles came back unused), or the deadline passes; acks of held
    /// tokens go through until then.
    fn request_close(
        &mut self,
        now: Instant,
        within: Duration,
        reply: Option<oneshot::Sender<Report>>,
    ) {
        self.close_replies.extend(reply);
        let deadline = now.checked_add(within).unwrap_or(now + DROP_CLOSE_DEADLINE);
        // A second call can only bring the deadline forward (the core's rule).
        self.core.close(now, deadline);
    }

    // ---- outputs -----------------------------------------------------------------------

    fn flush_outputs(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Connect(id) => self.open(id),
                Output::Transmit(id, bytes) => self.transmit(id, &bytes),
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
                        self.retire(id, c.task, grace);
                    }
                }
                Output::Event(ev) => self.on_event(ev),
                _ => {}
            }
        }
    }

    fn open(&mut self, id: ConnId) {
        let span = tracing::info_span!("ccs_connection", conn = %id, endpoint = %self.endpoint);
        let outbox = Outbox::new(self.write_limit);
        let task = ConnTask::spawn(
            Dial {
                id,
                endpoint: self.endpoint.clone(),
                server_name: self.server_name.clone(),
                tls: self.tls.clone(),
                read_buffer: self.read_buffer,
                net: self.net_tx.clone(),
                outbox: Arc::clone(&outbox),
            },
            span,
        );
        self.conns.insert(
            id,
            Conn {
                outbox,
                task,
                connected: false,
                broken: false,
            },
        );
    }

    fn transmit(&mut self, id: ConnId, bytes: &[u8]) {
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
        self.core.handle_eof(Instant::now(), id);
    }

    /// Lets a given-up connection's task end within `grace`, then stops it; its end is
    /// reported as [`Event::SocketClosed`].
    fn retire(&mut self, id: ConnId, task: ConnTask, grace: Duration) {
        self.closing
            .spawn(async move { (id, task.finish(grace).await) });
    }

    fn on_event(&mut self, ev: ClientEvent) {
        match ev {
            ClientEvent::Outcome {
                ticket,
                message,
                outcome,
            } => {
                debug!(message_id = %message.message_id(), acked = outcome.is_acked(), "outcome");
                // The message goes with the outcome, so that whoever finds nobody waiting (here,
                // or the future dropped with the answer in it) can publish both.
                let detached = match self.waiters.remove(&ticket) {
                    Some(w) => w.reply.send(Ok((message, outcome))).err(),
                    None => Some(Ok((message, outcome))),
                };
                if let Some(Ok((message, outcome))) = detached {
                    let _ = self
                        .events
                        .send(Event::DetachedOutcome { message, outcome });
                }
            }
            ClientEvent::Upstream { message, ack } => {
                let from = message.from.clone();
                self.hand_over(ack, from, false, |ack| UpstreamItem::Message {
                    message,
                    ack,
                });
            }
            ClientEvent::Receipt { receipt, ack } => {
                let from = receipt.from.clone();
                self.hand_over(ack, from, true, |ack| UpstreamItem::Receipt {
                    receipt,
                    ack,
                });
            }
            ClientEvent::ConnectionUp { id, jid } => {
                info!(conn = %id, %jid, "connection up");
                if let Some(first) = self.first.take() {
                    let _ = first.send(Ok(()));
                }
                let _ = self.events.send(Event::ConnectionUp { id, jid });
            }
            ClientEvent::FirstConnectFailed { error, permanent } => {
                warn!(%error, permanent, "giving up on the first connection");
                if let Some(first) = self.first.take() {
                    let _ = first.send(Err(crate::ConnectError::from_first(&error)));
                }
            }
            ClientEvent::ConnectionDown {
                id,
                reason,
                will_retry_in,
            } => {
                info!(conn = %id, reason = ?reason, retry_in = ?will_retry_in, "connection down");
                let _ = self.events.send(Event::ConnectionDown {
                    id,
                    reason,
                    will_retry_in,
                });
            }
            ClientEvent::AuthFailed {
                id,
                condition,
                text,
                consecutive_failures,
            } => {
                warn!(conn = %id, %condition, ?text, "authentication failed: check the sender id and server key");
                let _ = self.events.send(Event::AuthFailed {
                    id,
                    condition,
                    consecutive_failures,
                });
            }
            ClientEvent::Closed { report } => {
                // Reported once every socket has closed (see `finish`).
                self.closed = Some(report);
            }
            other => {
                debug!(event = ?other, "client event");
                let _ = self.events.send(Event::Core(Box::new(other)));
            }
        }
    }

    /// Hands an upstream message or receipt to the stream, or, when that cannot be done,
    /// acks it as discarded (auto mode, nobody reads) or leaves it un-acked for the server to
    /// redeliver (the stream is full; or manual mode and nobody reads).
    fn hand_over(
        &mut self,
        handle: Option<AckHandle>,
        from: String,
        receipt: bool,
        item: impl FnOnce(Option<AckToken>) -> UpstreamItem,
    ) {
        let Some(handle) = handle else {
            // Acked by the core already: only in its auto mode, which the adapter never asks
            // for. Handed over as it is, if it can be.
            if self.reader_present()
                && let Ok(room) = Arc::clone(&self.upstream.room).try_acquire_owned()
            {
                self.deliver(Delivery {
                    item: item(None),
                    auto_ack: None,
                    room,
                });
            }
            return;
        };
        self.unacked.insert(UnackedUpstream {
            message_id: handle.message_id().clone(),
            from,
            receipt,
        });
        if !self.reader_present() {
            if self.upstream.auto && self.ack(Instant::now(), &handle).is_ok() {
                self.stats.upstream_discarded += 1;
                debug!(message_id = %handle.message_id(), "upstream message discarded: nobody reads the stream");
            } else {
                self.stats.upstream_deferred += 1;
                debug!(message_id = %handle.message_id(), "upstream message left un-acked: nobody reads the stream");
                // Nobody will ack it: a close must not wait for it.
                self.core.release(Instant::now(), &handle);
            }
            return;
        }
        let Ok(room) = Arc::clone(&self.upstream.room).try_acquire_owned() else {
            self.stats.upstream_deferred += 1;
            debug!(message_id = %handle.message_id(), "upstream stream full: left un-acked for redelivery");
            self.core.release(Instant::now(), &handle);
            return;
        };
        let guard = self.upstream.tokens.issue(&handle);
        let delivery = if self.upstream.auto {
            Delivery {
                item: item(None),
                auto_ack: Some((handle, guard)),
                room,
            }
        } else {
            let token = AckToken::new(handle, self.control_tx.clone(), guard);
            Delivery {
                item: item(Some(token)),
                auto_ack: None,
                room,
            }
        };
        self.deliver(delivery);
    }

    /// Whether someone may read the stream: it was taken and is not dropped.
    fn reader_present(&self) -> bool {
        self.upstream.shared.taken.load(Ordering::Acquire) && !self.upstream.tx.is_closed()
    }

    fn deliver(&mut self, delivery: Delivery) {
        // Never full: the channel has a slot for each room permit. Closed if the stream was
        // dropped just now: the item goes with it, un-acked (the server redelivers it).
        if self.upstream.tx.try_send(delivery).is_err() {
            self.stats.upstream_deferred += 1;
        }
    }
}

/// Upstream messages and receipts received and not acked (yet), in arrival order, for
/// [`Report::unacked_upstream`]. Keyed by `(from, message_id)`, so that the ack of a
/// redelivered copy settles the original.
#[derive(Debug, Default)]
struct Unacked {
    by_key: HashMap<(String, MessageId), u64>,
    order: BTreeMap<u64, UnackedUpstream>,
    next: u64,
}

impl Unacked {
    fn insert(&mut self, u: UnackedUpstream) {
        let key = (u.from.clone(), u.message_id.clone());
        if self.by_key.contains_key(&key) {
            return;
        }
        self.next += 1;
        self.by_key.insert(key, self.next);
        self.order.insert(self.next, u);
        if self.order.len() > UNACKED_MEMORY
            && let Some((_, old)) = self.order.pop_first()
        {
            self.by_key.remove(&(old.from, old.message_id));
        }
    }

    fn remove(&mut self, from: &str, id: &MessageId) {
        if let Some(seq) = self.by_key.remove(&(from.to_owned(), id.clone())) {
            self.order.remove(&seq);
        }
    }

    fn list(&self) -> Vec<UnackedUpstream> {
        self.order.values().cloned().collect()
    }
}
