//! The pull loop relay and responder share: one place for the delivery
//! policy.
//!
//! - **Partitions owned by one replica**: each work queue is split into
//!   [`PARTITIONS`] partitions (the subject carries the partition, a stable
//!   hash of the conversation or chat: `common::topology`), each with its own
//!   durable consumer. Replicas lease partitions in KV ([`lease`]) and share
//!   them out evenly; a partition is pulled only by the replica holding its
//!   lease. So one conversation (one chat, for replies) is handled by one
//!   replica at a time, and that replica keeps it in order in memory
//!   ([`queue`]): no nak-and-ask-again loop, a backlog costs NATS one
//!   delivery per message. It is also why Lark's per-chat limit holds
//!   across responder replicas, and how they split the per-app limits
//!   ([`Share`], `responder::budget`; ARCHITECTURE.md, "Order").
//! - **Bounded work**: at most `max_in_flight` messages are handled at once
//!   in a replica; each partition holds at most `partition::MAX_HELD`.
//! - **Held is not redelivered**: everything pulled and not yet acknowledged
//!   gets `Progress` before the ack wait runs out ([`partition`]), so a
//!   message waiting for a free slot is never given to a second replica
//!   (point 3: FastGPT is asked once per question).
//! - **Attempts**: failed attempts are counted in a KV bucket, not by
//!   JetStream's delivery count, so a hand-over never counts as a failure.
//!   A message still failing at `max_attempts` goes to [`Handler::give_up`]
//!   (a dead letter) instead of back to the handler: every retry is
//!   bounded here, whatever path of a handler asked for it.
//! - **One ack per outcome** ([`task`]): `Done` acks, `Retry` naks with a
//!   delay, `Drop` terminates; `Progress` while the handler runs. An ack that
//!   fails is logged: the message comes back and the handlers' idempotency
//!   (message ids, Lark uuids) absorbs it.
//! - **Shutdown**: give the partitions up (what waits is handed back and the
//!   leases deleted, so other replicas take over at once); in-flight work
//!   gets `grace` to finish, then is handed back (nak, not counted).

mod lease;
mod partition;
mod queue;
mod task;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{kv, Message};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::health::Check;
use crate::topology::{ACK_WAIT, LEASE_TTL, PARTITIONS};
pub use lease::{plan, Plan, View};

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

    /// What becomes of a message whose attempt `attempt` (the worker's
    /// `max_attempts`th or later) still asked for a `Retry`: the handler is
    /// not run on it again, whatever it would say, so no path retries
    /// without end. Meant to dead-letter it with the reason; a `Retry` from
    /// here tries only this again (the dead letter could not be stored).
    /// By default it is terminated, with an error logged.
    fn give_up(&self, message: &Message, attempt: u32) -> impl Future<Output = Outcome> + Send {
        async move {
            tracing::error!(subject = %message.subject, attempt, "still failing after the last attempt; dropped");
            Outcome::Drop
        }
    }
}

/// The part of the work queue this replica holds: `held` of `of` partitions,
/// which ones in `set` (bit `p` for partition `p`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub held: u16,
    pub of: u16,
    pub set: u64,
}

const _: () = assert!(PARTITIONS <= 64, "Share::set has a bit per partition");

impl Share {
    /// Whether partition `p` is held.
    pub fn holds(&self, p: u16) -> bool {
        p < 64 && self.set & (1 << p) != 0
    }

    fn of_set(set: u64) -> Self {
        Self { held: set.count_ones() as u16, of: PARTITIONS, set }
    }
}

impl Default for Share {
    fn default() -> Self {
        Self::of_set(0)
    }
}

pub struct Worker<H> {
    pub name: &'static str,
    /// One consumer per partition, index = partition
    /// (`Topology::partition_consumers`).
    pub consumers: Vec<PullConsumer>,
    pub stream: Stream,
    /// The `{ns}_leases` bucket (`Topology::leases`).
    pub leases: kv::Store,
    pub attempts: kv::Store,
    pub handler: Arc<H>,
    /// Attempts of one message before [`Handler::give_up`] (at least 1).
    pub max_attempts: u32,
    pub max_in_flight: usize,
    /// After shutdown, how long in-flight work may still run.
    pub grace: Duration,
    /// Told whenever this replica's share of the partitions changes.
    pub share: watch::Sender<Share>,
}

/// A partition this replica runs (or is giving up).
struct Held {
    revision: u64,
    /// When the lease was last taken or renewed: past `ttl` it may be
    /// someone else's, so the partition stops before that.
    renewed_at: std::time::Instant,
    stop: CancellationToken,
    run: JoinHandle<()>,
    /// Being given up: delete the lease once the run has ended.
    releasing: bool,
    /// The lease was lost: nothing to renew or delete.
    lost: bool,
}

impl<H: Handler> Worker<H> {
    /// Leases partitions and handles their messages until `shutdown` fires.
    /// `bound` is the readiness check "consumer bound": the lease bucket
    /// answers.
    pub async fn run(self, shutdown: CancellationToken, bound: Check) {
        let name = self.name;
        let ack_wait = self
            .consumers
            .first()
            .map(|c| c.cached_info().config.ack_wait)
            .filter(|w| !w.is_zero())
            .unwrap_or(ACK_WAIT);
        let leases = lease::Leases::new(self.leases.clone(), name);
        let ttl = leases.ttl(LEASE_TTL).await;
        let tick = (ttl / 4).max(Duration::from_millis(100));
        let shared = Arc::new(task::Shared {
            name,
            handler: self.handler.clone(),
            attempts: self.attempts.clone(),
            max_attempts: self.max_attempts.max(1),
            progress_every: (ack_wait / 3).max(Duration::from_millis(100)),
            hard_stop: CancellationToken::new(),
        });
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        tracing::info!(worker = name, id = %leases.me, ?ack_wait, lease_ttl = ?ttl, "taking partitions");

        let mut held: BTreeMap<u16, Held> = BTreeMap::new();
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(tick) => {}
                }
            }
            first = false;
            let ok = self.tick(&leases, ttl, &mut held, &shared, &permits).await;
            bound.set(ok);
            self.report_backlog().await;
        }

        bound.set(false);
        tracing::info!(worker = name, "stopped pulling; handing back what waits");
        for h in held.values() {
            h.stop.cancel();
        }
        for (p, h) in std::mem::take(&mut held) {
            let _ = h.run.await;
            if !h.lost {
                leases.release(p, h.revision).await;
            }
        }
        leases.leave().await;
        self.share.send_replace(Share::default());
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.grace, permits.acquire_many(all)).await.is_err() {
            shared.hard_stop.cancel();
            let _ = permits.acquire_many(all).await;
        }
        tracing::info!(worker = name, "stopped");
    }

    /// `lark_bridge_consumer_pending{worker}`: the messages waiting in the
    /// whole work stream (a WorkQueue keeps exactly what is not yet
    /// handled), the same figure in every replica whatever partitions it
    /// holds, so `max` over replicas is the backlog.
    async fn report_backlog(&self) {
        let mut stream = self.stream.clone();
        if let Ok(info) = stream.info().await {
            metrics::gauge!(crate::metric_names::CONSUMER_PENDING, "worker" => self.name)
                .set(info.state.messages as f64);
        }
    }

    /// One round: heartbeat, renew, reap, rebalance. False when the lease
    /// bucket did not answer.
    async fn tick(
        &self,
        leases: &lease::Leases,
        ttl: Duration,
        held: &mut BTreeMap<u16, Held>,
        shared: &Arc<task::Shared<H>>,
        permits: &Arc<Semaphore>,
    ) -> bool {
        let name = self.name;
        let heartbeat = leases.heartbeat().await;
        // Renew whatever the heartbeat did: a partition whose lease could
        // not be renewed for most of its lifetime stops pulling before the
        // lease can expire and go to another replica (two owners would break
        // the order and ask FastGPT twice).
        let deadline = ttl.mul_f32(0.75);
        for (p, h) in held.iter_mut().filter(|(_, h)| !h.lost) {
            let lost = match leases.renew(*p, h.revision).await {
                Ok(Some(r)) => {
                    h.revision = r;
                    h.renewed_at = std::time::Instant::now();
                    None
                }
                Ok(None) => Some("the lease is someone else's now".to_owned()),
                Err(_) if h.renewed_at.elapsed() < deadline => None,
                Err(e) => Some(format!("not renewed for {:?}: {e}", h.renewed_at.elapsed())),
            };
            if let Some(why) = lost {
                tracing::warn!(worker = name, partition = *p, reason = %why, "lost the partition's lease; giving it up");
                h.lost = true;
                h.stop.cancel();
            }
        }
        if let Err(e) = heartbeat {
            tracing::warn!(worker = name, error = %e, "cannot reach the lease bucket (NATS outage?)");
            return false;
        }
        let ended: Vec<u16> = held.iter().filter(|(_, h)| h.run.is_finished()).map(|(p, _)| *p).collect();
        for p in ended {
            if let Some(h) = held.remove(&p) {
                if h.releasing && !h.lost {
                    leases.release(p, h.revision).await;
                }
            }
        }
        let view = match leases.view().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(worker = name, error = %e, "cannot read the partition leases");
                return false;
            }
        };
        let active: BTreeSet<u16> = held.iter().filter(|(_, h)| !h.releasing && !h.lost).map(|(p, _)| *p).collect();
        let busy: BTreeSet<u16> = held.keys().copied().collect();
        let plan = plan(&leases.me, &view, &active, &busy, PARTITIONS);
        for p in plan.release {
            if let Some(h) = held.get_mut(&p) {
                tracing::info!(worker = name, partition = p, "rebalancing: giving the partition up");
                h.releasing = true;
                h.stop.cancel();
            }
        }
        for p in plan.acquire {
            let Some(consumer) = self.consumers.get(usize::from(p)).cloned() else { continue };
            match leases.acquire(p).await {
                Ok(Some(revision)) => {
                    let stop = CancellationToken::new();
                    let run = partition::Partition {
                        shared: shared.clone(),
                        partition: p,
                        consumer,
                        stream: self.stream.clone(),
                        permits: permits.clone(),
                        stop: stop.clone(),
                    };
                    let run = tokio::spawn(run.run());
                    held.insert(
                        p,
                        Held {
                            revision,
                            renewed_at: std::time::Instant::now(),
                            stop,
                            run,
                            releasing: false,
                            lost: false,
                        },
                    );
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(worker = name, partition = p, error = %e, "cannot take the partition"),
            }
        }
        let set = held.iter().filter(|(_, h)| !h.releasing && !h.lost).fold(0u64, |set, (p, _)| set | (1 << *p));
        let now = Share::of_set(set);
        self.share.send_if_modified(|s| std::mem::replace(s, now) != now);
        metrics::gauge!(crate::metric_names::PARTITIONS_HELD, "worker" => name).set(f64::from(now.held));
        true
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
