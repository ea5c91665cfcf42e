use std::time::Instant;

use ccs_proto::ConnectionEvent;
use ccs_proto::message::Downstream;
use ccs_proto::testing::{Pair, ServerPolicy};

#[test]
fn connects_and_round_trips() {
    let mut pair = Pair::new(Pair::client_config(), Pair::server_config(), Instant::now());
    pair.server_policy = ServerPolicy::AutoAck;
    pair.connect();
    let now = pair.now;
    pair.client
        .send(now, Downstream::builder("tok", "m-1").unwrap().build())
        .unwrap();
    pair.drive();
    assert!(
        pair.client_events
            .iter()
            .any(|e| matches!(e, ConnectionEvent::Acked { .. })),
        "{:?}",
        pair.client_events
    );
}
