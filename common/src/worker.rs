//! The pull loop relay and responder share: one place for the delivery
//! policy.
//!
//! - **Bounded work**: at most `max_in_flight` messages are handled at once;
//!   a permit is taken before a message is pulled.
//! - **Order per subject**: the subjects carry a conversation (events) or a
//!   chat (replies). In a WorkQueue stream an acknowledged message leaves the
//!   stream, so if the first message on our subject is older than ours, an
//!   earlier one is still in work somewhere: hold ours (sending `Progress`)
//!   until it is first. Only the next in line (the second message of its
//!   subject) is held; later ones are handed back with a short delay, not
//!   counted as an attempt, so a burst in one chat never fills the slots other
//!   chats need. Different subjects run concurrently.
//! - **Orphans**: after a crash of nats-server 2.9, a WorkQueue stream can keep
//!   a message its consumer had already acknowledged; it would block its
//!   subject forever. A message that keeps waiting checks the head of its
//!   subject against the consumer's ack floor and removes it when it is at or
//!   below it (acknowledged, so handled).
//! - **Attempts**: failed attempts are counted in a KV bucket, not by
//!   JetStream's delivery count, so waiting for order never counts as a failure.
//! - **One ack per outcome**: `Done` acks, `Retry` naks with a delay, `Drop`
//!   terminates; `Progress` keeps a slow call (a FastGPT workflow) from being
//!   redelivered. An ack that fails is logged: the message comes back and the
//!   handlers' idempotency (message ids, Lark uuids) absorbs it.
//! - **Shutdown**: stop pulling; give in-flight work `grace` to finish; hand
//!   back (nak, not counted) what is still running so another replica takes it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, kv, AckKind, Message};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::health::Check;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled; its effect is durable. Ack.
    Done,
    /// A transient failure: try again after the delay (counts as an attempt).
    Retry(Duration),
    /// Cannot ever be handled (already dead-lettered or logged). Terminate.
    Drop,
}

/// Handles one message. `attempt` starts at 1 and grows with each `Retry`.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, message: &Message, attempt: u32) -> impl Future<Output = Outcome> + Send;
}

/// How long a message may wait for an earlier one of its subject before it is
/// handed back (not counted as an attempt).
const MAX_HOLD: Duration = Duration::from_secs(300);
/// After this many deliveries a waiting message checks its head for an orphan.
const ORPHAN_CHECK_AFTER: i64 = 4;
/// When a message is handed back to wait for its turn, how soon it returns.
const LATER_BACKOFF: Duration = Duration::from_millis(250);

/// Whether a message may be handled now.
enum Turn {
    Now,
    Later,
}
/// How often a held or running message tells JetStream it is still in work.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub struct Worker<H> {
    pub name: &'static str,
    pub consumer: PullConsumer,
    pub stream: jetstream::stream::Stream,
    pub attempts: kv::Store,
    pub handler: Arc<H>,
    pub max_in_flight: usize,
    /// Hold a message while an earlier one of its subject is in work.
    pub ordered: bool,
    /// After shutdown, how long in-flight work may still run.
    pub grace: Duration,
}

impl<H: Handler> Worker<H> {
    /// Pulls and handles messages until `shutdown` fires. `bound` is the
    /// readiness check "consumer bound".
    pub async fn run(self, shutdown: CancellationToken, bound: Check) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.max_in_flight));
        let hard_stop = CancellationToken::new();
        let mut tasks = JoinSet::new();

        'outer: while !shutdown.is_cancelled() {
            let batch = this.max_in_flight.min(256);
            let messages =
                this.consumer.stream().max_messages_per_batch(batch).heartbeat(Duration::from_secs(5)).messages().await;
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    bound.set(false);
                    tracing::warn!(worker = this.name, error = %e, "cannot pull from the consumer; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            bound.set(true);
            loop {
                while let Some(joined) = tasks.try_join_next() {
                    if let Err(e) = joined {
                        tracing::error!(worker = this.name, error = %e, "a message task panicked");
                    }
                }
                let permit = tokio::select! {
                    _ = shutdown.cancelled() => break 'outer,
                    p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'outer },
                };
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break 'outer,
                    n = messages.next() => n,
                };
                match next {
                    Some(Ok(message)) => {
                        let this = this.clone();
                        let hard_stop = hard_stop.clone();
                        let in_flight = metrics::gauge!("lark_bridge_in_flight", "worker" => this.name);
                        in_flight.increment(1.0);
                        tasks.spawn(async move {
                            this.process(message, hard_stop).await;
                            in_flight.decrement(1.0);
                            drop(permit);
                        });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(worker = this.name, error = %e, "pull error (NATS restart or outage?); continuing");
                    }
                    None => {
                        tracing::warn!(worker = this.name, "message stream ended; pulling again");
                        continue 'outer;
                    }
                }
            }
        }
        bound.set(false);
        tracing::info!(worker = this.name, in_flight = tasks.len(), "stopped pulling; finishing work in flight");
        if tokio::time::timeout(this.grace, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
            hard_stop.cancel();
            while tasks.join_next().await.is_some() {}
        }
        tracing::info!(worker = this.name, "stopped");
    }

    async fn process(&self, message: Message, hard_stop: CancellationToken) {
        let Ok(info) = message.info() else {
            tracing::error!(worker = self.name, subject = %message.subject, "not a JetStream message; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        };
        let (sequence, delivered) = (info.stream_sequence, info.delivered);
        // Consumer lag as the server sees it: messages not yet delivered.
        metrics::gauge!("lark_bridge_consumer_pending", "worker" => self.name).set(info.pending as f64);
        let key = format!("{}.{sequence}", self.name);

        if self.ordered {
            match self.wait_for_turn(&message, sequence, delivered, &hard_stop).await {
                Turn::Now => {}
                Turn::Later => {
                    tracing::debug!(worker = self.name, sequence, "not next in line; handing back for now");
                    self.ack(&message, AckKind::Nak(Some(LATER_BACKOFF))).await;
                    return;
                }
            }
        }

        let attempt = if delivered <= 1 { 1 } else { self.failed_attempts(&key).await + 1 };
        let outcome = {
            let work = self.handler.handle(&message, attempt);
            tokio::pin!(work);
            let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
            loop {
                tokio::select! {
                    o = &mut work => break Some(o),
                    _ = progress.tick() => self.ack(&message, AckKind::Progress).await,
                    _ = hard_stop.cancelled() => break None,
                }
            }
        };
        match outcome {
            None => {
                tracing::warn!(worker = self.name, sequence, "shutting down: handing the message back");
                self.ack(&message, AckKind::Nak(None)).await;
            }
            Some(Outcome::Done) => {
                self.ack(&message, AckKind::Ack).await;
                self.forget(&key, attempt).await;
            }
            Some(Outcome::Drop) => {
                self.ack(&message, AckKind::Term).await;
                self.forget(&key, attempt).await;
            }
            Some(Outcome::Retry(delay)) => {
                if let Err(e) = self.attempts.put(&key, attempt.to_string().into()).await {
                    tracing::warn!(worker = self.name, error = %e, "cannot record the failed attempt");
                }
                self.ack(&message, AckKind::Nak(Some(delay))).await;
            }
        }
    }

    /// Holds the message while an older one of its subject is in the stream,
    /// if it is next in line; otherwise says to come back later.
    async fn wait_for_turn(
        &self,
        message: &Message,
        sequence: u64,
        delivered: i64,
        hard_stop: &CancellationToken,
    ) -> Turn {
        let subject = message.subject.as_str();
        let Some(mut first) = self.older_first(subject, sequence).await else { return Turn::Now };
        // Handed back a few times already: make sure the head is not an orphan.
        if delivered >= ORPHAN_CHECK_AFTER && self.remove_if_orphan(first).await {
            match self.older_first(subject, sequence).await {
                Some(f) => first = f,
                None => return Turn::Now,
            }
        }
        match self.stream.direct_get_next_for_subject(subject, Some(first + 1)).await {
            Ok(second) if second.sequence == sequence => {}
            _ => return Turn::Later,
        }
        let started = tokio::time::Instant::now();
        let mut last_progress = started;
        let mut pause = Duration::from_millis(10);
        loop {
            tokio::select! {
                _ = hard_stop.cancelled() => return Turn::Later,
                _ = tokio::time::sleep(pause) => {}
            }
            let Some(head) = self.older_first(subject, sequence).await else { return Turn::Now };
            if started.elapsed() > MAX_HOLD {
                return Turn::Later;
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                self.ack(message, AckKind::Progress).await;
                last_progress = tokio::time::Instant::now();
                self.remove_if_orphan(head).await;
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Removes stream message `sequence` if the consumer has acknowledged it
    /// (it is at or below the ack floor) but the stream still holds it.
    async fn remove_if_orphan(&self, sequence: u64) -> bool {
        let floor = match self.consumer.get_info().await {
            Ok(info) => info.ack_floor.stream_sequence,
            Err(e) => {
                tracing::debug!(worker = self.name, error = %e, "cannot read the consumer's ack floor");
                return false;
            }
        };
        if sequence > floor {
            return false;
        }
        match self.stream.delete_message(sequence).await {
            Ok(_) => {
                metrics::counter!("lark_bridge_orphans_removed_total", "worker" => self.name).increment(1);
                tracing::warn!(worker = self.name, sequence, floor, "removed a message left in the work queue after it was acknowledged (a NATS crash); it blocked its conversation");
                true
            }
            Err(e) => {
                tracing::warn!(worker = self.name, sequence, error = %e, "cannot remove an acknowledged message left in the work queue");
                false
            }
        }
    }

    /// The sequence of the first message on `subject` when it is older than
    /// ours; `None` when ours is first (or the lookup failed: go ahead rather
    /// than stall).
    async fn older_first(&self, subject: &str, sequence: u64) -> Option<u64> {
        match self.stream.direct_get_next_for_subject(subject, None).await {
            Ok(first) if first.sequence < sequence => Some(first.sequence),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(worker = self.name, error = %e, "order lookup failed; not waiting");
                None
            }
        }
    }

    async fn failed_attempts(&self, key: &str) -> u32 {
        match self.attempts.get(key).await {
            Ok(Some(v)) => std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
            Ok(None) => 0,
            Err(e) => {
                tracing::warn!(worker = self.name, error = %e, "cannot read failed attempts; counting from here");
                0
            }
        }
    }

    async fn forget(&self, key: &str, attempt: u32) {
        if attempt > 1 {
            if let Err(e) = self.attempts.purge(key).await {
                tracing::debug!(worker = self.name, error = %e, "cannot clear failed attempts (they expire)");
            }
        }
    }

    async fn ack(&self, message: &Message, kind: AckKind) {
        if let Err(e) = message.ack_with(kind).await {
            tracing::warn!(worker = self.name, error = %e, "ack failed; the message will come back and be absorbed as a duplicate");
        }
    }
}

/// Exponential backoff with jitter: 1 s, 2 s, 4 s... capped, ±25 %.
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let base = base.min(cap);
    let jitter = rand::random_range(0.75..1.25);
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            let b1 = backoff(1, Duration::from_secs(60));
            assert!(b1 >= Duration::from_millis(750) && b1 <= Duration::from_millis(1250), "{b1:?}");
            let b10 = backoff(10, Duration::from_secs(60));
            assert!(b10 <= Duration::from_secs(75), "{b10:?}");
            assert!(b10 >= Duration::from_secs(45), "{b10:?}");
        }
    }
}
