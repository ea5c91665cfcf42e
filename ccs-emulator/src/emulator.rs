//! Starting and stopping: [`Emulator::start`] binds and spawns the accept loop;
//! [`EmulatorHandle`] is the embedding program's grip on the running server.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ccs_proto::message::{Incoming, MessageId, Upstream};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::{EmulatorConfig, UpstreamGenerator};
use crate::error::EmulatorError;
use crate::ledger::Ledger;
use crate::session;
use crate::shared::Shared;
use crate::tls;

/// A local CCS-compatible server. See the [crate docs](crate).
#[derive(Debug)]
#[non_exhaustive]
pub struct Emulator;

impl Emulator {
    /// Checks the config, prepares TLS (generating a certificate if asked), binds the
    /// listening socket, and starts serving on the current tokio runtime. Returns once the
    /// socket is bound: clients may connect at once.
    pub async fn start(config: EmulatorConfig) -> Result<EmulatorHandle, EmulatorError> {
        config.validate()?;
        let tls = tls::server_tls(&config.tls)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(EmulatorError::Bind)?;
        let local_addr = listener.local_addr().map_err(EmulatorError::Bind)?;
        let generator = config.upstream_generator.clone();
        let shared = Arc::new(Shared::new(config));
        let acceptor = TlsAcceptor::from(tls.config);
        let accept = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&shared)));
        let generator = generator.map(|g| tokio::spawn(generate(Arc::clone(&shared), g)));
        tracing::info!(%local_addr, "CCS emulator listening");
        Ok(EmulatorHandle {
            shared,
            local_addr,
            cert_pem: tls.cert_pem,
            accept: Some(accept),
            generator,
        })
    }
}

/// A running emulator. Dropping it stops the server at once (every task is aborted, nothing
/// keeps running); [`EmulatorHandle::shutdown`] stops it gracefully and returns the final
/// ledger.
#[derive(Debug)]
pub struct EmulatorHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    cert_pem: String,
    accept: Option<JoinHandle<()>>,
    generator: Option<JoinHandle<()>>,
}

impl EmulatorHandle {
    /// The address it listens on (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server certificate chain as PEM: what a client must trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A client configuration for this emulator, for any adapter (`ccs-tokio`,
    /// `ccs-async-std`, `ccs-blocking`): its address, its sender id and server key, trust in
    /// its certificate and in nothing else, and the reconnect backoff a test wants (5 ms
    /// doubling to 50 ms, so a fault test does not wait out production backoff). Everything
    /// else is the default; adjust the result as you would any [`ccs_net::Config`].
    ///
    /// This is only right when the certificate is the one the emulator generated (the
    /// default): it names `localhost`.
    pub fn client_config(&self) -> ccs_net::Config {
        let mut c = ccs_net::Config::new(
            ccs_net::Endpoint::new(self.local_addr.ip().to_string(), self.local_addr.port()),
            self.shared.config.sender_id.clone(),
            self.shared.config.server_key.clone(),
        )
        .trust_only_pem(self.cert_pem.clone());
        c.tls.server_name = Some("localhost".into());
        c.client.reconnect.base = std::time::Duration::from_millis(5);
        c.client.reconnect.cap = std::time::Duration::from_millis(50);
        c
    }

    /// Writes [`Self::cert_pem`] to a file (for clients that read a CA file).
    pub fn write_cert_pem(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, &self.cert_pem)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }

    /// Queues an upstream message, as if a device had sent it: it goes to the next bound
    /// connection with room (see [`EmulatorConfig::max_unacked_upstream`]) and is redelivered
    /// on a later connection until a client acks it.
    pub fn inject_upstream(&self, message: Upstream) {
        self.shared.enqueue(Incoming::Upstream(message), true);
    }

    /// Queues an upstream message `from` a device token with this `data`, category
    /// [`EmulatorConfig::category`] and a fresh `message_id` (`emu-up-N`), which is returned.
    pub fn inject_upstream_data(
        &self,
        from: impl Into<String>,
        data: Map<String, Value>,
    ) -> MessageId {
        let n = {
            let mut st = self.shared.lock();
            st.next_upstream += 1;
            st.next_upstream
        };
        let message_id =
            MessageId::new(format!("emu-up-{n}")).expect("a short ASCII id is a valid message id");
        let message = Upstream {
            from: from.into(),
            category: Some(self.shared.config.category.clone()),
            message_id: message_id.clone(),
            data,
            time_to_live: None,
            extra: Map::new(),
        };
        self.inject_upstream(message);
        message_id
    }

    /// Sends `CONNECTION_DRAINING` on every connection open now (on those still setting up,
    /// as soon as they are bound). Each then nacks new downstream messages with
    /// `CONNECTION_DRAINING` and is closed by the server once nothing is pending, or after
    /// [`EmulatorConfig::drain_grace`]. Connections accepted later are not affected.
    pub fn drain_all(&self) {
        self.shared.lock().drain_epoch += 1;
        self.shared.wake_all();
    }

    /// Makes every connection (open now or accepted later) stop reading from its socket, as a
    /// server that no longer reads would: from when this returns, no byte the client sends is
    /// handled until [`Self::resume_reading`]. The client's bytes pile up in the TCP buffers
    /// until its writes block, its pings go unanswered, and the server does not notice the
    /// client closing. The server still writes what it has to (answers to what it read before,
    /// upstream messages). TLS handshakes of new connections still complete. Undone by
    /// [`Self::resume_reading`].
    pub fn pause_reading(&self) {
        self.shared.lock().reading_paused = true;
        self.shared.wake_all();
    }

    /// Ends [`Self::pause_reading`]: connections read what piled up, in order.
    pub fn resume_reading(&self) {
        self.shared.lock().reading_paused = false;
        self.shared.wake_all();
    }

    /// Connections accepted and not over yet.
    pub fn live_connections(&self) -> usize {
        self.shared.lock().live
    }

    /// A snapshot of the ledger.
    pub fn ledger(&self) -> Ledger {
        self.shared.ledger()
    }

    /// Waits until the ledger satisfies `done`, and returns that snapshot. Wakes whenever a
    /// connection changed the ledger (no polling); wrap it in a timeout, as it waits forever
    /// for a condition that never comes.
    pub async fn wait_until(&self, mut done: impl FnMut(&Ledger) -> bool) -> Ledger {
        let mut changed = self.shared.ledger_receiver();
        loop {
            changed.borrow_and_update();
            let ledger = self.ledger();
            if done(&ledger) {
                return ledger;
            }
            if changed.changed().await.is_err() {
                return self.ledger();
            }
        }
    }

    /// Stops gracefully: stops accepting, ends every stream with `</stream:stream>`, waits
    /// for each client's answer (at most [`EmulatorConfig::close_timeout`]), and returns the
    /// final ledger.
    pub async fn shutdown(mut self) -> Ledger {
        self.shared.lock().shutting_down = true;
        self.shared.wake_all();
        if let Some(generator) = self.generator.take() {
            generator.abort();
            let _ = generator.await;
        }
        if let Some(accept) = self.accept.take() {
            // The accept loop returns after every connection task has.
            let _ = accept.await;
        }
        self.shared.ledger()
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        if let Some(generator) = self.generator.take() {
            generator.abort();
        }
    }
}

/// Accepts connections until shutdown, then waits for every connection task.
async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let mut tasks = JoinSet::new();
    let mut wake = shared.wake_receiver();
    loop {
        if shared.lock().shutting_down {
            break;
        }
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    // Small acks must not wait for Nagle.
                    let _ = tcp.set_nodelay(true);
                    let (conn, epoch) = {
                        let mut st = shared.lock();
                        st.live += 1;
                        (st.ledger.open(Some(peer.to_string())), st.drain_epoch)
                    };
                    shared.ledger_changed();
                    tracing::debug!(conn, %peer, "accepted");
                    tasks.spawn(session::serve(
                        Arc::clone(&shared),
                        acceptor.clone(),
                        tcp,
                        conn,
                        epoch,
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly instead of
                    // spinning, then keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            r = wake.changed() => {
                if r.is_err() {
                    break;
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "connection task failed");
                }
            }
        }
    }
    drop(listener);
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "connection task failed");
        }
    }
}

/// Makes up upstream messages at the configured rate until aborted or shut down.
async fn generate(shared: Arc<Shared>, generator: UpstreamGenerator) {
    // Tick at most every millisecond and at least every second; each tick catches up.
    let period = Duration::from_secs_f64((1.0 / generator.per_second).clamp(0.001, 1.0));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut made: u64 = 0;
    loop {
        ticks.tick().await;
        let due = (start.elapsed().as_secs_f64() * generator.per_second) as u64;
        let mut st = shared.lock();
        if st.shutting_down {
            return;
        }
        let room = shared
            .config
            .max_queued_upstream
            .saturating_sub(st.upstream.len()) as u64;
        let count = due.saturating_sub(made).min(room);
        for _ in 0..count {
            st.next_upstream += 1;
            let n = st.next_upstream;
            let mut data = Map::new();
            data.insert("seq".to_owned(), Value::String(n.to_string()));
            let message = Upstream {
                from: generator.from.clone(),
                category: Some(shared.config.category.clone()),
                message_id: MessageId::new(format!("gen-{n}"))
                    .expect("a short ASCII id is a valid message id"),
                data,
                time_to_live: None,
                extra: Map::new(),
            };
            st.upstream.push_back(crate::shared::Queued {
                message: Incoming::Upstream(message),
                deliveries: 0,
            });
        }
        // What did not fit is skipped, not owed.
        made = due;
        drop(st);
        if count > 0 {
            shared.wake_all();
        }
    }
}
