//! End to end over loopback TLS against the emulator (which runs on a tokio runtime the test
//! holds; the client under test has no runtime). Nothing sleeps to wait for something: the
//! tests wait on outcomes, events and the emulator's ledger, each with a timeout.

use std::collections::VecDeque;
use std::future::Future;
use std::thread;
use std::time::{Duration, Instant};

use ccs_blocking::prelude::*;
use ccs_blocking::{Event, SendTimeoutError};
use ccs_emulator::{
    ConnectionEnd, DEFAULT_SENDER_ID, DEFAULT_SERVER_KEY, Emulator, EmulatorConfig, EmulatorHandle,
    Ledger,
};
use ccs_proto::client::{DownReason, SendErrorKind};
use ccs_proto::connection::CloseReason;
use serde_json::json;

/// A safety net for a hung wait; nothing waits this long in a passing run.
const LONG: Duration = Duration::from_secs(60);

/// The emulator and the runtime it runs on.
struct Emu {
    rt: tokio::runtime::Runtime,
    handle: EmulatorHandle,
}

impl Emu {
    fn start(adjust: impl FnOnce(&mut EmulatorConfig)) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut config = EmulatorConfig::new(
            SenderId::new(DEFAULT_SENDER_ID).unwrap(),
            ServerKey::new(DEFAULT_SERVER_KEY).unwrap(),
        );
        adjust(&mut config);
        let handle = rt.block_on(Emulator::start(config)).unwrap();
        Self { rt, handle }
    }

    fn on<T>(&self, what: &str, f: impl Future<Output = T>) -> T {
        self.rt
            .block_on(async { tokio::time::timeout(LONG, f).await })
            .unwrap_or_else(|_| panic!("timed out: {what}"))
    }

    fn wait_until(&self, what: &str, done: impl FnMut(&Ledger) -> bool) -> Ledger {
        self.on(what, self.handle.wait_until(done))
    }

    fn config(&self) -> Config {
        self.handle.client_config()
    }

    fn shutdown(self) -> Ledger {
        let Self { rt, handle } = self;
        rt.block_on(async { tokio::time::timeout(LONG, handle.shutdown()).await })
            .expect("timed out: emulator shutdown")
    }
}

fn msg(i: usize) -> Downstream {
    Downstream::builder(format!("token-{}", i % 97), format!("m-{i}"))
        .unwrap()
        .data(json!({"n": i.to_string()}))
        .unwrap()
        .build()
}

fn big_msg(i: usize, bytes: usize) -> Downstream {
    Downstream::builder("token-big", format!("big-{i}"))
        .unwrap()
        .data(json!({ "blob": "x".repeat(bytes) }))
        .unwrap()
        .build()
}

fn assert_clean(ledger: &Ledger) {
    let unanswered = ledger.unanswered_ids();
    assert!(
        unanswered.is_empty(),
        "unanswered: {:?}",
        &unanswered[..unanswered.len().min(10)]
    );
    assert_eq!(ledger.total.window_violations, 0);
}

/// The next event matching `pick`, skipping others.
fn next_event<T>(events: &mut Events, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    let deadline = Instant::now() + LONG;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(e) => {
                if let Some(t) = pick(e) {
                    return t;
                }
            }
            Err(ccs_blocking::EventRecvTimeoutError::Overflowed(_)) => {}
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[test]
fn ten_thousand_messages_from_four_threads_sharing_one_client() {
    const PER_THREAD: usize = 2_500;
    let emu = Emu::start(|_| {});
    let client = Client::connect(emu.config()).unwrap();
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                let ids = (t * PER_THREAD)..((t + 1) * PER_THREAD);
                let mut acked = 0;
                if t % 2 == 0 {
                    // One message at a time.
                    for i in ids {
                        let outcome = client.send_timeout(msg(i), LONG).unwrap();
                        assert!(outcome.is_acked(), "{outcome:?}");
                        acked += 1;
                    }
                } else {
                    // Pipelined: up to 100 in flight from this thread.
                    let mut pending = VecDeque::new();
                    for i in ids {
                        pending.push_back(client.enqueue(msg(i), false).unwrap());
                        if pending.len() >= 100 {
                            let mut p: Pending = pending.pop_front().unwrap();
                            assert!(p.wait_timeout(LONG).expect("outcome").unwrap().is_acked());
                            acked += 1;
                        }
                    }
                    for p in pending {
                        assert!(p.wait().unwrap().is_acked());
                        acked += 1;
                    }
                }
                acked
            })
        })
        .collect();
    let acked: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    eprintln!("10 000 messages from 4 threads in {:?}", started.elapsed());
    assert_eq!(acked, 4 * PER_THREAD);
    let report = client.close(Duration::from_secs(5));
    assert!(report.unsent.is_empty());
    assert_eq!(client.connection_threads(), 0);
    let ledger = emu.shutdown();
    assert_clean(&ledger);
    assert_eq!(ledger.total.unique_ids, 10_000);
    assert_eq!(ledger.total.acked, 10_000);
}

#[test]
fn manual_ack_with_recv_timeout() {
    let emu = Emu::start(|c| c.upstream_after_bind = Duration::ZERO);
    let client = Client::connect(emu.config().manual_acks()).unwrap();
    let mut upstream = client.upstream().unwrap();
    assert!(client.upstream().is_none(), "taken once");
    assert_eq!(
        upstream
            .recv_timeout(Duration::from_millis(20))
            .unwrap_err(),
        std::sync::mpsc::RecvTimeoutError::Timeout
    );
    assert_eq!(
        upstream.try_recv().err(),
        Some(ccs_net::TryRecvError::Empty)
    );
    emu.handle
        .inject_upstream_data("device-1", serde_json::Map::new());
    let Ok(UpstreamItem::Message { message, ack }) = upstream.recv_timeout(LONG) else {
        panic!("expected a message with an ack token")
    };
    assert_eq!(message.from, "device-1");
    assert!(ack.is_manual());
    assert_eq!(ack.message_id(), &message.message_id);
    assert_eq!(
        emu.handle.ledger().total.upstream_acked,
        0,
        "not acked before the application says so"
    );
    ack.ack().unwrap();
    emu.wait_until("the ack", |l| l.total.upstream_acked == 1);
    let report = client.close(Duration::from_secs(5));
    assert!(report.unacked_upstream.is_empty());
    assert_eq!(upstream.iter().count(), 0, "the stream ends once closed");
    emu.shutdown();
}

#[test]
fn send_timeout_that_times_out_delivers_the_outcome_as_a_detached_event() {
    let slow = Duration::from_millis(400);
    let emu = Emu::start(|c| c.faults.slow_ack = Some((slow, slow)));
    let client = Client::connect(emu.config()).unwrap();
    let mut events = client.events();
    let started = Instant::now();
    let err = client
        .send_timeout(msg(1), Duration::from_millis(50))
        .unwrap_err();
    assert!(started.elapsed() < slow, "gave up at the timeout");
    assert!(err.was_queued(), "{err}");
    let SendTimeoutError::OutcomeLater { message_id } = err else {
        panic!("{err:?}")
    };
    assert_eq!(message_id.as_str(), "m-1");
    let outcome = next_event(&mut events, "the detached outcome", |e| match e {
        Event::DetachedOutcome { message, outcome } => {
            assert_eq!(message.message_id(), &message_id);
            Some(outcome)
        }
        _ => None,
    });
    assert!(outcome.is_acked(), "{outcome:?}");
    client.close(Duration::from_secs(5));
    let ledger = emu.shutdown();
    assert_clean(&ledger);
    assert_eq!(ledger.total.downstream_received, 1, "sent once");
}

#[test]
fn send_timeout_gives_the_message_back_when_it_was_never_queued() {
    let emu = Emu::start(|c| {
        c.faults.slow_ack = Some((Duration::from_secs(60), Duration::from_secs(60)));
    });
    // With a window of one, one message is on the wire and one waits: the queue is full.
    let client = Client::connect(emu.config().window(1).max_queue(1)).unwrap();
    let first = client.try_send(msg(0)).unwrap();
    emu.wait_until("on the wire", |l| l.total.downstream_received == 1);
    // `enqueue`, not `try_send`: the engine frees the first one's place in the queue just
    // after handing it to the writer, which may be after the emulator has it.
    let second = client.enqueue(msg(1), false).unwrap();
    let err = client
        .send_timeout(msg(2), Duration::from_millis(50))
        .unwrap_err();
    assert!(!err.was_queued());
    let SendTimeoutError::NotQueued(back) = err else {
        panic!("{err:?}")
    };
    assert_eq!(back.message_id().as_str(), "m-2");
    let report = client.close(Duration::from_millis(50));
    assert_eq!(report.unsent.len(), 2);
    for p in [first, second] {
        assert!(matches!(p.wait().unwrap(), Outcome::Unsent { .. }));
    }
    emu.shutdown();
}

#[test]
fn batches_block_until_queued_then_until_every_outcome() {
    let emu = Emu::start(|c| {
        c.faults.slow_ack = Some((Duration::from_secs(60), Duration::from_secs(60)));
    });
    let client = Client::connect(emu.config()).unwrap();
    // No answer comes: the batch is queued, and waiting for its outcomes times out.
    let mut held = client.enqueue_batch((0..3).map(msg).collect(), false);
    assert_eq!(held.missing(), 3);
    assert!(held.wait_timeout(Duration::from_millis(20)).is_none());
    emu.wait_until("on the wire", |l| l.total.downstream_received == 3);
    let report = client.close(Duration::from_millis(50));
    assert_eq!(report.unsent.len(), 3);
    let outcomes = held.wait_timeout(LONG).expect("answered by the close");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(Outcome::Unsent { .. }))),
        "{outcomes:?}"
    );
    assert!(
        held.wait_timeout(LONG).unwrap().is_empty(),
        "spent once taken"
    );
    emu.shutdown();

    let emu = Emu::start(|_| {});
    let client = Client::connect(emu.config()).unwrap();
    let outcomes = client.send_batch((0..250).map(msg).collect());
    assert_eq!(outcomes.len(), 250);
    assert!(
        outcomes
            .iter()
            .all(|o| o.as_ref().is_ok_and(Outcome::is_acked))
    );
    let priority = client.enqueue_batch(vec![msg(250)], true).wait();
    assert!(priority[0].as_ref().unwrap().is_acked());
    client.close(Duration::from_secs(5));
    let ledger = emu.shutdown();
    assert_clean(&ledger);
    assert_eq!(ledger.total.unique_ids, 251);
}

#[test]
fn wrong_key_fails_fast_and_clearly() {
    let emu = Emu::start(|_| {});
    let mut config = emu.config();
    config.client.connection.server_key = ServerKey::new("not-the-key").unwrap();
    let err = Client::connect(config).unwrap_err();
    assert!(
        matches!(&err, ConnectError::AuthFailed { condition, .. } if condition == "not-authorized"),
        "{err:?}"
    );
    assert!(err.to_string().contains("server key"), "{err}");
    emu.shutdown();
}

#[test]
fn untrusted_certificate_fails_fast_and_clearly() {
    let emu = Emu::start(|_| {});
    let mut config = emu.config();
    config.tls.ca_pem.clear();
    config.tls.only_extra_roots = false;
    // Untrusted is permanent: no waiting for the first-connection deadline.
    config.client.reconnect.first_connect_timeout = Duration::from_secs(3600);
    let started = Instant::now();
    let err = Client::connect(config).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(matches!(err, ConnectError::Connect(_)), "{err:?}");
    assert!(
        text.contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );
    emu.shutdown();
}

#[test]
fn close_with_messages_in_flight_gives_them_back() {
    let emu = Emu::start(|c| {
        c.faults.slow_ack = Some((Duration::from_secs(60), Duration::from_secs(60)));
    });
    let client = Client::connect(emu.config()).unwrap();
    let pending: Vec<_> = (0..10).map(|i| client.try_send(msg(i)).unwrap()).collect();
    emu.wait_until("all on the wire", |l| l.total.downstream_received == 10);
    let report = client.close(Duration::from_millis(100));
    assert_eq!(report.unsent.len(), 10);
    assert!(report.deadline_passed);
    assert_eq!(client.connection_threads(), 0, "close joins every thread");
    for p in pending {
        assert!(matches!(
            p.wait().unwrap(),
            Outcome::Unsent {
                maybe_delivered: true
            }
        ));
    }
    let after = client.try_send(msg(99)).unwrap_err();
    assert_eq!(after.kind, SendErrorKind::Closing);
    assert!(after.message.is_some(), "a refused message is given back");
    emu.shutdown();
}

#[test]
fn a_peer_that_stops_reading_leaves_no_thread_or_socket_behind() {
    let emu = Emu::start(|c| {
        c.max_data_bytes = 1 << 20;
        c.window = 200;
    });
    let mut config = emu.config();
    config.client.connection.window = 200;
    config.client.connection.ping_after = Duration::from_millis(300);
    config.client.connection.ping_timeout = Duration::from_millis(300);
    config.disconnect_grace = Duration::from_millis(300);
    let client = Client::connect(config).unwrap();
    let mut events = client.events();
    assert_eq!(client.connection_threads(), 2, "a reader and a writer");
    emu.handle.pause_reading();
    // About 10 MB: more than both TCP buffers hold, so the connection's writer blocks.
    let pending: Vec<_> = (0..170)
        .map(|i| client.try_send(big_msg(i, 60 * 1024)).unwrap())
        .collect();
    // The core gives the connection up when its ping goes unanswered; its socket must then
    // close and its threads end, although the peer still reads nothing.
    let mut dead = None;
    let graceful = next_event(
        &mut events,
        "the dead connection's socket closes",
        |e| match e {
            Event::ConnectionDown { id, reason, .. } if dead.is_none() => {
                assert_eq!(reason, DownReason::Closed(CloseReason::PingTimeout));
                dead = Some(id);
                None
            }
            Event::SocketClosed { id, graceful } if Some(id) == dead => Some(graceful),
            _ => None,
        },
    );
    assert!(
        !graceful,
        "nothing could be flushed to a peer that does not read"
    );
    let sockets = client.stats().unwrap().sockets;
    assert!(sockets <= 1, "only the replacement may be open: {sockets}");
    let threads = client.connection_threads();
    assert!(
        threads <= 2,
        "only the replacement's threads may live: {threads}"
    );
    // The server, reading again, finds the connection closed without the stream end.
    emu.handle.resume_reading();
    let ledger = emu.wait_until("the server sees the end", |l| {
        l.connection(1).is_some_and(|c| c.end.is_some())
    });
    let end = ledger.connection(1).unwrap().end.clone();
    assert_ne!(end, Some(ConnectionEnd::ClientClosed));
    // Nothing is lost: the messages go out again on the next connection.
    for mut p in pending {
        assert!(p.wait_timeout(LONG).expect("outcome").unwrap().is_acked());
    }
    client.close(Duration::from_secs(5));
    assert_eq!(client.connection_threads(), 0);
    assert_clean(&emu.shutdown());
}

#[test]
fn close_returns_after_the_stream_end_and_close_notify_are_written() {
    let emu = Emu::start(|_| {});
    let client = Client::connect(emu.config()).unwrap();
    let mut events = client.events();
    assert!(client.send(msg(1)).unwrap().is_acked());
    client.close(Duration::from_secs(5));
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::SocketClosed { graceful: true, .. })),
        "the socket closed gracefully before close returned: {seen:?}"
    );
    let ledger = emu.wait_until("the server sees every connection end", |l| {
        l.connections_closed == l.connections_opened
    });
    for c in &ledger.connections {
        assert_eq!(c.end, Some(ConnectionEnd::ClientClosed), "{c:?}");
    }
    assert_clean(&emu.shutdown());
}
