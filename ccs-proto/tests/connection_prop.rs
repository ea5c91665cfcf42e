//! Random operation sequences against a client/server pair: every message sent is answered
//! exactly once or handed back when the connection closes, the window is never exceeded, and
//! nothing but upstream messages and receipts is ever acked.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ccs_proto::ConnectionEvent;
use ccs_proto::message::{Ack, Control, Downstream, Incoming, MessageId, Nack, NackCode, Receipt};
use ccs_proto::server::ServerEvent;
use ccs_proto::testing::Pair;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Send(u8),
    Ack(usize),
    Nack(usize, u8),
    StanzaError(usize),
    Upstream,
    Receipt,
    Drain,
    BogusAnswer,
    Advance(u16),
    Drop,
    ServerClose,
    ClientClose(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..20).prop_map(Op::Send),
        4 => any::<usize>().prop_map(Op::Ack),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, c)| Op::Nack(i, c)),
        1 => any::<usize>().prop_map(Op::StanzaError),
        2 => Just(Op::Upstream),
        1 => Just(Op::Receipt),
        1 => Just(Op::Drain),
        1 => Just(Op::BogusAnswer),
        2 => (0u16..120).prop_map(Op::Advance),
        1 => Just(Op::Drop),
        1 => Just(Op::ServerClose),
        1 => (0u8..10).prop_map(Op::ClientClose),
    ]
}

const CODES: [NackCode; 5] = [
    NackCode::BadRegistration,
    NackCode::ServiceUnavailable,
    NackCode::ConnectionDraining,
    NackCode::InvalidJson,
    NackCode::DeviceMessageRateExceeded,
];

fn run(ops: Vec<Op>, window: usize, chunk_seed: u64) -> Result<(), TestCaseError> {
    let mut c = Pair::client_config();
    c.window = window;
    #[allow(clippy::disallowed_methods)] // the simulated clock's epoch
    let epoch = Instant::now();
    let mut pair = Pair::new(c, Pair::server_config(), epoch).with_chunking(chunk_seed, 50);
    pair.connect();
    let mut next_id = 0u64;
    let mut sent: HashSet<String> = HashSet::new();
    let mut ackable: HashSet<String> = HashSet::new();
    for op in ops {
        let now = pair.now;
        match op {
            Op::Send(n) => {
                for _ in 0..n {
                    let id = format!("m-{next_id}");
                    next_id += 1;
                    let m = Downstream::builder("TOKEN", id.as_str()).unwrap().build();
                    match pair.client.send(now, m) {
                        Ok(()) => {
                            sent.insert(id);
                        }
                        Err(e) => prop_assert_eq!(e.message.message_id().as_str(), id.as_str()),
                    }
                }
            }
            Op::Ack(i) | Op::Nack(i, _) | Op::StanzaError(i) => {
                let pending: Vec<String> = pair
                    .server
                    .pending_ids()
                    .iter()
                    .map(|m| m.as_str().to_owned())
                    .collect();
                if !pending.is_empty() {
                    let id = &pending[i % pending.len()];
                    let _ = match op {
                        Op::Ack(_) => pair.server.ack(id, None),
                        Op::Nack(_, c) => {
                            pair.server
                                .nack(id, CODES[c as usize % CODES.len()].clone(), None)
                        }
                        _ => pair.server.stanza_error(id, "bad-request", None),
                    };
                }
            }
            Op::Upstream => {
                let id = format!("up-{next_id}");
                next_id += 1;
                let json = format!(r#"{{"from":"DEV","message_id":"{id}","data":{{}}}}"#);
                if let Ok(Incoming::Upstream(u)) = Incoming::from_json(&json)
                    && pair.server.send_upstream(&u).is_ok()
                {
                    ackable.insert(id);
                }
            }
            Op::Receipt => {
                let orig = MessageId::new(format!("m-{next_id}")).unwrap();
                next_id += 1;
                let r = Receipt::sent_to_device(&orig, "DEV", 1);
                if pair.server.send_receipt(&r).is_ok() {
                    ackable.insert(r.message_id.as_str().to_owned());
                }
            }
            Op::Drain => {
                let _ = pair.server.send_control(&Control::connection_draining());
            }
            Op::BogusAnswer => {
                let id = MessageId::new("never-sent").unwrap();
                let _ = pair
                    .server
                    .send_raw_incoming(&Incoming::Ack(Ack::new(id.clone())));
                let _ = pair
                    .server
                    .send_raw_incoming(&Incoming::Nack(Nack::new(id, NackCode::BadAck)));
            }
            Op::Advance(s) => pair.advance(Duration::from_secs(u64::from(s))),
            Op::Drop => pair.disconnect(),
            Op::ServerClose => {
                let _ = pair.server.close(pair.now);
            }
            Op::ClientClose(s) => pair
                .client
                .close(now, now + Duration::from_secs(u64::from(s))),
        }
        pair.drive();
        prop_assert!(pair.client.in_flight() <= window);
        prop_assert_eq!(pair.server.window_violations(), 0);
    }
    // Let it end, whatever state it is in.
    pair.disconnect();
    pair.drive();

    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let mut closed = 0;
    for e in &pair.client_events {
        let mut count = |m: &Downstream| {
            *outcomes
                .entry(m.message_id().as_str().to_owned())
                .or_default() += 1
        };
        match e {
            ConnectionEvent::Acked { message, .. }
            | ConnectionEvent::Nacked { message, .. }
            | ConnectionEvent::StanzaError { message, .. }
            | ConnectionEvent::Returned { message } => count(message),
            ConnectionEvent::Closed { unanswered, .. } => {
                closed += 1;
                unanswered.iter().for_each(|m| count(m));
            }
            _ => {}
        }
    }
    prop_assert_eq!(closed, 1, "exactly one Closed event");
    for id in &sent {
        prop_assert_eq!(
            outcomes.get(id).copied(),
            Some(1),
            "message {} answered once",
            id
        );
    }
    prop_assert_eq!(
        outcomes.len(),
        sent.len(),
        "no outcome for a message never sent"
    );
    for e in &pair.server_events {
        if let ServerEvent::AppAck(a) | ServerEvent::UnknownAck(a) = e {
            prop_assert!(
                ackable.contains(a.message_id.as_str()),
                "acked {:?}",
                a.message_id
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_operations_keep_the_invariant(
        ops in proptest::collection::vec(op(), 1..60),
        window in prop_oneof![Just(1usize), Just(3), Just(100)],
        chunk_seed in any::<u64>(),
    ) {
        run(ops, window, chunk_seed)?;
    }
}
