//! One client connection: a thin tokio loop around [`ServerConnection`].
//!
//! Each turn of the loop: feed the core what happened (bytes, EOF, time), drain its events
//! and answer them with the emulator's policy ([`crate::policy`]) and fault plan
//! ([`crate::faults`], in [`events`]), move upstream messages from the shared store onto the
//! stream, write everything the core produced in one batch and flush the TLS stream once,
//! then sleep until the socket is readable, a timer ([`crate::schedule`]) is due, or the
//! handle asks for something. Every protocol decision is the core's.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use ccs_proto::message::{AppAck, Control, Incoming};
use ccs_proto::server::{ServerConfig, ServerConnection, ServerState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::faults::FaultPlan;
use crate::ledger::ConnectionEnd;
use crate::schedule::Schedule;
use crate::shared::{Queued, Shared, State};

mod events;

/// Bytes read from the socket at once: many stanzas per read under load.
const READ_BUF: usize = 64 * 1024;

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
    faults: FaultPlan,
    schedule: Schedule,
    /// [`State::drain_epoch`] when accepted: a later `drain_all` drains this connection.
    drain_epoch: u64,
    downstream_seen: u64,
    /// By the ack each expects, `(from, message_id)`.
    sent_up: HashMap<AppAck, SentUp>,
    /// Whether this turn queued a delivery receipt.
    queued_receipt: bool,
    out: Vec<u8>,
    bytes_written: u64,
    stanzas_written: u64,
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
        sc.strict_ack_to = c.strict_acks;
        sc.close_timeout = c.close_timeout;
        // The core's seed is the first draw; every fault draws after it, from the plan.
        sc.seed = rng.next();
        let core = ServerConnection::new(sc, now.into_std());
        let faults = FaultPlan::new(c.faults.clone(), rng);
        let schedule = Schedule::new(c, now);
        Self {
            shared,
            conn,
            core,
            faults,
            schedule,
            drain_epoch,
            downstream_seen: 0,
            sent_up: HashMap::new(),
            queued_receipt: false,
            out: Vec::with_capacity(READ_BUF),
            bytes_written: 0,
            stanzas_written: 0,
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
        self.schedule
            .update_ready(now, self.core.stats().stanzas_in);
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
        let core = self.core.poll_timeout().map(Instant::from_std);
        self.schedule.next_deadline(core, self.core.state())
    }

    fn fire_delayed(&mut self, st: &mut State, now: Instant) {
        while let Some((id, verdict)) = self.schedule.due_answer(now) {
            self.answer(st, &id, verdict);
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
        if self.schedule.drain_asked() || st.drain_epoch > self.drain_epoch {
            self.start_drain(st, now);
        }
    }

    /// Sends `CONNECTION_DRAINING` once the stream is bound; until then, asks again on every
    /// turn (through [`Schedule::drain_asked`]).
    fn start_drain(&mut self, st: &mut State, now: Instant) {
        self.schedule.ask_drain();
        if !self.schedule.draining()
            && self.core.state() == ServerState::Bound
            && self
                .core
                .send_control(&Control::connection_draining())
                .is_ok()
        {
            self.schedule.start_grace(now);
            st.ledger.conn(self.conn).drained = true;
        }
    }

    /// Whether this connection takes no upstream messages now.
    fn wants_no_upstream(&self) -> bool {
        !self.schedule.ready()
            || self.schedule.draining()
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
            if let Some(key) = q.message.ack_for() {
                st.ledger.upstream_sent(
                    self.conn,
                    &key.to,
                    key.message_id.as_str(),
                    receipt,
                    q.deliveries,
                );
                let deliveries = q.deliveries.saturating_add(1);
                self.sent_up.insert(
                    key,
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
        if !self.schedule.draining() || self.core.state() != ServerState::Draining {
            return;
        }
        let idle = self.core.pending() == 0 && self.sent_up.is_empty();
        if idle || self.schedule.grace_over(now) {
            let _ = self.core.close(now.into_std());
        }
    }

    fn keepalive(&mut self, now: Instant) {
        if self.schedule.keepalive_due(now, self.core.state()) {
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
        let cut = self.faults.cut(self.bytes_written, out.len(), new_stanzas);
        let end = cut.unwrap_or(out.len()).min(out.len());
        let result = write_bytes(&mut self.faults, tls, &out[..end]).await;
        self.out = out;
        self.out.clear();
        result?;
        self.bytes_written += end as u64;
        self.unrecorded_out += end as u64;
        self.schedule.wrote(Instant::now());
        Ok(if cut.is_some() {
            Written::Cut
        } else {
            Written::All
        })
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
                .ack_for()
                .and_then(|key| self.sent_up.get(&key))
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

/// Writes `bytes` and flushes, or writes them in tiny pieces, each flushed, as the plan says.
async fn write_bytes(
    faults: &mut FaultPlan,
    tls: &mut TlsStream<TcpStream>,
    bytes: &[u8],
) -> io::Result<()> {
    if faults.writes_tiny() {
        let mut rest = bytes;
        while !rest.is_empty() {
            let (now, later) = rest.split_at(faults.tiny_piece(rest.len()));
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
