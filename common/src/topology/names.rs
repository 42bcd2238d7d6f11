//! The name of every stream, subject, consumer and bucket, each under the
//! namespace (so two deployments can share a NATS) and each written once.

use super::subjects::{self, Queue, Subject};
use super::Topology;

impl Topology {
    pub fn events_stream(&self) -> String {
        format!("{}_events", self.ns)
    }
    pub fn event_subject(&self, channel: &str, conversation_token: &str) -> String {
        subjects::work(&self.ns, Queue::Events, channel, conversation_token)
    }
    pub fn replies_stream(&self) -> String {
        format!("{}_replies", self.ns)
    }
    pub fn reply_subject(&self, channel: &str, chat_token: &str) -> String {
        subjects::work(&self.ns, Queue::Replies, channel, chat_token)
    }
    /// Any subject of this namespace, parsed: the one place that reads the layout.
    pub fn parse<'a>(&self, subject: &'a str) -> Option<Subject<'a>> {
        subjects::parse(&self.ns, subject)
    }
    /// `subject` in today's layout: a work subject written before partitions
    /// (a dead letter's original subject) moves to its partition.
    pub fn current_subject(&self, subject: &str) -> String {
        subjects::current(&self.ns, subject)
    }
    /// The stream of a work queue.
    pub fn work_stream_name(&self, queue: Queue) -> String {
        match queue {
            Queue::Events => self.events_stream(),
            Queue::Replies => self.replies_stream(),
        }
    }
    /// The durable consumer of one partition of a work queue.
    pub fn partition_consumer(&self, queue: Queue, partition: u16) -> String {
        format!("{}_{}_{partition}", self.ns, queue.consumer())
    }
    /// The filter subject of that consumer.
    pub fn partition_filter(&self, queue: Queue, partition: u16) -> String {
        subjects::partition_filter(&self.ns, queue, partition)
    }
    pub fn leases_bucket(&self) -> String {
        format!("{}_leases", self.ns)
    }
    pub fn dead_stream(&self) -> String {
        format!("{}_dead", self.ns)
    }
    /// `stage` is `relay` or `responder`: where the message died.
    pub fn dead_subject(&self, channel: &str, stage: &str) -> String {
        subjects::dead(&self.ns, channel, stage)
    }
    pub fn sessions_bucket(&self) -> String {
        format!("{}_sessions", self.ns)
    }
    pub fn handled_bucket(&self) -> String {
        format!("{}_handled", self.ns)
    }
    pub fn status_bucket(&self) -> String {
        format!("{}_status", self.ns)
    }
    pub fn attempts_bucket(&self) -> String {
        format!("{}_attempts", self.ns)
    }
    /// The object store bucket of the files users send (its stream is
    /// `OBJ_{bucket}`).
    pub fn files_bucket(&self) -> String {
        format!("{}_files", self.ns)
    }
    /// The question waiting for a click, per conversation.
    pub fn questions_bucket(&self) -> String {
        format!("{}_questions", self.ns)
    }
    /// The streaming card of each answer: its id, phase and the sequences
    /// reserved on it, for whichever responder replica owns the chat next.
    pub fn cards_bucket(&self) -> String {
        format!("{}_cards", self.ns)
    }
    /// Drafts of streamed answers, relay to responder, on core NATS (no
    /// stream: a lost draft costs nothing, the next one carries the whole
    /// text). The subject carries the chat's replies partition, so a draft
    /// reaches the one responder that owns the chat, as its replies do.
    pub fn draft_subject(&self, channel: &str, chat_token: &str) -> String {
        subjects::draft(&self.ns, channel, chat_token)
    }
    /// Every dead letter of this namespace.
    pub fn dead_filter(&self) -> String {
        subjects::dead_filter(&self.ns)
    }
    /// What the owner of replies partition `partition` subscribes to for drafts.
    pub fn drafts_filter(&self, partition: u16) -> String {
        subjects::drafts_filter(&self.ns, partition)
    }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::stream;

    use crate::config::NatsSettings;
    use crate::topology::{partition_of, Queue, Topology};

    #[test]
    fn every_name_is_under_the_namespace() {
        let t = Topology::new(&NatsSettings { namespace: "ns1".into(), ..Default::default() });
        let p = partition_of("support", "abc");
        assert_eq!(t.event_subject("support", "abc"), format!("ns1.events.{p}.support.abc"));
        assert_eq!(t.parse(&t.reply_subject("support", "def")).map(|s| s.channel()), Some("support"));
        assert_eq!(t.dead_subject("support", "responder"), "ns1.dead.support.responder");
        for n in [
            t.events_stream(),
            t.replies_stream(),
            t.dead_stream(),
            t.relay_consumer(),
            t.responder_consumer(),
            t.sessions_bucket(),
            t.attempts_bucket(),
            t.handled_bucket(),
            t.leases_bucket(),
            t.files_bucket(),
            t.partition_consumer(Queue::Events, 15),
        ] {
            assert!(n.starts_with("ns1_"), "{n}");
            assert!(!n.contains('.'), "{n}");
        }
        assert_eq!(t.events_stream_config().subjects, vec!["ns1.events.>"]);
        assert_eq!(t.events_stream_config().retention, stream::RetentionPolicy::WorkQueue);
    }
}
