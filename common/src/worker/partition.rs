//! One partition, for as long as this replica holds its lease: pull, keep
//! each subject's messages in order ([`Queues`]), run each subject's head
//! when a slot is free, keep everything held alive with `Progress`.
//!
//! - **Nothing held is redelivered**: a message pulled
//!   ahead of a free slot gets `Progress` every third of the consumer's ack
//!   wait, so JetStream never gives it to another replica (which would ask
//!   FastGPT the same question). Pulls are bounded: at most [`MAX_HELD`]
//!   messages per partition, each pull a batch that ends by itself
//!   ([`PULL_EXPIRES`]), so a partition given up leaves no pull request behind.
//! - **No polling for order**: order is kept in memory, so a
//!   backlog costs one delivery and one ack per message. A huge backlog of one
//!   conversation fills its partition's [`MAX_HELD`]; the other conversations
//!   of that partition then wait behind it (the price of bounded memory).
//! - **Taking over**: messages the previous owner held are still pending in
//!   the consumer and come back only when their ack wait runs out. At the
//!   start the run lists them (the stream's messages between the consumer's
//!   ack floor and its last delivery) and their subjects wait for them; one
//!   that is gone (the previous owner acknowledged it) is forgotten, one at
//!   or below the ack floor is an orphan of a nats-server crash and is
//!   removed, and after [`FOREIGN_MAX_WAIT`] nothing is waited for any more.
//! - **Giving up** (lease released or lost, shutdown): stop pulling, finish
//!   the batch under way, hand back (nak) what waits, oldest first. What runs
//!   goes on and acknowledges itself; the next owner waits for it as above.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Batch;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queue::{Pushed, Queues};
use super::task::{self, Ended, Finished, Shared, Slot};
use super::Handler;

/// Messages one partition holds at most (waiting and running).
pub const MAX_HELD: usize = 512;
/// How long one pull request waits for messages.
pub const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// How often the messages waited for (a previous owner's, or handed back
/// here) are looked up.
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// Lookups per recheck at most: the recheck runs inside the partition's loop,
/// so thousands of sequential lookups would stall pulls, starts and `Progress`.
const RECHECK_MAX: usize = 32;
/// After this long, a message waited for (a previous owner's, or handed back
/// here) is not waited for any more.
const FOREIGN_MAX_WAIT: Duration = crate::handover::MAX_WAIT;
/// A message whose handler panicked comes back after this long.
const PANIC_RETRY: Duration = Duration::from_secs(5);
/// At most this many of the previous owner's messages are listed.
const MAX_SCAN: usize = 10_000;

pub struct Partition<H> {
    pub shared: Arc<Shared<H>>,
    pub partition: u16,
    pub consumer: PullConsumer,
    pub stream: Stream,
    pub permits: Arc<Semaphore>,
    /// Cancelled to give the partition up.
    pub stop: CancellationToken,
}

impl<H: Handler> Partition<H> {
    pub async fn run(self) {
        let name = self.shared.name;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        let mut queues: Queues<Message> = Queues::default();
        let mut running: HashMap<u64, Message> = HashMap::new();
        let waiting_for = self.list_foreign(&mut queues).await;
        tracing::info!(worker = name, partition = self.partition, waiting_for, "partition taken");
        // Where the last recheck stopped: the next one goes on from there.
        let mut recheck_after = 0u64;

        let mut batch: Option<Batch> = None;
        let mut pause_until: Option<Instant> = None;
        let mut stopping = false;
        let every = self.shared.progress_every;
        let mut progress = tokio::time::interval_at(Instant::now() + every, every);
        let mut recheck = tokio::time::interval(RECHECK_EVERY);
        // The recheck is idle while nothing is waited for, possibly for hours:
        // when a hand-back wakes it, one tick, not a burst of the missed ones.
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let paused = pause_until.is_some_and(|t| Instant::now() < t);
            if batch.is_none() && !stopping && !paused && queues.held() < MAX_HELD {
                let room = MAX_HELD - queues.held();
                match self.consumer.batch().max_messages(room).expires(PULL_EXPIRES).messages().await {
                    Ok(b) => batch = Some(b),
                    Err(e) => {
                        tracing::warn!(worker = name, partition = self.partition, error = %e, "cannot pull (NATS restart or outage?); retrying");
                        pause_until = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
            }
            if stopping && batch.is_none() {
                break;
            }
            let wake = pause_until.unwrap_or_else(|| Instant::now() + every);
            tokio::select! {
                Some(f) = done_rx.recv() => {
                    let message = running.remove(&f.sequence);
                    let again = match f.ended {
                        Ended::Settled => false,
                        Ended::HandedBack => true,
                        Ended::Panicked => {
                            tracing::error!(worker = name, sequence = f.sequence, "a message task panicked; handing the message back");
                            if let Some(m) = &message {
                                task::ack(name, m, AckKind::Nak(Some(PANIC_RETRY))).await;
                            }
                            true
                        }
                    };
                    queues.finish(&f.subject, f.sequence, again);
                }
                next = next_of(&mut batch), if batch.is_some() => match next {
                    Some(Ok(m)) => self.receive(m, &mut queues).await,
                    Some(Err(e)) => {
                        tracing::debug!(worker = name, partition = self.partition, error = %e, "pull ended");
                        batch = None;
                        pause_until = Some(Instant::now() + Duration::from_secs(1));
                    }
                    None => batch = None,
                },
                permit = self.permits.clone().acquire_owned(), if queues.has_ready() && !stopping => {
                    let Ok(permit) = permit else { break };
                    let next = queues.start_next();
                    tracing::debug!(worker = name, partition = self.partition, sequence = next.as_ref().map(|n| n.1), "start");
                    if let Some((subject, sequence, message)) = next {
                        running.insert(sequence, message.clone());
                        let slot = Slot::new(name, subject, sequence, done_tx.clone(), permit);
                        tokio::spawn(task::run(self.shared.clone(), message, slot));
                    }
                }
                _ = progress.tick() => {
                    for m in queues.waiting() {
                        task::ack(name, m, AckKind::Progress).await;
                    }
                }
                _ = recheck.tick(), if queues.has_outstanding() => self.recheck(&mut queues, &mut recheck_after).await,
                _ = self.stop.cancelled(), if !stopping => stopping = true,
                _ = tokio::time::sleep_until(wake), if paused => pause_until = None,
            }
        }
        let back = queues.take_waiting();
        if !back.is_empty() {
            tracing::info!(
                worker = name,
                partition = self.partition,
                handed_back = back.len(),
                "partition given up; handing back what waits"
            );
        }
        for (_, m) in back {
            task::ack(name, &m, AckKind::Nak(None)).await;
        }
    }

    async fn receive(&self, m: Message, queues: &mut Queues<Message>) {
        let name = self.shared.name;
        let Ok(info) = m.info() else {
            tracing::error!(worker = name, subject = %m.subject, "not a JetStream message; terminating it");
            task::ack(name, &m, AckKind::Term).await;
            return;
        };
        let sequence = info.stream_sequence;
        let subject = m.subject.to_string();
        tracing::debug!(worker = name, partition = self.partition, sequence, %subject, held = queues.held(), "received");
        if queues.push(&subject, sequence, m) == Pushed::AlreadyRunning {
            tracing::debug!(worker = name, sequence, "redelivery of a message running here; ignored");
        }
    }

    /// Lists the messages a previous owner was given and has not acknowledged;
    /// returns how many.
    async fn list_foreign(&self, queues: &mut Queues<Message>) -> usize {
        let info = match self.consumer.get_info().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(worker = self.shared.name, partition = self.partition, error = %e, "cannot read the consumer; not waiting for a previous owner");
                return 0;
            }
        };
        let (floor, last) = (info.ack_floor.stream_sequence, info.delivered.stream_sequence);
        // Nothing pending: nothing to wait for, and no lookup at all (the
        // common case, a partition whose previous owner finished its work).
        if last <= floor || info.num_ack_pending == 0 {
            return 0;
        }
        let filter = info.config.filter_subject.clone();
        let mut next = floor + 1;
        let mut listed = 0;
        while listed < MAX_SCAN {
            match self.stream.direct_get_next_for_subject(filter.as_str(), Some(next)).await {
                Ok(m) if m.sequence <= last => {
                    queues.expect(m.subject.as_str(), m.sequence);
                    listed += 1;
                    next = m.sequence + 1;
                }
                Ok(_) => break,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
                Err(e) => {
                    tracing::warn!(worker = self.shared.name, error = %e, "cannot list a previous owner's messages");
                    break;
                }
            }
        }
        listed
    }

    /// Stops waiting for messages (a previous owner's, or handed back here)
    /// that are gone, orphaned or overdue. Overdue ones are found without a
    /// lookup; only the oldest waited-for sequence of each subject is looked
    /// up (it alone holds its subject's head), at most [`RECHECK_MAX`] per
    /// call, going on from `after` so every subject gets its turn.
    async fn recheck(&self, queues: &mut Queues<Message>, after: &mut u64) {
        let name = self.shared.name;
        for sequence in queues.forget_overdue(FOREIGN_MAX_WAIT) {
            tracing::warn!(
                worker = name,
                sequence,
                "a message waited for did not come back; not waiting for it any more"
            );
        }
        let subjects = queues.to_recheck();
        if subjects.is_empty() {
            return;
        }
        let floor = self.consumer.get_info().await.ok().map(|i| i.ack_floor.stream_sequence);
        let split = subjects.partition_point(|(s, _)| *s <= *after);
        let mut todo: VecDeque<(u64, String)> = subjects[split..].iter().chain(&subjects[..split]).cloned().collect();
        let mut lookups = 0;
        while lookups < RECHECK_MAX {
            let Some((sequence, subject)) = todo.pop_front() else {
                *after = 0;
                break;
            };
            lookups += 1;
            *after = sequence;
            let gone = match self.stream.direct_get(sequence).await {
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => true,
                // NATS unreachable: the next tick tries again rather than
                // piling up failing lookups now.
                Err(_) => break,
                Ok(_) => match floor {
                    Some(f) if sequence <= f => self.remove_orphan(sequence, f).await,
                    _ => false,
                },
            };
            if gone {
                queues.forget(sequence);
                // A purge takes whole conversations: go on with the next one
                // of this subject now rather than one per tick.
                if let Some(next) = queues.oldest_outstanding(&subject) {
                    todo.push_front((next, subject));
                }
            }
        }
    }

    /// After a nats-server 2.9 crash, a WorkQueue stream can keep a message
    /// its consumer had acknowledged (at or below the ack floor): remove it.
    async fn remove_orphan(&self, sequence: u64, floor: u64) -> bool {
        let name = self.shared.name;
        match self.stream.delete_message(sequence).await {
            Ok(_) => {
                metrics::counter!(crate::metric_names::ORPHANS_REMOVED_TOTAL, "worker" => name).increment(1);
                tracing::warn!(
                    worker = name,
                    sequence,
                    floor,
                    "removed a message left in the work queue after it was acknowledged (a NATS crash)"
                );
                true
            }
            Err(e) => {
                tracing::warn!(worker = name, sequence, error = %e, "cannot remove an acknowledged message left in the work queue");
                false
            }
        }
    }
}

async fn next_of(batch: &mut Option<Batch>) -> Option<Result<Message, async_nats::Error>> {
    match batch {
        Some(b) => b.next().await,
        None => None,
    }
}
