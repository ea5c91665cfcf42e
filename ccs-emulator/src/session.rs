//! One client connection: a thin tokio loop around [`ServerConnection`].
//!
//! Each turn of the loop: feed the core what happened (bytes, EOF, time), drain its events
//! and answer them with the emulator's policy ([`crate::policy`]) and faults, move upstream
//! messages from the shared store onto the stream, write everything the core produced in one
//! batch and flush the TLS stream once, then sleep until the socket is readable, a timer is
//! due, or the handle asks for something. Every protocol decision is the core's.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ccs_proto::message::{Control, Incoming, MessageId, NackCode, Receipt};
use ccs_proto::server::{CloseReason, ServerConfig, ServerConnection, ServerEvent, ServerState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::ledger::{Answer, ConnectionEnd};
use crate::policy::{self, InvalidVerdict, STANZA_ERROR_CONDITION, Verdict};
use crate::rng::SplitMix64;
use crate::shared::{Queued, Shared, State};

/// Bytes read from the socket at once: many stanzas per read under load.
const READ_BUF: usize = 64 * 1024;
/// Pieces of [`crate::Faults::tiny_writes`], in bytes.
const TINY_WRITE: (u64, u64) = (1, 16);

/// Serves one accepted TCP connection to its end, then records it in the ledger.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    conn: u64,
    drain_epoch: u64,
) {
    let mut wake = shared.wake_receiver();
    let setup = shared.config.setup_timeout;
    let handshake = tokio::time::timeout(setup, acceptor.accept(tcp));
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return record_early_end(&shared, conn, e.to_string()),
            Err(_) => return record_early_end(&shared, conn, "timed out".to_owned()),
        },
        () = shutdown_requested(&shared, &mut wake) => {
            return record_early_end(&shared, conn, "the emulator shut down".to_owned());
        }
    };
    let now = Instant::now();
    let session = Session::new(shared, conn, drain_epoch, now);
    session.run(tls, wake).await;
}

/// Resolves once shutdown is requested (or the emulator is gone).
async fn shutdown_requested(shared: &Shared, wake: &mut watch::Receiver<u64>) {
    loop {
        if shared.lock().shutting_down {
            return;
        }
        if wake.changed().await.is_err() {
            return;
        }
    }
}

fn record_early_end(shared: &Shared, conn: u64, detail: String) {
    tracing::debug!(conn, %detail, "TLS handshake failed");
    let mut st = shared.lock();
    st.ledger
        .closed(conn, ConnectionEnd::TlsHandshake { detail }, Vec::new());
    st.live = st.live.saturating_sub(1);
    drop(st);
    shared.ledger_changed();
}

/// A downstream answer waiting for its time ([`crate::Faults::slow_ack`]).
#[derive(Debug)]
struct Delayed {
    at: Instant,
    seq: u64,
    id: MessageId,
    verdict: Verdict,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// An upstream message or receipt sent on this connection and not yet acked.
#[derive(Debug, Clone, Copy)]
struct SentUp {
    /// Times sent, this one included.
    deliveries: u32,
    receipt: bool,
}

/// What a batch write did.
enum Written {
    All,
    /// A fault cut the connection after the bytes that went out.
    Cut,
}

struct Session {
    shared: Arc<Shared>,
    conn: u64,
    core: ServerConnection,
    rng: SplitMix64,
    /// [`State::drain_epoch`] when accepted: a later `drain_all` drains this connection.
    drain_epoch: u64,
    /// Set once draining was asked for; it starts when the stream is bound.
    drain_due: bool,
    /// When draining, the end of the grace period.
    draining: Option<Instant>,
    /// When the resource was bound, and how many stanzas the client had sent by then.
    bound_at: Option<(Instant, u64)>,
    /// Whether the client is ready for upstream messages (see
    /// [`crate::EmulatorConfig::upstream_after_bind`]).
    ready: bool,
    downstream_seen: u64,
    delayed: BinaryHeap<Reverse<Delayed>>,
    delayed_seq: u64,
    sent_up: HashMap<MessageId, SentUp>,
    /// Whether this turn queued a delivery receipt.
    queued_receipt: bool,
    out: Vec<u8>,
    bytes_written: u64,
    stanzas_written: u64,
    last_write: Instant,
    /// Bytes read and written since the ledger last saw them.
    unrecorded_in: u64,
    unrecorded_out: u64,
    /// Why the connection ended, when the core does not know better (I/O, faults).
    end: Option<ConnectionEnd>,
    /// [`State::reading_paused`] as of the last turn.
    reading_paused: bool,
    /// Bytes a read that was under way returned after reading was paused: handled on resume.
    held_input: Vec<u8>,
}

impl Session {
    fn new(shared: Arc<Shared>, conn: u64, drain_epoch: u64, now: Instant) -> Self {
        let c = &shared.config;
        let mut rng = crate::rng::for_connection(c.seed, conn);
        let mut sc = ServerConfig::new(c.sender_id.clone(), c.server_key.clone());
        sc.domain.clone_from(&c.domain);
        sc.window = c.window;
        sc.max_pending = c.window.saturating_mul(10);
        sc.max_unacked_upstream = c.max_unacked_upstream;
        sc.setup_timeout = Some(c.setup_timeout);
        sc.close_timeout = c.close_timeout;
        sc.seed = rng.next();
        let core = ServerConnection::new(sc, now.into_std());
        Self {
            shared,
            conn,
            core,
            rng,
            drain_epoch,
            drain_due: false,
            draining: None,
            bound_at: None,
            ready: false,
            downstream_seen: 0,
            delayed: BinaryHeap::new(),
            delayed_seq: 0,
            sent_up: HashMap::new(),
            queued_receipt: false,
            out: Vec::with_capacity(READ_BUF),
            bytes_written: 0,
            stanzas_written: 0,
            last_write: now,
            unrecorded_in: 0,
            unrecorded_out: 0,
            end: None,
            reading_paused: false,
            held_input: Vec::new(),
        }
    }

    async fn run(mut self, mut tls: TlsStream<TcpStream>, mut wake: watch::Receiver<u64>) {
        let mut buf = vec![0u8; READ_BUF];
        let mut wake_open = true;
        loop {
            let now = Instant::now();
            self.step(now);
            match self.write(&mut tls).await {
                Ok(Written::All) => {}
                Ok(Written::Cut) => {
                    self.end = Some(ConnectionEnd::FaultDrop {
                        after_bytes: self.bytes_written,
                    });
                    self.core.handle_eof(Instant::now().into_std());
                    // Dropped without close_notify: the client sees the TCP stream end.
                    drop(tls);
                    return self.finish();
                }
                Err(e) => {
                    self.end = Some(ConnectionEnd::Io {
                        detail: e.to_string(),
                    });
                    self.core.handle_eof(Instant::now().into_std());
                    return self.finish();
                }
            }
            if self.core.state() == ServerState::Closed {
                break;
            }
            let deadline = self.next_deadline();
            tokio::select! {
                // A wake-up first: it may pause reading (`pause_reading` takes effect before any
                // further read), drain or shut down.
                biased;
                r = wake.changed(), if wake_open => {
                    // The sender lives as long as the emulator; if it is gone, stop listening.
                    wake_open = r.is_ok();
                }
                r = tls.read(&mut buf), if !self.reading_paused => {
                    let now = Instant::now().into_std();
                    match r {
                        Ok(0) => self.core.handle_eof(now),
                        Ok(n) => {
                            self.unrecorded_in += n as u64;
                            // `n <= buf.len()` by the contract of `read`.
                            if self.shared.lock().reading_paused {
                                self.held_input.extend_from_slice(&buf[..n]);
                            } else {
                                self.core.handle_input(now, &buf[..n]);
                            }
                        }
                        // A client that vanishes without close_notify: plain EOF for XMPP.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            self.core.handle_eof(now);
                        }
                        Err(e) => {
                            self.end = Some(ConnectionEnd::Io { detail: e.to_string() });
                            self.core.handle_eof(now);
                        }
                    }
                }
                () = sleep_until(deadline), if deadline.is_some() => {}
                // Reading paused, no timer and no wake-ups: nothing can ever happen.
                else => break,
            }
        }
        // Closed by the protocol (end tags, stream error, timeout): close TLS properly.
        let _ = tokio::time::timeout(self.shared.config.close_timeout, tls.shutdown()).await;
        self.finish();
    }

    /// One turn of synchronous work: time, events, delayed answers, drain and shutdown,
    /// upstream, keepalive. Takes the shared lock once.
    fn step(&mut self, now: Instant) {
        let shared = Arc::clone(&self.shared);
        let mut st = shared.lock();
        self.reading_paused = st.reading_paused;
        if !self.reading_paused && !self.held_input.is_empty() {
            let held = std::mem::take(&mut self.held_input);
            self.core.handle_input(now.into_std(), &held);
        }
        // Harmless when nothing is due; keeps the core's idea of `now` fresh for `close`.
        self.core.handle_timeout(now.into_std());
        self.drain_events(&mut st, now);
        self.fire_delayed(&mut st, now);
        self.control(&mut st, now);
        self.update_ready(now);
        self.pull_upstream(&mut st);
        self.maybe_close_draining(now);
        self.keepalive(now);
        // Events caused by the commands above (a stream error closes the connection).
        self.drain_events(&mut st, now);
        self.record_bytes(&mut st);
        // A receipt this connection queued and cannot send itself: another connection may
        // take it. Only then, or two full connections would wake each other forever.
        let pass_on = std::mem::take(&mut self.queued_receipt)
            && !st.upstream.is_empty()
            && self.wants_no_upstream();
        drop(st);
        if pass_on {
            shared.wake_all();
        }
        shared.ledger_changed();
    }

    /// When the loop must wake up even if nothing arrives.
    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.core.poll_timeout().map(Instant::from_std);
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(Reverse(d)) = self.delayed.peek() {
            consider(d.at);
        }
        if let Some(grace) = self.draining
            && self.core.state() == ServerState::Draining
        {
            consider(grace);
        }
        if let Some((at, _)) = self.bound_at
            && !self.ready
        {
            consider(at + self.shared.config.upstream_after_bind);
        }
        if let Some(every) = self.shared.config.whitespace_keepalive
            && self.keepalive_allowed()
        {
            consider(self.last_write + every);
        }
        next
    }

    // ---- events ------------------------------------------------------------------------

    fn drain_events(&mut self, st: &mut State, now: Instant) {
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
                self.bound_at = Some((now, self.core.stats().stanzas_in));
                st.ledger.conn(conn).jid = Some(jid);
            }
            ServerEvent::Downstream { message, .. } => {
                let id = message.message_id().clone();
                st.ledger.received(conn, id.as_str());
                self.downstream_seen += 1;
                if self.draining.is_some() {
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
            ServerEvent::DuplicatePending { message_id } => {
                st.ledger.duplicate_pending(conn, message_id.as_str());
            }
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
                match (message_id, verdict) {
                    (Some(id), InvalidVerdict::Nack { code, description }) => {
                        st.ledger.received(conn, &id);
                        self.nack(st, &id, code, description);
                    }
                    (Some(id), InvalidVerdict::StanzaError { text }) => {
                        st.ledger.received(conn, &id);
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
            ServerEvent::AppAck(ack) => {
                if let Some(sent) = self.sent_up.remove(&ack.message_id) {
                    let c = &mut st.ledger.conn(conn).counters;
                    if sent.receipt {
                        c.receipts_acked += 1;
                    } else {
                        c.upstream_acked += 1;
                    }
                }
            }
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
            // Authenticated, UnexpectedStanza, Pong: nothing to decide.
            other => tracing::trace!(conn, ?other, "event"),
        }
    }

    /// Answers a downstream message now, later ([`crate::Faults::slow_ack`]), never
    /// ([`crate::Faults::missing_ack_probability`]), or ends the stream instead
    /// ([`crate::Faults::stream_error_probability`]).
    fn answer_with_faults(&mut self, st: &mut State, id: MessageId, verdict: Verdict) {
        let faults = &self.shared.config.faults;
        if self.rng.chance(faults.stream_error_probability) {
            let condition = if self.rng.below(2) == 0 {
                "internal-server-error"
            } else {
                "system-shutdown"
            };
            let _ = self.core.stream_error(condition, None);
            return;
        }
        if self.rng.chance(faults.missing_ack_probability) {
            tracing::debug!(conn = self.conn, id = %id, "fault: never answered");
            return;
        }
        if let Some((lo, hi)) = faults.slow_ack {
            let nanos = self.rng.between(nanos_of(lo), nanos_of(hi));
            self.delayed_seq += 1;
            self.delayed.push(Reverse(Delayed {
                at: Instant::now() + Duration::from_nanos(nanos),
                seq: self.delayed_seq,
                id,
                verdict,
            }));
            return;
        }
        self.answer(st, &id, verdict);
    }

    /// Sends the answer and records it; an ack may queue a delivery receipt.
    fn answer(&mut self, st: &mut State, id: &MessageId, verdict: Verdict) {
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
                st.ledger
                    .answered(conn, Some(id.as_str()), Answer::Acked { registration_id });
                if let Some(device) = receipt_to
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

    fn fire_delayed(&mut self, st: &mut State, now: Instant) {
        while self.delayed.peek().is_some_and(|Reverse(d)| d.at <= now) {
            if let Some(Reverse(d)) = self.delayed.pop() {
                self.answer(st, &d.id, d.verdict);
            }
        }
    }

    // ---- drain, shutdown, upstream, keepalive ---------------------------------------------

    fn control(&mut self, st: &mut State, now: Instant) {
        if st.shutting_down {
            if !matches!(
                self.core.state(),
                ServerState::Closing | ServerState::Closed
            ) {
                let _ = self.core.close(now.into_std());
            }
            return;
        }
        if self.drain_due || st.drain_epoch > self.drain_epoch {
            self.start_drain(st, now);
        }
    }

    /// Sends `CONNECTION_DRAINING` once the stream is bound; until then, asks again on every
    /// turn (through `drain_due`).
    fn start_drain(&mut self, st: &mut State, now: Instant) {
        self.drain_due = true;
        if self.draining.is_none()
            && self.core.state() == ServerState::Bound
            && self
                .core
                .send_control(&Control::connection_draining())
                .is_ok()
        {
            self.draining = Some(now + self.shared.config.drain_grace);
            st.ledger.conn(self.conn).drained = true;
        }
    }

    /// A client that requests a session is not ready for messages until the result arrives,
    /// so upstream waits for the client's first stanza after the bind, or for
    /// `upstream_after_bind`.
    fn update_ready(&mut self, now: Instant) {
        if let Some((at, stanzas)) = self.bound_at
            && !self.ready
        {
            self.ready = self.core.stats().stanzas_in > stanzas
                || now >= at + self.shared.config.upstream_after_bind;
        }
    }

    /// Whether this connection takes no upstream messages now.
    fn wants_no_upstream(&self) -> bool {
        !self.ready
            || self.draining.is_some()
            || self.core.state() != ServerState::Bound
            || self.sent_up.len() >= self.shared.config.max_unacked_upstream
    }

    fn pull_upstream(&mut self, st: &mut State) {
        if st.shutting_down {
            return;
        }
        while !self.wants_no_upstream() {
            let Some(q) = st.upstream.pop_front() else {
                break;
            };
            let (sent, receipt) = match &q.message {
                Incoming::Upstream(u) => (self.core.send_upstream(u), false),
                Incoming::Receipt(r) => (self.core.send_receipt(r), true),
                // Only upstream messages and receipts are ever queued.
                _ => continue,
            };
            if sent.is_err() {
                st.upstream.push_front(q);
                break;
            }
            let c = &mut st.ledger.conn(self.conn).counters;
            if receipt {
                c.receipts_sent += 1;
            } else {
                c.upstream_sent += 1;
            }
            if q.deliveries > 0 {
                c.redelivered += 1;
            }
            if let Some(id) = q.message.message_id() {
                let deliveries = q.deliveries.saturating_add(1);
                self.sent_up.insert(
                    id.clone(),
                    SentUp {
                        deliveries,
                        receipt,
                    },
                );
            }
        }
    }

    /// Closes a draining stream once nothing is pending, or when the grace period is over.
    fn maybe_close_draining(&mut self, now: Instant) {
        let Some(grace) = self.draining else { return };
        if self.core.state() != ServerState::Draining {
            return;
        }
        let idle = self.core.pending() == 0 && self.sent_up.is_empty();
        if idle || now >= grace {
            let _ = self.core.close(now.into_std());
        }
    }

    fn keepalive_allowed(&self) -> bool {
        matches!(
            self.core.state(),
            ServerState::Bound | ServerState::Draining
        )
    }

    fn keepalive(&mut self, now: Instant) {
        if let Some(every) = self.shared.config.whitespace_keepalive
            && self.keepalive_allowed()
            && now >= self.last_write + every
        {
            let _ = self.core.whitespace();
        }
    }

    // ---- output --------------------------------------------------------------------------

    /// Writes everything the core produced as one batch and flushes once (or in tiny pieces,
    /// or cut short, as the faults say).
    async fn write(&mut self, tls: &mut TlsStream<TcpStream>) -> io::Result<Written> {
        if !self.core.transmit_into(&mut self.out) {
            return Ok(Written::All);
        }
        let stanzas = self.core.stats().stanzas_out;
        let new_stanzas = stanzas.saturating_sub(self.stanzas_written);
        self.stanzas_written = stanzas;
        let out = std::mem::take(&mut self.out);
        let cut = self.cut_point(out.len(), new_stanzas);
        let end = cut.unwrap_or(out.len()).min(out.len());
        let result = self.write_bytes(tls, &out[..end]).await;
        self.out = out;
        self.out.clear();
        result?;
        self.bytes_written += end as u64;
        self.unrecorded_out += end as u64;
        self.last_write = Instant::now();
        Ok(if cut.is_some() {
            Written::Cut
        } else {
            Written::All
        })
    }

    async fn write_bytes(
        &mut self,
        tls: &mut TlsStream<TcpStream>,
        bytes: &[u8],
    ) -> io::Result<()> {
        if self.shared.config.faults.tiny_writes {
            let mut rest = bytes;
            while !rest.is_empty() {
                let piece = self.rng.between(TINY_WRITE.0, TINY_WRITE.1) as usize;
                let (now, later) = rest.split_at(piece.min(rest.len()));
                tls.write_all(now).await?;
                tls.flush().await?;
                rest = later;
            }
            return Ok(());
        }
        if !bytes.is_empty() {
            tls.write_all(bytes).await?;
        }
        tls.flush().await
    }

    /// Where a fault cuts a write of `len` bytes holding `stanzas` new stanzas, if anywhere.
    fn cut_point(&mut self, len: usize, stanzas: u64) -> Option<usize> {
        let faults = &self.shared.config.faults;
        let mut cut = None;
        if let Some(limit) = faults.drop_after_bytes {
            let remaining = limit.saturating_sub(self.bytes_written);
            if len as u64 >= remaining {
                // `remaining <= len`, so it fits in usize.
                cut = Some(usize::try_from(remaining).unwrap_or(len));
            }
        }
        if faults.drop_probability > 0.0 {
            for _ in 0..stanzas {
                if self.rng.chance(faults.drop_probability) {
                    // Strictly inside the write when it has room: mid-stanza.
                    let at = if len > 1 {
                        1 + self.rng.below(len as u64 - 1) as usize
                    } else {
                        0
                    };
                    cut = Some(cut.map_or(at, |c: usize| c.min(at)));
                    break;
                }
            }
        }
        cut
    }

    fn record_bytes(&mut self, st: &mut State) {
        let c = &mut st.ledger.conn(self.conn).counters;
        c.bytes_in += std::mem::take(&mut self.unrecorded_in);
        c.bytes_out += std::mem::take(&mut self.unrecorded_out);
    }

    // ---- end -----------------------------------------------------------------------------

    /// Records the end in the ledger and gives un-acked upstream messages and receipts back
    /// to the store, for the next connection.
    fn finish(mut self) {
        let shared = Arc::clone(&self.shared);
        let mut st = shared.lock();
        self.drain_events(&mut st, Instant::now());
        self.record_bytes(&mut st);
        let never: Vec<String> = self
            .core
            .pending_ids()
            .into_iter()
            .map(|id| id.as_str().to_owned())
            .collect();
        let end = self.end.take().unwrap_or(ConnectionEnd::Other {
            detail: "ended without a reason".to_owned(),
        });
        tracing::debug!(conn = self.conn, end = end.kind(), "connection over");
        st.ledger.closed(self.conn, end, never);
        let unacked: Vec<Incoming> = self.core.unacked_upstream().cloned().collect();
        let requeued = !unacked.is_empty();
        for message in unacked.into_iter().rev() {
            let deliveries = message
                .message_id()
                .and_then(|id| self.sent_up.get(id))
                .map_or(1, |s| s.deliveries);
            st.upstream.push_front(Queued {
                message,
                deliveries,
            });
        }
        st.live = st.live.saturating_sub(1);
        drop(st);
        if requeued {
            shared.wake_all();
        }
        shared.ledger_changed();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn stanza_answer(text: String) -> Answer {
    Answer::StanzaError {
        condition: STANZA_ERROR_CONDITION.to_owned(),
        text: Some(text),
    }
}

fn end_of(reason: CloseReason) -> ConnectionEnd {
    match reason {
        CloseReason::ClientClosed => ConnectionEnd::ClientClosed,
        CloseReason::ServerClosed => ConnectionEnd::ServerClosed,
        CloseReason::Eof => ConnectionEnd::Eof,
        CloseReason::ProtocolError(e) => ConnectionEnd::ProtocolError {
            detail: e.to_string(),
        },
        CloseReason::ClientStreamError(e) => ConnectionEnd::ClientStreamError {
            condition: e.condition,
        },
        CloseReason::StreamError { condition, text } => {
            ConnectionEnd::StreamError { condition, text }
        }
        CloseReason::SetupTimeout => ConnectionEnd::SetupTimeout,
        CloseReason::CloseTimeout => ConnectionEnd::CloseTimeout,
        other => ConnectionEnd::Other {
            detail: format!("{other:?}"),
        },
    }
}

fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
