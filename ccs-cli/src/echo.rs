//! The echo app server from the seed documents (Google's sample): every upstream message is
//! sent back to the device it came from, and acked once its echo was accepted; receipts are
//! acked as they come. Built on the library exactly as an application would build its own,
//! and shared by `ccs echo` (against any endpoint) and `ccs demo` (against the embedded
//! emulator).
//!
//! The seed's rule: ack an upstream message only once it is handled. Here "handled" is "its
//! echo got a final answer from CCS": acked, or refused for good (a nack the retry policy
//! does not retry, a stanza error). When the echo could not be delivered for now (its
//! outcome is `Expired` or `Unsent`, or the client refused it), the upstream message is
//! left un-acked: the server redelivers it on a later connection and it is echoed then. A
//! redelivered copy gets an echo with the same `message_id` (`echo-` and the upstream id),
//! so a device sees at most one distinct echo per message. A copy that arrives while the
//! first copy's echo is still on its way sends nothing: it waits for that echo's outcome and
//! is acked only if the echo was handled, else left for redelivery like the first.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ccs_net::{Handle, UpstreamItem, UpstreamStream};
use ccs_proto::client::Outcome;
use ccs_proto::message::{Downstream, MessageId, Upstream};
use clap::Args;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::common::ConnArgs;
use crate::runtime::Runtime;

/// Upstream messages being echoed at once (each waits for its echo's answer).
const IN_HAND: usize = 1024;

/// Flags of `ccs echo`.
#[derive(Debug, Args)]
pub(crate) struct EchoArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Seconds a graceful close (on Ctrl-C or SIGTERM) waits for the answers still missing.
    #[arg(long, default_value_t = 10)]
    close_timeout: u64,
    /// The adapter that carries the client's IO.
    #[arg(long, value_enum, default_value = "tokio")]
    runtime: Runtime,
}

/// What the echo server did, for progress lines and the demo's summary.
#[derive(Debug, Default)]
pub(crate) struct EchoStats {
    /// Upstream messages taken from the stream (redelivered copies included).
    pub(crate) upstream: AtomicU64,
    /// Echoes CCS acked.
    pub(crate) echoed: AtomicU64,
    /// Echoes refused for good (the upstream message was acked anyway: it was handled).
    pub(crate) echo_refused: AtomicU64,
    /// Echoes not delivered for now: the upstream message was left for redelivery.
    pub(crate) echo_deferred: AtomicU64,
    /// Upstream messages and receipts acked.
    pub(crate) acked: AtomicU64,
    /// Of those, upstream messages (redelivered copies included).
    pub(crate) acked_messages: AtomicU64,
    /// Acks the client refused (the connection had ended: the server redelivers).
    pub(crate) ack_refused: AtomicU64,
    /// Delivery receipts taken.
    pub(crate) receipts: AtomicU64,
    /// Notified after every ack (for a caller pacing itself on the server's progress).
    pub(crate) changed: tokio::sync::Notify,
}

impl EchoStats {
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The echo of an upstream message: to its sender, the same data, a receipt requested.
pub(crate) fn echo_of(message: &Upstream) -> Result<Downstream, String> {
    Ok(
        Downstream::builder(message.from.clone(), format!("echo-{}", message.message_id))
            .map_err(|e| e.to_string())?
            .data_object(message.data.clone())
            .delivery_receipt_requested(true)
            .build(),
    )
}

/// Echoes on their way, by upstream `message_id`. The first copy of a message sends its echo;
/// each copy that arrives meanwhile (a redelivery) shares that echo's fate: it is acked only
/// if the echo was handled, so an echo that ends `Expired` or `Unsent` leaves every copy
/// unacked, for the server to deliver again.
#[derive(Default)]
struct OnTheirWay(Mutex<HashMap<MessageId, watch::Receiver<Option<bool>>>>);

/// What [`OnTheirWay::begin`] gives a copy of a message.
enum Turn {
    /// The first copy: send the echo, then [`OnTheirWay::finish`].
    First(watch::Sender<Option<bool>>),
    /// A later copy: whether the first copy's echo was handled.
    Copy(watch::Receiver<Option<bool>>),
}

impl OnTheirWay {
    fn begin(&self, id: &MessageId) -> Turn {
        let mut on = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match on.get(id) {
            Some(rx) => Turn::Copy(rx.clone()),
            None => {
                let (tx, rx) = watch::channel(None);
                on.insert(id.clone(), rx);
                Turn::First(tx)
            }
        }
    }

    /// The first copy's echo is done: `handled` or not, for every copy waiting.
    fn finish(&self, id: &MessageId, tx: watch::Sender<Option<bool>>, handled: bool) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        let _ = tx.send(Some(handled));
    }

    /// A copy's fate: the first copy's (a first copy gone without a word: not handled).
    async fn fate_of_copy(mut rx: watch::Receiver<Option<bool>>) -> bool {
        let handled = rx.wait_for(Option::is_some).await.ok().and_then(|v| *v);
        handled.unwrap_or(false)
    }
}

/// Runs the echo server until the stream ends (the client closed).
pub(crate) async fn serve(client: Handle, mut upstream: UpstreamStream, stats: Arc<EchoStats>) {
    let mut tasks = JoinSet::new();
    let on_their_way = Arc::new(OnTheirWay::default());
    while let Some(item) = upstream.recv().await {
        while tasks.len() >= IN_HAND {
            tasks.join_next().await;
        }
        let (client, stats) = (client.clone(), Arc::clone(&stats));
        let on_their_way = Arc::clone(&on_their_way);
        tasks.spawn(async move { handle(&client, item, &stats, &on_their_way).await });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn handle(client: &Handle, item: UpstreamItem, stats: &EchoStats, on: &OnTheirWay) {
    let (item, token) = item.into_ack();
    let is_message = matches!(item, UpstreamItem::Message { .. });
    let handled = match item {
        UpstreamItem::Message { message, .. } => {
            bump(&stats.upstream);
            let id = message.message_id.clone();
            match on.begin(&id) {
                // A copy of a message whose echo is on its way: that echo's fate is this
                // copy's.
                Turn::Copy(rx) => OnTheirWay::fate_of_copy(rx).await,
                Turn::First(tx) => {
                    let handled = echo(client, &message, stats).await;
                    on.finish(&id, tx, handled);
                    handled
                }
            }
        }
        UpstreamItem::Receipt { .. } => {
            bump(&stats.receipts);
            true
        }
        _ => true,
    };
    if handled {
        match token.ack().await {
            Ok(()) => {
                bump(&stats.acked);
                if is_message {
                    bump(&stats.acked_messages);
                }
            }
            Err(_) => bump(&stats.ack_refused),
        }
        stats.changed.notify_one();
    }
}

/// Sends the echo of `message` and waits for its outcome: whether the message is handled
/// (echo acked, or refused for good) and may be acked.
async fn echo(client: &Handle, message: &Upstream, stats: &EchoStats) -> bool {
    match echo_of(message) {
        Ok(echo) => match client.send_priority(echo).await {
            Ok(outcome) if outcome.is_acked() => {
                bump(&stats.echoed);
                true
            }
            Ok(outcome @ (Outcome::Expired { .. } | Outcome::Unsent { .. })) => {
                debug!(id = %message.message_id, outcome = outcome.kind(), "echo not delivered for now: left for redelivery");
                bump(&stats.echo_deferred);
                false
            }
            Ok(outcome) => {
                warn!(id = %message.message_id, outcome = outcome.kind(), "echo refused");
                bump(&stats.echo_refused);
                true
            }
            // Refused before it was queued (the client is closing, its queue is shut).
            Err(e) => {
                debug!(id = %message.message_id, error = %e, "echo not queued: left for redelivery");
                bump(&stats.echo_deferred);
                false
            }
        },
        // An echo that cannot even be built will never be: handled.
        Err(e) => {
            warn!(id = %message.message_id, error = %e, "cannot echo");
            bump(&stats.echo_refused);
            true
        }
    }
}

/// `ccs echo`: the echo app server against an endpoint, until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: EchoArgs) -> Result<ExitCode, String> {
    let config = args.conn.config()?.manual_acks();
    let client = args.runtime.connect(config).await?;
    let upstream = client.upstream().ok_or("the upstream stream was taken")?;
    let stats = Arc::new(EchoStats::default());
    eprintln!("ccs echo: connected; echoing upstream messages until Ctrl-C or SIGTERM");
    let server = tokio::spawn(serve(client.clone(), upstream, Arc::clone(&stats)));
    crate::signals::interrupted().await?;
    eprintln!("ccs echo: closing");
    let report = client.close(Duration::from_secs(args.close_timeout)).await;
    let _ = server.await;
    let get = EchoStats::get;
    eprintln!(
        "ccs echo: {} upstream messages, {} echoed, {} refused, {} left for redelivery, {} receipts",
        get(&stats.upstream),
        get(&stats.echoed),
        get(&stats.echo_refused),
        get(&stats.echo_deferred),
        get(&stats.receipts),
    );
    if !report.unsent.is_empty() {
        eprintln!("ccs echo: never answered: {:?}", report.unsent);
    }
    if !report.unacked_upstream.is_empty() {
        let ids: Vec<_> = report
            .unacked_upstream
            .iter()
            .map(|u| u.message_id.as_str())
            .collect();
        eprintln!("ccs echo: left un-acked for the server to redeliver: {ids:?}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> MessageId {
        MessageId::new(s).unwrap()
    }

    #[tokio::test]
    async fn a_copy_is_acked_only_if_the_first_copys_echo_was_handled() {
        let on = OnTheirWay::default();
        for handled in [false, true] {
            let Turn::First(tx) = on.begin(&id("u-1")) else {
                panic!("the first copy sends the echo");
            };
            let (Turn::Copy(a), Turn::Copy(b)) = (on.begin(&id("u-1")), on.begin(&id("u-1")))
            else {
                panic!("copies meanwhile wait for it");
            };
            assert!(
                matches!(on.begin(&id("u-2")), Turn::First(_)),
                "another message is its own first"
            );
            let waiting = tokio::spawn(async move {
                (
                    OnTheirWay::fate_of_copy(a).await,
                    OnTheirWay::fate_of_copy(b).await,
                )
            });
            on.finish(&id("u-1"), tx, handled);
            assert_eq!(waiting.await.unwrap(), (handled, handled));
            on.finish(&id("u-2"), watch::channel(None).0, true);
        }
        // A first copy gone without a word (its task ended): its copies are not handled.
        let Turn::First(tx) = on.begin(&id("u-3")) else {
            panic!("first");
        };
        let Turn::Copy(rx) = on.begin(&id("u-3")) else {
            panic!("copy");
        };
        drop(tx);
        assert!(!OnTheirWay::fate_of_copy(rx).await);
    }
}
