//! The client end to end in memory: a `Client` with 4 connections (window 100) to 4 server
//! connections of the crate's own server role, which ack every message at once; and the
//! cost of a reconnect that requeues 1,000 messages in flight.
//!
//! `cargo bench -p ccs-proto --bench client`
//!
//! Instruction counts (steadier than wall-clock on a shared machine): build with
//! `cargo bench -p ccs-proto --bench client --no-run`, then run the printed binary under
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measure_*'` with
//! `CCS_BENCH_ONCE=e2e` (or `requeue`, `reconnect`): it runs the scenario once, untimed.
#![allow(missing_docs, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ccs_proto::ConnectionConfig;
use ccs_proto::client::{Client, ClientConfig, ClientEvent, Output};
use ccs_proto::connection::ConnId;
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::message::Downstream;
use ccs_proto::server::{ServerConfig, ServerConnection, ServerEvent};
use criterion::{BatchSize, Criterion, Throughput};

const MESSAGES: usize = 10_000;
const REQUEUED: usize = 1_000;

fn credentials() -> (SenderId, ServerKey) {
    (
        SenderId::new("123456789012").unwrap(),
        ServerKey::new("bench-key").unwrap(),
    )
}

/// A client and its server connections, joined directly (no latency, no scheduler).
struct Lean {
    now: Instant,
    client: Client,
    servers: BTreeMap<ConnId, ServerConnection>,
    auto_ack: bool,
    outcomes: usize,
    ups: usize,
    buf: Vec<(ConnId, Vec<u8>)>,
    sent: u64,
}

impl Lean {
    fn new(connections: usize, window: usize) -> Self {
        let (sender, key) = credentials();
        let mut c = ClientConfig::new(ConnectionConfig::new(sender, key));
        c.connections = connections;
        c.connection.window = window;
        c.max_queue = MESSAGES * 2;
        c.reconnect.healthy_after = Duration::ZERO; // a reconnect is immediate
        let now = Instant::now();
        let mut lean = Self {
            now,
            client: Client::new(c, now).unwrap(),
            servers: BTreeMap::new(),
            auto_ack: true,
            outcomes: 0,
            ups: 0,
            buf: Vec::new(),
            sent: 0,
        };
        lean.pump();
        assert_eq!(lean.ups, connections);
        lean
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(out) = self.client.poll_output() {
                moved = true;
                match out {
                    Output::Connect(id) => {
                        let (sender, key) = credentials();
                        let mut config = ServerConfig::new(sender, key);
                        config.window = 1000;
                        config.max_pending = 1000;
                        self.servers
                            .insert(id, ServerConnection::new(config, self.now));
                        self.client.handle_connected(self.now, id);
                    }
                    Output::Transmit(id, bytes) => {
                        if let Some(s) = self.servers.get_mut(&id) {
                            s.handle_input(self.now, &bytes);
                        }
                    }
                    Output::Disconnect(id) => {
                        self.servers.remove(&id);
                    }
                    Output::Event(ClientEvent::Outcome { .. }) => self.outcomes += 1,
                    Output::Event(ClientEvent::ConnectionUp { .. }) => self.ups += 1,
                    Output::Event(_) => {}
                    _ => {}
                }
            }
            for (id, s) in &mut self.servers {
                while let Some(ev) = s.poll_event() {
                    if self.auto_ack
                        && let ServerEvent::Downstream { message, .. } = ev
                    {
                        let _ = s.ack(message.message_id().as_str(), None);
                    }
                }
                if let Some(bytes) = s.poll_transmit() {
                    self.buf.push((*id, bytes));
                }
            }
            for (id, bytes) in std::mem::take(&mut self.buf) {
                moved = true;
                self.client.handle_input(self.now, id, &bytes);
            }
            if !moved {
                return;
            }
        }
    }

    fn send(&mut self, n: usize) {
        for _ in 0..n {
            self.sent += 1;
            let m = Downstream::builder("APA91bHFOtaQGSwupt5l1og", format!("m-{:010}", self.sent))
                .unwrap()
                .data(serde_json::json!({"score": "5x1", "time": "15:10"}))
                .unwrap()
                .build();
            self.client.send(self.now, m).unwrap();
        }
    }
}

/// Sends `MESSAGES` through 4 connections and waits for every ack.
#[inline(never)]
fn measure_e2e(lean: &mut Lean) {
    let target = lean.outcomes + MESSAGES;
    let mut left = MESSAGES;
    while left > 0 {
        let n = left.min(1000);
        lean.send(n);
        left -= n;
        lean.pump();
    }
    while lean.outcomes < target {
        lean.pump();
    }
}

/// A client with 1,000 messages in flight on one connection (window 1000, no answers).
fn loaded() -> Lean {
    let mut lean = Lean::new(1, 1000);
    lean.auto_ack = false;
    lean.send(REQUEUED);
    lean.pump();
    assert_eq!(lean.client.in_flight(), REQUEUED);
    lean
}

/// The connection dies: its 1,000 messages go back to the front of the queue.
#[inline(never)]
fn measure_requeue(lean: &mut Lean) {
    let id = *lean.servers.keys().next().unwrap();
    let now = lean.now;
    lean.client.handle_eof(now, id);
    while lean.client.poll_output().is_some() {}
    assert_eq!(lean.client.queued(), REQUEUED);
}

/// The connection dies and the client reconnects: requeue, a new stream set up, and the
/// 1,000 messages written again.
#[inline(never)]
fn measure_reconnect(lean: &mut Lean) {
    let id = *lean.servers.keys().next().unwrap();
    lean.servers.remove(&id);
    let now = lean.now;
    lean.client.handle_eof(now, id);
    lean.pump();
    assert_eq!(lean.client.in_flight(), REQUEUED);
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("client");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(MESSAGES as u64));
    let mut lean = Lean::new(4, 100);
    g.bench_function("end_to_end_4_connections_window_100", |b| {
        b.iter(|| measure_e2e(black_box(&mut lean)))
    });
    g.throughput(Throughput::Elements(REQUEUED as u64));
    g.bench_function("requeue_1000_in_flight", |b| {
        b.iter_batched(
            loaded,
            |mut l| measure_requeue(&mut l),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("reconnect_and_resend_1000_in_flight", |b| {
        b.iter_batched(
            loaded,
            |mut l| measure_reconnect(&mut l),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn main() {
    if let Ok(which) = std::env::var("CCS_BENCH_ONCE") {
        match which.as_str() {
            "e2e" => {
                let mut lean = Lean::new(4, 100);
                measure_e2e(&mut lean);
                println!("e2e: {MESSAGES} messages acked");
            }
            "requeue" => {
                let mut lean = loaded();
                measure_requeue(&mut lean);
                println!("requeue: {REQUEUED} messages back in the queue");
            }
            _ => {
                let mut lean = loaded();
                let before = lean.client.stats().sent;
                measure_reconnect(&mut lean);
                let resent = lean.client.stats().sent - before;
                println!("reconnect: {REQUEUED} messages in flight again ({resent} sends)");
            }
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
