//! What each stream, consumer and bucket is on JetStream: retention,
//! replicas, limits. A full one refuses new writes (`discard: new`) rather
//! than dropping old ones, and work never expires: nothing accepted is lost
//! to make room.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};

use super::{subjects, Queue, Topology};
use crate::config::NatsSettings;

/// How long JetStream remembers a `Nats-Msg-Id` to drop a duplicate publish.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long a failed-attempts record is kept (messages in work have no age
/// limit; the record of one long gone is of no use).
pub const WORK_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long an answered event is remembered: past Lark's last re-push.
pub const HANDLED_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long a consumer waits for an ack before redelivering. Long calls send
/// `Progress` well before it runs out.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long a question card can be answered.
pub const QUESTIONS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long a streaming card's state is kept: past every retry of its answer.
pub const CARDS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long a partition lease lives without renewal: after a replica dies,
/// its partitions wait this long for another owner.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// Unacknowledged messages one consumer (all its replicas together) may hold.
pub const MAX_ACK_PENDING: i64 = 10_000;

/// The size and age limits of `[nats]`, as JetStream takes them.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    events_bytes: i64,
    replies_bytes: i64,
    dead_bytes: i64,
    dead_age: Duration,
    bucket_bytes: i64,
    files_bytes: i64,
    files_age: Duration,
}

impl Limits {
    pub(super) fn new(nats: &NatsSettings) -> Self {
        let bytes = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            events_bytes: bytes(nats.events_max_bytes),
            replies_bytes: bytes(nats.replies_max_bytes),
            dead_bytes: bytes(nats.dead_max_bytes),
            dead_age: Duration::from_secs(nats.dead_max_age_days.saturating_mul(24 * 3600)),
            bucket_bytes: bytes(nats.bucket_max_bytes),
            files_bytes: bytes(nats.files_max_bytes),
            files_age: Duration::from_secs(nats.files_max_age_secs),
        }
    }
}

impl Topology {
    /// How long a stored file lives; a link to it expires with it.
    pub fn files_max_age(&self) -> Duration {
        self.limits.files_age
    }

    /// A work stream: no age limit (unhandled work never expires), a size
    /// limit that refuses new work when reached (never drops old work).
    fn work_stream(&self, name: String, queue: Queue, max_bytes: i64) -> stream::Config {
        stream::Config {
            name,
            subjects: vec![subjects::queue_filter(&self.ns, queue)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            max_bytes,
            discard: stream::DiscardPolicy::New,
            allow_direct: true,
            ..Default::default()
        }
    }

    pub fn events_stream_config(&self) -> stream::Config {
        self.work_stream(self.events_stream(), Queue::Events, self.limits.events_bytes)
    }

    pub fn replies_stream_config(&self) -> stream::Config {
        self.work_stream(self.replies_stream(), Queue::Replies, self.limits.replies_bytes)
    }

    pub fn dead_stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.dead_stream(),
            subjects: vec![subjects::dead_filter(&self.ns)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: self.limits.dead_age,
            max_bytes: self.limits.dead_bytes,
            // Full: a new dead letter is refused (its message stays in work
            // and is retried), never an older one dropped.
            discard: stream::DiscardPolicy::New,
            allow_direct: true,
            ..Default::default()
        }
    }

    /// The consumer of one partition: a single filter subject (NATS 2.9),
    /// disjoint from the other partitions' as a WorkQueue stream requires.
    pub fn partition_consumer_config(
        &self,
        queue: Queue,
        partition: u16,
        ack_wait: Duration,
    ) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(self.partition_consumer(queue, partition)),
            filter_subject: self.partition_filter(queue, partition),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            // Attempts are counted by the services, which decide between a
            // retry, an apology and a dead letter; the server never gives up.
            max_deliver: -1,
            max_ack_pending: MAX_ACK_PENDING,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        }
    }

    /// The stream behind a KV bucket, as the NATS clients declare it. Declared
    /// here rather than with `create_key_value`, whose account-info query does
    /// not parse nats-server 2.9's answer.
    fn bucket_stream(&self, bucket: String, description: &str, max_age: Duration) -> stream::Config {
        stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.to_owned()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            max_bytes: self.limits.bucket_bytes,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        }
    }

    /// Conversation generations: kept as long as the conversation may go on.
    pub fn sessions_bucket_config(&self) -> stream::Config {
        self.bucket_stream(
            self.sessions_bucket(),
            "lark-bridge: conversation generation, bumped by Reset",
            Duration::ZERO,
        )
    }

    /// Events already answered, kept past Lark's last re-push (about 7.1 h
    /// after the first delivery), so a re-push hours later is not answered twice.
    pub fn handled_bucket_config(&self) -> stream::Config {
        self.bucket_stream(self.handled_bucket(), "lark-bridge: events already answered", HANDLED_MAX_AGE)
    }

    /// What each service last saw per channel, for `GET /status`.
    pub fn status_bucket_config(&self) -> stream::Config {
        self.bucket_stream(
            self.status_bucket(),
            "lark-bridge: last event, answer and error per channel",
            Duration::ZERO,
        )
    }

    /// Failed attempts of messages in work (never order waits).
    pub fn attempts_bucket_config(&self) -> stream::Config {
        self.bucket_stream(self.attempts_bucket(), "lark-bridge: failed attempts of messages in work", WORK_MAX_AGE)
    }

    /// Questions waiting for a click: a card older than this has expired.
    pub fn questions_bucket_config(&self) -> stream::Config {
        self.bucket_stream(
            self.questions_bucket(),
            "lark-bridge: question cards waiting for a click",
            QUESTIONS_MAX_AGE,
        )
    }

    /// Streaming cards, kept while their answer may still be retried or redelivered.
    pub fn cards_bucket_config(&self) -> stream::Config {
        self.bucket_stream(self.cards_bucket(), "lark-bridge: streaming card of each answer", CARDS_MAX_AGE)
    }

    /// Partition leases and the replicas alive: its `max_age` is the lease
    /// time to live (a key not renewed within it disappears).
    pub fn leases_bucket_config(&self, ttl: Duration) -> stream::Config {
        self.bucket_stream(self.leases_bucket(), "lark-bridge: partition leases of relay and responder replicas", ttl)
    }

    /// The stream behind the files bucket, as the NATS clients declare an
    /// object store (chunk and metadata subjects, rollup), with our limits:
    /// every file expires after `nats.files_max_age_secs`, and a full bucket
    /// refuses a new file (`discard: new`) rather than dropping older ones.
    /// Declared here like the KV buckets, so its settings follow the
    /// configuration and show in metrics and `--check`.
    pub fn files_bucket_config(&self) -> stream::Config {
        let bucket = self.files_bucket();
        stream::Config {
            name: format!("OBJ_{bucket}"),
            description: Some("lark-bridge: files users sent, fetched by FastGPT through signed links".to_owned()),
            subjects: vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
            max_age: self.limits.files_age,
            max_bytes: self.limits.files_bytes,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            allow_rollup: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        }
    }

    /// The streams of the bridge, without the buckets'.
    pub fn stream_configs(&self) -> Vec<stream::Config> {
        vec![self.events_stream_config(), self.replies_stream_config(), self.dead_stream_config()]
    }

    /// Every stream and bucket (as its stream) of the bridge: what metrics and
    /// `--check` watch. A new bucket belongs here too.
    pub fn all_configs(&self) -> Vec<stream::Config> {
        let mut all = self.stream_configs();
        all.extend([
            self.sessions_bucket_config(),
            self.handled_bucket_config(),
            self.status_bucket_config(),
            self.attempts_bucket_config(),
            self.leases_bucket_config(LEASE_TTL),
            self.cards_bucket_config(),
            self.questions_bucket_config(),
            self.files_bucket_config(),
        ]);
        all
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_nats::jetstream::stream;

    use crate::config::NatsSettings;
    use crate::topology::Topology;

    #[test]
    fn every_stream_and_bucket_has_a_size_limit_and_refuses_rather_than_drops() {
        let t = Topology::new(&NatsSettings {
            namespace: "ns1".into(),
            events_max_bytes: 4096,
            dead_max_age_days: 2,
            ..Default::default()
        });
        for c in t.all_configs() {
            assert!(c.max_bytes > 0, "{} has no size limit", c.name);
            assert_eq!(c.discard, stream::DiscardPolicy::New, "{} would drop old messages", c.name);
        }
        assert_eq!(t.events_stream_config().max_bytes, 4096);
        for work in [t.events_stream_config(), t.replies_stream_config()] {
            assert!(work.max_age.is_zero(), "{}: unhandled work never expires", work.name);
        }
        assert_eq!(t.dead_stream_config().max_age, Duration::from_secs(2 * 24 * 3600));
    }

    #[test]
    fn the_files_bucket_expires_and_has_its_own_limit() {
        let t = Topology::new(&NatsSettings {
            namespace: "ns1".into(),
            files_max_bytes: 1 << 20,
            files_max_age_secs: 60,
            ..Default::default()
        });
        let c = t.files_bucket_config();
        assert_eq!(c.name, "OBJ_ns1_files");
        assert_eq!(c.subjects, vec!["$O.ns1_files.C.>", "$O.ns1_files.M.>"]);
        assert_eq!((c.max_bytes, c.max_age), (1 << 20, Duration::from_secs(60)));
        assert!(c.allow_rollup && c.allow_direct, "as the NATS clients declare an object store");
        assert_eq!(t.files_max_age(), Duration::from_secs(60));
        assert!(t.all_configs().iter().any(|a| a.name == c.name), "watched with the others");
    }
}
