//! The one task that owns the sans-IO [`ccs_proto::Client`] and moves bytes for it.
//!
//! It makes no protocol decision: it feeds the core what happened (bytes, EOF, connect
//! results, the time) and carries out what the core asks (dial, write, close), then hands
//! events to the application. Each connection has a reader task (socket → driver) and a
//! writer task (driver → socket, with one flush per batch).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ccs_proto::client::{ClientEvent, ClientStats, MessageTicket, Outcome, Output};
use ccs_proto::connection::{AckError, AckHandle, ConnId};
use ccs_proto::message::Downstream;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{Instrument, debug, info, warn};

use crate::{Event, Report, UpstreamItem};

/// What the application asks of the driver.
pub(crate) enum Command {
    Send {
        message: Downstream,
        reply: oneshot::Sender<Result<Outcome, crate::SendError>>,
        permit: OwnedSemaphorePermit,
    },
    Ack {
        handle: AckHandle,
        reply: oneshot::Sender<Result<(), AckError>>,
    },
    Close {
        deadline: Duration,
        reply: oneshot::Sender<Report>,
    },
    Stats {
        reply: oneshot::Sender<ClientStats>,
    },
}

/// What the network tasks report.
enum Net {
    Connected(ConnId, mpsc::UnboundedSender<Write>),
    ConnectFailed(ConnId, String),
    Data(ConnId, bytes::Bytes),
    Eof(ConnId),
    /// The connection's task ended (socket closed); whether gracefully.
    Ended(ConnId, bool),
}

enum Write {
    Data(Vec<u8>),
    Close,
}

/// How the first connection went, for `Client::connect`.
pub(crate) type FirstResult = Result<(), crate::ConnectError>;

pub(crate) struct Driver {
    pub(crate) core: ccs_proto::Client,
    pub(crate) cmd_rx: mpsc::UnboundedReceiver<Command>,
    pub(crate) upstream_tx: Option<mpsc::UnboundedSender<UpstreamItem>>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) cmd_tx: mpsc::WeakUnboundedSender<Command>,
    pub(crate) endpoint: crate::Endpoint,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) tls: TlsConnector,
    pub(crate) read_buffer: usize,
    pub(crate) first: Option<oneshot::Sender<FirstResult>>,
}

struct Conn {
    writer: Option<mpsc::UnboundedSender<Write>>,
    tasks: Vec<JoinHandle<()>>,
}

struct Waiter {
    reply: oneshot::Sender<Result<Outcome, crate::SendError>>,
    _permit: OwnedSemaphorePermit,
}

/// How long the client gets to finish when every handle was dropped without `close`.
const DROP_CLOSE_DEADLINE: Duration = Duration::from_secs(10);

impl Driver {
    pub(crate) async fn run(mut self) {
        let (net_tx, mut net_rx) = mpsc::unbounded_channel::<Net>();
        let mut conns: HashMap<ConnId, Conn> = HashMap::new();
        let mut waiters: HashMap<MessageTicket, Waiter> = HashMap::new();
        let mut close_replies: Vec<oneshot::Sender<Report>> = Vec::new();
        let mut commands_open = true;
        loop {
            self.flush_outputs(&net_tx, &mut conns, &mut waiters, &mut close_replies);
            if self.core.is_closed() && conns.is_empty() {
                break;
            }
            let deadline = self.core.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                net = net_rx.recv() => {
                    // `net_tx` lives in this task, so the channel never closes.
                    let Some(net) = net else { break };
                    self.on_net(net, &mut conns);
                    while let Ok(net) = net_rx.try_recv() {
                        self.on_net(net, &mut conns);
                    }
                }
                cmd = self.cmd_rx.recv(), if commands_open => match cmd {
                    Some(cmd) => {
                        self.on_command(cmd, &mut waiters, &mut close_replies);
                        while let Ok(cmd) = self.cmd_rx.try_recv() {
                            self.on_command(cmd, &mut waiters, &mut close_replies);
                        }
                    }
                    None => {
                        // Every handle is gone: finish what was queued, then stop.
                        commands_open = false;
                        if !self.core.is_closing() && !self.core.is_closed() {
                            let now = Instant::now();
                            self.core.close(now, now + DROP_CLOSE_DEADLINE);
                        }
                    }
                },
                () = sleep => self.core.handle_timeout(Instant::now()),
            }
        }
        for conn in conns.into_values() {
            for t in conn.tasks {
                t.abort();
            }
        }
        debug!("ccs client driver stopped");
    }

    fn on_net(&mut self, net: Net, conns: &mut HashMap<ConnId, Conn>) {
        let now = Instant::now();
        match net {
            Net::Connected(id, writer) => match conns.get_mut(&id) {
                Some(c) => {
                    c.writer = Some(writer);
                    self.core.handle_connected(now, id);
                }
                None => {
                    let _ = writer.send(Write::Close);
                }
            },
            Net::ConnectFailed(id, reason) => {
                if let Some(c) = conns.remove(&id) {
                    c.tasks.into_iter().for_each(|t| t.abort());
                    info!(conn = %id, %reason, "connection attempt failed");
                    self.core.handle_connect_failed(now, id, reason);
                }
            }
            Net::Data(id, bytes) => {
                if conns.contains_key(&id) {
                    self.core.handle_input(now, id, &bytes);
                }
            }
            Net::Eof(id) => {
                if conns.contains_key(&id) {
                    self.core.handle_eof(now, id);
                }
            }
            Net::Ended(id, graceful) => {
                let _ = self.events.send(Event::SocketClosed { id, graceful });
            }
        }
    }

    fn on_command(
        &mut self,
        cmd: Command,
        waiters: &mut HashMap<MessageTicket, Waiter>,
        close_replies: &mut Vec<oneshot::Sender<Report>>,
    ) {
        let now = Instant::now();
        match cmd {
            Command::Send {
                message,
                reply,
                permit,
            } => match self.core.send(now, message) {
                Ok(ticket) => {
                    waiters.insert(
                        ticket,
                        Waiter {
                            reply,
                            _permit: permit,
                        },
                    );
                }
                Err(e) => {
                    let _ = reply.send(Err(crate::SendError::from_core(e)));
                }
            },
            Command::Ack { handle, reply } => {
                let _ = reply.send(self.core.ack(now, &handle));
            }
            Command::Close { deadline, reply } => {
                if self.core.is_closed() {
                    let _ = reply.send(Report::default());
                    return;
                }
                close_replies.push(reply);
                self.core.close(now, now + deadline);
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.core.stats().clone());
            }
        }
    }

    fn flush_outputs(
        &mut self,
        net_tx: &mpsc::UnboundedSender<Net>,
        conns: &mut HashMap<ConnId, Conn>,
        waiters: &mut HashMap<MessageTicket, Waiter>,
        close_replies: &mut Vec<oneshot::Sender<Report>>,
    ) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Connect(id) => {
                    let span = tracing::info_span!("ccs_connection", conn = %id, endpoint = %self.endpoint);
                    let task = tokio::spawn(
                        dial(
                            id,
                            self.endpoint.clone(),
                            self.server_name.clone(),
                            self.tls.clone(),
                            self.read_buffer,
                            net_tx.clone(),
                        )
                        .instrument(span),
                    );
                    conns.insert(
                        id,
                        Conn {
                            writer: None,
                            tasks: vec![task],
                        },
                    );
                }
                Output::Transmit(id, bytes) => {
                    if let Some(w) = conns.get(&id).and_then(|c| c.writer.as_ref()) {
                        let _ = w.send(Write::Data(bytes));
                    }
                }
                Output::Disconnect(id) => {
                    if let Some(c) = conns.remove(&id) {
                        match c.writer {
                            // The writer task writes what is queued, then closes.
                            Some(w) => {
                                let _ = w.send(Write::Close);
                            }
                            None => c.tasks.into_iter().for_each(|t| t.abort()),
                        }
                    }
                }
                Output::Event(ev) => self.on_event(ev, waiters, close_replies),
                _ => {}
            }
        }
    }

    fn on_event(
        &mut self,
        ev: ClientEvent,
        waiters: &mut HashMap<MessageTicket, Waiter>,
        close_replies: &mut Vec<oneshot::Sender<Report>>,
    ) {
        match ev {
            ClientEvent::Outcome {
                ticket,
                message,
                outcome,
            } => {
                debug!(message_id = %message.message_id(), acked = outcome.is_acked(), "outcome");
                let detached = match waiters.remove(&ticket) {
                    Some(w) => w.reply.send(Ok(outcome)).err().map(|r| r.ok()),
                    None => Some(Some(outcome)),
                };
                if let Some(Some(outcome)) = detached {
                    let _ = self
                        .events
                        .send(Event::DetachedOutcome { message, outcome });
                }
            }
            ClientEvent::Upstream { message, ack } => {
                let ack = ack.map(|h| crate::AckToken::new(h, self.cmd_tx.clone()));
                self.deliver(UpstreamItem::Message { message, ack });
            }
            ClientEvent::Receipt { receipt, ack } => {
                let ack = ack.map(|h| crate::AckToken::new(h, self.cmd_tx.clone()));
                self.deliver(UpstreamItem::Receipt { receipt, ack });
            }
            ClientEvent::ConnectionUp { id, jid } => {
                info!(conn = %id, %jid, "connection up");
                if let Some(first) = self.first.take() {
                    let _ = first.send(Ok(()));
                }
                let _ = self.events.send(Event::ConnectionUp { id, jid });
            }
            ClientEvent::ConnectionDown {
                id,
                reason,
                will_retry_in,
            } => {
                info!(conn = %id, reason = ?reason, retry_in = ?will_retry_in, "connection down");
                if !reason.is_auth_failure()
                    && let Some(first) = self.first.take()
                {
                    let _ = first.send(Err(crate::ConnectError::from_down(&reason)));
                }
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
                warn!(conn = %id, %condition, "authentication failed: check the sender id and server key");
                if let Some(first) = self.first.take() {
                    let _ = first.send(Err(crate::ConnectError::AuthFailed {
                        condition: condition.clone(),
                        text: text.clone(),
                    }));
                }
                let _ = self.events.send(Event::AuthFailed {
                    id,
                    condition,
                    consecutive_failures,
                });
            }
            ClientEvent::Closed { report } => {
                info!(unsent = report.unsent.len(), "client closed");
                let report = Report {
                    unsent: report.unsent.into_iter().map(|(_, id)| id).collect(),
                    deadline_passed: report.deadline_passed,
                };
                for r in close_replies.drain(..) {
                    let _ = r.send(report.clone());
                }
                let _ = self.events.send(Event::Closed);
            }
            other => {
                debug!(event = ?other, "client event");
                let _ = self.events.send(Event::Core(Box::new(other)));
            }
        }
    }

    fn deliver(&mut self, item: UpstreamItem) {
        match &self.upstream_tx {
            Some(tx) => {
                if let Err(e) = tx.send(item) {
                    // The application dropped its upstream stream: nothing will read this.
                    warn!(item = ?e.0, "upstream message with no reader (upstream stream dropped)");
                    self.upstream_tx = None;
                }
            }
            None => debug!(item = ?item, "upstream message with no reader"),
        }
    }
}

/// Dials one connection: TCP, then TLS; on success, starts its reader and writer tasks.
async fn dial(
    id: ConnId,
    endpoint: crate::Endpoint,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    read_buffer: usize,
    net: mpsc::UnboundedSender<Net>,
) {
    let mut ended = Ended {
        id,
        net: net.clone(),
        graceful: false,
    };
    debug!("dialling");
    let tcp = match TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await {
        Ok(s) => s,
        Err(e) => {
            let _ = net.send(Net::ConnectFailed(
                id,
                format!("cannot connect to {endpoint}: {e}"),
            ));
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let stream = match tls.connect(server_name, tcp).await {
        Ok(s) => s,
        Err(e) => {
            let _ = net.send(Net::ConnectFailed(
                id,
                format!("TLS with {endpoint} failed: {e}"),
            ));
            return;
        }
    };
    debug!("TLS up");
    let (rd, wr) = tokio::io::split(stream);
    let (wtx, wrx) = mpsc::unbounded_channel();
    // Reading and writing run apart, so a peer that only reads once we read cannot stall us.
    let reader = AbortOnDrop(tokio::spawn(
        read_loop(id, rd, read_buffer, net.clone()).instrument(tracing::Span::current()),
    ));
    let _ = net.send(Net::Connected(id, wtx));
    if write_loop(wr, wrx).await.is_err() {
        let _ = net.send(Net::Eof(id));
    } else {
        ended.graceful = true;
    }
    drop(reader);
}

/// Tells the driver that a connection's task ended, however it ended.
struct Ended {
    id: ConnId,
    net: mpsc::UnboundedSender<Net>,
    graceful: bool,
}

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = self.net.send(Net::Ended(self.id, self.graceful));
    }
}

/// Stops the reader when the connection's task ends (closed, failed, or aborted).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_loop(
    id: ConnId,
    mut rd: ReadHalf<TlsStream<TcpStream>>,
    read_buffer: usize,
    net: mpsc::UnboundedSender<Net>,
) {
    let mut buf = BytesMut::with_capacity(read_buffer);
    loop {
        if buf.capacity() < read_buffer / 4 {
            buf.reserve(read_buffer);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = net.send(Net::Eof(id));
                return;
            }
            Ok(_) => {
                if net.send(Net::Data(id, buf.split().freeze())).is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes batches until told to close (`Ok`) or the socket fails (`Err`).
async fn write_loop(
    mut wr: WriteHalf<TlsStream<TcpStream>>,
    mut rx: mpsc::UnboundedReceiver<Write>,
) -> Result<(), ()> {
    while let Some(first) = rx.recv().await {
        let mut close = false;
        let mut batch = match first {
            Write::Data(d) => d,
            Write::Close => {
                close = true;
                Vec::new()
            }
        };
        // Coalesce whatever else is queued into one write and one flush.
        while !close && let Ok(next) = rx.try_recv() {
            match next {
                Write::Data(d) => batch.extend_from_slice(&d),
                Write::Close => close = true,
            }
        }
        if !batch.is_empty() && (wr.write_all(&batch).await.is_err() || wr.flush().await.is_err()) {
            return Err(());
        }
        if close {
            let _ = wr.shutdown().await;
            return Ok(());
        }
    }
    // The driver is gone.
    Ok(())
}
