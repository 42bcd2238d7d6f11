//! One message, from the moment its turn comes to its ack: failed attempts
//! counted in KV, `Progress` while the handler runs, one ack per outcome.
//!
//! The task reports back to its partition through a [`Slot`], also when it
//! panics: the slot's `Drop` frees the in-flight permit, lowers the
//! `lark_bridge_in_flight` gauge and tells the partition the message is no
//! longer running (otherwise the gauge would stay up after a panic, and the
//! conversation would wait forever).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{kv, AckKind, Message};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::{Handler, Outcome};

/// How a running message ended, as the partition needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Acknowledged or terminated: it leaves the queue.
    Settled,
    /// Handed back (a retry, or shutdown): it will be delivered again.
    HandedBack,
    /// The handler panicked; nothing was acknowledged.
    Panicked,
}

/// A message that stopped running.
#[derive(Debug)]
pub struct Finished {
    pub subject: String,
    pub sequence: u64,
    pub ended: Ended,
}

/// What every task of a worker shares.
pub struct Shared<H> {
    pub name: &'static str,
    pub handler: Arc<H>,
    pub attempts: kv::Store,
    /// Past this attempt a `Retry` becomes [`Handler::give_up`].
    pub max_attempts: u32,
    /// How often a held or running message says it is still in work.
    pub progress_every: Duration,
    /// Cancelled when shutdown's grace has run out: hand back and stop.
    pub hard_stop: CancellationToken,
}

/// A running message's place: released on drop, whatever happened.
pub struct Slot {
    pub subject: String,
    pub sequence: u64,
    pub done: mpsc::UnboundedSender<Finished>,
    pub gauge: metrics::Gauge,
    pub permit: Option<OwnedSemaphorePermit>,
    pub ended: Option<Ended>,
}

impl Slot {
    pub fn new(
        name: &'static str,
        subject: String,
        sequence: u64,
        done: mpsc::UnboundedSender<Finished>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let gauge = metrics::gauge!(crate::metric_names::IN_FLIGHT, "worker" => name);
        gauge.increment(1.0);
        Self { subject, sequence, done, gauge, permit: Some(permit), ended: None }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
        drop(self.permit.take());
        let ended = self.ended.unwrap_or(Ended::Panicked);
        // The partition may be gone (released); then nobody needs to know.
        let _ = self.done.send(Finished { subject: std::mem::take(&mut self.subject), sequence: self.sequence, ended });
    }
}

/// Handles `message` to its ack; records the outcome in `slot`.
pub async fn run<H: Handler>(shared: Arc<Shared<H>>, message: Message, mut slot: Slot) {
    let ended = process(&shared, &message).await;
    slot.ended = Some(ended);
}

async fn process<H: Handler>(shared: &Shared<H>, message: &Message) -> Ended {
    let name = shared.name;
    let Ok(info) = message.info() else {
        tracing::error!(worker = name, subject = %message.subject, "not a JetStream message; terminating it");
        ack(name, message, AckKind::Term).await;
        return Ended::Settled;
    };
    let (sequence, delivered) = (info.stream_sequence, info.delivered);
    let key = crate::topology::keys::attempts(name, sequence);
    let attempt = if delivered <= 1 { 1 } else { failed_attempts(shared, &key).await + 1 };

    let since = event_at(message).unwrap_or_else(|| std::time::SystemTime::from(info.published));
    let outcome = if attempt > shared.max_attempts {
        // Giving up failed last time (no dead letter stored): only that again.
        in_work(shared, message, since, shared.handler.give_up(message, attempt)).await
    } else {
        match in_work(shared, message, since, shared.handler.handle(message, attempt)).await {
            Some(Outcome::Retry(_)) if attempt >= shared.max_attempts => {
                tracing::warn!(worker = name, sequence, attempt, "failed on the last attempt; giving up");
                in_work(shared, message, since, shared.handler.give_up(message, attempt)).await
            }
            outcome => outcome,
        }
    };
    match outcome {
        None => {
            tracing::warn!(worker = name, sequence, "shutting down: handing the message back");
            ack(name, message, AckKind::Nak(None)).await;
            Ended::HandedBack
        }
        Some(Outcome::Done) => {
            ack(name, message, AckKind::Ack).await;
            forget(shared, &key, attempt).await;
            Ended::Settled
        }
        Some(Outcome::Drop) => {
            ack(name, message, AckKind::Term).await;
            forget(shared, &key, attempt).await;
            Ended::Settled
        }
        Some(Outcome::Retry(delay)) => {
            if let Err(e) = shared.attempts.put(&key, attempt.to_string().into()).await {
                tracing::warn!(worker = name, error = %e, "cannot record the failed attempt");
            }
            ack(name, message, AckKind::Nak(Some(delay))).await;
            Ended::HandedBack
        }
    }
}

/// Runs `work` for `message`, telling JetStream it is in work meanwhile;
/// `None` when shutdown's grace ran out first. `since` is when the event
/// the message serves was stored (for the status page's latencies).
async fn in_work<H>(
    shared: &Shared<H>,
    message: &Message,
    since: std::time::SystemTime,
    work: impl Future<Output = Outcome>,
) -> Option<Outcome> {
    let work = crate::status::WORK_SINCE.scope(since, work);
    tokio::pin!(work);
    let every = shared.progress_every;
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            o = &mut work => return Some(o),
            _ = progress.tick() => ack(shared.name, message, AckKind::Progress).await,
            _ = shared.hard_stop.cancelled() => return None,
        }
    }
}

/// The time of the event a reply answers, from its header.
fn event_at(message: &Message) -> Option<std::time::SystemTime> {
    let ms: u64 = crate::envelope::header(message.headers.as_ref(), crate::envelope::EVENT_AT_HEADER)?.parse().ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

async fn failed_attempts<H>(shared: &Shared<H>, key: &str) -> u32 {
    match shared.attempts.get(key).await {
        Ok(Some(v)) => std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        Ok(None) => 0,
        Err(e) => {
            tracing::warn!(worker = shared.name, error = %e, "cannot read failed attempts; counting from here");
            0
        }
    }
}

async fn forget<H>(shared: &Shared<H>, key: &str, attempt: u32) {
    if attempt > 1 {
        if let Err(e) = shared.attempts.purge(key).await {
            tracing::debug!(worker = shared.name, error = %e, "cannot clear failed attempts (they expire)");
        }
    }
}

/// Acks, logging a failure: the message comes back and the handlers'
/// idempotency (message ids, Lark uuids) absorbs it.
pub async fn ack(name: &'static str, message: &Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(worker = name, error = %e, "ack failed; the message will come back and be absorbed as a duplicate");
    }
}
