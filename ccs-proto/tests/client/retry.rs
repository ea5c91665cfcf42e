//! The retry policy (PROTOCOL.md Part 1): server errors and unknown codes retried with
//! backoff up to a bound, rate limits reported unless asked otherwise, every other code
//! final, stanza errors final; "never retry"; every retry visible as an event and a counter.

use std::time::Duration;

use crate::fixtures::*;
use ccs_proto::client::{ClientConfig, ClientEvent, FailReason, Jitter, Outcome, RetryPolicy};
use ccs_proto::message::NackCode;

fn predictable(max_attempts: u32) -> ClientConfig {
    let mut c = client_config();
    c.retry = RetryPolicy::default();
    c.retry.max_attempts = max_attempts;
    c.retry.jitter = Jitter::None;
    c
}

fn retrying(events: &[ClientEvent]) -> Vec<(u32, Duration, NackCode)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Retrying {
                attempt,
                after,
                nack,
                ..
            } => Some((*attempt, *after, nack.error.clone())),
            _ => None,
        })
        .collect()
}

/// Sends "m", nacks it with `code` each time it arrives, `times` times, then acks it.
fn nack_then_ack(config: ClientConfig, code: &NackCode, times: usize) -> Net {
    let mut net = net_up(config);
    net.send(msg("m"));
    net.drive();
    for _ in 0..times {
        let c = net.only_conn();
        if net.pending(c).is_empty() {
            break;
        }
        net.server(c)
            .nack("m", code.clone(), Some("try later"))
            .unwrap();
        net.drive();
        // Wait out the delay.
        net.advance(secs(40));
    }
    net.ack_all();
    net.drive();
    net
}

#[test]
fn service_unavailable_is_retried_with_backoff_then_acked() {
    let net = nack_then_ack(predictable(5), &NackCode::ServiceUnavailable, 3);
    let r = retrying(&net.client_events);
    assert_eq!(
        r,
        [
            (2, secs(1), NackCode::ServiceUnavailable),
            (3, secs(2), NackCode::ServiceUnavailable),
            (4, secs(4), NackCode::ServiceUnavailable),
        ]
    );
    let got = outcomes(&net.client_events);
    assert_eq!(got.len(), 1);
    assert!(got[0].2.is_acked());
    let s = net.client.stats();
    assert_eq!((s.retried, s.sent, s.nacked, s.acked), (3, 4, 3, 1));
    assert_eq!(s.nacked_by_code.get("SERVICE_UNAVAILABLE"), Some(&3));
}

#[test]
fn the_retry_waits_exactly_its_delay() {
    let mut net = net_up(predictable(5));
    net.send(msg("m"));
    net.drive();
    let c = net.only_conn();
    net.server(c)
        .nack("m", NackCode::InternalServerError, None)
        .unwrap();
    net.drive();
    // The nack arrived now: the retry is due exactly 1 s later.
    assert!(net.pending(c).is_empty());
    assert_eq!(net.client.queued(), 1);
    net.advance(ms(999));
    assert_eq!(net.client.queued(), 1);
    net.advance(ms(1));
    assert_eq!(net.client.queued(), 0);
    assert_eq!(net.client.in_flight(), 1);
    net.drive();
    assert_eq!(net.pending(c), ["m"]);
}

#[test]
fn retries_give_up_after_max_attempts() {
    let net = nack_then_ack(predictable(3), &NackCode::parse("NEW_CODE"), 5);
    assert_eq!(retrying(&net.client_events).len(), 2);
    let got = outcomes(&net.client_events);
    assert_eq!(got.len(), 1);
    let Outcome::Failed {
        reason: FailReason::Nack(nack),
        attempts: 3,
    } = &got[0].2
    else {
        panic!("{:?}", got[0].2)
    };
    assert_eq!(nack.error.as_str(), "NEW_CODE");
    assert_eq!(net.client.stats().failed, 1);
}

#[test]
fn never_retry_reports_at_once() {
    let mut config = client_config();
    config.retry = RetryPolicy::never();
    let net = nack_then_ack(config, &NackCode::ServiceUnavailable, 1);
    assert!(retrying(&net.client_events).is_empty());
    let got = outcomes(&net.client_events);
    assert!(matches!(
        got[0].2,
        Outcome::Failed {
            reason: FailReason::Nack(_),
            attempts: 1
        }
    ));
    assert_eq!(net.client.stats().retried, 0);
}

#[test]
fn rate_limits_are_reported_unless_retrying_them_is_asked_for() {
    for code in [
        NackCode::DeviceMessageRateExceeded,
        NackCode::TopicsMessageRateExceeded,
        NackCode::QuotaExceeded,
    ] {
        let net = nack_then_ack(predictable(5), &code, 1);
        let got = outcomes(&net.client_events);
        assert!(
            matches!(&got[0].2, Outcome::Nacked { nack } if nack.error == code),
            "{got:?}"
        );
        let mut config = predictable(5);
        config.retry.retry_rate_limited = true;
        let net = nack_then_ack(config, &code, 1);
        assert_eq!(retrying(&net.client_events).len(), 1);
        assert!(outcomes(&net.client_events)[0].2.is_acked());
    }
}

#[test]
fn every_final_code_is_reported_as_nacked() {
    let finals = [
        "BAD_REGISTRATION",
        "DEVICE_UNREGISTERED",
        // (BAD_ACK answers one of our acks, never a downstream message: connection tests.)
        "INVALID_JSON",
        "AUTHENTICATION_FAILED",
        "INVALID_TTL",
        "JSON_TYPE_ERROR",
        "INVALID_APNS_CREDENTIAL",
        "JSON_PARSING_ERROR",
        "InvalidJson : INVALID_TTL : Invalid value (-1)",
    ];
    let mut net = net_up(predictable(5));
    let c = net.only_conn();
    for (i, _) in finals.iter().enumerate() {
        net.send(msg(&format!("m-{i}")));
    }
    net.drive();
    for (i, code) in finals.iter().enumerate() {
        net.server(c)
            .nack(&format!("m-{i}"), NackCode::parse(code), None)
            .unwrap();
    }
    net.drive();
    let got = outcomes(&net.client_events);
    assert_eq!(got.len(), finals.len());
    for ((_, id, outcome), code) in got.iter().zip(finals) {
        let Outcome::Nacked { nack } = outcome else {
            panic!("{id}: {outcome:?}")
        };
        assert_eq!(nack.error, NackCode::parse(code));
    }
    assert!(retrying(&net.client_events).is_empty());
}

#[test]
fn a_retried_message_goes_before_newer_ones() {
    let mut config = predictable(5);
    config.connection.window = 1;
    let mut net = net_up(config);
    let c = net.only_conn();
    net.send(msg("old"));
    net.drive();
    net.server(c)
        .nack("old", NackCode::ServiceUnavailable, None)
        .unwrap();
    net.drive();
    // While "old" waits for its retry, newer messages take the window.
    for i in 0..3 {
        net.send(msg(&format!("new-{i}")));
    }
    net.drive();
    assert_eq!(net.pending(c), ["new-0"]);
    net.advance(secs(2)); // "old" is due, back at the front of the queue
    net.ack_all();
    net.drive();
    assert_eq!(net.pending(c), ["old"]);
}

#[test]
fn a_retry_due_at_once_leaves_no_timer_in_the_past() {
    let mut config = predictable(5);
    config.retry.base = std::time::Duration::ZERO;
    let mut net = net_up(config);
    let c = net.only_conn();
    net.send(msg("m"));
    net.drive();
    net.server(c)
        .nack("m", NackCode::ServiceUnavailable, None)
        .unwrap();
    net.drive();
    assert!(net.violations.is_empty(), "{:?}", net.violations);
    assert!(net.client.poll_timeout().is_none_or(|t| t > net.now));
    assert_eq!(net.pending(c), ["m"], "sent again at once");
}

#[test]
fn delayed_retries_go_out_by_due_time_not_by_nack_order() {
    let mut net = net_up(predictable(5));
    let c = net.only_conn();
    net.send(msg("a"));
    net.send(msg("b"));
    net.drive();
    // "a": first retry 1 s after its nack; nacked again at 1.1 s, its next retry is 2 s away
    // (due at 3.1 s).
    net.server(c)
        .nack("a", NackCode::ServiceUnavailable, None)
        .unwrap();
    net.drive();
    net.advance(Duration::from_millis(1100));
    net.drive();
    assert_eq!(net.pending(c), ["b", "a"]);
    net.server(c)
        .nack("a", NackCode::ServiceUnavailable, None)
        .unwrap();
    net.drive();
    // "b", nacked later (at 1.6 s), is due sooner (at 2.6 s).
    net.advance(Duration::from_millis(500));
    net.server(c)
        .nack("b", NackCode::ServiceUnavailable, None)
        .unwrap();
    net.drive();
    assert!(net.pending(c).is_empty());
    net.advance(Duration::from_millis(1100)); // 2.7 s
    net.drive();
    assert_eq!(net.pending(c), ["b"]);
    net.advance(Duration::from_millis(500)); // 3.2 s
    net.drive();
    assert_eq!(net.pending(c), ["b", "a"]);
}

#[test]
fn unknown_nack_codes_share_one_counter() {
    // A server that puts free text in `error` must not grow the stats without bound.
    let mut net = net_up(predictable(1));
    let c = net.only_conn();
    for i in 0..50 {
        net.send(msg(&format!("m-{i}")));
    }
    net.drive();
    for i in 0..50 {
        net.server(c)
            .nack(
                &format!("m-{i}"),
                NackCode::Unknown(format!("SOMETHING_ODD_{i}")),
                None,
            )
            .unwrap();
    }
    net.drive();
    let s = net.client.stats();
    assert_eq!(s.nacked, 50);
    assert_eq!(s.nacked_by_code.len(), 1, "{:?}", s.nacked_by_code);
    assert_eq!(
        s.nacked_by_code.get(ccs_proto::client::UNKNOWN_NACK_CODES),
        Some(&50)
    );
}
