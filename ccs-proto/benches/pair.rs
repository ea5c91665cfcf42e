//! Round trips through an in-memory client/server `Pair`: the client sends, the server role
//! decodes and acks, the client decodes the ack and reports the outcome. Window 100 and 1000.
//! Also counts heap allocations per message with a counting global allocator.
//!
//! `cargo bench -p ccs-proto --bench pair`
#![allow(missing_docs, clippy::disallowed_methods)]

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ccs_proto::ConnectionEvent;
use ccs_proto::message::Downstream;
use ccs_proto::testing::{Pair, ServerPolicy};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const BATCH: usize = 10_000;

fn connected(window: usize) -> Pair {
    let mut c = Pair::client_config();
    c.window = window;
    let mut pair = Pair::new(c, Pair::server_config(), Instant::now());
    pair.server_policy = ServerPolicy::AutoAck;
    pair.connect();
    pair
}

fn messages(n: usize, offset: usize) -> Vec<Downstream> {
    (0..n)
        .map(|i| {
            Downstream::builder(
                "fKx3Zq7nRbGf:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ-hQMRKRrZuJAEcl7B338q",
                format!("m-{:010}", offset + i),
            )
            .unwrap()
            .data(serde_json::json!({"score": "5x1", "time": "15:10"}))
            .unwrap()
            .time_to_live(600)
            .unwrap()
            .build()
        })
        .collect()
}

/// Sends every message through the pair, refilling the window as answers come back.
fn round_trips(pair: &mut Pair, batch: Vec<Downstream>) {
    let n = batch.len();
    let mut queue = batch.into_iter();
    let mut acked = 0;
    let mut next = queue.next();
    while acked < n {
        while let Some(m) = next.take() {
            let now = pair.now;
            match pair.client.send(now, m) {
                Ok(()) => next = queue.next(),
                Err(e) => {
                    next = Some(*e.message);
                    break;
                }
            }
        }
        pair.drive();
        for e in pair.take_client_events() {
            if let ConnectionEvent::Acked { message, .. } = e {
                black_box(message);
                acked += 1;
            }
        }
        pair.take_server_events();
    }
}

/// Allocations made by the client's side alone over a batch, the harness bypassed: the
/// client's `send`, `transmit_into`, `handle_input` and `poll_event` are each counted, the
/// server's work and the moving of bytes between them are not. Building the messages is
/// excluded; freeing them (the `Acked` events dropped) allocates nothing.
/// Returns (allocations, bytes) for sending and for receiving the answers.
fn client_allocations(pair: &mut Pair, batch: Vec<Downstream>) -> [(u64, u64); 2] {
    let n = batch.len();
    let mut sums = [(0u64, 0u64); 2];
    let mut count = |side: usize, r: Region<'_, System>| {
        let c = r.change();
        sums[side].0 += c.allocations as u64 + c.reallocations as u64;
        sums[side].1 += c.bytes_allocated as u64;
    };
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    let mut queue = batch.into_iter();
    let mut next = queue.next();
    let mut acked = 0;
    let now = pair.now;
    while acked < n {
        let r = Region::new(GLOBAL);
        while let Some(m) = next.take() {
            match pair.client.send(now, m) {
                Ok(()) => next = queue.next(),
                Err(e) => {
                    next = Some(*e.message);
                    break;
                }
            }
        }
        to_server.clear();
        pair.client.transmit_into(&mut to_server);
        count(0, r);
        pair.server.handle_input(now, &to_server);
        while let Some(ev) = pair.server.poll_event() {
            if let ccs_proto::server::ServerEvent::Downstream { message, .. } = &ev {
                let _ = pair.server.ack(message.message_id().as_str(), None);
            }
        }
        to_client.clear();
        pair.server.transmit_into(&mut to_client);
        let r = Region::new(GLOBAL);
        pair.client.handle_input(now, &to_client);
        while let Some(e) = pair.client.poll_event() {
            if let ConnectionEvent::Acked { message, .. } = e {
                black_box(message);
                acked += 1;
            }
        }
        count(1, r);
    }
    sums
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair_round_trip");
    g.throughput(Throughput::Elements(BATCH as u64));
    for window in [100, 1000] {
        g.bench_function(format!("window_{window}"), |b| {
            let mut pair = connected(window);
            let mut offset = 0;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch = messages(BATCH, offset);
                    offset += BATCH;
                    let start = Instant::now();
                    round_trips(&mut pair, batch);
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();

    for window in [100, 1000] {
        let mut pair = connected(window);
        round_trips(&mut pair, messages(BATCH, 0)); // warm up buffers
        let batch = messages(BATCH, BATCH);
        let region = Region::new(GLOBAL);
        round_trips(&mut pair, batch);
        let stats = region.change();
        println!(
            "pair_round_trip/window_{window}: {:.2} allocations and {:.0} bytes allocated per message \
             (client + server + harness, building the message excluded)",
            stats.allocations as f64 / BATCH as f64,
            stats.bytes_allocated as f64 / BATCH as f64,
        );
        let [send, answer] = client_allocations(&mut pair, messages(BATCH, 2 * BATCH));
        let per = |n: u64| n as f64 / BATCH as f64;
        println!(
            "pair_round_trip/window_{window}: client side alone {:.2} allocations per message \
             (reallocations included; {:.2} sending, {:.2} taking the answer) and {:.0} bytes",
            per(send.0 + answer.0),
            per(send.0),
            per(answer.0),
            per(send.1 + answer.1),
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
