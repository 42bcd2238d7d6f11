//! The subject layout of the work queues, written and parsed here only.
//!
//! ```text
//! {ns}.events.{partition}.{channel}.{conversation}
//! {ns}.replies.{partition}.{channel}.{chat}
//! {ns}.dead.{channel}.{stage}
//! {ns}.drafts.{partition}.{channel}.{chat}     (core NATS: the partition of the chat's replies)
//! ```
//!
//! Why a partition: one replica at a time owns a partition (a lease in KV,
//! `common::worker`), so it can keep the conversations of that partition in
//! order in memory, without asking NATS about every held message. The
//! partition is a stable hash of the channel and the token, so a
//! conversation (events) or a chat (replies) always lands in the same one;
//! each partition has a consumer of its own, with the single filter subject
//! `{ns}.{queue}.{partition}.>` that NATS 2.9 allows. The number of partitions
//! is fixed ([`PARTITIONS`]): every ingress, relay and responder must agree on
//! it, and changing it would move conversations between partitions while
//! their messages wait (drain the work queues first).

use crate::service_name::Service;
use sha2::{Digest, Sha256};

/// Partitions of each work queue: the unit of ownership between replicas.
/// 16 spreads well over up to 16 replicas per service and costs 16 idle
/// pull requests per queue per couple of seconds.
pub const PARTITIONS: u16 = 16;

/// The two work queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Lark events, for the relay; the token is the conversation.
    Events,
    /// Reply commands, for the responder; the token is the chat.
    Replies,
}

impl Queue {
    /// The subject token of the queue.
    pub fn token(self) -> &'static str {
        match self {
            Queue::Events => "events",
            Queue::Replies => "replies",
        }
    }

    /// The service that consumes it (names its consumers and leases).
    pub fn consumer(self) -> &'static str {
        match self {
            Queue::Events => Service::Relay.name(),
            Queue::Replies => Service::Responder.name(),
        }
    }
}

/// A subject of the bridge, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    Work { queue: Queue, partition: u16, channel: &'a str, token: &'a str },
    Dead { channel: &'a str, stage: &'a str },
}

impl<'a> Subject<'a> {
    pub fn channel(&self) -> &'a str {
        match self {
            Subject::Work { channel, .. } | Subject::Dead { channel, .. } => channel,
        }
    }
}

/// The partition of `token` (a conversation or chat token) in `channel`.
pub fn partition_of(channel: &str, token: &str) -> u16 {
    let mut h = Sha256::new();
    h.update(channel.as_bytes());
    h.update(b"\0");
    h.update(token.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(PARTITIONS)) as u16
}

pub(super) fn work(ns: &str, queue: Queue, channel: &str, token: &str) -> String {
    format!("{ns}.{}.{}.{channel}.{token}", queue.token(), partition_of(channel, token))
}

pub(super) fn draft(ns: &str, channel: &str, chat_token: &str) -> String {
    format!("{ns}.drafts.{}.{channel}.{chat_token}", partition_of(channel, chat_token))
}

pub(super) fn drafts_filter(ns: &str, partition: u16) -> String {
    format!("{ns}.drafts.{partition}.>")
}

pub(super) fn partition_filter(ns: &str, queue: Queue, partition: u16) -> String {
    format!("{ns}.{}.{partition}.>", queue.token())
}

pub(super) fn dead(ns: &str, channel: &str, stage: &str) -> String {
    format!("{ns}.dead.{channel}.{stage}")
}

/// Every subject of a work queue (its stream's subjects).
pub(super) fn queue_filter(ns: &str, queue: Queue) -> String {
    format!("{ns}.{}.>", queue.token())
}

/// Every dead letter (the dead-letter stream's subjects).
pub(super) fn dead_filter(ns: &str) -> String {
    format!("{ns}.dead.>")
}

/// Parses a subject of namespace `ns`; `None` for anything else.
pub(super) fn parse<'a>(ns: &str, subject: &'a str) -> Option<Subject<'a>> {
    let rest = subject.strip_prefix(ns)?.strip_prefix('.')?;
    let mut parts = rest.split('.');
    let kind = parts.next()?;
    let subject = match kind {
        "events" | "replies" => {
            let queue = if kind == "events" { Queue::Events } else { Queue::Replies };
            let partition = parts.next()?.parse().ok().filter(|p| *p < PARTITIONS)?;
            Subject::Work { queue, partition, channel: parts.next()?, token: parts.next()? }
        }
        "dead" => Subject::Dead { channel: parts.next()?, stage: parts.next()? },
        _ => return None,
    };
    parts.next().is_none().then_some(subject)
}

/// A work subject of the layout before partitions
/// (`{ns}.{events|replies}.{channel}.{token}`, as a dead letter from then
/// remembers it) in today's layout; any other subject as it is.
pub(super) fn current(ns: &str, subject: &str) -> String {
    if parse(ns, subject).is_some() {
        return subject.to_owned();
    }
    let parts: Option<Vec<&str>> =
        subject.strip_prefix(ns).and_then(|r| r.strip_prefix('.')).map(|r| r.split('.').collect());
    match parts.as_deref() {
        Some(["events", channel, token]) => work(ns, Queue::Events, channel, token),
        Some(["replies", channel, token]) => work(ns, Queue::Replies, channel, token),
        _ => subject.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_subjects_parse_back() {
        let s = work("ns1", Queue::Events, "support", "abc");
        let p = partition_of("support", "abc");
        assert_eq!(s, format!("ns1.events.{p}.support.abc"));
        assert_eq!(
            parse("ns1", &s),
            Some(Subject::Work { queue: Queue::Events, partition: p, channel: "support", token: "abc" })
        );
        let r = work("ns1", Queue::Replies, "support", "def");
        assert!(matches!(parse("ns1", &r), Some(Subject::Work { queue: Queue::Replies, token: "def", .. })));
        assert_eq!(
            parse("ns1", &dead("ns1", "support", "relay")),
            Some(Subject::Dead { channel: "support", stage: "relay" })
        );
        for other in ["ns2.events.1.support.abc", "ns1.events.99.c.t", "ns1.events.1.c", "ns1.x.c.s", "ns1"] {
            assert_eq!(parse("ns1", other), None, "{other}");
        }
        assert!(s.starts_with(&partition_filter("ns1", Queue::Events, p).trim_end_matches('>').to_owned()));
    }

    #[test]
    fn a_subject_from_before_partitions_moves_to_its_partition() {
        let now = work("ns1", Queue::Replies, "support", "def");
        assert_eq!(current("ns1", "ns1.replies.support.def"), now);
        assert_eq!(current("ns1", &now), now);
        assert_eq!(current("ns1", "ns1.dead.support.relay"), "ns1.dead.support.relay");
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of("c", "t1"), partition_of("c", "t1"));
        let mut used = std::collections::HashSet::new();
        for i in 0..400 {
            used.insert(partition_of("support", &format!("{i:016x}")));
        }
        assert_eq!(used.len(), usize::from(PARTITIONS), "every partition gets conversations");
    }
}
