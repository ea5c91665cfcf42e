//! A connection answers an ack or a nack the same whether its payload took the fast path
//! (`IncomingRef`, no copies) or the general one: two connections with the same messages in
//! flight get the same answers, one in the plain form CCS writes and one with an escape in
//! `message_type` (the same JSON to a JSON reader, declined by the fast path), and must
//! report the same events, write the same bytes and count the same.

use std::time::{Duration, Instant};

use ccs_proto::message::{Downstream, IncomingRef, MessageId};
use ccs_proto::server::ServerEvent;
use ccs_proto::testing::Pair;
use proptest::prelude::*;

const IN_FLIGHT: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Answer {
        nack: bool,
        /// `m-0` .. `m-7` are in flight (until answered); higher ids never were.
        id: usize,
        from: bool,
        registration_id: bool,
        error: Option<&'static str>,
        description: bool,
    },
    /// The owner gives up on a message: its answer becomes a late answer.
    Expire(usize),
    Advance(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let error = prop::option::of(prop::sample::select(vec![
        "BAD_REGISTRATION",
        "BAD_ACK",
        "CONNECTION_DRAINING",
        "SERVICE_UNAVAILABLE",
        "InvalidJson : INVALID_TTL : Invalid value",
        "NEW_CODE",
        "",
    ]));
    prop_oneof![
        8 => (any::<bool>(), 0..IN_FLIGHT + 3, any::<bool>(), any::<bool>(), error, any::<bool>())
            .prop_map(|(nack, id, from, registration_id, error, description)| Op::Answer {
                nack,
                id,
                from,
                registration_id,
                error,
                description,
            }),
        1 => (0..IN_FLIGHT).prop_map(Op::Expire),
        1 => any::<u8>().prop_map(Op::Advance),
    ]
}

/// A pair with `IN_FLIGHT` messages sent and unanswered.
fn loaded(epoch: Instant) -> Pair {
    let mut pair = Pair::new(Pair::client_config(), Pair::server_config(), epoch);
    pair.connect();
    for i in 0..IN_FLIGHT {
        let m = Downstream::builder("TOKEN", format!("m-{i}"))
            .unwrap()
            .build();
        pair.client.send(pair.now, m).unwrap();
    }
    pair.drive();
    pair.take_client_events();
    pair.take_server_events();
    pair
}

/// The answer as CCS writes it, and its form with `message_type` escaped.
fn payloads(op: &Op) -> Option<(String, String)> {
    let Op::Answer {
        nack,
        id,
        from,
        registration_id,
        error,
        description,
    } = op
    else {
        return None;
    };
    let mut fields = vec![format!("\"message_id\":\"m-{id}\"")];
    if *from {
        fields.push("\"from\":\"TOKEN\"".into());
    }
    if *registration_id {
        fields.push("\"registration_id\":\"NEW_TOKEN\"".into());
    }
    if let Some(e) = error {
        fields.push(format!("\"error\":\"{e}\""));
    }
    if *description {
        fields.push("\"error_description\":\"why <&>\"".into());
    }
    let kind = if *nack { "nack" } else { "ack" };
    let plain = format!("{{\"message_type\":\"{kind}\",{}}}", fields.join(","));
    let escaped = plain.replacen("\"message_type\"", "\"message\\u005ftype\"", 1);
    Some((plain, escaped))
}

fn stanza(json: &str) -> Vec<u8> {
    let escaped = json.replace('&', "&amp;").replace('<', "&lt;");
    format!("<message><gcm xmlns=\"google:mobile:data\">{escaped}</gcm></message>").into_bytes()
}

/// Runs `ops` on both pairs; the number of answers that took the fast path.
fn run(ops: &[Op]) -> Result<usize, TestCaseError> {
    #[allow(clippy::disallowed_methods)] // the simulated clock's epoch
    let epoch = Instant::now();
    let (mut fast, mut general) = (loaded(epoch), loaded(epoch));
    let mut took = 0;
    for op in ops {
        match op {
            Op::Expire(i) => {
                let id = MessageId::new(format!("m-{i}")).unwrap();
                prop_assert_eq!(fast.client.expire(&id), general.client.expire(&id));
            }
            Op::Advance(s) => {
                fast.advance(Duration::from_secs(u64::from(*s)));
                general.advance(Duration::from_secs(u64::from(*s)));
            }
            Op::Answer { .. } => {
                let (plain, escaped) = payloads(op).unwrap();
                prop_assert_eq!(IncomingRef::parse(&escaped), None);
                took += usize::from(IncomingRef::parse(&plain).is_some());
                let now = fast.now;
                fast.client.handle_input(now, &stanza(&plain));
                general.client.handle_input(now, &stanza(&escaped));
                fast.drive();
                general.drive();
            }
        }
        prop_assert_eq!(fast.take_client_events(), general.take_client_events());
        let (a, b): (Vec<ServerEvent>, Vec<ServerEvent>) =
            (fast.take_server_events(), general.take_server_events());
        prop_assert_eq!(a, b);
        // The escaped payloads are longer; every other counter must match.
        let mut counted = general.client.stats().clone();
        counted.bytes_in = fast.client.stats().bytes_in;
        prop_assert_eq!(fast.client.stats(), &counted);
        prop_assert_eq!(fast.client.state(), general.client.state());
        prop_assert_eq!(fast.client.in_flight(), general.client.in_flight());
    }
    Ok(took)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn fast_and_general_answers_give_the_same_events(ops in proptest::collection::vec(op(), 1..24)) {
        run(&ops)?;
    }
}

#[test]
fn every_kind_of_answer_once() {
    // Known, late (expired first) and unknown acks; nacks of each retry class and BAD_ACK.
    let answer = |nack, id, error| Op::Answer {
        nack,
        id,
        from: true,
        registration_id: !nack,
        error,
        description: nack,
    };
    let ops = [
        answer(false, 0, None),
        Op::Expire(1),
        answer(false, 1, None),
        answer(false, 9, None),
        answer(true, 2, Some("BAD_REGISTRATION")),
        answer(true, 3, Some("SERVICE_UNAVAILABLE")),
        answer(true, 4, Some("BAD_ACK")),
        Op::Expire(5),
        answer(true, 5, Some("NEW_CODE")),
        answer(true, 10, None),
        answer(true, 6, Some("CONNECTION_DRAINING")),
        answer(false, 7, None),
    ];
    assert_eq!(run(&ops).unwrap(), 10);
}
