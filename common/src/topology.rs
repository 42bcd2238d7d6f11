//! Every JetStream stream, subject, consumer and KV bucket of the bridge: the
//! one place where names and settings live. Whichever service starts first
//! creates them; the others find them (creation is idempotent).
//!
//! ```text
//! {ns}.events.{channel}.{conversation}  ──▶ stream {ns}_events  (WorkQueue) ──▶ consumer {ns}_relay
//! {ns}.replies.{channel}.{chat}         ──▶ stream {ns}_replies (WorkQueue) ──▶ consumer {ns}_responder
//! {ns}.dead.{channel}.{stage}           ──▶ stream {ns}_dead    (Limits, kept 14 days)
//! KV {ns}_sessions: conversation generation (Reset)
//! KV {ns}_attempts: failed attempts of a message in work
//! KV {ns}_handled:  events already answered (de-duplicates Lark's re-pushes)
//! KV {ns}_status:   last event, answer and error per channel and service (GET /status)
//! ```
//!
//! The conversation token in the event subject is what keeps one conversation
//! in order across relay replicas: in a WorkQueue stream an acknowledged message
//! leaves the stream, so the first message on a subject is the oldest one still
//! in work (see `relay::order`). The same holds for replies per chat.
//!
//! Only NATS 2.9 features are used (DESIGN.md, "NATS").

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};

use crate::config::NatsSettings;

/// How long JetStream remembers a `Nats-Msg-Id` to drop a duplicate publish.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long an unanswered event or reply may wait in its stream.
pub const WORK_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long dead letters are kept for inspection and re-drive.
pub const DEAD_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// How long an answered event is remembered: past Lark's last re-push.
pub const HANDLED_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long a consumer waits for an ack before redelivering. Long calls send
/// `Progress` well before it runs out.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
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
}

/// Names and settings, under one namespace.
#[derive(Debug, Clone)]
pub struct Topology {
    ns: String,
    replicas: usize,
}

impl Topology {
    pub fn new(nats: &NatsSettings) -> Self {
        Self { ns: nats.namespace.clone(), replicas: nats.replicas }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    // ---- names ---------------------------------------------------------

    pub fn events_stream(&self) -> String {
        format!("{}_events", self.ns)
    }
    pub fn event_subject(&self, channel: &str, conversation_token: &str) -> String {
        format!("{}.events.{channel}.{conversation_token}", self.ns)
    }
    pub fn replies_stream(&self) -> String {
        format!("{}_replies", self.ns)
    }
    pub fn reply_subject(&self, channel: &str, chat_token: &str) -> String {
        format!("{}.replies.{channel}.{chat_token}", self.ns)
    }
    pub fn dead_stream(&self) -> String {
        format!("{}_dead", self.ns)
    }
    /// `stage` is `relay` or `responder`: where the message died.
    pub fn dead_subject(&self, channel: &str, stage: &str) -> String {
        format!("{}.dead.{channel}.{stage}", self.ns)
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

    // ---- settings ------------------------------------------------------

    fn work_stream(&self, name: String, kind: &str) -> stream::Config {
        stream::Config {
            name,
            subjects: vec![format!("{}.{kind}.>", self.ns)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: WORK_MAX_AGE,
            allow_direct: true,
            ..Default::default()
        }
    }

    pub fn events_stream_config(&self) -> stream::Config {
        self.work_stream(self.events_stream(), "events")
    }

    pub fn replies_stream_config(&self) -> stream::Config {
        self.work_stream(self.replies_stream(), "replies")
    }

    pub fn dead_stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.dead_stream(),
            subjects: vec![format!("{}.dead.>", self.ns)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: DEAD_MAX_AGE,
            allow_direct: true,
            ..Default::default()
        }
    }

    fn consumer_config(name: String) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(name),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
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

    // ---- creation ------------------------------------------------------

    /// Creates (or finds) the streams. Idempotent; safe to run from every replica.
    pub async fn ensure_streams(&self, js: &jetstream::Context) -> Result<(), TopologyError> {
        for cfg in [self.events_stream_config(), self.replies_stream_config(), self.dead_stream_config()] {
            let name = cfg.name.clone();
            js.get_or_create_stream(cfg).await.map_err(|e| TopologyError::Stream { name, source: e.into() })?;
        }
        Ok(())
    }

    async fn consumer(
        &self,
        js: &jetstream::Context,
        stream: String,
        name: String,
    ) -> Result<consumer::PullConsumer, TopologyError> {
        let s = js
            .get_stream(&stream)
            .await
            .map_err(|e| TopologyError::Stream { name: stream.clone(), source: e.into() })?;
        s.get_or_create_consumer(&name, Self::consumer_config(name.clone()))
            .await
            .map_err(|e| TopologyError::Consumer { name, stream, source: e.into() })
    }

    /// The relay's durable consumer on the events stream, shared by its replicas.
    pub async fn relay_consumer_bind(&self, js: &jetstream::Context) -> Result<consumer::PullConsumer, TopologyError> {
        self.consumer(js, self.events_stream(), self.relay_consumer()).await
    }

    /// The responder's durable consumer on the replies stream, shared by its replicas.
    pub async fn responder_consumer_bind(
        &self,
        js: &jetstream::Context,
    ) -> Result<consumer::PullConsumer, TopologyError> {
        self.consumer(js, self.replies_stream(), self.responder_consumer()).await
    }

    async fn bucket(&self, js: &jetstream::Context, config: stream::Config) -> Result<kv::Store, TopologyError> {
        let name = config.name.trim_start_matches("KV_").to_owned();
        js.get_or_create_stream(config)
            .await
            .map_err(|e| TopologyError::Bucket { name: name.clone(), source: e.into() })?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_under_the_namespace() {
        let t = Topology::new(&NatsSettings {
            url: String::new(),
            namespace: "ns1".into(),
            replicas: 1,
            credentials_file: None,
        });
        assert_eq!(t.event_subject("support", "abc"), "ns1.events.support.abc");
        assert_eq!(t.reply_subject("support", "def"), "ns1.replies.support.def");
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
        ] {
            assert!(n.starts_with("ns1_"), "{n}");
            assert!(!n.contains('.'), "{n}");
        }
        assert_eq!(t.events_stream_config().subjects, vec!["ns1.events.>"]);
        assert_eq!(t.events_stream_config().retention, stream::RetentionPolicy::WorkQueue);
    }
}
