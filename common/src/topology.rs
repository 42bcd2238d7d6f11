//! Every JetStream stream, subject, consumer and KV bucket of the bridge: the
//! one place where names and settings live. Whichever service starts first
//! creates them; the others find them (creation is idempotent).
//!
//! ```text
//! {ns}.events.{p}.{channel}.{conversation} ──▶ stream {ns}_events  (WorkQueue) ──▶ consumers {ns}_relay_{p}
//! {ns}.replies.{p}.{channel}.{chat}        ──▶ stream {ns}_replies (WorkQueue) ──▶ consumers {ns}_responder_{p}
//! {ns}.dead.{channel}.{stage}           ──▶ stream {ns}_dead    (Limits, kept nats.dead_max_age_days)
//! {ns}.drafts.{p}.{channel}.{chat}         ──▶ core NATS, to the responder owning replies partition {p}
//! KV {ns}_sessions: conversation generation (Reset)
//! KV {ns}_attempts: failed attempts of a message in work
//! KV {ns}_handled:  events already answered (de-duplicates Lark's re-pushes)
//! KV {ns}_status:   last event, answer and error per channel and service, and each replica's counts of the last hour (GET /status)
//! KV {ns}_leases:   which replica owns which partition ({p}, 0..PARTITIONS), and who is alive
//! Object store {ns}_files: files users sent, served to FastGPT by the ingress (kept nats.files_max_age_secs)
//! ```
//!
//! The partition in a work subject is a stable hash of its conversation
//! (events) or chat (replies): each partition has its own consumer and is
//! pulled by the one replica leasing it, which keeps its conversations in
//! order in memory (`common::worker`). The layout is written and parsed in
//! one place, `topology/subjects.rs` (through [`Topology::parse`]).
//!
//! Only NATS 2.9 features are used: Debian's nats-server is 2.9.
//!
//! Settings follow the configuration: every stream
//! and bucket has a size limit (`nats.*_max_bytes`) with `discard: new`, so a
//! full one refuses a write (the writer retries, Lark gets 503) instead of
//! dropping old work; work streams have no age limit (unhandled work never
//! expires). At start an existing stream whose settings differ is updated in
//! place, or the start fails naming what NATS cannot change ([`diff`]). How
//! full each one is goes to metrics and `--check` ([`usage`]).

mod diff;
mod subjects;
pub mod usage;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};

use crate::config::NatsSettings;
pub use diff::{describe, diff, Change, Diff};
pub use subjects::{partition_of, Queue, Subject, PARTITIONS};

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

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot create or find JetStream stream {name}: {source} (is JetStream enabled on the server, `nats-server -js`?)")]
    Stream {
        name: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot create or find consumer {name} on stream {stream}: {source}")]
    Consumer {
        name: String,
        stream: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot create or find KV bucket {name}: {source}")]
    Bucket {
        name: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot create or find the object store bucket {name} (the files users send): {source}")]
    ObjectBucket {
        name: String,
        #[source]
        source: async_nats::Error,
    },
    #[error(
        "JetStream stream {name} differs from the configuration in what NATS cannot change on an existing stream: \
         {changes}. To apply it, drain the stream (stop the ingress, wait until `nats stream info {name}` shows 0 \
         messages), delete it (`nats stream rm {name}`) and start a service again, which creates it as configured; \
         or use a new nats.namespace"
    )]
    Mismatch { name: String, changes: String },
    #[error(
        "JetStream stream {name} holds {holds} bytes, more than its configured size limit of {limit} bytes: NATS \
         would drop the oldest messages to apply it. Raise the limit (nats.*_max_bytes) to at least {holds}, or \
         lower it once the stream has drained below it"
    )]
    WouldDrop { name: String, holds: u64, limit: u64 },
    #[error("cannot update JetStream stream {name} to the configuration ({changes}): {source}{hint}")]
    Update {
        name: String,
        changes: String,
        hint: &'static str,
        #[source]
        source: async_nats::Error,
    },
}

impl TopologyError {
    /// True when retrying cannot help: the stream exists with a setting NATS
    /// cannot change in place, and an operator must act (the message says how).
    pub fn is_permanent(&self) -> bool {
        matches!(self, TopologyError::Mismatch { .. } | TopologyError::WouldDrop { .. })
    }
}

/// Names and settings, under one namespace.
#[derive(Debug, Clone)]
pub struct Topology {
    ns: String,
    replicas: usize,
    limits: Limits,
}

/// The size and age limits of `[nats]`, as JetStream takes them.
#[derive(Debug, Clone)]
struct Limits {
    events_bytes: i64,
    replies_bytes: i64,
    dead_bytes: i64,
    dead_age: Duration,
    bucket_bytes: i64,
    files_bytes: i64,
    files_age: Duration,
}

impl Topology {
    pub fn new(nats: &NatsSettings) -> Self {
        let bytes = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let limits = Limits {
            events_bytes: bytes(nats.events_max_bytes),
            replies_bytes: bytes(nats.replies_max_bytes),
            dead_bytes: bytes(nats.dead_max_bytes),
            dead_age: Duration::from_secs(nats.dead_max_age_days.saturating_mul(24 * 3600)),
            bucket_bytes: bytes(nats.bucket_max_bytes),
            files_bytes: bytes(nats.files_max_bytes),
            files_age: Duration::from_secs(nats.files_max_age_secs),
        };
        Self { ns: nats.namespace.clone(), replicas: nats.replicas, limits }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    // ---- names ---------------------------------------------------------

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
    pub fn relay_consumer(&self) -> String {
        format!("{}_relay", self.ns)
    }
    pub fn responder_consumer(&self) -> String {
        format!("{}_responder", self.ns)
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
    /// How long a stored file lives; a link to it expires with it.
    pub fn files_max_age(&self) -> Duration {
        self.limits.files_age
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
    /// What the owner of replies partition `partition` subscribes to for drafts.
    pub fn drafts_filter(&self, partition: u16) -> String {
        subjects::drafts_filter(&self.ns, partition)
    }

    // ---- settings ------------------------------------------------------

    /// A work stream: no age limit (unhandled work never expires), a size
    /// limit that refuses new work when reached (never drops old work).
    fn work_stream(&self, name: String, kind: &str, max_bytes: i64) -> stream::Config {
        stream::Config {
            name,
            subjects: vec![format!("{}.{kind}.>", self.ns)],
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
        self.work_stream(self.events_stream(), "events", self.limits.events_bytes)
    }

    pub fn replies_stream_config(&self) -> stream::Config {
        self.work_stream(self.replies_stream(), "replies", self.limits.replies_bytes)
    }

    pub fn dead_stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.dead_stream(),
            subjects: vec![format!("{}.dead.>", self.ns)],
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

    // ---- creation ------------------------------------------------------

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

    /// Creates the streams, or brings existing ones to the configuration;
    /// returns what it changed. Idempotent; safe to run from every replica.
    pub async fn ensure_streams(&self, js: &jetstream::Context) -> Result<Vec<(String, Change)>, TopologyError> {
        let mut changed = Vec::new();
        for cfg in self.stream_configs() {
            let name = cfg.name.clone();
            changed.extend(ensure_stream(js, cfg).await?.into_iter().map(|c| (name.clone(), c)));
        }
        Ok(changed)
    }

    /// The durable consumers of every partition of `queue`, index = partition,
    /// shared by the service's replicas (a partition is pulled by the replica
    /// holding its lease). `ack_wait` applies to consumers created now; an
    /// existing consumer keeps its own (the worker reads it from the consumer),
    /// which is how a test makes it short.
    pub async fn partition_consumers(
        &self,
        js: &jetstream::Context,
        queue: Queue,
        ack_wait: Duration,
    ) -> Result<Vec<consumer::PullConsumer>, TopologyError> {
        let stream = self.work_stream_name(queue);
        let s = js
            .get_stream(&stream)
            .await
            .map_err(|e| TopologyError::Stream { name: stream.clone(), source: e.into() })?;
        self.retire_single_consumer(&s, queue).await?;
        let mut out = Vec::with_capacity(usize::from(PARTITIONS));
        for p in 0..PARTITIONS {
            let name = self.partition_consumer(queue, p);
            let c = s
                .get_or_create_consumer(&name, self.partition_consumer_config(queue, p, ack_wait))
                .await
                .map_err(|e| TopologyError::Consumer { name, stream: stream.clone(), source: e.into() })?;
            out.push(c);
        }
        Ok(out)
    }

    /// Before partitions, one unfiltered consumer (`{ns}_relay`,
    /// `{ns}_responder`) took the whole queue; a WorkQueue stream refuses
    /// filtered consumers beside it. Removed when it holds no work; with work
    /// in it, the start stops and says how to drain it.
    async fn retire_single_consumer(&self, s: &stream::Stream, queue: Queue) -> Result<(), TopologyError> {
        let name = match queue {
            Queue::Events => self.relay_consumer(),
            Queue::Replies => self.responder_consumer(),
        };
        let Ok(info) = s.consumer_info(&name).await else { return Ok(()) };
        let stream = s.cached_info().config.name.clone();
        if info.num_pending > 0 || info.num_ack_pending > 0 {
            let msg = format!(
                "consumer {name} of an older version still holds {} messages: run the previous version until \
                 they are handled, or delete the consumer once the stream is empty",
                info.num_pending + info.num_ack_pending as u64
            );
            return Err(TopologyError::Consumer { name, stream, source: msg.into() });
        }
        s.delete_consumer(&name).await.map_err(|e| TopologyError::Consumer { name, stream, source: e.into() })?;
        Ok(())
    }

    async fn bucket(&self, js: &jetstream::Context, config: stream::Config) -> Result<kv::Store, TopologyError> {
        let name = config.name.trim_start_matches("KV_").to_owned();
        ensure_stream(js, config).await.map_err(|e| match e {
            TopologyError::Stream { source, .. } => TopologyError::Bucket { name: name.clone(), source },
            other => other,
        })?;
        js.get_key_value(&name).await.map_err(|e| TopologyError::Bucket { name, source: e.into() })
    }

    /// The Reset-generation bucket.
    pub async fn sessions(&self, js: &jetstream::Context) -> Result<kv::Store, TopologyError> {
        self.bucket(js, self.sessions_bucket_config()).await
    }

    /// The answered-events bucket.
    pub async fn handled(&self, js: &jetstream::Context) -> Result<kv::Store, TopologyError> {
        self.bucket(js, self.handled_bucket_config()).await
    }

    /// The status bucket.
    pub async fn status(&self, js: &jetstream::Context) -> Result<kv::Store, TopologyError> {
        self.bucket(js, self.status_bucket_config()).await
    }

    /// The failed-attempts bucket of the consumers.
    pub async fn attempts(&self, js: &jetstream::Context) -> Result<kv::Store, TopologyError> {
        self.bucket(js, self.attempts_bucket_config()).await
    }

    /// The pending-questions bucket.
    pub async fn questions(&self, js: &jetstream::Context) -> Result<kv::Store, TopologyError> {
        self.bucket(js, self.questions_bucket_config()).await
    }

    /// The streaming-cards bucket.
    pub async fn cards(&self, js: &jetstream::Context) -> Result<kv::Store, TopologyError> {
        self.bucket(js, self.cards_bucket_config()).await
    }

    /// The files bucket, created or brought to the configuration. Only the
    /// relay creates it, and only with files enabled (`Settings::files`): its
    /// size limit is reserved on JetStream's disk.
    pub async fn files(&self, js: &jetstream::Context) -> Result<object_store::ObjectStore, TopologyError> {
        let name = self.files_bucket();
        ensure_stream(js, self.files_bucket_config()).await.map_err(|e| match e {
            TopologyError::Stream { source, .. } => TopologyError::ObjectBucket { name: name.clone(), source },
            other => other,
        })?;
        self.open_files(js).await
    }

    /// The files bucket as it is (the ingress reads it; the relay creates it).
    pub async fn open_files(&self, js: &jetstream::Context) -> Result<object_store::ObjectStore, TopologyError> {
        let name = self.files_bucket();
        js.get_object_store(&name).await.map_err(|e| TopologyError::ObjectBucket { name, source: e.into() })
    }

    /// The partition-lease bucket, created with a time to live of `ttl` when
    /// missing. An existing one keeps its own `max_age` (the TTL the workers
    /// follow, so a test can make it short); its other settings follow the
    /// configuration like every bucket's.
    pub async fn leases(&self, js: &jetstream::Context, ttl: Duration) -> Result<kv::Store, TopologyError> {
        let ttl = match js.get_stream(format!("KV_{}", self.leases_bucket())).await {
            Ok(s) if !s.cached_info().config.max_age.is_zero() => s.cached_info().config.max_age,
            _ => ttl,
        };
        self.bucket(js, self.leases_bucket_config(ttl)).await
    }
}

/// Creates `want`, or updates the existing stream to it; returns the
/// settings changed.
async fn ensure_stream(js: &jetstream::Context, want: stream::Config) -> Result<Vec<Change>, TopologyError> {
    let name = want.name.clone();
    let stream_err = |e: async_nats::Error| TopologyError::Stream { name: name.clone(), source: e };
    let (have, holds) = match js.get_stream(&name).await {
        Ok(s) => (s.cached_info().config.clone(), s.cached_info().state.bytes),
        Err(e) if is_not_found(&e) => {
            // Another replica may create it at the same moment: then this
            // finds it (an identical create is not an error either).
            js.get_or_create_stream(want).await.map_err(|e| stream_err(e.into()))?;
            return Ok(Vec::new());
        }
        Err(e) => return Err(stream_err(e.into())),
    };
    let d = diff(&have, &want);
    if !d.fixed.is_empty() {
        return Err(TopologyError::Mismatch { name, changes: describe(&d.fixed) });
    }
    if d.in_place.is_empty() {
        return Ok(Vec::new());
    }
    // JetStream applies a smaller size limit by deleting the oldest messages,
    // whatever the discard policy: never on a work stream's say-so.
    if let Some(limit) = u64::try_from(want.max_bytes).ok().filter(|l| *l > 0 && holds > *l) {
        return Err(TopologyError::WouldDrop { name, holds, limit });
    }
    let changes = describe(&d.in_place);
    if let Err(e) = js.update_stream(&want).await {
        let hint = if d.in_place.iter().any(|c| c.field == "num_replicas") {
            " (nats.replicas must not exceed the JetStream servers of the NATS cluster: 1 on a single server)"
        } else {
            ""
        };
        return Err(TopologyError::Update { name, changes, hint, source: e.into() });
    }
    tracing::warn!(stream = %name, %changes, "JetStream stream updated to the configuration");
    Ok(d.in_place)
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// The key formats of the KV buckets above, one function each: every reader
/// and writer of a bucket builds its keys here.
pub mod keys {
    use crate::conversation::short_hash;

    /// `{ns}_sessions`: the Reset generation of one conversation.
    pub fn session(channel: &str, conversation_token: &str) -> String {
        format!("{channel}.{conversation_token}")
    }

    /// `{ns}_handled`: an event already answered, by its de-duplication
    /// source (hashed: the source is long and may hold any character).
    pub fn handled(channel: &str, source: &str) -> String {
        format!("{channel}.{}", short_hash(&[source.as_bytes()]))
    }

    /// `{ns}_sessions`: the app's welcome was sent to Lark chat `chat_id`
    /// (hashed: it comes from Lark). Kept for good, as the generations are.
    pub fn welcomed(channel: &str, chat_id: &str) -> String {
        format!("{channel}.welcome.{}", short_hash(&[chat_id.as_bytes()]))
    }

    /// `{ns}_status`: what one service (`stage`) last saw of a channel.
    pub fn status(channel: &str, stage: &str) -> String {
        format!("{channel}.{stage}")
    }

    /// `{ns}_status`: the Lark API calls of app `app_id` in `month`
    /// (`YYYY-MM`), counted by every service (`common::lark::calls`).
    pub fn lark_calls(app_id: &str, month: &str) -> String {
        let safe = app_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if safe && !app_id.is_empty() {
            format!("calls.{app_id}.{month}")
        } else {
            format!("calls.{}.{month}", short_hash(&[app_id.as_bytes()]))
        }
    }

    /// `{ns}_status`: one replica's counts of the last hour for a channel
    /// and service (`crate::activity`). Under a prefix of its own, so it
    /// never meets a [`status`] key (a stage is never `activity`).
    pub fn activity(channel: &str, stage: &str, replica: &str) -> String {
        format!("{}{replica}", activity_prefix(channel, stage))
    }

    /// What every replica's [`activity`] key of a channel and service starts with.
    pub fn activity_prefix(channel: &str, stage: &str) -> String {
        format!("{ACTIVITY}{channel}.{stage}.")
    }

    const ACTIVITY: &str = "activity.";

    /// An [`activity`] key read back: (channel, stage, replica).
    pub fn parse_activity(key: &str) -> Option<(&str, &str, &str)> {
        let mut parts = key.strip_prefix(ACTIVITY)?.rsplitn(3, '.');
        let (replica, stage, channel) = (parts.next()?, parts.next()?, parts.next()?);
        Some((channel, stage, replica))
    }

    /// `{ns}_questions`: the question waiting in one conversation.
    pub fn question(channel: &str, conversation_token: &str) -> String {
        format!("{channel}.{conversation_token}")
    }

    /// `{ns}_cards`: the streaming card of the answer to `source`.
    pub fn card(channel: &str, source: &str) -> String {
        format!("{channel}.{}", short_hash(&[source.as_bytes()]))
    }

    /// `{ns}_attempts`: failed attempts of the message at `sequence` of a
    /// consumer.
    pub fn attempts(consumer: &str, sequence: u64) -> String {
        format!("{consumer}.{sequence}")
    }

    /// Hex digits of a files-bucket object name ([`file_object`]).
    pub const FILE_OBJECT_LEN: usize = 32;

    /// `{ns}_files`: the object of one resource (image or file key) of one
    /// message. Derived, never taken from the user: a redelivered event
    /// stores the same name again, which replaces the object instead of
    /// adding a second one. 128 bits of SHA-256, in hex: safe in a URL path
    /// and a NATS subject.
    pub fn file_object(channel: &str, message_id: &str, resource_key: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [channel, message_id, resource_key] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..FILE_OBJECT_LEN / 2])
    }

    /// Whether `s` has the shape of a [`file_object`] name (what the ingress
    /// accepts in a link, before anything else is looked at).
    pub fn is_file_object(s: &str) -> bool {
        s.len() == FILE_OBJECT_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn file_objects_are_derived_and_url_safe() {
        let a = keys::file_object("support", "om_1", "img_1");
        assert!(keys::is_file_object(&a), "{a}");
        assert_eq!(a, keys::file_object("support", "om_1", "img_1"), "a re-store replaces");
        assert_ne!(a, keys::file_object("support", "om_1", "img_2"));
        assert_ne!(keys::file_object("ab", "c", "k"), keys::file_object("a", "bc", "k"), "parts cannot run together");
        for bad in ["", "../etc/passwd", &a.to_uppercase(), &a[1..], &format!("{a}0")] {
            assert!(!keys::is_file_object(bad), "{bad}");
        }
    }

    #[test]
    fn activity_keys_read_back_and_never_meet_status_keys() {
        let key = keys::activity("support-eu", "responder", "00ff");
        assert_eq!(keys::parse_activity(&key), Some(("support-eu", "responder", "00ff")));
        assert!(key.starts_with(&keys::activity_prefix("support-eu", "responder")));
        assert_eq!(keys::parse_activity(&keys::status("support", "relay")), None);
        assert_eq!(keys::parse_activity(&keys::status("activity", "relay")), None, "even of a channel named so");
    }
}
