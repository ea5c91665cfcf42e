//! Arbitrary bytes from the server after a real handshake: the connection never panics, keeps
//! its memory bounded, reports at most one `Closed`, and every message in flight is answered
//! once or handed back. (The same property the fuzz target will check at scale.)

use std::time::{Duration, Instant};

use ccs_proto::ConnectionEvent;
use ccs_proto::connection::State;
use ccs_proto::message::Downstream;
use ccs_proto::testing::{Direction, Pair};
use proptest::prelude::*;

fn pieces() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let stanza = prop_oneof![
        Just(br#"<message><gcm xmlns="google:mobile:data">{"message_type":"ack","message_id":"m-0","from":"x"}</gcm></message>"#.to_vec()),
        Just(br#"<message><gcm xmlns="google:mobile:data">{"message_type":"nack","message_id":"m-1","error":"BAD_REGISTRATION"}</gcm></message>"#.to_vec()),
        Just(br#"<message><gcm xmlns="google:mobile:data">{"message_type":"control","control_type":"CONNECTION_DRAINING"}</gcm></message>"#.to_vec()),
        Just(br#"<message><gcm xmlns="google:mobile:data">{"from":"d","message_id":"u","data":{}}</gcm></message>"#.to_vec()),
        Just(b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>".to_vec()),
        Just(b"</stream:stream>".to_vec()),
        Just(b" ".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
        "[<>/a-z\"'=&;!\\[\\]{}:, ]{0,64}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(stanza, 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_server_bytes_after_the_handshake(input in pieces(), sends in 0usize..5) {
        #[allow(clippy::disallowed_methods)] // the simulated clock's epoch
        let epoch = Instant::now();
        let mut pair = Pair::new(Pair::client_config(), Pair::server_config(), epoch);
        pair.connect();
        pair.mute(Direction::ToClient);
        pair.mute(Direction::ToServer);
        let now = pair.now;
        for i in 0..sends {
            pair.client.send(now, Downstream::builder("t", format!("m-{i}")).unwrap().build()).unwrap();
        }
        for piece in &input {
            let now = pair.now;
            pair.client.handle_input(now, piece);
            prop_assert!(pair.client.in_flight() <= sends);
        }
        let now = pair.now + Duration::from_secs(1);
        pair.client.handle_eof(now);
        let events: Vec<_> = std::iter::from_fn(|| pair.client.poll_event()).collect();
        let closed = events.iter().filter(|e| matches!(e, ConnectionEvent::Closed { .. })).count();
        prop_assert_eq!(closed, 1);
        prop_assert_eq!(pair.client.state(), State::Closed);
        let mut answered = 0;
        for e in &events {
            match e {
                ConnectionEvent::Acked { .. }
                | ConnectionEvent::Nacked { .. }
                | ConnectionEvent::StanzaError { .. }
                | ConnectionEvent::Returned { .. } => answered += 1,
                ConnectionEvent::Closed { unanswered, .. } => answered += unanswered.len(),
                _ => {}
            }
        }
        prop_assert_eq!(answered, sends);
    }
}
