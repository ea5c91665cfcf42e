//! What the engine records through the [`metrics`](https://docs.rs/metrics) facade, with the
//! `metrics` feature (the crate docs list every metric). Every call site in the engine is
//! one line, and without the feature [`Meter`] is empty and its functions do nothing (the
//! `metrics` crate is not even compiled).
//!
//! The macros look the recorder up at each call, so a recorder installed after the client
//! was built still gets everything from then on.
#![cfg_attr(not(feature = "metrics"), allow(unused_variables))]

use std::time::Instant;

use ccs_proto::client::{ClientEvent, MessageTicket};

#[cfg(feature = "metrics")]
use {
    ccs_proto::client::UNKNOWN_NACK_CODES,
    ccs_proto::connection::ConnId,
    ccs_proto::message::NackCode,
    metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge},
    std::collections::{HashMap, HashSet},
};

/// The engine's recording state: the accept time of every message waiting for its outcome
/// (for `ccs_ack_latency_seconds`), the connections that are up, and the gauges' last
/// values (a gauge is set only when its value changes).
#[derive(Debug, Default)]
pub(super) struct Meter {
    #[cfg(feature = "metrics")]
    accepted: HashMap<MessageTicket, Instant>,
    #[cfg(feature = "metrics")]
    up: HashSet<ConnId>,
    #[cfg(feature = "metrics")]
    last: Option<Gauges>,
}

/// The gauges' values as last set.
#[cfg(feature = "metrics")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gauges {
    in_flight: usize,
    queued: usize,
    connections_up: usize,
}

impl Meter {
    /// A meter; describes every metric to the recorder installed now, if any.
    pub(super) fn new() -> Self {
        #[cfg(feature = "metrics")]
        describe();
        Self::default()
    }

    /// The core accepted a message (`send` returned its ticket) at `now`.
    pub(super) fn accepted(&mut self, ticket: MessageTicket, now: Instant) {
        #[cfg(feature = "metrics")]
        {
            counter!("ccs_messages_sent_total").increment(1);
            self.accepted.insert(ticket, now);
        }
    }

    /// An event of the core, at `now` (before the engine routes it).
    pub(super) fn event(&mut self, now: Instant, ev: &ClientEvent) {
        #[cfg(feature = "metrics")]
        match ev {
            ClientEvent::Outcome {
                ticket, outcome, ..
            } => {
                if let Some(at) = self.accepted.remove(ticket) {
                    metrics::histogram!("ccs_ack_latency_seconds")
                        .record(now.saturating_duration_since(at));
                }
                if outcome.is_acked() {
                    counter!("ccs_messages_acked_total").increment(1);
                } else {
                    counter!("ccs_messages_failed_total", "kind" => outcome.kind()).increment(1);
                }
                if let Some(nack) = outcome.nack() {
                    counter!("ccs_messages_nacked_total", "code" => code_label(&nack.error))
                        .increment(1);
                }
                if matches!(outcome, ccs_proto::client::Outcome::Expired { .. }) {
                    counter!("ccs_messages_expired_total").increment(1);
                }
            }
            ClientEvent::Retrying { .. } => counter!("ccs_messages_retried_total").increment(1),
            ClientEvent::Upstream { .. } => {
                counter!("ccs_upstream_received_total", "kind" => "message").increment(1);
            }
            ClientEvent::Receipt { .. } => {
                counter!("ccs_upstream_received_total", "kind" => "receipt").increment(1);
            }
            ClientEvent::ConnectionUp { id, .. } => {
                self.up.insert(*id);
            }
            ClientEvent::ConnectionDown {
                id, will_retry_in, ..
            } => {
                self.up.remove(id);
                if will_retry_in.is_some() {
                    counter!("ccs_reconnects_total").increment(1);
                }
            }
            ClientEvent::ConnectionDraining { .. } => {
                counter!("ccs_drains_total").increment(1);
            }
            _ => {}
        }
    }

    /// After a turn: the gauges, set when they changed.
    pub(super) fn turned(&mut self, core: &ccs_proto::Client) {
        #[cfg(feature = "metrics")]
        {
            let now = Gauges {
                in_flight: core.in_flight(),
                queued: core.queued(),
                connections_up: self.up.len(),
            };
            let last = self.last.replace(now);
            let changed = |f: fn(&Gauges) -> usize| last.as_ref().map(f) != Some(f(&now));
            if changed(|g| g.in_flight) {
                gauge!("ccs_in_flight").set(now.in_flight as f64);
            }
            if changed(|g| g.queued) {
                gauge!("ccs_queued").set(now.queued as f64);
            }
            if changed(|g| g.connections_up) {
                gauge!("ccs_connections_up").set(now.connections_up as f64);
            }
        }
    }
}

/// A nack code as a label: the code as CCS writes it, every code this crate does not know as
/// [`UNKNOWN_NACK_CODES`] (a server's free text must not grow the label set).
#[cfg(feature = "metrics")]
fn code_label(code: &NackCode) -> String {
    match code {
        NackCode::Unknown(_) => UNKNOWN_NACK_CODES.to_owned(),
        known => known.as_str().to_owned(),
    }
}

/// Describes every metric (type, unit, meaning) to the current recorder.
#[cfg(feature = "metrics")]
fn describe() {
    describe_counter!(
        "ccs_messages_sent_total",
        "Messages the client accepted (each gets one outcome)"
    );
    describe_counter!("ccs_messages_acked_total", "Outcomes: acked by CCS");
    describe_counter!(
        "ccs_messages_failed_total",
        "Outcomes other than acked, by kind (nacked, rejected, failed, expired, unsent)"
    );
    describe_counter!(
        "ccs_messages_nacked_total",
        "Outcomes ended by a nack (final, or the last retryable one), by code"
    );
    describe_counter!(
        "ccs_messages_retried_total",
        "Retries scheduled after a retryable nack"
    );
    describe_counter!(
        "ccs_messages_expired_total",
        "Outcomes: expired (ack timeout or queue time)"
    );
    describe_counter!(
        "ccs_upstream_received_total",
        "Upstream messages and receipts received, by kind (message, receipt)"
    );
    describe_counter!(
        "ccs_reconnects_total",
        "Connections that ended with a new connection scheduled"
    );
    describe_counter!("ccs_drains_total", "CONNECTION_DRAINING announcements");
    describe_histogram!(
        "ccs_ack_latency_seconds",
        Unit::Seconds,
        "Time from a message's acceptance to its outcome"
    );
    describe_gauge!("ccs_in_flight", "Messages on the wire without an answer");
    describe_gauge!("ccs_queued", "Messages accepted and not on the wire");
    describe_gauge!("ccs_connections_up", "Connections set up and not ended");
}
